//! Plans: the pure diff of desired against observed state, ordered and minimal.
//!
//! Owns: [`diff`](fn@diff) (desired [`State`](crate::state::State) × observed state, sessions, host facts, the set
//! of objects isctl manages → [`Plan`]), the [`Op`]s a plan is made of and their
//! inverses, the ordering into phases and lanes, the safety rules (sessions,
//! unmanaged objects, backing files), and rendering a plan as text or JSON.
//! Does not: any I/O. What the kernel holds arrives as data (`state::Observed`,
//! `state::HostFacts`); executing ops is `apply`'s and the backends' job.
//! In: desired and observed states, the ledger's managed set, options.
//! Out: a [`Plan`]: object-level [`Change`]s for people, ordered [`PlannedOp`]s for the
//! executor, unmanaged objects, sessions the plan would cut, refusals.

pub mod diff;
pub mod op;
pub mod render;
pub mod served;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::model::Origin;
use crate::state::{ObjectId, Session};

pub use diff::{diff, DiffOptions};
pub use op::{
    AclAddr, AuthScope, BackstoreSetting, Lane, LunAddr, MappedLunAddr, Op, Phase, TargetAddr,
    TpgAddr, TpgSetting, TpgSnapshot, LINK_NAME,
};
pub use served::{diff_served, engine_limits, ServedPlan, ServedSession};

/// What happens to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    /// Delete and create again (an attribute that cannot change in place changed).
    Replace,
    Delete,
}

impl Action {
    /// The terraform-style marker.
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
        }
    }
}

/// One attribute of a change. Values are already rendered; secrets are
/// `(sensitive)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttrChange {
    pub name: String,
    pub old: Option<String>,
    pub new: Option<String>,
    pub sensitive: bool,
    /// This attribute's change is why the object is replaced.
    pub forces_replacement: bool,
}

/// An object-level change, for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub action: Action,
    pub object: ObjectId,
    /// The object as a one-line address (`target "iqn..." tpg 1`).
    pub address: String,
    pub attributes: Vec<AttrChange>,
    /// Why it is replaced, or deleted although not managed (e.g. "maps a LUN being
    /// removed", "unmanaged, --prune").
    pub reason: Option<String>,
    /// Side notes (backing file created, file kept, ...).
    pub notes: Vec<String>,
}

/// An op with its place in the schedule and its cost in backend operations.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedOp {
    pub phase: Phase,
    pub lane: Lane,
    pub op: Op,
    /// Backend operations (configfs syscalls for LIO) this op expands to.
    pub backend_operations: u64,
}

/// A session the plan would cut, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCut {
    pub session: Session,
    /// The change that cuts it.
    pub by: String,
}

/// Every kind of [`Refusal`]: the one vocabulary both backends refuse in.
pub const REFUSAL_KINDS: &[&str] = &[
    "sessions",
    "shrink",
    "backing_file",
    "device",
    "blocked",
    "portal_conflict",
    "unsupported",
];

/// Why the plan must not be applied as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// One of [`REFUSAL_KINDS`].
    pub kind: &'static str,
    pub object: Option<ObjectId>,
    #[serde(skip)]
    pub origin: Option<Origin>,
    pub problem: String,
    pub fix: String,
}

/// A [`Refusal`] as read back (from the engine's control socket): its kind must be
/// one of [`REFUSAL_KINDS`]; an unknown kind is an error, not a silent rename.
#[derive(Deserialize)]
struct RefusalWire {
    kind: String,
    object: Option<ObjectId>,
    problem: String,
    fix: String,
}

impl<'de> Deserialize<'de> for Refusal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Refusal, D::Error> {
        let w = RefusalWire::deserialize(d)?;
        let kind = REFUSAL_KINDS
            .iter()
            .find(|k| **k == w.kind)
            .copied()
            .ok_or_else(|| {
                serde::de::Error::custom(format!("unknown refusal kind {:?}", w.kind))
            })?;
        Ok(Refusal {
            kind,
            object: w.object,
            origin: None,
            problem: w.problem,
            fix: w.fix,
        })
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(o) = &self.origin {
            write!(f, "{o}: ")?;
        }
        if let Some(obj) = &self.object {
            write!(f, "{obj}: ")?;
        }
        write!(f, "{} (fix: {})", self.problem, self.fix)
    }
}

/// Counts for the summary line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
    pub configfs_operations: u64,
}

/// A complete plan.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub ops: Vec<PlannedOp>,
    /// Live objects neither desired nor managed (top-most only), left alone.
    pub unmanaged: Vec<ObjectId>,
    /// Sessions the plan would cut (a refusal unless `force`).
    pub sessions_cut: Vec<SessionCut>,
    pub refusals: Vec<Refusal>,
    pub warnings: Vec<String>,
    /// The managed set after a successful apply (the desired objects).
    pub ledger_after: BTreeSet<ObjectId>,
    /// The managed attribute values a successful apply leaves (no secrets), for
    /// drift detection by `status` (`state::managed_attributes`).
    pub applied_attributes:
        std::collections::BTreeMap<ObjectId, std::collections::BTreeMap<String, String>>,
    pub force: bool,
    pub prune: bool,
    /// The backend takes the whole model at once and is atomic itself (the userspace
    /// engine): there are no per-op steps, and no configfs operations to count.
    pub applied_as_whole: bool,
}

impl Plan {
    /// Nothing to change (unmanaged objects do not count).
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.ops.is_empty()
    }

    pub fn is_refused(&self) -> bool {
        !self.refusals.is_empty()
    }

    /// Fill in each op's backend cost (e.g. `LioBackend::operation_count`).
    pub fn count_operations(&mut self, count: impl Fn(&Op) -> u64) {
        for p in &mut self.ops {
            p.backend_operations = count(&p.op);
        }
    }

    /// Refuse the plan when it cuts logged-in sessions and `force` is not set. The
    /// same words for both backends, so that a script or a person reads one refusal.
    pub fn refuse_session_cuts(&mut self) {
        if self.sessions_cut.is_empty() || self.force {
            return;
        }
        let list: Vec<String> = self
            .sessions_cut
            .iter()
            .map(|c| format!("{} [{}]", c.session.describe(), c.by))
            .collect();
        self.refusals.push(Refusal {
            kind: "sessions",
            object: None,
            origin: None,
            problem: format!(
                "the plan would cut {} logged-in session(s): {}",
                list.len(),
                list.join("; ")
            ),
            fix: "log the initiators out first, or pass --force to cut them".to_string(),
        });
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for c in &self.changes {
            match c.action {
                Action::Create => s.add += 1,
                Action::Update => s.change += 1,
                Action::Delete => s.destroy += 1,
                Action::Replace => {
                    s.add += 1;
                    s.destroy += 1;
                }
            }
        }
        s.configfs_operations = self.ops.iter().map(|p| p.backend_operations).sum();
        s
    }
}

/// A plan with refusals was not applied (the refusals were printed with it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the plan is refused ({problems} problem(s) listed above); nothing was changed")]
pub struct PlanRefused {
    pub problems: usize,
}
