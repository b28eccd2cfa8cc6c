//! Real-kernel test of issue 10's LIO side: `isctl sessions`, `isctl stats` and
//! `isctl exporter` run in the VM against the kernel's LIO while real initiators on
//! the host are logged in and doing I/O (docs/monitoring.md, docs/testing-lio-vm.md).
//!
//! One VM: `isctl watch` applies `tests/lio-vm/models/observe.toml` (a CHAP target
//! admitting an initiator group with a comment, and an open demo-mode target) and
//! records its model in `watch.json`; the harness's initiator holds a CHAP session and a
//! demo-mode session, fails one CHAP login on purpose; QEMU (`qemu-img bench`, iscsi
//! driver) writes then reads exactly 16 MiB through the CHAP target. Then isctl's
//! records, counters and `/metrics` (parsed by python3-prometheus-client on the host)
//! are checked against what happened, against the kernel's own configfs files, and
//! against each other; no CHAP secret appears anywhere. Last, a 2-second
//! `stats --watch` during an `iscsi-perf` run gives the rate iscsi-perf saw (±10%).

mod common;

#[path = "lio_vm/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use common::iscsi_perf::iscsi_perf_iops;
use common::prometheus::{parse_metrics, sample};
use harness::holder::{LoginSpec, SessionHolder};
use harness::isctl::{isctl, isctl_cmd, STATE_DIR};
use harness::{run_host, CmdOutput, Vm, VmOptions, CONFIGFS};
use serde_json::Value;

const BASENAME: &str = "iqn.2026-11.io.isctl.test";
const HOST1: &str = "iqn.2026-11.io.isctl.test:host1";
const VISITOR: &str = "iqn.2026-11.io.isctl.test:visitor";
const CHAP_USER: &str = "obsuser";
const CHAP_SECRET: &str = "obsSecretX4711";
const WRONG_SECRET: &str = "wrongSecret4711";
const MIB: u64 = 1 << 20;
/// `qemu-img bench -c 256 -s 64k`: 256 commands of 64 KiB, 16 MiB each way.
const BENCH_COMMANDS: u64 = 256;
const BENCH_BYTES: u64 = 16 * MIB;
const EXPORTER: &str = "http://127.0.0.1:9287";

fn json_of(out: &CmdOutput, what: &str) -> Value {
    assert!(out.success(), "{what} failed\n{out}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{what}: not JSON ({e})\n{out}"))
}

/// `isctl -o json ARGS` in the VM, parsed.
fn isctl_json(vm: &mut Vm, args: &str) -> Value {
    let out = isctl(vm, &format!("-o json {args}"));
    json_of(&out, &format!("isctl -o json {args}"))
}

/// One target's entry of `isctl stats -o json`.
fn target_stats<'a>(stats: &'a Value, target: &str) -> &'a Value {
    stats["targets"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["target"] == target))
        .unwrap_or_else(|| panic!("no target {target} in stats {stats:#}"))
}

/// A LUN's (`key` = "lun") or an initiator's (`key` = "initiator") row.
fn row<'a>(t: &'a Value, list: &str, key: &str, value: &Value) -> &'a Value {
    t[list]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| &r[key] == value))
        .unwrap_or_else(|| panic!("no {list} row {key}={value} in {t:#}"))
}

