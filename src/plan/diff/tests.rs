//! Unit tests of the diff: ordering, defaults, safety rules, replacement.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::*;
use crate::plan::op::BackstoreSetting;
use crate::state::{
    Acl, Backstore, BackstoreKind, BackstoreRef, ChapCreds, FileFact, Lun, MappedLun, Portal,
    Target, Tpg, DEFAULT_COMPANY_ID,
};

const T: &str = "iqn.2026-01.com.example:t";
const I: &str = "iqn.1994-05.com.example:i";

fn backstore(name: &str, size: u64) -> Backstore {
    Backstore {
        name: name.into(),
        kind: BackstoreKind::Ramdisk { size },
        block_size: 512,
        serial: format!("serial-{name}"),
        company_id: DEFAULT_COMPANY_ID,
        nonrotational: None,
        hba: None,
        configured: true,
        attributes: BTreeMap::new(),
        extra: BTreeMap::new(),
        origin: None,
    }
}

/// One target, one ACL-mode TPG, LUN 0 → `b0`, one ACL mapping it.
fn desired() -> State {
    let mut s = State::default();
    s.backstores.insert("b0".into(), backstore("b0", 1 << 20));
    let mut tpg = Tpg::fresh(1);
    tpg.enabled = true;
    tpg.authentication = false;
    tpg.auth = None;
    tpg.demo_mode_write_protect = None;
    tpg.prod_mode_write_protect = None;
    tpg.portals
        .insert("[::]:3260".parse().unwrap(), Portal::default());
    tpg.luns.insert(
        0,
        Lun {
            backstore: Some(BackstoreRef {
                name: "b0".into(),
                hba: None,
            }),
            link: None,
        },
    );
    tpg.acls.insert(
        I.into(),
        Acl {
            auth: Some(ChapCreds::default()),
            authentication: None,
            mapped: [(
                0,
                MappedLun {
                    tpg_lun: Some(0),
                    write_protect: Some(false),
                    link: None,
                },
            )]
            .into(),
            attributes: BTreeMap::new(),
            extra: BTreeMap::new(),
            origin: None,
        },
    );
    s.targets.insert(
        T.into(),
        Target {
            name: T.into(),
            tpgs: [(1, tpg)].into(),
            origin: None,
        },
    );
    s.fabric = true;
    s
}

/// What the kernel shows after `desired()` was applied by isctl.
fn applied() -> State {
    let mut s = desired();
    s.hbas.insert("rd_mcp_0".into(), 1);
    let b = s.backstores.get_mut("b0").unwrap();
    b.hba = Some("rd_mcp_0".into());
    b.nonrotational = Some(true);
    let tpg = s.targets.get_mut(T).unwrap().tpgs.get_mut(&1).unwrap();
    tpg.auth = Some(ChapCreds::default());
    tpg.demo_mode_write_protect = Some(true);
    tpg.prod_mode_write_protect = Some(false);
    for p in tpg.portals.values_mut() {
        p.dir = Some("[::0]:3260".into()); // as targetcli spells it
    }
    let lun = tpg.luns.get_mut(&0).unwrap();
    lun.backstore.as_mut().unwrap().hba = Some("rd_mcp_0".into());
    lun.link = Some("a1b2c3d4e5".into());
    tpg.acls
        .get_mut(I)
        .unwrap()
        .mapped
        .get_mut(&0)
        .unwrap()
        .link = Some("x".into());
    s
}

fn observed(s: State) -> Observed {
    Observed {
        state: s,
        sessions: vec![],
    }
}

fn plan(d: &State, o: &State, managed: &BTreeSet<ObjectId>, opts: DiffOptions) -> Plan {
    diff(
        d,
        &observed(o.clone()),
        &HostFacts::default(),
        managed,
        &opts,
    )
}

fn names(p: &Plan) -> Vec<&'static str> {
    p.ops.iter().map(|o| o.op.name()).collect()
}

