//! The SCSI layer of the engine: command execution for logical units (SPC-4, SBC-3).
//!
//! Owns: CDB decoding, the command set, sense data, unit attentions, reservations
//! (SPC-2 RESERVE/RELEASE and persistent reservations), the LUN map of a target
//! (REPORT LUNS, LOGICAL UNIT NOT SUPPORTED).
//! Does not: know iSCSI. Its only input is [`Command`] + [`Nexus`]; its only output
//! is [`Response`] (and [`TmfResponse`]).
//!
//! The transport calls [`ScsiService::execute`] synchronously (it may block on file
//! I/O; the transport decides which thread runs it: the LU's I/O workers, see
//! `lu::IoWorkers`), from several threads at once. Which commands may run together is
//! the transport's to decide with a [`taskset::TaskSet`] (task attributes); writes
//! against COMPARE AND WRITE are serialised here (`LuState::io`).
//!
//! In → out: [`ScsiTarget`] (one per iSCSI target, holding its LUN map) receives a
//! [`Command`] for a [`Nexus`]; `target.rs` checks the LUN, unit attentions and
//! reservations, looks the opcode up in the command table (`command.rs`), runs the
//! handler (`spc.rs` primary commands, `sbc.rs` block commands, `mode.rs` mode pages,
//! `pr.rs` reservations, `xcopy.rs` EXTENDED COPY) and turns its result or its
//! [`sense::Sense`] into a [`Response`] with the residual worked out in one place.
//! Per-LU state (unit attentions, reservations, mode parameters) lives in `state.rs`,
//! attached to the `lu::LogicalUnit` so that targets sharing an LU share it.

mod cdb;
mod command;
mod mode;
mod pr;
mod sbc;
pub mod sense;
mod spc;
mod state;
mod target;
pub mod taskset;
#[cfg(test)]
mod tests;
mod xcopy;

pub use target::ScsiTarget;

use std::fmt;

/// True for READ(6), (10), (12) and (16): they only copy data from the medium and change
/// no state of the LU (a pending unit attention is reported instead of reading).
pub fn is_read(cdb: &[u8]) -> bool {
    use cdb::op::{READ_10, READ_12, READ_16, READ_6};
    matches!(cdb.first(), Some(&(READ_6 | READ_10 | READ_12 | READ_16)))
}

/// The I_T nexus a command arrives on (SAM-5 §4.8): which initiator port, through
/// which target port. Reservations and unit attentions are kept per nexus.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Nexus {
    /// Unique for the engine's lifetime (a session id); keys per-nexus state.
    pub id: u64,
    /// iSCSI initiator name, e.g. `iqn.1994-05.com.redhat:client`.
    pub initiator_name: String,
    /// Initiator session id (ISID), 6 bytes.
    pub isid: [u8; 6],
    /// iSCSI target name.
    pub target_name: String,
    /// Target portal group tag: the relative target port identifier.
    pub tpgt: u16,
}

impl Nexus {
    /// SCSI initiator port name, iSCSI form: `<name>,i,0x<isid>` (RFC 7143 §13.4.x / SPC-4 TransportID).
    pub fn initiator_port_name(&self) -> String {
        let mut s = format!("{},i,0x", self.initiator_name);
        for b in self.isid {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// SCSI target port name, iSCSI form: `<name>,t,0x<tpgt as 4 hex digits>`.
    pub fn target_port_name(&self) -> String {
        format!("{},t,0x{:04x}", self.target_name, self.tpgt)
    }
}

/// Data direction of a command, from the iSCSI R/W bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDirection {
    None,
    /// Target to initiator (Data-In).
    Read,
    /// Initiator to target (Data-Out).
    Write,
    Bidirectional,
}

/// SAM task attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskAttribute {
    Untagged,
    Simple,
    Ordered,
    HeadOfQueue,
    Aca,
}

