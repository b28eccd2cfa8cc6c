//! `isctl sessions`.

use crate::cli::args::{GlobalArgs, SessionsArgs};

pub fn run(_global: &GlobalArgs, _args: &SessionsArgs) -> anyhow::Result<u8> {
    anyhow::bail!("`isctl sessions` is not built yet")
}
