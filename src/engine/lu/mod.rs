//! Logical units: the storage behind each LUN the engine serves.
//!
//! Owns: opening a model [`Extent`] as a [`LogicalUnit`] (file, block device or
//! ramdisk), its identity (serial, NAA designator, block size, rotation rate, read-only)
//! and positional block I/O through the [`BlockStore`] trait: read, write (optionally
//! durable, for FUA), flush, deallocate (hole punching) and allocation status; the
//! LU's I/O threads ([`IoWorkers`], `workers.rs`) that run its commands concurrently;
//! and the two ways a command runs without holding a thread for the device: reads from
//! the page cache only ([`without_waiting`]) and durable writes whose sync is waited for
//! by the file's syncer thread ([`deferring_durability`], `group_sync.rs`).
//! Does not: speak SCSI. CDB decoding, sense data, reservations and unit attentions
//! live in `engine::scsi`, which keeps its per-LU state in the LU's
//! [`LogicalUnit::attachment`] slot so that an LU shared by several targets shares
//! that state too.
//!
//! In: `model::Extent`. Out: `Arc<LogicalUnit>`, handed to `scsi::ScsiTarget`.
//!
//! Safety rules from the product brief: a backing file is created sparse when missing,
//! grown when the model asks for more, never shrunk and never deleted.
//!
//! Portability: file I/O is positional (`pread`/`pwrite` through std's `FileExt`, so
//! no seek lock). Hole punching, block-device size and allocation queries are the only
//! platform calls; they sit in `platform.rs` behind `cfg`, each with a portable
//! fallback.

mod file;
mod group_sync;
mod platform;
mod ramdisk;
mod workers;

use std::any::Any;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::model::{Backing, Extent, Rpm};

pub use file::FileStore;
pub use group_sync::Durability;
pub use ramdisk::RamStore;
pub use workers::{io_workers, IoWorkers};

use group_sync::GroupSync;

/// Why an extent could not be opened as a logical unit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LuError {
    #[error("extent `{extent}`: backing file {} does not exist and the model gives no size; add `size = \"...\"` to create it", path.display())]
    SizeRequired { extent: String, path: PathBuf },
    #[error("extent `{extent}`: cannot create {} because its directory does not exist; create the directory first", path.display())]
    NoParentDir { extent: String, path: PathBuf },
    #[error("extent `{extent}`: backing file {} is {actual} bytes but the model says {wanted}; isctl never shrinks a backing file: raise `size` to at least {actual} or remove it", path.display())]
    WouldShrink {
        extent: String,
        path: PathBuf,
        actual: u64,
        wanted: u64,
    },
    #[error("extent `{extent}`: {} is not a regular file (use `type = \"block\"` for a device)", path.display())]
    NotAFile { extent: String, path: PathBuf },
    #[error("extent `{extent}`: {} is not a block device (use `type = \"file\"` for a regular file)", path.display())]
    NotABlockDevice { extent: String, path: PathBuf },
    #[error("extent `{extent}`: size {size} bytes holds no whole {block_size}-byte block; use a size of at least {block_size} bytes")]
    TooSmall {
        extent: String,
        size: u64,
        block_size: u32,
    },
    #[error("extent `{extent}`: block size {block_size} is not one of 512, 1024, 2048, 4096")]
    BadBlockSize { extent: String, block_size: u32 },
    #[error(
        "extent `{extent}`: ramdisk of {size} bytes does not fit in this process's address space"
    )]
    RamdiskTooLarge { extent: String, size: u64 },
    #[error(
        "extent `{extent}`: NAA identifier `{naa}` is not `0x` followed by 16 or 32 hex digits"
    )]
    BadNaa { extent: String, naa: String },
    #[error("extent `{extent}`: {action} {}: {source}", path.display())]
    Io {
        extent: String,
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Provisioning status of a run of bytes (GET LBA STATUS, SBC-3 §5.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// Backed by storage.
    Mapped,
    /// Deallocated (a hole); reads return zeros.
    Deallocated,
}

/// A run of bytes with one allocation status, starting where it was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocationRun {
    pub status: Allocation,
    /// Length in bytes (> 0, may extend to the end of the store).
    pub len: u64,
}

/// Positional block storage. Offsets and lengths are in bytes; the caller (the SCSI
/// layer) has already checked them against [`BlockStore::len`].
pub trait BlockStore: Send + Sync + fmt::Debug {
    /// Size in bytes.
    fn len(&self) -> u64;

