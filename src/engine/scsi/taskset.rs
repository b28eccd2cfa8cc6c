//! The task set of one connection: which commands may run now, given their task
//! attributes (SAM-5 §8.6 "Task attribute"), when commands run concurrently.
//!
//! Pure bookkeeping, no I/O and no threads: the transport tells it that a command
//! arrived ([`TaskSet::arrive`]), that its Data-Out is all in ([`TaskSet::data_ready`]),
//! that it finished ([`TaskSet::complete`]) or was aborted ([`TaskSet::remove`]), and
//! asks which commands to start ([`TaskSet::take_runnable`]). One task set per logical
//! unit (commands for different LUNs never wait for each other).
//!
//! Rules (SAM-5 §8.6.2-8.6.4, the engine's control mode page reports QUEUE ALGORITHM
//! MODIFIER 1, unrestricted reordering, so SIMPLE commands need no data-integrity order
//! among themselves):
//! * HEAD OF QUEUE: enabled at once.
//! * ORDERED: enabled once every older task and every HEAD OF QUEUE task has completed.
//! * SIMPLE (and untagged, and ACA, which the engine does not support as such): enabled
//!   once every older ORDERED task and every HEAD OF QUEUE task has completed.
//! * Commands that change the LU's state for every command after them (MODE SELECT,
//!   reservations, FORMAT UNIT, START STOP UNIT) are treated as ORDERED whatever their
//!   attribute, so that the commands around them see the state in arrival order, as
//!   they did when commands ran one at a time.
//!
//! A task starts when it is enabled and its data is in (a write waiting for R2T data is
//! in the task set from its arrival, so it orders the tasks after it as SAM wants).

use std::collections::VecDeque;

use super::cdb::op;
use super::TaskAttribute;

/// How a task orders the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ordering {
    Simple,
    Ordered,
    HeadOfQueue,
}

impl Ordering {
    /// The ordering of a command from its task attribute and its CDB.
    pub fn of(attribute: TaskAttribute, cdb: &[u8]) -> Ordering {
        match attribute {
            TaskAttribute::HeadOfQueue => Ordering::HeadOfQueue,
            TaskAttribute::Ordered => Ordering::Ordered,
            _ if changes_lu_state(cdb) => Ordering::Ordered,
            _ => Ordering::Simple,
        }
    }
}

/// Commands whose effect every later command must see (and which must see every
/// earlier one): run alone, as if ORDERED.
fn changes_lu_state(cdb: &[u8]) -> bool {
    matches!(
        cdb.first().copied(),
        Some(
            op::MODE_SELECT_6
                | op::MODE_SELECT_10
                | op::RESERVE_6
                | op::RESERVE_10
                | op::RELEASE_6
                | op::RELEASE_10
                | op::PERSISTENT_RESERVE_OUT
                | op::START_STOP_UNIT
                | op::SANITIZE
                | 0x04 // FORMAT UNIT
        )
    )
}

#[derive(Debug)]
struct Task {
    tag: u32,
    lun: u64,
    ordering: Ordering,
    /// All of its Data-Out has arrived (always true for commands without data).
    data_ready: bool,
    /// Handed out by [`TaskSet::take_runnable`]: running until completed.
    started: bool,
}

/// The tasks of one connection that have arrived and not completed, oldest first.
#[derive(Debug, Default)]
pub struct TaskSet {
    tasks: VecDeque<Task>,
}

impl TaskSet {
    pub fn new() -> TaskSet {
        TaskSet::default()
    }

    /// A command arrived. `data_ready`: it has all its data (or needs none).
    pub fn arrive(&mut self, tag: u32, lun: u64, ordering: Ordering, data_ready: bool) {
        self.tasks.push_back(Task {
            tag,
            lun,
            ordering,
            data_ready,
            started: false,
        });
    }

    /// The last Data-Out of a write arrived.
    pub fn data_ready(&mut self, tag: u32) {
        if let Some(t) = self.tasks.iter_mut().find(|t| t.tag == tag) {
            t.data_ready = true;
        }
    }

