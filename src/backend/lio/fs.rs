//! [`ConfigFs`]: the handful of filesystem calls the LIO backend makes, so that the
//! real configfs and the simulator are interchangeable; [`RealConfigFs`] does them
//! with plain syscalls.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The type of a directory entry (symlinks are not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub kind: EntryKind,
}

/// Configfs as the LIO backend uses it. Paths are absolute (under the root).
pub trait ConfigFs: Send + Sync {
    /// Whole file content.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// One `write(2)` of the whole value, no `O_CREAT`, no `O_TRUNC`
    /// (docs/configfs.md §1: one value per write).
    fn write(&self, path: &Path, value: &[u8]) -> io::Result<()>;
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    /// `symlink(target, link)`; `target` is an absolute configfs path.
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    fn unlink(&self, link: &Path) -> io::Result<()>;
    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>>;
    /// The raw link text (the kernel returns a relative path).
    fn read_link(&self, path: &Path) -> io::Result<PathBuf>;
    fn exists(&self, path: &Path) -> bool;
}

/// The real thing: std/libc syscalls on the given paths.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealConfigFs;

impl ConfigFs for RealConfigFs {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn write(&self, path: &Path, value: &[u8]) -> io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        // configfs stores a value per write(2): never split it (a short write
        // would be a partial value, so it is an error, not a retry).
        let n = f.write(value)?;
        if n != value.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {n} of {} bytes", value.len()),
            ));
        }
        Ok(())
    }

    fn mkdir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn unlink(&self, link: &Path) -> io::Result<()> {
        std::fs::remove_file(link)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(path)? {
            let e = e?;
            let t = e.file_type()?;
            let kind = if t.is_symlink() {
                EntryKind::Symlink
            } else if t.is_dir() {
                EntryKind::Dir
            } else {
                EntryKind::File
            };
            out.push(DirEntry {
                name: e.file_name().to_string_lossy().into_owned(),
                kind,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        std::fs::read_link(path)
    }

    fn exists(&self, path: &Path) -> bool {
        path.symlink_metadata().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_configfs_calls_on_a_plain_directory() {
        let d = tempfile::tempdir().unwrap();
        let fs = RealConfigFs;
        let a = d.path().join("a");
        fs.mkdir(&a).unwrap();
        assert_eq!(fs.mkdir(&a).unwrap_err().raw_os_error(), Some(libc::EEXIST));
        // write never creates (no O_CREAT): configfs attributes exist already.
        let f = a.join("attr");
        assert_eq!(
            fs.write(&f, b"1").unwrap_err().raw_os_error(),
            Some(libc::ENOENT)
        );
        std::fs::write(&f, b"old value").unwrap();
        fs.write(&f, b"new").unwrap();
        // No O_TRUNC either: configfs replaces the value per write(2).
        assert_eq!(fs.read(&f).unwrap(), b"new value");
        let l = d.path().join("link");
        fs.symlink(&a, &l).unwrap();
        assert_eq!(fs.read_link(&l).unwrap(), a);
        let kinds: Vec<(String, EntryKind)> = fs
            .read_dir(d.path())
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("a".into(), EntryKind::Dir),
                ("link".into(), EntryKind::Symlink)
            ]
        );
        assert_eq!(
            fs.rmdir(&a).unwrap_err().raw_os_error(),
            Some(libc::ENOTEMPTY)
        );
        fs.unlink(&l).unwrap();
        assert!(!fs.exists(&l));
        assert!(fs.exists(&a));
    }
}
