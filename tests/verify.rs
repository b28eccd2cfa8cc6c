//! `isctl apply --verify[=strict]` against isctl's own engine (`isctl serve` on a free
//! port): every target logged in to with no auth, CHAP and mutual CHAP from the model,
//! strict mode's refusals (a name outside the group, a wrong secret), a real failing
//! verify (exit 6, nothing rolled back), the backing file unchanged, and (ignored: needs
//! libiscsi-bin, run via tests/run.sh) `sessions`/`status` unchanged by a verify while
//! a libiscsi initiator and a held CHAP session stay logged in under the very names the
//! verify logs in with.
//!
//! The model cannot ask for digests, so a verify negotiates none; CRC32C digests are
//! proved by tests/probe.rs (engine, tgt) and tests/lio_vm.rs (LIO).

mod common;

use common::auth_fixture::{self, ALICE_SECRET, BASE, BOB_SECRET, TARGET_SECRET};
#[path = "conformance/engine.rs"]
mod engine;
#[path = "lio_vm/holder.rs"]
#[allow(dead_code)]
mod holder;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Isctl, Run};
use engine::{free_port, start_engine, work_dir, Engine};
use serde_json::Value;

const NAMED: &str = "iqn.2026-11.test:a";
const PROBE_NAME: &str = "iqn.2026-11.io.isctl:probe";
const DISK_BYTES: usize = 16 << 20;

/// Targets: `open` (no auth, a file without a size: the file's own size is the model's),
/// `chap` (one named initiator, CHAP), `mutual` (any initiator, mutual CHAP) and, with
/// `later`, a fourth one an apply adds.
fn model_text(dir: &Path, port: u16, mutual: bool, later: bool) -> String {
    let head = auth_fixture::model_head(&format!("0.0.0.0:{port}"));
    let mut m = format!(
        r#"{head}
[extent.disk]
type = "file"
path = "{disk}"
serial = "verify0disk"
naa = "0x6001405a1b2c3d4e"

[extent.r2]
type = "ramdisk"
size = "8MiB"
blocksize = 4096

[extent.r3]
type = "ramdisk"
size = "8MiB"
readonly = true

[extent.r4]
type = "ramdisk"
size = "4MiB"

[target.open]
luns = {{ 0 = "disk" }}
[[target.open.group]]
portal = "p"

[target.chap]
luns = {{ 0 = "r2" }}
[[target.chap.group]]
portal = "p"
initiator_group = "only-a"
auth = "one"
"#,
        disk = dir.join("disk.img").display()
    );
    if mutual {
        m.push_str(
            r#"
[target.mutual]
luns = { 0 = "r3" }
[[target.mutual.group]]
portal = "p"
auth = "both"
auth_method = "mutual-chap"
"#,
        );
    }
    if later {
        m.push_str(
            r#"
[target.later]
luns = { 0 = "r4" }
[[target.later.group]]
portal = "p"
"#,
        );
    }
    m
}

struct Bed {
    dir: tempfile::TempDir,
    port: u16,
    engine: Engine,
}

impl Bed {
    /// An engine serving the model (without `mutual` unless asked), the backing file
    /// full of a known pattern.
    fn boot(mutual: bool) -> Bed {
        let dir = work_dir();
        let port = free_port();
        let pattern: Vec<u8> = (0..DISK_BYTES as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(dir.path().join("disk.img"), &pattern).unwrap();
        let m = Bed::write_model(dir.path(), port, "served.toml", mutual, false);
        let engine = start_engine(dir.path(), &m, port);
        Bed { dir, port, engine }
    }

    fn write_model(dir: &Path, port: u16, name: &str, mutual: bool, later: bool) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, model_text(dir, port, mutual, later)).unwrap();
        p
    }

    fn model(&self, mutual: bool, later: bool) -> PathBuf {
        Bed::write_model(self.dir.path(), self.port, "model.toml", mutual, later)
    }

    /// `isctl --socket ... --backend userspace ARGS`.
    fn isctl(&self, args: &[&str]) -> Run {
        Isctl::new()
            .arg("--socket")
            .arg(self.dir.path().join("engine.sock"))
            .args(["--backend", "userspace"])
            .args(args)
            .run()
    }

    fn apply(&self, model: &Path, extra: &[&str]) -> Run {
        let mut args = vec!["apply", "--auto-approve"];
        args.extend_from_slice(extra);
        args.push(model.to_str().unwrap());
        self.isctl(&args)
    }

    fn disk(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("disk.img")).unwrap()
    }
}

