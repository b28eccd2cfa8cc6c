//! A connection flood against `isctl serve`, shared by the flood test
//! (tests/engine_flood.rs) and benchmark (benches/engine_flood.rs): idle TCP
//! connections that never send a byte, and slow-drip logins that send a Login
//! Request a byte at a time, from several loopback source addresses (127.0.0.x);
//! with the engine's thread count and RSS sampled from /proc and a real initiator's
//! (libiscsi's iscsi-perf) IOPS read from its progress lines.

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A TCP connection to 127.0.0.1:`port` from `source` (std cannot bind before
/// connecting, so the socket calls are made here).
pub fn connect_from(source: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
        libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        }
    }
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor owned by `fd` from creation on; the
    // addresses are valid sockaddr_in values of the length passed.
    unsafe {
        let raw = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(raw);
        let from = sockaddr(source, 0);
        if libc::bind(raw, (&from as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let to = sockaddr(Ipv4Addr::LOCALHOST, port);
        if libc::connect(raw, (&to as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(TcpStream::from(fd))
    }
}

/// Has the peer closed (EOF or reset)? Non-blocking look.
fn closed_by_peer(s: &mut TcpStream) -> bool {
    let _ = s.set_nonblocking(true);
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a login reject or the like: keep reading to the end
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

/// The first bytes of a Login Request (opcode 0x43, T=1 CSG=1 NSG=3, version 0).
fn login_header() -> [u8; 48] {
    let mut h = [0u8; 48];
    h[0] = 0x43;
    h[1] = 0x87;
    h
}

/// What the flood does.
#[derive(Debug, Clone)]
pub struct Spec {
    pub port: u16,
    /// Idle connections opened (in total, over the whole flood).
    pub idle: usize,
    /// Slow-drip logins running at once (each reconnects when the engine cuts it).
    pub drips: usize,
    /// One byte every this often.
    pub drip_every: Duration,
    /// Source addresses, used in turn.
    pub sources: Vec<Ipv4Addr>,
}

/// What the flood saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    pub idle_opened: usize,
    pub drip_opened: usize,
    /// Connect failures (the engine's backlog full, or refused).
    pub connect_failed: usize,
    pub closed_by_engine: usize,
    /// Still open when the flood gave up waiting.
    pub left_open: usize,
}

/// A running flood.
pub struct Flood {
    stop: Arc<AtomicBool>,
    idle: Vec<TcpStream>,
    drips: Vec<JoinHandle<(usize, usize, bool)>>,
    connect_failed: Arc<AtomicUsize>,
}

impl Flood {
    /// Start the drips, then open the idle connections (returns once they are open).
    pub fn start(spec: Spec) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let connect_failed = Arc::new(AtomicUsize::new(0));
        let drips = (0..spec.drips)
            .map(|i| {
                let source = spec.sources[(i + 1) % spec.sources.len()];
                let (port, every, stop, failed) = (
                    spec.port,
                    spec.drip_every,
                    stop.clone(),
                    connect_failed.clone(),
                );
                std::thread::spawn(move || drip(source, port, every, &stop, &failed))
            })
            .collect();
        let mut idle = Vec::with_capacity(spec.idle);
        for i in 0..spec.idle {
            match connect_from(spec.sources[i % spec.sources.len()], spec.port) {
                Ok(s) => idle.push(s),
                Err(_) => {
                    connect_failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        Flood {
            stop,
            idle,
            drips,
            connect_failed,
        }
    }

    /// Stop sending and wait up to `patience` for the engine to close every flood
    /// connection.
    pub fn finish(self, patience: Duration) -> Outcome {
        self.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + patience;
        let mut open = self.idle;
        let idle_opened = open.len();
        let mut closed = 0;
        while !open.is_empty() && Instant::now() < deadline {
            let before = open.len();
            open.retain_mut(|s| !closed_by_peer(s));
            closed += before - open.len();
            if !open.is_empty() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let mut out = Outcome {
            idle_opened,
            closed_by_engine: closed,
            left_open: open.len(),
            ..Outcome::default()
        };
        for d in self.drips {
            let (opened, cut, open_at_end) = d.join().expect("drip thread");
            out.drip_opened += opened;
            out.closed_by_engine += cut;
            out.left_open += usize::from(open_at_end);
        }
        out.connect_failed = self.connect_failed.load(Ordering::SeqCst);
        out
    }
}

/// One slow-drip login: a byte of a Login Request every `every`; when the engine
/// closes it, connect again, until `stop`. Then wait (up to 60 s) for the engine to
/// close the last one. (connections opened, closed by the engine, left open).
fn drip(
    source: Ipv4Addr,
    port: u16,
    every: Duration,
    stop: &AtomicBool,
    failed: &AtomicUsize,
) -> (usize, usize, bool) {
    let header = login_header();
    let (mut opened, mut cut) = (0, 0);
    let mut conn: Option<(TcpStream, usize)> = None;
    while !stop.load(Ordering::SeqCst) {
        let (s, sent) = match conn.as_mut() {
            Some(c) => c,
            None => match connect_from(source, port) {
                Ok(s) => {
                    opened += 1;
                    conn.insert((s, 0))
                }
                Err(_) => {
                    failed.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(every);
                    continue;
                }
            },
        };
        let _ = s.set_nonblocking(false);
        let wrote = s.write(&header[*sent % 48..*sent % 48 + 1]);
        if wrote.is_err() || closed_by_peer(s) {
            cut += 1;
            conn = None;
        } else {
            *sent += 1;
        }
        std::thread::sleep(every);
    }
    let open_at_end = match conn {
        Some((mut s, _)) => {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if closed_by_peer(&mut s) {
                    cut += 1;
                    break false;
                }
                if Instant::now() > deadline {
                    break true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        None => false,
    };
    (opened, cut, open_at_end)
}

/// Threads and resident memory of a process, sampled until dropped.
pub struct ProcSampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(Instant, u64, u64)>>>,
    thread: Option<JoinHandle<()>>,
}

/// (threads, RSS in KiB) of `pid` now.
pub fn threads_and_rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("Threads:"), field("VmRSS:"))
}

impl ProcSampler {
    pub fn start(pid: u32, every: Duration) -> ProcSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s2, v2) = (stop.clone(), samples.clone());
        let thread = std::thread::spawn(move || {
            while !s2.load(Ordering::SeqCst) {
                let (t, r) = threads_and_rss(pid);
                v2.lock().unwrap().push((Instant::now(), t, r));
                std::thread::sleep(every);
            }
        });
        ProcSampler {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    /// (max threads, max RSS KiB) so far.
    pub fn peaks(&self) -> (u64, u64) {
        let v = self.samples.lock().unwrap();
        (
            v.iter().map(|s| s.1).max().unwrap_or(0),
            v.iter().map(|s| s.2).max().unwrap_or(0),
        )
    }

    pub fn samples(&self) -> Vec<(Instant, u64, u64)> {
        self.samples.lock().unwrap().clone()
    }
}

impl Drop for ProcSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// libiscsi's iscsi-perf on one LUN, its progress lines timestamped as they come.
pub struct Perf {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    reader: Option<JoinHandle<()>>,
}

impl Perf {
    /// `iscsi-perf -t SECONDS -m DEPTH -r -x 0 URL`: random 4 KiB reads, no reconnects
    /// allowed (a dropped session fails it).
    pub fn start(url: &str, seconds: u64, depth: u32) -> Perf {
        let mut child = Command::new("iscsi-perf")
            .args(["-t", &seconds.to_string(), "-m", &depth.to_string()])
            .args(["-b", "8", "-r", "-x", "0", url])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run iscsi-perf: install libiscsi-bin (tests/install-deps.sh)");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut out = child.stdout.take().unwrap();
        let l2 = lines.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut partial = String::new();
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                partial.push_str(&String::from_utf8_lossy(&buf[..n]));
                while let Some(end) = partial.find(['\r', '\n']) {
                    let line: String = partial.drain(..=end).collect();
                    let line = line.trim().to_string();
                    if !line.is_empty() {
                        l2.lock().unwrap().push((Instant::now(), line));
                    }
                }
            }
        });
        Perf {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// Mean of the IOPS figures iscsi-perf printed between `from` and `to`.
    pub fn iops_between(&self, from: Instant, to: Instant) -> Option<f64> {
        let lines = self.lines.lock().unwrap();
        let v: Vec<f64> = lines
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .filter_map(|(_, l)| iops_of(l))
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }

    /// Wait for the end: (succeeded, everything it printed).
    pub fn wait(mut self) -> (bool, String) {
        let status = self.child.wait().expect("wait for iscsi-perf");
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let lines = self.lines.lock().unwrap();
        let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
        (status.success(), format!("{}\n{err}", text.join("\n")))
    }
}

/// The IOPS of an iscsi-perf progress line ("... 12345 IOPS ..." or "IOPS: 12345").
pub fn iops_of(line: &str) -> Option<f64> {
    let words: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || c == ',' || c == ':' || c == '=')
        .filter(|w| !w.is_empty())
        .collect();
    let at = words.iter().position(|w| w.eq_ignore_ascii_case("iops"))?;
    let before = at.checked_sub(1).and_then(|i| words[i].parse().ok());
    before.or_else(|| words.get(at + 1)?.parse().ok())
}

/// The engine's port as a socket address (for messages).
pub fn portal(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// The target the flood tests and benchmark use.
pub const TARGET: &str = "iqn.2026-11.io.isctl:flood";

/// A model with one ramdisk target on 127.0.0.1:`port`; the path written.
pub fn model(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let text = format!(
        "[portal.p]\nlisten = [\"127.0.0.1:{port}\"]\n\n\
         [extent.ram]\ntype = \"ramdisk\"\nsize = \"64MiB\"\n\n\
         [target.\"{TARGET}\"]\nluns = {{ 0 = \"ram\" }}\n\
         [[target.\"{TARGET}\".group]]\nportal = \"p\"\n"
    );
    let path = dir.join("flood.toml");
    std::fs::write(&path, text).expect("write the model");
    path
}

/// The iSCSI URL of the flood target's LUN 0.
pub fn url(port: u16) -> String {
    format!("iscsi://127.0.0.1:{port}/{TARGET}/0")
}

/// 127.0.0.2, 127.0.0.3, ...: `n` flood sources (127.0.0.1 is the initiator's).
pub fn sources(n: u8) -> Vec<Ipv4Addr> {
    (2..2 + n).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect()
}
