//! The coordination store: the one place where nodes meet. Nodes never talk to each other.
//!
//! [`Store`] gathers one trait per concern, each in its own file with the records it
//! speaks of: membership and leadership ([`MembershipStore`]), placement
//! ([`PlacementStore`]), fires ([`FireStore`]), services' items ([`ItemStore`]), the
//! history ([`HistoryStore`]), the command log ([`CommandStore`]), the event journal
//! ([`EventStore`]) and the cluster cache ([`CacheStore`]). Each backend is a folder cut the
//! same way (`sql/`, `zk/`), so the claim of a fire is decided in `fires.rs` of each.
//!
//! Every implementation must give the guarantees written on each method; they are the
//! contract (`docs/contract.md`) broken down to single calls, and the conformance suite
//! (`crates/cli/tests/conformance.rs`) checks each of them on every store. All times are store
//! times in Unix milliseconds, read from the store itself (`now()`), never from the caller's
//! clock.

mod backend;
mod cache;
mod commands;
mod events;
mod fires;
mod history;
mod items;
mod membership;
mod placement;
mod session;
pub mod sql;
mod url;
#[cfg(feature = "zookeeper")]
pub mod zk;

use std::{sync::Arc, time::Duration};

pub use rota_core::control::{Ack, AckState, Command};

pub use self::{
    backend::*, cache::*, commands::*, events::*, fires::*, history::*, items::*, membership::*,
    placement::*, session::*, url::*,
};
use crate::error::{Error, Result};

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
/// `STARTUP_PATIENCE` (a minute). Fatal errors (schema, duplicate id, configuration) return
/// at once.
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

#[cfg(test)]
mod tests {
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
