//! One owned service under one fencing token: waits until no other node runs it, records
//! the instance, runs the handler and restarts it with backoff, cancels it with a grace
//! period when the service moves.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::shared::Shared;
use crate::{
    error::Result,
    service::{ItemStart, Ownership, ServiceContext, ServiceSpec},
    store::{Begin, Claim, ClaimOutcome, Finish, ItemClaim, ItemEnd, Member},
    task::{Outcome, RecoveryPolicy},
};

/// How often a new owner looks whether the previous owner's instance has ended.
const HANDOVER_POLL: Duration = Duration::from_millis(100);
/// A run this long resets the restart backoff.
const STABLE_RUN: Duration = Duration::from_secs(60);

pub(crate) async fn run(
    shared: Arc<Shared>,
    spec: ServiceSpec,
    token: i64,
    stop: CancellationToken,
) {
    let member = shared.member();
    let span = tracing::info_span!("service", node = %member.node, service = %spec.name, token);
    async move {
        let Some(instant) = start_instance(&shared, &spec, &member, token, &stop).await else {
            return;
        };
        let ownership = Arc::new(NodeOwnership {
            shared: shared.clone(),
            member: member.clone(),
            service: spec.name.clone(),
            token,
            recovery: spec.recovery,
            term: shared.work_token(),
            in_progress: Mutex::default(),
        });
        let (outcome, message) = supervise(&shared, &spec, &member, token, &stop, ownership).await;
        let finish = Finish {
            task: spec.name.clone(),
            instant_ms: instant,
            token,
            attempt: 1,
            outcome,
            message: Some(message),
        };
        super::runner::record_finish(&shared, &finish).await;
    }
    .instrument(span)
    .await
}

/// One attempt to record a service's instance.
enum InstanceStart {
    /// Recorded as running at this instant (store time).
    Started(i64),
    /// Another live node still runs it: look again shortly.
    Wait,
    /// This token is no longer the service's.
    Fenced,
}

/// Begins a claimed instance record (see `FireStore::begin_fires`): started, or fenced.
async fn begin_instance(
    shared: &Shared,
    spec: &ServiceSpec,
    member: &Member,
    token: i64,
    instant: i64,
    attempt: i64,
) -> Result<InstanceStart> {
    let begin = Begin {
        task: spec.name.clone(),
        instant_ms: instant,
        token,
        attempt,
    };
    Ok(if shared.batcher.begin(member.clone(), begin).await? {
        InstanceStart::Started(instant)
    } else {
        InstanceStart::Fenced
    })
}

/// Waits until no other live node runs the service (a previous owner within its grace
/// period), settles instances of dead nodes, and records this one as running. `None` when
/// stopped or fenced meanwhile.
async fn start_instance(
    shared: &Shared,
    spec: &ServiceSpec,
    member: &Member,
    token: i64,
    stop: &CancellationToken,
) -> Option<i64> {
    let store = &shared.store;
    let mut waiting_logged = false;
    loop {
        if stop.is_cancelled() || !shared.lease_valid() {
            return None;
        }
        let attempt: Result<InstanceStart> = async {
            let mut elsewhere = false;
            for f in store.running_fires(&member.cluster, &spec.name).await? {
                let mine = f.node == member.node && f.incarnation == member.incarnation;
                if f.stranded(token) || (mine && !f.begun) {
                    // Claimed but never begun (its claimant lost the service before it could
                    // begin): nothing runs it. Take it over as this instance.
                    if store
                        .recover_fire(member, &spec.name, token, &f, false)
                        .await?
                        == ClaimOutcome::Claimed
                    {
                        return begin_instance(
                            shared,
                            spec,
                            member,
                            token,
                            f.instant_ms,
                            f.attempt,
                        )
                        .await;
                    }
                    continue;
                }
                // One runner per service in this process: a running record of ours is a
                // previous runner's that could not record its end.
                if !f.node_alive || mine {
                    // A dead node's instance may go on until its own deadline (a store
                    // clock step expires nodes early): wait that out (contract 12).
                    if !mine && !shared.wait_out_lease(&f.node, f.incarnation, stop).await {
                        return Ok(InstanceStart::Fenced);
                    }
                    store
                        .recover_fire(member, &spec.name, token, &f, false)
                        .await?;
                } else {
                    elsewhere = true;
                }
            }
            if elsewhere {
                return Ok(InstanceStart::Wait);
            }
            let instant = shared.clock.now_ms();
            let claim = Claim {
                member: member.clone(),
                task: spec.name.clone(),
                instant_ms: instant,
                token,
                outcome: Outcome::Running,
                message: None,
                begin: false,
            };
            match shared.batcher.claim(claim).await? {
                // Begun at once: the instance starts right after (see `FireStore::begin_fires`).
                ClaimOutcome::Claimed => {
                    begin_instance(shared, spec, member, token, instant, 1).await
                }
                ClaimOutcome::AlreadyClaimed => Ok(InstanceStart::Wait),
                ClaimOutcome::Fenced => Ok(InstanceStart::Fenced),
            }
        }
        .await;
        match attempt {
            Ok(InstanceStart::Fenced) => {
                debug!("instance refused: this token is no longer current");
                return None;
            }
            Ok(InstanceStart::Started(instant)) => return Some(instant),
            Ok(InstanceStart::Wait) if !waiting_logged => {
                info!("waiting for the previous owner's instance to stop");
                waiting_logged = true;
            }
            Ok(InstanceStart::Wait) => {}
            Err(e) => debug!(error = %e, "cannot start the instance yet"),
        }
        tokio::select! {
            _ = tokio::time::sleep(HANDOVER_POLL) => {}
            _ = stop.cancelled() => return None,
        }
    }
}

