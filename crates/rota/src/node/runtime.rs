//! The node's loops: membership (heartbeat and fence watchdog), observation and leadership,
//! and the supervisor that keeps one runner per owned task.

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
    identity, journal, runner,
    shared::Shared,
    NodeHandle, NodeStatus, Timing,
};
use crate::{
    core::{
        control::{self, Ack, AckState, CommandBody, Operation, RollingStep, Scope},
        lease::Lease,
        placement::{self, DeclaredPlacement, NodeInfo, NodeMeta, Owner, PlaceContext, Resolver},
    },
    service::ServiceSpec,
    store::{
        AckFilter, Assignment, AssignmentChange, ClusterView, Declaration, JoinOutcome,
        JoinRequest, LeaderWrite, Member, Store,
    },
    task::TaskSpec,
    Error, Result,
};

/// What a service declares in place of a schedule (shown by `rota status`).
pub const SERVICE_SCHEDULE: &str = "service";

pub(crate) struct NodeConfig {
    pub id: String,
    pub cluster: String,
    pub timing: Timing,
    pub tasks: Vec<TaskSpec>,
    pub services: Vec<ServiceSpec>,
    pub resolver: Arc<dyn Resolver>,
    /// Custom resolvers by name, used while this node leads.
    pub resolvers: BTreeMap<String, Arc<dyn Resolver>>,
    /// This node's labels, published with its declarations.
    pub labels: BTreeMap<String, String>,
    pub log_level: Option<LogLevelControl>,
    /// The incarnation this process had before it re-executed itself (a restart command).
    pub reexec_of: Option<i64>,
}

pub(crate) async fn start(config: NodeConfig, store: Arc<dyn Store>) -> Result<NodeHandle> {
    let NodeConfig {
        id,
        cluster,
        timing,
        tasks,
        services,
        resolver,
        resolvers,
        labels,
        log_level,
        reexec_of,
    } = config;
    let declared: Vec<Declaration> = tasks
        .iter()
        .map(|t| Declaration {
            name: t.name.clone(),
            hash: t.definition_hash(),
            schedule: t.schedule.describe(),
        })
        .chain(services.iter().map(|s| Declaration {
            name: s.name.clone(),
            hash: s.definition_hash(),
            schedule: SERVICE_SCHEDULE.to_string(),
        }))
        .collect();
    let meta = NodeMeta {
        labels,
        placement: DeclaredPlacement::from_tasks(
            tasks
                .iter()
                .map(|t| (t.name.as_str(), &t.placement))
                .chain(services.iter().map(|s| (s.name.as_str(), &s.placement))),
        ),
    };
    let member = Member {
        cluster,
        node: id,
        incarnation: new_incarnation(),
    };
    let sent = Instant::now();
    let now_ms = crate::store::retry_transient("joining", || {
        join(
            store.as_ref(),
            &member,
            &timing,
            &declared,
            &meta,
            reexec_of,
            &[],
        )
    })
    .await?;
    let mut lease = Lease::new(timing.node_timeout, timing.fence_margin);
    lease.renewed(sent, Instant::now());
    let shared = Arc::new(Shared {
        store: store.clone(),
        tasks: tasks.into_iter().map(|t| (t.name.clone(), t)).collect(),
        services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
        member: RwLock::new(member.clone()),
        lease: Mutex::new(lease),
        clock: StoreClock::new(now_ms, sent),
        work: Mutex::new(CancellationToken::new()),
        expired: AtomicBool::new(false),
        store_error: Mutex::new(None),
        fires: TaskTracker::new(),
        running: Mutex::default(),
        items_begun: Mutex::default(),
        active: Arc::default(),
        guard: super::guard::WorkGuard::get().map(|g| g.slot()),
        in_process: Arc::default(),
        renewals: Mutex::default(),
        started: Instant::now(),
        startups: tokio::sync::Semaphore::new(2),
        batcher: super::batch::Batcher::spawn(store.clone(), member.cluster.clone()),
        metrics: Arc::default(),
        journal: journal::Journal::spawn(store.clone(), member.cluster.clone()),
        timing,
    });
    shared.publish_deadline();
    shared
        .journal
        .record(journal::joined(&member, now_ms, &identity::host_name()));
    info!(node = %member.node, cluster = %member.cluster, incarnation = member.incarnation, store = shared.store.kind(), "joined");
    let initial = NodeStatus {
        incarnation: member.incarnation,
        active: true,
        leader: false,
        owned: vec![],
        store_error: None,
        generation: 0,
    };
    let (status_tx, status_rx) = watch::channel(initial);
    let shared_metrics = shared.metrics.clone();
    let graceful = CancellationToken::new();
    let forced = CancellationToken::new();
    let runtime = Runtime {
        shared,
        declared,
        meta,
        resolver,
        resolvers,
        status: status_tx,
        runners: HashMap::new(),
        failed_joins: Vec::new(),
        stopping: HashMap::new(),
        view: None,
        view_at: None,
        generation: -1,
        assignments: Vec::new(),
        declarations: HashMap::new(),
        epoch: None,
        settled: None,
        reported: String::new(),
        last_purge: Instant::now(),
        purging: None,
        failures: 0,
        commands: Commands::new(log_level),
        exit: None,
        placed_with: BTreeSet::new(),
        rolling_checked: None,
        deaths_reported: HashSet::new(),
    };
    let task = tokio::spawn(runtime.run(graceful.clone(), forced.clone()));
    Ok(NodeHandle {
        metrics: shared_metrics,
        store,
        cluster: member.cluster.clone(),
        near: Arc::default(),
        graceful,
        forced,
        status: status_rx,
        task,
    })
}

