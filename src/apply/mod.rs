//! Applying a plan through a backend: lock, ledger, undo journal, rollback.
//!
//! Owns: the apply lock ([`lock`]), the ledger of managed objects ([`ledger`]), the
//! lane executor with its journal and rollback ([`executor`]), and [`apply`], which
//! ties them together.
//! Does not: decide what to change (`plan`) or how an op becomes syscalls
//! (`backend`).
//! In: a [`Plan`] that is not refused, a [`Backend`], the ledger. Out: an
//! [`Applied`] summary, or an [`ApplyError`] naming the failed op, its path and errno
//! and whether rollback restored everything.

pub mod executor;
pub mod ledger;
pub mod lock;

use std::fmt;
use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::plan::{Plan, Summary};

pub use executor::{ExecFailure, RollbackReport};
pub use ledger::{ChangedAttribute, Drift, Ledger, LedgerError};
pub use lock::{acquire as acquire_lock, ApplyLock, LockError};

/// Default number of worker threads. The kernel's slow configfs calls wait for RCU
/// grace periods, which concurrent writers share (docs/configfs.md §9), so lanes overlap
/// their waits: on the real kernel (VM benchmark, 100 targets) creating took 306–410 ms
/// with 4 workers and 168–192 ms with 8 (the 8-writer raw-syscall floor: 162–200 ms);
/// destroying 2.35 s and 1.7–1.8 s. 16 workers gained little more on creation.
pub const DEFAULT_WORKERS: usize = 8;

#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions {
    pub workers: usize,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            workers: DEFAULT_WORKERS,
        }
    }
}

/// A successful apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub summary: Summary,
    /// Backend (configfs) operations actually performed.
    pub operations: u64,
    pub elapsed: Duration,
}

/// A failed apply (after rollback).
#[derive(Debug)]
pub struct ApplyFailed {
    pub failure: Box<ExecFailure>,
    pub total_ops: usize,
    /// Backend operations performed, rollback included.
    pub operations: u64,
}

impl fmt::Display for ApplyFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let x = &self.failure;
        writeln!(
            f,
            "apply failed at step {} of {}: {}",
            x.op_index + 1,
            self.total_ops,
            x.error
        )?;
        if x.rollback.complete() {
            write!(
                f,
                "rollback complete: {} completed step(s) undone; the live configuration is as it was before apply",
                x.rollback.undone
            )?;
        } else {
            write!(
                f,
                "ROLLBACK INCOMPLETE: {} step(s) undone, {} undo step(s) failed; the live configuration is partly changed:",
                x.rollback.undone,
                x.rollback.errors.len()
            )?;
            for e in &x.rollback.errors {
                write!(f, "\n  undo failed: {e}")?;
            }
        }
        for k in &x.rollback.kept {
            write!(f, "\n  kept: {k}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The plan carries refusals (sessions, shrink, ...): nothing was done.
    #[error("the plan is refused; nothing was changed")]
    Refused,
    #[error("{0}")]
    Failed(ApplyFailed),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Apply `plan` and record the managed objects.
pub fn apply(
    plan: &Plan,
    backend: &dyn Backend,
    ledger: &mut Ledger,
    opts: &ApplyOptions,
) -> Result<Applied, ApplyError> {
    if plan.is_refused() {
        return Err(ApplyError::Refused);
    }
    let start = Instant::now();
    let before = backend.operations_performed();
    // Before the first write: what this run may create or change, durably, so
    // that a run killed half way leaves no orphan (see `ledger`).
    let managed_before = ledger.objects();
    let touched = plan.ops.iter().map(|p| p.op.object()).collect();
    ledger.begin(touched, plan.ops.len())?;
    if let Err(failure) = executor::run(plan, backend.executor(), opts.workers) {
        // Rolled back: what was managed stays managed, and what rollback could not
        // undo becomes managed, so that the next apply (or --prune) cleans it up.
        let mut objs = managed_before;
        for &i in &failure.left_applied {
            objs.insert(plan.ops[i].op.object());
        }
        ledger.end();
        ledger.set_objects(objs);
        ledger.save()?;
        return Err(ApplyError::Failed(ApplyFailed {
            failure,
            total_ops: plan.ops.len(),
            operations: backend.operations_performed() - before,
        }));
    }
    ledger.end();
    ledger.set_objects(plan.ledger_after.clone());
    ledger.set_applied(plan.applied_attributes.clone());
    ledger.save()?;
    Ok(Applied {
        summary: plan.summary(),
        operations: backend.operations_performed() - before,
        elapsed: start.elapsed(),
    })
}
