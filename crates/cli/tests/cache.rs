//! The cluster cache on every store: nodes that each hold their own store connection agree
//! through it (compare-and-set counters end exact, expiry by store time, invalidation of
//! near copies), and a task's checkpoint survives kill -9 of its owner.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rota::{cache::Cache, store::CacheOutcome, Node, NodeHandle};

/// `n` nodes in this process, each with its own connection to the store (as separate
/// processes would have).
async fn nodes(s: &TestStore, cluster: &str, n: usize) -> Vec<NodeHandle> {
    let mut out = Vec::new();
    for i in 1..=n {
        let store = rota::store::open(&s.url).await.expect("open the store");
        let node = Node::builder(format!("node-{i}"), cluster, &s.url)
            .store(store)
            .start()
            .await
            .expect("start a node");
        out.push(node);
    }
    out
}

async fn shutdown(nodes: Vec<NodeHandle>) {
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

/// Adds one to the counter under `key`, retrying on conflicts; the attempts it took.
async fn increment(cache: &Cache, key: &str) -> u32 {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let current = cache.get(key).await.unwrap();
        let (value, version) = match &current {
            Some(e) => (
                std::str::from_utf8(&e.value)
                    .unwrap()
                    .parse::<u64>()
                    .unwrap(),
                Some(e.version),
            ),
            None => (0, None),
        };
        let next = (value + 1).to_string();
        match cache
            .compare_and_set(key, version, next, None)
            .await
            .unwrap()
        {
            CacheOutcome::Done { .. } => return attempts,
            CacheOutcome::Conflict { .. } => continue,
        }
    }
}