/// Runs the handler until stopped, restarting it with backoff. Returns how the instance ended.
async fn supervise(
    shared: &Arc<Shared>,
    spec: &ServiceSpec,
    member: &Member,
    token: i64,
    stop: &CancellationToken,
    ownership: Arc<NodeOwnership>,
) -> (Outcome, String) {
    let mut restarts = 0u32;
    loop {
        let cancel = stop.child_token();
        let ctx = ServiceContext {
            cluster: member.cluster.clone(),
            service: spec.name.clone(),
            node: member.node.clone(),
            token,
            restarts,
            grace: spec.grace,
            cancel: cancel.clone(),
            ownership: ownership.clone(),
            state: crate::cache::TaskState::new(
                shared.store.clone(),
                &member.cluster,
                &spec.name,
                token,
            ),
        };
        info!(restarts, "service started");
        let began = Instant::now();
        // Tracked with the fires, so that a graceful stop waits for it.
        let work = spec.handler.run(ctx);
        let in_process = spec.handler.in_process();
        let guarded = shared.clone();
        let mut handle = shared
            .fires
            .spawn(async move { guarded.guarded(in_process, work).await }.in_current_span());
        let ended = tokio::select! {
            ended = &mut handle => Some(ended),
            _ = stop.cancelled() => None,
        };
        let Some(ended) = ended else {
            // Moved or stopping: ask the handler to stop, give it its grace. Lease lost: the
            // lease's margin bounds it (contract 12), and the work guard ends what remains.
            cancel.cancel();
            // A command service's process group is the work guard's to end by then; the
            // handler returns once it is reaped.
            let grace = if shared.lease_valid() || !spec.handler.in_process() {
                spec.grace
            } else {
                spec.grace.min(shared.timing.fence_margin / 4)
            };
            let message = match tokio::time::timeout(grace, &mut handle).await {
                Ok(_) => "stopped".to_string(),
                Err(_) => {
                    handle.abort();
                    let _ = handle.await;
                    warn!(
                        grace_ms = spec.grace.as_millis(),
                        "the service did not stop within its grace period; dropped"
                    );
                    format!(
                        "stopped: dropped after its grace period of {} ms",
                        spec.grace.as_millis()
                    )
                }
            };
            info!("service stopped");
            return (Outcome::Ok, message);
        };
        let why = match ended {
            Ok(Ok(())) => "returned".to_string(),
            Ok(Err(e)) => format!("failed: {e}"),
            Err(e) => format!("panicked: {e}"),
        };
        restarts = if began.elapsed() >= STABLE_RUN {
            1
        } else {
            restarts + 1
        };
        let delay = spec.backoff(restarts);
        warn!(
            restarts,
            delay_ms = delay.as_millis(),
            "service {why}; restarting after the backoff"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => return (Outcome::Failed, format!("stopped while waiting to restart; last run {why}")),
        }
    }
}

/// A service's ownership as its node knows it, and its items in the store.
struct NodeOwnership {
    shared: Arc<Shared>,
    member: Member,
    service: String,
    token: i64,
    recovery: RecoveryPolicy,
    /// The lease term the service started in: it ends when the lease is lost.
    term: CancellationToken,
    /// Items this instance is handling now, each with the count of this node's lease
    /// breaks when it was handed over.
    in_progress: Mutex<HashMap<String, u64>>,
}

impl NodeOwnership {
    /// Hands `item` to the handler as `attempt`: noted here and in the process.
    fn handle(&self, item: &str, attempt: i64) -> ItemStart {
        let breaks = self.shared.lease_breaks();
        self.in_progress
            .lock()
            .unwrap()
            .insert(item.to_string(), breaks);
        self.shared
            .items_begun
            .lock()
            .unwrap()
            .insert((self.service.clone(), item.to_string()));
        ItemStart::Handle { attempt }
    }
}

