//! The fault campaign's history checker. It judges a campaign from three independent sources:
//! the record the tasks' own processes wrote (a START and an END line per run), the store's
//! fire history, and the campaign's log of the faults it caused and of the node processes
//! that ended. It does no I/O, so that unit tests can feed it small hand-made histories.
//!
//! What it can see from outside, and calls a violation (contract items in brackets):
//! - two runs of one task overlapping in time [11, 12];
//! - one instant started twice, unless a later attempt of a task that opted in to `retry` [2, 9];
//! - an instant with neither a START line nor a store record that says why it did not run, or
//!   recorded as started with no START line (the user's job never ran) [3];
//! - a START with a lower fencing token than an earlier START of the same task: work begun by
//!   a node that had already lost the task [2, 4];
//! - a START the store has no matching claim for (node and token) [2];
//! - a START by a node process while it was frozen (SIGSTOP) or after it ended [4, 12];
//! - a run that never ended; a fault after which the cluster did not recover [7]; a node
//!   process that exited by itself [faults every store must survive].

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

use rota::{store::FireRecord, Outcome};
use serde::Serialize;

mod units;
pub use units::{parse_units, FilesInput, ItemRow, Place, UnitLine, UnitsReport};

/// A run's process can be forked just before its node is frozen and write its START line
/// just after: a START this soon after a SIGSTOP is not counted as started while frozen.
pub const SPAWN_SLACK_MS: i64 = 1000;

/// A lost instant due this shortly before a pause of its task is said to be.
/// How long after a duplicate fault's end a start by that second process's pid still counts
/// as the second process's (clocks of the run and of the campaign may differ by a step).
const DUPLICATE_SLACK_MS: i64 = 5_000;
/// A start by an ended process's pid this long after its end is a later process's: an
/// hour-long run wraps the pids around (a dead process's work ends within its lease).
const PID_REUSE_MS: i64 = 60_000;
const PAUSE_NEAR_MS: i64 = 6000;

/// How far around a violation its context reaches.
const CONTEXT_MS: i64 = 2500;
/// At most this many context lines per violation.
const CONTEXT_LINES: usize = 40;

/// Which end of a run a record line marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mark {
    Start,
    End,
    /// The run did its whole work (a file's handler only: see `services::UNIT_SCRIPT`).
    Done,
}

impl Mark {
    /// As a context line shows it.
    fn label(self) -> &'static str {
        match self {
            Mark::Start => "START",
            Mark::End => "END  ",
            Mark::Done => "DONE ",
        }
    }
}

/// The fields of a record line, `MARK a b node pid node_pid attempt token time_us`, whose mark
/// is `start` or `end`; `None` for a partial or foreign line.
fn fields<'l>(line: &'l str, marks: &[(&str, Mark)]) -> Option<(Mark, [&'l str; 8])> {
    let mut p = line.split_whitespace();
    let tag = p.next()?;
    let (_, mark) = marks.iter().find(|(t, _)| *t == tag)?;
    let mark = *mark;
    let fields: Vec<&str> = p.collect();
    Some((mark, fields.try_into().ok()?))
}

/// What the checker reads alike in a task's record line and a service's ([`UnitLine`]).
trait Line {
    fn mark(&self) -> Mark;
    fn node(&self) -> &str;
    /// The run's own process.
    fn pid(&self) -> u32;
    /// The node process that started the run.
    fn node_pid(&self) -> u32;
    fn attempt(&self) -> i64;
    fn token(&self) -> i64;
    fn at_ms(&self) -> i64;
}

macro_rules! impl_line {
    ($($t:ty),*) => {$(
        impl Line for $t {
            fn mark(&self) -> Mark {
                self.mark
            }
            fn node(&self) -> &str {
                &self.node
            }
            fn pid(&self) -> u32 {
                self.pid
            }
            fn node_pid(&self) -> u32 {
                self.node_pid
            }
            fn attempt(&self) -> i64 {
                self.attempt
            }
            fn token(&self) -> i64 {
                self.token
            }
            fn at_ms(&self) -> i64 {
                self.at_ms
            }
        }
    )*};
}
impl_line!(RecordLine, UnitLine);

/// One line of the campaign's record file:
/// `S|E task instant node pid node_pid attempt token time_us`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordLine {
    pub mark: Mark,
    pub task: String,
    pub instant_ms: i64,
    pub node: String,
    /// The run's own process (one per run).
    pub pid: u32,
    /// The node process that started the run.
    pub node_pid: u32,
    pub attempt: i64,
    pub token: i64,
    /// Wall clock, Unix ms.
    pub at_ms: i64,
}

impl RecordLine {
    /// Parses one line; `None` for a partial or foreign line.
    pub fn parse(line: &str) -> Option<RecordLine> {
        let (mark, [task, instant, node, pid, node_pid, attempt, token, at]) =
            fields(line, &[("S", Mark::Start), ("E", Mark::End)])?;
        Some(RecordLine {
            mark,
            task: task.to_string(),
            instant_ms: instant.parse().ok()?,
            node: node.to_string(),
            pid: pid.parse().ok()?,
            node_pid: node_pid.parse().ok()?,
            attempt: attempt.parse().ok()?,
            token: token.parse().ok()?,
            at_ms: at.parse::<i64>().ok()? / 1000,
        })
    }
}

/// Every complete line of a record file, in file order.
pub fn parse_record(text: &str) -> Vec<RecordLine> {
    text.lines().filter_map(RecordLine::parse).collect()
}

/// The faults the campaign knows how to cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL of a node (a task's owner, the leader or any), then a new process.
    Kill,
    /// SIGSTOP of a node for longer than the node timeout, then SIGCONT.
    Stop,
    /// The store cut off from one node (its proxy), for longer than the lease.
    Cut,
    /// The store cut off from every node.
    CutAll,
    /// The store's server restarted.
    RestartStore,
    /// SIGTERM of a node (a graceful stop), then a new process.
    Graceful,
    /// The leader of a ZooKeeper ensemble killed, then restarted.
    ZkLeader,
    /// An operator drains a node (`rota ctl drain`, waiting until it owns nothing), then
    /// undrains it after a while.
    Drain,
    /// An operator pauses a task cluster-wide (`rota ctl pause`), then resumes it.
    Pause,
    /// An operator restarts every node, one at a time (`rota ctl rolling-restart`).
    RollingRestart,
    /// A second process started with a live node's id (and config): it must be refused,
    /// start nothing, and leave the live node running.
    Duplicate,
    /// One node's link to the store slowed (every byte both ways late by more than the
    /// node timeout), then back to normal.
    Slow,
    /// One node's wall clock stepped by up to five minutes either way, then back (not on
    /// SQLite, where every node shares the host's clock, which is store time).
    Skew,
    /// The store's clock stepped by up to two seconds either way, then back: the server's
    /// (PostgreSQL, MariaDB, every ZooKeeper server), or the host's on SQLite.
    StoreStep,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Stop => "stop",
            FaultKind::Cut => "cut",
            FaultKind::CutAll => "cut-all",
            FaultKind::RestartStore => "restart-store",
            FaultKind::Graceful => "graceful",
            FaultKind::ZkLeader => "zk-leader",
            FaultKind::Drain => "drain",
            FaultKind::Pause => "pause",
            FaultKind::RollingRestart => "rolling-restart",
            FaultKind::Duplicate => "duplicate",
            FaultKind::Slow => "slow",
            FaultKind::Skew => "skew",
            FaultKind::StoreStep => "store-step",
        }
    }

    /// Whether an operator causes it, through the admin API.
    pub fn operator(self) -> bool {
        matches!(
            self,
            FaultKind::Drain | FaultKind::Pause | FaultKind::RollingRestart
        )
    }
}

