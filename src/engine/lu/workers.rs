//! The I/O workers of one logical unit: a bounded pool of threads that run its commands,
//! so that one connection's queue of commands reaches the storage with the same queue
//! depth (up to the pool's size) instead of one at a time.
//!
//! Why threads and not io_uring: the command layer's handlers (`engine::scsi`) are
//! synchronous and do more than one I/O per command (COMPARE AND WRITE reads then
//! writes, WRITE AND VERIFY writes then reads, UNMAP punches several holes); blocking
//! `pread`/`pwrite`/`fdatasync` on a pool keeps them as they are and portable to every
//! Unix; tgt makes the same choice (16 threads per LUN). Its cost, a thread wake-up per
//! command, is measured in docs/engine.md: it is why LUs in memory do not use the pool
//! (`iscsi::conn` runs their commands on the connection's thread).
//!
//! The pool starts its threads on the first job and keeps at most [`io_workers`]; jobs
//! beyond that wait in its queue (a connection has at most one CmdSN window of commands
//! in flight, so the queue is bounded by the initiators' windows). Dropping the pool
//! (the LU went away in a reload) lets its threads finish the queued jobs and exit.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

/// Threads per LU per CPU, and the bounds of their number. Each blocked thread is one
/// I/O at the device: at least 16 (tgt's fixed number), chosen on 2 CPUs when a durable
/// write still held its thread through the sync (16 wrote durably at QD32 a fifth faster
/// than 8 and read a cold file as fast, docs/engine.md). Durable writes now leave their
/// sync to the file's syncer thread (`group_sync.rs`); the bound was not re-measured
/// since.
const IO_WORKERS_PER_CPU: usize = 4;
const MIN_IO_WORKERS: usize = 16;
const MAX_IO_WORKERS: usize = 32;

/// The size of an LU's pool on this machine: 4 per CPU, at least 16, at most 32.
pub fn io_workers() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cpus * IO_WORKERS_PER_CPU).clamp(MIN_IO_WORKERS, MAX_IO_WORKERS)
}

type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    threads: usize,
    idle: usize,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

/// A bounded pool of threads for one LU's commands.
pub struct IoWorkers {
    name: String,
    max: usize,
    shared: Arc<Shared>,
}

impl IoWorkers {
    /// A pool that will run at most `max` jobs at a time; `name` names its threads.
    pub fn new(name: &str, max: usize) -> IoWorkers {
        IoWorkers {
            name: name.to_string(),
            max: max.max(1),
            shared: Arc::default(),
        }
    }

    /// Queue a job; a thread runs it as soon as one is free.
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) {
        let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.jobs.push_back(Box::new(job));
        if q.idle > 0 {
            drop(q);
            self.shared.ready.notify_one();
            return;
        }
        if q.threads < self.max {
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("io-{}", self.name))
                .spawn(move || work(&shared));
            match spawned {
                Ok(_) => q.threads += 1,
                // No thread now: the job waits for a running one (there is at least one
                // unless this is the first, which then runs on the next submit's thread).
                Err(e) => tracing::warn!("cannot start an I/O thread for {}: {e}", self.name),
            }
        }
    }

    /// Threads started so far.
    pub fn threads(&self) -> usize {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .threads
    }
}

impl Drop for IoWorkers {
    fn drop(&mut self) {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .closed = true;
        self.shared.ready.notify_all();
    }
}

fn work(shared: &Shared) {
    let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if let Some(job) = q.jobs.pop_front() {
            drop(q);
            job();
            q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            continue;
        }
        if q.closed {
            q.threads -= 1;
            return;
        }
        q.idle += 1;
        q = shared.ready.wait(q).unwrap_or_else(|p| p.into_inner());
        q.idle -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn runs_jobs_concurrently_up_to_its_size_and_no_further() {
        let pool = IoWorkers::new("test", 4);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (done_tx, done_rx) = mpsc::channel();
        for _ in 0..12 {
            let (running, peak, done) = (running.clone(), peak.clone(), done_tx.clone());
            pool.submit(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(30));
                running.fetch_sub(1, Ordering::SeqCst);
                done.send(()).unwrap();
            });
        }
        for _ in 0..12 {
            done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        assert_eq!(
            peak.load(Ordering::SeqCst),
            4,
            "4 workers run 4 jobs at once"
        );
        assert_eq!(pool.threads(), 4);
    }

    #[test]
    fn dropping_the_pool_still_runs_queued_jobs() {
        let pool = IoWorkers::new("test", 1);
        let (tx, rx) = mpsc::channel();
        for i in 0..5 {
            let tx = tx.clone();
            pool.submit(move || {
                std::thread::sleep(Duration::from_millis(5));
                tx.send(i).unwrap();
            });
        }
        drop(pool);
        let got: Vec<i32> = (0..5)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }
}
