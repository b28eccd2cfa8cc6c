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
    let (d, p) = h.plan(&m, no_opts());
    assert_eq!(p.ops.len(), 1, "{:#?}", p.ops);
    assert_eq!(p.summary().configfs_operations, 1);
    assert_eq!(p.summary().change, 1);
    let before = h.sim.mutations();
    h.apply_plan(&d, &p).unwrap();
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
    let (d, p) = h.plan(&m, no_opts());
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
    h.apply_plan(&d, &p).unwrap();
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
        let (d, p) = h.plan(&m, no_opts());
        let total = p.summary().configfs_operations;
        assert!(total > 20, "plan too small for the test: {total}");
        if n > total {
            break;
        }
        h.sim.fail_nth_mutation(n, libc::EBUSY);
        let err = h.apply_plan(&d, &p).expect_err("must fail");
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
    let (d, p) = h.plan(&m, no_opts());
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
    assert!(h.apply_plan(&d, &p).is_err());
    assert!(h
        .observe()
        .state
        .targets
        .contains_key("iqn.2026-01.com.example:archive"));

    let (d, p) = h.plan(
        &m,
        isctl::plan::DiffOptions {
            force: true,
            prune: false,
        },
    );
    assert!(!p.is_refused(), "{:#?}", p.refusals);
    assert_eq!(p.sessions_cut.len(), 2, "{:#?}", p.sessions_cut);
    h.apply_plan(&d, &p).unwrap();
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
