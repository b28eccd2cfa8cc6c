//! Starting `isctl serve` for tests that talk to it with real initiators.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `isctl serve`, killed when dropped.
pub struct Engine {
    child: Child,
    log: PathBuf,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port nobody listens on, distinct for every call in this process, and below
/// Linux's ephemeral range (32768-60999) so that no initiator's source port and no
/// other test's engine can take it between this call and the engine's bind.
#[allow(dead_code)]
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 400) as u16 * 25,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(port < 32_000, "no free test port left");
        // Both: a port we can bind, and one nobody accepts on (a listener bound with
        // SO_REUSEADDR elsewhere, e.g. a wildcard one, does not always stop the bind).
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpStream::connect(("127.0.0.1", port)).is_err()
        {
            return port;
        }
    }
}

#[allow(dead_code)]
impl Engine {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Send a signal and, for SIGTERM/SIGINT, wait (up to 20 s) for the exit status.
    pub fn signal(&mut self, sig: &str) -> Option<std::process::ExitStatus> {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} failed");
        if sig != "TERM" && sig != "INT" {
            return None;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "isctl serve did not stop within 20 s of SIG{sig}:\n{}",
            self.log_tail()
        );
    }
}

impl Engine {
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

pub fn work_dir() -> tempfile::TempDir {
    // tmpfs keeps a 512 MiB LUN's writes off the disk and makes the run faster.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("isctl-conformance-")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::Builder::new()
        .prefix("isctl-conformance-")
        .tempdir()
        .expect("create a temporary directory")
}

/// Start `isctl serve MODEL` and wait until it accepts connections on `port`.
#[allow(dead_code)]
pub fn start_engine(dir: &Path, model: &Path, port: u16) -> Engine {
    start_engine_with(dir, model, port, &[])
}

/// [`start_engine`] with more `isctl serve` arguments.
pub fn start_engine_with(dir: &Path, model: &Path, port: u16, serve_args: &[&str]) -> Engine {
    if TcpStream::connect(("127.0.0.1", port)).is_ok() {
        panic!("port {port} is already in use: stop whatever listens there and rerun");
    }
    let log = dir.join("serve.log");
    let log_file = std::fs::File::create(&log).expect("create serve.log");
    let child = Command::new(env!("CARGO_BIN_EXE_isctl"))
        .arg("--socket")
        .arg(dir.join("engine.sock"))
        .arg("serve")
        .arg(model)
        .args(serve_args)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("clone log handle"))
        .stderr(log_file)
        .spawn()
        .expect("start isctl serve");
    let mut engine = Engine { child, log };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = engine.child.try_wait() {
            panic!(
                "isctl serve exited ({status}) before listening:\n{}",
                engine.log_tail()
            );
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return engine;
        }
        if Instant::now() > deadline {
            panic!(
                "isctl serve did not listen on port {port} within 30 s:\n{}",
                engine.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
