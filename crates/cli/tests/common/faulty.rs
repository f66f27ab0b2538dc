//! A store that passes every call to a real store, with faults injected on named methods:
//! the call fails before reaching the store, or reaches it and its reply is lost or late.
//! For the deterministic tests of faults that timing alone cannot place (a reply lost after
//! a commit, a pause between a commit and its reply).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use rota::{
    core::control::Ack,
    store::{
        AckFilter, Assignment, AssignmentChange, Begin, CacheChange, CacheEntry, CacheOutcome,
        CacheStore, CacheWrite, Claim, ClaimOutcome, ClusterView, CommandRecord, CommandStore,
        DeclaredSet, EventRecord, EventStore, Expect, Finish, FireRecord, FireStore, HistoryStore,
        ItemClaim, ItemEnd, ItemRecord, ItemStore, JoinOutcome, JoinRequest, LeaderWrite,
        Leadership, Member, MembershipStore, PlacementStore, RegistrationDeclares, RunningFire,
        SessionStore, StatementCounts, Store, Takeover,
    },
    Error, Result,
};

/// What happens to the next calls of one method.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Fails without reaching the store.
    Fail,
    /// Fails without reaching the store, this much later (a call that timed out).
    FailAfter(Duration),
    /// Reaches the store, then the reply is lost (a retryable error).
    LoseReply,
    /// Reaches the store, then the reply arrives this much later.
    DelayReply(Duration),
    /// Reaches the store, then blocks the calling thread this long before the reply: on a
    /// one-thread runtime the whole node is frozen, as under SIGSTOP, and the reply is the
    /// first thing it sees when it thaws.
    FreezeAfterCommit(Duration),
}

pub struct FaultyStore {
    inner: Arc<dyn Store>,
    /// Per method: faults for its next calls, in order.
    planned: Mutex<HashMap<&'static str, Vec<Fault>>>,
    /// Per method: calls that met a fault.
    pub struck: Mutex<HashMap<&'static str, usize>>,
    /// Per method: calls that met a fault and have returned to their caller.
    replied: Mutex<HashMap<&'static str, usize>>,
    /// Items whose claims always fail (by prefix), and how often they did.
    failing_items: Mutex<Vec<String>>,
    pub item_failures: std::sync::atomic::AtomicUsize,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn Store>) -> Arc<FaultyStore> {
        Arc::new(FaultyStore {
            inner,
            planned: Mutex::default(),
            struck: Mutex::default(),
            replied: Mutex::default(),
            failing_items: Mutex::default(),
            item_failures: Default::default(),
        })
    }

    /// The next call of `method` meets `fault` (after any planned before).
    pub fn plan(&self, method: &'static str, fault: Fault) {
        self.planned
            .lock()
            .unwrap()
            .entry(method)
            .or_default()
            .push(fault);
    }

    /// Every claim of an item whose key starts with `prefix` fails from now on, as for a
    /// record the store cannot read.
    pub fn fail_items(&self, prefix: &str) {
        self.failing_items.lock().unwrap().push(prefix.to_string());
    }

    pub fn struck(&self, method: &'static str) -> usize {
        Self::count(&self.struck, method)
    }

    /// Calls of `method` that met a fault and whose (failed, lost or late) reply has
    /// reached the caller.
    pub fn replied(&self, method: &'static str) -> usize {
        Self::count(&self.replied, method)
    }

    fn count(counts: &Mutex<HashMap<&'static str, usize>>, method: &'static str) -> usize {
        counts.lock().unwrap().get(method).copied().unwrap_or(0)
    }

    async fn call<T>(
        &self,
        method: &'static str,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let fault = {
            let mut planned = self.planned.lock().unwrap();
            planned
                .get_mut(method)
                .filter(|f| !f.is_empty())
                .map(|f| f.remove(0))
        };
        let Some(fault) = fault else {
            return call.await;
        };
        *self.struck.lock().unwrap().entry(method).or_default() += 1;
        let reply = match fault {
            Fault::Fail => Err(Error::StoreUnavailable(format!(
                "injected: {method} failed"
            ))),
            Fault::FailAfter(d) => {
                tokio::time::sleep(d).await;
                Err(Error::StoreUnavailable(format!(
                    "injected: {method} timed out"
                )))
            }
            Fault::LoseReply => {
                let _ = call.await;
                Err(Error::StoreUnavailable(format!(
                    "injected: the reply to {method} was lost"
                )))
            }
            Fault::DelayReply(d) => {
                let reply = call.await;
                tokio::time::sleep(d).await;
                reply
            }
            Fault::FreezeAfterCommit(d) => {
                let reply = call.await;
                std::thread::sleep(d);
                reply
            }
        };
        *self.replied.lock().unwrap().entry(method).or_default() += 1;
        reply
    }
}

/// No session locks: the faults injected here are judged by the node timeout.
impl SessionStore for FaultyStore {}

#[async_trait]
impl Store for FaultyStore {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn statements(&self) -> StatementCounts {
        self.inner.statements()
    }

