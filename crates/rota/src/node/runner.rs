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

use super::{active::ActiveRun, shared::Shared};
use crate::{
    error::Result,
    output::{output_key, OutputRecorder},
    store::{
        Begin, CacheWrite, Claim, ClaimOutcome, Expect, Finish, Member, RunningFire, Takeover,
        RUNS_CACHE,
    },
    task::{FireContext, Outcome, OverlapPolicy, RecoveryPolicy, TaskSpec},
};
use rota_core::{
    control::ManualRun, outcome::NoRetry, placement::ResolverSpec, schedule::plan_due,
};

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

/// A runner with nothing to do until `next_ms` (store time) but wait: what it would keep
/// in memory while sleeping, kept by the supervisor instead (see [`Timing::park_after`](super::Timing::park_after)), without
/// what the supervisor has anyway (the task's spec, the node, the run-now requests). A
/// run-now request, a lost task or a stop reaches the supervisor as it would the runner.
pub(crate) struct Parked {
    token: i64,
    stop: CancellationToken,
    term: CancellationToken,
    start: Start,
    progress: Progress,
    /// Store time of the runner's next instant.
    pub(crate) next_ms: i64,
}

impl Parked {
    /// The stop token the runner's fires share: cancelled when the parked runner is retired.
    pub(crate) fn stop(&self) -> &CancellationToken {
        &self.stop
    }
}

/// Where a runner's schedule stands between two rounds of its loop.
struct Progress {
    /// Instants up to this one have a record (or are being handled).
    cursor: i64,
    /// A previous owner may still be handing the task over.
    elsewhere: bool,
    /// Run-now requests looked at.
    handled: BTreeSet<i64>,
}

/// How a runner's loop ended without an error.
enum Step {
    Stopped,
    Park(Progress, i64),
}

/// Runs a newly owned task: takes it over (settles what a previous owner left, finds where
/// its schedule resumes), then schedules it. Returns the runner's state when it parks.
pub(crate) async fn run(
    shared: Arc<Shared>,
    spec: Arc<TaskSpec>,
    token: i64,
    start: Start,
    runs: watch::Receiver<Vec<ManualRun>>,
    stop: CancellationToken,
    counted: TakingOver,
) -> Option<Parked> {
    let member = shared.member();
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
    runner.drive(Err(counted), runs).await
}

/// Counts a runner as taking over its task until dropped (see [`Shared::taking_over`]).
pub(crate) struct TakingOver(Arc<std::sync::atomic::AtomicUsize>);

impl TakingOver {
    pub(crate) fn new(count: &Arc<std::sync::atomic::AtomicUsize>) -> TakingOver {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        TakingOver(count.clone())
    }
}

impl Drop for TakingOver {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Resumes a parked runner where it stopped, with its task's spec (unchanged since: a
/// changed definition retires a parked runner) and the task's run-now requests now.
pub(crate) async fn resume(
    shared: Arc<Shared>,
    spec: Arc<TaskSpec>,
    parked: Parked,
    runs: watch::Receiver<Vec<ManualRun>>,
) -> Option<Parked> {
    let Parked {
        token,
        stop,
        term,
        start,
        progress,
        ..
    } = parked;
    let runner = Runner {
        known_runs: Mutex::new(runs.borrow().clone()),
        member: shared.member(),
        shared,
        spec,
        token,
        stop,
        term,
        start,
    };
    runner.drive(Ok(progress), runs).await
}

struct Runner {
    shared: Arc<Shared>,
    spec: Arc<TaskSpec>,
    token: i64,
    member: Member,
    stop: CancellationToken,
    term: CancellationToken,
    start: Start,
    /// The task's run-now requests as last seen (a recovered run-now fire needs its own).
    known_runs: Mutex<Vec<ManualRun>>,
}

impl Runner {
    /// Runs from `progress`, or (`Err`) takes the task over first.
    async fn drive(
        self,
        progress: std::result::Result<Progress, TakingOver>,
        runs: watch::Receiver<Vec<ManualRun>>,
    ) -> Option<Parked> {
        let span = tracing::info_span!("task", node = %self.member.node, task = %self.spec.name, token = self.token);
        let ended = async {
            let progress = match progress {
                Ok(p) => Some(p),
                Err(counted) => {
                    let taken = self.take_over().await;
                    drop(counted);
                    taken?
                }
            };
            match progress {
                Some(p) => self.schedule(p, runs).await,
                None => Ok(Step::Stopped),
            }
        }
        .instrument(span.clone())
        .await;
        let _entered = span.enter();
        match ended {
            Ok(Step::Park(progress, next_ms)) => {
                debug!(next_ms, "parked until shortly before the next instant");
                return Some(Parked {
                    token: self.token,
                    stop: self.stop,
                    term: self.term,
                    start: self.start,
                    progress,
                    next_ms,
                });
            }
            Ok(Step::Stopped) => debug!("runner stopped"),
            Err(e) => {
                warn!(error = %e, "runner stopped on a store error; it restarts shortly");
                // Do not spin against a failing store: the supervisor restarts it after this.
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    _ = self.stop.cancelled() => {}
                }
            }
        }
        None
    }

