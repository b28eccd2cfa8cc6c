//! The userspace backend of `plan`, `apply`, `status` and `sessions`: the commands
//! talk to a running `isctl serve` through its control socket (`--socket`).
//!
//! The engine computes the plan itself (it knows what it serves and who is logged
//! in); this module renders it, asks for confirmation like the LIO path does, and
//! maps the engine's answers to exit codes (refused → 4, invalid model → 3).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{json, Value};

use crate::cli::args::{ApplyArgs, BackendChoice, GlobalArgs, OutputFormat, PlanArgs};
use crate::cli::exit;
use crate::engine::server::control::{request, Request};

use super::apply::NotApproved;
use super::plan::SIMULATE_ENV;

/// Whether the userspace engine is the backend: `--backend userspace`, or `auto`
/// on a host without LIO's configfs tree.
pub fn selected(g: &GlobalArgs) -> bool {
    match g.backend {
        BackendChoice::Userspace => true,
        BackendChoice::Lio => false,
        BackendChoice::Auto => {
            std::env::var_os(SIMULATE_ENV).is_none() && !g.configfs_root.is_dir()
        }
    }
}

/// The engine refused the change (it would cut or disturb sessions).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EngineRefused(pub String);

fn ask(g: &GlobalArgs, req: &Request) -> anyhow::Result<Value> {
    let reply = request(&g.socket, req).with_context(|| {
        format!(
            "no isctl engine answers on {} (start one with `isctl serve MODEL`, or pass --socket; without LIO's configfs at {} the backend is the userspace engine)",
            g.socket.display(),
            g.configfs_root.display()
        )
    })?;
    if reply["ok"] == json!(true) {
        return Ok(reply["result"].clone());
    }
    let msg = reply["error"]
        .as_str()
        .unwrap_or("the engine gave no reason")
        .to_string();
    if reply["refused"] == json!(true) {
        return Err(EngineRefused(msg).into());
    }
    anyhow::bail!("the engine: {msg}")
}

/// The model path as the engine must see it (it may run elsewhere in the tree).
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    // Validate here first: errors then point at file:line in this terminal.
    let loaded = crate::model::load(path)?;
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))
}

fn render_changes(out: &mut impl Write, changes: &[Value]) -> std::io::Result<()> {
    for c in changes {
        let disturbs = c["disturbs"].as_array().map_or(0, |a| a.len());
        let note = if disturbs > 0 {
            format!("  ({disturbs} logged-in session(s) affected)")
        } else {
            String::new()
        };
        writeln!(
            out,
            "  {} {} {}: {}{}",
            c["action"].as_str().unwrap_or("?"),
            c["kind"].as_str().unwrap_or("?"),
            c["name"].as_str().unwrap_or("?"),
            c["detail"].as_str().unwrap_or(""),
            note
        )?;
    }
    let count = |a: &str| changes.iter().filter(|c| c["action"] == json!(a)).count();
    writeln!(
        out,
        "\nPlan: {} to add, {} to change, {} to remove (userspace engine).",
        count("+"),
        count("~"),
        count("-")
    )
}

pub fn plan(g: &GlobalArgs, args: &PlanArgs) -> anyhow::Result<u8> {
    let path = absolute(&args.path)?;
    let result = ask(g, &Request::Plan { path })?;
    let changes = result["changes"].as_array().cloned().unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if g.output == OutputFormat::Json {
        serde_json::to_writer_pretty(
            &mut out,
            &json!({"backend": "userspace", "changes": changes}),
        )?;
        writeln!(out)?;
    } else if changes.is_empty() {
        writeln!(out, "No changes. The engine serves this model.")?;
    } else {
        writeln!(out, "The engine will change:")?;
        render_changes(&mut out, &changes)?;
    }
    Ok(if args.detailed_exitcode && !changes.is_empty() {
        exit::CHANGES
    } else {
        exit::OK
    })
}

