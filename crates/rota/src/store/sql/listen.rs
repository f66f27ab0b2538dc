//! PostgreSQL push: LISTEN on `rota_changes`, whose payload is the cluster whose generation
//! changed, and on `rota_cache`, whose payload is `cluster \t cache \t key` of a cache entry
//! written or deleted. A listener reconnects with backoff and jitter; after a reconnect it
//! signals a change, since notifications sent while it was away are lost. It ends once
//! nobody listens.

use std::time::Duration;

use rand::Rng;
use sqlx::postgres::PgListener;
use tokio::sync::{broadcast, watch};
use tracing::debug;

use super::super::cache::CacheChange;

/// The channel of generation changes.
pub const CHANGES_CHANNEL: &str = "rota_changes";
/// The channel of cache changes.
pub const CACHE_CHANNEL: &str = "rota_cache";

/// Generation changes of `cluster`: the counter moves at each (and at each reconnect).
pub fn spawn(url: String, cluster: String) -> watch::Receiver<u64> {
    let (tx, rx) = watch::channel(0u64);
    spawn_listener(url, CHANGES_CHANNEL, Generations { tx, cluster });
    rx
}

/// Cache changes of `cluster`, while the returned receiver (or a copy) lives. It exists
/// before the listener starts: a listener that ran first would find nobody listening, end
/// at once, and the cache would never be pushed to.
pub fn spawn_cache(url: String, cluster: String) -> broadcast::Receiver<CacheChange> {
    let (tx, rx) = broadcast::channel(1024);
    spawn_listener(url, CACHE_CHANNEL, CacheChanges { tx, cluster });
    rx
}

/// Where one listener's notifications go.
trait Sink: Send + Sync + 'static {
    /// (Re)connected: anything may have changed while nobody listened.
    fn connected(&self);
    fn notified(&self, payload: &str);
    /// The connection is lost: nothing is pushed until the next `connected`.
    fn lost(&self);
    /// Nobody listens any more: the listener ends.
    fn gone(&self) -> bool;
}

struct Generations {
    tx: watch::Sender<u64>,
    cluster: String,
}

impl Sink for Generations {
    fn connected(&self) {
        self.tx.send_modify(|n| *n += 1);
    }

    fn notified(&self, payload: &str) {
        if payload == self.cluster {
            self.tx.send_modify(|n| *n += 1);
        }
    }

    fn lost(&self) {} // the nodes' poll is the safety net

    fn gone(&self) -> bool {
        self.tx.is_closed()
    }
}

struct CacheChanges {
    tx: broadcast::Sender<CacheChange>,
    cluster: String,
}

impl Sink for CacheChanges {
    fn connected(&self) {
        let _ = self.tx.send(CacheChange::everything());
    }

    fn notified(&self, payload: &str) {
        let mut parts = payload.splitn(3, '\t');
        if parts.next() == Some(self.cluster.as_str()) {
            if let (Some(cache), Some(key)) = (parts.next(), parts.next()) {
                let _ = self.tx.send(CacheChange {
                    cache: cache.into(),
                    key: key.into(),
                });
            }
        }
    }

    fn lost(&self) {
        let _ = self.tx.send(CacheChange::lost());
    }

    fn gone(&self) -> bool {
        self.tx.receiver_count() == 0
    }
}

fn spawn_listener(url: String, channel: &'static str, sink: impl Sink) {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            if sink.gone() {
                return;
            }
            match listen(&url, channel, &sink).await {
                Ok(()) => return, // nobody listens any more
                Err(e) => {
                    debug!(error = %e, channel, "listener lost its connection; reconnecting");
                    sink.lost();
                }
            }
            let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
            tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    });
}

async fn listen(url: &str, channel: &str, sink: &impl Sink) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.ignore_pool_close_event(true);
    listener.listen(channel).await?;
    sink.connected();
    let mut idle = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            n = listener.try_recv() => match n? {
                Some(n) => sink.notified(n.payload()),
                None => return Err(sqlx::Error::PoolClosed), // connection lost: reconnect here
            },
            _ = idle.tick() => {
                if sink.gone() {
                    return Ok(());
                }
            }
        }
    }
}
