//! One iSCSI connection: login, then the full feature phase until logout or close.
//!
//! Owns: the connection's StatSN, its digests and data segment limits, the write
//! tasks waiting for Data-Out (immediate, unsolicited, R2T-solicited), Data-In
//! segmentation and phase-collapsed status, NOP-In/Out (including the target's own
//! keep-alive pings that close half-open connections), task management, text
//! requests (SendTargets), logout and rejects.
//!
//! Threading: one thread per connection executes its commands inline (the storage
//! layer may block). Responses are framed into a buffer that is written when no more
//! input is waiting, so a pipelined queue of commands costs one `write` per batch.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, BufReader, ErrorKind};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::iscsi::login::{Access, Login, LoginDone, LoginStatus, Step};
use crate::engine::iscsi::negotiate::{self, ConnParams, Pairs};
use crate::engine::iscsi::pdu::{
    decode_lun, flags, read_pdu, Bhs, Digests, Opcode, Pdu, PduWriter, ReadError, RejectReason,
    RESERVED_TAG,
};
use crate::engine::iscsi::session::{CmdSnCheck, ConnEntry, JoinError, Session};
use crate::engine::iscsi::Portal;
use crate::engine::scsi::{
    self, Command, DataDirection, Residual, Response, ScsiService, Status, TaskAttribute,
    TmfFunction, TmfResponse,
};

