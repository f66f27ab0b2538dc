//! Observation and leadership: reading the cluster, and the leader's rounds (placement
//! written under its epoch, pauses, the journal of deaths and failovers, the purge).

use super::*;

/// The assignment changes that turn `current` (sorted by task, as
/// [`merge_assignments`](crate::store::merge_assignments) keeps it) into `placement`. Each
/// task is found by binary search and compared in place: nothing is copied but the changes.
pub(super) fn diff(
    current: &[Assignment],
    placement: &placement::Placement,
) -> Vec<AssignmentChange> {
    let find = |task: &str| {
        current
            .binary_search_by(|a| a.task.as_str().cmp(task))
            .ok()
            .map(|i| &current[i])
    };
    let mut changes = Vec::new();
    let mut want = |task: &str, owner: Option<(&str, i64)>, reason: Option<&str>| {
        let existing = find(task);
        let same = existing.is_some_and(|a| {
            a.owner.as_ref().map(|(n, i)| (n.as_str(), *i)) == owner
                && a.reason.as_deref() == reason
        });
        if !same {
            changes.push(AssignmentChange {
                task: task.to_string(),
                owner: owner.map(|(n, i)| (n.to_string(), i)),
                reason: reason.map(str::to_string),
                expected_token: existing.map(|a| a.token),
            });
        }
    };
    for (task, o) in &placement.owners {
        want(task, Some((o.node.as_str(), o.incarnation)), None);
    }
    for (task, reason) in &placement.unplaced {
        want(task, None, Some(reason));
    }
    for (task, nodes) in &placement.everywhere {
        let on = if nodes.is_empty() {
            "none".to_string()
        } else {
            nodes.join(", ")
        };
        let reason = format!(
            "{}, as {task}@<node> (now on {on})",
            placement::EVERYWHERE_REASON
        );
        want(task, None, Some(&reason));
    }
    for a in current {
        if !placement.owners.contains_key(&a.task)
            && !placement.unplaced.contains_key(&a.task)
            && !placement.everywhere.contains_key(&a.task)
            && a.owner.is_some()
        {
            want(&a.task, None, Some("declared by no live node"));
        }
    }
    changes
}

impl Runtime {
    pub(super) async fn observe(&mut self) -> Result<()> {
        let store = &self.shared.store;
        let cluster = self.shared.member().cluster;
        let stale = self
            .view_at
            .is_none_or(|at| at.elapsed() >= self.shared.timing.heartbeat);
        // A view due anyway carries the generation: no separate read then.
        if stale || store.generation(&cluster).await? != self.generation {
            let sent = Instant::now();
            let view = store.view(&cluster).await?;
            let received = Instant::now();
            self.shared.clock.observe(view.now_ms, sent, received);
            self.shared.saw_renewals(&view, received);
            if view.generation != self.generation {
                // Only the rows changed since the generation we hold (all at the start).
                let changed = store.assignments_since(&cluster, self.generation).await?;
                crate::store::merge_assignments(&mut self.assignments, changed);
                self.assignments_version += 1;
                // Commands take generations too: read what was appended (all, at the start).
                self.commands
                    .read(store.as_ref(), &self.shared.member())
                    .await?;
                self.refresh_definitions();
                self.generation = view.generation;
            }
            self.view = Some(view);
            self.view_at = Some(Instant::now());
        }
        self.shared.set_store_error(None);
        Ok(())
    }

