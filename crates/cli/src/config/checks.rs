//! What every section checks alike: names and durations, and the problem a check reports.

use std::time::Duration;

use rota::{core::schedule::parse_duration, node::validate_name, Error};

/// One thing wrong with a config: where, what, why and how to fix it.
pub type ConfigProblem = rota::Problem;

pub(super) fn check_name(p: &mut Vec<ConfigProblem>, field: &str, value: &str, example: &str) {
    if value.is_empty() {
        p.push(ConfigProblem::new(
            field,
            "",
            "is missing",
            format!("set {example}"),
        ));
    } else if let Err(Error::Config { message, .. }) = validate_name(field, value) {
        p.push(ConfigProblem::from_message(
            field,
            value,
            &message,
            "use 1 to 128 letters, digits, `-`, `_` or `.`",
        ));
    }
}

/// Parses a duration, or records why not.
pub(super) fn duration(p: &mut Vec<ConfigProblem>, field: &str, text: &str) -> Option<Duration> {
    match parse_duration(text) {
        Ok(d) => Some(d),
        Err(message) => {
            p.push(ConfigProblem::from_message(
                field,
                text,
                &message,
                "write 250ms, 5s, 2m, 1h or 1d",
            ));
            None
        }
    }
}
