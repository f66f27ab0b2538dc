//! Starting a node: its join (retried while the store is briefly unavailable), the lease it
//! holds from then on, and the loops that keep it: the rounds, the heartbeat, the fence
//! watchdog.

use super::liveness::{fence_watchdog, heartbeat_loop};
use super::*;

/// What the builder hands the runtime: the node's identity, timing, work and placement.
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
    /// Compiles the cluster's own definitions; `None`: this node runs none.
    pub definitions: Option<super::super::DefinitionCompiler>,
    /// Where this node sends the cluster's alerts while it leads.
    pub alerts: Vec<crate::alerts::AlertSpec>,
    /// Hold a session lock and watch the others' (see [`crate::store::SessionStore`]).
    pub session_locks: bool,
}

/// Joins, then runs the node: the rounds on a task of their own, the heartbeat and the fence
/// watchdog beside them. Returns once the node holds its lease.
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
        definitions,
        alerts,
        session_locks,
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
        runs_definitions: definitions.is_some(),
    };
    let member = Member {
        cluster,
        node: id,
        incarnation: new_incarnation(),
    };
    // Taken before the join: no registration names a key that is not held.
    let session = if session_locks {
        match crate::store::retry_transient("taking the session lock", || store.hold_session())
            .await
        {
            Ok(hold) => hold,
            Err(e) => {
                warn!(error = %e, "cannot take a session lock; a death of this node will be noticed by its timeout");
                None
            }
        }
    } else {
        None
    };
    let session_key = session.as_ref().map(|h| h.key);
    // The lease runs from the send time of the attempt that succeeded: from the first one, a
    // join that took several tries against a slow store would start with its lease spent,
    // and the node would fence itself at once.
    let sent = std::cell::Cell::new(Instant::now());
    let req = join_request(&member, &timing, &declared, &meta, session_key);
    let now_ms = crate::store::retry_transient("joining", || {
        sent.set(Instant::now());
        join(store.as_ref(), req.clone(), reexec_of, &[])
    })
    .await?;
    let mut sent = sent.get();
    let clock = StoreClock::new(now_ms, sent);
    // A join slower than half the lease (a loaded store) would start the node with its
    // lease nearly spent, fencing it before its first heartbeat: renew once at once.
    let budget = timing.node_timeout - timing.fence_margin;
    if sent.elapsed() > budget / 2 {
        let renewal = Instant::now();
        let not_after = clock.now_ms() + budget.as_millis() as i64;
        if let Ok(Ok(true)) =
            tokio::time::timeout(budget, store.heartbeat(&member, not_after)).await
        {
            sent = renewal;
        }
    }
    let mut lease = Lease::new(timing.node_timeout, timing.fence_margin);
    lease.renewed(sent, Instant::now());
    let shared = Arc::new(Shared {
        store: store.clone(),
        tasks: tasks
            .into_iter()
            .map(|t| (t.name.clone(), Arc::new(t)))
            .collect(),
        services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
        member: RwLock::new(member.clone()),
        lease: Mutex::new(lease),
        clock,
        work: Mutex::new(CancellationToken::new()),
        expired: AtomicBool::new(false),
        store_error: Mutex::new(None),
        fires: TaskTracker::new(),
        running: Mutex::default(),
        items_begun: Mutex::default(),
        active: Arc::default(),
        guard: crate::node::guard::WorkGuard::get().map(|g| g.slot()),
        in_process: Arc::default(),
        renewals: Mutex::default(),
        started: Instant::now(),
        taking_over: Arc::default(),
        batcher: crate::node::batch::Batcher::spawn(store.clone(), member.cluster.clone()),
        metrics: Arc::default(),
        journal: journal::Journal::spawn(store.clone(), member.cluster.clone()),
        alerts: Arc::new(alerts),
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
        parked: HashMap::new(),
        wakes: BTreeSet::new(),
        exits: tokio::sync::mpsc::unbounded_channel(),
        supervised: None,
        starts_pending: false,
        assignments_version: 0,
        spawned: 0,
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
        alerting: None,
        failures: 0,
        commands: Commands::new(log_level),
        exit: None,
        placed_with: BTreeSet::new(),
        rolling_checked: None,
        deaths_reported: HashSet::new(),
        defined: Defined::default(),
        compiler: definitions,
        supervised_version: 0,
        runs_pushed: 0,
        session,
        watches: super::sessions::Watches::default(),
    };
    // The heartbeat and the fence watchdog run beside the rounds, on tasks of their own, so
    // that a slow round never delays a renewal or the fence.
    let stop_background = CancellationToken::new();
    tokio::spawn(heartbeat_loop(
        runtime.shared.clone(),
        stop_background.clone(),
    ));
    tokio::spawn(fence_watchdog(
        runtime.shared.clone(),
        stop_background.clone(),
    ));
    let task = tokio::spawn(runtime.run(graceful.clone(), forced.clone(), stop_background));
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
