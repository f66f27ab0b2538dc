//! `rota ctl`: a client of a node's admin HTTP API (see `src/admin/openapi.json`). Reads print
//! tables (or the raw JSON with `--json`); actions issue a cluster command and, by default,
//! follow it until every target has applied or failed it.

use std::{collections::BTreeMap, io::IsTerminal, path::PathBuf, process::ExitCode};

use anyhow::Context;
use base64::{
    alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    Engine as _,
};
use clap::{builder::PossibleValuesParser, Args, Subcommand};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::Method;
use rota::{core::control::LOG_LEVELS, status::fmt_time};
use serde_json::{json, Value};
use tokio::time::{sleep, Duration, Instant};

const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_REFUSED: u8 = 3;
const EXIT_UNREACHABLE: u8 = 4;
const EXIT_TIMEOUT: u8 = 5;

const POLL: Duration = Duration::from_millis(200);
/// Width of the progress bar, in characters.
const BAR: usize = 10;
/// The redrawn progress line is kept shorter than a narrow terminal: a wrapped line cannot
/// be redrawn with `\r`.
const PROGRESS_WIDTH: usize = 79;

/// Operate a cluster through a node's admin API.
///
/// The token comes from the environment only, so it never shows in `ps`:
///   ROTA_TOKEN   the admin token (actions) or the read-only token (reads)
///
/// Actions wait until every target node has applied or failed the command, unless --no-wait.
///
/// Exit codes:
///   0  ok (actions: every target applied)
///   1  the command failed on some node, or a rolling restart stopped; cache: the entry
///      is absent (get), or not as --if-version/--if-absent expected (put, del)
///   2  bad request or usage (HTTP 400, 404, 405, 409, 413)
///   3  refused: missing or wrong token (HTTP 401, 403)
///   4  cannot reach the API, or a server or store error (HTTP 5xx)
///   5  timed out waiting for the command; it may still complete: follow it with
///      `rota ctl commands SEQ`
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct CtlArgs {
    /// Base URL of any node's admin API.
    #[arg(
        long,
        env = "ROTA_URL",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    url: String,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Accept any TLS certificate (self-signed test setups only).
    #[arg(long, global = true)]
    insecure: bool,
    /// Trust the CA certificate(s) in this PEM file.
    #[arg(long, value_name = "PATH", global = true)]
    cacert: Option<PathBuf>,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
pub enum CtlCommand {
    /// Cluster summary and its nodes.
    Status,
    /// Every registered node.
    Nodes,
    /// Every declared task: state, owner, fencing token.
    Tasks,
    /// Every declared service.
    Services,
    /// Recent fires of a task, newest first.
    History {
        task: String,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Recent commands, or one command with each target's state.
    Commands {
        seq: Option<i64>,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Recent events, newest first: commands, acknowledgements, joins, fires that went wrong.
    Events {
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Stop firing a task (on the given nodes, or everywhere).
    Pause(TaskArgs),
    /// Undo a pause; instants that passed meanwhile are not made up.
    Resume(TaskArgs),
    /// Stop a service (on the given nodes, or everywhere).
    Stop(ServiceArgs),
    /// Undo a stop.
    Start(ServiceArgs),
    /// Move a node's work away and keep it away, across restarts.
    Drain(NodeArgs),
    /// Undo a drain.
    Undrain(NodeArgs),
    /// NODE stands in for TARGET wherever TARGET is named, while TARGET is absent.
    ActAs {
        node: String,
        target: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Undo act-as.
    StopActing(NodeArgs),
    /// Restart a node (graceful leave, then re-execute).
    Restart(NodeArgs),
    /// Stop a node gracefully; it stays down.
    Shutdown(NodeArgs),
    /// Set the log level (on the given nodes, or everywhere); `config` returns to the file's.
    LogLevel {
        #[arg(value_parser = PossibleValuesParser::new(LOG_LEVELS))]
        level: String,
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        wait: Wait,
    },
    /// Read and write the cluster's caches (`rota.task-state` holds tasks' own state).
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Restart the nodes one at a time, each once the previous one is back.
    RollingRestart {
        #[command(flatten)]
        scope: Scope,
        /// Seconds each node has to come back before the rolling restart stops [default: 120].
        #[arg(long, value_name = "SECS")]
        timeout_secs: Option<u64>,
        #[command(flatten)]
        wait: Wait,
    },
}

#[derive(Subcommand)]
pub enum CacheCommand {
    /// Print an entry's value as stored, bytes unchanged (--json: with its version and expiry).
    Get { cache: String, key: String },
    /// Write an entry: VALUE, the contents of --file, or standard input (--stdin).
    Put(PutArgs),
    /// Delete an entry (not there: nothing to do).
    Del {
        cache: String,
        key: String,
        /// Only if the entry is at this version (exit 1 if not).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
        if_version: Option<i64>,
    },
    /// The live keys of a cache, in order.
    Keys {
        cache: String,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["value", "file", "stdin"])))]
pub struct PutArgs {
    cache: String,
    key: String,
    /// The value, as text.
    value: Option<String>,
    /// Write the contents of this file (any bytes).
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// Write what standard input holds (any bytes).
    #[arg(long)]
    stdin: bool,
    /// Let the entry expire this long after the write: 250ms, 30s, 5m, 1h, 1d.
    #[arg(long, value_name = "DURATION")]
    ttl: Option<String>,
    /// Only if the entry is at this version (compare and set; exit 1 if not).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..), conflicts_with = "if_absent")]
    if_version: Option<i64>,
    /// Only if the key has no live entry (exit 1 if it has).
    #[arg(long)]
    if_absent: bool,
}

#[derive(Args)]
pub struct TaskArgs {
    task: String,
    #[command(flatten)]
    scope: Scope,
    #[command(flatten)]
    wait: Wait,
}

#[derive(Args)]
pub struct ServiceArgs {
    service: String,
    #[command(flatten)]
    scope: Scope,
    #[command(flatten)]
    wait: Wait,
}

#[derive(Args)]
pub struct NodeArgs {
    node: String,
    #[command(flatten)]
    wait: Wait,
}

#[derive(Args)]
pub struct Scope {
    /// Only these nodes (comma-separated); default: the whole cluster.
    #[arg(long, value_delimiter = ',')]
    nodes: Option<Vec<String>>,
}

#[derive(Args)]
pub struct Wait {
    /// Return once the command is accepted, without waiting for the nodes.
    #[arg(long)]
    no_wait: bool,
    /// Seconds to wait for the command to finish [default: 60; rolling-restart: 600, or
    /// --timeout-secs times the number of nodes if that is more].
    #[arg(long, value_name = "SECS")]
    wait_timeout: Option<u64>,
}

/// Why a call got no useful answer.
#[derive(Debug)]
enum Failure {
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
    fn is_transient(&self) -> bool {
        matches!(
            self,
            Failure::Unreachable(_) | Failure::Http { status: 500.., .. }
        )
    }

    fn report(&self) -> ExitCode {
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

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    fn new(args: &CtlArgs) -> anyhow::Result<Client> {
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

    async fn call(
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
    async fn exchange(
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

    async fn get(&self, path: &str) -> Result<Value, Failure> {
        self.call(Method::GET, path, None).await
    }
}

/// An answer of the API, whatever its status.
struct Answer {
    status: u16,
    /// The body, when it is JSON.
    value: Option<Value>,
    /// The body's `error`, or the body as text.
    message: String,
}

impl Answer {
    /// The JSON of a success; a failure for an error status or a body that is not JSON.
    fn into_result(self, base: &str, path: &str) -> Result<Value, Failure> {
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
fn segment(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT).to_string()
}

/// What [`segment`] percent-encodes: every byte but ASCII letters, digits, `-`, `_` and `.`.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// What a subcommand asks of the API.
enum Request {
    Status,
    /// A GET and how to print its answer as text.
    Read(String, fn(&Value) -> String),
    /// A POST (path, body) that issues a command, then the wait for it.
    Action(String, Value, Wait),
    /// A read or write of a cache entry.
    Cache(CacheCommand),
}

const ROLLING_RESTART: &str = "/api/v1/rolling-restart";

impl Scope {
    /// `body` with `nodes` when given (without: the whole cluster).
    fn add_to(self, mut body: Value) -> Value {
        if let Some(nodes) = self.nodes {
            body["nodes"] = json!(nodes);
        }
        body
    }
}

/// `/api/v1/{kind}/{name}/{verb}`.
fn on(kind: &str, name: &str, verb: &str) -> String {
    format!("/api/v1/{kind}/{}/{verb}", segment(name))
}

fn request(command: CtlCommand) -> Request {
    use CtlCommand as C;
    use Request::{Action, Read};
    let task = |a: TaskArgs, verb| {
        Action(
            on("tasks", &a.task, verb),
            a.scope.add_to(json!({})),
            a.wait,
        )
    };
    let service = |a: ServiceArgs, verb| {
        Action(
            on("services", &a.service, verb),
            a.scope.add_to(json!({})),
            a.wait,
        )
    };
    let node = |a: NodeArgs, verb| Action(on("nodes", &a.node, verb), json!({}), a.wait);
    match command {
        C::Status => Request::Status,
        C::Nodes => Read("/api/v1/nodes".into(), nodes_table),
        C::Tasks => Read("/api/v1/tasks".into(), tasks_table),
        C::Services => Read("/api/v1/services".into(), tasks_table),
        C::History { task, limit } => Read(
            on("tasks", &task, &format!("history?limit={limit}")),
            history_table,
        ),
        C::Commands { seq: Some(seq), .. } => Read(format!("/api/v1/commands/{seq}"), command_text),
        C::Commands { seq: None, limit } => {
            Read(format!("/api/v1/commands?limit={limit}"), commands_table)
        }
        C::Events { limit } => Read(format!("/api/v1/events?limit={limit}"), events_table),
        C::Pause(a) => task(a, "pause"),
        C::Resume(a) => task(a, "resume"),
        C::Stop(a) => service(a, "stop"),
        C::Start(a) => service(a, "start"),
        C::Drain(a) => node(a, "drain"),
        C::Undrain(a) => node(a, "undrain"),
        C::StopActing(a) => node(a, "stop-acting"),
        C::Restart(a) => node(a, "restart"),
        C::Shutdown(a) => node(a, "shutdown"),
        C::ActAs { node, target, wait } => Action(
            on("nodes", &node, "act-as"),
            json!({ "node": target }),
            wait,
        ),
        C::LogLevel { level, scope, wait } => Action(
            "/api/v1/log-level".into(),
            scope.add_to(json!({ "level": level })),
            wait,
        ),
        C::Cache(command) => Request::Cache(command),
        C::RollingRestart {
            scope,
            timeout_secs,
            wait,
        } => {
            // Only what was given: the API takes no `null` for a field left out.
            let mut body = json!({});
            if let Some(secs) = timeout_secs {
                body["timeout_secs"] = json!(secs);
            }
            Action(ROLLING_RESTART.into(), scope.add_to(body), wait)
        }
    }
}

pub async fn run(args: CtlArgs) -> anyhow::Result<ExitCode> {
    let client = match Client::new(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let json = args.json;
    let result = match request(args.command) {
        Request::Status => status(&client, json).await,
        Request::Read(path, render) => client.get(&path).await.map(|v| {
            print_value(json, &v, render);
            ExitCode::SUCCESS
        }),
        Request::Action(path, body, wait) => act(&client, json, &path, &body, &wait).await,
        Request::Cache(command) => cache(&client, json, command).await,
    };
    let unauthorized = matches!(result, Err(Failure::Http { status: 401, .. }));
    let code = result.unwrap_or_else(|f| f.report());
    if unauthorized && client.token.is_none() {
        eprintln!(
            "hint: set ROTA_TOKEN to the admin token (actions) or the read-only token (reads)"
        );
    }
    Ok(code)
}

fn print_value(json: bool, value: &Value, render: fn(&Value) -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("JSON values serialize")
        );
    } else {
        print!("{}", render(value));
    }
}

async fn status(client: &Client, json: bool) -> Result<ExitCode, Failure> {
    let cluster = client.get("/api/v1/cluster").await?;
    let nodes = client.get("/api/v1/nodes").await?;
    let both = json!({ "cluster": cluster, "nodes": nodes });
    print_value(json, &both, |v| {
        let c = &v["cluster"];
        let leader = match c["leader"].as_object() {
            Some(l) => format!("{} (epoch {})", text(&l["node"]), text(&l["epoch"])),
            None => "none".into(),
        };
        let tasks: Vec<String> = ["declared", "placed", "everywhere", "paused", "unplaced"]
            .iter()
            .map(|k| format!("{} {k}", text(&c["tasks"][*k])))
            .collect();
        format!(
            "cluster {} ({} store, answered by {}), leader {leader}\n\
             nodes: {} live of {} registered; tasks: {}; last command #{}\n\n{}",
            text(&c["cluster"]),
            text(&c["store"]),
            text(&c["answered_by"]),
            text(&c["nodes"]["live"]),
            text(&c["nodes"]["registered"]),
            tasks.join(", "),
            text(&c["commands"]),
            nodes_table(&v["nodes"])
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// `rota ctl cache ...`. An absent entry (get) and a condition not met (put and del with
/// --if-version or --if-absent) exit 1 with the API's message.
async fn cache(client: &Client, json: bool, command: CacheCommand) -> Result<ExitCode, Failure> {
    let print_json = |v: &Value| {
        println!(
            "{}",
            serde_json::to_string_pretty(v).expect("JSON values serialize")
        )
    };
    match command {
        CacheCommand::Get { cache, key } => {
            let path = match entry_path(&cache, &key) {
                Ok(p) => p,
                Err(message) => return Ok(usage(&message)),
            };
            let answer = client.exchange(Method::GET, &path, None, &[]).await?;
            // The API's answer for an absent entry names it (a 404 of an unknown endpoint
            // does not).
            if answered(&answer, 404, "key") {
                return Ok(failed(&answer.message));
            }
            let v = answer.into_result(&client.base, &path)?;
            if json {
                print_json(&v);
                return Ok(ExitCode::SUCCESS);
            }
            let value = v["value"].as_str().unwrap_or_default();
            let bytes = match v["encoding"].as_str() {
                Some("base64") => {
                    let digits: String = value.split_ascii_whitespace().collect();
                    BASE64.decode(digits).map_err(|_| {
                        Failure::Unreachable(format!(
                            "{}{path} answered with a value that is not base64",
                            client.base
                        ))
                    })?
                }
                _ => value.as_bytes().to_vec(),
            };
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            // A pipe gets the bytes as stored; a terminal also gets a line end.
            let line_end = out.is_terminal() && !bytes.ends_with(b"\n");
            let written = out
                .write_all(&bytes)
                .and_then(|_| match line_end {
                    true => out.write_all(b"\n"),
                    false => Ok(()),
                })
                .and_then(|_| out.flush());
            if let Err(e) = written {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    return Ok(failed(&format!("writing the value: {e}")));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Put(a) => {
            let mut path = match entry_path(&a.cache, &a.key) {
                Ok(p) => p,
                Err(message) => return Ok(usage(&message)),
            };
            let value = match (a.value, &a.file) {
                (Some(v), _) => v.into_bytes(),
                (None, Some(file)) => match std::fs::read(file) {
                    Ok(bytes) => bytes,
                    Err(e) => return Ok(usage(&format!("--file {}: {e}", file.display()))),
                },
                (None, None) => {
                    use std::io::Read;
                    let mut bytes = Vec::new();
                    if let Err(e) = std::io::stdin().lock().read_to_end(&mut bytes) {
                        return Ok(usage(&format!("--stdin: {e}")));
                    }
                    bytes
                }
            };
            if value.len() > rota::cache::MAX_VALUE {
                return Ok(usage(&format!(
                    "the value is {} bytes, more than the {} a cache entry holds; store a reference to larger data",
                    value.len(),
                    rota::cache::MAX_VALUE
                )));
            }
            if let Some(ttl) = &a.ttl {
                path.push_str(&format!("?ttl={}", segment(ttl)));
            }
            let mut headers = Vec::new();
            if let Some(version) = a.if_version {
                headers.push(("if-match", version.to_string()));
            }
            if a.if_absent {
                headers.push(("if-none-match", "*".to_string()));
            }
            let body = Some(("application/octet-stream", value));
            let answer = client.exchange(Method::PUT, &path, body, &headers).await?;
            if answered(&answer, 409, "current_version") {
                return Ok(failed(&answer.message));
            }
            let v = answer.into_result(&client.base, &path)?;
            match json {
                true => print_json(&v),
                false => println!("version {}", text(&v["version"])),
            }
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Del {
            cache,
            key,
            if_version,
        } => {
            let path = match entry_path(&cache, &key) {
                Ok(p) => p,
                Err(message) => return Ok(usage(&message)),
            };
            let headers: Vec<(&str, String)> = if_version
                .map(|v| ("if-match", v.to_string()))
                .into_iter()
                .collect();
            let answer = client
                .exchange(Method::DELETE, &path, None, &headers)
                .await?;
            if answered(&answer, 409, "current_version") {
                return Ok(failed(&answer.message));
            }
            let v = answer.into_result(&client.base, &path)?;
            if json {
                print_json(&v);
            } else if v["deleted"].as_bool() == Some(true) {
                println!("deleted (version {})", text(&v["version"]));
            } else {
                println!("nothing to delete: cache `{cache}` has no entry `{key}`");
            }
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Keys {
            cache,
            prefix,
            limit,
        } => {
            let mut path = match path_segment("cache", &cache) {
                Ok(c) => format!("/api/v1/cache/{c}?limit={limit}"),
                Err(message) => return Ok(usage(&message)),
            };
            if !prefix.is_empty() {
                path.push_str(&format!("&prefix={}", segment(&prefix)));
            }
            let v = client.get(&path).await?;
            if json {
                print_json(&v);
            } else {
                for key in v["keys"].as_array().into_iter().flatten() {
                    println!("{}", key.as_str().unwrap_or_default());
                }
            }
            if v["truncated"].as_bool() == Some(true) {
                eprintln!("note: there are more than {limit} keys; raise --limit (at most 1000) or narrow --prefix");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `/api/v1/cache/{cache}/{key}`, each percent-encoded as one segment.
fn entry_path(cache: &str, key: &str) -> Result<String, String> {
    Ok(format!(
        "/api/v1/cache/{}/{}",
        path_segment("cache", cache)?,
        path_segment("key", key)?
    ))
}

/// `name` percent-encoded as one path segment. `.` and `..` cannot be one: URLs resolve
/// them (escaped too) before sending.
fn path_segment(what: &str, name: &str) -> Result<String, String> {
    match name {
        "." | ".." => Err(format!(
            "{what} `{name}` cannot travel in a URL, which resolves `.` and `..`; use another {what}"
        )),
        _ => Ok(segment(name)),
    }
}

/// The API answered `status` in the shape of a cache outcome (its body has `field`).
fn answered(answer: &Answer, status: u16, field: &str) -> bool {
    answer.status == status
        && answer
            .value
            .as_ref()
            .is_some_and(|v| v.get(field).is_some())
}

/// Exit 1 with `message`: the entry is absent, or not as the condition expected.
fn failed(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_FAILED)
}

/// Exit 2 with `message`.
fn usage(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_USAGE)
}

/// Standard base64 (RFC 4648, `+/`) with the `=` padding optional, for the API's binary
/// values (whitespace is dropped before decoding).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Issues a command, follows it unless told not to, and prints where each target got.
async fn act(
    client: &Client,
    json: bool,
    path: &str,
    body: &Value,
    wait: &Wait,
) -> Result<ExitCode, Failure> {
    let accepted = client.call(Method::POST, path, Some(body)).await?;
    let seq = accepted["seq"].as_i64().unwrap_or_default();
    let rolling = path == ROLLING_RESTART;
    // A rolling restart takes up to its per-node timeout (server default 120 s) per target.
    let targets = accepted["targets"].as_array().map_or(1, Vec::len) as u64;
    let rolling_secs = (body["timeout_secs"].as_u64().unwrap_or(120) * targets).max(600);
    let secs = wait
        .wait_timeout
        .unwrap_or(if rolling { rolling_secs } else { 60 });
    let (mut command, finished) = match wait.no_wait {
        true => (accepted.clone(), true),
        false => follow(client, accepted.clone(), Duration::from_secs(secs), rolling).await?,
    };
    // The polled command has no warnings: keep those of the answer to the POST.
    command["warnings"] = accepted["warnings"].clone();
    if wait.no_wait && !json {
        let op = op_label(&command);
        println!("command #{seq} ({op}) accepted; follow it with `rota ctl commands {seq}`");
    } else {
        print_value(json, &command, command_text);
    }
    for w in command["warnings"].as_array().into_iter().flatten() {
        eprintln!("warning: {}", text(w));
    }
    if !finished {
        eprintln!("error: command #{seq} is not finished after {secs} s; it may still complete: follow it with `rota ctl commands {seq}`");
        Ok(ExitCode::from(EXIT_TIMEOUT))
    } else if command["failed"].as_bool() == Some(true) {
        eprintln!("error: command #{seq} failed on some node (see MESSAGE)");
        Ok(ExitCode::from(EXIT_FAILED))
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

/// Polls the command until it is done or `limit` passes; returns its last state and whether
/// it finished. A progress line is redrawn on a terminal; a rolling restart also logs one line
/// per change of a node's state, terminal or not, so a log shows how far it went.
async fn follow(
    client: &Client,
    mut command: Value,
    limit: Duration,
    rolling: bool,
) -> Result<(Value, bool), Failure> {
    let seq = command["seq"].as_i64().unwrap_or_default();
    let tty = std::io::stderr().is_terminal();
    let clear = || {
        if tty {
            eprint!("\r\x1b[K")
        }
    };
    let deadline = Instant::now() + limit;
    let mut logged: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut trouble: Option<String> = None;
    loop {
        if rolling {
            for (node, state, message) in node_states(&command) {
                let now = (state.clone(), message.clone());
                let before = logged
                    .get(&node)
                    .cloned()
                    .unwrap_or(("pending".into(), String::new()));
                if now != before {
                    clear();
                    eprintln!("{node}: {state} {message}");
                    logged.insert(node, now);
                }
            }
        }
        let done = command["done"].as_bool() == Some(true);
        if done || Instant::now() >= deadline {
            clear();
            if let (false, Some(t)) = (done, &trouble) {
                // Shutting down the node that serves the API silences it before its answer.
                let serving = command["issued_by"].as_str().unwrap_or_default();
                let targets = command["targets"].as_array();
                let mut hint = String::new();
                if targets.is_some_and(|t| t.iter().any(|n| n == serving)) {
                    hint = format!("; {serving} serves this API and is a target: follow the command through another node (--url)");
                }
                eprintln!("warning: the last poll got no answer: {t}{hint}");
            }
            return Ok((command, done));
        }
        if tty {
            let mut line = progress_line(&command);
            if let Some(t) = &trouble {
                line.push_str(&format!("  (no answer: {t})"));
            }
            eprint!("\r\x1b[K{}", clip(&line, PROGRESS_WIDTH));
        }
        sleep(POLL).await;
        match client.get(&format!("/api/v1/commands/{seq}")).await {
            Ok(c) => (command, trouble) = (c, None),
            // The node serving the API may be the one restarting: ask again until the deadline.
            Err(f) if f.is_transient() => trouble = Some(f.to_string()),
            Err(f) => {
                clear();
                return Err(f);
            }
        }
    }
}

/// `[######----] 2/3 applied  node-3: in_progress restarting`: finished targets as a bar, and
/// the node at work (or the first still pending).
fn progress_line(command: &Value) -> String {
    let nodes = node_states(command);
    let count = |s: &str| nodes.iter().filter(|n| n.1 == s).count();
    let (applied, failed, total) = (count("applied"), count("failed"), nodes.len());
    let filled = (applied + failed) * BAR / total.max(1);
    let mut line = format!(
        "[{}{}] {applied}/{total} applied",
        "#".repeat(filled),
        "-".repeat(BAR - filled)
    );
    if failed > 0 {
        line.push_str(&format!(", {failed} failed"));
    }
    let busy = nodes
        .iter()
        .find(|n| n.1 == "in_progress")
        .or_else(|| nodes.iter().find(|n| n.1 == "pending"));
    if let Some((node, state, message)) = busy {
        line.push_str(&format!("  {node}: {state} {message}"));
    }
    line.trim_end().to_string()
}

fn clip(line: &str, width: usize) -> String {
    line.chars().take(width).collect()
}

/// Each target of a command: node, state, message.
fn node_states(command: &Value) -> Vec<(String, String, String)> {
    let nodes = command["nodes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    nodes
        .iter()
        .map(|n| {
            (
                text(&n["node"]),
                text(&n["state"]),
                n["message"].as_str().unwrap_or("").into(),
            )
        })
        .collect()
}

/// A JSON value as a table cell: strings bare, null as `-`, arrays comma-separated.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.is_empty() => "-".into(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn yes(v: &Value) -> String {
    if v.as_bool() == Some(true) {
        "yes"
    } else {
        "-"
    }
    .into()
}

/// Left-aligned columns as wide as their widest cell, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&head).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A column of a table of a JSON list: its header, and how to get its cell from one item.
type Column<'a> = (&'a str, fn(&Value) -> String);

fn columns(list: &Value, columns: &[Column]) -> String {
    let items = list.as_array().map(Vec::as_slice).unwrap_or_default();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| columns.iter().map(|(_, cell)| cell(item)).collect())
        .collect();
    let header: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    table(&header, &rows)
}

fn time_of(v: &Value) -> String {
    v.as_i64().map_or("-".into(), fmt_time)
}

fn nodes_table(list: &Value) -> String {
    columns(
        list,
        &[
            ("ID", |n| text(&n["id"])),
            ("STATE", |n| text(&n["state"])),
            ("LEADER", |n| yes(&n["leader"])),
            ("DRAINED", |n| yes(&n["drained"])),
            ("ACTING-AS", |n| text(&n["acting_as"])),
            ("OWNED", |n| {
                n["owned"].as_array().map_or(0, Vec::len).to_string()
            }),
            ("HEARTBEAT(ms)", |n| text(&n["heartbeat_age_ms"])),
        ],
    )
}

fn tasks_table(list: &Value) -> String {
    // A task paused on some nodes only is still placed: say where it is paused.
    let reason = |t: &Value| match (&t["reason"], t["paused_on"].as_array()) {
        (Value::String(r), _) => r.clone(),
        (_, Some(on)) if !on.is_empty() => format!("paused on {}", text(&t["paused_on"])),
        _ => "-".into(),
    };
    columns(
        list,
        &[
            ("NAME", |t| text(&t["name"])),
            ("STATE", |t| text(&t["state"])),
            ("OWNER", |t| text(&t["owner"]["node"])),
            ("TOKEN", |t| text(&t["token"])),
            ("SCHEDULE", |t| text(&t["schedule"])),
            ("REASON", reason),
        ],
    )
}

fn history_table(list: &Value) -> String {
    columns(
        list,
        &[
            ("INSTANT(UTC)", |f| time_of(&f["instant_ms"])),
            ("OUTCOME", |f| text(&f["outcome"])),
            ("NODE", |f| text(&f["node"])),
            ("TOKEN", |f| text(&f["token"])),
            ("ATTEMPT", |f| text(&f["attempt"])),
            ("MESSAGE", |f| text(&f["message"])),
        ],
    )
}

/// `pause nightly`, `act_as node-2`, `set_log_level debug`: the operation and its argument.
fn op_label(c: &Value) -> String {
    match ["task", "service", "node", "level"]
        .iter()
        .find_map(|k| c[*k].as_str())
    {
        Some(arg) => format!("{} {arg}", text(&c["op"])),
        None => text(&c["op"]),
    }
}

fn targets_label(c: &Value) -> String {
    match c["scope"].as_str() {
        Some("cluster") => format!("cluster: {}", text(&c["targets"])),
        _ => text(&c["targets"]),
    }
}

/// `2 applied, 1 pending`, in the order a command goes through.
fn summary_label(c: &Value) -> String {
    let parts: Vec<String> = ["applied", "failed", "in_progress", "pending"]
        .iter()
        .filter_map(|s| {
            c["summary"][*s]
                .as_u64()
                .filter(|n| *n > 0)
                .map(|n| format!("{n} {s}"))
        })
        .collect();
    parts.join(", ")
}

fn commands_table(list: &Value) -> String {
    columns(
        list,
        &[
            ("SEQ", |c| text(&c["seq"])),
            ("OP", op_label),
            ("SCOPE/TARGETS", targets_label),
            ("STATE-SUMMARY", summary_label),
            ("ISSUED-BY", |c| text(&c["issued_by"])),
        ],
    )
}

/// One command: what, by whom, when, and each target's state.
fn command_text(c: &Value) -> String {
    let at = time_of(&c["issued_at_ms"]);
    let state = if c["done"].as_bool() == Some(true) {
        "done"
    } else {
        "not done"
    };
    let rows: Vec<Vec<String>> = node_states(c)
        .into_iter()
        .map(|(n, s, m)| vec![n, s, m])
        .collect();
    format!(
        "command #{} {} ({}), issued by {} at {at} UTC: {state}, {}\n{}",
        text(&c["seq"]),
        op_label(c),
        targets_label(c),
        text(&c["issued_by"]),
        summary_label(c),
        table(&["NODE", "STATE", "MESSAGE"], &rows)
    )
}

fn events_table(list: &Value) -> String {
    // Events differ by kind: the rest of each one as key=value.
    let detail = |e: &Value| {
        let fields = e.as_object().into_iter().flatten();
        let rest = fields.filter(|(k, _)| *k != "at_ms" && *k != "kind");
        rest.map(|(k, v)| format!("{k}={}", text(v)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    columns(
        list,
        &[
            ("TIME(UTC)", |e| time_of(&e["at_ms"])),
            ("KIND", |e| text(&e["kind"])),
            ("DETAIL", detail),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_on_their_widest_cell() {
        let rows = vec![
            vec!["node-10".into(), "alive".into(), "".into()],
            vec!["n1".into(), "dead".into(), "x y".into()],
        ];
        assert_eq!(
            table(&["ID", "STATE", "NOTE"], &rows),
            "ID       STATE  NOTE\nnode-10  alive\nn1       dead   x y\n"
        );
        assert_eq!(table(&["A", "B"], &[]), "A  B\n");
        // Widths count characters, not bytes.
        assert_eq!(
            table(&["N", "X"], &[vec!["é".into(), "1".into()]]),
            "N  X\né  1\n"
        );
    }

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

    #[test]
    fn the_progress_line_shows_the_bar_the_count_and_the_node_at_work() {
        let node =
            |n: &str, s: &str, m: &str| json!({"node": n, "state": s, "message": m, "at_ms": null});
        let c = json!({"nodes": [node("node-1", "applied", "back"), node("node-2", "in_progress", "restarting"), node("node-3", "pending", "")]});
        assert_eq!(
            progress_line(&c),
            "[###-------] 1/3 applied  node-2: in_progress restarting"
        );
        let c = json!({"nodes": [node("a", "applied", ""), node("b", "failed", "no"), node("c", "pending", "")]});
        assert_eq!(
            progress_line(&c),
            "[######----] 1/3 applied, 1 failed  c: pending"
        );
        let c = json!({"nodes": [node("a", "applied", "")]});
        assert_eq!(progress_line(&c), "[##########] 1/1 applied");
        assert_eq!(progress_line(&json!({})), "[----------] 0/0 applied");
        assert_eq!(clip("abcdef", 4), "abcd");
    }

    /// The bodies `rota ctl` sends leave out what was not given: the API refuses `null`.
    #[test]
    fn action_bodies_carry_no_nulls() {
        for argv in [
            vec!["ctl", "rolling-restart"],
            vec![
                "ctl",
                "rolling-restart",
                "--timeout-secs",
                "30",
                "--nodes",
                "a,b",
            ],
            vec!["ctl", "pause", "report"],
            vec!["ctl", "log-level", "debug"],
            vec!["ctl", "drain", "node-1"],
        ] {
            #[derive(clap::Parser)]
            struct Cli {
                #[command(flatten)]
                ctl: CtlArgs,
            }
            let cli = <Cli as clap::Parser>::try_parse_from(&argv)
                .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            let Request::Action(path, body, _) = request(cli.ctl.command) else {
                panic!("{argv:?} is an action");
            };
            let text = body.to_string();
            assert!(!text.contains("null"), "{argv:?} -> POST {path} {text}");
        }
    }

    #[test]
    fn names_are_one_path_segment() {
        assert_eq!(segment("node-1.a_b"), "node-1.a_b");
        assert_eq!(segment("a/b?c"), "a%2Fb%3Fc");
        assert_eq!(segment("50%#+~ é"), "50%25%23%2B%7E%20%C3%A9");
        assert_eq!(
            entry_path("c", "a/b c é").unwrap(),
            "/api/v1/cache/c/a%2Fb%20c%20%C3%A9"
        );
        assert!(entry_path("c", "..").unwrap_err().contains("another key"));
        assert!(entry_path(".", "k").unwrap_err().contains("another cache"));
    }

    #[test]
    fn base64_values_may_omit_padding() {
        for text in ["Zg==", "Zg"] {
            assert_eq!(BASE64.decode(text).unwrap(), b"f", "{text}");
        }
        assert!(BASE64.decode("not base64!").is_err());
    }
}
