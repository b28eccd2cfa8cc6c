//! Real-kernel tests: isctl applied to LIO in a QEMU VM, checked in the VM's configfs tree
//! and by real initiators on the host (docs/testing-lio-vm.md).
//!
//! Every test boots its own VM (about 5-10 s under TCG) and is `#[ignore]`d so that plain
//! `cargo test` stays fast; run them with
//! `cargo test --test lio_vm -- --include-ignored` (or tests/lio-vm/run.sh). A missing
//! tool, a failed kernel download or a VM that does not boot FAILS the test.

#[path = "lio_vm/mod.rs"]
mod harness;

use std::time::Duration;

use harness::holder::{LoginSpec, SessionHolder};
use harness::{run_host, tree, Vm, CONFIGFS};

const INQ_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds a demo-mode target with one 64 MiB ramdisk LUN by hand (plain mkdir/echo).
fn build_demo_target_by_hand(vm: &mut Vm, iqn: &str) {
    vm.sh(&format!(
        r#"set -e
C={CONFIGFS}
mkdir -p $C/core/rd_mcp_0/ram0
echo rd_pages=16384 > $C/core/rd_mcp_0/ram0/control
echo 1 > $C/core/rd_mcp_0/ram0/enable
printf handbuilt0001 > $C/core/rd_mcp_0/ram0/wwn/vpd_unit_serial
mkdir $C/iscsi
T=$C/iscsi/{iqn}/tpgt_1
mkdir -p $T
mkdir $T/lun/lun_0
ln -s $C/core/rd_mcp_0/ram0 $T/lun/lun_0/handlink
mkdir $T/np/0.0.0.0:3260
echo 0 > $T/attrib/authentication
echo 1 > $T/attrib/generate_node_acls
echo 0 > $T/attrib/demo_mode_write_protect
echo 1 > $T/enable
"#
    ));
}

/// The first milestone: the VM boots from the repository's own files, runs commands, and a
/// host initiator logs in to a hand-built LIO target through the forwarded port.
#[test]
#[ignore = "needs QEMU + LIO kernel: run via tests/run.sh"]
fn harness_boots_and_host_initiator_logs_in() {
    let mut vm = Vm::boot("harness-smoke").expect("boot");
    let out = vm.sh("uname -r; cat /sys/kernel/config/target/version");
    assert!(
        out.stdout.contains(&vm.kernel_version),
        "uname -r does not name the staged kernel {}:\n{out}",
        vm.kernel_version
    );
    assert!(
        out.stdout
            .contains("Target Engine Core ConfigFS Infrastructure"),
        "{out}"
    );

    // Exit status and stderr travel back separately.
    let out = vm.run("echo to-out; echo to-err >&2; exit 7").expect("run");
    assert_eq!(
        (out.status, out.stdout.as_str(), out.stderr.as_str()),
        (7, "to-out\n", "to-err\n")
    );

    let iqn = "iqn.2026-11.io.isctl.test:handbuilt";
    build_demo_target_by_hand(&mut vm, iqn);
    let url = format!("iscsi://127.0.0.1:{}/{iqn}/0", vm.port());
    let inq = run_host(
        "iscsi-inq",
        &["-i", "iqn.2026-11.io.isctl:host", &url],
        &[],
        INQ_TIMEOUT,
    )
    .expect("iscsi-inq");
    inq.expect_success("INQUIRY through the forwarded port");
    assert!(
        inq.stdout.contains("LIO-ORG"),
        "vendor LIO-ORG expected\n{inq}"
    );
    let serial = run_host(
        "iscsi-inq",
        &[
            "-i",
            "iqn.2026-11.io.isctl:host",
            "-e",
            "1",
            "-c",
            "128",
            &url,
        ],
        &[],
        INQ_TIMEOUT,
    )
    .expect("iscsi-inq VPD 0x80");
    serial.expect_success("unit serial VPD page");
    assert!(
        serial.stdout.contains("handbuilt0001"),
        "serial expected\n{serial}"
    );
    let cap = run_host(
        "iscsi-readcapacity16",
        &["-i", "iqn.2026-11.io.isctl:host", &url],
        &[],
        INQ_TIMEOUT,
    )
    .expect("iscsi-readcapacity16");
    cap.expect_success("READ CAPACITY(16)");
    let cap = harness::host::parse_capacity(&cap).expect("capacity");
    assert_eq!(
        (cap.block_length, cap.total_bytes),
        (512, 64 << 20),
        "{cap:?}"
    );

    // A session held open by our own initiator is visible to the kernel.
    let holder = SessionHolder::login(
        &format!("127.0.0.1:{}", vm.port()),
        &LoginSpec {
            initiator: "iqn.2026-11.io.isctl:holder".into(),
            target: iqn.into(),
            chap: None,
            mutual: None,
        },
    )
    .expect("holder login");
    let sessions = vm.sh(&format!(
        "cat {CONFIGFS}/iscsi/{iqn}/tpgt_1/dynamic_sessions | tr -d '\\0'"
    ));
    assert!(
        sessions.stdout.contains("iqn.2026-11.io.isctl:holder"),
        "{sessions}"
    );
    assert!(holder.is_alive());

    let dump = tree::dump(&mut vm);
    assert!(dump.is_dir(&format!("iscsi/{iqn}/tpgt_1/lun/lun_0")));
    assert_eq!(
        dump.link(&format!("iscsi/{iqn}/tpgt_1/lun/lun_0/handlink")),
        Some("core/rd_mcp_0/ram0")
    );
    drop(holder);
}