    /// Leadership and placement (contract 6). The leader writes only differences.
    pub(super) async fn lead(&mut self, leaving: bool) -> Result<()> {
        let Some(view) = &self.view else {
            return Ok(());
        };
        let previous_leader = view.leader.as_ref().map(|l| l.node.clone());
        let me = self.shared.member();
        let leader_alive = view.leader.as_ref().is_some_and(|l| {
            view.nodes
                .iter()
                .any(|n| n.node == l.node && n.incarnation == l.incarnation && n.alive)
        });
        let mine = view
            .leader
            .as_ref()
            .filter(|l| l.node == me.node && l.incarnation == me.incarnation);
        self.epoch = mine.map(|l| l.epoch);
        if !leader_alive && !leaving {
            if let Some(l) = self.shared.store.acquire_leadership(&me).await? {
                if l.node == me.node
                    && l.incarnation == me.incarnation
                    && self.epoch != Some(l.epoch)
                {
                    info!(epoch = l.epoch, "became leader");
                    self.shared.metrics.became_leader();
                    let previous = previous_leader.filter(|p| *p != me.node);
                    let at = self.shared.clock.now_ms();
                    let event = journal::leader_changed(&me, l.epoch, previous.as_deref(), at);
                    self.shared.journal.record(event);
                    self.epoch = Some(l.epoch);
                    self.view_at = None;
                    return Ok(()); // place on fresh observations
                }
            }
        }
        let Some(epoch) = self.epoch else {
            // Only a leader places, so only a leader holds what each node declares: in a
            // cluster of 100 nodes that each declare 10,000 tasks, every node read and kept
            // a million declarations.
            self.declarations = HashMap::new();
            return Ok(());
        };
        let view = self.view.as_ref().expect("checked above");
        let control = &self.commands.control;
        // Placing thousands of tasks costs CPU: skip it while its inputs are those of a round
        // that found nothing to change (same generation, same live nodes and states). A drain
        // is a command, so it comes with a new generation too.
        let inputs: PlacementInputs = (
            self.generation,
            view.nodes
                .iter()
                .filter(|n| n.alive)
                .map(|n| {
                    let leaving = n.leaving || control.is_drained(&n.node);
                    (n.node.clone(), n.incarnation, leaving)
                })
                .collect(),
        );
        if self.settled.as_ref() == Some(&inputs) {
            return self.after_placement(leaving).await;
        }
        // Registrations change only with the generation: read their declarations only for
        // a round that places, not at every tick of a settled leader.
        self.read_declarations().await?;
        self.journal_deaths().await;
        let view = self.view.as_ref().expect("checked above");
        let control = &self.commands.control;
        let defined = self.defined_declarations();
        let live: Vec<NodeInfo> = view
            .nodes
            .iter()
            .filter(|n| n.alive)
            .map(|n| {
                let Declared {
                    tasks: mut declared,
                    mut meta,
                    ..
                } = self
                    .declarations
                    .get(&(n.node.clone(), n.incarnation))
                    .cloned()
                    .unwrap_or_default();
                // The cluster's own definitions: every node that runs them may run each
                // (a name its own file declares too keeps the file's, and conflicts).
                if meta.runs_definitions {
                    let own = Arc::make_mut(&mut declared);
                    for (name, hash, spec) in &defined {
                        if !own.contains_key(name) {
                            own.insert(name.clone(), hash.clone());
                            meta.placement.tasks.insert(name.clone(), spec.clone());
                        }
                    }
                }
                // Commands: a node is not eligible for what is paused on it, nor for
                // anything while drained. Nodes keep sharing their declarations otherwise.
                let paused: Vec<&str> = control
                    .paused_on(&n.node)
                    .filter(|task| declared.contains_key(*task))
                    .collect();
                if !paused.is_empty() {
                    let own = Arc::make_mut(&mut declared);
                    for task in paused {
                        own.remove(task);
                    }
                }
                NodeInfo {
                    id: n.node.clone(),
                    incarnation: n.incarnation,
                    joined_at_ms: n.joined_at_ms,
                    leaving: n.leaving || control.is_drained(&n.node),
                    declared,
                    labels: meta.labels,
                    placement: meta.placement,
                }
            })
            .collect();
        let counted: BTreeSet<(String, i64)> =
            live.iter().map(|n| (n.id.clone(), n.incarnation)).collect();
        let current: BTreeMap<String, Owner> = self
            .assignments
            .iter()
            .filter_map(|a| {
                a.owner
                    .clone()
                    .map(|(node, incarnation)| (a.task.clone(), Owner { node, incarnation }))
            })
            .collect();
        let acting_as = self
            .commands
            .control
            .acting_map(live.iter().map(|n| n.id.as_str()));
        let (resolver, resolvers, leader) = (
            self.resolver.clone(),
            self.resolvers.clone(),
            me.node.clone(),
        );
        let placing = Instant::now();
        let (mut placement, live) = cpu_bound(move || {
            let context = PlaceContext::new(resolver.as_ref())
                .custom(&resolvers)
                .leader(&leader)
                .acting_as(&acting_as);
            (placement::place_with(&context, &live, &current), live)
        })
        .await;
        self.mark_paused(&mut placement, &live);
        self.report(&placement);
        let changes = diff(&self.assignments, &placement);
        if !changes.is_empty() {
            debug!(
                changes = changes.len(),
                placed_in_ms = placing.elapsed().as_millis() as u64,
                "writing placement"
            );
            let writing = Instant::now();
            let written = self
                .shared
                .store
                .write_assignments(&me, epoch, &changes)
                .await;
            self.shared.metrics.store_call(
                "place",
                writing.elapsed().as_secs_f64(),
                written.is_err(),
            );
            match written? {
                LeaderWrite::Written => {
                    self.journal_failovers(&changes, &counted, epoch).await;
                    log_written(&changes, &placement.acting, placing.elapsed());
                    let changed = self
                        .shared
                        .store
                        .assignments_since(&me.cluster, self.generation)
                        .await?;
                    crate::store::merge_assignments(&mut self.assignments, changed);
                    self.assignments_version += 1;
                    self.placed_with = counted;
                }
                LeaderWrite::Deposed => {
                    warn!(epoch, "deposed: placement refused by the store");
                    self.epoch = None;
                }
                LeaderWrite::Stale => self.view_at = None,
            }
        } else {
            self.settled = Some(inputs);
            self.placed_with = counted;
        }
        self.after_placement(leaving).await
    }

