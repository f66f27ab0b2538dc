//! Fires on ZooKeeper: one znode per record under `fires/<task>/`, created by the claim's
//! multi-op (which checks the assignment's and the registration's versions), with the
//! `running/` index; begin, finish and recovery of a record.

use super::*;

/// Claims per multi-op: at most four ops each, within [`MULTI_LIMIT`].
const CLAIMS_PER_MULTI: usize = (MULTI_LIMIT - 1) / 4;
/// Rounds of a batch of claims whose multi-ops failed on a moved registration or one claim.
const CLAIM_ROUNDS: usize = 5;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct FireData {
    pub(super) instant: i64,
    pub(super) node: String,
    pub(super) incarnation: i64,
    pub(super) token: i64,
    pub(super) attempt: i64,
    pub(super) outcome: String,
    pub(super) started_at: Option<i64>,
    pub(super) finished_at: Option<i64>,
    pub(super) message: Option<String>,
    /// Store time until which the claimant's registration was alive when it began the
    /// fire (see [`ZkStore::begun`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) alive_until: Option<i64>,
}

pub(super) fn fire_key(instant: i64) -> String {
    format!("{instant:020}")
}

pub(super) fn is_item(key: &str) -> bool {
    key.starts_with("i-")
}

impl FireData {
    /// Begun at server time `now` by a claimant whose registration, read at `nstat` with
    /// its `timeout_ms`, was alive then: until when it was alive is kept, for
    /// [`ZkStore::begun`] to judge the write's commit against (every begin, alone or by a
    /// claim, goes through here).
    pub(super) fn begin(&mut self, now: i64, nstat: &zk::Stat, timeout_ms: i64) {
        self.started_at = Some(now);
        self.alive_until = Some(nstat.mtime + timeout_ms);
    }

    /// Its outcome, set at store time `now` (every finish, alone or batched, goes through
    /// here): a fire that never started its work keeps no start time.
    pub(super) fn finish(&mut self, outcome: Outcome, message: Option<&str>, now: i64) {
        self.outcome = outcome.as_str().to_string();
        self.finished_at = Some(now);
        self.message = message.map(str::to_string);
        if outcome.never_started() {
            self.started_at = None;
        }
    }
}

impl ZkStore {
    /// The fence of a claim-like write: the assignment's version to check, if `(task, token)`
    /// names `m` and `m`'s registration is alive by server time.
    pub(super) async fn fence(
        &self,
        z: &zk::Client,
        m: &Member,
        task: &str,
        token: i64,
        now: i64,
    ) -> Result<Option<i32>> {
        let Some((a, astat)) = self.assignment(z, &m.cluster, task).await? else {
            return Ok(None);
        };
        if !a.names(m, token) {
            return Ok(None);
        }
        if self
            .registration_alive(z, &m.cluster, &m.node, m.incarnation, now)
            .await?
            .is_none()
        {
            return Ok(None);
        }
        Ok(Some(astat.version))
    }

