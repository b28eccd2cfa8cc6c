//! `isctl watch PATH`: keep the live configuration matching the model as it
//! changes (`watch::run`), on either backend: apply at start, after each burst of
//! changes, on SIGHUP; re-plan every `--interval` to report drift (`--repair`
//! applies it). Never forces; refusals and invalid models are logged and wait for
//! the next change. Runs until SIGTERM or SIGINT (exit 0).

use std::time::Duration;

use crate::cli::args::WatchArgs;
use crate::cli::exit;
use crate::cli::resolve::Resolved;
use crate::watch::{self, Config};

/// How often the model's digest is compared with the last attempt's, in case a
/// file-system event was missed.
const DIGEST_CHECK: Duration = Duration::from_secs(10);

pub fn run(r: &Resolved, args: &WatchArgs) -> anyhow::Result<u8> {
    let cfg = Config {
        path: args.path.clone(),
        debounce: Duration::from_millis(args.debounce),
        interval: Duration::from_secs(args.interval),
        repair: args.repair,
        prune: args.prune,
        digest_check: DIGEST_CHECK.min(Duration::from_secs(args.interval)),
        lock_timeout: Duration::from_secs(args.lock_timeout),
        workers: r.workers(),
        state_dir: r.state_dir.clone(),
    };
    // A fresh host for each attempt (the simulated configfs is re-read from its
    // file). The log says which backend; `host()` prints nothing (stderr is the
    // log, maybe JSON).
    let mut quiet = r.clone();
    quiet.quiet = true;
    let mut first = true;
    let mut hosts = move || {
        let host = quiet.host().map_err(|e| format!("{e:#}"))?;
        if std::mem::take(&mut first) {
            tracing::info!(backend = host.name(), location = %host.location(), "backend");
        }
        Ok(host)
    };
    watch::run(&cfg, &mut hosts)?;
    Ok(exit::OK)
}