pub fn apply(g: &GlobalArgs, args: &ApplyArgs) -> anyhow::Result<u8> {
    let path = absolute(&args.path)?;
    let json_out = g.output == OutputFormat::Json;
    let planned = ask(g, &Request::Plan { path: path.clone() })?;
    let changes = planned["changes"].as_array().cloned().unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if changes.is_empty() {
        if json_out {
            writeln!(
                out,
                "{}",
                json!({"backend": "userspace", "applied": false, "changes": []})
            )?;
        } else {
            writeln!(out, "No changes. The engine serves this model.")?;
        }
        return Ok(exit::OK);
    }
    if !json_out {
        writeln!(out, "The engine will change:")?;
        render_changes(&mut out, &changes)?;
        out.flush()?;
    }
    if !args.auto_approve {
        if !std::io::stdin().is_terminal() {
            return Err(NotApproved(
                "refusing to apply: stdin is not a terminal, so nobody can confirm the plan; pass --auto-approve to apply without confirmation".into(),
            )
            .into());
        }
        eprint!("\nApply these changes? Only 'yes' is accepted: ");
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != "yes" {
            return Err(NotApproved(
                "apply cancelled: the answer was not 'yes'; nothing was changed".into(),
            )
            .into());
        }
    }
    let result = ask(
        g,
        &Request::Apply {
            path,
            force: args.force,
        },
    )
    .map_err(|e| {
        if e.is::<EngineRefused>() {
            e.context("nothing was changed")
        } else {
            e
        }
    })?;
    let closed = result["closed_sessions"].as_array().map_or(0, |a| a.len());
    if json_out {
        serde_json::to_writer_pretty(
            &mut out,
            &json!({"backend": "userspace", "applied": true, "changes": result["changes"], "closed_sessions": result["closed_sessions"]}),
        )?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "\nApply complete: {} change(s) live, {closed} session(s) closed.",
            changes.len()
        )?;
    }
    Ok(exit::OK)
}

pub fn status(g: &GlobalArgs) -> anyhow::Result<u8> {
    let s = ask(g, &Request::Status)?;
    let mut out = std::io::stdout().lock();
    if g.output == OutputFormat::Json {
        serde_json::to_writer_pretty(&mut out, &json!({"backend": "userspace", "engine": s}))?;
        writeln!(out)?;
        return Ok(exit::OK);
    }
    writeln!(
        out,
        "Userspace engine (pid {}) serving {}: {} session(s), {} connection(s)",
        s["pid"],
        s["source"].as_str().unwrap_or("?"),
        s["sessions"],
        s["connections"]
    )?;
    for p in s["portals"].as_array().into_iter().flatten() {
        let listen: Vec<&str> = p["listen"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect();
        writeln!(
            out,
            "  portal {} (tag {}): {}",
            p["name"].as_str().unwrap_or("?"),
            p["tag"],
            listen.join(", ")
        )?;
    }
    for t in s["targets"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  target {} ({} session(s))",
            t["name"].as_str().unwrap_or("?"),
            t["sessions"]
        )?;
        for l in t["luns"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "    lun {}: {} ({} bytes, {}-byte blocks{}{})",
                l["lun"],
                l["extent"].as_str().unwrap_or("?"),
                l["size_bytes"],
                l["block_size"],
                if l["readonly"] == json!(true) {
                    ", read-only"
                } else {
                    ""
                },
                if l["write_back"] == json!(true) {
                    ", write-back"
                } else {
                    ""
                },
            )?;
        }
    }
    Ok(exit::OK)
}

/// Sessions in the shape `isctl sessions` prints for LIO (same field names).
pub fn session_rows(g: &GlobalArgs) -> anyhow::Result<Vec<Value>> {
    let list = ask(g, &Request::Sessions)?;
    Ok(list
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            json!({
                "target": s["target"],
                "tpgt": s["portal_group_tag"],
                "initiator": s["initiator"],
                "alias": s["initiator_alias"],
                "isid": format!("0x{}", s["isid"].as_str().unwrap_or("")),
                "tsih": s["tsih"],
                "session_id": s["tsih"],
                "type": if s["target"].is_null() { "Discovery" } else { "Normal" },
                "state": "LOGGED_IN",
                "admitted_by": "model",
                "connections": s["connections"].as_array().into_iter().flatten().map(|c| json!({
                    "cid": c["cid"],
                    "conn_state": "LOGGED_IN",
                    "address": c["peer"],
                    "transport": "TCP",
                    "header_digest": c["header_digest"],
                    "data_digest": c["data_digest"],
                })).collect::<Vec<_>>(),
            })
        })
        .collect())
}
