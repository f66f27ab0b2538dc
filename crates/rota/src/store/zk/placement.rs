//! Placement on ZooKeeper: `assign/<task>`, written by the leader in multi-ops that check
//! the `leader` znode, and the change log nodes read to follow them.

use super::*;

/// Judgements of the leader's liveness one multi-op of a placement write tries, when only
/// the leader's renewals (every `heartbeat`) move its registration meanwhile.
const FENCE_ATTEMPTS: usize = 5;

/// Change-log entries kept before the oldest half is pruned.
pub(super) const CHANGE_LOG_KEEP: usize = 256;

/// Rows read by one multi-read request: an assignment is about 200 bytes, so an answer
/// stays far below the server's 1 MB packet limit.
const READS_PER_MULTI: usize = 500;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct AssignData {
    pub(super) node: Option<String>,
    pub(super) incarnation: Option<i64>,
    pub(super) token: i64,
    pub(super) epoch: i64,
    pub(super) placed_at: i64,
    pub(super) reason: Option<String>,
    pub(super) version: i64,
}

impl AssignData {
    /// Does this assignment give the task to `m` under `token`? The fence every write of a
    /// fire checks before its multi-op (which then checks the version read).
    pub(super) fn names(&self, m: &Member, token: i64) -> bool {
        self.token == token
            && self.node.as_deref() == Some(m.node.as_str())
            && self.incarnation == Some(m.incarnation)
    }
}

impl ZkStore {
    pub(super) fn assignment<'z>(
        &self,
        z: &'z zk::Client,
        cluster: &str,
        task: &str,
    ) -> impl std::future::Future<Output = Result<Option<(AssignData, zk::Stat)>>> + 'z {
        let path = format!("{}/assign/{task}", Self::base(cluster));
        self.get_json(z, &path, "assignment")
    }

    /// The tasks whose assignments changed after `generation`, from the change log; `None`
    /// when the log no longer reaches back that far (read everything then).
    pub(super) async fn changed_since(
        &self,
        z: &zk::Client,
        cluster: &str,
        generation: i64,
    ) -> Result<Option<Vec<String>>> {
        if generation < 0 {
            return Ok(None);
        }
        let path = format!("{}/changes", Self::base(cluster));
        let entries: Vec<String> = self
            .children(z, &path)
            .await?
            .into_iter()
            .filter(|e| e.parse::<i64>().is_ok_and(|g| g > generation))
            .collect();
        let reads: Vec<_> = entries
            .iter()
            .map(|e| z.get_data(&format!("{path}/{e}")))
            .collect();
        let mut tasks = Vec::new();
        for read in reads {
            self.read();
            match read.await {
                Ok((bytes, _)) => tasks.extend(parse::<Vec<String>>("change log", &bytes)?),
                // Pruned meanwhile: the log no longer covers this generation.
                Err(zk::Error::NoNode) => return Ok(None),
                Err(e) => return Err(unavailable(e)),
            }
        }
        // Checked after reading: pruned before or while we read, entries we needed may be
        // gone (one read covers both cases).
        self.read();
        let pruned_below: i64 = match z.get_data(&path).await {
            Ok((bytes, _)) => String::from_utf8_lossy(&bytes).trim().parse().unwrap_or(0),
            Err(zk::Error::NoNode) => return Ok(None),
            Err(e) => return Err(unavailable(e)),
        };
        Ok((generation >= pruned_below).then_some(tasks))
    }

    /// Keeps the change log short: past `CHANGE_LOG_KEEP` entries, records how far it reaches
    /// back (readers from before that read everything), then drops the oldest half.
    pub(super) async fn prune_changes(&self, z: &zk::Client, cluster: &str) -> Result<()> {
        let path = format!("{}/changes", Self::base(cluster));
        let mut gens: Vec<i64> = self
            .children(z, &path)
            .await?
            .iter()
            .filter_map(|e| e.parse().ok())
            .collect();
        if gens.len() <= CHANGE_LOG_KEEP {
            return Ok(());
        }
        gens.sort_unstable();
        let drop: Vec<i64> = gens[..gens.len() / 2].to_vec();
        let below = drop.last().copied().unwrap_or(0) + 1;
        self.wrote();
        z.set_data(&path, below.to_string().as_bytes(), None)
            .await
            .map_err(unavailable)?;
        for g in drop {
            let _ = z.delete(&format!("{path}/{g:020}"), None).await;
        }
        Ok(())
    }
}

