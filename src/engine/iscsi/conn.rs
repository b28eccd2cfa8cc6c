//! One iSCSI connection on its socket: the login phase, then the socket loop of the
//! full feature phase.
//!
//! Owns: the socket (buffered reads, PDU framing and digests on the way in and out,
//! batching responses into one write per drained input, the ~50 µs look for the next
//! PDU before sleeping), timeouts (login, a PDU stalled halfway, the keep-alive poll),
//! binding a completed login to a new or existing session, and what the core asks
//! of the outside world (flushing, closing, ending sessions in the registry).
//! Does not: speak the full feature phase protocol. Every PDU (and every digest or
//! size error) goes to [`FullFeature`] (`fullfeature.rs`), which answers through
//! [`Transmit`] and says what to do next; login requests go to [`Login`].
//!
//! Threading: one thread per connection executes its commands inline (the storage
//! layer may block). Responses are framed into a buffer that is written when no more
//! input is waiting, so a pipelined queue of commands costs one `write` per batch.

use std::io::{self, BufRead, BufReader, ErrorKind};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::socket::{recv, MsgFlags};

use crate::engine::iscsi::fullfeature::{Discovery, FullFeature, Input, Next, Transmit};
use crate::engine::iscsi::login::{Access, Login, LoginDone, LoginStatus, Step};
use crate::engine::iscsi::negotiate::Pairs;
use crate::engine::iscsi::pdu::{read_pdu, Bhs, Digests, Opcode, PduWriter, ReadError};
use crate::engine::iscsi::session::{ConnEntry, JoinError, Session, SessionKind};
use crate::engine::iscsi::Portal;
use crate::engine::scsi;

