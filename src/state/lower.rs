//! Lowering: a validated [`Model`] → the desired [`State`].
//!
//! This follows the mapping table of model.md ("How it maps onto LIO") and
//! docs/configfs.md §11. Everything the model says that this state (and so the kernel
//! target) cannot express is an error naming the model file:line and the object:
//! networks in initiator groups, per-portal discovery auth, a demo-mode group mixing
//! read-only and writable extents, an NAA the kernel cannot derive, rotation rates,
//! iSNS, ALUA. Nothing is dropped silently.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;

use crate::model::{AuthMethod, Backing, Model, Origin, Rpm, Secret};

use super::{
    lio_naa, portals_conflict, Acl, Backstore, BackstoreKind, BackstoreRef, ChapCreds,
    DiscoveryAuth, Lun, MappedLun, Portal, State, Target, Tpg, DEFAULT_COMPANY_ID,
    DEFAULT_TARGET_ALIAS, RAMDISK_PAGE,
};

/// One thing the model asks for that the kernel target cannot do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowerError {
    pub origin: Option<Origin>,
    /// The object, as the model names it (`extent "lun0"`).
    pub object: String,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for LowerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(o) = &self.origin {
            write!(f, "{o}: ")?;
        }
        write!(f, "{}: {} (fix: {})", self.object, self.problem, self.fix)
    }
}

/// Every lowering error of a model (all are collected, none hides another).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LowerErrors(pub Vec<LowerError>);

impl fmt::Display for LowerErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "the LIO kernel target cannot honour {} part{} of the model:",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

struct Errors(Vec<LowerError>);

impl Errors {
    fn push(
        &mut self,
        origin: Option<&Origin>,
        object: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.0.push(LowerError {
            origin: origin.cloned(),
            object: object.into(),
            problem: problem.into(),
            fix: fix.into(),
        });
    }
}

