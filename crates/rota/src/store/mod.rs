//! The coordination store: the one place where nodes meet. Nodes never talk to each other.
//!
//! Every implementation must give the guarantees written on each method of [`Store`]; they
//! are the contract (`docs/contract.md`) broken down to single calls, and the conformance suite
//! (`tests/conformance.rs`) checks each of them on every store. All times are store times in
//! Unix milliseconds, read from the store itself (`now()`), never from the caller's clock.

pub mod sql;
#[cfg(feature = "zookeeper")]
pub mod zk;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;

pub use crate::core::control::{Ack, AckState, Command};
use crate::{
    core::{outcome::Outcome, placement::NodeMeta},
    Error, Result,
};

/// Who a node is in the store: its id and the incarnation of this start.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Member {
    pub cluster: String,
    pub node: String,
    pub incarnation: i64,
}

/// One task as a node declares it (stored with the node's registration).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Declaration {
    pub name: String,
    /// Digest of the definition: two nodes declaring one name with different hashes conflict.
    pub hash: String,
    /// Human description of the schedule, for `rota status`.
    pub schedule: String,
}

/// What a node asks for when it joins.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member: Member,
    /// The store considers the node dead this long after its last renewal.
    pub timeout_ms: i64,
    /// Host name, for operators and for recognising one's own crashed predecessor.
    pub host: String,
    /// Identifies the process (`boot-id:pid:start-time`), see the node's `identity` module.
    pub process: String,
    pub declared: Vec<Declaration>,
    /// Labels and placement specs, for the leader's placement.
    pub meta: NodeMeta,
    /// Replace this live incarnation of the same id (it is our own crashed predecessor).
    pub replaces: Option<i64>,
}

/// A registered node as the store sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub node: String,
    pub incarnation: i64,
    pub joined_at_ms: i64,
    pub heartbeat_at_ms: i64,
    pub timeout_ms: i64,
    pub leaving: bool,
    /// Judged by the store: its last renewal is no older than its timeout.
    pub alive: bool,
    pub host: String,
    pub process: String,
}

/// The tasks one registration declared, with its labels and placement specs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDeclarations {
    pub node: String,
    pub incarnation: i64,
    pub declared: Vec<Declaration>,
    pub meta: NodeMeta,
}

/// How a registration's declarations are kept in the store (one JSON document).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Registration {
    pub tasks: Vec<Declaration>,
    #[serde(default, skip_serializing_if = "NodeMeta::is_empty")]
    pub meta: NodeMeta,
}

/// Answer to a join.
#[derive(Debug, Clone)]
pub enum JoinOutcome {
    Joined {
        now_ms: i64,
    },
    /// A live node holds this id; the caller decides whether it is its own predecessor.
    Occupied(NodeRecord),
}

/// The elected leader of a cluster and its epoch (contract 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    pub node: String,
    pub incarnation: i64,
    pub epoch: i64,
}

/// A consistent-enough picture of the cluster, read in one go.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub now_ms: i64,
    pub generation: i64,
    pub nodes: Vec<NodeRecord>,
    pub leader: Option<Leadership>,
}

/// The current owner of a task and its fencing token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub task: String,
    /// `None` while unplaced.
    pub owner: Option<(String, i64)>,
    pub token: i64,
    /// Why the task is unplaced, when it is.
    pub reason: Option<String>,
    /// Store time of the task's first placement on an owner (0 while it never had one): a
    /// new owner of a task with no recorded fire resumes from here, so an instant due before
    /// the first owner died is not lost, and time spent unplaced is not counted as missed.
    pub placed_at_ms: i64,
}

/// One change the leader writes: give `task` to `owner` (or to nobody, with a reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentChange {
    pub task: String,
    pub owner: Option<(String, i64)>,
    pub reason: Option<String>,
    /// The token the leader saw; `None` if the task had no assignment row yet.
    pub expected_token: Option<i64>,
}

