//! EXTENDED COPY (LID1) and RECEIVE COPY RESULTS (SPC-4 §6.3, §6.18): the copy
//! manager copies blocks between LUs of the same target without the data crossing
//! the network (VMware's XCOPY offload, `sg_xcopy`).
//!
//! Supported: identification descriptor target descriptors (E4h) naming an LU of this
//! target by its NAA or T10 vendor designator, and block-to-block segment descriptors
//! (02h). Results of a copy whose LIST ID USAGE asks for it are held per I_T nexus
//! until the nexus goes away.

use std::collections::HashMap;
use std::sync::Arc;

use super::cdb::{Bytes, PutBe};
use super::command::{Done, Exec, Outcome};
use super::sense::{Asc, Sense, SenseKey};
use super::state::ItNexus;
use super::target::lu_state;
use crate::engine::lu::LogicalUnit;

const MAX_TARGET_DESCRIPTORS: usize = 4;
const MAX_SEGMENT_DESCRIPTORS: usize = 16;
const MAX_DESCRIPTOR_LIST_LENGTH: usize = 1024;
/// Largest segment, in bytes.
const MAX_SEGMENT_BYTES: u64 = 32 << 20;
/// Copy in chunks of this size.
const CHUNK_BYTES: u64 = 1 << 20;

const TARGET_DESCRIPTOR_LEN: usize = 32;
const TD_IDENTIFICATION: u8 = 0xe4;
const SD_BLOCK_TO_BLOCK: u8 = 0x02;

/// Copy manager status (SPC-4 §6.18.3): completed without / with errors.
const STATUS_OK: u8 = 0x01;
const STATUS_ERROR: u8 = 0x02;

/// Held results of one EXTENDED COPY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CopyStatus {
    pub status: u8,
    pub segments: u16,
    pub bytes: u64,
}

/// Held copy results of an LU, per I_T nexus and list identifier.
#[derive(Debug, Default)]
pub(crate) struct CopyResults {
    held: HashMap<(ItNexus, u8), CopyStatus>,
}

impl CopyResults {
    pub fn nexus_lost(&mut self, it: &ItNexus) {
        self.held.retain(|(n, _), _| n != it);
    }
}

fn aborted(asc: Asc) -> Sense {
    Sense::new(SenseKey::COPY_ABORTED, asc)
}

/// Resolve an identification target descriptor to an LU of this target.
fn find_lu(x: &Exec<'_>, desc: Bytes<'_>) -> Option<Arc<LogicalUnit>> {
    // Designator at bytes 4..: code set, association/type, reserved, length, value.
    let kind = desc.u8(5) & 0x0f;
    let assoc = (desc.u8(5) >> 4) & 0x3;
    let len = usize::from(desc.u8(7));
    if assoc != 0 || len > 20 {
        return None;
    }
    let value = desc.slice(8, len);
    x.target.luns.values().find_map(|lu| {
        let matches = match kind {
            3 => lu.naa() == value,
            1 => {
                let mut t10 = super::spc::VENDOR.to_vec();
                t10.extend_from_slice(lu.serial().as_bytes());
                t10 == value
            }
            _ => false,
        };
        matches.then(|| lu.clone())
    })
}

struct Segment {
    src: usize,
    dst: usize,
    blocks: u64,
    src_lba: u64,
    dst_lba: u64,
}

