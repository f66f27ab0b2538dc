//! Shared by the integration tests: temporary stores and process clusters.
#![allow(dead_code)]

use std::{sync::Arc, time::Duration};

use rota::{
    harness::ProcessCluster,
    store::{self, Store},
};

pub const BIN: &str = env!("CARGO_BIN_EXE_rota");

/// A fresh SQLite store in a temporary directory, removed on drop.
pub struct TestStore {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub store: Arc<dyn Store>,
}

impl TestStore {
    pub async fn sqlite() -> TestStore {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("rota.db").display());
        let store = store::open(&url).await.expect("open store");
        store.prepare(true).await.expect("prepare store");
        TestStore { dir, url, store }
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
