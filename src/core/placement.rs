//! Placement: which node owns each task. A pure function of the live nodes, what each
//! declares, and the current owners; the leader runs it and writes the difference.
//!
//! The framework decides *eligibility* (a live, non-leaving node that declares the task with
//! the cluster's reference definition); a [`Resolver`] only picks among eligible nodes, so no
//! resolver can place a task where it cannot run.

use std::collections::{BTreeMap, BTreeSet};

/// A live node as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    pub incarnation: i64,
    /// Store time of the node's join: orders nodes (the first up is active-passive's primary).
    pub joined_at_ms: i64,
    /// Announced a graceful stop: keeps nothing, gets nothing.
    pub leaving: bool,
    /// Task name -> definition hash.
    pub declared: BTreeMap<String, String>,
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
}

/// What a resolver sees.
#[derive(Debug)]
pub struct ResolveInput<'a> {
    /// Live, non-leaving nodes in join order.
    pub nodes: &'a [&'a NodeInfo],
    /// Tasks with at least one eligible node.
    pub tasks: &'a [EligibleTask],
    /// Current valid owner (live, same incarnation, not leaving) of each task.
    pub current: &'a BTreeMap<String, String>,
}

/// Chooses a node for each task among its eligible nodes. Tasks left out stay unplaced.
pub trait Resolver: Send + Sync {
    fn name(&self) -> &str;
    fn resolve(&self, input: &ResolveInput<'_>) -> BTreeMap<String, String>;
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
    pub unplaced: BTreeMap<String, String>,
    pub conflicts: Vec<Conflict>,
}

/// Computes the placement. `nodes` are the live nodes (any order); `current` maps each task
/// to its recorded owner, which counts only if that node is live with the same incarnation.
pub fn place(
    resolver: &dyn Resolver,
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
    let mut eligible_tasks = Vec::new();
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
        let eligible: Vec<String> = declaring
            .iter()
            .filter(|(_, h)| **h == reference)
            .map(|(n, _)| n.id.clone())
            .collect();
        if let Some(o) = owner.filter(|o| eligible.contains(&o.id)) {
            current_valid.insert(name.clone(), o.id.clone());
        }
        eligible_tasks.push(EligibleTask {
            name: name.clone(),
            eligible,
        });
    }

    let chosen = resolver.resolve(&ResolveInput {
        nodes: &candidates,
        tasks: &eligible_tasks,
        current: &current_valid,
    });
    for task in &eligible_tasks {
        match chosen.get(&task.name) {
            Some(node) if task.eligible.contains(node) => {
                let incarnation = candidates
                    .iter()
                    .find(|n| &n.id == node)
                    .map(|n| n.incarnation)
                    .unwrap_or(0);
                placement.owners.insert(
                    task.name.clone(),
                    Owner {
                        node: node.clone(),
                        incarnation,
                    },
                );
            }
            Some(node) => {
                placement.unplaced.insert(
                    task.name.clone(),
                    format!(
                        "resolver `{}` chose `{node}`, which is not eligible",
                        resolver.name()
                    ),
                );
            }
            None => {
                placement.unplaced.insert(
                    task.name.clone(),
                    format!("resolver `{}` placed it nowhere", resolver.name()),
                );
            }
        }
    }
    placement
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
            leaving: false,
            declared: tasks
                .iter()
                .map(|(t, h)| (t.to_string(), h.to_string()))
                .collect(),
        }
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

    #[test]
    fn active_passive_puts_everything_on_the_first_node() {
        let nodes = [
            node("b", 2, &[("t1", "h"), ("t2", "h")]),
            node("a", 1, &[("t1", "h"), ("t2", "h")]),
        ];
        let p = place(&ActivePassive, &nodes, &BTreeMap::new());
        assert_eq!(owners_of(&p), BTreeMap::from([("t1", "a"), ("t2", "a")]));
        assert!(p.unplaced.is_empty() && p.conflicts.is_empty());
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
}