#[test]
fn creation_follows_the_kernel_order_and_skips_defaults() {
    let p = plan(
        &desired(),
        &State::default(),
        &BTreeSet::new(),
        DiffOptions::default(),
    );
    assert!(!p.is_refused(), "{:?}", p.refusals);
    assert_eq!(
        names(&p),
        vec![
            "create_backstore",
            "set_backstore", // serial only: block_size 512 and rd's is_nonrot are defaults
            "create_fabric",
            "create_target",
            "create_tpg",
            "set_tpg", // authentication=0 (the kernel default is 1)
            "create_lun",
            "link_lun",
            "create_portal",
            "create_acl",
            "create_mapped_lun",
            "map_lun",
            "enable_tpg",
        ]
    );
    assert!(
        matches!(&p.ops[0].op, Op::CreateBackstore { hba, create_hba: true, .. } if hba == "rd_mcp_0")
    );
    assert_eq!(p.ops[0].phase, Phase::Backstores);
    assert_eq!(p.ops.last().unwrap().phase, Phase::Targets);
    assert_eq!(p.summary().add, 7);
}

#[test]
fn applied_state_plans_nothing_even_with_kernel_spellings() {
    let p = plan(
        &desired(),
        &applied(),
        &BTreeSet::new(),
        DiffOptions::default(),
    );
    assert!(p.is_empty(), "{:#?}", p.changes);
}

#[test]
fn deletion_is_the_reverse_order() {
    let managed: BTreeSet<ObjectId> = desired().object_ids().into_iter().collect();
    let p = plan(
        &State::default(),
        &applied(),
        &managed,
        DiffOptions::default(),
    );
    assert_eq!(
        names(&p),
        vec![
            "disable_tpg",
            "unmap_lun",
            "delete_mapped_lun",
            "delete_acl",
            "unlink_lun",
            "delete_lun",
            "delete_portal",
            "delete_tpg",
            "delete_target",
            "delete_backstore",
        ]
    );
    assert!(matches!(&p.ops[6].op, Op::DeletePortal { dir, .. } if dir == "[::0]:3260"));
    assert!(matches!(
        &p.ops[9].op,
        Op::DeleteBackstore {
            delete_hba: true,
            ..
        }
    ));
    assert_eq!(p.summary().destroy, 7);
}

#[test]
fn unmanaged_objects_stay_unless_pruned() {
    let p = plan(
        &State::default(),
        &applied(),
        &BTreeSet::new(),
        DiffOptions::default(),
    );
    assert!(p.is_empty());
    assert_eq!(
        p.unmanaged,
        vec![
            ObjectId::Backstore { name: "b0".into() },
            ObjectId::Target { target: T.into() }
        ]
    );
    let p = plan(
        &State::default(),
        &applied(),
        &BTreeSet::new(),
        DiffOptions {
            prune: true,
            force: false,
        },
    );
    assert_eq!(p.ops.len(), 10);
    assert!(p
        .changes
        .iter()
        .any(|c| c.reason.as_deref().is_some_and(|r| r.contains("--prune"))));
}

#[test]
fn frozen_attribute_on_a_linked_backstore_forces_replacement() {
    let mut d = desired();
    d.backstores.get_mut("b0").unwrap().block_size = 4096;
    let p = plan(&d, &applied(), &BTreeSet::new(), DiffOptions::default());
    let c = p
        .changes
        .iter()
        .find(|c| c.object == ObjectId::Backstore { name: "b0".into() })
        .unwrap();
    assert_eq!(c.action, Action::Replace);
    assert!(c
        .attributes
        .iter()
        .any(|a| a.name == "block_size" && a.forces_replacement));
    assert_eq!(
        names(&p),
        vec![
            "unmap_lun",
            "unlink_lun",
            "delete_backstore",
            "create_backstore",
            "set_backstore",
            "set_backstore",
            "link_lun",
            "map_lun",
        ]
    );
    // Same HBA, kept.
    assert!(matches!(
        &p.ops[2].op,
        Op::DeleteBackstore {
            delete_hba: false,
            ..
        }
    ));
    assert!(
        matches!(&p.ops[3].op, Op::CreateBackstore { create_hba: false, hba, .. } if hba == "rd_mcp_0")
    );
    assert_eq!(p.summary().add, 1);
    assert_eq!(p.summary().destroy, 1);
}

