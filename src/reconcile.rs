//! One reconciler for both backends: plan a model against what runs, apply the
//! plan, list sessions, whatever serves the model.
//!
//! Owns: [`Host`], the backend the commands act on (LIO or its simulator, or the
//! userspace engine), and the pipeline for each: for LIO, model → `state::lower` →
//! observe → `plan::diff` (with the ledger) → `apply` (lock, lanes, rollback,
//! ledger); for the engine, the model path → the engine plans (`plan::served`) →
//! the engine applies the plan it showed, as a whole. Both produce the same
//! [`Plan`] type, rendered by `plan::render` and refused in one vocabulary.
//! Does not: choose the backend from the command line (the CLI resolves that once),
//! print, or ask for confirmation.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::apply::{self, ApplyError, ApplyLock, ApplyOptions, Ledger, LedgerError, LockError};
use crate::backend::sim::Sim;
use crate::backend::userspace::{EngineError, UserspaceBackend};
use crate::backend::{Backend, BackendError, ObserveScope};
use crate::engine::api::PlanReport;
use crate::model::render::{render_toml, SecretsMode};
use crate::model::{self, Model};
use crate::plan::{self, DiffOptions, Plan};
use crate::state::export::ExportProblem;
use crate::state::{self, LowerErrors, Observed, Session};