/// One fault as the campaign caused it.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    pub kind: FaultKind,
    /// A node id, or what else was hit (`store`, `all nodes`, a ZooKeeper server).
    pub target: String,
    /// The target node's process, when a node was hit.
    pub pid: Option<u32>,
    /// Wall clock, Unix ms: from the fault's first action to its undoing (a new process, the
    /// SIGCONT, the heal, the server back).
    pub start_ms: i64,
    pub end_ms: i64,
    /// When every node ran again and every task had started after the fault; `None`: not
    /// within the campaign's deadline.
    pub recovered_ms: Option<i64>,
    /// The tasks the target node owned when it was hit.
    pub owned: Vec<String>,
    /// How the target was chosen and anything else worth knowing.
    pub note: String,
    /// An operator's action: when its command was applied by every node (a drain: once the
    /// node owned nothing); the target's work must not start from then until `end_ms` (the
    /// undrain or resume issued).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_ms: Option<i64>,
    /// An operator's action that did not complete: why (`rota ctl`'s output); a second
    /// process that was not refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// A `duplicate` fault's second process: nothing may start in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub second_pid: Option<u32>,
}

/// How a node process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExitHow {
    /// SIGKILL by the campaign.
    Killed,
    /// SIGTERM by the campaign, and it exited.
    Graceful,
    /// Nobody asked it to: the exit status.
    Unexpected(String),
}

/// A node process that ended, and when (wall clock, Unix ms, once it was reaped).
#[derive(Debug, Clone, Serialize)]
pub struct ProcessExit {
    pub node: String,
    pub pid: u32,
    pub at_ms: i64,
    pub how: ExitHow,
}

/// A task of the workload, as the checker needs to know it.
#[derive(Debug, Clone)]
pub struct TaskInfo {
    pub name: String,
    pub period_ms: i64,
    /// Its recovery is `retry`: a later attempt of an instant is allowed.
    pub retry: bool,
}

/// Everything a campaign produced.
pub struct Input<'a> {
    pub record: &'a [RecordLine],
    pub history: &'a [FireRecord],
    pub faults: &'a [Fault],
    pub exits: &'a [ProcessExit],
    pub tasks: &'a [TaskInfo],
    /// Instants after this (wall clock, Unix ms: the final shutdown) are not checked.
    pub until_ms: i64,
    /// Where the campaign began: context lines show times relative to it.
    pub origin_ms: i64,
    /// The services' record lines (see [`units`]).
    pub units: &'a [UnitLine],
    /// The `file_inbound` workload, when there was one.
    pub files: Option<FilesInput<'a>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ViolationKind {
    Overlap,
    DoubleStart,
    Lost,
    StaleToken,
    UnclaimedStart,
    StartWhileFrozen,
    StartAfterExit,
    StartInDuplicate,
    NeverEnded,
    NotRecovered,
    NodeExited,
    FileHandledTwice,
    FileLost,
    FileMisplaced,
    ServiceOverlap,
    StartWhileDrained,
    StartWhilePaused,
    CommandFailed,
}

impl ViolationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ViolationKind::Overlap => "overlap",
            ViolationKind::DoubleStart => "double-start",
            ViolationKind::Lost => "lost",
            ViolationKind::StaleToken => "stale-token",
            ViolationKind::UnclaimedStart => "unclaimed-start",
            ViolationKind::StartWhileFrozen => "start-while-frozen",
            ViolationKind::StartAfterExit => "start-after-exit",
            ViolationKind::StartInDuplicate => "start-in-duplicate",
            ViolationKind::NeverEnded => "never-ended",
            ViolationKind::NotRecovered => "not-recovered",
            ViolationKind::NodeExited => "node-exited",
            ViolationKind::FileHandledTwice => "file-handled-twice",
            ViolationKind::FileLost => "file-lost",
            ViolationKind::FileMisplaced => "file-misplaced",
            ViolationKind::ServiceOverlap => "service-overlap",
            ViolationKind::StartWhileDrained => "start-while-drained",
            ViolationKind::StartWhilePaused => "start-while-paused",
            ViolationKind::CommandFailed => "command-failed",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    pub kind: ViolationKind,
    pub task: Option<String>,
    /// Wall clock, Unix ms.
    pub at_ms: i64,
    pub detail: String,
    /// The record lines, store rows and faults around it.
    pub context: Vec<String>,
}

/// What happened to the instants around one fault.
#[derive(Debug, Clone, Serialize)]
pub struct FaultSummary {
    pub index: usize,
    pub kind: FaultKind,
    pub target: String,
    /// Instants that did not start, by the store's reason (`lost` where it has none).
    pub not_started: BTreeMap<String, usize>,
    /// From the fault until the target's tasks started in another process: the slowest.
    pub resumed_ms: Option<i64>,
}

/// `p50`, `p99` and `max` of a sample, ms.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub n: usize,
    pub p50: i64,
    pub p99: i64,
    pub max: i64,
}

impl Percentiles {
    pub fn of(mut samples: Vec<i64>) -> Option<Percentiles> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
        Some(Percentiles {
            n: samples.len(),
            p50: pick(0.5),
            p99: pick(0.99),
            max: samples[samples.len() - 1],
        })
    }

    /// Each sample's percentiles, by key (an empty sample has none).
    pub fn by_key(samples: BTreeMap<String, Vec<i64>>) -> BTreeMap<String, Percentiles> {
        samples
            .into_iter()
            .filter_map(|(k, v)| Some((k, Percentiles::of(v)?)))
            .collect()
    }
}

impl fmt::Display for Percentiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {} ms, p99 {} ms, max {} ms (n = {})",
            self.p50, self.p99, self.max, self.n
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub faults_by_kind: BTreeMap<String, usize>,
    /// Instants checked (each task's first to last, up to the shutdown).
    pub instants: usize,
    /// Distinct instants started (from START lines).
    pub fires: usize,
    /// START lines.
    pub starts: usize,
    /// Instants that did not start, by the store's reason (`lost` where it has none).
    pub not_started: BTreeMap<String, usize>,
    pub per_fault: Vec<FaultSummary>,
    /// From a fault on an owner until each of its tasks started in another process, by kind.
    pub failover_ms: BTreeMap<String, Percentiles>,
    /// For every run with an END line and a store record of the same attempt with a
    /// `finished_at`: that time minus the END line's, the window between the end of the work
    /// and its durable outcome (wall clock and store time are one clock here: every server
    /// runs on this machine).
    pub outcome_lag_ms: Option<Percentiles>,
    /// The same, by the outcome recorded (`abandoned`: recorded by the node that took over).
    pub outcome_lag_by_outcome: BTreeMap<String, Percentiles>,
    #[serde(flatten)]
    pub units: UnitsReport,
    pub violations: Vec<Violation>,
}

/// One run of a task (or of a service's work: [`UnitLine`]), from its START line to its end.
#[derive(Debug, Clone)]
struct Run<'a, L = RecordLine> {
    start: &'a L,
    end_ms: i64,
    /// How its end is known.
    end: RunEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunEnd {
    /// Its END line.
    Line,
    /// No END line: its node process ended then (the run died with it).
    NodeExit,
    /// Neither: open until the end of the campaign.
    Never,
}

