//! The `http` kind: one HTTP request per fire; any 2xx answer is success.

use std::{collections::BTreeMap, sync::Arc};

use reqwest::{
    header::{HeaderMap, HeaderName, HeaderValue},
    Method, Url,
};

use super::invocation::Invocation;
use crate::{
    store::redact_url,
    task::{FireContext, Handler, HandlerFuture, TaskError},
};

/// How much of an error answer's body a failure keeps.
const BODY_PREFIX: usize = 300;

/// Methods a task may use.
const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// Sends one request per fire, with the fire's identity in `X-Rota-*` headers.
#[derive(Debug, Clone)]
pub struct HttpTask {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    method: Method,
    url: Url,
    /// Marked sensitive: their values never show in `Debug` output or logs.
    headers: HeaderMap,
    body: Option<String>,
    /// One client per task so connections are reused from fire to fire.
    client: reqwest::Client,
}

/// `GET`, `POST`, ... (any case).
pub fn parse_method(method: &str) -> Result<Method, String> {
    let upper = method.to_ascii_uppercase();
    if !METHODS.contains(&upper.as_str()) {
        return Err(format!(
            "`{method}` is not an HTTP method; use one of {}",
            METHODS.join(", ")
        ));
    }
    Method::from_bytes(upper.as_bytes()).map_err(|e| e.to_string())
}

/// An absolute `http://` or `https://` URL. Errors never repeat a password.
pub fn parse_url(url: &str) -> Result<Url, String> {
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err("the URL must start with http:// or https://".into());
    }
    Url::parse(url).map_err(|e| format!("not a valid URL: {e}"))
}

/// A header line. Errors name the header, never its value.
pub fn parse_header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let name_ok = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("`{name}` is not a valid header name; use letters, digits and `-`"))?;
    let mut value_ok = HeaderValue::from_str(value)
        .map_err(|_| format!("the value of header `{name}` holds characters a header cannot carry (control characters or newlines)"))?;
    value_ok.set_sensitive(true);
    Ok((name_ok, value_ok))
}

impl HttpTask {
    pub fn new(
        method: &str,
        url: &str,
        headers: &BTreeMap<String, String>,
        body: Option<String>,
    ) -> Result<Self, String> {
        let method = parse_method(method)?;
        let url = parse_url(url)?;
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            let (n, v) = parse_header(name, value)?;
            map.insert(n, v);
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("rota/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(HttpTask {
            inner: Arc::new(Inner {
                method,
                url,
                headers: map,
                body,
                client,
            }),
        })
    }

    /// `POST https://host/path`, password redacted, then header names and body size.
    pub fn description(&self) -> String {
        let i = &self.inner;
        let mut text = format!("{} {}", i.method, redact_url(i.url.as_str()));
        if !i.headers.is_empty() {
            let mut names: Vec<&str> = i.headers.keys().map(HeaderName::as_str).collect();
            names.sort_unstable();
            text.push_str(&format!(" (headers {})", names.join(",")));
        }
        if let Some(body) = &i.body {
            text.push_str(&format!(" (body {} bytes)", body.len()));
        }
        text
    }
}

impl Handler for HttpTask {
    fn run(&self, ctx: FireContext) -> HandlerFuture {
        let inner = self.inner.clone();
        Box::pin(async move { invoke(&inner, Invocation::of_fire(&ctx)).await })
    }
}

impl HttpTask {
    /// Sends the request once for `call`, until it is answered or `call.cancel` fires.
    pub(crate) async fn invoke(&self, call: Invocation) -> Result<(), TaskError> {
        invoke(&self.inner, call).await
    }
}

async fn invoke(inner: &Inner, call: Invocation) -> Result<(), TaskError> {
    let cancel = call.cancel.clone();
    tokio::select! {
        result = send(inner, call) => result,
        // Dropping the request future aborts the request.
        _ = cancel.cancelled() => Err(TaskError::new(format!("cancelled: {} request abandoned", inner.method))),
    }
}

