//! [`Op`]: one step of a plan, named by its intent, with its inverse beside it.
//!
//! Ops carry everything a backend needs to carry them out without looking at a
//! state again (names, the HBA, link names, observed values to restore), so that the
//! executor can run them, journal them and undo them. An op's inverse is built from
//! the values the plan observed: undoing `DeleteAcl` re-creates the ACL *with its old
//! credentials*. Inverses are run in "tolerant" mode by the executor (an object that
//! is already gone or already there is not an error), so an undo survives a forward
//! step that failed half way.

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
}

impl BackstoreSetting {
    pub fn name(&self) -> &'static str {
        match self {
            BackstoreSetting::Serial(_) => "serial",
            BackstoreSetting::CompanyId(_) => "company_id",
            BackstoreSetting::BlockSize(_) => "block_size",
            BackstoreSetting::Nonrotational(_) => "nonrotational",
            BackstoreSetting::FileSize(_) => "size",
        }
    }
    pub fn value_string(&self) -> String {
        match self {
            BackstoreSetting::Serial(s) => format!("{s:?}"),
            BackstoreSetting::CompanyId(c) => format!("0x{c:06x}"),
            BackstoreSetting::BlockSize(b) => b.to_string(),
            BackstoreSetting::Nonrotational(b) => b.to_string(),
            BackstoreSetting::FileSize(s) => s.to_string(),
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
}

impl TpgSetting {
    pub fn name(&self) -> &'static str {
        match self {
            TpgSetting::Authentication(_) => "authentication",
            TpgSetting::GenerateNodeAcls(_) => "generate_node_acls",
            TpgSetting::DemoModeWriteProtect(_) => "demo_mode_write_protect",
            TpgSetting::Alias(_) => "alias",
        }
    }
    pub fn value_string(&self) -> String {
        match self {
            TpgSetting::Authentication(b)
            | TpgSetting::GenerateNodeAcls(b)
            | TpgSetting::DemoModeWriteProtect(b) => b.to_string(),
            TpgSetting::Alias(a) => format!("{a:?}"),
        }
    }
}

/// Where a set of CHAP credentials lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthScope {
    Discovery,
    Tpg {
        target: String,
        tag: u16,
    },
    Acl {
        target: String,
        tag: u16,
        initiator: String,
    },
}

impl AuthScope {
    fn object(&self) -> ObjectId {
        match self {
            AuthScope::Discovery => ObjectId::DiscoveryAuth,
            AuthScope::Tpg { target, tag } => ObjectId::Tpg {
                target: target.clone(),
                tag: *tag,
            },
            AuthScope::Acl {
                target,
                tag,
                initiator,
            } => ObjectId::Acl {
                target: target.clone(),
                tag: *tag,
                initiator: initiator.clone(),
            },
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
        target: String,
    },
    DeleteTarget {
        target: String,
    },
    CreateTpg {
        target: String,
        tag: u16,
    },
    DeleteTpg {
        target: String,
        tag: u16,
        snapshot: Box<TpgSnapshot>,
    },
    SetTpg {
        target: String,
        tag: u16,
        value: TpgSetting,
        old: Option<TpgSetting>,
    },
    EnableTpg {
        target: String,
        tag: u16,
    },
    DisableTpg {
        target: String,
        tag: u16,
    },
    CreatePortal {
        target: String,
        tag: u16,
        portal: SocketAddr,
        /// Directory name to create (canonical, or the observed spelling on undo).
        dir: String,
    },
    DeletePortal {
        target: String,
        tag: u16,
        portal: SocketAddr,
        dir: String,
    },
    CreateLun {
        target: String,
        tag: u16,
        lun: u64,
    },
    DeleteLun {
        target: String,
        tag: u16,
        lun: u64,
    },
    /// Symlink a TPG LUN to a backstore (object must be enabled).
    LinkLun {
        target: String,
        tag: u16,
        lun: u64,
        backstore: BackstoreRef,
        link: String,
    },
    UnlinkLun {
        target: String,
        tag: u16,
        lun: u64,
        backstore: BackstoreRef,
        link: String,
    },
    CreateAcl {
        target: String,
        tag: u16,
        initiator: String,
    },
    DeleteAcl {
        target: String,
        tag: u16,
        initiator: String,
        /// Restored on undo.
        auth: Option<ChapCreds>,
        authentication: Option<bool>,
    },
    /// ACL `attrib/authentication` (`None` = -1, inherit from the TPG).
    SetAclAuthentication {
        target: String,
        tag: u16,
        initiator: String,
        value: Option<bool>,
        old: Option<Option<bool>>,
    },
    CreateMappedLun {
        target: String,
        tag: u16,
        initiator: String,
        lun: u64,
    },
    DeleteMappedLun {
        target: String,
        tag: u16,
        initiator: String,
        lun: u64,
    },
    /// Symlink a mapped LUN to a TPG LUN (which must be linked to a backstore).
    MapLun {
        target: String,
        tag: u16,
        initiator: String,
        lun: u64,
        tpg_lun: u64,
        link: String,
    },
    UnmapLun {
        target: String,
        tag: u16,
        initiator: String,
        lun: u64,
        tpg_lun: u64,
        link: String,
        /// The write protection to restore on undo (`None`: the mapping was dead).
        write_protect: Option<bool>,
    },
    SetWriteProtect {
        target: String,
        tag: u16,
        initiator: String,
        lun: u64,
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
            Op::CreateMappedLun { .. } => "create_mapped_lun",
            Op::DeleteMappedLun { .. } => "delete_mapped_lun",
            Op::MapLun { .. } => "map_lun",
            Op::UnmapLun { .. } => "unmap_lun",
            Op::SetWriteProtect { .. } => "set_write_protect",
        }
    }

