//! The full feature phase of one connection as a state machine without I/O.
//!
//! Owns: the connection's StatSN and the CmdSN window check of what arrives on it,
//! the write tasks waiting for Data-Out (immediate, unsolicited, R2T-solicited),
//! Data-In segmentation and phase-collapsed status, NOP-In/Out (including the
//! target's own keep-alive pings that close half-open connections), task management,
//! text requests (SendTargets), logout, and what to do about every protocol error
//! ([`Violation::disposition`]: the one place that decides reject, ignore, fail the
//! task or drop the connection).
//!
//! Does not: touch a socket, a clock or the session registry. [`FullFeature::handle`]
//! takes an [`Input`] (a decoded PDU, or an event the socket loop saw: a digest error,
//! an oversized segment, a quiet connection), sends PDUs through [`Transmit`], and
//! returns [`Next`]: what the socket loop must do beyond writing (flush, close, end
//! sessions). Login and the socket loop are in [`super::conn`]; this is what
//! `login::Login` is to the login phase.
//!
//! SCSI commands do not run here. A command whose data is in becomes a [`Job`]; the
//! connection's task set ([`TaskSet`], task attributes) decides when it may start, and
//! [`FullFeature::take_ready`] hands out the jobs that may. Whoever runs a job (the LU's
//! I/O workers in `conn.rs`, inline in the tests) gives its [`Response`] back through
//! [`FullFeature::complete`], the one point where every command ends: its status goes
//! out, the task set moves on, and a task management function waiting for it answers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::iscsi::login::CMD_WINDOW;
use crate::engine::iscsi::negotiate::{self, ConnParams, Pairs};
use crate::engine::iscsi::pdu::{
    decode_lun, flags, sn_lt, Bhs, Opcode, Pdu, RejectReason, RESERVED_TAG,
};
use crate::engine::iscsi::session::{CmdSnCheck, Session, SessionKind};
use crate::engine::lu::LogicalUnit;
use crate::engine::scsi::taskset::{self, TaskSet};
use crate::engine::scsi::{
    self, Command, DataDirection, Residual, Response, ScsiService, Status, TaskAttribute,
    TmfFunction, TmfResponse,
};

/// After this long without input the target pings (NOP-In); a second period without
/// an answer closes the connection (a half-open TCP connection never answers).
pub const IDLE_PING: Duration = Duration::from_secs(30);
/// The largest write the engine buffers for one command (the SCSI layer's maximum
/// transfer is 32 MiB; block limits VPD tells initiators so).
const MAX_WRITE_BUFFER: u32 = 64 << 20;
/// How many aborted task tags are remembered, so that Data-Out still in flight for
/// them is dropped quietly instead of rejected. An initiator has at most one CmdSN
/// window of commands outstanding, so one abort (or reset) ends at most that many
/// tasks; two windows cover a reset that follows another before the first one's
/// Data-Out has drained. Older tags are forgotten first: their data is long gone.
const ABORTED_TAGS_KEPT: usize = 2 * CMD_WINDOW as usize;

/// Where the core's PDUs go. The socket loop frames them into its write buffer;
/// tests collect them.
pub trait Transmit {
    /// Send a PDU with `data` as its data segment (the length field is set by the
    /// framing). A write error is the transmitter's to keep and report.
    fn send(&mut self, bhs: Bhs, data: &[u8]);
}

/// What the core asks of the engine beyond the session: the SendTargets answer.
pub trait Discovery: Send {
    /// The targets `initiator` may log in to through this connection's portal
    /// (`which`: all of them, or only the named one).
    fn send_targets(&self, initiator: &str, which: Option<&str>) -> Pairs;
}

/// What the socket loop feeds the core.
#[derive(Debug)]
pub enum Input {
    /// A PDU that passed its digests and size limit.
    Pdu(Pdu),
    /// A PDU whose header digest did not match (it was not delivered).
    HeaderDigestError,
    /// A PDU whose data digest did not match: its header, the data discarded.
    DataDigestError(Box<Bhs>),
    /// A PDU whose data segment was longer than MaxRecvDataSegmentLength (drained).
    SegmentTooLong {
        bhs: Box<Bhs>,
        len: usize,
        limit: usize,
    },
    /// No input for `quiet_for` (the socket loop's poll timed out).
    Idle { now: Instant, quiet_for: Duration },
}

/// What the socket loop does after writing out what the core sent.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Keep reading (write when the input is drained).
    Continue,
    /// Write now: the peer waits for it although no input is pending.
    Flush,
    /// Write, then close this connection.
    Close,
    /// Write, then end this session with all its connections (logout "close the
    /// session"); this connection ends with it.
    EndSession,
    /// Write, then end every session of this target (TARGET COLD RESET). This
    /// connection's socket is shut down with them; reading sees the end.
    EndTargetSessions(String),
    /// Close connection `cid` of this session (logout of another connection), then
    /// write.
    ShutdownConnection(u16),
}

/// A protocol error of the initiator (or the wire). Each has exactly one
/// [`Disposition`], decided in [`Violation::disposition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// Header digest mismatch: the PDU boundaries cannot be trusted.
    HeaderDigest,
    /// Data digest mismatch on a Data-Out: its data is lost.
    DataOutDigest,
    /// Data digest mismatch on any other PDU (it is discarded; the initiator resends).
    DataDigest,
    /// A data segment longer than this side's MaxRecvDataSegmentLength.
    SegmentTooLong { len: usize, limit: usize },
    /// A non-immediate CmdSN outside the window or seen already (RFC 7143 §3.2.2.1).
    CmdSnOutsideWindow,
    /// A SCSI command or task management request on a discovery session.
    NotOnDiscoverySession,
    /// A Login Request after the login phase.
    LoginInFullFeature,
    /// SNACK needs ErrorRecoveryLevel 1 (RFC 7143 §11.16); the engine negotiates 0.
    Snack,
    /// An opcode a target does not accept.
    UnsupportedOpcode,
    /// An initiator NOP-Out with an ITT must carry TTT 0xffffffff.
    NopOutWithTtt,
    /// Data with a command that sends none (RFC 7143 §11.3.4).
    DataWithoutWrite,
    /// A write command with the ITT of a write still waiting for its data.
    TagInUse,
    /// Data-Out for a task this connection aborted: still in flight, harmless.
    DataOutForAbortedTask,
    /// Data-Out for no task.
    DataOutForUnknownTask,
    /// Unsolicited Data-Out when none may (or no more may) come.
    UnsolicitedDataNotExpected,
    /// Data-Out with a TTT of no outstanding R2T.
    DataOutForUnknownR2t,
    /// Data-Out with the wrong DataSN, or data outside its burst or the transfer.
    DataOutOutOfSequence,
    /// A Text Request continuing a response that is not outstanding.
    UnknownTextContinuation,
    /// A Text Request whose data is not key=value text.
    MalformedText,
    /// A Logout Request with a reason code RFC 7143 does not define.
    UnknownLogoutReason,
}

/// What happens to a PDU that broke the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Drop it without an answer.
    Ignore,
    /// Answer with a Reject PDU carrying its header.
    Reject(RejectReason),
    /// Reject it; the write task it belongs to ends in CHECK CONDITION (ABORTED
    /// COMMAND, DATA PHASE ERROR) once its Data-Out is over (ErrorRecoveryLevel 0
    /// cannot ask for the data again).
    RejectAndFailTask(RejectReason),
    /// Keep going; the write task it belongs to ends in CHECK CONDITION.
    FailTask,
    /// Reject it, then drop the connection.
    RejectAndClose(RejectReason),
    /// Drop the connection (ErrorRecoveryLevel 0: the initiator logs in again).
    Close,
}

impl Violation {
    /// The one place that decides how the target answers each protocol error.
    pub fn disposition(self) -> Disposition {
        use Disposition::*;
        use RejectReason::*;
        match self {
            Violation::HeaderDigest => Close,
            Violation::DataOutDigest => RejectAndFailTask(DataDigestError),
            Violation::DataDigest => Reject(DataDigestError),
            Violation::SegmentTooLong { .. } => RejectAndClose(ProtocolError),
            Violation::CmdSnOutsideWindow | Violation::DataOutForAbortedTask => Ignore,
            Violation::NotOnDiscoverySession
            | Violation::LoginInFullFeature
            | Violation::Snack
            | Violation::NopOutWithTtt
            | Violation::DataWithoutWrite
            | Violation::UnsolicitedDataNotExpected
            | Violation::MalformedText
            | Violation::UnknownLogoutReason => Reject(ProtocolError),
            Violation::UnsupportedOpcode => Reject(CommandNotSupported),
            Violation::TagInUse => Reject(TaskInProgress),
            Violation::DataOutForUnknownTask
            | Violation::DataOutForUnknownR2t
            | Violation::UnknownTextContinuation => Reject(InvalidPduField),
            Violation::DataOutOutOfSequence => FailTask,
        }
    }
}

/// A write waiting for its data.
#[derive(Debug)]
struct WriteTask {
    lun_field: [u8; 8],
    cdb: Vec<u8>,
    attribute: TaskAttribute,
    direction: DataDirection,
    expected_len: u32,
    buf: Vec<u8>,
    /// More unsolicited Data-Out may come (no F bit yet).
    unsolicited_open: bool,
    /// Expected DataSN of the unsolicited sequence.
    unsolicited_data_sn: u32,
    /// Offset from which no R2T has asked for data yet.
    next_offset: u32,
    r2ts: Vec<R2tState>,
    r2t_sn: u32,
    /// The transfer is larger than the engine buffers: answer with CHECK CONDITION
    /// once the unsolicited part is in, ask for nothing more.
    too_big: bool,
    /// A Data-Out broke the rules (offset/DataSN/digest): the command ends in error.
    data_error: bool,
}

#[derive(Debug)]
struct R2tState {
    ttt: u32,
    offset: u32,
    len: u32,
    data_sn: u32,
}

/// A text response too long for one PDU, sent piece by piece.
struct TextState {
    ttt: u32,
    rest: Vec<u8>,
}

/// Tags of tasks this connection aborted, the newest [`ABORTED_TAGS_KEPT`].
#[derive(Debug, Default)]
struct AbortedTags {
    order: VecDeque<u32>,
    set: HashSet<u32>,
}