#[test]
fn frozen_attribute_on_an_unlinked_backstore_is_one_write() {
    let mut d = desired();
    d.targets.clear();
    d.backstores.get_mut("b0").unwrap().serial = "new".into();
    let mut o = applied();
    o.targets.clear();
    let p = plan(&d, &o, &BTreeSet::new(), DiffOptions::default());
    assert_eq!(names(&p), vec!["set_backstore"]);
    assert_eq!(p.summary().change, 1);
}

/// The drift rule: a policy attribute the model does not name is kept at the kernel
/// default; one it names (targetcli's `emulate_model_alias`) at the model's value.
#[test]
fn an_unnamed_policy_attribute_set_by_hand_is_written_back_to_its_default() {
    let mut o = applied();
    let b = o.backstores.get_mut("b0").unwrap();
    b.attributes.insert("emulate_tpu".into(), "1".into());
    b.attributes.insert("emulate_3pc".into(), "0".into());
    let p = plan(&desired(), &o, &BTreeSet::new(), DiffOptions::default());
    let writes: Vec<String> = p
        .ops
        .iter()
        .map(|o| match &o.op {
            Op::SetBackstore { value, old, .. } => format!(
                "{} = {} (was {})",
                value.name(),
                value.value_string(),
                old.as_ref().map(|v| v.value_string()).unwrap_or_default()
            ),
            other => panic!("unexpected op {other:?}"),
        })
        .collect();
    assert_eq!(
        writes,
        ["emulate_3pc = 1 (was 0)", "emulate_tpu = 0 (was 1)"],
        "written in place, with the live value kept for rollback"
    );
    assert_eq!(p.summary().change, 1);
    let c = &p.changes[0];
    assert_eq!(c.action, Action::Update);
    assert!(c.attributes.iter().any(|a| a.name == "attrib/emulate_tpu"
        && a.old.as_deref() == Some("1")
        && a.new.as_deref() == Some("0")));
}

/// The drift rule for TPGs and ACLs: a defaulted attribute or parameter changed by hand
/// is one in-place write back to the kernel default, each undone by its inverse, and
/// nothing else moves (no session is cut: the TPG stays enabled, the ACL stays).
#[test]
fn tpg_and_acl_attributes_set_by_hand_are_written_back_in_place() {
    let mut o = applied();
    let tpg = o.targets.get_mut(T).unwrap().tpgs.get_mut(&1).unwrap();
    tpg.attributes
        .insert("attrib/login_timeout".into(), "30".into());
    tpg.attributes
        .insert("param/MaxConnections".into(), "4".into());
    tpg.acls
        .get_mut(I)
        .unwrap()
        .attributes
        .insert("attrib/nopin_timeout".into(), "5".into());
    let p = plan(&desired(), &o, &BTreeSet::new(), DiffOptions::default());
    assert!(!p.is_refused(), "{:?}", p.refusals);
    let writes: Vec<String> = p.ops.iter().map(|o| o.op.to_string()).collect();
    assert_eq!(
        writes,
        [
            format!("set target {T:?} tpg 1 attrib/login_timeout = 15"),
            format!("set target {T:?} tpg 1 param/MaxConnections = 1"),
            format!("set target {T:?} tpg 1 acl {I:?} attrib/nopin_timeout = 15"),
        ]
    );
    let undo: Vec<String> = p
        .ops
        .iter()
        .flat_map(|o| o.op.inverse())
        .map(|o| o.to_string())
        .collect();
    assert_eq!(
        undo,
        [
            format!("set target {T:?} tpg 1 attrib/login_timeout = 30"),
            format!("set target {T:?} tpg 1 param/MaxConnections = 4"),
            format!("set target {T:?} tpg 1 acl {I:?} attrib/nopin_timeout = 5"),
        ],
        "rollback restores the hand-set values"
    );
    assert_eq!(p.summary().change, 2, "the TPG and the ACL");
    let tpg_change = p
        .changes
        .iter()
        .find(|c| matches!(c.object, ObjectId::Tpg { .. }))
        .unwrap();
    assert!(tpg_change
        .attributes
        .iter()
        .any(|a| a.name == "attrib/login_timeout"
            && a.old.as_deref() == Some("30")
            && a.new.as_deref() == Some("15")));
    let acl_change = p
        .changes
        .iter()
        .find(|c| matches!(c.object, ObjectId::Acl { .. }))
        .unwrap();
    assert!(acl_change
        .attributes
        .iter()
        .any(|a| a.name == "attrib/nopin_timeout" && a.new.as_deref() == Some("15")));
}

