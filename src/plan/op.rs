//! [`Op`]: one step of a plan, named by its intent, with its inverse beside it.
//!
//! Ops carry everything a backend needs to carry them out without looking at a
//! state again (names, the HBA, link names, observed values to restore), so that the
//! executor can run them, journal them and undo them. An op's inverse is built from
//! the values the plan observed: undoing `DeleteAcl` re-creates the ACL *with its old
//! credentials*. Inverses are run in "tolerant" mode by the executor (an object that
//! is already gone or already there is not an error), so an undo survives a forward
//! step that failed half way.
//!
//! Target-side ops name their object with a small address ([`TargetAddr`],
//! [`TpgAddr`], [`LunAddr`], [`AclAddr`], [`MappedLunAddr`]); each converts to its
//! [`ObjectId`] and displays as that object's address, so `object`, `inverse`,
//! `Display` and a backend's expansion handle an address as one value.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;

use crate::state::{
    portal_dir_name, AuthField, AuthValue, Backstore, BackstoreKind, BackstoreRef, ChapCreds,
    ObjectId,
};

/// The order in which groups of ops run. Lanes of one phase run concurrently; a
/// phase starts when the previous one has finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Disable, unmap, unlink and remove target-side objects (reverse dependency
    /// order, docs/configfs.md §4.2).
    Teardown,
    /// Backing files and storage objects: delete, create, update.
    Backstores,
    /// The iSCSI fabric directory and discovery auth.
    Fabric,
    /// Create and update targets: TPG, attributes, LUNs, portals, ACLs, mappings, and
    /// TPG enable last (docs/configfs.md §4.1).
    Targets,
}

impl Phase {
    pub const ALL: [Phase; 4] = [
        Phase::Teardown,
        Phase::Backstores,
        Phase::Fabric,
        Phase::Targets,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Teardown => "teardown",
            Phase::Backstores => "backstores",
            Phase::Fabric => "fabric",
            Phase::Targets => "targets",
        }
    }
}

/// A sequence of ops that must run in order; different lanes of a phase are
/// independent (different targets, different backstores).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Lane {
    Backstore(String),
    Fabric,
    Target(String),
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lane::Backstore(n) => write!(f, "backstore {n}"),
            Lane::Fabric => f.write_str("fabric"),
            Lane::Target(t) => write!(f, "target {t}"),
        }
    }
}

/// A backstore setting written after the object is enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackstoreSetting {
    /// `wwn/vpd_unit_serial`.
    Serial(String),
    /// `wwn/company_id`.
    CompanyId(u32),
    /// `attrib/block_size`.
    BlockSize(u32),
    /// `attrib/is_nonrot`.
    Nonrotational(bool),
    /// fileio `fd_dev_size`, through `control` (the LUN's capacity).
    FileSize(u64),
    /// A policy attribute `attrib/<name>` (`state::POLICY_ATTRIBUTES`) and its value.
    Attribute(&'static str, String),
}

impl BackstoreSetting {
    pub fn name(&self) -> &'static str {
        match self {
            BackstoreSetting::Serial(_) => "serial",
            BackstoreSetting::CompanyId(_) => "company_id",
            BackstoreSetting::BlockSize(_) => "block_size",
            BackstoreSetting::Nonrotational(_) => "nonrotational",
            BackstoreSetting::FileSize(_) => "size",
            BackstoreSetting::Attribute(name, _) => name,
        }
    }
    pub fn value_string(&self) -> String {
        match self {
            BackstoreSetting::Serial(s) => format!("{s:?}"),
            BackstoreSetting::CompanyId(c) => format!("0x{c:06x}"),
            BackstoreSetting::BlockSize(b) => b.to_string(),
            BackstoreSetting::Nonrotational(b) => b.to_string(),
            BackstoreSetting::FileSize(s) => s.to_string(),
            BackstoreSetting::Attribute(_, v) => v.clone(),
        }
    }
}

/// A TPG setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TpgSetting {
    /// `attrib/authentication`.
    Authentication(bool),
    /// `attrib/generate_node_acls` (demo mode).
    GenerateNodeAcls(bool),
    /// `attrib/demo_mode_write_protect`.
    DemoModeWriteProtect(bool),
    /// `param/TargetAlias`.
    Alias(String),
    /// A defaulted attribute or parameter (`state::TPG_DEFAULTED`) by its path under the
    /// TPG (`attrib/login_timeout`), and its value.
    Attribute(&'static str, String),
}

