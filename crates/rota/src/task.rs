//! What a task is: its name, schedule, policies and the handler that runs one fire.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use rota_core::{placement::PlacementSpec, schedule::Schedule};

pub use rota_core::outcome::{MisfirePolicy, Outcome, OverlapPolicy, RecoveryPolicy, RetryPolicy};

/// Everything a handler learns about the fire it runs.
#[derive(Debug, Clone)]
pub struct FireContext {
    pub cluster: String,
    pub task: String,
    pub node: String,
    /// The scheduled instant, Unix milliseconds (store time).
    pub instant_ms: i64,
    /// The fencing token under which this fire was claimed.
    pub token: i64,
    /// 1 for the first start of this instant, 2 for a retry after its node died mid-run, ...
    pub attempt: i64,
    /// Cancelled when the fire must stop: timeout, lost lease, or forced shutdown.
    pub cancel: CancellationToken,
    /// The task's own state ([`FireContext::state`]); `None` only in contexts made by hand.
    pub(crate) state: Option<crate::cache::TaskState>,
    /// A run-now fire's request (`rota ctl run`): its id, who asked, the environment it adds.
    /// `None` for a scheduled instant.
    pub manual: Option<rota_core::control::ManualRun>,
    /// Where the work's output is kept ([`FireContext::output`]); `None` when the task keeps
    /// none (`output_limit` 0) or in contexts made by hand.
    pub(crate) output: Option<crate::output::OutputRecorder>,
}

impl FireContext {
    /// The task's own state: read what the last owner saved, save under this fire's token.
    /// A save after the task moved to another node fails with [`crate::error::Error::Fenced`].
    pub fn state(&self) -> crate::error::Result<&crate::cache::TaskState> {
        self.state.as_ref().ok_or_else(|| {
            crate::error::Error::config(
                "state",
                "this context has no store (made by hand, not by a node)",
            )
        })
    }

    /// Where the work's output goes: what a handler appends there is kept with the fire
    /// (the tail, up to the task's `output_limit` per stream) and shown by `rota ctl logs`
    /// and the dashboard. A command's stdout and stderr go there by themselves.
    pub fn output(&self) -> Option<&crate::output::OutputRecorder> {
        self.output.as_ref()
    }
}

/// The error a handler returns; its text is kept in the fire's history.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TaskError(pub String);

impl TaskError {
    pub fn new(message: impl Into<String>) -> Self {
        TaskError(message.into())
    }
}

pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), TaskError>> + Send>>;

/// Runs one fire. Implemented for every `Fn(FireContext) -> impl Future<Output = Result<(), TaskError>>`.
pub trait Handler: Send + Sync + 'static {
    fn run(&self, ctx: FireContext) -> HandlerFuture;

    /// Whether the work runs inside this process (a closure, a request), not in a child
    /// process. A node whose lease runs out while in-process work of it is still alive
    /// ends itself, since nothing else could stop that work (contract 12).
    fn in_process(&self) -> bool {
        true
    }
}

impl<F, Fut> Handler for F
where
    F: Fn(FireContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
{
    fn run(&self, ctx: FireContext) -> HandlerFuture {
        Box::pin(self(ctx))
    }
}

/// A coordinated task as a node declares it.
#[derive(Clone)]
pub struct TaskSpec {
    pub name: String,
    pub schedule: Schedule,
    pub misfire: MisfirePolicy,
    /// A fire later than this is a misfire and follows `misfire`.
    pub misfire_threshold: Duration,
    pub recovery: RecoveryPolicy,
    /// What an instant does while the previous run goes on (default: `queue`).
    pub overlap: OverlapPolicy,
    /// Runs a failed or timed-out fire again (default: never).
    pub retry: Option<RetryPolicy>,
    /// Bytes of each output stream kept per fire, the tail (default 64 KiB; 0: none).
    pub output_limit: usize,
    /// A dead man's switch: an alert (`task_overdue`) when no fire ended ok for this long.
    pub expect_success_within: Option<Duration>,
    /// A fire running longer is cancelled and recorded as timed out.
    pub timeout: Option<Duration>,
    /// Describes the work (for example the command line) so that two nodes declaring one name
    /// with different definitions can be told apart. Part of the definition hash.
    pub description: String,
    /// Where the task may run and how its node is chosen (default: active-passive). Part of
    /// the definition hash: nodes declaring different specs for one task conflict.
    pub placement: PlacementSpec,
    pub handler: Arc<dyn Handler>,
}

impl std::fmt::Debug for TaskSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskSpec")
            .field("name", &self.name)
            .field("schedule", &self.schedule)
            .field("misfire", &self.misfire)
            .field("recovery", &self.recovery)
            .field("overlap", &self.overlap)
            .field("retry", &self.retry)
            .field("placement", &self.placement)
            .finish_non_exhaustive()
    }
}