    async fn prepare(&self, migrate: bool) -> Result<()> {
        self.call("prepare", self.inner.prepare(migrate)).await
    }

    async fn now_ms(&self) -> Result<i64> {
        self.call("now_ms", self.inner.now_ms()).await
    }
}

#[async_trait]
impl MembershipStore for FaultyStore {
    async fn join(&self, req: &JoinRequest) -> Result<JoinOutcome> {
        self.call("join", self.inner.join(req)).await
    }

    async fn heartbeat(&self, member: &Member, not_after_ms: i64) -> Result<bool> {
        self.call("heartbeat", self.inner.heartbeat(member, not_after_ms))
            .await
    }

    async fn mark_leaving(&self, member: &Member) -> Result<()> {
        self.call("mark_leaving", self.inner.mark_leaving(member))
            .await
    }

    async fn leave(&self, member: &Member) -> Result<()> {
        self.call("leave", self.inner.leave(member)).await
    }

    async fn view(&self, cluster: &str) -> Result<ClusterView> {
        self.call("view", self.inner.view(cluster)).await
    }

    async fn registrations_declared(
        &self,
        cluster: &str,
        only: Option<&[(String, i64)]>,
    ) -> Result<Vec<RegistrationDeclares>> {
        self.call(
            "registrations_declared",
            self.inner.registrations_declared(cluster, only),
        )
        .await
    }

    async fn declared_sets(
        &self,
        cluster: &str,
        digests: &[String],
    ) -> Result<HashMap<String, DeclaredSet>> {
        self.call("declared_sets", self.inner.declared_sets(cluster, digests))
            .await
    }

    async fn subscribe(&self, cluster: &str) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.subscribe(cluster).await
    }

    async fn generation(&self, cluster: &str) -> Result<i64> {
        self.call("generation", self.inner.generation(cluster))
            .await
    }

    async fn acquire_leadership(&self, member: &Member) -> Result<Option<Leadership>> {
        self.call("acquire_leadership", self.inner.acquire_leadership(member))
            .await
    }

    async fn release_leadership(&self, member: &Member) -> Result<()> {
        self.call("release_leadership", self.inner.release_leadership(member))
            .await
    }
}

#[async_trait]
impl PlacementStore for FaultyStore {
    async fn assignments(&self, cluster: &str) -> Result<Vec<Assignment>> {
        self.call("assignments", self.inner.assignments(cluster))
            .await
    }

    async fn assignments_since(&self, cluster: &str, generation: i64) -> Result<Vec<Assignment>> {
        self.call(
            "assignments_since",
            self.inner.assignments_since(cluster, generation),
        )
        .await
    }

    async fn write_assignments(
        &self,
        leader: &Member,
        epoch: i64,
        changes: &[AssignmentChange],
    ) -> Result<LeaderWrite> {
        self.call(
            "write_assignments",
            self.inner.write_assignments(leader, epoch, changes),
        )
        .await
    }
}

#[async_trait]
impl CommandStore for FaultyStore {
    async fn lead_commands(
        &self,
        leader: &Member,
        epoch: i64,
        acks: &[Ack],
        command: Option<&str>,
    ) -> Result<LeaderWrite> {
        self.call(
            "lead_commands",
            self.inner.lead_commands(leader, epoch, acks, command),
        )
        .await
    }

    async fn append_command(&self, cluster: &str, body: &str) -> Result<(i64, i64)> {
        self.call("append_command", self.inner.append_command(cluster, body))
            .await
    }

    async fn commands(&self, cluster: &str, after: i64, limit: i64) -> Result<Vec<CommandRecord>> {
        self.call("commands", self.inner.commands(cluster, after, limit))
            .await
    }

    async fn ack_command(&self, cluster: &str, ack: &Ack) -> Result<()> {
        self.call("ack_command", self.inner.ack_command(cluster, ack))
            .await
    }

    async fn command_acks(&self, cluster: &str, filter: AckFilter<'_>) -> Result<Vec<Ack>> {
        self.call("command_acks", self.inner.command_acks(cluster, filter))
            .await
    }
}

#[async_trait]
impl FireStore for FaultyStore {
    async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome> {
        self.call("claim", self.inner.claim(claim)).await
    }

    async fn claim_batch(&self, claims: &[Claim]) -> Result<Vec<ClaimOutcome>> {
        self.call("claim_batch", self.inner.claim_batch(claims))
            .await
    }

    async fn begin_fires(&self, member: &Member, fires: &[Begin]) -> Result<Vec<bool>> {
        self.call("begin_fires", self.inner.begin_fires(member, fires))
            .await
    }

    async fn finish_batch(&self, cluster: &str, finishes: &[Finish]) -> Result<()> {
        self.call("finish_batch", self.inner.finish_batch(cluster, finishes))
            .await
    }

    async fn record_misfires(
        &self,
        member: &Member,
        task: &str,
        token: i64,
        instants: &[i64],
        message: &str,
    ) -> Result<u64> {
        self.call(
            "record_misfires",
            self.inner
                .record_misfires(member, task, token, instants, message),
        )
        .await
    }

