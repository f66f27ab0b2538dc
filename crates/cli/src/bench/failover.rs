//! `rota bench failover`: N node processes on one store run T tasks every P; the owner is
//! killed with SIGKILL (or frozen with SIGSTOP, a machine-level failure) K times at random
//! points (and restarted, or woken, each time), then stopped gracefully a few times. Prints the delay of the first fire after each kill past its
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
    measure::{owners, stats, wait_all_fired, LEASE_LAPSE},
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
    /// How the owner fails: `kill` (SIGKILL: its connections close at once) or `freeze`
    /// (SIGSTOP until its tasks resumed elsewhere, then SIGCONT: a machine-level failure,
    /// whose connections nobody closes, and a node that wakes up fenced).
    #[arg(long, default_value = "kill")]
    fault: String,
    /// The nodes' `[timing] profile`: `default` or `fast`.
    #[arg(long, default_value = "default")]
    timing: String,
    /// Busy loops (processes) kept running beside the cluster, to load the CPUs.
    #[arg(long, default_value_t = 0)]
    busy: usize,
    /// When the owner fails: `random` (a random point of the period) or `before-instant`
    /// (10 to 30 ms before its tasks' next instant, all idle: the time from the fault to
    /// their start on a survivor is then the whole failover).
    #[arg(long, default_value = "random")]
    aim: String,
    /// The nodes' `[store] session_locks` (`false`: deaths noticed by the node timeout).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    session_locks: bool,
    /// Keep the nodes' logs even when the run ends well (to see where a slow failover's
    /// time went).
    #[arg(long)]
    keep: bool,
}

/// Busy-loop processes, stopped with this guard.
struct Busy(Vec<std::process::Child>);

