//! The live dashboard: its embedded page, the snapshot it renders (`/api/v1/dashboard`) and
//! the server-sent events that push a new snapshot when the cluster changes
//! (`/api/v1/stream`).
//!
//! One builder per admin server makes snapshots while someone watches: it rebuilds when the
//! cluster's generation changes (nodes, placements, commands), as the node serving the API
//! observes it (it already watches the store: push where the store can, a 50 ms poll
//! elsewhere), and at least every 2 s for fire outcomes, which do not move the generation.
//! Served without a node, it polls the store's generation every 100 ms. The fire
//! history behind counts and charts is re-read at most every 5 s. Every client of the stream
//! shares the same snapshots.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    pin::Pin,
    str::FromStr,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use http_body_util::BodyExt;
use hyper::{
    body::{Bytes, Frame},
    Response, StatusCode,
};
use serde_json::{json, Value};
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{
    api::{Api, Body, Problem},
    model::{command_json, fire_json, merge_events, Model},
};
use rota::{
    core::schedule::Schedule,
    store::{AckFilter, FireRecord},
    Outcome,
};

pub const INDEX_HTML: &str = include_str!("dashboard/index.html");
pub const DASHBOARD_JS: &str = include_str!("dashboard/dashboard.js");
pub const DASHBOARD_CSS: &str = include_str!("dashboard/dashboard.css");

/// Fire records behind the counts and charts (the newest; `window` in the snapshot).
const WINDOW_FIRES: i64 = 1000;
/// Minutes the charts cover.
const CHART_MINUTES: i64 = 30;
const POLL: Duration = Duration::from_millis(100);
/// Least time between two snapshots (a burst of changes makes one).
const MIN_INTERVAL: Duration = Duration::from_millis(200);
const REFRESH: Duration = Duration::from_secs(2);
const HISTORY_REFRESH: Duration = Duration::from_secs(5);
const KEEPALIVE: Duration = Duration::from_secs(15);

/// A static file of the page.
pub(super) fn asset(path: &str) -> Option<Response<Body>> {
    let (text, kind) = match path {
        "/" => (INDEX_HTML, "text/html; charset=utf-8"),
        "/assets/dashboard.js" => (DASHBOARD_JS, "text/javascript; charset=utf-8"),
        "/assets/dashboard.css" => (DASHBOARD_CSS, "text/css; charset=utf-8"),
        _ => return None,
    };
    Some(
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", kind)
            .header("cache-control", "no-cache")
            .header("x-content-type-options", "nosniff")
            .header(
                "content-security-policy",
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
            )
            .body(http_body_util::Full::new(Bytes::from_static(text.as_bytes())).boxed())
            .expect("valid response"),
    )
}

/// The fire history a snapshot is built from, kept between snapshots.
#[derive(Default)]
struct HistoryCache {
    fires: Vec<FireRecord>,
    read_at: Option<Instant>,
}

/// Builds snapshots on demand and, while the stream has clients, on every change.
pub(super) struct Monitor {
    api: Api,
    history: tokio::sync::Mutex<HistoryCache>,
    /// One snapshot is built at a time; readers that wait get a fresh one.
    building: tokio::sync::Semaphore,
    /// The last snapshot, and when it was built.
    last: Mutex<Option<(Instant, Arc<Value>)>>,
    latest: watch::Sender<Option<Arc<String>>>,
    running: Mutex<bool>,
    stop: CancellationToken,
}

impl Monitor {
    pub fn new(api: Api, stop: CancellationToken) -> Monitor {
        Monitor {
            api,
            history: tokio::sync::Mutex::default(),
            building: tokio::sync::Semaphore::new(1),
            last: Mutex::new(None),
            latest: watch::channel(None).0,
            running: Mutex::new(false),
            stop,
        }
    }

    /// A snapshot of the cluster, at most [`MIN_INTERVAL`] old: requests that come together
    /// share one build.
    pub async fn snapshot(&self) -> Result<Arc<Value>, Problem> {
        self.snapshot_of(None).await
    }

    /// [`Monitor::snapshot`], but never one older than `generation`: a shared snapshot
    /// built just before a change must not stand for it.
    async fn snapshot_of(&self, generation: Option<i64>) -> Result<Arc<Value>, Problem> {
        let fresh = || {
            self.last
                .lock()
                .unwrap()
                .as_ref()
                .filter(|(at, _)| at.elapsed() < MIN_INTERVAL)
                .filter(|(_, s)| {
                    generation.is_none_or(|g| s["generation"].as_i64().is_some_and(|sg| sg >= g))
                })
                .map(|(_, s)| s.clone())
        };
        if let Some(s) = fresh() {
            return Ok(s);
        }
        let _one = self.building.acquire().await.expect("never closed");
        if let Some(s) = fresh() {
            return Ok(s);
        }
        let snapshot = Arc::new(self.build().await?);
        *self.last.lock().unwrap() = Some((Instant::now(), snapshot.clone()));
        Ok(snapshot)
    }