    /// Reads the declarations of the registrations in the view that this leader has not read
    /// yet, and forgets those of registrations gone. A registration's declarations never
    /// change. Placement never runs without those of every live node: a node whose
    /// declarations were missing would count as declaring nothing, and lose its tasks.
    async fn read_declarations(&mut self) -> Result<()> {
        let Some(view) = &self.view else {
            return Ok(());
        };
        let registered: HashSet<(String, i64)> = view
            .nodes
            .iter()
            .map(|n| (n.node.clone(), n.incarnation))
            .collect();
        self.declarations.retain(|key, _| registered.contains(key));
        let unseen: Vec<(String, i64)> = registered
            .into_iter()
            .filter(|key| !self.declarations.contains_key(key))
            .collect();
        if unseen.is_empty() {
            return Ok(());
        }
        let cluster = self.shared.member().cluster;
        let store = self.shared.store.clone();
        let registrations = store
            .registrations_declared(&cluster, Some(&unseen))
            .await?;
        // Identical nodes declare one set: read it once, and share its map.
        let mut sets: HashMap<String, Declared> = HashMap::new();
        for d in self.declarations.values() {
            sets.entry(d.digest.clone()).or_insert_with(|| d.clone());
        }
        let mut wanted: Vec<String> = registrations
            .iter()
            .filter(|r| r.inline.is_none() && !sets.contains_key(&r.digest))
            .map(|r| r.digest.clone())
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let as_declared = |digest: &str, set: &crate::store::DeclaredSet| Declared {
            digest: digest.to_string(),
            tasks: Arc::new(
                set.tasks
                    .iter()
                    .map(|t| (t.name.clone(), t.hash.clone()))
                    .collect(),
            ),
            meta: NodeMeta {
                placement: set.placement.clone(),
                ..NodeMeta::default()
            },
        };
        for (digest, set) in store.declared_sets(&cluster, &wanted).await? {
            let declared = as_declared(&digest, &set);
            sets.insert(digest, declared);
        }
        for r in registrations {
            let set = match &r.inline {
                Some(set) => as_declared(&r.digest, set),
                // A set not found declares nothing (it cannot be, while named).
                None => sets.get(&r.digest).cloned().unwrap_or_default(),
            };
            let declared = Declared {
                meta: NodeMeta {
                    placement: set.meta.placement,
                    ..r.meta
                },
                ..set
            };
            self.declarations.insert((r.node, r.incarnation), declared);
        }
        // A registration and its declarations are written together: one with none found
        // declares nothing (and is not read again at every round).
        for key in unseen {
            self.declarations.entry(key).or_default();
        }
        Ok(())
    }

