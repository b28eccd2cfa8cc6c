//! `isctl validate`.

use crate::cli::args::{GlobalArgs, ValidateArgs};

pub fn run(_global: &GlobalArgs, _args: &ValidateArgs) -> anyhow::Result<u8> {
    anyhow::bail!("`isctl validate` is not built yet")
}
