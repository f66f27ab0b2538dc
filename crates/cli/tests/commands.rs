//! Cooperative control (contract 8) with real processes on every store: commands missed while
//! down are applied before any task starts, act-as moves pinned services, a rolling restart
//! takes one node at a time; and the admin API's tokens and input checks.

mod common;

use std::{sync::Arc, time::Duration};

use common::{
    assert_nothing_silently_missed, eventually, scenario_slot, spawn_with_admin, tasks_toml,
    wait_alive, wait_fired_after, Kind, TestStore, ADMIN_TOKEN, LONG, READ_TOKEN,
};
use rota::store::{AckFilter, AckState, Store};
use rota_testkit::{self as harness, ProcessCluster};
use serde_json::{json, Value};

/// A client of one node's admin API.
struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    fn new(base: String, token: Option<&str>) -> Client {
        Client {
            base,
            token: token.map(str::to_string),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    async fn send(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "GET" => self.http.get(&url),
            "POST" => self.http.post(&url),
            "DELETE" => self.http.delete(&url),
            other => panic!("{other}"),
        };
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.send("POST", path, Some(&body.to_string())).await;
        assert_eq!(status, 202, "POST {path}: {v}");
        v
    }
}

/// The acknowledgement of `node` for command `seq` once it is final.
async fn final_ack(
    store: &Arc<dyn Store>,
    cluster: &ProcessCluster,
    seq: i64,
    node: &str,
    timeout: Duration,
) -> rota::store::Ack {
    let name = cluster.cluster().to_string();
    eventually(
        &format!("{node} acknowledges #{seq}"),
        timeout,
        Some(cluster),
        || async {
            let acks = store
                .command_acks(&name, AckFilter::Commands(&[seq]))
                .await
                .ok()?;
            acks.into_iter()
                .find(|a| a.node == node && a.state.is_final())
        },
    )
    .await
}

async fn owner_of(store: &Arc<dyn Store>, cluster: &str, task: &str) -> Option<String> {
    common::owner(store, cluster, task).await.map(|(n, _)| n)
}

/// A command issued while its node is down is applied when the node returns, before that
/// node starts any task; a node-scoped pause holds there only, and resume lifts it.
async fn a_command_missed_while_down_is_applied_before_any_task_starts(kind: Kind) {
    let s = TestStore::new(kind).await;
    let mut cluster = s.cluster("missed");
    let record = cluster.dir().join("fires.log");
    std::fs::create_dir_all(cluster.dir()).unwrap();
    // Two tasks on every node (`task@node`), so node-2 runs both as soon as it can.
    let tasks = format!(
        "{}resolver = \"all\"\n\n{}resolver = \"all\"\n",
        harness::log_task_toml("tick", "1s", &record),
        harness::log_task_toml("other", "1s", &record)
    );
    let port = harness::servers::free_port();
    spawn_with_admin(&mut cluster, "node-1", &tasks, port);
    wait_alive(&s.store, &cluster, "node-1").await;
    cluster.spawn("node-2", &tasks).unwrap();
    wait_alive(&s.store, &cluster, "node-2").await;
    let fired_on = |task: &'static str, since: i64| {
        let record = record.clone();
        async move {
            harness::read_fire_lines(&record)
                .into_iter()
                .filter(|l| l.task == task && l.instant_ms > since)
                .count()
        }
    };
    eventually("node-2 runs tick", LONG, Some(&cluster), || async {
        (fired_on("tick@node-2", 0).await > 0).then_some(())
    })
    .await;

    cluster.kill("node-2");
    eventually("node-2 expired", LONG, Some(&cluster), || async {
        let v = s.store.view("missed").await.ok()?;
        (!v.nodes.iter().any(|n| n.node == "node-2" && n.alive)).then_some(())
    })
    .await;
    let api = Client::new(format!("http://127.0.0.1:{port}"), Some(ADMIN_TOKEN));
    let issued = api
        .post("/api/v1/tasks/tick/pause", json!({"nodes": ["node-2"]}))
        .await;
    let seq = issued["seq"].as_i64().unwrap();
    assert_eq!(issued["targets"], json!(["node-2"]));
    assert!(
        issued["warnings"][0].as_str().unwrap().contains("not live"),
        "{issued}"
    );
    let paused_at = s.store.now_ms().await.unwrap();

    cluster.spawn("node-2", &tasks).unwrap();
    let ack = final_ack(&s.store, &cluster, seq, "node-2", LONG).await;
    assert_eq!(ack.state, AckState::Applied, "{ack:?}");
    // node-2 runs `other` again, and ran nothing before acknowledging.
    let firsts = eventually("node-2 runs other again", LONG, Some(&cluster), || async {
        let h = s
            .store
            .history("missed", Some("other@node-2"), 50)
            .await
            .ok()?;
        let started: Vec<i64> = h
            .iter()
            .filter(|f| f.instant_ms > paused_at)
            .filter_map(|f| f.started_at_ms)
            .collect();
        (started.len() >= 3).then_some(started)
    })
    .await;
    let first = *firsts.iter().min().unwrap();
    assert!(
        first >= ack.at_ms,
        "node-2 started a task at {first}, before applying the missed command at {}",
        ack.at_ms
    );
    assert_eq!(
        fired_on("tick@node-2", paused_at).await,
        0,
        "tick stays paused on node-2"
    );
    assert!(
        fired_on("tick@node-1", paused_at).await > 0,
        "tick still runs on node-1"
    );

    // The pause survives a restart of node-2; resume lifts it.
    cluster.kill("node-2");
    cluster.spawn("node-2", &tasks).unwrap();
    wait_alive(&s.store, &cluster, "node-2").await;
    let resumed = api
        .post("/api/v1/tasks/tick/resume", json!({"nodes": ["node-2"]}))
        .await;
    let resumed_at = s.store.now_ms().await.unwrap();
    assert_eq!(
        fired_on("tick@node-2", paused_at).await,
        0,
        "still paused after a restart, until resumed"
    );
    final_ack(
        &s.store,
        &cluster,
        resumed["seq"].as_i64().unwrap(),
        "node-2",
        LONG,
    )
    .await;
    eventually(
        "tick runs on node-2 again",
        LONG,
        Some(&cluster),
        || async { (fired_on("tick@node-2", resumed_at).await > 0).then_some(()) },
    )
    .await;
    common::assert_no_duplicates(&record);
}

