//! `rota bench failover`: N node processes on one store run T tasks every P; the owner is
//! killed with SIGKILL K times at random points (and restarted each time), then stopped
//! gracefully a few times. Prints the delay of the first fire after each kill past its
//! instant, duplicates (from an independent record the tasks write), missed fires, and the
//! store load of idle nodes for several task counts.

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

mod cache;
mod control;
mod dashboard;
mod faults;

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
    /// Seconds measured (after a warm-up of 3 periods).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[derive(Args)]
pub struct FailoverArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    #[arg(long, default_value_t = 20)]
    tasks: usize,
    /// Task period.
    #[arg(long, default_value = "1s")]
    period: String,
    /// SIGKILLs of the owner.
    #[arg(long, default_value_t = 10)]
    kills: usize,
    /// Graceful stops (SIGTERM) of the owner, after the kills.
    #[arg(long, default_value_t = 3)]
    stops: usize,
    /// Restart a killed node at once. Its restart proves the old process dead, so its tasks
    /// move without waiting for the node timeout: the fast path. By default the node is
    /// restarted only after its tasks resumed elsewhere, which measures detection by timeout.
    #[arg(long)]
    restart_immediately: bool,
    /// Seconds to measure idle store load per task count (0 skips it).
    #[arg(long, default_value_t = 5)]
    idle_seconds: u64,
    /// Random seed for the kill points.
    #[arg(long)]
    seed: Option<u64>,
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

struct Event {
    at_ms: i64,
    tasks: Vec<String>,
}

