//! A simulated LIO configfs (and the host files next to it), for tests.
//!
//! Owns: an in-memory model of `/sys/kernel/config/target` that behaves like the
//! real 6.1 kernel as recorded in docs/configfs.md: default groups and attribute
//! files with their default values appear on mkdir, read-back formats, the storage
//! object enable protocol (attributes reset at enable, frozen while exported),
//! the errnos the kernel gives, portal conflicts, symlink rules and dead mappings,
//! sessions (injected by tests), fault injection, latency emulation and counters of
//! every operation by kind. Every quirk cites its section.
//! Does not: prove anything about the kernel. It is a test aid; the VM tests judge
//! the real backend.
//! In: [`ConfigFs`] and [`Host`] calls. Out: their results, counters.
//!
//! `ISCTL_SIMULATE=<file>` makes the CLI use a simulator persisted in a JSON file
//! (see [`Sim::load`] / [`Sim::save`]), so that the binary can be exercised end to
//! end without a kernel.

mod kernel;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::lio::{ConfigFs, DirEntry, Host};
use crate::state::{DeviceFact, FileFact};

pub use kernel::SimSession;

/// Kinds of configfs calls, for counters and fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Mkdir,
    Rmdir,
    Write,
    Symlink,
    Unlink,
    Read,
    ReadDir,
    ReadLink,
}

impl OpKind {
    /// Calls that change the tree.
    pub fn is_mutation(self) -> bool {
        matches!(
            self,
            OpKind::Mkdir | OpKind::Rmdir | OpKind::Write | OpKind::Symlink | OpKind::Unlink
        )
    }
}

/// A fault to inject: the matching call fails with `errno` (before doing anything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Only calls of this kind (any when `None`).
    pub kind: Option<OpKind>,
    /// Only paths containing this text (any when `None`).
    pub path_contains: Option<String>,
    /// Only the n-th mutating call (1-based, counted from when the fault was added).
    pub nth_mutation: Option<u64>,
    pub errno: i32,
    /// How many times it fires.
    pub times: u32,
}

/// Emulated latency of the kernel's slow operations (docs/configfs.md §9: RCU grace
/// periods, timer-bound, so concurrent callers overlap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Latency {
    /// Every call.
    pub base: Duration,
    /// LUN symlink create (≈10 ms).
    pub lun_link: Duration,
    /// LUN symlink remove (≈23 ms).
    pub lun_unlink: Duration,
    /// rmdir of a TPG (≈24 ms).
    pub rmdir_tpg: Duration,
    /// rmdir of a storage object (≈12 ms).
    pub rmdir_backstore: Duration,
}

impl Latency {
    /// The figures measured under TCG (docs/configfs.md §9).
    pub fn measured() -> Latency {
        Latency {
            base: Duration::from_micros(100),
            lun_link: Duration::from_millis(10),
            lun_unlink: Duration::from_millis(23),
            rmdir_tpg: Duration::from_millis(24),
            rmdir_backstore: Duration::from_millis(12),
        }
    }
}

/// The simulator. Thread-safe (the apply executor writes from several threads).
pub struct Sim {
    root: PathBuf,
    inner: Mutex<kernel::Kernel>,
    faults: Mutex<(u64, Vec<Fault>)>,
    /// A simulated crash: after this many more mutating calls, every further one
    /// panics (the process died; nothing more reaches the kernel).
    crash_after: Mutex<Option<u64>>,
    latency: Mutex<Latency>,
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

impl Sim {
    /// A fresh kernel: `target_core_mod` loaded, configfs mounted, no iSCSI fabric
    /// yet (docs/configfs.md §1: `find $C` shows `core/alua/...`, `dbroot`,
    /// `version`). The host has `/` and `/tmp`.
    pub fn new(root: &Path) -> Sim {
        Sim {
            root: super::lio::paths::normalize(root),
            inner: Mutex::new(kernel::Kernel::new()),
            faults: Mutex::new((0, Vec::new())),
            crash_after: Mutex::new(None),
            latency: Mutex::new(Latency::default()),
        }
    }

