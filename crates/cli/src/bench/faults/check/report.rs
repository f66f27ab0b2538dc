//! What the checker reports: the violations with the history around them, and the summary
//! (faults by kind, instants, failover percentiles, files).

use std::{collections::BTreeMap, fmt};

use serde::Serialize;

use super::input::FaultKind;

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

/// What became of the files.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FileReport {
    pub dropped: usize,
    /// One START line.
    pub handled_once: usize,
    /// Two or more START lines.
    pub handled_again: usize,
    /// No START line.
    pub never_handled: usize,
    /// Of those, set aside with a store record saying why (`abandoned`, `failed`): claimed,
    /// but never handed to the handler.
    pub set_aside_unhandled: usize,
    /// By the store's item record: `ok`, `failed`, `abandoned`, ... (`none` without one).
    pub outcomes: BTreeMap<String, usize>,
    /// By the store's message of the files not `ok` (what the product said happened).
    pub messages: BTreeMap<String, usize>,
    /// Where the files ended up.
    pub places: BTreeMap<String, usize>,
    /// Files lost (a violation each).
    pub lost: usize,
    /// From a file's drop until its first START.
    pub wait_ms: Option<Percentiles>,
    /// From a file's END line until the store's `finished_at` of that attempt.
    pub outcome_lag_ms: Option<Percentiles>,
}
/// The services' part of the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UnitsReport {
    /// START lines of each service.
    pub service_starts: BTreeMap<String, usize>,
    /// From a fault on a service's owner until the service started in another process
    /// (a file handed over, a command service's process), by kind.
    pub service_failover_ms: BTreeMap<String, Percentiles>,
    pub files: Option<FileReport>,
}