async fn failover(args: FailoverArgs) -> anyhow::Result<ExitCode> {
    let period = parse_duration(&args.period)
        .map_err(anyhow::Error::msg)
        .context("--period")?;
    if args.nodes < 2 {
        bail!("--nodes {} leaves no survivor; use 2 or more", args.nodes);
    }
    let run = args.store.open("bench").await?;
    let (dir, url, store) = (run.dir.clone(), run.url.clone(), run.store.clone());
    let cluster_name = format!("bench-{}", std::process::id());
    let record = dir.join("fires.log");
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    println!(
        "bench failover: {} nodes, {} tasks every {}, {} kills (restart {}), {} graceful stops, store {} (seed {seed})",
        args.nodes,
        args.tasks,
        args.period,
        args.kills,
        if args.restart_immediately { "at once" } else { "after failover" },
        args.stops,
        store::redact_url(&url)
    );

    let exe = std::env::current_exe()?;
    let mut cluster = ProcessCluster::new(exe, &dir, &url, &cluster_name);
    let names: Vec<String> = (0..args.tasks).map(|i| format!("task-{i:03}")).collect();
    let tasks_toml: String = names
        .iter()
        .map(|n| harness::log_task_toml(n, &args.period, &record))
        .collect();
    let ids: Vec<String> = (1..=args.nodes).map(|i| format!("node-{i}")).collect();
    for id in &ids {
        cluster.spawn(id, &tasks_toml)?;
    }
    let started_ms = store.now_ms().await?;
    wait_all_fired(
        &store,
        &cluster_name,
        &names,
        started_ms,
        Duration::from_secs(30),
    )
    .await
    .context("start-up")?;
    let measured_from = store.now_ms().await?;

    let mut kills = Vec::new();
    for k in 0..args.kills + args.stops {
        let graceful = k >= args.kills;
        // A random point in the period, after at least a second of steady state.
        let pause = Duration::from_millis(
            1000 + rng.random_range(0..period.as_millis().max(1) as u64 + 1000),
        );
        tokio::time::sleep(pause).await;
        let owners = owners(&store, &cluster_name).await?;
        let Some(victim) = owners.iter().map(|(_, n)| n.clone()).next() else {
            bail!("no task has a live owner")
        };
        let victim_tasks: Vec<String> = owners
            .iter()
            .filter(|(_, n)| *n == victim)
            .map(|(t, _)| t.clone())
            .collect();
        let at_ms = store.now_ms().await?;
        if graceful {
            cluster.stop(&victim, Duration::from_secs(30)).await;
        } else {
            cluster.kill(&victim);
        }
        let restart_first = graceful || args.restart_immediately;
        if restart_first {
            cluster.spawn_with_config(&victim, &cluster.config_path(&victim))?;
        }
        wait_all_fired(
            &store,
            &cluster_name,
            &victim_tasks,
            at_ms,
            Duration::from_secs(30),
        )
        .await
        .with_context(|| {
            format!(
                "recovery after {} of {victim}",
                if graceful { "SIGTERM" } else { "SIGKILL" }
            )
        })?;
        if !restart_first {
            cluster.spawn_with_config(&victim, &cluster.config_path(&victim))?;
        }
        println!(
            "  {} {victim} ({} tasks) done",
            if graceful { "SIGTERM" } else { "SIGKILL" },
            victim_tasks.len()
        );
        kills.push((
            graceful,
            Event {
                at_ms,
                tasks: victim_tasks,
            },
        ));
    }
    tokio::time::sleep(period * 2).await;
    let measured_to = store.now_ms().await? - 2 * period.as_millis() as i64;
    for id in &ids {
        cluster.stop(id, Duration::from_secs(30)).await;
    }

    // Analysis, from the store's history and the tasks' own record.
    let history = store.history(&cluster_name, None, i64::MAX / 2).await?;
    let lines = harness::read_fire_lines(&record);
    let duplicates = harness::duplicates(&lines);
    let schedule = Schedule::every(period)?;
    let find = |task: &str, instant: i64| {
        history
            .iter()
            .find(|f| f.task == task && f.instant_ms == instant)
    };
    let mut kill_delays = Vec::new();
    let mut stop_delays = Vec::new();
    for (graceful, e) in &kills {
        for task in &e.tasks {
            let instant = schedule.next_after(e.at_ms).expect("intervals never end");
            if let Some(FireRecord {
                started_at_ms: Some(s),
                ..
            }) = find(task, instant)
            {
                let delay = s - instant;
                if *graceful {
                    stop_delays.push(delay)
                } else {
                    kill_delays.push(delay)
                }
            }
        }
    }
    let mut silently_missed = 0;
    let mut recorded: BTreeSet<(String, i64)> = BTreeSet::new();
    for f in &history {
        recorded.insert((f.task.clone(), f.instant_ms));
    }
    let mut expected = 0;
    for task in &names {
        let mut t = schedule
            .next_after(measured_from)
            .expect("intervals never end");
        while t <= measured_to {
            expected += 1;
            if !recorded.contains(&(task.clone(), t)) {
                silently_missed += 1;
            }
            t = schedule.next_after(t).expect("intervals never end");
        }
    }
    let count = |o: Outcome| {
        history
            .iter()
            .filter(|f| f.outcome == o && f.instant_ms >= measured_from)
            .count()
    };

    println!("\nRESULTS (seed {seed})");
    println!(
        "  first fire after SIGKILL, past its instant: {}",
        stats(&mut kill_delays)
    );
    println!(
        "  first fire after SIGTERM, past its instant: {}",
        stats(&mut stop_delays)
    );
    println!("  instants in the measured window: {expected}");
    println!(
        "  duplicate fires (independent record): {}",
        duplicates.len()
    );
    println!("  silently missed instants: {silently_missed}");
    println!(
        "  recorded: ok {}, skipped {}, misfired {}, abandoned {}, failed {}",
        count(Outcome::Ok),
        count(Outcome::Skipped),
        count(Outcome::Misfired),
        count(Outcome::Abandoned),
        count(Outcome::Failed)
    );
    if args.idle_seconds > 0 {
        println!(
            "\nIDLE STORE LOAD (statements per second per node, {} nodes in-process)",
            args.nodes
        );
        for tasks in [10usize, 1000, 10_000] {
            let (reads, writes) = idle_load(
                &url,
                args.nodes,
                tasks,
                Duration::from_secs(args.idle_seconds),
            )
            .await?;
            println!("  {tasks:>6} tasks: writes {writes:.1}/s, reads {reads:.1}/s");
        }
    }
    let ok = duplicates.is_empty() && silently_missed == 0;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
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

/// Runs `nodes` idle nodes in this process (tasks that fire once a year) and counts the
/// statements each sends per second.
async fn idle_load(
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

/// In-process nodes (one store handle each) run `tasks` no-op tasks every `period`; the
/// store's history gives the claimed fires and their lateness (start minus instant).
async fn throughput(args: ThroughputArgs) -> anyhow::Result<ExitCode> {
    let period = parse_duration(&args.period)
        .map_err(anyhow::Error::msg)
        .context("--period")?;
    let run = args.store.open("throughput").await?;
    let (url, probe) = (run.url.clone(), run.store.clone());
    let cluster = format!("throughput-{}", std::process::id());
    println!(
        "bench throughput: {} nodes, {} tasks every {}, {} s measured, store {}",
        args.nodes,
        args.tasks,
        args.period,
        args.seconds,
        store::redact_url(&url)
    );
    let mut handles = Vec::new();
    for i in 0..args.nodes {
        let store = store::open(&url).await?;
        let mut builder = Node::builder(format!("node-{i}"), &cluster, &url).store(store);
        for t in 0..args.tasks {
            let spec = TaskSpec::new(
                format!("t{t:05}"),
                Schedule::every(period)?,
                |_ctx: rota::FireContext| async { Ok(()) },
            );
            builder = builder.task(spec);
        }
        handles.push(builder.start().await?);
    }
    tokio::time::sleep(period * 3).await;
    let from = probe.now_ms().await?;
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let to = probe.now_ms().await?;
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
    println!("\nRESULTS");
    println!(
        "  claimed fires: {started} in {:.1} s = {:.0} fires/s (expected about {expected})",
        (to - from) as f64 / 1000.0,
        started as f64 * 1000.0 / (to - from) as f64
    );
    println!("  lateness (start - instant): {}", stats(&mut lateness));
    println!(
        "  other records in the window: {} (skipped, misfired)",
        window.len() - started
    );
    Ok(ExitCode::SUCCESS)
}

/// Where a benchmark's nodes meet: `--store URL`, a private `--server`, or (neither) a new
/// temporary SQLite file.
#[derive(Args)]
pub struct StoreArgs {
    /// Store URL (default: a new temporary SQLite file).
    #[arg(long, conflicts_with = "server")]
    store: Option<String>,
    /// Start a private server for the run: postgres, mariadb, zookeeper, or
    /// zookeeper-ensemble (three servers).
    #[arg(long)]
    server: Option<String>,
}

/// One run's store, prepared, with its scratch directory (removed at the end unless
/// `keep`) and the private server, if any, which lives as long as this.
struct BenchStore {
    dir: std::path::PathBuf,
    url: String,
    store: Arc<dyn Store>,
    server: Option<PrivateServer>,
    /// The private server's wall clock, when it was started on a fake one.
    server_clock: Option<rota_testkit::clock::FakeClock>,
    keep: bool,
}

impl Drop for BenchStore {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl StoreArgs {
    async fn open(&self, bench: &str) -> anyhow::Result<BenchStore> {
        self.open_with(bench, false).await
    }

    /// With `server_clock`, a private server runs on a [`rota_testkit::clock::FakeClock`]
    /// (if libfaketime is installed), so that its clock can be stepped.
    async fn open_with(&self, bench: &str, server_clock: bool) -> anyhow::Result<BenchStore> {
        let dir = std::env::temp_dir().join(format!("rota-{bench}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let server_clock = match (server_clock, &self.server) {
            (true, Some(_)) => rota_testkit::clock::FakeClock::new(dir.join("store-clock.rc"))?,
            _ => None,
        };
        let jvm = matches!(
            self.server.as_deref(),
            Some("zookeeper" | "zookeeper-ensemble")
        );
        let env = match &server_clock {
            Some(c) if jvm => c.env_read_each_second(),
            Some(c) => c.env(),
            None => Vec::new(),
        };
        let (url, server) =
            store_for(self.store.clone(), self.server.as_deref(), &dir, env).await?;
        // A server just started may take a while to serve (a ZooKeeper ensemble electing its
        // first leader on a loaded machine): as patient as a node starting.
        let store = store::retry_transient("opening the store", || async {
            let store = store::open(&url).await?;
            store.prepare(true).await?;
            Ok(store)
        })
        .await?;
        Ok(BenchStore {
            dir,
            url,
            store,
            server,
            server_clock,
            keep: false,
        })
    }
}

/// A server started for a benchmark run: stopped when dropped at its end; the fault
/// campaign also restarts it.
enum PrivateServer {
    Db(rota_testkit::servers::DbServer),
    ZooKeeper(rota_testkit::zookeeper::ZkEnsemble),
}

async fn store_for(
    url: Option<String>,
    server: Option<&str>,
    dir: &std::path::Path,
    env: Vec<(String, String)>,
) -> anyhow::Result<(String, Option<PrivateServer>)> {
    use rota_testkit::servers::{DbKind, DbServer};
    let kind = match server {
        None => {
            return Ok((
                url.unwrap_or_else(|| format!("sqlite://{}", dir.join("rota.db").display())),
                None,
            ))
        }
        Some(kind @ ("zookeeper" | "zookeeper-ensemble")) => {
            let size = if kind == "zookeeper" { 1 } else { 3 };
            let zk = tokio::task::spawn_blocking(move || {
                rota_testkit::zookeeper::ZkEnsemble::start_with_env(size, env)
            })
            .await??;
            // On stderr: `--json` reports own stdout.
            eprintln!("private ZooKeeper server(s) on {}", zk.hosts());
            return Ok((zk.url("rota-bench"), Some(PrivateServer::ZooKeeper(zk))));
        }
        Some("postgres") => DbKind::Postgres,
        Some("mariadb") | Some("mysql") => DbKind::MariaDb,
        Some(other) => bail!(
            "--server `{other}` is not known; use postgres, mariadb, zookeeper or zookeeper-ensemble"
        ),
    };
    let server = tokio::task::spawn_blocking(move || DbServer::start_with_env(kind, env)).await??;
    let url = server.create_database("rota_bench").await?;
    eprintln!("private {kind:?} server on 127.0.0.1:{}", server.port());
    Ok((url, Some(PrivateServer::Db(server))))
}

/// In-process nodes with `tasks` round-robin tasks (that fire once a year). Starts
/// `nodes - 1` nodes, waits for the spread, then measures one join and one leave: the time
/// from the event until every task has its new owner written, and how many tasks moved.
async fn rebalance(args: RebalanceArgs) -> anyhow::Result<ExitCode> {
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
    Ok(ExitCode::SUCCESS)
}