    /// The conventional root (`/sys/kernel/config/target`).
    pub fn default_root() -> PathBuf {
        PathBuf::from("/sys/kernel/config/target")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, kernel::Kernel> {
        // A panic in another test thread must not hide this one's result.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Load a simulator persisted by [`Sim::save`] (or a fresh one if the file does
    /// not exist).
    pub fn load(file: &Path, root: &Path) -> io::Result<Sim> {
        let sim = Sim::new(root);
        match std::fs::read(file) {
            Ok(bytes) => {
                let k: kernel::Kernel = serde_json::from_slice(&bytes)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                *sim.lock() = k;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(sim)
    }

    /// Persist the whole simulated kernel and host as JSON (atomically).
    pub fn save(&self, file: &Path) -> io::Result<()> {
        let json = serde_json::to_vec(&*self.lock())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, json)?;
        std::fs::rename(tmp, file)
    }

    // ----------------------------------------------------------------- test knobs

    /// Operations performed, by kind (failed attempts included).
    pub fn counts(&self) -> BTreeMap<OpKind, u64> {
        self.lock().counts.clone()
    }

    /// Mutating operations (mkdir, rmdir, write, symlink, unlink) performed.
    pub fn mutations(&self) -> u64 {
        self.lock()
            .counts
            .iter()
            .filter(|(k, _)| k.is_mutation())
            .map(|(_, v)| v)
            .sum()
    }

    pub fn reset_counts(&self) {
        self.lock().counts.clear();
    }

    pub fn inject(&self, fault: Fault) {
        let mut f = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        f.0 = 0;
        f.1.push(fault);
    }

    /// Simulate isctl dying (SIGKILL, OOM, power loss) after `n` more mutating
    /// calls: the next ones panic, so the caller unwinds without rollback or ledger
    /// update, and the simulated kernel keeps exactly the first `n` changes.
    pub fn crash_after_mutations(&self, n: u64) {
        self.faults.lock().unwrap_or_else(|e| e.into_inner()).0 = 0;
        *self.crash_after.lock().unwrap_or_else(|e| e.into_inner()) = Some(n);
    }

    /// The simulated kernel outlives the crashed process: serve calls again.
    pub fn recover(&self) {
        *self.crash_after.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Make the n-th mutating call from now fail with `errno`.
    pub fn fail_nth_mutation(&self, n: u64, errno: i32) {
        self.inject(Fault {
            kind: None,
            path_contains: None,
            nth_mutation: Some(n),
            errno,
            times: 1,
        });
    }

    /// Make the next call of `kind` on a path containing `text` fail with `errno`.
    pub fn fail_path(&self, kind: OpKind, text: &str, errno: i32) {
        self.inject(Fault {
            kind: Some(kind),
            path_contains: Some(text.to_string()),
            nth_mutation: None,
            errno,
            times: 1,
        });
    }

    pub fn clear_faults(&self) {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clear();
    }

    pub fn set_latency(&self, l: Latency) {
        *self.latency.lock().unwrap_or_else(|e| e.into_inner()) = l;
    }

    /// Log an initiator in (the TPG must exist and be enabled; an ACL must exist
    /// for it unless the TPG is in demo mode). Returns the TSIH.
    pub fn add_session(
        &self,
        target: &str,
        tag: u16,
        initiator: &str,
        address: &str,
    ) -> Result<u16, String> {
        self.lock().add_session(target, tag, initiator, address)
    }

    pub fn sessions(&self) -> Vec<SimSession> {
        self.lock().sessions.clone()
    }

    /// A host directory (and its ancestors) that exists.
    pub fn add_host_dir(&self, dir: &Path) {
        let mut k = self.lock();
        let mut d = Some(dir);
        while let Some(p) = d {
            k.host_dirs.insert(p.to_path_buf());
            d = p.parent();
        }
    }

    /// A host regular file of `size` bytes (its directory is added too).
    pub fn add_host_file(&self, path: &Path, size: u64) {
        if let Some(p) = path.parent() {
            self.add_host_dir(p);
        }
        self.lock().host_files.insert(path.to_path_buf(), size);
    }

    /// The size of a host file, if it exists.
    pub fn host_file_size(&self, path: &Path) -> Option<u64> {
        self.lock().host_files.get(path).copied()
    }

    /// A host block device. Its device number follows Linux's conventions: `/dev/ramN`
    /// is 1:N (brd), `/dev/loopN` 7:N, anything else the next SCSI disk (8:0, 8:16, …).
    pub fn add_block_device(&self, path: &Path, logical_block_size: u32, rotational: bool) {
        let mut k = self.lock();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let numbered = |prefix: &str| {
            name.as_deref()
                .and_then(|n| n.strip_prefix(prefix))
                .and_then(|n| n.parse::<u32>().ok())
        };
        let (major, minor) = if let Some(n) = numbered("ram") {
            (1, n)
        } else if let Some(n) = numbered("loop") {
            (7, n)
        } else {
            let disks = k.devices.values().filter(|d| d.major == 8).count();
            (8, 16 * u32::try_from(disks).unwrap_or(u32::MAX / 16))
        };
        k.devices.insert(
            path.to_path_buf(),
            kernel::SimDevice {
                logical_block_size,
                rotational,
                major,
                minor,
            },
        );
    }

    /// Every path in the simulated tree (relative to the root), with its kind and,
    /// for files, what a read returns: a structural snapshot for tests.
    pub fn dump(&self) -> BTreeMap<String, String> {
        let k = self.lock();
        k.dump()
    }

    /// Pretend to be this kernel release (`uname -r`) in `version`, so that a transcript
    /// recorded on a real kernel can be replayed verbatim.
    pub fn set_kernel_release(&self, release: &str) {
        self.lock().set_release(release);
    }

    /// Permission bits of a path (lstat(2)), for fidelity checks against the kernel.
    pub fn mode(&self, path: &Path) -> io::Result<u32> {
        let rel = self.rel(path)?;
        self.lock().mode(&rel).map_err(errno)
    }

    // ----------------------------------------------------------------- plumbing

    fn rel(&self, path: &Path) -> io::Result<String> {
        let p = super::lio::paths::normalize(path);
        if p == self.root {
            return Ok(String::new());
        }
        match p.strip_prefix(&self.root) {
            Ok(r) => Ok(r.to_string_lossy().into_owned()),
            Err(_) => Err(errno(libc::ENOENT)),
        }
    }

    /// Latency, counters and faults, before the call is carried out.
    fn pre(&self, kind: OpKind, rel: &str) -> io::Result<()> {
        let lat = *self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let mut sleep = lat.base;
        let comps: Vec<&str> = rel.split('/').collect();
        match (kind, comps.as_slice()) {
            (OpKind::Symlink, ["iscsi", _, _, "lun", _, _]) => sleep += lat.lun_link,
            (OpKind::Unlink, ["iscsi", _, _, "lun", _, _]) => sleep += lat.lun_unlink,
            (OpKind::Rmdir, ["iscsi", _, _]) => sleep += lat.rmdir_tpg,
            (OpKind::Rmdir, ["core", _, _]) => sleep += lat.rmdir_backstore,
            _ => {}
        }
        if !sleep.is_zero() {
            // Outside every lock: the real waits are RCU grace periods that
            // concurrent writers share (§9).
            std::thread::sleep(sleep);
        }
        *self.lock().counts.entry(kind).or_default() += 1;
        if kind.is_mutation() {
            let mut f = self.faults.lock().unwrap_or_else(|e| e.into_inner());
            f.0 += 1;
            let n = f.0;
            let crash = *self.crash_after.lock().unwrap_or_else(|e| e.into_inner());
            if crash.is_some_and(|limit| n > limit) {
                drop(f);
                panic!("simulated crash before mutation {n} ({kind:?} {rel})");
            }
            for fault in f.1.iter_mut() {
                if fault.times == 0 {
                    continue;
                }
                let hit = fault.kind.is_none_or(|k| k == kind)
                    && fault
                        .path_contains
                        .as_deref()
                        .is_none_or(|t| rel.contains(t))
                    && fault.nth_mutation.is_none_or(|x| x == n);
                if hit {
                    fault.times -= 1;
                    return Err(errno(fault.errno));
                }
            }
        }
        Ok(())
    }
}

impl ConfigFs for Sim {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let rel = self.rel(path)?;
        self.pre(OpKind::Read, &rel)?;
        self.lock().read(&rel).map_err(errno)
    }

    fn write(&self, path: &Path, value: &[u8]) -> io::Result<()> {
        let rel = self.rel(path)?;
        self.pre(OpKind::Write, &rel)?;
        self.lock().write(&rel, value).map_err(errno)
    }

    fn mkdir(&self, path: &Path) -> io::Result<()> {
        let rel = self.rel(path)?;
        self.pre(OpKind::Mkdir, &rel)?;
        self.lock().mkdir(&rel).map_err(errno)
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        let rel = self.rel(path)?;
        self.pre(OpKind::Rmdir, &rel)?;
        self.lock().rmdir(&rel).map_err(errno)
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        let rel = self.rel(link)?;
        self.pre(OpKind::Symlink, &rel)?;
        // A target outside configfs → EPERM (§1).
        let trel = self.rel(target).map_err(|_| errno(libc::EPERM))?;
        self.lock().symlink(&trel, &rel).map_err(errno)
    }

    fn unlink(&self, link: &Path) -> io::Result<()> {
        let rel = self.rel(link)?;
        self.pre(OpKind::Unlink, &rel)?;
        self.lock().unlink(&rel).map_err(errno)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let rel = self.rel(path)?;
        self.pre(OpKind::ReadDir, &rel)?;
        self.lock().read_dir(&rel).map_err(errno)
    }

    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        let rel = self.rel(path)?;
        self.pre(OpKind::ReadLink, &rel)?;
        let root_name = self
            .root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "target".into());
        self.lock().read_link(&rel, &root_name).map_err(errno)
    }

    fn exists(&self, path: &Path) -> bool {
        match self.rel(path) {
            Ok(rel) => self.lock().nodes.contains_key(&rel),
            Err(_) => false,
        }
    }
}

impl Host for Sim {
    fn file_fact(&self, path: &Path) -> FileFact {
        let k = self.lock();
        if let Some(size) = k.host_files.get(path) {
            FileFact::Regular { size: *size }
        } else if k.devices.contains_key(path) {
            FileFact::NotRegular {
                what: "a block device".into(),
            }
        } else if k.host_dirs.contains(path) {
            FileFact::NotRegular {
                what: "a directory".into(),
            }
        } else {
            FileFact::Missing {
                parent_exists: path.parent().is_some_and(|p| k.host_dirs.contains(p)),
            }
        }
    }

