//! `rota bench throughput`: claimed fires per second and their lateness, and the store's idle
//! load.

use std::{process::ExitCode, time::Duration};

use anyhow::{bail, Context};
use clap::Args;
use rota::{
    core::schedule::{parse_duration, Schedule},
    store::{self, FireRecord},
    Node, TaskSpec, Timing,
};
use tokio::time::Instant;

use super::{bench_store::StoreArgs, measure::stats};

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

/// In-process nodes (one store handle each) run `tasks` no-op tasks every `period`; the
/// store's history gives the claimed fires and their lateness (start minus instant).
pub(super) async fn throughput(args: ThroughputArgs) -> anyhow::Result<ExitCode> {
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
