//! PostgreSQL push: LISTEN on `rota_changes`, whose payload is the cluster whose generation
//! changed. The listener reconnects with backoff and jitter; after a reconnect it signals a
//! change, since notifications sent while it was away are lost.

use std::time::Duration;

use rand::Rng;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tracing::debug;

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