impl TpgSetting {
    pub fn name(&self) -> &'static str {
        match self {
            TpgSetting::Authentication(_) => "authentication",
            TpgSetting::GenerateNodeAcls(_) => "generate_node_acls",
            TpgSetting::DemoModeWriteProtect(_) => "demo_mode_write_protect",
            TpgSetting::Alias(_) => "alias",
            TpgSetting::Attribute(path, _) => path,
        }
    }
    pub fn value_string(&self) -> String {
        match self {
            TpgSetting::Authentication(b)
            | TpgSetting::GenerateNodeAcls(b)
            | TpgSetting::DemoModeWriteProtect(b) => b.to_string(),
            TpgSetting::Alias(a) => format!("{a:?}"),
            TpgSetting::Attribute(_, v) => v.clone(),
        }
    }
}

/// A target, by IQN. Displays as its object address (`target "iqn..."`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetAddr {
    pub target: String,
}

/// A TPG of a target (`target "iqn..." tpg 1`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TpgAddr {
    pub target: String,
    pub tag: u16,
}

/// A LUN of a TPG (`target "iqn..." tpg 1 lun 0`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LunAddr {
    pub tpg: TpgAddr,
    pub lun: u64,
}

/// An ACL of a TPG, by initiator IQN (`target "iqn..." tpg 1 acl "iqn..."`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AclAddr {
    pub tpg: TpgAddr,
    pub initiator: String,
}

/// A mapped LUN of an ACL (`target "iqn..." tpg 1 acl "iqn..." mapped_lun 0`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MappedLunAddr {
    pub acl: AclAddr,
    pub lun: u64,
}

impl TargetAddr {
    pub fn new(target: impl Into<String>) -> TargetAddr {
        TargetAddr {
            target: target.into(),
        }
    }
    pub fn object(&self) -> ObjectId {
        ObjectId::Target {
            target: self.target.clone(),
        }
    }
}

impl TpgAddr {
    pub fn new(target: impl Into<String>, tag: u16) -> TpgAddr {
        TpgAddr {
            target: target.into(),
            tag,
        }
    }
    /// LUN `lun` of this TPG.
    pub fn lun(&self, lun: u64) -> LunAddr {
        LunAddr {
            tpg: self.clone(),
            lun,
        }
    }
    /// The ACL of `initiator` in this TPG.
    pub fn acl(&self, initiator: impl Into<String>) -> AclAddr {
        AclAddr {
            tpg: self.clone(),
            initiator: initiator.into(),
        }
    }
    pub fn object(&self) -> ObjectId {
        ObjectId::Tpg {
            target: self.target.clone(),
            tag: self.tag,
        }
    }
    /// The portal `portal` of this TPG.
    pub fn portal_object(&self, portal: SocketAddr) -> ObjectId {
        ObjectId::Portal {
            target: self.target.clone(),
            tag: self.tag,
            portal,
        }
    }
}

impl LunAddr {
    pub fn object(&self) -> ObjectId {
        ObjectId::Lun {
            target: self.tpg.target.clone(),
            tag: self.tpg.tag,
            lun: self.lun,
        }
    }
}

impl AclAddr {
    /// Mapped LUN `lun` of this ACL.
    pub fn mapped_lun(&self, lun: u64) -> MappedLunAddr {
        MappedLunAddr {
            acl: self.clone(),
            lun,
        }
    }
    pub fn object(&self) -> ObjectId {
        ObjectId::Acl {
            target: self.tpg.target.clone(),
            tag: self.tpg.tag,
            initiator: self.initiator.clone(),
        }
    }
}

impl MappedLunAddr {
    pub fn object(&self) -> ObjectId {
        ObjectId::MappedLun {
            target: self.acl.tpg.target.clone(),
            tag: self.acl.tpg.tag,
            initiator: self.acl.initiator.clone(),
            lun: self.lun,
        }
    }
}

impl From<&TargetAddr> for ObjectId {
    fn from(a: &TargetAddr) -> ObjectId {
        a.object()
    }
}

impl From<&TpgAddr> for ObjectId {
    fn from(a: &TpgAddr) -> ObjectId {
        a.object()
    }
}

impl From<&LunAddr> for ObjectId {
    fn from(a: &LunAddr) -> ObjectId {
        a.object()
    }
}