impl AbortedTags {
    fn insert(&mut self, tag: u32) {
        if self.set.insert(tag) {
            self.order.push_back(tag);
            if self.order.len() > ABORTED_TAGS_KEPT {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    fn contains(&self, tag: u32) -> bool {
        self.set.contains(&tag)
    }
}

/// A command with all its data, ready to run on any thread: [`Job::execute`] runs it,
/// [`FullFeature::complete`] takes its response.
pub struct Job {
    session: Arc<Session>,
    itt: u32,
    lun_field: [u8; 8],
    cdb: Vec<u8>,
    data_out: Vec<u8>,
    expected_len: u32,
    direction: DataDirection,
    attribute: TaskAttribute,
    /// Where the command is counted (`None`: statistics off).
    stats: Option<crate::engine::stats::Recorder>,
}

/// The largest read the connection's reading thread answers itself from cached data
/// ([`Job::execute_if_cached`]): a larger copy is better spread over the I/O workers
/// than holding up the connection's next PDUs.
pub const CACHED_READ_MAX: usize = 128 * 1024;

impl Job {
    /// The initiator task tag (what [`FullFeature::complete`] needs back).
    pub fn itt(&self) -> u32 {
        self.itt
    }

    /// The LU the command is for, if the target maps its LUN (whose workers run it).
    pub fn logical_unit(&self) -> Option<Arc<LogicalUnit>> {
        match &self.session.kind {
            SessionKind::Normal { scsi, .. } => scsi.lu(decode_lun(self.lun_field)),
            SessionKind::Discovery => None,
        }
    }

    /// Run the command (may block on the LU's storage).
    pub fn execute(&self) -> Response {
        let ran = self.run(How::Wait).unwrap_or_default();
        self.count(&ran.response, ran.started);
        ran.response
    }

    /// Run the command here only if it is a read of at most [`CACHED_READ_MAX`] bytes
    /// whose data are already in memory (`lu::without_waiting`). `None`: it would have
    /// waited for the device, nothing was counted, and it must [`Job::execute`] where
    /// waiting is fine (the LU's I/O workers).
    pub fn execute_if_cached(&self) -> Option<Response> {
        if !crate::engine::scsi::is_read(&self.cdb) || self.expected_len as usize > CACHED_READ_MAX
        {
            return None;
        }
        let ran = self.run(How::CachedOnly)?;
        self.count(&ran.response, ran.started);
        Some(ran.response)
    }

    /// Run the command (may block on the LU's storage), except that its durable writes
    /// to a write-through file return once written (`lu::deferring_durability`): with
    /// [`Ran::durable_later`] set, the response may go out only once that says the
    /// writes are durable, and the caller counts the command then ([`Job::count`]).
    pub fn execute_deferring(&self) -> Ran {
        let ran = self.run(How::DeferDurability).unwrap_or_default();
        if ran.durable_later.is_none() {
            self.count(&ran.response, ran.started);
        }
        ran
    }

    /// The command's response is final (after its deferred durability): count it.
    pub fn count(&self, resp: &Response, started: Option<std::time::Instant>) {
        if let (Some(r), Some(t0)) = (&self.stats, started) {
            r.command(
                decode_lun(self.lun_field),
                resp.data_in.len() as u64,
                self.data_out.len() as u64,
                t0.elapsed(),
            );
        }
    }

    /// The response when the command ran but the sync that was to make its writes
    /// durable failed (see `lu::deferring_durability`).
    pub fn durability_failed(&self) -> Response {
        let SessionKind::Normal { scsi, .. } = &self.session.kind else {
            return Response::default();
        };
        scsi.durability_failed(&self.command())
    }

    fn command(&self) -> Command<'_> {
        Command {
            lun: decode_lun(self.lun_field),
            cdb: &self.cdb,
            data_out: &self.data_out,
            expected_len: self.expected_len,
            direction: self.direction,
            attribute: self.attribute,
            tag: self.itt,
        }
    }

    /// `None` only with [`How::CachedOnly`], when a read would have waited.
    fn run(&self, how: How) -> Option<Ran> {
        let SessionKind::Normal { scsi, nexus, .. } = &self.session.kind else {
            // Commands on discovery sessions are rejected before they become jobs.
            return Some(Ran::default());
        };
        let cmd = self.command();
        // The one place every SCSI command runs (on an I/O worker or inline): its
        // statistics are counted from here (`count`), latency included.
        let started = self.stats.as_ref().map(|_| std::time::Instant::now());
        let (response, durable_later) = match how {
            How::Wait => (scsi.execute(nexus, &cmd), None),
            How::CachedOnly => (
                crate::engine::lu::without_waiting(|| scsi.execute(nexus, &cmd))?,
                None,
            ),
            How::DeferDurability => {
                crate::engine::lu::deferring_durability(|| scsi.execute(nexus, &cmd))
            }
        };
        Some(Ran {
            response,
            durable_later,
            started,
        })
    }
}

/// How a [`Job`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// Whatever it takes.
    Wait,
    /// Only if no read waits for the device.
    CachedOnly,
    /// Durable writes to write-through files return before they are durable.
    DeferDurability,
}

/// A job that ran ([`Job::execute_deferring`]).
#[derive(Debug, Default)]
pub struct Ran {
    pub response: Response,
    /// Its writes are durable once this says so; until then the response must wait.
    pub durable_later: Option<crate::engine::lu::Durability>,
    /// When it started, for its latency (with statistics on).
    pub started: Option<std::time::Instant>,
}

/// A task management request waiting for running tasks it ends to finish: RFC 7143
/// §11.5.1 (the response comes after the affected tasks are terminated) and SAM-5 §7.
#[derive(Debug)]
struct PendingTmf {
    itt: u32,
    function: u8,
    lun: u64,
    /// Running tasks still to finish (their responses are not sent).
    wait_for: HashSet<u32>,
    /// Decided when the request arrived; `None`: asked of the SCSI layer at the end.
    response: Option<TmfResponse>,
}

/// One connection in the full feature phase.
pub struct FullFeature {
    session: Arc<Session>,
    cid: u16,
    stat_sn: u32,
    params: ConnParams,
    discovery: Box<dyn Discovery>,
    tasks: HashMap<u32, WriteTask>,
    aborted: AbortedTags,
    next_ttt: u32,
    text: Option<TextState>,
    /// Our outstanding keep-alive ping: its TTT and when it was sent.
    ping: Option<(u32, Instant)>,
    /// Commands from arrival to completion, with their task attributes.
    taskset: TaskSet,
    /// Jobs whose data is in and which the task set has not let start yet, with the
    /// number of R2Ts their data took.
    waiting: HashMap<u32, (Job, u32)>,
    /// Running jobs: the number of R2Ts their data took (their response's ExpDataSN).
    running: HashMap<u32, u32>,
    /// Running tasks a task management function ended: their responses are dropped.
    cancelled: HashSet<u32>,
    tmfs: Vec<PendingTmf>,
    /// Where commands and errors are counted (`None`: statistics off, or discovery).
    stats: Option<crate::engine::stats::Recorder>,
}

impl FullFeature {
    /// A connection `cid` of `session` that just sent its final login response;
    /// `stat_sn` is the StatSN of its next status.
    pub fn new(
        session: Arc<Session>,
        cid: u16,
        params: ConnParams,
        stat_sn: u32,
        discovery: Box<dyn Discovery>,
    ) -> FullFeature {
        FullFeature {
            session,
            cid,
            stat_sn,
            params,
            discovery,
            tasks: HashMap::new(),
            aborted: AbortedTags::default(),
            next_ttt: 1,
            text: None,
            ping: None,
            taskset: TaskSet::new(),
            waiting: HashMap::new(),
            running: HashMap::new(),
            cancelled: HashSet::new(),
            tmfs: Vec::new(),
            stats: None,
        }
    }

    /// The jobs that may start now (task attributes permitting), oldest first. Each is
    /// handed out once and must come back through [`FullFeature::complete`].
    pub fn take_ready(&mut self) -> Vec<Job> {
        let mut ready = Vec::new();
        for tag in self.taskset.take_runnable() {
            if let Some((job, r2t_count)) = self.waiting.remove(&tag) {
                self.running.insert(tag, r2t_count);
                ready.push(job);
            }
        }
        ready
    }

    /// Jobs handed out by [`FullFeature::take_ready`] and not completed.
    pub fn in_flight(&self) -> usize {
        self.running.len()
    }

    /// A job ended with `resp`: the one point where every SCSI command completes. Sends
    /// its Data-In and status (unless a task management function ended it), lets the
    /// task set move on ([`FullFeature::take_ready`] has the next jobs) and answers a
    /// task management request that was waiting for it.
    pub fn complete(&mut self, itt: u32, resp: Response, out: &mut dyn Transmit) -> Next {
        self.taskset.complete(itt);
        let Some(r2t_count) = self.running.remove(&itt) else {
            return Next::Continue;
        };
        if !self.cancelled.remove(&itt) {
            self.send_response(itt, resp, r2t_count, out);
            return Next::Continue;
        }
        let mut next = Next::Continue;
        let mut i = 0;
        while i < self.tmfs.len() {
            self.tmfs[i].wait_for.remove(&itt);
            if self.tmfs[i].wait_for.is_empty() {
                let tmf = self.tmfs.remove(i);
                next = self.finish_tmf(tmf, out);
            } else {
                i += 1;
            }
        }
        next
    }

    /// Queue a command whose data is all in; the task set says when it starts.
    fn enqueue(&mut self, job: Job, r2t_count: u32) {
        let itt = job.itt;
        if !self.taskset.contains(itt) {
            let ordering = taskset::Ordering::of(job.attribute, &job.cdb);
            self.taskset
                .arrive(itt, decode_lun(job.lun_field), ordering, true);
        }
        self.taskset.data_ready(itt);
        self.waiting.insert(itt, (job, r2t_count));
    }

    fn job(&self, task: Task<'_>) -> Job {
        Job {
            session: self.session.clone(),
            itt: task.itt,
            lun_field: task.lun_field,
            cdb: task.cdb.to_vec(),
            data_out: task.data_out.to_vec(),
            expected_len: task.expected_len,
            direction: task.direction,
            attribute: task.attribute,
            stats: self.stats.clone(),
        }
    }