fn target(name: &str) -> String {
    format!("{BASE}:{name}")
}

/// The one check of `kind` on `target` in `apply -o json`'s `verify`.
fn check<'a>(v: &'a Value, name: &str, kind: &str, r: &Run) -> &'a Value {
    let t = target(name);
    let found: Vec<&Value> = v["verify"]["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no verify.checks: {r}"))
        .iter()
        .filter(|c| c["target"] == t.as_str() && c["check"] == kind)
        .collect();
    assert_eq!(found.len(), 1, "one {kind} check of {t}: {r}");
    found[0]
}

#[test]
fn strict_verify_no_auth_chap_mutual_chap_and_refusals() {
    let bed = Bed::boot(false);
    let before = bed.disk();
    let m = bed.model(true, false);

    // An apply that adds a target, then verifies it all.
    let r = bed.apply(&m, &["--verify=strict", "-o", "json"]);
    r.assert_exit(0);
    let v = r.json();
    assert_eq!(v["status"], "applied", "{r}");
    let vf = &v["verify"];
    assert_eq!(vf["level"], "strict", "{r}");
    assert_eq!(vf["ok"], true, "{r}");
    assert_eq!(
        (&vf["passed"], &vf["failed"], &vf["skipped"]),
        (&Value::from(6), &Value::from(0), &Value::from(3)),
        "{r}"
    );

    let open = check(&v, "open", "admitted", &r);
    assert_eq!(open["outcome"], "passed", "{r}");
    assert_eq!(open["listen"], format!("0.0.0.0:{}", bed.port));
    assert_eq!(open["address"], format!("127.0.0.1:{}", bed.port));
    assert_eq!(open["initiator"], PROBE_NAME);
    assert_eq!(open["auth"], "none");
    assert_eq!(open["login"]["status_name"], "success");
    assert_eq!(open["luns"][0]["serial"], "verify0disk", "{r}");
    assert_eq!(open["luns"][0]["capacity"]["bytes"], DISK_BYTES as u64);
    assert_eq!(open["differences"], serde_json::json!([]));

    let chap = check(&v, "chap", "admitted", &r);
    assert_eq!(chap["outcome"], "passed", "{r}");
    assert_eq!(chap["initiator"], NAMED, "the group's own initiator: {r}");
    assert_eq!(chap["auth"], "chap");
    assert_eq!(chap["login"]["chap_algorithm"], "sha256", "{r}");
    assert_eq!(chap["luns"][0]["capacity"]["block_size"], 4096, "{r}");

    let mutual = check(&v, "mutual", "admitted", &r);
    assert_eq!(mutual["outcome"], "passed", "{r}");
    assert_eq!(mutual["auth"], "mutual-chap");
    assert_eq!(mutual["login"]["mutual_chap_verified"], true, "{r}");
    assert_eq!(mutual["luns"][0]["write_protected"], true, "{r}");

    // Strict: the name outside the group is refused as forbidden, wrong secrets fail
    // authentication, each named.
    let outsider = check(&v, "chap", "outsider", &r);
    assert_eq!(outsider["outcome"], "passed", "{r}");
    assert_eq!(
        outsider["initiator"],
        "iqn.2026-11.io.isctl:verify-outsider"
    );
    assert_eq!(outsider["login"]["status"], 0x0202, "{r}");
    assert_eq!(
        outsider["login"]["status_name"],
        "authorization failure (forbidden)"
    );
    for t in ["chap", "mutual"] {
        let w = check(&v, t, "wrong-secret", &r);
        assert_eq!(w["outcome"], "passed", "{r}");
        assert_eq!(w["login"]["status"], 0x0201, "{r}");
        assert_eq!(w["login"]["status_name"], "authentication failure");
    }
    // What this model makes impossible to check is skipped with its reason.
    let s = check(&v, "open", "outsider", &r);
    assert_eq!(s["outcome"], "skipped");
    assert!(
        s["reason"].as_str().unwrap().contains("any initiator name"),
        "{r}"
    );
    let s = check(&v, "open", "wrong-secret", &r);
    assert_eq!(s["outcome"], "skipped");
    assert!(s["reason"].as_str().unwrap().contains("no CHAP"), "{r}");
    let s = check(&v, "mutual", "outsider", &r);
    assert_eq!(s["outcome"], "skipped");

    // Every login had its own ISID.
    let isids: std::collections::BTreeSet<&str> = vf["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["isid"].as_str().filter(|_| c["outcome"] != "skipped"))
        .collect();
    assert_eq!(isids.len(), 6, "{r}");

    // A no-op apply verifies too; text output has the Verify: section.
    let r = bed.apply(&m, &["--verify"]);
    r.assert_exit(0);
    assert!(r.stdout.contains("No changes."), "{r}");
    assert!(
        r.stdout.contains("Verify: 3 passed, 0 failed, 0 skipped."),
        "{r}"
    );
    assert!(
        r.stdout.contains(&format!(
            "ok   login: {} via 127.0.0.1:{} (portal p) as {NAMED}",
            target("chap"),
            bed.port
        )),
        "{r}"
    );
    assert!(r.stdout.contains("mutual CHAP verified"), "{r}");

    // Without --verify nothing is checked.
    let r = bed.apply(&m, &["-o", "json"]);
    r.assert_exit(0);
    assert!(r.json().get("verify").is_none(), "{r}");

    for s in [ALICE_SECRET, BOB_SECRET, TARGET_SECRET] {
        assert!(
            !bed.engine.log().contains(s),
            "a secret reached the engine's log"
        );
    }
    assert!(bed.disk() == before, "verify changed the backing file");
}

#[test]
fn a_failing_verify_exits_6_and_rolls_nothing_back() {
    let bed = Bed::boot(true);
    // The backing file grows under the engine, which keeps serving the size it opened
    // (the model, a file without a size, now says 20 MiB): drift only a login sees.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(bed.dir.path().join("disk.img"))
        .unwrap();
    f.set_len(20 << 20).unwrap();
    drop(f);
    let m = bed.model(true, true);

    let r = bed.apply(&m, &["--verify", "-o", "json"]);
    r.assert_exit(6);
    let v = r.json();
    assert_eq!(v["status"], "applied", "{r}");
    assert_eq!(v["verify"]["ok"], false, "{r}");
    assert_eq!(v["verify"]["failed"], 1, "{r}");
    let open = check(&v, "open", "admitted", &r);
    assert_eq!(open["outcome"], "failed", "{r}");
    assert_eq!(
        open["differences"],
        serde_json::json!([format!(
            "target {} LUN 0: size 16777216 bytes (model: 20971520)",
            target("open")
        )]),
        "{r}"
    );
    assert_eq!(open["reason"], "1 difference(s) from the model", "{r}");
    assert_eq!(check(&v, "later", "admitted", &r)["outcome"], "passed");

    // Nothing was rolled back: the added target is live and the plan is empty.
    bed.isctl(&["plan", "--detailed-exitcode", m.to_str().unwrap()])
        .assert_exit(0);
    let status = bed.isctl(&["status", "-o", "json"]);
    status.assert_exit(0);
    assert!(
        status.stdout.contains(&target("later")),
        "the target the failed verify followed is gone: {status}"
    );

    // The text form names the failure and says nothing was undone.
    let r = bed.apply(&m, &["--verify"]);
    r.assert_exit(6);
    assert!(r.stdout.contains("Verify: 3 passed, 1 failed"), "{r}");
    assert!(
        r.stdout.contains("size 16777216 bytes (model: 20971520)"),
        "{r}"
    );
    assert!(
        r.stdout
            .contains("Verify failed; the apply stays in place (nothing was rolled back)."),
        "{r}"
    );
}

/// iscsi-perf (libiscsi) reading a LUN, killed by PID when dropped.
struct Perf(std::process::Child);

impl Drop for Perf {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "needs libiscsi-bin (iscsi-perf): run via tests/run.sh"]
fn sessions_and_status_unchanged_by_verify_while_initiators_stay_logged_in() {
    let bed = Bed::boot(true);
    let m = bed.model(true, false);
    // A libiscsi initiator under the very name the verify uses for `open`, and a held
    // CHAP session under the `chap` group's one named initiator, which the verify uses
    // too: only a fresh ISID keeps the verify from reinstating them.
    let mut perf = Perf(
        Command::new("iscsi-perf")
            .args(["-i", PROBE_NAME, "-t", "120"])
            .arg(format!(
                "iscsi://127.0.0.1:{}/{}/0",
                bed.port,
                target("open")
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start iscsi-perf (install libiscsi-bin)"),
    );
    let held = holder::SessionHolder::login(
        &format!("127.0.0.1:{}", bed.port),
        &holder::LoginSpec {
            initiator: NAMED.into(),
            target: target("chap"),
            chap: Some(("alice".into(), ALICE_SECRET.into())),
            mutual: None,
        },
    )
    .expect("hold a CHAP session");
    let sessions = || {
        let r = bed.isctl(&["sessions", "-o", "json"]);
        r.assert_exit(0);
        r.json()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while sessions()["num_records"] != 2 {
        assert!(
            perf.0.try_wait().unwrap().is_none(),
            "iscsi-perf exited before logging in"
        );
        assert!(
            Instant::now() < deadline,
            "two sessions not logged in: {}",
            sessions()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let sessions_before = sessions();
    let status_before = bed.isctl(&["status", "-o", "json"]).json();

    let r = bed.apply(&m, &["--verify=strict", "-o", "json"]);
    r.assert_exit(0);
    let v = r.json();
    assert_eq!(v["verify"]["ok"], true, "{r}");
    assert_eq!(v["verify"]["live_sessions"], 2, "{r}");
    // `sessions` writes ISIDs as ONTAP does (`80:2f:71:00:00:01`); compare digits only.
    let digits = |isid: &str| isid.replace(':', "").to_ascii_lowercase();
    let live: Vec<String> = sessions_before["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| digits(s["isid"].as_str().unwrap()))
        .collect();
    assert_eq!(live.len(), 2, "{sessions_before}");
    let mut verify_isids = 0;
    for c in v["verify"]["checks"].as_array().unwrap() {
        if let Some(isid) = c["isid"].as_str() {
            verify_isids += 1;
            assert!(
                !live.contains(&digits(isid)),
                "a verify reused a live ISID: {r}"
            );
        }
    }
    assert!(verify_isids > 0, "no check names its ISID: {r}");
    assert_eq!(check(&v, "open", "admitted", &r)["initiator"], PROBE_NAME);
    assert_eq!(check(&v, "chap", "admitted", &r)["initiator"], NAMED);

    assert_eq!(
        sessions(),
        sessions_before,
        "sessions changed under a verify"
    );
    assert_eq!(
        bed.isctl(&["status", "-o", "json"]).json(),
        status_before,
        "status changed under a verify"
    );
    assert!(held.is_alive(), "the held session was cut");
    let tsih = sessions_before["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["initiator"]["name"] == NAMED)
        .map(|s| s["tsih"].clone())
        .unwrap();
    assert_eq!(tsih, u64::from(held.tsih), "the held session's TSIH");
    assert!(
        perf.0.try_wait().unwrap().is_none(),
        "iscsi-perf lost its session"
    );
}
