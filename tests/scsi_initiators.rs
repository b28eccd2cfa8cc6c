//! The engine's logical units as real initiators see them: libiscsi's tools and
//! QEMU's iscsi block driver against `isctl serve` (port 13310).
//!
//! What they prove beyond the unit tests: the model's extent settings (serial, rpm,
//! block size, read-only) reach the initiator through INQUIRY, READ CAPACITY and
//! MODE SENSE; data written by one initiator reads back through another; discards
//! become holes that GET LBA STATUS reports and that QEMU sees as zero ranges.

#[path = "conformance/engine.rs"]
mod engine;

use std::path::Path;
use std::process::{Command, Output};

use engine::{start_engine, work_dir};

/// Each test runs its own engine (tests run in parallel), on its own port.
const PORT: u16 = 13310;
const PORT_QEMU: u16 = 13311;
const TARGET: &str = "iqn.2026-11.io.isctl:initiators";

fn url(lun: u16) -> String {
    url_on(PORT, lun)
}

fn url_on(port: u16, lun: u16) -> String {
    format!("iscsi://127.0.0.1:{port}/{TARGET}/{lun}")
}

/// Run a tool; a missing tool is a failure that says what to install.
fn run(tool: &str, args: &[&str], package: &str) -> Output {
    Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {tool} ({e}): install {package} (or tests/install-deps.sh)")
    })
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn write_model(dir: &Path, port: u16) -> std::path::PathBuf {
    let model = format!(
        r#"[portal.p]
listen = ["127.0.0.1:{port}"]

[extent.disk]
type = "file"
path = "{disk}"
size = "64MiB"
serial = "isctl-disk-0001"
rpm = "ssd"

[extent.big]
type = "ramdisk"
size = "32MiB"
blocksize = 4096
rpm = 7200

[extent.ro]
type = "ramdisk"
size = "8MiB"
readonly = true

[target."{TARGET}"]
luns = {{ 0 = "disk", 1 = "big", 2 = "ro" }}
[[target."{TARGET}".group]]
portal = "p"
"#,
        disk = dir.join("disk.img").display()
    );
    let path = dir.join("model.toml");
    std::fs::write(&path, model).expect("write the model");
    path
}

#[test]
#[ignore = "needs libiscsi-bin and qemu-utils + qemu-block-extra: run via tests/run.sh"]
fn libiscsi_tools_see_the_extent_settings() {
    let dir = work_dir();
    let model = write_model(dir.path(), PORT);
    let _engine = start_engine(dir.path(), &model, PORT);
    let pkg = "libiscsi-bin";

    let o = run("iscsi-inq", &["-e", "1", "-c", "128", &url(0)], pkg);
    assert_ok(&o, "iscsi-inq VPD 0x80");
    assert!(stdout(&o).contains("Unit Serial Number:[isctl-disk-0001]"));

    let o = run("iscsi-inq", &["-e", "1", "-c", "131", &url(0)], pkg);
    assert_ok(&o, "iscsi-inq VPD 0x83");
    let text = stdout(&o);
    assert!(
        text.contains("Designator:[ISCTL   isctl-disk-0001]"),
        "{text}"
    );
    assert!(
        text.contains(&format!("Designator:[{TARGET},t,0x")),
        "{text}"
    );
    assert!(text.contains("Designator Type:(3) NAA"), "{text}");

    let o = run("iscsi-inq", &["-e", "1", "-c", "177", &url(0)], pkg);
    assert!(
        stdout(&o).contains("Medium Rotation Rate:1"),
        "ssd = non-rotating"
    );
    let o = run("iscsi-inq", &["-e", "1", "-c", "177", &url(1)], pkg);
    assert!(stdout(&o).contains("Medium Rotation Rate:7200"));

    let o = run("iscsi-inq", &["-e", "1", "-c", "178", &url(0)], pkg);
    let text = stdout(&o);
    assert!(
        text.contains("lbpu:1") && text.contains("lbprz:1"),
        "{text}"
    );

    let o = run("iscsi-readcapacity16", &[&url(0)], pkg);
    assert_ok(&o, "iscsi-readcapacity16");
    let text = stdout(&o);
    assert!(text.contains("LOGICAL BLOCK LENGTH IN BYTES:512"), "{text}");
    assert!(text.contains("Total size:67108864"), "{text}");
    assert!(text.contains("LBPME:1"), "{text}");
    let o = run("iscsi-readcapacity16", &[&url(1)], pkg);
    let text = stdout(&o);
    assert!(
        text.contains("LOGICAL BLOCK LENGTH IN BYTES:4096"),
        "{text}"
    );
    assert!(text.contains("Total size:33554432"), "{text}");

    let o = run(
        "iscsi-ls",
        &["-s", &format!("iscsi://127.0.0.1:{PORT}")],
        pkg,
    );
    assert_ok(&o, "iscsi-ls");
    let text = stdout(&o);
    assert!(text.contains(TARGET), "{text}");
    assert!(text.contains("Lun:2"), "{text}");
}