    fn device_fact(&self, path: &Path) -> DeviceFact {
        let k = self.lock();
        match k.devices.get(path) {
            Some(d) => DeviceFact::Block {
                logical_block_size: Some(d.logical_block_size),
                rotational: Some(d.rotational),
            },
            None if k.host_files.contains_key(path) => DeviceFact::NotBlock {
                what: "a regular file".into(),
            },
            None => DeviceFact::Missing,
        }
    }

    fn create_sparse(&self, path: &Path, size: u64) -> io::Result<()> {
        let mut k = self.lock();
        if k.host_files.contains_key(path) || k.devices.contains_key(path) {
            return Err(errno(libc::EEXIST));
        }
        if !path.parent().is_some_and(|p| k.host_dirs.contains(p)) {
            return Err(errno(libc::ENOENT));
        }
        k.host_files.insert(path.to_path_buf(), size);
        Ok(())
    }

    fn grow(&self, path: &Path, size: u64) -> io::Result<()> {
        let mut k = self.lock();
        match k.host_files.get_mut(path) {
            Some(s) => {
                *s = (*s).max(size);
                Ok(())
            }
            None => Err(errno(libc::ENOENT)),
        }
    }
}

/// Set of paths helper for tests: what exists under a prefix.
pub fn paths_under(dump: &BTreeMap<String, String>, prefix: &str) -> BTreeSet<String> {
    dump.keys()
        .filter(|k| k.starts_with(prefix))
        .cloned()
        .collect()
}
