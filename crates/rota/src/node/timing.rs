//! A node's timing: heartbeat, node timeout, fence margin, grace, retention; their defaults
//! and the rules that keep them consistent.

use std::time::Duration;

use crate::error::{Error, Result};

/// Timing of membership and failover. Defaults give failover within about a second;
/// [`Timing::fast`] within about 350 ms, at a cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// How often the node renews its registration.
    pub heartbeat: Duration,
    /// The store declares a node dead this long after its last renewal.
    pub node_timeout: Duration,
    /// The node stops starting work this long *before* the store could declare it dead.
    pub fence_margin: Duration,
    /// How often the node polls the cluster's generation for changes (the safety net where
    /// the store cannot push).
    pub watch_interval: Duration,
    /// On a graceful stop, how long running fires may take to finish.
    pub shutdown_grace: Duration,
    /// On a graceful stop, how long to wait for other nodes to take over this node's tasks.
    pub handover_timeout: Duration,
    /// How long fire history is kept.
    pub history_retention: Duration,
    /// A task whose next instant is further ahead than this gives up its runner's memory
    /// until half this long before the instant ("parks"): an idle node's cost does not grow
    /// with its tasks. Not in the config file; tests shorten it.
    pub park_after: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat: Duration::from_millis(200),
            node_timeout: Duration::from_millis(1000),
            fence_margin: Duration::from_millis(200),
            watch_interval: Duration::from_millis(50),
            shutdown_grace: Duration::from_secs(10),
            handover_timeout: Duration::from_secs(5),
            history_retention: Duration::from_secs(24 * 3600),
            park_after: Duration::from_secs(60),
        }
    }
}

impl Timing {
    /// The fast profile: failover after a machine-level failure (a frozen or unplugged
    /// host, whose connections nobody closes) within about 350 ms instead of about a
    /// second. The cost: four times the heartbeats (20 store writes a second per node
    /// instead of 5), and a node fences itself if its renewals are held up for 150 ms (a
    /// store or a host so loaded that a write takes that long) instead of 800 ms.
    pub fn fast() -> Self {
        Timing {
            heartbeat: Duration::from_millis(50),
            node_timeout: Duration::from_millis(250),
            fence_margin: Duration::from_millis(100),
            watch_interval: Duration::from_millis(20),
            ..Timing::default()
        }
    }

    /// The profile named `name` (`default` or `fast`), as the config file names them.
    pub fn profile(name: &str) -> Option<Self> {
        match name {
            "default" => Some(Timing::default()),
            "fast" => Some(Timing::fast()),
            _ => None,
        }
    }

    /// Checks the relations failover depends on; names the field and the fix.
    pub fn validate(&self) -> Result<()> {
        let ms = |d: Duration| d.as_millis();
        if self.heartbeat.is_zero() {
            return Err(Error::config(
                "timing.heartbeat",
                "must be more than 0; the default is 200ms",
            ));
        }
        if self.watch_interval.is_zero() {
            return Err(Error::config(
                "timing.watch_interval",
                "must be more than 0; the default is 50ms",
            ));
        }
        if self.park_after < Duration::from_millis(100) {
            return Err(Error::config(
                "timing.park_after",
                "must be at least 100ms; the default is 60s",
            ));
        }
        if self.fence_margin.is_zero() {
            return Err(Error::config(
                "timing.fence_margin",
                "must be more than 0; the default is 200ms",
            ));
        }
        // At least two renewals must fit in the time the node may go without one.
        if self.node_timeout < self.fence_margin + self.heartbeat * 2 {
            return Err(Error::config(
                "timing.node_timeout",
                format!(
                    "{}ms is too short for heartbeat {}ms and fence_margin {}ms; it must be at least \
                     fence_margin + 2 x heartbeat ({}ms): raise node_timeout or lower heartbeat",
                    ms(self.node_timeout),
                    ms(self.heartbeat),
                    ms(self.fence_margin),
                    ms(self.fence_margin + self.heartbeat * 2)
                ),
            ));
        }
        Ok(())
    }
}
