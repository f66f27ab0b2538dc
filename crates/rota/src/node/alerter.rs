//! The leader's alert sender: every round it gathers what went wrong (fires that ended badly,
//! from the history; deaths and leader changes, from the journal; tasks unplaced too long;
//! tasks overdue for a success) and sends each alert to each sink that wants it, once
//! cluster-wide. An alert is claimed in [`ALERTS_CACHE`] before it is sent and marked
//! delivered after: a leader that finds it claimed by another sender leaves it, unless the
//! claim is older than [`CLAIM_STALE`] (its sender died before delivering), and one that
//! finds it delivered never sends it again.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::shared::Shared;
use crate::{
    alerts::{Alert, AlertKind, AlertSpec, ALERTS_CACHE},
    error::Result,
    store::{CacheOutcome, CacheWrite, Expect},
    task::Outcome,
};

/// How often the leader looks for alerts.
const ROUND: Duration = Duration::from_secs(2);
/// How far back an alert is still sent (a leader that was away longer drops older ones).
const LOOKBACK_MS: i64 = 15 * 60_000;
/// The newest fires looked at per round.
const FIRES_PER_ROUND: i64 = 200;
/// A claim older than this whose sender never marked it delivered is sent again.
const CLAIM_STALE: Duration = Duration::from_secs(30);
/// The longest wait for one delivery.
const DELIVERY_LIMIT: Duration = Duration::from_secs(10);
/// Retries of a failed delivery back off from 1 s to this.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Runs the sender until `stop` (the end of this node's leadership).
pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut alerter = Alerter {
        shared,
        done: HashSet::new(),
        failing: HashMap::new(),
        unplaced_since: HashMap::new(),
        last_ok: HashMap::new(),
    };
    info!(
        sinks = alerter.shared.alerts.len(),
        "sending alerts (leader)"
    );
    loop {
        if let Err(e) = alerter.round(&stop).await {
            debug!(error = %e, "alert round failed; next round soon");
        }
        tokio::select! {
            _ = tokio::time::sleep(ROUND) => {}
            _ = stop.cancelled() => return,
        }
    }
}

struct Alerter {
    shared: Arc<Shared>,
    /// `<sink>/<alert id>` delivered (by anyone) or claimed by a live sender.
    done: HashSet<String>,
    /// Failed deliveries: attempts so far and when to try again.
    failing: HashMap<String, (u32, Instant)>,
    /// When this leader first saw each (task, token) unplaced, store time.
    unplaced_since: HashMap<(String, i64), i64>,
    /// Each watched task's last ok fire as known (`None`: none yet), and whether the task's
    /// history confirmed it since it looked overdue: the history of a task is read when it is
    /// first watched and when it looks overdue, not at every round.
    last_ok: HashMap<String, (Option<i64>, bool)>,
}

impl Alerter {
    /// Writes the delivery record `key` as `value` if it is as `expect` says; it expires
    /// with the history.
    async fn mark(&self, key: &str, value: &str, expect: Expect) -> Result<CacheOutcome> {
        let write = CacheWrite {
            cache: ALERTS_CACHE,
            key,
            value: value.as_bytes(),
            ttl_ms: Some(self.shared.timing.history_retention.as_millis() as i64),
            expect,
        };
        self.shared
            .store
            .cache_put(&self.shared.member().cluster, &write)
            .await
    }

    async fn round(&mut self, stop: &CancellationToken) -> Result<()> {
        let alerts = self.gather().await?;
        let specs = self.shared.alerts.clone();
        for alert in &alerts {
            for spec in specs.iter().filter(|s| s.wants(alert)) {
                if stop.is_cancelled() {
                    return Ok(());
                }
                self.deliver(spec, alert).await?;
            }
        }
        Ok(())
    }

