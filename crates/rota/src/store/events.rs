//! The event journal.

use crate::error::Result;
use async_trait::async_trait;

/// One entry of the cluster's event journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// Unique, and ordered like time: see [`EventRecord::new`].
    pub id: String,
    pub at_ms: i64,
    /// `node_joined`, `node_left`, `node_died`, `failover`, `leader_changed`, `fire_retry`.
    pub kind: String,
    /// The event's fields as a JSON object (opaque to the store).
    pub body: String,
}

/// The cluster's event journal: joins, leaves, deaths, failovers, leader changes.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Records an event of the cluster's journal (joins, leaves, deaths, failovers, leader
    /// changes). Idempotent per `event.id`: recording an id that is present changes nothing,
    /// so several nodes may report the same fact. Durable when this returns. Events older
    /// than the history retention are deleted by [`HistoryStore::purge_history`](crate::store::HistoryStore::purge_history).
    async fn record_event(&self, cluster: &str, event: &EventRecord) -> Result<()>;

    /// The newest events, newest first (by id, which starts with the time), at most `limit`.
    async fn events(&self, cluster: &str, limit: i64) -> Result<Vec<EventRecord>>;
}

impl EventRecord {
    /// An event about `subject` (a node and incarnation, an epoch) at `at_ms`. The id is
    /// `<at_ms, 13 digits>-<kind>-<subject>`: the same fact reported twice has the same id,
    /// and ids sort by time.
    pub fn new(at_ms: i64, kind: &str, subject: &str, body: &serde_json::Value) -> EventRecord {
        EventRecord {
            id: format!("{:013}-{kind}-{subject}", at_ms.max(0)),
            at_ms,
            kind: kind.to_string(),
            body: body.to_string(),
        }
    }
}
