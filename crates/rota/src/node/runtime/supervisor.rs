//! The supervisor: one runner per task or service this node owns, started and stopped as
//! the assignments change, handed over with its grace at a graceful stop.

use super::*;

/// New runners taking over their task at once, at most (see `Shared::taking_over`): one
/// batch of takeover reads (see [`crate::node::batch`]); more would only wait, each holding
/// a runner's memory.
const MAX_TAKING_OVER: usize = 1000;
/// Tasks named in the log line of a round that starts runners (the rest are counted).
const STARTED_NAMED: usize = 10;

impl Runtime {
    pub(super) fn owned(&self) -> Vec<(String, i64)> {
        self.owned_assignments()
            .map(|a| (a.task.clone(), a.token))
            .collect()
    }

    /// The assignments whose owner is this node's registration.
    fn owned_assignments(&self) -> impl Iterator<Item = &Assignment> {
        let me = self.shared.member();
        self.assignments.iter().filter(move |a| {
            a.owner
                .as_ref()
                .is_some_and(|(n, i)| *n == me.node && *i == me.incarnation)
        })
    }

    /// Stops the runner of `task` and keeps its handle until it has ended; a parked one has
    /// nothing running and is dropped.
    pub(super) fn retire(&mut self, task: &str) {
        if let Some(runner) = self.runners.remove(task) {
            runner.stop.cancel();
            self.stopping
                .entry(task.to_string())
                .or_default()
                .push(runner.task);
        }
        if let Some(parked) = self.parked.remove(task) {
            parked.state.stop().cancel();
            self.wakes.remove(&(parked.state.next_ms, task.to_string()));
        }
    }

    /// What the supervisor's decisions depend on, besides its runners' ends: while these are
    /// unchanged and no runner ended, a round has nothing to supervise, whatever the number
    /// of tasks.
    fn supervision_inputs(&self) -> SupervisionInputs {
        SupervisionInputs {
            assignments: self.assignments_version,
            incarnation: self.shared.member().incarnation,
            lease_valid: self.shared.lease_valid(),
            commands: self.commands.control.through,
            caught_up: self.commands.caught_up(),
            definitions: self.defined.version,
        }
    }

    /// One runner per owned task and token; runners of lost tasks stop scheduling. Returns
    /// whether what this node owns may have changed, so that what depends on the owned
    /// tasks is computed again.
    pub(super) fn supervise(&mut self) -> bool {
        // A runner ended, so its task may need a new one (a parking runner needs none).
        let mut ended = false;
        while let Ok(exit) = self.exits.1.try_recv() {
            let current = self
                .runners
                .get(&exit.task)
                .is_some_and(|r| r.id == exit.id);
            match exit.parked {
                Some(parked) if current => self.park(exit.task, parked),
                // A retired runner parked as it was told to stop.
                Some(parked) => parked.stop().cancel(),
                // Ended on its own (a store error, no more instants): it is replaced once
                // its task has ended.
                None if current => {
                    self.retire(&exit.task);
                    ended = true;
                }
                None => {}
            }
        }
        let stopping = self.stopping.len();
        self.stopping.retain(|_, handles| {
            handles.retain(|h| !h.is_finished());
            !handles.is_empty()
        });
        ended |= self.stopping.len() != stopping;
        let inputs = self.supervision_inputs();
        let changed = self.supervised.as_ref() != Some(&inputs);
        if changed {
            self.supervised = Some(inputs);
        }
        // Runners left to start after a round that started its share of a large takeover
        // are not a change of what this node owns either.
        if changed || ended || std::mem::take(&mut self.starts_pending) {
            self.supervise_all();
        }
        self.wake_due();
        self.shared.metrics.parked(self.parked.len());
        changed
    }

    /// Keeps a runner that parked (see [`Timing::park_after`]) until half `park_after`
    /// before its next instant.
    fn park(&mut self, task: String, state: runner::Parked) {
        let Some(handle) = self.runners.remove(&task) else {
            return;
        };
        self.wakes.insert((state.next_ms, task.clone()));
        let seen_runs = handle
            .runs
            .map(|runs| runs.borrow().clone())
            .unwrap_or_default();
        self.parked.insert(
            task,
            ParkedRunner {
                token: handle.token,
                definition: handle.definition,
                seen_runs,
                state,
            },
        );
    }