    /// Count this connection's commands and errors with `recorder`.
    pub fn record_with(&mut self, recorder: Option<crate::engine::stats::Recorder>) {
        self.stats = recorder;
    }

    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// Handle one input; PDUs to send go to `out`.
    pub fn handle(&mut self, input: Input, out: &mut dyn Transmit) -> Next {
        if let Some(r) = &self.stats {
            match &input {
                Input::HeaderDigestError | Input::DataDigestError(_) => r.digest_error(),
                Input::SegmentTooLong { .. } => r.format_error(),
                _ => {}
            }
        }
        match input {
            Input::Pdu(pdu) => self.dispatch(pdu, out),
            Input::HeaderDigestError => {
                // The header itself is untrustworthy, so there is none to pass on; its
                // disposition (close) never answers with it.
                self.violation(Violation::HeaderDigest, &Bhs::new(Opcode::NopOut), out)
            }
            Input::DataDigestError(bhs) => {
                let v = if bhs.opcode() == Opcode::DataOut {
                    Violation::DataOutDigest
                } else {
                    Violation::DataDigest
                };
                self.violation(v, &bhs, out)
            }
            Input::SegmentTooLong { bhs, len, limit } => {
                self.violation(Violation::SegmentTooLong { len, limit }, &bhs, out)
            }
            Input::Idle { now, quiet_for } => match self.ping {
                Some((_, sent)) if now.saturating_duration_since(sent) > IDLE_PING => {
                    tracing::info!(
                        "no answer to a NOP-In for {} s: closing",
                        IDLE_PING.as_secs()
                    );
                    if let Some(r) = &self.stats {
                        r.connection_error();
                    }
                    Next::Close
                }
                None if quiet_for > IDLE_PING => {
                    self.send_ping(now, out);
                    Next::Flush
                }
                _ => Next::Continue,
            },
        }
    }

    /// Apply a violation's disposition to the PDU `bhs`.
    fn violation(&mut self, v: Violation, bhs: &Bhs, out: &mut dyn Transmit) -> Next {
        let op = bhs.opcode();
        match v {
            Violation::HeaderDigest => {
                tracing::warn!("header digest error: closing the connection (ErrorRecoveryLevel 0)")
            }
            Violation::DataDigest | Violation::DataOutDigest => {
                tracing::warn!("data digest error on {op:?}")
            }
            Violation::SegmentTooLong { len, limit } => {
                tracing::warn!("{op:?} with a {len}-byte data segment (limit {limit}): closing")
            }
            Violation::UnsupportedOpcode => {
                tracing::info!("unsupported opcode {:#04x}: rejected", bhs.0[0] & 0x3f)
            }
            Violation::CmdSnOutsideWindow => {
                tracing::debug!(cmd_sn = bhs.cmd_sn(), "CmdSN outside the window: ignored")
            }
            _ => tracing::debug!(?op, "protocol error: {v:?}"),
        }
        let fail_task = |tasks: &mut HashMap<u32, WriteTask>| {
            if op == Opcode::DataOut {
                if let Some(t) = tasks.get_mut(&bhs.itt()) {
                    t.data_error = true;
                }
            }
        };
        match v.disposition() {
            Disposition::Ignore => Next::Continue,
            Disposition::Reject(reason) => {
                self.reject(bhs, reason, out);
                Next::Continue
            }
            Disposition::RejectAndFailTask(reason) => {
                self.reject(bhs, reason, out);
                fail_task(&mut self.tasks);
                Next::Continue
            }
            Disposition::FailTask => {
                fail_task(&mut self.tasks);
                Next::Continue
            }
            Disposition::RejectAndClose(reason) => {
                self.reject(bhs, reason, out);
                Next::Close
            }
            Disposition::Close => Next::Close,
        }
    }

    fn send_ping(&mut self, now: Instant, out: &mut dyn Transmit) {
        let ttt = self.new_ttt();
        let mut b = Bhs::new(Opcode::NopIn);
        b.set_flags(flags::FINAL);
        b.set_itt(RESERVED_TAG);
        b.set_ttt(ttt);
        self.fill_sn(&mut b, false);
        self.ping = Some((ttt, now));
        out.send(b, &[]);
    }

    fn dispatch(&mut self, pdu: Pdu, out: &mut dyn Transmit) -> Next {
        let op = pdu.bhs.opcode();
        let carries_cmd_sn = matches!(
            op,
            Opcode::NopOut
                | Opcode::ScsiCommand
                | Opcode::TaskMgmtRequest
                | Opcode::TextRequest
                | Opcode::LogoutRequest
        );
        if carries_cmd_sn && !pdu.bhs.immediate() {
            // A NOP-Out answering our ping carries no new CmdSN (RFC 7143 §11.18).
            let answer_to_ping = op == Opcode::NopOut && pdu.bhs.itt() == RESERVED_TAG;
            if !answer_to_ping
                && self.session.window().check(pdu.bhs.cmd_sn()) == CmdSnCheck::Ignore
            {
                return self.violation(Violation::CmdSnOutsideWindow, &pdu.bhs, out);
            }
        }
        match op {
            Opcode::NopOut => self.nop_out(pdu, out),
            Opcode::ScsiCommand => self.scsi_command(pdu, out),
            Opcode::DataOut => self.data_out(pdu, out),
            Opcode::TaskMgmtRequest => self.task_management(pdu, out),
            Opcode::TextRequest => self.text(pdu, out),
            Opcode::LogoutRequest => self.logout(pdu, out),
            Opcode::SnackRequest => self.violation(Violation::Snack, &pdu.bhs, out),
            Opcode::LoginRequest => self.violation(Violation::LoginInFullFeature, &pdu.bhs, out),
            _ => self.violation(Violation::UnsupportedOpcode, &pdu.bhs, out),
        }
    }

    // ---- NOP -------------------------------------------------------------------------

    fn nop_out(&mut self, pdu: Pdu, out: &mut dyn Transmit) -> Next {
        let itt = pdu.bhs.itt();
        if itt == RESERVED_TAG {
            // The answer to our ping (or a bare ExpStatSN update).
            if let Some((ttt, _)) = self.ping {
                if pdu.bhs.ttt() == ttt || pdu.bhs.ttt() == RESERVED_TAG {
                    self.ping = None;
                }
            }
            return Next::Continue;
        }
        if pdu.bhs.ttt() != RESERVED_TAG {
            return self.violation(Violation::NopOutWithTtt, &pdu.bhs, out);
        }
        let mut b = Bhs::new(Opcode::NopIn);
        b.set_flags(flags::FINAL);
        b.set_lun_field(pdu.bhs.lun_field());
        b.set_itt(itt);
        b.set_ttt(RESERVED_TAG);
        self.fill_sn(&mut b, true);
        let echo_len = pdu.data.len().min(self.params.send_limit as usize);
        out.send(b, &pdu.data[..echo_len]);
        Next::Continue
    }

    // ---- SCSI commands ---------------------------------------------------------------

    fn scsi_command(&mut self, pdu: Pdu, out: &mut dyn Transmit) -> Next {
        if matches!(self.session.kind, SessionKind::Discovery) {
            return self.violation(Violation::NotOnDiscoverySession, &pdu.bhs, out);
        }
        let b = &pdu.bhs;
        let f = b.flags();
        let (read, write) = (f & flags::READ != 0, f & flags::WRITE != 0);
        let direction = match (read, write) {
            (false, false) => DataDirection::None,
            (true, false) => DataDirection::Read,
            (false, true) => DataDirection::Write,
            (true, true) => DataDirection::Bidirectional,
        };
        let attribute = match f & 7 {
            0 => TaskAttribute::Untagged,
            1 => TaskAttribute::Simple,
            2 => TaskAttribute::Ordered,
            3 => TaskAttribute::HeadOfQueue,
            4 => TaskAttribute::Aca,
            _ => TaskAttribute::Simple,
        };
        let mut cdb = b.cdb().to_vec();
        if let Some(ext) = pdu.extended_cdb() {
            cdb.extend_from_slice(ext);
        }
        let itt = b.itt();
        let expected_len = b.expected_len();
        if !write || expected_len == 0 {
            if !pdu.data.is_empty() && !write {
                return self.violation(Violation::DataWithoutWrite, &pdu.bhs, out);
            }
            if self.taskset.contains(itt) {
                return self.violation(Violation::TagInUse, &pdu.bhs, out);
            }
            let task = Task {
                lun_field: b.lun_field(),
                itt,
                cdb: &cdb,
                data_out: &[],
                expected_len,
                direction,
                attribute,
            };
            let job = self.job(task);
            self.enqueue(job, 0);
            return Next::Continue;
        }
        if self.taskset.contains(itt) {
            return self.violation(Violation::TagInUse, &pdu.bhs, out);
        }
        // In the task set from now on, so that the tasks after it wait for it as its
        // attribute says, while its data still comes in.
        let ordering = taskset::Ordering::of(attribute, &cdb);
        self.taskset
            .arrive(itt, decode_lun(b.lun_field()), ordering, false);
        let sp = self.session.params;
        let lun_field = b.lun_field();
        let final_bit = f & flags::FINAL != 0;
        let mut data = pdu.data;
        data.truncate(expected_len as usize);
        let immediate = data.len() as u32;
        let unsolicited_open =
            !final_bit && !sp.initial_r2t && immediate < sp.first_burst_length.min(expected_len);
        let mut task = WriteTask {
            lun_field,
            cdb,
            attribute,
            direction,
            expected_len,
            buf: data,
            unsolicited_open,
            unsolicited_data_sn: 0,
            next_offset: immediate,
            r2ts: Vec::new(),
            r2t_sn: 0,
            too_big: expected_len > MAX_WRITE_BUFFER,
            data_error: false,
        };
        if task.unsolicited_open {
            // The initiator will send unsolicited data up to the first burst.
            task.next_offset = sp.first_burst_length.min(expected_len);
        }
        self.tasks.insert(itt, task);
        self.advance_write(itt, out);
        Next::Continue
    }

