//! The node's local view of its own lease (contract 4).
//!
//! The store expires a node `node_timeout` after it *committed* the last renewal; the node
//! counts from the moment it *sent* that renewal, on its monotonic clock, minus a margin.
//! Since a commit never precedes its send, the local deadline always falls first: the node
//! stops starting work, and cancels running work, before anyone can take its tasks.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct Lease {
    timeout: Duration,
    margin: Duration,
    valid_until: Option<Instant>,
}

impl Lease {
    /// `margin` must be smaller than `timeout`; the builder validates it.
    pub fn new(timeout: Duration, margin: Duration) -> Self {
        debug_assert!(margin < timeout);
        Lease {
            timeout,
            margin,
            valid_until: None,
        }
    }

    /// A renewal sent at `sent_at` was accepted by the store.
    pub fn renewed(&mut self, sent_at: Instant) {
        let until = sent_at + (self.timeout - self.margin);
        // Renewals may complete out of order; keep the latest deadline.
        if self.valid_until.is_none_or(|v| until > v) {
            self.valid_until = Some(until);
        }
    }

    /// The store refused a renewal (this registration expired or was replaced): no lease.
    pub fn revoke(&mut self) {
        self.valid_until = None;
    }

    pub fn is_valid(&self, now: Instant) -> bool {
        self.valid_until.is_some_and(|v| now < v)
    }

    /// The local deadline, if the lease is held.
    pub fn valid_until(&self) -> Option<Instant> {
        self.valid_until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn deadline_runs_from_send_time_minus_margin() {
        let mut lease = Lease::new(Duration::from_millis(1000), Duration::from_millis(200));
        let t0 = Instant::now();
        assert!(!lease.is_valid(t0), "no lease before the first renewal");
        lease.renewed(t0);
        assert!(lease.is_valid(t0 + Duration::from_millis(799)));
        assert!(!lease.is_valid(t0 + Duration::from_millis(800)));
    }

    #[tokio::test(start_paused = true)]
    async fn late_completing_old_renewal_does_not_shorten_the_lease() {
        let mut lease = Lease::new(Duration::from_millis(1000), Duration::from_millis(200));
        let t0 = Instant::now();
        lease.renewed(t0 + Duration::from_millis(500));
        lease.renewed(t0);
        assert!(lease.is_valid(t0 + Duration::from_millis(1200)));
    }

    #[tokio::test(start_paused = true)]
    async fn frozen_process_wakes_without_a_lease() {
        let mut lease = Lease::new(Duration::from_millis(1000), Duration::from_millis(200));
        lease.renewed(Instant::now());
        tokio::time::advance(Duration::from_secs(30)).await; // SIGSTOP for 30 s
        assert!(!lease.is_valid(Instant::now()));
        lease.revoke();
        assert_eq!(lease.valid_until(), None);
    }
}
