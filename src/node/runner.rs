//! One owned task under one fencing token: computes its instants, claims each in the store,
//! runs the handler, records the outcome. Stops when the token is lost.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::runtime::Shared;
use crate::{
    core::{placement::ResolverSpec, schedule::plan_due},
    store::{Claim, ClaimOutcome, Finish, Member, RunningFire},
    task::{FireContext, Outcome, RecoveryPolicy, TaskSpec},
    Result,
};

/// Misfired instants listed one by one in history before they are only counted.
const MISFIRE_LIST_CAP: usize = 1000;

/// Where a new runner's schedule starts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Start {
    /// Store time of the task's first placement (see `Assignment::placed_at_ms`).
    pub placed_at: i64,
    /// Store time of the task's last resume command (0: never paused).
    pub resumed_at: i64,
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    spec: TaskSpec,
    token: i64,
    start: Start,
    stop: CancellationToken,
) {
    let member = shared.member();
    let span = tracing::info_span!("task", node = %member.node, task = %spec.name, token);
    async move {
        // The term this runner belongs to: its fires stop when that term ends (lost lease),
        // even if a later term has begun by the time they would start.
        let term = shared.work_token();
        let runner = Runner {
            shared,
            spec,
            token,
            member,
            stop,
            term,
            start,
            busy: Arc::new(AtomicBool::new(false)),
        };
        match runner.schedule().await {
            Ok(()) => debug!("runner stopped"),
            Err(e) => {
                warn!(error = %e, "runner stopped on a store error; it restarts shortly");
                // Do not spin against a failing store: the supervisor restarts it after this.
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    _ = runner.stop.cancelled() => {}
                }
            }
        }
    }
    .instrument(span)
    .await
}

struct Runner {
    shared: Arc<Shared>,
    spec: TaskSpec,
    token: i64,
    member: Member,
    stop: CancellationToken,
    term: CancellationToken,
    start: Start,
    /// A fire of this task runs on this node.
    busy: Arc<AtomicBool>,
}

