//! `isctl probe`.

use crate::cli::args::{GlobalArgs, ProbeArgs};

pub fn run(_global: &GlobalArgs, _args: &ProbeArgs) -> anyhow::Result<u8> {
    anyhow::bail!("`isctl probe` is not built yet")
}
