//! Cluster caches: named maps of key → bytes (or JSON) kept in the coordination store, so
//! state survives failover and any node reads what any node wrote.
//!
//! - [`Cache::get`] and every write go to the store: linearizable (a read reflects every
//!   write completed before it) and read-your-writes.
//! - [`Cache::get_cached`] serves repeated reads from the node's near cache. A copy is
//!   dropped as soon as the store pushes the change where it can (PostgreSQL NOTIFY,
//!   ZooKeeper watches; a copy then lives at most [`PUSHED_MAX_AGE`] as a safety net), and
//!   is kept at most [`POLLED_MAX_AGE`] elsewhere (SQLite, MySQL/MariaDB): a read may be
//!   that stale. Copies of entries with a TTL live at most [`POLLED_MAX_AGE`] everywhere
//!   (expiry is not pushed). This node's own writes drop its copy at once.
//! - Entries may expire ([`Cache::put_with_ttl`]) by store time. Versions only grow, deletes
//!   and expiries included, so [`Cache::compare_and_set`] never matches a later incarnation
//!   of a key (within the history retention, after which tombstones are purged).
//!
//! A task's own state (a cursor, a checkpoint) is kept the same way, fenced by its token:
//! see [`crate::task::FireContext::state`].

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use serde::{de::DeserializeOwned, Serialize};
use tokio::time::Instant;

use crate::{
    error::{Error, Result},
    store::{CacheChange, CacheEntry, CacheOutcome, CacheWrite, Expect, Store},
};

/// Longest life of a near-cache copy where the store pushes changes (a safety net).
pub const PUSHED_MAX_AGE: Duration = Duration::from_secs(30);
/// Longest life of a near-cache copy where the store cannot push: the staleness bound.
pub const POLLED_MAX_AGE: Duration = Duration::from_millis(500);
/// Largest value stored (the store holds it in one row or znode).
pub const MAX_VALUE: usize = 512 * 1024;
/// Largest key, in bytes.
pub const MAX_KEY: usize = 255;
/// Most bytes of values a node keeps in its near cache; beyond, it starts afresh.
pub const NEAR_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Longest time to live accepted: ten years.
const MAX_TTL: Duration = Duration::from_secs(3650 * 86_400);

/// Checks a cache name: 1 to 128 letters, digits, `-`, `_` or `.`, like every name.
pub fn validate_cache_name(name: &str) -> Result<()> {
    crate::error::validate_name("cache", name)
}

/// Caches whose name starts with this are rota's own ([`crate::store::TASK_STATE_CACHE`]).
pub const RESERVED_PREFIX: &str = "rota.";

/// Checks a key: 1 to [`MAX_KEY`] characters, no control characters.
pub fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() || key.chars().count() > MAX_KEY || key.chars().any(char::is_control) {
        return Err(Error::config(
            "key",
            format!(
                "`{}` is not a valid key; use 1 to {MAX_KEY} characters, none of them a control character",
                key.chars().take(40).collect::<String>()
            ),
        ));
    }
    Ok(())
}

fn validate_value(value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE {
        return Err(Error::config(
            "value",
            format!(
                "{} bytes is more than the {MAX_VALUE} a cache entry holds; store a reference to larger data",
                value.len()
            ),
        ));
    }
    Ok(())
}

fn ttl_ms(ttl: Duration) -> Result<i64> {
    match i64::try_from(ttl.as_millis()) {
        Ok(ms) if ms > 0 && ttl <= MAX_TTL => Ok(ms),
        _ => Err(Error::config(
            "ttl",
            format!("{ttl:?} is not a time to live; give 1 ms to 3650 days"),
        )),
    }
}

/// A copy: the entry (or its absence) for `(cache, key)`, and when it was read.
type Copies = HashMap<(String, String), (Option<CacheEntry>, Instant)>;

