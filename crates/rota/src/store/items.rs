//! Items: the units of a service's work, claimed and finished like fires.

use super::{fires::ClaimOutcome, membership::Member};
use crate::error::Result;
use async_trait::async_trait;
use rota_core::outcome::Outcome;

/// A unit of a service's work (a file, a message) as recorded in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRecord {
    pub node: String,
    pub incarnation: i64,
    pub token: i64,
    pub attempt: i64,
    pub outcome: Outcome,
    /// The node that recorded it is still alive (by store time).
    pub node_alive: bool,
}

/// Answer to [`ItemStore::claim_item`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemClaim {
    /// Recorded as running, attempt 1, under the caller's token.
    Claimed,
    /// The item already has a record: handled, being handled, or left by a dead node.
    Recorded(ItemRecord),
    /// The token is not the service's current one, or the claimant's registration is dead.
    Fenced,
}

/// How the handling of an item ended (see [`ItemStore::finish_item`]).
#[derive(Debug, Clone)]
pub struct ItemEnd<'a> {
    pub service: &'a str,
    pub item: &'a str,
    pub token: i64,
    pub attempt: i64,
    pub outcome: Outcome,
    pub message: Option<&'a str>,
}

/// The units of a long-running service's work (a file, a message), claimed once each under
/// the service's fence, like fires.
#[async_trait]
pub trait ItemStore: Send + Sync {
    /// Claims a unit of a long-running service's work (`item`: at most 255 bytes) in one
    /// write, fenced like [`FireStore::claim`](crate::store::FireStore::claim) by the service's assignment: accepted only under
    /// the current token of a live owner, and only if the item has no record yet. A
    /// recorded item is never claimed again; its record is returned instead.
    async fn claim_item(
        &self,
        member: &Member,
        service: &str,
        token: i64,
        item: &str,
    ) -> Result<ItemClaim>;

    /// Takes over an item recorded as running by a dead node (or by the caller's own
    /// incarnation, which lost track of it), fenced like `claim_item`: with `retry` it is
    /// handled again under the new token (attempt + 1) and `Claimed` is returned; else it is
    /// recorded as abandoned. An item recorded as released (given back at a handover) is
    /// always handled again. Only one caller can take over a given attempt.
    async fn recover_item(
        &self,
        member: &Member,
        service: &str,
        token: i64,
        item: &str,
        record: &ItemRecord,
        retry: bool,
    ) -> Result<ClaimOutcome>;

    /// Records how the handling of an item ended. Only the row with this token and attempt
    /// changes, and only while it is running.
    async fn finish_item(&self, cluster: &str, ended: &ItemEnd<'_>) -> Result<()>;
}