/// What stays out of the rule is no drift: a value observed only into `extra` (for
/// export), such as a hand-set `default_cmdsn_depth`, plans nothing.
#[test]
fn attributes_outside_the_rule_are_not_drift() {
    let mut o = applied();
    let tpg = o.targets.get_mut(T).unwrap().tpgs.get_mut(&1).unwrap();
    tpg.extra
        .insert("attrib/default_cmdsn_depth".into(), "16".into());
    tpg.acls
        .get_mut(I)
        .unwrap()
        .extra
        .insert("cmdsn_depth".into(), "16".into());
    let p = plan(&desired(), &o, &BTreeSet::new(), DiffOptions::default());
    assert!(p.ops.is_empty(), "{:?}", names(&p));
    assert!(p.changes.is_empty());
}

#[test]
fn a_frozen_policy_attribute_on_a_linked_backstore_forces_replacement() {
    // The model asks for model_alias on an object that LUNs already link.
    let mut d = desired();
    d.backstores
        .get_mut("b0")
        .unwrap()
        .attributes
        .insert("emulate_model_alias".into(), "1".into());
    let p = plan(&d, &applied(), &BTreeSet::new(), DiffOptions::default());
    let c = p
        .changes
        .iter()
        .find(|c| c.object == ObjectId::Backstore { name: "b0".into() })
        .unwrap();
    assert_eq!(c.action, Action::Replace);
    assert!(c
        .attributes
        .iter()
        .any(|a| a.name == "attrib/emulate_model_alias" && a.forces_replacement));
    // The new object gets it before its LUN link.
    let set = p
        .ops
        .iter()
        .position(|o| matches!(&o.op, Op::SetBackstore { value: BackstoreSetting::Attribute("emulate_model_alias", v), .. } if v == "1"))
        .expect("emulate_model_alias written");
    let link = p
        .ops
        .iter()
        .position(|o| o.op.name() == "link_lun")
        .unwrap();
    assert!(set < link, "{:?}", names(&p));
    // Once applied so, nothing to do.
    let mut o = applied();
    o.backstores
        .get_mut("b0")
        .unwrap()
        .attributes
        .insert("emulate_model_alias".into(), "1".into());
    assert!(plan(&d, &o, &BTreeSet::new(), DiffOptions::default()).is_empty());
}

#[test]
fn a_dead_mapping_is_recreated() {
    let mut o = applied();
    let tpg = o.targets.get_mut(T).unwrap().tpgs.get_mut(&1).unwrap();
    tpg.acls
        .get_mut(I)
        .unwrap()
        .mapped
        .get_mut(&0)
        .unwrap()
        .write_protect = None;
    let p = plan(&desired(), &o, &BTreeSet::new(), DiffOptions::default());
    assert_eq!(names(&p), vec!["unmap_lun", "map_lun"]);
    assert_eq!(p.ops[0].phase, Phase::Teardown);
}

#[test]
fn sessions_make_a_cut_a_refusal_unless_forced() {
    let managed: BTreeSet<ObjectId> = desired().object_ids().into_iter().collect();
    let mut d = desired();
    d.targets
        .get_mut(T)
        .unwrap()
        .tpgs
        .get_mut(&1)
        .unwrap()
        .acls
        .clear();
    let s = Session {
        target: T.into(),
        tpg: 1,
        initiator: I.into(),
        dynamic: false,
        alias: None,
        isid: Some("804c37c50000".into()),
        tsih: Some(3),
        session_id: Some(3),
        session_type: Some("Normal".into()),
        state: None,
        connections: vec![],
        ..Session::default()
    };
    let o = Observed {
        state: applied(),
        sessions: vec![s],
    };
    let p = diff(
        &d,
        &o,
        &HostFacts::default(),
        &managed,
        &DiffOptions::default(),
    );
    assert!(p.is_refused());
    assert!(
        p.refusals[0]
            .problem
            .contains("ISID 0x804c37c50000, TSIH 3"),
        "{}",
        p.refusals[0].problem
    );
    let p = diff(
        &d,
        &o,
        &HostFacts::default(),
        &managed,
        &DiffOptions {
            force: true,
            prune: false,
        },
    );
    assert!(!p.is_refused());
    assert_eq!(p.sessions_cut.len(), 1);
}

