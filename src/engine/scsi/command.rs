//! The command table: every operation code (and service action) the engine executes,
//! with its CDB usage data, data direction, reservation class and handler.
//!
//! One table feeds dispatch, CDB length checks, write-protect checks, reservation
//! conflict checks and REPORT SUPPORTED OPERATION CODES, so they cannot disagree.

use super::cdb::{op, Bytes};
use super::sense::Sense;
use super::state::{ItNexus, LuState};
use super::target::TargetView;
use super::{mode, pr, sbc, spc, xcopy, Command, DataDirection, Nexus, Status};
use crate::engine::lu::LogicalUnit;

/// How a command fails.
#[derive(Debug)]
pub(crate) enum Fail {
    /// CHECK CONDITION with this sense.
    Check(Sense),
    /// RESERVATION CONFLICT.
    Conflict,
}

impl From<Sense> for Fail {
    fn from(s: Sense) -> Self {
        Fail::Check(s)
    }
}

/// A command that completed.
#[derive(Debug)]
pub(crate) struct Done {
    pub status: Status,
    /// Data-In, already cut to the CDB's allocation length.
    pub data: Vec<u8>,
}

impl Done {
    pub fn good() -> Self {
        Done {
            status: Status::GOOD,
            data: Vec::new(),
        }
    }
    /// GOOD with parameter data cut to `alloc` bytes (the CDB's ALLOCATION LENGTH).
    pub fn data(mut data: Vec<u8>, alloc: usize) -> Self {
        data.truncate(alloc);
        Done {
            status: Status::GOOD,
            data,
        }
    }
}

pub(crate) type Outcome = Result<Done, Fail>;

/// Everything a handler may look at.
pub(crate) struct Exec<'a> {
    pub cdb: Bytes<'a>,
    pub cmd: &'a Command<'a>,
    pub nexus: &'a Nexus,
    pub it: &'a ItNexus,
    pub lu: &'a LogicalUnit,
    pub state: &'a LuState,
    pub target: &'a TargetView,
    /// Bytes the CDB asks to move, when the handler knows it (block transfers); the
    /// residual is worked out from it. Data-In handlers leave it `None`: their data
    /// length is the nominal length.
    pub nominal: Option<u64>,
}

impl Exec<'_> {
    /// Data-Out the initiator sent, as far as the expected transfer length covers it.
    pub fn data_out(&self) -> &[u8] {
        if !matches!(
            self.cmd.direction,
            DataDirection::Write | DataDirection::Bidirectional
        ) {
            return &[];
        }
        let n = self.cmd.data_out.len().min(self.cmd.expected_len as usize);
        &self.cmd.data_out[..n]
    }
}

/// Data direction of a command per its CDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    None,
    In,
    Out,
}

/// What a command does, for reservation checks (SPC-4 §5.13.1 tables 62/63, SBC-3
/// table 13): which commands a non-holder may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Allowed whatever the reservation (INQUIRY, REPORT LUNS, READ CAPACITY, ...).
    Always,
    /// Reads the medium or LU state: allowed under Write Exclusive types.
    Read,
    /// Changes the medium or LU state.
    Write,
    /// PERSISTENT RESERVE OUT: decided per service action in `pr.rs`.
    PrOut,
    /// RESERVE/RELEASE: decided in `spc.rs`.
    Reserve2,
}

