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

    /// Invalid input at `field`; `message` says what is wrong and how to fix it.
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use rota_core::problem::Problem;

/// Names are ids in the store and in logs: keep them plain (the rule:
/// [`rota_core::names::check_name`]); the error names `field`.
pub fn validate_name(field: &str, value: &str) -> Result<()> {
    rota_core::names::check_name(value).map_err(|message| Error::config(field, message))
}
