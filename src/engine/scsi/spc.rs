//! Primary commands (SPC-4): INQUIRY and its VPD pages, REPORT LUNS, REQUEST SENSE,
//! TEST UNIT READY, RESERVE/RELEASE, SEND DIAGNOSTIC, REPORT SUPPORTED OPERATION
//! CODES, REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS, REPORT TARGET PORT GROUPS.

use super::cdb::{op, Bytes, PutBe};
use super::command::{has_service_action, Done, Exec, Fail, Outcome, Spec, TABLE};
use super::sbc;
use super::sense::{Asc, Sense};
use super::target::TargetView;
use crate::engine::lu::LogicalUnit;

/// T10 vendor identification (8 bytes, space padded).
pub(crate) const VENDOR: &[u8; 8] = b"ISCTL   ";
/// Product identification (16 bytes, space padded).
const PRODUCT: &[u8; 16] = b"VIRTUAL-DISK    ";

/// VPD pages, in ascending order (SPC-4 §7.8.14 requires it).
const VPD_PAGES: &[u8] = &[0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2];

/// Version descriptors (SPC-4 §6.4.2 table 144): SAM-5, iSCSI, SPC-4, SBC-3.
const VERSION_DESCRIPTORS: &[u16] = &[0x00a0, 0x0960, 0x0460, 0x04c0];

pub(crate) fn test_unit_ready(_x: &mut Exec<'_>) -> Outcome {
    Ok(Done::good())
}

/// INQUIRY for a mapped LU.
pub(crate) fn inquiry(x: &mut Exec<'_>) -> Outcome {
    let cdb = x.cdb;
    let alloc = cdb.be16(3) as usize;
    let evpd = cdb.bit(1, 0);
    let page = cdb.u8(2);
    // CMDDT (bit 1) is obsolete; any other reserved bit in byte 1 is invalid.
    if cdb.u8(1) & 0xfe != 0 {
        return Err(Sense::invalid_cdb(1, Some(1)).into());
    }
    if !evpd {
        if page != 0 {
            return Err(Sense::invalid_cdb(2, None).into());
        }
        return Ok(Done::data(standard_inquiry(0x00, true), alloc));
    }
    let data = match page {
        0x00 => vpd(0x00, VPD_PAGES.to_vec()),
        0x80 => vpd(0x80, x.lu.serial().as_bytes().to_vec()),
        0x83 => vpd(0x83, device_identification(x)),
        0xb0 => vpd(0xb0, sbc::block_limits(x.lu)),
        0xb1 => vpd(0xb1, block_device_characteristics(x.lu)),
        0xb2 => vpd(0xb2, sbc::logical_block_provisioning(x.lu)),
        _ => return Err(Sense::invalid_cdb(2, None).into()),
    };
    Ok(Done::data(data, alloc))
}

/// INQUIRY for a LUN the target does not map: peripheral qualifier 011b (not capable of
/// supporting a device here), device type 1Fh (SPC-4 §6.4.2).
pub(crate) fn inquiry_no_lu(cdb: Bytes<'_>) -> Outcome {
    let alloc = cdb.be16(3) as usize;
    if cdb.bit(1, 0) || cdb.u8(2) != 0 {
        return Err(Sense::illegal(Asc::LOGICAL_UNIT_NOT_SUPPORTED).into());
    }
    Ok(Done::data(standard_inquiry(0x7f, false), alloc))
}

fn standard_inquiry(peripheral: u8, tpgs: bool) -> Vec<u8> {
    let mut d = vec![0u8; 96];
    d[0] = peripheral;
    d[1] = 0x00; // RMB = 0: not removable
    d[2] = 0x06; // SPC-4
    d[3] = 0x12; // HISUP, RESPONSE DATA FORMAT 2
    d[4] = (d.len() - 5) as u8;
    // TPGS = 01b: implicit ALUA (REPORT TARGET PORT GROUPS answers); 3PC: EXTENDED COPY.
    d[5] = if tpgs { 0x10 | 0x08 } else { 0 };
    d[6] = 0x00;
    d[7] = 0x02; // CMDQUE
    d[8..16].copy_from_slice(VENDOR);
    d[16..32].copy_from_slice(PRODUCT);
    // PRODUCT REVISION LEVEL: "<major>.<minor>" of the crate, space padded.
    let mut rev = [b' '; 4];
    let version = format!(
        "{}.{}",
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR")
    );
    for (dst, src) in rev.iter_mut().zip(version.bytes()) {
        *dst = src;
    }
    d[32..36].copy_from_slice(&rev);
    for (i, v) in VERSION_DESCRIPTORS.iter().enumerate() {
        d.set16(58 + 2 * i, *v);
    }
    d
}

