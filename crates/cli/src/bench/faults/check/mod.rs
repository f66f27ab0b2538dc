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

mod record;
mod report;
mod units;
mod violations;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

use rota::{store::FireRecord, Outcome};
use serde::Serialize;

pub use self::units::{parse_units, FilesInput, ItemRow, Place, UnitLine, UnitsReport};
pub use self::{record::*, report::*};

/// A run's process can be forked just before its node is frozen and write its START line
/// just after: a START this soon after a SIGSTOP is not counted as started while frozen.
pub const SPAWN_SLACK_MS: i64 = 1000;

/// How long after a duplicate fault's end a start by that second process's pid still counts
/// as the second process's (clocks of the run and of the campaign may differ by a step).
const DUPLICATE_SLACK_MS: i64 = 5_000;

/// A start by an ended process's pid this long after its end is a later process's: an
/// hour-long run wraps the pids around (a dead process's work ends within its lease).
const PID_REUSE_MS: i64 = 60_000;

/// A lost instant due this shortly before a pause of its task is put down to the pause.
const PAUSE_NEAR_MS: i64 = 6000;

/// How far around a violation its context reaches.
const CONTEXT_MS: i64 = 2500;

/// At most this many context lines per violation.
const CONTEXT_LINES: usize = 40;

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
mod tests;

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
}
