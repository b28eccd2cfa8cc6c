//! `isctl sessions`, `isctl stats` and `isctl exporter` against the userspace engine
//! with real initiators logged in (libiscsi's iscsi-perf and iscsi-inq, QEMU's
//! iscsi driver through qemu-img), `/metrics` parsed by Prometheus's own Python
//! text parser (Debian's python3-prometheus-client).

mod common;
#[path = "conformance/engine.rs"]
mod engine;

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::iscsi_perf::iscsi_perf_iops;
use common::prometheus::{parse_metrics, sample};
use common::Isctl;
use engine::{free_port, start_engine, work_dir};

const TARGET: &str = "iqn.2026-11.io.isctl:obs";

fn model(dir: &Path, port: u16) -> std::path::PathBuf {
    let p = dir.join("model.toml");
    std::fs::write(
        &p,
        format!(
            r#"[global]
basename = "iqn.2026-11.io.isctl"
[portal.lab]
listen = ["127.0.0.1:{port}"]
[initiator_group.libiscsi]
initiators = ["iqn.2010-11.libiscsi:iscsi-perf", "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-inq", "iqn.2008-11.org.linux-kvm", "iqn.2026-11.io.isctl:qemu"]
comment = "libiscsi and qemu"
[extent.r0]
type = "ramdisk"
size = "8MiB"
[target.obs]
luns = {{ 0 = "r0" }}
[[target.obs.group]]
portal = "lab"
initiator_group = "libiscsi"
"#
        ),
    )
    .unwrap();
    p
}

fn isctl(sock: &Path, args: &[&str]) -> common::Run {
    Isctl::new().arg("--socket").arg(sock).args(args).run()
}

fn lun_url(port: u16) -> String {
    format!("iscsi://127.0.0.1:{port}/{TARGET}/0")
}

/// One plain HTTP GET; the status and the body.
fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the exporter");
    use std::io::Write;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