    pub(super) fn fire<'z>(
        &self,
        z: &'z zk::Client,
        cluster: &str,
        task: &str,
        key: &str,
    ) -> impl std::future::Future<Output = Result<Option<(FireData, zk::Stat)>>> + 'z {
        let path = format!("{}/fires/{task}/{key}", Self::base(cluster));
        self.get_json(z, &path, "fire")
    }

    /// Creates `fires/<task>` and `running/<task>` unless this process knows they exist.
    pub(super) async fn record_dirs(
        &self,
        z: &zk::Client,
        cluster: &str,
        task: &str,
    ) -> Result<()> {
        let base = Self::base(cluster);
        self.mkdirs(
            z,
            &[
                format!("{base}/fires/{task}"),
                format!("{base}/running/{task}"),
            ],
        )
        .await
    }

    /// Records a fire or item under the fence. `Ok(None)`: fenced; `Ok(Some(false))`: taken.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn create_record(
        &self,
        m: &Member,
        task: &str,
        key: &str,
        token: i64,
        data: &FireData,
        running: bool,
        now: i64,
    ) -> Result<Option<bool>> {
        let z = self.zk().await?;
        let base = Self::base(&m.cluster);
        self.record_dirs(&z, &m.cluster, task).await?;
        let Some(aver) = self.fence(&z, m, task, token, now).await? else {
            return Ok(None);
        };
        let mut w = z.new_multi_writer();
        w.add_check_version(&format!("{base}/assign/{task}"), aver)
            .map_err(unavailable)?;
        // The registration still exists (any version: heartbeats move it).
        w.add_check_version(&format!("{base}/nodes/{}", m.node), -1)
            .map_err(unavailable)?;
        w.add_create(
            &format!("{base}/fires/{task}/{key}"),
            &json(data),
            &persistent(),
        )
        .map_err(unavailable)?;
        if running {
            w.add_create(&format!("{base}/running/{task}/{key}"), b"", &persistent())
                .map_err(unavailable)?;
        }
        self.wrote();
        match w.commit().await {
            Ok(_) => Ok(Some(true)),
            Err(e) => match condition_failed(&e) {
                Some(zk::Error::NodeExists) => Ok(Some(false)),
                // The assignment or the registration changed: retry once with fresh versions
                // (a heartbeat moves the registration's version).
                Some(zk::Error::BadVersion) | Some(zk::Error::NoNode) => Ok(None),
                _ => Err(unavailable(e)),
            },
        }
    }

    /// Updates a running record `(task, key)` at `(token, attempt)` under the fence, as
    /// `how` says. Fires begin with `begin_fires`, so a fire claimed again has no start
    /// time; an item begins at once.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn recover_record(
        &self,
        m: &Member,
        task: &str,
        key: &str,
        token: i64,
        record: (i64, i64),
        how: Recovery,
        note: Option<&str>,
    ) -> Result<ClaimOutcome> {
        let z = self.zk().await?;
        let base = Self::base(&m.cluster);
        // The record, the assignment and the registration in one round trip; the store time
        // the registration is judged by needs no clock write while this process's last
        // renewal bounds it (see `ZkStore::judging_time`). A new owner settles a dead
        // node's fires right on the failover's path, each task at once.
        let fire = self.fire(&z, &m.cluster, task, key);
        let assignment = self.assignment(&z, &m.cluster, task);
        let registration = self.node_read(&z, &m.cluster, &m.node);
        let Some((mut f, fstat)) = fire.await? else {
            return Ok(ClaimOutcome::Fenced);
        };
        let begun = Self::begun(&f, &fstat);
        let expected = if how == Recovery::Reclaim {
            "released"
        } else {
            "running"
        };
        if f.outcome != expected
            || (f.token, f.attempt) != record
            || begun != (how != Recovery::Claim)
        {
            return Ok(ClaimOutcome::Fenced);
        }
        let aver = match assignment.await? {
            Some((a, astat)) if a.names(m, token) => astat.version,
            _ => return Ok(ClaimOutcome::Fenced),
        };
        // What this write records happened no earlier than `now`.
        let Some((.., now)) = self.judged_own(&z, m, registration.await?).await? else {
            return Ok(ClaimOutcome::Fenced);
        };
        let retry = how != Recovery::Abandon;
        match how {
            Recovery::Claim => {
                f.node = m.node.clone();
                f.incarnation = m.incarnation;
                f.token = token;
                f.started_at = None;
                f.alive_until = None;
                f.message = Some("claimed again: its node never began it".into());
            }
            Recovery::Retry => {
                f.node = m.node.clone();
                f.incarnation = m.incarnation;
                f.token = token;
                f.attempt += 1;
                f.started_at = is_item(key).then_some(now);
                f.alive_until = None;
                f.message = Some("retried: its node died mid-run".into());
            }
            Recovery::AfterFailure => {
                f.attempt += 1;
                f.started_at = None;
                f.alive_until = None;
                f.message = note.map(str::to_string);
            }
            Recovery::Abandon => {
                f.finish(
                    Outcome::Abandoned,
                    Some("abandoned: its node died mid-run"),
                    now,
                );
            }
            Recovery::Reclaim => {
                f.node = m.node.clone();
                f.incarnation = m.incarnation;
                f.token = token;
                f.attempt += 1;
                f.outcome = "running".into();
                f.started_at = Some(now);
                f.finished_at = None;
                f.message = Some("handed over: released by its previous owner".into());
            }
        }
        let mut w = z.new_multi_writer();
        w.add_check_version(&format!("{base}/assign/{task}"), aver)
            .map_err(unavailable)?;
        // The registration still exists (any version: heartbeats move it).
        w.add_check_version(&format!("{base}/nodes/{}", m.node), -1)
            .map_err(unavailable)?;
        w.add_set_data(
            &format!("{base}/fires/{task}/{key}"),
            &json(&f),
            Some(fstat.version),
        )
        .map_err(unavailable)?;
        if !retry {
            w.add_delete(&format!("{base}/running/{task}/{key}"), None)
                .map_err(unavailable)?;
        }
        if how == Recovery::Reclaim {
            // A released record left the running ones; it runs again.
            w.add_create(&format!("{base}/running/{task}/{key}"), b"", &persistent())
                .map_err(unavailable)?;
        }
        self.wrote();
        match w.commit().await {
            Ok(_) => Ok(ClaimOutcome::Claimed),
            Err(e) if condition_failed(&e).is_some() => Ok(ClaimOutcome::Fenced),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Sets the outcome of a running record with this token and attempt.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn finish_record(
        &self,
        cluster: &str,
        task: &str,
        key: &str,
        token: i64,
        attempt: i64,
        outcome: Outcome,
        message: Option<&str>,
    ) -> Result<()> {
        let z = self.zk().await?;
        let base = Self::base(cluster);
        let Some((mut f, fstat)) = self.fire(&z, cluster, task, key).await? else {
            return Ok(());
        };
        if f.outcome != "running" || f.token != token || f.attempt != attempt {
            return Ok(());
        }
        let now = self.server_now(&z, cluster).await?;
        f.finish(outcome, message, now);
        let mut w = z.new_multi_writer();
        w.add_set_data(
            &format!("{base}/fires/{task}/{key}"),
            &json(&f),
            Some(fstat.version),
        )
        .map_err(unavailable)?;
        w.add_delete(&format!("{base}/running/{task}/{key}"), None)
            .map_err(unavailable)?;
        self.wrote();
        match w.commit().await {
            Ok(_) => Ok(()),
            // Changed meanwhile (recovered by another node): not ours to finish.
            Err(e) if condition_failed(&e).is_some() => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// A claim that did not pass: `AlreadyClaimed` if its instant has a record anyway.
    pub(super) async fn taken_or_fenced(&self, z: &zk::Client, c: &Claim) -> Result<ClaimOutcome> {
        let key = fire_key(c.instant_ms);
        Ok(
            if self
                .fire(z, &c.member.cluster, &c.task, &key)
                .await?
                .is_some()
            {
                ClaimOutcome::AlreadyClaimed
            } else {
                ClaimOutcome::Fenced
            },
        )
    }

    /// Whether a fire's work may have begun. ZooKeeper cannot compare times inside a
    /// multi-op, so a begin is checked against the registration's version read with its
    /// liveness, and judged afterwards by its own commit time (the record's mtime): one
    /// committed after the claimant's registration expired does not count (contract 5;
    /// that node found its lease gone and did not start the work).
    pub(super) fn begun(f: &FireData, stat: &zk::Stat) -> bool {
        f.started_at.is_some() && f.alive_until.is_none_or(|until| stat.mtime <= until)
    }

    pub(super) fn fire_record(task: &str, f: FireData) -> Result<FireRecord> {
        Ok(FireRecord {
            task: task.to_string(),
            instant_ms: f.instant,
            node: f.node,
            token: f.token,
            attempt: f.attempt,
            outcome: Outcome::parse(&f.outcome).ok_or_else(|| corrupt("fire", &f.outcome))?,
            started_at_ms: f.started_at,
            finished_at_ms: f.finished_at,
            message: f.message,
        })
    }

    /// Claims of one claimant, [`CLAIMS_PER_MULTI`] to a multi-op, all multi-ops sent before
    /// any answer is awaited: one clock read and one registration read per round. Each
    /// multi-op checks the exact registration version judged alive (so a begun claim's
    /// `alive_until`, see [`ZkStore::begun`], holds at its commit), then per claim the
    /// assignment's version and the new record. A multi-op fails whole: when a heartbeat
    /// moved the registration, its claims go again with a fresh judgement; when one claim
    /// failed, that claim is answered alone and the others go again.
    async fn claim_group(&self, m: &Member, claims: &[&Claim]) -> Result<Vec<ClaimOutcome>> {
        let z = self.zk().await?;
        let base = Self::base(&m.cluster);
        for c in claims {
            self.record_dirs(&z, &m.cluster, &c.task).await?;
        }
        let mut out: Vec<Option<ClaimOutcome>> = vec![None; claims.len()];
        for _ in 0..CLAIM_ROUNDS {
            let pending: Vec<usize> = (0..claims.len()).filter(|&i| out[i].is_none()).collect();
            if pending.is_empty() {
                break;
            }
            // The registration and the assignments read in one round trip; the store time
            // they are judged by needs no clock write while this process's last renewal
            // bounds it (see `ZkStore::judging_time`).
            let registration = self.node_read(&z, &m.cluster, &m.node);
            let reads: Vec<_> = pending
                .iter()
                .map(|&i| self.assignment(&z, &m.cluster, &claims[i].task))
                .collect();
            let registration = self.judged_own(&z, m, registration.await?).await?;
            let Some((node, nstat, now)) = registration else {
                for i in pending {
                    out[i] = Some(ClaimOutcome::Fenced);
                }
                break;
            };
            let mut named = Vec::with_capacity(pending.len());
            for (&i, read) in pending.iter().zip(reads) {
                let c = claims[i];
                match read.await? {
                    Some((a, stat)) if a.names(m, c.token) => named.push((i, stat.version)),
                    _ => out[i] = Some(self.taken_or_fenced(&z, c).await?),
                }
            }
            // Each multi-op: the registration check, then per claim its ops; `starts` holds
            // the index of each claim's first op, `lasts` the task last instants it sets.
            // A task's last instant only moves forward: within a round, past what earlier
            // multi-ops set; across rounds, past what committed ones did.
            let mut planned: HashMap<&str, i64> = HashMap::new();
            let mut multis = Vec::new();
            for chunk in named.chunks(CLAIMS_PER_MULTI) {
                let mut w = z.new_multi_writer();
                w.add_check_version(&format!("{base}/nodes/{}", m.node), nstat.version)
                    .map_err(unavailable)?;
                let mut starts = Vec::with_capacity(chunk.len());
                let mut lasts = Vec::new();
                let mut ops = 1;
                for &(i, version) in chunk {
                    let c = claims[i];
                    let running = c.outcome == Outcome::Running;
                    let mut data = FireData {
                        instant: c.instant_ms,
                        node: m.node.clone(),
                        incarnation: m.incarnation,
                        token: c.token,
                        attempt: 1,
                        outcome: c.outcome.as_str().to_string(),
                        started_at: None,
                        finished_at: (!running).then_some(now),
                        message: c.message.clone(),
                        alive_until: None,
                    };
                    if running && c.begin {
                        data.begin(now, &nstat, node.timeout_ms);
                    }
                    let key = fire_key(c.instant_ms);
                    starts.push(ops);
                    w.add_check_version(&format!("{base}/assign/{}", c.task), version)
                        .map_err(unavailable)?;
                    w.add_create(
                        &format!("{base}/fires/{}/{key}", c.task),
                        &json(&data),
                        &persistent(),
                    )
                    .map_err(unavailable)?;
                    ops += 2;
                    if running {
                        w.add_create(
                            &format!("{base}/running/{}/{key}", c.task),
                            b"",
                            &persistent(),
                        )
                        .map_err(unavailable)?;
                        ops += 1;
                    }
                    let dir = format!("{base}/fires/{}", c.task);
                    let last = *planned
                        .entry(c.task.as_str())
                        .or_insert_with(|| self.last_set_of(&dir));
                    if c.instant_ms > last {
                        planned.insert(c.task.as_str(), c.instant_ms);
                        w.add_set_data(&dir, c.instant_ms.to_string().as_bytes(), None)
                            .map_err(unavailable)?;
                        ops += 1;
                        lasts.push((dir, c.instant_ms));
                    }
                }
                multis.push((chunk, starts, lasts, w));
            }
            let commits: Vec<_> = multis.iter_mut().map(|(.., w)| w.commit()).collect();
            for ((chunk, starts, lasts, _), commit) in multis.iter().zip(commits) {
                self.wrote();
                match commit.await {
                    Ok(_) => {
                        for &(i, _) in *chunk {
                            out[i] = Some(ClaimOutcome::Claimed);
                        }
                        let mut set = self.last_set.lock().unwrap();
                        for (dir, instant) in lasts {
                            let known = set.entry(dir.clone()).or_insert(*instant);
                            *known = (*known).max(*instant);
                        }
                    }
                    // The registration moved (a heartbeat): the whole chunk goes again.
                    Err(zk::MultiWriteError::OperationFailed { index: 0, .. }) => {}
                    // One claim failed (taken, or its assignment moved): it alone is
                    // answered, the rest of the chunk goes again.
                    Err(zk::MultiWriteError::OperationFailed { index, .. }) => {
                        let at = starts.partition_point(|&s| s <= index) - 1;
                        let i = chunk[at].0;
                        out[i] = Some(self.taken_or_fenced(&z, claims[i]).await?);
                    }
                    Err(e) => return Err(unavailable(e)),
                }
            }
        }
        if out.iter().any(Option::is_none) {
            return Err(Error::StoreUnavailable(format!(
                "claims of {} still contended after {CLAIM_ROUNDS} rounds (its registration kept moving)",
                m.node
            )));
        }
        Ok(out
            .into_iter()
            .map(|o| o.unwrap_or(ClaimOutcome::Fenced))
            .collect())
    }

    /// The highest last instant this process set for the task whose records are under `dir`.
    fn last_set_of(&self, dir: &str) -> i64 {
        self.last_set
            .lock()
            .unwrap()
            .get(dir)
            .copied()
            .unwrap_or(i64::MIN)
    }

    /// The latest instant with a record of the task whose records are under `dir`, read
    /// from `dir`'s data (one small read, sent now). `Err(())` inside: `dir` keeps no last
    /// instant (written before it was kept, or a service with only items), and its records
    /// must be listed.
    fn kept_last<'z>(
        &self,
        z: &'z zk::Client,
        dir: &str,
    ) -> impl std::future::Future<Output = Result<std::result::Result<Option<i64>, ()>>> + 'z {
        self.read();
        let read = z.get_data(dir);
        async move {
            match read.await {
                Ok((bytes, _)) => Ok(std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|t| t.parse::<i64>().ok())
                    .map(Some)
                    .ok_or(())),
                Err(zk::Error::NoNode) => Ok(Ok(None)),
                Err(e) => Err(unavailable(e)),
            }
        }
    }

    /// Store time, read once per call and only when needed: `now` keeps it.
    pub(super) async fn now_once(
        &self,
        z: &zk::Client,
        cluster: &str,
        now: &mut Option<i64>,
    ) -> Result<i64> {
        match *now {
            Some(t) => Ok(t),
            None => {
                let t = self.server_now(z, cluster).await?;
                *now = Some(t);
                Ok(t)
            }
        }
    }
}

