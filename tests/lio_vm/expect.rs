//! What a model must look like on LIO, derived from isctl's own validated [`Model`] (so the
//! checks follow the example models as they change), checked two ways:
//!
//! * [`check_tree`]: the configfs tree (docs/model.md "How it maps onto LIO").
//! * [`check_initiators`]: real initiators on the host log in with the model's credentials
//!   through every portal group and see every LUN with its size, block size and serial.
//!
//! Both collect every mismatch and return them, so one run shows them all.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use isctl::model::{AuthMethod, Backing, Extent, Model, Rpm, Target, TargetGroup};

use super::host::{parse_capacity, run_host};
use super::tree::TreeDump;
use super::vm::Vm;

/// The initiator name used where any initiator is admitted (demo mode).
pub const ANY_INITIATOR: &str = "iqn.2026-11.io.isctl.test:any-initiator";

/// Finds an extent's backstore: `core/<plugin>_<N>/<name>` with the plugin of its type.
pub fn backstore_path(dump: &TreeDump, extent: &Extent) -> Option<String> {
    let plugin = plugin_of(&extent.backing);
    dump.children("core").into_iter().find_map(|hba| {
        let is_plugin = hba
            .rsplit_once('_')
            .is_some_and(|(prefix, n)| prefix == plugin && n.parse::<u32>().is_ok());
        let path = format!("core/{hba}/{}", extent.name);
        (is_plugin && dump.is_dir(&path)).then_some(path)
    })
}

pub fn plugin_of(backing: &Backing) -> &'static str {
    match backing {
        Backing::File { .. } => "fileio",
        Backing::Block { .. } => "iblock",
        Backing::Ramdisk { .. } => "rd_mcp",
    }
}

/// Parses an `np/` directory name (`0.0.0.0:3260`, `[::0]:3260`) into an address.
pub fn parse_portal(name: &str) -> Option<SocketAddr> {
    name.parse().ok()
}

fn tag_of(model: &Model, group: &TargetGroup) -> u16 {
    model.portals[&group.portal].tag
}

/// Every mismatch between the live tree and the model (empty = the tree is right).
pub fn check_tree(dump: &TreeDump, model: &Model) -> Vec<String> {
    let mut problems = Vec::new();
    let p = &mut problems;
    let exported: BTreeSet<&str> = model
        .targets
        .values()
        .flat_map(|t| t.luns.values().map(String::as_str))
        .collect();

    for extent in model.extents.values() {
        if !exported.contains(extent.name.as_str()) {
            continue; // an unmapped extent need not exist on LIO
        }
        let Some(so) = backstore_path(dump, extent) else {
            p.push(format!(
                "extent {}: no {} backstore named {} under core/",
                extent.name,
                plugin_of(&extent.backing),
                extent.name
            ));
            continue;
        };
        let attr = |f: &str| dump.value(&format!("{so}/{f}")).unwrap_or_default();
        if attr("enable").trim() != "1" {
            p.push(format!("{so}/enable = {:?}, expected 1", attr("enable")));
        }
        if attr("attrib/block_size").trim() != extent.blocksize.to_string() {
            p.push(format!(
                "{so}/attrib/block_size = {:?}, expected {}",
                attr("attrib/block_size"),
                extent.blocksize
            ));
        }
        let serial = format!("T10 VPD Unit Serial Number: {}\n", extent.serial);
        if attr("wwn/vpd_unit_serial") != serial {
            p.push(format!(
                "{so}/wwn/vpd_unit_serial = {:?}, expected {serial:?}",
                attr("wwn/vpd_unit_serial")
            ));
        }
        if extent.rpm == Rpm::Ssd && attr("attrib/is_nonrot").trim() != "1" {
            p.push(format!(
                "{so}/attrib/is_nonrot = {:?}, expected 1 (rpm = ssd)",
                attr("attrib/is_nonrot")
            ));
        }
        let info = attr("info");
        match &extent.backing {
            Backing::File { path, size } => {
                let file = format!("File: {}  ", path.display());
                if !info.contains(&file) {
                    p.push(format!(
                        "{so}/info does not name the file {}: {info:?}",
                        path.display()
                    ));
                }
                if let Some(size) = size {
                    if !info.contains(&format!("Size: {size}  ")) {
                        p.push(format!("{so}/info does not show Size: {size}: {info:?}"));
                    }
                }
            }
            Backing::Block { device } => {
                let name = device.file_name().map(|n| n.to_string_lossy().into_owned());
                if !name.is_some_and(|n| info.contains(&format!("iBlock device: {n} "))) {
                    p.push(format!(
                        "{so}/info does not name {}: {info:?}",
                        device.display()
                    ));
                }
                let ro = format!("readonly: {}", u8::from(extent.readonly));
                if !info.contains(&ro) {
                    p.push(format!("{so}/info does not show {ro}: {info:?}"));
                }
            }
            Backing::Ramdisk { size } => {
                let pages = format!("PAGES/PAGE_SIZE: {}*4096", size.div_ceil(4096));
                if !info.contains(&pages) {
                    p.push(format!("{so}/info does not show {pages}: {info:?}"));
                }
            }
        }
    }

    // Discovery authentication: one setting for the whole host.
    let discovery = model
        .portals
        .values()
        .find(|pg| pg.discovery_auth != AuthMethod::None);
    if let Some(pg) = discovery {
        let d = "iscsi/discovery_auth";
        let creds = &model.auths[pg.discovery_auth_group.as_deref().unwrap_or_default()];
        if dump.attr(&format!("{d}/enforce_discovery_auth")) != "1" {
            p.push(format!("{d}/enforce_discovery_auth is not 1"));
        }
        expect_auth(dump, d, &creds.user, creds.secret.expose(), p);
        if pg.discovery_auth == AuthMethod::MutualChap {
            if let Some(peer) = &creds.peer {
                expect_mutual(dump, d, &peer.user, peer.secret.expose(), p);
            }
        }
    } else if dump
        .value("iscsi/discovery_auth/enforce_discovery_auth")
        .is_some_and(|v| v.trim() != "0")
    {
        p.push("iscsi/discovery_auth/enforce_discovery_auth is set but the model has no discovery auth".into());
    }

    for target in model.targets.values() {
        check_target(dump, model, target, p);
    }
    problems
}