impl RunEnd {
    /// As a violation's detail says it, before the end's time.
    fn how(self) -> &'static str {
        match self {
            RunEnd::Line => "ended",
            RunEnd::NodeExit => "ended with its node process",
            RunEnd::Never => "never ended; open until",
        }
    }
}

/// Checks a campaign; see the module's doc for what counts as a violation.
pub fn check(input: &Input) -> Report {
    let mut c = Checker {
        input,
        rows: input
            .history
            .iter()
            .map(|f| ((f.task.as_str(), f.instant_ms), f))
            .collect(),
        violations: Vec::new(),
    };
    let runs = c.runs();
    let (outcome_lag_ms, outcome_lag_by_outcome) = c.outcome_lags(&runs);
    c.overlaps(&runs);
    c.double_starts();
    c.stale_tokens();
    c.unclaimed_starts();
    c.starts_of_dead_or_frozen_nodes();
    let units = c.units();
    let started: BTreeSet<(&str, i64)> = starts(input.record)
        .map(|l| (l.task.as_str(), l.instant_ms))
        .collect();
    let (instants, not_started, per_fault_not_started) = c.lost_instants(&started);
    c.unrecovered_faults_and_exits();

    let mut failover: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut per_fault = Vec::new();
    let mut faults_by_kind = BTreeMap::new();
    for (i, f) in input.faults.iter().enumerate() {
        let samples = resumed(input.record, f);
        failover
            .entry(f.kind.as_str().to_string())
            .or_default()
            .extend(&samples);
        *faults_by_kind
            .entry(f.kind.as_str().to_string())
            .or_default() += 1;
        per_fault.push(FaultSummary {
            index: i,
            kind: f.kind,
            target: f.target.clone(),
            not_started: per_fault_not_started.get(&i).cloned().unwrap_or_default(),
            resumed_ms: samples.iter().copied().max(),
        });
    }
    let mut violations = c.violations;
    violations.sort_by_key(|v| (v.at_ms, v.kind));
    Report {
        faults_by_kind,
        instants,
        fires: started.len(),
        starts: starts(input.record).count(),
        not_started,
        per_fault,
        failover_ms: Percentiles::by_key(failover),
        outcome_lag_ms,
        outcome_lag_by_outcome,
        units,
        violations,
    }
}

fn starts<L: Line>(lines: &[L]) -> impl Iterator<Item = &L> {
    lines.iter().filter(|l| l.mark() == Mark::Start)
}

/// `items` by `key`, each group in the order given.
fn group<'i, T, K: Ord>(
    items: impl IntoIterator<Item = &'i T>,
    key: impl Fn(&'i T) -> K,
) -> BTreeMap<K, Vec<&'i T>> {
    let mut groups: BTreeMap<K, Vec<&T>> = BTreeMap::new();
    for i in items {
        groups.entry(key(i)).or_default().push(i);
    }
    groups
}

/// From `since_ms` until the first of `starts` by a node process other than `pid`.
fn first_start_elsewhere<'l, L: Line + 'l>(
    starts: impl Iterator<Item = &'l L>,
    pid: u32,
    since_ms: i64,
) -> Option<i64> {
    starts
        .filter(|l| l.node_pid() != pid && l.at_ms() > since_ms)
        .map(|l| l.at_ms() - since_ms)
        .min()
}

/// From fault `f` on a node that owned tasks until each of them started in another process.
fn resumed(record: &[RecordLine], f: &Fault) -> Vec<i64> {
    let Some(pid) = f.pid else {
        return Vec::new();
    };
    f.owned
        .iter()
        .filter_map(|task| {
            first_start_elsewhere(starts(record).filter(|l| &l.task == task), pid, f.start_ms)
        })
        .collect()
}

/// The runs of one task (or service) that started before an earlier one ended, with the
/// earlier one reaching furthest; `slack(earlier, later)` ms are allowed between two runs.
fn overlapping<'r, 'a, L: Line>(
    mut runs: Vec<&'r Run<'a, L>>,
    slack: impl Fn(&Run<L>, &Run<L>) -> i64,
) -> Vec<(&'r Run<'a, L>, &'r Run<'a, L>)> {
    runs.sort_by_key(|r| (r.start.at_ms(), r.start.pid()));
    let mut out = Vec::new();
    // The run reaching furthest so far: any later start before its end overlaps it.
    let mut reach: Option<&Run<L>> = None;
    for r in runs {
        if let Some(p) = reach {
            if r.start.at_ms() + slack(p, r) < p.end_ms {
                out.push((p, r));
            }
        }
        if reach.is_none_or(|p| r.end_ms > p.end_ms) {
            reach = Some(r);
        }
    }
    out
}

/// The STARTs of one task (or service) with a lower token than an earlier START: each with
/// the first START of the highest token before it.
fn stale<L: Line>(mut starts: Vec<&L>) -> Vec<(&L, &L)> {
    starts.sort_by_key(|l| l.at_ms());
    let mut out = Vec::new();
    let mut highest: Option<&L> = None;
    for l in starts {
        match highest {
            Some(h) if l.token() < h.token() => out.push((h, l)),
            Some(h) if l.token() <= h.token() => {}
            _ => highest = Some(l),
        }
    }
    out
}

struct Checker<'a> {
    input: &'a Input<'a>,
    /// The store's record of each fire.
    rows: BTreeMap<(&'a str, i64), &'a FireRecord>,
    violations: Vec<Violation>,
}

impl<'a> Checker<'a> {
    fn violation(&mut self, kind: ViolationKind, task: Option<&str>, at_ms: i64, detail: String) {
        self.violation_since(kind, task, at_ms, at_ms, detail);
    }

    /// A violation at `at_ms` that began at `since_ms` (the first of two starts, the run
    /// overlapped): its context covers both.
    fn violation_since(
        &mut self,
        kind: ViolationKind,
        task: Option<&str>,
        since_ms: i64,
        at_ms: i64,
        detail: String,
    ) {
        let context = self.context(task, since_ms.min(at_ms), at_ms);
        self.violations.push(Violation {
            kind,
            task: task.map(str::to_string),
            at_ms,
            detail,
            context,
        });
    }

    fn rel(&self, ms: i64) -> String {
        format!("{:+.3}s", (ms - self.input.origin_ms) as f64 / 1000.0)
    }

    /// A task's run: `task@instant`.
    fn fire(&self, l: &RecordLine) -> String {
        format!("{}@{}", l.task, self.rel(l.instant_ms))
    }

    /// A record line (of a task, or of a service: `what` says which run) as context.
    fn line_text(&self, l: &impl Line, what: &str) -> String {
        format!(
            "{} {} {what} on {} (pid {}), run pid {}, attempt {}, token {}",
            self.rel(l.at_ms()),
            l.mark().label(),
            l.node(),
            l.node_pid(),
            l.pid(),
            l.attempt(),
            l.token()
        )
    }

    fn row(&self, f: &FireRecord) -> String {
        format!(
            "store: {}@{} {} by {} token {} attempt {}, started {}, finished {}{}",
            f.task,
            self.rel(f.instant_ms),
            f.outcome.as_str(),
            f.node,
            f.token,
            f.attempt,
            f.started_at_ms.map_or("-".into(), |t| self.rel(t)),
            f.finished_at_ms.map_or("-".into(), |t| self.rel(t)),
            f.message
                .as_deref()
                .map_or(String::new(), |m| format!(" ({m})"))
        )
    }

