//! The binary edge: parse the command line, set up logging, dispatch to one module
//! per verb, turn results into exit codes.
//!
//! Owns: argument definitions (`args`), exit codes (`exit`), the verbs (`cmd/*`).
//! Does not: decide anything about the model or the kernel; the verbs call the
//! library (`model`, `plan`, `apply`, `backend`, `engine`).
//! This is the only place that uses `anyhow` and the only place that exits.

pub mod args;
pub mod cmd;
pub mod exit;

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
    // The engine is a daemon: its log is its status report, so it logs at info.
    let daemon = matches!(cli.command, Command::Serve(_));
    init_logging(cli.global.verbose + u8::from(daemon), cli.global.quiet);
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
            exit::code(cmd::exit_code_for(&err))
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<u8> {
    let g = &cli.global;
    match &cli.command {
        Command::Validate(a) => cmd::validate::run(g, a),
        Command::Plan(a) => cmd::plan::run(g, a),
        Command::Apply(a) => cmd::apply::run(g, a),
        Command::Export(a) => cmd::export::run(g, a),
        Command::Status(a) => cmd::status::run(g, a),
        Command::Sessions(a) => cmd::sessions::run(g, a),
        Command::Serve(a) => cmd::serve::run(g, a),
        Command::Watch(a) => cmd::watch::run(g, a),
        Command::Probe(a) => cmd::probe::run(g, a),
        Command::GenerateDocs(a) => cmd::generate_docs::run(a),
    }
}

/// Logs go to stderr; `RUST_LOG` overrides the -v/-q level.
fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