#[async_trait]
impl PlacementStore for ZkStore {
    async fn assignments(&self, cluster: &str) -> Result<Vec<Assignment>> {
        self.assignments_since(cluster, -1).await
    }

    async fn assignments_since(&self, cluster: &str, generation: i64) -> Result<Vec<Assignment>> {
        let z = self.zk().await?;
        let base = Self::base(cluster);
        let mut tasks = match self.changed_since(&z, cluster, generation).await? {
            Some(changed) => changed,
            None => self.children(&z, &format!("{base}/assign")).await?,
        };
        tasks.sort();
        tasks.dedup();
        // [`READS_PER_MULTI`] rows to a multi-read, all sent before the first answer is
        // awaited: one request per row made a node's first observation of 100,000 tasks
        // 100,000 requests, and 100 nodes reading the rows of one placement more requests
        // than the server keeps up with.
        let mut reads = Vec::new();
        for chunk in tasks.chunks(READS_PER_MULTI) {
            let mut reader = z.new_multi_reader();
            for t in chunk {
                reader
                    .add_get_data(&format!("{base}/assign/{t}"))
                    .map_err(unavailable)?;
            }
            self.read();
            reads.push((chunk, reader.commit()));
        }
        let mut out = Vec::with_capacity(tasks.len());
        for (chunk, read) in reads {
            let results = read.await.map_err(unavailable)?;
            if results.len() != chunk.len() {
                return Err(unavailable(format!(
                    "a read of {} assignments returned {} results",
                    chunk.len(),
                    results.len()
                )));
            }
            for (task, result) in chunk.iter().zip(results) {
                let bytes = match result {
                    zk::MultiReadResult::Data { data, .. } => data,
                    zk::MultiReadResult::Error {
                        err: zk::Error::NoNode,
                    } => continue,
                    other => return Err(unavailable(format!("assignment {task}: {other:?}"))),
                };
                let a: AssignData = parse("assignment", &bytes)?;
                if a.version <= generation {
                    continue;
                }
                out.push(Assignment {
                    task: task.clone(),
                    owner: a.node.zip(a.incarnation),
                    token: a.token,
                    reason: a.reason,
                    placed_at_ms: a.placed_at,
                });
            }
        }
        Ok(out)
    }

