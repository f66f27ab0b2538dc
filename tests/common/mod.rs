//! Shared by the integration tests: temporary stores and process clusters.
#![allow(dead_code)]

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use rota::{
    harness::{
        servers::{DbKind, DbServer},
        ProcessCluster,
    },
    store::{self, Store},
};

pub const BIN: &str = env!("CARGO_BIN_EXE_rota");

/// The stores every scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
    MariaDb,
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
    match rota::harness::poll(timeout, check).await {
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

/// Generates one test per store for a scenario `async fn name(kind: Kind)`.
#[macro_export]
macro_rules! on_every_store {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$scenario(Kind::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$scenario(Kind::Postgres).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mariadb() {
                super::$scenario(Kind::MariaDb).await
            }
        }
    )*};
}
