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