/// Answer to a fenced leader write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderWrite {
    Written,
    /// The epoch is no longer current: nothing was written.
    Deposed,
    /// An assignment changed since the leader read it: nothing was written; read and retry.
    Stale,
}

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
    /// Its work began (see [`Store::begin_fires`]); a fire claimed but not begun never ran.
    pub begun: bool,
}

impl RunningFire {
    /// Claimed under another token than `token` (the task's current one) and never begun:
    /// a begin needs the current token, so its claimant, alive or not, can no longer begin
    /// it. Nothing runs it and nothing will; the current owner takes it over.
    pub fn stranded(&self, token: i64) -> bool {
        !self.begun && self.token != token
    }
}

/// A claimed fire whose work is about to start (see [`Store::begin_fires`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    pub task: String,
    pub instant_ms: i64,
    pub token: i64,
    pub attempt: i64,
}

/// How a store takes over a record left `running` (see [`Store::recover_fire`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// Claimed but never begun: claimed again under the new token, same attempt.
    Claim,
    /// Begun: run again under the new token, attempt + 1.
    Retry,
    /// Begun: recorded as abandoned.
    Abandon,
    /// An item released by its owner at a handover: handled again, attempt + 1.
    Reclaim,
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

/// Answer to [`Store::claim_item`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemClaim {
    /// Recorded as running, attempt 1, under the caller's token.
    Claimed,
    /// The item already has a record: handled, being handled, or left by a dead node.
    Recorded(ItemRecord),
    /// The token is not the service's current one, or the claimant's registration is dead.
    Fenced,
}

/// How the handling of an item ended (see [`Store::finish_item`]).
#[derive(Debug, Clone)]
pub struct ItemEnd<'a> {
    pub service: &'a str,
    pub item: &'a str,
    pub token: i64,
    pub attempt: i64,
    pub outcome: Outcome,
    pub message: Option<&'a str>,
}

