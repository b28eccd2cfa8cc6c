//! Observing LIO: the configfs tree under the root → [`Observed`] (state + sessions).
//!
//! Read formats follow docs/configfs.md §8: numbers end with `\n`; CHAP values are
//! stored verbatim and read back with one `\n` appended (exactly one is stripped);
//! `NULL` means unset; the serial reads `T10 VPD Unit Serial Number: <s>\n`; portal
//! directory names are kept as typed and are canonicalised here; symlinks read back
//! as relative paths and are resolved, never string-matched; `dynamic_sessions` puts
//! a NUL after every line.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::model::Secret;
use crate::state::{
    parse_portal_dir, Acl, Backstore, BackstoreKind, BackstoreRef, ChapCreds, Connection,
    DefaultedAttribute, DiscoveryAuth, Foreign, Lun, MappedLun, ObjectId, Observed, Portal,
    Session, State, Target, Tpg, ACL_DEFAULTED, DEFAULT_COMPANY_ID, POLICY_ATTRIBUTES,
    RAMDISK_PAGE, TPG_DEFAULTED,
};

use super::super::{BackendError, ObserveScope};
use super::fs::{ConfigFs, EntryKind};
use super::paths::Paths;

pub(crate) struct Observer<'a> {
    pub fs: &'a dyn ConfigFs,
    pub paths: &'a Paths,
    pub scope: ObserveScope,
}

fn io_err(paths: &Paths, path: &Path, e: io::Error) -> BackendError {
    let errno = e.raw_os_error();
    let mut message = e.to_string();
    if errno == Some(libc::EPERM) || errno == Some(libc::EACCES) {
        message.push_str(" (reading LIO's CHAP settings needs root: run isctl as root)");
    }
    BackendError::Observe {
        path: paths.relative(path),
        message,
        errno,
    }
}

/// Strip exactly one trailing newline (docs/configfs.md §3.5, §8).
fn strip_nl(s: &str) -> &str {
    s.strip_suffix('\n').unwrap_or(s)
}

/// The HBA directory's plugin: the text before the first `_`, except `rd_mcp`
/// (docs/configfs.md §2).
pub fn hba_plugin(hba: &str) -> Option<&str> {
    if let Some(rest) = hba.strip_prefix("rd_mcp_") {
        let _ = rest;
        return Some("rd_mcp");
    }
    let (p, _) = hba.split_once('_')?;
    Some(p)
}

impl<'a> Observer<'a> {
    fn read(&self, path: &Path) -> Result<String, BackendError> {
        self.fs
            .read(path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|e| io_err(self.paths, path, e))
    }

