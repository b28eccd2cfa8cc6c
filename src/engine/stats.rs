//! The engine's statistics: per target, per LUN and per initiator, commands,
//! bytes and a latency histogram; per target, logins by outcome and session
//! errors.
//!
//! Owns: the counters and their snapshot ([`EngineStats::snapshot`], in the
//! backend-neutral [`crate::observe::stats::Statistics`]). Does not: decide what a
//! command is; the transport calls [`Recorder::command`] once per completed
//! command, [`EngineStats::login`] once per login outcome.
//!
//! Cost on the hot path: a session resolves its target's and its initiator's
//! counters once at login ([`EngineStats::recorder`]); per command it takes one
//! read lock to find the LUN's counters (created on first use), then a handful of
//! relaxed atomic additions. `isctl serve --no-stats` turns all of it off (the
//! benchmark `bench/stats-cost.sh` measures the difference).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use crate::observe::stats::{
    ErrorCounters, Histogram, IoStats, LoginCounters, Statistics, TargetStats,
};

/// Latency bucket bounds in microseconds (upper bounds; one more bucket above).
pub const LATENCY_BOUNDS_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 1_000_000,
];

/// Commands, bytes and latencies of one LUN or initiator.
#[derive(Debug, Default)]
pub struct IoCounters {
    commands: AtomicU64,
    read_bytes: AtomicU64,
    written_bytes: AtomicU64,
    latency_sum_us: AtomicU64,
    latency: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
}

impl IoCounters {
    fn add(&self, read: u64, written: u64, took_us: u64) {
        self.commands.fetch_add(1, Relaxed);
        if read > 0 {
            self.read_bytes.fetch_add(read, Relaxed);
        }
        if written > 0 {
            self.written_bytes.fetch_add(written, Relaxed);
        }
        self.latency_sum_us.fetch_add(took_us, Relaxed);
        let bucket = LATENCY_BOUNDS_US.partition_point(|b| *b < took_us);
        self.latency[bucket].fetch_add(1, Relaxed);
    }

    fn snapshot(&self) -> IoStats {
        IoStats {
            commands: self.commands.load(Relaxed),
            read_bytes: self.read_bytes.load(Relaxed),
            written_bytes: self.written_bytes.load(Relaxed),
            latency: Some(Histogram {
                bounds_us: LATENCY_BOUNDS_US.to_vec(),
                counts: self.latency.iter().map(|c| c.load(Relaxed)).collect(),
                sum_us: self.latency_sum_us.load(Relaxed),
            }),
            ..IoStats::default()
        }
    }
}

/// One target's counters.
#[derive(Debug, Default)]
pub struct TargetCounters {
    luns: RwLock<BTreeMap<u64, Arc<IoCounters>>>,
    initiators: RwLock<BTreeMap<String, Arc<IoCounters>>>,
    logins: std::sync::Mutex<LoginCounters>,
    digest_errors: AtomicU64,
    connection_errors: AtomicU64,
    format_errors: AtomicU64,
}

impl TargetCounters {
    fn lun(&self, lun: u64) -> Arc<IoCounters> {
        if let Some(c) = self
            .luns
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&lun)
        {
            return c.clone();
        }
        self.luns
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(lun)
            .or_default()
            .clone()
    }

    fn initiator(&self, name: &str) -> Arc<IoCounters> {
        self.initiators
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone()
    }
}

/// What a session records through: its target's and its initiator's counters.
#[derive(Debug, Clone)]
pub struct Recorder {
    target: Arc<TargetCounters>,
    initiator: Arc<IoCounters>,
}

impl Recorder {
    /// A command completed: `read` bytes went to the initiator, `written` came from it.
    pub fn command(&self, lun: u64, read: u64, written: u64, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.target.lun(lun).add(read, written, us);
        self.initiator.add(read, written, us);
    }

    /// A header or data digest did not match.
    pub fn digest_error(&self) {
        self.target.digest_errors.fetch_add(1, Relaxed);
    }

    /// The connection ended on a timeout.
    pub fn connection_error(&self) {
        self.target.connection_errors.fetch_add(1, Relaxed);
    }

    /// A PDU broke the protocol.
    pub fn format_error(&self) {
        self.target.format_errors.fetch_add(1, Relaxed);
    }
}

