//! The lane executor: phases in order, the lanes of a phase on N worker threads,
//! the ops of a lane in order; a journal of completed ops; on the first failure,
//! every lane stops after its current op and the journal is undone in reverse.
//!
//! The kernel's slow configfs operations wait on RCU grace periods, not on the CPU
//! (docs/configfs.md §9), so independent lanes overlap their waits.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::backend::{OpError, OpExecutor};
use crate::plan::{Lane, Phase, Plan};

/// What a successful run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecReport {
    pub completed: usize,
    pub elapsed: Duration,
}

/// The result of undoing a failed run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RollbackReport {
    /// Completed ops that were undone.
    pub undone: usize,
    /// Undo steps that failed (the system may be half applied: see the list).
    pub errors: Vec<OpError>,
    /// Things rollback leaves on purpose (backing files are never deleted).
    pub kept: Vec<String>,
}

impl RollbackReport {
    pub fn complete(&self) -> bool {
        self.errors.is_empty()
    }
}

/// A failed run: the op that failed and how rollback went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecFailure {
    pub error: OpError,
    /// Index of the failed op in `plan.ops`.
    pub op_index: usize,
    /// Ops that had completed before the failure (all lanes).
    pub completed: usize,
    /// Indices of the ops completed and not undone (non-empty only when rollback
    /// failed), for the ledger.
    pub left_applied: Vec<usize>,
    pub rollback: RollbackReport,
}

/// Run `plan` through `exec` with `workers` threads (at least 1).
pub fn run(
    plan: &Plan,
    exec: &dyn OpExecutor,
    workers: usize,
) -> Result<ExecReport, Box<ExecFailure>> {
    let start = Instant::now();
    let workers = workers.max(1);
    // Phase → lanes (in first-appearance order) → op indices.
    let mut phases: BTreeMap<Phase, Vec<(Lane, Vec<usize>)>> = BTreeMap::new();
    for (i, p) in plan.ops.iter().enumerate() {
        let lanes = phases.entry(p.phase).or_default();
        match lanes.iter_mut().find(|(l, _)| *l == p.lane) {
            Some((_, v)) => v.push(i),
            None => lanes.push((p.lane.clone(), vec![i])),
        }
    }
    let journal: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    let failure: Mutex<Option<(usize, OpError)>> = Mutex::new(None);
    let abort = AtomicBool::new(false);

    for (_, lanes) in phases {
        let queue: Mutex<VecDeque<Vec<usize>>> =
            Mutex::new(lanes.into_iter().map(|(_, ops)| ops).collect());
        let n = workers
            .min(queue.lock().map(|q| q.len()).unwrap_or(1))
            .max(1);
        std::thread::scope(|s| {
            for _ in 0..n {
                s.spawn(|| loop {
                    let lane = {
                        let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
                        q.pop_front()
                    };
                    let Some(lane) = lane else { break };
                    for i in lane {
                        if abort.load(Ordering::SeqCst) {
                            return;
                        }
                        tracing::debug!(step = i + 1, "{}", plan.ops[i].op);
                        match exec.execute(&plan.ops[i].op) {
                            Ok(()) => journal.lock().unwrap_or_else(|e| e.into_inner()).push(i),
                            Err(e) => {
                                tracing::debug!(step = i + 1, "failed: {e}");
                                abort.store(true, Ordering::SeqCst);
                                let mut f = failure.lock().unwrap_or_else(|e| e.into_inner());
                                if f.is_none() {
                                    *f = Some((i, e));
                                }
                                return;
                            }
                        }
                    }
                });
            }
        });
        if abort.load(Ordering::SeqCst) {
            break;
        }
    }

    let journal = journal.into_inner().unwrap_or_else(|e| e.into_inner());
    let Some((op_index, error)) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) else {
        return Ok(ExecReport {
            completed: journal.len(),
            elapsed: start.elapsed(),
        });
    };
    let completed = journal.len();
    let (rollback, left_applied) = rollback(plan, exec, &journal);
    Err(Box::new(ExecFailure {
        error,
        op_index,
        completed,
        left_applied,
        rollback,
    }))
}

/// Undo completed ops in reverse completion order with their inverses, tolerant
/// of objects already gone or already there. Keeps going after an undo failure so
/// that as much as possible is restored; reports every failure.
pub fn rollback(
    plan: &Plan,
    exec: &dyn OpExecutor,
    journal: &[usize],
) -> (RollbackReport, Vec<usize>) {
    let mut report = RollbackReport::default();
    let mut left = Vec::new();
    for &i in journal.iter().rev() {
        let op = &plan.ops[i].op;
        if op.is_host_op() {
            report.kept.push(format!(
                "{op} (isctl never deletes or shrinks backing files)"
            ));
            continue;
        }
        let mut ok = true;
        for inv in op.inverse() {
            tracing::debug!("undo step {}: {inv}", i + 1);
            if let Err(e) = exec.execute_tolerant(&inv) {
                report.errors.push(e);
                ok = false;
                break;
            }
        }
        if ok {
            report.undone += 1;
        } else {
            left.push(i);
        }
    }
    (report, left)
}