    async fn finish(&self, cluster: &str, finish: &Finish) -> Result<()> {
        self.call("finish", self.inner.finish(cluster, finish))
            .await
    }

    async fn last_instant(&self, cluster: &str, task: &str) -> Result<Option<i64>> {
        self.call("last_instant", self.inner.last_instant(cluster, task))
            .await
    }

    async fn takeovers(&self, cluster: &str, tasks: &[String]) -> Result<Vec<Takeover>> {
        self.call("takeovers", self.inner.takeovers(cluster, tasks))
            .await
    }

    async fn running_fires(&self, cluster: &str, task: &str) -> Result<Vec<RunningFire>> {
        self.call("running_fires", self.inner.running_fires(cluster, task))
            .await
    }

    async fn recover_fire(
        &self,
        member: &Member,
        task: &str,
        token: i64,
        fire: &RunningFire,
        retry: bool,
    ) -> Result<ClaimOutcome> {
        self.call(
            "recover_fire",
            self.inner.recover_fire(member, task, token, fire, retry),
        )
        .await
    }

    async fn retry_fire(
        &self,
        member: &Member,
        fire: &Begin,
        message: &str,
    ) -> Result<ClaimOutcome> {
        self.call("retry_fire", self.inner.retry_fire(member, fire, message))
            .await
    }
}

#[async_trait]
impl ItemStore for FaultyStore {
    async fn claim_item(
        &self,
        member: &Member,
        service: &str,
        token: i64,
        item: &str,
    ) -> Result<ItemClaim> {
        let failing = self
            .failing_items
            .lock()
            .unwrap()
            .iter()
            .any(|p| item.starts_with(p.as_str()));
        if failing {
            self.item_failures
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return Err(Error::StoreUnavailable(format!(
                "injected: the claim of {item} failed"
            )));
        }
        self.call(
            "claim_item",
            self.inner.claim_item(member, service, token, item),
        )
        .await
    }

    async fn recover_item(
        &self,
        member: &Member,
        service: &str,
        token: i64,
        item: &str,
        record: &ItemRecord,
        retry: bool,
    ) -> Result<ClaimOutcome> {
        self.call(
            "recover_item",
            self.inner
                .recover_item(member, service, token, item, record, retry),
        )
        .await
    }

    async fn finish_item(&self, cluster: &str, ended: &ItemEnd<'_>) -> Result<()> {
        self.call("finish_item", self.inner.finish_item(cluster, ended))
            .await
    }
}

#[async_trait]
impl HistoryStore for FaultyStore {
    async fn history(
        &self,
        cluster: &str,
        task: Option<&str>,
        limit: i64,
    ) -> Result<Vec<FireRecord>> {
        self.call("history", self.inner.history(cluster, task, limit))
            .await
    }

    async fn fire(&self, cluster: &str, task: &str, instant_ms: i64) -> Result<Option<FireRecord>> {
        self.call("fire", self.inner.fire(cluster, task, instant_ms))
            .await
    }

    async fn purge_history(&self, cluster: &str, before_ms: i64) -> Result<u64> {
        self.call(
            "purge_history",
            self.inner.purge_history(cluster, before_ms),
        )
        .await
    }
}

#[async_trait]
impl EventStore for FaultyStore {
    async fn record_event(&self, cluster: &str, event: &EventRecord) -> Result<()> {
        self.call("record_event", self.inner.record_event(cluster, event))
            .await
    }

    async fn events(&self, cluster: &str, limit: i64) -> Result<Vec<EventRecord>> {
        self.call("events", self.inner.events(cluster, limit)).await
    }
}

#[async_trait]
impl CacheStore for FaultyStore {
    async fn cache_get(&self, cluster: &str, cache: &str, key: &str) -> Result<Option<CacheEntry>> {
        self.call("cache_get", self.inner.cache_get(cluster, cache, key))
            .await
    }

    async fn cache_put(&self, cluster: &str, write: &CacheWrite<'_>) -> Result<CacheOutcome> {
        self.call("cache_put", self.inner.cache_put(cluster, write))
            .await
    }

    async fn cache_delete(
        &self,
        cluster: &str,
        cache: &str,
        key: &str,
        expect: Expect,
    ) -> Result<CacheOutcome> {
        self.call(
            "cache_delete",
            self.inner.cache_delete(cluster, cache, key, expect),
        )
        .await
    }

    async fn cache_keys(
        &self,
        cluster: &str,
        cache: &str,
        prefix: &str,
        limit: i64,
    ) -> Result<Vec<String>> {
        self.call(
            "cache_keys",
            self.inner.cache_keys(cluster, cache, prefix, limit),
        )
        .await
    }

    async fn save_task_state(
        &self,
        cluster: &str,
        task: &str,
        token: i64,
        value: &[u8],
    ) -> Result<bool> {
        self.call(
            "save_task_state",
            self.inner.save_task_state(cluster, task, token, value),
        )
        .await
    }

    async fn cache_changes(
        &self,
        cluster: &str,
    ) -> Option<tokio::sync::broadcast::Receiver<CacheChange>> {
        self.inner.cache_changes(cluster).await
    }
}
