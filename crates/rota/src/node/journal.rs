//! The cluster's event journal, as nodes write it: joins and leaves by the node itself,
//! deaths, failovers and leader changes by the leader that acts on them. Recording is best
//! effort and off the node's loops: the journal is for people, and neither a store error nor
//! a slow store here may delay a heartbeat, a placement or a failover.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::Arc,
    time::Duration,
};

use serde_json::json;
use tokio::sync::mpsc;
use tracing::debug;

use crate::store::{Assignment, AssignmentChange, ClusterView, EventRecord, Member, Store};

/// Events waiting for the writer; beyond this, new ones are dropped (and logged).
const QUEUE: usize = 256;
/// Longest wait for one write.
const WRITE_BOUND: Duration = Duration::from_secs(2);

/// A node's journal writer: `record` queues, one background task writes in order.
pub(crate) struct Journal {
    tx: mpsc::Sender<EventRecord>,
}

impl Journal {
    pub fn spawn(store: Arc<dyn Store>, cluster: String) -> Journal {
        let (tx, mut rx) = mpsc::channel::<EventRecord>(QUEUE);
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                write(store.as_ref(), &cluster, &event).await;
            }
        });
        Journal { tx }
    }

    /// Queues `event` without waiting.
    pub fn record(&self, event: EventRecord) {
        if let Err(e) = self.tx.try_send(event) {
            debug!(error = %e, "the journal queue is full; an event is dropped");
        }
    }
}

/// Writes `event` now, bounded (for the last event of a node that is leaving).
pub(crate) async fn write(store: &dyn Store, cluster: &str, event: &EventRecord) {
    match tokio::time::timeout(WRITE_BOUND, store.record_event(cluster, event)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(error = %e, kind = %event.kind, "could not record an event"),
        Err(_) => debug!(kind = %event.kind, "recording an event timed out"),
    }
}

pub(crate) fn joined(member: &Member, at_ms: i64, host: &str) -> EventRecord {
    EventRecord::new(
        at_ms,
        "node_joined",
        &format!("{}-{}", member.node, member.incarnation),
        &json!({"node": member.node, "incarnation": member.incarnation, "host": host}),
    )
}

pub(crate) fn left(member: &Member, at_ms: i64) -> EventRecord {
    EventRecord::new(
        at_ms,
        "node_left",
        &format!("{}-{}", member.node, member.incarnation),
        &json!({"node": member.node, "incarnation": member.incarnation}),
    )
}

pub(crate) fn leader_changed(
    member: &Member,
    epoch: i64,
    previous: Option<&str>,
    at_ms: i64,
) -> EventRecord {
    EventRecord::new(
        at_ms,
        "leader_changed",
        &format!("epoch-{epoch}"),
        &json!({"node": member.node, "incarnation": member.incarnation, "epoch": epoch, "previous": previous}),
    )
}

/// A failed fire of `task` is run again as `attempt`, at `retry_at_ms` (its retry policy).
pub(crate) fn retried(
    member: &Member,
    task: &str,
    instant: i64,
    attempt: i64,
    retry_at_ms: i64,
    at_ms: i64,
) -> EventRecord {
    EventRecord::new(
        at_ms,
        "fire_retry",
        &format!("{task}-{instant}-{attempt}"),
        &json!({"task": task, "instant_ms": instant, "attempt": attempt, "retry_at_ms": retry_at_ms, "node": member.node}),
    )
}

/// One `node_died` per registration that expired without leaving, timed at its expiry
/// (store time), so every leader reports the same death with the same id. `reported`
/// remembers what this leader already recorded (only registrations still dead).
pub(crate) fn deaths(
    view: &ClusterView,
    reported: &mut HashSet<(String, i64)>,
    not_before_ms: i64,
) -> Vec<EventRecord> {
    reported.retain(|(node, inc)| {
        view.nodes
            .iter()
            .any(|n| n.node == *node && n.incarnation == *inc && !n.alive)
    });
    view.nodes
        .iter()
        .filter(|n| !n.alive && !n.leaving)
        .filter(|n| n.heartbeat_at_ms + n.timeout_ms >= not_before_ms)
        .filter(|n| reported.insert((n.node.clone(), n.incarnation)))
        .map(|n| {
            EventRecord::new(
                n.heartbeat_at_ms + n.timeout_ms,
                "node_died",
                &format!("{}-{}", n.node, n.incarnation),
                &json!({"node": n.node, "incarnation": n.incarnation, "last_heartbeat_ms": n.heartbeat_at_ms}),
            )
        })
        .collect()
}

/// Tasks taken from one dead registration by one placement round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failover {
    pub from: String,
    pub incarnation: i64,
    /// From the dead node's last renewal (it died at most one heartbeat later) to `at_ms`;
    /// unknown when its registration is gone (replaced by its own restart).
    pub duration_ms: Option<i64>,
    /// Each task and its new owner.
    pub tasks: Vec<(String, String)>,
}

