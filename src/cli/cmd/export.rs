//! `isctl export [-o toml|json] [--secrets-dir DIR | --show-secrets]`: the live
//! configuration as a model, to adopt an existing host.
//!
//! Lossless or loud: everything the model cannot express is listed on stderr and
//! the exit code is 4 (REFUSED). As a self-check the exported text is loaded back
//! (with the secrets filled in, in memory only), lowered and planned against the
//! live state: any difference is reported as a problem too.
//!
//! Secrets are never printed unless `--show-secrets`: by default each is referenced
//! as `secret_env = "ISCTL_SECRET_<NAME>"`; `--secrets-dir DIR` writes them to files
//! (mode 0600) and references them with `secret_file`.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use anyhow::Context;
use serde_json::json;

use crate::backend::ObserveScope;
use crate::cli::args::ExportArgs;
use crate::cli::exit;
use crate::cli::resolve::Resolved;
use crate::model::render::{render_json, render_toml, secret_file_name, SecretsMode};
use crate::model::Model;
use crate::reconcile::check_export;
use crate::state::export::to_model;

fn write_secret_files(m: &Model, dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    for (name, a) in &m.auths {
        let mut items = vec![(false, a.secret.expose())];
        if let Some(p) = &a.peer {
            items.push((true, p.secret.expose()));
        }
        for (peer, value) in items {
            let path = secret_file_name(dir, name, peer);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("writing {}", path.display()))?;
            f.write_all(value.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

pub fn run(r: &Resolved, args: &ExportArgs) -> anyhow::Result<u8> {
    let lio = r.lio_host("export")?;
    let backend = lio.backend();
    let observed = backend.observe(ObserveScope::Full)?;
    let exported = to_model(&observed.state);
    let mut problems = exported.problems.clone();
    if problems.is_empty() {
        problems.extend(check_export(&exported.model, &observed, backend));
    }
    let secrets = if args.show_secrets {
        SecretsMode::Show
    } else if let Some(dir) = &args.secrets_dir {
        let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
        write_secret_files(&exported.model, &abs)?;
        SecretsMode::Dir(abs)
    } else {
        SecretsMode::Env
    };
    let mut out = std::io::stdout().lock();
    if r.json() {
        let doc = json!({
            "model": render_json(&exported.model, &secrets),
            "lossless": problems.is_empty(),
            "problems": problems,
            "source": { "backend": backend.name(), "location": backend.location() },
        });
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
    } else {
        let mut header = vec![
            format!(
                "Exported by isctl {} from the {} target at {}.",
                env!("CARGO_PKG_VERSION"),
                backend.name(),
                backend.location()
            ),
            "`isctl plan` on this file reports no changes on this host.".to_string(),
        ];
        if !problems.is_empty() {
            header = vec![
                format!("INCOMPLETE EXPORT from {}: {} live setting(s) cannot be expressed in the model (listed on stderr and below).", backend.location(), problems.len()),
                "Applying this file would change or leave out what is listed:".to_string(),
            ];
            header.extend(
                problems
                    .iter()
                    .map(|p| format!("  - {}: {}", p.object, p.problem)),
            );
        }
        let text = render_toml(&exported.model, &secrets, &header);
        out.write_all(text.as_bytes())?;
    }
    drop(out);
    if problems.is_empty() {
        return Ok(exit::OK);
    }
    let mut err = std::io::stderr().lock();
    writeln!(
        err,
        "error: the export is not lossless: {} live setting(s) cannot be expressed in the model:",
        problems.len()
    )?;
    for p in &problems {
        writeln!(err, "  {}: {}", p.object, p.problem)?;
    }
    Ok(exit::REFUSED)
}
