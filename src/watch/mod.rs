//! Continuous reconciliation (`isctl watch`): keep the live configuration matching a
//! model file or directory as it changes, on either backend.
//!
//! Owns:
//! * [`filter`]: which file-system events concern the model and the debouncer that
//!   turns a burst of them into one apply — pure logic, unit-tested;
//! * [`run`]: the loop that watches the model (the `notify` crate; the model's
//!   parent directory too, so renames and symlink swaps are seen, and the watches
//!   follow a swapped symlink), reacts to signals (SIGHUP: apply now; SIGTERM,
//!   SIGINT: finish the running apply and return), checks the model's digest
//!   periodically in case an event was missed, re-plans every interval to report
//!   drift (and repairs it with `repair`), and drives `reconcile::Host` with
//!   exactly the safety of `isctl apply --auto-approve` (never `--force`);
//! * [`state`]: `<state-dir>/watch.json`, the record of the last attempt;
//! * systemd readiness and status (`sd_notify`; a no-op outside systemd).
//!
//! Does not: choose the backend (the caller gives a function that opens the
//! `Host`, called afresh for every attempt so that each sees the live state), parse
//! the command line or set up logging.
//!
//! Rules (docs/reconcile.md, "Continuous reconciliation"): an attempt is made at
//! start, after each burst of changes whose model digest differs from the last
//! attempt's, on SIGHUP, and on drift with `repair`. A refused plan or an invalid
//! model is logged and left as it is until the model changes again; a failure
//! (I/O, a held lock, an unreachable engine) is retried at the next digest check.
//! When the model changed while an attempt ran, another follows once it settles.

pub mod filter;
pub mod state;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{SigSet, Signal};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use sha2::{Digest as _, Sha256};
use tracing::{debug, error, info, warn};

use crate::apply::{ApplyError, ApplyOptions};
use crate::backend::userspace::EngineError;
use crate::model;
use crate::plan::{render, DiffOptions, Plan};
use crate::reconcile::{Host, ReconcileError, Reconciled};
use filter::{Debouncer, Filter, Writer};
use state::{LastApply, Outcome};

