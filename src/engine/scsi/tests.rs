//! Command-level tests: CDB vectors in, status / sense / data / residual out, through
//! the same `ScsiService` entry point the transport uses.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::sense::{Asc, SenseKey};
use super::*;
use crate::engine::lu::{BackingKind, LogicalUnit, LuIdentity, RamStore};

const BS: u32 = 512;
const BLOCKS: u64 = 2048; // 1 MiB

fn ram_lu(readonly: bool) -> Arc<LogicalUnit> {
    let store = RamStore::new(BLOCKS * u64::from(BS)).unwrap();
    Arc::new(LogicalUnit::new(
        LuIdentity {
            name: "lun0".into(),
            block_size: BS,
            readonly,
            write_back: true,
            serial: "0123456789abcdef".into(),
            naa: vec![0x60, 0x01, 0x40, 0x50, 0x12, 0x34, 0x56, 0x78],
            rotation_rate: 1,
        },
        BackingKind::Ramdisk,
        Box::new(store),
    ))
}

fn target_with(lu: Arc<LogicalUnit>) -> ScsiTarget {
    let mut m = BTreeMap::new();
    m.insert(0, lu);
    ScsiTarget::new(m)
}

fn target() -> ScsiTarget {
    target_with(ram_lu(false))
}

fn nexus(n: u8) -> Nexus {
    Nexus {
        id: u64::from(n),
        initiator_name: format!("iqn.2000-01.org.test:init{n}"),
        isid: [0x80, 0, 0, 0, 0, n],
        target_name: "iqn.2000-01.org.test:target".into(),
        tpgt: 1,
    }
}

struct Run<'a> {
    t: &'a ScsiTarget,
    nx: Nexus,
    lun: u64,
}

impl<'a> Run<'a> {
    fn new(t: &'a ScsiTarget) -> Self {
        Run {
            t,
            nx: nexus(1),
            lun: 0,
        }
    }
    fn as_nexus(t: &'a ScsiTarget, n: u8) -> Self {
        Run {
            t,
            nx: nexus(n),
            lun: 0,
        }
    }
    fn cmd(&self, cdb: &[u8], dir: DataDirection, expected: u32, data: &[u8]) -> Response {
        let mut full = cdb.to_vec();
        full.resize(16.max(cdb.len()), 0);
        self.t.execute(
            &self.nx,
            &Command {
                lun: self.lun,
                cdb: &full,
                data_out: data,
                expected_len: expected,
                direction: dir,
                attribute: TaskAttribute::Simple,
                tag: 1,
            },
        )
    }
    fn none(&self, cdb: &[u8]) -> Response {
        self.cmd(cdb, DataDirection::None, 0, &[])
    }
    fn read(&self, cdb: &[u8], expected: u32) -> Response {
        self.cmd(cdb, DataDirection::Read, expected, &[])
    }
    fn write(&self, cdb: &[u8], data: &[u8]) -> Response {
        self.cmd(cdb, DataDirection::Write, data.len() as u32, data)
    }
}

fn good(r: &Response) {
    assert_eq!(r.status, Status::GOOD, "sense {:02x?}", r.sense);
}

/// Assert CHECK CONDITION with fixed-format sense key/ASC/ASCQ.
fn check(r: &Response, key: SenseKey, asc: Asc) {
    assert_eq!(r.status, Status::CHECK_CONDITION, "{r:?}");
    let s = &r.sense;
    let (k, a, q) = match s[0] & 0x7f {
        0x70 => (s[2] & 0x0f, s[12], s[13]),
        0x72 => (s[1] & 0x0f, s[2], s[3]),
        other => panic!("bad sense response code {other:#x}"),
    };
    assert_eq!((k, a, q), (key.0, asc.asc(), asc.ascq()), "sense {s:02x?}");
}

fn cdb10(op: u8, b1: u8, lba: u32, len: u16) -> Vec<u8> {
    let mut c = vec![op, b1];
    c.extend_from_slice(&lba.to_be_bytes());
    c.push(0);
    c.extend_from_slice(&len.to_be_bytes());
    c.push(0);
    c
}

fn cdb12(op: u8, b1: u8, lba: u32, len: u32) -> Vec<u8> {
    let mut c = vec![op, b1];
    c.extend_from_slice(&lba.to_be_bytes());
    c.extend_from_slice(&len.to_be_bytes());
    c.extend_from_slice(&[0, 0]);
    c
}

fn cdb16(op: u8, b1: u8, lba: u64, len: u32) -> Vec<u8> {
    let mut c = vec![op, b1];
    c.extend_from_slice(&lba.to_be_bytes());
    c.extend_from_slice(&len.to_be_bytes());
    c.extend_from_slice(&[0, 0]);
    c
}

fn pattern(blocks: usize, seed: u8) -> Vec<u8> {
    (0..blocks * BS as usize)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

// ---- basics -------------------------------------------------------------------

#[test]
fn test_unit_ready_is_good() {
    let t = target();
    good(&Run::new(&t).none(&[0x00, 0, 0, 0, 0, 0]));
}

#[test]
fn rejects_unknown_opcode() {
    let t = target();
    let r = Run::new(&t).none(&[0xc7, 0, 0, 0, 0, 0]);
    check(
        &r,
        SenseKey::ILLEGAL_REQUEST,
        Asc::INVALID_COMMAND_OPERATION_CODE,
    );
}

#[test]
fn rejects_unknown_service_action() {
    let t = target();
    let r = Run::new(&t).read(&[0x9e, 0x05], 32);
    check(&r, SenseKey::ILLEGAL_REQUEST, Asc::INVALID_FIELD_IN_CDB);
}

#[test]
fn rejects_naca_in_control_byte() {
    let t = target();
    let r = Run::new(&t).none(&[0x00, 0, 0, 0, 0, 0x04]);
    check(&r, SenseKey::ILLEGAL_REQUEST, Asc::INVALID_FIELD_IN_CDB);
    assert_eq!(&r.sense[15..18], &[0xc8 | 2, 0, 5]);
}

#[test]
fn unmapped_lun() {
    let t = target();
    let mut run = Run::new(&t);
    run.lun = 7;
    check(
        &run.none(&[0x00, 0, 0, 0, 0, 0]),
        SenseKey::ILLEGAL_REQUEST,
        Asc::LOGICAL_UNIT_NOT_SUPPORTED,
    );
    let r = run.read(&[0x12, 0, 0, 0, 96, 0], 96);
    good(&r);
    assert_eq!(r.data_in[0], 0x7f, "qualifier 011b, type 1Fh");
    let r = run.read(&[0x03, 0, 0, 0, 18, 0], 18);
    good(&r);
    assert_eq!((r.data_in[2], r.data_in[12]), (0x05, 0x25));
    let r = run.read(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], 256);
    good(&r);
    assert_eq!(&r.data_in[..4], &[0, 0, 0, 8]);
}

// ---- INQUIRY ------------------------------------------------------------------

#[test]
fn inquiry_standard_data() {
    let t = target();
    let r = Run::new(&t).read(&[0x12, 0, 0, 0x01, 0x04, 0], 260);
    good(&r);
    let d = &r.data_in;
    assert_eq!(d.len(), 96);
    assert_eq!(d[0], 0x00, "direct access block device");
    assert_eq!(d[2], 0x06, "SPC-4");
    assert_eq!(d[3] & 0x0f, 2, "response data format");
    assert_eq!(usize::from(d[4]) + 5, d.len());
    assert_eq!(d[5] & 0x30, 0x10, "TPGS implicit");
    assert_eq!(&d[8..16], b"ISCTL   ");
    let descs: Vec<u16> = (0..8)
        .map(|i| u16::from_be_bytes([d[58 + 2 * i], d[59 + 2 * i]]))
        .collect();
    assert!(descs.contains(&0x04c0), "SBC-3 claimed: {descs:x?}");
    assert!(descs.contains(&0x0460), "SPC-4 claimed");
    assert_eq!(r.residual, Residual::Underflow(260 - 96));
}

#[test]
fn inquiry_allocation_length_cuts_without_overflow() {
    let t = target();
    let r = Run::new(&t).read(&[0x12, 0, 0, 0, 5, 0], 5);
    good(&r);
    assert_eq!(r.data_in.len(), 5);
    assert_eq!(r.residual, Residual::None);
}

#[test]
fn rejects_inquiry_page_code_without_evpd() {
    let t = target();
    let r = Run::new(&t).read(&[0x12, 0, 0x80, 0, 255, 0], 255);
    check(&r, SenseKey::ILLEGAL_REQUEST, Asc::INVALID_FIELD_IN_CDB);
    assert_eq!(&r.sense[15..18], &[0xc0, 0, 2]);
}

#[test]
fn vpd_pages_listed_ascending_and_all_answer() {
    let t = target();
    let run = Run::new(&t);
    let r = run.read(&[0x12, 1, 0x00, 0, 255, 0], 255);
    good(&r);
    let pages = &r.data_in[4..];
    assert_eq!(usize::from(r.data_in[3]), pages.len());
    assert!(pages.windows(2).all(|w| w[0] < w[1]));
    for &p in pages {
        let r = run.read(&[0x12, 1, p, 0, 255, 0], 255);
        good(&r);
        assert_eq!(r.data_in[1], p);
        let len = u16::from_be_bytes([r.data_in[2], r.data_in[3]]) as usize;
        assert_eq!(len + 4, r.data_in.len(), "page {p:#x}");
    }
    check(
        &run.read(&[0x12, 1, 0x99, 0, 255, 0], 255),
        SenseKey::ILLEGAL_REQUEST,
        Asc::INVALID_FIELD_IN_CDB,
    );
}

