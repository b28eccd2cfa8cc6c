//! `isctl stats [-o json] [--watch SECS [--count N]]`: per target, LUN and
//! initiator, commands and bytes (and on the engine, command latency); logins by
//! outcome; session errors. With `--watch`, a sample every SECS seconds with the
//! per-second rates since the previous one (JSON: one object per line, with
//! `rates`). Counters come from the engine over its control socket, or from LIO's
//! configfs statistics (`observe::lio_stats`).

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cli::args::StatsArgs;
use crate::cli::exit;
use crate::cli::resolve::Resolved;
use crate::cli::UsageError;
use crate::observe::stats::{rates, render_text};

pub fn run(r: &Resolved, args: &StatsArgs) -> anyhow::Result<u8> {
    r.text_or_json("stats")?;
    let source = r.observe_source()?;
    let interval = match args.watch {
        None => None,
        Some(s) if s.is_finite() && s >= 0.1 => Some(Duration::from_secs_f64(s)),
        Some(s) => {
            return Err(UsageError(format!(
                "--watch {s}: give an interval of at least 0.1 seconds"
            ))
            .into())
        }
    };
    let mut out = std::io::stdout();
    let mut previous = None;
    let mut samples = 0u64;
    let mut next = Instant::now();
    loop {
        let now = source.statistics()?;
        let r8 = previous.as_ref().map(|p| rates(p, &now));
        if r.json() {
            let mut v = serde_json::to_value(&now)?;
            if let Some(r8) = &r8 {
                v["rates"] = r8
                    .iter()
                    .map(|((t, row), x)| json!({"target": t, "row": row, "commands_per_s": x.commands_per_s, "read_bytes_per_s": x.read_bytes_per_s, "written_bytes_per_s": x.written_bytes_per_s}))
                    .collect();
            }
            if interval.is_some() {
                writeln!(out, "{}", serde_json::to_string(&v)?)?;
            } else {
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            }
        } else {
            if interval.is_some() {
                writeln!(out, "--- {}", now.taken_unix_ms / 1000)?;
            }
            write!(out, "{}", render_text(&now, r8.as_ref()))?;
        }
        out.flush()?;
        samples += 1;
        let Some(every) = interval else { break };
        if args.count.is_some_and(|n| samples > n) {
            break;
        }
        previous = Some(now);
        next += every;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    Ok(exit::OK)
}
