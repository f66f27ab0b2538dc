//! Long-running services: work that runs continuously on one node (a polling inbound
//! endpoint, a message consumer, a file listener) rather than at scheduled instants.
//!
//! A service is placed like a task (same resolvers, same fencing tokens). Its owner runs the
//! handler until the service moves, the lease is lost or the node stops; then the handler's
//! `cancel` fires and it has `grace` to return before it is dropped. A handler that returns
//! (or fails) while its node still owns the service is started again after a backoff.
//!
//! Each unit of work (a file, a message) can be made exactly-once across failovers with
//! [`ServiceContext::begin_item`] / [`ServiceContext::end_item`]: the item is claimed in the
//! store under the service's token, so a node that lost the service cannot take it, and an
//! item is never handed out twice, except once more after its node died mid-handling when
//! the service's recovery policy is `retry` (the default, `abandon`, records such an item as
//! abandoned).

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::{
    error::Result,
    task::{Outcome, RecoveryPolicy, TaskError},
};
use rota_core::placement::PlacementSpec;

/// The longest item key the stores accept (bytes).
pub const MAX_ITEM_KEY: usize = 255;

pub type ServiceFuture = Pin<Box<dyn Future<Output = std::result::Result<(), TaskError>> + Send>>;

/// Runs a service until `ctx.cancel` fires. Returning early (or failing) while the node still
/// owns the service means "restart me after the backoff". Implemented for every
/// `Fn(ServiceContext) -> impl Future<Output = Result<(), TaskError>>`.
pub trait ServiceHandler: Send + Sync + 'static {
    fn run(&self, ctx: ServiceContext) -> ServiceFuture;

    /// Whether the work runs inside this process, not in child processes: see
    /// [`crate::task::Handler::in_process`].
    fn in_process(&self) -> bool {
        true
    }
}

impl<F, Fut> ServiceHandler for F
where
    F: Fn(ServiceContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<(), TaskError>> + Send + 'static,
{
    fn run(&self, ctx: ServiceContext) -> ServiceFuture {
        Box::pin(self(ctx))
    }
}

/// A coordinated long-running service as a node declares it.
#[derive(Clone)]
pub struct ServiceSpec {
    pub name: String,
    /// Describes the work, like [`crate::task::TaskSpec::description`]. Part of the definition hash.
    pub description: String,
    pub placement: PlacementSpec,
    /// After `cancel` fires (moved, lease lost, node stopping), how long the handler may take
    /// to return before it is dropped. The next owner starts only once this one has ended.
    pub grace: Duration,
    /// First delay before restarting a handler that returned or failed; doubles up to
    /// `restart_backoff_max`, and starts over after a run that lasted a minute.
    pub restart_backoff: Duration,
    pub restart_backoff_max: Duration,
    /// An item whose node died while handling it: handled again (`retry`) or recorded as
    /// abandoned.
    pub recovery: RecoveryPolicy,
    pub handler: Arc<dyn ServiceHandler>,
}

impl std::fmt::Debug for ServiceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceSpec")
            .field("name", &self.name)
            .field("description", &self.description)
            .field("placement", &self.placement)
            .field("grace", &self.grace)
            .field("recovery", &self.recovery)
            .finish_non_exhaustive()
    }
}

impl ServiceSpec {
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
    pub const DEFAULT_RESTART_BACKOFF: Duration = Duration::from_secs(1);
    pub const DEFAULT_RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);

    /// A service with default policies: 10 s grace, restarts after 1 s doubling to 60 s,
    /// recovery `abandon` (at most once).
    pub fn new(name: impl Into<String>, handler: impl ServiceHandler) -> Self {
        ServiceSpec {
            name: name.into(),
            description: String::new(),
            placement: PlacementSpec::default(),
            grace: Self::DEFAULT_GRACE,
            restart_backoff: Self::DEFAULT_RESTART_BACKOFF,
            restart_backoff_max: Self::DEFAULT_RESTART_BACKOFF_MAX,
            recovery: RecoveryPolicy::default(),
            handler: Arc::new(handler),
        }
    }

    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    pub fn placement(mut self, spec: PlacementSpec) -> Self {
        self.placement = spec;
        self
    }

    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    pub fn restart_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.restart_backoff = first;
        self.restart_backoff_max = max.max(first);
        self
    }

    pub fn recovery(mut self, policy: RecoveryPolicy) -> Self {
        self.recovery = policy;
        self
    }

    /// The delay before restart number `restarts` (1 for the first restart).
    pub fn backoff(&self, restarts: u32) -> Duration {
        let factor = 2u32.saturating_pow(restarts.saturating_sub(1).min(20));
        self.restart_backoff
            .saturating_mul(factor)
            .min(self.restart_backoff_max)
    }

    /// Stable digest of the definition (see [`crate::task::TaskSpec::definition_hash`]).
    pub fn definition_hash(&self) -> String {
        let mut text = format!(
            "service|{}|{:?}|{}",
            self.name, self.recovery, self.description
        );
        if !self.placement.is_default() {
            text.push_str("|placement=");
            text.push_str(&self.placement.canonical());
        }
        crate::task::definition_digest(&text)
    }
}

/// What [`ServiceContext::begin_item`] decided about an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemStart {
    /// Handle it now, then call [`ServiceContext::end_item`] with this attempt. Attempt 2 or
    /// more: a node died while handling it before (recovery `retry`).
    Handle { attempt: i64 },
    /// It was handled already, with this outcome: do not handle it again (finish moving it
    /// out of the way if that step was interrupted).
    Done(Outcome),
    /// Its node died while handling it and the recovery policy is `abandon`: it is recorded
    /// as abandoned; set it aside without handling it.
    Abandoned,
    /// Another live node handles it right now (a previous owner finishing within its grace
    /// period): leave it and look again later.
    Busy,
    /// This node no longer owns the service: stop working.
    NotOwner,
}

