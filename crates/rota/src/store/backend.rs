//! What a backend is: the [`Store`] trait, which gathers the concern traits, and what it
//! counts.

use async_trait::async_trait;

use super::{
    cache::CacheStore, commands::CommandStore, events::EventStore, fires::FireStore,
    history::HistoryStore, items::ItemStore, membership::MembershipStore,
    placement::PlacementStore, session::SessionStore,
};
use crate::error::Result;

/// The coordination store: every concern's trait, and what the store is. Each method is one
/// short transaction (or one statement).
///
/// Errors: [`Error::StoreUnavailable`](crate::Error::StoreUnavailable) for anything a retry may fix (connection lost,
/// timeout, busy); other variants are not retryable.
#[async_trait]
pub trait Store:
    MembershipStore
    + PlacementStore
    + FireStore
    + HistoryStore
    + ItemStore
    + CommandStore
    + EventStore
    + CacheStore
    + SessionStore
    + Send
    + Sync
    + 'static
{
    /// Short name of the backend (`sqlite`, `postgres`, ...).
    fn kind(&self) -> &'static str;

    /// Statements sent so far by this store handle (for load measurements and metrics).
    fn statements(&self) -> StatementCounts {
        StatementCounts::default()
    }

    /// Creates or migrates the schema to this build's version when `migrate` is true;
    /// otherwise fails with [`Error::Schema`](crate::Error::Schema) unless the schema is present and current.
    async fn prepare(&self, migrate: bool) -> Result<()>;

    /// The store's clock, Unix ms.
    async fn now_ms(&self) -> Result<i64>;
}

/// Statements sent by one store handle since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatementCounts {
    pub reads: u64,
    pub writes: u64,
}
