//! Placement: which node owns each task. A pure function of the live nodes, what each
//! declares, and the current owners; the leader runs it and writes the difference.
//!
//! The framework decides *eligibility* (a live, non-leaving node that declares the task with
//! the cluster's reference definition and carries the labels of the task's `node_selector`);
//! a resolver only picks among eligible nodes, so no resolver can place a task where it
//! cannot run.
//!
//! Each task carries a [`PlacementSpec`] (part of its definition, so nodes that disagree about
//! it are reported as a conflict). [`place_with`] groups the tasks by spec and applies the
//! right resolver to each group:
//!
//! - `active-passive` (default): every task on one node; they move only when it goes. The
//!   node's configured default resolver ([`PlaceContext::default_resolver`]) handles them.
//! - `round-robin`: nothing until `task_server_count` nodes able to run the tasks are live,
//!   then spread evenly (max - min <= 1) and sticky: a join moves only what the newcomer must
//!   take, a leave moves only the leaver's tasks.
//! - `nodes`: only the listed nodes may run the task, active-passive among them.
//! - `failover`: a primary and an ordered list of backups; the first live one runs the task,
//!   and the task fails back as soon as an earlier one is live again. A node told to act as
//!   another ([`PlaceContext::acting_as`]) takes that node's place in the list.
//! - `custom`: a [`Resolver`] registered under that name on the leader.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    sync::Arc,
};

use serde::{Deserialize, Serialize};

use crate::problem::Problem;

/// Which resolver places a task, with its parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "resolver", rename_all = "kebab-case")]
pub enum ResolverSpec {
    /// All tasks on one node (the one already running most, else the first to have joined).
    #[default]
    ActivePassive,
    /// Evenly spread once `task_server_count` nodes able to run the tasks are live.
    RoundRobin { task_server_count: usize },
    /// Only these nodes may run the task; active-passive among them.
    Nodes { task_nodes: Vec<String> },
    /// The primary when live, else the first live backup in order; automatic failback.
    Failover {
        primary: String,
        backups: Vec<String>,
    },
    /// A resolver registered on the leader under this name
    /// (`NodeBuilder::resolver_named` (in `rota`)).
    Custom { name: String },
    /// On every live eligible node at once (active-active, e.g. competing consumers). Each
    /// node's share is placed as its own task, named [`per_node_name`], with its own token,
    /// claims and history.
    All,
}

/// The name under which `node`'s share of an `all` task is placed, claimed and recorded:
/// `task@node` (names cannot hold `@`, so it never collides with a declared task).
pub fn per_node_name(task: &str, node: &str) -> String {
    format!("{task}@{node}")
}

/// How the assignment row of an `all` task itself starts its reason (it has no one owner).
pub const EVERYWHERE_REASON: &str = "resolver `all`: runs on every eligible node";

/// The declared task of a per-node name (`task@node` -> `(task, node)`).
pub fn split_per_node_name(name: &str) -> Option<(&str, &str)> {
    name.split_once('@')
}

/// Where a task may run and how its node is chosen: a resolver and an optional label filter.
///
/// Part of the task's definition (and of its definition hash), so every node declaring the
/// task must give it the same spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PlacementSpec {
    #[serde(flatten)]
    pub resolver: ResolverSpec,
    /// Only nodes carrying all these labels (`[node] labels`) are eligible. Empty: any node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
}

impl PlacementSpec {
    /// The default: active-passive, no label filter.
    pub fn active_passive() -> Self {
        ResolverSpec::ActivePassive.into()
    }

    /// Round-robin once `task_server_count` nodes able to run the tasks are live.
    pub fn round_robin(task_server_count: usize) -> Self {
        ResolverSpec::RoundRobin { task_server_count }.into()
    }

    /// Only these nodes may run the task.
    pub fn nodes<S: Into<String>>(task_nodes: impl IntoIterator<Item = S>) -> Self {
        ResolverSpec::Nodes {
            task_nodes: task_nodes.into_iter().map(Into::into).collect(),
        }
        .into()
    }

    /// Pinned to `primary`, failing over to `backups` in order, and back.
    pub fn failover<S: Into<String>>(
        primary: impl Into<String>,
        backups: impl IntoIterator<Item = S>,
    ) -> Self {
        ResolverSpec::Failover {
            primary: primary.into(),
            backups: backups.into_iter().map(Into::into).collect(),
        }
        .into()
    }

    /// On every live eligible node at once.
    pub fn all() -> Self {
        ResolverSpec::All.into()
    }

    /// A resolver registered on the leader under `name`.
    pub fn custom(name: impl Into<String>) -> Self {
        ResolverSpec::Custom { name: name.into() }.into()
    }

    /// Adds a required node label.
    pub fn on_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.node_selector.insert(key.into(), value.into());
        self
    }

    pub fn is_default(&self) -> bool {
        *self == PlacementSpec::default()
    }

    /// Does a node with these labels pass the `node_selector`?
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.node_selector
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    }

    /// Stable text of the spec, for definition hashes.
    pub fn canonical(&self) -> String {
        serde_json::to_string(self).expect("placement specs serialize")
    }

    /// Everything wrong with the spec, each naming the field (relative to the spec, e.g.
    /// `backups[1]`), the value and the fix. Unknown node names are fine: they may join later.
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        match &self.resolver {
            ResolverSpec::ActivePassive | ResolverSpec::All => {}
            ResolverSpec::RoundRobin { task_server_count } => {
                if *task_server_count == 0 {
                    p.push(Problem::new(
                        "task_server_count",
                        "0",
                        "must be at least 1",
                        "give the number of nodes to wait for before spreading tasks, e.g. task_server_count = 2 (1 starts at once)",
                    ));
                }
            }
            ResolverSpec::Nodes { task_nodes } => {
                if task_nodes.is_empty() {
                    p.push(Problem::new(
                        "task_nodes",
                        "[]",
                        "the list is empty, so no node could run the task",
                        "list the nodes that may run it, e.g. task_nodes = [\"node-1\", \"node-2\"]",
                    ));
                }
                node_list(&mut p, "task_nodes", task_nodes);
            }
            ResolverSpec::Failover { primary, backups } => {
                node_name(&mut p, "primary", primary);
                if backups.is_empty() {
                    p.push(Problem::new(
                        "backups",
                        "[]",
                        "a failover task needs at least one backup",
                        "list the nodes that take over in order, e.g. backups = [\"node-2\", \"node-3\"]; to pin a task without failover use resolver = \"nodes\" with task_nodes = [\"node-1\"]",
                    ));
                }
                node_list(&mut p, "backups", backups);
                if let Some(i) = backups.iter().position(|b| b == primary) {
                    p.push(Problem::new(
                        format!("backups[{i}]"),
                        primary.as_str(),
                        "the primary is listed among its own backups",
                        "remove it from backups",
                    ));
                }
            }
            ResolverSpec::Custom { name } => {
                if let Err(message) = plain_name(name) {
                    p.push(Problem::from_message(
                        "custom",
                        name,
                        &message,
                        "correct it",
                    ));
                }
            }
        }
        p.extend(label_problems("node_selector", &self.node_selector));
        p
    }
}

impl From<ResolverSpec> for PlacementSpec {
    fn from(resolver: ResolverSpec) -> Self {
        PlacementSpec {
            resolver,
            node_selector: BTreeMap::new(),
        }
    }
}

impl fmt::Display for PlacementSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.resolver {
            ResolverSpec::ActivePassive => f.write_str("active-passive")?,
            ResolverSpec::RoundRobin { task_server_count } => {
                write!(f, "round-robin (task_server_count {task_server_count})")?
            }
            ResolverSpec::Nodes { task_nodes } => write!(f, "nodes [{}]", task_nodes.join(", "))?,
            ResolverSpec::Failover { primary, backups } => {
                write!(f, "failover {primary} => {}", backups.join(", "))?
            }
            ResolverSpec::Custom { name } => write!(f, "custom `{name}`")?,
            ResolverSpec::All => f.write_str("all")?,
        }
        if !self.node_selector.is_empty() {
            write!(f, " on {}", fmt_labels(&self.node_selector))?;
        }
        Ok(())
    }
}

/// Node ids, resolver names, label keys and values follow the rules of node ids.
fn plain_name(value: &str) -> Result<(), String> {
    crate::names::check_name(value)
}

fn node_name(p: &mut Vec<Problem>, field: &str, value: &str) {
    if let Err(message) = plain_name(value) {
        p.push(Problem::from_message(field, value, &message, "correct it"));
    }
}

fn node_list(p: &mut Vec<Problem>, field: &str, names: &[String]) {
    for (i, name) in names.iter().enumerate() {
        node_name(p, &format!("{field}[{i}]"), name);
        if let Some(j) = names[..i].iter().position(|n| n == name) {
            p.push(Problem::new(
                format!("{field}[{i}]"),
                name.as_str(),
                format!("listed twice (also {field}[{j}])"),
                "list each node once",
            ));
        }
    }
}

/// Problems of a label map (`[node] labels` or a `node_selector`), fields under `prefix`.
pub fn label_problems(prefix: &str, labels: &BTreeMap<String, String>) -> Vec<Problem> {
    let mut p = Vec::new();
    for (key, value) in labels {
        if let Err(message) = plain_name(key) {
            p.push(Problem::from_message(
                format!("{prefix}.{key}"),
                key,
                &message.replace("a valid name", "a valid label name"),
                "correct it",
            ));
        }
        if let Err(message) = plain_name(value) {
            p.push(Problem::from_message(
                format!("{prefix}.{key}"),
                value,
                &message.replace("a valid name", "a valid label value"),
                "correct it",
            ));
        }
    }
    p
}

