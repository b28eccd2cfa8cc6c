//! `isctl watch`.

use crate::cli::args::{GlobalArgs, WatchArgs};

pub fn run(_global: &GlobalArgs, _args: &WatchArgs) -> anyhow::Result<u8> {
    anyhow::bail!("`isctl watch` is not built yet")
}
