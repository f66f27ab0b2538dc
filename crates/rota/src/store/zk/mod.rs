//! The ZooKeeper store: `zookeeper://host:port[,host:port...]/chroot`.
//!
//! Layout under the chroot, per cluster (`/clusters/<cluster>`):
//! - `generation`: its znode version is the cluster's generation; every change sets it.
//! - `clock`: written to read the server's time (`mtime`): store time.
//! - `nodes/<id>`: one ephemeral znode per registration (JSON), renewed by the heartbeat;
//!   its `mtime` is the last renewal. Alive: `mtime + timeout >= now` by server time, and the
//!   session that created it still open.
//! - `leader`: the holder and its epoch; every leader write checks its version.
//! - `assign/<task>`: the assignment (JSON with its token); claims check its version.
//! - `fires/<task>/<instant>` and `fires/<task>/i-<hex key>` (items): one znode per record,
//!   created in the claim's multi-op, so a second claim fails with `NodeExists`. The data of
//!   `fires/<task>` is the latest instant a claim recorded (decimal), set in the same
//!   multi-op: a new owner reads it instead of listing the task's whole history.
//! - `running/<task>/<fire key>`: an index of records still running.
//! - `commands/<seq>`: the command log, one znode per command (its JSON body), created in
//!   the multi-op that takes generation `seq`; its `ctime` is the issue time.
//! - `acks/<seq>/<node>`: each node's acknowledgement (JSON); its `mtime` is the ack time.
//! - `events/<id>`: the event journal, one znode per event (ids start with the time).
//! - `cache/<cache>/<key>`: one znode per cache entry, names escaped (see below). Its data is
//!   a 9-byte header then the value's bytes as given: byte 0 is `1` for a live entry, `0`
//!   for a tombstone (a deleted entry: no value); bytes 1..9 are the time to live in ms, a
//!   big-endian `i64`, `0` for none (negative: expired at once). The entry's version is the
//!   znode's version + 1, so its first write is version 1; a delete writes a tombstone rather
//!   than removing the znode, and an expired entry stays until purged, so a key's version
//!   only grows. It expires at `mtime + ttl`, by server time; only `purge_history` removes
//!   tombstones and expired entries, once older than the retention. ZooKeeper's own TTL nodes
//!   are not used: they vanish, and with them the version.
//!
//! Cache names and keys become znode names by percent-escaping (`%XX`, upper-case hex, per
//! UTF-8 byte) `%`, `/`, a leading `.`, control characters, and what ZooKeeper refuses in a
//! path (U+D800..U+F8FF, U+FFF0 and above, so every character outside the BMP): the rest is
//! kept as is, and decoding gives the key back.
//!
//! Every conditional write is a multi-op whose version checks make ZooKeeper itself refuse a
//! deposed leader or a stale owner.

mod cache;
mod commands;
mod events;
mod fires;
mod history;
mod items;
mod membership;
mod placement;

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use rota_core::{
    control::{Ack, AckState},
    outcome::Outcome,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use zookeeper_client as zk;

use super::{
    backend::*, cache::*, commands::*, events::*, fires::*, history::*, items::*, membership::*,
    placement::*, session::*, url::*,
};
use crate::error::{Error, Result};

/// Session timeout asked of the server (it clamps it to 2..20 × its tickTime).
const SESSION_TIMEOUT: Duration = Duration::from_secs(4);

/// Operations per multi-op: far below the server's 1 MB request limit.
const MULTI_LIMIT: usize = 400;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LeaderData {
    pub(super) node: String,
    pub(super) incarnation: i64,
    pub(super) epoch: i64,
}

impl LeaderData {
    /// Who holds the leadership, if anyone (a vacated row names nobody).
    fn holder(&self) -> Option<Leadership> {
        (!self.node.is_empty()).then(|| Leadership {
            node: self.node.clone(),
            incarnation: self.incarnation,
            epoch: self.epoch,
        })
    }
}

pub struct ZkStore {
    hosts: String,
    root: String,
    client: Mutex<Option<zk::Client>>,
    /// A second session for heartbeats alone: ZooKeeper answers a session's requests in
    /// order, so renewals must not queue behind bulk reads and writes (a placement of
    /// thousands of tasks) on the main session, which owns the ephemeral registrations.
    beat: Mutex<Option<zk::Client>>,
    /// Cluster trees and per-task record directories known to exist (created once per process).
    known_dirs: std::sync::Mutex<std::collections::HashSet<String>>,
    /// When each finished item record seen by a purge finished (by path): a finished item
    /// never changes, so later purges skip it until it is old enough, instead of reading
    /// every item of a service's history every time.
    finished_items: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    /// The highest instant this process set a task's last instant to (by `fires/<task>`
    /// path): a claim of an earlier instant, retried after a later one committed, leaves
    /// the last instant alone.
    last_set: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    /// Each registration's last renewal by this process (by `nodes/<id>` path): the next
    /// one needs no clock write while it is recent (see [`membership::Renewal`]).
    renewals: std::sync::Mutex<HashMap<String, membership::Renewal>>,
    /// The registrations' names each cluster's last view found: the next view reads them
    /// with the listing, in one request.
    view_ids: std::sync::Mutex<HashMap<String, Vec<String>>>,
    reads: std::sync::atomic::AtomicU64,
    writes: std::sync::atomic::AtomicU64,
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::StoreUnavailable(format!("zookeeper: {e}"))
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Store(format!("zookeeper: unreadable {what}: {e}"))
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("plain structs serialize")
}

fn parse<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(what, e))
}

fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

fn ephemeral() -> zk::CreateOptions<'static> {
    zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all())
}

fn condition_failed(e: &zk::MultiWriteError) -> Option<&zk::Error> {
    match e {
        zk::MultiWriteError::OperationFailed { source, .. } => Some(source),
        zk::MultiWriteError::RequestFailed { .. } => None,
    }
}

impl ZkStore {
    /// `zookeeper://h1:2181,h2:2181/chroot` (chroot defaults to `/rota`).
    pub async fn connect(url: &str) -> Result<ZkStore> {
        let rest = url.strip_prefix("zookeeper://").ok_or_else(|| {
            Error::config(
                "store.url",
                format!("`{}` is not a zookeeper:// URL", redact_url(url)),
            )
        })?;
        let (hosts, root) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/rota"),
        };
        let root = root.trim_end_matches('/');
        let root = if root.is_empty() { "/rota" } else { root };
        if hosts.is_empty() {
            return Err(Error::config(
                "store.url",
                format!("`{url}` names no server; write zookeeper://host:2181[,host:2181...]/rota"),
            ));
        }
        let store = ZkStore {
            hosts: hosts.to_string(),
            root: root.to_string(),
            client: Mutex::new(None),
            beat: Mutex::new(None),
            known_dirs: Default::default(),
            finished_items: Default::default(),
            last_set: Default::default(),
            renewals: Default::default(),
            view_ids: Default::default(),
            reads: Default::default(),
            writes: Default::default(),
        };
        store.zk().await?;
        Ok(store)
    }

    /// The session's client, connecting (a new session) when there is none or it expired.
    async fn zk(&self) -> Result<zk::Client> {
        self.session(&self.client).await
    }

    /// The heartbeat's own session.
    async fn zk_beat(&self) -> Result<zk::Client> {
        self.session(&self.beat).await
    }

    async fn session(&self, slot: &Mutex<Option<zk::Client>>) -> Result<zk::Client> {
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.state().is_terminated() {
                return Ok(c.clone());
            }
        }
        let client = zk::Client::connector()
            .with_session_timeout(SESSION_TIMEOUT)
            .with_connection_timeout(Duration::from_secs(2))
            .connect(&self.hosts)
            .await
            .map_err(unavailable)?;
        // The chroot must exist before the client can be rooted in it.
        match client.mkdir(&self.root, &persistent()).await {
            Ok(()) | Err(zk::Error::NodeExists) => {}
            Err(e) => return Err(unavailable(e)),
        }
        // The session's life, explicitly: suspended (disconnected) is not "still owner" (the
        // node fences itself when its local deadline passes), and an expired session is
        // never resumed: the next call opens a new one, and the node rejoins.
        let mut states = client.state_watcher();
        tokio::spawn(async move {
            loop {
                let state = states.changed().await;
                match state {
                    zk::SessionState::Disconnected => {
                        tracing::warn!("zookeeper session suspended (disconnected); reconnecting")
                    }
                    zk::SessionState::SyncConnected => {
                        tracing::info!("zookeeper session connected")
                    }
                    other if other.is_terminated() => {
                        tracing::warn!(state = ?other, "zookeeper session ended; a new one is opened on next use");
                        return;
                    }
                    other => tracing::info!(state = ?other, "zookeeper session state"),
                }
            }
        });
        let rooted = client.chroot(self.root.clone()).map_err(|_| {
            Error::config(
                "store.url",
                format!("`{}` is not a valid chroot", self.root),
            )
        })?;
        *slot = Some(rooted.clone());
        Ok(rooted)
    }

    fn read(&self) {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn wrote(&self) {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn base(cluster: &str) -> String {
        format!("/clusters/{cluster}")
    }

    /// Creates the cluster's fixed znodes if missing.
    async fn ensure_cluster(&self, z: &zk::Client, cluster: &str) -> Result<()> {
        // Checked once per process: views and joins come back here at every heartbeat.
        let known = format!("cluster:{cluster}");
        if self.known_dirs.lock().unwrap().contains(&known) {
            return Ok(());
        }
        self.create_cluster(z, cluster).await?;
        self.known_dirs.lock().unwrap().insert(known);
        Ok(())
    }

    async fn create_cluster(&self, z: &zk::Client, cluster: &str) -> Result<()> {
        let base = Self::base(cluster);
        if z.check_stat(&format!("{base}/clock"))
            .await
            .map_err(unavailable)?
            .is_some()
        {
            return Ok(());
        }
        for path in [
            base.clone(),
            format!("{base}/generation"),
            format!("{base}/clock"),
            format!("{base}/nodes"),
            format!("{base}/assign"),
            format!("{base}/fires"),
            format!("{base}/running"),
            format!("{base}/changes"),
            format!("{base}/commands"),
            format!("{base}/acks"),
        ] {
            match z.mkdir(&path, &persistent()).await {
                Ok(()) | Err(zk::Error::NodeExists) => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        match z
            .create(
                &format!("{base}/leader"),
                &json(&LeaderData::default()),
                &persistent(),
            )
            .await
        {
            Ok(_) | Err(zk::Error::NodeExists) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Server time, in Unix ms: the `mtime` of a write of the cluster's `clock` znode. The
    /// write is sent at the call, before the answer is awaited: requests made after it
    /// share its round trip (and are answered after it).
    fn server_now<'a>(
        &'a self,
        z: &'a zk::Client,
        cluster: &'a str,
    ) -> impl std::future::Future<Output = Result<i64>> + 'a {
        self.wrote();
        let path = format!("{}/clock", Self::base(cluster));
        let written = z.set_data(&path, b"", None);
        async move {
            match written.await {
                Ok(stat) => Ok(stat.mtime),
                Err(zk::Error::NoNode) => self.clock_after_tree_gone(z, cluster, &path).await,
                Err(e) => Err(unavailable(e)),
            }
        }
    }

    /// The tree is gone (or never was): create it, forget the directories this process
    /// believed it had, and write the clock again.
    async fn clock_after_tree_gone(
        &self,
        z: &zk::Client,
        cluster: &str,
        path: &str,
    ) -> Result<i64> {
        let base = Self::base(cluster);
        self.known_dirs
            .lock()
            .unwrap()
            .retain(|d| !d.starts_with(&format!("{base}/")));
        self.create_cluster(z, cluster).await?;
        let stat = z.set_data(path, b"", None).await.map_err(unavailable)?;
        Ok(stat.mtime)
    }

    /// A znode's JSON and stat; `None` if it does not exist. The request is sent at the
    /// call, so that several reads go out together and share a round trip.
    fn get_json<'z, T: for<'de> Deserialize<'de>>(
        &self,
        z: &'z zk::Client,
        path: &str,
        what: &'static str,
    ) -> impl std::future::Future<Output = Result<Option<(T, zk::Stat)>>> + 'z {
        self.read();
        let read = z.get_data(path);
        async move {
            match read.await {
                Ok((bytes, stat)) => Ok(Some((parse(what, &bytes)?, stat))),
                Err(zk::Error::NoNode) => Ok(None),
                Err(e) => Err(unavailable(e)),
            }
        }
    }

    /// Creates persistent directories, each once per process.
    async fn mkdirs(&self, z: &zk::Client, paths: &[String]) -> Result<()> {
        for p in paths {
            if self.known_dirs.lock().unwrap().contains(p) {
                continue;
            }
            match z.mkdir(p, &persistent()).await {
                Ok(()) | Err(zk::Error::NodeExists) => {}
                Err(e) => return Err(unavailable(e)),
            }
            self.known_dirs.lock().unwrap().insert(p.clone());
        }
        Ok(())
    }

    /// Children of `path`, or none if it does not exist.
    async fn children(&self, z: &zk::Client, path: &str) -> Result<Vec<String>> {
        self.listing(z, path).await
    }

    /// The children of `path` (none if it does not exist). The request is sent now, before
    /// the answer is awaited: several listings made in a row share one round trip's wait.
    fn listing<'z>(
        &self,
        z: &'z zk::Client,
        path: &str,
    ) -> impl std::future::Future<Output = Result<Vec<String>>> + 'z {
        self.read();
        let listed = z.list_children(path);
        async move {
            match listed.await {
                Ok(c) => Ok(c),
                Err(zk::Error::NoNode) => Ok(Vec::new()),
                Err(e) => Err(unavailable(e)),
            }
        }
    }
}

/// A ZooKeeper session outlives its client's connection by design (it may reconnect to
/// another server until it times out): no session locks, the node timeout notices deaths.
impl SessionStore for ZkStore {}

#[async_trait]
impl Store for ZkStore {
    fn kind(&self) -> &'static str {
        "zookeeper"
    }

    fn statements(&self) -> StatementCounts {
        StatementCounts {
            reads: self.reads.load(std::sync::atomic::Ordering::Relaxed),
            writes: self.writes.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    async fn prepare(&self, _migrate: bool) -> Result<()> {
        // The layout is created per cluster on first use; nothing to migrate yet.
        self.zk().await.map(|_| ())
    }

    async fn now_ms(&self) -> Result<i64> {
        let z = self.zk().await?;
        // Any cluster's clock will do; use a fixed one.
        self.server_now(&z, "_time").await
    }
}