/// Longest wait for one store call of the main loop (join, leave, mark leaving).
const STORE_CALL_BOUND: Duration = Duration::from_secs(5);

fn new_incarnation() -> i64 {
    // Positive and never 0 (0 marks a vacant leadership); below 2^53, so JSON readers that
    // hold numbers as doubles (JavaScript: the dashboard, most scripts) read it exactly.
    (rand::random::<u64>() >> 11).max(1) as i64
}

/// Joins, replacing the registration of our own crashed predecessor if that is what holds
/// the id; refuses if a live, different process holds it (contract 10). `ours`: earlier
/// incarnations of this very node whose join may have committed although its reply was
/// lost: a registration of one of them is replaced, not taken for another node's. One
/// whose incarnation is `member`'s is this join's own, already done.
async fn join(
    store: &dyn Store,
    member: &Member,
    timing: &Timing,
    declared: &[Declaration],
    meta: &NodeMeta,
    reexec_of: Option<i64>,
    ours: &[i64],
) -> Result<i64> {
    let mut req = JoinRequest {
        member: member.clone(),
        timeout_ms: timing.node_timeout.as_millis() as i64,
        host: identity::host_name(),
        process: identity::process_fingerprint(),
        declared: declared.to_vec(),
        meta: meta.clone(),
        replaces: None,
    };
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

/// What a placement depends on, besides the assignments and declarations that the
/// generation covers: the generation and each live node's id, incarnation and leaving flag.
type PlacementInputs = (i64, Vec<(String, i64, bool)>);

struct RunnerHandle {
    token: i64,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
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
    /// Runners told to stop that have not ended yet, by task.
    stopping: HashMap<String, Vec<tokio::task::JoinHandle<()>>>,
    view: Option<ClusterView>,
    view_at: Option<Instant>,
    generation: i64,
    assignments: Vec<Assignment>,
    /// Declared task hashes of each registration, re-read when the generation changes.
    declarations: HashMap<(String, i64), (BTreeMap<String, String>, NodeMeta)>,
    /// Our leadership epoch, while we lead.
    epoch: Option<i64>,
    /// The inputs of the last placement round that changed nothing.
    settled: Option<PlacementInputs>,
    /// The last placement problems logged, so each is logged once.
    reported: String,
    last_purge: Instant,
    /// The history purge in progress, beside the leader's rounds (see `after_placement`).
    purging: Option<tokio::task::JoinHandle<()>>,
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
}

impl Runtime {
    async fn run(
        mut self,
        graceful: CancellationToken,
        forced: CancellationToken,
    ) -> Result<StopReason> {
        let stop_background = CancellationToken::new();
        tokio::spawn(heartbeat_loop(self.shared.clone(), stop_background.clone()));
        tokio::spawn(fence_watchdog(self.shared.clone(), stop_background.clone()));
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
                0 => watch,
                // Back off while the store is unreachable, with jitter so that nodes do not
                // hammer a recovering database in step.
                n => {
                    let base = (watch * 2u32.saturating_pow(n.min(5))).min(Duration::from_secs(1));
                    let jitter = rand::random::<u64>() % (base.as_millis() as u64 / 2 + 1);
                    base + Duration::from_millis(jitter)
                }
            };
            let push = async {
                let closed = match pushed.as_mut() {
                    Some(rx) => rx.changed().await.is_err(),
                    None => true,
                };
                if closed {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = push => self.view_at = None,
                _ = graceful.cancelled(), if leaving_since.is_none() => {}
                _ = forced.cancelled() => {}
            }
        }
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
            *self.shared.work.lock().unwrap() = CancellationToken::new();
        }
        // Bounded: a store that does not answer must not stall the loop (the fence watchdog
        // acts on its own regardless).
        let bound = self.shared.timing.node_timeout.max(Duration::from_secs(2));
        let observing = Instant::now();
        let observed = tokio::time::timeout(bound, self.observe()).await;
        let failed = !matches!(observed, Ok(Ok(())));
        self.shared
            .metrics
            .store_call("observe", observing.elapsed().as_secs_f64(), failed);
        match observed {
            Ok(Ok(())) => self.failures = 0,
            Ok(Err(e)) => self.observation_failed(e.to_string()),
            Err(_) => self.observation_failed(format!("no answer from the store within {bound:?}")),
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
        // Place only on fresh observations: nothing else can change the decision.
        if self.shared.lease_valid()
            && self.failures == 0
            && self.view_at.is_some_and(|at| at >= tick_started)
        {
            // Placing thousands of tasks takes one long transaction: a wider bound.
            match tokio::time::timeout(bound * 15, self.lead(leaving)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "placement round failed"),
                Err(_) => warn!("placement round timed out"),
            }
        }
        self.supervise();
        self.publish_status();
    }

    fn observation_failed(&mut self, error: String) {
        self.failures += 1;
        if self.failures == 1 || self.failures % 50 == 0 {
            warn!(error = %error, failures = self.failures, "cannot read the cluster from the store; retrying with backoff");
        }
        self.shared.set_store_error(Some(error));
    }

    /// Lost the lease: stop starting work and cancel running work now (contract 4).
    fn fence(&mut self) {
        let work = self.shared.work_token();
        if !work.is_cancelled() {
            warn!("lease lost: stopping all work");
            work.cancel();
        }
        let tasks: Vec<String> = self.runners.keys().cloned().collect();
        for task in tasks {
            self.retire(&task);
        }
        self.epoch = None;
    }

    /// Our registration expired in the store: come back as a new incarnation.
    async fn rejoin(&mut self) {
        let old = self.shared.member();
        let member = Member {
            incarnation: new_incarnation(),
            ..old.clone()
        };
        let sent = Instant::now();
        let joined = tokio::time::timeout(
            STORE_CALL_BOUND,
            join(
                self.shared.store.as_ref(),
                &member,
                &self.shared.timing,
                &self.declared,
                &self.meta,
                None,
                &self.failed_joins,
            ),
        )
        .await
        .unwrap_or_else(|_| Err(Error::StoreUnavailable("join timed out".into())));
        match joined {
            Ok(now_ms) => {
                self.failed_joins.clear();
                *self.shared.member.write().unwrap() = member.clone();
                *self.shared.work.lock().unwrap() = CancellationToken::new();
                self.shared.renew_lease(sent);
                self.shared.clock.observe(now_ms, sent, Instant::now());
                self.shared.expired.store(false, Ordering::SeqCst);
                self.shared.set_store_error(None);
                self.view_at = None;
                info!(
                    old_incarnation = old.incarnation,
                    incarnation = member.incarnation,
                    "rejoined after losing the lease"
                );
                let host = identity::host_name();
                self.shared
                    .journal
                    .record(journal::joined(&member, now_ms, &host));
            }
            Err(e) => {
                debug!(error = %e, "rejoin failed; retrying");
                // It may have committed: then the next try replaces it (bounded memory).
                if self.failed_joins.len() < 64 {
                    self.failed_joins.push(member.incarnation);
                }
            }
        }
    }

    async fn observe(&mut self) -> Result<()> {
        let store = &self.shared.store;
        let cluster = self.shared.member().cluster;
        let generation = store.generation(&cluster).await?;
        let stale = self
            .view_at
            .is_none_or(|at| at.elapsed() >= self.shared.timing.heartbeat);
        if generation != self.generation || stale {
            let sent = Instant::now();
            let view = store.view(&cluster).await?;
            let received = Instant::now();
            self.shared.clock.observe(view.now_ms, sent, received);
            self.shared.saw_renewals(&view, received);
            if view.generation != self.generation {
                // Only the rows changed since the generation we hold (all at the start).
                let changed = store.assignments_since(&cluster, self.generation).await?;
                crate::store::merge_assignments(&mut self.assignments, changed);
                // A registration's declarations never change: read only new registrations.
                let registered: HashSet<(String, i64)> = view
                    .nodes
                    .iter()
                    .map(|n| (n.node.clone(), n.incarnation))
                    .collect();
                self.declarations.retain(|key, _| registered.contains(key));
                let unseen: Vec<(String, i64)> = registered
                    .into_iter()
                    .filter(|key| !self.declarations.contains_key(key))
                    .collect();
                for d in store.declarations(&cluster, Some(&unseen)).await? {
                    let hashes = d.declared.into_iter().map(|t| (t.name, t.hash)).collect();
                    self.declarations
                        .insert((d.node, d.incarnation), (hashes, d.meta));
                }
                // Commands take generations too: read what was appended (all, at the start).
                self.commands
                    .read(store.as_ref(), &self.shared.member())
                    .await?;
                self.generation = view.generation;
            }
            self.view = Some(view);
            self.view_at = Some(Instant::now());
        }
        self.shared.set_store_error(None);
        Ok(())
    }

    /// Leadership and placement (contract 6). The leader writes only differences.
    async fn lead(&mut self, leaving: bool) -> Result<()> {
        let Some(view) = &self.view else {
            return Ok(());
        };
        let previous_leader = view.leader.as_ref().map(|l| l.node.clone());
        let me = self.shared.member();
        let leader_alive = view.leader.as_ref().is_some_and(|l| {
            view.nodes
                .iter()
                .any(|n| n.node == l.node && n.incarnation == l.incarnation && n.alive)
        });
        let mine = view
            .leader
            .as_ref()
            .filter(|l| l.node == me.node && l.incarnation == me.incarnation);
        self.epoch = mine.map(|l| l.epoch);
        if !leader_alive && !leaving {
            if let Some(l) = self.shared.store.acquire_leadership(&me).await? {
                if l.node == me.node
                    && l.incarnation == me.incarnation
                    && self.epoch != Some(l.epoch)
                {
                    info!(epoch = l.epoch, "became leader");
                    self.shared.metrics.became_leader();
                    let previous = previous_leader.filter(|p| *p != me.node);
                    let at = self.shared.clock.now_ms();
                    let event = journal::leader_changed(&me, l.epoch, previous.as_deref(), at);
                    self.shared.journal.record(event);
                    self.epoch = Some(l.epoch);
                    self.view_at = None;
                    return Ok(()); // place on fresh observations
                }
            }
        }
        let Some(epoch) = self.epoch else {
            return Ok(());
        };
        let view = self.view.as_ref().expect("checked above");
        let control = &self.commands.control;
        // Placing thousands of tasks costs CPU: skip it while its inputs are those of a round
        // that found nothing to change (same generation, same live nodes and states). A drain
        // is a command, so it comes with a new generation too.
        let inputs: PlacementInputs = (
            self.generation,
            view.nodes
                .iter()
                .filter(|n| n.alive)
                .map(|n| {
                    let leaving = n.leaving || control.is_drained(&n.node);
                    (n.node.clone(), n.incarnation, leaving)
                })
                .collect(),
        );
        if self.settled.as_ref() == Some(&inputs) {
            return self.after_placement(leaving).await;
        }
        self.journal_deaths().await;
        let view = self.view.as_ref().expect("checked above");
        let control = &self.commands.control;
        let live: Vec<NodeInfo> = view
            .nodes
            .iter()
            .filter(|n| n.alive)
            .map(|n| {
                let (mut declared, meta) = self
                    .declarations
                    .get(&(n.node.clone(), n.incarnation))
                    .cloned()
                    .unwrap_or_default();
                // Commands: a node is not eligible for what is paused on it, nor for
                // anything while drained.
                declared.retain(|task, _| !control.is_paused(&n.node, task));
                NodeInfo {
                    id: n.node.clone(),
                    incarnation: n.incarnation,
                    joined_at_ms: n.joined_at_ms,
                    leaving: n.leaving || control.is_drained(&n.node),
                    declared,
                    labels: meta.labels,
                    placement: meta.placement,
                }
            })
            .collect();
        let counted: BTreeSet<(String, i64)> =
            live.iter().map(|n| (n.id.clone(), n.incarnation)).collect();
        let current: BTreeMap<String, Owner> = self
            .assignments
            .iter()
            .filter_map(|a| {
                a.owner
                    .clone()
                    .map(|(node, incarnation)| (a.task.clone(), Owner { node, incarnation }))
            })
            .collect();
        let acting_as = self
            .commands
            .control
            .acting_map(live.iter().map(|n| n.id.as_str()));
        let context = PlaceContext::new(self.resolver.as_ref())
            .custom(&self.resolvers)
            .leader(&me.node)
            .acting_as(&acting_as);
        let placing = Instant::now();
        let mut placement = placement::place_with(&context, &live, &current);
        self.mark_paused(&mut placement, &live);
        self.report(&placement);
        let changes = diff(&self.assignments, &placement);
        if !changes.is_empty() {
            debug!(
                changes = changes.len(),
                placed_in_ms = placing.elapsed().as_millis() as u64,
                "writing placement"
            );
            let writing = Instant::now();
            let written = self
                .shared
                .store
                .write_assignments(&me, epoch, &changes)
                .await;
            self.shared.metrics.store_call(
                "place",
                writing.elapsed().as_secs_f64(),
                written.is_err(),
            );
            match written? {
                LeaderWrite::Written => {
                    self.journal_failovers(&changes, &counted, epoch).await;
                    debug!(
                        changes = changes.len(),
                        written_in_ms = placing.elapsed().as_millis() as u64,
                        "placement written"
                    );
                    for c in &changes {
                        match &c.owner {
                            Some((node, _)) => match placement.acting.get(&c.task) {
                                Some(primary) => {
                                    info!(task = %c.task, owner = %node, acting_for = %primary, "assigned")
                                }
                                None => info!(task = %c.task, owner = %node, "assigned"),
                            },
                            None => {
                                warn!(task = %c.task, reason = c.reason.as_deref().unwrap_or(""), "unplaced")
                            }
                        }
                    }
                    let changed = self
                        .shared
                        .store
                        .assignments_since(&me.cluster, self.generation)
                        .await?;
                    crate::store::merge_assignments(&mut self.assignments, changed);
                    self.placed_with = counted;
                }
                LeaderWrite::Deposed => {
                    warn!(epoch, "deposed: placement refused by the store");
                    self.epoch = None;
                }
                LeaderWrite::Stale => self.view_at = None,
            }
        } else {
            self.settled = Some(inputs);
            self.placed_with = counted;
        }
        self.after_placement(leaving).await
    }

    /// Tasks paused cluster-wide are unplaced with a reason naming the command (rather than
    /// "declared by no live node"), unless a node-scoped resume lets some node run them.
    fn mark_paused(&self, placement: &mut placement::Placement, live: &[NodeInfo]) {
        for (task, seq) in self.commands.control.paused_in_cluster() {
            let declared = live.iter().any(|n| {
                self.declarations
                    .get(&(n.id.clone(), n.incarnation))
                    .is_some_and(|(d, _)| d.contains_key(task))
            });
            let running_somewhere = placement.owners.contains_key(task)
                || placement
                    .everywhere
                    .get(task)
                    .is_some_and(|n| !n.is_empty());
            if declared && !running_somewhere {
                placement.everywhere.remove(task);
                placement
                    .unplaced
                    .insert(task.to_string(), format!("paused by command #{seq}"));
            }
        }
    }

    /// The leader moves rolling restarts on, one node at a time (see
    /// [`control::rolling_step`]); at most every few heartbeats while one is under way.
    async fn drive_rolling_restarts(&mut self) -> Result<()> {
        if self.commands.rolling().is_empty()
            || self
                .rolling_checked
                .is_some_and(|at| at.elapsed() < self.shared.timing.heartbeat)
        {
            return Ok(());
        }
        self.rolling_checked = Some(Instant::now());
        let Some(view) = &self.view else {
            return Ok(());
        };
        let me = self.shared.member();
        let live: BTreeMap<String, i64> = view
            .nodes
            .iter()
            .filter(|n| n.alive && !n.leaving)
            .map(|n| (n.node.clone(), n.incarnation))
            .collect();
        let now_ms = self.shared.clock.now_ms();
        let seqs: Vec<i64> = self.commands.rolling().keys().copied().collect();
        let acks = self
            .shared
            .store
            .command_acks(&me.cluster, AckFilter::Commands(&seqs))
            .await?;
        for seq in seqs {
            let command = self.commands.rolling()[&seq].clone();
            let Operation::RollingRestart { timeout_secs } = command.body.op else {
                continue;
            };
            let of_this: BTreeMap<String, Ack> = acks
                .iter()
                .filter(|a| a.seq == seq)
                .map(|a| (a.node.clone(), a.clone()))
                .collect();
            let step = control::rolling_step(
                &command.body.targets,
                &of_this,
                &live,
                &self.placed_with,
                now_ms,
                timeout_secs as i64 * 1000,
            );
            let ack = |node: &str, incarnation, state, message: String| Ack {
                seq,
                node: node.to_string(),
                incarnation,
                state,
                message,
                at_ms: 0,
            };
            let Some(epoch) = self.epoch else {
                return Ok(());
            };
            // Every step is written as the leader of this epoch (contract 6): a leader that
            // stalled past its lease cannot restart a node after its successor did.
            let (acks, command, done): (Vec<Ack>, Option<String>, &str) = match step {
                RollingStep::Wait => continue,
                RollingStep::Finished => {
                    info!(seq, "rolling restart finished");
                    self.commands.finish_rolling(seq);
                    continue;
                }
                RollingStep::Restart { node, incarnation } => {
                    // In progress with the restart: should this leader die right after, its
                    // successor waits (and times out) rather than restart the node twice.
                    let body = CommandBody {
                        op: Operation::Restart,
                        scope: Scope::Nodes(vec![node.clone()]),
                        targets: vec![node.clone()],
                        issued_by: format!("{} (rolling restart #{seq})", me.node),
                    };
                    let json = serde_json::to_string(&body).expect("serializable");
                    let note = "restarting".to_string();
                    info!(seq, node = %node, "rolling restart: restarting a node");
                    (
                        vec![ack(&node, incarnation, AckState::InProgress, note)],
                        Some(json),
                        "restart",
                    )
                }
                RollingStep::Confirm { node, incarnation } => {
                    let note = format!("restarted: back as incarnation {incarnation}, work placed");
                    info!(seq, node = %node, "rolling restart: node back");
                    (
                        vec![ack(&node, incarnation, AckState::Applied, note)],
                        None,
                        "confirm",
                    )
                }
                RollingStep::Skip { node } => {
                    let note = "skipped: not running when its turn came".to_string();
                    warn!(seq, node = %node, "rolling restart: node not running; skipped");
                    (vec![ack(&node, 0, AckState::Applied, note)], None, "skip")
                }
                RollingStep::Fail { node, message } => {
                    let incarnation = live.get(&node).copied().unwrap_or(0);
                    warn!(seq, node = %node, reason = %message, "rolling restart: failed");
                    (
                        vec![ack(&node, incarnation, AckState::Failed, message)],
                        None,
                        "fail",
                    )
                }
            };
            let written = self
                .shared
                .store
                .lead_commands(&me, epoch, &acks, command.as_deref())
                .await?;
            if written == LeaderWrite::Deposed {
                warn!(
                    seq,
                    step = done,
                    "rolling restart: no longer the leader; step not written"
                );
                self.epoch = None;
                return Ok(());
            }
        }
        Ok(())
    }

    /// A leaving leader gives up once it owns nothing; the leader purges old history.
    async fn after_placement(&mut self, leaving: bool) -> Result<()> {
        // Only the leader in office moves rolling restarts on (not one just deposed).
        if !leaving && self.epoch.is_some() {
            self.drive_rolling_restarts().await?;
        }
        let me = self.shared.member();
        if leaving && self.owned().is_empty() {
            self.shared.store.release_leadership(&me).await?;
            self.epoch = None;
        }
        // Purging a long history (tens of thousands of item records after a backlog of
        // files) can take longer than a round: it runs beside the rounds, one at a time, so
        // that the leader goes on observing, placing and supervising its own runners.
        let idle = self.purging.as_ref().is_none_or(|p| p.is_finished());
        if idle && self.last_purge.elapsed() >= Duration::from_secs(60) {
            self.last_purge = Instant::now();
            let before = self.shared.clock.now_ms()
                - self.shared.timing.history_retention.as_millis() as i64;
            let store = self.shared.store.clone();
            let purge = async move {
                match store.purge_history(&me.cluster, before).await {
                    Ok(purged) => debug!(purged, "history purged"),
                    Err(e) => {
                        warn!(error = %e, "purging the history failed; trying again in a minute")
                    }
                }
            };
            self.purging = Some(tokio::spawn(purge.in_current_span()));
        }
        Ok(())
    }

    /// Records the deaths the leader has not recorded yet (every leader reports each death
    /// with the same id, so the journal holds it once).
    async fn journal_deaths(&mut self) {
        let Some(view) = &self.view else { return };
        let retention = self.shared.timing.history_retention.as_millis() as i64;
        let not_before = self.shared.clock.now_ms() - retention;
        for event in journal::deaths(view, &mut self.deaths_reported, not_before) {
            self.shared.journal.record(event);
        }
    }

    /// Records the failovers of a placement round just written.
    async fn journal_failovers(
        &self,
        changes: &[AssignmentChange],
        live: &BTreeSet<(String, i64)>,
        epoch: i64,
    ) {
        let Some(view) = &self.view else { return };
        let at = self.shared.clock.now_ms();
        for f in journal::failovers(&self.assignments, changes, live, view, at) {
            info!(from = %f.from, tasks = f.tasks.len(), duration_ms = f.duration_ms, "failover");
            if let Some(ms) = f.duration_ms {
                self.shared.metrics.failover(ms);
            }
            self.shared.journal.record(f.event(epoch, at));
        }
    }

    /// Logs placement problems once each time they change.
    fn report(&mut self, placement: &placement::Placement) {
        let text = format!("{:?}{:?}", placement.unplaced, placement.conflicts);
        if text == self.reported {
            return;
        }
        self.reported = text;
        for c in &placement.conflicts {
            error!(
                task = %c.task,
                definition_in_force = %c.reference_hash,
                dissenters = ?c.dissenters,
                "nodes declare different definitions of this task; the dissenting nodes are not eligible for it until their config agrees"
            );
        }
    }

    fn owned(&self) -> Vec<(String, i64)> {
        let me = self.shared.member();
        self.assignments
            .iter()
            .filter(|a| {
                a.owner
                    .as_ref()
                    .is_some_and(|(n, i)| *n == me.node && *i == me.incarnation)
            })
            .map(|a| (a.task.clone(), a.token))
            .collect()
    }

    /// One runner per owned task and token; runners of lost tasks stop scheduling.
    /// Stops the runner of `task` and keeps its handle until it has ended.
    fn retire(&mut self, task: &str) {
        if let Some(runner) = self.runners.remove(task) {
            runner.stop.cancel();
            self.stopping
                .entry(task.to_string())
                .or_default()
                .push(runner.task);
        }
    }

    fn supervise(&mut self) {
        // No task starts before the commands this node missed are applied (contract 8);
        // nothing runs here while drained, or while paused here. A command not yet applied
        // only holds back starts: what runs goes on until a command that applies to it is
        // applied (stopping every runner at each new command cut services short, and made
        // a file handler's file be given back and handled again).
        let me = self.shared.member().node;
        let control = &self.commands.control;
        let caught_up = self.commands.caught_up();
        let owned: HashMap<String, i64> = if self.shared.lease_valid() && !control.is_drained(&me) {
            self.owned()
                .into_iter()
                .filter(|(task, _)| !control.is_paused(&me, task))
                .collect()
        } else {
            HashMap::new()
        };
        let lost: Vec<String> = self
            .runners
            .iter()
            .filter(|(task, runner)| {
                owned.get(*task) != Some(&runner.token) || runner.task.is_finished()
            })
            .map(|(task, _)| task.clone())
            .collect();
        for task in lost {
            self.retire(&task); // kept in `stopping` until it has ended
        }
        self.stopping.retain(|_, handles| {
            handles.retain(|h| !h.is_finished());
            !handles.is_empty()
        });
        if !caught_up {
            return;
        }
        for (task, token) in owned {
            // Never two runners of one task: a new one waits until the old one has ended.
            if self.runners.contains_key(&task) || self.stopping.contains_key(&task) {
                continue;
            }
            let stop = self.shared.work_token().child_token();
            let handle = if let Some(spec) = self.task_spec(&task) {
                let placed_at = self
                    .assignments
                    .iter()
                    .find(|a| a.task == task)
                    .map_or(0, |a| a.placed_at_ms);
                let resumed_at = self.commands.control.resumed_at(&task).unwrap_or(0);
                tokio::spawn(runner::run(
                    self.shared.clone(),
                    spec,
                    token,
                    runner::Start {
                        placed_at,
                        resumed_at,
                    },
                    stop.clone(),
                ))
            } else if let Some(spec) = self.service_spec(&task) {
                tokio::spawn(super::service_runner::run(
                    self.shared.clone(),
                    spec,
                    token,
                    stop.clone(),
                ))
            } else {
                continue;
            };
            self.runners.insert(
                task,
                RunnerHandle {
                    token,
                    stop,
                    task: handle,
                },
            );
        }
    }

    /// The spec of an owned task: a declared one, or this node's share of an `all` task
    /// (named `task@node`, under which it is claimed and recorded).
    fn task_spec(&self, owned: &str) -> Option<TaskSpec> {
        if let Some(spec) = self.shared.tasks.get(owned) {
            return Some(spec.clone());
        }
        let (task, _) = placement::split_per_node_name(owned)?;
        let mut spec = self.shared.tasks.get(task)?.clone();
        spec.name = owned.to_string();
        Some(spec)
    }

    fn service_spec(&self, owned: &str) -> Option<ServiceSpec> {
        if let Some(spec) = self.shared.services.get(owned) {
            return Some(spec.clone());
        }
        let (service, _) = placement::split_per_node_name(owned)?;
        let mut spec = self.shared.services.get(service)?.clone();
        spec.name = owned.to_string();
        Some(spec)
    }

    fn publish_status(&self) {
        let me = self.shared.member();
        let status = NodeStatus {
            incarnation: me.incarnation,
            active: self.shared.lease_valid(),
            leader: self.epoch.is_some(),
            owned: self.owned(),
            store_error: self.shared.store_error.lock().unwrap().clone(),
            generation: self.generation.max(0),
        };
        self.status.send_if_modified(|s| {
            let changed = *s != status;
            *s = status;
            changed
        });
    }

    fn handover_done(&self, since: Instant) -> bool {
        if self.owned().is_empty() || since.elapsed() >= self.shared.timing.handover_timeout {
            return true;
        }
        let me = self.shared.member();
        // Nobody else can take over: no reason to wait.
        self.view.as_ref().is_some_and(|v| {
            !v.nodes
                .iter()
                .any(|n| n.alive && !n.leaving && n.node != me.node)
        })
    }

    /// Stops runners, waits for running fires (or cancels them when forced), leaves.
    async fn finish(&mut self, forced: bool) -> Result<()> {
        if let Some(purge) = self.purging.take() {
            purge.abort();
        }
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
        Ok(())
    }
}

