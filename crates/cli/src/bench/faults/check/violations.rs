//! Each rule of the contract as a check over the record, the store's history and the log of
//! faults: overlapping runs, instants started twice, starts by stale tokens or dead, frozen
//! or duplicate processes, lost instants and unrecovered faults.

use std::collections::{BTreeMap, BTreeSet};

use rota::Outcome;

use super::{checker::*, input::*, report::*};

/// How long a claimed fire may wait for the previous run before it is skipped: the nodes'
/// default `misfire_threshold`, which the campaign's tasks keep.
const MISFIRE_THRESHOLD_MS: i64 =
    rota::task::TaskSpec::DEFAULT_MISFIRE_THRESHOLD.as_millis() as i64;

impl<'a> Checker<'a> {
    pub(super) fn overlaps(&mut self, runs: &[Run<'a>]) {
        for (task, runs) in group(runs, |r| r.start.task.as_str()) {
            // One node process starts a task's next run once the previous one ended (a
            // queued instant), and an END line can come a little after the work ended (its
            // watcher must wake up first).
            let slack = |p: &Run, r: &Run| {
                if p.start.node_pid == r.start.node_pid && p.end == RunEnd::Line {
                    super::units::END_LAG_MS
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

    pub(super) fn retry(&self, task: &str) -> bool {
        self.input.tasks.iter().any(|t| t.name == task && t.retry)
    }

    pub(super) fn double_starts(&mut self) {
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

    pub(super) fn stale_tokens(&mut self) {
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

    pub(super) fn unclaimed_starts(&mut self) {
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
    pub(super) fn starts_of_dead_or_frozen_nodes(&mut self) {
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

    pub(super) fn start_in_duplicate(&mut self, s: &Started) {
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

    pub(super) fn start_while_frozen(&mut self, s: &Started) {
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
    pub(super) fn start_while_held(&mut self, s: &Started) {
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

    pub(super) fn start_after_exit(&mut self, s: &Started) {
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
    pub(super) fn lost_instants(
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
    pub(super) fn not_started(
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
            // Claimed, never begun, as every node stopped: it was waiting for the previous
            // run to end (it may, up to the misfire threshold), and the next owner, which
            // would start it, never came.
            Some(f)
                if f.outcome == Outcome::Running
                    && f.started_at_ms.is_none()
                    && t + MISFIRE_THRESHOLD_MS + 2 * task.period_ms > self.input.until_ms =>
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
    pub(super) fn lost(&mut self, task: &TaskInfo, t: i64, why: &str) {
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
    pub(super) fn unrecovered_faults_and_exits(&mut self) {
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
