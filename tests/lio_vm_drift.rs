//! Real-kernel test of the drift rule for TPGs and ACLs (docs/reconcile.md, "Drift"): a
//! TPG attribute, a TPG parameter and an ACL attribute changed behind isctl's back on
//! Linux's LIO in a QEMU VM are reported by `status MODEL` and `plan`, repaired by
//! `apply` with exactly one configfs write each (the kernel's function trace), and
//! `export` agrees before and after.
//!
//! `#[ignore]`d like tests/lio_vm.rs (it boots a VM); tests/run.sh runs it with
//! `--include-ignored`. A missing tool or a VM that does not boot FAILS the test.

mod common;

#[path = "lio_vm/mod.rs"]
mod harness;

use harness::isctl::{apply_ok, isctl, isctl_cmd, traced, ApplyReport, STATE_DIR};
use harness::tree;
use harness::{Vm, VmOptions, CONFIGFS};

const TARGET: &str = "iqn.2026-11.io.isctl.test:drift";

/// One target with a ramdisk LUN and one ACL: the smallest tree with a managed TPG and
/// a managed ACL (no file, no initiator needed).
const MODEL: &str = r#"[global]
basename = "iqn.2026-11.io.isctl.test"

[portal.main]
listen = ["0.0.0.0:3260"]

[initiator_group.hosts]
initiators = ["iqn.2026-11.io.isctl.test:host1"]

[extent.r0]
type = "ramdisk"
size = "4MiB"

[target.drift]
luns = { 0 = "r0" }

[[target.drift.group]]
portal = "main"
initiator_group = "hosts"
"#;

/// The three hand-made changes: (path under the TPG, kernel default, value set by hand).
const DRIFTED: [(&str, &str, &str); 3] = [
    ("attrib/login_timeout", "15", "30"),
    ("param/MaxConnections", "1", "4"),
    (
        "acls/iqn.2026-11.io.isctl.test:host1/attrib/nopin_timeout",
        "15",
        "5",
    ),
];

/// The last component of a drifted path: what status, plan and export name.
fn attribute_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap()
}

#[test]
#[ignore = "needs QEMU + LIO kernel: run via tests/run.sh"]
fn tpg_and_acl_attributes_changed_by_hand_are_drift_and_apply_repairs_each_with_one_write() {
    let mut vm = Vm::boot_with(VmOptions::new("drift-tpg-acl")).unwrap_or_else(|e| panic!("{e:#}"));
    vm.sh(&format!("mkdir -p {STATE_DIR}"));
    vm.put_file("model.toml", MODEL.as_bytes())
        .expect("writing the model into the share");
    apply_ok(&mut vm, "model.toml", "");
    let tpg = format!("iscsi/{TARGET}/tpgt_1");
    let before = tree::dump(&mut vm);
    for (path, default, _) in DRIFTED {
        assert_eq!(
            before.attr(&format!("{tpg}/{path}")),
            default,
            "{path} right after the apply"
        );
    }
    let export = isctl(&mut vm, "export");
    assert_eq!(
        export.status, 0,
        "the applied tree exports cleanly\n{export}"
    );

    // Behind isctl's back, as an administrator would (plain echo, trailing newline).
    for (path, _, hand) in DRIFTED {
        vm.sh(&format!("echo {hand} > {CONFIGFS}/{tpg}/{path}"));
    }

    let status = isctl(&mut vm, "status model.toml");
    assert_eq!(status.status, 2, "status must report the drift\n{status}");
    let export = isctl(&mut vm, "export");
    assert_ne!(export.status, 0, "export calls them non-default\n{export}");
    let (plan, ops) = traced(&mut vm, &isctl_cmd("plan model.toml -o json"));
    assert!(plan.success(), "{plan}");
    assert_eq!(ops.total(), 0, "plan wrote to configfs: {ops}");
    let json: serde_json::Value = serde_json::from_str(&plan.stdout).expect("plan JSON");
    let changes = json["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 2, "exactly the TPG and the ACL\n{plan}");
    for (path, default, hand) in DRIFTED {
        let name = attribute_name(path);
        assert!(
            status.stdout.contains(name),
            "status names {name}\n{status}"
        );
        assert!(
            export.stderr.contains(name) || export.stdout.contains(name),
            "export names {name}\n{export}"
        );
        let listed = changes.iter().flat_map(|c| {
            c["attributes"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
        });
        let found = listed
            .filter(|a| a["name"].as_str().is_some_and(|n| path.ends_with(n)))
            .any(|a| a["old"] == hand && a["new"] == default);
        assert!(found, "plan shows {path}: {hand} -> {default}\n{plan}");
    }

    let (report, ops, out) = apply_ok(&mut vm, "model.toml", "");
    assert!(
        matches!(
            report,
            ApplyReport::Applied {
                changed: 2,
                added: 0,
                destroyed: 0,
                configfs_operations: 3,
            }
        ),
        "{out}"
    );
    assert_eq!(ops.total(), 3, "one write per drifted value: {ops}");
    assert_eq!(ops.write, 3, "{ops}");
    let after = tree::dump(&mut vm);
    let diff = before.diff(&after);
    assert!(
        diff.is_empty(),
        "the repaired tree differs from the applied one:\n{diff}"
    );

    let (plan, ops) = traced(&mut vm, &isctl_cmd("plan model.toml --detailed-exitcode"));
    assert_eq!(plan.status, 0, "repaired: nothing left to do\n{plan}");
    assert_eq!(ops.total(), 0, "{ops}");
    let status = isctl(&mut vm, "status model.toml");
    assert_eq!(status.status, 0, "{status}");
    let export = isctl(&mut vm, "export");
    assert_eq!(
        export.status, 0,
        "export agrees: nothing non-default\n{export}"
    );
}
