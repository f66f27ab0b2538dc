//! Shared by the integration tests: temporary stores and process clusters.
#![allow(dead_code)]
pub mod faulty;

use std::{
    path::Path,
    sync::{Arc, OnceLock},
    time::Duration,
};

use rota::store::{self, Store};
use rota_testkit::{
    self as harness,
    servers::{DbKind, DbServer},
    ProcessCluster,
};

/// Multi-process scenarios that kill, freeze and time nodes run at most two at once (of the
/// four test threads `./scripts/test` gives each binary), so that a busy 2-core machine does
/// not starve their leases. They spend nearly all their time waiting on leases and instants:
/// `cluster.rs` takes about 18 s of CPU in its 165 s.
static SCENARIO_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Waits for one of the scenario slots; held until the returned permit drops.
pub async fn scenario_slot() -> tokio::sync::SemaphorePermit<'static> {
    SCENARIO_SLOTS
        .acquire()
        .await
        .expect("the slots are never closed")
}

pub const BIN: &str = env!("CARGO_BIN_EXE_rota");

/// The stores every scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
    MariaDb,
    ZooKeeper,
}

/// One private server per kind and test binary, shared by its tests (each gets a fresh
/// database). A missing server fails the test loudly: it is never skipped.
pub fn server(kind: DbKind) -> &'static DbServer {
    static PG: OnceLock<Result<DbServer, String>> = OnceLock::new();
    static MARIA: OnceLock<Result<DbServer, String>> = OnceLock::new();
    let cell = match kind {
        DbKind::Postgres => &PG,
        DbKind::MariaDb => &MARIA,
    };
    match cell.get_or_init(|| DbServer::start(kind).map_err(|e| e.to_string())) {
        Ok(s) => s,
        Err(e) => panic!("cannot start the {kind:?} test server: {e}"),
    }
}

/// One private ZooKeeper server per test binary, shared by its tests (each gets its own tree).
pub fn zookeeper() -> &'static rota_testkit::zookeeper::ZkEnsemble {
    static ZK: OnceLock<Result<rota_testkit::zookeeper::ZkEnsemble, String>> = OnceLock::new();
    match ZK
        .get_or_init(|| rota_testkit::zookeeper::ZkEnsemble::start(1).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => panic!("cannot start the ZooKeeper test server: {e}"),
    }
}

/// A fresh store of one kind (SQLite in a temporary directory; a new database on the shared
/// PostgreSQL or MariaDB test server).
pub struct TestStore {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub store: Arc<dyn Store>,
    pub kind: Kind,
}

impl TestStore {
    pub async fn sqlite() -> TestStore {
        Self::new(Kind::Sqlite).await
    }

    pub async fn new(kind: Kind) -> TestStore {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = match kind {
            Kind::Sqlite => format!("sqlite://{}", dir.path().join("rota.db").display()),
            Kind::Postgres | Kind::MariaDb => {
                let db_kind = if kind == Kind::Postgres {
                    DbKind::Postgres
                } else {
                    DbKind::MariaDb
                };
                let server = tokio::task::spawn_blocking(move || server(db_kind))
                    .await
                    .expect("server thread");
                let name = format!("rota_{:016x}", rand_u64());
                server
                    .create_database(&name)
                    .await
                    .expect("create database")
            }
            Kind::ZooKeeper => {
                let zk = tokio::task::spawn_blocking(zookeeper)
                    .await
                    .expect("server thread");
                zk.url(&format!("rota-{:016x}", rand_u64()))
            }
        };
        let store = store::open(&url).await.expect("open store");
        store.prepare(true).await.expect("prepare store");
        TestStore {
            dir,
            url,
            store,
            kind,
        }
    }

    pub fn cluster(&self, name: &str) -> ProcessCluster {
        ProcessCluster::new(BIN, self.dir.path().join(name), &self.url, name)
    }
}

