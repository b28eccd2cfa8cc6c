//! Group commit for durable writes: writes that must be on stable storage before they
//! complete (FUA, or every write of an LU with `write_back = false`) share one
//! `fdatasync` instead of each paying for its own.
//!
//! Why: at queue depth 32 the I/O workers write concurrently; with one `O_DSYNC` write
//! each, the kernel runs one sync per write (each a writeback of one page and a wait).
//! Here each write goes into the page cache and is covered by a sync that started
//! after it returned, one `fdatasync` for everyone who wrote before it began. The
//! contract is the same as `O_DSYNC`'s: a write is on stable storage when
//! [`GroupSync::wait_durable`] returns (the caller waits; its thread may run the sync),
//! or when the work handed to [`Durability::then`] runs (an I/O worker takes a ticket
//! with [`GroupSync::later`] and goes on; the file's syncer thread runs the syncs and
//! that work). A blocked waiter per write cost two thread switches per command and
//! capped a sync's batch at the pool's size; the syncer costs neither. Measured in
//! docs/engine.md.

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// What runs once a ticket's write is durable (or its sync failed).
type WhenDurable = Box<dyn FnOnce(io::Result<()>) + Send>;

#[derive(Default)]
struct Progress {
    /// Tickets handed out: one per write that asked to become durable.
    requested: u64,
    /// Every ticket up to this one is durable.
    durable: u64,
    /// A sync is running (it covers the tickets handed out before it began).
    running: bool,
    /// Syncs that failed, as (first ticket, last ticket, error): the writes they
    /// covered fail even if a later sync succeeds (after a failed `fdatasync` the
    /// kernel may have dropped those pages). The most recent few are kept.
    failed: Vec<(u64, u64, io::ErrorKind, String)>,
    /// Work handed to the syncer thread, by ticket.
    pending: Vec<(u64, WhenDurable)>,
    /// The syncer thread is running.
    syncer: bool,
    /// The owner is gone: the syncer ends once nothing is pending.
    closed: bool,
}

impl Progress {
    /// The outcome for `ticket`, once there is one.
    fn outcome(&self, ticket: u64) -> Option<io::Result<()>> {
        if let Some((_, _, kind, msg)) = self
            .failed
            .iter()
            .find(|(from, upto, _, _)| (*from..=*upto).contains(&ticket))
        {
            return Some(Err(io::Error::new(*kind, msg.clone())));
        }
        (self.durable >= ticket).then_some(Ok(()))
    }
}

/// Failed syncs remembered for the waiters that have not woken yet.
const FAILURES_KEPT: usize = 64;

struct Shared {
    progress: Mutex<Progress>,
    /// A sync finished.
    done: Condvar,
    /// Work for the syncer thread, or the owner closed.
    work: Condvar,
    /// The file's `fdatasync`.
    sync: Box<dyn Fn() -> io::Result<()> + Send + Sync>,
    name: String,
}

/// One file's group commit.
pub struct GroupSync {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for GroupSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupSync").finish_non_exhaustive()
    }
}

impl GroupSync {
    /// Group commit with `sync` (the file's `fdatasync`) for the extent `name` (which
    /// names the syncer thread and its log lines).
    pub fn new(name: &str, sync: impl Fn() -> io::Result<()> + Send + Sync + 'static) -> Self {
        GroupSync {
            shared: Arc::new(Shared {
                progress: Mutex::new(Progress::default()),
                done: Condvar::new(),
                work: Condvar::new(),
                sync: Box::new(sync),
                name: name.to_string(),
            }),
        }
    }

    /// Call after a write returned: a ticket that a sync beginning from now on covers.
    fn ticket(&self) -> u64 {
        let mut p = self.shared.lock();
        p.requested += 1;
        p.requested
    }

    /// Call after a write returned: returns once a sync that began after that moment
    /// has completed (one waiter's thread runs it for every write before it).
    pub fn wait_durable(&self) -> io::Result<()> {
        let ticket = self.ticket();
        self.shared.wait_for(ticket)
    }

