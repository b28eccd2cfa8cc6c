//! Platform shims: hole punching, block-device size, allocation queries.
//!
//! Each function has a Linux, FreeBSD and macOS form behind `cfg` and a portable
//! fallback; callers never see which one ran. Only this file may use a
//! platform-specific interface in the LU code.

use std::fs::File;
use std::io;

use super::{Allocation, AllocationRun};

/// True when an error means "this file system / platform cannot do that": the caller
/// then uses its portable fallback.
pub(super) fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::ENOTTY)
    ) || e.kind() == io::ErrorKind::Unsupported
}

fn off(v: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(v).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))
}

/// Open flag for a descriptor whose writes are durable when they return (data and the
/// metadata needed to read it back): `O_DSYNC`, or `O_SYNC` where there is none.
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "macos",
    target_os = "ios",
    target_os = "netbsd",
    target_os = "openbsd"
))]
pub(super) const DSYNC: libc::c_int = libc::O_DSYNC;
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "macos",
    target_os = "ios",
    target_os = "netbsd",
    target_os = "openbsd"
)))]
pub(super) const DSYNC: libc::c_int = libc::O_SYNC;

/// Deallocate `[offset, offset+len)` keeping the file size; afterwards it reads zeros.
#[cfg(target_os = "linux")]
pub(super) fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use nix::fcntl::{fallocate, FallocateFlags};
    fallocate(
        file,
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        off(offset)?,
        off(len)?,
    )
    .map_err(io::Error::from)
}

#[cfg(target_os = "freebsd")]
pub(super) fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    nix::fcntl::fspacectl_all(file, off(offset)?, off(len)?).map_err(io::Error::from)
}

#[cfg(target_os = "macos")]
pub(super) fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let arg = libc::fpunchhole_t {
        fp_flags: 0,
        reserved: 0,
        fp_offset: off(offset)?,
        fp_length: off(len)?,
    };
    // SAFETY: F_PUNCHHOLE reads one fpunchhole_t through the pointer, which outlives
    // the call; the descriptor is owned by `file`.
    let rc = unsafe {
        libc::fcntl(
            file.as_raw_fd(),
            libc::F_PUNCHHOLE,
            &arg as *const libc::fpunchhole_t,
        )
    };
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd", target_os = "macos")))]
pub(super) fn punch_hole(_file: &File, _offset: u64, _len: u64) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// The allocation run starting at `offset` in a regular file of `len` bytes, from
/// `SEEK_DATA`/`SEEK_HOLE`. Where those are missing, everything is reported mapped.
#[cfg(any(target_os = "linux", target_os = "freebsd", target_os = "macos"))]
pub(super) fn allocation(file: &File, offset: u64, len: u64) -> io::Result<AllocationRun> {
    use nix::errno::Errno;
    use nix::unistd::{lseek, Whence};
    if offset >= len {
        return Ok(AllocationRun {
            status: Allocation::Deallocated,
            len: 0,
        });
    }
    let start = off(offset)?;
    // lseek moves the descriptor's offset, which nothing else uses: all I/O is
    // positional (pread/pwrite).
    match lseek(file, start, Whence::SeekData) {
        Ok(data) if data == start => {
            let hole = match lseek(file, start, Whence::SeekHole) {
                Ok(h) => h as u64,
                Err(e) => return Err(e.into()),
            };
            Ok(AllocationRun {
                status: Allocation::Mapped,
                len: hole.min(len).saturating_sub(offset).max(1),
            })
        }
        Ok(data) => Ok(AllocationRun {
            status: Allocation::Deallocated,
            len: (data as u64).min(len) - offset,
        }),
        // No data after offset: a hole to the end of the file.
        Err(Errno::ENXIO) => Ok(AllocationRun {
            status: Allocation::Deallocated,
            len: len - offset,
        }),
        Err(e) if is_unsupported(&e.into()) => Ok(AllocationRun {
            status: Allocation::Mapped,
            len: len - offset,
        }),
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd", target_os = "macos")))]
pub(super) fn allocation(_file: &File, offset: u64, len: u64) -> io::Result<AllocationRun> {
    Ok(AllocationRun {
        status: Allocation::Mapped,
        len: len.saturating_sub(offset),
    })
}

/// Size in bytes of a block device.
#[cfg(target_os = "linux")]
pub(super) fn device_size(file: &File) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer.
    match unsafe { blkgetsize64(file.as_raw_fd(), &mut size) } {
        Ok(_) => Ok(size),
        Err(_) => seek_end(file),
    }
}

#[cfg(target_os = "freebsd")]
pub(super) fn device_size(file: &File) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    nix::ioctl_read!(diocgmediasize, b'd', 129, libc::off_t);
    let mut size: libc::off_t = 0;
    // SAFETY: DIOCGMEDIASIZE writes one off_t through the pointer.
    match unsafe { diocgmediasize(file.as_raw_fd(), &mut size) } {
        Ok(_) => Ok(size as u64),
        Err(_) => seek_end(file),
    }
}

