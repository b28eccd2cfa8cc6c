//! `isctl watch` latency (not a timed test): `cargo bench --bench watch_latency`.
//!
//! The change: one LUN added to a target (a 1 MiB ramdisk extent and its LUN), written
//! the way an editor saves (write a temporary file, rename it over the model). The time
//! runs from the rename to the end of the attempt that applied it (`watch.json` written
//! with the new attempt count and outcome "applied"). `BENCH_ROUNDS` changes (default 20)
//! per setting; min / median / p90 / worst are printed, and what is left once the
//! debounce is subtracted (isctl's own cost: event delivery, load, observe, plan, apply,
//! the state file). A round can come in under the debounce when the 10 s digest check
//! happens to run just after the write.
//!
//! Three backends, each in its own section:
//! * the simulated configfs (`ISCTL_SIMULATE`), native, debounce 500 / 50 / 0 ms;
//! * the userspace engine (`isctl serve`), native, debounce 0;
//! * the kernel's LIO in the real-kernel test VM (QEMU TCG, so 20-40× slower than
//!   native: compare only with the floor measured in the same VM), debounce 0 and 500.
//!   The floor is the same change made with the minimal configfs syscalls (mkdir the
//!   ramdisk, write `control` and `enable`, mkdir the LUN, symlink it: `vmtool ops`), timed
//!   the same way (a fresh process from the shell), so the ratio is isctl's overhead.
//!   `BENCH_SKIP_VM=1` leaves this section out.
//!
//! Every LIO setting starts from a one-LUN target (the watcher observes and plans the
//! whole target, so its cost grows with the LUN count). Figures (quiet 2-core machine, 20
//! rounds) are in docs/testing-lio-vm.md "The watch latency benchmark": on LIO, median
//! minus debounce 102 ms at debounce 0 and 97 ms at 500 against a 44 ms floor (2.3x,
//! 2.2x); the engine natively 2.0 ms.

#[path = "../tests/lio_vm/mod.rs"]
mod harness;

use std::fs;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::vm::base64_encode;
use harness::{Vm, VmOptions, CONFIGFS};
use isctl::backend::sim::Sim;

const BASENAME: &str = "iqn.2026-11.io.isctl.bench";

