//! Regular files and block devices: positional I/O on a file descriptor.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::group_sync::GroupSync;
use super::platform;
use super::{parent_dir, AllocationRun, BlockStore, LuError};

/// A regular file or a block device.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    file: File,
    /// The same file opened with `O_DSYNC`: a write through it is durable when it
    /// returns, so a FUA write syncs only itself rather than the whole file.
    dsync: Option<File>,
    len: u64,
    is_device: bool,
    /// The file lives on a memory file system (tmpfs): see [`BlockStore::in_memory`].
    in_memory: bool,
    /// Write-through storage (`write_back = false`): every write is durable, and the
    /// durable writes share their `fdatasync`s ([`FileStore::with_group_commit`]).
    group: Option<GroupSync>,
}

fn io_err(extent: &str, action: &'static str, path: &Path, source: io::Error) -> LuError {
    LuError::Io {
        extent: extent.to_string(),
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn open(path: &Path, readonly: bool, dsync: bool) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(!readonly);
    if dsync {
        opts.custom_flags(platform::DSYNC);
    }
    opts.open(path)
}

impl FileStore {
    /// Open (or create sparse) a regular backing file; see `lu::open_extent`.
    pub fn open_file(
        extent: &str,
        path: &Path,
        size: Option<u64>,
        readonly: bool,
    ) -> Result<Self, LuError> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(extent, "cannot inspect", path, e)),
        };
        let len = match meta {
            None => {
                let Some(size) = size else {
                    return Err(LuError::SizeRequired {
                        extent: extent.into(),
                        path: path.into(),
                    });
                };
                if !parent_dir(path).is_dir() {
                    return Err(LuError::NoParentDir {
                        extent: extent.into(),
                        path: path.into(),
                    });
                }
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(path)
                    .map_err(|e| io_err(extent, "cannot create", path, e))?;
                // set_len on a new file makes a sparse file: no blocks are written.
                f.set_len(size)
                    .map_err(|e| io_err(extent, "cannot size", path, e))?;
                size
            }
            Some(m) => {
                if !m.file_type().is_file() {
                    return Err(LuError::NotAFile {
                        extent: extent.into(),
                        path: path.into(),
                    });
                }
                let actual = m.len();
                match size {
                    Some(wanted) if wanted < actual => {
                        return Err(LuError::WouldShrink {
                            extent: extent.into(),
                            path: path.into(),
                            actual,
                            wanted,
                        })
                    }
                    Some(wanted) if wanted > actual && !readonly => {
                        let f = open(path, false, false)
                            .map_err(|e| io_err(extent, "cannot open", path, e))?;
                        f.set_len(wanted)
                            .map_err(|e| io_err(extent, "cannot grow", path, e))?;
                        wanted
                    }
                    _ => actual,
                }
            }
        };
        let file =
            open(path, readonly, false).map_err(|e| io_err(extent, "cannot open", path, e))?;
        let dsync = if readonly {
            None
        } else {
            Some(open(path, false, true).map_err(|e| io_err(extent, "cannot open", path, e))?)
        };
        Ok(FileStore {
            in_memory: platform::on_memory_fs(&file),
            path: path.into(),
            file,
            dsync,
            len,
            is_device: false,
            group: None,
        })
    }

    /// Open a block device; its size is the device's.
    pub fn open_device(extent: &str, path: &Path, readonly: bool) -> Result<Self, LuError> {
        let meta =
            std::fs::metadata(path).map_err(|e| io_err(extent, "cannot inspect", path, e))?;
        if !meta.file_type().is_block_device() && !meta.file_type().is_char_device() {
            return Err(LuError::NotABlockDevice {
                extent: extent.into(),
                path: path.into(),
            });
        }
        let file =
            open(path, readonly, false).map_err(|e| io_err(extent, "cannot open", path, e))?;
        let len = platform::device_size(&file)
            .map_err(|e| io_err(extent, "cannot read the size of", path, e))?;
        let dsync = if readonly {
            None
        } else {
            Some(open(path, false, true).map_err(|e| io_err(extent, "cannot open", path, e))?)
        };
        Ok(FileStore {
            path: path.into(),
            file,
            dsync,
            len,
            is_device: true,
            in_memory: false,
            group: None,
        })
    }

    /// Make durable writes share their syncs (group commit, `group_sync.rs`): for
    /// write-through storage, where every write is durable, so that a sync's cost is
    /// paid once for all the writes in flight rather than once per write. (With write-back
    /// caching a FUA write syncs only its own range instead: a whole-file sync would
    /// also write out the cached data of every other write.)
    /// `extent` names the syncer thread (`sync-<extent>`, as the workers are `io-<extent>`).
    pub fn with_group_commit(mut self, extent: &str) -> Self {
        // The syncer thread syncs through its own handle on the same open file.
        self.group = match self.file.try_clone() {
            Ok(f) => Some(GroupSync::new(extent, move || f.sync_data())),
            Err(e) => {
                tracing::warn!(
                    "{}: no group commit, each durable write syncs alone: {e}",
                    self.path.display()
                );
                None
            }
        };
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl BlockStore for FileStore {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        super::read_in_scope(
            buf,
            |b| self.read_cached(b, offset),
            |b| self.file.read_exact_at(b, offset),
        )
    }

    fn write_at(&self, buf: &[u8], offset: u64, durable: bool) -> io::Result<()> {
        match (&self.dsync, durable) {
            (Some(d), true) => match &self.group {
                Some(group) => {
                    self.file.write_all_at(buf, offset)?;
                    super::durable_after(group)
                }
                // One write made durable alone syncs only its own range (O_DSYNC), not
                // the write-back data other writes left in the page cache.
                None => d.write_all_at(buf, offset),
            },
            (None, _) => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "logical unit is read-only",
            )),
            (Some(_), false) => self.file.write_all_at(buf, offset),
        }
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn deallocate(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.dsync.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "logical unit is read-only",
            ));
        }
        if len == 0 {
            return Ok(());
        }
        match platform::punch_hole(&self.file, offset, len) {
            Ok(()) => Ok(()),
            Err(e) if platform::is_unsupported(&e) => write_zeros(&self.file, offset, len),
            Err(e) => Err(e),
        }
    }

    fn allocation(&self, offset: u64) -> io::Result<AllocationRun> {
        if self.is_device {
            // A device's own thin provisioning is not visible through lseek.
            return Ok(AllocationRun {
                status: super::Allocation::Mapped,
                len: self.len.saturating_sub(offset),
            });
        }
        platform::allocation(&self.file, offset, self.len)
    }

    fn thin(&self) -> bool {
        true
    }

    fn in_memory(&self) -> bool {
        self.in_memory
    }

    fn read_cached(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        platform::read_cached(&self.file, buf, offset)
    }
}

