//! `rota bench rebalance`: how long a join or a leave takes to be placed, and how much moves.

use std::{process::ExitCode, sync::Arc, time::Duration};

use anyhow::{bail, Context};
use clap::Args;
use rota::{
    core::schedule::Schedule,
    store::{self, Store},
    NodeHandle,
};
use rota_testkit::{self as harness, ProcessCluster};
use tokio::time::Instant;

use super::{
    bench_store::StoreArgs,
    measure::{cpu_ticks, memory_kb, round_robin_node, stats, NodeMetrics, LEASE_LAPSE},
};

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
    /// One `rota node` process per node (command tasks from a config file), as deployed,
    /// instead of all nodes in this process.
    #[arg(long)]
    processes: bool,
    /// Keep the run's directory (the node processes' configs and logs) and print its path.
    #[arg(long)]
    keep: bool,
}

/// How long the idle cluster's statements are counted after the last round.
const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// How long the bench waits for a spread, a join or a settled cluster.
const PATIENCE: Duration = Duration::from_secs(120);

/// `tasks` round-robin tasks that fire once a year on every node. Starts `nodes - 1` nodes,
/// waits for the spread, then measures joins and leaves: the time from the event until every
/// task has its new owner written, and how many tasks moved.
pub(super) async fn rebalance(args: RebalanceArgs) -> anyhow::Result<ExitCode> {
    if args.nodes < 2 {
        bail!("--nodes {} cannot show a join; use 2 or more", args.nodes);
    }
    let mut run = args.store.open("rebalance").await?;
    if args.keep {
        run.keep = true;
        println!("  the run's directory, kept: {}", run.dir.display());
    }
    let (url, probe) = (run.url.clone(), run.store.clone());
    let cluster = format!("rebalance-{}", std::process::id());
    println!(
        "bench rebalance: {} tasks round-robin over {} nodes ({}), store {}",
        args.tasks,
        args.nodes,
        if args.processes {
            "one process each"
        } else {
            "in this process"
        },
        store::redact_url(&url)
    );
    let mut fleet = if args.processes {
        Fleet::Processes {
            cluster: ProcessCluster::new(std::env::current_exe()?, &run.dir, &url, &cluster),
            tasks_toml: yearly_tasks_toml(args.tasks),
            nodes: Vec::new(),
            probe: probe.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        }
    } else {
        Fleet::InProcess {
            url: url.clone(),
            cluster: cluster.clone(),
            tasks: args.tasks,
            handles: Vec::new(),
            stores: Vec::new(),
        }
    };
    let began = Instant::now();
    for i in 0..args.nodes - 1 {
        fleet.start(i).await?;
    }
    // Every task on one of `n` live nodes, their loads within one of each other.
    let spread = |load: &std::collections::HashMap<&str, usize>, placed: usize, n: usize| {
        placed == args.tasks
            && load.len() == n
            && load.values().max().unwrap_or(&0) - load.values().min().unwrap_or(&0) <= 1
    };
    // The reader follows changes as the nodes do: the generation, then the changed rows.
    let held = std::sync::Mutex::new((-1i64, Vec::new()));
    let wait_spread = |n: usize, patience: Duration| {
        let probe = probe.clone();
        let cluster = cluster.clone();
        let held = &held;
        async move {
            let deadline = Instant::now() + patience;
            loop {
                let view = probe.view(&cluster).await?;
                let seen = held.lock().unwrap().0;
                if view.generation != seen {
                    let changed = probe.assignments_since(&cluster, seen).await?;
                    let mut held = held.lock().unwrap();
                    store::merge_assignments(&mut held.1, changed);
                    held.0 = view.generation;
                }
                // One pass over the tasks with a set of the live registrations: the reader
                // must take far less than its 20 ms between polls (a search of the nodes
                // per task took hundreds of ms at 100 nodes, counted in every measure).
                let live: std::collections::HashSet<(&str, i64)> = view
                    .nodes
                    .iter()
                    .filter(|n| n.alive)
                    .map(|n| (n.node.as_str(), n.incarnation))
                    .collect();
                let spread_map = {
                    let held = held.lock().unwrap();
                    let mut load: std::collections::HashMap<&str, usize> =
                        std::collections::HashMap::new();
                    let mut placed = 0;
                    for a in &held.1 {
                        if let Some((node, inc)) = &a.owner {
                            if live.contains(&(node.as_str(), *inc)) {
                                *load.entry(node.as_str()).or_default() += 1;
                                placed += 1;
                            }
                        }
                    }
                    spread(&load, placed, n).then(|| {
                        held.1
                            .iter()
                            .filter_map(|a| Some((a.task.clone(), a.owner.clone()?.0)))
                            .collect::<std::collections::HashMap<String, String>>()
                    })
                };
                if let Some(map) = spread_map {
                    return anyhow::Ok(map);
                }
                if Instant::now() >= deadline {
                    bail!(
                        "the tasks were not spread over {n} nodes after {} s",
                        patience.as_secs()
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let ideal = args.tasks / args.nodes;
    let mut spread_before = wait_spread(args.nodes - 1, PATIENCE).await?;
    println!(
        "  {} nodes started and spread in {:.1} s",
        args.nodes - 1,
        began.elapsed().as_secs_f64()
    );
    let (mut join_ms, mut leave_ms, mut moved_join, mut moved_leave) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        fleet.settle().await?;
        // `start` returns once the join is committed: time the placement from there.
        fleet.start(args.nodes - 1).await?;
        let began = Instant::now();
        let after_join = wait_spread(args.nodes, PATIENCE).await?;
        join_ms.push(began.elapsed().as_millis() as i64);
        moved_join.push(
            after_join
                .iter()
                .filter(|(t, n)| spread_before.get(*t) != Some(n))
                .count() as i64,
        );
        // The newcomer leaves gracefully: timed until its tasks are written to others (its
        // own stop then waits for that and leaves the cluster).
        fleet.settle().await?;
        let began = Instant::now();
        fleet.begin_leave();
        let after_leave = wait_spread(args.nodes - 1, PATIENCE).await?;
        leave_ms.push(began.elapsed().as_millis() as i64);
        fleet.finish_leave().await?;
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
    fleet.settle().await?;
    let (reads_before, writes_before) = fleet.statements().await?;
    let cpu_before = fleet.cpu_ticks();
    tokio::time::sleep(IDLE_WINDOW).await;
    let cpu_after = fleet.cpu_ticks();
    let (reads_after, writes_after) = fleet.statements().await?;
    let idle_nodes = fleet.len() as f64;
    let secs = IDLE_WINDOW.as_secs_f64();
    let (reads, writes) = (
        (reads_after - reads_before) as f64 / secs,
        (writes_after - writes_before) as f64 / secs,
    );
    let resident_kb = fleet.resident_kb();
    let lapses = fleet.lease_lapses();
    fleet.shutdown().await?;
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
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        // SAFETY: sysconf has no preconditions.
        let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let percent = after.saturating_sub(before) as f64 / ticks_per_s / secs * 100.0;
        println!(
            "  node processes' CPU at rest: {percent:.1} % of one core in all, {:.2} % per node",
            percent / idle_nodes
        );
    }
    if let Some(lapses) = lapses {
        println!(
            "  leases lapsed (nodes' logs, start-up included): {lapses}; a lapse during a \
             round moves more than the ideal share"
        );
    }
    if let Some(kb) = resident_kb {
        println!(
            "  node processes' resident memory at rest: {:.0} MB in all, {:.0} MB per node",
            kb as f64 / 1024.0,
            kb as f64 / 1024.0 / idle_nodes
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The benchmark's nodes: in this process, or one `rota node` process each.
enum Fleet {
    InProcess {
        url: String,
        cluster: String,
        tasks: usize,
        handles: Vec<NodeHandle>,
        /// Every node's store handle, to count the cluster's statements.
        stores: Vec<Arc<dyn Store>>,
    },
    Processes {
        cluster: ProcessCluster,
        /// The same `[placement]` and `[[task]]` sections for every node.
        tasks_toml: String,
        /// Node name and admin port, in start order.
        nodes: Vec<(String, u16)>,
        probe: Arc<dyn Store>,
        http: reqwest::Client,
    },
}

fn node_name(i: usize) -> String {
    format!("node-{i:02}")
}

impl Fleet {
    fn len(&self) -> usize {
        match self {
            Fleet::InProcess { handles, .. } => handles.len(),
            Fleet::Processes { nodes, .. } => nodes.len(),
        }
    }

    /// Starts node `i` and returns once its join is committed: in process, when `start`
    /// returns; a process, once its registration is seen alive (polled every 20 ms).
    async fn start(&mut self, i: usize) -> anyhow::Result<()> {
        match self {
            Fleet::InProcess {
                url,
                cluster,
                tasks,
                handles,
                stores,
            } => {
                let store = store::open(url).await?;
                stores.push(store.clone());
                let yearly = Schedule::cron("0 0 0 1 1 *", None)?;
                let on = (url.as_str(), store);
                handles.push(round_robin_node(node_name(i), cluster, on, *tasks, &yearly).await?);
                Ok(())
            }
            Fleet::Processes {
                cluster,
                tasks_toml,
                nodes,
                probe,
                ..
            } => {
                let name = node_name(i);
                let port = harness::servers::free_port();
                cluster
                    .spawn_with_admin(&name, tasks_toml, Some((port, None)))
                    .with_context(|| format!("starting {name}"))?;
                nodes.push((name.clone(), port));
                let deadline = Instant::now() + Duration::from_secs(300);
                loop {
                    let view = probe.view(cluster.cluster()).await?;
                    if view.nodes.iter().any(|n| n.node == name && n.alive) {
                        return Ok(());
                    }
                    if !cluster.running(&name) {
                        bail!(
                            "{name} exited; its log: {}",
                            cluster.log_path(&name).display()
                        );
                    }
                    if Instant::now() >= deadline {
                        bail!(
                            "{name} had not joined after 300 s; its log: {}",
                            cluster.log_path(&name).display()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Asks the newest node to leave gracefully (see [`Fleet::finish_leave`]).
    fn begin_leave(&mut self) {
        match self {
            Fleet::InProcess { handles, .. } => {
                if let Some(h) = handles.last() {
                    h.begin_shutdown();
                }
            }
            Fleet::Processes { cluster, nodes, .. } => {
                if let Some((name, _)) = nodes.last() {
                    cluster.signal(name, libc::SIGTERM);
                }
            }
        }
    }

    /// Waits for the node asked to leave to be gone.
    async fn finish_leave(&mut self) -> anyhow::Result<()> {
        match self {
            Fleet::InProcess {
                handles, stores, ..
            } => {
                stores.pop();
                if let Some(h) = handles.pop() {
                    h.wait().await?;
                }
            }
            Fleet::Processes { cluster, nodes, .. } => {
                if let Some((name, _)) = nodes.pop() {
                    if cluster
                        .wait_exit(&name, Duration::from_secs(60))
                        .await
                        .is_none()
                    {
                        bail!("{name} did not stop within 60 s of SIGTERM");
                    }
                }
            }
        }
        Ok(())
    }

    /// Statements (reads, writes) the nodes have sent to the store so far, summed.
    async fn statements(&self) -> anyhow::Result<(u64, u64)> {
        let m = self.metrics().await?;
        Ok((m.reads, m.writes))
    }

    /// The nodes' metrics, summed: statements sent to the store, and (node processes only)
    /// tasks owned and runners parked.
    async fn metrics(&self) -> anyhow::Result<NodeMetrics> {
        let mut sum = NodeMetrics::default();
        match self {
            Fleet::InProcess { stores, .. } => {
                for c in stores.iter().map(|s| s.statements()) {
                    sum.reads += c.reads;
                    sum.writes += c.writes;
                }
            }
            Fleet::Processes { nodes, http, .. } => {
                for (name, port) in nodes {
                    let text = http
                        .get(format!("http://127.0.0.1:{port}/metrics"))
                        .send()
                        .await
                        .and_then(|r| r.error_for_status())
                        .with_context(|| format!("reading {name}'s /metrics"))?
                        .text()
                        .await?;
                    let m = NodeMetrics::parse(&text);
                    sum.reads += m.reads;
                    sum.writes += m.writes;
                    sum.owned += m.owned;
                    sum.parked += m.parked;
                }
            }
        }
        Ok(sum)
    }

    /// Waits until the cluster is settled (or [`PATIENCE`] passes): its statements back to
    /// idle and, for node processes, every owned task's runner parked. Each event is
    /// measured on a settled cluster: new owners take over their tasks after a rebalance,
    /// and a leave timed during that would measure both (the takeover's reads go in
    /// batches of a thousand, so the statements alone do not show it).
    async fn settle(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + PATIENCE;
        let mut before = self.metrics().await?;
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let after = self.metrics().await?;
            // Idle is about 5 statements per node per 250 ms on SQL stores, more on
            // ZooKeeper (heartbeats, polls, clock reads).
            let quiet = (after.reads + after.writes) - (before.reads + before.writes)
                <= self.len() as u64 * 25;
            if (quiet && after.parked == after.owned) || Instant::now() >= deadline {
                return Ok(());
            }
            before = after;
        }
    }

    /// `measure` of each node process, summed; none in process, where the nodes share the
    /// bench's own process.
    fn over_processes<T: std::iter::Sum>(
        &self,
        measure: impl Fn(&ProcessCluster, &str) -> Option<T>,
    ) -> Option<T> {
        match self {
            Fleet::InProcess { .. } => None,
            Fleet::Processes { cluster, nodes, .. } => Some(
                nodes
                    .iter()
                    .filter_map(|(name, _)| measure(cluster, name))
                    .sum(),
            ),
        }
    }

    /// CPU time of the node processes in all, in clock ticks.
    fn cpu_ticks(&self) -> Option<u64> {
        self.over_processes(|cluster, name| cpu_ticks(cluster.pid(name)?).ok())
    }

    /// How many times a node process's lease lapsed, from their logs.
    fn lease_lapses(&self) -> Option<usize> {
        self.over_processes(|cluster, name| Some(cluster.log(name).matches(LEASE_LAPSE).count()))
    }

    /// Resident memory of the node processes in all, in kB.
    fn resident_kb(&self) -> Option<u64> {
        self.over_processes(|cluster, name| Some(memory_kb(cluster.pid(name)?).ok()?.0))
    }

    async fn shutdown(self) -> anyhow::Result<()> {
        match self {
            Fleet::InProcess { handles, .. } => {
                for h in handles {
                    h.shutdown().await?;
                }
            }
            Fleet::Processes {
                mut cluster, nodes, ..
            } => {
                for (name, _) in &nodes {
                    cluster.signal(name, libc::SIGTERM);
                }
                for (name, _) in &nodes {
                    cluster.stop(name, Duration::from_secs(30)).await;
                }
            }
        }
        Ok(())
    }
}

/// `[placement]` (round-robin) and `n` command tasks that fire once a year, as TOML.
fn yearly_tasks_toml(n: usize) -> String {
    let mut toml = String::with_capacity(n * 70 + 64);
    toml.push_str("[placement]\nresolver = \"round-robin\"\n\n");
    for t in 0..n {
        toml.push_str(&format!(
            "[[task]]\nname = \"t{t:05}\"\ncron = \"0 0 0 1 1 *\"\ncommand = [\"true\"]\n\n"
        ));
    }
    toml
}
