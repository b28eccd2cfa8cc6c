//! iscsi-perf's own figures (libiscsi-bin), for tests that compare a rate isctl
//! measured with what the initiator saw over the same window (tests/observe.rs on
//! the engine, tests/lio_vm_observe.rs on LIO).

/// iscsi-perf's per-second `iops current` figures, each with the end of its second
/// since iscsi-perf's start. Its lines carry the time *remaining* of a `run_secs`
/// run (`00:00:07 - lba 84568, iops current 92480 (361 MB/s), ...` after 1 s of 8).
pub fn iscsi_perf_seconds(text: &str, run_secs: f64) -> Vec<(f64, f64)> {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .collect();
    let mut out = Vec::new();
    let mut now = None;
    for (i, w) in words.iter().enumerate() {
        let hms: Vec<&str> = w.split(':').collect();
        if hms.len() == 3 && hms.iter().all(|p| p.len() == 2 && p.parse::<u64>().is_ok()) {
            let n: Vec<u64> = hms.iter().map(|p| p.parse().unwrap()).collect();
            now = Some(run_secs - (n[0] * 3600 + n[1] * 60 + n[2]) as f64);
        }
        if *w == "current" && i > 0 && words[i - 1] == "iops" {
            if let (Some(t), Some(v)) = (now, words.get(i + 1).and_then(|v| v.parse::<f64>().ok()))
            {
                out.push((t, v));
            }
        }
    }
    out
}

/// iscsi-perf's IOPS over the window `[from, to]` seconds since its start: its
/// per-second figures weighted by how much of each second falls in the window.
pub fn iscsi_perf_iops(text: &str, run_secs: f64, from: f64, to: f64) -> f64 {
    let secs = iscsi_perf_seconds(text, run_secs);
    let (mut sum, mut weight) = (0.0, 0.0);
    for (t, v) in &secs {
        let overlap = (to.min(*t) - from.max(t - 1.0)).max(0.0);
        sum += v * overlap;
        weight += overlap;
    }
    assert!(
        weight > 1.5,
        "iscsi-perf's figures do not cover {from:.1}..{to:.1} s: {secs:?}\n{text}"
    );
    sum / weight
}
