//! `isctl probe`, isctl's informational initiator, against isctl's own engine (`isctl
//! serve` on a free port: no auth, CHAP, mutual CHAP, digests, an initiator the group
//! does not admit, `--model` matching and differing, and the backing file unchanged)
//! and against tgt, a target none of us wrote (ignored: needs tgtd, run via
//! tests/run.sh).

mod common;

use common::auth_fixture::{self, ALICE_SECRET, BASE, BOB_SECRET, TARGET_SECRET};
#[path = "conformance/engine.rs"]
mod engine;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Isctl, Run};
use engine::{free_port, start_engine, work_dir, Engine};

const DISK_BYTES: usize = 16 << 20;

fn model_text(dir: &Path, port: u16, r1_size: &str) -> String {
    let head = auth_fixture::model_head(&format!("127.0.0.1:{port}"));
    format!(
        r#"{head}
[extent.disk]
type = "file"
path = "{disk}"
size = "16MiB"
serial = "probe0disk"

[extent.r1]
type = "ramdisk"
size = "{r1_size}"
blocksize = 4096
readonly = true

[extent.r2]
type = "ramdisk"
size = "8MiB"

[extent.r3]
type = "ramdisk"
size = "8MiB"

[extent.r4]
type = "ramdisk"
size = "8MiB"

[target.open]
luns = {{ 0 = "disk", 1 = "r1" }}
[[target.open.group]]
portal = "p"

[target.chap]
luns = {{ 0 = "r2" }}
[[target.chap.group]]
portal = "p"
auth = "one"

[target.mutual]
luns = {{ 0 = "r3" }}
[[target.mutual.group]]
portal = "p"
auth = "both"
auth_method = "mutual-chap"

[target.only-a]
luns = {{ 0 = "r4" }}
[[target.only-a.group]]
portal = "p"
initiator_group = "only-a"
"#,
        disk = dir.join("disk.img").display()
    )
}

/// An engine serving the model, with a backing file full of a known pattern.
fn boot() -> (tempfile::TempDir, u16, PathBuf, Engine) {
    let dir = work_dir();
    let port = free_port();
    let pattern: Vec<u8> = (0..DISK_BYTES as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.path().join("disk.img"), &pattern).unwrap();
    let m = dir.path().join("model.toml");
    std::fs::write(&m, model_text(dir.path(), port, "8MiB")).unwrap();
    let e = start_engine(dir.path(), &m, port);
    (dir, port, m, e)
}

fn probe(port: u16, args: &[&str]) -> Run {
    Isctl::new()
        .arg("probe")
        .arg(format!("127.0.0.1:{port}"))
        .args(args)
        .env("ALICE", ALICE_SECRET)
        .env("BOB", BOB_SECRET)
        .env("TGT", TARGET_SECRET)
        .env("WRONG", "notthesecret99")
        .run()
}

fn target(name: &str) -> String {
    format!("{BASE}:{name}")
}

