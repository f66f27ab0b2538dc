//! Fires: the claim, begin and outcome of each instant of a scheduled task, and the history.

use super::membership::Member;
use crate::error::Result;
use async_trait::async_trait;
use rota_core::outcome::Outcome;

/// A fire to claim (contract 2).
#[derive(Debug, Clone)]
pub struct Claim {
    pub member: Member,
    pub task: String,
    pub instant_ms: i64,
    pub token: i64,
    /// `Running` to start the fire; `Skipped` or `Misfired` to record an instant not started.
    pub outcome: Outcome,
    pub message: Option<String>,
    /// `Running` only: the record is begun in the same write, under the rule of
    /// [`FireStore::begin_fires`], for a caller that starts the work as soon as the claim is
    /// accepted (one write per fire instead of two). Without it, the claim only takes the
    /// instant, and the work starts after a begin.
    pub begin: bool,
}

/// Answer to a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    Claimed,
    /// This instant already has a record (claimed by this or another owner).
    AlreadyClaimed,
    /// The token is not the task's current one, or the claimant's registration is dead.
    Fenced,
}

/// A fire recorded as running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningFire {
    pub instant_ms: i64,
    pub node: String,
    pub incarnation: i64,
    pub token: i64,
    pub attempt: i64,
    /// The node that runs it is still alive (by store time).
    pub node_alive: bool,
    /// Its work began (see [`FireStore::begin_fires`]); a fire claimed but not begun never ran.
    pub begun: bool,
}

/// What a new owner of a task reads before it schedules (see [`FireStore::takeovers`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Takeover {
    /// The task's fires recorded as running, oldest first (as [`FireStore::running_fires`]).
    pub running: Vec<RunningFire>,
    /// Its latest instant with any record (as [`FireStore::last_instant`]).
    pub last_instant: Option<i64>,
}

/// A claimed fire whose work is about to start (see [`FireStore::begin_fires`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    pub task: String,
    pub instant_ms: i64,
    pub token: i64,
    pub attempt: i64,
}

/// How a store takes over a record left `running` (see [`FireStore::recover_fire`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// Claimed but never begun: claimed again under the new token, same attempt.
    Claim,
    /// Begun: run again under the new token, attempt + 1.
    Retry,
    /// Begun: recorded as abandoned.
    Abandon,
    /// Begun by the caller, whose attempt failed: made ready for attempt + 1 under the same
    /// token, not begun (see [`FireStore::retry_fire`]).
    AfterFailure,
    /// An item released by its owner at a handover: handled again, attempt + 1.
    Reclaim,
}

/// One fire's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FireRecord {
    pub task: String,
    pub instant_ms: i64,
    pub node: String,
    pub token: i64,
    pub attempt: i64,
    pub outcome: Outcome,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub message: Option<String>,
}

/// How a running fire ended.
#[derive(Debug, Clone)]
pub struct Finish {
    pub task: String,
    pub instant_ms: i64,
    pub token: i64,
    pub attempt: i64,
    pub outcome: Outcome,
    pub message: Option<String>,
}

impl RunningFire {
    /// Claimed under another token than `token` (the task's current one) and never begun:
    /// a begin needs the current token, so its claimant, alive or not, can no longer begin
    /// it. Nothing runs it and nothing will; the current owner takes it over.
    pub fn stranded(&self, token: i64) -> bool {
        !self.begun && self.token != token
    }
}

impl Recovery {
    pub(crate) fn of(begun: bool, retry: bool) -> Recovery {
        match (begun, retry) {
            (false, _) => Recovery::Claim,
            (true, true) => Recovery::Retry,
            (true, false) => Recovery::Abandon,
        }
    }
}

/// The fires of scheduled tasks: each instant claimed once under a fence, begun, finished
/// (contracts 2 and 9); their history and its purge.
#[async_trait]
pub trait FireStore: Send + Sync {
    /// Claims one instant in one write (contract 2): accepted only if `claim.token` is the
    /// task's current token, the assignment names the claimant's incarnation, the claimant's
    /// registration is alive by store time, and the instant has no record yet. With
    /// `claim.begin`, an accepted claim is also begun (contract 9): its record is then as
    /// [`FireStore::begin_fires`] leaves it.
    async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome>;