    fn read_opt(&self, path: &Path) -> Option<String> {
        self.fs
            .read(path)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    fn read_trim(&self, path: &Path) -> Result<String, BackendError> {
        Ok(strip_nl(&self.read(path)?).to_string())
    }

    fn read_bool(&self, path: &Path) -> Result<bool, BackendError> {
        Ok(self.read(path)?.trim() == "1")
    }

    fn dirs(&self, path: &Path) -> Result<Vec<String>, BackendError> {
        Ok(self
            .fs
            .read_dir(path)
            .map_err(|e| io_err(self.paths, path, e))?
            .into_iter()
            .filter(|e| e.kind == EntryKind::Dir)
            .map(|e| e.name)
            .collect())
    }

    fn links(&self, path: &Path) -> Result<Vec<String>, BackendError> {
        Ok(self
            .fs
            .read_dir(path)
            .map_err(|e| io_err(self.paths, path, e))?
            .into_iter()
            .filter(|e| e.kind == EntryKind::Symlink)
            .map(|e| e.name)
            .collect())
    }

    fn read_creds(&self, dir: &Path) -> Result<ChapCreds, BackendError> {
        let get = |f: &str| -> Result<String, BackendError> {
            let v = strip_nl(&self.read(&dir.join(f))?).to_string();
            // `NULL` clears the flag but stays in the file (§3.5).
            Ok(if v.starts_with("NULL") {
                String::new()
            } else {
                v
            })
        };
        Ok(ChapCreds {
            userid: get("userid")?,
            password: Secret::new(get("password")?),
            userid_mutual: get("userid_mutual")?,
            password_mutual: Secret::new(get("password_mutual")?),
        })
    }

    pub fn observe(&self) -> Result<Observed, BackendError> {
        let mut state = State::default();
        let mut sessions = Vec::new();
        self.observe_core(&mut state)?;
        let iscsi = self.paths.iscsi();
        if self.fs.exists(&iscsi) {
            state.fabric = true;
            let d = |f: &str| self.paths.discovery_auth(f);
            state.discovery = Some(DiscoveryAuth {
                enforce: self.read_bool(&d("enforce_discovery_auth"))?,
                creds: self.read_creds(&iscsi.join("discovery_auth"))?,
            });
            for name in self.dirs(&iscsi)? {
                if name == "discovery_auth" {
                    continue;
                }
                let t = self.observe_target(&name, &mut state.foreign, &mut sessions)?;
                state.targets.insert(name, t);
            }
        }
        Ok(Observed { state, sessions })
    }

    fn observe_core(&self, state: &mut State) -> Result<(), BackendError> {
        let core = self.paths.core();
        if !self.fs.exists(&core) {
            return Ok(());
        }
        for hba in self.dirs(&core)? {
            if hba == "alua" {
                if self.scope == ObserveScope::Full {
                    for g in self.dirs(&core.join("alua/lu_gps"))? {
                        if g != "default_lu_gp" {
                            state.foreign.push(Foreign {
                                path: format!("core/alua/lu_gps/{g}"),
                                what: "an ALUA logical unit group".into(),
                                parent: None,
                            });
                        }
                    }
                }
                continue;
            }
            let objects = self.dirs(&self.paths.hba(&hba))?;
            state.hbas.insert(hba.clone(), objects.len());
            let Some(plugin) = hba_plugin(&hba).map(str::to_string) else {
                continue;
            };
            for name in objects {
                let b = self.observe_backstore(&hba, &plugin, &name, &mut state.foreign)?;
                match state.backstores.entry(name) {
                    std::collections::btree_map::Entry::Occupied(_) => {
                        state.shadowed_backstores.push(b)
                    }
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(b);
                    }
                }
            }
        }
        Ok(())
    }

    fn observe_backstore(
        &self,
        hba: &str,
        plugin: &str,
        name: &str,
        foreign: &mut Vec<Foreign>,
    ) -> Result<Backstore, BackendError> {
        let p = self.paths;
        let configured = self.read_bool(&p.backstore_file(hba, name, "enable"))?;
        let info = self.read(&p.backstore_file(hba, name, "info"))?;
        let mut extra = BTreeMap::new();
        let kind = match plugin {
            "fileio" => {
                let (path, size) = parse_fileio_info(&info);
                if info.contains("Async: 1") {
                    extra.insert("fd_async_io".to_string(), "1".to_string());
                }
                BackstoreKind::File {
                    path: PathBuf::from(path),
                    size: Some(size),
                    // fd_buffered_io=1 shows as `Mode: Buffered-WCE` (§2.2).
                    write_back: info.contains("Mode: Buffered-WCE"),
                }
            }
            "iblock" => {
                let (device, readonly) = parse_iblock_info(&info);
                BackstoreKind::Block {
                    device: PathBuf::from(device),
                    readonly,
                }
            }
            "rd_mcp" => {
                let (pages, nullio) = parse_rd_info(&info);
                if nullio {
                    extra.insert("rd_nullio".to_string(), "1".to_string());
                }
                BackstoreKind::Ramdisk {
                    size: pages * RAMDISK_PAGE,
                }
            }
            other => BackstoreKind::Other {
                plugin: other.to_string(),
            },
        };
        let serial_raw = self.read(&p.backstore_wwn(hba, name, "vpd_unit_serial"))?;
        let serial = strip_nl(&serial_raw)
            .strip_prefix("T10 VPD Unit Serial Number:")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let company_id = self
            .read_opt(&p.backstore_wwn(hba, name, "company_id"))
            .and_then(|s| u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok())
            .unwrap_or(DEFAULT_COMPANY_ID);
        let block_size = self
            .read_opt(&p.backstore_attrib(hba, name, "block_size"))
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let nonrotational = self
            .read_opt(&p.backstore_attrib(hba, name, "is_nonrot"))
            .map(|s| s.trim() == "1");
        let mut attributes = BTreeMap::new();
        for a in POLICY_ATTRIBUTES {
            // Absent on pscsi/user objects (their reduced attrib/ set, §2.2).
            if let Some(v) = self.read_opt(&p.backstore_attrib(hba, name, a.name)) {
                if v.trim() != a.default {
                    attributes.insert(a.name.to_string(), v.trim().to_string());
                }
            }
        }
        if self.scope == ObserveScope::Full {
            self.backstore_extras(hba, name, &mut extra)?;
            let alua = p.backstore_alua(hba, name);
            if self.fs.exists(&alua) {
                for g in self.dirs(&alua)? {
                    if g != "default_tg_pt_gp" {
                        foreign.push(Foreign {
                            path: format!("core/{hba}/{name}/alua/{g}"),
                            what: "an ALUA target port group".into(),
                            parent: Some(ObjectId::Backstore {
                                name: name.to_string(),
                            }),
                        });
                    }
                }
            }
        }
        Ok(Backstore {
            name: name.to_string(),
            kind,
            block_size,
            serial,
            company_id,
            nonrotational,
            hba: Some(hba.to_string()),
            configured,
            attributes,
            extra,
            origin: None,
        })
    }

