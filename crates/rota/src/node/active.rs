//! Runs of each task going on in this process, whatever runner or term started them. A
//! runner restarted after a store error, or a new term after a lost lease, must not start a
//! task beside a run of it that is still going here (contract 11); an instant due while one
//! runs waits here for it to end.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::{sync::Notify, time::Instant};

#[derive(Default)]
pub(crate) struct ActiveRuns {
    counts: Mutex<HashMap<String, usize>>,
    ended: Notify,
}

/// One run of a task, counted until dropped.
pub(crate) struct ActiveRun {
    runs: Arc<ActiveRuns>,
    task: String,
}

impl ActiveRuns {
    /// Counts a run of `task` until the returned guard is dropped.
    pub fn enter(self: &Arc<Self>, task: &str) -> ActiveRun {
        *self
            .counts
            .lock()
            .unwrap()
            .entry(task.to_string())
            .or_default() += 1;
        ActiveRun {
            runs: self.clone(),
            task: task.to_string(),
        }
    }

    pub fn is_active(&self, task: &str) -> bool {
        self.counts.lock().unwrap().contains_key(task)
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
        let mut counts = self.runs.counts.lock().unwrap();
        if let Some(n) = counts.get_mut(&self.task) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.task);
            }
        }
        drop(counts);
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
}
