//! Driving isctl inside the VM, and counting what reaches configfs independently of it.
//!
//! isctl runs as the CLI contract says: `isctl --configfs-root /sys/kernel/config/target
//! --state-dir /var/lib/isctl <command>`, with models taken from the 9p share.
//!
//! [`traced`] counts configfs operations with the kernel's own function tracer: while the
//! script runs, ftrace records every call of `configfs_mkdir`, `configfs_rmdir`,
//! `configfs_symlink`, `configfs_unlink` and `configfs_write_iter` (the handlers of
//! mkdir(2), rmdir(2), symlink(2), unlink(2) and write(2) on configfs). It counts calls
//! that reach configfs: calls the VFS refuses before (mkdir of an existing name → EEXIST,
//! opening a read-only file for writing → EACCES) are not counted, and reads never are.
//! Nothing else touches configfs in the VM while a test command runs.

use std::time::Duration;

use super::vm::{CmdOutput, Vm, GUEST_SHARE};
use super::CONFIGFS;

pub const STATE_DIR: &str = "/var/lib/isctl";

/// `isctl --configfs-root … --state-dir … ARGS`, run in the share directory so that model
/// paths are relative to it.
pub fn isctl_cmd(args: &str) -> String {
    format!("cd {GUEST_SHARE} && isctl --configfs-root {CONFIGFS} --state-dir {STATE_DIR} {args}")
}

/// Runs isctl in the VM (any exit status is returned, not judged).
pub fn isctl(vm: &mut Vm, args: &str) -> CmdOutput {
    vm.run_timeout(&isctl_cmd(args), Duration::from_secs(600))
        .unwrap_or_else(|e| panic!("running isctl {args} in the VM: {e:#}"))
}

/// Configfs operations seen by the kernel while a script ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelOps {
    pub mkdir: u64,
    pub rmdir: u64,
    pub symlink: u64,
    pub unlink: u64,
    pub write: u64,
}

impl KernelOps {
    pub fn total(&self) -> u64 {
        self.mkdir + self.rmdir + self.symlink + self.unlink + self.write
    }
}

impl std::fmt::Display for KernelOps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (mkdir {}, rmdir {}, symlink {}, unlink {}, write {})",
            self.total(),
            self.mkdir,
            self.rmdir,
            self.symlink,
            self.unlink,
            self.write
        )
    }
}

const TRACED_FUNCTIONS: &str =
    "configfs_write_iter configfs_mkdir configfs_rmdir configfs_symlink configfs_unlink";

/// Runs `script` in the VM with the configfs handlers traced; returns its output and the
/// counts. Panics if tracing cannot be set up or lost events (the count would be wrong).
pub fn traced(vm: &mut Vm, script: &str) -> (CmdOutput, KernelOps) {
    vm.put_file("traced-script.sh", script.as_bytes())
        .expect("writing the traced script");
    let wrapper = format!(
        r#"T=/sys/kernel/tracing
set -e
echo 0 > $T/tracing_on
echo nop > $T/current_tracer
echo '{TRACED_FUNCTIONS}' > $T/set_ftrace_filter
echo 16384 > $T/buffer_size_kb
echo function > $T/current_tracer
echo > $T/trace
set +e
echo 1 > $T/tracing_on
sh {GUEST_SHARE}/traced-script.sh > /run/traced.out 2> /run/traced.err
rc=$?
echo 0 > $T/tracing_on
# Read the buffer before switching the tracer off: changing current_tracer empties it.
cat $T/trace > /run/traced.trace
echo nop > $T/current_tracer
grep -v '^#' /run/traced.trace > {GUEST_SHARE}/traced.trace || true
grep '^# entries-in-buffer' /run/traced.trace > {GUEST_SHARE}/traced.entries || true
cat /run/traced.out
cat /run/traced.err >&2
exit $rc
"#
    );
    let out = vm
        .run_timeout(&wrapper, Duration::from_secs(900))
        .unwrap_or_else(|e| panic!("running a traced command in the VM: {e:#}"));
    let entries =
        String::from_utf8_lossy(&vm.get_file("traced.entries").unwrap_or_default()).into_owned();
    // "# entries-in-buffer/entries-written: 10/10   #P:1": equal numbers = nothing lost.
    let counts: Vec<&str> = entries
        .split(':')
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .split('/')
        .collect();
    assert!(
        counts.len() == 2 && counts[0] == counts[1],
        "the trace buffer lost events ({entries:?}); the configfs count would be wrong"
    );
    let trace =
        String::from_utf8_lossy(&vm.get_file("traced.trace").unwrap_or_default()).into_owned();
    let mut ops = KernelOps::default();
    for line in trace.lines() {
        // "           mkdir-137     [000] .....     3.140013: configfs_mkdir <-vfs_mkdir"
        let Some(func) = line
            .split(": ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
        else {
            continue;
        };
        match func {
            "configfs_mkdir" => ops.mkdir += 1,
            "configfs_rmdir" => ops.rmdir += 1,
            "configfs_symlink" => ops.symlink += 1,
            "configfs_unlink" => ops.unlink += 1,
            "configfs_write_iter" => ops.write += 1,
            other => panic!("unexpected traced function {other:?} in {line:?}"),
        }
    }
    (out, ops)
}

/// What `isctl apply` said it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyReport {
    NoChanges,
    Applied {
        added: u64,
        changed: u64,
        destroyed: u64,
        configfs_operations: u64,
    },
}

/// Parses the last line of a text-mode apply: `Apply complete: A added, C changed, D
/// destroyed; N configfs operations.` or `No changes. ...`.
pub fn apply_report(out: &CmdOutput) -> Option<ApplyReport> {
    for line in out.stdout.lines().rev() {
        if line.starts_with("No changes.") {
            return Some(ApplyReport::NoChanges);
        }
        if let Some(rest) = line.strip_prefix("Apply complete: ") {
            let nums: Vec<u64> = rest
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .filter_map(|s| s.parse().ok())
                .collect();
            if let [added, changed, destroyed, ops] = nums[..] {
                return Some(ApplyReport::Applied {
                    added,
                    changed,
                    destroyed,
                    configfs_operations: ops,
                });
            }
        }
    }
    None
}

/// Applies a model (`--auto-approve`), traced; panics unless it exits 0 and its reported
/// operation count equals the kernel's count. Returns the report and the kernel count.
pub fn apply_ok(vm: &mut Vm, model: &str, extra: &str) -> (ApplyReport, KernelOps, CmdOutput) {
    let (out, ops) = traced(
        vm,
        &isctl_cmd(&format!("apply {model} --auto-approve {extra}")),
    );
    assert!(out.success(), "isctl apply {model} failed\n{out}");
    let report = apply_report(&out).unwrap_or_else(|| panic!("no apply summary line\n{out}"));
    let reported = match report {
        ApplyReport::NoChanges => 0,
        ApplyReport::Applied {
            configfs_operations,
            ..
        } => configfs_operations,
    };
    assert_eq!(
        reported,
        ops.total(),
        "isctl reported {reported} configfs operations but the kernel saw {ops}\n{out}"
    );
    (report, ops, out)
}