/// A VPD page: header (device type, page code, length) + body.
fn vpd(page: u8, body: Vec<u8>) -> Vec<u8> {
    let mut d = vec![0x00, page];
    d.put16(body.len() as u16);
    d.extend_from_slice(&body);
    d
}

/// VPD 0x83: the LU's NAA and T10 vendor designators, and the designators of the
/// target port the command came through (relative port, port group, port name) and of
/// the target device, which multipath uses to tell paths apart.
fn device_identification(x: &Exec<'_>) -> Vec<u8> {
    // Designator header: protocol identifier 5 (iSCSI) in the upper nibble where PIV=1.
    fn designator(out: &mut Vec<u8>, code_set: u8, piv_assoc_type: u8, value: &[u8]) {
        let proto = if piv_assoc_type & 0x80 != 0 { 0x50 } else { 0 };
        out.push(proto | code_set);
        out.push(piv_assoc_type);
        out.push(0);
        out.push(value.len() as u8);
        out.extend_from_slice(value);
    }
    /// SCSI name strings are NUL terminated and padded to a multiple of 4.
    fn name_string(s: &str) -> Vec<u8> {
        let mut v = s.as_bytes().to_vec();
        v.truncate(251);
        v.push(0);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }
    let mut d = Vec::new();
    let naa = x.lu.naa();
    // NAA, binary, associated with the LU, type 3.
    designator(&mut d, 0x1, 0x03, naa);
    // T10 vendor ID, ASCII, LU, type 1: vendor + serial.
    let mut t10 = VENDOR.to_vec();
    t10.extend_from_slice(x.lu.serial().as_bytes());
    t10.truncate(255);
    designator(&mut d, 0x2, 0x01, &t10);
    // Relative target port: PIV, associated with the target port (01b), type 4.
    let mut rel = vec![0, 0];
    rel.put16(x.it.rel_port);
    designator(&mut d, 0x1, 0x80 | 0x10 | 0x04, &rel);
    // Target port group: PIV, target port, type 5.
    let mut tpg = vec![0, 0];
    tpg.put16(x.it.rel_port);
    designator(&mut d, 0x1, 0x80 | 0x10 | 0x05, &tpg);
    // SCSI name string of the target port: UTF-8, PIV, target port, type 8.
    designator(
        &mut d,
        0x3,
        0x80 | 0x10 | 0x08,
        &name_string(&x.it.target_port),
    );
    // SCSI name string of the target device: UTF-8, PIV, target device (10b), type 8.
    designator(
        &mut d,
        0x3,
        0x80 | 0x20 | 0x08,
        &name_string(&x.nexus.target_name),
    );
    d
}

/// VPD 0xB1: MEDIUM ROTATION RATE from the extent's rpm.
fn block_device_characteristics(lu: &LogicalUnit) -> Vec<u8> {
    let mut d = vec![0u8; 0x3c];
    d.set16(0, lu.rotation_rate());
    d
}

/// REPORT LUNS (SPC-4 §6.33).
pub(crate) fn report_luns(x: &mut Exec<'_>) -> Outcome {
    report_luns_for(x.target, x.cdb)
}

pub(crate) fn report_luns_for(view: &TargetView, cdb: Bytes<'_>) -> Outcome {
    let select = cdb.u8(2);
    let alloc = cdb.be32(6) as usize;
    if alloc < 16 {
        return Err(Sense::invalid_cdb(6, None).into());
    }
    let luns: Vec<u64> = match select {
        // 00h: logical units (no well-known LUs here); 02h: all; 11h: LUs accessible
        // through this port (all of them); 12h: subsidiary of LUN 0 (none).
        0x00 | 0x02 | 0x11 => view.luns.keys().copied().collect(),
        // 01h: well-known LUs only; 10h: administrative LUs only. We have none.
        0x01 | 0x10 | 0x12 => Vec::new(),
        _ => return Err(Sense::invalid_cdb(2, None).into()),
    };
    let mut d = Vec::with_capacity(8 + 8 * luns.len());
    d.put32((luns.len() * 8) as u32);
    d.put32(0);
    for lun in luns {
        d.extend_from_slice(&encode_lun(lun));
    }
    Ok(Done::data(d, alloc))
}