/// `zone=eu, tier=gold`
pub fn fmt_labels(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The placement specs of the tasks one node declares: a default and the exceptions, so
/// a cluster-wide `[placement]` costs a few bytes whatever the number of tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredPlacement {
    /// The spec of every declared task not in `tasks`.
    #[serde(default, skip_serializing_if = "PlacementSpec::is_default")]
    pub default: PlacementSpec,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tasks: BTreeMap<String, PlacementSpec>,
}

impl DeclaredPlacement {
    /// From each task's spec: the most common one becomes the default.
    pub fn from_tasks<'a>(tasks: impl IntoIterator<Item = (&'a str, &'a PlacementSpec)>) -> Self {
        let tasks: Vec<(&str, &PlacementSpec)> = tasks.into_iter().collect();
        let mut counts: BTreeMap<&PlacementSpec, usize> = BTreeMap::new();
        for (_, spec) in &tasks {
            *counts.entry(spec).or_default() += 1;
        }
        // The most common spec; ties go to the default spec, then to the smallest.
        let default = counts
            .iter()
            .max_by(|a, b| {
                a.1.cmp(b.1)
                    .then_with(|| a.0.is_default().cmp(&b.0.is_default()))
                    .then_with(|| b.0.cmp(a.0))
            })
            .map(|(s, _)| (*s).clone())
            .unwrap_or_default();
        DeclaredPlacement {
            tasks: tasks
                .into_iter()
                .filter(|(_, s)| **s != default)
                .map(|(n, s)| (n.to_string(), s.clone()))
                .collect(),
            default,
        }
    }

    /// The spec of a task this node declares.
    pub fn of(&self, task: &str) -> &PlacementSpec {
        self.tasks.get(task).unwrap_or(&self.default)
    }

    pub fn is_default(&self) -> bool {
        self.default.is_default() && self.tasks.is_empty()
    }
}

/// What a node registers besides its tasks: its labels and its tasks' placement specs.
/// Stored with the node's registration (see the store's `JoinRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "DeclaredPlacement::is_default")]
    pub placement: DeclaredPlacement,
}

impl NodeMeta {
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.placement.is_default()
    }
}

/// A live node as placement sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    pub incarnation: i64,
    /// Store time of the node's join: orders nodes (the first up is active-passive's primary).
    pub joined_at_ms: i64,
    /// Announced a graceful stop: keeps nothing, gets nothing.
    pub leaving: bool,
    /// Task name -> definition hash.
    pub declared: BTreeMap<String, String>,
    /// The node's labels (`[node] labels`), for `node_selector`s and custom resolvers.
    pub labels: BTreeMap<String, String>,
    /// The placement spec of each declared task.
    pub placement: DeclaredPlacement,
}

/// The node (and its incarnation) that owns a task.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Owner {
    pub node: String,
    pub incarnation: i64,
}

/// A task and the nodes that may run it, in join order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EligibleTask {
    pub name: String,
    pub eligible: Vec<String>,
    /// The task's spec (the same for every task a resolver is given, but for custom ones).
    pub placement: PlacementSpec,
}

/// What a resolver sees.
#[derive(Debug)]
pub struct ResolveInput<'a> {
    /// Live, non-leaving nodes in join order, with their labels.
    pub nodes: &'a [&'a NodeInfo],
    /// Tasks with at least one eligible node.
    pub tasks: &'a [EligibleTask],
    /// Current valid owner (live, same incarnation, not leaving, eligible) of each task.
    pub current: &'a BTreeMap<String, String>,
    /// Node -> the node it acts as (an operator's act-as).
    pub acting_as: &'a BTreeMap<String, String>,
}

/// Chooses a node for each task among its eligible nodes. Tasks left out stay unplaced.
///
/// Register one with `NodeBuilder::resolver_named` (in `rota`) and give tasks
/// [`PlacementSpec::custom`]; `examples/custom_resolver.rs` is a worked example. The
/// output must be stable: given its own output as `current`, a resolver should return it
/// unchanged, or tasks move at every placement round.
pub trait Resolver: Send + Sync {
    fn name(&self) -> &str;
    fn resolve(&self, input: &ResolveInput<'_>) -> BTreeMap<String, String>;

    /// Why `task` was left out of [`Resolver::resolve`]'s answer, for `rota status` and the
    /// logs. Default: no detail.
    fn unplaced_reason(&self, _input: &ResolveInput<'_>, _task: &EligibleTask) -> Option<String> {
        None
    }
}

/// The seeds' default: all tasks on one node (the one already running most of them, else the
/// first to have joined); they move only when it dies or leaves.
#[derive(Debug, Default, Clone, Copy)]
pub struct ActivePassive;

impl Resolver for ActivePassive {
    fn name(&self) -> &str {
        "active-passive"
    }

    fn resolve(&self, input: &ResolveInput<'_>) -> BTreeMap<String, String> {
        // Rank nodes once: the one already running most tasks, then the one able to run the
        // most, then the first to have joined. Every unowned task goes to its best-ranked
        // eligible node, so the work concentrates on one node whatever the task names.
        let count = |id: &str, iter: &mut dyn Iterator<Item = &String>| {
            iter.filter(|n| n.as_str() == id).count()
        };
        let rank: BTreeMap<&str, (std::cmp::Reverse<usize>, std::cmp::Reverse<usize>, usize)> =
            input
                .nodes
                .iter()
                .enumerate()
                .map(|(order, n)| {
                    let load = count(&n.id, &mut input.current.values());
                    let able = count(
                        &n.id,
                        &mut input.tasks.iter().flat_map(|t| t.eligible.iter()),
                    );
                    (
                        n.id.as_str(),
                        (std::cmp::Reverse(load), std::cmp::Reverse(able), order),
                    )
                })
                .collect();
        input
            .tasks
            .iter()
            .filter_map(|task| {
                let keep = input
                    .current
                    .get(&task.name)
                    .filter(|o| task.eligible.contains(o));
                let node =
                    keep.or_else(|| task.eligible.iter().min_by_key(|id| rank.get(id.as_str())))?;
                Some((task.name.clone(), node.clone()))
            })
            .collect()
    }
}

/// Round-robin as a plain [`Resolver`] (for custom resolvers that delegate to it). Tasks
/// with a [`ResolverSpec::RoundRobin`] spec get the same algorithm, with reasons for the
/// tasks it leaves unplaced.
#[derive(Debug, Clone, Copy)]
pub struct RoundRobin {
    pub task_server_count: usize,
}

impl Resolver for RoundRobin {
    fn name(&self) -> &str {
        "round-robin"
    }

    fn resolve(&self, input: &ResolveInput<'_>) -> BTreeMap<String, String> {
        round_robin(self.task_server_count, input).owners
    }
}

/// Two or more definitions of one task name among live nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub task: String,
    /// The definition in force (the current owner's, else the most declared).
    pub reference_hash: String,
    /// Nodes declaring another definition: not eligible for the task until they agree.
    pub dissenters: Vec<(String, String)>,
}

/// The decision for every task the cluster knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub owners: BTreeMap<String, Owner>,
    /// Task -> why it has no owner.
    pub unplaced: BTreeMap<String, String>,
    pub conflicts: Vec<Conflict>,
    /// Task -> the primary its owner acts for: failover tasks running on another node than
    /// their primary (a backup, or a node acting as the primary).
    pub acting: BTreeMap<String, String>,
    /// Tasks with the `all` resolver -> the nodes running them, in join order. Each node's
    /// share is in `owners` under [`per_node_name`].
    pub everywhere: BTreeMap<String, Vec<String>>,
}

static NO_RESOLVERS: BTreeMap<String, Arc<dyn Resolver>> = BTreeMap::new();
static NO_ACTING: BTreeMap<String, String> = BTreeMap::new();

/// What [`place_with`] needs besides the nodes and the current owners.
#[derive(Clone, Copy)]
pub struct PlaceContext<'a> {
    /// Places tasks whose spec is the default (active-passive): [`ActivePassive`] unless the
    /// node was built with another (`NodeBuilder::resolver` (in `rota`)).
    pub default_resolver: &'a dyn Resolver,
    /// Resolvers registered by name, for [`ResolverSpec::Custom`].
    pub custom: &'a BTreeMap<String, Arc<dyn Resolver>>,
    /// The leader's node id (named when a custom resolver is missing).
    pub leader: &'a str,
    /// Node X -> node Y: X acts as Y. X takes Y's place (just ahead of Y) in the failover
    /// order of every task whose primary or backups name Y, so X runs Y's pinned tasks,
    /// provided it declares them.
    pub acting_as: &'a BTreeMap<String, String>,
}

impl<'a> PlaceContext<'a> {
    pub fn new(default_resolver: &'a dyn Resolver) -> Self {
        PlaceContext {
            default_resolver,
            custom: &NO_RESOLVERS,
            leader: "",
            acting_as: &NO_ACTING,
        }
    }

    pub fn custom(mut self, custom: &'a BTreeMap<String, Arc<dyn Resolver>>) -> Self {
        self.custom = custom;
        self
    }

    pub fn leader(mut self, leader: &'a str) -> Self {
        self.leader = leader;
        self
    }

    pub fn acting_as(mut self, acting_as: &'a BTreeMap<String, String>) -> Self {
        self.acting_as = acting_as;
        self
    }
}

impl fmt::Debug for PlaceContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlaceContext")
            .field("default_resolver", &self.default_resolver.name())
            .field("custom", &self.custom.keys().collect::<Vec<_>>())
            .field("leader", &self.leader)
            .field("acting_as", &self.acting_as)
            .finish()
    }
}

