//! The services' side of the checker: the runs of a command service, and the files of a
//! `file_inbound` service, from their own record lines (`US` / `UE`), the store's item
//! records and where each file ended up.
//!
//! Violations (contract items in brackets):
//! - two runs of one service overlapping in time, in two node processes or one: the service
//!   ran twice at once [services run on one node at a time; 11, 12];
//! - a file handled twice as the same attempt; handled again at all, as the recovery is
//!   `abandon`, unless its first handling ended with a graceful handover (a drain, a pause, a
//!   rolling restart, a graceful stop, or a store clock step that moved the service off a
//!   live node) and the second is a later attempt [2, 9];
//! - a file dropped and never handled, unless it is in the failed directory with a store
//!   record that says why (`abandoned`, `failed`); a file left in the inbox; a file in the
//!   done directory that no START line shows handled [3];
//! - a file's outcome and its place disagreeing (`ok` in failed, `abandoned` in done);
//! - a START with a lower token than an earlier START of the same service, or that the
//!   item's store record does not match (node and token of the same attempt) [2, 4].

use std::collections::{BTreeMap, BTreeSet};

use super::{checker::*, input::*, record::*, report::*};

/// How late an END line may be, after the work ended, for two runs in one node process.
pub(super) const END_LAG_MS: i64 = 100;

/// One run of a service's work, from its START line to its end.
type UnitRun<'a> = Run<'a, UnitLine>;

impl FileReport {
    /// Counts a file by its outcome, place and how often it was handled (`runs`).
    pub(super) fn count(&mut self, runs: &[&UnitRun], item: Option<&ItemRow>, place: Place) {
        *self
            .places
            .entry(format!("{place:?}").to_lowercase())
            .or_default() += 1;
        let outcome = item.map_or("none", |i| i.outcome.as_str());
        *self.outcomes.entry(outcome.to_string()).or_default() += 1;
        if let Some(i) = item.filter(|i| i.outcome != "ok") {
            let message = i.message.as_deref().unwrap_or("-");
            let short: String = message.chars().take(60).collect();
            *self.messages.entry(short).or_default() += 1;
        }
        if runs.is_empty() && matches!(outcome, "abandoned" | "failed") {
            self.set_aside_unhandled += 1;
        }
        match runs.len() {
            0 => self.never_handled += 1,
            1 => self.handled_once += 1,
            _ => self.handled_again += 1,
        }
    }
}

impl<'a> Checker<'a> {
    /// Checks the services' record and files; see the module's doc.
    pub(super) fn units(&mut self) -> UnitsReport {
        let input = self.input;
        let runs = self.unit_runs();
        self.unit_overlaps(&runs);
        self.unit_stale_tokens();
        let mut report = UnitsReport::default();
        for l in starts(input.units) {
            *report.service_starts.entry(l.service.clone()).or_default() += 1;
        }
        let services: BTreeSet<&str> = input.units.iter().map(|l| l.service.as_str()).collect();
        // From a fault on a node owning a service until a START of it by another process.
        let mut failover: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for f in input.faults {
            let Some(pid) = f.pid else { continue };
            for s in f.owned.iter().filter(|s| services.contains(s.as_str())) {
                let of_service = starts(input.units).filter(|l| &l.service == s);
                if let Some(ms) = first_start_elsewhere(of_service, pid, f.start_ms) {
                    failover
                        .entry(f.kind.as_str().to_string())
                        .or_default()
                        .push(ms);
                }
            }
        }
        report.service_failover_ms = Percentiles::by_key(failover);
        if let Some(files) = &input.files {
            report.files = Some(self.files(files, &runs));
        }
        report
    }

