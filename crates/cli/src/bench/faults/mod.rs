//! `rota bench faults`: the fault campaign. Node processes on one store run a small workload
//! of command tasks with the product's default settings, while the campaign causes faults one
//! at a time (kill, stop, cut, store restart, graceful stop, ZooKeeper leader loss), each
//! followed by a wait until the cluster is healthy again. Each run of a task writes a START
//! and an END line to a record file of its own; [`check`] then judges that record, the
//! store's history and the campaign's log of faults against the contract.
//!
//! Besides the tasks, every node declares two services ([`services`]): a command service,
//! whose process writes a START and an END line like a task's run, and a `file_inbound`
//! service handling files the campaign drops into a directory all nodes share.

mod campaign;
mod causes;
mod check;
mod services;
mod workload;

use std::{collections::BTreeMap, process::ExitCode, time::Duration};

use anyhow::{bail, Context};
use clap::Args;
use rand::{rngs::StdRng, Rng, SeedableRng};
use rota::store;
use rota_testkit::{
    clock::{libfaketime, FakeClock},
    poll,
    servers::free_port,
    ProcessCluster,
};
use serde::Serialize;

use self::{campaign::*, causes::*, workload::*};
use super::bench_store::{BenchStore, StoreArgs};
use check::{ExitHow, Fault, FaultKind, ProcessExit, Report};

#[derive(Args)]
#[command(after_long_help = "\
The workload, on every node, with the product's default policies:
  - command tasks short-1..N (0.2 s of work) and `long` (2.5 s), every second;
  - a command service, `listener` (--service), a process that runs until it is stopped;
  - a file_inbound service, `inbox` (--files), fed --file-rate files a second.
Each run of a task, of the service and of a file's handler writes a START and an END line.
Operator actions (drain, pause, rolling-restart) go through the nodes' admin API with
`rota ctl`, as faults of their own. The report gives, besides violations: faults by kind,
instants not started and why, failover times per kind (tasks and services), the outcome lag
(a run's END to the store's finished_at), and what became of the files.
Exit status: 0 without violation, 1 with.")]
pub struct FaultsArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Faults caused, one at a time. An interrupt (Ctrl-C) ends the run after the fault in
    /// progress and checks what ran; a second one exits at once.
    #[arg(long, default_value_t = 20)]
    faults: usize,
    /// Random seed for the faults, their targets and pauses (printed, to replay a run).
    #[arg(long)]
    seed: Option<u64>,
    /// Kinds of fault to draw from (default: every kind the store allows).
    #[arg(long, value_enum, value_delimiter = ',')]
    kinds: Vec<FaultKind>,
    /// Short command tasks, besides the one long task.
    #[arg(long, default_value_t = 3)]
    tasks: usize,
    /// The file workload: a `file_inbound` service on every node (one definition, recovery
    /// `abandon`, the default) polling a directory all nodes share, into which the campaign
    /// drops --file-rate files a second (written under a dot name, then renamed into place).
    /// Each file's handler writes START and END lines with its node, token and attempt. The
    /// checker reports files handled twice (as the same attempt, or again at all unless after
    /// a graceful handover and as a later attempt), files lost (never handled, and not in the
    /// failed directory with a store record saying why) and the counts of files dropped,
    /// handled once, handled again, abandoned and failed. `--files false` leaves it out.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    files: bool,
    /// Files dropped per second.
    #[arg(long, default_value_t = 4.0)]
    file_rate: f64,
    /// The command service: a `[[service]]` process that runs until stopped and writes START
    /// and END lines; two of its processes running at once is a violation.
    /// `--service false` leaves it out.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    service: bool,
    /// Print the report as JSON (progress goes to stderr).
    #[arg(long)]
    json: bool,
    /// Keep the run's directory (record file, node configs and logs) and print its path.
    #[arg(long)]
    keep: bool,
}

/// Steady state between faults.
const PAUSE_MS: std::ops::Range<u64> = 300..2000;

