//! The command log in SQL: `rota_commands`, numbered by the cluster's generation, and
//! `rota_acks`.

use super::*;

impl SqlStore {
    /// Appends a command inside `tx`: `(seq, issued_at_ms)`.
    pub(super) async fn append_in(
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
    pub(super) async fn ack_in(
        &self,
        tx: &mut sqlx::AnyConnection,
        cluster: &str,
        ack: &Ack,
    ) -> Result<()> {
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
}

#[async_trait]
impl CommandStore for SqlStore {
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
                    let mut q = batch_query(&sql, chunk.len()).bind(cluster);
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
