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
//! Threading: one thread per connection reads and runs the protocol core; the SCSI
//! commands it makes ready ([`Job`]s) run on their LU's I/O workers
//! (`lu::IoWorkers`) when the LU may wait for a device, so a connection's queue of
//! commands reaches the storage at the initiator's queue depth; commands of an LU in
//! memory (ramdisk, tmpfs), a read whose data the page cache holds
//! ([`Job::execute_if_cached`]), and a command that is the connection's only one with
//! no more input waiting, run on the reading thread itself, where a hand-off costs more
//! than it gains. The core and the socket's write side sit behind one mutex
//! (`ConnShared`): the reading thread takes it per PDU, a worker takes it to complete
//! its command and to start the jobs the task set releases. Responses are framed into
//! one buffer: the reading thread writes it when no more input is waiting, a worker as
//! soon as its command completes; the write itself happens with the mutex released
//! (`ConnShared::flush`), one thread at a time, and responses completed meanwhile go
//! out with the writer's next `write` (so neither the reading thread nor the workers
//! wait on the socket, and a burst of completions costs one system call). Before the
//! connection ends, the commands it read finish and their responses go out (shutdown
//! depends on it: nothing acknowledged is lost).

use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::socket::{recv, MsgFlags};

use crate::engine::iscsi::fullfeature::{Discovery, FullFeature, Input, Job, Next, Transmit};
use crate::engine::iscsi::login::{Access, Login, LoginDone, LoginStatus, Step};
use crate::engine::iscsi::negotiate::Pairs;
use crate::engine::iscsi::pdu::{read_pdu, Bhs, Digests, Opcode, PduWriter, ReadError};
use crate::engine::iscsi::session::{ConnEntry, JoinError, Session, SessionKind};
use crate::engine::iscsi::Portal;
use crate::engine::scsi;

