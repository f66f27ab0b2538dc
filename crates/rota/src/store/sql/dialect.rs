//! Everything that differs between SQL databases, in one place. Statements elsewhere are
//! written once, with `?` placeholders and `{name}` fragments that [`Dialect::prepare`] fills.

/// The type of a column of [`Dialect::json_table`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    Int,
    Text,
}

/// The parameter of a [`Dialect::json_table`]: `rows` as a JSON array of objects.
pub fn json_rows(rows: impl IntoIterator<Item = serde_json::Value>) -> String {
    serde_json::Value::Array(rows.into_iter().collect()).to_string()
}

/// An update of a table's rows found by key from a batch of rows: see
/// [`Dialect::update_keyed`].
#[derive(Debug, Clone, Copy)]
pub struct KeyedUpdate<'a> {
    pub table: &'a str,
    pub alias: &'a str,
    /// The batch, a [`Dialect::json_table`] named `c`.
    pub rows: &'a str,
    pub key: &'a [(&'a str, &'a str)],
    pub set: &'a str,
    pub checks: &'a [(&'a str, &'a str)],
    pub cond: &'a str,
}

/// PostgreSQL: the first row of `table` (as `alias`) at or after `values`, in the order of
/// `columns`, which must be its primary key: no other index serves that order, so the
/// planner has one plan whatever it knows of the table. `select` reads the row; `lock`
/// follows `LIMIT 1`, so only the row found is locked.
fn seek_first(
    table: &str,
    alias: &str,
    columns: &[&str],
    values: &str,
    select: &str,
    lock: &str,
) -> String {
    let columns = columns
        .iter()
        .map(|column| format!("{alias}.{column}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "(SELECT {select} FROM {table} AS {alias} WHERE ({columns}) >= ({values}) \
         ORDER BY {columns} LIMIT 1{lock})"
    )
}

/// The conditions joined by `AND`.
fn all_of(conditions: impl Iterator<Item = String>) -> String {
    conditions.collect::<Vec<_>>().join(" AND ")
}

/// A supported SQL database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
    Mysql,
}

impl Dialect {
    pub fn from_scheme(scheme: &str) -> Option<Dialect> {
        match scheme {
            "sqlite" => Some(Dialect::Sqlite),
            "postgres" | "postgresql" => Some(Dialect::Postgres),
            "mysql" | "mariadb" => Some(Dialect::Mysql),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
            Dialect::Mysql => "mysql",
        }
    }