/// The assignment changes that turn `current` into `placement`.
fn diff(current: &[Assignment], placement: &placement::Placement) -> Vec<AssignmentChange> {
    let by_task: HashMap<&str, &Assignment> =
        current.iter().map(|a| (a.task.as_str(), a)).collect();
    let mut changes = Vec::new();
    let mut want = |task: &str, owner: Option<(String, i64)>, reason: Option<String>| {
        let existing = by_task.get(task);
        let same = existing.is_some_and(|a| a.owner == owner && a.reason == reason);
        if !same {
            changes.push(AssignmentChange {
                task: task.to_string(),
                owner,
                reason,
                expected_token: existing.map(|a| a.token),
            });
        }
    };
    for (task, o) in &placement.owners {
        want(task, Some((o.node.clone(), o.incarnation)), None);
    }
    for (task, reason) in &placement.unplaced {
        want(task, None, Some(reason.clone()));
    }
    for (task, nodes) in &placement.everywhere {
        let on = if nodes.is_empty() {
            "none".to_string()
        } else {
            nodes.join(", ")
        };
        let reason = format!(
            "{}, as {task}@<node> (now on {on})",
            placement::EVERYWHERE_REASON
        );
        want(task, None, Some(reason));
    }
    for a in current {
        if !placement.owners.contains_key(&a.task)
            && !placement.unplaced.contains_key(&a.task)
            && !placement.everywhere.contains_key(&a.task)
            && a.owner.is_some()
        {
            want(&a.task, None, Some("declared by no live node".to_string()));
        }
    }
    changes
}

