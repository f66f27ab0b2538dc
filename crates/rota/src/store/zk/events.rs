//! The event journal on ZooKeeper: `events/<id>`.

use super::*;

/// `events/<id>`: one event of the journal (ids sort by time).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct EventData {
    at_ms: i64,
    kind: String,
    body: String,
}

#[async_trait]
impl EventStore for ZkStore {
    async fn record_event(&self, cluster: &str, event: &EventRecord) -> Result<()> {
        let z = self.zk().await?;
        let dir = format!("{}/events", Self::base(cluster));
        self.mkdirs(&z, std::slice::from_ref(&dir)).await?;
        let data = json(&EventData {
            at_ms: event.at_ms,
            kind: event.kind.clone(),
            body: event.body.clone(),
        });
        self.wrote();
        match z
            .create(&format!("{dir}/{}", event.id), &data, &persistent())
            .await
        {
            // Already recorded (by this node before, or by another): the same fact.
            Ok(_) | Err(zk::Error::NodeExists) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn events(&self, cluster: &str, limit: i64) -> Result<Vec<EventRecord>> {
        let z = self.zk().await?;
        let dir = format!("{}/events", Self::base(cluster));
        let mut ids = self.children(&z, &dir).await?;
        // Ids start with the time: the newest sort last.
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.truncate(usize::try_from(limit.max(0)).unwrap_or(usize::MAX));
        let reads: Vec<_> = ids
            .iter()
            .map(|id| z.get_data(&format!("{dir}/{id}")))
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for (id, read) in ids.into_iter().zip(reads) {
            self.read();
            let (bytes, _) = match read.await {
                Ok(v) => v,
                Err(zk::Error::NoNode) => continue, // purged meanwhile
                Err(e) => return Err(unavailable(e)),
            };
            let e: EventData = parse("event", &bytes)?;
            out.push(EventRecord {
                id,
                at_ms: e.at_ms,
                kind: e.kind,
                body: e.body,
            });
        }
        Ok(out)
    }
}
