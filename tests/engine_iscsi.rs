//! The engine's iSCSI transport and runtime against real initiators (libiscsi's tools,
//! QEMU's iscsi driver) and against a hostile peer: CHAP and mutual CHAP, header
//! digests, initiator and network ACLs, discovery that shows each initiator only its
//! targets, live reconfiguration that keeps untouched sessions and refuses cuts, a
//! SIGTERM that flushes, and malformed PDUs that get rejects without harming others.
//!
//! Each test starts its own `isctl serve` on a free port. They need libiscsi-bin and
//! qemu-utils + qemu-block-extra (tests/install-deps.sh installs them).

#[path = "conformance/engine.rs"]
mod engine;

mod common;

use common::auth_fixture::{self, ALICE_SECRET, BASE, BOB_SECRET, TARGET_SECRET};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use engine::{free_port, start_engine, work_dir, Engine};

fn run(tool: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(tool)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} ({e}): install libiscsi-bin, qemu-utils and qemu-block-extra (tests/install-deps.sh)"))
}

fn all(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn isctl(sock: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_isctl"))
        .arg("--socket")
        .arg(sock)
        .args(["--backend", "userspace"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run isctl")
}

/// A model with one target per access rule.
fn model(dir: &Path, port: u16, extra: &str) -> PathBuf {
    let head = auth_fixture::model_head(&format!("127.0.0.1:{port}"));
    let text = format!(
        r#"{head}
[initiator_group.far-away]
networks = ["10.0.0.0/8"]

[extent.disk]
type = "file"
path = "{disk}"
size = "32MiB"

[extent.r1]
type = "ramdisk"
size = "8MiB"

[extent.r2]
type = "ramdisk"
size = "8MiB"

[extent.r3]
type = "ramdisk"
size = "8MiB"

[extent.r4]
type = "ramdisk"
size = "8MiB"

[target.chap]
luns = {{ 0 = "disk" }}
[[target.chap.group]]
portal = "p"
auth = "one"

[target.mutual]
luns = {{ 0 = "r1" }}
[[target.mutual.group]]
portal = "p"
auth = "both"
auth_method = "mutual-chap"

[target.only-a]
luns = {{ 0 = "r2" }}
[[target.only-a.group]]
portal = "p"
initiator_group = "only-a"

[target.far]
luns = {{ 0 = "r3" }}
[[target.far.group]]
portal = "p"
initiator_group = "far-away"

[target.open]
luns = {{ 0 = "r4" }}
[[target.open.group]]
portal = "p"
{extra}"#,
        disk = dir.join("disk.img").display()
    );
    let path = dir.join("model.toml");
    std::fs::write(&path, text).expect("write the model");
    path
}

fn url(port: u16, cred: &str, target: &str) -> String {
    format!("iscsi://{cred}127.0.0.1:{port}/{BASE}:{target}/0")
}

fn boot(extra: &str) -> (tempfile::TempDir, u16, PathBuf, Engine) {
    let dir = work_dir();
    let port = free_port();
    let m = model(dir.path(), port, extra);
    let e = start_engine(dir.path(), &m, port);
    (dir, port, m, e)
}

#[test]
#[ignore = "needs libiscsi-bin, qemu-utils, qemu-block-extra: run via tests/run.sh"]
fn chap_mutual_chap_and_digests_with_real_initiators() {
    let (dir, port, _m, engine) = boot("");
    // One-way CHAP: right secret in, wrong secret and no secret out.
    let cred = format!("alice%{ALICE_SECRET}@");
    let o = run("iscsi-inq", &[&url(port, &cred, "chap")], &[]);
    assert!(o.status.success(), "{}", all(&o));
    let o = run(
        "iscsi-inq",
        &[&url(port, "alice%wrongsecret99@", "chap")],
        &[],
    );
    assert!(
        !o.status.success() && all(&o).contains("Authentication failure"),
        "{}",
        all(&o)
    );
    let o = run("iscsi-inq", &[&url(port, "", "chap")], &[]);
    assert!(
        !o.status.success(),
        "login without CHAP must fail: {}",
        all(&o)
    );

    // Mutual CHAP: the initiator checks the target's answer too.
    let cred = format!("bob%{BOB_SECRET}@");
    let mutual = url(port, &cred, "mutual");
    let good = [
        ("LIBISCSI_CHAP_TARGET_USERNAME", "the-target"),
        ("LIBISCSI_CHAP_TARGET_PASSWORD", TARGET_SECRET),
    ];
    let o = run("iscsi-inq", &[&mutual], &good);
    assert!(o.status.success(), "{}", all(&o));
    let bad = [
        ("LIBISCSI_CHAP_TARGET_USERNAME", "the-target"),
        ("LIBISCSI_CHAP_TARGET_PASSWORD", "notthesecret99"),
    ];
    let o = run("iscsi-inq", &[&mutual], &bad);
    assert!(
        !o.status.success() && all(&o).contains("CHAP_R"),
        "initiator must reject the target's answer: {}",
        all(&o)
    );
    let o = run("iscsi-inq", &[&mutual], &[]);
    assert!(
        !o.status.success(),
        "mutual CHAP target accepted a one-way login: {}",
        all(&o)
    );

    // QEMU with CHAP and CRC32C header digests: a file goes in and comes back identical.
    let src = dir.path().join("src.img");
    let pattern: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(&src, &pattern).unwrap();
    let opts = format!(
        "driver=iscsi,transport=tcp,portal=127.0.0.1:{port},target={BASE}:chap,lun=0,user=alice,password-secret=s0,header-digest=crc32c"
    );
    let secret = format!("secret,id=s0,data={ALICE_SECRET}");
    let o = run(
        "qemu-img",
        &[
            "convert",
            "-n",
            "--object",
            &secret,
            "-f",
            "raw",
            src.to_str().unwrap(),
            "--target-image-opts",
            &opts,
        ],
        &[],
    );
    assert!(o.status.success(), "{}", all(&o));
    let back = dir.path().join("back.img");
    let o = run(
        "qemu-img",
        &[
            "convert",
            "--object",
            &secret,
            "--image-opts",
            &opts,
            "-O",
            "raw",
            back.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", all(&o));
    let got = std::fs::read(&back).unwrap();
    assert!(
        got[..pattern.len()] == pattern[..],
        "data through CHAP + digests differs"
    );
    let disk = std::fs::read(dir.path().join("disk.img")).unwrap();
    assert!(disk[..pattern.len()] == pattern[..], "backing file differs");

    let log = engine.log();
    assert!(
        log.contains("header_digest=true"),
        "QEMU did not get header digests:\n{log}"
    );
    assert!(
        log.contains("login refused: CHAP response does not match"),
        "{log}"
    );
    for secret in [ALICE_SECRET, BOB_SECRET, TARGET_SECRET] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
}

#[test]
#[ignore = "needs libiscsi-bin: run via tests/run.sh"]
fn acls_and_discovery_show_each_initiator_only_its_targets() {
    let (_dir, port, _m, engine) = boot("");
    let portal = format!("iscsi://127.0.0.1:{port}");
    let discover = |initiator: &str| {
        let o = run("iscsi-ls", &["-i", initiator, &portal], &[]);
        assert!(o.status.success(), "{}", all(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let a = discover("iqn.2026-11.test:a");
    let b = discover("iqn.2026-11.test:b");
    assert!(a.contains(&format!("{BASE}:only-a")), "{a}");
    assert!(
        !b.contains(&format!("{BASE}:only-a")),
        "initiator b sees a target it may not use:\n{b}"
    );
    for out in [&a, &b] {
        assert!(
            out.contains(&format!("{BASE}:open")) && out.contains(&format!("127.0.0.1:{port},1")),
            "{out}"
        );
        assert!(
            !out.contains(&format!("{BASE}:far")),
            "the 10/8-only target is shown to 127.0.0.1:\n{out}"
        );
    }
    // Login: by name and by network.
    let o = run(
        "iscsi-inq",
        &["-i", "iqn.2026-11.test:a", &url(port, "", "only-a")],
        &[],
    );
    assert!(o.status.success(), "{}", all(&o));
    let o = run(
        "iscsi-inq",
        &["-i", "iqn.2026-11.test:b", &url(port, "", "only-a")],
        &[],
    );
    assert!(
        !o.status.success() && all(&o).contains("Authorization failure"),
        "{}",
        all(&o)
    );
    let o = run("iscsi-inq", &[&url(port, "", "far")], &[]);
    assert!(
        !o.status.success() && all(&o).contains("Authorization failure"),
        "{}",
        all(&o)
    );
    let o = run("iscsi-inq", &[&url(port, "", "no-such-target")], &[]);
    assert!(
        !o.status.success() && all(&o).to_lowercase().contains("not found"),
        "{}",
        all(&o)
    );
    assert!(
        engine.log().contains("may not log in"),
        "{}",
        engine.log_tail()
    );
}

#[test]
#[ignore = "needs libiscsi-bin: run via tests/run.sh"]
fn live_reload_keeps_untouched_sessions_and_refuses_cuts() {
    let (dir, port, model_path, mut engine) = boot("");
    let sock = dir.path().join("engine.sock");
    // A session that stays logged in for the whole reload (no reconnects allowed).
    let perf = Command::new("iscsi-perf")
        .args(["-t", "6", "-m", "4", "-x", "0", &url(port, "", "open")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run iscsi-perf (libiscsi-bin)");
    std::thread::sleep(Duration::from_millis(1500));
    let o = isctl(&sock, &["sessions", "-o", "json"]);
    assert!(o.status.success(), "{}", all(&o));
    let before: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(before["num_records"], 1, "{before}");

    // SIGHUP with a new target: served at once, the running session untouched.
    model(dir.path(), port, "\n[extent.r5]\ntype = \"ramdisk\"\nsize = \"4MiB\"\n[target.added]\nluns = { 0 = \"r5\" }\n[[target.added.group]]\nportal = \"p\"\n");
    engine.signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    let o = run("iscsi-inq", &[&url(port, "", "added")], &[]);
    assert!(
        o.status.success(),
        "target added by SIGHUP not served: {}\n{}",
        all(&o),
        engine.log_tail()
    );

    // Removing the target the session uses is refused without --force, exit 4.
    let gone = dir.path().join("gone.toml");
    let text = std::fs::read_to_string(&model_path).unwrap();
    let cut = text.replace(
        "[target.open]\nluns = { 0 = \"r4\" }\n[[target.open.group]]\nportal = \"p\"\n",
        "",
    );
    assert_ne!(cut, text);
    std::fs::write(&gone, cut).unwrap();
    // The plan reads as LIO's does: the change, the session it cuts, the refusal.
    let o = isctl(
        &sock,
        &["plan", "--detailed-exitcode", gone.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(4), "{}", all(&o));
    assert!(
        all(&o).contains(&format!("- target \"{BASE}:open\""))
            && all(&o).contains("Logged-in sessions this plan would cut:")
            && all(&o).contains("the plan would cut 1 logged-in session(s)"),
        "{}",
        all(&o)
    );
    let o = isctl(&sock, &["plan", "-o", "json", gone.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4), "{}", all(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(plan["refusals"][0]["kind"], "sessions", "{plan}");
    assert_eq!(plan["changes"][0]["object"]["kind"], "target", "{plan}");
    let o = isctl(&sock, &["apply", "--auto-approve", gone.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4), "{}", all(&o));
    assert!(all(&o).contains("--force"), "{}", all(&o));

    let out = perf.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the session was disturbed by the reload: {}",
        all(&out)
    );
    let o = isctl(&sock, &["sessions", "-o", "json"]);
    let after: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(after["num_records"], 0, "iscsi-perf logged out: {after}");

    // With no one logged in the same change applies, and the target is gone.
    let o = isctl(&sock, &["apply", "--auto-approve", gone.to_str().unwrap()]);
    assert!(o.status.success(), "{}", all(&o));
    let o = run("iscsi-inq", &[&url(port, "", "open")], &[]);
    assert!(!o.status.success(), "removed target still served");
    let o = isctl(&sock, &["status", "-o", "json"]);
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<String> = st["engine"]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        names.contains(&format!("{BASE}:added")) && !names.contains(&format!("{BASE}:open")),
        "{names:?}"
    );
}

#[test]
#[ignore = "needs qemu-utils + qemu-block-extra: run via tests/run.sh"]
fn sigterm_flushes_and_exits_cleanly() {
    let (dir, port, _m, mut engine) = boot("");
    let u = url(port, &format!("alice%{ALICE_SECRET}@"), "chap");
    let o = run(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x5a 1M 64k", &u],
        &[],
    );
    assert!(o.status.success(), "{}", all(&o));
    let status = engine.signal("TERM").expect("exit status");
    assert!(status.success(), "exit {status}:\n{}", engine.log_tail());
    assert!(
        engine.log().contains("all logical units flushed"),
        "{}",
        engine.log_tail()
    );
    let disk = std::fs::read(dir.path().join("disk.img")).unwrap();
    assert!(disk[1 << 20..(1 << 20) + 65536].iter().all(|b| *b == 0x5a));
    assert!(
        !dir.path().join("engine.sock").exists(),
        "control socket left behind"
    );
}

/// Run `isctl serve` where it must refuse to start: its output, after it exited with
/// a failure. An engine that starts instead is killed after 10 s and fails the test
/// (it would otherwise serve forever).
fn serve_expecting_refusal(sock: &Path, model: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_isctl"))
        .arg("--socket")
        .arg(sock)
        .arg("serve")
        .arg(model)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run isctl serve");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("isctl serve started instead of refusing:\n{}", all(&o));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    assert!(!o.status.success(), "{}", all(&o));
    o
}

/// Shutdown never depends on reaching the control socket's path: tmpfiles or an
/// administrator may have removed the file.
#[test]
fn sigterm_exits_cleanly_when_the_control_socket_file_is_gone() {
    let (dir, _port, _m, mut engine) = boot("");
    let sock = dir.path().join("engine.sock");
    assert!(sock.exists(), "{}", engine.log_tail());
    std::fs::remove_file(&sock).unwrap();
    let status = engine
        .signal("TERM")
        .expect("the engine did not exit after SIGTERM");
    assert!(status.success(), "exit {status}:\n{}", engine.log_tail());
    assert!(
        engine.log().contains("all logical units flushed"),
        "{}",
        engine.log_tail()
    );
}

/// The control socket is refused in a directory others can write to: whoever can
/// write there could replace the socket and receive models with their secrets.
#[test]
fn serve_refuses_a_control_socket_directory_others_can_write() {
    use std::os::unix::fs::PermissionsExt;
    let dir = work_dir();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let m = model(dir.path(), free_port(), "");
    let o = serve_expecting_refusal(&open.join("engine.sock"), &m);
    assert!(all(&o).contains("lets others write to it"), "{}", all(&o));
}

/// A key the engine cannot honour is refused, never ignored.
#[test]
fn serve_refuses_isns_and_alua() {
    let dir = work_dir();
    let m = model(dir.path(), free_port(), "");
    let text = std::fs::read_to_string(&m).unwrap();
    let text = text.replacen(
        "[global]\n",
        "[global]\nalua = true\nisns_servers = [\"192.0.2.5\"]\n",
        1,
    );
    std::fs::write(&m, text).unwrap();
    let o = serve_expecting_refusal(&dir.path().join("engine.sock"), &m);
    assert!(
        all(&o).contains("does not register with iSNS") && all(&o).contains("set alua = false"),
        "{}",
        all(&o)
    );
}

// ---- a hostile peer -------------------------------------------------------------

fn bhs(op: u8, flags: u8) -> [u8; 48] {
    let mut b = [0u8; 48];
    b[0] = op;
    b[1] = flags;
    b
}

fn set_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

fn send(s: &mut TcpStream, mut header: [u8; 48], data: &[u8]) {
    let len = data.len();
    header[5] = (len >> 16) as u8;
    header[6] = (len >> 8) as u8;
    header[7] = len as u8;
    let mut buf = header.to_vec();
    buf.extend_from_slice(data);
    buf.resize(48 + len.div_ceil(4) * 4, 0);
    s.write_all(&buf).unwrap();
}

/// Read one PDU: (header, data). `None` when the connection is closed or silent.
fn recv(s: &mut TcpStream) -> Option<([u8; 48], Vec<u8>)> {
    let mut h = [0u8; 48];
    s.read_exact(&mut h).ok()?;
    let len = (usize::from(h[5]) << 16) | (usize::from(h[6]) << 8) | usize::from(h[7]);
    let mut d = vec![0; len.div_ceil(4) * 4 + usize::from(h[4]) * 4];
    s.read_exact(&mut d).ok()?;
    d.truncate(len);
    Some((h, d))
}

/// Log in to `target` without authentication, straight to full feature phase.
fn login(port: u16, target: &str) -> TcpStream {
    login_conn(port, target, 0, 0, "").0
}

/// Log a connection in: `tsih` 0 starts a session, else joins it with `cid`.
/// Returns the stream and the session's TSIH.
fn login_conn(port: u16, target: &str, tsih: u16, cid: u16, extra: &str) -> (TcpStream, u16) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut h = bhs(0x43, 0x80 | 0x03);
    h[8] = 0x80;
    h[13] = 7;
    h[14..16].copy_from_slice(&tsih.to_be_bytes());
    set_u32(&mut h, 16, 1);
    h[20..22].copy_from_slice(&cid.to_be_bytes());
    set_u32(&mut h, 24, 1);
    let text = format!(
        "InitiatorName=iqn.2026-11.test:hostile\0SessionType=Normal\0TargetName={BASE}:{target}\0AuthMethod=None\0{extra}"
    );
    send(&mut s, h, text.as_bytes());
    let (r, _) = recv(&mut s).expect("login response");
    assert_eq!((r[0] & 0x3f, r[36], r[37]), (0x23, 0, 0), "login failed");
    assert_eq!(r[1] & 0x83, 0x83, "not in full feature phase");
    (s, u16::from_be_bytes([r[14], r[15]]))
}

#[test]
#[ignore = "needs libiscsi-bin: run via tests/run.sh"]
fn a_session_takes_a_second_connection_and_logout_closes_both() {
    let (dir, port, _m, _engine) = boot("");
    let sock = dir.path().join("engine.sock");
    let (mut c0, tsih) = login_conn(port, "open", 0, 0, "MaxConnections=2\0");
    assert_ne!(tsih, 0);
    let (mut c1, joined) = login_conn(port, "open", tsih, 1, "");
    assert_eq!(
        joined, tsih,
        "the second connection did not join the session"
    );
    let o = isctl(&sock, &["sessions", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["num_records"], 1, "{v}");
    assert_eq!(
        v["records"][0]["connections"].as_array().map(|c| c.len()),
        Some(2),
        "{v}"
    );
    // Commands on either connection share the session's CmdSN window.
    for (s, sn) in [(&mut c0, 1u32), (&mut c1, 2)] {
        let mut tur = bhs(0x01, 0x80);
        set_u32(&mut tur, 16, 100 + sn);
        set_u32(&mut tur, 24, sn);
        send(s, tur, &[]);
        let (r, _) = recv(s).expect("SCSI Response");
        assert_eq!((r[0] & 0x3f, r[3]), (0x21, 0), "TEST UNIT READY failed");
        assert_eq!(
            u32::from_be_bytes([r[28], r[29], r[30], r[31]]),
            sn + 1,
            "ExpCmdSN"
        );
    }
    // A third connection is over MaxConnections=2.
    let mut c2 = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c2.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut h = bhs(0x43, 0x83);
    h[8] = 0x80;
    h[13] = 7;
    h[14..16].copy_from_slice(&tsih.to_be_bytes());
    h[21] = 2;
    send(
        &mut c2,
        h,
        format!("InitiatorName=iqn.2026-11.test:hostile\0TargetName={BASE}:open\0").as_bytes(),
    );
    let (r, _) = recv(&mut c2).expect("login response");
    assert_eq!((r[36], r[37]), (2, 6), "expected TOO MANY CONNECTIONS");
    // Logout "close the session" on one connection ends the other too.
    let mut lo = bhs(0x46, 0x80);
    set_u32(&mut lo, 16, 200);
    set_u32(&mut lo, 24, 3);
    send(&mut c0, lo, &[]);
    let (r, _) = recv(&mut c0).expect("Logout Response");
    assert_eq!((r[0] & 0x3f, r[2]), (0x26, 0));
    assert!(
        recv(&mut c1).is_none(),
        "the second connection outlived its session"
    );
}

#[test]
#[ignore = "needs libiscsi-bin: run via tests/run.sh"]
fn hostile_pdus_get_rejects_and_the_engine_keeps_serving() {
    let (_dir, port, _m, engine) = boot("");

    // A half-open connection that never says anything does not block anyone.
    let _silent = TcpStream::connect(("127.0.0.1", port)).unwrap();

    // Garbage instead of a login: the connection is refused and closed.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&[0xffu8; 48]).unwrap();
    if let Some((r, _)) = recv(&mut s) {
        assert_eq!(r[0] & 0x3f, 0x23, "expected a login reject");
        assert_ne!(r[36], 0, "garbage logged in");
    }
    assert!(
        recv(&mut s).is_none(),
        "connection stayed open after a refused login"
    );

    // A login that announces a 16 MiB data segment: refused without reading it all
    // into memory, connection closed.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut h = bhs(0x43, 0x83);
    h[5] = 0xff;
    h[6] = 0xff;
    h[7] = 0xff;
    s.write_all(&h).unwrap();
    let _ = s.write_all(&vec![0u8; 1 << 20]);
    let r = recv(&mut s).map(|(r, _)| r);
    assert!(
        r.is_none_or(|r| r[36] != 0),
        "an oversized login was accepted"
    );

    // In full feature phase.
    let mut s = login(port, "open");
    // Unknown opcode → Reject "command not supported" (0x05) carrying the header.
    let mut h = bhs(0x1c, 0x80);
    set_u32(&mut h, 16, 0x1234);
    send(&mut s, h, &[]);
    let (r, d) = recv(&mut s).expect("reject");
    assert_eq!((r[0] & 0x3f, r[2]), (0x3f, 0x05));
    assert_eq!(&d[..4], &h[..4], "the reject carries the rejected header");
    // Data-Out for a task that does not exist → Reject "invalid PDU field" (0x09).
    let mut h = bhs(0x05, 0x80);
    set_u32(&mut h, 16, 0x999);
    send(&mut s, h, &[0u8; 512]);
    let (r, _) = recv(&mut s).expect("reject");
    assert_eq!((r[0] & 0x3f, r[2]), (0x3f, 0x09));
    // A command far outside the CmdSN window is ignored silently; a NOP-Out after
    // it (immediate) is still answered, so the connection is alive and in step.
    let mut tur = bhs(0x01, 0x80);
    set_u32(&mut tur, 16, 7);
    set_u32(&mut tur, 24, 0x4000_0000);
    send(&mut s, tur, &[]);
    let mut nop = bhs(0x40, 0x80);
    set_u32(&mut nop, 16, 8);
    set_u32(&mut nop, 20, 0xffff_ffff);
    set_u32(&mut nop, 24, 1);
    send(&mut s, nop, b"ping");
    let (r, d) = recv(&mut s).expect("NOP-In");
    assert_eq!(r[0] & 0x3f, 0x20, "the out-of-window command was answered");
    assert_eq!(u32::from_be_bytes([r[16], r[17], r[18], r[19]]), 8);
    assert_eq!(d, b"ping");
    // A data segment longer than the engine declared it accepts: reject, then close.
    let mut h = bhs(0x40, 0x80);
    set_u32(&mut h, 16, 9);
    set_u32(&mut h, 20, 0xffff_ffff);
    send(&mut s, h, &vec![0u8; 300 * 1024]);
    let (r, _) = recv(&mut s).expect("reject");
    assert_eq!((r[0] & 0x3f, r[2]), (0x3f, 0x04));
    assert!(
        recv(&mut s).is_none(),
        "connection kept after a protocol error"
    );

    // Everyone else is still served.
    let o = run("iscsi-inq", &[&url(port, "", "open")], &[]);
    assert!(o.status.success(), "{}\n{}", all(&o), engine.log_tail());
}
