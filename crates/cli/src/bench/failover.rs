//! `rota bench failover`: N node processes on one store run T tasks every P; the owner is
//! killed with SIGKILL K times at random points (and restarted each time), then stopped
//! gracefully a few times. Prints the delay of the first fire after each kill past its
//! instant, duplicates (from an independent record the tasks write), missed fires, and the
//! store load of idle nodes for several task counts.

use std::{collections::BTreeSet, process::ExitCode, time::Duration};

use anyhow::{bail, Context};
use clap::Args;
use rand::{Rng, SeedableRng};
use rota::{
    core::schedule::{parse_duration, Schedule},
    store::{self, FireRecord},
    Outcome,
};
use rota_testkit::{self as harness, ProcessCluster};

use super::{
    bench_store::StoreArgs,
    measure::{owners, stats, wait_all_fired},
    throughput::idle_load,
};

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

pub(super) struct Event {
    at_ms: i64,
    tasks: Vec<String>,
}

pub(super) async fn failover(args: FailoverArgs) -> anyhow::Result<ExitCode> {
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
