//! SCSI/iSCSI conformance of the userspace engine: libiscsi's `iscsi-test-cu` against
//! `isctl serve`, the acceptance measure of the engine (see docs/scsi.md).
//!
//! The test builds a model (a 512 MiB file LUN in a temporary directory, /dev/shm when
//! available; a read-only LUN on a second target), starts `isctl serve` on port 13300,
//! and runs:
//!
//! 1. MultipathIO with the same URL given twice (a second path), on LUN 1;
//! 2. the whole suite: `iscsi-test-cu -V --dataloss -t ALL <url>` on LUN 0;
//! 3. ReadOnly against the read-only LUN of a second target.
//!
//! It parses the output with the parser in `conformance/cu.rs`, prints a per-family
//! table beside the kernel's LIO, and fails when a family passes fewer tests than
//! `conformance/expected.toml` records or when a test not listed there as a known
//! skip or failure does not pass. Tests listed there that now pass are reported so
//! the list can be tightened.

#[path = "conformance/cu.rs"]
mod cu;
#[path = "conformance/engine.rs"]
mod engine;

use engine::{start_engine, work_dir};

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

const PORT: u16 = 13300;
const TARGET: &str = "iqn.2026-11.io.isctl:conformance";
const TARGET_RO: &str = "iqn.2026-11.io.isctl:conformance-ro";
/// Per run; the whole suite takes well under a minute on the engine.
const RUN_TIMEOUT: Duration = Duration::from_secs(240);

// ---- expected.toml ---------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    /// Per family: the pass floor and LIO's passes for the report.
    family: BTreeMap<String, Family>,
    /// Tests that do not pass, each with its reason.
    #[serde(default)]
    test: BTreeMap<String, Known>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Family {
    /// Tests in the family (libiscsi 1.19.0).
    tests: usize,
    /// Fewer passes than this fails the conformance test.
    pass: usize,
    /// LIO's passes (docs/conformance-reference), for comparison only.
    lio: usize,
    /// Which run measures this family: "main" (default), "multipath" or "readonly".
    #[serde(default = "main_run")]
    run: String,
}