/// How the watcher runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The model file or directory.
    pub path: PathBuf,
    /// Quiet time after the last relevant event before applying.
    pub debounce: Duration,
    /// How often to re-plan for drift.
    pub interval: Duration,
    /// Apply a drift plan (else only log it).
    pub repair: bool,
    /// Delete unmanaged objects (`--prune`), as `apply --prune` would.
    pub prune: bool,
    /// How often to compare the model's digest with the last attempt's, in case a
    /// file-system event was missed.
    pub digest_check: Duration,
    /// How long to wait for another apply's lock.
    pub lock_timeout: Duration,
    pub workers: usize,
    /// Where `watch.json` goes.
    pub state_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("watching {path}: {source}")]
    Notify {
        path: PathBuf,
        source: notify::Error,
    },
    #[error("setting up signal handling: {0}")]
    Signals(nix::Error),
    #[error("the model path {path}: {source}")]
    Path {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The content digest of the model: SHA-256 over the path and bytes of every file
/// `model::load` reads (so a rename, a new file or a removed file changes it too).
pub fn digest(path: &Path) -> String {
    let mut h = Sha256::new();
    for f in model::files(path) {
        h.update(f.as_os_str().as_encoded_bytes());
        h.update([0]);
        match std::fs::read(&f) {
            Ok(bytes) => {
                h.update((bytes.len() as u64).to_le_bytes());
                h.update(&bytes);
            }
            Err(e) => h.update(format!("unreadable: {e}").as_bytes()),
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

enum Msg {
    Fs(notify::Result<notify::Event>),
    Hup,
    Stop(Signal),
}

/// The file-system watches: the model's parent directory (not recursive: the
/// model's own entry, for renames and symlink swaps) and, for a directory model,
/// the directory recursively — re-established when the path comes to point at
/// another directory (a swapped symlink, a directory replaced).
struct FsWatch {
    root: PathBuf,
    parent: PathBuf,
    watcher: RecommendedWatcher,
    parent_watched: bool,
    /// (device, inode) of the directory watched recursively.
    dir: Option<(u64, u64)>,
}

impl FsWatch {
    /// `changes` counts the events that concern the model as they arrive (in the
    /// watcher's thread, before the loop sees them): an attempt compares it before and
    /// after reading the model to know that no writer touched the model meanwhile.
    fn new(
        root: &Path,
        tx: mpsc::Sender<Msg>,
        changes: Arc<AtomicU64>,
    ) -> Result<FsWatch, WatchError> {
        let filter = Filter::new(root);
        let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            let concerns_model = match &ev {
                Ok(ev) => !filter.model_paths(ev).is_empty(),
                Err(_) => true,
            };
            // Sent before it is counted: an attempt that misses it in the queue sees
            // the count move (the other order could hide it from both).
            let _ = tx.send(Msg::Fs(ev));
            if concerns_model {
                changes.fetch_add(1, Ordering::SeqCst);
            }
        })
        .map_err(|source| WatchError::Notify {
            path: root.to_path_buf(),
            source,
        })?;
        let parent = root
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("/"))
            .to_path_buf();
        let mut w = FsWatch {
            root: root.to_path_buf(),
            parent,
            watcher,
            parent_watched: false,
            dir: None,
        };
        w.watcher
            .watch(&w.parent, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError::Notify {
                path: w.parent.clone(),
                source,
            })?;
        w.parent_watched = true;
        w.refresh();
        Ok(w)
    }

    /// Follow the model path to what it names now.
    fn refresh(&mut self) {
        use std::os::unix::fs::MetadataExt;
        if !self.parent_watched {
            self.parent_watched = self
                .watcher
                .watch(&self.parent, RecursiveMode::NonRecursive)
                .is_ok();
        }
        let now = std::fs::metadata(&self.root)
            .ok()
            .filter(|m| m.is_dir())
            .map(|m| (m.dev(), m.ino()));
        if now == self.dir {
            return;
        }
        if self.dir.is_some() {
            // Gone or replaced: the kernel may have dropped the watches already.
            let _ = self.watcher.unwatch(&self.root);
        }
        self.dir = None;
        if now.is_some() {
            match self.watcher.watch(&self.root, RecursiveMode::Recursive) {
                Ok(()) => {
                    debug!(path = %self.root.display(), "watching the model directory");
                    self.dir = now;
                }
                Err(e) => warn!("cannot watch {}: {e}", self.root.display()),
            }
        }
    }
}

/// Block the signals the watcher handles in this thread (threads started later
/// inherit the mask) and receive them in a dedicated thread.
fn signals(tx: mpsc::Sender<Msg>) -> Result<(), WatchError> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGHUP);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block().map_err(WatchError::Signals)?;
    std::thread::Builder::new()
        .name("isctl-signals".into())
        .spawn(move || loop {
            match set.wait() {
                Ok(Signal::SIGHUP) => {
                    if tx.send(Msg::Hup).is_err() {
                        return;
                    }
                }
                Ok(s) => {
                    let _ = tx.send(Msg::Stop(s));
                    return;
                }
                Err(_) => return,
            }
        })
        .map_err(|e| WatchError::Signals(nix::Error::from_raw(e.raw_os_error().unwrap_or(0))))?;
    Ok(())
}

