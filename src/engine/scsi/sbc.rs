//! Block commands (SBC-3/SBC-4): capacity, read, write, verify, write same, unmap,
//! LBA status, compare and write, orwrite, cache control, and the block VPD pages.
//!
//! Transfers move whole logical blocks. A write moves what the initiator sent, as far
//! as whole blocks go: an expected transfer length shorter than the CDB's completes
//! with an overflow residual rather than an error (libiscsi's iSCSIResiduals tests,
//! RFC 7143 §11.4.5.1).

use std::io;
use std::sync::{RwLockReadGuard, RwLockWriteGuard};

use super::cdb::{op, Bytes, PutBe};
use super::command::{Done, Exec, Outcome};
use super::sense::{Asc, Sense, SenseKey};
use crate::engine::lu::{Allocation, LogicalUnit};

/// Largest transfer of one command, in bytes (reported as MAXIMUM TRANSFER LENGTH).
pub(crate) const MAX_TRANSFER_BYTES: u64 = 32 << 20;
/// The transfer size that suits the backing store best (OPTIMAL TRANSFER LENGTH).
const OPTIMAL_TRANSFER_BYTES: u64 = 1 << 20;
/// MAXIMUM WRITE SAME LENGTH, in bytes.
const MAX_WRITE_SAME_BYTES: u64 = 32 << 20;
/// MAXIMUM UNMAP LBA COUNT (libiscsi expects at most 1 Mi blocks when not unlimited).
const MAX_UNMAP_BLOCKS: u32 = 1 << 20;
/// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
const MAX_UNMAP_DESCRIPTORS: u32 = 256;
/// MAXIMUM COMPARE AND WRITE LENGTH, in blocks (the CDB field is one byte).
const MAX_COMPARE_AND_WRITE: u32 = 255;
/// Size of the chunks large fills and verifies are done in.
const CHUNK_BYTES: u64 = 1 << 20;

fn blocks_of(lu: &LogicalUnit, bytes: u64) -> u32 {
    u32::try_from((bytes / u64::from(lu.block_size())).max(1)).unwrap_or(u32::MAX)
}

/// LBA and length of a read/write-family CDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extent {
    pub lba: u64,
    pub blocks: u64,
}

/// Decode the LBA and TRANSFER LENGTH of the READ/WRITE/VERIFY/ORWRITE families.
pub(crate) fn decode_rw(cdb: Bytes<'_>) -> Extent {
    match cdb.u8(0) {
        op::READ_6 | op::WRITE_6 => {
            let lba = u64::from(cdb.be24(1) & 0x1f_ffff);
            // SBC-3 §5.15: a TRANSFER LENGTH of 0 in a 6-byte CDB means 256 blocks.
            let blocks = match cdb.u8(4) {
                0 => 256,
                n => u64::from(n),
            };
            Extent { lba, blocks }
        }
        0x20..=0x5f => Extent {
            lba: u64::from(cdb.be32(2)),
            blocks: u64::from(cdb.be16(7)),
        },
        0xa0..=0xbf => Extent {
            lba: u64::from(cdb.be32(2)),
            blocks: u64::from(cdb.be32(6)),
        },
        _ => Extent {
            lba: cdb.be64(2),
            blocks: u64::from(cdb.be32(10)),
        },
    }
}

/// LBA OUT OF RANGE unless `[lba, lba+blocks)` lies within the LU.
fn check_range(lu: &LogicalUnit, lba: u64, blocks: u64) -> Result<(), Sense> {
    match lba.checked_add(blocks) {
        Some(end) if end <= lu.num_blocks() => Ok(()),
        _ => Err(Sense::lba_out_of_range().with_information(lba)),
    }
}

/// Reject a non-zero RDPROTECT/WRPROTECT/VRPROTECT/ORPROTECT (byte 1, bits 7-5): the
/// engine has no protection information.
fn check_protect(cdb: Bytes<'_>) -> Result<(), Sense> {
    let six_byte = matches!(cdb.u8(0), op::READ_6 | op::WRITE_6);
    if !six_byte && cdb.u8(1) >> 5 != 0 {
        return Err(Sense::invalid_cdb(1, Some(7)));
    }
    Ok(())
}