/// EXTENDED COPY (LID1).
pub(crate) fn extended_copy(x: &mut Exec<'_>) -> Outcome {
    let param_len = x.cdb.be32(10) as usize;
    x.nominal = Some(param_len as u64);
    if param_len == 0 {
        return Ok(Done::good());
    }
    let data = x.data_out();
    if data.len() < param_len || param_len < 16 {
        return Err(Sense::param_list_length().into());
    }
    let p = Bytes(&data[..param_len]);
    let list_id = p.u8(0);
    let usage = (p.u8(1) >> 3) & 0x3;
    let td_len = usize::from(p.be16(2));
    let sd_len = p.be32(8) as usize;
    let inline_len = p.be32(12) as usize;
    if usage == 0x1 {
        return Err(Sense::invalid_param(1, Some(4)).into());
    }
    if usage == 0x3 && list_id != 0 {
        return Err(Sense::invalid_param(0, None).into());
    }
    if inline_len != 0 {
        // Inline data is only used by segment types we do not support.
        return Err(Sense::invalid_param(12, None).into());
    }
    let total = td_len.saturating_add(sd_len);
    if total > MAX_DESCRIPTOR_LIST_LENGTH || 16 + total + inline_len > param_len {
        return Err(Sense::param_list_length().into());
    }
    if td_len % TARGET_DESCRIPTOR_LEN != 0 {
        return Err(Sense::invalid_param(2, None).into());
    }
    let n_targets = td_len / TARGET_DESCRIPTOR_LEN;
    if n_targets > MAX_TARGET_DESCRIPTORS {
        return Err(Sense::illegal(Asc::TOO_MANY_TARGET_DESCRIPTORS).into());
    }
    // Segment descriptors have their own length field: count them first.
    let mut segs_at = Vec::new();
    let mut at = 16 + td_len;
    let seg_end = at + sd_len;
    while at < seg_end {
        if at + 4 > seg_end {
            return Err(Sense::param_list_length().into());
        }
        let len = 4 + usize::from(p.be16(at + 2));
        if at + len > seg_end {
            return Err(Sense::param_list_length().into());
        }
        segs_at.push(at);
        at += len;
    }
    if segs_at.len() > MAX_SEGMENT_DESCRIPTORS {
        return Err(Sense::illegal(Asc::TOO_MANY_SEGMENT_DESCRIPTORS).into());
    }
    // Target descriptors.
    let mut targets: Vec<Option<Arc<LogicalUnit>>> = Vec::with_capacity(n_targets);
    for i in 0..n_targets {
        let off = 16 + i * TARGET_DESCRIPTOR_LEN;
        let d = Bytes(p.slice(off, TARGET_DESCRIPTOR_LEN));
        if d.u8(0) != TD_IDENTIFICATION {
            return Err(Sense::illegal(Asc::UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE).into());
        }
        // Peripheral device type (byte 1, bits 4-0) must be a block device.
        if d.u8(1) & 0x1f != 0 {
            return Err(Sense::invalid_param((off + 1) as u16, None).into());
        }
        let lu = find_lu(x, d);
        if let Some(lu) = &lu {
            // Block device parameters: DISK BLOCK LENGTH must be the LU's.
            if d.be24(29) != lu.block_size() {
                return Err(Sense::invalid_param((off + 29) as u16, None).into());
            }
        }
        targets.push(lu);
    }
    // Segment descriptors.
    let mut segments = Vec::with_capacity(segs_at.len());
    for &off in &segs_at {
        let d = Bytes(p.slice(off, 4 + usize::from(p.be16(off + 2))));
        if d.u8(0) != SD_BLOCK_TO_BLOCK {
            return Err(Sense::illegal(Asc::UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE).into());
        }
        if d.len() != 0x1c {
            return Err(Sense::invalid_param((off + 2) as u16, None).into());
        }
        segments.push(Segment {
            src: usize::from(d.be16(4)),
            dst: usize::from(d.be16(6)),
            blocks: u64::from(d.be16(10)),
            src_lba: d.be64(12),
            dst_lba: d.be64(20),
        });
    }

    // Processing: errors from here on are COPY ABORTED and, when asked, held.
    let result = run_segments(&targets, &segments);
    let held = match &result {
        Ok(bytes) => CopyStatus {
            status: STATUS_OK,
            segments: segments.len() as u16,
            bytes: *bytes,
        },
        Err((done, bytes, _)) => CopyStatus {
            status: STATUS_ERROR,
            segments: *done,
            bytes: *bytes,
        },
    };
    if usage == 0x0 {
        x.state
            .lock()
            .copy
            .held
            .insert((x.it.clone(), list_id), held);
    }
    match result {
        Ok(_) => Ok(Done::good()),
        Err((_, _, sense)) => Err(sense.into()),
    }
}