    /// Tasks paused cluster-wide are unplaced with a reason naming the command (rather than
    /// "declared by no live node"), unless a node-scoped resume lets some node run them.
    pub(super) fn mark_paused(&self, placement: &mut placement::Placement, live: &[NodeInfo]) {
        for (task, seq) in self.commands.control.paused_in_cluster() {
            let declared = live.iter().any(|n| {
                self.declarations
                    .get(&(n.id.clone(), n.incarnation))
                    .is_some_and(|d| d.tasks.contains_key(task))
            });
            let running_somewhere = placement.owners.contains_key(task)
                || placement
                    .everywhere
                    .get(task)
                    .is_some_and(|n| !n.is_empty());
            if declared && !running_somewhere {
                placement.everywhere.remove(task);
                placement
                    .unplaced
                    .insert(task.to_string(), format!("paused by command #{seq}"));
            }
        }
    }

    /// The alert sender runs while this node leads (and is not leaving) and has sinks.
    fn supervise_alerts(&mut self, leaving: bool) {
        let lead = self.epoch.is_some() && !leaving && !self.shared.alerts.is_empty();
        let running = self
            .alerting
            .as_ref()
            .is_some_and(|(_, t)| !t.is_finished());
        if lead && !running {
            let stop = CancellationToken::new();
            let task = tokio::spawn(crate::node::alerter::run(self.shared.clone(), stop.clone()));
            self.alerting = Some((stop, task));
        } else if !lead {
            if let Some((stop, _)) = self.alerting.take() {
                stop.cancel();
            }
        }
    }

    /// A leaving leader gives up once it owns nothing; the leader purges old history.
    pub(super) async fn after_placement(&mut self, leaving: bool) -> Result<()> {
        self.supervise_alerts(leaving);
        // Only the leader in office moves rolling restarts on (not one just deposed).
        if !leaving && self.epoch.is_some() {
            self.drive_rolling_restarts().await?;
        }
        let me = self.shared.member();
        if leaving && self.owned().is_empty() {
            self.shared.store.release_leadership(&me).await?;
            self.epoch = None;
        }
        // Purging a long history (tens of thousands of item records after a backlog of
        // files) can take longer than a round: it runs beside the rounds, one at a time, so
        // that the leader goes on observing, placing and supervising its own runners.
        let idle = self.purging.as_ref().is_none_or(|p| p.is_finished());
        if idle && self.last_purge.elapsed() >= Duration::from_secs(60) {
            self.last_purge = Instant::now();
            let before = self.shared.clock.now_ms()
                - self.shared.timing.history_retention.as_millis() as i64;
            let store = self.shared.store.clone();
            let purge = async move {
                match store.purge_history(&me.cluster, before).await {
                    Ok(purged) => debug!(purged, "history purged"),
                    Err(e) => {
                        warn!(error = %e, "purging the history failed; trying again in a minute")
                    }
                }
            };
            self.purging = Some(tokio::spawn(purge.in_current_span()));
        }
        Ok(())
    }

    /// Records the deaths the leader has not recorded yet (every leader reports each death
    /// with the same id, so the journal holds it once).
    pub(super) async fn journal_deaths(&mut self) {
        let Some(view) = &self.view else { return };
        let retention = self.shared.timing.history_retention.as_millis() as i64;
        let not_before = self.shared.clock.now_ms() - retention;
        for event in journal::deaths(view, &mut self.deaths_reported, not_before) {
            self.shared.journal.record(event);
        }
    }

    /// Records the failovers of a placement round just written.
    pub(super) async fn journal_failovers(
        &self,
        changes: &[AssignmentChange],
        live: &BTreeSet<(String, i64)>,
        epoch: i64,
    ) {
        let Some(view) = &self.view else { return };
        let at = self.shared.clock.now_ms();
        for f in journal::failovers(&self.assignments, changes, live, view, at) {
            info!(from = %f.from, tasks = f.tasks.len(), duration_ms = f.duration_ms, "failover");
            if let Some(ms) = f.duration_ms {
                self.shared.metrics.failover(ms);
            }
            self.shared.journal.record(f.event(epoch, at));
        }
    }

    /// Logs placement problems once each time they change.
    pub(super) fn report(&mut self, placement: &placement::Placement) {
        let text = format!("{:?}{:?}", placement.unplaced, placement.conflicts);
        if text == self.reported {
            return;
        }
        self.reported = text;
        for c in &placement.conflicts {
            error!(
                task = %c.task,
                definition_in_force = %c.reference_hash,
                dissenters = ?c.dissenters,
                "nodes declare different definitions of this task; the dissenting nodes are not eligible for it until their config agrees"
            );
        }
    }
}