/// The model after `luns` one-LUN changes: target `t` with LUNs 0..=luns.
fn model(listen: &str, luns: usize) -> String {
    let mut text = format!(
        "[global]\nbasename = \"{BASENAME}\"\n[portal.main]\nlisten = [\"{listen}\"]\n\
         [target.t]\nluns = {{ {} }}\n[[target.t.group]]\nportal = \"main\"\n",
        (0..=luns)
            .map(|i| format!("{i} = \"r{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for i in 0..=luns {
        text.push_str(&format!(
            "[extent.r{i}]\ntype = \"ramdisk\"\nsize = \"1MiB\"\n"
        ));
    }
    text
}

/// `(attempts, outcome)` of the state file, if it is there and readable.
fn last_attempt(text: &str) -> Option<(u64, String)> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    Some((
        v["attempts"].as_u64()?,
        v["outcome"].as_str().unwrap_or_default().to_string(),
    ))
}

/// Waits (natively) until the state file records an attempt after attempt `after` that
/// applied (with `after` 0: any first attempt, which may find nothing to do). An
/// attempt in between that found nothing to do (an event of the temporary file) is
/// waited through, so the time is always the one to the change being applied.
/// Returns when and the attempt count.
fn wait_applied(state: &Path, after: u64, log: &Path) -> (Instant, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = fs::read_to_string(state.join("watch.json")).unwrap_or_default();
        if let Some((attempts, outcome)) = last_attempt(&text) {
            if attempts > after && (after == 0 || outcome == "applied") {
                return (Instant::now(), attempts);
            }
            assert!(
                matches!(outcome.as_str(), "applied" | "no_changes"),
                "attempt {attempts} failed:\n{text}\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no apply after attempt {after}:\n{}",
            fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// A running native `isctl watch`, killed when dropped.
struct Watch(Child);

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Native rounds: `isctl GLOBAL_ARGS watch DIR --debounce D` with the model in `dir/m`
/// (already holding the 0-change model); returns one duration per change.
fn native_rounds(
    dir: &Path,
    global_args: &[&str],
    envs: &[(&str, &Path)],
    listen: &str,
    debounce_ms: u64,
    rounds: usize,
) -> Vec<Duration> {
    let state = dir.join(format!("state-{debounce_ms}"));
    let models = dir.join("m");
    let log = dir.join(format!("watch-{debounce_ms}.log"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_isctl"));
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let _watch = Watch(
        cmd.env_remove("ISCTL_CONFIGFS_ROOT")
            .env_remove("ISCTL_BACKEND")
            .env_remove("RUST_LOG")
            .args(global_args)
            .arg("--state-dir")
            .arg(&state)
            .arg("watch")
            .arg(&models)
            .args(["--debounce", &debounce_ms.to_string(), "--interval", "3600"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("start isctl watch"),
    );
    let base = fs::read_to_string(models.join("t.toml")).unwrap();
    let base_luns = base.matches("[extent.").count() - 1;
    let (_, mut attempts) = wait_applied(&state, 0, &log);
    let mut out = Vec::new();
    for i in 1..=rounds {
        let tmp = models.join(".t.toml.tmp");
        fs::write(&tmp, model(listen, base_luns + i)).unwrap();
        let start = Instant::now();
        fs::rename(&tmp, models.join("t.toml")).unwrap();
        let (done, now) = wait_applied(&state, attempts, &log);
        attempts = now;
        out.push(done - start);
    }
    out
}

fn simulator(rounds: usize, debounce_ms: u64) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim.json");
    Sim::new(&Sim::default_root()).save(&sim).unwrap();
    let listen = "127.0.0.1:3260";
    fs::create_dir_all(dir.path().join("m")).unwrap();
    fs::write(dir.path().join("m/t.toml"), model(listen, 0)).unwrap();
    native_rounds(
        dir.path(),
        &["--quiet"],
        &[("ISCTL_SIMULATE", &sim)],
        listen,
        debounce_ms,
        rounds,
    )
}

fn engine(rounds: usize) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let port = harness::host::free_port().expect("a free port");
    let listen = format!("127.0.0.1:{port}");
    fs::create_dir_all(dir.path().join("m")).unwrap();
    fs::write(dir.path().join("m/t.toml"), model(&listen, 0)).unwrap();
    let sock = dir.path().join("engine.sock");
    let _engine = Watch(
        Command::new(env!("CARGO_BIN_EXE_isctl"))
            .env_remove("ISCTL_SIMULATE")
            .arg("--socket")
            .arg(&sock)
            .arg("serve")
            .arg(dir.path().join("m"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("serve.log")).unwrap())
            .spawn()
            .expect("start isctl serve"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "isctl serve never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let sock_str = sock.to_str().unwrap();
    native_rounds(
        dir.path(),
        &["--quiet", "--backend", "userspace", "--socket", sock_str],
        &[],
        &listen,
        0,
        rounds,
    )
}

/// Runs `script` in the VM under `vmtool time` and returns its wall time measured there.
fn vm_timed(vm: &mut Vm, what: &str, script: &str) -> Duration {
    let out = vm.sh(&format!(
        "vmtool time sh -c '{}'",
        script.replace('\'', "'\\''")
    ));
    let ms: f64 = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("@@ELAPSED_MS "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{what}: no elapsed time\n{out}"));
    Duration::from_secs_f64(ms / 1000.0)
}

fn vm_write(vm: &mut Vm, path: &str, text: &str) {
    vm.sh(&format!(
        "echo '{}' | base64 -d > {path}",
        base64_encode(text.as_bytes())
    ));
}

/// LIO in the VM: `isctl watch` rounds at `debounce_ms`, the watcher's state in `/tmp/w`
/// and its log in `/tmp/w-<debounce>.log`, continuing the model from `*luns` LUNs (the
/// watcher's first apply makes the kernel match the model as it stands).
fn lio_rounds(vm: &mut Vm, luns: &mut usize, debounce_ms: u64, rounds: usize) -> Vec<Duration> {
    let listen = "0.0.0.0:3260";
    // One state directory for every setting: its ledger says which LUNs isctl made, so
    // the next watcher's first apply may remove the previous setting's (with a ledger of
    // its own it would leave them as unmanaged). Only the record starts afresh.
    let state = "/tmp/w";
    let log = format!("/tmp/w-{debounce_ms}.log");
    vm.sh(&format!(
        "rm -f {state}/watch.json; \
         isctl --state-dir {state} watch /tmp/m --debounce {debounce_ms} --interval 3600 \
         > {log} 2>&1 & echo $! > {state}.pid"
    ));
    // Done: the LUN is in the kernel and a later attempt than `prev` recorded "applied"
    // (one that found nothing to do, for an event of the temporary file, is waited through).
    let lun = format!("{CONFIGFS}/iscsi/{BASENAME}:t/tpgt_1/lun");
    let wait = |i: usize, prev: u64| {
        format!(
            "give_up=$(( $(date +%s) + 120 )); \
             until [ -d {lun}/lun_{i} ] && grep -q '\"outcome\": \"applied\"' {state}/watch.json \
             && ! grep -qE '\"attempts\": {prev}([^0-9]|$)' {state}/watch.json; do \
             if ! grep -qE '\"attempts\": {prev}([^0-9]|$)' {state}/watch.json \
             && grep -qE '\"outcome\": \"(refused|failed|invalid_model)\"' {state}/watch.json \
             || [ $(date +%s) -gt $give_up ]; then \
             cat {state}/watch.json; tail -n 40 {log}; exit 1; fi; usleep 1000; done"
        )
    };
    let attempts = |vm: &mut Vm| {
        let text = vm.sh(&format!("cat {state}/watch.json")).stdout;
        last_attempt(&text).map_or(0, |a| a.0)
    };
    vm_timed(
        vm,
        "the watcher's first apply",
        &format!("until [ -f {state}/watch.json ]; do usleep 1000; done"),
    );
    let first = vm.sh(&format!("cat {state}/watch.json")).stdout;
    assert!(
        matches!(last_attempt(&first), Some((_, ref o)) if o == "applied" || o == "no_changes"),
        "the watcher's first apply at debounce {debounce_ms}:\n{first}"
    );
    let mut out = Vec::new();
    for _ in 1..=rounds {
        *luns += 1;
        let i = *luns;
        vm_write(vm, "/tmp/m/.t.toml.tmp", &model(listen, i));
        let prev = attempts(vm);
        out.push(vm_timed(
            vm,
            "a one-LUN change",
            &format!("mv /tmp/m/.t.toml.tmp /tmp/m/t.toml; {}", wait(i, prev)),
        ));
        let state_text = vm.sh(&format!("cat {state}/watch.json")).stdout;
        let outcome = last_attempt(&state_text).map(|a| a.1);
        assert_eq!(
            outcome.as_deref(),
            Some("applied"),
            "LIO round {i}:\n{state_text}\n{}",
            vm.sh(&format!("tail -n 30 {log}")).stdout
        );
    }
    vm.sh(&format!(
        "kill $(cat {state}.pid); while kill -0 $(cat {state}.pid) 2>/dev/null; do usleep 10000; done"
    ));
    out
}

/// The floor in the same VM: the same one-LUN change with the minimal configfs syscalls.
fn lio_floor(vm: &mut Vm, rounds: usize) -> Vec<Duration> {
    let tpg = format!("iscsi/{BASENAME}:floor/tpgt_1");
    vm.sh(&format!(
        "mkdir -p {CONFIGFS}/{tpg} {CONFIGFS}/core/rd_mcp_900 /tmp/floor"
    ));
    let mut out = Vec::new();
    for i in 0..rounds {
        let bs = format!("core/rd_mcp_900/f{i}");
        vm_write(
            vm,
            &format!("/tmp/floor/{i}.ops"),
            &format!(
                "mkdir {bs}\nw {bs}/control rd_pages=256\nw {bs}/enable 1\nmkdir {tpg}/lun/lun_{i}\nln {CONFIGFS}/{bs} {tpg}/lun/lun_{i}/f{i}\n"
            ),
        );
        out.push(vm_timed(
            vm,
            "the floor",
            &format!("vmtool ops --root {CONFIGFS} < /tmp/floor/{i}.ops > /tmp/floor/{i}.out"),
        ));
        let result = vm.sh(&format!("cat /tmp/floor/{i}.out")).stdout;
        assert!(
            result.lines().all(|l| l.ends_with("=> ok")),
            "floor round {i}:\n{result}"
        );
    }
    out
}

fn lio(rounds: usize) -> (Vec<(u64, Vec<Duration>)>, Vec<Duration>) {
    let mut opts = VmOptions::new("watch-latency");
    // A loaded machine stretches TCG's boot well past the tests' default.
    opts.boot_timeout = opts.boot_timeout.max(std::time::Duration::from_secs(600));
    let mut vm = Vm::boot_with(opts).unwrap_or_else(|e| panic!("{e:#}"));
    vm.sh("mkdir -p /tmp/m");
    let mut isctl = Vec::new();
    for debounce in [0u64, 500] {
        // Every setting starts from one LUN (the watcher's first apply removes the
        // previous setting's): the watcher observes and plans the whole target, so its
        // cost grows with the LUN count, and settings compared on different sizes
        // would show that growth as the debounce's cost.
        let mut luns = 0;
        vm_write(&mut vm, "/tmp/m/t.toml", &model("0.0.0.0:3260", luns));
        isctl.push((debounce, lio_rounds(&mut vm, &mut luns, debounce, rounds)));
    }
    let floor = lio_floor(&mut vm, rounds);
    (isctl, floor)
}

struct Stats {
    min: Duration,
    median: Duration,
    p90: Duration,
    worst: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let pick = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Stats {
        min: v[0],
        median: pick(0.5),
        p90: pick(0.9),
        worst: v[v.len() - 1],
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn line(label: &str, s: &Stats, debounce_ms: u64) -> String {
    format!(
        "  {label}: min {}, median {}, p90 {}, worst {}; median minus debounce {}",
        ms(s.min),
        ms(s.median),
        ms(s.p90),
        ms(s.worst),
        ms(s.median.saturating_sub(Duration::from_millis(debounce_ms)))
    )
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    println!(
        "isctl watch: one-LUN change (rename into place) -> applied and recorded, {rounds} rounds"
    );
    println!("simulated configfs (native):");
    for debounce in [500u64, 50, 0] {
        let s = stats(simulator(rounds, debounce));
        println!(
            "{}",
            line(&format!("--debounce {debounce:>3}"), &s, debounce)
        );
    }
    println!("userspace engine (native):");
    println!("{}", line("--debounce   0", &stats(engine(rounds)), 0));
    if std::env::var_os("BENCH_SKIP_VM").is_some_and(|v| v != "0") {
        return;
    }
    let (isctl, floor) = lio(rounds);
    let floor = stats(floor);
    println!("LIO in the test VM (QEMU TCG; compare only with the floor from the same VM):");
    for (debounce, v) in isctl {
        let s = stats(v);
        println!(
            "{}",
            line(&format!("--debounce {debounce:>3}"), &s, debounce)
        );
        let own = s.median.saturating_sub(Duration::from_millis(debounce));
        println!(
            "    median minus debounce / floor median: {:.1}x; worst / floor worst: {:.1}x",
            own.as_secs_f64() / floor.median.as_secs_f64(),
            s.worst
                .saturating_sub(Duration::from_millis(debounce))
                .as_secs_f64()
                / floor.worst.as_secs_f64()
        );
    }
    println!(
        "{}",
        line("floor (raw configfs syscalls, vmtool ops)", &floor, 0)
    );
}
