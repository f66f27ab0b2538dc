//! The node's loops. This file starts a node (its join) and runs its rounds; each round
//! observes the cluster and, on the leader, places tasks ([`leader`], with the rolling
//! restarts it drives in [`rolling`]); every round then supervises this node's runners
//! ([`supervisor`]). Beside the rounds, the heartbeat and the fence watchdog keep the node
//! alive or fence it ([`liveness`]).

mod definitions;
mod leader;
mod liveness;
mod rolling;
mod sessions;
pub(super) mod start;
mod supervisor;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, RwLock,
    },
    time::Duration,
};

use tokio::{sync::watch, time::Instant};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, error, info, warn, Instrument};

use super::{
    clock::StoreClock,
    commands::{Commands, LogLevelControl, StopReason},
    handle::{NodeHandle, NodeStatus},
    identity, journal, runner,
    shared::Shared,
    timing::Timing,
};
use crate::{
    error::{Error, Result},
    service::ServiceSpec,
    store::{
        AckFilter, Assignment, AssignmentChange, ClusterView, Declaration, JoinOutcome,
        JoinRequest, LeaderWrite, Member, Store,
    },
    task::TaskSpec,
};
use rota_core::{
    control::{self, Ack, AckState, CommandBody, Operation, RollingStep, Scope},
    lease::Lease,
    placement::{self, DeclaredPlacement, NodeInfo, NodeMeta, Owner, PlaceContext, Resolver},
};

/// What a service declares in place of a schedule (shown by `rota status`).
pub const SERVICE_SCHEDULE: &str = "service";

/// Longest wait for one store call of the main loop (join, leave, mark leaving).
const STORE_CALL_BOUND: Duration = Duration::from_secs(5);

/// How long after a registration's expiry, by the estimate of the store's clock, a node
/// looks again: the estimate is off by up to half a store read.
const EXPIRY_SLACK: Duration = Duration::from_millis(5);