/// The coordination store. Each method is one short transaction (or one statement).
///
/// Errors: [`Error::StoreUnavailable`] for anything a retry may fix (connection lost,
/// timeout, busy); other variants are not retryable.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Short name of the backend (`sqlite`, `postgres`, ...).
    fn kind(&self) -> &'static str;

    /// Statements sent so far by this store handle (for load measurements and metrics).
    fn statements(&self) -> StatementCounts {
        StatementCounts::default()
    }

    /// Creates or migrates the schema to this build's version when `migrate` is true;
    /// otherwise fails with [`Error::Schema`] unless the schema is present and current.
    async fn prepare(&self, migrate: bool) -> Result<()>;

    /// The store's clock, Unix ms.
    async fn now_ms(&self) -> Result<i64>;

    /// Registers the node (contract 10). If a *live* registration holds the id and is not
    /// `req.replaces`, nothing is written and [`JoinOutcome::Occupied`] describes it. Otherwise
    /// the registration is replaced atomically by the new incarnation, whose join and
    /// heartbeat times are the store's now; the tokens of a replaced incarnation are dead,
    /// since claims require the claimant's current incarnation.
    async fn join(&self, req: &JoinRequest) -> Result<JoinOutcome>;

    /// Renews the node's registration, judged by store time. Returns `false`, writing nothing,
    /// if the registration is gone, belongs to another incarnation, or has already expired:
    /// an expired node can never renew back to life; it must join again. Also `false` if the
    /// store's clock has passed `not_after_ms`: a renewal that arrives after the sender gave
    /// up on it (and fenced itself) must not keep a fenced node looking alive.
    async fn heartbeat(&self, member: &Member, not_after_ms: i64) -> Result<bool>;

    /// Marks the node as leaving (graceful stop): placement gives it nothing more.
    async fn mark_leaving(&self, member: &Member) -> Result<()>;

    /// Removes the node's registration and any leadership it holds, at once.
    async fn leave(&self, member: &Member) -> Result<()>;

    /// Nodes with liveness judged by store time, the leader, and the cluster's generation.
    /// The generation increases with every change of membership, leadership, declarations or
    /// assignments (not with heartbeats or fires), so a poll of it is cheap. The rows are at
    /// least as new as the generation returned (read it first): a node that takes the
    /// generation as seen must not miss a registration counted in it.
    async fn view(&self, cluster: &str) -> Result<ClusterView>;

    /// What each registered node declared. Declarations change only with registrations, so
    /// callers re-read them when the generation changes, never at heartbeat rate.
    /// `only`: just these registrations `(node, incarnation)`; `None`: all of the cluster.
    async fn declarations(
        &self,
        cluster: &str,
        only: Option<&[(String, i64)]>,
    ) -> Result<Vec<NodeDeclarations>>;

    /// Where the store can push (PostgreSQL LISTEN/NOTIFY), a counter that increases soon
    /// after every generation change of `cluster`, so nodes react at once. `None` where it
    /// cannot: nodes then rely on polling [`Store::generation`], which stays the safety net.
    async fn subscribe(&self, _cluster: &str) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// The cluster's generation alone (see [`Store::view`]).
    async fn generation(&self, cluster: &str) -> Result<i64>;

    /// Becomes leader if there is none, or if the recorded leader's registration is dead,
    /// gone, or of another incarnation; the epoch then increases by one. Returns the
    /// leadership in force after the call (ours or another's). At most one node holds a
    /// given epoch, and epochs only increase (contract 6).
    async fn acquire_leadership(&self, member: &Member) -> Result<Option<Leadership>>;

    /// Gives up leadership if `member` holds it; others may acquire at once.
    async fn release_leadership(&self, member: &Member) -> Result<()>;

    /// Every task's assignment in the cluster.
    async fn assignments(&self, cluster: &str) -> Result<Vec<Assignment>>;

    /// The assignments changed by generations after `generation` (a generation read before
    /// from [`Store::generation`] or [`Store::view`]): with what was read up to it, the
    /// whole table as of any later generation read. A row may come back although it did
    /// not change. Stores without change tracking return every row (the default).
    async fn assignments_since(&self, cluster: &str, _generation: i64) -> Result<Vec<Assignment>> {
        self.assignments(cluster).await
    }

    /// Writes placement changes as the leader of `epoch`, all or nothing. Refused
    /// ([`LeaderWrite::Deposed`]) unless `leader` holds `epoch` and is alive, judged inside
    /// the same transaction. Every change of owner increases the task's token by one
    /// (fencing tokens strictly increase per task, and never repeat).
    async fn write_assignments(
        &self,
        leader: &Member,
        epoch: i64,
        changes: &[AssignmentChange],
    ) -> Result<LeaderWrite>;

    /// Writes, as the leader of `epoch`, acknowledgements on other nodes' behalf and at most
    /// one command (the steps of a rolling restart), all or nothing. Refused
    /// ([`LeaderWrite::Deposed`]) unless `leader` holds `epoch` and is alive, judged inside
    /// the same write (contract 6): a leader that stalled past its lease cannot act after
    /// its successor. Acknowledgements replace the node's earlier one, as in
    /// [`Store::ack_command`]; the command is appended as by [`Store::append_command`].
    async fn lead_commands(
        &self,
        leader: &Member,
        epoch: i64,
        acks: &[Ack],
        command: Option<&str>,
    ) -> Result<LeaderWrite>;

    /// Claims one instant in one write (contract 2): accepted only if `claim.token` is the
    /// task's current token, the assignment names the claimant's incarnation, the claimant's
    /// registration is alive by store time, and the instant has no record yet.
    async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome>;

    /// Claims several instants of one claimant at once, each under the rule of
    /// [`Store::claim`]; returns one outcome per claim, in order. Stores override it to
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

    /// Records several outcomes at once, each under the rule of [`Store::finish`].
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

    /// Claims a unit of a long-running service's work (`item`: at most 255 bytes) in one
    /// write, fenced like [`Store::claim`] by the service's assignment: accepted only under
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

    /// Recent fires, newest first, of one task or all.
    async fn history(
        &self,
        cluster: &str,
        task: Option<&str>,
        limit: i64,
    ) -> Result<Vec<FireRecord>>;

    /// Deletes finished fires with instants before `before_ms` (keeping each task's newest),
    /// item records finished before it, and events before it. Returns the number of fires and
    /// items deleted.
    async fn purge_history(&self, cluster: &str, before_ms: i64) -> Result<u64>;

    /// Appends a command (its JSON `body`, opaque to the store) to the cluster's log and
    /// returns `(seq, issued_at_ms)`. The sequence number is the cluster's next generation:
    /// above every earlier command's, so the log is totally ordered, and nodes watching the
    /// generation see the command at once. Durable when this returns; a failed call appends
    /// nothing.
    async fn append_command(&self, cluster: &str, body: &str) -> Result<(i64, i64)>;

    /// The commands after `after`, in sequence order, at most `limit`. Never pruned.
    async fn commands(&self, cluster: &str, after: i64, limit: i64) -> Result<Vec<CommandRecord>>;

    /// Records `ack` (inserting or replacing the node's acknowledgement of that command),
    /// stamped with store time (`ack.at_ms` is ignored). Durable when this returns.
    async fn ack_command(&self, cluster: &str, ack: &Ack) -> Result<()>;

    /// The acknowledgements of some commands (by every node), or of one node (of every
    /// command), ordered by sequence number then node.
    async fn command_acks(&self, cluster: &str, filter: AckFilter<'_>) -> Result<Vec<Ack>>;

    /// Records an event of the cluster's journal (joins, leaves, deaths, failovers, leader
    /// changes). Idempotent per `event.id`: recording an id that is present changes nothing,
    /// so several nodes may report the same fact. Durable when this returns. Events older
    /// than the history retention are deleted by [`Store::purge_history`].
    async fn record_event(&self, cluster: &str, event: &EventRecord) -> Result<()>;

    /// The newest events, newest first (by id, which starts with the time), at most `limit`.
    async fn events(&self, cluster: &str, limit: i64) -> Result<Vec<EventRecord>>;

    /// The live entry of `key` in the named cache, or `None` (absent, deleted, or expired by
    /// store time). Linearizable: it reflects every write that completed before the call.
    async fn cache_get(&self, cluster: &str, cache: &str, key: &str) -> Result<Option<CacheEntry>>;

    /// Writes `value` under `key` if the entry is as `expect` says, atomically; `ttl_ms`
    /// makes it expire that long after this write, by store time. Each write of a key gives
    /// it a higher version than any it had before, deletes and expiries included, so a
    /// compare-and-set on a version never succeeds against a later incarnation of the key
    /// (within the history retention: [`Store::purge_history`] removes tombstones and expired
    /// entries older than that, and a key written after that starts again at version 1).
    async fn cache_put(&self, cluster: &str, write: &CacheWrite<'_>) -> Result<CacheOutcome>;

    /// Deletes `key` if the entry is as `expect` says. The key keeps its version (a
    /// tombstone), see `cache_put`. With no live entry, nothing changes: `Done` at version 0
    /// (or a conflict for [`Expect::Version`]).
    async fn cache_delete(
        &self,
        cluster: &str,
        cache: &str,
        key: &str,
        expect: Expect,
    ) -> Result<CacheOutcome>;

    /// The live keys of a cache that start with `prefix`, in order, at most `limit`.
    async fn cache_keys(
        &self,
        cluster: &str,
        cache: &str,
        prefix: &str,
        limit: i64,
    ) -> Result<Vec<String>>;

    /// Saves a task's own state, fenced: only while `token` is the task's current fencing
    /// token (`task` is the assignment's name). `false`: refused, the task has moved on.
    /// The state lives in the cache [`TASK_STATE_CACHE`] under the task's name.
    async fn save_task_state(
        &self,
        cluster: &str,
        task: &str,
        token: i64,
        value: &[u8],
    ) -> Result<bool>;

    /// Where the store can push (PostgreSQL NOTIFY, ZooKeeper watches): every write and
    /// delete of a cache entry of `cluster` as `(cache, key)`, soon after it commits, for
    /// near caches to drop their copy. `None` where it cannot: near caches then keep a copy
    /// only for a bounded time.
    async fn cache_changes(
        &self,
        _cluster: &str,
    ) -> Option<tokio::sync::broadcast::Receiver<CacheChange>> {
        None
    }
}

/// The cache that holds tasks' own state (see [`Store::save_task_state`]).
pub const TASK_STATE_CACHE: &str = "rota.task-state";

/// A cache entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub value: Vec<u8>,
    /// Higher after every write of the key (see [`Store::cache_put`]).
    pub version: i64,
    /// Store time when it expires, if it has a TTL.
    pub expires_at_ms: Option<i64>,
}

