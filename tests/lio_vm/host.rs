//! Host-side tools (real initiators: libiscsi's `iscsi-*`, QEMU's `qemu-io`/`qemu-img`)
//! run with a deadline, their output captured. A missing tool is an error naming the
//! Debian package to install.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// Which Debian package provides a tool the tests use.
fn package_of(tool: &str) -> &'static str {
    match tool {
        t if t.starts_with("iscsi-") => "libiscsi-bin",
        "qemu-system-x86_64" => "qemu-system-x86",
        "qemu-io" | "qemu-img" => "qemu-utils qemu-block-extra",
        "depmod" | "modprobe" => "kmod",
        "dpkg-deb" => "dpkg",
        "apt-get" | "apt-cache" => "apt",
        "busybox" => "busybox-static",
        _ => "the package that provides it",
    }
}

/// The absolute path of `tool` on `$PATH` (plus the sbin directories, for `depmod`).
pub fn require_tool(tool: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(tool);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "`{tool}` is not installed: install {} (apt-get install -y {})",
        package_of(tool),
        package_of(tool)
    )
}

/// What a host command did.
#[derive(Debug, Clone)]
pub struct HostOutput {
    pub command: String,
    /// `None` when it was killed at the deadline.
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl HostOutput {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// Panics (the test fails) unless the command exited 0, showing everything it printed.
    pub fn expect_success(&self, why: &str) -> &Self {
        assert!(self.success(), "{why}: expected success\n{self}");
        self
    }

    /// Panics unless the command failed (exited non-zero, not killed at the deadline).
    pub fn expect_failure(&self, why: &str) -> &Self {
        assert!(
            matches!(self.status, Some(s) if s != 0),
            "{why}: expected a failure exit status\n{self}"
        );
        self
    }
}

impl std::fmt::Display for HostOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = match self.status {
            Some(s) => format!("exit {s}"),
            None => "killed at its deadline".to_string(),
        };
        write!(
            f,
            "$ {}\n[{status} after {:.1}s]\n--- stdout\n{}--- stderr\n{}",
            self.command,
            self.elapsed.as_secs_f64(),
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `program args...` with environment `env`, killing it after `timeout`.
/// `program` must be installed (else an error naming the package).
pub fn run_host(
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<HostOutput> {
    let exe = require_tool(program)?;
    let mut cmd = Command::new(&exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let command = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {program}"))?;
    let mut out_pipe = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no stdout pipe"))?;
    let mut err_pipe = child
        .stderr
        .take()
        .ok_or_else(|| anyhow!("no stderr pipe"))?;
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status.code().or(Some(128));
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(HostOutput {
        command,
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        elapsed: start.elapsed(),
    })
}

/// A free TCP port on 127.0.0.1 (the kernel picks an ephemeral one). The caller binds it
/// soon after; a lost race shows up as QEMU failing to set up its forwarding, which
/// [`super::vm::Vm::boot`] retries with another port.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// What `iscsi-readcapacity16` reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub last_lba: u64,
    pub block_length: u64,
    pub total_bytes: u64,
}

/// Parses `iscsi-readcapacity16` output (`RETURNED LOGICAL BLOCK ADDRESS:N`,
/// `LOGICAL BLOCK LENGTH IN BYTES:N`, `Total size:N`).
pub fn parse_capacity(out: &HostOutput) -> Result<Capacity> {
    let field = |name: &str| -> Result<u64> {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| anyhow!("no {name:?} in the output of\n{out}"))
    };
    Ok(Capacity {
        last_lba: field("RETURNED LOGICAL BLOCK ADDRESS:")?,
        block_length: field("LOGICAL BLOCK LENGTH IN BYTES:")?,
        total_bytes: field("Total size:")?,
    })
}