    /// Resumes the parked runners whose next instant is near.
    fn wake_due(&mut self) {
        let ahead = self.shared.timing.park_after.as_millis() as i64 / 2;
        let horizon = self.shared.clock.now_ms() + ahead;
        while let Some((at, task)) = self.wakes.first().cloned() {
            if at > horizon {
                break;
            }
            self.wakes.pop_first();
            self.resume(&task);
        }
    }

    fn resume(&mut self, task: &str) {
        let Some(parked) = self.parked.remove(task) else {
            return;
        };
        self.wakes.remove(&(parked.state.next_ms, task.to_string()));
        let Some(spec) = self.task_spec(task) else {
            parked.state.stop().cancel();
            return;
        };
        let stop = parked.state.stop().clone();
        let (sender, receiver) = watch::channel(runs_of(&self.commands.control, task));
        let run = runner::resume(self.shared.clone(), spec, parked.state, receiver);
        let (id, handle) = self.spawn_runner(task, run);
        self.runners.insert(
            task.to_string(),
            RunnerHandle {
                id,
                token: parked.token,
                definition: parked.definition,
                stop,
                task: handle,
                runs: Some(sender),
            },
        );
    }

    /// Spawns a runner whose end (and parked state) reaches the supervisor's next round.
    fn spawn_runner(
        &mut self,
        task: &str,
        run: impl std::future::Future<Output = Option<runner::Parked>> + Send + 'static,
    ) -> (u64, tokio::task::JoinHandle<()>) {
        self.spawned += 1;
        let id = self.spawned;
        let exits = self.exits.0.clone();
        let task = task.to_string();
        let handle = tokio::spawn(async move {
            let parked = run.await;
            let _ = exits.send(RunnerExit { task, id, parked });
        });
        (id, handle)
    }

    fn supervise_all(&mut self) {
        // No task starts before the commands this node missed are applied (contract 8);
        // nothing runs here while drained, or while paused here. A command not yet applied
        // only holds back starts: what runs goes on until a command that applies to it is
        // applied (stopping every runner at each new command cut services short, and made
        // a file handler's file be given back and handled again).
        let me = self.shared.member().node;
        let control = &self.commands.control;
        let caught_up = self.commands.caught_up();
        // Owned tasks, with their token and when they were placed.
        let owned: HashMap<String, (i64, i64)> =
            if self.shared.lease_valid() && !control.is_drained(&me) {
                self.owned_assignments()
                    .filter(|a| !control.is_paused(&me, &a.task))
                    .map(|a| (a.task.clone(), (a.token, a.placed_at_ms)))
                    .collect()
            } else {
                HashMap::new()
            };
        // A runner whose definition changed (or went) is retired like one whose task moved:
        // what it started finishes under the old definition, and a runner of the new one
        // starts once it has ended.
        let redefined = self.defined.version != self.supervised_version;
        self.supervised_version = self.defined.version;
        let lost: Vec<String> = self
            .runners
            .iter()
            .map(|(task, r)| (task, r.token, &r.definition, r.task.is_finished()))
            .chain(
                self.parked
                    .iter()
                    .map(|(task, p)| (task, p.token, &p.definition, false)),
            )
            .filter(|(task, token, definition, finished)| {
                owned.get(*task).map(|(token, _)| token) != Some(token)
                    || *finished
                    || (redefined && self.definition_of(task).as_ref() != Some(*definition))
            })
            .map(|(task, ..)| task.clone())
            .collect();
        for task in lost {
            self.retire(&task); // kept in `stopping` until it has ended
        }
        if !caught_up {
            return;
        }
        // A run-now request reaches the runner of its task (every share of an `all` task);
        // the runners are told only when the log brought one, and a parked one is resumed.
        let new_runs = self.commands.control.last_run() != self.runs_pushed;
        self.runs_pushed = self.commands.control.last_run();
        let mut woken = Vec::new();
        for (task, runner) in self.runners.iter().filter(|_| new_runs) {
            if let Some(runs) = &runner.runs {
                let now = runs_of(&self.commands.control, task);
                runs.send_if_modified(|seen| {
                    let changed = *seen != now;
                    if changed {
                        *seen = now;
                    }
                    changed
                });
            }
        }
        for (task, parked) in self.parked.iter().filter(|_| new_runs) {
            if parked.seen_runs != runs_of(&self.commands.control, task) {
                woken.push(task.clone());
            }
        }
        // One line per round for the runners it starts, not one per task: a takeover of
        // 100,000 tasks wrote 100,000 lines (each runner says so at debug level).
        let (mut started, mut named) = (0usize, Vec::new());
        for (task, (token, placed_at)) in owned {
            // Never two runners of one task: a new one waits until the old one has ended.
            if self.runners.contains_key(&task)
                || self.stopping.contains_key(&task)
                || self.parked.contains_key(&task)
            {
                continue;
            }
            // Taking over many tasks: the rest start in the next rounds.
            if self
                .shared
                .taking_over
                .load(std::sync::atomic::Ordering::SeqCst)
                >= MAX_TAKING_OVER
            {
                self.starts_pending = true;
                break;
            }
            let stop = self.shared.work_token().child_token();
            let mut runs = None;
            let Some(definition) = self.definition_of(&task) else {
                continue;
            };
            let (id, handle) = if let Some(spec) = self.task_spec(&task) {
                let (sender, receiver) = watch::channel(runs_of(&self.commands.control, &task));
                runs = Some(sender);
                let resumed_at = self.commands.control.resumed_at(&task).unwrap_or(0);
                let run = runner::run(
                    self.shared.clone(),
                    spec,
                    token,
                    runner::Start {
                        placed_at,
                        resumed_at,
                    },
                    receiver,
                    stop.clone(),
                    runner::TakingOver::new(&self.shared.taking_over),
                );
                self.spawn_runner(&task, run)
            } else if let Some(spec) = self.service_spec(&task) {
                let run = crate::node::service_runner::run(
                    self.shared.clone(),
                    spec,
                    token,
                    stop.clone(),
                );
                self.spawn_runner(&task, async move {
                    run.await;
                    None
                })
            } else {
                continue;
            };
            started += 1;
            if named.len() < STARTED_NAMED {
                named.push(task.clone());
            }
            self.runners.insert(
                task,
                RunnerHandle {
                    id,
                    token,
                    definition,
                    stop,
                    task: handle,
                    runs,
                },
            );
        }
        if started > 0 {
            let mut tasks = named.join(", ");
            if started > named.len() {
                tasks.push_str(&format!(" and {} more", started - named.len()));
            }
            info!(count = started, %tasks, "owner now: runners started");
        }
        for task in woken {
            self.resume(&task);
        }
    }

