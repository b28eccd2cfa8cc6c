//! `isctl status`.

use crate::cli::args::{GlobalArgs, StatusArgs};

pub fn run(_global: &GlobalArgs, _args: &StatusArgs) -> anyhow::Result<u8> {
    anyhow::bail!("`isctl status` is not built yet")
}