fn main_run() -> String {
    "main".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Known {
    /// "skip" or "fail".
    expect: String,
    reason: String,
    /// Standard and section (SPC-4 / SBC-3 / RFC 7143) or libiscsi source that
    /// explains the outcome.
    reference: String,
}

fn expected() -> Expected {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/expected.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---- the engine under test ---------------------------------------------------------

fn write_model(dir: &Path) -> PathBuf {
    let model = format!(
        r#"# Written by tests/conformance.rs.
[portal.conformance]
listen = ["127.0.0.1:{PORT}"]

[extent.disk]
type = "file"
path = "{disk}"
size = "512MiB"

[extent.mpath]
type = "file"
path = "{mpath}"
size = "64MiB"

[extent.ro]
type = "file"
path = "{ro}"
size = "16MiB"
readonly = true

[target."{TARGET}"]
luns = {{ 0 = "disk", 1 = "mpath" }}
[[target."{TARGET}".group]]
portal = "conformance"

[target."{TARGET_RO}"]
luns = {{ 0 = "ro" }}
[[target."{TARGET_RO}".group]]
portal = "conformance"
"#,
        disk = dir.join("disk.img").display(),
        mpath = dir.join("mpath.img").display(),
        ro = dir.join("ro.img").display(),
    );
    // The read-only extent's file must exist: a read-only LU is never created.
    std::fs::write(dir.join("ro.img"), vec![0u8; 16 << 20]).expect("create ro.img");
    let path = dir.join("model.toml");
    std::fs::write(&path, model).expect("write the model");
    path
}

// ---- running iscsi-test-cu -----------------------------------------------------------

fn require_tool() {
    let found = Command::new("iscsi-test-cu")
        .arg("--list")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "iscsi-test-cu not found: install libiscsi-bin (Debian/Ubuntu: apt-get install \
         libiscsi-bin; or tests/install-deps.sh)"
    );
}

/// Run iscsi-test-cu with `args`, return its stdout+stderr.
fn run_cu(label: &str, args: &[String], dir: &Path) -> String {
    let out_path = dir.join(format!("{label}.txt"));
    let out = std::fs::File::create(&out_path).expect("create output file");
    let started = Instant::now();
    let mut child = Command::new("iscsi-test-cu")
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("clone output handle"))
        .stderr(out)
        .spawn()
        .expect("start iscsi-test-cu");
    loop {
        if let Some(_status) = child.try_wait().expect("wait for iscsi-test-cu") {
            break;
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let mut text = String::new();
            let _ = std::fs::File::open(&out_path).and_then(|mut f| f.read_to_string(&mut text));
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            panic!(
                "iscsi-test-cu ({label}) did not finish within {RUN_TIMEOUT:?}; last lines:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "conformance: {label} run took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let text = std::fs::read(&out_path).expect("read output");
    String::from_utf8_lossy(&text).into_owned()
}

fn url(target: &str, lun: u16) -> String {
    format!("iscsi://127.0.0.1:{PORT}/{target}/{lun}")
}

// ---- the test ----------------------------------------------------------------------

#[test]
#[ignore = "needs libiscsi-bin (iscsi-test-cu): run via tests/run.sh"]
fn iscsi_test_cu_against_engine() {
    require_tool();
    let expected = expected();
    let dir = work_dir();
    let model = write_model(dir.path());
    let engine = start_engine(dir.path(), &model, PORT);

    let base = ["-V".to_string(), "--dataloss".to_string(), "-t".to_string()];
    // MultipathIO on its own, fresh LUN: its COMPARE AND WRITE test reads one block
    // past the range it initialises and expects it to be zero.
    let mut mp = base.to_vec();
    mp.extend(["ALL.MultipathIO".into(), url(TARGET, 1), url(TARGET, 1)]);
    let mp_out = run_cu("multipath", &mp, dir.path());
    let mut all = base.to_vec();
    all.extend(["ALL".into(), url(TARGET, 0)]);
    let main_out = run_cu("main", &all, dir.path());
    let mut ro = base.to_vec();
    ro.extend(["ALL.ReadOnly".into(), url(TARGET_RO, 0)]);
    let ro_out = run_cu("readonly", &ro, dir.path());
    let engine_log = engine.log_tail();
    drop(engine);

    let main = cu::parse(&main_out);
    assert!(
        main.len() >= 200,
        "the main run reported only {} tests; output tail:\n{}\nengine log:\n{engine_log}",
        main.len(),
        main_out
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    let multipath = cu::parse(&mp_out);
    let readonly = cu::parse(&ro_out);

    let report = check(&expected, &main, &multipath, &readonly);
    println!("{}", report.text);
    assert!(
        report.problems.is_empty(),
        "conformance regressions:\n{}\n(full outputs were in {})",
        report.problems.join("\n"),
        dir.path().display()
    );
}

struct Report {
    text: String,
    problems: Vec<String>,
}

/// Compare the runs with expected.toml and render the per-family table.
fn check(
    expected: &Expected,
    main: &[cu::TestResult],
    multipath: &[cu::TestResult],
    readonly: &[cu::TestResult],
) -> Report {
    let run_of = |family: &str| {
        expected
            .family
            .get(family)
            .map_or("main", |f| f.run.as_str())
    };
    // The result that counts for each test: its family's run.
    let mut results: Vec<&cu::TestResult> = Vec::new();
    for (run, set) in [
        ("main", main),
        ("multipath", multipath),
        ("readonly", readonly),
    ] {
        results.extend(set.iter().filter(|r| run_of(&r.suite) == run));
    }
    let owned: Vec<cu::TestResult> = results.iter().map(|r| (*r).clone()).collect();
    let (rows, total) = cu::tally(&owned);

    let mut problems = Vec::new();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "| Family | Tests | Pass | (PASS*) | Fail | Skip | LIO pass | floor |"
    );
    let _ = writeln!(text, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut lio_total = 0;
    for (family, c) in &rows {
        let (lio, floor) = expected
            .family
            .get(family)
            .map_or((0, 0), |f| (f.lio, f.pass));
        lio_total += lio;
        let inc = if c.incomplete > 0 {
            format!(" (+{} hung)", c.incomplete)
        } else {
            String::new()
        };
        let _ = writeln!(
            text,
            "| {family} | {} | {} | {} | {} | {}{inc} | {lio} | {floor} |",
            c.total(),
            c.pass,
            if c.partial > 0 {
                c.partial.to_string()
            } else {
                String::new()
            },
            c.fail,
            c.skip
        );
        match expected.family.get(family) {
            None => problems.push(format!(
                "family {family} is not in expected.toml: add it with its pass floor"
            )),
            Some(f) if c.pass < f.pass => problems.push(format!(
                "family {family}: {} pass, expected at least {}",
                c.pass, f.pass
            )),
            _ => {}
        }
    }
    let _ = writeln!(
        text,
        "| **TOTAL** | **{}** | **{}** | **{}** | **{}** | **{}** | **{lio_total}** | |",
        total.total(),
        total.pass,
        total.partial,
        total.fail,
        total.skip + total.incomplete
    );
    for family in expected.family.keys() {
        if !rows.iter().any(|(f, _)| f == family) {
            problems.push(format!("family {family} did not run"));
        }
    }

    let mut improved = Vec::new();
    // Known non-passes grouped by reason, unexpected ones one by one.
    let mut known_groups: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut unexpected = Vec::new();
    for r in &owned {
        let key = r.key();
        let known = expected.test.get(&key);
        if r.outcome.is_pass() {
            if known.is_some() {
                improved.push(key);
            }
            continue;
        }
        let first = r.messages.first().map(String::as_str).unwrap_or("");
        match known {
            None => {
                unexpected.push(format!("- {key}: {} {first}", r.outcome));
                problems.push(format!(
                    "{key} is {} but expected to pass ({first})",
                    r.outcome
                ));
            }
            Some(k) => known_groups
                .entry((
                    format!("{} ({})", k.reason, k.reference),
                    r.outcome.to_string(),
                ))
                .or_default()
                .push(key),
        }
    }
    if !unexpected.is_empty() {
        let _ = writeln!(text, "\nUnexpected non-passes:\n{}", unexpected.join("\n"));
    }
    let _ = writeln!(
        text,
        "\nKnown non-passes (tests/conformance/expected.toml):"
    );
    for ((reason, outcome), keys) in &known_groups {
        let _ = writeln!(
            text,
            "- {outcome} ({}): {}\n    {reason}",
            keys.len(),
            keys.join(", ")
        );
    }
    if !improved.is_empty() {
        let _ = writeln!(
            text,
            "\nListed in expected.toml but now passing (remove them): {}",
            improved.join(", ")
        );
    }
    Report { text, problems }
}

// ---- checks that run without the tool ----------------------------------------------

#[test]
fn expected_toml_is_consistent() {
    let e = expected();
    let mut tests = 0;
    for (name, f) in &e.family {
        assert!(f.pass <= f.tests, "{name}: floor above the number of tests");
        assert!(
            ["main", "multipath", "readonly"].contains(&f.run.as_str()),
            "{name}: unknown run {}",
            f.run
        );
        tests += f.tests;
    }
    assert_eq!(tests, 230, "libiscsi 1.19.0 has 230 tests in ALL");
    for (key, k) in &e.test {
        let family = key.split('.').next().unwrap_or("");
        assert!(e.family.contains_key(family), "{key}: unknown family");
        assert!(
            k.expect == "skip" || k.expect == "fail",
            "{key}: expect must be skip or fail"
        );
        assert!(
            !k.reason.is_empty() && !k.reference.is_empty(),
            "{key}: reason and reference are required"
        );
    }
    // A family's floor leaves room for exactly its known non-passes.
    for (name, f) in &e.family {
        let known = e
            .test
            .keys()
            .filter(|k| k.split('.').next() == Some(name.as_str()))
            .count();
        assert_eq!(
            f.pass + known,
            f.tests,
            "{name}: floor {} + {known} known non-passes != {} tests",
            f.pass,
            f.tests
        );
    }
}

#[test]
fn check_flags_a_regression_and_a_low_family() {
    let e: Expected = toml::from_str(
        r#"
[family.Read10]
tests = 2
pass = 1
lio = 2
[test."Read10.Skippy"]
expect = "skip"
reason = "r"
reference = "SBC-3"
"#,
    )
    .unwrap();
    let out =
        "Suite: Read10\n  Test: Simple ...\nFAILED\n  Test: Skippy ...\n[SKIPPED] x\npassed\n";
    let r = check(&e, &cu::parse(out), &[], &[]);
    assert!(r
        .problems
        .iter()
        .any(|p| p.contains("Read10.Simple is FAIL")));
    assert!(r.problems.iter().any(|p| p.contains("0 pass")));
    let ok = "Suite: Read10\n  Test: Simple ...passed\n  Test: Skippy ...\n[SKIPPED] x\npassed\n";
    let r = check(&e, &cu::parse(ok), &[], &[]);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert!(r.text.contains("| Read10 | 2 | 1 |"));
}

/// The parser on real output: 32 suites of iscsi-test-cu 1.19.0 against tgt 1.0.85
/// (the fixture), checked against an independent classification of the same text.
#[test]
fn parses_real_output_of_iscsi_test_cu() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/tgt-1.0.85-sample.txt");
    let text = std::fs::read_to_string(path).expect("read the fixture");
    let results = cu::parse(&text);
    let (rows, total) = cu::tally(&results);
    assert_eq!(rows.len(), 32);
    assert_eq!(
        (total.total(), total.pass, total.fail, total.skip),
        (117, 51, 10, 56)
    );
    let get = |key: &str| {
        results
            .iter()
            .find(|r| r.key() == key)
            .unwrap_or_else(|| panic!("{key} missing"))
            .outcome
    };
    assert_eq!(get("CompareAndWrite.Simple"), cu::Outcome::Skip);
    assert_eq!(get("PrinServiceactionRange.Range"), cu::Outcome::Fail);
    assert_eq!(get("Inquiry.Standard"), cu::Outcome::Pass);
    assert_eq!(get("iSCSITMF.LUNResetSimpleAsync"), cu::Outcome::Pass);
}
