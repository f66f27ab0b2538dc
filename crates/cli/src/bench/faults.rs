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

mod check;
mod services;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context};
use clap::Args;
use rand::{rngs::StdRng, Rng, SeedableRng};
use rota::store;
use rota_testkit::{
    clock::{libfaketime, FakeClock},
    poll,
    proxy::CutProxy,
    servers::{free_port, ServerError},
    zookeeper::ZkEnsemble,
    ProcessCluster,
};
use serde::Serialize;

use super::{owners, BenchStore, PrivateServer, StoreArgs};
use check::{ExitHow, Fault, FaultKind, ProcessExit, RecordLine, Report, TaskInfo, UnitLine};

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

/// Every task fires every second (the product's epoch-aligned interval).
const PERIOD_MS: i64 = 1000;
/// How long a short task's work lasts.
const SHORT_WORK: &str = "0.2";
/// How long the long task's work lasts: two instants fall due while it runs.
const LONG_WORK: &str = "2.5";
/// How long a frozen node or a cut stays so: well over the default node timeout (1 s).
const HOLD_MS: std::ops::Range<u64> = 2000..4000;
/// Added latency each way on a slowed link: over the default node timeout (1 s).
const SLOW_MS: std::ops::Range<u64> = 1200..3000;
/// How far a node's wall clock is skewed, either way: up to five minutes.
const SKEW_MS: std::ops::Range<i64> = 1000..300_000;
/// How far the store's clock steps, either way: the documented bound is 2 s.
const STEP_MS: std::ops::Range<i64> = 200..2001;
/// Steady state between faults.
const PAUSE_MS: std::ops::Range<u64> = 300..2000;
/// A cluster that is not healthy this long after a fault did not recover.
const RECOVERY: Duration = Duration::from_secs(60);
/// How long an operator's `rota ctl` may take (a rolling restart of every node included).
const CTL_TIMEOUT: Duration = Duration::from_secs(180);

/// The nodes' admin API, when operator actions are drawn.
struct Admin {
    ports: BTreeMap<String, u16>,
    token: String,
    read_token: String,
}

/// One run of a command task: the START line is written once the END watcher runs in a
/// session of its own, so that an END line is written whenever the work ends, however it
/// ends: it is killed (a cancel kills its process group; its node's death, through
/// `PR_SET_PDEATHSIG`), and the watcher, holding the read end of a FIFO whose only writers
/// are the work's descriptors 3 and 4, sees the FIFO close. A run that ends by itself writes
/// its own END line just before it exits, so a watcher that a busy machine wakes late cannot
/// make a run look longer than it was (the checker takes a run's first END). The work waits
/// in bash itself (`read -t` on the FIFO, which never carries data): one process, which dies
/// with its node. Times come from `EPOCHREALTIME`: no fork between the event and its
/// timestamp. `$1`: record file, `$2`: FIFO directory, `$3`: work seconds.
const RUN_SCRIPT: &str = r#"f="$2/$$-${EPOCHREALTIME/[.,]/}"
mkfifo "$f" || exit 1
id="$ROTA_TASK $ROTA_FIRE_TIME_MS $ROTA_NODE $$ $PPID $ROTA_ATTEMPT $ROTA_FENCING_TOKEN"
setsid bash -c 'read -r _ < "$2"; t=${EPOCHREALTIME/[.,]/}; echo "E $3 $t" >> "$1"; rm -f "$2"' end "$1" "$f" "$id" < /dev/null > /dev/null 2>&1 &
exec 3> "$f"
exec 4<> "$f"
t=${EPOCHREALTIME/[.,]/}
echo "S $id $t" >> "$1"
read -r -t "$3" -u 4 _
t=${EPOCHREALTIME/[.,]/}
echo "E $id $t" >> "$1"
"#;

