//! `rota bench commands`: how long a cluster command takes to be applied by every live node.
//! `rota bench rolling-restart`: a rolling restart of real node processes running a 1-second
//! task: total time, each node's time away, and the longest gap between the task's fires.

use std::{collections::BTreeMap, process::ExitCode, sync::Arc, time::Duration};

use anyhow::{bail, Context};
use clap::Args;
use rota::{
    core::control::{CommandBody, Operation, Scope},
    store::{self, AckFilter, Store},
    Node, Schedule, TaskSpec,
};
use rota_testkit::{self as harness, ProcessCluster};
use tokio::time::Instant;

use super::{bench_store::StoreArgs, measure::stats};

#[derive(Args)]
pub struct CommandsArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Commands issued, one at a time.
    #[arg(long, default_value_t = 100)]
    commands: usize,
}

#[derive(Args)]
pub struct RollingArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Rolling restarts measured, one after the other.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// Appends a command as the admin API does (targets: `targets`, in order).
async fn issue(
    store: &Arc<dyn Store>,
    cluster: &str,
    op: Operation,
    targets: &[String],
) -> anyhow::Result<(i64, i64)> {
    let body = CommandBody {
        op,
        scope: Scope::Cluster,
        targets: targets.to_vec(),
        issued_by: "bench".into(),
        requested_by: None,
    };
    Ok(store
        .append_command(cluster, &serde_json::to_string(&body)?)
        .await?)
}

