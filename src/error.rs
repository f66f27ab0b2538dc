//! Library errors, split into retryable (the store or network may come back) and fatal
//! (configuration or identity problems that a retry cannot fix).

/// Errors of the rota library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store could not be reached or answered with a transient failure; retry with backoff.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),

    /// The store answered, but with something rota does not expect (bad schema, corrupt row).
    #[error("store error: {0}")]
    Store(String),

    /// The schema is missing or of another version and migrations are disabled.
    #[error("schema: {0}")]
    Schema(String),

    /// A second live node uses this node's id (contract 10).
    #[error(
        "node id `{node}` is already alive in cluster `{cluster}` ({detail}); \
         give this node another `[node] id`, or stop the other node first"
    )]
    DuplicateNode {
        cluster: String,
        node: String,
        detail: String,
    },

    /// Invalid configuration or builder input: names the field, the value and the fix.
    #[error("{field}: {message}")]
    Config { field: String, message: String },

    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,

    /// A save under a fencing token that is no longer the task's: the task moved to another
    /// owner, whose state stands. Stop working on the task.
    #[error("task `{task}`: token {token} is no longer current; this node lost the task, and its state was not saved")]
    Fenced { task: String, token: i64 },
}

impl Error {
    /// True when retrying later may succeed (the store or network may come back).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::StoreUnavailable(_))
    }

    pub(crate) fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

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