impl TaskSpec {
    pub const DEFAULT_MISFIRE_THRESHOLD: Duration = Duration::from_secs(5);

    /// A task with default policies: misfire `run-once` past 5 s, recovery `abandon`
    /// (at most once), no timeout.
    pub fn new(name: impl Into<String>, schedule: Schedule, handler: impl Handler) -> Self {
        TaskSpec {
            name: name.into(),
            schedule,
            misfire: MisfirePolicy::RunOnce,
            misfire_threshold: Self::DEFAULT_MISFIRE_THRESHOLD,
            recovery: RecoveryPolicy::default(),
            overlap: OverlapPolicy::default(),
            retry: None,
            output_limit: crate::output::DEFAULT_OUTPUT_LIMIT,
            expect_success_within: None,
            timeout: None,
            description: String::new(),
            placement: PlacementSpec::default(),
            handler: Arc::new(handler),
        }
    }

    pub fn misfire(mut self, policy: MisfirePolicy, threshold: Duration) -> Self {
        self.misfire = policy;
        self.misfire_threshold = threshold;
        self
    }

    pub fn recovery(mut self, policy: RecoveryPolicy) -> Self {
        self.recovery = policy;
        self
    }

    pub fn overlap(mut self, policy: OverlapPolicy) -> Self {
        self.overlap = policy;
        self
    }

    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Bytes of each output stream kept per fire (at most [`crate::output::MAX_OUTPUT_LIMIT`]).
    pub fn output_limit(mut self, bytes: usize) -> Self {
        self.output_limit = bytes.min(crate::output::MAX_OUTPUT_LIMIT);
        self
    }

    /// Alerts (`task_overdue`) when no fire of the task ended ok for this long.
    pub fn expect_success_within(mut self, within: Duration) -> Self {
        self.expect_success_within = Some(within);
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Where the task may run and how its node is chosen. See [`PlacementSpec`].
    pub fn placement(mut self, spec: PlacementSpec) -> Self {
        self.placement = spec;
        self
    }

    /// Stable digest of everything that defines the task (not the handler's code), used to
    /// detect two nodes declaring one name differently.
    pub fn definition_hash(&self) -> String {
        let mut text = format!(
            "{}|{}|{:?}|{}|{:?}|{:?}|{}",
            self.name,
            self.schedule.describe(),
            self.misfire,
            self.misfire_threshold.as_millis(),
            self.recovery,
            self.timeout.map(|t| t.as_millis()),
            self.description
        );
        // Only a non-default spec is part of the text, so that tasks without one keep the
        // hash they had before placement specs existed (no conflict in a rolling upgrade).
        if !self.placement.is_default() {
            text.push_str("|placement=");
            text.push_str(&self.placement.canonical());
        }
        // Likewise only when set: the hash of a task without them is unchanged.
        if self.overlap != OverlapPolicy::default() {
            text.push_str("|overlap=");
            text.push_str(self.overlap.as_str());
        }
        if let Some(r) = &self.retry {
            text.push_str(&format!(
                "|retry={}/{}/{}",
                r.max,
                r.backoff.as_millis(),
                r.max_backoff.as_millis()
            ));
        }
        definition_digest(&text)
    }
}

/// The digest of a definition's canonical text (tasks and services).
pub(crate) fn definition_digest(text: &str) -> String {
    format!("{:016x}", rota_core::names::stable_hash(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TaskSpec {
        TaskSpec::new(
            "t",
            Schedule::every(Duration::from_secs(5)).unwrap(),
            |_ctx: FireContext| async { Ok(()) },
        )
    }

    #[test]
    fn placement_is_part_of_the_definition_only_when_set() {
        let plain = spec();
        assert_eq!(
            plain.definition_hash(),
            spec().placement(PlacementSpec::default()).definition_hash(),
            "the default spec leaves the hash as it was"
        );
        let rr2 = spec().placement(PlacementSpec::round_robin(2));
        let rr3 = spec().placement(PlacementSpec::round_robin(3));
        assert_ne!(plain.definition_hash(), rr2.definition_hash());
        assert_ne!(rr2.definition_hash(), rr3.definition_hash());
        assert_eq!(
            rr2.definition_hash(),
            spec()
                .placement(PlacementSpec::round_robin(2))
                .definition_hash()
        );
        let eu = spec().placement(PlacementSpec::round_robin(2).on_label("zone", "eu"));
        assert_ne!(rr2.definition_hash(), eu.definition_hash());
    }
}
