//! `rota bench idle`: what a node costs while its tasks have nothing to do. For each task
//! count, one `rota node` process with that many daily command tasks: how long until it is
//! placed (owns them all) and until every runner is parked, then its CPU (share of one core),
//! resident memory and the statements it sends to the store, over a quiet window.

use std::{process::ExitCode, time::Duration};

use anyhow::{bail, Context};
use clap::Args;
use rota_testkit::{self as harness, ProcessCluster};
use tokio::time::Instant;

use super::{
    bench_store::StoreArgs,
    measure::{cpu_ticks, memory_kb, NodeMetrics},
};

#[derive(Args)]
pub struct IdleArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Task counts, one node process each, comma-separated.
    #[arg(long, default_value = "10,10000,100000", value_delimiter = ',')]
    tasks: Vec<usize>,
    /// Seconds measured once the node is placed and its runners are parked.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
}

/// One node process's numbers.
struct Idle {
    tasks: usize,
    placed: Duration,
    parked: Option<Duration>,
    cpu_percent: f64,
    rss_kb: u64,
    peak_rss_kb: u64,
    reads_per_s: f64,
    writes_per_s: f64,
}

pub async fn idle(args: IdleArgs) -> anyhow::Result<ExitCode> {
    if args.tasks.is_empty() || args.tasks.contains(&0) {
        bail!("--tasks: give task counts of 1 or more, for example --tasks 10,10000");
    }
    if args.seconds == 0 {
        bail!("--seconds 0 measures nothing; use 10 or more");
    }
    let run = args.store.open("idle").await?;
    println!(
        "bench idle: one node process, daily command tasks, {} s measured each, store {}",
        args.seconds,
        rota::store::redact_url(&run.url)
    );
    println!(
        "{:>8} {:>9} {:>9} {:>8} {:>8} {:>9} {:>8} {:>9}",
        "tasks", "placed", "parked", "cpu %", "RSS MB", "peak MB", "reads/s", "writes/s"
    );
    for &tasks in &args.tasks {
        let m = measure(&run.url, &run.dir, tasks, Duration::from_secs(args.seconds)).await?;
        println!(
            "{:>8} {:>8.2}s {:>9} {:>8.2} {:>8.1} {:>9.1} {:>8.1} {:>9.1}",
            m.tasks,
            m.placed.as_secs_f64(),
            m.parked
                .map_or("-".to_string(), |d| format!("{:.2}s", d.as_secs_f64())),
            m.cpu_percent,
            m.rss_kb as f64 / 1024.0,
            m.peak_rss_kb as f64 / 1024.0,
            m.reads_per_s,
            m.writes_per_s
        );
    }
    println!(
        "placed: from the process's start until it owns every task; parked: until every \
         runner is parked (rota_parked_tasks); cpu: user + system time over the window, in \
         percent of one core"
    );
    Ok(ExitCode::SUCCESS)
}

/// `[[task]]` tables of `n` command tasks that fire once a day, twelve hours from now.
fn daily_tasks(n: usize) -> String {
    let hour = (chrono::Utc::now()
        .format("%H")
        .to_string()
        .parse::<u32>()
        .unwrap_or(0)
        + 12)
        % 24;
    let mut toml = String::with_capacity(n * 80);
    for i in 0..n {
        toml.push_str(&format!(
            "[[task]]\nname = \"daily-{i:06}\"\ncron = \"0 0 {hour} * * *\"\ncommand = [\"true\"]\n\n"
        ));
    }
    toml
}

async fn measure(
    url: &str,
    dir: &std::path::Path,
    tasks: usize,
    window: Duration,
) -> anyhow::Result<Idle> {
    let name = format!("idle-{tasks}-{}", std::process::id());
    let mut cluster = ProcessCluster::new(std::env::current_exe()?, dir, url, &name);
    let port = harness::servers::free_port();
    let began = Instant::now();
    let pid = cluster
        .spawn_with_admin("idle-1", &daily_tasks(tasks), Some((port, None)))
        .context("starting the node process")?;
    let result = watch(port, pid, tasks, began, window).await;
    cluster.stop("idle-1", Duration::from_secs(30)).await;
    result.with_context(|| {
        format!(
            "{tasks} tasks; the node's log: {}",
            cluster.log_path("idle-1").display()
        )
    })
}

async fn watch(
    port: u16,
    pid: u32,
    tasks: usize,
    began: Instant,
    window: Duration,
) -> anyhow::Result<Idle> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let metrics = || async {
        let text = http
            .get(&metrics_url)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        Some(NodeMetrics::parse(&text))
    };
    let deadline = began + Duration::from_secs(300);
    let placed = loop {
        if let Some(m) = metrics().await {
            if m.owned == tasks as u64 {
                break began.elapsed();
            }
        }
        if Instant::now() > deadline {
            bail!("the node did not own its {tasks} tasks within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Parked runners hold no task: wait for all of them (bounded: report `-` otherwise).
    let parked_deadline = Instant::now() + Duration::from_secs(120);
    let parked = loop {
        if metrics().await.is_some_and(|m| m.parked == tasks as u64) {
            break Some(began.elapsed());
        }
        if Instant::now() > parked_deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // A moment for the takeover's allocations to settle before the window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = metrics().await.context("reading /metrics")?;
    let cpu_before = cpu_ticks(pid)?;
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let cpu_after = cpu_ticks(pid)?;
    let elapsed = start.elapsed().as_secs_f64();
    let after = metrics().await.context("reading /metrics")?;
    let (rss_kb, peak_rss_kb) = memory_kb(pid)?;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(Idle {
        tasks,
        placed,
        parked,
        cpu_percent: (cpu_after - cpu_before) as f64 / ticks_per_s / elapsed * 100.0,
        rss_kb,
        peak_rss_kb,
        reads_per_s: (after.reads - before.reads) as f64 / elapsed,
        writes_per_s: (after.writes - before.writes) as f64 / elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_tasks_are_valid_tables_with_unique_names() {
        let toml = daily_tasks(3);
        assert_eq!(toml.matches("[[task]]").count(), 3);
        assert!(toml.contains("daily-000002"));
        assert!(toml.contains("cron = \"0 0 "));
    }
}