    /// What went wrong in the last [`LOOKBACK_MS`], oldest first.
    async fn gather(&mut self) -> Result<Vec<Alert>> {
        let store = &self.shared.store;
        let cluster = self.shared.member().cluster;
        let now = self.shared.clock.now_ms();
        let since = now - LOOKBACK_MS;
        let mut alerts = Vec::new();
        let fires = store.history(&cluster, None, FIRES_PER_ROUND).await?;
        for f in &fires {
            let kind = match f.outcome {
                Outcome::Failed => AlertKind::FireFailed,
                Outcome::TimedOut => AlertKind::FireTimedOut,
                Outcome::Misfired => AlertKind::FireMisfired,
                Outcome::Skipped => AlertKind::FireSkipped,
                Outcome::Abandoned => AlertKind::FireAbandoned,
                _ => continue,
            };
            let at = f.finished_at_ms.unwrap_or(f.instant_ms);
            if at < since {
                continue;
            }
            alerts.push(Alert {
                id: format!(
                    "{}-{}-{}-{}",
                    kind.as_str(),
                    f.task,
                    f.instant_ms,
                    f.attempt
                ),
                kind,
                at_ms: at,
                task: Some(f.task.clone()),
                node: Some(f.node.clone()),
                instant_ms: Some(f.instant_ms),
                message: f.message.clone(),
                unplaced_ms: None,
            });
        }
        for e in store.events(&cluster, 200).await? {
            let kind = match e.kind.as_str() {
                "node_died" => AlertKind::NodeDied,
                "leader_changed" => AlertKind::LeaderChanged,
                _ => continue,
            };
            if e.at_ms < since {
                continue;
            }
            let body: serde_json::Value = serde_json::from_str(&e.body).unwrap_or_default();
            alerts.push(Alert {
                id: e.id.clone(),
                kind,
                at_ms: e.at_ms,
                task: None,
                node: body["node"].as_str().map(str::to_string),
                instant_ms: None,
                message: None,
                unplaced_ms: None,
            });
        }
        let assignments = store.assignments(&cluster).await?;
        self.unplaced_since.retain(|(task, token), _| {
            assignments
                .iter()
                .any(|a| a.task == *task && a.token == *token && a.owner.is_none())
        });
        for a in assignments.iter().filter(|a| a.owner.is_none()) {
            let first = *self
                .unplaced_since
                .entry((a.task.clone(), a.token))
                .or_insert(now);
            alerts.push(Alert {
                id: format!("task_unplaced-{}-{}", a.task, a.token),
                kind: AlertKind::TaskUnplaced,
                at_ms: first,
                task: Some(a.task.clone()),
                node: None,
                instant_ms: None,
                message: a.reason.clone(),
                unplaced_ms: Some(now - first),
            });
        }
        // The dead man's switch of the tasks this node declares.
        for spec in self.shared.tasks.values() {
            let Some(within) = spec.expect_success_within else {
                continue;
            };
            let placed = assignments
                .iter()
                .find(|a| a.task == spec.name)
                .map_or(0, |a| a.placed_at_ms);
            // Ok fires among the newest of all tasks move the known one on.
            let seen = fires
                .iter()
                .filter(|f| f.task == spec.name && f.outcome == Outcome::Ok)
                .filter_map(|f| f.finished_at_ms)
                .max();
            let known = self.last_ok.get(&spec.name).copied();
            let mut last_ok = known.and_then(|(ok, _)| ok).max(seen);
            let looks_due = |ok: Option<i64>| {
                ok.or((placed > 0).then_some(placed))
                    .is_some_and(|base| now > base + within.as_millis() as i64)
            };
            let confirmed = known.is_some_and(|(ok, confirmed)| confirmed && ok == last_ok);
            if known.is_none() || (looks_due(last_ok) && !confirmed) {
                let recent = store.history(&cluster, Some(&spec.name), 100).await?;
                let read = recent
                    .iter()
                    .filter(|f| f.outcome == Outcome::Ok)
                    .filter_map(|f| f.finished_at_ms)
                    .max();
                last_ok = last_ok.max(read);
            }
            self.last_ok
                .insert(spec.name.clone(), (last_ok, looks_due(last_ok)));
            if let Some(ok) = last_ok {
                self.shared.metrics.last_success(&spec.name, ok);
            }
            let Some(base) = last_ok.or((placed > 0).then_some(placed)) else {
                continue;
            };
            let due = base + within.as_millis() as i64;
            if now > due {
                alerts.push(Alert {
                    id: format!("task_overdue-{}-{base}", spec.name),
                    kind: AlertKind::TaskOverdue,
                    at_ms: due,
                    task: Some(spec.name.clone()),
                    node: None,
                    instant_ms: None,
                    message: Some(format!(
                        "no fire ended ok within {} ms (expect_success_within){}",
                        within.as_millis(),
                        if last_ok.is_some() {
                            ""
                        } else {
                            " of its first placement"
                        }
                    )),
                    unplaced_ms: None,
                });
            }
        }
        alerts.sort_by_key(|a| a.at_ms);
        Ok(alerts)
    }

