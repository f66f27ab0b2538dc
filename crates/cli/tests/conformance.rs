//! The contract (docs/contract.md) as tests of single store calls. Generic over the store: every
//! backend runs the same suite.

mod common;

use std::sync::Arc;

use common::TestStore;
use rota::{
    core::placement::NodeMeta,
    store::{
        Ack, AckFilter, AckState, AssignmentChange, Begin, CacheOutcome, CacheWrite, Claim,
        ClaimOutcome, Declaration, Expect, ItemClaim, JoinOutcome, JoinRequest, LeaderWrite,
        Member, Store, Takeover, TASK_STATE_CACHE,
    },
    Outcome,
};

fn member(cluster: &str, node: &str, incarnation: i64) -> Member {
    Member {
        cluster: cluster.into(),
        node: node.into(),
        incarnation,
    }
}

fn join_req(m: &Member, timeout_ms: i64) -> JoinRequest {
    JoinRequest {
        member: m.clone(),
        timeout_ms,
        host: "test-host".into(),
        process: "test".into(),
        declared: vec![Declaration {
            name: "t".into(),
            hash: "h".into(),
            schedule: "every 1s".into(),
        }],
        meta: NodeMeta {
            labels: [("zone".to_string(), "a".to_string())].into(),
            ..NodeMeta::default()
        },
        replaces: None,
        session_key: None,
        guard: None,
    }
}

async fn join(store: &Arc<dyn Store>, m: &Member, timeout_ms: i64) {
    match store.join(&join_req(m, timeout_ms)).await.unwrap() {
        JoinOutcome::Joined { .. } => {}
        JoinOutcome::Occupied(r) => panic!("unexpected occupied: {r:?}"),
    }
}

async fn assign(
    store: &Arc<dyn Store>,
    leader: &Member,
    epoch: i64,
    task: &str,
    to: &Member,
) -> LeaderWrite {
    let current = store
        .assignments(&leader.cluster)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.task == task);
    let change = AssignmentChange {
        task: task.into(),
        owner: Some((to.node.clone(), to.incarnation)),
        reason: None,
        expected_token: current.map(|a| a.token),
    };
    store
        .write_assignments(leader, epoch, &[change])
        .await
        .unwrap()
}

/// A message that a statement built by pasting text would break.
const QUOTED: &str = "it's \"quoted\", back\\slashed, ünïcödé, 'Robert'); DROP TABLE rota_fires;--";

fn claim(m: &Member, task: &str, instant: i64, token: i64) -> Claim {
    Claim {
        member: m.clone(),
        task: task.into(),
        instant_ms: instant,
        token,
        outcome: Outcome::Running,
        message: None,
        begin: false,
    }
}

/// Runs every conformance check against one store.
/// `takeovers` answers for many tasks at once (a name twice, one never seen) what
/// `running_fires` then `last_instant` answer for each alone.
async fn takeovers_match_each(store: &Arc<dyn Store>, cluster: &str, tasks: &[&str]) {
    let mut names: Vec<String> = tasks.iter().map(|t| t.to_string()).collect();
    names.push(tasks[0].to_string());
    names.push("never-declared".to_string());
    let mut each = Vec::new();
    for task in &names {
        each.push(Takeover {
            running: store.running_fires(cluster, task).await.unwrap(),
            last_instant: store.last_instant(cluster, task).await.unwrap(),
        });
    }
    assert_eq!(store.takeovers(cluster, &names).await.unwrap(), each);
}

async fn suite(store: Arc<dyn Store>) {
    membership_and_same_id_refusal(&store).await;
    clusters_are_isolated(&store).await;
    leadership_is_fenced_by_epoch(&store).await;
    tokens_increase_and_stale_claims_are_refused(&store).await;
    expiry_is_judged_by_store_time_and_final(&store).await;
    crashed_run_is_settled_once(&store).await;
    a_claim_can_begin_its_fire_in_the_same_write(&store).await;
    a_failed_attempt_is_readied_for_the_next_under_the_fence(&store).await;
    history_is_kept_and_purged(&store).await;
    a_fire_stopped_as_it_began_keeps_no_start_time(&store).await;
    items_are_claimed_once_under_the_current_token(&store).await;
    changed_assignments_are_read_by_generation(&store).await;
    commands_are_ordered_durable_and_acknowledged_per_node(&store).await;
    events_are_recorded_once_newest_first_and_purged(&store).await;
    cache_entries_are_versioned_conditional_and_expire(&store).await;
    task_state_is_saved_only_under_the_current_token(&store).await;
    a_released_session_lock_ends_its_registration(&store).await;
}

fn write<'a>(
    cache: &'a str,
    key: &'a str,
    value: &'a [u8],
    ttl_ms: Option<i64>,
    expect: Expect,
) -> CacheWrite<'a> {
    CacheWrite {
        cache,
        key,
        value,
        ttl_ms,
        expect,
    }
}

/// Cache entries: versions only grow (across deletes and expiry), conditional writes change
/// nothing on a conflict, keys list live entries by prefix, caches and clusters are apart.
async fn cache_entries_are_versioned_conditional_and_expire(store: &Arc<dyn Store>) {
    let c = "cache";
    let put = |key: &'static str, value: &'static [u8], expect| async move {
        store
            .cache_put(c, &write("users", key, value, None, expect))
            .await
            .unwrap()
    };
    assert_eq!(store.cache_get(c, "users", "u/1").await.unwrap(), None);
    assert_eq!(
        put("u/1", b"\x00\xffbytes", Expect::Absent).await,
        CacheOutcome::Done { version: 1 }
    );
    let e = store.cache_get(c, "users", "u/1").await.unwrap().unwrap();
    assert_eq!(
        (e.value.as_slice(), e.version, e.expires_at_ms),
        (&b"\x00\xffbytes"[..], 1, None)
    );
    assert_eq!(
        put("u/1", b"again", Expect::Absent).await,
        CacheOutcome::Conflict { current: Some(1) }
    );
    assert_eq!(
        put("u/1", b"stale", Expect::Version(7)).await,
        CacheOutcome::Conflict { current: Some(1) }
    );
    assert_eq!(
        put("u/1", b"two", Expect::Version(1)).await,
        CacheOutcome::Done { version: 2 }
    );
    assert_eq!(
        put("u/1", b"three", Expect::Any).await,
        CacheOutcome::Done { version: 3 }
    );
    assert_eq!(
        store
            .cache_get(c, "users", "u/1")
            .await
            .unwrap()
            .unwrap()
            .value,
        b"three"
    );
    // Delete keeps the version growing: a compare-and-set from before never matches again.
    assert_eq!(
        store
            .cache_delete(c, "users", "u/1", Expect::Version(2))
            .await
            .unwrap(),
        CacheOutcome::Conflict { current: Some(3) }
    );
    assert_eq!(
        store
            .cache_delete(c, "users", "u/1", Expect::Version(3))
            .await
            .unwrap(),
        CacheOutcome::Done { version: 4 }
    );
    assert_eq!(store.cache_get(c, "users", "u/1").await.unwrap(), None);
    assert_eq!(
        store
            .cache_delete(c, "users", "u/1", Expect::Any)
            .await
            .unwrap(),
        CacheOutcome::Done { version: 0 },
        "nothing live to delete: nothing changes"
    );
    assert_eq!(
        put("u/1", b"x", Expect::Version(3)).await,
        CacheOutcome::Conflict { current: None }
    );
    assert_eq!(
        put("u/1", b"back", Expect::Absent).await,
        CacheOutcome::Done { version: 5 }
    );
    // Keys: live ones, by prefix, in order; other caches and clusters apart.
    for key in ["u/2", "u/3", "v/1", "U/9"] {
        put(key, b"k", Expect::Any).await;
    }
    store
        .cache_put(c, &write("other", "u/4", b"o", None, Expect::Any))
        .await
        .unwrap();
    store
        .cache_put("cache-2", &write("users", "u/5", b"o", None, Expect::Any))
        .await
        .unwrap();
    store
        .cache_delete(c, "users", "u/3", Expect::Any)
        .await
        .unwrap();
    assert_eq!(
        store.cache_keys(c, "users", "u/", 100).await.unwrap(),
        ["u/1", "u/2"]
    );
    assert_eq!(
        store.cache_keys(c, "users", "u/", 1).await.unwrap(),
        ["u/1"]
    );
    assert_eq!(
        store.cache_keys(c, "users", "", 100).await.unwrap(),
        ["U/9", "u/1", "u/2", "v/1"]
    );
    assert_eq!(
        store.cache_get("cache-2", "users", "u/1").await.unwrap(),
        None
    );
    // Keys are compared byte for byte: case and trailing spaces make other keys.
    for key in ["k", "k ", "K"] {
        assert_eq!(
            put(key, key.as_bytes(), Expect::Absent).await,
            CacheOutcome::Done { version: 1 },
            "`{key}` is a key of its own"
        );
    }
    assert_eq!(
        store
            .cache_get(c, "users", "k ")
            .await
            .unwrap()
            .unwrap()
            .value,
        b"k "
    );
    assert_eq!(
        store.cache_keys(c, "users", "k", 10).await.unwrap(),
        ["k", "k "]
    );
    // Concurrent first writes of different keys all succeed (InnoDB's gap locks make such
    // transactions deadlock; the store retries them).
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let key = format!("new/{i}");
                store
                    .cache_put(c, &write("users", &key, b"v", None, Expect::Absent))
                    .await
            })
        })
        .collect();
    for w in writers {
        assert_eq!(w.await.unwrap().unwrap(), CacheOutcome::Done { version: 1 });
    }
    // Expiry by store time: gone for reads, keys and conditions, and the version goes on.
    let now = store.now_ms().await.unwrap();
    let CacheOutcome::Done { version } = store
        .cache_put(
            c,
            &write("users", "ttl", b"short", Some(3_000), Expect::Any),
        )
        .await
        .unwrap()
    else {
        panic!("an unconditional write is done")
    };
    let e = store.cache_get(c, "users", "ttl").await.unwrap().unwrap();
    let expires = e.expires_at_ms.expect("an expiry");
    assert!(
        (now + 2_900..=now + 6_000).contains(&expires),
        "expires at {expires}, written at about {now}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while store.cache_get(c, "users", "ttl").await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the entry never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!store
        .cache_keys(c, "users", "ttl", 10)
        .await
        .unwrap()
        .contains(&"ttl".to_string()));
    assert_eq!(
        store
            .cache_put(c, &write("users", "ttl", b"new", None, Expect::Absent))
            .await
            .unwrap(),
        CacheOutcome::Done {
            version: version + 1
        }
    );
}

