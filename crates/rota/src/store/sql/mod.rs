//! SQL stores (SQLite, PostgreSQL, MySQL/MariaDB) over one implementation. Dialect
//! differences live in [`dialect`]; the schema in [`schema`].

pub mod dialect;
#[cfg(feature = "postgres")]
mod listen;
pub mod schema;

use std::{
    collections::{HashMap, HashSet},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use async_trait::async_trait;
use sqlx::{
    any::{AnyPoolOptions, AnyRow},
    AnyPool, Executor, Row,
};

use self::dialect::Dialect;
use super::*;
use crate::core::outcome::Outcome;

/// Most rows one batched statement handles (keeps bind parameters well under every
/// database's limit).
const BATCH_LIMIT: usize = 1000;

/// Connections per node, shared by the main loop, runners, and batched claims and outcomes
/// (at most two batches in flight). Each node also holds one connection of its own for the
/// heartbeat, and one LISTEN connection on PostgreSQL.
pub const POOL_SIZE: u32 = 4;
/// Items of services are kept in `rota_fires` at this instant, keyed by their `slot`;
/// fires have real instants and an empty slot.
const ITEM_INSTANT: i64 = 0;

/// What a finish's `SET` adds for `outcome`: a fire that never started its work keeps no
/// start time ([`Outcome::never_started`]).
fn unstart(outcome: Outcome) -> &'static str {
    if outcome.never_started() {
        ", started_at = NULL"
    } else {
        ""
    }
}

pub struct SqlStore {
    pool: AnyPool,
    /// The heartbeat's own connection: a renewal never queues behind the node's other work
    /// (a leader's large write, a takeover of many tasks), which could fence a healthy node.
    heartbeat_pool: AnyPool,
    dialect: Dialect,
    /// For PostgreSQL's LISTEN connections.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    url: String,
    reads: AtomicU64,
    writes: AtomicU64,
}

/// Maps a database error: transient ones (lock contention, deadlocks, serialization
/// failures, timeouts, lost connections) are retryable; the rest are not.
fn unavailable(e: sqlx::Error) -> Error {
    const TRANSIENT: [&str; 8] = [
        "locked",                     // SQLite: database is locked
        "busy",                       // SQLite: busy
        "timeout",                    // lock wait / statement timeouts
        "deadlock",                   // InnoDB, PostgreSQL
        "try restarting transaction", // MySQL/MariaDB
        "could not serialize",        // PostgreSQL serialization failure
        "terminating connection",     // PostgreSQL shutting down
        "shutdown",                   // server going away
    ];
    match e {
        sqlx::Error::Database(db) => {
            let msg = db.message().to_string();
            let lower = msg.to_lowercase();
            if TRANSIENT.iter().any(|t| lower.contains(t)) {
                Error::StoreUnavailable(msg)
            } else {
                Error::Store(msg)
            }
        }
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::TypeNotFound { .. } => Error::Store(e.to_string()),
        other => Error::StoreUnavailable(other.to_string()),
    }
}

impl SqlStore {
    pub async fn connect(url: &str) -> Result<SqlStore> {
        sqlx::any::install_default_drivers();
        let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
        let dialect = Dialect::from_scheme(scheme).ok_or_else(|| {
            Error::config(
                "store.url",
                format!("`{}` has no SQL scheme", redact_url(url)),
            )
        })?;
        let url = dialect.normalize_url(url);
        let options = |size: u32| {
            AnyPoolOptions::new()
                .max_connections(size)
                .min_connections(1)
                .acquire_timeout(Duration::from_secs(5))
                .after_connect(move |conn, _meta| {
                    Box::pin(async move {
                        let setup = dialect.session_setup();
                        for stmt in setup {
                            conn.execute(*stmt).await?;
                        }
                        Ok(())
                    })
                })
        };
        let connect_error = |e: sqlx::Error| match e {
            sqlx::Error::Configuration(c) => Error::config(
                "store.url",
                format!("`{}` is not a valid URL: {c}", redact_url(&url)),
            ),
            other => {
                Error::StoreUnavailable(format!("cannot connect to {}: {other}", redact_url(&url)))
            }
        };
        let pool = options(POOL_SIZE)
            .connect(&url)
            .await
            .map_err(connect_error)?;
        let heartbeat_pool = options(1).connect(&url).await.map_err(connect_error)?;
        Ok(SqlStore {
            pool,
            heartbeat_pool,
            dialect,
            url,
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        })
    }

