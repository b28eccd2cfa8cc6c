//! The issue-12 flood against `isctl serve` at full size: 5,000 idle TCP connections
//! plus 200 slow-drip logins from 8 loopback addresses, with the engine's defaults
//! (15 s login timeout), while libiscsi's iscsi-perf runs 4 KiB random reads at QD 8
//! on a logged-in session. Prints the session's IOPS before and during the flood and
//! their ratio (goal ≥ 50%), the engine's peak threads and RSS, and how many flood
//! connections the engine closed. Exits 1 if the session dropped, the ratio is under
//! 50%, or a flood connection was left open.
//!
//!   cargo bench --bench engine_flood
//!   FLOOD_IDLE=5000 FLOOD_DRIPS=200 FLOOD_SOURCES=8 FLOOD_SECONDS=30 cargo bench --bench engine_flood
//!
//! Needs libiscsi-bin. The smaller flood with asserted bounds is tests/engine_flood.rs.

#[path = "../tests/conformance/engine.rs"]
mod engine;
#[path = "../tests/flood/mod.rs"]
mod flood;

use std::time::{Duration, Instant};

use engine::{free_port, start_engine, work_dir};
use flood::{Flood, Perf, ProcSampler, Spec};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let idle = env("FLOOD_IDLE", 5000) as usize;
    let drips = env("FLOOD_DRIPS", 200) as usize;
    let sources = env("FLOOD_SOURCES", 8).clamp(1, 200) as u8;
    let seconds = env("FLOOD_SECONDS", 30);

    let dir = work_dir();
    let port = free_port();
    let model = flood::model(dir.path(), port);
    let engine = start_engine(dir.path(), &model, port);
    let (threads0, rss0) = flood::threads_and_rss(engine.pid());

    let warmup = 5;
    let perf = Perf::start(&flood::url(port), warmup + seconds + 2, 8);
    std::thread::sleep(Duration::from_secs(warmup));
    let before = perf.iops_between(
        Instant::now() - Duration::from_secs(warmup - 1),
        Instant::now(),
    );

    let sampler = ProcSampler::start(engine.pid(), Duration::from_millis(100));
    let flooding = Instant::now();
    let flood = Flood::start(Spec {
        port,
        idle,
        drips,
        drip_every: Duration::from_millis(500),
        sources: flood::sources(sources),
    });
    let opened_in = flooding.elapsed();
    std::thread::sleep(Duration::from_secs(seconds).saturating_sub(opened_in));
    let during = perf.iops_between(flooding, Instant::now());
    // Default login timeout 15 s: everything left must be closed within it (+ margin).
    let out = flood.finish(Duration::from_secs(20));
    let (threads, rss) = sampler.peaks();
    drop(sampler);
    let (perf_ok, perf_out) = perf.wait();
    let (threads_after, rss_after) = flood::threads_and_rss(engine.pid());

    let ratio = match (before, during) {
        (Some(b), Some(d)) if b > 0.0 => d / b,
        _ => 0.0,
    };
    println!("engine flood, {seconds} s: {idle} idle + {drips} slow-drip logins from {sources} addresses (127.0.0.2..)");
    println!("  idle connections opened       {}", out.idle_opened);
    println!("  drip connections opened       {}", out.drip_opened);
    println!("  connects that failed          {}", out.connect_failed);
    println!("  closed by the engine          {}", out.closed_by_engine);
    println!("  left open                     {}", out.left_open);
    println!("  engine threads  rest {threads0:>5}  peak {threads:>5}  after {threads_after:>5}");
    println!(
        "  engine RSS MiB  rest {:>5.1}  peak {:>5.1}  after {:>5.1}",
        rss0 as f64 / 1024.0,
        rss as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    println!(
        "  iscsi-perf IOPS before {:.0}, during {:.0}: {:.0}% (goal >= 50%)",
        before.unwrap_or(0.0),
        during.unwrap_or(0.0),
        ratio * 100.0
    );
    println!("  logged-in session survived    {perf_ok}");
    let mut failed = Vec::new();
    if !perf_ok {
        failed.push(format!("the session dropped:\n{perf_out}"));
    }
    if ratio < 0.5 {
        failed.push(format!(
            "IOPS during the flood {:.0}% of before",
            ratio * 100.0
        ));
    }
    if out.left_open > 0 {
        failed.push(format!("{} flood connections left open", out.left_open));
    }
    if !failed.is_empty() {
        eprintln!("FAILED: {}\n{}", failed.join("; "), engine.log_tail());
        std::process::exit(1);
    }
}
