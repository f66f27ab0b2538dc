//! Placement in SQL: `rota_assignments`, written by the leader in one transaction that
//! checks its epoch, each change of owner with a higher token.

use super::*;
use dialect::{json_rows, JsonType, KeyedUpdate};
use serde_json::json;

#[async_trait]
impl PlacementStore for SqlStore {
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
        // One statement per thousand moves, whatever their targets: the rows (each task, the
        // token the leader saw, its new owner or why it has none) travel as one JSON
        // parameter. One UPDATE per target made a leave among 100 nodes 99 statements, each
        // of its own size and so planned anew: 0.7 s of a 2 s budget. Any token mismatch
        // rolls everything back.
        let (mut moves, inserts): (Vec<&AssignmentChange>, Vec<&AssignmentChange>) =
            changes.iter().partition(|c| c.expected_token.is_some());
        // In the order claims lock them (see `fires::in_lock_order`).
        moves.sort_by(|a, b| a.task.cmp(&b.task));
        // Named apart from the table's columns: MySQL's joined UPDATE would find them
        // ambiguous in SET.
        let rows = self.dialect.json_table(&[
            ("task", JsonType::Text),
            ("seen", JsonType::Int),
            ("owner", JsonType::Text),
            ("inc", JsonType::Int),
            ("why", JsonType::Text),
            ("ep", JsonType::Int),
            ("ver", JsonType::Int),
        ]);
        let update = self.dialect.update_keyed(KeyedUpdate {
            table: "rota_assignments",
            alias: "a",
            rows: &rows,
            key: &[("cluster", "?"), ("task", "c.task")],
            // The first time a task gets an owner is its placement (see `placed_at_ms`).
            set: "node_id = c.owner, incarnation = c.inc, token = a.token + 1, epoch = c.ep, \
             assigned_at = {now}, reason = c.why, version = c.ver, \
             placed_at = CASE WHEN c.owner IS NOT NULL AND a.placed_at = 0 THEN {now} \
             ELSE a.placed_at END",
            checks: &[("token", "c.seen")],
            cond: "",
        });
        for chunk in moves.chunks(BATCH_LIMIT) {
            let update = self.sql(&update);
            let json = json_rows(chunk.iter().map(|c| {
                json!({
                    "task": c.task,
                    "seen": c.expected_token,
                    "owner": c.owner.as_ref().map(|(n, _)| n),
                    "inc": c.owner.as_ref().map(|(_, i)| i),
                    "why": c.reason,
                    "ep": epoch,
                    "ver": version,
                })
            }));
            let done = self
                .rows_query(&update)
                .bind(&json)
                .bind(&leader.cluster)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            if done.rows_affected() != chunk.len() as u64 {
                return Ok(LeaderWrite::Stale); // the dropped transaction rolls back
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
            let mut q = batch_query(&sql, chunk.len());
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
}
