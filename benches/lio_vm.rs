//! LIO apply benchmark on the real kernel in the test VM (docs/testing-lio-vm.md).
//!
//! 100 targets × 1 fileio LUN, each with an ACL and CHAP: isctl applies them from empty,
//! re-applies (a no-op), and destroys them (applies an empty model). Against that, in the
//! same VM run, the raw-syscall floor: the same objects created and removed by `vmtool
//! floor` with the minimal set of configfs syscalls (docs/configfs.md §9 "full" recipe),
//! serially and with 4 parallel writers. Wall times are measured inside the VM; configfs
//! operations are counted by the kernel's function tracer (and isctl's own report).
//!
//!   cargo bench --bench lio_vm                 # 3 rounds, medians
//!   LIO_VM_BENCH_ROUNDS=5 LIO_VM_BENCH_TARGETS=100 cargo bench --bench lio_vm
//!
//! Goal (docs/configfs.md §9): isctl's create within 1.5× of the 4-writer floor; the no-op
//! apply makes zero configfs calls.

#[path = "../tests/lio_vm/mod.rs"]
mod harness;

use std::fmt::Write as _;
use std::time::Instant;

use harness::isctl::{isctl_cmd, traced, KernelOps, STATE_DIR};
use harness::{Vm, VmOptions, CONFIGFS};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The benchmark model: the same objects `vmtool floor` makes (names differ).
fn bench_model(targets: usize) -> String {
    let mut m = String::from(
        "[global]\nbasename = \"iqn.2026-11.io.isctl.bench\"\n\n\
         [portal.main]\nlisten = [\"[::]:3260\"]\n",
    );
    for i in 0..targets {
        let _ = write!(
            m,
            "\n[initiator_group.g{i}]\ninitiators = [\"iqn.2026-11.io.isctl.bench-client:c{i}\"]\n\
             \n[auth.a{i}]\nuser = \"user{i}\"\nsecret = \"benchsecret{i:04}\"\n\
             \n[extent.bench{i}]\ntype = \"file\"\npath = \"/srv/bench/bench{i}.img\"\nsize = \"1MiB\"\n\
             \n[target.bench{i}]\nluns = {{ 0 = \"bench{i}\" }}\n\
             \n[[target.bench{i}.group]]\nportal = \"main\"\ninitiator_group = \"g{i}\"\nauth = \"a{i}\"\n"
        );
    }
    m
}

struct Sample {
    ms: f64,
    ops: KernelOps,
    reported: Option<u64>,
    /// isctl's own time for executing the plan (`-o json`'s `elapsed_ms`).
    executor_ms: Option<f64>,
}