/// What a cache write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Anything: write unconditionally.
    Any,
    /// No live entry (absent, deleted or expired).
    Absent,
    /// The live entry at exactly this version.
    Version(i64),
}

/// One write of a cache entry.
#[derive(Debug, Clone)]
pub struct CacheWrite<'a> {
    pub cache: &'a str,
    pub key: &'a str,
    pub value: &'a [u8],
    /// Expires this long after the write, by store time.
    pub ttl_ms: Option<i64>,
    pub expect: Expect,
}

/// The answer to a conditional cache write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Done; the key's version now (a delete's tombstone has one too).
    Done { version: i64 },
    /// The entry was not as expected: nothing changed. Its live version, if any.
    Conflict { current: Option<i64> },
}

/// A cache entry written or deleted (pushed by stores that can). An empty `cache` is about
/// the push itself: [`CacheChange::everything`] when it (re)connects (anything may have
/// changed meanwhile), [`CacheChange::lost`] when it stops (nothing is pushed until the
/// next `everything`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheChange {
    pub cache: String,
    pub key: String,
}

impl CacheChange {
    /// The push is (re)connected: anything may have changed.
    pub fn everything() -> CacheChange {
        CacheChange {
            cache: String::new(),
            key: String::new(),
        }
    }

    /// The push stopped: changes go unreported until the next [`CacheChange::everything`].
    pub fn lost() -> CacheChange {
        CacheChange {
            cache: String::new(),
            key: "lost".into(),
        }
    }
}

