//! `isctl serve PATH`: run the userspace engine on a model until SIGTERM.

use crate::cli::args::ServeArgs;
use crate::cli::resolve::Resolved;

pub fn run(r: &Resolved, args: &ServeArgs) -> anyhow::Result<u8> {
    crate::engine::server::serve(&args.path, &r.socket, !args.no_stats)?;
    Ok(crate::cli::exit::OK)
}
