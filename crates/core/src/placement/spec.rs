//! What a task asks of placement: its resolver, pins and backups, node selector, and the
//! checks of each, with the problems they report.

use std::{collections::BTreeMap, fmt};

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
pub(super) fn plain_name(value: &str) -> Result<(), String> {
    crate::names::check_name(value)
}

pub(super) fn node_name(p: &mut Vec<Problem>, field: &str, value: &str) {
    if let Err(message) = plain_name(value) {
        p.push(Problem::from_message(field, value, &message, "correct it"));
    }
}

pub(super) fn node_list(p: &mut Vec<Problem>, field: &str, names: &[String]) {
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

pub(super) fn why_not_eligible(spec: &PlacementSpec) -> String {
    if spec.node_selector.is_empty() {
        "they do not declare it with the definition in force".to_string()
    } else {
        format!(
            "they do not declare it with the definition in force, or lack the labels {}",
            fmt_labels(&spec.node_selector)
        )
    }
}
