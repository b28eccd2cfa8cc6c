//! Memory-backed store: chunks allocated on first write and freed on deallocation, so
//! an unused ramdisk costs no memory and GET LBA STATUS has something true to report.

use std::io;
use std::sync::RwLock;

use super::{Allocation, AllocationRun, BlockStore};

/// Chunk size: the allocation granularity.
const CHUNK: u64 = 64 * 1024;

/// A ramdisk. Contents are lost when the process exits.
pub struct RamStore {
    len: u64,
    chunks: Vec<RwLock<Option<Box<[u8]>>>>,
}

impl std::fmt::Debug for RamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RamStore").field("len", &self.len).finish()
    }
}

impl RamStore {
    /// A zero-filled ramdisk of `len` bytes; `None` when `len` cannot be addressed.
    pub fn new(len: u64) -> Option<Self> {
        let n = len.div_ceil(CHUNK);
        let n = usize::try_from(n).ok()?;
        usize::try_from(len).ok()?;
        let mut chunks = Vec::new();
        chunks.try_reserve_exact(n).ok()?;
        chunks.resize_with(n, || RwLock::new(None));
        Some(RamStore { len, chunks })
    }

    fn check(&self, offset: u64, len: usize) -> io::Result<()> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "range beyond the end of the ramdisk",
            )),
        }
    }

    /// Split `[offset, offset+len)` into (chunk index, offset in chunk, length) pieces.
    fn pieces(offset: u64, len: u64) -> impl Iterator<Item = (usize, usize, usize)> {
        let mut pos = offset;
        let end = offset + len;
        std::iter::from_fn(move || {
            if pos >= end {
                return None;
            }
            let idx = (pos / CHUNK) as usize;
            let within = (pos % CHUNK) as usize;
            let n = (CHUNK - pos % CHUNK).min(end - pos) as usize;
            pos += n as u64;
            Some((idx, within, n))
        })
    }

    fn chunk_len(&self, idx: usize) -> usize {
        let start = idx as u64 * CHUNK;
        CHUNK.min(self.len - start) as usize
    }
}

fn poisoned() -> io::Error {
    io::Error::other("ramdisk lock poisoned")
}

impl BlockStore for RamStore {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check(offset, buf.len())?;
        let mut done = 0usize;
        for (idx, within, n) in Self::pieces(offset, buf.len() as u64) {
            let out = &mut buf[done..done + n];
            let guard = self.chunks[idx].read().map_err(|_| poisoned())?;
            match guard.as_ref() {
                Some(data) => out.copy_from_slice(&data[within..within + n]),
                None => out.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64, _durable: bool) -> io::Result<()> {
        self.check(offset, buf.len())?;
        let mut done = 0usize;
        for (idx, within, n) in Self::pieces(offset, buf.len() as u64) {
            let mut guard = self.chunks[idx].write().map_err(|_| poisoned())?;
            let clen = self.chunk_len(idx);
            let data = guard.get_or_insert_with(|| vec![0u8; clen].into_boxed_slice());
            data[within..within + n].copy_from_slice(&buf[done..done + n]);
            done += n;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn deallocate(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check(
            offset,
            usize::try_from(len).map_err(|_| io::Error::other("length too large"))?,
        )?;
        for (idx, within, n) in Self::pieces(offset, len) {
            let mut guard = self.chunks[idx].write().map_err(|_| poisoned())?;
            if within == 0 && n == self.chunk_len(idx) {
                *guard = None;
            } else if let Some(data) = guard.as_mut() {
                data[within..within + n].fill(0);
            }
        }
        Ok(())
    }

    fn allocation(&self, offset: u64) -> io::Result<AllocationRun> {
        if offset >= self.len {
            return Ok(AllocationRun {
                status: Allocation::Deallocated,
                len: 0,
            });
        }
        let first = (offset / CHUNK) as usize;
        let status_of = |idx: usize| -> io::Result<Allocation> {
            let g = self.chunks[idx].read().map_err(|_| poisoned())?;
            Ok(if g.is_some() {
                Allocation::Mapped
            } else {
                Allocation::Deallocated
            })
        };
        let status = status_of(first)?;
        let mut idx = first + 1;
        while idx < self.chunks.len() && status_of(idx)? == status {
            idx += 1;
        }
        let end = (idx as u64 * CHUNK).min(self.len);
        Ok(AllocationRun {
            status,
            len: end - offset,
        })
    }

    fn thin(&self) -> bool {
        true
    }

    fn in_memory(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_zero_until_written_across_chunks() {
        let s = RamStore::new(3 * CHUNK + 512).unwrap();
        let mut buf = vec![1u8; 1024];
        s.read_at(&mut buf, CHUNK - 512).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
        s.write_at(&[7u8; 1024], CHUNK - 512, false).unwrap();
        s.read_at(&mut buf, CHUNK - 512).unwrap();
        assert!(buf.iter().all(|&b| b == 7));
        let mut tail = vec![1u8; 512];
        s.read_at(&mut tail, 3 * CHUNK).unwrap();
        assert!(tail.iter().all(|&b| b == 0));
        s.write_at(&[3u8; 512], 3 * CHUNK, false).unwrap();
        assert!(s.read_at(&mut tail, 3 * CHUNK + 1).is_err());
    }

    #[test]
    fn deallocate_frees_whole_chunks_and_zeroes_parts() {
        let s = RamStore::new(4 * CHUNK).unwrap();
        s.write_at(&vec![5u8; (4 * CHUNK) as usize], 0, false)
            .unwrap();
        s.deallocate(CHUNK, 2 * CHUNK).unwrap();
        s.deallocate(0, 512).unwrap();
        let run = s.allocation(0).unwrap();
        assert_eq!((run.status, run.len), (Allocation::Mapped, CHUNK));
        let run = s.allocation(CHUNK).unwrap();
        assert_eq!((run.status, run.len), (Allocation::Deallocated, 2 * CHUNK));
        let run = s.allocation(3 * CHUNK + 100).unwrap();
        assert_eq!((run.status, run.len), (Allocation::Mapped, CHUNK - 100));
        let mut buf = vec![9u8; 1024];
        s.read_at(&mut buf, 0).unwrap();
        assert!(buf[..512].iter().all(|&b| b == 0));
        assert!(buf[512..].iter().all(|&b| b == 5));
    }
}
