//! One owned task under one fencing token: computes its instants, claims each in the store,
//! runs the handler, records the outcome. Stops when the token is lost.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::shared::Shared;
use crate::{
    error::Result,
    store::{
        Begin, CacheWrite, Claim, ClaimOutcome, Expect, Finish, Member, RunningFire, RUNS_CACHE,
    },
    task::{FireContext, Outcome, RecoveryPolicy, TaskSpec},
};
use rota_core::{control::ManualRun, placement::ResolverSpec, schedule::plan_due};

/// Misfired instants listed one by one in history before they are only counted.
const MISFIRE_LIST_CAP: usize = 1000;

/// A run-now request older than this is no longer looked at by a new owner.
const RUN_WINDOW_MS: i64 = 3_600_000;

/// How long the note of where a run-now fire is recorded is kept ([`RUNS_CACHE`]).
const RUN_NOTE_TTL_MS: i64 = 7 * 86_400_000;

/// The label a run-now fire's record starts with: which request, and who asked.
pub fn manual_label(run: &ManualRun) -> String {
    match &run.requested_by {
        Some(token) => format!("run now #{} (token `{token}`)", run.seq),
        None => format!("run now #{}", run.seq),
    }
}

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
    runs: watch::Receiver<Vec<ManualRun>>,
    stop: CancellationToken,
) {
    let member = shared.member();
    let span = tracing::info_span!("task", node = %member.node, task = %spec.name, token);
    async move {
        // The term this runner belongs to: its fires stop when that term ends (lost lease),
        // even if a later term has begun by the time they would start.
        let term = shared.work_token();
        let runner = Runner {
            known_runs: Mutex::new(runs.borrow().clone()),
            shared,
            spec,
            token,
            member,
            stop,
            term,
            start,
        };
        match runner.schedule(runs).await {
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
    /// The task's run-now requests as last seen (a recovered run-now fire needs its own).
    known_runs: Mutex<Vec<ManualRun>>,
}

impl Runner {
    async fn schedule(&self, mut runs: watch::Receiver<Vec<ManualRun>>) -> Result<()> {
        let store = &self.shared.store;
        let cluster = &self.member.cluster;
        info!("owner now");
        // Taking over reads the store twice per task: after a failover of thousands of tasks,
        // queue these reads instead of exhausting the connection pool.
        let permit = self.shared.startups.acquire().await.expect("never closed");
        let running = store.running_fires(cluster, &self.spec.name).await?;
        // Settling may wait out a dead node's lease: not while holding up other takeovers.
        drop(permit);
        let Some(mut elsewhere) = self.settle(&running).await? else {
            return Ok(());
        };
        let permit = self.shared.startups.acquire().await.expect("never closed");
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
        // Instants that passed while the task was paused are not made up, but recorded: an
        // instant due before the pause that was still waiting for a run to end has no record
        // either (contract 3: nothing missed silently).
        if self.start.resumed_at > cursor && !per_node {
            let paused = self.spec.schedule.instants_between(
                cursor,
                self.start.resumed_at,
                MISFIRE_LIST_CAP,
            );
            if !paused.is_empty() {
                let recorded = store
                    .record_misfires(
                        &self.member,
                        &self.spec.name,
                        self.token,
                        &paused,
                        "not started: the task was paused",
                    )
                    .await?;
                self.shared
                    .metrics
                    .fires(&self.spec.name, Outcome::Misfired, recorded);
            }
        }
        let mut cursor = cursor.max(self.start.resumed_at);
        drop(permit);
        // Run-now requests this runner has looked at; the sender goes when the runner is
        // retired.
        let mut handled = BTreeSet::new();
        let mut runs_open = true;
        loop {
            let next = self.spec.schedule.next_after(cursor);
            let pending = self.pending_runs(&runs, &handled);
            let wake_at = match (next, pending.first().map(|(key, _)| *key)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if wake_at.is_none() && !runs_open {
                info!("the schedule has no more instants");
                self.stop.cancelled().await;
                return Ok(());
            }
            let wake = wake_at.map(|at| self.shared.clock.instant_of(at));
            tokio::select! {
                _ = async { tokio::time::sleep_until(wake.expect("guarded")).await }, if wake.is_some() => {}
                changed = runs.changed(), if runs_open => {
                    runs_open = changed.is_ok();
                    continue;
                }
                _ = self.stop.cancelled() => return Ok(()),
            }
            // Scheduled instants first: a run-now fire is claimed only once every instant up
            // to its key has a record, so that a new owner's resume after the last record
            // passes over none (contract 3).
            let now = self.shared.clock.now_ms();
            if next.is_some_and(|n| now >= n) {
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
                    self.shared.metrics.fires(
                        &self.spec.name,
                        Outcome::Misfired,
                        plan.misfired_total,
                    );
                }
                for instant in plan.start {
                    if !self
                        .claim_and_start(instant, instant, None, &mut elsewhere)
                        .await?
                    {
                        return Ok(());
                    }
                }
                cursor = plan.cursor;
            }
            for (key, run) in pending {
                if key > now {
                    continue; // not due yet on this node's clock: a later round takes it
                }
                handled.insert(run.seq);
                if !self.start_manual(key, &run, &mut elsewhere).await? {
                    return Ok(());
                }
            }
        }
    }

    /// The run-now requests not looked at yet, each with its key, by key. A request older
    /// than [`RUN_WINDOW_MS`] is no longer looked at.
    fn pending_runs(
        &self,
        runs: &watch::Receiver<Vec<ManualRun>>,
        handled: &BTreeSet<i64>,
    ) -> Vec<(i64, ManualRun)> {
        let all = runs.borrow().clone();
        let now = self.shared.clock.now_ms();
        let mut out: Vec<(i64, ManualRun)> = all
            .iter()
            .filter(|run| !handled.contains(&run.seq) && now - run.issued_at_ms <= RUN_WINDOW_MS)
            .filter_map(|run| {
                let key = self.spec.schedule.manual_key(run.issued_at_ms);
                if key.is_none() {
                    warn!(run = run.seq, "run now: the schedule has an instant in every millisecond of the next second; not started");
                }
                key.map(|k| (k, run.clone()))
            })
            .collect();
        out.sort_by_key(|(key, _)| *key);
        *self.known_runs.lock().unwrap() = all;
        out
    }

    /// The run-now request whose fire is recorded under `key`, if it is one.
    fn manual_of(&self, key: i64) -> Option<ManualRun> {
        self.known_runs
            .lock()
            .unwrap()
            .iter()
            .find(|run| self.spec.schedule.manual_key(run.issued_at_ms) == Some(key))
            .cloned()
    }

    /// Starts a run-now request as the fire of `key`: noted in [`RUNS_CACHE`] (so that the
    /// API can follow it), then claimed and started as a scheduled instant due at the
    /// request's time would be, subject to the same overlap rule; recorded misfired if it
    /// can no longer start within the misfire threshold. `false` when fenced or stopped.
    async fn start_manual(&self, key: i64, run: &ManualRun, elsewhere: &mut bool) -> Result<bool> {
        let note = key.to_string();
        let entry = format!("{}/{}", self.spec.name, run.seq);
        self.shared
            .store
            .cache_put(
                &self.member.cluster,
                &CacheWrite {
                    cache: RUNS_CACHE,
                    key: &entry,
                    value: note.as_bytes(),
                    ttl_ms: Some(RUN_NOTE_TTL_MS),
                    expect: Expect::Any,
                },
            )
            .await?;
        if Instant::now() <= self.latest_start(run.issued_at_ms) {
            info!(run = run.seq, key, "run now");
            return self
                .claim_and_start(key, run.issued_at_ms, Some(run), elsewhere)
                .await;
        }
        let message = format!(
            "{}: misfired: not started within {} ms of the request (misfire_threshold)",
            manual_label(run),
            self.spec.misfire_threshold.as_millis()
        );
        let claim = Claim {
            member: self.member.clone(),
            task: self.spec.name.clone(),
            instant_ms: key,
            token: self.token,
            outcome: Outcome::Misfired,
            message: Some(message.clone()),
        };
        match self.shared.batcher.claim(claim).await? {
            ClaimOutcome::Claimed => {
                warn!(run = run.seq, "{message}");
                self.shared.metrics.fire(&self.spec.name, Outcome::Misfired);
                Ok(true)
            }
            ClaimOutcome::AlreadyClaimed => Ok(true),
            ClaimOutcome::Fenced => Ok(false),
        }
    }

    /// Claims the fire of `instant` (a scheduled instant, or a run-now request's key), due
    /// at `due`, and starts it. A fire due while the previous run of the task goes on (here,
    /// or on a previous owner still leaving) waits for it as long as it can still start
    /// within the misfire threshold; past that it is recorded as skipped (contract 11).
    /// Returns `false` when fenced or stopped: the runner must stop.
    async fn claim_and_start(
        &self,
        instant: i64,
        due: i64,
        manual: Option<&ManualRun>,
        elsewhere: &mut bool,
    ) -> Result<bool> {
        let latest = self.latest_start(due);
        let free = tokio::select! {
            free = self.previous_run_ended(latest, elsewhere) => free?,
            _ = self.stop.cancelled() => return Ok(false),
        };
        if !self.shared.lease_valid() || self.stop.is_cancelled() {
            return Ok(false);
        }
        let claim = Claim {
            member: self.member.clone(),
            task: self.spec.name.clone(),
            instant_ms: instant,
            token: self.token,
            outcome: if free {
                Outcome::Running
            } else {
                Outcome::Skipped
            },
            message: match (free, manual) {
                (false, _) => Some(format!(
                    "{}skipped: the previous run was still going {} ms after this instant (misfire_threshold)",
                    manual.map(|run| format!("{}: ", manual_label(run))).unwrap_or_default(),
                    self.spec.misfire_threshold.as_millis()
                )),
                (true, Some(run)) => Some(manual_label(run)),
                (true, None) => None,
            },
        };
        match self.shared.batcher.claim(claim).await? {
            ClaimOutcome::Claimed if !free => {
                warn!(instant, "skipped: the previous run is still going");
                self.shared.metrics.fire(&self.spec.name, Outcome::Skipped);
                Ok(true)
            }
            ClaimOutcome::Claimed => self.start(instant, due, 1, manual).await,
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

    /// The latest moment `instant` may still start: its misfire threshold, on this node's
    /// clock.
    fn latest_start(&self, instant: i64) -> Instant {
        self.shared
            .clock
            .instant_of(instant + self.spec.misfire_threshold.as_millis() as i64)
    }

    /// Waits until no run of this task goes on, here or (while `elsewhere`) on a previous
    /// owner that is still leaving, until `latest`. `true`: none does.
    async fn previous_run_ended(&self, latest: Instant, elsewhere: &mut bool) -> Result<bool> {
        let task = &self.spec.name;
        while *elsewhere {
            let running = self
                .shared
                .store
                .running_fires(&self.member.cluster, task)
                .await?;
            let Some(still) = self.settle(&running).await? else {
                return Ok(false);
            };
            *elsewhere = still;
            if *elsewhere {
                if Instant::now() >= latest {
                    return Ok(false);
                }
                let poll = self.shared.timing.heartbeat.min(Duration::from_millis(100));
                tokio::time::sleep(poll.min(latest - Instant::now())).await;
            }
        }
        Ok(self.shared.active.wait_idle(task, latest).await)
    }

    /// Settles the task's `running` records (contract 9): what a dead node left, what this
    /// incarnation claimed but never started, and what its claimant can no longer begin.
    /// `Some(true)`: a live previous owner still runs one (a graceful handover); `None`:
    /// fenced or stopped meanwhile.
    async fn settle(&self, running: &[RunningFire]) -> Result<Option<bool>> {
        let mut elsewhere = false;
        for fire in running {
            let mine = fire.node == self.member.node && fire.incarnation == self.member.incarnation;
            let started_here = self
                .shared
                .running
                .lock()
                .unwrap()
                .contains(&(self.spec.name.clone(), fire.instant_ms));
            if !fire.node_alive || (mine && !started_here) || fire.stranded(self.token) {
                if !self.recover(fire).await? {
                    return Ok(None);
                }
            } else if !mine {
                elsewhere = true;
            }
        }
        Ok(Some(elsewhere))
    }

    /// Settles a `running` fire left by a dead node, or by this incarnation that lost track
    /// of it (contract 9): one never begun is started here, since nothing ran; a begun one
    /// runs again under `retry`, else is recorded as abandoned. `false` when fenced or
    /// stopped.
    async fn recover(&self, fire: &RunningFire) -> Result<bool> {
        let retry = self.spec.recovery == RecoveryPolicy::Retry;
        // Its work may still go on if a store clock step expired its node early: nothing
        // of this task starts here before that node's own deadline (contract 12).
        if fire.begun
            && fire.incarnation != self.member.incarnation
            && !self
                .shared
                .wait_out_lease(&fire.node, fire.incarnation, &self.stop)
                .await
        {
            return Ok(false);
        }
        let outcome = self
            .shared
            .store
            .recover_fire(&self.member, &self.spec.name, self.token, fire, retry)
            .await?;
        if outcome != ClaimOutcome::Claimed {
            debug!(instant = fire.instant_ms, "another node settled this fire");
            return Ok(true);
        }
        // A run-now fire is due at its request, and starts with its request's environment.
        let manual = self.manual_of(fire.instant_ms);
        let due = manual
            .as_ref()
            .map_or(fire.instant_ms, |run| run.issued_at_ms);
        if !fire.begun {
            info!(instant = fire.instant_ms, from_node = %fire.node, "starting a fire that was claimed but never begun");
            return self
                .start(fire.instant_ms, due, fire.attempt, manual.as_ref())
                .await;
        }
        if retry {
            warn!(instant = fire.instant_ms, dead_node = %fire.node, "re-running a fire whose node died mid-run (recovery = retry)");
            return self
                .start(fire.instant_ms, due, fire.attempt + 1, manual.as_ref())
                .await;
        }
        warn!(instant = fire.instant_ms, dead_node = %fire.node, "abandoned a fire whose node died mid-run");
        self.shared
            .metrics
            .fire(&self.spec.name, Outcome::Abandoned);
        Ok(true)
    }

    /// May this runner start work now? Not if its term ended meanwhile (lease lost, perhaps
    /// regained since), nor after a freeze whose end the fence watchdog has not seen yet.
    fn may_start(&self) -> bool {
        !self.term.is_cancelled()
            && self.shared.lease_valid()
            && self.shared.member().incarnation == self.member.incarnation
    }

    /// Begins a claimed fire in the store, then runs its handler in the background and
    /// records its outcome. Returns `false` when fenced: the runner must stop.
    async fn start(
        &self,
        instant: i64,
        due: i64,
        attempt: i64,
        manual: Option<&ManualRun>,
    ) -> Result<bool> {
        let label = manual.map(manual_label);
        if !self.may_start() {
            // Not begun: the next owner (or this node's next term) starts it.
            warn!(
                instant,
                "claimed, but the lease was lost meanwhile: not starting"
            );
            return Ok(false);
        }
        // Another run of this task may still go on here (a previous term's, when a fire is
        // taken over): wait for it as a queued instant would, within the misfire threshold.
        let latest = self.latest_start(due);
        let idle = tokio::select! {
            idle = self.shared.active.wait_idle(&self.spec.name, latest) => idle,
            _ = self.stop.cancelled() => return Ok(false),
        };
        if !idle {
            warn!(
                instant,
                "a run of this task still goes on here: not starting"
            );
            return Ok(false);
        }
        let begin = Begin {
            task: self.spec.name.clone(),
            instant_ms: instant,
            token: self.token,
            attempt,
        };
        if !self
            .shared
            .batcher
            .begin(self.member.clone(), begin)
            .await?
        {
            info!(instant, "begin refused: this token is no longer current");
            return Ok(false);
        }
        let active = self.shared.active.enter(&self.spec.name);
        if !self.may_start() {
            warn!(
                instant,
                "begun, but the lease was lost meanwhile: not starting (the next owner records it abandoned)"
            );
            return Ok(false);
        }
        if self.stop.is_cancelled() {
            // Stopped while the begin was on its way (a pause applied meanwhile forbids the
            // start): the work never started, and the instant is recorded as such.
            let message = "not started: its runner was stopped as it began (the task was paused or moved, or the node is stopping)";
            info!(instant, "{message}");
            let finish = Finish {
                task: self.spec.name.clone(),
                instant_ms: instant,
                token: self.token,
                attempt,
                outcome: Outcome::Misfired,
                message: labelled(&label, Some(message.into())),
            };
            record_finish(&self.shared, &finish).await;
            self.shared.metrics.fire(&self.spec.name, Outcome::Misfired);
            return Ok(false);
        }
        let shared = self.shared.clone();
        let spec = self.spec.clone();
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
            manual: manual.cloned(),
        };
        let lateness = shared.clock.now_ms() - due;
        info!(instant, attempt, lateness_ms = lateness, "fire started");
        if manual.is_none() {
            shared.metrics.lateness(lateness);
        }
        let key = (spec.name.clone(), instant);
        shared.running.lock().unwrap().insert(key.clone());
        let fires = shared.fires.clone();
        fires.spawn(
            async move {
                let began = Instant::now();
                let stop_grace = shared.timing.fence_margin / 4;
                let (outcome, message) = shared
                    .guarded(
                        spec.handler.in_process(),
                        execute(&spec, ctx.clone(), stop_grace),
                    )
                    .await;
                drop(active);
                shared.metrics.fire(&spec.name, outcome);
                let took = began.elapsed().as_millis() as u64;
                match outcome {
                    Outcome::Ok => info!(instant, took_ms = took, "fire ok"),
                    _ => warn!(instant, took_ms = took, outcome = %outcome, reason = message.as_deref().unwrap_or(""), "fire ended"),
                }
                let message = labelled(&label, message);
                let finish =
                    Finish { task: spec.name.clone(), instant_ms: instant, token: ctx.token, attempt, outcome, message };
                record_finish(&shared, &finish).await;
                shared.running.lock().unwrap().remove(&key);
            }
            .in_current_span(),
        );
        Ok(true)
    }
}

/// A run-now fire's outcome message, after its label: its history always says which request
/// it ran.
fn labelled(label: &Option<String>, message: Option<String>) -> Option<String> {
    match (label, message) {
        (Some(l), Some(m)) => Some(format!("{l}: {m}")),
        (Some(l), None) => Some(l.clone()),
        (None, m) => m,
    }
}

/// Runs the handler under the task's timeout and the fire's cancellation. A handler cancelled
/// by its node (lease lost, forced stop) has `stop_grace` to return before it is dropped:
/// the lease's margin bounds it (contract 12); one that timed out has 5 s.
async fn execute(
    spec: &TaskSpec,
    ctx: FireContext,
    stop_grace: Duration,
) -> (Outcome, Option<String>) {
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
    // A command kills its process group at once and returns when it is reaped: wait for
    // that, so that the run counts as going on until its process is gone (contract 11).
    let grace = match ended_early {
        Outcome::TimedOut => Duration::from_secs(5),
        _ if !spec.handler.in_process() => Duration::from_secs(5),
        _ => stop_grace,
    };
    let _ = tokio::time::timeout(grace, &mut handler).await;
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