    async fn build(&self) -> Result<Value, Problem> {
        let api = &self.api;
        let model = Model::read(api).await?;
        let now = model.members.view.now_ms;
        let fires = {
            let mut cache = self.history.lock().await;
            if cache
                .read_at
                .is_none_or(|at| at.elapsed() >= HISTORY_REFRESH)
            {
                cache.fires = api.store.history(&api.cluster, None, WINDOW_FIRES).await?;
                cache.read_at = Some(Instant::now());
            }
            cache.fires.clone()
        };
        let journal = api.store.events(&api.cluster, 200).await?;
        // The model read the command log already.
        let recent: Vec<_> = model.log.iter().rev().take(100).cloned().collect();
        let seqs: Vec<i64> = recent.iter().map(|c| c.seq).collect();
        let acks = api
            .store
            .command_acks(&api.cluster, AckFilter::Commands(&seqs))
            .await?;
        let commands: Vec<Value> = recent
            .iter()
            .take(20)
            .map(|c| command_json(c, &acks))
            .collect();
        let events = merge_events(&journal, &recent, &acks, &fires, 100);

        let mut by_task: BTreeMap<&str, Vec<&FireRecord>> = BTreeMap::new();
        for f in &fires {
            by_task.entry(f.task.as_str()).or_default().push(f);
        }
        let tasks: Vec<Value> = model
            .tasks_json(None)
            .into_iter()
            .map(|mut t| {
                let name = t["name"].as_str().unwrap_or_default().to_string();
                let own = by_task.get(name.as_str()).map(Vec::as_slice).unwrap_or(&[]);
                let next = (t["kind"] == "task" && t["state"] != "paused")
                    .then(|| {
                        t["schedule"]
                            .as_str()
                            .and_then(|s| Schedule::from_str(s).ok())
                    })
                    .flatten()
                    .and_then(|s| s.next_after(now));
                let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
                for f in own {
                    *counts.entry(f.outcome.as_str()).or_default() += 1;
                }
                t["next_fire_ms"] = json!(next);
                t["last"] = json!(own.iter().take(5).map(|f| fire_json(f)).collect::<Vec<_>>());
                t["counts"] = json!(counts);
                t
            })
            .collect();
        let mut nodes: Vec<&rota::store::NodeRecord> = model.members.view.nodes.iter().collect();
        nodes.sort_by_key(|n| (!n.alive, n.node.clone()));
        let nodes: Vec<Value> = nodes
            .into_iter()
            .map(|n| {
                let mut v = model.node_json(n);
                v["uptime_ms"] = json!(n.alive.then(|| now - n.joined_at_ms));
                v
            })
            .collect();
        let failovers: Vec<Value> = journal
            .iter()
            .rev()
            .filter(|e| e.kind == "failover")
            .filter_map(|e| {
                serde_json::from_str::<Value>(&e.body)
                    .ok()
                    .map(|b| (e.at_ms, b))
            })
            .map(|(at, b)| json!({"at_ms": at, "from": b["from"], "duration_ms": b["duration_ms"]}))
            .collect();
        Ok(json!({
            "cluster": api.cluster,
            "answered_by": api.node,
            "store": api.store.kind(),
            "now_ms": now,
            "generation": model.members.view.generation,
            "leader": model.members.leader().map(|l| json!({"node": l.node, "epoch": l.epoch})),
            "nodes": nodes,
            "tasks": tasks,
            "commands": commands,
            "events": events,
            "charts": {"minutes": minutes(&fires, now), "failovers": failovers},
            "window": {"fires": fires.len(), "since_ms": fires.last().map(|f| f.instant_ms)},
        }))
    }

    /// A stream of snapshots for one client: the latest at once, then each change.
    pub async fn stream(self: &Arc<Self>) -> Result<Response<Body>, Problem> {
        let mut latest = self.latest.subscribe();
        self.ensure_running();
        // The first message at once: the latest snapshot, or a fresh one.
        let ready = latest.borrow_and_update().clone();
        let first = match ready {
            Some(s) => s,
            None => Arc::new(self.snapshot().await?.to_string()),
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let stop = self.stop.clone();
        tokio::spawn(async move {
            // A client that stops reading is dropped after this long.
            let send = |bytes: Bytes| {
                let tx = tx.clone();
                async move {
                    matches!(
                        tokio::time::timeout(KEEPALIVE, tx.send(bytes)).await,
                        Ok(Ok(()))
                    )
                }
            };
            if !send(frame(&first)).await {
                return;
            }
            let mut sent = first;
            loop {
                tokio::select! {
                    changed = latest.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let next = latest.borrow_and_update().clone();
                        let Some(next) = next else { continue };
                        if Arc::ptr_eq(&next, &sent) || *next == *sent {
                            continue;
                        }
                        if !send(frame(&next)).await {
                            return; // the client went away
                        }
                        sent = next;
                    }
                    _ = tokio::time::sleep(KEEPALIVE) => {
                        if !send(Bytes::from_static(b": keepalive\n\n")).await {
                            return;
                        }
                    }
                    _ = tx.closed() => return, // the client went away
                    _ = stop.cancelled() => return,
                }
            }
        });
        Ok(Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-store")
            .header("x-accel-buffering", "no")
            .body(Channel(rx).boxed())
            .expect("valid response"))
    }