#[test]
fn open_target_every_lun_and_the_backing_file_unchanged() {
    let (dir, port, _m, _engine) = boot();
    let before = std::fs::read(dir.path().join("disk.img")).unwrap();
    let r = probe(port, &["-o", "json", "--target", &target("open")]);
    r.assert_exit(0);
    let v = r.json();
    assert_eq!(v["ok"], true, "{r}");
    let names: Vec<&str> = v["discovery"]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&target("open").as_str()), "{r}");
    assert!(
        !names.contains(&target("only-a").as_str()),
        "discovery shows a target the probe's initiator may not use: {r}"
    );
    let t = &v["targets"][0];
    assert_eq!(t["login"]["status_name"], "success", "{r}");
    assert_eq!(t["login"]["auth"], "none");
    assert_eq!(t["report_luns"], serde_json::json!([0, 1]), "{r}");
    let l0 = &t["luns"][0];
    assert!(l0["state"].as_str().unwrap().starts_with("ready"), "{r}");
    assert_eq!(l0["capacity"]["bytes"], DISK_BYTES as u64, "{r}");
    assert_eq!(l0["capacity"]["block_size"], 512);
    assert_eq!(l0["serial"], "probe0disk");
    assert_eq!(l0["write_protected"], false);
    assert_eq!(l0["inquiry"]["peripheral_type"], 0);
    assert!(
        l0["designators"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["type"] == "naa"),
        "{r}"
    );
    let l1 = &t["luns"][1];
    assert_eq!(l1["capacity"]["block_size"], 4096, "{r}");
    assert_eq!(l1["capacity"]["blocks"], 2048);
    assert_eq!(l1["write_protected"], true, "{r}");
    assert_eq!(t["logout"], true);

    // Text output, every discovered target, through the URL form.
    let r = Isctl::new()
        .arg("probe")
        .arg(format!("iscsi://127.0.0.1:{port}/{}/0", target("open")))
        .run();
    r.assert_exit(0);
    assert!(
        r.stdout.contains("login: success (no authentication)"),
        "{r}"
    );
    assert!(r.stdout.contains("LUN 0: ready"), "{r}");
    assert!(
        !r.stdout.contains("LUN 1:"),
        "the URL asked for LUN 0 only: {r}"
    );
    assert!(r.stdout.contains("serial: probe0disk"), "{r}");
    assert!(r.stdout.contains("result: ok"), "{r}");

    let after = std::fs::read(dir.path().join("disk.img")).unwrap();
    assert!(before == after, "the probe changed the backing file");
}

#[test]
fn chap_and_mutual_chap_right_and_wrong() {
    let (_dir, port, _m, engine) = boot();
    let chap = target("chap");
    let r = probe(
        port,
        &[
            "--target",
            &chap,
            "--chap-user",
            "alice",
            "--chap-secret-env",
            "ALICE",
        ],
    );
    r.assert_exit(0);
    assert!(r.stdout.contains("login: success (CHAP sha256"), "{r}");

    for alg in ["md5", "sha1"] {
        let r = probe(
            port,
            &[
                "-o",
                "json",
                "--target",
                &chap,
                "--chap-user",
                "alice",
                "--chap-secret-env",
                "ALICE",
                "--chap-algorithm",
                alg,
            ],
        );
        r.assert_exit(0);
        assert_eq!(
            r.json()["targets"][0]["login"]["chap_algorithm"],
            alg,
            "{r}"
        );
    }

    let r = probe(
        port,
        &[
            "--target",
            &chap,
            "--chap-user",
            "alice",
            "--chap-secret-env",
            "WRONG",
        ],
    );
    r.assert_exit(1);
    assert!(
        r.stdout.contains("authentication failure (status 0x0201)"),
        "{r}"
    );

    // Without credentials the CHAP target refuses too.
    probe(port, &["--target", &chap]).assert_exit(1);

    // Mutual CHAP from a secret file.
    let dir = work_dir();
    let peer_file = dir.path().join("peer");
    std::fs::write(&peer_file, format!("{TARGET_SECRET}\n")).unwrap();
    let mutual = target("mutual");
    let r = probe(
        port,
        &[
            "--target",
            &mutual,
            "--chap-user",
            "bob",
            "--chap-secret-env",
            "BOB",
            "--peer-user",
            "the-target",
            "--peer-secret-file",
            peer_file.to_str().unwrap(),
        ],
    );
    r.assert_exit(0);
    assert!(r.stdout.contains("mutual CHAP verified"), "{r}");

    let r = probe(
        port,
        &[
            "-o",
            "json",
            "--target",
            &mutual,
            "--chap-user",
            "bob",
            "--chap-secret-env",
            "BOB",
            "--peer-user",
            "the-target",
            "--peer-secret-env",
            "WRONG",
        ],
    );
    r.assert_exit(1);
    let v = r.json();
    assert_eq!(
        v["targets"][0]["login"]["status_name"], "mutual CHAP failed",
        "{r}"
    );
    assert_eq!(
        v["targets"][0]["login"]["mutual_chap_verified"], false,
        "{r}"
    );
    assert!(
        v["targets"][0]["login"]["error"]
            .as_str()
            .unwrap()
            .contains("wrong target secret"),
        "{r}"
    );

    for s in [ALICE_SECRET, BOB_SECRET, TARGET_SECRET] {
        assert!(
            !engine.log().contains(s),
            "a secret reached the engine's log"
        );
    }
}