/// Wall clock, Unix ms: the record's clock.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The `command` array (its inside, TOML) of a run: `bash -c SCRIPT ARG0 RECORD FIFOS WORK`,
/// without `LD_PRELOAD`: on a node whose clock is faked, the record keeps the real clock.
fn command_argv(script: &str, arg0: &str, record: &Path, fifos: &Path, work: &str) -> String {
    [
        "env",
        "-u",
        "LD_PRELOAD",
        "bash",
        "-c",
        script,
        arg0,
        &record.display().to_string(),
        &fifos.display().to_string(),
        work,
    ]
    .map(toml_string)
    .join(", ")
}

/// The `[[task]]` sections: `short-1..n` and `long`, all every second, default policies.
fn workload(short: usize, record: &Path, fifos: &Path) -> (String, Vec<TaskInfo>) {
    let mut toml = String::new();
    let mut tasks = Vec::new();
    let names = (1..=short)
        .map(|i| (format!("short-{i}"), SHORT_WORK))
        .chain([("long".to_string(), LONG_WORK)]);
    for (name, work) in names {
        let argv = command_argv(RUN_SCRIPT, "rota-run", record, fifos, work);
        toml.push_str(&format!(
            "[[task]]\nname = \"{name}\"\nevery = \"1s\"\ncommand = [{argv}]\n\n"
        ));
        tasks.push(TaskInfo {
            name,
            period_ms: PERIOD_MS,
            retry: false,
        });
    }
    (toml, tasks)
}

/// The record file's lines, the last START of each task and service, and the runs still
/// open, read from the record file as it grows.
struct RecordTail {
    path: PathBuf,
    offset: u64,
    partial: String,
    /// The tasks' complete lines so far, in file order.
    lines: Vec<RecordLine>,
    /// The services' complete lines so far, in file order.
    units: Vec<UnitLine>,
    last_start: BTreeMap<String, i64>,
    /// (task or service, instant or key, run pid)
    open_runs: BTreeSet<(String, String, u32)>,
}

impl RecordTail {
    fn new(path: PathBuf) -> Self {
        RecordTail {
            path,
            offset: 0,
            partial: String::new(),
            lines: Vec::new(),
            units: Vec::new(),
            last_start: BTreeMap::new(),
            open_runs: BTreeSet::new(),
        }
    }

    fn update(&mut self) {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return;
        };
        let mut text = String::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err()
            || file.read_to_string(&mut text).is_err()
        {
            return;
        }
        self.offset += text.len() as u64;
        self.partial.push_str(&text);
        let Some(complete) = self.partial.rfind('\n') else {
            return;
        };
        let rest = self.partial.split_off(complete + 1);
        let lines = check::parse_record(&self.partial);
        let units = check::parse_units(&self.partial);
        let tasks = lines.iter().map(|l| {
            let key = (l.task.clone(), l.instant_ms.to_string(), l.pid);
            (l.mark, key, l.at_ms)
        });
        let services = units
            .iter()
            .map(|l| (l.mark, (l.service.clone(), l.key.clone(), l.pid), l.at_ms));
        for (mark, key, at_ms) in tasks.chain(services) {
            match mark {
                check::Mark::Start => {
                    let last = self.last_start.entry(key.0.clone()).or_default();
                    *last = (*last).max(at_ms);
                    self.open_runs.insert(key);
                }
                check::Mark::End => {
                    self.open_runs.remove(&key);
                }
                check::Mark::Done => {}
            }
        }
        self.lines.extend(lines);
        self.units.extend(units);
        self.partial = rest;
    }

    /// Whether every one of `names` (tasks or services) started after `since_ms`.
    fn all_started_after(&self, names: &[String], since_ms: i64) -> bool {
        names
            .iter()
            .all(|t| self.last_start.get(t).is_some_and(|&at| at > since_ms))
    }

    /// Whether a run of `name` is going on.
    fn running(&self, name: &str) -> bool {
        self.open_runs.iter().any(|(n, _, _)| n == name)
    }
}