/// Every target's counters. Logins that never named a known target (discovery,
/// a wrong name) count under the target name `""`.
#[derive(Debug)]
pub struct EngineStats {
    enabled: bool,
    targets: RwLock<BTreeMap<String, Arc<TargetCounters>>>,
}

impl EngineStats {
    pub fn new(enabled: bool) -> EngineStats {
        EngineStats {
            enabled,
            targets: RwLock::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn target(&self, name: &str) -> Arc<TargetCounters> {
        if let Some(t) = self
            .targets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return t.clone();
        }
        self.targets
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// The recorder of a session of `initiator` on `target`; `None` when statistics
    /// are off.
    pub fn recorder(&self, target: &str, initiator: &str) -> Option<Recorder> {
        if !self.enabled {
            return None;
        }
        let t = self.target(target);
        let initiator = t.initiator(initiator);
        Some(Recorder {
            target: t,
            initiator,
        })
    }

    /// A login ended with the Login Response status `status` (0 = accepted).
    /// Counted even with statistics off: logins are rare and this is how failed
    /// logins are seen at all.
    pub fn login(&self, target: Option<&str>, status: u16) {
        let t = self.target(target.unwrap_or(""));
        t.logins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .count(status);
    }

    /// Every counter now; `sessions` gives the logged-in sessions per target.
    pub fn snapshot(&self, sessions: &BTreeMap<String, u64>) -> Statistics {
        let targets = self.targets.read().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<&String> = targets.keys().collect();
        for s in sessions.keys() {
            if !targets.contains_key(s) {
                names.push(s);
            }
        }
        names.sort();
        names.dedup();
        let out = names
            .into_iter()
            .map(|name| {
                let mut ts = TargetStats {
                    target: name.clone(),
                    sessions: sessions.get(name).copied().unwrap_or(0),
                    ..TargetStats::default()
                };
                if let Some(t) = targets.get(name) {
                    ts.logins = *t.logins.lock().unwrap_or_else(|p| p.into_inner());
                    ts.errors = ErrorCounters {
                        digest: t.digest_errors.load(Relaxed),
                        connection: t.connection_errors.load(Relaxed),
                        format: t.format_errors.load(Relaxed),
                    };
                    ts.luns = t
                        .luns
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .iter()
                        .map(|(l, c)| IoStats {
                            lun: Some(*l),
                            ..c.snapshot()
                        })
                        .collect();
                    ts.initiators = t
                        .initiators
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .iter()
                        .map(|(i, c)| IoStats {
                            initiator: Some(i.clone()),
                            ..c.snapshot()
                        })
                        .collect();
                }
                ts
            })
            .collect();
        Statistics {
            backend: "userspace".into(),
            taken_unix_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            targets: out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_counts_for_its_lun_and_its_initiator() {
        let s = EngineStats::new(true);
        let r = s.recorder("iqn.t", "iqn.i").unwrap();
        r.command(0, 4096, 0, Duration::from_micros(80));
        r.command(1, 0, 512, Duration::from_millis(3));
        s.login(Some("iqn.t"), 0);
        s.login(Some("iqn.t"), 0x0201);
        let snap = s.snapshot(&BTreeMap::from([("iqn.t".to_string(), 1)]));
        let t = &snap.targets[0];
        assert_eq!(t.sessions, 1);
        assert_eq!((t.logins.accepted, t.logins.authentication_failed), (1, 1));
        assert_eq!(t.luns.len(), 2);
        assert_eq!(t.luns[0].read_bytes, 4096);
        assert_eq!(t.luns[1].written_bytes, 512);
        let i = &t.initiators[0];
        assert_eq!((i.commands, i.read_bytes, i.written_bytes), (2, 4096, 512));
        let h = i.latency.as_ref().unwrap();
        // 80 us falls in the (50, 100] bucket, 3 ms in (2.5 ms, 5 ms]
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.counts[6], 1);
        assert_eq!(h.sum_us, 3080);
    }

    #[test]
    fn statistics_off_records_nothing_but_logins() {
        let s = EngineStats::new(false);
        assert!(s.recorder("iqn.t", "iqn.i").is_none());
        s.login(None, 0x0202);
        let snap = s.snapshot(&BTreeMap::new());
        assert_eq!(snap.targets[0].target, "");
        assert_eq!(snap.targets[0].logins.authorization_failed, 1);
    }
}
