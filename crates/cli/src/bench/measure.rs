//! What the benchmarks measure with: percentiles, the owners of tasks, and the wait until
//! every task has fired.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use anyhow::bail;
use rota::store::Store;
use tokio::time::Instant;

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