    /// Issue R2Ts or run the command once all its data is in.
    fn advance_write(&mut self, itt: u32, out: &mut dyn Transmit) {
        let sp = self.session.params;
        let Some(task) = self.tasks.get_mut(&itt) else {
            return;
        };
        if task.unsolicited_open {
            return;
        }
        let done_asking = task.next_offset >= task.expected_len || task.too_big || task.data_error;
        if done_asking && task.r2ts.is_empty() {
            let task = self.tasks.remove(&itt).expect("present");
            let r2t_count = task.r2t_sn;
            if task.too_big || task.data_error {
                self.taskset.remove(itt);
                let sense = if task.too_big {
                    scsi::sense::Sense::invalid_cdb(0, None)
                } else {
                    scsi::sense::Sense::new(
                        scsi::sense::SenseKey::ABORTED_COMMAND,
                        scsi::sense::Asc::DATA_PHASE_ERROR,
                    )
                };
                let resp = Response {
                    status: Status::CHECK_CONDITION,
                    sense: sense.encode(false),
                    data_in: Vec::new(),
                    residual: Residual::Underflow(task.expected_len),
                };
                return self.send_response(itt, resp, r2t_count, out);
            }
            let WriteTask {
                lun_field,
                cdb,
                attribute,
                direction,
                expected_len,
                buf,
                ..
            } = task;
            let job = Job {
                session: self.session.clone(),
                itt,
                lun_field,
                cdb,
                data_out: buf,
                expected_len,
                direction,
                attribute,
                stats: self.stats.clone(),
            };
            self.enqueue(job, r2t_count);
            return;
        }
        let mut r2ts = Vec::new();
        while !done_asking
            && task.r2ts.len() < usize::from(sp.max_outstanding_r2t)
            && task.next_offset < task.expected_len
        {
            let len = sp
                .max_burst_length
                .min(task.expected_len - task.next_offset);
            let ttt = next_tag(&mut self.next_ttt);
            task.r2ts.push(R2tState {
                ttt,
                offset: task.next_offset,
                len,
                data_sn: 0,
            });
            r2ts.push((ttt, task.next_offset, len, task.r2t_sn, task.lun_field));
            task.r2t_sn += 1;
            task.next_offset += len;
        }
        for (ttt, offset, len, r2t_sn, lun) in r2ts {
            let mut b = Bhs::new(Opcode::R2t);
            b.set_flags(flags::FINAL);
            b.set_lun_field(lun);
            b.set_itt(itt);
            b.set_ttt(ttt);
            self.fill_sn(&mut b, false);
            b.set_data_sn(r2t_sn);
            b.set_buffer_offset(offset);
            b.set_desired_len(len);
            out.send(b, &[]);
        }
    }

    fn data_out(&mut self, pdu: Pdu, out: &mut dyn Transmit) -> Next {
        let b = &pdu.bhs;
        let itt = b.itt();
        let Some(task) = self.tasks.get_mut(&itt) else {
            let v = if self.aborted.contains(itt) {
                Violation::DataOutForAbortedTask
            } else {
                Violation::DataOutForUnknownTask
            };
            return self.violation(v, b, out);
        };
        let offset = b.buffer_offset();
        let len = pdu.data.len() as u32;
        let end = offset.checked_add(len);
        let final_bit = b.final_bit();
        let ttt = b.ttt();
        let data_sn = b.data_sn();
        let mut sequence_done = false;
        let mut out_of_sequence = false;
        if ttt == RESERVED_TAG {
            if !task.unsolicited_open {
                return self.violation(Violation::UnsolicitedDataNotExpected, b, out);
            }
            out_of_sequence |= data_sn != task.unsolicited_data_sn;
            task.unsolicited_data_sn = task.unsolicited_data_sn.wrapping_add(1);
            if final_bit {
                task.unsolicited_open = false;
                // Ask for the rest from where the unsolicited data ended.
                task.next_offset = task.buf.len() as u32;
            }
        } else {
            let Some(pos) = task.r2ts.iter().position(|r| r.ttt == ttt) else {
                return self.violation(Violation::DataOutForUnknownR2t, b, out);
            };
            let r = &mut task.r2ts[pos];
            let inside = end.is_some_and(|e| offset >= r.offset && e <= r.offset + r.len);
            out_of_sequence |= !inside || data_sn != r.data_sn;
            r.data_sn = r.data_sn.wrapping_add(1);
            if final_bit {
                task.r2ts.remove(pos);
                sequence_done = true;
            }
        }
        let fits = end.filter(|&e| e <= task.expected_len);
        out_of_sequence |= fits.is_none();
        if out_of_sequence {
            let _ = self.violation(Violation::DataOutOutOfSequence, b, out);
        }
        let task = self.tasks.get_mut(&itt).expect("present");
        if let Some(e) = fits {
            if !task.too_big && !task.data_error {
                let (o, e) = (offset as usize, e as usize);
                if task.buf.len() < e {
                    task.buf.resize(e, 0);
                }
                task.buf[o..e].copy_from_slice(&pdu.data);
            }
        }
        if final_bit || sequence_done {
            self.advance_write(itt, out);
        }
        Next::Continue
    }

    /// Data-In PDUs (each at most the initiator's MaxRecvDataSegmentLength, a sequence
    /// at most MaxBurstLength), with the status folded into the last one when the
    /// command succeeded; else a SCSI Response.
    fn send_response(&mut self, itt: u32, resp: Response, r2t_count: u32, out: &mut dyn Transmit) {
        let good =
            matches!(resp.status, Status::GOOD | Status::CONDITION_MET) && resp.sense.is_empty();
        let (res_flags, res_count) = match resp.residual {
            Residual::None => (0, 0),
            Residual::Underflow(n) => (flags::UNDERFLOW, n),
            Residual::Overflow(n) => (flags::OVERFLOW, n),
        };
        let data = resp.data_in;
        let seg = self.params.send_limit.max(512) as usize;
        let burst = self.session.params.max_burst_length.max(512) as usize;
        let mut data_sn = 0u32;
        let mut offset = 0usize;
        while offset < data.len() {
            let take = seg.min(data.len() - offset).min(burst - offset % burst);
            let end = offset + take;
            let last = end == data.len();
            let mut b = Bhs::new(Opcode::DataIn);
            let mut fl = 0;
            if last || end % burst == 0 {
                fl |= flags::FINAL;
            }
            let fold_status = last && good;
            if fold_status {
                fl |= flags::STATUS | res_flags;
                b.set_byte3(resp.status.0);
            }
            b.set_flags(fl);
            b.set_itt(itt);
            b.set_ttt(RESERVED_TAG);
            self.fill_sn(&mut b, fold_status);
            if !fold_status {
                b.set_stat_sn(0);
            }
            b.set_data_sn(data_sn);
            b.set_buffer_offset(offset as u32);
            if fold_status {
                b.set_residual(res_count);
            }
            out.send(b, &data[offset..end]);
            data_sn += 1;
            offset = end;
            if fold_status {
                return;
            }
        }
        let mut b = Bhs::new(Opcode::ScsiResponse);
        b.set_flags(flags::FINAL | res_flags);
        b.set_byte2(0); // command completed at target
        b.set_byte3(resp.status.0);
        b.set_itt(itt);
        self.fill_sn(&mut b, true);
        // ExpDataSN: Data-In PDUs sent (reads) or R2Ts (writes).
        b.set_data_sn(if data_sn > 0 { data_sn } else { r2t_count });
        b.set_residual(res_count);
        if resp.sense.is_empty() {
            out.send(b, &[]);
        } else {
            let mut seg = Vec::with_capacity(2 + resp.sense.len());
            seg.extend_from_slice(&(resp.sense.len() as u16).to_be_bytes());
            seg.extend_from_slice(&resp.sense);
            out.send(b, &seg);
        }
    }

    // ---- task management -------------------------------------------------------------

    fn task_management(&mut self, pdu: Pdu, out: &mut dyn Transmit) -> Next {
        let session = self.session.clone();
        let SessionKind::Normal {
            scsi: target,
            nexus,
            ..
        } = &session.kind
        else {
            return self.violation(Violation::NotOnDiscoverySession, &pdu.bhs, out);
        };
        let b = &pdu.bhs;
        let function = b.flags() & 0x7f;
        let lun = decode_lun(b.lun_field());
        // Tasks the function ends: those not started are withdrawn now; running ones are
        // waited for (their responses dropped) before the function completes.
        let mut wait_for = HashSet::new();
        let response = match function {
            1 => {
                let rtt = b.ref_task_tag();
                if self.withdraw(rtt) {
                    target.task_management(nexus, TmfFunction::AbortTask { tag: rtt }, lun);
                    Some(TmfResponse::FunctionComplete)
                } else if self.running.contains_key(&rtt) {
                    wait_for.insert(rtt);
                    None
                } else {
                    // Not in progress: a command that completed already has a CmdSN
                    // below ExpCmdSN, "task does not exist". A RefCmdSN inside the
                    // window that never arrived is taken as received and the abort
                    // succeeds (RFC 7143 §11.5.1).
                    let ref_sn = b.ref_cmd_sn();
                    let before_tmf = sn_lt(ref_sn, b.cmd_sn());
                    if before_tmf && session.window().absorb_missing(ref_sn) {
                        Some(TmfResponse::FunctionComplete)
                    } else {
                        Some(TmfResponse::TaskDoesNotExist)
                    }
                }
            }
            2 | 4 | 5 => {
                wait_for = self.drop_tasks(Some(lun));
                None
            }
            3 => None,
            6 | 7 => {
                wait_for = self.drop_tasks(None);
                None
            }
            // TASK REASSIGN needs ErrorRecoveryLevel 2.
            8 => Some(TmfResponse::TaskStillAllocated),
            _ => Some(TmfResponse::NotSupported),
        };
        let tmf = PendingTmf {
            itt: b.itt(),
            function,
            lun,
            wait_for,
            response,
        };
        // A cold reset ends the sessions, running tasks with them: no waiting.
        if tmf.wait_for.is_empty() || function == 7 {
            return self.finish_tmf(tmf, out);
        }
        self.cancelled.extend(tmf.wait_for.iter().copied());
        tracing::debug!(
            function,
            lun,
            running = tmf.wait_for.len(),
            "task management waits for running tasks"
        );
        self.tmfs.push(tmf);
        Next::Continue
    }