impl From<&AclAddr> for ObjectId {
    fn from(a: &AclAddr) -> ObjectId {
        a.object()
    }
}

impl From<&MappedLunAddr> for ObjectId {
    fn from(a: &MappedLunAddr) -> ObjectId {
        a.object()
    }
}

// The same text as the `ObjectId` each converts to, built without allocating.
impl fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "target {:?}", self.target)
    }
}

impl fmt::Display for TpgAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "target {:?} tpg {}", self.target, self.tag)
    }
}

impl fmt::Display for LunAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} lun {}", self.tpg, self.lun)
    }
}

impl fmt::Display for AclAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} acl {:?}", self.tpg, self.initiator)
    }
}

impl fmt::Display for MappedLunAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} mapped_lun {}", self.acl, self.lun)
    }
}

/// Where a set of CHAP credentials lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthScope {
    Discovery,
    Tpg(TpgAddr),
    Acl(AclAddr),
}

impl AuthScope {
    fn object(&self) -> ObjectId {
        match self {
            AuthScope::Discovery => ObjectId::DiscoveryAuth,
            AuthScope::Tpg(tpg) => tpg.object(),
            AuthScope::Acl(acl) => acl.object(),
        }
    }
}

/// The TPG values a deleted TPG must get back on undo (unmanaged values are not
/// restored; docs/reconcile.md says so).
#[derive(Debug, Clone, PartialEq)]
pub struct TpgSnapshot {
    pub alias: String,
    pub authentication: bool,
    pub generate_node_acls: bool,
    pub demo_mode_write_protect: Option<bool>,
    pub prod_mode_write_protect: Option<bool>,
    pub auth: Option<ChapCreds>,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Create a missing backing file, sparse, with `size` bytes (host side).
    CreateBackingFile {
        backstore: String,
        path: PathBuf,
        size: u64,
    },
    /// Grow a backing file (never shrinks; host side).
    GrowBackingFile {
        backstore: String,
        path: PathBuf,
        from: u64,
        to: u64,
    },
    /// Create and enable a storage object (`kind` holds the resolved size). LIO: mkdir
    /// HBA (when `create_hba`), mkdir object, write `control`, write `enable`.
    CreateBackstore {
        name: String,
        hba: String,
        create_hba: bool,
        kind: BackstoreKind,
    },
    /// Change one setting of an enabled storage object. `old` is `None` for a
    /// backstore created by this plan (its creation's undo removes it).
    SetBackstore {
        name: String,
        hba: String,
        value: BackstoreSetting,
        old: Option<BackstoreSetting>,
    },
    /// Remove a storage object (and its HBA when `delete_hba`); never its file.
    DeleteBackstore {
        backstore: Box<Backstore>,
        hba: String,
        delete_hba: bool,
    },
    /// Create the iSCSI fabric directory (loads the iSCSI target module).
    CreateFabric,
    /// Remove the (empty) iSCSI fabric directory. Only used to undo `CreateFabric`.
    DeleteFabric,
    /// `discovery_auth/enforce_discovery_auth`.
    SetDiscoveryEnforce {
        value: bool,
        old: bool,
    },
    /// One CHAP file of a discovery / TPG / ACL `auth/` directory.
    SetAuth {
        scope: AuthScope,
        field: AuthField,
        value: AuthValue,
        old: Option<AuthValue>,
    },
    CreateTarget {
        target: TargetAddr,
    },
    DeleteTarget {
        target: TargetAddr,
    },
    CreateTpg {
        tpg: TpgAddr,
    },
    DeleteTpg {
        tpg: TpgAddr,
        snapshot: Box<TpgSnapshot>,
    },
    SetTpg {
        tpg: TpgAddr,
        value: TpgSetting,
        old: Option<TpgSetting>,
    },
    EnableTpg {
        tpg: TpgAddr,
    },
    DisableTpg {
        tpg: TpgAddr,
    },
    CreatePortal {
        tpg: TpgAddr,
        portal: SocketAddr,
        /// Directory name to create (canonical, or the observed spelling on undo).
        dir: String,
    },
    DeletePortal {
        tpg: TpgAddr,
        portal: SocketAddr,
        dir: String,
    },
    CreateLun {
        lun: LunAddr,
    },
    DeleteLun {
        lun: LunAddr,
    },
    /// Symlink a TPG LUN to a backstore (object must be enabled).
    LinkLun {
        lun: LunAddr,
        backstore: BackstoreRef,
        link: String,
    },
    UnlinkLun {
        lun: LunAddr,
        backstore: BackstoreRef,
        link: String,
    },
    CreateAcl {
        acl: AclAddr,
    },
    DeleteAcl {
        acl: AclAddr,
        /// Restored on undo.
        auth: Option<ChapCreds>,
        authentication: Option<bool>,
    },
    /// ACL `attrib/authentication` (`None` = -1, inherit from the TPG).
    SetAclAuthentication {
        acl: AclAddr,
        value: Option<bool>,
        old: Option<Option<bool>>,
    },
    /// A defaulted ACL attribute (`state::ACL_DEFAULTED`) by its path under the ACL
    /// (`attrib/nopin_timeout`).
    SetAclAttribute {
        acl: AclAddr,
        path: &'static str,
        value: String,
        old: Option<String>,
    },
    CreateMappedLun {
        mapped: MappedLunAddr,
    },
    DeleteMappedLun {
        mapped: MappedLunAddr,
    },
    /// Symlink a mapped LUN to a TPG LUN (which must be linked to a backstore).
    MapLun {
        mapped: MappedLunAddr,
        tpg_lun: u64,
        link: String,
    },
    UnmapLun {
        mapped: MappedLunAddr,
        tpg_lun: u64,
        link: String,
        /// The write protection to restore on undo (`None`: the mapping was dead).
        write_protect: Option<bool>,
    },
    SetWriteProtect {
        mapped: MappedLunAddr,
        value: bool,
        old: Option<bool>,
    },
}

