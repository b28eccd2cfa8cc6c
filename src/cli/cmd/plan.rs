//! `isctl plan PATH`: what `apply` would change, like terraform, on either backend.
//!
//! Exit codes: 0 (with `--detailed-exitcode`: 0 no changes, 2 changes), 3 invalid
//! model, 4 refused (backend limit, sessions without `--force`, shrinking a file...),
//! 1 other failures.

use std::io::Write;

use crate::cli::args::PlanArgs;
use crate::cli::exit;
use crate::cli::resolve::Resolved;
use crate::plan::{render, DiffOptions, PlanRefused};

pub fn run(r: &Resolved, args: &PlanArgs) -> anyhow::Result<u8> {
    r.text_or_json("plan")?;
    let model = r.load_model(&args.path)?;
    let host = r.host()?;
    let planned = host.plan(
        &args.path,
        &model,
        &DiffOptions {
            prune: args.prune,
            force: args.force,
        },
    )?;
    let plan = &planned.plan;
    let mut out = std::io::stdout().lock();
    if r.json() {
        serde_json::to_writer_pretty(&mut out, &render::json(plan))?;
        writeln!(out)?;
        if plan.is_refused() {
            return Ok(exit::REFUSED);
        }
    } else {
        out.write_all(render::text(plan).as_bytes())?;
        if plan.is_refused() {
            drop(out);
            return Err(PlanRefused {
                problems: plan.refusals.len(),
            }
            .into());
        }
    }
    Ok(if args.detailed_exitcode && !plan.is_empty() {
        exit::CHANGES
    } else {
        exit::OK
    })
}