/// Runs `cmd` under `vmtool time` with the configfs handlers traced.
fn timed(vm: &mut Vm, what: &str, cmd: &str) -> Sample {
    let (out, ops) = traced(vm, &format!("vmtool time sh -c '{cmd}'"));
    assert!(out.success(), "{what} failed\n{out}");
    let ms = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("@@ELAPSED_MS "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{what}: no elapsed time\n{out}"));
    let reported = harness::isctl::apply_report(&out).map(|r| match r {
        harness::isctl::ApplyReport::NoChanges => 0,
        harness::isctl::ApplyReport::Applied {
            configfs_operations,
            ..
        } => configfs_operations,
    });
    let json: Option<serde_json::Value> = serde_json::from_str(&out.stdout).ok();
    let executor_ms = json.as_ref().and_then(|j| j["elapsed_ms"].as_f64());
    let json_ops = json
        .as_ref()
        .and_then(|j| j["configfs_operations"].as_u64());
    let floor_ops = out
        .stdout
        .split_whitespace()
        .find_map(|w| w.strip_prefix("configfs_ops="))
        .and_then(|v| v.parse().ok());
    Sample {
        ms,
        ops,
        reported: reported.or(json_ops).or(floor_ops),
        executor_ms,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench. `cargo test --all-targets` runs this binary without it:
    // booting a VM for minutes there would be a surprise, so only say how to run it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("lio_vm benchmark: run it with `cargo bench --bench lio_vm` (boots a VM)");
        return;
    }
    let started = Instant::now();
    let targets = env_usize("LIO_VM_BENCH_TARGETS", 100);
    let rounds = env_usize("LIO_VM_BENCH_ROUNDS", 3).max(1);
    let mut vm = Vm::boot_with(VmOptions {
        memory_mb: 1024,
        ..VmOptions::new("bench")
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    vm.put_file("bench.toml", bench_model(targets).as_bytes())
        .expect("share");
    vm.put_file("empty.toml", b"# nothing: destroys what isctl manages\n")
        .expect("share");
    vm.sh(&format!("mkdir -p {STATE_DIR} /srv/bench /srv/floor"));

    let apply = |model: &str| isctl_cmd(&format!("apply {model} --auto-approve"));
    let apply_json = |model: &str| isctl_cmd(&format!("apply {model} --auto-approve -o json"));
    let floor = |mode: &str, jobs: usize| {
        format!("vmtool floor {mode} --root {CONFIGFS} --targets {targets} --jobs {jobs} --dir /srv/floor")
    };
    // Indexes below refer to this order.
    let phases: Vec<(&str, String)> = vec![
        // A process's fixed cost: start-up and loading the model. Under TCG it is
        // dominated by translating the code the process runs for the first time.
        (
            "isctl validate (start, model)",
            isctl_cmd("validate bench.toml"),
        ),
        // Observation + planning alone, so the apply's cost can be split.
        ("isctl plan (from empty)", isctl_cmd("plan bench.toml")),
        ("isctl apply (create)", apply("bench.toml")),
        ("isctl apply (no-op)", apply("bench.toml")),
        ("isctl apply empty (destroy)", apply("empty.toml")),
        // The same with -o json, for isctl's own executor time (`elapsed_ms`).
        ("isctl apply -o json (create)", apply_json("bench.toml")),
        ("isctl apply -o json (destroy)", apply_json("empty.toml")),
        ("floor create, 1 writer", floor("create", 1)),
        ("floor destroy, 1 writer", floor("destroy", 1)),
        ("floor create, 4 writers", floor("create", 4)),
        ("floor destroy, 4 writers", floor("destroy", 4)),
        // isctl's default parallelism (apply::DEFAULT_WORKERS).
        ("floor create, 8 writers", floor("create", 8)),
        ("floor destroy, 8 writers", floor("destroy", 8)),
    ];
    let mut results: Vec<Vec<Sample>> = phases.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (i, (what, cmd)) in phases.iter().enumerate() {
            let s = timed(&mut vm, what, cmd);
            eprintln!(
                "round {}: {what:<28} {:>8.1} ms  kernel ops {}",
                round + 1,
                s.ms,
                s.ops
            );
            results[i].push(s);
        }
    }

    println!();
    println!(
        "LIO apply benchmark: {targets} targets x 1 fileio LUN + ACL + CHAP, kernel {}, \
         QEMU TCG 1 vCPU, {rounds} round(s), median wall time measured inside the VM",
        vm.kernel_version
    );
    println!(
        "{:<32} {:>10} {:>13} {:>12} {:>14}",
        "phase", "wall ms", "executor ms", "kernel ops", "reported ops"
    );
    let mut med = Vec::new();
    let mut exec = Vec::new();
    for ((what, _), samples) in phases.iter().zip(&results) {
        let m = median(samples.iter().map(|s| s.ms).collect());
        med.push(m);
        let e: Vec<f64> = samples.iter().filter_map(|s| s.executor_ms).collect();
        let e = (!e.is_empty()).then(|| median(e));
        exec.push(e);
        let ops = samples.last().map(|s| s.ops.total()).unwrap_or_default();
        let reported = samples
            .last()
            .and_then(|s| s.reported)
            .map(|r| r.to_string())
            .unwrap_or_else(|| "-".into());
        let e = e.map_or_else(|| "-".to_string(), |e| format!("{e:.1}"));
        println!("{what:<32} {m:>10.1} {e:>13} {ops:>12} {reported:>14}");
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let (floor_c1, floor_d1, floor_c4, floor_d4, floor_c8, floor_d8) =
        (med[7], med[8], med[9], med[10], med[11], med[12]);
    let (exec_c, exec_d) = (exec[5].unwrap_or(f64::NAN), exec[6].unwrap_or(f64::NAN));
    println!();
    println!(
        "create:  isctl apply / floor(4 writers) = {:.2}x (goal <= 1.5x), / floor(8) = {:.2}x, \
         / floor(1) = {:.2}x; executor alone / floor(4) = {:.2}x, / floor(8) = {:.2}x",
        ratio(med[2], floor_c4),
        ratio(med[2], floor_c8),
        ratio(med[2], floor_c1),
        ratio(exec_c, floor_c4),
        ratio(exec_c, floor_c8)
    );
    println!(
        "destroy: isctl apply / floor(4 writers) = {:.2}x, / floor(8) = {:.2}x, \
         / floor(1) = {:.2}x; executor alone / floor(4) = {:.2}x, / floor(8) = {:.2}x",
        ratio(med[4], floor_d4),
        ratio(med[4], floor_d8),
        ratio(med[4], floor_d1),
        ratio(exec_d, floor_d4),
        ratio(exec_d, floor_d8)
    );
    println!(
        "fixed cost of an isctl process (start + model, TCG): {:.1} ms; plan from empty: {:.1} ms",
        med[0], med[1]
    );
    let noop_ops: Vec<u64> = results[3].iter().map(|s| s.ops.total()).collect();
    println!(
        "no-op apply: {:.1} ms, configfs calls per run {:?} (goal: all 0)",
        med[3], noop_ops
    );
    println!(
        "benchmark wall time (boot + {rounds} rounds): {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
