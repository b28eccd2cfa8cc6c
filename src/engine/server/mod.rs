//! The `isctl serve` runtime: listeners on the model's portals, admission before
//! login (`admission` decides, `gate` holds the sockets: no thread until a
//! connection speaks, bounded logins, LIO's 15 s login timeout), one thread per
//! connection from its login on, live reconfiguration (SIGHUP, or `apply` over the control socket),
//! clean shutdown (SIGTERM/SIGINT), and the control socket (`control`).
//!
//! Owns: the [`Server`] state (configuration in force, session registry, listeners).
//! Does not: speak iSCSI (that is [`crate::engine::iscsi`]) or execute SCSI.
//!
//! Reconfiguration is a diff against what runs, in the manner of FreeBSD ctld: the
//! new model is opened in full first (every LU, every new listener) and only then
//! swapped in; logical units and targets that did not change are the same objects
//! afterwards, so their sessions carry on untouched. A change that would cut a
//! session (target removed, initiator no longer admitted, portal gone) or pull a LUN
//! from under one is refused unless forced.

pub mod admission;
pub mod config;
pub mod control;
pub mod gate;
pub mod stop;

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::engine::api::{ApplyReport, PlanReport};
use crate::engine::iscsi::conn::{self, Engine};
use crate::engine::iscsi::login::Access;
use crate::engine::iscsi::negotiate::Pairs;
use crate::engine::iscsi::session::Registry;
use crate::engine::iscsi::Portal;
use crate::engine::lu::LuError;
use crate::engine::scsi::ScsiTarget;
use crate::model::{Model, ModelError};
use crate::plan::{diff_served, ServedPlan, ServedSession};
use admission::Limits;
use config::Config;
use gate::{Gate, LoginSlot};

/// Why the engine could not start or reconfigure.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Lu(#[from] LuError),
    // The I/O error is part of the message, not a `source`: `{:#}` would print it twice.
    #[error("cannot listen on {addr}: {error} (is another iSCSI target using the port? ports below 1024 need root)")]
    Bind { addr: SocketAddr, error: io::Error },
    #[error("control socket {path}: {error}")]
    Control { path: PathBuf, error: io::Error },
    /// The model asks for what the engine does not do (iSNS, ALUA).
    #[error("the userspace engine cannot serve this model:\n  {}", .0.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("\n  "))]
    Unsupported(Vec<crate::plan::Refusal>),
    #[error("cannot start the login gate: {0}")]
    Gate(io::Error),
    #[error("--max-pending {max_pending} and --max-logins {max_logins} need about {needed} descriptors, more than half the process's limit of {limit}: lower them, or raise the limit (systemd: LimitNOFILE=; shell: ulimit -Hn)")]
    Descriptors {
        needed: u64,
        limit: u64,
        max_pending: usize,
        max_logins: usize,
    },
    #[error("cannot set up signal handling or limits: {0}")]
    Signals(#[from] nix::Error),
    /// The plan cuts or disturbs logged-in sessions and was not forced.
    #[error("refused: {}", .0.refusals.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("; "))]
    Refused(Box<PlanReport>),
    /// Another reload or apply changed the configuration after the plan was made.
    #[error("the engine's configuration changed since the plan was made (planned against generation {planned}, now {now}); nothing was changed, plan again")]
    Stale { planned: u64, now: u64 },
}

/// The engine while it runs.
pub struct Server {
    config: RwLock<Arc<Config>>,
    registry: Registry,
    stopping: AtomicBool,
    listeners: Mutex<BTreeMap<SocketAddr, Listener>>,
    live_connections: Arc<AtomicUsize>,
    /// Accepted connections until their login starts, and the login slots.
    gate: Arc<Gate>,
    /// One reconfiguration at a time.
    reconfiguring: Mutex<()>,
    /// Bumped by every applied reconfiguration (plans name the one they were made
    /// against).
    generation: AtomicU64,
    started: SystemTime,
    stats: crate::engine::stats::EngineStats,
}

struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Server {
    fn new(config: Config, gate: Arc<Gate>, stats: bool) -> Arc<Server> {
        Arc::new(Server {
            gate,
            config: RwLock::new(Arc::new(config)),
            registry: Registry::default(),
            stopping: AtomicBool::new(false),
            listeners: Mutex::new(BTreeMap::new()),
            live_connections: Arc::new(AtomicUsize::new(0)),
            reconfiguring: Mutex::new(()),
            generation: AtomicU64::new(1),
            started: SystemTime::now(),
            stats: crate::engine::stats::EngineStats::new(stats),
        })
    }

    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn stats(&self) -> &crate::engine::stats::EngineStats {
        &self.stats
    }

    pub fn started(&self) -> SystemTime {
        self.started
    }

    fn bind(self: &Arc<Self>, addr: SocketAddr) -> Result<Listener, ServeError> {
        let listener = TcpListener::bind(addr).map_err(|error| ServeError::Bind { addr, error })?;
        // Nonblocking: a connection reset between poll and accept must not block the
        // thread where it cannot see its stop flag.
        listener
            .set_nonblocking(true)
            .map_err(|error| ServeError::Bind { addr, error })?;
        let stop = Arc::new(AtomicBool::new(false));
        let server = self.clone();
        let stop2 = stop.clone();
        let thread = thread::Builder::new()
            .name(format!("listen {addr}"))
            .spawn(move || server.accept_loop(listener, addr, stop2))
            .map_err(|error| ServeError::Bind { addr, error })?;
        tracing::info!(%addr, "listening");
        Ok(Listener {
            stop,
            thread: Some(thread),
        })
    }

    fn accept_loop(
        self: Arc<Self>,
        listener: TcpListener,
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
    ) {
        while stop::readable_or_stopped(&listener, &[&stop, &self.stopping]) {
            let (stream, peer) = match listener.accept() {
                // Accepted sockets inherit O_NONBLOCK on the BSDs; the connection
                // code wants blocking reads with timeouts.
                Ok((s, peer)) => match s.set_nonblocking(false) {
                    Ok(()) => (s, peer),
                    Err(e) => {
                        tracing::warn!(%addr, "cannot make a connection blocking: {e}");
                        continue;
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    tracing::warn!(%addr, "accept failed: {e}");
                    // Out of descriptors and the like: do not spin.
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            self.gate.admit(stream, peer, addr);
        }
    }

    /// Give a connection the gate let through its own thread, from login to its end.
    /// The slot is freed when the login ends (or here, if no thread can be had).
    fn start_login(self: &Arc<Self>, stream: TcpStream, listen: SocketAddr, slot: LoginSlot) {
        let engine: Arc<dyn Engine> = self.clone();
        let live = self.live_connections.clone();
        live.fetch_add(1, Ordering::SeqCst);
        let spawned = thread::Builder::new()
            .name("iscsi-conn".into())
            .spawn(move || {
                conn::serve_connection(engine, stream, Portal { listen }, slot);
                live.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start a connection thread: {e}");
            self.live_connections.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Stop a listener: its thread sees the flag within [`stop::STOP_POLL`] and
    /// closes the socket.
    fn stop_listener(addr: SocketAddr, mut l: Listener) {
        l.stop.store(true, Ordering::SeqCst);
        if let Some(t) = l.thread.take() {
            let _ = t.join();
        }
        tracing::info!(%addr, "stopped listening");
    }

    /// Sessions as the plan sees them. A session whose last connection closed after
    /// the registry was read has ended: there is nothing of it to cut (counted, it
    /// would look like a session from nowhere that no group admits, and a login loop
    /// beside a reload would get the reload refused now and then; the soak showed it).
    fn live_sessions(&self) -> Vec<ServedSession> {
        self.registry
            .all()
            .iter()
            .filter_map(|s| {
                let conns = s.conns();
                if conns.is_empty() {
                    return None;
                }
                Some(ServedSession {
                    session: control::session_record(s, &conns),
                    tsih: s.tsih,
                    target: s.target_name().map(str::to_owned),
                    ip: conns
                        .first()
                        .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |c| c.peer.ip()),
                    listen: conns.iter().map(|c| c.listen).collect(),
                })
            })
            .collect()
    }

    /// The configuration generation in force (bumped by every applied change).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Plan serving `model` (read from `source`) instead of what runs.
    pub fn plan(&self, model: &Model, force: bool) -> (ServedPlan, u64) {
        let _one = self.reconfiguring.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.config();
        (
            diff_served(&old.model, model, &self.live_sessions(), force),
            self.generation(),
        )
    }

    /// Switch to `model`: plan, refuse a plan that cuts sessions without `force`,
    /// open the new configuration in full, swap it in, close the sessions it cuts.
    /// With `expect_generation`, refuse when another change came first.
    pub fn reconfigure(
        self: &Arc<Self>,
        model: Model,
        source: PathBuf,
        force: bool,
        expect_generation: Option<u64>,
    ) -> Result<ApplyReport, ServeError> {
        let _one = self.reconfiguring.lock().unwrap_or_else(|p| p.into_inner());
        let generation = self.generation();
        if let Some(want) = expect_generation {
            if want != generation {
                return Err(ServeError::Stale {
                    planned: want,
                    now: generation,
                });
            }
        }
        let old = self.config();
        let served = diff_served(&old.model, &model, &self.live_sessions(), force);
        let report = PlanReport::from_plan(&served.plan, source.clone(), generation);
        if served.plan.is_refused() {
            return Err(ServeError::Refused(Box::new(report)));
        }
        // Open everything new before touching what runs.
        let new = Config::build(model, source, Some(&old))?;
        let want = new.listen_addresses();
        let mut bound = BTreeMap::new();
        {
            let have = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
            for addr in want.keys() {
                if !have.contains_key(addr) {
                    match self.bind(*addr) {
                        Ok(l) => {
                            bound.insert(*addr, l);
                        }
                        Err(e) => {
                            for (a, l) in bound {
                                Server::stop_listener(a, l);
                            }
                            return Err(e);
                        }
                    }
                }
            }
        }
        let new = Arc::new(new);
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = new.clone();
        new.commit_luns();
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let removed: Vec<(SocketAddr, Listener)> = {
            let mut have = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
            have.extend(bound);
            let gone: Vec<SocketAddr> = have
                .keys()
                .filter(|a| !want.contains_key(a))
                .copied()
                .collect();
            gone.into_iter()
                .filter_map(|a| have.remove(&a).map(|l| (a, l)))
                .collect()
        };
        for (a, l) in removed {
            Server::stop_listener(a, l);
        }
        let mut closed_sessions = Vec::new();
        for s in self.registry.all() {
            if served.closes.contains(&s.tsih) {
                tracing::info!(tsih = s.tsih, initiator = %s.initiator, "closing a session the new configuration no longer allows");
                self.registry.remove(&s);
                closed_sessions.push(s.tsih);
            }
        }
        tracing::info!(
            changes = report.changes.len(),
            generation,
            "configuration applied from {}",
            report.source.display()
        );
        Ok(ApplyReport {
            plan: report,
            generation,
            closed_sessions,
        })
    }

    /// Stop: no new connections, end sessions, let in-flight commands finish, and
    /// flush every logical unit so that no acknowledged write is lost.
    fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let listeners: Vec<(SocketAddr, Listener)> =
            std::mem::take(&mut *self.listeners.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .collect();
        for (a, l) in listeners {
            Server::stop_listener(a, l);
        }
        self.gate.stop();
        for s in self.registry.all() {
            for c in s.conns().iter() {
                // Read side only: a command being executed still gets its response out.
                let _ = c.stream.shutdown(std::net::Shutdown::Read);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.live_connections.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let config = self.config();
        for (name, (_, lu)) in &config.lus {
            if let Err(e) = lu.store().flush() {
                tracing::error!(extent = %name, "flush at shutdown failed: {e}");
            }
        }
        tracing::info!("stopped; all logical units flushed");
    }
}

impl Engine for Server {
    fn access(&self, listen: SocketAddr, peer: SocketAddr) -> Box<dyn Access + '_> {
        Box::new(self.config().access(listen, peer))
    }

    fn send_targets(
        &self,
        _listen: SocketAddr,
        local: SocketAddr,
        peer: SocketAddr,
        initiator: &str,
        which: Option<&str>,
    ) -> Pairs {
        self.config()
            .send_targets(local, initiator, peer.ip(), which)
    }

    fn scsi_target(&self, target: &str) -> Option<Arc<ScsiTarget>> {
        self.config().targets.get(target).map(|t| t.scsi.clone())
    }

    fn registry(&self) -> &Registry {
        &self.registry
    }

    fn stats(&self) -> &crate::engine::stats::EngineStats {
        &self.stats
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// Run the engine until SIGTERM or SIGINT. SIGHUP re-reads the model from `path`.
/// `limits` bound the connections before login (see `admission`); `stats`: count
/// per-command statistics (`isctl serve --no-stats` turns them off).
pub fn serve(
    path: &Path,
    control_socket: &Path,
    limits: Limits,
    stats: bool,
) -> Result<(), ServeError> {
    use nix::sys::signal::{SigSet, Signal};

    // Block the signals in this thread before any other starts, so that every thread
    // inherits the mask and only the wait below receives them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGHUP);
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block()?;

    let loaded = crate::model::load(path)?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let unsupported = crate::plan::engine_limits(&loaded.model);
    if !unsupported.is_empty() {
        return Err(ServeError::Unsupported(unsupported));
    }
    let source = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let config = Config::build(loaded.model, source, None)?;
    let addrs: Vec<SocketAddr> = config.listen_addresses().keys().copied().collect();
    let targets = config.targets.len();
    let luns: usize = config.targets.values().map(|t| t.luns.len()).sum();
    raise_descriptor_limit(&limits)?;
    let gate = Gate::new(limits).map_err(ServeError::Gate)?;
    let server = Server::new(config, gate.clone(), stats);
    let gate_thread = {
        let server = server.clone();
        let start: Box<gate::StartLogin> =
            Box::new(move |stream, listen, slot| server.start_login(stream, listen, slot));
        thread::Builder::new()
            .name("login-gate".into())
            .spawn(move || gate.run(start))
            .map_err(ServeError::Gate)?
    };
    // The control socket first: whoever can reach a portal can then also ask the
    // engine what it serves (tests and scripts wait for a portal, then ask).
    let control = control::start(server.clone(), control_socket)?;
    for addr in addrs {
        match server.bind(addr) {
            Ok(l) => {
                server
                    .listeners
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(addr, l);
            }
            Err(e) => {
                control.stop();
                server.shutdown();
                let _ = gate_thread.join();
                return Err(e);
            }
        }
    }
    tracing::info!(
        targets,
        luns,
        "isctl engine ready (control socket {})",
        control_socket.display()
    );

    loop {
        match signals.wait()? {
            Signal::SIGHUP => {
                let source = server.config().source.clone();
                tracing::info!("SIGHUP: reloading {}", source.display());
                match crate::model::load(&source) {
                    Ok(loaded) => match server.reconfigure(loaded.model, source, false, None) {
                        Ok(r) => tracing::info!(changes = r.plan.changes.len(), "reload done"),
                        Err(e) => tracing::error!(
                            "reload refused or failed, the running configuration is unchanged: {e}"
                        ),
                    },
                    Err(e) => tracing::error!(
                        "reload failed, the running configuration is unchanged:\n{e}"
                    ),
                }
            }
            sig => {
                tracing::info!("{sig}: stopping");
                break;
            }
        }
    }
    control.stop();
    server.shutdown();
    let _ = gate_thread.join();
    Ok(())
}

/// Descriptors the limits may need beyond those of logged-in connections and LUs:
/// every held connection, a clone of each one in login, listeners, control, slack.
fn descriptors_needed(limits: &Limits) -> u64 {
    (limits.max_pending + limits.max_logins) as u64 + 256
}

/// Raise the soft descriptor limit to the hard one (systemd's default soft limit is
/// 1024), and refuse limits that cannot fit: a flood must not run the engine out of
/// descriptors for its logged-in sessions and LUs.
fn raise_descriptor_limit(limits: &Limits) -> Result<(), ServeError> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    let needed = descriptors_needed(limits);
    // Half the descriptors stay for sessions, LUs and the rest.
    if needed > hard / 2 {
        return Err(ServeError::Descriptors {
            needed,
            limit: hard,
            max_pending: limits.max_pending,
            max_logins: limits.max_logins,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::iscsi::session::{CmdWindow, Session, SessionKind};
    use crate::engine::scsi::{Nexus, ScsiTarget};

    #[test]
    fn a_session_that_ended_while_planning_is_not_cut() {
        let text = "[portal.p]\nlisten = [\"127.0.0.1:3260\"]\n\
                    [extent.r]\ntype = \"ramdisk\"\nsize = \"1MiB\"\n\
                    [target.\"iqn.2026-11.io.isctl:t\"]\nluns = { 0 = \"r\" }\n\
                    [[target.\"iqn.2026-11.io.isctl:t\".group]]\nportal = \"p\"\n";
        let model = crate::model::load_str("m.toml", text).unwrap().model;
        let config = Config::build(model.clone(), "m.toml".into(), None).unwrap();
        let server = Server::new(config, Gate::new(Limits::default()).unwrap(), true);
        let target = "iqn.2026-11.io.isctl:t".to_string();
        // Registered, but its last connection has just closed (a logout racing the
        // plan's read of the registry).
        server.registry.create(|tsih| Session {
            tsih,
            initiator: "iqn.2026-11.test:i".into(),
            initiator_alias: None,
            isid: [0x80, 0, 0, 0, 0, 1],
            kind: SessionKind::Normal {
                target: target.clone(),
                scsi: Arc::new(ScsiTarget::new(BTreeMap::new())),
                nexus: Nexus {
                    id: 1,
                    initiator_name: "iqn.2026-11.test:i".into(),
                    isid: [0x80, 0, 0, 0, 0, 1],
                    target_name: target.clone(),
                    tpgt: 1,
                },
            },
            portal_group_tag: 1,
            params: Default::default(),
            window: Mutex::new(CmdWindow::new(0)),
            conns: Mutex::new(Vec::new()),
            started: SystemTime::now(),
        });
        let (plan, _) = server.plan(&model, false);
        assert!(!plan.plan.is_refused(), "{:?}", plan.plan);
        assert!(plan.closes.is_empty());
    }
}