impl Busy {
    fn start(n: usize) -> anyhow::Result<Busy> {
        let mut children = Vec::with_capacity(n);
        for _ in 0..n {
            children.push(
                std::process::Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .spawn()
                    .context("starting a busy loop (sh)")?,
            );
        }
        Ok(Busy(children))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Marks in a node's log around a freeze: what the node logs in between is the fault's.
const FROZEN: &str = "fault: frozen";
const FAULT_OVER: &str = "fault: over";
/// Mark in the log of a node found gone outside a fault, before it is started again.
const DIED: &str = "died outside a fault: restarted";

/// Times a node's lease deadline passed without a renewal outside its own freezes: each
/// is a node that stopped its work while nothing was wrong with it.
fn mistaken_fences(log: &str) -> usize {
    let mut inside = false;
    let mut count = 0;
    for line in log.lines() {
        if line.contains(FROZEN) {
            inside = true;
        } else if line.contains(FAULT_OVER) {
            inside = false;
        } else if !inside && line.contains(LEASE_LAPSE) {
            count += 1;
        }
    }
    count
}

/// Starts again every node of `ids` whose process is gone though no fault hit it, as a
/// supervisor (systemd) would, and says how many. Such a node was killed by its work guard
/// (its lease lapsed while in-process work was alive: a fence by mistake, which its own log
/// cannot tell) or crashed; left down, the cluster ran out of nodes and a later fault's
/// tasks had no one to move to.
fn restart_the_dead(cluster: &mut ProcessCluster, ids: &[String]) -> anyhow::Result<usize> {
    let mut died = 0;
    for id in ids {
        if !cluster.running(id) {
            died += 1;
            let how = cluster
                .exit_status(id)
                .map_or_else(|| "never started".to_string(), |s| s.to_string());
            cluster.note(id, &format!("{DIED} ({how})"));
            cluster.spawn_with_config(id, &cluster.config_path(id))?;
        }
    }
    Ok(died)
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
    let freeze = match args.fault.as_str() {
        "kill" => false,
        "freeze" => true,
        other => bail!("--fault {other}: use kill or freeze"),
    };
    if rota::Timing::profile(&args.timing).is_none() {
        bail!("--timing {}: use default or fast", args.timing);
    }
    let before_instant = match args.aim.as_str() {
        "random" => false,
        "before-instant" => true,
        other => bail!("--aim {other}: use random or before-instant"),
    };
    let _busy = Busy::start(args.busy)?;
    let mut run = args.store.open("bench").await?;
    // Kept unless the run ends well: the nodes' logs say what went wrong.
    run.keep = true;
    let (dir, url, store) = (run.dir.clone(), run.url.clone(), run.store.clone());
    let cluster_name = format!("bench-{}", std::process::id());
    let record = dir.join("fires.log");
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    println!(
        "bench failover: {} nodes, {} tasks every {}, {} {} aimed {} (restart {}), {} graceful stops, timing {}, session locks {}, {} busy loops, store {} (seed {seed}; logs in {})",
        args.nodes,
        args.tasks,
        args.period,
        args.kills,
        if freeze { "freezes" } else { "kills" },
        args.aim,
        if freeze { "none: SIGCONT after failover" } else if args.restart_immediately { "at once" } else { "after failover" },
        args.stops,
        args.timing,
        args.session_locks,
        args.busy,
        store::redact_url(&url),
        dir.display()
    );

    let exe = std::env::current_exe()?;
    let mut cluster = ProcessCluster::new(exe, &dir, &url, &cluster_name);
    cluster.timing_toml = format!("profile = \"{}\"\n", args.timing);
    cluster.store_toml = format!("session_locks = {}\n", args.session_locks);
    let schedule = Schedule::every(period)?;
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
    let mut guard_kills = 0;
    // Nodes found gone though no fault hit them (see `restart_the_dead`).
    let mut died = 0;
    let faults_began = std::time::Instant::now();
    for k in 0..args.kills + args.stops {
        let graceful = k >= args.kills;
        // A random point in the period, after at least a second of steady state.
        let pause = Duration::from_millis(
            1000 + rng.random_range(0..period.as_millis().max(1) as u64 + 1000),
        );
        tokio::time::sleep(pause).await;
        died += restart_the_dead(&mut cluster, &ids)?;
        let owners = owners(&store, &cluster_name).await?;
        let Some(victim) = owners.iter().map(|(_, n)| n.clone()).next() else {
            bail!("no task has a live owner")
        };
        let victim_tasks: Vec<String> = owners
            .iter()
            .filter(|(_, n)| *n == victim)
            .map(|(t, _)| t.clone())
            .collect();
        let incarnation = store
            .view(&cluster_name)
            .await?
            .nodes
            .iter()
            .find(|n| n.node == victim)
            .map(|n| n.incarnation);
        let signal = if graceful {
            "SIGTERM"
        } else if freeze {
            "SIGSTOP"
        } else {
            "SIGKILL"
        };
        if before_instant && !graceful {
            let now = store.now_ms().await?;
            let instant = schedule.next_after(now + 40).expect("intervals never end");
            let ahead = rng.random_range(10..=30);
            tokio::time::sleep(Duration::from_millis((instant - ahead - now).max(0) as u64)).await;
        }
        let at_ms = store.now_ms().await?;
        if graceful {
            cluster.stop(&victim, Duration::from_secs(30)).await;
        } else if freeze {
            cluster.note(&victim, FROZEN);
            cluster.signal(&victim, libc::SIGSTOP);
        } else {
            cluster.kill(&victim);
        }
        let restart_first = graceful || (args.restart_immediately && !freeze);
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
        .with_context(|| format!("recovery after {signal} of {victim}"))?;
        if freeze && !graceful {
            // Woken, it finds its lease gone and comes back as a new incarnation; unless
            // its work guard killed it at its lease deadline (in-process work was still
            // alive in it, contract 12): then a new process comes back.
            cluster.signal(&victim, libc::SIGCONT);
            if !cluster.running(&victim) {
                guard_kills += 1;
                cluster.spawn_with_config(&victim, &cluster.config_path(&victim))?;
            }
            let back = harness::poll(Duration::from_secs(30), || async {
                let view = store.view(&cluster_name).await.ok()?;
                view.nodes
                    .iter()
                    .any(|n| n.node == victim && n.alive && Some(n.incarnation) != incarnation)
                    .then_some(())
            })
            .await;
            if back.is_none() {
                run.keep = true; // its log says why
                bail!(
                    "{victim} did not rejoin within 30 s of its SIGCONT (logs in {})",
                    dir.display()
                );
            }
            cluster.note(&victim, FAULT_OVER);
        } else if !restart_first {
            cluster.spawn_with_config(&victim, &cluster.config_path(&victim))?;
        }
        println!("  {signal} {victim} ({} tasks) done", victim_tasks.len());
        kills.push((
            graceful,
            Event {
                at_ms,
                tasks: victim_tasks,
            },
        ));
    }
    tokio::time::sleep(period * 2).await;
    died += restart_the_dead(&mut cluster, &ids)?;
    let measured_to = store.now_ms().await? - 2 * period.as_millis() as i64;
    // Every task past the window before the nodes stop: an instant whose owner died near the
    // end (a node just restarted above) is then recorded by its new owner, run or skipped,
    // or truly missed; stopped before, the new owner would never have had the chance.
    wait_all_fired(
        &store,
        &cluster_name,
        &names,
        measured_to + period.as_millis() as i64,
        Duration::from_secs(30),
    )
    .await
    .context("the end of the run")?;
    let mistaken: usize = ids.iter().map(|id| mistaken_fences(&cluster.log(id))).sum();

    for id in &ids {
        cluster.stop(id, Duration::from_secs(30)).await;
    }

    // Analysis, from the store's history and the tasks' own record.
    let history = store.history(&cluster_name, None, i64::MAX / 2).await?;
    let lines = harness::read_fire_lines(&record);
    let duplicates = harness::duplicates(&lines);
    let find = |task: &str, instant: i64| {
        history
            .iter()
            .find(|f| f.task == task && f.instant_ms == instant)
    };
    let mut kill_delays = Vec::new();
    let mut stop_delays = Vec::new();
    // From the fault to the start of its tasks' next instant, the slowest of them (store
    // times): the whole failover when they were idle at the fault.
    let mut resumes = Vec::new();
    for (_, e) in kills.iter().filter(|(graceful, _)| !graceful) {
        let instant = schedule.next_after(e.at_ms).expect("intervals never end");
        let slowest = e
            .tasks
            .iter()
            .map(|task| find(task, instant).and_then(|f| f.started_at_ms))
            .try_fold(i64::MIN, |worst, s| s.map(|s| worst.max(s - e.at_ms)));
        if let Some(slowest) = slowest {
            resumes.push(slowest);
        }
    }
    let noticed_by_session: usize = ids
        .iter()
        .map(|id| cluster.log(id).matches("session lock was let go").count())
        .sum();
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
    let mut recorded: BTreeSet<(String, i64)> = BTreeSet::new();
    for f in &history {
        recorded.insert((f.task.clone(), f.instant_ms));
    }
    let mut expected = 0;
    // (instant, task) of each instant in the window that nothing recorded.
    let mut missed = Vec::new();
    for task in &names {
        let mut t = schedule
            .next_after(measured_from)
            .expect("intervals never end");
        while t <= measured_to {
            expected += 1;
            if !recorded.contains(&(task.clone(), t)) {
                missed.push((t, task.clone()));
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

    println!(
        "\nRESULTS (seed {seed}; faults over {:.1} min)",
        faults_began.elapsed().as_secs_f64() / 60.0
    );
    println!(
        "  first fire after {}, past its instant: {}",
        if freeze { "SIGSTOP" } else { "SIGKILL" },
        stats(&mut kill_delays)
    );
    if before_instant {
        println!(
            "  from the fault to its tasks' start on a survivor, per fault (slowest task): {}",
            stats(&mut resumes)
        );
    }
    println!("  registrations ended by their session lock's release: {noticed_by_session}");
    println!("  nodes fenced by mistake (a lease lapsed outside a freeze): {mistaken}");
    println!(
        "  nodes that died outside a fault (killed by their work guard when their lease lapsed \
         with work alive, or crashed), restarted: {died}"
    );
    if freeze {
        println!(
            "  frozen nodes killed by their work guard at their lease deadline: {guard_kills}"
        );
    }
    println!(
        "  first fire after SIGTERM, past its instant: {}",
        stats(&mut stop_delays)
    );
    println!("  instants in the measured window: {expected}");
    println!(
        "  duplicate fires (independent record): {}",
        duplicates.len()
    );
    println!("  silently missed instants: {}", missed.len());
    missed.sort();
    for (instant, task) in missed.iter().take(10) {
        println!("    missed: {task} at {instant} (store ms)");
    }
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
    let ok = duplicates.is_empty() && missed.is_empty() && mistaken == 0 && died == 0;
    if ok && !args.keep {
        run.keep = false;
    } else {
        println!("  nodes' logs kept in {}", dir.display());
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lapses_outside_a_freeze_are_mistakes() {
        let lapse = r#"{"level":"WARN","message":"lease deadline passed without renewal: cancelling all work"}"#;
        let log = [
            lapse,
            "### harness: fault: frozen",
            lapse,
            "### harness: fault: over",
            "fire started",
            lapse,
        ]
        .join("\n");
        assert_eq!(mistaken_fences(&log), 2);
        assert_eq!(mistaken_fences(""), 0);
    }
}
