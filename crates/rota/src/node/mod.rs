//! A rota node: build it, start it, get a handle, shut it down.
//!
//! ```no_run
//! # async fn demo() -> rota::Result<()> {
//! use std::time::Duration;
//! use rota::{Node, Schedule, TaskSpec};
//! let node = Node::builder("node-1", "orders", "sqlite:///tmp/rota.db")
//!     .task(TaskSpec::new("ftp-transfer", Schedule::every(Duration::from_secs(5)).unwrap(), |ctx: rota::FireContext| async move {
//!         println!("{} fires {} with token {}", ctx.node, ctx.task, ctx.token);
//!         Ok(())
//!     }))
//!     .start()
//!     .await?;
//! node.shutdown().await?;
//! # Ok(()) }
//! ```

mod active;
mod batch;
mod clock;
pub mod commands;
pub(crate) mod guard;
pub mod identity;
mod journal;
mod runner;
mod runtime;
mod service_runner;
mod shared;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;

pub use self::commands::{LogLevelControl, StopReason};
pub use self::runtime::SERVICE_SCHEDULE;
use crate::{
    core::placement::{ActivePassive, Resolver},
    service::ServiceSpec,
    store::{self, Store},
    task::TaskSpec,
    Error, Result,
};

/// Timing of membership and failover. Defaults give failover within about a second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// How often the node renews its registration.
    pub heartbeat: Duration,
    /// The store declares a node dead this long after its last renewal.
    pub node_timeout: Duration,
    /// The node stops starting work this long *before* the store could declare it dead.
    pub fence_margin: Duration,
    /// How often the node polls the cluster's generation for changes (the safety net where
    /// the store cannot push).
    pub watch_interval: Duration,
    /// On a graceful stop, how long running fires may take to finish.
    pub shutdown_grace: Duration,
    /// On a graceful stop, how long to wait for other nodes to take over this node's tasks.
    pub handover_timeout: Duration,
    /// How long fire history is kept.
    pub history_retention: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat: Duration::from_millis(200),
            node_timeout: Duration::from_millis(1000),
            fence_margin: Duration::from_millis(200),
            watch_interval: Duration::from_millis(50),
            shutdown_grace: Duration::from_secs(10),
            handover_timeout: Duration::from_secs(5),
            history_retention: Duration::from_secs(24 * 3600),
        }
    }
}

impl Timing {
    /// Checks the relations failover depends on; names the field and the fix.
    pub fn validate(&self) -> Result<()> {
        let ms = |d: Duration| d.as_millis();
        if self.heartbeat.is_zero() {
            return Err(Error::config(
                "timing.heartbeat",
                "must be more than 0; the default is 200ms",
            ));
        }
        if self.watch_interval.is_zero() {
            return Err(Error::config(
                "timing.watch_interval",
                "must be more than 0; the default is 50ms",
            ));
        }
        if self.fence_margin.is_zero() {
            return Err(Error::config(
                "timing.fence_margin",
                "must be more than 0; the default is 200ms",
            ));
        }
        // At least two renewals must fit in the time the node may go without one.
        if self.node_timeout < self.fence_margin + self.heartbeat * 2 {
            return Err(Error::config(
                "timing.node_timeout",
                format!(
                    "{}ms is too short for heartbeat {}ms and fence_margin {}ms; it must be at least \
                     fence_margin + 2 x heartbeat ({}ms): raise node_timeout or lower heartbeat",
                    ms(self.node_timeout),
                    ms(self.heartbeat),
                    ms(self.fence_margin),
                    ms(self.fence_margin + self.heartbeat * 2)
                ),
            ));
        }
        Ok(())
    }
}

/// Builds a node. See [`Node::builder`].
pub struct NodeBuilder {
    id: String,
    cluster: String,
    store_url: String,
    store: Option<Arc<dyn Store>>,
    timing: Timing,
    migrate: bool,
    tasks: Vec<TaskSpec>,
    services: Vec<ServiceSpec>,
    resolver: Arc<dyn Resolver>,
    resolvers: BTreeMap<String, Arc<dyn Resolver>>,
    labels: BTreeMap<String, String>,
    log_level: Option<LogLevelControl>,
    reexec_of: Option<i64>,
}

/// Entry point of the library.
pub struct Node;