    /// What a new owner does first: settles the fires a previous owner left running, and
    /// finds the instant its schedule resumes after. `None`: it must stop.
    async fn take_over(&self) -> Result<Option<Progress>> {
        let store = &self.shared.store;
        debug!("owner now");
        // After a failover of thousands of tasks, their reads go to the store in batches.
        // Settling adds no instant (it ends or restarts the fires read, whose instants have
        // records already), so the last instant read before it is the one after it.
        let Takeover {
            running,
            last_instant,
        } = self.shared.batcher.takeover(&self.spec.name).await?;
        let Some(elsewhere) = self.settle(&running).await? else {
            return Ok(None);
        };
        // Resume after the last instant with a record; a task with none from its first
        // placement (its first owner may have died before recording anything).
        // A node's share of an `all` task starts afresh: while the node was away, the other
        // nodes ran theirs, so nothing was missed.
        let per_node = self.spec.placement.resolver == ResolverSpec::All;
        let cursor = match last_instant {
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
        Ok(Some(Progress {
            cursor: cursor.max(self.start.resumed_at),
            elsewhere,
            handled: BTreeSet::new(),
        }))
    }

    async fn schedule(
        &self,
        progress: Progress,
        mut runs: watch::Receiver<Vec<ManualRun>>,
    ) -> Result<Step> {
        let store = &self.shared.store;
        let Progress {
            mut cursor,
            mut elsewhere,
            // Run-now requests this runner has looked at; the sender goes when the runner
            // is retired.
            mut handled,
        } = progress;
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
                return Ok(Step::Stopped);
            }
            // Nothing to do for a while: park rather than sleep (see `Timing::park_after`).
            let park_after = self.shared.timing.park_after.as_millis() as i64;
            if let Some(at) = wake_at.filter(|_| pending.is_empty() && runs_open) {
                if at - self.shared.clock.now_ms() > park_after && !self.stop.is_cancelled() {
                    let progress = Progress {
                        cursor,
                        elsewhere,
                        handled,
                    };
                    return Ok(Step::Park(progress, at));
                }
            }
            let wake = wake_at.map(|at| self.shared.clock.instant_of(at));
            tokio::select! {
                _ = async { tokio::time::sleep_until(wake.expect("guarded")).await }, if wake.is_some() => {}
                changed = runs.changed(), if runs_open => {
                    runs_open = changed.is_ok();
                    continue;
                }
                _ = self.stop.cancelled() => return Ok(Step::Stopped),
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
                    return Ok(Step::Stopped);
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
                // Instants due already (a catch-up) each wait their turn within the misfire
                // threshold; the ones that come due while an instant waits are recorded
                // skipped, and `watched` moves to the last of them.
                let mut watched = plan.start.last().copied().unwrap_or(cursor).max(cursor);
                let mut waited_until = None;
                for instant in plan.start {
                    if !self
                        .claim_and_start(instant, instant, None, &mut elsewhere, &mut waited_until)
                        .await?
                    {
                        return Ok(Step::Stopped);
                    }
                }
                // After every instant of the plan has its record (contract 3).
                if let Some(until) = waited_until {
                    if !self.skip_due_while_waiting(until, &mut watched).await? {
                        return Ok(Step::Stopped);
                    }
                }
                cursor = plan.cursor.max(watched);
            }
            for (key, run) in pending {
                if key > now {
                    continue; // not due yet on this node's clock: a later round takes it
                }
                handled.insert(run.seq);
                if !self.start_manual(key, &run, &mut elsewhere).await? {
                    return Ok(Step::Stopped);
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
                .claim_and_start(key, run.issued_at_ms, Some(run), elsewhere, &mut None)
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
            begin: false,
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
    /// or on a previous owner still leaving) follows the task's overlap rule: `skip` records
    /// it skipped at once; `queue` waits for the run to end, and `replace` asks it to stop
    /// and waits for that, as long as the fire can still start within the misfire
    /// threshold (past that it is recorded as skipped, contract 11). A scheduled instant
    /// that waited sets `waited_until` to when its wait ended: the instants that came due
    /// meanwhile are skipped (see [`Runner::skip_due_while_waiting`]). Returns `false` when
    /// fenced or stopped: the runner must stop.
    async fn claim_and_start(
        &self,
        instant: i64,
        due: i64,
        manual: Option<&ManualRun>,
        elsewhere: &mut bool,
        waited_until: &mut Option<i64>,
    ) -> Result<bool> {
        let overlap = self.spec.overlap;
        let latest = match overlap {
            OverlapPolicy::Skip => Instant::now(),
            OverlapPolicy::Queue | OverlapPolicy::Replace => self.latest_start(due),
        };
        let free = tokio::select! {
            free = self.previous_run_ended(Instant::now(), elsewhere) => free?,
            _ = self.stop.cancelled() => return Ok(false),
        };
        let waited = !free && overlap != OverlapPolicy::Skip;
        let free = if waited {
            if overlap == OverlapPolicy::Replace && self.shared.active.replace(&self.spec.name) {
                info!(
                    instant,
                    "asking the run going on to stop: this instant replaces it (overlap = replace)"
                );
            }
            tokio::select! {
                free = self.previous_run_ended(latest, elsewhere) => free?,
                _ = self.stop.cancelled() => return Ok(false),
            }
        } else {
            free
        };
        let waited_until_ms = self.shared.clock.now_ms();
        if !self.shared.lease_valid() || self.stop.is_cancelled() {
            return Ok(false);
        }
        let skipped = |why: String| {
            Some(format!(
                "{}skipped: {why}",
                manual
                    .map(|run| format!("{}: ", manual_label(run)))
                    .unwrap_or_default(),
            ))
        };
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
                (false, _) if overlap == OverlapPolicy::Skip => {
                    skipped("the previous run was still going (overlap = skip)".into())
                }
                (false, _) => skipped(format!(
                    "the previous run was still going {} ms after this instant (misfire_threshold)",
                    self.spec.misfire_threshold.as_millis()
                )),
                (true, Some(run)) => Some(manual_label(run)),
                (true, None) => None,
            },
            // No run of the task goes on here and the lease holds: the work starts as soon
            // as the claim is accepted, so the claim begins it too (one write, not two).
            begin: free,
        };
        let went_on = match self.shared.batcher.claim(claim).await? {
            ClaimOutcome::Claimed if !free => {
                warn!(instant, "skipped: the previous run is still going");
                self.shared.metrics.fire(&self.spec.name, Outcome::Skipped);
                true
            }
            ClaimOutcome::Claimed => self.launch(instant, due, 1, manual).await?,
            ClaimOutcome::AlreadyClaimed => {
                debug!(instant, "already claimed");
                true
            }
            ClaimOutcome::Fenced => {
                info!(instant, "claim refused: this token is no longer current");
                false
            }
        };
        if waited && manual.is_none() {
            *waited_until = Some(waited_until_ms);
        }
        Ok(went_on)
    }

    /// One scheduled instant waits at a time: the instants after `watched` that came due by
    /// `until`, while one waited for the previous run, are recorded skipped, and `watched`
    /// moves to the last of them. Called once every instant up to `watched` has its record:
    /// records go in the order of instants, so that a new owner, resuming after the last,
    /// passes over none (contract 3). `false` when fenced.
    async fn skip_due_while_waiting(&self, until: i64, watched: &mut i64) -> Result<bool> {
        for next in self
            .spec
            .schedule
            .instants_between(*watched, until, MISFIRE_LIST_CAP)
        {
            let claim = Claim {
                member: self.member.clone(),
                task: self.spec.name.clone(),
                instant_ms: next,
                token: self.token,
                outcome: Outcome::Skipped,
                message: Some(format!(
                    "skipped: an earlier instant was waiting for the previous run to end (overlap = {})",
                    self.spec.overlap.as_str()
                )),
                begin: false,
            };
            match self.shared.batcher.claim(claim).await? {
                ClaimOutcome::Claimed => {
                    warn!(
                        instant = next,
                        "skipped: an earlier instant was waiting for the run going on"
                    );
                    self.shared.metrics.fire(&self.spec.name, Outcome::Skipped);
                }
                ClaimOutcome::AlreadyClaimed => {}
                ClaimOutcome::Fenced => return Ok(false),
            }
            *watched = next;
        }
        Ok(true)
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
        // A retry never runs past the task's next instant (its retry policy).
        let next = self.spec.schedule.next_after(fire.instant_ms);
        if !fire.begun
            && fire.attempt > 1
            && self.spec.retry.is_some()
            && next.is_some_and(|n| n <= self.shared.clock.now_ms())
        {
            let message = format!(
                "attempt {} not started: the task's next instant ({}) came first (its node stopped or died while it waited)",
                fire.attempt,
                next.unwrap_or_default()
            );
            warn!(instant = fire.instant_ms, "{message}");
            let finish = Finish {
                task: self.spec.name.clone(),
                instant_ms: fire.instant_ms,
                token: self.token,
                attempt: fire.attempt,
                outcome: Outcome::Failed,
                message: labelled(&manual.as_ref().map(manual_label), Some(message)),
            };
            record_finish(&self.shared, &finish).await;
            self.shared.metrics.fire(&self.spec.name, Outcome::Failed);
            return Ok(true);
        }
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
        may_start(&self.shared, &self.term, &self.member)
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
        self.launch(instant, due, attempt, manual).await
    }

    /// Runs a fire begun in the store (by [`Runner::start`], or by a claim that began it):
    /// its handler in the background, then its outcome. Returns `false` when the work must
    /// not start after all: the runner must stop.
    async fn launch(
        &self,
        instant: i64,
        due: i64,
        attempt: i64,
        manual: Option<&ManualRun>,
    ) -> Result<bool> {
        let label = manual.map(manual_label);
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
        let lateness = self.shared.clock.now_ms() - due;
        info!(instant, attempt, lateness_ms = lateness, "fire started");
        if manual.is_none() && attempt == 1 {
            self.shared.metrics.lateness(lateness);
        }
        let key = (self.spec.name.clone(), instant);
        self.shared.running.lock().unwrap().insert(key);
        let fire = Fire {
            shared: self.shared.clone(),
            spec: self.spec.clone(),
            member: self.member.clone(),
            token: self.token,
            term: self.term.clone(),
            stop: self.stop.clone(),
            instant,
            manual: manual.cloned(),
            label,
        };
        self.shared
            .fires
            .spawn(fire.run(attempt, active).in_current_span());
        Ok(true)
    }
}

/// May a fire of `member` start now? Not if the runner's term ended meanwhile (lease lost,
/// perhaps regained since), nor after a freeze whose end the fence watchdog has not seen yet.
fn may_start(shared: &Shared, term: &CancellationToken, member: &Member) -> bool {
    !term.is_cancelled()
        && shared.lease_valid()
        && shared.member().incarnation == member.incarnation
}

/// A begun fire, run in the background: its handler, then its retries (the task's retry
/// policy), then its outcome in the store.
struct Fire {
    shared: Arc<Shared>,
    spec: Arc<TaskSpec>,
    member: Member,
    token: i64,
    term: CancellationToken,
    /// The runner's: a retry waiting when the runner stops is left to the task's next
    /// runner (here or on its next owner), as a fire claimed but not begun.
    stop: CancellationToken,
    instant: i64,
    manual: Option<ManualRun>,
    label: Option<String>,
}

impl Fire {
    async fn run(self, mut attempt: i64, active: ActiveRun) {
        let (shared, spec, instant) = (&self.shared, &self.spec, self.instant);
        // What each earlier attempt came to, for the history of the instant.
        let mut attempts: Vec<String> = Vec::new();
        loop {
            let began = Instant::now();
            let ctx = self.context(attempt);
            let output = ctx.output.clone();
            let stop_grace = shared.timing.fence_margin / 4;
            let (outcome, message) = shared
                .guarded(
                    spec.handler.in_process(),
                    execute(spec, ctx, stop_grace, active.replaced.clone()),
                )
                .await;
            // Its output is in the store before its outcome: whoever reads an ended fire
            // finds all of it.
            if let Some(output) = output {
                output.finish().await;
            }
            shared.metrics.fire(&spec.name, outcome);
            if outcome == Outcome::Ok {
                shared
                    .metrics
                    .last_success(&spec.name, shared.clock.now_ms());
            }
            let took = began.elapsed().as_millis() as u64;
            match outcome {
                Outcome::Ok => info!(instant, attempt, took_ms = took, "fire ok"),
                _ => {
                    warn!(instant, attempt, took_ms = took, outcome = %outcome, reason = message.as_deref().unwrap_or(""), "fire ended")
                }
            }
            let retry = match spec.retry {
                Some(policy)
                    if matches!(outcome, Outcome::Failed | Outcome::TimedOut)
                        && !active.replaced.is_cancelled()
                        && !self.term.is_cancelled() =>
                {
                    Some(policy.next_attempt_at(
                        attempt,
                        shared.clock.now_ms(),
                        spec.schedule.next_after(instant),
                    ))
                }
                _ => None,
            };
            let ended = match &message {
                Some(m) => format!("attempt {attempt} {outcome}: {m}"),
                None => format!("attempt {attempt} {outcome}"),
            };
            // The instant's history if this attempt is its last.
            let last = match retry {
                None | Some(Ok(_)) if attempts.is_empty() => message,
                None | Some(Ok(_)) => Some(with_attempts(&attempts, ended.clone())),
                Some(Err(NoRetry::Spent)) => Some(with_attempts(
                    &attempts,
                    format!("{ended}; no retry: its {attempt} attempts are spent"),
                )),
                Some(Err(NoRetry::NextInstant(next))) => Some(with_attempts(
                    &attempts,
                    format!("{ended}; no retry: the task's next instant ({next}) comes first"),
                )),
            };
            let finish = Finish {
                task: spec.name.clone(),
                instant_ms: instant,
                token: self.token,
                attempt,
                outcome,
                message: labelled(&self.label, last),
            };
            let Some(Ok(at)) = retry else {
                drop(active);
                record_finish(shared, &finish).await;
                break;
            };
            // The record says attempt + 1, not begun: whoever runs it next begins it.
            attempts.push(ended);
            let note = labelled(
                &self.label,
                Some(with_attempts(
                    &attempts,
                    format!("attempt {} at {at}", attempt + 1),
                )),
            );
            let fire = Begin {
                task: spec.name.clone(),
                instant_ms: instant,
                token: self.token,
                attempt,
            };
            let readied = shared
                .store
                .retry_fire(&self.member, &fire, note.as_deref().unwrap_or_default())
                .await;
            if !matches!(readied, Ok(ClaimOutcome::Claimed)) {
                // Fenced (the task moved) or the store failed: this attempt's end is what
                // the history keeps.
                match readied {
                    Err(e) => {
                        warn!(error = %e, instant, "could not record the retry; the fire is recorded as ended")
                    }
                    _ => info!(
                        instant,
                        attempt, "retry refused: this token is no longer current"
                    ),
                }
                drop(active);
                record_finish(shared, &finish).await;
                break;
            }
            attempt += 1;
            shared.metrics.retry(&spec.name);
            shared.journal.record(super::journal::retried(
                &self.member,
                &spec.name,
                instant,
                attempt,
                at,
                shared.clock.now_ms(),
            ));
            info!(
                instant,
                attempt, at, "retrying after a failure (retry policy)"
            );
            // The task stays busy while it waits (`active` is held): a run-now request or a
            // replacing instant waits for it, as for a run.
            tokio::select! {
                _ = tokio::time::sleep_until(shared.clock.instant_of(at)) => {}
                _ = self.stop.cancelled() => break,
                _ = self.term.cancelled() => break,
                _ = active.replaced.cancelled() => {
                    // Given way to a newer fire: this attempt never starts.
                    let finish = Finish {
                        task: spec.name.clone(),
                        instant_ms: instant,
                        token: self.token,
                        attempt,
                        outcome: Outcome::Failed,
                        message: labelled(&self.label, Some(with_attempts(&attempts, format!("attempt {attempt} not started: a newer fire replaced it (overlap = replace)")))),
                    };
                    drop(active);
                    record_finish(shared, &finish).await;
                    break;
                }
            }
            if !may_start(shared, &self.term, &self.member) || self.stop.is_cancelled() {
                break;
            }
            let begin = Begin {
                task: spec.name.clone(),
                instant_ms: instant,
                token: self.token,
                attempt,
            };
            match shared.batcher.begin(self.member.clone(), begin).await {
                Ok(true) if may_start(shared, &self.term, &self.member) => {}
                Ok(_) => {
                    info!(
                        instant,
                        attempt, "retry not begun: this token is no longer current"
                    );
                    break;
                }
                Err(e) => {
                    // Not begun, as far as this node knows: the task's next runner settles it.
                    warn!(error = %e, instant, attempt, "could not begin the retry");
                    break;
                }
            }
            info!(instant, attempt, "fire started");
        }
        let key = (spec.name.clone(), instant);
        shared.running.lock().unwrap().remove(&key);
    }

