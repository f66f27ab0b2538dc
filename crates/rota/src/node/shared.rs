//! What the node's loops and its runners share: who the node is, its lease and the work
//! tokens that end with it, the store, the clock, the metrics and the running fires.

use std::{
    collections::HashMap,
    sync::{atomic::AtomicBool, Arc, Mutex, RwLock},
};

use tokio::time::Instant;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::debug;

use super::{clock::StoreClock, journal, timing::Timing};
use crate::{
    service::ServiceSpec,
    store::{Member, Store},
    task::TaskSpec,
};
use rota_core::lease::Lease;

/// One in-process handler alive (see [`Shared::in_process_run`]).
pub(crate) struct InProcessRun {
    count: Arc<std::sync::atomic::AtomicUsize>,
    slot: Option<super::guard::GuardSlot>,
}

impl Drop for InProcessRun {
    fn drop(&mut self) {
        super::guard::GuardSlot::count_in_process(self.slot, &self.count, false);
    }
}

/// State shared by the node's loops and its runners.
pub(crate) struct Shared {
    pub store: Arc<dyn Store>,
    pub timing: Timing,
    pub tasks: HashMap<String, Arc<TaskSpec>>,
    pub services: HashMap<String, ServiceSpec>,
    pub(super) member: RwLock<Member>,
    pub(super) lease: Mutex<Lease<Instant>>,
    pub clock: StoreClock,
    /// Cancelled when the lease is lost: every runner and running fire of this term stops.
    pub(super) work: Mutex<CancellationToken>,
    /// Set by the heartbeat when the store refused a renewal: the registration is gone.
    pub(super) expired: AtomicBool,
    pub(super) store_error: Mutex<Option<String>>,
    /// Every running fire, so a graceful stop can wait for them.
    pub fires: TaskTracker,
    /// The fires this process runs now, `(task, instant)`: a `running` record of this
    /// incarnation that is not here was claimed but never started (its reply was lost).
    pub running: Mutex<std::collections::HashSet<(String, i64)>>,
    /// Service items `(service, item)` whose handling began in this process and whose end
    /// is not recorded yet: a record of this incarnation that is not here was claimed but
    /// never handed to a handler (its instance ended before the claim's reply came).
    pub items_begun: Mutex<std::collections::HashSet<(String, String)>>,
    /// Runs of each task going on here, across runners and terms (contract 11).
    pub active: Arc<super::active::ActiveRuns>,
    /// This node's side of the process's work guard (contract 12); `None` without one.
    pub guard: Option<super::guard::GuardSlot>,
    /// In-process handlers alive (library closures, HTTP calls), told to the guard.
    pub(super) in_process: Arc<std::sync::atomic::AtomicUsize>,
    /// The last renewal seen of each registration, and who made it: see
    /// [`Shared::wait_out_lease`].
    pub(super) renewals: Mutex<HashMap<(String, i64), SeenRenewal>>,
    /// When this node (this process) started: the bound for registrations never seen.
    pub(super) started: Instant,
    /// New runners that have not finished taking over their task: the supervisor starts
    /// more only while there are few, so that taking over thousands of tasks queues tasks
    /// to start rather than thousands of waiting runners.
    pub taking_over: Arc<std::sync::atomic::AtomicUsize>,
    /// Claims and outcomes go to the store in batches.
    pub batcher: super::batch::Batcher,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Events for the cluster's journal, written in the background.
    pub journal: journal::Journal,
    /// Where the cluster's alerts go while this node leads.
    pub alerts: Arc<Vec<crate::alerts::AlertSpec>>,
}

/// How long [`Shared::wait_out_lease`] looks for proof that a dead node of this host runs
/// nothing, and how often.
const PROOF_WINDOW: std::time::Duration = std::time::Duration::from_millis(100);
const PROOF_STEP: std::time::Duration = std::time::Duration::from_millis(5);

/// A registration's last renewal as this node saw it.
#[derive(Debug, Clone)]
pub(super) struct SeenRenewal {
    pub heartbeat_at_ms: i64,
    /// When this node first saw it, on its monotonic clock.
    pub seen_at: Instant,
    pub host: String,
    pub process: String,
    pub guard: Option<String>,
}

impl Shared {
    pub fn member(&self) -> Member {
        self.member.read().unwrap().clone()
    }

    /// May this node start work now? Checked right before every claim (contract 4).
    pub fn lease_valid(&self) -> bool {
        self.lease.lock().unwrap().is_valid(Instant::now())
    }

    /// How many times this node's lease was lost so far, even if restored since (see
    /// [`rota_core::lease::Lease::breaks`]).
    pub fn lease_breaks(&self) -> u64 {
        self.lease.lock().unwrap().breaks()
    }

