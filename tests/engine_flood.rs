//! A connection flood cannot take the engine down: 1,000 idle connections and 40
//! slow-drip logins from four loopback addresses while libiscsi's iscsi-perf runs I/O
//! on a logged-in session. The session keeps working (iscsi-perf allows no
//! reconnect), the engine's threads and RSS stay under stated bounds, and the engine
//! closes every flood connection (idle ones to make room or at the login timeout,
//! drips at the login timeout). The full-size flood (5,000 idle, IOPS ratio) is
//! `cargo bench --bench engine_flood`.
//!
//! Needs libiscsi-bin (tests/install-deps.sh). Takes about 20 s.

#[path = "conformance/engine.rs"]
mod engine;
#[path = "flood/mod.rs"]
mod flood;

use std::process::Command;
use std::time::{Duration, Instant};

use engine::{free_port, start_engine_with, work_dir};
use flood::{Flood, Perf, ProcSampler, Spec};

/// `isctl serve`'s default --max-logins: login threads never exceed it.
const MAX_LOGINS: u64 = 64;
/// Threads beside logins: main, the login gate, listener, control socket, the
/// logged-in connection, and slack for the runtime's own.
const OTHER_THREADS: u64 = 12;
/// RSS growth allowed during the flood.
const RSS_GROWTH_KIB: u64 = 48 * 1024;

#[test]
#[ignore = "needs libiscsi-bin: run via tests/run.sh"]
fn a_flood_leaves_the_logged_in_session_working_and_the_engine_bounded() {
    let dir = work_dir();
    let port = free_port();
    let model = flood::model(dir.path(), port);
    // A short login timeout keeps the test short; the benchmark runs the default 15 s.
    let engine = start_engine_with(dir.path(), &model, port, &["--login-timeout", "5"]);
    let (threads0, rss0) = flood::threads_and_rss(engine.pid());

    let perf = Perf::start(&flood::url(port), 18, 8);
    std::thread::sleep(Duration::from_secs(3));
    let before = perf.iops_between(Instant::now() - Duration::from_secs(2), Instant::now());

    let sampler = ProcSampler::start(engine.pid(), Duration::from_millis(50));
    let flooding = Instant::now();
    let flood = Flood::start(Spec {
        port,
        idle: 1000,
        drips: 40,
        drip_every: Duration::from_millis(250),
        sources: flood::sources(4),
    });
    std::thread::sleep(Duration::from_secs(8));
    let during = perf.iops_between(flooding, Instant::now());
    // The engine's login timeout (5 s) closes whatever is left; give it twice that.
    let out = flood.finish(Duration::from_secs(10));
    let (threads, rss) = sampler.peaks();
    drop(sampler);
    let (perf_ok, perf_out) = perf.wait();

    println!(
        "flood: {} idle + {} drip connections ({} connects failed); closed by the engine: {}, left open: {}",
        out.idle_opened, out.drip_opened, out.connect_failed, out.closed_by_engine, out.left_open
    );
    println!(
        "engine: threads {threads0} at rest, peak {threads}; RSS {} MiB at rest, peak {} MiB",
        rss0 / 1024,
        rss / 1024
    );
    println!("iscsi-perf IOPS before the flood {before:?}, during {during:?}");

    assert!(
        perf_ok,
        "the logged-in session did not survive the flood:\n{perf_out}\n{}",
        engine.log_tail()
    );
    assert!(
        before.is_some() && during.is_some(),
        "iscsi-perf printed no IOPS figures:\n{perf_out}"
    );
    assert!(
        out.idle_opened >= 900,
        "the flood did not open its connections: {out:?}"
    );
    assert!(out.drip_opened >= 40, "{out:?}");
    assert_eq!(
        out.left_open, 0,
        "flood connections the engine never closed: {out:?}"
    );
    assert!(
        out.closed_by_engine >= out.idle_opened + out.drip_opened,
        "{out:?}"
    );
    assert!(
        threads <= MAX_LOGINS + OTHER_THREADS,
        "the engine ran {threads} threads (bound {})",
        MAX_LOGINS + OTHER_THREADS
    );
    assert!(
        rss <= rss0 + RSS_GROWTH_KIB,
        "the engine's RSS grew from {rss0} KiB to {rss} KiB"
    );
    // Still serving new logins once the flood is over.
    let inq = Command::new("iscsi-inq")
        .arg(flood::url(port))
        .output()
        .expect("run iscsi-inq (libiscsi-bin)");
    assert!(
        inq.status.success(),
        "no login after the flood: {}\n{}",
        String::from_utf8_lossy(&inq.stderr),
        engine.log_tail()
    );
    assert!(
        engine.log().contains("connections before login"),
        "the engine did not report the flood:\n{}",
        engine.log_tail()
    );
}