    fn context(&self, attempt: i64) -> FireContext {
        FireContext {
            cluster: self.member.cluster.clone(),
            task: self.spec.name.clone(),
            node: self.member.node.clone(),
            instant_ms: self.instant,
            token: self.token,
            attempt,
            cancel: self.term.child_token(),
            state: Some(crate::cache::TaskState::new(
                self.shared.store.clone(),
                &self.member.cluster,
                &self.spec.name,
                self.token,
            )),
            manual: self.manual.clone(),
            output: (self.spec.output_limit > 0).then(|| {
                OutputRecorder::new(
                    self.shared.store.clone(),
                    &self.member.cluster,
                    output_key(&self.spec.name, self.instant, attempt),
                    self.spec.output_limit,
                    self.shared.timing.history_retention,
                )
            }),
        }
    }
}

/// An instant's history after retries: each earlier attempt's end, then `last`.
fn with_attempts(attempts: &[String], last: String) -> String {
    let mut text = attempts.join("; ");
    if !text.is_empty() {
        text.push_str("; ");
    }
    text.push_str(&last);
    text
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
/// the lease's margin bounds it (contract 12); one that timed out or was `replaced` by a
/// newer instant has 5 s.
async fn execute(
    spec: &TaskSpec,
    ctx: FireContext,
    stop_grace: Duration,
    replaced: CancellationToken,
) -> (Outcome, Option<String>) {
    enum Early {
        TimedOut,
        Replaced,
        Stopped,
    }
    let cancel = ctx.cancel.clone();
    let handler = spec.handler.run(ctx);
    tokio::pin!(handler);
    let timeout = async {
        match spec.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let early = tokio::select! {
        result = &mut handler => return match result {
            Ok(()) => (Outcome::Ok, None),
            Err(e) if cancel.is_cancelled() => (Outcome::Failed, Some(format!("cancelled: {e}"))),
            Err(e) => (Outcome::Failed, Some(e.to_string())),
        },
        _ = timeout => Early::TimedOut,
        _ = replaced.cancelled() => Early::Replaced,
        _ = cancel.cancelled() => Early::Stopped,
    };
    // Ask the handler to stop, and give it a moment to do so before dropping it.
    cancel.cancel();
    // A command kills its process group at once and returns when it is reaped: wait for
    // that, so that the run counts as going on until its process is gone (contract 11).
    let grace = match early {
        Early::TimedOut | Early::Replaced => Duration::from_secs(5),
        Early::Stopped if !spec.handler.in_process() => Duration::from_secs(5),
        Early::Stopped => stop_grace,
    };
    let _ = tokio::time::timeout(grace, &mut handler).await;
    match early {
        Early::TimedOut => (
            Outcome::TimedOut,
            Some(format!(
                "timed out after {} ms",
                spec.timeout.unwrap_or_default().as_millis()
            )),
        ),
        Early::Replaced => (
            Outcome::Failed,
            Some("cancelled: a newer instant replaced it (overlap = replace)".into()),
        ),
        Early::Stopped => (
            Outcome::Failed,
            Some("cancelled: the node lost its lease or was forced to stop".into()),
        ),
    }
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