    pub fn work_token(&self) -> CancellationToken {
        self.work.lock().unwrap().clone()
    }

    /// Notes the renewals a view shows, read by `received` (contract 12 under store clock
    /// steps, see [`Shared::wait_out_lease`]).
    pub(super) fn saw_renewals(&self, view: &crate::store::ClusterView, received: Instant) {
        let mut renewals = self.renewals.lock().unwrap();
        renewals.retain(|(node, incarnation), _| {
            view.nodes
                .iter()
                .any(|n| &n.node == node && n.incarnation == *incarnation)
        });
        for n in &view.nodes {
            let key = (n.node.clone(), n.incarnation);
            match renewals.get(&key) {
                Some(seen) if seen.heartbeat_at_ms == n.heartbeat_at_ms => {}
                _ => {
                    renewals.insert(
                        key,
                        SeenRenewal {
                            heartbeat_at_ms: n.heartbeat_at_ms,
                            seen_at: received,
                            host: n.host.clone(),
                            process: n.process.clone(),
                            guard: n.guard.clone(),
                        },
                    );
                }
            }
        }
    }

    /// Waits until the lease of the registration `(node, incarnation)` is over by this
    /// node's own clock, before starting work that it may still run (a fire it began, a
    /// service instance). The store says it is dead, but a step of the store's clock can
    /// say so early: its last renewal was sent before this node first saw it, so its own
    /// deadline (and its work guard's) passed `node_timeout` after that at the latest.
    /// Without a step this ends about when the store expired it. `false` if `stop` fired.
    ///
    /// It ends at once when the registration is proven to run nothing any more: made on
    /// this host by a process that is gone, whose work guard is gone too
    /// ([`identity::runs_nothing`](super::identity::runs_nothing)). The guard exits moments
    /// after its node: it is looked for during [`PROOF_WINDOW`].
    pub async fn wait_out_lease(
        &self,
        node: &str,
        incarnation: i64,
        stop: &CancellationToken,
    ) -> bool {
        let seen = self
            .renewals
            .lock()
            .unwrap()
            .get(&(node.to_string(), incarnation))
            .cloned();
        // Renewals are noted only after this node started: `started` bounds the unseen.
        let over = seen.as_ref().map_or(self.started, |s| s.seen_at) + self.timing.node_timeout;
        let proven = || {
            seen.as_ref().is_some_and(|s| {
                super::identity::runs_nothing(&s.host, &s.process, s.guard.as_deref())
            })
        };
        let looking_until = Instant::now() + PROOF_WINDOW;
        while Instant::now() < looking_until.min(over) {
            if proven() {
                debug!(
                    node,
                    incarnation, "a dead node of this host runs nothing: not waiting out its lease"
                );
                return true;
            }
            tokio::select! {
                _ = tokio::time::sleep(PROOF_STEP) => {}
                _ = stop.cancelled() => return false,
            }
        }
        if over > Instant::now() {
            debug!(
                node,
                incarnation,
                wait_ms = (over - Instant::now()).as_millis() as u64,
                "waiting out a dead node's lease on this node's clock"
            );
        }
        tokio::select! {
            _ = tokio::time::sleep_until(over) => true,
            _ = stop.cancelled() => false,
        }
    }

    /// A renewal sent at `sent` was accepted just now: extend the lease (noting a break if it
    /// ran out meanwhile) and tell the work guard its new deadline.
    pub(super) fn renew_lease(&self, sent: Instant) {
        self.lease.lock().unwrap().renewed(sent, Instant::now());
        self.publish_deadline();
    }

    /// Tells the work guard the deadline of the lease held now (after every renewal).
    pub(super) fn publish_deadline(&self) {
        if let Some(slot) = self.guard {
            let deadline = self.lease.lock().unwrap().valid_until();
            slot.set_deadline(
                deadline.map(|d| super::guard::guard_deadline(d, self.timing.fence_margin)),
            );
        }
    }

    /// Runs a handler's work as this node's, for the work guard (contract 12): the command
    /// groups it starts are watched under this node's slot, and an in-process handler is
    /// counted while alive (the guard ends the process if one outlives the lease).
    pub async fn guarded<F: std::future::Future>(&self, in_process: bool, work: F) -> F::Output {
        super::guard::in_slot(self.guard, async {
            let _alive = in_process.then(|| self.in_process_run());
            work.await
        })
        .await
    }

    /// Counts an in-process handler until the returned value is dropped.
    pub(super) fn in_process_run(&self) -> InProcessRun {
        super::guard::GuardSlot::count_in_process(self.guard, &self.in_process, true);
        InProcessRun {
            count: self.in_process.clone(),
            slot: self.guard,
        }
    }

    pub(super) fn set_store_error(&self, error: Option<String>) {
        *self.store_error.lock().unwrap() = error;
    }
}
