//! Golden tests of broken models: every fixture under `tests/fixtures/model/errors/`
//! (a file, or a directory for multi-file models) must fail validation with exactly
//! the diagnostics in its `.expected` file: file, line, column, object, problem, fix.
//!
//! After an intended change of wording, regenerate the expectations with
//! `ISCTL_BLESS=1 cargo test --test model_errors` and review the diff.

use std::path::{Path, PathBuf};

use isctl::model::{self, Diagnostic, ModelError, Severity};

const DIR: &str = "tests/fixtures/model/errors";

/// Paths are relative to the package root (cargo runs tests there), so that the
/// expected output names them as a user would see them.
fn load_err(case: &str) -> ModelError {
    let path = Path::new(DIR).join(case);
    match model::load(&path) {
        Ok(_) => panic!("{case}: the model validated, but it is broken on purpose"),
        Err(e) => e,
    }
}

fn cases() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(DIR)
        .expect("fixture directory")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| !n.ends_with(".expected"))
        .collect();
    out.sort();
    out
}

fn expected_path(case: &str) -> PathBuf {
    let stem = case.strip_suffix(".toml").unwrap_or(case);
    Path::new(DIR).join(format!("{stem}.expected"))
}

#[test]
fn every_fixture_matches_its_golden_output() {
    let bless = std::env::var_os("ISCTL_BLESS").is_some();
    let mut mismatches = Vec::new();
    let all = cases();
    assert!(all.len() >= 15, "fixtures missing: {all:?}");
    for case in &all {
        let got = format!("{}\n", load_err(case));
        let path = expected_path(case);
        if bless {
            std::fs::write(&path, &got).expect("write golden file");
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with ISCTL_BLESS=1 to create it)",
                path.display()
            )
        });
        if got != want {
            mismatches.push(format!("── {case}\n── expected:\n{want}── got:\n{got}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "golden mismatches:\n{}",
        mismatches.join("\n")
    );
}

/// Whatever the case, a diagnostic says where (a line, unless the whole file is
/// concerned), which object (unless it is about TOML syntax or an unknown section),
/// and how to fix it.
#[test]
fn every_error_has_position_object_and_fix() {
    for case in cases() {
        for d in load_err(&case).diagnostics {
            assert!(d.line > 0 && d.column > 0, "{case}: no position: {d}");
            assert!(!d.fix.trim().is_empty(), "{case}: no fix: {d}");
            let file_level = d.problem.starts_with("TOML syntax error")
                || d.problem.starts_with("unknown section")
                || d.problem.starts_with('`');
            assert!(!d.object.is_empty() || file_level, "{case}: no object: {d}");
        }
    }
}

/// One named diagnostic: where it must be and what it must say.
struct Want {
    case: &'static str,
    file: &'static str,
    line: u32,
    column: u32,
    object: &'static str,
    problem: &'static str,
    fix: &'static str,
}

fn find<'d>(diags: &'d [Diagnostic], w: &Want) -> &'d Diagnostic {
    diags
        .iter()
        .find(|d| d.line == w.line && d.column == w.column && d.problem.contains(w.problem))
        .unwrap_or_else(|| {
            let all: Vec<String> = diags.iter().map(ToString::to_string).collect();
            panic!(
                "{}: no diagnostic at {}:{} containing {:?}; got:\n{}",
                w.case,
                w.line,
                w.column,
                w.problem,
                all.join("\n")
            )
        })
}