#[test]
fn backing_files_are_created_grown_never_shrunk() {
    let file = |size: Option<u64>| {
        let mut s = State::default();
        let mut b = backstore("f", 0);
        b.kind = BackstoreKind::File {
            path: PathBuf::from("/srv/f.img"),
            size,
            write_back: false,
        };
        s.backstores.insert("f".into(), b);
        s
    };
    let facts = |f: FileFact| HostFacts {
        files: [(PathBuf::from("/srv/f.img"), f)].into(),
        devices: BTreeMap::new(),
    };
    let run = |d: &State, h: &HostFacts| {
        diff(
            d,
            &Observed::default(),
            h,
            &BTreeSet::new(),
            &DiffOptions::default(),
        )
    };
    let p = run(
        &file(Some(1 << 20)),
        &facts(FileFact::Missing {
            parent_exists: true,
        }),
    );
    assert!(matches!(&p.ops[0].op, Op::CreateBackingFile { size, .. } if *size == 1 << 20));
    let p = run(
        &file(None),
        &facts(FileFact::Missing {
            parent_exists: true,
        }),
    );
    assert_eq!(p.refusals[0].kind, "backing_file");
    let p = run(
        &file(Some(1)),
        &facts(FileFact::Missing {
            parent_exists: false,
        }),
    );
    assert!(p.refusals[0].problem.contains("directory"));
    let p = run(
        &file(Some(1 << 20)),
        &facts(FileFact::Regular { size: 2 << 20 }),
    );
    assert_eq!(p.refusals[0].kind, "shrink");
    let p = run(
        &file(Some(4 << 20)),
        &facts(FileFact::Regular { size: 2 << 20 }),
    );
    assert!(
        matches!(&p.ops[0].op, Op::GrowBackingFile { from, to, .. } if *from == 2 << 20 && *to == 4 << 20)
    );
    let p = run(&file(None), &facts(FileFact::Regular { size: 0 }));
    assert!(
        p.refusals[0].problem.contains("is empty"),
        "{:?}",
        p.refusals
    );
    let p = run(&file(None), &facts(FileFact::Regular { size: 3 << 20 }));
    assert!(
        matches!(&p.ops[0].op, Op::CreateBackstore { kind: BackstoreKind::File { size: Some(s), .. }, .. } if *s == 3 << 20)
    );
}

#[test]
fn hba_numbers_are_the_smallest_free_across_plugins() {
    let mut d = State::default();
    for n in ["a", "b"] {
        d.backstores.insert(n.into(), backstore(n, 4096));
    }
    let mut o = State::default();
    o.hbas.insert("fileio_0".into(), 1);
    o.hbas.insert("iblock_2".into(), 0);
    let p = plan(&d, &o, &BTreeSet::new(), DiffOptions::default());
    let hbas: Vec<String> = p
        .ops
        .iter()
        .filter_map(|o| match &o.op {
            Op::CreateBackstore { hba, .. } => Some(hba.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(hbas, vec!["rd_mcp_1", "rd_mcp_3"]);
}

#[test]
fn a_conflicting_unmanaged_portal_is_refused() {
    let mut o = applied();
    let tpg = o.targets.get_mut(T).unwrap().tpgs.get_mut(&1).unwrap();
    tpg.portals.clear();
    tpg.portals.insert(
        "0.0.0.0:3260".parse().unwrap(),
        Portal {
            dir: Some("0.0.0.0:3260".into()),
        },
    );
    let p = plan(&desired(), &o, &BTreeSet::new(), DiffOptions::default());
    assert_eq!(p.refusals[0].kind, "portal_conflict", "{:?}", p.refusals);
    let p = plan(
        &desired(),
        &o,
        &BTreeSet::new(),
        DiffOptions {
            prune: true,
            force: false,
        },
    );
    assert!(!p.is_refused());
    assert_eq!(names(&p), vec!["delete_portal", "create_portal"]);
}