fn sd_notify(states: &[sd_notify::NotifyState]) {
    // Outside systemd (no NOTIFY_SOCKET) this does nothing.
    if let Err(e) = sd_notify::notify(states) {
        debug!("sd_notify: {e}");
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn change_lines(plan: &Plan) -> Vec<String> {
    plan.changes
        .iter()
        .map(|c| format!("{} {}", c.action.symbol(), c.address))
        .collect()
}

/// Whether the model changed while an attempt read it.
enum Torn {
    Yes,
    No,
}

/// The loop's memory between attempts.
struct Runner<'a> {
    cfg: &'a Config,
    hosts: &'a mut dyn FnMut() -> Result<Host, String>,
    /// Events concerning the model so far (`FsWatch::new`).
    changes: Arc<AtomicU64>,
    /// `changes` when the digest of the current attempt was taken.
    events_at_digest: u64,
    /// Digest of the model at the last attempt.
    last_digest: Option<String>,
    /// The last attempt failed for a reason other than the model: retry at the next
    /// digest check even if the model did not change.
    retry: bool,
    attempts: u64,
}

impl Runner<'_> {
    fn diff_options(&self) -> DiffOptions {
        DiffOptions {
            prune: self.cfg.prune,
            force: false,
        }
    }

    /// Attempt if the model changed since the last attempt (`forced`: in any
    /// case). Returns true when the model changed while the attempt ran: the caller
    /// goes again once the change has settled (through the debouncer, since the
    /// change may be the start of a burst).
    fn cycle(&mut self, trigger: &str, forced: bool) -> bool {
        self.events_at_digest = self.changes.load(Ordering::SeqCst);
        let d = digest(&self.cfg.path);
        if !(forced || self.retry) && self.last_digest.as_deref() == Some(d.as_str()) {
            debug!(trigger, "the model is unchanged since the last attempt");
            return false;
        }
        if !self.attempt(trigger, &d) {
            return true;
        }
        self.changed_since(&d)
    }

    fn changed_since(&self, d: &str) -> bool {
        if digest(&self.cfg.path) == d {
            return false;
        }
        info!("the model changed during the apply: going again when it settles");
        true
    }

    /// One load, plan and apply, logged and recorded. Returns false, having done and
    /// recorded nothing, when the model changed while it was read (`Torn`): the caller
    /// goes again once it settles.
    fn attempt(&mut self, trigger: &str, digest: &str) -> bool {
        self.attempts += 1;
        self.last_digest = Some(digest.to_string());
        self.retry = false;
        let path = &self.cfg.path;
        info!(trigger, model = %path.display(), "reconciling");
        let mut record = LastApply {
            time: unix_now(),
            model: path.clone(),
            digest: digest.to_string(),
            trigger: trigger.to_string(),
            outcome: Outcome::Failed,
            summary: None,
            changes: Vec::new(),
            message: None,
            attempts: self.attempts,
        };
        if let Torn::Yes = self.reconcile(&mut record) {
            self.attempts -= 1;
            self.last_digest = None;
            return false;
        }
        if record.outcome == Outcome::Failed {
            self.retry = true;
        }
        if let Err(e) = state::save(&self.cfg.state_dir, &record) {
            warn!("cannot record the last apply: {e}");
        }
        let status = format!(
            "last apply: {} ({trigger}){}",
            record.outcome.as_str(),
            record
                .summary
                .map(|s| format!(
                    ", {} added, {} changed, {} destroyed",
                    s.add, s.change, s.destroy
                ))
                .unwrap_or_default()
        );
        sd_notify(&[sd_notify::NotifyState::Status(&status)]);
        true
    }

    fn reconcile(&mut self, record: &mut LastApply) -> Torn {
        let path = self.cfg.path.clone();
        let loaded = model::load(&path);
        // `model::load` reads file after file: if the model changed since its digest was
        // taken, what it read may mix two versions (half a checkout), and the record
        // would name a digest that was not applied. Apply nothing; the change that
        // happened is seen (event or digest) and applied once it settles.
        // A writer that truncated a file just before the digest and has not written
        // it yet leaves both digests equal: its event, counted meanwhile, tells.
        if digest(&path) != record.digest
            || self.changes.load(Ordering::SeqCst) != self.events_at_digest
        {
            info!("the model changed while it was read: going again when it settles");
            return Torn::Yes;
        }
        let loaded = match loaded {
            Ok(l) => l,
            Err(e) => {
                for d in e.errors() {
                    error!("invalid model, the live configuration is left as it is: {d}");
                }
                record.outcome = Outcome::InvalidModel;
                record.message = Some(e.to_string());
                return Torn::No;
            }
        };
        for w in &loaded.warnings {
            warn!("{w}");
        }
        let host = match (self.hosts)() {
            Ok(h) => h,
            Err(e) => {
                error!("cannot reach the backend (retried at the next check): {e}");
                record.message = Some(e);
                return Torn::No;
            }
        };
        let opts = ApplyOptions {
            workers: self.cfg.workers,
        };
        let result = host.reconcile(
            &path,
            &loaded.model,
            &self.diff_options(),
            &opts,
            self.cfg.lock_timeout,
        );
        let refused = |record: &mut LastApply, text: String| {
            for line in text.lines() {
                warn!("refused (retried when the model changes): {line}");
            }
            record.outcome = Outcome::Refused;
            record.message = Some(text);
        };
        match result {
            Ok(Reconciled::NoChanges(plan)) => {
                info!("no changes: the live configuration matches the model");
                record.outcome = Outcome::NoChanges;
                record.summary = Some(plan.summary());
            }
            Ok(Reconciled::Applied(plan, done)) => {
                let s = plan.summary();
                for line in change_lines(&plan) {
                    info!("  {line}");
                }
                info!(
                    operations = done.operations,
                    elapsed_ms = done.elapsed.as_millis() as u64,
                    closed_sessions = done.closed_sessions.len(),
                    "apply complete: {} added, {} changed, {} destroyed",
                    s.add,
                    s.change,
                    s.destroy
                );
                record.outcome = Outcome::Applied;
                record.summary = Some(s);
                record.changes = change_lines(&plan);
            }
            Ok(Reconciled::Refused(plan)) => {
                record.summary = Some(plan.summary());
                record.changes = change_lines(&plan);
                let text = plan
                    .refusals
                    .iter()
                    .map(|r| {
                        let at = r
                            .origin
                            .as_ref()
                            .map(|o| format!("{o}: "))
                            .unwrap_or_default();
                        format!("{at}{} (fix: {})", r.problem, r.fix)
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                refused(record, text);
            }
            Err(ReconcileError::Engine(EngineError::InvalidModel(text))) => {
                for line in text.lines() {
                    error!("invalid model, the live configuration is left as it is: {line}");
                }
                record.outcome = Outcome::InvalidModel;
                record.message = Some(text);
            }
            Err(e @ ReconcileError::Lower(_))
            | Err(e @ ReconcileError::Apply(ApplyError::Refused))
            | Err(e @ ReconcileError::Engine(EngineError::Stale(_))) => {
                refused(record, e.to_string());
            }
            Err(e) => {
                let text = e.to_string();
                for line in text.lines() {
                    error!("apply failed (retried at the next check): {line}");
                }
                record.outcome = Outcome::Failed;
                record.message = Some(text);
            }
        }
        Torn::No
    }

    /// Re-plan against the live state; log what differs; repair it if asked.
    /// Returns true when the model changed during a repair (as `cycle`).
    fn drift(&mut self) -> bool {
        let path = self.cfg.path.clone();
        let Ok(loaded) = model::load(&path) else {
            debug!("drift check skipped: the model does not load");
            return false;
        };
        let host = match (self.hosts)() {
            Ok(h) => h,
            Err(e) => {
                warn!("drift check: cannot reach the backend: {e}");
                return false;
            }
        };
        let plan = match host.plan(&path, &loaded.model, &self.diff_options()) {
            Ok(p) => p.plan,
            Err(e) => {
                warn!("drift check: planning failed: {e}");
                return false;
            }
        };
        drop(host);
        if plan.is_empty() {
            debug!("drift check: no drift");
            return false;
        }
        warn!(
            "drift: the live configuration differs from the model ({})",
            render::summary_line(&plan)
        );
        for line in change_lines(&plan) {
            warn!("drift:   {line}");
        }
        if !self.cfg.repair {
            return false;
        }
        self.events_at_digest = self.changes.load(Ordering::SeqCst);
        let d = digest(&path);
        if !self.attempt("repair", &d) {
            return true;
        }
        self.changed_since(&d)
    }
}

/// Keep the debouncer's set of model files open for writing (`filter::Writer`): a
/// burst is applied only once every writer closed its file.
fn track_writers(debouncer: &mut Debouncer, kind: &notify::EventKind, paths: &[&PathBuf]) {
    use notify::event::{ModifyKind, RenameMode};
    if let notify::EventKind::Modify(ModifyKind::Name(RenameMode::From | RenameMode::Both)) = kind {
        // Renamed away (an editor's save moves the old file aside): its writer is moot.
        if let Some(old) = paths.first() {
            debouncer.writer_closed(old);
        }
        return;
    }
    let writer = filter::writer(kind);
    for p in paths {
        match writer {
            // Only a regular file is ever closed after writing (a new symbolic link or
            // directory would hold the burst back for nothing).
            Writer::Opened if std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()) => {
                debouncer.writer_opened(p)
            }
            Writer::Closed => debouncer.writer_closed(p),
            _ => {}
        }
    }
}

/// Watch and reconcile until SIGTERM or SIGINT. `hosts` opens the backend for
/// each attempt and drift check.
pub fn run(
    cfg: &Config,
    hosts: &mut dyn FnMut() -> Result<Host, String>,
) -> Result<(), WatchError> {
    let root = std::path::absolute(&cfg.path).map_err(|source| WatchError::Path {
        path: cfg.path.clone(),
        source,
    })?;
    let (tx, rx) = mpsc::channel();
    // Before any other thread starts, so that every thread blocks them.
    signals(tx.clone())?;
    let filter = Filter::new(&root);
    let changes = Arc::new(AtomicU64::new(0));
    let mut fs = FsWatch::new(&root, tx, changes.clone())?;
    let cfg = &Config {
        path: root.clone(),
        ..cfg.clone()
    };
    let mut runner = Runner {
        cfg,
        hosts,
        changes,
        events_at_digest: 0,
        last_digest: None,
        retry: false,
        attempts: 0,
    };
    info!(
        model = %root.display(),
        debounce_ms = cfg.debounce.as_millis() as u64,
        interval_s = cfg.interval.as_secs(),
        repair = cfg.repair,
        "watching the model"
    );
    let mut debouncer = Debouncer::new(cfg.debounce);
    if runner.cycle("start", true) {
        debouncer.event(Instant::now());
    }
    sd_notify(&[sd_notify::NotifyState::Ready]);

    let mut next_drift = Instant::now() + cfg.interval;
    let mut next_digest = Instant::now() + cfg.digest_check;
    loop {
        let now = Instant::now();
        let mut wake = next_drift.min(next_digest);
        if let Some(d) = debouncer.deadline() {
            wake = wake.min(d);
        }
        let first = match rx.recv_timeout(wake.saturating_duration_since(now)) {
            Ok(msg) => Some(msg),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        // Take everything already queued too: whether a burst is over is judged on all
        // the events that happened, not only on those read so far (a backlog of other
        // events must not hide the truncation of a file whose writer has it open).
        let (mut hup, mut stop) = (false, None);
        for msg in first
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
        {
            match msg {
                Msg::Fs(Ok(ev)) => {
                    let relevant = filter.model_paths(&ev);
                    if !relevant.is_empty() {
                        debug!(kind = ?ev.kind, paths = ?relevant, "model event");
                        track_writers(&mut debouncer, &ev.kind, &relevant);
                        if relevant.iter().any(|p| filter.is_root(p)) {
                            fs.refresh();
                        }
                        debouncer.event(Instant::now());
                    }
                }
                Msg::Fs(Err(e)) => {
                    // An overflowed queue or a lost watch: look again after the burst.
                    warn!("file-system watch: {e}");
                    fs.refresh();
                    debouncer.forget_writers();
                    debouncer.event(Instant::now());
                }
                Msg::Hup => hup = true,
                Msg::Stop(sig) => stop = Some(sig),
            }
        }
        if let Some(sig) = stop {
            info!("{sig}: stopping");
            break;
        }
        if hup {
            info!("SIGHUP: applying the model now");
            fs.refresh();
            if runner.cycle("sighup", true) {
                debouncer.event(Instant::now());
            }
        }
        let now = Instant::now();
        if debouncer.fire(now) {
            fs.refresh();
            if runner.cycle("change", false) {
                debouncer.event(Instant::now());
            }
        }
        if now >= next_digest {
            fs.refresh();
            if runner.cycle("digest", false) {
                debouncer.event(Instant::now());
            }
            next_digest = Instant::now() + cfg.digest_check;
        }
        if now >= next_drift {
            if runner.drift() {
                debouncer.event(Instant::now());
            }
            next_drift = Instant::now() + cfg.interval;
        }
    }
    sd_notify(&[sd_notify::NotifyState::Stopping]);
    Ok(())
}