/// One entry of the cluster's event journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// Unique, and ordered like time: see [`EventRecord::new`].
    pub id: String,
    pub at_ms: i64,
    /// `node_joined`, `node_left`, `node_died`, `failover`, `leader_changed`.
    pub kind: String,
    /// The event's fields as a JSON object (opaque to the store).
    pub body: String,
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

/// One entry of a cluster's command log, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    pub seq: i64,
    pub issued_at_ms: i64,
    /// The command as JSON ([`crate::core::control::CommandBody`]).
    pub body: String,
}

impl CommandRecord {
    /// The command, or a store error naming the entry that cannot be read.
    pub fn parse(&self) -> Result<Command> {
        let body = serde_json::from_str(&self.body).map_err(|e| {
            Error::Store(format!(
                "command #{} in the log cannot be read: {e}",
                self.seq
            ))
        })?;
        Ok(Command {
            seq: self.seq,
            issued_at_ms: self.issued_at_ms,
            body,
        })
    }
}

/// Every command after `after`, in order, read a page at a time (the log is never pruned).
pub async fn commands_after(
    store: &dyn Store,
    cluster: &str,
    mut after: i64,
) -> Result<Vec<CommandRecord>> {
    const PAGE: i64 = 1000;
    let mut out = Vec::new();
    loop {
        let page = store.commands(cluster, after, PAGE).await?;
        let full = page.len() as i64 == PAGE;
        if let Some(last) = page.last() {
            after = last.seq;
        }
        out.extend(page);
        if !full {
            return Ok(out);
        }
    }
}

