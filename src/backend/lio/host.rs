//! [`Host`]: the backing files and devices next to the kernel target. The kernel
//! creates a missing fileio file with size 0 and never sizes it (docs/configfs.md
//! §2.2), so isctl creates files sparse and grows them itself — never shrinks or
//! deletes them.

use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::state::{DeviceFact, FileFact};

/// Host-side file operations of the LIO backend.
pub trait Host: Send + Sync {
    fn file_fact(&self, path: &Path) -> FileFact;
    fn device_fact(&self, path: &Path) -> DeviceFact;
    /// Create a new sparse file of `size` bytes (mode 0600); fails if it exists.
    fn create_sparse(&self, path: &Path, size: u64) -> io::Result<()>;
    /// Grow an existing file to `size` bytes; never shrinks.
    fn grow(&self, path: &Path, size: u64) -> io::Result<()>;
}

/// The real host filesystem and sysfs.
#[derive(Debug, Clone)]
pub struct RealHost {
    /// `/sys` (a parameter for tests).
    pub sysfs: PathBuf,
}

impl Default for RealHost {
    fn default() -> Self {
        RealHost {
            sysfs: PathBuf::from("/sys"),
        }
    }
}

fn describe(ft: &std::fs::FileType) -> String {
    if ft.is_dir() {
        "a directory".into()
    } else if ft.is_block_device() {
        "a block device".into()
    } else if ft.is_char_device() {
        "a character device".into()
    } else if ft.is_fifo() {
        "a FIFO".into()
    } else if ft.is_socket() {
        "a socket".into()
    } else {
        "not a regular file".into()
    }
}

impl Host for RealHost {
    fn file_fact(&self, path: &Path) -> FileFact {
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => FileFact::Regular { size: m.len() },
            Ok(m) => FileFact::NotRegular {
                what: describe(&m.file_type()),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => FileFact::Missing {
                parent_exists: path.parent().is_some_and(|p| p.is_dir()),
            },
            Err(e) => FileFact::Unknown {
                error: e.to_string(),
            },
        }
    }

    fn device_fact(&self, path: &Path) -> DeviceFact {
        use std::os::unix::fs::MetadataExt;
        let m = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(_) => return DeviceFact::Missing,
        };
        if !m.file_type().is_block_device() {
            return DeviceFact::NotBlock {
                what: describe(&m.file_type()),
            };
        }
        let rdev = m.rdev();
        let (major, minor) = (libc::major(rdev), libc::minor(rdev));
        let dev = self.sysfs.join(format!("dev/block/{major}:{minor}"));
        // Partitions have no queue/ of their own: use the parent disk's.
        let queue = [dev.join("queue"), dev.join("../queue")]
            .into_iter()
            .find(|q| q.is_dir());
        let read = |name: &str| -> Option<String> {
            let q = queue.as_ref()?;
            std::fs::read_to_string(q.join(name))
                .ok()
                .map(|s| s.trim().to_string())
        };
        DeviceFact::Block {
            logical_block_size: read("logical_block_size").and_then(|s| s.parse().ok()),
            rotational: read("rotational").map(|s| s == "1"),
        }
    }

    fn create_sparse(&self, path: &Path, size: u64) -> io::Result<()> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        f.set_len(size)?;
        f.sync_all()
    }

    fn grow(&self, path: &Path, size: u64) -> io::Result<()> {
        let f = std::fs::OpenOptions::new().write(true).open(path)?;
        let len = f.metadata()?.len();
        if size > len {
            f.set_len(size)?;
            f.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_sparse_grows_never_shrinks() {
        let dir = tempfile::tempdir().unwrap();
        let h = RealHost::default();
        let p = dir.path().join("a.img");
        assert_eq!(
            h.file_fact(&p),
            FileFact::Missing {
                parent_exists: true
            }
        );
        h.create_sparse(&p, 1 << 20).unwrap();
        assert_eq!(h.file_fact(&p), FileFact::Regular { size: 1 << 20 });
        assert!(h.create_sparse(&p, 1).is_err(), "never overwrites");
        h.grow(&p, 2 << 20).unwrap();
        h.grow(&p, 1).unwrap();
        assert_eq!(h.file_fact(&p), FileFact::Regular { size: 2 << 20 });
        assert_eq!(
            h.file_fact(&dir.path().join("no/such")),
            FileFact::Missing {
                parent_exists: false
            }
        );
        assert!(matches!(
            h.file_fact(dir.path()),
            FileFact::NotRegular { .. }
        ));
    }
}
