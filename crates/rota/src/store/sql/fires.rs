//! Fires in SQL: each instant a row of `rota_fires`, inserted by the claim under the fence
//! (a share-locked read of the assignment and the registration in the same statement);
//! begin, finish and recovery of a row.

use super::*;
use dialect::{json_rows, JsonType, KeyedUpdate};
use serde_json::json;

/// What a finish's `SET` adds for `outcome`: a fire that never started its work keeps no
/// start time ([`Outcome::never_started`]).
pub(super) fn unstart(outcome: Outcome) -> &'static str {
    if outcome.never_started() {
        ", started_at = NULL"
    } else {
        ""
    }
}

/// The primary key of `rota_fires`, matched to the rows `c` of a batch of fires: the
/// cluster is a mark (see [`Dialect::update_keyed`]).
const FIRE_KEY: [(&str, &str); 4] = [
    ("cluster", "?"),
    ("task", "c.task"),
    ("instant", "c.instant"),
    ("slot", "''"),
];

/// What a batch's update checks of the record it found: the claimant's attempt.
const FIRE_ATTEMPT: [(&str, &str); 2] = [("token", "c.token"), ("attempt", "c.attempt")];

/// The rows of a batch in the order its statement locks them: by task, then instant. A
/// claim share-locks assignments and inserts fires while the leader's placement write
/// updates assignments (also by task): taken in one order, they wait for one another and
/// never deadlock. (In batch order they did, when a placement met the claims of a busy
/// node: PostgreSQL aborted one, and a placement write ran into its statement timeout.)
fn in_lock_order<T>(rows: &[T], key: impl Fn(&T) -> (&String, i64)) -> impl Iterator<Item = &T> {
    let mut sorted: Vec<&T> = rows.iter().collect();
    sorted.sort_by(|a, b| key(a).cmp(&key(b)));
    sorted.into_iter()
}

/// The fence every claim-like write checks (contract 2): the assignment of `task` names the
/// claimant `(node, incarnation)` with `token` ([`Dialect::assignment_fence`], which
/// share-locks it, so the fence serializes with a reassignment in flight), and the
/// claimant's registration is live by store time (renewed in time, its session not ended),
/// judged in the same statement. Each argument is a SQL expression: a column of the
/// statement, or a `?` bound in the order the text reads them: cluster, task, token, node,
/// incarnation for the assignment, then cluster, node, incarnation again for the
/// registration ([`bind_fence`] does it).
///
/// The registration is a test of its own: given as binds, it names no column of the row
/// being claimed, so PostgreSQL judges it once per statement (an init plan), not once per
/// row of a batch beside each assignment.
pub(super) fn fence(
    dialect: Dialect,
    cluster: &str,
    task: &str,
    token: &str,
    node: &str,
    incarnation: &str,
) -> String {
    format!(
        "{} AND EXISTS (SELECT 1 FROM rota_nodes n \
         WHERE n.cluster = {cluster} AND n.node_id = {node} AND n.incarnation = {incarnation} \
         AND {}{{lock_share_registration}})",
        dialect.assignment_fence(cluster, task, token, node, incarnation),
        super::membership::live("n.")
    )
}

/// [`fence`] with every part bound, by [`bind_fence`].
pub(super) fn bound_fence(dialect: Dialect) -> String {
    fence(dialect, "?", "?", "?", "?", "?")
}

/// Binds a [`bound_fence`]'s parts for claimant `m`, in the order its text reads them.
pub(super) fn bind_fence<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    m: &'q Member,
    task: &'q str,
    token: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    q.bind(&m.cluster)
        .bind(task)
        .bind(token)
        .bind(&m.node)
        .bind(m.incarnation)
        .bind(&m.cluster)
        .bind(&m.node)
        .bind(m.incarnation)
}

