//! PostgreSQL push: LISTEN on `rota_changes`, whose payload is the cluster whose generation
//! changed, and on `rota_cache`, whose payload is `cluster \t cache \t key` of a cache entry
//! written or deleted. The listeners reconnect with backoff and jitter; after a reconnect
//! they signal a change, since notifications sent while they were away are lost.

use std::time::Duration;

use rand::Rng;
use sqlx::postgres::PgListener;
use tokio::sync::{broadcast, watch};
use tracing::debug;

use crate::store::CacheChange;

/// The channel of cache changes.
pub const CACHE_CHANNEL: &str = "rota_cache";

/// Cache changes of `cluster`, while anyone subscribes to the returned sender.
pub fn spawn_cache(url: String, cluster: String) -> broadcast::Sender<CacheChange> {
    let (tx, _) = broadcast::channel(1024);
    let sender = tx.clone();
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match listen_cache(&url, &cluster, &tx).await {
                Ok(()) => return, // nobody listens any more
                Err(e) => {
                    debug!(error = %e, "cache listener lost its connection; reconnecting");
                    let _ = tx.send(CacheChange::lost());
                }
            }
            if tx.receiver_count() == 0 {
                return;
            }
            let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
            tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    });
    sender
}

async fn listen_cache(
    url: &str,
    cluster: &str,
    tx: &broadcast::Sender<CacheChange>,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.ignore_pool_close_event(true);
    listener.listen(CACHE_CHANNEL).await?;
    let _ = tx.send(CacheChange::everything()); // missed while not listening
    let mut idle = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            n = listener.try_recv() => match n? {
                Some(n) => {
                    let mut parts = n.payload().splitn(3, '\t');
                    if parts.next() == Some(cluster) {
                        if let (Some(cache), Some(key)) = (parts.next(), parts.next()) {
                            let _ = tx.send(CacheChange { cache: cache.into(), key: key.into() });
                        }
                    }
                }
                None => return Err(sqlx::Error::PoolClosed), // connection lost: reconnect here
            },
            _ = idle.tick() => {
                if tx.receiver_count() == 0 {
                    return Ok(());
                }
            }
        }
    }
}

pub fn spawn(url: String, cluster: String) -> watch::Receiver<u64> {
    let (tx, rx) = watch::channel(0u64);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            if tx.is_closed() {
                return;
            }
            match listen(&url, &cluster, &tx).await {
                Ok(()) => return, // every receiver is gone
                Err(e) => debug!(error = %e, "change listener lost its connection; reconnecting"),
            }
            let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
            tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    });
    rx
}

async fn listen(url: &str, cluster: &str, tx: &watch::Sender<u64>) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.ignore_pool_close_event(true);
    listener.listen("rota_changes").await?;
    tx.send_modify(|n| *n += 1); // anything may have changed while we were not listening
    loop {
        tokio::select! {
            n = listener.try_recv() => match n? {
                Some(n) if n.payload() == cluster => tx.send_modify(|c| *c += 1),
                Some(_) => {}
                None => return Err(sqlx::Error::PoolClosed), // connection lost: reconnect here
            },
            _ = tx.closed() => return Ok(()),
        }
    }
}