    /// Complete a task management function once the tasks it ends are gone.
    fn finish_tmf(&mut self, tmf: PendingTmf, out: &mut dyn Transmit) -> Next {
        let session = self.session.clone();
        let SessionKind::Normal {
            target: target_name,
            scsi: target,
            nexus,
        } = &session.kind
        else {
            return Next::Continue;
        };
        let PendingTmf {
            itt,
            function,
            lun,
            response,
            ..
        } = tmf;
        let response = response.unwrap_or_else(|| {
            let f = match function {
                1 => TmfFunction::AbortTask { tag: 0 },
                2 => TmfFunction::AbortTaskSet,
                3 => TmfFunction::ClearAca,
                4 => TmfFunction::ClearTaskSet,
                5 => TmfFunction::LogicalUnitReset,
                6 => TmfFunction::TargetWarmReset,
                _ => TmfFunction::TargetColdReset,
            };
            target.task_management(nexus, f, lun)
        });
        let code = match (function, response) {
            (8, _) => 4, // task allegiance reassignment not supported
            (_, TmfResponse::FunctionComplete) => 0,
            (_, TmfResponse::TaskDoesNotExist) => 1,
            (_, TmfResponse::LunDoesNotExist) => 2,
            (_, TmfResponse::TaskStillAllocated) => 3,
            (_, TmfResponse::NotSupported) => 5,
            (_, TmfResponse::AuthorizationFailed) => 6,
            (_, TmfResponse::Rejected) => 255,
        };
        tracing::info!(function, lun, code, "task management");
        let mut r = Bhs::new(Opcode::TaskMgmtResponse);
        r.set_flags(flags::FINAL);
        r.set_byte2(code);
        r.set_itt(itt);
        self.fill_sn(&mut r, true);
        out.send(r, &[]);
        if function == 7 {
            // A cold reset ends every session of the target (RFC 7143 §11.5.1).
            Next::EndTargetSessions(target_name.clone())
        } else {
            Next::Continue
        }
    }

    /// Withdraw a task that has not started (waiting for Data-Out, or for the task set).
    /// Returns whether there was one.
    fn withdraw(&mut self, itt: u32) -> bool {
        let waiting_for_data = self.tasks.remove(&itt).is_some();
        let queued = self.waiting.remove(&itt).is_some();
        if waiting_for_data || queued {
            self.taskset.remove(itt);
            self.aborted.insert(itt);
            return true;
        }
        false
    }

    /// Withdraw every task of `lun` (of every LUN with `None`) that has not started;
    /// returns the running ones.
    fn drop_tasks(&mut self, lun: Option<u64>) -> HashSet<u32> {
        let mut running = HashSet::new();
        for itt in self.taskset.tags(lun) {
            if !self.withdraw(itt) && self.running.contains_key(&itt) {
                running.insert(itt);
            }
        }
        running
    }

    // ---- text (SendTargets) ------------------------------------------------------------

    fn text(&mut self, pdu: Pdu, out: &mut dyn Transmit) -> Next {
        let b = &pdu.bhs;
        let itt = b.itt();
        // Continuation of a long response.
        if b.ttt() != RESERVED_TAG {
            return match self.text.take() {
                Some(state) if state.ttt == b.ttt() => {
                    self.text_reply(itt, state.rest, out);
                    Next::Continue
                }
                _ => self.violation(Violation::UnknownTextContinuation, b, out),
            };
        }
        self.text = None;
        let pairs = match negotiate::parse_text(&pdu.data) {
            Ok(p) => p,
            Err(e) => {
                tracing::info!("text request: {e}");
                return self.violation(Violation::MalformedText, b, out);
            }
        };
        let session = self.session.clone();
        let mut reply: Pairs = Vec::new();
        for (k, v) in &pairs {
            match k.as_str() {
                "SendTargets" => {
                    let which = match v.as_str() {
                        "All" => None,
                        // Empty: the session's own target (normal sessions only).
                        "" => match session.target_name() {
                            Some(t) => Some(t),
                            None => {
                                reply.push((k.clone(), "Reject".into()));
                                continue;
                            }
                        },
                        name => Some(name),
                    };
                    reply.extend(self.discovery.send_targets(&session.initiator, which));
                }
                "MaxRecvDataSegmentLength" => {
                    if let Some(n) = negotiate::parse_number(v, 512, 16_777_215) {
                        self.params.send_limit = n as u32;
                    } else {
                        reply.push((k.clone(), "Reject".into()));
                    }
                }
                _ => reply.push((k.clone(), "NotUnderstood".into())),
            }
        }
        self.text_reply(itt, negotiate::encode_text(&reply), out);
        Next::Continue
    }

    fn text_reply(&mut self, itt: u32, mut data: Vec<u8>, out: &mut dyn Transmit) {
        let limit = self.params.send_limit as usize;
        let mut b = Bhs::new(Opcode::TextResponse);
        b.set_itt(itt);
        if data.len() > limit {
            let rest = data.split_off(limit);
            let ttt = self.new_ttt();
            b.set_flags(flags::CONTINUE);
            b.set_ttt(ttt);
            self.text = Some(TextState { ttt, rest });
        } else {
            b.set_flags(flags::FINAL);
            b.set_ttt(RESERVED_TAG);
        }
        self.fill_sn(&mut b, true);
        out.send(b, &data);
    }

    // ---- logout --------------------------------------------------------------------

    fn logout(&mut self, pdu: Pdu, out: &mut dyn Transmit) -> Next {
        let b = &pdu.bhs;
        let reason = b.flags() & 0x7f;
        let (code, next) = match reason {
            0 => (0, Next::EndSession),
            1 if b.cid() == self.cid => (0, Next::Close),
            1 => {
                let exists = self.session.conns().iter().any(|c| c.cid == b.cid());
                if exists {
                    (0, Next::ShutdownConnection(b.cid()))
                } else {
                    (1, Next::Flush)
                }
            }
            // Connection recovery needs ErrorRecoveryLevel 2.
            2 => (2, Next::Flush),
            _ => return self.violation(Violation::UnknownLogoutReason, b, out),
        };
        tracing::info!(reason, code, tsih = self.session.tsih, "logout");
        let mut r = Bhs::new(Opcode::LogoutResponse);
        r.set_flags(flags::FINAL);
        r.set_byte2(code);
        r.set_itt(b.itt());
        self.fill_sn(&mut r, true);
        r.set_time2wait_retain(0, 0);
        out.send(r, &[]);
        next
    }

    // ---- plumbing --------------------------------------------------------------------

    fn reject(&mut self, rejected: &Bhs, reason: RejectReason, out: &mut dyn Transmit) {
        let mut b = Bhs::new(Opcode::Reject);
        b.set_flags(flags::FINAL);
        b.set_byte2(reason as u8);
        b.set_itt(RESERVED_TAG);
        self.fill_sn(&mut b, true);
        out.send(b, &rejected.0);
    }

    /// StatSN, ExpCmdSN, MaxCmdSN. `status`: this PDU carries a status and so
    /// consumes a StatSN.
    fn fill_sn(&mut self, b: &mut Bhs, status: bool) {
        b.set_stat_sn(self.stat_sn);
        if status {
            self.stat_sn = self.stat_sn.wrapping_add(1);
        }
        let w = self.session.window();
        b.set_exp_cmd_sn(w.exp_cmd_sn());
        b.set_max_cmd_sn(w.max_cmd_sn());
    }

    fn new_ttt(&mut self) -> u32 {
        next_tag(&mut self.next_ttt)
    }
}

/// A command ready to run: the fields of its SCSI Command PDU and its Data-Out.
struct Task<'a> {
    lun_field: [u8; 8],
    itt: u32,
    cdb: &'a [u8],
    data_out: &'a [u8],
    expected_len: u32,
    direction: DataDirection,
    attribute: TaskAttribute,
}

/// The next target transfer tag: never 0 and never the reserved 0xffffffff.
fn next_tag(counter: &mut u32) -> u32 {
    let t = *counter;
    *counter = counter.wrapping_add(1);
    if *counter == RESERVED_TAG || *counter == 0 {
        *counter = 1;
    }
    t
}

#[cfg(test)]
mod tests {
    //! The full feature phase without a socket: PDUs in, PDUs and [`Next`] out, a
    //! ramdisk LU behind a real [`ScsiTarget`].

    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::time::SystemTime;

    use super::*;
    use crate::engine::iscsi::negotiate::SessionParams;
    use crate::engine::iscsi::pdu::BHS_LEN;
    use crate::engine::iscsi::session::CmdWindow;
    use crate::engine::lu::{BackingKind, LogicalUnit, LuIdentity, RamStore};
    use crate::engine::scsi::{Nexus, ScsiTarget};

    const BS: u32 = 512;
    const TARGET: &str = "iqn.2026-12.test:t";
    const FIRST_CMD_SN: u32 = 1;

    /// What the core sent, with each PDU's data segment length set as the framing would.
    #[derive(Default)]
    struct Sent(Vec<(Bhs, Vec<u8>)>);

    impl Transmit for Sent {
        fn send(&mut self, mut bhs: Bhs, data: &[u8]) {
            bhs.set_data_segment_len(data.len());
            self.0.push((bhs, data.to_vec()));
        }
    }

    struct OneTarget;

    impl Discovery for OneTarget {
        fn send_targets(&self, _initiator: &str, which: Option<&str>) -> Pairs {
            match which {
                None | Some(TARGET) => vec![
                    ("TargetName".into(), TARGET.into()),
                    ("TargetAddress".into(), "192.0.2.1:3260,1".into()),
                ],
                Some(_) => Vec::new(),
            }
        }
    }

    fn ram_target() -> Arc<ScsiTarget> {
        let lu = Arc::new(LogicalUnit::new(
            LuIdentity {
                name: "lun0".into(),
                block_size: BS,
                readonly: false,
                write_back: true,
                serial: "0123456789abcdef".into(),
                naa: vec![0x60, 0x01, 0x40, 0x50, 0x12, 0x34, 0x56, 0x78],
                rotation_rate: 1,
            },
            BackingKind::Ramdisk,
            Box::new(RamStore::new(1 << 20).unwrap()),
        ));
        Arc::new(ScsiTarget::new(BTreeMap::from([(0, lu)])))
    }

    fn session(kind: SessionKind, params: SessionParams) -> Arc<Session> {
        Arc::new(Session {
            tsih: 1,
            initiator: "iqn.2026-12.test:i".into(),
            initiator_alias: None,
            isid: [0x80, 0, 0, 0, 0, 1],
            kind,
            portal_group_tag: 1,
            params,
            window: Mutex::new(CmdWindow::new(FIRST_CMD_SN)),
            conns: Mutex::new(Vec::new()),
            started: SystemTime::now(),
        })
    }

