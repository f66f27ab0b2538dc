//! The checker's own state and the reading of runs (a START with its END) out of the record,
//! with the history around a violation; the rules themselves are in `violations.rs` and
//! `units.rs`.

use std::collections::BTreeMap;

use rota::store::FireRecord;

use super::{input::*, record::*, report::*};

/// A run's process can be forked just before its node is frozen and write its START line
/// just after: a START this soon after a SIGSTOP is not counted as started while frozen.
pub const SPAWN_SLACK_MS: i64 = 1000;

/// How long after a duplicate fault's end a start by that second process's pid still counts
/// as the second process's (clocks of the run and of the campaign may differ by a step).
pub(super) const DUPLICATE_SLACK_MS: i64 = 5_000;

/// A start by an ended process's pid this long after its end is a later process's: an
/// hour-long run wraps the pids around (a dead process's work ends within its lease).
pub(super) const PID_REUSE_MS: i64 = 60_000;

/// A lost instant due this shortly before a pause of its task is put down to the pause.
pub(super) const PAUSE_NEAR_MS: i64 = 6000;

/// How far around a violation its context reaches.
pub(super) const CONTEXT_MS: i64 = 2500;

/// At most this many context lines per violation.
pub(super) const CONTEXT_LINES: usize = 40;

/// One run of a task (or of a service's work: [`UnitLine`]), from its START line to its end.
#[derive(Debug, Clone)]
pub(super) struct Run<'a, L = RecordLine> {
    pub(super) start: &'a L,
    pub(super) end_ms: i64,
    /// How its end is known.
    pub(super) end: RunEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RunEnd {
    /// Its END line.
    Line,
    /// No END line: its node process ended then (the run died with it).
    NodeExit,
    /// Neither: open until the end of the campaign.
    Never,
}

impl RunEnd {
    /// As a violation's detail says it, before the end's time.
    pub(super) fn how(self) -> &'static str {
        match self {
            RunEnd::Line => "ended",
            RunEnd::NodeExit => "ended with its node process",
            RunEnd::Never => "never ended; open until",
        }
    }
}

pub(super) fn starts<L: Line>(lines: &[L]) -> impl Iterator<Item = &L> {
    lines.iter().filter(|l| l.mark() == Mark::Start)
}

/// `items` by `key`, each group in the order given.
pub(super) fn group<'i, T, K: Ord>(
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
pub(super) fn first_start_elsewhere<'l, L: Line + 'l>(
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
pub(super) fn resumed(record: &[RecordLine], f: &Fault) -> Vec<i64> {
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
pub(super) fn overlapping<'r, 'a, L: Line>(
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
pub(super) fn stale<L: Line>(mut starts: Vec<&L>) -> Vec<(&L, &L)> {
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

pub(super) struct Checker<'a> {
    pub(super) input: &'a Input<'a>,
    /// The store's record of each fire.
    pub(super) rows: BTreeMap<(&'a str, i64), &'a FireRecord>,
    pub(super) violations: Vec<Violation>,
}

/// A START line, of a task's run or of a service's, as the checks of its node process see it.
pub(super) struct Started<'l> {
    /// The run: `task@instant`, or `service key`.
    pub(super) what: String,
    /// Its task, or the service's key.
    pub(super) task: &'l str,
    pub(super) node: &'l str,
    pub(super) node_pid: u32,
    pub(super) at_ms: i64,
}

/// The last fault whose window (a period before it, to its recovery and a period after)
/// holds instant `t`.
pub(super) fn fault_around(faults: &[Fault], t: i64, period_ms: i64) -> Option<usize> {
    faults.iter().rposition(|f| {
        let end = f.recovered_ms.unwrap_or(f.end_ms).max(f.end_ms);
        t >= f.start_ms - period_ms && t <= end + period_ms
    })
}

impl<'a> Checker<'a> {
    pub(super) fn violation(
        &mut self,
        kind: ViolationKind,
        task: Option<&str>,
        at_ms: i64,
        detail: String,
    ) {
        self.violation_since(kind, task, at_ms, at_ms, detail);
    }

    /// A violation at `at_ms` that began at `since_ms` (the first of two starts, the run
    /// overlapped): its context covers both.
    pub(super) fn violation_since(
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

    pub(super) fn rel(&self, ms: i64) -> String {
        format!("{:+.3}s", (ms - self.input.origin_ms) as f64 / 1000.0)
    }

    /// A task's run: `task@instant`.
    pub(super) fn fire(&self, l: &RecordLine) -> String {
        format!("{}@{}", l.task, self.rel(l.instant_ms))
    }

    /// A record line (of a task, or of a service: `what` says which run) as context.
    pub(super) fn line_text(&self, l: &impl Line, what: &str) -> String {
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

    pub(super) fn row(&self, f: &FireRecord) -> String {
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
    pub(super) fn context(&self, task: Option<&str>, from_ms: i64, at_ms: i64) -> Vec<String> {
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
    pub(super) fn runs_of<L: Line, K: Ord>(
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
    pub(super) fn runs(&mut self) -> Vec<Run<'a>> {
        self.runs_of(
            self.input.record,
            |l| (l.task.as_str(), l.instant_ms, l.pid),
            |s| (s.task.as_str(), format!("{}@{}", s.task, s.instant_ms)),
        )
    }

    /// The outcome lag of every run that ended by its END line and whose attempt the store
    /// records as finished: overall and by outcome.
    pub(super) fn outcome_lags(
        &self,
        runs: &[Run],
    ) -> (Option<Percentiles>, BTreeMap<String, Percentiles>) {
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
