//! vmtool: the VM-side helper of isctl's real-kernel test bed (docs/testing-lio-vm.md).
//!
//! It runs inside the busybox VM next to isctl and does what busybox cannot do exactly:
//!
//! * `dump ROOT [--stats]`: a deterministic dump of a configfs tree (every directory,
//!   symlink with its resolved target, and attribute file with its mode and exact bytes),
//!   so that tests can compare trees before/after an operation byte for byte.
//! * `ops --root ROOT`: run a script of raw configfs operations (one syscall each: mkdir,
//!   rmdir, symlink, unlink, one write(2), read) and print each one's errno and read-back
//!   value: the transcript format of the simulator-fidelity fixtures.
//! * `floor create|destroy`: the raw-syscall floor of the LIO benchmark: the same objects
//!   the benchmark's isctl model declares, created or destroyed with the minimal set of
//!   syscalls, optionally from several threads.
//! * `relay LISTEN TARGET`: a TCP relay, to reach a portal bound to the guest's loopback
//!   through QEMU's port forwarding (which only reaches the guest's NIC address).
//! * `hold-excl DEV`: open a block device exclusively (O_EXCL) and keep it open, so that
//!   the kernel refuses any other exclusive claim (an iblock enable gets EBUSY) although
//!   nothing in configfs shows it: a failure no planner can foresee.
//! * `time CMD...`: run CMD and print its wall time to stderr.
//!
//! Dependency-free on purpose: it is built statically for the VM and must build fast.
//! Output formats are documented in tests/lio-vm/README.md and parsed by the host harness.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("dump") => cmd_dump(&args[1..]),
        Some("ops") => cmd_ops(&args[1..]),
        Some("floor") => cmd_floor(&args[1..]),
        Some("relay") => cmd_relay(&args[1..]),
        Some("hold-excl") => cmd_hold_excl(&args[1..]),
        Some("time") => return cmd_time(&args[1..]),
        _ => Err(usage()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("vmtool: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> String {
    "usage: vmtool dump ROOT [--stats] | ops --root ROOT < script | \
     floor create|destroy --root ROOT --targets N --jobs J --dir DIR | \
     relay LISTEN_ADDR TARGET_ADDR | hold-excl DEV | time CMD [ARGS...]"
        .to_string()
}

// ---------------------------------------------------------------------------------------
// Byte escaping shared by `dump` and `ops`: printable ASCII stays, `\` `"` and control or
// non-ASCII bytes are escaped (`\n`, `\t`, `\0`, `\\`, `\"`, `\xHH`). Quoted with `"`.

fn escape(bytes: &[u8]) -> String {
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

/// Inverse of [`escape`] for a quoted value; an unquoted value is taken verbatim.
fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) else {
        return Ok(text.as_bytes().to_vec());
    };
    let bytes = inner.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let esc = *bytes
            .get(i + 1)
            .ok_or_else(|| format!("dangling \\ in {text}"))?;
        i += 2;
        match esc {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'0' => out.push(0),
            b'\\' => out.push(b'\\'),
            b'"' => out.push(b'"'),
            b'x' => {
                let hex = inner
                    .get(i..i + 2)
                    .ok_or_else(|| format!("short \\x escape in {text}"))?;
                out.push(u8::from_str_radix(hex, 16).map_err(|e| format!("{text}: {e}"))?);
                i += 2;
            }
            other => return Err(format!("unknown escape \\{} in {text}", other as char)),
        }
    }
    Ok(out)
}

