//! The event journal in SQL: `rota_events`.

use super::*;

#[async_trait]
impl EventStore for SqlStore {
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
}
