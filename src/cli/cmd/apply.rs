//! `isctl apply PATH`: make the live configuration match the model.
//!
//! Takes the apply lock first (so the plan cannot go stale under another apply),
//! plans, prints the plan, asks for confirmation (`yes`) on a terminal unless
//! `--auto-approve` (without a terminal and without `--auto-approve` it refuses),
//! applies with rollback on failure, records the managed objects in the ledger.
//!
//! Exit codes: 0 applied or nothing to do, 1 failed (rolled back), 3 invalid model,
//! 4 refused, 5 locked.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use serde_json::json;

use crate::apply::{self, ApplyError, ApplyOptions, DEFAULT_WORKERS};
use crate::cli::args::{ApplyArgs, GlobalArgs, OutputFormat};
use crate::cli::exit;
use crate::plan::{render, DiffOptions, PlanRefused};

use super::plan::{make_plan, open_backend};

/// The user did not confirm (or could not be asked).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotApproved(pub String);

/// Worker threads for the executor (`ISCTL_WORKERS`, default `DEFAULT_WORKERS`).
fn workers() -> usize {
    std::env::var("ISCTL_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_WORKERS)
}

pub fn run(g: &GlobalArgs, args: &ApplyArgs) -> anyhow::Result<u8> {
    if g.output == OutputFormat::Toml {
        eprintln!("error: `isctl apply` prints text or json (-o text | -o json)");
        return Ok(exit::USAGE);
    }
    if args.verify {
        anyhow::bail!(
            "apply --verify is not available yet (it needs `isctl probe`); apply without it and check with an initiator"
        );
    }
    if super::engine::selected(g) {
        return super::engine::apply(g, args);
    }
    let json = g.output == OutputFormat::Json;
    let open = open_backend(g)?;
    let _lock = apply::acquire_lock(&g.state_dir, Duration::from_secs(args.lock_timeout))?;
    let mut planned = make_plan(
        g,
        &args.path,
        DiffOptions {
            prune: args.prune,
            force: args.force,
        },
        open.backend.as_ref(),
    )?;
    let plan = &planned.plan;
    let mut out = std::io::stdout().lock();
    // Only JSON output embeds it; building it for a large plan is not free.
    let plan_json = if json {
        render::json(plan)
    } else {
        serde_json::Value::Null
    };
    if !json {
        out.write_all(render::text(plan).as_bytes())?;
        out.flush()?;
    }
    let emit = |out: &mut std::io::StdoutLock,
                status: &str,
                ops: u64,
                extra: serde_json::Value|
     -> anyhow::Result<()> {
        let mut doc = json!({
            "status": status,
            "configfs_operations": ops,
            "summary": plan.summary(),
            "plan": plan_json,
        });
        if let (Some(d), Some(e)) = (doc.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                d.insert(k.clone(), v.clone());
            }
        }
        serde_json::to_writer_pretty(&mut *out, &doc)?;
        writeln!(out)?;
        Ok(())
    };

    if plan.is_refused() {
        if json {
            emit(&mut out, "refused", 0, json!({}))?;
            return Ok(exit::REFUSED);
        }
        drop(out);
        return Err(PlanRefused {
            problems: plan.refusals.len(),
        }
        .into());
    }

    if plan.is_empty() {
        // Adoption: desired objects that already exist become managed.
        if planned.ledger.objects() != plan.ledger_after
            || planned.ledger.applied() != plan.applied_attributes
        {
            planned.ledger.set_objects(plan.ledger_after.clone());
            planned.ledger.set_applied(plan.applied_attributes.clone());
            planned.ledger.save()?;
        }
        if json {
            emit(&mut out, "no_changes", 0, json!({}))?;
        }
        return Ok(exit::OK);
    }

    if !args.auto_approve {
        if !std::io::stdin().is_terminal() {
            drop(out);
            return Err(NotApproved(
                "refusing to apply: stdin is not a terminal, so nobody can confirm the plan; pass --auto-approve to apply without confirmation".into(),
            )
            .into());
        }
        {
            let mut err = std::io::stderr().lock();
            write!(err, "\nApply these changes? Only 'yes' is accepted: ")?;
            err.flush()?;
        }
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != "yes" {
            drop(out);
            return Err(NotApproved(
                "apply cancelled: the answer was not 'yes'; nothing was changed".into(),
            )
            .into());
        }
    }

    let result = apply::apply(
        plan,
        &planned.desired,
        open.backend.as_ref(),
        &mut planned.ledger,
        &ApplyOptions { workers: workers() },
    );
    open.persist()?;
    match result {
        Ok(done) => {
            let s = done.summary;
            if json {
                emit(
                    &mut out,
                    "applied",
                    done.operations,
                    json!({ "elapsed_ms": done.elapsed.as_millis() as u64 }),
                )?;
            } else {
                writeln!(
                    out,
                    "Apply complete: {} added, {} changed, {} destroyed; {} configfs operations.",
                    s.add, s.change, s.destroy, done.operations
                )?;
            }
            Ok(exit::OK)
        }
        Err(ApplyError::Failed(f)) => {
            if json {
                let x = &f.failure;
                emit(
                    &mut out,
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
                drop(out);
                eprintln!("error: {f}");
            }
            Ok(exit::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}
