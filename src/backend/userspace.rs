//! The userspace engine as a backend: a running `isctl serve`, reached through its
//! control socket in the typed protocol of [`crate::engine::api`].
//!
//! Owns: asking the engine to plan a model, to apply it (only if nothing changed
//! since the plan: the plan's generation travels with the apply), for its status
//! and its sessions, and turning its replies into typed results and errors.
//! Does not: plan (the engine does, with `plan::served`) or render anything.

use std::io;
use std::path::{Path, PathBuf};

use crate::engine::api::{ApplyReport, PlanReport, Reply, Request, Status};
use crate::engine::server::control;
use crate::state::Session;

/// What can go wrong talking to the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Nobody answers on the socket.
    #[error("no isctl engine answers on {socket} ({source}); start one with `isctl serve MODEL`, or pass --socket{hint}")]
    Unreachable {
        socket: PathBuf,
        source: io::Error,
        /// Why the engine was chosen, when it was chosen automatically.
        hint: String,
    },
    /// The engine could not load the model (each diagnostic names file:line).
    #[error("the engine cannot load the model:\n{0}")]
    InvalidModel(String),
    /// The plan cuts sessions and was not forced; nothing changed.
    #[error("the engine refused the change; nothing was changed")]
    Refused(Box<PlanReport>),
    /// The configuration changed between plan and apply; nothing changed.
    #[error("{0}")]
    Stale(String),
    /// The engine tried and failed (a backing file, a listening address, ...).
    #[error("the engine: {0}")]
    Failed(String),
    /// The engine answered something this request does not expect.
    #[error("the engine answered {what} to a {request} request (is it another isctl version?)")]
    Unexpected {
        request: &'static str,
        what: &'static str,
    },
}

/// A running engine's control socket.
#[derive(Debug, Clone)]
pub struct UserspaceBackend {
    socket: PathBuf,
    /// Appended to "nobody answers" errors: why this backend was chosen.
    hint: String,
}

fn reply_name(r: &Reply) -> &'static str {
    match r {
        Reply::Status(_) => "a status",
        Reply::Sessions { .. } => "a session list",
        Reply::Stats(_) => "statistics",
        Reply::Plan(_) => "a plan",
        Reply::Applied(_) => "an apply report",
        Reply::Refused(_) => "a refusal",
        Reply::InvalidModel { .. } => "invalid_model",
        Reply::Stale { .. } => "stale",
        Reply::Error { .. } => "an error",
    }
}

impl UserspaceBackend {
    /// `hint` is appended to the error when nobody answers (e.g. "; without LIO's
    /// configfs the backend is the userspace engine").
    pub fn new(socket: &Path, hint: impl Into<String>) -> UserspaceBackend {
        UserspaceBackend {
            socket: socket.to_path_buf(),
            hint: hint.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Send `req`; `pick` takes the reply this request expects (`None` for any
    /// other, which is reported as unexpected).
    fn ask<T>(
        &self,
        req: &Request,
        pick: impl FnOnce(Reply) -> Option<T>,
    ) -> Result<T, EngineError> {
        let reply =
            control::request(&self.socket, req).map_err(|source| EngineError::Unreachable {
                socket: self.socket.clone(),
                source,
                hint: self.hint.clone(),
            })?;
        match reply {
            Reply::InvalidModel { message } => Err(EngineError::InvalidModel(message)),
            Reply::Stale { message } => Err(EngineError::Stale(message)),
            Reply::Error { message } => Err(EngineError::Failed(message)),
            Reply::Refused(plan) => Err(EngineError::Refused(Box::new(plan))),
            other => {
                let what = reply_name(&other);
                pick(other).ok_or(EngineError::Unexpected {
                    request: request_name(req),
                    what,
                })
            }
        }
    }

    /// What serving the model at `path` would change. `path` is made absolute (the
    /// engine may run in another directory).
    pub fn plan(&self, path: &Path, force: bool) -> Result<PlanReport, EngineError> {
        let path = absolute(path)?;
        self.ask(&Request::Plan { path, force }, |r| match r {
            Reply::Plan(p) => Some(p),
            _ => None,
        })
    }

    /// Serve the model at `path`, if the engine still runs the configuration
    /// `planned` was made against.
    pub fn apply(&self, planned: &PlanReport) -> Result<ApplyReport, EngineError> {
        let req = Request::Apply {
            path: planned.source.clone(),
            force: planned.force,
            expect_generation: Some(planned.generation),
        };
        self.ask(&req, |r| match r {
            Reply::Applied(a) => Some(a),
            _ => None,
        })
    }

    pub fn status(&self) -> Result<Status, EngineError> {
        self.ask(&Request::Status, |r| match r {
            Reply::Status(s) => Some(s),
            _ => None,
        })
    }

    pub fn sessions(&self) -> Result<Vec<Session>, EngineError> {
        self.ask(&Request::Sessions, |r| match r {
            Reply::Sessions { sessions } => Some(sessions),
            _ => None,
        })
    }

    /// Every statistics counter of the engine.
    pub fn statistics(&self) -> Result<crate::observe::stats::Statistics, EngineError> {
        self.ask(&Request::Stats, |r| match r {
            Reply::Stats(s) => Some(s),
            _ => None,
        })
    }
}

fn request_name(r: &Request) -> &'static str {
    match r {
        Request::Status => "status",
        Request::Sessions => "sessions",
        Request::Stats => "stats",
        Request::Plan { .. } => "plan",
        Request::Apply { .. } => "apply",
        Request::Reload { .. } => "reload",
    }
}

fn absolute(path: &Path) -> Result<PathBuf, EngineError> {
    std::fs::canonicalize(path).map_err(|e| {
        EngineError::InvalidModel(format!("{}: cannot resolve the path: {e}", path.display()))
    })
}
