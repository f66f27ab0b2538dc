//! The history on ZooKeeper: reading recent fires, and the purge of old records.

use super::fires::{fire_key, is_item, FireData};
use super::*;

/// Did a multi-op fail on a condition (a version, a missing or existing node) rather than on
/// the connection?
/// Requests in flight at once while purging the history.
pub(super) const PURGE_BATCH: usize = 256;

#[async_trait]
impl HistoryStore for ZkStore {
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

    async fn fire(&self, cluster: &str, task: &str, instant_ms: i64) -> Result<Option<FireRecord>> {
        let z = self.zk().await?;
        match self.fire(&z, cluster, task, &fire_key(instant_ms)).await? {
            Some((f, _)) => Ok(Some(Self::fire_record(task, f)?)),
            None => Ok(None),
        }
    }

    async fn purge_history(&self, cluster: &str, before_ms: i64) -> Result<u64> {
        let z = self.zk().await?;
        self.purge_sets(&z, cluster, before_ms).await?;
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
}
