//! Runs of each task going on in this process, whatever runner or term started them. A
//! runner restarted after a store error, or a new term after a lost lease, must not start a
//! task beside a run of it that is still going here (contract 11); an instant due while one
//! runs waits here for it to end, or (overlap `replace`) asks it to stop.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub(crate) struct ActiveRuns {
    /// Per task, the runs going on, each with the token that asks it to give way.
    runs: Mutex<HashMap<String, Vec<(u64, CancellationToken)>>>,
    next_id: std::sync::atomic::AtomicU64,
    ended: Notify,
}

/// One run of a task, counted until dropped.
pub(crate) struct ActiveRun {
    runs: Arc<ActiveRuns>,
    task: String,
    id: u64,
    /// Cancelled when a newer instant replaces this run (overlap `replace`).
    pub replaced: CancellationToken,
}

impl ActiveRuns {
    /// Counts a run of `task` until the returned guard is dropped.
    pub fn enter(self: &Arc<Self>, task: &str) -> ActiveRun {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let replaced = CancellationToken::new();
        self.runs
            .lock()
            .unwrap()
            .entry(task.to_string())
            .or_default()
            .push((id, replaced.clone()));
        ActiveRun {
            runs: self.clone(),
            task: task.to_string(),
            id,
            replaced,
        }
    }

    pub fn is_active(&self, task: &str) -> bool {
        self.runs.lock().unwrap().contains_key(task)
    }

    /// Asks every run of `task` going on here to give way to a newer instant. `false` if
    /// none goes on.
    pub fn replace(&self, task: &str) -> bool {
        match self.runs.lock().unwrap().get(task) {
            Some(runs) => {
                runs.iter().for_each(|(_, token)| token.cancel());
                true
            }
            None => false,
        }
    }

    /// Waits until no run of `task` goes on here; `false` if one still does at `deadline`.
    pub async fn wait_idle(&self, task: &str, deadline: Instant) -> bool {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable(); // registered before the check: no end is missed
            if !self.is_active(task) {
                return true;
            }
            tokio::select! {
                _ = ended => {}
                _ = tokio::time::sleep_until(deadline) => return !self.is_active(task),
            }
        }
    }
}

impl Drop for ActiveRun {
    fn drop(&mut self) {
        let mut runs = self.runs.runs.lock().unwrap();
        if let Some(list) = runs.get_mut(&self.task) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                runs.remove(&self.task);
            }
        }
        drop(runs);
        self.runs.ended.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_waiter_wakes_when_the_last_run_ends_or_at_its_deadline() {
        let runs = Arc::new(ActiveRuns::default());
        let (a, b) = (runs.enter("t"), runs.enter("t"));
        assert!(runs.is_active("t") && !runs.is_active("u"));
        let deadline = Instant::now() + Duration::from_secs(10);
        let waiter = {
            let runs = runs.clone();
            tokio::spawn(async move { runs.wait_idle("t", deadline).await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(a);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished(), "one run still goes on");
        drop(b);
        assert!(waiter.await.unwrap());
        let _c = runs.enter("t");
        let soon = Instant::now() + Duration::from_secs(2);
        assert!(
            !runs.wait_idle("t", soon).await,
            "still running at the deadline"
        );
        assert_eq!(Instant::now(), soon);
    }

    #[test]
    fn replace_asks_only_the_tasks_own_runs_to_give_way() {
        let runs = Arc::new(ActiveRuns::default());
        let (a, b, other) = (runs.enter("t"), runs.enter("t"), runs.enter("u"));
        assert!(runs.replace("t"));
        assert!(a.replaced.is_cancelled() && b.replaced.is_cancelled());
        assert!(!other.replaced.is_cancelled());
        drop((a, b));
        assert!(!runs.replace("t"), "no run of t goes on any more");
        let c = runs.enter("t");
        assert!(!c.replaced.is_cancelled(), "a new run starts afresh");
    }
}