#[test]
fn vpd_serial_and_device_identification() {
    let t = target();
    let run = Run::new(&t);
    let r = run.read(&[0x12, 1, 0x80, 0, 255, 0], 255);
    assert_eq!(&r.data_in[4..], b"0123456789abcdef");
    let r = run.read(&[0x12, 1, 0x83, 0, 255, 0], 255);
    let d = &r.data_in;
    // First designator: NAA, binary, LU association.
    assert_eq!(&d[4..8], &[0x01, 0x03, 0x00, 0x08]);
    assert_eq!(&d[8..16], &[0x60, 0x01, 0x40, 0x50, 0x12, 0x34, 0x56, 0x78]);
    // Walk the designators: relative target port 1 must be there.
    let mut at = 4;
    let mut found_rel = false;
    let mut found_name = false;
    while at + 4 <= d.len() {
        let len = usize::from(d[at + 3]);
        let kind = d[at + 1] & 0x0f;
        let assoc = (d[at + 1] >> 4) & 0x3;
        if kind == 4 && assoc == 1 {
            assert_eq!(&d[at + 4..at + 8], &[0, 0, 0, 1]);
            found_rel = true;
        }
        if kind == 8 && assoc == 1 {
            let s = std::str::from_utf8(&d[at + 4..at + 4 + len]).unwrap();
            assert!(s.starts_with("iqn.2000-01.org.test:target,t,0x0001\0"));
            assert_eq!(len % 4, 0);
            found_name = true;
        }
        at += 4 + len;
    }
    assert_eq!(at, d.len());
    assert!(found_rel && found_name);
}

#[test]
fn vpd_block_limits_and_provisioning() {
    let t = target();
    let run = Run::new(&t);
    let r = run.read(&[0x12, 1, 0xb0, 0, 255, 0], 255);
    let d = &r.data_in;
    assert_eq!(d[3], 0x3c);
    assert_eq!(d.len(), 64);
    let max_unmap = u32::from_be_bytes(d[20..24].try_into().unwrap());
    assert!(max_unmap > 0 && max_unmap <= 1 << 20);
    let r = run.read(&[0x12, 1, 0xb2, 0, 255, 0], 255);
    assert_eq!(r.data_in[5] & 0xe4, 0xe4, "LBPU LBPWS LBPWS10 LBPRZ");
    let r = run.read(&[0x12, 1, 0xb1, 0, 255, 0], 255);
    assert_eq!(&r.data_in[4..6], &[0, 1], "non-rotating");
}

// ---- capacity, read, write ------------------------------------------------------

#[test]
fn read_capacity_10_and_16() {
    let t = target();
    let run = Run::new(&t);
    let r = run.read(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8);
    good(&r);
    assert_eq!(r.data_in, [0, 0, 0x07, 0xff, 0, 0, 0x02, 0x00]);
    let r = run.read(&cdb16(0x9e, 0x10, 0, 32), 32);
    good(&r);
    assert_eq!(
        &r.data_in[..12],
        &[0, 0, 0, 0, 0, 0, 0x07, 0xff, 0, 0, 2, 0]
    );
    assert_eq!(r.data_in[14] & 0xc0, 0xc0, "LBPME LBPRZ");
    for alloc in 0..16u32 {
        let r = run.read(&cdb16(0x9e, 0x10, 0, alloc), alloc);
        good(&r);
        assert_eq!(r.data_in.len(), alloc as usize);
    }
    check(
        &run.read(&[0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0], 8),
        SenseKey::ILLEGAL_REQUEST,
        Asc::INVALID_FIELD_IN_CDB,
    );
}

#[test]
fn write_then_read_every_cdb_size() {
    let t = target();
    let run = Run::new(&t);
    let data = pattern(4, 7);
    good(&run.write(&[0x0a, 0, 0, 10, 4, 0], &data));
    let r = run.read(&[0x08, 0, 0, 10, 4, 0], 2048);
    good(&r);
    assert_eq!(r.data_in, data);
    let data = pattern(3, 9);
    good(&run.write(&cdb10(0x2a, 0, 100, 3), &data));
    assert_eq!(run.read(&cdb10(0x28, 0, 100, 3), 1536).data_in, data);
    good(&run.write(&cdb12(0xaa, 0, 200, 3), &data));
    assert_eq!(run.read(&cdb12(0xa8, 0, 200, 3), 1536).data_in, data);
    good(&run.write(&cdb16(0x8a, 0x08, 300, 3), &data));
    let r = run.read(&cdb16(0x88, 0x18, 300, 3), 1536);
    assert_eq!(r.data_in, data);
    assert_eq!(r.residual, Residual::None);
}

#[test]
fn read6_zero_length_means_256_blocks() {
    let t = target();
    let r = Run::new(&t).read(&[0x08, 0, 0, 0, 0, 0], 256 * BS);
    good(&r);
    assert_eq!(r.data_in.len(), 256 * BS as usize);
}

#[test]
fn rejects_lba_out_of_range() {
    let t = target();
    let run = Run::new(&t);
    let last = (BLOCKS - 1) as u32;
    good(&run.read(&cdb10(0x28, 0, last, 1), 512));
    for (lba, len) in [(last, 2u16), (last + 2, 0), (u32::MAX, 1), (0x8000_0000, 0)] {
        check(
            &run.read(&cdb10(0x28, 0, lba, len), 1024),
            SenseKey::ILLEGAL_REQUEST,
            Asc::LBA_OUT_OF_RANGE,
        );
    }
    check(
        &run.read(&cdb16(0x88, 0, u64::MAX, 1), 512),
        SenseKey::ILLEGAL_REQUEST,
        Asc::LBA_OUT_OF_RANGE,
    );
    check(
        &run.write(&cdb16(0x8a, 0, BLOCKS, 1), &[0u8; 512]),
        SenseKey::ILLEGAL_REQUEST,
        Asc::LBA_OUT_OF_RANGE,
    );
}

#[test]
fn rejects_protection_fields() {
    let t = target();
    let run = Run::new(&t);
    for p in 1..8u8 {
        check(
            &run.read(&cdb10(0x28, p << 5, 0, 1), 512),
            SenseKey::ILLEGAL_REQUEST,
            Asc::INVALID_FIELD_IN_CDB,
        );
        check(
            &run.write(&cdb16(0x8a, p << 5, 0, 1), &[0u8; 512]),
            SenseKey::ILLEGAL_REQUEST,
            Asc::INVALID_FIELD_IN_CDB,
        );
        check(
            &run.write(&cdb16(0x8f, (p << 5) | 0x02, 0, 1), &[0u8; 512]),
            SenseKey::ILLEGAL_REQUEST,
            Asc::INVALID_FIELD_IN_CDB,
        );
    }
}

#[test]
fn rejects_transfer_beyond_maximum() {
    let t = target_with({
        let store = RamStore::new(128 << 20).unwrap();
        Arc::new(LogicalUnit::new(
            LuIdentity {
                name: "big".into(),
                block_size: 512,
                readonly: false,
                write_back: true,
                serial: "s".into(),
                naa: vec![0x60; 8],
                rotation_rate: 0,
            },
            BackingKind::Ramdisk,
            Box::new(store),
        ))
    });
    let r = Run::new(&t).read(&cdb16(0x88, 0, 0, 65537), 512);
    check(&r, SenseKey::ILLEGAL_REQUEST, Asc::INVALID_FIELD_IN_CDB);
}

// ---- residuals (libiscsi iSCSIResiduals / Read10Invalid) ------------------------

#[test]
fn read_residuals() {
    let t = target();
    let run = Run::new(&t);
    let c = cdb10(0x28, 0, 0, 1);
    let r = run.read(&c, 0);
    good(&r);
    assert!(r.data_in.is_empty());
    assert_eq!(r.residual, Residual::Overflow(512));
    let r = run.read(&c, 10000);
    good(&r);
    assert_eq!(r.data_in.len(), 512);
    assert_eq!(r.residual, Residual::Underflow(10000 - 512));
    let r = run.read(&c, 200);
    assert_eq!(r.data_in.len(), 200);
    assert_eq!(r.residual, Residual::Overflow(312));
    let r = run.read(&cdb10(0x28, 0, 0, 2), 512);
    assert_eq!(r.data_in.len(), 512);
    assert_eq!(r.residual, Residual::Overflow(512));
    // A READ flagged as a write moves nothing but still completes.
    let r = run.cmd(&c, DataDirection::Write, 512, &[0xa6; 512]);
    good(&r);
    assert!(r.data_in.is_empty());
}

#[test]
fn write_residuals_write_only_what_was_sent() {
    let t = target();
    let run = Run::new(&t);
    let r = run.cmd(&cdb10(0x2a, 0, 0, 1), DataDirection::Write, 0, &[]);
    good(&r);
    assert_eq!(r.residual, Residual::Overflow(512));
    let r = run.write(&cdb10(0x2a, 0, 0, 1), &[0xa6; 10000]);
    good(&r);
    assert_eq!(r.residual, Residual::Underflow(10000 - 512));
    // 200 bytes cannot make a block.
    let r = run.write(&cdb10(0x2a, 0, 0, 1), &[0xa6; 200]);
    check(
        &r,
        SenseKey::ILLEGAL_REQUEST,
        Asc::INVALID_FIELD_IN_INFORMATION_UNIT,
    );
    assert_eq!(r.residual, Residual::Overflow(312));
    // Two blocks asked, one sent: block 0 written, block 1 untouched.
    good(&run.write(&cdb10(0x2a, 0, 0, 2), &[b'a'; 1024]));
    let r = run.write(&cdb10(0x2a, 0, 0, 2), &[b'b'; 512]);
    good(&r);
    assert_eq!(r.residual, Residual::Overflow(512));
    let back = run.read(&cdb10(0x28, 0, 0, 2), 1024).data_in;
    assert!(back[..512].iter().all(|&b| b == b'b'));
    assert!(back[512..].iter().all(|&b| b == b'a'));
    // One block asked, two sent: only one written.
    good(&run.write(&cdb10(0x2a, 0, 0, 2), &[b'a'; 1024]));
    let r = run.write(&cdb10(0x2a, 0, 0, 1), &[b'b'; 1024]);
    assert_eq!(r.residual, Residual::Underflow(512));
    let back = run.read(&cdb10(0x28, 0, 0, 2), 1024).data_in;
    assert!(back[512..].iter().all(|&b| b == b'a'));
}

