//! Reconciler benchmark (not a timed test): `cargo bench --bench reconcile`.
//!
//! Builds a model of 1,000 targets × 4 file LUNs, each target with an ACL for two
//! initiators and one-way CHAP, and prints:
//! * model load, plan time from empty (lower + observe + diff), apply time into the
//!   simulated configfs, and the no-op plan time against the applied state;
//! * configfs operations per object kind against the minimum the tree needs
//!   (docs/configfs.md §4/§9), and against an rtslib-style restore that writes every
//!   attribute and parameter (§9: ~30 storage-object attributes, 14 TPG attributes,
//!   21 TPG parameters, 9 ACL attributes);
//! * the executor with the kernel's measured latencies emulated (§9: LUN link 10 ms,
//!   unlink 23 ms, TPG rmdir 24 ms, object rmdir 12 ms), 1 worker against 4;
//! * peak resident memory (VmHWM).
//!
//! The simulator is an in-memory model of configfs: the apply time measures isctl's
//! own cost, not the kernel's. `BENCH_TARGETS=n` changes the size.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use isctl::apply::{executor, ApplyOptions, Ledger};
use isctl::backend::lio::LioBackend;
use isctl::backend::sim::{Latency, Sim};
use isctl::backend::{Backend, ObserveScope};
use isctl::plan::{self, DiffOptions, Op, Plan};
use isctl::state::{self, State};

fn model_text(targets: usize, luns: usize, acls: bool) -> String {
    let mut t = String::new();
    t.push_str("[global]\nbasename = \"iqn.2026-01.io.isctl.bench\"\n\n[portal.all]\nlisten = [\"[::]:3260\"]\n\n");
    if acls {
        t.push_str("[auth.chap]\nuser = \"benchuser\"\nsecret = \"bench-secret-01\"\n\n");
    }
    for i in 0..targets {
        if acls {
            let _ = writeln!(
                t,
                "[initiator_group.g{i}]\ninitiators = [\"iqn.1994-05.com.example:host{i}a\", \"iqn.1994-05.com.example:host{i}b\"]\n"
            );
        }
        let mut map = Vec::new();
        for l in 0..luns {
            let _ = writeln!(
                t,
                "[extent.t{i}l{l}]\ntype = \"file\"\npath = \"/srv/bench/t{i}l{l}.img\"\nsize = \"64MiB\"\n"
            );
            map.push(format!("{l} = \"t{i}l{l}\""));
        }
        let _ = writeln!(t, "[target.t{i}]\nluns = {{ {} }}\n", map.join(", "));
        let _ = writeln!(t, "[[target.t{i}.group]]\nportal = \"all\"");
        if acls {
            let _ = writeln!(t, "initiator_group = \"g{i}\"\nauth = \"chap\"");
        }
        t.push('\n');
    }
    t
}

fn host() -> (Arc<Sim>, LioBackend) {
    let sim = Arc::new(Sim::new(&Sim::default_root()));
    sim.add_host_dir(Path::new("/srv/bench"));
    let backend = LioBackend::new(&Sim::default_root(), sim.clone(), sim.clone());
    (sim, backend)
}

fn make_plan(backend: &LioBackend, desired: &State) -> Plan {
    let observed = backend.observe(ObserveScope::Managed).expect("observe");
    let facts = backend.host_facts(desired);
    let mut p = plan::diff(
        desired,
        &observed,
        &facts,
        &Default::default(),
        &DiffOptions::default(),
    );
    p.count_operations(|op| backend.operation_count(op));
    p
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Object kind an op's configfs operations are charged to.
fn kind(op: &Op) -> &'static str {
    match op {
        Op::CreateFabric | Op::DeleteFabric | Op::SetDiscoveryEnforce { .. } => "fabric",
        Op::SetAuth {
            scope: plan::AuthScope::Discovery,
            ..
        } => "fabric",
        other => other.object().kind(),
    }
}