fn num(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not a number in {v:#}"))
}

/// `qemu-img bench` through QEMU's iscsi driver, logged in as HOST1 with CHAP.
fn qemu_bench(port: u16, target: &str, write: bool) {
    let image = format!(
        "driver=iscsi,transport=tcp,portal=127.0.0.1:{port},target={target},lun=0,initiator-name={HOST1},user={CHAP_USER},password={CHAP_SECRET}"
    );
    let count = BENCH_COMMANDS.to_string();
    let mut args = vec![
        "bench",
        "--image-opts",
        "-c",
        &count,
        "-s",
        "64k",
        "-d",
        "8",
    ];
    if write {
        args.push("-w");
    }
    args.push(&image);
    let out = run_host("qemu-img", &args, &[], Duration::from_secs(300))
        .expect("running qemu-img (qemu-utils, qemu-block-extra)");
    out.expect_success(if write {
        "qemu-img bench -w (16 MiB written)"
    } else {
        "qemu-img bench (16 MiB read)"
    });
    eprintln!(
        "qemu-img bench {}: {:.1} s",
        if write { "write" } else { "read" },
        out.elapsed.as_secs_f64()
    );
}

/// `wget -O - URL` in the VM (busybox), the body.
fn http_get(vm: &mut Vm, path: &str) -> String {
    vm.sh(&format!("wget -q -O - '{EXPORTER}{path}'")).stdout
}

#[test]
#[ignore = "needs QEMU + LIO kernel, qemu-utils, python3-prometheus-client: run via tests/run.sh"]
fn sessions_stats_and_exporter_show_real_lio_sessions_and_io() {
    let started = Instant::now();
    let model_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lio-vm/models/observe.toml");
    let model_text = std::fs::read(&model_path).expect("reading observe.toml");
    let model = isctl::model::load(&model_path)
        .unwrap_or_else(|e| panic!("observe.toml is invalid:\n{e}"))
        .model;
    let tag = model.portals["lab"].tag;
    let chap = format!("{BASENAME}:chap");
    let open = format!("{BASENAME}:open");

    let mut vm = Vm::boot_with(VmOptions::new("observe")).unwrap_or_else(|e| panic!("{e:#}"));
    let guest_model = vm
        .put_file("observe.toml", &model_text)
        .expect("writing the model into the share");
    // A model that does not load, for the --model error.
    vm.put_file(
        "broken.toml",
        b"[extent.x]\ntype = \"ramdisk\"\nsize = \"lots\"\n",
    )
    .expect("writing broken.toml");

    // `isctl watch` applies the model and records it in watch.json: sessions and the
    // exporter take the model from there when no --model is given.
    vm.sh(&format!(
        "mkdir -p {STATE_DIR}; ({}) </dev/null >/tmp/watch.log 2>&1 &
         for i in $(seq 1 300); do
           grep -q '\"outcome\": *\"applied\"' {STATE_DIR}/watch.json 2>/dev/null && exit 0
           sleep 0.2
         done
         cat /tmp/watch.log; exit 1",
        isctl_cmd(&format!("watch {guest_model} --debounce 0"))
    ));

    let stats_before = isctl_json(&mut vm, "stats");
    let addr = format!("127.0.0.1:{}", vm.port());

    // The harness's initiator: `secret` None logs in without CHAP.
    let login = |initiator: &str, target: &str, secret: Option<&str>| {
        SessionHolder::login(
            &addr,
            &LoginSpec {
                initiator: initiator.into(),
                target: target.into(),
                chap: secret.map(|s| (CHAP_USER.into(), s.into())),
                mutual: None,
            },
        )
    };
    // Sessions held for the whole test: CHAP as HOST1, and a stranger in demo mode.
    let held = login(HOST1, &chap, Some(CHAP_SECRET))
        .unwrap_or_else(|e| panic!("CHAP login as {HOST1}: {e:#}"));
    let visitor = login(VISITOR, &open, None)
        .unwrap_or_else(|e| panic!("demo-mode login as {VISITOR}: {e:#}"));
    // One login with a wrong CHAP secret: LIO's authenticate_fails counts it.
    let refused = login(HOST1, &chap, Some(WRONG_SECRET))
        .err()
        .expect("a login with a wrong CHAP secret must fail");
    assert!(
        format!("{refused:#}").contains("authentication failure"),
        "{refused:#}"
    );

    // Real I/O: exactly 16 MiB written, then 16 MiB read, 256 commands each way.
    qemu_bench(vm.port(), &chap, true);
    qemu_bench(vm.port(), &chap, false);
    // LIO ends a logged-out session asynchronously; until it has, the ACL's `info`
    // still shows QEMU's session rather than the held one.
    vm.sh(&format!(
        "f={CONFIGFS}/iscsi/{chap}/fabric_statistics/iscsi_instance/sessions
         for i in $(seq 1 100); do [ \"$(cat $f)\" = 1 ] && exit 0; sleep 0.1; done
         cat $f; exit 1"
    ));

    // ---- sessions ------------------------------------------------------------------
    let all = isctl_json(&mut vm, "sessions");
    let explicit = isctl_json(&mut vm, "sessions --model observe.toml");
    assert_eq!(
        all, explicit,
        "the watcher's model (watch.json) and --model name the sessions alike"
    );
    assert_eq!(all["num_records"], 2, "{all:#}");
    let records = all["records"].as_array().unwrap();
    let acl = records
        .iter()
        .find(|r| r["target"] == chap.as_str())
        .unwrap_or_else(|| panic!("no session on {chap}: {all:#}"));
    let isid = held
        .isid
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    assert_eq!(acl["initiator"]["name"], HOST1);
    assert_eq!(acl["initiator"]["comment"], "lab hypervisors");
    assert_eq!(
        acl["isid"],
        isid.as_str(),
        "ONTAP's colon form of the held ISID"
    );
    assert_eq!(acl["tsih"], held.tsih);
    assert_eq!(acl["target_portal_group"], "lab");
    assert_eq!(acl["target_portal_group_tag"], tag);
    assert_eq!(acl["igroups"], serde_json::json!([{"name": "hypervisors"}]));
    assert_eq!(acl["type"], "normal");
    assert_eq!(acl["admitted_by"], "acl");
    assert_eq!(acl["state"], "TARG_SESS_STATE_LOGGED_IN");
    assert!(acl["lio_session_id"].as_u64().is_some(), "{acl:#}");
    let conn = &acl["connections"][0];
    assert_eq!(conn["cid"], 0);
    assert_eq!(conn["initiator_address"]["address"], "10.0.2.2");
    assert_eq!(conn["authentication_type"], "chap");
    assert_eq!(conn["transport"], "TCP");
    // LIO's ACL `param/` holds only the session-wide keys (iscsi_target_configfs.c's
    // ISCSI_NACL_PARAM list); digests, MaxRecvDataSegmentLength, the initiator's port
    // and the target-side address are nowhere in configfs, so they are absent.
    for absent in [
        "header_digest",
        "data_digest",
        "max_recv_data_segment_length",
        "interface",
    ] {
        assert!(conn.get(absent).is_none(), "{absent} in {acl:#}");
    }
    assert!(conn["initiator_address"].get("port").is_none(), "{acl:#}");
    // What the harness's initiator offered (holder.rs) and LIO's defaults agree on.
    assert_eq!(
        acl["parameters"],
        serde_json::json!({
            "max_connections": 1,
            "initial_r2t": true,
            "immediate_data": true,
            "max_burst_length": 262144,
            "first_burst_length": 65536,
        }),
        "negotiated parameters from the ACL's param/"
    );
    let demo = records
        .iter()
        .find(|r| r["target"] == open.as_str())
        .unwrap_or_else(|| panic!("no session on {open}: {all:#}"));
    assert_eq!(demo["initiator"]["name"], VISITOR);
    assert_eq!(demo["admitted_by"], "demo_mode");
    assert_eq!(demo["target_portal_group"], "lab");
    assert_eq!(demo["target_portal_group_tag"], tag);
    for absent in ["isid", "tsih", "igroups", "parameters"] {
        assert!(
            demo.get(absent).is_none(),
            "LIO shows no {absent} for a demo-mode session: {demo:#}"
        );
    }
    assert!(demo.get("initiator").unwrap().get("comment").is_none());

    // ONTAP's query language on real sessions.
    let count = isctl_json(
        &mut vm,
        "sessions connections.authentication_type=chap --return-records false",
    );
    assert_eq!(count, serde_json::json!({"num_records": 1}));
    let demo_only = isctl_json(
        &mut vm,
        "sessions admitted_by=demo_mode --fields initiator.name",
    );
    assert_eq!(demo_only["num_records"], 1);
    assert_eq!(demo_only["records"][0]["initiator"]["name"], VISITOR);
    assert!(demo_only["records"][0].get("connections").is_none());
    let ordered = isctl_json(
        &mut vm,
        "sessions --order-by 'initiator.name desc' --fields initiator.name",
    );
    let names: Vec<&str> = ordered["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["initiator"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [VISITOR, HOST1], "{ordered:#}");
    let none = isctl_json(&mut vm, "sessions 'igroups.name=!hypervisors' tsih=!null");
    assert_eq!(none["num_records"], 0, "{none:#}");
    let text = isctl(&mut vm, "sessions");
    assert!(
        text.success() && text.stdout.contains(HOST1) && text.stdout.contains(&isid),
        "{text}"
    );
    // A model that does not load is an error naming the file, not a silent omission.
    let bad = isctl(&mut vm, "sessions --model broken.toml");
    assert!(!bad.success(), "{bad}");
    assert!(bad.stderr.contains("broken.toml:"), "{bad}");

    // ---- stats ---------------------------------------------------------------------
    let stats = isctl_json(&mut vm, "stats");
    assert_eq!(stats["backend"], "lio");
    let (t0, t1) = (
        target_stats(&stats_before, &chap),
        target_stats(&stats, &chap),
    );
    let lun0 = serde_json::json!(0);
    let initiator = serde_json::json!(HOST1);
    let (l0, l1) = (row(t0, "luns", "lun", &lun0), row(t1, "luns", "lun", &lun0));
    let (i0, i1) = (
        row(t0, "initiators", "initiator", &initiator),
        row(t1, "initiators", "initiator", &initiator),
    );
    for (what, before, after) in [("LUN 0", l0, l1), ("initiator", i0, i1)] {
        let d = |f: &str| num(after, f) - num(before, f);
        assert_eq!(
            d("written_bytes"),
            BENCH_BYTES,
            "{what}: exactly what qemu-img wrote (MiB granularity)\n{after:#}"
        );
        // The reads plus the initiators' small reads at login (INQUIRY, READ
        // CAPACITY...), which may carry the MiB counter over once.
        assert!(
            (BENCH_BYTES..=BENCH_BYTES + MIB).contains(&d("read_bytes")),
            "{what}: read {} bytes\n{after:#}",
            d("read_bytes")
        );
        assert!(
            d("commands") >= 2 * BENCH_COMMANDS,
            "{what}: {} commands\n{after:#}",
            d("commands")
        );
        assert_eq!(after["bytes_in_mib"], true, "{what}: {after:#}");
    }
    let d_login = |f: &str| num(&t1["logins"], f) - num(&t0["logins"], f);
    assert_eq!(d_login("authentication_failed"), 1, "{t1:#}");
    // LIO also counts every failed login of a new session as a negotiation failure
    // (iscsi_target_login.c, iscsi_target_login_sess_out): the kernel's numbers as kept.
    assert_eq!(d_login("negotiation_failed"), 1, "{t1:#}");
    assert!(
        d_login("accepted") >= 3,
        "holder + two qemu-img logins: {t1:#}"
    );
    assert_eq!(num(t1, "sessions"), 1, "the held CHAP session: {t1:#}");
    assert_eq!(num(target_stats(&stats, &open), "sessions"), 1);

    // The same numbers straight from the kernel's files (names as target_core_stat.c
    // and iscsi_target_stat.c spell them): a wrong name would fail the `cat`.
    let tpg = format!("{CONFIGFS}/iscsi/{chap}/tpgt_{tag}");
    let raw = vm.sh(&format!(
        "cd {tpg} && cat lun/lun_0/statistics/scsi_tgt_port/in_cmds \
         lun/lun_0/statistics/scsi_tgt_port/read_mbytes \
         lun/lun_0/statistics/scsi_tgt_port/write_mbytes \
         acls/{HOST1}/lun_0/statistics/scsi_auth_intr/num_cmds \
         acls/{HOST1}/lun_0/statistics/scsi_auth_intr/read_mbytes \
         acls/{HOST1}/lun_0/statistics/scsi_auth_intr/write_mbytes \
         ../fabric_statistics/iscsi_login_stats/authenticate_fails \
         ../fabric_statistics/iscsi_login_stats/accepts \
         ../fabric_statistics/iscsi_instance/sessions"
    ));
    let kernel: Vec<u64> = raw
        .stdout
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let isctl_view = [
        num(l1, "commands"),
        num(l1, "read_bytes") / MIB,
        num(l1, "written_bytes") / MIB,
        num(i1, "commands"),
        num(i1, "read_bytes") / MIB,
        num(i1, "written_bytes") / MIB,
        num(&t1["logins"], "authentication_failed"),
        num(&t1["logins"], "accepted"),
        num(t1, "sessions"),
    ];
    assert_eq!(kernel, isctl_view, "configfs vs isctl stats\n{raw}");

    // ---- exporter ------------------------------------------------------------------
    vm.sh(&format!(
        "({}) </dev/null >/tmp/exporter.log 2>&1 &
         for i in $(seq 1 100); do wget -q -O /dev/null {EXPORTER}/metrics && exit 0; sleep 0.2; done
         cat /tmp/exporter.log; exit 1",
        isctl_cmd("exporter")
    ));
    let metrics_text = http_get(&mut vm, "/metrics");
    let metrics = parse_metrics(&metrics_text);
    let lun_labels = format!(r#"{{"lun": "0", "target": "{chap}"}}"#);
    let init_labels = format!(r#"{{"initiator": "{HOST1}", "target": "{chap}"}}"#);
    for (name, labels, want) in [
        ("isctl_lun_commands_total", &lun_labels, num(l1, "commands")),
        (
            "isctl_lun_read_bytes_total",
            &lun_labels,
            num(l1, "read_bytes"),
        ),
        (
            "isctl_lun_written_bytes_total",
            &lun_labels,
            num(l1, "written_bytes"),
        ),
        (
            "isctl_initiator_commands_total",
            &init_labels,
            num(i1, "commands"),
        ),
        (
            "isctl_initiator_read_bytes_total",
            &init_labels,
            num(i1, "read_bytes"),
        ),
        (
            "isctl_initiator_written_bytes_total",
            &init_labels,
            num(i1, "written_bytes"),
        ),
    ] {
        assert_eq!(
            sample(&metrics, name, labels),
            want as f64,
            "{name}{labels}: /metrics vs stats (nothing ran in between)"
        );
    }
    for (result, field) in [
        ("accepted", "accepted"),
        ("authentication", "authentication_failed"),
        ("negotiation", "negotiation_failed"),
    ] {
        let labels = format!(r#"{{"result": "{result}", "target": "{chap}"}}"#);
        assert_eq!(
            sample(&metrics, "isctl_logins_total", &labels),
            num(&t1["logins"], field) as f64,
            "logins {result}: /metrics vs stats"
        );
    }
    let info = format!(
        r#"{{"authentication": "chap", "initiator": "{HOST1}", "isid": "{isid}", "target": "{chap}", "tsih": "{}"}}"#,
        held.tsih
    );
    assert_eq!(sample(&metrics, "isctl_session_info", &info), 1.0);
    assert_eq!(
        sample(
            &metrics,
            "isctl_sessions",
            &format!(r#"{{"target": "{chap}"}}"#)
        ),
        1.0
    );
    let watch_ok = sample(&metrics, "isctl_watch_last_apply_success", "{}");
    assert_eq!(watch_ok, 1.0, "the watcher's last apply");

    let api = "/api/protocols/san/iscsi/sessions";
    let count: Value = serde_json::from_str(&http_get(
        &mut vm,
        &format!("{api}?fields=initiator.name,igroups.name&return_records=false"),
    ))
    .unwrap();
    assert_eq!(count, serde_json::json!({"num_records": 2}));
    let named: Value = serde_json::from_str(&http_get(
        &mut vm,
        &format!("{api}?igroups.name=hyper*&fields=initiator.comment,isid"),
    ))
    .unwrap();
    assert_eq!(named["num_records"], 1, "{named:#}");
    let r = &named["records"][0];
    assert_eq!(r["initiator"]["comment"], "lab hypervisors", "{named:#}");
    assert_eq!(r["isid"], isid.as_str());
    assert_eq!(r["target_portal_group"], "lab", "ONTAP's key fields");

    // ---- no secret anywhere ----------------------------------------------------------
    let logs = vm.sh("cat /tmp/exporter.log /tmp/watch.log").stdout;
    for (what, text) in [
        ("sessions", all.to_string()),
        ("sessions text", text.stdout.clone()),
        ("stats", stats.to_string()),
        ("/metrics", metrics_text.clone()),
        ("sessions API", named.to_string()),
        ("exporter and watch logs", logs),
    ] {
        for secret in [CHAP_SECRET, WRONG_SECRET] {
            assert!(
                !text.contains(secret),
                "{what} shows a CHAP secret:\n{text}"
            );
        }
    }

    // ---- stats --watch 2 during iscsi-perf ----------------------------------------------
    // The LUN's command rate over isctl's 2-second window against iscsi-perf's own
    // per-second figures over the same window (the open target: iscsi-perf logs in
    // without CHAP under its own name, admitted by demo mode).
    let perf_secs = 8.0;
    let perf_started = Instant::now();
    let perf = std::process::Command::new(
        harness::require_tool("iscsi-perf").unwrap_or_else(|e| panic!("{e:#}")),
    )
    .args([
        "-t",
        &format!("{perf_secs}"),
        "-m",
        "4",
        "-x",
        "0",
        &format!("iscsi://127.0.0.1:{}/{open}/0", vm.port()),
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("starting iscsi-perf");
    std::thread::sleep(Duration::from_secs(3)); // past its login and first second
    let watch = isctl(&mut vm, "-o json stats --watch 2 --count 1");
    let window_end = perf_started.elapsed().as_secs_f64();
    assert!(watch.success(), "{watch}");
    let second: Value = serde_json::from_str(watch.stdout.lines().nth(1).expect("two samples"))
        .unwrap_or_else(|e| panic!("{e}\n{watch}"));
    let rate = second["rates"]
        .as_array()
        .and_then(|rs| {
            rs.iter()
                .find(|r| r["target"] == open.as_str() && r["row"] == "lun 0")
        })
        .and_then(|r| r["commands_per_s"].as_f64())
        .unwrap_or_else(|| panic!("no lun 0 rate for {open}: {second:#}"));
    let out = perf.wait_with_output().expect("waiting for iscsi-perf");
    let perf_text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "iscsi-perf: {perf_text}");
    let iops = iscsi_perf_iops(&perf_text, perf_secs, window_end - 2.0, window_end);
    let ratio = rate / iops;
    eprintln!(
        "LIO stats --watch 2: {rate:.0} commands/s; iscsi-perf: {iops:.0} IOPS; ratio {ratio:.3}"
    );
    assert!(
        (0.9..=1.1).contains(&ratio),
        "stats --watch rate {rate:.0}/s vs iscsi-perf {iops:.0} IOPS (ratio {ratio:.3})\n{perf_text}"
    );

    drop(visitor);
    drop(held);
    eprintln!(
        "lio_vm_observe: VM boot {:.1} s, whole test {:.1} s",
        vm.boot_time().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
