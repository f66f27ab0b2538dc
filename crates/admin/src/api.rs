//! What the admin API serves and with what: the node's handles it reads and commands
//! ([`Api`]), its configuration and secrets, and the body of its responses.

use std::{net::SocketAddr, sync::Arc};

use http_body_util::combinators::BoxBody;
use hyper::body::Bytes;
use hyper::StatusCode;
use rota::{
    core::control::{Command, ControlState},
    node::NodeStatus,
    store::Store,
    Error,
};
use tokio::sync::watch;

/// A failed request: status and message.
pub(crate) struct Problem(pub StatusCode, pub String);
impl Problem {
    pub(crate) fn bad(message: impl Into<String>) -> Problem {
        Problem(StatusCode::BAD_REQUEST, message.into())
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Problem {
        Problem(StatusCode::NOT_FOUND, message.into())
    }

    /// Worth retrying in a moment: answered 503 with `Retry-After`.
    pub(crate) fn unavailable(message: impl Into<String>) -> Problem {
        Problem(StatusCode::SERVICE_UNAVAILABLE, message.into())
    }
}
impl From<Error> for Problem {
    fn from(e: Error) -> Problem {
        let status = if e.is_retryable() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        Problem(status, e.to_string())
    }
}

/// A token, kept out of logs and debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one answer that hands it out.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// Constant time in the length of the presented value: no early exit on a mismatch.
    pub(crate) fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        let mut diff = (a.len() != b.len()) as u8;
        for (i, byte) in b.iter().enumerate() {
            diff |= a.get(i).copied().unwrap_or(0) ^ byte;
        }
        diff == 0 && !a.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `[admin]` settings.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Needed for anything that changes state (and good for reads).
    pub admin_token: Option<Secret>,
    /// Good for reads only.
    pub read_token: Option<Secret>,
    /// PEM certificate chain and private key: serve HTTPS.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// The cluster's own definitions as last compiled for reads: their version, and each name
/// with its schedule (`service` for a service).
pub(crate) type DefinedNames = (i64, Vec<(String, String)>);

/// What the API reads and acts on: the cluster's store and the node serving it.
#[derive(Clone)]
pub struct Api {
    pub store: Arc<dyn Store>,
    pub cluster: String,
    /// The node serving this API (it issues the commands accepted here).
    pub node: String,
    pub status: watch::Receiver<NodeStatus>,
    /// The serving node's counters, rendered at `/metrics` ([`rota::NodeHandle::metrics`]).
    pub metrics: Arc<rota::metrics::Metrics>,
    /// The command log as far as this API has read it, folded.
    pub(crate) log: Arc<LogCache>,
    /// Compiles the cluster's own definitions (the node's own compiler): lists what they
    /// define, and checks a document before `POST /api/v1/definitions` applies it.
    pub(crate) definitions: Option<rota::node::DefinitionCompiler>,
    /// May this node's API apply definitions (`[admin] definitions`)? They run commands.
    pub(crate) accepts_definitions: bool,
    /// The last definitions compiled for reads.
    pub(crate) defined: Arc<std::sync::Mutex<DefinedNames>>,
}

impl Api {
    pub fn new(
        store: Arc<dyn Store>,
        cluster: impl Into<String>,
        node: impl Into<String>,
        status: watch::Receiver<NodeStatus>,
        metrics: Arc<rota::metrics::Metrics>,
    ) -> Api {
        Api {
            store,
            cluster: cluster.into(),
            node: node.into(),
            status,
            metrics,
            log: Arc::default(),
            definitions: None,
            accepts_definitions: false,
            defined: Arc::default(),
        }
    }

    /// Lists the cluster's own tasks and services with `compile`, and (with `accept`) lets
    /// this API apply new definitions, which `compile` checks first.
    pub fn definitions(mut self, compile: rota::node::DefinitionCompiler, accept: bool) -> Api {
        self.definitions = Some(compile);
        self.accepts_definitions = accept;
        self
    }
}

pub(super) type Body = BoxBody<Bytes, std::convert::Infallible>;

/// The command log as this API has read it, and its fold. A command never changes once
/// appended, and commands become visible in sequence order (each takes the cluster's next
/// generation under the store's lock), so a read fetches only the commands after the last
/// one seen and folds only those: a read costs the same with 4,000 commands as with 4.
#[derive(Default)]
pub(crate) struct LogCache(tokio::sync::Mutex<(Arc<Vec<Command>>, ControlState)>);
impl LogCache {
    pub(crate) async fn read(
        &self,
        api: &Api,
    ) -> Result<(Arc<Vec<Command>>, ControlState), Problem> {
        let mut held = self.0.lock().await;
        let after = held.0.last().map_or(0, |c| c.seq);
        let new = rota::store::commands_after(api.store.as_ref(), &api.cluster, after).await?;
        if !new.is_empty() {
            let (log, control) = &mut *held;
            // In place unless a request still holds the previous log.
            let log = Arc::make_mut(log);
            for record in &new {
                let command = record.parse()?;
                control.apply(&command);
                log.push(command);
            }
        }
        Ok((held.0.clone(), held.1.clone()))
    }
}
