//! `isctl serve PATH`: run the userspace engine on a model until SIGTERM.

use crate::cli::args::ServeArgs;
use crate::cli::resolve::Resolved;

pub fn run(r: &Resolved, args: &ServeArgs) -> anyhow::Result<u8> {
    let limits = crate::engine::server::admission::Limits {
        max_pending: args.max_pending as usize,
        max_pending_per_source: args.max_pending_per_source as usize,
        max_logins: args.max_logins as usize,
        login_timeout: std::time::Duration::from_secs(args.login_timeout),
    };
    crate::engine::server::serve(&args.path, &r.socket, limits, !args.no_stats)?;
    Ok(crate::cli::exit::OK)
}
