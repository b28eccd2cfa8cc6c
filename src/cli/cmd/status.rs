//! `isctl status [PATH]`: what isctl manages (the ledger), what is live, what is
//! not managed, drift (managed objects missing or changed since the last apply;
//! with PATH, the changes a plan against the model would make) and the number of
//! logged-in sessions. Exit 0, or 2 with PATH when the live state differs from the
//! model.

use std::collections::BTreeSet;
use std::io::Write;

use serde_json::json;

use crate::apply::Ledger;
use crate::backend::ObserveScope;
use crate::cli::args::{GlobalArgs, OutputFormat, StatusArgs};
use crate::cli::exit;
use crate::plan::{render, DiffOptions};
use crate::state::ObjectId;

use super::plan::{make_plan, open_backend};

pub fn run(g: &GlobalArgs, args: &StatusArgs) -> anyhow::Result<u8> {
    if g.output == OutputFormat::Toml {
        eprintln!("error: `isctl status` prints text or json (-o text | -o json)");
        return Ok(exit::USAGE);
    }
    if super::engine::selected(g) {
        if args.path.is_some() {
            eprintln!("error: with the userspace engine, compare a model with `isctl plan --backend userspace PATH`");
            return Ok(exit::USAGE);
        }
        return super::engine::status(g);
    }
    let open = open_backend(g)?;
    let backend = open.backend.as_ref();
    let observed = backend.observe(ObserveScope::Managed)?;
    let ledger = Ledger::load(&g.state_dir, backend.name(), &backend.location())?;
    let managed = ledger.objects();
    let live: BTreeSet<ObjectId> = observed.state.object_ids().into_iter().collect();
    // Top-most unmanaged objects (an unmanaged target's children are not listed).
    let mut unmanaged: Vec<ObjectId> = Vec::new();
    for id in &live {
        if managed.contains(id) || unmanaged.iter().any(|u| id.is_within(u)) {
            continue;
        }
        unmanaged.push(id.clone());
    }
    let drift = ledger.drift(&observed.state);
    let model_plan = match &args.path {
        Some(p) => Some(make_plan(g, p, DiffOptions::default(), backend)?.plan),
        None => None,
    };
    let code = match &model_plan {
        Some(p) if !p.is_empty() => exit::CHANGES,
        _ => exit::OK,
    };
    let mut out = std::io::stdout().lock();
    if g.output == OutputFormat::Json {
        let doc = json!({
            "backend": backend.name(),
            "location": backend.location(),
            "ledger": ledger.path(),
            "managed": managed.len(),
            "live": live.len(),
            "unmanaged": unmanaged.iter().map(|u| json!({"object": u, "address": u.to_string()})).collect::<Vec<_>>(),
            "drift": drift,
            "sessions": observed.sessions.len(),
            "model": model_plan.as_ref().map(|p| json!({
                "path": args.path,
                "in_sync": p.is_empty(),
                "plan": render::json(p),
            })),
        });
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
        return Ok(code);
    }
    writeln!(out, "Backend: {} at {}", backend.name(), backend.location())?;
    writeln!(
        out,
        "Managed by isctl: {} object(s) (ledger {})",
        managed.len(),
        ledger.path().display()
    )?;
    writeln!(
        out,
        "Live: {} object(s), {} not managed by isctl",
        live.len(),
        unmanaged.len()
    )?;
    writeln!(out, "Sessions: {} logged in", observed.sessions.len())?;
    if drift.is_empty() {
        writeln!(out, "Drift: none since the last apply")?;
    } else {
        writeln!(out, "\nDrift since the last apply:")?;
        for m in &drift.missing {
            writeln!(out, "  - missing: {m}")?;
        }
        for c in &drift.changed {
            writeln!(
                out,
                "  ~ changed: {} {}: {:?} -> {:?}",
                c.object, c.attribute, c.applied, c.live
            )?;
        }
    }
    if !unmanaged.is_empty() {
        writeln!(
            out,
            "\nNot managed by isctl (left alone; `apply --prune` deletes them):"
        )?;
        for u in &unmanaged {
            writeln!(out, "  {u}")?;
        }
    }
    if let (Some(p), Some(path)) = (&model_plan, &args.path) {
        writeln!(out, "\nAgainst the model {}:", path.display())?;
        if p.is_empty() {
            writeln!(out, "  in sync")?;
        } else {
            for c in &p.changes {
                writeln!(out, "  {} {}", c.action.symbol(), c.address)?;
            }
            writeln!(out, "  {}", render::summary_line(p))?;
        }
    }
    Ok(code)
}
