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

mod resolvers;
mod spec;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    sync::Arc,
};

use serde::{Deserialize, Serialize};

pub use self::{resolvers::*, spec::*};

/// What a node registers besides its tasks: its labels and its tasks' placement specs.
/// Stored with the node's registration (see the store's `JoinRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "DeclaredPlacement::is_default")]
    pub placement: DeclaredPlacement,
    /// The node runs the cluster's own definitions (`rota ctl apply`): it is eligible for
    /// every task and service they define.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub runs_definitions: bool,
}

impl NodeMeta {
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.placement.is_default() && !self.runs_definitions
    }
}

/// The node (and its incarnation) that owns a task.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Owner {
    pub node: String,
    pub incarnation: i64,
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
    let by_id: HashMap<&str, usize> = candidates
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let valid_owner = |owner: &Owner| -> Option<usize> {
        by_id
            .get(owner.node.as_str())
            .copied()
            .filter(|&i| candidates[i].incarnation == owner.incarnation)
    };
    // Nodes that declare the same tasks (usually all of them: identical nodes) form one
    // class: each task is looked up, and its definitions compared, once per class.
    let mut classes: Vec<Class> = Vec::new();
    for n in &ordered {
        if !classes.iter().any(|c| c.declares(&n.declared)) {
            classes.push(Class {
                declared: &n.declared,
                members: Vec::new(),
            });
        }
    }
    let mut class_of = Vec::with_capacity(candidates.len());
    for (i, n) in candidates.iter().enumerate() {
        let c = classes
            .iter()
            .position(|c| c.declares(&n.declared))
            .expect("every node has its class");
        classes[c].members.push(i);
        class_of.push(c);
    }
    let names: BTreeSet<&String> = classes.iter().flat_map(|c| c.declared.keys()).collect();
    let mut placement = Placement::default();
    // Tasks grouped by spec; each group goes to one resolver, with the valid current owner
    // of each of its tasks. Names come in order, so each group's tasks are in order too.
    let mut groups: Vec<Group> = Vec::new();
    let mut last_group = 0;
    // Every map below is sorted by task, as `names` is: each is read by a cursor that moves
    // forward with the names, not searched for each of 100,000 tasks.
    let mut recorded = current.iter().peekable();
    let mut declared_by: Vec<_> = classes
        .iter()
        .map(|c| c.declared.iter().peekable())
        .collect();
    // Tasks that the same nodes may run share one list of them: by agreeing classes when
    // the task selects no labels, else by the nodes themselves.
    let mut by_classes: HashMap<Vec<usize>, Arc<[String]>> = HashMap::new();
    let mut by_nodes: HashMap<Vec<usize>, Arc<[String]>> = HashMap::new();
    let ids = |nodes: &[usize]| -> Arc<[String]> {
        nodes.iter().map(|&i| candidates[i].id.clone()).collect()
    };
    // Classes with live candidates that declare the task, and their definition's hash.
    let mut declaring: Vec<(usize, &String)> = Vec::new();
    for name in names {
        declaring.clear();
        for (c, cursor) in declared_by.iter_mut().enumerate() {
            let Some((_, hash)) = next_at(cursor, name) else {
                continue;
            };
            if !classes[c].members.is_empty() {
                declaring.push((c, hash));
            }
        }
        let owner = next_at(&mut recorded, name).and_then(|(_, o)| valid_owner(o));
        if declaring.is_empty() {
            placement.unplaced.insert(
                name.clone(),
                "declared only by nodes that are leaving".into(),
            );
            continue;
        }
        // The owner's definition, if its class declares the task.
        let owners_hash = owner.and_then(|o| {
            declaring
                .iter()
                .find(|(c, _)| *c == class_of[o])
                .map(|(_, hash)| *hash)
        });
        let reference: &String = match owners_hash {
            Some(hash) => hash,
            None => most_declared(&classes, &declaring),
        };
        let agrees = |hash: &String| std::ptr::eq(hash, reference) || hash == reference;
        let mut dissenters: Vec<(usize, &String)> = declaring
            .iter()
            .filter(|(_, h)| !agrees(h))
            .flat_map(|&(c, h)| classes[c].members.iter().map(move |&i| (i, h)))
            .collect();
        if !dissenters.is_empty() {
            dissenters.sort_unstable_by_key(|(i, _)| *i);
            placement.conflicts.push(Conflict {
                task: name.clone(),
                reference_hash: reference.clone(),
                dissenters: dissenters
                    .into_iter()
                    .map(|(i, h)| (candidates[i].id.clone(), h.clone()))
                    .collect(),
            });
        }
        let agreeing: Vec<usize> = declaring
            .iter()
            .filter(|(_, h)| agrees(h))
            .map(|(c, _)| *c)
            .collect();
        let owner = owner.filter(|&o| agreeing.contains(&class_of[o]));
        let first_agreeing = agreeing
            .iter()
            .map(|&c| classes[c].members[0])
            .min()
            .expect("the reference is declared");
        // The spec is part of the definition: every agreeing node declares the same one.
        let spec = candidates[owner.unwrap_or(first_agreeing)]
            .placement
            .of(name)
            .clone();
        // The agreeing nodes with the labels the task selects, in join order.
        let (eligible, owner) = if spec.node_selector.is_empty() {
            let shared = match by_classes.get(&agreeing) {
                Some(shared) => shared.clone(),
                None => {
                    let mut nodes: Vec<usize> = agreeing
                        .iter()
                        .flat_map(|&c| classes[c].members.iter().copied())
                        .collect();
                    nodes.sort_unstable();
                    let shared = ids(&nodes);
                    by_classes.insert(agreeing, shared.clone());
                    shared
                }
            };
            (shared, owner)
        } else {
            let mut nodes: Vec<usize> = agreeing
                .iter()
                .flat_map(|&c| classes[c].members.iter().copied())
                .filter(|&i| spec.selects(&candidates[i].labels))
                .collect();
            nodes.sort_unstable();
            if nodes.is_empty() {
                placement.unplaced.insert(
                    name.clone(),
                    format!(
                        "no live node declaring it has the labels {} (its node_selector)",
                        fmt_labels(&spec.node_selector)
                    ),
                );
                continue;
            }
            let owner = owner.filter(|o| nodes.contains(o));
            let shared = match by_nodes.get(&nodes) {
                Some(shared) => shared.clone(),
                None => {
                    let shared = ids(&nodes);
                    by_nodes.insert(nodes, shared.clone());
                    shared
                }
            };
            (shared, owner)
        };
        // Most tasks share the previous task's spec (usually all: the default).
        if groups.get(last_group).is_none_or(|g| g.spec != spec) {
            last_group = match groups.iter().position(|g| g.spec == spec) {
                Some(i) => i,
                None => {
                    groups.push(Group {
                        spec: spec.clone(),
                        tasks: Vec::new(),
                        current: Vec::new(),
                    });
                    groups.len() - 1
                }
            };
        }
        let group = &mut groups[last_group];
        if let Some(o) = owner {
            group.current.push((name.clone(), candidates[o].id.clone()));
        }
        group.tasks.push(EligibleTask {
            name: name.clone(),
            eligible,
            placement: spec,
        });
    }
    // In the order of their specs, as resolvers always ran.
    groups.sort_by(|a, b| a.spec.cmp(&b.spec));

    let mut owners: Vec<(String, Owner)> = Vec::new();
    for Group {
        spec,
        tasks,
        current,
    } in groups
    {
        let tasks = &tasks[..];
        // Built from rows in order: no search per row.
        let current: BTreeMap<String, String> = current.into_iter().collect();
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
        owners.extend(decision.owners.into_iter().map(|(task, node)| {
            let incarnation = by_id
                .get(node.as_str())
                .map_or(0, |&i| candidates[i].incarnation);
            (task, Owner { node, incarnation })
        }));
        placement.unplaced.extend(decision.unplaced);
        placement.acting.extend(decision.acting);
    }
    // One build of the whole map (a task is in one group only) instead of a search per task.
    let mut owners: BTreeMap<String, Owner> = owners.into_iter().collect();
    placement.owners.append(&mut owners);
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

