//! # rota-admin
//!
//! The HTTP face of a node: the admin API, the Prometheus metrics and the live dashboard. It
//! owns the HTTP server (hyper, TLS, connection limits) and reads and acts on a cluster only
//! through the `rota` library's public API; the library must never import it, and it never
//! imports the binary or the test kit.
//!
//! The admin HTTP API: JSON under `/api/v1`, described by the OpenAPI document it serves at
//! `/api/v1/openapi.json`, plus `/healthz` and `/readyz`. Every node serves it and answers for
//! the whole cluster: reads come from the store, actions are cluster commands appended to the
//! store's log (see [`rota::core::control`]).
//!
//! Access: `/healthz` and `/readyz` are open. Reads need the read-only or the admin token;
//! anything that changes state needs the admin token (`Authorization: Bearer <token>`). Tokens
//! are compared in constant time and never logged. With no token configured, reads are open
//! and actions are refused.

mod api;
mod connections;
mod dashboard;
mod model;
mod routes;
mod tokens;

use std::{net::SocketAddr, sync::Arc};

pub use api::{AdminConfig, Api, Secret};
pub use connections::{HEADER_TIMEOUT, MAX_CONNECTIONS};
use http_body_util::{combinators::BoxBody, BodyExt};
use hyper_util::rt::{TokioIo, TokioTimer};
use rota::{Error, Result};
pub use routes::{BODY_TIMEOUT, OPENAPI, ROUTES};
pub use tokens::{Role, TOKENS_CACHE};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// A running API server. Dropping it does not stop it; call [`AdminServer::shutdown`].
pub struct AdminServer {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// The bound address (the port is chosen by the system when `listen` says port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections; requests in flight finish on their own.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// The admin API's socket, bound, and its TLS settings, read: what can fail about the API
/// before a node joins, so that a port in use or a bad key stops the node before it starts
/// anything ([`bind`], then [`BoundAdmin::serve`]).
pub struct BoundAdmin {
    config: AdminConfig,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Reads the TLS files and binds `config.listen`. Fails with the field named.
pub async fn bind(config: AdminConfig) -> Result<BoundAdmin> {
    let tls = match &config.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let listener = TcpListener::bind(config.listen).await.map_err(|e| {
        Error::config(
            "admin.listen",
            format!(
                "cannot listen on {}: {e}; choose a free address or port",
                config.listen
            ),
        )
    })?;
    Ok(BoundAdmin {
        config,
        listener,
        tls,
    })
}

/// Binds `config.listen` and serves the API until shut down. Fails (with the field named)
/// if the address cannot be bound or the TLS files cannot be read.
pub async fn serve(config: AdminConfig, api: Api) -> Result<AdminServer> {
    bind(config).await?.serve(api)
}

impl BoundAdmin {
    /// Serves the API on the bound socket until shut down.
    pub fn serve(self, api: Api) -> Result<AdminServer> {
        serve_bound(self, api)
    }
}

fn serve_bound(bound: BoundAdmin, api: Api) -> Result<AdminServer> {
    let BoundAdmin {
        config,
        listener,
        tls,
    } = bound;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Store(e.to_string()))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!(%addr, scheme, "admin API listening");
    if config.admin_token.is_none() {
        warn!("no admin token configured ([admin] token or ROTA_ADMIN_TOKEN): the admin API refuses every action");
    }
    let stop = CancellationToken::new();
    let shared = Arc::new(routes::Shared {
        monitor: Arc::new(dashboard::Monitor::new(api.clone(), stop.clone())),
        api,
        admin_token: config.admin_token,
        read_token: config.read_token,
    });
    let stopped = stop.clone();
    let connections = Arc::new(connections::Connections::default());
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, most likely: wait rather than spin.
                        debug!(error = %e, "accept failed");
                        tokio::time::sleep(connections::ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
                _ = stopped.cancelled() => return,
            };
            let Some(admitted) = connections.admit() else {
                debug!(%peer, "connection refused: every connection is inside a request");
                continue;
            };
            let shared = shared.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let busy = admitted.busy.clone();
                let service = hyper::service::service_fn(move |req| {
                    let shared = shared.clone();
                    let in_request = connections::InRequest::new(&busy);
                    async move {
                        let response = routes::handle(&shared, req).await;
                        // A streamed body (server-sent events) keeps the connection busy.
                        let response = response.map(|body| {
                            BoxBody::new(body.map_frame(move |frame| {
                                let _ = &in_request;
                                frame
                            }))
                        });
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let mut http = hyper::server::conn::http1::Builder::new();
                http.timer(TokioTimer::new())
                    .header_read_timeout(connections::HEADER_TIMEOUT);
                let serve = async {
                    match tls {
                        Some(acceptor) => {
                            let handshake = tokio::time::timeout(
                                connections::HEADER_TIMEOUT,
                                acceptor.accept(stream),
                            );
                            match handshake.await {
                                Ok(Ok(s)) => http.serve_connection(TokioIo::new(s), service).await,
                                Ok(Err(e)) => {
                                    debug!(%peer, error = %e, "TLS handshake failed");
                                    Ok(())
                                }
                                Err(_) => {
                                    debug!(%peer, "TLS handshake timed out");
                                    Ok(())
                                }
                            }
                        }
                        None => http.serve_connection(TokioIo::new(stream), service).await,
                    }
                };
                let served = tokio::select! {
                    served = serve => served,
                    _ = admitted.close.cancelled() => {
                        debug!(%peer, "idle connection closed to make room");
                        Ok(())
                    }
                };
                if let Err(e) = served {
                    debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
    });
    Ok(AdminServer { addr, stop, task })
}

/// The TLS settings from a PEM certificate chain and its private key; an error names the
/// file at fault. `rota config check` calls it too.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<std::result::Result<_, _>>())
        .map_err(|e| {
            Error::config(
                "admin.tls_cert",
                format!("`{}`: {e}; give a PEM certificate chain", cert.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(Error::config(
            "admin.tls_cert",
            format!(
                "`{}` holds no certificate; give a PEM certificate chain",
                cert.display()
            ),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        Error::config(
            "admin.tls_key",
            format!("`{}`: {e}; give a PEM private key", key.display()),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| {
            Error::config(
                "admin.tls_key",
                format!("{e}; give the private key of the certificate in admin.tls_cert"),
            )
        })?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_exactly_and_never_show() {
        let s = Secret::new("s3cret-token");
        assert!(s.matches("s3cret-token"));
        assert!(!s.matches("s3cret-tokeN"));
        assert!(!s.matches("s3cret-token-and-more"));
        assert!(!s.matches("s3cret"));
        assert!(!s.matches(""));
        assert!(!Secret::new("").matches(""), "an empty token never matches");
        assert_eq!(format!("{s:?}"), "<redacted>");
    }

    #[test]
    fn the_openapi_document_describes_exactly_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        let paths = doc["paths"].as_object().expect("paths");
        let mut documented: Vec<(String, String)> = paths
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .filter(|k| *k != "parameters")
                    .map(move |m| (m.to_uppercase(), path.clone()))
            })
            .collect();
        let mut routed: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        documented.sort();
        routed.sort();
        assert_eq!(documented, routed);
    }
}
