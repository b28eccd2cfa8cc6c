//! The binary edge: parse the command line, set up logging, dispatch to one module
//! per verb, turn results into exit codes.
//!
//! Owns: argument definitions (`args`: what the user typed), the resolve stage
//! (`resolve`: the backend, output format, state dir and socket, decided once),
//! confirmation (`confirm`), exit codes (`exit`, and [`exit_code_for`] mapping
//! library errors to them in one place), the verbs (`cmd/*`, which never import
//! each other).
//! Does not: decide anything about the model or the kernel; the verbs call the
//! library (`model`, `reconcile`, `plan::render`, `state::export`).
//! This is the only place that uses `anyhow` and the only place that exits.

pub mod args;
pub mod cmd;
pub mod confirm;
pub mod exit;
pub mod resolve;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

/// Entry point of the `isctl` binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    exit::OK
                }
                _ => exit::USAGE,
            };
            let _ = e.print();
            return exit::code(code);
        }
    };
    // The engine and the watcher are daemons: their log is their status report, so
    // they log at info.
    let daemon = matches!(
        cli.command,
        Command::Serve(_) | Command::Watch(_) | Command::Exporter(_)
    );
    let json = matches!(&cli.command, Command::Watch(a) if a.log_format == args::LogFormat::Json);
    init_logging(
        cli.global.verbose + u8::from(daemon),
        cli.global.quiet,
        json,
    );
    match run(&cli) {
        Ok(code) => exit::code(code),
        Err(err) => {
            // A closed stdout (`isctl plan | head`) is not an error worth a message.
            if let Some(ioe) = err.downcast_ref::<std::io::Error>() {
                if ioe.kind() == std::io::ErrorKind::BrokenPipe {
                    return exit::code(exit::OK);
                }
            }
            eprintln!("error: {err:#}");
            exit::code(exit_code_for(&err))
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<u8> {
    let r = resolve::Resolved::new(&cli.global)?;
    match &cli.command {
        Command::Validate(a) => cmd::validate::run(&r, a),
        Command::Plan(a) => cmd::plan::run(&r, a),
        Command::Apply(a) => cmd::apply::run(&r, a),
        Command::Export(a) => cmd::export::run(&r, a),
        Command::Import(a) => cmd::import::run(&r, a),
        Command::Status(a) => cmd::status::run(&r, a),
        Command::Sessions(a) => cmd::sessions::run(&r, a),
        Command::Stats(a) => cmd::stats::run(&r, a),
        Command::Exporter(a) => cmd::exporter::run(&r, a),
        Command::Serve(a) => cmd::serve::run(&r, a),
        Command::Probe(a) => cmd::probe::run(&r, a),
        Command::Watch(a) => cmd::watch::run(&r, a),
        Command::GenerateDocs(a) => cmd::generate_docs::run(a),
    }
}

/// A command line that parses but does not make sense (exit 64).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Exit code for an error that reached the top. Library error types that mean
/// "invalid model", "refused" or "locked" are recognised here, in one place.
pub fn exit_code_for(err: &anyhow::Error) -> u8 {
    use crate::apply::{ApplyError, LockError};
    use crate::backend::userspace::EngineError;
    use crate::reconcile::ReconcileError;

    let invalid_model = |e: &EngineError| matches!(e, EngineError::InvalidModel(_));
    let refused = |e: &EngineError| matches!(e, EngineError::Refused(_) | EngineError::Stale(_));
    let locked = |e: &LockError| matches!(e, LockError::Held { .. });
    if err.downcast_ref::<UsageError>().is_some() {
        return exit::USAGE;
    }
    if err.downcast_ref::<crate::model::ModelError>().is_some()
        || err.downcast_ref::<EngineError>().is_some_and(invalid_model)
    {
        return exit::INVALID_MODEL;
    }
    if err.downcast_ref::<crate::plan::PlanRefused>().is_some()
        || err.downcast_ref::<crate::state::LowerErrors>().is_some()
        || err.downcast_ref::<confirm::NotApproved>().is_some()
        || err.downcast_ref::<EngineError>().is_some_and(refused)
    {
        return exit::REFUSED;
    }
    if err.downcast_ref::<LockError>().is_some_and(locked) {
        return exit::LOCKED;
    }
    match err.downcast_ref::<ReconcileError>() {
        Some(ReconcileError::Lower(_)) | Some(ReconcileError::Apply(ApplyError::Refused)) => {
            exit::REFUSED
        }
        Some(ReconcileError::Engine(e)) if invalid_model(e) => exit::INVALID_MODEL,
        Some(ReconcileError::Engine(e)) if refused(e) => exit::REFUSED,
        Some(ReconcileError::Lock(e)) if locked(e) => exit::LOCKED,
        _ => exit::FAILURE,
    }
}

/// Logs go to stderr, as text or one JSON object a line (`watch --log-format json`);
/// `RUST_LOG` overrides the -v/-q level.
fn init_logging(verbose: u8, quiet: bool, json: bool) {
    use tracing_subscriber::EnvFilter;
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    if json {
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false)
            .try_init();
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
