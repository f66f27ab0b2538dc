//! The history: what ran, and how long it is kept.

use super::fires::FireRecord;
use crate::error::Result;
use async_trait::async_trait;

/// The record of what ran: recent fires, and the purge of records older than the retention.
#[async_trait]
pub trait HistoryStore: Send + Sync {
    /// Recent fires, newest first, of one task or all.
    async fn history(
        &self,
        cluster: &str,
        task: Option<&str>,
        limit: i64,
    ) -> Result<Vec<FireRecord>>;

    /// The record of one fire of `task`: the scheduled instant or run-now key `instant_ms`
    /// (not a service's item). `None` if it has none (not claimed yet, or purged).
    async fn fire(&self, cluster: &str, task: &str, instant_ms: i64) -> Result<Option<FireRecord>>;

    /// Deletes finished fires with instants before `before_ms` (keeping each task's newest),
    /// item records finished before it, events before it, and declared sets that no
    /// registration names, last used before it. Returns the number of fires and items
    /// deleted.
    async fn purge_history(&self, cluster: &str, before_ms: i64) -> Result<u64>;
}