/// Contract 1 for state: a task's state is saved only under its current token.
async fn task_state_is_saved_only_under_the_current_token(store: &Arc<dyn Store>) {
    let a = member("state", "a", 1);
    let b = member("state", "b", 1);
    join(store, &a, 60_000).await;
    join(store, &b, 60_000).await;
    let l = store.acquire_leadership(&a).await.unwrap().unwrap();
    assign(store, &a, l.epoch, "t", &a).await;
    let t1 = store.assignments("state").await.unwrap()[0].token;
    assert!(store
        .save_task_state("state", "t", t1, b"cursor=1")
        .await
        .unwrap());
    assert!(!store
        .save_task_state("state", "t", t1 + 1, b"future")
        .await
        .unwrap());
    assert!(!store
        .save_task_state("state", "nope", t1, b"no task")
        .await
        .unwrap());
    assign(store, &a, l.epoch, "t", &b).await;
    let t2 = store.assignments("state").await.unwrap()[0].token;
    // The old owner's token is stale: its save is refused, the state stays.
    assert!(!store
        .save_task_state("state", "t", t1, b"cursor=stale")
        .await
        .unwrap());
    let saved = store
        .cache_get("state", TASK_STATE_CACHE, "t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(saved.value, b"cursor=1");
    assert!(store
        .save_task_state("state", "t", t2, b"cursor=2")
        .await
        .unwrap());
    let saved = store
        .cache_get("state", TASK_STATE_CACHE, "t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (saved.value.as_slice(), saved.version),
        (&b"cursor=2"[..], 2)
    );
}

/// The event journal: one record per id however often it is reported, read newest first,
/// bodies kept as given, other clusters' events never seen, old ones purged.
async fn events_are_recorded_once_newest_first_and_purged(store: &Arc<dyn Store>) {
    use rota::store::EventRecord;
    let body = |n: i64| serde_json::json!({"node": "node-1", "n": n, "text": "naïve \"quoted\""});
    let events: Vec<EventRecord> = (1..=5)
        .map(|n| EventRecord::new(1_000 * n, "node_died", &format!("node-1-{n}"), &body(n)))
        .collect();
    // Out of order, and each twice (two leaders reporting the same death).
    for e in events.iter().rev().chain(events.iter()) {
        store.record_event("ev", e).await.unwrap();
    }
    store
        .record_event(
            "ev-other",
            &EventRecord::new(1_000, "node_left", "x-1", &body(9)),
        )
        .await
        .unwrap();
    let read = store.events("ev", 100).await.unwrap();
    let expected: Vec<EventRecord> = events.iter().rev().cloned().collect();
    assert_eq!(read, expected, "each once, newest first, as recorded");
    assert_eq!(store.events("ev", 2).await.unwrap(), expected[..2].to_vec());
    // Purged with the history: events before the mark go, the rest stay.
    store.purge_history("ev", 3_000).await.unwrap();
    let kept: Vec<i64> = store
        .events("ev", 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.at_ms)
        .collect();
    assert_eq!(kept, vec![5_000, 4_000, 3_000]);
    assert_eq!(store.events("ev-other", 100).await.unwrap().len(), 1);
    assert!(store.events("ev-none", 100).await.unwrap().is_empty());
}

/// Contract 8 at the store: one total order shared with the generation, bodies kept as
/// given, acknowledgements replaced per (command, node) and stamped with store time.
async fn commands_are_ordered_durable_and_acknowledged_per_node(store: &Arc<dyn Store>) {
    use rota::store::{Ack, AckFilter, AckState};
    let a = member("cmd", "a", 1);
    join(store, &a, 10_000).await;
    let before = store.generation("cmd").await.unwrap();
    let now = store.now_ms().await.unwrap();
    let mut seqs = Vec::new();
    for i in 0..5 {
        let body = format!(r#"{{"op":"drain","n":{i},"text":"é ' \" ;"}}"#);
        let (seq, at) = store.append_command("cmd", &body).await.unwrap();
        assert!(
            at >= now - 1000 && at <= now + 60_000,
            "issue time is store time: {at} vs {now}"
        );
        seqs.push(seq);
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing: {seqs:?}"
    );
    assert!(seqs[0] > before, "above the generation before");
    assert_eq!(
        store.generation("cmd").await.unwrap(),
        seqs[4],
        "each command takes a generation"
    );
    let all = store.commands("cmd", 0, 100).await.unwrap();
    assert_eq!(all.iter().map(|c| c.seq).collect::<Vec<_>>(), seqs);
    assert!(
        all[3].body.contains(r#""n":3"#) && all[3].body.contains("é ' \\\" ;"),
        "{}",
        all[3].body
    );
    let tail = store.commands("cmd", seqs[1], 2).await.unwrap();
    assert_eq!(tail.iter().map(|c| c.seq).collect::<Vec<_>>(), seqs[2..4]);
    assert!(store
        .commands("other-cluster", 0, 10)
        .await
        .unwrap()
        .is_empty());
    // Two concurrent appends never share a number.
    let (x, y) = tokio::join!(
        store.append_command("cmd", "{}"),
        store.append_command("cmd", "{}")
    );
    assert_ne!(x.unwrap().0, y.unwrap().0);

    let ack = |seq, node: &str, state, message: &str| Ack {
        seq,
        node: node.into(),
        incarnation: 1,
        state,
        message: message.into(),
        at_ms: 0,
    };
    store
        .ack_command("cmd", &ack(seqs[0], "a", AckState::InProgress, "draining"))
        .await
        .unwrap();
    store
        .ack_command("cmd", &ack(seqs[0], "a", AckState::Applied, "drained"))
        .await
        .unwrap();
    store
        .ack_command("cmd", &ack(seqs[0], "b", AckState::Failed, "no such task"))
        .await
        .unwrap();
    store
        .ack_command("cmd", &ack(seqs[2], "a", AckState::Applied, ""))
        .await
        .unwrap();
    let by_command = store
        .command_acks("cmd", AckFilter::Commands(&seqs[..2]))
        .await
        .unwrap();
    let seen: Vec<(i64, &str, AckState, &str)> = by_command
        .iter()
        .map(|a| (a.seq, a.node.as_str(), a.state, a.message.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (seqs[0], "a", AckState::Applied, "drained"),
            (seqs[0], "b", AckState::Failed, "no such task"),
        ],
        "replaced, not added"
    );
    assert!(
        by_command.iter().all(|a| a.at_ms >= now - 1000),
        "ack time is store time"
    );
    let of_a = store
        .command_acks("cmd", AckFilter::Node("a"))
        .await
        .unwrap();
    assert_eq!(
        of_a.iter().map(|a| a.seq).collect::<Vec<_>>(),
        vec![seqs[0], seqs[2]]
    );
    assert!(store
        .command_acks("cmd", AckFilter::Node("nobody"))
        .await
        .unwrap()
        .is_empty());
}

async fn changed_assignments_are_read_by_generation(store: &Arc<dyn Store>) {
    let a = member("gen", "a", 1);
    let b = member("gen", "b", 1);
    join(store, &a, 60_000).await;
    join(store, &b, 60_000).await;
    let l = store.acquire_leadership(&a).await.unwrap().unwrap();
    for t in ["t1", "t2", "t3"] {
        assign(store, &a, l.epoch, t, &a).await;
    }
    let seen = store.generation("gen").await.unwrap();
    let all = store.assignments_since("gen", -1).await.unwrap();
    assert_eq!(all, store.assignments("gen").await.unwrap());
    assert_eq!(all.len(), 3);
    assert!(store
        .assignments_since("gen", seen)
        .await
        .unwrap()
        .is_empty());
    // A membership change bumps the generation without changing assignments.
    join(store, &member("gen", "c", 1), 60_000).await;
    assert!(store
        .assignments_since("gen", seen)
        .await
        .unwrap()
        .is_empty());
    assign(store, &a, l.epoch, "t2", &b).await;
    let changed = store.assignments_since("gen", seen).await.unwrap();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0].task, "t2");
    assert_eq!(changed[0].owner, Some(("b".to_string(), 1)));
    let now = store.generation("gen").await.unwrap();
    assert!(now > seen);
    assert!(store
        .assignments_since("gen", now)
        .await
        .unwrap()
        .is_empty());
    // Many changes later (a store may keep a bounded change log), an old generation still
    // gets every row changed since, and a recent one only its own.
    for i in 0..300 {
        let owner = if i % 2 == 0 { &a } else { &b };
        assign(store, &a, l.epoch, "t3", owner).await;
    }
    let recent = store.generation("gen").await.unwrap();
    assign(store, &a, l.epoch, "t1", &b).await;
    let mut old: Vec<String> = store
        .assignments_since("gen", now)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.task)
        .collect();
    old.sort();
    assert_eq!(old, ["t1", "t3"]);
    let fresh = store.assignments_since("gen", recent).await.unwrap();
    assert_eq!(fresh.len(), 1, "{fresh:?}");
    assert_eq!(
        (fresh[0].task.as_str(), fresh[0].owner.clone()),
        ("t1", Some(("b".to_string(), 1)))
    );
}