struct Exporter(std::process::Child);
impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "needs libiscsi-bin, qemu-utils and python3-prometheus-client (tests/install-deps.sh)"]
fn sessions_stats_and_metrics_with_real_initiators() {
    let dir = work_dir();
    let port = free_port();
    let m = model(dir.path(), port);
    let _engine = start_engine(dir.path(), &m, port);
    let sock = dir.path().join("engine.sock");

    // An exporter for the engine, on a free loopback port.
    let http = free_port();
    let mut exporter = Exporter(
        Command::new(env!("CARGO_BIN_EXE_isctl"))
            .arg("--socket")
            .arg(&sock)
            .arg("--state-dir")
            .arg(dir.path())
            .args(["exporter", "--listen", &format!("127.0.0.1:{http}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start isctl exporter"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", http)).is_err() {
        assert!(
            exporter.0.try_wait().unwrap().is_none(),
            "the exporter exited"
        );
        assert!(Instant::now() < deadline, "the exporter did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = parse_metrics(&http_get(http, "/metrics").1);

    // QEMU's iscsi driver writes 1 MiB of incompressible data and reads the whole LUN.
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let src = dir.path().join("in.raw");
    std::fs::write(&src, &data).unwrap();
    let o = Command::new("qemu-img")
        .args(["convert", "-n", "-f", "raw", "-O", "raw"])
        .arg(&src)
        .arg(lun_url(port))
        .output()
        .expect("run qemu-img (qemu-utils)");
    assert!(
        o.status.success(),
        "qemu-img write: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let back = dir.path().join("out.raw");
    let o = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw", &lun_url(port)])
        .arg(&back)
        .output()
        .expect("run qemu-img");
    assert!(
        o.status.success(),
        "qemu-img read: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(&std::fs::read(&back).unwrap()[..data.len()], &data[..]);

    let after = parse_metrics(&http_get(http, "/metrics").1);
    let lun = format!(r#"{{"lun": "0", "target": "{TARGET}"}}"#);
    let written = sample(&after, "isctl_lun_written_bytes_total", &lun)
        - before
            .get(format!("isctl_lun_written_bytes_total{lun}"))
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0);
    let read = sample(&after, "isctl_lun_read_bytes_total", &lun)
        - before
            .get(format!("isctl_lun_read_bytes_total{lun}"))
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0);
    // Exactly the data written; the read is that 1 MiB (qemu-img skips what GET LBA
    // STATUS reports unmapped) plus the few bytes of INQUIRY / READ CAPACITY / GET
    // LBA STATUS answers.
    assert_eq!(written, (1u64 << 20) as f64, "written bytes");
    assert!(
        read >= (1u64 << 20) as f64 && read < ((1u64 << 20) + 65536) as f64,
        "read bytes {read}"
    );
    let accepted = format!(r#"{{"result": "accepted", "target": "{TARGET}"}}"#);
    assert!(sample(&after, "isctl_logins_total", &accepted) >= 2.0);
    assert!(
        sample(&after, "isctl_lun_command_duration_seconds_count", &lun) > 0.0,
        "latency histogram"
    );

    // iscsi-perf for 8 s; meanwhile sessions, and a 2-second `stats --watch`.
    let perf_started = Instant::now();
    let perf = Command::new("iscsi-perf")
        .args(["-t", "8", "-m", "4", "-x", "0", &lun_url(port)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run iscsi-perf (libiscsi-bin)");
    std::thread::sleep(Duration::from_millis(1500));

    // ONTAP's record: every field the engine knows, filled.
    let o = isctl(
        &sock,
        &["-o", "json", "sessions", &format!("target={TARGET}")],
    );
    o.assert_exit(0);
    let v = o.json();
    assert_eq!(v["num_records"], 1, "{v:#}");
    let s = &v["records"][0];
    assert_eq!(
        s["initiator"]["name"], "iqn.2010-11.libiscsi:iscsi-perf",
        "{s:#}"
    );
    assert_eq!(s["initiator"]["comment"], "libiscsi and qemu", "{s:#}");
    assert_eq!(s["igroups"][0]["name"], "libiscsi", "{s:#}");
    assert_eq!(s["target_portal_group"], "lab", "{s:#}");
    assert_eq!(s["target_portal_group_tag"], 1, "{s:#}");
    assert!(s["isid"].as_str().unwrap().split(':').count() == 6, "{s:#}");
    assert!(s["tsih"].as_u64().unwrap() > 0, "{s:#}");
    let c = &s["connections"][0];
    assert_eq!(c["authentication_type"], "none", "{s:#}");
    assert_eq!(c["interface"]["ip"]["address"], "127.0.0.1", "{s:#}");
    assert_eq!(c["interface"]["ip"]["port"], port, "{s:#}");
    assert_eq!(c["initiator_address"]["address"], "127.0.0.1", "{s:#}");
    assert!(
        c["initiator_address"]["port"].as_u64().unwrap() > 0,
        "{s:#}"
    );
    assert!(
        s["parameters"]["max_burst_length"].as_u64().unwrap() > 0,
        "{s:#}"
    );

    // A second session (iscsi-inq is quick: hold one with a slow iscsi-perf instead
    // would take longer); ONTAP's operators on the live record.
    let o = isctl(
        &sock,
        &[
            "sessions",
            "initiator.name=*PERF*",
            "--return-records",
            "false",
        ],
    );
    o.assert_exit(0);
    assert_eq!(o.stdout.trim(), "1", "{}", o.all());
    let o = isctl(
        &sock,
        &[
            "sessions",
            "initiator.name=!*perf*",
            "--return-records",
            "false",
        ],
    );
    assert_eq!(o.stdout.trim(), "0", "{}", o.all());
    let o = isctl(
        &sock,
        &[
            "sessions",
            "connections.initiator_address.port=>0",
            "tsih=<=65535",
            "--return-records",
            "false",
        ],
    );
    assert_eq!(o.stdout.trim(), "1", "{}", o.all());
    let o = isctl(&sock, &["sessions", "initiator.nmae=x"]);
    assert_eq!(o.code, 64, "an unknown field is a usage error: {}", o.all());
    assert!(o.stderr.contains("initiator.name"), "{}", o.all());
    // The HTTP endpoint answers the same query in ONTAP's shape.
    let (st, body) = http_get(
        http,
        "/api/protocols/san/iscsi/sessions?initiator.name=*perf*&fields=initiator.name,connections.authentication_type&order_by=tsih%20desc",
    );
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["num_records"], 1, "{v:#}");
    assert_eq!(v["records"][0]["target_portal_group"], "lab", "{v:#}");
    assert_eq!(
        v["records"][0]["connections"][0]["authentication_type"], "none",
        "{v:#}"
    );
    assert!(
        v["records"][0].get("isid").is_none(),
        "fields= limits the record: {v:#}"
    );

    // `stats --watch 2`: the rate over a 2 s window while iscsi-perf runs.
    let o = isctl(
        &sock,
        &["-o", "json", "stats", "--watch", "2", "--count", "1"],
    );
    o.assert_exit(0);
    let window_end = perf_started.elapsed().as_secs_f64();
    let second: serde_json::Value =
        serde_json::from_str(o.stdout.lines().nth(1).expect("two samples")).unwrap();
    let rate = second["rates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["target"] == TARGET && r["row"] == "lun 0")
        .map(|r| r["commands_per_s"].as_f64().unwrap())
        .unwrap_or_else(|| panic!("no lun 0 rate: {second:#}"));
    let out = perf.wait_with_output().unwrap();
    let perf_text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "iscsi-perf: {perf_text}");
    // The window as iscsi-perf counts time (from its start, after its login); the
    // first sample is taken as `stats` starts, the second 2 s later.
    let iops = iscsi_perf_iops(&perf_text, 8.0, window_end - 2.0, window_end);
    let ratio = rate / iops;
    eprintln!(
        "stats --watch 2: {rate:.0} commands/s; iscsi-perf: {iops:.0} IOPS; ratio {ratio:.3}"
    );
    assert!(
        (0.9..=1.1).contains(&ratio),
        "stats --watch rate {rate:.0}/s vs iscsi-perf {iops:.0} IOPS (ratio {ratio:.3})\n{perf_text}"
    );

    // A login refused by the initiator group counts as an authorization failure.
    let o = Command::new("iscsi-inq")
        .args(["-i", "iqn.1999-01.com.example:stranger", &lun_url(port)])
        .output()
        .expect("run iscsi-inq");
    assert!(!o.status.success());
    let m = parse_metrics(&http_get(http, "/metrics").1);
    let authz = format!(r#"{{"result": "authorization", "target": "{TARGET}"}}"#);
    assert_eq!(sample(&m, "isctl_logins_total", &authz), 1.0);
}

/// The engine names its sessions from the model it serves: `--model` (for LIO's
/// sessions) is refused there as a usage error, before any engine is asked.
#[test]
fn model_flag_is_refused_on_the_engine() {
    let dir = work_dir();
    for verb in ["sessions", "exporter"] {
        let run = Isctl::new()
            .args(["--backend", "userspace", "--socket"])
            .arg(dir.path().join("no-engine.sock"))
            .args([verb, "--model", "model.toml"])
            .run();
        run.assert_exit(64);
        assert!(
            run.stderr.contains("--model is for LIO"),
            "{verb}: {}",
            run.stderr
        );
    }
}
