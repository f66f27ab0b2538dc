//! A snapshot of a cluster read from its store: what `rota status` prints (and what the admin
//! API will serve). Reads only; works while no node runs.

use std::{collections::BTreeMap, str::FromStr, sync::Arc};

use crate::{
    error::Result,
    store::{FireRecord, NodeRecord, Store},
};
use rota_core::schedule::Schedule;

#[derive(Debug, Clone)]
pub struct TaskRow {
    pub name: String,
    /// Owner node id and whether that owner is alive.
    pub owner: Option<(String, bool)>,
    pub token: Option<i64>,
    pub schedule: Option<String>,
    pub next_fire_ms: Option<i64>,
    pub last: Option<FireRecord>,
    pub unplaced_reason: Option<String>,
    /// Live nodes declare this task with different definitions.
    pub conflict: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub cluster: String,
    pub store_kind: &'static str,
    pub now_ms: i64,
    pub leader: Option<(String, i64)>,
    pub nodes: Vec<NodeRecord>,
    pub tasks: Vec<TaskRow>,
    pub history: Vec<FireRecord>,
}

impl Snapshot {
    pub async fn read(store: &Arc<dyn Store>, cluster: &str, history: i64) -> Result<Snapshot> {
        let view = store.view(cluster).await?;
        let assignments = store.assignments(cluster).await?;
        let mut schedules: BTreeMap<String, String> = BTreeMap::new();
        // task -> definition hash -> live nodes declaring it
        let mut definitions: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        for n in store.declarations(cluster, None).await? {
            let alive = view
                .nodes
                .iter()
                .any(|r| r.node == n.node && r.incarnation == n.incarnation && r.alive);
            // Reserved declarations (a node's labels and placement specs) are not tasks.
            for d in &n.set.tasks {
                if alive {
                    definitions
                        .entry(d.name.clone())
                        .or_default()
                        .entry(d.hash.clone())
                        .or_default()
                        .push(n.node.clone());
                }
                if !schedules.contains_key(&d.name) {
                    schedules.insert(d.name.clone(), d.schedule.clone());
                }
            }
        }
        let mut names: Vec<String> = schedules.keys().cloned().collect();
        for a in &assignments {
            if !schedules.contains_key(&a.task) {
                names.push(a.task.clone());
            }
        }
        names.sort();
        let mut tasks = Vec::with_capacity(names.len());
        for name in names {
            let a = assignments.iter().find(|a| a.task == name);
            let schedule = schedules.get(&name).cloned();
            let last = store
                .history(cluster, Some(&name), 1)
                .await?
                .into_iter()
                .next();
            let from = last
                .as_ref()
                .map_or(view.now_ms, |l| l.instant_ms.max(view.now_ms));
            let next_fire_ms = schedule
                .as_deref()
                .and_then(|s| Schedule::from_str(s).ok())
                .and_then(|s| s.next_after(from));
            let owner = a.and_then(|a| a.owner.clone()).map(|(node, inc)| {
                let alive = view
                    .nodes
                    .iter()
                    .any(|n| n.node == node && n.incarnation == inc && n.alive);
                (node, alive)
            });
            let conflict = definitions
                .get(&name)
                .filter(|defs| defs.len() > 1)
                .map(|defs| {
                    let groups: Vec<String> = defs
                        .iter()
                        .map(|(hash, nodes)| format!("{} declare {hash}", nodes.join(", ")))
                        .collect();
                    format!("definitions differ: {}", groups.join("; "))
                });
            tasks.push(TaskRow {
                conflict,
                name,
                owner,
                token: a.map(|a| a.token),
                schedule,
                next_fire_ms,
                last,
                unplaced_reason: a.and_then(|a| a.reason.clone()),
            });
        }
        let history = store.history(cluster, None, history).await?;
        let leader = view
            .leader
            .filter(|l| {
                view.nodes
                    .iter()
                    .any(|n| n.node == l.node && n.incarnation == l.incarnation && n.alive)
            })
            .map(|l| (l.node, l.epoch));
        Ok(Snapshot {
            cluster: cluster.to_string(),
            store_kind: store.kind(),
            now_ms: view.now_ms,
            leader,
            nodes: view.nodes,
            tasks,
            history,
        })
    }