    pub fn contains(&self, tag: u32) -> bool {
        self.tasks.iter().any(|t| t.tag == tag)
    }

    /// True when the task was handed out to run (it can no longer be withdrawn).
    pub fn started(&self, tag: u32) -> bool {
        self.tasks.iter().any(|t| t.tag == tag && t.started)
    }

    /// Tasks in the set (arrived, not completed).
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Tasks handed out and not completed.
    pub fn running(&self) -> usize {
        self.tasks.iter().filter(|t| t.started).count()
    }

    /// Tags of the tasks for `lun` (every LUN when `None`), oldest first.
    pub fn tags(&self, lun: Option<u64>) -> Vec<u32> {
        self.tasks
            .iter()
            .filter(|t| lun.is_none_or(|l| t.lun == l))
            .map(|t| t.tag)
            .collect()
    }

    /// The task finished (its status is being sent) or was aborted: it leaves the set.
    /// Returns whether it was there.
    pub fn complete(&mut self, tag: u32) -> bool {
        self.remove(tag)
    }

    /// The task leaves the set without running (aborted before it started).
    pub fn remove(&mut self, tag: u32) -> bool {
        match self.tasks.iter().position(|t| t.tag == tag) {
            Some(i) => {
                self.tasks.remove(i);
                true
            }
            None => false,
        }
    }

    /// Tasks that may start now, oldest first; each is handed out once.
    pub fn take_runnable(&mut self) -> Vec<u32> {
        let mut runnable = Vec::new();
        for i in 0..self.tasks.len() {
            let t = &self.tasks[i];
            if t.started || !t.data_ready || !self.enabled(i) {
                continue;
            }
            self.tasks[i].started = true;
            runnable.push(self.tasks[i].tag);
        }
        runnable
    }