/// One SCSI command as the transport hands it over: all Data-Out already gathered.
#[derive(Debug)]
pub struct Command<'a> {
    /// LUN as the 8-byte SAM LUN field decoded to a flat number (single level).
    pub lun: u64,
    /// The CDB (16 bytes from the BHS, plus any extended-CDB AHS).
    pub cdb: &'a [u8],
    /// Data the initiator sent (length = what it actually sent, ≤ `expected_len`).
    pub data_out: &'a [u8],
    /// Expected Data Transfer Length from the iSCSI header (bytes).
    pub expected_len: u32,
    pub direction: DataDirection,
    pub attribute: TaskAttribute,
    /// Initiator task tag (for logs and ABORT TASK matching).
    pub tag: u32,
}

/// SCSI status byte values used by the engine (SAM-5 §5.3).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u8);

impl Status {
    pub const GOOD: Status = Status(0x00);
    pub const CHECK_CONDITION: Status = Status(0x02);
    pub const CONDITION_MET: Status = Status(0x04);
    pub const BUSY: Status = Status(0x08);
    pub const RESERVATION_CONFLICT: Status = Status(0x18);
    pub const TASK_SET_FULL: Status = Status(0x28);
    pub const ACA_ACTIVE: Status = Status(0x30);
    pub const TASK_ABORTED: Status = Status(0x40);
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Status::GOOD => "GOOD",
            Status::CHECK_CONDITION => "CHECK_CONDITION",
            Status::CONDITION_MET => "CONDITION_MET",
            Status::BUSY => "BUSY",
            Status::RESERVATION_CONFLICT => "RESERVATION_CONFLICT",
            Status::TASK_SET_FULL => "TASK_SET_FULL",
            Status::ACA_ACTIVE => "ACA_ACTIVE",
            Status::TASK_ABORTED => "TASK_ABORTED",
            Status(x) => return write!(f, "Status(0x{x:02x})"),
        };
        f.write_str(name)
    }
}

/// Difference between the expected data transfer length and what the command moved
/// (RFC 7143 §11.4.5: the U/O bits and Residual Count of the SCSI Response).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Residual {
    #[default]
    None,
    /// The command moved fewer bytes than expected (count = the shortfall).
    Underflow(u32),
    /// The command wanted more bytes than expected (count = the excess not moved).
    Overflow(u32),
}

/// The outcome of a command.
#[derive(Debug, Default)]
pub struct Response {
    pub status: Status,
    /// Sense data (fixed or descriptor format) when status is CHECK CONDITION; else empty.
    pub sense: Vec<u8>,
    /// Data for the initiator, at most `expected_len` bytes.
    pub data_in: Vec<u8>,
    pub residual: Residual,
}

impl Default for Status {
    fn default() -> Self {
        Status::GOOD
    }
}

/// Task management functions that reach the SCSI layer (RFC 7143 §11.5.1). ABORT TASK
/// and ABORT TASK SET concern in-flight tasks, which the transport owns; it still
/// reports them here so that the LU can clear per-task state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmfFunction {
    AbortTask { tag: u32 },
    AbortTaskSet,
    ClearAca,
    ClearTaskSet,
    LogicalUnitReset,
    TargetWarmReset,
    TargetColdReset,
}

/// Answer to a task-management function (RFC 7143 §11.6.1 response codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmfResponse {
    FunctionComplete,
    TaskDoesNotExist,
    LunDoesNotExist,
    TaskStillAllocated,
    NotSupported,
    AuthorizationFailed,
    Rejected,
}

/// What the transport needs from the SCSI layer. One value per target (its LUN map);
/// shared by all sessions of that target.
pub trait ScsiService: Send + Sync {
    /// Execute a command for a nexus. Never panics on any CDB or data.
    fn execute(&self, nexus: &Nexus, cmd: &Command<'_>) -> Response;

    /// A task-management request for `lun` (ignored for target-wide functions).
    fn task_management(&self, nexus: &Nexus, function: TmfFunction, lun: u64) -> TmfResponse;

    /// The nexus is gone (session logged out or closed): drop its per-nexus state that
    /// SPC says does not survive (SPC-2 reservations it holds, pending unit attentions).
    fn nexus_closed(&self, nexus: &Nexus);
}
