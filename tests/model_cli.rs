//! `isctl validate` as a user runs it: the built binary, its output and exit codes.

mod common;

use common::{Isctl, Run};

fn isctl(args: &[&str]) -> Run {
    Isctl::new()
        .args(args)
        .env_remove("ISCTL_CHAP_TEST_SECRET")
        .run()
}

#[test]
fn valid_model_exits_0_with_a_summary() {
    let out = isctl(&["validate", "config/complete.toml"]);
    out.assert_exit(0);
    assert_eq!(
        out.stdout,
        "config/complete.toml: valid: 2 portals, 1 initiator group, 2 auths, 4 extents, 3 targets, 5 LUNs\n"
    );
    assert_eq!(out.stderr, "");
}

#[test]
fn directory_model_validates() {
    let out = isctl(&["validate", "config/gitops"]);
    out.assert_exit(0);
    assert!(out.stdout.starts_with("config/gitops: valid: "));
}

#[test]
fn invalid_model_exits_3_with_diagnostics() {
    let out = isctl(&["validate", "tests/fixtures/model/errors/bad-size.toml"]);
    out.assert_exit(3);
    let err = out.stderr;
    assert!(
        err.contains("tests/fixtures/model/errors/bad-size.toml:3:8: error: extent \"a\": size \"10 GB\" has an unknown unit\n  fix: "),
        "{err}"
    );
    assert!(
        err.ends_with("tests/fixtures/model/errors/bad-size.toml: invalid: 10 errors\n"),
        "{err}"
    );
    assert_eq!(out.stdout, "");
}

#[test]
fn missing_path_exits_3() {
    let out = isctl(&["validate", "/nonexistent/isctl-model"]);
    out.assert_exit(3);
    assert!(out
        .stderr
        .contains("/nonexistent/isctl-model: error: cannot read the model"));
}

#[test]
fn json_output_lists_diagnostics() {
    let out = isctl(&[
        "-o",
        "json",
        "validate",
        "tests/fixtures/model/errors/short-secret.toml",
    ]);
    out.assert_exit(3);
    let stdout = out.stdout;
    assert!(!stdout.contains("s3cr3"), "secret leaked: {stdout}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"], 2);
    let d = &v["diagnostics"][0];
    assert_eq!(d["severity"], "error");
    assert_eq!(d["file"], "tests/fixtures/model/errors/short-secret.toml");
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(6), Some(10))
    );
    assert_eq!(d["object"], "auth.chap1");
    assert!(d["fix"].as_str().is_some_and(|f| !f.is_empty()));

    let ok = isctl(&["validate", "-o", "json", "config/demo.toml"]);
    ok.assert_exit(0);
    let v = ok.json();
    assert_eq!(v["valid"], true);
    assert_eq!(v["summary"]["targets"], 1);
    assert_eq!(v["summary"]["luns"], 2);
}

#[test]
fn warnings_do_not_fail_validation() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.toml");
    std::fs::write(
        &model,
        "[initiator_group.g]\nnetworks = [\"10.1.2.3/8\"]\n[portal.p]\nlisten = [\"127.0.0.1\"]\n",
    )
    .unwrap();
    let out = isctl(&["validate", model.to_str().unwrap()]);
    out.assert_exit(0);
    assert!(out
        .stderr
        .contains("warning: initiator_group \"g\": network \"10.1.2.3/8\" has host bits set"));
    assert!(out.stdout.ends_with(
        "valid: 1 portal, 1 initiator group, 0 auths, 0 extents, 0 targets, 0 LUNs (1 warning)\n"
    ));
    // -q: errors only, so nothing at all for a valid model.
    let quiet = isctl(&["-q", "validate", model.to_str().unwrap()]);
    quiet.assert_exit(0);
    assert!(quiet.stdout.is_empty() && quiet.stderr.is_empty());
}

#[test]
fn secret_env_is_read_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.toml");
    std::fs::write(
        &model,
        "[auth.a]\nuser = \"u\"\nsecret_env = \"ISCTL_CHAP_TEST_SECRET\"\n",
    )
    .unwrap();
    let unset = isctl(&["validate", model.to_str().unwrap()]);
    unset.assert_exit(3);
    assert!(unset
        .stderr
        .contains("environment variable ISCTL_CHAP_TEST_SECRET is not set"));
    let set = Isctl::new()
        .args(["validate", model.to_str().unwrap()])
        .env("ISCTL_CHAP_TEST_SECRET", "abcdefghijklm")
        .run();
    set.assert_exit(0);
    let short = Isctl::new()
        .args(["validate", model.to_str().unwrap()])
        .env("ISCTL_CHAP_TEST_SECRET", "tiny5")
        .run();
    short.assert_exit(3);
    let all = short.all();
    assert!(
        all.contains("environment variable ISCTL_CHAP_TEST_SECRET is 5 characters long"),
        "{all}"
    );
    assert!(!all.contains("tiny5"), "secret leaked: {all}");
}