/// Runs a long computation (placing 100,000 tasks takes a few hundred milliseconds) off the
/// runtime's workers, on a thread of the blocking pool, so that the heartbeat and the runners
/// never wait behind it. On a current-thread runtime (tests) it runs inline.
///
/// Not `block_in_place`: it turns the calling worker into a blocking thread, which exits
/// once idle, and a child process gets its parent-death signal when the *thread* that
/// spawned it exits (`PR_SET_PDEATHSIG`, see `kinds::command`). A command service started
/// from that worker was killed ten seconds after its node placed tasks, while its own
/// children went on, and the service was started again beside them.
async fn cpu_bound<R: Send + 'static>(compute: impl FnOnce() -> R + Send + 'static) -> R {
    match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread => {
            match tokio::task::spawn_blocking(compute).await {
                Ok(result) => result,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
        _ => compute(),
    }
}

fn new_incarnation() -> i64 {
    // Positive and never 0 (0 marks a vacant leadership); below 2^53, so JSON readers that
    // hold numbers as doubles (JavaScript: the dashboard, most scripts) read it exactly.
    (rand::random::<u64>() >> 11).max(1) as i64
}

/// What this process asks for when `member` joins: its timeout, identity, declarations,
/// session lock and work guard.
fn join_request(
    member: &Member,
    timing: &Timing,
    declared: &[Declaration],
    meta: &NodeMeta,
    session_key: Option<i64>,
) -> JoinRequest {
    JoinRequest {
        member: member.clone(),
        timeout_ms: timing.node_timeout.as_millis() as i64,
        host: identity::host_name(),
        process: identity::process_fingerprint(),
        declared: declared.to_vec(),
        meta: meta.clone(),
        replaces: None,
        session_key,
        guard: crate::node::guard::WorkGuard::get().map(|g| g.fingerprint().to_string()),
    }
}

/// Joins with `req`, replacing the registration of our own crashed predecessor if that is
/// what holds the id; refuses if a live, different process holds it (contract 10). `ours`:
/// earlier incarnations of this very node whose join may have committed although its reply
/// was lost: a registration of one of them is replaced, not taken for another node's. One
/// whose incarnation is `req`'s is this join's own, already done.
async fn join(
    store: &dyn Store,
    mut req: JoinRequest,
    reexec_of: Option<i64>,
    ours: &[i64],
) -> Result<i64> {
    let member = req.member.clone();
    loop {
        match store.join(&req).await? {
            JoinOutcome::Joined { now_ms } => return Ok(now_ms),
            JoinOutcome::Occupied(existing)
                if existing.incarnation == member.incarnation
                    && existing.process == req.process =>
            {
                // An earlier try of this very join committed; its reply was lost.
                info!(node = %member.node, incarnation = member.incarnation, "joined (the first reply was lost)");
                return store.now_ms().await;
            }
            JoinOutcome::Occupied(existing)
                if req.replaces.is_none()
                    && (identity::is_dead_predecessor(&existing.host, &existing.process)
                        || identity::is_own_before_reexec(&existing, reexec_of)
                        || (ours.contains(&existing.incarnation)
                            && existing.process == req.process)) =>
            {
                info!(node = %member.node, old_incarnation = existing.incarnation, "replacing the registration of this node's crashed predecessor");
                req.replaces = Some(existing.incarnation);
            }
            JoinOutcome::Occupied(existing) => {
                let pid = super::identity::fingerprint_pid(&existing.process);
                return Err(Error::DuplicateNode {
                    cluster: member.cluster.clone(),
                    node: member.node.clone(),
                    detail: format!(
                        "registered by pid {pid} on host {}, incarnation {}, heartbeating within its {} ms timeout",
                        existing.host, existing.incarnation, existing.timeout_ms
                    ),
                });
            }
        }
    }
}

/// What a registration declares, as the leader keeps it.
#[derive(Debug, Clone, Default)]
struct Declared {
    /// Of its set: registrations with one digest share `tasks`.
    digest: String,
    /// Task name -> definition hash.
    tasks: Arc<BTreeMap<String, String>>,
    /// Labels, placement specs (the set's) and whether it runs the cluster's definitions.
    meta: NodeMeta,
}

/// What a placement depends on, besides the assignments and declarations that the
/// generation covers: the generation and each live node's id, incarnation and leaving flag.
type PlacementInputs = (i64, Vec<(String, i64, bool)>);

/// The cluster's own tasks and services, compiled from the last `define` command this node
/// folded.
#[derive(Default)]
struct Defined {
    /// The `define` command they come from (0: none yet).
    version: i64,
    tasks: HashMap<String, Arc<TaskSpec>>,
    services: HashMap<String, ServiceSpec>,
}

struct RunnerHandle {
    /// Tells this runner's end from an earlier runner's of the same task.
    id: u64,
    token: i64,
    /// The definition it runs ([`TaskSpec::definition_hash`]): a changed definition retires
    /// it (what it started finishes under the old one) and starts a runner of the new.
    definition: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// A task's run-now requests, as the command log folds them (none for a service).
    runs: Option<watch::Sender<Vec<rota_core::control::ManualRun>>>,
}

/// A runner that parked (see [`Timing::park_after`]), kept by the supervisor.
struct ParkedRunner {
    token: i64,
    definition: String,
    /// The task's run-now requests as the runner last saw them: others resume it.
    seen_runs: Vec<rota_core::control::ManualRun>,
    state: runner::Parked,
}

/// A runner's end, sent by its task: with its state when it parked.
struct RunnerExit {
    task: String,
    id: u64,
    parked: Option<runner::Parked>,
}

/// What supervision depends on besides the runners' ends (see `supervision_inputs`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct SupervisionInputs {
    assignments: u64,
    incarnation: i64,
    lease_valid: bool,
    commands: i64,
    caught_up: bool,
    definitions: i64,
}

