//! isctl's systemd units (packaging/systemd/) under a real systemd: Debian's systemd boots
//! as PID 1 in the real-kernel test VM (the host's root shared read-only, with a tmpfs
//! overlay: `VmOptions::systemd_setup`, docs/testing-lio-vm.md) and manages LIO there.
//!
//! One VM boot for the whole story, in the order an administrator lives it: install isctl
//! and the units as README.md says, enable `isctl.service` + `isctl.path`, reboot (the
//! boot-time apply); edit the model, then replace it as git does (the path unit re-applies
//! each time); switch to `isctl-watch.service` and change the model every way a checkout
//! does (an edit, git's unlink + create, a file in a new subdirectory); `systemctl
//! reload` (re-applies at once, repairing a hand-made change); `systemctl stop` (exit 0,
//! inactive, not failed).
//! Each step is proven by configfs (what the kernel holds), by `systemctl show` (what
//! systemd thinks of the unit) and by the journal (what isctl said).
//!
//! `#[ignore]`d like every VM test; `tests/run.sh` runs it. A missing tool or a VM that
//! does not boot FAILS it.

#[path = "lio_vm/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::vm::base64_encode;
use harness::{Vm, VmOptions, CONFIGFS};

const BASENAME: &str = "iqn.2026-11.io.isctl.systemd";

/// The model's fixed part: the basename and one portal.
const GLOBAL: &str = "[global]\nbasename = \"iqn.2026-11.io.isctl.systemd\"\n\n[portal.main]\nlisten = [\"0.0.0.0:3260\"]\n";

/// One target with a 1 MiB ramdisk LUN.
fn target(name: &str, alias: &str) -> String {
    format!(
        "[extent.{name}0]\ntype = \"ramdisk\"\nsize = \"1MiB\"\n\n[target.{name}]\nalias = \"{alias}\"\nluns = {{ 0 = \"{name}0\" }}\n\n[[target.{name}.group]]\nportal = \"main\"\n"
    )
}

/// Shell that writes `contents` to `path` (any bytes, no quoting concerns).
fn write_file(path: &str, contents: &str) -> String {
    format!(
        "printf %s '{}' | base64 -d > {path}\n",
        base64_encode(contents.as_bytes())
    )
}

