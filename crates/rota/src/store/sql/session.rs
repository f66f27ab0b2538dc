//! Session locks on SQL stores (see [`SessionStore`]): a PostgreSQL advisory lock or a
//! MySQL/MariaDB named lock, each on a connection of its own; on SQLite an open-file-
//! description lock on one byte of a file beside the database (`<db>-rota.lock`), which the
//! kernel frees when the process dies.
//!
//! Keys are random below 2^62, so keys of live holders never meet (a refused take draws
//! another). A watcher reports a release only after it saw the key held: a server that
//! restarted shows every key free until its holder takes it again, and that is no death.

use std::{fs::File, os::fd::AsRawFd, path::PathBuf};

use sqlx::Connection;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::*;

/// How often a holder checks its lock's connection, and how long a check may take.
const KEEPALIVE: Duration = Duration::from_secs(5);
const CALL_BOUND: Duration = Duration::from_secs(2);
/// Pause between tries to take a lost lock again.
const RETAKE_PAUSE: Duration = Duration::from_millis(100);
/// Up to this many other nodes, every MySQL/MariaDB node watches every other (it cannot be
/// told of the new placement, so it learns of a death itself); beyond, only the leader does.
const MESH_LIMIT: usize = 8;
/// How soon a watcher looks again at a key it found free, or after a connection error.
const LOOK_AGAIN: Duration = Duration::from_secs(1);

/// A new random key: positive, below 2^62.
fn new_key() -> i64 {
    ((rand::random::<u64>() >> 2) as i64).max(1)
}

/// The statements of one server dialect's locks. Each `?` is the key.
struct LockSql {
    /// Takes the key exclusively without waiting: 1 taken, 0 held by another.
    take: &'static str,
    release: &'static str,
    /// Whether another session holds the key: 1 held, 0 free.
    held: &'static str,
    /// Waits a while (PostgreSQL half a second, MySQL 5 s) to get the key, shared where
    /// possible; succeeds only once the holder let it go. Its reply: 1 got it, 0 the wait
    /// ran out. A cancelled watch lingers on the server that long at most.
    wait: &'static str,
    /// Lets go of what `wait` got.
    wait_release: &'static str,
    /// Run on a watcher's connection after the dialect's own setup.
    watcher_setup: &'static [&'static str],
}

fn lock_sql(dialect: Dialect) -> Option<LockSql> {
    match dialect {
        Dialect::Postgres => Some(LockSql {
            take: "SELECT CASE WHEN pg_try_advisory_lock(CAST($1 AS BIGINT)) THEN 1 ELSE 0 END",
            release: "SELECT CASE WHEN pg_advisory_unlock(CAST($1 AS BIGINT)) THEN 1 ELSE 0 END",
            held: "SELECT CASE WHEN pg_try_advisory_lock_shared(CAST($1 AS BIGINT)) \
                   THEN CASE WHEN pg_advisory_unlock_shared(CAST($1 AS BIGINT)) THEN 0 ELSE 0 END ELSE 1 END",
            wait: "SELECT pg_temp.rota_wait_lock(CAST($1 AS BIGINT))",
            wait_release: "SELECT CASE WHEN pg_advisory_unlock_shared(CAST($1 AS BIGINT)) THEN 1 ELSE 0 END",
            // A statement that waits holds a snapshot, and keeps every row deleted or
            // updated since then from being cleaned up, in rota's tables and the user's
            // alike: a wait ends after half a second. Ended by `lock_timeout` it would be an
            // error, and every server logs each error; the wait catches it instead (a
            // function of the session's own, gone with it).
            watcher_setup: &[
                "SET lock_timeout = 500",
                "SET statement_timeout = 7000",
                "CREATE FUNCTION pg_temp.rota_wait_lock(key bigint) RETURNS bigint \
                 LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_advisory_lock_shared(key); RETURN 1; \
                 EXCEPTION WHEN lock_not_available THEN RETURN 0; END $$",
            ],
        }),
        Dialect::Mysql => Some(LockSql {
            take: "SELECT COALESCE(GET_LOCK(CONCAT('rota.', ?), 0), 0)",
            release: "SELECT COALESCE(RELEASE_LOCK(CONCAT('rota.', ?)), 0)",
            held: "SELECT 1 - COALESCE(IS_FREE_LOCK(CONCAT('rota.', ?)), 1)",
            wait: "SELECT COALESCE(GET_LOCK(CONCAT('rota.', ?), 5), 0)",
            wait_release: "SELECT COALESCE(RELEASE_LOCK(CONCAT('rota.', ?)), 0)",
            watcher_setup: &[],
        }),
        Dialect::Sqlite => None,
    }
}