struct Runtime {
    shared: Arc<Shared>,
    declared: Vec<Declaration>,
    /// Labels and placement specs, registered with the declarations.
    meta: NodeMeta,
    resolver: Arc<dyn Resolver>,
    resolvers: BTreeMap<String, Arc<dyn Resolver>>,
    status: watch::Sender<NodeStatus>,
    runners: HashMap<String, RunnerHandle>,
    /// Incarnations of this node whose rejoin failed since the last success: one may have
    /// committed although its reply was lost (see [`join`]).
    failed_joins: Vec<i64>,
    /// Runners parked until shortly before their next instant, by task, and when each is
    /// to be resumed (their next instant, store time).
    parked: HashMap<String, ParkedRunner>,
    wakes: BTreeSet<(i64, String)>,
    /// Runners' ends, as their tasks report them.
    exits: (
        tokio::sync::mpsc::UnboundedSender<RunnerExit>,
        tokio::sync::mpsc::UnboundedReceiver<RunnerExit>,
    ),
    /// The inputs of the last supervision that looked at every task.
    supervised: Option<SupervisionInputs>,
    /// Owned tasks whose runner the last round did not start (a takeover starts at most
    /// `MAX_TAKING_OVER` at once).
    starts_pending: bool,
    /// Runners spawned so far (their ids).
    spawned: u64,
    /// Counts changes to `assignments`.
    assignments_version: u64,
    /// Runners told to stop that have not ended yet, by task.
    stopping: HashMap<String, Vec<tokio::task::JoinHandle<()>>>,
    view: Option<ClusterView>,
    view_at: Option<Instant>,
    generation: i64,
    assignments: Vec<Assignment>,
    /// What each registration declares, read when it appears (only while leading).
    declarations: HashMap<(String, i64), Declared>,
    /// Our leadership epoch, while we lead.
    epoch: Option<i64>,
    /// The inputs of the last placement round that changed nothing.
    settled: Option<PlacementInputs>,
    /// The last placement problems logged, so each is logged once.
    reported: String,
    last_purge: Instant,
    /// The history purge in progress, beside the leader's rounds (see `after_placement`).
    purging: Option<tokio::task::JoinHandle<()>>,
    /// The alert sender, while this node leads and has sinks; stopped with the leadership.
    alerting: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    /// Consecutive failed observations (store unreachable).
    failures: u32,
    /// Cluster commands: the folded log and what is left to apply here.
    commands: Commands,
    /// Set by a restart or shutdown command: leave gracefully, then end with this reason.
    exit: Option<StopReason>,
    /// The live registrations counted by the last placement round that was written, or that
    /// found nothing to change (while leading).
    placed_with: BTreeSet<(String, i64)>,
    /// When the leader last looked at the rolling restarts in progress.
    rolling_checked: Option<Instant>,
    /// Deaths this node recorded in the journal while leading.
    deaths_reported: HashSet<(String, i64)>,
    /// The cluster's own definitions, compiled (empty without a compiler).
    defined: Defined,
    compiler: Option<super::DefinitionCompiler>,
    /// The definitions version the supervisor last compared its runners with.
    supervised_version: i64,
    /// The last run-now request the runners were told of (see `ControlState::last_run`).
    runs_pushed: i64,
    /// This process's session lock, for all its incarnations; `None` without one.
    session: Option<crate::store::SessionHold>,
    /// The other nodes' session locks this node watches.
    watches: sessions::Watches,
}

impl Runtime {
    /// Runs the rounds until the node stops, then ends the loops beside them (`background`).
    async fn run(
        mut self,
        graceful: CancellationToken,
        forced: CancellationToken,
        stop_background: CancellationToken,
    ) -> Result<StopReason> {
        let result = self.main_loop(&graceful, &forced).await;
        stop_background.cancel();
        result.map(|()| self.exit.unwrap_or(StopReason::Stopped))
    }