async fn membership_and_same_id_refusal(store: &Arc<dyn Store>) {
    let a = member("m", "n1", 1);
    join(store, &a, 60_000).await;
    assert!(store.heartbeat(&a, i64::MAX).await.unwrap());
    // Another incarnation with the same id, while the first is alive: refused, nothing written.
    let b = member("m", "n1", 2);
    match store.join(&join_req(&b, 60_000)).await.unwrap() {
        JoinOutcome::Occupied(r) => assert_eq!(r.incarnation, 1),
        other => panic!("second live node admitted: {other:?}"),
    }
    assert!(
        store.heartbeat(&a, i64::MAX).await.unwrap(),
        "the first registration is untouched"
    );
    // The same id replacing its own (crashed) predecessor is admitted at once; the old
    // incarnation can no longer renew.
    let mut req = join_req(&b, 60_000);
    req.replaces = Some(1);
    assert!(matches!(
        store.join(&req).await.unwrap(),
        JoinOutcome::Joined { .. }
    ));
    assert!(
        !store.heartbeat(&a, i64::MAX).await.unwrap(),
        "the replaced incarnation is dead"
    );
    assert!(store.heartbeat(&b, i64::MAX).await.unwrap());
    // A renewal that reaches the store after its sender's deadline changes nothing.
    let past = store.now_ms().await.unwrap() - 1;
    assert!(!store.heartbeat(&b, past).await.unwrap());
    let view = store.view("m").await.unwrap();
    assert_eq!(view.nodes.len(), 1);
    assert!(view.nodes[0].alive && view.nodes[0].incarnation == 2);
    let decl = store.declarations("m", None).await.unwrap();
    let only = store
        .declarations("m", Some(&[("n1".to_string(), 2)]))
        .await
        .unwrap();
    assert_eq!(only.len(), 1);
    assert!(
        store
            .declarations("m", Some(&[("n1".to_string(), 1)]))
            .await
            .unwrap()
            .is_empty(),
        "a replaced registration"
    );
    assert_eq!(decl[0].set.tasks[0].name, "t");
    assert_eq!(
        decl[0].meta.labels["zone"], "a",
        "labels are registered with the declarations"
    );
    // Leaving removes the registration at once and bumps the generation.
    let g = store.generation("m").await.unwrap();
    store.leave(&b).await.unwrap();
    assert!(store.view("m").await.unwrap().nodes.is_empty());
    assert!(store.generation("m").await.unwrap() > g);
    a_leave_racing_renewals_removes_the_registration(store).await;
    identical_declarations_are_stored_once_and_purged_when_unnamed(store).await;
}

