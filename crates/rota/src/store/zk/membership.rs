//! Membership and leadership on ZooKeeper: registrations (`nodes/<id>`, ephemeral, renewed
//! by the heartbeat), the election and the `leader` znode whose version every leader write
//! checks.

use std::collections::HashSet;

use super::*;

/// Reads and conditional deletes a leave tries before it reports the store unavailable.
/// The node's own renewals move the version between the read and the delete: renewals sent
/// back to back (conformance, `a_leave_racing_renewals_removes_the_registration`) beat five
/// attempts on a loaded machine. Each attempt is two round trips: fifty stay well inside a
/// store call's bound.
const LEAVE_ATTEMPTS: usize = 50;

/// Bytes per declarations chunk: far below the server's 1 MB znode limit.
pub(super) const DECL_CHUNK: usize = 256 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct NodeData {
    pub(super) incarnation: i64,
    pub(super) joined_at: i64,
    pub(super) timeout_ms: i64,
    pub(super) leaving: bool,
    pub(super) host: String,
    pub(super) process: String,
    /// The registration's own declarations (its labels) live in `decl/<id>/<incarnation>-<i>`
    /// chunks (written once at join): the registration itself stays small, since every
    /// heartbeat rewrites it.
    pub(super) declared_chunks: u32,
    /// The digest of its declared set, stored once for every registration naming it in
    /// `sets/<digest>-<i>` chunks under the marker `sets/<digest>`. None: a registration of
    /// the time before sets were shared, whose own chunks hold everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) set: Option<String>,
    /// The `mtime` of the version this one replaced (every write after the join keeps
    /// it). A write committed more than the timeout after it came too late: the
    /// registration it leaves is dead to every reader, even before the writer takes it back,
    /// so expiry stays final whatever the writer believed of the time when it sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) renews: Option<i64>,
}

/// The marker of a stored set: written after its chunks, so a set whose marker exists is
/// whole. Each join naming the set rewrites it, so its mtime says when the set was last
/// named and its version fences a purge.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SetMarker {
    chunks: u32,
}

/// What a leader's write checks in its multi-op (see [`ZkStore::leader_fence`]).
pub(super) struct LeaderFence {
    /// The leader znode's version: a takeover in between fails the write.
    pub(super) leader: i32,
    /// The leader's registration as its liveness was judged: a renewal in between makes
    /// the write stale, to be retried.
    pub(super) registration: i32,
    /// Server time of the judgement, at least.
    pub(super) now: i64,
}

impl LeaderFence {
    pub(super) fn check(&self, w: &mut zk::MultiWriter<'_>, base: &str, node: &str) -> Result<()> {
        w.add_check_version(&format!("{base}/leader"), self.leader)
            .map_err(unavailable)?;
        w.add_check_version(&format!("{base}/nodes/{node}"), self.registration)
            .map_err(unavailable)
    }
}

/// A renewal this process wrote: the registration's version and `mtime` it left, and when
/// its request was sent and its answer came.
pub(super) struct Renewal {
    pub(super) version: i32,
    pub(super) mtime: i64,
    pub(super) sent: std::time::Instant,
    pub(super) received: std::time::Instant,
}

/// The server's time now, as far as this process knows it: between `at_least` and
/// `at_most` (equal when read from the server's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StoreTime {
    pub(super) at_least: i64,
    pub(super) at_most: i64,
}

impl StoreTime {
    pub(super) fn read(now: i64) -> Self {
        StoreTime {
            at_least: now,
            at_most: now,
        }
    }
}

impl Renewal {
    /// Bounds of the server's time now, if `stat` is still this renewal's: the server
    /// stamped it (`mtime`, in whole ms) after the request was sent and before its answer
    /// came, and both clocks have run for the same time since. Real time, not
    /// `tokio::time`: the bounds are about the server's clock, which a paused test clock
    /// does not stop.
    pub(super) fn bounds(&self, stat: &zk::Stat) -> Option<StoreTime> {
        if (stat.version, stat.mtime) != (self.version, self.mtime) {
            return None;
        }
        Some(StoreTime {
            at_least: self.mtime + self.received.elapsed().as_millis() as i64,
            at_most: self.mtime + self.sent.elapsed().as_millis() as i64 + 2,
        })
    }
}

