//! `isctl status [PATH]`: what runs, on either backend. LIO: what isctl manages
//! (the ledger), what is live, what is not managed, drift (managed objects missing
//! or changed since the last apply) and the number of logged-in sessions. The
//! engine: what it serves (portal groups, targets, LUNs) and its sessions. With
//! PATH, both add the changes a plan against the model would make. Exit 0, or 2
//! with PATH when the live state differs from the model.

use std::collections::BTreeSet;
use std::io::Write;

use serde_json::json;

use crate::backend::ObserveScope;
use crate::cli::args::StatusArgs;
use crate::cli::exit;
use crate::cli::resolve::Resolved;
use crate::engine::api::Status;
use crate::plan::{render, DiffOptions, Plan};
use crate::reconcile::{Host, LioHost};
use crate::state::ObjectId;
use crate::watch;

pub fn run(r: &Resolved, args: &StatusArgs) -> anyhow::Result<u8> {
    r.text_or_json("status")?;
    let host = r.host()?;
    // Against the model, when one is given: the same plan `isctl plan` shows.
    let model_plan = match &args.path {
        Some(p) => {
            let model = r.load_model(p)?;
            Some(host.plan(p, &model, &DiffOptions::default())?.plan)
        }
        None => None,
    };
    let code = match &model_plan {
        Some(p) if !p.is_empty() => exit::CHANGES,
        _ => exit::OK,
    };
    match &host {
        Host::Lio(lio) => lio_status(r, lio, args, model_plan.as_ref())?,
        Host::Engine(e) => engine_status(r, &e.status()?, args, model_plan.as_ref())?,
    }
    Ok(code)
}

/// Is the process that wrote an apply intent still running?
fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

fn model_json(args: &StatusArgs, plan: Option<&Plan>) -> serde_json::Value {
    json!(plan.map(|p| json!({
        "path": args.path,
        "in_sync": p.is_empty(),
        "plan": render::json(p),
    })))
}

fn model_text(out: &mut impl Write, args: &StatusArgs, plan: Option<&Plan>) -> std::io::Result<()> {
    if let (Some(p), Some(path)) = (plan, &args.path) {
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
    Ok(())
}

/// The last `isctl watch` attempt (`<state-dir>/watch.json`), if a watcher ran.
fn watch_json(r: &Resolved) -> serde_json::Value {
    json!(watch::state::load(&r.state_dir))
}

fn watch_text(out: &mut impl Write, r: &Resolved) -> std::io::Result<()> {
    if let Some(w) = watch::state::load(&r.state_dir) {
        writeln!(out, "Last watch apply: {}", w.describe())?;
    }
    Ok(())
}

fn engine_status(
    r: &Resolved,
    s: &Status,
    args: &StatusArgs,
    plan: Option<&Plan>,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if r.json() {
        let doc = json!({"backend": "userspace", "engine": s, "model": model_json(args, plan), "watch": watch_json(r)});
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "Userspace engine (pid {}) serving {} (generation {}): {} session(s), {} connection(s)",
        s.pid,
        s.source.display(),
        s.generation,
        s.sessions,
        s.connections
    )?;
    for p in &s.portals {
        writeln!(
            out,
            "  portal {} (tag {}): {}",
            p.name,
            p.tag,
            p.listen.join(", ")
        )?;
    }
    for t in &s.targets {
        writeln!(out, "  target {} ({} session(s))", t.name, t.sessions)?;
        for l in &t.luns {
            writeln!(
                out,
                "    lun {}: {} ({} bytes, {}-byte blocks{}{})",
                l.lun,
                l.extent,
                l.size_bytes,
                l.block_size,
                if l.readonly { ", read-only" } else { "" },
                if l.write_back { ", write-back" } else { "" },
            )?;
        }
    }
    watch_text(&mut out, r)?;
    model_text(&mut out, args, plan)?;
    Ok(())
}

fn lio_status(
    r: &Resolved,
    lio: &LioHost,
    args: &StatusArgs,
    model_plan: Option<&Plan>,
) -> anyhow::Result<()> {
    let backend = lio.backend();
    let observed = lio.observe(ObserveScope::Managed)?;
    let ledger = lio.ledger()?;
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
    let mut out = std::io::stdout().lock();
    if r.json() {
        let doc = json!({
            "backend": backend.name(),
            "location": backend.location(),
            "ledger": ledger.path(),
            "managed": managed.len(),
            "live": live.len(),
            "unmanaged": unmanaged.iter().map(|u| json!({"object": u, "address": u.to_string()})).collect::<Vec<_>>(),
            "drift": drift,
            "sessions": observed.sessions.len(),
            "interrupted_apply": ledger.interrupted().map(|i| json!({
                "started_unix": i.started_unix,
                "pid": i.pid,
                "running": pid_alive(i.pid),
                "operations": i.operations,
                "objects": i.objects,
            })),
            "model": model_json(args, model_plan),
            "watch": watch_json(r),
        });
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
        return Ok(());
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
    if let Some(i) = ledger.interrupted() {
        if pid_alive(i.pid) {
            writeln!(
                out,
                "Apply under way: started at {} (unix time) by pid {}, {} operation(s)",
                i.started_unix, i.pid, i.operations
            )?;
        } else {
            writeln!(
                out,
                "Interrupted apply: started at {} (unix time) by pid {}, which died before it finished its {} operation(s); the {} object(s) it may have created or changed are managed, so the next apply converges (a model without them deletes them)",
                i.started_unix,
                i.pid,
                i.operations,
                i.objects.len()
            )?;
        }
    }
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
    watch_text(&mut out, r)?;
    model_text(&mut out, args, model_plan)?;
    Ok(())
}
