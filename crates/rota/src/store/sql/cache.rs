//! The cluster cache in SQL: `rota_cache`, versioned rows with store-time expiry, and
//! PostgreSQL NOTIFY for near caches.

use super::*;

impl SqlStore {
    /// One attempt at a cache write (`value: None` deletes), in one transaction, fenced by
    /// `fence` (task, token) when given. `Ok(None)`: a concurrent first write of the same key
    /// won the insert; try again.
    pub(super) async fn cache_write_once(
        &self,
        cluster: &str,
        cache: &str,
        key: &str,
        value: Option<(&[u8], Option<i64>)>,
        expect: Expect,
        fence: Option<(&str, i64)>,
    ) -> Result<Option<CacheOutcome>> {
        let mut tx = self.begin().await?;
        if let Some((task, token)) = fence {
            let sql = self.sql(
                "SELECT token FROM rota_assignments WHERE cluster = ? AND task = ?{for_update}",
            );
            let current: Option<i64> = sqlx::query_scalar(&sql)
                .bind(cluster)
                .bind(task)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
            if current != Some(token) {
                return Ok(Some(CacheOutcome::Conflict { current: None }));
            }
        }
        let now: i64 = sqlx::query_scalar(&self.sql("SELECT {now}"))
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        let sql = self.sql(
            "SELECT version, live, expires_at FROM rota_cache WHERE cluster = ? AND cache = ? AND ckey = ?{for_update}",
        );
        let row = sqlx::query(&sql)
            .bind(cluster)
            .bind(cache)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
        let row: Option<(i64, bool, Option<i64>)> = match row {
            Some(r) => Some((
                r.try_get("version").map_err(unavailable)?,
                r.try_get::<i64, _>("live").map_err(unavailable)? == 1,
                r.try_get("expires_at").map_err(unavailable)?,
            )),
            None => None,
        };
        let live = row
            .filter(|(_, live, expires)| *live && expires.is_none_or(|e| e > now))
            .map(|(v, _, _)| v);
        let expected = match expect {
            Expect::Any => true,
            Expect::Absent => live.is_none(),
            Expect::Version(v) => live == Some(v),
        };
        if !expected {
            return Ok(Some(CacheOutcome::Conflict { current: live }));
        }
        let Some((old_version, _, _)) = row else {
            let Some((bytes, ttl)) = value else {
                return Ok(Some(CacheOutcome::Done { version: 0 })); // nothing to delete
            };
            let sql = self.sql(
                "INSERT INTO rota_cache (cluster, cache, ckey, value, version, expires_at, live, updated_at) \
                 VALUES (?, ?, ?, ?, 1, ?, 1, ?)",
            );
            let inserted = sqlx::query(&sql)
                .bind(cluster)
                .bind(cache)
                .bind(key)
                .bind(bytes.to_vec())
                .bind(ttl.map(|t| now.saturating_add(t)))
                .bind(now)
                .execute(&mut *tx)
                .await;
            match inserted {
                Ok(_) => {}
                Err(sqlx::Error::Database(db)) if db.is_unique_violation() => return Ok(None),
                Err(e) => return Err(unavailable(e)),
            }
            self.cache_notify(&mut tx, cluster, cache, key).await?;
            tx.commit().await.map_err(unavailable)?;
            return Ok(Some(CacheOutcome::Done { version: 1 }));
        };
        if value.is_none() && live.is_none() {
            // Nothing live to delete (a tombstone, expired): nothing changes.
            return Ok(Some(CacheOutcome::Done { version: 0 }));
        }
        let version = old_version + 1;
        let (bytes, expires, live) = match value {
            Some((bytes, ttl)) => (bytes.to_vec(), ttl.map(|t| now.saturating_add(t)), 1),
            None => (Vec::new(), None, 0),
        };
        let sql = self.sql(
            "UPDATE rota_cache SET value = ?, version = ?, expires_at = ?, live = ?, updated_at = ? \
             WHERE cluster = ? AND cache = ? AND ckey = ?",
        );
        sqlx::query(&sql)
            .bind(bytes)
            .bind(version)
            .bind(expires)
            .bind(live)
            .bind(now)
            .bind(cluster)
            .bind(cache)
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        self.cache_notify(&mut tx, cluster, cache, key).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(CacheOutcome::Done { version }))
    }

    /// A cache write, tried again while a concurrent first write of the key wins the insert,
    /// or the database breaks a deadlock by rolling this one back (InnoDB's locks on the gaps
    /// between keys make concurrent first writes of different keys deadlock).
    pub(super) async fn cache_write(
        &self,
        cluster: &str,
        cache: &str,
        key: &str,
        value: Option<(&[u8], Option<i64>)>,
        expect: Expect,
        fence: Option<(&str, i64)>,
    ) -> Result<CacheOutcome> {
        for attempt in 0..10u32 {
            match self
                .cache_write_once(cluster, cache, key, value, expect, fence)
                .await
            {
                Ok(Some(outcome)) => return Ok(outcome),
                Ok(None) => {}
                Err(Error::StoreUnavailable(m))
                    if m.to_lowercase().contains("deadlock") && attempt < 9 =>
                {
                    let jitter = rand::random::<u64>() % (1 << attempt.min(6));
                    tokio::time::sleep(Duration::from_millis(1 + jitter)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::StoreUnavailable(format!(
            "cache `{cache}`, key `{key}`: too many concurrent first writes"
        )))
    }

    /// Pushes a cache change to listeners at commit, where the database can.
    pub(super) async fn cache_notify(
        &self,
        tx: &mut sqlx::AnyConnection,
        cluster: &str,
        cache: &str,
        key: &str,
    ) -> Result<()> {
        if self.dialect == Dialect::Postgres {
            let sql = self.sql("SELECT pg_notify('rota_cache', ?)");
            sqlx::query(&sql)
                .bind(format!("{cluster}\t{cache}\t{key}"))
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }
}

#[async_trait]
impl CacheStore for SqlStore {
    async fn cache_get(&self, cluster: &str, cache: &str, key: &str) -> Result<Option<CacheEntry>> {
        let sql = self.sql(
            "SELECT value, version, expires_at, {now} AS now_ms FROM rota_cache \
             WHERE cluster = ? AND cache = ? AND ckey = ? AND live = 1",
        );
        let row = sqlx::query(&sql)
            .bind(cluster)
            .bind(cache)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        let Some(r) = row else { return Ok(None) };
        let now: i64 = r.try_get("now_ms").map_err(unavailable)?;
        let expires_at_ms: Option<i64> = r.try_get("expires_at").map_err(unavailable)?;
        if expires_at_ms.is_some_and(|e| e <= now) {
            return Ok(None);
        }
        Ok(Some(CacheEntry {
            value: r.try_get("value").map_err(unavailable)?,
            version: r.try_get("version").map_err(unavailable)?,
            expires_at_ms,
        }))
    }

    async fn cache_put(&self, cluster: &str, w: &CacheWrite<'_>) -> Result<CacheOutcome> {
        self.cache_write(
            cluster,
            w.cache,
            w.key,
            Some((w.value, w.ttl_ms)),
            w.expect,
            None,
        )
        .await
    }

    async fn cache_delete(
        &self,
        cluster: &str,
        cache: &str,
        key: &str,
        expect: Expect,
    ) -> Result<CacheOutcome> {
        self.cache_write(cluster, cache, key, None, expect, None)
            .await
    }

    async fn cache_keys(
        &self,
        cluster: &str,
        cache: &str,
        prefix: &str,
        limit: i64,
    ) -> Result<Vec<String>> {
        // Byte-wise on every database (MySQL: the columns' binary collation).
        let by_prefix = if prefix.is_empty() {
            ""
        } else {
            " AND SUBSTR(ckey, 1, ?) = ?"
        };
        let sql = self.sql(&format!(
            "SELECT ckey FROM rota_cache WHERE cluster = ? AND cache = ? AND live = 1 \
             AND (expires_at IS NULL OR expires_at > {{now}}){by_prefix} ORDER BY ckey LIMIT ?"
        ));
        let mut query = sqlx::query(&sql).bind(cluster).bind(cache);
        if !prefix.is_empty() {
            query = query.bind(self.dialect.prefix_length(prefix)).bind(prefix);
        }
        let rows = query
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        // MySQL keeps keys as bytes; `text` reads either.
        rows.iter()
            .map(|r| Ok(text(r, "ckey")?.unwrap_or_default()))
            .collect()
    }

    async fn save_task_state(
        &self,
        cluster: &str,
        task: &str,
        token: i64,
        value: &[u8],
    ) -> Result<bool> {
        let outcome = self
            .cache_write(
                cluster,
                TASK_STATE_CACHE,
                task,
                Some((value, None)),
                Expect::Any,
                Some((task, token)),
            )
            .await?;
        Ok(matches!(outcome, CacheOutcome::Done { .. }))
    }

    async fn cache_changes(
        &self,
        cluster: &str,
    ) -> Option<tokio::sync::broadcast::Receiver<CacheChange>> {
        #[cfg(feature = "postgres")]
        if self.dialect == Dialect::Postgres {
            return Some(listen::spawn_cache(self.url.clone(), cluster.to_string()));
        }
        let _ = cluster;
        None
    }
}