impl Runner {
    async fn schedule(&self) -> Result<()> {
        let store = &self.shared.store;
        let cluster = &self.member.cluster;
        info!("owner now");
        // Taking over reads the store twice per task: after a failover of thousands of tasks,
        // queue these reads instead of exhausting the connection pool.
        let permit = self.shared.startups.acquire().await.expect("never closed");
        // Settle fires whose node died mid-run (contract 9).
        let running = store.running_fires(cluster, &self.spec.name).await?;
        let mut elsewhere = false;
        for fire in &running {
            let mine = fire.node == self.member.node && fire.incarnation == self.member.incarnation;
            let started_here = self
                .shared
                .running
                .lock()
                .unwrap()
                .contains(&(self.spec.name.clone(), fire.instant_ms));
            if !fire.node_alive || (mine && !started_here) {
                // Its node died mid-run, or this node claimed it but never learned so.
                self.recover(fire).await?;
            } else if !mine {
                elsewhere = true;
            }
        }
        // Resume after the last instant with a record; a task with none from its first
        // placement (its first owner may have died before recording anything).
        // A node's share of an `all` task starts afresh: while the node was away, the other
        // nodes ran theirs, so nothing was missed.
        let per_node = self.spec.placement.resolver == ResolverSpec::All;
        let cursor = match store.last_instant(cluster, &self.spec.name).await? {
            Some(last) if per_node => last.max(self.shared.clock.now_ms()),
            Some(last) => last,
            None if self.start.placed_at > 0 && !per_node => self.start.placed_at,
            None => self.shared.clock.now_ms(),
        };
        // Instants that passed while the task was paused are not made up.
        let mut cursor = cursor.max(self.start.resumed_at);
        drop(permit);
        loop {
            let Some(next) = self.spec.schedule.next_after(cursor) else {
                info!("the schedule has no more instants");
                self.stop.cancelled().await;
                return Ok(());
            };
            let wake = self.shared.clock.instant_of(next);
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.stop.cancelled() => return Ok(()),
            }
            let now = self.shared.clock.now_ms();
            if now < next {
                continue; // the clock was re-anchored backwards: sleep again
            }
            let plan = plan_due(
                &self.spec.schedule,
                cursor,
                now,
                self.spec.misfire_threshold,
                self.spec.misfire,
                MISFIRE_LIST_CAP,
            );
            if self.stop.is_cancelled() || !self.shared.lease_valid() {
                return Ok(());
            }
            if plan.misfired_total > 0 {
                let message = format!(
                    "misfired: {} instant(s) up to {} passed more than {} ms ago without a start (policy {:?})",
                    plan.misfired_total,
                    plan.misfired.last().copied().unwrap_or(plan.cursor),
                    self.spec.misfire_threshold.as_millis(),
                    self.spec.misfire
                );
                warn!(count = plan.misfired_total, "{message}");
                store
                    .record_misfires(
                        &self.member,
                        &self.spec.name,
                        self.token,
                        &plan.misfired,
                        &message,
                    )
                    .await?;
                self.shared
                    .metrics
                    .fires(&self.spec.name, Outcome::Misfired, plan.misfired_total);
            }
            for instant in plan.start {
                if elsewhere {
                    // A previous owner (leaving gracefully) may still run a fire of this task.
                    elsewhere = false;
                    for f in store.running_fires(cluster, &self.spec.name).await? {
                        let mine =
                            f.node == self.member.node && f.incarnation == self.member.incarnation;
                        if !f.node_alive {
                            self.recover(&f).await?; // it left or died before finishing
                        } else if !mine {
                            elsewhere = true;
                        }
                    }
                }
                if !self.claim_and_start(instant, elsewhere).await? {
                    return Ok(());
                }
            }
            cursor = plan.cursor;
        }
    }

    /// Claims `instant` and starts it, or records it as skipped if a previous run is still
    /// going. Returns `false` when fenced: the runner must stop.
    async fn claim_and_start(&self, instant: i64, busy_elsewhere: bool) -> Result<bool> {
        if !self.shared.lease_valid() {
            return Ok(false);
        }
        let skip = busy_elsewhere || self.busy.load(Ordering::SeqCst);
        let claim = Claim {
            member: self.member.clone(),
            task: self.spec.name.clone(),
            instant_ms: instant,
            token: self.token,
            outcome: if skip {
                Outcome::Skipped
            } else {
                Outcome::Running
            },
            message: skip.then(|| "skipped: the previous run was still going".to_string()),
        };
        match self.shared.batcher.claim(claim).await? {
            ClaimOutcome::Claimed if skip => {
                warn!(instant, "skipped: the previous run is still going");
                self.shared.metrics.fire(&self.spec.name, Outcome::Skipped);
                Ok(true)
            }
            ClaimOutcome::Claimed => {
                self.start(instant, 1);
                Ok(true)
            }
            ClaimOutcome::AlreadyClaimed => {
                debug!(instant, "already claimed");
                Ok(true)
            }
            ClaimOutcome::Fenced => {
                info!(instant, "claim refused: this token is no longer current");
                Ok(false)
            }
        }
    }

    async fn recover(&self, fire: &RunningFire) -> Result<()> {
        let retry = self.spec.recovery == RecoveryPolicy::Retry;
        let outcome = self
            .shared
            .store
            .recover_fire(&self.member, &self.spec.name, self.token, fire, retry)
            .await?;
        match (outcome, retry) {
            (ClaimOutcome::Claimed, true) => {
                warn!(instant = fire.instant_ms, dead_node = %fire.node, "re-running a fire whose node died mid-run");
                self.start(fire.instant_ms, fire.attempt + 1);
            }
            (ClaimOutcome::Claimed, false) => {
                warn!(instant = fire.instant_ms, dead_node = %fire.node, "abandoned a fire whose node died mid-run");
                self.shared
                    .metrics
                    .fire(&self.spec.name, Outcome::Abandoned);
            }
            _ => debug!(instant = fire.instant_ms, "another node settled this fire"),
        }
        Ok(())
    }

    /// Runs the handler of a claimed fire in the background and records its outcome.
    fn start(&self, instant: i64, attempt: i64) {
        // The claim may have taken long: if this runner's term ended meanwhile (lease lost,
        // perhaps regained since), the fire must not start. Its record stays `running`, and
        // the next owner re-runs or abandons it as the task's recovery policy says.
        // The lease itself too: after a freeze, the claim's reply can arrive before the fence
        // watchdog has woken up to end the term.
        if self.term.is_cancelled()
            || !self.shared.lease_valid()
            || self.shared.member().incarnation != self.member.incarnation
        {
            warn!(
                instant,
                "claimed, but the lease was lost meanwhile: not starting"
            );
            return;
        }
        let shared = self.shared.clone();
        let spec = self.spec.clone();
        let busy = self.busy.clone();
        busy.store(true, Ordering::SeqCst);
        let ctx = FireContext {
            cluster: self.member.cluster.clone(),
            task: spec.name.clone(),
            node: self.member.node.clone(),
            instant_ms: instant,
            token: self.token,
            attempt,
            cancel: self.term.child_token(),
            state: Some(crate::cache::TaskState::new(
                shared.store.clone(),
                &self.member.cluster,
                &spec.name,
                self.token,
            )),
        };
        let lateness = shared.clock.now_ms() - instant;
        info!(instant, attempt, lateness_ms = lateness, "fire started");
        shared.metrics.lateness(lateness);
        let key = (spec.name.clone(), instant);
        shared.running.lock().unwrap().insert(key.clone());
        let fires = shared.fires.clone();
        fires.spawn(
            async move {
                let began = Instant::now();
                let (outcome, message) = execute(&spec, ctx.clone()).await;
                busy.store(false, Ordering::SeqCst);
                shared.metrics.fire(&spec.name, outcome);
                let took = began.elapsed().as_millis() as u64;
                match outcome {
                    Outcome::Ok => info!(instant, took_ms = took, "fire ok"),
                    _ => warn!(instant, took_ms = took, outcome = %outcome, reason = message.as_deref().unwrap_or(""), "fire ended"),
                }
                let finish =
                    Finish { task: spec.name.clone(), instant_ms: instant, token: ctx.token, attempt, outcome, message };
                record_finish(&shared, &finish).await;
                shared.running.lock().unwrap().remove(&key);
            }
            .in_current_span(),
        );
    }
}

