//! Session locks: how a store notices at once that a node's process died.
//!
//! When a process dies (kill -9, OOM, panic), its machine's kernel closes its connections
//! and files, and the database frees the locks its sessions held. A node takes one such lock
//! before it joins ([`SessionStore::hold_session`]) and names its key in its registration;
//! other nodes wait on that lock ([`SessionStore::watch_session`]) and, when it is freed, end
//! the registration in the store ([`SessionStore::end_registration`]).
//!
//! **The lock is a hint; the store's rule stays.** An ended registration may start nothing
//! more (claims, begins, renewals and leadership are refused at once), but work it began
//! keeps its lease: a successor waits `heartbeat_at + timeout_ms` out before it takes a
//! begun fire or a service over, exactly as after an expiry. A node ended by mistake (its
//! lock connection closed by a proxy while the node lives) therefore only loses its lease
//! early, and rejoins; nothing runs beside its work.

use std::{future::Future, pin::Pin};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::membership::Member;
use crate::error::Result;

/// A wait for a session lock's release (see [`SessionStore::watch_session`]).
pub type SessionWatch = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Which registrations a node watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchScope {
    /// Every other node's: each survivor learns of a death itself (stores that cannot push
    /// a change, and watchers that cost no connection).
    Everyone,
    /// The leader watches every other node; the others watch the leader. The store pushes
    /// the new placement to everyone (PostgreSQL's NOTIFY).
    Leader,
}

/// A session lock held by this process, until [`SessionHold::release`] (or its death).
pub struct SessionHold {
    /// The lock's key, written in the registration.
    pub key: i64,
    stop: CancellationToken,
    /// Holds the lock (a connection, a file) and keeps it; unlocks when `stop` fires.
    keeper: Option<tokio::task::JoinHandle<()>>,
}

impl SessionHold {
    pub(crate) fn new(
        key: i64,
        stop: CancellationToken,
        keeper: tokio::task::JoinHandle<()>,
    ) -> Self {
        SessionHold {
            key,
            stop,
            keeper: Some(keeper),
        }
    }

    /// Lets the lock go (after the node left the cluster).
    pub async fn release(mut self) {
        self.stop.cancel();
        if let Some(keeper) = self.keeper.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), keeper).await;
        }
    }

    /// Drops the lock's connection or file without unlocking: what the kernel does when the
    /// process dies. For tests.
    pub fn sever(mut self) {
        if let Some(keeper) = self.keeper.take() {
            keeper.abort();
        }
    }
}

impl Drop for SessionHold {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl std::fmt::Debug for SessionHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHold")
            .field("key", &self.key)
            .finish()
    }
}

/// Session locks. Stores without them (ZooKeeper: a session outlives its connection by
/// design) keep the defaults: no hold, nothing to watch, and deaths are noticed by the node
/// timeout alone.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Takes a new session lock under a random key, on a connection (or file) of its own
    /// that nothing else uses: a database frees at once only the locks of an idle session.
    /// The hold keeps it, and takes the same key again if the connection is lost. `None`:
    /// this store has no session locks.
    async fn hold_session(&self) -> Result<Option<SessionHold>> {
        Ok(None)
    }

    /// Which registrations each node watches, when `others` other nodes hold a lock.
    fn watch_scope(&self, _others: usize) -> WatchScope {
        WatchScope::Everyone
    }

    /// Resolves once the holder of `key` lets it go, after this watcher saw it held (a
    /// server that restarted shows every key free: that is no death). Connection errors are
    /// retried, never reported. `None`: this store has no session locks. Dropping the
    /// future stops the watch (a server-side wait may linger up to a few seconds).
    fn watch_session(&self, _key: i64) -> Option<SessionWatch> {
        None
    }

    /// Ends the registration `member` whose session lock `key` was released: from the
    /// store's now on, it may claim, begin, renew and lead no more, but its begun work keeps
    /// its lease. Writes nothing, returning `false`, unless the registration is live and
    /// holds `key`; `true` only for the call that ended it (the generation moves then).
    async fn end_registration(&self, _member: &Member, _key: i64) -> Result<bool> {
        Ok(false)
    }
}