    /// Unmanaged storage-object values that differ from the kernel defaults
    /// (docs/configfs.md §2.3/§2.4).
    fn backstore_extras(
        &self,
        hba: &str,
        name: &str,
        extra: &mut BTreeMap<String, String>,
    ) -> Result<(), BackendError> {
        let p = self.paths;
        let get = |a: &str| {
            self.read_opt(&p.backstore_attrib(hba, name, a))
                .map(|s| s.trim().to_string())
        };
        for (a, def) in SO_ATTRIB_DEFAULTS {
            if let Some(v) = get(a) {
                if v != *def {
                    extra.insert(format!("attrib/{a}"), v);
                }
            }
        }
        for (a, hw) in [
            ("queue_depth", "hw_queue_depth"),
            ("optimal_sectors", "hw_max_sectors"),
        ] {
            if let (Some(v), Some(h)) = (get(a), get(hw)) {
                if v != h && v != "0" {
                    extra.insert(format!("attrib/{a}"), v);
                }
            }
        }
        for (f, def) in [("vendor_id", "LIO-ORG"), ("revision", "4.0")] {
            if let Some(v) = self.read_opt(&p.backstore_wwn(hba, name, f)) {
                if strip_nl(&v) != def {
                    extra.insert(format!("wwn/{f}"), strip_nl(&v).to_string());
                }
            }
        }
        if let Some(v) = self.read_opt(&p.backstore_file(hba, name, "alua_lu_gp")) {
            if !v.is_empty() && !v.contains("default_lu_gp") {
                extra.insert(
                    "alua_lu_gp".into(),
                    v.lines().next().unwrap_or("").to_string(),
                );
            }
        }
        Ok(())
    }

    fn observe_target(
        &self,
        iqn: &str,
        foreign: &mut Vec<Foreign>,
        sessions: &mut Vec<Session>,
    ) -> Result<Target, BackendError> {
        let mut t = Target {
            name: iqn.to_string(),
            tpgs: BTreeMap::new(),
            origin: None,
        };
        for dir in self.dirs(&self.paths.target(iqn))? {
            if dir == "param" || dir == "fabric_statistics" {
                continue;
            }
            match dir
                .strip_prefix("tpgt_")
                .and_then(|n| n.parse::<u16>().ok())
                .filter(|n| format!("tpgt_{n}") == dir)
            {
                Some(tag) => {
                    let tpg = self.observe_tpg(iqn, tag, foreign, sessions)?;
                    t.tpgs.insert(tag, tpg);
                }
                None => foreign.push(Foreign {
                    path: format!("iscsi/{iqn}/{dir}"),
                    what: "a portal group directory not named tpgt_<decimal tag> (the kernel parses it, but isctl only manages canonical names)".into(),
                    parent: Some(ObjectId::Target {
                        target: iqn.to_string(),
                    }),
                }),
            }
        }
        Ok(t)
    }

