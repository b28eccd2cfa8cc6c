//! Expanding an [`Op`] into configfs syscalls, and running them.
//!
//! Each op has a fixed list of syscalls ([`expand`]), so a plan knows its exact
//! configfs operation count before it runs. Values are written without a trailing
//! newline (credentials would keep it, docs/configfs.md §0.1/§3.5); a cleared CHAP
//! value is written as `NULL` (§3.5). Symlinks point at absolute configfs paths.

use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::plan::{AuthScope, BackstoreSetting, Op, TpgSetting};
use crate::state::{BackstoreKind, RAMDISK_PAGE};

use super::paths::Paths;

/// One configfs syscall.
#[derive(Debug, PartialEq, Eq)]
pub enum Syscall {
    Mkdir(PathBuf),
    Rmdir(PathBuf),
    /// The value is zeroised when dropped (it may be a CHAP secret).
    Write(PathBuf, Zeroizing<Vec<u8>>),
    Symlink {
        target: PathBuf,
        link: PathBuf,
    },
    Unlink(PathBuf),
}

impl Syscall {
    pub fn name(&self) -> &'static str {
        match self {
            Syscall::Mkdir(_) => "mkdir",
            Syscall::Rmdir(_) => "rmdir",
            Syscall::Write(..) => "write",
            Syscall::Symlink { .. } => "symlink",
            Syscall::Unlink(_) => "unlink",
        }
    }
    pub fn path(&self) -> &PathBuf {
        match self {
            Syscall::Mkdir(p) | Syscall::Rmdir(p) | Syscall::Write(p, _) | Syscall::Unlink(p) => p,
            Syscall::Symlink { link, .. } => link,
        }
    }
}

fn w(path: PathBuf, value: impl Into<Vec<u8>>) -> Syscall {
    Syscall::Write(path, Zeroizing::new(value.into()))
}

fn b01(b: bool) -> &'static str {
    if b {
        "1"
    } else {
        "0"
    }
}

/// The `control` string that configures a storage object (§2.2).
pub fn control_string(kind: &BackstoreKind) -> String {
    match kind {
        BackstoreKind::File {
            path,
            size,
            write_back,
        } => {
            let mut s = format!(
                "fd_dev_name={},fd_dev_size={}",
                path.display(),
                size.unwrap_or(0)
            );
            // Only `1` is accepted (`fd_buffered_io=0` → EINVAL, §2.2): omit it for
            // write-through.
            if *write_back {
                s.push_str(",fd_buffered_io=1");
            }
            s
        }
        BackstoreKind::Block { device, readonly } => {
            let mut s = format!("udev_path={}", device.display());
            if *readonly {
                s.push_str(",readonly=1");
            }
            s
        }
        BackstoreKind::Ramdisk { size } => {
            format!("rd_pages={}", (size / RAMDISK_PAGE).max(1))
        }
        BackstoreKind::Other { .. } => String::new(),
    }
}

fn auth_dir(p: &Paths, scope: &AuthScope) -> PathBuf {
    match scope {
        AuthScope::Discovery => p.iscsi().join("discovery_auth"),
        AuthScope::Tpg { target, tag } => p.tpg(target, *tag).join("auth"),
        AuthScope::Acl {
            target,
            tag,
            initiator,
        } => p.acl(target, *tag, initiator).join("auth"),
    }
}

/// The configfs syscalls of `op`, in order. Host ops (backing files) have none.
/// How many syscalls [`expand`] makes of `op`, without building their paths: planning
/// counts every op of a plan, and building 1,600 paths for that was 15% of a `plan`.
pub fn syscall_count(op: &Op) -> u64 {
    match op {
        Op::CreateBackingFile { .. } | Op::GrowBackingFile { .. } => 0,
        Op::CreateBackstore { create_hba, .. } => 3 + u64::from(*create_hba),
        Op::DeleteBackstore { delete_hba, .. } => 1 + u64::from(*delete_hba),
        _ => 1,
    }
}

