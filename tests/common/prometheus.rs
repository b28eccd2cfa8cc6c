//! `/metrics` text parsed by Prometheus's own Python text parser (Debian's
//! python3-prometheus-client), for the exporter tests on the engine
//! (tests/observe.rs) and on LIO (tests/lio_vm_observe.rs). A missing python3 or
//! parser fails the test.

use std::process::{Command, Stdio};

/// The samples of `/metrics` as `{name{labels}: value}`, parsed by
/// prometheus_client's text parser (it fails on malformed exposition text).
pub fn parse_metrics(text: &str) -> serde_json::Value {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        key = s.name + json.dumps(s.labels, sort_keys=True)
        out[key] = s.value
print(json.dumps(out))
"#;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3 (python3-prometheus-client)");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client could not parse /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn sample(m: &serde_json::Value, name: &str, labels: &str) -> f64 {
    m[format!("{name}{labels}")]
        .as_f64()
        .unwrap_or_else(|| panic!("no sample {name}{labels} in {m:#}"))
}
