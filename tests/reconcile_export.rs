//! Export: the live state as a model that plans as "no changes" (adoption is
//! lossless), including trees built by hand the way targetcli builds them; what a
//! model cannot express is reported, never dropped.

mod reconcile_common;

use std::path::{Path, PathBuf};

use isctl::backend::lio::ConfigFs;
use isctl::backend::sim::Sim;
use isctl::model::render::{render_json, render_toml, SecretsMode};
use isctl::reconcile::check_export;
use isctl::state::{self, export::to_model};
use reconcile_common::*;

fn p(rel: &str) -> PathBuf {
    Sim::default_root().join(rel)
}

fn mk(sim: &Sim, rel: &str) {
    sim.mkdir(&p(rel))
        .unwrap_or_else(|e| panic!("mkdir {rel}: {e}"));
}

fn wr(sim: &Sim, rel: &str, v: &str) {
    sim.write(&p(rel), v.as_bytes())
        .unwrap_or_else(|e| panic!("write {rel}: {e}"));
}

fn ln(sim: &Sim, target: &str, link: &str) {
    sim.symlink(&p(target), &p(link))
        .unwrap_or_else(|e| panic!("ln {link}: {e}"));
}

const T1: &str = "iqn.2003-01.org.linux-iscsi.storage1.x8664:sn.4e1b3c2a9f10";
const T2: &str = "iqn.2003-01.org.linux-iscsi.storage1.x8664:sn.demo00000001";
const T3: &str = "iqn.2003-01.org.linux-iscsi.storage1.x8664:sn.chap00000001";
const I1: &str = "iqn.1994-05.com.redhat:client1";
const I2: &str = "iqn.1994-05.com.redhat:client2";

