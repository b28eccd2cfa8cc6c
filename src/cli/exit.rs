//! Exit codes: stable, documented in README.md ("Exit codes"). Scripts depend on them.

use std::process::ExitCode;

/// Success; for `plan --detailed-exitcode`: success and nothing to change.
pub const OK: u8 = 0;
/// A runtime failure: the backend failed, an apply was rolled back, I/O error.
pub const FAILURE: u8 = 1;
/// `plan --detailed-exitcode` (and `status PATH`): there are changes / drift.
pub const CHANGES: u8 = 2;
/// The model is invalid (validation errors were printed).
pub const INVALID_MODEL: u8 = 3;
/// A safety rule refused the change: sessions would be cut without `--force`, the
/// plan needs confirmation without a TTY and without `--auto-approve`, a backend
/// cannot honour a feature of the model, a backing file would shrink.
pub const REFUSED: u8 = 4;
/// Another apply holds the lock.
pub const LOCKED: u8 = 5;
/// `apply --verify`: the apply went through (and stays: nothing is rolled back) but a
/// check of it failed (a login, a LUN, a refusal that did not happen).
pub const VERIFY_FAILED: u8 = 6;
/// The command line is wrong (clap's own code 2 would collide with CHANGES).
pub const USAGE: u8 = 64;

pub fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}