impl ZkStore {
    pub(super) async fn node(
        &self,
        z: &zk::Client,
        cluster: &str,
        id: &str,
    ) -> Result<Option<(NodeData, zk::Stat)>> {
        self.node_read(z, cluster, id).await
    }

    /// [`ZkStore::node`] with the request sent now, before the answer is awaited (see
    /// [`ZkStore::listing`]).
    pub(super) fn node_read<'z>(
        &self,
        z: &'z zk::Client,
        cluster: &str,
        id: &str,
    ) -> impl std::future::Future<Output = Result<Option<(NodeData, zk::Stat)>>> + 'z {
        self.read();
        let read = z.get_data(&format!("{}/nodes/{id}", Self::base(cluster)));
        async move {
            match read.await {
                Ok((bytes, stat)) => Ok(Some((parse("node", &bytes)?, stat))),
                Err(zk::Error::NoNode) => Ok(None),
                Err(e) => Err(unavailable(e)),
            }
        }
    }

    /// Store time to judge this process's own registration `(data, stat)` of `cluster` by
    /// (alive at `at_most`): bounded by its last renewal when `stat` is still that
    /// renewal's and the registration is alive at the upper bound, else read (a write on
    /// ZooKeeper, a round trip through the server's whole write path). `not_after`: the
    /// upper bound must not pass it. Never for judging another registration dead: that
    /// needs the clock.
    pub(super) async fn judging_time(
        &self,
        z: &zk::Client,
        cluster: &str,
        (id, data, stat): (&str, &NodeData, &zk::Stat),
        not_after: Option<i64>,
    ) -> Result<StoreTime> {
        let path = format!("{}/nodes/{id}", Self::base(cluster));
        let bounds = self
            .renewals
            .lock()
            .unwrap()
            .get(&path)
            .and_then(|r| r.bounds(stat))
            .filter(|t| {
                Self::alive(data, stat, t.at_most) && not_after.is_none_or(|n| t.at_most <= n)
            });
        match bounds {
            Some(t) => Ok(t),
            None => Ok(StoreTime::read(self.server_now(z, cluster).await?)),
        }
    }

    /// This process's own registration `m`, as read (`read`), judged alive by store time
    /// without a clock write while its last renewal bounds that time (see
    /// [`ZkStore::judging_time`]): the registration, its stat, and the lower bound of store
    /// time (what a write records as its time). `None`: gone, replaced, or dead.
    pub(super) async fn judged_own(
        &self,
        z: &zk::Client,
        m: &Member,
        read: Option<(NodeData, zk::Stat)>,
    ) -> Result<Option<(NodeData, zk::Stat, i64)>> {
        let Some((d, s)) = read.filter(|(d, _)| d.incarnation == m.incarnation) else {
            return Ok(None);
        };
        let t = self
            .judging_time(z, &m.cluster, (&m.node, &d, &s), None)
            .await?;
        Ok(Self::alive(&d, &s, t.at_most).then_some((d, s, t.at_least)))
    }

    pub(super) fn alive(data: &NodeData, stat: &zk::Stat, now: i64) -> bool {
        stat.mtime + data.timeout_ms >= now
            && data
                .renews
                .is_none_or(|before| stat.mtime - before <= data.timeout_ms)
    }

    /// Is the registration `(node, incarnation)` alive by server time `now`?
    pub(super) async fn registration_alive(
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

    pub(super) fn record(id: &str, d: &NodeData, s: &zk::Stat, now: i64) -> NodeRecord {
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
            session_key: None,
            ended_at_ms: None,
            guard: None,
        }
    }

    /// The election recipe: each candidate holds an ephemeral sequential znode under
    /// `election/` (created on its first call); it is first in line when every candidate
    /// before it is gone, dead by server time `now`, or leaving. Dead candidates' znodes (their
    /// session may outlive their registration) are removed on the way. The `leader` znode,
    /// version-checked, stays the fence: being first in line only allows the attempt.
    pub(super) async fn first_in_line(&self, z: &zk::Client, m: &Member, now: i64) -> Result<bool> {
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
    pub(super) async fn leave_election(&self, z: &zk::Client, m: &Member) -> Result<()> {
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

    /// The cluster's leader znode and its stat.
    pub(super) async fn leader(
        &self,
        z: &zk::Client,
        cluster: &str,
    ) -> Result<(LeaderData, zk::Stat)> {
        self.read();
        let (bytes, stat) = z
            .get_data(&format!("{}/leader", Self::base(cluster)))
            .await
            .map_err(unavailable)?;
        Ok((parse("leader", &bytes)?, stat))
    }

    /// The versions a fenced leader write checks, if `leader` holds `epoch` and is alive by
    /// server time (contract 6).
    /// Its reads are sent at the call, before the answer is awaited: a write sends its
    /// own reads right after, to share the round trip. The leader's judgement of its own
    /// registration needs no clock write while its last renewal bounds the time (see
    /// [`ZkStore::judging_time`]); the fence's time is the lower bound.
    pub(super) fn leader_fence<'a>(
        &'a self,
        z: &'a zk::Client,
        leader: &'a Member,
        epoch: i64,
    ) -> impl std::future::Future<Output = Result<Option<LeaderFence>>> + 'a {
        self.read();
        let held = z.get_data(&format!("{}/leader", Self::base(&leader.cluster)));
        let registration = self.node_read(z, &leader.cluster, &leader.node);
        async move {
            let (bytes, lstat) = held.await.map_err(unavailable)?;
            let l: LeaderData = parse("leader", &bytes)?;
            let Some((d, s)) = registration.await? else {
                return Ok(None);
            };
            if d.incarnation != leader.incarnation
                || l.node != leader.node
                || l.incarnation != leader.incarnation
                || l.epoch != epoch
            {
                return Ok(None);
            }
            let t = self
                .judging_time(z, &leader.cluster, (&leader.node, &d, &s), None)
                .await?;
            Ok(Self::alive(&d, &s, t.at_most).then_some(LeaderFence {
                leader: lstat.version,
                registration: s.version,
                now: t.at_least,
            }))
        }
    }
}