/// Renews the registration every heartbeat; a refusal means the registration is gone.
async fn heartbeat_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let timing = shared.timing.clone();
    let mut failures = 0u32;
    loop {
        let sent = Instant::now();
        let member = shared.member();
        let budget = timing.node_timeout - timing.fence_margin;
        let not_after = shared.clock.now_ms() + budget.as_millis() as i64;
        let renewal =
            tokio::time::timeout(budget, shared.store.heartbeat(&member, not_after)).await;
        let failed = !matches!(renewal, Ok(Ok(_)));
        shared
            .metrics
            .store_call("heartbeat", sent.elapsed().as_secs_f64(), failed);
        match renewal {
            Ok(Ok(true)) => {
                // Only renew the lease of the incarnation the heartbeat was for.
                if shared.member().incarnation == member.incarnation {
                    shared.renew_lease(sent);
                }
                if failures > 0 {
                    info!(failures, "store reachable again");
                }
                failures = 0;
            }
            Ok(Ok(false)) => {
                if shared.member().incarnation == member.incarnation
                    && !shared.expired.swap(true, Ordering::SeqCst)
                {
                    warn!(
                        incarnation = member.incarnation,
                        "the store expired this node's registration"
                    );
                    shared.lease.lock().unwrap().revoke();
                }
            }
            Ok(Err(e)) => {
                failures += 1;
                if failures == 1 || failures % 25 == 0 {
                    warn!(error = %e, failures, "heartbeat failed; the store is unreachable");
                }
                shared.set_store_error(Some(e.to_string()));
            }
            Err(_) => {
                failures += 1;
                if failures == 1 || failures % 25 == 0 {
                    warn!(failures, "heartbeat timed out");
                }
                shared.set_store_error(Some("heartbeat timed out".into()));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until(sent + timing.heartbeat) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Cancels all work the moment the local lease deadline passes, whatever the other loops
/// are waiting on (contract 4).
async fn fence_watchdog(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let deadline = shared.lease.lock().unwrap().valid_until();
        let wake = deadline.unwrap_or_else(|| Instant::now() + shared.timing.heartbeat);
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = stop.cancelled() => return,
        }
        if !shared.lease_valid() {
            let work = shared.work_token();
            if !work.is_cancelled() {
                warn!("lease deadline passed without renewal: cancelling all work");
                work.cancel();
            }
            tokio::select! {
                _ = tokio::time::sleep(shared.timing.heartbeat) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}