/// Lower a validated model into the desired state.
pub fn lower(model: &Model) -> Result<State, LowerErrors> {
    let mut errs = Errors(Vec::new());
    let mut state = State::default();

    if !model.global.isns_servers.is_empty() {
        errs.push(
            model.global.origin.as_ref(),
            "global",
            "LIO's iSCSI target has no iSNS client: isns_servers cannot be honoured",
            "remove isns_servers (no isctl backend registers with iSNS)",
        );
    }
    if model.global.alua {
        errs.push(
            model.global.origin.as_ref(),
            "global",
            "alua = true (ALUA for a controller pair) is not supported on the LIO backend",
            "set alua = false",
        );
    }

    for (name, ext) in &model.extents {
        if let Some(b) = lower_extent(name, ext, &mut errs) {
            state.backstores.insert(name.clone(), b);
        }
    }

    // Discovery auth is global in LIO: every portal group a target uses must agree.
    let used_portals: BTreeSet<&String> = model
        .targets
        .values()
        .flat_map(|t| t.groups.iter().map(|g| &g.portal))
        .collect();
    let mut discovery: Option<(DiscoveryAuth, &String)> = None;
    for pname in &used_portals {
        let Some(p) = model.portals.get(*pname) else {
            continue;
        };
        let creds = chap_creds(model, p.discovery_auth, p.discovery_auth_group.as_deref());
        let d = DiscoveryAuth {
            enforce: p.discovery_auth != AuthMethod::None,
            creds,
        };
        match &discovery {
            None => discovery = Some((d, pname)),
            Some((first, first_name)) if *first != d => errs.push(
                Some(&p.origin),
                format!("portal {pname:?}"),
                format!(
                    "its discovery auth differs from portal {first_name:?}'s, but LIO has a single discovery auth setting for all portals"
                ),
                format!("give every portal group the same discovery_auth and discovery_auth_group as {first_name:?}, or use --backend userspace"),
            ),
            Some(_) => {}
        }
    }
    state.discovery = discovery.map(|(d, _)| d);

    // Listening sockets: a wildcard and a specific address on one port cannot both
    // be bound (docs/configfs.md §3.2: kernel_bind() fails with EADDRINUSE).
    type Listeners<'m> = (Vec<SocketAddr>, Vec<(SocketAddr, &'m String)>);
    let mut by_port: BTreeMap<u16, Listeners> = BTreeMap::new();
    for pname in &used_portals {
        if let Some(p) = model.portals.get(*pname) {
            for a in &p.listen {
                let e = by_port.entry(a.port()).or_default();
                if a.ip().is_unspecified() {
                    e.0.push(*a);
                } else {
                    e.1.push((*a, pname));
                }
            }
        }
    }
    for (port, (wild, specific)) in &by_port {
        if let (Some(w), Some((s, pname))) = (wild.first(), specific.first()) {
            let origin = model.portals.get(*pname).map(|p| &p.origin);
            errs.push(
                origin,
                format!("portal {pname:?}"),
                format!("{s} and the wildcard {w} both listen on port {port}; the kernel cannot bind a specific address on a port where a wildcard listener exists"),
                format!("listen on the wildcard only, or use a different port for {s}"),
            );
        }
    }

    for (iqn, t) in &model.targets {
        let mut target = Target {
            name: iqn.as_str().to_string(),
            tpgs: BTreeMap::new(),
            origin: Some(t.origin.clone()),
        };
        let tobj = format!("target {:?}", t.key);
        // LUNs of this target: disabled extents are not exported.
        let mut luns: BTreeMap<u64, (&String, bool)> = BTreeMap::new();
        for (id, ext_name) in &t.luns {
            match model.extents.get(ext_name) {
                Some(ext) if ext.enabled => {
                    luns.insert(u64::from(*id), (ext_name, ext.readonly));
                }
                Some(_) => {}
                None => errs.push(
                    Some(&t.origin),
                    tobj.clone(),
                    format!("LUN {id} refers to unknown extent {ext_name:?}"),
                    "define the extent",
                ),
            }
        }
        let mut taken: Vec<(SocketAddr, u16)> = Vec::new();
        for g in &t.groups {
            let Some(portal) = model.portals.get(&g.portal) else {
                errs.push(
                    Some(&g.origin),
                    tobj.clone(),
                    format!("group refers to unknown portal {:?}", g.portal),
                    "define the portal group",
                );
                continue;
            };
            let tag = portal.tag;
            if target.tpgs.contains_key(&tag) {
                errs.push(
                    Some(&g.origin),
                    tobj.clone(),
                    format!("two groups use portal tag {tag}; LIO has one TPG per tag in a target"),
                    "use each portal group once per target",
                );
                continue;
            }
            let mut tpg = Tpg {
                tag,
                enabled: true,
                alias: t
                    .alias
                    .clone()
                    .unwrap_or_else(|| DEFAULT_TARGET_ALIAS.to_string()),
                // `chap = "optional"`: credentials on the ACLs, not required by the TPG.
                authentication: g.auth_method != AuthMethod::None && !g.chap_optional,
                generate_node_acls: false,
                demo_mode_write_protect: None,
                prod_mode_write_protect: None,
                auth: None,
                portals: BTreeMap::new(),
                luns: BTreeMap::new(),
                acls: BTreeMap::new(),
                // Every defaulted attribute stays at the kernel default (the model names none).
                attributes: BTreeMap::new(),
                extra: BTreeMap::new(),
                origin: Some(g.origin.clone()),
            };
            for a in &portal.listen {
                if let Some((other, otag)) = taken.iter().find(|(o, _)| portals_conflict(o, a)) {
                    errs.push(
                        Some(&g.origin),
                        tobj.clone(),
                        format!("portal {a} (tag {tag}) and {other} (tag {otag}) are the same listener to LIO; one target cannot have it in two portal groups"),
                        "give the two portal groups different addresses or ports",
                    );
                    continue;
                }
                taken.push((*a, tag));
                tpg.portals.insert(*a, Portal::default());
            }
            for (id, (ext_name, _)) in &luns {
                tpg.luns.insert(
                    *id,
                    Lun {
                        backstore: Some(BackstoreRef {
                            name: (*ext_name).clone(),
                            hba: None,
                        }),
                        link: None,
                    },
                );
            }
            let creds = chap_creds(model, g.auth_method, g.auth.as_deref());
            let group = g
                .initiator_group
                .as_ref()
                .and_then(|n| model.initiator_groups.get(n).map(|ig| (n, ig)));
            if let Some((ig_name, ig)) = group {
                if !ig.any_network() {
                    errs.push(
                        Some(&ig.origin),
                        format!("initiator_group {ig_name:?}"),
                        format!(
                            "LIO ACLs admit initiators by name only and cannot restrict them to networks {}; it is used by target {:?}",
                            ig.networks.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", "),
                            t.key
                        ),
                        "remove `networks` (restrict by firewall instead), or use --backend userspace",
                    );
                }
            }
            match group.filter(|(_, ig)| !ig.any_initiator()) {
                Some((_, ig)) => {
                    for init in &ig.initiators {
                        let mut acl = Acl {
                            auth: Some(creds.clone()),
                            authentication: None,
                            mapped: BTreeMap::new(),
                            attributes: BTreeMap::new(),
                            extra: BTreeMap::new(),
                            origin: Some(g.origin.clone()),
                        };
                        for (id, (_, readonly)) in &luns {
                            acl.mapped.insert(
                                *id,
                                MappedLun {
                                    tpg_lun: Some(*id),
                                    write_protect: Some(*readonly),
                                    link: None,
                                },
                            );
                        }
                        tpg.acls.insert(init.as_str().to_string(), acl);
                    }
                }
                None => {
                    // Demo mode: dynamic ACLs see every LUN; write protection is one
                    // switch for the whole TPG.
                    tpg.generate_node_acls = true;
                    tpg.auth = Some(creds);
                    let ro: BTreeSet<bool> = luns.values().map(|(_, r)| *r).collect();
                    if ro.len() > 1 {
                        let list = |want: bool| {
                            luns.values()
                                .filter(|(_, r)| *r == want)
                                .map(|(n, _)| format!("{n:?}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        };
                        errs.push(
                            Some(&g.origin),
                            tobj.clone(),
                            format!(
                                "this group admits any initiator (LIO demo mode), where write protection is one switch for the whole portal group, but it mixes read-only extents ({}) with writable ones ({})",
                                list(true),
                                list(false)
                            ),
                            "list the initiators in an initiator_group (then each LUN is write-protected on its own), or make the extents all read-only or all writable",
                        );
                    }
                    tpg.demo_mode_write_protect = Some(ro.contains(&true));
                }
            }
            target.tpgs.insert(tag, tpg);
        }
        state.targets.insert(target.name.clone(), target);
    }
    state.fabric = !state.targets.is_empty() || state.discovery.is_some();

    if errs.0.is_empty() {
        Ok(state)
    } else {
        Err(LowerErrors(errs.0))
    }
}

/// The CHAP credentials an auth method asks for (empty for `none`).
fn chap_creds(model: &Model, method: AuthMethod, auth: Option<&str>) -> ChapCreds {
    let Some(a) = auth.and_then(|n| model.auths.get(n)) else {
        return ChapCreds::default();
    };
    match method {
        AuthMethod::None => ChapCreds::default(),
        AuthMethod::Chap => ChapCreds {
            userid: a.user.clone(),
            password: a.secret.clone(),
            userid_mutual: String::new(),
            password_mutual: Secret::default(),
        },
        AuthMethod::MutualChap => ChapCreds {
            userid: a.user.clone(),
            password: a.secret.clone(),
            userid_mutual: a.peer.as_ref().map(|p| p.user.clone()).unwrap_or_default(),
            password_mutual: a
                .peer
                .as_ref()
                .map(|p| p.secret.clone())
                .unwrap_or_default(),
        },
    }
}

fn lower_extent(name: &str, ext: &crate::model::Extent, errs: &mut Errors) -> Option<Backstore> {
    let obj = format!("extent {name:?}");
    let o = Some(&ext.origin);
    let kind = match &ext.backing {
        Backing::File { path, size } => BackstoreKind::File {
            path: path.clone(),
            size: *size,
            write_back: ext.write_back,
        },
        Backing::Block { device } => {
            if ext.write_back {
                errs.push(
                    o,
                    obj.clone(),
                    "write_back = true: LIO's iblock reports the block device's own write cache and refuses to emulate one (attrib/emulate_write_cache → EINVAL)",
                    "remove write_back (configure the device's cache instead), or use the userspace engine",
                );
            }
            BackstoreKind::Block {
                device: device.clone(),
                readonly: ext.readonly,
            }
        }
        Backing::Ramdisk { size } => {
            if *size == 0 || size % RAMDISK_PAGE != 0 {
                errs.push(
                    o,
                    obj.clone(),
                    format!("LIO allocates ramdisks in {RAMDISK_PAGE}-byte pages; {size} bytes is not a whole number of pages"),
                    format!("use a multiple of {RAMDISK_PAGE} bytes, e.g. {}", size.div_ceil(RAMDISK_PAGE).max(1) * RAMDISK_PAGE),
                );
            }
            BackstoreKind::Ramdisk { size: *size }
        }
    };
    for p in match &kind {
        BackstoreKind::File { path, .. } => vec![path],
        BackstoreKind::Block { device, .. } => vec![device],
        _ => vec![],
    } {
        let s = p.to_string_lossy();
        if s.contains(',') || s.contains('\n') {
            errs.push(
                o,
                obj.clone(),
                format!("path {s:?} contains a comma or a newline, which LIO's control file cannot carry"),
                "rename the file or device path",
            );
        }
    }
    if ext.serial.trim() != ext.serial || ext.serial.is_empty() || ext.serial.len() >= 254 {
        errs.push(
            o,
            obj.clone(),
            format!(
                "serial {:?} cannot be stored by LIO (it strips surrounding whitespace and takes 1 to 253 characters)",
                ext.serial
            ),
            "use a serial of 1..=253 characters without leading or trailing spaces",
        );
    }
    let nonrotational = match ext.rpm {
        Rpm::Ssd => Some(true),
        Rpm::Unknown => None,
        Rpm::Rpm(n) => {
            errs.push(
                o,
                obj.clone(),
                format!("rpm = {n}: LIO reports only \"non-rotating\" or nothing (attrib/is_nonrot), not a rotation rate"),
                "use rpm = \"ssd\", or remove rpm",
            );
            Some(false)
        }
    };
    let mut company_id = DEFAULT_COMPANY_ID;
    if let Some(naa) = &ext.naa {
        let hex = naa.trim_start_matches("0x").to_ascii_lowercase();
        if hex.len() != 32 || !hex.starts_with('6') || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            errs.push(
                o,
                obj.clone(),
                format!("naa {naa:?}: LIO presents only 128-bit NAA type 6 identifiers (0x6 + 31 hex digits), derived from a company id and the serial"),
                "use a 32-digit NAA starting with 6, or remove naa",
            );
        } else if let Ok(cid) = u32::from_str_radix(&hex[1..7], 16) {
            company_id = cid;
            if lio_naa(cid, &ext.serial) != hex {
                errs.push(
                    o,
                    obj.clone(),
                    format!(
                        "naa {naa:?} cannot be presented with serial {:?}: LIO derives the NAA from company id 0x{cid:06x} and the first 25 hex digits of the serial, which gives 0x{}",
                        ext.serial,
                        lio_naa(cid, &ext.serial)
                    ),
                    format!("set serial = \"{}\" (or any serial whose first 25 hex digits are these)", &hex[7..]),
                );
            }
        }
    }
    Some(Backstore {
        name: name.to_string(),
        kind,
        block_size: ext.blocksize,
        serial: ext.serial.clone(),
        company_id,
        nonrotational,
        hba: None,
        configured: true,
        // Every policy attribute the model does not name stays at the kernel default.
        attributes: if ext.model_alias {
            BTreeMap::from([("emulate_model_alias".to_string(), "1".to_string())])
        } else {
            BTreeMap::new()
        },
        extra: BTreeMap::new(),
        origin: Some(ext.origin.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        AuthMethod, Backing, ChapCredentials, Extent, InitiatorGroup, IscsiName, Model,
        PortalGroup, Rpm, Secret, Target as ModelTarget, TargetGroup,
    };
    use std::path::PathBuf;

    fn origin(line: u32) -> Origin {
        Origin {
            file: PathBuf::from("m.toml"),
            line,
            column: 1,
        }
    }

    fn extent(name: &str, ro: bool) -> Extent {
        Extent {
            name: name.into(),
            backing: Backing::Ramdisk { size: 1 << 20 },
            blocksize: 512,
            serial: format!("serial-{name}"),
            naa: None,
            readonly: ro,
            rpm: Rpm::Unknown,
            comment: String::new(),
            enabled: true,
            shared: false,
            write_back: false,
            model_alias: false,
            origin: origin(10),
        }
    }

    fn model() -> Model {
        let mut m = Model::default();
        m.portals.insert(
            "p".into(),
            PortalGroup {
                name: "p".into(),
                tag: 1,
                listen: vec!["[::]:3260".parse().unwrap()],
                discovery_auth: AuthMethod::None,
                discovery_auth_group: None,
                comment: String::new(),
                origin: origin(1),
            },
        );
        m.extents.insert("a".into(), extent("a", false));
        m.extents.insert("b".into(), extent("b", true));
        let iqn = IscsiName::parse("iqn.2026-01.com.example:t").unwrap();
        m.targets.insert(
            iqn.clone(),
            ModelTarget {
                key: "t".into(),
                name: iqn,
                alias: None,
                luns: [(0u16, "a".to_string()), (1, "b".to_string())].into(),
                groups: vec![TargetGroup {
                    portal: "p".into(),
                    initiator_group: None,
                    auth: None,
                    auth_method: AuthMethod::None,
                    chap_optional: false,
                    origin: origin(20),
                }],
                origin: origin(18),
            },
        );
        m
    }

    #[test]
    fn demo_mode_mixing_readonly_is_refused_with_origin() {
        let e = lower(&model()).unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert_eq!(e.0[0].origin, Some(origin(20)));
        assert!(e.0[0].problem.contains("\"b\""), "{}", e.0[0]);
    }

    #[test]
    fn acl_mode_maps_every_lun_with_write_protect() {
        let mut m = model();
        m.initiator_groups.insert(
            "g".into(),
            InitiatorGroup {
                name: "g".into(),
                initiators: vec![IscsiName::parse("iqn.1994-05.com.example:c1").unwrap()],
                networks: vec![],
                comment: String::new(),
                origin: origin(5),
            },
        );
        m.targets.values_mut().next().unwrap().groups[0].initiator_group = Some("g".into());
        let s = lower(&m).unwrap();
        let tpg = &s.targets["iqn.2026-01.com.example:t"].tpgs[&1];
        assert!(!tpg.generate_node_acls);
        assert!(!tpg.authentication);
        let acl = &tpg.acls["iqn.1994-05.com.example:c1"];
        assert_eq!(acl.mapped[&0].write_protect, Some(false));
        assert_eq!(acl.mapped[&1].write_protect, Some(true));
        assert_eq!(acl.mapped[&1].tpg_lun, Some(1));
        assert!(s.fabric);
        assert_eq!(s.discovery, Some(DiscoveryAuth::default()));
    }

    #[test]
    fn write_back_block_extent_is_a_backend_limit() {
        let mut m = model();
        m.extents.get_mut("b").unwrap().readonly = false;
        let x = m.extents.get_mut("a").unwrap();
        x.backing = Backing::Block {
            device: PathBuf::from("/dev/ram0"),
        };
        x.write_back = true;
        let e = lower(&m).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert!(e.0[0].problem.contains("emulate_write_cache"), "{}", e.0[0]);
    }

    #[test]
    fn write_back_file_extent_lowers_to_buffered_fileio() {
        let mut m = model();
        m.extents.get_mut("b").unwrap().readonly = false;
        let x = m.extents.get_mut("a").unwrap();
        x.backing = Backing::File {
            path: PathBuf::from("/srv/a.img"),
            size: Some(1 << 20),
        };
        x.write_back = true;
        let s = lower(&m).unwrap();
        assert!(matches!(
            &s.backstores["a"].kind,
            BackstoreKind::File {
                write_back: true,
                ..
            }
        ));
        assert_eq!(
            crate::backend::lio::exec::control_string(&s.backstores["a"].kind),
            "fd_dev_name=/srv/a.img,fd_dev_size=1048576,fd_buffered_io=1"
        );
    }

    #[test]
    fn networks_are_a_backend_limit() {
        let mut m = model();
        m.extents.get_mut("b").unwrap().readonly = false;
        m.initiator_groups.insert(
            "g".into(),
            InitiatorGroup {
                name: "g".into(),
                initiators: vec![],
                networks: vec!["192.168.1.0/24".parse().unwrap()],
                comment: String::new(),
                origin: origin(7),
            },
        );
        m.targets.values_mut().next().unwrap().groups[0].initiator_group = Some("g".into());
        let e = lower(&m).unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert_eq!(e.0[0].origin, Some(origin(7)));
        assert!(e.0[0].problem.contains("192.168.1.0/24"));
    }

    #[test]
    fn naa_must_be_derivable() {
        let mut m = model();
        m.extents.get_mut("b").unwrap().readonly = false;
        let a = m.extents.get_mut("a").unwrap();
        a.serial = "0123456789abcdef0123456789".into();
        a.naa = Some(format!("0x6001405{}", "0123456789abcdef012345678"));
        let s = lower(&m).unwrap();
        assert_eq!(s.backstores["a"].company_id, 0x001405);
        let a = m.extents.get_mut("a").unwrap();
        a.naa = Some("0x6001405fffffffffffffffffffffffff".into());
        let e = lower(&m).unwrap_err();
        assert!(
            e.0[0].fix.contains("ffffffffffffffffffffffff"),
            "{}",
            e.0[0]
        );
        let a = m.extents.get_mut("a").unwrap();
        a.naa = Some("0x52004567ba64678d".into());
        assert!(lower(&m).is_err());
    }

    #[test]
    fn discovery_auth_must_agree_across_portals() {
        let mut m = model();
        m.extents.get_mut("b").unwrap().readonly = false;
        m.auths.insert(
            "d".into(),
            ChapCredentials {
                name: "d".into(),
                user: "u".into(),
                secret: Secret::new("abcdefghijkl"),
                peer: None,
                origin: origin(30),
            },
        );
        m.portals.insert(
            "q".into(),
            PortalGroup {
                name: "q".into(),
                tag: 2,
                listen: vec!["[::]:3261".parse().unwrap()],
                discovery_auth: AuthMethod::Chap,
                discovery_auth_group: Some("d".into()),
                comment: String::new(),
                origin: origin(40),
            },
        );
        let t = m.targets.values_mut().next().unwrap();
        let mut g = t.groups[0].clone();
        g.portal = "q".into();
        t.groups.push(g);
        let e = lower(&m).unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert_eq!(e.0[0].origin, Some(origin(40)));
    }

    #[test]
    fn wildcard_and_specific_on_one_port_is_refused() {
        let mut m = model();
        m.extents.get_mut("b").unwrap().readonly = false;
        m.portals.get_mut("p").unwrap().listen = vec![
            "0.0.0.0:3260".parse().unwrap(),
            "10.0.0.1:3260".parse().unwrap(),
        ];
        let e = lower(&m).unwrap_err();
        assert!(e.0[0].problem.contains("10.0.0.1:3260"), "{}", e.0[0]);
    }
}
