//! The engine's control protocol: the typed requests and replies that cross its
//! control socket, shared by the server (`engine::server::control`) and the client
//! (`backend::userspace`), so that neither side reads untyped JSON.
//!
//! Framing: one request per connection, one line of JSON each way. The plan
//! travels in the vocabulary of every other backend ([`crate::plan::Change`],
//! [`crate::plan::SessionCut`], [`crate::plan::Refusal`]), so the CLI renders an
//! engine plan with the same renderer as a LIO plan.
//!
//! Plan, then apply: a `Plan` reply carries the engine's configuration
//! `generation`; an `Apply` that names it is refused with [`Reply::Stale`] when
//! another reload or apply has happened since, so what a person confirmed is what
//! is applied.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::plan::{Change, Plan, Refusal, SessionCut};
use crate::state::Session;

/// A request to the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// What runs: portals, targets, LUNs, counts.
    Status,
    /// Every logged-in session.
    Sessions,
    /// Every statistics counter (`isctl stats`, the exporter).
    Stats,
    /// What serving the model at `path` (absolute) would change.
    Plan { path: PathBuf, force: bool },
    /// Serve the model at `path` (absolute). With `expect_generation`, only if the
    /// configuration in force is still the one that was planned against.
    Apply {
        path: PathBuf,
        force: bool,
        expect_generation: Option<u64>,
    },
    /// Re-read the model the engine serves (like SIGHUP).
    Reload { force: bool },
}

/// The engine's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Status(Status),
    Sessions {
        sessions: Vec<Session>,
    },
    Stats(crate::observe::stats::Statistics),
    /// The plan (for `Plan`), or what was applied (for `Apply`/`Reload`).
    Plan(PlanReport),
    Applied(ApplyReport),
    /// The plan was refused (it would cut sessions without `force`); nothing changed.
    Refused(PlanReport),
    /// The model does not load; the message lists every diagnostic (file:line).
    InvalidModel {
        message: String,
    },
    /// The configuration changed since the plan was made; nothing changed.
    Stale {
        message: String,
    },
    /// Anything else that went wrong (a backing file that cannot be opened, an
    /// address that cannot be bound, a bad request).
    Error {
        message: String,
    },
}

/// A plan as the engine made it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PlanReport {
    /// The model file or directory planned from.
    pub source: PathBuf,
    /// The configuration generation the plan was made against.
    pub generation: u64,
    pub changes: Vec<Change>,
    pub sessions_cut: Vec<SessionCut>,
    pub refusals: Vec<Refusal>,
    pub warnings: Vec<String>,
    pub force: bool,
}

impl PlanReport {
    pub fn from_plan(plan: &Plan, source: PathBuf, generation: u64) -> PlanReport {
        PlanReport {
            source,
            generation,
            changes: plan.changes.clone(),
            sessions_cut: plan.sessions_cut.clone(),
            refusals: plan.refusals.clone(),
            warnings: plan.warnings.clone(),
            force: plan.force,
        }
    }

    /// The plan in the type every backend plans in.
    pub fn to_plan(&self) -> Plan {
        Plan {
            changes: self.changes.clone(),
            sessions_cut: self.sessions_cut.clone(),
            refusals: self.refusals.clone(),
            warnings: self.warnings.clone(),
            force: self.force,
            applied_as_whole: true,
            ..Plan::default()
        }
    }
}

/// What an apply or reload did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyReport {
    pub plan: PlanReport,
    /// The generation now in force.
    pub generation: u64,
    /// TSIHs of the sessions closed because of the change.
    pub closed_sessions: Vec<u16>,
}

/// What `status` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub source: PathBuf,
    pub generation: u64,
    pub started_unix: u64,
    pub portals: Vec<PortalStatus>,
    pub targets: Vec<TargetStatus>,
    pub sessions: usize,
    pub connections: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortalStatus {
    pub name: String,
    pub tag: u16,
    pub listen: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetStatus {
    pub name: String,
    pub alias: Option<String>,
    pub luns: Vec<LunStatus>,
    pub sessions: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LunStatus {
    pub lun: u16,
    pub extent: String,
    pub size_bytes: u64,
    pub block_size: u32,
    pub readonly: bool,
    pub write_back: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_plan_round_trips_through_json() {
        let mut plan = Plan {
            force: false,
            ..Plan::default()
        };
        plan.sessions_cut.push(SessionCut {
            session: Session {
                target: "iqn.2026-11.io.isctl:t".into(),
                tpg: 1,
                initiator: "iqn.1994-05.com.redhat:h".into(),
                tsih: Some(3),
                ..Session::default()
            },
            by: "delete target".into(),
        });
        plan.refuse_session_cuts();
        let report = PlanReport::from_plan(&plan, "/etc/isctl".into(), 7);
        let line = serde_json::to_string(&Reply::Refused(report.clone())).unwrap();
        let back: Reply = serde_json::from_str(&line).unwrap();
        assert_eq!(back, Reply::Refused(report));
        let Reply::Refused(r) = back else {
            unreachable!()
        };
        assert_eq!(r.to_plan().refusals[0].kind, "sessions");
        assert!(r.to_plan().is_refused());
    }

    #[test]
    fn rejects_an_unknown_refusal_kind() {
        let line = r#"{"reply":"refused","source":"/m","generation":1,"changes":[],"sessions_cut":[],"refusals":[{"kind":"whim","object":null,"problem":"p","fix":"f"}],"warnings":[],"force":false}"#;
        assert!(serde_json::from_str::<Reply>(line).is_err());
    }

    #[test]
    fn requests_are_one_line_of_tagged_json() {
        let r = Request::Apply {
            path: "/m.toml".into(),
            force: false,
            expect_generation: Some(2),
        };
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.starts_with(r#"{"op":"apply""#), "{line}");
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
    }
}