fn errno_name(err: &io::Error) -> String {
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

// ---------------------------------------------------------------------------------------
// dump

fn cmd_dump(args: &[String]) -> Result<(), String> {
    let root = args.first().ok_or_else(usage)?;
    let stats = args.iter().any(|a| a == "--stats");
    let root = PathBuf::from(root);
    let canonical_root = fs::canonicalize(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    dump_dir(&root, &canonical_root, Path::new(""), stats, &mut out)
        .map_err(|e| format!("writing dump: {e}"))?;
    out.flush().map_err(|e| e.to_string())
}

fn dump_dir(
    root: &Path,
    canonical_root: &Path,
    rel: &Path,
    stats: bool,
    out: &mut impl Write,
) -> io::Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = match fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect(),
        Err(e) => {
            writeln!(out, "D {} ! {}", rel.display(), errno_name(&e))?;
            return Ok(());
        }
    };
    names.sort();
    for name in names {
        let child_rel = rel.join(&name);
        let path = root.join(&child_rel);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue; // vanished while walking (a session ended): not part of the config
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = match fs::canonicalize(&path) {
                Ok(t) => match t.strip_prefix(canonical_root) {
                    Ok(r) => r.display().to_string(),
                    Err(_) => t.display().to_string(),
                },
                Err(e) => format!("! {}", errno_name(&e)),
            };
            writeln!(out, "L {} -> {}", child_rel.display(), target)?;
        } else if ft.is_dir() {
            if !stats && (name == "statistics" || name == "fabric_statistics") {
                continue;
            }
            writeln!(out, "D {}", child_rel.display())?;
            dump_dir(root, canonical_root, &child_rel, stats, out)?;
        } else {
            let mode = meta.mode() & 0o7777;
            match read_value(&path) {
                Ok(bytes) => writeln!(
                    out,
                    "F {:04o} {} = {}",
                    mode,
                    child_rel.display(),
                    escape(&bytes)
                )?,
                Err(e) => writeln!(
                    out,
                    "F {:04o} {} ! {}",
                    mode,
                    child_rel.display(),
                    errno_name(&e)
                )?,
            }
        }
    }
    Ok(())
}

fn read_value(path: &Path) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)?.read_to_end(&mut buf)?;
    Ok(buf)
}

// ---------------------------------------------------------------------------------------
// ops: one raw syscall per line, result printed per line.
//
//   mkdir PATH | rmdir PATH | ln TARGET LINK | rm PATH | w PATH VALUE | r PATH |
//   readlink PATH | ls PATH | mode PATH | # comment | (empty)
//
// Relative paths are relative to --root. VALUE is quoted with escapes ("1", "x\n") or a
// bare word. Output: the input line, then ` => ok`, ` => ok "value"` (r, readlink, ls,
// mode) or ` => ERRNO`. Comments and empty lines are echoed.

