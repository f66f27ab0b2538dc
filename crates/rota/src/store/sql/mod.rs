//! SQL stores (SQLite, PostgreSQL, MySQL/MariaDB) over one implementation. Dialect
//! differences live in [`dialect`]; the schema in [`schema`].

mod cache;
mod commands;
pub mod dialect;
mod events;
mod fires;
mod history;
mod items;
#[cfg(feature = "postgres")]
mod listen;
mod membership;
mod placement;
pub mod schema;
mod session;

use std::{
    collections::{HashMap, HashSet},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use async_trait::async_trait;
use rota_core::{
    control::{Ack, AckState},
    outcome::Outcome,
};
use sqlx::{
    any::{AnyPoolOptions, AnyRow},
    AnyPool, Executor, Row,
};

use self::dialect::Dialect;
use super::{
    backend::*, cache::*, commands::*, events::*, fires::*, history::*, items::*, membership::*,
    placement::*, session::*, url::*,
};
use crate::error::{Error, Result};

/// Most rows one batched statement handles (keeps bind parameters well under every
/// database's limit).
const BATCH_LIMIT: usize = 1000;

/// Batches of at most this many rows keep their prepared statement (see [`batch_query`]).
const CACHED_BATCH_ROWS: usize = 16;

/// A statement whose text grows with its batch (a list of marks per row). Connections cache
/// prepared statements by their text, so each batch size is a statement of its own: the
/// large ones (a takeover or a placement of thousands of tasks) are rare, and caching them
/// held megabytes for good (a takeover of 10,000 tasks on SQLite: 6 MB). The small batches
/// of a busy node's claims and outcomes stay cached.
fn batch_query(
    sql: &str,
    rows: usize,
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    sqlx::query(sql).persistent(rows <= CACHED_BATCH_ROWS)
}

/// Connections per node, shared by the main loop, runners, and batched claims and outcomes
/// (at most two batches in flight). Each node also holds one connection of its own for the
/// heartbeat, and one LISTEN connection on PostgreSQL.
pub const POOL_SIZE: u32 = 4;

pub struct SqlStore {
    pool: AnyPool,
    /// The heartbeat's own connection: a renewal never queues behind the node's other work
    /// (a leader's large write, a takeover of many tasks), which could fence a healthy node.
    heartbeat_pool: AnyPool,
    dialect: Dialect,
    /// For the connections outside the pools: PostgreSQL's LISTEN, session locks (and the
    /// SQLite lock file's path).
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

    /// A statement over a [`Dialect::json_table`] of rows. PostgreSQL plans it at each run:
    /// a plan cached while `rota_fires` was nearly empty (a hash join over the whole table,
    /// cheapest then) stays until the next `ANALYZE`, a minute or more, and each run grows
    /// slower with the table meanwhile. Measured in `rota bench throughput`: 10,000 fires/s
    /// fell seconds behind for the first 10 s of a new store with the cached plan, and not
    /// at all planned each time.
    fn rows_query<'q>(
        &self,
        sql: &'q str,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        sqlx::query(sql).persistent(self.dialect != Dialect::Postgres)
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
}

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
}
