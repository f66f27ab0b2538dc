//! The supervisor: one runner per task or service this node owns, started and stopped as
//! the assignments change, handed over with its grace at a graceful stop.

use super::*;

impl Runtime {
    pub(super) fn owned(&self) -> Vec<(String, i64)> {
        let me = self.shared.member();
        self.assignments
            .iter()
            .filter(|a| {
                a.owner
                    .as_ref()
                    .is_some_and(|(n, i)| *n == me.node && *i == me.incarnation)
            })
            .map(|a| (a.task.clone(), a.token))
            .collect()
    }

    /// One runner per owned task and token; runners of lost tasks stop scheduling.
    /// Stops the runner of `task` and keeps its handle until it has ended.
    pub(super) fn retire(&mut self, task: &str) {
        if let Some(runner) = self.runners.remove(task) {
            runner.stop.cancel();
            self.stopping
                .entry(task.to_string())
                .or_default()
                .push(runner.task);
        }
    }

    pub(super) fn supervise(&mut self) {
        // No task starts before the commands this node missed are applied (contract 8);
        // nothing runs here while drained, or while paused here. A command not yet applied
        // only holds back starts: what runs goes on until a command that applies to it is
        // applied (stopping every runner at each new command cut services short, and made
        // a file handler's file be given back and handled again).
        let me = self.shared.member().node;
        let control = &self.commands.control;
        let caught_up = self.commands.caught_up();
        let owned: HashMap<String, i64> = if self.shared.lease_valid() && !control.is_drained(&me) {
            self.owned()
                .into_iter()
                .filter(|(task, _)| !control.is_paused(&me, task))
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
            .filter(|(task, runner)| {
                owned.get(*task) != Some(&runner.token)
                    || runner.task.is_finished()
                    || (redefined && self.definition_of(task).as_ref() != Some(&runner.definition))
            })
            .map(|(task, _)| task.clone())
            .collect();
        for task in lost {
            self.retire(&task); // kept in `stopping` until it has ended
        }
        self.stopping.retain(|_, handles| {
            handles.retain(|h| !h.is_finished());
            !handles.is_empty()
        });
        if !caught_up {
            return;
        }
        // A run-now request reaches the runner of its task (every share of an `all` task);
        // the runners are told only when the log brought one.
        let runs_of = |task: &str| {
            let base = rota_core::placement::split_per_node_name(task).map_or(task, |(t, _)| t);
            self.commands.control.runs(base)
        };
        let new_runs = self.commands.control.last_run() != self.runs_pushed;
        self.runs_pushed = self.commands.control.last_run();
        for (task, runner) in self.runners.iter().filter(|_| new_runs) {
            if let Some(runs) = &runner.runs {
                let now = runs_of(task);
                runs.send_if_modified(|seen| {
                    let changed = *seen != now;
                    if changed {
                        *seen = now;
                    }
                    changed
                });
            }
        }
        for (task, token) in owned {
            // Never two runners of one task: a new one waits until the old one has ended.
            if self.runners.contains_key(&task) || self.stopping.contains_key(&task) {
                continue;
            }
            let stop = self.shared.work_token().child_token();
            let mut runs = None;
            let Some(definition) = self.definition_of(&task) else {
                continue;
            };
            let handle = if let Some(spec) = self.task_spec(&task) {
                let (sender, receiver) = watch::channel(runs_of(&task));
                runs = Some(sender);
                let placed_at = self
                    .assignments
                    .iter()
                    .find(|a| a.task == task)
                    .map_or(0, |a| a.placed_at_ms);
                let resumed_at = self.commands.control.resumed_at(&task).unwrap_or(0);
                tokio::spawn(runner::run(
                    self.shared.clone(),
                    spec,
                    token,
                    runner::Start {
                        placed_at,
                        resumed_at,
                    },
                    receiver,
                    stop.clone(),
                ))
            } else if let Some(spec) = self.service_spec(&task) {
                tokio::spawn(crate::node::service_runner::run(
                    self.shared.clone(),
                    spec,
                    token,
                    stop.clone(),
                ))
            } else {
                continue;
            };
            self.runners.insert(
                task,
                RunnerHandle {
                    token,
                    definition,
                    stop,
                    task: handle,
                    runs,
                },
            );
        }
    }

    /// The spec of an owned task: a declared one, or this node's share of an `all` task
    /// (named `task@node`, under which it is claimed and recorded).
    /// The spec of an owned task: this node's own, or the cluster's (`rota ctl apply`).
    pub(super) fn task_spec(&self, owned: &str) -> Option<TaskSpec> {
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
        let mut spec = find(task)?.clone();
        spec.name = owned.to_string();
        Some(spec)
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
