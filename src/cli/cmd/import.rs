//! `isctl import SOURCE PATH [--out-dir DIR] [--secrets-dir DIR]`: another target's
//! configuration (tgt's targets.conf, ctld's ctl.conf, TrueNAS query outputs, FreeNAS
//! v1 API responses) as an isctl model, to migrate a host.
//!
//! The importers (`crate::import`) parse; this verb renders the model with the
//! export renderer (`render_toml`), on stdout or as a directory (one file per target
//! plus `00-common.toml`), and writes CHAP secrets to 0600 files with
//! `--secrets-dir` (else the model references `secret_env` variables, as `export`
//! does). Lossless or loud: every source setting the model cannot express is listed
//! on stderr and in a header comment, and the exit code is 4 (REFUSED).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use anyhow::Context;
use serde_json::json;

use crate::cli::args::{ImportArgs, ImportSource};
use crate::cli::exit;
use crate::cli::resolve::Resolved;
use crate::cli::UsageError;
use crate::import::{self, Imported};
use crate::model::render::{render_json, render_toml, secret_file_name, SecretsMode};
use crate::model::Model;

fn mkdir(dir: &Path, mode: u32) -> anyhow::Result<()> {
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

fn write_secret_files(m: &Model, dir: &Path) -> anyhow::Result<()> {
    mkdir(dir, 0o700)?;
    for (name, a) in &m.auths {
        let mut items = vec![(false, a.secret.expose())];
        if let Some(p) = &a.peer {
            items.push((true, p.secret.expose()));
        }
        for (peer, value) in items {
            write_file(&secret_file_name(dir, name, peer), value.as_bytes(), 0o600)?;
        }
    }
    Ok(())
}

fn source_name(s: ImportSource) -> &'static str {
    match s {
        ImportSource::Tgt => "tgt",
        ImportSource::Ctld => "ctld",
        ImportSource::Truenas => "truenas",
        ImportSource::Freenas => "freenas",
    }
}

pub fn run(r: &Resolved, args: &ImportArgs) -> anyhow::Result<u8> {
    if r.output == crate::cli::args::OutputFormat::Json && args.out_dir.is_some() {
        return Err(UsageError(
            "`isctl import --out-dir` writes TOML files; leave out -o json".into(),
        )
        .into());
    }
    if let Some(dir) = &args.out_dir {
        if dir.is_dir() && std::fs::read_dir(dir)?.next().is_some() {
            return Err(UsageError(format!(
                "{} is not empty: `isctl import --out-dir` writes a whole model directory; give a new or empty directory",
                dir.display()
            ))
            .into());
        }
    }
    let imported: Imported = match args.source {
        ImportSource::Tgt => import::tgt::import(&args.path)?,
        ImportSource::Ctld => import::ctld::import(&args.path)?,
        ImportSource::Truenas => import::truenas::import(&args.path)?,
        ImportSource::Freenas => import::freenas::import(&args.path)?,
    };
    let secrets = match &args.secrets_dir {
        Some(dir) => {
            let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
            write_secret_files(&imported.model, &abs)?;
            SecretsMode::Dir(abs)
        }
        None => SecretsMode::Env,
    };
    let source = source_name(args.source);
    let problems = &imported.problems;
    let mut header = vec![format!(
        "Imported by isctl {} from the {source} configuration {}.",
        env!("CARGO_PKG_VERSION"),
        args.path.display()
    )];
    if problems.is_empty() {
        header.push(format!(
            "Every setting of the {source} configuration is expressed in this model."
        ));
    } else {
        header.push(format!(
            "INCOMPLETE IMPORT: {} {source} setting(s) cannot be expressed in the model (listed on stderr and below):",
            problems.len()
        ));
        header.extend(problems.iter().map(|p| format!("  - {p}")));
    }
    if r.json() {
        let doc = json!({
            "model": render_json(&imported.model, &secrets),
            "lossless": problems.is_empty(),
            "problems": problems,
            "notes": imported.notes,
            "source": { "format": source, "path": args.path.display().to_string() },
        });
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
    } else if let Some(dir) = &args.out_dir {
        mkdir(dir, 0o755)?;
        for (i, (stem, part)) in import::split(&imported.model).into_iter().enumerate() {
            let h = if i == 0 {
                header.clone()
            } else {
                vec![format!(
                    "Imported by isctl {} from {}.",
                    env!("CARGO_PKG_VERSION"),
                    args.path.display()
                )]
            };
            let text = render_toml(&part, &secrets, &h);
            write_file(&dir.join(format!("{stem}.toml")), text.as_bytes(), 0o644)?;
        }
    } else {
        let text = render_toml(&imported.model, &secrets, &header);
        std::io::stdout().lock().write_all(text.as_bytes())?;
    }
    let mut err = std::io::stderr().lock();
    if !r.quiet {
        for n in &imported.notes {
            writeln!(err, "note: {n}")?;
        }
    }
    if problems.is_empty() {
        return Ok(exit::OK);
    }
    writeln!(
        err,
        "error: the import is not lossless: {} {source} setting(s) cannot be expressed in the model:",
        problems.len()
    )?;
    for p in problems {
        writeln!(err, "  {p}")?;
    }
    Ok(exit::REFUSED)
}