/// Copy every segment; on error, how many segments completed, bytes copied, sense.
fn run_segments(
    targets: &[Option<Arc<LogicalUnit>>],
    segments: &[Segment],
) -> Result<u64, (u16, u64, Sense)> {
    let mut copied = 0u64;
    for (i, s) in segments.iter().enumerate() {
        let seg = i as u16;
        let (Some(Some(src)), Some(Some(dst))) = (targets.get(s.src), targets.get(s.dst)) else {
            return Err((seg, copied, aborted(Asc::COPY_TARGET_DEVICE_NOT_REACHABLE)));
        };
        let bs = u64::from(src.block_size());
        let in_range = |lu: &LogicalUnit, lba: u64| {
            lba.checked_add(s.blocks)
                .is_some_and(|end| end <= lu.num_blocks())
        };
        if !in_range(src, s.src_lba) || !in_range(dst, s.dst_lba) {
            return Err((
                seg,
                copied,
                aborted(Asc::NO_ADDITIONAL).with_information(i as u64),
            ));
        }
        if s.blocks * bs > MAX_SEGMENT_BYTES {
            return Err((
                seg,
                copied,
                aborted(Asc::NO_ADDITIONAL).with_information(i as u64),
            ));
        }
        if dst.readonly() {
            return Err((seg, copied, Sense::write_protected()));
        }
        let dst_state = lu_state(dst);
        let per = (CHUNK_BYTES / bs).max(1);
        let mut done = 0u64;
        while done < s.blocks {
            let n = per.min(s.blocks - done);
            let mut buf = vec![0u8; (n * bs) as usize];
            src.store()
                .read_at(&mut buf, (s.src_lba + done) * bs)
                .map_err(|_| (seg, copied, aborted(Asc::UNRECOVERED_READ_ERROR)))?;
            let _io = dst_state.map(|st| st.io.read().unwrap_or_else(|p| p.into_inner()));
            dst.store()
                .write_at(&buf, (s.dst_lba + done) * bs, false)
                .map_err(|_| (seg, copied, aborted(Asc::WRITE_ERROR)))?;
            done += n;
            copied += n * bs;
        }
    }
    Ok(copied)
}

/// RECEIVE COPY RESULTS: COPY STATUS (00h) and OPERATING PARAMETERS (03h).
pub(crate) fn receive_copy_results(x: &mut Exec<'_>) -> Outcome {
    let action = x.cdb.u8(1) & 0x1f;
    let list_id = x.cdb.u8(2);
    let alloc = x.cdb.be32(10) as usize;
    let mut d = Vec::new();
    if action == 0x03 {
        d.put32(0);
        d.push(0x01); // SNLID: copies without a list identifier are supported
        d.extend_from_slice(&[0, 0, 0]);
        d.put16(MAX_TARGET_DESCRIPTORS as u16);
        d.put16(MAX_SEGMENT_DESCRIPTORS as u16);
        d.put32(MAX_DESCRIPTOR_LIST_LENGTH as u32);
        d.put32(MAX_SEGMENT_BYTES as u32);
        d.put32(0); // maximum inline data length
        d.put32(0); // held data limit
        d.put32(0); // maximum stream device transfer size
        d.put16(0);
        d.put16(1); // total concurrent copies
        d.push(1); // maximum concurrent copies
        d.push(0); // data segment granularity (log2)
        d.push(0); // inline data granularity
        d.push(0); // held data granularity
        d.extend_from_slice(&[0, 0, 0]);
        let implemented = [SD_BLOCK_TO_BLOCK, TD_IDENTIFICATION];
        d.push(implemented.len() as u8);
        d.extend_from_slice(&implemented);
        let len = (d.len() - 4) as u32;
        d.set32(0, len);
        return Ok(Done::data(d, alloc));
    }
    let held = x
        .state
        .lock()
        .copy
        .held
        .get(&(x.it.clone(), list_id))
        .copied();
    let Some(h) = held else {
        // No copy with that list identifier on this nexus.
        return Err(Sense::invalid_cdb(2, None).into());
    };
    // Transfer count in bytes, or in KiB / MiB when it does not fit.
    let (units, count) = if h.bytes <= u64::from(u32::MAX) {
        (0x00, h.bytes as u32)
    } else if h.bytes >> 10 <= u64::from(u32::MAX) {
        (0x01, (h.bytes >> 10) as u32)
    } else {
        (0x02, u32::try_from(h.bytes >> 20).unwrap_or(u32::MAX))
    };
    d.put32(8);
    d.push(h.status & 0x7f);
    d.put16(h.segments);
    d.push(units);
    d.put32(count);
    Ok(Done::data(d, alloc))
}
