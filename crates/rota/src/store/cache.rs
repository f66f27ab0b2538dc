//! The cluster cache's entries as the store keeps them.

use crate::error::Result;
use async_trait::async_trait;

/// The cache that holds tasks' own state (see [`CacheStore::save_task_state`]).
pub const TASK_STATE_CACHE: &str = "rota.task-state";

/// Where each run-now fire is recorded: `<task>/<seq>` holds the instant of its record,
/// written by the owner that starts it, for the API to follow it.
pub const RUNS_CACHE: &str = "rota.runs";

/// A cache entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub value: Vec<u8>,
    /// Higher after every write of the key (see [`CacheStore::cache_put`]).
    pub version: i64,
    /// Store time when it expires, if it has a TTL.
    pub expires_at_ms: Option<i64>,
}

/// What a cache write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Anything: write unconditionally.
    Any,
    /// No live entry (absent, deleted or expired).
    Absent,
    /// The live entry at exactly this version.
    Version(i64),
}

/// One write of a cache entry.
#[derive(Debug, Clone)]
pub struct CacheWrite<'a> {
    pub cache: &'a str,
    pub key: &'a str,
    pub value: &'a [u8],
    /// Expires this long after the write, by store time.
    pub ttl_ms: Option<i64>,
    pub expect: Expect,
}

/// The answer to a conditional cache write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Done; the key's version now (a delete's tombstone has one too).
    Done { version: i64 },
    /// The entry was not as expected: nothing changed. Its live version, if any.
    Conflict { current: Option<i64> },
}

/// A cache entry written or deleted (pushed by stores that can). An empty `cache` is about
/// the push itself: [`CacheChange::everything`] when it (re)connects (anything may have
/// changed meanwhile), [`CacheChange::lost`] when it stops (nothing is pushed until the
/// next `everything`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheChange {
    pub cache: String,
    pub key: String,
}

/// The cluster cache: versioned entries with store-time expiry, and tasks' fenced state.
#[async_trait]
pub trait CacheStore: Send + Sync {
    /// The live entry of `key` in the named cache, or `None` (absent, deleted, or expired by
    /// store time). Linearizable: it reflects every write that completed before the call.
    async fn cache_get(&self, cluster: &str, cache: &str, key: &str) -> Result<Option<CacheEntry>>;

    /// Writes `value` under `key` if the entry is as `expect` says, atomically; `ttl_ms`
    /// makes it expire that long after this write, by store time. Each write of a key gives
    /// it a higher version than any it had before, deletes and expiries included, so a
    /// compare-and-set on a version never succeeds against a later incarnation of the key
    /// (within the history retention: [`HistoryStore::purge_history`](crate::store::HistoryStore::purge_history) removes tombstones and expired
    /// entries older than that, and a key written after that starts again at version 1).
    async fn cache_put(&self, cluster: &str, write: &CacheWrite<'_>) -> Result<CacheOutcome>;

    /// Deletes `key` if the entry is as `expect` says. The key keeps its version (a
    /// tombstone), see `cache_put`. With no live entry, nothing changes: `Done` at version 0
    /// (or a conflict for [`Expect::Version`]).
    async fn cache_delete(
        &self,
        cluster: &str,
        cache: &str,
        key: &str,
        expect: Expect,
    ) -> Result<CacheOutcome>;

    /// The live keys of a cache that start with `prefix`, in order, at most `limit`.
    async fn cache_keys(
        &self,
        cluster: &str,
        cache: &str,
        prefix: &str,
        limit: i64,
    ) -> Result<Vec<String>>;

    /// Saves a task's own state, fenced: only while `token` is the task's current fencing
    /// token (`task` is the assignment's name). `false`: refused, the task has moved on.
    /// The state lives in the cache [`TASK_STATE_CACHE`] under the task's name.
    async fn save_task_state(
        &self,
        cluster: &str,
        task: &str,
        token: i64,
        value: &[u8],
    ) -> Result<bool>;

    /// Where the store can push (PostgreSQL NOTIFY, ZooKeeper watches): every write and
    /// delete of a cache entry of `cluster` as `(cache, key)`, soon after it commits, for
    /// near caches to drop their copy. `None` where it cannot: near caches then keep a copy
    /// only for a bounded time.
    async fn cache_changes(
        &self,
        _cluster: &str,
    ) -> Option<tokio::sync::broadcast::Receiver<CacheChange>> {
        None
    }
}

impl CacheChange {
    /// The push is (re)connected: anything may have changed.
    pub fn everything() -> CacheChange {
        CacheChange {
            cache: String::new(),
            key: String::new(),
        }
    }

    /// The push stopped: changes go unreported until the next [`CacheChange::everything`].
    pub fn lost() -> CacheChange {
        CacheChange {
            cache: String::new(),
            key: "lost".into(),
        }
    }
}
