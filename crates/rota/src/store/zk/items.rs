//! Items on ZooKeeper: a service's units of work, recorded like fires under
//! `fires/<service>/i-<hex key>`.

use super::fires::FireData;
use super::*;

pub(super) fn item_key(item: &str) -> String {
    let hex: String = item.bytes().map(|b| format!("{b:02x}")).collect();
    format!("i-{hex}")
}

#[async_trait]
impl ItemStore for ZkStore {
    async fn claim_item(
        &self,
        m: &Member,
        service: &str,
        token: i64,
        item: &str,
    ) -> Result<ItemClaim> {
        let z = self.zk().await?;
        let now = self.server_now(&z, &m.cluster).await?;
        let key = item_key(item);
        let data = FireData {
            instant: 0,
            node: m.node.clone(),
            incarnation: m.incarnation,
            token,
            attempt: 1,
            outcome: "running".into(),
            started_at: Some(now),
            finished_at: None,
            message: None,
            alive_until: None,
        };
        if self
            .create_record(m, service, &key, token, &data, true, now)
            .await?
            == Some(true)
        {
            return Ok(ItemClaim::Claimed);
        }
        let Some((f, _)) = self.fire(&z, &m.cluster, service, &key).await? else {
            return Ok(ItemClaim::Fenced);
        };
        let alive = self
            .registration_alive(&z, &m.cluster, &f.node, f.incarnation, now)
            .await?
            .is_some();
        Ok(ItemClaim::Recorded(ItemRecord {
            node: f.node,
            incarnation: f.incarnation,
            token: f.token,
            attempt: f.attempt,
            outcome: Outcome::parse(&f.outcome).ok_or_else(|| corrupt("item", &f.outcome))?,
            node_alive: alive,
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
        self.recover_record(
            m,
            service,
            &item_key(item),
            token,
            (record.token, record.attempt),
            if record.outcome == Outcome::Released {
                Recovery::Reclaim
            } else {
                Recovery::of(true, retry) // an item begins with its claim
            },
            None,
        )
        .await
    }

    async fn finish_item(&self, cluster: &str, ended: &ItemEnd<'_>) -> Result<()> {
        self.finish_record(
            cluster,
            ended.service,
            &item_key(ended.item),
            ended.token,
            ended.attempt,
            ended.outcome,
            ended.message,
        )
        .await
    }
}