pub(crate) type Handler = fn(&mut Exec<'_>) -> Outcome;

/// One row of the table.
#[derive(Debug)]
pub(crate) struct Spec {
    pub opcode: u8,
    /// Service action (in CDB byte 1, bits 4-0) for opcodes that have them.
    pub sa: Option<u8>,
    pub name: &'static str,
    /// CDB USAGE DATA (SPC-4 §6.35.3): its length is the CDB length; byte 0 is the
    /// opcode, other bytes mark the bits the engine looks at.
    pub usage: &'static [u8],
    pub flow: Flow,
    pub access: Access,
    /// Allowed to a nexus that does not hold an SPC-2 reservation held by another.
    pub spc2_allowed: bool,
    /// Modifies the medium: refused on a read-only or write-protected LU.
    pub writes_medium: bool,
    pub handler: Handler,
}

impl Spec {
    pub fn cdb_len(&self) -> usize {
        self.usage.len()
    }
}

macro_rules! spec {
    ($op:expr, $sa:expr, $name:literal, $usage:expr, $flow:ident, $access:ident, $spc2:expr, $writes:expr, $h:path) => {
        Spec {
            opcode: $op,
            sa: $sa,
            name: $name,
            usage: &$usage,
            flow: Flow::$flow,
            access: Access::$access,
            spc2_allowed: $spc2,
            writes_medium: $writes,
            handler: $h,
        }
    };
}

/// Opcodes whose service action selects the command.
pub(crate) fn has_service_action(opcode: u8) -> bool {
    matches!(
        opcode,
        op::SERVICE_ACTION_IN_16
            | op::MAINTENANCE_IN
            | op::PERSISTENT_RESERVE_IN
            | op::PERSISTENT_RESERVE_OUT
            | op::EXTENDED_COPY
            | op::RECEIVE_COPY_RESULTS
            | op::SANITIZE
    )
}

const N: Option<u8> = None;

/// The command set, sorted by opcode then service action (REPORT SUPPORTED OPERATION
/// CODES returns it in this order).
#[rustfmt::skip]
pub(crate) static TABLE: &[Spec] = &[
    spec!(op::TEST_UNIT_READY, N, "TEST UNIT READY", [0x00, 0, 0, 0, 0, 0], None, Always, false, false, spc::test_unit_ready),
    spec!(op::REQUEST_SENSE, N, "REQUEST SENSE", [0x03, 0x01, 0, 0, 0xff, 0], In, Always, true, false, spc::request_sense),
    spec!(op::READ_6, N, "READ(6)", [0x08, 0x1f, 0xff, 0xff, 0xff, 0], In, Read, false, false, sbc::read),
    spec!(op::WRITE_6, N, "WRITE(6)", [0x0a, 0x1f, 0xff, 0xff, 0xff, 0], Out, Write, false, true, sbc::write),
    spec!(op::INQUIRY, N, "INQUIRY", [0x12, 0x01, 0xff, 0xff, 0xff, 0], In, Always, true, false, spc::inquiry),
    spec!(op::MODE_SELECT_6, N, "MODE SELECT(6)", [0x15, 0x11, 0, 0, 0xff, 0], Out, Write, false, false, mode::mode_select),
    spec!(op::RESERVE_6, N, "RESERVE(6)", [0x16, 0, 0, 0, 0, 0], None, Reserve2, true, false, spc::reserve),
    spec!(op::RELEASE_6, N, "RELEASE(6)", [0x17, 0, 0, 0, 0, 0], None, Reserve2, true, false, spc::release),
    spec!(op::MODE_SENSE_6, N, "MODE SENSE(6)", [0x1a, 0x08, 0xff, 0xff, 0xff, 0], In, Read, false, false, mode::mode_sense),
    spec!(op::START_STOP_UNIT, N, "START STOP UNIT", [0x1b, 0x01, 0, 0x0f, 0xf7, 0], None, Read, false, false, sbc::start_stop_unit),
    spec!(op::SEND_DIAGNOSTIC, N, "SEND DIAGNOSTIC", [0x1d, 0xf7, 0, 0xff, 0xff, 0], Out, Write, false, false, spc::send_diagnostic),
    spec!(op::PREVENT_ALLOW_MEDIUM_REMOVAL, N, "PREVENT ALLOW MEDIUM REMOVAL", [0x1e, 0, 0, 0, 0x03, 0], None, Read, false, false, sbc::prevent_allow),
    spec!(op::READ_CAPACITY_10, N, "READ CAPACITY(10)", [0x25, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x01, 0], In, Always, false, false, sbc::read_capacity_10),
    spec!(op::READ_10, N, "READ(10)", [0x28, 0xfa, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0], In, Read, false, false, sbc::read),
    spec!(op::WRITE_10, N, "WRITE(10)", [0x2a, 0xfa, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0], Out, Write, false, true, sbc::write),
    spec!(op::WRITE_AND_VERIFY_10, N, "WRITE AND VERIFY(10)", [0x2e, 0xf6, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0], Out, Write, false, true, sbc::write_and_verify),
    spec!(op::VERIFY_10, N, "VERIFY(10)", [0x2f, 0xf6, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0], Out, Read, false, false, sbc::verify),
    spec!(op::PRE_FETCH_10, N, "PRE-FETCH(10)", [0x34, 0x02, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0], None, Read, false, false, sbc::pre_fetch),
    spec!(op::SYNCHRONIZE_CACHE_10, N, "SYNCHRONIZE CACHE(10)", [0x35, 0x06, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0], None, Write, false, false, sbc::synchronize_cache),
    spec!(op::READ_DEFECT_DATA_10, N, "READ DEFECT DATA(10)", [0x37, 0, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0], In, Read, false, false, sbc::read_defect_data),
    spec!(op::WRITE_SAME_10, N, "WRITE SAME(10)", [0x41, 0xe8, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0], Out, Write, false, true, sbc::write_same),
    spec!(op::UNMAP, N, "UNMAP", [0x42, 0, 0, 0, 0, 0, 0x1f, 0xff, 0xff, 0], Out, Write, false, true, sbc::unmap),
    spec!(op::MODE_SELECT_10, N, "MODE SELECT(10)", [0x55, 0x11, 0, 0, 0, 0, 0, 0xff, 0xff, 0], Out, Write, false, false, mode::mode_select),
    spec!(op::RESERVE_10, N, "RESERVE(10)", [0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0], None, Reserve2, true, false, spc::reserve),
    spec!(op::RELEASE_10, N, "RELEASE(10)", [0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0], None, Reserve2, true, false, spc::release),
    spec!(op::MODE_SENSE_10, N, "MODE SENSE(10)", [0x5a, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0], In, Read, false, false, mode::mode_sense),
    spec!(op::PERSISTENT_RESERVE_IN, Some(0x00), "PERSISTENT RESERVE IN / READ KEYS", [0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0], In, Always, false, false, pr::persistent_reserve_in),
    spec!(op::PERSISTENT_RESERVE_IN, Some(0x01), "PERSISTENT RESERVE IN / READ RESERVATION", [0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0], In, Always, false, false, pr::persistent_reserve_in),
    spec!(op::PERSISTENT_RESERVE_IN, Some(0x02), "PERSISTENT RESERVE IN / REPORT CAPABILITIES", [0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0], In, Always, false, false, pr::persistent_reserve_in),
    spec!(op::PERSISTENT_RESERVE_IN, Some(0x03), "PERSISTENT RESERVE IN / READ FULL STATUS", [0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0], In, Always, false, false, pr::persistent_reserve_in),
    spec!(op::PERSISTENT_RESERVE_OUT, Some(0x00), "PERSISTENT RESERVE OUT / REGISTER", [0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0], Out, PrOut, false, false, pr::persistent_reserve_out),
    spec!(op::PERSISTENT_RESERVE_OUT, Some(0x01), "PERSISTENT RESERVE OUT / RESERVE", [0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0], Out, PrOut, false, false, pr::persistent_reserve_out),
    spec!(op::PERSISTENT_RESERVE_OUT, Some(0x02), "PERSISTENT RESERVE OUT / RELEASE", [0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0], Out, PrOut, false, false, pr::persistent_reserve_out),
    spec!(op::PERSISTENT_RESERVE_OUT, Some(0x03), "PERSISTENT RESERVE OUT / CLEAR", [0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0], Out, PrOut, false, false, pr::persistent_reserve_out),
    spec!(op::PERSISTENT_RESERVE_OUT, Some(0x04), "PERSISTENT RESERVE OUT / PREEMPT", [0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0], Out, PrOut, false, false, pr::persistent_reserve_out),
    spec!(op::PERSISTENT_RESERVE_OUT, Some(0x05), "PERSISTENT RESERVE OUT / PREEMPT AND ABORT", [0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0], Out, PrOut, false, false, pr::persistent_reserve_out),
    spec!(op::PERSISTENT_RESERVE_OUT, Some(0x06), "PERSISTENT RESERVE OUT / REGISTER AND IGNORE EXISTING KEY", [0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0], Out, PrOut, false, false, pr::persistent_reserve_out),
    spec!(op::PERSISTENT_RESERVE_OUT, Some(0x07), "PERSISTENT RESERVE OUT / REGISTER AND MOVE", [0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0], Out, PrOut, false, false, pr::persistent_reserve_out),
    spec!(op::EXTENDED_COPY, Some(0x00), "EXTENDED COPY(LID1)", [0x83, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0], Out, Write, false, true, xcopy::extended_copy),
    spec!(op::RECEIVE_COPY_RESULTS, Some(0x00), "RECEIVE COPY RESULTS / COPY STATUS(LID1)", [0x84, 0x1f, 0xff, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0], In, Read, false, false, xcopy::receive_copy_results),
    spec!(op::RECEIVE_COPY_RESULTS, Some(0x03), "RECEIVE COPY RESULTS / OPERATING PARAMETERS", [0x84, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0], In, Read, false, false, xcopy::receive_copy_results),
    spec!(op::READ_16, N, "READ(16)", [0x88, 0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0], In, Read, false, false, sbc::read),
    spec!(op::COMPARE_AND_WRITE, N, "COMPARE AND WRITE", [0x89, 0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0xff, 0x1f, 0], Out, Write, false, true, sbc::compare_and_write),
    spec!(op::WRITE_16, N, "WRITE(16)", [0x8a, 0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0], Out, Write, false, true, sbc::write),
    spec!(op::ORWRITE_16, N, "ORWRITE(16)", [0x8b, 0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0], Out, Write, false, true, sbc::orwrite),
    spec!(op::WRITE_AND_VERIFY_16, N, "WRITE AND VERIFY(16)", [0x8e, 0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0], Out, Write, false, true, sbc::write_and_verify),
    spec!(op::VERIFY_16, N, "VERIFY(16)", [0x8f, 0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0], Out, Read, false, false, sbc::verify),
    spec!(op::PRE_FETCH_16, N, "PRE-FETCH(16)", [0x90, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0], None, Read, false, false, sbc::pre_fetch),
    spec!(op::SYNCHRONIZE_CACHE_16, N, "SYNCHRONIZE CACHE(16)", [0x91, 0x06, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0], None, Write, false, false, sbc::synchronize_cache),
    spec!(op::WRITE_SAME_16, N, "WRITE SAME(16)", [0x93, 0xe9, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0], Out, Write, false, true, sbc::write_same),
    spec!(op::SERVICE_ACTION_IN_16, Some(op::SAI_READ_CAPACITY_16), "READ CAPACITY(16)", [0x9e, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0], In, Always, false, false, sbc::read_capacity_16),
    spec!(op::SERVICE_ACTION_IN_16, Some(op::SAI_GET_LBA_STATUS), "GET LBA STATUS", [0x9e, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0], In, Read, false, false, sbc::get_lba_status),
    spec!(op::REPORT_LUNS, N, "REPORT LUNS", [0xa0, 0, 0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0], In, Always, true, false, spc::report_luns),
    spec!(op::MAINTENANCE_IN, Some(op::MI_REPORT_TARGET_PORT_GROUPS), "REPORT TARGET PORT GROUPS", [0xa3, 0xff, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0], In, Always, false, false, spc::report_target_port_groups),
    spec!(op::MAINTENANCE_IN, Some(op::MI_REPORT_SUPPORTED_OPCODES), "REPORT SUPPORTED OPERATION CODES", [0xa3, 0x1f, 0x87, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0], In, Read, false, false, spc::report_supported_opcodes),
    spec!(op::MAINTENANCE_IN, Some(op::MI_REPORT_SUPPORTED_TMFS), "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS", [0xa3, 0x1f, 0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0], In, Read, false, false, spc::report_supported_tmfs),
    spec!(op::READ_12, N, "READ(12)", [0xa8, 0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0], In, Read, false, false, sbc::read),
    spec!(op::WRITE_12, N, "WRITE(12)", [0xaa, 0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0], Out, Write, false, true, sbc::write),
    spec!(op::WRITE_AND_VERIFY_12, N, "WRITE AND VERIFY(12)", [0xae, 0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0], Out, Write, false, true, sbc::write_and_verify),
    spec!(op::VERIFY_12, N, "VERIFY(12)", [0xaf, 0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0], Out, Read, false, false, sbc::verify),
    spec!(op::READ_DEFECT_DATA_12, N, "READ DEFECT DATA(12)", [0xb7, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0], In, Read, false, false, sbc::read_defect_data),
];

/// Find the row for a CDB. `Err` carries the sense for an unknown opcode or service
/// action.
pub(crate) fn lookup(cdb: &[u8]) -> Result<&'static Spec, Sense> {
    let Some(&opcode) = cdb.first() else {
        return Err(Sense::invalid_opcode());
    };
    if has_service_action(opcode) {
        let sa = cdb.get(1).copied().unwrap_or(0) & 0x1f;
        let mut any = false;
        for s in TABLE.iter().filter(|s| s.opcode == opcode) {
            any = true;
            if s.sa == Some(sa) {
                return Ok(s);
            }
        }
        if any {
            // Known opcode, unknown service action: the service action field is
            // invalid (SPC-4 §4.2.5).
            return Err(Sense::invalid_cdb(1, Some(4)));
        }
        return Err(Sense::invalid_opcode());
    }
    TABLE
        .iter()
        .find(|s| s.opcode == opcode)
        .ok_or_else(Sense::invalid_opcode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_usage_starts_with_opcode() {
        for w in TABLE.windows(2) {
            let a = (w[0].opcode, w[0].sa.unwrap_or(0));
            let b = (w[1].opcode, w[1].sa.unwrap_or(0));
            assert!(a < b, "{} before {}", w[0].name, w[1].name);
        }
        for s in TABLE {
            assert_eq!(s.usage[0], s.opcode, "{}", s.name);
            assert_eq!(s.sa.is_some(), has_service_action(s.opcode), "{}", s.name);
            assert!(matches!(s.cdb_len(), 6 | 10 | 12 | 16), "{}", s.name);
            // The group code fixes the CDB length (SPC-4 §4.2.5.1).
            let expect = match s.opcode >> 5 {
                0 => 6,
                1 | 2 => 10,
                4 => 16,
                5 => 12,
                _ => 0,
            };
            assert_eq!(s.cdb_len(), expect, "{}", s.name);
        }
    }

    #[test]
    fn lookup_by_service_action() {
        assert_eq!(lookup(&[0x9e, 0x10]).unwrap().name, "READ CAPACITY(16)");
        assert_eq!(lookup(&[0x9e, 0xf2]).unwrap().name, "GET LBA STATUS");
        let e = lookup(&[0x9e, 0x11]).unwrap_err();
        assert_eq!(e.asc, super::super::sense::Asc::INVALID_FIELD_IN_CDB);
        let e = lookup(&[0xff]).unwrap_err();
        assert_eq!(
            e.asc,
            super::super::sense::Asc::INVALID_COMMAND_OPERATION_CODE
        );
        assert!(lookup(&[]).is_err());
    }
}