    fn observe_tpg(
        &self,
        iqn: &str,
        tag: u16,
        foreign: &mut Vec<Foreign>,
        sessions: &mut Vec<Session>,
    ) -> Result<Tpg, BackendError> {
        let p = self.paths;
        let tpg_id = ObjectId::Tpg {
            target: iqn.to_string(),
            tag,
        };
        let attr = |a: &str| self.read_bool(&p.tpg_attrib(iqn, tag, a));
        let mut tpg = Tpg {
            tag,
            enabled: self.read_bool(&p.tpg_file(iqn, tag, "enable"))?,
            alias: self.read_trim(&p.tpg_param(iqn, tag, "TargetAlias"))?,
            authentication: attr("authentication")?,
            generate_node_acls: attr("generate_node_acls")?,
            demo_mode_write_protect: Some(attr("demo_mode_write_protect")?),
            prod_mode_write_protect: Some(attr("prod_mode_write_protect")?),
            auth: Some(self.read_creds(&p.tpg(iqn, tag).join("auth"))?),
            portals: BTreeMap::new(),
            luns: BTreeMap::new(),
            acls: BTreeMap::new(),
            attributes: self.defaulted(&p.tpg(iqn, tag), TPG_DEFAULTED),
            extra: BTreeMap::new(),
            origin: None,
        };
        for dir in self.dirs(&p.portals(iqn, tag))? {
            match parse_portal_dir(&dir) {
                Some(addr) if !tpg.portals.contains_key(&addr) => {
                    tpg.portals.insert(addr, Portal { dir: Some(dir) });
                }
                _ => foreign.push(Foreign {
                    path: format!("iscsi/{iqn}/tpgt_{tag}/np/{dir}"),
                    what: "a portal isctl cannot parse or that duplicates another".into(),
                    parent: Some(tpg_id.clone()),
                }),
            }
        }
        for dir in self.dirs(&p.luns(iqn, tag))? {
            let Some(n) = canonical_lun(&dir) else {
                foreign.push(Foreign {
                    path: format!("iscsi/{iqn}/tpgt_{tag}/lun/{dir}"),
                    what: "a LUN directory not named lun_<decimal>".into(),
                    parent: Some(tpg_id.clone()),
                });
                continue;
            };
            let ldir = p.lun(iqn, tag, n);
            let mut lun = Lun {
                backstore: None,
                link: None,
            };
            if let Some(link) = self.links(&ldir)?.into_iter().next() {
                let lp = ldir.join(&link);
                let target = self.fs.read_link(&lp).map_err(|e| io_err(p, &lp, e))?;
                if let Some(c) = p.resolve_link(&lp, &target) {
                    if c.len() == 3 && c[0] == "core" {
                        lun.backstore = Some(BackstoreRef {
                            name: c[2].clone(),
                            hba: Some(c[1].clone()),
                        });
                    }
                }
                lun.link = Some(link);
            }
            tpg.luns.insert(n, lun);
        }
        for init in self.dirs(&p.acls(iqn, tag))? {
            let acl = self.observe_acl(iqn, tag, &init, foreign, sessions)?;
            tpg.acls.insert(init, acl);
        }
        let dynamic = self.read(&p.tpg_file(iqn, tag, "dynamic_sessions"))?;
        for name in parse_dynamic_sessions(&dynamic) {
            sessions.push(Session {
                target: iqn.to_string(),
                tpg: tag,
                initiator: name,
                dynamic: true,
                alias: None,
                isid: None,
                tsih: None,
                session_id: None,
                session_type: None,
                state: None,
                connections: vec![],
                ..Session::default()
            });
        }
        if self.scope == ObserveScope::Full {
            self.tpg_extras(iqn, tag, &mut tpg)?;
        }
        Ok(tpg)
    }