/// The kinds a store allows: cuts, slow links and restarts need a server the campaign
/// started; the leader of an ensemble needs an ensemble; clocks need libfaketime, and a
/// store's clock is a private server's or, on SQLite, the host's (the nodes').
fn allowed_kinds(run: &BenchStore) -> Vec<FaultKind> {
    let server = run.server.as_ref();
    let mut kinds = vec![
        FaultKind::Kill,
        FaultKind::Stop,
        FaultKind::Graceful,
        FaultKind::Drain,
        FaultKind::Pause,
        FaultKind::RollingRestart,
        FaultKind::Duplicate,
    ];
    if server.is_some() {
        kinds.extend([
            FaultKind::Cut,
            FaultKind::CutAll,
            FaultKind::Sever,
            FaultKind::RestartStore,
            FaultKind::Slow,
        ]);
    }
    if server_ports(server).len() > 1 {
        kinds.push(FaultKind::ZkLeader);
    }
    let sqlite = run.url.starts_with("sqlite:");
    if libfaketime().is_some() && !sqlite {
        kinds.push(FaultKind::Skew);
    }
    if (libfaketime().is_some() && sqlite) || run.server_clock.is_some() {
        kinds.push(FaultKind::StoreStep);
    }
    kinds
}

/// What `--json` prints.
#[derive(Serialize)]
struct Output<'a> {
    seed: u64,
    store: String,
    nodes: usize,
    tasks: &'a [String],
    kinds: &'a [FaultKind],
    origin_ms: i64,
    until_ms: i64,
    faults: &'a [Fault],
    exits: &'a [ProcessExit],
    #[serde(flatten)]
    report: &'a Report,
}

/// The kinds of fault to draw from: `--kinds`, or every kind the store allows.
fn kinds(args: &FaultsArgs, run: &BenchStore) -> anyhow::Result<Vec<FaultKind>> {
    let allowed = allowed_kinds(run);
    if let Some(k) = args.kinds.iter().find(|k| !allowed.contains(k)) {
        bail!(
            "--kinds {}: not possible on this store (allowed: {}); cuts, slow links and store \
             restarts need --server; skew and store-step need libfaketime (apt-get install \
             faketime), and skew a store other than SQLite",
            k.as_str(),
            kinds_list(&allowed)
        );
    }
    if args.kinds.is_empty() && libfaketime().is_none() {
        eprintln!("  skew, store-step: not drawn (libfaketime is not installed: apt-get install faketime)");
    }
    Ok(if args.kinds.is_empty() {
        allowed
    } else {
        args.kinds.clone()
    })
}

