//! The node's local view of its own lease (contract 4).
//!
//! The store expires a node `node_timeout` after it *committed* the last renewal; the node
//! counts from the moment it *sent* that renewal, on its monotonic clock, minus a margin.
//! Since a commit never precedes its send, the local deadline always falls first: the node
//! stops starting work, and cancels running work, before anyone can take its tasks.

use std::{ops::Add, time::Duration};

/// A lease on any monotonic clock `I` the caller reads (the node reads tokio's, so that
/// tests can pause time); it never reads a clock itself.
#[derive(Debug, Clone)]
pub struct Lease<I> {
    timeout: Duration,
    margin: Duration,
    valid_until: Option<I>,
    /// How many times the lease was held and then lost (ran out or was revoked), whether or
    /// not a later renewal restored it: work that spans a change of this count did not run
    /// under one unbroken lease.
    breaks: u64,
}

impl<I: Copy + Ord + Add<Duration, Output = I>> Lease<I> {
    /// `margin` must be smaller than `timeout`; the builder validates it.
    pub fn new(timeout: Duration, margin: Duration) -> Self {
        debug_assert!(margin < timeout);
        Lease {
            timeout,
            margin,
            valid_until: None,
            breaks: 0,
        }
    }

    /// A renewal sent at `sent_at` was accepted by the store; its reply came at `now`.
    pub fn renewed(&mut self, sent_at: I, now: I) {
        if self.valid_until.is_some_and(|v| now >= v) {
            // It ran out before this reply came: restored, but broken.
            self.breaks += 1;
        }
        let until = sent_at + (self.timeout - self.margin);
        // Renewals may complete out of order; keep the latest deadline.
        if self.valid_until.is_none_or(|v| until > v) {
            self.valid_until = Some(until);
        }
    }

    /// The store refused a renewal (this registration expired or was replaced): no lease.
    pub fn revoke(&mut self) {
        if self.valid_until.take().is_some() {
            self.breaks += 1;
        }
    }

    /// How many times the lease was lost so far (see `breaks`). The lease held without a
    /// gap between two moments if this count is the same at both and it is valid at the
    /// second.
    pub fn breaks(&self) -> u64 {
        self.breaks
    }

    pub fn is_valid(&self, now: I) -> bool {
        self.valid_until.is_some_and(|v| now < v)
    }

    /// The local deadline, if the lease is held.
    pub fn valid_until(&self) -> Option<I> {
        self.valid_until
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn deadline_runs_from_send_time_minus_margin() {
        let mut lease = Lease::new(Duration::from_millis(1000), Duration::from_millis(200));
        let t0 = Instant::now();
        assert!(!lease.is_valid(t0), "no lease before the first renewal");
        lease.renewed(t0, t0);
        assert!(lease.is_valid(t0 + Duration::from_millis(799)));
        assert!(!lease.is_valid(t0 + Duration::from_millis(800)));
    }

    #[test]
    fn late_completing_old_renewal_does_not_shorten_the_lease() {
        let mut lease = Lease::new(Duration::from_millis(1000), Duration::from_millis(200));
        let t0 = Instant::now();
        lease.renewed(
            t0 + Duration::from_millis(500),
            t0 + Duration::from_millis(600),
        );
        lease.renewed(t0, t0 + Duration::from_millis(700));
        assert!(lease.is_valid(t0 + Duration::from_millis(1200)));
        assert_eq!(lease.breaks(), 0, "renewed in time, out of order");
    }

    #[test]
    fn frozen_process_wakes_without_a_lease() {
        let mut lease = Lease::new(Duration::from_millis(1000), Duration::from_millis(200));
        let t0 = Instant::now();
        lease.renewed(t0, t0);
        let thawed = t0 + Duration::from_secs(30); // SIGSTOP for 30 s
        assert!(!lease.is_valid(thawed));
        lease.revoke();
        assert_eq!(lease.valid_until(), None);
        assert_eq!(lease.breaks(), 1);
        lease.revoke();
        assert_eq!(lease.breaks(), 1, "nothing held, nothing lost");
    }

    #[test]
    fn a_renewal_that_comes_after_the_deadline_restores_a_broken_lease() {
        let mut lease = Lease::new(Duration::from_millis(1000), Duration::from_millis(200));
        let t0 = Instant::now();
        lease.renewed(t0, t0);
        assert_eq!(lease.breaks(), 0, "the first renewal breaks nothing");
        // Sent at 200 ms, answered at 900 ms: valid until 1000 ms, with a gap 800..900 ms.
        let sent = t0 + Duration::from_millis(200);
        lease.renewed(sent, t0 + Duration::from_millis(900));
        assert!(lease.is_valid(t0 + Duration::from_millis(950)));
        assert_eq!(
            lease.breaks(),
            1,
            "the gap is counted though the lease is valid again"
        );
        // Answered just before the deadline: no gap.
        lease.renewed(
            t0 + Duration::from_millis(400),
            t0 + Duration::from_millis(999),
        );
        assert_eq!(lease.breaks(), 1);
    }
}
