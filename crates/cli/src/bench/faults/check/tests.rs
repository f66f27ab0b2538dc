use rota::{store::FireRecord, Outcome};

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
    let text = "S a 1000 n1 42 7 1 3 1000123456\nE a 1000 n1 42 7 1 3 1000223456\nS a 2000 n1 4";
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
fn a_fire_claimed_and_waiting_as_the_campaign_ends_is_not_lost() {
    // Claimed 6 s before the end, still waiting for the previous run (never begun) when every
    // node stopped: in flight, not lost. Begun that early and never started: lost.
    let record = run("a", 90_000, "n1", 7, 1, 90_005, 90_200);
    let mut history = claims(&record);
    for t in [91_000, 92_000, 93_000] {
        history.push(row("a", t, "n1", 1, Outcome::Skipped));
    }
    let waiting = history.clone();
    history.push(row("a", 94_000, "n1", 1, Outcome::Running));
    let report = check_with(&record, &history, &[], &[]);
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    assert_eq!(report.not_started.get("running-at-the-end"), Some(&1));
    let mut begun = row("a", 94_000, "n1", 1, Outcome::Running);
    begun.started_at_ms = Some(T0 + 94_010);
    let mut history = waiting;
    history.push(begun);
    let report = check_with(&record, &history, &[], &[]);
    assert_eq!(kinds(&report), [ViolationKind::Lost]);
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