/// Which acknowledgements [`Store::command_acks`] returns.
#[derive(Debug, Clone, Copy)]
pub enum AckFilter<'a> {
    /// Of these commands, by every node.
    Commands(&'a [i64]),
    /// Of this node, for every command.
    Node(&'a str),
}

/// Applies changed rows to the assignments held (rows are never deleted).
pub fn merge_assignments(held: &mut Vec<Assignment>, changed: Vec<Assignment>) {
    if changed.is_empty() {
        return;
    }
    let index: std::collections::HashMap<String, usize> = held
        .iter()
        .enumerate()
        .map(|(i, a)| (a.task.clone(), i))
        .collect();
    for a in changed {
        match index.get(&a.task) {
            Some(&i) => held[i] = a,
            None => held.push(a),
        }
    }
}

/// Statements sent by one store handle since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatementCounts {
    pub reads: u64,
    pub writes: u64,
}

/// Opens the store named by `url`; the scheme picks the backend: `sqlite://`, `postgres://`,
/// `mysql://`. Backends are compiled in by cargo features.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    // Without `://` the whole URL would be the scheme: never show it unredacted.
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    match scheme {
        "sqlite" | "postgres" | "postgresql" | "mysql" | "mariadb" => Ok(Arc::new(sql::SqlStore::connect(url).await?)),
        #[cfg(feature = "zookeeper")]
        "zookeeper" => Ok(Arc::new(zk::ZkStore::connect(url).await?)),
        _ => Err(Error::config(
            "store.url",
            format!(
                "`{}` has an unknown scheme `{scheme}`; use sqlite:///path/to/rota.db, postgres://user@host/db or mysql://user@host/db",
                redact_url(url)
            ),
        )),
    }
}

/// How long start-up keeps retrying a store that is briefly unavailable (a deadlock between
/// nodes starting together, a database restarting) before giving up.
const STARTUP_PATIENCE: Duration = Duration::from_secs(60);

/// Retries `step` while it fails with a retryable error, with backoff and jitter, for up to
/// [`STARTUP_PATIENCE`]. Fatal errors (schema, duplicate id, configuration) return at once.
pub async fn retry_transient<T, F, Fut>(what: &str, mut step: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        match step().await {
            Err(e) if e.is_retryable() && started.elapsed() < STARTUP_PATIENCE => {
                tracing::warn!(error = %e, "{what} failed; retrying");
                let jitter =
                    Duration::from_millis(rand::random::<u64>() % (delay.as_millis() as u64 + 1));
                tokio::time::sleep(delay + jitter).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// The URL with every secret in it replaced by `***`: the password, and the value of each
/// query parameter whose name says it holds a secret (`password`, `api_key`, `token`, `sig`,
/// ...). The one redaction for every URL rota prints, logs or stores, whatever shape it has:
/// a password holding `/`, `?` or `@`, a URL without `//` (`postgres:rota:pw@db`), or no
/// scheme at all (`rota:pw@db`). Where it cannot tell a password from a path it hides too
/// much rather than too little.
pub fn redact_url(url: &str) -> String {
    let (prefix, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (&url[..scheme.len() + 3], rest),
        None => ("", url),
    };
    let mut out = String::from(prefix);
    // The userinfo ends at an `@`: the last one in the authority when the authority holds
    // one. Otherwise a password may hold a `/` or `?` that cut the authority short: then it
    // ends at the first run of `@`s when what precedes it holds a `:`, unless what came
    // before the cut is a host and port (`h:8443/notify?to=ops@example.com`).
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let host_and_port = authority.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && (1..=5).contains(&port.len())
            && port.bytes().all(|b| b.is_ascii_digit())
    });
    let at = authority.rfind('@').or_else(|| {
        if host_and_port && !prefix.is_empty() {
            return None;
        }
        let first = rest.find('@')?;
        let end = rest[first..]
            .find(['/', '?', '#'])
            .map_or(rest.len(), |i| first + i);
        rest[..end]
            .rfind('@')
            .filter(|&at| rest[..at].contains(':'))
    });
    let after_userinfo = match at {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.rfind(':').filter(|_| !prefix.is_empty()) {
                // user:password, with `//`: the user stays.
                Some(_) => {
                    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
                    out.push_str(user);
                    out.push_str(":***");
                }
                // Only a user name.
                None if !prefix.is_empty() => out.push_str(userinfo),
                // Without `//`, which part is the password is a guess: keep only what
                // precedes the first `:` (a scheme or a user name).
                None => match userinfo.split_once(':') {
                    Some((head, _)) => {
                        out.push_str(head);
                        out.push_str(":***");
                    }
                    None => out.push_str("***"),
                },
            }
            out.push('@');
            &rest[at + 1..]
        }
        None => rest,
    };
    match after_userinfo.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            out.push_str(&redact_query(query));
        }
        None => out.push_str(after_userinfo),
    }
    out
}