/// Identical nodes declare one set: stored and read once under its digest, whatever each
/// node's labels; a different set has its own. A set stays while a registration names it
/// or a join named it recently, and is purged after.
async fn identical_declarations_are_stored_once_and_purged_when_unnamed(store: &Arc<dyn Store>) {
    let cluster = "sets";
    let declares = |m: &Member, zone: &str, tasks: &[&str]| {
        let mut req = join_req(m, 60_000);
        req.declared = tasks
            .iter()
            .map(|t| Declaration {
                name: t.to_string(),
                hash: format!("h-{t}"),
                schedule: "every 1s".into(),
            })
            .collect();
        req.meta.labels = [("zone".to_string(), zone.to_string())].into();
        req
    };
    let (a, b, c) = (
        member(cluster, "a", 1),
        member(cluster, "b", 1),
        member(cluster, "c", 1),
    );
    for req in [
        declares(&a, "east", &["t1", "t2"]),
        declares(&b, "west", &["t1", "t2"]),
        declares(&c, "east", &["t1", "t3"]),
    ] {
        assert!(matches!(
            store.join(&req).await.unwrap(),
            JoinOutcome::Joined { .. }
        ));
    }
    let regs = store.registrations_declared(cluster, None).await.unwrap();
    let digest = |node: &str| regs.iter().find(|r| r.node == node).unwrap().digest.clone();
    assert_eq!(digest("a"), digest("b"), "identical tasks, one set");
    assert_ne!(digest("a"), digest("c"), "other tasks, another set");
    assert!(regs.iter().all(|r| r.inline.is_none()));
    let labels =
        |node: &str| regs.iter().find(|r| r.node == node).unwrap().meta.labels["zone"].clone();
    assert_eq!(
        (labels("a"), labels("b")),
        ("east".into(), "west".into()),
        "labels are each node's own"
    );
    let sets = store
        .declared_sets(cluster, &[digest("a"), digest("c"), "0".repeat(64)])
        .await
        .unwrap();
    assert_eq!(sets.len(), 2, "an unknown digest is not found");
    let names = |d: &str| {
        sets[d]
            .tasks
            .iter()
            .map(|t| t.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        (names(&digest("a")), names(&digest("c"))),
        (
            vec!["t1".into(), "t2".into()],
            vec!["t1".into(), "t3".into()]
        )
    );
    // Composed: each node with its set and its labels.
    let all = store.declarations(cluster, None).await.unwrap();
    let b_decl = all.iter().find(|d| d.node == "b").unwrap();
    assert_eq!(b_decl.set.tasks.len(), 2);
    assert_eq!(b_decl.meta.labels["zone"], "west");

    // c leaves: its set is unnamed, but a purge soon after its last use keeps it.
    store.leave(&c).await.unwrap();
    let now = store.now_ms().await.unwrap();
    store.purge_history(cluster, now + 60_000).await.unwrap();
    let kept = store.declared_sets(cluster, &[digest("c")]).await.unwrap();
    assert_eq!(kept.len(), 1, "a set used just before the cut-off stays");
    // Unused for hours past the cut-off: purged (a join that found it has an hour to name
    // it). The set a and b still name stays, however old.
    store
        .purge_history(cluster, now + 3 * 3_600_000)
        .await
        .unwrap();
    let left = store
        .declared_sets(cluster, &[digest("a"), digest("c")])
        .await
        .unwrap();
    assert!(
        left.contains_key(&digest("a")),
        "a named set is never purged"
    );
    assert!(
        !left.contains_key(&digest("c")),
        "an unnamed, unused set is purged"
    );
    // A node declaring the purged set again stores it again.
    let c2 = member(cluster, "c", 2);
    assert!(matches!(
        store
            .join(&declares(&c2, "east", &["t1", "t3"]))
            .await
            .unwrap(),
        JoinOutcome::Joined { .. }
    ));
    let again = store
        .declarations(cluster, Some(&[("c".to_string(), 2)]))
        .await
        .unwrap();
    assert_eq!(again[0].set.tasks.len(), 2, "{again:?}");
    for m in [&a, &b, &c2] {
        store.leave(m).await.unwrap();
    }
}

/// A node renews until it has left: a renewal between the leave's read and its delete must
/// not leave the registration behind (ZooKeeper's delete checks the version it read, and
/// gave up on a change, leaving a gracefully stopped node listed as dead).
async fn a_leave_racing_renewals_removes_the_registration(store: &Arc<dyn Store>) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    for incarnation in 1..=10 {
        let m = member("race-leave", "n1", incarnation);
        join(store, &m, 60_000).await;
        let renewals = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let renewing = {
            let (store, m, renewals, stop) =
                (store.clone(), m.clone(), renewals.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = store.heartbeat(&m, i64::MAX).await;
                    renewals.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        while renewals.load(Ordering::Relaxed) < 3 {
            tokio::task::yield_now().await;
        }
        store.leave(&m).await.unwrap();
        stop.store(true, Ordering::Relaxed);
        renewing.await.unwrap();
        let view = store.view("race-leave").await.unwrap();
        assert!(
            view.nodes.is_empty(),
            "a leave racing renewals left the registration behind: {:?}",
            view.nodes
        );
    }
}

async fn clusters_are_isolated(store: &Arc<dyn Store>) {
    let x = member("iso-x", "n1", 1);
    let y = member("iso-y", "n1", 1);
    join(store, &x, 60_000).await;
    join(store, &y, 60_000).await; // same id, other cluster: no conflict
    assert_eq!(store.view("iso-x").await.unwrap().nodes.len(), 1);
    let lx = store.acquire_leadership(&x).await.unwrap().unwrap();
    let ly = store.acquire_leadership(&y).await.unwrap().unwrap();
    assert_eq!((lx.node.as_str(), ly.node.as_str()), ("n1", "n1"));
    assert_eq!(
        assign(store, &x, lx.epoch, "t", &x).await,
        LeaderWrite::Written
    );
    assert!(store.assignments("iso-y").await.unwrap().is_empty());
}

async fn leadership_is_fenced_by_epoch(store: &Arc<dyn Store>) {
    let a = member("lead", "a", 1);
    let b = member("lead", "b", 1);
    join(store, &a, 1500).await;
    join(store, &b, 60_000).await;
    let la = store.acquire_leadership(&a).await.unwrap().unwrap();
    assert_eq!(la.node, "a");
    // While a is alive, b cannot take over.
    assert_eq!(
        store.acquire_leadership(&b).await.unwrap().unwrap().node,
        "a"
    );
    assert_eq!(
        assign(store, &a, la.epoch, "t", &b).await,
        LeaderWrite::Written
    );
    // A leader's command steps (acknowledgements on others' behalf, a command) are written
    // together under its epoch.
    let step = |seq: i64, node: &str| Ack {
        seq,
        node: node.into(),
        incarnation: 1,
        state: AckState::InProgress,
        message: "restarting".into(),
        at_ms: 0,
    };
    let before = store.commands("lead", 0, 100).await.unwrap().len();
    assert_eq!(
        store
            .lead_commands(&a, la.epoch, &[step(1, "b")], Some("{\"by\":\"a\"}"))
            .await
            .unwrap(),
        LeaderWrite::Written
    );
    assert_eq!(
        store
            .lead_commands(&a, la.epoch + 1, &[step(2, "b")], Some("{}"))
            .await
            .unwrap(),
        LeaderWrite::Deposed,
        "not an epoch it holds"
    );
    // a stops renewing; after its timeout (store time) b takes over with a higher epoch.
    let lb = common::eventually(
        "b becomes leader",
        std::time::Duration::from_secs(10),
        None,
        || async {
            store
                .acquire_leadership(&b)
                .await
                .unwrap()
                .filter(|l| l.node == "b")
        },
    )
    .await;
    assert!(lb.epoch > la.epoch);
    // The deposed leader's writes are refused by the store.
    assert_eq!(
        assign(store, &a, la.epoch, "t", &a).await,
        LeaderWrite::Deposed
    );
    assert_eq!(
        store
            .lead_commands(&a, la.epoch, &[step(3, "b")], Some("{\"by\":\"a, late\"}"))
            .await
            .unwrap(),
        LeaderWrite::Deposed,
        "a deposed leader's command steps are refused"
    );
    let commands = store.commands("lead", 0, 100).await.unwrap();
    assert_eq!(
        commands.len(),
        before + 1,
        "only the step written in office"
    );
    assert_eq!(commands.last().unwrap().body, "{\"by\":\"a\"}");
    let acks = store
        .command_acks("lead", AckFilter::Commands(&[1, 2, 3]))
        .await
        .unwrap();
    assert_eq!(
        acks.iter().map(|a| a.seq).collect::<Vec<_>>(),
        vec![1],
        "only the acknowledgement written in office"
    );
    assert_eq!(
        assign(store, &b, lb.epoch, "t", &b).await,
        LeaderWrite::Written
    );
    // A released leadership is taken at once, and epochs keep increasing.
    store.release_leadership(&b).await.unwrap();
    let c = member("lead", "c", 1);
    join(store, &c, 60_000).await;
    let lc = store.acquire_leadership(&c).await.unwrap().unwrap();
    assert_eq!(lc.node, "c");
    assert!(lc.epoch > lb.epoch);
}

async fn tokens_increase_and_stale_claims_are_refused(store: &Arc<dyn Store>) {
    let a = member("tok", "a", 1);
    let b = member("tok", "b", 1);
    join(store, &a, 60_000).await;
    join(store, &b, 60_000).await;
    let l = store.acquire_leadership(&a).await.unwrap().unwrap();
    assert_eq!(
        assign(store, &a, l.epoch, "t", &a).await,
        LeaderWrite::Written
    );
    let t1 = store.assignments("tok").await.unwrap()[0].token;
    assert_eq!(
        store.claim(&claim(&a, "t", 1000, t1)).await.unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(
        store.claim(&claim(&a, "t", 1000, t1)).await.unwrap(),
        ClaimOutcome::AlreadyClaimed
    );
    // Not the owner: fenced even with the right token.
    assert_eq!(
        store.claim(&claim(&b, "t", 2000, t1)).await.unwrap(),
        ClaimOutcome::Fenced
    );
    assert_eq!(
        assign(store, &a, l.epoch, "t", &b).await,
        LeaderWrite::Written
    );
    let t2 = store.assignments("tok").await.unwrap()[0].token;
    assert!(
        t2 > t1,
        "the token strictly increases when the task changes hands"
    );
    // The old owner's token is stale: it cannot start anything.
    assert_eq!(
        store.claim(&claim(&a, "t", 2000, t1)).await.unwrap(),
        ClaimOutcome::Fenced
    );
    assert_eq!(
        store.claim(&claim(&b, "t", 2000, t2)).await.unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(store.last_instant("tok", "t").await.unwrap(), Some(2000));
    // Many changes at once: moves to one owner, a move to nobody with a reason, new tasks.
    let before: std::collections::HashMap<String, i64> = store
        .assignments("tok")
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.task, a.token))
        .collect();
    let to = |task: &str, owner: Option<&Member>, reason: Option<&str>| AssignmentChange {
        task: task.into(),
        owner: owner.map(|m| (m.node.clone(), m.incarnation)),
        reason: reason.map(str::to_string),
        expected_token: before.get(task).copied(),
    };
    let batch = vec![
        to("t", Some(&a), None),
        to("u1", Some(&a), None),
        to("u2", None, Some("why")),
        to("u3", Some(&a), None),
    ];
    assert_eq!(
        store.write_assignments(&a, l.epoch, &batch).await.unwrap(),
        LeaderWrite::Written
    );
    let after = store.assignments("tok").await.unwrap();
    let find = |t: &str| after.iter().find(|x| x.task == t).unwrap().clone();
    assert_eq!(
        (find("t").token, find("t").owner.unwrap().0.as_str()),
        (t2 + 1, "a")
    );
    assert_eq!(
        (
            find("u2").owner.clone(),
            find("u2").reason.as_deref(),
            find("u2").token
        ),
        (None, Some("why"), 1)
    );
    assert_eq!(find("u3").owner.unwrap().0, "a");
    assert!(
        find("u3").placed_at_ms > 0,
        "placed when first given an owner"
    );
    assert_eq!(
        find("u2").placed_at_ms,
        0,
        "never placed while it has no owner"
    );
    let place_u2 = vec![AssignmentChange {
        expected_token: Some(1),
        ..to("u2", Some(&a), None)
    }];
    assert_eq!(
        store
            .write_assignments(&a, l.epoch, &place_u2)
            .await
            .unwrap(),
        LeaderWrite::Written
    );
    let u2 = store
        .assignments("tok")
        .await
        .unwrap()
        .into_iter()
        .find(|x| x.task == "u2")
        .unwrap();
    assert!(
        u2.placed_at_ms > 0 && u2.owner.is_some(),
        "placed when it first gets an owner"
    );
    let back = vec![AssignmentChange {
        expected_token: Some(t2 + 1),
        ..to("t", Some(&b), None)
    }];
    assert_eq!(
        store.write_assignments(&a, l.epoch, &back).await.unwrap(),
        LeaderWrite::Written
    );
    let t2 = t2 + 2;
    // A leader write based on a stale read is refused as a whole.
    let stale = AssignmentChange {
        task: "t".into(),
        owner: Some(("a".into(), 1)),
        reason: None,
        expected_token: Some(t1),
    };
    assert_eq!(
        store
            .write_assignments(&a, l.epoch, &[stale])
            .await
            .unwrap(),
        LeaderWrite::Stale
    );
    // A batch gives each claim its own answer, under the same rules.
    let batch = [
        claim(&b, "t", 2000, t2),
        claim(&b, "t", 5000, t2),
        claim(&b, "t", 6000, t1),
        claim(&b, "t", 7000, t2),
    ];
    assert_eq!(
        store.claim_batch(&batch).await.unwrap(),
        vec![
            ClaimOutcome::AlreadyClaimed,
            ClaimOutcome::Claimed,
            ClaimOutcome::Fenced,
            ClaimOutcome::Claimed
        ]
    );
    let finish = |instant: i64, outcome: Outcome| rota::store::Finish {
        task: "t".into(),
        instant_ms: instant,
        token: t2,
        attempt: 1,
        outcome,
        message: None,
    };
    store
        .finish_batch(
            "tok",
            &[
                finish(5000, Outcome::Ok),
                rota::store::Finish {
                    message: Some(QUOTED.into()),
                    ..finish(7000, Outcome::Failed)
                },
            ],
        )
        .await
        .unwrap();
    let h = store.history("tok", Some("t"), 10).await.unwrap();
    let outcome_of = |i: i64| h.iter().find(|f| f.instant_ms == i).map(|f| f.outcome);
    assert_eq!(
        (outcome_of(5000), outcome_of(7000), outcome_of(6000)),
        (Some(Outcome::Ok), Some(Outcome::Failed), None)
    );
    let message_of = |i: i64| {
        h.iter()
            .find(|f| f.instant_ms == i)
            .and_then(|f| f.message.clone())
    };
    assert_eq!(
        message_of(7000).as_deref(),
        Some(QUOTED),
        "a batch keeps each message as written"
    );
    // Misfires follow the same fence.
    assert_eq!(
        store
            .record_misfires(&a, "t", t1, &[3000], "m")
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .record_misfires(&b, "t", t2, &[3000, 4000], "m")
            .await
            .unwrap(),
        2
    );
}

async fn expiry_is_judged_by_store_time_and_final(store: &Arc<dyn Store>) {
    let a = member("exp", "a", 1);
    join(store, &a, 200).await;
    let before = store.now_ms().await.unwrap();
    common::eventually(
        "a expires",
        std::time::Duration::from_secs(10),
        None,
        || async {
            let v = store.view("exp").await.unwrap();
            (!v.nodes[0].alive).then_some(())
        },
    )
    .await;
    assert!(
        store.now_ms().await.unwrap() - before >= 200,
        "not expired before its timeout, by store time"
    );
    assert!(
        !store.heartbeat(&a, i64::MAX).await.unwrap(),
        "an expired node cannot renew back to life"
    );
    // A fresh incarnation of the same id joins without waiting (the old one is dead).
    join(store, &member("exp", "a", 2), 60_000).await;
}

/// Contract 9: a fire left `running` by a dead node is settled once, by the current owner;
/// the store tells a fire whose work began (abandoned, or run again under `retry`) from one
/// only claimed (nothing ran: claimed again and started by the new owner).
async fn crashed_run_is_settled_once(store: &Arc<dyn Store>) {
    let dead = member("crash", "dead", 1);
    let b = member("crash", "b", 1);
    let c = member("crash", "c", 1);
    join(store, &dead, 1500).await;
    join(store, &b, 60_000).await;
    join(store, &c, 60_000).await;
    let l = store.acquire_leadership(&b).await.unwrap().unwrap();
    assign(store, &b, l.epoch, "t", &dead).await;
    let t1 = store.assignments("crash").await.unwrap()[0].token;
    for instant in [3000, 4000, 5000] {
        assert_eq!(
            store.claim(&claim(&dead, "t", instant, t1)).await.unwrap(),
            ClaimOutcome::Claimed
        );
    }
    let begin = |task: &str, instant_ms, token, attempt| Begin {
        task: task.into(),
        instant_ms,
        token,
        attempt,
    };
    // 3000 and 5000 begin; 4000 stays claimed only. A repeated begin (a lost reply) is
    // answered the same; another claimant's is refused.
    assert_eq!(
        store
            .begin_fires(&dead, &[begin("t", 3000, t1, 1), begin("t", 5000, t1, 1)])
            .await
            .unwrap(),
        vec![true, true]
    );
    assert_eq!(
        store
            .begin_fires(&dead, &[begin("t", 5000, t1, 1), begin("t", 4000, t1, 2)])
            .await
            .unwrap(),
        vec![true, false],
        "begun already; no such attempt"
    );
    assert_eq!(
        store
            .begin_fires(&c, &[begin("t", 4000, t1, 1)])
            .await
            .unwrap(),
        vec![false]
    );
    let fires = common::eventually(
        "the runner's node is dead",
        std::time::Duration::from_secs(10),
        None,
        || async {
            let running = store.running_fires("crash", "t").await.unwrap();
            running.iter().all(|f| !f.node_alive).then_some(running)
        },
    )
    .await;
    takeovers_match_each(store, "crash", &["t"]).await;
    let by_instant = |i: i64| fires.iter().find(|f| f.instant_ms == i).unwrap().clone();
    let (abandoned, claimed_only, retried) = (by_instant(3000), by_instant(4000), by_instant(5000));
    assert_eq!(
        fires
            .iter()
            .map(|f| (f.instant_ms, f.begun))
            .collect::<Vec<_>>(),
        vec![(3000, true), (4000, false), (5000, true)]
    );
    // Contract 2: an expired registration starts nothing, even with the task's current token
    // (the leader has not moved the task yet): no claim, and no begin of what it claimed.
    assert_eq!(
        store.claim(&claim(&dead, "t", 6000, t1)).await.unwrap(),
        ClaimOutcome::Fenced
    );
    // Nor settles a fire (contract 9: only a live current owner does).
    assert_eq!(
        store
            .recover_fire(&dead, "t", t1, &claimed_only, false)
            .await
            .unwrap(),
        ClaimOutcome::Fenced,
        "an expired registration settles nothing"
    );
    assign(store, &b, l.epoch, "t", &b).await;
    let t2 = store.assignments("crash").await.unwrap()[0].token;
    assert_eq!(
        store
            .begin_fires(&dead, &[begin("t", 4000, t1, 1)])
            .await
            .unwrap(),
        vec![false],
        "a dead node begins nothing"
    );
    // Someone without the current token cannot take it over.
    assert_eq!(
        store
            .recover_fire(&c, "t", t2, &retried, true)
            .await
            .unwrap(),
        ClaimOutcome::Fenced
    );
    assert_eq!(
        store
            .recover_fire(&b, "t", t2, &retried, true)
            .await
            .unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(
        store
            .recover_fire(&b, "t", t2, &retried, true)
            .await
            .unwrap(),
        ClaimOutcome::Fenced,
        "only once"
    );
    // At most once: a begun fire without `retry` is abandoned, never run again.
    assert_eq!(
        store
            .recover_fire(&b, "t", t2, &abandoned, false)
            .await
            .unwrap(),
        ClaimOutcome::Claimed
    );
    // Claimed only: nothing ran, so it is claimed again (same attempt) under either policy.
    assert_eq!(
        store
            .recover_fire(&b, "t", t2, &claimed_only, false)
            .await
            .unwrap(),
        ClaimOutcome::Claimed
    );
    let running = store.running_fires("crash", "t").await.unwrap();
    let state =
        |f: &rota::store::RunningFire| (f.instant_ms, f.attempt, f.token, f.node_alive, f.begun);
    assert_eq!(
        running.iter().map(state).collect::<Vec<_>>(),
        vec![(4000, 1, t2, true, false), (5000, 2, t2, true, false)]
    );
    assert_eq!(
        store
            .begin_fires(&b, &[begin("t", 4000, t2, 1), begin("t", 5000, t2, 2)])
            .await
            .unwrap(),
        vec![true, true]
    );
    let history = store.history("crash", Some("t"), 10).await.unwrap();
    let outcome = |i: i64| history.iter().find(|f| f.instant_ms == i).unwrap().outcome;
    assert_eq!(outcome(3000), Outcome::Abandoned);
    assert_eq!(outcome(4000), Outcome::Running);
}

/// Contract 9, one write per fire: a claim with `begin` leaves its record as a begin would
/// (its work may have run), under the claim's fence, and a dead node's fire so claimed is
/// settled as begun.
async fn a_claim_can_begin_its_fire_in_the_same_write(store: &Arc<dyn Store>) {
    let dead = member("eager", "dead", 1);
    let b = member("eager", "b", 1);
    join(store, &dead, 1500).await;
    join(store, &b, 60_000).await;
    let l = store.acquire_leadership(&b).await.unwrap().unwrap();
    assign(store, &b, l.epoch, "t", &dead).await;
    let t1 = store.assignments("eager").await.unwrap()[0].token;
    let begun = |instant: i64, token: i64| Claim {
        begin: true,
        ..claim(&dead, "t", instant, token)
    };
    assert_eq!(
        store
            .claim_batch(&[
                begun(1000, t1),
                claim(&dead, "t", 2000, t1),
                begun(3000, t1 + 1)
            ])
            .await
            .unwrap(),
        vec![
            ClaimOutcome::Claimed,
            ClaimOutcome::Claimed,
            ClaimOutcome::Fenced
        ]
    );
    assert_eq!(
        store.claim(&begun(1000, t1)).await.unwrap(),
        ClaimOutcome::AlreadyClaimed,
        "an instant is claimed once, begun or not"
    );
    let begin = Begin {
        task: "t".into(),
        instant_ms: 1000,
        token: t1,
        attempt: 1,
    };
    assert_eq!(
        store.begin_fires(&dead, &[begin]).await.unwrap(),
        vec![true],
        "begun already, by its claim"
    );
    let running = store.running_fires("eager", "t").await.unwrap();
    assert_eq!(
        running
            .iter()
            .map(|f| (f.instant_ms, f.begun, f.attempt))
            .collect::<Vec<_>>(),
        vec![(1000, true, 1), (2000, false, 1)]
    );
    let history = store.history("eager", Some("t"), 10).await.unwrap();
    let started = |i: i64| {
        history
            .iter()
            .find(|f| f.instant_ms == i)
            .map(|f| f.started_at_ms.is_some())
    };
    assert_eq!(
        (started(1000), started(2000), started(3000)),
        (Some(true), Some(false), None)
    );
    // Expired, it begins nothing, even with the current token.
    let fires = common::eventually(
        "the claimant's node is dead",
        std::time::Duration::from_secs(10),
        None,
        || async {
            let running = store.running_fires("eager", "t").await.unwrap();
            running.iter().all(|f| !f.node_alive).then_some(running)
        },
    )
    .await;
    assert_eq!(
        store.claim(&begun(4000, t1)).await.unwrap(),
        ClaimOutcome::Fenced
    );
    // Its new owner settles the begun fire as begun: abandoned (at most once).
    assign(store, &b, l.epoch, "t", &b).await;
    let t2 = store.assignments("eager").await.unwrap()[0].token;
    assert_eq!(
        store
            .recover_fire(&b, "t", t2, &fires[0], false)
            .await
            .unwrap(),
        ClaimOutcome::Claimed
    );
    let history = store.history("eager", Some("t"), 10).await.unwrap();
    let outcome = |i: i64| history.iter().find(|f| f.instant_ms == i).unwrap().outcome;
    assert_eq!(outcome(1000), Outcome::Abandoned);
}

/// `retry_fire` (a task's retry policy): a begun attempt that failed is made ready for the
/// next, not begun, only by its claimant under the current token; the next attempt then
/// begins like any fire, or is taken over by the next owner as a fire never begun.
async fn a_failed_attempt_is_readied_for_the_next_under_the_fence(store: &Arc<dyn Store>) {
    let a = member("retries", "a", 1);
    let b = member("retries", "b", 1);
    join(store, &a, 60_000).await;
    join(store, &b, 60_000).await;
    let l = store.acquire_leadership(&a).await.unwrap().unwrap();
    assign(store, &a, l.epoch, "t", &a).await;
    let t1 = store.assignments("retries").await.unwrap()[0].token;
    let begin = |instant_ms, token, attempt| Begin {
        task: "t".into(),
        instant_ms,
        token,
        attempt,
    };
    let state = |f: &rota::store::RunningFire| (f.instant_ms, f.attempt, f.token, f.begun);
    assert_eq!(
        store.claim(&claim(&a, "t", 1000, t1)).await.unwrap(),
        ClaimOutcome::Claimed
    );
    // Not begun yet: nothing ran, so there is no attempt to retry.
    assert_eq!(
        store
            .retry_fire(&a, &begin(1000, t1, 1), "x")
            .await
            .unwrap(),
        ClaimOutcome::Fenced
    );
    assert_eq!(
        store.begin_fires(&a, &[begin(1000, t1, 1)]).await.unwrap(),
        vec![true]
    );
    // Only the attempt that runs, under its own token.
    assert_eq!(
        store
            .retry_fire(&a, &begin(1000, t1, 2), "x")
            .await
            .unwrap(),
        ClaimOutcome::Fenced
    );
    assert_eq!(
        store
            .retry_fire(&a, &begin(1000, t1 + 1, 1), "x")
            .await
            .unwrap(),
        ClaimOutcome::Fenced
    );
    let note = "attempt 1 failed: exit status 1; attempt 2 at 2000";
    assert_eq!(
        store
            .retry_fire(&a, &begin(1000, t1, 1), note)
            .await
            .unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(
        store
            .retry_fire(&a, &begin(1000, t1, 1), note)
            .await
            .unwrap(),
        ClaimOutcome::Fenced,
        "once"
    );
    let running = store.running_fires("retries", "t").await.unwrap();
    assert_eq!(
        running.iter().map(state).collect::<Vec<_>>(),
        vec![(1000, 2, t1, false)]
    );
    let history = store.history("retries", Some("t"), 10).await.unwrap();
    assert_eq!(history[0].outcome, Outcome::Running);
    assert_eq!(history[0].attempt, 2);
    assert_eq!(history[0].message.as_deref(), Some(note));
    assert_eq!(
        store.begin_fires(&a, &[begin(1000, t1, 2)]).await.unwrap(),
        vec![true]
    );
    // Failed again, readied for attempt 3; then the task moves before it begins: the old
    // owner can neither ready nor begin anything, the new one takes it over, same attempt.
    assert_eq!(
        store
            .retry_fire(&a, &begin(1000, t1, 2), "again")
            .await
            .unwrap(),
        ClaimOutcome::Claimed
    );
    assign(store, &a, l.epoch, "t", &b).await;
    let t2 = store.assignments("retries").await.unwrap()[0].token;
    assert_eq!(
        store.begin_fires(&a, &[begin(1000, t1, 3)]).await.unwrap(),
        vec![false],
        "the old owner begins nothing"
    );
    let waiting = store.running_fires("retries", "t").await.unwrap();
    assert_eq!(
        waiting.iter().map(state).collect::<Vec<_>>(),
        vec![(1000, 3, t1, false)]
    );
    assert!(waiting[0].stranded(t2));
    assert_eq!(
        store
            .recover_fire(&b, "t", t2, &waiting[0], false)
            .await
            .unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(
        store.begin_fires(&b, &[begin(1000, t2, 3)]).await.unwrap(),
        vec![true]
    );
    assert_eq!(
        store
            .retry_fire(&a, &begin(1000, t1, 3), "late")
            .await
            .unwrap(),
        ClaimOutcome::Fenced,
        "a deposed owner readies nothing"
    );
    store
        .finish(
            "retries",
            &rota::store::Finish {
                task: "t".into(),
                instant_ms: 1000,
                token: t2,
                attempt: 3,
                outcome: Outcome::Ok,
                message: None,
            },
        )
        .await
        .unwrap();
    let history = store.history("retries", Some("t"), 10).await.unwrap();
    assert_eq!((history[0].outcome, history[0].attempt), (Outcome::Ok, 3));
}

async fn history_is_kept_and_purged(store: &Arc<dyn Store>) {
    let a = member("hist", "a", 1);
    join(store, &a, 60_000).await;
    let l = store.acquire_leadership(&a).await.unwrap().unwrap();
    assign(store, &a, l.epoch, "t", &a).await;
    let token = store.assignments("hist").await.unwrap()[0].token;
    for instant in [1000, 2000, 3000] {
        assert_eq!(
            store.claim(&claim(&a, "t", instant, token)).await.unwrap(),
            ClaimOutcome::Claimed
        );
        let finish = rota::store::Finish {
            task: "t".into(),
            instant_ms: instant,
            token,
            attempt: 1,
            outcome: Outcome::Ok,
            message: None,
        };
        store.finish("hist", &finish).await.unwrap();
    }
    let h = store.history("hist", Some("t"), 10).await.unwrap();
    assert_eq!(
        h.iter().map(|f| f.instant_ms).collect::<Vec<_>>(),
        vec![3000, 2000, 1000]
    );
    assert!(h
        .iter()
        .all(|f| f.outcome == Outcome::Ok && f.finished_at_ms.is_some()));
    // The newest of several records, alone and among other tasks.
    assert_eq!(store.last_instant("hist", "t").await.unwrap(), Some(3000));
    takeovers_match_each(store, "hist", &["t"]).await;
    // One fire read by its instant is the history's record of it; none where nothing is.
    let one = store.fire("hist", "t", 2000).await.unwrap();
    assert_eq!(one.as_ref(), h.iter().find(|f| f.instant_ms == 2000));
    assert_eq!(store.fire("hist", "t", 2500).await.unwrap(), None);
    assert_eq!(store.fire("hist", "other", 2000).await.unwrap(), None);
    assert_eq!(store.purge_history("hist", 2500).await.unwrap(), 2);
    assert_eq!(store.fire("hist", "t", 2000).await.unwrap(), None, "purged");
    assert_eq!(store.history("hist", None, 10).await.unwrap().len(), 1);
    // The newest record of each task stays, however old: a new owner resumes after it.
    assert_eq!(store.purge_history("hist", 10_000).await.unwrap(), 0);
    assert_eq!(store.last_instant("hist", "t").await.unwrap(), Some(3000));
    takeovers_match_each(store, "hist", &["t"]).await;
    // Claims out of order, in one batch and one by one: the last instant is the latest.
    let late = store
        .claim_batch(&[claim(&a, "t", 5000, token), claim(&a, "t", 4000, token)])
        .await
        .unwrap();
    assert_eq!(late, vec![ClaimOutcome::Claimed; 2]);
    assert_eq!(
        store.claim(&claim(&a, "t", 3500, token)).await.unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(store.last_instant("hist", "t").await.unwrap(), Some(5000));
    takeovers_match_each(store, "hist", &["t"]).await;
}

/// A fire begun and then finished `misfired` (its runner was stopped before the start) shows
/// no start in the history, whether finished alone or in a batch; one that ran keeps it.
async fn a_fire_stopped_as_it_began_keeps_no_start_time(store: &Arc<dyn Store>) {
    let a = member("unstart", "a", 1);
    join(store, &a, 60_000).await;
    let l = store.acquire_leadership(&a).await.unwrap().unwrap();
    assign(store, &a, l.epoch, "t", &a).await;
    let token = store.assignments("unstart").await.unwrap()[0].token;
    let finish = |instant_ms, outcome| rota::store::Finish {
        task: "t".into(),
        instant_ms,
        token,
        attempt: 1,
        outcome,
        message: None,
    };
    for instant in [1000, 2000, 3000] {
        assert_eq!(
            store.claim(&claim(&a, "t", instant, token)).await.unwrap(),
            ClaimOutcome::Claimed
        );
        let begun = Begin {
            task: "t".into(),
            instant_ms: instant,
            token,
            attempt: 1,
        };
        assert_eq!(store.begin_fires(&a, &[begun]).await.unwrap(), vec![true]);
    }
    store
        .finish("unstart", &finish(1000, Outcome::Misfired))
        .await
        .unwrap();
    store
        .finish_batch(
            "unstart",
            &[finish(2000, Outcome::Misfired), finish(3000, Outcome::Ok)],
        )
        .await
        .unwrap();
    let h = store.history("unstart", Some("t"), 10).await.unwrap();
    let started = |instant| {
        h.iter()
            .find(|f| f.instant_ms == instant)
            .map(|f| (f.outcome, f.started_at_ms.is_some()))
    };
    assert_eq!(started(1000), Some((Outcome::Misfired, false)));
    assert_eq!(started(2000), Some((Outcome::Misfired, false)));
    assert_eq!(started(3000), Some((Outcome::Ok, true)));
}

fn item_end<'a>(
    item: &'a str,
    token: i64,
    attempt: i64,
    outcome: Outcome,
    message: Option<&'a str>,
) -> rota::store::ItemEnd<'a> {
    rota::store::ItemEnd {
        service: "svc",
        item,
        token,
        attempt,
        outcome,
        message,
    }
}

async fn items_are_claimed_once_under_the_current_token(store: &Arc<dyn Store>) {
    let dead = member("items", "dead", 1);
    let b = member("items", "b", 1);
    let c = member("items", "c", 1);
    join(store, &dead, 1500).await;
    join(store, &b, 60_000).await;
    join(store, &c, 60_000).await;
    let l = store.acquire_leadership(&b).await.unwrap().unwrap();
    assign(store, &b, l.epoch, "svc", &dead).await;
    let t1 = store.assignments("items").await.unwrap()[0].token;
    // A service's items live beside its fires without touching them.
    assert_eq!(
        store.claim_item(&dead, "svc", t1, "a.csv").await.unwrap(),
        ItemClaim::Claimed
    );
    assert_eq!(
        store.claim_item(&c, "svc", t1, "b.csv").await.unwrap(),
        ItemClaim::Fenced,
        "not the owner"
    );
    assert_eq!(
        store
            .claim_item(&dead, "svc", t1 + 1, "b.csv")
            .await
            .unwrap(),
        ItemClaim::Fenced,
        "not the current token"
    );
    let long = "x".repeat(rota::service::MAX_ITEM_KEY);
    assert_eq!(
        store.claim_item(&dead, "svc", t1, &long).await.unwrap(),
        ItemClaim::Claimed,
        "keys of the documented maximum length fit"
    );
    assert!(store
        .running_fires("items", "svc")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.last_instant("items", "svc").await.unwrap(), None);
    takeovers_match_each(store, "items", &["svc"]).await;
    assert!(store
        .history("items", Some("svc"), 10)
        .await
        .unwrap()
        .is_empty());
    let record = match store.claim_item(&dead, "svc", t1, "a.csv").await.unwrap() {
        ItemClaim::Recorded(r) => r,
        other => panic!("a recorded item is never claimed again: {other:?}"),
    };
    assert_eq!(
        (
            record.outcome,
            record.attempt,
            record.token,
            record.node.as_str()
        ),
        (Outcome::Running, 1, t1, "dead")
    );
    // Its node dies mid-handling; the new owner takes it over, once.
    let record = common::eventually(
        "the item's node is dead",
        std::time::Duration::from_secs(10),
        None,
        || async {
            match store.claim_item(&b, "svc", t1, "a.csv").await.unwrap() {
                ItemClaim::Recorded(r) if !r.node_alive => Some(r),
                _ => None,
            }
        },
    )
    .await;
    assign(store, &b, l.epoch, "svc", &b).await;
    let t2 = store.assignments("items").await.unwrap()[0].token;
    assert_eq!(
        store
            .recover_item(&c, "svc", t2, "a.csv", &record, true)
            .await
            .unwrap(),
        ClaimOutcome::Fenced
    );
    assert_eq!(
        store
            .recover_item(&b, "svc", t2, "a.csv", &record, true)
            .await
            .unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(
        store
            .recover_item(&b, "svc", t2, "a.csv", &record, true)
            .await
            .unwrap(),
        ClaimOutcome::Fenced,
        "only once"
    );
    // The stale attempt cannot record an outcome; the current one can.
    store
        .finish_item("items", &item_end("a.csv", t1, 1, Outcome::Ok, None))
        .await
        .unwrap();
    match store.claim_item(&b, "svc", t2, "a.csv").await.unwrap() {
        ItemClaim::Recorded(r) => {
            assert_eq!((r.outcome, r.attempt, r.token), (Outcome::Running, 2, t2))
        }
        other => panic!("{other:?}"),
    }
    store
        .finish_item(
            "items",
            &item_end("a.csv", t2, 2, Outcome::Failed, Some("bad header")),
        )
        .await
        .unwrap();
    match store.claim_item(&b, "svc", t2, "a.csv").await.unwrap() {
        ItemClaim::Recorded(r) => assert_eq!(r.outcome, Outcome::Failed),
        other => panic!("{other:?}"),
    }
    // Abandon: the long-keyed item, left by the dead node.
    let record = match store.claim_item(&b, "svc", t2, &long).await.unwrap() {
        ItemClaim::Recorded(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        store
            .recover_item(&b, "svc", t2, &long, &record, false)
            .await
            .unwrap(),
        ClaimOutcome::Claimed
    );
    match store.claim_item(&b, "svc", t2, &long).await.unwrap() {
        ItemClaim::Recorded(r) => assert_eq!(r.outcome, Outcome::Abandoned),
        other => panic!("{other:?}"),
    }
    // Finished items are purged by age; running ones never.
    assert_eq!(
        store.claim_item(&b, "svc", t2, "c.csv").await.unwrap(),
        ItemClaim::Claimed
    );
    let now = store.now_ms().await.unwrap();
    // Not old enough yet: kept (a store may remember what it read, and must still purge
    // them once they are).
    assert_eq!(store.purge_history("items", now - 60_000).await.unwrap(), 0);
    assert_eq!(store.purge_history("items", now + 60_000).await.unwrap(), 2);
    assert_eq!(
        store.claim_item(&b, "svc", t2, "a.csv").await.unwrap(),
        ItemClaim::Claimed,
        "purged, so claimable again"
    );
    assert!(matches!(
        store.claim_item(&b, "svc", t2, "c.csv").await.unwrap(),
        ItemClaim::Recorded(_)
    ));
}

/// Session locks: a watcher sees a held lock let go when its holder's session closes
/// without unlocking (as at a death); ending the registration needs its key, happens once,
/// and from then on the registration starts nothing, renews no more and leads no more,
/// while its begun fire stays recorded as begun.
async fn a_released_session_lock_ends_its_registration(store: &Arc<dyn Store>) {
    let Some(hold) = store.hold_session().await.unwrap() else {
        assert_eq!(
            store.kind(),
            "zookeeper",
            "every SQL store has session locks"
        );
        return;
    };
    let key = hold.key;
    let a = member("session", "a", 1);
    let b = member("session", "b", 1);
    let joined = store
        .join(&JoinRequest {
            session_key: Some(key),
            ..join_req(&a, 60_000)
        })
        .await
        .unwrap();
    assert!(matches!(joined, JoinOutcome::Joined { .. }));
    join(store, &b, 60_000).await;
    let la = store.acquire_leadership(&a).await.unwrap().unwrap();
    assert_eq!(la.node, "a");
    assign(store, &a, la.epoch, "t", &a).await;
    let token = store.assignments("session").await.unwrap()[0].token;
    let begun = Claim {
        begin: true,
        ..claim(&a, "t", 1000, token)
    };
    assert_eq!(store.claim(&begun).await.unwrap(), ClaimOutcome::Claimed);
    let view = store.view("session").await.unwrap();
    assert_eq!(
        view.nodes[0].session_key,
        Some(key),
        "the registration names its key"
    );

    let mut watch = tokio::spawn(store.watch_session(key).expect("a watch"));
    // Pending while held (long enough for the watcher's first look to see it held).
    assert!(
        tokio::time::timeout(std::time::Duration::from_secs(5), &mut watch)
            .await
            .is_err(),
        "a held lock is not reported"
    );
    hold.sever();
    tokio::time::timeout(std::time::Duration::from_secs(20), watch)
        .await
        .expect("the watcher sees the lock let go")
        .unwrap();

    assert!(
        !store.end_registration(&a, key + 1).await.unwrap(),
        "another key ends nothing"
    );
    let generation = store.generation("session").await.unwrap();
    assert!(store.end_registration(&a, key).await.unwrap());
    assert!(
        !store.end_registration(&a, key).await.unwrap(),
        "ended once"
    );
    assert_eq!(store.generation("session").await.unwrap(), generation + 1);

    let view = store.view("session").await.unwrap();
    assert!(!view.nodes[0].alive && view.nodes[0].ended_at_ms.is_some());
    assert!(
        !store.heartbeat(&a, i64::MAX).await.unwrap(),
        "an ended registration cannot renew"
    );
    assert_eq!(
        store.claim(&claim(&a, "t", 2000, token)).await.unwrap(),
        ClaimOutcome::Fenced,
        "an ended registration claims nothing"
    );
    let running = store.running_fires("session", "t").await.unwrap();
    assert!(
        running.len() == 1 && running[0].begun && !running[0].node_alive,
        "its begun fire stays begun, for its successor to wait out: {running:?}"
    );
    let lb = store.acquire_leadership(&b).await.unwrap().unwrap();
    assert_eq!(
        (lb.node.as_str(), lb.epoch),
        ("b", la.epoch + 1),
        "a live node takes over the leadership"
    );
    assert_eq!(
        assign(store, &a, la.epoch, "t", &b).await,
        LeaderWrite::Deposed
    );
    // Its id is free again at once for a new incarnation.
    join(store, &member("session", "a", 2), 60_000).await;
}

async fn keeps_the_contract(kind: common::Kind) {
    let s = TestStore::new(kind).await;
    suite(s.store.clone()).await;
}

use common::Kind;
on_every_store!(keeps_the_contract);

#[tokio::test]
async fn schema_is_versioned_and_migrate_false_refuses_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("empty.db").display());
    let store = rota::store::open(&url).await.unwrap();
    let err = store.prepare(false).await.unwrap_err().to_string();
    assert!(
        err.contains("migrate = false") && err.contains("rota schema --db sqlite"),
        "{err}"
    );
    store.prepare(true).await.unwrap();
    store.prepare(true).await.unwrap(); // idempotent
    store.prepare(false).await.unwrap();
}

#[tokio::test]
async fn a_version_1_schema_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    let url = format!("sqlite://{}", path.display());
    let store = rota::store::open(&url).await.unwrap();
    // The schema as version 1 created it, with a row in it.
    let v1 = include_str!("fixtures/schema-v1-sqlite.sql");
    {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::raw_sql(v1).execute(&mut conn).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO rota_assignments (cluster, task, node_id, incarnation, token, epoch, assigned_at, placed_at, reason) \
             VALUES ('c', 'old', NULL, NULL, 7, 1, 0, 0, 'kept'); \
             INSERT INTO rota_nodes (cluster, node_id, incarnation, joined_at, heartbeat_at, timeout_ms, leaving, host, process, declared) \
             VALUES ('c', 'n1', 3, 0, 0, 1000, 0, 'h', 'p', '{\"tasks\":[{\"name\":\"old\",\"hash\":\"ab\",\"schedule\":\"every 1s\"}]}')",
        )
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let err = store.prepare(false).await.unwrap_err().to_string();
    assert!(err.contains("schema version 1"), "{err}");
    store.prepare(true).await.unwrap();
    store.prepare(false).await.unwrap();
    let rows = store.assignments_since("c", -1).await.unwrap();
    assert_eq!(rows.len(), 1, "rows survive the upgrade");
    assert_eq!((rows[0].task.as_str(), rows[0].token), ("old", 7));
    // Version 6 moved what registrations declare to a table of its own.
    let declared = store.declarations("c", None).await.unwrap();
    assert_eq!(declared.len(), 1, "registrations keep their declarations");
    assert_eq!(
        (declared[0].node.as_str(), declared[0].incarnation),
        ("n1", 3)
    );
    assert_eq!(declared[0].set.tasks[0].name, "old");
    assert_eq!(store.view("c").await.unwrap().nodes.len(), 1);
    // A node joining now: a rota of version 5 still running in a rolling upgrade reads its
    // row as declaring nothing (valid, empty); this version reads what it declares.
    let new = member("c", "n2", 1);
    join(&store, &new, 60_000).await;
    {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let old_view: String =
            sqlx::query_scalar("SELECT declared FROM rota_nodes WHERE node_id = 'n2'")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&old_view).unwrap();
        assert_eq!(parsed, serde_json::json!({"tasks": []}), "{old_view}");
    }
    let only = [("n2".to_string(), 1)];
    let declared = store.declarations("c", Some(&only)).await.unwrap();
    assert_eq!(declared[0].set.tasks[0].name, "t");
}

#[test]
fn dbscripts_match_the_migrations() {
    use rota::store::sql::{dialect::Dialect, schema};
    for (dialect, file) in [
        (Dialect::Sqlite, "sqlite"),
        (Dialect::Postgres, "postgres"),
        (Dialect::Mysql, "mysql"),
    ] {
        let path = format!("{}/../../dbscripts/{file}.sql", env!("CARGO_MANIFEST_DIR"));
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            on_disk,
            schema::script(dialect),
            "{path} is out of date: run `rota schema --db {file} > {path}`"
        );
    }
}

/// Polls until `wanted` statements wait at the server on a row lock held by the test's open
/// transaction, counting those `answered` says have already returned. On MySQL/MariaDB, the
/// running statements whose text is `LIKE` `statement` count as waiting.
async fn until_waiting(
    kind: Kind,
    url: &str,
    statement: &str,
    wanted: i64,
    what: &str,
    answered: impl Fn() -> i64,
) {
    use sqlx::Connection;
    let waiting = match kind {
        Kind::Postgres => "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
             AND datname = current_database()"
            .to_string(),
        // The statements are at the server, behind the transaction's lock.
        _ => format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
             WHERE DB = DATABASE() AND INFO LIKE '{statement}' AND TIME >= 0"
        ),
    };
    let mut probe = sqlx::AnyConnection::connect(url).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let n: i64 = sqlx::query_scalar(&waiting)
            .fetch_one(&mut probe)
            .await
            .unwrap();
        if n + answered() >= wanted {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} neither waited nor answered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Contract 2 whatever the server's isolation level: a claim sent while a reassignment is in
/// flight (its transaction open) waits for it and is then fenced. Under READ COMMITTED a
/// fence that read the assignment from its snapshot accepted such a claim under the old
/// token, and the old owner started an instant beside the new owner. Both claim shapes: a
/// lone claim, and a batch whose other task stays the claimant's (claimed).
async fn a_claim_racing_a_reassignment_is_fenced(kind: Kind) {
    use sqlx::{Connection, Executor};
    let s = TestStore::new(kind).await;
    let store = &s.store;
    let c = "race";
    let (a, b) = (member(c, "a", 1), member(c, "b", 1));
    join(store, &a, 60_000).await;
    join(store, &b, 60_000).await;
    let epoch = store.acquire_leadership(&a).await.unwrap().unwrap().epoch;
    for task in ["t", "u"] {
        assert_eq!(
            assign(store, &a, epoch, task, &a).await,
            LeaderWrite::Written
        );
    }
    let tokens: std::collections::HashMap<String, i64> = store
        .assignments(c)
        .await
        .unwrap()
        .into_iter()
        .map(|x| (x.task, x.token))
        .collect();

    // The reassignment of t to b, held open in its own transaction as a leader's write would be.
    let mut conn = sqlx::AnyConnection::connect(&s.url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    tx.execute(
        "UPDATE rota_assignments SET node_id = 'b', token = token + 1 \
         WHERE cluster = 'race' AND task = 't'",
    )
    .await
    .unwrap();

    // A lone claim of t, and a batch of t and u (each claim shape has its own statement).
    let single = {
        let (store, a, token) = (store.clone(), a.clone(), tokens["t"]);
        tokio::spawn(async move { store.claim(&claim(&a, "t", 1_000, token)).await })
    };
    let batch = {
        let (store, a) = (store.clone(), a.clone());
        let claims = [
            claim(&a, "t", 2_000, tokens["t"]),
            claim(&a, "u", 2_000, tokens["u"]),
        ];
        tokio::spawn(async move { store.claim_batch(&claims).await })
    };
    // Until both claims wait on the reassignment's row lock (or have already answered).
    until_waiting(kind, &s.url, "%INTO rota_fires%", 2, "the claims", || {
        i64::from(single.is_finished()) + i64::from(batch.is_finished())
    })
    .await;
    tx.commit().await.unwrap();
    assert_eq!(
        single.await.unwrap().unwrap(),
        ClaimOutcome::Fenced,
        "a claim under the old token was accepted across a reassignment"
    );
    assert_eq!(
        batch.await.unwrap().unwrap(),
        vec![ClaimOutcome::Fenced, ClaimOutcome::Claimed],
        "in a batch, the moved task's claim is refused and the other task's accepted"
    );
    assert!(
        store.history(c, Some("t"), 10).await.unwrap().is_empty(),
        "nothing may be recorded for the fenced claims"
    );
}

on_stores!(
    [postgres => Postgres, mariadb => MariaDb];
    a_claim_racing_a_reassignment_is_fenced
);

/// Contracts 9 and 11 across a takeover: a finish sent while a successor's recovery of the
/// same record is in flight (its transaction open) waits for it, then ends nothing: the
/// record is the successor's attempt now. A finish that matched the row as it found it
/// before the recovery would record the successor's run as over while it goes on.
async fn a_finish_racing_a_takeover_is_refused(kind: Kind) {
    use sqlx::{Connection, Executor};
    let s = TestStore::new(kind).await;
    let store = &s.store;
    let c = "finrace";
    let a = member(c, "a", 1);
    join(store, &a, 60_000).await;
    let epoch = store.acquire_leadership(&a).await.unwrap().unwrap().epoch;
    assert_eq!(
        assign(store, &a, epoch, "t", &a).await,
        LeaderWrite::Written
    );
    let token = store.assignments(c).await.unwrap()[0].token;
    let begun = Claim {
        begin: true,
        ..claim(&a, "t", 1_000, token)
    };
    assert_eq!(store.claim(&begun).await.unwrap(), ClaimOutcome::Claimed);

    // The successor's recovery, held open in its own transaction: a new token and attempt.
    let mut conn = sqlx::AnyConnection::connect(&s.url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    tx.execute(
        "UPDATE rota_fires SET token = token + 1, attempt = attempt + 1 \
         WHERE cluster = 'finrace' AND task = 't' AND instant = 1000",
    )
    .await
    .unwrap();

    let finisher = {
        let store = store.clone();
        tokio::spawn(async move {
            let end = rota::store::Finish {
                task: "t".into(),
                instant_ms: 1_000,
                token,
                attempt: 1,
                outcome: Outcome::Ok,
                message: None,
            };
            store.finish_batch("finrace", &[end]).await
        })
    };
    // Until the finish waits on the recovery's row lock (or has already answered).
    until_waiting(
        kind,
        &s.url,
        "UPDATE rota_fires AS f%",
        1,
        "the finish",
        || i64::from(finisher.is_finished()),
    )
    .await;
    tx.commit().await.unwrap();
    finisher.await.unwrap().unwrap();
    let record = store.history(c, Some("t"), 10).await.unwrap();
    assert_eq!(record.len(), 1);
    assert_eq!(
        record[0].outcome,
        Outcome::Running,
        "a finish of the superseded attempt ended its successor's: {record:?}"
    );
}

on_stores!(
    [postgres => Postgres, mariadb => MariaDb];
    a_finish_racing_a_takeover_is_refused
);

/// A PostgreSQL statement that waits holds a snapshot, and no row deleted or updated after
/// it began can be cleaned up until it ends, in rota's tables and the user's. A watch on a
/// held session lock waits for as long as the holder lives: it must do so in short waits.
/// (Waits of 5 s kept every dead version of a busy `rota_fires` that long, and finishing a
/// batch of fires went from milliseconds to over 100 ms.)
async fn a_session_watch_holds_no_snapshot_for_long(kind: Kind) {
    let s = TestStore::new(kind).await;
    let hold = s
        .store
        .hold_session()
        .await
        .unwrap()
        .expect("a session lock");
    let watch = tokio::spawn(s.store.watch_session(hold.key).expect("a watch"));
    let mut probe = {
        use sqlx::Connection;
        sqlx::AnyConnection::connect(&s.url).await.unwrap()
    };
    let oldest = "SELECT CAST(COALESCE(MAX(EXTRACT(EPOCH FROM clock_timestamp() - query_start)) \
                  * 1000, 0) AS BIGINT) FROM pg_stat_activity WHERE datname = current_database() \
                  AND backend_xmin IS NOT NULL AND state = 'active' AND pid <> pg_backend_pid()";
    let waiting = "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
                   AND wait_event_type = 'Lock' AND wait_event = 'advisory'";
    // Until the watcher waits on the lock.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while sqlx::query_scalar::<_, i64>(waiting)
        .fetch_one(&mut probe)
        .await
        .unwrap()
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the watcher never waited on the lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Over 6 s of waiting, no statement of the database has held its snapshot for 2.5 s.
    let watched = std::time::Instant::now();
    let mut longest = 0;
    while watched.elapsed() < std::time::Duration::from_secs(6) {
        let age: i64 = sqlx::query_scalar(oldest)
            .fetch_one(&mut probe)
            .await
            .unwrap();
        longest = longest.max(age);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        longest < 2_500,
        "a statement held its snapshot for {longest} ms while the watch waited"
    );
    assert!(!watch.is_finished(), "a held lock is not reported");
    hold.sever();
    tokio::time::timeout(std::time::Duration::from_secs(20), watch)
        .await
        .expect("the watcher sees the lock let go")
        .unwrap();
}

on_stores!(
    [postgres => Postgres];
    a_session_watch_holds_no_snapshot_for_long
);
