//! The store's clock as this node estimates it: anchored on each store read, advanced by the
//! local monotonic clock in between. Schedules run on it, so a node whose wall clock is off
//! still fires on time (contract 5).

use std::sync::Mutex;

use tokio::time::Instant;

#[derive(Debug)]
pub struct StoreClock {
    anchor: Mutex<(i64, Instant)>,
}

impl StoreClock {
    pub fn new(store_now_ms: i64, at: Instant) -> Self {
        StoreClock {
            anchor: Mutex::new((store_now_ms, at)),
        }
    }

    /// Re-anchors on a store reading taken between `sent` and `received` (midpoint).
    pub fn observe(&self, store_now_ms: i64, sent: Instant, received: Instant) {
        let mid = sent + (received - sent) / 2;
        *self.anchor.lock().unwrap() = (store_now_ms, mid);
    }

    pub fn now_ms(&self) -> i64 {
        let (ms, at) = *self.anchor.lock().unwrap();
        ms + Instant::now().saturating_duration_since(at).as_millis() as i64
    }

    /// The local instant at which the store clock reads `ms`.
    pub fn instant_of(&self, ms: i64) -> Instant {
        let (anchor_ms, at) = *self.anchor.lock().unwrap();
        let delta = ms - anchor_ms;
        if delta >= 0 {
            at + std::time::Duration::from_millis(delta as u64)
        } else {
            at.checked_sub(std::time::Duration::from_millis((-delta) as u64))
                .unwrap_or(at)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn advances_with_the_monotonic_clock_and_reanchors() {
        let t0 = Instant::now();
        let clock = StoreClock::new(1_000_000, t0);
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(clock.now_ms(), 1_000_250);
        // A reading of 2_000_000 taken over a 100 ms round trip is placed at its midpoint.
        let sent = Instant::now();
        tokio::time::advance(Duration::from_millis(100)).await;
        clock.observe(2_000_000, sent, Instant::now());
        assert_eq!(clock.now_ms(), 2_000_050);
        assert_eq!(clock.instant_of(2_000_050), Instant::now());
    }
}
