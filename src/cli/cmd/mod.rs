//! One module per verb. Each `run` takes the resolved options
//! ([`crate::cli::resolve::Resolved`]) and returns the exit code on success; errors
//! bubble up to `cli::main`, which prints them once and maps them with
//! [`crate::cli::exit_code_for`]. Verbs never import each other.

pub mod apply;
pub mod export;
pub mod exporter;
pub mod generate_docs;
pub mod import;
pub mod plan;
pub mod probe;
pub mod serve;
pub mod sessions;
pub mod stats;
pub mod status;
pub mod validate;
pub mod watch;