/// A definition changed while its task runs: the run goes on to its end under the old
/// definition, and the new one starts only after it (no overlap, no kill).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_changed_while_it_runs_finishes_under_its_old_definition() {
    let s = TestStore::sqlite().await;
    let mut cluster = s.cluster("redefine");
    std::fs::create_dir_all(cluster.dir()).unwrap();
    let record = cluster.dir().join("runs.log");
    let port = harness::servers::free_port();
    let text = format!(
        "{}\n[admin]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{ADMIN_TOKEN}\"\ndefinitions = true\n",
        cluster.config_text("node-1", "")
    );
    let path = cluster.config_path("node-1");
    std::fs::write(&path, text).unwrap();
    cluster.spawn_with_config("node-1", &path).unwrap();
    wait_alive(&s.store, &cluster, "node-1").await;
    // Every 2 s, a run of 3 s: START and END lines with the definition's version.
    let doc = |version: &str| {
        format!(
            "[[task]]\nname = \"long\"\nevery = \"2s\"\ncommand = [\"sh\", \"-c\", \"echo START {version} $(date +%s%3N) >> {0}; sleep 3; echo END {version} $(date +%s%3N) >> {0}\"]\n",
            record.display()
        )
    };
    let api = Client::new(format!("http://127.0.0.1:{port}"), Some(ADMIN_TOKEN));
    let apply = |version: &str| json!({"document": doc(version)});
    api.post("/api/v1/definitions", apply("v1")).await;
    let lines = || {
        std::fs::read_to_string(&record)
            .unwrap_or_default()
            .lines()
            .map(|l| l.split(' ').map(str::to_string).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    };
    eventually("a v1 run starts", LONG, Some(&cluster), || async {
        lines()
            .iter()
            .any(|l| l[0] == "START" && l[1] == "v1")
            .then_some(())
    })
    .await;
    api.post("/api/v1/definitions", apply("v2")).await;
    let all = eventually("a v2 run ends", LONG, Some(&cluster), || async {
        let all = lines();
        all.iter()
            .any(|l| l[0] == "END" && l[1] == "v2")
            .then_some(all)
    })
    .await;
    // Every v1 run that started ended (none was killed), and no run overlapped another.
    let starts_v1 = all
        .iter()
        .filter(|l| l[0] == "START" && l[1] == "v1")
        .count();
    let ends_v1 = all.iter().filter(|l| l[0] == "END" && l[1] == "v1").count();
    assert_eq!(starts_v1, ends_v1, "a v1 run was cut short: {all:?}");
    let mut open = 0;
    for l in &all {
        open += if l[0] == "START" { 1 } else { -1 };
        assert!((0..=1).contains(&open), "two runs at once: {all:?}");
    }
    let first_v2 = all.iter().position(|l| l[1] == "v2").unwrap();
    assert!(
        all[first_v2..].iter().all(|l| l[1] == "v2"),
        "after the first v2 run, only v2 runs: {all:?}"
    );
}

/// Contract 3 across a pause: the instants that pass while a task is paused are not made
/// up, but each one has a record saying why; none is missed silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instants_passed_while_paused_are_recorded_not_made_up() {
    let _slot = scenario_slot().await;
    let s = TestStore::sqlite().await;
    let mut cluster = s.cluster("paused");
    let record = cluster.dir().join("fires.log");
    std::fs::create_dir_all(cluster.dir()).unwrap();
    let port = harness::servers::free_port();
    spawn_with_admin(&mut cluster, "node-1", &tasks_toml(&record), port);
    let spawned = s.store.now_ms().await.unwrap();
    let fired = wait_fired_after(&s.store, &cluster, spawned, None).await;
    // Instants before a task's first placement belong to nobody: count from the moment
    // every task had fired.
    let t0 = common::TASKS
        .iter()
        .filter_map(|t| {
            fired
                .iter()
                .filter(|f| f.task == *t)
                .map(|f| f.instant_ms)
                .min()
        })
        .max()
        .unwrap_or(spawned)
        - 1;
    let api = Client::new(format!("http://127.0.0.1:{port}"), Some(ADMIN_TOKEN));
    let paused = api.post("/api/v1/tasks/alpha/pause", json!({})).await;
    final_ack(
        &s.store,
        &cluster,
        paused["seq"].as_i64().unwrap(),
        "node-1",
        LONG,
    )
    .await;
    let paused_at = s.store.now_ms().await.unwrap();
    eventually(
        "three instants pass while paused",
        LONG,
        Some(&cluster),
        || async { (s.store.now_ms().await.ok()? > paused_at + 3_000).then_some(()) },
    )
    .await;
    let resumed = api.post("/api/v1/tasks/alpha/resume", json!({})).await;
    final_ack(
        &s.store,
        &cluster,
        resumed["seq"].as_i64().unwrap(),
        "node-1",
        LONG,
    )
    .await;
    let back = s.store.now_ms().await.unwrap();
    wait_fired_after(&s.store, &cluster, back, None).await;
    assert_nothing_silently_missed(&s.store, "paused", t0, back).await;
    let history = s.store.history("paused", Some("alpha"), 100).await.unwrap();
    assert!(
        history
            .iter()
            .any(|f| f.message.as_deref().is_some_and(|m| m.contains("paused"))),
        "the paused instants say why: {history:?}"
    );
    common::assert_no_duplicates(&record);
}

