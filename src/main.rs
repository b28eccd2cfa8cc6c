//! The `isctl` binary: everything lives in the library; see `isctl::cli`.

fn main() -> std::process::ExitCode {
    isctl::cli::main()
}