/// Data segments during login are bounded by the default MaxRecvDataSegmentLength.
const LOGIN_MAX_DATA: usize = 8192;
/// A login must finish within this time (LIO's). The server's gate enforces it from
/// the accept on, whatever the peer sends; this bound is the connection's own.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How often an idle connection wakes up to check for shutdown and keep-alive.
const POLL: Duration = Duration::from_secs(1);
/// How long a peer may pause in the middle of a PDU before the connection is given up
/// (as long as a login may take: a pause that long is a dead peer, not a busy one).
const PDU_STALL_LIMIT: Duration = Duration::from_secs(15);
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
/// connection must not affect another. `login_slot` is held until the login ends
/// (the server counts logins in progress by it).
pub fn serve_connection(
    engine: Arc<dyn Engine>,
    stream: TcpStream,
    portal: Portal,
    login_slot: impl Send,
) {
    let peer = match stream.peer_addr() {
        Ok(p) => p,
        Err(_) => return,
    };
    let local = stream.local_addr().unwrap_or(portal.listen);
    let _ = stream.set_nodelay(true);
    // A peer that stops reading must not hold the thread writing to it (an LU's I/O
    // worker or its syncer thread, shared with other sessions) for longer than it may
    // pause inside a PDU: the write fails and the connection ends.
    let _ = stream.set_write_timeout(Some(PDU_STALL_LIMIT));
    let span = tracing::info_span!("conn", %peer);
    let _enter = span.enter();
    let reader = match stream.try_clone() {
        Ok(r) => BufReader::with_capacity(READ_BUFFER, PatientStream::new(r)),
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
            sending: false,
        },
        reader,
        peer,
        local,
        portal,
        recv_limit: 0,
        bound: None,
        login_target: None,
    };
    let logged_in = conn.login();
    drop(login_slot);
    match logged_in {
        Ok(Some(core)) => {
            if let Err(e) = conn.full_feature(core) {
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
    reader: BufReader<PatientStream>,
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

    /// Read PDUs into the core and write what it sends until the connection ends; then
    /// wait for the commands already read to finish.
    fn full_feature(&mut self, core: FullFeature) -> io::Result<()> {
        self.wire.stream.set_read_timeout(Some(POLL))?;
        let digests = self.wire.writer.digests;
        let limit = self.recv_limit as usize;
        // The write side moves behind the shared lock; `self.wire` keeps a handle on the
        // same socket for waiting and closing.
        let stream = self.wire.stream.try_clone()?;
        let wire = std::mem::replace(
            &mut self.wire,
            Wire {
                stream,
                writer: PduWriter::new(),
                error: None,
                sending: false,
            },
        );
        let out = wire.stream.try_clone()?;
        let shared = Arc::new(ConnShared {
            halves: Mutex::new(Halves { core, wire }),
            idle: Condvar::new(),
            closing: AtomicBool::new(false),
            out,
        });
        let result = self.read_loop(&shared, digests, limit);
        shared.closing.store(true, Ordering::SeqCst);
        let mut h = shared.lock();
        while h.core.in_flight() > 0 || h.wire.sending {
            h = shared
                .idle
                .wait_timeout(h, POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let _ = h.wire.flush();
        result
    }

    fn read_loop(
        &mut self,
        shared: &Arc<ConnShared>,
        digests: Digests,
        limit: usize,
    ) -> io::Result<()> {
        let mut last_input = Instant::now();
        loop {
            // Write responses once the input that produced them is drained.
            if self.reader.buffer().is_empty() {
                shared.flush()?;
            }
            if self.reader.buffer().is_empty() && !self.wait_for_input(shared, last_input)? {
                return Ok(());
            }
            // Once a PDU has begun, the poll timeout no longer means "idle": a peer on a
            // loaded host may pause inside a large data segment for seconds.
            self.reader.get_mut().patient = true;
            let read = read_pdu(&mut self.reader, digests, limit);
            self.reader.get_mut().patient = false;
            let input = match read {
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
                    tracing::info!(
                        "peer stalled for {}s in the middle of a PDU: closing",
                        PDU_STALL_LIMIT.as_secs()
                    );
                    return Ok(());
                }
                Err(ReadError::Io(e)) => return Err(e),
            };
            let (go_on, jobs, alone) = {
                let mut h = shared.lock();
                let Halves { core, wire } = &mut *h;
                let next = core.handle(input, wire);
                let jobs = core.take_ready();
                // The only command in flight and nothing more to read: the initiator
                // waits for this one (queue depth 1), so a hand-off would only add a
                // thread wake-up to its latency.
                let alone =
                    jobs.len() == 1 && core.in_flight() == 1 && self.reader.buffer().is_empty();
                (self.follow(next, &mut h), jobs, alone)
            };
            dispatch(shared, jobs, Caller::Reader { alone });
            if !go_on? {
                return Ok(());
            }
        }
    }

    /// Do what the core asked beyond sending. `Ok(false)`: the connection ends.
    fn follow(&self, next: Next, h: &mut Halves) -> io::Result<bool> {
        h.wire.take_error()?;
        match next {
            Next::Continue => return Ok(true),
            Next::Flush => {}
            Next::Close => {
                h.wire.flush()?;
                return Ok(false);
            }
            Next::EndSession => {
                h.wire.flush()?;
                self.engine.registry().remove(h.core.session());
                return Ok(false);
            }
            Next::EndTargetSessions(target) => {
                h.wire.flush()?;
                let registry = self.engine.registry();
                for s in registry.all() {
                    if s.target_name() == Some(target.as_str()) {
                        registry.remove(&s);
                    }
                }
                return Ok(true);
            }
            Next::ShutdownConnection(cid) => {
                h.core.session().shutdown_conn(cid);
            }
        }
        h.wire.flush()?;
        Ok(true)
    }

    /// Wait until input is available; on a quiet connection let the core ping.
    /// `Ok(false)`: stop (engine stopping, or the peer stopped answering).
    fn wait_for_input(&mut self, shared: &ConnShared, last_input: Instant) -> io::Result<bool> {
        // With commands on the I/O workers the next input is mostly their initiator's
        // answer to a response not yet sent: spinning would only take the CPU they need
        // (measured: 25-30% fewer IOPS on a disk at QD32 with the spin).
        if shared.lock().core.in_flight() == 0 {
            self.spin_for_input();
        }
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
                    let mut h = shared.lock();
                    let Halves { core, wire } = &mut *h;
                    let next = core.handle(idle, wire);
                    if !self.follow(next, &mut h)? {
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

/// The protocol core of a connection and the write side of its socket, shared by the
/// thread reading the socket and the LU workers completing its commands.
struct ConnShared {
    halves: Mutex<Halves>,
    /// Signalled when the last running command of the connection completes, and when
    /// a thread stops writing taken bytes ([`Wire::sending`]).
    idle: Condvar,
    /// The socket, for writing taken bytes outside the lock.
    out: TcpStream,
    /// The reading thread has stopped and waits on `idle`: only then is it signalled
    /// (a notify is a system call, and every command would pay it).
    closing: AtomicBool,
}

struct Halves {
    core: FullFeature,
    wire: Wire,
}

impl ConnShared {
    fn lock(&self) -> MutexGuard<'_, Halves> {
        self.halves.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Call with the lock held, after a change the closing reading thread waits for.
    fn wake_closing(&self) {
        if self.closing.load(Ordering::SeqCst) {
            self.idle.notify_all();
        }
    }

    /// Write the buffered PDUs with the lock released, so that the reading thread and
    /// the workers frame and complete commands while the socket takes the bytes. If
    /// another thread is writing, it sends these too (it looks again before it stops):
    /// one writer at a time keeps the bytes in order, and responses completed during a
    /// write leave in one `write` instead of one each.
    fn flush(&self) -> io::Result<()> {
        let mut h = self.lock();
        if h.wire.sending {
            return Ok(());
        }
        loop {
            h.wire.take_error()?;
            let Some(bytes) = h.wire.writer.take_pending() else {
                return Ok(());
            };
            h.wire.sending = true;
            drop(h);
            let written = (&self.out).write_all(&bytes);
            h = self.lock();
            h.wire.sending = false;
            h.wire.writer.give_back(bytes);
            self.wake_closing();
            if let Err(e) = written {
                // Kept for the reading thread too: later responses have nowhere to go.
                h.wire.error = Some(io::Error::new(e.kind(), e.to_string()));
                return Err(e);
            }
        }
    }
}

/// Which thread a call to [`dispatch`] comes from: it decides who writes the responses
/// of the jobs run on the spot.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// The connection's reading thread: it writes buffered responses itself once its
    /// input is drained (one write for a batch of commands). `alone`: the one job is the
    /// connection's only command and no more input is waiting.
    Reader { alone: bool },
    /// An I/O worker: nobody else may be awake to write, so it writes at once.
    Worker,
}

/// Start jobs. A job whose LU may wait for a device goes to that LU's I/O workers, so
/// the device sees the initiator's queue depth; a job that only copies memory (a
/// ramdisk, a file on tmpfs) or needs no LU (an unmapped LUN), and the reading thread's
/// only command in flight, run here and now: handing them to another thread would cost
/// more than it gains (measured in docs/engine.md).
fn dispatch(shared: &Arc<ConnShared>, jobs: Vec<Job>, caller: Caller) {
    let mut jobs = std::collections::VecDeque::from(jobs);
    let mut ran_here = false;
    let alone = caller == Caller::Reader { alone: true };
    while let Some(job) = jobs.pop_front() {
        match job.logical_unit() {
            Some(lu) if !lu.in_memory() && !alone => {
                if caller != Caller::Worker {
                    if let Some(resp) = job.execute_if_cached() {
                        jobs.extend(finish(shared, &job, resp));
                        ran_here = true;
                        continue;
                    }
                }
                let shared = shared.clone();
                lu.workers().submit(move || {
                    // A durable write does not hold its worker through the sync: the
                    // file's syncer thread sends the response once the write is durable.
                    let ran = job.execute_deferring();
                    let Some(later) = ran.durable_later else {
                        respond(&shared, &job, ran.response);
                        return;
                    };
                    later.then(move |durable| {
                        let response = match durable {
                            Ok(()) => ran.response,
                            Err(e) => {
                                tracing::debug!("write not durable: {e}");
                                job.durability_failed()
                            }
                        };
                        job.count(&response, ran.started);
                        respond(&shared, &job, response);
                    });
                });
            }
            _ => {
                jobs.extend(complete(shared, job));
                ran_here = true;
            }
        }
    }
    if ran_here && caller == Caller::Worker {
        if let Err(e) = shared.flush() {
            tracing::debug!("writing a response: {e}");
        }
    }
}

/// Off the reading thread: send the response of a job that ran, then start the jobs
/// its completion releases.
fn respond(shared: &Arc<ConnShared>, job: &Job, response: scsi::Response) {
    let released = finish(shared, job, response);
    if let Err(e) = shared.flush() {
        // The reading thread sees the socket fail too and ends the connection.
        tracing::debug!("writing a response: {e}");
    }
    dispatch(shared, released, Caller::Worker);
}

/// Run a job and queue its response (the caller flushes); returns the jobs its
/// completion lets start.
fn complete(shared: &ConnShared, job: Job) -> Vec<Job> {
    let resp = job.execute();
    finish(shared, &job, resp)
}

/// Queue the response of a job that ran; returns the jobs its completion lets start.
fn finish(shared: &ConnShared, job: &Job, resp: scsi::Response) -> Vec<Job> {
    let mut h = shared.lock();
    let Halves { core, wire } = &mut *h;
    // Only Continue or Flush come back from a completion; the response goes out with
    // the next flush either way (the peer may be waiting for nothing else).
    let _ = core.complete(job.itt(), resp, wire);
    let released = core.take_ready();
    if core.in_flight() == 0 {
        shared.wake_closing();
    }
    released
}

/// The socket side of [`Transmit`]: frames PDUs into the write buffer (large data
/// segments go straight out). The first write error is kept and ends the connection
/// once the core returns; later PDUs are dropped, as the connection is lost anyway.
struct Wire {
    stream: TcpStream,
    writer: PduWriter,
    error: Option<io::Error>,
    /// A thread writes bytes taken from `writer` with the connection's lock released
    /// ([`ConnShared::flush`]): nothing else may write to the socket until it is done.
    sending: bool,
}

impl Wire {
    fn push(&mut self, bhs: Bhs, data: &[u8]) -> io::Result<()> {
        if self.sending {
            self.writer.push_buffered(bhs, data);
            return Ok(());
        }
        self.writer.push(&mut self.stream, bhs, data)
    }

    /// Write what is buffered, unless a thread is writing already: it sends these
    /// bytes after its own (see [`ConnShared::flush`]).
    fn flush(&mut self) -> io::Result<()> {
        self.take_error()?;
        if self.sending {
            return Ok(());
        }
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

/// The reading thread's buffer: enough for a batch of small PDUs (16 commands with 4 KiB
/// of immediate data); a data segment larger than it is read straight into its own
/// buffer. Every byte of it is resident (std zeroes a buffer over a reader of its own
/// type such as [`PatientStream`] before the first read), so it is kept small: at
/// 256 KiB, 64 idle sessions took 26 MiB.
const READ_BUFFER: usize = 64 * 1024;

/// The socket as the reading thread sees it. Its read timeout is the idle poll
/// ([`POLL`]); while `patient` (a PDU is being read) a timeout is retried until
/// [`PDU_STALL_LIMIT`] has passed without a byte, so a slow peer is not cut mid-PDU.
struct PatientStream {
    stream: TcpStream,
    patient: bool,
}

impl PatientStream {
    fn new(stream: TcpStream) -> PatientStream {
        PatientStream {
            stream,
            patient: false,
        }
    }
}

impl std::io::Read for PatientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut waited_since: Option<Instant> = None;
        loop {
            match self.stream.read(buf) {
                Err(e) if self.patient && is_timeout(&e) => {
                    let since = *waited_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= PDU_STALL_LIMIT {
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A peer that pauses halfway through a PDU for longer than the idle poll: the
    /// patient reader waits for the rest, the impatient one (idle waiting) times out.
    #[test]
    fn a_pause_inside_a_pdu_is_waited_out_only_while_patient() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(&[1; 24]).unwrap();
            std::thread::sleep(Duration::from_millis(400));
            s.write_all(&[2; 24]).unwrap();
            std::thread::sleep(Duration::from_millis(400));
            s.write_all(&[3; 48]).unwrap();
            std::thread::sleep(Duration::from_millis(400));
        });
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut reader = PatientStream::new(stream);

        reader.patient = true;
        let mut bhs = [0u8; 48];
        reader
            .read_exact(&mut bhs)
            .expect("patient read of a paused BHS");
        assert_eq!((bhs[0], bhs[47]), (1, 2));

        reader.patient = false;
        let mut rest = [0u8; 48];
        let err = reader.read_exact(&mut rest).expect_err("impatient read");
        assert!(is_timeout(&err), "{err}");
        peer.join().unwrap();
    }
}
