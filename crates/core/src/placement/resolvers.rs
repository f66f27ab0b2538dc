//! The resolvers: given the eligible nodes of a group of tasks, who runs each.
//! Active-passive, round-robin, named nodes and failover lists are built in; a
//! [`Resolver`] written in Rust is called through the same input.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use super::spec::{why_not_eligible, DeclaredPlacement, PlacementSpec};

/// A live node as placement sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    pub incarnation: i64,
    /// Store time of the node's join: orders nodes (the first up is active-passive's primary).
    pub joined_at_ms: i64,
    /// Announced a graceful stop: keeps nothing, gets nothing.
    pub leaving: bool,
    /// Task name -> definition hash. Identical nodes may share one map: placement then
    /// looks each task up once for all of them (100 nodes that declare 100,000 tasks are
    /// ten million lookups otherwise).
    pub declared: Arc<BTreeMap<String, String>>,
    /// The node's labels (`[node] labels`), for `node_selector`s and custom resolvers.
    pub labels: BTreeMap<String, String>,
    /// The placement spec of each declared task.
    pub placement: DeclaredPlacement,
}

/// A task and the nodes that may run it, in join order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EligibleTask {
    pub name: String,
    /// Shared by the tasks that the same nodes may run (usually all of a group).
    pub eligible: Arc<[String]>,
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
        let (lists, list_of) = shared_lists(input.tasks);
        let mut load: HashMap<&str, usize> = HashMap::new();
        for owner in input.current.values() {
            *load.entry(owner.as_str()).or_default() += 1;
        }
        let mut able: HashMap<&str, usize> = HashMap::new();
        for (list, uses) in &lists {
            for id in list.iter() {
                *able.entry(id.as_str()).or_default() += uses;
            }
        }
        let count = |counts: &HashMap<&str, usize>, id: &str| counts.get(id).copied().unwrap_or(0);
        let rank: HashMap<&str, (std::cmp::Reverse<usize>, std::cmp::Reverse<usize>, usize)> =
            input
                .nodes
                .iter()
                .enumerate()
                .map(|(order, n)| {
                    let id = n.id.as_str();
                    let (load, able) = (count(&load, id), count(&able, id));
                    (
                        id,
                        (std::cmp::Reverse(load), std::cmp::Reverse(able), order),
                    )
                })
                .collect();
        // The best node of each distinct list, once.
        let best: Vec<Option<&String>> = lists
            .iter()
            .map(|(list, _)| list.iter().min_by_key(|id| rank.get(id.as_str())))
            .collect();
        input
            .tasks
            .iter()
            .zip(list_of)
            .filter_map(|(task, list)| {
                let keep = input
                    .current
                    .get(&task.name)
                    .filter(|o| task.eligible.contains(o));
                let node = keep.or(best[list])?;
                Some((task.name.clone(), node.clone()))
            })
            .collect()
    }
}

/// The distinct lists of eligible nodes among `tasks`, with the number of tasks using each,
/// and the index of each task's list. Tasks share their list when the same nodes may run
/// them ([`EligibleTask::eligible`]), so work per list is done once, not once per task.
fn shared_lists(tasks: &[EligibleTask]) -> (Vec<(&[String], usize)>, Vec<usize>) {
    let mut index: HashMap<*const String, usize> = HashMap::new();
    let mut lists: Vec<(&[String], usize)> = Vec::new();
    let mut list_of = Vec::with_capacity(tasks.len());
    for task in tasks {
        let key = Arc::as_ptr(&task.eligible) as *const String;
        let i = *index.entry(key).or_insert_with(|| {
            lists.push((&task.eligible, 0));
            lists.len() - 1
        });
        lists[i].1 += 1;
        list_of.push(i);
    }
    (lists, list_of)
}

/// Round-robin as a plain [`Resolver`] (for custom resolvers that delegate to it). Tasks
/// with a [`ResolverSpec::RoundRobin`](super::ResolverSpec::RoundRobin) spec get the same algorithm, with reasons for the
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

/// What one group's resolver decided.
#[derive(Debug, Default)]
pub(super) struct Decision {
    pub(super) owners: BTreeMap<String, String>,
    pub(super) unplaced: BTreeMap<String, String>,
    pub(super) acting: BTreeMap<String, String>,
}

impl Decision {
    pub(super) fn none(tasks: &[EligibleTask], reason: &str) -> Decision {
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
pub(super) fn run_resolver(resolver: &dyn Resolver, input: &ResolveInput<'_>) -> Decision {
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
pub(super) fn round_robin(count: usize, input: &ResolveInput<'_>) -> Decision {
    let count = count.max(1);
    let position: HashMap<&str, usize> = input
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    // Node positions of each distinct list of eligible nodes, and of each task's list.
    let (lists, list_of) = shared_lists(input.tasks);
    let positions: Vec<Vec<usize>> = lists
        .iter()
        .map(|(list, _)| {
            list.iter()
                .filter_map(|id| position.get(id.as_str()).copied())
                .collect()
        })
        .collect();
    // Whether node n is in list l: `admits[l][n]`, instead of a scan of the list per task.
    let admits: Vec<Vec<bool>> = positions
        .iter()
        .map(|list| {
            let mut admits = vec![false; input.nodes.len()];
            for &n in list {
                admits[n] = true;
            }
            admits
        })
        .collect();
    let eligible = |t: usize| -> &Vec<usize> { &positions[list_of[t]] };
    let servers: BTreeSet<usize> = positions.iter().flatten().copied().collect();
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
    // Tasks in name order (as placement gives them) read the current owners with a cursor.
    let in_order = input.tasks.windows(2).all(|w| w[0].name < w[1].name);
    let mut owners = input.current.iter().peekable();
    for (t, task) in input.tasks.iter().enumerate() {
        let recorded = if in_order {
            super::next_at(&mut owners, &task.name).map(|(_, o)| o)
        } else {
            input.current.get(&task.name)
        };
        let kept = recorded
            .and_then(|o| position.get(o.as_str()).copied())
            .filter(|&n| admits[list_of[t]][n]);
        if let Some(n) = kept {
            owner[t] = Some(n);
            load[n] += 1;
            tasks_on[n].insert(t);
        }
    }
    let lightest = |load: &[usize], t: usize| -> Option<usize> {
        eligible(t).iter().copied().min_by_key(|&n| (load[n], n))
    };
    // Tasks with fewer choices first, so they get them.
    let mut orphans: Vec<usize> = (0..input.tasks.len())
        .filter(|&t| owner[t].is_none())
        .collect();
    orphans.sort_by_key(|&t| (eligible(t).len(), t));
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
pub(super) fn pinned_to(task_nodes: &[String], input: &ResolveInput<'_>) -> Decision {
    let listed = |id: &String| task_nodes.contains(id);
    let mut decision = Decision::default();
    let mut tasks = Vec::new();
    for task in input.tasks {
        let eligible: Arc<[String]> = task
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

/// The failover order: each slot of `[primary, backups..]` preceded by the nodes acting as it.
pub(super) fn failover_order<'a>(
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
pub(super) fn failover(primary: &str, backups: &[String], input: &ResolveInput<'_>) -> Decision {
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
