//! Soak of `isctl serve` (issue 12): 32 sessions doing verified I/O for 10 minutes
//! while the model is reloaded every 10 s and one initiator logs in and out in a loop.
//!
//! * Each session is one `qemu-io` (QEMU's iscsi driver, libiscsi) on its own target,
//!   driven interactively through a terminal (`script`) so it stays logged in: 64 KiB written with a pattern at a
//!   moving offset, then read back with the pattern checked (`read -P`), over and over.
//! * Every 10 s `isctl apply --backend userspace` switches between two models that
//!   differ in the LUNs of four other targets (a LUN added, a LUN removed).
//! * `iscsi-inq` logs in, asks INQUIRY and logs out in a loop on a fifth target.
//!
//! Prints verified I/Os, data errors (pattern mismatches), I/O errors, sessions dropped
//! (the TSIH of each session at the start, still there at the end), applies, logins,
//! and the engine's RSS and threads each minute. Exits 1 on any data error, I/O error,
//! dropped session or failed apply.
//!
//!   cargo bench --bench engine_soak
//!   SOAK_SECONDS=600 SOAK_SESSIONS=32 SOAK_RELOAD_SECONDS=10 cargo bench --bench engine_soak
//!
//! Needs qemu-utils + qemu-block-extra and libiscsi-bin.

#[path = "../tests/conformance/engine.rs"]
mod engine;
#[path = "../tests/flood/mod.rs"]
mod flood;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{free_port, start_engine, work_dir};
use flood::ProcSampler;

const BASE: &str = "iqn.2026-11.io.isctl";
const CHURN_TARGETS: usize = 4;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The model: `sessions` worker targets, a login-loop target, and churn targets whose
/// second LUN comes and goes with `variant`.
fn write_model(path: &Path, port: u16, sessions: usize, variant: bool) {
    let mut t =
        format!("[global]\nbasename = \"{BASE}\"\n[portal.p]\nlisten = [\"127.0.0.1:{port}\"]\n");
    let mut target = |name: &str, luns: &[&str]| {
        for e in luns {
            t += &format!("[extent.{e}]\ntype = \"ramdisk\"\nsize = \"8MiB\"\n");
        }
        let map: Vec<String> = luns
            .iter()
            .enumerate()
            .map(|(i, e)| format!("{i} = \"{e}\""))
            .collect();
        t += &format!(
            "[target.{name}]\nluns = {{ {} }}\n[[target.{name}.group]]\nportal = \"p\"\n",
            map.join(", ")
        );
    };
    for i in 0..sessions {
        target(&format!("w{i:02}"), &[&format!("w{i:02}-d")]);
    }
    target("loop", &["loop-d"]);
    for i in 0..CHURN_TARGETS {
        let (a, b) = (format!("c{i}-a"), format!("c{i}-b"));
        // Odd churn targets lose a LUN when even ones gain one, and back.
        if variant == (i % 2 == 0) {
            target(&format!("c{i}"), &[&a, &b]);
        } else {
            target(&format!("c{i}"), &[&a]);
        }
    }
    std::fs::write(path, t).expect("write the model");
}

fn isctl(sock: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_isctl"));
    c.arg("--socket")
        .arg(sock)
        .args(["--backend", "userspace"])
        .stdin(Stdio::null());
    c
}

