//! I/O and login statistics in one shape for both backends: what `isctl stats`
//! prints, what the engine answers over its control socket, what the exporter
//! turns into Prometheus metrics. Pure: the types, the rates between two samples
//! and the text rendering; reading them is the backends' job (`engine::stats`,
//! `observe::lio_stats`).
//!
//! Counters only grow while their object lives (LIO's start again when a LUN or an
//! ACL's mapped LUN is re-created; the engine's start with the process).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One sample of every target's counters.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Statistics {
    /// `lio` or `userspace`.
    pub backend: String,
    /// When the sample was taken, in milliseconds since the Unix epoch.
    pub taken_unix_ms: u64,
    pub targets: Vec<TargetStats>,
}

/// One target's counters.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TargetStats {
    pub target: String,
    /// Logged-in sessions now.
    pub sessions: u64,
    pub logins: LoginCounters,
    pub errors: ErrorCounters,
    /// Per LUN (the target's LUN number).
    pub luns: Vec<IoStats>,
    /// Per initiator name.
    pub initiators: Vec<IoStats>,
}

/// Login outcomes, classified as LIO's `iscsi_login_stats` does
/// (`iscsit_collect_login_stats`): by the Login Response's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LoginCounters {
    pub accepted: u64,
    /// Status 0x0201.
    pub authentication_failed: u64,
    /// Status 0x0202.
    pub authorization_failed: u64,
    /// Status 0x0200 (initiator error during negotiation).
    pub negotiation_failed: u64,
    /// Status class 0x01.
    pub redirected: u64,
    /// Any other failure status.
    pub other_failed: u64,
}

impl LoginCounters {
    /// The counter a Login Response status belongs to.
    pub fn count(&mut self, status: u16) {
        match status {
            0x0000 => self.accepted += 1,
            0x0201 => self.authentication_failed += 1,
            0x0202 => self.authorization_failed += 1,
            0x0200 => self.negotiation_failed += 1,
            s if s >> 8 == 0x01 => self.redirected += 1,
            _ => self.other_failed += 1,
        }
    }

    pub fn failed(&self) -> u64 {
        self.authentication_failed
            + self.authorization_failed
            + self.negotiation_failed
            + self.redirected
            + self.other_failed
    }
}

/// Session errors (LIO's `iscsi_sess_err`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ErrorCounters {
    /// Header or data digest mismatches.
    pub digest: u64,
    /// Connections ended by a timeout (unanswered ping, stalled PDU).
    pub connection: u64,
    /// PDUs that broke the protocol.
    pub format: u64,
}

/// Commands and bytes of one LUN or one initiator.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct IoStats {
    /// Set for per-LUN rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lun: Option<u64>,
    /// Set for per-initiator rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator: Option<String>,
    pub commands: u64,
    /// Bytes sent to initiators (Data-In).
    pub read_bytes: u64,
    /// Bytes received from initiators (Data-Out and immediate data).
    pub written_bytes: u64,
    /// Bytes are counted in whole MiB by this source (LIO's `scsi_tgt_port` and
    /// `scsi_auth_intr` `*_mbytes` files).
    #[serde(default, skip_serializing_if = "is_false")]
    pub bytes_in_mib: bool,
    /// Command latency (the engine only; LIO keeps none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Histogram>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A latency histogram: `counts[i]` commands took at most `bounds_us[i]`
/// microseconds (and more than the bound before); `counts` has one more entry for
/// the commands slower than the last bound.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Histogram {
    pub bounds_us: Vec<u64>,
    pub counts: Vec<u64>,
    pub sum_us: u64,
}

impl Histogram {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

impl IoStats {
    /// The row's name: `lun 3` or the initiator.
    pub fn label(&self) -> String {
        match (&self.lun, &self.initiator) {
            (Some(l), _) => format!("lun {l}"),
            (None, Some(i)) => i.clone(),
            (None, None) => "-".into(),
        }
    }
}

/// Per-second rates of one row between two samples.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Rates {
    pub commands_per_s: f64,
    pub read_bytes_per_s: f64,
    pub written_bytes_per_s: f64,
}

/// Rates of every row of `now` that is also in `before` (by target and row label).
/// A counter that went down (a new LIO session) counts from zero.
pub fn rates(before: &Statistics, now: &Statistics) -> BTreeMap<(String, String), Rates> {
    let secs = now.taken_unix_ms.saturating_sub(before.taken_unix_ms) as f64 / 1000.0;
    let mut old = BTreeMap::new();
    for t in &before.targets {
        for row in t.luns.iter().chain(&t.initiators) {
            old.insert((t.target.clone(), row.label()), row);
        }
    }
    let mut out = BTreeMap::new();
    if secs <= 0.0 {
        return out;
    }
    for t in &now.targets {
        for row in t.luns.iter().chain(&t.initiators) {
            let key = (t.target.clone(), row.label());
            let (c, r, w) = match old.get(&key) {
                Some(o) => (
                    delta(o.commands, row.commands),
                    delta(o.read_bytes, row.read_bytes),
                    delta(o.written_bytes, row.written_bytes),
                ),
                None => (row.commands, row.read_bytes, row.written_bytes),
            };
            out.insert(
                key,
                Rates {
                    commands_per_s: c as f64 / secs,
                    read_bytes_per_s: r as f64 / secs,
                    written_bytes_per_s: w as f64 / secs,
                },
            );
        }
    }
    out
}

fn delta(before: u64, now: u64) -> u64 {
    if now >= before {
        now - before
    } else {
        now
    }
}