#[cfg(target_os = "macos")]
pub(super) fn device_size(file: &File) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    nix::ioctl_read!(dkiocgetblockcount, b'd', 25, u64);
    nix::ioctl_read!(dkiocgetblocksize, b'd', 24, u32);
    let mut count: u64 = 0;
    let mut size: u32 = 0;
    // SAFETY: each ioctl writes one integer of the declared type through the pointer.
    let ok = unsafe {
        dkiocgetblockcount(file.as_raw_fd(), &mut count).is_ok()
            && dkiocgetblocksize(file.as_raw_fd(), &mut size).is_ok()
    };
    if ok {
        Ok(count.saturating_mul(u64::from(size)))
    } else {
        seek_end(file)
    }
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd", target_os = "macos")))]
pub(super) fn device_size(file: &File) -> io::Result<u64> {
    seek_end(file)
}

/// Portable fallback: the offset of the end, which most systems report for devices.
fn seek_end(file: &File) -> io::Result<u64> {
    use std::io::Seek;
    let mut f = file;
    f.seek(io::SeekFrom::End(0))
}

/// True when `file` is on a file system kept in memory (tmpfs, ramfs): reading and
/// writing it never waits for a device. False where the platform cannot tell.
#[cfg(target_os = "linux")]
pub(super) fn on_memory_fs(file: &File) -> bool {
    use nix::sys::statfs::{fstatfs, FsType, TMPFS_MAGIC};
    // ramfs has no constant in nix; its number is the kernel's (include/uapi/linux/magic.h).
    const RAMFS_MAGIC: FsType = FsType(0x8584_58f6_u32 as _);
    fstatfs(file).is_ok_and(|s| {
        let fs = s.filesystem_type();
        fs == TMPFS_MAGIC || fs == RAMFS_MAGIC
    })
}

/// True when `file` is on a file system kept in memory (tmpfs): reading and writing it
/// never waits for a device.
#[cfg(target_os = "freebsd")]
pub(super) fn on_memory_fs(file: &File) -> bool {
    nix::sys::statfs::fstatfs(file).is_ok_and(|s| s.filesystem_type_name() == "tmpfs")
}

/// Portable fallback: assume a device is behind the file.
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
pub(super) fn on_memory_fs(_file: &File) -> bool {
    false
}

/// Fill `buf` from `offset` only from the page cache: `Ok(false)` when some of the bytes
/// are not there (the read would wait for the device) or the platform cannot tell.
/// Linux: `preadv2(RWF_NOWAIT)`, which returns what is cached and `EAGAIN` for the rest.
#[cfg(target_os = "linux")]
pub(super) fn read_cached(file: &File, buf: &mut [u8], offset: u64) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        let iov = libc::iovec {
            iov_base: rest.as_mut_ptr().cast(),
            iov_len: rest.len(),
        };
        // SAFETY: one iovec over `rest`, which stays borrowed mutably for the call.
        let n = unsafe {
            libc::preadv2(
                file.as_raw_fd(),
                &iov,
                1,
                off(offset + done as u64)?,
                libc::RWF_NOWAIT,
            )
        };
        match n {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n if n > 0 => done += n as usize,
            _ => {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => Ok(false),
                    _ if is_unsupported(&e) => Ok(false),
                    _ => Err(e),
                };
            }
        }
    }
    Ok(true)
}

#[cfg(not(target_os = "linux"))]
pub(super) fn read_cached(_file: &File, _buf: &mut [u8], _offset: u64) -> io::Result<bool> {
    Ok(false)
}