/// [`place_with`] with `resolver` as the default resolver (for tasks whose spec is the
/// default, active-passive), no custom resolvers and nobody acting as another node.
pub fn place(
    resolver: &dyn Resolver,
    nodes: &[NodeInfo],
    current: &BTreeMap<String, Owner>,
) -> Placement {
    place_with(&PlaceContext::new(resolver), nodes, current)
}

/// Computes the placement. `nodes` are the live nodes (any order); `current` maps each task
/// to its recorded owner, which counts only if that node is live with the same incarnation.
/// Every task some node declares ends up in `owners` or in `unplaced` (with the reason).
pub fn place_with(
    ctx: &PlaceContext<'_>,
    nodes: &[NodeInfo],
    current: &BTreeMap<String, Owner>,
) -> Placement {
    let mut ordered: Vec<&NodeInfo> = nodes.iter().collect();
    ordered.sort_by(|a, b| (a.joined_at_ms, &a.id).cmp(&(b.joined_at_ms, &b.id)));
    let candidates: Vec<&NodeInfo> = ordered.iter().copied().filter(|n| !n.leaving).collect();

    let valid_owner = |task: &str| -> Option<&NodeInfo> {
        let owner = current.get(task)?;
        candidates
            .iter()
            .copied()
            .find(|n| n.id == owner.node && n.incarnation == owner.incarnation)
    };

    let names: BTreeSet<&String> = ordered.iter().flat_map(|n| n.declared.keys()).collect();
    let mut placement = Placement::default();
    // Tasks grouped by spec; each group goes to one resolver.
    let mut groups: BTreeMap<PlacementSpec, Vec<EligibleTask>> = BTreeMap::new();
    let mut current_valid = BTreeMap::new();
    for name in names {
        let declaring: Vec<(&NodeInfo, &String)> = candidates
            .iter()
            .filter_map(|n| n.declared.get(name).map(|h| (*n, h)))
            .collect();
        if declaring.is_empty() {
            placement.unplaced.insert(
                name.clone(),
                "declared only by nodes that are leaving".into(),
            );
            continue;
        }
        let owner = valid_owner(name);
        let reference = match owner.and_then(|o| o.declared.get(name)) {
            Some(hash) => hash.clone(),
            None => most_declared(&declaring),
        };
        let dissenters: Vec<(String, String)> = declaring
            .iter()
            .filter(|(_, h)| **h != reference)
            .map(|(n, h)| (n.id.clone(), (*h).clone()))
            .collect();
        if !dissenters.is_empty() {
            placement.conflicts.push(Conflict {
                task: name.clone(),
                reference_hash: reference.clone(),
                dissenters,
            });
        }
        let agreeing: Vec<&NodeInfo> = declaring
            .iter()
            .filter(|(_, h)| **h == reference)
            .map(|(n, _)| *n)
            .collect();
        // The spec is part of the definition: every agreeing node declares the same one.
        let spec = owner
            .filter(|o| agreeing.iter().any(|n| n.id == o.id))
            .unwrap_or(agreeing[0])
            .placement
            .of(name)
            .clone();
        let eligible: Vec<String> = agreeing
            .iter()
            .filter(|n| spec.selects(&n.labels))
            .map(|n| n.id.clone())
            .collect();
        if eligible.is_empty() {
            placement.unplaced.insert(
                name.clone(),
                format!(
                    "no live node declaring it has the labels {} (its node_selector)",
                    fmt_labels(&spec.node_selector)
                ),
            );
            continue;
        }
        if let Some(o) = owner.filter(|o| eligible.contains(&o.id)) {
            current_valid.insert(name.clone(), o.id.clone());
        }
        groups.entry(spec.clone()).or_default().push(EligibleTask {
            name: name.clone(),
            eligible,
            placement: spec,
        });
    }

    for (spec, tasks) in &groups {
        let current: BTreeMap<String, String> = tasks
            .iter()
            .filter_map(|t| {
                current_valid
                    .get(&t.name)
                    .map(|o| (t.name.clone(), o.clone()))
            })
            .collect();
        let input = ResolveInput {
            nodes: &candidates,
            tasks,
            current: &current,
            acting_as: ctx.acting_as,
        };
        let decision = match &spec.resolver {
            ResolverSpec::ActivePassive => run_resolver(ctx.default_resolver, &input),
            ResolverSpec::RoundRobin { task_server_count } => {
                round_robin(*task_server_count, &input)
            }
            ResolverSpec::Nodes { task_nodes } => pinned_to(task_nodes, &input),
            ResolverSpec::Failover { primary, backups } => failover(primary, backups, &input),
            ResolverSpec::All => everywhere(tasks, &candidates, &mut placement),
            ResolverSpec::Custom { name } => match ctx.custom.get(name) {
                Some(resolver) => run_resolver(resolver.as_ref(), &input),
                None => Decision::none(
                    tasks,
                    &format!(
                        "resolver `{name}` is not registered on the leader node `{}`",
                        ctx.leader
                    ),
                ),
            },
        };
        for (task, node) in decision.owners {
            let incarnation = candidates
                .iter()
                .find(|n| n.id == node)
                .map(|n| n.incarnation)
                .unwrap_or(0);
            placement.owners.insert(task, Owner { node, incarnation });
        }
        placement.unplaced.extend(decision.unplaced);
        placement.acting.extend(decision.acting);
    }
    // Shares of `all` tasks held by nodes that no longer run them.
    for name in current.keys() {
        if let Some((task, node)) = split_per_node_name(name) {
            if !placement.owners.contains_key(name) {
                let why = if placement.everywhere.contains_key(task) {
                    format!("`{node}` is not live, or not eligible for `{task}`")
                } else {
                    format!("`{task}` no longer runs on every node")
                };
                placement.unplaced.insert(name.clone(), why);
            }
        }
    }
    placement
}

/// The `all` resolver: every eligible node gets its own share of each task.
fn everywhere(
    tasks: &[EligibleTask],
    candidates: &[&NodeInfo],
    placement: &mut Placement,
) -> Decision {
    for task in tasks {
        for node in &task.eligible {
            let incarnation = candidates
                .iter()
                .find(|n| n.id == *node)
                .map_or(0, |n| n.incarnation);
            placement.owners.insert(
                per_node_name(&task.name, node),
                Owner {
                    node: node.clone(),
                    incarnation,
                },
            );
        }
        placement
            .everywhere
            .insert(task.name.clone(), task.eligible.clone());
    }
    Decision::default()
}

/// What one group's resolver decided.
#[derive(Debug, Default)]
struct Decision {
    owners: BTreeMap<String, String>,
    unplaced: BTreeMap<String, String>,
    acting: BTreeMap<String, String>,
}

impl Decision {
    fn none(tasks: &[EligibleTask], reason: &str) -> Decision {
        Decision {
            unplaced: tasks
                .iter()
                .map(|t| (t.name.clone(), reason.to_string()))
                .collect(),
            ..Decision::default()
        }
    }
}

/// Runs a [`Resolver`] and keeps only choices of eligible nodes.
fn run_resolver(resolver: &dyn Resolver, input: &ResolveInput<'_>) -> Decision {
    let chosen = resolver.resolve(input);
    let mut decision = Decision::default();
    for task in input.tasks {
        match chosen.get(&task.name) {
            Some(node) if task.eligible.contains(node) => {
                decision.owners.insert(task.name.clone(), node.clone());
            }
            Some(node) => {
                decision.unplaced.insert(
                    task.name.clone(),
                    format!(
                        "resolver `{}` chose `{node}`, which is not eligible",
                        resolver.name()
                    ),
                );
            }
            None => {
                let reason = match resolver.unplaced_reason(input, task) {
                    Some(why) => format!("resolver `{}` placed it nowhere: {why}", resolver.name()),
                    None => format!("resolver `{}` placed it nowhere", resolver.name()),
                };
                decision.unplaced.insert(task.name.clone(), reason);
            }
        }
    }
    decision
}