// ---- REPORT LUNS, REQUEST SENSE -----------------------------------------------

#[test]
fn report_luns_lists_and_encodes() {
    let mut m = BTreeMap::new();
    m.insert(0, ram_lu(false));
    m.insert(300, ram_lu(false));
    let t = ScsiTarget::new(m);
    let run = Run::new(&t);
    let r = run.read(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], 256);
    good(&r);
    assert_eq!(&r.data_in[..8], &[0, 0, 0, 16, 0, 0, 0, 0]);
    assert_eq!(&r.data_in[8..16], &[0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&r.data_in[16..24], &[0x41, 0x2c, 0, 0, 0, 0, 0, 0]);
    let r = run.read(&[0xa0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0], 256);
    assert_eq!(&r.data_in[..4], &[0, 0, 0, 0], "no well-known LUs");
    check(
        &run.read(&[0xa0, 0, 7, 0, 0, 0, 0, 0, 1, 0, 0, 0], 256),
        SenseKey::ILLEGAL_REQUEST,
        Asc::INVALID_FIELD_IN_CDB,
    );
    check(
        &run.read(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0], 8),
        SenseKey::ILLEGAL_REQUEST,
        Asc::INVALID_FIELD_IN_CDB,
    );
}

#[test]
fn request_sense_no_sense_fixed_and_descriptor() {
    let t = target();
    let run = Run::new(&t);
    let r = run.read(&[0x03, 0, 0, 0, 252, 0], 252);
    good(&r);
    assert_eq!(r.data_in.len(), 18);
    assert_eq!((r.data_in[0], r.data_in[2], r.data_in[12]), (0x70, 0, 0));
    let r = run.read(&[0x03, 1, 0, 0, 252, 0], 252);
    assert_eq!(r.data_in.len(), 8);
    assert_eq!(r.data_in[0], 0x72);
}

// ---- unit attentions ----------------------------------------------------------

#[test]
fn lun_reset_raises_unit_attention_on_every_nexus() {
    let t = target();
    let a = Run::as_nexus(&t, 1);
    let b = Run::as_nexus(&t, 2);
    good(&a.none(&[0; 6]));
    good(&b.none(&[0; 6]));
    assert_eq!(
        t.task_management(&a.nx, TmfFunction::LogicalUnitReset, 0),
        TmfResponse::FunctionComplete
    );
    assert_eq!(
        t.task_management(&a.nx, TmfFunction::LogicalUnitReset, 9),
        TmfResponse::LunDoesNotExist
    );
    // INQUIRY does not report or clear it.
    good(&a.read(&[0x12, 0, 0, 0, 36, 0], 36));
    check(
        &a.none(&[0; 6]),
        SenseKey::UNIT_ATTENTION,
        Asc::POWER_ON_RESET,
    );
    good(&a.none(&[0; 6]));
    // REQUEST SENSE returns and clears it.
    let r = b.read(&[0x03, 0, 0, 0, 18, 0], 18);
    good(&r);
    assert_eq!((r.data_in[2], r.data_in[12]), (0x06, 0x29));
    good(&b.none(&[0; 6]));
}

#[test]
fn unmapping_an_lu_drops_this_targets_nexus_state_on_it() {
    let shared = ram_lu(false);
    let t = target_with(shared.clone());
    let a = Run::new(&t);
    good(&a.none(&[0x16, 0, 0, 0, 0, 0]));
    // The LU is also reachable through a second target.
    let mut m = BTreeMap::new();
    m.insert(0, shared);
    let t2 = ScsiTarget::new(m);
    let mut b = Run::new(&t2);
    b.nx.target_name = "iqn.2000-01.org.test:other".into();
    assert_eq!(
        b.none(&[0x16, 0, 0, 0, 0, 0]).status,
        Status::RESERVATION_CONFLICT
    );
    t.set_luns(BTreeMap::new());
    good(&b.none(&[0x16, 0, 0, 0, 0, 0]));
}

#[test]
fn set_luns_reports_luns_data_changed() {
    let t = target();
    let a = Run::new(&t);
    good(&a.none(&[0; 6]));
    let mut m = t.luns();
    m.insert(1, ram_lu(false));
    t.set_luns(m);
    // REPORT LUNS is exempt and clears the condition.
    let r = a.read(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], 256);
    good(&r);
    assert_eq!(&r.data_in[..4], &[0, 0, 0, 16]);
    good(&a.none(&[0; 6]));
    let mut m = t.luns();
    m.remove(&1);
    t.set_luns(m);
    check(
        &a.none(&[0; 6]),
        SenseKey::UNIT_ATTENTION,
        Asc::REPORTED_LUNS_DATA_HAS_CHANGED,
    );
}

// ---- MODE SENSE / MODE SELECT ---------------------------------------------------

fn mode_sense6(run: &Run<'_>, dbd: bool, pc: u8, page: u8, alloc: u8) -> Response {
    run.read(
        &[
            0x1a,
            if dbd { 0x08 } else { 0 },
            (pc << 6) | page,
            0,
            alloc,
            0,
        ],
        u32::from(alloc),
    )
}

#[test]
fn mode_sense_all_pages_with_block_descriptor() {
    let t = target();
    let run = Run::new(&t);
    let r = mode_sense6(&run, false, 0, 0x3f, 255);
    good(&r);
    let d = &r.data_in;
    assert_eq!(usize::from(d[0]) + 1, d.len());
    assert_eq!(d[2], 0x10, "DPOFUA, not write protected");
    assert_eq!(d[3], 8);
    assert_eq!(&d[4..12], &[0, 0, 0x08, 0, 0, 0, 0x02, 0]);
    let pages: Vec<u8> = {
        let mut v = Vec::new();
        let mut at = 12;
        while at < d.len() {
            v.push(d[at] & 0x3f);
            at += usize::from(d[at + 1]) + 2;
        }
        assert_eq!(at, d.len());
        v
    };
    assert_eq!(pages, vec![0x01, 0x08, 0x0a]);
    // 4 bytes asked: header only, no overflow.
    let r = mode_sense6(&run, false, 0, 0x3f, 4);
    assert_eq!(r.data_in.len(), 4);
    assert_eq!(r.residual, Residual::None);
}

#[test]
fn mode_sense10_long_descriptor_and_dbd() {
    let t = target();
    let run = Run::new(&t);
    let r = run.read(&[0x5a, 0x10, 0x0a, 0, 0, 0, 0, 0, 255, 0], 255);
    good(&r);
    let d = &r.data_in;
    assert_eq!(d[4] & 1, 1, "LONGLBA");
    assert_eq!(u16::from_be_bytes([d[6], d[7]]), 16);
    assert_eq!(&d[8..16], &BLOCKS.to_be_bytes());
    assert_eq!(d[24], 0x0a);
    let r = run.read(&[0x5a, 0x08, 0x0a, 0, 0, 0, 0, 0, 255, 0], 255);
    assert_eq!(u16::from_be_bytes([r.data_in[6], r.data_in[7]]), 0);
    assert_eq!(r.data_in[8], 0x0a);
}

#[test]
fn rejects_mode_sense_unknown_page_and_saved_values() {
    let t = target();
    let run = Run::new(&t);
    check(
        &mode_sense6(&run, true, 0, 0x19, 255),
        SenseKey::ILLEGAL_REQUEST,
        Asc::INVALID_FIELD_IN_CDB,
    );
    check(
        &mode_sense6(&run, true, 3, 0x0a, 255),
        SenseKey::ILLEGAL_REQUEST,
        Asc::SAVING_PARAMETERS_NOT_SUPPORTED,
    );
}

fn control_page_select(run: &Run<'_>, d_sense: bool, swp: bool) -> Response {
    let mut page = vec![0u8; 4];
    page.extend_from_slice(&[0x0a, 0x0a, 0x02, 0x10, 0, 0, 0, 0, 0xff, 0xff, 0, 0]);
    if d_sense {
        page[6] |= 0x04;
    }
    if swp {
        page[8] |= 0x08;
    }
    run.write(&[0x15, 0x10, 0, 0, page.len() as u8, 0], &page)
}