async fn send(inner: &Inner, call: Invocation) -> Result<(), TaskError> {
    let target = redact_url(inner.url.as_str());
    let mut request = inner
        .client
        .request(inner.method.clone(), inner.url.clone())
        .headers(inner.headers.clone());
    for (var, value) in &call.vars {
        request = request.header(Invocation::header_name(var), value.as_str());
    }
    if let Some(body) = call.body {
        request = request.body(body);
    } else if let Some(body) = &inner.body {
        request = request.body(body.clone());
    }
    // reqwest errors may print the URL; strip it, ours is redacted.
    let mut response = request
        .send()
        .await
        .map_err(|e| TaskError::new(format!("{} {target}: {}", inner.method, e.without_url())))?;
    let status = response.status();
    tracing::debug!(task = %call.label, %status, "{} {target}", inner.method);
    if status.is_success() {
        return Ok(());
    }
    let mut prefix = Vec::new();
    while prefix.len() < BODY_PREFIX {
        match response.chunk().await {
            Ok(Some(chunk)) => prefix.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    prefix.truncate(BODY_PREFIX);
    let body = super::invocation::printable(prefix.trim_ascii());
    if body.is_empty() {
        Err(TaskError::new(format!(
            "{} {target}: status {status}",
            inner.method
        )))
    } else {
        Err(TaskError::new(format!(
            "{} {target}: status {status}; body: {body}",
            inner.method
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;
    use crate::kinds::invocation::test_context;

    /// Answers one connection with `reply` and hands back the request it read.
    async fn one_shot(reply: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://user:pw@{}/hook?x=1", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut request = Vec::new();
            // Read until the end of headers plus the small body we send.
            loop {
                let n = sock.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request);
                if n == 0 || (text.contains("\r\n\r\n") && text.ends_with("ping")) {
                    break;
                }
            }
            sock.write_all(reply.as_bytes()).await.unwrap();
            let _ = sock.shutdown().await;
            String::from_utf8_lossy(&request).to_string()
        });
        (url, server)
    }

    #[tokio::test]
    async fn success_sends_fire_headers() {
        let (url, server) = one_shot("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n").await;
        let headers = BTreeMap::from([("Authorization".to_string(), "Bearer s3cret".to_string())]);
        let task = HttpTask::new("post", &url, &headers, Some("ping".into())).unwrap();
        task.run(test_context("hook")).await.unwrap();
        let request = server.await.unwrap().to_ascii_lowercase();
        assert!(request.starts_with("post /hook?x=1 "), "{request}");
        for h in [
            "x-rota-task: hook",
            "x-rota-node: node-1",
            "x-rota-fire-time-ms: 1700000000000",
            "x-rota-fencing-token: 42",
            "authorization: bearer s3cret",
        ] {
            assert!(request.contains(h), "missing {h} in {request}");
        }
        assert!(
            !format!("{task:?}").contains("s3cret"),
            "header values stay out of Debug"
        );
        assert_eq!(
            task.description(),
            format!(
                "POST {} (headers authorization) (body 4 bytes)",
                redact_url(&url)
            )
        );
        assert!(!task.description().contains(":pw@"));
    }

    #[tokio::test]
    async fn non_2xx_reports_status_and_body_prefix() {
        let (url, server) =
            one_shot("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 9\r\n\r\noverload!")
                .await;
        let err = HttpTask::new("POST", &url, &BTreeMap::new(), Some("ping".into()))
            .unwrap()
            .run(test_context("t"))
            .await
            .unwrap_err();
        server.await.unwrap();
        assert!(err.0.contains("503"), "{err}");
        assert!(err.0.contains("overload!"), "{err}");
        assert!(!err.0.contains(":pw@"), "{err}");
    }

    #[tokio::test]
    async fn cancel_abandons_a_hanging_request() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let _server = tokio::spawn(async move {
            let (_sock, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let ctx = test_context("t");
        let cancel = ctx.cancel.clone();
        let run = tokio::spawn(
            HttpTask::new("GET", &url, &BTreeMap::new(), None)
                .unwrap()
                .run(ctx),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        cancel.cancel();
        let err = tokio::time::timeout(Duration::from_secs(2), run)
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert!(err.0.contains("cancelled"), "{err}");
    }

    #[test]
    fn bad_inputs_are_explained() {
        assert!(parse_method("FETCH").unwrap_err().contains("FETCH"));
        assert!(parse_url("ftp://x").unwrap_err().contains("http://"));
        let err = parse_header("X-Key", "a\nb").unwrap_err();
        assert!(err.contains("X-Key") && !err.contains("a\nb"), "{err}");
    }
}