    /// Starts the builder unless it runs; it ends when the last client has gone.
    fn ensure_running(self: &Arc<Self>) {
        let mut running = self.running.lock().unwrap();
        if *running {
            return;
        }
        *running = true;
        let me = self.clone();
        tokio::spawn(async move {
            let mut generation = None;
            let mut built: Option<Instant> = None;
            // The serving node observes the generation already; follow it while it runs.
            let mut status = me.api.status.clone();
            let mut following = true;
            loop {
                let wait = if following { REFRESH } else { POLL };
                tokio::select! {
                    changed = status.changed(), if following => following = changed.is_ok(),
                    _ = tokio::time::sleep(wait) => {}
                    _ = me.stop.cancelled() => break,
                }
                {
                    // Under the lock that `ensure_running` takes: a client arriving now
                    // either finds this builder running or starts the next one.
                    let mut running = me.running.lock().unwrap();
                    if me.latest.receiver_count() == 0 {
                        *running = false;
                        return;
                    }
                }
                let now = if following {
                    Some(status.borrow_and_update().generation)
                } else {
                    me.api.store.generation(&me.api.cluster).await.ok()
                };
                let due = built.is_none_or(|b| b.elapsed() >= REFRESH);
                if now == generation && !due {
                    continue;
                }
                if let Ok(snapshot) = me.snapshot_of(now).await {
                    generation = now;
                    built = Some(Instant::now());
                    me.latest.send_replace(Some(Arc::new(snapshot.to_string())));
                }
            }
            *me.running.lock().unwrap() = false;
        });
    }
}

fn frame(snapshot: &str) -> Bytes {
    Bytes::from(format!("event: snapshot\ndata: {snapshot}\n\n"))
}

/// A response body fed by a channel.
struct Channel(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for Channel {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// Per minute of the last [`CHART_MINUTES`], oldest first: fires started, how many failed,
/// and their lateness (start after the scheduled instant).
fn minutes(fires: &[FireRecord], now_ms: i64) -> Vec<Value> {
    let first = (now_ms / 60_000 - CHART_MINUTES + 1) * 60_000;
    let mut buckets: Vec<(u64, u64, Vec<i64>)> = vec![(0, 0, Vec::new()); CHART_MINUTES as usize];
    for f in fires {
        let Some(started) = f.started_at_ms else {
            continue;
        };
        let i = (f.instant_ms - first).div_euclid(60_000);
        let Some(b) = usize::try_from(i).ok().and_then(|i| buckets.get_mut(i)) else {
            continue;
        };
        b.0 += 1;
        if matches!(
            f.outcome,
            Outcome::Failed | Outcome::TimedOut | Outcome::Abandoned
        ) {
            b.1 += 1;
        }
        b.2.push((started - f.instant_ms).max(0));
    }
    buckets
        .into_iter()
        .enumerate()
        .map(|(i, (executions, failures, mut lateness))| {
            lateness.sort_unstable();
            json!({
                "at_ms": first + i as i64 * 60_000,
                "executions": executions,
                "failures": failures,
                "lateness_p50_ms": lateness.get(lateness.len() / 2),
                "lateness_max_ms": lateness.last(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fire(instant: i64, started: Option<i64>, outcome: Outcome) -> FireRecord {
        FireRecord {
            task: "t".into(),
            instant_ms: instant,
            node: "n".into(),
            token: 1,
            attempt: 1,
            outcome,
            started_at_ms: started,
            finished_at_ms: None,
            message: None,
        }
    }

    #[test]
    fn minutes_count_started_fires_failures_and_lateness_per_minute() {
        let now = 100 * 60_000 + 5_000;
        let fires = [
            fire(now - 1_000, Some(now - 990), Outcome::Ok),
            fire(now - 2_000, Some(now - 1_970), Outcome::Failed),
            fire(now - 3_000, Some(now - 2_900), Outcome::Ok),
            fire(now - 4_000, None, Outcome::Misfired),
            fire(now - 61_000, Some(now - 61_000), Outcome::TimedOut),
            fire(now - 31 * 60_000, Some(now - 31 * 60_000), Outcome::Ok),
        ];
        let m = minutes(&fires, now);
        assert_eq!(m.len(), 30);
        let last = &m[29];
        assert_eq!(last["at_ms"], 100 * 60_000);
        assert_eq!(last["executions"], 3, "the misfire never started");
        assert_eq!(last["failures"], 1);
        assert_eq!(last["lateness_p50_ms"], 30);
        assert_eq!(last["lateness_max_ms"], 100);
        assert_eq!(m[28]["executions"], 1);
        assert_eq!(m[28]["failures"], 1);
        let total: u64 = m.iter().map(|b| b["executions"].as_u64().unwrap()).sum();
        assert_eq!(total, 4, "older than the charts: not counted");
    }
}
