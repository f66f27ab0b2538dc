//! `[log]`: how the daemon logs (format and level).

use serde::Deserialize;

use super::checks::ConfigProblem;

const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// `[log]`: how the daemon logs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `human` (default) or `json`.
    #[serde(default = "human")]
    pub format: String,
    /// `trace`, `debug`, `info` (default), `warn`, `error` or `off`.
    #[serde(default = "info")]
    pub level: String,
}

fn human() -> String {
    "human".into()
}

fn info() -> String {
    "info".into()
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: human(),
            level: info(),
        }
    }
}

impl LogSection {
    /// `format`: `human` or `json`.
    pub(super) fn check_format(&self, p: &mut Vec<ConfigProblem>) {
        if !["human", "json"].contains(&self.format.as_str()) {
            p.push(ConfigProblem::new(
                "log.format",
                &self.format,
                "unknown log format",
                "use \"human\" or \"json\"",
            ));
        }
    }

    /// `level`: one of [`LOG_LEVELS`].
    pub(super) fn check_level(&self, p: &mut Vec<ConfigProblem>) {
        if !LOG_LEVELS.contains(&self.level.as_str()) {
            p.push(ConfigProblem::new(
                "log.level",
                &self.level,
                "unknown log level",
                format!("use one of {}", LOG_LEVELS.join(", ")),
            ));
        }
    }
}