/// act-as puts a node in another's place in a service's failover list: the absent node's
/// pinned service moves to the acting node, and back to its node on stop-acting.
async fn act_as_moves_an_absent_nodes_pinned_service_and_back(kind: Kind) {
    let s = TestStore::new(kind).await;
    let mut cluster = s.cluster("actas");
    let beats = cluster.dir().join("beats.log");
    std::fs::create_dir_all(cluster.dir()).unwrap();
    // Pinned to node-1; its only backup, node-3, never starts.
    let service = format!(
        "[[service]]\nname = \"listener\"\nresolver = \"failover\"\nprimary = \"node-1\"\nbackups = [\"node-3\"]\n\
         grace = \"2s\"\ncommand = [\"sh\", \"-c\", \"while true; do echo $ROTA_NODE >> {}; sleep 0.1; done\"]\n",
        beats.display()
    );
    let port = harness::servers::free_port();
    spawn_with_admin(&mut cluster, "node-2", &service, port);
    wait_alive(&s.store, &cluster, "node-2").await;
    cluster.spawn("node-1", &service).unwrap();
    let owner = |want: Option<&'static str>| {
        let store = s.store.clone();
        async move {
            let now = owner_of(&store, "actas", "listener").await;
            (now.as_deref() == want).then_some(())
        }
    };
    eventually("node-1 runs the listener", LONG, Some(&cluster), || {
        owner(Some("node-1"))
    })
    .await;

    cluster.kill("node-1");
    eventually("the listener is unplaced", LONG, Some(&cluster), || {
        owner(None)
    })
    .await;
    let api = Client::new(format!("http://127.0.0.1:{port}"), Some(ADMIN_TOKEN));
    let acting = api
        .post("/api/v1/nodes/node-2/act-as", json!({"node": "node-1"}))
        .await;
    eventually(
        "node-2 runs the listener for node-1",
        LONG,
        Some(&cluster),
        || owner(Some("node-2")),
    )
    .await;
    let ack = final_ack(
        &s.store,
        &cluster,
        acting["seq"].as_i64().unwrap(),
        "node-2",
        LONG,
    )
    .await;
    assert_eq!(ack.state, AckState::Applied);
    let lines_of = |node: &str| {
        std::fs::read_to_string(&beats)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.trim() == node)
            .count()
    };
    eventually(
        "the listener process runs on node-2",
        LONG,
        Some(&cluster),
        || async { (lines_of("node-2") > 0).then_some(()) },
    )
    .await;
    let (status, node) = api.send("GET", "/api/v1/nodes/node-2", None).await;
    assert_eq!(
        (status, node["acting_as"].as_str()),
        (200, Some("node-1")),
        "{node}"
    );

    // node-1 comes back while node-2 acts for it: node-2 keeps its place until stop-acting.
    cluster.spawn("node-1", &service).unwrap();
    wait_alive(&s.store, &cluster, "node-1").await;
    assert_eq!(
        owner_of(&s.store, "actas", "listener").await.as_deref(),
        Some("node-2")
    );
    api.post("/api/v1/nodes/node-2/stop-acting", json!({}))
        .await;
    eventually(
        "the listener is back on node-1",
        LONG,
        Some(&cluster),
        || owner(Some("node-1")),
    )
    .await;
}