    /// True when the store holds no bytes (never for an opened LU).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fill `buf` from `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Write `buf` at `offset`. With `durable`, the data is on stable storage when this
    /// returns (FUA); otherwise it may sit in a cache until [`BlockStore::flush`].
    fn write_at(&self, buf: &[u8], offset: u64, durable: bool) -> io::Result<()>;

    /// Make every completed write durable (SYNCHRONIZE CACHE).
    fn flush(&self) -> io::Result<()>;

    /// Deallocate a range: afterwards it reads as zeros. Frees the space where the
    /// platform can punch holes; otherwise writes zeros.
    fn deallocate(&self, offset: u64, len: u64) -> io::Result<()>;

    /// The allocation status of the bytes from `offset` on, as one run.
    fn allocation(&self, offset: u64) -> io::Result<AllocationRun>;

    /// True when [`BlockStore::deallocate`] frees space (thin provisioning), as opposed
    /// to only zeroing.
    fn thin(&self) -> bool;

    /// True when every operation is a memory copy that never waits for a device (a
    /// ramdisk, a file on tmpfs): its commands then run on the connection's own thread,
    /// where a hand-off to an I/O worker would cost more than the command itself.
    fn in_memory(&self) -> bool {
        false
    }

    /// Fill `buf` from `offset` only if no device I/O is needed (the bytes are in the
    /// page cache): `Ok(false)` otherwise, with nothing changed. The default never can.
    fn read_cached(&self, _buf: &mut [u8], _offset: u64) -> io::Result<bool> {
        Ok(false)
    }
}

/// What kind of storage backs an LU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackingKind {
    File,
    Block,
    Ramdisk,
}

/// One logical unit: storage plus the identity the SCSI layer reports.
pub struct LogicalUnit {
    name: String,
    kind: BackingKind,
    store: Box<dyn BlockStore>,
    block_size: u32,
    num_blocks: u64,
    readonly: bool,
    write_back: bool,
    serial: String,
    naa: Vec<u8>,
    rotation_rate: u16,
    attachment: OnceLock<Box<dyn Any + Send + Sync>>,
    /// The threads that run this LU's commands (started on first use).
    workers: IoWorkers,
}

impl fmt::Debug for LogicalUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogicalUnit")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("store", &self.store)
            .field("block_size", &self.block_size)
            .field("num_blocks", &self.num_blocks)
            .field("readonly", &self.readonly)
            .field("write_back", &self.write_back)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

/// The identity of an LU that does not come from its storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuIdentity {
    /// Extent name (logs, T10 vendor designator).
    pub name: String,
    /// Logical block size in bytes.
    pub block_size: u32,
    pub readonly: bool,
    /// Write-back caching (the model's `write_back`): writes may sit in the host's page
    /// cache until SYNCHRONIZE CACHE or FUA. `false`: each write is durable before it
    /// completes. Initiators see it as the caching mode page's WCE.
    pub write_back: bool,
    /// T10 unit serial number (VPD 0x80).
    pub serial: String,
    /// NAA designator bytes (8 or 16), VPD 0x83.
    pub naa: Vec<u8>,
    /// VPD 0xB1 MEDIUM ROTATION RATE: 0 = not reported, 1 = non-rotating, else rpm.
    pub rotation_rate: u16,
}

