//! `isctl validate` as a user runs it: the built binary, its output and exit codes.

use std::process::{Command, Output};

fn isctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_isctl"))
        .args(args)
        .env_remove("ISCTL_CHAP_TEST_SECRET")
        .output()
        .expect("run isctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn valid_model_exits_0_with_a_summary() {
    let out = isctl(&["validate", "config/complete.toml"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "config/complete.toml: valid: 2 portals, 1 initiator group, 2 auths, 4 extents, 3 targets, 5 LUNs\n"
    );
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn directory_model_validates() {
    let out = isctl(&["validate", "config/gitops"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("config/gitops: valid: "));
}

#[test]
fn invalid_model_exits_3_with_diagnostics() {
    let out = isctl(&["validate", "tests/fixtures/model/errors/bad-size.toml"]);
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(
        err.contains("tests/fixtures/model/errors/bad-size.toml:3:8: error: extent \"a\": size \"10 GB\" has an unknown unit\n  fix: "),
        "{err}"
    );
    assert!(
        err.ends_with("tests/fixtures/model/errors/bad-size.toml: invalid: 10 errors\n"),
        "{err}"
    );
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn missing_path_exits_3() {
    let out = isctl(&["validate", "/nonexistent/isctl-model"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("/nonexistent/isctl-model: error: cannot read the model"));
}

#[test]
fn json_output_lists_diagnostics() {
    let out = isctl(&[
        "-o",
        "json",
        "validate",
        "tests/fixtures/model/errors/short-secret.toml",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let stdout = text(&out.stdout);
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
    assert_eq!(ok.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).expect("JSON");
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
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr)
        .contains("warning: initiator_group \"g\": network \"10.1.2.3/8\" has host bits set"));
    assert!(text(&out.stdout).ends_with(
        "valid: 1 portal, 1 initiator group, 0 auths, 0 extents, 0 targets, 0 LUNs (1 warning)\n"
    ));
    // -q: errors only, so nothing at all for a valid model.
    let quiet = isctl(&["-q", "validate", model.to_str().unwrap()]);
    assert_eq!(quiet.status.code(), Some(0));
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
    assert_eq!(unset.status.code(), Some(3));
    assert!(text(&unset.stderr).contains("environment variable ISCTL_CHAP_TEST_SECRET is not set"));
    let set = Command::new(env!("CARGO_BIN_EXE_isctl"))
        .args(["validate", model.to_str().unwrap()])
        .env("ISCTL_CHAP_TEST_SECRET", "abcdefghijklm")
        .output()
        .unwrap();
    assert_eq!(set.status.code(), Some(0), "{}", text(&set.stderr));
    let short = Command::new(env!("CARGO_BIN_EXE_isctl"))
        .args(["validate", model.to_str().unwrap()])
        .env("ISCTL_CHAP_TEST_SECRET", "tiny5")
        .output()
        .unwrap();
    assert_eq!(short.status.code(), Some(3));
    let all = format!("{}{}", text(&short.stdout), text(&short.stderr));
    assert!(
        all.contains("environment variable ISCTL_CHAP_TEST_SECRET is 5 characters long"),
        "{all}"
    );
    assert!(!all.contains("tiny5"), "secret leaked: {all}");
}
