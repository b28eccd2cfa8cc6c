//! The CLI contract the VM tests rely on, exercised on the real binary against a
//! simulated configfs persisted in a file (`ISCTL_SIMULATE`): exit codes, summary
//! lines, confirmation, the lock, JSON plans, secrets, export → plan, status,
//! sessions.

mod common;
mod reconcile_common;

use std::path::{Path, PathBuf};

use common::{Isctl, Run};
use isctl::backend::sim::Sim;
use reconcile_common::fixture;

const SECRETS: [&str; 3] = ["initiator2Target", "target2Initiatr", "disc0very-Secret"];

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let sim = Sim::new(&Sim::default_root());
        sim.add_host_dir(Path::new("/srv/iscsi"));
        sim.add_block_device(Path::new("/dev/ram0"), 512, false);
        let e = Env { dir };
        sim.save(&e.sim_file()).unwrap();
        e
    }
    fn sim_file(&self) -> PathBuf {
        self.dir.path().join("sim.json")
    }
    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    fn sim(&self) -> Sim {
        Sim::load(&self.sim_file(), &Sim::default_root()).unwrap()
    }
    /// isctl on this simulated host (its configfs file and state directory).
    fn isctl(&self) -> Isctl {
        Isctl::new()
            .env("ISCTL_SIMULATE", self.sim_file())
            .env("ISCTL_STATE_DIR", self.state_dir())
            .env_remove("ISCTL_CONFIGFS_ROOT")
            .env_remove("ISCTL_BACKEND")
    }
    fn run(&self, args: &[&str]) -> Run {
        self.isctl().args(args).run()
    }
}

fn model() -> String {
    fixture("complete.toml").display().to_string()
}

#[test]
fn plan_apply_reapply_cycle() {
    let e = Env::new();
    let m = model();
    let o = e.run(&["plan", "--detailed-exitcode", &m]);
    o.assert_exit(2);
    let plan_line = o.stdout.lines().last().unwrap().to_string();
    assert!(
        plan_line.starts_with("Plan: 44 to add, 0 to change, 0 to destroy ("),
        "{plan_line}"
    );
    let n: u64 = plan_line
        .rsplit('(')
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();

    let o = e.run(&["apply", "--auto-approve", &m]);
    o.assert_exit(0);
    let last = o.stdout.lines().last().unwrap().to_string();
    assert_eq!(
        last,
        format!("Apply complete: 44 added, 0 changed, 0 destroyed; {n} configfs operations.")
    );
    assert_eq!(e.sim().mutations(), n);

    let o = e.run(&["plan", "--detailed-exitcode", &m]);
    o.assert_exit(0);
    assert!(o
        .stdout
        .contains("No changes. The live configuration matches the model."));
    let o = e.run(&["apply", &m]);
    assert_eq!(
        o.code, 0,
        "a no-op apply needs no confirmation: {}",
        o.stderr
    );
    assert!(o.stdout.contains("No changes."));
    assert_eq!(e.sim().mutations(), n, "the no-op apply wrote nothing");

    let o = e.run(&["-o", "json", "apply", "--auto-approve", &m]);
    let v = o.json();
    assert_eq!(v["status"], "no_changes");
    assert_eq!(v["configfs_operations"], 0);
}

#[test]
fn apply_without_a_terminal_needs_auto_approve() {
    let e = Env::new();
    let o = e.run(&["apply", &model()]);
    o.assert_exit(4);
    assert!(o.stderr.contains("--auto-approve"), "{}", o.stderr);
    assert_eq!(e.sim().mutations(), 0);
}