fn kinds_list(kinds: &[FaultKind]) -> String {
    kinds
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

pub async fn faults(args: FaultsArgs) -> anyhow::Result<ExitCode> {
    if args.nodes < 2 {
        bail!("--nodes {} leaves no survivor; use 2 or more", args.nodes);
    }
    let step_drawn = args.kinds.is_empty() || args.kinds.contains(&FaultKind::StoreStep);
    let mut run = args.store.open_with("faults", step_drawn).await?;
    run.keep = args.keep;
    let kinds = kinds(&args, &run)?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let cluster_name = format!("faults-{}", std::process::id());
    let record = run.dir.join("record.log");
    let fifos = run.dir.join("fifos");
    std::fs::create_dir_all(&fifos)?;
    let (mut tasks_toml, task_infos) = workload(args.tasks, &record, &fifos);
    if args.files && !(args.file_rate > 0.0 && args.file_rate <= 100.0) {
        bail!(
            "--file-rate {}: give 0 < rate <= 100 files a second",
            args.file_rate
        );
    }
    let file_dirs = if args.files {
        Some(services::FileDirs::under(&run.dir)?)
    } else {
        None
    };
    tasks_toml.push_str(&services::workload(
        &record,
        &fifos,
        file_dirs.as_ref(),
        args.service,
    ));
    let mut services_desc = Vec::new();
    if args.files {
        services_desc.push(format!("files ({} a second)", args.file_rate));
    }
    if args.service {
        services_desc.push("a command service".to_string());
    }
    eprintln!(
        "bench faults: {} nodes, {} tasks{}, {} faults of {}, store {} (seed {seed}), in {}",
        args.nodes,
        task_infos.len(),
        if services_desc.is_empty() {
            String::new()
        } else {
            format!(" + {}", services_desc.join(" + "))
        },
        args.faults,
        kinds_list(&kinds),
        store::redact_url(&run.url),
        run.dir.display()
    );

    let exe = std::env::current_exe()?;
    let mut cluster = ProcessCluster::new(exe.clone(), &run.dir, &run.url, &cluster_name);
    let ids: Vec<String> = (1..=args.nodes).map(|i| format!("node-{i}")).collect();
    let proxies = if [
        FaultKind::Cut,
        FaultKind::CutAll,
        FaultKind::Sever,
        FaultKind::Slow,
    ]
    .iter()
    .any(|k| kinds.contains(k))
    {
        proxies(&mut cluster, &run, &ids).await?
    } else {
        BTreeMap::new()
    };
    let node_clocks = kinds.contains(&FaultKind::Skew)
        || (kinds.contains(&FaultKind::StoreStep) && run.server_clock.is_none());
    let mut clocks = BTreeMap::new();
    if node_clocks {
        for id in &ids {
            let clock = FakeClock::new(run.dir.join(format!("clock-{id}.rc")))?
                .context("libfaketime is not installed: apt-get install faketime")?;
            cluster.env_of.insert(id.clone(), clock.env());
            clocks.insert(id.clone(), clock);
        }
    }
    let admin = kinds.iter().any(|k| k.operator()).then(|| {
        let token = || format!("{:032x}", rand::random::<u128>());
        Admin {
            ports: ids.iter().map(|id| (id.clone(), free_port())).collect(),
            token: token(),
            read_token: token(),
        }
    });
    let mut c = Campaign {
        run,
        cluster,
        ids: ids.clone(),
        tasks: task_infos
            .iter()
            .filter(|t| t.name != workload::SPARSE_TASK)
            .map(|t| t.name.clone())
            .chain(args.files.then(|| services::FILE_SERVICE.to_string()))
            .collect(),
        command_service: args.service.then(|| services::COMMAND_SERVICE.to_string()),
        task_names: task_infos.iter().map(|t| t.name.clone()).collect(),
        admin,
        exe,
        proxies,
        clocks,
        tail: RecordTail::new(record),
        rng: StdRng::seed_from_u64(seed),
        faults: Vec::new(),
        exits: Vec::new(),
    };
    let origin_ms = now_ms();
    for id in &ids {
        let admin = c
            .admin
            .as_ref()
            .map(|a| (a.ports[id], Some((a.token.as_str(), a.read_token.as_str()))));
        c.cluster.spawn_with_admin(id, &tasks_toml, admin)?;
    }
    let dropper = file_dirs
        .as_ref()
        .map(|d| services::Dropper::start(d.inbox.clone(), args.file_rate));
    if c.recover(origin_ms).await.is_none() {
        c.run.keep = true; // its logs say why
        bail!(
            "the cluster did not start: not every task started within {RECOVERY:?} (logs in {})",
            c.cluster.dir().display()
        );
    }
    let interrupted = interrupt_ends_faults();
    for i in 0..args.faults {
        if interrupted.load(std::sync::atomic::Ordering::Relaxed) {
            eprintln!("  interrupted after {i} faults: winding down and checking what ran");
            break;
        }
        c.fault_and_recover(i, &kinds).await?;
    }
    let (dropped, until_ms) = c.wind_down(dropper, file_dirs.as_ref()).await;

    let history = c
        .run
        .store
        .history(&cluster_name, None, i64::MAX / 2)
        .await
        .context("reading the store's history")?;
    let (items, places) = match &file_dirs {
        Some(dirs) => (
            services::item_rows(&c.run.url, &cluster_name, services::FILE_SERVICE)
                .await
                .context("reading the file service's item records")?,
            dirs.places(),
        ),
        None => (Vec::new(), BTreeMap::new()),
    };
    let report = check::check(&check::Input {
        record: &c.tail.lines,
        history: &history,
        faults: &c.faults,
        exits: &c.exits,
        tasks: &task_infos,
        until_ms,
        origin_ms,
        units: &c.tail.units,
        files: args.files.then_some(check::FilesInput {
            service: services::FILE_SERVICE,
            dropped: &dropped,
            items: &items,
            places: &places,
        }),
    });
    if args.json {
        let out = Output {
            seed,
            store: store::redact_url(&c.run.url),
            nodes: args.nodes,
            tasks: &c.tasks,
            kinds: &kinds,
            origin_ms,
            until_ms,
            faults: &c.faults,
            exits: &c.exits,
            report: &report,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_report(
            &report,
            &c.faults,
            seed,
            &store::redact_url(&c.run.url),
            origin_ms,
        );
        // Kills and cuts close the node's connections: on the SQL stores a survivor then
        // ends it by its session lock, whether it died or lives on, cut off.
        let ended: usize = c
            .ids
            .iter()
            .map(|id| c.cluster.log(id).matches("session lock was let go").count())
            .sum();
        println!("  registrations ended by their session lock's release (nodes' logs): {ended}");
    }
    if args.keep {
        eprintln!("kept {}", c.run.dir.display());
    }
    Ok(if report.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_report(report: &Report, faults: &[Fault], seed: u64, store: &str, origin_ms: i64) {
    let counts = |m: &BTreeMap<String, usize>| {
        if m.is_empty() {
            return "none".to_string();
        }
        m.iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rel = |ms: i64| format!("{:+.1}s", (ms - origin_ms) as f64 / 1000.0);
    println!("\nRESULTS (seed {seed}, store {store})");
    println!("  faults: {}", counts(&report.faults_by_kind));
    println!(
        "  instants checked {}, started {} (START lines {}); not started: {}",
        report.instants,
        report.fires,
        report.starts,
        counts(&report.not_started)
    );
    println!(
        "  failover, from a fault on an owner until each of its tasks started in another process:"
    );
    for (kind, p) in &report.failover_ms {
        println!("    {kind:<13} {p}");
    }
    if !report.units.service_failover_ms.is_empty() {
        println!("  service failover, from a fault on a service's owner until it started in another process:");
        for (kind, p) in &report.units.service_failover_ms {
            println!("    {kind:<13} {p}");
        }
    }
    println!(
        "  outcome lag, from a run's END line to the store's finished_at: {}",
        report
            .outcome_lag_ms
            .as_ref()
            .map_or("no sample".to_string(), |p| p.to_string())
    );
    for (outcome, p) in &report.outcome_lag_by_outcome {
        println!("    {outcome:<13} {p}");
    }
    if !report.units.service_starts.is_empty() {
        println!(
            "  service START lines: {}",
            counts(&report.units.service_starts)
        );
    }
    if let Some(f) = &report.units.files {
        println!(
            "  files: dropped {}, handled once {}, handled again {}, never handled {} (set aside with a reason {}), lost {}",
            f.dropped, f.handled_once, f.handled_again, f.never_handled, f.set_aside_unhandled, f.lost
        );
        println!("    store outcomes: {}", counts(&f.outcomes));
        println!("    places: {}", counts(&f.places));
        if !f.messages.is_empty() {
            println!("    why not ok (store): {}", counts(&f.messages));
        }
        if let Some(p) = &f.wait_ms {
            println!("    drop to first START: {p}");
        }
        if let Some(p) = &f.outcome_lag_ms {
            println!("    outcome lag: {p}");
        }
    }
    println!("  per fault:");
    for s in &report.per_fault {
        let f = &faults[s.index];
        println!(
            "    {:>3} {} {:<13} {:<12} resumed {}, not started: {}",
            s.index,
            rel(f.start_ms),
            s.kind.as_str(),
            s.target,
            s.resumed_ms.map_or("-".into(), |ms| format!("{ms} ms")),
            counts(&s.not_started)
        );
    }
    println!("  violations: {}", report.violations.len());
    for v in &report.violations {
        println!("\n  [{}] {}", v.kind.as_str(), v.detail);
        for line in &v.context {
            println!("      {line}");
        }
    }
}

/// A first interrupt (Ctrl-C, SIGINT) ends the campaign after the fault in progress: it
/// winds down and checks the history so far, so a long run cut short still reports. A second
/// one exits at once.
fn interrupt_ends_faults() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let set = flag.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        set.store(true, std::sync::atomic::Ordering::Relaxed);
        eprintln!("  interrupt: ending after this fault (interrupt again to exit at once)");
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
    flag
}

impl Campaign {
    /// Fault `i`: a random pause, a fault of a random kind, and the wait until the cluster
    /// recovered.
    async fn fault_and_recover(&mut self, i: usize, kinds: &[FaultKind]) -> anyhow::Result<()> {
        let pause = self.rng.random_range(PAUSE_MS);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let kind = kinds[self.rng.random_range(0..kinds.len())];
        let mut fault = self.cause(kind).await?;
        fault.recovered_ms = self.recover(fault.end_ms).await;
        eprintln!(
            "  fault {i:>3}: {:<13} {:<12} {:>5} ms, recovered after {}{}",
            kind.as_str(),
            fault.target,
            fault.end_ms - fault.start_ms,
            fault
                .recovered_ms
                .map_or("NEVER".into(), |t| format!("{} ms", t - fault.end_ms)),
            if fault.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", fault.note)
            }
        );
        if let Some(why) = &fault.failed {
            eprintln!("             the command did not complete: {why}");
        }
        self.faults.push(fault);
        Ok(())
    }

    /// A last stretch without faults; no more files (the last ones handled before the nodes
    /// stop); then a graceful stop of every node at once (so that nothing moves), and the END
    /// lines of the last runs, read. Returns the files dropped, and when the nodes were
    /// told to stop.
    async fn wind_down(
        &mut self,
        dropper: Option<services::Dropper>,
        file_dirs: Option<&services::FileDirs>,
    ) -> (Vec<(String, i64)>, i64) {
        self.recover(now_ms()).await;
        let mut dropped = Vec::new();
        if let (Some(d), Some(dirs)) = (dropper, file_dirs) {
            dropped = d.stop().await;
            // Waits while the service makes progress: a slow inbox is measured (each file's
            // wait), a stuck one leaves its files to be reported lost.
            let mut left = dirs.waiting();
            while left > 0 {
                let progressed = poll(Duration::from_secs(30), || {
                    std::future::ready((dirs.waiting() < left).then_some(()))
                })
                .await;
                if progressed.is_none() {
                    eprintln!("  {left} file(s) still in the inbox, none handled for 30 s");
                    break;
                }
                left = dirs.waiting();
            }
        }
        let until_ms = now_ms();
        self.stop_all().await;
        poll(Duration::from_secs(5), || {
            self.tail.update();
            std::future::ready(self.tail.open_runs.is_empty().then_some(()))
        })
        .await;
        // What came after the last look.
        self.tail.update();
        (dropped, until_ms)
    }

    async fn cause(&mut self, kind: FaultKind) -> anyhow::Result<Fault> {
        match kind {
            FaultKind::Kill => self.kill().await,
            FaultKind::Stop => self.stop().await,
            FaultKind::Graceful => self.graceful().await,
            FaultKind::Cut | FaultKind::CutAll | FaultKind::Sever => self.cut(kind).await,
            FaultKind::RestartStore => self.restart_store().await,
            FaultKind::ZkLeader => self.zk_leader().await,
            FaultKind::Drain => self.drain().await,
            FaultKind::Pause => self.pause().await,
            FaultKind::RollingRestart => self.rolling_restart().await,
            FaultKind::Duplicate => self.duplicate().await,
            FaultKind::Slow => self.slow().await,
            FaultKind::Skew => self.skew().await,
            FaultKind::StoreStep => self.store_step().await,
        }
    }

    /// Waits until the cluster is healthy: every node runs and is alive in the store (a
    /// node that exited by itself is recorded and started again), every task (and the file
    /// service) started after `since_ms`, and the command service runs. When, or `None` after
    /// [`RECOVERY`].
    async fn recover(&mut self, since_ms: i64) -> Option<i64> {
        let deadline = tokio::time::Instant::now() + RECOVERY;
        loop {
            self.restart_exited().await;
            self.tail.update();
            if self.healthy(since_ms).await {
                return Some(now_ms());
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Records every node process that exited by itself, and starts the node again.
    async fn restart_exited(&mut self) {
        for id in self.ids.clone() {
            let pid = self.cluster.pid(&id).unwrap_or_default();
            let Some(status) = self.cluster.wait_exit(&id, Duration::ZERO).await else {
                continue;
            };
            self.exits.push(ProcessExit {
                node: id.clone(),
                pid,
                at_ms: now_ms(),
                how: ExitHow::Unexpected(status.to_string()),
            });
            eprintln!("  {id} exited by itself ({status}); starting it again");
            if let Err(e) = self.respawn(&id) {
                eprintln!("  cannot start {id} again: {e}");
            }
        }
    }

    /// Whether every task (and the file service) started after `since_ms`, the command
    /// service runs, and every node is alive in the store and not leaving (by the record as
    /// last read).
    async fn healthy(&self, since_ms: i64) -> bool {
        let started = self.tail.all_started_after(&self.tasks, since_ms)
            && self
                .command_service
                .as_ref()
                .is_none_or(|s| self.tail.running(s));
        if !started {
            return false;
        }
        let Ok(view) = self.run.store.view(self.cluster.cluster()).await else {
            return false;
        };
        self.ids.iter().all(|id| {
            view.nodes
                .iter()
                .any(|n| &n.node == id && n.alive && !n.leaving)
        })
    }

    /// SIGTERM to every node at once, then waits for each.
    async fn stop_all(&mut self) {
        for id in &self.ids {
            self.cluster.signal(id, libc::SIGTERM);
        }
        for id in self.ids.clone() {
            let exit = self.stop_node(&id).await;
            self.exits.push(exit);
        }
    }
}