    /// Call after a write returned: its ticket, for doing the rest of the command once
    /// a sync covers it ([`Durability::then`]) rather than waiting here.
    pub fn later(&self) -> Durability {
        Durability {
            ticket: self.ticket(),
            shared: self.shared.clone(),
        }
    }
}

/// A write that returned before it was durable: what to wait on.
pub struct Durability {
    shared: Arc<Shared>,
    ticket: u64,
}

impl std::fmt::Debug for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Durability({} #{})", self.shared.name, self.ticket)
    }
}

impl Durability {
    /// The same file's group commit.
    pub fn same_file(&self, other: &Durability) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// The later of two tickets of the same file (a sync covering it covers both).
    pub fn max(self, other: Durability) -> Durability {
        if other.ticket > self.ticket {
            other
        } else {
            self
        }
    }

    /// Wait here until the write is durable.
    pub fn wait(self) -> io::Result<()> {
        self.shared.wait_for(self.ticket)
    }

    /// Run `then` on the file's syncer thread once the write is durable (or with the
    /// error of the sync that failed it).
    pub fn then(self, then: impl FnOnce(io::Result<()>) + Send + 'static) {
        self.shared.hand_over(self.ticket, Box::new(then));
    }
}

impl Drop for GroupSync {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_all();
    }
}

impl Shared {
    /// Wait until a sync covering `ticket` (already taken) is done, running it here if
    /// none is running.
    fn wait_for(&self, ticket: u64) -> io::Result<()> {
        let mut p = self.lock();
        loop {
            if let Some(outcome) = p.outcome(ticket) {
                return outcome;
            }
            p = self.sync_or_wait(p);
        }
    }

    /// One step toward the next outcome: run a sync if none is running, else wait for
    /// the running one to finish. Returns the lock again.
    fn sync_or_wait<'a>(&'a self, p: MutexGuard<'a, Progress>) -> MutexGuard<'a, Progress> {
        if p.running {
            self.done.wait(p).unwrap_or_else(|e| e.into_inner())
        } else {
            self.sync_once(p)
        }
    }