fn main() {
    let targets: usize = std::env::var("BENCH_TARGETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let luns = 4;
    println!("isctl reconcile benchmark: {targets} targets x {luns} file LUNs, 2 initiators (ACLs) and CHAP per target\n");

    let text = model_text(targets, luns, true);
    let t0 = Instant::now();
    let model = isctl::model::load_str("bench.toml", &text)
        .expect("model")
        .model;
    let load = t0.elapsed();
    let t0 = Instant::now();
    let desired = state::lower(&model).expect("lower");
    let lower = t0.elapsed();

    let (sim, backend) = host();
    let t0 = Instant::now();
    let p = make_plan(&backend, &desired);
    let plan_empty = t0.elapsed();
    assert!(!p.is_refused(), "{:?}", p.refusals);
    let total = p.summary().configfs_operations;
    let rss_planned = peak_rss_kib();

    let state_dir = tempfile::tempdir().expect("tempdir");
    let mut ledger = Ledger::load(state_dir.path(), "lio", &backend.location()).expect("ledger");
    let t0 = Instant::now();
    let done =
        isctl::apply::apply(&p, &backend, &mut ledger, &ApplyOptions::default()).expect("apply");
    let apply = t0.elapsed();
    assert_eq!(done.operations, total);

    let t0 = Instant::now();
    let observed = backend.observe(ObserveScope::Managed).expect("observe");
    let observe = t0.elapsed();
    let t1 = Instant::now();
    let facts = backend.host_facts(&desired);
    let noop = plan::diff(
        &desired,
        &observed,
        &facts,
        &ledger.objects(),
        &DiffOptions::default(),
    );
    let diff_only = t1.elapsed();
    let noop_total = t0.elapsed();
    assert!(
        noop.is_empty(),
        "no-op plan is not empty: {} changes",
        noop.changes.len()
    );
    let before = sim.mutations();
    let again = isctl::apply::apply(&noop, &backend, &mut ledger, &ApplyOptions::default())
        .expect("re-apply");
    assert_eq!(again.operations, 0);
    assert_eq!(sim.mutations(), before);

    println!("timings (release build, simulated configfs):");
    println!(
        "  model load ({} bytes of TOML)          {}",
        text.len(),
        ms(load)
    );
    println!("  lower to desired state                  {}", ms(lower));
    println!(
        "  plan from empty (observe+diff)          {}",
        ms(plan_empty)
    );
    println!(
        "  apply into the simulator ({} workers)    {}  ({} configfs operations)",
        isctl::apply::DEFAULT_WORKERS,
        ms(apply),
        total
    );
    println!(
        "  no-op plan (observe + diff)             {}  (observe {}, diff {})",
        ms(noop_total),
        ms(observe),
        ms(diff_only)
    );
    println!("  no-op re-apply                          0 configfs operations\n");

    // Operations per object kind against the minimum (docs/configfs.md §4/§9).
    let mut by_kind: BTreeMap<&str, u64> = BTreeMap::new();
    for o in &p.ops {
        *by_kind.entry(kind(&o.op)).or_default() += o.backend_operations;
    }
    let n = targets as u64;
    let l = (targets * luns) as u64;
    let a = 2 * n;
    // fileio: mkdir HBA, mkdir object, control, enable, serial (block size 512 and
    // is_nonrot 0 are the defaults after enable).
    // TPG: mkdir, enable (authentication=1 is the default with CHAP).
    // ACL: mkdir, userid, password. Mapped LUN: mkdir, symlink. LUN: mkdir, symlink.
    let minimum: Vec<(&str, u64, u64, &str)> = vec![
        (
            "backstore",
            l,
            5,
            "mkdir HBA, mkdir object, control, enable, serial",
        ),
        ("fabric", 1, 1, "mkdir iscsi"),
        ("target", n, 1, "mkdir"),
        ("tpg", n, 2, "mkdir tpgt_1, enable"),
        ("portal", n, 1, "mkdir np"),
        ("lun", l, 2, "mkdir, symlink"),
        ("acl", a, 3, "mkdir, userid, password"),
        ("mapped_lun", a * luns as u64, 2, "mkdir, symlink"),
    ];
    println!("configfs operations per object kind (isctl vs the minimum the tree needs):");
    println!(
        "  {:<11} {:>8} {:>10} {:>10} {:>6}  minimum per object",
        "kind", "objects", "isctl", "minimum", "ratio"
    );
    let mut min_total = 0;
    for (k, count, per, what) in &minimum {
        let got = by_kind.get(k).copied().unwrap_or(0);
        let min = count * per;
        min_total += min;
        println!(
            "  {k:<11} {count:>8} {got:>10} {min:>10} {:>6.2}  {per} ({what})",
            got as f64 / min as f64
        );
    }
    let rtslib = total + l * 30 + n * (14 + 21) + a * 9;
    println!(
        "  {:<11} {:>8} {:>10} {:>10} {:>6.2}",
        "total",
        "",
        total,
        min_total,
        total as f64 / min_total as f64
    );
    println!(
        "  an rtslib-style restore of the same tree writes every attribute and parameter: ~{rtslib} operations ({:.1}x isctl; estimate from docs/configfs.md §9)\n",
        rtslib as f64 / total as f64
    );

    // Worker scaling with the kernel's measured latencies emulated.
    let small = 40.min(targets);
    let smodel = isctl::model::load_str("small.toml", &model_text(small, 1, false))
        .expect("model")
        .model;
    let sdesired = state::lower(&smodel).expect("lower");
    println!("executor with the kernel's latencies emulated ({small} targets x 1 LUN, docs/configfs.md §9):");
    let mut results = Vec::new();
    for workers in [1usize, 4] {
        let (sim, backend) = host();
        sim.set_latency(Latency::measured());
        let p = make_plan(&backend, &sdesired);
        let t0 = Instant::now();
        executor::run(&p, &backend, workers).expect("create");
        let create = t0.elapsed();
        let observed = backend.observe(ObserveScope::Managed).expect("observe");
        let managed = sdesired.object_ids().into_iter().collect();
        let mut teardown = plan::diff(
            &State::default(),
            &observed,
            &Default::default(),
            &managed,
            &DiffOptions::default(),
        );
        teardown.count_operations(|op| backend.operation_count(op));
        let t0 = Instant::now();
        executor::run(&teardown, &backend, workers).expect("delete");
        let delete = t0.elapsed();
        println!(
            "  {workers} worker(s): create {} ({} ops), delete {} ({} ops)",
            ms(create),
            p.summary().configfs_operations,
            ms(delete),
            teardown.summary().configfs_operations
        );
        results.push((create, delete));
    }
    println!(
        "  speed-up with 4 workers: create {:.1}x, delete {:.1}x (the kernel measured ~4x and ~2.5x, §9)\n",
        results[0].0.as_secs_f64() / results[1].0.as_secs_f64(),
        results[0].1.as_secs_f64() / results[1].1.as_secs_f64()
    );

    match (rss_planned, peak_rss_kib()) {
        (Some(p), Some(k)) => println!(
            "peak resident memory (VmHWM): {:.1} MiB after planning from empty (model, states, plan of {} ops); {:.1} MiB at the end (the simulated configfs tree of the whole host included)",
            p as f64 / 1024.0,
            total,
            k as f64 / 1024.0
        ),
        _ => println!("peak resident memory: not available (/proc/self/status)"),
    }
}