/// What targetcli/rtslib leave behind: one HBA per object with the smallest free
/// number across plugins, uuid serials, udev_path written, 10-hex-digit link names,
/// np/[::0]:3260, authentication=0, every LUN mapped into every ACL at its number,
/// a demo-mode target, and a CHAP target.
fn targetcli_tree(sim: &Sim) {
    sim.add_host_file(Path::new("/srv/iscsi/disk1.img"), 64 << 20);
    mk(sim, "core/fileio_0");
    mk(sim, "core/fileio_0/disk1");
    wr(
        sim,
        "core/fileio_0/disk1/control",
        // targetcli's default is write-back (fd_buffered_io=1): adoption must keep it.
        "fd_dev_name=/srv/iscsi/disk1.img,fd_dev_size=67108864,fd_buffered_io=1",
    );
    wr(sim, "core/fileio_0/disk1/udev_path", "/srv/iscsi/disk1.img");
    wr(sim, "core/fileio_0/disk1/enable", "1");
    // rtslib, on every object it creates (targetcli's export_backstore_name_as_model).
    wr(sim, "core/fileio_0/disk1/attrib/emulate_model_alias", "1");
    wr(
        sim,
        "core/fileio_0/disk1/wwn/vpd_unit_serial",
        "3c6f4c3e-1111-4a8e-9c1d-0123456789ab",
    );
    mk(sim, "core/rd_mcp_1");
    mk(sim, "core/rd_mcp_1/ram1");
    wr(sim, "core/rd_mcp_1/ram1/control", "rd_pages=2048");
    wr(sim, "core/rd_mcp_1/ram1/enable", "1");
    // rtslib, on every object it creates (targetcli's export_backstore_name_as_model).
    wr(sim, "core/rd_mcp_1/ram1/attrib/emulate_model_alias", "1");
    wr(
        sim,
        "core/rd_mcp_1/ram1/wwn/vpd_unit_serial",
        "7d1c2d4e-2222-4f00-8000-000000000d00",
    );
    mk(sim, "core/iblock_2");
    mk(sim, "core/iblock_2/blk1");
    wr(sim, "core/iblock_2/blk1/control", "udev_path=/dev/ram1");
    wr(sim, "core/iblock_2/blk1/udev_path", "/dev/ram1");
    wr(sim, "core/iblock_2/blk1/enable", "1");
    // rtslib, on every object it creates (targetcli's export_backstore_name_as_model).
    wr(sim, "core/iblock_2/blk1/attrib/emulate_model_alias", "1");
    wr(
        sim,
        "core/iblock_2/blk1/wwn/vpd_unit_serial",
        "9a0b1c2d-3333-4e5f-a6b7-c8d9e0f1a2b3",
    );
    mk(sim, "iscsi");
    // ACL target.
    let t = format!("iscsi/{T1}/tpgt_1");
    mk(sim, &format!("iscsi/{T1}"));
    mk(sim, &t);
    wr(sim, &format!("{t}/attrib/authentication"), "0");
    for (l, so, link) in [
        (0, "fileio_0/disk1", "a1b2c3d4e5"),
        (1, "rd_mcp_1/ram1", "0f1e2d3c4b"),
    ] {
        mk(sim, &format!("{t}/lun/lun_{l}"));
        ln(
            sim,
            &format!("core/{so}"),
            &format!("{t}/lun/lun_{l}/{link}"),
        );
    }
    mk(sim, &format!("{t}/np/[::0]:3260"));
    for (i, init) in [I1, I2].into_iter().enumerate() {
        mk(sim, &format!("{t}/acls/{init}"));
        for l in 0..2 {
            mk(sim, &format!("{t}/acls/{init}/lun_{l}"));
            ln(
                sim,
                &format!("{t}/lun/lun_{l}"),
                &format!("{t}/acls/{init}/lun_{l}/{i}c9d8e7f6{l}"),
            );
        }
    }
    wr(sim, &format!("{t}/enable"), "1");
    // Demo-mode target.
    let t = format!("iscsi/{T2}/tpgt_1");
    mk(sim, &format!("iscsi/{T2}"));
    mk(sim, &t);
    for (a, v) in [
        ("authentication", "0"),
        ("generate_node_acls", "1"),
        ("cache_dynamic_acls", "1"),
        ("demo_mode_write_protect", "0"),
    ] {
        wr(sim, &format!("{t}/attrib/{a}"), v);
    }
    mk(sim, &format!("{t}/lun/lun_0"));
    ln(
        sim,
        "core/iblock_2/blk1",
        &format!("{t}/lun/lun_0/b4c3d2e1f0"),
    );
    mk(sim, &format!("{t}/np/[::0]:3260"));
    wr(sim, &format!("{t}/enable"), "1");
    // CHAP target sharing the ramdisk, with mutual CHAP on its ACL.
    let t = format!("iscsi/{T3}/tpgt_1");
    mk(sim, &format!("iscsi/{T3}"));
    mk(sim, &t);
    mk(sim, &format!("{t}/lun/lun_0"));
    ln(
        sim,
        "core/rd_mcp_1/ram1",
        &format!("{t}/lun/lun_0/77aa66bb55"),
    );
    mk(sim, &format!("{t}/np/[::0]:3260"));
    mk(sim, &format!("{t}/acls/{I1}"));
    mk(sim, &format!("{t}/acls/{I1}/lun_0"));
    ln(
        sim,
        &format!("{t}/lun/lun_0"),
        &format!("{t}/acls/{I1}/lun_0/44cc33dd22"),
    );
    for (f, v) in [
        ("userid", "client1"),
        ("password", "client1secret"),
        ("userid_mutual", "storage1"),
        ("password_mutual", "storage1secret"),
    ] {
        wr(sim, &format!("{t}/acls/{I1}/auth/{f}"), v);
    }
    wr(sim, &format!("{t}/enable"), "1");
}

#[test]
fn isctl_applied_host_exports_losslessly() {
    let h = Host::new();
    h.converge(&complete(), no_opts());
    let observed = h.observe_full();
    let ex = to_model(&observed.state);
    assert!(ex.lossless(), "{:#?}", ex.problems);
    let desired = state::lower(&ex.model).unwrap();
    let (_, p) = h.plan_state(&desired, no_opts());
    assert!(p.is_empty(), "{:#?}", p.changes);
    // Through TOML and the model loader as well.
    assert!(check_export(&ex.model, &h.observe(), &h.backend).is_empty());
}

