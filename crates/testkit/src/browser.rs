//! A small W3C WebDriver client for the dashboard's browser tests: starts Debian's
//! `chromedriver` on a free port of 127.0.0.1, opens a headless Chromium session through it,
//! and removes both (and the temporary profile) when dropped.
//!
//! Why WebDriver over `reqwest`: the protocol is JSON over HTTP, so the HTTP client the crate
//! already has is all it takes (no new dependency, no browser-automation crate to track), and
//! the driver is Debian's maintained `chromium-driver`, built from the same source as the
//! `chromium` package it drives, so the two always match.

use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::{
    alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    Engine as _,
};
use reqwest::Method;
use serde_json::{json, Value};

use super::servers::{free_port, spawn_tied_to_process, sweep_stale};

/// Debian's ChromeDriver (package `chromium-driver`).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Debian's Chromium (package `chromium`).
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Chromium's flags. The background-networking ones matter on a closed network: without
/// them Chromium's own connections are refused and its pages stall.
const CHROMIUM_ARGS: [&str; 10] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1600",
];

/// The key of a web element reference in WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Temporary directories (profile and driver log) start with this, then the pid.
const DIR_PREFIX: &str = "rota-browser-";
const DRIVER_READY: Duration = Duration::from_secs(30);
/// Per HTTP request to the driver (starting Chromium on a busy machine is the slow one).
const REQUEST: Duration = Duration::from_secs(90);
/// How long `click` and `type_into` retry an element that is being re-rendered.
const ACTION: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);

/// What went wrong, with the driver's own error code and message when it answered one.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    #[error("{program} is missing: install the Debian package `{package}` (apt-get install {package}; ./scripts/test does it)")]
    Missing {
        program: &'static str,
        package: &'static str,
    },
    #[error("{0}")]
    Start(String),
    /// The driver answered an error (`error` is the W3C code, e.g. `no such element`).
    #[error("WebDriver {command}: {error}: {message}")]
    WebDriver {
        command: String,
        error: String,
        message: String,
    },
    /// No usable answer (connection failed, not JSON, no session id, ...).
    #[error("WebDriver {command}: {message}")]
    Protocol { command: String, message: String },
    #[error("timed out after {timeout:?} waiting for {what}; last value: {last}")]
    Timeout {
        what: String,
        timeout: Duration,
        last: String,
    },
    #[error("screenshot {}: {message}", path.display())]
    Screenshot { path: PathBuf, message: String },
}