    /// SAM-5 §8.6: may the task at `i` enter the enabled state?
    fn enabled(&self, i: usize) -> bool {
        let me = &self.tasks[i];
        let same_lu = |t: &&Task| t.lun == me.lun;
        match me.ordering {
            Ordering::HeadOfQueue => true,
            Ordering::Ordered => {
                let older_any = self.tasks.iter().take(i).any(|t| same_lu(&t));
                let hoq = self
                    .tasks
                    .iter()
                    .skip(i + 1)
                    .filter(same_lu)
                    .any(|t| t.ordering == Ordering::HeadOfQueue);
                !older_any && !hoq
            }
            Ordering::Simple => !self
                .tasks
                .iter()
                .enumerate()
                .filter(|(j, t)| *j != i && same_lu(t))
                .any(|(j, t)| {
                    t.ordering == Ordering::HeadOfQueue
                        || (j < i && t.ordering == Ordering::Ordered)
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LUN: u64 = 0;

    fn set(tasks: &[(u32, Ordering)]) -> TaskSet {
        let mut s = TaskSet::new();
        for &(tag, o) in tasks {
            s.arrive(tag, LUN, o, true);
        }
        s
    }

    use Ordering::{HeadOfQueue as H, Ordered as O, Simple as S};

    #[test]
    fn simple_tasks_all_run_at_once() {
        let mut s = set(&[(1, S), (2, S), (3, S)]);
        assert_eq!(s.take_runnable(), vec![1, 2, 3]);
        assert_eq!(
            s.take_runnable(),
            Vec::<u32>::new(),
            "each task is handed out once"
        );
        assert_eq!(s.running(), 3);
        // They may complete in any order.
        assert!(s.complete(2));
        assert!(s.complete(3));
        assert!(s.complete(1));
        assert!(s.is_empty());
    }

    #[test]
    fn an_ordered_task_waits_for_every_older_task_and_holds_back_newer_simple_ones() {
        let mut s = set(&[(1, S), (2, S), (3, O), (4, S), (5, S)]);
        assert_eq!(s.take_runnable(), vec![1, 2]);
        s.complete(1);
        assert_eq!(s.take_runnable(), Vec::<u32>::new(), "2 is still running");
        s.complete(2);
        assert_eq!(s.take_runnable(), vec![3]);
        assert_eq!(s.take_runnable(), Vec::<u32>::new(), "4 and 5 wait for 3");
        s.complete(3);
        assert_eq!(s.take_runnable(), vec![4, 5]);
    }

    #[test]
    fn consecutive_ordered_tasks_run_one_at_a_time_in_arrival_order() {
        let mut s = set(&[(1, O), (2, O), (3, O)]);
        for tag in 1..=3 {
            assert_eq!(s.take_runnable(), vec![tag]);
            s.complete(tag);
        }
    }

    #[test]
    fn head_of_queue_starts_at_once_and_newer_tasks_wait_for_it() {
        let mut s = set(&[(1, O), (2, S)]);
        assert_eq!(s.take_runnable(), vec![1]);
        s.arrive(3, LUN, H, true);
        s.arrive(4, LUN, S, true);
        assert_eq!(
            s.take_runnable(),
            vec![3],
            "HEAD OF QUEUE overtakes the queue"
        );
        s.complete(1);
        assert_eq!(
            s.take_runnable(),
            Vec::<u32>::new(),
            "SIMPLE waits for every HEAD OF QUEUE task"
        );
        s.complete(3);
        assert_eq!(s.take_runnable(), vec![2, 4]);
    }

    #[test]
    fn a_write_waiting_for_data_keeps_its_place() {
        let mut s = TaskSet::new();
        s.arrive(1, LUN, S, false); // a write whose Data-Out is still coming
        s.arrive(2, LUN, O, true);
        s.arrive(3, LUN, S, true);
        assert_eq!(
            s.take_runnable(),
            Vec::<u32>::new(),
            "2 waits for the write, 3 for 2"
        );
        s.data_ready(1);
        assert_eq!(s.take_runnable(), vec![1]);
        s.complete(1);
        assert_eq!(s.take_runnable(), vec![2]);
        s.complete(2);
        assert_eq!(s.take_runnable(), vec![3]);
    }

    #[test]
    fn logical_units_do_not_wait_for_each_other() {
        let mut s = TaskSet::new();
        s.arrive(1, 0, O, true);
        s.arrive(2, 0, S, true);
        s.arrive(3, 1, S, true);
        assert_eq!(s.take_runnable(), vec![1, 3]);
        assert_eq!(s.tags(Some(0)), vec![1, 2]);
        assert_eq!(s.tags(None), vec![1, 2, 3]);
    }

    #[test]
    fn an_aborted_task_that_never_started_releases_the_ones_behind_it() {
        let mut s = TaskSet::new();
        s.arrive(1, LUN, S, false);
        s.arrive(2, LUN, O, true);
        assert!(!s.started(1));
        assert!(s.remove(1));
        assert_eq!(s.take_runnable(), vec![2]);
        assert!(s.started(2));
        assert!(!s.remove(7), "an unknown tag is not in the set");
    }

    #[test]
    fn state_changing_commands_are_ordered_whatever_their_attribute() {
        let pr_out = [op::PERSISTENT_RESERVE_OUT, 0, 0, 0, 0, 0, 0, 0, 24, 0];
        let mode_select = [op::MODE_SELECT_10, 0x10, 0, 0, 0, 0, 0, 0, 24, 0];
        let write = [op::WRITE_10, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        assert_eq!(Ordering::of(TaskAttribute::Simple, &pr_out), O);
        assert_eq!(Ordering::of(TaskAttribute::Simple, &mode_select), O);
        assert_eq!(Ordering::of(TaskAttribute::Simple, &write), S);
        assert_eq!(Ordering::of(TaskAttribute::Untagged, &write), S);
        assert_eq!(Ordering::of(TaskAttribute::Ordered, &write), O);
        assert_eq!(Ordering::of(TaskAttribute::HeadOfQueue, &pr_out), H);
    }
}