#[test]
fn targetcli_built_tree_exports_losslessly_and_plans_no_change() {
    let h = Host::new();
    targetcli_tree(&h.sim);
    let observed = h.observe_full();
    let ex = to_model(&observed.state);
    assert!(ex.lossless(), "{:#?}", ex.problems);
    assert_eq!(ex.model.extents.len(), 3);
    assert!(ex.model.extents["ram1"].shared);
    assert!(ex.model.extents.values().all(|e| e.model_alias));
    let text = render_toml(&ex.model, &SecretsMode::Show, &[]);
    let loaded = isctl::model::load_str("exported.toml", &text)
        .unwrap_or_else(|e| panic!("{e}\n{}", text.as_str()))
        .model;
    let desired = state::lower(&loaded).unwrap();
    let (_, p) = h.plan_state(&desired, no_opts());
    assert!(p.is_empty(), "{:#?}\n{}", p.changes, text.as_str());
    assert!(p.unmanaged.is_empty());
    // Adopting: an apply of the exported model writes nothing.
    let before = h.sim.mutations();
    h.apply_plan(&p).unwrap();
    assert_eq!(h.sim.mutations(), before);
    assert!(h.managed().len() > 10, "adopted objects are now managed");
}

/// targetcli's `acls/<I> set auth ...` leaves the TPG at authentication = 0: CHAP is
/// used when offered, the model's `chap = "optional"`, and the export round-trips.
#[test]
fn acl_chap_without_tpg_authentication_exports_as_chap_optional() {
    let h = Host::new();
    targetcli_tree(&h.sim);
    let t = format!("iscsi/{T1}/tpgt_1");
    for init in [I1, I2] {
        for (f, v) in [
            ("userid", "client"),
            ("password", "clientSecret12"),
            ("userid_mutual", "target"),
            ("password_mutual", "targetSecret34"),
        ] {
            wr(&h.sim, &format!("{t}/acls/{init}/auth/{f}"), v);
        }
    }
    let ex = to_model(&h.observe_full().state);
    assert!(ex.lossless(), "{:#?}", ex.problems);
    let g = &ex
        .model
        .targets
        .values()
        .find(|x| x.key == T1)
        .unwrap()
        .groups[0];
    assert!(g.chap_optional);
    assert_eq!(g.auth_method, isctl::model::AuthMethod::MutualChap);
    let text = render_toml(&ex.model, &SecretsMode::Show, &[]);
    assert!(text.contains("chap = \"optional\""), "{}", text.as_str());
    let loaded = isctl::model::load_str("exported.toml", &text)
        .unwrap_or_else(|e| panic!("{e}\n{}", text.as_str()))
        .model;
    let (_, p) = h.plan_state(&state::lower(&loaded).unwrap(), no_opts());
    assert!(p.is_empty(), "{:#?}", p.changes);
    // Required instead (authentication = 1) is a change of that one TPG attribute.
    wr(&h.sim, &format!("{t}/attrib/authentication"), "1");
    let (_, p) = h.plan_state(&state::lower(&loaded).unwrap(), no_opts());
    assert_eq!(p.changes.len(), 1, "{:#?}", p.changes);
}

#[test]
fn exported_text_never_contains_secrets_unless_asked() {
    let h = Host::new();
    targetcli_tree(&h.sim);
    let ex = to_model(&h.observe_full().state);
    for mode in [
        SecretsMode::Env,
        SecretsMode::Dir(PathBuf::from("/etc/isctl/secrets")),
    ] {
        let text = render_toml(&ex.model, &mode, &[]);
        let json = render_json(&ex.model, &mode).to_string();
        for secret in ["client1secret", "storage1secret"] {
            assert!(!text.contains(secret), "{mode:?}: secret in TOML");
            assert!(!json.contains(secret), "{mode:?}: secret in JSON");
        }
    }
    let env = render_toml(&ex.model, &SecretsMode::Env, &[]);
    assert!(
        env.contains("secret_env = \"ISCTL_SECRET_CHAP_1\""),
        "{}",
        env.as_str()
    );
    assert!(env.contains("peer_secret_env = \"ISCTL_SECRET_CHAP_1_PEER\""));
    let shown = render_toml(&ex.model, &SecretsMode::Show, &[]);
    assert!(shown.contains("client1secret"));
}

