//! Group commit for durable writes: writes that must be on stable storage before they
//! complete (FUA, or every write of an LU with `write_back = false`) share one
//! `fdatasync` instead of each paying for its own.
//!
//! Why: at queue depth 32 the I/O workers write concurrently; with one `O_DSYNC` write
//! each, the kernel runs one sync per write (each a writeback of one page and a wait).
//! Here each worker writes into the page cache, then waits for a sync that started
//! after its write returned: the first waiter runs `fdatasync` for everyone who wrote
//! before it began, the others wait for it (or for the next one). The contract is the
//! same as `O_DSYNC`'s: when [`GroupSync::wait_durable`] returns, the caller's write is
//! on stable storage. Measured in docs/engine.md.

use std::io;
use std::sync::{Condvar, Mutex};

#[derive(Default)]
struct Progress {
    /// Tickets handed out: one per write that asked to become durable.
    requested: u64,
    /// Every ticket up to this one is durable.
    durable: u64,
    /// A sync is running; it covers the tickets up to `covering`.
    running: bool,
    covering: u64,
    /// Syncs that failed, as (first ticket, last ticket, error): the writes they
    /// covered fail even if a later sync succeeds (after a failed `fdatasync` the
    /// kernel may have dropped those pages). The most recent few are kept.
    failed: Vec<(u64, u64, io::ErrorKind, String)>,
}

/// Failed syncs remembered for the waiters that have not woken yet.
const FAILURES_KEPT: usize = 64;

/// One file's group commit.
#[derive(Default)]
pub struct GroupSync {
    progress: Mutex<Progress>,
    done: Condvar,
}

impl std::fmt::Debug for GroupSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupSync").finish_non_exhaustive()
    }
}

impl GroupSync {
    pub fn new() -> GroupSync {
        GroupSync::default()
    }

    /// Call after a write returned: returns once a `sync` that began after that moment
    /// has completed. `sync` is the file's `fdatasync`; it runs on one waiter's thread
    /// at a time.
    pub fn wait_durable(&self, sync: impl Fn() -> io::Result<()>) -> io::Result<()> {
        let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        p.requested += 1;
        let ticket = p.requested;
        loop {
            if let Some((_, _, kind, msg)) = p
                .failed
                .iter()
                .find(|(from, upto, _, _)| (*from..=*upto).contains(&ticket))
            {
                return Err(io::Error::new(*kind, msg.clone()));
            }
            if p.durable >= ticket {
                return Ok(());
            }
            if !p.running {
                // Run a sync for every write that returned so far (ours included).
                p.running = true;
                let (first, covering) = (p.durable + 1, p.requested);
                p.covering = covering;
                drop(p);
                let result = sync();
                p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
                p.running = false;
                match result {
                    Ok(()) => p.durable = p.durable.max(covering),
                    Err(e) => {
                        if p.failed.len() == FAILURES_KEPT {
                            p.failed.remove(0);
                        }
                        p.failed.push((first, covering, e.kind(), e.to_string()));
                    }
                }
                self.done.notify_all();
                continue;
            }
            p = self.done.wait(p).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_write_is_covered_only_by_a_sync_that_began_after_it() {
        // `written` counts writes; each sync records how many writes it saw at its start.
        // A waiter must only return after a sync whose start saw its write.
        let gs = Arc::new(GroupSync::new());
        let written = Arc::new(AtomicU64::new(0));
        let synced_upto = Arc::new(AtomicU64::new(0));
        let syncs = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (gs, written, synced_upto, syncs) = (
                    gs.clone(),
                    written.clone(),
                    synced_upto.clone(),
                    syncs.clone(),
                );
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                        gs.wait_durable(|| {
                            let seen = written.load(Ordering::SeqCst);
                            std::thread::sleep(Duration::from_micros(300));
                            synced_upto.fetch_max(seen, Ordering::SeqCst);
                            syncs.fetch_add(1, Ordering::SeqCst);
                            Ok(())
                        })
                        .unwrap();
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
    fn a_failed_sync_fails_the_writes_it_covered_and_the_next_one_may_succeed() {
        let gs = GroupSync::new();
        let err = gs
            .wait_durable(|| Err(io::Error::other("device gone")))
            .unwrap_err();
        assert!(err.to_string().contains("device gone"));
        gs.wait_durable(|| Ok(())).unwrap();
    }
}
