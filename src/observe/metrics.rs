//! Statistics, sessions and the watcher's last outcome as Prometheus text
//! (exposition format 0.0.4), encoded by the `prometheus-client` crate from one
//! sample taken per scrape.
//!
//! Metric names (all prefixed `isctl_`; counters end in `_total`):
//! * per LUN (`target`, `lun`): `lun_commands_total`, `lun_read_bytes_total`,
//!   `lun_written_bytes_total`, and on the engine `lun_command_duration_seconds`
//!   (a histogram);
//! * per initiator (`target`, `initiator`): `initiator_commands_total`,
//!   `initiator_read_bytes_total`, `initiator_written_bytes_total`, and on the
//!   engine `initiator_command_duration_seconds`;
//! * per target: `sessions` (gauge), `logins_total{result=accepted|authentication|
//!   authorization|negotiation|redirected|other}`, `errors_total{kind=digest|
//!   connection|format}`;
//! * per logged-in session: `session_info{target, initiator, isid, tsih,
//!   authentication}` = 1;
//! * where `isctl watch` runs (`<state-dir>/watch.json`):
//!   `watch_last_apply_timestamp_seconds`, `watch_last_apply_success` (1 when the
//!   last attempt applied or found nothing to change),
//!   `watch_last_apply_info{outcome, trigger}` = 1, `watch_drift_changes` (the
//!   changes the last plan had to make);
//! * `scrape_error{source}` = 1 when a source could not be read (the rest is
//!   still served).
//!
//! No label ever carries a secret: labels are names, numbers and addresses.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::observe::stats::{Histogram, IoStats, Statistics};
use crate::state::Session;
use crate::watch::state::LastApply;

type Labels = Vec<(String, String)>;

/// One scrape's worth of data.
#[derive(Debug, Default)]
pub struct Sample {
    pub stats: Option<Statistics>,
    pub sessions: Option<Vec<Session>>,
    pub watch: Option<LastApply>,
    /// Sources that failed: `statistics`, `sessions`, `watch`.
    pub errors: Vec<String>,
}

#[derive(Debug)]
struct SampleCollector(Sample);

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Write one metric family of counters or gauges.
fn family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (l, v) in rows {
        let e = m.encode_family(l)?;
        match kind {
            MetricType::Counter => ConstCounter::new(*v).encode(e)?,
            _ => ConstGauge::new(*v as i64).encode(e)?,
        }
    }
    Ok(())
}

fn histograms(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, &Histogram)],
) -> Result<(), std::fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (l, h) in rows {
        let mut e = m.encode_family(l)?;
        // Per-bucket counts: the encoder makes them cumulative and adds `+Inf`
        // (the total, which includes our overflow bucket).
        let buckets: Vec<(f64, u64)> = h
            .bounds_us
            .iter()
            .zip(&h.counts)
            .map(|(b, c)| (*b as f64 / 1e6, *c))
            .collect();
        e.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            h.sum_us as f64 / 1e6,
            h.count(),
            &buckets,
            None,
        )?;
    }
    Ok(())
}

fn io_rows<'a>(
    stats: &'a Statistics,
    pick: impl Fn(&'a crate::observe::stats::TargetStats) -> &'a [IoStats],
    key: &str,
) -> Vec<(Labels, &'a IoStats)> {
    let mut out = Vec::new();
    for t in &stats.targets {
        for row in pick(t) {
            let v = match (&row.lun, &row.initiator) {
                (Some(l), _) => l.to_string(),
                (None, Some(i)) => i.clone(),
                _ => continue,
            };
            out.push((labels(&[("target", &t.target), (key, &v)]), row));
        }
    }
    out
}