#[async_trait]
impl FireStore for ZkStore {
    async fn claim(&self, c: &Claim) -> Result<ClaimOutcome> {
        Ok(self.claim_batch(std::slice::from_ref(c)).await?[0])
    }

    async fn claim_batch(&self, claims: &[Claim]) -> Result<Vec<ClaimOutcome>> {
        // A node's batcher sends one claimant's claims; another claimant's go on their own.
        let mut out = vec![ClaimOutcome::Fenced; claims.len()];
        let mut rest: Vec<usize> = (0..claims.len()).collect();
        while let Some(&first) = rest.first() {
            let m = &claims[first].member;
            let (mine, others): (Vec<usize>, Vec<usize>) =
                rest.into_iter().partition(|&i| claims[i].member == *m);
            rest = others;
            let group: Vec<&Claim> = mine.iter().map(|&i| &claims[i]).collect();
            for (i, outcome) in mine.iter().zip(self.claim_group(m, &group).await?) {
                out[*i] = outcome;
            }
        }
        Ok(out)
    }

    async fn finish_batch(&self, cluster: &str, finishes: &[Finish]) -> Result<()> {
        if finishes.len() == 1 {
            return self.finish(cluster, &finishes[0]).await;
        }
        let z = self.zk().await?;
        let base = Self::base(cluster);
        let now = self.server_now(&z, cluster).await?;
        let reads: Vec<_> = finishes
            .iter()
            .map(|f| {
                z.get_data(&format!(
                    "{base}/fires/{}/{}",
                    f.task,
                    fire_key(f.instant_ms)
                ))
            })
            .collect();
        // Each finish: its record's new content at the version read, and its running mark.
        let mut writes = Vec::new();
        for (f, read) in finishes.iter().zip(reads) {
            self.read();
            let (bytes, stat) = match read.await {
                Ok(v) => v,
                Err(zk::Error::NoNode) => continue,
                Err(e) => return Err(unavailable(e)),
            };
            let mut data: FireData = parse("fire", &bytes)?;
            if data.outcome != "running" || data.token != f.token || data.attempt != f.attempt {
                continue;
            }
            data.finish(f.outcome, f.message.as_deref(), now);
            let key = fire_key(f.instant_ms);
            writes.push((
                format!("{base}/fires/{}/{key}", f.task),
                json(&data),
                stat.version,
                format!("{base}/running/{}/{key}", f.task),
            ));
        }
        // Two ops per finish, many finishes per multi-op, all sent before any answer is
        // awaited. A multi-op fails whole: the finish whose record changed meanwhile
        // (recovered by another node) is not ours to write, and the others go again.
        while !writes.is_empty() {
            let mut multis = Vec::new();
            for chunk in writes.chunks(MULTI_LIMIT / 2) {
                let mut w = z.new_multi_writer();
                for (record, data, version, mark) in chunk {
                    w.add_set_data(record, data, Some(*version))
                        .map_err(unavailable)?;
                    w.add_delete(mark, None).map_err(unavailable)?;
                }
                multis.push((chunk, w));
            }
            let commits: Vec<_> = multis.iter_mut().map(|(_, w)| w.commit()).collect();
            let mut again = Vec::new();
            for ((chunk, _), commit) in multis.iter().zip(commits) {
                self.wrote();
                match commit.await {
                    Ok(_) => {}
                    Err(zk::MultiWriteError::OperationFailed { index, .. }) => {
                        let failed = index / 2;
                        again.extend(
                            chunk
                                .iter()
                                .enumerate()
                                .filter(|(i, _)| *i != failed)
                                .map(|(_, w)| w.clone()),
                        );
                    }
                    Err(e) => return Err(unavailable(e)),
                }
            }
            writes = again;
        }
        Ok(())
    }