    /// Queue `then` for the syncer thread (started on first use).
    fn hand_over(self: &Arc<Self>, ticket: u64, then: WhenDurable) {
        let mut p = self.lock();
        p.pending.push((ticket, then));
        if p.syncer {
            drop(p);
            self.work.notify_one();
            return;
        }
        let shared = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("sync-{}", self.name))
            .spawn(move || shared.syncer());
        match spawned {
            Ok(_) => p.syncer = true,
            Err(e) => {
                // No thread: this caller waits and runs the work itself.
                tracing::warn!("cannot start the syncer of {}: {e}", self.name);
                let pending = std::mem::take(&mut p.pending);
                drop(p);
                for (ticket, then) in pending {
                    then(self.wait_for(ticket));
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run one sync for every write that returned so far (the lock is released while
    /// it runs); returns the lock again.
    fn sync_once<'a>(&'a self, mut p: MutexGuard<'a, Progress>) -> MutexGuard<'a, Progress> {
        p.running = true;
        let (first, covering) = (p.durable + 1, p.requested);
        drop(p);
        let result = (self.sync)();
        let mut p = self.lock();
        p.running = false;
        match result {
            Ok(()) => p.durable = p.durable.max(covering),
            Err(e) => {
                tracing::error!(
                    "extent {}: fdatasync failed, the {} writes it covered fail: {e}",
                    self.name,
                    covering + 1 - first
                );
                if p.failed.len() == FAILURES_KEPT {
                    p.failed.remove(0);
                }
                p.failed.push((first, covering, e.kind(), e.to_string()));
            }
        }
        self.done.notify_all();
        p
    }

    /// The syncer thread: sync while work is pending, run the work each sync covered.
    fn syncer(&self) {
        let mut p = self.lock();
        loop {
            if p.pending.is_empty() {
                if p.closed {
                    p.syncer = false;
                    return;
                }
                p = self.work.wait(p).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let mut ready = Vec::new();
            for (ticket, then) in std::mem::take(&mut p.pending) {
                match p.outcome(ticket) {
                    Some(outcome) => ready.push((then, outcome)),
                    None => p.pending.push((ticket, then)),
                }
            }
            if !ready.is_empty() {
                drop(p);
                for (then, outcome) in ready {
                    then(outcome);
                }
                p = self.lock();
                continue;
            }
            p = self.sync_or_wait(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    /// A group commit whose sync records how many writes it saw at its start.
    fn recording() -> (GroupSync, Arc<AtomicU64>, Arc<AtomicU64>, Arc<AtomicU64>) {
        let written = Arc::new(AtomicU64::new(0));
        let synced_upto = Arc::new(AtomicU64::new(0));
        let syncs = Arc::new(AtomicU64::new(0));
        let (w, u, n) = (written.clone(), synced_upto.clone(), syncs.clone());
        let gs = GroupSync::new("test", move || {
            let seen = w.load(Ordering::SeqCst);
            std::thread::sleep(Duration::from_micros(300));
            u.fetch_max(seen, Ordering::SeqCst);
            n.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        (gs, written, synced_upto, syncs)
    }

    #[test]
    fn a_write_is_covered_only_by_a_sync_that_began_after_it() {
        // A waiter must only return after a sync whose start saw its write.
        let (gs, written, synced_upto, syncs) = recording();
        let gs = Arc::new(gs);
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (gs, written, synced_upto) = (gs.clone(), written.clone(), synced_upto.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                        gs.wait_durable().unwrap();
                        assert!(
                            synced_upto.load(Ordering::SeqCst) >= mine,
                            "write {mine} returned before a sync covered it"
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let syncs = syncs.load(Ordering::SeqCst);
        assert!(
            syncs < 800,
            "16 writers x 50 writes shared no sync ({syncs} syncs)"
        );
    }

    #[test]
    fn work_handed_to_the_syncer_runs_after_a_sync_that_covers_it_and_shares_syncs() {
        let (gs, written, synced_upto, syncs) = recording();
        let (tx, rx) = mpsc::channel();
        for _ in 0..200 {
            let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
            let (tx, synced_upto) = (tx.clone(), synced_upto.clone());
            gs.later().then(move |outcome| {
                outcome.unwrap();
                // Covered: the sync that finished began after this write.
                tx.send(synced_upto.load(Ordering::SeqCst) >= mine).unwrap();
            });
        }
        for _ in 0..200 {
            assert!(
                rx.recv_timeout(Duration::from_secs(10)).unwrap(),
                "work ran before a sync covered its write"
            );
        }
        let syncs = syncs.load(Ordering::SeqCst);
        assert!(
            syncs < 200,
            "200 writes handed over shared no sync ({syncs})"
        );
    }

    #[test]
    fn a_failed_sync_fails_the_writes_it_covered_and_the_next_one_may_succeed() {
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let f = fail.clone();
        let gs = GroupSync::new("test", move || {
            if f.swap(false, Ordering::SeqCst) {
                Err(io::Error::other("device gone"))
            } else {
                Ok(())
            }
        });
        let err = gs.wait_durable().unwrap_err();
        assert!(err.to_string().contains("device gone"));
        gs.wait_durable().unwrap();

        // The same through the syncer: the covered work sees the error.
        fail.store(true, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel();
        let t = tx.clone();
        gs.later().then(move |o| t.send(o.is_err()).unwrap());
        assert!(
            rx.recv_timeout(Duration::from_secs(10)).unwrap(),
            "failed sync reported as durable"
        );
        gs.later().then(move |o| tx.send(o.is_ok()).unwrap());
        assert!(
            rx.recv_timeout(Duration::from_secs(10)).unwrap(),
            "the next sync's success lost"
        );
    }
}
