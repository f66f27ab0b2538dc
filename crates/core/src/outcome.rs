//! What becomes of a scheduled instant, and the policies that decide it when a node could
//! not start it on time or died while running it.

/// What to do with instants that passed while no eligible node could start them
/// (or that are later than `misfire_threshold` for any other reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MisfirePolicy {
    /// Record the missed instants as misfired and start the most recent one once, late.
    RunOnce,
    /// Record the missed instants as misfired and start none of them.
    Skip,
}

/// What to do with a fire whose node died while running it (contract 9). A fire whose node
/// died after claiming it but before its work began is started by the new owner under
/// either policy: nothing ran.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryPolicy {
    /// At least once: run the instant again on the new owner, with the attempt number
    /// raised (`FireContext::attempt`, `ROTA_ATTEMPT`). The work may have finished before
    /// its node died, so it must be idempotent or check the attempt.
    Retry,
    /// At most once (the default): record the fire as abandoned, counted and shown.
    #[default]
    Abandon,
}

/// What an instant does when the task's previous run is still going at its time. No rule
/// ever runs two instances of one task at once (contract 11).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum OverlapPolicy {
    /// Recorded as skipped at once.
    Skip,
    /// Waits for the previous run to end, and starts then if that is within the task's
    /// misfire threshold (else it is recorded as skipped). The runner waits for one instant
    /// at a time: while one waits, the instants after it are recorded as skipped.
    #[default]
    Queue,
    /// The previous run is cancelled (with the grace a timeout gets), and this instant
    /// starts once it has ended, within the misfire threshold.
    Replace,
}

impl OverlapPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            OverlapPolicy::Skip => "skip",
            OverlapPolicy::Queue => "queue",
            OverlapPolicy::Replace => "replace",
        }
    }

    pub fn parse(s: &str) -> Option<OverlapPolicy> {
        Some(match s {
            "skip" => OverlapPolicy::Skip,
            "queue" => OverlapPolicy::Queue,
            "replace" => OverlapPolicy::Replace,
            _ => return None,
        })
    }
}

/// Runs a failed (or timed-out) fire again, as the next attempt of the same instant. Apart
/// from [`RecoveryPolicy`], which is about a node dying mid-run; both count attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt: an instant has at most `max + 1` attempts in all.
    pub max: u32,
    /// The wait before the first retry; it doubles at each retry after that.
    pub backoff: std::time::Duration,
    /// The longest wait between two attempts.
    pub max_backoff: std::time::Duration,
}

/// Why a failed fire is not run again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRetry {
    /// Its attempts are spent.
    Spent,
    /// The retry would start at or after the task's next instant.
    NextInstant(i64),
}

impl RetryPolicy {
    /// The wait before attempt `next` (2 for the first retry): `backoff`, doubled at each
    /// retry after the first, at most `max_backoff`.
    pub fn delay(&self, next: i64) -> std::time::Duration {
        let doublings = (next - 2).clamp(0, 32) as u32;
        self.backoff
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(self.max_backoff.max(self.backoff))
    }

    /// When a fire whose `attempt` failed at `ended_ms` starts again: never past the task's
    /// next instant (`next_instant_ms`), and never once `max` retries are spent.
    pub fn next_attempt_at(
        &self,
        attempt: i64,
        ended_ms: i64,
        next_instant_ms: Option<i64>,
    ) -> Result<i64, NoRetry> {
        if attempt > i64::from(self.max) {
            return Err(NoRetry::Spent);
        }
        let at = ended_ms.saturating_add(self.delay(attempt + 1).as_millis() as i64);
        match next_instant_ms {
            Some(next) if at >= next => Err(NoRetry::NextInstant(next)),
            _ => Ok(at),
        }
    }
}

/// Outcome of one fire, as kept in its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Running,
    Ok,
    Failed,
    TimedOut,
    Skipped,
    Misfired,
    Abandoned,
    /// An item given back by its owner, interrupted by a graceful handover: the service's
    /// next owner handles it again, as the next attempt.
    Released,
}

impl Outcome {
    /// A fire finished this way never started its work (it may have been begun and then
    /// stopped before the start): its record keeps no start time.
    pub fn never_started(self) -> bool {
        matches!(self, Outcome::Skipped | Outcome::Misfired)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed-out",
            Outcome::Skipped => "skipped",
            Outcome::Misfired => "misfired",
            Outcome::Abandoned => "abandoned",
            Outcome::Released => "released",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Some(match s {
            "running" => Outcome::Running,
            "ok" => Outcome::Ok,
            "failed" => Outcome::Failed,
            "timed-out" => Outcome::TimedOut,
            "skipped" => Outcome::Skipped,
            "misfired" => Outcome::Misfired,
            "abandoned" => Outcome::Abandoned,
            "released" => Outcome::Released,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn retries_back_off_doubling_up_to_their_cap_and_stop_at_the_next_instant() {
        let retry = RetryPolicy {
            max: 3,
            backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(25),
        };
        let secs = |n| retry.delay(n).as_secs();
        assert_eq!((secs(2), secs(3), secs(4), secs(60)), (10, 20, 25, 25));
        // Attempt 1 failed at t=100 s: attempt 2 at 110 s; attempt 3 failed at 200 s: 4 at 225 s.
        assert_eq!(retry.next_attempt_at(1, 100_000, None), Ok(110_000));
        assert_eq!(
            retry.next_attempt_at(3, 200_000, Some(300_000)),
            Ok(225_000)
        );
        assert_eq!(retry.next_attempt_at(4, 200_000, None), Err(NoRetry::Spent));
        // Never at or past the next instant.
        assert_eq!(
            retry.next_attempt_at(1, 100_000, Some(110_000)),
            Err(NoRetry::NextInstant(110_000))
        );
        assert_eq!(
            retry.next_attempt_at(1, 100_000, Some(110_001)),
            Ok(110_000)
        );
        let none = RetryPolicy { max: 0, ..retry };
        assert_eq!(none.next_attempt_at(1, 0, None), Err(NoRetry::Spent));
    }

    #[test]
    fn overlap_rules_parse_back() {
        for rule in [
            OverlapPolicy::Skip,
            OverlapPolicy::Queue,
            OverlapPolicy::Replace,
        ] {
            assert_eq!(OverlapPolicy::parse(rule.as_str()), Some(rule));
        }
        assert_eq!(OverlapPolicy::default(), OverlapPolicy::Queue);
        assert_eq!(OverlapPolicy::parse("allow"), None);
    }
}