    async fn finish(&self, cluster: &str, f: &Finish) -> Result<()> {
        self.finish_record(
            cluster,
            &f.task,
            &fire_key(f.instant_ms),
            f.token,
            f.attempt,
            f.outcome,
            f.message.as_deref(),
        )
        .await
    }

    /// Every task's two reads are sent before any answer is awaited: the client sends a
    /// request when it is made, and the session answers in order. Task by task, a survivor
    /// taking over 20 tasks waited for 40 round trips one after the other (48 ms median on
    /// a loaded server, a sixth of the fast profile's failover). Running listings are all
    /// sent before the last instants, so each task's running fires are read before its last
    /// instant; a task with running fires (rare: they need a clock read and each fire) is
    /// read again by itself, in that order.
    async fn takeovers(&self, cluster: &str, tasks: &[String]) -> Result<Vec<Takeover>> {
        let z = self.zk().await?;
        let base = Self::base(cluster);
        let running: Vec<_> = tasks
            .iter()
            .map(|t| self.listing(&z, &format!("{base}/running/{t}")))
            .collect();
        let lasts: Vec<_> = tasks
            .iter()
            .map(|t| self.kept_last(&z, &format!("{base}/fires/{t}")))
            .collect();
        let mut running_answers = Vec::with_capacity(tasks.len());
        for listing in running {
            running_answers.push(listing.await?);
        }
        let mut out = Vec::with_capacity(tasks.len());
        for ((task, running), last) in tasks.iter().zip(running_answers).zip(lasts) {
            let last = last.await?;
            if running.iter().any(|k| !is_item(k)) {
                out.push(Takeover {
                    running: self.running_fires(cluster, task).await?,
                    last_instant: self.last_instant(cluster, task).await?,
                });
            } else {
                let last_instant = match last {
                    Ok(kept) => kept,
                    Err(()) => self.listed_last(&z, cluster, task).await?,
                };
                out.push(Takeover {
                    running: Vec::new(),
                    last_instant,
                });
            }
        }
        Ok(out)
    }