#[test]
#[ignore = "needs qemu-utils + qemu-block-extra (QEMU's iscsi driver): run via tests/run.sh"]
fn qemu_writes_reads_and_sees_holes() {
    let dir = work_dir();
    let model = write_model(dir.path(), PORT_QEMU);
    let _engine = start_engine(dir.path(), &model, PORT_QEMU);
    let pkg = "qemu-utils and qemu-block-extra";

    // 8 MiB of a pattern, written through QEMU and compared back.
    let src = dir.path().join("src.img");
    let pattern: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &pattern).expect("write source image");
    let src = src.to_string_lossy().into_owned();
    let lun = url_on(PORT_QEMU, 0);
    let o = run(
        "qemu-img",
        &["convert", "-n", "-f", "raw", "-O", "raw", &src, &lun],
        pkg,
    );
    assert_ok(&o, "qemu-img convert");
    // The 8 MiB landed at the start of the 64 MiB LU, byte for byte.
    let disk = std::fs::read(dir.path().join("disk.img")).expect("read the backing file");
    assert!(disk[..8 << 20] == pattern[..], "backing file differs");
    let o = run(
        "qemu-io",
        &["-f", "raw", "-c", "read -P 0 8M 1M", &lun],
        pkg,
    );
    assert_ok(&o, "qemu-io read of untouched blocks");
    assert!(!stdout(&o).contains("Pattern verification failed"));

    // Discard the first 4 MiB: UNMAP punches a hole, reads give zeros, and QEMU's
    // block status (GET LBA STATUS) reports the range as zero and not data.
    let o = run("qemu-io", &["-f", "raw", "-c", "discard 0 4M", &lun], pkg);
    assert_ok(&o, "qemu-io discard");
    let o = run("qemu-io", &["-f", "raw", "-c", "read -P 0 0 4M", &lun], pkg);
    assert!(
        !stdout(&o).contains("Pattern verification failed"),
        "{}",
        stdout(&o)
    );
    let o = run(
        "qemu-img",
        &["map", "--output=json", "-f", "raw", &lun],
        pkg,
    );
    assert_ok(&o, "qemu-img map");
    let map = stdout(&o);
    let first = map.lines().next().unwrap_or("");
    assert!(
        first.contains("\"start\": 0") && first.contains("\"data\": false"),
        "{map}"
    );
    assert!(
        map.contains("\"start\": 4194304") && map.contains("\"data\": true"),
        "{map}"
    );

    // The read-only LU refuses writes: QEMU refuses to open it read-write.
    let o = run(
        "qemu-io",
        &["-f", "raw", "-c", "write 0 4k", &url_on(PORT_QEMU, 2)],
        pkg,
    );
    let all = format!("{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr));
    assert!(all.contains("write protected"), "{all}");
}