    async fn main_loop(
        &mut self,
        graceful: &CancellationToken,
        forced: &CancellationToken,
    ) -> Result<()> {
        let watch = self.shared.timing.watch_interval;
        let mut leaving_since: Option<Instant> = None;
        // Pushed changes where the store offers them; polling remains the safety net.
        let mut pushed = self
            .shared
            .store
            .subscribe(&self.shared.member().cluster)
            .await;
        loop {
            if forced.is_cancelled() {
                return self.finish(true).await;
            }
            if (graceful.is_cancelled() || self.exit.is_some()) && leaving_since.is_none() {
                info!(reason = ?self.exit.unwrap_or(StopReason::Stopped), "graceful stop: handing tasks over");
                leaving_since = Some(Instant::now());
                let member = self.shared.member();
                let marked =
                    tokio::time::timeout(STORE_CALL_BOUND, self.shared.store.mark_leaving(&member))
                        .await;
                if !matches!(marked, Ok(Ok(()))) {
                    warn!("could not mark the node as leaving; others will take over on expiry");
                }
                self.view_at = None; // observe at once
            }
            self.tick(leaving_since.is_some()).await;
            if let Some(since) = leaving_since {
                if self.handover_done(since) {
                    return self.finish(false).await;
                }
            }
            let pause = match self.failures {
                // A new leadership or a rejoin: observe again at once.
                0 if self.view_at.is_none() => Duration::ZERO,
                0 if self.watches.hot() => sessions::HOT_WATCH,
                // The store pushes changes: the poll is only the safety net, and the view
                // read every heartbeat carries the generation anyway. 100 nodes polling
                // every 50 ms made 2,000 of PostgreSQL's 3,400 reads a second at rest.
                0 if pushed.is_some() => watch.max(self.shared.timing.heartbeat),
                0 => watch,
                // Back off while the store is unreachable, with jitter so that nodes do not
                // hammer a recovering database in step.
                n => {
                    let base = (watch * 2u32.saturating_pow(n.min(5))).min(Duration::from_secs(1));
                    let jitter = rand::random::<u64>() % (base.as_millis() as u64 / 2 + 1);
                    base + Duration::from_millis(jitter)
                }
            };
            // A registration that stops renewing expires at a time the view tells: look
            // again right then, not up to a poll interval later (the fast profile polls
            // every 50 ms, a fifth of its failover).
            let expiry = match self.failures {
                0 => self
                    .next_expiry()
                    .map(|at| at.saturating_duration_since(Instant::now())),
                _ => None,
            };
            let (pause, at_expiry) = match expiry {
                Some(until) if until < pause => (until, true),
                _ => (pause, false),
            };
            let push = async {
                match pushed.as_mut() {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => if at_expiry {
                    self.view_at = None;
                },
                live = push => match live {
                    true => self.view_at = None,
                    // The push ended (a ZooKeeper session's end): poll as without one.
                    false => pushed = None,
                },
                _ = self.watches.ended() => self.view_at = None,
                _ = graceful.cancelled(), if leaving_since.is_none() => {}
                _ = forced.cancelled() => {}
            }
        }
    }

    /// The local instant just after the first expiry [`ClusterView::next_expiry_ms`] names,
    /// by this node's estimate of the store's clock.
    fn next_expiry(&self) -> Option<Instant> {
        let me = self.shared.member();
        let expiry = self.view.as_ref()?.next_expiry_ms(&me.node)?;
        Some(self.shared.clock.instant_of(expiry) + EXPIRY_SLACK)
    }

    /// One round: keep membership, observe, lead, supervise.
    async fn tick(&mut self, leaving: bool) {
        let tick_started = Instant::now();
        if !self.shared.lease_valid() {
            self.fence();
            if self.shared.expired.load(Ordering::SeqCst) && !leaving {
                self.rejoin().await;
            }
        } else if self.shared.work_token().is_cancelled() {
            // A late renewal restored the lease before the store expired it: a new term.
            // Parked runners belong to the old one: supervise every task again.
            *self.shared.work.lock().unwrap() = CancellationToken::new();
            self.supervised = None;
        }
        // Bounded: a store that does not answer must not stall the loop (the fence watchdog
        // acts on its own regardless).
        let bound = self.shared.timing.node_timeout.max(Duration::from_secs(2));
        // The first observation reads every assignment: 100,000 reads on ZooKeeper take
        // longer than a round's bound, and cut short they would start over at every round.
        let observe_bound = if self.generation < 0 {
            bound * 15
        } else {
            bound
        };
        let observing = Instant::now();
        let observed = tokio::time::timeout(observe_bound, self.observe()).await;
        let failed = !matches!(observed, Ok(Ok(())));
        self.shared
            .metrics
            .store_call("observe", observing.elapsed().as_secs_f64(), failed);
        match observed {
            Ok(Ok(())) => self.failures = 0,
            Ok(Err(e)) => self.observation_failed(e.to_string()),
            Err(_) => self
                .observation_failed(format!("no answer from the store within {observe_bound:?}")),
        }
        if self.failures == 0 && self.exit.is_none() && self.commands.has_queued() {
            let me = self.shared.member();
            let owns_nothing = self.owned().is_empty();
            match tokio::time::timeout(
                bound,
                self.commands.apply(
                    self.shared.store.as_ref(),
                    &me,
                    owns_nothing,
                    &self.shared.metrics,
                ),
            )
            .await
            {
                Ok(Ok(exit)) => self.exit = exit,
                Ok(Err(e)) => warn!(error = %e, "applying cluster commands failed; retrying"),
                Err(_) => warn!("applying cluster commands timed out; retrying"),
            }
        }
        // Place, and choose what to watch, only on fresh observations: nothing else can
        // change either.
        let fresh = self.view_at.is_some_and(|at| at >= tick_started);
        if self.shared.lease_valid() && self.failures == 0 && fresh {
            // Placing thousands of tasks takes one long transaction: a wider bound.
            match tokio::time::timeout(bound * 15, self.lead(leaving)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "placement round failed"),
                Err(_) => warn!("placement round timed out"),
            }
        }
        let supervised_all = self.supervise();
        self.publish_status(supervised_all);
        if fresh {
            self.watch_sessions();
        }
    }

    fn observation_failed(&mut self, error: String) {
        self.failures += 1;
        if self.failures == 1 || self.failures % 50 == 0 {
            warn!(error = %error, failures = self.failures, "cannot read the cluster from the store; retrying with backoff");
        }
        self.shared.set_store_error(Some(error));
    }

