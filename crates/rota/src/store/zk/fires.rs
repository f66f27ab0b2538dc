//! Fires on ZooKeeper: one znode per record under `fires/<task>/`, created by the claim's
//! multi-op (which checks the assignment's and the registration's versions), with the
//! `running/` index; begin, finish and recovery of a record.

use super::*;
use super::{membership::NodeData, placement::AssignData};

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
        if a.token != token
            || a.node.as_deref() != Some(m.node.as_str())
            || a.incarnation != Some(m.incarnation)
        {
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

    pub(super) async fn fire(
        &self,
        z: &zk::Client,
        cluster: &str,
        task: &str,
        key: &str,
    ) -> Result<Option<(FireData, zk::Stat)>> {
        let path = format!("{}/fires/{task}/{key}", Self::base(cluster));
        self.get_json(z, &path, "fire").await
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

    /// Begins one fire claimed by `m` (see [`FireStore::begin_fires`]). The multi-op checks the
    /// assignment and the exact registration version whose liveness was judged, and records
    /// until when that registration was alive (see [`ZkStore::begun`]).
    /// `judged`: the claimant's registration and the server time it was judged alive at,
    /// shared by the fires of one batch; read again when a write finds it moved.
    pub(super) async fn begin_fire(
        &self,
        z: &zk::Client,
        m: &Member,
        b: &Begin,
        judged: &mut Option<(NodeData, zk::Stat, i64)>,
    ) -> Result<bool> {
        let base = Self::base(&m.cluster);
        let key = fire_key(b.instant_ms);
        // A heartbeat moving the registration between the read and the write: read again.
        for _ in 0..5 {
            let Some((mut f, fstat)) = self.fire(z, &m.cluster, &b.task, &key).await? else {
                return Ok(false);
            };
            let ours = f.outcome == "running"
                && f.node == m.node
                && f.incarnation == m.incarnation
                && (f.token, f.attempt) == (b.token, b.attempt);
            if !ours || f.started_at.is_some() {
                return Ok(ours); // begun already by an earlier call whose reply was lost
            }
            if judged.is_none() {
                let now = self.server_now(z, &m.cluster).await?;
                let Some((node, nstat)) = self.node(z, &m.cluster, &m.node).await? else {
                    return Ok(false);
                };
                *judged = Some((node, nstat, now));
            }
            let Some((node, nstat, now)) = judged.clone() else {
                return Ok(false);
            };
            if node.incarnation != m.incarnation || !Self::alive(&node, &nstat, now) {
                return Ok(false);
            }
            let Some((a, astat)) = self.assignment(z, &m.cluster, &b.task).await? else {
                return Ok(false);
            };
            if a.token != b.token
                || a.node.as_deref() != Some(m.node.as_str())
                || a.incarnation != Some(m.incarnation)
            {
                return Ok(false);
            }
            f.started_at = Some(now);
            f.alive_until = Some(nstat.mtime + node.timeout_ms);
            let mut w = z.new_multi_writer();
            w.add_check_version(&format!("{base}/assign/{}", b.task), astat.version)
                .map_err(unavailable)?;
            w.add_check_version(&format!("{base}/nodes/{}", m.node), nstat.version)
                .map_err(unavailable)?;
            w.add_set_data(
                &format!("{base}/fires/{}/{key}", b.task),
                &json(&f),
                Some(fstat.version),
            )
            .map_err(unavailable)?;
            self.wrote();
            match w.commit().await {
                Ok(_) => return Ok(true),
                Err(e) if condition_failed(&e).is_some() => *judged = None,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(false)
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
        let Some((mut f, fstat)) = self.fire(&z, &m.cluster, task, key).await? else {
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
        let now = self.server_now(&z, &m.cluster).await?;
        let Some(aver) = self.fence(&z, m, task, token, now).await? else {
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
        let z = self.zk().await?;
        let now = self.server_now(&z, &c.member.cluster).await?;
        let running = c.outcome == Outcome::Running;
        let data = FireData {
            instant: c.instant_ms,
            node: c.member.node.clone(),
            incarnation: c.member.incarnation,
            token: c.token,
            attempt: 1,
            outcome: c.outcome.as_str().to_string(),
            started_at: None, // set when it begins (`begin_fires`)
            finished_at: (!running).then_some(now),
            message: c.message.clone(),
            alive_until: None,
        };
        let key = fire_key(c.instant_ms);
        Ok(
            match self
                .create_record(&c.member, &c.task, &key, c.token, &data, running, now)
                .await?
            {
                Some(true) => ClaimOutcome::Claimed,
                Some(false) => ClaimOutcome::AlreadyClaimed,
                None => self.taken_or_fenced(&z, c).await?,
            },
        )
    }

    async fn claim_batch(&self, claims: &[Claim]) -> Result<Vec<ClaimOutcome>> {
        // One claimant per batch (a node's batcher): one clock read and one registration
        // check for all, the assignments read and the multi-ops sent pipelined.
        let Some(first) = claims.first() else {
            return Ok(Vec::new());
        };
        if claims.len() == 1 || claims.iter().any(|c| c.member != first.member) {
            let mut out = Vec::with_capacity(claims.len());
            for c in claims {
                out.push(self.claim(c).await?);
            }
            return Ok(out);
        }
        let m = &first.member;
        let z = self.zk().await?;
        let base = Self::base(&m.cluster);
        for c in claims {
            self.record_dirs(&z, &m.cluster, &c.task).await?;
        }
        let now = self.server_now(&z, &m.cluster).await?;
        if self
            .registration_alive(&z, &m.cluster, &m.node, m.incarnation, now)
            .await?
            .is_none()
        {
            return Ok(vec![ClaimOutcome::Fenced; claims.len()]);
        }
        let reads: Vec<_> = claims
            .iter()
            .map(|c| z.get_data(&format!("{base}/assign/{}", c.task)))
            .collect();
        let mut versions = Vec::with_capacity(claims.len());
        for (c, read) in claims.iter().zip(reads) {
            self.read();
            versions.push(match read.await {
                Ok((bytes, stat)) => {
                    let a: AssignData = parse("assignment", &bytes)?;
                    let named = a.token == c.token
                        && a.node.as_deref() == Some(m.node.as_str())
                        && a.incarnation == Some(m.incarnation);
                    named.then_some(stat.version)
                }
                Err(zk::Error::NoNode) => None,
                Err(e) => return Err(unavailable(e)),
            });
        }
        let mut writers = Vec::new();
        for (c, version) in claims.iter().zip(&versions) {
            let Some(version) = version else {
                writers.push(None);
                continue;
            };
            let running = c.outcome == Outcome::Running;
            let data = FireData {
                instant: c.instant_ms,
                node: m.node.clone(),
                incarnation: m.incarnation,
                token: c.token,
                attempt: 1,
                outcome: c.outcome.as_str().to_string(),
                started_at: None, // set when it begins (`begin_fires`)
                finished_at: (!running).then_some(now),
                message: c.message.clone(),
                alive_until: None,
            };
            let key = fire_key(c.instant_ms);
            let mut w = z.new_multi_writer();
            w.add_check_version(&format!("{base}/assign/{}", c.task), *version)
                .map_err(unavailable)?;
            w.add_check_version(&format!("{base}/nodes/{}", m.node), -1)
                .map_err(unavailable)?;
            w.add_create(
                &format!("{base}/fires/{}/{key}", c.task),
                &json(&data),
                &persistent(),
            )
            .map_err(unavailable)?;
            if running {
                w.add_create(
                    &format!("{base}/running/{}/{key}", c.task),
                    b"",
                    &persistent(),
                )
                .map_err(unavailable)?;
            }
            writers.push(Some(w));
        }
        // Every commit is sent before any answer is awaited.
        let commits: Vec<_> = writers
            .iter_mut()
            .map(|w| w.as_mut().map(|w| w.commit()))
            .collect();
        let mut out = Vec::with_capacity(claims.len());
        for (c, commit) in claims.iter().zip(commits) {
            let Some(commit) = commit else {
                out.push(self.taken_or_fenced(&z, c).await?);
                continue;
            };
            self.wrote();
            out.push(match commit.await {
                Ok(_) => ClaimOutcome::Claimed,
                Err(e) => match condition_failed(&e) {
                    Some(zk::Error::NodeExists) => ClaimOutcome::AlreadyClaimed,
                    Some(_) => self.taken_or_fenced(&z, c).await?,
                    None => return Err(unavailable(e)),
                },
            });
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
        let mut writers = Vec::new();
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
            let mut w = z.new_multi_writer();
            w.add_set_data(
                &format!("{base}/fires/{}/{key}", f.task),
                &json(&data),
                Some(stat.version),
            )
            .map_err(unavailable)?;
            w.add_delete(&format!("{base}/running/{}/{key}", f.task), None)
                .map_err(unavailable)?;
            writers.push(w);
        }
        let commits: Vec<_> = writers.iter_mut().map(|w| w.commit()).collect();
        for commit in commits {
            self.wrote();
            match commit.await {
                Ok(_) => {}
                // Changed meanwhile (recovered by another node): not ours to finish.
                Err(e) if condition_failed(&e).is_some() => {}
                Err(e) => return Err(unavailable(e)),
            }
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

    async fn last_instant(&self, cluster: &str, task: &str) -> Result<Option<i64>> {
        let z = self.zk().await?;
        let keys = self
            .children(&z, &format!("{}/fires/{task}", Self::base(cluster)))
            .await?;
        Ok(keys
            .iter()
            .filter(|k| !is_item(k))
            .filter_map(|k| k.parse::<i64>().ok())
            .max())
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

    async fn begin_fires(&self, m: &Member, fires: &[Begin]) -> Result<Vec<bool>> {
        let z = self.zk().await?;
        // One clock read and one registration read for the batch (reading store time is a
        // write on ZooKeeper), not one per fire.
        let mut judged = None;
        let mut out = Vec::with_capacity(fires.len());
        for b in fires {
            out.push(self.begin_fire(&z, m, b, &mut judged).await?);
        }
        Ok(out)
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
    }
}