fn repo_file(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// What an administrator does before rebooting, as README.md "Install" says: the binary
/// to /usr/local/sbin, the units to /etc/systemd/system, a model in /etc/isctl, and the
/// boot-time apply plus the path unit enabled.
fn install_script() -> String {
    let mut script = String::from(
        "install -m 0755 /usr/local/lib/lio-vm/isctl /usr/local/sbin/isctl\nmkdir -p /etc/isctl\n",
    );
    for unit in [
        "isctl.service",
        "isctl.path",
        "isctl-apply.service",
        "isctl-watch.service",
        "isctl-engine.service",
    ] {
        let text = repo_file(&format!("packaging/systemd/{unit}"));
        script.push_str(&write_file(&format!("/etc/systemd/system/{unit}"), &text));
    }
    script.push_str(&write_file("/etc/isctl/00-global.toml", GLOBAL));
    script.push_str(&write_file("/etc/isctl/boot.toml", &target("boot", "Boot")));
    script.push_str("systemctl enable isctl.service isctl.path\n");
    script
}

fn iqn(name: &str) -> String {
    format!("{BASENAME}:{name}")
}

/// A shell condition: the kernel has the target `name` with its LUN enabled.
fn has_target(name: &str) -> String {
    format!(
        "[ \"$(cat {CONFIGFS}/iscsi/{}/tpgt_1/enable 2>/dev/null)\" = 1 ] && [ -d {CONFIGFS}/iscsi/{}/tpgt_1/lun/lun_0 ]",
        iqn(name),
        iqn(name)
    )
}

/// Polls a shell condition in the VM (every 100 ms, for up to `limit`); returns how long it
/// took, or fails the test with `why` and the unit's journal.
fn wait_until(vm: &mut Vm, condition: &str, limit: Duration, why: &str, unit: &str) -> Duration {
    let start = Instant::now();
    let out = vm
        .run(&format!(
            "end=$(( $(date +%s) + {} )); until {condition}; do [ $(date +%s) -ge $end ] && exit 1; sleep 0.1; done",
            limit.as_secs()
        ))
        .unwrap_or_else(|e| panic!("{why}: {e:#}"));
    if !out.success() {
        let journal = vm.run(&format!(
            "journalctl --no-pager -u {unit} | tail -n 40; systemctl status --no-pager {unit}"
        ));
        panic!(
            "{why}: not within {limit:?}\n{}",
            journal.map(|o| o.stdout).unwrap_or_default()
        );
    }
    start.elapsed()
}

/// `systemctl show -p ... unit` as `key=value` lines.
fn show(vm: &mut Vm, unit: &str, props: &str) -> String {
    vm.sh(&format!("systemctl show -p {props} {unit}")).stdout
}

/// The unit's journal (isctl's output and systemd's lines about it), since boot.
fn journal(vm: &mut Vm, unit: &str) -> String {
    vm.sh(&format!("journalctl --no-pager -b -o cat -u {unit}"))
        .stdout
}

#[test]
#[ignore = "needs QEMU + LIO kernel + the host's systemd: run via tests/run.sh"]
fn systemd_units_apply_at_boot_and_reapply_on_change() {
    // The static builds and the initramfs first, so that the times below are the VM's.
    harness::assets::assets().unwrap_or_else(|e| panic!("{e:#}"));
    let test_start = Instant::now();
    let mut opts = VmOptions::new("systemd");
    opts.share_host_root = true;
    opts.systemd_setup = Some(install_script());
    // systemd's boot under TCG is ~10x busybox's (about 60 s to the channel on the 2-core
    // machine, 2-3x that when other builds load it).
    opts.boot_timeout = opts.boot_timeout.max(Duration::from_secs(600));
    let mut vm = Vm::boot_with(opts).unwrap_or_else(|e| panic!("{e:#}"));
    let channel_up = vm.boot_time();
    let boot_start = Instant::now();

    // The boot: systemd reaches multi-user with nothing failed; the boot-time apply ran.
    let state = vm
        .run_timeout(
            "systemctl is-system-running --wait",
            Duration::from_secs(300),
        )
        .expect("asking systemd for the boot's outcome");
    let booted = channel_up + boot_start.elapsed();
    let failed = vm
        .sh("systemctl --failed --no-legend --plain --no-pager")
        .stdout;
    assert!(
        state.stdout.trim() == "running" && failed.trim().is_empty(),
        "systemd did not boot cleanly: {}\nfailed units:\n{failed}\n{}",
        state.stdout.trim(),
        vm.sh("journalctl --no-pager -b -p warning | tail -n 60")
            .stdout
    );
    let shown = show(
        &mut vm,
        "isctl.service",
        "ActiveState,SubState,Result,ExecMainStatus",
    );
    for want in [
        "ActiveState=active",
        "SubState=exited",
        "Result=success",
        "ExecMainStatus=0",
    ] {
        assert!(
            shown.contains(want),
            "isctl.service after boot: {want} expected\n{shown}"
        );
    }
    vm.sh(&has_target("boot"));
    let boot_log = journal(&mut vm, "isctl.service");
    println!("isctl.service at boot:\n{boot_log}");
    let shown = show(&mut vm, "isctl.path", "ActiveState,SubState");
    assert!(
        shown.contains("SubState=waiting"),
        "isctl.path after boot:\n{shown}"
    );

    // isctl.path: an editor's in-place write of a file in /etc/isctl re-applies through
    // isctl-apply.service, and so does the next change, git's unlink + create (the
    // service can start again; PathChanged= sees the directory's create).
    let mut path_runs = Vec::new();
    let path_changes: [(&str, &str); 2] = [
        ("an in-place edit", "edit1"),
        ("git's unlink + create", "edit2"),
    ];
    for (what, name) in path_changes {
        let model = format!("{}\n{}", target("boot", "Boot"), target(name, "Edited"));
        let write = format!("cat > /etc/isctl/boot.toml <<'EOF'\n{model}EOF");
        let script = if name == "edit1" {
            write
        } else {
            format!("rm /etc/isctl/boot.toml && {write}")
        };
        let t = Instant::now();
        vm.sh(&script);
        wait_until(
            &mut vm,
            &has_target(name),
            Duration::from_secs(60),
            &format!("isctl.path: {what}"),
            "isctl-apply.service",
        );
        path_runs.push(t.elapsed());
        // systemd drops path events while the service it starts is active (README says
        // so): the next edit comes once this apply has ended, as a person's would.
        wait_until(
            &mut vm,
            "[ \"$(systemctl show -P ActiveState isctl-apply.service)\" = inactive ]",
            Duration::from_secs(60),
            "isctl-apply.service ends after the apply",
            "isctl-apply.service",
        );
    }
    let apply_log = journal(&mut vm, "isctl-apply.service");
    let finished = apply_log.matches("Finished isctl-apply.service").count();
    assert!(
        finished >= 2,
        "isctl-apply.service should have run once per edit:\n{apply_log}"
    );
    let shown = show(&mut vm, "isctl-apply.service", "ActiveState,Result");
    assert!(
        shown.contains("ActiveState=inactive") && shown.contains("Result=success"),
        "isctl-apply.service after its runs:\n{shown}"
    );

    // isctl-watch.service takes over (it conflicts with the path unit and the one-shot).
    vm.sh("systemctl disable --now isctl.path isctl.service && systemctl enable --now isctl-watch.service");
    let shown = show(
        &mut vm,
        "isctl-watch.service",
        "ActiveState,SubState,StatusText",
    );
    assert!(
        shown.contains("ActiveState=active") && shown.contains("SubState=running"),
        "isctl-watch.service once started (Type=notify: only once ready):\n{shown}"
    );

    // An edit, git's unlink + create, a file in a new subdirectory: each re-applies.
    let mut model = format!("{}\n{}", target("boot", "Boot"), target("edit2", "Edited"));
    let mut watch_runs = Vec::new();
    let changes: [(&str, &str); 3] = [
        ("an in-place edit", "wedit"),
        ("git's unlink + create", "git"),
        ("a file in a new subdirectory", "sub"),
    ];
    for (what, name) in changes {
        let script = match name {
            "wedit" => {
                model.push_str(&format!("\n{}", target(name, "Watched")));
                format!("cat > /etc/isctl/boot.toml <<'EOF'\n{model}EOF")
            }
            "git" => {
                model.push_str(&format!("\n{}", target(name, "Checkout")));
                format!("rm /etc/isctl/boot.toml && cat > /etc/isctl/boot.toml <<'EOF'\n{model}EOF")
            }
            _ => format!(
                "mkdir -p /etc/isctl/hosts/a && cat > /etc/isctl/hosts/a/sub.toml <<'EOF'\n{}EOF",
                target(name, "Nested")
            ),
        };
        let t = Instant::now();
        vm.sh(&script);
        wait_until(
            &mut vm,
            &has_target(name),
            Duration::from_secs(60),
            &format!("isctl-watch: {what}"),
            "isctl-watch.service",
        );
        watch_runs.push(t.elapsed());
    }

    // A hand-made change behind isctl's back; `systemctl reload` (SIGHUP) repairs it at
    // once, long before the 60 s drift interval.
    let alias = format!("{CONFIGFS}/iscsi/{}/tpgt_1/param/TargetAlias", iqn("boot"));
    vm.sh(&format!(
        "echo Tampered > {alias} && grep -q Tampered {alias}"
    ));
    let t = Instant::now();
    vm.sh("systemctl reload isctl-watch.service");
    wait_until(
        &mut vm,
        &format!("grep -qx Boot {alias}"),
        Duration::from_secs(30),
        "systemctl reload re-applies",
        "isctl-watch.service",
    );
    let reload_took = t.elapsed();
    let status = vm.sh("isctl status /etc/isctl").stdout;
    assert!(
        status.contains("watch"),
        "isctl status should show watch's last apply:\n{status}"
    );

    // `systemctl stop`: SIGTERM, exit 0, the unit ends inactive and not failed.
    vm.sh("systemctl stop isctl-watch.service");
    let shown = show(
        &mut vm,
        "isctl-watch.service",
        "ActiveState,Result,ExecMainStatus,ExecMainCode",
    );
    for want in ["ActiveState=inactive", "Result=success", "ExecMainStatus=0"] {
        assert!(
            shown.contains(want),
            "isctl-watch.service after stop: {want} expected\n{shown}"
        );
    }
    let watch_log = journal(&mut vm, "isctl-watch.service");
    println!("isctl-watch.service:\n{watch_log}");
    assert!(
        watch_log.contains("SIGHUP") && watch_log.contains("stopping"),
        "the watch journal should show the reload and the stop:\n{watch_log}"
    );
    // Everything the model named is still there: stopping the watcher changes nothing.
    for name in ["boot", "edit2", "wedit", "git", "sub"] {
        vm.sh(&has_target(name));
    }

    println!(
        "systemd VM: channel up after {:.1}s, system running after {:.1}s; isctl.path edits applied in {:?}; \
         isctl-watch changes applied in {:?}; reload repaired in {:.2}s; whole test {:.1}s",
        channel_up.as_secs_f64(),
        booted.as_secs_f64(),
        path_runs,
        watch_runs,
        reload_took.as_secs_f64(),
        test_start.elapsed().as_secs_f64()
    );
}
