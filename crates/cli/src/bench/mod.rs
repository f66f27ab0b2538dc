//! `rota bench`: the benchmarks, one file each: `failover` (a killed owner's tasks resumed on a
//! survivor), `throughput` (claimed fires per second), `rebalance` (joins and leaves placed),
//! `placement` (the placement computation alone, without a store), `faults` (the fault
//! campaign and its checker), `idle` (what a node costs at rest), `cache`, `control` and
//! `dashboard`. They run real node processes on a store given by URL or on a private server
//! (`bench_store`).

mod bench_store;
mod cache;
mod control;
mod dashboard;
mod failover;
mod faults;
mod idle;
mod measure;
mod placement;
mod rebalance;
mod throughput;

use std::process::ExitCode;

use clap::Subcommand;

use self::{failover::*, rebalance::*, throughput::*};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Kill task owners repeatedly; measure failover delay, duplicates, missed fires, idle load.
    Failover(FailoverArgs),
    /// Many tasks at a short period: claimed fires per second and fire lateness.
    Throughput(ThroughputArgs),
    /// Round-robin over many tasks: how long a join or a leave takes to be placed and written,
    /// and how many tasks it moves compared with the ideal share.
    Rebalance(RebalanceArgs),
    /// The leader's placement computation alone, without a store: identical nodes that each
    /// declare many tasks; the first placement, a settled round, a join and a leave.
    Placement(placement::PlacementArgs),
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
    /// Idle nodes: CPU, memory and store statements of one node process with 10, 10,000 and
    /// 100,000 daily tasks, and how long until it is placed.
    Idle(idle::IdleArgs),
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
        BenchCommand::Placement(args) => placement::placement(args),
        BenchCommand::Commands(args) => control::commands(args).await,
        BenchCommand::RollingRestart(args) => control::rolling_restart(args).await,
        BenchCommand::Dashboard(args) => dashboard::dashboard(args).await,
        BenchCommand::Cache(args) => cache::cache(args).await,
        BenchCommand::Faults(args) => faults::faults(args).await,
        BenchCommand::Idle(args) => idle::idle(args).await,
    }
}
