//! `isctl export`.

use crate::cli::args::{ExportArgs, GlobalArgs};

pub fn run(_global: &GlobalArgs, _args: &ExportArgs) -> anyhow::Result<u8> {
    anyhow::bail!("`isctl export` is not built yet")
}
