//! LIO's counters, read from configfs (the kernel's `target_core_stat.c` and
//! `iscsi_target_stat.c`), in the shape of [`Statistics`]:
//!
//! | isctl | configfs (under `$C/iscsi/<target>/`) |
//! | --- | --- |
//! | sessions | `fabric_statistics/iscsi_instance/sessions` |
//! | logins | `fabric_statistics/iscsi_login_stats/{accepts, authenticate_fails, authorize_fails, negotiate_fails, redirects, other_fails}` |
//! | errors | `fabric_statistics/iscsi_sess_err/{digest_errors, cxn_errors, format_errors}` |
//! | per LUN | `tpgt_N/lun/lun_M/statistics/scsi_tgt_port/{in_cmds, read_mbytes, write_mbytes}` (bytes in whole MiB) |
//! | per initiator | `tpgt_N/acls/<I>/fabric_statistics/iscsi_sess_stats/{cmd_pdus, txdata_octs, rxdata_octs}` |
//!
//! What LIO cannot show (docs/monitoring.md): latency; per-LUN bytes finer than
//! a MiB; per-initiator counters of demo-mode (ACL-less) sessions; per-initiator
//! counters beyond the ACL's current session (they restart at each login).
//! `read` means data sent to the initiator (`txdata_octs`, `read_mbytes`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use crate::observe::stats::{ErrorCounters, IoStats, LoginCounters, Statistics, TargetStats};

fn read_u64(p: &Path) -> u64 {
    std::fs::read_to_string(p)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn dirs(p: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Every iSCSI target's counters under the configfs root `root`
/// (`/sys/kernel/config/target`). A missing file reads as 0; a missing fabric
/// (no `iscsi/`) gives no targets.
pub fn read(root: &Path) -> Statistics {
    let iscsi = root.join("iscsi");
    let mut targets = Vec::new();
    for name in dirs(&iscsi) {
        if !name.contains('.') && !name.contains(':') {
            continue; // discovery_auth and other non-target groups
        }
        let t = iscsi.join(&name);
        let fs = t.join("fabric_statistics");
        let login = fs.join("iscsi_login_stats");
        let err = fs.join("iscsi_sess_err");
        let mut ts = TargetStats {
            target: name.clone(),
            sessions: read_u64(&fs.join("iscsi_instance/sessions")),
            logins: LoginCounters {
                accepted: read_u64(&login.join("accepts")),
                authentication_failed: read_u64(&login.join("authenticate_fails")),
                authorization_failed: read_u64(&login.join("authorize_fails")),
                negotiation_failed: read_u64(&login.join("negotiate_fails")),
                redirected: read_u64(&login.join("redirects")),
                other_failed: read_u64(&login.join("other_fails")),
            },
            errors: ErrorCounters {
                digest: read_u64(&err.join("digest_errors")),
                connection: read_u64(&err.join("cxn_errors")),
                format: read_u64(&err.join("format_errors")),
            },
            ..TargetStats::default()
        };
        let mut luns: BTreeMap<u64, IoStats> = BTreeMap::new();
        let mut initiators: BTreeMap<String, IoStats> = BTreeMap::new();
        for tpg in dirs(&t).into_iter().filter(|d| d.starts_with("tpgt_")) {
            let tpg = t.join(tpg);
            for lun in dirs(&tpg.join("lun")) {
                let Some(n) = lun.strip_prefix("lun_").and_then(|n| n.parse().ok()) else {
                    continue;
                };
                let port = tpg.join("lun").join(&lun).join("statistics/scsi_tgt_port");
                let row = luns.entry(n).or_insert_with(|| IoStats {
                    lun: Some(n),
                    bytes_in_mib: true,
                    ..IoStats::default()
                });
                row.commands += read_u64(&port.join("in_cmds"));
                row.read_bytes += read_u64(&port.join("read_mbytes")) << 20;
                row.written_bytes += read_u64(&port.join("write_mbytes")) << 20;
            }
            for acl in dirs(&tpg.join("acls")) {
                let st = tpg
                    .join("acls")
                    .join(&acl)
                    .join("fabric_statistics/iscsi_sess_stats");
                let row = initiators.entry(acl.clone()).or_insert_with(|| IoStats {
                    initiator: Some(acl.clone()),
                    ..IoStats::default()
                });
                row.commands += read_u64(&st.join("cmd_pdus"));
                row.read_bytes += read_u64(&st.join("txdata_octs"));
                row.written_bytes += read_u64(&st.join("rxdata_octs"));
            }
        }
        ts.luns = luns.into_values().collect();
        ts.initiators = initiators.into_values().collect();
        targets.push(ts);
    }
    Statistics {
        backend: "lio".into(),
        taken_unix_ms: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        targets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, v: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, v).unwrap();
    }

    #[test]
    fn reads_the_kernels_files_into_statistics() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let t = "iscsi/iqn.2026-11.io.isctl:t";
        std::fs::create_dir_all(r.join("iscsi/discovery_auth")).unwrap();
        write(
            r,
            &format!("{t}/fabric_statistics/iscsi_instance/sessions"),
            "1\n",
        );
        write(
            r,
            &format!("{t}/fabric_statistics/iscsi_login_stats/accepts"),
            "3\n",
        );
        write(
            r,
            &format!("{t}/fabric_statistics/iscsi_login_stats/authenticate_fails"),
            "2\n",
        );
        write(
            r,
            &format!("{t}/fabric_statistics/iscsi_sess_err/digest_errors"),
            "4\n",
        );
        write(
            r,
            &format!("{t}/tpgt_1/lun/lun_0/statistics/scsi_tgt_port/in_cmds"),
            "100\n",
        );
        write(
            r,
            &format!("{t}/tpgt_1/lun/lun_0/statistics/scsi_tgt_port/read_mbytes"),
            "2\n",
        );
        let acl =
            format!("{t}/tpgt_1/acls/iqn.1994-05.com.redhat:h/fabric_statistics/iscsi_sess_stats");
        write(r, &format!("{acl}/cmd_pdus"), "90\n");
        write(r, &format!("{acl}/txdata_octs"), "2097152\n");
        write(r, &format!("{acl}/rxdata_octs"), "512\n");
        let s = read(r);
        assert_eq!(s.targets.len(), 1, "discovery_auth is not a target");
        let ts = &s.targets[0];
        assert_eq!(ts.sessions, 1);
        assert_eq!(
            (ts.logins.accepted, ts.logins.authentication_failed),
            (3, 2)
        );
        assert_eq!(ts.errors.digest, 4);
        assert_eq!(ts.luns[0].commands, 100);
        assert_eq!(ts.luns[0].read_bytes, 2 << 20);
        assert!(ts.luns[0].bytes_in_mib);
        assert_eq!(ts.initiators[0].read_bytes, 2097152);
        assert_eq!(ts.initiators[0].written_bytes, 512);
    }
}