/// One lock statement's 0/1 reply.
async fn ask(
    conn: &mut sqlx::AnyConnection,
    sql: &str,
    key: i64,
) -> std::result::Result<bool, sqlx::Error> {
    let v: i64 = sqlx::query_scalar(sql)
        .bind(key)
        .persistent(false)
        .fetch_one(&mut *conn)
        .await?;
    Ok(v == 1)
}

/// A connection outside every pool, set up as the pools' are, then with `extra`.
async fn lock_connection(
    url: &str,
    dialect: Dialect,
    extra: &[&str],
) -> std::result::Result<sqlx::AnyConnection, sqlx::Error> {
    use sqlx::ConnectOptions;
    // A watcher's statement waits by design, as long as the lock is held: not a slow one.
    let options: sqlx::any::AnyConnectOptions = url.parse()?;
    let mut conn = options.disable_statement_logging().connect().await?;
    for stmt in dialect.session_setup().iter().chain(extra) {
        conn.execute(*stmt).await?;
    }
    Ok(conn)
}

/// Connects and takes `key`: `None` if another session holds it.
async fn take_on_server(
    url: &str,
    dialect: Dialect,
    sql: &LockSql,
    key: i64,
) -> std::result::Result<Option<sqlx::AnyConnection>, sqlx::Error> {
    let mut conn = lock_connection(url, dialect, &[]).await?;
    Ok(ask(&mut conn, sql.take, key).await?.then_some(conn))
}

/// Keeps a server lock: checks its connection, takes the key again on a new one if it was
/// lost (the server restarted, a proxy closed it), and lets it go when `stop` fires.
async fn keep_server_lock(
    url: String,
    dialect: Dialect,
    key: i64,
    mut conn: sqlx::AnyConnection,
    stop: CancellationToken,
) {
    let sql = lock_sql(dialect).expect("a server dialect");
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = tokio::time::timeout(CALL_BOUND, ask(&mut conn, sql.release, key)).await;
                let _ = tokio::time::timeout(CALL_BOUND, conn.close()).await;
                return;
            }
            _ = tokio::time::sleep(KEEPALIVE) => {}
        }
        if matches!(
            tokio::time::timeout(CALL_BOUND, conn.ping()).await,
            Ok(Ok(()))
        ) {
            continue;
        }
        warn!("the session lock's connection is lost; taking the lock again");
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(RETAKE_PAUSE) => {}
            }
            if let Ok(Ok(Some(new))) =
                tokio::time::timeout(CALL_BOUND, take_on_server(&url, dialect, &sql, key)).await
            {
                conn = new;
                info!("the session lock is held again");
                break;
            }
        }
    }
}

/// Watches a server lock until its holder lets it go, after having seen it held.
async fn watch_server_lock(url: String, dialect: Dialect, key: i64) {
    let sql = lock_sql(dialect).expect("a server dialect");
    loop {
        let mut conn = match lock_connection(&url, dialect, sql.watcher_setup).await {
            Ok(conn) => conn,
            Err(_) => {
                tokio::time::sleep(LOOK_AGAIN).await;
                continue;
            }
        };
        // Seen held on this connection first: only then is a grant a release.
        match ask(&mut conn, sql.held, key).await {
            Ok(true) => {}
            Ok(false) | Err(_) => {
                drop(conn);
                tokio::time::sleep(LOOK_AGAIN).await;
                continue;
            }
        }
        loop {
            match ask(&mut conn, sql.wait, key).await {
                Ok(true) => {
                    let _ = ask(&mut conn, sql.wait_release, key).await;
                    let _ = conn.close().await;
                    return;
                }
                Ok(false) => continue,
                Err(_) => break, // a new connection, and a new first look
            }
        }
    }
}

