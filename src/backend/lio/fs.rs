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
    /// (lio-configfs.md §1: one value per write).
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