    /// Every statement goes through here: prepared for the dialect, and counted.
    fn sql(&self, statement: &str) -> String {
        let counter = if statement.starts_with("SELECT") {
            &self.reads
        } else {
            &self.writes
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.dialect.prepare(statement)
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        self.pool
            .begin_with(self.dialect.begin_write())
            .await
            .map_err(unavailable)
    }

    /// One attempt at a cache write (`value: None` deletes), in one transaction, fenced by
    /// `fence` (task, token) when given. `Ok(None)`: a concurrent first write of the same key
    /// won the insert; try again.
    async fn cache_write_once(
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
    async fn cache_write(
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
    async fn cache_notify(
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

    async fn bump_generation(&self, tx: &mut sqlx::AnyConnection, cluster: &str) -> Result<()> {
        let sql =
            self.sql("UPDATE rota_clusters SET generation = generation + 1 WHERE cluster = ?");
        sqlx::query(&sql)
            .bind(cluster)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        // Delivered at commit, to every node listening (PostgreSQL); others poll.
        if let Some(notify) = self.dialect.notify() {
            sqlx::query(&self.sql(notify))
                .bind(cluster)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// Bumps the generation and returns the new value. The row stays locked until the
    /// transaction ends, so no other change can take a generation in between.
    async fn next_generation(&self, tx: &mut sqlx::AnyConnection, cluster: &str) -> Result<i64> {
        self.bump_generation(tx, cluster).await?;
        let sql = self.sql("SELECT generation FROM rota_clusters WHERE cluster = ?");
        sqlx::query_scalar(&sql)
            .bind(cluster)
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)
    }

    async fn schema_version(&self) -> Result<Option<i64>> {
        let exists: i64 = sqlx::query_scalar(self.dialect.meta_probe())
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        if exists == 0 {
            return Ok(None);
        }
        let v: Option<i64> =
            sqlx::query_scalar("SELECT value FROM rota_meta WHERE name = 'schema_version'")
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(Some(v.unwrap_or(0)))
    }

    /// Claims every instant of `chunk` that passes the fence in one statement. PostgreSQL and
    /// SQLite return the rows they inserted; MySQL has no `RETURNING`, so the instants
    /// already recorded are read before. Only rows inserted here count as claimed.
    async fn claim_chunk(&self, m: &Member, chunk: &[Claim]) -> Result<Vec<ClaimOutcome>> {
        let returning = self.dialect.has_returning();
        let existing_before = if returning {
            Default::default()
        } else {
            self.recorded(&m.cluster, chunk).await?
        };
        let rows = self.dialect.rows_table(
            chunk.len(),
            &["task", "instant", "token", "outcome", "message"],
        );
        let sql = self.sql(&format!(
            "{{insert_ignore}} rota_fires (cluster, task, instant, slot, node_id, incarnation, token, attempt, outcome, started_at, finished_at, message) \
             SELECT ?, c.task, c.instant, '', ?, ?, c.token, 1, c.outcome, \
             NULL, CASE WHEN c.outcome = 'running' THEN NULL ELSE {{now}} END, c.message \
             FROM {rows} WHERE {}{{on_conflict_nothing}}{}",
            fence("?", "c.task", "c.token", "?", "?"),
            if returning { " RETURNING task, instant" } else { "" }
        ));
        let mut q = sqlx::query(&sql)
            .bind(&m.cluster)
            .bind(&m.node)
            .bind(m.incarnation);
        for c in chunk {
            q = q
                .bind(&c.task)
                .bind(c.instant_ms)
                .bind(c.token)
                .bind(c.outcome.as_str())
                .bind(c.message.clone());
        }
        let q = q.bind(&m.cluster).bind(&m.node).bind(m.incarnation);
        // `taken`: every instant of the chunk with a record now (read only when needed).
        let (claimed, taken): (HashSet<(String, i64)>, _) = if returning {
            let rows = q.fetch_all(&self.pool).await.map_err(unavailable)?;
            let claimed: HashSet<(String, i64)> = rows
                .iter()
                .map(|r| {
                    Ok((
                        r.try_get("task").map_err(unavailable)?,
                        r.try_get("instant").map_err(unavailable)?,
                    ))
                })
                .collect::<Result<_>>()?;
            let taken = if claimed.len() == chunk.len() {
                HashMap::new()
            } else {
                self.recorded(&m.cluster, chunk).await?
            };
            (claimed, taken)
        } else {
            q.execute(&self.pool).await.map_err(unavailable)?;
            let after = self.recorded(&m.cluster, chunk).await?;
            let claimed = chunk
                .iter()
                .filter(|c| {
                    let key = (c.task.clone(), c.instant_ms);
                    !existing_before.contains_key(&key)
                        && after.get(&key) == Some(&(m.node.clone(), m.incarnation, c.token))
                })
                .map(|c| (c.task.clone(), c.instant_ms))
                .collect();
            (claimed, after)
        };
        Ok(chunk
            .iter()
            .map(|c| {
                let key = (c.task.clone(), c.instant_ms);
                if claimed.contains(&key) {
                    ClaimOutcome::Claimed
                } else if taken.contains_key(&key) {
                    ClaimOutcome::AlreadyClaimed
                } else {
                    ClaimOutcome::Fenced
                }
            })
            .collect())
    }

    /// Which of the claims' instants have a record, and whose: `(task, instant)` ->
    /// `(node, incarnation, token)`.
    async fn recorded(
        &self,
        cluster: &str,
        chunk: &[Claim],
    ) -> Result<HashMap<(String, i64), (String, i64, i64)>> {
        let pairs = self.dialect.tuples_in(&["task", "instant"], chunk.len());
        let sql = self.sql(&format!(
            "SELECT task, instant, node_id, incarnation, token FROM rota_fires \
             WHERE cluster = ? AND slot = '' AND {pairs}"
        ));
        let mut q = sqlx::query(&sql).bind(cluster);
        for c in chunk {
            q = q.bind(&c.task).bind(c.instant_ms);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok((
                    (
                        r.try_get("task").map_err(unavailable)?,
                        r.try_get("instant").map_err(unavailable)?,
                    ),
                    (
                        r.try_get("node_id").map_err(unavailable)?,
                        r.try_get("incarnation").map_err(unavailable)?,
                        r.try_get("token").map_err(unavailable)?,
                    ),
                ))
            })
            .collect()
    }

    /// Whether the registration `(node, incarnation)` is alive by store time.
    async fn registration_alive(
        &self,
        conn: &mut sqlx::AnyConnection,
        cluster: &str,
        node: &str,
        incarnation: i64,
    ) -> Result<bool> {
        let sql = self.sql(
            "SELECT COUNT(*) FROM rota_nodes WHERE cluster = ? AND node_id = ? AND incarnation = ? \
             AND heartbeat_at + timeout_ms >= {now}",
        );
        let alive: i64 = sqlx::query_scalar(&sql)
            .bind(cluster)
            .bind(node)
            .bind(incarnation)
            .fetch_one(&mut *conn)
            .await
            .map_err(unavailable)?;
        Ok(alive > 0)
    }

    /// Creates the schema unless it exists; the caller holds the schema lock.
    async fn create_schema(&self, conn: &mut sqlx::AnyConnection) -> Result<()> {
        let exists: i64 = sqlx::query_scalar(self.dialect.meta_probe())
            .fetch_one(&mut *conn)
            .await
            .map_err(unavailable)?;
        if exists > 0 {
            let version: i64 =
                sqlx::query_scalar("SELECT value FROM rota_meta WHERE name = 'schema_version'")
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(unavailable)?;
            for stmt in schema::upgrade_statements(self.dialect, version) {
                conn.execute(stmt.as_str()).await.map_err(unavailable)?;
            }
            return Ok(());
        }
        for stmt in schema::create_statements(self.dialect) {
            conn.execute(stmt.as_str()).await.map_err(unavailable)?;
        }
        Ok(())
    }

    fn node_from_row(row: &AnyRow) -> Result<NodeRecord> {
        Ok(NodeRecord {
            node: row.try_get("node_id").map_err(unavailable)?,
            incarnation: row.try_get("incarnation").map_err(unavailable)?,
            joined_at_ms: row.try_get("joined_at").map_err(unavailable)?,
            heartbeat_at_ms: row.try_get("heartbeat_at").map_err(unavailable)?,
            timeout_ms: row.try_get("timeout_ms").map_err(unavailable)?,
            leaving: row.try_get::<i64, _>("leaving").map_err(unavailable)? != 0,
            alive: row.try_get::<i64, _>("alive").map_err(unavailable)? != 0,
            host: row.try_get("host").map_err(unavailable)?,
            process: row.try_get("process").map_err(unavailable)?,
        })
    }

    /// Takes over the running record `(task, instant, slot)` at `(token, attempt)` =
    /// `record`, under the fence, as `how` says. Fires (empty slot) begin with
    /// `begin_fires`, so a fire claimed again has no start time; an item begins at once.
    #[allow(clippy::too_many_arguments)]
    async fn recover_record(
        &self,
        m: &Member,
        task: &str,
        instant: i64,
        slot: &str,
        token: i64,
        record: (i64, i64),
        how: Recovery,
    ) -> Result<ClaimOutcome> {
        let started = if slot.is_empty() { "NULL" } else { "{now}" };
        // What it writes, and the state the record must still be in.
        let (set, state) = match how {
            Recovery::Claim => (
                "node_id = ?, incarnation = ?, token = ?, \
                 message = 'claimed again: its node never began it'"
                    .to_string(),
                "outcome = 'running' AND started_at IS NULL",
            ),
            Recovery::Retry => (
                format!(
                    "node_id = ?, incarnation = ?, token = ?, attempt = attempt + 1, started_at = {started}, \
                     message = 'retried: its node died mid-run'"
                ),
                "outcome = 'running' AND started_at IS NOT NULL",
            ),
            Recovery::Abandon => (
                "outcome = 'abandoned', finished_at = {now}, message = 'abandoned: its node died mid-run'"
                    .to_string(),
                "outcome = 'running' AND started_at IS NOT NULL",
            ),
            Recovery::Reclaim => (
                "node_id = ?, incarnation = ?, token = ?, attempt = attempt + 1, outcome = 'running', \
                 started_at = {now}, finished_at = NULL, message = 'handed over: released by its previous owner'"
                    .to_string(),
                "outcome = 'released'",
            ),
        };
        let sql = self.sql(&format!(
            "UPDATE rota_fires SET {set} WHERE cluster = ? AND task = ? AND instant = ? AND slot = ? \
             AND token = ? AND attempt = ? AND {state} AND {}",
            bound_fence()
        ));
        let mut query = sqlx::query(&sql);
        if how != Recovery::Abandon {
            query = query.bind(&m.node).bind(m.incarnation).bind(token);
        }
        let done = query
            .bind(&m.cluster)
            .bind(task)
            .bind(instant)
            .bind(slot)
            .bind(record.0)
            .bind(record.1)
            .bind(&m.cluster)
            .bind(task)
            .bind(token)
            .bind(&m.node)
            .bind(m.incarnation)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(if done.rows_affected() == 1 {
            ClaimOutcome::Claimed
        } else {
            ClaimOutcome::Fenced
        })
    }

    /// Whether `leader` holds `epoch` and is alive, inside `tx`. The leader row is locked:
    /// a concurrent takeover waits for this transaction, or this check waits for the
    /// takeover and then fails (plain reads would not see it).
    async fn leads(
        &self,
        tx: &mut sqlx::AnyConnection,
        leader: &Member,
        epoch: i64,
    ) -> Result<bool> {
        let sql = self.sql(
            "SELECT epoch FROM rota_leader WHERE cluster = ? AND node_id = ? AND incarnation = ? AND epoch = ?{for_update}",
        );
        let leads: Option<i64> = sqlx::query_scalar(&sql)
            .bind(&leader.cluster)
            .bind(&leader.node)
            .bind(leader.incarnation)
            .bind(epoch)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
        Ok(leads.is_some()
            && self
                .registration_alive(tx, &leader.cluster, &leader.node, leader.incarnation)
                .await?)
    }

    /// Appends a command inside `tx`: `(seq, issued_at_ms)`.
    async fn append_in(
        &self,
        tx: &mut sqlx::AnyConnection,
        cluster: &str,
        body: &str,
    ) -> Result<(i64, i64)> {
        let seq = self.next_generation(tx, cluster).await?;
        let sql = self.sql("SELECT {now}");
        let issued_at: i64 = sqlx::query_scalar(&sql)
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        let sql = self
            .sql("INSERT INTO rota_commands (cluster, seq, issued_at, body) VALUES (?, ?, ?, ?)");
        sqlx::query(&sql)
            .bind(cluster)
            .bind(seq)
            .bind(issued_at)
            .bind(body)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        Ok((seq, issued_at))
    }

    /// Records (replaces) an acknowledgement inside `tx`: delete and insert works alike on
    /// every dialect.
    async fn ack_in(&self, tx: &mut sqlx::AnyConnection, cluster: &str, ack: &Ack) -> Result<()> {
        let sql =
            self.sql("DELETE FROM rota_command_acks WHERE cluster = ? AND seq = ? AND node_id = ?");
        sqlx::query(&sql)
            .bind(cluster)
            .bind(ack.seq)
            .bind(&ack.node)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        let sql = self.sql(
            "INSERT INTO rota_command_acks (cluster, seq, node_id, incarnation, state, message, at) \
             VALUES (?, ?, ?, ?, ?, ?, {now})",
        );
        sqlx::query(&sql)
            .bind(cluster)
            .bind(ack.seq)
            .bind(&ack.node)
            .bind(ack.incarnation)
            .bind(ack.state.as_str())
            .bind(&ack.message)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Begins the fires of `chunk` claimed by `m` in one statement; the ones it did not
    /// change are read back, since an earlier call whose reply was lost may have begun them.
    async fn begin_chunk(&self, m: &Member, chunk: &[Begin]) -> Result<Vec<bool>> {
        let fence = fence(
            "f.cluster",
            "f.task",
            "f.token",
            "f.node_id",
            "f.incarnation",
        );
        let mine =
            "f.cluster = ? AND f.slot = '' AND f.outcome = 'running' AND f.started_at IS NULL \
             AND f.node_id = ? AND f.incarnation = ?";
        let columns = ["task", "instant", "token", "attempt"];
        // PostgreSQL plans a row-value IN list as a scan per tuple: join a VALUES table.
        let postgres = self.dialect == Dialect::Postgres;
        let sql = if postgres {
            let rows = self.dialect.rows_table(chunk.len(), &columns);
            format!(
                "UPDATE rota_fires AS f SET started_at = {{now}} FROM {rows} \
                 WHERE {mine} AND f.task = c.task AND f.instant = c.instant \
                 AND f.token = c.token AND f.attempt = c.attempt AND {fence}"
            )
        } else {
            let tuples = self.dialect.tuples_in(&columns, chunk.len());
            format!("UPDATE rota_fires AS f SET started_at = {{now}} WHERE {mine} AND {tuples} AND {fence}")
        };
        let sql = self.sql(&sql);
        let mut q = sqlx::query(&sql);
        if !postgres {
            q = q.bind(&m.cluster).bind(&m.node).bind(m.incarnation);
        }
        for b in chunk {
            q = q
                .bind(&b.task)
                .bind(b.instant_ms)
                .bind(b.token)
                .bind(b.attempt);
        }
        if postgres {
            q = q.bind(&m.cluster).bind(&m.node).bind(m.incarnation);
        }
        let done = q.execute(&self.pool).await.map_err(unavailable)?;
        if done.rows_affected() == chunk.len() as u64 {
            return Ok(vec![true; chunk.len()]);
        }
        let pairs = self.dialect.tuples_in(&["task", "instant"], chunk.len());
        let sql = self.sql(&format!(
            "SELECT task, instant, token, attempt FROM rota_fires \
             WHERE cluster = ? AND slot = '' AND outcome = 'running' AND started_at IS NOT NULL \
             AND node_id = ? AND incarnation = ? AND {pairs}"
        ));
        let mut q = sqlx::query(&sql)
            .bind(&m.cluster)
            .bind(&m.node)
            .bind(m.incarnation);
        for b in chunk {
            q = q.bind(&b.task).bind(b.instant_ms);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(unavailable)?;
        let begun: HashSet<(String, i64, i64, i64)> = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("task").map_err(unavailable)?,
                    r.try_get("instant").map_err(unavailable)?,
                    r.try_get("token").map_err(unavailable)?,
                    r.try_get("attempt").map_err(unavailable)?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(chunk
            .iter()
            .map(|b| begun.contains(&(b.task.clone(), b.instant_ms, b.token, b.attempt)))
            .collect())
    }
}

/// The fence every claim-like write checks (contract 2): the assignment of `task` names the
/// claimant `(node, incarnation)` with `token`, and the claimant's registration is alive by
/// store time, judged in the same statement. Each argument is a SQL expression: a `?` bound
/// in this order, or a column of the statement. The assignment row is share-locked, so the
/// fence serializes with a reassignment in flight.
fn fence(cluster: &str, task: &str, token: &str, node: &str, incarnation: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM rota_assignments a JOIN rota_nodes n \
         ON n.cluster = a.cluster AND n.node_id = a.node_id AND n.incarnation = a.incarnation \
         WHERE a.cluster = {cluster} AND a.task = {task} AND a.token = {token} \
         AND a.node_id = {node} AND a.incarnation = {incarnation} \
         AND n.heartbeat_at + n.timeout_ms >= {{now}}{{lock_share}})"
    )
}

/// [`fence`] with every part bound: cluster, task, token, node, incarnation.
fn bound_fence() -> String {
    fence("?", "?", "?", "?", "?")
}

/// Leadership is given up by vacating the row, never deleting it: epochs keep increasing.
const VACATE_LEADER: &str =
    "UPDATE rota_leader SET node_id = '', incarnation = 0 WHERE cluster = ? AND node_id = ? AND incarnation = ?";

/// Reads a TEXT column. MySQL reports TEXT as a BLOB type, so bytes are accepted too.
fn text(row: &AnyRow, column: &str) -> Result<Option<String>> {
    match row.try_get::<Option<String>, _>(column) {
        Ok(v) => Ok(v),
        Err(_) => {
            let bytes: Option<Vec<u8>> = row.try_get(column).map_err(unavailable)?;
            bytes
                .map(|b| {
                    String::from_utf8(b)
                        .map_err(|e| Error::Store(format!("column {column} is not UTF-8: {e}")))
                })
                .transpose()
        }
    }
}

const NODE_COLUMNS: &str =
    "node_id, incarnation, joined_at, heartbeat_at, timeout_ms, leaving, host, process, \
     CASE WHEN heartbeat_at + timeout_ms >= {now} THEN 1 ELSE 0 END AS alive";

#[async_trait]
impl Store for SqlStore {
    fn kind(&self) -> &'static str {
        self.dialect.name()
    }

    fn statements(&self) -> StatementCounts {
        StatementCounts {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
        }
    }

    async fn prepare(&self, migrate: bool) -> Result<()> {
        match self.schema_version().await? {
            Some(v) if v == schema::VERSION => return Ok(()),
            Some(v) if v > schema::VERSION => {
                return Err(Error::Schema(format!(
                    "the store has schema version {v}, newer than this rota's {}; upgrade rota",
                    schema::VERSION
                )))
            }
            found if !migrate => {
                let what = match found {
                    None => "no rota schema".to_string(),
                    Some(v) => format!("schema version {v}"),
                };
                return Err(Error::Schema(format!(
                    "the store has {what} and `[store] migrate = false`; run `rota schema --db {}` and apply it \
                     (it creates version {}), or set `migrate = true`",
                    self.dialect.name(),
                    schema::VERSION
                )));
            }
            _ => {}
        }
        // Several nodes may start at once: create under a lock, re-checking inside it.
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        let (lock, unlock) = self.dialect.schema_lock();
        conn.execute(lock).await.map_err(unavailable)?;
        let created = self.create_schema(&mut conn).await;
        // SQLite's lock is a transaction: never commit half a schema.
        let unlock = if created.is_err() && self.dialect == Dialect::Sqlite {
            "ROLLBACK"
        } else {
            unlock
        };
        let released = conn.execute(unlock).await.map(|_| ()).map_err(unavailable);
        created.and(released)
    }

    async fn now_ms(&self) -> Result<i64> {
        let sql = self.sql("SELECT {now}");
        sqlx::query_scalar(&sql)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)
    }

    async fn join(&self, req: &JoinRequest) -> Result<JoinOutcome> {
        let m = &req.member;
        let registration = Registration {
            tasks: req.declared.clone(),
            meta: req.meta.clone(),
        };
        let declared = serde_json::to_string(&registration).expect("declarations serialize");
        let mut tx = self.begin().await?;
        let sql = self.sql("{insert_ignore} rota_clusters (cluster, generation) VALUES (?, 0){on_conflict_nothing}");
        sqlx::query(&sql)
            .bind(&m.cluster)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        let sql = self.sql(&format!(
            "SELECT {NODE_COLUMNS} FROM rota_nodes WHERE cluster = ? AND node_id = ?{{for_update}}"
        ));
        let existing = sqlx::query(&sql)
            .bind(&m.cluster)
            .bind(&m.node)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
        if let Some(row) = existing {
            let record = Self::node_from_row(&row)?;
            if record.alive && req.replaces != Some(record.incarnation) {
                return Ok(JoinOutcome::Occupied(record));
            }
            let sql = self.sql("DELETE FROM rota_nodes WHERE cluster = ? AND node_id = ?");
            sqlx::query(&sql)
                .bind(&m.cluster)
                .bind(&m.node)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        let sql = self.sql(
            "INSERT INTO rota_nodes (cluster, node_id, incarnation, joined_at, heartbeat_at, timeout_ms, leaving, host, process, declared) \
             VALUES (?, ?, ?, {now}, {now}, ?, 0, ?, ?, ?)",
        );
        sqlx::query(&sql)
            .bind(&m.cluster)
            .bind(&m.node)
            .bind(m.incarnation)
            .bind(req.timeout_ms)
            .bind(&req.host)
            .bind(&req.process)
            .bind(declared)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        self.bump_generation(&mut tx, &m.cluster).await?;
        let now: i64 = sqlx::query_scalar(&self.sql("SELECT {now}"))
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(JoinOutcome::Joined { now_ms: now })
    }

    async fn heartbeat(&self, m: &Member, not_after_ms: i64) -> Result<bool> {
        let sql = self.sql(
            "UPDATE rota_nodes SET heartbeat_at = {now} \
             WHERE cluster = ? AND node_id = ? AND incarnation = ? AND heartbeat_at + timeout_ms >= {now} AND {now} <= ?",
        );
        let done = sqlx::query(&sql)
            .bind(&m.cluster)
            .bind(&m.node)
            .bind(m.incarnation)
            .bind(not_after_ms)
            .execute(&self.heartbeat_pool)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn mark_leaving(&self, m: &Member) -> Result<()> {
        let mut tx = self.begin().await?;
        let sql = self.sql("UPDATE rota_nodes SET leaving = 1 WHERE cluster = ? AND node_id = ? AND incarnation = ?");
        sqlx::query(&sql)
            .bind(&m.cluster)
            .bind(&m.node)
            .bind(m.incarnation)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        self.bump_generation(&mut tx, &m.cluster).await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn leave(&self, m: &Member) -> Result<()> {
        let mut tx = self.begin().await?;
        for statement in [
            VACATE_LEADER,
            "DELETE FROM rota_nodes WHERE cluster = ? AND node_id = ? AND incarnation = ?",
        ] {
            let sql = self.sql(statement);
            sqlx::query(&sql)
                .bind(&m.cluster)
                .bind(&m.node)
                .bind(m.incarnation)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        self.bump_generation(&mut tx, &m.cluster).await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn view(&self, cluster: &str) -> Result<ClusterView> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        // The generation first: a change committed between these statements then shows in
        // a later generation, and is read again. Read last, a node that joined meanwhile
        // would be counted in this generation but missing from these rows, and a node would
        // never read its declarations.
        let sql = self.sql("SELECT generation FROM rota_clusters WHERE cluster = ?");
        let generation: Option<i64> = sqlx::query_scalar(&sql)
            .bind(cluster)
            .fetch_optional(&mut *conn)
            .await
            .map_err(unavailable)?;
        let sql = self.sql(&format!("SELECT {NODE_COLUMNS}, {{now}} AS now_ms FROM rota_nodes WHERE cluster = ? ORDER BY node_id"));
        let rows = sqlx::query(&sql)
            .bind(cluster)
            .fetch_all(&mut *conn)
            .await
            .map_err(unavailable)?;
        let mut nodes = Vec::with_capacity(rows.len());
        let mut now_ms = None;
        for row in &rows {
            nodes.push(Self::node_from_row(row)?);
            now_ms = Some(row.try_get::<i64, _>("now_ms").map_err(unavailable)?);
        }
        let now_ms = match now_ms {
            Some(n) => n,
            None => sqlx::query_scalar(&self.sql("SELECT {now}"))
                .fetch_one(&mut *conn)
                .await
                .map_err(unavailable)?,
        };
        let sql = self.sql("SELECT node_id, incarnation, epoch FROM rota_leader WHERE cluster = ?");
        let leader = sqlx::query(&sql)
            .bind(cluster)
            .fetch_optional(&mut *conn)
            .await
            .map_err(unavailable)?
            .map(|r| -> Result<Leadership> {
                Ok(Leadership {
                    node: r.try_get("node_id").map_err(unavailable)?,
                    incarnation: r.try_get("incarnation").map_err(unavailable)?,
                    epoch: r.try_get("epoch").map_err(unavailable)?,
                })
            })
            .transpose()?;
        Ok(ClusterView {
            now_ms,
            generation: generation.unwrap_or(0),
            nodes,
            leader,
        })
    }

    async fn declarations(
        &self,
        cluster: &str,
        only: Option<&[(String, i64)]>,
    ) -> Result<Vec<NodeDeclarations>> {
        if only.is_some_and(|o| o.is_empty()) {
            return Ok(Vec::new());
        }
        let filter = match only {
            Some(o) => format!(
                " AND {}",
                self.dialect.tuples_in(&["node_id", "incarnation"], o.len())
            ),
            None => String::new(),
        };
        let sql = self.sql(&format!(
            "SELECT node_id, incarnation, declared FROM rota_nodes WHERE cluster = ?{filter} ORDER BY node_id"
        ));
        let mut q = sqlx::query(&sql).bind(cluster);
        for (node, incarnation) in only.unwrap_or_default() {
            q = q.bind(node).bind(*incarnation);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                let declared = text(r, "declared")?.unwrap_or_default();
                let registration: Registration = serde_json::from_str(&declared).map_err(|e| {
                    Error::Store(format!("rota_nodes.declared is not valid JSON: {e}"))
                })?;
                Ok(NodeDeclarations {
                    node: r.try_get("node_id").map_err(unavailable)?,
                    incarnation: r.try_get("incarnation").map_err(unavailable)?,
                    declared: registration.tasks,
                    meta: registration.meta,
                })
            })
            .collect()
    }

    async fn subscribe(&self, cluster: &str) -> Option<tokio::sync::watch::Receiver<u64>> {
        #[cfg(feature = "postgres")]
        if self.dialect == Dialect::Postgres {
            return Some(listen::spawn(self.url.clone(), cluster.to_string()));
        }
        let _ = cluster;
        None
    }

    async fn generation(&self, cluster: &str) -> Result<i64> {
        let sql = self.sql("SELECT generation FROM rota_clusters WHERE cluster = ?");
        let g: Option<i64> = sqlx::query_scalar(&sql)
            .bind(cluster)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(g.unwrap_or(0))
    }

    async fn acquire_leadership(&self, m: &Member) -> Result<Option<Leadership>> {
        let mut tx = self.begin().await?;
        // Lock the leader row alone (PostgreSQL cannot lock the nullable side of a join).
        let sql = self.sql(
            "SELECT node_id, incarnation, epoch FROM rota_leader WHERE cluster = ?{for_update}",
        );
        let current = sqlx::query(&sql)
            .bind(&m.cluster)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
        // Only a live, non-leaving candidate may take over.
        let sql = self.sql(
            "SELECT COUNT(*) FROM rota_nodes WHERE cluster = ? AND node_id = ? AND incarnation = ? \
             AND leaving = 0 AND heartbeat_at + timeout_ms >= {now}",
        );
        let eligible: i64 = sqlx::query_scalar(&sql)
            .bind(&m.cluster)
            .bind(&m.node)
            .bind(m.incarnation)
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        let mine = |epoch| Leadership {
            node: m.node.clone(),
            incarnation: m.incarnation,
            epoch,
        };
        let result = match current {
            None if eligible == 1 => {
                let sql = self.sql("INSERT INTO rota_leader (cluster, node_id, incarnation, epoch, since) VALUES (?, ?, ?, 1, {now})");
                sqlx::query(&sql)
                    .bind(&m.cluster)
                    .bind(&m.node)
                    .bind(m.incarnation)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                self.bump_generation(&mut tx, &m.cluster).await?;
                Some(mine(1))
            }
            None => None,
            Some(row) => {
                let leader = Leadership {
                    node: row.try_get("node_id").map_err(unavailable)?,
                    incarnation: row.try_get("incarnation").map_err(unavailable)?,
                    epoch: row.try_get("epoch").map_err(unavailable)?,
                };
                let alive = self
                    .registration_alive(&mut tx, &m.cluster, &leader.node, leader.incarnation)
                    .await?;
                if alive || eligible == 0 {
                    Some(leader)
                } else {
                    let sql = self.sql(
                        "UPDATE rota_leader SET node_id = ?, incarnation = ?, epoch = epoch + 1, since = {now} \
                         WHERE cluster = ? AND epoch = ?",
                    );
                    sqlx::query(&sql)
                        .bind(&m.node)
                        .bind(m.incarnation)
                        .bind(&m.cluster)
                        .bind(leader.epoch)
                        .execute(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                    self.bump_generation(&mut tx, &m.cluster).await?;
                    Some(mine(leader.epoch + 1))
                }
            }
        };
        tx.commit().await.map_err(unavailable)?;
        Ok(result)
    }

    async fn release_leadership(&self, m: &Member) -> Result<()> {
        let mut tx = self.begin().await?;
        // The row stays (vacant) so the next epoch continues from this one.
        let sql = self.sql(VACATE_LEADER);
        let done = sqlx::query(&sql)
            .bind(&m.cluster)
            .bind(&m.node)
            .bind(m.incarnation)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        if done.rows_affected() > 0 {
            self.bump_generation(&mut tx, &m.cluster).await?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn assignments(&self, cluster: &str) -> Result<Vec<Assignment>> {
        self.assignments_since(cluster, -1).await
    }

    async fn assignments_since(&self, cluster: &str, generation: i64) -> Result<Vec<Assignment>> {
        let sql = self.sql(
            "SELECT task, node_id, incarnation, token, reason, placed_at FROM rota_assignments \
             WHERE cluster = ? AND version > ? ORDER BY task",
        );
        let rows = sqlx::query(&sql)
            .bind(cluster)
            .bind(generation)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                let node: Option<String> = r.try_get("node_id").map_err(unavailable)?;
                let inc: Option<i64> = r.try_get("incarnation").map_err(unavailable)?;
                Ok(Assignment {
                    task: r.try_get("task").map_err(unavailable)?,
                    owner: node.zip(inc),
                    token: r.try_get("token").map_err(unavailable)?,
                    reason: text(r, "reason")?,
                    placed_at_ms: r.try_get("placed_at").map_err(unavailable)?,
                })
            })
            .collect()
    }

    async fn write_assignments(
        &self,
        leader: &Member,
        epoch: i64,
        changes: &[AssignmentChange],
    ) -> Result<LeaderWrite> {
        let mut tx = self.begin().await?;
        if !self.leads(&mut tx, leader, epoch).await? {
            return Ok(LeaderWrite::Deposed);
        }
        // Every row written here carries the generation this write creates.
        let version = self.next_generation(&mut tx, &leader.cluster).await?;
        // Few statements for many changes: one UPDATE per target (an owner, or "unplaced
        // for this reason") over the tasks moving there, one multi-row INSERT for new tasks.
        // Each checks the token the leader saw; any mismatch rolls everything back.
        type Target<'a> = (Option<&'a (String, i64)>, Option<&'a str>);
        let mut moves: Vec<(Target<'_>, Vec<(&str, i64)>)> = Vec::new();
        let mut inserts: Vec<&AssignmentChange> = Vec::new();
        for c in changes {
            match c.expected_token {
                Some(token) => {
                    let target = (c.owner.as_ref(), c.reason.as_deref());
                    match moves.iter_mut().find(|(t, _)| *t == target) {
                        Some((_, tasks)) => tasks.push((&c.task, token)),
                        None => moves.push((target, vec![(&c.task, token)])),
                    }
                }
                None => inserts.push(c),
            }
        }
        for ((owner, reason), tasks) in &moves {
            for chunk in tasks.chunks(BATCH_LIMIT) {
                // The first time a task gets an owner is its placement (see `placed_at_ms`).
                let placed = if owner.is_some() {
                    ", placed_at = CASE WHEN a.placed_at = 0 THEN {now} ELSE a.placed_at END"
                } else {
                    ""
                };
                let set = format!(
                    "node_id = ?, incarnation = ?, token = a.token + 1, epoch = ?, \
                     assigned_at = {{now}}, reason = ?, version = ?{placed}"
                );
                // PostgreSQL plans a long row-value IN list as a scan per tuple: join a
                // VALUES table instead (about 50 times faster for 1,000 tasks).
                let postgres = self.dialect == Dialect::Postgres;
                let sql = if postgres {
                    let rows = self.dialect.rows_table(chunk.len(), &["task", "token"]);
                    format!(
                        "UPDATE rota_assignments AS a SET {set} FROM {rows} \
                         WHERE a.cluster = ? AND a.task = c.task AND a.token = c.token"
                    )
                } else {
                    let tuples = self.dialect.tuples_in(&["task", "token"], chunk.len());
                    format!("UPDATE rota_assignments AS a SET {set} WHERE cluster = ? AND {tuples}")
                };
                let sql = self.sql(&sql);
                let mut q = sqlx::query(&sql)
                    .bind(owner.map(|(n, _)| n.clone()))
                    .bind(owner.map(|(_, i)| *i))
                    .bind(epoch)
                    .bind(reason.map(str::to_string))
                    .bind(version);
                if !postgres {
                    q = q.bind(&leader.cluster);
                }
                for (task, token) in chunk {
                    q = q.bind(*task).bind(*token);
                }
                if postgres {
                    q = q.bind(&leader.cluster);
                }
                let done = q.execute(&mut *tx).await.map_err(unavailable)?;
                if done.rows_affected() != chunk.len() as u64 {
                    return Ok(LeaderWrite::Stale); // the dropped transaction rolls back
                }
            }
        }
        for chunk in inserts.chunks(BATCH_LIMIT) {
            // `placed_at` stays 0 until the task first gets an owner.
            let rows: Vec<&str> = chunk
                .iter()
                .map(|c| {
                    if c.owner.is_some() {
                        "(?, ?, ?, ?, 1, ?, {now}, {now}, ?, ?)"
                    } else {
                        "(?, ?, ?, ?, 1, ?, {now}, 0, ?, ?)"
                    }
                })
                .collect();
            let rows = rows.join(", ");
            let sql = self.sql(&format!(
                "{{insert_ignore}} rota_assignments (cluster, task, node_id, incarnation, token, epoch, assigned_at, placed_at, reason, version) \
                 VALUES {rows}{{on_conflict_nothing}}"
            ));
            let mut q = sqlx::query(&sql);
            for c in chunk {
                q = q
                    .bind(&leader.cluster)
                    .bind(&c.task)
                    .bind(c.owner.as_ref().map(|(n, _)| n.clone()))
                    .bind(c.owner.as_ref().map(|(_, i)| *i))
                    .bind(epoch)
                    .bind(c.reason.clone())
                    .bind(version);
            }
            let done = q.execute(&mut *tx).await.map_err(unavailable)?;
            if done.rows_affected() != chunk.len() as u64 {
                return Ok(LeaderWrite::Stale);
            }
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(LeaderWrite::Written)
    }

    async fn lead_commands(
        &self,
        leader: &Member,
        epoch: i64,
        acks: &[Ack],
        command: Option<&str>,
    ) -> Result<LeaderWrite> {
        let mut tx = self.begin().await?;
        if !self.leads(&mut tx, leader, epoch).await? {
            return Ok(LeaderWrite::Deposed);
        }
        for ack in acks {
            self.ack_in(&mut tx, &leader.cluster, ack).await?;
        }
        if let Some(body) = command {
            self.append_in(&mut tx, &leader.cluster, body).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(LeaderWrite::Written)
    }

    async fn claim(&self, c: &Claim) -> Result<ClaimOutcome> {
        let m = &c.member;
        // A claimed fire gets its start time when it begins (`begin_fires`); an instant
        // recorded as not started has an end.
        let (started, finished) = if c.outcome == Outcome::Running {
            ("NULL", "NULL")
        } else {
            ("NULL", "{now}")
        };
        let sql = self.sql(&format!(
            "{{insert_ignore}} rota_fires (cluster, task, instant, slot, node_id, incarnation, token, attempt, outcome, started_at, finished_at, message) \
             SELECT ?, ?, ?, '', ?, ?, ?, 1, ?, {started}, {finished}, ? FROM rota_meta WHERE name = 'schema_version' AND {}{{on_conflict_nothing}}",
            bound_fence()
        ));
        let done = sqlx::query(&sql)
            .bind(&m.cluster)
            .bind(&c.task)
            .bind(c.instant_ms)
            .bind(&m.node)
            .bind(m.incarnation)
            .bind(c.token)
            .bind(c.outcome.as_str())
            .bind(c.message.clone())
            .bind(&m.cluster)
            .bind(&c.task)
            .bind(c.token)
            .bind(&m.node)
            .bind(m.incarnation)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        if done.rows_affected() == 1 {
            return Ok(ClaimOutcome::Claimed);
        }
        // Rare path: tell a taken instant from a fenced claimant.
        let sql = self.sql("SELECT COUNT(*) FROM rota_fires WHERE cluster = ? AND task = ? AND instant = ? AND slot = ''");
        let taken: i64 = sqlx::query_scalar(&sql)
            .bind(&m.cluster)
            .bind(&c.task)
            .bind(c.instant_ms)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(if taken > 0 {
            ClaimOutcome::AlreadyClaimed
        } else {
            ClaimOutcome::Fenced
        })
    }

    async fn claim_batch(&self, claims: &[Claim]) -> Result<Vec<ClaimOutcome>> {
        let mut out = Vec::with_capacity(claims.len());
        for chunk in claims.chunks(BATCH_LIMIT) {
            // A batch is one claimant's; claims of another incarnation go on their own.
            let m = &chunk[0].member;
            if chunk.iter().any(|c| c.member != *m) || chunk.len() == 1 {
                for c in chunk {
                    out.push(self.claim(c).await?);
                }
                continue;
            }
            out.extend(self.claim_chunk(m, chunk).await?);
        }
        Ok(out)
    }

    async fn finish_batch(&self, cluster: &str, finishes: &[Finish]) -> Result<()> {
        // One statement per (outcome, message): in steady state, all are `ok` without one.
        let mut groups: Vec<(Outcome, Option<&str>, Vec<&Finish>)> = Vec::new();
        for f in finishes {
            match groups
                .iter_mut()
                .find(|(o, m, _)| *o == f.outcome && *m == f.message.as_deref())
            {
                Some((_, _, list)) => list.push(f),
                None => groups.push((f.outcome, f.message.as_deref(), vec![f])),
            }
        }
        for (outcome, message, list) in groups {
            for chunk in list.chunks(BATCH_LIMIT) {
                let tuples = self
                    .dialect
                    .tuples_in(&["task", "instant", "token", "attempt"], chunk.len());
                let sql = self.sql(&format!(
                    "UPDATE rota_fires SET outcome = ?, finished_at = {{now}}, message = ?{} \
                     WHERE cluster = ? AND slot = '' AND outcome = 'running' AND {tuples}",
                    unstart(outcome)
                ));
                let mut q = sqlx::query(&sql)
                    .bind(outcome.as_str())
                    .bind(message.map(str::to_string))
                    .bind(cluster);
                for f in chunk {
                    q = q
                        .bind(&f.task)
                        .bind(f.instant_ms)
                        .bind(f.token)
                        .bind(f.attempt);
                }
                q.execute(&self.pool).await.map_err(unavailable)?;
            }
        }
        Ok(())
    }

    async fn finish(&self, cluster: &str, f: &Finish) -> Result<()> {
        let sql = self.sql(
            &format!("UPDATE rota_fires SET outcome = ?, finished_at = {{now}}, message = ?{} \
             WHERE cluster = ? AND task = ? AND instant = ? AND slot = '' AND token = ? AND attempt = ? AND outcome = 'running'", unstart(f.outcome)),
        );
        sqlx::query(&sql)
            .bind(f.outcome.as_str())
            .bind(f.message.clone())
            .bind(cluster)
            .bind(&f.task)
            .bind(f.instant_ms)
            .bind(f.token)
            .bind(f.attempt)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn last_instant(&self, cluster: &str, task: &str) -> Result<Option<i64>> {
        let sql = self.sql(
            "SELECT MAX(instant) FROM rota_fires WHERE cluster = ? AND task = ? AND slot = ''",
        );
        sqlx::query_scalar(&sql)
            .bind(cluster)
            .bind(task)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)
    }

    async fn running_fires(&self, cluster: &str, task: &str) -> Result<Vec<RunningFire>> {
        let sql = self.sql(
            "SELECT f.instant, f.node_id, f.incarnation, f.token, f.attempt, \
             CASE WHEN f.started_at IS NULL THEN 0 ELSE 1 END AS begun, \
             CASE WHEN n.node_id IS NOT NULL AND n.heartbeat_at + n.timeout_ms >= {now} THEN 1 ELSE 0 END AS alive \
             FROM rota_fires f LEFT JOIN rota_nodes n \
             ON n.cluster = f.cluster AND n.node_id = f.node_id AND n.incarnation = f.incarnation \
             WHERE f.cluster = ? AND f.outcome = 'running' AND f.task = ? AND f.slot = '' ORDER BY f.instant",
        );
        let rows = sqlx::query(&sql)
            .bind(cluster)
            .bind(task)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(RunningFire {
                    instant_ms: r.try_get("instant").map_err(unavailable)?,
                    node: r.try_get("node_id").map_err(unavailable)?,
                    incarnation: r.try_get("incarnation").map_err(unavailable)?,
                    token: r.try_get("token").map_err(unavailable)?,
                    attempt: r.try_get("attempt").map_err(unavailable)?,
                    node_alive: r.try_get::<i64, _>("alive").map_err(unavailable)? != 0,
                    begun: r.try_get::<i64, _>("begun").map_err(unavailable)? != 0,
                })
            })
            .collect()
    }

    async fn begin_fires(&self, m: &Member, fires: &[Begin]) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(fires.len());
        for chunk in fires.chunks(BATCH_LIMIT) {
            out.extend(self.begin_chunk(m, chunk).await?);
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
        let record = (fire.token, fire.attempt);
        let how = Recovery::of(fire.begun, retry);
        self.recover_record(m, task, fire.instant_ms, "", token, record, how)
            .await
    }

    async fn claim_item(
        &self,
        m: &Member,
        service: &str,
        token: i64,
        item: &str,
    ) -> Result<ItemClaim> {
        let sql = self.sql(&format!(
            "{{insert_ignore}} rota_fires (cluster, task, instant, slot, node_id, incarnation, token, attempt, outcome, started_at, finished_at, message) \
             SELECT ?, ?, {ITEM_INSTANT}, ?, ?, ?, ?, 1, 'running', {{now}}, NULL, NULL FROM rota_meta WHERE name = 'schema_version' AND {}{{on_conflict_nothing}}",
            bound_fence()
        ));
        let done = sqlx::query(&sql)
            .bind(&m.cluster)
            .bind(service)
            .bind(item)
            .bind(&m.node)
            .bind(m.incarnation)
            .bind(token)
            .bind(&m.cluster)
            .bind(service)
            .bind(token)
            .bind(&m.node)
            .bind(m.incarnation)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        if done.rows_affected() == 1 {
            return Ok(ItemClaim::Claimed);
        }
        let sql = self.sql(&format!(
            "SELECT f.node_id, f.incarnation, f.token, f.attempt, f.outcome, \
             CASE WHEN n.node_id IS NOT NULL AND n.heartbeat_at + n.timeout_ms >= {{now}} THEN 1 ELSE 0 END AS alive \
             FROM rota_fires f LEFT JOIN rota_nodes n \
             ON n.cluster = f.cluster AND n.node_id = f.node_id AND n.incarnation = f.incarnation \
             WHERE f.cluster = ? AND f.task = ? AND f.instant = {ITEM_INSTANT} AND f.slot = ?"
        ));
        let row = sqlx::query(&sql)
            .bind(&m.cluster)
            .bind(service)
            .bind(item)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        let Some(r) = row else {
            return Ok(ItemClaim::Fenced);
        };
        let outcome: String = r.try_get("outcome").map_err(unavailable)?;
        Ok(ItemClaim::Recorded(ItemRecord {
            node: r.try_get("node_id").map_err(unavailable)?,
            incarnation: r.try_get("incarnation").map_err(unavailable)?,
            token: r.try_get("token").map_err(unavailable)?,
            attempt: r.try_get("attempt").map_err(unavailable)?,
            outcome: Outcome::parse(&outcome).ok_or_else(|| {
                Error::Store(format!("unknown outcome `{outcome}` in rota_fires"))
            })?,
            node_alive: r.try_get::<i64, _>("alive").map_err(unavailable)? != 0,
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
        // An item begins with its claim.
        let how = if record.outcome == Outcome::Released {
            Recovery::Reclaim
        } else {
            Recovery::of(true, retry)
        };
        let record = (record.token, record.attempt);
        self.recover_record(m, service, ITEM_INSTANT, item, token, record, how)
            .await
    }

    async fn finish_item(&self, cluster: &str, ended: &ItemEnd<'_>) -> Result<()> {
        let sql = self.sql(&format!(
            "UPDATE rota_fires SET outcome = ?, finished_at = {{now}}, message = ? \
             WHERE cluster = ? AND task = ? AND instant = {ITEM_INSTANT} AND slot = ? AND token = ? AND attempt = ? AND outcome = 'running'"
        ));
        sqlx::query(&sql)
            .bind(ended.outcome.as_str())
            .bind(ended.message.map(str::to_string))
            .bind(cluster)
            .bind(ended.service)
            .bind(ended.item)
            .bind(ended.token)
            .bind(ended.attempt)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn history(
        &self,
        cluster: &str,
        task: Option<&str>,
        limit: i64,
    ) -> Result<Vec<FireRecord>> {
        let filter = if task.is_some() { " AND task = ?" } else { "" };
        let sql = self.sql(&format!(
            "SELECT task, instant, node_id, token, attempt, outcome, started_at, finished_at, message \
             FROM rota_fires WHERE cluster = ? AND slot = ''{filter} ORDER BY instant DESC, task LIMIT ?"
        ));
        let mut q = sqlx::query(&sql).bind(cluster);
        if let Some(t) = task {
            q = q.bind(t);
        }
        let rows = q
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                let outcome: String = r.try_get("outcome").map_err(unavailable)?;
                Ok(FireRecord {
                    task: r.try_get("task").map_err(unavailable)?,
                    instant_ms: r.try_get("instant").map_err(unavailable)?,
                    node: r.try_get("node_id").map_err(unavailable)?,
                    token: r.try_get("token").map_err(unavailable)?,
                    attempt: r.try_get("attempt").map_err(unavailable)?,
                    outcome: Outcome::parse(&outcome).ok_or_else(|| {
                        Error::Store(format!("unknown outcome `{outcome}` in rota_fires"))
                    })?,
                    started_at_ms: r.try_get("started_at").map_err(unavailable)?,
                    finished_at_ms: r.try_get("finished_at").map_err(unavailable)?,
                    message: text(r, "message")?,
                })
            })
            .collect()
    }

    async fn purge_history(&self, cluster: &str, before_ms: i64) -> Result<u64> {
        // Each task's newest record stays, whatever its age: a new owner resumes after it.
        let statement = self.dialect.purge_history();
        let sql = self.sql(statement);
        let fires = sqlx::query(&sql)
            .bind(cluster)
            .bind(cluster)
            .bind(before_ms)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        let sql = self.sql(&format!(
            "DELETE FROM rota_fires WHERE cluster = ? AND instant = {ITEM_INSTANT} AND slot <> '' \
             AND outcome <> 'running' AND finished_at < ?"
        ));
        let items = sqlx::query(&sql)
            .bind(cluster)
            .bind(before_ms)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        // Tombstones and expired entries, once older than the retention: a key written again
        // after that starts again at version 1.
        let sql = self.sql(
            "DELETE FROM rota_cache WHERE cluster = ? AND updated_at < ? \
             AND (live = 0 OR (expires_at IS NOT NULL AND expires_at < ?))",
        );
        sqlx::query(&sql)
            .bind(cluster)
            .bind(before_ms)
            .bind(before_ms)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        let sql = self.sql("DELETE FROM rota_events WHERE cluster = ? AND at < ?");
        sqlx::query(&sql)
            .bind(cluster)
            .bind(before_ms)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(fires.rows_affected() + items.rows_affected())
    }

    async fn append_command(&self, cluster: &str, body: &str) -> Result<(i64, i64)> {
        let mut tx = self.begin().await?;
        let appended = self.append_in(&mut tx, cluster, body).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(appended)
    }

    async fn commands(&self, cluster: &str, after: i64, limit: i64) -> Result<Vec<CommandRecord>> {
        let sql = self.sql(
            "SELECT seq, issued_at, body FROM rota_commands WHERE cluster = ? AND seq > ? \
             ORDER BY seq LIMIT ?",
        );
        let rows = sqlx::query(&sql)
            .bind(cluster)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(CommandRecord {
                    seq: r.try_get("seq").map_err(unavailable)?,
                    issued_at_ms: r.try_get("issued_at").map_err(unavailable)?,
                    body: text(r, "body")?.unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn ack_command(&self, cluster: &str, ack: &Ack) -> Result<()> {
        let mut tx = self.begin().await?;
        self.ack_in(&mut tx, cluster, ack).await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn record_event(&self, cluster: &str, event: &EventRecord) -> Result<()> {
        // An id already recorded (by this node before, or by another) is the same fact.
        let sql = self.sql(
            "{insert_ignore} rota_events (cluster, id, at, kind, body) VALUES (?, ?, ?, ?, ?){on_conflict_nothing}",
        );
        sqlx::query(&sql)
            .bind(cluster)
            .bind(&event.id)
            .bind(event.at_ms)
            .bind(&event.kind)
            .bind(&event.body)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn events(&self, cluster: &str, limit: i64) -> Result<Vec<EventRecord>> {
        let sql = self.sql(
            "SELECT id, at, kind, body FROM rota_events WHERE cluster = ? ORDER BY id DESC LIMIT ?",
        );
        let rows = sqlx::query(&sql)
            .bind(cluster)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(EventRecord {
                    id: text(r, "id")?.unwrap_or_default(),
                    at_ms: r.try_get("at").map_err(unavailable)?,
                    kind: text(r, "kind")?.unwrap_or_default(),
                    body: text(r, "body")?.unwrap_or_default(),
                })
            })
            .collect()
    }

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
            let sender = listen::spawn_cache(self.url.clone(), cluster.to_string());
            return Some(sender.subscribe());
        }
        let _ = cluster;
        None
    }

    async fn command_acks(&self, cluster: &str, filter: AckFilter<'_>) -> Result<Vec<Ack>> {
        const COLUMNS: &str = "seq, node_id, incarnation, state, message, at";
        let mut out = Vec::new();
        let rows = match filter {
            AckFilter::Node(node) => {
                let sql = self.sql(&format!(
                    "SELECT {COLUMNS} FROM rota_command_acks WHERE cluster = ? AND node_id = ? ORDER BY seq"
                ));
                sqlx::query(&sql)
                    .bind(cluster)
                    .bind(node)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(unavailable)?
            }
            AckFilter::Commands(seqs) => {
                let mut rows = Vec::new();
                for chunk in seqs.chunks(BATCH_LIMIT) {
                    let marks = vec!["?"; chunk.len()].join(", ");
                    let sql = self.sql(&format!(
                        "SELECT {COLUMNS} FROM rota_command_acks WHERE cluster = ? AND seq IN ({marks}) \
                         ORDER BY seq, node_id"
                    ));
                    let mut q = sqlx::query(&sql).bind(cluster);
                    for seq in chunk {
                        q = q.bind(*seq);
                    }
                    rows.extend(q.fetch_all(&self.pool).await.map_err(unavailable)?);
                }
                rows
            }
        };
        for r in &rows {
            let state: String = r.try_get("state").map_err(unavailable)?;
            out.push(Ack {
                seq: r.try_get("seq").map_err(unavailable)?,
                node: r.try_get("node_id").map_err(unavailable)?,
                incarnation: r.try_get("incarnation").map_err(unavailable)?,
                state: AckState::parse(&state).ok_or_else(|| {
                    Error::Store(format!("unknown state `{state}` in rota_command_acks"))
                })?,
                message: text(r, "message")?.unwrap_or_default(),
                at_ms: r.try_get("at").map_err(unavailable)?,
            });
        }
        Ok(out)
    }
}