fn cmd_ops(args: &[String]) -> Result<(), String> {
    let root = match args {
        [flag, root, ..] if flag == "--root" => PathBuf::from(root),
        _ => return Err(usage()),
    };
    let stdin = io::stdin();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    for (n, line) in stdin.lock().lines().enumerate() {
        let line = line.map_err(|e| format!("stdin: {e}"))?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            writeln!(out, "{trimmed}").map_err(|e| e.to_string())?;
            continue;
        }
        let result = run_op(&root, trimmed).map_err(|e| format!("line {}: {e}", n + 1))?;
        writeln!(out, "{trimmed} => {result}").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Splits `op arg1 [arg2]`: arguments are separated by one space; a quoted value keeps its
/// spaces (it runs to the end of the line).
fn split_op(line: &str) -> (&str, Vec<&str>) {
    let (op, rest) = line.split_once(' ').unwrap_or((line, ""));
    let mut parts = Vec::new();
    let mut rest = rest;
    while !rest.is_empty() {
        if rest.starts_with('"') {
            parts.push(rest);
            break;
        }
        match rest.split_once(' ') {
            Some((a, b)) => {
                parts.push(a);
                rest = b;
            }
            None => {
                parts.push(rest);
                break;
            }
        }
    }
    (op, parts)
}

fn run_op(root: &Path, line: &str) -> Result<String, String> {
    let (op, parts) = split_op(line);
    let path = |i: usize| -> Result<PathBuf, String> {
        let p = parts
            .get(i)
            .ok_or_else(|| format!("{op}: missing argument {}", i + 1))?;
        let p = unescape(p)?;
        let p = PathBuf::from(String::from_utf8(p).map_err(|e| e.to_string())?);
        Ok(if p.is_absolute() { p } else { root.join(p) })
    };
    let outcome = |r: io::Result<()>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => errno_name(&e),
    };
    Ok(match op {
        "mkdir" => outcome(fs::create_dir(path(0)?)),
        "rmdir" => outcome(fs::remove_dir(path(0)?)),
        "rm" => outcome(fs::remove_file(path(0)?)),
        "ln" => outcome(symlink(path(0)?, path(1)?)),
        "w" => {
            let value = unescape(parts.get(1).ok_or("w: missing value")?)?;
            outcome(write_once(&path(0)?, &value))
        }
        "r" => match read_value(&path(0)?) {
            Ok(bytes) => format!("ok {}", escape(&bytes)),
            Err(e) => errno_name(&e),
        },
        "readlink" => match fs::read_link(path(0)?) {
            Ok(t) => format!("ok {}", escape(t.as_os_str().as_encoded_bytes())),
            Err(e) => errno_name(&e),
        },
        "ls" => match fs::read_dir(path(0)?) {
            Ok(entries) => {
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                format!("ok {}", escape(names.join(" ").as_bytes()))
            }
            Err(e) => errno_name(&e),
        },
        "mode" => match fs::symlink_metadata(path(0)?) {
            Ok(m) => format!("ok \"{:04o}\"", m.mode() & 0o7777),
            Err(e) => errno_name(&e),
        },
        other => return Err(format!("unknown op {other:?}")),
    })
}

/// One open + one write(2) of the whole value, as configfs wants it.
fn write_once(path: &Path, value: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(path)?;
    let n = f.write(value)?;
    if n != value.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write: {n} of {} bytes", value.len()),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// floor: the benchmark's objects by raw syscalls (the docs/configfs.md §9 "full" recipe),
// per target i (0-based), the same objects as the benchmark's model (benches/lio_vm.rs)
// under other names: fileio_<i>/bench<i> on DIR/bench<i>.img (1 MiB, created sparse),
// serial, target <base>:bench<i>, tpgt_1, lun_0 → backstore, np [::]:3260 (one listener
// shared by all targets, made concurrently by the writers), ACL <initiator i> with mapped
// lun_0 and CHAP userid/password, authentication=1, enable=1.

const FLOOR_TARGET_BASE: &str = "iqn.2026-11.io.isctl.floor";
const FLOOR_INITIATOR_BASE: &str = "iqn.2026-11.io.isctl.floor-client";

fn cmd_floor(args: &[String]) -> Result<(), String> {
    let mode = args.first().map(String::as_str).ok_or_else(usage)?;
    let mut root = PathBuf::from("/sys/kernel/config/target");
    let mut targets = 100usize;
    let mut jobs = 1usize;
    let mut dir = PathBuf::from("/srv/floor");
    let mut it = args[1..].iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--root" => root = PathBuf::from(value),
            "--targets" => targets = value.parse().map_err(|e| format!("--targets: {e}"))?,
            "--jobs" => jobs = value.parse().map_err(|e| format!("--jobs: {e}"))?,
            "--dir" => dir = PathBuf::from(value),
            _ => return Err(usage()),
        }
    }
    let jobs = jobs.max(1);
    let create = match mode {
        "create" => true,
        "destroy" => false,
        _ => return Err(usage()),
    };
    if create {
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let start = Instant::now();
    let mut ops = 0usize;
    if create && !root.join("iscsi").exists() {
        step(&mut ops, fs::create_dir(root.join("iscsi")), "mkdir iscsi")?;
    }
    let results: Vec<Result<usize, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..jobs)
            .map(|job| {
                let root = &root;
                let dir = &dir;
                scope.spawn(move || {
                    let mut ops = 0usize;
                    for i in (job..targets).step_by(jobs) {
                        if create {
                            floor_create_one(root, dir, i, &mut ops)?;
                        } else {
                            floor_destroy_one(root, i, &mut ops)?;
                        }
                    }
                    Ok(ops)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("worker panicked".into())))
            .collect()
    });
    for r in results {
        ops += r?;
    }
    let elapsed = start.elapsed();
    println!(
        "floor {mode}: targets={targets} jobs={jobs} configfs_ops={ops} elapsed_ms={:.1}",
        elapsed.as_secs_f64() * 1000.0
    );
    Ok(())
}