impl Node {
    /// A node with id `id` (unique in its cluster) in `cluster`, coordinating through the
    /// store at `store_url` (`sqlite://`, `postgres://`, `mysql://`).
    pub fn builder(
        id: impl Into<String>,
        cluster: impl Into<String>,
        store_url: impl Into<String>,
    ) -> NodeBuilder {
        NodeBuilder {
            id: id.into(),
            cluster: cluster.into(),
            store_url: store_url.into(),
            store: None,
            timing: Timing::default(),
            migrate: true,
            tasks: Vec::new(),
            services: Vec::new(),
            resolver: Arc::new(ActivePassive),
            resolvers: BTreeMap::new(),
            labels: BTreeMap::new(),
            log_level: None,
            reexec_of: None,
        }
    }
}

pub use crate::error::validate_name;

impl NodeBuilder {
    pub fn timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// Use an already opened store instead of `store_url` (tests, shared pools).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Create or migrate the schema at start (default). With `false` the node refuses to
    /// start unless the schema is present and current.
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// Declares a task this node can run.
    pub fn task(mut self, task: TaskSpec) -> Self {
        self.tasks.push(task);
        self
    }

    /// Declares a long-running service this node can run (see [`crate::service`]).
    pub fn service(mut self, service: ServiceSpec) -> Self {
        self.services.push(service);
        self
    }

    /// The placement policy, when this node is the leader, of the tasks whose placement spec
    /// is the default (active-passive): [`ActivePassive`] unless replaced here. Tasks with
    /// another spec follow it (see [`crate::core::placement`]).
    pub fn resolver(mut self, resolver: Arc<dyn Resolver>) -> Self {
        self.resolver = resolver;
        self
    }

    /// Registers a custom resolver under `name`, for tasks whose placement spec is
    /// [`PlacementSpec::custom(name)`](crate::core::placement::PlacementSpec::custom). Register
    /// it on every node that may lead: while the leader lacks it, those tasks stay unplaced
    /// with a reason saying so.
    pub fn resolver_named(mut self, name: impl Into<String>, resolver: Arc<dyn Resolver>) -> Self {
        self.resolvers.insert(name.into(), resolver);
        self
    }