impl LogicalUnit {
    /// Build an LU over any store (the tests use [`RamStore`]). The store's length is
    /// rounded down to whole blocks.
    pub fn new(identity: LuIdentity, kind: BackingKind, store: Box<dyn BlockStore>) -> Self {
        let num_blocks = store.len() / u64::from(identity.block_size.max(1));
        let workers = IoWorkers::new(&identity.name, io_workers());
        LogicalUnit {
            workers,
            name: identity.name,
            kind,
            store,
            block_size: identity.block_size,
            num_blocks,
            readonly: identity.readonly,
            write_back: identity.write_back,
            serial: identity.serial,
            naa: identity.naa,
            rotation_rate: identity.rotation_rate,
            attachment: OnceLock::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn kind(&self) -> BackingKind {
        self.kind
    }
    pub fn store(&self) -> &dyn BlockStore {
        self.store.as_ref()
    }
    pub fn block_size(&self) -> u32 {
        self.block_size
    }
    /// Number of logical blocks (READ CAPACITY reports this minus one).
    pub fn num_blocks(&self) -> u64 {
        self.num_blocks
    }
    pub fn readonly(&self) -> bool {
        self.readonly
    }
    /// The write cache setting the LU starts with (the model's `write_back`).
    pub fn write_back(&self) -> bool {
        self.write_back
    }
    pub fn serial(&self) -> &str {
        &self.serial
    }
    /// NAA designator, 8 or 16 bytes.
    pub fn naa(&self) -> &[u8] {
        &self.naa
    }
    pub fn rotation_rate(&self) -> u16 {
        self.rotation_rate
    }
    /// True when the LU's commands never wait for a device ([`BlockStore::in_memory`]):
    /// the connection runs them itself instead of handing them to [`LogicalUnit::workers`].
    pub fn in_memory(&self) -> bool {
        self.store.in_memory()
    }
    /// The bounded pool of threads that runs this LU's commands.
    pub fn workers(&self) -> &IoWorkers {
        &self.workers
    }

    /// A slot for the command layer's per-LU state (reservations, unit attentions,
    /// mode pages): created on first use and shared by every target that maps this LU.
    /// Returns `None` only if the slot already holds a value of another type.
    pub fn attachment<T: Any + Send + Sync + Default>(&self) -> Option<&T> {
        self.attachment
            .get_or_init(|| Box::new(T::default()))
            .downcast_ref::<T>()
    }
}

thread_local! {
    /// Set inside [`without_waiting`]: reads on this thread use [`BlockStore::read_cached`].
    static CACHED_ONLY: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Run `f` (a command) with this thread's reads limited to data already in memory: a read
/// that would wait for the device fails with [`io::ErrorKind::WouldBlock`] instead. Returns
/// `None` when one did (discard what `f` returned: the command must run again where
/// waiting is fine, on the LU's I/O workers), else `f`'s result.
///
/// Why: the connection's reading thread can answer a read of cached data itself,
/// saving the hand-off to a worker (two thread switches, most of a cached read's cost);
/// a read that would wait must not block the connection's other commands behind it.
pub fn without_waiting<R>(f: impl FnOnce() -> R) -> Option<R> {
    CACHED_ONLY.with(|c| c.set(Some(false)));
    let r = f();
    let waited = CACHED_ONLY.with(|c| c.replace(None)) == Some(true);
    (!waited).then_some(r)
}

/// Inside [`without_waiting`], a read through `read_cached`, recording a miss; else a
/// plain read through `read`.
fn read_in_scope(
    buf: &mut [u8],
    read_cached: impl FnOnce(&mut [u8]) -> io::Result<bool>,
    read: impl FnOnce(&mut [u8]) -> io::Result<()>,
) -> io::Result<()> {
    if CACHED_ONLY.with(|c| c.get()).is_none() {
        return read(buf);
    }
    match read_cached(buf) {
        Ok(true) => Ok(()),
        Ok(false) => {
            CACHED_ONLY.with(|c| c.set(Some(true)));
            Err(io::ErrorKind::WouldBlock.into())
        }
        Err(e) => Err(e),
    }
}

thread_local! {
    /// Set inside [`deferring_durability`]: the durable writes this thread made that
    /// returned before they were durable.
    static DURABLE_LATER: std::cell::RefCell<Option<Option<Durability>>> =
        const { std::cell::RefCell::new(None) };
}

/// Run `f` (a command) letting its durable writes on write-through files return once
/// written, before they are durable: returns `f`'s result and, when a write did, what
/// to wait on before the command may complete ([`Durability::then`] hands that to the
/// file's syncer thread, so the caller's thread goes on to the next command).
pub fn deferring_durability<R>(f: impl FnOnce() -> R) -> (R, Option<Durability>) {
    DURABLE_LATER.with(|d| *d.borrow_mut() = Some(None));
    let r = f();
    let later = DURABLE_LATER.with(|d| d.borrow_mut().take()).flatten();
    (r, later)
}

/// A write-through store's durable write returned: inside [`deferring_durability`]
/// record its ticket and return; outside, wait for it here.
fn durable_after(group: &GroupSync) -> io::Result<()> {
    let in_scope = DURABLE_LATER.with(|d| d.borrow().is_some());
    if !in_scope {
        return group.wait_durable();
    }
    let mine = group.later();
    let other = DURABLE_LATER.with(|d| {
        let mut d = d.borrow_mut();
        match d.as_mut().and_then(Option::take) {
            None => {
                *d = Some(Some(mine));
                None
            }
            Some(held) if held.same_file(&mine) => {
                *d = Some(Some(held.max(mine)));
                None
            }
            // A second file in one command (EXTENDED COPY between LUs): this one is
            // waited for here; the first stays deferred.
            Some(held) => {
                *d = Some(Some(held));
                Some(mine)
            }
        }
    });
    match other {
        Some(mine) => mine.wait(),
        None => Ok(()),
    }
}

/// Open a model extent as a logical unit (see the module doc for the file rules).
pub fn open_extent(extent: &Extent) -> Result<Arc<LogicalUnit>, LuError> {
    let name = extent.name.clone();
    if !matches!(extent.blocksize, 512 | 1024 | 2048 | 4096) {
        return Err(LuError::BadBlockSize {
            extent: name,
            block_size: extent.blocksize,
        });
    }
    let naa = match &extent.naa {
        Some(text) => parse_naa(text).ok_or_else(|| LuError::BadNaa {
            extent: name.clone(),
            naa: text.clone(),
        })?,
        None => derive_naa(&extent.serial),
    };
    let (kind, store): (BackingKind, Box<dyn BlockStore>) = match &extent.backing {
        Backing::File { path, size } => (
            BackingKind::File,
            Box::new(write_through(
                FileStore::open_file(&name, path, *size, extent.readonly)?,
                &name,
                extent.write_back,
            )),
        ),
        Backing::Block { device } => (
            BackingKind::Block,
            Box::new(write_through(
                FileStore::open_device(&name, device, extent.readonly)?,
                &name,
                extent.write_back,
            )),
        ),
        Backing::Ramdisk { size } => {
            let store = RamStore::new(*size).ok_or_else(|| LuError::RamdiskTooLarge {
                extent: name.clone(),
                size: *size,
            })?;
            (BackingKind::Ramdisk, Box::new(store))
        }
    };
    if store.len() < u64::from(extent.blocksize) {
        return Err(LuError::TooSmall {
            extent: name,
            size: store.len(),
            block_size: extent.blocksize,
        });
    }
    let identity = LuIdentity {
        name,
        block_size: extent.blocksize,
        readonly: extent.readonly,
        write_back: extent.write_back,
        serial: extent.serial.clone(),
        naa,
        rotation_rate: match extent.rpm {
            Rpm::Ssd => 1,
            Rpm::Unknown => 0,
            Rpm::Rpm(r) => r,
        },
    };
    Ok(Arc::new(LogicalUnit::new(identity, kind, store)))
}

/// A file or device LU without write-back caching makes every write durable: those
/// writes share their syncs.
fn write_through(store: FileStore, extent: &str, write_back: bool) -> FileStore {
    if write_back {
        store
    } else {
        store.with_group_commit(extent)
    }
}

/// `0x` + 16 or 32 hex digits → 8 or 16 bytes.
fn parse_naa(text: &str) -> Option<Vec<u8>> {
    let hex = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))?;
    if hex.len() != 16 && hex.len() != 32 {
        return None;
    }
    let mut out = Vec::with_capacity(hex.len() / 2);
    let bytes = hex.as_bytes();
    for pair in bytes.chunks(2) {
        let s = std::str::from_utf8(pair).ok()?;
        out.push(u8::from_str_radix(s, 16).ok()?);
    }
    Some(out)
}

/// NAA IEEE Registered Extended (type 6) designator derived from the serial, in the
/// form LIO uses: OUI 00-14-05 followed by the serial's hex digits. An extent served
/// by LIO or by the engine then keeps the same device identifier, which multipath and
/// udev's `/dev/disk/by-id` names rely on.
fn derive_naa(serial: &str) -> Vec<u8> {
    // 32 nibbles: 6, OUI (6 nibbles), then 25 vendor-specific nibbles.
    let mut nibbles: Vec<u8> = vec![0x6, 0x0, 0x0, 0x1, 0x4, 0x0, 0x5];
    nibbles.extend(
        serial
            .chars()
            .filter_map(|c| c.to_digit(16))
            .map(|d| d as u8)
            .take(25),
    );
    nibbles.resize(32, 0);
    nibbles.chunks(2).map(|p| (p[0] << 4) | p[1]).collect()
}

/// Directory that must exist for `path` to be created.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Origin;

