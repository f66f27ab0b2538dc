//! `rota bench rebalance`: how long a join or a leave takes to be placed, and how much moves.

use std::{process::ExitCode, sync::Arc, time::Duration};

use anyhow::bail;
use clap::Args;
use rota::{
    core::schedule::Schedule,
    store::{self, Store},
    Node, TaskSpec,
};
use tokio::time::Instant;

use super::{bench_store::StoreArgs, measure::stats};

#[derive(Args)]
pub struct RebalanceArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[arg(long, default_value_t = 10)]
    nodes: usize,
    #[arg(long, default_value_t = 10_000)]
    tasks: usize,
    /// Join-and-leave rounds to measure.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

/// In-process nodes with `tasks` round-robin tasks (that fire once a year). Starts
/// `nodes - 1` nodes, waits for the spread, then measures one join and one leave: the time
/// from the event until every task has its new owner written, and how many tasks moved.
/// How long the idle cluster's statements are counted after the last round.
const IDLE_WINDOW: Duration = Duration::from_secs(10);

pub(super) async fn rebalance(args: RebalanceArgs) -> anyhow::Result<ExitCode> {
    use rota::core::placement::PlacementSpec;
    if args.nodes < 2 {
        bail!("--nodes {} cannot show a join; use 2 or more", args.nodes);
    }
    let run = args.store.open("rebalance").await?;
    let (url, probe) = (run.url.clone(), run.store.clone());
    let cluster = format!("rebalance-{}", std::process::id());
    println!(
        "bench rebalance: {} tasks round-robin over {} nodes, store {}",
        args.tasks,
        args.nodes,
        store::redact_url(&url)
    );
    // Every node's store handle, to tell when the cluster's traffic is back to idle.
    let stores: std::sync::Mutex<Vec<Arc<dyn Store>>> = std::sync::Mutex::default();
    let start = |i: usize| {
        let url = url.clone();
        let cluster = cluster.clone();
        let tasks = args.tasks;
        let stores = &stores;
        async move {
            let store = store::open(&url).await?;
            stores.lock().unwrap().push(store.clone());
            let mut builder = Node::builder(format!("node-{i:02}"), &cluster, &url).store(store);
            for t in 0..tasks {
                let yearly = Schedule::cron("0 0 0 1 1 *", None)?;
                let spec = TaskSpec::new(
                    format!("t{t:05}"),
                    yearly,
                    |_ctx: rota::FireContext| async { Ok(()) },
                )
                .placement(PlacementSpec::round_robin(1));
                builder = builder.task(spec);
            }
            anyhow::Ok(builder.start().await?)
        }
    };
    let mut handles = Vec::new();
    for i in 0..args.nodes - 1 {
        handles.push(start(i).await?);
    }
    let spread = |map: &std::collections::HashMap<String, String>, n: usize| {
        let mut load: std::collections::HashMap<&String, usize> = std::collections::HashMap::new();
        for node in map.values() {
            *load.entry(node).or_default() += 1;
        }
        map.len() == args.tasks
            && load.len() == n
            && load.values().max().unwrap_or(&0) - load.values().min().unwrap_or(&0) <= 1
    };
    // The reader follows changes as the nodes do: the generation, then the changed rows.
    let held = std::sync::Mutex::new((-1i64, Vec::new()));
    let wait_spread = |n: usize| {
        let probe = probe.clone();
        let cluster = cluster.clone();
        let held = &held;
        async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let view = probe.view(&cluster).await?;
                let seen = held.lock().unwrap().0;
                if view.generation != seen {
                    let changed = probe.assignments_since(&cluster, seen).await?;
                    let mut held = held.lock().unwrap();
                    store::merge_assignments(&mut held.1, changed);
                    held.0 = view.generation;
                }
                let map: std::collections::HashMap<String, String> = held
                    .lock()
                    .unwrap()
                    .1
                    .iter()
                    .filter_map(|a| {
                        let (node, inc) = a.owner.clone()?;
                        view.nodes
                            .iter()
                            .any(|n| n.node == node && n.incarnation == inc && n.alive)
                            .then(|| (a.task.clone(), node))
                    })
                    .collect();
                if spread(&map, n) {
                    return anyhow::Ok(map);
                }
                if Instant::now() >= deadline {
                    bail!("the tasks were not spread over {n} nodes after 120 s");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // Each event is measured on a settled cluster: new owners take over their tasks (two
    // reads each) after a rebalance, and a leave timed during that would measure both.
    let settle = || async {
        let total = || -> u64 {
            stores
                .lock()
                .unwrap()
                .iter()
                .map(|s| {
                    let c = s.statements();
                    c.reads + c.writes
                })
                .sum()
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (before, nodes) = (total(), stores.lock().unwrap().len() as u64);
            tokio::time::sleep(Duration::from_millis(250)).await;
            // Idle is about 9 statements per node per 250 ms on SQL stores, 16 on ZooKeeper
            // (heartbeats, polls, clock reads).
            if total() - before <= nodes * 25 || Instant::now() >= deadline {
                return;
            }
        }
    };
    let ideal = args.tasks / args.nodes;
    let mut spread_before = wait_spread(args.nodes - 1).await?;
    let (mut join_ms, mut leave_ms, mut moved_join, mut moved_leave) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        settle().await;
        // `start` returns once the join is committed: time the placement from there.
        let joining = start(args.nodes - 1).await?;
        let began = Instant::now();
        let after_join = wait_spread(args.nodes).await?;
        join_ms.push(began.elapsed().as_millis() as i64);
        moved_join.push(
            after_join
                .iter()
                .filter(|(t, n)| spread_before.get(*t) != Some(n))
                .count() as i64,
        );
        // The newcomer leaves gracefully: timed until its tasks are written to others (its
        // own stop then waits for that and leaves the cluster).
        settle().await;
        let began = Instant::now();
        joining.begin_shutdown();
        let after_leave = wait_spread(args.nodes - 1).await?;
        leave_ms.push(began.elapsed().as_millis() as i64);
        joining.wait().await?;
        stores.lock().unwrap().pop(); // the newcomer's
        moved_leave.push(
            after_leave
                .iter()
                .filter(|(t, n)| after_join.get(*t) != Some(n))
                .count() as i64,
        );
        println!(
            "  round {round}: join {} ms ({} moved), leave {} ms ({} moved)",
            join_ms[round - 1],
            moved_join[round - 1],
            leave_ms[round - 1],
            moved_leave[round - 1]
        );
        spread_before = after_leave;
    }
    // The store's load from the settled, idle cluster: every node's statements over a window.
    settle().await;
    let counted = || {
        stores
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.statements())
            .fold((0u64, 0u64), |(r, w), c| (r + c.reads, w + c.writes))
    };
    let (reads_before, writes_before) = counted();
    tokio::time::sleep(IDLE_WINDOW).await;
    let (reads_after, writes_after) = counted();
    let idle_nodes = stores.lock().unwrap().len() as f64;
    let secs = IDLE_WINDOW.as_secs_f64();
    let (reads, writes) = (
        (reads_after - reads_before) as f64 / secs,
        (writes_after - writes_before) as f64 / secs,
    );
    for h in handles {
        h.shutdown().await?;
    }
    let worst_moves = moved_join.iter().copied().max().unwrap_or(0);
    println!("\nRESULTS ({} rounds)", args.rounds);
    println!(
        "  join of a {}th node, placed and written (as seen by a reader polling every 20 ms): {}",
        args.nodes,
        stats(&mut join_ms)
    );
    println!(
        "  tasks moved by a join: at most {worst_moves}, ideal {ideal} ({:.2} x)",
        worst_moves as f64 / ideal.max(1) as f64
    );
    println!(
        "  graceful leave, all its tasks on others: {}; moved {} (its share)",
        stats(&mut leave_ms),
        moved_leave.iter().copied().max().unwrap_or(0)
    );
    println!(
        "  store's load from the idle cluster ({idle_nodes} nodes, {} s): {reads:.0} reads/s and \
         {writes:.0} writes/s in all; per node {:.1} reads/s and {:.1} writes/s",
        IDLE_WINDOW.as_secs(),
        reads / idle_nodes,
        writes / idle_nodes
    );
    Ok(ExitCode::SUCCESS)
}
