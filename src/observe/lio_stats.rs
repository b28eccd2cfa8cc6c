//! LIO's counters, read from configfs (the kernel's `target_core_stat.c` and
//! `iscsi_target_stat.c` name the files), in the shape of [`Statistics`]:
//!
//! | isctl | configfs (under `$C/iscsi/<target>/`) |
//! | --- | --- |
//! | sessions | `fabric_statistics/iscsi_instance/sessions` |
//! | logins | `fabric_statistics/iscsi_login_stats/{accepts, authenticate_fails, authorize_fails, negotiate_fails, redirects, other_fails}` |
//! | errors | `fabric_statistics/iscsi_sess_err/{digest_errors, cxn_errors, format_errors}` |
//! | per LUN | `tpgt_N/lun/lun_M/statistics/scsi_tgt_port/{in_cmds, read_mbytes, write_mbytes}` |
//! | per initiator | the sum over its mapped LUNs of `tpgt_N/acls/<I>/lun_M/statistics/scsi_auth_intr/{num_cmds, read_mbytes, write_mbytes}` |
//!
//! Units: `*_mbytes` are whole MiB (the kernel shifts its byte counters right by
//! 20), so bytes here are MiB × 2^20 and rows say `bytes_in_mib`. `read` means data
//! sent to the initiator (`scsi_tgt_port/read_mbytes` is the LUN's `tx_data_octets`,
//! `scsi_auth_intr/read_mbytes` the mapping's `read_bytes`, counted when a command
//! with Data-In is looked up).
//!
//! Why `scsi_auth_intr` for initiators, not the ACL's
//! `fabric_statistics/iscsi_sess_stats` (`cmd_pdus`, `txdata_octs`, exact bytes):
//! `iscsi_sess_stats` reads the ACL's *current* session only (`nacl_sess`), so the
//! I/O of a session that logged out vanishes from it, and with two sessions of one
//! initiator it shows one of them; `scsi_auth_intr` counts every command of every
//! session through that mapping for as long as the mapping exists.
//!
//! What LIO cannot show (docs/monitoring.md): latency; bytes finer than a MiB;
//! per-initiator counters of demo-mode (ACL-less) sessions.

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
                let row = initiators.entry(acl.clone()).or_insert_with(|| IoStats {
                    initiator: Some(acl.clone()),
                    bytes_in_mib: true,
                    ..IoStats::default()
                });
                let acl_dir = tpg.join("acls").join(&acl);
                for mapped in dirs(&acl_dir).into_iter().filter(|d| d.starts_with("lun_")) {
                    let st = acl_dir.join(mapped).join("statistics/scsi_auth_intr");
                    row.commands += read_u64(&st.join("num_cmds"));
                    row.read_bytes += read_u64(&st.join("read_mbytes")) << 20;
                    row.written_bytes += read_u64(&st.join("write_mbytes")) << 20;
                }
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
        let acl = format!("{t}/tpgt_1/acls/iqn.1994-05.com.redhat:h");
        for (lun, cmds, read_mib, write_mib) in
            [(0, "90\n", "2\n", "0\n"), (1, "10\n", "1\n", "5\n")]
        {
            let st = format!("{acl}/lun_{lun}/statistics/scsi_auth_intr");
            write(r, &format!("{st}/num_cmds"), cmds);
            write(r, &format!("{st}/read_mbytes"), read_mib);
            write(r, &format!("{st}/write_mbytes"), write_mib);
        }
        // The current session's counters are not what isctl reports (see the module doc).
        write(
            r,
            &format!("{acl}/fabric_statistics/iscsi_sess_stats/cmd_pdus"),
            "7\n",
        );
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
        let i = &ts.initiators[0];
        assert_eq!(i.initiator.as_deref(), Some("iqn.1994-05.com.redhat:h"));
        assert_eq!(i.commands, 100, "summed over the mapped LUNs");
        assert_eq!(i.read_bytes, 3 << 20);
        assert_eq!(i.written_bytes, 5 << 20);
        assert!(i.bytes_in_mib);
    }
}