fn expect_auth(dump: &TreeDump, dir: &str, user: &str, secret: &str, p: &mut Vec<String>) {
    // Credentials are stored verbatim plus one "\n" (written without one: docs/configfs.md §3.5).
    for (file, want) in [("userid", user), ("password", secret)] {
        let got = dump.value(&format!("{dir}/{file}")).unwrap_or_default();
        if got != format!("{want}\n") {
            p.push(format!(
                "{dir}/{file} = {got:?}, expected {:?}",
                format!("{want}\n")
            ));
        }
    }
}

fn expect_mutual(dump: &TreeDump, dir: &str, user: &str, secret: &str, p: &mut Vec<String>) {
    for (file, want) in [("userid_mutual", user), ("password_mutual", secret)] {
        let got = dump.value(&format!("{dir}/{file}")).unwrap_or_default();
        if got != format!("{want}\n") {
            p.push(format!(
                "{dir}/{file} = {got:?}, expected {:?}",
                format!("{want}\n")
            ));
        }
    }
    if dump.attr(&format!("{dir}/authenticate_target")) != "1" {
        p.push(format!(
            "{dir}/authenticate_target is not 1 (mutual CHAP off)"
        ));
    }
}

fn check_target(dump: &TreeDump, model: &Model, target: &Target, p: &mut Vec<String>) {
    let tdir = format!("iscsi/{}", target.name.as_str());
    if !dump.is_dir(&tdir) {
        p.push(format!(
            "target {}: {tdir} is missing",
            target.name.as_str()
        ));
        return;
    }
    let tags: BTreeSet<u16> = target.groups.iter().map(|g| tag_of(model, g)).collect();
    let live_tpgs: BTreeSet<String> = dump
        .children(&tdir)
        .into_iter()
        .filter(|c| c.starts_with("tpgt_"))
        .collect();
    let want_tpgs: BTreeSet<String> = tags.iter().map(|t| format!("tpgt_{t}")).collect();
    if live_tpgs != want_tpgs {
        p.push(format!(
            "{tdir}: TPGs {live_tpgs:?}, expected {want_tpgs:?}"
        ));
    }
    for group in &target.groups {
        let pg = &model.portals[&group.portal];
        let tpg = format!("{tdir}/tpgt_{}", pg.tag);
        if !dump.is_dir(&tpg) {
            continue;
        }
        if dump.attr(&format!("{tpg}/enable")) != "1" {
            p.push(format!("{tpg}/enable is not 1"));
        }
        if let Some(alias) = &target.alias {
            let got = dump.attr(&format!("{tpg}/param/TargetAlias"));
            if &got != alias {
                p.push(format!(
                    "{tpg}/param/TargetAlias = {got:?}, expected {alias:?}"
                ));
            }
        }
        // Portals: compare as addresses (the directory name is not canonical).
        let live: BTreeSet<SocketAddr> = dump
            .children(&format!("{tpg}/np"))
            .iter()
            .filter_map(|n| parse_portal(n))
            .collect();
        let want: BTreeSet<SocketAddr> = pg.listen.iter().copied().collect();
        if live != want {
            p.push(format!("{tpg}/np: portals {live:?}, expected {want:?}"));
        }
        // LUNs, each linked to its extent's backstore.
        let live_luns: BTreeSet<String> =
            dump.children(&format!("{tpg}/lun")).into_iter().collect();
        let want_luns: BTreeSet<String> = target.luns.keys().map(|l| format!("lun_{l}")).collect();
        if live_luns != want_luns {
            p.push(format!("{tpg}/lun: {live_luns:?}, expected {want_luns:?}"));
        }
        for (lun, extent_name) in &target.luns {
            let ldir = format!("{tpg}/lun/lun_{lun}");
            let links = dump.links_in(&ldir);
            let want = backstore_path(dump, &model.extents[extent_name]);
            let got: Vec<String> = links.iter().map(|(_, t)| t.clone()).collect();
            if links.len() != 1 || Some(&got[0]) != want.as_ref() {
                p.push(format!(
                    "{ldir}: links {got:?}, expected exactly one to {want:?}"
                ));
            }
        }
        check_access(dump, model, target, group, &tpg, p);
    }
}