#[async_trait]
impl Ownership for NodeOwnership {
    fn still_owner(&self) -> bool {
        !self.term.is_cancelled()
            && self.shared.lease_valid()
            && self.shared.member().incarnation == self.member.incarnation
    }

    async fn begin_item(&self, item: &str) -> Result<ItemStart> {
        let store = &self.shared.store;
        if !self.still_owner() {
            return Ok(ItemStart::NotOwner);
        }
        let record = match store
            .claim_item(&self.member, &self.service, self.token, item)
            .await?
        {
            // The reply may come after a freeze longer than the lease: check again, as
            // fires do, before any work (contract 4).
            ItemClaim::Claimed if !self.still_owner() => return Ok(ItemStart::NotOwner),
            ItemClaim::Claimed => return Ok(self.handle(item, 1)),
            ItemClaim::Fenced => return Ok(ItemStart::NotOwner),
            ItemClaim::Recorded(record) => record,
        };
        let released = record.outcome == Outcome::Released;
        if record.outcome != Outcome::Running && !released {
            return Ok(ItemStart::Done(record.outcome));
        }
        let mine = record.node == self.member.node && record.incarnation == self.member.incarnation;
        if mine && self.in_progress.lock().unwrap().contains_key(item) {
            return Ok(ItemStart::Busy);
        }
        let begun_here = self
            .shared
            .items_begun
            .lock()
            .unwrap()
            .contains(&(self.service.clone(), item.to_string()));
        if mine && record.token == self.token && !begun_here && !released {
            // Claimed by this incarnation, but its instance ended before the claim's reply
            // came: no handler ever had it, so it is handled now, as that attempt.
            info!(
                item,
                "handling an item this node claimed but never handed over"
            );
            return Ok(self.handle(item, record.attempt));
        }
        if record.node_alive && !mine && !released {
            return Ok(ItemStart::Busy);
        }
        // Given back by its previous owner (handled again), or its node died mid-handling,
        // or this incarnation claimed it and lost track (as the recovery policy says).
        let retry = released || self.recovery == RecoveryPolicy::Retry;
        let outcome = store
            .recover_item(
                &self.member,
                &self.service,
                self.token,
                item,
                &record,
                retry,
            )
            .await?;
        Ok(match (outcome, retry) {
            (ClaimOutcome::Claimed, true) if !self.still_owner() => ItemStart::NotOwner,
            (ClaimOutcome::Claimed, true) if released => {
                info!(item, from_node = %record.node, "handling an item given back at a handover");
                self.handle(item, record.attempt + 1)
            }
            (ClaimOutcome::Claimed, true) => {
                warn!(item, dead_node = %record.node, "handling again an item whose node died mid-handling");
                self.handle(item, record.attempt + 1)
            }
            (ClaimOutcome::Claimed, false) => ItemStart::Abandoned,
            _ if self.still_owner() => ItemStart::Busy,
            _ => ItemStart::NotOwner,
        })
    }

    async fn end_item(
        &self,
        item: &str,
        attempt: i64,
        outcome: Outcome,
        message: Option<&str>,
    ) -> Result<()> {
        self.shared
            .store
            .finish_item(
                &self.member.cluster,
                &ItemEnd {
                    service: &self.service,
                    item,
                    token: self.token,
                    attempt,
                    outcome,
                    message,
                },
            )
            .await?;
        self.in_progress.lock().unwrap().remove(item);
        self.shared
            .items_begun
            .lock()
            .unwrap()
            .remove(&(self.service.clone(), item.to_string()));
        Ok(())
    }

    async fn give_back(&self, item: &str, attempt: i64) -> Result<bool> {
        // A graceful handover only if the lease held without a gap from the item's handover
        // until now: a lapse, even one a late renewal mended, may have cut the handler short
        // anywhere (the work guard, the margin's grace), as a crash would.
        let unbroken =
            self.in_progress.lock().unwrap().get(item).copied() == Some(self.shared.lease_breaks());
        let graceful = unbroken && self.still_owner();
        let (outcome, message) = match (graceful, self.recovery) {
            (true, _) => (
                Outcome::Released,
                "released: interrupted by a handover; the next owner hands it over again",
            ),
            (false, RecoveryPolicy::Retry) => (
                Outcome::Released,
                "released: interrupted when this node lost its lease; recovery `retry`: the next owner hands it over again",
            ),
            (false, RecoveryPolicy::Abandon) => (
                Outcome::Abandoned,
                "abandoned: interrupted when this node lost its lease (recovery `abandon`)",
            ),
        };
        // Recorded whatever the lease: the store changes only this attempt under this token,
        // and only while it is running, so a new owner that took it over already wins.
        self.end_item(item, attempt, outcome, Some(message)).await?;
        if outcome == Outcome::Abandoned {
            self.shared.metrics.fire(&self.service, Outcome::Abandoned);
        }
        Ok(outcome == Outcome::Released)
    }
}
