//! Waiting for a listening socket without depending on anything outside the
//! engine to wake it: a short poll that also watches a stop flag. Stopping a
//! listener therefore never needs to connect to its address or path (which may be
//! gone: a control socket file removed by tmpfiles, an address no longer routable).

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// How long a stop can go unnoticed: the listener threads look at their stop flag
/// this often while idle.
pub const STOP_POLL: Duration = Duration::from_millis(100);

/// Wait until `socket` has a connection to accept (true) or a stop flag is set
/// (false).
pub fn readable_or_stopped(socket: &impl AsFd, stops: &[&AtomicBool]) -> bool {
    let timeout = PollTimeout::try_from(STOP_POLL).unwrap_or(PollTimeout::NONE);
    loop {
        if stops.iter().any(|s| s.load(Ordering::SeqCst)) {
            return false;
        }
        let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(n) if n > 0 => return true,
            Ok(_) | Err(Errno::EINTR) => {}
            // Not expected on a valid descriptor; do not spin on it.
            Err(_) => std::thread::sleep(STOP_POLL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;

    #[test]
    fn a_stop_flag_ends_the_wait_without_a_connection() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let t = std::thread::spawn(move || readable_or_stopped(&l, &[&s2]));
        std::thread::sleep(Duration::from_millis(150));
        stop.store(true, Ordering::SeqCst);
        assert!(!t.join().unwrap());
    }

    #[test]
    fn a_waiting_connection_is_reported() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        assert!(readable_or_stopped(&l, &[&AtomicBool::new(false)]));
    }
}
