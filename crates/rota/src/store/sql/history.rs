//! The history in SQL: reading recent fires, and the purge of old rows.

use super::items::ITEM_INSTANT;
use super::*;

#[async_trait]
impl HistoryStore for SqlStore {
    async fn history(
        &self,
        cluster: &str,
        task: Option<&str>,
        limit: i64,
    ) -> Result<Vec<FireRecord>> {
        let filter = if task.is_some() { " AND task = ?" } else { "" };
        let sql = self.sql(&format!(
            "SELECT {FIRE_COLUMNS} FROM rota_fires WHERE cluster = ? AND slot = ''{filter} ORDER BY instant DESC, task LIMIT ?"
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
        rows.iter().map(fire_record).collect()
    }

    async fn fire(&self, cluster: &str, task: &str, instant_ms: i64) -> Result<Option<FireRecord>> {
        let sql = self.sql(&format!(
            "SELECT {FIRE_COLUMNS} FROM rota_fires WHERE cluster = ? AND task = ? AND instant = ? AND slot = ''"
        ));
        let row = sqlx::query(&sql)
            .bind(cluster)
            .bind(task)
            .bind(instant_ms)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(fire_record).transpose()
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
        // Declared sets that no registration names, unused since well before the cut-off
        // (`SET_PURGE_MARGIN_MS`: a join naming one may have found it just now).
        let sql = self.sql(
            "DELETE FROM rota_declared_sets WHERE cluster = ? AND used_at < ? AND digest NOT IN \
             (SELECT digest FROM rota_declarations WHERE cluster = ? AND digest IS NOT NULL)",
        );
        sqlx::query(&sql)
            .bind(cluster)
            .bind(before_ms - SET_PURGE_MARGIN_MS)
            .bind(cluster)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(fires.rows_affected() + items.rows_affected())
    }
}

/// The columns of a fire's record, as [`fire_record`] reads them.
const FIRE_COLUMNS: &str =
    "task, instant, node_id, token, attempt, outcome, started_at, finished_at, message";

fn fire_record(r: &sqlx::any::AnyRow) -> Result<FireRecord> {
    let outcome: String = r.try_get("outcome").map_err(unavailable)?;
    Ok(FireRecord {
        task: r.try_get("task").map_err(unavailable)?,
        instant_ms: r.try_get("instant").map_err(unavailable)?,
        node: r.try_get("node_id").map_err(unavailable)?,
        token: r.try_get("token").map_err(unavailable)?,
        attempt: r.try_get("attempt").map_err(unavailable)?,
        outcome: Outcome::parse(&outcome)
            .ok_or_else(|| Error::Store(format!("unknown outcome `{outcome}` in rota_fires")))?,
        started_at_ms: r.try_get("started_at").map_err(unavailable)?,
        finished_at_ms: r.try_get("finished_at").map_err(unavailable)?,
        message: text(r, "message")?,
    })
}