    /// The record lines and store rows of `task` (all tasks if `None`), and the faults and
    /// process exits, from [`CONTEXT_MS`] before `from_ms` to as long after `at_ms`, in time
    /// order.
    fn context(&self, task: Option<&str>, from_ms: i64, at_ms: i64) -> Vec<String> {
        let near = |t: i64| t >= from_ms - CONTEXT_MS && t <= at_ms + CONTEXT_MS;
        let of_task = |t: &str| task.is_none_or(|x| x == t);
        let mut out: Vec<(i64, String)> = Vec::new();
        for l in self.input.record {
            if of_task(&l.task) && near(l.at_ms) {
                out.push((l.at_ms, self.line_text(l, &self.fire(l))));
            }
        }
        for l in self.input.units {
            if (of_task(&l.service) || of_task(&l.key)) && near(l.at_ms) {
                out.push((l.at_ms, self.line_text(l, &l.label())));
            }
        }
        for f in self.input.history {
            if of_task(&f.task) && near(f.instant_ms) {
                out.push((f.instant_ms, self.row(f)));
            }
        }
        for (i, f) in self.input.faults.iter().enumerate() {
            if f.start_ms <= at_ms + CONTEXT_MS
                && f.recovered_ms.unwrap_or(i64::MAX) >= from_ms - CONTEXT_MS
            {
                out.push((
                    f.start_ms,
                    format!(
                        "{} fault {i}: {} {} (pid {}) until {}, recovered {}{}",
                        self.rel(f.start_ms),
                        f.kind.as_str(),
                        f.target,
                        f.pid.map_or("-".into(), |p| p.to_string()),
                        self.rel(f.end_ms),
                        f.recovered_ms.map_or("never".into(), |t| self.rel(t)),
                        if f.note.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", f.note)
                        }
                    ),
                ));
            }
        }
        for e in self.input.exits {
            if near(e.at_ms) {
                out.push((
                    e.at_ms,
                    format!(
                        "{} exit: {} (pid {}) {:?}",
                        self.rel(e.at_ms),
                        e.node,
                        e.pid,
                        e.how
                    ),
                ));
            }
        }
        out.sort_by_key(|(t, _)| *t);
        out.truncate(CONTEXT_LINES);
        out.into_iter().map(|(_, s)| s).collect()
    }

    /// Every START of `lines` with its end: the first END line of the same `run` at or after
    /// it (a long campaign reuses pids), else its node process's exit, else open until the
    /// end of the campaign: a violation, of the task `never_ended` gives, with what it says
    /// of the run.
    fn runs_of<L: Line, K: Ord>(
        &mut self,
        lines: &'a [L],
        run: impl Fn(&'a L) -> K,
        never_ended: impl Fn(&'a L) -> (&'a str, String),
    ) -> Vec<Run<'a, L>> {
        let input = self.input;
        let mut ends: BTreeMap<K, Vec<i64>> = BTreeMap::new();
        for l in lines.iter().filter(|l| l.mark() == Mark::End) {
            ends.entry(run(l)).or_default().push(l.at_ms());
        }
        for times in ends.values_mut() {
            times.sort_unstable();
        }
        let end_of = |s: &'a L| {
            let times = ends.get(&run(s))?;
            times
                .get(times.partition_point(|&t| t < s.at_ms()))
                .copied()
        };
        let mut runs = Vec::new();
        for s in starts(lines) {
            let exit = input
                .exits
                .iter()
                .find(|e| e.pid == s.node_pid() && e.at_ms >= s.at_ms());
            let (end_ms, end) = match (end_of(s), exit) {
                (Some(t), _) => (t, RunEnd::Line),
                (None, Some(e)) => (e.at_ms, RunEnd::NodeExit),
                (None, None) => (input.until_ms.max(s.at_ms()), RunEnd::Never),
            };
            if end == RunEnd::Never {
                let (task, what) = never_ended(s);
                self.violation(
                    ViolationKind::NeverEnded,
                    Some(task),
                    s.at_ms(),
                    format!(
                        "{what} started on {} (pid {}) never ended: no END line, and its node process did not end",
                        s.node(),
                        s.node_pid()
                    ),
                );
            }
            runs.push(Run {
                start: s,
                end_ms,
                end,
            });
        }
        runs
    }

    /// Every task's run.
    fn runs(&mut self) -> Vec<Run<'a>> {
        self.runs_of(
            self.input.record,
            |l| (l.task.as_str(), l.instant_ms, l.pid),
            |s| (s.task.as_str(), format!("{}@{}", s.task, s.instant_ms)),
        )
    }

    /// The outcome lag of every run that ended by its END line and whose attempt the store
    /// records as finished: overall and by outcome.
    fn outcome_lags(&self, runs: &[Run]) -> (Option<Percentiles>, BTreeMap<String, Percentiles>) {
        let mut all = Vec::new();
        let mut by: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for r in runs.iter().filter(|r| r.end == RunEnd::Line) {
            let Some(f) = self.rows.get(&(r.start.task.as_str(), r.start.instant_ms)) else {
                continue;
            };
            let Some(finished) = f.finished_at_ms.filter(|_| f.attempt == r.start.attempt) else {
                continue;
            };
            all.push(finished - r.end_ms);
            by.entry(f.outcome.as_str().to_string())
                .or_default()
                .push(finished - r.end_ms);
        }
        (Percentiles::of(all), Percentiles::by_key(by))
    }

    fn overlaps(&mut self, runs: &[Run<'a>]) {
        for (task, runs) in group(runs, |r| r.start.task.as_str()) {
            // One node process starts a task's next run once the previous one ended (a
            // queued instant), and an END line can come a little after the work ended (its
            // watcher must wake up first).
            let slack = |p: &Run, r: &Run| {
                if p.start.node_pid == r.start.node_pid && p.end == RunEnd::Line {
                    units::END_LAG_MS
                } else {
                    0
                }
            };
            for (p, r) in overlapping(runs, slack) {
                self.violation_since(
                    ViolationKind::Overlap,
                    Some(task),
                    p.start.at_ms,
                    r.start.at_ms,
                    format!(
                        "{task}: run of {} on {} (pid {}, started {}, {} {}) overlaps run of {} on {} (pid {}) started {} ({} ms)",
                        self.rel(p.start.instant_ms),
                        p.start.node,
                        p.start.node_pid,
                        self.rel(p.start.at_ms),
                        p.end.how(),
                        self.rel(p.end_ms),
                        self.rel(r.start.instant_ms),
                        r.start.node,
                        r.start.node_pid,
                        self.rel(r.start.at_ms),
                        p.end_ms.min(r.end_ms) - r.start.at_ms
                    ),
                );
            }
        }
    }

    fn retry(&self, task: &str) -> bool {
        self.input.tasks.iter().any(|t| t.name == task && t.retry)
    }

    fn double_starts(&mut self) {
        let by_fire = group(starts(self.input.record), |s| {
            (s.task.as_str(), s.instant_ms)
        });
        for ((task, instant), lines) in by_fire {
            if lines.len() < 2 {
                continue;
            }
            let attempts: BTreeSet<i64> = lines.iter().map(|l| l.attempt).collect();
            // With `retry`, each attempt may start once; else the first start is the only one.
            if self.retry(task) && attempts.len() == lines.len() {
                continue;
            }
            let who: Vec<String> = lines
                .iter()
                .map(|l| {
                    format!(
                        "{} (pid {}, attempt {}, token {}) at {}",
                        l.node,
                        l.node_pid,
                        l.attempt,
                        l.token,
                        self.rel(l.at_ms)
                    )
                })
                .collect();
            self.violation_since(
                ViolationKind::DoubleStart,
                Some(task),
                lines[0].at_ms,
                lines[1].at_ms,
                format!(
                    "{task}@{} started {} times: {}",
                    self.rel(instant),
                    lines.len(),
                    who.join("; ")
                ),
            );
        }
    }

    fn stale_tokens(&mut self) {
        for (task, lines) in group(starts(self.input.record), |s| s.task.as_str()) {
            for (h, l) in stale(lines) {
                let detail = format!(
                    "{task}@{} started on {} (pid {}) with token {} at {}, after {} (pid {}) started {}@{} with token {} at {}",
                    self.rel(l.instant_ms),
                    l.node,
                    l.node_pid,
                    l.token,
                    self.rel(l.at_ms),
                    h.node,
                    h.node_pid,
                    task,
                    self.rel(h.instant_ms),
                    h.token,
                    self.rel(h.at_ms)
                );
                self.violation_since(
                    ViolationKind::StaleToken,
                    Some(task),
                    h.at_ms,
                    l.at_ms,
                    detail,
                );
            }
        }
    }

    fn unclaimed_starts(&mut self) {
        for s in starts(self.input.record) {
            let detail = match self.rows.get(&(s.task.as_str(), s.instant_ms)) {
                None => "the store has no record of this fire".to_string(),
                // A later attempt's claim replaces the row: only the same attempt must match.
                Some(f) if f.attempt == s.attempt && (f.node != s.node || f.token != s.token) => {
                    format!("the store's claim is by {} with token {}", f.node, f.token)
                }
                Some(_) => continue,
            };
            self.violation(
                ViolationKind::UnclaimedStart,
                Some(&s.task),
                s.at_ms,
                format!(
                    "{}@{} started on {} (pid {}) with token {}: {detail}",
                    s.task,
                    self.rel(s.instant_ms),
                    s.node,
                    s.node_pid,
                    s.token
                ),
            );
        }
    }

    /// Every START, of a task's run or a service's, against what the campaign did to its node
    /// process (frozen, drained, its task paused, ended).
    fn starts_of_dead_or_frozen_nodes(&mut self) {
        let input = self.input;
        let all = starts(input.record)
            .map(|s| Started {
                what: self.fire(s),
                task: &s.task,
                node: &s.node,
                node_pid: s.node_pid,
                at_ms: s.at_ms,
            })
            .chain(starts(input.units).map(|l| Started {
                what: l.label(),
                task: &l.key,
                node: &l.node,
                node_pid: l.node_pid,
                at_ms: l.at_ms,
            }))
            .collect::<Vec<_>>();
        for s in &all {
            self.start_while_frozen(s);
            self.start_while_held(s);
            self.start_after_exit(s);
            self.start_in_duplicate(s);
        }
    }

    fn start_in_duplicate(&mut self, s: &Started) {
        // Only while that second process lived (it is gone at the fault's end; the slack
        // covers a stepped clock): an hour-long run wraps the pids around, and a later node
        // may be given the same pid.
        let second = self.input.faults.iter().find(|f| {
            f.second_pid == Some(s.node_pid)
                && (f.start_ms..=f.end_ms + DUPLICATE_SLACK_MS).contains(&s.at_ms)
        });
        if let Some(f) = second {
            self.violation(
                ViolationKind::StartInDuplicate,
                Some(s.task),
                s.at_ms,
                format!(
                    "{} started at {} in a second process (pid {}) with the id of live node {}, which should have been refused",
                    s.what,
                    self.rel(s.at_ms),
                    s.node_pid,
                    f.target
                ),
            );
        }
    }

    fn start_while_frozen(&mut self, s: &Started) {
        let frozen = self.input.faults.iter().find(|f| {
            f.kind == FaultKind::Stop
                && f.pid == Some(s.node_pid)
                && s.at_ms > f.start_ms + SPAWN_SLACK_MS
                && s.at_ms < f.end_ms
        });
        if let Some(f) = frozen {
            self.violation(
                ViolationKind::StartWhileFrozen,
                Some(s.task),
                s.at_ms,
                format!(
                    "{} started on {} (pid {}) at {}, while it was stopped from {} to {}",
                    s.what,
                    s.node,
                    s.node_pid,
                    self.rel(s.at_ms),
                    self.rel(f.start_ms),
                    self.rel(f.end_ms)
                ),
            );
        }
    }

    /// A START on a drained node, or of a paused task.
    fn start_while_held(&mut self, s: &Started) {
        // Work already on its way when the command was applied may still write its START.
        let held = self.input.faults.iter().find(|f| {
            let on = match f.kind {
                FaultKind::Drain => f.target == s.node,
                FaultKind::Pause => f.target == s.task,
                _ => false,
            };
            on && f
                .applied_ms
                .is_some_and(|t| s.at_ms > t + SPAWN_SLACK_MS && s.at_ms < f.end_ms)
        });
        if let Some(f) = held {
            let (kind, how) = if f.kind == FaultKind::Drain {
                (ViolationKind::StartWhileDrained, "drained")
            } else {
                (ViolationKind::StartWhilePaused, "paused")
            };
            self.violation(
                kind,
                Some(s.task),
                s.at_ms,
                format!(
                    "{} started on {} (pid {}) at {}, while {} was {how} (applied {}, until {})",
                    s.what,
                    s.node,
                    s.node_pid,
                    self.rel(s.at_ms),
                    f.target,
                    self.rel(f.applied_ms.unwrap_or_default()),
                    self.rel(f.end_ms)
                ),
            );
        }
    }

    fn start_after_exit(&mut self, s: &Started) {
        let dead = self.input.exits.iter().find(|e| {
            e.pid == s.node_pid && s.at_ms > e.at_ms && s.at_ms <= e.at_ms + PID_REUSE_MS
        });
        if let Some(e) = dead {
            self.violation(
                ViolationKind::StartAfterExit,
                Some(s.task),
                s.at_ms,
                format!(
                    "{} started on {} (pid {}) at {}, after that process ended ({:?}) at {}",
                    s.what,
                    s.node,
                    s.node_pid,
                    self.rel(s.at_ms),
                    e.how,
                    self.rel(e.at_ms)
                ),
            );
        }
    }

    /// Every instant of every task from its first to its last seen (up to `until_ms`) either
    /// has a START line (it is in `started`), or a store record of why not. Returns the number
    /// of instants checked, and the ones not started by reason, overall and per fault.
    #[allow(clippy::type_complexity)]
    fn lost_instants(
        &mut self,
        started: &BTreeSet<(&str, i64)>,
    ) -> (
        usize,
        BTreeMap<String, usize>,
        BTreeMap<usize, BTreeMap<String, usize>>,
    ) {
        let input = self.input;
        let (mut checked, mut overall, mut per_fault) = (0, BTreeMap::new(), BTreeMap::new());
        for task in input.tasks {
            let seen: Vec<i64> = started
                .iter()
                .chain(self.rows.keys())
                .filter(|&&(t, instant)| t == task.name && instant <= input.until_ms)
                .map(|&(_, instant)| instant)
                .collect();
            let (Some(&first), Some(&last)) = (seen.iter().min(), seen.iter().max()) else {
                continue;
            };
            for t in (first..=last).step_by(task.period_ms as usize) {
                checked += 1;
                let Some((reason, why)) = self.not_started(task, t, started) else {
                    continue;
                };
                *overall.entry(reason.to_string()).or_default() += 1;
                if let Some(i) = fault_around(input.faults, t, task.period_ms) {
                    *per_fault
                        .entry(i)
                        .or_insert_with(BTreeMap::new)
                        .entry(reason.to_string())
                        .or_default() += 1;
                }
                if reason == "lost" {
                    self.lost(task, t, why);
                }
            }
        }
        (checked, overall, per_fault)
    }

    /// Why instant `t` of `task` did not start, and (when lost) what shows it; `None` if it
    /// started.
    fn not_started(
        &self,
        task: &TaskInfo,
        t: i64,
        started: &BTreeSet<(&str, i64)>,
    ) -> Option<(&'static str, &'static str)> {
        let key = (task.name.as_str(), t);
        if started.contains(&key) {
            return None;
        }
        let paused = self.input.faults.iter().any(|f| {
            f.kind == FaultKind::Pause
                && f.target == task.name
                && t >= f.start_ms
                && t <= f.end_ms + task.period_ms
        });
        Some(match self.rows.get(&key) {
            None if paused => ("paused", ""),
            None => ("lost", "no START line and no store record"),
            // Begun as every node stopped at the end: its node stopped before starting the
            // work, and the next owner, which would record it abandoned, never came.
            Some(f)
                if f.outcome == Outcome::Running
                    && t + 2 * task.period_ms > self.input.until_ms =>
            {
                ("running-at-the-end", "")
            }
            Some(f) => match f.outcome {
                Outcome::Ok | Outcome::Running => (
                    "lost",
                    "the store recorded it started, but no START line: the job never ran",
                ),
                o => (o.as_str(), ""),
            },
        })
    }

    /// Instant `t` of `task` lost: `why`.
    fn lost(&mut self, task: &TaskInfo, t: i64, why: &str) {
        let faults = self.input.faults;
        // A pause soon after: the instant was still waiting when it came.
        let pause = faults.iter().position(|f| {
            f.kind == FaultKind::Pause
                && f.target == task.name
                && f.start_ms > t
                && f.start_ms - t <= PAUSE_NEAR_MS
        });
        let near = pause.map_or(String::new(), |i| {
            format!(
                " (due {} ms before fault {i} paused {})",
                faults[i].start_ms - t,
                task.name
            )
        });
        let detail = format!("{}@{} lost: {why}{near}", task.name, self.rel(t));
        self.violation(ViolationKind::Lost, Some(&task.name), t, detail);
    }

    /// Faults the cluster did not recover from, operators' commands that did not complete,
    /// and node processes that exited by themselves.
    fn unrecovered_faults_and_exits(&mut self) {
        let input = self.input;
        for (i, f) in input.faults.iter().enumerate() {
            if f.recovered_ms.is_none() {
                self.violation(
                    ViolationKind::NotRecovered,
                    None,
                    f.end_ms,
                    format!(
                        "fault {i} ({} {}): the cluster did not recover",
                        f.kind.as_str(),
                        f.target
                    ),
                );
            }
        }
        for (i, f) in input.faults.iter().enumerate() {
            if let Some(why) = &f.failed {
                self.violation(
                    ViolationKind::CommandFailed,
                    None,
                    f.end_ms,
                    format!(
                        "fault {i} ({} {}): did not complete: {why}",
                        f.kind.as_str(),
                        f.target
                    ),
                );
            }
        }
        for e in input.exits {
            if let ExitHow::Unexpected(status) = &e.how {
                self.violation(
                    ViolationKind::NodeExited,
                    None,
                    e.at_ms,
                    format!("{} (pid {}) exited by itself: {status}", e.node, e.pid),
                );
            }
        }
    }
}