    /// Every unit START with its end: its END line, else its node process's exit, else open
    /// until the end of the campaign (a violation). A file run whose DONE line came first
    /// ended then: the process exits right after writing it, while its END line waits for
    /// a watcher that a busy machine may wake late.
    fn unit_runs(&mut self) -> Vec<UnitRun<'a>> {
        let key = |l: &'a UnitLine| (l.service.as_str(), l.key.as_str(), l.node_pid, l.pid);
        let done: BTreeMap<_, Vec<i64>> = self
            .input
            .units
            .iter()
            .filter(|l| l.mark == Mark::Done)
            .fold(BTreeMap::new(), |mut m, l| {
                m.entry(key(l)).or_insert_with(Vec::new).push(l.at_ms);
                m
            });
        let mut runs = self.runs_of(self.input.units, key, |s| (s.key.as_str(), s.label()));
        for r in &mut runs {
            let done_at = done
                .get(&key(r.start))
                .and_then(|times| times.iter().find(|&&t| t >= r.start.at_ms));
            if let Some(&t) = done_at {
                r.end_ms = r.end_ms.min(t);
            }
        }
        runs
    }

    fn unit_overlaps(&mut self, runs: &[UnitRun<'a>]) {
        for (service, runs) in group(runs, |r| r.start.service.as_str()) {
            // One node process hands out one file at a time, and an END line can come a
            // little after the work ended (its watcher must wake up first).
            let slack = |p: &UnitRun, r: &UnitRun| {
                if p.start.node_pid == r.start.node_pid {
                    END_LAG_MS
                } else {
                    0
                }
            };
            for (p, r) in overlapping(runs, slack) {
                let detail = format!(
                    "{service}: {} on {} (pid {}, token {}, started {}, {} {}) overlaps {} on {} (pid {}, token {}) started {} ({} ms){}",
                    p.start.key,
                    p.start.node,
                    p.start.node_pid,
                    p.start.token,
                    self.rel(p.start.at_ms),
                    p.end.how(),
                    self.rel(p.end_ms),
                    r.start.key,
                    r.start.node,
                    r.start.node_pid,
                    r.start.token,
                    self.rel(r.start.at_ms),
                    p.end_ms.min(r.end_ms) - r.start.at_ms,
                    if p.start.node_pid == r.start.node_pid {
                        ", in one node process"
                    } else {
                        ""
                    }
                );
                self.violation_since(
                    ViolationKind::ServiceOverlap,
                    Some(service),
                    p.start.at_ms,
                    r.start.at_ms,
                    detail,
                );
            }
        }
    }

    fn unit_stale_tokens(&mut self) {
        for (service, lines) in group(starts(self.input.units), |s| s.service.as_str()) {
            for (h, l) in stale(lines) {
                let detail = format!(
                    "{service}: {} started on {} (pid {}) with token {} at {}, after {} (pid {}) started {} with token {} at {}",
                    l.key,
                    l.node,
                    l.node_pid,
                    l.token,
                    self.rel(l.at_ms),
                    h.node,
                    h.node_pid,
                    h.key,
                    h.token,
                    self.rel(h.at_ms)
                );
                self.violation_since(
                    ViolationKind::StaleToken,
                    Some(service),
                    h.at_ms,
                    l.at_ms,
                    detail,
                );
            }
        }
    }

    /// Did run `r` end with a graceful stop of its node process (the handover of a SIGTERM)?
    fn ended_by_graceful_stop(&self, r: &UnitRun) -> bool {
        self.input.exits.iter().any(|e| {
            e.pid == r.start.node_pid
                && e.how == ExitHow::Graceful
                && e.at_ms >= r.start.at_ms
                && r.end_ms <= e.at_ms
        }) || self.input.faults.iter().any(|f| {
            f.kind == FaultKind::Graceful
                && f.pid == Some(r.start.node_pid)
                && r.end_ms >= f.start_ms
                && r.end_ms <= f.end_ms
        })
    }

    /// Was file run `r` interrupted by a graceful handover, so that its file may be handed
    /// over again as a later attempt? At a graceful stop of its node, or while an operator
    /// drained its node, paused its service or restarted the cluster node by node. A run
    /// that did its whole work (its `UD` line) never was.
    fn handed_over(&self, r: &UnitRun) -> bool {
        let done = self
            .input
            .units
            .iter()
            .any(|l| l.mark == Mark::Done && l.pid == r.start.pid && l.key == r.start.key);
        if done {
            return false;
        }
        self.ended_by_graceful_stop(r)
            || (r.end == RunEnd::Line
                && self.input.faults.iter().any(|f| {
                    let moved = match f.kind {
                        FaultKind::Drain => f.pid == Some(r.start.node_pid),
                        FaultKind::Pause => f.target == r.start.service,
                        FaultKind::RollingRestart => true,
                        // A store clock stepped forward makes live nodes look expired: the
                        // leader moves their services, and a node that still holds its own
                        // lease hands each file over as it would for a drain.
                        FaultKind::StoreStep => true,
                        _ => false,
                    };
                    moved && f.start_ms <= r.end_ms && r.end_ms <= f.end_ms
                }))
    }

    fn files(&mut self, files: &FilesInput, runs: &[UnitRun<'a>]) -> FileReport {
        let mut report = FileReport {
            dropped: files.dropped.len(),
            ..FileReport::default()
        };
        let items: BTreeMap<&str, &ItemRow> =
            files.items.iter().map(|i| (i.name.as_str(), i)).collect();
        let mut by_file = group(
            runs.iter().filter(|r| r.start.service == files.service),
            |r| r.start.key.as_str(),
        );
        let (mut waits, mut lags) = (Vec::new(), Vec::new());
        // Files never handled and still in the inbox: one violation for all of them (a stuck
        // service leaves hundreds).
        let mut stuck: Vec<(&str, i64)> = Vec::new();
        for (name, dropped_ms) in files.dropped {
            let mut runs = by_file.remove(name.as_str()).unwrap_or_default();
            runs.sort_by_key(|r| r.start.at_ms);
            let item = items.get(name.as_str()).copied();
            let place = files.places.get(name).copied().unwrap_or(Place::Missing);
            report.count(&runs, item, place);
            if let Some(first) = runs.first() {
                waits.push(first.start.at_ms - dropped_ms);
            }
            for r in &runs {
                let finished = item
                    .filter(|i| i.attempt == r.start.attempt && r.end == RunEnd::Line)
                    .and_then(|i| i.finished_at_ms);
                if let Some(t) = finished {
                    lags.push(t - r.end_ms);
                }
            }
            self.file_handled_twice(name, &runs);
            self.file_claims(name, &runs, item);
            if place == Place::Inbox && runs.is_empty() && item.is_none() {
                stuck.push((name, *dropped_ms));
                report.lost += 1;
            } else if self.file_lost(name, *dropped_ms, &runs, item, place) {
                report.lost += 1;
            }
        }
        if let (Some(&(first, first_ms)), Some(&(last, last_ms))) = (stuck.first(), stuck.last()) {
            self.violation(
                ViolationKind::FileLost,
                Some(files.service),
                first_ms,
                format!(
                    "{} file(s) dropped from {} ({first}) to {} ({last}) were never handled: still in the inbox at the end, with no store record",
                    stuck.len(),
                    self.rel(first_ms),
                    self.rel(last_ms)
                ),
            );
        }
        report.wait_ms = Percentiles::of(waits);
        report.outcome_lag_ms = Percentiles::of(lags);
        report
    }

    fn file_handled_twice(&mut self, name: &str, runs: &[&UnitRun]) {
        for (i, r) in runs.iter().enumerate().skip(1) {
            let same = runs[..i]
                .iter()
                .find(|p| p.start.attempt == r.start.attempt);
            let prev = runs[i - 1];
            let why = if let Some(p) = same {
                format!(
                    "handled twice as attempt {}: on {} (pid {}, token {}) at {} and on {} (pid {}, token {}) at {}",
                    r.start.attempt,
                    p.start.node,
                    p.start.node_pid,
                    p.start.token,
                    self.rel(p.start.at_ms),
                    r.start.node,
                    r.start.node_pid,
                    r.start.token,
                    self.rel(r.start.at_ms)
                )
            } else if r.start.attempt > prev.start.attempt && self.handed_over(prev) {
                // A graceful handover may hand the file over again, as a later attempt.
                continue;
            } else {
                format!(
                    "handled again as attempt {} on {} (pid {}) at {}, after attempt {} on {} (pid {}) {} at {}, though the recovery is `abandon`",
                    r.start.attempt,
                    r.start.node,
                    r.start.node_pid,
                    self.rel(r.start.at_ms),
                    prev.start.attempt,
                    prev.start.node,
                    prev.start.node_pid,
                    prev.end.how(),
                    self.rel(prev.end_ms)
                )
            };
            self.violation_since(
                ViolationKind::FileHandledTwice,
                Some(name),
                runs[0].start.at_ms,
                r.start.at_ms,
                format!("file {name} {why}"),
            );
        }
    }

    /// Every START of a file matches its store record (same node and token for the same
    /// attempt).
    fn file_claims(&mut self, name: &str, runs: &[&UnitRun], item: Option<&ItemRow>) {
        for r in runs {
            let s = r.start;
            let detail = match item {
                None => "the store has no item record of it".to_string(),
                Some(i) if i.attempt == s.attempt && (i.node != s.node || i.token != s.token) => {
                    format!(
                        "the store's item record is by {} with token {}",
                        i.node, i.token
                    )
                }
                Some(_) => continue,
            };
            self.violation(
                ViolationKind::UnclaimedStart,
                Some(name),
                s.at_ms,
                format!(
                    "file {name} handled on {} (pid {}) with token {}, attempt {}: {detail}",
                    s.node, s.node_pid, s.token, s.attempt
                ),
            );
        }
    }

    /// A file lost (returns true) or misplaced; see the module's doc.
    fn file_lost(
        &mut self,
        name: &str,
        dropped_ms: i64,
        runs: &[&UnitRun],
        item: Option<&ItemRow>,
        place: Place,
    ) -> bool {
        let outcome = item.map(|i| i.outcome.as_str());
        let lost = match (place, runs.is_empty(), outcome) {
            (Place::Inbox, _, o) => Some(format!(
                "still in the inbox at the end (store: {}; START lines: {})",
                o.unwrap_or("no record"),
                runs.len()
            )),
            (Place::Missing, _, o) => Some(format!(
                "in neither the inbox, done nor failed (store: {})",
                o.unwrap_or("no record")
            )),
            (Place::Done, true, o) => Some(format!(
                "in done, but no START line: its handler never ran (store: {})",
                o.unwrap_or("no record")
            )),
            (Place::Failed, true, Some("abandoned" | "failed")) => None,
            (Place::Failed, true, o) => Some(format!(
                "in failed without a START line, and the store does not say why (store: {})",
                o.unwrap_or("no record")
            )),
            _ => None,
        };
        if let Some(why) = lost {
            self.violation(
                ViolationKind::FileLost,
                Some(name),
                dropped_ms,
                format!(
                    "file {name} (dropped at {}) lost: {why}",
                    self.rel(dropped_ms)
                ),
            );
            return true;
        }
        let misplaced = match (place, outcome) {
            (Place::Done, Some(o)) if o != "ok" => Some(o),
            (Place::Failed, Some("ok")) => Some("ok"),
            _ => None,
        };
        if let Some(o) = misplaced {
            self.violation(
                ViolationKind::FileMisplaced,
                Some(name),
                dropped_ms,
                format!(
                    "file {name} is in {} but the store recorded it {o}",
                    format!("{place:?}").to_lowercase()
                ),
            );
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::super::{check, tests::exit, Fault, Input, ProcessExit, Report, TaskInfo};
    use super::*;

    const T0: i64 = 1_000_000;

    /// A run of `key` of `service`: START and END lines.
    #[allow(clippy::too_many_arguments)]
    fn urun(
        service: &str,
        key: &str,
        node: &str,
        node_pid: u32,
        attempt: i64,
        token: i64,
        from: i64,
        to: i64,
    ) -> Vec<UnitLine> {
        let start = UnitLine {
            mark: Mark::Start,
            service: service.into(),
            key: key.into(),
            node: node.into(),
            pid: node_pid * 1000 + from as u32,
            node_pid,
            attempt,
            token,
            at_ms: T0 + from,
        };
        let end = UnitLine {
            mark: Mark::End,
            at_ms: T0 + to,
            ..start.clone()
        };
        vec![start, end]
    }

    fn item(name: &str, node: &str, token: i64, outcome: &str) -> ItemRow {
        ItemRow {
            name: name.into(),
            node: node.into(),
            token,
            attempt: 1,
            outcome: outcome.into(),
            started_at_ms: None,
            finished_at_ms: None,
            message: None,
        }
    }

    fn run_check(
        units: &[UnitLine],
        files: Option<FilesInput>,
        faults: &[Fault],
        exits: &[ProcessExit],
    ) -> Report {
        check(&Input {
            record: &[],
            history: &[],
            faults,
            exits,
            tasks: &[] as &[TaskInfo],
            until_ms: T0 + 100_000,
            origin_ms: T0,
            units,
            files,
        })
    }

    fn kinds(r: &Report) -> Vec<ViolationKind> {
        r.violations.iter().map(|v| v.kind).collect()
    }

    #[test]
    fn parses_unit_lines() {
        let l = UnitLine::parse("US in f-1 n1 42 7 1 3 1000123456").unwrap();
        assert_eq!(
            (l.mark, l.key.as_str(), l.pid, l.token, l.at_ms),
            (Mark::Start, "f-1", 42, 3, 1_000_123)
        );
        assert!(UnitLine::parse("S a 1 n1 42 7 1 3 1000").is_none());
        assert_eq!(
            UnitLine::parse("UD in f-1 n1 42 7 1 3 1000123456").map(|l| l.mark),
            Some(Mark::Done)
        );
        assert_eq!(parse_units("UE s s n1 1 2 0 3 5000\nUS s s n1").len(), 1);
    }

    #[test]
    fn a_service_running_twice_at_once_is_a_violation() {
        let mut units = urun("svc", "svc", "n1", 7, 0, 1, 0, 3000);
        units.extend(urun("svc", "svc", "n2", 8, 0, 2, 3100, 5000));
        assert!(run_check(&units, None, &[], &[]).violations.is_empty());
        let mut units = urun("svc", "svc", "n1", 7, 0, 1, 0, 3000);
        units.extend(urun("svc", "svc", "n2", 8, 0, 2, 2500, 5000));
        let r = run_check(&units, None, &[], &[]);
        assert_eq!(kinds(&r), [ViolationKind::ServiceOverlap]);
        assert!(
            r.violations[0].detail.contains("500 ms"),
            "{:?}",
            r.violations
        );
        // An older token after a newer one: the old owner started after losing it.
        let mut units = urun("svc", "svc", "n1", 7, 0, 3, 0, 1000);
        units.extend(urun("svc", "svc", "n2", 8, 0, 2, 2000, 3000));
        assert_eq!(
            kinds(&run_check(&units, None, &[], &[])),
            [ViolationKind::StaleToken]
        );
    }

    #[test]
    fn a_reused_pid_pairs_each_start_with_its_own_end() {
        // pid 42 runs the service twice, 4 s apart (pids wrap around in a long campaign).
        let mut units = urun("svc", "svc", "n1", 7, 0, 1, 0, 1000);
        units.extend(urun("svc", "svc", "n2", 8, 0, 2, 2000, 3000));
        units.extend(urun("svc", "svc", "n1", 7, 0, 3, 5000, 6000));
        for (i, l) in units.iter_mut().enumerate() {
            if !(2..4).contains(&i) {
                l.pid = 42;
            }
        }
        let r = run_check(&units, None, &[], &[]);
        assert!(r.violations.is_empty(), "{:#?}", r.violations);
    }

    #[test]
    fn a_file_run_ends_at_its_done_line_when_its_end_line_is_late() {
        // f-1's END line comes 450 ms after its DONE line; f-2 started in between.
        let mut units = urun("in", "f-1", "n1", 7, 1, 1, 50, 600);
        units.push(UnitLine {
            mark: Mark::Done,
            at_ms: T0 + 150,
            ..units[0].clone()
        });
        units.extend(urun("in", "f-2", "n1", 7, 1, 1, 200, 300));
        let r = run_check(&units, None, &[], &[]);
        assert!(r.violations.is_empty(), "{:#?}", r.violations);
        // Without the DONE line it overlaps.
        units.remove(2);
        let r = run_check(&units, None, &[], &[]);
        assert_eq!(kinds(&r), [ViolationKind::ServiceOverlap]);
    }

    fn files_input<'a>(
        dropped: &'a [(String, i64)],
        items: &'a [ItemRow],
        places: &'a BTreeMap<String, Place>,
    ) -> FilesInput<'a> {
        FilesInput {
            service: "in",
            dropped,
            items,
            places,
        }
    }

    /// [`run_check`] with the file workload.
    fn check_files(
        units: &[UnitLine],
        dropped: &[(String, i64)],
        items: &[ItemRow],
        places: &BTreeMap<String, Place>,
        exits: &[ProcessExit],
    ) -> Report {
        run_check(units, Some(files_input(dropped, items, places)), &[], exits)
    }

    #[test]
    fn files_handled_once_or_abandoned_with_a_record_are_fine() {
        let dropped = vec![
            ("f-1".to_string(), T0),
            ("f-2".to_string(), T0 + 100),
            ("f-3".to_string(), T0 + 200),
        ];
        let mut units = urun("in", "f-1", "n1", 7, 1, 1, 50, 150);
        // f-2: its node died mid-handling; abandoned by the next owner.
        units.push(urun("in", "f-2", "n1", 7, 1, 1, 160, 300).remove(0));
        let items = vec![
            ItemRow {
                finished_at_ms: Some(T0 + 170),
                ..item("f-1", "n1", 1, "ok")
            },
            item("f-2", "n1", 1, "abandoned"),
            // f-3: claimed, its node died before the handler started.
            item("f-3", "n1", 1, "abandoned"),
        ];
        let places = BTreeMap::from([
            ("f-1".to_string(), Place::Done),
            ("f-2".to_string(), Place::Failed),
            ("f-3".to_string(), Place::Failed),
        ]);
        let exits = [exit("n1", 7, 250, ExitHow::Killed)];
        let r = check_files(&units, &dropped, &items, &places, &exits);
        assert!(r.violations.is_empty(), "{:#?}", r.violations);
        let f = r.units.files.unwrap();
        assert_eq!(
            (f.dropped, f.handled_once, f.handled_again, f.never_handled),
            (3, 2, 0, 1)
        );
        assert_eq!(f.outcomes["abandoned"], 2);
        assert_eq!(f.set_aside_unhandled, 1);
        assert_eq!(f.places["failed"], 2);
        assert_eq!(f.outcome_lag_ms.unwrap().max, 20);
        assert_eq!(f.wait_ms.unwrap().max, 60);
    }

    #[test]
    fn a_file_handled_twice_or_lost_is_a_violation() {
        let dropped = vec![
            ("f-1".to_string(), T0),
            ("f-2".to_string(), T0),
            ("f-3".to_string(), T0),
            ("f-4".to_string(), T0),
        ];
        let mut units = urun("in", "f-1", "n1", 7, 1, 1, 50, 150);
        units.extend(urun("in", "f-1", "n2", 8, 1, 2, 1050, 1150));
        let items = vec![
            item("f-1", "n2", 2, "ok"),
            item("f-3", "n1", 1, "ok"),
            item("f-4", "n1", 1, "running"),
        ];
        let places = BTreeMap::from([
            ("f-1".to_string(), Place::Done),
            ("f-3".to_string(), Place::Done),
            ("f-4".to_string(), Place::Inbox),
        ]);
        let r = check_files(&units, &dropped, &items, &places, &[]);
        let mut k = kinds(&r);
        k.sort();
        assert_eq!(
            k,
            [
                ViolationKind::UnclaimedStart,
                ViolationKind::FileHandledTwice,
                ViolationKind::FileLost,
                ViolationKind::FileLost,
                ViolationKind::FileLost,
            ],
            "{:#?}",
            r.violations
        );
        assert_eq!(r.units.files.unwrap().lost, 3);
    }

    #[test]
    fn files_a_stuck_service_never_took_are_one_violation() {
        let dropped: Vec<(String, i64)> = (1..=3).map(|i| (format!("f-{i}"), T0 + i)).collect();
        let places: BTreeMap<String, Place> = dropped
            .iter()
            .map(|(n, _)| (n.clone(), Place::Inbox))
            .collect();
        let r = run_check(&[], Some(files_input(&dropped, &[], &places)), &[], &[]);
        assert_eq!(kinds(&r), [ViolationKind::FileLost]);
        assert!(
            r.violations[0].detail.starts_with("3 file(s)"),
            "{}",
            r.violations[0].detail
        );
        assert_eq!(r.units.files.unwrap().lost, 3);
    }

    #[test]
    fn a_later_attempt_after_a_graceful_handover_is_allowed() {
        let dropped = vec![("f-1".to_string(), T0)];
        // Interrupted: no DONE line.
        let mut units = urun("in", "f-1", "n1", 7, 1, 1, 50, 90);
        units.extend(urun("in", "f-1", "n2", 8, 2, 2, 1050, 1150));
        let items = vec![ItemRow {
            attempt: 2,
            ..item("f-1", "n2", 2, "ok")
        }];
        let places = BTreeMap::from([("f-1".to_string(), Place::Done)]);
        let exits = [exit("n1", 7, 1000, ExitHow::Graceful)];
        let r = check_files(&units, &dropped, &items, &places, &exits);
        assert!(r.violations.is_empty(), "{:#?}", r.violations);
        // After a kill, not even a later attempt.
        let killed = [ProcessExit {
            how: ExitHow::Killed,
            ..exits[0].clone()
        }];
        let r = check_files(&units, &dropped, &items, &places, &killed);
        assert_eq!(kinds(&r), [ViolationKind::FileHandledTwice]);
        // Cut short while an operator restarts the cluster node by node, or drains the
        // node: handed over again.
        let files = || Some(files_input(&dropped, &items, &places));
        let rolling = super::super::tests::fault(FaultKind::RollingRestart, 0, 0, 2000);
        let drain = super::super::tests::fault(FaultKind::Drain, 7, 0, 2000);
        let drain_other = super::super::tests::fault(FaultKind::Drain, 9, 0, 2000);
        let step = super::super::tests::fault(FaultKind::StoreStep, 0, 0, 2000);
        for f in [&rolling, &drain, &step] {
            let r = run_check(&units, files(), std::slice::from_ref(f), &[]);
            assert!(r.violations.is_empty(), "{:?}: {:#?}", f.kind, r.violations);
        }
        let r = run_check(&units, files(), &[drain_other], &[]);
        assert_eq!(kinds(&r), [ViolationKind::FileHandledTwice]);
        // A run that did its whole work (its DONE line) is never handed over again,
        // whatever went on.
        let mut whole = urun("in", "f-1", "n1", 7, 1, 1, 50, 150);
        whole.push(UnitLine {
            mark: Mark::Done,
            at_ms: T0 + 149,
            ..whole[0].clone()
        });
        whole.extend(urun("in", "f-1", "n2", 8, 2, 2, 1050, 1150));
        let r = run_check(&whole, files(), &[rolling], &exits);
        assert_eq!(kinds(&r), [ViolationKind::FileHandledTwice]);
    }
}