    /// Claims several instants of one claimant at once, each under the rule of
    /// [`FireStore::claim`]; returns one outcome per claim, in order. Stores override it to
    /// use one statement (instants of many tasks often coincide).
    async fn claim_batch(&self, claims: &[Claim]) -> Result<Vec<ClaimOutcome>> {
        let mut out = Vec::with_capacity(claims.len());
        for c in claims {
            out.push(self.claim(c).await?);
        }
        Ok(out)
    }

    /// Marks fires claimed by `member` as begun, right before their work starts (contract
    /// 9): a claim alone says the instant is taken, a begun fire says its work may have run.
    /// Each is accepted only for the record claimed under its token and attempt by `member`,
    /// while the claim's fence holds (current token, live registration). Returns one answer
    /// per fire, in order: `true` if it is now begun by `member` (by this call or an earlier
    /// one whose reply was lost), `false` if its work must not start (fenced, taken over).
    async fn begin_fires(&self, member: &Member, fires: &[Begin]) -> Result<Vec<bool>>;

    /// Records several outcomes at once, each under the rule of [`FireStore::finish`].
    async fn finish_batch(&self, cluster: &str, finishes: &[Finish]) -> Result<()> {
        for f in finishes {
            self.finish(cluster, f).await?;
        }
        Ok(())
    }

    /// Records misfired instants (not started) under the same fencing rule as `claim`.
    /// Returns how many were recorded. One batch of claims with the `misfired` outcome.
    async fn record_misfires(
        &self,
        member: &Member,
        task: &str,
        token: i64,
        instants: &[i64],
        message: &str,
    ) -> Result<u64> {
        let claims: Vec<Claim> = instants
            .iter()
            .map(|&instant_ms| Claim {
                member: member.clone(),
                task: task.to_string(),
                instant_ms,
                token,
                outcome: Outcome::Misfired,
                message: Some(message.to_string()),
                begin: false,
            })
            .collect();
        let outcomes = self.claim_batch(&claims).await?;
        Ok(outcomes
            .iter()
            .filter(|o| **o == ClaimOutcome::Claimed)
            .count() as u64)
    }

    /// Records how a running fire ended. Only the row with this token and attempt changes.
    async fn finish(&self, cluster: &str, finish: &Finish) -> Result<()>;

    /// The latest instant of `task` with any record: where a new owner resumes.
    async fn last_instant(&self, cluster: &str, task: &str) -> Result<Option<i64>>;

    /// Fires of `task` recorded as running, with the liveness of their node.
    async fn running_fires(&self, cluster: &str, task: &str) -> Result<Vec<RunningFire>>;

    /// [`FireStore::running_fires`], then [`FireStore::last_instant`], of each of `tasks`, in
    /// their order: what a node that just became their owner reads, in few statements when
    /// thousands of tasks change hands at once. Each task's running fires are read no later
    /// than its last instant. The default reads task by task.
    async fn takeovers(&self, cluster: &str, tasks: &[String]) -> Result<Vec<Takeover>> {
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            let running = self.running_fires(cluster, task).await?;
            let last_instant = self.last_instant(cluster, task).await?;
            out.push(Takeover {
                running,
                last_instant,
            });
        }
        Ok(out)
    }

    /// Takes over a `running` fire whose node died (or that the caller's own incarnation lost
    /// track of), fenced like `claim`, and only in the state `fire` describes (same token,
    /// attempt, begun or not). A fire never begun is claimed again under the new token, same
    /// attempt (nothing ran); `Claimed` is returned and the caller begins it. A begun fire
    /// (contract 9) with `retry` is claimed again for attempt + 1 (`Claimed`); without, it
    /// is recorded as abandoned (`Claimed` too). Only one caller can take over a given state.
    async fn recover_fire(
        &self,
        member: &Member,
        task: &str,
        token: i64,
        fire: &RunningFire,
        retry: bool,
    ) -> Result<ClaimOutcome>;

    /// Ends `attempt` of a fire that `member` began under `token` and whose work failed, and
    /// readies the instant for attempt + 1 (the task's retry policy): its record stays
    /// `running`, with attempt + 1, not begun, and `message` (what failed, when the next
    /// attempt starts). Fenced like `claim`; only the record in that state changes. The
    /// next attempt then begins with [`FireStore::begin_fires`], by this member or, if it
    /// dies or loses the task first, by the task's next owner (a fire never begun).
    async fn retry_fire(
        &self,
        member: &Member,
        fire: &Begin,
        message: &str,
    ) -> Result<ClaimOutcome>;
}