    /// This node's labels (`[node] labels`), which tasks select with a `node_selector` and
    /// custom resolvers see.
    pub fn labels<K: Into<String>, V: Into<String>>(
        mut self,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.labels
            .extend(labels.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Lets `set_log_level` cluster commands change this process's log level: `set` gets
    /// the level (`trace` ... `off`), or `None` for the configured one. Without it, such
    /// commands are acknowledged as failed on this node.
    pub fn log_level_control(mut self, set: LogLevelControl) -> Self {
        self.log_level = Some(set);
        self
    }

    /// This process re-executed itself (a restart command) and was incarnation `incarnation`
    /// before: should that registration still be there (its leave failed), it is replaced
    /// rather than refused as a duplicate.
    pub fn reexecuted_from(mut self, incarnation: i64) -> Self {
        self.reexec_of = Some(incarnation);
        self
    }

    /// Checks everything that can be checked without the store.
    pub fn validate(&self) -> Result<()> {
        validate_name("node.id", &self.id)?;
        validate_name("node.cluster", &self.cluster)?;
        self.timing.validate()?;
        let spec_error = |prefix: &str, p: &crate::Problem| {
            Error::config(
                format!("{prefix}.{}", p.field),
                format!("`{}`: {}; {}", p.value, p.reason, p.fix),
            )
        };
        if let Some(p) = crate::core::placement::label_problems("labels", &self.labels).first() {
            return Err(spec_error("node", p));
        }
        for name in self.resolvers.keys() {
            validate_name("resolver_named", name)?;
        }
        let mut seen = std::collections::HashSet::new();
        for (i, s) in self.services.iter().enumerate() {
            validate_name(&format!("service[{i}].name"), &s.name)?;
            if let Some(p) = s.placement.problems().first() {
                return Err(spec_error(&format!("service[{i}].placement"), p));
            }
            if s.grace.is_zero() || s.restart_backoff.is_zero() {
                return Err(Error::config(
                    format!("service[{i}]"),
                    "grace and restart_backoff must be more than 0",
                ));
            }
            if !seen.insert(s.name.as_str()) {
                return Err(Error::config(
                    format!("service[{i}].name"),
                    format!(
                        "`{}` is declared twice; give each service its own name",
                        s.name
                    ),
                ));
            }
        }
        for (i, t) in self.tasks.iter().enumerate() {
            validate_name(&format!("task[{i}].name"), &t.name)?;
            if let Some(p) = t.placement.problems().first() {
                return Err(spec_error(&format!("task[{i}].placement"), p));
            }
            if !seen.insert(t.name.as_str()) {
                return Err(Error::config(
                    format!("task[{i}].name"),
                    format!(
                        "`{}` is declared twice (tasks and services share one namespace); give each task its own name",
                        t.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Validates, connects, prepares the schema, joins the cluster and starts working.
    /// Fails with [`Error::DuplicateNode`] if a live node already uses this id.
    pub async fn start(self) -> Result<NodeHandle> {
        self.validate()?;
        let store = match self.store {
            Some(s) => s,
            None => store::open(&self.store_url).await?,
        };
        let migrate = self.migrate;
        crate::store::retry_transient("preparing the schema", || store.prepare(migrate)).await?;
        let config = runtime::NodeConfig {
            id: self.id,
            cluster: self.cluster,
            timing: self.timing,
            tasks: self.tasks,
            services: self.services,
            resolver: self.resolver,
            resolvers: self.resolvers,
            labels: self.labels,
            log_level: self.log_level,
            reexec_of: self.reexec_of,
        };
        runtime::start(config, store).await
    }
}

/// What a running node reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub incarnation: i64,
    /// Holds a valid lease: may start work.
    pub active: bool,
    pub leader: bool,
    /// Tasks this node owns now, with their tokens.
    pub owned: Vec<(String, i64)>,
    /// The last store error, while the store is unreachable.
    pub store_error: Option<String>,
    /// The cluster's generation as this node last observed it (moves with every change of
    /// membership, placement or the command log; see [`crate::store::MembershipStore::view`]).
    pub generation: i64,
}

/// A running node. Dropping it does not stop the node; call [`NodeHandle::shutdown`].
pub struct NodeHandle {
    graceful: CancellationToken,
    forced: CancellationToken,
    status: watch::Receiver<NodeStatus>,
    task: JoinHandle<Result<StopReason>>,
    metrics: Arc<crate::metrics::Metrics>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) cluster: String,
    /// Started with the first cache handle.
    pub(crate) near: Arc<tokio::sync::OnceCell<Arc<crate::cache::NearCache>>>,
}

impl NodeHandle {
    /// Graceful stop: stop taking new work, hand tasks over, let running fires finish within
    /// the grace period, leave the cluster. Returns when done.
    pub async fn shutdown(self) -> Result<()> {
        self.graceful.cancel();
        self.wait().await.map(|_| ())
    }

    /// Asks for a graceful stop without waiting.
    pub fn begin_shutdown(&self) {
        self.graceful.cancel();
    }

    /// Forced stop: cancel running fires at once and leave.
    pub fn force_shutdown(&self) {
        self.graceful.cancel();
        self.forced.cancel();
    }

    /// Waits for the node to end (after a shutdown, a restart or shutdown command, or a
    /// fatal error), and says why it ended.
    pub async fn wait(self) -> Result<StopReason> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(Error::Store(format!("node task panicked: {e}"))),
        }
    }

    pub fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    /// The cluster cache `name` (1 to 128 letters, digits, `-`, `_`, `.`), with this node's
    /// near cache: see [`crate::cache`].
    pub async fn cache(&self, name: &str) -> Result<crate::cache::Cache> {
        let near = self
            .near
            .get_or_init(|| crate::cache::NearCache::start(&self.store, &self.cluster))
            .await
            .clone();
        crate::cache::Cache::new(self.store.clone(), &self.cluster, name, near)
    }

    /// What this node counts (fires, lateness, failovers, commands, store round trips), for
    /// an embedding program's own `/metrics`; `rota node` serves it on its admin listener.
    pub fn metrics(&self) -> Arc<crate::metrics::Metrics> {
        self.metrics.clone()
    }

    /// A receiver that sees every status change.
    pub fn watch_status(&self) -> watch::Receiver<NodeStatus> {
        self.status.clone()
    }
}
