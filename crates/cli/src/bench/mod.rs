//! `rota bench`: the benchmarks, one file each: `failover` (a killed owner's tasks resumed on a
//! survivor), `throughput` (claimed fires per second), `rebalance` (joins and leaves placed),
//! `faults` (the fault campaign and its checker), `cache`, `control` and `dashboard`. They run
//! real node processes on a store given by URL or on a private server (`bench_store`).

mod bench_store;
mod cache;
mod control;
mod dashboard;
mod failover;
mod faults;
mod rebalance;
mod throughput;

use std::{collections::BTreeSet, process::ExitCode, sync::Arc, time::Duration};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use rand::{Rng, SeedableRng};
use rota::{
    core::schedule::{parse_duration, Schedule},
    store::{self, FireRecord, Store},
    Node, Outcome, TaskSpec, Timing,
};
use rota_testkit::{self as harness, ProcessCluster};
use tokio::time::Instant;

use self::{bench_store::*, failover::*, rebalance::*, throughput::*};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Kill task owners repeatedly; measure failover delay, duplicates, missed fires, idle load.
    Failover(FailoverArgs),
    /// Many tasks at a short period: claimed fires per second and fire lateness.
    Throughput(ThroughputArgs),
    /// Round-robin over many tasks: how long a join or a leave takes to be placed and written,
    /// and how many tasks it moves compared with the ideal share.
    Rebalance(RebalanceArgs),
    /// Cluster commands issued one at a time: how long until every live node applied each.
    Commands(control::CommandsArgs),
    /// Rolling restarts of node processes running a 1-second task: total time, each node's
    /// time away, the task's longest gap.
    RollingRestart(control::RollingArgs),
    /// The dashboard in headless Chromium: first load, and how long after a kill of the
    /// task's owner the page shows the new one.
    Dashboard(dashboard::DashboardArgs),
    /// The cluster cache: near-cache hit latency; store-backed get, put and compare-and-set
    /// operations per second from concurrent clients.
    Cache(cache::CacheArgs),
    /// The fault campaign: kills, freezes, cuts, store restarts and graceful stops under a
    /// running workload, one at a time; an independent checker then reports every violation
    /// of the contract it finds in the tasks' own record and the store's history.
    Faults(faults::FaultsArgs),
}

pub async fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    // In-process nodes log only when asked (`ROTA_LOG=rota=debug`), to stderr.
    if std::env::var_os("ROTA_LOG").is_some() {
        super::node::init_logging("human", "warn");
    }
    match command {
        BenchCommand::Failover(args) => failover(args).await,
        BenchCommand::Throughput(args) => throughput(args).await,
        BenchCommand::Rebalance(args) => rebalance(args).await,
        BenchCommand::Commands(args) => control::commands(args).await,
        BenchCommand::RollingRestart(args) => control::rolling_restart(args).await,
        BenchCommand::Dashboard(args) => dashboard::dashboard(args).await,
        BenchCommand::Cache(args) => cache::cache(args).await,
        BenchCommand::Faults(args) => faults::faults(args).await,
    }
}

/// `median, p99, max` of a sample, in ms.
fn stats(samples: &mut [i64]) -> String {
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
async fn owners(store: &Arc<dyn Store>, cluster: &str) -> rota::Result<Vec<(String, String)>> {
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
async fn wait_all_fired(
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