struct Campaign {
    run: BenchStore,
    cluster: ProcessCluster,
    ids: Vec<String>,
    /// The tasks, and the file service when files are dropped: each starts again after a
    /// fault.
    tasks: Vec<String>,
    /// The command service, when it runs: one of its processes runs after a fault.
    command_service: Option<String>,
    /// The tasks (an operator pauses one of them).
    task_names: Vec<String>,
    admin: Option<Admin>,
    /// This program: `rota ctl`.
    exe: PathBuf,
    /// Each node's proxies to the store's servers (only when cuts or slow links are drawn).
    proxies: BTreeMap<String, Vec<CutProxy>>,
    /// Each node's wall clock (only when skews or, on SQLite, store steps are drawn).
    clocks: BTreeMap<String, FakeClock>,
    tail: RecordTail,
    rng: StdRng,
    faults: Vec<Fault>,
    exits: Vec<ProcessExit>,
}

/// How many servers the ensemble has.
fn zk_servers(zk: &ZkEnsemble) -> usize {
    zk.hosts().split(',').count()
}

/// Ports of the private server(s) the nodes reach, if the campaign started them.
fn server_ports(server: Option<&PrivateServer>) -> Vec<u16> {
    match server {
        Some(PrivateServer::Db(db)) => vec![db.port()],
        Some(PrivateServer::ZooKeeper(zk)) => (0..zk_servers(zk)).map(|i| zk.port(i)).collect(),
        None => Vec::new(),
    }
}

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

