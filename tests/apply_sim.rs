//! The reconciler against the simulated configfs: apply from empty, idempotence
//! (zero writes on re-apply), minimal updates, exact removals, rollback on failure.

mod reconcile_common;

use isctl::plan::{Action, Op, Phase};
use isctl::state::ObjectId;
use reconcile_common::*;

#[test]
fn apply_from_empty_then_plan_is_empty_and_reapply_writes_nothing() {
    let h = Host::new();
    let m = complete();
    let (_, p) = h.plan(&m, no_opts());
    assert!(!p.is_refused(), "{:#?}", p.refusals);
    let planned_ops = p.summary().configfs_operations;
    let before = h.sim.mutations();
    let done = h.converge(&m, no_opts());
    assert_eq!(done.operations, planned_ops, "the plan's count is exact");
    assert_eq!(h.sim.mutations() - before, planned_ops);
    // Backing files were created sparse with the model's sizes.
    assert_eq!(
        h.sim.host_file_size("/srv/iscsi/lun0.img".as_ref()),
        Some(16 << 20)
    );
    assert_eq!(
        h.sim.host_file_size("/srv/iscsi/media.img".as_ref()),
        Some(4 << 20)
    );

    let (_, again) = h.plan(&m, no_opts());
    assert!(
        again.is_empty(),
        "second plan not empty: {:#?}",
        again.changes
    );
    assert!(again.unmanaged.is_empty(), "{:?}", again.unmanaged);
    let before = h.sim.mutations();
    let done = h.converge(&m, no_opts());
    assert_eq!(done.operations, 0);
    assert_eq!(
        h.sim.mutations(),
        before,
        "a no-op apply performs zero configfs writes"
    );
}

#[test]
fn one_attribute_change_plans_exactly_one_write() {
    let h = Host::new();
    let mut m = complete();
    h.converge(&m, no_opts());
    let lab = m
        .targets
        .values_mut()
        .find(|t| t.key == "lab")
        .expect("lab target");
    lab.alias = Some("Renamed lab".into());
    let (_, p) = h.plan(&m, no_opts());
    assert_eq!(p.ops.len(), 1, "{:#?}", p.ops);
    assert_eq!(p.summary().configfs_operations, 1);
    assert_eq!(p.summary().change, 1);
    let before = h.sim.mutations();
    h.apply_plan(&p).unwrap();
    assert_eq!(h.sim.mutations() - before, 1);
    assert!(h.plan(&m, no_opts()).1.is_empty());
}

#[test]
fn removing_a_target_removes_exactly_its_objects() {
    let h = Host::new();
    let mut m = complete();
    h.converge(&m, no_opts());
    let archive = m
        .targets
        .keys()
        .find(|k| k.as_str() == "iqn.2026-01.com.example:archive")
        .cloned()
        .unwrap();
    m.targets.remove(&archive);
    let (_, p) = h.plan(&m, no_opts());
    assert!(!p.is_refused(), "{:#?}", p.refusals);
    for c in &p.changes {
        assert_eq!(c.action, Action::Delete, "{c:?}");
        assert_eq!(c.object.target(), Some(archive.as_str()), "{c:?}");
    }
    for o in &p.ops {
        assert_eq!(o.phase, Phase::Teardown);
        assert_eq!(o.op.object().target(), Some(archive.as_str()), "{}", o.op);
    }
    // disable TPG, per ACL (2): unmap + rmdir mapped LUN + rmdir ACL, unlink + rmdir
    // LUN, rmdir portal, rmdir TPG, rmdir target; the shared extent stays.
    assert_eq!(p.summary().configfs_operations, 1 + 2 * 3 + 2 + 1 + 1 + 1);
    assert!(!p
        .ops
        .iter()
        .any(|o| matches!(o.op, Op::DeleteBackstore { .. })));
    h.apply_plan(&p).unwrap();
    let after = h.observe().state;
    assert!(!after.targets.contains_key(archive.as_str()));
    assert!(after.backstores.contains_key("media"));
    assert!(h.plan(&m, no_opts()).1.is_empty());
}