/// A rolling restart of three nodes running a 1-second task: each node is restarted exactly
/// once (by re-executing itself), the next only once the previous is back, and the task
/// keeps firing through it.
async fn a_rolling_restart_takes_one_node_at_a_time(kind: Kind) {
    let s = TestStore::new(kind).await;
    let mut cluster = s.cluster("rolling");
    let record = cluster.dir().join("fires.log");
    std::fs::create_dir_all(cluster.dir()).unwrap();
    let tasks = harness::log_task_toml("beat", "1s", &record);
    let nodes = ["node-1", "node-2", "node-3"];
    let mut ports = Vec::new();
    let mut pids = Vec::new();
    for node in nodes {
        let port = harness::servers::free_port();
        spawn_with_admin(&mut cluster, node, &tasks, port);
        wait_alive(&s.store, &cluster, node).await;
        ports.push(port);
        pids.push(cluster.pid(node).unwrap());
    }
    let before: Vec<i64> = {
        let v = s.store.view("rolling").await.unwrap();
        nodes
            .iter()
            .map(|n| v.nodes.iter().find(|r| r.node == *n).unwrap().incarnation)
            .collect()
    };
    eventually("beat fires", LONG, Some(&cluster), || async {
        (!harness::read_fire_lines(&record).is_empty()).then_some(())
    })
    .await;
    let started = s.store.now_ms().await.unwrap();
    let api = Client::new(format!("http://127.0.0.1:{}", ports[1]), Some(ADMIN_TOKEN));
    let issued = api
        .post("/api/v1/rolling-restart", json!({"timeout_secs": 60}))
        .await;
    let seq = issued["seq"].as_i64().unwrap();
    let targets: Vec<String> = serde_json::from_value(issued["targets"].clone()).unwrap();
    assert_eq!(targets.len(), 3, "{issued}");
    // Watch the cluster while it restarts: never two nodes down (or leaving) at once. Each
    // node's incarnation from before counts as seen: the first node may already be leaving
    // when the first look below is taken.
    let mut incarnations: std::collections::BTreeMap<String, std::collections::BTreeSet<i64>> =
        nodes
            .iter()
            .zip(&before)
            .map(|(n, i)| (n.to_string(), [*i].into()))
            .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let view = s.store.view("rolling").await.unwrap();
        let up: Vec<&rota::store::NodeRecord> = view
            .nodes
            .iter()
            .filter(|n| n.alive && !n.leaving)
            .collect();
        for n in &up {
            incarnations
                .entry(n.node.clone())
                .or_default()
                .insert(n.incarnation);
        }
        assert!(
            up.len() >= 2,
            "two nodes were down at once: {:?}",
            view.nodes
        );
        let acks = s
            .store
            .command_acks("rolling", AckFilter::Commands(&[seq]))
            .await
            .unwrap();
        if acks.iter().filter(|a| a.state.is_final()).count() == 3 {
            assert!(
                acks.iter().all(|a| a.state == AckState::Applied),
                "{acks:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rolling restart unfinished: {acks:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_alive(&s.store, &cluster, "node-3").await;
    for node in nodes {
        assert_eq!(
            incarnations[node].len(),
            2,
            "{node} restarted exactly once: {incarnations:?}"
        );
    }
    let finished = s.store.now_ms().await.unwrap();
    // Look at the task from before the restart began to two instants after it ended.
    let until = finished + 2_000;
    eventually(
        "beat fires after the rolling restart",
        LONG,
        Some(&cluster),
        || async {
            let lines = harness::read_fire_lines(&record);
            lines.iter().any(|l| l.instant_ms > until).then_some(())
        },
    )
    .await;

    // Each node: a new incarnation, the same process (re-executed), restarted once.
    let view = s.store.view("rolling").await.unwrap();
    for (i, node) in nodes.iter().enumerate() {
        let now = view.nodes.iter().find(|r| r.node == *node).unwrap();
        assert!(
            now.alive && now.incarnation != before[i],
            "{node} came back as a new incarnation"
        );
        assert_eq!(
            cluster.pid(node),
            Some(pids[i]),
            "{node} re-executed itself"
        );
        let log = cluster.log(node);
        assert_eq!(
            log.matches("\"message\":\"joined\"").count(),
            2,
            "{node} joined twice:\n{log}"
        );
    }
    // The leader issued one restart per node, in order.
    let restarts: Vec<(String, i64)> = s
        .store
        .commands("rolling", seq, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.parse().unwrap())
        .filter(|c| {
            c.body
                .issued_by
                .contains(&format!("rolling restart #{seq}"))
        })
        .map(|c| (c.body.targets[0].clone(), c.issued_at_ms))
        .collect();
    assert_eq!(
        restarts.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        targets,
        "one restart per node, in order"
    );
    // The task kept firing: every instant started once, with no long gap.
    let h = s
        .store
        .history("rolling", Some("beat"), 1000)
        .await
        .unwrap();
    let mut starts: Vec<i64> = h
        .iter()
        .filter(|f| f.instant_ms > started - 2_000 && f.instant_ms <= until)
        .filter_map(|f| f.started_at_ms)
        .collect();
    starts.sort();
    let gap = starts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    assert!(
        starts.len() >= 4,
        "beat fired during the rolling restart: {starts:?}"
    );
    assert!(
        gap < 3_500,
        "beat stalled {gap} ms during the rolling restart"
    );
    common::assert_no_duplicates(&record);
}

/// The API on a running node: tokens (missing, wrong, read-only), malformed requests, and
/// TLS with the test certificate.
async fn the_api_refuses_bad_tokens_and_malformed_requests(kind: Kind) {
    let s = TestStore::new(kind).await;
    let node = rota::Node::builder("api-1", "api", &s.url)
        .store(s.store.clone())
        .task(rota::TaskSpec::new(
            "nightly",
            rota::Schedule::every(Duration::from_secs(3600)).unwrap(),
            |_ctx: rota::FireContext| async { Ok(()) },
        ))
        .start()
        .await
        .unwrap();
    let tls = (
        format!(
            "{}/tests/fixtures/admin-test.crt",
            env!("CARGO_MANIFEST_DIR")
        ),
        format!(
            "{}/tests/fixtures/admin-test.key",
            env!("CARGO_MANIFEST_DIR")
        ),
    );
    let server = rota_admin::serve(
        rota_admin::AdminConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_token: Some(rota_admin::Secret::new(ADMIN_TOKEN)),
            read_token: Some(rota_admin::Secret::new(READ_TOKEN)),
            tls: Some((tls.0.clone().into(), tls.1.clone().into())),
        },
        rota_admin::Api::new(
            s.store.clone(),
            "api",
            "api-1",
            node.watch_status(),
            node.metrics(),
        ),
    )
    .await
    .unwrap();
    let base = format!("https://localhost:{}", server.local_addr().port());
    let ca = format!(
        "{}/tests/fixtures/admin-test-ca.crt",
        env!("CARGO_MANIFEST_DIR")
    );
    let cert = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let client = |token: Option<&str>| Client {
        base: base.clone(),
        token: token.map(str::to_string),
        http: reqwest::Client::builder()
            .add_root_certificate(cert.clone())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
    };
    let (anonymous, wrong, reader, admin) = (
        client(None),
        client(Some("admin-token-0123456789abcdeX")),
        client(Some(READ_TOKEN)),
        client(Some(ADMIN_TOKEN)),
    );
    assert_eq!(anonymous.send("GET", "/healthz", None).await.0, 200);
    eventually("ready", LONG, None, || async {
        (anonymous.send("GET", "/readyz", None).await.0 == 200).then_some(())
    })
    .await;
    let (status, body) = anonymous.send("GET", "/api/v1/nodes", None).await;
    assert_eq!(status, 401);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer"),
        "{body}"
    );
    assert_eq!(wrong.send("GET", "/api/v1/nodes", None).await.0, 401);
    assert_eq!(
        wrong
            .send("POST", "/api/v1/nodes/api-1/drain", None)
            .await
            .0,
        401
    );
    let (status, nodes) = reader.send("GET", "/api/v1/nodes", None).await;
    assert_eq!(
        (status, nodes[0]["id"].as_str()),
        (200, Some("api-1")),
        "{nodes}"
    );
    let (status, body) = reader
        .send("POST", "/api/v1/tasks/nightly/pause", None)
        .await;
    assert_eq!(status, 403);
    assert!(
        body["error"].as_str().unwrap().contains("read-only"),
        "{body}"
    );
    let (status, doc) = reader.send("GET", "/api/v1/openapi.json", None).await;
    assert_eq!((status, doc["openapi"].as_str()), (200, Some("3.0.3")));

    // Malformed requests: each answer names the problem.
    let cases: [(&str, &str, Option<&str>, u16, &str); 10] = [
        (
            "POST",
            "/api/v1/tasks/nightly/pause",
            Some("{\"nodes\": "),
            400,
            "body:",
        ),
        (
            "POST",
            "/api/v1/tasks/nightly/pause",
            Some("{\"node\": [\"a\"]}"),
            400,
            "unknown field `node`",
        ),
        (
            "POST",
            "/api/v1/tasks/nightly/pause",
            Some("{\"nodes\": []}"),
            400,
            "`nodes` is empty",
        ),
        (
            "POST",
            "/api/v1/tasks/nightly/pause",
            Some("{\"nodes\": [\"bad name\"]}"),
            400,
            "bad name",
        ),
        (
            "POST",
            "/api/v1/tasks/nope/pause",
            None,
            404,
            "no live node declares task `nope`",
        ),
        (
            "POST",
            "/api/v1/log-level",
            Some("{\"level\": \"loud\"}"),
            400,
            "level: `loud`",
        ),
        (
            "POST",
            "/api/v1/rolling-restart",
            Some("{\"timeout_secs\": 0}"),
            400,
            "timeout_secs",
        ),
        (
            "POST",
            "/api/v1/nodes/api-1/act-as",
            Some("{\"node\": \"api-1\"}"),
            409,
            "cannot act as itself",
        ),
        ("DELETE", "/api/v1/nodes", None, 405, "not allowed"),
        (
            "GET",
            "/api/v1/tasks/nightly/history?limit=lots",
            None,
            400,
            "limit",
        ),
    ];
    for (method, path, body, want, says) in cases {
        let (status, answer) = admin.send(method, path, body).await;
        let error = answer["error"].as_str().unwrap_or_default();
        assert_eq!(status, want, "{method} {path} {body:?}: {answer}");
        assert!(
            error.contains(says),
            "{method} {path}: `{error}` should say `{says}`"
        );
    }
    assert_eq!(admin.send("GET", "/api/v1/nowhere", None).await.0, 404);

    // A name declared only by a registration that lapsed a moment ago (a node paused, a store
    // clock step, a session moving) is "retry", not "not found": 503 with Retry-After.
    let lapsing = rota::store::Member {
        cluster: "api".into(),
        node: "api-2".into(),
        incarnation: 1,
    };
    let joined = s
        .store
        .join(&rota::store::JoinRequest {
            member: lapsing.clone(),
            timeout_ms: 300,
            host: "elsewhere".into(),
            process: "test:1:1".into(),
            declared: vec![rota::store::Declaration {
                name: "elsewhere-only".into(),
                hash: "h".into(),
                schedule: "every 1h".into(),
            }],
            meta: Default::default(),
            replaces: None,
            session_key: None,
            guard: None,
        })
        .await
        .unwrap();
    assert!(
        matches!(joined, rota::store::JoinOutcome::Joined { .. }),
        "{joined:?}"
    );
    eventually("api-2's registration lapses", LONG, None, || async {
        let view = s.store.view("api").await.ok()?;
        view.nodes
            .iter()
            .any(|n| n.node == "api-2" && !n.alive)
            .then_some(())
    })
    .await;
    for (method, path) in [
        ("POST", "/api/v1/tasks/elsewhere-only/pause"),
        ("GET", "/api/v1/tasks/elsewhere-only"),
    ] {
        let url = format!("{}{path}", admin.base);
        let request = if method == "POST" {
            admin.http.post(&url)
        } else {
            admin.http.get(&url)
        };
        let response = request.bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 503, "{method} {path}");
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("1"),
            "{method} {path}"
        );
        let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("`api-2` declares it") && error.contains("retry"),
            "{method} {path}: {error}"
        );
    }
    let huge = format!("{{\"nodes\": [\"{}\"]}}", "a".repeat(70_000));
    assert_eq!(
        admin
            .send("POST", "/api/v1/tasks/nightly/pause", Some(&huge))
            .await
            .0,
        413
    );
    let (status, log) = admin.send("GET", "/api/v1/commands", None).await;
    assert_eq!(
        (status, log.as_array().map(Vec::len)),
        (200, Some(0)),
        "nothing malformed was accepted: {log}"
    );

    // A good action is accepted, applied, and visible with its per-node state.
    let issued = admin.post("/api/v1/tasks/nightly/pause", json!({})).await;
    let seq = issued["seq"].as_i64().unwrap();
    let applied = eventually("the pause is applied", LONG, None, || async {
        let (_, c) = reader
            .send("GET", &format!("/api/v1/commands/{seq}"), None)
            .await;
        (c["done"] == json!(true)).then_some(c)
    })
    .await;
    assert_eq!(applied["nodes"][0]["state"], "applied", "{applied}");
    let task = eventually("the task shows as paused", LONG, None, || async {
        let (_, t) = reader.send("GET", "/api/v1/tasks/nightly", None).await;
        (t["state"] == "paused").then_some(t)
    })
    .await;
    assert_eq!(task["paused_on"], json!(["*"]), "{task}");
    server.shutdown().await;
    node.shutdown().await.unwrap();
}

