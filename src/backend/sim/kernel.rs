//! The simulated kernel: the configfs tree and the rules the real kernel applies to
//! it. Paths are relative to the root (`core/fileio_0/lun0`). Errors are errnos.
//! Section numbers refer to docs/configfs.md.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use libc::{
    EACCES, EBUSY, EEXIST, EFAULT, EINVAL, EISDIR, ENODEV, ENOENT, ENOSYS, ENOTDIR, ENOTEMPTY,
    EOPNOTSUPP, EOVERFLOW, EPERM,
};
use serde::{Deserialize, Serialize};

use super::OpKind;
use crate::backend::lio::{DirEntry, EntryKind};

type R<T> = Result<T, i32>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) enum Node {
    /// `user`: created by mkdir (removable), else a default group (§1).
    Dir {
        user: bool,
    },
    File {
        mode: u16,
        data: Vec<u8>,
    },
    /// Target path relative to the root.
    Link {
        target: String,
    },
}

/// Per storage object state beyond its files.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct SoState {
    pub plugin: String,
    /// Accumulated `control` keys (§2.1 step 2).
    pub control: BTreeMap<String, String>,
    pub enabled: bool,
    /// The plugin's device id within its HBA (`TCM FILEIO ID`, `TCM RamDisk ID`): the
    /// HBA's counter of objects ever enabled in it (VM tree check: an object deleted and
    /// created again in the same HBA gets id 1).
    #[serde(default)]
    pub dev_id: u32,
}

/// A mapped LUN's kernel state: it dies when its TPG LUN loses its backstore link
/// and re-linking the LUN does not revive it (§4.2).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct MappedState {
    pub alive: bool,
    pub write_protect: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SimDevice {
    pub logical_block_size: u32,
    pub rotational: bool,
    /// Device number, shown in an iblock object's `info` (`/dev/ramN` is 1:N).
    #[serde(default)]
    pub major: u32,
    #[serde(default)]
    pub minor: u32,
}

/// A logged-in session (injected by tests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimSession {
    pub target: String,
    pub tag: u16,
    pub initiator: String,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub session_id: u32,
    pub address: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Kernel {
    pub nodes: BTreeMap<String, Node>,
    /// Link target → link paths (for EBUSY and dead mappings).
    pub backrefs: BTreeMap<String, BTreeSet<String>>,
    pub objects: BTreeMap<String, SoState>,
    /// Mapped LUN dir → state (present while it has a link).
    pub mapped: BTreeMap<String, MappedState>,
    pub hba_index: u32,
    pub host_files: BTreeMap<PathBuf, u64>,
    pub host_dirs: BTreeSet<PathBuf>,
    pub devices: BTreeMap<PathBuf, SimDevice>,
    pub sessions: Vec<SimSession>,
    pub next_session: u32,
    pub counts: BTreeMap<OpKind, u64>,
    /// Portal directory → (target, address): the listeners, for conflict checks.
    #[serde(default)]
    pub portals: BTreeMap<String, (String, SocketAddr)>,
    /// Storage objects in `default_lu_gp`, in the order they were enabled: the kernel
    /// adds an object when it is configured and lists members in that order (VM
    /// transcript).
    #[serde(default)]
    pub lu_gp_members: Vec<String>,
    /// HBA directory → how many objects have been enabled in it (the next device id).
    #[serde(default)]
    pub hba_dev_ids: BTreeMap<String, u32>,
}

fn comps(rel: &str) -> Vec<&str> {
    if rel.is_empty() {
        vec![]
    } else {
        rel.split('/').collect()
    }
}

fn parent_of(rel: &str) -> (&str, &str) {
    match rel.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", rel),
    }
}

fn prefix(rel: &str) -> String {
    if rel.is_empty() {
        String::new()
    } else {
        format!("{rel}/")
    }
}

/// kstrtou* with base 0: `0x` hex, leading `0` octal, else decimal (§2, §3.1).
fn parse_auto(s: &str) -> Option<u64> {
    let s = s.strip_suffix('\n').unwrap_or(s);
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if s.len() > 1 && s.starts_with('0') {
        u64::from_str_radix(&s[1..], 8).ok()
    } else {
        s.parse().ok()
    }
}

/// kstrtou32 base 10 with one optional trailing newline (TPG/ACL attributes §3.3).
fn parse_u32(s: &str) -> R<u32> {
    s.strip_suffix('\n')
        .unwrap_or(s)
        .parse()
        .map_err(|_| EINVAL)
}

/// The kernel's strtobool (§2.4): `1yYtT` true, `0nNfF` false, `on`/`off`.
fn strtobool(s: &str) -> R<bool> {
    let s = s.trim_end_matches('\n');
    match s.as_bytes().first() {
        Some(b'1' | b'y' | b'Y' | b't' | b'T') => Ok(true),
        Some(b'0' | b'n' | b'N' | b'f' | b'F') => Ok(false),
        Some(b'o' | b'O') => match s.as_bytes().get(1) {
            Some(b'n' | b'N') => Ok(true),
            Some(b'f' | b'F') => Ok(false),
            _ => Err(EINVAL),
        },
        _ => Err(EINVAL),
    }
}

const PLUGINS: [&str; 5] = ["fileio", "iblock", "rd_mcp", "pscsi", "user"];

/// Parse an HBA directory name (§2): plugin up to the first `_`, extended by a
/// second `_`; the id after it, base auto-detected.
fn parse_hba(name: &str) -> R<(String, u64)> {
    let (first, rest) = name.split_once('_').ok_or(EINVAL)?;
    let (plugin, id) = match rest.split_once('_') {
        Some((a, b)) => (format!("{first}_{a}"), b),
        None => (first.to_string(), rest),
    };
    if !PLUGINS.contains(&plugin.as_str()) {
        return Err(EINVAL);
    }
    let id = parse_auto(id).ok_or(EINVAL)?;
    Ok((plugin, id))
}

/// `tpgt_` anywhere in the name, the rest a u16 with base auto-detection (§3.1).
fn parse_tpgt(name: &str) -> R<u16> {
    let i = name.find("tpgt_").ok_or(EINVAL)?;
    let n = parse_auto(&name[i + 5..]).ok_or(EINVAL)?;
    u16::try_from(n).map_err(|_| EINVAL)
}

/// `lun_<N>`: the text after the first `_`, u64 base auto (§3.1).
fn parse_lun(name: &str) -> R<u64> {
    let (_, n) = name.split_once('_').ok_or(EINVAL)?;
    parse_auto(n).ok_or(EINVAL)
}

fn same_listener(a: &SocketAddr, b: &SocketAddr) -> bool {
    crate::state::portals_conflict(a, b)
}

const SO_ATTRIBS: &[(&str, &str, u16)] = &[
    ("alua_support", "1", 0o644),
    ("block_size", "0", 0o644),
    ("emulate_3pc", "1", 0o644),
    ("emulate_caw", "1", 0o644),
    ("emulate_dpo", "1", 0o644),
    ("emulate_fua_read", "1", 0o644),
    ("emulate_fua_write", "1", 0o644),
    ("emulate_model_alias", "0", 0o644),
    ("emulate_pr", "1", 0o644),
    ("emulate_rest_reord", "0", 0o644),
    ("emulate_tas", "1", 0o644),
    ("emulate_tpu", "0", 0o644),
    ("emulate_tpws", "0", 0o644),
    ("emulate_ua_intlck_ctrl", "0", 0o644),
    ("emulate_write_cache", "0", 0o644),
    ("enforce_pr_isids", "1", 0o644),
    ("force_pr_aptpl", "0", 0o644),
    ("hw_block_size", "0", 0o444),
    ("hw_max_sectors", "0", 0o444),
    ("hw_pi_prot_type", "0", 0o444),
    ("hw_queue_depth", "0", 0o444),
    ("is_nonrot", "0", 0o644),
    ("max_unmap_block_desc_count", "0", 0o644),
    ("max_unmap_lba_count", "0", 0o644),
    ("max_write_same_len", "0", 0o644),
    ("optimal_sectors", "0", 0o644),
    ("pgr_support", "1", 0o644),
    ("pi_prot_format", "0", 0o644),
    ("pi_prot_type", "0", 0o644),
    ("pi_prot_verify", "0", 0o644),
    ("queue_depth", "0", 0o644),
    ("unmap_granularity", "0", 0o644),
    ("unmap_granularity_alignment", "0", 0o644),
    ("unmap_zeroes_data", "0", 0o644),
];

/// The passthrough attribute set of pscsi and user (§2.2).
const PASSTHROUGH_ATTRIBS: &[(&str, &str, u16)] = &[
    ("alua_support", "0", 0o644),
    ("emulate_pr", "0", 0o644),
    ("hw_block_size", "0", 0o444),
    ("hw_max_sectors", "0", 0o444),
    ("hw_pi_prot_type", "0", 0o444),
    ("hw_queue_depth", "0", 0o444),
    ("pgr_support", "0", 0o644),
];

/// Refused with EINVAL while a LUN links the object (§2.4 "L").
const FROZEN_ATTRIBS: &[&str] = &[
    "block_size",
    "queue_depth",
    "optimal_sectors",
    "emulate_model_alias",
    "emulate_tas",
    "emulate_ua_intlck_ctrl",
    "force_pr_aptpl",
    "unmap_zeroes_data",
];

const TPG_ATTRIBS: &[(&str, &str, u32, u32)] = &[
    ("authentication", "1", 0, 1),
    ("cache_dynamic_acls", "0", 0, 1),
    ("default_cmdsn_depth", "64", 1, 512),
    ("default_erl", "0", 0, 2),
    ("demo_mode_discovery", "1", 0, 1),
    ("demo_mode_write_protect", "1", 0, 1),
    ("fabric_prot_type", "0", 0, 3),
    ("generate_node_acls", "0", 0, 1),
    ("login_keys_workaround", "1", 0, 1),
    ("login_timeout", "15", 5, 30),
    ("netif_timeout", "2", 2, 15),
    ("prod_mode_write_protect", "0", 0, 1),
    ("t10_pi", "0", 0, 1),
    ("tpg_enabled_sendtargets", "1", 0, 1),
];