    async fn last_instant(&self, cluster: &str, task: &str) -> Result<Option<i64>> {
        let z = self.zk().await?;
        match self
            .kept_last(&z, &format!("{}/fires/{task}", Self::base(cluster)))
            .await?
        {
            Ok(kept) => Ok(kept),
            Err(()) => self.listed_last(&z, cluster, task).await,
        }
    }

    async fn running_fires(&self, cluster: &str, task: &str) -> Result<Vec<RunningFire>> {
        let z = self.zk().await?;
        let mut keys = self
            .children(&z, &format!("{}/running/{task}", Self::base(cluster)))
            .await?;
        keys.retain(|k| !is_item(k));
        keys.sort();
        if keys.is_empty() {
            return Ok(Vec::new()); // the common case: no clock read (a write) needed
        }
        let now = self.server_now(&z, cluster).await?;
        let mut out = Vec::new();
        for key in keys {
            let Some((f, fstat)) = self.fire(&z, cluster, task, &key).await? else {
                continue;
            };
            if f.outcome != "running" {
                continue;
            }
            let begun = Self::begun(&f, &fstat);
            let alive = self
                .registration_alive(&z, cluster, &f.node, f.incarnation, now)
                .await?
                .is_some();
            out.push(RunningFire {
                instant_ms: f.instant,
                node: f.node,
                incarnation: f.incarnation,
                token: f.token,
                attempt: f.attempt,
                node_alive: alive,
                begun,
            });
        }
        Ok(out)
    }