#[test]
fn mode_select_swp_write_protects_and_tells_other_nexus() {
    let t = target();
    let a = Run::as_nexus(&t, 1);
    let b = Run::as_nexus(&t, 2);
    good(&b.none(&[0; 6]));
    let r = mode_sense6(&a, true, 1, 0x0a, 255);
    assert_eq!(r.data_in[4 + 4] & 0x08, 0x08, "SWP changeable");
    good(&control_page_select(&a, false, true));
    check(
        &a.write(&cdb10(0x2a, 0, 0, 1), &[0; 512]),
        SenseKey::DATA_PROTECT,
        Asc::WRITE_PROTECTED,
    );
    good(&a.read(&cdb10(0x28, 0, 0, 1), 512));
    assert_eq!(mode_sense6(&a, true, 0, 0x0a, 255).data_in[2] & 0x80, 0x80);
    check(
        &b.none(&[0; 6]),
        SenseKey::UNIT_ATTENTION,
        Asc::MODE_PARAMETERS_CHANGED,
    );
    good(&control_page_select(&a, false, false));
    good(&a.write(&cdb10(0x2a, 0, 0, 1), &[0; 512]));
}

#[test]
fn mode_select_d_sense_switches_sense_format() {
    let t = target();
    let run = Run::new(&t);
    good(&control_page_select(&run, true, false));
    let r = run.read(&cdb16(0x88, 0, u64::MAX, 1), 512);
    check(&r, SenseKey::ILLEGAL_REQUEST, Asc::LBA_OUT_OF_RANGE);
    assert_eq!(r.sense[0], 0x72);
    good(&control_page_select(&run, false, false));
    let r = run.read(&cdb16(0x88, 0, u64::MAX, 1), 512);
    assert_eq!(r.sense[0], 0xf0 & 0x70 | 0x70);
}

#[test]
fn rejects_mode_select_of_unchangeable_field_and_bad_lengths() {
    let t = target();
    let run = Run::new(&t);
    let mut page = vec![0u8; 4];
    // QERR = 01b is not changeable.
    page.extend_from_slice(&[0x0a, 0x0a, 0x02, 0x12, 0, 0, 0, 0, 0xff, 0xff, 0, 0]);
    let r = run.write(&[0x15, 0x10, 0, 0, page.len() as u8, 0], &page);
    check(
        &r,
        SenseKey::ILLEGAL_REQUEST,
        Asc::INVALID_FIELD_IN_PARAMETER_LIST,
    );
    assert_eq!(&r.sense[15..18], &[0x80, 0, 7]);
    // SP = 1: saving not supported.
    check(
        &run.write(&[0x15, 0x11, 0, 0, page.len() as u8, 0], &page),
        SenseKey::ILLEGAL_REQUEST,
        Asc::INVALID_FIELD_IN_CDB,
    );
    // Page length that does not match the page.
    let bad = [0, 0, 0, 0, 0x08, 0x02, 0, 0];
    check(
        &run.write(&[0x15, 0x10, 0, 0, 8, 0], &bad),
        SenseKey::ILLEGAL_REQUEST,
        Asc::INVALID_FIELD_IN_PARAMETER_LIST,
    );
    // Parameter list longer than what was sent.
    check(
        &run.write(&[0x15, 0x10, 0, 0, 40, 0], &bad),
        SenseKey::ILLEGAL_REQUEST,
        Asc::PARAMETER_LIST_LENGTH_ERROR,
    );
}

#[test]
fn write_back_off_reports_wce_cleared() {
    let store = RamStore::new(BLOCKS * u64::from(BS)).unwrap();
    let t = target_with(Arc::new(LogicalUnit::new(
        LuIdentity {
            name: "wt".into(),
            block_size: BS,
            readonly: false,
            write_back: false,
            serial: "wt".into(),
            naa: vec![0x60; 8],
            rotation_rate: 0,
        },
        BackingKind::Ramdisk,
        Box::new(store),
    )));
    let run = Run::new(&t);
    let r = mode_sense6(&run, true, 0, 0x08, 255);
    assert_eq!(r.data_in[4 + 2] & 0x04, 0, "WCE follows write_back = false");
    let r = mode_sense6(&run, true, 2, 0x08, 255);
    assert_eq!(r.data_in[4 + 2] & 0x04, 0, "and so does the default value");
    let r = mode_sense6(&run, true, 1, 0x08, 255);
    assert_eq!(r.data_in[4 + 2] & 0x04, 0x04, "WCE stays changeable");
}

#[test]
fn mode_select_wce_off_makes_writes_durable() {
    let t = target();
    let run = Run::new(&t);
    let mut p = vec![0u8; 4];
    let mut caching = vec![0u8; 20];
    caching[0] = 0x08;
    caching[1] = 0x12;
    p.extend_from_slice(&caching);
    good(&run.write(&[0x15, 0x10, 0, 0, p.len() as u8, 0], &p));
    let r = mode_sense6(&run, true, 0, 0x08, 255);
    assert_eq!(r.data_in[4 + 2] & 0x04, 0, "WCE cleared");
}

// ---- SYNCHRONIZE CACHE, PRE-FETCH, misc ----------------------------------------

#[test]
fn synchronize_cache_and_prefetch_check_range() {
    let t = target();
    let run = Run::new(&t);
    good(&run.none(&cdb10(0x35, 0, 0, 0)));
    good(&run.none(&cdb16(0x91, 0x02, 0, 16)));
    check(
        &run.none(&cdb10(0x35, 0, BLOCKS as u32, 1)),
        SenseKey::ILLEGAL_REQUEST,
        Asc::LBA_OUT_OF_RANGE,
    );
    good(&run.none(&cdb10(0x34, 0x02, 0, 256)));
    check(
        &run.none(&cdb16(0x90, 0, u64::MAX, 1)),
        SenseKey::ILLEGAL_REQUEST,
        Asc::LBA_OUT_OF_RANGE,
    );
}

#[test]
fn start_stop_and_prevent_allow_on_fixed_medium() {
    let t = target();
    let run = Run::new(&t);
    good(&run.none(&[0x1b, 0, 0, 0, 0x01, 0]));
    good(&run.none(&[0x1b, 1, 0, 0, 0x00, 0]));
    check(
        &run.none(&[0x1b, 0, 0, 0, 0x02, 0]),
        SenseKey::ILLEGAL_REQUEST,
        Asc::INVALID_FIELD_IN_CDB,
    );
    good(&run.none(&[0x1e, 0, 0, 0, 1, 0]));
    good(&run.none(&[0x1e, 0, 0, 0, 0, 0]));
}

#[test]
fn readonly_lu_refuses_every_write() {
    let t = target_with(ram_lu(true));
    let run = Run::new(&t);
    let one = [0u8; 512];
    for cdb in [
        cdb10(0x2a, 0, 0, 1),
        cdb12(0xaa, 0, 0, 1),
        cdb16(0x8a, 0, 0, 1),
        cdb10(0x2e, 0, 0, 1),
        cdb10(0x41, 0, 0, 1),
        cdb16(0x93, 0x08, 0, 1),
    ] {
        check(
            &run.write(&cdb, &one),
            SenseKey::DATA_PROTECT,
            Asc::WRITE_PROTECTED,
        );
    }
    good(&run.read(&cdb10(0x28, 0, 0, 1), 512));
    let r = mode_sense6(&run, true, 0, 0x3f, 255);
    assert_eq!(r.data_in[2] & 0x80, 0x80);
}

// ---- VERIFY, WRITE AND VERIFY, COMPARE AND WRITE, ORWRITE -----------------------

#[test]
fn verify_compares_with_bytchk() {
    let t = target();
    let run = Run::new(&t);
    let data = pattern(4, 3);
    good(&run.write(&cdb10(0x2a, 0, 8, 4), &data));
    good(&run.write(&cdb10(0x2f, 0x02, 8, 4), &data));
    good(&run.none(&cdb16(0x8f, 0x00, 8, 4)));
    let mut bad = data.clone();
    bad[1000] ^= 0x58;
    let r = run.write(&cdb12(0xaf, 0x02, 8, 4), &bad);
    check(&r, SenseKey::MISCOMPARE, Asc::MISCOMPARE_DURING_VERIFY);
    assert_eq!(&r.sense[3..7], &1000u32.to_be_bytes());
    // BYTCHK 11b: one block compared with each.
    good(&run.write(&cdb10(0x2a, 0, 20, 2), &[7u8; 1024]));
    good(&run.write(&cdb10(0x2f, 0x06, 20, 2), &[7u8; 512]));
    check(
        &run.write(&cdb10(0x2f, 0x04, 20, 2), &[7u8; 512]),
        SenseKey::ILLEGAL_REQUEST,
        Asc::INVALID_FIELD_IN_CDB,
    );
}

#[test]
fn write_and_verify_writes() {
    let t = target();
    let run = Run::new(&t);
    let data = pattern(2, 5);
    good(&run.write(&cdb10(0x2e, 0x02, 40, 2), &data));
    assert_eq!(run.read(&cdb10(0x28, 0, 40, 2), 1024).data_in, data);
    good(&run.write(&cdb16(0x8e, 0x10, 42, 2), &data));
}

fn caw(run: &Run<'_>, lba: u64, blocks: u8, data: &[u8]) -> Response {
    let mut c = vec![0x89, 0];
    c.extend_from_slice(&lba.to_be_bytes());
    c.extend_from_slice(&[0, 0, 0, blocks, 0, 0]);
    run.write(&c, data)
}

#[test]
fn compare_and_write_swaps_or_miscompares() {
    let t = target();
    let run = Run::new(&t);
    good(&run.write(&cdb10(0x2a, 0, 5, 2), &[b'A'; 1024]));
    let mut buf = vec![b'A'; 1024];
    buf.extend_from_slice(&[b'B'; 1024]);
    good(&caw(&run, 5, 2, &buf));
    assert!(run
        .read(&cdb10(0x28, 0, 5, 2), 1024)
        .data_in
        .iter()
        .all(|&b| b == b'B'));
    // Now the medium holds B: comparing with A fails at offset 0, nothing written.
    let r = caw(&run, 5, 2, &buf);
    check(&r, SenseKey::MISCOMPARE, Asc::MISCOMPARE_DURING_VERIFY);
    assert_eq!(&r.sense[3..7], &[0, 0, 0, 0]);
    assert!(run
        .read(&cdb10(0x28, 0, 5, 2), 1024)
        .data_in
        .iter()
        .all(|&b| b == b'B'));
}