const TPG_PARAMS: &[(&str, &str)] = &[
    ("AuthMethod", "CHAP"),
    ("DataDigest", "CRC32C,None"),
    ("DataPDUInOrder", "Yes"),
    ("DataSequenceInOrder", "Yes"),
    ("DefaultTime2Retain", "20"),
    ("DefaultTime2Wait", "2"),
    ("ErrorRecoveryLevel", "0"),
    ("FirstBurstLength", "65536"),
    ("HeaderDigest", "CRC32C,None"),
    ("IFMarkInt", "Reject"),
    ("IFMarker", "No"),
    ("ImmediateData", "Yes"),
    ("InitialR2T", "Yes"),
    ("MaxBurstLength", "262144"),
    ("MaxConnections", "1"),
    ("MaxOutstandingR2T", "1"),
    ("MaxRecvDataSegmentLength", "8192"),
    ("MaxXmitDataSegmentLength", "262144"),
    ("OFMarkInt", "Reject"),
    ("OFMarker", "No"),
    ("TargetAlias", "LIO Target"),
];

const ACL_ATTRIBS: &[(&str, &str, i64, i64)] = &[
    ("authentication", "-1", -1, 1),
    ("dataout_timeout", "3", 2, 60),
    ("dataout_timeout_retries", "5", 1, 15),
    ("default_erl", "0", 0, 2),
    ("nopin_response_timeout", "30", 3, 60),
    ("nopin_timeout", "15", 3, 60),
    ("random_datain_pdu_offsets", "0", 0, 1),
    ("random_datain_seq_offsets", "0", 0, 1),
    ("random_r2t_offsets", "0", 0, 1),
];

const ACL_PARAMS: &[&str] = &[
    "DataPDUInOrder",
    "DataSequenceInOrder",
    "DefaultTime2Retain",
    "DefaultTime2Wait",
    "ErrorRecoveryLevel",
    "FirstBurstLength",
    "ImmediateData",
    "InitialR2T",
    "MaxBurstLength",
    "MaxConnections",
    "MaxOutstandingR2T",
];

const AUTH_FILES: [&str; 4] = ["password", "password_mutual", "userid", "userid_mutual"];

impl Kernel {
    pub fn new() -> Kernel {
        let mut k = Kernel {
            nodes: BTreeMap::new(),
            backrefs: BTreeMap::new(),
            objects: BTreeMap::new(),
            mapped: BTreeMap::new(),
            hba_index: 0,
            host_files: BTreeMap::new(),
            host_dirs: [PathBuf::from("/"), PathBuf::from("/tmp")].into(),
            devices: BTreeMap::new(),
            sessions: Vec::new(),
            next_session: 1,
            counts: BTreeMap::new(),
            portals: BTreeMap::new(),
            lu_gp_members: Vec::new(),
            hba_dev_ids: BTreeMap::new(),
        };
        // What target_core_mod shows right after loading (§1, run4 S0).
        k.dir("", false);
        k.set_release("6.1.0-sim");
        k.file("dbroot", 0o644, "/var/target\n");
        k.dir("core", false);
        k.dir("core/alua", false);
        k.dir("core/alua/lu_gps", false);
        k.dir("core/alua/lu_gps/default_lu_gp", false);
        k.file("core/alua/lu_gps/default_lu_gp/lu_gp_id", 0o644, "0\n");
        k.file("core/alua/lu_gps/default_lu_gp/members", 0o444, "");
        k
    }

    /// The `version` file names the kernel release (§1).
    pub fn set_release(&mut self, release: &str) {
        self.file(
            "version",
            0o444,
            &format!(
                "Target Engine Core ConfigFS Infrastructure v5.0 on Linux/x86_64 on {release}\n"
            ),
        );
    }

    // ------------------------------------------------------------------ tree basics

    fn dir(&mut self, rel: &str, user: bool) {
        self.nodes.insert(rel.to_string(), Node::Dir { user });
    }

    fn file(&mut self, rel: &str, mode: u16, data: &str) {
        self.nodes.insert(
            rel.to_string(),
            Node::File {
                mode,
                data: data.as_bytes().to_vec(),
            },
        );
    }

    fn set(&mut self, rel: &str, data: impl Into<Vec<u8>>) {
        if let Some(Node::File { data: d, .. }) = self.nodes.get_mut(rel) {
            *d = data.into();
        }
    }

    fn get(&self, rel: &str) -> String {
        match self.nodes.get(rel) {
            Some(Node::File { data, .. }) => String::from_utf8_lossy(data).into_owned(),
            _ => String::new(),
        }
    }

    fn get_trim(&self, rel: &str) -> String {
        self.get(rel).trim_end_matches('\n').to_string()
    }

    fn is_user_dir(&self, rel: &str) -> bool {
        matches!(self.nodes.get(rel), Some(Node::Dir { user: true }))
    }