/// The name isctl gives the symlinks it creates (the kernel ignores link names,
/// docs/configfs.md §1).
pub const LINK_NAME: &str = "isctl";

impl Op {
    /// The op's name in JSON plans (`create_backstore`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Op::CreateBackingFile { .. } => "create_backing_file",
            Op::GrowBackingFile { .. } => "grow_backing_file",
            Op::CreateBackstore { .. } => "create_backstore",
            Op::SetBackstore { .. } => "set_backstore",
            Op::DeleteBackstore { .. } => "delete_backstore",
            Op::CreateFabric => "create_fabric",
            Op::DeleteFabric => "delete_fabric",
            Op::SetDiscoveryEnforce { .. } => "set_discovery_enforce",
            Op::SetAuth { .. } => "set_auth",
            Op::CreateTarget { .. } => "create_target",
            Op::DeleteTarget { .. } => "delete_target",
            Op::CreateTpg { .. } => "create_tpg",
            Op::DeleteTpg { .. } => "delete_tpg",
            Op::SetTpg { .. } => "set_tpg",
            Op::EnableTpg { .. } => "enable_tpg",
            Op::DisableTpg { .. } => "disable_tpg",
            Op::CreatePortal { .. } => "create_portal",
            Op::DeletePortal { .. } => "delete_portal",
            Op::CreateLun { .. } => "create_lun",
            Op::DeleteLun { .. } => "delete_lun",
            Op::LinkLun { .. } => "link_lun",
            Op::UnlinkLun { .. } => "unlink_lun",
            Op::CreateAcl { .. } => "create_acl",
            Op::DeleteAcl { .. } => "delete_acl",
            Op::SetAclAuthentication { .. } => "set_acl_authentication",
            Op::SetAclAttribute { .. } => "set_acl_attribute",
            Op::CreateMappedLun { .. } => "create_mapped_lun",
            Op::DeleteMappedLun { .. } => "delete_mapped_lun",
            Op::MapLun { .. } => "map_lun",
            Op::UnmapLun { .. } => "unmap_lun",
            Op::SetWriteProtect { .. } => "set_write_protect",
        }
    }

    /// The object this op acts on.
    pub fn object(&self) -> ObjectId {
        match self {
            Op::CreateBackingFile { backstore, .. } | Op::GrowBackingFile { backstore, .. } => {
                ObjectId::Backstore {
                    name: backstore.clone(),
                }
            }
            Op::CreateBackstore { name, .. } | Op::SetBackstore { name, .. } => {
                ObjectId::Backstore { name: name.clone() }
            }
            Op::DeleteBackstore { backstore, .. } => ObjectId::Backstore {
                name: backstore.name.clone(),
            },
            Op::CreateFabric | Op::DeleteFabric | Op::SetDiscoveryEnforce { .. } => {
                ObjectId::DiscoveryAuth
            }
            Op::SetAuth { scope, .. } => scope.object(),
            Op::CreateTarget { target } | Op::DeleteTarget { target } => target.object(),
            Op::CreateTpg { tpg }
            | Op::DeleteTpg { tpg, .. }
            | Op::SetTpg { tpg, .. }
            | Op::EnableTpg { tpg }
            | Op::DisableTpg { tpg } => tpg.object(),
            Op::CreatePortal { tpg, portal, .. } | Op::DeletePortal { tpg, portal, .. } => {
                tpg.portal_object(*portal)
            }
            Op::CreateLun { lun }
            | Op::DeleteLun { lun }
            | Op::LinkLun { lun, .. }
            | Op::UnlinkLun { lun, .. } => lun.object(),
            Op::CreateAcl { acl }
            | Op::DeleteAcl { acl, .. }
            | Op::SetAclAuthentication { acl, .. }
            | Op::SetAclAttribute { acl, .. } => acl.object(),
            Op::CreateMappedLun { mapped }
            | Op::DeleteMappedLun { mapped }
            | Op::MapLun { mapped, .. }
            | Op::UnmapLun { mapped, .. }
            | Op::SetWriteProtect { mapped, .. } => mapped.object(),
        }
    }

    /// True for the ops that only touch the host's files, not the target.
    pub fn is_host_op(&self) -> bool {
        matches!(
            self,
            Op::CreateBackingFile { .. } | Op::GrowBackingFile { .. }
        )
    }

    /// The ops that undo this one, in order, built from the values the plan observed.
    /// Empty when there is nothing to undo (a backing file is never removed or
    /// shrunk; a setting of an object this plan created goes with the object).
    pub fn inverse(&self) -> Vec<Op> {
        match self {
            Op::CreateBackingFile { .. } | Op::GrowBackingFile { .. } => vec![],
            Op::CreateBackstore {
                name,
                hba,
                create_hba,
                kind,
            } => vec![Op::DeleteBackstore {
                backstore: Box::new(Backstore {
                    name: name.clone(),
                    kind: kind.clone(),
                    block_size: 0,
                    serial: String::new(),
                    company_id: crate::state::DEFAULT_COMPANY_ID,
                    nonrotational: None,
                    hba: Some(hba.clone()),
                    configured: true,
                    attributes: Default::default(),
                    extra: Default::default(),
                    origin: None,
                }),
                hba: hba.clone(),
                delete_hba: *create_hba,
            }],
            Op::SetBackstore {
                name,
                hba,
                old: Some(old),
                ..
            } => vec![Op::SetBackstore {
                name: name.clone(),
                hba: hba.clone(),
                value: old.clone(),
                old: None,
            }],
            Op::SetBackstore { old: None, .. } => vec![],
            Op::DeleteBackstore {
                backstore,
                hba,
                delete_hba,
            } => {
                let mut ops = vec![Op::CreateBackstore {
                    name: backstore.name.clone(),
                    hba: hba.clone(),
                    create_hba: *delete_hba,
                    kind: backstore.kind.clone(),
                }];
                let set = |value| Op::SetBackstore {
                    name: backstore.name.clone(),
                    hba: hba.clone(),
                    value,
                    old: None,
                };
                if !backstore.serial.is_empty() {
                    ops.push(set(BackstoreSetting::Serial(backstore.serial.clone())));
                }
                if backstore.company_id != crate::state::DEFAULT_COMPANY_ID {
                    ops.push(set(BackstoreSetting::CompanyId(backstore.company_id)));
                }
                if backstore.block_size != 0 {
                    ops.push(set(BackstoreSetting::BlockSize(backstore.block_size)));
                }
                if let Some(n) = backstore.nonrotational {
                    ops.push(set(BackstoreSetting::Nonrotational(n)));
                }
                for (name, value) in &backstore.attributes {
                    if let Some(a) = crate::state::policy_attribute(name) {
                        ops.push(set(BackstoreSetting::Attribute(a.name, value.clone())));
                    }
                }
                ops
            }
            Op::CreateFabric => vec![Op::DeleteFabric],
            Op::DeleteFabric => vec![Op::CreateFabric],
            Op::SetDiscoveryEnforce { value, old } => vec![Op::SetDiscoveryEnforce {
                value: *old,
                old: *value,
            }],
            Op::SetAuth {
                scope,
                field,
                old: Some(old),
                value,
            } => vec![Op::SetAuth {
                scope: scope.clone(),
                field: *field,
                value: old.clone(),
                old: Some(value.clone()),
            }],
            Op::SetAuth { old: None, .. } => vec![],
            Op::CreateTarget { target } => vec![Op::DeleteTarget {
                target: target.clone(),
            }],
            Op::DeleteTarget { target } => vec![Op::CreateTarget {
                target: target.clone(),
            }],
            Op::CreateTpg { tpg } => vec![Op::DeleteTpg {
                tpg: tpg.clone(),
                snapshot: Box::new(TpgSnapshot {
                    alias: crate::state::DEFAULT_TARGET_ALIAS.to_string(),
                    authentication: true,
                    generate_node_acls: false,
                    demo_mode_write_protect: None,
                    prod_mode_write_protect: None,
                    auth: None,
                }),
            }],
            Op::DeleteTpg { tpg, snapshot } => {
                let fresh = crate::state::Tpg::fresh(tpg.tag);
                let mut ops = vec![Op::CreateTpg { tpg: tpg.clone() }];
                let mut set = |value: TpgSetting| {
                    ops.push(Op::SetTpg {
                        tpg: tpg.clone(),
                        value,
                        old: None,
                    })
                };
                if snapshot.alias != fresh.alias {
                    set(TpgSetting::Alias(snapshot.alias.clone()));
                }
                if snapshot.authentication != fresh.authentication {
                    set(TpgSetting::Authentication(snapshot.authentication));
                }
                if snapshot.generate_node_acls {
                    set(TpgSetting::GenerateNodeAcls(true));
                }
                if let Some(d) = snapshot.demo_mode_write_protect {
                    if Some(d) != fresh.demo_mode_write_protect {
                        set(TpgSetting::DemoModeWriteProtect(d));
                    }
                }
                if let Some(creds) = &snapshot.auth {
                    for field in AuthField::ALL {
                        let v = creds.get(field);
                        if !v.is_empty() {
                            ops.push(Op::SetAuth {
                                scope: AuthScope::Tpg(tpg.clone()),
                                field,
                                value: v,
                                old: None,
                            });
                        }
                    }
                }
                ops
            }
            Op::SetTpg {
                tpg,
                value,
                old: Some(old),
            } => vec![Op::SetTpg {
                tpg: tpg.clone(),
                value: old.clone(),
                old: Some(value.clone()),
            }],
            Op::SetTpg { old: None, .. } => vec![],
            Op::EnableTpg { tpg } => vec![Op::DisableTpg { tpg: tpg.clone() }],
            Op::DisableTpg { tpg } => vec![Op::EnableTpg { tpg: tpg.clone() }],
            Op::CreatePortal { tpg, portal, dir } => vec![Op::DeletePortal {
                tpg: tpg.clone(),
                portal: *portal,
                dir: dir.clone(),
            }],
            Op::DeletePortal { tpg, portal, dir } => vec![Op::CreatePortal {
                tpg: tpg.clone(),
                portal: *portal,
                dir: dir.clone(),
            }],
            Op::CreateLun { lun } => vec![Op::DeleteLun { lun: lun.clone() }],
            Op::DeleteLun { lun } => vec![Op::CreateLun { lun: lun.clone() }],
            Op::LinkLun {
                lun,
                backstore,
                link,
            } => vec![Op::UnlinkLun {
                lun: lun.clone(),
                backstore: backstore.clone(),
                link: link.clone(),
            }],
            Op::UnlinkLun {
                lun,
                backstore,
                link,
            } => vec![Op::LinkLun {
                lun: lun.clone(),
                backstore: backstore.clone(),
                link: link.clone(),
            }],
            Op::CreateAcl { acl } => vec![Op::DeleteAcl {
                acl: acl.clone(),
                auth: None,
                authentication: None,
            }],
            Op::DeleteAcl {
                acl,
                auth,
                authentication,
            } => {
                let mut ops = vec![Op::CreateAcl { acl: acl.clone() }];
                if authentication.is_some() {
                    ops.push(Op::SetAclAuthentication {
                        acl: acl.clone(),
                        value: *authentication,
                        old: None,
                    });
                }
                if let Some(creds) = auth {
                    for field in AuthField::ALL {
                        let v = creds.get(field);
                        if !v.is_empty() {
                            ops.push(Op::SetAuth {
                                scope: AuthScope::Acl(acl.clone()),
                                field,
                                value: v,
                                old: None,
                            });
                        }
                    }
                }
                ops
            }
            Op::SetAclAuthentication {
                acl,
                value,
                old: Some(old),
            } => vec![Op::SetAclAuthentication {
                acl: acl.clone(),
                value: *old,
                old: Some(*value),
            }],
            Op::SetAclAuthentication { old: None, .. } => vec![],
            Op::SetAclAttribute {
                acl,
                path,
                value,
                old: Some(old),
            } => vec![Op::SetAclAttribute {
                acl: acl.clone(),
                path,
                value: old.clone(),
                old: Some(value.clone()),
            }],
            Op::SetAclAttribute { old: None, .. } => vec![],
            Op::CreateMappedLun { mapped } => vec![Op::DeleteMappedLun {
                mapped: mapped.clone(),
            }],
            Op::DeleteMappedLun { mapped } => vec![Op::CreateMappedLun {
                mapped: mapped.clone(),
            }],
            Op::MapLun {
                mapped,
                tpg_lun,
                link,
            } => vec![Op::UnmapLun {
                mapped: mapped.clone(),
                tpg_lun: *tpg_lun,
                link: link.clone(),
                write_protect: None,
            }],
            Op::UnmapLun {
                mapped,
                tpg_lun,
                link,
                write_protect,
            } => {
                let mut ops = vec![Op::MapLun {
                    mapped: mapped.clone(),
                    tpg_lun: *tpg_lun,
                    link: link.clone(),
                }];
                if let Some(wp) = write_protect {
                    // Written whatever the link defaulted it to: cheap and certain.
                    ops.push(Op::SetWriteProtect {
                        mapped: mapped.clone(),
                        value: *wp,
                        old: None,
                    });
                }
                ops
            }
            Op::SetWriteProtect {
                mapped,
                value,
                old: Some(old),
            } => vec![Op::SetWriteProtect {
                mapped: mapped.clone(),
                value: *old,
                old: Some(*value),
            }],
            Op::SetWriteProtect { old: None, .. } => vec![],
        }
    }
}