/// Round-robin: wait for `count` servers, then balance, moving as little as possible.
///
/// Current owners keep their tasks, tasks without one go to their least-loaded eligible
/// node, then single moves from a node to an eligible one at least two tasks lighter are
/// made, heaviest nodes first, until none is left. Every move lowers the sum of squared
/// loads, so this ends; its result is its own fixed point (run again on it, nothing moves).
/// With the same eligible nodes for every task the result has max - min <= 1, a join moves
/// only the tasks the newcomer takes (at most ceil(tasks / nodes)), and a leave moves only
/// the leaver's tasks.
fn round_robin(count: usize, input: &ResolveInput<'_>) -> Decision {
    let count = count.max(1);
    let position: BTreeMap<&str, usize> = input
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let eligible: Vec<Vec<usize>> = input
        .tasks
        .iter()
        .map(|t| {
            t.eligible
                .iter()
                .filter_map(|id| position.get(id.as_str()).copied())
                .collect()
        })
        .collect();
    let servers: BTreeSet<usize> = eligible.iter().flatten().copied().collect();
    let started = input
        .tasks
        .iter()
        .any(|t| input.current.contains_key(&t.name));
    if servers.len() < count && !started {
        let live: Vec<&str> = servers
            .iter()
            .map(|&i| input.nodes[i].id.as_str())
            .collect();
        return Decision::none(
            input.tasks,
            &format!(
                "waiting for {count} servers, {} live ({}): round-robin places nothing until task_server_count nodes able to run the task are up",
                live.len(),
                live.join(", ")
            ),
        );
    }

    let mut load = vec![0usize; input.nodes.len()];
    let mut owner: Vec<Option<usize>> = vec![None; input.tasks.len()];
    let mut tasks_on: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); input.nodes.len()];
    for (t, task) in input.tasks.iter().enumerate() {
        let kept = input
            .current
            .get(&task.name)
            .and_then(|o| position.get(o.as_str()).copied())
            .filter(|n| eligible[t].contains(n));
        if let Some(n) = kept {
            owner[t] = Some(n);
            load[n] += 1;
            tasks_on[n].insert(t);
        }
    }
    let lightest = |load: &[usize], t: usize| -> Option<usize> {
        eligible[t].iter().copied().min_by_key(|&n| (load[n], n))
    };
    // Tasks with fewer choices first, so they get them.
    let mut orphans: Vec<usize> = (0..input.tasks.len())
        .filter(|&t| owner[t].is_none())
        .collect();
    orphans.sort_by_key(|&t| (eligible[t].len(), t));
    for t in orphans {
        if let Some(n) = lightest(&load, t) {
            owner[t] = Some(n);
            load[n] += 1;
            tasks_on[n].insert(t);
        }
    }
    while let Some(min) = servers.iter().map(|&n| load[n]).min() {
        let mut heaviest: Vec<usize> = servers.iter().copied().collect();
        heaviest.sort_by_key(|&n| (std::cmp::Reverse(load[n]), n));
        let found = heaviest
            .iter()
            .take_while(|&&src| load[src] >= min + 2)
            .find_map(|&src| {
                tasks_on[src].iter().find_map(|&t| {
                    lightest(&load, t)
                        .filter(|&dst| load[dst] + 2 <= load[src])
                        .map(|dst| (src, t, dst))
                })
            });
        let Some((src, t, dst)) = found else {
            break;
        };
        tasks_on[src].remove(&t);
        tasks_on[dst].insert(t);
        load[src] -= 1;
        load[dst] += 1;
        owner[t] = Some(dst);
    }
    Decision {
        owners: input
            .tasks
            .iter()
            .zip(&owner)
            .filter_map(|(task, o)| o.map(|n| (task.name.clone(), input.nodes[n].id.clone())))
            .collect(),
        ..Decision::default()
    }
}

/// `nodes`: only the listed nodes, active-passive among them.
fn pinned_to(task_nodes: &[String], input: &ResolveInput<'_>) -> Decision {
    let listed = |id: &String| task_nodes.contains(id);
    let mut decision = Decision::default();
    let mut tasks = Vec::new();
    for task in input.tasks {
        let eligible: Vec<String> = task
            .eligible
            .iter()
            .filter(|n| listed(n))
            .cloned()
            .collect();
        if eligible.is_empty() {
            let live: Vec<&str> = input
                .nodes
                .iter()
                .filter(|n| listed(&n.id))
                .map(|n| n.id.as_str())
                .collect();
            let reason = if live.is_empty() {
                format!("no live node among task_nodes [{}]", task_nodes.join(", "))
            } else {
                format!(
                    "the live task_nodes ({}) cannot run it: {}",
                    live.join(", "),
                    why_not_eligible(&task.placement)
                )
            };
            decision.unplaced.insert(task.name.clone(), reason);
        } else {
            tasks.push(EligibleTask {
                eligible,
                ..task.clone()
            });
        }
    }
    let current: BTreeMap<String, String> = input
        .current
        .iter()
        .filter(|(_, o)| listed(o))
        .map(|(t, o)| (t.clone(), o.clone()))
        .collect();
    let inner = run_resolver(
        &ActivePassive,
        &ResolveInput {
            tasks: &tasks,
            current: &current,
            ..*input
        },
    );
    decision.owners = inner.owners;
    decision.unplaced.extend(inner.unplaced);
    decision
}

fn why_not_eligible(spec: &PlacementSpec) -> String {
    if spec.node_selector.is_empty() {
        "they do not declare it with the definition in force".to_string()
    } else {
        format!(
            "they do not declare it with the definition in force, or lack the labels {}",
            fmt_labels(&spec.node_selector)
        )
    }
}

/// The failover order: each slot of `[primary, backups..]` preceded by the nodes acting as it.
fn failover_order<'a>(
    primary: &'a str,
    backups: &'a [String],
    acting_as: &'a BTreeMap<String, String>,
) -> Vec<&'a str> {
    let mut order: Vec<&str> = Vec::new();
    for slot in std::iter::once(primary).chain(backups.iter().map(String::as_str)) {
        let actors = acting_as
            .iter()
            .filter(|(_, target)| target.as_str() == slot)
            .map(|(actor, _)| actor.as_str());
        for id in actors.chain(std::iter::once(slot)) {
            if !order.contains(&id) {
                order.push(id);
            }
        }
    }
    order
}

/// `failover`: the first eligible node of the order; failback is automatic since the choice
/// does not depend on who runs the task now.
fn failover(primary: &str, backups: &[String], input: &ResolveInput<'_>) -> Decision {
    let order = failover_order(primary, backups, input.acting_as);
    let mut decision = Decision::default();
    for task in input.tasks {
        match order
            .iter()
            .find(|id| task.eligible.iter().any(|e| e == *id))
        {
            Some(id) => {
                decision.owners.insert(task.name.clone(), id.to_string());
                if *id != primary {
                    decision
                        .acting
                        .insert(task.name.clone(), primary.to_string());
                }
            }
            None => {
                let live: Vec<&str> = order
                    .iter()
                    .copied()
                    .filter(|id| input.nodes.iter().any(|n| n.id == *id))
                    .collect();
                let reason = if live.is_empty() {
                    format!(
                        "primary {primary} and backups [{}] all down",
                        backups.join(", ")
                    )
                } else {
                    format!(
                        "primary {primary} and backups [{}]: the live ones ({}) cannot run it: {}",
                        backups.join(", "),
                        live.join(", "),
                        why_not_eligible(&task.placement)
                    )
                };
                decision.unplaced.insert(task.name.clone(), reason);
            }
        }
    }
    decision
}

