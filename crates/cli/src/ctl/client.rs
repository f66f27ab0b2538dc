//! The HTTP client of the admin API: one request, its answer, and why a call got none
//! ([`Failure`], with the exit code it ends `rota ctl` with).

use std::process::ExitCode;

use anyhow::Context;
use reqwest::Method;
use serde_json::Value;
use tokio::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::args::{CtlArgs, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE};

/// Why a call got no useful answer.
#[derive(Debug)]
pub(super) enum Failure {
    /// The API answered with an error status and message.
    Http { status: u16, message: String },
    /// No answer: connection refused, TLS, timeout, or a body that is not JSON.
    Unreachable(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Http { status, message } => write!(f, "{message} (HTTP {status})"),
            Failure::Unreachable(message) => f.write_str(message),
        }
    }
}

impl Failure {
    /// Worth asking again while waiting: the node serving the API may be the one restarting.
    pub(super) fn is_transient(&self) -> bool {
        matches!(
            self,
            Failure::Unreachable(_) | Failure::Http { status: 500.., .. }
        )
    }

    pub(super) fn report(&self) -> ExitCode {
        eprintln!("error: {self}");
        ExitCode::from(match self {
            Failure::Http { status, .. } => exit_code_for(*status),
            Failure::Unreachable(_) => EXIT_UNREACHABLE,
        })
    }
}

/// The exit code for an HTTP error status.
fn exit_code_for(status: u16) -> u8 {
    match status {
        401 | 403 => EXIT_REFUSED,
        400..=499 => EXIT_USAGE,
        _ => EXIT_UNREACHABLE,
    }
}

pub(super) struct Client {
    http: reqwest::Client,
    pub(super) base: String,
    pub(super) token: Option<String>,
}

impl Client {
    pub(super) fn new(args: &CtlArgs) -> anyhow::Result<Client> {
        let base = args.url.trim_end_matches('/').to_string();
        reqwest::Url::parse(&base)
            .with_context(|| format!("--url `{}`", rota::store::redact_url(&base)))?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .danger_accept_invalid_certs(args.insecure);
        if let Some(path) = &args.cacert {
            let pem =
                std::fs::read(path).with_context(|| format!("--cacert {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("--cacert {}", path.display()))?;
            anyhow::ensure!(
                !certs.is_empty(),
                "--cacert {}: no PEM certificate in it",
                path.display()
            );
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        // An empty variable is no token, so the server says one is needed.
        let token = std::env::var(rota_cli::config::CTL_TOKEN_ENV)
            .ok()
            .filter(|t| !t.trim().is_empty());
        Ok(Client {
            http: builder.build().context("HTTP client")?,
            base,
            token,
        })
    }

    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let body = body.map(|b| {
            (
                "application/json",
                serde_json::to_vec(b).expect("JSON values serialize"),
            )
        });
        let answer = self.exchange(method, path, body, &[]).await?;
        answer.into_result(&self.base, path)
    }

    /// One request; any answer (an error status too) is returned as it came.
    pub(super) async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, String)],
    ) -> Result<Answer, Failure> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.trim());
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some((content_type, bytes)) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(bytes);
        }
        // reqwest's message names the URL, password included: ours is redacted.
        let unreachable = |e: reqwest::Error| {
            Failure::Unreachable(format!(
                "cannot reach {}: {}",
                rota::store::redact_url(&self.base),
                causes(&e.without_url())
            ))
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(unreachable)?;
        let value: Option<Value> = serde_json::from_slice(&bytes).ok();
        let message = match value.as_ref().and_then(|v| v["error"].as_str()) {
            Some(m) => m.to_string(),
            None => String::from_utf8_lossy(&bytes).trim().to_string(),
        };
        Ok(Answer {
            status,
            value,
            message,
        })
    }

    pub(super) async fn get(&self, path: &str) -> Result<Value, Failure> {
        self.call(Method::GET, path, None).await
    }
}

/// An answer of the API, whatever its status.
pub(super) struct Answer {
    pub(super) status: u16,
    /// The body, when it is JSON.
    pub(super) value: Option<Value>,
    /// The body's `error`, or the body as text.
    pub(super) message: String,
}

impl Answer {
    /// The JSON of a success; a failure for an error status or a body that is not JSON.
    pub(super) fn into_result(self, base: &str, path: &str) -> Result<Value, Failure> {
        if !(200..300).contains(&self.status) {
            return Err(Failure::Http {
                status: self.status,
                message: self.message,
            });
        }
        self.value.ok_or_else(|| {
            Failure::Unreachable(format!(
                "{base}{path} answered with something other than JSON"
            ))
        })
    }
}

/// The causes of an error on one line: reqwest's own message only repeats the URL.
fn causes(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    let text = parts[parts.len().min(2) - 1..].join(": ");
    if text.contains("certificate") {
        return format!(
            "{text}; trust its CA with --cacert PATH (or --insecure, for a test setup)"
        );
    }
    text
}

/// A name as one path segment: anything outside the names rota accepts is percent-encoded,
/// so a stray `/` or `?` cannot reach another endpoint.
pub(super) fn segment(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT).to_string()
}

/// What [`segment`] percent-encodes: every byte but ASCII letters, digits, `-`, `_` and `.`.
pub(super) const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

pub(super) const ROLLING_RESTART: &str = "/api/v1/rolling-restart";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_map_to_the_documented_exit_codes() {
        for s in [400, 404, 405, 409, 413] {
            assert_eq!(exit_code_for(s), EXIT_USAGE, "{s}");
        }
        assert_eq!(exit_code_for(401), EXIT_REFUSED);
        assert_eq!(exit_code_for(403), EXIT_REFUSED);
        for s in [500, 502, 503] {
            assert_eq!(exit_code_for(s), EXIT_UNREACHABLE, "{s}");
        }
        assert!(Failure::Http {
            status: 503,
            message: String::new()
        }
        .is_transient());
        assert!(Failure::Unreachable(String::new()).is_transient());
        assert!(!Failure::Http {
            status: 401,
            message: String::new()
        }
        .is_transient());
    }
}