impl ZkStore {
    /// Stores a declared set once per cluster. If its marker exists, the set is whole; the
    /// marker is rewritten (its mtime: the set's last use) only when that use is old (see
    /// `SET_USE_REFRESH_MS`). Else its chunks, then the marker. Chunks are named by digest and
    /// index, so one found already written (by a join racing this one, or one that stopped
    /// halfway) holds the same bytes.
    async fn store_set(
        &self,
        z: &zk::Client,
        base: &str,
        digest: &str,
        set: &[u8],
        now: i64,
    ) -> Result<()> {
        let dir = format!("{base}/sets");
        self.mkdirs(z, std::slice::from_ref(&dir)).await?;
        let chunks: Vec<&[u8]> = set.chunks(DECL_CHUNK).collect();
        let marker = format!("{dir}/{digest}");
        let data = json(&SetMarker {
            chunks: chunks.len() as u32,
        });
        if let Some((_, stat)) = self.get_json::<SetMarker>(z, &marker, "set marker").await? {
            if stat.mtime >= now - SET_USE_REFRESH_MS {
                return Ok(());
            }
            self.wrote();
            match z.set_data(&marker, &data, None).await {
                Ok(_) => return Ok(()),
                Err(zk::Error::NoNode) => {} // purged meanwhile: store it again
                Err(e) => return Err(unavailable(e)),
            }
        }
        for (i, chunk) in chunks.iter().enumerate() {
            self.wrote();
            match z
                .create(&format!("{marker}-{i}"), chunk, &persistent())
                .await
            {
                Ok(_) | Err(zk::Error::NodeExists) => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        self.wrote();
        match z.create(&marker, &data, &persistent()).await {
            Ok(_) | Err(zk::Error::NodeExists) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The bytes of a document kept in `chunks` znodes `<prefix>-0`, `<prefix>-1`, ...
    /// (declarations: far above a znode's 1 MB limit for thousands of tasks).
    async fn read_chunks(&self, z: &zk::Client, prefix: &str, chunks: u32) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        for i in 0..chunks {
            self.read();
            let (chunk, _) = z
                .get_data(&format!("{prefix}-{i}"))
                .await
                .map_err(unavailable)?;
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    /// Deletes the sets that no registration names and that no join marked used since well
    /// before `before_ms` (server time; `SET_PURGE_MARGIN_MS`): each with its chunks in one
    /// multi-op under the version of its marker, so a join marking it meanwhile keeps it.
    pub(super) async fn purge_sets(
        &self,
        z: &zk::Client,
        cluster: &str,
        before_ms: i64,
    ) -> Result<()> {
        let base = Self::base(cluster);
        let dir = format!("{base}/sets");
        let markers: Vec<String> = self
            .children(z, &dir)
            .await?
            .into_iter()
            .filter(|name| !name.contains('-'))
            .collect();
        if markers.is_empty() {
            return Ok(());
        }
        let mut named = HashSet::new();
        for id in self.children(z, &format!("{base}/nodes")).await? {
            if let Some((d, _)) = self.node(z, cluster, &id).await? {
                named.extend(d.set);
            }
        }
        for digest in markers.iter().filter(|d| !named.contains(*d)) {
            let path = format!("{dir}/{digest}");
            let Some((marker, stat)) = self.get_json::<SetMarker>(z, &path, "set marker").await?
            else {
                continue;
            };
            if stat.mtime >= before_ms - SET_PURGE_MARGIN_MS {
                continue;
            }
            let mut w = z.new_multi_writer();
            w.add_check_version(&path, stat.version)
                .map_err(unavailable)?;
            for i in 0..marker.chunks {
                w.add_delete(&format!("{path}-{i}"), None)
                    .map_err(unavailable)?;
            }
            w.add_delete(&path, None).map_err(unavailable)?;
            self.wrote();
            if let Err(e) = w.commit().await {
                // Named again meanwhile, or purged by another leader: the next purge sees.
                if condition_failed(&e).is_none() {
                    return Err(unavailable(e));
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl MembershipStore for ZkStore {
    async fn join(&self, req: &JoinRequest) -> Result<JoinOutcome> {
        let m = &req.member;
        let z = self.zk().await?;
        self.ensure_cluster(&z, &m.cluster).await?;
        let base = Self::base(&m.cluster);
        let path = format!("{base}/nodes/{}", m.node);
        let now = self.server_now(&z, &m.cluster).await?;
        let (digest, set, own) = Registration::split(req);
        self.store_set(&z, &base, &digest, set.as_bytes(), now)
            .await?;
        let declared = serde_json::to_vec(&own).expect("serializes");
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
            set: Some(digest),
            renews: None,
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
        let Some((mut data, stat)) = self.node(&z, &m.cluster, &m.node).await? else {
            return Ok(false);
        };
        if data.incarnation != m.incarnation {
            return Ok(false);
        }
        let path = format!("{}/nodes/{}", Self::base(&m.cluster), m.node);
        let now = self
            .judging_time(&z, &m.cluster, (&m.node, &data, &stat), Some(not_after_ms))
            .await?
            .at_most;
        if !Self::alive(&data, &stat, now) || now > not_after_ms {
            return Ok(false);
        }
        data.renews = Some(stat.mtime);
        self.wrote();
        let sent = std::time::Instant::now();
        match z.set_data(&path, &json(&data), Some(stat.version)).await {
            // Expiry is final: a renewal that came later than the timeout is taken back.
            Ok(new) if new.mtime - stat.mtime > data.timeout_ms => {
                self.renewals.lock().unwrap().remove(&path);
                let _ = z.delete(&path, Some(new.version)).await;
                Ok(false)
            }
            Ok(new) => {
                let renewal = Renewal {
                    version: new.version,
                    mtime: new.mtime,
                    sent,
                    received: std::time::Instant::now(),
                };
                self.renewals.lock().unwrap().insert(path, renewal);
                Ok(true)
            }
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
        data.renews = Some(stat.mtime);
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
        let base = Self::base(&m.cluster);
        // The delete checks the version read: a renewal in between (the heartbeat goes on
        // until the node has left) changes it, so read again and retry. Giving up left the
        // registration to expire, listed as a dead node although it left.
        for _ in 0..LEAVE_ATTEMPTS {
            let Some((data, stat)) = self.node(&z, &m.cluster, &m.node).await? else {
                return Ok(());
            };
            if data.incarnation != m.incarnation {
                return Ok(());
            }
            let mut w = z.new_multi_writer();
            w.add_delete(&format!("{base}/nodes/{}", m.node), Some(stat.version))
                .map_err(unavailable)?;
            w.add_set_data(&format!("{base}/generation"), b"", None)
                .map_err(unavailable)?;
            self.wrote();
            match w.commit().await {
                Ok(_) => return Ok(()),
                Err(e) if condition_failed(&e).is_some() => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(Error::StoreUnavailable(format!(
            "leaving: node {}'s registration kept changing over {LEAVE_ATTEMPTS} attempts",
            m.node
        )))
    }

    async fn view(&self, cluster: &str) -> Result<ClusterView> {
        let z = self.zk().await?;
        self.ensure_cluster(&z, cluster).await?;
        let base = Self::base(cluster);
        let dir = format!("{base}/nodes");
        // The clock, then one request that reads the generation, the leader, the
        // registrations' names and the registrations this process saw last time (names
        // change only with joins and leaves): one round trip, and one request for the
        // server to answer, not one per node (100 nodes each reading 100 registrations at
        // every heartbeat were more requests than the server keeps up with).
        let known = self
            .view_ids
            .lock()
            .unwrap()
            .get(cluster)
            .cloned()
            .unwrap_or_default();
        let clock = self.server_now(&z, cluster);
        let mut reader = z.new_multi_reader();
        reader
            .add_get_data(&format!("{base}/generation"))
            .map_err(unavailable)?;
        reader
            .add_get_data(&format!("{base}/leader"))
            .map_err(unavailable)?;
        reader.add_get_children(&dir).map_err(unavailable)?;
        for id in &known {
            reader
                .add_get_data(&format!("{dir}/{id}"))
                .map_err(unavailable)?;
        }
        self.read();
        let read = reader.commit();
        let now = clock.await?;
        let mut results = read.await.map_err(unavailable)?.into_iter();
        let mut next = |what: &str| {
            results
                .next()
                .ok_or_else(|| unavailable(format!("the view's read returned no {what}")))
        };
        let generation = match next("generation")? {
            zk::MultiReadResult::Data { stat, .. } => i64::from(stat.version),
            zk::MultiReadResult::Error {
                err: zk::Error::NoNode,
            } => 0,
            other => return Err(unavailable(format!("generation: {other:?}"))),
        };
        let leader = match next("leader")? {
            zk::MultiReadResult::Data { data, .. } => {
                parse::<LeaderData>("leader", &data)?.holder()
            }
            zk::MultiReadResult::Error {
                err: zk::Error::NoNode,
            } => None,
            other => return Err(unavailable(format!("leader: {other:?}"))),
        };
        let mut ids = match next("registrations")? {
            zk::MultiReadResult::Children { children } => children,
            zk::MultiReadResult::Error {
                err: zk::Error::NoNode,
            } => Vec::new(),
            other => return Err(unavailable(format!("registrations: {other:?}"))),
        };
        ids.sort();
        let mut found: HashMap<String, (Vec<u8>, zk::Stat)> = HashMap::new();
        for id in &known {
            match next("registration")? {
                zk::MultiReadResult::Data { data, stat } => {
                    found.insert(id.clone(), (data, stat));
                }
                zk::MultiReadResult::Error {
                    err: zk::Error::NoNode,
                } => {} // left
                other => return Err(unavailable(format!("registration {id}: {other:?}"))),
            }
        }
        // Registrations new since the last view: read now, pipelined.
        let joined: Vec<_> = ids
            .iter()
            .filter(|id| !found.contains_key(*id))
            .map(|id| (id, self.node_read(&z, cluster, id)))
            .collect();
        let mut nodes = Vec::with_capacity(ids.len());
        for (id, read) in joined {
            if let Some((d, stat)) = read.await? {
                nodes.push(Self::record(id, &d, &stat, now));
            }
        }
        for (id, (bytes, stat)) in &found {
            let d: NodeData = parse("node", bytes)?;
            nodes.push(Self::record(id, &d, stat, now));
        }
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        self.view_ids
            .lock()
            .unwrap()
            .insert(cluster.to_string(), ids);
        Ok(ClusterView {
            now_ms: now,
            generation,
            nodes,
            leader,
        })
    }

    async fn registrations_declared(
        &self,
        cluster: &str,
        only: Option<&[(String, i64)]>,
    ) -> Result<Vec<RegistrationDeclares>> {
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
            let prefix = format!("{}/decl/{id}/{}", Self::base(cluster), d.incarnation);
            let bytes = self.read_chunks(&z, &prefix, d.declared_chunks).await?;
            let r: Registration = parse("declarations", &bytes)?;
            out.push(r.read(id, d.incarnation, d.set));
        }
        Ok(out)
    }

    async fn declared_sets(
        &self,
        cluster: &str,
        digests: &[String],
    ) -> Result<HashMap<String, DeclaredSet>> {
        let z = self.zk().await?;
        let dir = format!("{}/sets", Self::base(cluster));
        let mut sets = HashMap::new();
        for digest in digests {
            let path = format!("{dir}/{digest}");
            let Some((marker, _)) = self.get_json::<SetMarker>(&z, &path, "set marker").await?
            else {
                continue;
            };
            let bytes = self.read_chunks(&z, &path, marker.chunks).await?;
            sets.insert(digest.clone(), parse("declared set", &bytes)?);
        }
        Ok(sets)
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
        // The leader, the clock (it judges the holder dead) and the candidate's own
        // registration in one round trip, in that order.
        self.read();
        let held = z.get_data(&format!("{base}/leader"));
        let clock = self.server_now(&z, &m.cluster);
        let own = self.node_read(&z, &m.cluster, &m.node);
        let (bytes, lstat) = held.await.map_err(unavailable)?;
        let current: LeaderData = parse("leader", &bytes)?;
        let now = clock.await?;
        let candidate = own.await?.filter(|(d, s)| {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(version: i32, mtime: i64) -> zk::Stat {
        zk::Stat {
            czxid: 1,
            mzxid: 1,
            pzxid: 1,
            ctime: 0,
            mtime,
            version,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: 0,
            data_length: 0,
            num_children: 0,
        }
    }

    fn registration(renews: Option<i64>) -> NodeData {
        NodeData {
            incarnation: 1,
            joined_at: 0,
            timeout_ms: 250,
            leaving: false,
            host: "h".into(),
            process: "p".into(),
            declared_chunks: 0,
            set: None,
            renews,
        }
    }

    #[test]
    fn a_renewal_written_after_its_registration_expired_leaves_it_dead() {
        // In time: alive until its own mtime + timeout.
        assert!(ZkStore::alive(
            &registration(Some(1_000)),
            &written(2, 1_200),
            1_450
        ));
        assert!(!ZkStore::alive(
            &registration(Some(1_000)),
            &written(2, 1_200),
            1_451
        ));
        // Committed 251 ms after the version it replaced: dead at once, however recent.
        assert!(!ZkStore::alive(
            &registration(Some(1_000)),
            &written(2, 1_251),
            1_251
        ));
        // A registration as joined renews nothing.
        assert!(ZkStore::alive(
            &registration(None),
            &written(0, 1_000),
            1_250
        ));
    }

    #[test]
    fn the_store_time_bounds_hold_only_for_the_renewal_they_come_from() {
        let sent = std::time::Instant::now();
        let received = std::time::Instant::now();
        let renewal = Renewal {
            version: 3,
            mtime: 5_000,
            sent,
            received,
        };
        let before = received.elapsed().as_millis() as i64;
        let t = renewal.bounds(&written(3, 5_000)).unwrap();
        let after = sent.elapsed().as_millis() as i64;
        // Stamped between sending and receiving: the server's clock has run at least the
        // time since the answer and at most the time since the request (plus its rounding).
        assert!(t.at_least >= 5_000 + before && t.at_least <= 5_000 + after);
        assert!(t.at_most > 5_000 + before && t.at_most <= 5_000 + after + 2);
        assert!(t.at_least < t.at_most);
        assert_eq!(renewal.bounds(&written(4, 5_000)), None);
        assert_eq!(renewal.bounds(&written(3, 5_001)), None);
    }
}