impl SqlStore {
    /// Claims every instant of `chunk` that passes the fence in one statement. PostgreSQL and
    /// SQLite return the rows they inserted; MySQL has no `RETURNING`, so the instants
    /// already recorded are read before. Only rows inserted here count as claimed.
    pub(super) async fn claim_chunk(
        &self,
        m: &Member,
        chunk: &[Claim],
    ) -> Result<Vec<ClaimOutcome>> {
        let returning = self.dialect.has_returning();
        let existing_before = if returning {
            Default::default()
        } else {
            self.recorded(&m.cluster, chunk).await?
        };
        let rows = self.dialect.json_table(&[
            ("task", JsonType::Text),
            ("instant", JsonType::Int),
            ("token", JsonType::Int),
            ("outcome", JsonType::Text),
            ("message", JsonType::Text),
            ("begin", JsonType::Int),
        ]);
        let sql = self.sql(&format!(
            "{{insert_ignore}} rota_fires (cluster, task, instant, slot, node_id, incarnation, token, attempt, outcome, started_at, finished_at, message) \
             SELECT ?, c.task, c.instant, '', ?, ?, c.token, 1, c.outcome, \
             CASE WHEN c.outcome = 'running' AND c.begin = 1 THEN {{now}} ELSE NULL END, \
             CASE WHEN c.outcome = 'running' THEN NULL ELSE {{now}} END, c.message \
             FROM {rows} WHERE {}{{on_conflict_nothing}}{}",
            fence(self.dialect, "?", "c.task", "c.token", "?", "?"),
            if returning { " RETURNING task, instant" } else { "" }
        ));
        let q = self
            .rows_query(&sql)
            .bind(&m.cluster)
            .bind(&m.node)
            .bind(m.incarnation)
            .bind(json_rows(
                in_lock_order(chunk, |c| (&c.task, c.instant_ms)).map(|c| {
                    json!({
                        "task": c.task,
                        "instant": c.instant_ms,
                        "token": c.token,
                        "outcome": c.outcome.as_str(),
                        "message": c.message,
                        "begin": i64::from(c.begin),
                    })
                }),
            ));
        // The fence's assignment part, then its registration part.
        let q = q.bind(&m.cluster).bind(&m.node).bind(m.incarnation);
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
    pub(super) async fn recorded(
        &self,
        cluster: &str,
        chunk: &[Claim],
    ) -> Result<HashMap<(String, i64), (String, i64, i64)>> {
        let rows = self
            .dialect
            .json_table(&[("task", JsonType::Text), ("instant", JsonType::Int)]);
        let sql = self.sql(&format!(
            "SELECT f.task, f.instant, f.node_id, f.incarnation, f.token FROM {rows} \
             {{rows_join}} rota_fires f ON f.cluster = ? AND f.task = c.task AND f.instant = c.instant \
             AND f.slot = ''"
        ));
        let q = self
            .rows_query(&sql)
            .bind(json_rows(
                chunk
                    .iter()
                    .map(|c| json!({"task": c.task, "instant": c.instant_ms})),
            ))
            .bind(cluster);
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

    /// Takes over the running record `(task, instant, slot)` at `(token, attempt)` =
    /// `record`, under the fence, as `how` says. Fires (empty slot) begin with
    /// `begin_fires`, so a fire claimed again has no start time; an item begins at once.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn recover_record(
        &self,
        m: &Member,
        task: &str,
        instant: i64,
        slot: &str,
        token: i64,
        record: (i64, i64),
        how: Recovery,
        note: Option<&str>,
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
            Recovery::AfterFailure => (
                "node_id = ?, incarnation = ?, token = ?, attempt = attempt + 1, started_at = NULL, \
                 message = ?"
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
            bound_fence(self.dialect)
        ));
        let mut query = sqlx::query(&sql);
        if how != Recovery::Abandon {
            query = query.bind(&m.node).bind(m.incarnation).bind(token);
        }
        if how == Recovery::AfterFailure {
            query = query.bind(note.unwrap_or_default());
        }
        let query = query
            .bind(&m.cluster)
            .bind(task)
            .bind(instant)
            .bind(slot)
            .bind(record.0)
            .bind(record.1);
        let done = bind_fence(query, m, task, token)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(if done.rows_affected() == 1 {
            ClaimOutcome::Claimed
        } else {
            ClaimOutcome::Fenced
        })
    }