/// Portable fallback for deallocation: write zeros (the range then reads as zeros,
/// which is what LBPRZ promises, though no space is freed).
pub(super) fn write_zeros(file: &File, offset: u64, len: u64) -> io::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let zeros = vec![0u8; CHUNK.min(len) as usize];
    let mut done = 0u64;
    while done < len {
        let n = CHUNK.min(len - done) as usize;
        file.write_all_at(&zeros[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Allocation;
    use super::*;

    fn store(len: u64) -> (tempfile::TempDir, FileStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.img");
        let s = FileStore::open_file("x", &path, Some(len), false).unwrap();
        (dir, s)
    }

    #[test]
    fn positional_write_read_roundtrip() {
        let (_d, s) = store(1 << 20);
        s.write_at(&[0xabu8; 4096], 8192, false).unwrap();
        s.write_at(&[0xcdu8; 512], 65536, true).unwrap();
        let mut buf = vec![0u8; 4096];
        s.read_at(&mut buf, 8192).unwrap();
        assert!(buf.iter().all(|&b| b == 0xab));
        let mut buf = vec![0u8; 512];
        s.read_at(&mut buf, 65536).unwrap();
        assert!(buf.iter().all(|&b| b == 0xcd));
        s.flush().unwrap();
    }

    /// Needs a disk file system (ext4, xfs, btrfs: the page cache answers `RWF_NOWAIT`),
    /// so the file lives in the source tree, not in a `/tmp` that may be tmpfs.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_read_without_waiting_is_answered_from_the_cache_and_refused_after_eviction() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let path = dir.path().join("x.img");
        let s = FileStore::open_file("x", &path, Some(1 << 20), false).unwrap();
        assert!(
            !s.in_memory(),
            "{} is on tmpfs: this test needs a disk",
            path.display()
        );
        s.write_at(&[0x5au8; 65536], 0, false).unwrap();
        let mut buf = vec![0u8; 65536];
        let cached = super::super::without_waiting(|| s.read_at(&mut buf, 0).is_ok());
        assert_eq!(cached, Some(true), "just written: in the page cache");
        assert!(buf.iter().all(|&b| b == 0x5a));

        // Written out and dropped from the cache: the read would wait for the disk.
        s.flush().unwrap();
        nix::fcntl::posix_fadvise(
            &s.file,
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        )
        .unwrap();
        let mut buf = vec![0u8; 65536];
        let cold = super::super::without_waiting(|| s.read_at(&mut buf, 0));
        assert!(
            cold.is_none(),
            "evicted, yet read without waiting: {cold:?}"
        );
        // Outside the scope the same read waits for the disk and succeeds.
        s.read_at(&mut buf, 0).unwrap();
        assert!(buf.iter().all(|&b| b == 0x5a));
    }

    #[test]
    fn deallocate_reads_back_zeros_and_reports_holes() {
        let (_d, s) = store(4 << 20);
        s.write_at(&vec![0x55u8; 1 << 20], 0, false).unwrap();
        s.deallocate(0, 512 * 1024).unwrap();
        let mut buf = vec![1u8; 512 * 1024];
        s.read_at(&mut buf, 0).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
        let mut buf = vec![0u8; 4096];
        s.read_at(&mut buf, 512 * 1024).unwrap();
        assert!(buf.iter().all(|&b| b == 0x55), "outside the range is kept");
        // Where the platform punches holes, the range is reported deallocated.
        if cfg!(any(
            target_os = "linux",
            target_os = "freebsd",
            target_os = "macos"
        )) {
            let run = s.allocation(0).unwrap();
            assert_eq!(run.status, Allocation::Deallocated, "{run:?}");
            assert_eq!(run.len, 512 * 1024);
            let run = s.allocation(512 * 1024).unwrap();
            assert_eq!(run.status, Allocation::Mapped);
            assert_eq!(run.len, 512 * 1024);
            let run = s.allocation(1 << 20).unwrap();
            assert_eq!(run.status, Allocation::Deallocated);
            assert_eq!(run.len, 3 << 20);
        }
    }

    #[test]
    fn zero_fallback_zeroes_range() {
        let (_d, s) = store(1 << 20);
        s.write_at(&[9u8; 8192], 0, false).unwrap();
        write_zeros(&s.file, 512, 1024).unwrap();
        let mut buf = vec![0u8; 8192];
        s.read_at(&mut buf, 0).unwrap();
        assert!(buf[..512].iter().all(|&b| b == 9));
        assert!(buf[512..1536].iter().all(|&b| b == 0));
        assert!(buf[1536..].iter().all(|&b| b == 9));
    }
}
