//! The gate between accept and login: holds accepted connections without a thread
//! until they send something, starts their logins as slots free up, and closes what
//! the admission policy (`admission.rs`) says to close.
//!
//! Owns: the pre-login sockets, one thread that polls the idle ones and enforces the
//! login timeout (a connection in login past its time has its socket shut down, which
//! ends the login thread's read whatever the peer does), and the count of logins in
//! progress ([`LoginSlot`]).
//! Does not: read or write a byte of iSCSI, or decide anything (the policy does).
//!
//! Bounds whatever peers do: descriptors ≤ `max_pending` (+ one clone per login in
//! progress), threads ≤ `max_logins` for logins (+ one per logged-in connection,
//! which needed an admitted initiator), memory a few hundred bytes per held socket.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, MsgFlags};

use super::admission::{Admission, Counters, Id, Limits, Stage, Verdict};
use super::stop::STOP_POLL;

/// How often the gate logs its counters while they change.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Starts the login of a connection (on a thread of its own); the slot is held until
/// the login ends and must be dropped then.
pub type StartLogin = dyn Fn(TcpStream, SocketAddr, LoginSlot) + Send + Sync;

/// The pre-login connections of the engine.
pub struct Gate {
    state: Mutex<State>,
    /// Wakes the gate thread (a new connection to watch, a slot freed, stop).
    wake_tx: UnixStream,
    wake_rx: UnixStream,
    stop: AtomicBool,
}

struct State {
    policy: Admission,
    /// Idle and waiting connections, with the listening address they came in on.
    /// `Arc`: the gate thread polls a connection without holding the lock, and a
    /// connection closed meanwhile is closed when the poll lets go of it.
    held: HashMap<Id, (Arc<TcpStream>, SocketAddr)>,
    /// A handle on each connection in login, to cut it at the timeout.
    in_login: HashMap<Id, Option<TcpStream>>,
}

/// A login in progress; dropping it frees the slot.
pub struct LoginSlot {
    gate: Arc<Gate>,
    id: Id,
}

impl Drop for LoginSlot {
    fn drop(&mut self) {
        {
            let mut s = self.gate.lock();
            s.policy.on_login_end(self.id);
            s.in_login.remove(&self.id);
        }
        self.gate.wake();
    }
}

