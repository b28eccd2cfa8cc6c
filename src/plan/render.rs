//! Rendering a plan: terraform-like text and a stable JSON object
//! (format documented in docs/reconcile.md, "JSON plan format").
//!
//! Secrets never reach either form: attribute values arrive rendered (secrets as
//! `(sensitive)`), and ops print through `Display`, which redacts them.

use std::fmt::Write as _;

use serde::Serialize;

use super::{Action, Plan, Summary};

/// Version of the JSON plan format; bumped only on incompatible changes.
pub const JSON_FORMAT_VERSION: u32 = 1;

/// The summary line (`Plan: ...` or `No changes. ...`).
pub fn summary_line(plan: &Plan) -> String {
    if plan.is_empty() {
        return "No changes. The live configuration matches the model.".to_string();
    }
    let s = plan.summary();
    let how = if plan.applied_as_whole {
        "applied at once by the userspace engine".to_string()
    } else {
        format!("{} configfs operations", s.configfs_operations)
    };
    format!(
        "Plan: {} to add, {} to change, {} to destroy ({how}).",
        s.add, s.change, s.destroy
    )
}

/// The whole plan as text.
pub fn text(plan: &Plan) -> String {
    let mut out = String::new();
    if !plan.changes.is_empty() {
        out.push_str("isctl will perform the following actions:\n\n");
        for c in &plan.changes {
            let _ = write!(out, "  {} {}", c.action.symbol(), c.address);
            if let Some(r) = &c.reason {
                let _ = write!(out, "  ({r})");
            }
            out.push('\n');
            let width = c.attributes.iter().map(|a| a.name.len()).max().unwrap_or(0);
            for a in &c.attributes {
                let show = |v: &Option<String>| {
                    if a.sensitive && v.is_some() {
                        "(sensitive)".to_string()
                    } else {
                        v.clone().unwrap_or_else(|| "(unset)".to_string())
                    }
                };
                match c.action {
                    Action::Create => {
                        let _ = write!(out, "      {:width$} = {}", a.name, show(&a.new));
                    }
                    _ => {
                        let _ = write!(
                            out,
                            "      ~ {:width$}: {} -> {}",
                            a.name,
                            show(&a.old),
                            show(&a.new)
                        );
                    }
                }
                if a.forces_replacement {
                    out.push_str("  # forces replacement");
                }
                out.push('\n');
            }
            for n in &c.notes {
                let _ = writeln!(out, "      # {n}");
            }
        }
        out.push('\n');
    }
    if !plan.unmanaged.is_empty() {
        out.push_str(
            "Unmanaged objects (not in the model, not created by isctl; left alone, --prune deletes them):\n",
        );
        for u in &plan.unmanaged {
            let _ = writeln!(out, "  {u}");
        }
        out.push('\n');
    }
    if !plan.sessions_cut.is_empty() {
        let head = if plan.force {
            "Logged-in sessions this plan cuts (--force):"
        } else {
            "Logged-in sessions this plan would cut:"
        };
        let _ = writeln!(out, "{head}");
        for c in &plan.sessions_cut {
            let _ = writeln!(out, "  {} [{}]", c.session.describe(), c.by);
        }
        out.push('\n');
    }
    if !plan.warnings.is_empty() {
        out.push_str("Warnings:\n");
        for w in &plan.warnings {
            let _ = writeln!(out, "  {w}");
        }
        out.push('\n');
    }
    if !plan.refusals.is_empty() {
        out.push_str("Refused:\n");
        for r in &plan.refusals {
            let _ = writeln!(out, "  {r}");
        }
        out.push('\n');
    }
    out.push_str(&summary_line(plan));
    out.push('\n');
    out
}

#[derive(Serialize)]
struct JsonOp<'a> {
    seq: usize,
    phase: &'static str,
    lane: String,
    op: &'static str,
    object: crate::state::ObjectId,
    description: String,
    configfs_operations: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    _marker: Option<&'a ()>,
}

#[derive(Serialize)]
struct JsonPlan<'a> {
    format_version: u32,
    changes: &'a [super::Change],
    operations: Vec<JsonOp<'a>>,
    unmanaged: Vec<JsonUnmanaged>,
    sessions_cut: &'a [super::SessionCut],
    refusals: Vec<JsonRefusal<'a>>,
    warnings: &'a [String],
    summary: Summary,
    no_changes: bool,
    force: bool,
    prune: bool,
}

#[derive(Serialize)]
struct JsonUnmanaged {
    object: crate::state::ObjectId,
    address: String,
}

#[derive(Serialize)]
struct JsonRefusal<'a> {
    kind: &'static str,
    object: Option<&'a crate::state::ObjectId>,
    origin: Option<String>,
    problem: &'a str,
    fix: &'a str,
}

/// The plan as a JSON value (see docs/reconcile.md for the format).
pub fn json(plan: &Plan) -> serde_json::Value {
    let doc = JsonPlan {
        format_version: JSON_FORMAT_VERSION,
        changes: &plan.changes,
        operations: plan
            .ops
            .iter()
            .enumerate()
            .map(|(i, p)| JsonOp {
                seq: i + 1,
                phase: p.phase.as_str(),
                lane: p.lane.to_string(),
                op: p.op.name(),
                object: p.op.object(),
                description: p.op.to_string(),
                configfs_operations: p.backend_operations,
                _marker: None,
            })
            .collect(),
        unmanaged: plan
            .unmanaged
            .iter()
            .map(|u| JsonUnmanaged {
                object: u.clone(),
                address: u.to_string(),
            })
            .collect(),
        sessions_cut: &plan.sessions_cut,
        refusals: plan
            .refusals
            .iter()
            .map(|r| JsonRefusal {
                kind: r.kind,
                object: r.object.as_ref(),
                origin: r.origin.as_ref().map(|o| o.to_string()),
                problem: &r.problem,
                fix: &r.fix,
            })
            .collect(),
        warnings: &plan.warnings,
        summary: plan.summary(),
        no_changes: plan.is_empty(),
        force: plan.force,
        prune: plan.prune,
    };
    serde_json::to_value(doc).unwrap_or(serde_json::Value::Null)
}
