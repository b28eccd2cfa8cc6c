//! Running the built `isctl` binary from integration tests (`mod common;`).
//!
//! Owns: building the command line, environment and stdin of one `isctl` run, and the
//! result as strings (exit code, stdout, stderr) with assertions that show both streams
//! when they fail; and (`auth_fixture`) the CHAP model fixture the engine, probe and verify
//! tests share. Does not own: what a test expects, or the reconciler's fixtures (see
//! `tests/reconcile_common/`).
//!
//! The child's environment is the test's own plus what the builder sets or removes; stdin
//! is empty (closed) unless [`Isctl::stdin`] gives bytes; the working directory is the
//! test's (the package root under `cargo test`).
//!
//! Each test crate uses a different subset, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod auth_fixture;
pub mod iscsi_perf;
pub mod prometheus;

use std::ffi::OsStr;
use std::fmt;
use std::io::Write;
use std::process::{Command, Stdio};

/// One run of the `isctl` binary under test, built up then [`run`](Isctl::run).
pub struct Isctl {
    cmd: Command,
    stdin: Option<Vec<u8>>,
}

impl Isctl {
    /// `isctl` with no arguments and the test's environment.
    pub fn new() -> Isctl {
        Isctl {
            cmd: Command::new(env!("CARGO_BIN_EXE_isctl")),
            stdin: None,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Isctl {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Isctl
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Isctl {
        self.cmd.env(key, value);
        self
    }

    pub fn envs<I, K, V>(mut self, vars: I) -> Isctl
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.cmd.envs(vars);
        self
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Isctl {
        self.cmd.env_remove(key);
        self
    }

    /// Bytes fed to the child's stdin (then closed).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Isctl {
        self.stdin = Some(bytes.into());
        self
    }

    /// Runs to completion; panics only if the binary cannot be started.
    pub fn run(mut self) -> Run {
        self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        self.cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let command = format!("{:?}", self.cmd);
        let mut child = self
            .cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {command}: {e}"));
        let feeder = self.stdin.take().map(|bytes| {
            let mut pipe = child.stdin.take().expect("stdin pipe");
            // A child that exits without reading gives EPIPE: not the test's concern.
            std::thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            })
        });
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for {command}: {e}"));
        if let Some(f) = feeder {
            f.join().expect("stdin feeder");
        }
        Run {
            command,
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Default for Isctl {
    fn default() -> Isctl {
        Isctl::new()
    }
}

/// What one run produced.
pub struct Run {
    /// The command line, for failure messages.
    pub command: String,
    /// The exit code; -1 when a signal ended the process.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics, showing stdout and stderr, unless the exit code is `code`.
    #[track_caller]
    pub fn assert_exit(&self, code: i32) -> &Run {
        assert_eq!(self.code, code, "unexpected exit code\n{self}");
        self
    }

    /// stdout followed by stderr.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// stdout parsed as JSON; panics, showing both streams, if it is not.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{self}"))
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "$ {}\n[exit {}]\n--- stdout\n{}--- stderr\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }
}
