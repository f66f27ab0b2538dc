//! The handle of a running node: its status, its metrics, and how it is stopped.

use std::sync::Arc;

use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::commands::StopReason;
use crate::{
    error::{Error, Result},
    store::Store,
};

/// What a running node reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub incarnation: i64,
    /// Holds a valid lease: may start work.
    pub active: bool,
    pub leader: bool,
    /// Tasks this node owns now, with their tokens.
    pub owned: Vec<(String, i64)>,
    /// The last store error, while the store is unreachable.
    pub store_error: Option<String>,
    /// The cluster's generation as this node last observed it (moves with every change of
    /// membership, placement or the command log; see [`crate::store::MembershipStore::view`]).
    pub generation: i64,
}

/// A running node. Dropping it does not stop the node; call [`NodeHandle::shutdown`].
pub struct NodeHandle {
    pub(super) graceful: CancellationToken,
    pub(super) forced: CancellationToken,
    pub(super) status: watch::Receiver<NodeStatus>,
    pub(super) task: JoinHandle<Result<StopReason>>,
    pub(super) metrics: Arc<crate::metrics::Metrics>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) cluster: String,
    /// Started with the first cache handle.
    pub(crate) near: Arc<tokio::sync::OnceCell<Arc<crate::cache::NearCache>>>,
}

impl NodeHandle {
    /// Graceful stop: stop taking new work, hand tasks over, let running fires finish within
    /// the grace period, leave the cluster. Returns when done.
    pub async fn shutdown(self) -> Result<()> {
        self.graceful.cancel();
        self.wait().await.map(|_| ())
    }

    /// Asks for a graceful stop without waiting.
    pub fn begin_shutdown(&self) {
        self.graceful.cancel();
    }

    /// Forced stop: cancel running fires at once and leave.
    pub fn force_shutdown(&self) {
        self.graceful.cancel();
        self.forced.cancel();
    }

    /// Waits for the node to end (after a shutdown, a restart or shutdown command, or a
    /// fatal error), and says why it ended.
    pub async fn wait(self) -> Result<StopReason> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(Error::Store(format!("node task panicked: {e}"))),
        }
    }

    pub fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    /// The cluster cache `name` (1 to 128 letters, digits, `-`, `_`, `.`), with this node's
    /// near cache: see [`crate::cache`].
    pub async fn cache(&self, name: &str) -> Result<crate::cache::Cache> {
        let near = self
            .near
            .get_or_init(|| crate::cache::NearCache::start(&self.store, &self.cluster))
            .await
            .clone();
        crate::cache::Cache::new(self.store.clone(), &self.cluster, name, near)
    }

    /// What this node counts (fires, lateness, failovers, commands, store round trips), for
    /// an embedding program's own `/metrics`; `rota node` serves it on its admin listener.
    pub fn metrics(&self) -> Arc<crate::metrics::Metrics> {
        self.metrics.clone()
    }

    /// A receiver that sees every status change.
    pub fn watch_status(&self) -> watch::Receiver<NodeStatus> {
        self.status.clone()
    }
}