#[test]
fn what_the_model_cannot_express_is_reported() {
    let h = Host::new();
    targetcli_tree(&h.sim);
    let sim = &h.sim;
    // ACL mapping LUN 3 to TPG LUN 1.
    let t = format!("iscsi/{T1}/tpgt_1");
    mk(sim, &format!("{t}/acls/{I1}/lun_3"));
    ln(
        sim,
        &format!("{t}/lun/lun_1"),
        &format!("{t}/acls/{I1}/lun_3/x"),
    );
    // Per-ACL different CHAP in one TPG.
    wr(sim, &format!("{t}/acls/{I2}/auth/userid"), "other");
    // Two HBAs holding an object with the same name.
    mk(sim, "core/rd_mcp_7");
    mk(sim, "core/rd_mcp_7/ram1");
    wr(sim, "core/rd_mcp_7/ram1/control", "rd_pages=16");
    wr(sim, "core/rd_mcp_7/ram1/enable", "1");
    // Tag 1 reused with a different portal in another target.
    let t4 = "iscsi/iqn.2003-01.org.linux-iscsi.storage1.x8664:sn.other0000001/tpgt_1";
    mk(
        sim,
        "iscsi/iqn.2003-01.org.linux-iscsi.storage1.x8664:sn.other0000001",
    );
    mk(sim, t4);
    wr(sim, &format!("{t4}/attrib/generate_node_acls"), "1");
    wr(sim, &format!("{t4}/attrib/authentication"), "0");
    mk(sim, &format!("{t4}/np/[::0]:3262"));
    // A write-back fileio (targetcli's default: expressible as `write_back`) and a
    // disabled TPG (not expressible).
    sim.add_host_file(Path::new("/srv/iscsi/wb.img"), 1 << 20);
    mk(sim, "core/fileio_8");
    mk(sim, "core/fileio_8/wb");
    wr(
        sim,
        "core/fileio_8/wb/control",
        "fd_dev_name=/srv/iscsi/wb.img,fd_dev_size=1048576,fd_buffered_io=1",
    );
    wr(sim, "core/fileio_8/wb/enable", "1");
    wr(sim, "core/fileio_8/wb/wwn/vpd_unit_serial", "wb-serial");
    wr(sim, &format!("iscsi/{T2}/tpgt_1/enable"), "0");

    let ex = to_model(&h.observe_full().state);
    let all: Vec<String> = ex
        .problems
        .iter()
        .map(|p| format!("{}: {}", p.object, p.problem))
        .collect();
    let has = |needle: &str| all.iter().any(|p| p.contains(needle));
    assert!(has("mapped LUN 3 points at TPG LUN 1"), "{all:#?}");
    assert!(has("different CHAP credentials"), "{all:#?}");
    assert!(has("same name in another HBA"), "{all:#?}");
    assert!(has("tag 1 is also used by target"), "{all:#?}");
    assert!(!has("fd_buffered_io"), "{all:#?}");
    assert!(ex.model.extents["wb"].write_back);
    assert!(has("portal group is disabled"), "{all:#?}");
}

#[test]
fn export_self_check_catches_what_to_model_misses() {
    let h = Host::new();
    targetcli_tree(&h.sim);
    let observed = h.observe();
    let ex = to_model(&h.observe_full().state);
    assert!(ex.lossless());
    assert!(check_export(&ex.model, &observed, &h.backend).is_empty());
    // A value the model loader refuses (a space in a serial) ...
    let mut bad = ex.clone();
    bad.model.extents.get_mut("disk1").unwrap().serial = "has space".into();
    let problems = check_export(&bad.model, &observed, &h.backend);
    assert!(
        problems.iter().any(|p| p.problem.contains("does not load")),
        "{problems:#?}"
    );
    // ... and a value that loads but differs from the live one.
    let mut drift = ex.clone();
    drift.model.targets.values_mut().next().unwrap().alias = Some("drifted".into());
    let problems = check_export(&drift.model, &observed, &h.backend);
    assert!(
        problems.iter().any(|p| p.problem.contains("self-check")),
        "{problems:#?}"
    );
}
