//! `isctl serve`: run the userspace engine on a model until SIGTERM.

use crate::cli::args::{GlobalArgs, ServeArgs};

pub fn run(global: &GlobalArgs, args: &ServeArgs) -> anyhow::Result<u8> {
    crate::engine::server::serve(&args.path, &global.socket)?;
    Ok(crate::cli::exit::OK)
}