#[test]
fn json_plan_has_the_documented_keys_and_no_secrets() {
    let e = Env::new();
    let o = e.run(&["-o", "json", "plan", &model()]);
    o.assert_exit(0);
    let text = o.stdout;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for k in [
        "changes",
        "operations",
        "summary",
        "unmanaged",
        "sessions_cut",
        "refusals",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    let s = &v["summary"];
    assert_eq!(s["add"], 44);
    let total: u64 = v["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["configfs_operations"].as_u64().unwrap())
        .sum();
    assert_eq!(s["configfs_operations"].as_u64().unwrap(), total);
    let t = e.run(&["plan", &model()]);
    for secret in SECRETS {
        assert!(!text.contains(secret), "secret in JSON plan");
        assert!(!t.stdout.contains(secret), "secret in text plan");
        assert!(!t.stderr.contains(secret));
    }
    let a = e.run(&["apply", "--auto-approve", &model()]);
    for secret in SECRETS {
        assert!(!a.stdout.contains(secret) && !a.stderr.contains(secret));
    }
}

#[test]
fn a_held_lock_fails_fast_with_exit_5() {
    let e = Env::new();
    let _held = isctl::apply::acquire_lock(&e.state_dir(), std::time::Duration::ZERO).unwrap();
    let o = e.run(&["apply", "--auto-approve", &model()]);
    o.assert_exit(5);
    assert!(o.stderr.contains("--lock-timeout"), "{}", o.stderr);
}

#[test]
fn backend_choice_errors_are_clear() {
    let e = Env::new();
    let o = Isctl::new()
        .args(["--backend", "userspace", "plan", &model()])
        .env("ISCTL_SOCKET", e.dir.path().join("no-engine.sock"))
        .env_remove("ISCTL_SIMULATE")
        .env("ISCTL_STATE_DIR", e.state_dir())
        .run();
    o.assert_exit(1);
    assert!(
        o.stderr.contains("no isctl engine answers on") && o.stderr.contains("isctl serve"),
        "{}",
        o.stderr
    );
    let o = Isctl::new()
        .args([
            "--backend",
            "lio",
            "--configfs-root",
            "/nonexistent/target",
            "plan",
            &model(),
        ])
        .env_remove("ISCTL_SIMULATE")
        .run();
    o.assert_exit(1);
    assert!(
        o.stderr.contains("modprobe target_core_mod"),
        "{}",
        o.stderr
    );
    let o = Isctl::new()
        .args(["--configfs-root", "/nonexistent/target", "plan", &model()])
        .env("ISCTL_SOCKET", e.dir.path().join("no-engine.sock"))
        .env_remove("ISCTL_SIMULATE")
        .env_remove("ISCTL_BACKEND")
        .run();
    o.assert_exit(1);
    assert!(
        o.stderr.contains("no isctl engine answers on") && o.stderr.contains("isctl serve"),
        "{}",
        o.stderr
    );
}

#[test]
fn model_errors_exit_3_and_backend_limits_exit_4_with_file_and_line() {
    let e = Env::new();
    let bad = e.dir.path().join("bad.toml");
    std::fs::write(&bad, "[extent.x]\ntype = \"tape\"\n").unwrap();
    let o = e.run(&["plan", bad.to_str().unwrap()]);
    o.assert_exit(3);
    let limited = e.dir.path().join("limited.toml");
    std::fs::write(
        &limited,
        r#"[portal.p]
listen = ["[::]:3260"]
[initiator_group.g]
initiators = ["iqn.1994-05.com.example:c1"]
networks = ["192.168.1.0/24"]
[extent.r]
type = "ramdisk"
size = "1MiB"
[target."iqn.2026-01.com.example:t"]
luns = { 0 = "r" }
[[target."iqn.2026-01.com.example:t".group]]
portal = "p"
initiator_group = "g"
"#,
    )
    .unwrap();
    let o = e.run(&["plan", limited.to_str().unwrap()]);
    o.assert_exit(4);
    let err = o.stderr;
    assert!(err.contains("limited.toml:3:"), "{err}");
    assert!(err.contains("192.168.1.0/24"), "{err}");
}

/// The example model applied to the simulated configfs, with two logged-in sessions:
/// a demo-mode one on the lab target and an ACL's on the archive target.
fn applied_with_two_sessions() -> (Env, String) {
    let e = Env::new();
    let m = model();
    e.run(&["apply", "--auto-approve", &m]).assert_exit(0);
    let sim = e.sim();
    sim.add_session(
        "iqn.2005-10.org.example.ctl:lab",
        1,
        "iqn.1994-05.com.example:dyn1",
        "10.0.2.2",
    )
    .unwrap();
    sim.add_session(
        "iqn.2026-01.com.example:archive",
        10,
        "iqn.1998-01.com.vmware:esxi-host-1",
        "10.0.2.3",
    )
    .unwrap();
    sim.save(&e.sim_file()).unwrap();
    (e, m)
}

#[test]
fn sessions_refuse_then_force() {
    let (e, _) = applied_with_two_sessions();

    let o = e.run(&["sessions"]);
    o.assert_exit(0);
    assert!(
        o.stdout.contains("iqn.1994-05.com.example:dyn1"),
        "{}",
        o.stdout
    );
    let o = e.run(&[
        "-o",
        "json",
        "sessions",
        "initiator.name=*esxi*",
        "--fields",
        "initiator.name,tsih,connections.initiator_address.address",
    ]);
    let v = o.json();
    assert_eq!(v["num_records"], 1);
    assert_eq!(
        v["records"][0]["connections"][0]["initiator_address"]["address"],
        "10.0.2.3"
    );
    let o = e.run(&[
        "sessions",
        "--order-by",
        "tsih",
        "--max-records",
        "1",
        "--fields",
        "initiator.name",
    ]);
    assert_eq!(o.stdout.lines().count(), 2, "{}", o.stdout);

    // Remove the archive target from the model.
    let text = std::fs::read_to_string(fixture("complete.toml")).unwrap();
    let cut = text
        .split("[target.\"iqn.2026-01.com.example:archive\"]")
        .next()
        .unwrap()
        .to_string()
        + &text
            .split("[target.lab]")
            .nth(1)
            .map(|r| format!("[target.lab]{r}"))
            .unwrap();
    let m2 = e.dir.path().join("m2.toml");
    std::fs::write(&m2, cut).unwrap();
    let m2 = m2.to_str().unwrap();
    let o = e.run(&["apply", "--auto-approve", m2]);
    o.assert_exit(4);
    let all = o.all();
    assert!(all.contains("iqn.1998-01.com.vmware:esxi-host-1"), "{all}");
    assert!(all.contains("TSIH"), "{all}");
    assert!(all.contains("--force"), "{all}");
    let o = e.run(&["apply", "--auto-approve", "--force", m2]);
    o.assert_exit(0);
    assert_eq!(
        e.sim().sessions().len(),
        1,
        "only the archive session was cut"
    );
}

#[test]
fn export_then_plan_reports_no_changes() {
    let e = Env::new();
    let m = model();
    e.run(&["apply", "--auto-approve", &m]).assert_exit(0);
    // Default: secrets referenced through environment variables.
    let o = e.run(&["export"]);
    o.assert_exit(0);
    let exported = o.stdout;
    for secret in SECRETS {
        assert!(!exported.contains(secret));
    }
    assert!(
        exported.contains("secret_env = \"ISCTL_SECRET_"),
        "{exported}"
    );
    let f = e.dir.path().join("exported.toml");
    std::fs::write(&f, &exported).unwrap();
    // A fresh ledger: the exported model is adopted as is.
    let o = e
        .isctl()
        .args(["plan", "--detailed-exitcode", f.to_str().unwrap()])
        .envs([
            ("ISCTL_SECRET_DISCOVERY", "disc0very-Secret"),
            ("ISCTL_SECRET_CHAP_1", "initiator2Target"),
            ("ISCTL_SECRET_CHAP_1_PEER", "target2Initiatr"),
            ("ISCTL_SECRET_CHAP_2", "initiator2Target"),
        ])
        .run();
    assert_eq!(o.code, 0, "{}{}\n{exported}", o.stdout, o.stderr);

    // --secrets-dir: 0600 files referenced with secret_file.
    let sd = e.dir.path().join("secrets");
    let o = e.run(&["export", "--secrets-dir", sd.to_str().unwrap()]);
    o.assert_exit(0);
    let f2 = e.dir.path().join("exported2.toml");
    std::fs::write(&f2, &o.stdout).unwrap();
    assert!(o.stdout.contains("secret_file = "));
    use std::os::unix::fs::PermissionsExt;
    let mut n = 0;
    for entry in std::fs::read_dir(&sd).unwrap() {
        let meta = entry.unwrap().metadata().unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        n += 1;
    }
    assert!(n >= 3);
    let o = e.run(&["plan", "--detailed-exitcode", f2.to_str().unwrap()]);
    o.assert_exit(0);
    let o = e.run(&["-o", "json", "export"]);
    let v = o.json();
    assert_eq!(v["lossless"], true);
}

#[test]
fn status_reports_managed_unmanaged_and_drift() {
    let e = Env::new();
    let m = model();
    e.run(&["apply", "--auto-approve", &m]).assert_exit(0);
    let o = e.run(&["status", &m]);
    o.assert_exit(0);
    assert!(o.stdout.contains("Drift: none"), "{}", o.stdout);
    assert!(o.stdout.contains("in sync"));
    // Someone changes an alias and removes a mapping by hand.
    let sim = e.sim();
    use isctl::backend::lio::ConfigFs;
    let root = Sim::default_root();
    sim.write(
        &root.join("iscsi/iqn.2005-10.org.example.ctl:lab/tpgt_1/param/TargetAlias"),
        b"hand edited",
    )
    .unwrap();
    sim.save(&e.sim_file()).unwrap();
    let o = e.run(&["status"]);
    o.assert_exit(0);
    assert!(
        o.stdout
            .contains("changed: target \"iqn.2005-10.org.example.ctl:lab\" tpg 1 alias"),
        "{}",
        o.stdout
    );
    let o = e.run(&["status", &m]);
    o.assert_exit(2);
    let o = e.run(&["-o", "json", "status", &m]);
    let v = o.json();
    assert_eq!(v["model"]["in_sync"], false);
    assert_eq!(v["drift"]["changed"][0]["live"], "hand edited");
}

#[test]
fn a_failing_apply_reports_the_step_errno_and_rollback() {
    let e = Env::new();
    // Someone else's iblock object holds /dev/ram0: the kernel refuses a second
    // exclusive claim with EBUSY at enable (docs/configfs.md §2.2).
    let sim = e.sim();
    use isctl::backend::lio::ConfigFs;
    let root = Sim::default_root();
    sim.mkdir(&root.join("core/iblock_7")).unwrap();
    sim.mkdir(&root.join("core/iblock_7/theirs")).unwrap();
    sim.write(
        &root.join("core/iblock_7/theirs/control"),
        b"udev_path=/dev/ram0",
    )
    .unwrap();
    sim.write(&root.join("core/iblock_7/theirs/enable"), b"1")
        .unwrap();
    sim.save(&e.sim_file()).unwrap();
    let before = e.sim().dump();
    let o = e.run(&["apply", "--auto-approve", &model()]);
    o.assert_exit(1);
    let err = o.stderr;
    assert!(err.contains("apply failed at step"), "{err}");
    assert!(
        err.contains("write core/iblock_0/db/enable: EBUSY (16)"),
        "{err}"
    );
    assert!(err.contains("rollback complete"), "{err}");
    assert_eq!(e.sim().dump(), before, "configfs is as it was");
    assert!(
        !e.state_dir().join("ledger.json").exists() || {
            let l = std::fs::read_to_string(e.state_dir().join("ledger.json")).unwrap();
            !l.contains("\"db\"")
        }
    );
    let o = e.run(&["-o", "json", "apply", "--auto-approve", &model()]);
    o.assert_exit(1);
    let v = o.json();
    assert_eq!(v["status"], "failed");
    assert_eq!(v["error"]["errno"], 16);
    assert_eq!(v["error"]["errno_name"], "EBUSY (16)");
    assert_eq!(v["rollback"]["complete"], true);
}

/// What a killed apply leaves: objects created, and an intent in the ledger instead
/// of a record of them (tests/apply_crash.rs kills applies for real, in the
/// simulator, at every step). Here: a complete apply whose record is replaced by the
/// intent of a dead process.
fn interrupted_after_a_complete_apply(e: &Env) {
    let o = e.run(&["apply", "--auto-approve", &model()]);
    o.assert_exit(0);
    // Forget the finished apply, and record it as interrupted by a dead process.
    let ledger_path = e.state_dir().join("ledger.json");
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&ledger_path).unwrap()).unwrap();
    let key = doc["managed"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let objects = doc["managed"][&key].clone();
    doc["managed"] = serde_json::json!({});
    doc["applied"] = serde_json::json!({});
    doc["intents"] = serde_json::json!({ key: {
        "started_unix": 1_700_000_000u64, "pid": 2_147_483_646u32, "operations": 99, "objects": objects,
    }});
    std::fs::write(&ledger_path, serde_json::to_vec(&doc).unwrap()).unwrap();
}

/// An interrupted apply that had created everything the model asks for is settled
/// by the next apply of that model, although its plan is empty.
#[test]
fn an_empty_plan_settles_an_interrupted_apply() {
    let e = Env::new();
    interrupted_after_a_complete_apply(&e);
    let o = e.run(&["apply", "--auto-approve", &model()]);
    o.assert_exit(0);
    assert!(o.stdout.contains("No changes."), "{}", o.stdout);
    let o = e.run(&["status", "-o", "json"]);
    let st: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(st["interrupted_apply"], serde_json::Value::Null, "{st}");
    assert_eq!(st["unmanaged"], serde_json::json!([]), "{st}");
}

/// An apply that died half way is shown by `status`, and its objects are managed:
/// an empty model deletes them (no `--prune` needed, nothing unmanaged left).
#[test]
fn status_shows_an_interrupted_apply_and_the_next_apply_converges() {
    let e = Env::new();
    interrupted_after_a_complete_apply(&e);

    let o = e.run(&["status"]);
    o.assert_exit(0);
    assert!(
        o.stdout
            .contains("Interrupted apply: started at 1700000000")
            && o.stdout.contains("the next apply converges"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("0 not managed by isctl"), "{}", o.stdout);
    let empty = e.dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let o = e.run(&["apply", "--auto-approve", empty.to_str().unwrap()]);
    o.assert_exit(0);
    let o = e.run(&["status", "-o", "json"]);
    let st: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(st["interrupted_apply"], serde_json::Value::Null, "{st}");
    // Only the global discovery settings stay, as after any apply of an empty model
    // (an empty model does not manage them).
    assert_eq!(st["live"], 1, "{st}");
    assert_eq!(st["unmanaged"][0]["address"], "discovery_auth", "{st}");
    assert_eq!(st["managed"], 0, "{st}");
}

/// The `core/<hba>/<name>` directory of the storage object `name`.
fn backstore_dir(sim: &Sim, name: &str) -> PathBuf {
    use isctl::backend::lio::ConfigFs;
    let core = Sim::default_root().join("core");
    for hba in sim.read_dir(&core).unwrap() {
        let dir = core.join(&hba.name).join(name);
        if sim.exists(&dir) {
            return dir;
        }
    }
    panic!("no storage object {name:?} under {}", core.display());
}

/// The drift rule (docs/reconcile.md "Drift"): a policy attribute the model does not name
/// but that someone set behind isctl's back is drift in `status` (with and without the
/// model), a change in `plan`, and `apply` writes the kernel default back.
#[test]
fn an_attribute_the_model_does_not_name_is_drift_and_apply_repairs_it() {
    use isctl::backend::lio::ConfigFs;
    let e = Env::new();
    let m = model();
    e.run(&["apply", "--auto-approve", &m]).assert_exit(0);
    e.run(&["plan", "--detailed-exitcode", &m]).assert_exit(0);
    let sim = e.sim();
    let tpu = backstore_dir(&sim, "lun0").join("attrib/emulate_tpu");
    assert_eq!(sim.read(&tpu).unwrap(), b"0\n");
    sim.write(&tpu, b"1").unwrap();
    sim.save(&e.sim_file()).unwrap();

    let o = e.run(&["status", &m]);
    o.assert_exit(2);
    assert!(
        o.stdout.contains("attrib/emulate_tpu"),
        "status must name the attribute\n{}",
        o.stdout
    );
    let o = e.run(&["status"]);
    assert!(
        o.stdout.contains("attrib/emulate_tpu"),
        "status without the model must show it from the last apply's record\n{}",
        o.stdout
    );
    let o = e.run(&["plan", "--detailed-exitcode", &m]);
    o.assert_exit(2);
    assert!(
        o.stdout.contains("attrib/emulate_tpu") && o.stdout.contains("\"lun0\""),
        "{}",
        o.stdout
    );
    let o = e.run(&["apply", "--auto-approve", &m]);
    o.assert_exit(0);
    assert!(o.stdout.contains("1 changed"), "{}", o.stdout);
    assert_eq!(e.sim().read(&tpu).unwrap(), b"0\n", "apply must repair it");
    e.run(&["plan", "--detailed-exitcode", &m]).assert_exit(0);
    e.run(&["status", &m]).assert_exit(0);
}

/// LIO sessions (here on the simulated configfs) name their portal group, initiator
/// groups and comment from `--model`, else from the model `isctl watch` recorded in
/// `watch.json`; without either the fields are absent; a broken `--model` fails naming
/// its file (observe::admitted, docs/monitoring.md).
#[test]
fn sessions_are_named_from_the_model_or_the_watchers_model() {
    let (e, m) = applied_with_two_sessions();
    let fields = "target_portal_group,igroups.name,initiator.comment,initiator.name";
    let named = |v: &serde_json::Value| {
        let mut rows: Vec<String> = v["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{} {} {} {}",
                    r["initiator"]["name"],
                    r["target_portal_group"],
                    r["igroups"],
                    r["initiator"]["comment"]
                )
            })
            .collect();
        rows.sort();
        rows
    };
    let want = [
        r#""iqn.1994-05.com.example:dyn1" "default" null null"#,
        // The fixture's group has no comment: absent, not empty.
        r#""iqn.1998-01.com.vmware:esxi-host-1" "storage-net" [{"name":"vmware"}] null"#,
    ];

    let bare = e
        .run(&["-o", "json", "sessions", "--fields", fields])
        .json();
    assert_eq!(
        named(&bare),
        [
            r#""iqn.1994-05.com.example:dyn1" null null null"#,
            r#""iqn.1998-01.com.vmware:esxi-host-1" null null null"#,
        ],
        "no model, no watch.json: configfs alone has no names"
    );
    let given = e
        .run(&["-o", "json", "sessions", "--fields", fields, "--model", &m])
        .json();
    assert_eq!(named(&given), want);

    std::fs::create_dir_all(e.state_dir()).unwrap();
    isctl::watch::state::save(
        &e.state_dir(),
        &isctl::watch::state::LastApply {
            time: 0,
            model: PathBuf::from(&m),
            digest: String::new(),
            trigger: "start".into(),
            outcome: isctl::watch::state::Outcome::Applied,
            summary: None,
            changes: vec![],
            message: None,
            attempts: 1,
        },
    )
    .unwrap();
    let watched = e
        .run(&["-o", "json", "sessions", "--fields", fields])
        .json();
    assert_eq!(named(&watched), want, "the watcher's model");

    let broken = e.dir.path().join("broken.toml");
    std::fs::write(&broken, "[extent.x]\ntype = \"ramdisk\"\nsize = \"lots\"\n").unwrap();
    let o = e.run(&["sessions", "--model", broken.to_str().unwrap()]);
    assert_ne!(o.code, 0, "{}", o.all());
    assert!(o.stderr.contains("broken.toml:3"), "{}", o.all());
}