/// Logged-in sessions: target short name → TSIH.
fn sessions(sock: &Path) -> BTreeMap<String, u64> {
    let o = isctl(sock)
        .args(["sessions", "-o", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v["records"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| {
                    let t = s["target"].as_str()?.strip_prefix(&format!("{BASE}:"))?;
                    Some((t.to_string(), s["tsih"].as_u64()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Default)]
struct Counts {
    verified: AtomicU64,
    data_errors: AtomicU64,
    io_errors: AtomicU64,
}

/// One verified-I/O session: qemu-io on target `name`, until `stop`.
fn worker(
    port: u16,
    name: String,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let url = format!("iscsi://127.0.0.1:{port}/{BASE}:{name}/0");
        // On a terminal (script(1) gives it one): from a pipe, qemu-io runs each
        // command only once more input arrives.
        let mut child = Command::new("script")
            .args(["-qfec", &format!("qemu-io -f raw {url}"), "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run qemu-io: install qemu-utils and qemu-block-extra");
        let mut input = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        // Commands answered (written or read back, good or bad): paces the writer.
        let answered = Arc::new(AtomicU64::new(0));
        let (a2, c2) = (answered.clone(), counts.clone());
        let reader = std::thread::spawn(move || {
            let mut errors = Vec::new();
            for line in out.lines().map_while(Result::ok) {
                let result = line.contains("bytes at offset");
                if line.contains("Pattern verification failed") {
                    c2.data_errors.fetch_add(1, Ordering::SeqCst);
                    errors.push(line);
                } else if line.contains("failed") || line.contains("rror") {
                    c2.io_errors.fetch_add(1, Ordering::SeqCst);
                    a2.fetch_add(1, Ordering::SeqCst);
                    errors.push(line);
                } else if result {
                    if line.contains("read ") {
                        c2.verified.fetch_add(1, Ordering::SeqCst);
                    }
                    a2.fetch_add(1, Ordering::SeqCst);
                }
            }
            errors
        });
        let size: u64 = 8 << 20;
        let mut sent: u64 = 0;
        'run: for k in 0u64.. {
            let off = (k * 65536 + (k % 7) * 512) % (size - 65536);
            let pattern = (k % 254) + 1;
            // One command at a time: qemu-io's line editor takes one line per read.
            for cmd in [
                format!("write -P {pattern} {off} 64k\n"),
                format!("read -P {pattern} {off} 64k\n"),
            ] {
                if stop.load(Ordering::SeqCst) || input.write_all(cmd.as_bytes()).is_err() {
                    break 'run; // stopping, or qemu-io is gone (its output says why)
                }
                sent += 1;
                let deadline = Instant::now() + Duration::from_secs(30);
                while answered.load(Ordering::SeqCst) < sent && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = input.write_all(b"quit\n");
        drop(input);
        let _ = child.wait();
        let mut errors = reader.join().unwrap_or_default();
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        if !err.trim().is_empty() {
            errors.push(format!("{name} stderr: {}", err.trim()));
        }
        errors
    })
}

fn main() {
    let seconds = env("SOAK_SECONDS", 600);
    let n = env("SOAK_SESSIONS", 32) as usize;
    let reload_every = Duration::from_secs(env("SOAK_RELOAD_SECONDS", 10));

    let dir = work_dir();
    let port = free_port();
    let model: PathBuf = dir.path().join("soak.toml");
    write_model(&model, port, n, false);
    let sock = dir.path().join("engine.sock");
    let engine = start_engine(dir.path(), &model, port);
    let sampler = ProcSampler::start(engine.pid(), Duration::from_secs(1));

    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let workers: Vec<_> = (0..n)
        .map(|i| worker(port, format!("w{i:02}"), stop.clone(), counts.clone()))
        .collect();
    // Every session logged in?
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        let s = sessions(&sock);
        let w = s.keys().filter(|t| t.starts_with('w')).count();
        if w == n || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let started = Instant::now();

    let (stop2, sock2, model2) = (stop.clone(), sock.clone(), model.clone());
    let reloader = std::thread::spawn(move || {
        let (mut ok, mut failed, mut variant) = (0u64, Vec::new(), false);
        while !stop2.load(Ordering::SeqCst) {
            std::thread::sleep(reload_every);
            variant = !variant;
            write_model(&model2, port, n, variant);
            let o = isctl(&sock2)
                .args(["apply", "--auto-approve"])
                .arg(&model2)
                .output()
                .unwrap();
            if o.status.success() {
                ok += 1;
            } else {
                failed.push(String::from_utf8_lossy(&o.stderr).to_string());
            }
        }
        (ok, failed)
    });
    let stop3 = stop.clone();
    let looper = std::thread::spawn(move || {
        let (mut ok, mut failed) = (0u64, 0u64);
        while !stop3.load(Ordering::SeqCst) {
            let o = Command::new("iscsi-inq")
                .arg(format!("iscsi://127.0.0.1:{port}/{BASE}:loop/0"))
                .output()
                .expect("run iscsi-inq (libiscsi-bin)");
            if o.status.success() {
                ok += 1;
            } else {
                failed += 1;
            }
        }
        (ok, failed)
    });

    println!("soak: {n} sessions of verified I/O, reload every {reload_every:?}, a login loop; {seconds} s");
    println!("  minute  verified I/Os  data errors  I/O errors  RSS MiB  threads");
    let mut minute = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(1));
        let m = started.elapsed().as_secs() / 60;
        if m > minute || started.elapsed() >= Duration::from_secs(seconds) {
            minute = m;
            let (_, threads, rss) = *sampler.samples().last().unwrap();
            println!(
                "  {:>6}  {:>13}  {:>11}  {:>10}  {:>7.1}  {:>7}",
                started.elapsed().as_secs() / 60,
                counts.verified.load(Ordering::SeqCst),
                counts.data_errors.load(Ordering::SeqCst),
                counts.io_errors.load(Ordering::SeqCst),
                rss as f64 / 1024.0,
                threads
            );
        }
    }
    let last = sessions(&sock);
    stop.store(true, Ordering::SeqCst);
    let mut errors = Vec::new();
    for w in workers {
        errors.extend(w.join().unwrap_or_default());
    }
    let (applies, apply_failures) = reloader.join().unwrap();
    let (logins, login_failures) = looper.join().unwrap();
    let samples = sampler.samples();
    drop(sampler);

    let workers_first: BTreeMap<_, _> = first.iter().filter(|(t, _)| t.starts_with('w')).collect();
    let dropped_targets: Vec<String> = (0..n)
        .map(|i| format!("w{i:02}"))
        .filter(|t| {
            workers_first
                .get(t)
                .is_none_or(|tsih| last.get(t) != Some(*tsih))
        })
        .map(|t| {
            let (a, b) = (first.get(&t), last.get(&t));
            format!("{t} (TSIH {a:?} at the start, {b:?} at the end)")
        })
        .collect();
    let dropped = dropped_targets.len();
    let window = |from: Duration, to: Duration| {
        let v: Vec<u64> = samples
            .iter()
            .filter(|(t, _, _)| {
                let at = t.saturating_duration_since(started);
                at >= from && at < to
            })
            .map(|s| s.2)
            .collect();
        v.iter().sum::<u64>() as f64 / v.len().max(1) as f64 / 1024.0
    };
    let span = Duration::from_secs(seconds);
    let tail = Duration::from_secs((seconds / 10).max(10));
    // From the second minute: by then every ramdisk has been written through once
    // (a ramdisk's pages are allocated as they are first written).
    let settled = if seconds >= 180 {
        Duration::from_secs(60)
    } else {
        Duration::ZERO
    };
    let rss_start = window(settled, settled + tail);
    let rss_end = window(span.saturating_sub(tail), span + Duration::from_secs(5));

    let v = |a: &AtomicU64| a.load(Ordering::SeqCst);
    println!("  verified I/Os (64 KiB read back) {}", v(&counts.verified));
    println!(
        "  data errors                      {}",
        v(&counts.data_errors)
    );
    println!(
        "  I/O errors                       {}",
        v(&counts.io_errors)
    );
    println!("  sessions dropped                 {dropped} of {n}");
    println!(
        "  applies                          {applies} ok, {} failed",
        apply_failures.len()
    );
    println!("  login/logout loop                {logins} ok, {login_failures} failed");
    println!(
        "  engine RSS MiB                   first {:?} {rss_start:.1}, last {:?} {rss_end:.1}",
        tail, tail
    );
    for t in &dropped_targets {
        println!("  ! session dropped: {t}");
    }
    for e in errors.iter().take(10) {
        println!("  ! {e}");
    }
    for e in apply_failures.iter().take(3) {
        println!("  ! apply: {e}");
    }
    let failed = v(&counts.data_errors) > 0
        || v(&counts.io_errors) > 0
        || dropped > 0
        || !apply_failures.is_empty()
        || login_failures > 0;
    if failed {
        let kept = std::env::temp_dir().join(format!("isctl-soak-{}.log", std::process::id()));
        let _ = std::fs::write(&kept, engine.log());
        eprintln!("FAILED (the engine's log is kept in {})", kept.display());
        std::process::exit(1);
    }
}
