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
//!   created in the claim's multi-op, so a second claim fails with `NodeExists`.
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

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use zookeeper_client as zk;

use super::*;
use crate::core::outcome::Outcome;

/// Session timeout asked of the server (it clamps it to 2..20 × its tickTime).
const SESSION_TIMEOUT: Duration = Duration::from_secs(4);
/// Bytes per declarations chunk: far below the server's 1 MB znode limit.
const DECL_CHUNK: usize = 256 * 1024;
/// Operations per multi-op: far below the server's 1 MB request limit.
const MULTI_LIMIT: usize = 400;
/// Change-log entries kept before the oldest half is pruned.
const CHANGE_LOG_KEEP: usize = 256;
/// Bytes before the value in a cache znode: the live/tombstone byte and the TTL.
const CACHE_HEADER: usize = 9;
/// Attempts at a cache write whose znode others keep changing: each retry means another
/// writer succeeded, so this bounds only pathological contention.
const CACHE_ATTEMPTS: usize = 64;
/// Cache znodes read at once (pipelined) when listing keys or purging.
const CACHE_READ_BATCH: usize = 256;

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
    reads: std::sync::atomic::AtomicU64,
    writes: std::sync::atomic::AtomicU64,
}

/// `events/<id>`: one event of the journal (ids sort by time).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EventData {
    at_ms: i64,
    kind: String,
    body: String,
}

