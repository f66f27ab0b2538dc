//! The shape of every complaint about an input: where, what, why, and the fix.

/// One thing wrong with an input (config, placement spec, labels): where, what, why, and
/// how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `node.id`, `task[2].cron`, ... (`config` when the place is unknown).
    pub field: String,
    /// The offending value, passwords redacted; empty when the key is missing.
    pub value: String,
    pub reason: String,
    pub fix: String,
}

impl Problem {
    pub fn new(
        field: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Problem {
            field: field.into(),
            value: value.into(),
            reason: reason.into(),
            fix: fix.into(),
        }
    }

    /// Splits messages written as `"<reason>; <fix>"` (as the library's errors are).
    pub fn from_message(
        field: impl Into<String>,
        value: impl Into<String>,
        message: &str,
        default_fix: &str,
    ) -> Self {
        match message.split_once("; ") {
            Some((reason, fix)) => Self::new(field, value, reason, fix),
            None => Self::new(field, value, message, default_fix),
        }
    }

    /// The same problem, its field placed under `prefix` (`task[2]` + `backups[1]`).
    pub fn under(mut self, prefix: &str) -> Self {
        if !prefix.is_empty() {
            self.field = format!("{prefix}.{}", self.field);
        }
        self
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}: {}; fix: {}", self.field, self.reason, self.fix)
        } else {
            write!(
                f,
                "{} = {:?}: {}; fix: {}",
                self.field, self.value, self.reason, self.fix
            )
        }
    }
}

impl std::error::Error for Problem {}