    /// Human tables.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "cluster {} on {} (store time {})",
            self.cluster,
            self.store_kind,
            fmt_time(self.now_ms)
        );
        let _ = writeln!(out, "\nNODES");
        let _ = writeln!(
            out,
            "  {:<16} {:<8} {:<7} {:<20} {:>10}  HOST",
            "ID", "STATE", "LEADER", "INCARNATION", "HEARTBEAT"
        );
        for n in &self.nodes {
            let state = match (n.alive, n.leaving, n.ended_at_ms) {
                (true, false, _) => "alive",
                (true, true, _) => "leaving",
                // Its session lock was let go: its process died, or its connections closed.
                (false, _, Some(_)) => "ended",
                (false, _, None) => "dead",
            };
            let leader = match &self.leader {
                Some((id, epoch)) if *id == n.node => format!("yes/{epoch}"),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "  {:<16} {:<8} {:<7} {:<20} {:>8}ms  {}",
                n.node,
                state,
                leader,
                format!("{:x}", n.incarnation),
                self.now_ms - n.heartbeat_at_ms,
                n.host
            );
        }
        if self.nodes.is_empty() {
            let _ = writeln!(out, "  (none)");
        }
        let _ = writeln!(out, "\nTASKS");
        let _ = writeln!(
            out,
            "  {:<20} {:<16} {:>6}  {:<24} {:<12} LAST",
            "NAME", "OWNER", "TOKEN", "SCHEDULE", "NEXT FIRE"
        );
        for t in &self.tasks {
            let owner = match (&t.owner, &t.unplaced_reason) {
                (Some((n, true)), _) => n.clone(),
                (Some((n, false)), _) => format!("{n} (dead)"),
                (None, Some(r)) if r.starts_with(rota_core::placement::EVERYWHERE_REASON) => {
                    "(every node)".to_string()
                }
                (None, _) => "UNPLACED".to_string(),
            };
            let last = t.last.as_ref().map_or(String::from("-"), |l| {
                format!("{} at {}{}", l.outcome, fmt_time(l.instant_ms), lateness(l))
            });
            let _ = writeln!(
                out,
                "  {:<20} {:<16} {:>6}  {:<24} {:<12} {}",
                t.name,
                owner,
                t.token.map_or("-".into(), |t| t.to_string()),
                t.schedule.as_deref().unwrap_or("-"),
                t.next_fire_ms.map_or("-".into(), fmt_time),
                last
            );
            if let Some(reason) = &t.unplaced_reason {
                let _ = writeln!(out, "  {:<20} reason: {reason}", "");
            }
            if let Some(conflict) = &t.conflict {
                let _ = writeln!(
                    out,
                    "  {:<20} CONFLICT: {conflict}; the owner's definition stays in force",
                    ""
                );
            }
        }
        if self.tasks.is_empty() {
            let _ = writeln!(out, "  (none)");
        }
        let _ = writeln!(out, "\nRECENT FIRES");
        for f in &self.history {
            let _ = writeln!(
                out,
                "  {} {:<20} {:<10} node {:<12} token {:<4} attempt {}{}{}",
                fmt_time(f.instant_ms),
                f.task,
                f.outcome.as_str(),
                f.node,
                f.token,
                f.attempt,
                lateness(f),
                f.message
                    .as_deref()
                    .map(|m| format!("  {m}"))
                    .unwrap_or_default()
            );
        }
        if self.history.is_empty() {
            let _ = writeln!(out, "  (none)");
        }
        out
    }
}

fn lateness(f: &FireRecord) -> String {
    match (f.started_at_ms, f.finished_at_ms) {
        (Some(s), Some(e)) => format!(" (+{}ms, took {}ms)", s - f.instant_ms, e - s),
        (Some(s), None) => format!(" (+{}ms)", s - f.instant_ms),
        _ => String::new(),
    }
}

/// `HH:MM:SS.mmm` UTC.
pub fn fmt_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(|| ms.to_string(), |t| t.format("%H:%M:%S%.3f").to_string())
}