#[test]
fn rejects_compare_and_write_with_wrong_data_out_size() {
    let t = target();
    let run = Run::new(&t);
    for blocks in [1u8, 3] {
        check(
            &caw(&run, 0, blocks, &[0u8; 4 * 512]),
            SenseKey::ILLEGAL_REQUEST,
            Asc::INVALID_FIELD_IN_CDB,
        );
    }
    check(
        &caw(&run, BLOCKS, 1, &[0u8; 1024]),
        SenseKey::ILLEGAL_REQUEST,
        Asc::LBA_OUT_OF_RANGE,
    );
}

#[test]
fn orwrite_ors_into_medium() {
    let t = target();
    let run = Run::new(&t);
    good(&run.write(&cdb10(0x2a, 0, 0, 1), &[0xa5; 512]));
    good(&run.write(&cdb16(0x8b, 0, 0, 1), &[0x5a; 512]));
    assert!(run
        .read(&cdb10(0x28, 0, 0, 1), 512)
        .data_in
        .iter()
        .all(|&b| b == 0xff));
}

// ---- WRITE SAME, UNMAP, GET LBA STATUS -------------------------------------------

#[test]
fn write_same_fills_and_unmaps() {
    let t = target();
    let run = Run::new(&t);
    good(&run.write(&cdb10(0x41, 0, 10, 300), &[0x42; 512]));
    let r = run.read(&cdb10(0x28, 0, 10, 300), 300 * 512);
    assert!(r.data_in.iter().all(|&b| b == 0x42));
    good(&run.write(&cdb16(0x93, 0x08, 10, 300), &[0; 512]));
    let r = run.read(&cdb10(0x28, 0, 10, 300), 300 * 512);
    assert!(r.data_in.iter().all(|&b| b == 0));
    // NDOB: no Data-Out, zeros.
    good(&run.write(&cdb10(0x2a, 0, 0, 1), &[1; 512]));
    good(&run.none(&cdb16(0x93, 0x01, 0, 1)));
    assert!(run
        .read(&cdb10(0x28, 0, 0, 1), 512)
        .data_in
        .iter()
        .all(|&b| b == 0));
    // 0 blocks: to the end of the LU.
    good(&run.write(&cdb16(0x93, 0x08, BLOCKS - 4, 0), &[0; 512]));
}

#[test]
fn rejects_write_same_bad_fields() {
    let t = target();
    let run = Run::new(&t);
    for (cdb, data) in [
        (cdb10(0x41, 0x10, 0, 1), vec![0u8; 512]), // ANCHOR without UNMAP
        (cdb10(0x41, 0x18, 0, 1), vec![0u8; 512]), // ANCHOR: not supported
        (cdb10(0x41, 0x08, 0, 1), vec![0u8; 256]), // half a block
        (cdb16(0x93, 0x08, 0, 1), vec![0u8; 1024]), // two blocks
        (cdb10(0x41, 0x02, 0, 1), vec![0u8; 512]), // LBDATA
    ] {
        let r = run.write(&cdb, &data);
        assert_eq!(r.status, Status::CHECK_CONDITION, "{cdb:02x?}");
        assert_eq!(r.sense[2], 0x05);
    }
    check(
        &run.write(&cdb10(0x41, 0, (BLOCKS + 1) as u32, 0), &[0u8; 512]),
        SenseKey::ILLEGAL_REQUEST,
        Asc::LBA_OUT_OF_RANGE,
    );
}

fn unmap_list(ranges: &[(u64, u32)]) -> Vec<u8> {
    let mut d = vec![0u8; 8];
    for (lba, n) in ranges {
        d.extend_from_slice(&lba.to_be_bytes());
        d.extend_from_slice(&n.to_be_bytes());
        d.extend_from_slice(&[0; 4]);
    }
    let n = d.len();
    d[0..2].copy_from_slice(&((n - 2) as u16).to_be_bytes());
    d[2..4].copy_from_slice(&((n - 8) as u16).to_be_bytes());
    d
}

fn unmap_cdb(len: usize) -> Vec<u8> {
    cdb10(0x42, 0, 0, len as u16)
}

#[test]
fn unmap_deallocates_and_lba_status_reports_it() {
    let t = target();
    let run = Run::new(&t);
    // Ramdisk chunks are 64 KiB = 128 blocks.
    good(&run.write(&cdb10(0x2a, 0, 0, 512), &[9u8; 512 * 512]));
    let list = unmap_list(&[(128, 128), (0, 0), (BLOCKS, 0)]);
    good(&run.write(&unmap_cdb(list.len()), &list));
    let r = run.read(&cdb10(0x28, 0, 128, 128), 128 * 512);
    assert!(r.data_in.iter().all(|&b| b == 0));
    let r = run.read(&cdb16(0x9e, 0x12, 0, 256), 256);
    good(&r);
    let d = &r.data_in;
    let desc = |i: usize| {
        let at = 8 + 16 * i;
        (
            u64::from_be_bytes(d[at..at + 8].try_into().unwrap()),
            u32::from_be_bytes(d[at + 8..at + 12].try_into().unwrap()),
            d[at + 12],
        )
    };
    assert_eq!(desc(0), (0, 128, 0));
    assert_eq!(desc(1), (128, 128, 1));
    assert_eq!(desc(2), (256, 256, 0));
    let r = run.read(&cdb16(0x9e, 0x12, 130, 24), 24);
    assert_eq!(r.data_in.len(), 24);
    assert_eq!(desc_at(&r.data_in), (130, 126, 1));
    check(
        &run.read(&cdb16(0x9e, 0x12, BLOCKS, 24), 24),
        SenseKey::ILLEGAL_REQUEST,
        Asc::LBA_OUT_OF_RANGE,
    );
}

fn desc_at(d: &[u8]) -> (u64, u32, u8) {
    (
        u64::from_be_bytes(d[8..16].try_into().unwrap()),
        u32::from_be_bytes(d[16..20].try_into().unwrap()),
        d[20],
    )
}

#[test]
fn rejects_malformed_unmap_lists() {
    let t = target();
    let run = Run::new(&t);
    good(&run.write(&unmap_cdb(0), &[]));
    check(
        &run.write(&unmap_cdb(4), &[0, 2, 0, 0]),
        SenseKey::ILLEGAL_REQUEST,
        Asc::PARAMETER_LIST_LENGTH_ERROR,
    );
    let list = unmap_list(&[(BLOCKS - 1, 2)]);
    check(
        &run.write(&unmap_cdb(list.len()), &list),
        SenseKey::ILLEGAL_REQUEST,
        Asc::LBA_OUT_OF_RANGE,
    );
    let many: Vec<(u64, u32)> = (0..300).map(|i| (i, 1)).collect();
    let list = unmap_list(&many);
    check(
        &run.write(&unmap_cdb(list.len()), &list),
        SenseKey::ILLEGAL_REQUEST,
        Asc::INVALID_FIELD_IN_PARAMETER_LIST,
    );
    let mut c = unmap_cdb(24);
    c[1] = 1; // ANCHOR
    check(
        &run.write(&c, &unmap_list(&[(0, 1)])),
        SenseKey::ILLEGAL_REQUEST,
        Asc::INVALID_FIELD_IN_CDB,
    );
}

// ---- REPORT SUPPORTED OPERATION CODES ----------------------------------------------

fn rsoc(run: &Run<'_>, rctd: bool, options: u8, op: u8, sa: u16, alloc: u32) -> Response {
    let mut c = vec![0xa3, 0x0c, options | if rctd { 0x80 } else { 0 }, op];
    c.extend_from_slice(&sa.to_be_bytes());
    c.extend_from_slice(&alloc.to_be_bytes());
    c.extend_from_slice(&[0, 0]);
    run.read(&c, alloc)
}

#[test]
fn report_supported_opcodes_all_and_one() {
    let t = target();
    let run = Run::new(&t);
    let r = rsoc(&run, false, 0, 0, 0, 65535);
    good(&r);
    let d = &r.data_in;
    let len = u32::from_be_bytes(d[0..4].try_into().unwrap()) as usize;
    assert_eq!(len + 4, d.len());
    assert_eq!(len % 8, 0);
    let mut at = 4;
    while at < d.len() {
        let (op, sa, servactv) = (
            d[at],
            u16::from_be_bytes([d[at + 2], d[at + 3]]),
            d[at + 5] & 1,
        );
        assert!(servactv == 1 || sa == 0);
        let opts = if servactv == 1 { 2 } else { 1 };
        let one = rsoc(&run, false, opts, op, sa, 65535);
        good(&one);
        assert_eq!(one.data_in[1] & 0x07, 3, "supported");
        assert_eq!(one.data_in[4], op);
        let wrong = if servactv == 1 { 1 } else { 2 };
        check(
            &rsoc(&run, false, wrong, op, sa, 65535),
            SenseKey::ILLEGAL_REQUEST,
            Asc::INVALID_FIELD_IN_CDB,
        );
        at += 8;
    }
    // With timeouts: 20-byte descriptors with CTDP set.
    let r = rsoc(&run, true, 0, 0, 0, 65535);
    assert_eq!((r.data_in.len() - 4) % 20, 0);
    assert!(r.data_in[4 + 5] & 0x02 != 0);
    assert_eq!(&r.data_in[12..14], &[0, 0x0a]);
    // DPO/FUA advertised for WRITE(10).
    let r = rsoc(&run, false, 1, 0x2a, 0, 65535);
    assert_eq!(r.data_in[5] & 0x18, 0x18);
    // Unsupported opcode: SUPPORT = 001b.
    let r = rsoc(&run, false, 1, 0xc7, 0, 65535);
    assert_eq!(r.data_in[1] & 0x07, 1);
}

