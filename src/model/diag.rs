//! Diagnostics: what validation tells the user, rendered like a compiler's messages.
//!
//! A [`Diagnostic`] names the file, line and column of the offending key or value, the
//! object (`extent.lun0`), what is wrong and how to fix it. Validation collects every
//! diagnostic of a model ([`Diags`]) instead of stopping at the first, and
//! [`ModelError`] carries them all. No diagnostic ever contains a secret's value.

use std::fmt;
use std::path::PathBuf;

use super::types::Origin;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The model is invalid; nothing can be applied.
    Error,
    /// The model is valid, but something deserves attention (a readable secret file).
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message about a model: where, which object, what is wrong, how to fix it.
///
/// `line` and `column` are 1-based; both are 0 when the message concerns a whole file
/// (it cannot be read, say). `object` is `kind.name` as in the TOML (`target.target0`,
/// `extent.lun0`, `global`), or empty for a file-level message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    pub line: u32,
    pub column: u32,
    pub object: String,
    pub problem: String,
    pub fix: String,
}

impl Diagnostic {
    /// The object as a reader would name it: `extent "lun0"`, `global`.
    pub fn object_display(&self) -> String {
        match self.object.split_once('.') {
            Some((kind, name)) => format!("{kind} {name:?}"),
            None => self.object.clone(),
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// `file:line:col: error: extent "lun0": problem` and, on the next line, `  fix: …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": {}: ", self.severity)?;
        if !self.object.is_empty() {
            write!(f, "{}: ", self.object_display())?;
        }
        f.write_str(&self.problem)?;
        if !self.fix.is_empty() {
            write!(f, "\n  fix: {}", self.fix)?;
        }
        Ok(())
    }
}

/// A model that cannot be used: every diagnostic found (errors, and the warnings that
/// came with them), in file and line order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ModelError {
    pub diagnostics: Vec<Diagnostic>,
}

impl ModelError {
    /// Number of errors (as opposed to warnings).
    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// The collector validation writes into. Never stops early: every rule runs.
#[derive(Debug, Default)]
pub(crate) struct Diags {
    list: Vec<Diagnostic>,
}

impl Diags {
    pub fn new() -> Self {
        Diags::default()
    }

    pub fn push(
        &mut self,
        severity: Severity,
        at: &Origin,
        object: &str,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.list.push(Diagnostic {
            severity,
            file: at.file.clone(),
            line: at.line,
            column: at.column,
            object: object.to_owned(),
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    pub fn error(
        &mut self,
        at: &Origin,
        object: &str,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(Severity::Error, at, object, problem, fix);
    }

    pub fn warn(
        &mut self,
        at: &Origin,
        object: &str,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(Severity::Warning, at, object, problem, fix);
    }

    pub fn has_errors(&self) -> bool {
        self.list.iter().any(Diagnostic::is_error)
    }

    /// Number of errors so far (a builder compares it before and after an object).
    pub fn error_count(&self) -> usize {
        self.list.iter().filter(|d| d.is_error()).count()
    }

    /// All diagnostics, sorted by file, line and column (the order they were found in
    /// breaks ties), without exact duplicates.
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.list
            .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        self.list.dedup();
        self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag(severity: Severity, line: u32, object: &str) -> Diagnostic {
        Diagnostic {
            severity,
            file: PathBuf::from("config/a.toml"),
            line,
            column: 9,
            object: object.into(),
            problem: "size \"10 GB\" has an unknown unit".into(),
            fix: "use B, K/KiB".into(),
        }
    }

    #[test]
    fn renders_like_a_compiler() {
        let d = diag(Severity::Error, 12, "extent.lun0");
        assert_eq!(
            d.to_string(),
            "config/a.toml:12:9: error: extent \"lun0\": size \"10 GB\" has an unknown unit\n  fix: use B, K/KiB"
        );
        let w = diag(Severity::Warning, 0, "");
        assert_eq!(
            w.to_string(),
            "config/a.toml: warning: size \"10 GB\" has an unknown unit\n  fix: use B, K/KiB"
        );
    }

    #[test]
    fn object_with_dots_in_its_name_keeps_them() {
        let d = diag(Severity::Error, 1, "target.iqn.2026-01.com.example:archive");
        assert_eq!(
            d.object_display(),
            "target \"iqn.2026-01.com.example:archive\""
        );
    }

    #[test]
    fn model_error_displays_every_diagnostic() {
        let e = ModelError {
            diagnostics: vec![
                diag(Severity::Error, 3, "extent.a"),
                diag(Severity::Error, 5, "extent.b"),
            ],
        };
        let s = e.to_string();
        assert!(s.contains(":3:9:") && s.contains(":5:9:"), "{s}");
        assert_eq!(e.error_count(), 2);
    }
}