pub fn expand(p: &Paths, op: &Op) -> Vec<Syscall> {
    use Syscall::*;
    match op {
        Op::CreateBackingFile { .. } | Op::GrowBackingFile { .. } => vec![],
        Op::CreateBackstore {
            name,
            hba,
            create_hba,
            kind,
        } => {
            let mut v = Vec::new();
            if *create_hba {
                v.push(Mkdir(p.hba(hba)));
            }
            v.push(Mkdir(p.backstore(hba, name)));
            v.push(w(
                p.backstore_file(hba, name, "control"),
                control_string(kind),
            ));
            v.push(w(p.backstore_file(hba, name, "enable"), "1"));
            v
        }
        Op::SetBackstore {
            name, hba, value, ..
        } => vec![match value {
            BackstoreSetting::Serial(s) => {
                w(p.backstore_wwn(hba, name, "vpd_unit_serial"), s.as_str())
            }
            BackstoreSetting::CompanyId(c) => w(
                p.backstore_wwn(hba, name, "company_id"),
                format!("0x{c:06x}"),
            ),
            BackstoreSetting::BlockSize(b) => {
                w(p.backstore_attrib(hba, name, "block_size"), b.to_string())
            }
            BackstoreSetting::Nonrotational(b) => {
                w(p.backstore_attrib(hba, name, "is_nonrot"), b01(*b))
            }
            BackstoreSetting::FileSize(s) => w(
                p.backstore_file(hba, name, "control"),
                format!("fd_dev_size={s}"),
            ),
        }],
        Op::DeleteBackstore {
            backstore,
            hba,
            delete_hba,
        } => {
            let mut v = vec![Rmdir(p.backstore(hba, &backstore.name))];
            if *delete_hba {
                v.push(Rmdir(p.hba(hba)));
            }
            v
        }
        Op::CreateFabric => vec![Mkdir(p.iscsi())],
        Op::DeleteFabric => vec![Rmdir(p.iscsi())],
        Op::SetDiscoveryEnforce { value, .. } => {
            vec![w(p.discovery_auth("enforce_discovery_auth"), b01(*value))]
        }
        Op::SetAuth {
            scope,
            field,
            value,
            ..
        } => {
            let v = if value.is_empty() {
                "NULL"
            } else {
                value.expose()
            };
            vec![w(auth_dir(p, scope).join(field.file()), v)]
        }
        Op::CreateTarget { target } => vec![Mkdir(p.target(target))],
        Op::DeleteTarget { target } => vec![Rmdir(p.target(target))],
        Op::CreateTpg { target, tag } => vec![Mkdir(p.tpg(target, *tag))],
        Op::DeleteTpg { target, tag, .. } => vec![Rmdir(p.tpg(target, *tag))],
        Op::SetTpg {
            target, tag, value, ..
        } => vec![match value {
            TpgSetting::Authentication(b) => {
                w(p.tpg_attrib(target, *tag, "authentication"), b01(*b))
            }
            TpgSetting::GenerateNodeAcls(b) => {
                w(p.tpg_attrib(target, *tag, "generate_node_acls"), b01(*b))
            }
            TpgSetting::DemoModeWriteProtect(b) => w(
                p.tpg_attrib(target, *tag, "demo_mode_write_protect"),
                b01(*b),
            ),
            TpgSetting::Alias(a) => w(p.tpg_param(target, *tag, "TargetAlias"), a.as_str()),
        }],
        Op::EnableTpg { target, tag } => vec![w(p.tpg_file(target, *tag, "enable"), "1")],
        Op::DisableTpg { target, tag } => vec![w(p.tpg_file(target, *tag, "enable"), "0")],
        Op::CreatePortal {
            target, tag, dir, ..
        } => vec![Mkdir(p.portal(target, *tag, dir))],
        Op::DeletePortal {
            target, tag, dir, ..
        } => vec![Rmdir(p.portal(target, *tag, dir))],
        Op::CreateLun { target, tag, lun } => vec![Mkdir(p.lun(target, *tag, *lun))],
        Op::DeleteLun { target, tag, lun } => vec![Rmdir(p.lun(target, *tag, *lun))],
        Op::LinkLun {
            target,
            tag,
            lun,
            backstore,
            link,
        } => vec![Symlink {
            target: p.backstore(backstore.hba.as_deref().unwrap_or(""), &backstore.name),
            link: p.lun_link(target, *tag, *lun, link),
        }],
        Op::UnlinkLun {
            target,
            tag,
            lun,
            link,
            ..
        } => vec![Unlink(p.lun_link(target, *tag, *lun, link))],
        Op::CreateAcl {
            target,
            tag,
            initiator,
        } => vec![Mkdir(p.acl(target, *tag, initiator))],
        Op::DeleteAcl {
            target,
            tag,
            initiator,
            ..
        } => vec![Rmdir(p.acl(target, *tag, initiator))],
        Op::SetAclAuthentication {
            target,
            tag,
            initiator,
            value,
            ..
        } => vec![w(
            p.acl_attrib(target, *tag, initiator, "authentication"),
            match value {
                None => "-1",
                Some(true) => "1",
                Some(false) => "0",
            },
        )],
        Op::CreateMappedLun {
            target,
            tag,
            initiator,
            lun,
        } => vec![Mkdir(p.mapped_lun(target, *tag, initiator, *lun))],
        Op::DeleteMappedLun {
            target,
            tag,
            initiator,
            lun,
        } => vec![Rmdir(p.mapped_lun(target, *tag, initiator, *lun))],
        Op::MapLun {
            target,
            tag,
            initiator,
            lun,
            tpg_lun,
            link,
        } => vec![Symlink {
            target: p.lun(target, *tag, *tpg_lun),
            link: p.mapped_lun(target, *tag, initiator, *lun).join(link),
        }],
        Op::UnmapLun {
            target,
            tag,
            initiator,
            lun,
            link,
            ..
        } => vec![Unlink(
            p.mapped_lun(target, *tag, initiator, *lun).join(link),
        )],
        Op::SetWriteProtect {
            target,
            tag,
            initiator,
            lun,
            value,
            ..
        } => vec![w(
            p.mapped_lun_file(target, *tag, initiator, *lun, "write_protect"),
            b01(*value),
        )],
    }
}
