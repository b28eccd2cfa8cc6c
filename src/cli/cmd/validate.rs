//! `isctl validate PATH`: load and check a model without touching the system.
//!
//! Text output: each warning and error like a compiler's message (stderr), then on
//! success a one-line summary (stdout). `-o json`: one JSON document on stdout with
//! the diagnostics and, when valid, the counts. Exit 0 when valid (warnings allowed),
//! 3 (`INVALID_MODEL`) when not.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::cli::args::ValidateArgs;
use crate::cli::exit;
use crate::cli::resolve::Resolved;
use crate::model::{self, Diagnostic, Model};

/// What a valid model holds, for the summary line.
#[derive(Debug, Serialize)]
struct Summary {
    portals: usize,
    initiator_groups: usize,
    auths: usize,
    extents: usize,
    targets: usize,
    luns: usize,
}

impl Summary {
    fn of(m: &Model) -> Self {
        Summary {
            portals: m.portals.len(),
            initiator_groups: m.initiator_groups.len(),
            auths: m.auths.len(),
            extents: m.extents.len(),
            targets: m.targets.len(),
            luns: m.targets.values().map(|t| t.luns.len()).sum(),
        }
    }

    fn line(&self) -> String {
        [
            count(self.portals, "portal", "portals"),
            count(self.initiator_groups, "initiator group", "initiator groups"),
            count(self.auths, "auth", "auths"),
            count(self.extents, "extent", "extents"),
            count(self.targets, "target", "targets"),
            count(self.luns, "LUN", "LUNs"),
        ]
        .join(", ")
    }
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[derive(Serialize)]
struct JsonReport<'a> {
    path: &'a Path,
    valid: bool,
    errors: usize,
    warnings: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<Summary>,
    diagnostics: &'a [Diagnostic],
}

pub fn run(r: &Resolved, args: &ValidateArgs) -> anyhow::Result<u8> {
    r.text_or_json("validate")?;
    let (summary, diagnostics) = match model::load(&args.path) {
        Ok(loaded) => (Some(Summary::of(&loaded.model)), loaded.warnings),
        Err(e) => (None, e.diagnostics),
    };
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    let code = if summary.is_some() {
        exit::OK
    } else {
        exit::INVALID_MODEL
    };

    if r.json() {
        let report = JsonReport {
            path: &args.path,
            valid: summary.is_some(),
            errors,
            warnings,
            summary,
            diagnostics: &diagnostics,
        };
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
        return Ok(code);
    }

    let mut err = std::io::stderr().lock();
    for d in &diagnostics {
        if r.quiet && !d.is_error() {
            continue;
        }
        writeln!(err, "{d}")?;
    }
    let path = args.path.display();
    match summary {
        Some(s) => {
            if !r.quiet {
                let note = match warnings {
                    0 => String::new(),
                    1 => " (1 warning)".to_owned(),
                    n => format!(" ({n} warnings)"),
                };
                writeln!(
                    std::io::stdout().lock(),
                    "{path}: valid: {}{note}",
                    s.line()
                )?;
            }
        }
        None => writeln!(
            err,
            "{path}: invalid: {}{}",
            count(errors, "error", "errors"),
            if warnings > 0 {
                format!(", {}", count(warnings, "warning", "warnings"))
            } else {
                String::new()
            }
        )?,
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_errors_exit_3_from_any_verb() {
        let e = crate::model::load_str("m.toml", "[extent.x]\ntype = \"tape\"\n").unwrap_err();
        let err = anyhow::Error::new(e).context("loading the model");
        assert_eq!(crate::cli::exit_code_for(&err), exit::INVALID_MODEL);
        let other = anyhow::anyhow!("something else");
        assert_eq!(crate::cli::exit_code_for(&other), exit::FAILURE);
    }

    #[test]
    fn summary_line_pluralises() {
        let s = Summary {
            portals: 2,
            initiator_groups: 1,
            auths: 2,
            extents: 4,
            targets: 3,
            luns: 6,
        };
        assert_eq!(
            s.line(),
            "2 portals, 1 initiator group, 2 auths, 4 extents, 3 targets, 6 LUNs"
        );
    }
}