// ---- SPC-2 reservations --------------------------------------------------------

#[test]
fn reserve6_conflicts_and_is_released_on_nexus_loss() {
    let t = target();
    let a = Run::as_nexus(&t, 1);
    let b = Run::as_nexus(&t, 2);
    good(&a.none(&[0x16, 0, 0, 0, 0, 0]));
    good(&a.none(&[0x16, 0, 0, 0, 0, 0]));
    assert_eq!(
        b.none(&[0x16, 0, 0, 0, 0, 0]).status,
        Status::RESERVATION_CONFLICT
    );
    good(&b.none(&[0x17, 0, 0, 0, 0, 0])); // release by a non-holder: no-op
    assert_eq!(
        mode_sense6(&b, false, 0, 0x3f, 255).status,
        Status::RESERVATION_CONFLICT
    );
    good(&b.read(&[0x12, 0, 0, 0, 36, 0], 36));
    good(&mode_sense6(&a, false, 0, 0x3f, 255));
    t.nexus_closed(&a.nx);
    good(&b.none(&[0x16, 0, 0, 0, 0, 0]));
    good(&b.none(&[0x17, 0, 0, 0, 0, 0]));
}

#[test]
fn reserve6_conflicts_with_persistent_registrations() {
    let t = target();
    let a = Run::as_nexus(&t, 1);
    good(&prout(&a, 6, 0, 0, 7));
    assert_eq!(
        a.none(&[0x16, 0, 0, 0, 0, 0]).status,
        Status::RESERVATION_CONFLICT
    );
    assert_eq!(
        a.none(&[0x17, 0, 0, 0, 0, 0]).status,
        Status::RESERVATION_CONFLICT
    );
    good(&prout(&a, 0, 0, 7, 0));
    good(&a.none(&[0x16, 0, 0, 0, 0, 0]));
    // While an SPC-2 reservation is held, PERSISTENT RESERVE IN and OUT conflict
    // for every nexus, the holder included.
    assert_eq!(prout(&a, 6, 0, 0, 7).status, Status::RESERVATION_CONFLICT);
    let r = a.read(&[0x5e, 0, 0, 0, 0, 0, 0, 0x40, 0, 0], 0x4000);
    assert_eq!(r.status, Status::RESERVATION_CONFLICT);
    good(&a.none(&[0x17, 0, 0, 0, 0, 0]));
    good(&prout(&a, 6, 0, 0, 7));
    good(&prout(&a, 0, 0, 7, 0));
}