    /// The spec of an owned task: this node's own, the cluster's (`rota ctl apply`), or this
    /// node's share of an `all` task (named `task@node`, under which it is claimed and
    /// recorded). Shared with the runner: a takeover of many tasks copies none.
    pub(super) fn task_spec(&self, owned: &str) -> Option<Arc<TaskSpec>> {
        let find = |name: &str| {
            self.shared
                .tasks
                .get(name)
                .or_else(|| self.defined.tasks.get(name))
        };
        if let Some(spec) = find(owned) {
            return Some(spec.clone());
        }
        let (task, _) = placement::split_per_node_name(owned)?;
        let mut spec = TaskSpec::clone(find(task)?);
        spec.name = owned.to_string();
        Some(Arc::new(spec))
    }

    /// The spec of an owned service: this node's own, or the cluster's.
    pub(super) fn service_spec(&self, owned: &str) -> Option<ServiceSpec> {
        let find = |name: &str| {
            self.shared
                .services
                .get(name)
                .or_else(|| self.defined.services.get(name))
        };
        if let Some(spec) = find(owned) {
            return Some(spec.clone());
        }
        let (service, _) = placement::split_per_node_name(owned)?;
        let mut spec = find(service)?.clone();
        spec.name = owned.to_string();
        Some(spec)
    }

    /// The definition hash of what `task` is now (`None`: nothing of that name).
    fn definition_of(&self, task: &str) -> Option<String> {
        match self.task_spec(task) {
            Some(t) => Some(t.definition_hash()),
            None => self.service_spec(task).map(|s| s.definition_hash()),
        }
    }

    pub(super) fn handover_done(&self, since: Instant) -> bool {
        if self.owned().is_empty() || since.elapsed() >= self.shared.timing.handover_timeout {
            return true;
        }
        let me = self.shared.member();
        // Nobody else can take over: no reason to wait.
        self.view.as_ref().is_some_and(|v| {
            !v.nodes
                .iter()
                .any(|n| n.alive && !n.leaving && n.node != me.node)
        })
    }
}

/// A task's run-now requests (every share of an `all` task has its base task's).
fn runs_of(
    control: &rota_core::control::ControlState,
    task: &str,
) -> Vec<rota_core::control::ManualRun> {
    let base = placement::split_per_node_name(task).map_or(task, |(t, _)| t);
    control.runs(base)
}