/// `url` with every `127.0.0.1:from` replaced by `127.0.0.1:to`.
fn via_proxies(url: &str, ports: &[(u16, u16)]) -> String {
    let mut url = url.to_string();
    for (from, to) in ports {
        for end in ["/", ","] {
            url = url.replace(
                &format!("127.0.0.1:{from}{end}"),
                &format!("127.0.0.1:{to}{end}"),
            );
        }
    }
    url
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

/// Every node's proxies to the store's servers, from the start, so that any node can be cut;
/// each node's store URL goes through its own.
async fn proxies(
    cluster: &mut ProcessCluster,
    run: &BenchStore,
    ids: &[String],
) -> anyhow::Result<BTreeMap<String, Vec<CutProxy>>> {
    let ports = server_ports(run.server.as_ref());
    let mut proxies = BTreeMap::new();
    for id in ids {
        let mut own = Vec::new();
        for &port in &ports {
            own.push(CutProxy::start(port).await?);
        }
        let map: Vec<(u16, u16)> = ports
            .iter()
            .copied()
            .zip(own.iter().map(|p| p.port()))
            .collect();
        cluster
            .store_url_of
            .insert(id.clone(), via_proxies(&run.url, &map));
        proxies.insert(id.clone(), own);
    }
    Ok(proxies)
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
    let proxies = if [FaultKind::Cut, FaultKind::CutAll, FaultKind::Slow]
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
            FaultKind::Cut => self.cut(false).await,
            FaultKind::CutAll => self.cut(true).await,
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

    /// `rota ctl ARGS` through the admin API of node `via`. `Err`: its output, when it did
    /// not succeed.
    async fn ctl(&self, via: &str, args: &[&str]) -> Result<(), String> {
        let Some(admin) = &self.admin else {
            return Err("no admin API".into());
        };
        let url = format!("http://127.0.0.1:{}", admin.ports[via]);
        let run = tokio::process::Command::new(&self.exe)
            .arg("ctl")
            .args(args)
            .args(["--url", &url])
            .env("ROTA_TOKEN", &admin.token)
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(CTL_TIMEOUT, run).await {
            Ok(Ok(out)) if out.status.success() => Ok(()),
            Ok(Ok(out)) => Err(format!(
                "rota ctl {} via {via}: {}: {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Ok(Err(e)) => Err(format!("cannot run rota ctl: {e}")),
            Err(_) => Err(format!(
                "rota ctl {} via {via}: no answer within {CTL_TIMEOUT:?}",
                args.join(" ")
            )),
        }
    }

    /// Any node but `not`.
    fn other_node(&mut self, not: &str) -> String {
        let others: Vec<&String> = self.ids.iter().filter(|n| *n != not).collect();
        others[self.rng.random_range(0..others.len())].clone()
    }

    /// A drain of a node, through another node's API, held for a while, then undone.
    async fn drain(&mut self) -> anyhow::Result<Fault> {
        let (target, owned, how) = self.choose_node().await;
        let via = self.other_node(&target);
        let f = self.fault(
            FaultKind::Drain,
            &target,
            owned,
            format!("{how}; via {via}"),
        );
        Ok(self
            .held_command(f, &via, ["drain", &target], ["undrain", &target])
            .await)
    }

    /// A cluster-wide pause of a task, held for a while, then resumed.
    async fn pause(&mut self) -> anyhow::Result<Fault> {
        let task = self.task_names[self.rng.random_range(0..self.task_names.len())].clone();
        let via = self.any_node();
        let mut f = self.fault(FaultKind::Pause, &task, Vec::new(), format!("via {via}"));
        f.pid = None;
        Ok(self
            .held_command(f, &via, ["pause", &task], ["resume", &task])
            .await)
    }

    /// `rota ctl APPLY` through node `via`, held for a while, then `rota ctl UNDO`: fault `f`
    /// applied then (unless the command failed), ending at the undo.
    async fn held_command(
        &mut self,
        mut f: Fault,
        via: &str,
        apply: [&str; 2],
        undo: [&str; 2],
    ) -> Fault {
        match self.ctl(via, &apply).await {
            Ok(()) => f.applied_ms = Some(now_ms()),
            Err(e) => f.failed = Some(e),
        }
        self.hold().await;
        f.end_ms = now_ms();
        if let Err(e) = self.ctl(via, &undo).await {
            f.failed.get_or_insert(e);
        }
        f
    }

    /// Sleeps for a random time in [`HOLD_MS`]: how long a fault lasts.
    async fn hold(&mut self) {
        let hold = self.rng.random_range(HOLD_MS);
        tokio::time::sleep(Duration::from_millis(hold)).await;
    }

    /// Any node.
    fn any_node(&mut self) -> String {
        self.ids[self.rng.random_range(0..self.ids.len())].clone()
    }

    /// Every node restarted once, one at a time (each re-executes itself: same process id).
    async fn rolling_restart(&mut self) -> anyhow::Result<Fault> {
        let via = self.any_node();
        let mut f = self.fault(
            FaultKind::RollingRestart,
            "all nodes",
            Vec::new(),
            format!("via {via}"),
        );
        if let Err(e) = self.ctl(&via, &["rolling-restart"]).await {
            f.failed = Some(e);
        }
        f.end_ms = now_ms();
        f.applied_ms = Some(f.end_ms);
        Ok(f)
    }

    /// A target node: the owner of a random task, the leader, or any node. Returns it, the
    /// tasks it owns, and how it was chosen.
    async fn choose_node(&mut self) -> (String, Vec<String>, String) {
        let name = self.cluster.cluster().to_string();
        let store = self.run.store.clone();
        let owners = owners(&store, &name).await.unwrap_or_default();
        let leader = store
            .view(&name)
            .await
            .ok()
            .and_then(|v| v.leader)
            .map(|l| l.node);
        let (target, how) = match self.rng.random_range(0..3) {
            0 if !owners.is_empty() => {
                let (task, node) = &owners[self.rng.random_range(0..owners.len())];
                (node.clone(), format!("owner of {task}"))
            }
            1 if leader.as_ref().is_some_and(|l| self.ids.contains(l)) => {
                (leader.clone().unwrap_or_default(), "leader".to_string())
            }
            _ => (self.any_node(), "any node".to_string()),
        };
        let owned = owners
            .into_iter()
            .filter(|(_, n)| *n == target)
            .map(|(t, _)| t)
            .collect();
        let how = if leader.as_deref() == Some(target.as_str()) && how != "leader" {
            format!("{how}, the leader")
        } else {
            how
        };
        (target, owned, how)
    }

    /// A fault on `target` (its current process, if it is a node), starting now.
    fn fault(&self, kind: FaultKind, target: &str, owned: Vec<String>, note: String) -> Fault {
        Fault {
            kind,
            target: target.to_string(),
            pid: self.cluster.pid(target),
            start_ms: now_ms(),
            end_ms: 0,
            recovered_ms: None,
            owned,
            note,
            applied_ms: None,
            failed: None,
            second_pid: None,
        }
    }

    fn respawn(&mut self, node: &str) -> anyhow::Result<()> {
        let config = self.cluster.config_path(node);
        self.cluster.spawn_with_config(node, &config)?;
        Ok(())
    }

    /// SIGKILL; the new process starts at once (its start proves the old one dead: the fast
    /// path), or only once the old one's tasks started elsewhere (detection by timeout).
    async fn kill(&mut self) -> anyhow::Result<Fault> {
        let (target, owned, how) = self.choose_node().await;
        let mut f = self.fault(FaultKind::Kill, &target, owned, how);
        self.cluster.kill(&target);
        f.start_ms = now_ms();
        self.exits.push(ProcessExit {
            node: target.clone(),
            pid: f.pid.unwrap_or_default(),
            at_ms: f.start_ms,
            how: ExitHow::Killed,
        });
        if self.rng.random_bool(0.5) {
            f.note.push_str("; restarted at once");
        } else {
            let moved = poll(RECOVERY, || {
                self.tail.update();
                std::future::ready(
                    self.tail
                        .all_started_after(&f.owned, f.start_ms)
                        .then_some(()),
                )
            })
            .await;
            f.note.push_str(if moved.is_some() {
                "; restarted once its tasks moved"
            } else {
                "; restarted, its tasks never moved"
            });
        }
        self.respawn(&target)?;
        f.end_ms = now_ms();
        Ok(f)
    }

    /// SIGSTOP for longer than the node timeout, then SIGCONT: the zombie.
    async fn stop(&mut self) -> anyhow::Result<Fault> {
        let (target, owned, how) = self.choose_node().await;
        let mut f = self.fault(FaultKind::Stop, &target, owned, how);
        self.cluster.signal(&target, libc::SIGSTOP);
        f.start_ms = now_ms();
        self.hold().await;
        f.end_ms = now_ms();
        self.cluster.signal(&target, libc::SIGCONT);
        Ok(f)
    }

    /// SIGTERM, and a new process once the old one exited.
    async fn graceful(&mut self) -> anyhow::Result<Fault> {
        let (target, owned, how) = self.choose_node().await;
        let mut f = self.fault(FaultKind::Graceful, &target, owned, how);
        let exit = self.stop_node(&target).await;
        if exit.how != ExitHow::Graceful {
            f.note.push_str("; did not stop within 30 s, killed");
        }
        self.exits.push(exit);
        self.respawn(&target)?;
        f.end_ms = now_ms();
        Ok(f)
    }

    /// A second process started with a live node's config: it must be refused at once
    /// (contract 10), start nothing, and leave the live node running.
    async fn duplicate(&mut self) -> anyhow::Result<Fault> {
        // Its tasks are not meant to move: no failover to measure.
        let (target, _owned, how) = self.choose_node().await;
        let mut f = self.fault(FaultKind::Duplicate, &target, Vec::new(), how);
        let log = self.cluster.dir().join(format!("{target}.second.log"));
        let log = std::fs::File::create(&log)?;
        let mut second = tokio::process::Command::new(&self.exe)
            .arg("node")
            .arg("--config")
            .arg(self.cluster.config_path(&target))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        f.second_pid = second.id();
        match tokio::time::timeout(Duration::from_secs(30), second.wait()).await {
            Ok(Ok(status)) if !status.success() => {
                f.note = format!("{}; refused ({status})", f.note);
            }
            Ok(Ok(status)) => {
                f.failed = Some(format!(
                    "the second process exited with {status}, not refused"
                ));
            }
            Ok(Err(e)) => f.failed = Some(format!("cannot wait for the second process: {e}")),
            Err(_) => {
                let _ = second.kill().await;
                f.failed = Some("the second process was not refused within 30 s".into());
            }
        }
        f.end_ms = now_ms();
        Ok(f)
    }

    /// SIGTERM and wait (SIGKILL after 30 s).
    async fn stop_node(&mut self, node: &str) -> ProcessExit {
        let pid = self.cluster.pid(node).unwrap_or_default();
        self.cluster.signal(node, libc::SIGTERM);
        let how = match self.cluster.wait_exit(node, Duration::from_secs(30)).await {
            Some(_) => ExitHow::Graceful,
            None => {
                self.cluster.kill(node);
                ExitHow::Killed
            }
        };
        ProcessExit {
            node: node.to_string(),
            pid,
            at_ms: now_ms(),
            how,
        }
    }

    /// The store cut off from one node (`all`: from every node) for longer than the lease.
    async fn cut(&mut self, all: bool) -> anyhow::Result<Fault> {
        let mut f = if all {
            self.fault(FaultKind::CutAll, "all nodes", Vec::new(), String::new())
        } else {
            let (target, owned, how) = self.choose_node().await;
            self.fault(FaultKind::Cut, &target, owned, how)
        };
        let cut: Vec<&CutProxy> = self
            .proxies
            .iter()
            .filter(|(node, _)| all || **node == f.target)
            .flat_map(|(_, p)| p)
            .collect();
        cut.iter().for_each(|p| p.cut());
        f.start_ms = now_ms();
        let hold = self.rng.random_range(HOLD_MS);
        tokio::time::sleep(Duration::from_millis(hold)).await;
        f.end_ms = now_ms();
        cut.iter().for_each(|p| p.heal());
        Ok(f)
    }

    /// One node's link to the store slowed: every byte both ways late by more than the node
    /// timeout, for a while.
    async fn slow(&mut self) -> anyhow::Result<Fault> {
        let (target, owned, how) = self.choose_node().await;
        let latency = Duration::from_millis(self.rng.random_range(SLOW_MS));
        let mut f = self.fault(
            FaultKind::Slow,
            &target,
            owned,
            format!("{how}; {} ms each way", latency.as_millis()),
        );
        let links = self.proxies.get(&target).context("no proxy")?;
        links.iter().for_each(|p| p.slow(latency));
        f.start_ms = now_ms();
        self.hold().await;
        f.end_ms = now_ms();
        let links = self.proxies.get(&target).context("no proxy")?;
        links.iter().for_each(|p| p.slow(Duration::ZERO));
        Ok(f)
    }

    /// One node's wall clock stepped by up to five minutes either way, for a while, then
    /// back: nothing the node decides may depend on it.
    async fn skew(&mut self) -> anyhow::Result<Fault> {
        // Nothing should move: no failover is measured (a later fault's would be counted).
        let (target, _, how) = self.choose_node().await;
        let offset = self.signed(SKEW_MS);
        let mut f = self.fault(
            FaultKind::Skew,
            &target,
            Vec::new(),
            format!("{how}; {offset:+} ms"),
        );
        let clock = self.clocks.get(&target).context("no clock")?;
        clock.set_offset_ms(offset)?;
        f.start_ms = now_ms();
        self.hold().await;
        f.end_ms = now_ms();
        self.clocks[&target].set_offset_ms(0)?;
        Ok(f)
    }

    /// The store's clock stepped by up to 2 s either way, for a while, then back (two
    /// steps): the private server's, or on SQLite every node's, as the host's clock.
    async fn store_step(&mut self) -> anyhow::Result<Fault> {
        let offset = self.signed(STEP_MS);
        let mut f = self.fault(
            FaultKind::StoreStep,
            "store",
            Vec::new(),
            format!("{offset:+} ms"),
        );
        let clocks: Vec<&FakeClock> = match &self.run.server_clock {
            Some(clock) => vec![clock],
            None => self.clocks.values().collect(),
        };
        anyhow::ensure!(!clocks.is_empty(), "no store clock");
        clocks.iter().try_for_each(|c| c.set_offset_ms(offset))?;
        f.start_ms = now_ms();
        let hold = self.rng.random_range(HOLD_MS);
        tokio::time::sleep(Duration::from_millis(hold)).await;
        f.end_ms = now_ms();
        let clocks: Vec<&FakeClock> = match &self.run.server_clock {
            Some(clock) => vec![clock],
            None => self.clocks.values().collect(),
        };
        clocks.iter().try_for_each(|c| c.set_offset_ms(0))?;
        Ok(f)
    }

    /// A value of `range`, either sign.
    fn signed(&mut self, range: std::ops::Range<i64>) -> i64 {
        let magnitude = self.rng.random_range(range);
        if self.rng.random_bool(0.5) {
            magnitude
        } else {
            -magnitude
        }
    }

    /// The store's server restarted (every server of an ensemble, one after the other).
    async fn restart_store(&mut self) -> anyhow::Result<Fault> {
        let server = self.run.server.take().context("no private server")?;
        let start_ms = now_ms();
        let (server, result) = tokio::task::spawn_blocking(move || {
            let mut server = server;
            let result = match &mut server {
                PrivateServer::Db(db) => db.restart(),
                PrivateServer::ZooKeeper(zk) => (0..zk_servers(zk)).try_for_each(|i| zk.restart(i)),
            };
            (server, result)
        })
        .await?;
        self.run.server = Some(server);
        result.context("restarting the store's server")?;
        let mut f = self.fault(FaultKind::RestartStore, "store", Vec::new(), String::new());
        (f.start_ms, f.end_ms) = (start_ms, now_ms());
        Ok(f)
    }

    /// The ZooKeeper ensemble's leader killed, and restarted after a while.
    async fn zk_leader(&mut self) -> anyhow::Result<Fault> {
        let Some(PrivateServer::ZooKeeper(mut zk)) = self.run.server.take() else {
            bail!("zk-leader needs a ZooKeeper ensemble");
        };
        let hold = self.rng.random_range(1000..3000);
        let start_ms = now_ms();
        let (zk, result) = tokio::task::spawn_blocking(move || {
            let leader = (0..zk_servers(&zk)).find(|&i| zk.mode(i).as_deref() == Some("leader"));
            let result = match leader {
                Some(i) => {
                    zk.kill(i);
                    std::thread::sleep(Duration::from_millis(hold));
                    zk.restart(i).map(|()| i)
                }
                None => Err(ServerError("the ensemble has no leader".into())),
            };
            (zk, result)
        })
        .await?;
        self.run.server = Some(PrivateServer::ZooKeeper(zk));
        let leader = result.context("killing and restarting the ZooKeeper leader")?;
        let target = format!("zk server {}", leader + 1);
        let mut f = self.fault(
            FaultKind::ZkLeader,
            &target,
            Vec::new(),
            format!("down {hold} ms"),
        );
        (f.start_ms, f.end_ms) = (start_ms, now_ms());
        Ok(f)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_go_through_the_proxies() {
        assert_eq!(
            via_proxies("postgres://rota@127.0.0.1:5000/db", &[(5000, 6000)]),
            "postgres://rota@127.0.0.1:6000/db"
        );
        assert_eq!(
            via_proxies(
                "zookeeper://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3/t",
                &[(1, 11), (2, 12), (3, 13)]
            ),
            "zookeeper://127.0.0.1:11,127.0.0.1:12,127.0.0.1:13/t"
        );
    }

    #[test]
    fn the_workload_is_valid_toml_with_default_policies() {
        let (toml, tasks) = workload(2, Path::new("/tmp/r.log"), Path::new("/tmp/f"));
        let value: toml::Table = toml.parse().expect("valid TOML");
        let sections = value["task"].as_array().unwrap();
        assert_eq!(sections.len(), 3);
        assert_eq!(tasks.len(), 3);
        for s in sections {
            let t = s.as_table().unwrap();
            assert!(!t.contains_key("recovery") && !t.contains_key("misfire"));
            // `env -u LD_PRELOAD bash -c SCRIPT ...`: the record keeps the real clock.
            let argv: Vec<&str> = t["command"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            assert_eq!(
                argv[..6],
                ["env", "-u", "LD_PRELOAD", "bash", "-c", RUN_SCRIPT]
            );
        }
    }
}
