//! The campaign's state: the cluster it runs, its store, the log of faults and exits, and
//! how long it waits for a recovery.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use rand::rngs::StdRng;
use rota_testkit::{clock::FakeClock, proxy::CutProxy, ProcessCluster};

use super::super::bench_store::BenchStore;
use super::check::{Fault, ProcessExit};
use super::workload::RecordTail;

/// A cluster that is not healthy this long after a fault did not recover.
pub(super) const RECOVERY: Duration = Duration::from_secs(60);
/// The nodes' admin API, when operator actions are drawn.
pub(super) struct Admin {
    pub(super) ports: BTreeMap<String, u16>,
    pub(super) token: String,
    pub(super) read_token: String,
}
pub(super) struct Campaign {
    pub(super) run: BenchStore,
    pub(super) cluster: ProcessCluster,
    pub(super) ids: Vec<String>,
    /// The tasks, and the file service when files are dropped: each starts again after a
    /// fault.
    pub(super) tasks: Vec<String>,
    /// The command service, when it runs: one of its processes runs after a fault.
    pub(super) command_service: Option<String>,
    /// The tasks (an operator pauses one of them).
    pub(super) task_names: Vec<String>,
    pub(super) admin: Option<Admin>,
    /// This program: `rota ctl`.
    pub(super) exe: PathBuf,
    /// Each node's proxies to the store's servers (only when cuts or slow links are drawn).
    pub(super) proxies: BTreeMap<String, Vec<CutProxy>>,
    /// Each node's wall clock (only when skews or, on SQLite, store steps are drawn).
    pub(super) clocks: BTreeMap<String, FakeClock>,
    pub(super) tail: RecordTail,
    pub(super) rng: StdRng,
    pub(super) faults: Vec<Fault>,
    pub(super) exits: Vec<ProcessExit>,
}