/// Waits until every target acknowledged `seq` finally; returns each node's ack time.
async fn acked(
    store: &Arc<dyn Store>,
    cluster: &str,
    seq: i64,
    targets: usize,
    timeout: Duration,
) -> anyhow::Result<BTreeMap<String, i64>> {
    let deadline = Instant::now() + timeout;
    loop {
        let acks = store
            .command_acks(cluster, AckFilter::Commands(&[seq]))
            .await?;
        let done: BTreeMap<String, i64> = acks
            .iter()
            .filter(|a| a.state.is_final())
            .map(|a| (a.node.clone(), a.at_ms))
            .collect();
        if done.len() >= targets {
            return Ok(done);
        }
        if Instant::now() >= deadline {
            bail!(
                "command #{seq}: {} of {targets} nodes acknowledged within {timeout:?}: {acks:?}",
                done.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn commands(args: CommandsArgs) -> anyhow::Result<ExitCode> {
    let run = args.store.open("commands").await?;
    let (url, store) = (run.url.clone(), run.store.clone());
    let cluster = format!("bench-{}", std::process::id());
    println!(
        "bench commands: {} nodes, {} commands one at a time, store {}",
        args.nodes,
        args.commands,
        store::redact_url(&url)
    );
    let mut nodes = Vec::new();
    let ids: Vec<String> = (1..=args.nodes).map(|i| format!("node-{i}")).collect();
    for id in &ids {
        let task = TaskSpec::new(
            "report",
            Schedule::every(Duration::from_secs(3600)).expect("valid"),
            |_ctx: rota::FireContext| async { Ok(()) },
        );
        let node = Node::builder(id, &cluster, &url)
            .store(store.clone())
            .task(task)
            .start()
            .await
            .with_context(|| format!("starting {id}"))?;
        nodes.push(node);
    }
    // Pause and resume in turn: each node acknowledges each.
    let mut per_node = Vec::new();
    let mut all = Vec::new();
    for i in 0..args.commands {
        let task = "report".to_string();
        let op = if i % 2 == 0 {
            Operation::Pause { task }
        } else {
            Operation::Resume { task }
        };
        let (seq, issued_at) = issue(&store, &cluster, op, &ids).await?;
        let acks = acked(&store, &cluster, seq, ids.len(), Duration::from_secs(30)).await?;
        per_node.extend(acks.values().map(|at| at - issued_at));
        all.push(acks.values().max().copied().unwrap_or(issued_at) - issued_at);
    }
    println!(
        "  issue to applied and acknowledged, per node (store time):  {}",
        stats(&mut per_node)
    );
    println!(
        "  issue to applied by every node:                            {}",
        stats(&mut all)
    );
    for node in nodes {
        node.shutdown().await?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn rolling_restart(args: RollingArgs) -> anyhow::Result<ExitCode> {
    if args.nodes < 2 {
        bail!(
            "--nodes {} cannot restart one at a time with the task kept running; use 2 or more",
            args.nodes
        );
    }
    let run = args.store.open("rolling-restart").await?;
    let (dir, url, store) = (run.dir.clone(), run.url.clone(), run.store.clone());
    let cluster_name = format!("bench-{}", std::process::id());
    println!(
        "bench rolling-restart: {} node processes, a task every 1s, {} rolling restarts, store {}",
        args.nodes,
        args.rounds,
        store::redact_url(&url)
    );
    let record = dir.join("fires.log");
    let mut cluster = ProcessCluster::new(std::env::current_exe()?, &dir, &url, &cluster_name);
    let tasks = harness::log_task_toml("beat", "1s", &record);
    let ids: Vec<String> = (1..=args.nodes).map(|i| format!("node-{i}")).collect();
    for id in &ids {
        cluster.spawn(id, &tasks)?;
    }
    let mut totals = Vec::new();
    let mut away = Vec::new();
    let mut gaps = Vec::new();
    for round in 0..args.rounds {
        // Settled: every node live, the task firing.
        let since = store.now_ms().await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let view = store.view(&cluster_name).await?;
            let live = view.nodes.iter().filter(|n| n.alive && !n.leaving).count();
            let fired = store
                .history(&cluster_name, Some("beat"), 3)
                .await?
                .iter()
                .any(|f| f.instant_ms > since + 1000 && f.started_at_ms.is_some());
            if live == ids.len() && fired {
                break;
            }
            if Instant::now() >= deadline {
                bail!("round {round}: the cluster did not settle within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The leader last, as the admin API orders it.
        let view = store.view(&cluster_name).await?;
        let leader = view.leader.map(|l| l.node).unwrap_or_default();
        let mut order: Vec<String> = ids.iter().filter(|n| **n != leader).cloned().collect();
        if ids.contains(&leader) {
            order.push(leader);
        }
        let (seq, issued_at) = issue(
            &store,
            &cluster_name,
            Operation::RollingRestart { timeout_secs: 60 },
            &order,
        )
        .await?;
        let acks = acked(
            &store,
            &cluster_name,
            seq,
            order.len(),
            Duration::from_secs(300),
        )
        .await?;
        let done_at = acks.values().max().copied().unwrap_or(issued_at);
        totals.push(done_at - issued_at);
        // Each node's time away: from the leader's restart command to the confirmation.
        for record in store.commands(&cluster_name, seq, 1000).await? {
            let c = record.parse()?;
            if c.body
                .issued_by
                .ends_with(&format!("(rolling restart #{seq})"))
            {
                if let Some(back) = acks.get(&c.body.targets[0]) {
                    away.push(back - c.issued_at_ms);
                }
            }
        }
        // The task's longest gap between fire starts, from before to two periods after the
        // restart (waiting for those fires).
        let until = done_at + 2000;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !store
            .history(&cluster_name, Some("beat"), 3)
            .await?
            .iter()
            .any(|f| f.instant_ms > until && f.started_at_ms.is_some())
        {
            if Instant::now() >= deadline {
                bail!("round {round}: the task did not fire after the rolling restart");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut starts: Vec<i64> = store
            .history(&cluster_name, Some("beat"), 1000)
            .await?
            .iter()
            .filter(|f| f.instant_ms > issued_at - 2000 && f.instant_ms <= until)
            .filter_map(|f| f.started_at_ms)
            .collect();
        starts.sort_unstable();
        gaps.push(starts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0));
        println!(
            "  round {}: {} nodes restarted in {} ms; longest gap between fires {} ms",
            round + 1,
            order.len(),
            done_at - issued_at,
            gaps[gaps.len() - 1]
        );
    }
    let lines = harness::read_fire_lines(&record);
    let duplicates = harness::duplicates(&lines);
    println!(
        "  total time of a rolling restart:        {}",
        stats(&mut totals)
    );
    println!(
        "  one node's restart (told to back):      {}",
        stats(&mut away)
    );
    println!(
        "  longest gap between fires of the task:  {}",
        stats(&mut gaps)
    );
    println!(
        "  duplicate fires in the task's record:   {}",
        duplicates.len()
    );
    for id in &ids {
        cluster.stop(id, Duration::from_secs(10)).await;
    }
    Ok(if duplicates.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