fn check_transfer_len(x: &Exec<'_>, blocks: u64, field: u16) -> Result<(), Sense> {
    if blocks.saturating_mul(u64::from(x.lu.block_size())) > MAX_TRANSFER_BYTES {
        return Err(Sense::invalid_cdb(field, None));
    }
    Ok(())
}

/// Offset in the CDB of the TRANSFER LENGTH field (for sense field pointers).
fn transfer_len_field(opcode: u8) -> u16 {
    match opcode {
        op::READ_6 | op::WRITE_6 => 4,
        0x20..=0x5f => 7,
        0xa0..=0xbf => 6,
        _ => 10,
    }
}

fn medium_error(asc: Asc, lba: u64) -> Sense {
    Sense::new(SenseKey::MEDIUM_ERROR, asc).with_information(lba)
}

fn read_error(lba: u64, _e: io::Error) -> Sense {
    medium_error(Asc::UNRECOVERED_READ_ERROR, lba)
}

fn write_error(lba: u64, _e: io::Error) -> Sense {
    medium_error(Asc::WRITE_ERROR, lba)
}

/// The sense of a command whose writes returned but whose sync then failed (the LU
/// deferred their durability): WRITE ERROR at its first LBA, as when the write itself
/// fails.
pub(crate) fn durability_failed(cdb: Bytes<'_>) -> Sense {
    medium_error(Asc::WRITE_ERROR, decode_rw(cdb).lba)
}

fn shared<'a>(x: &Exec<'a>) -> RwLockReadGuard<'a, ()> {
    x.state.io.read().unwrap_or_else(|p| p.into_inner())
}

fn exclusive<'a>(x: &Exec<'a>) -> RwLockWriteGuard<'a, ()> {
    x.state.io.write().unwrap_or_else(|p| p.into_inner())
}

/// Writes must reach stable storage before GOOD when FUA is set or the write cache is
/// disabled (caching mode page WCE = 0).
fn durable(x: &Exec<'_>, fua: bool) -> bool {
    fua || !x.state.lock().mode.write_cache(x.lu)
}

fn read_blocks(x: &Exec<'_>, lba: u64, bytes: usize) -> Result<Vec<u8>, Sense> {
    let mut buf = vec![0u8; bytes];
    let off = lba * u64::from(x.lu.block_size());
    x.lu.store()
        .read_at(&mut buf, off)
        .map_err(|e| read_error(lba, e))?;
    Ok(buf)
}

fn write_blocks(x: &Exec<'_>, lba: u64, data: &[u8], durable: bool) -> Result<(), Sense> {
    let off = lba * u64::from(x.lu.block_size());
    x.lu.store()
        .write_at(data, off, durable)
        .map_err(|e| write_error(lba, e))
}

/// How many bytes of Data-In the initiator's buffer takes.
fn data_in_room(x: &Exec<'_>) -> u64 {
    use super::DataDirection::{Bidirectional, Read};
    if matches!(x.cmd.direction, Read | Bidirectional) {
        u64::from(x.cmd.expected_len)
    } else {
        0
    }
}

/// READ(6/10/12/16).
pub(crate) fn read(x: &mut Exec<'_>) -> Outcome {
    let cdb = x.cdb;
    check_protect(cdb)?;
    let Extent { lba, blocks } = decode_rw(cdb);
    let bs = u64::from(x.lu.block_size());
    check_range(x.lu, lba, blocks)?;
    check_transfer_len(x, blocks, transfer_len_field(cdb.u8(0)))?;
    let nominal = blocks * bs;
    x.nominal = Some(nominal);
    // Read only what the initiator can take, in whole blocks.
    let want = nominal.min(data_in_room(x));
    let whole = want.div_ceil(bs) * bs;
    let mut data = read_blocks(x, lba, whole as usize)?;
    data.truncate(want as usize);
    Ok(Done::data(data, usize::MAX))
}

/// The Data-Out of a write-family command, cut to whole blocks, or the sense for a
/// Data-Out that ends inside a block.
fn whole_blocks<'a>(x: &'a Exec<'_>, nominal: u64) -> Result<&'a [u8], Sense> {
    let bs = x.lu.block_size() as usize;
    let data = x.data_out();
    let usable = data.len().min(nominal as usize);
    if usable % bs != 0 {
        // Part of a block cannot be written: the information unit is at fault.
        return Err(Sense::illegal(Asc::INVALID_FIELD_IN_INFORMATION_UNIT));
    }
    Ok(&data[..usable])
}