/// Data segments during login are bounded by the default MaxRecvDataSegmentLength.
const LOGIN_MAX_DATA: usize = 8192;
/// A login must finish within this time.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an idle connection wakes up to check for shutdown and keep-alive.
const POLL: Duration = Duration::from_secs(1);
/// After this long without input the target pings (NOP-In); a second period without
/// an answer closes the connection (a half-open TCP connection never answers).
const IDLE_PING: Duration = Duration::from_secs(30);
/// How long a connection looks for its next PDU before sleeping (see `spin_for_input`).
static SPIN_WINDOW: std::sync::LazyLock<Duration> = std::sync::LazyLock::new(|| {
    let us = std::env::var("ISCTL_SPIN_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    Duration::from_micros(us)
});
/// The largest write the engine buffers for one command (the SCSI layer's maximum
/// transfer is 32 MiB; block limits VPD tells initiators so).
const MAX_WRITE_BUFFER: u32 = 64 << 20;

/// What the connection needs from the engine.
pub trait Engine: Send + Sync {
    /// The login policy for a connection that arrived on `listen` from `peer`.
    fn access(&self, listen: SocketAddr, peer: SocketAddr) -> Box<dyn Access + '_>;
    /// SendTargets answer for an initiator (all targets it may log in to, or one).
    fn send_targets(
        &self,
        listen: SocketAddr,
        local: SocketAddr,
        peer: SocketAddr,
        initiator: &str,
        which: Option<&str>,
    ) -> Pairs;
    /// The SCSI target behind an iSCSI target name.
    fn scsi_target(&self, target: &str) -> Option<Arc<scsi::ScsiTarget>>;
    fn registry(&self) -> &crate::engine::iscsi::session::Registry;
    /// True once the engine is shutting down.
    fn stopping(&self) -> bool;
}

/// Run a connection to its end. Errors are logged, never propagated: one bad
/// connection must not affect another.
pub fn serve_connection(engine: Arc<dyn Engine>, stream: TcpStream, portal: Portal) {
    let peer = match stream.peer_addr() {
        Ok(p) => p,
        Err(_) => return,
    };
    let local = stream.local_addr().unwrap_or(portal.listen);
    let _ = stream.set_nodelay(true);
    let span = tracing::info_span!("conn", %peer);
    let _enter = span.enter();
    let reader = match stream.try_clone() {
        Ok(r) => BufReader::with_capacity(256 * 1024, r),
        Err(e) => {
            tracing::warn!("cannot clone the socket: {e}");
            return;
        }
    };
    let mut conn = Conn {
        engine,
        stream,
        reader,
        writer: PduWriter::new(),
        peer,
        local,
        portal,
        stat_sn: 0,
        params: ConnParams::default(),
        session: None,
        cid: 0,
        tasks: HashMap::new(),
        aborted: HashSet::new(),
        next_ttt: 1,
        text: None,
        ping: None,
        last_input: Instant::now(),
    };
    match conn.login() {
        Ok(true) => {
            if let Err(e) = conn.full_feature() {
                match e.kind() {
                    ErrorKind::UnexpectedEof
                    | ErrorKind::ConnectionReset
                    | ErrorKind::BrokenPipe => {
                        tracing::debug!("connection ended: {e}")
                    }
                    _ => tracing::info!("connection ended: {e}"),
                }
            }
        }
        Ok(false) => {}
        Err(e) => tracing::info!("login ended: {e}"),
    }
    conn.close();
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
    /// A Data-Out broke the rules (offset/DataSN): the command ends in error.
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

struct Conn {
    engine: Arc<dyn Engine>,
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    writer: PduWriter,
    peer: SocketAddr,
    local: SocketAddr,
    portal: Portal,
    stat_sn: u32,
    params: ConnParams,
    session: Option<Arc<Session>>,
    cid: u16,
    tasks: HashMap<u32, WriteTask>,
    aborted: HashSet<u32>,
    next_ttt: u32,
    text: Option<TextState>,
    /// Our outstanding keep-alive ping: its TTT and when it was sent.
    ping: Option<(u32, Instant)>,
    last_input: Instant,
}

impl Conn {
    // ---- login -------------------------------------------------------------------

    /// The login phase. `Ok(true)`: in full feature phase now.
    fn login(&mut self) -> io::Result<bool> {
        let mut login = Login::new();
        let deadline = Instant::now() + LOGIN_TIMEOUT;
        self.stream.set_read_timeout(Some(LOGIN_TIMEOUT))?;
        loop {
            if Instant::now() > deadline {
                tracing::info!("login timed out");
                return Ok(false);
            }
            let pdu = match read_pdu(&mut self.reader, Digests::default(), LOGIN_MAX_DATA) {
                Ok(p) => p,
                Err(ReadError::Closed) => return Ok(false),
                Err(ReadError::TooLong { bhs, len, .. }) => {
                    tracing::info!("login PDU with a {len}-byte data segment: refused");
                    let mut r = Bhs::new(Opcode::LoginResponse);
                    r.set_itt(bhs.itt());
                    r.set_login_status(LoginStatus::INITIATOR_ERROR.0);
                    self.push(r, &[])?;
                    self.flush()?;
                    return Ok(false);
                }
                Err(e) => return Err(io::Error::other(e.to_string())),
            };
            let engine = self.engine.clone();
            let access = engine.access(self.portal.listen, self.peer);
            let registry = engine.registry();
            let step = login.on_request(&pdu, access.as_ref(), &|tsih| {
                registry.get(tsih).map(|s| s.params)
            });
            match step {
                Step::Reply(bhs, data) => {
                    self.push(bhs, &data)?;
                    self.flush()?;
                }
                Step::Fail(bhs, reason) => {
                    tracing::info!(
                        status = format!("{:#06x}", bhs.login_status()),
                        "login refused: {reason}"
                    );
                    self.push(bhs, &[])?;
                    self.flush()?;
                    return Ok(false);
                }
                Step::Complete(done) => return self.bind(*done),
            }
        }
    }

    /// Attach the connection to a new or existing session and send the final response.
    fn bind(&mut self, done: LoginDone) -> io::Result<bool> {
        let LoginDone {
            initiator,
            initiator_alias,
            target,
            isid,
            tsih,
            cid,
            portal_group_tag,
            negotiation,
            cmd_sn,
            stat_sn,
            mut response,
            response_data,
        } = done;
        let entry = ConnEntry {
            cid,
            peer: self.peer,
            local: self.local,
            listen: self.portal.listen,
            params: negotiation.conn,
            stream: self.stream.try_clone()?,
        };
        let registry = self.engine.registry();
        let session = if tsih == 0 {
            let scsi = match &target {
                Some(t) => match self.engine.scsi_target(t) {
                    Some(s) => Some((
                        s,
                        scsi::Nexus {
                            id: registry.next_nexus_id(),
                            initiator_name: initiator.clone(),
                            isid,
                            target_name: t.clone(),
                            tpgt: portal_group_tag,
                        },
                    )),
                    None => {
                        return self.fail_bind(
                            response,
                            LoginStatus::NOT_FOUND,
                            "target removed during login",
                        )
                    }
                },
                None => None,
            };
            registry.create(|tsih| Session {
                tsih,
                initiator: initiator.clone(),
                initiator_alias,
                isid,
                target: target.clone(),
                portal_group_tag,
                params: negotiation.session,
                scsi,
                window: std::sync::Mutex::new(crate::engine::iscsi::session::CmdWindow::new(
                    cmd_sn,
                )),
                conns: std::sync::Mutex::new(vec![entry]),
                started: std::time::SystemTime::now(),
            })
        } else {
            match registry.get(tsih) {
                Some(s) if s.target != target => {
                    return self.fail_bind(
                        response,
                        LoginStatus::CANT_INCLUDE_IN_SESSION,
                        "connection for another target",
                    )
                }
                _ => {}
            }
            match registry.join(tsih, &initiator, isid, entry) {
                Ok(s) => s,
                Err(JoinError::TooManyConnections) => {
                    return self.fail_bind(
                        response,
                        LoginStatus::TOO_MANY_CONNECTIONS,
                        "MaxConnections reached",
                    )
                }
                Err(JoinError::NoSession) => {
                    return self.fail_bind(
                        response,
                        LoginStatus::SESSION_DOES_NOT_EXIST,
                        "session ended during login",
                    )
                }
                Err(JoinError::Mismatch) => {
                    return self.fail_bind(
                        response,
                        LoginStatus::INITIATOR_ERROR,
                        "initiator name or ISID does not match the session",
                    )
                }
            }
        };
        response.set_tsih(session.tsih);
        {
            let w = session.window();
            response.set_exp_cmd_sn(w.exp_cmd_sn());
            response.set_max_cmd_sn(w.max_cmd_sn());
        }
        self.cid = cid;
        self.params = negotiation.conn;
        self.stat_sn = stat_sn.wrapping_add(1);
        tracing::info!(
            tsih = session.tsih,
            cid,
            initiator = %session.initiator,
            target = session.target.as_deref().unwrap_or("(discovery)"),
            header_digest = self.params.header_digest,
            data_digest = self.params.data_digest,
            "logged in"
        );
        self.session = Some(session);
        self.push(response, &response_data)?;
        self.flush()?;
        // Digests start with the first PDU after the final login response.
        self.writer.digests = Digests {
            header: self.params.header_digest,
            data: self.params.data_digest,
        };
        Ok(true)
    }

    fn fail_bind(&mut self, mut response: Bhs, status: LoginStatus, why: &str) -> io::Result<bool> {
        tracing::info!("login refused: {why}");
        response.set_flags(0);
        response.set_login_status(status.0);
        self.push(response, &[])?;
        self.flush()?;
        Ok(false)
    }

    // ---- full feature phase ----------------------------------------------------------

    fn session(&self) -> &Arc<Session> {
        self.session
            .as_ref()
            .expect("bound before the full feature phase")
    }

    fn full_feature(&mut self) -> io::Result<()> {
        self.stream.set_read_timeout(Some(POLL))?;
        let digests = Digests {
            header: self.params.header_digest,
            data: self.params.data_digest,
        };
        self.last_input = Instant::now();
        loop {
            // Write responses once the input that produced them is drained.
            if self.writer.pending() && self.reader.buffer().is_empty() {
                self.flush()?;
            }
            if self.reader.buffer().is_empty() && !self.wait_for_input()? {
                return Ok(());
            }
            let limit = self.params.recv_limit as usize;
            let pdu = match read_pdu(&mut self.reader, digests, limit) {
                Ok(p) => p,
                Err(ReadError::Closed) => return Ok(()),
                Err(ReadError::HeaderDigest) => {
                    tracing::warn!(
                        "header digest error: closing the connection (ErrorRecoveryLevel 0)"
                    );
                    return Ok(());
                }
                Err(ReadError::DataDigest { bhs }) => {
                    tracing::warn!("data digest error on {:?}", bhs.opcode());
                    self.reject(&bhs, RejectReason::DataDigestError)?;
                    if bhs.opcode() == Opcode::DataOut {
                        // The task cannot complete at level 0: end it with an error.
                        if let Some(t) = self.tasks.get_mut(&bhs.itt()) {
                            t.data_error = true;
                        }
                    }
                    continue;
                }
                Err(ReadError::TooLong { bhs, len, limit }) => {
                    tracing::warn!(
                        "{:?} with a {len}-byte data segment (limit {limit}): closing",
                        bhs.opcode()
                    );
                    self.reject(&bhs, RejectReason::ProtocolError)?;
                    self.flush()?;
                    return Ok(());
                }
                Err(ReadError::Io(e)) if is_timeout(&e) => {
                    tracing::info!("peer stalled in the middle of a PDU: closing");
                    return Ok(());
                }
                Err(ReadError::Io(e)) => return Err(e),
            };
            self.last_input = Instant::now();
            if !self.dispatch(pdu)? {
                self.flush()?;
                return Ok(());
            }
        }
    }

    /// Wait until input is available. Sends keep-alive pings on a quiet connection.
    /// `Ok(false)`: stop (engine stopping, or the peer stopped answering).
    fn wait_for_input(&mut self) -> io::Result<bool> {
        self.spin_for_input();
        loop {
            match self.reader.fill_buf() {
                Ok([]) => return Ok(false),
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => {
                    if self.engine.stopping() {
                        return Ok(false);
                    }
                    let idle = self.last_input.elapsed();
                    match self.ping {
                        Some((_, sent)) if sent.elapsed() > IDLE_PING => {
                            tracing::info!(
                                "no answer to a NOP-In for {} s: closing",
                                IDLE_PING.as_secs()
                            );
                            return Ok(false);
                        }
                        None if idle > IDLE_PING => self.send_ping()?,
                        _ => {}
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Before sleeping in `read`, look for the next PDU for a few microseconds: at
    /// queue depth 1 the initiator's next command usually arrives within that time,
    /// and a thread that has not slept answers it without a scheduler wake-up (which
    /// costs tens of microseconds across CPUs). Each look yields the CPU, so an
    /// initiator on the same CPU is not starved. `ISCTL_SPIN_US=0` turns it off.
    fn spin_for_input(&mut self) {
        let window = *SPIN_WINDOW;
        if window.is_zero() {
            return;
        }
        let start = Instant::now();
        let mut probe = [0u8; 1];
        while start.elapsed() < window {
            // MSG_PEEK | MSG_DONTWAIT: POSIX on Linux, macOS and the BSDs.
            let n = unsafe {
                libc::recv(
                    std::os::fd::AsRawFd::as_raw_fd(&self.stream),
                    probe.as_mut_ptr().cast(),
                    1,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            if n != -1 {
                return; // data (or EOF) is there: the read will not block
            }
            std::thread::yield_now();
        }
    }

    fn send_ping(&mut self) -> io::Result<()> {
        let ttt = self.new_ttt();
        let mut b = Bhs::new(Opcode::NopIn);
        b.set_flags(flags::FINAL);
        b.set_itt(RESERVED_TAG);
        b.set_ttt(ttt);
        self.fill_sn(&mut b, false);
        self.ping = Some((ttt, Instant::now()));
        self.push(b, &[])?;
        self.flush()
    }

    /// Handle one PDU. `Ok(false)`: the connection ends (logout).
    fn dispatch(&mut self, pdu: Pdu) -> io::Result<bool> {
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
            if !answer_to_ping {
                let check = self.session().window().check(pdu.bhs.cmd_sn());
                if check == CmdSnCheck::Ignore {
                    tracing::debug!(
                        cmd_sn = pdu.bhs.cmd_sn(),
                        "CmdSN outside the window: ignored"
                    );
                    return Ok(true);
                }
            }
        }
        let discovery = self.session().target.is_none();
        match op {
            Opcode::NopOut => self.nop_out(pdu)?,
            Opcode::ScsiCommand if discovery => {
                self.reject(&pdu.bhs, RejectReason::ProtocolError)?
            }
            Opcode::ScsiCommand => self.scsi_command(pdu)?,
            Opcode::DataOut => self.data_out(pdu)?,
            Opcode::TaskMgmtRequest if discovery => {
                self.reject(&pdu.bhs, RejectReason::ProtocolError)?
            }
            Opcode::TaskMgmtRequest => self.task_management(pdu)?,
            Opcode::TextRequest => self.text(pdu)?,
            Opcode::LogoutRequest => return self.logout(pdu),
            Opcode::SnackRequest => {
                // ErrorRecoveryLevel 0: no SNACK support (RFC 7143 §11.16).
                self.reject(&pdu.bhs, RejectReason::ProtocolError)?
            }
            Opcode::LoginRequest => self.reject(&pdu.bhs, RejectReason::ProtocolError)?,
            _ => {
                tracing::info!("unsupported opcode {:#04x}: rejected", pdu.bhs.0[0] & 0x3f);
                self.reject(&pdu.bhs, RejectReason::CommandNotSupported)?
            }
        }
        Ok(true)
    }

    // ---- NOP -------------------------------------------------------------------------

    fn nop_out(&mut self, pdu: Pdu) -> io::Result<()> {
        let itt = pdu.bhs.itt();
        if itt == RESERVED_TAG {
            // The answer to our ping (or a bare ExpStatSN update).
            if let Some((ttt, _)) = self.ping {
                if pdu.bhs.ttt() == ttt || pdu.bhs.ttt() == RESERVED_TAG {
                    self.ping = None;
                }
            }
            return Ok(());
        }
        if pdu.bhs.ttt() != RESERVED_TAG {
            // An initiator NOP-Out with ITT set must carry TTT 0xffffffff.
            return self.reject(&pdu.bhs, RejectReason::ProtocolError);
        }
        let mut b = Bhs::new(Opcode::NopIn);
        b.set_flags(flags::FINAL);
        b.set_lun_field(pdu.bhs.lun_field());
        b.set_itt(itt);
        b.set_ttt(RESERVED_TAG);
        self.fill_sn(&mut b, true);
        let echo_len = pdu.data.len().min(self.params.send_limit as usize);
        self.push(b, &pdu.data[..echo_len])
    }

    // ---- SCSI commands ---------------------------------------------------------------

    fn scsi_command(&mut self, pdu: Pdu) -> io::Result<()> {
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
                // Data with a command that sends none: a protocol error (RFC 7143 §11.3.4).
                return self.reject(&pdu.bhs, RejectReason::ProtocolError);
            }
            self.execute(
                b.lun_field(),
                itt,
                &cdb,
                &[],
                expected_len,
                direction,
                attribute,
                0,
            );
            return Ok(());
        }
        if self.tasks.contains_key(&itt) {
            return self.reject(&pdu.bhs, RejectReason::TaskInProgress);
        }
        let sp = self.session().params;
        let mut data = pdu.data;
        data.truncate(expected_len as usize);
        let immediate = data.len() as u32;
        let final_bit = f & flags::FINAL != 0;
        let unsolicited_open =
            !final_bit && !sp.initial_r2t && immediate < sp.first_burst_length.min(expected_len);
        let mut task = WriteTask {
            lun_field: b.lun_field(),
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
        self.advance_write(itt)
    }

    /// Issue R2Ts or run the command once all its data is in.
    fn advance_write(&mut self, itt: u32) -> io::Result<()> {
        let sp = self.session().params;
        let Some(task) = self.tasks.get_mut(&itt) else {
            return Ok(());
        };
        if task.unsolicited_open {
            return Ok(());
        }
        let done_asking = task.next_offset >= task.expected_len || task.too_big || task.data_error;
        if done_asking && task.r2ts.is_empty() {
            let task = self.tasks.remove(&itt).expect("present");
            let r2t_count = task.r2t_sn;
            if task.too_big || task.data_error {
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
                return self.send_response(itt, resp, r2t_count);
            }
            self.execute(
                task.lun_field,
                itt,
                &task.cdb,
                &task.buf,
                task.expected_len,
                task.direction,
                task.attribute,
                r2t_count,
            );
            return Ok(());
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
            self.push(b, &[])?;
        }
        Ok(())
    }

    fn data_out(&mut self, pdu: Pdu) -> io::Result<()> {
        let b = &pdu.bhs;
        let itt = b.itt();
        let Some(task) = self.tasks.get_mut(&itt) else {
            if self.aborted.contains(&itt) {
                return Ok(()); // data still in flight for an aborted task
            }
            return self.reject(&pdu.bhs, RejectReason::InvalidPduField);
        };
        let offset = b.buffer_offset();
        let len = pdu.data.len() as u32;
        let end = offset.checked_add(len);
        let final_bit = b.final_bit();
        let ttt = b.ttt();
        let data_sn = b.data_sn();
        let mut sequence_done = false;
        if ttt == RESERVED_TAG {
            if !task.unsolicited_open {
                return self.reject(&pdu.bhs, RejectReason::ProtocolError);
            }
            if data_sn != task.unsolicited_data_sn {
                task.data_error = true;
            }
            task.unsolicited_data_sn = task.unsolicited_data_sn.wrapping_add(1);
            if final_bit {
                task.unsolicited_open = false;
                // Ask for the rest from where the unsolicited data ended.
                task.next_offset = task.buf.len() as u32;
            }
        } else {
            let Some(pos) = task.r2ts.iter().position(|r| r.ttt == ttt) else {
                return self.reject(&pdu.bhs, RejectReason::InvalidPduField);
            };
            let r = &mut task.r2ts[pos];
            let inside = end.is_some_and(|e| offset >= r.offset && e <= r.offset + r.len);
            if !inside || data_sn != r.data_sn {
                task.data_error = true;
            }
            r.data_sn = r.data_sn.wrapping_add(1);
            if final_bit {
                task.r2ts.remove(pos);
                sequence_done = true;
            }
        }
        match end {
            Some(e) if e <= task.expected_len && !task.too_big && !task.data_error => {
                let (o, e) = (offset as usize, e as usize);
                if task.buf.len() < e {
                    task.buf.resize(e, 0);
                }
                task.buf[o..e].copy_from_slice(&pdu.data);
            }
            Some(e) if e <= task.expected_len => {}
            _ => task.data_error = true,
        }
        if final_bit || sequence_done {
            self.advance_write(itt)?;
        }
        Ok(())
    }

    /// Run a command and send its data and status.
    #[allow(clippy::too_many_arguments)]
    fn execute(
        &mut self,
        lun_field: [u8; 8],
        itt: u32,
        cdb: &[u8],
        data_out: &[u8],
        expected_len: u32,
        direction: DataDirection,
        attribute: TaskAttribute,
        r2t_count: u32,
    ) {
        let session = self.session().clone();
        let Some((target, nexus)) = &session.scsi else {
            return;
        };
        let cmd = Command {
            lun: decode_lun(lun_field),
            cdb,
            data_out,
            expected_len,
            direction,
            attribute,
            tag: itt,
        };
        let resp = target.execute(nexus, &cmd);
        // A write error surfaces again at the next flush, which ends the connection.
        let _ = self.send_response(itt, resp, r2t_count);
    }

    /// Data-In PDUs (each at most the initiator's MaxRecvDataSegmentLength, a sequence
    /// at most MaxBurstLength), with the status folded into the last one when the
    /// command succeeded; else a SCSI Response.
    fn send_response(&mut self, itt: u32, resp: Response, r2t_count: u32) -> io::Result<()> {
        let good =
            matches!(resp.status, Status::GOOD | Status::CONDITION_MET) && resp.sense.is_empty();
        let (res_flags, res_count) = match resp.residual {
            Residual::None => (0, 0),
            Residual::Underflow(n) => (flags::UNDERFLOW, n),
            Residual::Overflow(n) => (flags::OVERFLOW, n),
        };
        let data = resp.data_in;
        let seg = self.params.send_limit.max(512) as usize;
        let burst = self.session().params.max_burst_length.max(512) as usize;
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
            self.push(b, &data[offset..end])?;
            data_sn += 1;
            offset = end;
            if fold_status {
                return Ok(());
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
            self.push(b, &[])
        } else {
            let mut seg = Vec::with_capacity(2 + resp.sense.len());
            seg.extend_from_slice(&(resp.sense.len() as u16).to_be_bytes());
            seg.extend_from_slice(&resp.sense);
            self.push(b, &seg)
        }
    }

    // ---- task management -------------------------------------------------------------

    fn task_management(&mut self, pdu: Pdu) -> io::Result<()> {
        let b = &pdu.bhs;
        let function = b.flags() & 0x7f;
        let lun = decode_lun(b.lun_field());
        let session = self.session().clone();
        let (target, nexus) = session.scsi.as_ref().expect("normal session");
        let mut cold_reset = false;
        let response = match function {
            1 => {
                let rtt = b.ref_task_tag();
                if let Some(task) = self.tasks.remove(&rtt) {
                    self.aborted.insert(rtt);
                    let _ = task;
                    target.task_management(nexus, TmfFunction::AbortTask { tag: rtt }, lun);
                    TmfResponse::FunctionComplete
                } else {
                    // Not in progress. A command that completed already (they run
                    // inline) has a CmdSN below ExpCmdSN: "task does not exist". A
                    // RefCmdSN inside the window that never arrived is taken as
                    // received and the abort succeeds (RFC 7143 §11.5.1).
                    let ref_sn = b.ref_cmd_sn();
                    let before_tmf = crate::engine::iscsi::pdu::sn_lt(ref_sn, b.cmd_sn());
                    if before_tmf && session.window().absorb_missing(ref_sn) {
                        TmfResponse::FunctionComplete
                    } else {
                        TmfResponse::TaskDoesNotExist
                    }
                }
            }
            2 | 4 | 5 => {
                self.drop_tasks(Some(lun));
                let f = match function {
                    2 => TmfFunction::AbortTaskSet,
                    4 => TmfFunction::ClearTaskSet,
                    _ => TmfFunction::LogicalUnitReset,
                };
                target.task_management(nexus, f, lun)
            }
            3 => target.task_management(nexus, TmfFunction::ClearAca, lun),
            6 => {
                self.drop_tasks(None);
                target.task_management(nexus, TmfFunction::TargetWarmReset, lun)
            }
            7 => {
                self.drop_tasks(None);
                cold_reset = true;
                target.task_management(nexus, TmfFunction::TargetColdReset, lun)
            }
            // TASK REASSIGN needs ErrorRecoveryLevel 2.
            8 => TmfResponse::TaskStillAllocated,
            _ => TmfResponse::NotSupported,
        };
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
        r.set_itt(b.itt());
        self.fill_sn(&mut r, true);
        self.push(r, &[])?;
        if cold_reset {
            // A cold reset ends every session of the target (RFC 7143 §11.5.1).
            self.flush()?;
            let name = session.target.clone();
            for s in self.engine.registry().all() {
                if s.target == name {
                    self.engine.registry().remove(&s);
                }
            }
        }
        Ok(())
    }

    fn drop_tasks(&mut self, lun: Option<u64>) {
        let gone: Vec<u32> = self
            .tasks
            .iter()
            .filter(|(_, t)| lun.is_none_or(|l| decode_lun(t.lun_field) == l))
            .map(|(itt, _)| *itt)
            .collect();
        for itt in gone {
            self.tasks.remove(&itt);
            self.aborted.insert(itt);
        }
    }

    // ---- text (SendTargets) ------------------------------------------------------------

    fn text(&mut self, pdu: Pdu) -> io::Result<()> {
        let b = &pdu.bhs;
        let itt = b.itt();
        // Continuation of a long response.
        if b.ttt() != RESERVED_TAG {
            match self.text.take() {
                Some(state) if state.ttt == b.ttt() => return self.text_reply(itt, state.rest),
                _ => return self.reject(&pdu.bhs, RejectReason::InvalidPduField),
            }
        }
        self.text = None;
        let pairs = match negotiate::parse_text(&pdu.data) {
            Ok(p) => p,
            Err(e) => {
                tracing::info!("text request: {e}");
                return self.reject(&pdu.bhs, RejectReason::ProtocolError);
            }
        };
        let session = self.session().clone();
        let mut out: Pairs = Vec::new();
        for (k, v) in &pairs {
            match k.as_str() {
                "SendTargets" => {
                    let which = match v.as_str() {
                        "All" => None,
                        // Empty: the session's own target (normal sessions only).
                        "" => match &session.target {
                            Some(t) => Some(t.as_str()),
                            None => {
                                out.push((k.clone(), "Reject".into()));
                                continue;
                            }
                        },
                        name => Some(name),
                    };
                    out.extend(self.engine.send_targets(
                        self.portal.listen,
                        self.local,
                        self.peer,
                        &session.initiator,
                        which,
                    ));
                }
                "MaxRecvDataSegmentLength" => {
                    if let Some(n) = negotiate::parse_number(v, 512, 16_777_215) {
                        self.params.send_limit = n as u32;
                    } else {
                        out.push((k.clone(), "Reject".into()));
                    }
                }
                _ => out.push((k.clone(), "NotUnderstood".into())),
            }
        }
        self.text_reply(itt, negotiate::encode_text(&out))
    }

    fn text_reply(&mut self, itt: u32, mut data: Vec<u8>) -> io::Result<()> {
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
        self.push(b, &data)
    }

    // ---- logout --------------------------------------------------------------------

    fn logout(&mut self, pdu: Pdu) -> io::Result<bool> {
        let b = &pdu.bhs;
        let reason = b.flags() & 0x7f;
        let session = self.session().clone();
        let (code, end_conn, end_session) = match reason {
            0 => (0, true, true),
            1 if b.cid() == self.cid => (0, true, false),
            1 => {
                if session.shutdown_conn(b.cid()) {
                    (0, false, false)
                } else {
                    (1, false, false)
                }
            }
            // Connection recovery needs ErrorRecoveryLevel 2.
            2 => (2, false, false),
            _ => {
                self.reject(&pdu.bhs, RejectReason::ProtocolError)?;
                return Ok(true);
            }
        };
        tracing::info!(reason, code, tsih = session.tsih, "logout");
        let mut r = Bhs::new(Opcode::LogoutResponse);
        r.set_flags(flags::FINAL);
        r.set_byte2(code);
        r.set_itt(b.itt());
        self.fill_sn(&mut r, true);
        r.set_time2wait_retain(0, 0);
        self.push(r, &[])?;
        self.flush()?;
        if end_session {
            self.engine.registry().remove(&session);
        }
        Ok(!end_conn)
    }

    // ---- plumbing --------------------------------------------------------------------

    fn reject(&mut self, rejected: &Bhs, reason: RejectReason) -> io::Result<()> {
        let mut b = Bhs::new(Opcode::Reject);
        b.set_flags(flags::FINAL);
        b.set_byte2(reason as u8);
        b.set_itt(RESERVED_TAG);
        if self.session.is_some() {
            self.fill_sn(&mut b, true);
        }
        self.push(b, &rejected.0)
    }

    /// StatSN, ExpCmdSN, MaxCmdSN. `status`: this PDU carries a status and so
    /// consumes a StatSN.
    fn fill_sn(&mut self, b: &mut Bhs, status: bool) {
        b.set_stat_sn(self.stat_sn);
        if status {
            self.stat_sn = self.stat_sn.wrapping_add(1);
        }
        let w = self.session().window();
        b.set_exp_cmd_sn(w.exp_cmd_sn());
        b.set_max_cmd_sn(w.max_cmd_sn());
    }

    fn new_ttt(&mut self) -> u32 {
        next_tag(&mut self.next_ttt)
    }

    fn push(&mut self, bhs: Bhs, data: &[u8]) -> io::Result<()> {
        self.writer.push(&mut self.stream, bhs, data)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush(&mut self.stream)
    }

    fn close(&mut self) {
        let _ = self.flush();
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(s) = self.session.take() {
            self.engine
                .registry()
                .connection_closed(&s, self.cid, self.peer);
        }
    }
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

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}
