//! Items in SQL: a service's units of work, rows of `rota_fires` keyed by their slot.

use super::fires::{bind_fence, bound_fence};
use super::*;

/// Items of services are kept in `rota_fires` at this instant, keyed by their `slot`;
/// fires have real instants and an empty slot.
pub(super) const ITEM_INSTANT: i64 = 0;

#[async_trait]
impl ItemStore for SqlStore {
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
            bound_fence(self.dialect)
        ));
        let query = sqlx::query(&sql)
            .bind(&m.cluster)
            .bind(service)
            .bind(item)
            .bind(&m.node)
            .bind(m.incarnation)
            .bind(token);
        let done = bind_fence(query, m, service, token)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        if done.rows_affected() == 1 {
            return Ok(ItemClaim::Claimed);
        }
        let sql = self.sql(&format!(
            "SELECT f.node_id, f.incarnation, f.token, f.attempt, f.outcome, \
             CASE WHEN n.node_id IS NOT NULL AND {} THEN 1 ELSE 0 END AS alive \
             FROM rota_fires f LEFT JOIN rota_nodes n \
             ON n.cluster = f.cluster AND n.node_id = f.node_id AND n.incarnation = f.incarnation \
             WHERE f.cluster = ? AND f.task = ? AND f.instant = {ITEM_INSTANT} AND f.slot = ?",
            super::membership::live("n.")
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
        self.recover_record(m, service, ITEM_INSTANT, item, token, record, how, None)
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
}