/// Named tokens on every store: roles limit what each may do, the command log names the
/// token that asked, the store keeps only hashes, and a revoked token is refused by every
/// node at its very next request.
async fn named_tokens_have_roles_and_a_revoked_one_is_refused_at_once(kind: Kind) {
    let s = TestStore::new(kind).await;
    let node = rota::Node::builder("tok-1", "tok", &s.url)
        .store(s.store.clone())
        .task(rota::TaskSpec::new(
            "nightly",
            rota::Schedule::every(Duration::from_secs(3600)).unwrap(),
            |_ctx: rota::FireContext| async { Ok(()) },
        ))
        .start()
        .await
        .unwrap();
    // Two API servers over one store, as two nodes of a cluster serve it.
    let mut servers = Vec::new();
    for name in ["tok-1", "tok-2"] {
        let server = rota_admin::serve(
            rota_admin::AdminConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                admin_token: Some(rota_admin::Secret::new(ADMIN_TOKEN)),
                read_token: Some(rota_admin::Secret::new(READ_TOKEN)),
                tls: None,
            },
            rota_admin::Api::new(
                s.store.clone(),
                "tok",
                name,
                node.watch_status(),
                node.metrics(),
            ),
        )
        .await
        .unwrap();
        servers.push(server);
    }
    let base = |i: usize| format!("http://127.0.0.1:{}", servers[i].local_addr().port());
    let admin = Client::new(base(0), Some(ADMIN_TOKEN));
    eventually("the task is declared", LONG, None, || async {
        (admin.send("GET", "/api/v1/tasks/nightly", None).await.0 == 200).then_some(())
    })
    .await;

    let create = |name: &str, role: &str| json!({"name": name, "role": role}).to_string();
    let (status, ops) = admin
        .send("POST", "/api/v1/tokens", Some(&create("ops", "operate")))
        .await;
    assert_eq!(status, 201, "{ops}");
    let ops_secret = ops["token"].as_str().unwrap().to_string();
    assert!(
        ops_secret.starts_with("rota_") && ops_secret.len() > 40,
        "{ops}"
    );
    assert_eq!(
        (ops["role"].as_str(), ops["created_by"].as_str()),
        (Some("operate"), Some("admin"))
    );
    let (status, viewer) = admin
        .send("POST", "/api/v1/tokens", Some(&create("viewer", "read")))
        .await;
    assert_eq!(status, 201, "{viewer}");
    let viewer_secret = viewer["token"].as_str().unwrap().to_string();
    for (body, want, says) in [
        (create("ops", "admin"), 409, "a token named `ops` exists"),
        (
            create("root", "superuser"),
            400,
            "role: `superuser` is not a role",
        ),
        (
            create("admin", "read"),
            400,
            "name of a token of the nodes' config",
        ),
        (create("bad name", "read"), 400, "name:"),
    ] {
        let (status, answer) = admin.send("POST", "/api/v1/tokens", Some(&body)).await;
        assert_eq!(status, want, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(says),
            "{body}: `{error}` should say `{says}`"
        );
    }
    let (status, list) = admin.send("GET", "/api/v1/tokens", None).await;
    assert_eq!(status, 200, "{list}");
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ops", "viewer"], "{list}");
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|t| t.get("token").is_none()),
        "a list shows no secret: {list}"
    );

    // The store keeps hashes, never a token itself.
    let keys = s
        .store
        .cache_keys("tok", rota_admin::TOKENS_CACHE, "", 100)
        .await
        .unwrap();
    assert_eq!(keys.len(), 4, "{keys:?}");
    for key in &keys {
        let entry = s
            .store
            .cache_get("tok", rota_admin::TOKENS_CACHE, key)
            .await
            .unwrap()
            .unwrap();
        let stored = format!("{key} {}", String::from_utf8_lossy(&entry.value));
        assert!(
            !stored.contains(&ops_secret) && !stored.contains(&viewer_secret),
            "{stored}"
        );
    }

    // A read token reads, and cannot act or see the tokens.
    let reader = Client::new(base(1), Some(&viewer_secret));
    assert_eq!(reader.send("GET", "/api/v1/nodes", None).await.0, 200);
    let (status, answer) = reader
        .send("POST", "/api/v1/tasks/nightly/pause", None)
        .await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("`viewer` is read-only"),
        "{answer}"
    );
    assert_eq!(reader.send("GET", "/api/v1/tokens", None).await.0, 403);

    // An operate token pauses, on any node, and the log names it; it cannot restart a node,
    // shut one down through the generic route, or make tokens.
    let operator = Client::new(base(1), Some(&ops_secret));
    let issued = operator
        .post("/api/v1/tasks/nightly/pause", json!({}))
        .await;
    assert_eq!(issued["requested_by"], "ops", "{issued}");
    let seq = issued["seq"].as_i64().unwrap();
    let stored = s.store.commands("tok", seq - 1, 1).await.unwrap()[0]
        .parse()
        .unwrap();
    assert_eq!(stored.body.requested_by.as_deref(), Some("ops"));
    for (path, body, says) in [
        (
            "/api/v1/nodes/tok-1/restart",
            None,
            "needs a token of role admin",
        ),
        (
            "/api/v1/commands",
            Some(r#"{"op": "shutdown"}"#),
            "op `shutdown` needs a token of role admin",
        ),
        (
            "/api/v1/tokens",
            Some(r#"{"name": "mine", "role": "admin"}"#),
            "role admin",
        ),
    ] {
        let (status, answer) = operator.send("POST", path, body).await;
        assert_eq!(status, 403, "{path}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(says),
            "{path}: `{error}` should say `{says}`"
        );
    }
    let (_, log) = admin.send("GET", "/api/v1/commands", None).await;
    assert_eq!(
        log.as_array().map(Vec::len),
        Some(1),
        "only the pause was accepted: {log}"
    );

    // Revoked on one node: the other refuses it at its very next request.
    let (status, answer) = admin.send("DELETE", "/api/v1/tokens/ops", None).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = operator.send("GET", "/api/v1/nodes", None).await;
    assert_eq!(status, 401, "a revoked token still reads: {answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("revoked"),
        "{answer}"
    );
    assert_eq!(
        admin.send("DELETE", "/api/v1/tokens/ops", None).await.0,
        404
    );
    let (_, list) = admin.send("GET", "/api/v1/tokens", None).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(
        reader.send("GET", "/api/v1/nodes", None).await.0,
        200,
        "the other token still works"
    );

    for server in servers {
        server.shutdown().await;
    }
    node.shutdown().await.unwrap();
}

/// `rota ctl run` on every store: a run-now fire is started once even when its owner is
/// killed in the middle of it (the new owner records it abandoned, and does not start it
/// again); a later run reaches the command with its variables and is followed to its exit
/// status by `--wait`; a read token cannot run a task.
async fn a_run_now_is_started_once_across_a_failover(kind: Kind) {
    let s = TestStore::new(kind).await;
    let mut cluster = s.cluster("runnow");
    std::fs::create_dir_all(cluster.dir()).unwrap();
    let record = cluster.dir().join("runs.log");
    let tasks = format!(
        "[[task]]\nname = \"report\"\nevery = \"1h\"\ncommand = [\"sh\", \"-c\", \"echo START $ROTA_RUN $ROTA_NODE $ROTA_ATTEMPT $GREETING >> {0}; sleep 4; echo END $ROTA_RUN >> {0}\"]\n",
        record.display()
    );
    let ports: Vec<u16> = harness::servers::free_ports(2);
    for (i, node) in ["node-1", "node-2"].iter().enumerate() {
        spawn_with_admin(&mut cluster, node, &tasks, ports[i]);
        wait_alive(&s.store, &cluster, node).await;
    }
    let port_of = |node: &str| if node == "node-1" { ports[0] } else { ports[1] };
    let owner = eventually("report is placed", LONG, Some(&cluster), || {
        owner_of(&s.store, "runnow", "report")
    })
    .await;
    let survivor = if owner == "node-1" {
        "node-2"
    } else {
        "node-1"
    };
    let api = Client::new(
        format!("http://127.0.0.1:{}", port_of(survivor)),
        Some(ADMIN_TOKEN),
    );
    let reader = Client::new(
        format!("http://127.0.0.1:{}", port_of(survivor)),
        Some(READ_TOKEN),
    );
    assert_eq!(
        reader
            .send("POST", "/api/v1/tasks/report/run", None)
            .await
            .0,
        403,
        "a read token cannot run a task"
    );
    let lines = |prefix: &str, seq: i64| {
        std::fs::read_to_string(&record)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.starts_with(&format!("{prefix} {seq} ")) || *l == format!("{prefix} {seq}")
            })
            .map(str::to_string)
            .collect::<Vec<_>>()
    };

    // Killed in the middle of the run: started once, then recorded abandoned.
    let asked = api
        .post(
            "/api/v1/tasks/report/run",
            json!({"env": [{"name": "GREETING", "value": "hello"}]}),
        )
        .await;
    let seq = asked["run"]["seq"].as_i64().unwrap();
    assert_eq!(asked["requested_by"], "admin", "{asked}");
    assert_eq!(
        asked["env"],
        json!(["GREETING"]),
        "variables show by name only: {asked}"
    );
    let url = asked["run"]["url"].as_str().unwrap().to_string();
    let started = eventually(
        "the run starts on the owner",
        LONG,
        Some(&cluster),
        || async { lines("START", seq).first().cloned() },
    )
    .await;
    assert_eq!(started, format!("START {seq} {owner} 1 hello"));
    cluster.kill(&owner);
    let run = eventually(
        "the run is recorded abandoned",
        LONG,
        Some(&cluster),
        || async {
            let (status, v) = api.send("GET", &url, None).await;
            (status == 200 && v["state"] == "abandoned").then_some(v)
        },
    )
    .await;
    assert_eq!(run["fire"]["node"], owner, "{run}");
    assert_eq!(run["fire"]["run"], seq, "{run}");
    // The new owner holds the task a while: the run does not start again meanwhile.
    eventually("the survivor owns report", LONG, Some(&cluster), || async {
        (owner_of(&s.store, "runnow", "report").await.as_deref() == Some(survivor)).then_some(())
    })
    .await;
    let (_, again) = api.send("GET", &url, None).await;
    assert_eq!(again["state"], "abandoned", "{again}");
    assert_eq!(
        lines("START", seq).len(),
        1,
        "the run started once: {:?}",
        lines("START", seq)
    );

    // `rota ctl run --wait` follows a run to its exit status on the survivor.
    let out = tokio::process::Command::new(common::BIN)
        .args(["ctl", "run", "report", "--env", "GREETING=again", "--wait"])
        .env(
            "ROTA_URL",
            format!("http://127.0.0.1:{}", port_of(survivor)),
        )
        .env("ROTA_TOKEN", ADMIN_TOKEN)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(LONG, out)
        .await
        .expect("rota ctl run finishes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stdout.contains(&format!(": ok on {survivor}")) && stdout.contains("(exit status 0)"),
        "{stdout}"
    );
    let seq2: i64 = stderr
        .split("run #")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no run number in: {stderr}"));
    assert_eq!(
        lines("START", seq2),
        [format!("START {seq2} {survivor} 1 again")]
    );
    assert_eq!(lines("END", seq2).len(), 1);
    let (_, history) = api.send("GET", "/api/v1/tasks/report/history", None).await;
    let fire = history
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["run"] == seq2)
        .unwrap_or_else(|| panic!("run #{seq2} is not in the history: {history}"));
    assert_eq!(fire["outcome"], "ok", "{fire}");
    assert!(
        fire["message"].as_str().unwrap().contains("token `admin`"),
        "the history says who asked: {fire}"
    );
}