/// `acks/<seq>/<node>`: the time is the znode's `mtime`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AckData {
    incarnation: i64,
    state: AckState,
    message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct NodeData {
    incarnation: i64,
    joined_at: i64,
    timeout_ms: i64,
    leaving: bool,
    host: String,
    process: String,
    /// The declarations live in `decl/<id>/<incarnation>-<i>` chunks (written once at join):
    /// the registration itself stays small, since every heartbeat rewrites it.
    declared_chunks: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LeaderData {
    node: String,
    incarnation: i64,
    epoch: i64,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AssignData {
    node: Option<String>,
    incarnation: Option<i64>,
    token: i64,
    epoch: i64,
    placed_at: i64,
    reason: Option<String>,
    version: i64,
}

/// What a leader's write checks in its multi-op (see [`ZkStore::leader_fence`]).
struct LeaderFence {
    /// The leader znode's version: a takeover in between fails the write.
    leader: i32,
    /// The leader's registration as its liveness was judged: a renewal in between makes
    /// the write stale, to be retried.
    registration: i32,
    /// Server time of the judgement.
    now: i64,
}

impl LeaderFence {
    fn check(&self, w: &mut zk::MultiWriter<'_>, base: &str, node: &str) -> Result<()> {
        w.add_check_version(&format!("{base}/leader"), self.leader)
            .map_err(unavailable)?;
        w.add_check_version(&format!("{base}/nodes/{node}"), self.registration)
            .map_err(unavailable)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FireData {
    instant: i64,
    node: String,
    incarnation: i64,
    token: i64,
    attempt: i64,
    outcome: String,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    message: Option<String>,
    /// Store time until which the claimant's registration was alive when it began the
    /// fire (see [`ZkStore::begun`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    alive_until: Option<i64>,
}

impl FireData {
    /// Its outcome, set at store time `now` (every finish, alone or batched, goes through
    /// here): a fire that never started its work keeps no start time.
    fn finish(&mut self, outcome: Outcome, message: Option<&str>, now: i64) {
        self.outcome = outcome.as_str().to_string();
        self.finished_at = Some(now);
        self.message = message.map(str::to_string);
        if outcome.never_started() {
            self.started_at = None;
        }
    }
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

fn fire_key(instant: i64) -> String {
    format!("{instant:020}")
}

fn item_key(item: &str) -> String {
    let hex: String = item.bytes().map(|b| format!("{b:02x}")).collect();
    format!("i-{hex}")
}

fn is_item(key: &str) -> bool {
    key.starts_with("i-")
}

/// A cache name or key as a znode name (see the module doc): reversible by [`unescape`].
fn escape(name: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(name.len());
    for (i, c) in name.char_indices() {
        let u = u32::from(c);
        let escaped = c == '%'
            || c == '/'
            || (i == 0 && c == '.')
            || c.is_control()
            || (0xd800..=0xf8ff).contains(&u)
            || u >= 0xfff0;
        if escaped {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The name [`escape`] made a znode name of; `None` if it is not one.
fn unescape(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `cache/<cache>` of a cluster.
fn cache_dir(cluster: &str, cache: &str) -> Result<String> {
    if cache.is_empty() {
        return Err(Error::config("cache", "a cache needs a name"));
    }
    Ok(format!(
        "{}/cache/{}",
        ZkStore::base(cluster),
        escape(cache)
    ))
}

/// `cache/<cache>/<key>` of a cluster.
fn cache_path(dir: &str, key: &str) -> Result<String> {
    if key.is_empty() {
        return Err(Error::config("key", "an empty key cannot be stored"));
    }
    Ok(format!("{dir}/{}", escape(key)))
}

/// A cache znode's data: a live entry (`Some((value, ttl))`) or a tombstone (`None`).
fn cache_bytes(value: Option<(&[u8], Option<i64>)>) -> Vec<u8> {
    let (live, ttl, value): (u8, i64, &[u8]) = match value {
        // A TTL of zero or less: expired at once (0 in the header means none).
        Some((v, ttl)) => (1, ttl.map_or(0, |t| if t > 0 { t } else { -1 }), v),
        None => (0, 0, &[]),
    };
    let mut out = Vec::with_capacity(CACHE_HEADER + value.len());
    out.push(live);
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// A cache znode's data, read.
#[derive(Debug)]
struct CacheData {
    live: bool,
    /// 0: none.
    ttl_ms: i64,
    value: Vec<u8>,
}

impl CacheData {
    fn parse(path: &str, mut bytes: Vec<u8>) -> Result<CacheData> {
        let what = || format!("cache entry {path}");
        if bytes.len() < CACHE_HEADER {
            return Err(corrupt(&what(), format!("{} bytes", bytes.len())));
        }
        let live = match bytes[0] {
            1 => true,
            0 => false,
            other => return Err(corrupt(&what(), format!("state byte {other}"))),
        };
        let mut ttl = [0u8; 8];
        ttl.copy_from_slice(&bytes[1..CACHE_HEADER]);
        bytes.drain(..CACHE_HEADER);
        Ok(CacheData {
            live,
            ttl_ms: i64::from_be_bytes(ttl),
            value: bytes,
        })
    }

    /// Store time when a live entry expires, if it has a TTL.
    fn expires_at(&self, stat: &zk::Stat) -> Option<i64> {
        (self.live && self.ttl_ms != 0).then(|| stat.mtime.saturating_add(self.ttl_ms))
    }
}

/// The version of a cache entry whose znode is at `stat`.
fn cache_version(stat: &zk::Stat) -> i64 {
    i64::from(stat.version) + 1
}

/// The cache change a watch event on `path` stands for (`prefix` is the cluster's `cache/`).
fn cache_change(prefix: &str, path: &str) -> Option<CacheChange> {
    let (cache, key) = path.strip_prefix(prefix)?.split_once('/')?;
    Some(CacheChange {
        cache: unescape(cache)?,
        key: unescape(key)?,
    })
}

fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

fn ephemeral() -> zk::CreateOptions<'static> {
    zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all())
}

/// Did a multi-op fail on a condition (a version, a missing or existing node) rather than on
/// the connection?
/// Requests in flight at once while purging the history.
const PURGE_BATCH: usize = 256;

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
                format!("`{}` is not a zookeeper:// URL", super::redact_url(url)),
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

    /// Server time, in Unix ms: the `mtime` of a write.
    async fn server_now(&self, z: &zk::Client, cluster: &str) -> Result<i64> {
        self.wrote();
        let path = format!("{}/clock", Self::base(cluster));
        match z.set_data(&path, b"", None).await {
            Ok(stat) => Ok(stat.mtime),
            Err(zk::Error::NoNode) => {
                // The tree is gone (or never was): create it, and forget the directories this
                // process believed it had.
                let base = Self::base(cluster);
                self.known_dirs
                    .lock()
                    .unwrap()
                    .retain(|d| !d.starts_with(&format!("{base}/")));
                self.create_cluster(z, cluster).await?;
                let stat = z.set_data(&path, b"", None).await.map_err(unavailable)?;
                Ok(stat.mtime)
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    /// A znode's JSON and stat; `None` if it does not exist.
    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        z: &zk::Client,
        path: &str,
        what: &str,
    ) -> Result<Option<(T, zk::Stat)>> {
        self.read();
        match z.get_data(path).await {
            Ok((bytes, stat)) => Ok(Some((parse(what, &bytes)?, stat))),
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn node(
        &self,
        z: &zk::Client,
        cluster: &str,
        id: &str,
    ) -> Result<Option<(NodeData, zk::Stat)>> {
        let path = format!("{}/nodes/{id}", Self::base(cluster));
        self.get_json(z, &path, "node").await
    }

    fn alive(data: &NodeData, stat: &zk::Stat, now: i64) -> bool {
        stat.mtime + data.timeout_ms >= now
    }

    /// Is the registration `(node, incarnation)` alive by server time `now`?
    async fn registration_alive(
        &self,
        z: &zk::Client,
        cluster: &str,
        node: &str,
        incarnation: i64,
        now: i64,
    ) -> Result<Option<zk::Stat>> {
        Ok(self
            .node(z, cluster, node)
            .await?
            .filter(|(d, s)| d.incarnation == incarnation && Self::alive(d, s, now))
            .map(|(_, s)| s))
    }

    fn record(id: &str, d: &NodeData, s: &zk::Stat, now: i64) -> NodeRecord {
        NodeRecord {
            node: id.to_string(),
            incarnation: d.incarnation,
            joined_at_ms: d.joined_at,
            heartbeat_at_ms: s.mtime,
            timeout_ms: d.timeout_ms,
            leaving: d.leaving,
            alive: Self::alive(d, s, now),
            host: d.host.clone(),
            process: d.process.clone(),
        }
    }

    async fn assignment(
        &self,
        z: &zk::Client,
        cluster: &str,
        task: &str,
    ) -> Result<Option<(AssignData, zk::Stat)>> {
        let path = format!("{}/assign/{task}", Self::base(cluster));
        self.get_json(z, &path, "assignment").await
    }

    /// The fence of a claim-like write: the assignment's version to check, if `(task, token)`
    /// names `m` and `m`'s registration is alive by server time.
    async fn fence(
        &self,
        z: &zk::Client,
        m: &Member,
        task: &str,
        token: i64,
        now: i64,
    ) -> Result<Option<i32>> {
        let Some((a, astat)) = self.assignment(z, &m.cluster, task).await? else {
            return Ok(None);
        };
        if a.token != token
            || a.node.as_deref() != Some(m.node.as_str())
            || a.incarnation != Some(m.incarnation)
        {
            return Ok(None);
        }
        if self
            .registration_alive(z, &m.cluster, &m.node, m.incarnation, now)
            .await?
            .is_none()
        {
            return Ok(None);
        }
        Ok(Some(astat.version))
    }

    async fn fire(
        &self,
        z: &zk::Client,
        cluster: &str,
        task: &str,
        key: &str,
    ) -> Result<Option<(FireData, zk::Stat)>> {
        let path = format!("{}/fires/{task}/{key}", Self::base(cluster));
        self.get_json(z, &path, "fire").await
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

    /// Creates `fires/<task>` and `running/<task>` unless this process knows they exist.
    async fn record_dirs(&self, z: &zk::Client, cluster: &str, task: &str) -> Result<()> {
        let base = Self::base(cluster);
        self.mkdirs(
            z,
            &[
                format!("{base}/fires/{task}"),
                format!("{base}/running/{task}"),
            ],
        )
        .await
    }

    /// Records a fire or item under the fence. `Ok(None)`: fenced; `Ok(Some(false))`: taken.
    #[allow(clippy::too_many_arguments)]
    async fn create_record(
        &self,
        m: &Member,
        task: &str,
        key: &str,
        token: i64,
        data: &FireData,
        running: bool,
        now: i64,
    ) -> Result<Option<bool>> {
        let z = self.zk().await?;
        let base = Self::base(&m.cluster);
        self.record_dirs(&z, &m.cluster, task).await?;
        let Some(aver) = self.fence(&z, m, task, token, now).await? else {
            return Ok(None);
        };
        let mut w = z.new_multi_writer();
        w.add_check_version(&format!("{base}/assign/{task}"), aver)
            .map_err(unavailable)?;
        // The registration still exists (any version: heartbeats move it).
        w.add_check_version(&format!("{base}/nodes/{}", m.node), -1)
            .map_err(unavailable)?;
        w.add_create(
            &format!("{base}/fires/{task}/{key}"),
            &json(data),
            &persistent(),
        )
        .map_err(unavailable)?;
        if running {
            w.add_create(&format!("{base}/running/{task}/{key}"), b"", &persistent())
                .map_err(unavailable)?;
        }
        self.wrote();
        match w.commit().await {
            Ok(_) => Ok(Some(true)),
            Err(e) => match condition_failed(&e) {
                Some(zk::Error::NodeExists) => Ok(Some(false)),
                // The assignment or the registration changed: retry once with fresh versions
                // (a heartbeat moves the registration's version).
                Some(zk::Error::BadVersion) | Some(zk::Error::NoNode) => Ok(None),
                _ => Err(unavailable(e)),
            },
        }
    }

    /// Adds to `w` the append of a command that takes the cluster's next generation as its
    /// sequence number (returned); the multi-op fails if another write takes it first.
    async fn add_command(
        &self,
        z: &zk::Client,
        w: &mut zk::MultiWriter<'_>,
        base: &str,
        body: &str,
    ) -> Result<i64> {
        self.read();
        let gstat = z
            .check_stat(&format!("{base}/generation"))
            .await
            .map_err(unavailable)?
            .ok_or_else(|| unavailable("the cluster's generation znode is missing"))?;
        let seq = i64::from(gstat.version) + 1;
        w.add_create(
            &format!("{base}/commands/{seq:020}"),
            body.as_bytes(),
            &persistent(),
        )
        .map_err(unavailable)?;
        w.add_set_data(&format!("{base}/generation"), b"", Some(gstat.version))
            .map_err(unavailable)?;
        Ok(seq)
    }

    /// Begins one fire claimed by `m` (see [`Store::begin_fires`]). The multi-op checks the
    /// assignment and the exact registration version whose liveness was judged, and records
    /// until when that registration was alive (see [`ZkStore::begun`]).
    /// `judged`: the claimant's registration and the server time it was judged alive at,
    /// shared by the fires of one batch; read again when a write finds it moved.
    async fn begin_fire(
        &self,
        z: &zk::Client,
        m: &Member,
        b: &Begin,
        judged: &mut Option<(NodeData, zk::Stat, i64)>,
    ) -> Result<bool> {
        let base = Self::base(&m.cluster);
        let key = fire_key(b.instant_ms);
        // A heartbeat moving the registration between the read and the write: read again.
        for _ in 0..5 {
            let Some((mut f, fstat)) = self.fire(z, &m.cluster, &b.task, &key).await? else {
                return Ok(false);
            };
            let ours = f.outcome == "running"
                && f.node == m.node
                && f.incarnation == m.incarnation
                && (f.token, f.attempt) == (b.token, b.attempt);
            if !ours || f.started_at.is_some() {
                return Ok(ours); // begun already by an earlier call whose reply was lost
            }
            if judged.is_none() {
                let now = self.server_now(z, &m.cluster).await?;
                let Some((node, nstat)) = self.node(z, &m.cluster, &m.node).await? else {
                    return Ok(false);
                };
                *judged = Some((node, nstat, now));
            }
            let Some((node, nstat, now)) = judged.clone() else {
                return Ok(false);
            };
            if node.incarnation != m.incarnation || !Self::alive(&node, &nstat, now) {
                return Ok(false);
            }
            let Some((a, astat)) = self.assignment(z, &m.cluster, &b.task).await? else {
                return Ok(false);
            };
            if a.token != b.token
                || a.node.as_deref() != Some(m.node.as_str())
                || a.incarnation != Some(m.incarnation)
            {
                return Ok(false);
            }
            f.started_at = Some(now);
            f.alive_until = Some(nstat.mtime + node.timeout_ms);
            let mut w = z.new_multi_writer();
            w.add_check_version(&format!("{base}/assign/{}", b.task), astat.version)
                .map_err(unavailable)?;
            w.add_check_version(&format!("{base}/nodes/{}", m.node), nstat.version)
                .map_err(unavailable)?;
            w.add_set_data(
                &format!("{base}/fires/{}/{key}", b.task),
                &json(&f),
                Some(fstat.version),
            )
            .map_err(unavailable)?;
            self.wrote();
            match w.commit().await {
                Ok(_) => return Ok(true),
                Err(e) if condition_failed(&e).is_some() => *judged = None,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(false)
    }

    /// Updates a running record `(task, key)` at `(token, attempt)` under the fence, as
    /// `how` says. Fires begin with `begin_fires`, so a fire claimed again has no start
    /// time; an item begins at once.
    #[allow(clippy::too_many_arguments)]
    async fn recover_record(
        &self,
        m: &Member,
        task: &str,
        key: &str,
        token: i64,
        record: (i64, i64),
        how: Recovery,
    ) -> Result<ClaimOutcome> {
        let z = self.zk().await?;
        let base = Self::base(&m.cluster);
        let Some((mut f, fstat)) = self.fire(&z, &m.cluster, task, key).await? else {
            return Ok(ClaimOutcome::Fenced);
        };
        let begun = Self::begun(&f, &fstat);
        let expected = if how == Recovery::Reclaim {
            "released"
        } else {
            "running"
        };
        if f.outcome != expected
            || (f.token, f.attempt) != record
            || begun != (how != Recovery::Claim)
        {
            return Ok(ClaimOutcome::Fenced);
        }
        let now = self.server_now(&z, &m.cluster).await?;
        let Some(aver) = self.fence(&z, m, task, token, now).await? else {
            return Ok(ClaimOutcome::Fenced);
        };
        let retry = how != Recovery::Abandon;
        match how {
            Recovery::Claim => {
                f.node = m.node.clone();
                f.incarnation = m.incarnation;
                f.token = token;
                f.started_at = None;
                f.alive_until = None;
                f.message = Some("claimed again: its node never began it".into());
            }
            Recovery::Retry => {
                f.node = m.node.clone();
                f.incarnation = m.incarnation;
                f.token = token;
                f.attempt += 1;
                f.started_at = is_item(key).then_some(now);
                f.alive_until = None;
                f.message = Some("retried: its node died mid-run".into());
            }
            Recovery::Abandon => {
                f.finish(
                    Outcome::Abandoned,
                    Some("abandoned: its node died mid-run"),
                    now,
                );
            }
            Recovery::Reclaim => {
                f.node = m.node.clone();
                f.incarnation = m.incarnation;
                f.token = token;
                f.attempt += 1;
                f.outcome = "running".into();
                f.started_at = Some(now);
                f.finished_at = None;
                f.message = Some("handed over: released by its previous owner".into());
            }
        }
        let mut w = z.new_multi_writer();
        w.add_check_version(&format!("{base}/assign/{task}"), aver)
            .map_err(unavailable)?;
        // The registration still exists (any version: heartbeats move it).
        w.add_check_version(&format!("{base}/nodes/{}", m.node), -1)
            .map_err(unavailable)?;
        w.add_set_data(
            &format!("{base}/fires/{task}/{key}"),
            &json(&f),
            Some(fstat.version),
        )
        .map_err(unavailable)?;
        if !retry {
            w.add_delete(&format!("{base}/running/{task}/{key}"), None)
                .map_err(unavailable)?;
        }
        if how == Recovery::Reclaim {
            // A released record left the running ones; it runs again.
            w.add_create(&format!("{base}/running/{task}/{key}"), b"", &persistent())
                .map_err(unavailable)?;
        }
        self.wrote();
        match w.commit().await {
            Ok(_) => Ok(ClaimOutcome::Claimed),
            Err(e) if condition_failed(&e).is_some() => Ok(ClaimOutcome::Fenced),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Sets the outcome of a running record with this token and attempt.
    #[allow(clippy::too_many_arguments)]
    async fn finish_record(
        &self,
        cluster: &str,
        task: &str,
        key: &str,
        token: i64,
        attempt: i64,
        outcome: Outcome,
        message: Option<&str>,
    ) -> Result<()> {
        let z = self.zk().await?;
        let base = Self::base(cluster);
        let Some((mut f, fstat)) = self.fire(&z, cluster, task, key).await? else {
            return Ok(());
        };
        if f.outcome != "running" || f.token != token || f.attempt != attempt {
            return Ok(());
        }
        let now = self.server_now(&z, cluster).await?;
        f.finish(outcome, message, now);
        let mut w = z.new_multi_writer();
        w.add_set_data(
            &format!("{base}/fires/{task}/{key}"),
            &json(&f),
            Some(fstat.version),
        )
        .map_err(unavailable)?;
        w.add_delete(&format!("{base}/running/{task}/{key}"), None)
            .map_err(unavailable)?;
        self.wrote();
        match w.commit().await {
            Ok(_) => Ok(()),
            // Changed meanwhile (recovered by another node): not ours to finish.
            Err(e) if condition_failed(&e).is_some() => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Children of `path`, or none if it does not exist.
    async fn children(&self, z: &zk::Client, path: &str) -> Result<Vec<String>> {
        self.read();
        match z.list_children(path).await {
            Ok(c) => Ok(c),
            Err(zk::Error::NoNode) => Ok(Vec::new()),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The tasks whose assignments changed after `generation`, from the change log; `None`
    /// when the log no longer reaches back that far (read everything then).
    async fn changed_since(
        &self,
        z: &zk::Client,
        cluster: &str,
        generation: i64,
    ) -> Result<Option<Vec<String>>> {
        if generation < 0 {
            return Ok(None);
        }
        let path = format!("{}/changes", Self::base(cluster));
        let entries: Vec<String> = self
            .children(z, &path)
            .await?
            .into_iter()
            .filter(|e| e.parse::<i64>().is_ok_and(|g| g > generation))
            .collect();
        let reads: Vec<_> = entries
            .iter()
            .map(|e| z.get_data(&format!("{path}/{e}")))
            .collect();
        let mut tasks = Vec::new();
        for read in reads {
            self.read();
            match read.await {
                Ok((bytes, _)) => tasks.extend(parse::<Vec<String>>("change log", &bytes)?),
                // Pruned meanwhile: the log no longer covers this generation.
                Err(zk::Error::NoNode) => return Ok(None),
                Err(e) => return Err(unavailable(e)),
            }
        }
        // Checked after reading: pruned before or while we read, entries we needed may be
        // gone (one read covers both cases).
        self.read();
        let pruned_below: i64 = match z.get_data(&path).await {
            Ok((bytes, _)) => String::from_utf8_lossy(&bytes).trim().parse().unwrap_or(0),
            Err(zk::Error::NoNode) => return Ok(None),
            Err(e) => return Err(unavailable(e)),
        };
        Ok((generation >= pruned_below).then_some(tasks))
    }

    /// Keeps the change log short: past `CHANGE_LOG_KEEP` entries, records how far it reaches
    /// back (readers from before that read everything), then drops the oldest half.
    async fn prune_changes(&self, z: &zk::Client, cluster: &str) -> Result<()> {
        let path = format!("{}/changes", Self::base(cluster));
        let mut gens: Vec<i64> = self
            .children(z, &path)
            .await?
            .iter()
            .filter_map(|e| e.parse().ok())
            .collect();
        if gens.len() <= CHANGE_LOG_KEEP {
            return Ok(());
        }
        gens.sort_unstable();
        let drop: Vec<i64> = gens[..gens.len() / 2].to_vec();
        let below = drop.last().copied().unwrap_or(0) + 1;
        self.wrote();
        z.set_data(&path, below.to_string().as_bytes(), None)
            .await
            .map_err(unavailable)?;
        for g in drop {
            let _ = z.delete(&format!("{path}/{g:020}"), None).await;
        }
        Ok(())
    }

    /// The election recipe: each candidate holds an ephemeral sequential znode under
    /// `election/` (created on its first call); it is first in line when every candidate
    /// before it is gone, dead by server time `now`, or leaving. Dead candidates' znodes (their
    /// session may outlive their registration) are removed on the way. The `leader` znode,
    /// version-checked, stays the fence: being first in line only allows the attempt.
    async fn first_in_line(&self, z: &zk::Client, m: &Member, now: i64) -> Result<bool> {
        let dir = format!("{}/election", Self::base(&m.cluster));
        self.mkdirs(z, std::slice::from_ref(&dir)).await?;
        let me = format!("{}:{}", m.node, m.incarnation);
        let mut line: Vec<(i64, String, String)> = Vec::new();
        for name in self.children(z, &dir).await? {
            let Some(seq) = name.strip_prefix("n-").and_then(|s| s.parse::<i64>().ok()) else {
                continue;
            };
            self.read();
            match z.get_data(&format!("{dir}/{name}")).await {
                Ok((bytes, _)) => {
                    line.push((seq, name, String::from_utf8_lossy(&bytes).into_owned()))
                }
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        if !line.iter().any(|(_, _, who)| *who == me) {
            self.wrote();
            let options = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
            let (_, seq) = z
                .create(&format!("{dir}/n-"), me.as_bytes(), &options)
                .await
                .map_err(unavailable)?;
            line.push((seq.into_i64(), format!("n-{seq}"), me.clone()));
        }
        line.sort();
        for (_, name, who) in line {
            if who == me {
                return Ok(true);
            }
            let Some((node, incarnation)) = who
                .rsplit_once(':')
                .and_then(|(n, i)| Some((n.to_string(), i.parse::<i64>().ok()?)))
            else {
                continue;
            };
            let standing = self
                .node(z, &m.cluster, &node)
                .await?
                .filter(|(d, s)| d.incarnation == incarnation && Self::alive(d, s, now));
            match standing {
                Some((d, _)) if !d.leaving => return Ok(false),
                Some(_) => {} // leaving: it never takes over
                None => {
                    self.wrote();
                    let _ = z.delete(&format!("{dir}/{name}"), None).await;
                }
            }
        }
        Ok(false)
    }

    /// Removes `m`'s candidacy (a node leaving gracefully).
    async fn leave_election(&self, z: &zk::Client, m: &Member) -> Result<()> {
        let dir = format!("{}/election", Self::base(&m.cluster));
        let me = format!("{}:{}", m.node, m.incarnation);
        for name in self.children(z, &dir).await? {
            self.read();
            if let Ok((bytes, stat)) = z.get_data(&format!("{dir}/{name}")).await {
                if bytes == me.as_bytes() {
                    self.wrote();
                    let _ = z.delete(&format!("{dir}/{name}"), Some(stat.version)).await;
                }
            }
        }
        Ok(())
    }

    /// A claim that did not pass: `AlreadyClaimed` if its instant has a record anyway.
    async fn taken_or_fenced(&self, z: &zk::Client, c: &Claim) -> Result<ClaimOutcome> {
        let key = fire_key(c.instant_ms);
        Ok(
            if self
                .fire(z, &c.member.cluster, &c.task, &key)
                .await?
                .is_some()
            {
                ClaimOutcome::AlreadyClaimed
            } else {
                ClaimOutcome::Fenced
            },
        )
    }

    /// The cluster's leader znode and its stat.
    async fn leader(&self, z: &zk::Client, cluster: &str) -> Result<(LeaderData, zk::Stat)> {
        self.read();
        let (bytes, stat) = z
            .get_data(&format!("{}/leader", Self::base(cluster)))
            .await
            .map_err(unavailable)?;
        Ok((parse("leader", &bytes)?, stat))
    }

    /// The versions a fenced leader write checks, if `leader` holds `epoch` and is alive by
    /// server time (contract 6).
    async fn leader_fence(
        &self,
        z: &zk::Client,
        leader: &Member,
        epoch: i64,
    ) -> Result<Option<LeaderFence>> {
        let (l, lstat) = self.leader(z, &leader.cluster).await?;
        let now = self.server_now(z, &leader.cluster).await?;
        let alive = self
            .registration_alive(z, &leader.cluster, &leader.node, leader.incarnation, now)
            .await?;
        Ok(match alive {
            Some(registration)
                if l.node == leader.node
                    && l.incarnation == leader.incarnation
                    && l.epoch == epoch =>
            {
                Some(LeaderFence {
                    leader: lstat.version,
                    registration: registration.version,
                    now,
                })
            }
            _ => None,
        })
    }

    /// Whether a fire's work may have begun. ZooKeeper cannot compare times inside a
    /// multi-op, so a begin is checked against the registration's version read with its
    /// liveness, and judged afterwards by its own commit time (the record's mtime): one
    /// committed after the claimant's registration expired does not count (contract 5;
    /// that node found its lease gone and did not start the work).
    fn begun(f: &FireData, stat: &zk::Stat) -> bool {
        f.started_at.is_some() && f.alive_until.is_none_or(|until| stat.mtime <= until)
    }

    fn fire_record(task: &str, f: FireData) -> Result<FireRecord> {
        Ok(FireRecord {
            task: task.to_string(),
            instant_ms: f.instant,
            node: f.node,
            token: f.token,
            attempt: f.attempt,
            outcome: Outcome::parse(&f.outcome).ok_or_else(|| corrupt("fire", &f.outcome))?,
            started_at_ms: f.started_at,
            finished_at_ms: f.finished_at,
            message: f.message,
        })
    }

    /// Store time, read once per call and only when needed: `now` keeps it.
    async fn now_once(&self, z: &zk::Client, cluster: &str, now: &mut Option<i64>) -> Result<i64> {
        match *now {
            Some(t) => Ok(t),
            None => {
                let t = self.server_now(z, cluster).await?;
                *now = Some(t);
                Ok(t)
            }
        }
    }

    /// Is the entry live (not a tombstone, not expired by store time)? Only an entry with a
    /// TTL needs the store's time.
    async fn cache_live(
        &self,
        z: &zk::Client,
        cluster: &str,
        data: &CacheData,
        stat: &zk::Stat,
        now: &mut Option<i64>,
    ) -> Result<bool> {
        if !data.live {
            return Ok(false);
        }
        match data.expires_at(stat) {
            None => Ok(true),
            Some(at) => Ok(at > self.now_once(z, cluster, now).await?),
        }
    }

    /// A cache znode, `None` if absent. A `sync` goes first, on the same session (pipelined:
    /// no extra wait here), so the read reflects every write completed before it, whichever
    /// server this session is connected to.
    async fn cache_read(
        &self,
        z: &zk::Client,
        path: &str,
    ) -> Result<Option<(CacheData, zk::Stat)>> {
        let sync = z.sync(path);
        let read = z.get_data(path);
        self.read();
        self.read();
        sync.await.map_err(unavailable)?;
        match read.await {
            Ok((bytes, stat)) => Ok(Some((CacheData::parse(path, bytes)?, stat))),
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Creates a cache znode (and its directory, if missing). `false`: it exists already.
    async fn cache_create(
        &self,
        z: &zk::Client,
        dir: &str,
        path: &str,
        data: &[u8],
    ) -> Result<bool> {
        self.mkdirs(z, &[dir.to_string()]).await?;
        for fresh in [false, true] {
            self.wrote();
            match z.create(path, data, &persistent()).await {
                Ok(_) => return Ok(true),
                Err(zk::Error::NodeExists) => return Ok(false),
                // The directory was removed since this process created it: again.
                Err(zk::Error::NoNode) if !fresh => {
                    self.known_dirs.lock().unwrap().remove(dir);
                    self.mkdirs(z, &[dir.to_string()]).await?;
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(unavailable(format!("{dir} cannot be created")))
    }

    /// A cache write (`value: None` deletes, leaving a tombstone) if the entry is as `expect`
    /// says. The znode's version is the compare-and-set: a write that finds it changed reads
    /// it again and decides again.
    async fn cache_write(
        &self,
        cluster: &str,
        cache: &str,
        key: &str,
        value: Option<(&[u8], Option<i64>)>,
        expect: Expect,
    ) -> Result<CacheOutcome> {
        let dir = cache_dir(cluster, cache)?;
        let path = cache_path(&dir, key)?;
        let data = cache_bytes(value);
        let z = self.zk().await?;
        let mut now = None;
        for _ in 0..CACHE_ATTEMPTS {
            if expect == Expect::Any && value.is_some() {
                // Unconditional: no read, no store time; a first write creates the znode.
                self.wrote();
                match z.set_data(&path, &data, None).await {
                    Ok(stat) => {
                        return Ok(CacheOutcome::Done {
                            version: cache_version(&stat),
                        })
                    }
                    Err(zk::Error::NoNode) => {}
                    Err(e) => return Err(unavailable(e)),
                }
                if value.is_none() {
                    return Ok(CacheOutcome::Done { version: 0 }); // nothing to delete
                }
                if self.cache_create(&z, &dir, &path, &data).await? {
                    return Ok(CacheOutcome::Done { version: 1 });
                }
                continue; // created meanwhile: overwrite it
            }
            let Some((old, stat)) = self.cache_read(&z, &path).await? else {
                if let Expect::Version(_) = expect {
                    return Ok(CacheOutcome::Conflict { current: None });
                }
                if value.is_none() {
                    return Ok(CacheOutcome::Done { version: 0 }); // nothing to delete
                }
                if self.cache_create(&z, &dir, &path, &data).await? {
                    return Ok(CacheOutcome::Done { version: 1 });
                }
                continue; // created meanwhile: decide again on what it holds
            };
            let live = self
                .cache_live(&z, cluster, &old, &stat, &mut now)
                .await?
                .then(|| cache_version(&stat));
            let expected = match expect {
                Expect::Any => true,
                Expect::Absent => live.is_none(),
                Expect::Version(v) => live == Some(v),
            };
            if !expected {
                return Ok(CacheOutcome::Conflict { current: live });
            }
            if value.is_none() && live.is_none() {
                // Nothing live to delete (a tombstone, expired): nothing changes.
                return Ok(CacheOutcome::Done { version: 0 });
            }
            self.wrote();
            match z.set_data(&path, &data, Some(stat.version)).await {
                Ok(stat) => {
                    return Ok(CacheOutcome::Done {
                        version: cache_version(&stat),
                    })
                }
                // Changed (or purged) since read: decide again on what it holds now.
                Err(zk::Error::BadVersion) | Err(zk::Error::NoNode) => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(unavailable(format!(
            "cache `{cache}`, key `{key}`: changed by others at every one of {CACHE_ATTEMPTS} attempts"
        )))
    }

    /// The persistent recursive watch on `dir` once more (after a reconnection); `None` if it
    /// cannot be had (the session ended, or keeps failing).
    async fn rewatch(z: &zk::Client, dir: &str) -> Option<zk::PersistentWatcher> {
        for attempt in 0..5u64 {
            if z.state().is_terminated() {
                return None;
            }
            match z.watch(dir, zk::AddWatchMode::PersistentRecursive).await {
                Ok(w) => return Some(w),
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "cannot watch cache changes again yet");
                    tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
                }
            }
        }
        tracing::warn!("cannot watch cache changes again; near caches poll");
        None
    }

    /// Removes a cache's tombstones and expired entries whose last write and expiry are both
    /// before `before_ms`; a key written again afterwards starts again at version 1.
    async fn purge_cache(&self, z: &zk::Client, cluster: &str, before_ms: i64) -> Result<()> {
        let caches = format!("{}/cache", Self::base(cluster));
        for cache in self.children(z, &caches).await? {
            let dir = format!("{caches}/{cache}");
            let names = self.children(z, &dir).await?;
            for batch in names.chunks(CACHE_READ_BATCH) {
                let paths: Vec<String> = batch.iter().map(|n| format!("{dir}/{n}")).collect();
                let reads: Vec<_> = paths.iter().map(|p| z.get_data(p)).collect();
                let mut deletes = Vec::new();
                for (path, read) in paths.iter().zip(reads) {
                    self.read();
                    let (bytes, stat) = match read.await {
                        Ok(v) => v,
                        Err(zk::Error::NoNode) => continue,
                        Err(e) => return Err(unavailable(e)),
                    };
                    let data = match CacheData::parse(path, bytes) {
                        Ok(d) => d,
                        Err(e) => {
                            // Not ours to judge: left for an operator, the rest is purged.
                            tracing::warn!(error = %e, "cache purge skips an unreadable znode");
                            continue;
                        }
                    };
                    let old = stat.mtime < before_ms
                        && (!data.live || data.expires_at(&stat).is_some_and(|at| at < before_ms));
                    if old {
                        self.wrote();
                        deletes.push(z.delete(path, Some(stat.version)));
                    }
                }
                for delete in deletes {
                    match delete.await {
                        // Gone, or written again meanwhile: it stays.
                        Ok(()) | Err(zk::Error::NoNode) | Err(zk::Error::BadVersion) => {}
                        Err(e) => return Err(unavailable(e)),
                    }
                }
            }
        }
        Ok(())
    }
}

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

    async fn join(&self, req: &JoinRequest) -> Result<JoinOutcome> {
        let m = &req.member;
        let z = self.zk().await?;
        self.ensure_cluster(&z, &m.cluster).await?;
        let base = Self::base(&m.cluster);
        let path = format!("{base}/nodes/{}", m.node);
        let now = self.server_now(&z, &m.cluster).await?;
        let registration = Registration {
            tasks: req.declared.clone(),
            meta: req.meta.clone(),
        };
        let declared = serde_json::to_vec(&registration).expect("serializes");
        let chunks: Vec<&[u8]> = declared.chunks(DECL_CHUNK).collect();
        let decl = format!("{base}/decl/{}", m.node);
        self.mkdirs(&z, std::slice::from_ref(&decl)).await?;
        for (i, chunk) in chunks.iter().enumerate() {
            self.wrote();
            let path = format!("{decl}/{}-{i}", m.incarnation);
            match z.create(&path, chunk, &persistent()).await {
                Ok(_) => {}
                Err(zk::Error::NodeExists) => {
                    z.set_data(&path, chunk, None).await.map_err(unavailable)?;
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
        let data = NodeData {
            incarnation: m.incarnation,
            joined_at: now,
            timeout_ms: req.timeout_ms,
            leaving: false,
            host: req.host.clone(),
            process: req.process.clone(),
            declared_chunks: chunks.len() as u32,
        };
        let mut w = z.new_multi_writer();
        if let Some((old, stat)) = self.node(&z, &m.cluster, &m.node).await? {
            let replaceable =
                !Self::alive(&old, &stat, now) || req.replaces == Some(old.incarnation);
            if !replaceable {
                return Ok(JoinOutcome::Occupied(Self::record(
                    &m.node, &old, &stat, now,
                )));
            }
            w.add_delete(&path, Some(stat.version))
                .map_err(unavailable)?;
        }
        w.add_create(&path, &json(&data), &ephemeral())
            .map_err(unavailable)?;
        w.add_set_data(&format!("{base}/generation"), b"", None)
            .map_err(unavailable)?;
        self.wrote();
        match w.commit().await {
            Ok(_) => {
                // Declarations of earlier incarnations of this id are no longer read.
                let mine = format!("{}-", m.incarnation);
                for name in self.children(&z, &decl).await? {
                    if !name.starts_with(&mine) {
                        self.wrote();
                        let _ = z.delete(&format!("{decl}/{name}"), None).await;
                    }
                }
                Ok(JoinOutcome::Joined { now_ms: now })
            }
            Err(e) => match condition_failed(&e) {
                // Someone else registered this id meanwhile: report who.
                Some(_) => match self.node(&z, &m.cluster, &m.node).await? {
                    Some((d, s)) => Ok(JoinOutcome::Occupied(Self::record(&m.node, &d, &s, now))),
                    None => Err(unavailable("the registration changed while joining; retry")),
                },
                None => Err(unavailable(e)),
            },
        }
    }

    async fn heartbeat(&self, m: &Member, not_after_ms: i64) -> Result<bool> {
        // The main session must be alive: its end removed the registration anyway, but say
        // so at once. Never wait for its lock: it is held while a new main session connects
        // (seconds), and the renewal must not queue behind that (the read below answers).
        if self
            .client
            .try_lock()
            .is_ok_and(|c| c.as_ref().is_some_and(|c| c.state().is_terminated()))
        {
            return Ok(false);
        }
        let z = self.zk_beat().await?;
        let Some((data, stat)) = self.node(&z, &m.cluster, &m.node).await? else {
            return Ok(false);
        };
        if data.incarnation != m.incarnation {
            return Ok(false);
        }
        let now = self.server_now(&z, &m.cluster).await?;
        if !Self::alive(&data, &stat, now) || now > not_after_ms {
            return Ok(false);
        }
        let path = format!("{}/nodes/{}", Self::base(&m.cluster), m.node);
        self.wrote();
        match z.set_data(&path, &json(&data), Some(stat.version)).await {
            // Expiry is final: a renewal that came later than the timeout is taken back.
            Ok(new) if new.mtime - stat.mtime > data.timeout_ms => {
                let _ = z.delete(&path, Some(new.version)).await;
                Ok(false)
            }
            Ok(_) => Ok(true),
            Err(zk::Error::BadVersion) | Err(zk::Error::NoNode) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn mark_leaving(&self, m: &Member) -> Result<()> {
        let z = self.zk().await?;
        let Some((mut data, stat)) = self.node(&z, &m.cluster, &m.node).await? else {
            return Ok(());
        };
        if data.incarnation != m.incarnation {
            return Ok(());
        }
        data.leaving = true;
        let base = Self::base(&m.cluster);
        let mut w = z.new_multi_writer();
        w.add_set_data(
            &format!("{base}/nodes/{}", m.node),
            &json(&data),
            Some(stat.version),
        )
        .map_err(unavailable)?;
        w.add_set_data(&format!("{base}/generation"), b"", None)
            .map_err(unavailable)?;
        self.wrote();
        match w.commit().await {
            Ok(_) => Ok(()),
            Err(e) if condition_failed(&e).is_some() => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn leave(&self, m: &Member) -> Result<()> {
        self.release_leadership(m).await?;
        let z = self.zk().await?;
        let Some((data, stat)) = self.node(&z, &m.cluster, &m.node).await? else {
            return Ok(());
        };
        if data.incarnation != m.incarnation {
            return Ok(());
        }
        let base = Self::base(&m.cluster);
        let mut w = z.new_multi_writer();
        w.add_delete(&format!("{base}/nodes/{}", m.node), Some(stat.version))
            .map_err(unavailable)?;
        w.add_set_data(&format!("{base}/generation"), b"", None)
            .map_err(unavailable)?;
        self.wrote();
        match w.commit().await {
            Ok(_) => Ok(()),
            Err(e) if condition_failed(&e).is_some() => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn view(&self, cluster: &str) -> Result<ClusterView> {
        let z = self.zk().await?;
        self.ensure_cluster(&z, cluster).await?;
        let base = Self::base(cluster);
        let generation = self.generation(cluster).await?;
        let now = self.server_now(&z, cluster).await?;
        let mut ids = self.children(&z, &format!("{base}/nodes")).await?;
        ids.sort();
        // Issued together: the client pipelines them on the session.
        let reads: Vec<_> = ids
            .iter()
            .map(|id| z.get_data(&format!("{base}/nodes/{id}")))
            .collect();
        let mut nodes = Vec::with_capacity(ids.len());
        for (id, read) in ids.iter().zip(reads) {
            self.read();
            match read.await {
                Ok((bytes, stat)) => {
                    let d: NodeData = parse("node", &bytes)?;
                    nodes.push(Self::record(id, &d, &stat, now));
                }
                Err(zk::Error::NoNode) => {} // left meanwhile
                Err(e) => return Err(unavailable(e)),
            }
        }
        let leader = self.leader(&z, cluster).await?.0.holder();
        Ok(ClusterView {
            now_ms: now,
            generation,
            nodes,
            leader,
        })
    }

    async fn declarations(
        &self,
        cluster: &str,
        only: Option<&[(String, i64)]>,
    ) -> Result<Vec<NodeDeclarations>> {
        let z = self.zk().await?;
        let ids: Vec<String> = match only {
            Some(list) => list.iter().map(|(n, _)| n.clone()).collect(),
            None => {
                self.children(&z, &format!("{}/nodes", Self::base(cluster)))
                    .await?
            }
        };
        let mut out = Vec::new();
        for id in ids {
            let Some((d, _)) = self.node(&z, cluster, &id).await? else {
                continue;
            };
            if only.is_some_and(|list| !list.iter().any(|(n, i)| *n == id && *i == d.incarnation)) {
                continue;
            }
            let mut bytes = Vec::new();
            let decl = format!("{}/decl/{id}", Self::base(cluster));
            for i in 0..d.declared_chunks {
                self.read();
                match z.get_data(&format!("{decl}/{}-{i}", d.incarnation)).await {
                    Ok((chunk, _)) => bytes.extend_from_slice(&chunk),
                    Err(e) => return Err(unavailable(e)),
                }
            }
            let r: Registration = parse("declarations", &bytes)?;
            out.push(NodeDeclarations {
                node: id,
                incarnation: d.incarnation,
                declared: r.tasks,
                meta: r.meta,
            });
        }
        Ok(out)
    }

    async fn subscribe(&self, cluster: &str) -> Option<tokio::sync::watch::Receiver<u64>> {
        // A watch on the generation znode wakes the node at every change; polling stays as
        // the safety net (and the only path once this session has expired).
        let z = self.zk().await.ok()?;
        let path = format!("{}/generation", Self::base(cluster));
        let (tx, rx) = tokio::sync::watch::channel(0u64);
        tokio::spawn(async move {
            let mut changes = 0u64;
            loop {
                match z.check_and_watch_stat(&path).await {
                    Ok((_, watcher)) => {
                        let event = watcher.changed().await;
                        if event.event_type == zk::EventType::Session {
                            return; // session expired or closed
                        }
                        changes += 1;
                        if tx.send(changes).is_err() {
                            return;
                        }
                    }
                    Err(_) if tx.is_closed() || z.state().is_terminated() => return,
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        });
        Some(rx)
    }

    async fn generation(&self, cluster: &str) -> Result<i64> {
        let z = self.zk().await?;
        self.read();
        match z
            .check_stat(&format!("{}/generation", Self::base(cluster)))
            .await
        {
            Ok(Some(stat)) => Ok(i64::from(stat.version)),
            Ok(None) => Ok(0),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn acquire_leadership(&self, m: &Member) -> Result<Option<Leadership>> {
        let z = self.zk().await?;
        self.ensure_cluster(&z, &m.cluster).await?;
        let base = Self::base(&m.cluster);
        let (current, lstat) = self.leader(&z, &m.cluster).await?;
        let now = self.server_now(&z, &m.cluster).await?;
        let candidate = self.node(&z, &m.cluster, &m.node).await?.filter(|(d, s)| {
            d.incarnation == m.incarnation && !d.leaving && Self::alive(d, s, now)
        });
        let holder = current.holder();
        if let Some(h) = &holder {
            let alive = self
                .registration_alive(&z, &m.cluster, &h.node, h.incarnation, now)
                .await?
                .is_some();
            if alive || candidate.is_none() {
                return Ok(holder);
            }
        }
        if candidate.is_none() {
            return Ok(None);
        }
        // The election recipe: only the first live candidate in line may take over.
        if !self.first_in_line(&z, m, now).await? {
            return Ok(holder);
        }
        let next = LeaderData {
            node: m.node.clone(),
            incarnation: m.incarnation,
            epoch: current.epoch + 1,
        };
        let mut w = z.new_multi_writer();
        // The registration still exists (any version: heartbeats move it).
        w.add_check_version(&format!("{base}/nodes/{}", m.node), -1)
            .map_err(unavailable)?;
        w.add_set_data(&format!("{base}/leader"), &json(&next), Some(lstat.version))
            .map_err(unavailable)?;
        w.add_set_data(&format!("{base}/generation"), b"", None)
            .map_err(unavailable)?;
        self.wrote();
        match w.commit().await {
            Ok(_) => Ok(Some(Leadership {
                node: next.node,
                incarnation: next.incarnation,
                epoch: next.epoch,
            })),
            // Another candidate won the race: report the current holder.
            Err(e) if condition_failed(&e).is_some() => {
                Ok(self.leader(&z, &m.cluster).await?.0.holder())
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn release_leadership(&self, m: &Member) -> Result<()> {
        let z = self.zk().await?;
        // Stepping down is leaving the line too: a later candidacy starts at its back.
        self.leave_election(&z, m).await?;
        let base = Self::base(&m.cluster);
        self.read();
        let (bytes, stat) = match z.get_data(&format!("{base}/leader")).await {
            Ok(v) => v,
            Err(zk::Error::NoNode) => return Ok(()),
            Err(e) => return Err(unavailable(e)),
        };
        let current: LeaderData = parse("leader", &bytes)?;
        if current.node != m.node || current.incarnation != m.incarnation {
            return Ok(());
        }
        // Vacant, keeping the epoch so the next one continues from it.
        let vacant = LeaderData {
            node: String::new(),
            incarnation: 0,
            epoch: current.epoch,
        };
        let mut w = z.new_multi_writer();
        w.add_set_data(
            &format!("{base}/leader"),
            &json(&vacant),
            Some(stat.version),
        )
        .map_err(unavailable)?;
        w.add_set_data(&format!("{base}/generation"), b"", None)
            .map_err(unavailable)?;
        self.wrote();
        match w.commit().await {
            Ok(_) => Ok(()),
            Err(e) if condition_failed(&e).is_some() => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn assignments(&self, cluster: &str) -> Result<Vec<Assignment>> {
        self.assignments_since(cluster, -1).await
    }

    async fn assignments_since(&self, cluster: &str, generation: i64) -> Result<Vec<Assignment>> {
        let z = self.zk().await?;
        let base = Self::base(cluster);
        let mut tasks = match self.changed_since(&z, cluster, generation).await? {
            Some(changed) => changed,
            None => self.children(&z, &format!("{base}/assign")).await?,
        };
        tasks.sort();
        tasks.dedup();
        // Issued together: the client pipelines them on the session.
        let reads: Vec<_> = tasks
            .iter()
            .map(|t| z.get_data(&format!("{}/assign/{t}", Self::base(cluster))))
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for (task, read) in tasks.into_iter().zip(reads) {
            self.read();
            let (bytes, _) = match read.await {
                Ok(v) => v,
                Err(zk::Error::NoNode) => continue,
                Err(e) => return Err(unavailable(e)),
            };
            let a: AssignData = parse("assignment", &bytes)?;
            if a.version <= generation {
                continue;
            }
            out.push(Assignment {
                task,
                owner: a.node.zip(a.incarnation),
                token: a.token,
                reason: a.reason,
                placed_at_ms: a.placed_at,
            });
        }
        Ok(out)
    }

    async fn write_assignments(
        &self,
        leader: &Member,
        epoch: i64,
        changes: &[AssignmentChange],
    ) -> Result<LeaderWrite> {
        let z = self.zk().await?;
        let cluster = &leader.cluster;
        let base = Self::base(cluster);
        let Some(fence) = self.leader_fence(&z, leader, epoch).await? else {
            return Ok(LeaderWrite::Deposed);
        };
        let now = fence.now;
        // Read every changed row (pipelined) to check the token the leader saw.
        let reads: Vec<_> = changes
            .iter()
            .map(|c| z.get_data(&format!("{base}/assign/{}", c.task)))
            .collect();
        let mut current: HashMap<&str, (AssignData, i32)> = HashMap::new();
        for (c, read) in changes.iter().zip(reads) {
            self.read();
            match read.await {
                Ok((bytes, stat)) => {
                    current.insert(
                        c.task.as_str(),
                        (parse("assignment", &bytes)?, stat.version),
                    );
                }
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        for c in changes {
            let seen = current.get(c.task.as_str()).map(|(a, _)| a.token);
            if seen != c.expected_token {
                return Ok(LeaderWrite::Stale);
            }
        }
        self.read();
        let gstat = z
            .check_stat(&format!("{base}/generation"))
            .await
            .map_err(unavailable)?
            .ok_or_else(|| unavailable("the cluster's generation znode is missing"))?;
        self.mkdirs(&z, &[format!("{base}/changes")]).await?;
        // Each chunk is one multi-op that takes the next generation.
        for (gversion, chunk) in (gstat.version..).zip(changes.chunks(MULTI_LIMIT)) {
            let generation = i64::from(gversion) + 1;
            let mut w = z.new_multi_writer();
            fence.check(&mut w, &base, &leader.node)?;
            // The change log: which tasks this generation changed, for `assignments_since`.
            let names: Vec<&str> = chunk.iter().map(|c| c.task.as_str()).collect();
            w.add_create(
                &format!("{base}/changes/{generation:020}"),
                &json(&names),
                &persistent(),
            )
            .map_err(unavailable)?;
            w.add_set_data(&format!("{base}/generation"), b"", Some(gversion))
                .map_err(unavailable)?;
            for c in chunk {
                let path = format!("{base}/assign/{}", c.task);
                match current.get(c.task.as_str()) {
                    Some((old, version)) => {
                        let placed_at = if c.owner.is_some() && old.placed_at == 0 {
                            now
                        } else {
                            old.placed_at
                        };
                        let data = AssignData {
                            node: c.owner.as_ref().map(|(n, _)| n.clone()),
                            incarnation: c.owner.as_ref().map(|(_, i)| *i),
                            token: old.token + 1,
                            epoch,
                            placed_at,
                            reason: c.reason.clone(),
                            version: generation,
                        };
                        w.add_set_data(&path, &json(&data), Some(*version))
                            .map_err(unavailable)?;
                    }
                    None => {
                        let data = AssignData {
                            node: c.owner.as_ref().map(|(n, _)| n.clone()),
                            incarnation: c.owner.as_ref().map(|(_, i)| *i),
                            token: 1,
                            epoch,
                            placed_at: if c.owner.is_some() { now } else { 0 },
                            reason: c.reason.clone(),
                            version: generation,
                        };
                        w.add_create(&path, &json(&data), &persistent())
                            .map_err(unavailable)?;
                    }
                }
            }
            self.wrote();
            match w.commit().await {
                Ok(_) => {}
                Err(e) => match condition_failed(&e) {
                    Some(_) => {
                        // The leader row moved: deposed; else a row or the generation moved.
                        let (now_l, _) = self.leader(&z, cluster).await?;
                        return Ok(if now_l.epoch != epoch || now_l.node != leader.node {
                            LeaderWrite::Deposed
                        } else {
                            LeaderWrite::Stale
                        });
                    }
                    None => return Err(unavailable(e)),
                },
            }
        }
        self.prune_changes(&z, cluster).await?;
        Ok(LeaderWrite::Written)
    }

    async fn lead_commands(
        &self,
        leader: &Member,
        epoch: i64,
        acks: &[Ack],
        command: Option<&str>,
    ) -> Result<LeaderWrite> {
        let z = self.zk().await?;
        let cluster = &leader.cluster;
        self.ensure_cluster(&z, cluster).await?;
        let base = Self::base(cluster);
        let mut dirs = vec![format!("{base}/commands"), format!("{base}/acks")];
        dirs.extend(acks.iter().map(|a| format!("{base}/acks/{:020}", a.seq)));
        self.mkdirs(&z, &dirs).await?;
        // One multi-op checked against the leader znode's version read with the judgement:
        // a takeover in between fails it. Retried when another write took the generation or
        // an acknowledgement appeared or changed meanwhile.
        loop {
            let Some(fence) = self.leader_fence(&z, leader, epoch).await? else {
                return Ok(LeaderWrite::Deposed);
            };
            let mut w = z.new_multi_writer();
            fence.check(&mut w, &base, &leader.node)?;
            for ack in acks {
                let path = format!("{base}/acks/{:020}/{}", ack.seq, ack.node);
                let data = json(&AckData {
                    incarnation: ack.incarnation,
                    state: ack.state,
                    message: ack.message.clone(),
                });
                self.read();
                match z.check_stat(&path).await.map_err(unavailable)? {
                    Some(stat) => w.add_set_data(&path, &data, Some(stat.version)),
                    None => w.add_create(&path, &data, &persistent()),
                }
                .map_err(unavailable)?;
            }
            if let Some(body) = command {
                self.add_command(&z, &mut w, &base, body).await?;
            }
            self.wrote();
            match w.commit().await {
                Ok(_) => return Ok(LeaderWrite::Written),
                Err(e) if condition_failed(&e).is_some() => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    async fn claim(&self, c: &Claim) -> Result<ClaimOutcome> {
        let z = self.zk().await?;
        let now = self.server_now(&z, &c.member.cluster).await?;
        let running = c.outcome == Outcome::Running;
        let data = FireData {
            instant: c.instant_ms,
            node: c.member.node.clone(),
            incarnation: c.member.incarnation,
            token: c.token,
            attempt: 1,
            outcome: c.outcome.as_str().to_string(),
            started_at: None, // set when it begins (`begin_fires`)
            finished_at: (!running).then_some(now),
            message: c.message.clone(),
            alive_until: None,
        };
        let key = fire_key(c.instant_ms);
        Ok(
            match self
                .create_record(&c.member, &c.task, &key, c.token, &data, running, now)
                .await?
            {
                Some(true) => ClaimOutcome::Claimed,
                Some(false) => ClaimOutcome::AlreadyClaimed,
                None => self.taken_or_fenced(&z, c).await?,
            },
        )
    }

    async fn claim_batch(&self, claims: &[Claim]) -> Result<Vec<ClaimOutcome>> {
        // One claimant per batch (a node's batcher): one clock read and one registration
        // check for all, the assignments read and the multi-ops sent pipelined.
        let Some(first) = claims.first() else {
            return Ok(Vec::new());
        };
        if claims.len() == 1 || claims.iter().any(|c| c.member != first.member) {
            let mut out = Vec::with_capacity(claims.len());
            for c in claims {
                out.push(self.claim(c).await?);
            }
            return Ok(out);
        }
        let m = &first.member;
        let z = self.zk().await?;
        let base = Self::base(&m.cluster);
        for c in claims {
            self.record_dirs(&z, &m.cluster, &c.task).await?;
        }
        let now = self.server_now(&z, &m.cluster).await?;
        if self
            .registration_alive(&z, &m.cluster, &m.node, m.incarnation, now)
            .await?
            .is_none()
        {
            return Ok(vec![ClaimOutcome::Fenced; claims.len()]);
        }
        let reads: Vec<_> = claims
            .iter()
            .map(|c| z.get_data(&format!("{base}/assign/{}", c.task)))
            .collect();
        let mut versions = Vec::with_capacity(claims.len());
        for (c, read) in claims.iter().zip(reads) {
            self.read();
            versions.push(match read.await {
                Ok((bytes, stat)) => {
                    let a: AssignData = parse("assignment", &bytes)?;
                    let named = a.token == c.token
                        && a.node.as_deref() == Some(m.node.as_str())
                        && a.incarnation == Some(m.incarnation);
                    named.then_some(stat.version)
                }
                Err(zk::Error::NoNode) => None,
                Err(e) => return Err(unavailable(e)),
            });
        }
        let mut writers = Vec::new();
        for (c, version) in claims.iter().zip(&versions) {
            let Some(version) = version else {
                writers.push(None);
                continue;
            };
            let running = c.outcome == Outcome::Running;
            let data = FireData {
                instant: c.instant_ms,
                node: m.node.clone(),
                incarnation: m.incarnation,
                token: c.token,
                attempt: 1,
                outcome: c.outcome.as_str().to_string(),
                started_at: None, // set when it begins (`begin_fires`)
                finished_at: (!running).then_some(now),
                message: c.message.clone(),
                alive_until: None,
            };
            let key = fire_key(c.instant_ms);
            let mut w = z.new_multi_writer();
            w.add_check_version(&format!("{base}/assign/{}", c.task), *version)
                .map_err(unavailable)?;
            w.add_check_version(&format!("{base}/nodes/{}", m.node), -1)
                .map_err(unavailable)?;
            w.add_create(
                &format!("{base}/fires/{}/{key}", c.task),
                &json(&data),
                &persistent(),
            )
            .map_err(unavailable)?;
            if running {
                w.add_create(
                    &format!("{base}/running/{}/{key}", c.task),
                    b"",
                    &persistent(),
                )
                .map_err(unavailable)?;
            }
            writers.push(Some(w));
        }
        // Every commit is sent before any answer is awaited.
        let commits: Vec<_> = writers
            .iter_mut()
            .map(|w| w.as_mut().map(|w| w.commit()))
            .collect();
        let mut out = Vec::with_capacity(claims.len());
        for (c, commit) in claims.iter().zip(commits) {
            let Some(commit) = commit else {
                out.push(self.taken_or_fenced(&z, c).await?);
                continue;
            };
            self.wrote();
            out.push(match commit.await {
                Ok(_) => ClaimOutcome::Claimed,
                Err(e) => match condition_failed(&e) {
                    Some(zk::Error::NodeExists) => ClaimOutcome::AlreadyClaimed,
                    Some(_) => self.taken_or_fenced(&z, c).await?,
                    None => return Err(unavailable(e)),
                },
            });
        }
        Ok(out)
    }

    async fn finish_batch(&self, cluster: &str, finishes: &[Finish]) -> Result<()> {
        if finishes.len() == 1 {
            return self.finish(cluster, &finishes[0]).await;
        }
        let z = self.zk().await?;
        let base = Self::base(cluster);
        let now = self.server_now(&z, cluster).await?;
        let reads: Vec<_> = finishes
            .iter()
            .map(|f| {
                z.get_data(&format!(
                    "{base}/fires/{}/{}",
                    f.task,
                    fire_key(f.instant_ms)
                ))
            })
            .collect();
        let mut writers = Vec::new();
        for (f, read) in finishes.iter().zip(reads) {
            self.read();
            let (bytes, stat) = match read.await {
                Ok(v) => v,
                Err(zk::Error::NoNode) => continue,
                Err(e) => return Err(unavailable(e)),
            };
            let mut data: FireData = parse("fire", &bytes)?;
            if data.outcome != "running" || data.token != f.token || data.attempt != f.attempt {
                continue;
            }
            data.finish(f.outcome, f.message.as_deref(), now);
            let key = fire_key(f.instant_ms);
            let mut w = z.new_multi_writer();
            w.add_set_data(
                &format!("{base}/fires/{}/{key}", f.task),
                &json(&data),
                Some(stat.version),
            )
            .map_err(unavailable)?;
            w.add_delete(&format!("{base}/running/{}/{key}", f.task), None)
                .map_err(unavailable)?;
            writers.push(w);
        }
        let commits: Vec<_> = writers.iter_mut().map(|w| w.commit()).collect();
        for commit in commits {
            self.wrote();
            match commit.await {
                Ok(_) => {}
                // Changed meanwhile (recovered by another node): not ours to finish.
                Err(e) if condition_failed(&e).is_some() => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(())
    }

    async fn finish(&self, cluster: &str, f: &Finish) -> Result<()> {
        self.finish_record(
            cluster,
            &f.task,
            &fire_key(f.instant_ms),
            f.token,
            f.attempt,
            f.outcome,
            f.message.as_deref(),
        )
        .await
    }

    async fn last_instant(&self, cluster: &str, task: &str) -> Result<Option<i64>> {
        let z = self.zk().await?;
        let keys = self
            .children(&z, &format!("{}/fires/{task}", Self::base(cluster)))
            .await?;
        Ok(keys
            .iter()
            .filter(|k| !is_item(k))
            .filter_map(|k| k.parse::<i64>().ok())
            .max())
    }

    async fn running_fires(&self, cluster: &str, task: &str) -> Result<Vec<RunningFire>> {
        let z = self.zk().await?;
        let mut keys = self
            .children(&z, &format!("{}/running/{task}", Self::base(cluster)))
            .await?;
        keys.retain(|k| !is_item(k));
        keys.sort();
        if keys.is_empty() {
            return Ok(Vec::new()); // the common case: no clock read (a write) needed
        }
        let now = self.server_now(&z, cluster).await?;
        let mut out = Vec::new();
        for key in keys {
            let Some((f, fstat)) = self.fire(&z, cluster, task, &key).await? else {
                continue;
            };
            if f.outcome != "running" {
                continue;
            }
            let begun = Self::begun(&f, &fstat);
            let alive = self
                .registration_alive(&z, cluster, &f.node, f.incarnation, now)
                .await?
                .is_some();
            out.push(RunningFire {
                instant_ms: f.instant,
                node: f.node,
                incarnation: f.incarnation,
                token: f.token,
                attempt: f.attempt,
                node_alive: alive,
                begun,
            });
        }
        Ok(out)
    }

    async fn begin_fires(&self, m: &Member, fires: &[Begin]) -> Result<Vec<bool>> {
        let z = self.zk().await?;
        // One clock read and one registration read for the batch (reading store time is a
        // write on ZooKeeper), not one per fire.
        let mut judged = None;
        let mut out = Vec::with_capacity(fires.len());
        for b in fires {
            out.push(self.begin_fire(&z, m, b, &mut judged).await?);
        }
        Ok(out)
    }

    async fn recover_fire(
        &self,
        m: &Member,
        task: &str,
        token: i64,
        fire: &RunningFire,
        retry: bool,
    ) -> Result<ClaimOutcome> {
        let key = fire_key(fire.instant_ms);
        let how = Recovery::of(fire.begun, retry);
        self.recover_record(m, task, &key, token, (fire.token, fire.attempt), how)
            .await
    }

    async fn claim_item(
        &self,
        m: &Member,
        service: &str,
        token: i64,
        item: &str,
    ) -> Result<ItemClaim> {
        let z = self.zk().await?;
        let now = self.server_now(&z, &m.cluster).await?;
        let key = item_key(item);
        let data = FireData {
            instant: 0,
            node: m.node.clone(),
            incarnation: m.incarnation,
            token,
            attempt: 1,
            outcome: "running".into(),
            started_at: Some(now),
            finished_at: None,
            message: None,
            alive_until: None,
        };
        if self
            .create_record(m, service, &key, token, &data, true, now)
            .await?
            == Some(true)
        {
            return Ok(ItemClaim::Claimed);
        }
        let Some((f, _)) = self.fire(&z, &m.cluster, service, &key).await? else {
            return Ok(ItemClaim::Fenced);
        };
        let alive = self
            .registration_alive(&z, &m.cluster, &f.node, f.incarnation, now)
            .await?
            .is_some();
        Ok(ItemClaim::Recorded(ItemRecord {
            node: f.node,
            incarnation: f.incarnation,
            token: f.token,
            attempt: f.attempt,
            outcome: Outcome::parse(&f.outcome).ok_or_else(|| corrupt("item", &f.outcome))?,
            node_alive: alive,
        }))
    }

    async fn recover_item(
        &self,
        m: &Member,
        service: &str,
        token: i64,
        item: &str,
        record: &ItemRecord,
        retry: bool,
    ) -> Result<ClaimOutcome> {
        self.recover_record(
            m,
            service,
            &item_key(item),
            token,
            (record.token, record.attempt),
            if record.outcome == Outcome::Released {
                Recovery::Reclaim
            } else {
                Recovery::of(true, retry) // an item begins with its claim
            },
        )
        .await
    }

    async fn finish_item(&self, cluster: &str, ended: &ItemEnd<'_>) -> Result<()> {
        self.finish_record(
            cluster,
            ended.service,
            &item_key(ended.item),
            ended.token,
            ended.attempt,
            ended.outcome,
            ended.message,
        )
        .await
    }

    async fn history(
        &self,
        cluster: &str,
        task: Option<&str>,
        limit: i64,
    ) -> Result<Vec<FireRecord>> {
        let z = self.zk().await?;
        let base = Self::base(cluster);
        let tasks = match task {
            Some(t) => vec![t.to_string()],
            None => self.children(&z, &format!("{base}/fires")).await?,
        };
        let limit = usize::try_from(limit.max(0)).unwrap_or(usize::MAX);
        let mut out = Vec::new();
        for t in tasks {
            let mut keys: Vec<String> = self
                .children(&z, &format!("{base}/fires/{t}"))
                .await?
                .into_iter()
                .filter(|k| !is_item(k))
                .collect();
            keys.sort_unstable_by(|a, b| b.cmp(a));
            keys.truncate(limit);
            for key in keys {
                if let Some((f, _)) = self.fire(&z, cluster, &t, &key).await? {
                    out.push(Self::fire_record(&t, f)?);
                }
            }
        }
        out.sort_by(|a, b| b.instant_ms.cmp(&a.instant_ms).then(a.task.cmp(&b.task)));
        out.truncate(limit);
        Ok(out)
    }

    async fn purge_history(&self, cluster: &str, before_ms: i64) -> Result<u64> {
        let z = self.zk().await?;
        let base = Self::base(cluster);
        let mut purged = 0;
        for t in self.children(&z, &format!("{base}/fires")).await? {
            let keys = self.children(&z, &format!("{base}/fires/{t}")).await?;
            let newest = keys.iter().filter(|k| !is_item(k)).max().cloned();
            // Old fires by their key; items (keyed by name) by their record: read them, but
            // not a finished item whose end is known and too recent.
            let candidates: Vec<(bool, String)> = {
                let finished = self.finished_items.lock().unwrap();
                keys.into_iter()
                    .filter_map(|key| {
                        let item = is_item(&key);
                        let path = format!("{base}/fires/{t}/{key}");
                        let candidate = if item {
                            finished.get(&path).is_none_or(|at| *at < before_ms)
                        } else {
                            Some(&key) != newest.as_ref()
                                && key.parse::<i64>().is_ok_and(|i| i < before_ms)
                        };
                        candidate.then_some((item, path))
                    })
                    .collect()
            };
            // Pipelined: each batch of requests is sent before the first reply is awaited (a
            // service's history holds tens of thousands of items; one round trip each took
            // longer than a placement round).
            for batch in candidates.chunks(PURGE_BATCH) {
                let reads: Vec<_> = batch
                    .iter()
                    .map(|(item, path)| {
                        self.read();
                        (*item, path, z.get_data(path))
                    })
                    .collect();
                let mut deletes = Vec::new();
                for (item, path, read) in reads {
                    let (bytes, stat) = match read.await {
                        Ok(found) => found,
                        Err(zk::Error::NoNode) => {
                            // Purged by another leader meanwhile.
                            self.finished_items.lock().unwrap().remove(path);
                            continue;
                        }
                        Err(e) => return Err(unavailable(e)),
                    };
                    let f: FireData = parse("fire", &bytes)?;
                    if f.outcome == "running" {
                        continue;
                    }
                    match (item, f.finished_at) {
                        (true, Some(at)) if at >= before_ms => {
                            self.finished_items.lock().unwrap().insert(path.clone(), at);
                        }
                        (true, None) => {}
                        _ => {
                            self.wrote();
                            deletes.push((z.delete(path, Some(stat.version)), path));
                        }
                    }
                }
                for (delete, path) in deletes {
                    self.finished_items.lock().unwrap().remove(path);
                    match delete.await {
                        Ok(()) => purged += 1,
                        Err(zk::Error::NoNode) | Err(zk::Error::BadVersion) => {}
                        Err(e) => return Err(unavailable(e)),
                    }
                }
            }
        }
        let events = format!("{base}/events");
        for id in self.children(&z, &events).await? {
            let at = id.split('-').next().and_then(|t| t.parse::<i64>().ok());
            if at.is_some_and(|at| at < before_ms) {
                self.wrote();
                match z.delete(&format!("{events}/{id}"), None).await {
                    Ok(()) | Err(zk::Error::NoNode) => {}
                    Err(e) => return Err(unavailable(e)),
                }
            }
        }
        self.purge_cache(&z, cluster, before_ms).await?;
        Ok(purged)
    }

    async fn append_command(&self, cluster: &str, body: &str) -> Result<(i64, i64)> {
        let z = self.zk().await?;
        self.ensure_cluster(&z, cluster).await?;
        let base = Self::base(cluster);
        self.mkdirs(&z, &[format!("{base}/commands"), format!("{base}/acks")])
            .await?;
        loop {
            let mut w = z.new_multi_writer();
            let seq = self.add_command(&z, &mut w, &base, body).await?;
            self.wrote();
            match w.commit().await {
                Ok(results) => {
                    let issued_at = results
                        .into_iter()
                        .find_map(|r| match r {
                            zk::MultiWriteResult::SetData { stat } => Some(stat.mtime),
                            _ => None,
                        })
                        .ok_or_else(|| unavailable("the command's multi-op returned no stat"))?;
                    return Ok((seq, issued_at));
                }
                // Another change took this generation first: take the next one.
                Err(e) if condition_failed(&e).is_some() => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    async fn commands(&self, cluster: &str, after: i64, limit: i64) -> Result<Vec<CommandRecord>> {
        let z = self.zk().await?;
        let dir = format!("{}/commands", Self::base(cluster));
        let mut seqs: Vec<i64> = self
            .children(&z, &dir)
            .await?
            .iter()
            .filter_map(|c| c.parse::<i64>().ok())
            .filter(|seq| *seq > after)
            .collect();
        seqs.sort_unstable();
        seqs.truncate(usize::try_from(limit.max(0)).unwrap_or(usize::MAX));
        // Issued together: the client pipelines them on the session.
        let reads: Vec<_> = seqs
            .iter()
            .map(|seq| z.get_data(&format!("{dir}/{seq:020}")))
            .collect();
        let mut out = Vec::with_capacity(seqs.len());
        for (seq, read) in seqs.into_iter().zip(reads) {
            self.read();
            let (bytes, stat) = read.await.map_err(unavailable)?;
            out.push(CommandRecord {
                seq,
                issued_at_ms: stat.ctime,
                body: String::from_utf8(bytes).map_err(|e| corrupt("command", e))?,
            });
        }
        Ok(out)
    }

    async fn ack_command(&self, cluster: &str, ack: &Ack) -> Result<()> {
        let z = self.zk().await?;
        let dir = format!("{}/acks/{:020}", Self::base(cluster), ack.seq);
        let path = format!("{dir}/{}", ack.node);
        let data = json(&AckData {
            incarnation: ack.incarnation,
            state: ack.state,
            message: ack.message.clone(),
        });
        loop {
            self.wrote();
            match z.set_data(&path, &data, None).await {
                Ok(_) => return Ok(()),
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(unavailable(e)),
            }
            self.mkdirs(&z, std::slice::from_ref(&dir)).await?;
            self.wrote();
            match z.create(&path, &data, &persistent()).await {
                Ok(_) => return Ok(()),
                Err(zk::Error::NodeExists) => continue, // written meanwhile: replace it
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    async fn record_event(&self, cluster: &str, event: &EventRecord) -> Result<()> {
        let z = self.zk().await?;
        let dir = format!("{}/events", Self::base(cluster));
        self.mkdirs(&z, std::slice::from_ref(&dir)).await?;
        let data = json(&EventData {
            at_ms: event.at_ms,
            kind: event.kind.clone(),
            body: event.body.clone(),
        });
        self.wrote();
        match z
            .create(&format!("{dir}/{}", event.id), &data, &persistent())
            .await
        {
            // Already recorded (by this node before, or by another): the same fact.
            Ok(_) | Err(zk::Error::NodeExists) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn events(&self, cluster: &str, limit: i64) -> Result<Vec<EventRecord>> {
        let z = self.zk().await?;
        let dir = format!("{}/events", Self::base(cluster));
        let mut ids = self.children(&z, &dir).await?;
        // Ids start with the time: the newest sort last.
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.truncate(usize::try_from(limit.max(0)).unwrap_or(usize::MAX));
        let reads: Vec<_> = ids
            .iter()
            .map(|id| z.get_data(&format!("{dir}/{id}")))
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for (id, read) in ids.into_iter().zip(reads) {
            self.read();
            let (bytes, _) = match read.await {
                Ok(v) => v,
                Err(zk::Error::NoNode) => continue, // purged meanwhile
                Err(e) => return Err(unavailable(e)),
            };
            let e: EventData = parse("event", &bytes)?;
            out.push(EventRecord {
                id,
                at_ms: e.at_ms,
                kind: e.kind,
                body: e.body,
            });
        }
        Ok(out)
    }

    async fn cache_get(&self, cluster: &str, cache: &str, key: &str) -> Result<Option<CacheEntry>> {
        let dir = cache_dir(cluster, cache)?;
        let path = cache_path(&dir, key)?;
        let z = self.zk().await?;
        let Some((data, stat)) = self.cache_read(&z, &path).await? else {
            return Ok(None);
        };
        if !self
            .cache_live(&z, cluster, &data, &stat, &mut None)
            .await?
        {
            return Ok(None);
        }
        Ok(Some(CacheEntry {
            expires_at_ms: data.expires_at(&stat),
            version: cache_version(&stat),
            value: data.value,
        }))
    }

    async fn cache_put(&self, cluster: &str, w: &CacheWrite<'_>) -> Result<CacheOutcome> {
        self.cache_write(cluster, w.cache, w.key, Some((w.value, w.ttl_ms)), w.expect)
            .await
    }

    async fn cache_delete(
        &self,
        cluster: &str,
        cache: &str,
        key: &str,
        expect: Expect,
    ) -> Result<CacheOutcome> {
        self.cache_write(cluster, cache, key, None, expect).await
    }

    async fn cache_keys(
        &self,
        cluster: &str,
        cache: &str,
        prefix: &str,
        limit: i64,
    ) -> Result<Vec<String>> {
        let limit = usize::try_from(limit.max(0)).unwrap_or(usize::MAX);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let dir = cache_dir(cluster, cache)?;
        let z = self.zk().await?;
        // Synced first, like `cache_get`: the listing reflects every completed write.
        let sync = z.sync(&dir);
        self.read();
        let names = self.children(&z, &dir).await?;
        sync.await.map_err(unavailable)?;
        let mut keys = Vec::with_capacity(names.len());
        for name in names {
            let key = unescape(&name).ok_or_else(|| {
                corrupt(&format!("cache entry {dir}/{name}"), "not an escaped key")
            })?;
            if key.starts_with(prefix) {
                keys.push((key, name));
            }
        }
        // Byte-wise, on the keys themselves (escaping does not keep their order).
        keys.sort_unstable();
        // Only the entries' data tells tombstones and expiry: read in order, in pipelined
        // batches, until `limit` live keys are found.
        let mut out = Vec::new();
        let mut now = None;
        let mut rest = keys.as_slice();
        while !rest.is_empty() && out.len() < limit {
            let take = (limit - out.len())
                .clamp(16, CACHE_READ_BATCH)
                .min(rest.len());
            let (batch, after) = rest.split_at(take);
            rest = after;
            let paths: Vec<String> = batch.iter().map(|(_, n)| format!("{dir}/{n}")).collect();
            let reads: Vec<_> = paths.iter().map(|p| z.get_data(p)).collect();
            for (((key, _), path), read) in batch.iter().zip(&paths).zip(reads) {
                self.read();
                let (bytes, stat) = match read.await {
                    Ok(v) => v,
                    Err(zk::Error::NoNode) => continue, // purged meanwhile
                    Err(e) => return Err(unavailable(e)),
                };
                let data = CacheData::parse(path, bytes)?;
                if self.cache_live(&z, cluster, &data, &stat, &mut now).await? {
                    out.push(key.clone());
                    if out.len() == limit {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    async fn save_task_state(
        &self,
        cluster: &str,
        task: &str,
        token: i64,
        value: &[u8],
    ) -> Result<bool> {
        let dir = cache_dir(cluster, TASK_STATE_CACHE)?;
        let path = cache_path(&dir, task)?;
        let data = cache_bytes(Some((value, None)));
        let assignment = format!("{}/assign/{task}", Self::base(cluster));
        let z = self.zk().await?;
        self.mkdirs(&z, std::slice::from_ref(&dir)).await?;
        for _ in 0..CACHE_ATTEMPTS {
            // Synced first: a token current before the call is seen.
            let sync = z.sync(&assignment);
            let read = z.get_data(&assignment);
            let entry = z.check_stat(&path);
            self.read();
            self.read();
            self.read();
            sync.await.map_err(unavailable)?;
            let (bytes, astat) = match read.await {
                Ok(v) => v,
                Err(zk::Error::NoNode) => return Ok(false), // no such task
                Err(e) => return Err(unavailable(e)),
            };
            let a: AssignData = parse("assignment", &bytes)?;
            if a.token != token {
                return Ok(false); // the task moved on
            }
            let exists = entry.await.map_err(unavailable)?.is_some();
            // The assignment unchanged since read is the fence, in the same multi-op.
            let mut w = z.new_multi_writer();
            w.add_check_version(&assignment, astat.version)
                .map_err(unavailable)?;
            if exists {
                w.add_set_data(&path, &data, None).map_err(unavailable)?;
            } else {
                w.add_create(&path, &data, &persistent())
                    .map_err(unavailable)?;
            }
            self.wrote();
            match w.commit().await {
                Ok(_) => return Ok(true),
                Err(e) => match (&e, condition_failed(&e)) {
                    // The assignment changed: read it again (same token, or fenced).
                    (_, Some(zk::Error::BadVersion)) => {}
                    (
                        zk::MultiWriteError::OperationFailed { index: 0, .. },
                        Some(zk::Error::NoNode),
                    ) => {}
                    // The entry was created or purged meanwhile: the other operation now.
                    (_, Some(zk::Error::NodeExists)) => {}
                    (_, Some(zk::Error::NoNode)) if exists => {}
                    // The directory was removed since this process created it.
                    (_, Some(zk::Error::NoNode)) => {
                        self.known_dirs.lock().unwrap().remove(&dir);
                        self.mkdirs(&z, std::slice::from_ref(&dir)).await?;
                    }
                    _ => return Err(unavailable(e)),
                },
            }
        }
        Err(unavailable(format!(
            "state of task `{task}`: changed by others at every one of {CACHE_ATTEMPTS} attempts"
        )))
    }

    async fn cache_changes(
        &self,
        cluster: &str,
    ) -> Option<tokio::sync::broadcast::Receiver<CacheChange>> {
        // One persistent recursive watch (ZooKeeper 3.6+) on the cluster's `cache/`: every
        // entry written, created or deleted. Without it (store unreachable now), `None`:
        // near caches keep copies only briefly.
        let z = self.zk().await.ok()?;
        let dir = format!("{}/cache", Self::base(cluster));
        self.mkdirs(&z, std::slice::from_ref(&dir)).await.ok()?;
        let mut watcher = match z.watch(&dir, zk::AddWatchMode::PersistentRecursive).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch cache changes; near caches poll");
                return None;
            }
        };
        let (tx, rx) = tokio::sync::broadcast::channel(1024);
        // Copies made before the watch may be stale already.
        let _ = tx.send(CacheChange::everything());
        let prefix = format!("{dir}/");
        tokio::spawn(async move {
            let mut idle = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    event = watcher.changed() => match event.event_type {
                        zk::EventType::Session => {
                            // Ended: the watch is gone with the session (receivers see the
                            // channel closed). Disconnected or reconnected: changes made
                            // meanwhile may never be reported.
                            if event.session_state.is_terminated() {
                                return;
                            }
                            if matches!(
                                event.session_state,
                                zk::SessionState::SyncConnected
                                    | zk::SessionState::ConnectedReadOnly
                            ) {
                                // zookeeper-client 0.11 does not restore persistent watches
                                // on a new connection (its `resend_watches` sends only the
                                // one-shot kinds): add it again, then report everything.
                                match Self::rewatch(&z, &dir).await {
                                    // The old watcher goes: with the new one standing for
                                    // the path, dropping it sends no removal.
                                    Some(w) => watcher = w,
                                    // Better no push (near caches poll) than a dead one.
                                    None => return,
                                }
                                let _ = tx.send(CacheChange::everything());
                            } else {
                                // Disconnected: nothing is pushed until the watch is back.
                                let _ = tx.send(CacheChange::lost());
                            }
                        }
                        zk::EventType::NodeCreated
                        | zk::EventType::NodeDataChanged
                        | zk::EventType::NodeDeleted => {
                            if let Some(change) = cache_change(&prefix, &event.path) {
                                let _ = tx.send(change);
                            }
                        }
                        zk::EventType::NodeChildrenChanged => {}
                    },
                    _ = idle.tick() => {
                        if tx.receiver_count() == 0 || z.state().is_terminated() {
                            return;
                        }
                    }
                }
            }
        });
        Some(rx)
    }

    async fn command_acks(&self, cluster: &str, filter: AckFilter<'_>) -> Result<Vec<Ack>> {
        let z = self.zk().await?;
        let acks = format!("{}/acks", Self::base(cluster));
        let mut wanted: Vec<(i64, String)> = Vec::new();
        match filter {
            AckFilter::Commands(seqs) => {
                let lists: Vec<_> = seqs
                    .iter()
                    .map(|seq| z.list_children(&format!("{acks}/{seq:020}")))
                    .collect();
                for (seq, list) in seqs.iter().zip(lists) {
                    self.read();
                    match list.await {
                        Ok(nodes) => wanted.extend(nodes.into_iter().map(|n| (*seq, n))),
                        Err(zk::Error::NoNode) => {}
                        Err(e) => return Err(unavailable(e)),
                    }
                }
            }
            AckFilter::Node(node) => {
                for seq in self.children(&z, &acks).await? {
                    if let Ok(seq) = seq.parse::<i64>() {
                        wanted.push((seq, node.to_string()));
                    }
                }
            }
        }
        wanted.sort();
        let reads: Vec<_> = wanted
            .iter()
            .map(|(seq, node)| z.get_data(&format!("{acks}/{seq:020}/{node}")))
            .collect();
        let mut out = Vec::new();
        for ((seq, node), read) in wanted.into_iter().zip(reads) {
            self.read();
            let (bytes, stat) = match read.await {
                Ok(v) => v,
                Err(zk::Error::NoNode) => continue,
                Err(e) => return Err(unavailable(e)),
            };
            let a: AckData = parse("command acknowledgement", &bytes)?;
            out.push(Ack {
                seq,
                node,
                incarnation: a.incarnation,
                state: a.state,
                message: a.message,
                at_ms: stat.mtime,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_begin_committed_after_its_claimants_registration_expired_does_not_count() {
        let fire = |started: Option<i64>, alive_until: Option<i64>| FireData {
            instant: 1_000,
            node: "a".into(),
            incarnation: 1,
            token: 1,
            attempt: 1,
            outcome: "running".into(),
            started_at: started,
            finished_at: None,
            message: None,
            alive_until,
        };
        let committed_at = |mtime: i64| zk::Stat {
            czxid: 1,
            mzxid: 1,
            pzxid: 1,
            ctime: 0,
            mtime,
            version: 1,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: 0,
            data_length: 0,
            num_children: 0,
        };
        assert!(ZkStore::begun(&fire(Some(5), Some(10)), &committed_at(10)));
        assert!(!ZkStore::begun(&fire(Some(5), Some(10)), &committed_at(11)));
        assert!(!ZkStore::begun(&fire(None, None), &committed_at(1)));
        // Records from before alive_until was kept: begun as before.
        assert!(ZkStore::begun(&fire(Some(5), None), &committed_at(99)));
    }

    #[test]
    fn cache_names_are_escaped_reversibly_into_valid_znode_names() {
        let keys = [
            "u/1",
            "%",
            "%41",
            ".",
            "..",
            ".x",
            "a.b",
            "a..",
            " x ",
            "naïve",
            "日本",
            "🦀/🦀",
            "\u{e000}",
            "\u{f8ff}",
            "\u{fffd}",
            "\u{7f}",
            "\u{85}",
            "a\tb",
            "~!@#$^&*()",
        ];
        for key in keys {
            let name = escape(key);
            assert_eq!(unescape(&name).as_deref(), Some(key), "{key:?} as {name:?}");
            assert!(!name.contains('/') && name != "." && name != ".." && !name.is_empty());
            assert!(!name.starts_with('.'), "{name:?}: a leading dot is escaped");
            for c in name.chars() {
                let u = u32::from(c);
                assert!(
                    !(c.is_control() || (0xd800..=0xf8ff).contains(&u) || u >= 0xfff0),
                    "{key:?} as {name:?} keeps {c:?}"
                );
            }
        }
        assert_eq!(escape("u/1"), "u%2F1");
        assert_eq!(escape("..a.b"), "%2E.a.b");
        assert_eq!(escape("🦀"), "%F0%9F%A6%80");
        for bad in ["%", "%4", "%zz", "%+1", "%FF", "a%C3"] {
            assert_eq!(unescape(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn cache_data_keeps_any_bytes_and_its_ttl() {
        let stat = zk::Stat {
            czxid: 1,
            mzxid: 1,
            pzxid: 1,
            ctime: 1_000,
            mtime: 1_000,
            version: 0,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: 0,
            data_length: 0,
            num_children: 0,
        };
        let d = CacheData::parse("p", cache_bytes(Some((b"\x00\xff", Some(1_500))))).unwrap();
        assert!(d.live);
        assert_eq!(
            (d.value.as_slice(), d.expires_at(&stat)),
            (&b"\x00\xff"[..], Some(2_500))
        );
        let d = CacheData::parse("p", cache_bytes(Some((b"", None)))).unwrap();
        assert_eq!(
            (d.live, d.value.len(), d.expires_at(&stat)),
            (true, 0, None)
        );
        let d = CacheData::parse("p", cache_bytes(Some((b"x", Some(0))))).unwrap();
        assert!(d.expires_at(&stat).is_some_and(|at| at < stat.mtime + 1));
        let d = CacheData::parse("p", cache_bytes(None)).unwrap();
        assert_eq!((d.live, d.expires_at(&stat)), (false, None));
        for bad in [
            &b""[..],
            &b"\x01short"[..],
            &b"\x07\x00\x00\x00\x00\x00\x00\x00\x00"[..],
        ] {
            let e = CacheData::parse("/clusters/c/cache/x/y", bad.to_vec()).unwrap_err();
            assert!(e.to_string().contains("/clusters/c/cache/x/y"), "{e}");
        }
    }

    #[test]
    fn watch_events_name_the_entry() {
        let prefix = "/clusters/c/cache/";
        assert_eq!(
            cache_change(prefix, "/clusters/c/cache/users/u%2F1"),
            Some(CacheChange {
                cache: "users".into(),
                key: "u/1".into()
            })
        );
        assert_eq!(cache_change(prefix, "/clusters/c/cache/users"), None);
        assert_eq!(cache_change(prefix, "/clusters/d/cache/users/k"), None);
    }
}