async fn three_nodes_counting_with_compare_and_set_end_exact(kind: Kind) {
    const N: u64 = 40;
    let s = TestStore::new(kind).await;
    let nodes = nodes(&s, "count", 3).await;
    let mut workers = Vec::new();
    for node in &nodes {
        let cache = node.cache("counters").await.unwrap();
        workers.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for _ in 0..N {
                conflicts += increment(&cache, "hits").await - 1;
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for w in workers {
        conflicts += w.await.unwrap();
    }
    let cache = nodes[0].cache("counters").await.unwrap();
    let total = cache.get("hits").await.unwrap().expect("the counter");
    assert_eq!(
        std::str::from_utf8(&total.value).unwrap(),
        (3 * N).to_string(),
        "{conflicts} conflicts retried"
    );
    assert_eq!(total.version, 3 * N as i64, "one version per increment");
    eprintln!("{kind:?}: 3 x {N} increments, {conflicts} conflicts retried");
    shutdown(nodes).await;
}

async fn entries_expire_by_store_time_and_copies_are_invalidated(kind: Kind) {
    let s = TestStore::new(kind).await;
    let nodes = nodes(&s, "near", 2).await;
    let a = nodes[0].cache("config").await.unwrap();
    let b = nodes[1].cache("config").await.unwrap();

    // Expiry: seen by every node until the TTL passes, then by none.
    b.put_with_ttl("session", "token-1", Duration::from_secs(3))
        .await
        .unwrap();
    assert!(a.get("session").await.unwrap().is_some());
    let deadline = Instant::now() + LONG;
    while a.get("session").await.unwrap().is_some() || b.get("session").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the entry never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(a.keys("", 100).await.unwrap().is_empty());

    // Where the store pushes, node a's copies are dropped by the push, not by age (they
    // would live 30 s: longer than the wait below).
    if matches!(kind, Kind::Postgres | Kind::ZooKeeper) {
        eventually("the store's push reaches node a", LONG, None, || async {
            a.is_pushed().then_some(())
        })
        .await;
    } else {
        assert!(!a.is_pushed());
    }
    // Invalidation: node a serves repeated reads from its copy, node b writes, and a sees
    // the new value without being told by anyone but the store.
    b.put("mode", "blue").await.unwrap();
    assert_eq!(a.get_cached("mode").await.unwrap().unwrap().value, b"blue");
    let near = nodes[0].cache("config").await.unwrap();
    for _ in 0..5 {
        assert_eq!(
            near.get_cached("mode").await.unwrap().unwrap().value,
            b"blue"
        );
    }
    let written = Instant::now();
    b.put("mode", "green").await.unwrap();
    let deadline = Instant::now() + LONG;
    loop {
        let seen = a.get_cached("mode").await.unwrap().unwrap();
        if seen.value == b"green" {
            break;
        }
        assert!(Instant::now() < deadline, "node a kept its stale copy");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "{kind:?}: node a saw node b's write after {} ms",
        written.elapsed().as_millis()
    );
    // Read-your-writes: a node's own write is never hidden by its copy.
    a.put("mode", "red").await.unwrap();
    assert_eq!(a.get_cached("mode").await.unwrap().unwrap().value, b"red");
    assert!(a.delete("mode").await.unwrap());
    assert_eq!(a.get_cached("mode").await.unwrap(), None);
    shutdown(nodes).await;
}

/// A command task counts its fires in its state through `ROTA_STATE_FILE`; its owner is
/// killed; the survivor continues from the last saved count, never from zero, and the old
/// owner's token can no longer save anything.
async fn a_checkpoint_survives_kill_9_of_its_owner(kind: Kind) {
    let _slot = scenario_slot().await;
    let s = TestStore::new(kind).await;
    let mut cluster = s.cluster("checkpoint");
    std::fs::create_dir_all(cluster.dir()).unwrap();
    let record = cluster.dir().join("seen.log");
    let task = format!(
        "[[task]]\nname = \"count\"\nevery = \"1s\"\nstate = true\n\
         command = [\"sh\", \"-c\", \"n=$(cat \\\"$ROTA_STATE_FILE\\\"); n=${{n:-0}}; \
         echo \\\"$ROTA_NODE $ROTA_FENCING_TOKEN $n\\\" >> {}; echo $((n + 1)) > \\\"$ROTA_STATE_FILE\\\"\"]\n",
        record.display()
    );
    cluster.spawn("node-1", &task).unwrap();
    wait_alive(&s.store, &cluster, "node-1").await;
    cluster.spawn("node-2", &task).unwrap();
    wait_alive(&s.store, &cluster, "node-2").await;
    let state = |s: &TestStore| {
        let store = s.store.clone();
        async move {
            let e = store
                .cache_get("checkpoint", rota::store::TASK_STATE_CACHE, "count")
                .await
                .ok()??;
            std::str::from_utf8(&e.value)
                .ok()?
                .trim()
                .parse::<u64>()
                .ok()
        }
    };
    let before = eventually(
        "the task saved a few counts",
        LONG,
        Some(&cluster),
        || async { state(&s).await.filter(|n| *n >= 3) },
    )
    .await;
    let (victim, old_token) = owner(&s.store, "checkpoint", "count").await.unwrap();
    cluster.kill(&victim);
    let after = eventually(
        "the survivor goes on counting",
        LONG,
        Some(&cluster),
        || async { state(&s).await.filter(|n| *n >= before + 3) },
    )
    .await;
    let lines: Vec<(String, i64, u64)> = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .map(|l| {
            let mut p = l.split(' ');
            (
                p.next().unwrap().to_string(),
                p.next().unwrap().parse().unwrap(),
                p.next().unwrap().parse().unwrap(),
            )
        })
        .collect();
    // Every fire read the count the previous fire saved: 0, 1, 2, ... with no gap and no
    // restart, across the kill (a fire killed before it saved is read again: a repeat).
    for pair in lines.windows(2) {
        let (a, b) = (pair[0].2, pair[1].2);
        assert!(
            b == a + 1 || b == a,
            "the count went from {a} to {b}: {lines:?}"
        );
    }
    assert_eq!(lines[0].2, 0);
    let survivor: Vec<&(String, i64, u64)> = lines.iter().filter(|l| l.0 != victim).collect();
    assert!(
        survivor.first().is_some_and(|l| l.2 >= before),
        "the survivor started from {:?}, the count saved before the kill was {before}",
        survivor.first()
    );
    assert!(after >= before + 3);
    // The killed owner's token is stale: a save under it is refused.
    assert!(!s
        .store
        .save_task_state("checkpoint", "count", old_token, b"0")
        .await
        .unwrap());
    assert!(state(&s).await.unwrap() >= after);
}

on_every_store!(
    three_nodes_counting_with_compare_and_set_end_exact,
    entries_expire_by_store_time_and_copies_are_invalidated,
    a_checkpoint_survives_kill_9_of_its_owner,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cache_names_keys_and_values_are_refused_with_the_field_named() {
    let s = TestStore::sqlite().await;
    let nodes = nodes(&s, "bad", 1).await;
    let err = nodes[0].cache("no spaces").await.unwrap_err().to_string();
    assert!(err.contains("cache") && err.contains("no spaces"), "{err}");
    let cache = nodes[0].cache("ok").await.unwrap();
    let err = cache.put("", "v").await.unwrap_err().to_string();
    assert!(err.starts_with("key:"), "{err}");
    let err = cache.put("k\n", "v").await.unwrap_err().to_string();
    assert!(err.starts_with("key:"), "{err}");
    let err = cache
        .put("k", vec![0u8; rota::cache::MAX_VALUE + 1])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("value:"), "{err}");
    let err = cache
        .put_with_ttl("k", "v", Duration::ZERO)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("ttl:"), "{err}");
    // Nothing refused was written.
    assert!(cache.keys("", 10).await.unwrap().is_empty());
    shutdown(nodes).await;
}