fn check_access(
    dump: &TreeDump,
    model: &Model,
    target: &Target,
    group: &TargetGroup,
    tpg: &str,
    p: &mut Vec<String>,
) {
    let attr = |f: &str| dump.attr(&format!("{tpg}/attrib/{f}"));
    let creds = group.auth.as_ref().map(|a| &model.auths[a]);
    let initiators: Vec<String> = group
        .initiator_group
        .as_ref()
        .map(|g| {
            model.initiator_groups[g]
                .initiators
                .iter()
                .map(|i| i.as_str().to_string())
                .collect()
        })
        .unwrap_or_default();
    let want_auth = u8::from(group.auth_method != AuthMethod::None).to_string();
    if initiators.is_empty() {
        // Demo mode.
        if attr("generate_node_acls") != "1" {
            p.push(format!(
                "{tpg}/attrib/generate_node_acls is not 1 (any initiator)"
            ));
        }
        let all_ro = target.luns.values().all(|e| model.extents[e].readonly);
        let want_wp = u8::from(all_ro).to_string();
        if attr("demo_mode_write_protect") != want_wp {
            p.push(format!(
                "{tpg}/attrib/demo_mode_write_protect is not {want_wp}"
            ));
        }
        if attr("authentication") != want_auth {
            p.push(format!("{tpg}/attrib/authentication is not {want_auth}"));
        }
        if let Some(c) = creds.filter(|_| group.auth_method != AuthMethod::None) {
            expect_auth(dump, &format!("{tpg}/auth"), &c.user, c.secret.expose(), p);
        }
        return;
    }
    if attr("generate_node_acls") != "0" {
        p.push(format!(
            "{tpg}/attrib/generate_node_acls is not 0 (initiator group)"
        ));
    }
    if attr("authentication") != want_auth {
        p.push(format!("{tpg}/attrib/authentication is not {want_auth}"));
    }
    let live_acls: BTreeSet<String> = dump.children(&format!("{tpg}/acls")).into_iter().collect();
    let want_acls: BTreeSet<String> = initiators.iter().cloned().collect();
    if live_acls != want_acls {
        p.push(format!("{tpg}/acls: {live_acls:?}, expected {want_acls:?}"));
    }
    for initiator in &initiators {
        let acl = format!("{tpg}/acls/{initiator}");
        if !dump.is_dir(&acl) {
            continue;
        }
        for (lun, extent) in &target.luns {
            let m = format!("{acl}/lun_{lun}");
            let links = dump.links_in(&m);
            let want = format!("{tpg}/lun/lun_{lun}");
            if links.len() != 1 || links[0].1 != want {
                p.push(format!("{m}: links {links:?}, expected one to {want}"));
            }
            let wp = u8::from(model.extents[extent].readonly).to_string();
            if dump
                .value(&format!("{m}/write_protect"))
                .map(|v| v.trim().to_string())
                != Some(wp.clone())
            {
                p.push(format!("{m}/write_protect is not {wp}"));
            }
        }
        if let Some(c) = creds.filter(|_| group.auth_method != AuthMethod::None) {
            expect_auth(dump, &format!("{acl}/auth"), &c.user, c.secret.expose(), p);
            if group.auth_method == AuthMethod::MutualChap {
                if let Some(peer) = &c.peer {
                    expect_mutual(
                        dump,
                        &format!("{acl}/auth"),
                        &peer.user,
                        peer.secret.expose(),
                        p,
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Initiators

/// How the host reaches each guest portal: guest port → host port, and the guest ports
/// whose portals listen on the guest's loopback only (they need `vmtool relay`).
pub fn guest_ports(model: &Model) -> (Vec<u16>, Vec<(SocketAddr, u16)>) {
    let mut ports = BTreeSet::new();
    let mut relays = Vec::new();
    for pg in model.portals.values() {
        for addr in &pg.listen {
            ports.insert(addr.port());
            if addr.ip().is_loopback() {
                relays.push((*addr, addr.port()));
            }
        }
    }
    (ports.into_iter().collect(), relays)
}

/// Starts the relays [`guest_ports`] asked for: 10.0.2.15:P (where QEMU's forwarding
/// arrives) → the loopback portal.
pub fn start_relays(vm: &mut Vm, relays: &[(SocketAddr, u16)]) {
    for (addr, port) in relays {
        vm.sh(&format!(
            "setsid vmtool relay 10.0.2.15:{port} {addr} </dev/null >/dev/null 2>&1 &"
        ));
    }
}

/// `iscsi://[user%secret@]127.0.0.1:<port>/<iqn>/<lun>[?target_user=..&target_password=..]`
pub fn lun_url(
    host_port: u16,
    target: &str,
    lun: u16,
    chap: Option<(&str, &str)>,
    mutual: Option<(&str, &str)>,
) -> String {
    let creds = chap.map(|(u, s)| format!("{u}%{s}@")).unwrap_or_default();
    let query = mutual
        .map(|(u, s)| format!("?target_user={u}&target_password={s}"))
        .unwrap_or_default();
    format!("iscsi://{creds}127.0.0.1:{host_port}/{target}/{lun}{query}")
}

/// Logs in through every portal group of every target with the model's credentials and
/// checks each LUN's capacity, block size and unit serial. `device_sizes` gives the size
/// of block devices in the VM. Returns the mismatches.
pub fn check_initiators(
    vm: &Vm,
    model: &Model,
    device_sizes: &BTreeMap<String, u64>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let timeout = Duration::from_secs(90);
    for target in model.targets.values() {
        for group in &target.groups {
            let pg = &model.portals[&group.portal];
            let Some(addr) = pg.listen.first() else {
                continue;
            };
            let host_port = vm.host_port(addr.port());
            let initiator = group
                .initiator_group
                .as_ref()
                .and_then(|g| model.initiator_groups[g].initiators.first())
                .map(|i| i.as_str().to_string())
                .unwrap_or_else(|| ANY_INITIATOR.to_string());
            let creds = group
                .auth
                .as_ref()
                .filter(|_| group.auth_method != AuthMethod::None)
                .map(|a| &model.auths[a]);
            let chap = creds.map(|c| (c.user.as_str(), c.secret.expose()));
            let mutual = creds
                .filter(|_| group.auth_method == AuthMethod::MutualChap)
                .and_then(|c| c.peer.as_ref())
                .map(|p| (p.user.as_str(), p.secret.expose()));
            for (lun, extent_name) in &target.luns {
                let extent = &model.extents[extent_name];
                let url = lun_url(host_port, target.name.as_str(), *lun, chap, mutual);
                let what = format!(
                    "{} tpgt_{} lun {lun} as {initiator}",
                    target.name.as_str(),
                    pg.tag
                );
                let cap = run_host(
                    "iscsi-readcapacity16",
                    &["-i", &initiator, &url],
                    &[],
                    timeout,
                )
                .expect("running iscsi-readcapacity16");
                if !cap.success() {
                    problems.push(format!("{what}: READ CAPACITY failed\n{cap}"));
                    continue;
                }
                match parse_capacity(&cap) {
                    Ok(c) => {
                        let want_size = match &extent.backing {
                            Backing::File { size, .. } => *size,
                            Backing::Ramdisk { size } => Some(*size),
                            Backing::Block { device } => {
                                device_sizes.get(&device.display().to_string()).copied()
                            }
                        };
                        if c.block_length != u64::from(extent.blocksize) {
                            problems.push(format!(
                                "{what}: block length {}, expected {}",
                                c.block_length, extent.blocksize
                            ));
                        }
                        if let Some(size) = want_size {
                            if c.total_bytes != size {
                                problems.push(format!(
                                    "{what}: capacity {} bytes, expected {size}",
                                    c.total_bytes
                                ));
                            }
                        }
                    }
                    Err(e) => problems.push(format!("{what}: {e:#}")),
                }
                let inq = run_host(
                    "iscsi-inq",
                    &["-i", &initiator, "-e", "1", "-c", "128", &url],
                    &[],
                    timeout,
                )
                .expect("running iscsi-inq");
                if !inq.success() || !inq.stdout.contains(&extent.serial) {
                    problems.push(format!(
                        "{what}: unit serial {} not reported\n{inq}",
                        extent.serial
                    ));
                }
            }
        }
    }
    problems
}