fn step(ops: &mut usize, r: io::Result<()>, what: &str) -> Result<(), String> {
    *ops += 1;
    r.map_err(|e| format!("{what}: {} ({e})", errno_name(&e)))
}

fn floor_create_one(root: &Path, dir: &Path, i: usize, ops: &mut usize) -> Result<(), String> {
    let img = dir.join(format!("bench{i}.img"));
    // The backing file is prepared like a reconciler must (the kernel never sizes it);
    // this is file-system work, not a configfs operation, so it is not counted.
    File::create(&img)
        .and_then(|f| f.set_len(1 << 20))
        .map_err(|e| format!("{}: {e}", img.display()))?;
    let hba = root.join(format!("core/fileio_{i}"));
    let so = hba.join(format!("bench{i}"));
    step(ops, fs::create_dir(&hba), "mkdir hba")?;
    step(ops, fs::create_dir(&so), "mkdir so")?;
    let control = format!("fd_dev_name={},fd_dev_size={}", img.display(), 1 << 20);
    step(
        ops,
        write_once(&so.join("control"), control.as_bytes()),
        "control",
    )?;
    step(
        ops,
        write_once(&so.join("udev_path"), img.as_os_str().as_encoded_bytes()),
        "udev_path",
    )?;
    step(ops, write_once(&so.join("enable"), b"1"), "enable")?;
    let serial = format!("floor{i:08}");
    step(
        ops,
        write_once(&so.join("wwn/vpd_unit_serial"), serial.as_bytes()),
        "serial",
    )?;
    let target = root.join(format!("iscsi/{FLOOR_TARGET_BASE}:bench{i}"));
    let tpg = target.join("tpgt_1");
    step(ops, fs::create_dir(&target), "mkdir target")?;
    step(ops, fs::create_dir(&tpg), "mkdir tpgt")?;
    step(ops, fs::create_dir(tpg.join("lun/lun_0")), "mkdir lun")?;
    step(ops, symlink(&so, tpg.join("lun/lun_0/storage")), "lun link")?;
    step(ops, fs::create_dir(tpg.join("np/[::]:3260")), "mkdir np")?;
    step(
        ops,
        write_once(&tpg.join("attrib/authentication"), b"1"),
        "authentication",
    )?;
    let acl = tpg.join(format!("acls/{FLOOR_INITIATOR_BASE}:c{i}"));
    step(ops, fs::create_dir(&acl), "mkdir acl")?;
    step(ops, fs::create_dir(acl.join("lun_0")), "mkdir mapped lun")?;
    step(
        ops,
        symlink(tpg.join("lun/lun_0"), acl.join("lun_0/lun")),
        "mapped link",
    )?;
    step(
        ops,
        write_once(&acl.join("auth/userid"), format!("user{i}").as_bytes()),
        "userid",
    )?;
    let secret = format!("floorsecret{i:04}");
    step(
        ops,
        write_once(&acl.join("auth/password"), secret.as_bytes()),
        "password",
    )?;
    step(ops, write_once(&tpg.join("enable"), b"1"), "tpg enable")?;
    Ok(())
}

