//! Membership and leadership in SQL: `rota_nodes` (registrations, liveness judged by the
//! database's clock in the statement) with `rota_declarations` (what each declares: its
//! labels and the digest of its set in `rota_declared_sets`, stored once for identical
//! nodes), `rota_leader` (the holder and its epoch) and the generation in `rota_clusters`.

use super::*;

/// Leadership is given up by vacating the row, never deleting it: epochs keep increasing.
pub(super) const VACATE_LEADER: &str =
    "UPDATE rota_leader SET node_id = '', incarnation = 0 WHERE cluster = ? AND node_id = ? AND incarnation = ?";

/// A live registration, `alias` being the table's alias with its dot (or nothing): renewed
/// within its timeout by the store's clock, and its session not ended. Only a live
/// registration may claim, begin, renew or lead. Its begun work may run until
/// `heartbeat_at + timeout_ms` whether or not its session ended (see `SessionStore`).
pub(super) fn live(alias: &str) -> String {
    format!("{alias}heartbeat_at + {alias}timeout_ms >= {{now}} AND {alias}ended_at IS NULL")
}

fn node_columns() -> String {
    format!(
        "node_id, incarnation, joined_at, heartbeat_at, timeout_ms, leaving, host, process, \
         session_key, ended_at, guard, CASE WHEN {} THEN 1 ELSE 0 END AS alive",
        live("")
    )
}

impl SqlStore {
    /// Whether the registration `(node, incarnation)` is alive by store time.
    pub(super) async fn registration_alive(
        &self,
        conn: &mut sqlx::AnyConnection,
        cluster: &str,
        node: &str,
        incarnation: i64,
    ) -> Result<bool> {
        let sql = self.sql(&format!(
            "SELECT COUNT(*) FROM rota_nodes WHERE cluster = ? AND node_id = ? AND incarnation = ? AND {}",
            live("")
        ));
        let alive: i64 = sqlx::query_scalar(&sql)
            .bind(cluster)
            .bind(node)
            .bind(incarnation)
            .fetch_one(&mut *conn)
            .await
            .map_err(unavailable)?;
        Ok(alive > 0)
    }

    pub(super) fn node_from_row(row: &AnyRow) -> Result<NodeRecord> {
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
            session_key: row.try_get("session_key").map_err(unavailable)?,
            ended_at_ms: row.try_get("ended_at").map_err(unavailable)?,
            guard: text(row, "guard")?,
        })
    }

    /// Whether `leader` holds `epoch` and is alive, inside `tx`. The leader row is locked:
    /// a concurrent takeover waits for this transaction, or this check waits for the
    /// takeover and then fails (plain reads would not see it).
    pub(super) async fn leads(
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
}