/// Why reconciling failed. Each variant keeps the library error it came from, so the
/// CLI maps it to an exit code in one place.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The model asks for what the kernel target cannot do.
    #[error(transparent)]
    Lower(#[from] LowerErrors),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Saving the simulated configfs (`ISCTL_SIMULATE`) failed.
    #[error("saving the simulated configfs to {path}: {source}")]
    SaveSimulation {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// LIO through configfs (or the simulated configfs), with isctl's ledger.
pub struct LioHost {
    backend: Box<dyn Backend>,
    state_dir: PathBuf,
    /// The simulator and the file to save it back to, when simulating.
    simulation: Option<(Arc<Sim>, PathBuf)>,
}

impl LioHost {
    pub fn new(backend: Box<dyn Backend>, state_dir: &Path) -> LioHost {
        LioHost {
            backend,
            state_dir: state_dir.to_path_buf(),
            simulation: None,
        }
    }

    /// LIO on a simulated configfs that is saved back to `file` after an apply.
    pub fn simulated(
        backend: Box<dyn Backend>,
        state_dir: &Path,
        sim: Arc<Sim>,
        file: PathBuf,
    ) -> LioHost {
        LioHost {
            simulation: Some((sim, file)),
            ..LioHost::new(backend, state_dir)
        }
    }

    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    pub fn ledger(&self) -> Result<Ledger, LedgerError> {
        Ledger::load(
            &self.state_dir,
            self.backend.name(),
            &self.backend.location(),
        )
    }

    pub fn observe(&self, scope: ObserveScope) -> Result<Observed, BackendError> {
        self.backend.observe(scope)
    }

    fn persist(&self) -> Result<(), ReconcileError> {
        if let Some((sim, file)) = &self.simulation {
            sim.save(file)
                .map_err(|source| ReconcileError::SaveSimulation {
                    path: file.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}

/// The backend the commands act on.
pub enum Host {
    Lio(LioHost),
    Engine(UserspaceBackend),
}

/// A plan, and what applying exactly that plan needs.
pub struct Planned {
    pub plan: Plan,
    pending: Pending,
}

enum Pending {
    Lio { ledger: Ledger },
    Engine(PlanReport),
}

/// What one unattended plan-and-apply did (`Host::reconcile`).
#[derive(Debug)]
pub enum Reconciled {
    /// Nothing to change (the desired objects were adopted).
    NoChanges(Plan),
    /// The plan was refused (sessions in the way, a shrink, an unmanaged object in
    /// the way, or the engine refused at apply time); nothing changed.
    Refused(Plan),
    /// The plan was applied.
    Applied(Plan, Outcome),
}

/// What an apply did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Backend operations performed (configfs syscalls for LIO; 0 for the engine,
    /// which swaps its configuration in one step).
    pub operations: u64,
    pub elapsed: Duration,
    /// Sessions the engine closed because the plan cut them (with `--force`).
    pub closed_sessions: Vec<u16>,
}

impl Host {
    /// `lio`, `userspace`.
    pub fn name(&self) -> &'static str {
        match self {
            Host::Lio(l) => l.backend.name(),
            Host::Engine(_) => "userspace",
        }
    }

    /// Where, for messages: the configfs root, or the engine's socket.
    pub fn location(&self) -> String {
        match self {
            Host::Lio(l) => l.backend.location(),
            Host::Engine(e) => e.socket().display().to_string(),
        }
    }

    /// Take the apply lock, where the backend needs one: LIO's plan must not go
    /// stale under another isctl. The engine serialises changes itself and refuses
    /// an apply whose plan went stale.
    pub fn lock(&self, timeout: Duration) -> Result<Option<ApplyLock>, LockError> {
        match self {
            Host::Lio(l) => apply::acquire_lock(&l.state_dir, timeout).map(Some),
            Host::Engine(_) => Ok(None),
        }
    }

    /// Plan `model` (loaded from `path`) against what runs.
    pub fn plan(
        &self,
        path: &Path,
        model: &Model,
        opts: &DiffOptions,
    ) -> Result<Planned, ReconcileError> {
        match self {
            Host::Lio(l) => {
                let desired = state::lower(model)?;
                let observed = l.backend.observe(ObserveScope::Managed)?;
                let facts = l.backend.host_facts(&desired);
                let ledger = l.ledger()?;
                let mut plan = plan::diff(&desired, &observed, &facts, &ledger.objects(), opts);
                plan.count_operations(|op| l.backend.operation_count(op));
                Ok(Planned {
                    plan,
                    pending: Pending::Lio { ledger },
                })
            }
            Host::Engine(e) => {
                let report = e.plan(path, opts.force)?;
                Ok(Planned {
                    plan: report.to_plan(),
                    pending: Pending::Engine(report),
                })
            }
        }
    }

    /// Record that the desired objects of an empty plan exist (LIO adopts what
    /// already matches into its ledger; the engine has nothing to record).
    pub fn adopt(&self, planned: &mut Planned) -> Result<(), ReconcileError> {
        if let Pending::Lio { ledger, .. } = &mut planned.pending {
            let plan = &planned.plan;
            if ledger.objects() != plan.ledger_after
                || ledger.applied() != plan.applied_attributes
                || ledger.interrupted().is_some()
            {
                // An interrupted apply that got as far as the model asks is settled
                // here: nothing is left to do, so its record ends.
                ledger.end();
                ledger.set_objects(plan.ledger_after.clone());
                ledger.set_applied(plan.applied_attributes.clone());
                ledger.save()?;
            }
        }
        Ok(())
    }

    /// Apply exactly the plan that was shown.
    pub fn apply(
        &self,
        planned: &mut Planned,
        opts: &ApplyOptions,
    ) -> Result<Outcome, ReconcileError> {
        match (self, &mut planned.pending) {
            (Host::Lio(l), Pending::Lio { ledger }) => {
                let result = apply::apply(&planned.plan, l.backend.as_ref(), ledger, opts);
                l.persist()?;
                let done = result?;
                Ok(Outcome {
                    operations: done.operations,
                    elapsed: done.elapsed,
                    closed_sessions: Vec::new(),
                })
            }
            (Host::Engine(e), Pending::Engine(report)) => {
                let start = std::time::Instant::now();
                let done = e.apply(report)?;
                Ok(Outcome {
                    operations: 0,
                    elapsed: start.elapsed(),
                    closed_sessions: done.closed_sessions,
                })
            }
            _ => unreachable!("a plan is applied by the host that made it"),
        }
    }

    /// Lock, plan, and apply what the plan says with exactly the safety of
    /// `isctl apply --auto-approve`: a refused plan is returned, not applied, an
    /// empty one is adopted. For callers without a person to confirm (`isctl watch`).
    pub fn reconcile(
        &self,
        path: &Path,
        model: &Model,
        diff: &DiffOptions,
        opts: &ApplyOptions,
        lock_timeout: Duration,
    ) -> Result<Reconciled, ReconcileError> {
        let _lock = self.lock(lock_timeout)?;
        let mut planned = self.plan(path, model, diff)?;
        if planned.plan.is_refused() {
            return Ok(Reconciled::Refused(planned.plan));
        }
        if planned.plan.is_empty() {
            self.adopt(&mut planned)?;
            return Ok(Reconciled::NoChanges(planned.plan));
        }
        match self.apply(&mut planned, opts) {
            Ok(done) => Ok(Reconciled::Applied(planned.plan, done)),
            // Sessions logged in between the plan and the apply.
            Err(ReconcileError::Engine(EngineError::Refused(report))) => {
                Ok(Reconciled::Refused(report.to_plan()))
            }
            Err(e) => Err(e),
        }
    }

    /// Every logged-in session.
    pub fn sessions(&self) -> Result<Vec<Session>, ReconcileError> {
        match self {
            Host::Lio(l) => Ok(l.backend.observe(ObserveScope::Managed)?.sessions),
            Host::Engine(e) => Ok(e.sessions()?),
        }
    }
}

/// Load an exported model back (secrets inline, in memory), lower it and plan it
/// against what was observed: anything but "no changes" is a problem. This is how
/// `isctl export` proves it is lossless.
pub fn check_export(m: &Model, observed: &Observed, backend: &dyn Backend) -> Vec<ExportProblem> {
    let mut problems = Vec::new();
    let text = render_toml(m, &SecretsMode::Show, &[]);
    let loaded = match model::load_str("exported.toml", &text) {
        Ok(l) => l.model,
        Err(e) => {
            for d in e.errors() {
                problems.push(ExportProblem {
                    object: d.object_display(),
                    problem: format!("the exported model does not load: {}", d.problem),
                });
            }
            return problems;
        }
    };
    let desired = match state::lower(&loaded) {
        Ok(d) => d,
        Err(e) => {
            for x in e.0 {
                problems.push(ExportProblem {
                    object: x.object,
                    problem: format!("the exported model cannot be applied to LIO: {}", x.problem),
                });
            }
            return problems;
        }
    };
    let host = backend.host_facts(&desired);
    let p = plan::diff(
        &desired,
        observed,
        &host,
        &Default::default(),
        &DiffOptions::default(),
    );
    for c in &p.changes {
        problems.push(ExportProblem {
            object: c.address.clone(),
            problem: format!(
                "self-check: planning the exported model would {:?} it{}",
                c.action,
                c.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            )
            .to_lowercase(),
        });
    }
    for r in &p.refusals {
        problems.push(ExportProblem {
            object: r.object.as_ref().map(|o| o.to_string()).unwrap_or_default(),
            problem: format!("self-check: {}", r.problem),
        });
    }
    problems
}