/// The file whose bytes are the SQLite store's session locks, `None` for an in-memory
/// database.
fn sqlite_lock_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" || query.split('&').any(|p| p == "mode=memory") {
        return None;
    }
    Some(PathBuf::from(format!("{path}-rota.lock")))
}

fn open_lock_file(path: &PathBuf) -> std::io::Result<File> {
    // Rust opens with O_CLOEXEC: a command the node starts never inherits the lock.
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// Sets an open-file-description lock on byte `key` (`F_WRLCK`, `F_RDLCK` or `F_UNLCK`).
/// Without `wait`, `false` if another description holds a conflicting lock.
fn byte_lock(file: &File, kind: libc::c_int, key: i64, wait: bool) -> std::io::Result<bool> {
    // SAFETY: `flock` is plain data; zeroed is a valid value (l_pid must be 0 for OFD locks).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = key as libc::off_t;
    lock.l_len = 1;
    let command = if wait {
        libc::F_OFD_SETLKW
    } else {
        libc::F_OFD_SETLK
    };
    loop {
        // SAFETY: a valid descriptor and a valid `flock` for the duration of the call.
        if unsafe { libc::fcntl(file.as_raw_fd(), command, &mut lock) } == 0 {
            return Ok(true);
        }
        let error = std::io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EACCES) if !wait => return Ok(false),
            _ => return Err(error),
        }
    }
}

/// Whether another open file description holds byte `key`.
fn byte_held(file: &File, key: i64) -> std::io::Result<bool> {
    // SAFETY: as in `byte_lock`.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_RDLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = key as libc::off_t;
    lock.l_len = 1;
    // SAFETY: as in `byte_lock`.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(lock.l_type != libc::F_UNLCK as libc::c_short)
}

/// Blocks until byte `key` of `path`, seen held, is let go. `false`: not held at the first
/// look, or the file cannot be used.
fn wait_for_byte(path: &PathBuf, key: i64) -> bool {
    let Ok(file) = open_lock_file(path) else {
        return false;
    };
    if !matches!(byte_held(&file, key), Ok(true)) {
        return false;
    }
    if !matches!(byte_lock(&file, libc::F_RDLCK, key, true), Ok(true)) {
        return false;
    }
    let _ = byte_lock(&file, libc::F_UNLCK, key, false);
    true
}

/// Watches byte `key` of `path` on a thread of its own, blocked in the kernel (no CPU, no
/// wakeups); a thread cannot be cancelled, and ends when the holder lets go.
async fn watch_file_lock(path: PathBuf, key: i64) {
    loop {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let watch_path = path.clone();
        let spawned = std::thread::Builder::new()
            .name("rota-session-watch".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let _ = tx.send(wait_for_byte(&watch_path, key));
            });
        if spawned.is_err() {
            std::future::pending::<()>().await;
        }
        if rx.await == Ok(true) {
            return;
        }
        tokio::time::sleep(LOOK_AGAIN).await;
    }
}

