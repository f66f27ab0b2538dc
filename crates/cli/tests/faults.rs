//! Store faults under a running cluster, on the database servers: the server restarted, one
//! node cut off from it, and nodes whose wall clocks are minutes off.

mod common;

use std::time::Duration;

use common::*;
use rota_testkit::{
    self as harness,
    proxy::CutProxy,
    servers::{DbKind, DbServer},
    ProcessCluster,
};

fn db_kind(kind: Kind) -> DbKind {
    match kind {
        Kind::Postgres => DbKind::Postgres,
        Kind::MariaDb => DbKind::MariaDb,
        Kind::Sqlite | Kind::ZooKeeper => unreachable!("database servers only"),
    }
}

/// Three nodes on `url`; once every task fires, `fault` strikes the store's servers (what it
/// returns is kept alive to the end). The cluster must keep running: every task fires again,
/// no node exits, nothing is started twice or missed silently.
async fn a_store_fault_loses_nothing<F, Fut, Kept>(url: &str, name: &str, fault: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Kept>,
{
    let store = rota::store::open(url).await.unwrap();
    store.prepare(true).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = ProcessCluster::new(BIN, dir.path(), url, name);
    let record = dir.path().join("fires.log");
    for id in ["node-1", "node-2", "node-3"] {
        cluster.spawn(id, &tasks_toml(&record)).unwrap();
    }
    let t0 = store.now_ms().await.unwrap();
    wait_fired_after(&store, &cluster, t0, None).await;
    let before = store.now_ms().await.unwrap();

    let kept = fault().await;
    let back = eventually("the store answers again", LONG, Some(&cluster), || async {
        store.now_ms().await.ok()
    })
    .await;
    wait_fired_after(&store, &cluster, back, None).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in ["node-1", "node-2", "node-3"] {
        let exited = cluster.wait_exit(id, Duration::ZERO).await;
        assert!(
            exited.is_none(),
            "{id} exited ({exited:?}) after the store fault:\n{}",
            cluster.log(id)
        );
    }
    let to = store.now_ms().await.unwrap() - 1500;
    assert_nothing_silently_missed(&store, name, before, to).await;
    assert_no_duplicates(&record);
    drop(kept);
}

async fn the_database_restarting_under_a_running_cluster_loses_nothing(kind: Kind) {
    let _slot = scenario_slot().await;
    let db = db_kind(kind);
    // Its own server: restarting the shared one would disturb other tests.
    let server = tokio::task::spawn_blocking(move || DbServer::start(db))
        .await
        .unwrap()
        .expect("start server");
    let url = server.create_database("rota_restart").await.unwrap();
    a_store_fault_loses_nothing(&url, "restart-db", || async move {
        tokio::task::spawn_blocking(move || {
            let mut server = server;
            server.restart().expect("restart");
            server
        })
        .await
        .unwrap()
    })
    .await;
}

async fn a_node_cut_off_from_the_database_starts_nothing_and_rejoins(kind: Kind) {
    let _slot = scenario_slot().await;
    let s = TestStore::new(kind).await;
    let port = match kind {
        Kind::ZooKeeper => zookeeper().port(0),
        _ => server(db_kind(kind)).port(),
    };
    let proxy = CutProxy::start(port).await.unwrap();
    let mut cluster = s.cluster("cut");
    let record = cluster.dir().join("fires.log");
    std::fs::create_dir_all(cluster.dir()).unwrap();
    let via_proxy = s
        .url
        .replace(&format!(":{port}/"), &format!(":{}/", proxy.port()));
    cluster.store_url_of.insert("node-1".into(), via_proxy);
    for id in ["node-1", "node-2", "node-3"] {
        spawn_registered(&mut cluster, &s.store, id, &tasks_toml(&record)).await;
    }
    let t0 = s.store.now_ms().await.unwrap();
    wait_fired_after(&s.store, &cluster, t0, None).await;
    let (owner_before, _) = owner(&s.store, "cut", "alpha").await.unwrap();
    assert_eq!(owner_before, "node-1", "the first node up owns the tasks");
    let incarnation = s
        .store
        .view("cut")
        .await
        .unwrap()
        .nodes
        .iter()
        .find(|n| n.node == "node-1")
        .unwrap()
        .incarnation;

    proxy.cut();
    let cut_at = s.store.now_ms().await.unwrap();
    let firsts = wait_fired_after(&s.store, &cluster, cut_at, None).await;
    assert!(
        firsts.iter().all(|f| f.node != "node-1"),
        "the others took the cut node's tasks"
    );
    tokio::time::sleep(Duration::from_secs(2)).await; // cut for well over the lease
    proxy.heal();
    let healed_at = s.store.now_ms().await.unwrap();
    eventually(
        "the cut node rejoins as a new incarnation",
        LONG,
        Some(&cluster),
        || async {
            let v = s.store.view("cut").await.ok()?;
            v.nodes
                .iter()
                .any(|n| n.node == "node-1" && n.alive && n.incarnation != incarnation)
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(cluster.running("node-1"), "the cut node kept running");
    let lines = harness::read_fire_lines(&record);
    let started_while_cut: Vec<_> = lines
        .iter()
        .filter(|l| l.node == "node-1" && l.instant_ms > cut_at && l.instant_ms <= healed_at)
        .collect();
    assert!(
        started_while_cut.is_empty(),
        "the cut node started work: {started_while_cut:?}"
    );
    assert_no_duplicates(&record);
    assert_nothing_silently_missed(&s.store, "cut", cut_at, healed_at).await;
    assert!(
        cluster.log("node-1").contains("lease"),
        "the cut node logged that it fenced itself"
    );
}

async fn nodes_whose_wall_clocks_are_minutes_off_fire_on_store_time(kind: Kind) {
    let _slot = scenario_slot().await;
    let s = TestStore::new(kind).await;
    let mut cluster = s.cluster("skew");
    let record = cluster.dir().join("fires.log");
    std::fs::create_dir_all(cluster.dir()).unwrap();
    let lib = libfaketime();
    let faketime = |offset: &str| {
        vec![
            ("LD_PRELOAD".to_string(), lib.clone()),
            ("FAKETIME".to_string(), offset.to_string()),
        ]
    };
    cluster.env_of.insert("node-1".into(), faketime("-5m"));
    cluster.env_of.insert("node-2".into(), faketime("+5m"));
    for id in ["node-1", "node-2", "node-3"] {
        spawn_registered(&mut cluster, &s.store, id, &tasks_toml(&record)).await;
    }
    let t0 = s.store.now_ms().await.unwrap();
    let firsts_on_node_1 = wait_fired_after(&s.store, &cluster, t0 + 1000, Some("node-1")).await;
    let node_clock = first_log_time(&cluster.log("node-1"));
    assert!(
        t0 - node_clock > 4 * 60_000,
        "node-1's own clock is about 5 minutes slow ({node_clock} vs {t0})"
    );

    for f in &firsts_on_node_1 {
        let late = f.started_at_ms.unwrap() - f.instant_ms;
        assert!(
            (0..1_000).contains(&late),
            "node-1 (5 min slow) fired {} {late} ms off store time",
            f.task
        );
    }
    cluster.kill("node-1");
    let killed_at = s.store.now_ms().await.unwrap();
    let firsts = wait_fired_after(&s.store, &cluster, killed_at + 2000, Some("node-2")).await;
    for f in &firsts {
        let late = f.started_at_ms.unwrap() - f.instant_ms;
        assert!(
            (0..1_000).contains(&late),
            "node-2 (5 min fast) fired {} {late} ms off store time",
            f.task
        );
    }
    // From the first fires on: the tasks may be placed a while after the nodes registered
    // (t0), and instants before a task's first placement are nobody's.
    let placed = firsts_on_node_1.iter().map(|f| f.instant_ms).max().unwrap();
    let to = s.store.now_ms().await.unwrap() - 1500;
    assert_nothing_silently_missed(&s.store, "skew", placed - 1, to).await;
    assert_no_duplicates(&record);
}

/// The wall-clock time of a node's first log line, Unix ms.
fn first_log_time(log: &str) -> i64 {
    let line = log
        .lines()
        .find(|l| l.contains("\"timestamp\""))
        .expect("a log line");
    let value: serde_json::Value = serde_json::from_str(line).expect("json log line");
    let text = value["timestamp"].as_str().expect("timestamp");
    chrono::DateTime::parse_from_rfc3339(text)
        .expect("rfc3339")
        .timestamp_millis()
}

/// A three-server ZooKeeper ensemble loses its leader under a running cluster: the quorum
/// elects another, the nodes' sessions move to a surviving server, and the tasks keep
/// running, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zookeeper_server_killed_under_a_running_cluster_loses_nothing() {
    let _slot = scenario_slot().await;
    let ensemble = tokio::task::spawn_blocking(|| rota_testkit::zookeeper::ZkEnsemble::start(3))
        .await
        .unwrap()
        .expect("start a ZooKeeper ensemble");
    let url = ensemble.url("rota-ensemble");
    a_store_fault_loses_nothing(&url, "ensemble", || async move {
        let mut ensemble = ensemble;
        let leader = (0..3)
            .find(|&i| ensemble.mode(i).as_deref() == Some("leader"))
            .expect("the ensemble has a leader");
        ensemble.kill(leader);
        ensemble
    })
    .await;
}

// On the database servers (SQLite's clock and reachability are the host's own; the
// ensemble test above is ZooKeeper's server fault).
on_stores!(
    [postgres => Postgres, mariadb => MariaDb];
    the_database_restarting_under_a_running_cluster_loses_nothing,
    nodes_whose_wall_clocks_are_minutes_off_fire_on_store_time,
);
on_stores!(
    [postgres => Postgres, mariadb => MariaDb, zookeeper => ZooKeeper];
    a_node_cut_off_from_the_database_starts_nothing_and_rejoins,
);

/// Whether `pid` runs (a zombie waiting to be reaped does not).
fn process_runs(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// The `index`-th `shell grandchild` pid pair a command recorded, once it is there.
async fn recorded_pids(
    cluster: &ProcessCluster,
    path: &std::path::Path,
    index: usize,
) -> (i32, i32) {
    eventually(
        "the command recorded its pids",
        LONG,
        Some(cluster),
        || async {
            let text = std::fs::read_to_string(path).ok()?;
            let line = text.lines().nth(index)?;
            let mut pids = line.split_whitespace().map(|p| p.parse::<i32>().ok());
            Some((pids.next()??, pids.next()??))
        },
    )
    .await
}

/// Contract 12: work a node started ends before the store can expire its lease, even when
/// the node cannot end it itself. Frozen (SIGSTOP) past its lease, its commands are killed
/// by its work guard; killed (SIGKILL), so are the grandchildren its commands started,
/// which the kernel's parent-death signal does not reach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_or_killed_nodes_commands_end_with_its_lease() {
    let _slot = scenario_slot().await;
    let s = TestStore::sqlite().await;
    let mut cluster = s.cluster("guard");
    std::fs::create_dir_all(cluster.dir()).unwrap();
    let pids = cluster.dir().join("pids");
    // A long command whose shell starts a grandchild; both record their pids.
    let task = format!(
        "[[task]]\nname = \"long\"\nevery = \"1s\"\n\
         command = [\"sh\", \"-c\", \"sleep 600 & echo $$ $! >> {}; wait\"]\n",
        pids.display()
    );
    cluster.spawn("node-1", &task).unwrap();
    let (shell, grandchild) = recorded_pids(&cluster, &pids, 0).await;
    assert!(process_runs(shell) && process_runs(grandchild));

    assert!(cluster.signal("node-1", libc::SIGSTOP));
    eventually(
        "the frozen node's command ends",
        Duration::from_secs(15),
        Some(&cluster),
        || async { (!process_runs(shell) && !process_runs(grandchild)).then_some(()) },
    )
    .await;
    assert!(cluster.signal("node-1", libc::SIGCONT));

    // Back, the node fires again; killed, its command's grandchild ends with it.
    let (shell, grandchild) = recorded_pids(&cluster, &pids, 1).await;
    assert!(process_runs(shell) && process_runs(grandchild));
    cluster.kill("node-1");
    eventually(
        "the killed node's command and its grandchild end",
        Duration::from_secs(15),
        None,
        || async { (!process_runs(shell) && !process_runs(grandchild)).then_some(()) },
    )
    .await;
}

/// libfaketime, preloaded into a node itself (the `faketime` tool would fork it, and a kill
/// would hit the wrapper).
fn libfaketime() -> String {
    rota_testkit::clock::libfaketime()
        .expect("libfaketime is not installed: apt-get install faketime (./scripts/test does it)")
        .display()
        .to_string()
}

/// Contract 12 under a store clock step: SQLite's store time is the host's clock. Stepped
/// forward by 3 s (three node timeouts), every registration looks expired at once, while
/// the owner's command still runs (its node frozen, so only its work guard can end it, at
/// its own deadline). The next owner must not start the task beside it: it waits out the
/// old owner's lease on its own monotonic clock. Each run takes a lock; a run that finds it
/// taken records an overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_clock_step_forward_starts_nothing_beside_the_old_owners_work() {
    let _slot = scenario_slot().await;
    let s = TestStore::sqlite().await;
    let mut cluster = s.cluster("step");
    std::fs::create_dir_all(cluster.dir()).unwrap();
    let record = cluster.dir().join("runs.log");
    let lock = cluster.dir().join("run.lock");
    // Leases run on the monotonic clock, which a wall-clock step does not move.
    let clock = rota_testkit::clock::FakeClock::new(cluster.dir().join("faketime.rc"))
        .unwrap()
        .expect("libfaketime is not installed: apt-get install faketime (./scripts/test does it)");
    let env = clock.env();
    for id in ["node-1", "node-2"] {
        cluster.env_of.insert(id.into(), env.clone());
    }
    let task = format!(
        "[[task]]\nname = \"long\"\nevery = \"1s\"\n\
         command = [\"sh\", \"-c\", \"exec 9>>{lock}; flock -n 9 || echo overlap $ROTA_NODE >> {rec}; \
         echo start $ROTA_NODE >> {rec}; sleep 30\"]\n",
        lock = lock.display(),
        rec = record.display()
    );
    spawn_registered(&mut cluster, &s.store, "node-1", &task).await;
    spawn_registered(&mut cluster, &s.store, "node-2", &task).await;
    let lines = || std::fs::read_to_string(&record).unwrap_or_default();
    eventually("node-1 runs the task", LONG, Some(&cluster), || async {
        lines().contains("start node-1").then_some(())
    })
    .await;

    assert!(cluster.signal("node-1", libc::SIGSTOP));
    clock.set_offset_ms(3000).unwrap();
    eventually(
        "node-2 takes the task over",
        LONG,
        Some(&cluster),
        || async { lines().contains("start node-2").then_some(()) },
    )
    .await;
    assert!(cluster.signal("node-1", libc::SIGCONT));
    let text = lines();
    assert!(
        !text.contains("overlap"),
        "a run started beside the old owner's:\n{text}"
    );
}

/// The child process of the test below, which runs this test binary again with
/// `STUCK_HANDLER_CHILD` set: a node whose library handler ignores its cancellation and blocks
/// its thread (do not do this). Without the variable it returns at once.
#[test]
fn stuck_handler_child() {
    let Some(started) = std::env::var_os(STUCK_HANDLER_CHILD) else {
        return;
    };
    let url = std::env::var("ROTA_STORE_URL").expect("ROTA_STORE_URL is set by the parent");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let started = std::path::PathBuf::from(started);
        let stuck = rota::TaskSpec::new(
            "stuck",
            rota::Schedule::every(Duration::from_secs(1)).unwrap(),
            move |_ctx: rota::FireContext| {
                let started = started.clone();
                async move {
                    std::fs::write(&started, format!("{}\n", std::process::id())).ok();
                    loop {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            },
        );
        let _node = rota::Node::builder("stuck-1", "stuck-demo", url)
            .task(stuck)
            .start()
            .await
            .unwrap();
        std::future::pending::<()>().await;
    });
}

const STUCK_HANDLER_CHILD: &str = "ROTA_TEST_STUCK_HANDLER_CHILD";

/// Contract 12 for in-process work: a library handler that ignores its cancellation and
/// blocks its thread cannot be stopped from inside its process. When its node's lease runs
/// out with the handler alive (here the process is frozen), the work guard ends the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_ignoring_its_cancel_ends_its_process_when_the_lease_runs_out() {
    let _slot = scenario_slot().await;
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "stuck_handler_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(STUCK_HANDLER_CHILD, &started)
        .env(
            "ROTA_STORE_URL",
            format!("sqlite://{}", dir.path().join("rota.db").display()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    // Read to its end: once the process and its guard (which shares it) are gone.
    let said = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    eventually("the stuck handler runs", LONG, None, || async {
        started.exists().then_some(())
    })
    .await;
    // SAFETY: kill(2) on our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGSTOP) }, 0);
    let child = std::sync::Mutex::new(child);
    let status = eventually(
        "the frozen process is ended by its work guard",
        Duration::from_secs(15),
        None,
        || async { child.lock().unwrap().try_wait().unwrap() },
    )
    .await;
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    // The death has its cause in the node's log.
    let said = tokio::time::timeout(LONG, said)
        .await
        .expect("the guard exits once its node is gone")
        .unwrap();
    assert!(
        said.contains(
            "work guard: the node's lease deadline passed while its in-process work was alive"
        ),
        "the guard did not say why it killed the node: {said}"
    );
}