impl BrowserError {
    /// The W3C error code, when the driver answered one.
    pub fn code(&self) -> Option<&str> {
        match self {
            BrowserError::WebDriver { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// How the current page's first load went (Navigation and Resource Timing).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PageLoad {
    /// The document plus the resources that finished by its load event.
    pub bytes: u64,
    pub document_bytes: u64,
    /// How many resources that is.
    pub resources: u64,
    /// From the start of the navigation to the end of the load event.
    pub ms: f64,
}

/// A headless Chromium driven through its own `chromedriver`.
pub struct Browser {
    http: reqwest::Client,
    port: u16,
    /// Empty until the session exists.
    session: String,
    driver: Option<Child>,
    /// Holds `profile/` (Chromium's user data) and `chromedriver.log`.
    dir: PathBuf,
}

impl Browser {
    /// Starts chromedriver, waits until it is ready, and opens a session. Fails with the
    /// package to install when chromedriver or Chromium is missing.
    pub async fn start() -> Result<Browser, BrowserError> {
        for (program, package) in [(CHROMEDRIVER, "chromium-driver"), (CHROMIUM, "chromium")] {
            if !Path::new(program).exists() {
                return Err(BrowserError::Missing { program, package });
            }
        }
        sweep_stale(DIR_PREFIX);
        let dir = std::env::temp_dir().join(format!(
            "{DIR_PREFIX}{}-{}",
            std::process::id(),
            free_port()
        ));
        fs::create_dir_all(dir.join("profile"))
            .map_err(|e| BrowserError::Start(format!("creating {}: {e}", dir.display())))?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST)
            .build()
            .map_err(|e| BrowserError::Start(format!("HTTP client: {e}")))?;
        // From here on, Drop cleans up whatever was started.
        let mut browser = Browser {
            http,
            port: 0,
            session: String::new(),
            driver: None,
            dir,
        };
        browser.launch_driver().await?;
        browser.open_session().await?;
        Ok(browser)
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts chromedriver on a free port (another one if it loses the port to someone
    /// else) and polls `GET /status` until it says ready.
    async fn launch_driver(&mut self) -> Result<(), BrowserError> {
        let log_path = self.dir.join("chromedriver.log");
        let start =
            |e: std::io::Error| BrowserError::Start(format!("starting {CHROMEDRIVER}: {e}"));
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let log = fs::File::options()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(start)?;
            let mut command = Command::new(CHROMEDRIVER);
            command
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(start)?)
                .stderr(log)
                // Its own process group, so that Drop also reaches the Chromium it started.
                .process_group(0);
            let child = spawn_tied_to_process(command)
                .map_err(|e| BrowserError::Start(format!("starting {CHROMEDRIVER}: {e}")))?;
            self.driver = Some(child);
            self.port = port;
            let deadline = Instant::now() + DRIVER_READY;
            loop {
                let exited = self
                    .driver
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                if let Some(status) = exited {
                    self.driver = None;
                    last = format!("{CHROMEDRIVER} exited ({status})");
                    break;
                }
                match self.status().await {
                    Ok(v) if v["ready"] == json!(true) => return Ok(()),
                    Ok(v) => last = format!("not ready: {v}"),
                    Err(e) => last = e.to_string(),
                }
                if Instant::now() >= deadline {
                    return Err(BrowserError::Start(format!(
                        "{CHROMEDRIVER} on port {port} not ready after {DRIVER_READY:?} ({last}); its log:\n{}",
                        self.driver_log()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Err(BrowserError::Start(format!(
            "{CHROMEDRIVER} did not start: {last}; its log:\n{}",
            self.driver_log()
        )))
    }

    async fn status(&self) -> Result<Value, BrowserError> {
        let resp = self
            .http
            .get(format!("{}/status", self.base()))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map_err(|e| protocol("GET /status", e))?;
        let bytes = resp.bytes().await.map_err(|e| protocol("GET /status", e))?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| protocol("GET /status", e))?;
        Ok(v["value"].clone())
    }

    async fn open_session(&mut self) -> Result<(), BrowserError> {
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            self.dir.join("profile").display()
        ));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": {"pageLoad": 60_000, "script": 30_000, "implicit": 0},
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let v = self
            .request(Method::POST, "/session", Some(capabilities))
            .await?;
        self.session = v["sessionId"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| protocol("POST /session", format!("no sessionId in {v}")))?
            .to_string();
        Ok(())
    }

    /// One request to the driver; the answer's `value`, or the driver's error.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, BrowserError> {
        // Name commands without the session id, which only makes messages longer.
        let label = match path.strip_prefix(&format!("/session/{}", self.session)) {
            Some(rest) if !self.session.is_empty() => format!("{method} {rest}"),
            _ => format!("{method} {path}"),
        };
        let mut req = self.http.request(method, format!("{}{path}", self.base()));
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json; charset=utf-8")
                .body(body.to_string());
        }
        let resp = req.send().await.map_err(|e| protocol(&label, e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| protocol(&label, e))?;
        let mut answer: Value = serde_json::from_slice(&bytes).map_err(|e| {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).to_string();
            protocol(&label, format!("HTTP {status}, not JSON ({e}): {text}"))
        })?;
        let value = answer
            .get_mut("value")
            .map(Value::take)
            .unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        Err(BrowserError::WebDriver {
            command: label,
            error: value["error"]
                .as_str()
                .map_or_else(|| format!("HTTP {status}"), str::to_string),
            message: value["message"]
                .as_str()
                .unwrap_or_default()
                .trim()
                .to_string(),
        })
    }

    /// A command of this session (`path` after `/session/{id}`).
    async fn command(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, BrowserError> {
        let path = format!("/session/{}{path}", self.session);
        self.request(method, &path, body).await
    }

    /// Navigates to `url` and waits for its load (the `normal` page load strategy).
    pub async fn goto(&self, url: &str) -> Result<(), BrowserError> {
        self.command(Method::POST, "/url", Some(json!({ "url": url })))
            .await
            .map(drop)
    }

    /// Runs `script` (a function body: `return ...` gives the result) with `arguments`.
    pub async fn execute(&self, script: &str, args: &[Value]) -> Result<Value, BrowserError> {
        self.command(
            Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Evaluates the JS `expression` (no trailing `;`; wrap statements in `(() => { ... })()`)
    /// every 100 ms until it is truthy, and returns its value.
    /// Script errors (an element not there yet) count as not yet; after `timeout` the error
    /// names `what` and the last value or error seen.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        expression: &str,
    ) -> Result<Value, BrowserError> {
        let script = format!("return (\n{expression}\n);");
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.execute(&script, &[]).await {
                Ok(v) if truthy(&v) => return Ok(v),
                Ok(v) => v.to_string(),
                Err(e) if fatal(&e) => return Err(e),
                Err(e) => format!("error: {e}"),
            };
            if Instant::now() >= deadline {
                return Err(BrowserError::Timeout {
                    what: what.to_string(),
                    timeout,
                    last,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn find(&self, css: &str) -> Result<String, BrowserError> {
        let v = self
            .command(
                Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        v.get(ELEMENT_KEY)
            .or_else(|| v.as_object().and_then(|o| o.values().next()))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| protocol(&format!("find {css}"), format!("no element in {v}")))
    }

    /// Finds `css` and runs `steps` (`POST /element/{id}/<step>` with its body) on it; starts
    /// over while the element is missing or replaced (pages that re-render), up to 10 s.
    async fn on_element(&self, css: &str, steps: &[(&str, Value)]) -> Result<(), BrowserError> {
        let deadline = Instant::now() + ACTION;
        loop {
            let mut result = self.find(css).await;
            if let Ok(id) = &result {
                for (step, body) in steps {
                    let path = format!("/element/{id}/{step}");
                    if let Err(e) = self.command(Method::POST, &path, Some(body.clone())).await {
                        result = Err(e);
                        break;
                    }
                }
            }
            match result {
                Ok(_) => return Ok(()),
                Err(e) if retry_on_element(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                Err(BrowserError::WebDriver {
                    command,
                    error,
                    message,
                }) => {
                    return Err(BrowserError::WebDriver {
                        command: format!("{command} ({css})"),
                        error,
                        message,
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Clicks the element `css` selects (as a user would: scrolled into view first).
    pub async fn click(&self, css: &str) -> Result<(), BrowserError> {
        self.on_element(css, &[("click", json!({}))]).await
    }

    /// Clears the input `css` selects and types `text` into it (key events, so the page
    /// sees `input` events as from a user).
    pub async fn type_into(&self, css: &str, text: &str) -> Result<(), BrowserError> {
        self.on_element(
            css,
            &[("clear", json!({})), ("value", json!({ "text": text }))],
        )
        .await
    }

    /// Saves a PNG of the viewport to `path` (creating its directory).
    pub async fn screenshot(&self, path: &Path) -> Result<(), BrowserError> {
        let failed = |message: String| BrowserError::Screenshot {
            path: path.to_path_buf(),
            message,
        };
        let v = self.command(Method::GET, "/screenshot", None).await?;
        let text = v
            .as_str()
            .ok_or_else(|| failed(format!("not base64 text: {v}")))?;
        let digits: String = text.split_ascii_whitespace().collect();
        let png = BASE64
            .decode(digits)
            .map_err(|e| failed(format!("not base64: {e}")))?;
        if !png.starts_with(b"\x89PNG\r\n\x1a\n") {
            return Err(failed("the driver's answer is not a PNG".into()));
        }
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
        }
        fs::write(path, png).map_err(|e| failed(e.to_string()))
    }

    /// Bytes and milliseconds of the current page's first load: the document plus the
    /// resources that finished by the end of its load event (transfer sizes, headers
    /// included; the body size for anything served from cache). Waits for the load event.
    pub async fn page_load_ms(&self) -> Result<PageLoad, BrowserError> {
        let v = self
            .wait_for(
                "the end of the page's load event",
                Duration::from_secs(60),
                "(() => {
                    const nav = performance.getEntriesByType('navigation')[0];
                    if (!nav || !(nav.loadEventEnd > 0)) return null;
                    const size = e => e.transferSize > 0 ? e.transferSize : e.encodedBodySize;
                    const res = performance.getEntriesByType('resource')
                        .filter(r => r.responseEnd <= nav.loadEventEnd);
                    return {document: size(nav), resources: res.reduce((s, r) => s + size(r), 0),
                            count: res.length, ms: nav.loadEventEnd};
                })()",
            )
            .await?;
        let n = |k: &str| v[k].as_f64().unwrap_or(0.0);
        Ok(PageLoad {
            bytes: (n("document") + n("resources")) as u64,
            document_bytes: n("document") as u64,
            resources: n("count") as u64,
            ms: n("ms"),
        })
    }

    /// What chromedriver printed so far (for failure reports).
    pub fn driver_log(&self) -> String {
        fs::read_to_string(self.dir.join("chromedriver.log")).unwrap_or_default()
    }

    /// Ends the session (Chromium quits) and stops the driver.
    pub async fn quit(mut self) -> Result<(), BrowserError> {
        let result = self.command(Method::DELETE, "", None).await.map(drop);
        self.session.clear();
        result
    }

    /// `DELETE /session/{id}` over a plain socket: Drop cannot await the async client.
    fn delete_session_blocking(&self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            return;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(15)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
        let request = format!(
            "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.session, self.port
        );
        if s.write_all(request.as_bytes()).is_ok() {
            let _ = s.read_to_end(&mut Vec::new());
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            self.delete_session_blocking();
        }
        if let Some(mut child) = self.driver.take() {
            // SAFETY: kill(2) on the process group of our own (not yet reaped) child.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn protocol(command: &str, e: impl std::fmt::Display) -> BrowserError {
    BrowserError::Protocol {
        command: command.to_string(),
        message: e.to_string(),
    }
}

/// JavaScript's truthiness, for the values WebDriver returns.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// Errors after which polling again cannot help: the session or the driver is gone.
fn fatal(e: &BrowserError) -> bool {
    match e {
        BrowserError::WebDriver { error, .. } => matches!(
            error.as_str(),
            "invalid session id" | "session not created" | "no such window"
        ),
        _ => true,
    }
}

/// Errors of an element that is not there yet or was just replaced by a re-render.
fn retry_on_element(e: &BrowserError) -> bool {
    matches!(
        e.code(),
        Some(
            "no such element"
                | "stale element reference"
                | "element click intercepted"
                | "element not interactable"
        )
    )
}

/// Standard base64 (RFC 4648, `+/`) with the `=` padding optional, for screenshots
/// (`Browser::screenshot` drops whitespace first).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn screenshot_base64_may_omit_padding() {
        for text in ["YWI=", "YWI"] {
            assert_eq!(BASE64.decode(text).unwrap(), b"ab", "{text}");
        }
        assert!(BASE64.decode("YQ-=").is_err());
    }

    #[test]
    fn truthiness_follows_javascript() {
        for v in [json!(null), json!(false), json!(0), json!(""), json!(0.0)] {
            assert!(!truthy(&v), "{v}");
        }
        for v in [
            json!(true),
            json!(1),
            json!("x"),
            json!([]),
            json!({}),
            json!(-1),
        ] {
            assert!(truthy(&v), "{v}");
        }
    }
}
