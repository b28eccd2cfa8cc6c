//! Observing: what the typed state cannot hold is kept as "foreign" and never
//! touched or silently dropped; sessions are read from ACL `info` and
//! `dynamic_sessions`; a missing configfs root is a clear error.

mod reconcile_common;

use std::path::Path;

use isctl::backend::lio::{ConfigFs, LioBackend};
use isctl::backend::sim::Sim;
use isctl::backend::{Backend, BackendError};
use isctl::plan::DiffOptions;
use isctl::state::export::to_model;
use reconcile_common::*;

fn w(sim: &Sim, rel: &str, v: &str) {
    sim.write(&Sim::default_root().join(rel), v.as_bytes())
        .unwrap();
}
fn md(sim: &Sim, rel: &str) {
    sim.mkdir(&Sim::default_root().join(rel)).unwrap();
}

#[test]
fn foreign_objects_are_reported_and_left_alone() {
    let h = Host::new();
    let m = complete();
    h.converge(&m, no_opts());
    let sim = &h.sim;
    // A pscsi object, a user ALUA group, a TPG directory with a hex tag.
    md(sim, "core/pscsi_5");
    md(sim, "core/pscsi_5/ps0");
    w(
        sim,
        "core/pscsi_5/ps0/control",
        "scsi_host_id=0,scsi_channel_id=0,scsi_target_id=0,scsi_lun_id=0",
    );
    w(sim, "core/pscsi_5/ps0/enable", "1");
    let lun0 = h.observe().state.backstores["lun0"].hba.clone().unwrap();
    md(sim, &format!("core/{lun0}/lun0/alua/tpg_ao"));
    md(sim, "iscsi/iqn.2005-10.org.example.ctl:lab/tpgt_0x2");

    let observed = h.observe_full();
    let paths: Vec<&str> = observed
        .state
        .foreign
        .iter()
        .map(|f| f.path.as_str())
        .collect();
    assert!(
        paths.iter().any(|p| p.ends_with("alua/tpg_ao")),
        "{paths:?}"
    );
    assert!(paths.iter().any(|p| p.ends_with("tpgt_0x2")), "{paths:?}");
    assert!(matches!(
        observed.state.backstores["ps0"].kind,
        isctl::state::BackstoreKind::Other { .. }
    ));

    // The plan leaves them alone and says so.
    let (_, p) = h.plan(&m, no_opts());
    assert!(p.is_empty(), "{:#?}", p.changes);
    assert!(p
        .unmanaged
        .contains(&isctl::state::ObjectId::Backstore { name: "ps0".into() }));
    assert!(
        p.warnings.iter().any(|w| w.contains("tpgt_0x2")),
        "{:?}",
        p.warnings
    );

    // Export names them as losses.
    let ex = to_model(&observed.state);
    let all: Vec<String> = ex
        .problems
        .iter()
        .map(|p| format!("{}: {}", p.object, p.problem))
        .collect();
    assert!(
        all.iter().any(|p| p.contains("pscsi storage objects")),
        "{all:#?}"
    );
    assert!(
        all.iter().any(|p| p.contains("ALUA target port group")),
        "{all:#?}"
    );

    // Removing the lab target from the model cannot delete a directory isctl does
    // not understand: refused, nothing written.
    let mut m2 = m.clone();
    m2.targets
        .retain(|k, _| k.as_str() != "iqn.2005-10.org.example.ctl:lab");
    let (_, p) = h.plan(&m2, no_opts());
    let r = p
        .refusals
        .iter()
        .find(|r| r.kind == "blocked")
        .expect("blocked");
    assert!(r.problem.contains("tpgt_0x2"), "{}", r.problem);
    let _ = DiffOptions::default();
}

#[test]
fn sessions_are_observed_from_acl_info_and_dynamic_sessions() {
    let h = Host::new();
    h.converge(&complete(), no_opts());
    h.sim
        .add_session(
            "iqn.2005-10.org.example.ctl:lab",
            1,
            "iqn.1994-05.com.example:dyn1",
            "10.0.2.2",
        )
        .unwrap();
    h.sim
        .add_session(
            "iqn.2005-10.org.example.ctl:target0",
            1,
            "iqn.1998-01.com.vmware:esxi-host-1",
            "fe80::1",
        )
        .unwrap();
    // No ACL and no demo mode: the kernel would not admit it.
    assert!(h
        .sim
        .add_session(
            "iqn.2005-10.org.example.ctl:target0",
            1,
            "iqn.1994-05.com.example:nobody",
            "10.0.2.9"
        )
        .is_err());
    let o = h.observe();
    assert_eq!(o.sessions.len(), 2);
    let dynamic = o.sessions.iter().find(|s| s.dynamic).unwrap();
    assert_eq!(dynamic.initiator, "iqn.1994-05.com.example:dyn1");
    let acl = o.sessions.iter().find(|s| !s.dynamic).unwrap();
    assert_eq!(acl.tsih, Some(2));
    assert_eq!(acl.connections[0].address, "fe80::1");
    assert_eq!(acl.session_type.as_deref(), Some("Normal"));
}

#[test]
fn a_missing_configfs_root_is_a_clear_error() {
    let e = LioBackend::real(Path::new("/nonexistent/sys/kernel/config/target"))
        .err()
        .unwrap();
    assert!(matches!(e, BackendError::Unavailable { .. }));
    let msg = e.to_string();
    assert!(msg.contains("modprobe target_core_mod"), "{msg}");
    assert!(msg.contains("--backend userspace"), "{msg}");
}

#[test]
fn no_iscsi_directory_means_no_targets() {
    let h = Host::new();
    let o = h.observe();
    assert!(!o.state.fabric);
    assert!(o.state.targets.is_empty());
    assert!(o.state.discovery.is_none());
    assert_eq!(h.backend.name(), "lio");
}