/// The ownership checks a service's context delegates to its node.
#[async_trait]
pub(crate) trait Ownership: Send + Sync {
    fn still_owner(&self) -> bool;
    async fn begin_item(&self, item: &str) -> Result<ItemStart>;
    async fn end_item(
        &self,
        item: &str,
        attempt: i64,
        outcome: Outcome,
        message: Option<&str>,
    ) -> Result<()>;
    /// Records an interrupted item as released or abandoned: see
    /// [`ServiceContext::release_item`].
    async fn give_back(&self, item: &str, attempt: i64) -> Result<bool>;
}

/// Everything a service handler learns about its run, and its ownership checks.
#[derive(Clone)]
pub struct ServiceContext {
    pub cluster: String,
    pub service: String,
    pub node: String,
    /// The fencing token under which this node owns the service.
    pub token: i64,
    /// How many times the handler was restarted under this token.
    pub restarts: u32,
    /// The spec's grace period: how long the handler has to return once `cancel` fires.
    pub grace: Duration,
    /// Fires when the handler must stop: the service moved, the lease was lost, or the node
    /// is stopping. The handler then has the spec's `grace` to return.
    pub cancel: CancellationToken,
    pub(crate) ownership: Arc<dyn Ownership>,
    pub(crate) state: crate::cache::TaskState,
}

impl std::fmt::Debug for ServiceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceContext")
            .field("cluster", &self.cluster)
            .field("service", &self.service)
            .field("node", &self.node)
            .field("token", &self.token)
            .field("restarts", &self.restarts)
            .finish_non_exhaustive()
    }
}

impl ServiceContext {
    /// The service's own state: read what the last owner saved (a cursor, the last item
    /// handled), save under this owner's token. A save after the service moved to another
    /// node fails with [`crate::error::Error::Fenced`].
    pub fn state(&self) -> &crate::cache::TaskState {
        &self.state
    }

    /// Does this node still own the service under `token`, with a valid lease? A local check
    /// (no store round trip), cheap enough to call before every unit of work. For work
    /// that must never be done twice, claim it with [`ServiceContext::begin_item`], which the
    /// store itself fences.
    pub fn still_owner(&self) -> bool {
        !self.cancel.is_cancelled() && self.ownership.still_owner()
    }

    /// Claims `item` (at most [`MAX_ITEM_KEY`] bytes) for handling, fenced by the store: see
    /// [`ItemStart`]. Store errors are retryable: leave the item and try again later.
    pub async fn begin_item(&self, item: &str) -> Result<ItemStart> {
        if item.is_empty() || item.len() > MAX_ITEM_KEY {
            return Err(crate::error::Error::config(
                "item",
                format!(
                    "an item key has 1 to {MAX_ITEM_KEY} bytes; `{}` has {}",
                    item.chars().take(40).collect::<String>(),
                    item.len()
                ),
            ));
        }
        if !self.still_owner() {
            return Ok(ItemStart::NotOwner);
        }
        self.ownership.begin_item(item).await
    }

    /// Records how the handling of `item` (begun as `attempt`) ended: `Ok(())` as ok, an
    /// error as failed with its text.
    pub async fn end_item(
        &self,
        item: &str,
        attempt: i64,
        result: &std::result::Result<(), TaskError>,
    ) -> Result<()> {
        let (outcome, message) = match result {
            Ok(()) => (Outcome::Ok, None),
            Err(e) => (Outcome::Failed, Some(e.0.as_str())),
        };
        self.ownership
            .end_item(item, attempt, outcome, message)
            .await
    }

    /// Gives `item` (begun as `attempt`) back after its handling was interrupted because
    /// `cancel` fired. After a graceful handover (the service moves, drains, pauses or stops
    /// while this node holds its lease) it is recorded as released, and the service's next
    /// owner handles it again as the next attempt: `Ok(true)`. If this node lost its lease
    /// (the handler was cut short as by a crash), the recovery policy settles it here: under
    /// `retry` it is released as well (`Ok(true)`), under `abandon` (the default) it is
    /// recorded as abandoned and never handled again: `Ok(false)`.
    pub async fn release_item(&self, item: &str, attempt: i64) -> Result<bool> {
        self.ownership.give_back(item, attempt).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServiceSpec {
        ServiceSpec::new("s", |_ctx: ServiceContext| async { Ok(()) })
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let s = spec().restart_backoff(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<u128> = (1..=6).map(|n| s.backoff(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(s.backoff(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn definition_hash_covers_what_defines_the_service() {
        let a = spec().description("cmd a");
        assert_eq!(
            a.definition_hash(),
            spec().description("cmd a").definition_hash()
        );
        assert_ne!(
            a.definition_hash(),
            spec().description("cmd b").definition_hash()
        );
        assert_ne!(
            a.definition_hash(),
            spec()
                .description("cmd a")
                .recovery(RecoveryPolicy::Retry)
                .definition_hash()
        );
        assert_ne!(
            a.definition_hash(),
            spec()
                .description("cmd a")
                .placement(PlacementSpec::round_robin(2))
                .definition_hash()
        );
        // Grace and backoff are local tuning, not part of the definition.
        assert_eq!(
            a.definition_hash(),
            spec()
                .description("cmd a")
                .grace(Duration::from_secs(1))
                .definition_hash()
        );
    }
}
