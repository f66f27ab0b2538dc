//! Monitoring with real processes on every store: a kill is journaled (death, failover with
//! its duration, leader change), pushed to a client of the live stream, and counted in the
//! Prometheus metrics; JSON logs name node, task and token on every line about a fire.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rota_testkit::{self as harness, ProcessCluster};
use serde_json::Value;

const TASK: &str = "heartbeat-report";

fn task_toml(record: &std::path::Path) -> String {
    harness::log_task_toml(TASK, "1s", record)
}

/// GET `path` on the node at `port` with `token`; status and body.
async fn get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut req = http.get(format!("http://127.0.0.1:{port}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// Reads snapshots from `/api/v1/stream` into a channel, until dropped.
struct StreamClient {
    snapshots: tokio::sync::mpsc::UnboundedReceiver<Value>,
    task: tokio::task::JoinHandle<()>,
}

impl StreamClient {
    async fn open(port: u16) -> StreamClient {
        let mut resp = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/api/v1/stream"))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .expect("open the stream");
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let (tx, snapshots) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut buffer = String::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let frame: String = buffer.drain(..end + 2).collect();
                    let data: String = frame
                        .lines()
                        .filter_map(|l| l.strip_prefix("data: "))
                        .collect();
                    if frame.starts_with("event: snapshot") {
                        let snapshot = serde_json::from_str(&data).expect("a JSON snapshot");
                        if tx.send(snapshot).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        StreamClient { snapshots, task }
    }

    /// The first snapshot pushed that satisfies `check`.
    async fn wait_for(
        &mut self,
        what: &str,
        cluster: &ProcessCluster,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + LONG;
        loop {
            match tokio::time::timeout_at(deadline, self.snapshots.recv()).await {
                Ok(Some(s)) if check(&s) => return s,
                Ok(Some(_)) => {}
                Ok(None) => panic!("the stream ended while waiting for: {what}"),
                Err(_) => {
                    for node in cluster.nodes() {
                        eprintln!("---- log of {node} ----\n{}", cluster.log(&node));
                    }
                    panic!("no pushed snapshot within {LONG:?} showed: {what}");
                }
            }
        }
    }
}

impl Drop for StreamClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn task_owner(snapshot: &Value) -> Option<String> {
    snapshot["tasks"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == TASK)?["owner"]["node"]
        .as_str()
        .map(str::to_string)
}

fn live_nodes(snapshot: &Value) -> Vec<String> {
    snapshot["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["state"] == "alive")
        .filter_map(|n| n["id"].as_str().map(str::to_string))
        .collect()
}

/// The value of a sample line `name` (with its labels) in a Prometheus text page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

async fn a_kill_is_journaled_streamed_and_counted(kind: Kind) {
    let _slot = scenario_slot().await;
    let s = TestStore::new(kind).await;
    let mut cluster = s.cluster("watch");
    // Counts below are exact: a lease long enough that a stall of the busy machine cannot
    // fence a survivor (and add deaths, failovers or leaders of its own).
    cluster.timing_toml = "node_timeout = \"3s\"\n".into();
    let record = cluster.dir().join("fires.log");
    let ports: Vec<u16> = harness::servers::free_ports(3);
    // node-1 first: it leads and, active-passive, owns the task.
    spawn_with_admin(&mut cluster, "node-1", &task_toml(&record), ports[0]);
    wait_alive(&s.store, &cluster, "node-1").await;
    for (i, node) in ["node-2", "node-3"].iter().enumerate() {
        spawn_with_admin(&mut cluster, node, &task_toml(&record), ports[i + 1]);
        wait_alive(&s.store, &cluster, node).await;
    }
    let watcher = ports[2];
    let mut stream = StreamClient::open(watcher).await;
    let before = stream
        .wait_for(
            "three nodes, the task on node-1, and a fire",
            &cluster,
            |s| {
                live_nodes(s).len() == 3
                    && task_owner(s).as_deref() == Some("node-1")
                    && s["tasks"][0]["counts"]["ok"].as_u64().unwrap_or(0) > 0
            },
        )
        .await;
    assert_eq!(before["leader"]["node"], "node-1");
    assert!(
        !before.to_string().contains(ADMIN_TOKEN) && !before.to_string().contains(READ_TOKEN),
        "no token in a snapshot"
    );

    let killed = Instant::now();
    cluster.kill("node-1");
    let after = stream
        .wait_for("the task on a survivor, node-1 gone", &cluster, |s| {
            let owner = task_owner(s);
            owner.is_some() && owner.as_deref() != Some("node-1") && live_nodes(s).len() == 2
        })
        .await;
    eprintln!(
        "{kind:?}: the stream showed the new owner {:?} {} ms after the kill",
        task_owner(&after),
        killed.elapsed().as_millis()
    );
    let leader = after["leader"]["node"].as_str().expect("a new leader");
    assert_ne!(leader, "node-1");

    // The journal: node-1's death, the failover of its task with a duration, the new leader.
    let events: Vec<Value> = eventually(
        "the failover is journaled",
        LONG,
        Some(&cluster),
        || async {
            let (status, body) = get(watcher, "/api/v1/events?limit=200", Some(READ_TOKEN)).await;
            assert_eq!(status, 200, "{body}");
            let events: Vec<Value> = serde_json::from_str(&body).unwrap();
            events
                .iter()
                .any(|e| e["kind"] == "failover")
                .then_some(events)
        },
    )
    .await;
    let of = |kind: &str| -> Vec<&Value> { events.iter().filter(|e| e["kind"] == kind).collect() };
    let died: Vec<&Value> = of("node_died")
        .into_iter()
        .filter(|e| e["node"] == "node-1")
        .collect();
    assert_eq!(died.len(), 1, "one death, recorded once: {died:?}");
    let failovers: Vec<&Value> = of("failover")
        .into_iter()
        .filter(|e| e["from"] == "node-1")
        .collect();
    assert_eq!(failovers.len(), 1, "{failovers:?}");
    let f = failovers[0];
    assert_eq!(f["from"], "node-1");
    assert_eq!(f["tasks"][0]["task"], TASK);
    assert_eq!(f["tasks"][0]["to"], task_owner(&after).unwrap().as_str());
    let duration = f["duration_ms"].as_i64().unwrap();
    assert!(
        (1..20_000).contains(&duration),
        "failover took {duration} ms from the last heartbeat"
    );
    let leaders: Vec<&Value> = of("leader_changed");
    assert!(
        leaders
            .iter()
            .any(|e| e["node"] == leader && e["previous"] == "node-1"),
        "the new leader is journaled: {leaders:?}"
    );
    let joined: Vec<&str> = of("node_joined")
        .iter()
        .filter_map(|e| e["node"].as_str())
        .collect();
    for node in ["node-1", "node-2", "node-3"] {
        assert!(joined.contains(&node), "{node} joined: {joined:?}");
    }
    // Any node answers for the whole cluster: the other survivor shows the same journal.
    let other = if leader == "node-2" {
        ports[2]
    } else {
        ports[1]
    };
    let (_, body) = get(other, "/api/v1/events?limit=200", Some(READ_TOKEN)).await;
    assert!(body.contains("\"failover\""), "{body}");

    // Metrics: a token is needed once tokens are configured; the new leader counted the
    // failover and its leadership, the new owner its fires.
    let leader_port = ports[leader.trim_start_matches("node-").parse::<usize>().unwrap() - 1];
    for path in ["/metrics", "/api/v1/dashboard", "/api/v1/stream"] {
        assert_eq!(
            get(leader_port, path, None).await.0,
            401,
            "{path} without a token"
        );
        assert_eq!(
            get(leader_port, path, Some("not-the-token-0123456789"))
                .await
                .0,
            401,
            "{path} with a wrong token"
        );
    }
    // The page itself is open: it holds no data, and asks for a token.
    for path in ["/", "/assets/dashboard.js", "/assets/dashboard.css"] {
        let resp = reqwest::get(format!("http://127.0.0.1:{leader_port}{path}"))
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        let csp = resp.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        let body = resp.text().await.unwrap();
        assert!(!body.contains(ADMIN_TOKEN) && !body.contains(READ_TOKEN));
    }
    let (status, page) = get(leader_port, "/metrics", Some(READ_TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(
        sample(&page, "rota_failover_duration_seconds_count"),
        Some(1.0),
        "{page}"
    );
    assert_eq!(sample(&page, "rota_leader_changes_total"), Some(1.0));
    assert_eq!(sample(&page, "rota_is_leader"), Some(1.0));
    assert_eq!(
        sample(&page, "rota_cluster_nodes{state=\"alive\"}"),
        Some(2.0)
    );
    // node-1's registration is dead, or already gone (ZooKeeper removes an expired one).
    assert!(sample(&page, "rota_cluster_nodes{state=\"dead\"}").is_some_and(|n| n <= 1.0));
    let owner = task_owner(&after).unwrap();
    let owner_port = ports[owner.trim_start_matches("node-").parse::<usize>().unwrap() - 1];
    let fired = format!("rota_fires_total{{task=\"{TASK}\",outcome=\"ok\"}}");
    eventually(
        "the new owner counts its fires",
        LONG,
        Some(&cluster),
        || async {
            let (_, page) = get(owner_port, "/metrics", Some(READ_TOKEN)).await;
            let n = sample(&page, &fired)?;
            let late = sample(&page, "rota_fire_lateness_seconds_count")?;
            (n >= 1.0 && late >= n).then_some(())
        },
    )
    .await;
    let (_, page) = get(owner_port, "/metrics", Some(READ_TOKEN)).await;
    assert!(
        sample(
            &page,
            "rota_store_request_duration_seconds_count{op=\"heartbeat\"}"
        )
        .is_some_and(|n| n > 0.0),
        "store round trips are timed:\n{page}"
    );
    assert_no_duplicates(&record);
}

on_every_store!(a_kill_is_journaled_streamed_and_counted);

/// With `[log] format = "json"`, every line about a fire names its node, task and token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_name_node_task_and_token_on_every_line_about_a_fire() {
    let _slot = scenario_slot().await;
    let s = TestStore::new(Kind::Sqlite).await;
    let mut cluster = s.cluster("logs");
    let record = cluster.dir().join("fires.log");
    let failing =
        "[[task]]\nname = \"failing\"\nevery = \"1s\"\ncommand = [\"sh\", \"-c\", \"exit 3\"]\n";
    cluster
        .spawn("node-1", &(task_toml(&record) + failing))
        .unwrap();
    let lines = eventually(
        "fires of both tasks are logged",
        LONG,
        Some(&cluster),
        || async {
            let log = cluster.log("node-1");
            let about_fires: Vec<Value> = log
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| {
                    v["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("fire "))
                })
                .collect();
            let ok = about_fires.iter().any(|v| v["message"] == "fire ok");
            let failed = about_fires.iter().any(|v| v["message"] == "fire ended");
            (ok && failed).then_some(about_fires)
        },
    )
    .await;
    for line in &lines {
        let span = &line["span"];
        assert_eq!(span["node"], "node-1", "{line}");
        assert!(span["task"] == TASK || span["task"] == "failing", "{line}");
        assert!(span["token"].as_i64().is_some_and(|t| t > 0), "{line}");
        if line["message"] == "fire started" {
            assert!(line["instant"].as_i64().is_some(), "{line}");
            assert!(line["lateness_ms"].as_i64().is_some(), "{line}");
        }
    }
    let ended = lines.iter().find(|l| l["message"] == "fire ended").unwrap();
    assert_eq!(ended["level"], "WARN");
    assert_eq!(ended["outcome"], "failed");
    assert_eq!(ended["reason"], "`sh`: exit status 3");
    assert!(ended["took_ms"].as_u64().is_some(), "{ended}");
}

/// Clients without a token cannot exhaust the node: more idle and half-sent connections than
/// the cap make the oldest idle ones close, every one of them is closed once the header
/// deadline passes, and meanwhile `/healthz` answers and the task keeps firing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_is_bounded_and_the_node_keeps_working() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _slot = scenario_slot().await;
    let s = TestStore::sqlite().await;
    let mut cluster = s.cluster("flood");
    let record = cluster.dir().join("fires.log");
    let port = harness::servers::free_port();
    spawn_with_admin(&mut cluster, "node-1", &task_toml(&record), port);
    wait_alive(&s.store, &cluster, "node-1").await;
    assert_eq!(get(port, "/healthz", None).await.0, 200);

    // A request whose body never ends: inside a request, so never closed to make room, but
    // answered 408 at the body deadline.
    let started = Instant::now();
    let mut trickle = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    trickle
        .write_all(
            format!(
                "POST /api/v1/log-level HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let trickled = tokio::spawn(async move {
        let mut answer = Vec::new();
        let _ = trickle.read_to_end(&mut answer).await;
        (
            String::from_utf8_lossy(&answer).into_owned(),
            started.elapsed(),
        )
    });

    let flood = rota_admin::MAX_CONNECTIONS + 50;
    let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..flood {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        if i % 2 == 0 {
            // Half a request: the headers never end.
            conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: flood\r\n")
                .await
                .unwrap();
        }
        let closed_tx = closed_tx.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 256];
            // Ends at EOF or a reset: the server closed it.
            while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
            let _ = closed_tx.send((i, started.elapsed()));
        });
    }
    drop(closed_tx);
    let fired_before = harness::read_fire_lines(&record).len();

    // The cap: at least the 50 connections over it were closed at once to make room.
    let mut closed_at = Vec::new();
    while closed_at.len() < 50 {
        let (i, at) = tokio::time::timeout(Duration::from_secs(5), closed.recv())
            .await
            .expect("connections over the cap are closed at once")
            .expect("a closed connection");
        closed_at.push((i, at));
    }
    assert!(
        closed_at
            .iter()
            .all(|(_, at)| *at < rota_admin::HEADER_TIMEOUT),
        "closed to make room, not by the deadline: {closed_at:?}"
    );
    let (status, body) = get(port, "/healthz", None).await;
    assert_eq!(status, 200, "/healthz under the flood: {body}");

    // The header deadline: every flood connection is closed.
    while closed_at.len() < flood {
        let next = tokio::time::timeout(
            rota_admin::HEADER_TIMEOUT + Duration::from_secs(20),
            closed.recv(),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} of {flood} flood connections still open after the header deadline",
                flood - closed_at.len()
            )
        });
        closed_at.push(next.expect("a closed connection"));
    }
    eventually("the task kept firing", LONG, Some(&cluster), || async {
        (harness::read_fire_lines(&record).len() > fired_before + 2).then_some(())
    })
    .await;
    assert!(cluster.running("node-1"), "the node is still up");
    assert_eq!(get(port, "/healthz", None).await.0, 200);

    let (answer, after) =
        tokio::time::timeout(rota_admin::BODY_TIMEOUT + Duration::from_secs(20), trickled)
            .await
            .expect("a request whose body never ends is answered")
            .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        after >= rota_admin::BODY_TIMEOUT,
        "answered after {after:?}"
    );
}

/// A node whose admin port is taken stops before it joins (exit 2, the config's code): it
/// never registers, so nothing moves in the cluster on its account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_api_port_is_taken_exits_before_joining() {
    let _slot = scenario_slot().await;
    let s = TestStore::sqlite().await;
    let mut cluster = s.cluster("port-taken");
    let record = cluster.dir().join("fires.log");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let before = s.store.view(cluster.cluster()).await.unwrap().generation;
    spawn_with_admin(&mut cluster, "node-1", &task_toml(&record), port);
    let status = cluster
        .wait_exit("node-1", LONG)
        .await
        .expect("the node exits");
    assert_eq!(status.code(), Some(2), "{}", cluster.log("node-1"));
    assert!(
        cluster.log("node-1").contains("admin.listen"),
        "the error names the field:\n{}",
        cluster.log("node-1")
    );
    let view = s.store.view(cluster.cluster()).await.unwrap();
    assert_eq!(view.generation, before, "the node joined: {view:?}");
    assert!(view.nodes.is_empty(), "{view:?}");
    drop(taken);
}