    fn extent(name: &str, backing: Backing) -> Extent {
        Extent {
            name: name.into(),
            backing,
            blocksize: 512,
            serial: "abc123".into(),
            naa: None,
            readonly: false,
            rpm: Rpm::Ssd,
            comment: String::new(),
            enabled: true,
            shared: false,
            write_back: false,
            model_alias: false,
            origin: Origin::default(),
        }
    }

    #[test]
    fn creates_missing_file_sparse_with_model_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lun0.img");
        let lu = open_extent(&extent(
            "lun0",
            Backing::File {
                path: path.clone(),
                size: Some(1 << 20),
            },
        ))
        .unwrap();
        assert_eq!(lu.num_blocks(), 2048);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 20);
        assert_eq!(lu.rotation_rate(), 1);
    }

    #[test]
    fn grows_file_never_shrinks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lun0.img");
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        let lu = open_extent(&extent(
            "lun0",
            Backing::File {
                path: path.clone(),
                size: Some(8192),
            },
        ))
        .unwrap();
        assert_eq!(lu.num_blocks(), 16);
        let mut buf = [0u8; 512];
        lu.store().read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [7u8; 512], "growing keeps existing data");
        drop(lu);
        let err = open_extent(&extent(
            "lun0",
            Backing::File {
                path: path.clone(),
                size: Some(4096),
            },
        ))
        .unwrap_err();
        assert!(
            matches!(err, LuError::WouldShrink { actual: 8192, .. }),
            "{err}"
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 8192);
    }

    #[test]
    fn rejects_missing_file_without_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.img");
        let err = open_extent(&extent("x", Backing::File { path, size: None })).unwrap_err();
        assert!(matches!(err, LuError::SizeRequired { .. }));
        assert!(err.to_string().contains("size"));
    }

    #[test]
    fn rejects_missing_parent_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/x.img");
        let err = open_extent(&extent(
            "x",
            Backing::File {
                path,
                size: Some(4096),
            },
        ))
        .unwrap_err();
        assert!(matches!(err, LuError::NoParentDir { .. }), "{err}");
    }

    #[test]
    fn existing_file_without_size_keeps_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lun.img");
        std::fs::write(&path, vec![0u8; 3 * 512 + 100]).unwrap();
        let lu = open_extent(&extent("x", Backing::File { path, size: None })).unwrap();
        assert_eq!(lu.num_blocks(), 3, "partial trailing block is not exposed");
    }

    #[test]
    fn readonly_file_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro.img");
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        let mut e = extent(
            "ro",
            Backing::File {
                path,
                size: Some(4096),
            },
        );
        e.readonly = true;
        let lu = open_extent(&e).unwrap();
        assert!(lu.readonly());
        assert!(lu.store().write_at(&[1u8; 512], 0, false).is_err());
    }

    #[test]
    fn rejects_regular_file_as_block_device() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.img");
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        let err = open_extent(&extent("b", Backing::Block { device: path })).unwrap_err();
        assert!(matches!(err, LuError::NotABlockDevice { .. }), "{err}");
    }

    #[test]
    fn naa_from_model_or_derived_from_serial() {
        assert_eq!(
            parse_naa("0x6001405abcdef012").unwrap(),
            vec![0x60, 0x01, 0x40, 0x5a, 0xbc, 0xde, 0xf0, 0x12]
        );
        assert!(parse_naa("0x123").is_none());
        assert!(parse_naa("6001405abcdef012").is_none());
        let d = derive_naa("abc123");
        assert_eq!(d.len(), 16);
        assert_eq!(&d[..5], &[0x60, 0x01, 0x40, 0x5a, 0xbc]);
        assert_eq!(d[5], 0x12);
        assert_eq!(d[6], 0x30);
    }

    #[test]
    fn attachment_is_created_once_and_shared() {
        let lu = open_extent(&extent("r", Backing::Ramdisk { size: 4096 })).unwrap();
        let a: &std::sync::Mutex<u32> = lu.attachment().unwrap();
        *a.lock().unwrap() = 5;
        let b: &std::sync::Mutex<u32> = lu.attachment().unwrap();
        assert_eq!(*b.lock().unwrap(), 5);
        assert!(lu.attachment::<String>().is_none());
    }
}
