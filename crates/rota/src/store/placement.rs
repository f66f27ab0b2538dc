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

/// Applies changed rows to the assignments held (rows are never deleted). `held` is kept
/// sorted by task (start from empty, and change it only here), so each changed row is
/// found by binary search: the cost follows the changes, not the tasks held. (An index of every task, built at each change, cost each of
/// 100 nodes of 100,000 tasks tens of milliseconds of CPU at every join, all at once.)
pub fn merge_assignments(held: &mut Vec<Assignment>, changed: Vec<Assignment>) {
    debug_assert!(held.is_sorted_by(|x, y| x.task < y.task));
    let mut added = Vec::new();
    for a in changed {
        match held.binary_search_by(|h| h.task.cmp(&a.task)) {
            Ok(i) => held[i] = a,
            Err(_) => added.push(a),
        }
    }
    if added.is_empty() {
        return;
    }
    held.extend(added);
    // Stable: of two rows of one new task, the later one was read last and is kept.
    held.sort_by(|x, y| x.task.cmp(&y.task));
    held.dedup_by(|later, kept| {
        let same = later.task == kept.task;
        if same {
            std::mem::swap(later, kept);
        }
        same
    });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(task: &str, node: &str, token: i64) -> Assignment {
        Assignment {
            task: task.into(),
            owner: Some((node.into(), 1)),
            token,
            reason: None,
            placed_at_ms: 0,
        }
    }

    #[test]
    fn merged_rows_replace_theirs_and_new_ones_are_added_in_order() {
        let mut held = Vec::new();
        merge_assignments(&mut held, vec![row("c", "n1", 1), row("a", "n1", 1)]);
        merge_assignments(
            &mut held,
            vec![
                row("b", "n2", 1),
                row("c", "n2", 2),
                row("d", "n1", 1),
                row("b", "n3", 2),
            ],
        );
        let seen: Vec<(&str, &str, i64)> = held
            .iter()
            .map(|a| {
                (
                    a.task.as_str(),
                    a.owner.as_ref().unwrap().0.as_str(),
                    a.token,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("a", "n1", 1),
                ("b", "n3", 2),
                ("c", "n2", 2),
                ("d", "n1", 1)
            ]
        );
        merge_assignments(&mut held, vec![row("a", "n4", 5)]);
        assert_eq!(held[0].owner.as_ref().unwrap().0, "n4");
        assert_eq!(held.len(), 4);
    }
}