/// The failovers in a placement round that was written at `at_ms`: tasks moved to a new
/// owner from an owner that is no longer live. A graceful handover is not a failover.
/// `before` is sorted by task, as `merge_assignments` keeps it.
pub(crate) fn failovers(
    before: &[Assignment],
    changes: &[AssignmentChange],
    live: &BTreeSet<(String, i64)>,
    view: &ClusterView,
    at_ms: i64,
) -> Vec<Failover> {
    // `before` is sorted by task (see `merge_assignments`): no index of every task.
    let previous = |task: &str| {
        before
            .binary_search_by(|a| a.task.as_str().cmp(task))
            .ok()
            .and_then(|i| before[i].owner.as_ref())
    };
    let mut moved: BTreeMap<(String, i64), Vec<(String, String)>> = BTreeMap::new();
    for c in changes {
        let (Some((to, _)), Some(from)) = (&c.owner, previous(&c.task)) else {
            continue;
        };
        if !live.contains(from) {
            moved
                .entry(from.clone())
                .or_default()
                .push((c.task.clone(), to.clone()));
        }
    }
    moved
        .into_iter()
        .map(|((from, incarnation), tasks)| {
            let last = view
                .nodes
                .iter()
                .find(|n| n.node == from && n.incarnation == incarnation)
                .map(|n| n.heartbeat_at_ms);
            Failover {
                duration_ms: last.map(|h| (at_ms - h).max(0)),
                from,
                incarnation,
                tasks,
            }
        })
        .collect()
}

impl Failover {
    pub(crate) fn event(&self, epoch: i64, at_ms: i64) -> EventRecord {
        let tasks: Vec<_> = self
            .tasks
            .iter()
            .map(|(task, to)| json!({"task": task, "to": to}))
            .collect();
        EventRecord::new(
            at_ms,
            "failover",
            &format!("{}-{}-{epoch}", self.from, self.incarnation),
            &json!({"from": self.from, "incarnation": self.incarnation, "duration_ms": self.duration_ms, "tasks": tasks}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NodeRecord;

    fn node(id: &str, inc: i64, alive: bool, leaving: bool, heartbeat: i64) -> NodeRecord {
        NodeRecord {
            leaving,
            ..NodeRecord::for_test(id, inc, alive, heartbeat, 1_000)
        }
    }

    fn view(nodes: Vec<NodeRecord>) -> ClusterView {
        ClusterView {
            now_ms: 0,
            generation: 0,
            nodes,
            leader: None,
        }
    }

    fn owned(task: &str, node: &str, inc: i64) -> Assignment {
        Assignment {
            task: task.into(),
            owner: Some((node.into(), inc)),
            token: 1,
            reason: None,
            placed_at_ms: 0,
        }
    }

    fn to(task: &str, node: &str, inc: i64) -> AssignmentChange {
        AssignmentChange {
            task: task.into(),
            owner: Some((node.into(), inc)),
            reason: None,
            expected_token: Some(1),
        }
    }

    #[test]
    fn tasks_moved_off_a_dead_node_are_one_failover_timed_from_its_last_heartbeat() {
        let v = view(vec![
            node("a", 1, false, false, 10_000),
            node("b", 2, true, false, 11_000),
            node("c", 3, true, true, 11_000),
        ]);
        let before = [
            owned("t1", "a", 1),
            owned("t2", "a", 1),
            owned("t3", "c", 3),
        ];
        let changes = [to("t1", "b", 2), to("t2", "b", 2), to("t3", "b", 2)];
        let live: BTreeSet<(String, i64)> = [("b".to_string(), 2), ("c".to_string(), 3)].into();
        let f = failovers(&before, &changes, &live, &v, 10_900);
        assert_eq!(
            f,
            vec![Failover {
                from: "a".into(),
                incarnation: 1,
                duration_ms: Some(900),
                tasks: vec![("t1".into(), "b".into()), ("t2".into(), "b".into())],
            }],
            "the handover from the leaving node c is not a failover"
        );
        let e = f[0].event(7, 10_900);
        assert_eq!(e.id, "0000000010900-failover-a-1-7");
        assert_eq!(e.kind, "failover");
    }

    #[test]
    fn each_death_is_reported_once_at_its_expiry_and_old_ones_not_at_all() {
        let v = view(vec![
            node("a", 1, false, false, 10_000),
            node("b", 2, false, true, 10_000),
            node("c", 3, false, false, 1_000),
            node("d", 4, true, false, 11_000),
        ]);
        let mut reported = HashSet::new();
        let d = deaths(&v, &mut reported, 5_000);
        assert_eq!(
            d.len(),
            1,
            "not the leaving one, not the old one, not the live one"
        );
        assert_eq!(d[0].at_ms, 11_000);
        assert_eq!(d[0].id, "0000000011000-node_died-a-1");
        assert!(deaths(&v, &mut reported, 5_000).is_empty(), "once");
    }
}