/// One node's copies of cache entries, shared by its [`Cache`] handles.
pub struct NearCache {
    entries: Mutex<Copies>,
    /// Bytes of values held in `entries`.
    bytes: AtomicU64,
    /// Bumped by every invalidation: a read that raced one does not keep its copy.
    invalidations: AtomicU64,
    /// The store's push is connected: copies may live up to [`PUSHED_MAX_AGE`].
    pushed: AtomicBool,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for NearCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NearCache")
            .field("pushed", &self.pushed.load(Ordering::Relaxed))
            .field("hits", &self.hits.load(Ordering::Relaxed))
            .field("misses", &self.misses.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl NearCache {
    /// A near cache for `cluster`, listening to the store's pushed changes where it can.
    pub async fn start(store: &Arc<dyn Store>, cluster: &str) -> Arc<NearCache> {
        let near = Arc::new(NearCache {
            entries: Mutex::default(),
            bytes: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            pushed: AtomicBool::new(false),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        });
        if let Some(mut changes) = store.cache_changes(cluster).await {
            let weak = Arc::downgrade(&near);
            tokio::spawn(async move {
                use tokio::sync::broadcast::error::RecvError;
                let mut idle = tokio::time::interval(Duration::from_secs(5));
                loop {
                    let change = tokio::select! {
                        change = changes.recv() => change,
                        // The near cache is gone: stop (and let the store's push end).
                        _ = idle.tick() => match weak.upgrade() {
                            Some(_) => continue,
                            None => return,
                        },
                    };
                    let Some(near) = weak.upgrade() else { return };
                    match change {
                        // The push stopped: copies may go stale unseen, so keep none long.
                        Ok(c) if c == CacheChange::lost() => {
                            near.pushed.store(false, Ordering::SeqCst);
                            near.clear();
                        }
                        // The push is (re)connected: anything may have changed meanwhile.
                        Ok(c) if c.cache.is_empty() => {
                            near.clear();
                            near.pushed.store(true, Ordering::SeqCst);
                        }
                        Ok(c) => near.invalidate(&c.cache, &c.key),
                        Err(RecvError::Lagged(_)) => near.clear(),
                        Err(RecvError::Closed) => {
                            near.pushed.store(false, Ordering::SeqCst);
                            near.clear();
                            return;
                        }
                    }
                }
            });
        }
        near
    }

    fn max_age(&self) -> Duration {
        if self.pushed.load(Ordering::SeqCst) {
            PUSHED_MAX_AGE
        } else {
            POLLED_MAX_AGE
        }
    }

    fn lookup(&self, cache: &str, key: &str) -> Option<Option<CacheEntry>> {
        let entries = self.entries.lock().unwrap();
        let (entry, at) = entries.get(&(cache.to_string(), key.to_string()))?;
        // Expiry is not pushed, and this node's clock is not store time: a copy of an entry
        // with a TTL lives no longer than where nothing is pushed.
        let max_age = match entry {
            Some(e) if e.expires_at_ms.is_some() => POLLED_MAX_AGE,
            _ => self.max_age(),
        };
        (at.elapsed() < max_age).then(|| entry.clone())
    }

    fn keep(&self, cache: &str, key: &str, entry: Option<CacheEntry>, seen: u64) {
        let mut entries = self.entries.lock().unwrap();
        if self.invalidations.load(Ordering::SeqCst) != seen {
            return; // changed while it was read: the copy may be stale already
        }
        // Keep memory bounded: forget everything rather than track use.
        let size = entry.as_ref().map_or(0, |e| e.value.len()) as u64;
        if entries.len() >= 100_000
            || self.bytes.load(Ordering::SeqCst) + size > NEAR_CACHE_BYTES as u64
        {
            entries.clear();
            self.bytes.store(0, Ordering::SeqCst);
        }
        self.bytes.fetch_add(size, Ordering::SeqCst);
        let old = entries.insert(
            (cache.to_string(), key.to_string()),
            (entry, Instant::now()),
        );
        self.forget_bytes(old.as_ref().map(|(e, _)| e));
    }

    /// Under the `entries` lock: `old` is no longer held.
    fn forget_bytes(&self, old: Option<&Option<CacheEntry>>) {
        if let Some(Some(e)) = old {
            self.bytes.fetch_sub(e.value.len() as u64, Ordering::SeqCst);
        }
    }

    fn invalidate(&self, cache: &str, key: &str) {
        let mut entries = self.entries.lock().unwrap();
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        let old = entries.remove(&(cache.to_string(), key.to_string()));
        self.forget_bytes(old.as_ref().map(|(e, _)| e));
    }

    fn clear(&self) {
        let mut entries = self.entries.lock().unwrap();
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        entries.clear();
        self.bytes.store(0, Ordering::SeqCst);
    }

    /// Reads served from copies, and reads that went to the store.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// The store pushes changes to this near cache now.
    pub fn is_pushed(&self) -> bool {
        self.pushed.load(Ordering::SeqCst)
    }
}

/// A named cache of the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    store: Arc<dyn Store>,
    cluster: String,
    name: String,
    near: Arc<NearCache>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("cluster", &self.cluster)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// The cache `name` of `cluster`, with `near` as this node's copies.
    pub fn new(
        store: Arc<dyn Store>,
        cluster: &str,
        name: &str,
        near: Arc<NearCache>,
    ) -> Result<Cache> {
        validate_cache_name(name)?;
        if name.starts_with(RESERVED_PREFIX) {
            return Err(Error::config(
                "cache",
                format!("`{name}` is reserved for rota; a task reaches its own state with `ctx.state()`"),
            ));
        }
        Ok(Cache {
            store,
            cluster: cluster.to_string(),
            name: name.to_string(),
            near,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The store pushes changes to this node's near cache now (copies are dropped at once,
    /// not after [`POLLED_MAX_AGE`]).
    pub fn is_pushed(&self) -> bool {
        self.near.is_pushed()
    }

    /// The entry of `key` now, from the store (linearizable).
    pub async fn get(&self, key: &str) -> Result<Option<CacheEntry>> {
        validate_key(key)?;
        let seen = self.near.invalidations.load(Ordering::SeqCst);
        let entry = self.store.cache_get(&self.cluster, &self.name, key).await?;
        self.near.keep(&self.name, key, entry.clone(), seen);
        Ok(entry)
    }

    /// The entry of `key` from this node's near cache when it has a fresh copy, else from
    /// the store (see the module's documentation for how fresh).
    pub async fn get_cached(&self, key: &str) -> Result<Option<CacheEntry>> {
        validate_key(key)?;
        if let Some(entry) = self.near.lookup(&self.name, key) {
            self.near.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(entry);
        }
        self.near.misses.fetch_add(1, Ordering::Relaxed);
        self.get(key).await
    }

    /// Writes `value` under `key`; its new version.
    pub async fn put(&self, key: &str, value: impl AsRef<[u8]>) -> Result<i64> {
        self.write_any(key, value.as_ref(), None).await
    }

    /// Writes `value` under `key`, to expire `ttl` later (store time); its new version.
    pub async fn put_with_ttl(
        &self,
        key: &str,
        value: impl AsRef<[u8]>,
        ttl: Duration,
    ) -> Result<i64> {
        self.write_any(key, value.as_ref(), Some(ttl)).await
    }

    /// An unconditional write: its new version.
    async fn write_any(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<i64> {
        match self.write(key, value, ttl, Expect::Any).await? {
            CacheOutcome::Done { version } => Ok(version),
            CacheOutcome::Conflict { current } => Err(Error::Store(format!(
                "cache `{}`, key `{key}`: an unconditional write was refused (version {current:?})",
                self.name
            ))),
        }
    }

    /// Writes `value` only if the live entry is at version `expected` (`None`: only if there
    /// is no live entry). A conflict changes nothing and says the current version.
    pub async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<i64>,
        value: impl AsRef<[u8]>,
        ttl: Option<Duration>,
    ) -> Result<CacheOutcome> {
        let expect = expected.map_or(Expect::Absent, Expect::Version);
        self.write(key, value.as_ref(), ttl, expect).await
    }

    /// Deletes `key`; whether a live entry was there.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        validate_key(key)?;
        let outcome = self
            .store
            .cache_delete(&self.cluster, &self.name, key, Expect::Any)
            .await;
        self.near.invalidate(&self.name, key);
        Ok(matches!(outcome?, CacheOutcome::Done { version } if version > 0))
    }

    /// Deletes `key` only if its live entry is at version `expected`.
    pub async fn delete_if(&self, key: &str, expected: i64) -> Result<CacheOutcome> {
        validate_key(key)?;
        let outcome = self
            .store
            .cache_delete(&self.cluster, &self.name, key, Expect::Version(expected))
            .await;
        self.near.invalidate(&self.name, key);
        outcome
    }

    /// Live keys starting with `prefix`, in order, at most `limit`.
    pub async fn keys(&self, prefix: &str, limit: usize) -> Result<Vec<String>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.store
            .cache_keys(&self.cluster, &self.name, prefix, limit)
            .await
    }

    /// The value of `key` as JSON, with its version.
    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, i64)>> {
        match self.get(key).await? {
            None => Ok(None),
            Some(e) => {
                let value = serde_json::from_slice(&e.value).map_err(|err| {
                    Error::config(
                        "value",
                        format!(
                            "cache `{}`, key `{key}`: not the JSON expected: {err}",
                            self.name
                        ),
                    )
                })?;
                Ok(Some((value, e.version)))
            }
        }
    }

    /// Writes `value` as JSON; its new version.
    pub async fn put_json<T: Serialize>(&self, key: &str, value: &T) -> Result<i64> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| Error::config("value", format!("cannot be written as JSON: {e}")))?;
        self.put(key, bytes).await
    }

    async fn write(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        expect: Expect,
    ) -> Result<CacheOutcome> {
        validate_key(key)?;
        validate_value(value)?;
        let ttl_ms = ttl.map(ttl_ms).transpose()?;
        let write = CacheWrite {
            cache: &self.name,
            key,
            value,
            ttl_ms,
            expect,
        };
        let outcome = self.store.cache_put(&self.cluster, &write).await;
        // Read-your-writes: the next read here goes to the store (or the push's copy).
        self.near.invalidate(&self.name, key);
        outcome
    }
}