fn floor_destroy_one(root: &Path, i: usize, ops: &mut usize) -> Result<(), String> {
    let target = root.join(format!("iscsi/{FLOOR_TARGET_BASE}:bench{i}"));
    let tpg = target.join("tpgt_1");
    let acl = tpg.join(format!("acls/{FLOOR_INITIATOR_BASE}:c{i}"));
    step(ops, write_once(&tpg.join("enable"), b"0"), "tpg disable")?;
    step(ops, fs::remove_file(acl.join("lun_0/lun")), "unlink mapped")?;
    step(ops, fs::remove_dir(acl.join("lun_0")), "rmdir mapped lun")?;
    step(ops, fs::remove_dir(&acl), "rmdir acl")?;
    step(ops, fs::remove_dir(tpg.join("np/[::]:3260")), "rmdir np")?;
    step(
        ops,
        fs::remove_file(tpg.join("lun/lun_0/storage")),
        "unlink lun",
    )?;
    step(ops, fs::remove_dir(tpg.join("lun/lun_0")), "rmdir lun")?;
    step(ops, fs::remove_dir(&tpg), "rmdir tpgt")?;
    step(ops, fs::remove_dir(&target), "rmdir target")?;
    let hba = root.join(format!("core/fileio_{i}"));
    step(
        ops,
        fs::remove_dir(hba.join(format!("bench{i}"))),
        "rmdir so",
    )?;
    step(ops, fs::remove_dir(&hba), "rmdir hba")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// relay

fn cmd_relay(args: &[String]) -> Result<(), String> {
    let [listen, target] = args else {
        return Err(usage());
    };
    let listener = TcpListener::bind(listen).map_err(|e| format!("bind {listen}: {e}"))?;
    for conn in listener.incoming() {
        let Ok(client) = conn else { continue };
        let target = target.clone();
        std::thread::spawn(move || {
            let Ok(server) = TcpStream::connect(&target) else {
                return;
            };
            let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
                return;
            };
            let up = std::thread::spawn(move || {
                let mut client = client;
                let mut server = server;
                let _ = io::copy(&mut client, &mut server);
                let _ = server.shutdown(std::net::Shutdown::Write);
            });
            let _ = io::copy(&mut s2, &mut c2);
            let _ = c2.shutdown(std::net::Shutdown::Write);
            let _ = up.join();
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// hold-excl

fn cmd_hold_excl(args: &[String]) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let dev = args.first().ok_or_else(usage)?;
    // O_EXCL on a block device = an exclusive claim for as long as the file stays open.
    const O_EXCL: i32 = 0o200;
    let _file = OpenOptions::new()
        .read(true)
        .custom_flags(O_EXCL)
        .open(dev)
        .map_err(|e| format!("{dev}: {} ({e})", errno_name(&e)))?;
    println!("holding {dev}");
    io::stdout().flush().map_err(|e| e.to_string())?;
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

// ---------------------------------------------------------------------------------------
// time

fn cmd_time(args: &[String]) -> ExitCode {
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("vmtool: {}", usage());
        return ExitCode::FAILURE;
    };
    let start = Instant::now();
    let status = Command::new(cmd).args(rest).status();
    let elapsed = start.elapsed();
    eprintln!("@@ELAPSED_MS {:.1}", elapsed.as_secs_f64() * 1000.0);
    match status {
        Ok(s) => ExitCode::from(s.code().unwrap_or(128).clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("vmtool: {cmd}: {e}");
            ExitCode::from(127)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_roundtrips_every_byte() {
        let all: Vec<u8> = (0..=255u8).collect();
        assert_eq!(unescape(&escape(&all)).unwrap(), all);
        assert_eq!(escape(b"a b\n\0\""), "\"a b\\n\\0\\\"\"");
        assert_eq!(unescape("bare").unwrap(), b"bare");
    }

    #[test]
    fn split_keeps_quoted_value_whole() {
        let (op, parts) = split_op("w a/b \"x y\\n\"");
        assert_eq!(op, "w");
        assert_eq!(parts, vec!["a/b", "\"x y\\n\""]);
        let (op, parts) = split_op("ln core/x iscsi/l");
        assert_eq!(op, "ln");
        assert_eq!(parts, vec!["core/x", "iscsi/l"]);
    }
}
