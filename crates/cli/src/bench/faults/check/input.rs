//! What the checker is given besides the record: the faults the campaign caused, the node
//! processes that ended, the tasks, the store's history and the files.

use std::collections::BTreeMap;

use rota::store::FireRecord;
use serde::Serialize;

use super::record::{RecordLine, UnitLine};

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
    /// The server's side of one node's connections closed by its proxy, the node's side
    /// kept open and silent, for longer than the lease: the server ends its sessions (and
    /// lets its session lock go) while the node lives on, cut off.
    Sever,
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
            FaultKind::Sever => "sever",
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

/// Where a dropped file was at the end of the campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Place {
    Done,
    Failed,
    Inbox,
    Missing,
}
/// A file's item record in the store.
#[derive(Debug, Clone, Serialize)]
pub struct ItemRow {
    /// The file's name (the item key up to its first `|`).
    pub name: String,
    pub node: String,
    pub token: i64,
    pub attempt: i64,
    pub outcome: String,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub message: Option<String>,
}
/// The `file_inbound` workload, as the checker needs to know it.
pub struct FilesInput<'a> {
    pub service: &'a str,
    /// Each file the campaign dropped, and when (wall clock, Unix ms: its rename into place).
    pub dropped: &'a [(String, i64)],
    pub items: &'a [ItemRow],
    pub places: &'a BTreeMap<String, Place>,
}