/// Cluster-defined work on every store (`rota ctl apply`): a read token cannot apply, a dry
/// run changes nothing, an applied task fires on its owner and survives a kill of every
/// node, a change made while a node is down reaches it when it returns, a name a node's
/// file declares is refused, and the definitions export as applied.
async fn a_task_applied_at_run_time_survives_every_node_and_reaches_a_node_that_was_down(
    kind: Kind,
) {
    let s = TestStore::new(kind).await;
    let mut cluster = s.cluster("defs");
    std::fs::create_dir_all(cluster.dir()).unwrap();
    let (v1_record, v2_record, filed_record) = (
        cluster.dir().join("v1.log"),
        cluster.dir().join("v2.log"),
        cluster.dir().join("filed.log"),
    );
    let ports: Vec<u16> = harness::servers::free_ports(2);
    let spawn = |cluster: &mut ProcessCluster, i: usize| {
        let node = format!("node-{}", i + 1);
        // node-1's own file declares `filed`; both nodes run the cluster's definitions.
        let own = if i == 0 {
            harness::log_task_toml("filed", "1h", &filed_record)
        } else {
            String::new()
        };
        let text = format!(
            "{}\n[admin]\nlisten = \"127.0.0.1:{}\"\ntoken = \"{ADMIN_TOKEN}\"\nread_token = \"{READ_TOKEN}\"\ndefinitions = true\n",
            cluster.config_text(&node, &own),
            ports[i]
        );
        let path = cluster.config_path(&node);
        std::fs::write(&path, text).unwrap();
        cluster.spawn_with_config(&node, &path).unwrap();
        node
    };
    for i in 0..2 {
        let node = spawn(&mut cluster, i);
        wait_alive(&s.store, &cluster, &node).await;
    }
    let api = |i: usize| Client::new(format!("http://127.0.0.1:{}", ports[i]), Some(ADMIN_TOKEN));
    let echo = |task: &str, record: &std::path::Path| {
        format!(
            "[[task]]\nname = \"{task}\"\nevery = \"1s\"\ncommand = [\"sh\", \"-c\", \"echo $ROTA_TASK $ROTA_FIRE_TIME_MS $ROTA_NODE $ROTA_FENCING_TOKEN $ROTA_ATTEMPT >> {}\"]\n",
            record.display()
        )
    };
    let apply = |doc: &str, dry_run: bool| json!({"document": doc, "dry_run": dry_run}).to_string();
    let v1 = echo("applied", &v1_record);

    let reader = Client::new(format!("http://127.0.0.1:{}", ports[0]), Some(READ_TOKEN));
    assert_eq!(
        reader
            .send("POST", "/api/v1/definitions", Some(&apply(&v1, false)))
            .await
            .0,
        403
    );
    let (status, dry) = api(0)
        .send("POST", "/api/v1/definitions", Some(&apply(&v1, true)))
        .await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["diff"]["added"][0]["name"], "applied", "{dry}");
    let (_, exported) = api(0).send("GET", "/api/v1/definitions", None).await;
    assert_eq!(
        exported["version"], 0,
        "a dry run applies nothing: {exported}"
    );
    let (status, bad) = api(0)
        .send(
            "POST",
            "/api/v1/definitions",
            Some(&apply("[[task]]\nname = \"x\"\nevery = \"soon\"\n", false)),
        )
        .await;
    assert_eq!(status, 400, "{bad}");
    assert!(bad["error"].as_str().unwrap().contains("every"), "{bad}");

    let applied = api(0)
        .post(
            "/api/v1/definitions",
            serde_json::from_str(&apply(&v1, false)).unwrap(),
        )
        .await;
    assert!(
        applied.get("document").is_none(),
        "the log does not show documents: {applied}"
    );
    let fired = |record: std::path::PathBuf,
                 task: &'static str,
                 since: i64,
                 node: Option<String>| async move {
        harness::read_fire_lines(&record)
            .into_iter()
            .filter(|l| {
                l.task == task && l.instant_ms > since && node.as_ref().is_none_or(|n| *n == l.node)
            })
            .count()
    };
    eventually("the applied task fires", LONG, Some(&cluster), || async {
        (fired(v1_record.clone(), "applied", 0, None).await >= 2).then_some(())
    })
    .await;
    let (_, task) = api(1).send("GET", "/api/v1/tasks/applied", None).await;
    assert_eq!(task["declared_by"], json!(["node-1", "node-2"]), "{task}");

    // Every node killed and started again: the definition is in the store, not in a process.
    cluster.kill("node-1");
    cluster.kill("node-2");
    let restarted = s.store.now_ms().await.unwrap();
    for i in 0..2 {
        let node = spawn(&mut cluster, i);
        wait_alive(&s.store, &cluster, &node).await;
    }
    eventually(
        "the applied task fires after every node restarted",
        LONG,
        Some(&cluster),
        || async {
            (fired(v1_record.clone(), "applied", restarted, None).await >= 2).then_some(())
        },
    )
    .await;

    // A change made while node-2 is down reaches it when it returns.
    cluster.kill("node-2");
    eventually("node-2 expired", LONG, Some(&cluster), || async {
        let v = s.store.view("defs").await.ok()?;
        (!v.nodes.iter().any(|n| n.node == "node-2" && n.alive)).then_some(())
    })
    .await;
    let v2 = format!(
        "{}\n{}",
        echo("applied", &v2_record),
        echo("second", &v2_record)
    );
    let (status, changed) = api(0)
        .send("POST", "/api/v1/definitions", Some(&apply(&v2, false)))
        .await;
    assert_eq!(status, 202, "{changed}");
    assert_eq!(
        changed["diff"]["changed"][0]["name"], "applied",
        "{changed}"
    );
    assert_eq!(changed["diff"]["added"][0]["name"], "second", "{changed}");
    spawn(&mut cluster, 1);
    wait_alive(&s.store, &cluster, "node-2").await;
    cluster.kill("node-1");
    let alone = s.store.now_ms().await.unwrap();
    for task in ["applied", "second"] {
        eventually(
            &format!("node-2 runs {task} as changed"),
            LONG,
            Some(&cluster),
            || async {
                (fired(v2_record.clone(), task, alone, Some("node-2".into())).await >= 2)
                    .then_some(())
            },
        )
        .await;
    }
    assert_eq!(
        fired(v1_record.clone(), "applied", alone, Some("node-2".into())).await,
        0,
        "node-2 ran the old definition after the change"
    );

    // A name a node's file declares is refused, with the reason; the export is the document.
    spawn(&mut cluster, 0);
    wait_alive(&s.store, &cluster, "node-1").await;
    let clash = format!("{v2}\n{}", echo("filed", &v2_record));
    let (status, refused) = api(1)
        .send("POST", "/api/v1/definitions", Some(&apply(&clash, false)))
        .await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("`filed` is declared in the file of node node-1"),
        "{refused}"
    );
    let out = tokio::process::Command::new(common::BIN)
        .args(["ctl", "export"])
        .env("ROTA_URL", format!("http://127.0.0.1:{}", ports[1]))
        .env("ROTA_TOKEN", ADMIN_TOKEN)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(LONG, out)
        .await
        .expect("rota ctl export finishes")
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), v2);
    common::assert_no_duplicates(&v1_record);
    common::assert_no_duplicates(&v2_record);
}

on_every_store!(
    a_command_missed_while_down_is_applied_before_any_task_starts,
    act_as_moves_an_absent_nodes_pinned_service_and_back,
    a_rolling_restart_takes_one_node_at_a_time,
    the_api_refuses_bad_tokens_and_malformed_requests,
    named_tokens_have_roles_and_a_revoked_one_is_refused_at_once,
    a_run_now_is_started_once_across_a_failover,
    a_task_applied_at_run_time_survives_every_node_and_reaches_a_node_that_was_down,
);
