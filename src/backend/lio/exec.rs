//! Expanding an [`Op`] into configfs syscalls, and running them.
//!
//! Each op has a fixed list of syscalls ([`expand`]), so a plan knows its exact
//! configfs operation count before it runs. Values are written without a trailing
//! newline (credentials would keep it, docs/configfs.md §0.1/§3.5); a cleared CHAP
//! value is written as `NULL` (§3.5). Symlinks point at absolute configfs paths.

use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::plan::{
    AclAddr, AuthScope, BackstoreSetting, LunAddr, MappedLunAddr, Op, TpgAddr, TpgSetting,
};
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

fn tpg_dir(p: &Paths, a: &TpgAddr) -> PathBuf {
    p.tpg(&a.target, a.tag)
}

fn lun_dir(p: &Paths, a: &LunAddr) -> PathBuf {
    p.lun(&a.tpg.target, a.tpg.tag, a.lun)
}

fn acl_dir(p: &Paths, a: &AclAddr) -> PathBuf {
    p.acl(&a.tpg.target, a.tpg.tag, &a.initiator)
}

fn mapped_lun_dir(p: &Paths, a: &MappedLunAddr) -> PathBuf {
    p.mapped_lun(&a.acl.tpg.target, a.acl.tpg.tag, &a.acl.initiator, a.lun)
}

fn auth_dir(p: &Paths, scope: &AuthScope) -> PathBuf {
    match scope {
        AuthScope::Discovery => p.iscsi().join("discovery_auth"),
        AuthScope::Tpg(tpg) => tpg_dir(p, tpg).join("auth"),
        AuthScope::Acl(acl) => acl_dir(p, acl).join("auth"),
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
            BackstoreSetting::Attribute(a, v) => w(p.backstore_attrib(hba, name, a), v.as_str()),
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
        Op::CreateTarget { target } => vec![Mkdir(p.target(&target.target))],
        Op::DeleteTarget { target } => vec![Rmdir(p.target(&target.target))],
        Op::CreateTpg { tpg } => vec![Mkdir(tpg_dir(p, tpg))],
        Op::DeleteTpg { tpg, .. } => vec![Rmdir(tpg_dir(p, tpg))],
        Op::SetTpg { tpg, value, .. } => {
            let attrib = |name: &str| tpg_dir(p, tpg).join("attrib").join(name);
            vec![match value {
                TpgSetting::Authentication(b) => w(attrib("authentication"), b01(*b)),
                TpgSetting::GenerateNodeAcls(b) => w(attrib("generate_node_acls"), b01(*b)),
                TpgSetting::DemoModeWriteProtect(b) => {
                    w(attrib("demo_mode_write_protect"), b01(*b))
                }
                TpgSetting::Alias(a) => w(
                    tpg_dir(p, tpg).join("param").join("TargetAlias"),
                    a.as_str(),
                ),
                TpgSetting::Attribute(path, v) => w(tpg_dir(p, tpg).join(path), v.as_str()),
            }]
        }
        Op::EnableTpg { tpg } => vec![w(tpg_dir(p, tpg).join("enable"), "1")],
        Op::DisableTpg { tpg } => vec![w(tpg_dir(p, tpg).join("enable"), "0")],
        Op::CreatePortal { tpg, dir, .. } => vec![Mkdir(p.portal(&tpg.target, tpg.tag, dir))],
        Op::DeletePortal { tpg, dir, .. } => vec![Rmdir(p.portal(&tpg.target, tpg.tag, dir))],
        Op::CreateLun { lun } => vec![Mkdir(lun_dir(p, lun))],
        Op::DeleteLun { lun } => vec![Rmdir(lun_dir(p, lun))],
        Op::LinkLun {
            lun,
            backstore,
            link,
        } => vec![Symlink {
            target: p.backstore(backstore.hba.as_deref().unwrap_or(""), &backstore.name),
            link: lun_dir(p, lun).join(link),
        }],
        Op::UnlinkLun { lun, link, .. } => vec![Unlink(lun_dir(p, lun).join(link))],
        Op::CreateAcl { acl } => vec![Mkdir(acl_dir(p, acl))],
        Op::DeleteAcl { acl, .. } => vec![Rmdir(acl_dir(p, acl))],
        Op::SetAclAuthentication { acl, value, .. } => vec![w(
            acl_dir(p, acl).join("attrib").join("authentication"),
            match value {
                None => "-1",
                Some(true) => "1",
                Some(false) => "0",
            },
        )],
        Op::SetAclAttribute {
            acl, path, value, ..
        } => vec![w(acl_dir(p, acl).join(path), value.as_str())],
        Op::CreateMappedLun { mapped } => vec![Mkdir(mapped_lun_dir(p, mapped))],
        Op::DeleteMappedLun { mapped } => vec![Rmdir(mapped_lun_dir(p, mapped))],
        Op::MapLun {
            mapped,
            tpg_lun,
            link,
        } => vec![Symlink {
            target: p.lun(&mapped.acl.tpg.target, mapped.acl.tpg.tag, *tpg_lun),
            link: mapped_lun_dir(p, mapped).join(link),
        }],
        Op::UnmapLun { mapped, link, .. } => vec![Unlink(mapped_lun_dir(p, mapped).join(link))],
        Op::SetWriteProtect { mapped, value, .. } => vec![w(
            mapped_lun_dir(p, mapped).join("write_protect"),
            b01(*value),
        )],
    }
}