/// A query string with the value of each parameter named like a secret replaced by `***`.
fn redact_query(query: &str) -> String {
    const SECRET_NAMES: [&str; 9] = [
        "pass",
        "pwd",
        "secret",
        "token",
        "key",
        "auth",
        "sig",
        "credential",
        "session",
    ];
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let mut out = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _))
                if SECRET_NAMES
                    .iter()
                    .any(|s| name.to_ascii_lowercase().contains(s)) =>
            {
                format!("{name}=***")
            }
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&");
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_leave_redaction() {
        assert_eq!(
            redact_url("postgres://rota:s3cret@db:5432/rota"),
            "postgres://rota:***@db:5432/rota"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/rota.db"),
            "sqlite:///var/lib/rota.db"
        );
        assert_eq!(redact_url("mysql://rota@db/rota"), "mysql://rota@db/rota");
    }

    #[test]
    fn every_shape_of_secret_in_a_url_is_hidden() {
        for (url, shown) in [
            // A password holding `/`, `?` or `@`.
            (
                "postgres://rota:pa/ss@db/rota",
                "postgres://rota:***@db/rota",
            ),
            (
                "postgres://rota:pa?ss@db/rota",
                "postgres://rota:***@db/rota",
            ),
            (
                "mysql://rota:p@ss@db:3306/rota",
                "mysql://rota:***@db:3306/rota",
            ),
            // Without `//`, or without a scheme.
            ("postgres:rota:s3cret@db/rota", "postgres:***@db/rota"),
            ("rota:s3cret@db", "rota:***@db"),
            ("s3cret@db", "***@db"),
            // Secrets in the query, whatever their case.
            (
                "postgres://rota@db/rota?sslmode=require&password=s3cret",
                "postgres://rota@db/rota?sslmode=require&password=***",
            ),
            (
                "https://api.example/v1/push?API_KEY=s3cret&team=ops#top",
                "https://api.example/v1/push?API_KEY=***&team=ops#top",
            ),
            (
                "https://h/x?access_token=s3cret&sig=s3cret&Auth=s3cret",
                "https://h/x?access_token=***&sig=***&Auth=***",
            ),
            // Nothing secret: unchanged.
            ("https://h:8443/users?id=7", "https://h:8443/users?id=7"),
            (
                "https://h:8443/notify?to=ops@example.com",
                "https://h:8443/notify?to=ops@example.com",
            ),
            (
                "zookeeper://a:2181,b:2181/rota",
                "zookeeper://a:2181,b:2181/rota",
            ),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
            assert!(!redact_url(url).contains("s3cret"), "{url}");
        }
    }

    #[tokio::test]
    async fn a_store_url_that_cannot_be_opened_keeps_its_password() {
        for url in [
            "postgres:rota:s3cret@db/rota",
            "rota:s3cret@db",
            "postgress://rota:s3cret@db/rota",
            "zookeeper:/rota:s3cret@zk",
        ] {
            let error = super::open(url).await.err().expect(url).to_string();
            assert!(!error.contains("s3cret"), "{url}: {error}");
        }
    }
}
