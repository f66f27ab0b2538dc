//! `rota bench throughput`: claimed fires per second and their lateness, and the store's idle
//! load.

use std::{collections::HashMap, process::ExitCode, sync::Arc, time::Duration};

use anyhow::{bail, Context};
use clap::Args;
use rota::{
    core::{
        outcome::Outcome,
        schedule::{parse_duration, Schedule},
    },
    store::{self, Claim, ClaimOutcome, Finish, FireRecord, Member, Store},
    Node, TaskSpec, Timing,
};
use tokio::time::Instant;

use super::{
    bench_store::StoreArgs,
    measure::{owners, round_robin_node, stats},
};

#[derive(Args)]
pub struct ThroughputArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    #[arg(long, default_value_t = 5000)]
    tasks: usize,
    #[arg(long, default_value = "1s")]
    period: String,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds between the spread of the tasks and the measure: the nodes' takeovers, and a
    /// new store's first statistics (PostgreSQL's first `ANALYZE` of a new `rota_fires`
    /// comes within a minute; until then its plans are guesses).
    #[arg(long, default_value_t = 10)]
    warmup: u64,
}

/// Runs `nodes` idle nodes in this process (tasks that fire once a year) and counts the
/// statements each sends per second.
pub(super) async fn idle_load(
    url: &str,
    nodes: usize,
    tasks: usize,
    span: Duration,
) -> anyhow::Result<(f64, f64)> {
    let cluster = format!("idle-{}-{tasks}", std::process::id());
    let mut handles = Vec::new();
    let mut stores = Vec::new();
    for i in 0..nodes {
        let store = store::open(url).await?;
        let mut builder = Node::builder(format!("idle-{i}"), &cluster, url)
            .store(store.clone())
            .timing(Timing::default());
        for t in 0..tasks {
            let yearly = Schedule::cron("0 0 0 1 1 *", None)?;
            builder = builder.task(TaskSpec::new(
                format!("t{t:05}"),
                yearly,
                |_ctx: rota::FireContext| async { Ok(()) },
            ));
        }
        handles.push(builder.start().await?);
        stores.push(store);
    }
    // Count only the steady state: every task placed and its runner started.
    let probe = &stores[0];
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let placed = probe
            .assignments(&cluster)
            .await?
            .iter()
            .filter(|a| a.owner.is_some())
            .count();
        if placed == tasks {
            break;
        }
        if Instant::now() >= deadline {
            bail!("only {placed} of {tasks} idle tasks were placed after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Runners take over their tasks two reads at a time: allow for that before counting.
    tokio::time::sleep(Duration::from_secs(3 + tasks as u64 / 1000)).await;
    let before: Vec<_> = stores.iter().map(|s| s.statements()).collect();
    tokio::time::sleep(span).await;
    let after: Vec<_> = stores.iter().map(|s| s.statements()).collect();
    for h in handles {
        h.shutdown().await?;
    }
    let secs = span.as_secs_f64() * nodes as f64;
    let reads: u64 = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.reads - b.reads)
        .sum();
    let writes: u64 = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.writes - b.writes)
        .sum();
    Ok((reads as f64 / secs, writes as f64 / secs))
}

/// In-process nodes (one store handle each) run `tasks` no-op round-robin tasks every
/// `period`; the store's history gives the claimed fires and their lateness (start minus
/// instant). Then the store's ceiling for the same writes (see [`ceiling`]).
pub(super) async fn throughput(args: ThroughputArgs) -> anyhow::Result<ExitCode> {
    let period = parse_duration(&args.period)
        .map_err(anyhow::Error::msg)
        .context("--period")?;
    if args.nodes == 0 || args.tasks < args.nodes {
        bail!("--nodes must be at least 1, and --tasks at least --nodes");
    }
    let run = args.store.open("throughput").await?;
    let (url, probe) = (run.url.clone(), run.store.clone());
    let cluster = format!("throughput-{}", std::process::id());
    println!(
        "bench throughput: {} nodes, {} round-robin tasks every {}, {} s measured after {} s of warm-up, store {}",
        args.nodes,
        args.tasks,
        args.period,
        args.seconds,
        args.warmup,
        store::redact_url(&url)
    );
    let start_nodes = |cluster: String, schedule: Schedule| {
        let url = url.clone();
        let (nodes, tasks) = (args.nodes, args.tasks);
        async move {
            let mut handles = Vec::new();
            for i in 0..nodes {
                let store = (url.as_str(), store::open(&url).await?);
                let node = format!("node-{i}");
                handles.push(round_robin_node(node, &cluster, store, tasks, &schedule).await?);
            }
            anyhow::Ok(handles)
        }
    };
    let handles = start_nodes(cluster.clone(), Schedule::every(period)?).await?;
    let before = settled(&probe, &cluster, args.nodes, args.tasks).await?;
    tokio::time::sleep((period * 5).max(Duration::from_secs(args.warmup))).await;
    let from = probe.now_ms().await?;
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let to = probe.now_ms().await?;
    let after = tokens(&probe, &cluster).await?;
    tokio::time::sleep(period * 2).await;
    for h in handles {
        h.shutdown().await?;
    }
    let history = probe.history(&cluster, None, i64::MAX / 2).await?;
    let window: Vec<&FireRecord> = history
        .iter()
        .filter(|f| f.instant_ms > from && f.instant_ms <= to)
        .collect();
    let mut lateness: Vec<i64> = window
        .iter()
        .filter_map(|f| f.started_at_ms.map(|s| s - f.instant_ms))
        .collect();
    let started = lateness.len();
    let expected = args.tasks as u64 * ((to - from) as u64 / period.as_millis() as u64);
    let moved = before
        .iter()
        .filter(|(task, token)| after.get(*task) != Some(token))
        .count();
    let secs = (to - from) as f64 / 1000.0;
    let rate = started as f64 / secs;
    println!("\nRESULTS");
    println!(
        "  claimed fires: {started} in {secs:.1} s = {rate:.0} fires/s (expected about {expected})"
    );
    println!("  lateness (start - instant): {}", stats(&mut lateness));
    println!(
        "  other records in the window: {} (skipped, misfired); tasks that changed owner: {moved}",
        window.len() - started
    );

    // The ceiling: the same nodes, with tasks that never fire, hold their registrations and
    // assignments alive while clients send the claims, begins and outcomes directly.
    let ceiling_cluster = format!("{cluster}-ceiling");
    let yearly = Schedule::cron("0 0 0 1 1 *", None)?;
    let handles = start_nodes(ceiling_cluster.clone(), yearly).await?;
    settled(&probe, &ceiling_cluster, args.nodes, args.tasks).await?;
    let ceiling = ceiling(
        &url,
        &probe,
        &ceiling_cluster,
        Duration::from_secs(args.seconds),
    )
    .await;
    for h in handles {
        h.shutdown().await?;
    }
    let ceiling = ceiling?;
    println!(
        "  store ceiling for the same writes: {ceiling:.0} fires/s; rota's share: {:.0} %",
        100.0 * rate / ceiling
    );
    Ok(ExitCode::SUCCESS)
}