    /// Sends `alert` to `spec`'s sink unless it was delivered or is being delivered.
    async fn deliver(&mut self, spec: &AlertSpec, alert: &Alert) -> Result<()> {
        let key = format!("{}/{}", spec.name, alert.id);
        if self.done.contains(&key) {
            return Ok(());
        }
        if self
            .failing
            .get(&key)
            .is_some_and(|(_, next)| Instant::now() < *next)
        {
            return Ok(());
        }
        let member = self.shared.member();
        let store = &self.shared.store;
        let now = self.shared.clock.now_ms();
        let claim = json!({"state": "sending", "by": member.node, "at_ms": now}).to_string();
        // Claim it: nobody else sends it meanwhile.
        let claimed = self.mark(&key, &claim, Expect::Absent).await?;
        let version = match claimed {
            CacheOutcome::Done { version } => version,
            CacheOutcome::Conflict { .. } => {
                let Some(entry) = store.cache_get(&member.cluster, ALERTS_CACHE, &key).await?
                else {
                    return Ok(()); // expired meanwhile: the next round claims it
                };
                let v: serde_json::Value = serde_json::from_slice(&entry.value).unwrap_or_default();
                let stale = v["state"] == "sending"
                    && v["at_ms"]
                        .as_i64()
                        .is_some_and(|at| now - at > CLAIM_STALE.as_millis() as i64);
                if !stale {
                    // Delivered, or being delivered by a sender that may still do it.
                    if v["state"] == "delivered" {
                        self.done.insert(key);
                    }
                    return Ok(());
                }
                let retaken = self
                    .mark(&key, &claim, Expect::Version(entry.version))
                    .await?;
                match retaken {
                    CacheOutcome::Done { version } => version,
                    CacheOutcome::Conflict { .. } => return Ok(()),
                }
            }
        };
        let attempts = self.failing.get(&key).map_or(0, |(n, _)| *n) + 1;
        match spec.send(&member.cluster, alert, DELIVERY_LIMIT).await {
            Ok(()) => {
                info!(sink = %spec.name, alert = %alert.id, "alert delivered");
                self.shared.metrics.alert(&spec.name, true);
                let done = json!({"state": "delivered", "by": member.node, "at_ms": self.shared.clock.now_ms(), "attempts": attempts}).to_string();
                self.mark(&key, &done, Expect::Version(version)).await?;
                self.failing.remove(&key);
                self.done.insert(key);
            }
            Err(e) => {
                self.shared.metrics.alert(&spec.name, false);
                let backoff = Duration::from_secs(1u64 << (attempts - 1).min(9)).min(MAX_BACKOFF);
                warn!(sink = %spec.name, alert = %alert.id, attempts, error = %e, retry_in_s = backoff.as_secs(), "alert not delivered");
                self.failing
                    .insert(key.clone(), (attempts, Instant::now() + backoff));
                // Give the claim back, so that the next attempt (here or on a new leader)
                // is not held off.
                store
                    .cache_delete(
                        &member.cluster,
                        ALERTS_CACHE,
                        &key,
                        Expect::Version(version),
                    )
                    .await?;
            }
        }
        Ok(())
    }
}