    fn normal() -> SessionKind {
        SessionKind::Normal {
            target: TARGET.into(),
            scsi: ram_target(),
            nexus: Nexus {
                id: 1,
                initiator_name: "iqn.2026-12.test:i".into(),
                isid: [0x80, 0, 0, 0, 0, 1],
                target_name: TARGET.into(),
                tpgt: 1,
            },
        }
    }

    /// A connection in the full feature phase, and the CmdSN of its next command.
    struct Conn {
        core: FullFeature,
        sent: Sent,
        cmd_sn: u32,
    }

    impl Conn {
        fn with(kind: SessionKind, params: SessionParams) -> Conn {
            let core = FullFeature::new(
                session(kind, params),
                0,
                ConnParams::default(),
                100,
                Box::new(OneTarget),
            );
            Conn {
                core,
                sent: Sent::default(),
                cmd_sn: FIRST_CMD_SN,
            }
        }

        /// A normal session with the RFC's defaults (InitialR2T=Yes, ImmediateData=Yes,
        /// FirstBurstLength 64 KiB, MaxBurstLength 256 KiB, MaxOutstandingR2T 1).
        fn new() -> Conn {
            Conn::with(normal(), SessionParams::default())
        }

        /// Feeds the input, then runs every job it made ready inline (the socket loop
        /// runs them on the LU's workers), as the task set releases them.
        fn input(&mut self, input: Input) -> (Next, Vec<(Bhs, Vec<u8>)>) {
            let next = self.core.handle(input, &mut self.sent);
            self.run_ready();
            (next, std::mem::take(&mut self.sent.0))
        }

        fn run_ready(&mut self) {
            loop {
                let jobs = self.core.take_ready();
                if jobs.is_empty() {
                    return;
                }
                for job in jobs {
                    let resp = job.execute();
                    let _ = self.core.complete(job.itt(), resp, &mut self.sent);
                }
            }
        }

        fn pdu(&mut self, pdu: Pdu) -> (Next, Vec<(Bhs, Vec<u8>)>) {
            self.input(Input::Pdu(pdu))
        }

        fn next_cmd_sn(&mut self) -> u32 {
            let sn = self.cmd_sn;
            self.cmd_sn = self.cmd_sn.wrapping_add(1);
            sn
        }

        /// A SCSI command with the next CmdSN.
        fn command(&mut self, itt: u32, cdb: &[u8], fl: u8, len: u32, data: &[u8]) -> Pdu {
            let sn = self.next_cmd_sn();
            command(itt, sn, cdb, fl, len, data)
        }

        fn write(&mut self, itt: u32, lba: u32, blocks: u16, immediate: &[u8], fin: bool) -> Pdu {
            let fl = flags::WRITE | if fin { flags::FINAL } else { 0 };
            let len = u32::from(blocks) * BS;
            self.command(itt, &rw10(0x2a, lba, blocks), fl, len, immediate)
        }

        /// READ(10) through the core: the data it returns (all Data-In PDUs).
        fn read(&mut self, itt: u32, lba: u32, blocks: u16) -> Vec<u8> {
            let len = u32::from(blocks) * BS;
            let fl = flags::READ | flags::FINAL;
            let pdu = self.command(itt, &rw10(0x28, lba, blocks), fl, len, &[]);
            let (_, sent) = self.pdu(pdu);
            let mut data = Vec::new();
            for (b, d) in &sent {
                assert_eq!(b.opcode(), Opcode::DataIn);
                assert_eq!(b.buffer_offset() as usize, data.len());
                data.extend_from_slice(d);
            }
            let (last, _) = sent.last().expect("Data-In");
            assert_ne!(
                last.flags() & flags::STATUS,
                0,
                "status folded into the last"
            );
            assert_eq!(last.byte3(), Status::GOOD.0);
            data
        }
    }

    fn rw10(op: u8, lba: u32, blocks: u16) -> [u8; 10] {
        let mut cdb = [0u8; 10];
        cdb[0] = op;
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
        cdb
    }

    fn command(itt: u32, cmd_sn: u32, cdb: &[u8], fl: u8, len: u32, data: &[u8]) -> Pdu {
        let mut b = Bhs::new(Opcode::ScsiCommand);
        b.set_flags(fl | 1); // SIMPLE
        b.set_itt(itt);
        b.set_expected_len(len);
        b.set_cmd_sn(cmd_sn);
        b.0[32..32 + cdb.len()].copy_from_slice(cdb);
        b.set_data_segment_len(data.len());
        Pdu {
            bhs: b,
            ahs: Vec::new(),
            data: data.to_vec(),
        }
    }

    fn data_out(itt: u32, ttt: u32, data_sn: u32, offset: u32, data: &[u8], fin: bool) -> Pdu {
        let mut b = Bhs::new(Opcode::DataOut);
        b.set_flags(if fin { flags::FINAL } else { 0 });
        b.set_itt(itt);
        b.set_ttt(ttt);
        b.set_data_sn(data_sn);
        b.set_buffer_offset(offset);
        b.set_data_segment_len(data.len());
        Pdu {
            bhs: b,
            ahs: Vec::new(),
            data: data.to_vec(),
        }
    }

    fn bare(op: Opcode, fl: u8, itt: u32, cmd_sn: u32) -> Pdu {
        let mut b = Bhs::new(op);
        b.set_flags(fl);
        b.set_itt(itt);
        b.set_cmd_sn(cmd_sn);
        Pdu {
            bhs: b,
            ahs: Vec::new(),
            data: Vec::new(),
        }
    }