/// The tasks of one spec, for one resolver, with the valid current owner of those that
/// have one; both sorted by task.
struct Group {
    spec: PlacementSpec,
    tasks: Vec<EligibleTask>,
    current: Vec<(String, String)>,
}

/// The entry of the sorted `cursor` whose key is `name`, if any, after moving the cursor past
/// every smaller key. Called with names in increasing order, it visits each entry once.
fn next_at<'m, V>(
    cursor: &mut std::iter::Peekable<std::collections::btree_map::Iter<'m, String, V>>,
    name: &str,
) -> Option<(&'m String, &'m V)> {
    while cursor.next_if(|(key, _)| key.as_str() < name).is_some() {}
    cursor.next_if(|(key, _)| key.as_str() == name)
}

/// The `all` resolver: every eligible node gets its own share of each task.
fn everywhere(
    tasks: &[EligibleTask],
    candidates: &[&NodeInfo],
    placement: &mut Placement,
) -> Decision {
    for task in tasks {
        for node in task.eligible.iter() {
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
            .insert(task.name.clone(), task.eligible.to_vec());
    }
    Decision::default()
}

/// Nodes (by position among the candidates, in join order) that declare the same tasks
/// with the same definitions.
struct Class<'a> {
    declared: &'a BTreeMap<String, String>,
    members: Vec<usize>,
}

impl Class<'_> {
    /// At once when the node shares the class's map, as identical nodes' registrations do.
    fn declares(&self, declared: &BTreeMap<String, String>) -> bool {
        std::ptr::eq(self.declared, declared) || self.declared == declared
    }
}

/// The definition most live nodes declare; ties go to the earliest-joined node's.
fn most_declared<'a>(classes: &[Class<'_>], declaring: &[(usize, &'a String)]) -> &'a String {
    // (hash, nodes declaring it, the earliest of them)
    let mut counts: Vec<(&String, usize, usize)> = Vec::new();
    for &(c, hash) in declaring {
        let members = &classes[c].members;
        match counts.iter_mut().find(|(h, _, _)| *h == hash) {
            Some((_, count, first)) => {
                *count += members.len();
                *first = (*first).min(members[0]);
            }
            None => counts.push((hash, members.len(), members[0])),
        }
    }
    counts
        .iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))
        .expect("some class declares the task")
        .0
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;