    /// Begins the fires of `chunk` claimed by `m` in one statement; the ones it did not
    /// change are read back, since an earlier call whose reply was lost may have begun them.
    pub(super) async fn begin_chunk(&self, m: &Member, chunk: &[Begin]) -> Result<Vec<bool>> {
        let fence = fence(
            self.dialect,
            "f.cluster",
            "f.task",
            "f.token",
            "f.node_id",
            "f.incarnation",
        );
        let mine = "f.outcome = 'running' AND f.started_at IS NULL AND f.node_id = ? \
                    AND f.incarnation = ?";
        let rows = self.dialect.json_table(&[
            ("task", JsonType::Text),
            ("instant", JsonType::Int),
            ("token", JsonType::Int),
            ("attempt", JsonType::Int),
        ]);
        let sql = self.sql(&self.dialect.update_keyed(KeyedUpdate {
            table: "rota_fires",
            alias: "f",
            rows: &rows,
            key: &FIRE_KEY,
            set: "started_at = {now}",
            checks: &FIRE_ATTEMPT,
            cond: &format!("{mine} AND {fence}"),
        }));
        let json = json_rows(in_lock_order(chunk, |b| (&b.task, b.instant_ms)).map(|b| {
            json!({"task": b.task, "instant": b.instant_ms, "token": b.token, "attempt": b.attempt})
        }));
        let done = self
            .rows_query(&sql)
            .bind(&json)
            .bind(&m.cluster)
            .bind(&m.node)
            .bind(m.incarnation)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        if done.rows_affected() == chunk.len() as u64 {
            return Ok(vec![true; chunk.len()]);
        }
        let sql = self.sql(&format!(
            "SELECT f.task, f.instant, f.token, f.attempt FROM {rows} \
             {{rows_join}} rota_fires f ON f.cluster = ? AND f.task = c.task AND f.instant = c.instant \
             AND f.slot = '' AND f.outcome = 'running' AND f.started_at IS NOT NULL \
             AND f.node_id = ? AND f.incarnation = ?"
        ));
        let q = self
            .rows_query(&sql)
            .bind(&json)
            .bind(&m.cluster)
            .bind(&m.node)
            .bind(m.incarnation);
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

/// The fires recorded as running, with their node's liveness by store time; the caller
/// adds the task filter and the order.
fn running_fires() -> String {
    format!(
        "SELECT f.task, f.instant, f.node_id, f.incarnation, f.token, f.attempt, \
         CASE WHEN f.started_at IS NULL THEN 0 ELSE 1 END AS begun, \
         CASE WHEN n.node_id IS NOT NULL AND {} THEN 1 ELSE 0 END AS alive \
         FROM rota_fires f LEFT JOIN rota_nodes n \
         ON n.cluster = f.cluster AND n.node_id = f.node_id AND n.incarnation = f.incarnation \
         WHERE f.cluster = ? AND f.outcome = 'running' AND f.slot = ''",
        super::membership::live("n.")
    )
}

/// The latest instant of the task `task` (an expression: a mark, or a column of an outer
/// row) with a record, or none: a seek from the end of the task's rows in the primary key.
/// `MAX(instant) ... GROUP BY task` read every record of the task instead: a takeover of 20
/// tasks with ten minutes of history at 10 fires a second each took 60 to 180 ms, on the
/// failover's path, and a day's retention would make it seconds.
fn last_instant_of(task: &str) -> String {
    format!(
        "SELECT f.instant FROM rota_fires f WHERE f.cluster = ? AND f.task = {task} AND f.slot = '' \
         ORDER BY f.instant DESC LIMIT 1"
    )
}

fn running_fire(r: &sqlx::any::AnyRow) -> Result<RunningFire> {
    Ok(RunningFire {
        instant_ms: r.try_get("instant").map_err(unavailable)?,
        node: r.try_get("node_id").map_err(unavailable)?,
        incarnation: r.try_get("incarnation").map_err(unavailable)?,
        token: r.try_get("token").map_err(unavailable)?,
        attempt: r.try_get("attempt").map_err(unavailable)?,
        node_alive: r.try_get::<i64, _>("alive").map_err(unavailable)? != 0,
        begun: r.try_get::<i64, _>("begun").map_err(unavailable)? != 0,
    })
}

#[async_trait]
impl FireStore for SqlStore {
    async fn claim(&self, c: &Claim) -> Result<ClaimOutcome> {
        let m = &c.member;
        // A claimed fire gets its start time when it begins (`begin_fires`, or this write
        // with `begin`); an instant recorded as not started has an end.
        let (started, finished) = match (c.outcome, c.begin) {
            (Outcome::Running, true) => ("{now}", "NULL"),
            (Outcome::Running, false) => ("NULL", "NULL"),
            _ => ("NULL", "{now}"),
        };
        let sql = self.sql(&format!(
            "{{insert_ignore}} rota_fires (cluster, task, instant, slot, node_id, incarnation, token, attempt, outcome, started_at, finished_at, message) \
             SELECT ?, ?, ?, '', ?, ?, ?, 1, ?, {started}, {finished}, ? FROM rota_meta WHERE name = 'schema_version' AND {}{{on_conflict_nothing}}",
            bound_fence(self.dialect)
        ));
        let query = sqlx::query(&sql)
            .bind(&m.cluster)
            .bind(&c.task)
            .bind(c.instant_ms)
            .bind(&m.node)
            .bind(m.incarnation)
            .bind(c.token)
            .bind(c.outcome.as_str())
            .bind(c.message.clone());
        let done = bind_fence(query, m, &c.task, c.token)
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
        // One statement per kind of outcome (a fire that never started keeps no start time).
        let rows = self.dialect.json_table(&[
            ("task", JsonType::Text),
            ("instant", JsonType::Int),
            ("token", JsonType::Int),
            ("attempt", JsonType::Int),
            ("ended", JsonType::Text),
            ("note", JsonType::Text),
        ]);
        for never_started in [false, true] {
            let group: Vec<&Finish> = finishes
                .iter()
                .filter(|f| f.outcome.never_started() == never_started)
                .collect();
            let Some(first) = group.first() else {
                continue;
            };
            let unstart = unstart(first.outcome);
            for chunk in group.chunks(BATCH_LIMIT) {
                let sql = self.sql(&self.dialect.update_keyed(KeyedUpdate {
                    table: "rota_fires",
                    alias: "f",
                    rows: &rows,
                    key: &FIRE_KEY,
                    set: &format!(
                        "outcome = c.ended, finished_at = {{now}}, message = c.note{unstart}"
                    ),
                    checks: &FIRE_ATTEMPT,
                    cond: "f.outcome = 'running'",
                }));
                let json = json_rows(chunk.iter().map(|f| {
                    json!({
                        "task": f.task,
                        "instant": f.instant_ms,
                        "token": f.token,
                        "attempt": f.attempt,
                        "ended": f.outcome.as_str(),
                        "note": f.message,
                    })
                }));
                self.rows_query(&sql)
                    .bind(json)
                    .bind(cluster)
                    .execute(&self.pool)
                    .await
                    .map_err(unavailable)?;
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
        let sql = self.sql(&last_instant_of("?"));
        sqlx::query_scalar(&sql)
            .bind(cluster)
            .bind(task)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)
    }

    async fn running_fires(&self, cluster: &str, task: &str) -> Result<Vec<RunningFire>> {
        let sql = self.sql(&format!(
            "{} AND f.task = ? ORDER BY f.instant",
            running_fires()
        ));
        let rows = sqlx::query(&sql)
            .bind(cluster)
            .bind(task)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(running_fire).collect()
    }

    async fn takeovers(&self, cluster: &str, tasks: &[String]) -> Result<Vec<Takeover>> {
        let mut by_task: HashMap<String, Takeover> = HashMap::with_capacity(tasks.len());
        for chunk in tasks.chunks(BATCH_LIMIT) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = self.sql(&format!(
                "{} AND f.task IN ({marks}) ORDER BY f.task, f.instant",
                running_fires()
            ));
            let mut q = batch_query(&sql, chunk.len()).bind(cluster);
            for task in chunk {
                q = q.bind(task);
            }
            for r in q.fetch_all(&self.pool).await.map_err(unavailable)? {
                let task: String = r.try_get("task").map_err(unavailable)?;
                let fire = running_fire(&r)?;
                by_task.entry(task).or_default().running.push(fire);
            }
            let sql = self.sql(&format!(
                "SELECT c.task, ({}) AS last FROM {}",
                last_instant_of("c.task"),
                self.dialect.json_table(&[("task", JsonType::Text)])
            ));
            let rows = json_rows(chunk.iter().map(|task| json!({ "task": task })));
            let q = sqlx::query(&sql).bind(cluster).bind(rows);
            for r in q.fetch_all(&self.pool).await.map_err(unavailable)? {
                // MySQL types the JSON table's text column as a blob.
                let task = text(&r, "task")?.unwrap_or_default();
                let last: Option<i64> = r.try_get("last").map_err(unavailable)?;
                by_task.entry(task).or_default().last_instant = last;
            }
        }
        Ok(tasks
            .iter()
            .map(|t| by_task.get(t).cloned().unwrap_or_default())
            .collect())
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
        self.recover_record(m, task, fire.instant_ms, "", token, record, how, None)
            .await
    }

    async fn retry_fire(&self, m: &Member, fire: &Begin, message: &str) -> Result<ClaimOutcome> {
        let record = (fire.token, fire.attempt);
        self.recover_record(
            m,
            &fire.task,
            fire.instant_ms,
            "",
            fire.token,
            record,
            Recovery::AfterFailure,
            Some(message),
        )
        .await
    }
}