    fn abort_task(itt: u32, cmd_sn: u32, rtt: u32, ref_cmd_sn: u32) -> Pdu {
        let mut p = bare(Opcode::TaskMgmtRequest, flags::FINAL | 1, itt, cmd_sn);
        p.bhs.0[0] |= 0x40; // TMFs are usually immediate
        p.bhs.set_ref_task_tag(rtt);
        p.bhs.set_ref_cmd_sn(ref_cmd_sn);
        p
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    /// The SCSI Response's status and, for CHECK CONDITION, the sense key.
    fn status_of(resp: &(Bhs, Vec<u8>)) -> (u8, Option<u8>) {
        let (b, d) = resp;
        assert_eq!(b.opcode(), Opcode::ScsiResponse);
        let key = (d.len() > 4).then(|| d[4] & 0x0f);
        (b.byte3(), key)
    }

    fn only(sent: Vec<(Bhs, Vec<u8>)>) -> (Bhs, Vec<u8>) {
        assert_eq!(sent.len(), 1, "{sent:?}");
        sent.into_iter().next().unwrap()
    }

    fn reject_reason(sent: Vec<(Bhs, Vec<u8>)>) -> u8 {
        let (b, d) = only(sent);
        assert_eq!(b.opcode(), Opcode::Reject);
        assert_eq!(d.len(), BHS_LEN, "the rejected header comes back");
        b.byte2()
    }

    #[test]
    fn accepts_a_write_with_immediate_data() {
        let mut c = Conn::new();
        let data = pattern(2 * BS as usize, 1);
        let pdu = c.write(0x10, 4, 2, &data, true);
        let (next, sent) = c.pdu(pdu);
        assert_eq!(next, Next::Continue);
        let resp = only(sent);
        assert_eq!(status_of(&resp), (Status::GOOD.0, None));
        assert_eq!(resp.0.itt(), 0x10);
        assert_eq!(resp.0.stat_sn(), 100);
        assert_eq!(resp.0.exp_cmd_sn(), FIRST_CMD_SN + 1);
        assert_eq!(resp.0.data_sn(), 0, "ExpDataSN: no R2T was needed");
        assert_eq!(c.read(0x11, 4, 2), data);
    }

    #[test]
    fn accepts_a_write_through_r2ts_one_burst_at_a_time() {
        let params = SessionParams {
            max_burst_length: 1024,
            ..SessionParams::default()
        };
        let mut c = Conn::with(normal(), params);
        let data = pattern(4 * BS as usize, 2);
        // InitialR2T=Yes and no immediate data: the target asks for every byte.
        let pdu = c.write(0x20, 8, 4, &[], true);
        let (_, sent) = c.pdu(pdu);
        let (r2t, _) = only(sent);
        assert_eq!(r2t.opcode(), Opcode::R2t);
        assert_eq!(
            (r2t.data_sn(), r2t.buffer_offset(), r2t.desired_len()),
            (0, 0, 1024)
        );
        // MaxOutstandingR2T=1: the second burst is asked for when the first is in.
        let ttt = r2t.ttt();
        let (_, sent) = c.pdu(data_out(0x20, ttt, 0, 0, &data[..512], false));
        assert!(sent.is_empty());
        let (_, sent) = c.pdu(data_out(0x20, ttt, 1, 512, &data[512..1024], true));
        let (r2t, _) = only(sent);
        assert_eq!(
            (r2t.data_sn(), r2t.buffer_offset(), r2t.desired_len()),
            (1, 1024, 1024)
        );
        assert_ne!(r2t.ttt(), ttt);
        let (_, sent) = c.pdu(data_out(0x20, r2t.ttt(), 0, 1024, &data[1024..], true));
        let resp = only(sent);
        assert_eq!(status_of(&resp), (Status::GOOD.0, None));
        assert_eq!(resp.0.data_sn(), 2, "ExpDataSN: the number of R2Ts");
        assert_eq!(c.read(0x21, 8, 4), data);
    }

    #[test]
    fn accepts_unsolicited_data_then_asks_for_the_rest_with_r2ts() {
        let params = SessionParams {
            initial_r2t: false,
            first_burst_length: 1024,
            ..SessionParams::default()
        };
        let mut c = Conn::with(normal(), params);
        let data = pattern(4 * BS as usize, 3);
        let pdu = c.write(0x30, 0, 4, &data[..512], false);
        let (_, sent) = c.pdu(pdu);
        assert!(sent.is_empty(), "unsolicited data follows");
        let (_, sent) = c.pdu(data_out(0x30, RESERVED_TAG, 0, 512, &data[512..1024], true));
        let (r2t, _) = only(sent);
        assert_eq!(r2t.opcode(), Opcode::R2t);
        // The R2T asks again for the last unsolicited PDU's data: the end of the
        // unsolicited data is taken before that PDU is stored. Harmless (the same
        // bytes are written twice) and kept as it was when the core was split out.
        assert_eq!((r2t.buffer_offset(), r2t.desired_len()), (512, 1536));
        let (_, sent) = c.pdu(data_out(0x30, r2t.ttt(), 0, 512, &data[512..], true));
        assert_eq!(status_of(&only(sent)), (Status::GOOD.0, None));
        assert_eq!(c.read(0x31, 0, 4), data);
    }

    #[test]
    fn rejects_a_data_out_with_a_data_digest_error_and_fails_its_command() {
        let mut c = Conn::new();
        let pdu = c.write(0x40, 0, 2, &[], true);
        let (_, sent) = c.pdu(pdu);
        let ttt = only(sent).0.ttt();
        let broken = data_out(0x40, ttt, 0, 0, &[0; 512], false);
        let (next, sent) = c.input(Input::DataDigestError(Box::new(broken.bhs)));
        assert_eq!(next, Next::Continue);
        assert_eq!(reject_reason(sent), RejectReason::DataDigestError as u8);
        // ErrorRecoveryLevel 0 cannot ask for the lost data again: the command ends
        // in CHECK CONDITION (ABORTED COMMAND) when its sequence does.
        let (_, sent) = c.pdu(data_out(0x40, ttt, 1, 512, &[0; 512], true));
        assert_eq!(
            status_of(&only(sent)),
            (Status::CHECK_CONDITION.0, Some(0x0b))
        );
    }

    #[test]
    fn rejects_a_command_with_a_data_digest_error_without_consuming_its_cmd_sn() {
        let mut c = Conn::new();
        let data = pattern(BS as usize, 4);
        let pdu = c.write(0x41, 0, 1, &data, true);
        let cmd_sn = pdu.bhs.cmd_sn();
        let (_, sent) = c.input(Input::DataDigestError(Box::new(pdu.bhs.clone())));
        let (reject, _) = sent[0].clone();
        assert_eq!(reject_reason(sent), RejectReason::DataDigestError as u8);
        assert_eq!(
            reject.exp_cmd_sn(),
            cmd_sn,
            "the initiator resends the same CmdSN"
        );
        let (_, sent) = c.pdu(pdu);
        assert_eq!(status_of(&only(sent)), (Status::GOOD.0, None));
    }

    #[test]
    fn drops_the_connection_on_a_header_digest_error() {
        let mut c = Conn::new();
        let (next, sent) = c.input(Input::HeaderDigestError);
        assert_eq!(next, Next::Close);
        assert!(sent.is_empty());
    }

    #[test]
    fn rejects_an_oversized_segment_then_closes() {
        let mut c = Conn::new();
        let bhs = Box::new(bare(Opcode::NopOut, flags::FINAL, 1, 1).bhs);
        let input = Input::SegmentTooLong {
            bhs,
            len: 1 << 20,
            limit: 262_144,
        };
        let (next, sent) = c.input(input);
        assert_eq!(next, Next::Close);
        assert_eq!(reject_reason(sent), RejectReason::ProtocolError as u8);
    }

    #[test]
    fn ignores_commands_outside_the_cmd_sn_window() {
        let mut c = Conn::new();
        let ahead = command(
            0x50,
            FIRST_CMD_SN + CMD_WINDOW,
            &[0; 6],
            flags::FINAL,
            0,
            &[],
        );
        let (next, sent) = c.pdu(ahead);
        assert_eq!(next, Next::Continue);
        assert!(sent.is_empty(), "beyond MaxCmdSN: dropped silently");
        // TEST UNIT READY in the window, then the same CmdSN again (a duplicate).
        let tur = c.command(0x51, &[0; 6], flags::FINAL, 0, &[]);
        let (_, sent) = c.pdu(tur.clone());
        assert_eq!(status_of(&only(sent)), (Status::GOOD.0, None));
        let (_, sent) = c.pdu(tur);
        assert!(sent.is_empty(), "below ExpCmdSN: dropped silently");
    }

    #[test]
    fn aborts_a_write_waiting_for_data_out_and_drops_its_late_data() {
        let mut c = Conn::new();
        let pdu = c.write(0x60, 0, 2, &[], true);
        let write_sn = pdu.bhs.cmd_sn();
        let (_, sent) = c.pdu(pdu);
        let ttt = only(sent).0.ttt();
        let tmf = abort_task(0x61, c.cmd_sn, 0x60, write_sn);
        let (next, sent) = c.pdu(tmf);
        assert_eq!(next, Next::Continue);
        let (resp, _) = only(sent);
        assert_eq!(resp.opcode(), Opcode::TaskMgmtResponse);
        assert_eq!(resp.byte2(), 0, "function complete");
        // Data-Out already in flight for the aborted task: no answer at all.
        let (_, sent) = c.pdu(data_out(0x60, ttt, 0, 0, &[0; 1024], true));
        assert!(sent.is_empty());
    }

    #[test]
    fn answers_task_does_not_exist_when_aborting_an_unknown_tag() {
        let mut c = Conn::new();
        let tur = c.command(0x70, &[0; 6], flags::FINAL, 0, &[]);
        let done_sn = tur.bhs.cmd_sn();
        let _ = c.pdu(tur);
        // The command ran already (CmdSN below ExpCmdSN); no task has tag 0x99.
        let (_, sent) = c.pdu(abort_task(0x71, c.cmd_sn, 0x99, done_sn));
        let (resp, _) = only(sent);
        assert_eq!(resp.opcode(), Opcode::TaskMgmtResponse);
        assert_eq!(resp.byte2(), 1, "task does not exist");
    }

    #[test]
    fn rejects_data_out_for_a_task_that_never_was() {
        let mut c = Conn::new();
        let (_, sent) = c.pdu(data_out(0x80, 5, 0, 0, &[0; 512], true));
        assert_eq!(reject_reason(sent), RejectReason::InvalidPduField as u8);
    }

    #[test]
    fn answers_a_logout_then_ends_the_session() {
        let mut c = Conn::new();
        let sn = c.next_cmd_sn();
        let (next, sent) = c.pdu(bare(Opcode::LogoutRequest, flags::FINAL, 0x90, sn));
        assert_eq!(next, Next::EndSession);
        let (resp, _) = only(sent);
        assert_eq!(resp.opcode(), Opcode::LogoutResponse);
        assert_eq!((resp.itt(), resp.byte2()), (0x90, 0));
    }

    #[test]
    fn answers_a_logout_of_this_connection_then_closes_it() {
        let mut c = Conn::new();
        let sn = c.next_cmd_sn();
        let pdu = bare(Opcode::LogoutRequest, flags::FINAL | 1, 0x91, sn);
        let (next, sent) = c.pdu(pdu);
        assert_eq!(next, Next::Close);
        assert_eq!(only(sent).0.byte2(), 0);
    }

    #[test]
    fn answers_cid_not_found_to_a_logout_of_an_unknown_connection() {
        let mut c = Conn::new();
        let sn = c.next_cmd_sn();
        let mut pdu = bare(Opcode::LogoutRequest, flags::FINAL | 1, 0x92, sn);
        pdu.bhs.0[20..22].copy_from_slice(&7u16.to_be_bytes());
        let (next, sent) = c.pdu(pdu);
        assert_eq!(next, Next::Flush);
        assert_eq!(only(sent).0.byte2(), 1);
    }

    #[test]
    fn answers_a_nop_out_with_a_nop_in_echoing_its_data() {
        let mut c = Conn::new();
        let mut pdu = bare(Opcode::NopOut, flags::FINAL, 0xa0, c.cmd_sn);
        pdu.bhs.0[0] |= 0x40;
        pdu.bhs.set_ttt(RESERVED_TAG);
        pdu.data = b"ping".to_vec();
        let (_, sent) = c.pdu(pdu);
        let (b, d) = only(sent);
        assert_eq!(
            (b.opcode(), b.itt(), d.as_slice()),
            (Opcode::NopIn, 0xa0, &b"ping"[..])
        );
    }

    #[test]
    fn pings_a_quiet_connection_and_closes_it_when_the_ping_goes_unanswered() {
        let mut c = Conn::new();
        let t0 = Instant::now();
        let quiet = |now, quiet_for| Input::Idle { now, quiet_for };
        let (next, sent) = c.input(quiet(t0, Duration::from_secs(1)));
        assert_eq!((next, sent.len()), (Next::Continue, 0));
        let (next, sent) = c.input(quiet(t0, IDLE_PING + Duration::from_secs(1)));
        assert_eq!(next, Next::Flush);
        let (ping, _) = only(sent);
        assert_eq!((ping.opcode(), ping.itt()), (Opcode::NopIn, RESERVED_TAG));
        // Answered: the next quiet period pings again instead of closing.
        let mut answer = bare(Opcode::NopOut, flags::FINAL, RESERVED_TAG, c.cmd_sn);
        answer.bhs.0[0] |= 0x40;
        answer.bhs.set_ttt(ping.ttt());
        let (_, sent) = c.pdu(answer);
        assert!(sent.is_empty());
        let later = t0 + 2 * IDLE_PING;
        let (next, _) = c.input(quiet(later, IDLE_PING + Duration::from_secs(1)));
        assert_eq!(next, Next::Flush);
        // Unanswered for another period: a half-open connection, closed.
        let (next, sent) = c.input(quiet(later + IDLE_PING + Duration::from_secs(1), IDLE_PING));
        assert_eq!((next, sent.len()), (Next::Close, 0));
    }

    #[test]
    fn segments_data_in_by_the_initiators_max_recv_data_segment_length() {
        let mut c = Conn::new();
        let data = pattern(8 * BS as usize, 5);
        let pdu = c.write(0xb0, 0, 8, &data, true);
        let _ = c.pdu(pdu);
        let pdu = c.command(
            0xb1,
            &rw10(0x28, 0, 8),
            flags::READ | flags::FINAL,
            4096,
            &[],
        );
        let (_, sent) = c.pdu(pdu);
        // The default MaxRecvDataSegmentLength of the initiator is 8192: one PDU.
        assert_eq!(sent.len(), 1);
        c.core.params.send_limit = 1024;
        assert_eq!(c.read(0xb2, 0, 8), data);
        let pdu = c.command(
            0xb3,
            &rw10(0x28, 0, 8),
            flags::READ | flags::FINAL,
            4096,
            &[],
        );
        let (_, sent) = c.pdu(pdu);
        assert_eq!(sent.len(), 4);
        let data_sns: Vec<u32> = sent.iter().map(|(b, _)| b.data_sn()).collect();
        assert_eq!(data_sns, [0, 1, 2, 3]);
        assert!(sent[..3]
            .iter()
            .all(|(b, _)| b.flags() & flags::STATUS == 0));
    }

    #[test]
    fn rejects_scsi_commands_on_a_discovery_session_but_answers_send_targets() {
        let mut c = Conn::with(SessionKind::Discovery, SessionParams::default());
        let tur = c.command(0xc0, &[0; 6], flags::FINAL, 0, &[]);
        let (_, sent) = c.pdu(tur);
        assert_eq!(reject_reason(sent), RejectReason::ProtocolError as u8);
        let sn = c.next_cmd_sn();
        let mut text = bare(Opcode::TextRequest, flags::FINAL, 0xc1, sn);
        text.bhs.set_ttt(RESERVED_TAG);
        text.data = b"SendTargets=All\0".to_vec();
        let (_, sent) = c.pdu(text);
        let (b, d) = only(sent);
        assert_eq!(b.opcode(), Opcode::TextResponse);
        assert!(d.starts_with(format!("TargetName={TARGET}\0").as_bytes()));
    }

    #[test]
    fn rejects_a_write_reusing_the_tag_of_a_write_in_progress() {
        let mut c = Conn::new();
        let first = c.write(0xd0, 0, 2, &[], true);
        let _ = c.pdu(first);
        let again = c.write(0xd0, 2, 2, &[], true);
        let (_, sent) = c.pdu(again);
        assert_eq!(reject_reason(sent), RejectReason::TaskInProgress as u8);
    }

    #[test]
    fn remembers_only_the_newest_aborted_tags() {
        let mut tags = AbortedTags::default();
        let n = ABORTED_TAGS_KEPT as u32 + 10;
        for t in 0..n {
            tags.insert(t);
            tags.insert(t); // a tag aborted twice counts once
        }
        assert_eq!(tags.order.len(), ABORTED_TAGS_KEPT);
        assert_eq!(tags.set.len(), ABORTED_TAGS_KEPT);
        assert!(!tags.contains(9), "oldest forgotten");
        assert!(tags.contains(10) && tags.contains(n - 1));
    }

    // ---- concurrent execution: the core hands out jobs, completions come back in any
    // order (the socket loop runs them on the LU's workers) ----

    impl Conn {
        /// Feeds a PDU without running the jobs it makes ready.
        fn hold(&mut self, pdu: Pdu) -> Vec<(Bhs, Vec<u8>)> {
            let _ = self.core.handle(Input::Pdu(pdu), &mut self.sent);
            std::mem::take(&mut self.sent.0)
        }

        /// Runs a job and completes it: what it sent.
        fn finish(&mut self, job: Job) -> Vec<(Bhs, Vec<u8>)> {
            let resp = job.execute();
            let _ = self.core.complete(job.itt(), resp, &mut self.sent);
            std::mem::take(&mut self.sent.0)
        }

        fn ready_tags(&mut self) -> Vec<(u32, Job)> {
            self.core
                .take_ready()
                .into_iter()
                .map(|j| (j.itt(), j))
                .collect()
        }
    }

    fn tags(jobs: &[(u32, Job)]) -> Vec<u32> {
        jobs.iter().map(|(t, _)| *t).collect()
    }

    /// A READ(10) of one block with task attribute `attr` (1 SIMPLE, 2 ORDERED, 3 HoQ).
    fn read_with(conn: &mut Conn, itt: u32, lba: u32, attr: u8) -> Pdu {
        let mut p = conn.command(
            itt,
            &rw10(0x28, lba, 1),
            flags::READ | flags::FINAL,
            BS,
            &[],
        );
        p.bhs.0[1] = (p.bhs.0[1] & !7) | attr;
        p
    }

    #[test]
    fn simple_commands_run_together_and_complete_in_any_order_with_consistent_data() {
        let mut c = Conn::new();
        for (i, seed) in [(0u32, 1u8), (1, 2), (2, 3)] {
            let w = c.write(0x10 + i, i, 1, &pattern(BS as usize, seed), true);
            let _ = c.pdu(w);
        }
        for (itt, lba) in [(1, 0), (2, 1), (3, 2)] {
            let p = read_with(&mut c, itt, lba, 1);
            assert!(
                c.hold(p).is_empty(),
                "nothing is sent before a command runs"
            );
        }
        let mut jobs = c.ready_tags();
        assert_eq!(
            tags(&jobs),
            vec![1, 2, 3],
            "SIMPLE commands all start at once"
        );
        assert_eq!(c.core.in_flight(), 3);
        // The workers finish them backwards: each response carries its own data, and
        // StatSN follows the order the statuses go out.
        let mut stat_sns = Vec::new();
        while let Some((itt, job)) = jobs.pop() {
            let sent = c.finish(job);
            let (b, d) = only(sent);
            assert_eq!(b.opcode(), Opcode::DataIn);
            assert_eq!(b.itt(), itt);
            assert_ne!(b.flags() & flags::STATUS, 0);
            assert_eq!(d, pattern(BS as usize, itt as u8), "data of task {itt}");
            stat_sns.push(b.stat_sn());
        }
        assert_eq!(
            stat_sns,
            vec![stat_sns[0], stat_sns[0] + 1, stat_sns[0] + 2]
        );
        assert_eq!(c.core.in_flight(), 0);
    }

    #[test]
    fn an_ordered_command_waits_for_the_older_ones_and_holds_back_the_newer() {
        let mut c = Conn::new();
        let p = read_with(&mut c, 1, 0, 1);
        c.hold(p);
        let p = read_with(&mut c, 2, 0, 2); // ORDERED
        c.hold(p);
        let p = read_with(&mut c, 3, 0, 1);
        c.hold(p);
        let mut first = c.ready_tags();
        assert_eq!(tags(&first), vec![1]);
        let p = read_with(&mut c, 4, 0, 3); // HEAD OF QUEUE overtakes them all
        c.hold(p);
        let hoq = c.ready_tags();
        assert_eq!(tags(&hoq), vec![4]);
        c.finish(first.pop().unwrap().1);
        assert!(
            c.ready_tags().is_empty(),
            "ORDERED waits for the HEAD OF QUEUE task"
        );
        for (_, j) in hoq {
            c.finish(j);
        }
        let ordered = c.ready_tags();
        assert_eq!(tags(&ordered), vec![2]);
        for (_, j) in ordered {
            c.finish(j);
        }
        assert_eq!(tags(&c.ready_tags()), vec![3]);
    }

    #[test]
    fn abort_task_of_a_running_command_answers_after_it_ends_and_drops_its_response() {
        let mut c = Conn::new();
        let p = read_with(&mut c, 7, 0, 1);
        c.hold(p);
        let mut running = c.ready_tags();
        let sn = c.next_cmd_sn();
        let sent = c.hold(abort_task(0x99, sn, 7, sn - 1));
        assert!(
            sent.is_empty(),
            "no TMF response while the task runs: {sent:?}"
        );
        let sent = c.finish(running.pop().unwrap().1);
        let (b, _) = only(sent);
        assert_eq!(
            b.opcode(),
            Opcode::TaskMgmtResponse,
            "the aborted read's data is dropped"
        );
        assert_eq!(b.itt(), 0x99);
        assert_eq!(b.byte2(), 0, "FUNCTION COMPLETE");
    }

    #[test]
    fn lun_reset_withdraws_queued_commands_and_waits_for_running_ones() {
        let mut c = Conn::new();
        let p = read_with(&mut c, 1, 0, 1);
        c.hold(p);
        let p = read_with(&mut c, 2, 0, 2); // ORDERED: queued behind 1
        c.hold(p);
        let mut running = c.ready_tags();
        assert_eq!(tags(&running), vec![1]);
        let sn = c.next_cmd_sn();
        let mut reset = bare(Opcode::TaskMgmtRequest, flags::FINAL | 5, 0x77, sn);
        reset.bhs.0[0] |= 0x40;
        assert!(c.hold(reset).is_empty());
        assert!(c.ready_tags().is_empty(), "the queued command never runs");
        let sent = c.finish(running.pop().unwrap().1);
        let (b, _) = only(sent);
        assert_eq!(b.opcode(), Opcode::TaskMgmtResponse);
        assert_eq!((b.itt(), b.byte2()), (0x77, 0));
        assert_eq!(c.core.in_flight(), 0);
        // The tags are free again.
        let p = read_with(&mut c, 2, 0, 1);
        c.hold(p);
        assert_eq!(tags(&c.ready_tags()), vec![2]);
    }

    #[test]
    fn a_write_waiting_for_r2t_data_keeps_its_place_before_an_ordered_command() {
        let mut c = Conn::new(); // InitialR2T=Yes: the write's data comes through an R2T
        let w = c.write(1, 4, 1, &[], true);
        let sent = c.hold(w);
        assert_eq!(sent[0].0.opcode(), Opcode::R2t);
        let ttt = sent[0].0.ttt();
        let p = read_with(&mut c, 2, 4, 2); // ORDERED read of the same block
        c.hold(p);
        assert!(
            c.ready_tags().is_empty(),
            "the read waits for the older write"
        );
        c.hold(data_out(1, ttt, 0, 0, &pattern(BS as usize, 9), true));
        let write = c.ready_tags();
        assert_eq!(tags(&write), vec![1]);
        for (_, j) in write {
            c.finish(j);
        }
        let read = c.ready_tags();
        assert_eq!(tags(&read), vec![2]);
        let sent = c.finish(read.into_iter().next().unwrap().1);
        assert_eq!(
            only(sent).1,
            pattern(BS as usize, 9),
            "the read sees the write"
        );
    }

    #[test]
    fn every_violation_has_one_disposition() {
        use Disposition::*;
        assert_eq!(Violation::CmdSnOutsideWindow.disposition(), Ignore);
        assert_eq!(Violation::HeaderDigest.disposition(), Close);
        assert_eq!(
            Violation::DataOutDigest.disposition(),
            RejectAndFailTask(RejectReason::DataDigestError)
        );
        assert_eq!(
            Violation::SegmentTooLong { len: 1, limit: 0 }.disposition(),
            RejectAndClose(RejectReason::ProtocolError)
        );
        assert_eq!(Violation::DataOutOutOfSequence.disposition(), FailTask);
        assert_eq!(
            Violation::UnsupportedOpcode.disposition(),
            Reject(RejectReason::CommandNotSupported)
        );
    }
}