/// Every task's token, by task.
async fn tokens(store: &Arc<dyn Store>, cluster: &str) -> anyhow::Result<HashMap<String, i64>> {
    Ok(store
        .assignments(cluster)
        .await?
        .into_iter()
        .map(|a| (a.task, a.token))
        .collect())
}

/// Waits until every task has a live owner and each node owns its share (the round-robin
/// spread is settled); returns the tokens then.
async fn settled(
    store: &Arc<dyn Store>,
    cluster: &str,
    nodes: usize,
    tasks: usize,
) -> anyhow::Result<HashMap<String, i64>> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let owners = owners(store, cluster).await?;
        let mut load: HashMap<&str, usize> = HashMap::new();
        for (_, node) in &owners {
            *load.entry(node.as_str()).or_default() += 1;
        }
        if owners.len() == tasks
            && load.len() == nodes
            && load.values().all(|&n| n >= tasks / nodes)
        {
            return tokens(store, cluster).await;
        }
        if Instant::now() >= deadline {
            bail!(
                "not spread after 120 s: {} of {tasks} tasks placed, over {} of {nodes} nodes",
                owners.len(),
                load.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The store's ceiling for rota's writes: for each owner, two clients (as a node's batcher
/// keeps two batches in flight; one, taking turns with the others, on SQLite) send the
/// claim (which begins the fire) and the outcome of every task it owns, at
/// one instant after another, through the same store calls, for `span`, with no scheduling
/// in between. Returns fires per second.
async fn ceiling(
    url: &str,
    probe: &Arc<dyn Store>,
    cluster: &str,
    span: Duration,
) -> anyhow::Result<f64> {
    let mut by_owner: HashMap<(String, i64), Vec<(String, i64)>> = HashMap::new();
    for a in probe.assignments(cluster).await? {
        if let Some(owner) = a.owner {
            by_owner.entry(owner).or_default().push((a.task, a.token));
        }
    }
    let stop = Instant::now() + span;
    // SQLite has one writer at a time: clients that contend for it sleep in its busy
    // handler, and would measure that. There, one write at a time, in turn.
    let one_writer = url.starts_with("sqlite:");
    let turn = Arc::new(tokio::sync::Mutex::new(()));
    let lanes = if one_writer { 1 } else { 2 };
    let mut clients = tokio::task::JoinSet::new();
    for ((node, incarnation), owned) in by_owner {
        let store = store::open(url).await?;
        let member = Member {
            cluster: cluster.to_string(),
            node,
            incarnation,
        };
        let owned = Arc::new(owned);
        for lane in 0..lanes {
            let (store, member, owned) = (store.clone(), member.clone(), owned.clone());
            let turn = turn.clone();
            clients.spawn(async move {
                let mut fires = 0u64;
                let mut instant = lane;
                while Instant::now() < stop {
                    instant += lanes;
                    let _turn = if one_writer {
                        Some(turn.lock().await)
                    } else {
                        None
                    };
                    let claims: Vec<Claim> = owned
                        .iter()
                        .map(|(task, token)| Claim {
                            member: member.clone(),
                            task: task.clone(),
                            instant_ms: instant,
                            token: *token,
                            outcome: Outcome::Running,
                            message: None,
                            begin: true,
                        })
                        .collect();
                    let claimed = store.claim_batch(&claims).await?;
                    let finishes: Vec<Finish> = claims
                        .iter()
                        .zip(&claimed)
                        .filter(|(_, o)| **o == ClaimOutcome::Claimed)
                        .map(|(c, _)| Finish {
                            task: c.task.clone(),
                            instant_ms: instant,
                            token: c.token,
                            attempt: 1,
                            outcome: Outcome::Ok,
                            message: None,
                        })
                        .collect();
                    store.finish_batch(&member.cluster, &finishes).await?;
                    fires += finishes.len() as u64;
                }
                anyhow::Ok(fires)
            });
        }
    }
    let began = Instant::now();
    let mut fires = 0;
    while let Some(done) = clients.join_next().await {
        fires += done??;
    }
    Ok(fires as f64 / began.elapsed().as_secs_f64())
}