/// The definition most live nodes declare; ties go to the earliest-joined node's.
fn most_declared(declaring: &[(&NodeInfo, &String)]) -> String {
    let mut counts: Vec<(&String, usize)> = Vec::new();
    for (_, hash) in declaring {
        match counts.iter_mut().find(|(h, _)| h == hash) {
            Some((_, c)) => *c += 1,
            None => counts.push((hash, 1)),
        }
    }
    // `counts` is in join order of first declaration; max_by_key keeps the last max, so fold.
    let mut best = counts[0];
    for entry in &counts[1..] {
        if entry.1 > best.1 {
            best = *entry;
        }
    }
    best.0.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, joined: i64, tasks: &[(&str, &str)]) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            incarnation: 1,
            joined_at_ms: joined,
            declared: tasks
                .iter()
                .map(|(t, h)| (t.to_string(), h.to_string()))
                .collect(),
            ..NodeInfo::default()
        }
    }

    /// A node declaring `tasks` (same hash) all with `spec`.
    fn spec_node(id: &str, joined: i64, tasks: &[&str], spec: &PlacementSpec) -> NodeInfo {
        let mut n = node(id, joined, &[]);
        n.declared = tasks.iter().map(|t| (t.to_string(), "h".into())).collect();
        n.placement = DeclaredPlacement {
            default: spec.clone(),
            tasks: BTreeMap::new(),
        };
        n
    }

    fn owner(node: &str) -> Owner {
        Owner {
            node: node.into(),
            incarnation: 1,
        }
    }

    fn owners_of(p: &Placement) -> BTreeMap<&str, &str> {
        p.owners
            .iter()
            .map(|(t, o)| (t.as_str(), o.node.as_str()))
            .collect()
    }

    fn as_current(p: &Placement) -> BTreeMap<String, Owner> {
        p.owners.clone()
    }

    fn loads(p: &Placement) -> BTreeMap<&str, usize> {
        let mut l = BTreeMap::new();
        for o in p.owners.values() {
            *l.entry(o.node.as_str()).or_default() += 1;
        }
        l
    }

    #[test]
    fn all_runs_a_share_on_every_eligible_node() {
        let all = PlacementSpec::all();
        let mut nodes = vec![
            spec_node("a", 1, &["t"], &all),
            spec_node("b", 2, &["t"], &all),
            spec_node("c", 3, &["t"], &all.clone().on_label("zone", "eu")),
        ];
        nodes[2].labels = BTreeMap::from([("zone".to_string(), "eu".to_string())]);
        // c declares another spec (a node_selector), so another definition hash in real
        // life; here the same hash: its own spec still applies to its eligibility.
        let p = place(&ActivePassive, &nodes, &BTreeMap::new());
        assert_eq!(
            owners_of(&p),
            BTreeMap::from([("t@a", "a"), ("t@b", "b"), ("t@c", "c")])
        );
        assert_eq!(p.everywhere["t"], vec!["a", "b", "c"]);
        assert!(p.unplaced.is_empty());
        // b leaves, c dies: their shares are unplaced with the reason; a keeps its share.
        nodes[1].leaving = true;
        let after = place(&ActivePassive, &nodes[..2], &as_current(&p));
        assert_eq!(owners_of(&after), BTreeMap::from([("t@a", "a")]));
        assert!(
            after.unplaced["t@b"].contains("not live"),
            "{:?}",
            after.unplaced
        );
        assert!(
            after.unplaced["t@c"].contains("not live"),
            "{:?}",
            after.unplaced
        );
        assert_eq!(after.everywhere["t"], vec!["a"]);
    }

    #[test]
    fn active_passive_puts_everything_on_the_first_node() {
        let nodes = [
            node("b", 2, &[("t1", "h"), ("t2", "h")]),
            node("a", 1, &[("t1", "h"), ("t2", "h")]),
        ];
        let p = place(&ActivePassive, &nodes, &BTreeMap::new());
        assert_eq!(owners_of(&p), BTreeMap::from([("t1", "a"), ("t2", "a")]));
        assert!(p.unplaced.is_empty() && p.conflicts.is_empty() && p.acting.is_empty());
    }

    #[test]
    fn active_passive_keeps_current_owner_and_moves_all_together_when_it_dies() {
        let nodes = [
            node("a", 1, &[("t1", "h"), ("t2", "h")]),
            node("b", 2, &[("t1", "h"), ("t2", "h")]),
        ];
        let current = BTreeMap::from([
            ("t1".to_string(), owner("b")),
            ("t2".to_string(), owner("b")),
        ]);
        let p = place(&ActivePassive, &nodes, &current);
        assert_eq!(
            owners_of(&p),
            BTreeMap::from([("t1", "b"), ("t2", "b")]),
            "no move while the owner lives"
        );

        let survivors = [
            node("a", 1, &[("t1", "h"), ("t2", "h")]),
            node("c", 3, &[("t1", "h"), ("t2", "h")]),
        ];
        let p = place(&ActivePassive, &survivors, &current);
        assert_eq!(
            owners_of(&p),
            BTreeMap::from([("t1", "a"), ("t2", "a")]),
            "all move to one survivor"
        );
    }

    #[test]
    fn a_restarted_incarnation_does_not_keep_old_assignments() {
        let mut a = node("a", 1, &[("t", "h")]);
        a.incarnation = 2;
        let current = BTreeMap::from([("t".to_string(), owner("a"))]);
        let p = place(&ActivePassive, &[a, node("b", 2, &[("t", "h")])], &current);
        assert_eq!(
            p.owners["t"],
            Owner {
                node: "a".into(),
                incarnation: 2
            },
            "re-placed with the new incarnation"
        );
    }

    #[test]
    fn task_goes_only_to_nodes_that_declare_it_and_work_stays_together() {
        let nodes = [
            node("a", 1, &[("t1", "h")]),
            node("b", 2, &[("t1", "h"), ("zz-only-b", "h")]),
        ];
        let p = place(&ActivePassive, &nodes, &BTreeMap::new());
        assert_eq!(
            owners_of(&p),
            BTreeMap::from([("t1", "b"), ("zz-only-b", "b")]),
            "b can run everything"
        );
        let nodes = [
            node("a", 1, &[("t1", "h"), ("t2", "h")]),
            node("b", 2, &[("t1", "h"), ("only-b", "h")]),
        ];
        let p = place(&ActivePassive, &nodes, &BTreeMap::new());
        assert_eq!(
            owners_of(&p),
            BTreeMap::from([("t1", "a"), ("t2", "a"), ("only-b", "b")])
        );
    }

    #[test]
    fn leaving_nodes_keep_nothing() {
        let mut a = node("a", 1, &[("t", "h"), ("solo", "h")]);
        a.leaving = true;
        let current = BTreeMap::from([("t".to_string(), owner("a"))]);
        let p = place(&ActivePassive, &[a, node("b", 2, &[("t", "h")])], &current);
        assert_eq!(owners_of(&p), BTreeMap::from([("t", "b")]));
        assert!(p.unplaced["solo"].contains("leaving"));
    }

    #[test]
    fn conflicting_definitions_are_reported_and_the_owner_definition_stays_in_force() {
        let nodes = [
            node("a", 1, &[("t", "h1")]),
            node("b", 2, &[("t", "h2")]),
            node("c", 3, &[("t", "h2")]),
        ];
        let current = BTreeMap::from([("t".to_string(), owner("a"))]);
        let p = place(&ActivePassive, &nodes, &current);
        assert_eq!(owners_of(&p), BTreeMap::from([("t", "a")]));
        assert_eq!(
            p.conflicts,
            vec![Conflict {
                task: "t".into(),
                reference_hash: "h1".into(),
                dissenters: vec![("b".into(), "h2".into()), ("c".into(), "h2".into())],
            }]
        );
        // Without an owner, the most declared definition wins and its nodes are eligible.
        let p = place(&ActivePassive, &nodes, &BTreeMap::new());
        assert_eq!(owners_of(&p), BTreeMap::from([("t", "b")]));
        assert_eq!(
            p.conflicts[0].dissenters,
            vec![("a".to_string(), "h1".to_string())]
        );
    }

    #[test]
    fn resolver_cannot_place_on_an_ineligible_node() {
        struct Rogue;
        impl Resolver for Rogue {
            fn name(&self) -> &str {
                "rogue"
            }
            fn resolve(&self, input: &ResolveInput<'_>) -> BTreeMap<String, String> {
                input
                    .tasks
                    .iter()
                    .map(|t| (t.name.clone(), "nowhere".to_string()))
                    .collect()
            }
        }
        let p = place(&Rogue, &[node("a", 1, &[("t", "h")])], &BTreeMap::new());
        assert!(p.owners.is_empty());
        assert!(p.unplaced["t"].contains("not eligible"));
    }

    #[test]
    fn specs_serialize_like_the_config_keys() {
        let spec = PlacementSpec::failover("node-1", ["node-2", "node-3"]).on_label("zone", "eu");
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(
            json,
            r#"{"resolver":"failover","primary":"node-1","backups":["node-2","node-3"],"node_selector":{"zone":"eu"}}"#
        );
        assert_eq!(serde_json::from_str::<PlacementSpec>(&json).unwrap(), spec);
        assert_eq!(
            PlacementSpec::round_robin(2).canonical(),
            r#"{"resolver":"round-robin","task_server_count":2}"#
        );
        assert_eq!(
            spec.to_string(),
            "failover node-1 => node-2, node-3 on zone=eu"
        );
        for s in [
            PlacementSpec::active_passive(),
            PlacementSpec::nodes(["a"]),
            PlacementSpec::custom("mine"),
        ] {
            let back: PlacementSpec = serde_json::from_str(&s.canonical()).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn node_meta_is_compact_and_round_trips() {
        let rr = PlacementSpec::round_robin(2);
        let fo = PlacementSpec::failover("a", ["b"]);
        let placement = DeclaredPlacement::from_tasks([("t1", &rr), ("t2", &rr), ("t3", &fo)]);
        assert_eq!(placement.default, rr);
        assert_eq!(
            placement.tasks,
            BTreeMap::from([("t3".to_string(), fo.clone())])
        );
        assert_eq!(placement.of("t1"), &rr);
        assert_eq!(placement.of("t3"), &fo);
        let meta = NodeMeta {
            labels: BTreeMap::from([("zone".to_string(), "eu".to_string())]),
            placement,
        };
        assert!(!meta.is_empty());
        let json = serde_json::to_string(&meta).unwrap();
        assert_eq!(serde_json::from_str::<NodeMeta>(&json).unwrap(), meta);
        // Defaults everywhere: nothing to publish.
        let ap = PlacementSpec::default();
        let plain = NodeMeta {
            labels: BTreeMap::new(),
            placement: DeclaredPlacement::from_tasks([("t", &ap)]),
        };
        assert!(plain.is_empty());
        assert_eq!(serde_json::to_string(&plain).unwrap(), "{}");
        // Newer nodes may publish more.
        let newer: NodeMeta =
            serde_json::from_str(r#"{"labels":{"zone":"a"},"future":1}"#).unwrap();
        assert_eq!(newer.labels["zone"], "a");
    }

    #[test]
    fn spec_problems_name_field_value_and_fix() {
        let fields = |s: PlacementSpec| -> Vec<String> {
            s.problems().into_iter().map(|p| p.field).collect()
        };
        assert!(PlacementSpec::round_robin(2).problems().is_empty());
        assert!(PlacementSpec::failover("ghost", ["n2"])
            .problems()
            .is_empty());
        assert_eq!(fields(PlacementSpec::round_robin(0)), ["task_server_count"]);
        assert_eq!(
            fields(PlacementSpec::nodes(Vec::<String>::new())),
            ["task_nodes"]
        );
        assert_eq!(
            fields(PlacementSpec::nodes(["a", "b c", "a"])),
            ["task_nodes[1]", "task_nodes[2]"]
        );
        assert_eq!(
            fields(PlacementSpec::failover("a", ["b", "a"])),
            ["backups[1]"]
        );
        assert_eq!(
            fields(PlacementSpec::failover("a", Vec::<String>::new())),
            ["backups"]
        );
        assert_eq!(fields(PlacementSpec::custom("")), ["custom"]);
        assert_eq!(
            fields(PlacementSpec::active_passive().on_label("zone", "e u")),
            ["node_selector.zone"]
        );
        let p = &PlacementSpec::failover("a", ["a"]).problems()[0];
        assert_eq!(p.value, "a");
        assert!(
            p.reason.contains("primary") && p.fix.contains("remove"),
            "{p}"
        );
    }

    #[test]
    fn round_robin_waits_for_task_server_count_then_spreads_evenly() {
        let rr = PlacementSpec::round_robin(2);
        let tasks = ["t1", "t2", "t3", "t4", "t5"];
        let alone = [spec_node("a", 1, &tasks, &rr)];
        let p = place(&ActivePassive, &alone, &BTreeMap::new());
        assert!(p.owners.is_empty());
        assert_eq!(p.unplaced.len(), 5);
        assert!(
            p.unplaced["t1"].starts_with("waiting for 2 servers, 1 live (a)"),
            "{}",
            p.unplaced["t1"]
        );

        let two = [
            spec_node("a", 1, &tasks, &rr),
            spec_node("b", 2, &tasks, &rr),
        ];
        let p = place(&ActivePassive, &two, &BTreeMap::new());
        assert!(p.unplaced.is_empty());
        assert_eq!(loads(&p), BTreeMap::from([("a", 3), ("b", 2)]));

        // A third joins: it takes only its share, from the heaviest node.
        let three = [
            spec_node("a", 1, &tasks, &rr),
            spec_node("b", 2, &tasks, &rr),
            spec_node("c", 3, &tasks, &rr),
        ];
        let q = place(&ActivePassive, &three, &as_current(&p));
        assert_eq!(loads(&q), BTreeMap::from([("a", 2), ("b", 2), ("c", 1)]));
        let moved = tasks
            .iter()
            .filter(|t| p.owners[**t] != q.owners[**t])
            .count();
        assert_eq!(moved, 1);

        // Placement is its own fixed point.
        assert_eq!(place(&ActivePassive, &three, &as_current(&q)), q);

        // Below task_server_count once started (a node died): the survivor takes everything.
        let survivor = [spec_node("b", 2, &tasks, &rr)];
        let r = place(&ActivePassive, &survivor, &as_current(&q));
        assert_eq!(loads(&r), BTreeMap::from([("b", 5)]));
    }

    #[test]
    fn round_robin_leave_moves_only_the_leavers_tasks() {
        let rr = PlacementSpec::round_robin(1);
        let tasks: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
        let tasks: Vec<&str> = tasks.iter().map(String::as_str).collect();
        let mut nodes: Vec<NodeInfo> = ["a", "b", "c", "d"]
            .iter()
            .enumerate()
            .map(|(i, id)| spec_node(id, i as i64, &tasks, &rr))
            .collect();
        let p = place(&ActivePassive, &nodes, &BTreeMap::new());
        let l = loads(&p);
        assert!(
            l.values().max().unwrap() - l.values().min().unwrap() <= 1,
            "{l:?}"
        );
        nodes[1].leaving = true;
        let q = place(&ActivePassive, &nodes, &as_current(&p));
        for t in &tasks {
            if p.owners[*t].node != "b" {
                assert_eq!(p.owners[*t], q.owners[*t], "{t} moved");
            }
        }
        let l = loads(&q);
        assert_eq!(l.len(), 3);
        assert!(
            l.values().max().unwrap() - l.values().min().unwrap() <= 1,
            "{l:?}"
        );
    }

    #[test]
    fn nodes_resolver_keeps_tasks_on_the_listed_nodes() {
        let spec = PlacementSpec::nodes(["node-1", "node-x"]);
        let nodes = [
            spec_node("node-0", 0, &["t"], &spec),
            spec_node("node-1", 1, &["t"], &spec),
        ];
        let p = place(&ActivePassive, &nodes, &BTreeMap::new());
        assert_eq!(owners_of(&p), BTreeMap::from([("t", "node-1")]));

        let p = place(&ActivePassive, &nodes[..1], &BTreeMap::new());
        assert_eq!(
            p.unplaced["t"],
            "no live node among task_nodes [node-1, node-x]"
        );
        // node-1 is live but declares another definition.
        let mut other = spec_node("node-1", 1, &["t"], &spec);
        other.declared.insert("t".into(), "h2".into());
        let p = place(
            &ActivePassive,
            &[spec_node("node-0", 0, &["t"], &spec), other],
            &BTreeMap::new(),
        );
        assert!(
            p.unplaced["t"].starts_with("the live task_nodes (node-1) cannot run it"),
            "{}",
            p.unplaced["t"]
        );
    }

    #[test]
    fn failover_follows_the_matrix_and_fails_back() {
        let spec = PlacementSpec::failover("node-1", ["node-2", "node-3"]);
        let all = |ids: &[&str]| -> Vec<NodeInfo> {
            ids.iter()
                .enumerate()
                .map(|(i, id)| spec_node(id, i as i64, &["svc"], &spec))
                .collect()
        };
        let p = place(
            &ActivePassive,
            &all(&["node-3", "node-2", "node-1"]),
            &BTreeMap::new(),
        );
        assert_eq!(owners_of(&p), BTreeMap::from([("svc", "node-1")]));
        assert!(p.acting.is_empty());

        let p2 = place(&ActivePassive, &all(&["node-3", "node-2"]), &as_current(&p));
        assert_eq!(owners_of(&p2), BTreeMap::from([("svc", "node-2")]));
        assert_eq!(p2.acting["svc"], "node-1", "node-2 acts for node-1");

        let p3 = place(&ActivePassive, &all(&["node-3"]), &as_current(&p2));
        assert_eq!(owners_of(&p3), BTreeMap::from([("svc", "node-3")]));

        // node-1 returns: failback at once, although node-3 runs it fine.
        let p4 = place(
            &ActivePassive,
            &all(&["node-3", "node-1"]),
            &as_current(&p3),
        );
        assert_eq!(owners_of(&p4), BTreeMap::from([("svc", "node-1")]));
        assert!(p4.acting.is_empty());

        let p5 = place(&ActivePassive, &all(&["node-4"]), &BTreeMap::new());
        assert_eq!(
            p5.unplaced["svc"],
            "primary node-1 and backups [node-2, node-3] all down"
        );
    }

    #[test]
    fn a_node_acting_as_another_takes_its_place_in_the_failover_order() {
        let spec = PlacementSpec::failover("node-1", ["node-2"]);
        let nodes: Vec<NodeInfo> = ["node-1", "node-2", "node-9"]
            .iter()
            .enumerate()
            .map(|(i, id)| spec_node(id, i as i64, &["svc"], &spec))
            .collect();
        let acting = BTreeMap::from([("node-9".to_string(), "node-1".to_string())]);
        let ctx = PlaceContext::new(&ActivePassive).acting_as(&acting);
        let p = place_with(&ctx, &nodes, &BTreeMap::new());
        assert_eq!(owners_of(&p), BTreeMap::from([("svc", "node-9")]));
        assert_eq!(p.acting["svc"], "node-1");
        // Acting as the backup: takes over only when the primary is gone.
        let acting = BTreeMap::from([("node-9".to_string(), "node-2".to_string())]);
        let ctx = PlaceContext::new(&ActivePassive).acting_as(&acting);
        assert_eq!(
            owners_of(&place_with(&ctx, &nodes, &BTreeMap::new())),
            BTreeMap::from([("svc", "node-1")])
        );
        assert_eq!(
            owners_of(&place_with(&ctx, &nodes[1..], &BTreeMap::new())),
            BTreeMap::from([("svc", "node-9")])
        );
        assert_eq!(
            failover_order("a", &["b".to_string()], &acting),
            ["a", "b"],
            "no one acts as a or b here"
        );
    }

    #[test]
    fn node_selector_filters_eligible_nodes() {
        let eu = PlacementSpec::active_passive().on_label("zone", "eu");
        let mut a = spec_node("a", 1, &["t"], &eu);
        a.labels.insert("zone".into(), "us".into());
        let mut b = spec_node("b", 2, &["t"], &eu);
        b.labels.insert("zone".into(), "eu".into());
        let p = place(&ActivePassive, &[a.clone(), b], &BTreeMap::new());
        assert_eq!(owners_of(&p), BTreeMap::from([("t", "b")]));
        let p = place(&ActivePassive, &[a], &BTreeMap::new());
        assert_eq!(
            p.unplaced["t"],
            "no live node declaring it has the labels zone=eu (its node_selector)"
        );
    }

    #[test]
    fn custom_resolvers_are_found_by_name_or_reported_missing() {
        struct Last;
        impl Resolver for Last {
            fn name(&self) -> &str {
                "last"
            }
            fn resolve(&self, input: &ResolveInput<'_>) -> BTreeMap<String, String> {
                input
                    .tasks
                    .iter()
                    .filter_map(|t| Some((t.name.clone(), t.eligible.last()?.clone())))
                    .collect()
            }
        }
        let spec = PlacementSpec::custom("last");
        let nodes = [
            spec_node("a", 1, &["t"], &spec),
            spec_node("b", 2, &["t"], &spec),
        ];
        let registry: BTreeMap<String, Arc<dyn Resolver>> =
            BTreeMap::from([("last".to_string(), Arc::new(Last) as Arc<dyn Resolver>)]);
        let ctx = PlaceContext::new(&ActivePassive)
            .custom(&registry)
            .leader("a");
        assert_eq!(
            owners_of(&place_with(&ctx, &nodes, &BTreeMap::new())),
            BTreeMap::from([("t", "b")])
        );
        struct Picky;
        impl Resolver for Picky {
            fn name(&self) -> &str {
                "picky"
            }
            fn resolve(&self, _: &ResolveInput<'_>) -> BTreeMap<String, String> {
                BTreeMap::new()
            }
            fn unplaced_reason(&self, _: &ResolveInput<'_>, task: &EligibleTask) -> Option<String> {
                Some(format!("{} nodes are not enough", task.eligible.len()))
            }
        }
        let registry: BTreeMap<String, Arc<dyn Resolver>> =
            BTreeMap::from([("last".to_string(), Arc::new(Picky) as Arc<dyn Resolver>)]);
        let ctx = PlaceContext::new(&ActivePassive).custom(&registry);
        assert_eq!(
            place_with(&ctx, &nodes, &BTreeMap::new()).unplaced["t"],
            "resolver `picky` placed it nowhere: 2 nodes are not enough"
        );
        let ctx = PlaceContext::new(&ActivePassive).leader("a");
        let p = place_with(&ctx, &nodes, &BTreeMap::new());
        assert_eq!(
            p.unplaced["t"],
            "resolver `last` is not registered on the leader node `a`"
        );
    }

    #[test]
    fn each_task_goes_to_the_resolver_of_its_spec() {
        let rr = PlacementSpec::round_robin(1);
        let pinned = PlacementSpec::failover("b", ["a"]);
        let mut nodes = Vec::new();
        for (i, id) in ["a", "b"].iter().enumerate() {
            let mut n = node(
                id,
                i as i64,
                &[
                    ("ap1", "h"),
                    ("ap2", "h"),
                    ("rr1", "h"),
                    ("rr2", "h"),
                    ("fo", "h"),
                ],
            );
            n.placement = DeclaredPlacement::from_tasks([
                ("ap1", &PlacementSpec::default()),
                ("ap2", &PlacementSpec::default()),
                ("rr1", &rr),
                ("rr2", &rr),
                ("fo", &pinned),
            ]);
            nodes.push(n);
        }
        let p = place(&ActivePassive, &nodes, &BTreeMap::new());
        let o = owners_of(&p);
        assert_eq!((o["ap1"], o["ap2"]), ("a", "a"), "active-passive: together");
        assert_ne!(o["rr1"], o["rr2"], "round-robin: spread");
        assert_eq!(o["fo"], "b", "failover: primary");
    }
}

#[cfg(test)]
mod properties {
    //! Random clusters, every resolver: the invariants of placement.
    use proptest::prelude::*;

    use super::*;

    const MAX_NODES: usize = 8;
    const MAX_TASKS: usize = 12;

    fn id(i: usize) -> String {
        format!("n{i}")
    }

    /// Picks its first eligible node; stable.
    struct First;
    impl Resolver for First {
        fn name(&self) -> &str {
            "first"
        }
        fn resolve(&self, input: &ResolveInput<'_>) -> BTreeMap<String, String> {
            input
                .tasks
                .iter()
                .map(|t| (t.name.clone(), t.eligible[0].clone()))
                .collect()
        }
    }

    /// Node ids in specs may name nodes that never join (n8, n9).
    fn spec() -> impl Strategy<Value = PlacementSpec> {
        let ids = || proptest::sample::subsequence((0..10).collect::<Vec<_>>(), 1..4);
        let resolver = prop_oneof![
            Just(ResolverSpec::ActivePassive),
            (1usize..4).prop_map(|c| ResolverSpec::RoundRobin {
                task_server_count: c
            }),
            ids().prop_map(|v| ResolverSpec::Nodes {
                task_nodes: v.into_iter().map(id).collect()
            }),
            (0usize..10, ids(), any::<bool>()).prop_map(|(p, b, shuffle)| {
                let mut backups: Vec<String> = b.into_iter().filter(|&i| i != p).map(id).collect();
                if shuffle {
                    backups.reverse();
                }
                ResolverSpec::Failover {
                    primary: id(p),
                    backups,
                }
            }),
            prop_oneof![Just("first"), Just("missing")].prop_map(|n| ResolverSpec::Custom {
                name: n.to_string()
            }),
            Just(ResolverSpec::All),
        ];
        (resolver, 0u8..6).prop_map(|(resolver, zone)| PlacementSpec {
            resolver,
            node_selector: match zone {
                0 => BTreeMap::from([("zone".to_string(), "a".to_string())]),
                1 => BTreeMap::from([("zone".to_string(), "b".to_string())]),
                _ => BTreeMap::new(),
            },
        })
    }

    #[derive(Debug, Clone)]
    struct Cluster {
        nodes: Vec<NodeInfo>,
        current: BTreeMap<String, Owner>,
        acting_as: BTreeMap<String, String>,
    }

    fn cluster() -> impl Strategy<Value = Cluster> {
        (
            1usize..=MAX_NODES,
            0usize..=MAX_TASKS,
            proptest::collection::vec((0i64..4, proptest::bool::weighted(0.2), 0u8..3), MAX_NODES),
            proptest::collection::vec((spec(), spec()), MAX_TASKS),
            // Per node and task: 0..3 not declared, 3 the other definition, else the main one.
            proptest::collection::vec(proptest::collection::vec(0u8..12, MAX_TASKS), MAX_NODES),
            proptest::collection::vec(proptest::option::of((0usize..10, 1i64..=2)), MAX_TASKS),
            proptest::collection::vec(proptest::option::weighted(0.15, 0usize..10), MAX_NODES),
        )
            .prop_map(|(n, t, shape, specs, declare, current, acting)| {
                let nodes = (0..n)
                    .map(|i| {
                        let (joined, leaving, zone) = shape[i];
                        let mut declared = BTreeMap::new();
                        let mut placement = BTreeMap::new();
                        for (task, (main, other)) in specs.iter().enumerate().take(t) {
                            let (hash, spec) = match declare[i][task] {
                                0..=2 => continue,
                                3 => ("h2", other),
                                _ => ("h1", main),
                            };
                            declared.insert(format!("t{task}"), hash.to_string());
                            placement.insert(format!("t{task}"), spec.clone());
                        }
                        let labels = match zone {
                            0 => BTreeMap::new(),
                            z => BTreeMap::from([(
                                "zone".to_string(),
                                if z == 1 { "a" } else { "b" }.to_string(),
                            )]),
                        };
                        NodeInfo {
                            id: id(i),
                            incarnation: 1,
                            joined_at_ms: joined,
                            leaving,
                            declared,
                            labels,
                            placement: DeclaredPlacement {
                                default: PlacementSpec::default(),
                                tasks: placement,
                            },
                        }
                    })
                    .collect();
                let current = current
                    .into_iter()
                    .take(t)
                    .enumerate()
                    .filter_map(|(task, o)| {
                        o.map(|(node, incarnation)| {
                            (
                                format!("t{task}"),
                                Owner {
                                    node: id(node),
                                    incarnation,
                                },
                            )
                        })
                    })
                    .collect();
                let acting_as = acting
                    .into_iter()
                    .take(n)
                    .enumerate()
                    .filter_map(|(i, target)| target.map(|t| (id(i), id(t))))
                    .filter(|(a, b)| a != b)
                    .collect();
                Cluster {
                    nodes,
                    current,
                    acting_as,
                }
            })
    }

    fn run(c: &Cluster, current: &BTreeMap<String, Owner>) -> Placement {
        let custom: BTreeMap<String, Arc<dyn Resolver>> =
            BTreeMap::from([("first".to_string(), Arc::new(First) as Arc<dyn Resolver>)]);
        let ctx = PlaceContext::new(&ActivePassive)
            .custom(&custom)
            .leader("n0")
            .acting_as(&c.acting_as);
        place_with(&ctx, &c.nodes, current)
    }

    /// Is `n` eligible for `task` with the definition `hash` and `spec`?
    fn eligible(n: &NodeInfo, task: &str, hash: &str, spec: &PlacementSpec) -> bool {
        !n.leaving
            && n.declared.get(task).map(String::as_str) == Some(hash)
            && spec.selects(&n.labels)
    }

    fn check(c: &Cluster, p: &Placement) -> Result<(), TestCaseError> {
        let declared: BTreeSet<&String> = c.nodes.iter().flat_map(|n| n.declared.keys()).collect();
        for task in &declared {
            let placed = p.owners.contains_key(*task);
            let unplaced = p.unplaced.get(*task);
            let everywhere = p.everywhere.contains_key(*task);
            prop_assert!(
                usize::from(placed) + usize::from(unplaced.is_some()) + usize::from(everywhere)
                    == 1,
                "{task}: placed, unplaced or everywhere: exactly one"
            );
            if let Some(reason) = unplaced {
                prop_assert!(!reason.trim().is_empty(), "{task}: empty reason");
            }
        }
        // `all`: a share on every eligible node (declaring the definition in force), and
        // nowhere else.
        for (task, on) in &p.everywhere {
            let dissenters: Vec<&str> = p
                .conflicts
                .iter()
                .filter(|cf| &cf.task == task)
                .flat_map(|cf| cf.dissenters.iter().map(|(d, _)| d.as_str()))
                .collect();
            let should: Vec<&str> = c
                .nodes
                .iter()
                .filter(|n| {
                    n.declared.get(task).is_some_and(|h| {
                        eligible(n, task, h, n.placement.of(task))
                            && n.placement.of(task).resolver == ResolverSpec::All
                    }) && !dissenters.contains(&n.id.as_str())
                })
                .map(|n| n.id.as_str())
                .collect();
            let mut on_sorted: Vec<&str> = on.iter().map(String::as_str).collect();
            on_sorted.sort_unstable();
            let mut should = should;
            should.sort_unstable();
            prop_assert_eq!(&on_sorted, &should, "{} runs on every eligible node", task);
            for n in on {
                let share = per_node_name(task, n);
                prop_assert_eq!(
                    p.owners.get(&share).map(|o| o.node.as_str()),
                    Some(n.as_str())
                );
            }
        }
        for (name, o) in &p.owners {
            if let Some((task, node)) = split_per_node_name(name) {
                prop_assert_eq!(node, o.node.as_str());
                prop_assert!(
                    p.everywhere
                        .get(task)
                        .is_some_and(|on| on.contains(&o.node)),
                    "{} has a share on {} but does not run there",
                    task,
                    node
                );
            }
        }
        prop_assert!(p
            .owners
            .keys()
            .chain(p.unplaced.keys())
            .all(|t| declared.contains(t) || split_per_node_name(t).is_some()));
        for (task, o) in &p.owners {
            if split_per_node_name(task).is_some() {
                continue;
            }
            let n = c.nodes.iter().find(|n| n.id == o.node);
            prop_assert!(n.is_some(), "{task} on unknown node {}", o.node);
            let n = n.unwrap();
            prop_assert_eq!(n.incarnation, o.incarnation);
            prop_assert!(!n.leaving, "{} on leaving node {}", task, n.id);
            let hash = &n.declared[task];
            let dissent = p
                .conflicts
                .iter()
                .filter(|cf| &cf.task == task)
                .any(|cf| cf.dissenters.iter().any(|(d, _)| *d == n.id));
            prop_assert!(!dissent, "{} on dissenter {}", task, n.id);
            let spec = n.placement.of(task);
            prop_assert!(
                eligible(n, task, hash, spec),
                "{} on ineligible {}",
                task,
                n.id
            );
            match &spec.resolver {
                ResolverSpec::Nodes { task_nodes } => {
                    prop_assert!(task_nodes.contains(&n.id))
                }
                ResolverSpec::Failover { primary, backups } => {
                    let order = failover_order(primary, backups, &c.acting_as);
                    let first = order.iter().find(|id| {
                        c.nodes
                            .iter()
                            .any(|m| m.id == **id && eligible(m, task, hash, spec))
                    });
                    prop_assert_eq!(
                        first.copied(),
                        Some(n.id.as_str()),
                        "{} not on first live of {:?}",
                        task,
                        order
                    );
                    prop_assert_eq!(p.acting.contains_key(task.as_str()), n.id != *primary);
                    let primary_up = c
                        .nodes
                        .iter()
                        .any(|m| m.id == *primary && eligible(m, task, hash, spec));
                    if primary_up && !c.acting_as.values().any(|v| v == primary) {
                        prop_assert_eq!(&n.id, primary, "failback to the primary");
                    }
                }
                ResolverSpec::Custom { name } => prop_assert_eq!(name, "first"),
                _ => {}
            }
        }
        for (task, reason) in &p.unplaced {
            let specs: BTreeSet<&PlacementSpec> = c
                .nodes
                .iter()
                .filter(|n| n.declared.contains_key(task))
                .map(|n| n.placement.of(task))
                .collect();
            if specs.len() == 1 {
                if let ResolverSpec::Custom { name } = &specs.iter().next().unwrap().resolver {
                    if name == "missing"
                        && !reason.contains("leaving")
                        && !reason.contains("labels")
                    {
                        prop_assert!(
                            reason.contains("not registered on the leader node `n0`"),
                            "{}",
                            reason
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Every node declares every task, identically, with `spec`.
    fn uniform(
        nodes: usize,
        leaving: &[bool],
        tasks: usize,
        spec: &PlacementSpec,
    ) -> Vec<NodeInfo> {
        (0..nodes)
            .map(|i| NodeInfo {
                id: id(i),
                incarnation: 1,
                joined_at_ms: i as i64,
                leaving: leaving[i],
                declared: (0..tasks)
                    .map(|t| (format!("t{t}"), "h".to_string()))
                    .collect(),
                labels: BTreeMap::new(),
                placement: DeclaredPlacement {
                    default: spec.clone(),
                    tasks: BTreeMap::new(),
                },
            })
            .collect()
    }

    fn load_spread(p: &Placement, nodes: &[NodeInfo]) -> usize {
        let live: Vec<&NodeInfo> = nodes.iter().filter(|n| !n.leaving).collect();
        let counts: Vec<usize> = live
            .iter()
            .map(|n| p.owners.values().filter(|o| o.node == n.id).count())
            .collect();
        counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0)
    }

    fn moved(before: &Placement, after: &Placement) -> Vec<String> {
        before
            .owners
            .iter()
            .filter(|(t, o)| after.owners.get(*t).map(|a| &a.node) != Some(&o.node))
            .map(|(t, _)| t.clone())
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn every_task_is_placed_on_an_eligible_node_or_explained(c in cluster()) {
            let p = run(&c, &c.current);
            check(&c, &p)?;
            // Stable: placing again on its own result changes nothing. With conflicting
            // definitions, the one in force may change once (the owner's definition gives
            // way to the most declared when the owner loses the task): two rounds at most.
            let again = run(&c, &p.owners);
            check(&c, &again)?;
            if p.conflicts.is_empty() {
                prop_assert_eq!(&again.owners, &p.owners);
                prop_assert_eq!(&again.acting, &p.acting);
            }
            let third = run(&c, &again.owners);
            prop_assert_eq!(&third.owners, &again.owners);
            prop_assert_eq!(&third.acting, &again.acting);
        }

        #[test]
        fn round_robin_is_balanced_and_moves_little(
            nodes in 1usize..=MAX_NODES,
            leaving in proptest::collection::vec(proptest::bool::weighted(0.2), MAX_NODES),
            tasks in 0usize..40,
            count in 1usize..4,
            current in proptest::collection::vec(proptest::option::of(0usize..10), 40),
            leaver in 0usize..MAX_NODES,
        ) {
            let spec = PlacementSpec::round_robin(count);
            let cluster = uniform(nodes, &leaving, tasks, &spec);
            let current: BTreeMap<String, Owner> = current
                .iter()
                .take(tasks)
                .enumerate()
                .filter_map(|(t, o)| o.map(|n| (format!("t{t}"), Owner { node: id(n), incarnation: 1 })))
                .collect();
            let live = leaving[..nodes].iter().filter(|l| !**l).count();
            let started = current.values().any(|o| {
                cluster.iter().any(|n| n.id == o.node && !n.leaving)
            });
            let p = place(&ActivePassive, &cluster, &current);
            if tasks > 0 && live == 0 {
                prop_assert_eq!(p.unplaced.len(), tasks);
                return Ok(());
            }
            if live < count && !started {
                prop_assert!(p.owners.is_empty());
                let waiting = format!("waiting for {count} servers, {live} live");
                prop_assert!(p.unplaced.values().all(|r| r.starts_with(&waiting)), "{:?}", p.unplaced);
                return Ok(());
            }
            prop_assert_eq!(p.owners.len(), tasks);
            prop_assert!(load_spread(&p, &cluster) <= 1, "unbalanced: {:?}", p.owners);

            // A join moves at most ceil(tasks / nodes), all of it to the newcomer.
            let mut joined = cluster.clone();
            joined.push(NodeInfo { id: "new".into(), joined_at_ms: 99, ..uniform(1, &[false], tasks, &spec)[0].clone() });
            let q = place(&ActivePassive, &joined, &p.owners);
            prop_assert!(load_spread(&q, &joined) <= 1);
            let m = moved(&p, &q);
            prop_assert!(m.len() <= tasks.div_ceil(live + 1), "join moved {} of {}", m.len(), tasks);
            prop_assert!(m.iter().all(|t| q.owners[t].node == "new"));

            // A leave (crash or graceful) moves only the leaver's tasks.
            let leaver = id(leaver % nodes);
            for graceful in [false, true] {
                let rest: Vec<NodeInfo> = cluster
                    .iter()
                    .cloned()
                    .filter_map(|mut n| {
                        if n.id != leaver { return Some(n); }
                        n.leaving = true;
                        graceful.then_some(n)
                    })
                    .collect();
                if rest.iter().all(|n| n.leaving) { continue; }
                let r = place(&ActivePassive, &rest, &p.owners);
                prop_assert!(load_spread(&r, &rest) <= 1);
                for t in moved(&p, &r) {
                    prop_assert_eq!(&p.owners[&t].node, &leaver, "{} moved but was not on the leaver", t);
                }
            }
        }

        #[test]
        fn active_passive_keeps_work_together_and_joins_move_nothing(
            nodes in 1usize..=MAX_NODES,
            leaving in proptest::collection::vec(proptest::bool::weighted(0.2), MAX_NODES),
            tasks in 1usize..20,
        ) {
            let cluster = uniform(nodes, &leaving, tasks, &PlacementSpec::default());
            let p = place(&ActivePassive, &cluster, &BTreeMap::new());
            if cluster.iter().all(|n| n.leaving) {
                prop_assert_eq!(p.unplaced.len(), tasks);
                return Ok(());
            }
            let owners: BTreeSet<&String> = p.owners.values().map(|o| &o.node).collect();
            prop_assert_eq!(owners.len(), 1);
            let mut joined = cluster.clone();
            joined.push(NodeInfo { id: "new".into(), joined_at_ms: -1, ..cluster[0].clone() });
            let mut joined_fresh = joined.clone();
            joined_fresh.last_mut().unwrap().leaving = false;
            prop_assert_eq!(place(&ActivePassive, &joined_fresh, &p.owners).owners, p.owners);
        }

        #[test]
        fn failover_returns_tasks_to_their_primary(
            nodes in 2usize..=MAX_NODES,
            down in proptest::collection::vec(any::<bool>(), MAX_NODES),
        ) {
            let backups: Vec<String> = (1..nodes).map(id).collect();
            let spec = PlacementSpec::failover(id(0), backups);
            let all = uniform(nodes, &[false; MAX_NODES], 3, &spec);
            // Some nodes down, the primary among them: a backup runs the tasks.
            let survivors: Vec<NodeInfo> = all.iter().filter(|n| n.id != id(0) && !down[n.id[1..].parse::<usize>().unwrap()]).cloned().collect();
            let p = place(&ActivePassive, &survivors, &BTreeMap::new());
            if let Some(first) = survivors.first() {
                prop_assert!(p.owners.values().all(|o| o.node == first.id));
                prop_assert!(p.acting.values().all(|a| *a == id(0)));
            } else {
                prop_assert!(p.unplaced.values().all(|r| r.contains("all down")));
            }
            // The primary returns: everything goes back to it, whoever ran it.
            let mut back = survivors.clone();
            back.push(all[0].clone());
            let q = place(&ActivePassive, &back, &p.owners);
            prop_assert!(q.owners.values().all(|o| o.node == id(0)));
            prop_assert_eq!(q.owners.len(), 3);
            prop_assert!(q.acting.is_empty());
        }
    }
}
