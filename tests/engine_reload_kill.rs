//! A SIGKILLed `isctl apply --backend userspace` never leaves the engine serving a mix
//! of two models: the client is killed at many points of a live reload (before it
//! connects, while it plans, between plan and apply, while the engine applies,
//! after), and each time the engine's control API and a real initiator (libiscsi's
//! iscsi-ls, discovery plus REPORT LUNS on every target) see exactly the old model or
//! exactly the new one. Then the engine itself is SIGKILLed and restarted on its model
//! file: it serves that file (the engine keeps no state of its own; docs/engine.md,
//! "Crashes and restarts").
//!
//! Needs libiscsi-bin (tests/install-deps.sh). Takes about 15 s.

#[path = "conformance/engine.rs"]
mod engine;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use engine::{free_port, start_engine, work_dir};

const BASE: &str = "iqn.2026-11.io.isctl";

/// Target (short name) → its LUNs.
type View = BTreeMap<String, Vec<u16>>;

/// Model "old": targets keep, lose (2 LUNs each); "new": keep with a third LUN, lose
/// gone, gain added. Every difference is one a mix would show.
fn write_model(dir: &Path, port: u16, new: bool) -> (PathBuf, View) {
    let mut text =
        format!("[global]\nbasename = \"{BASE}\"\n[portal.p]\nlisten = [\"127.0.0.1:{port}\"]\n");
    let mut view = View::new();
    let targets: &[(&str, &[u16])] = if new {
        &[("keep", &[0, 1, 2]), ("added", &[0, 3])]
    } else {
        &[("keep", &[0, 1]), ("lose", &[0, 1])]
    };
    for (t, luns) in targets {
        let mut map = Vec::new();
        for l in *luns {
            text += &format!("[extent.{t}-{l}]\ntype = \"ramdisk\"\nsize = \"1MiB\"\n");
            map.push(format!("{l} = \"{t}-{l}\""));
        }
        text += &format!(
            "[target.{t}]\nluns = {{ {} }}\n[[target.{t}.group]]\nportal = \"p\"\n",
            map.join(", ")
        );
        view.insert(t.to_string(), luns.to_vec());
    }
    let path = dir.join(if new { "new.toml" } else { "old.toml" });
    std::fs::write(&path, text).unwrap();
    (path, view)
}

fn isctl(sock: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_isctl"));
    c.arg("--socket")
        .arg(sock)
        .args(["--backend", "userspace"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn short(name: &str) -> String {
    name.strip_prefix(&format!("{BASE}:"))
        .unwrap_or(name)
        .to_string()
}

/// What the engine says it serves.
fn engine_view(sock: &Path) -> View {
    let o = isctl(sock)
        .args(["status", "-o", "json"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(o.status.success(), "isctl status failed");
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    st["engine"]["targets"]
        .as_array()
        .expect("status lists targets")
        .iter()
        .map(|t| {
            let luns = t["luns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["lun"].as_u64().unwrap() as u16)
                .collect();
            (short(t["name"].as_str().unwrap()), luns)
        })
        .collect()
}

/// What an initiator sees: iscsi-ls discovery, then REPORT LUNS on every target.
fn initiator_view(port: u16) -> View {
    let o = Command::new("iscsi-ls")
        .args(["-s", &format!("iscsi://127.0.0.1:{port}")])
        .output()
        .expect("run iscsi-ls (libiscsi-bin)");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "iscsi-ls failed: {text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut view = View::new();
    let mut current = None;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Target:") {
            let name = short(rest.split_whitespace().next().unwrap_or(""));
            view.entry(name.clone()).or_default();
            current = Some(name);
        } else if let Some(rest) = line.strip_prefix("Lun:") {
            let lun: u16 = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("iscsi-ls line {line:?}"));
            let t = current.as_ref().expect("a LUN line after a target line");
            view.get_mut(t).unwrap().push(lun);
        }
    }
    view
}

#[test]
#[ignore = "needs libiscsi-bin: run via tests/run.sh"]
fn a_killed_apply_leaves_the_engine_on_the_old_or_the_new_model_never_a_mix() {
    let dir = work_dir();
    let port = free_port();
    let (old, old_view) = write_model(dir.path(), port, false);
    let (new, new_view) = write_model(dir.path(), port, true);
    let sock = dir.path().join("engine.sock");
    let engine = start_engine(dir.path(), &old, port);
    assert_eq!(engine_view(&sock), old_view);
    assert_eq!(initiator_view(port), old_view);

    // How long one whole apply takes here (old -> new -> old), to spread the kills
    // over it.
    let t = Instant::now();
    for m in [&new, &old] {
        let st = isctl(&sock)
            .args(["apply", "--auto-approve"])
            .arg(m)
            .status()
            .unwrap();
        assert!(st.success(), "apply {} failed", m.display());
    }
    let apply_time = t.elapsed() / 2;

    let kills = 16u32;
    let (mut saw_old, mut saw_new) = (0, 0);
    for i in 0..kills {
        // From "at once" to 1.5 whole applies, in even steps.
        let delay = apply_time * 3 * i / (2 * (kills - 1));
        let target = if engine_view(&sock) == old_view {
            &new
        } else {
            &old
        };
        let mut child = isctl(&sock)
            .args(["apply", "--auto-approve"])
            .arg(target)
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // The engine finishes (or never starts) what the client asked, on its own.
        std::thread::sleep(Duration::from_millis(100));
        let by_engine = engine_view(&sock);
        let by_initiator = initiator_view(port);
        assert_eq!(
            by_engine,
            by_initiator,
            "kill {i} after {delay:?}: the control API and an initiator disagree\n{}",
            engine.log_tail()
        );
        if by_engine == old_view {
            saw_old += 1;
        } else if by_engine == new_view {
            saw_new += 1;
        } else {
            panic!(
                "kill {i} after {delay:?}: the engine serves a mix of both models: {by_engine:?}\n{}",
                engine.log_tail()
            );
        }
    }
    println!(
        "one apply takes {apply_time:?}; {kills} kills: engine on the old model {saw_old} times, on the new one {saw_new} times"
    );

    // The engine itself: SIGKILLed while serving `new` (applied over the socket), it
    // serves its model file `old` when restarted on it.
    if engine_view(&sock) != new_view {
        let st = isctl(&sock)
            .args(["apply", "--auto-approve"])
            .arg(&new)
            .status()
            .unwrap();
        assert!(st.success());
    }
    drop(engine); // SIGKILL
    let engine = start_engine(dir.path(), &old, port);
    assert_eq!(engine_view(&sock), old_view, "{}", engine.log_tail());
    assert_eq!(initiator_view(port), old_view);
}