#[test]
fn the_classic_mistakes_point_at_the_right_place() {
    let wants = [
        Want { case: "typo-key.toml", file: "typo-key.toml", line: 8, column: 1, object: "extent.lun0",
               problem: "unknown key `blocksise`; did you mean `blocksize`?", fix: "rename `blocksise` to `blocksize`" },
        Want { case: "typo-key.toml", file: "typo-key.toml", line: 18, column: 1, object: "target.iqn.2026-01.com.example:t0",
               problem: "unknown key `auth_metod`; did you mean `auth_method`?", fix: "rename" },
        Want { case: "typo-section.toml", file: "typo-section.toml", line: 1, column: 2, object: "",
               problem: "unknown section `portals`; did you mean `portal`?", fix: "[portal.*]" },
        Want { case: "dangling-reference.toml", file: "dangling-reference.toml", line: 19, column: 26, object: "target.t0",
               problem: "extent \"lun1\" is not defined; did you mean \"lun0\"?", fix: "define [extent.lun1]" },
        Want { case: "dangling-reference.toml", file: "dangling-reference.toml", line: 22, column: 10, object: "target.t0",
               problem: "portal group \"defualt\" is not defined; did you mean \"default\"?", fix: "default" },
        Want { case: "duplicate-lun-id.toml", file: "duplicate-lun-id.toml", line: 16, column: 19, object: "target.t0",
               problem: "LUN id 0 is given twice", fix: "different id" },
        Want { case: "bad-iqn.toml", file: "bad-iqn.toml", line: 9, column: 3, object: "initiator_group.hosts",
               problem: "upper-case letters", fix: "\"iqn.1998-01.com.vmware:esx1\"" },
        Want { case: "bad-iqn.toml", file: "bad-iqn.toml", line: 14, column: 9, object: "target.iqn.2026-01.com.example:Disk1",
               problem: "upper-case letters", fix: "lower case" },
        Want { case: "short-secret.toml", file: "short-secret.toml", line: 6, column: 10, object: "auth.chap1",
               problem: "`secret` is 5 characters long; CHAP secrets must be 12 to 16 characters", fix: "12 to 16" },
        Want { case: "bad-size.toml", file: "bad-size.toml", line: 3, column: 8, object: "extent.a",
               problem: "size \"10 GB\" has an unknown unit", fix: "use B, K/KiB, M/MiB, G/GiB, T/TiB, KB/MB/GB/TB or a plain number of bytes" },
        Want { case: "dup-across-files", file: "dup-across-files/b.toml", line: 3, column: 9, object: "extent.lun0",
               problem: "extent \"lun0\" is also defined at tests/fixtures/model/errors/dup-across-files/a.toml:4:9", fix: "define each object once" },
        Want { case: "dup-across-files", file: "dup-across-files/b.toml", line: 7, column: 9, object: "portal.default",
               problem: "portal group \"default\" is also defined at tests/fixtures/model/errors/dup-across-files/a.toml:1:9", fix: "define each object once" },
        Want { case: "global-twice", file: "global-twice/b.toml", line: 1, column: 2, object: "global",
               problem: "[global] is also defined at tests/fixtures/model/errors/global-twice/a.toml:1:2", fix: "single [global]" },
        Want { case: "no-basename.toml", file: "no-basename.toml", line: 4, column: 9, object: "target.target0",
               problem: "[global] has no `basename`", fix: "set basename in [global]" },
        Want { case: "listen-conflict.toml", file: "listen-conflict.toml", line: 2, column: 22, object: "portal.a",
               problem: "0.0.0.0:3260 and [::]:3260", fix: "dual-stack" },
    ];
    for w in &wants {
        let e = load_err(w.case);
        let d = find(&e.diagnostics, w);
        assert_eq!(d.severity, Severity::Error, "{d}");
        assert_eq!(d.file, Path::new(DIR).join(w.file), "{d}");
        assert_eq!(d.object, w.object, "{d}");
        assert!(
            d.fix.contains(w.fix),
            "{}: fix {:?} lacks {:?}",
            w.case,
            d.fix,
            w.fix
        );
        let shown = d.to_string();
        let head = format!("{}/{}:{}:{}: error: ", DIR, w.file, w.line, w.column);
        assert!(shown.starts_with(&head), "{shown}");
    }
}

#[test]
fn secrets_never_appear_in_diagnostics() {
    let e = load_err("short-secret.toml");
    let text = format!(
        "{e}\n{e:?}\n{}",
        serde_json::to_string(&e.diagnostics).unwrap()
    );
    for secret in ["s3cr3", "muchTooLongSecretValue"] {
        assert!(!text.contains(secret), "secret leaked:\n{text}");
    }
    let e = load_err("syntax-error.toml");
    assert!(!e.to_string().contains("aSecretValue12"), "{e}");
}

#[test]
fn all_errors_of_a_model_are_reported_at_once() {
    // chap-rules.toml breaks a dozen rules; every one must be reported.
    let e = load_err("chap-rules.toml");
    assert!(e.error_count() >= 10, "{e}");
}