/// A task's (or service's) own state in the store, under [`crate::store::TASK_STATE_CACHE`]:
/// any owner reads the last state saved, and only the current owner saves, fenced by its
/// token. Reach it through [`crate::task::FireContext`] or [`crate::service::ServiceContext`].
#[derive(Clone)]
pub struct TaskState {
    store: Arc<dyn Store>,
    cluster: String,
    task: String,
    token: i64,
}

impl std::fmt::Debug for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskState")
            .field("task", &self.task)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl TaskState {
    pub(crate) fn new(store: Arc<dyn Store>, cluster: &str, task: &str, token: i64) -> TaskState {
        TaskState {
            store,
            cluster: cluster.to_string(),
            task: task.to_string(),
            token,
        }
    }

    /// The last state saved by any owner of the task, from the store.
    pub async fn load(&self) -> Result<Option<Vec<u8>>> {
        let entry = self
            .store
            .cache_get(&self.cluster, crate::store::TASK_STATE_CACHE, &self.task)
            .await?;
        Ok(entry.map(|e| e.value))
    }

    /// Saves `value` if this owner's token is still the task's: [`Error::Fenced`] if the
    /// task has moved on (nothing is written).
    pub async fn save(&self, value: impl AsRef<[u8]>) -> Result<()> {
        validate_value(value.as_ref())?;
        let saved = self
            .store
            .save_task_state(&self.cluster, &self.task, self.token, value.as_ref())
            .await?;
        if saved {
            Ok(())
        } else {
            Err(Error::Fenced {
                task: self.task.clone(),
                token: self.token,
            })
        }
    }

    /// [`TaskState::load`], as JSON.
    pub async fn load_json<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        match self.load().await? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::config(
                    "state",
                    format!(
                        "the saved state of `{}` is not the JSON expected: {e}",
                        self.task
                    ),
                )
            }),
        }
    }

    /// [`TaskState::save`], as JSON.
    pub async fn save_json<T: Serialize>(&self, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| Error::config("state", format!("cannot be written as JSON: {e}")))?;
        self.save(bytes).await
    }
}
