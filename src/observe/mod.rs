//! Observability: who is logged in, how much I/O flows, and a local read-only
//! HTTP endpoint for monitoring systems.
//!
//! Owns:
//! * [`query`]: ONTAP's REST query language (filters with its operators, dotted
//!   field names, `fields`, `order_by`, `max_records`, `return_records`), pure;
//! * [`sessions`]: a [`crate::state::Session`] as ONTAP's iSCSI session record;
//! * [`admitted`]: what configfs cannot say of LIO sessions (portal group name,
//!   initiator groups, comment), from the model through the LIO lowering;
//! * [`stats`]: the backend-neutral statistics sample, rates, text;
//! * [`lio_stats`]: LIO's counters from configfs `statistics/` and
//!   `fabric_statistics/`;
//! * [`metrics`]: statistics, sessions and the watcher's last outcome as
//!   Prometheus text (with the `prometheus-client` crate);
//! * [`exporter`]: `isctl exporter`, the HTTP server (`tiny_http`).
//!
//! Does not: count anything itself (the engine counts in `engine::stats`; LIO in
//! the kernel) or choose the backend (the CLI resolves it and hands in a
//! [`Source`]).
//!
//! In → out: backend (sessions, counters) → records / [`stats::Statistics`] →
//! query, text, JSON, Prometheus.

pub mod admitted;
pub mod exporter;
pub mod lio_stats;
pub mod metrics;
pub mod query;
pub mod sessions;
pub mod stats;

/// Where sessions and statistics come from, for the commands and the exporter.
pub trait Source {
    fn sessions(&self) -> anyhow::Result<Vec<crate::state::Session>>;
    fn statistics(&self) -> anyhow::Result<stats::Statistics>;
}
