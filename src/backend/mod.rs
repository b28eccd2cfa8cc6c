//! Backends: where a model is made real. LIO (configfs), its simulator, and the
//! userspace engine reached through its control socket.
//!
//! Owns: the [`Backend`] trait for configfs-shaped backends (observe → [`Observed`],
//! host facts, the cost of an op, an [`OpExecutor`] that carries ops out one at a
//! time), the LIO backend ([`lio`]: every configfs path, the observer, op execution
//! over a [`lio::ConfigFs`]), the simulated configfs ([`sim`]) used by tests and by
//! `ISCTL_SIMULATE`, and the client of the userspace engine ([`userspace`]: plan,
//! apply, status and sessions through the engine's control socket).
//! Does not: decide what to change (`plan`), order or roll back (`apply`), or choose
//! between backends (`reconcile`).
//! In: ops, or a model path for the engine. Out: observations, executed syscalls,
//! errors with errno and path; the engine's plans and reports.
//!
//! Why the engine is not a [`Backend`]: it serves the model itself and applies a new
//! one as a whole (open everything, then swap), so it plans in the model's terms
//! (`plan::served`) instead of being observed as configfs objects and driven op by
//! op. Both speak the same plan type, so `reconcile::Host` hides the difference.

pub mod lio;
pub mod sim;
pub mod userspace;

use std::fmt;

use crate::plan::Op;
use crate::state::{HostFacts, Observed, State};

/// How much to read when observing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObserveScope {
    /// What plans compare (managed attributes, links, sessions): fast.
    Managed,
    /// Also every unmanaged attribute that differs from the kernel's default, ALUA
    /// groups, ...: for `export` and `status`, so that nothing is silently dropped.
    Full,
}

/// A backend-level failure (not tied to one op).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The backend cannot be used here.
    #[error("{reason}; {hint}")]
    Unavailable { reason: String, hint: String },
    /// Reading the live state failed.
    #[error("reading {path}: {message}")]
    Observe {
        path: String,
        message: String,
        errno: Option<i32>,
    },
}

/// One failed op: what, where, and the errno.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    /// The op, as the plan prints it.
    pub op: String,
    /// The syscall that failed (`mkdir`, `write`, ...), if any.
    pub syscall: Option<&'static str>,
    /// The path it failed on.
    pub path: Option<String>,
    pub errno: Option<i32>,
    pub message: String,
}

/// `EBUSY (16)`.
pub fn errno_label(errno: i32) -> String {
    let name = format!("{:?}", nix::errno::Errno::from_raw(errno));
    format!("{name} ({errno})")
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.op)?;
        if let Some(s) = self.syscall {
            write!(f, ": {s}")?;
        }
        if let Some(p) = &self.path {
            write!(f, " {p}")?;
        }
        if let Some(e) = self.errno {
            write!(f, ": {}", errno_label(e))?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for OpError {}

/// Runs one op at a time (the `apply` executor journals and undoes).
pub trait OpExecutor: Sync {
    /// Carry out `op`.
    fn execute(&self, op: &Op) -> Result<(), OpError>;
    /// Carry out an undo step: like `execute`, but an object already gone (on
    /// delete) or already there (on create) is not an error, so that undoing a
    /// half-done forward step works.
    fn execute_tolerant(&self, op: &Op) -> Result<(), OpError>;
}

/// A place isctl can observe and change.
pub trait Backend: Sync {
    /// `lio`, `userspace`.
    fn name(&self) -> &'static str;
    /// Where (e.g. the configfs root), for messages.
    fn location(&self) -> String;
    /// Read the live state and sessions.
    fn observe(&self, scope: ObserveScope) -> Result<Observed, BackendError>;
    /// Facts about the backing files and devices `desired` names.
    fn host_facts(&self, desired: &State) -> HostFacts;
    /// How many backend operations (configfs syscalls for LIO) `op` expands to.
    fn operation_count(&self, op: &Op) -> u64;
    /// What carries out the plan's ops one at a time (the executor in `apply` runs
    /// them in lanes, journals them and undoes them on failure).
    fn executor(&self) -> &dyn OpExecutor;
    /// Mutating backend operations performed so far by this process (for the
    /// apply summary), if the backend counts them.
    fn operations_performed(&self) -> u64;
}
