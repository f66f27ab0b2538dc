//! What the benchmarks measure with: percentiles, the owners of tasks, and the wait until
//! every task has fired.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use anyhow::{bail, Context};
use rota::store::Store;
use tokio::time::Instant;

/// What a node logs when its lease deadline passed without a renewal (a lapse).
pub(super) const LEASE_LAPSE: &str = "lease deadline passed without renewal";

/// An in-process node of the benchmarks' cluster on `store` (opened from `url`): `tasks`
/// round-robin tasks `t00000`, `t00001`, ... on `schedule`, whose fires do nothing.
pub(super) async fn round_robin_node(
    node: String,
    cluster: &str,
    (url, store): (&str, Arc<dyn Store>),
    tasks: usize,
    schedule: &rota::core::schedule::Schedule,
) -> anyhow::Result<rota::NodeHandle> {
    let mut builder = rota::Node::builder(node, cluster, url).store(store);
    for t in 0..tasks {
        let spec = rota::TaskSpec::new(
            format!("t{t:05}"),
            schedule.clone(),
            |_ctx: rota::FireContext| async { Ok(()) },
        )
        .placement(rota::core::placement::PlacementSpec::round_robin(1));
        builder = builder.task(spec);
    }
    Ok(builder.start().await?)
}

/// `median, p99, max` of a sample, in ms.
pub(super) fn stats(samples: &mut [i64]) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    samples.sort_unstable();
    let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    format!(
        "median {} ms, p99 {} ms, max {} ms (n = {})",
        pick(0.5),
        pick(0.99),
        samples[samples.len() - 1],
        samples.len()
    )
}
/// (task, owner) for every task whose owner is alive.
pub(super) async fn owners(
    store: &Arc<dyn Store>,
    cluster: &str,
) -> rota::Result<Vec<(String, String)>> {
    let view = store.view(cluster).await?;
    Ok(store
        .assignments(cluster)
        .await?
        .into_iter()
        .filter_map(|a| {
            let (node, inc) = a.owner?;
            view.nodes
                .iter()
                .any(|n| n.node == node && n.incarnation == inc && n.alive)
                .then_some((a.task, node))
        })
        .collect())
}
/// Waits until every task in `tasks` has started a fire with an instant after `since_ms`.
pub(super) async fn wait_all_fired(
    store: &Arc<dyn Store>,
    cluster: &str,
    tasks: &[String],
    since_ms: i64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let recent = store
            .history(cluster, None, (tasks.len() * 8) as i64)
            .await?;
        let fired: BTreeSet<&str> = recent
            .iter()
            .filter(|f| f.instant_ms > since_ms && f.started_at_ms.is_some())
            .map(|f| f.task.as_str())
            .collect();
        if tasks.iter().all(|t| fired.contains(t.as_str())) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} of {} tasks had not fired after {timeout:?}",
                tasks.len() - fired.len().min(tasks.len()),
                tasks.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the bench reads of a node's `/metrics`.
#[derive(Debug, Default, PartialEq)]
pub(super) struct NodeMetrics {
    pub(super) owned: u64,
    pub(super) parked: u64,
    pub(super) reads: u64,
    pub(super) writes: u64,
}

impl NodeMetrics {
    pub(super) fn parse(text: &str) -> NodeMetrics {
        let mut m = NodeMetrics::default();
        for line in text.lines() {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<u64>() else {
                continue;
            };
            match name {
                "rota_owned_tasks" => m.owned = value,
                "rota_parked_tasks" => m.parked = value,
                "rota_store_statements_total{kind=\"read\"}" => m.reads = value,
                "rota_store_statements_total{kind=\"write\"}" => m.writes = value,
                _ => {}
            }
        }
        m
    }
}

/// User plus system CPU time of a process, in clock ticks (`/proc/PID/stat`).
pub(super) fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (did the node exit?)"))?;
    // The command name, in parentheses, may hold spaces: count fields after it.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let field = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("/proc/{pid}/stat has no field {}", i + 3))
    };
    Ok(field(11)? + field(12)?)
}

/// Resident memory now and at its peak, in kB (`/proc/PID/status`).
pub(super) fn memory_kb(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((kb("VmRSS:"), kb("VmHWM:")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_metrics_it_needs_and_ignores_the_rest() {
        let text = "# HELP rota_owned_tasks x\nrota_owned_tasks 12\nrota_parked_tasks 10\n\
                    rota_store_statements_total{kind=\"read\"} 345\n\
                    rota_store_statements_total{kind=\"write\"} 67\nrota_node_up 1\n";
        assert_eq!(
            NodeMetrics::parse(text),
            NodeMetrics {
                owned: 12,
                parked: 10,
                reads: 345,
                writes: 67
            }
        );
    }
}
