//! The userspace engine under the Linux kernel's own iSCSI initiator (open-iscsi), the
//! initiator most hosts use, at the queue depth it really drives.
//!
//! The engine (`isctl serve`) runs on this host; the initiator runs in the real-kernel test
//! VM (tests/lio_vm/, docs/testing-lio-vm.md) with the host's own open-iscsi, e2fsprogs and
//! fio (the VM shares the host's root) and reaches the engine at 10.0.2.2 (QEMU's user
//! network maps it to the host's 127.0.0.1). What a mistake in the engine's command
//! execution (ordering, data placement, status vs data) would break shows here: a
//! filesystem, files that must come back byte-identical after logout and login, and fio's
//! own checksums over 32 commands in flight. Mutual CHAP and CRC32C header and data
//! digests are on, as a careful user would configure them.
//!
//! Needs QEMU and the staged LIO kernel (like tests/lio_vm.rs) plus open-iscsi, fio and
//! e2fsprogs on the host (tests/install-deps.sh); a missing tool fails the test.

#[path = "lio_vm/mod.rs"]
mod harness;

// Shared with the conformance tests, which also use its tmpfs work directory.
#[allow(dead_code)]
#[path = "conformance/engine.rs"]
mod engine;

use engine::{free_port, start_engine};
use harness::{require_tool, Vm, VmOptions};

const TARGET: &str = "iqn.2026-11.io.isctl.kernel:disk";
const INITIATOR: &str = "iqn.2026-11.io.isctl.kernel:vm";
const USER: &str = "vmhost";
const SECRET: &str = "kernelsecret12";
const TARGET_USER: &str = "the-engine";
const TARGET_SECRET: &str = "enginesecret34";

/// One target with one 256 MiB file LU, mutual CHAP, reachable on 127.0.0.1:`port`.
fn model(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let text = format!(
        r#"[global]
basename = "iqn.2026-11.io.isctl.kernel"

[portal.p]
listen = ["127.0.0.1:{port}"]

[auth.vm]
user = "{USER}"
secret = "{SECRET}"
peer_user = "{TARGET_USER}"
peer_secret = "{TARGET_SECRET}"

[initiator_group.vm]
initiators = ["{INITIATOR}"]

[extent.disk]
type = "file"
path = "{disk}"
size = "256MiB"

[target.disk]
luns = {{ 0 = "disk" }}
[[target.disk.group]]
portal = "p"
initiator_group = "vm"
auth = "vm"
auth_method = "mutual-chap"
"#,
        disk = dir.join("disk.img").display()
    );
    let path = dir.join("model.toml");
    std::fs::write(&path, text).expect("write the model");
    path
}

/// Starts iscsid in the VM (host's open-iscsi) and waits for its control socket.
fn start_iscsid(vm: &mut Vm) {
    vm.sh("modprobe iscsi_tcp && modprobe sd_mod && modprobe ext4");
    vm.host_sh(&format!(
        "set -e\n\
         echo 'InitiatorName={INITIATOR}' > /etc/iscsi/initiatorname.iscsi\n\
         mkdir -p /run/lock/iscsi /var/lib/iscsi\n\
         setsid iscsid -f > /tmp/iscsid.log 2>&1 < /dev/null &\n\
         for i in $(seq 1 300); do\n\
           grep -q ISCSIADM_ABSTRACT_NAMESPACE /proc/net/unix && exit 0\n\
           sleep 0.1\n\
         done\n\
         echo 'iscsid did not open its socket within 30 s' >&2; cat /tmp/iscsid.log >&2; exit 1"
    ));
}

/// Threads of process `pid` named `name` (the engine names an LU's I/O workers
/// `io-<extent>` and its syncer `sync-<extent>`).
fn threads_named(pid: u32, name: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the engine's threads")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == name)
        .count()
}

/// The engine's portal as the VM reaches it.
fn portal(port: u16) -> String {
    format!("10.0.2.2:{port}")
}

fn login(vm: &mut Vm, port: u16) {
    let p = portal(port);
    vm.host_sh(&format!(
        "set -e\n\
         iscsiadm -m node -T {TARGET} -p {p} --login\n\
         for i in $(seq 1 300); do [ -b /dev/sda ] && exit 0; sleep 0.1; done\n\
         echo 'no /dev/sda 30 s after login' >&2; iscsiadm -m session -P3 >&2; exit 1"
    ));
}

fn logout(vm: &mut Vm, port: u16) {
    let p = portal(port);
    vm.host_sh(&format!(
        "set -e\n\
         iscsiadm -m node -T {TARGET} -p {p} --logout\n\
         for i in $(seq 1 300); do [ -b /dev/sda ] || exit 0; sleep 0.1; done\n\
         echo '/dev/sda still present 30 s after logout' >&2; exit 1"
    ));
}