    /// The object this op acts on.
    pub fn object(&self) -> ObjectId {
        let tpg = |t: &String, g: &u16| ObjectId::Tpg {
            target: t.clone(),
            tag: *g,
        };
        let lun = |t: &String, g: &u16, l: &u64| ObjectId::Lun {
            target: t.clone(),
            tag: *g,
            lun: *l,
        };
        let acl = |t: &String, g: &u16, i: &String| ObjectId::Acl {
            target: t.clone(),
            tag: *g,
            initiator: i.clone(),
        };
        let mapped = |t: &String, g: &u16, i: &String, l: &u64| ObjectId::MappedLun {
            target: t.clone(),
            tag: *g,
            initiator: i.clone(),
            lun: *l,
        };
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
            Op::CreateTarget { target } | Op::DeleteTarget { target } => ObjectId::Target {
                target: target.clone(),
            },
            Op::CreateTpg { target, tag }
            | Op::DeleteTpg { target, tag, .. }
            | Op::SetTpg { target, tag, .. }
            | Op::EnableTpg { target, tag }
            | Op::DisableTpg { target, tag } => tpg(target, tag),
            Op::CreatePortal {
                target,
                tag,
                portal,
                ..
            }
            | Op::DeletePortal {
                target,
                tag,
                portal,
                ..
            } => ObjectId::Portal {
                target: target.clone(),
                tag: *tag,
                portal: *portal,
            },
            Op::CreateLun {
                target,
                tag,
                lun: l,
            }
            | Op::DeleteLun {
                target,
                tag,
                lun: l,
            }
            | Op::LinkLun {
                target,
                tag,
                lun: l,
                ..
            }
            | Op::UnlinkLun {
                target,
                tag,
                lun: l,
                ..
            } => lun(target, tag, l),
            Op::CreateAcl {
                target,
                tag,
                initiator,
            }
            | Op::DeleteAcl {
                target,
                tag,
                initiator,
                ..
            }
            | Op::SetAclAuthentication {
                target,
                tag,
                initiator,
                ..
            } => acl(target, tag, initiator),
            Op::CreateMappedLun {
                target,
                tag,
                initiator,
                lun: l,
            }
            | Op::DeleteMappedLun {
                target,
                tag,
                initiator,
                lun: l,
            }
            | Op::MapLun {
                target,
                tag,
                initiator,
                lun: l,
                ..
            }
            | Op::UnmapLun {
                target,
                tag,
                initiator,
                lun: l,
                ..
            }
            | Op::SetWriteProtect {
                target,
                tag,
                initiator,
                lun: l,
                ..
            } => mapped(target, tag, initiator, l),
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
            Op::CreateTpg { target, tag } => vec![Op::DeleteTpg {
                target: target.clone(),
                tag: *tag,
                snapshot: Box::new(TpgSnapshot {
                    alias: crate::state::DEFAULT_TARGET_ALIAS.to_string(),
                    authentication: true,
                    generate_node_acls: false,
                    demo_mode_write_protect: None,
                    prod_mode_write_protect: None,
                    auth: None,
                }),
            }],
            Op::DeleteTpg {
                target,
                tag,
                snapshot,
            } => {
                let fresh = crate::state::Tpg::fresh(*tag);
                let mut ops = vec![Op::CreateTpg {
                    target: target.clone(),
                    tag: *tag,
                }];
                let mut set = |value: TpgSetting| {
                    ops.push(Op::SetTpg {
                        target: target.clone(),
                        tag: *tag,
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
                                scope: AuthScope::Tpg {
                                    target: target.clone(),
                                    tag: *tag,
                                },
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
                target,
                tag,
                value,
                old: Some(old),
            } => vec![Op::SetTpg {
                target: target.clone(),
                tag: *tag,
                value: old.clone(),
                old: Some(value.clone()),
            }],
            Op::SetTpg { old: None, .. } => vec![],
            Op::EnableTpg { target, tag } => vec![Op::DisableTpg {
                target: target.clone(),
                tag: *tag,
            }],
            Op::DisableTpg { target, tag } => vec![Op::EnableTpg {
                target: target.clone(),
                tag: *tag,
            }],
            Op::CreatePortal {
                target,
                tag,
                portal,
                dir,
            } => vec![Op::DeletePortal {
                target: target.clone(),
                tag: *tag,
                portal: *portal,
                dir: dir.clone(),
            }],
            Op::DeletePortal {
                target,
                tag,
                portal,
                dir,
            } => vec![Op::CreatePortal {
                target: target.clone(),
                tag: *tag,
                portal: *portal,
                dir: dir.clone(),
            }],
            Op::CreateLun { target, tag, lun } => vec![Op::DeleteLun {
                target: target.clone(),
                tag: *tag,
                lun: *lun,
            }],
            Op::DeleteLun { target, tag, lun } => vec![Op::CreateLun {
                target: target.clone(),
                tag: *tag,
                lun: *lun,
            }],
            Op::LinkLun {
                target,
                tag,
                lun,
                backstore,
                link,
            } => vec![Op::UnlinkLun {
                target: target.clone(),
                tag: *tag,
                lun: *lun,
                backstore: backstore.clone(),
                link: link.clone(),
            }],
            Op::UnlinkLun {
                target,
                tag,
                lun,
                backstore,
                link,
            } => vec![Op::LinkLun {
                target: target.clone(),
                tag: *tag,
                lun: *lun,
                backstore: backstore.clone(),
                link: link.clone(),
            }],
            Op::CreateAcl {
                target,
                tag,
                initiator,
            } => vec![Op::DeleteAcl {
                target: target.clone(),
                tag: *tag,
                initiator: initiator.clone(),
                auth: None,
                authentication: None,
            }],
            Op::DeleteAcl {
                target,
                tag,
                initiator,
                auth,
                authentication,
            } => {
                let mut ops = vec![Op::CreateAcl {
                    target: target.clone(),
                    tag: *tag,
                    initiator: initiator.clone(),
                }];
                if authentication.is_some() {
                    ops.push(Op::SetAclAuthentication {
                        target: target.clone(),
                        tag: *tag,
                        initiator: initiator.clone(),
                        value: *authentication,
                        old: None,
                    });
                }
                if let Some(creds) = auth {
                    for field in AuthField::ALL {
                        let v = creds.get(field);
                        if !v.is_empty() {
                            ops.push(Op::SetAuth {
                                scope: AuthScope::Acl {
                                    target: target.clone(),
                                    tag: *tag,
                                    initiator: initiator.clone(),
                                },
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
                target,
                tag,
                initiator,
                value,
                old: Some(old),
            } => vec![Op::SetAclAuthentication {
                target: target.clone(),
                tag: *tag,
                initiator: initiator.clone(),
                value: *old,
                old: Some(*value),
            }],
            Op::SetAclAuthentication { old: None, .. } => vec![],
            Op::CreateMappedLun {
                target,
                tag,
                initiator,
                lun,
            } => vec![Op::DeleteMappedLun {
                target: target.clone(),
                tag: *tag,
                initiator: initiator.clone(),
                lun: *lun,
            }],
            Op::DeleteMappedLun {
                target,
                tag,
                initiator,
                lun,
            } => vec![Op::CreateMappedLun {
                target: target.clone(),
                tag: *tag,
                initiator: initiator.clone(),
                lun: *lun,
            }],
            Op::MapLun {
                target,
                tag,
                initiator,
                lun,
                tpg_lun,
                link,
            } => vec![Op::UnmapLun {
                target: target.clone(),
                tag: *tag,
                initiator: initiator.clone(),
                lun: *lun,
                tpg_lun: *tpg_lun,
                link: link.clone(),
                write_protect: None,
            }],
            Op::UnmapLun {
                target,
                tag,
                initiator,
                lun,
                tpg_lun,
                link,
                write_protect,
            } => {
                let mut ops = vec![Op::MapLun {
                    target: target.clone(),
                    tag: *tag,
                    initiator: initiator.clone(),
                    lun: *lun,
                    tpg_lun: *tpg_lun,
                    link: link.clone(),
                }];
                if let Some(wp) = write_protect {
                    // Written whatever the link defaulted it to: cheap and certain.
                    ops.push(Op::SetWriteProtect {
                        target: target.clone(),
                        tag: *tag,
                        initiator: initiator.clone(),
                        lun: *lun,
                        value: *wp,
                        old: None,
                    });
                }
                ops
            }
            Op::SetWriteProtect {
                target,
                tag,
                initiator,
                lun,
                value,
                old: Some(old),
            } => vec![Op::SetWriteProtect {
                target: target.clone(),
                tag: *tag,
                initiator: initiator.clone(),
                lun: *lun,
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
                write!(f, "create backing file {} ({size} bytes, sparse)", path.display())
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
            Op::CreateTarget { target } => write!(f, "create target {target:?}"),
            Op::DeleteTarget { target } => write!(f, "delete target {target:?}"),
            Op::CreateTpg { target, tag } => write!(f, "create target {target:?} tpg {tag}"),
            Op::DeleteTpg { target, tag, .. } => {
                write!(f, "delete target {target:?} tpg {tag}")
            }
            Op::SetTpg {
                target, tag, value, ..
            } => write!(
                f,
                "set target {target:?} tpg {tag} {} = {}",
                value.name(),
                value.value_string()
            ),
            Op::EnableTpg { target, tag } => write!(f, "enable target {target:?} tpg {tag}"),
            Op::DisableTpg { target, tag } => {
                write!(f, "disable target {target:?} tpg {tag}")
            }
            Op::CreatePortal {
                target, tag, dir, ..
            } => write!(f, "create target {target:?} tpg {tag} portal {dir}"),
            Op::DeletePortal {
                target, tag, dir, ..
            } => write!(f, "delete target {target:?} tpg {tag} portal {dir}"),
            Op::CreateLun { target, tag, lun } => {
                write!(f, "create target {target:?} tpg {tag} lun {lun}")
            }
            Op::DeleteLun { target, tag, lun } => {
                write!(f, "delete target {target:?} tpg {tag} lun {lun}")
            }
            Op::LinkLun {
                target,
                tag,
                lun,
                backstore,
                ..
            } => write!(
                f,
                "link target {target:?} tpg {tag} lun {lun} -> backstore {:?}",
                backstore.name
            ),
            Op::UnlinkLun {
                target,
                tag,
                lun,
                backstore,
                ..
            } => write!(
                f,
                "unlink target {target:?} tpg {tag} lun {lun} from backstore {:?}",
                backstore.name
            ),
            Op::CreateAcl {
                target,
                tag,
                initiator,
            } => write!(f, "create target {target:?} tpg {tag} acl {initiator:?}"),
            Op::DeleteAcl {
                target,
                tag,
                initiator,
                ..
            } => write!(f, "delete target {target:?} tpg {tag} acl {initiator:?}"),
            Op::SetAclAuthentication {
                target,
                tag,
                initiator,
                value,
                ..
            } => write!(
                f,
                "set target {target:?} tpg {tag} acl {initiator:?} authentication = {}",
                match value {
                    None => "inherit",
                    Some(true) => "true",
                    Some(false) => "false",
                }
            ),
            Op::CreateMappedLun {
                target,
                tag,
                initiator,
                lun,
            } => write!(
                f,
                "create target {target:?} tpg {tag} acl {initiator:?} mapped_lun {lun}"
            ),
            Op::DeleteMappedLun {
                target,
                tag,
                initiator,
                lun,
            } => write!(
                f,
                "delete target {target:?} tpg {tag} acl {initiator:?} mapped_lun {lun}"
            ),
            Op::MapLun {
                target,
                tag,
                initiator,
                lun,
                tpg_lun,
                ..
            } => write!(
                f,
                "map target {target:?} tpg {tag} acl {initiator:?} mapped_lun {lun} -> lun {tpg_lun}"
            ),
            Op::UnmapLun {
                target,
                tag,
                initiator,
                lun,
                ..
            } => write!(
                f,
                "unmap target {target:?} tpg {tag} acl {initiator:?} mapped_lun {lun}"
            ),
            Op::SetWriteProtect {
                target,
                tag,
                initiator,
                lun,
                value,
                ..
            } => write!(
                f,
                "set target {target:?} tpg {tag} acl {initiator:?} mapped_lun {lun} write_protect = {value}"
            ),
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
            target: "t".into(),
            tag: 1,
            initiator: "i".into(),
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
            target: "t".into(),
            tag: 1,
            lun: 0,
            backstore: BackstoreRef {
                name: "b".into(),
                hba: Some("fileio_0".into()),
            },
            link: LINK_NAME.into(),
        };
        assert_eq!(link.inverse()[0].inverse()[0], link);
        let en = Op::EnableTpg {
            target: "t".into(),
            tag: 1,
        };
        assert_eq!(en.inverse()[0].inverse()[0], en);
        let set = Op::SetTpg {
            target: "t".into(),
            tag: 1,
            value: TpgSetting::Authentication(false),
            old: Some(TpgSetting::Authentication(true)),
        };
        assert_eq!(set.inverse()[0].inverse()[0], set);
    }
}