    /// Publishes the node's status; the owned tasks only when `owned_changed` (they are
    /// computed over every assignment).
    fn publish_status(&self, owned_changed: bool) {
        let me = self.shared.member();
        let owned = owned_changed.then(|| self.owned());
        let active = self.shared.lease_valid();
        let leader = self.epoch.is_some();
        let store_error = self.shared.store_error.lock().unwrap().clone();
        let generation = self.generation.max(0);
        self.status.send_if_modified(|s| {
            let before = (
                s.incarnation,
                s.active,
                s.leader,
                s.generation,
                s.owned.len(),
            );
            let error_changed = s.store_error != store_error;
            s.incarnation = me.incarnation;
            s.active = active;
            s.leader = leader;
            s.generation = generation;
            s.store_error = store_error;
            let owned_changed = match owned {
                Some(owned) if s.owned != owned => {
                    s.owned = owned;
                    true
                }
                _ => false,
            };
            error_changed
                || owned_changed
                || before
                    != (
                        s.incarnation,
                        s.active,
                        s.leader,
                        s.generation,
                        s.owned.len(),
                    )
        });
    }

    /// Stops runners, waits for running fires (or cancels them when forced), leaves.
    async fn finish(&mut self, forced: bool) -> Result<()> {
        if let Some(purge) = self.purging.take() {
            purge.abort();
        }
        if let Some((stop, _)) = self.alerting.take() {
            stop.cancel();
        }
        for (_, parked) in self.parked.drain() {
            parked.state.stop().cancel();
        }
        self.wakes.clear();
        let mut runners = Vec::new();
        for (_, runner) in self.runners.drain() {
            runner.stop.cancel();
            runners.push(runner.task);
        }
        runners.extend(self.stopping.drain().flat_map(|(_, handles)| handles));
        self.shared.fires.close();
        if forced {
            self.shared.work_token().cancel();
        } else if tokio::time::timeout(self.shared.timing.shutdown_grace, self.shared.fires.wait())
            .await
            .is_err()
        {
            warn!("running fires did not finish within the grace period; cancelling them");
            self.shared.work_token().cancel();
        }
        // Cancelled handlers get 5 s to stop (see runner::execute), then their outcome is
        // recorded: wait for both, so no fire of ours is left `running` behind us.
        let _ = tokio::time::timeout(Duration::from_secs(8), self.shared.fires.wait()).await;
        // Runners record how their work ended (a service's instance) before we leave.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            for runner in runners {
                let _ = runner.await;
            }
        })
        .await;
        let me = self.shared.member();
        if let Some(slot) = self.shared.guard {
            slot.set_deadline(None); // nothing of ours runs any more
        }
        match tokio::time::timeout(Duration::from_secs(2), self.shared.store.leave(&me)).await {
            Ok(Ok(())) => {
                info!("left the cluster");
                let event = journal::left(&me, self.shared.clock.now_ms());
                journal::write(self.shared.store.as_ref(), &me.cluster, &event).await;
            }
            Ok(Err(e)) => {
                warn!(error = %e, "could not leave cleanly; the registration will expire")
            }
            Err(_) => warn!("leaving timed out; the registration will expire"),
        }
        // Only once the registration is gone: a watcher that sees the lock free then finds
        // nothing to end (and if the leave failed, nothing of ours runs any more).
        self.watches.stop_all();
        if let Some(hold) = self.session.take() {
            hold.release().await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// A command dies with the thread that spawned it (its parent-death signal): placing
    /// tasks must leave that thread, a runtime worker, alive. With `block_in_place` the
    /// worker became a blocking thread that ended once idle, and took the command with it.
    #[test]
    fn placing_leaves_alive_the_worker_that_spawned_a_command() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_keep_alive(Duration::from_millis(100))
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // Spawned and placed in one task, with no await between: on one thread.
            let mut child = tokio::spawn(async {
                let mut command = tokio::process::Command::new("sleep");
                command.arg("30").kill_on_drop(true);
                crate::kinds::command::die_with_parent(&mut command);
                let child = command.spawn().expect("sleep starts");
                // As long as a large placement: long enough for another thread to take
                // over this worker's queue meanwhile.
                super::cpu_bound(|| std::thread::sleep(Duration::from_millis(300))).await;
                child
            })
            .await
            .unwrap();
            // Ten times the idle threads' keep-alive: a thread that ended took `sleep` along.
            let watched = tokio::time::Instant::now();
            while watched.elapsed() < Duration::from_secs(1) {
                assert!(
                    child.try_wait().unwrap().is_none(),
                    "the command was killed when the thread that spawned it ended"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            child.kill().await.unwrap();
        });
    }
}