    /// The defaulted attributes (`state::TPG_DEFAULTED`, `ACL_DEFAULTED`) of the TPG or
    /// ACL at `dir` whose value is not the default. Read in every scope: they are
    /// compared by the plan (docs/reconcile.md, "Drift"). A file the kernel lacks (an
    /// older kernel without `login_keys_workaround`) is no drift.
    fn defaulted(&self, dir: &Path, table: &[DefaultedAttribute]) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for a in table {
            if let Some(v) = self.read_opt(&dir.join(a.path)) {
                let v = strip_nl(&v);
                if v != a.default {
                    out.insert(a.path.to_string(), v.to_string());
                }
            }
        }
        out
    }

    fn tpg_extras(&self, iqn: &str, tag: u16, tpg: &mut Tpg) -> Result<(), BackendError> {
        let p = self.paths;
        for (a, def) in TPG_ATTRIB_DEFAULTS {
            if let Some(v) = self.read_opt(&p.tpg_attrib(iqn, tag, a)) {
                if v.trim() != *def {
                    tpg.extra
                        .insert(format!("attrib/{a}"), v.trim().to_string());
                }
            }
        }
        for (a, def) in TPG_PARAM_DEFAULTS {
            if let Some(v) = self.read_opt(&p.tpg_param(iqn, tag, a)) {
                if strip_nl(&v) != *def {
                    tpg.extra
                        .insert(format!("param/{a}"), strip_nl(&v).to_string());
                }
            }
        }
        let want_auth_method = if tpg.authentication {
            "CHAP"
        } else {
            "CHAP,None"
        };
        if let Some(v) = self.read_opt(&p.tpg_param(iqn, tag, "AuthMethod")) {
            if strip_nl(&v) != want_auth_method {
                tpg.extra
                    .insert("param/AuthMethod".into(), strip_nl(&v).to_string());
            }
        }
        for (addr, portal) in &tpg.portals {
            let dir = portal
                .dir
                .clone()
                .unwrap_or_else(|| crate::state::portal_dir_name(addr));
            for f in ["iser", "cxgbit"] {
                if let Some(v) = self.read_opt(&p.portal(iqn, tag, &dir).join(f)) {
                    if v.trim() != "0" {
                        tpg.extra
                            .insert(format!("np/{dir}/{f}"), v.trim().to_string());
                    }
                }
            }
        }
        Ok(())
    }

    /// What LIO shows of a live ACL session beyond `info`: the negotiated
    /// parameters (`acls/<I>/param/*`, numbers as the kernel holds them) and the
    /// authentication the TPG requires of this ACL. LIO does not record which
    /// method a login actually used, so this is what the configuration demands:
    /// CHAP when the TPG's (or the ACL's) `authentication` is 1, mutual when the
    /// ACL also has `userid_mutual`.
    fn session_details(&self, iqn: &str, tag: u16, init: &str, acl: &Acl, s: &mut Session) {
        let p = self.paths;
        // Optional reads: an older kernel (or the simulator) may lack a file.
        let param = |key: &str| -> Option<String> {
            let v = self.read_opt(&p.acl(iqn, tag, init).join("param").join(key))?;
            let v = v.trim();
            (!v.is_empty() && !v.starts_with("No Active")).then(|| v.to_string())
        };
        let num = |key: &str| param(key).and_then(|v| v.parse::<u32>().ok());
        let yes = |key: &str| param(key).map(|v| v.eq_ignore_ascii_case("yes") || v == "1");
        if let (Some(mc), Some(r2t), Some(imm), Some(mbl), Some(fbl)) = (
            num("MaxConnections"),
            yes("InitialR2T"),
            yes("ImmediateData"),
            num("MaxBurstLength"),
            num("FirstBurstLength"),
        ) {
            s.params = Some(crate::state::SessionParameters {
                max_connections: u16::try_from(mc).unwrap_or(u16::MAX),
                initial_r2t: r2t,
                immediate_data: imm,
                max_burst_length: mbl,
                first_burst_length: fbl,
            });
        }
        let tpg_authn = self
            .read_opt(&p.tpg_attrib(iqn, tag, "authentication"))
            .unwrap_or_default();
        let required = acl.authentication.unwrap_or(tpg_authn.trim() == "1");
        let mutual = acl
            .auth
            .as_ref()
            .is_some_and(|c| !c.userid_mutual.is_empty());
        let authentication = match (required, mutual) {
            (false, _) => "none",
            (true, false) => "chap",
            (true, true) => "mutual_chap",
        };
        // The digests and MaxRecvDataSegmentLength stay unknown: the ACL's param/ holds
        // only the session-wide keys above (the kernel's ISCSI_NACL_PARAM list), and LIO
        // shows a connection's own negotiated keys nowhere in configfs (docs/monitoring.md).
        for c in &mut s.connections {
            c.authentication = Some(authentication.into());
        }
    }

    fn observe_acl(
        &self,
        iqn: &str,
        tag: u16,
        init: &str,
        foreign: &mut Vec<Foreign>,
        sessions: &mut Vec<Session>,
    ) -> Result<Acl, BackendError> {
        let p = self.paths;
        let authn = self.read(&p.acl_attrib(iqn, tag, init, "authentication"))?;
        let mut acl = Acl {
            auth: Some(self.read_creds(&p.acl(iqn, tag, init).join("auth"))?),
            authentication: match authn.trim() {
                "0" => Some(false),
                "1" => Some(true),
                _ => None,
            },
            mapped: BTreeMap::new(),
            attributes: self.defaulted(&p.acl(iqn, tag, init), ACL_DEFAULTED),
            extra: BTreeMap::new(),
            origin: None,
        };
        let info = self.read(&p.acl_file(iqn, tag, init, "info"))?;
        if let Some(mut s) = parse_acl_info(&info, iqn, tag) {
            self.session_details(iqn, tag, init, &acl, &mut s);
            sessions.push(s);
        }
        for dir in self.dirs(&p.acl(iqn, tag, init))? {
            if matches!(
                dir.as_str(),
                "attrib" | "auth" | "param" | "fabric_statistics"
            ) {
                continue;
            }
            let Some(m) = canonical_lun(&dir) else {
                foreign.push(Foreign {
                    path: format!("iscsi/{iqn}/tpgt_{tag}/acls/{init}/{dir}"),
                    what: "a mapped LUN directory not named lun_<decimal>".into(),
                    parent: Some(ObjectId::Acl {
                        target: iqn.to_string(),
                        tag,
                        initiator: init.to_string(),
                    }),
                });
                continue;
            };
            let mdir = p.mapped_lun(iqn, tag, init, m);
            let mut ml = MappedLun {
                tpg_lun: None,
                write_protect: None,
                link: None,
            };
            if let Some(link) = self.links(&mdir)?.into_iter().next() {
                let lp = mdir.join(&link);
                let target = self.fs.read_link(&lp).map_err(|e| io_err(p, &lp, e))?;
                if let Some(c) = p.resolve_link(&lp, &target) {
                    if c.len() == 5 && c[0] == "iscsi" && c[1] == iqn && c[3] == "lun" {
                        ml.tpg_lun = canonical_lun(&c[4]);
                    }
                }
                ml.link = Some(link);
            }
            // Empty while the mapping has no live TPG LUN behind it (§4.2).
            let wp = self.read(&mdir.join("write_protect"))?;
            ml.write_protect = match wp.trim() {
                "1" => Some(true),
                "0" => Some(false),
                _ => None,
            };
            acl.mapped.insert(m, ml);
        }
        if self.scope == ObserveScope::Full {
            let tagv = self.read(&p.acl_file(iqn, tag, init, "tag"))?;
            if !tagv.is_empty() {
                acl.extra.insert("tag".into(), tagv);
            }
            let depth = self.read_opt(&p.acl_file(iqn, tag, init, "cmdsn_depth"));
            let tdepth = self.read_opt(&p.tpg_attrib(iqn, tag, "default_cmdsn_depth"));
            if let (Some(d), Some(t)) = (depth, tdepth) {
                if d.trim() != t.trim() {
                    acl.extra.insert("cmdsn_depth".into(), d.trim().to_string());
                }
            }
        }
        Ok(acl)
    }
}