/// A START line, of a task's run or of a service's, as the checks of its node process see it.
struct Started<'l> {
    /// The run: `task@instant`, or `service key`.
    what: String,
    /// Its task, or the service's key.
    task: &'l str,
    node: &'l str,
    node_pid: u32,
    at_ms: i64,
}

/// The last fault whose window (a period before it, to its recovery and a period after)
/// holds instant `t`.
fn fault_around(faults: &[Fault], t: i64, period_ms: i64) -> Option<usize> {
    faults.iter().rposition(|f| {
        let end = f.recovered_ms.unwrap_or(f.end_ms).max(f.end_ms);
        t >= f.start_ms - period_ms && t <= end + period_ms
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_000_000;

    /// A START line of `task@instant` by run `pid` of node process `node_pid`.
    fn start(
        task: &str,
        instant: i64,
        node: &str,
        pid: u32,
        node_pid: u32,
        token: i64,
        at: i64,
    ) -> RecordLine {
        RecordLine {
            mark: Mark::Start,
            task: task.into(),
            instant_ms: T0 + instant,
            node: node.into(),
            pid,
            node_pid,
            attempt: 1,
            token,
            at_ms: T0 + at,
        }
    }

    /// A run: START and END lines of `task@instant` on `node` (process `node_pid`).
    fn run(
        task: &str,
        instant: i64,
        node: &str,
        node_pid: u32,
        token: i64,
        from: i64,
        to: i64,
    ) -> Vec<RecordLine> {
        let pid = (instant + from) as u32 + node_pid;
        let start = start(task, instant, node, pid, node_pid, token, from);
        let end = RecordLine {
            mark: Mark::End,
            at_ms: T0 + to,
            ..start.clone()
        };
        vec![start, end]
    }

    fn row(task: &str, instant: i64, node: &str, token: i64, outcome: Outcome) -> FireRecord {
        FireRecord {
            task: task.into(),
            instant_ms: T0 + instant,
            node: node.into(),
            token,
            attempt: 1,
            outcome,
            started_at_ms: None,
            finished_at_ms: None,
            message: None,
        }
    }

    /// The store rows matching every START of `record` (outcome ok).
    fn claims(record: &[RecordLine]) -> Vec<FireRecord> {
        record
            .iter()
            .filter(|l| l.mark == Mark::Start)
            .map(|l| FireRecord {
                instant_ms: l.instant_ms,
                ..row(&l.task, 0, &l.node, l.token, Outcome::Ok)
            })
            .collect()
    }

    fn tasks() -> Vec<TaskInfo> {
        vec![TaskInfo {
            name: "a".into(),
            period_ms: 1000,
            retry: false,
        }]
    }

    fn kinds(report: &Report) -> Vec<ViolationKind> {
        report.violations.iter().map(|v| v.kind).collect()
    }

    fn check_with(
        record: &[RecordLine],
        history: &[FireRecord],
        faults: &[Fault],
        exits: &[ProcessExit],
    ) -> Report {
        let tasks = tasks();
        check(&Input {
            record,
            history,
            faults,
            exits,
            tasks: &tasks,
            until_ms: T0 + 100_000,
            origin_ms: T0,
            units: &[],
            files: None,
        })
    }

    /// Node process `pid` of `node` ended at `at`.
    pub(super) fn exit(node: &str, pid: u32, at: i64, how: ExitHow) -> ProcessExit {
        ProcessExit {
            node: node.into(),
            pid,
            at_ms: T0 + at,
            how,
        }
    }

    pub(super) fn fault(kind: FaultKind, pid: u32, start: i64, end: i64) -> Fault {
        Fault {
            kind,
            target: "n1".into(),
            pid: Some(pid),
            start_ms: T0 + start,
            end_ms: T0 + end,
            recovered_ms: Some(T0 + end + 500),
            owned: vec!["a".into()],
            note: String::new(),
            applied_ms: None,
            failed: None,
            second_pid: None,
        }
    }

    #[test]
    fn parses_record_lines_and_skips_partial_ones() {
        let text =
            "S a 1000 n1 42 7 1 3 1000123456\nE a 1000 n1 42 7 1 3 1000223456\nS a 2000 n1 4";
        let lines = parse_record(text);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].mark, Mark::Start);
        assert_eq!(
            (lines[0].pid, lines[0].node_pid, lines[0].token),
            (42, 7, 3)
        );
        assert_eq!(lines[0].at_ms, 1_000_123);
        assert_eq!(lines[1].at_ms, 1_000_223);
    }

    #[test]
    fn a_clean_history_has_no_violation() {
        let mut record = run("a", 0, "n1", 7, 1, 5, 200);
        record.extend(run("a", 1000, "n1", 7, 1, 1005, 1200));
        record.extend(run("a", 2000, "n2", 8, 2, 2010, 2200));
        let history = claims(&record);
        let report = check_with(&record, &history, &[], &[]);
        assert!(report.violations.is_empty(), "{:#?}", report.violations);
        assert_eq!((report.instants, report.fires, report.starts), (3, 3, 3));
    }

    #[test]
    fn the_outcome_lag_is_the_store_finish_after_the_end_line() {
        let mut record = run("a", 0, "n1", 7, 1, 5, 200);
        record.extend(run("a", 1000, "n1", 7, 1, 1005, 1200));
        record.extend(run("a", 2000, "n1", 7, 1, 2005, 2200));
        let mut history = claims(&record);
        history[0].finished_at_ms = Some(T0 + 230);
        history[1].finished_at_ms = Some(T0 + 1210);
        history[1].outcome = Outcome::Abandoned;
        // A later attempt's record says nothing of this run's end.
        history[2].finished_at_ms = Some(T0 + 9000);
        history[2].attempt = 2;
        let report = check_with(&record, &history, &[], &[]);
        let lag = report.outcome_lag_ms.expect("two lags");
        assert_eq!((lag.n, lag.p50, lag.max), (2, 30, 30));
        assert_eq!(report.outcome_lag_by_outcome["ok"].max, 30);
        assert_eq!(report.outcome_lag_by_outcome["abandoned"].max, 10);
    }

    #[test]
    fn overlapping_runs_on_two_nodes_are_a_violation() {
        let mut record = run("a", 0, "n1", 7, 1, 5, 2500);
        record.extend(run("a", 1000, "n2", 8, 2, 1900, 2000));
        let history = claims(&record);
        let report = check_with(&record, &history, &[], &[]);
        assert_eq!(kinds(&report), [ViolationKind::Overlap]);
        let v = &report.violations[0];
        assert!(v.detail.contains("overlaps"), "{}", v.detail);
        assert!(!v.context.is_empty());
    }

    #[test]
    fn a_queued_run_in_one_process_may_start_within_the_end_lines_lag() {
        let mut record = run("a", 0, "n1", 7, 1, 5, 2500);
        record.extend(run("a", 1000, "n1", 7, 1, 2480, 2700));
        let history = claims(&record);
        let report = check_with(&record, &history, &[], &[]);
        assert!(report.violations.is_empty(), "{:#?}", report.violations);
        // In another process, it is an overlap.
        let mut record = run("a", 0, "n1", 7, 1, 5, 2500);
        record.extend(run("a", 1000, "n2", 8, 1, 2480, 2700));
        let history = claims(&record);
        let report = check_with(&record, &history, &[], &[]);
        assert_eq!(kinds(&report), [ViolationKind::Overlap]);
    }

    #[test]
    fn a_run_without_end_lasts_until_its_node_process_ended() {
        // n1 (pid 7) was killed at 1500; its run of 0 had no END line.
        let mut record = vec![start("a", 0, "n1", 70, 7, 1, 5)];
        record.extend(run("a", 1000, "n2", 8, 2, 1400, 1600));
        let history = claims(&record);
        let exits = [exit("n1", 7, 1500, ExitHow::Killed)];
        let report = check_with(&record, &history, &[], &exits);
        assert_eq!(kinds(&report), [ViolationKind::Overlap]);
        // Killed before the next start: no overlap.
        let mut record = vec![start("a", 0, "n1", 70, 7, 1, 5)];
        record.extend(run("a", 2000, "n2", 8, 2, 2005, 2100));
        let mut history = claims(&record);
        history.push(row("a", 1000, "n1", 1, Outcome::Abandoned));
        assert!(check_with(&record, &history, &[], &exits)
            .violations
            .is_empty());
    }

    #[test]
    fn a_run_that_never_ended_is_reported_and_stays_open() {
        let mut record = vec![start("a", 0, "n1", 70, 7, 1, 5)];
        record.extend(run("a", 5000, "n2", 8, 2, 5005, 5100));
        let mut history = claims(&record);
        history.extend((1..5).map(|i| row("a", i * 1000, "n1", 1, Outcome::Skipped)));
        let report = check_with(&record, &history, &[], &[]);
        assert_eq!(
            kinds(&report),
            [ViolationKind::NeverEnded, ViolationKind::Overlap]
        );
        assert!(report.violations[1].detail.contains("never ended"));
    }

    #[test]
    fn an_instant_started_twice_is_a_violation_unless_a_retry_attempt() {
        let mut record = run("a", 0, "n1", 7, 1, 5, 100);
        record.extend(run("a", 0, "n2", 8, 2, 1500, 1600));
        let history = vec![row("a", 0, "n2", 2, Outcome::Ok)];
        let report = check_with(&record, &history, &[], &[]);
        assert!(
            kinds(&report).contains(&ViolationKind::DoubleStart),
            "{:?}",
            kinds(&report)
        );

        // The same, as attempt 2 of a task that opted in to retry.
        record[2].attempt = 2;
        record[3].attempt = 2;
        let history = vec![FireRecord {
            attempt: 2,
            ..row("a", 0, "n2", 2, Outcome::Ok)
        }];
        let retry = [TaskInfo {
            retry: true,
            ..tasks()[0].clone()
        }];
        let report = check(&Input {
            record: &record,
            history: &history,
            faults: &[],
            exits: &[],
            tasks: &retry,
            until_ms: T0 + 100_000,
            origin_ms: T0,
            units: &[],
            files: None,
        });
        assert!(report.violations.is_empty(), "{:#?}", report.violations);
        // Without retry, a second attempt is still a second start.
        let report = check_with(&record, &history, &[], &[]);
        assert!(kinds(&report).contains(&ViolationKind::DoubleStart));
    }

    #[test]
    fn a_missing_instant_is_lost_unless_the_store_says_why() {
        let mut record = run("a", 0, "n1", 7, 1, 5, 100);
        record.extend(run("a", 3000, "n1", 7, 1, 3005, 3100));
        let mut history = claims(&record);
        history.push(row("a", 1000, "n1", 1, Outcome::Misfired));
        let report = check_with(&record, &history, &[], &[]);
        assert_eq!(kinds(&report), [ViolationKind::Lost]);
        assert!(report.violations[0].detail.contains("no store record"));
        assert_eq!(report.not_started.get("misfired"), Some(&1));
        assert_eq!(report.not_started.get("lost"), Some(&1));
    }

    #[test]
    fn an_instant_the_store_says_ran_without_a_start_line_is_lost() {
        let mut record = run("a", 0, "n1", 7, 1, 5, 100);
        record.extend(run("a", 2000, "n1", 7, 1, 2005, 2100));
        let mut history = claims(&record);
        history.push(row("a", 1000, "n1", 1, Outcome::Ok));
        let report = check_with(&record, &history, &[], &[]);
        assert_eq!(kinds(&report), [ViolationKind::Lost]);
        assert!(report.violations[0].detail.contains("never ran"));
    }

    #[test]
    fn a_fire_begun_as_the_campaign_ends_is_not_lost() {
        let record = run("a", 98_000, "n1", 7, 1, 98_005, 98_200);
        let mut history = claims(&record);
        history.push(row("a", 99_000, "n1", 1, Outcome::Running));
        let report = check_with(&record, &history, &[], &[]);
        assert!(report.violations.is_empty(), "{:#?}", report.violations);
        assert_eq!(report.not_started.get("running-at-the-end"), Some(&1));
    }

    #[test]
    fn lost_instants_are_counted_against_the_fault_around_them() {
        let mut record = run("a", 0, "n1", 7, 1, 5, 100);
        record.extend(run("a", 3000, "n2", 8, 2, 3005, 3100));
        let mut history = claims(&record);
        history.push(row("a", 1000, "n1", 1, Outcome::Abandoned));
        history.push(row("a", 2000, "n2", 2, Outcome::Misfired));
        let faults = [fault(FaultKind::Kill, 7, 900, 1000)];
        let exits = [exit("n1", 7, 900, ExitHow::Killed)];
        let report = check_with(&record, &history, &faults, &exits);
        assert!(report.violations.is_empty(), "{:#?}", report.violations);
        let f = &report.per_fault[0];
        assert_eq!(f.not_started.get("abandoned"), Some(&1));
        assert_eq!(f.not_started.get("misfired"), Some(&1));
        assert_eq!(f.resumed_ms, Some(3005 - 900));
        assert_eq!(report.failover_ms["kill"].p50, 2105);
    }

    #[test]
    fn a_start_with_an_older_token_than_an_earlier_start_is_stale() {
        let mut record = run("a", 0, "n2", 8, 5, 5, 100);
        record.extend(run("a", 1000, "n1", 7, 4, 1005, 1100));
        let history = claims(&record);
        let report = check_with(&record, &history, &[], &[]);
        assert_eq!(kinds(&report), [ViolationKind::StaleToken]);
    }

    #[test]
    fn a_start_the_store_did_not_claim_is_a_violation() {
        let record = run("a", 0, "n1", 7, 3, 5, 100);
        let report = check_with(&record, &[], &[], &[]);
        assert_eq!(kinds(&report), [ViolationKind::UnclaimedStart]);
        let history = vec![row("a", 0, "n2", 4, Outcome::Ok)];
        let report = check_with(&record, &history, &[], &[]);
        assert_eq!(kinds(&report), [ViolationKind::UnclaimedStart]);
        assert!(report.violations[0].detail.contains("claim is by n2"));
    }

    #[test]
    fn a_start_by_a_frozen_or_ended_node_process_is_a_violation() {
        // n1 (pid 7) stopped from 0 to 4000; a START at 2000 cannot be.
        let record = run("a", 2000, "n1", 7, 1, 2000, 2100);
        let history = claims(&record);
        let faults = [fault(FaultKind::Stop, 7, 0, 4000)];
        let report = check_with(&record, &history, &faults, &[]);
        assert_eq!(kinds(&report), [ViolationKind::StartWhileFrozen]);
        // Just after the SIGSTOP: a process forked before it.
        let record = run(
            "a",
            0,
            "n1",
            7,
            1,
            SPAWN_SLACK_MS / 2,
            SPAWN_SLACK_MS / 2 + 100,
        );
        let history = claims(&record);
        assert!(check_with(&record, &history, &faults, &[])
            .violations
            .is_empty());

        let record = run("a", 2000, "n1", 7, 1, 2000, 2100);
        let history = claims(&record);
        let exits = [exit("n1", 7, 1500, ExitHow::Graceful)];
        let report = check_with(&record, &history, &[], &exits);
        assert_eq!(kinds(&report), [ViolationKind::StartAfterExit]);
        // The same pid given to a later process long after: not the ended one.
        let later = 1500 + PID_REUSE_MS + 1000;
        let record = run("a", later, "n1", 7, 1, later, later + 100);
        let history = claims(&record);
        let report = check_with(&record, &history, &[], &exits);
        assert!(report.violations.is_empty(), "{:?}", kinds(&report));

        // A second process with a live node's id (pid 9) must start nothing.
        let second = Fault {
            second_pid: Some(9),
            ..fault(FaultKind::Duplicate, 7, 1000, 1200)
        };
        let record = run("a", 2000, "n1", 9, 1, 2000, 2100);
        let history = claims(&record);
        let report = check_with(&record, &history, std::slice::from_ref(&second), &[]);
        assert_eq!(kinds(&report), [ViolationKind::StartInDuplicate]);
        // The same pid given to a later process, long after the second one ended: not it.
        let later = 1200 + DUPLICATE_SLACK_MS + 60_000;
        let record = run("a", later, "n1", 9, 1, later, later + 100);
        let history = claims(&record);
        let report = check_with(&record, &history, std::slice::from_ref(&second), &[]);
        assert!(report.violations.is_empty(), "{:?}", kinds(&report));
        let record = run("a", 2000, "n1", 7, 1, 2000, 2100);
        let history = claims(&record);
        assert!(check_with(&record, &history, &[second], &[])
            .violations
            .is_empty());
    }

    #[test]
    fn a_paused_task_or_a_drained_node_starts_nothing() {
        // "a" paused from 900 (applied 1000) to 5000: its instants meanwhile are not lost.
        let mut record = run("a", 0, "n1", 7, 1, 5, 100);
        record.extend(run("a", 6000, "n1", 7, 1, 6005, 6100));
        let history = claims(&record);
        let pause = Fault {
            kind: FaultKind::Pause,
            target: "a".into(),
            pid: None,
            applied_ms: Some(T0 + 1000),
            ..fault(FaultKind::Pause, 0, 900, 5000)
        };
        let report = check_with(&record, &history, std::slice::from_ref(&pause), &[]);
        assert!(report.violations.is_empty(), "{:#?}", report.violations);
        assert_eq!(report.not_started.get("paused"), Some(&5));
        // A start in the middle of the pause is a violation.
        record.extend(run("a", 3000, "n1", 7, 1, 3005, 3100));
        let history = claims(&record);
        let report = check_with(&record, &history, &[pause], &[]);
        assert_eq!(kinds(&report), [ViolationKind::StartWhilePaused]);
        // n1 drained from 1000 to 5000.
        let drain = Fault {
            kind: FaultKind::Drain,
            target: "n1".into(),
            applied_ms: Some(T0 + 1000),
            ..fault(FaultKind::Drain, 7, 900, 5000)
        };
        let report = check_with(&record, &history, std::slice::from_ref(&drain), &[]);
        assert!(kinds(&report).contains(&ViolationKind::StartWhileDrained));
        let failed = Fault {
            failed: Some("exit status: 5".into()),
            ..drain
        };
        let report = check_with(&record, &history, &[failed], &[]);
        assert!(kinds(&report).contains(&ViolationKind::CommandFailed));
    }

    #[test]
    fn no_recovery_and_unexpected_exits_are_violations() {
        let mut f = fault(FaultKind::Graceful, 7, 0, 100);
        f.recovered_ms = None;
        let exits = [exit(
            "n2",
            8,
            50,
            ExitHow::Unexpected("exit status: 1".into()),
        )];
        let report = check_with(&[], &[], &[f], &exits);
        assert_eq!(
            kinds(&report),
            [ViolationKind::NodeExited, ViolationKind::NotRecovered]
        );
    }
}