    /// Begins fires claimed by `m`. Each begin's multi-op checks the assignment and the
    /// exact registration version whose liveness was judged, and records until when that
    /// registration was alive (see [`ZkStore::begun`]). Per round, every read goes out
    /// before any answer is awaited (the registration, each record, each assignment), then
    /// every multi-op: a batch costs two round trips, not three per fire. A heartbeat
    /// moving the registration between the reads and the writes fails the multi-ops
    /// that checked it: those go again with fresh reads.
    async fn begin_fires(&self, m: &Member, fires: &[Begin]) -> Result<Vec<bool>> {
        let z = self.zk().await?;
        let base = Self::base(&m.cluster);
        let mut out: Vec<Option<bool>> = vec![None; fires.len()];
        for _ in 0..5 {
            let pending: Vec<usize> = (0..fires.len()).filter(|&i| out[i].is_none()).collect();
            if pending.is_empty() {
                break;
            }
            let registration = self.node_read(&z, &m.cluster, &m.node);
            let reads: Vec<_> = pending
                .iter()
                .map(|&i| {
                    let b = &fires[i];
                    let record = self.fire(&z, &m.cluster, &b.task, &fire_key(b.instant_ms));
                    (record, self.assignment(&z, &m.cluster, &b.task))
                })
                .collect();
            let judged = self.judged_own(&z, m, registration.await?).await?;
            let mut writes = Vec::new();
            for (&i, (record, assignment)) in pending.iter().zip(reads) {
                let b = &fires[i];
                let (record, assignment) = (record.await?, assignment.await?);
                let Some((mut f, fstat)) = record else {
                    out[i] = Some(false);
                    continue;
                };
                let ours = f.outcome == "running"
                    && f.node == m.node
                    && f.incarnation == m.incarnation
                    && (f.token, f.attempt) == (b.token, b.attempt);
                if !ours || f.started_at.is_some() {
                    out[i] = Some(ours); // begun already by an earlier call whose reply was lost
                    continue;
                }
                let Some((node, nstat, now)) = &judged else {
                    out[i] = Some(false);
                    continue;
                };
                let astat = match assignment {
                    Some((a, astat)) if a.names(m, b.token) => astat,
                    _ => {
                        out[i] = Some(false);
                        continue;
                    }
                };
                f.begin(*now, nstat, node.timeout_ms);
                let mut w = z.new_multi_writer();
                w.add_check_version(&format!("{base}/assign/{}", b.task), astat.version)
                    .map_err(unavailable)?;
                w.add_check_version(&format!("{base}/nodes/{}", m.node), nstat.version)
                    .map_err(unavailable)?;
                w.add_set_data(
                    &format!("{base}/fires/{}/{}", b.task, fire_key(b.instant_ms)),
                    &json(&f),
                    Some(fstat.version),
                )
                .map_err(unavailable)?;
                writes.push((i, w));
            }
            let commits: Vec<_> = writes
                .iter_mut()
                .map(|(_, w)| {
                    self.wrote();
                    w.commit()
                })
                .collect();
            for ((i, _), commit) in writes.iter().zip(commits) {
                match commit.await {
                    Ok(_) => out[*i] = Some(true),
                    // The registration or the assignment moved: read again next round.
                    Err(e) if condition_failed(&e).is_some() => {}
                    Err(e) => return Err(unavailable(e)),
                }
            }
        }
        Ok(out.into_iter().map(|o| o.unwrap_or(false)).collect())
    }