    fn descendants<'a>(&'a self, rel: &str) -> impl Iterator<Item = (&'a String, &'a Node)> + 'a {
        let p = prefix(rel);
        self.nodes
            .range(p.clone()..)
            .take_while(move |(k, _)| k.starts_with(&p))
            .filter(|(k, _)| !k.is_empty())
    }

    fn children(&self, rel: &str) -> Vec<(String, &Node)> {
        let plen = prefix(rel).len();
        self.descendants(rel)
            .filter(|(k, _)| !k[plen..].contains('/'))
            .map(|(k, n)| (k[plen..].to_string(), n))
            .collect()
    }

    fn link_child(&self, rel: &str) -> Option<(String, String)> {
        self.children(rel)
            .into_iter()
            .find_map(|(name, n)| match n {
                Node::Link { target } => Some((name, target.clone())),
                _ => None,
            })
    }

    fn remove_subtree(&mut self, rel: &str) {
        let keys: Vec<String> = self
            .descendants(rel)
            .map(|(k, _)| k.clone())
            .chain(std::iter::once(rel.to_string()))
            .collect();
        for k in keys {
            if let Some(Node::Link { target }) = self.nodes.remove(&k) {
                if let Some(s) = self.backrefs.get_mut(&target) {
                    s.remove(&k);
                    if s.is_empty() {
                        self.backrefs.remove(&target);
                    }
                }
            }
            if self.objects.remove(&k).is_some() {
                self.lu_gp_members.retain(|m| *m != k);
            }
            self.hba_dev_ids.remove(&k);
            self.mapped.remove(&k);
            self.portals.remove(&k);
        }
    }

    /// Number of LUN links to a storage object (its `export_count`, §2.4).
    fn export_count(&self, so: &str) -> usize {
        self.backrefs.get(so).map_or(0, |s| s.len())
    }

    fn tpg_dir(&self, target: &str, tag: u16) -> Option<String> {
        let t = format!("iscsi/{target}");
        self.children(&t)
            .into_iter()
            .filter(|(_, n)| matches!(n, Node::Dir { user: true }))
            .map(|(name, _)| name)
            .find(|name| parse_tpgt(name) == Ok(tag))
            .map(|name| format!("{t}/{name}"))
    }

    fn drop_sessions(&mut self, f: impl Fn(&SimSession) -> bool) {
        self.sessions.retain(|s| !f(s));
    }

    // ------------------------------------------------------------------ mkdir

    pub fn mkdir(&mut self, rel: &str) -> R<()> {
        if rel.is_empty() || self.nodes.contains_key(rel) {
            return Err(EEXIST);
        }
        let (parent, name) = parent_of(rel);
        match self.nodes.get(parent) {
            None => return Err(ENOENT),
            Some(Node::Dir { .. }) => {}
            Some(_) => return Err(ENOTDIR),
        }
        let c = comps(rel);
        if c.contains(&"statistics") || c.contains(&"fabric_statistics") {
            // mkdir under statistics/ → ENOSYS (§1).
            return Err(ENOSYS);
        }
        match c.as_slice() {
            ["iscsi"] => self.mk_iscsi(),
            ["core", "alua", "lu_gps", _] => {
                self.dir(rel, true);
                self.file(&format!("{rel}/lu_gp_id"), 0o644, "");
                self.file(&format!("{rel}/members"), 0o444, "");
                Ok(())
            }
            ["core", hba] => self.mk_hba(hba),
            ["core", hba, _] if *hba != "alua" => self.mk_so(rel, hba),
            ["core", hba, _, "alua", _] if *hba != "alua" => {
                // A user ALUA target port group: its id reads empty until written (§2.6).
                self.dir(rel, true);
                for (f, v) in [
                    ("tg_pt_gp_id", ""),
                    ("alua_access_state", "0\n"),
                    ("alua_access_type", "Implicit and Explicit\n"),
                    ("preferred", "0\n"),
                ] {
                    self.file(&format!("{rel}/{f}"), 0o644, v);
                }
                self.file(&format!("{rel}/members"), 0o444, "");
                Ok(())
            }
            ["iscsi", _] => {
                // Any name shorter than 224 bytes; no IQN syntax check (§3.1).
                if name.len() >= 224 {
                    return Err(EINVAL);
                }
                self.mk_target(rel);
                Ok(())
            }
            ["iscsi", t, g] if *t != "discovery_auth" => {
                parse_tpgt(g)?; // tpgt_0x1 is accepted as tag 1, no duplicate check (§3.1)
                self.mk_tpg(rel);
                Ok(())
            }
            ["iscsi", t, _, "np", addr] => self.mk_portal(rel, t, addr),
            ["iscsi", _, _, "lun", l] => {
                parse_lun(l)?;
                self.dir(rel, true);
                for f in [
                    "alua_tg_pt_gp",
                    "alua_tg_pt_offline",
                    "alua_tg_pt_status",
                    "alua_tg_pt_write_md",
                ] {
                    self.file(&format!("{rel}/{f}"), 0o644, "0\n");
                }
                self.dir(&format!("{rel}/statistics"), false);
                for s in ["scsi_port", "scsi_tgt_port", "scsi_transport"] {
                    self.dir(&format!("{rel}/statistics/{s}"), false);
                }
                Ok(())
            }
            ["iscsi", _, _, "acls", _] => {
                self.mk_acl(rel, parent);
                Ok(())
            }
            ["iscsi", _, _, "acls", _, m] if self.is_user_dir(parent) => {
                parse_lun(m)?;
                self.dir(rel, true);
                self.file(&format!("{rel}/write_protect"), 0o644, "");
                self.dir(&format!("{rel}/statistics"), false);
                for s in ["scsi_auth_intr", "scsi_att_intr_port"] {
                    self.dir(&format!("{rel}/statistics/{s}"), false);
                }
                Ok(())
            }
            // Default groups and everything else do not support mkdir (§1).
            _ => Err(EPERM),
        }
    }

    fn mk_iscsi(&mut self) -> R<()> {
        self.dir("iscsi", true);
        self.file(
            "iscsi/lio_version",
            0o444,
            "Datera Inc. iSCSI Target v4.1.0\n",
        );
        self.file("iscsi/cpus_allowed_list", 0o644, "0\n");
        self.dir("iscsi/discovery_auth", false);
        self.file("iscsi/discovery_auth/authenticate_target", 0o444, "");
        self.file("iscsi/discovery_auth/enforce_discovery_auth", 0o644, "0\n");
        for f in AUTH_FILES {
            self.file(&format!("iscsi/discovery_auth/{f}"), 0o644, "");
        }
        Ok(())
    }

    fn mk_hba(&mut self, name: &str) -> R<()> {
        let (plugin, _) = parse_hba(name)?;
        self.hba_index += 1;
        let rel = format!("core/{name}");
        self.dir(&rel, true);
        // "HBA Index" is a global creation counter, not N (§2).
        self.file(
            &format!("{rel}/hba_info"),
            0o444,
            &format!(
                "HBA Index: {} plugin: {plugin} version: v5.0\n",
                self.hba_index
            ),
        );
        self.file(&format!("{rel}/hba_mode"), 0o644, "0\n");
        Ok(())
    }

    fn mk_so(&mut self, rel: &str, hba: &str) -> R<()> {
        let (plugin, _) = parse_hba(hba)?;
        self.dir(rel, true);
        for (f, mode, v) in [
            ("alias", 0o644, ""),
            ("alua_lu_gp", 0o644, ""),
            ("control", 0o200, ""),
            ("enable", 0o644, "0\n"),
            ("info", 0o444, ""),
            ("lba_map", 0o644, ""),
            ("udev_path", 0o644, ""),
        ] {
            self.file(&format!("{rel}/{f}"), mode, v);
        }
        self.dir(&format!("{rel}/action"), false);
        if plugin == "user" {
            self.file(&format!("{rel}/action/block_dev"), 0o644, "0\n");
            self.file(&format!("{rel}/action/reset_ring"), 0o200, "");
            self.file(&format!("{rel}/action/free_kept_buf"), 0o200, "");
        }
        self.dir(&format!("{rel}/alua"), false);
        let g = format!("{rel}/alua/default_tg_pt_gp");
        self.dir(&g, false);
        for (f, v) in [
            ("alua_access_state", "0\n"),
            ("alua_access_status", "None\n"),
            ("alua_access_type", "Implicit and Explicit\n"),
            ("alua_support_active_nonoptimized", "1\n"),
            ("alua_support_active_optimized", "1\n"),
            ("alua_support_lba_dependent", "0\n"),
            ("alua_support_offline", "1\n"),
            ("alua_support_standby", "1\n"),
            ("alua_support_transitioning", "1\n"),
            ("alua_support_unavailable", "1\n"),
            ("alua_write_metadata", "0\n"),
            ("implicit_trans_secs", "0\n"),
            ("nonop_delay_msecs", "100\n"),
            ("preferred", "0\n"),
            ("tg_pt_gp_id", "0\n"),
            ("trans_delay_msecs", "0\n"),
        ] {
            self.file(&format!("{g}/{f}"), 0o644, v);
        }
        self.file(&format!("{g}/members"), 0o444, "");
        self.dir(&format!("{rel}/attrib"), false);
        let attribs = if plugin == "pscsi" || plugin == "user" {
            PASSTHROUGH_ATTRIBS
        } else {
            SO_ATTRIBS
        };
        for (a, v, mode) in attribs {
            self.file(&format!("{rel}/attrib/{a}"), *mode, &format!("{v}\n"));
        }
        self.dir(&format!("{rel}/pr"), false);
        for (f, v) in [
            ("res_aptpl_active", "APTPL Bit Status: Disabled\n"),
            ("res_holder", "No SPC-3 Reservation holder\n"),
            ("res_pr_all_tgt_pts", "No SPC-3 Reservation holder\n"),
            ("res_pr_generation", "0x00000000\n"),
            ("res_pr_holder_tg_port", "No SPC-3 Reservation holder\n"),
            ("res_pr_registered_i_pts", "SPC-3 PR Registrations:\nNone\n"),
            ("res_pr_type", "No SPC-3 Reservation holder\n"),
            ("res_type", "SPC3_PERSISTENT_RESERVATIONS\n"),
        ] {
            self.file(&format!("{rel}/pr/{f}"), 0o444, v);
        }
        self.file(
            &format!("{rel}/pr/res_aptpl_metadata"),
            0o644,
            "Ready to process PR APTPL metadata..\n",
        );
        self.dir(&format!("{rel}/statistics"), false);
        for s in ["scsi_dev", "scsi_lu", "scsi_tgt_dev"] {
            self.dir(&format!("{rel}/statistics/{s}"), false);
        }
        self.file(
            &format!("{rel}/statistics/scsi_dev/role"),
            0o444,
            "Target\n",
        );
        self.dir(&format!("{rel}/wwn"), false);
        let product = match plugin.as_str() {
            "fileio" => "FILEIO",
            "iblock" => "IBLOCK",
            "rd_mcp" => "RAMDISK-MCP",
            "pscsi" => "PSCSI",
            _ => "TCMU device",
        };
        for (f, mode, v) in [
            ("company_id", 0o644, "0x001405\n".to_string()),
            ("product_id", 0o644, format!("{product}\n")),
            ("revision", 0o644, "4.0\n".to_string()),
            ("vendor_id", 0o644, "LIO-ORG\n".to_string()),
            ("vpd_assoc_logical_unit", 0o444, String::new()),
            ("vpd_assoc_scsi_target_device", 0o444, String::new()),
            ("vpd_assoc_target_port", 0o444, String::new()),
            ("vpd_protocol_identifier", 0o444, String::new()),
            // Stored raw; reads as "T10 VPD Unit Serial Number: <s>\n" (§2.3).
            ("vpd_unit_serial", 0o644, String::new()),
        ] {
            self.file(&format!("{rel}/wwn/{f}"), mode, &v);
        }
        self.objects.insert(
            rel.to_string(),
            SoState {
                plugin,
                control: BTreeMap::new(),
                enabled: false,
                dev_id: 0,
            },
        );
        Ok(())
    }

    fn mk_target(&mut self, rel: &str) {
        self.dir(rel, true);
        self.dir(&format!("{rel}/param"), false);
        self.file(
            &format!("{rel}/param/cmd_completion_affinity"),
            0o644,
            "-1\n",
        );
        self.dir(&format!("{rel}/fabric_statistics"), false);
        for s in [
            "iscsi_instance",
            "iscsi_login_stats",
            "iscsi_logout_stats",
            "iscsi_sess_err",
            "iscsi_tgt_attr",
        ] {
            self.dir(&format!("{rel}/fabric_statistics/{s}"), false);
        }
        self.file(
            &format!("{rel}/fabric_statistics/iscsi_instance/sessions"),
            0o444,
            "0\n",
        );
    }

    fn mk_tpg(&mut self, rel: &str) {
        self.dir(rel, true);
        self.file(&format!("{rel}/enable"), 0o644, "0\n");
        self.file(&format!("{rel}/dynamic_sessions"), 0o444, "");
        for d in ["acls", "attrib", "auth", "lun", "np", "param"] {
            self.dir(&format!("{rel}/{d}"), false);
        }
        for (a, v, _, _) in TPG_ATTRIBS {
            self.file(&format!("{rel}/attrib/{a}"), 0o644, &format!("{v}\n"));
        }
        self.file(&format!("{rel}/auth/authenticate_target"), 0o444, "");
        for f in AUTH_FILES {
            self.file(&format!("{rel}/auth/{f}"), 0o644, "");
        }
        for (p, v) in TPG_PARAMS {
            self.file(&format!("{rel}/param/{p}"), 0o644, &format!("{v}\n"));
        }
    }

    fn mk_portal(&mut self, rel: &str, target: &str, name: &str) -> R<()> {
        // Kept verbatim as the directory name (§3.1); all failures are EINVAL (§1).
        let addr: SocketAddr = name.parse().map_err(|_| EINVAL)?;
        let mut here = false;
        let mut wild_elsewhere = false;
        let mut specific_elsewhere = false;
        for (t, other) in self.portals.values() {
            // Same listener in any TPG of the same target → EINVAL (§3.2).
            if t == target && same_listener(&addr, other) {
                here = true;
            }
            if other.port() == addr.port() {
                if other.ip().is_unspecified() {
                    wild_elsewhere = true;
                } else if other.ip() != addr.ip() {
                    specific_elsewhere = true;
                }
            }
        }
        if here {
            return Err(EINVAL);
        }
        // A specific address on a port with a wildcard listener (or the reverse)
        // fails in kernel_bind() with EADDRINUSE → EINVAL (§3.2).
        if (!addr.ip().is_unspecified() && wild_elsewhere)
            || (addr.ip().is_unspecified() && specific_elsewhere)
        {
            return Err(EINVAL);
        }
        self.dir(rel, true);
        self.portals
            .insert(rel.to_string(), (target.to_string(), addr));
        self.file(&format!("{rel}/iser"), 0o644, "0\n");
        self.file(&format!("{rel}/cxgbit"), 0o644, "0\n");
        Ok(())
    }

    fn mk_acl(&mut self, rel: &str, acls_dir: &str) {
        let tpg = parent_of(acls_dir).0.to_string();
        self.dir(rel, true);
        self.dir(&format!("{rel}/attrib"), false);
        for (a, v, _, _) in ACL_ATTRIBS {
            self.file(&format!("{rel}/attrib/{a}"), 0o644, &format!("{v}\n"));
        }
        self.dir(&format!("{rel}/auth"), false);
        self.file(&format!("{rel}/auth/authenticate_target"), 0o444, "");
        for f in AUTH_FILES {
            self.file(&format!("{rel}/auth/{f}"), 0o644, "");
        }
        // Initial cmdsn_depth = the TPG's default_cmdsn_depth (§3.6).
        let depth = self.get(&format!("{tpg}/attrib/default_cmdsn_depth"));
        self.file(&format!("{rel}/cmdsn_depth"), 0o644, &depth);
        self.file(&format!("{rel}/info"), 0o444, "");
        self.file(&format!("{rel}/tag"), 0o644, "");
        self.dir(&format!("{rel}/param"), false);
        for p in ACL_PARAMS {
            self.file(
                &format!("{rel}/param/{p}"),
                0o444,
                "No Active iSCSI Session\n",
            );
        }
        self.dir(&format!("{rel}/fabric_statistics"), false);
        self.dir(&format!("{rel}/fabric_statistics/iscsi_sess_stats"), false);
        self.file(
            &format!("{rel}/fabric_statistics/iscsi_sess_stats/inst"),
            0o444,
            "0\n",
        );
    }

    // ------------------------------------------------------------------ rmdir

    pub fn rmdir(&mut self, rel: &str) -> R<()> {
        match self.nodes.get(rel) {
            None => return Err(ENOENT),
            // Default groups cannot be removed (§1).
            Some(Node::Dir { user: false }) => return Err(EPERM),
            Some(Node::Dir { user: true }) => {}
            Some(_) => return Err(ENOTDIR),
        }
        // Order of checks (§1): EBUSY when a symlink points here, then ENOTEMPTY
        // for user-created children or symlinks anywhere below.
        if self.backrefs.get(rel).is_some_and(|s| !s.is_empty()) {
            return Err(EBUSY);
        }
        if self
            .descendants(rel)
            .any(|(_, n)| matches!(n, Node::Dir { user: true } | Node::Link { .. }))
        {
            return Err(ENOTEMPTY);
        }
        let c: Vec<String> = comps(rel).into_iter().map(str::to_string).collect();
        match c.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            // Removing an enabled TPG disables it first: its sessions drop (§4.2).
            ["iscsi", t, g] => {
                if let Ok(tag) = parse_tpgt(g) {
                    let t = t.to_string();
                    self.drop_sessions(|s| s.target == t && s.tag == tag);
                }
            }
            ["iscsi", t] => {
                let t = t.to_string();
                self.drop_sessions(|s| s.target == t);
            }
            // rmdir of an ACL drops that initiator's sessions (§6).
            ["iscsi", t, g, "acls", i] => {
                if let Ok(tag) = parse_tpgt(g) {
                    let (t, i) = (t.to_string(), i.to_string());
                    self.drop_sessions(|s| s.target == t && s.tag == tag && s.initiator == i);
                }
            }
            _ => {}
        }
        self.remove_subtree(rel);
        Ok(())
    }

    // ------------------------------------------------------------------ symlinks

    pub fn symlink(&mut self, target: &str, link: &str) -> R<()> {
        let (parent, _) = parent_of(link);
        match self.nodes.get(parent) {
            None => return Err(ENOENT),
            Some(Node::Dir { .. }) => {}
            Some(_) => return Err(ENOTDIR),
        }
        if self.nodes.contains_key(link) {
            return Err(EEXIST);
        }
        let pc = comps(parent);
        let tc = comps(target);
        match pc.as_slice() {
            ["iscsi", _, _, "lun", _] if self.is_user_dir(parent) => {
                // A second link in the same LUN dir → EEXIST (§1).
                if self.link_child(parent).is_some() {
                    return Err(EEXIST);
                }
                match self.objects.get(target) {
                    // Not enabled: "se_device not configured yet" → ENODEV (§4.1).
                    Some(so) if !so.enabled => return Err(ENODEV),
                    Some(_) => {}
                    // A configfs dir that is not a storage object → EFAULT (§1).
                    None if self.nodes.contains_key(target) => return Err(EFAULT),
                    None => return Err(ENOENT),
                }
            }
            ["iscsi", t, g, "acls", _, _] if self.is_user_dir(parent) => {
                // The kernel's checks in order (VM transcript): the target must be a
                // TPG LUN (anything else → EFAULT), linked to a backstore, of the same
                // target and TPG (EINVAL otherwise, §4.1 step 7); a second link while
                // the mapping is live → EINVAL ("existing explicit se_lun_acl").
                let ["iscsi", t2, g2, "lun", _] = tc.as_slice() else {
                    return Err(if self.nodes.contains_key(target) {
                        EFAULT
                    } else {
                        ENOENT
                    });
                };
                if !self.is_user_dir(target) {
                    return Err(if self.nodes.contains_key(target) {
                        EFAULT
                    } else {
                        ENOENT
                    });
                }
                let Some((_, so)) = self.link_child(target) else {
                    return Err(EINVAL);
                };
                if t2 != t || g2 != g {
                    return Err(EINVAL);
                }
                // A dead mapping keeps its link but has no live entry to collide with:
                // a second link is accepted and makes the mapping live again (VM
                // transcript: both links listed, write_protect "0\n").
                if self.mapped.get(parent).is_some_and(|m| m.alive) {
                    return Err(EINVAL);
                }
                // Initial write_protect: 1 for a read-only iblock or with
                // prod_mode_write_protect=1 (§3.6).
                let ro = self
                    .objects
                    .get(&so)
                    .is_some_and(|s| s.control.get("readonly").is_some_and(|v| v == "1"));
                let tpg = format!("iscsi/{t}/{g}");
                let prod = self.get_trim(&format!("{tpg}/attrib/prod_mode_write_protect")) == "1";
                self.mapped.insert(
                    parent.to_string(),
                    MappedState {
                        alive: true,
                        write_protect: ro || prod,
                    },
                );
            }
            // Symlinks are accepted nowhere else (§1).
            _ => return Err(EPERM),
        }
        self.nodes.insert(
            link.to_string(),
            Node::Link {
                target: target.to_string(),
            },
        );
        self.backrefs
            .entry(target.to_string())
            .or_default()
            .insert(link.to_string());
        Ok(())
    }

    pub fn unlink(&mut self, link: &str) -> R<()> {
        let target = match self.nodes.get(link) {
            None => return Err(ENOENT),
            Some(Node::Dir { .. }) => return Err(EISDIR),
            Some(Node::File { .. }) => return Err(EPERM),
            Some(Node::Link { target }) => target.clone(),
        };
        self.nodes.remove(link);
        if let Some(s) = self.backrefs.get_mut(&target) {
            s.remove(link);
            if s.is_empty() {
                self.backrefs.remove(&target);
            }
        }
        let (parent, _) = parent_of(link);
        match comps(parent).as_slice() {
            // Unlinking a LUN's backstore kills every mapping of it; the mapping
            // symlinks stay (§4.2). Never fails (§1).
            ["iscsi", _, _, "lun", _] => {
                let maps: Vec<String> = self
                    .backrefs
                    .get(parent)
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default();
                for m in maps {
                    let mdir = parent_of(&m).0.to_string();
                    if let Some(ms) = self.mapped.get_mut(&mdir) {
                        ms.alive = false;
                    }
                }
            }
            ["iscsi", _, _, "acls", _, _] => {
                self.mapped.remove(parent);
            }
            _ => {}
        }
        Ok(())
    }

    pub fn read_link(&self, rel: &str, root_name: &str) -> R<PathBuf> {
        match self.nodes.get(rel) {
            Some(Node::Link { target }) => {
                // Relative, climbing to the configfs mount (the root's parent) and
                // descending again (§1).
                let depth = comps(parent_of(rel).0).len() + 1;
                let mut s = "../".repeat(depth);
                s.push_str(root_name);
                s.push('/');
                s.push_str(target);
                Ok(PathBuf::from(s))
            }
            Some(_) => Err(EINVAL),
            None => Err(ENOENT),
        }
    }

    /// Permission bits of a node, as lstat(2) reports them (links 0777, default and
    /// user directories 0755).
    pub fn mode(&self, rel: &str) -> R<u32> {
        match self.nodes.get(rel) {
            Some(Node::File { mode, .. }) => Ok(u32::from(*mode)),
            Some(Node::Dir { .. }) => Ok(0o755),
            Some(Node::Link { .. }) => Ok(0o777),
            None => Err(ENOENT),
        }
    }

    pub fn read_dir(&self, rel: &str) -> R<Vec<DirEntry>> {
        match self.nodes.get(rel) {
            Some(Node::Dir { .. }) => {}
            Some(_) => return Err(ENOTDIR),
            None => return Err(ENOENT),
        }
        Ok(self
            .children(rel)
            .into_iter()
            .map(|(name, n)| DirEntry {
                name,
                kind: match n {
                    Node::Dir { .. } => EntryKind::Dir,
                    Node::File { .. } => EntryKind::File,
                    Node::Link { .. } => EntryKind::Symlink,
                },
            })
            .collect())
    }

    // ------------------------------------------------------------------ reads

    pub fn read(&self, rel: &str) -> R<Vec<u8>> {
        let (mode, data) = match self.nodes.get(rel) {
            None => return Err(ENOENT),
            Some(Node::Dir { .. }) | Some(Node::Link { .. }) => return Err(EISDIR),
            Some(Node::File { mode, data }) => (*mode, data),
        };
        // A 0200 file fails at open(O_RDONLY) with EACCES, even for root (§1).
        if mode & 0o444 == 0 {
            return Err(EACCES);
        }
        let c = comps(rel);
        let out = match c.as_slice() {
            ["core", _, _, "info"] => self.so_info(parent_of(rel).0),
            // "<hba>/<object>\n" per member, in the order they were enabled (VM
            // transcript).
            ["core", "alua", "lu_gps", "default_lu_gp", "members"] => self
                .lu_gp_members
                .iter()
                .map(|m| format!("{}\n", m.trim_start_matches("core/")))
                .collect(),
            // The LUNs exporting the object: "iSCSI/<wwn>/tpgt_<tag>/<lun>\n" each with
            // its NUL terminator counted in (core_alua_show_tg_pt_gp_members; VM tree
            // check). The kernel lists them in link order, the simulator by path.
            ["core", _, so, "alua", "default_tg_pt_gp", "members"] => {
                let so = format!("{}/{}/{so}", c[0], c[1]);
                let mut s = String::new();
                for link in self.backrefs.get(&so).into_iter().flatten() {
                    if let ["iscsi", t, g, "lun", lun, _] = comps(link).as_slice() {
                        let tag = parse_tpgt(g).unwrap_or(0);
                        s.push_str(&format!("iSCSI/{t}/tpgt_{tag}/{lun}\n\0"));
                    }
                }
                s
            }
            ["core", _, _, "alua_lu_gp"] => {
                let so = parent_of(rel).0;
                if self.objects.get(so).is_some_and(|s| s.enabled) {
                    "LU Group Alias: default_lu_gp\nLU Group ID: 0\n".to_string()
                } else {
                    String::new()
                }
            }
            ["core", _, _, "wwn", "vpd_unit_serial"] => format!(
                "T10 VPD Unit Serial Number: {}\n",
                String::from_utf8_lossy(data)
            ),
            // Stored minus one trailing newline, read back with one; empty when never
            // set (§2.1 step 3, §8).
            ["core", _, _, "udev_path" | "alias"] => {
                if data.is_empty() {
                    String::new()
                } else {
                    format!("{}\n", String::from_utf8_lossy(data))
                }
            }
            // CHAP values: verbatim + "\n" (§3.5, §8); discovery auth too (VM
            // transcript: an unset `discovery_auth/userid` reads "\n").
            [.., "auth" | "discovery_auth", f] if AUTH_FILES.contains(f) => {
                format!("{}\n", String::from_utf8_lossy(data))
            }
            // authenticate_target = 1 iff both mutual values are set (§3.5).
            [.., "auth" | "discovery_auth", "authenticate_target"] => {
                let dir = parent_of(rel).0;
                let set = |f: &str| {
                    let v = self.get(&format!("{dir}/{f}"));
                    !v.is_empty() && !v.starts_with("NULL")
                };
                format!(
                    "{}\n",
                    u8::from(set("userid_mutual") && set("password_mutual"))
                )
            }
            ["iscsi", t, g, "dynamic_sessions"] => {
                // One line per dynamic session, each followed by a NUL (§6).
                let tag = parse_tpgt(g).unwrap_or(0);
                let tpg = format!("iscsi/{t}/{g}");
                let mut s = String::new();
                for x in &self.sessions {
                    if x.target == *t
                        && x.tag == tag
                        && !self
                            .nodes
                            .contains_key(&format!("{tpg}/acls/{}", x.initiator))
                    {
                        s.push_str(&x.initiator);
                        s.push_str("\n\0");
                    }
                }
                s
            }
            ["iscsi", t, g, "acls", i, "info"] => self.acl_info(t, g, i),
            ["iscsi", _, _, "acls", _, _, "write_protect"] => {
                // Empty while the mapping has no (live) link (§3.6, §4.2).
                match self.mapped.get(parent_of(rel).0) {
                    Some(m) if m.alive => format!("{}\n", u8::from(m.write_protect)),
                    _ => String::new(),
                }
            }
            ["iscsi", _, _, "lun", _, f] if f.starts_with("alua_tg_pt") => {
                // ENODEV while the LUN has no backstore link (§2.6).
                if self.link_child(parent_of(rel).0).is_none() {
                    return Err(ENODEV);
                }
                if *f == "alua_tg_pt_gp" {
                    "TG Port Alias: default_tg_pt_gp\nTG Port Group ID: 0\nTG Port Primary Access State: Active/Optimized\nTG Port Primary Access Status: None\nTG Port Secondary Access State: None\nTG Port Secondary Access Status: None\n".to_string()
                } else {
                    String::from_utf8_lossy(data).into_owned()
                }
            }
            _ => String::from_utf8_lossy(data).into_owned(),
        };
        Ok(out.into_bytes())
    }

    fn so_info(&self, so: &str) -> String {
        let st = self.objects.get(so).cloned().unwrap_or_default();
        let a = |x: &str| self.get_trim(&format!("{so}/attrib/{x}"));
        // ACTIVATED means "exported by ≥1 LUN", not "enabled" (§2.1 step 6).
        let status = if self.export_count(so) > 0 {
            "ACTIVATED"
        } else {
            "DEACTIVATED"
        };
        let mut s = format!(
            "Status: {status}  Max Queue Depth: 0  SectorSize: {}  HwMaxSectors: {}\n",
            a("block_size"),
            a("hw_max_sectors")
        );
        let ctl = |k: &str| st.control.get(k).cloned().unwrap_or_default();
        match st.plugin.as_str() {
            "fileio" => {
                let mode = if ctl("fd_buffered_io") == "1" {
                    "Buffered-WCE"
                } else {
                    "O_DSYNC"
                };
                let size = parse_auto(&ctl("fd_dev_size")).unwrap_or(0);
                s.push_str(&format!(
                    "        TCM FILEIO ID: {}        File: {}  Size: {size}  Mode: {mode} Async: {}\n",
                    st.dev_id,
                    ctl("fd_dev_name"),
                    if ctl("fd_async_io") == "1" { 1 } else { 0 }
                ));
            }
            "iblock" => {
                let dev = ctl("udev_path");
                s.push_str("        ");
                if st.enabled {
                    let base = dev.rsplit('/').next().unwrap_or("");
                    s.push_str(&format!("iBlock device: {base}"));
                }
                if !dev.is_empty() {
                    s.push_str(&format!("  UDEV PATH: {dev}"));
                }
                s.push_str(&format!(
                    "  readonly: {}\n        ",
                    if ctl("readonly") == "1" { 1 } else { 0 }
                ));
                if st.enabled {
                    let (major, minor) = self
                        .devices
                        .get(&PathBuf::from(&dev))
                        .map_or((0, 0), |d| (d.major, d.minor));
                    s.push_str(&format!("Major: {major} Minor: {minor}  CLAIMED: IBLOCK\n"));
                } else {
                    s.push_str("Major: 0 Minor: 0\n");
                }
            }
            "rd_mcp" => {
                let pages = parse_auto(&ctl("rd_pages")).unwrap_or(0);
                let nullio = ctl("rd_nullio") == "1";
                // Pages are held in scatterlist tables of 2048 entries (64 KiB of
                // 32-byte entries) allocated at enable unless nullio; the count is
                // pages / 2048 + 1 (rd_build_device_space; 1024 pages → 1, 65536 → 33:
                // VM transcript and tree check).
                let tables = if st.enabled && !nullio {
                    pages / 2048 + 1
                } else {
                    0
                };
                s.push_str(&format!(
                    "        TCM RamDisk ID: {}  RamDisk Makeup: rd_mcp\n        PAGES/PAGE_SIZE: {pages}*4096  SG_table_count: {tables}  nullio: {} dummy: 0\n",
                    st.dev_id,
                    u8::from(nullio)
                ));
            }
            "pscsi" => s.push_str("        SCSI Device Bus Location: Channel ID: 0 Target ID: 0 LUN: 0 Host ID: 0\n"),
            _ => s.push_str("        Config: NULL Size: 0 MaxDataAreaMB: 1024 DataPagesPerBlk: 1 CmdRingSizeMB: 8\n"),
        }
        s
    }

    fn acl_info(&self, t: &str, g: &str, i: &str) -> String {
        let tag = parse_tpgt(g).unwrap_or(0);
        // Names of 224 bytes or more are truncated to 223 internally (§3.1).
        let shown: String = i.chars().take(223).collect();
        // Only the most recently registered session of the ACL is shown (§6).
        let Some(s) = self
            .sessions
            .iter()
            .filter(|s| s.target == t && s.tag == tag && s.initiator == i)
            .max_by_key(|s| s.session_id)
        else {
            return format!("No active iSCSI Session for Initiator Endpoint: {shown}\n");
        };
        let b = s.isid;
        format!(
            "InitiatorName: {shown}\nInitiatorAlias: \nLIO Session ID: {}   ISID: 0x{:02x} {:02x} {:02x} {:02x} {:02x} {:02x}  TSIH: {}  SessionType: Normal\nSession State: TARG_SESS_STATE_LOGGED_IN\n---------------------[iSCSI Session Values]-----------------------\n  CmdSN/WR  :  CmdSN/WC  :  ExpCmdSN  :  MaxCmdSN  :     ITT    :     TTT\n 0x00000040   0x00000040   0x00000001   0x00000041   0x00000000   0x00000000\n----------------------[iSCSI Connections]-------------------------\nCID: 0  Connection State: TARG_CONN_STATE_LOGGED_IN\n   Address {} TCP  StatSN: 0x00000001\n",
            s.session_id, b[0], b[1], b[2], b[3], b[4], b[5], s.tsih, s.address
        )
    }

    // ------------------------------------------------------------------ writes

    pub fn write(&mut self, rel: &str, value: &[u8]) -> R<()> {
        let mode = match self.nodes.get(rel) {
            None => return Err(ENOENT),
            Some(Node::Dir { .. }) | Some(Node::Link { .. }) => return Err(EISDIR),
            Some(Node::File { mode, .. }) => *mode,
        };
        // A 0444 file fails at open(O_WRONLY) with EACCES (§1).
        if mode & 0o222 == 0 {
            return Err(EACCES);
        }
        let v = String::from_utf8_lossy(value).into_owned();
        let c: Vec<String> = comps(rel).into_iter().map(str::to_string).collect();
        let cs: Vec<&str> = c.iter().map(String::as_str).collect();
        match cs.as_slice() {
            ["dbroot"] => {
                // Writable only while nothing is registered (§1).
                if !self.objects.is_empty() || self.nodes.contains_key("iscsi") {
                    return Err(EINVAL);
                }
                self.set(rel, format!("{}\n", v.trim()));
                Ok(())
            }
            ["core", hba, "hba_mode"] => {
                if !hba.starts_with("pscsi_") {
                    return Err(EINVAL);
                }
                self.set(rel, format!("{}\n", v.trim()));
                Ok(())
            }
            ["core", _, _, "control"] => self.so_control(parent_of(rel).0, &v),
            ["core", _, _, "enable"] => self.so_enable(parent_of(rel).0, &v),
            ["core", _, _, "udev_path" | "alias"] => {
                self.set(rel, v.strip_suffix('\n').unwrap_or(&v).to_string());
                Ok(())
            }
            ["core", _, _, "attrib", a] => {
                let so = format!("{}/{}/{}", cs[0], cs[1], cs[2]);
                self.so_attrib(&so, a, &v)
            }
            ["core", _, _, "wwn", f] => {
                let so = format!("{}/{}/{}", cs[0], cs[1], cs[2]);
                self.so_wwn(&so, f, &v)
            }
            ["iscsi", "discovery_auth", "enforce_discovery_auth"] => {
                let n = parse_u32(&v)?;
                if n > 1 {
                    return Err(EINVAL);
                }
                self.set(rel, format!("{n}\n"));
                Ok(())
            }
            [.., "auth" | "discovery_auth", f] if AUTH_FILES.contains(f) => {
                // TPG auth values are truncated to 255 bytes; ACL and discovery ones
                // of 256 bytes or more are refused (§3.5). Stored verbatim,
                // trailing newline included (§0.1).
                let is_tpg = cs.len() == 5 && cs[0] == "iscsi";
                let mut bytes = value.to_vec();
                if bytes.len() >= 256 {
                    if is_tpg {
                        bytes.truncate(255);
                    } else {
                        return Err(EINVAL);
                    }
                }
                self.set(rel, bytes);
                Ok(())
            }
            ["iscsi", t, g, "enable"] => {
                let on = match v.trim_end_matches('\n') {
                    "1" | "y" | "Y" => true,
                    "0" | "n" | "N" => false,
                    _ => return Err(EINVAL),
                };
                if !on {
                    // enable=0 drops every session of the TPG at once (§6).
                    let tag = parse_tpgt(g).unwrap_or(0);
                    let t = t.to_string();
                    self.drop_sessions(|s| s.target == t && s.tag == tag);
                }
                self.set(rel, format!("{}\n", u8::from(on)));
                Ok(())
            }
            ["iscsi", _, _, "attrib", a] => {
                let tpg = format!("{}/{}/{}", cs[0], cs[1], cs[2]);
                self.tpg_attrib(&tpg, a, &v)
            }
            ["iscsi", _, _, "param", p] => {
                // One trailing whitespace character removed, validated (§3.4).
                let val = v
                    .strip_suffix(|c: char| c.is_whitespace())
                    .unwrap_or(&v)
                    .to_string();
                let ok = match *p {
                    "MaxConnections" | "MaxOutstandingR2T" => {
                        val.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n))
                    }
                    "HeaderDigest" | "DataDigest" => {
                        !val.is_empty() && val.split(',').all(|x| x == "CRC32C" || x == "None")
                    }
                    "InitialR2T"
                    | "ImmediateData"
                    | "DataPDUInOrder"
                    | "DataSequenceInOrder"
                    | "IFMarker"
                    | "OFMarker" => val == "Yes" || val == "No",
                    "ErrorRecoveryLevel" => val.parse::<u32>().is_ok_and(|n| n <= 2),
                    _ => true,
                };
                if !ok {
                    return Err(EINVAL);
                }
                self.set(rel, format!("{val}\n"));
                Ok(())
            }
            ["iscsi", _, _, "np", _, "iser" | "cxgbit"] => {
                let n = parse_u32(&v)?;
                if n > 1 {
                    return Err(EINVAL);
                }
                self.set(rel, format!("{n}\n"));
                Ok(())
            }
            ["iscsi", t, g, "acls", i, "cmdsn_depth"] => {
                let n = parse_u32(&v)?;
                if n > 512 {
                    return Err(EINVAL);
                }
                let n = n.max(1); // 0 is stored as 1 (§3.6)
                if self.get_trim(rel) != n.to_string() {
                    // A different depth forces session reinstatement (§3.6).
                    let tag = parse_tpgt(g).unwrap_or(0);
                    let (t, i) = (t.to_string(), i.to_string());
                    self.drop_sessions(|s| s.target == t && s.tag == tag && s.initiator == i);
                }
                self.set(rel, format!("{n}\n"));
                Ok(())
            }
            ["iscsi", _, _, "acls", _, "tag"] => {
                // Verbatim, no newline on read; 64 bytes or more → EINVAL; NULL
                // clears (§3.6).
                if value.len() >= 64 {
                    return Err(EINVAL);
                }
                if v.starts_with("NULL") {
                    self.set(rel, Vec::new());
                } else {
                    self.set(rel, value.to_vec());
                }
                Ok(())
            }
            ["iscsi", _, _, "acls", _, "attrib", a] => {
                let Some((_, _, lo, hi)) = ACL_ATTRIBS.iter().find(|x| x.0 == *a) else {
                    return Err(EINVAL);
                };
                let n: i64 = v.trim_end_matches('\n').parse().map_err(|_| EINVAL)?;
                if n < *lo || n > *hi {
                    return Err(EINVAL);
                }
                self.set(rel, format!("{n}\n"));
                Ok(())
            }
            ["iscsi", _, _, "acls", _, _, "write_protect"] => {
                let mdir = parent_of(rel).0.to_string();
                let on = match v.trim_end_matches('\n') {
                    "0" => false,
                    "1" => true,
                    _ => return Err(EINVAL),
                };
                // Applies live; without a live mapping there is nothing to flip, and
                // the kernel accepts the write and ignores it (VM transcript: the
                // value still reads empty, and a re-created mapping starts afresh).
                if let Some(m) = self.mapped.get_mut(&mdir).filter(|m| m.alive) {
                    m.write_protect = on;
                }
                Ok(())
            }
            ["iscsi", _, _, "lun", _, f] if f.starts_with("alua_tg_pt") => {
                if self.link_child(parent_of(rel).0).is_none() {
                    return Err(ENODEV);
                }
                self.set(rel, format!("{}\n", v.trim()));
                Ok(())
            }
            _ => {
                self.set(rel, format!("{}\n", v.trim_end_matches('\n')));
                Ok(())
            }
        }
    }

    /// `control`: split on `,` and `\n`, `key=value` tokens accumulate; unknown
    /// keys and unparsable values are silently ignored (§2.1 step 2, §2.2).
    fn so_control(&mut self, so: &str, v: &str) -> R<()> {
        let st = self.objects.get(so).cloned().ok_or(ENOENT)?;
        let mut control = st.control.clone();
        for tok in v.split([',', '\n']).filter(|t| !t.is_empty()) {
            let Some((k, val)) = tok.split_once('=') else {
                continue;
            };
            match (st.plugin.as_str(), k) {
                ("fileio", "fd_dev_name") => {
                    control.insert(k.into(), val.into());
                }
                // Rewritable after enable; takes effect at once (§2.2).
                ("fileio", "fd_dev_size") if parse_auto(val).is_some() => {
                    control.insert(k.into(), val.into());
                }
                ("fileio", "fd_buffered_io" | "fd_async_io") => {
                    // Only 1 is accepted (§2.2).
                    if val != "1" {
                        return Err(EINVAL);
                    }
                    control.insert(k.into(), val.into());
                }
                ("iblock", "udev_path") => {
                    // After enable → EEXIST (§2.2).
                    if st.enabled {
                        return Err(EEXIST);
                    }
                    control.insert(k.into(), val.into());
                }
                ("iblock", "readonly") => {
                    if let Some(n) = parse_auto(val) {
                        control.insert(k.into(), if n == 0 { "0" } else { "1" }.into());
                    }
                }
                ("rd_mcp", "rd_pages") if parse_auto(val).is_some() => {
                    control.insert(k.into(), val.into());
                }
                ("rd_mcp", "rd_nullio" | "rd_dummy") if val == "1" => {
                    control.insert(k.into(), val.into());
                }
                ("pscsi" | "user", _) => {
                    control.insert(k.into(), val.into());
                }
                _ => {}
            }
        }
        if let Some(s) = self.objects.get_mut(so) {
            s.control = control;
        }
        Ok(())
    }

    /// The enable protocol (§2.1 step 4): needs a `1` somewhere in the value,
    /// EEXIST when enabled, EINVAL without the plugin's required keys; resets
    /// block_size/queue_depth/optimal_sectors to the hardware values.
    fn so_enable(&mut self, so: &str, v: &str) -> R<()> {
        if !v.contains('1') {
            return Err(EINVAL);
        }
        let st = self.objects.get(so).cloned().ok_or(ENOENT)?;
        if st.enabled {
            return Err(EEXIST);
        }
        let ctl = |k: &str| st.control.get(k).cloned();
        let (hw_bs, hw_max, nonrot): (u32, u64, bool);
        let mut unmap = false;
        match st.plugin.as_str() {
            "fileio" => {
                let name = ctl("fd_dev_name").ok_or(EINVAL)?;
                let path = PathBuf::from(&name);
                if let Some(d) = self.devices.get(&path) {
                    hw_bs = d.logical_block_size;
                    nonrot = !d.rotational;
                } else {
                    // Regular files need fd_dev_size; the kernel creates a missing
                    // file (size 0) and never sizes it (§2.2).
                    ctl("fd_dev_size").ok_or(EINVAL)?;
                    if !self.host_files.contains_key(&path) {
                        if !path.parent().is_some_and(|p| self.host_dirs.contains(p)) {
                            return Err(ENOENT);
                        }
                        self.host_files.insert(path, 0);
                    }
                    hw_bs = 512;
                    nonrot = false;
                    unmap = true;
                }
                hw_max = 16384;
            }
            "iblock" => {
                let dev = PathBuf::from(ctl("udev_path").ok_or(EINVAL)?);
                let d = self.devices.get(&dev).cloned().ok_or(ENOENT)?;
                // An exclusive open: a device another iblock holds → EBUSY (§2.2).
                let claimed = self.objects.iter().any(|(k, o)| {
                    k != so
                        && o.enabled
                        && o.plugin == "iblock"
                        && o.control.get("udev_path").map(PathBuf::from) == Some(dev.clone())
                });
                if claimed {
                    return Err(EBUSY);
                }
                hw_bs = d.logical_block_size;
                hw_max = 248;
                nonrot = !d.rotational;
            }
            "rd_mcp" => {
                ctl("rd_pages").ok_or(EINVAL)?;
                hw_bs = 512;
                hw_max = 4294967288;
                nonrot = true;
            }
            _ => {
                hw_bs = 512;
                hw_max = 4294967288;
                nonrot = false;
            }
        }
        let a = |x: &str| format!("{so}/attrib/{x}");
        if st.plugin != "pscsi" && st.plugin != "user" {
            // Attributes written before enable are overwritten here (§2.1 step 5).
            self.set(&a("block_size"), format!("{hw_bs}\n"));
            self.set(&a("queue_depth"), "128\n");
            self.set(&a("optimal_sectors"), format!("{hw_max}\n"));
            self.set(&a("is_nonrot"), format!("{}\n", u8::from(nonrot)));
            if unmap {
                // fileio on a regular file: UNMAP limited to 8k LBAs, granularity 1,
                // WRITE SAME limited to 4k LBAs (fd_configure_device; VM tree check).
                self.set(&a("max_unmap_lba_count"), "8192\n");
                self.set(&a("max_unmap_block_desc_count"), "1\n");
                self.set(&a("unmap_granularity"), "1\n");
                self.set(&a("max_write_same_len"), "4096\n");
            }
            if st.plugin == "iblock" {
                // iblock_configure_device: WRITE SAME up to 0xFFFF LBAs (VM tree check).
                self.set(&a("max_write_same_len"), "65535\n");
            }
            if ctl("fd_buffered_io").as_deref() == Some("1") {
                // fd_buffered_io=1 forces emulate_write_cache=1 (§2.2).
                self.set(&a("emulate_write_cache"), "1\n");
            }
        }
        self.set(&a("hw_block_size"), format!("{hw_bs}\n"));
        self.set(&a("hw_max_sectors"), format!("{hw_max}\n"));
        self.set(&a("hw_queue_depth"), "128\n");
        self.set(&format!("{so}/enable"), "1\n");
        let counter = self
            .hba_dev_ids
            .entry(parent_of(so).0.to_string())
            .or_default();
        let dev_id = *counter;
        *counter += 1;
        if let Some(s) = self.objects.get_mut(so) {
            s.enabled = true;
            s.dev_id = dev_id;
        }
        self.lu_gp_members.push(so.to_string());
        Ok(())
    }

    fn so_attrib(&mut self, so: &str, a: &str, v: &str) -> R<()> {
        let st = self.objects.get(so).cloned().ok_or(ENOENT)?;
        let rel = format!("{so}/attrib/{a}");
        if FROZEN_ATTRIBS.contains(&a) && self.export_count(so) > 0 {
            // "Unable to change SE Device <x> while export_count is N" (§2.4).
            return Err(EINVAL);
        }
        let store = |k: &mut Kernel, n: u64| {
            k.set(&rel, format!("{n}\n"));
            Ok(())
        };
        match a {
            "block_size" => {
                let n = parse_u32(v)?;
                if ![512, 1024, 2048, 4096].contains(&n) {
                    return Err(EINVAL);
                }
                // fileio caps I/O at 8 MiB (max_bytes_per_io, set at enable):
                // hw_max_sectors follows the block size (VM tree check: 2048 at 4096).
                if st.plugin == "fileio" && st.enabled {
                    self.set(
                        &format!("{so}/attrib/hw_max_sectors"),
                        format!("{}\n", 8_388_608 / n),
                    );
                }
                store(self, u64::from(n))
            }
            // Deprecated: any write succeeds and is ignored (§2.4).
            "emulate_dpo" | "emulate_fua_read" => Ok(()),
            "emulate_write_cache" => {
                let b = strtobool(v)?;
                if b && st.plugin == "iblock" {
                    return Err(EINVAL);
                }
                store(self, u64::from(b))
            }
            "emulate_tpu" | "emulate_tpws" => {
                let b = strtobool(v)?;
                // Needs UNMAP support (§2.4): rd_mcp has none.
                if b && st.plugin == "rd_mcp" {
                    return Err(ENOSYS);
                }
                store(self, u64::from(b))
            }
            "emulate_rest_reord" => {
                if strtobool(v)? {
                    return Err(ENOSYS);
                }
                store(self, 0)
            }
            "alua_support" | "pgr_support" => {
                let b = strtobool(v)?;
                if self.get_trim(&rel) != u8::from(b).to_string() {
                    return Err(ENOSYS);
                }
                Ok(())
            }
            "emulate_ua_intlck_ctrl" => {
                let n = parse_u32(v)?;
                if n > 2 {
                    return Err(EINVAL);
                }
                store(self, u64::from(n))
            }
            "pi_prot_type" => match parse_u32(v)? {
                2 => Err(ENOSYS),
                n @ (0 | 1 | 3) => store(self, u64::from(n)),
                _ => Err(EINVAL),
            },
            "emulate_3pc"
            | "emulate_caw"
            | "emulate_fua_write"
            | "emulate_model_alias"
            | "emulate_pr"
            | "emulate_tas"
            | "enforce_pr_isids"
            | "force_pr_aptpl"
            | "is_nonrot"
            | "unmap_zeroes_data"
            | "pi_prot_verify" => {
                let b = strtobool(v)?;
                store(self, u64::from(b))
            }
            _ => {
                let n = parse_u32(v)?;
                store(self, u64::from(n))
            }
        }
    }

    fn so_wwn(&mut self, so: &str, f: &str, v: &str) -> R<()> {
        let st = self.objects.get(so).cloned().ok_or(ENOENT)?;
        let rel = format!("{so}/wwn/{f}");
        let exported = self.export_count(so) > 0;
        match f {
            "vpd_unit_serial" => {
                if st.plugin == "pscsi" {
                    return Err(EOPNOTSUPP);
                }
                // Whitespace-stripped; ≥254 → EOVERFLOW; locked while exported (§2.3).
                let s = v.trim();
                if s.len() >= 254 {
                    return Err(EOVERFLOW);
                }
                if exported {
                    return Err(EINVAL);
                }
                self.set(&rel, s.to_string());
                Ok(())
            }
            "company_id" => {
                let n = parse_auto(v.trim()).ok_or(EINVAL)?;
                if n >= 0x100_0000 {
                    return Err(EOVERFLOW);
                }
                if exported {
                    return Err(EINVAL);
                }
                self.set(&rel, format!("0x{n:06x}\n"));
                Ok(())
            }
            "vendor_id" | "product_id" | "revision" => {
                let max = match f {
                    "vendor_id" => 8,
                    "product_id" => 16,
                    _ => 4,
                };
                let s = v.trim();
                if s.len() > max {
                    return Err(EOVERFLOW);
                }
                if exported {
                    return Err(EINVAL);
                }
                self.set(&rel, format!("{s}\n"));
                Ok(())
            }
            _ => Err(EACCES),
        }
    }

    fn tpg_attrib(&mut self, tpg: &str, a: &str, v: &str) -> R<()> {
        let Some((_, _, lo, hi)) = TPG_ATTRIBS.iter().find(|x| x.0 == a) else {
            return Err(EINVAL);
        };
        // kstrtou32: `yes` → EINVAL (§3.3).
        let n = parse_u32(v)?;
        if n < *lo || n > *hi {
            return Err(EINVAL);
        }
        let rel = format!("{tpg}/attrib/{a}");
        match a {
            "authentication" => {
                // Also rewrites param/AuthMethod (§3.3, §8).
                let m = if n == 1 { "CHAP\n" } else { "CHAP,None\n" };
                self.set(&format!("{tpg}/param/AuthMethod"), m);
            }
            "generate_node_acls" if n == 1 => {
                // generate_node_acls=1 forces cache_dynamic_acls=1 (§3.3).
                self.set(&format!("{tpg}/attrib/cache_dynamic_acls"), "1\n");
            }
            "cache_dynamic_acls"
                if n == 0 && self.get_trim(&format!("{tpg}/attrib/generate_node_acls")) == "1" =>
            {
                // Success, but it stays 1 (§3.3).
                return Ok(());
            }
            _ => {}
        }
        self.set(&rel, format!("{n}\n"));
        Ok(())
    }

    // ------------------------------------------------------------------ sessions

    pub fn add_session(
        &mut self,
        target: &str,
        tag: u16,
        initiator: &str,
        address: &str,
    ) -> Result<u16, String> {
        let tpg = self
            .tpg_dir(target, tag)
            .ok_or_else(|| format!("no TPG {tag} on {target}"))?;
        if self.get_trim(&format!("{tpg}/enable")) != "1" {
            return Err(format!("TPG {tag} of {target} is not enabled"));
        }
        let has_acl = self.nodes.contains_key(&format!("{tpg}/acls/{initiator}"));
        let demo = self.get_trim(&format!("{tpg}/attrib/generate_node_acls")) == "1";
        if !has_acl && !demo {
            return Err(format!(
                "{initiator} has no ACL on {target} tpg {tag} and demo mode is off"
            ));
        }
        let id = self.next_session;
        self.next_session += 1;
        let tsih = u16::try_from(id % 65535).unwrap_or(1).max(1);
        self.sessions.push(SimSession {
            target: target.to_string(),
            tag,
            initiator: initiator.to_string(),
            isid: [0x80, 0x4c, 0x37, (id >> 8) as u8, id as u8, 0],
            tsih,
            session_id: id,
            address: address.to_string(),
        });
        Ok(tsih)
    }

    // ------------------------------------------------------------------ dump

    pub fn dump(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (k, n) in &self.nodes {
            let v = match n {
                Node::Dir { user } => format!("dir{}", if *user { "" } else { " (default)" }),
                Node::Link { target } => format!("-> {target}"),
                Node::File { .. } => match self.read(k) {
                    Ok(b) => format!("= {:?}", String::from_utf8_lossy(&b)),
                    Err(e) => format!("read errno {e}"),
                },
            };
            out.insert(k.clone(), v);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k() -> Kernel {
        Kernel::new()
    }

    #[test]
    fn hba_and_tpg_names_follow_the_kernel() {
        assert_eq!(parse_hba("rd_mcp_3").unwrap(), ("rd_mcp".into(), 3));
        assert_eq!(parse_hba("fileio_0x10").unwrap(), ("fileio".into(), 16));
        assert_eq!(parse_hba("foo_0"), Err(EINVAL));
        assert_eq!(parse_hba("fileio_x"), Err(EINVAL));
        assert_eq!(parse_hba("fileio"), Err(EINVAL));
        assert_eq!(parse_tpgt("tpgt_0x1"), Ok(1));
        assert_eq!(parse_tpgt("xtpgt_3"), Ok(3));
        assert_eq!(parse_tpgt("tpgt_65536"), Err(EINVAL));
        assert_eq!(parse_tpgt("tpg1"), Err(EINVAL));
        assert_eq!(parse_lun("lun0"), Err(EINVAL));
        assert_eq!(parse_lun("lun_abc"), Err(EINVAL));
    }

    #[test]
    fn enable_protocol_and_frozen_attributes() {
        let mut k = k();
        k.mkdir("core/fileio_0").unwrap();
        k.mkdir("core/fileio_0/f").unwrap();
        assert_eq!(k.so_enable("core/fileio_0/f", "1"), Err(EINVAL)); // no fd_dev_name
        k.write(
            "core/fileio_0/f/control",
            b"fd_dev_name=/tmp/f.img,fd_dev_size=1048576",
        )
        .unwrap();
        assert_eq!(
            k.write("core/fileio_0/f/control", b"fd_buffered_io=0"),
            Err(EINVAL)
        );
        k.write("core/fileio_0/f/attrib/block_size", b"4096")
            .unwrap();
        assert_eq!(k.write("core/fileio_0/f/enable", b"0"), Err(EINVAL));
        k.write("core/fileio_0/f/enable", b"10").unwrap();
        assert_eq!(k.write("core/fileio_0/f/enable", b"1"), Err(EEXIST));
        // Reset at enable.
        assert_eq!(
            k.read("core/fileio_0/f/attrib/block_size").unwrap(),
            b"512\n"
        );
        // The kernel created the missing file with size 0.
        assert_eq!(k.host_files.get(&PathBuf::from("/tmp/f.img")), Some(&0));
        k.write("core/fileio_0/f/wwn/vpd_unit_serial", b"abc\n")
            .unwrap();
        assert_eq!(
            k.read("core/fileio_0/f/wwn/vpd_unit_serial").unwrap(),
            b"T10 VPD Unit Serial Number: abc\n"
        );
        assert_eq!(k.read("core/fileio_0/f/control"), Err(EACCES));
        assert_eq!(
            k.write("core/fileio_0/f/attrib/hw_block_size", b"512"),
            Err(EACCES)
        );
        k.mkdir("iscsi").unwrap();
        k.mkdir("iscsi/iqn.t").unwrap();
        k.mkdir("iscsi/iqn.t/tpgt_1").unwrap();
        k.mkdir("iscsi/iqn.t/tpgt_1/lun/lun_0").unwrap();
        k.symlink("core/fileio_0/f", "iscsi/iqn.t/tpgt_1/lun/lun_0/x")
            .unwrap();
        assert_eq!(
            k.symlink("core/fileio_0/f", "iscsi/iqn.t/tpgt_1/lun/lun_0/y"),
            Err(EEXIST)
        );
        assert_eq!(
            k.write("core/fileio_0/f/attrib/block_size", b"4096"),
            Err(EINVAL)
        );
        assert_eq!(
            k.write("core/fileio_0/f/wwn/vpd_unit_serial", b"x"),
            Err(EINVAL)
        );
        k.write("core/fileio_0/f/attrib/is_nonrot", b"yes").unwrap();
        assert_eq!(k.read("core/fileio_0/f/attrib/is_nonrot").unwrap(), b"1\n");
        assert_eq!(k.rmdir("core/fileio_0/f"), Err(EBUSY));
        assert_eq!(k.rmdir("core/fileio_0"), Err(ENOTEMPTY));
        assert_eq!(k.rmdir("core/fileio_0/f/attrib"), Err(EPERM));
        assert!(String::from_utf8(k.read("core/fileio_0/f/info").unwrap())
            .unwrap()
            .starts_with("Status: ACTIVATED"));
    }

    #[test]
    fn mappings_die_when_their_lun_is_unlinked() {
        let mut k = k();
        k.mkdir("core/rd_mcp_0").unwrap();
        k.mkdir("core/rd_mcp_0/r").unwrap();
        k.write("core/rd_mcp_0/r/control", b"rd_pages=16").unwrap();
        assert_eq!(k.symlink("core/rd_mcp_0/r", "iscsi/x/l"), Err(ENOENT));
        k.mkdir("iscsi").unwrap();
        k.mkdir("iscsi/t").unwrap();
        k.mkdir("iscsi/t/tpgt_1").unwrap();
        k.mkdir("iscsi/t/tpgt_1/lun/lun_0").unwrap();
        assert_eq!(
            k.symlink("core/rd_mcp_0/r", "iscsi/t/tpgt_1/lun/lun_0/l"),
            Err(ENODEV)
        );
        assert_eq!(
            k.symlink("core/rd_mcp_0", "iscsi/t/tpgt_1/lun/lun_0/l"),
            Err(EFAULT)
        );
        k.write("core/rd_mcp_0/r/enable", b"1").unwrap();
        k.mkdir("iscsi/t/tpgt_1/acls/i").unwrap();
        k.mkdir("iscsi/t/tpgt_1/acls/i/lun_0").unwrap();
        // LUN not linked yet → EINVAL.
        assert_eq!(
            k.symlink("iscsi/t/tpgt_1/lun/lun_0", "iscsi/t/tpgt_1/acls/i/lun_0/m"),
            Err(EINVAL)
        );
        k.symlink("core/rd_mcp_0/r", "iscsi/t/tpgt_1/lun/lun_0/l")
            .unwrap();
        k.symlink("iscsi/t/tpgt_1/lun/lun_0", "iscsi/t/tpgt_1/acls/i/lun_0/m")
            .unwrap();
        assert_eq!(
            k.read("iscsi/t/tpgt_1/acls/i/lun_0/write_protect").unwrap(),
            b"0\n"
        );
        assert_eq!(k.rmdir("iscsi/t/tpgt_1/lun/lun_0"), Err(EBUSY));
        k.unlink("iscsi/t/tpgt_1/lun/lun_0/l").unwrap();
        assert_eq!(
            k.read("iscsi/t/tpgt_1/acls/i/lun_0/write_protect").unwrap(),
            b""
        );
        k.symlink("core/rd_mcp_0/r", "iscsi/t/tpgt_1/lun/lun_0/l")
            .unwrap();
        // Re-linking does not revive the mapping.
        assert_eq!(
            k.read("iscsi/t/tpgt_1/acls/i/lun_0/write_protect").unwrap(),
            b""
        );
        assert_eq!(
            k.read_link("iscsi/t/tpgt_1/acls/i/lun_0/m", "target")
                .unwrap(),
            PathBuf::from("../../../../../../../target/iscsi/t/tpgt_1/lun/lun_0")
        );
        assert_eq!(k.rmdir("iscsi/t/tpgt_1/acls/i"), Err(ENOTEMPTY));
    }

    #[test]
    fn portals_conflict_within_a_target() {
        let mut k = k();
        k.mkdir("iscsi").unwrap();
        k.mkdir("iscsi/a").unwrap();
        k.mkdir("iscsi/a/tpgt_1").unwrap();
        k.mkdir("iscsi/a/tpgt_2").unwrap();
        k.mkdir("iscsi/a/tpgt_1/np/0.0.0.0:3260").unwrap();
        assert_eq!(k.mkdir("iscsi/a/tpgt_1/np/[::0]:3260"), Err(EINVAL));
        assert_eq!(k.mkdir("iscsi/a/tpgt_2/np/0.0.0.0:3260"), Err(EINVAL));
        assert_eq!(k.mkdir("iscsi/a/tpgt_2/np/10.0.2.15"), Err(EINVAL));
        assert_eq!(k.mkdir("iscsi/a/tpgt_2/np/10.0.2.15:3260"), Err(EINVAL));
        k.mkdir("iscsi/b").unwrap();
        k.mkdir("iscsi/b/tpgt_1").unwrap();
        k.mkdir("iscsi/b/tpgt_1/np/[::0]:3260").unwrap();
        assert_eq!(k.mkdir("iscsi/a/tpgt_1/lun/lun0"), Err(EINVAL));
        assert_eq!(k.mkdir("iscsi/a/tpgt_1/attrib/x"), Err(EPERM));
        assert_eq!(k.mkdir("iscsi/a/foo"), Err(EINVAL));
    }

    #[test]
    fn tpg_attributes_and_auth_files() {
        let mut k = k();
        k.mkdir("iscsi").unwrap();
        k.mkdir("iscsi/t").unwrap();
        k.mkdir("iscsi/t/tpgt_1").unwrap();
        let t = "iscsi/t/tpgt_1";
        k.write(&format!("{t}/attrib/authentication"), b"0")
            .unwrap();
        assert_eq!(
            k.read(&format!("{t}/param/AuthMethod")).unwrap(),
            b"CHAP,None\n"
        );
        k.write(&format!("{t}/attrib/generate_node_acls"), b"1")
            .unwrap();
        k.write(&format!("{t}/attrib/cache_dynamic_acls"), b"0")
            .unwrap();
        assert_eq!(
            k.read(&format!("{t}/attrib/cache_dynamic_acls")).unwrap(),
            b"1\n"
        );
        assert_eq!(
            k.write(&format!("{t}/attrib/login_timeout"), b"100"),
            Err(EINVAL)
        );
        assert_eq!(
            k.write(&format!("{t}/attrib/authentication"), b"yes"),
            Err(EINVAL)
        );
        k.write(&format!("{t}/auth/password"), b"secret\n").unwrap();
        assert_eq!(
            k.read(&format!("{t}/auth/password")).unwrap(),
            b"secret\n\n"
        );
        k.write(&format!("{t}/auth/userid_mutual"), b"m").unwrap();
        k.write(&format!("{t}/auth/password_mutual"), b"p").unwrap();
        assert_eq!(
            k.read(&format!("{t}/auth/authenticate_target")).unwrap(),
            b"1\n"
        );
        k.write(&format!("{t}/auth/password_mutual"), b"NULL")
            .unwrap();
        assert_eq!(
            k.read(&format!("{t}/auth/authenticate_target")).unwrap(),
            b"0\n"
        );
        k.write(&format!("{t}/auth/userid"), &[b'a'; 300]).unwrap();
        assert_eq!(k.read(&format!("{t}/auth/userid")).unwrap().len(), 256);
        k.mkdir(&format!("{t}/acls/i")).unwrap();
        assert_eq!(
            k.write(&format!("{t}/acls/i/auth/userid"), &[b'a'; 300]),
            Err(EINVAL)
        );
        k.write(&format!("{t}/acls/i/tag"), b"grpA").unwrap();
        assert_eq!(k.read(&format!("{t}/acls/i/tag")).unwrap(), b"grpA");
        k.write(&format!("{t}/acls/i/cmdsn_depth"), b"0").unwrap();
        assert_eq!(k.read(&format!("{t}/acls/i/cmdsn_depth")).unwrap(), b"1\n");
    }
}