/// `lun_<decimal>` (no other spelling is managed).
pub fn canonical_lun(dir: &str) -> Option<u64> {
    let n: u64 = dir.strip_prefix("lun_")?.parse().ok()?;
    (format!("lun_{n}") == dir).then_some(n)
}

/// fileio `info`: `... File: <path>  Size: <n>  Mode: ...` (§2.2).
pub fn parse_fileio_info(info: &str) -> (String, u64) {
    let after = info.split_once("File: ").map(|x| x.1).unwrap_or("");
    let (path, rest) = after.split_once("  Size: ").unwrap_or((after, ""));
    let size = rest
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (path.trim().to_string(), size)
}

/// iblock `info`: `... UDEV PATH: <dev>  readonly: <0|1>` (§2.2).
pub fn parse_iblock_info(info: &str) -> (String, bool) {
    let dev = info
        .split_once("UDEV PATH: ")
        .map(|x| x.1)
        .and_then(|r| r.split("  readonly:").next())
        .unwrap_or("")
        .trim()
        .to_string();
    let ro = info
        .split_once("readonly: ")
        .map(|x| x.1.starts_with('1'))
        .unwrap_or(false);
    (dev, ro)
}

/// rd_mcp `info`: `PAGES/PAGE_SIZE: <n>*4096 ... nullio: <0|1>` (§2.2).
pub fn parse_rd_info(info: &str) -> (u64, bool) {
    let pages = info
        .split_once("PAGES/PAGE_SIZE: ")
        .and_then(|x| x.1.split('*').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let nullio = info
        .split_once("nullio: ")
        .map(|x| x.1.starts_with('1'))
        .unwrap_or(false);
    (pages, nullio)
}

/// `dynamic_sessions`: one initiator per line, each line followed by a NUL (§6).
pub fn parse_dynamic_sessions(s: &str) -> Vec<String> {
    s.split(['\n', '\0'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// ACL `info` with a live session (grammar in docs/configfs.md §6); `None` for
/// `No active iSCSI Session ...`.
pub fn parse_acl_info(info: &str, target: &str, tag: u16) -> Option<Session> {
    if info.starts_with("No active") || info.trim().is_empty() {
        return None;
    }
    let mut s = Session {
        target: target.to_string(),
        tpg: tag,
        initiator: String::new(),
        dynamic: false,
        alias: None,
        isid: None,
        tsih: None,
        session_id: None,
        session_type: None,
        state: None,
        connections: vec![],
        ..Session::default()
    };
    let mut lines = info.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(v) = line.strip_prefix("InitiatorName: ") {
            s.initiator = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("InitiatorAlias:") {
            let v = v.trim();
            s.alias = (!v.is_empty()).then(|| v.to_string());
        } else if line.starts_with("LIO Session ID:") {
            let field =
                |key: &str| -> Option<&str> { line.split_once(key).map(|x| x.1.trim_start()) };
            s.session_id = field("LIO Session ID:")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok());
            if let Some(r) = field("ISID:") {
                let hex: String = r
                    .split("TSIH:")
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .map(|b| b.trim_start_matches("0x"))
                    .collect();
                s.isid = Some(hex);
            }
            s.tsih = field("TSIH:")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok());
            s.session_type = field("SessionType:")
                .and_then(|r| r.split_whitespace().next())
                .map(str::to_string);
        } else if let Some(v) = line.strip_prefix("Session State: ") {
            s.state = Some(v.trim().to_string());
        } else if let Some(r) = line.strip_prefix("CID: ") {
            let cid = r
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let state = r
                .split_once("Connection State: ")
                .map(|x| x.1.trim().to_string())
                .unwrap_or_default();
            let (mut address, mut transport) = (String::new(), String::new());
            if let Some(next) = lines.peek() {
                if let Some(a) = next.trim_start().strip_prefix("Address ") {
                    let mut it = a.split_whitespace();
                    address = it.next().unwrap_or("").to_string();
                    transport = it.next().unwrap_or("").to_string();
                    lines.next();
                }
            }
            s.connections.push(Connection {
                cid,
                state,
                address,
                transport,
                ..Connection::default()
            });
        }
    }
    if s.initiator.is_empty() {
        return None;
    }
    Some(s)
}

/// Storage-object attributes compared for `export` (fileio/iblock/rd_mcp "sbc"
/// set, defaults after enable, docs/configfs.md §2.4). Managed ones
/// (block_size, is_nonrot) and backend-dependent ones are not listed.
/// The policy attributes (`state::POLICY_ATTRIBUTES`) are observed in every scope, into
/// `Backstore::attributes`; these are the rest.
pub const SO_ATTRIB_DEFAULTS: &[(&str, &str)] = &[
    ("emulate_rest_reord", "0"),
    ("pi_prot_format", "0"),
    ("pi_prot_type", "0"),
    ("pi_prot_verify", "0"),
    ("unmap_zeroes_data", "0"),
];

/// TPG attributes compared for `export` only (§3.3); managed ones and those under the
/// drift rule (`state::TPG_DEFAULTED`, observed into `Tpg::attributes`) are not listed.
pub const TPG_ATTRIB_DEFAULTS: &[(&str, &str)] = &[
    ("default_cmdsn_depth", "64"),
    ("fabric_prot_type", "0"),
    ("prod_mode_write_protect", "0"),
    ("t10_pi", "0"),
    ("tpg_enabled_sendtargets", "1"),
];

/// TPG parameters compared for `export` only (§3.4); `TargetAlias` is managed,
/// `AuthMethod` follows `authentication`, the rest are under the drift rule.
pub const TPG_PARAM_DEFAULTS: &[(&str, &str)] = &[
    ("IFMarkInt", "Reject"),
    ("IFMarker", "No"),
    ("OFMarkInt", "Reject"),
    ("OFMarker", "No"),
];

#[cfg(test)]
mod tests {
    use super::*;

    // Read-backs from the real 6.1 kernel (lio-evidence/run4-transcript.log).
    const FILEIO: &str = "Status: DEACTIVATED  Max Queue Depth: 0  SectorSize: 512  HwMaxSectors: 16384\n        TCM FILEIO ID: 0        File: /tmp/fio0.img  Size: 67108864  Mode: O_DSYNC Async: 0\n";
    const IBLOCK: &str = "Status: DEACTIVATED  Max Queue Depth: 0  SectorSize: 512  HwMaxSectors: 248\n        iBlock device: ram1  UDEV PATH: /dev/ram1  readonly: 1\n        Major: 1 Minor: 1  CLAIMED: IBLOCK\n";
    const RD: &str = "Status: DEACTIVATED  Max Queue Depth: 0  SectorSize: 512  HwMaxSectors: 4294967288\n        TCM RamDisk ID: 0  RamDisk Makeup: rd_mcp\n        PAGES/PAGE_SIZE: 262144*4096  SG_table_count: 0  nullio: 1 dummy: 0\n";
    const ACL_INFO: &str = "InitiatorName: iqn.1994-05.com.example:client1\nInitiatorAlias: \nLIO Session ID: 1   ISID: 0x80 4c 37 c5 00 00  TSIH: 1  SessionType: Normal\nSession State: TARG_SESS_STATE_LOGGED_IN\n---------------------[iSCSI Session Values]-----------------------\n  CmdSN/WR  :  CmdSN/WC  :  ExpCmdSN  :  MaxCmdSN  :     ITT    :     TTT\n 0x00000020   0x0000001d   0x62c1880c   0x62c18828   0x7097b27f   0x0000c9f6\n----------------------[iSCSI Connections]-------------------------\nCID: 0  Connection State: TARG_CONN_STATE_LOGGED_IN\n   Address 10.0.2.2 TCP  StatSN: 0x93904068\n";

    #[test]
    fn parses_backstore_info() {
        assert_eq!(
            parse_fileio_info(FILEIO),
            ("/tmp/fio0.img".to_string(), 67108864)
        );
        assert_eq!(parse_iblock_info(IBLOCK), ("/dev/ram1".to_string(), true));
        assert_eq!(parse_rd_info(RD), (262144, true));
    }

    #[test]
    fn parses_sessions() {
        let s = parse_acl_info(ACL_INFO, "iqn.t", 1).unwrap();
        assert_eq!(s.initiator, "iqn.1994-05.com.example:client1");
        assert_eq!(s.isid.as_deref(), Some("804c37c50000"));
        assert_eq!(s.tsih, Some(1));
        assert_eq!(s.session_id, Some(1));
        assert_eq!(s.session_type.as_deref(), Some("Normal"));
        assert_eq!(s.alias, None);
        assert_eq!(s.connections.len(), 1);
        assert_eq!(s.connections[0].address, "10.0.2.2");
        assert_eq!(s.connections[0].state, "TARG_CONN_STATE_LOGGED_IN");
        assert!(parse_acl_info(
            "No active iSCSI Session for Initiator Endpoint: iqn.x\n",
            "t",
            1
        )
        .is_none());
        assert_eq!(
            parse_dynamic_sessions("iqn.1994-05.com.example:dyn1\n\0iqn.b\n\0"),
            vec!["iqn.1994-05.com.example:dyn1", "iqn.b"]
        );
    }

    #[test]
    fn hba_plugins_and_lun_names() {
        assert_eq!(hba_plugin("rd_mcp_3"), Some("rd_mcp"));
        assert_eq!(hba_plugin("fileio_0x10"), Some("fileio"));
        assert_eq!(hba_plugin("iblock_2"), Some("iblock"));
        assert_eq!(hba_plugin("foo"), None);
        assert_eq!(canonical_lun("lun_7"), Some(7));
        assert_eq!(canonical_lun("lun_07"), None);
        assert_eq!(canonical_lun("lun_0x1"), None);
    }
}