    async fn recover_fire(
        &self,
        m: &Member,
        task: &str,
        token: i64,
        fire: &RunningFire,
        retry: bool,
    ) -> Result<ClaimOutcome> {
        let key = fire_key(fire.instant_ms);
        let how = Recovery::of(fire.begun, retry);
        self.recover_record(m, task, &key, token, (fire.token, fire.attempt), how, None)
            .await
    }

    async fn retry_fire(&self, m: &Member, fire: &Begin, message: &str) -> Result<ClaimOutcome> {
        let key = fire_key(fire.instant_ms);
        let record = (fire.token, fire.attempt);
        self.recover_record(
            m,
            &fire.task,
            &key,
            fire.token,
            record,
            Recovery::AfterFailure,
            Some(message),
        )
        .await
    }
}

impl ZkStore {
    /// The latest instant of `task` with a record, from the listing of its records: for
    /// records written before their task's last instant was kept with them.
    async fn listed_last(&self, z: &zk::Client, cluster: &str, task: &str) -> Result<Option<i64>> {
        let keys = self
            .children(z, &format!("{}/fires/{task}", Self::base(cluster)))
            .await?;
        Ok(last_fire_key(&keys))
    }
}

/// The latest instant among a task's record keys (items have keys of their own).
fn last_fire_key(keys: &[String]) -> Option<i64> {
    keys.iter()
        .filter(|k| !is_item(k))
        .filter_map(|k| k.parse::<i64>().ok())
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_begin_committed_after_its_claimants_registration_expired_does_not_count() {
        let fire = |started: Option<i64>, alive_until: Option<i64>| FireData {
            instant: 1_000,
            node: "a".into(),
            incarnation: 1,
            token: 1,
            attempt: 1,
            outcome: "running".into(),
            started_at: started,
            finished_at: None,
            message: None,
            alive_until,
        };
        let committed_at = |mtime: i64| zk::Stat {
            czxid: 1,
            mzxid: 1,
            pzxid: 1,
            ctime: 0,
            mtime,
            version: 1,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: 0,
            data_length: 0,
            num_children: 0,
        };
        assert!(ZkStore::begun(&fire(Some(5), Some(10)), &committed_at(10)));
        assert!(!ZkStore::begun(&fire(Some(5), Some(10)), &committed_at(11)));
        assert!(!ZkStore::begun(&fire(None, None), &committed_at(1)));
        // Records from before alive_until was kept: begun as before.
        assert!(ZkStore::begun(&fire(Some(5), None), &committed_at(99)));
        // A begin keeps the deadline of the registration it was judged by.
        let mut begun = fire(None, None);
        begun.begin(7, &committed_at(4), 1_000);
        assert_eq!(
            (begun.started_at, begun.alive_until),
            (Some(7), Some(1_004))
        );
        assert!(ZkStore::begun(&begun, &committed_at(1_004)));
        assert!(!ZkStore::begun(&begun, &committed_at(1_005)));
    }
}