impl fmt::Display for Op {
    /// One line for humans and JSON; secrets print as `(sensitive)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateBackingFile { path, size, .. } => {
                write!(
                    f,
                    "create backing file {} ({size} bytes, sparse)",
                    path.display()
                )
            }
            Op::GrowBackingFile { path, from, to, .. } => write!(
                f,
                "grow backing file {} from {from} to {to} bytes",
                path.display()
            ),
            Op::CreateBackstore {
                name,
                hba,
                create_hba,
                kind,
            } => {
                write!(f, "create {} backstore {name:?} in {hba}", kind.type_name())?;
                if *create_hba {
                    f.write_str(" (new HBA)")?;
                }
                Ok(())
            }
            Op::SetBackstore { name, value, .. } => write!(
                f,
                "set backstore {name:?} {} = {}",
                value.name(),
                value.value_string()
            ),
            Op::DeleteBackstore {
                backstore,
                hba,
                delete_hba,
            } => {
                write!(f, "delete backstore {:?} from {hba}", backstore.name)?;
                if *delete_hba {
                    f.write_str(" (and the HBA)")?;
                }
                Ok(())
            }
            Op::CreateFabric => f.write_str("create the iSCSI fabric (iscsi/)"),
            Op::DeleteFabric => f.write_str("remove the iSCSI fabric (iscsi/)"),
            Op::SetDiscoveryEnforce { value, .. } => {
                write!(f, "set discovery enforce_discovery_auth = {value}")
            }
            Op::SetAuth {
                scope,
                field,
                value,
                ..
            } => write!(f, "set {} auth {} = {value}", scope.object(), field.file()),
            Op::CreateTarget { target } => write!(f, "create {target}"),
            Op::DeleteTarget { target } => write!(f, "delete {target}"),
            Op::CreateTpg { tpg } => write!(f, "create {tpg}"),
            Op::DeleteTpg { tpg, .. } => write!(f, "delete {tpg}"),
            Op::SetTpg { tpg, value, .. } => {
                write!(f, "set {tpg} {} = {}", value.name(), value.value_string())
            }
            Op::EnableTpg { tpg } => write!(f, "enable {tpg}"),
            Op::DisableTpg { tpg } => write!(f, "disable {tpg}"),
            Op::CreatePortal { tpg, dir, .. } => write!(f, "create {tpg} portal {dir}"),
            Op::DeletePortal { tpg, dir, .. } => write!(f, "delete {tpg} portal {dir}"),
            Op::CreateLun { lun } => write!(f, "create {lun}"),
            Op::DeleteLun { lun } => write!(f, "delete {lun}"),
            Op::LinkLun { lun, backstore, .. } => {
                write!(f, "link {lun} -> backstore {:?}", backstore.name)
            }
            Op::UnlinkLun { lun, backstore, .. } => {
                write!(f, "unlink {lun} from backstore {:?}", backstore.name)
            }
            Op::CreateAcl { acl } => write!(f, "create {acl}"),
            Op::DeleteAcl { acl, .. } => write!(f, "delete {acl}"),
            Op::SetAclAuthentication { acl, value, .. } => write!(
                f,
                "set {acl} authentication = {}",
                match value {
                    None => "inherit",
                    Some(true) => "true",
                    Some(false) => "false",
                }
            ),
            Op::SetAclAttribute {
                acl, path, value, ..
            } => write!(f, "set {acl} {path} = {value}"),
            Op::CreateMappedLun { mapped } => write!(f, "create {mapped}"),
            Op::DeleteMappedLun { mapped } => write!(f, "delete {mapped}"),
            Op::MapLun {
                mapped, tpg_lun, ..
            } => write!(f, "map {mapped} -> lun {tpg_lun}"),
            Op::UnmapLun { mapped, .. } => write!(f, "unmap {mapped}"),
            Op::SetWriteProtect { mapped, value, .. } => {
                write!(f, "set {mapped} write_protect = {value}")
            }
        }
    }
}