#[async_trait]
impl MembershipStore for SqlStore {
    async fn join(&self, req: &JoinRequest) -> Result<JoinOutcome> {
        let m = &req.member;
        let (digest, set, own) = Registration::split(req);
        let declared = serde_json::to_string(&own).expect("declarations serialize");
        let mut tx = self.begin().await?;
        let sql = self.sql("{insert_ignore} rota_clusters (cluster, generation) VALUES (?, 0){on_conflict_nothing}");
        sqlx::query(&sql)
            .bind(&m.cluster)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        let sql = self.sql(&format!(
            "SELECT {} FROM rota_nodes WHERE cluster = ? AND node_id = ?{{for_update}}",
            node_columns()
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
            for statement in [
                "DELETE FROM rota_nodes WHERE cluster = ? AND node_id = ?",
                "DELETE FROM rota_declarations WHERE cluster = ? AND node_id = ?",
            ] {
                sqlx::query(&self.sql(statement))
                    .bind(&m.cluster)
                    .bind(&m.node)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
            }
        }
        // `declared` is empty here: what a rota of schema 5 still running in a rolling
        // upgrade reads (see `schema::VERSION`).
        let sql = self.sql(
            "INSERT INTO rota_nodes (cluster, node_id, incarnation, joined_at, heartbeat_at, timeout_ms, leaving, host, process, declared, session_key, guard) \
             VALUES (?, ?, ?, {now}, {now}, ?, 0, ?, ?, ?, ?, ?)",
        );
        sqlx::query(&sql)
            .bind(&m.cluster)
            .bind(&m.node)
            .bind(m.incarnation)
            .bind(req.timeout_ms)
            .bind(&req.host)
            .bind(&req.process)
            .bind(r#"{"tasks":[]}"#)
            .bind(req.session_key)
            .bind(&req.guard)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        // The set, once per cluster. Found, it is marked as used only when that mark is
        // old (see `SET_USE_REFRESH_MS`); else stored. It can be megabytes.
        let sql = self.sql(
            "SELECT used_at, {now} AS now_ms FROM rota_declared_sets WHERE cluster = ? AND digest = ?",
        );
        let found = sqlx::query(&sql)
            .bind(&m.cluster)
            .bind(&digest)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
        let stale = |row: &AnyRow| -> Result<bool> {
            let used_at: i64 = row.try_get("used_at").map_err(unavailable)?;
            let now: i64 = row.try_get("now_ms").map_err(unavailable)?;
            Ok(used_at < now - SET_USE_REFRESH_MS)
        };
        let stored = match &found {
            Some(row) if stale(row)? => {
                let sql = self.sql("UPDATE rota_declared_sets SET used_at = {now} WHERE cluster = ? AND digest = ?");
                let touched = sqlx::query(&sql)
                    .bind(&m.cluster)
                    .bind(&digest)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                touched.rows_affected() > 0
            }
            Some(_) => true,
            None => false,
        };
        if !stored {
            let sql = self.sql(
                "{insert_ignore} rota_declared_sets (cluster, digest, declared, used_at) VALUES (?, ?, ?, {now}){on_conflict_nothing}",
            );
            sqlx::query(&sql)
                .bind(&m.cluster)
                .bind(&digest)
                .bind(set)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        // Apart from the registration, whose heartbeats rewrite its row.
        let sql = self.sql(
            "INSERT INTO rota_declarations (cluster, node_id, incarnation, declared, digest) VALUES (?, ?, ?, ?, ?)",
        );
        sqlx::query(&sql)
            .bind(&m.cluster)
            .bind(&m.node)
            .bind(m.incarnation)
            .bind(declared)
            .bind(&digest)
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
        let sql = self.sql(&format!(
            "UPDATE rota_nodes SET heartbeat_at = {{now}} \
             WHERE cluster = ? AND node_id = ? AND incarnation = ? AND {} AND {{now}} <= ?",
            live("")
        ));
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
            "DELETE FROM rota_declarations WHERE cluster = ? AND node_id = ? AND incarnation = ?",
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
        let sql = self.sql(&format!(
            "SELECT {}, {{now}} AS now_ms FROM rota_nodes WHERE cluster = ? ORDER BY node_id",
            node_columns()
        ));
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

    async fn registrations_declared(
        &self,
        cluster: &str,
        only: Option<&[(String, i64)]>,
    ) -> Result<Vec<RegistrationDeclares>> {
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
            "SELECT node_id, incarnation, declared, digest FROM rota_declarations WHERE cluster = ?{filter} ORDER BY node_id"
        ));
        let mut q = batch_query(&sql, only.map_or(0, <[_]>::len)).bind(cluster);
        for (node, incarnation) in only.unwrap_or_default() {
            q = q.bind(node).bind(*incarnation);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                let declared = text(r, "declared")?.unwrap_or_default();
                let registration: Registration = serde_json::from_str(&declared).map_err(|e| {
                    Error::Store(format!("rota_declarations.declared is not valid JSON: {e}"))
                })?;
                Ok(registration.read(
                    r.try_get("node_id").map_err(unavailable)?,
                    r.try_get("incarnation").map_err(unavailable)?,
                    text(r, "digest")?,
                ))
            })
            .collect()
    }

    async fn declared_sets(
        &self,
        cluster: &str,
        digests: &[String],
    ) -> Result<HashMap<String, DeclaredSet>> {
        // Usually one set (identical nodes), at most a few: one statement each.
        let sql =
            self.sql("SELECT declared FROM rota_declared_sets WHERE cluster = ? AND digest = ?");
        let mut sets = HashMap::new();
        for digest in digests {
            let row = sqlx::query(&sql)
                .bind(cluster)
                .bind(digest)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
            if let Some(row) = row {
                let declared = text(&row, "declared")?.unwrap_or_default();
                let set: DeclaredSet = serde_json::from_str(&declared).map_err(|e| {
                    Error::Store(format!(
                        "rota_declared_sets.declared is not valid JSON: {e}"
                    ))
                })?;
                sets.insert(digest.clone(), set);
            }
        }
        Ok(sets)
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
        let sql = self.sql(&format!(
            "SELECT COUNT(*) FROM rota_nodes WHERE cluster = ? AND node_id = ? AND incarnation = ? \
             AND leaving = 0 AND {}",
            live("")
        ));
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
}
