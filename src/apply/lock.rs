//! The apply lock: an exclusive `flock(2)` on `<state-dir>/lock`, so that two
//! applies never interleave their writes. Released when the [`ApplyLock`] drops
//! (or the process dies: the kernel releases flocks with the file).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    #[error("another isctl apply holds the lock {path} (waited {waited_secs} s); wait for it to finish, or pass --lock-timeout SECS to wait longer")]
    Held { path: PathBuf, waited_secs: u64 },
    #[error("cannot open the lock file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Holds the lock while alive.
#[derive(Debug)]
pub struct ApplyLock {
    _lock: Flock<File>,
    pub path: PathBuf,
}

/// Take the lock, waiting up to `timeout` (zero: fail at once).
pub fn acquire(state_dir: &Path, timeout: Duration) -> Result<ApplyLock, LockError> {
    let path = state_dir.join("lock");
    crate::apply::ledger::ensure_state_dir(state_dir).map_err(|source| LockError::Io {
        path: path.clone(),
        source,
    })?;
    let start = Instant::now();
    loop {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| LockError::Io {
                path: path.clone(),
                source,
            })?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(ApplyLock { _lock: lock, path }),
            Err((_, Errno::EWOULDBLOCK)) => {
                if start.elapsed() >= timeout {
                    return Err(LockError::Held {
                        path,
                        waited_secs: start.elapsed().as_secs(),
                    });
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err((_, e)) => {
                return Err(LockError::Io {
                    path,
                    source: std::io::Error::from(e),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_then_waits() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path(), Duration::ZERO).unwrap();
        let e = acquire(dir.path(), Duration::ZERO).unwrap_err();
        assert!(matches!(e, LockError::Held { .. }), "{e}");
        assert!(e.to_string().contains("--lock-timeout"));
        let d = dir.path().to_path_buf();
        let waiter = std::thread::spawn(move || acquire(&d, Duration::from_secs(10)).map(|_| ()));
        std::thread::sleep(Duration::from_millis(300));
        drop(first);
        waiter.join().unwrap().unwrap();
    }
}