#[test]
fn injected_failure_mid_apply_rolls_back_to_the_pre_apply_state() {
    // Fail at every mutating step of the plan in turn.
    let mut n = 0u64;
    loop {
        n += 1;
        let h = Host::new();
        // Start from a partly applied host so that rollback also has to restore
        // deleted and changed objects.
        let mut first = complete();
        first
            .targets
            .retain(|k, _| k.as_str() != "iqn.2005-10.org.example.ctl:lab");
        h.converge(&first, no_opts());
        let mut m = complete();
        let archive = m
            .targets
            .keys()
            .find(|k| k.as_str() == "iqn.2026-01.com.example:archive")
            .cloned()
            .unwrap();
        m.targets.remove(&archive);
        m.targets
            .values_mut()
            .find(|t| t.key == "target0")
            .unwrap()
            .alias = Some("changed".into());
        let before = h.observe();
        let ledger_before = h.managed();
        let (_, p) = h.plan(&m, no_opts());
        let total = p.summary().configfs_operations;
        assert!(total > 20, "plan too small for the test: {total}");
        if n > total {
            break;
        }
        h.sim.fail_nth_mutation(n, libc::EBUSY);
        let err = h.apply_plan(&p).expect_err("must fail");
        let text = err.to_string();
        assert!(text.contains("EBUSY (16)"), "{text}");
        assert!(text.contains("rollback complete"), "{text}");
        h.sim.clear_faults();
        let after = h.observe();
        assert_eq!(
            after.state, before.state,
            "fault at mutation {n}: state differs after rollback"
        );
        assert_eq!(h.managed(), ledger_before, "ledger unchanged");
    }
}

#[test]
fn sessions_block_removal_without_force() {
    let h = Host::new();
    let mut m = complete();
    h.converge(&m, no_opts());
    h.sim
        .add_session(
            "iqn.2026-01.com.example:archive",
            10,
            "iqn.1998-01.com.vmware:esxi-host-2",
            "10.0.2.2",
        )
        .unwrap();
    m.targets
        .retain(|k, _| k.as_str() != "iqn.2026-01.com.example:archive");
    let (_, p) = h.plan(&m, no_opts());
    assert!(p.is_refused());
    let r = p
        .refusals
        .iter()
        .find(|r| r.kind == "sessions")
        .expect("sessions refusal");
    assert!(
        r.problem.contains("iqn.1998-01.com.vmware:esxi-host-2"),
        "{}",
        r.problem
    );
    assert!(r.problem.contains("TSIH"), "{}", r.problem);
    assert!(h.apply_plan(&p).is_err());
    assert!(h
        .observe()
        .state
        .targets
        .contains_key("iqn.2026-01.com.example:archive"));

    let (_, p) = h.plan(
        &m,
        isctl::plan::DiffOptions {
            force: true,
            prune: false,
        },
    );
    assert!(!p.is_refused(), "{:#?}", p.refusals);
    assert_eq!(p.sessions_cut.len(), 2, "{:#?}", p.sessions_cut);
    h.apply_plan(&p).unwrap();
    assert!(!h
        .observe()
        .state
        .targets
        .contains_key("iqn.2026-01.com.example:archive"));
    assert!(h.sim.sessions().is_empty(), "the session was cut");
}

#[test]
fn unmanaged_objects_are_left_alone_unless_pruned() {
    let h = Host::new();
    let m = complete();
    // Someone else's target and backstore, made by hand.
    let other = load_str(
        r#"
[portal.p]
listen = ["0.0.0.0:3262"]
[extent.foreign]
type = "ramdisk"
size = "1MiB"
[target."iqn.2003-01.org.linux-iscsi.host:other"]
luns = { 0 = "foreign" }
[[target."iqn.2003-01.org.linux-iscsi.host:other".group]]
portal = "p"
"#,
    );
    let other_state = isctl::state::lower(&other).unwrap();
    let (_, p) = h.plan_state(&other_state, no_opts());
    // Apply it without recording it in the ledger: unmanaged.
    isctl::apply::executor::run(&p, &h.backend, 2).unwrap();
    assert!(h.managed().is_empty());

    let (_, p) = h.plan(&m, no_opts());
    assert!(p.unmanaged.contains(&ObjectId::Target {
        target: "iqn.2003-01.org.linux-iscsi.host:other".into()
    }));
    assert!(p.unmanaged.contains(&ObjectId::Backstore {
        name: "foreign".into()
    }));
    assert!(!p
        .ops
        .iter()
        .any(|o| o.op.object().target() == Some("iqn.2003-01.org.linux-iscsi.host:other")));
    h.converge(&m, no_opts());
    assert!(h
        .observe()
        .state
        .targets
        .contains_key("iqn.2003-01.org.linux-iscsi.host:other"));

    let prune = isctl::plan::DiffOptions {
        prune: true,
        force: false,
    };
    let (_, p) = h.plan(&m, prune);
    assert!(p.changes.iter().any(|c| c.action == Action::Delete
        && c.object
            == ObjectId::Backstore {
                name: "foreign".into()
            }));
    h.converge(&m, prune);
    let s = h.observe().state;
    assert!(!s
        .targets
        .contains_key("iqn.2003-01.org.linux-iscsi.host:other"));
    assert!(!s.backstores.contains_key("foreign"));
    assert!(h.plan(&m, no_opts()).1.is_empty());
}