/// Data segments during login are bounded by the default MaxRecvDataSegmentLength.
const LOGIN_MAX_DATA: usize = 8192;
/// A login must finish within this time.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an idle connection wakes up to check for shutdown and keep-alive.
const POLL: Duration = Duration::from_secs(1);
/// How long a connection looks for its next PDU before sleeping (see `spin_for_input`).
static SPIN_WINDOW: std::sync::LazyLock<Duration> = std::sync::LazyLock::new(|| {
    let us = std::env::var("ISCTL_SPIN_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    Duration::from_micros(us)
});

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
    /// Where logins and commands are counted.
    fn stats(&self) -> &crate::engine::stats::EngineStats;
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
        wire: Wire {
            stream,
            writer: PduWriter::new(),
            error: None,
        },
        reader,
        peer,
        local,
        portal,
        recv_limit: 0,
        bound: None,
        login_target: None,
    };
    match conn.login() {
        Ok(Some(mut core)) => {
            if let Err(e) = conn.full_feature(&mut core) {
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
        Ok(None) => {}
        Err(e) => tracing::info!("login ended: {e}"),
    }
    conn.close();
}

struct Conn {
    engine: Arc<dyn Engine>,
    wire: Wire,
    reader: BufReader<TcpStream>,
    peer: SocketAddr,
    local: SocketAddr,
    portal: Portal,
    /// This side's MaxRecvDataSegmentLength, once negotiated.
    recv_limit: u32,
    /// The session and CID once bound: the registry learns when the connection ends.
    bound: Option<(Arc<Session>, u16)>,
    /// The target the login named, for counting its outcome.
    login_target: Option<String>,
}

impl Conn {
    // ---- login -------------------------------------------------------------------

    /// The login phase. `Ok(Some)`: in full feature phase now.
    fn login(&mut self) -> io::Result<Option<FullFeature>> {
        let mut login = Login::new();
        let deadline = Instant::now() + LOGIN_TIMEOUT;
        self.wire.stream.set_read_timeout(Some(LOGIN_TIMEOUT))?;
        loop {
            if Instant::now() > deadline {
                tracing::info!("login timed out");
                return Ok(None);
            }
            let pdu = match read_pdu(&mut self.reader, Digests::default(), LOGIN_MAX_DATA) {
                Ok(p) => p,
                Err(ReadError::Closed) => return Ok(None),
                Err(ReadError::TooLong { bhs, len, .. }) => {
                    tracing::info!("login PDU with a {len}-byte data segment: refused");
                    let mut r = Bhs::new(Opcode::LoginResponse);
                    r.set_itt(bhs.itt());
                    r.set_login_status(LoginStatus::INITIATOR_ERROR.0);
                    self.wire.push(r, &[])?;
                    self.wire.flush()?;
                    return Ok(None);
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
                    self.wire.push(bhs, &data)?;
                    self.wire.flush()?;
                }
                Step::Fail(bhs, reason) => {
                    self.engine
                        .stats()
                        .login(login.target(), bhs.login_status());
                    tracing::info!(
                        status = format!("{:#06x}", bhs.login_status()),
                        "login refused: {reason}"
                    );
                    self.wire.push(bhs, &[])?;
                    self.wire.flush()?;
                    return Ok(None);
                }
                Step::Complete(done) => {
                    self.login_target = done.target.clone();
                    return self.bind(*done);
                }
            }
        }
    }

    /// Attach the connection to a new or existing session and send the final response.
    fn bind(&mut self, done: LoginDone) -> io::Result<Option<FullFeature>> {
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
            stream: self.wire.stream.try_clone()?,
        };
        let registry = self.engine.registry();
        let session = if tsih == 0 {
            let kind = match &target {
                Some(t) => match self.engine.scsi_target(t) {
                    Some(scsi) => SessionKind::Normal {
                        target: t.clone(),
                        scsi,
                        nexus: scsi::Nexus {
                            id: registry.next_nexus_id(),
                            initiator_name: initiator.clone(),
                            isid,
                            target_name: t.clone(),
                            tpgt: portal_group_tag,
                        },
                    },
                    None => {
                        return self.fail_bind(
                            response,
                            LoginStatus::NOT_FOUND,
                            "target removed during login",
                        )
                    }
                },
                None => SessionKind::Discovery,
            };
            registry.create(|tsih| Session {
                tsih,
                initiator: initiator.clone(),
                initiator_alias,
                isid,
                kind,
                portal_group_tag,
                params: negotiation.session,
                window: std::sync::Mutex::new(crate::engine::iscsi::session::CmdWindow::new(
                    cmd_sn,
                )),
                conns: std::sync::Mutex::new(vec![entry]),
                started: std::time::SystemTime::now(),
            })
        } else {
            match registry.get(tsih) {
                Some(s) if s.target_name() != target.as_deref() => {
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
        let params = negotiation.conn;
        self.recv_limit = params.recv_limit;
        tracing::info!(
            tsih = session.tsih,
            cid,
            initiator = %session.initiator,
            target = session.target_name().unwrap_or("(discovery)"),
            header_digest = params.header_digest,
            data_digest = params.data_digest,
            "logged in"
        );
        self.bound = Some((session.clone(), cid));
        self.wire.push(response, &response_data)?;
        self.wire.flush()?;
        // Digests start with the first PDU after the final login response.
        self.wire.writer.digests = Digests {
            header: params.header_digest,
            data: params.data_digest,
        };
        let discovery = EngineDiscovery {
            engine: self.engine.clone(),
            listen: self.portal.listen,
            local: self.local,
            peer: self.peer,
        };
        let stats = self.engine.stats();
        stats.login(session.target_name(), 0);
        let recorder = session
            .target_name()
            .and_then(|t| stats.recorder(t, &session.initiator));
        let mut core = FullFeature::new(
            session,
            cid,
            params,
            stat_sn.wrapping_add(1),
            Box::new(discovery),
        );
        core.record_with(recorder);
        Ok(Some(core))
    }

    fn fail_bind(
        &mut self,
        mut response: Bhs,
        status: LoginStatus,
        why: &str,
    ) -> io::Result<Option<FullFeature>> {
        tracing::info!("login refused: {why}");
        self.engine
            .stats()
            .login(self.login_target.as_deref(), status.0);
        response.set_flags(0);
        response.set_login_status(status.0);
        self.wire.push(response, &[])?;
        self.wire.flush()?;
        Ok(None)
    }

    // ---- full feature phase: the socket loop ------------------------------------------

    /// Read PDUs into the core and write what it sends until the connection ends.
    fn full_feature(&mut self, core: &mut FullFeature) -> io::Result<()> {
        self.wire.stream.set_read_timeout(Some(POLL))?;
        let digests = self.wire.writer.digests;
        let limit = self.recv_limit as usize;
        let mut last_input = Instant::now();
        loop {
            // Write responses once the input that produced them is drained.
            if self.wire.writer.pending() && self.reader.buffer().is_empty() {
                self.wire.flush()?;
            }
            if self.reader.buffer().is_empty() && !self.wait_for_input(core, last_input)? {
                return Ok(());
            }
            let input = match read_pdu(&mut self.reader, digests, limit) {
                Ok(p) => {
                    last_input = Instant::now();
                    Input::Pdu(p)
                }
                Err(ReadError::Closed) => return Ok(()),
                Err(ReadError::HeaderDigest) => Input::HeaderDigestError,
                Err(ReadError::DataDigest { bhs }) => Input::DataDigestError(bhs),
                Err(ReadError::TooLong { bhs, len, limit }) => {
                    Input::SegmentTooLong { bhs, len, limit }
                }
                Err(ReadError::Io(e)) if is_timeout(&e) => {
                    tracing::info!("peer stalled in the middle of a PDU: closing");
                    return Ok(());
                }
                Err(ReadError::Io(e)) => return Err(e),
            };
            let next = core.handle(input, &mut self.wire);
            if !self.follow(next, core)? {
                return Ok(());
            }
        }
    }

    /// Do what the core asked beyond sending. `Ok(false)`: the connection ends.
    fn follow(&mut self, next: Next, core: &FullFeature) -> io::Result<bool> {
        self.wire.take_error()?;
        match next {
            Next::Continue => return Ok(true),
            Next::Flush => {}
            Next::Close => {
                self.wire.flush()?;
                return Ok(false);
            }
            Next::EndSession => {
                self.wire.flush()?;
                self.engine.registry().remove(core.session());
                return Ok(false);
            }
            Next::EndTargetSessions(target) => {
                self.wire.flush()?;
                let registry = self.engine.registry();
                for s in registry.all() {
                    if s.target_name() == Some(target.as_str()) {
                        registry.remove(&s);
                    }
                }
                return Ok(true);
            }
            Next::ShutdownConnection(cid) => {
                core.session().shutdown_conn(cid);
            }
        }
        self.wire.flush()?;
        Ok(true)
    }

    /// Wait until input is available; on a quiet connection let the core ping.
    /// `Ok(false)`: stop (engine stopping, or the peer stopped answering).
    fn wait_for_input(&mut self, core: &mut FullFeature, last_input: Instant) -> io::Result<bool> {
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
                    let now = Instant::now();
                    let idle = Input::Idle {
                        now,
                        quiet_for: now.saturating_duration_since(last_input),
                    };
                    let next = core.handle(idle, &mut self.wire);
                    if !self.follow(next, core)? {
                        return Ok(false);
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
        // MSG_DONTWAIT rather than `TcpStream::peek` on a non-blocking socket: the
        // reader shares the file description, so toggling O_NONBLOCK would cost two
        // more syscalls per wait and race with its blocking read.
        let fd = self.wire.stream.as_raw_fd();
        let peek = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
        while start.elapsed() < window {
            if recv(fd, &mut probe, peek).is_ok() {
                return; // data (or EOF) is there: the read will not block
            }
            std::thread::yield_now();
        }
    }

    fn close(&mut self) {
        let _ = self.wire.flush();
        let _ = self.wire.stream.shutdown(Shutdown::Both);
        if let Some((s, cid)) = self.bound.take() {
            self.engine.registry().connection_closed(&s, cid, self.peer);
        }
    }
}

/// The socket side of [`Transmit`]: frames PDUs into the write buffer (large data
/// segments go straight out). The first write error is kept and ends the connection
/// once the core returns; later PDUs are dropped, as the connection is lost anyway.
struct Wire {
    stream: TcpStream,
    writer: PduWriter,
    error: Option<io::Error>,
}

impl Wire {
    fn push(&mut self, bhs: Bhs, data: &[u8]) -> io::Result<()> {
        self.writer.push(&mut self.stream, bhs, data)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.take_error()?;
        self.writer.flush(&mut self.stream)
    }

    fn take_error(&mut self) -> io::Result<()> {
        self.error.take().map_or(Ok(()), Err)
    }
}

impl Transmit for Wire {
    fn send(&mut self, bhs: Bhs, data: &[u8]) {
        if self.error.is_none() {
            if let Err(e) = self.push(bhs, data) {
                self.error = Some(e);
            }
        }
    }
}

/// SendTargets through the engine, as seen from this connection's portal.
struct EngineDiscovery {
    engine: Arc<dyn Engine>,
    listen: SocketAddr,
    local: SocketAddr,
    peer: SocketAddr,
}

impl Discovery for EngineDiscovery {
    fn send_targets(&self, initiator: &str, which: Option<&str>) -> Pairs {
        self.engine
            .send_targets(self.listen, self.local, self.peer, initiator, which)
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}