#[async_trait]
impl SessionStore for SqlStore {
    async fn hold_session(&self) -> Result<Option<SessionHold>> {
        let stop = CancellationToken::new();
        if self.dialect == Dialect::Sqlite {
            let Some(path) = sqlite_lock_path(&self.url) else {
                return Ok(None);
            };
            let file = open_lock_file(&path).map_err(|e| {
                Error::Store(format!(
                    "cannot open the session lock file {}: {e}",
                    path.display()
                ))
            })?;
            for _ in 0..8 {
                let key = new_key();
                let taken = byte_lock(&file, libc::F_WRLCK, key, false)
                    .map_err(|e| Error::Store(format!("cannot lock {}: {e}", path.display())))?;
                if taken {
                    let keeper_stop = stop.clone();
                    let keeper = tokio::spawn(async move {
                        keeper_stop.cancelled().await;
                        drop(file); // closing the description lets the byte go
                    });
                    return Ok(Some(SessionHold::new(key, stop, keeper)));
                }
            }
            return Err(Error::StoreUnavailable("no free session lock key".into()));
        }
        let sql = lock_sql(self.dialect).expect("a server dialect");
        for _ in 0..8 {
            let key = new_key();
            let taken = tokio::time::timeout(
                Duration::from_secs(5),
                take_on_server(&self.url, self.dialect, &sql, key),
            )
            .await
            .map_err(|_| Error::StoreUnavailable("taking the session lock timed out".into()))?
            .map_err(unavailable)?;
            if let Some(conn) = taken {
                let keeper = tokio::spawn(keep_server_lock(
                    self.url.clone(),
                    self.dialect,
                    key,
                    conn,
                    stop.clone(),
                ));
                return Ok(Some(SessionHold::new(key, stop, keeper)));
            }
        }
        Err(Error::StoreUnavailable("no free session lock key".into()))
    }

    fn watch_scope(&self, others: usize) -> WatchScope {
        match self.dialect {
            // NOTIFY tells every node of the new placement.
            Dialect::Postgres => WatchScope::Leader,
            // Each watch is a connection: beyond a few nodes, the leader's alone.
            Dialect::Mysql if others > MESH_LIMIT => WatchScope::Leader,
            // A watch is a thread blocked in the kernel.
            Dialect::Mysql | Dialect::Sqlite => WatchScope::Everyone,
        }
    }

    fn watch_session(&self, key: i64) -> Option<SessionWatch> {
        Some(match self.dialect {
            Dialect::Sqlite => Box::pin(watch_file_lock(sqlite_lock_path(&self.url)?, key)),
            dialect => Box::pin(watch_server_lock(self.url.clone(), dialect, key)),
        })
    }

    async fn end_registration(&self, m: &Member, key: i64) -> Result<bool> {
        let mut tx = self.begin().await?;
        let sql = self.sql(&format!(
            "UPDATE rota_nodes SET ended_at = {{now}} \
             WHERE cluster = ? AND node_id = ? AND incarnation = ? AND session_key = ? AND {}",
            super::membership::live("")
        ));
        let done = sqlx::query(&sql)
            .bind(&m.cluster)
            .bind(&m.node)
            .bind(m.incarnation)
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        let ended = done.rows_affected() == 1;
        if ended {
            self.bump_generation(&mut tx, &m.cluster).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_is_held_until_its_description_closes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db-rota.lock");
        let holder = open_lock_file(&path).unwrap();
        let other = open_lock_file(&path).unwrap();
        assert!(byte_lock(&holder, libc::F_WRLCK, 42, false).unwrap());
        assert!(
            byte_held(&other, 42).unwrap(),
            "held by another description"
        );
        assert!(!byte_held(&other, 43).unwrap(), "another byte is free");
        assert!(
            !byte_lock(&other, libc::F_WRLCK, 42, false).unwrap(),
            "a held key is refused"
        );
        let waiter = std::thread::spawn(move || wait_for_byte(&path, 42));
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !waiter.is_finished(),
            "the wait lasts while the byte is held"
        );
        drop(holder);
        assert!(
            waiter.join().unwrap(),
            "closing the holder's description lets the byte go"
        );
    }

    #[test]
    fn an_in_memory_database_has_no_lock_file() {
        assert_eq!(sqlite_lock_path("sqlite::memory:"), None);
        assert_eq!(
            sqlite_lock_path("sqlite://x.db?mode=memory&cache=shared"),
            None
        );
        assert_eq!(
            sqlite_lock_path("sqlite:///var/lib/rota/rota.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/rota/rota.db-rota.lock"))
        );
    }
}
