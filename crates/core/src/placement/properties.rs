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
                        declared: declared.into(),
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
    !n.leaving && n.declared.get(task).map(String::as_str) == Some(hash) && spec.selects(&n.labels)
}

fn check(c: &Cluster, p: &Placement) -> Result<(), TestCaseError> {
    let declared: BTreeSet<&String> = c.nodes.iter().flat_map(|n| n.declared.keys()).collect();
    for task in &declared {
        let placed = p.owners.contains_key(*task);
        let unplaced = p.unplaced.get(*task);
        let everywhere = p.everywhere.contains_key(*task);
        prop_assert!(
            usize::from(placed) + usize::from(unplaced.is_some()) + usize::from(everywhere) == 1,
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
                if name == "missing" && !reason.contains("leaving") && !reason.contains("labels") {
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
fn uniform(nodes: usize, leaving: &[bool], tasks: usize, spec: &PlacementSpec) -> Vec<NodeInfo> {
    (0..nodes)
        .map(|i| NodeInfo {
            id: id(i),
            incarnation: 1,
            joined_at_ms: i as i64,
            leaving: leaving[i],
            declared: Arc::new(
                (0..tasks)
                    .map(|t| (format!("t{t}"), "h".to_string()))
                    .collect(),
            ),
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