/// Bytes for people: `1.5 MiB`.
pub fn human_bytes(n: f64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The text `isctl stats` prints; with `rates`, per-second columns too.
pub fn render_text(s: &Statistics, rates: Option<&BTreeMap<(String, String), Rates>>) -> String {
    let mut out = String::new();
    if s.targets.is_empty() {
        out.push_str("No targets.\n");
        return out;
    }
    for t in &s.targets {
        let l = &t.logins;
        // Logins that name no target (discovery sessions, or refused before naming one)
        // are counted under the empty name.
        if t.target.is_empty() {
            out.push_str("no target (discovery sessions, logins that named none)\n");
        } else {
            let _ = writeln!(out, "target {}", t.target);
        }
        let _ = writeln!(
            out,
            "  sessions {}  logins accepted {}  failed {} (authentication {}, authorization {}, negotiation {}, redirected {}, other {})",
            t.sessions,
            l.accepted,
            l.failed(),
            l.authentication_failed,
            l.authorization_failed,
            l.negotiation_failed,
            l.redirected,
            l.other_failed
        );
        let _ = writeln!(
            out,
            "  errors: digest {}  connection {}  format {}",
            t.errors.digest, t.errors.connection, t.errors.format
        );
        let mut rows: Vec<Vec<String>> = Vec::new();
        for row in t.luns.iter().chain(&t.initiators) {
            let mut cells = vec![
                row.label(),
                row.commands.to_string(),
                human_bytes(row.read_bytes as f64),
                human_bytes(row.written_bytes as f64),
            ];
            if let Some(r) = rates {
                let rt = r
                    .get(&(t.target.clone(), row.label()))
                    .copied()
                    .unwrap_or_default();
                cells.push(format!("{:.0}", rt.commands_per_s));
                cells.push(format!("{}/s", human_bytes(rt.read_bytes_per_s)));
                cells.push(format!("{}/s", human_bytes(rt.written_bytes_per_s)));
            }
            if let Some(h) = &row.latency {
                let avg = if h.count() > 0 {
                    h.sum_us as f64 / h.count() as f64
                } else {
                    0.0
                };
                cells.push(format!("{avg:.0} us"));
            } else {
                cells.push("-".into());
            }
            rows.push(cells);
        }
        if rows.is_empty() {
            continue;
        }
        let mut head: Vec<String> = ["", "COMMANDS", "READ", "WRITTEN"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if rates.is_some() {
            head.extend(["CMD/S", "READ/S", "WRITTEN/S"].map(String::from));
        }
        head.push("AVG LATENCY".into());
        let widths: Vec<usize> = (0..head.len())
            .map(|i| {
                rows.iter()
                    .map(|r| r[i].len())
                    .chain([head[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for r in std::iter::once(&head).chain(rows.iter()) {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (c, w))| {
                    if i == 0 {
                        format!("{c:w$}")
                    } else {
                        format!("{c:>w$}")
                    }
                })
                .collect();
            let _ = writeln!(out, "  {}", line.join("  ").trim_end());
        }
        if t.luns.iter().chain(&t.initiators).any(|r| r.bytes_in_mib) {
            let _ = writeln!(out, "  (LIO counts bytes in whole MiB)");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64, cmds: u64, read: u64) -> Statistics {
        Statistics {
            backend: "userspace".into(),
            taken_unix_ms: ms,
            targets: vec![TargetStats {
                target: "iqn.t".into(),
                luns: vec![IoStats {
                    lun: Some(0),
                    commands: cmds,
                    read_bytes: read,
                    ..IoStats::default()
                }],
                ..TargetStats::default()
            }],
        }
    }

    #[test]
    fn rates_are_deltas_over_the_interval() {
        let r = rates(
            &sample(1_000, 100, 4096),
            &sample(3_000, 300, 4096 + 2 * 8192),
        );
        let x = r[&("iqn.t".to_string(), "lun 0".to_string())];
        assert_eq!(x.commands_per_s, 100.0);
        assert_eq!(x.read_bytes_per_s, 8192.0);
    }

    #[test]
    fn a_counter_that_restarted_counts_from_zero() {
        let r = rates(&sample(0, 1_000, 0), &sample(1_000, 10, 0));
        assert_eq!(
            r[&("iqn.t".to_string(), "lun 0".to_string())].commands_per_s,
            10.0
        );
    }

    #[test]
    fn login_statuses_are_classified_like_lio() {
        let mut l = LoginCounters::default();
        for s in [0x0000, 0x0201, 0x0202, 0x0200, 0x0101, 0x0203, 0x0300] {
            l.count(s);
        }
        assert_eq!(
            (l.accepted, l.authentication_failed, l.authorization_failed),
            (1, 1, 1)
        );
        assert_eq!(
            (l.negotiation_failed, l.redirected, l.other_failed),
            (1, 1, 2)
        );
        assert_eq!(l.failed(), 6);
    }

    #[test]
    fn logins_naming_no_target_are_labelled_as_such() {
        let mut s = sample(1_000, 1, 0);
        s.targets[0].target = String::new();
        let t = render_text(&s, None);
        assert!(t.starts_with("no target (discovery sessions"), "{t}");
        assert!(!t.contains("target \n"), "{t}");
    }

    #[test]
    fn text_shows_rates_when_given() {
        let now = sample(2_000, 200, 1 << 20);
        let r = rates(&sample(1_000, 100, 0), &now);
        let t = render_text(&now, Some(&r));
        assert!(t.contains("target iqn.t"), "{t}");
        assert!(t.contains("1.0 MiB/s"), "{t}");
        assert!(t.contains("CMD/S"), "{t}");
    }
}
