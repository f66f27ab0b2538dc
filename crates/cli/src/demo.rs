//! `rota demo`: three nodes on a temporary SQLite file run three 1-second tasks; the demo
//! kills the owner with SIGKILL, shows the failover live, stops the new owner gracefully,
//! and ends with a summary checked against an independent record of every fire.

use std::{collections::BTreeMap, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context;
use rota::{
    status::fmt_time,
    store::{self, Store},
    Outcome,
};
use rota_testkit::{self as harness, ProcessCluster};
use tokio::time::Instant;

const TASKS: [&str; 3] = ["ftp-transfer", "report-export", "inbox-poller"];

pub async fn run(phase: u64) -> anyhow::Result<ExitCode> {
    let dir = std::env::temp_dir().join(format!("rota-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = format!("sqlite://{}", dir.join("rota.db").display());
    let record = dir.join("fires.log");
    let exe = std::env::current_exe().context("locating the rota binary")?;
    let mut cluster = ProcessCluster::new(exe, &dir, &url, "demo");
    let tasks: String = TASKS
        .iter()
        .map(|t| harness::log_task_toml(t, "1s", &record))
        .collect();

    println!(
        "rota demo: 3 nodes, store {url}, tasks {} (every 1s)",
        TASKS.join(", ")
    );
    println!("logs and configs in {}\n", dir.display());
    let store = store::open(&url).await?;
    store.prepare(true).await?;
    for id in ["node-1", "node-2", "node-3"] {
        cluster.spawn(id, &tasks)?;
        // Let node-1 join first so it is the active node of active-passive placement.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    show_for(&store, Duration::from_secs(phase)).await?;

    let victim = owner_of(&store, TASKS[0])
        .await?
        .context("no owner after start-up")?;
    let killed_at = store.now_ms().await?;
    println!(
        "\n>>> kill -9 {victim} (owner of every task) at {}\n",
        fmt_time(killed_at)
    );
    cluster.kill(&victim);
    let started = Instant::now();
    let new_owner = harness::poll(Duration::from_secs(15), || async {
        owner_of(&store, TASKS[0])
            .await
            .ok()
            .flatten()
            .filter(|o| *o != victim)
    })
    .await;
    let new_owner = new_owner.context("no survivor took over within 15 s")?;
    println!(
        ">>> {new_owner} took over after {} ms\n",
        started.elapsed().as_millis()
    );
    show_for(&store, Duration::from_secs(phase)).await?;

    println!("\n>>> SIGTERM {new_owner} (graceful stop)\n");
    let stop_at = store.now_ms().await?;
    cluster.stop(&new_owner, Duration::from_secs(15)).await;
    show_for(&store, Duration::from_secs(phase.min(4))).await?;
    for id in cluster.nodes() {
        cluster.stop(&id, Duration::from_secs(15)).await;
    }
    summary(&store, &record, &victim, killed_at, stop_at).await?;
    Ok(ExitCode::SUCCESS)
}

async fn owner_of(store: &Arc<dyn Store>, task: &str) -> rota::Result<Option<String>> {
    let view = store.view("demo").await?;
    Ok(store
        .assignments("demo")
        .await?
        .into_iter()
        .find(|a| a.task == task)
        .and_then(|a| a.owner)
        .filter(|(n, i)| {
            view.nodes
                .iter()
                .any(|r| r.node == *n && r.incarnation == *i && r.alive)
        })
        .map(|(n, _)| n))
}

/// One line a second: nodes, owners, and the latest fires.
async fn show_for(store: &Arc<dyn Store>, span: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + span;
    while Instant::now() < end {
        let view = store.view("demo").await?;
        let leader = view
            .leader
            .as_ref()
            .map(|l| l.node.clone())
            .unwrap_or_default();
        let nodes: Vec<String> = view
            .nodes
            .iter()
            .map(|n| {
                let state = if !n.alive {
                    "dead"
                } else if n.leaving {
                    "leaving"
                } else {
                    "alive"
                };
                let crown = if n.node == leader && n.alive { "*" } else { "" };
                format!("{}{crown}:{state}", n.node)
            })
            .collect();
        let mut owners: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for a in store.assignments("demo").await? {
            owners
                .entry(a.owner.map(|o| o.0).unwrap_or_else(|| "-".into()))
                .or_default()
                .push(a.task);
        }
        let latest: Vec<String> = store
            .history("demo", None, 3)
            .await?
            .iter()
            .map(|f| format!("{}@{}={}", f.task, fmt_time(f.instant_ms), f.outcome))
            .collect();
        println!(
            "{}  nodes [{}]  owners {:?}  last fires {}",
            fmt_time(view.now_ms),
            nodes.join(" "),
            owners,
            latest.join(", ")
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

async fn summary(
    store: &Arc<dyn Store>,
    record: &std::path::Path,
    victim: &str,
    killed_at: i64,
    stop_at: i64,
) -> anyhow::Result<()> {
    let history = store.history("demo", None, 100_000).await?;
    let lines = harness::read_fire_lines(record);
    let dups = harness::duplicates(&lines);
    let count = |o: Outcome| history.iter().filter(|f| f.outcome == o).count();
    let first_after = |t: i64| {
        TASKS
            .iter()
            .filter_map(|task| {
                history
                    .iter()
                    .filter(|f| f.task == *task && f.instant_ms >= t && f.started_at_ms.is_some())
                    .min_by_key(|f| f.instant_ms)
                    .map(|f| f.started_at_ms.unwrap_or(0) - f.instant_ms)
            })
            .max()
    };
    println!("\nSUMMARY");
    println!("  fires started (independent record): {}", lines.len());
    println!(
        "  history: ok {}, failed {}, skipped {}, misfired {}, abandoned {}",
        count(Outcome::Ok),
        count(Outcome::Failed),
        count(Outcome::Skipped),
        count(Outcome::Misfired),
        count(Outcome::Abandoned)
    );
    println!("  duplicate fires: {}", dups.len());
    if let Some(late) = first_after(killed_at) {
        println!("  failover after kill -9 of {victim}: first fire {late} ms after its scheduled instant");
    }
    if let Some(late) = first_after(stop_at) {
        println!(
            "  graceful stop: first fire on the survivor {late} ms after its scheduled instant"
        );
    }
    if dups.is_empty() {
        println!("  every instant was started at most once.");
    } else {
        println!("  DUPLICATES: {dups:?}");
    }
    Ok(())
}
