//! The command log on ZooKeeper: `commands/<seq>` created in the multi-op that takes the
//! generation, and `acks/<seq>/<node>`.

use super::*;

/// `acks/<seq>/<node>`: the time is the znode's `mtime`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct AckData {
    incarnation: i64,
    state: AckState,
    message: String,
}

impl ZkStore {
    /// Adds to `w` the append of a command that takes the cluster's next generation as its
    /// sequence number (returned); the multi-op fails if another write takes it first.
    pub(super) async fn add_command(
        &self,
        z: &zk::Client,
        w: &mut zk::MultiWriter<'_>,
        base: &str,
        body: &str,
    ) -> Result<i64> {
        self.read();
        let gstat = z
            .check_stat(&format!("{base}/generation"))
            .await
            .map_err(unavailable)?
            .ok_or_else(|| unavailable("the cluster's generation znode is missing"))?;
        let seq = i64::from(gstat.version) + 1;
        w.add_create(
            &format!("{base}/commands/{seq:020}"),
            body.as_bytes(),
            &persistent(),
        )
        .map_err(unavailable)?;
        w.add_set_data(&format!("{base}/generation"), b"", Some(gstat.version))
            .map_err(unavailable)?;
        Ok(seq)
    }
}

#[async_trait]
impl CommandStore for ZkStore {
    async fn lead_commands(
        &self,
        leader: &Member,
        epoch: i64,
        acks: &[Ack],
        command: Option<&str>,
    ) -> Result<LeaderWrite> {
        let z = self.zk().await?;
        let cluster = &leader.cluster;
        self.ensure_cluster(&z, cluster).await?;
        let base = Self::base(cluster);
        let mut dirs = vec![format!("{base}/commands"), format!("{base}/acks")];
        dirs.extend(acks.iter().map(|a| format!("{base}/acks/{:020}", a.seq)));
        self.mkdirs(&z, &dirs).await?;
        // One multi-op checked against the leader znode's version read with the judgement:
        // a takeover in between fails it. Retried when another write took the generation or
        // an acknowledgement appeared or changed meanwhile.
        loop {
            let Some(fence) = self.leader_fence(&z, leader, epoch).await? else {
                return Ok(LeaderWrite::Deposed);
            };
            let mut w = z.new_multi_writer();
            fence.check(&mut w, &base, &leader.node)?;
            for ack in acks {
                let path = format!("{base}/acks/{:020}/{}", ack.seq, ack.node);
                let data = json(&AckData {
                    incarnation: ack.incarnation,
                    state: ack.state,
                    message: ack.message.clone(),
                });
                self.read();
                match z.check_stat(&path).await.map_err(unavailable)? {
                    Some(stat) => w.add_set_data(&path, &data, Some(stat.version)),
                    None => w.add_create(&path, &data, &persistent()),
                }
                .map_err(unavailable)?;
            }
            if let Some(body) = command {
                self.add_command(&z, &mut w, &base, body).await?;
            }
            self.wrote();
            match w.commit().await {
                Ok(_) => return Ok(LeaderWrite::Written),
                Err(e) if condition_failed(&e).is_some() => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    async fn append_command(&self, cluster: &str, body: &str) -> Result<(i64, i64)> {
        let z = self.zk().await?;
        self.ensure_cluster(&z, cluster).await?;
        let base = Self::base(cluster);
        self.mkdirs(&z, &[format!("{base}/commands"), format!("{base}/acks")])
            .await?;
        loop {
            let mut w = z.new_multi_writer();
            let seq = self.add_command(&z, &mut w, &base, body).await?;
            self.wrote();
            match w.commit().await {
                Ok(results) => {
                    let issued_at = results
                        .into_iter()
                        .find_map(|r| match r {
                            zk::MultiWriteResult::SetData { stat } => Some(stat.mtime),
                            _ => None,
                        })
                        .ok_or_else(|| unavailable("the command's multi-op returned no stat"))?;
                    return Ok((seq, issued_at));
                }
                // Another change took this generation first: take the next one.
                Err(e) if condition_failed(&e).is_some() => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    async fn commands(&self, cluster: &str, after: i64, limit: i64) -> Result<Vec<CommandRecord>> {
        let z = self.zk().await?;
        let dir = format!("{}/commands", Self::base(cluster));
        let mut seqs: Vec<i64> = self
            .children(&z, &dir)
            .await?
            .iter()
            .filter_map(|c| c.parse::<i64>().ok())
            .filter(|seq| *seq > after)
            .collect();
        seqs.sort_unstable();
        seqs.truncate(usize::try_from(limit.max(0)).unwrap_or(usize::MAX));
        // Issued together: the client pipelines them on the session.
        let reads: Vec<_> = seqs
            .iter()
            .map(|seq| z.get_data(&format!("{dir}/{seq:020}")))
            .collect();
        let mut out = Vec::with_capacity(seqs.len());
        for (seq, read) in seqs.into_iter().zip(reads) {
            self.read();
            let (bytes, stat) = read.await.map_err(unavailable)?;
            out.push(CommandRecord {
                seq,
                issued_at_ms: stat.ctime,
                body: String::from_utf8(bytes).map_err(|e| corrupt("command", e))?,
            });
        }
        Ok(out)
    }

    async fn ack_command(&self, cluster: &str, ack: &Ack) -> Result<()> {
        let z = self.zk().await?;
        let dir = format!("{}/acks/{:020}", Self::base(cluster), ack.seq);
        let path = format!("{dir}/{}", ack.node);
        let data = json(&AckData {
            incarnation: ack.incarnation,
            state: ack.state,
            message: ack.message.clone(),
        });
        loop {
            self.wrote();
            match z.set_data(&path, &data, None).await {
                Ok(_) => return Ok(()),
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(unavailable(e)),
            }
            self.mkdirs(&z, std::slice::from_ref(&dir)).await?;
            self.wrote();
            match z.create(&path, &data, &persistent()).await {
                Ok(_) => return Ok(()),
                Err(zk::Error::NodeExists) => continue, // written meanwhile: replace it
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    async fn command_acks(&self, cluster: &str, filter: AckFilter<'_>) -> Result<Vec<Ack>> {
        let z = self.zk().await?;
        let acks = format!("{}/acks", Self::base(cluster));
        let mut wanted: Vec<(i64, String)> = Vec::new();
        match filter {
            AckFilter::Commands(seqs) => {
                let lists: Vec<_> = seqs
                    .iter()
                    .map(|seq| z.list_children(&format!("{acks}/{seq:020}")))
                    .collect();
                for (seq, list) in seqs.iter().zip(lists) {
                    self.read();
                    match list.await {
                        Ok(nodes) => wanted.extend(nodes.into_iter().map(|n| (*seq, n))),
                        Err(zk::Error::NoNode) => {}
                        Err(e) => return Err(unavailable(e)),
                    }
                }
            }
            AckFilter::Node(node) => {
                for seq in self.children(&z, &acks).await? {
                    if let Ok(seq) = seq.parse::<i64>() {
                        wanted.push((seq, node.to_string()));
                    }
                }
            }
        }
        wanted.sort();
        let reads: Vec<_> = wanted
            .iter()
            .map(|(seq, node)| z.get_data(&format!("{acks}/{seq:020}/{node}")))
            .collect();
        let mut out = Vec::new();
        for ((seq, node), read) in wanted.into_iter().zip(reads) {
            self.read();
            let (bytes, stat) = match read.await {
                Ok(v) => v,
                Err(zk::Error::NoNode) => continue,
                Err(e) => return Err(unavailable(e)),
            };
            let a: AckData = parse("command acknowledgement", &bytes)?;
            out.push(Ack {
                seq,
                node,
                incarnation: a.incarnation,
                state: a.state,
                message: a.message,
                at_ms: stat.mtime,
            });
        }
        Ok(out)
    }
}
