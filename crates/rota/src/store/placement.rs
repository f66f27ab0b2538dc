//! Placement: the assignments of tasks to nodes, and their fencing tokens.

use super::membership::Member;
use crate::error::Result;
use async_trait::async_trait;

/// The current owner of a task and its fencing token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub task: String,
    /// `None` while unplaced.
    pub owner: Option<(String, i64)>,
    pub token: i64,
    /// Why the task is unplaced, when it is.
    pub reason: Option<String>,
    /// Store time of the task's first placement on an owner (0 while it never had one): a
    /// new owner of a task with no recorded fire resumes from here, so an instant due before
    /// the first owner died is not lost, and time spent unplaced is not counted as missed.
    pub placed_at_ms: i64,
}

/// One change the leader writes: give `task` to `owner` (or to nobody, with a reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentChange {
    pub task: String,
    pub owner: Option<(String, i64)>,
    pub reason: Option<String>,
    /// The token the leader saw; `None` if the task had no assignment row yet.
    pub expected_token: Option<i64>,
}

/// Answer to a fenced leader write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderWrite {
    Written,
    /// The epoch is no longer current: nothing was written.
    Deposed,
    /// An assignment changed since the leader read it: nothing was written; read and retry.
    Stale,
}

/// Applies changed rows to the assignments held (rows are never deleted).
pub fn merge_assignments(held: &mut Vec<Assignment>, changed: Vec<Assignment>) {
    if changed.is_empty() {
        return;
    }
    let index: std::collections::HashMap<String, usize> = held
        .iter()
        .enumerate()
        .map(|(i, a)| (a.task.clone(), i))
        .collect();
    for a in changed {
        match index.get(&a.task) {
            Some(&i) => held[i] = a,
            None => held.push(a),
        }
    }
}

/// Where each task runs: the assignments, written by the leader only, each change of owner
/// with a higher fencing token.
#[async_trait]
pub trait PlacementStore: Send + Sync {
    /// Every task's assignment in the cluster.
    async fn assignments(&self, cluster: &str) -> Result<Vec<Assignment>>;

    /// The assignments changed by generations after `generation` (a generation read before
    /// from [`MembershipStore::generation`](crate::store::MembershipStore::generation) or [`MembershipStore::view`](crate::store::MembershipStore::view)): with what was read up to it, the
    /// whole table as of any later generation read. A row may come back although it did
    /// not change. Stores without change tracking return every row (the default).
    async fn assignments_since(&self, cluster: &str, _generation: i64) -> Result<Vec<Assignment>> {
        self.assignments(cluster).await
    }

    /// Writes placement changes as the leader of `epoch`, all or nothing. Refused
    /// ([`LeaderWrite::Deposed`]) unless `leader` holds `epoch` and is alive, judged inside
    /// the same transaction. Every change of owner increases the task's token by one
    /// (fencing tokens strictly increase per task, and never repeat).
    async fn write_assignments(
        &self,
        leader: &Member,
        epoch: i64,
        changes: &[AssignmentChange],
    ) -> Result<LeaderWrite>;
}
