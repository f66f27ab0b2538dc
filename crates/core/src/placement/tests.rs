use super::*;

fn node(id: &str, joined: i64, tasks: &[(&str, &str)]) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        incarnation: 1,
        joined_at_ms: joined,
        declared: Arc::new(
            tasks
                .iter()
                .map(|(t, h)| (t.to_string(), h.to_string()))
                .collect(),
        ),
        ..NodeInfo::default()
    }
}

/// A node declaring `tasks` (same hash) all with `spec`.
fn spec_node(id: &str, joined: i64, tasks: &[&str], spec: &PlacementSpec) -> NodeInfo {
    let mut n = node(id, joined, &[]);
    n.declared = Arc::new(tasks.iter().map(|t| (t.to_string(), "h".into())).collect());
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
        runs_definitions: true,
    };
    assert!(!meta.is_empty());
    let json = serde_json::to_string(&meta).unwrap();
    assert_eq!(serde_json::from_str::<NodeMeta>(&json).unwrap(), meta);
    // Defaults everywhere: nothing to publish.
    let ap = PlacementSpec::default();
    let plain = NodeMeta {
        labels: BTreeMap::new(),
        placement: DeclaredPlacement::from_tasks([("t", &ap)]),
        runs_definitions: false,
    };
    assert!(plain.is_empty());
    assert_eq!(serde_json::to_string(&plain).unwrap(), "{}");
    // Newer nodes may publish more.
    let newer: NodeMeta = serde_json::from_str(r#"{"labels":{"zone":"a"},"future":1}"#).unwrap();
    assert_eq!(newer.labels["zone"], "a");
}

#[test]
fn spec_problems_name_field_value_and_fix() {
    let fields =
        |s: PlacementSpec| -> Vec<String> { s.problems().into_iter().map(|p| p.field).collect() };
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
    Arc::make_mut(&mut other.declared).insert("t".into(), "h2".into());
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

#[test]
fn nodes_sharing_their_declarations_are_placed_as_nodes_with_copies() {
    // Two nodes sharing one map and one with an equal copy (one class), one dissenting on
    // `b` and declaring `c` alone (another class).
    let spec = PlacementSpec::round_robin(1);
    let tasks = ["a", "b", "c0", "c1", "c2", "c3"];
    let shared = spec_node("n0", 0, &tasks, &spec);
    let twin = NodeInfo {
        id: "n1".into(),
        joined_at_ms: 1,
        ..shared.clone()
    };
    let copy = spec_node("n2", 2, &tasks, &spec);
    let mut dissenter = spec_node("n3", 3, &tasks, &spec);
    let own = Arc::make_mut(&mut dissenter.declared);
    own.insert("b".into(), "other".into());
    own.insert("c".into(), "h".into());
    let with_sharing = vec![shared.clone(), twin, copy.clone(), dissenter.clone()];
    assert!(Arc::ptr_eq(
        &with_sharing[0].declared,
        &with_sharing[1].declared
    ));
    let all_copies: Vec<NodeInfo> = with_sharing
        .iter()
        .map(|n| NodeInfo {
            declared: Arc::new((*n.declared).clone()),
            ..n.clone()
        })
        .collect();
    let p = place(&ActivePassive, &with_sharing, &BTreeMap::new());
    assert_eq!(p, place(&ActivePassive, &all_copies, &BTreeMap::new()));
    // The dissenter is reported and not eligible for `b`; `c` is its own.
    assert_eq!(p.conflicts.len(), 1, "{:?}", p.conflicts);
    assert_eq!(
        p.conflicts[0].dissenters,
        vec![("n3".to_string(), "other".to_string())]
    );
    assert_ne!(p.owners["b"].node, "n3");
    assert_eq!(p.owners["c"].node, "n3");
    // Spread by round-robin over the four nodes (7 tasks), and stable when run again.
    let l = loads(&p);
    assert!(
        l.values().max().unwrap() - l.values().min().unwrap() <= 1,
        "{l:?}"
    );
    assert_eq!(place(&ActivePassive, &with_sharing, &as_current(&p)), p);
    // A leave of one of the sharing nodes moves only its tasks.
    let after = place(&ActivePassive, &with_sharing[1..], &as_current(&p));
    for (task, o) in &p.owners {
        if o.node != "n0" {
            assert_eq!(after.owners[task].node, o.node, "{task} stayed");
        }
    }
}