    /// The store's clock in Unix milliseconds, as an SQL expression (contract 5).
    fn now(self) -> &'static str {
        match self {
            Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Dialect::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
            Dialect::Mysql => "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)",
        }
    }

    /// `INSERT` that silently does nothing when the primary key exists: prefix and suffix.
    fn insert_ignore(self) -> (&'static str, &'static str) {
        match self {
            Dialect::Sqlite => ("INSERT OR IGNORE INTO", ""),
            Dialect::Postgres => ("INSERT INTO", " ON CONFLICT DO NOTHING"),
            Dialect::Mysql => ("INSERT IGNORE INTO", ""),
        }
    }

    /// Row lock for read-then-write inside a transaction (SQLite locks the whole database
    /// with `BEGIN IMMEDIATE` instead).
    fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres | Dialect::Mysql => " FOR UPDATE",
        }
    }

    /// Share lock on the assignment a fence reads, so that a claim serializes with a concurrent
    /// reassignment whatever the server's isolation level: under READ COMMITTED a plain
    /// subquery reads its snapshot, and a claim sent before a reassignment that commits after
    /// it would be accepted under the old token. With the lock the claim waits for the
    /// reassignment and then re-reads the row (and is fenced). Fences name the assignment
    /// `a`. SQLite serializes writers.
    fn lock_share(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR SHARE OF a",
            Dialect::Mysql => " LOCK IN SHARE MODE",
        }
    }

    /// Share lock on the registration a fence reads. MySQL locks it, as it locks every row a
    /// locking read reads; PostgreSQL does not (a heartbeat's update of the row must not
    /// wait for claims); SQLite serializes writers.
    fn lock_share_registration(self) -> &'static str {
        match self {
            Dialect::Mysql => " LOCK IN SHARE MODE",
            Dialect::Sqlite | Dialect::Postgres => "",
        }
    }

    /// The statement that opens a write transaction.
    pub fn begin_write(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres | Dialect::Mysql => "BEGIN",
        }
    }

    /// Column types for the schema: key text, big integer, long text, table options.
    pub fn types(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Dialect::Sqlite => ("TEXT", "INTEGER", "TEXT", ""),
            Dialect::Postgres => ("VARCHAR(255)", "BIGINT", "TEXT", ""),
            Dialect::Mysql => (
                "VARCHAR(255)",
                "BIGINT",
                // TEXT holds 64 KB: too little for the declarations of thousands of tasks.
                "MEDIUMTEXT",
                " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            ),
        }
    }

    /// A key column compared and ordered byte for byte, whatever the database's locale.
    /// MySQL's text collations would merge keys: the default one ignores case (`A` is `a`),
    /// and even `utf8mb4_bin` pads with spaces (`a ` is `a`); bytes compare exactly.
    pub fn exact_key(self) -> &'static str {
        match self {
            Dialect::Sqlite => "TEXT",
            Dialect::Postgres => "VARCHAR(255) COLLATE \"C\"",
            Dialect::Mysql => "VARBINARY(1020)",
        }
    }

    /// The length of a key prefix as `SUBSTR` counts it: bytes for MySQL's binary keys,
    /// characters elsewhere.
    pub fn prefix_length(self, prefix: &str) -> i32 {
        let n = match self {
            Dialect::Mysql => prefix.len(),
            _ => prefix.chars().count(),
        };
        i32::try_from(n).unwrap_or(i32::MAX)
    }

    /// The column type of arbitrary bytes.
    pub fn blob(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BLOB",
            Dialect::Postgres => "BYTEA",
            Dialect::Mysql => "LONGBLOB",
        }
    }

    /// Adds what the driver needs to the user's URL (SQLite: create the file if missing).
    pub fn normalize_url(self, url: &str) -> String {
        match self {
            Dialect::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            }
            Dialect::Sqlite => url.to_string(),
            Dialect::Postgres => url.replacen("postgresql://", "postgres://", 1),
            Dialect::Mysql => url.replacen("mariadb://", "mysql://", 1),
        }
    }

    /// Statements run on every new connection.
    pub fn session_setup(self) -> &'static [&'static str] {
        match self {
            // WAL lets readers run beside the writer; FULL makes every claim durable before it
            // counts; the busy timeout waits out other processes' writes.
            Dialect::Sqlite => &[
                "PRAGMA busy_timeout = 5000",
                "PRAGMA journal_mode = WAL",
                "PRAGMA synchronous = FULL",
            ],
            // A frozen or cut-off node must not hold locks that block everyone.
            Dialect::Postgres => &[
                "SET statement_timeout = 5000",
                "SET idle_in_transaction_session_timeout = 5000",
            ],
            // UNIX_TIMESTAMP(NOW(3)) depends on the session time zone: pin it to UTC so store
            // time never jumps at daylight-saving changes.
            Dialect::Mysql => &[
                "SET SESSION innodb_lock_wait_timeout = 5",
                "SET time_zone = '+00:00'",
            ],
        }
    }

    /// Counts the `rota_meta` table (0 or 1).
    pub fn meta_probe(self) -> &'static str {
        match self {
            Dialect::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'rota_meta'",
            Dialect::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'rota_meta'"
            }
            Dialect::Mysql => {
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'rota_meta'"
            }
        }
    }

    /// Statements that take and release the lock under which the schema is created, so that
    /// nodes starting together do not race (on SQLite, a write transaction).
    pub fn schema_lock(self) -> (&'static str, &'static str) {
        match self {
            Dialect::Sqlite => ("BEGIN IMMEDIATE", "COMMIT"),
            Dialect::Postgres => (
                "SELECT pg_advisory_lock(7250104716)",
                "SELECT pg_advisory_unlock(7250104716)",
            ),
            Dialect::Mysql => (
                "SELECT GET_LOCK('rota_schema', 60)",
                "SELECT RELEASE_LOCK('rota_schema')",
            ),
        }
    }

    /// `INSERT ... RETURNING` is available (MySQL has none).
    pub fn has_returning(self) -> bool {
        self != Dialect::Mysql
    }

    /// The statement that pushes a cluster's change to listeners, where the database can.
    pub fn notify(self) -> Option<&'static str> {
        match self {
            Dialect::Postgres => Some("SELECT pg_notify('rota_changes', ?)"),
            _ => None,
        }
    }

    /// Deletes a cluster's finished fires before an instant, keeping each task's newest
    /// record (a new owner resumes after it). Binds: cluster, cluster, before.
    pub fn purge_history(self) -> &'static str {
        match self {
            // MySQL cannot read the table it deletes from in a subquery: join a derived table.
            Dialect::Mysql => {
                "DELETE f FROM rota_fires f JOIN (SELECT task, MAX(instant) AS newest FROM rota_fires \
                 WHERE cluster = ? GROUP BY task) x ON x.task = f.task \
                 WHERE f.cluster = ? AND f.instant < ? AND f.instant < x.newest AND f.outcome <> 'running' AND f.slot = ''"
            }
            _ => {
                "DELETE FROM rota_fires WHERE cluster = ? AND cluster = ? AND instant < ? AND outcome <> 'running' AND slot = '' \
                 AND instant < (SELECT MAX(f2.instant) FROM rota_fires f2 \
                 WHERE f2.cluster = rota_fires.cluster AND f2.task = rota_fires.task)"
            }
        }
    }

    /// A derived table `c` of rows passed as one parameter: a JSON array of objects whose
    /// fields are `columns` (see [`json_rows`]). Its statement's text is the same for one row
    /// or a thousand, so a connection prepares and plans it once; a list of marks per row
    /// made each batch size a statement of its own, parsed and planned at every run, and a
    /// busy node's batches (hundreds of rows) cost the database more to plan than to write.
    pub fn json_table(self, columns: &[(&str, JsonType)]) -> String {
        match self {
            Dialect::Postgres => {
                let defs: Vec<String> = columns
                    .iter()
                    .map(|(name, ty)| {
                        let ty = match ty {
                            JsonType::Int => "bigint",
                            JsonType::Text => "text",
                        };
                        format!("{name} {ty}")
                    })
                    .collect();
                format!(
                    "json_to_recordset(CAST(? AS json)) AS c({})",
                    defs.join(", ")
                )
            }
            Dialect::Sqlite => {
                let fields: Vec<String> = columns
                    .iter()
                    .map(|(name, _)| format!("json_extract(value, '$.{name}') AS {name}"))
                    .collect();
                // SQLite's planner would rather scan the table (or its running fires) and
                // scan the whole JSON for each of them; ordered by position, the JSON is
                // read once, as the outer loop, and each row found by its key.
                format!(
                    "(SELECT {} FROM json_each(?) ORDER BY key) c",
                    fields.join(", ")
                )
            }
            Dialect::Mysql => {
                let defs: Vec<String> = columns
                    .iter()
                    .map(|(name, ty)| {
                        let ty = match ty {
                            JsonType::Int => "BIGINT",
                            JsonType::Text => "MEDIUMTEXT",
                        };
                        format!("{name} {ty} PATH '$.{name}'")
                    })
                    .collect();
                format!("JSON_TABLE(?, '$[*]' COLUMNS ({})) AS c", defs.join(", "))
            }
        }
    }

    /// `UPDATE {table} AS {alias} SET {set}` for each row of `table` whose primary key is
    /// that of a row `c` of the derived table `rows`, whose `checks` hold (each a column of
    /// `alias` equal to an expression over `c`) and which passes `cond` (over `alias`, not
    /// `c`; may be empty). `key`: the primary key's columns in index order, each with its
    /// value; the first may be a mark, the others are expressions over `c`, as are the
    /// checks' values, without marks. Marks come in the order `rows`, the key, `cond` (`set`,
    /// which may read `c`, holds none).
    ///
    /// On PostgreSQL each row of `rows` seeks its row in the primary key (the first row at
    /// or after the key, in key order, then compared), and the row is updated by its
    /// physical id; the checks travel with the seek. No other index serves that order, and
    /// no column of the table is compared with `c`, so the planner has one plan whatever it
    /// knows of the table. A plain join let it hash a cluster's running fires, whose dead
    /// index entries grow with every finish for as long as any session holds an older
    /// snapshot (a finish of 300 rows: 60 to 400 ms at 10,000 fires/s), or, without
    /// statistics, hash the batch against the table on a token and probe each of the
    /// products (100 s for 1,000 moves). A row updated by another transaction after the
    /// seek is left as that transaction made it: its new version has another physical id.
    /// (Callers count on that being a refusal: a running fire is updated meanwhile only by
    /// a successor's recovery, and a placement move that changes nothing rolls back.)
    pub fn update_keyed(self, update: KeyedUpdate) -> String {
        let KeyedUpdate {
            table,
            alias,
            rows,
            key,
            set,
            checks,
            cond,
        } = update;
        debug_assert!(key.iter().skip(1).all(|(_, value)| !value.contains('?')));
        debug_assert!(checks.iter().all(|(_, value)| !value.contains('?')));
        let cond = if cond.is_empty() {
            String::new()
        } else {
            format!(" AND {cond}")
        };
        let matched = || {
            all_of(
                key.iter()
                    .chain(checks)
                    .map(|(column, value)| format!("{alias}.{column} = {value}")),
            )
        };
        match self {
            Dialect::Mysql => format!(
                "UPDATE {table} AS {alias} JOIN {rows} ON 1 = 1 SET {set} WHERE {}{cond}",
                matched()
            ),
            Dialect::Sqlite => format!(
                "UPDATE {table} AS {alias} SET {set} FROM {rows} WHERE {}{cond}",
                matched()
            ),
            Dialect::Postgres => {
                // The first key value goes in once, as a table of its own, since it may be
                // a mark: the seek starts from it and the row found is compared to it.
                let (first, rest) = key.split_first().expect("a key has a column");
                let seek_columns = key
                    .iter()
                    .map(|(column, _)| format!("seek.{column}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let values = std::iter::once("first.value")
                    .chain(rest.iter().map(|(_, value)| *value))
                    .collect::<Vec<_>>()
                    .join(", ");
                let wanted: String = checks
                    .iter()
                    .enumerate()
                    .map(|(i, (_, value))| format!(", {value} AS check{i}"))
                    .collect();
                let found =
                    all_of(
                        std::iter::once(format!("keyed.{} = first.value", first.0))
                            .chain(
                                rest.iter()
                                    .map(|(column, value)| format!("keyed.{column} = {value}")),
                            )
                            .chain(checks.iter().enumerate().map(|(i, (column, _))| {
                                format!("{alias}.{column} = keyed.check{i}")
                            })),
                    );
                let columns: Vec<&str> = key.iter().map(|(column, _)| *column).collect();
                format!(
                    "UPDATE {table} AS {alias} SET {set} FROM {rows} \
                     CROSS JOIN (SELECT {value} AS value) AS first CROSS JOIN LATERAL \
                     {} AS keyed WHERE {alias}.ctid = keyed.row_id AND {found}{cond}",
                    seek_first(
                        table,
                        "seek",
                        &columns,
                        &values,
                        &format!("seek.ctid AS row_id, {seek_columns}{wanted}"),
                        ""
                    ),
                    value = first.1,
                )
            }
        }
    }

    /// The assignment half of a claim's fence: `EXISTS` a row of `rota_assignments` with key
    /// `(cluster, task)` naming `(node, incarnation)` with `token`, share-locked (see
    /// [`Dialect::lock_share`]). Each argument is a SQL expression, each read once, in this
    /// order.
    ///
    /// On PostgreSQL the row is found as [`Dialect::update_keyed`] finds its rows: a seek
    /// in the primary key, locked, then compared. Asked for `a.cluster = ? AND a.task =
    /// c.task`, a planner without statistics (a new store's first minute) took the index on
    /// `(cluster, version)` and filtered half the cluster's assignments for each row of a
    /// batch: 19 to 45 µs a row, against 7 to 14 for the seek (`EXPLAIN ANALYZE` of a
    /// 333-row claim under load). The comparisons come after the lock, so they judge the
    /// newest version of a row a reassignment changed while the claim waited for it.
    pub fn assignment_fence(
        self,
        cluster: &str,
        task: &str,
        token: &str,
        node: &str,
        incarnation: &str,
    ) -> String {
        match self {
            Dialect::Postgres => format!(
                "EXISTS (SELECT 1 FROM (SELECT {cluster} AS cluster, {task} AS task) AS wanted \
                 CROSS JOIN LATERAL {} AS found \
                 WHERE found.cluster = wanted.cluster AND found.task = wanted.task \
                 AND found.token = {token} AND found.node_id = {node} AND found.incarnation = {incarnation})",
                seek_first(
                    "rota_assignments",
                    "a",
                    &["cluster", "task"],
                    "wanted.cluster, wanted.task",
                    "a.cluster, a.task, a.token, a.node_id, a.incarnation",
                    self.lock_share()
                ),
            ),
            Dialect::Mysql | Dialect::Sqlite => format!(
                "EXISTS (SELECT 1 FROM rota_assignments a \
                 WHERE a.cluster = {cluster} AND a.task = {task} AND a.token = {token} \
                 AND a.node_id = {node} AND a.incarnation = {incarnation}{lock})",
                lock = self.lock_share()
            ),
        }
    }

    /// `(a, b) IN ((?, ?), ...)` for `rows` tuples. MySQL/MariaDB do not use an index for
    /// row-value IN lists, but do for OR'ed equality groups.
    pub fn tuples_in(self, columns: &[&str], rows: usize) -> String {
        match self {
            Dialect::Mysql => {
                let group: Vec<String> = columns.iter().map(|c| format!("{c} = ?")).collect();
                format!("(({}))", vec![group.join(" AND "); rows].join(") OR ("))
            }
            _ => {
                let tuple = format!("({})", vec!["?"; columns.len()].join(", "));
                format!(
                    "({}) IN ({})",
                    columns.join(", "),
                    vec![tuple.as_str(); rows].join(", ")
                )
            }
        }
    }

    /// The join of a [`Dialect::json_table`] to a table that follows it: SQLite's
    /// `CROSS JOIN` keeps the rows as the outer loop (see `json_table`), an inner join
    /// elsewhere.
    fn rows_join(self) -> &'static str {
        match self {
            Dialect::Sqlite => "CROSS JOIN",
            Dialect::Postgres | Dialect::Mysql => "JOIN",
        }
    }

    /// Fills `{now}`, `{insert_ignore}`, `{on_conflict_nothing}`, `{for_update}`,
    /// `{lock_share}`, `{lock_share_registration}`, `{rows_join}` and turns `?` into `$1, $2,
    /// ...` for PostgreSQL.
    /// Statements never contain `?` inside literals.
    pub fn prepare(self, sql: &str) -> String {
        let (ins, conflict) = self.insert_ignore();
        let filled = sql
            .replace("{rows_join}", self.rows_join())
            .replace("{now}", self.now())
            .replace("{insert_ignore}", ins)
            .replace("{on_conflict_nothing}", conflict)
            .replace("{for_update}", self.for_update())
            .replace("{lock_share}", self.lock_share())
            .replace("{lock_share_registration}", self.lock_share_registration());
        if self != Dialect::Postgres {
            return filled;
        }
        let mut out = String::with_capacity(filled.len() + 16);
        let mut n = 0;
        for c in filled.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::{json_rows, Dialect, JsonType};

    #[test]
    fn tuple_lists() {
        assert_eq!(
            Dialect::Postgres.tuples_in(&["a", "b"], 2),
            "(a, b) IN ((?, ?), (?, ?))"
        );
        assert_eq!(
            Dialect::Mysql.tuples_in(&["a", "b"], 2),
            "((a = ? AND b = ?) OR (a = ? AND b = ?))"
        );
    }

    #[test]
    fn keyed_updates_seek_each_row_on_postgres_and_keep_the_marks_in_order() {
        use super::KeyedUpdate;
        let update = KeyedUpdate {
            table: "t",
            alias: "f",
            rows: "R",
            key: &[("cluster", "?"), ("task", "c.task"), ("at", "c.at")],
            set: "x = c.x",
            checks: &[("token", "c.token")],
            cond: "f.y = ?",
        };
        assert_eq!(
            Dialect::Postgres.update_keyed(update),
            "UPDATE t AS f SET x = c.x FROM R CROSS JOIN (SELECT ? AS value) AS first \
             CROSS JOIN LATERAL (SELECT seek.ctid AS row_id, seek.cluster, seek.task, seek.at, \
             c.token AS check0 FROM t AS seek \
             WHERE (seek.cluster, seek.task, seek.at) >= (first.value, c.task, c.at) \
             ORDER BY seek.cluster, seek.task, seek.at LIMIT 1) AS keyed \
             WHERE f.ctid = keyed.row_id AND keyed.cluster = first.value AND keyed.task = c.task \
             AND keyed.at = c.at AND f.token = keyed.check0 AND f.y = ?"
        );
        let matched = "f.cluster = ? AND f.task = c.task AND f.at = c.at AND f.token = c.token";
        assert_eq!(
            Dialect::Sqlite.update_keyed(update),
            format!("UPDATE t AS f SET x = c.x FROM R WHERE {matched} AND f.y = ?")
        );
        assert_eq!(
            Dialect::Mysql.update_keyed(KeyedUpdate { cond: "", ..update }),
            format!("UPDATE t AS f JOIN R ON 1 = 1 SET x = c.x WHERE {matched}")
        );
    }

    #[test]
    fn tables_of_rows_in_one_json_parameter() {
        let columns = [("a", JsonType::Text), ("b", JsonType::Int)];
        assert_eq!(
            Dialect::Postgres.json_table(&columns),
            "json_to_recordset(CAST(? AS json)) AS c(a text, b bigint)"
        );
        assert_eq!(
            Dialect::Sqlite.json_table(&columns),
            "(SELECT json_extract(value, '$.a') AS a, json_extract(value, '$.b') AS b \
             FROM json_each(?) ORDER BY key) c"
        );
        assert_eq!(
            Dialect::Mysql.json_table(&columns),
            "JSON_TABLE(?, '$[*]' COLUMNS (a MEDIUMTEXT PATH '$.a', b BIGINT PATH '$.b')) AS c"
        );
        assert_eq!(
            json_rows([serde_json::json!({"a": "x'y", "b": 1})]),
            r#"[{"a":"x'y","b":1}]"#
        );
    }

    #[test]
    fn placeholders_and_fragments() {
        let sql = "{insert_ignore} t (a, b) VALUES (?, {now}){on_conflict_nothing}";
        assert_eq!(
            Dialect::Postgres.prepare(sql),
            "INSERT INTO t (a, b) VALUES ($1, CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)) ON CONFLICT DO NOTHING"
        );
        assert!(Dialect::Sqlite
            .prepare(sql)
            .starts_with("INSERT OR IGNORE INTO t (a, b) VALUES (?, CAST((julianday"));
        assert!(Dialect::Mysql
            .prepare(sql)
            .starts_with("INSERT IGNORE INTO t (a, b) VALUES (?, CAST(UNIX_TIMESTAMP"));
    }
}