    async fn write_assignments(
        &self,
        leader: &Member,
        epoch: i64,
        changes: &[AssignmentChange],
    ) -> Result<LeaderWrite> {
        let z = self.zk().await?;
        let cluster = &leader.cluster;
        let base = Self::base(cluster);
        // The fence, every changed row (to check the token the leader saw; each row's
        // version is then checked by the multi-op that writes it) and the generation, read
        // in one round trip.
        let fence = self.leader_fence(&z, leader, epoch);
        let reads: Vec<_> = changes
            .iter()
            .map(|c| z.get_data(&format!("{base}/assign/{}", c.task)))
            .collect();
        self.read();
        let generation = z.check_stat(&format!("{base}/generation"));
        let Some(fence) = fence.await? else {
            return Ok(LeaderWrite::Deposed);
        };
        let mut judged = Some(fence);
        let mut current: HashMap<&str, (AssignData, i32)> = HashMap::new();
        for (c, read) in changes.iter().zip(reads) {
            self.read();
            match read.await {
                Ok((bytes, stat)) => {
                    current.insert(
                        c.task.as_str(),
                        (parse("assignment", &bytes)?, stat.version),
                    );
                }
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        for c in changes {
            let seen = current.get(c.task.as_str()).map(|(a, _)| a.token);
            if seen != c.expected_token {
                return Ok(LeaderWrite::Stale);
            }
        }
        let gstat = generation
            .await
            .map_err(unavailable)?
            .ok_or_else(|| unavailable("the cluster's generation znode is missing"))?;
        self.mkdirs(&z, &[format!("{base}/changes")]).await?;
        // Each chunk is one multi-op that takes the next generation.
        for (gversion, chunk) in (gstat.version..).zip(changes.chunks(MULTI_LIMIT)) {
            let generation = i64::from(gversion) + 1;
            // The leader's liveness is judged again for each multi-op, and once more when
            // only its renewal moved meanwhile: thousands of changes take longer to read and
            // write than a renewal period, so one judgement before all the chunks could never
            // see them through.
            let mut attempt = 0;
            loop {
                attempt += 1;
                // The first multi-op goes with the judgement read with the rows.
                let fence = match judged.take() {
                    Some(fence) => fence,
                    None => match self.leader_fence(&z, leader, epoch).await? {
                        Some(fence) => fence,
                        None => return Ok(LeaderWrite::Deposed),
                    },
                };
                let mut w = self.assignment_chunk(
                    &z,
                    &base,
                    &leader.node,
                    &fence,
                    epoch,
                    generation,
                    gversion,
                    chunk,
                    &current,
                )?;
                self.wrote();
                match w.commit().await {
                    Ok(_) => break,
                    // Index 1 is the registration's check (see `LeaderFence::check`).
                    Err(zk::MultiWriteError::OperationFailed { index: 1, .. })
                        if attempt < FENCE_ATTEMPTS => {}
                    Err(e) => match condition_failed(&e) {
                        Some(_) => {
                            // The leader row moved: deposed; else a row or the generation moved.
                            let (now_l, _) = self.leader(&z, cluster).await?;
                            return Ok(if now_l.epoch != epoch || now_l.node != leader.node {
                                LeaderWrite::Deposed
                            } else {
                                LeaderWrite::Stale
                            });
                        }
                        None => return Err(unavailable(e)),
                    },
                }
            }
        }
        self.prune_changes(&z, cluster).await?;
        Ok(LeaderWrite::Written)
    }
}

impl ZkStore {
    /// One multi-op of a placement write: the leader's fence, the change log entry and the
    /// generation it takes, and each changed row under the version read.
    #[allow(clippy::too_many_arguments)]
    fn assignment_chunk<'a>(
        &self,
        z: &'a zk::Client,
        base: &str,
        leader: &str,
        fence: &super::membership::LeaderFence,
        epoch: i64,
        generation: i64,
        gversion: i32,
        chunk: &[AssignmentChange],
        current: &HashMap<&str, (AssignData, i32)>,
    ) -> Result<zk::MultiWriter<'a>> {
        let now = fence.now;
        let mut w = z.new_multi_writer();
        fence.check(&mut w, base, leader)?;
        // The change log: which tasks this generation changed, for `assignments_since`.
        let names: Vec<&str> = chunk.iter().map(|c| c.task.as_str()).collect();
        w.add_create(
            &format!("{base}/changes/{generation:020}"),
            &json(&names),
            &persistent(),
        )
        .map_err(unavailable)?;
        w.add_set_data(&format!("{base}/generation"), b"", Some(gversion))
            .map_err(unavailable)?;
        for c in chunk {
            let path = format!("{base}/assign/{}", c.task);
            match current.get(c.task.as_str()) {
                Some((old, version)) => {
                    let placed_at = if c.owner.is_some() && old.placed_at == 0 {
                        now
                    } else {
                        old.placed_at
                    };
                    let data = AssignData {
                        node: c.owner.as_ref().map(|(n, _)| n.clone()),
                        incarnation: c.owner.as_ref().map(|(_, i)| *i),
                        token: old.token + 1,
                        epoch,
                        placed_at,
                        reason: c.reason.clone(),
                        version: generation,
                    };
                    w.add_set_data(&path, &json(&data), Some(*version))
                        .map_err(unavailable)?;
                }
                None => {
                    let data = AssignData {
                        node: c.owner.as_ref().map(|(n, _)| n.clone()),
                        incarnation: c.owner.as_ref().map(|(_, i)| *i),
                        token: 1,
                        epoch,
                        placed_at: if c.owner.is_some() { now } else { 0 },
                        reason: c.reason.clone(),
                        version: generation,
                    };
                    w.add_create(&path, &json(&data), &persistent())
                        .map_err(unavailable)?;
                }
            }
        }
        Ok(w)
    }
}