/// WRITE(6/10/12/16).
pub(crate) fn write(x: &mut Exec<'_>) -> Outcome {
    let cdb = x.cdb;
    let Extent { lba, blocks } = decode_rw(cdb);
    let bs = u64::from(x.lu.block_size());
    x.nominal = Some(blocks.saturating_mul(bs));
    check_protect(cdb)?;
    check_range(x.lu, lba, blocks)?;
    check_transfer_len(x, blocks, transfer_len_field(cdb.u8(0)))?;
    let fua = cdb.u8(0) != op::WRITE_6 && cdb.bit(1, 3);
    let data = whole_blocks(x, blocks * bs)?;
    if !data.is_empty() {
        let durable = durable(x, fua);
        let _io = shared(x);
        write_blocks(x, lba, data, durable)?;
    }
    Ok(Done::good())
}

/// WRITE AND VERIFY(10/12/16): write to stable storage, read back, compare.
pub(crate) fn write_and_verify(x: &mut Exec<'_>) -> Outcome {
    let cdb = x.cdb;
    let Extent { lba, blocks } = decode_rw(cdb);
    let bs = u64::from(x.lu.block_size());
    x.nominal = Some(blocks.saturating_mul(bs));
    check_protect(cdb)?;
    // BYTCHK is one bit here (bit 1); bit 2 is reserved.
    if cdb.bit(1, 2) {
        return Err(Sense::invalid_cdb(1, Some(2)).into());
    }
    check_range(x.lu, lba, blocks)?;
    check_transfer_len(x, blocks, transfer_len_field(cdb.u8(0)))?;
    let data = whole_blocks(x, blocks * bs)?;
    if data.is_empty() {
        return Ok(Done::good());
    }
    let _io = shared(x);
    write_blocks(x, lba, data, true)?;
    let back = read_blocks(x, lba, data.len())?;
    if let Some(at) = first_difference(data, &back) {
        return Err(miscompare(at).into());
    }
    Ok(Done::good())
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

fn miscompare(offset: usize) -> Sense {
    Sense::new(SenseKey::MISCOMPARE, Asc::MISCOMPARE_DURING_VERIFY).with_information(offset as u64)
}

/// VERIFY(10/12/16). BYTCHK 00b reads the blocks back (they must be readable), 01b
/// compares them with the Data-Out, 11b compares each with one block of Data-Out.
pub(crate) fn verify(x: &mut Exec<'_>) -> Outcome {
    let cdb = x.cdb;
    let Extent { lba, blocks } = decode_rw(cdb);
    let bs = u64::from(x.lu.block_size());
    check_protect(cdb)?;
    let bytchk = (cdb.u8(1) >> 1) & 0x3;
    x.nominal = Some(match bytchk {
        1 => blocks.saturating_mul(bs),
        3 => bs,
        _ => 0,
    });
    if bytchk == 2 {
        return Err(Sense::invalid_cdb(1, Some(2)).into());
    }
    check_range(x.lu, lba, blocks)?;
    check_transfer_len(x, blocks, transfer_len_field(cdb.u8(0)))?;
    if blocks == 0 {
        return Ok(Done::good());
    }
    match bytchk {
        0 => {
            // Verify the medium: every block must read.
            let mut at = lba;
            let end = lba + blocks;
            let chunk = (CHUNK_BYTES / bs).max(1);
            while at < end {
                let n = chunk.min(end - at);
                read_blocks(x, at, (n * bs) as usize)?;
                at += n;
            }
            Ok(Done::good())
        }
        1 => {
            let data = whole_blocks(x, blocks * bs)?;
            let medium = read_blocks(x, lba, data.len())?;
            match first_difference(data, &medium) {
                Some(at) => Err(miscompare(at).into()),
                None => Ok(Done::good()),
            }
        }
        _ => {
            let data = x.data_out();
            if data.len() < bs as usize {
                return Err(Sense::illegal(Asc::INVALID_FIELD_IN_INFORMATION_UNIT).into());
            }
            let pattern = &data[..bs as usize];
            for i in 0..blocks {
                let medium = read_blocks(x, lba + i, bs as usize)?;
                if let Some(at) = first_difference(pattern, &medium) {
                    return Err(miscompare(at).into());
                }
            }
            Ok(Done::good())
        }
    }
}

/// WRITE SAME(10/16), with UNMAP (deallocate) and NDOB (no Data-Out: zeros).
pub(crate) fn write_same(x: &mut Exec<'_>) -> Outcome {
    let cdb = x.cdb;
    let is16 = cdb.u8(0) == op::WRITE_SAME_16;
    let b1 = cdb.u8(1);
    let anchor = b1 & 0x10 != 0;
    let unmap = b1 & 0x08 != 0;
    let ndob = is16 && b1 & 0x01 != 0;
    let bs = u64::from(x.lu.block_size());
    x.nominal = Some(if ndob { 0 } else { bs });
    check_protect(cdb)?;
    // PBDATA / LBDATA (10) and the obsolete bits (16) are not supported.
    if b1 & 0x06 != 0 {
        return Err(Sense::invalid_cdb(1, Some(2)).into());
    }
    // ANCHOR needs UNMAP, and anchored LBAs are not supported (ANC_SUP = 0).
    if anchor {
        return Err(Sense::invalid_cdb(1, Some(4)).into());
    }
    let (lba, count) = if is16 {
        (cdb.be64(2), u64::from(cdb.be32(10)))
    } else {
        (u64::from(cdb.be32(2)), u64::from(cdb.be16(7)))
    };
    if lba > x.lu.num_blocks() {
        return Err(Sense::lba_out_of_range().with_information(lba).into());
    }
    // NUMBER OF LOGICAL BLOCKS 0: to the end of the LU (WSNZ = 0).
    let count = if count == 0 {
        x.lu.num_blocks() - lba
    } else {
        count
    };
    check_range(x.lu, lba, count)?;
    if count.saturating_mul(bs) > MAX_WRITE_SAME_BYTES {
        return Err(Sense::invalid_cdb(if is16 { 10 } else { 7 }, None).into());
    }
    let block: Vec<u8> = if ndob {
        vec![0u8; bs as usize]
    } else {
        let data = x.data_out();
        if data.len() != bs as usize || x.cmd.expected_len as u64 != bs {
            // WRITE SAME takes exactly one block of Data-Out.
            return Err(Sense::invalid_cdb(if is16 { 10 } else { 7 }, None).into());
        }
        data.to_vec()
    };
    if count == 0 {
        return Ok(Done::good());
    }
    let _io = shared(x);
    if unmap {
        // An unmap request (SBC-3 §4.7.3.4): the blocks are deallocated and read back
        // as zeros (LBPRZ), whatever the Data-Out held, as LIO does and libiscsi's
        // WriteSame10.UnmapUntilEnd expects.
        x.lu.store()
            .deallocate(lba * bs, count * bs)
            .map_err(|e| write_error(lba, e))?;
        return Ok(Done::good());
    }
    let per_chunk = (CHUNK_BYTES / bs).clamp(1, count);
    let chunk: Vec<u8> = block
        .iter()
        .copied()
        .cycle()
        .take((per_chunk * bs) as usize)
        .collect();
    let durable = durable(x, false);
    let mut at = lba;
    let end = lba + count;
    while at < end {
        let n = per_chunk.min(end - at);
        write_blocks(x, at, &chunk[..(n * bs) as usize], durable)?;
        at += n;
    }
    Ok(Done::good())
}

/// UNMAP (SBC-3 §5.28): deallocate the listed ranges (holes in a file).
pub(crate) fn unmap(x: &mut Exec<'_>) -> Outcome {
    let cdb = x.cdb;
    if cdb.bit(1, 0) {
        // ANCHOR: anchored LBAs not supported.
        return Err(Sense::invalid_cdb(1, Some(0)).into());
    }
    let param_len = usize::from(cdb.be16(7));
    x.nominal = Some(param_len as u64);
    if param_len == 0 {
        return Ok(Done::good());
    }
    if param_len < 8 {
        return Err(Sense::param_list_length().into());
    }
    let data = x.data_out();
    let params = Bytes(&data[..data.len().min(param_len)]);
    if params.len() < 8 {
        return Err(Sense::param_list_length().into());
    }
    let bd_len = usize::from(params.be16(2));
    let available = params.len() - 8;
    let count = bd_len.min(available) / 16;
    if count > MAX_UNMAP_DESCRIPTORS as usize {
        return Err(Sense::invalid_param(2, None).into());
    }
    let mut ranges = Vec::with_capacity(count);
    for i in 0..count {
        let at = 8 + 16 * i;
        let lba = params.be64(at);
        let n = params.be32(at + 8);
        check_range(x.lu, lba, u64::from(n))?;
        if n > MAX_UNMAP_BLOCKS {
            return Err(Sense::invalid_param((at + 8) as u16, None).into());
        }
        if n > 0 {
            ranges.push((lba, u64::from(n)));
        }
    }
    let bs = u64::from(x.lu.block_size());
    let _io = shared(x);
    for (lba, n) in ranges {
        x.lu.store()
            .deallocate(lba * bs, n * bs)
            .map_err(|e| write_error(lba, e))?;
    }
    Ok(Done::good())
}

/// GET LBA STATUS (SBC-3 §5.7): mapped / deallocated runs from the starting LBA.
pub(crate) fn get_lba_status(x: &mut Exec<'_>) -> Outcome {
    let cdb = x.cdb;
    let start = cdb.be64(2);
    let alloc = cdb.be32(10) as usize;
    if start >= x.lu.num_blocks() {
        return Err(Sense::lba_out_of_range().with_information(start).into());
    }
    let bs = u64::from(x.lu.block_size());
    let max_desc = (alloc.saturating_sub(8) / 16).clamp(1, 1024);
    let mut d = vec![0u8; 8];
    let mut lba = start;
    let end = x.lu.num_blocks();
    let mut n = 0;
    while lba < end && n < max_desc {
        let run =
            x.lu.store()
                .allocation(lba * bs)
                .map_err(|e| read_error(lba, e))?;
        let end_byte = lba * bs + run.len;
        // A block partly backed by storage counts as mapped.
        let (status, mut run_end) = match run.status {
            Allocation::Mapped => (0u8, end_byte.div_ceil(bs)),
            Allocation::Deallocated => (1u8, end_byte / bs),
        };
        let status = if run_end <= lba {
            run_end = lba + 1;
            0
        } else {
            status
        };
        run_end = run_end.min(end);
        let blocks = u32::try_from(run_end - lba).unwrap_or(u32::MAX);
        d.put64(lba);
        d.put32(blocks);
        d.push(status);
        d.extend_from_slice(&[0, 0, 0]);
        lba += u64::from(blocks);
        n += 1;
    }
    let len = (d.len() - 4) as u32;
    d.set32(0, len);
    Ok(Done::data(d, alloc))
}

/// COMPARE AND WRITE (SBC-3 §5.2): atomic against every other write to the LU.
pub(crate) fn compare_and_write(x: &mut Exec<'_>) -> Outcome {
    let cdb = x.cdb;
    let lba = cdb.be64(2);
    let blocks = u64::from(cdb.u8(13));
    let bs = u64::from(x.lu.block_size());
    x.nominal = Some(2 * blocks * bs);
    check_protect(cdb)?;
    check_range(x.lu, lba, blocks)?;
    if blocks > u64::from(MAX_COMPARE_AND_WRITE) {
        return Err(Sense::invalid_cdb(13, None).into());
    }
    let data = x.data_out();
    if data.len() as u64 != 2 * blocks * bs || u64::from(x.cmd.expected_len) != 2 * blocks * bs {
        // The Data-Out must hold exactly the verify and the write data.
        return Err(Sense::invalid_cdb(13, None).into());
    }
    if blocks == 0 {
        return Ok(Done::good());
    }
    let fua = cdb.bit(1, 3);
    let durable = durable(x, fua);
    let (verify, new) = data.split_at((blocks * bs) as usize);
    let _io = exclusive(x);
    let medium = read_blocks(x, lba, verify.len())?;
    if let Some(at) = first_difference(verify, &medium) {
        return Err(miscompare(at).into());
    }
    write_blocks(x, lba, new, durable)?;
    Ok(Done::good())
}

/// ORWRITE(16) (SBC-3 §5.9): OR the Data-Out into the blocks, atomically.
pub(crate) fn orwrite(x: &mut Exec<'_>) -> Outcome {
    let cdb = x.cdb;
    let Extent { lba, blocks } = decode_rw(cdb);
    let bs = u64::from(x.lu.block_size());
    x.nominal = Some(blocks.saturating_mul(bs));
    check_protect(cdb)?;
    check_range(x.lu, lba, blocks)?;
    check_transfer_len(x, blocks, 10)?;
    let data = whole_blocks(x, blocks * bs)?;
    if data.is_empty() {
        return Ok(Done::good());
    }
    let durable = durable(x, cdb.bit(1, 3));
    let _io = exclusive(x);
    let mut medium = read_blocks(x, lba, data.len())?;
    for (m, d) in medium.iter_mut().zip(data) {
        *m |= d;
    }
    write_blocks(x, lba, &medium, durable)?;
    Ok(Done::good())
}

/// SYNCHRONIZE CACHE(10/16): make completed writes durable.
pub(crate) fn synchronize_cache(x: &mut Exec<'_>) -> Outcome {
    let cdb = x.cdb;
    let (lba, blocks) = if cdb.u8(0) == op::SYNCHRONIZE_CACHE_16 {
        (cdb.be64(2), u64::from(cdb.be32(10)))
    } else {
        (u64::from(cdb.be32(2)), u64::from(cdb.be16(7)))
    };
    check_range(x.lu, lba, blocks)?;
    x.lu.store().flush().map_err(|e| write_error(lba, e))?;
    Ok(Done::good())
}

/// PRE-FETCH(10/16): the range is checked; the engine keeps no cache of its own that a
/// prefetch could fill, so it reports GOOD (not CONDITION MET) per SBC-3 §5.10.
pub(crate) fn pre_fetch(x: &mut Exec<'_>) -> Outcome {
    let cdb = x.cdb;
    let (lba, blocks) = if cdb.u8(0) == op::PRE_FETCH_16 {
        (cdb.be64(2), u64::from(cdb.be32(10)))
    } else {
        (u64::from(cdb.be32(2)), u64::from(cdb.be16(7)))
    };
    check_range(x.lu, lba, blocks)?;
    Ok(Done::good())
}

/// READ CAPACITY(10).
pub(crate) fn read_capacity_10(x: &mut Exec<'_>) -> Outcome {
    let pmi = x.cdb.bit(8, 0);
    if !pmi && x.cdb.be32(2) != 0 {
        return Err(Sense::invalid_cdb(2, None).into());
    }
    let last = x.lu.num_blocks().saturating_sub(1);
    let mut d = Vec::with_capacity(8);
    // A capacity beyond 32 bits reports FFFFFFFFh: use READ CAPACITY(16).
    d.put32(u32::try_from(last).unwrap_or(u32::MAX));
    d.put32(x.lu.block_size());
    Ok(Done::data(d, usize::MAX))
}

/// True when the LU can deallocate blocks (LBPME; UNMAP and WRITE SAME with UNMAP).
fn provisioning_enabled(lu: &LogicalUnit) -> bool {
    lu.store().thin()
}

/// The backing store works in 4 KiB units (file system blocks, pages): smaller
/// logical blocks are reported as parts of a 4 KiB physical block ("512e"), so that
/// initiators align their I/O to it.
const PHYSICAL_BLOCK_BYTES: u32 = 4096;

/// LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT.
pub(crate) fn physical_exponent(lu: &LogicalUnit) -> u8 {
    let per = (PHYSICAL_BLOCK_BYTES / lu.block_size()).max(1);
    per.trailing_zeros() as u8
}

/// READ CAPACITY(16) (SBC-3 §5.16).
pub(crate) fn read_capacity_16(x: &mut Exec<'_>) -> Outcome {
    let alloc = x.cdb.be32(10) as usize;
    let pmi = x.cdb.bit(14, 0);
    if !pmi && x.cdb.be64(2) != 0 {
        return Err(Sense::invalid_cdb(2, None).into());
    }
    let mut d = Vec::with_capacity(32);
    d.put64(x.lu.num_blocks().saturating_sub(1));
    d.put32(x.lu.block_size());
    d.push(0); // P_TYPE / PROT_EN = 0: no protection information
               // P_I_EXPONENT 0; LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT.
    d.push(physical_exponent(x.lu));
    let lbp = if provisioning_enabled(x.lu) { 0xc0 } else { 0 }; // LBPME | LBPRZ
    d.push(lbp);
    d.push(0);
    d.resize(32, 0);
    Ok(Done::data(d, alloc))
}

/// VPD 0xB0 BLOCK LIMITS (SBC-3 §6.5.3), body after the 4-byte header.
pub(crate) fn block_limits(lu: &LogicalUnit) -> Vec<u8> {
    let mut d = vec![0u8; 0x3c];
    // byte 0: WSNZ = 0 (a WRITE SAME of 0 blocks runs to the end of the LU).
    d[1] = MAX_COMPARE_AND_WRITE as u8;
    let bs = u64::from(lu.block_size());
    let granularity = (4096 / bs).max(1) as u16;
    d.set16(2, granularity); // OPTIMAL TRANSFER LENGTH GRANULARITY
    d.set32(4, blocks_of(lu, MAX_TRANSFER_BYTES));
    d.set32(8, blocks_of(lu, OPTIMAL_TRANSFER_BYTES));
    d.set32(12, blocks_of(lu, MAX_TRANSFER_BYTES)); // MAXIMUM PREFETCH LENGTH
    if provisioning_enabled(lu) {
        d.set32(16, MAX_UNMAP_BLOCKS);
        d.set32(20, MAX_UNMAP_DESCRIPTORS);
        d.set32(24, u32::from(granularity)); // OPTIMAL UNMAP GRANULARITY
        d.set32(28, 0x8000_0000); // UGAVALID, alignment 0
    }
    // MAXIMUM WRITE SAME LENGTH (8 bytes at 32).
    let ws = u64::from(blocks_of(lu, MAX_WRITE_SAME_BYTES));
    d[32..40].copy_from_slice(&ws.to_be_bytes());
    d
}

/// VPD 0xB2 LOGICAL BLOCK PROVISIONING (SBC-3 §6.5.4), body after the header.
pub(crate) fn logical_block_provisioning(lu: &LogicalUnit) -> Vec<u8> {
    let mut d = vec![0u8; 4];
    if provisioning_enabled(lu) {
        // LBPU, LBPWS, LBPWS10, LBPRZ.
        d[1] = 0x80 | 0x40 | 0x20 | 0x04;
        d[2] = 0x02; // PROVISIONING TYPE: thin
    }
    d
}

/// READ DEFECT DATA(10/12): a virtual disk has no defects; the list is empty in
/// whatever format was asked for.
pub(crate) fn read_defect_data(x: &mut Exec<'_>) -> Outcome {
    let cdb = x.cdb;
    if cdb.u8(0) == op::READ_DEFECT_DATA_10 {
        let alloc = usize::from(cdb.be16(7));
        let d = vec![0, cdb.u8(2) & 0x1f, 0, 0];
        Ok(Done::data(d, alloc))
    } else {
        let alloc = cdb.be32(6) as usize;
        let d = vec![0, cdb.u8(1) & 0x1f, 0, 0, 0, 0, 0, 0];
        Ok(Done::data(d, alloc))
    }
}

/// START STOP UNIT on a non-removable LU: starting and stopping succeed (the medium is
/// always ready); loading or ejecting is refused.
pub(crate) fn start_stop_unit(x: &mut Exec<'_>) -> Outcome {
    let b4 = x.cdb.u8(4);
    let power_condition = b4 >> 4;
    let loej = b4 & 0x02 != 0;
    if power_condition == 0 && loej {
        return Err(Sense::invalid_cdb(4, Some(1)).into());
    }
    if !matches!(power_condition, 0 | 1 | 2 | 3 | 7 | 0xa | 0xb) {
        return Err(Sense::invalid_cdb(4, Some(7)).into());
    }
    Ok(Done::good())
}

/// PREVENT ALLOW MEDIUM REMOVAL on a non-removable LU: accepted, nothing to lock.
pub(crate) fn prevent_allow(x: &mut Exec<'_>) -> Outcome {
    let prevent = x.cdb.u8(4) & 0x03;
    let mut s = x.state.lock();
    if prevent & 0x01 != 0 {
        s.prevent.insert(x.it.clone());
    } else {
        s.prevent.remove(x.it);
    }
    Ok(Done::good())
}
