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

mod checker;
mod input;
mod record;
mod report;
mod units;
mod violations;

use std::collections::{BTreeMap, BTreeSet};

use self::checker::*;
pub use self::{input::*, record::*, report::*};

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

#[cfg(test)]
mod tests;