#[test]
fn crc32c_header_and_data_digests() {
    let (_dir, port, _m, _engine) = boot();
    let r = probe(
        port,
        &[
            "-o",
            "json",
            "--target",
            &target("open"),
            "--header-digest",
            "crc32c",
            "--data-digest",
            "crc32c",
            "--source",
            "127.0.0.1",
            "--all-portals",
        ],
    );
    r.assert_exit(0);
    let v = r.json();
    let neg = &v["targets"][0]["login"]["negotiated"];
    assert_eq!(neg["HeaderDigest"], "CRC32C", "{r}");
    assert_eq!(neg["DataDigest"], "CRC32C", "{r}");
    let local = v["discovery"]["local_address"].as_str().unwrap();
    assert!(local.starts_with("127.0.0.1:"), "{r}");
    assert_eq!(
        v["targets"].as_array().unwrap().len(),
        1,
        "one address: {r}"
    );
    // Data came through the digests intact.
    assert_eq!(v["targets"][0]["luns"][0]["serial"], "probe0disk", "{r}");
}

#[test]
fn an_initiator_the_group_does_not_admit_is_named() {
    let (_dir, port, _m, _engine) = boot();
    let r = probe(port, &["--target", &target("only-a")]);
    r.assert_exit(1);
    assert!(
        r.stdout.contains("authorization failure (forbidden)"),
        "{r}"
    );
    let r = probe(
        port,
        &[
            "--target",
            &target("only-a"),
            "--initiator",
            "iqn.2026-11.test:a",
        ],
    );
    r.assert_exit(0);
    let r = probe(port, &["--target", &target("no-such")]);
    r.assert_exit(1);
    assert!(r.stdout.contains("target not found"), "{r}");
    // A LUN the target does not have.
    let r = Isctl::new()
        .arg("probe")
        .arg(format!("iscsi://127.0.0.1:{port}/{}/9", target("open")))
        .run();
    r.assert_exit(1);
    assert!(r.stdout.contains("LUN 9 is not reported"), "{r}");
    // CHAP user without a secret: a usage error.
    probe(port, &["--chap-user", "alice"]).assert_exit(64);
    // Nobody listening: unreachable.
    let closed = free_port();
    let r = Isctl::new()
        .args(["probe", &format!("127.0.0.1:{closed}"), "--timeout", "2"])
        .run();
    r.assert_exit(1);
}

#[test]
fn model_matching_and_differing() {
    let (dir, port, m, _engine) = boot();
    // Credentials and initiator names come from the model.
    let r = Isctl::new()
        .args(["probe", &format!("127.0.0.1:{port}"), "--model"])
        .arg(&m)
        .run();
    r.assert_exit(0);
    assert!(r.stdout.contains("model: matches"), "{r}");
    assert!(r.stdout.contains("mutual CHAP verified"), "{r}");

    let other = dir.path().join("other.toml");
    std::fs::write(&other, model_text(dir.path(), port, "16MiB")).unwrap();
    let r = Isctl::new()
        .args([
            "probe",
            &format!("127.0.0.1:{port}"),
            "-o",
            "json",
            "--model",
        ])
        .arg(&other)
        .run();
    r.assert_exit(2);
    let diffs = r.json()["differences"].to_string();
    assert!(
        diffs.contains(&format!(
            "target {} LUN 1: size 8388608 bytes (model: 16777216)",
            target("open")
        )),
        "{r}"
    );
}