/// The canonical directory name for a new portal.
pub fn new_portal_dir(addr: &SocketAddr) -> String {
    portal_dir_name(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Secret;

    #[test]
    fn inverse_of_acl_delete_restores_credentials() {
        let op = Op::DeleteAcl {
            acl: TpgAddr::new("t", 1).acl("i"),
            auth: Some(ChapCreds {
                userid: "u".into(),
                password: Secret::new("topsecret1234"),
                ..Default::default()
            }),
            authentication: None,
        };
        let inv = op.inverse();
        assert_eq!(inv.len(), 3);
        assert!(matches!(inv[0], Op::CreateAcl { .. }));
        assert!(
            matches!(&inv[2], Op::SetAuth { field: AuthField::Password, value, .. } if value.expose() == "topsecret1234")
        );
        assert!(!format!("{}", inv[2]).contains("topsecret"));
    }

    #[test]
    fn inverse_pairs_round_trip() {
        let link = Op::LinkLun {
            lun: TpgAddr::new("t", 1).lun(0),
            backstore: BackstoreRef {
                name: "b".into(),
                hba: Some("fileio_0".into()),
            },
            link: LINK_NAME.into(),
        };
        assert_eq!(link.inverse()[0].inverse()[0], link);
        let en = Op::EnableTpg {
            tpg: TpgAddr::new("t", 1),
        };
        assert_eq!(en.inverse()[0].inverse()[0], en);
        let set = Op::SetTpg {
            tpg: TpgAddr::new("t", 1),
            value: TpgSetting::Authentication(false),
            old: Some(TpgSetting::Authentication(true)),
        };
        assert_eq!(set.inverse()[0].inverse()[0], set);
    }

    #[test]
    fn addresses_display_as_their_objects() {
        let tpg = TpgAddr::new("iqn.t", 3);
        let acl = tpg.acl("iqn.i");
        let cases: Vec<(String, ObjectId)> = vec![
            (
                TargetAddr::new("iqn.t").to_string(),
                TargetAddr::new("iqn.t").object(),
            ),
            (tpg.to_string(), ObjectId::from(&tpg)),
            (tpg.lun(7).to_string(), tpg.lun(7).object()),
            (acl.to_string(), acl.object()),
            (acl.mapped_lun(2).to_string(), acl.mapped_lun(2).object()),
        ];
        for (shown, object) in cases {
            assert_eq!(shown, object.to_string());
        }
        assert_eq!(
            acl.mapped_lun(2).object(),
            ObjectId::MappedLun {
                target: "iqn.t".into(),
                tag: 3,
                initiator: "iqn.i".into(),
                lun: 2,
            }
        );
    }
}
