//! `isctl apply PATH`: make the live configuration match the model, on either
//! backend.
//!
//! Takes the apply lock first where the backend needs one (so the plan cannot go
//! stale under another apply), plans, prints the plan, asks for confirmation
//! (`yes`) on a terminal unless `--auto-approve` (without a terminal and without
//! `--auto-approve` it refuses), then applies exactly that plan: LIO with rollback on
//! failure and the managed objects recorded in the ledger; the engine as a whole,
//! refused if its configuration changed since the plan.
//!
//! With `--verify[=strict]`, an apply that was not refused (also a no-op) is followed by
//! the checks of `crate::initiator::verify_apply`, against the live sessions the backend
//! reports; this module only wires and prints them.
//!
//! Exit codes: 0 applied or nothing to do, 1 failed (rolled back), 3 invalid model,
//! 4 refused, 5 locked, 6 applied but the verify failed (nothing rolled back).

use std::io::Write;
use std::time::Duration;

use serde_json::json;

use crate::apply::{ApplyError, ApplyOptions};
use crate::backend::userspace::EngineError;
use crate::cli::args::{ApplyArgs, VerifyLevel};
use crate::cli::confirm::confirm;
use crate::cli::exit;
use crate::cli::resolve::Resolved;
use crate::initiator::verify_apply::{self, Level, VerifyReport};
use crate::model::Model;
use crate::plan::{render, DiffOptions, Plan, PlanRefused};
use crate::reconcile::{Host, ReconcileError};

/// Each check's connection and every answer within it.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// `--verify`: run the checks (after an apply that went through), print the text
/// section; `None` without `--verify`.
fn verify(
    r: &Resolved,
    args: &ApplyArgs,
    host: &Host,
    model: &Model,
) -> anyhow::Result<Option<VerifyReport>> {
    let Some(level) = args.verify else {
        return Ok(None);
    };
    let level = match level {
        VerifyLevel::Normal => Level::Normal,
        VerifyLevel::Strict => Level::Strict,
    };
    // Without the live sessions no ISID is known to be fresh: no login is risked.
    let report = match host.sessions() {
        Ok(sessions) => verify_apply::verify(model, &sessions, level, VERIFY_TIMEOUT),
        Err(e) => VerifyReport::not_run(level, format!("reading the live sessions: {e}")),
    };
    if !r.json() {
        let mut out = std::io::stdout().lock();
        writeln!(out)?;
        out.write_all(verify_apply::text(&report).as_bytes())?;
    }
    Ok(Some(report))
}

/// The exit code of an apply that went through: 6 when its verify failed.
fn verified(report: &Option<VerifyReport>) -> u8 {
    match report {
        Some(v) if !v.ok => exit::VERIFY_FAILED,
        _ => exit::OK,
    }
}

/// The JSON document `apply -o json` prints: the plan, and what became of it.
fn emit(
    plan: &Plan,
    backend: &str,
    status: &str,
    ops: u64,
    extra: serde_json::Value,
) -> anyhow::Result<()> {
    let mut doc = json!({
        "backend": backend,
        "status": status,
        "configfs_operations": ops,
        "summary": plan.summary(),
        "plan": render::json(plan),
    });
    if let (Some(d), Some(e)) = (doc.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            d.insert(k.clone(), v.clone());
        }
    }
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &doc)?;
    writeln!(out)?;
    Ok(())
}

/// Print a plan refusal (JSON: the document; text: the refusals went out with the
/// plan) and return the exit code or error.
fn refused(r: &Resolved, plan: &Plan, backend: &str) -> anyhow::Result<u8> {
    if r.json() {
        emit(plan, backend, "refused", 0, json!({}))?;
        return Ok(exit::REFUSED);
    }
    Err(PlanRefused {
        problems: plan.refusals.len(),
    }
    .into())
}

pub fn run(r: &Resolved, args: &ApplyArgs) -> anyhow::Result<u8> {
    r.text_or_json("apply")?;
    let model = r.load_model(&args.path)?;
    let host = r.host()?;
    let backend = host.name();
    let _lock = host.lock(Duration::from_secs(args.lock_timeout))?;
    let mut planned = host.plan(
        &args.path,
        &model,
        &DiffOptions {
            prune: args.prune,
            force: args.force,
        },
    )?;
    if !r.json() {
        let mut out = std::io::stdout().lock();
        out.write_all(render::text(&planned.plan).as_bytes())?;
        out.flush()?;
    }
    if planned.plan.is_refused() {
        return refused(r, &planned.plan, backend);
    }
    if planned.plan.is_empty() {
        host.adopt(&mut planned)?;
        let checked = verify(r, args, &host, &model)?;
        if r.json() {
            let extra = match &checked {
                Some(v) => json!({ "verify": v }),
                None => json!({}),
            };
            emit(&planned.plan, backend, "no_changes", 0, extra)?;
        }
        return Ok(verified(&checked));
    }
    confirm(args.auto_approve)?;

    match host.apply(
        &mut planned,
        &ApplyOptions {
            workers: r.workers(),
        },
    ) {
        Ok(done) => {
            let plan = &planned.plan;
            let s = plan.summary();
            if r.json() {
                let checked = verify(r, args, &host, &model)?;
                let mut extra = json!({
                    "elapsed_ms": done.elapsed.as_millis() as u64,
                    "closed_sessions": done.closed_sessions,
                });
                if let Some(v) = &checked {
                    extra["verify"] = serde_json::to_value(v)?;
                }
                emit(plan, backend, "applied", done.operations, extra)?;
                return Ok(verified(&checked));
            } else if plan.applied_as_whole {
                writeln!(
                    std::io::stdout().lock(),
                    "Apply complete: {} added, {} changed, {} destroyed; live in the userspace engine, {} session(s) closed.",
                    s.add, s.change, s.destroy, done.closed_sessions.len()
                )?;
            } else {
                writeln!(
                    std::io::stdout().lock(),
                    "Apply complete: {} added, {} changed, {} destroyed; {} configfs operations.",
                    s.add,
                    s.change,
                    s.destroy,
                    done.operations
                )?;
            }
            let checked = verify(r, args, &host, &model)?;
            Ok(verified(&checked))
        }
        // Sessions logged in between the plan and the apply: the engine refused.
        Err(ReconcileError::Engine(EngineError::Refused(report))) => {
            let plan = report.to_plan();
            if !r.json() {
                eprint!("{}", render::text(&plan));
            }
            refused(r, &plan, backend)
        }
        Err(ReconcileError::Apply(ApplyError::Failed(f))) => {
            if r.json() {
                let x = &f.failure;
                emit(
                    &planned.plan,
                    backend,
                    "failed",
                    f.operations,
                    json!({
                        "error": {
                            "step": x.op_index + 1,
                            "op": x.error.op,
                            "syscall": x.error.syscall,
                            "path": x.error.path,
                            "errno": x.error.errno,
                            "errno_name": x.error.errno.map(crate::backend::errno_label),
                            "message": x.error.to_string(),
                        },
                        "rollback": {
                            "complete": x.rollback.complete(),
                            "undone": x.rollback.undone,
                            "errors": x.rollback.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                            "kept": x.rollback.kept,
                        }
                    }),
                )?;
            } else {
                eprintln!("error: {f}");
            }
            Ok(exit::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}
