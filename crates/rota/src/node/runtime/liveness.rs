//! Staying alive in the store: the heartbeat on its own connection, the watchdog that
//! fences the node when its lease runs out, and the rejoin after an expiry.

use super::*;

/// Renews the registration every heartbeat; a refusal means the registration is gone.
pub(super) async fn heartbeat_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let timing = shared.timing.clone();
    let mut failures = 0u32;
    loop {
        let sent = Instant::now();
        let member = shared.member();
        let budget = timing.node_timeout - timing.fence_margin;
        let not_after = shared.clock.now_ms() + budget.as_millis() as i64;
        let renewal =
            tokio::time::timeout(budget, shared.store.heartbeat(&member, not_after)).await;
        let failed = !matches!(renewal, Ok(Ok(_)));
        let took = sent.elapsed();
        shared
            .metrics
            .store_call("heartbeat", took.as_secs_f64(), failed);
        if !failed && took > budget / 2 {
            // Half the lease gone in one renewal: the store (or the way to it) is slow.
            warn!(
                took_ms = took.as_millis() as u64,
                budget_ms = budget.as_millis() as u64,
                "slow renewal"
            );
        }
        match renewal {
            Ok(Ok(true)) => {
                // Only renew the lease of the incarnation the heartbeat was for.
                if shared.member().incarnation == member.incarnation {
                    shared.renew_lease(sent);
                }
                if failures > 0 {
                    info!(failures, "store reachable again");
                }
                failures = 0;
            }
            Ok(Ok(false)) => {
                if shared.member().incarnation == member.incarnation
                    && !shared.expired.swap(true, Ordering::SeqCst)
                {
                    warn!(
                        incarnation = member.incarnation,
                        "the store expired this node's registration"
                    );
                    shared.lease.lock().unwrap().revoke();
                }
            }
            Ok(Err(e)) => {
                failures += 1;
                if failures == 1 || failures % 25 == 0 {
                    warn!(error = %e, failures, "heartbeat failed; the store is unreachable");
                }
                shared.set_store_error(Some(e.to_string()));
            }
            Err(_) => {
                failures += 1;
                if failures == 1 || failures % 25 == 0 {
                    warn!(failures, "heartbeat timed out");
                }
                shared.set_store_error(Some("heartbeat timed out".into()));
            }
        }
        let due = sent + timing.heartbeat;
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = stop.cancelled() => return,
        }
        let late = Instant::now().saturating_duration_since(due);
        if late > timing.heartbeat {
            // This process was not run (a frozen or starved host, or blocking work on the
            // runtime's threads): the cause of a lease lost though the store was fine.
            warn!(
                late_ms = late.as_millis() as u64,
                "heartbeat held up in this process"
            );
        }
    }
}

/// Cancels all work the moment the local lease deadline passes, whatever the other loops
/// are waiting on (contract 4).
pub(super) async fn fence_watchdog(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let deadline = shared.lease.lock().unwrap().valid_until();
        let wake = deadline.unwrap_or_else(|| Instant::now() + shared.timing.heartbeat);
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = stop.cancelled() => return,
        }
        if !shared.lease_valid() {
            let work = shared.work_token();
            if !work.is_cancelled() {
                warn!("lease deadline passed without renewal: cancelling all work");
                work.cancel();
            }
            tokio::select! {
                _ = tokio::time::sleep(shared.timing.heartbeat) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

impl Runtime {
    /// Lost the lease: stop starting work and cancel running work now (contract 4).
    pub(super) fn fence(&mut self) {
        let work = self.shared.work_token();
        if !work.is_cancelled() {
            warn!("lease lost: stopping all work");
            work.cancel();
        }
        let tasks: Vec<String> = self
            .runners
            .keys()
            .chain(self.parked.keys())
            .cloned()
            .collect();
        for task in tasks {
            self.retire(&task);
        }
        self.epoch = None;
    }

    /// Our registration expired in the store: come back as a new incarnation.
    pub(super) async fn rejoin(&mut self) {
        let old = self.shared.member();
        let member = Member {
            incarnation: new_incarnation(),
            ..old.clone()
        };
        let sent = Instant::now();
        let joined = tokio::time::timeout(
            STORE_CALL_BOUND,
            join(
                self.shared.store.as_ref(),
                join_request(
                    &member,
                    &self.shared.timing,
                    &self.declared,
                    &self.meta,
                    self.session.as_ref().map(|h| h.key),
                ),
                None,
                &self.failed_joins,
            ),
        )
        .await
        .unwrap_or_else(|_| Err(Error::StoreUnavailable("join timed out".into())));
        match joined {
            Ok(now_ms) => {
                self.failed_joins.clear();
                *self.shared.member.write().unwrap() = member.clone();
                *self.shared.work.lock().unwrap() = CancellationToken::new();
                self.shared.renew_lease(sent);
                self.shared.clock.observe(now_ms, sent, Instant::now());
                self.shared.expired.store(false, Ordering::SeqCst);
                self.shared.set_store_error(None);
                self.view_at = None;
                info!(
                    old_incarnation = old.incarnation,
                    incarnation = member.incarnation,
                    "rejoined after losing the lease"
                );
                let host = identity::host_name();
                self.shared
                    .journal
                    .record(journal::joined(&member, now_ms, &host));
            }
            Err(e) => {
                debug!(error = %e, "rejoin failed; retrying");
                // It may have committed: then the next try replaces it (bounded memory).
                if self.failed_joins.len() < 64 {
                    self.failed_joins.push(member.incarnation);
                }
            }
        }
    }
}