impl Collector for SampleCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        if let Some(stats) = &s.stats {
            for (scope, rows) in [
                ("lun", io_rows(stats, |t| &t.luns, "lun")),
                ("initiator", io_rows(stats, |t| &t.initiators, "initiator")),
            ] {
                let pick = |f: fn(&IoStats) -> u64| -> Vec<(Labels, u64)> {
                    rows.iter().map(|(l, r)| (l.clone(), f(r))).collect()
                };
                family(
                    &mut enc,
                    &format!("isctl_{scope}_commands"),
                    &format!("SCSI commands completed, per {scope}"),
                    MetricType::Counter,
                    &pick(|r| r.commands),
                )?;
                family(
                    &mut enc,
                    &format!("isctl_{scope}_read_bytes"),
                    &format!("Bytes read by initiators (sent by the target), per {scope}"),
                    MetricType::Counter,
                    &pick(|r| r.read_bytes),
                )?;
                family(
                    &mut enc,
                    &format!("isctl_{scope}_written_bytes"),
                    &format!("Bytes written by initiators, per {scope}"),
                    MetricType::Counter,
                    &pick(|r| r.written_bytes),
                )?;
                let hs: Vec<(Labels, &Histogram)> = rows
                    .iter()
                    .filter_map(|(l, r)| r.latency.as_ref().map(|h| (l.clone(), h)))
                    .collect();
                histograms(
                    &mut enc,
                    &format!("isctl_{scope}_command_duration_seconds"),
                    &format!("Time from a command's arrival to its completion, per {scope} (engine only)"),
                    &hs,
                )?;
            }
            let per_target =
                |f: &dyn Fn(&crate::observe::stats::TargetStats) -> Vec<(Labels, u64)>| {
                    stats.targets.iter().flat_map(f).collect::<Vec<_>>()
                };
            family(
                &mut enc,
                "isctl_sessions",
                "Logged-in sessions, per target",
                MetricType::Gauge,
                &per_target(&|t| vec![(labels(&[("target", &t.target)]), t.sessions)]),
            )?;
            family(
                &mut enc,
                "isctl_logins",
                "Login attempts by result, per target (target \"\" for logins that named no known target)",
                MetricType::Counter,
                &per_target(&|t| {
                    let l = &t.logins;
                    [
                        ("accepted", l.accepted),
                        ("authentication", l.authentication_failed),
                        ("authorization", l.authorization_failed),
                        ("negotiation", l.negotiation_failed),
                        ("redirected", l.redirected),
                        ("other", l.other_failed),
                    ]
                    .iter()
                    .map(|(r, v)| (labels(&[("target", &t.target), ("result", r)]), *v))
                    .collect()
                }),
            )?;
            family(
                &mut enc,
                "isctl_errors",
                "Session errors by kind, per target",
                MetricType::Counter,
                &per_target(&|t| {
                    [
                        ("digest", t.errors.digest),
                        ("connection", t.errors.connection),
                        ("format", t.errors.format),
                    ]
                    .iter()
                    .map(|(k, v)| (labels(&[("target", &t.target), ("kind", k)]), *v))
                    .collect()
                }),
            )?;
        }
        if let Some(sessions) = &s.sessions {
            let rows: Vec<(Labels, u64)> = sessions
                .iter()
                .map(|x| {
                    let auth = x
                        .connections
                        .first()
                        .and_then(|c| c.authentication.clone())
                        .unwrap_or_default();
                    (
                        labels(&[
                            ("target", &x.target),
                            ("initiator", &x.initiator),
                            // ONTAP's form, as `isctl sessions` shows it.
                            (
                                "isid",
                                &x.isid
                                    .as_deref()
                                    .map(crate::observe::sessions::isid_colons)
                                    .unwrap_or_default(),
                            ),
                            ("tsih", &x.tsih.map(|t| t.to_string()).unwrap_or_default()),
                            ("authentication", &auth),
                        ]),
                        1,
                    )
                })
                .collect();
            family(
                &mut enc,
                "isctl_session_info",
                "One per logged-in session",
                MetricType::Gauge,
                &rows,
            )?;
        }
        if let Some(w) = &s.watch {
            let ok = matches!(
                w.outcome,
                crate::watch::state::Outcome::Applied | crate::watch::state::Outcome::NoChanges
            );
            family(
                &mut enc,
                "isctl_watch_last_apply_timestamp_seconds",
                "When isctl watch last tried to apply the model (Unix time)",
                MetricType::Gauge,
                &[(vec![], w.time)],
            )?;
            family(
                &mut enc,
                "isctl_watch_last_apply_success",
                "1 when isctl watch's last attempt applied the model or found nothing to change",
                MetricType::Gauge,
                &[(vec![], u64::from(ok))],
            )?;
            family(
                &mut enc,
                "isctl_watch_last_apply_info",
                "isctl watch's last outcome and what triggered it",
                MetricType::Gauge,
                &[(
                    labels(&[("outcome", w.outcome.as_str()), ("trigger", &w.trigger)]),
                    1,
                )],
            )?;
            family(
                &mut enc,
                "isctl_watch_drift_changes",
                "Changes isctl watch's last plan had to make (0: the host matched the model)",
                MetricType::Gauge,
                &[(vec![], w.changes.len() as u64)],
            )?;
        }
        let errs: Vec<(Labels, u64)> = s
            .errors
            .iter()
            .map(|e| (labels(&[("source", e)]), 1))
            .collect();
        family(
            &mut enc,
            "isctl_scrape_error",
            "1 for each source that could not be read in this scrape",
            MetricType::Gauge,
            &errs,
        )?;
        Ok(())
    }
}

/// The Prometheus text of one sample.
pub fn render(sample: Sample) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SampleCollector(sample)));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::stats::TargetStats;

    #[test]
    fn renders_counters_histograms_and_session_info() {
        let stats = Statistics {
            backend: "userspace".into(),
            taken_unix_ms: 0,
            targets: vec![TargetStats {
                target: "iqn.t".into(),
                sessions: 1,
                luns: vec![IoStats {
                    lun: Some(0),
                    commands: 5,
                    read_bytes: 4096,
                    latency: Some(Histogram {
                        bounds_us: vec![100, 1000],
                        counts: vec![3, 1, 1],
                        sum_us: 5000,
                    }),
                    ..IoStats::default()
                }],
                ..TargetStats::default()
            }],
        };
        let text = render(Sample {
            stats: Some(stats),
            sessions: Some(vec![Session {
                target: "iqn.t".into(),
                initiator: "iqn.i".into(),
                ..Session::default()
            }]),
            ..Sample::default()
        });
        assert!(
            text.contains("isctl_lun_read_bytes_total{target=\"iqn.t\",lun=\"0\"} 4096"),
            "{text}"
        );
        assert!(text.contains("isctl_lun_command_duration_seconds_bucket{target=\"iqn.t\",lun=\"0\",le=\"0.001\"} 4"), "{text}");
        assert!(
            text.contains("isctl_sessions{target=\"iqn.t\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("isctl_session_info{target=\"iqn.t\",initiator=\"iqn.i\""),
            "{text}"
        );
        assert!(
            text.contains("isctl_logins_total{target=\"iqn.t\",result=\"accepted\"} 0"),
            "{text}"
        );
    }
}
