//! Every configfs path the LIO backend touches, in one place (docs/configfs.md §2, §3).

use std::path::{Component, Path, PathBuf};

/// Paths under one configfs root (`/sys/kernel/config/target` on a real host).
#[derive(Debug, Clone)]
pub struct Paths {
    root: PathBuf,
}

/// The `tpgt_<tag>` directory name (always decimal, docs/configfs.md §3.1).
pub fn tpg_dir(tag: u16) -> String {
    format!("tpgt_{tag}")
}

/// The `lun_<n>` directory name of a TPG LUN or a mapped LUN.
pub fn lun_dir(lun: u64) -> String {
    format!("lun_{lun}")
}

impl Paths {
    pub fn new(root: &Path) -> Paths {
        Paths {
            root: normalize(root),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `path` relative to the root, for messages (`core/fileio_0/lun0`).
    pub fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| path.display().to_string())
    }

    // --- core (backstores)
    pub fn core(&self) -> PathBuf {
        self.root.join("core")
    }
    pub fn hba(&self, hba: &str) -> PathBuf {
        self.core().join(hba)
    }
    pub fn backstore(&self, hba: &str, name: &str) -> PathBuf {
        self.hba(hba).join(name)
    }
    /// A file of a storage object: `control`, `enable`, `info`, `udev_path`, ...
    pub fn backstore_file(&self, hba: &str, name: &str, file: &str) -> PathBuf {
        self.backstore(hba, name).join(file)
    }
    pub fn backstore_attrib(&self, hba: &str, name: &str, attrib: &str) -> PathBuf {
        self.backstore(hba, name).join("attrib").join(attrib)
    }
    pub fn backstore_wwn(&self, hba: &str, name: &str, file: &str) -> PathBuf {
        self.backstore(hba, name).join("wwn").join(file)
    }
    pub fn backstore_alua(&self, hba: &str, name: &str) -> PathBuf {
        self.backstore(hba, name).join("alua")
    }

    // --- iSCSI fabric
    pub fn iscsi(&self) -> PathBuf {
        self.root.join("iscsi")
    }
    pub fn discovery_auth(&self, file: &str) -> PathBuf {
        self.iscsi().join("discovery_auth").join(file)
    }
    pub fn target(&self, iqn: &str) -> PathBuf {
        self.iscsi().join(iqn)
    }
    pub fn tpg(&self, iqn: &str, tag: u16) -> PathBuf {
        self.target(iqn).join(tpg_dir(tag))
    }
    /// A file of a TPG: `enable`, `dynamic_sessions`.
    pub fn tpg_file(&self, iqn: &str, tag: u16, file: &str) -> PathBuf {
        self.tpg(iqn, tag).join(file)
    }
    pub fn tpg_attrib(&self, iqn: &str, tag: u16, attrib: &str) -> PathBuf {
        self.tpg(iqn, tag).join("attrib").join(attrib)
    }
    pub fn tpg_param(&self, iqn: &str, tag: u16, param: &str) -> PathBuf {
        self.tpg(iqn, tag).join("param").join(param)
    }
    pub fn tpg_auth(&self, iqn: &str, tag: u16, file: &str) -> PathBuf {
        self.tpg(iqn, tag).join("auth").join(file)
    }
    pub fn portals(&self, iqn: &str, tag: u16) -> PathBuf {
        self.tpg(iqn, tag).join("np")
    }
    pub fn portal(&self, iqn: &str, tag: u16, dir: &str) -> PathBuf {
        self.portals(iqn, tag).join(dir)
    }
    pub fn luns(&self, iqn: &str, tag: u16) -> PathBuf {
        self.tpg(iqn, tag).join("lun")
    }
    pub fn lun(&self, iqn: &str, tag: u16, lun: u64) -> PathBuf {
        self.luns(iqn, tag).join(lun_dir(lun))
    }
    pub fn lun_link(&self, iqn: &str, tag: u16, lun: u64, link: &str) -> PathBuf {
        self.lun(iqn, tag, lun).join(link)
    }
    pub fn acls(&self, iqn: &str, tag: u16) -> PathBuf {
        self.tpg(iqn, tag).join("acls")
    }
    pub fn acl(&self, iqn: &str, tag: u16, initiator: &str) -> PathBuf {
        self.acls(iqn, tag).join(initiator)
    }
    /// A file of an ACL: `info`, `cmdsn_depth`, `tag`.
    pub fn acl_file(&self, iqn: &str, tag: u16, initiator: &str, file: &str) -> PathBuf {
        self.acl(iqn, tag, initiator).join(file)
    }
    pub fn acl_attrib(&self, iqn: &str, tag: u16, initiator: &str, attrib: &str) -> PathBuf {
        self.acl(iqn, tag, initiator).join("attrib").join(attrib)
    }
    pub fn acl_auth(&self, iqn: &str, tag: u16, initiator: &str, file: &str) -> PathBuf {
        self.acl(iqn, tag, initiator).join("auth").join(file)
    }
    pub fn mapped_lun(&self, iqn: &str, tag: u16, initiator: &str, lun: u64) -> PathBuf {
        self.acl(iqn, tag, initiator).join(lun_dir(lun))
    }
    pub fn mapped_lun_file(
        &self,
        iqn: &str,
        tag: u16,
        initiator: &str,
        lun: u64,
        file: &str,
    ) -> PathBuf {
        self.mapped_lun(iqn, tag, initiator, lun).join(file)
    }

    /// Resolve a symlink found at `link` whose `readlink` is `target` (relative paths
    /// climb to the configfs mount and descend again, docs/configfs.md §1) into the
    /// components below the root (`["core", "fileio_0", "lun0"]`). `None` when it
    /// points outside the root.
    pub fn resolve_link(&self, link: &Path, target: &Path) -> Option<Vec<String>> {
        let abs = if target.is_absolute() {
            normalize(target)
        } else {
            normalize(&link.parent()?.join(target))
        };
        let rel = abs.strip_prefix(&self.root).ok()?;
        Some(
            rel.components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect(),
        )
    }
}

/// Lexical normalisation (`.` and `..` folded; symlinks not followed).
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_kernel_relative_links() {
        let p = Paths::new(Path::new("/sys/kernel/config/target/"));
        let link = p.lun_link("iqn.x:t", 1, 0, "a1b2c3d4e5");
        let got = p.resolve_link(
            &link,
            Path::new("../../../../../../target/core/fileio_0/fio0"),
        );
        assert_eq!(
            got,
            Some(vec!["core".into(), "fileio_0".into(), "fio0".into()])
        );
        let m = p.mapped_lun("iqn.x:t", 1, "iqn.i:c", 0).join("x");
        let got = p.resolve_link(
            &m,
            Path::new("../../../../../../../target/iscsi/iqn.x:t/tpgt_1/lun/lun_0"),
        );
        assert_eq!(got.unwrap().join("/"), "iscsi/iqn.x:t/tpgt_1/lun/lun_0");
        assert!(p.resolve_link(&link, Path::new("/tmp/elsewhere")).is_none());
    }
}