/// A base model and edits of it; each edit must converge from the previous one
/// and roll back exactly from a fault at any step.
fn edits() -> Vec<(&'static str, String)> {
    let base = r#"
[global]
basename = "iqn.2026-01.com.example"
[portal.p1]
tag = 1
listen = ["0.0.0.0:3260"]
[portal.p2]
tag = 2
listen = ["127.0.0.1:3270"]
[initiator_group.g]
initiators = ["iqn.1994-05.com.example:c1", "iqn.1994-05.com.example:c2"]
[auth.a]
user = "user1"
secret = "pass1secret12"
peer_user = "target1"
peer_secret = "pass2secret12"
[extent.d0]
type = "file"
path = "/srv/iscsi/d0.img"
size = "8MiB"
[extent.d1]
type = "block"
device = "/dev/ram0"
[target.t]
luns = { 0 = "d0", 1 = "d1" }
[[target.t.group]]
portal = "p1"
initiator_group = "g"
"#
    .to_string();
    let mut out = vec![("base", base.clone())];
    let mut push = |name: &'static str, m: String| out.push((name, m));
    let renamed = base
        .replace("[extent.d0]", "[extent.data0]")
        .replace("0 = \"d0\"", "0 = \"data0\"");
    push("rename an extent (relink LUN 0)", renamed.clone());
    let chap = renamed.replace(
        "initiator_group = \"g\"\n",
        "initiator_group = \"g\"\nauth = \"a\"\n",
    );
    push("none -> chap", chap.clone());
    let mutual = chap.replace(
        "auth = \"a\"\n",
        "auth = \"a\"\nauth_method = \"mutual-chap\"\n",
    );
    push("chap -> mutual-chap", mutual.clone());
    let demo = mutual.replace("initiator_group = \"g\"\n", "");
    push("ACLs -> demo mode with TPG CHAP", demo.clone());
    let acl_again = demo.replace(
        "portal = \"p1\"\n",
        "portal = \"p1\"\ninitiator_group = \"g\"\n",
    );
    push("demo mode -> ACLs", acl_again.clone());
    let v6 = acl_again.replace("listen = [\"0.0.0.0:3260\"]", "listen = [\"[::]:3260\"]");
    push("0.0.0.0:3260 -> [::]:3260", v6.clone());
    let moved = v6.replace("portal = \"p1\"", "portal = \"p2\"");
    push("move the target to tag 2", moved.clone());
    let grown = moved.replace("size = \"8MiB\"", "size = \"16MiB\"");
    push("grow a file", grown.clone());
    let ro = grown.replace(
        "device = \"/dev/ram0\"",
        "device = \"/dev/ram0\"\nreadonly = true",
    );
    push("make the block extent read-only (replace)", ro.clone());
    let disabled = ro.replace("readonly = true", "readonly = true\nenabled = false");
    push(
        "disable an extent (its LUN goes, it stays)",
        disabled.clone(),
    );
    let bs = disabled.replace("enabled = false", "").replace(
        "path = \"/srv/iscsi/d0.img\"",
        "path = \"/srv/iscsi/d0.img\"\nblocksize = 4096",
    );
    push("block size of a linked file extent (replace)", bs.clone());
    let wb = bs.replace(
        "path = \"/srv/iscsi/d0.img\"",
        "path = \"/srv/iscsi/d0.img\"\nwrite_back = true",
    );
    push("write-back caching on a linked file extent (replace)", wb);
    out
}

#[test]
fn a_sequence_of_edits_converges_and_each_step_rolls_back() {
    let steps = edits();
    let h = Host::new();
    for (name, text) in &steps {
        let m = load_str(text);
        let (_, p) = h.plan(&m, no_opts());
        assert!(!p.is_refused(), "{name}: {:#?}", p.refusals);
        h.apply_plan(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (_, again) = h.plan(&m, no_opts());
        assert!(
            again.is_empty(),
            "{name}: not converged: {:#?}",
            again.changes
        );
    }
    // Each transition, failing at every step, restores the state before it.
    let h = Host::new();
    for w in steps.windows(2) {
        let (from_name, from) = &w[0];
        let (to_name, to) = &w[1];
        h.converge(&load_str(from), no_opts());
        let before = h.observe().state;
        let mut n = 0u64;
        loop {
            n += 1;
            let f = h.fork();
            assert_eq!(f.observe().state, before);
            let (_, p) = f.plan(&load_str(to), no_opts());
            if n > p.summary().configfs_operations {
                break;
            }
            f.sim.fail_nth_mutation(n, libc::EINVAL);
            let err = f.apply_plan(&p).expect_err("must fail");
            assert!(
                err.to_string().contains("rollback complete"),
                "{from_name} -> {to_name} @{n}: {err}"
            );
            f.sim.clear_faults();
            assert_eq!(
                f.observe().state,
                before,
                "{from_name} -> {to_name}: fault at step {n}"
            );
        }
    }
}
