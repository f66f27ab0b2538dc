//! The cluster cache on ZooKeeper: `cache/<cache>/<key>`, escaped names, a header with the
//! live flag and time to live, and watches for near caches.

use super::placement::AssignData;
use super::*;

/// Bytes before the value in a cache znode: the live/tombstone byte and the TTL.
pub(super) const CACHE_HEADER: usize = 9;

/// Attempts at a cache write whose znode others keep changing: each retry means another
/// writer succeeded, so this bounds only pathological contention.
pub(super) const CACHE_ATTEMPTS: usize = 64;

/// Cache znodes read at once (pipelined) when listing keys or purging.
pub(super) const CACHE_READ_BATCH: usize = 256;

/// A cache name or key as a znode name (see the module doc): reversible by [`unescape`].
pub(super) fn escape(name: &str) -> String {
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
pub(super) fn unescape(name: &str) -> Option<String> {
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
pub(super) fn cache_dir(cluster: &str, cache: &str) -> Result<String> {
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
pub(super) fn cache_path(dir: &str, key: &str) -> Result<String> {
    if key.is_empty() {
        return Err(Error::config("key", "an empty key cannot be stored"));
    }
    Ok(format!("{dir}/{}", escape(key)))
}

/// A cache znode's data: a live entry (`Some((value, ttl))`) or a tombstone (`None`).
pub(super) fn cache_bytes(value: Option<(&[u8], Option<i64>)>) -> Vec<u8> {
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
pub(super) struct CacheData {
    live: bool,
    /// 0: none.
    ttl_ms: i64,
    value: Vec<u8>,
}

/// The version of a cache entry whose znode is at `stat`.
pub(super) fn cache_version(stat: &zk::Stat) -> i64 {
    i64::from(stat.version) + 1
}

/// The cache change a watch event on `path` stands for (`prefix` is the cluster's `cache/`).
pub(super) fn cache_change(prefix: &str, path: &str) -> Option<CacheChange> {
    let (cache, key) = path.strip_prefix(prefix)?.split_once('/')?;
    Some(CacheChange {
        cache: unescape(cache)?,
        key: unescape(key)?,
    })
}

impl CacheData {
    pub(super) fn parse(path: &str, mut bytes: Vec<u8>) -> Result<CacheData> {
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
    pub(super) fn expires_at(&self, stat: &zk::Stat) -> Option<i64> {
        (self.live && self.ttl_ms != 0).then(|| stat.mtime.saturating_add(self.ttl_ms))
    }
}

impl ZkStore {
    /// Is the entry live (not a tombstone, not expired by store time)? Only an entry with a
    /// TTL needs the store's time.
    pub(super) async fn cache_live(
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
    pub(super) async fn cache_read(
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
    pub(super) async fn cache_create(
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
    pub(super) async fn cache_write(
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
    pub(super) async fn rewatch(z: &zk::Client, dir: &str) -> Option<zk::PersistentWatcher> {
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
    pub(super) async fn purge_cache(
        &self,
        z: &zk::Client,
        cluster: &str,
        before_ms: i64,
    ) -> Result<()> {
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
impl CacheStore for ZkStore {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