#[test]
fn target_reset_releases_reserve6() {
    let t = target();
    let a = Run::as_nexus(&t, 1);
    let b = Run::as_nexus(&t, 2);
    good(&b.none(&[0; 6]));
    good(&a.none(&[0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
    assert_eq!(
        t.task_management(&a.nx, TmfFunction::TargetWarmReset, 0),
        TmfResponse::FunctionComplete
    );
    check(
        &b.none(&[0x16, 0, 0, 0, 0, 0]),
        SenseKey::UNIT_ATTENTION,
        Asc::POWER_ON_RESET,
    );
    good(&b.none(&[0x16, 0, 0, 0, 0, 0]));
}

// ---- persistent reservations -------------------------------------------------

fn prout(run: &Run<'_>, sa: u8, rtype: u8, key: u64, sa_key: u64) -> Response {
    let mut p = Vec::new();
    p.extend_from_slice(&key.to_be_bytes());
    p.extend_from_slice(&sa_key.to_be_bytes());
    p.extend_from_slice(&[0; 8]);
    let c = [0x5f, sa, rtype, 0, 0, 0, 0, 0, 24, 0];
    run.write(&c, &p)
}

fn prin(run: &Run<'_>, sa: u8) -> Vec<u8> {
    let r = run.read(&[0x5e, sa, 0, 0, 0, 0, 0, 0x40, 0, 0], 0x4000);
    good(&r);
    r.data_in
}

fn gen_and_keys(run: &Run<'_>) -> (u32, Vec<u64>) {
    let d = prin(run, 0);
    let n = u32::from_be_bytes(d[4..8].try_into().unwrap()) as usize / 8;
    let keys = (0..n)
        .map(|i| u64::from_be_bytes(d[8 + 8 * i..16 + 8 * i].try_into().unwrap()))
        .collect();
    (u32::from_be_bytes(d[0..4].try_into().unwrap()), keys)
}

#[test]
fn pr_register_reserve_release_unregister() {
    let t = target();
    let a = Run::new(&t);
    good(&prout(&a, 6, 0, 0, 0xabc));
    assert_eq!(gen_and_keys(&a), (1, vec![0xabc]));
    // REGISTER with the wrong current key conflicts.
    assert_eq!(
        prout(&a, 0, 0, 0, 0xabd).status,
        Status::RESERVATION_CONFLICT
    );
    for rtype in [1u8, 3, 5, 6, 7, 8] {
        good(&prout(&a, 1, rtype, 0xabc, 0));
        let d = prin(&a, 1);
        assert_eq!(&d[4..8], &[0, 0, 0, 16]);
        let key = u64::from_be_bytes(d[8..16].try_into().unwrap());
        assert_eq!(key, if rtype >= 7 { 0 } else { 0xabc });
        assert_eq!(d[21], rtype);
        // Releasing with the wrong type is an invalid release.
        let wrong = if rtype == 1 { 3 } else { 1 };
        check(
            &prout(&a, 2, wrong, 0xabc, 0),
            SenseKey::ILLEGAL_REQUEST,
            Asc::INVALID_RELEASE_OF_PERSISTENT_RESERVATION,
        );
        good(&prout(&a, 2, rtype, 0xabc, 0));
        assert_eq!(&prin(&a, 1)[4..8], &[0, 0, 0, 0]);
    }
    good(&prout(&a, 0, 0, 0xabc, 0));
    assert_eq!(gen_and_keys(&a), (2, vec![]));
}

#[test]
fn pr_access_matrix_per_type() {
    // (type, registered reads, registered writes, unregistered reads, unregistered writes)
    let cases = [
        (3u8, false, false, false, false),
        (1, true, false, true, false),
        (6, true, true, false, false),
        (5, true, true, true, false),
        (8, true, true, false, false),
        (7, true, true, true, false),
    ];
    for (rtype, rr, rw, ur, uw) in cases {
        let t = target();
        let a = Run::as_nexus(&t, 1);
        let b = Run::as_nexus(&t, 2);
        good(&prout(&a, 6, 0, 0, 1));
        good(&prout(&b, 6, 0, 0, 2));
        good(&prout(&a, 1, rtype, 1, 0));
        good(&a.read(&cdb10(0x28, 0, 1, 1), 512));
        good(&a.write(&cdb10(0x2a, 0, 1, 1), &[0; 512]));
        let reads = |r: &Run<'_>| r.read(&cdb10(0x28, 0, 1, 1), 512).status == Status::GOOD;
        let writes = |r: &Run<'_>| r.write(&cdb10(0x2a, 0, 1, 1), &[0; 512]).status == Status::GOOD;
        assert_eq!(reads(&b), rr, "type {rtype} registered read");
        assert_eq!(writes(&b), rw, "type {rtype} registered write");
        good(&prout(&b, 0, 0, 2, 0));
        assert_eq!(reads(&b), ur, "type {rtype} unregistered read");
        assert_eq!(writes(&b), uw, "type {rtype} unregistered write");
        // INQUIRY and READ CAPACITY are always allowed.
        good(&b.read(&[0x12, 0, 0, 0, 36, 0], 36));
        good(&b.read(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8));
        good(&prout(&a, 2, rtype, 1, 0));
        good(&prout(&a, 0, 0, 1, 0));
    }
}

#[test]
fn pr_ownership_all_registrants_survives_holder_unregistering() {
    for (rtype, shared) in [(7u8, true), (8, true), (5, false), (6, false), (1, false)] {
        let t = target();
        let a = Run::as_nexus(&t, 1);
        let b = Run::as_nexus(&t, 2);
        good(&prout(&a, 6, 0, 0, 1));
        good(&prout(&b, 6, 0, 0, 2));
        good(&prout(&a, 1, rtype, 1, 0));
        good(&prout(&a, 0, 0, 1, 0));
        let reserved = prin(&a, 1)[7] == 16;
        assert_eq!(reserved, shared, "type {rtype}");
        if shared {
            good(&prout(&b, 2, rtype, 2, 0));
        }
        let _ = b.none(&[0; 6]);
        good(&prout(&b, 0, 0, 2, 0));
        assert_eq!(gen_and_keys(&a).1, Vec::<u64>::new());
    }
}

#[test]
fn pr_clear_and_preempt_bump_generation_and_raise_uas() {
    let t = target();
    let a = Run::as_nexus(&t, 1);
    let b = Run::as_nexus(&t, 2);
    good(&prout(&a, 6, 0, 0, 1));
    good(&prout(&a, 1, 3, 1, 0));
    let (g0, _) = gen_and_keys(&a);
    good(&prout(&a, 3, 0, 1, 0));
    let (g1, keys) = gen_and_keys(&a);
    assert_eq!((g1, keys), (g0 + 1, vec![]));
    assert_eq!(&prin(&a, 1)[4..8], &[0, 0, 0, 0]);
    // PREEMPT without a reservation removes the other registration.
    good(&prout(&a, 6, 0, 0, 1));
    good(&prout(&b, 6, 0, 0, 2));
    let (g2, _) = gen_and_keys(&a);
    good(&prout(&b, 4, 3, 2, 1));
    let (g3, keys) = gen_and_keys(&b);
    assert_eq!((g3, keys), (g2 + 1, vec![2]));
    check(
        &a.none(&[0; 6]),
        SenseKey::UNIT_ATTENTION,
        Asc::REGISTRATIONS_PREEMPTED,
    );
    // Preempting a key nobody has conflicts; an unregistered nexus conflicts.
    assert_eq!(prout(&b, 4, 3, 2, 99).status, Status::RESERVATION_CONFLICT);
    assert_eq!(prout(&a, 4, 3, 1, 2).status, Status::RESERVATION_CONFLICT);
    // PREEMPT of the holder takes the reservation.
    good(&prout(&a, 6, 0, 0, 1));
    good(&prout(&a, 1, 1, 1, 0));
    good(&prout(&b, 4, 3, 2, 1));
    let d = prin(&b, 1);
    assert_eq!(u64::from_be_bytes(d[8..16].try_into().unwrap()), 2);
    assert_eq!(d[21], 3);
    good(&prout(&b, 3, 0, 2, 0));
}

#[test]
fn pr_report_capabilities_and_full_status() {
    let t = target();
    let a = Run::new(&t);
    let d = prin(&a, 2);
    assert_eq!(&d[0..2], &[0, 8]);
    assert_eq!(d[2], 0x01, "CRH = 0, PTPL_C = 1");
    assert_eq!(d[4] & 0xea, 0xea);
    assert_eq!(d[5] & 0x01, 0x01);
    good(&prout(&a, 6, 0, 0, 5));
    good(&prout(&a, 1, 1, 5, 0));
    let d = prin(&a, 3);
    assert_eq!(u64::from_be_bytes(d[8..16].try_into().unwrap()), 5);
    assert_eq!(d[20], 1, "R_HOLDER");
    assert_eq!(d[21], 1);
    let tid_len = u32::from_be_bytes(d[28..32].try_into().unwrap()) as usize;
    let tid = std::str::from_utf8(&d[36..32 + tid_len]).unwrap();
    assert!(tid.starts_with("iqn.2000-01.org.test:init1,i,0x800000000001"));
    check(
        &a.read(&[0x5e, 7, 0, 0, 0, 0, 0, 0x40, 0, 0], 0x4000),
        SenseKey::ILLEGAL_REQUEST,
        Asc::INVALID_FIELD_IN_CDB,
    );
    good(&prout(&a, 3, 0, 5, 0));
}

#[test]
fn rejects_malformed_prout() {
    let t = target();
    let a = Run::new(&t);
    // Parameter list of the wrong length.
    check(
        &a.write(&[0x5f, 6, 0, 0, 0, 0, 0, 0, 20, 0], &[0; 20]),
        SenseKey::ILLEGAL_REQUEST,
        Asc::PARAMETER_LIST_LENGTH_ERROR,
    );
    good(&prout(&a, 6, 0, 0, 1));
    // Invalid type and scope.
    check(
        &prout(&a, 1, 2, 1, 0),
        SenseKey::ILLEGAL_REQUEST,
        Asc::INVALID_FIELD_IN_CDB,
    );
    check(
        &prout(&a, 1, 0x11, 1, 0),
        SenseKey::ILLEGAL_REQUEST,
        Asc::INVALID_FIELD_IN_CDB,
    );
    // SPEC_I_PT is not supported.
    let mut p = vec![0u8; 24];
    p[8..16].copy_from_slice(&2u64.to_be_bytes());
    p[0..8].copy_from_slice(&1u64.to_be_bytes());
    p[20] = 0x08;
    check(
        &a.write(&[0x5f, 0, 0, 0, 0, 0, 0, 0, 24, 0], &p),
        SenseKey::ILLEGAL_REQUEST,
        Asc::INVALID_FIELD_IN_PARAMETER_LIST,
    );
    good(&prout(&a, 3, 0, 1, 0));
}

#[test]
fn pr_register_and_move_hands_over_the_reservation() {
    let t = target();
    let a = Run::as_nexus(&t, 1);
    let b = Run::as_nexus(&t, 2);
    good(&b.none(&[0; 6]));
    good(&prout(&a, 6, 0, 0, 1));
    good(&prout(&a, 1, 1, 1, 0));
    let name = b.nx.initiator_port_name();
    let mut tid = vec![0x45, 0];
    let mut body = name.into_bytes();
    body.push(0);
    while body.len() % 4 != 0 {
        body.push(0);
    }
    tid.extend_from_slice(&(body.len() as u16).to_be_bytes());
    tid.extend_from_slice(&body);
    let mut p = Vec::new();
    p.extend_from_slice(&1u64.to_be_bytes());
    p.extend_from_slice(&9u64.to_be_bytes());
    p.extend_from_slice(&[0, 0x02, 0, 1]); // UNREG, relative port 1
    p.extend_from_slice(&(tid.len() as u32).to_be_bytes());
    p.extend_from_slice(&tid);
    let len = p.len() as u32;
    let mut c = vec![0x5f, 7, 1, 0, 0];
    c.extend_from_slice(&len.to_be_bytes());
    c.push(0);
    good(&a.write(&c, &p));
    let d = prin(&a, 1);
    assert_eq!(u64::from_be_bytes(d[8..16].try_into().unwrap()), 9);
    assert_eq!(gen_and_keys(&a).1, vec![9]);
    good(&b.write(&cdb10(0x2a, 0, 0, 1), &[0; 512]));
    assert_eq!(
        a.write(&cdb10(0x2a, 0, 0, 1), &[0; 512]).status,
        Status::RESERVATION_CONFLICT
    );
}

#[test]
fn shared_lu_shares_reservations_across_targets() {
    let lu = ram_lu(false);
    let t1 = target_with(lu.clone());
    let mut m = BTreeMap::new();
    m.insert(0, lu);
    let t2 = ScsiTarget::new(m);
    let a = Run::new(&t1);
    let mut b = Run::new(&t2);
    b.nx.target_name = "iqn.2000-01.org.test:other".into();
    good(&a.none(&[0x16, 0, 0, 0, 0, 0]));
    assert_eq!(
        b.none(&[0x16, 0, 0, 0, 0, 0]).status,
        Status::RESERVATION_CONFLICT
    );
    good(&a.none(&[0x17, 0, 0, 0, 0, 0]));
    good(&b.none(&[0x16, 0, 0, 0, 0, 0]));
}

// ---- hostile input -----------------------------------------------------------------

#[test]
fn random_cdbs_never_panic() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    let t = target();
    let mut rng = StdRng::seed_from_u64(0x0001_5c71);
    let opcodes: Vec<u8> = super::command::TABLE.iter().map(|s| s.opcode).collect();
    for i in 0..20_000u32 {
        let len = [6usize, 10, 12, 16, 16, 32, 1, 0][rng.random_range(0..8)];
        let mut cdb: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if !cdb.is_empty() && i % 4 != 0 {
            cdb[0] = opcodes[rng.random_range(0..opcodes.len())];
        }
        // Keep the control byte mostly clean so that handlers run.
        if cdb.len() >= 6 && i % 3 != 0 {
            let last = cdb.len() - 1;
            cdb[last] = 0;
            if rng.random_bool(0.7) && cdb.len() >= 10 {
                // Small LBAs and lengths reach deeper into the handlers.
                let end = cdb.len() - 2;
                for b in &mut cdb[2..end] {
                    *b &= 0x01;
                }
            }
        }
        let dlen = [0usize, 8, 24, 512, 1024, 4104][rng.random_range(0..6)];
        let data: Vec<u8> = (0..dlen).map(|_| rng.random()).collect();
        let dir = [
            DataDirection::None,
            DataDirection::Read,
            DataDirection::Write,
            DataDirection::Bidirectional,
        ][rng.random_range(0..4)];
        let expected = [0u32, 1, 18, 512, 4104, 65536][rng.random_range(0..6)];
        let nx = nexus(rng.random_range(1..4));
        let resp = t.execute(
            &nx,
            &Command {
                lun: rng.random_range(0..2),
                cdb: &cdb,
                data_out: &data,
                expected_len: expected,
                direction: dir,
                attribute: TaskAttribute::Simple,
                tag: i,
            },
        );
        assert!(resp.data_in.len() <= expected as usize);
        if resp.status == Status::CHECK_CONDITION {
            assert!(resp.sense.len() >= 8);
        }
        if i % 1000 == 0 {
            t.nexus_closed(&nx);
        }
    }
}

// ---- EXTENDED COPY / RECEIVE COPY RESULTS ----------------------------------------

fn xcopy_target_descriptor(kind: u8) -> Vec<u8> {
    let mut d = vec![kind, 0, 0, 0];
    // NAA designator of the test LU, LU association.
    d.extend_from_slice(&[0x01, 0x03, 0x00, 0x08]);
    d.extend_from_slice(&[0x60, 0x01, 0x40, 0x50, 0x12, 0x34, 0x56, 0x78]);
    d.resize(28, 0);
    d.extend_from_slice(&[0, 0, 0x02, 0x00]); // block length 512
    d
}

fn xcopy_segment(src: u16, dst: u16, blocks: u16, src_lba: u64, dst_lba: u64) -> Vec<u8> {
    let mut d = vec![0x02, 0, 0, 0x18];
    d.extend_from_slice(&src.to_be_bytes());
    d.extend_from_slice(&dst.to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(&blocks.to_be_bytes());
    d.extend_from_slice(&src_lba.to_be_bytes());
    d.extend_from_slice(&dst_lba.to_be_bytes());
    d
}

fn xcopy_list(list_id: u8, usage: u8, targets: &[Vec<u8>], segments: &[Vec<u8>]) -> Vec<u8> {
    let td: Vec<u8> = targets.concat();
    let sd: Vec<u8> = segments.concat();
    let mut p = vec![list_id, usage << 3];
    p.extend_from_slice(&(td.len() as u16).to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    p.extend_from_slice(&(sd.len() as u32).to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    p.extend_from_slice(&td);
    p.extend_from_slice(&sd);
    p
}

fn xcopy(run: &Run<'_>, p: &[u8]) -> Response {
    let mut c = vec![0x83, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    c.extend_from_slice(&(p.len() as u32).to_be_bytes());
    c.extend_from_slice(&[0, 0]);
    run.write(&c, p)
}

fn receive_copy_results(run: &Run<'_>, sa: u8, list_id: u8) -> Response {
    let mut c = vec![0x84, sa, list_id, 0, 0, 0, 0, 0, 0, 0];
    c.extend_from_slice(&1024u32.to_be_bytes());
    c.extend_from_slice(&[0, 0]);
    run.read(&c, 1024)
}

#[test]
fn extended_copy_copies_blocks_and_holds_status() {
    let t = target();
    let run = Run::new(&t);
    let data = pattern(16, 11);
    good(&run.write(&cdb10(0x2a, 0, 0, 16), &data));
    check(
        &receive_copy_results(&run, 0, 1),
        SenseKey::ILLEGAL_REQUEST,
        Asc::INVALID_FIELD_IN_CDB,
    );
    let p = xcopy_list(
        1,
        0,
        &[xcopy_target_descriptor(0xe4)],
        &[xcopy_segment(0, 0, 16, 0, BLOCKS - 16)],
    );
    good(&xcopy(&run, &p));
    assert_eq!(
        run.read(&cdb16(0x88, 0, BLOCKS - 16, 16), 16 * 512).data_in,
        data
    );
    let r = receive_copy_results(&run, 0, 1);
    good(&r);
    assert_eq!(&r.data_in[..4], &[0, 0, 0, 8]);
    assert_eq!(r.data_in[4], 0x01, "completed without errors");
    assert_eq!(&r.data_in[8..12], &(16u32 * 512).to_be_bytes());
    // The nexus going away discards held results.
    t.nexus_closed(&run.nx);
    check(
        &receive_copy_results(&run, 0, 1),
        SenseKey::ILLEGAL_REQUEST,
        Asc::INVALID_FIELD_IN_CDB,
    );
    let r = receive_copy_results(&run, 3, 0);
    good(&r);
    assert!(r.data_in.len() >= 44);
    // Parameter list length 0: nothing to do.
    good(&xcopy(&run, &[]));
}

#[test]
fn rejects_bad_extended_copy_lists() {
    let t = target();
    let run = Run::new(&t);
    let td = xcopy_target_descriptor(0xe4);
    let seg = xcopy_segment(0, 0, 8, 0, 100);
    // Truncated target descriptor.
    let p = xcopy_list(1, 0, std::slice::from_ref(&td), std::slice::from_ref(&seg));
    check(
        &xcopy(&run, &p[..16 + 31]),
        SenseKey::ILLEGAL_REQUEST,
        Asc::PARAMETER_LIST_LENGTH_ERROR,
    );
    // Too many target / segment descriptors.
    let p = xcopy_list(1, 0, &vec![td.clone(); 5], std::slice::from_ref(&seg));
    check(
        &xcopy(&run, &p),
        SenseKey::ILLEGAL_REQUEST,
        Asc::TOO_MANY_TARGET_DESCRIPTORS,
    );
    let p = xcopy_list(1, 0, std::slice::from_ref(&td), &vec![seg.clone(); 17]);
    check(
        &xcopy(&run, &p),
        SenseKey::ILLEGAL_REQUEST,
        Asc::TOO_MANY_SEGMENT_DESCRIPTORS,
    );
    // Longer than the maximum descriptor list length.
    let p = xcopy_list(1, 0, &vec![td.clone(); 5], &vec![seg.clone(); 31]);
    check(
        &xcopy(&run, &p),
        SenseKey::ILLEGAL_REQUEST,
        Asc::PARAMETER_LIST_LENGTH_ERROR,
    );
    // Unsupported descriptor types.
    let p = xcopy_list(
        1,
        0,
        &[xcopy_target_descriptor(0xe0)],
        std::slice::from_ref(&seg),
    );
    check(
        &xcopy(&run, &p),
        SenseKey::ILLEGAL_REQUEST,
        Asc::UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE,
    );
    let mut stream = vec![0x03, 0, 0, 0x10];
    stream.resize(20, 0);
    let p = xcopy_list(1, 0, std::slice::from_ref(&td), &[stream]);
    check(
        &xcopy(&run, &p),
        SenseKey::ILLEGAL_REQUEST,
        Asc::UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE,
    );
    // Destination index beyond the target list; copy beyond the end.
    let p = xcopy_list(
        1,
        0,
        std::slice::from_ref(&td),
        &[xcopy_segment(0, 1, 8, 0, 100)],
    );
    check(
        &xcopy(&run, &p),
        SenseKey::COPY_ABORTED,
        Asc::COPY_TARGET_DEVICE_NOT_REACHABLE,
    );
    let p = xcopy_list(
        1,
        0,
        std::slice::from_ref(&td),
        &[xcopy_segment(0, 0, 8, 0, BLOCKS - 1)],
    );
    check(&xcopy(&run, &p), SenseKey::COPY_ABORTED, Asc::NO_ADDITIONAL);
    let r = receive_copy_results(&run, 0, 1);
    assert_eq!(r.data_in[4], 0x02, "held: completed with errors");
    // An LU that is not ours.
    let mut other = td.clone();
    other[15] ^= 0xff;
    let p = xcopy_list(1, 0, &[other], &[seg]);
    check(
        &xcopy(&run, &p),
        SenseKey::COPY_ABORTED,
        Asc::COPY_TARGET_DEVICE_NOT_REACHABLE,
    );
}

// ---- I/O errors ------------------------------------------------------------------

/// A store whose reads or writes fail, to check the MEDIUM ERROR sense.
#[derive(Debug)]
struct Failing {
    reads: bool,
    writes: bool,
}

impl crate::engine::lu::BlockStore for Failing {
    fn len(&self) -> u64 {
        BLOCKS * u64::from(BS)
    }
    fn read_at(&self, buf: &mut [u8], _offset: u64) -> std::io::Result<()> {
        if self.reads {
            return Err(std::io::Error::other("injected read error"));
        }
        buf.fill(0);
        Ok(())
    }
    fn write_at(&self, _buf: &[u8], _offset: u64, _durable: bool) -> std::io::Result<()> {
        if self.writes {
            return Err(std::io::Error::other("injected write error"));
        }
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        if self.writes {
            return Err(std::io::Error::other("injected flush error"));
        }
        Ok(())
    }
    fn deallocate(&self, _offset: u64, _len: u64) -> std::io::Result<()> {
        if self.writes {
            return Err(std::io::Error::other("injected unmap error"));
        }
        Ok(())
    }
    fn allocation(&self, offset: u64) -> std::io::Result<crate::engine::lu::AllocationRun> {
        Ok(crate::engine::lu::AllocationRun {
            status: crate::engine::lu::Allocation::Mapped,
            len: self.len() - offset,
        })
    }
    fn thin(&self) -> bool {
        true
    }
}

fn failing_target(reads: bool, writes: bool) -> ScsiTarget {
    target_with(Arc::new(LogicalUnit::new(
        LuIdentity {
            name: "bad".into(),
            block_size: BS,
            readonly: false,
            write_back: true,
            serial: "bad".into(),
            naa: vec![0x60; 8],
            rotation_rate: 0,
        },
        BackingKind::File,
        Box::new(Failing { reads, writes }),
    )))
}

#[test]
fn io_errors_are_medium_errors_with_the_lba() {
    let t = failing_target(true, false);
    let run = Run::new(&t);
    let r = run.read(&cdb10(0x28, 0, 77, 1), 512);
    check(&r, SenseKey::MEDIUM_ERROR, Asc::UNRECOVERED_READ_ERROR);
    assert_eq!(r.sense[0], 0xf0, "INFORMATION valid");
    assert_eq!(&r.sense[3..7], &77u32.to_be_bytes());
    assert!(r.data_in.is_empty());
    let t = failing_target(false, true);
    let run = Run::new(&t);
    let r = run.write(&cdb10(0x2a, 0x08, 5, 1), &[1; 512]);
    check(&r, SenseKey::MEDIUM_ERROR, Asc::WRITE_ERROR);
    assert_eq!(&r.sense[3..7], &5u32.to_be_bytes());
    check(
        &run.none(&cdb10(0x35, 0, 0, 0)),
        SenseKey::MEDIUM_ERROR,
        Asc::WRITE_ERROR,
    );
    let list = unmap_list(&[(0, 8)]);
    check(
        &run.write(&unmap_cdb(list.len()), &list),
        SenseKey::MEDIUM_ERROR,
        Asc::WRITE_ERROR,
    );
}