#[test]
#[ignore = "needs QEMU + LIO kernel, open-iscsi, fio, e2fsprogs: run via tests/run.sh"]
fn linux_initiator_keeps_ext4_and_fio_verify_at_qd32_with_mutual_chap_and_digests() {
    for tool in ["iscsid", "iscsiadm", "fio", "mkfs.ext4"] {
        require_tool(tool).unwrap_or_else(|e| panic!("{e:#} (tests/install-deps.sh)"));
    }
    let started = std::time::Instant::now();
    // On the disk, not tmpfs: the engine runs an in-memory LU's commands one at a time
    // on the connection's thread; this test is there to catch mistakes of the
    // concurrent path a disk-backed LU takes (its I/O workers).
    let dir = tempfile::Builder::new()
        .prefix("isctl-kernel-initiator-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("a work directory under the target directory");
    let port = free_port();
    let engine = start_engine(dir.path(), &model(dir.path(), port), port);

    let mut opts = VmOptions::new("kernel-initiator");
    opts.share_host_root = true;
    let mut vm = Vm::boot_with(opts).unwrap_or_else(|e| panic!("{e:#}"));
    start_iscsid(&mut vm);

    // Discovery lists the target; the node record then names the portal the VM can reach
    // (SendTargets answers with the engine's own listen address, 127.0.0.1, which in the VM
    // is the VM itself).
    let p = portal(port);
    let out = vm.host_sh(&format!("iscsiadm -m discovery -t st -p {p}"));
    assert!(
        out.stdout.contains(TARGET),
        "discovery did not list {TARGET}\n{out}"
    );
    let set = |name: &str, value: &str| {
        format!("iscsiadm -m node -T {TARGET} -p {p} -o update -n '{name}' -v '{value}'\n")
    };
    vm.host_sh(&format!(
        "set -e\n\
         iscsiadm -m node -o delete || true\n\
         iscsiadm -m node -T {TARGET} -p {p} -o new\n{}{}{}{}{}{}{}",
        set("node.session.auth.authmethod", "CHAP"),
        set("node.session.auth.username", USER),
        set("node.session.auth.password", SECRET),
        set("node.session.auth.username_in", TARGET_USER),
        set("node.session.auth.password_in", TARGET_SECRET),
        set("node.conn[0].iscsi.HeaderDigest", "CRC32C"),
        set("node.conn[0].iscsi.DataDigest", "CRC32C"),
    ));
    login(&mut vm, port);
    let session = vm.host_sh("iscsiadm -m session -P2").stdout;
    for want in [
        "HeaderDigest: CRC32C",
        "DataDigest: CRC32C",
        "username_in: ",
    ] {
        assert!(session.contains(want), "session lacks '{want}':\n{session}");
    }
    let queue = vm.sh("cat /sys/block/sda/device/queue_depth").stdout;
    assert!(
        queue.trim().parse::<u32>().unwrap_or(0) >= 32,
        "the kernel's queue depth to the engine is {queue}, the test needs 32"
    );

    // A filesystem and files, checked after logout and login (nothing cached in the VM).
    vm.host_sh(
        "set -e\n\
         mkfs.ext4 -q -F /dev/sda\n\
         mkdir -p /mnt/t && mount /dev/sda /mnt/t\n\
         mkdir /mnt/t/d\n\
         for i in 1 2 3 4 5 6 7 8; do head -c $((i * 1536 * 1024 + i * 517)) /dev/urandom > /mnt/t/d/f$i; done\n\
         (cd /mnt/t/d && sha256sum f* > /tmp/sums)\n\
         umount /mnt/t",
    );
    logout(&mut vm, port);
    vm.sh("echo 3 > /proc/sys/vm/drop_caches");
    login(&mut vm, port);
    let out = vm.host_sh(
        "set -e\n\
         fsck.ext4 -f -n /dev/sda\n\
         mount /dev/sda /mnt/t\n\
         cd /mnt/t/d && sha256sum -c /tmp/sums",
    );
    assert_eq!(out.stdout.matches(": OK").count(), 8, "{out}");

    // fio with its checksums, 32 commands in flight, O_DIRECT through the filesystem.
    let fio = vm.host_sh(
        "fio --name=verify --filename=/mnt/t/fio.dat --size=48M --ioengine=libaio \
         --direct=1 --iodepth=32 --rw=randwrite --bsrange=4k-64k --verify=crc32c \
         --verify_fatal=1 --do_verify=1 --norandommap --randrepeat=0 \
         --output-format=terse --terse-version=3",
    );
    assert!(!fio.stdout.is_empty(), "fio printed nothing\n{fio}");
    // The commands really ran concurrently: the LU's pool started more than one thread
    // (one more is started only when every running one is busy), and the durable
    // writes were handed to the LU's syncer thread instead of each holding a worker
    // through its sync (so a few workers keep 32 commands moving).
    let workers = threads_named(engine.pid(), "io-disk");
    assert!(
        workers >= 2,
        "fio at queue depth 32 kept only {workers} I/O worker thread of the engine busy"
    );
    assert_eq!(
        threads_named(engine.pid(), "sync-disk"),
        1,
        "no syncer thread: the durable writes did not go through group commit"
    );
    vm.host_sh("umount /mnt/t && fsck.ext4 -f -n /dev/sda");
    logout(&mut vm, port);
    drop(vm);
    let log = engine.log();
    assert!(
        !log.contains(" ERROR ") && !log.contains("WARN"),
        "the engine logged problems:\n{log}"
    );
    eprintln!(
        "kernel initiator test: {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