/// Placement changes logged one line each at `info` up to this many; beyond, one summary
/// line (a join among 100 nodes of 100,000 tasks moves a thousand, and a first placement
/// all of them), each task at `debug`.
const CHANGES_LOGGED_EACH: usize = 20;

/// Logs a written placement: where each task went, or a summary of a large one.
fn log_written(
    changes: &[AssignmentChange],
    acting: &std::collections::BTreeMap<String, String>,
    took: std::time::Duration,
) {
    let unplaced: Vec<&AssignmentChange> = changes.iter().filter(|c| c.owner.is_none()).collect();
    let each = changes.len() <= CHANGES_LOGGED_EACH;
    for c in changes {
        match (&c.owner, acting.get(&c.task)) {
            (Some((node, _)), Some(primary)) if each => {
                info!(task = %c.task, owner = %node, acting_for = %primary, "assigned")
            }
            (Some((node, _)), None) if each => info!(task = %c.task, owner = %node, "assigned"),
            (Some((node, _)), _) => debug!(task = %c.task, owner = %node, "assigned"),
            (None, _) if each => {
                warn!(task = %c.task, reason = c.reason.as_deref().unwrap_or(""), "unplaced")
            }
            (None, _) => {
                debug!(task = %c.task, reason = c.reason.as_deref().unwrap_or(""), "unplaced")
            }
        }
    }
    if each {
        return;
    }
    let mut owners: HashMap<&str, usize> = HashMap::new();
    for c in changes {
        if let Some((node, _)) = &c.owner {
            *owners.entry(node.as_str()).or_default() += 1;
        }
    }
    info!(
        changes = changes.len(),
        new_owners = owners.len(),
        written_in_ms = took.as_millis() as u64,
        "placement written (each task at debug level)"
    );
    if let Some(first) = unplaced.first() {
        warn!(
            tasks = unplaced.len(),
            first = %first.task,
            reason = first.reason.as_deref().unwrap_or(""),
            "unplaced (each task at debug level)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::placement::{Owner, Placement};

    fn held(
        task: &str,
        owner: Option<(&str, i64)>,
        token: i64,
        reason: Option<&str>,
    ) -> Assignment {
        Assignment {
            task: task.into(),
            owner: owner.map(|(n, i)| (n.into(), i)),
            token,
            reason: reason.map(Into::into),
            placed_at_ms: 0,
        }
    }

    #[test]
    fn diff_writes_only_what_changed_with_the_token_it_read() {
        let current = [
            held("a", Some(("n1", 1)), 3, None),
            held("b", Some(("n1", 1)), 4, None),
            held("c", None, 2, Some("waiting for 2 servers")),
            held("d", Some(("n2", 7)), 5, None),
        ];
        let mut placement = Placement::default();
        let owner = |node: &str, incarnation| Owner {
            node: node.into(),
            incarnation,
        };
        placement.owners.insert("a".into(), owner("n1", 1)); // unchanged
        placement.owners.insert("b".into(), owner("n2", 7)); // moved
        placement.owners.insert("c".into(), owner("n1", 1)); // placed at last
        placement.owners.insert("e".into(), owner("n2", 7)); // new task
                                                             // "d" is declared by no live node any more.
        let changes = diff(&current, &placement);
        // Task, new owner, reason, the token the leader read.
        type Seen<'a> = (
            &'a str,
            Option<(&'a str, i64)>,
            Option<&'a str>,
            Option<i64>,
        );
        let seen: Vec<Seen> = changes
            .iter()
            .map(|c| {
                (
                    c.task.as_str(),
                    c.owner.as_ref().map(|(n, i)| (n.as_str(), *i)),
                    c.reason.as_deref(),
                    c.expected_token,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("b", Some(("n2", 7)), None, Some(4)),
                ("c", Some(("n1", 1)), None, Some(2)),
                ("e", Some(("n2", 7)), None, None),
                ("d", None, Some("declared by no live node"), Some(5)),
            ]
        );
    }
}