/// Runs the handler under the task's timeout and the fire's cancellation.
async fn execute(spec: &TaskSpec, ctx: FireContext) -> (Outcome, Option<String>) {
    let cancel = ctx.cancel.clone();
    let handler = spec.handler.run(ctx);
    tokio::pin!(handler);
    let timeout = async {
        match spec.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let ended_early = tokio::select! {
        result = &mut handler => return match result {
            Ok(()) => (Outcome::Ok, None),
            Err(e) if cancel.is_cancelled() => (Outcome::Failed, Some(format!("cancelled: {e}"))),
            Err(e) => (Outcome::Failed, Some(e.to_string())),
        },
        _ = timeout => Outcome::TimedOut,
        _ = cancel.cancelled() => Outcome::Failed,
    };
    // Ask the handler to stop, and give it a moment to do so before dropping it.
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), &mut handler).await;
    let message = match ended_early {
        Outcome::TimedOut => format!(
            "timed out after {} ms",
            spec.timeout.unwrap_or_default().as_millis()
        ),
        _ => "cancelled: the node lost its lease or was forced to stop".to_string(),
    };
    (ended_early, Some(message))
}

/// Records a fire's outcome, retrying while the store is unreachable: a fire left as
/// `running` would be re-run by the next owner once this node is gone.
pub(crate) async fn record_finish(shared: &Shared, finish: &Finish) {
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=40 {
        let sent = Instant::now();
        let recorded = shared.batcher.finish(finish.clone()).await;
        shared
            .metrics
            .store_call("finish", sent.elapsed().as_secs_f64(), recorded.is_err());
        match recorded {
            Ok(()) => return,
            Err(e) if attempt == 40 => {
                warn!(error = %e, instant = finish.instant_ms, "could not record the outcome; the fire stays `running` in history")
            }
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}
