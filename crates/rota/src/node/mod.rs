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
mod alerter;
mod batch;
mod clock;
pub mod commands;
pub(crate) mod guard;
mod handle;
pub mod identity;
mod journal;
mod runner;
mod runtime;
mod service_runner;
mod shared;
mod timing;

use std::{collections::BTreeMap, sync::Arc};

use rota_core::placement::{ActivePassive, Resolver};

pub use self::commands::{LogLevelControl, StopReason};
pub use self::runtime::SERVICE_SCHEDULE;
pub use self::{
    handle::{NodeHandle, NodeStatus},
    timing::Timing,
};
use crate::{
    error::{Error, Result},
    service::ServiceSpec,
    store::{self, Store},
    task::TaskSpec,
};

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
    definitions: Option<DefinitionCompiler>,
    alerts: Vec<crate::alerts::AlertSpec>,
    session_locks: bool,
}

/// Turns the cluster's own definitions (the TOML document of a `define` command, see
/// [`rota_core::control::Operation::Define`]) into tasks and services, or says what is
/// wrong. Given by the program that owns the config format (the `rota` binary); a node
/// without one runs no cluster-defined work, and is not given any.
pub type DefinitionCompiler = Arc<
    dyn Fn(&str) -> std::result::Result<(Vec<TaskSpec>, Vec<ServiceSpec>), String> + Send + Sync,
>;

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
            definitions: None,
            alerts: Vec::new(),
            session_locks: true,
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
    /// another spec follow it (see [`rota_core::placement`]).
    pub fn resolver(mut self, resolver: Arc<dyn Resolver>) -> Self {
        self.resolver = resolver;
        self
    }

    /// Registers a custom resolver under `name`, for tasks whose placement spec is
    /// [`PlacementSpec::custom(name)`](rota_core::placement::PlacementSpec::custom). Register
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

    /// Runs the cluster's own tasks and services too (`rota ctl apply`), compiled by
    /// `compile`. Without it, this node neither runs nor is given any.
    pub fn definitions(mut self, compile: DefinitionCompiler) -> Self {
        self.definitions = Some(compile);
        self
    }

    /// Alert sinks: while this node leads, it sends the cluster's alerts to them (see
    /// [`crate::alerts`]).
    pub fn alerts(mut self, sinks: Vec<crate::alerts::AlertSpec>) -> Self {
        self.alerts = sinks;
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
        let spec_error = |prefix: &str, p: &crate::error::Problem| {
            Error::config(
                format!("{prefix}.{}", p.field),
                format!("`{}`: {}; {}", p.value, p.reason, p.fix),
            )
        };
        if let Some(p) = rota_core::placement::label_problems("labels", &self.labels).first() {
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

    /// Whether the node holds a session lock and watches the others' (default true, on the
    /// SQL stores): a node whose process dies is then noticed as soon as its connection
    /// closes, not after the node timeout. Turn it off behind a transaction pooler
    /// (PgBouncer in transaction mode, ProxySQL) or on Galera, where a lock does not follow
    /// the node's session.
    pub fn session_locks(mut self, on: bool) -> Self {
        self.session_locks = on;
        self
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
        let config = runtime::start::NodeConfig {
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
            definitions: self.definitions,
            alerts: self.alerts,
            session_locks: self.session_locks,
        };
        runtime::start::start(config, store).await
    }
}
