//! `isctl exporter`: a local, read-only HTTP endpoint (the `tiny_http` crate, one
//! request at a time on the calling thread: a monitoring scrape is small and rare).
//!
//! * `GET /metrics`: Prometheus text ([`crate::observe::metrics`]);
//! * `GET /api/protocols/san/iscsi/sessions`: ONTAP's response shape and query
//!   parameters ([`crate::observe::query`]); a bad parameter answers 400 with
//!   ONTAP's error shape `{"error": {"message", "code", "target"}}`;
//! * anything else: 404; any method but GET and HEAD: 405.
//!
//! Each request reads its source afresh (LIO's configfs, or the engine over its
//! control socket), so nothing is cached and nothing is stale. It serves what
//! `isctl sessions`, `isctl stats` and `isctl status` show, nothing more: no
//! secret (credentials are never read by these paths).

use std::path::PathBuf;

use serde_json::json;

use crate::observe::metrics::{self, Sample};
use crate::observe::query::Query;
use crate::observe::sessions::{self, SCHEMA};
use crate::observe::Source;

/// The sessions endpoint's path.
pub const SESSIONS_PATH: &str = "/api/protocols/san/iscsi/sessions";

/// An answer: status, content type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

fn json_answer(status: u16, v: &serde_json::Value) -> Answer {
    Answer {
        status,
        content_type: "application/json",
        body: format!("{v:#}\n"),
    }
}

fn ontap_error(status: u16, message: &str, target: &str) -> Answer {
    json_answer(
        status,
        &json!({"error": {"message": message, "code": status.to_string(), "target": target}}),
    )
}

/// What answers requests.
pub struct Exporter {
    source: Box<dyn Source>,
    /// Where `isctl watch` writes `watch.json`.
    state_dir: PathBuf,
}

impl Exporter {
    pub fn new(source: Box<dyn Source>, state_dir: PathBuf) -> Exporter {
        Exporter { source, state_dir }
    }

    /// Answer `method url` (the URL as sent: path and query).
    pub fn answer(&self, method: &str, url: &str) -> Answer {
        if method != "GET" && method != "HEAD" {
            return ontap_error(
                405,
                &format!("method {method} is not allowed: this endpoint is read-only"),
                "method",
            );
        }
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        match path.trim_end_matches('/') {
            "/metrics" => self.metrics(),
            SESSIONS_PATH => self.sessions(query),
            _ => ontap_error(
                404,
                &format!("no such endpoint {path:?}; there are /metrics and {SESSIONS_PATH}"),
                "path",
            ),
        }
    }

    fn metrics(&self) -> Answer {
        let mut sample = Sample::default();
        match self.source.statistics() {
            Ok(s) => sample.stats = Some(s),
            Err(e) => {
                tracing::warn!("statistics: {e:#}");
                sample.errors.push("statistics".into());
            }
        }
        match self.source.sessions() {
            Ok(s) => sample.sessions = Some(s),
            Err(e) => {
                tracing::warn!("sessions: {e:#}");
                sample.errors.push("sessions".into());
            }
        }
        // Absent where no watch runs (or its file cannot be read).
        sample.watch = crate::watch::state::load(&self.state_dir);
        Answer {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: metrics::render(sample),
        }
    }

    fn sessions(&self, query: &str) -> Answer {
        let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let q = match Query::from_params(
            &SCHEMA,
            params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ) {
            Ok(q) => q,
            Err(e) => return ontap_error(400, &e.0, "query"),
        };
        match self.source.sessions() {
            Ok(list) => {
                let records = list.iter().map(sessions::record).collect();
                json_answer(200, &q.run(&SCHEMA, records).to_json())
            }
            Err(e) => ontap_error(503, &format!("{e:#}"), "backend"),
        }
    }

    /// Serve on `server` until the process is stopped.
    pub fn serve(&self, server: &tiny_http::Server) {
        for request in server.incoming_requests() {
            let method = request.method().as_str().to_string();
            let a = self.answer(&method, request.url());
            tracing::debug!(%method, url = request.url(), status = a.status, "request");
            let header = tiny_http::Header::from_bytes("Content-Type", a.content_type)
                .expect("a static header is valid");
            let body = if method == "HEAD" {
                String::new()
            } else {
                a.body
            };
            let response = tiny_http::Response::from_string(body)
                .with_status_code(a.status)
                .with_header(header);
            if let Err(e) = request.respond(response) {
                tracing::debug!("answering: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::stats::Statistics;
    use crate::state::Session;

    struct Fixed;
    impl Source for Fixed {
        fn sessions(&self) -> anyhow::Result<Vec<Session>> {
            Ok((1..=3)
                .map(|t| Session {
                    target: "iqn.t".into(),
                    tpg: 1,
                    initiator: format!("iqn.i{t}"),
                    tsih: Some(t),
                    ..Session::default()
                })
                .collect())
        }
        fn statistics(&self) -> anyhow::Result<Statistics> {
            anyhow::bail!("no engine")
        }
    }

    fn exporter() -> Exporter {
        Exporter::new(Box::new(Fixed), "/nonexistent-isctl-state".into())
    }

    #[test]
    fn sessions_answer_ontaps_shape_with_its_query_parameters() {
        let a = exporter().answer(
            "GET",
            "/api/protocols/san/iscsi/sessions?tsih=%3E1&order_by=tsih%20desc&fields=initiator.name",
        );
        assert_eq!(a.status, 200);
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(v["num_records"], 2);
        assert_eq!(v["records"][0]["initiator"]["name"], "iqn.i3");
        assert_eq!(v["records"][0]["tsih"], 3);
        let a = exporter().answer(
            "GET",
            "/api/protocols/san/iscsi/sessions?return_records=false",
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&a.body).unwrap(),
            json!({"num_records": 3})
        );
    }

    #[test]
    fn bad_parameters_methods_and_paths_are_refused() {
        let a = exporter().answer("GET", "/api/protocols/san/iscsi/sessions?nosuch=1");
        assert_eq!(a.status, 400);
        assert!(a.body.contains("unknown field"), "{}", a.body);
        assert_eq!(exporter().answer("POST", "/metrics").status, 405);
        assert_eq!(exporter().answer("GET", "/").status, 404);
    }

    #[test]
    fn metrics_still_serve_what_can_be_read_and_flag_the_rest() {
        let a = exporter().answer("GET", "/metrics");
        assert_eq!(a.status, 200);
        assert!(
            a.body
                .contains("isctl_scrape_error{source=\"statistics\"} 1"),
            "{}",
            a.body
        );
        assert!(a.body.contains("isctl_session_info{"), "{}", a.body);
    }
}