/// Live owner of `task`, if any.
pub async fn owner(store: &Arc<dyn Store>, cluster: &str, task: &str) -> Option<(String, i64)> {
    let view = store.view(cluster).await.ok()?;
    let a = store
        .assignments(cluster)
        .await
        .ok()?
        .into_iter()
        .find(|a| a.task == task)?;
    let (node, inc) = a.owner?;
    view.nodes
        .iter()
        .any(|n| n.node == node && n.incarnation == inc && n.alive)
        .then_some((node, a.token))
}

/// Polls until `check` holds or the deadline passes; panics with `what` and the logs.
pub async fn eventually<T, F, Fut>(
    what: &str,
    timeout: Duration,
    cluster: Option<&ProcessCluster>,
    check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    match rota_testkit::poll(timeout, check).await {
        Some(v) => v,
        None => {
            if let Some(c) = cluster {
                for n in c.nodes() {
                    eprintln!("---- log of {n} ----\n{}", c.log(&n));
                }
            }
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

/// Generates, for each scenario `async fn name(kind: Kind)`, a module `name` with one test
/// per listed store: `on_stores!([postgres => Postgres, ...]; scenario, ...)`.
#[macro_export]
macro_rules! on_stores {
    ($stores:tt; $($scenario:ident),* $(,)?) => {$(
        on_stores!(@one $stores $scenario);
    )*};
    (@one [$($test:ident => $kind:ident),+ $(,)?] $scenario:ident) => {
        mod $scenario {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$scenario(Kind::$kind).await
                }
            )+
        }
    };
}

/// One test per store for each scenario.
#[macro_export]
macro_rules! on_every_store {
    ($($scenario:ident),* $(,)?) => {
        on_stores!(
            [sqlite => Sqlite, postgres => Postgres, mariadb => MariaDb, zookeeper => ZooKeeper];
            $($scenario),*
        );
    };
}

// Scenario helpers shared by the multi-process tests.

pub const TASKS: [&str; 3] = ["alpha", "beta", "gamma"];
pub const LONG: Duration = Duration::from_secs(20);

/// Two `log` tasks and one `command` task, every second, all recording to `record`.
pub fn tasks_toml(record: &Path) -> String {
    let mut toml: String = TASKS[..2]
        .iter()
        .map(|t| harness::log_task_toml(t, "1s", record))
        .collect();
    toml.push_str(&format!(
        "[[task]]\nname = \"{}\"\nevery = \"1s\"\ncommand = [\"sh\", \"-c\", \"echo $ROTA_TASK $ROTA_FIRE_TIME_MS $ROTA_NODE $ROTA_FENCING_TOKEN $ROTA_ATTEMPT >> {}\"]\n",
        TASKS[2],
        record.display()
    ));
    toml
}

/// Starts node-1..3 (node-1 first, so it leads and owns) and waits until every task fired.
pub async fn three_nodes(s: &TestStore, name: &str) -> (ProcessCluster, std::path::PathBuf) {
    three_nodes_timed(s, name, "").await
}

/// [`three_nodes`] with this `[timing]` section (its lines).
pub async fn three_nodes_timed(
    s: &TestStore,
    name: &str,
    timing_toml: &str,
) -> (ProcessCluster, std::path::PathBuf) {
    let mut cluster = s.cluster(name);
    cluster.timing_toml = timing_toml.to_string();
    let record = cluster.dir().join("fires.log");
    std::fs::create_dir_all(cluster.dir()).unwrap();
    for id in ["node-1", "node-2", "node-3"] {
        spawn_registered(&mut cluster, &s.store, id, &tasks_toml(&record)).await;
    }
    let since = s.store.now_ms().await.unwrap();
    wait_fired_after(&s.store, &cluster, since, None).await;
    (cluster, record)
}

/// Starts `id` and waits until it is registered and alive, so that nodes join in order.
pub async fn spawn_registered(
    cluster: &mut ProcessCluster,
    store: &Arc<dyn Store>,
    id: &str,
    tasks_toml: &str,
) {
    cluster.spawn(id, tasks_toml).unwrap();
    let name = cluster.cluster().to_string();
    eventually(&format!("{id} registered"), LONG, Some(cluster), || async {
        let v = store.view(&name).await.ok()?;
        v.nodes
            .iter()
            .any(|n| n.node == id && n.alive)
            .then_some(())
    })
    .await;
}

/// Waits until every task started a fire with an instant after `since` (on `on`, if given).
pub async fn wait_fired_after(
    store: &Arc<dyn Store>,
    cluster: &ProcessCluster,
    since: i64,
    on: Option<&str>,
) -> Vec<rota::store::FireRecord> {
    let name = cluster.cluster().to_string();
    eventually(
        &format!("every task fired after {since} on {on:?}"),
        LONG,
        Some(cluster),
        || fired_after(store, &name, since, on),
    )
    .await
}

/// The first fire of every task started after `since` (on `on`, if given), once all have one.
pub async fn fired_after(
    store: &Arc<dyn Store>,
    cluster: &str,
    since: i64,
    on: Option<&str>,
) -> Option<Vec<rota::store::FireRecord>> {
    let h = store.history(cluster, None, 200).await.ok()?;
    let firsts: Vec<_> = TASKS
        .iter()
        .filter_map(|t| {
            h.iter()
                .filter(|f| f.task == *t && f.instant_ms > since && f.started_at_ms.is_some())
                .filter(|f| on.is_none_or(|n| f.node == n))
                .min_by_key(|f| f.instant_ms)
                .cloned()
        })
        .collect();
    (firsts.len() == TASKS.len()).then_some(firsts)
}

pub fn assert_no_duplicates(record: &Path) {
    let lines = harness::read_fire_lines(record);
    assert!(!lines.is_empty(), "the tasks recorded their fires");
    let dups = harness::duplicates(&lines);
    assert!(dups.is_empty(), "instants started twice: {dups:?}");
}

/// Every instant of every task between `from` and `to` has a record (started, or visibly
/// skipped/misfired): nothing is missed silently.
pub async fn assert_nothing_silently_missed(
    store: &Arc<dyn Store>,
    cluster: &str,
    from: i64,
    to: i64,
) {
    let h = store.history(cluster, None, 10_000).await.unwrap();
    for task in TASKS {
        let mut t = (from / 1000 + 1) * 1000;
        while t <= to {
            assert!(
                h.iter().any(|f| f.task == task && f.instant_ms == t),
                "{task} at {t} has no record; its records from {from} to {to}: {:?}",
                h.iter()
                    .filter(|f| f.task == task && (from..=to).contains(&f.instant_ms))
                    .map(|f| (f.instant_ms, f.outcome, f.message.clone()))
                    .collect::<Vec<_>>()
            );
            t += 1000;
        }
    }
}

// Nodes with an admin API (commands and the dashboard).

pub const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";
pub const READ_TOKEN: &str = "read-token-0123456789abcdef";

/// Writes `node`'s config with an `[admin]` section on `port` (with the admin and the read
/// token) and starts it.
pub fn spawn_with_admin(cluster: &mut ProcessCluster, node: &str, tasks_toml: &str, port: u16) {
    let tokens = Some((ADMIN_TOKEN, READ_TOKEN));
    cluster
        .spawn_with_admin(node, tasks_toml, Some((port, tokens)))
        .unwrap();
}

/// Waits until `node` is alive (and not leaving); its incarnation.
pub async fn wait_alive(store: &Arc<dyn Store>, cluster: &ProcessCluster, node: &str) -> i64 {
    let name = cluster.cluster().to_string();
    eventually(&format!("{node} alive"), LONG, Some(cluster), || async {
        let v = store.view(&name).await.ok()?;
        v.nodes
            .iter()
            .find(|n| n.node == node && n.alive && !n.leaving)
            .map(|n| n.incarnation)
    })
    .await
}

/// The files in `dir`, by name (none if it does not exist).
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A `file_inbound` service polling `inbox` every 50 ms into `inbox/done` and `inbox/failed`.
pub fn file_inbound(
    inbox: &Path,
    handler: rota::kinds::file_inbound::FileHandler,
) -> rota::kinds::ServiceKind {
    rota::kinds::ServiceKind::FileInbound(rota::kinds::FileInbound {
        dir: inbox.to_path_buf(),
        done: inbox.join("done"),
        failed: inbox.join("failed"),
        poll: Duration::from_millis(50),
        handler,
    })
}