/// SAM-5 §4.7: single-level LUN, peripheral addressing below 256, flat space above.
pub(crate) fn encode_lun(lun: u64) -> [u8; 8] {
    let mut b = [0u8; 8];
    if lun < 256 {
        b[1] = lun as u8;
    } else {
        let l = (lun & 0x3fff) as u16;
        b[0] = 0x40 | (l >> 8) as u8;
        b[1] = l as u8;
    }
    b
}

/// REQUEST SENSE: a pending unit attention for this nexus, else NO SENSE.
pub(crate) fn request_sense(x: &mut Exec<'_>) -> Outcome {
    let pending = x.state.lock().take_ua(x.it);
    let sense = match pending {
        Some(asc) => Sense::unit_attention(asc),
        None => Sense::new(super::sense::SenseKey::NO_SENSE, Asc::NO_ADDITIONAL),
    };
    request_sense_data(x.cdb, &sense)
}

/// REQUEST SENSE parameter data: the sense in the format the DESC bit asks for.
pub(crate) fn request_sense_data(cdb: Bytes<'_>, sense: &Sense) -> Outcome {
    if cdb.u8(1) & 0xfe != 0 {
        return Err(Sense::invalid_cdb(1, None).into());
    }
    let desc = cdb.bit(1, 0);
    let alloc = cdb.u8(4) as usize;
    Ok(Done::data(sense.encode(desc), alloc))
}

/// RESERVE(6)/(10) (SPC-2 §7.21): an exclusive reservation of the LU for this nexus.
pub(crate) fn reserve(x: &mut Exec<'_>) -> Outcome {
    if x.cdb.u8(0) == op::RESERVE_10 {
        // 3RDPTY (bit 4) and LONGID (bit 1): third-party reservations not supported.
        if x.cdb.u8(1) & 0x12 != 0 {
            return Err(Sense::invalid_cdb(1, Some(4)).into());
        }
    } else if x.cdb.u8(1) & 0x01 != 0 {
        // Extent reservations (obsolete) are not supported.
        return Err(Sense::invalid_cdb(1, Some(0)).into());
    }
    let mut s = x.state.lock();
    // SPC-4 §5.13.3 with CRH = 0: with persistent reservations in use (a registration
    // or a reservation), RESERVE conflicts.
    if s.pr.reservation.is_some() || !s.pr.registrations.is_empty() {
        return Err(Fail::Conflict);
    }
    match &s.reserve2 {
        Some(holder) if holder != x.it => Err(Fail::Conflict),
        _ => {
            s.reserve2 = Some(x.it.clone());
            Ok(Done::good())
        }
    }
}

/// RELEASE(6)/(10): drop this nexus's reservation; a release by anyone else is a
/// no-op that succeeds (SPC-2 §7.17).
pub(crate) fn release(x: &mut Exec<'_>) -> Outcome {
    if x.cdb.u8(0) == op::RELEASE_10 && x.cdb.u8(1) & 0x12 != 0 {
        return Err(Sense::invalid_cdb(1, Some(4)).into());
    }
    let mut s = x.state.lock();
    // SPC-4 §5.13.3 with CRH = 0: RELEASE conflicts while persistent reservations
    // are in use, like RESERVE.
    if s.pr.reservation.is_some() || !s.pr.registrations.is_empty() {
        return Err(Fail::Conflict);
    }
    if s.reserve2.as_ref() == Some(x.it) {
        s.reserve2 = None;
    }
    Ok(Done::good())
}

/// SEND DIAGNOSTIC: the default self-test and the short/extended self-tests pass at
/// once (there is no hardware to test); diagnostic pages are not supported.
pub(crate) fn send_diagnostic(x: &mut Exec<'_>) -> Outcome {
    let b1 = x.cdb.u8(1);
    let self_test_code = b1 >> 5;
    let self_test = b1 & 0x04 != 0;
    if self_test && self_test_code != 0 {
        return Err(Sense::invalid_cdb(1, Some(7)).into());
    }
    if x.cdb.be16(3) != 0 {
        return Err(Sense::invalid_cdb(3, None).into());
    }
    Ok(Done::good())
}

/// REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35), from the command table.
pub(crate) fn report_supported_opcodes(x: &mut Exec<'_>) -> Outcome {
    let cdb = x.cdb;
    let rctd = cdb.bit(2, 7);
    let options = cdb.u8(2) & 0x07;
    let req_op = cdb.u8(3);
    let req_sa = cdb.be16(4);
    let alloc = cdb.be32(6) as usize;
    let timeouts = |d: &mut Vec<u8>| {
        // Command timeouts descriptor: length 0Ah, no command-specific data,
        // nominal and recommended timeouts in seconds.
        d.put16(0x0a);
        d.push(0);
        d.push(0);
        d.put32(0);
        d.put32(30);
    };
    match options {
        0 => {
            let mut d = vec![0u8; 4];
            for s in TABLE {
                d.push(s.opcode);
                d.push(0);
                d.put16(u16::from(s.sa.unwrap_or(0)));
                d.push(0);
                d.push(u8::from(s.sa.is_some()) | if rctd { 0x02 } else { 0 });
                d.put16(s.cdb_len() as u16);
                if rctd {
                    timeouts(&mut d);
                }
            }
            let len = (d.len() - 4) as u32;
            d.set32(0, len);
            Ok(Done::data(d, alloc))
        }
        1..=3 => {
            let found: Option<&Spec> = match options {
                1 => {
                    // Opcode only: invalid for an opcode that has service actions.
                    if has_service_action(req_op) {
                        return Err(Sense::invalid_cdb(2, None).into());
                    }
                    TABLE.iter().find(|s| s.opcode == req_op)
                }
                2 => {
                    if !has_service_action(req_op) {
                        return Err(Sense::invalid_cdb(2, None).into());
                    }
                    TABLE
                        .iter()
                        .find(|s| s.opcode == req_op && s.sa.map(u16::from) == Some(req_sa))
                }
                _ => {
                    // Opcode and service action if it has one (SPC-5 format 011b).
                    TABLE.iter().find(|s| {
                        s.opcode == req_op
                            && (s.sa.is_none() || s.sa.map(u16::from) == Some(req_sa))
                    })
                }
            };
            let mut d = vec![0u8; 4];
            match found {
                Some(s) => {
                    // SUPPORT = 011b: supported as described.
                    d[1] = 0x03 | if rctd { 0x80 } else { 0 };
                    d.set16(2, s.cdb_len() as u16);
                    d.extend_from_slice(s.usage);
                    // Byte 1 of the usage data carries the service action bits for
                    // opcodes that have them.
                    if rctd {
                        timeouts(&mut d);
                    }
                }
                None => {
                    // SUPPORT = 001b: not supported.
                    d[1] = 0x01;
                }
            }
            Ok(Done::data(d, alloc))
        }
        _ => Err(Sense::invalid_cdb(2, Some(2)).into()),
    }
}

/// REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS (SPC-4 §6.36).
pub(crate) fn report_supported_tmfs(x: &mut Exec<'_>) -> Outcome {
    let repd = x.cdb.bit(2, 7);
    let alloc = x.cdb.be32(6) as usize;
    if alloc < 4 {
        return Err(Sense::invalid_cdb(6, None).into());
    }
    // ATS, ATSS, CTSS, LURS, TRS (abort task, abort task set, clear task set,
    // logical unit reset, target reset).
    let mut d = vec![0xda, 0x00, 0x00, 0x00];
    if repd {
        d.resize(16, 0);
        d[3] = 0x0c; // additional data length
    }
    Ok(Done::data(d, alloc))
}

/// REPORT TARGET PORT GROUPS (SPC-4 §6.37): the port group of this path, active/optimized
/// (implicit ALUA with every path equal).
pub(crate) fn report_target_port_groups(x: &mut Exec<'_>) -> Outcome {
    let format = x.cdb.u8(1) >> 5;
    let alloc = x.cdb.be32(6) as usize;
    let extended = match format {
        0 => false,
        1 => true,
        _ => return Err(Sense::invalid_cdb(1, Some(5)).into()),
    };
    let mut d = Vec::new();
    d.put32(0);
    if extended {
        d[0..4].copy_from_slice(&[0, 0, 0, 0]);
        // Extended header: format type 1, implicit transition time 0.
        d.push(0x10);
        d.push(0);
        d.push(0);
        d.push(0);
    }
    // Target port group descriptor: PREF=1, AAS=0 (active/optimized); supported
    // states: active/optimized (AO_SUP bit 0).
    d.push(0x80);
    d.push(0x01);
    d.put16(x.it.rel_port);
    d.push(0);
    d.push(0); // status code
    d.push(0); // vendor specific
    d.push(1); // target port count
               // Target port descriptor.
    d.put16(0);
    d.put16(x.it.rel_port);
    let len = (d.len() - 4) as u32;
    d.set32(0, len);
    Ok(Done::data(d, alloc))
}
