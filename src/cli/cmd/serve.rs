//! `isctl serve`.

use crate::cli::args::{GlobalArgs, ServeArgs};

pub fn run(_global: &GlobalArgs, _args: &ServeArgs) -> anyhow::Result<u8> {
    anyhow::bail!("`isctl serve` is not built yet")
}
