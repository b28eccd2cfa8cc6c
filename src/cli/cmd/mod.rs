//! One module per verb. Each `run` returns the exit code on success; errors bubble up
//! to `cli::main`, which prints them once and maps them with [`exit_code_for`].

pub mod apply;
pub mod engine;
pub mod export;
pub mod generate_docs;
pub mod plan;
pub mod probe;
pub mod serve;
pub mod sessions;
pub mod status;
pub mod validate;
pub mod watch;

use super::exit;

/// Exit code for an error that reached the top. Library error types that mean
/// "invalid model", "refused" or "locked" are recognised here, in one place.
pub fn exit_code_for(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<crate::model::ModelError>().is_some() {
        return exit::INVALID_MODEL;
    }
    if err.downcast_ref::<crate::plan::PlanRefused>().is_some()
        || err.downcast_ref::<crate::state::LowerErrors>().is_some()
        || err.downcast_ref::<apply::NotApproved>().is_some()
        || err.downcast_ref::<engine::EngineRefused>().is_some()
    {
        return exit::REFUSED;
    }
    if let Some(crate::apply::LockError::Held { .. }) =
        err.downcast_ref::<crate::apply::LockError>()
    {
        return exit::LOCKED;
    }
    exit::FAILURE
}