// ---- tgt ----

/// tgtd in the foreground on its own portal and control port, killed by PID on drop.
struct Tgt {
    child: Child,
    control: String,
}

impl Drop for Tgt {
    fn drop(&mut self) {
        let _ = Command::new("tgtadm")
            .args(["-C", &self.control, "--op", "delete", "--mode", "system"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        std::thread::sleep(Duration::from_millis(200));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tgt {
    fn adm(&self, args: &[&str]) {
        let o = Command::new("tgtadm")
            .args(["-C", &self.control, "--lld", "iscsi"])
            .args(args)
            .output()
            .expect("run tgtadm");
        assert!(
            o.status.success(),
            "tgtadm {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

fn start_tgt(port: u16) -> Tgt {
    let control = port.to_string();
    let child = Command::new("tgtd")
        .args([
            "-f",
            "-C",
            &control,
            "--iscsi",
            &format!("portal=127.0.0.1:{port}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tgtd (install tgt)");
    let tgt = Tgt { child, control };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tgtd did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    tgt
}

#[test]
#[ignore = "needs tgt: run via tests/run.sh"]
fn tgt_with_and_without_chap() {
    let dir = work_dir();
    let port = free_port();
    let tgt = start_tgt(port);
    let img = dir.path().join("tgt.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let img = img.to_str().unwrap();
    tgt.adm(&[
        "--op",
        "new",
        "--mode",
        "target",
        "--tid",
        "1",
        "-T",
        "iqn.2026-11.test:tgt-open",
    ]);
    tgt.adm(&[
        "--op",
        "new",
        "--mode",
        "logicalunit",
        "--tid",
        "1",
        "--lun",
        "1",
        "-b",
        img,
    ]);
    tgt.adm(&[
        "--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL",
    ]);
    tgt.adm(&[
        "--op",
        "new",
        "--mode",
        "target",
        "--tid",
        "2",
        "-T",
        "iqn.2026-11.test:tgt-chap",
    ]);
    tgt.adm(&[
        "--op",
        "new",
        "--mode",
        "logicalunit",
        "--tid",
        "2",
        "--lun",
        "1",
        "-b",
        img,
    ]);
    tgt.adm(&[
        "--op", "bind", "--mode", "target", "--tid", "2", "-I", "ALL",
    ]);
    tgt.adm(&[
        "--op",
        "new",
        "--mode",
        "account",
        "--user",
        "alice",
        "--password",
        ALICE_SECRET,
    ]);
    tgt.adm(&[
        "--op", "bind", "--mode", "account", "--tid", "2", "--user", "alice",
    ]);

    let r = probe(
        port,
        &["-o", "json", "--target", "iqn.2026-11.test:tgt-open"],
    );
    r.assert_exit(0);
    let v = r.json();
    let t = &v["targets"][0];
    let lun1 = t["luns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["lun"] == 1)
        .unwrap_or_else(|| panic!("no LUN 1: {r}"));
    assert_eq!(lun1["capacity"]["bytes"], 64u64 << 20, "{r}");
    assert_eq!(lun1["inquiry"]["peripheral_type"], 0, "{r}");

    let chap = "iqn.2026-11.test:tgt-chap";
    let r = probe(
        port,
        &[
            "--target",
            chap,
            "--chap-user",
            "alice",
            "--chap-secret-env",
            "ALICE",
            "--chap-algorithm",
            "md5",
        ],
    );
    r.assert_exit(0);
    assert!(r.stdout.contains("login: success (CHAP md5"), "{r}");
    let r = probe(
        port,
        &[
            "--target",
            chap,
            "--chap-user",
            "alice",
            "--chap-secret-env",
            "WRONG",
            "--chap-algorithm",
            "md5",
        ],
    );
    r.assert_exit(1);
    assert!(r.stdout.contains("authentication failure"), "{r}");
}