impl Gate {
    pub fn new(limits: Limits) -> io::Result<Arc<Gate>> {
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        Ok(Arc::new(Gate {
            state: Mutex::new(State {
                policy: Admission::new(limits),
                held: HashMap::new(),
                in_login: HashMap::new(),
            }),
            wake_tx,
            wake_rx,
            stop: AtomicBool::new(false),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake(&self) {
        // A full pipe already holds a wake-up.
        let _ = (&self.wake_tx).write(&[1]);
    }

    pub fn limits(&self) -> Limits {
        self.lock().policy.limits()
    }

    /// (held before login, in login, counters).
    pub fn figures(&self) -> (usize, usize, Counters) {
        let s = self.lock();
        (s.policy.pending(), s.policy.in_login(), s.policy.counters())
    }

    /// A connection was accepted on `listen` from `peer`: hold it, or close it (or an
    /// older one) as the policy says.
    pub fn admit(&self, stream: TcpStream, peer: SocketAddr, listen: SocketAddr) {
        let evicted: Vec<Arc<TcpStream>> = {
            let mut s = self.lock();
            match s.policy.on_accept(canonical(peer), Instant::now()) {
                Verdict::Admit { id, evict } => {
                    s.held.insert(id, (Arc::new(stream), listen));
                    evict
                        .iter()
                        .filter_map(|v| s.held.remove(v).map(|(c, _)| c))
                        .collect()
                }
                Verdict::Refuse(why) => {
                    tracing::debug!(%peer, "connection refused before login: {why}");
                    return; // `stream` is dropped: closed
                }
            }
        };
        for c in evicted {
            // Closed here unless the gate thread is polling it (then when it lets go).
            let _ = c.shutdown(Shutdown::Both);
        }
        self.wake();
    }

    /// Run the gate until [`Gate::stop`]: watch idle connections, start logins, time
    /// out what is due.
    pub fn run(self: Arc<Self>, start: Box<StartLogin>) {
        let mut reported = Counters::default();
        let mut last_report = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            let (watch, timeout) = {
                let s = self.lock();
                let watch: Vec<(Id, Arc<TcpStream>)> = s
                    .policy
                    .idle()
                    .filter_map(|id| s.held.get(&id).map(|(c, _)| (id, c.clone())))
                    .collect();
                let now = Instant::now();
                let timeout = s.policy.next_deadline().map_or(STOP_POLL, |d| {
                    d.saturating_duration_since(now).min(STOP_POLL)
                });
                (watch, timeout)
            };
            let readable = self.wait(&watch, timeout);
            drop(watch);
            let starts = self.step(&readable);
            for (id, stream, listen) in starts {
                start(
                    stream,
                    listen,
                    LoginSlot {
                        gate: self.clone(),
                        id,
                    },
                );
            }
            if last_report.elapsed() >= REPORT_EVERY {
                let (held, in_login, c) = self.figures();
                if c != reported {
                    tracing::info!(
                        held,
                        in_login,
                        closed_to_make_room = c.evicted,
                        refused = c.refused,
                        timed_out = c.timed_out,
                        "connections before login"
                    );
                    reported = c;
                }
                last_report = Instant::now();
            }
        }
        let mut s = self.lock();
        s.held.clear();
        for c in s.in_login.values().flatten() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Poll the wake-up pipe and the idle connections; the ids that have input (or
    /// were closed by their peer).
    fn wait(&self, watch: &[(Id, Arc<TcpStream>)], timeout: Duration) -> Vec<Id> {
        let mut fds = Vec::with_capacity(watch.len() + 1);
        fds.push(PollFd::new(self.wake_rx.as_fd(), PollFlags::POLLIN));
        fds.extend(
            watch
                .iter()
                .map(|(_, c)| PollFd::new(c.as_fd(), PollFlags::POLLIN)),
        );
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::ZERO);
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            // Not expected with valid descriptors; do not spin on it.
            Err(e) => {
                tracing::warn!("poll of connections before login failed: {e}");
                std::thread::sleep(STOP_POLL);
                return Vec::new();
            }
        }
        let any = PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR;
        if fds[0].revents().is_some_and(|r| r.intersects(any)) {
            let mut sink = [0u8; 64];
            while matches!((&self.wake_rx).read(&mut sink), Ok(n) if n > 0) {}
        }
        fds[1..]
            .iter()
            .zip(watch)
            .filter(|(fd, _)| fd.revents().is_some_and(|r| r.intersects(any)))
            .map(|(_, (id, _))| *id)
            .collect()
    }

    /// Apply what the poll found and the clock says; the logins to start.
    fn step(&self, readable: &[Id]) -> Vec<(Id, TcpStream, SocketAddr)> {
        let mut s = self.lock();
        let s = &mut *s;
        for id in readable {
            let Some((c, _)) = s.held.get(id) else {
                continue;
            };
            let mut probe = [0u8; 1];
            match recv(
                c.as_raw_fd(),
                &mut probe,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(n) if n > 0 => s.policy.on_readable(*id),
                Err(Errno::EAGAIN) => {}
                // Closed by the peer (0) or broken: nothing to log in.
                _ => {
                    s.policy.forget(*id);
                    s.held.remove(id);
                }
            }
        }
        for (id, stage) in s.policy.expire(Instant::now()) {
            if stage == Stage::InLogin {
                if let Some(Some(c)) = s.in_login.get(&id) {
                    tracing::info!(peer = ?c.peer_addr().ok(), "login timed out: closing");
                    let _ = c.shutdown(Shutdown::Both);
                }
            } else if let Some((c, _)) = s.held.remove(&id) {
                tracing::debug!(peer = ?c.peer_addr().ok(), "no login within the timeout: closing");
            }
        }
        let mut starts = Vec::new();
        for id in s.policy.start_logins() {
            let Some((c, listen)) = s.held.remove(&id) else {
                s.policy.on_login_end(id);
                continue;
            };
            // Not polled any more (only idle ones are), so this is the last reference.
            let stream = match Arc::try_unwrap(c) {
                Ok(stream) => stream,
                Err(shared) => match shared.try_clone() {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::warn!("cannot take a connection for login: {e}");
                        s.policy.on_login_end(id);
                        continue;
                    }
                },
            };
            s.in_login.insert(id, stream.try_clone().ok());
            starts.push((id, stream, listen));
        }
        starts
    }

    /// Stop the gate thread; it closes what it holds and cuts logins in progress.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
    }
}

/// IPv4-mapped IPv6 sources (dual-stack listeners) count as their IPv4 address.
fn canonical(peer: SocketAddr) -> std::net::IpAddr {
    match peer.ip() {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer.ip(), std::net::IpAddr::V4),
        v4 => v4,
    }
}
