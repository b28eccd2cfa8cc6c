//! The simulator-fidelity transcript (format: tests/lio-vm/README.md): parsing it, and
//! replaying it against any [`Replayer`] (the simulator) to list where the simulator's
//! answers differ from what the real kernel answered.

use anyhow::{anyhow, bail, Result};

/// One recorded operation and the kernel's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// 1-based line in the transcript.
    pub line: usize,
    pub op: Op,
    /// `ok`, `ok "<escaped>"` or an errno name, as the kernel answered.
    pub kernel: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Mkdir(String),
    Rmdir(String),
    Symlink { target: String, link: String },
    Unlink(String),
    Write(String, Vec<u8>),
    Read(String),
    ReadLink(String),
    List(String),
    Mode(String),
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Mkdir(p) => write!(f, "mkdir {p}"),
            Op::Rmdir(p) => write!(f, "rmdir {p}"),
            Op::Symlink { target, link } => write!(f, "ln {target} {link}"),
            Op::Unlink(p) => write!(f, "rm {p}"),
            Op::Write(p, v) => write!(f, "w {p} {}", escape(v)),
            Op::Read(p) => write!(f, "r {p}"),
            Op::ReadLink(p) => write!(f, "readlink {p}"),
            Op::List(p) => write!(f, "ls {p}"),
            Op::Mode(p) => write!(f, "mode {p}"),
        }
    }
}

/// The kernel version line (`# kernel <uname -r>`), if present.
pub fn kernel_version(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.strip_prefix("# kernel "))
        .map(str::trim)
}

pub fn parse(text: &str) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (op_text, result) = line
            .split_once(" => ")
            .ok_or_else(|| anyhow!("line {line_no}: no ` => ` result in {line:?}"))?;
        let (name, rest) = op_text.split_once(' ').unwrap_or((op_text, ""));
        let one = || -> Result<String> {
            if rest.is_empty() {
                bail!("line {line_no}: {name} needs a path");
            }
            Ok(rest.to_string())
        };
        let op = match name {
            "mkdir" => Op::Mkdir(one()?),
            "rmdir" => Op::Rmdir(one()?),
            "rm" => Op::Unlink(one()?),
            "r" => Op::Read(one()?),
            "readlink" => Op::ReadLink(one()?),
            "ls" => Op::List(one()?),
            "mode" => Op::Mode(one()?),
            "ln" => {
                let (target, link) = rest
                    .split_once(' ')
                    .ok_or_else(|| anyhow!("line {line_no}: ln needs TARGET LINK"))?;
                Op::Symlink {
                    target: target.to_string(),
                    link: link.to_string(),
                }
            }
            "w" => {
                let (path, value) = rest
                    .split_once(' ')
                    .ok_or_else(|| anyhow!("line {line_no}: w needs PATH VALUE"))?;
                let value = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                    Some(inner) => unescape(inner)?,
                    None => value.as_bytes().to_vec(),
                };
                Op::Write(path.to_string(), value)
            }
            other => bail!("line {line_no}: unknown op {other:?}"),
        };
        steps.push(Step {
            line: line_no,
            op,
            kernel: result.to_string(),
        });
    }
    Ok(steps)
}

/// What replays the operations: paths are as written in the transcript (relative to the
/// configfs root unless absolute). Each call returns the answer in transcript form
/// (`ok`, `ok "<escaped>"`, errno name), or `None` when it cannot perform that kind of
/// operation (e.g. `mode` on a backend without modes).
pub trait Replayer {
    fn perform(&mut self, op: &Op) -> Option<String>;
}

/// A difference between the kernel and the replayer.
#[derive(Debug, Clone)]
pub struct Mismatch {
    pub line: usize,
    pub op: String,
    pub kernel: String,
    pub replayed: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}: {}\n    kernel:    {}\n    simulator: {}",
            self.line, self.op, self.kernel, self.replayed
        )
    }
}

/// Replays every step in order; returns the mismatches and how many steps were skipped.
pub fn replay(steps: &[Step], replayer: &mut dyn Replayer) -> (Vec<Mismatch>, usize) {
    let mut mismatches = Vec::new();
    let mut skipped = 0;
    for step in steps {
        match replayer.perform(&step.op) {
            None => skipped += 1,
            Some(answer) if answer == step.kernel => {}
            Some(answer) => mismatches.push(Mismatch {
                line: step.line,
                op: step.op.to_string(),
                kernel: step.kernel.clone(),
                replayed: answer,
            }),
        }
    }
    (mismatches, skipped)
}

/// Formats an I/O result the way the transcript does.
pub fn answer(result: std::io::Result<Option<Vec<u8>>>) -> String {
    match result {
        Ok(None) => "ok".to_string(),
        Ok(Some(bytes)) => format!("ok {}", escape(&bytes)),
        Err(e) => errno_name(&e),
    }
}

pub fn errno_name(err: &std::io::Error) -> String {
    let Some(code) = err.raw_os_error() else {
        return format!("ERROR({err})");
    };
    let name = match code {
        1 => "EPERM",
        2 => "ENOENT",
        5 => "EIO",
        9 => "EBADF",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        17 => "EEXIST",
        19 => "ENODEV",
        20 => "ENOTDIR",
        21 => "EISDIR",
        22 => "EINVAL",
        28 => "ENOSPC",
        30 => "EROFS",
        36 => "ENAMETOOLONG",
        38 => "ENOSYS",
        39 => "ENOTEMPTY",
        40 => "ELOOP",
        75 => "EOVERFLOW",
        95 => "EOPNOTSUPP",
        _ => return format!("E{code}"),
    };
    name.to_string()
}

/// The transcript's quoting (same as vmtool's).
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for &b in bytes {
        match b {
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            0 => out.push_str("\\0"),
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    out
}

pub fn unescape(inner: &str) -> Result<Vec<u8>> {
    super::tree::unescape(inner)
}
