//! Routes of the admin API: reads of the cluster, and actions that append cluster commands.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use base64::prelude::{Engine as _, BASE64_STANDARD};
use http_body_util::{BodyExt, Limited};
use hyper::{body::Incoming, HeaderMap, Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    dashboard::{self, Monitor},
    error_response, json_response,
    model::{command_json, fire_json, merge_events, read_log, Members, Model, Problem},
    Api, Body, Secret, OPENAPI,
};
use rota::{
    core::control::{Command, CommandBody, Operation, Scope},
    node::SERVICE_SCHEDULE,
    store::{AckFilter, CacheOutcome, CacheWrite, Expect},
    Error,
};

/// Every route: method and path template (`{x}` is one path segment). The OpenAPI
/// document lists exactly these (a test checks).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/assets/dashboard.js"),
    ("GET", "/assets/dashboard.css"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/cluster"),
    ("GET", "/api/v1/nodes"),
    ("GET", "/api/v1/nodes/{id}"),
    ("GET", "/api/v1/tasks"),
    ("GET", "/api/v1/tasks/{name}"),
    ("GET", "/api/v1/tasks/{name}/history"),
    ("GET", "/api/v1/services"),
    ("GET", "/api/v1/services/{name}"),
    ("GET", "/api/v1/commands"),
    ("GET", "/api/v1/commands/{seq}"),
    ("GET", "/api/v1/events"),
    ("GET", "/api/v1/dashboard"),
    ("GET", "/api/v1/stream"),
    ("POST", "/api/v1/commands"),
    ("POST", "/api/v1/tasks/{name}/pause"),
    ("POST", "/api/v1/tasks/{name}/resume"),
    ("POST", "/api/v1/services/{name}/stop"),
    ("POST", "/api/v1/services/{name}/start"),
    ("POST", "/api/v1/nodes/{id}/drain"),
    ("POST", "/api/v1/nodes/{id}/undrain"),
    ("POST", "/api/v1/nodes/{id}/act-as"),
    ("POST", "/api/v1/nodes/{id}/stop-acting"),
    ("POST", "/api/v1/nodes/{id}/restart"),
    ("POST", "/api/v1/nodes/{id}/shutdown"),
    ("POST", "/api/v1/log-level"),
    ("POST", "/api/v1/rolling-restart"),
    ("GET", CACHE_KEYS),
    ("GET", CACHE_ENTRY),
    ("PUT", CACHE_ENTRY),
    ("DELETE", CACHE_ENTRY),
];

/// A cache's keys.
const CACHE_KEYS: &str = "/api/v1/cache/{cache}";
/// One entry of a cache: read, written with its value as the body, deleted.
const CACHE_ENTRY: &str = "/api/v1/cache/{cache}/{key}";

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;
/// Default rolling restart wait for one node.
const ROLLING_TIMEOUT_SECS: u64 = 120;

pub(super) struct Shared {
    pub api: Api,
    pub admin_token: Option<Secret>,
    pub read_token: Option<Secret>,
    pub monitor: Arc<Monitor>,
}

type Reply = std::result::Result<Response<Body>, Problem>;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Access {
    Open,
    Read,
    Admin,
}

pub(super) async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let Some((template, params)) = route(&method, &path) else {
        let known = ROUTES.iter().any(|(_, t)| matches(t, &path).is_some());
        return if known {
            // RFC 9110: a 405 lists the methods the resource has.
            let allowed: Vec<&str> = ROUTES
                .iter()
                .filter(|(_, t)| matches(t, &path).is_some())
                .map(|(m, _)| *m)
                .collect();
            let mut response = error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "{method} is not allowed on {path}; use {}",
                    allowed.join(" or ")
                ),
            );
            if let Ok(value) = hyper::header::HeaderValue::from_str(&allowed.join(", ")) {
                response.headers_mut().insert(hyper::header::ALLOW, value);
            }
            response
        } else {
            error_response(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {path}; see /api/v1/openapi.json"),
            )
        };
    };
    let access = match (template, &method) {
        ("/" | "/assets/dashboard.js" | "/assets/dashboard.css" | "/healthz" | "/readyz", _) => {
            Access::Open
        }
        (_, &Method::GET) => Access::Read,
        _ => Access::Admin,
    };
    let (parts, body) = req.into_parts();
    let token = bearer_token(&parts.headers);
    let host = parts
        .headers
        .get(hyper::header::HOST)
        .and_then(|v| v.to_str().ok());
    if let Err(p) = authorize(shared, access, token.as_deref(), host) {
        return error_response(p.0, p.1);
    }
    if let Err(p) = no_repeated_query(&query) {
        return error_response(p.0, p.1);
    }
    // A cache value is the body itself, and may be larger than any JSON body.
    let cache_value = method == Method::PUT && template == CACHE_ENTRY;
    let limit = if cache_value {
        rota::cache::MAX_VALUE
    } else {
        MAX_BODY
    };
    let body = match read_body(body, limit).await {
        Ok(b) => b,
        Err(Problem(status, _)) if cache_value && status == StatusCode::PAYLOAD_TOO_LARGE => {
            return error_response(
                status,
                format!(
                    "the value is larger than the {limit} bytes a cache entry holds; store a reference to larger data"
                ),
            )
        }
        Err(p) => return error_response(p.0, p.1),
    };
    let reply = dispatch(
        shared,
        &method,
        template,
        &params,
        &query,
        &parts.headers,
        &body,
    )
    .await;
    reply.unwrap_or_else(|p| error_response(p.0, p.1))
}

fn authorize(
    shared: &Shared,
    access: Access,
    token: Option<&str>,
    host: Option<&str>,
) -> Result<(), Problem> {
    if access == Access::Open {
        return Ok(());
    }
    let is_admin = token.is_some_and(|t| shared.admin_token.as_ref().is_some_and(|s| s.matches(t)));
    let is_reader = token.is_some_and(|t| shared.read_token.as_ref().is_some_and(|s| s.matches(t)));
    let any_token = shared.admin_token.is_some() || shared.read_token.is_some();
    // Open reads answer only a client that names the node by address or as localhost: a
    // web page whose own name was made to resolve to this node (DNS rebinding) names it by
    // that name, and must not read the cluster through the visitor's browser.
    if access == Access::Read && !any_token && !host.is_none_or(host_names_an_address) {
        return Err(Problem(
            StatusCode::FORBIDDEN,
            format!(
                "reads need no token on this node, so they answer only requests to an IP address or localhost, not to Host `{}`; use the address, or set [admin] read_token",
                host.unwrap_or_default()
            ),
        ));
    }
    match access {
        Access::Read if is_admin || is_reader || !any_token => Ok(()),
        Access::Admin if is_admin => Ok(()),
        Access::Admin if shared.admin_token.is_none() => Err(Problem(
            StatusCode::FORBIDDEN,
            "actions are disabled on this node: no admin token is configured; set [admin] token or ROTA_ADMIN_TOKEN".into(),
        )),
        Access::Admin if is_reader => Err(Problem(
            StatusCode::FORBIDDEN,
            "this token is read-only; actions need the admin token".into(),
        )),
        _ if token.is_none() => Err(Problem(
            StatusCode::UNAUTHORIZED,
            "a token is required: send `Authorization: Bearer <token>`".into(),
        )),
        _ => Err(Problem(
            StatusCode::UNAUTHORIZED,
            "the token is not valid here; check ROTA_TOKEN or [admin] token".into(),
        )),
    }
}

/// A request's body must arrive within this: a client trickling one byte at a time must not
/// hold a connection (one of [`super::MAX_CONNECTIONS`]) as long as it likes.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn read_body(body: Incoming, limit: usize) -> Result<Vec<u8>, Problem> {
    let Ok(read) = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, limit).collect()).await
    else {
        return Err(Problem(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within {} s; send it at once",
                BODY_TIMEOUT.as_secs()
            ),
        ));
    };
    match read {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(Problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {limit} bytes"),
            ))
        }
        Err(e) => Err(Problem::bad(format!("cannot read the body: {e}"))),
    }
}

fn matches<'a>(template: &str, path: &'a str) -> Option<BTreeMap<&'static str, String>> {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&'a str> = path.split('/').collect();
    if t.len() != p.len() {
        return None;
    }
    let mut params = BTreeMap::new();
    for (ts, ps) in t.iter().zip(&p) {
        if let Some(name) = ts.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
            if ps.is_empty() {
                return None;
            }
            let name: &'static str = match name {
                "id" => "id",
                "name" => "name",
                "cache" => "cache",
                "key" => "key",
                _ => "seq",
            };
            params.insert(name, ps.to_string());
        } else if ts != ps {
            return None;
        }
    }
    Some(params)
}

fn route(method: &Method, path: &str) -> Option<(&'static str, BTreeMap<&'static str, String>)> {
    ROUTES
        .iter()
        .filter(|(m, _)| *m == method.as_str())
        .find_map(|(_, t)| matches(t, path).map(|p| (*t, p)))
}

/// Whether a `Host` header names an IP address or localhost (with or without a port).
fn host_names_an_address(host: &str) -> bool {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        // [v6] or [v6]:port
        return rest
            .split_once(']')
            .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok());
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

/// Refuses a query parameter given twice: which value counts would be a guess.
fn no_repeated_query(query: &str) -> Result<(), Problem> {
    let mut seen = std::collections::BTreeSet::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let name = pair.split_once('=').map_or(pair, |(k, _)| k);
        if !seen.insert(name) {
            return Err(Problem::bad(format!(
                "query parameter `{name}` is given more than once; give it once"
            )));
        }
    }
    Ok(())
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn limit(query: &str, default: i64, max: i64) -> Result<i64, Problem> {
    match query_param(query, "limit") {
        None => Ok(default),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(Problem::bad(format!(
                "query `limit` = `{v}` is not a number from 1 to {max}"
            ))),
        },
    }
}

/// A JSON body, or an error naming what is wrong with it. An empty body is `{}`.
fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Problem> {
    let text = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        body
    };
    serde_json::from_slice(text).map_err(|e| Problem::bad(format!("body: {e}")))
}

async fn dispatch(
    shared: &Shared,
    method: &Method,
    template: &str,
    params: &BTreeMap<&'static str, String>,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Reply {
    let api = &shared.api;
    let param = |name: &str| params.get(name).cloned().unwrap_or_default();
    if template == CACHE_KEYS || template == CACHE_ENTRY {
        return cache_request(api, method, template, params, query, headers, body).await;
    }
    if method == Method::POST {
        return act(api, template, &param("id"), &param("name"), body).await;
    }
    if let Some(page) = dashboard::asset(template) {
        return Ok(page);
    }
    match template {
        "/healthz" => Ok(json_response(StatusCode::OK, &json!({"status": "ok"}))),
        "/metrics" => metrics(api).await,
        "/api/v1/dashboard" => Ok(json_response(
            StatusCode::OK,
            &*shared.monitor.snapshot().await?,
        )),
        "/api/v1/stream" => shared.monitor.stream().await,
        "/readyz" => {
            let s = api.status.borrow().clone();
            let (status, reason) = match (&s.store_error, s.active) {
                (Some(e), _) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("store unreachable: {e}"),
                ),
                (None, false) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no valid lease: not joined, or fenced".to_string(),
                ),
                (None, true) => (StatusCode::OK, "ready".to_string()),
            };
            Ok(json_response(
                status,
                &json!({"ready": status == StatusCode::OK, "reason": reason, "node": api.node, "leader": s.leader}),
            ))
        }
        "/api/v1/openapi.json" => {
            let doc: Value = serde_json::from_str(OPENAPI).expect("valid document");
            Ok(json_response(StatusCode::OK, &doc))
        }
        "/api/v1/cluster" => {
            let m = Model::read(api).await?;
            let tasks = m.tasks_json(None);
            let count = |state: &str| tasks.iter().filter(|t| t["state"] == state).count();
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "cluster": api.cluster,
                    "answered_by": api.node,
                    "store": api.store.kind(),
                    "now_ms": m.members.view.now_ms,
                    "generation": m.members.view.generation,
                    "leader": m.members.leader().map(|l| json!({"node": l.node, "epoch": l.epoch})),
                    "nodes": {"live": m.members.live().count(), "registered": m.members.view.nodes.len()},
                    "tasks": {
                        "declared": tasks.len(),
                        "placed": count("placed"),
                        "everywhere": count("everywhere"),
                        "paused": count("paused"),
                        "unplaced": count("unplaced"),
                    },
                    "commands": m.log.last().map_or(0, |c| c.seq),
                }),
            ))
        }
        "/api/v1/nodes" => {
            let m = Model::read(api).await?;
            let nodes: Vec<Value> = m
                .members
                .view
                .nodes
                .iter()
                .map(|n| m.node_json(n))
                .collect();
            Ok(json_response(StatusCode::OK, &json!(nodes)))
        }
        "/api/v1/nodes/{id}" => {
            let id = param("id");
            let m = Model::read(api).await?;
            match m.members.view.nodes.iter().find(|n| n.node == id) {
                Some(n) => Ok(json_response(StatusCode::OK, &m.node_json(n))),
                None => Err(Problem::not_found(format!(
                    "no node `{id}` is registered in cluster `{}`",
                    api.cluster
                ))),
            }
        }
        "/api/v1/tasks" | "/api/v1/services" => {
            let m = Model::read(api).await?;
            let services = template == "/api/v1/services";
            Ok(json_response(
                StatusCode::OK,
                &json!(m.tasks_json(Some(services))),
            ))
        }
        "/api/v1/tasks/{name}" | "/api/v1/services/{name}" => {
            let name = param("name");
            let m = Model::read(api).await?;
            let services = template.starts_with("/api/v1/services");
            let found = m
                .members
                .declared()
                .get(&name)
                .filter(|(schedule, _)| (schedule == SERVICE_SCHEDULE) == services)
                .map(|(schedule, by)| m.task_json(&name, schedule, by));
            match found {
                Some(mut t) => {
                    t["history"] = json!(history(api, &name, 10).await?);
                    Ok(json_response(StatusCode::OK, &t))
                }
                None => Err(Problem::not_found(format!(
                    "no live node declares {} `{name}`",
                    if services { "a service" } else { "a task" }
                ))),
            }
        }
        "/api/v1/tasks/{name}/history" => {
            let limit = limit(query, 50, 1000)?;
            Ok(json_response(
                StatusCode::OK,
                &json!(history(api, &param("name"), limit).await?),
            ))
        }
        "/api/v1/commands" => {
            let limit = limit(query, 50, 1000)? as usize;
            let log = read_log(api).await?;
            let recent: Vec<&Command> = log.iter().rev().take(limit).collect();
            let seqs: Vec<i64> = recent.iter().map(|c| c.seq).collect();
            let acks = api
                .store
                .command_acks(&api.cluster, AckFilter::Commands(&seqs))
                .await?;
            let out: Vec<Value> = recent.iter().map(|c| command_json(c, &acks)).collect();
            Ok(json_response(StatusCode::OK, &json!(out)))
        }
        "/api/v1/commands/{seq}" => {
            let seq = command_number(&param("seq"))?;
            let found = api.store.commands(&api.cluster, seq - 1, 1).await?;
            let Some(record) = found.into_iter().find(|c| c.seq == seq) else {
                return Err(Problem::not_found(format!(
                    "no command #{seq} in cluster `{}`",
                    api.cluster
                )));
            };
            let command = record.parse()?;
            let acks = api
                .store
                .command_acks(&api.cluster, AckFilter::Commands(&[seq]))
                .await?;
            Ok(json_response(
                StatusCode::OK,
                &command_json(&command, &acks),
            ))
        }
        "/api/v1/events" => {
            let limit = limit(query, 100, 1000)? as usize;
            Ok(json_response(
                StatusCode::OK,
                &json!(events(api, limit).await?),
            ))
        }
        _ => Err(Problem::not_found("no such endpoint")),
    }
}

async fn history(api: &Api, task: &str, limit: i64) -> Result<Vec<Value>, Problem> {
    let fires = api.store.history(&api.cluster, Some(task), limit).await?;
    Ok(fires.iter().map(fire_json).collect())
}

/// `/metrics`: this node's counters, with the cluster's registrations as last seen.
async fn metrics(api: &Api) -> Reply {
    let status = api.status.borrow().clone();
    let mut gauges = rota::metrics::Gauges {
        node: api.node.clone(),
        cluster: api.cluster.clone(),
        store: api.store.kind().to_string(),
        incarnation: status.incarnation,
        up: status.active,
        leader: status.leader,
        owned: status.owned.len(),
        nodes: BTreeMap::new(),
    };
    // Scrapes must answer while the store does not: then the registrations are left out.
    let view = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        api.store.view(&api.cluster),
    )
    .await;
    if let Ok(Ok(view)) = view {
        for n in &view.nodes {
            let state = match (n.alive, n.leaving) {
                (true, false) => "alive",
                (true, true) => "leaving",
                (false, _) => "dead",
            };
            *gauges.nodes.entry(state).or_default() += 1;
        }
    }
    let text = api.metrics.render(&gauges);
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
        .header("cache-control", "no-store")
        .body(http_body_util::Full::new(hyper::body::Bytes::from(text)).boxed())
        .expect("valid response"))
}

/// The cluster's recent events, newest first: the journal (joins, leaves, deaths,
/// failovers, leader changes), commands issued and acknowledged, and fires that did not end
/// well.
async fn events(api: &Api, limit: usize) -> Result<Vec<Value>, Problem> {
    let store = &api.store;
    let journal = store.events(&api.cluster, limit as i64).await?;
    let log = read_log(api).await?;
    let recent: Vec<Command> = log.iter().rev().take(limit).cloned().collect();
    let seqs: Vec<i64> = recent.iter().map(|c| c.seq).collect();
    let acks = store
        .command_acks(&api.cluster, AckFilter::Commands(&seqs))
        .await?;
    let fires = store.history(&api.cluster, None, limit as i64).await?;
    Ok(merge_events(&journal, &recent, &acks, &fires, limit))
}

/// An optional field that may be left out but not given as `null`: the document says what
/// each field holds, and `null` is none of them.
fn present<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// `{"nodes": [...]}`: the scope of an action (absent: the whole cluster).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ScopeBody {
    #[serde(default, deserialize_with = "present")]
    nodes: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActAsBody {
    node: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogLevelBody {
    level: String,
    #[serde(default, deserialize_with = "present")]
    nodes: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollingBody {
    #[serde(default, deserialize_with = "present")]
    nodes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    timeout_secs: Option<u64>,
}

/// The body of `POST /api/v1/commands`, flat as the OpenAPI document gives it. (serde's
/// `flatten` of the tagged [`Operation`] cannot be combined with `deny_unknown_fields`: it
/// refused every body with "unknown field `op`".)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenericBody {
    op: String,
    #[serde(default, deserialize_with = "present")]
    task: Option<String>,
    #[serde(default, deserialize_with = "present")]
    service: Option<String>,
    #[serde(default, deserialize_with = "present")]
    node: Option<String>,
    #[serde(default, deserialize_with = "present")]
    level: Option<String>,
    #[serde(default, deserialize_with = "present")]
    timeout_secs: Option<u64>,
    #[serde(default = "cluster_scope")]
    scope: Scope,
}

impl GenericBody {
    /// The operation the fields describe: each op's own fields, and no other.
    fn operation(self) -> Result<(Operation, Scope), Problem> {
        let op_name = self.op.clone();
        let mut fields = [
            ("task", self.task),
            ("service", self.service),
            ("node", self.node),
            ("level", self.level),
            ("timeout_secs", self.timeout_secs.map(|t| t.to_string())),
        ];
        let mut take = |name: &str| {
            fields
                .iter_mut()
                .find(|(n, _)| *n == name)
                .and_then(|(_, v)| v.take())
        };
        let mut need = |name: &str| {
            take(name).ok_or_else(|| {
                Problem::bad(format!("body: op `{op_name}` needs the field `{name}`"))
            })
        };
        let op = match self.op.as_str() {
            "pause" => Operation::Pause {
                task: need("task")?,
            },
            "resume" => Operation::Resume {
                task: need("task")?,
            },
            "stop" => Operation::Stop {
                service: need("service")?,
            },
            "start" => Operation::Start {
                service: need("service")?,
            },
            "drain" => Operation::Drain,
            "undrain" => Operation::Undrain,
            "act_as" => Operation::ActAs {
                node: need("node")?,
            },
            "stop_acting" => Operation::StopActing,
            "restart" => Operation::Restart,
            "shutdown" => Operation::Shutdown,
            "set_log_level" => Operation::SetLogLevel {
                level: need("level")?,
            },
            "rolling_restart" => Operation::RollingRestart {
                timeout_secs: self.timeout_secs.unwrap_or(ROLLING_TIMEOUT_SECS),
            },
            other => {
                return Err(Problem::bad(format!(
                    "body: `op` = `{other}` is not an operation; use one of {}",
                    OPERATIONS.join(", ")
                )))
            }
        };
        if op_name == "rolling_restart" {
            take("timeout_secs");
        }
        if let Some((name, _)) = fields.iter().find(|(_, v)| v.is_some()) {
            return Err(Problem::bad(format!(
                "body: the field `{name}` does not apply to op `{op_name}`; leave it out"
            )));
        }
        Ok((op, self.scope))
    }
}

/// The operations `POST /api/v1/commands` takes, as the OpenAPI document lists them.
const OPERATIONS: [&str; 12] = [
    "pause",
    "resume",
    "stop",
    "start",
    "drain",
    "undrain",
    "act_as",
    "stop_acting",
    "restart",
    "shutdown",
    "set_log_level",
    "rolling_restart",
];

fn cluster_scope() -> Scope {
    Scope::Cluster
}

fn scope_of(nodes: Option<Vec<String>>) -> Result<Scope, Problem> {
    match nodes {
        None => Ok(Scope::Cluster),
        Some(list) if list.is_empty() => Err(Problem::bad(
            "`nodes` is empty; name at least one node, or leave `nodes` out for the whole cluster",
        )),
        Some(list) => Ok(Scope::Nodes(list)),
    }
}

async fn act(api: &Api, template: &str, id: &str, name: &str, body: &[u8]) -> Reply {
    let one = || Scope::Nodes(vec![id.to_string()]);
    let no_body = |body: &[u8]| -> Result<(), Problem> {
        if body.iter().all(u8::is_ascii_whitespace) || body == b"{}" {
            Ok(())
        } else {
            Err(Problem::bad("this action takes no body"))
        }
    };
    let (op, scope) = match template {
        "/api/v1/commands" => {
            let g: GenericBody = parse_body(body)?;
            g.operation()?
        }
        "/api/v1/tasks/{name}/pause" | "/api/v1/tasks/{name}/resume" => {
            let s: ScopeBody = parse_body(body)?;
            let task = name.to_string();
            let op = if template.ends_with("pause") {
                Operation::Pause { task }
            } else {
                Operation::Resume { task }
            };
            (op, scope_of(s.nodes)?)
        }
        "/api/v1/services/{name}/stop" | "/api/v1/services/{name}/start" => {
            let s: ScopeBody = parse_body(body)?;
            let service = name.to_string();
            let op = if template.ends_with("stop") {
                Operation::Stop { service }
            } else {
                Operation::Start { service }
            };
            (op, scope_of(s.nodes)?)
        }
        "/api/v1/nodes/{id}/drain" => (no_body(body).map(|_| Operation::Drain)?, one()),
        "/api/v1/nodes/{id}/undrain" => (no_body(body).map(|_| Operation::Undrain)?, one()),
        "/api/v1/nodes/{id}/stop-acting" => (no_body(body).map(|_| Operation::StopActing)?, one()),
        "/api/v1/nodes/{id}/restart" => (no_body(body).map(|_| Operation::Restart)?, one()),
        "/api/v1/nodes/{id}/shutdown" => (no_body(body).map(|_| Operation::Shutdown)?, one()),
        "/api/v1/nodes/{id}/act-as" => {
            let b: ActAsBody = parse_body(body)?;
            (Operation::ActAs { node: b.node }, one())
        }
        "/api/v1/log-level" => {
            let b: LogLevelBody = parse_body(body)?;
            (
                Operation::SetLogLevel { level: b.level },
                scope_of(b.nodes)?,
            )
        }
        "/api/v1/rolling-restart" => {
            let b: RollingBody = parse_body(body)?;
            let timeout_secs = b.timeout_secs.unwrap_or(ROLLING_TIMEOUT_SECS);
            (
                Operation::RollingRestart { timeout_secs },
                scope_of(b.nodes)?,
            )
        }
        _ => return Err(Problem::not_found("no such action")),
    };
    let (command, warnings) = issue(api, op, scope).await?;
    let mut v = command_json(&command, &[]);
    v["warnings"] = json!(warnings);
    let mut response = json_response(StatusCode::ACCEPTED, &v);
    if let Ok(location) = format!("/api/v1/commands/{}", command.seq).parse() {
        response
            .headers_mut()
            .insert(hyper::header::LOCATION, location);
    }
    Ok(response)
}

/// Validates a command against the cluster as it is, works out its targets, and appends it.
/// Returns it with warnings (nodes named that are not live now).
async fn issue(api: &Api, op: Operation, scope: Scope) -> Result<(Command, Vec<String>), Problem> {
    if let Some((field, message)) = op.problem() {
        return Err(Problem::bad(format!("{field}: {message}")));
    }
    let m = Members::read(api).await?;
    let declared = m.declared();
    // A task is paused and resumed, a service stopped and started: the name must say which.
    let named = match &op {
        Operation::Pause { task } | Operation::Resume { task } => Some((task, false)),
        Operation::Stop { service } | Operation::Start { service } => Some((service, true)),
        _ => None,
    };
    if let Some((name, service)) = named {
        let (kind, plural) = if service {
            ("service", "services")
        } else {
            ("task", "tasks")
        };
        match declared.get(name.as_str()) {
            None => {
                return Err(Problem::not_found(format!(
                    "no live node declares {kind} `{name}`; see GET /api/v1/{plural}"
                )))
            }
            // Not a task (or not a service) of that name: not found as what the path says.
            Some((schedule, _)) if (schedule == SERVICE_SCHEDULE) != service => {
                return Err(Problem::not_found(if service {
                    format!(
                        "`{name}` is a scheduled task; use /api/v1/tasks/{name}/pause or resume"
                    )
                } else {
                    format!("`{name}` is a service; use /api/v1/services/{name}/stop or start")
                }))
            }
            Some(_) => {}
        }
    }
    let mut warnings = Vec::new();
    let live: Vec<String> = m
        .live()
        .filter(|n| !n.leaving)
        .map(|n| n.node.clone())
        .collect();
    let targets = match &scope {
        Scope::Cluster => {
            let mut t = live.clone();
            // A rolling restart takes the leader last: one change of leader, not several.
            if let (Operation::RollingRestart { .. }, Some(l)) = (&op, m.leader()) {
                t.retain(|n| *n != l.node);
                t.push(l.node.clone());
            }
            t
        }
        Scope::Nodes(nodes) => {
            let mut seen = BTreeSet::new();
            for n in nodes {
                rota::node::validate_name("nodes", n).map_err(|e| Problem::bad(e.to_string()))?;
                if !seen.insert(n.as_str()) {
                    return Err(Problem::bad(format!("nodes: `{n}` is named twice")));
                }
                if !live.contains(n) {
                    warnings.push(format!(
                        "node `{n}` is not live now; it applies the command when it starts"
                    ));
                }
            }
            nodes.clone()
        }
    };
    if targets.is_empty() {
        return Err(Problem(
            StatusCode::CONFLICT,
            "no live node to address: the cluster is empty".into(),
        ));
    }
    if let Operation::ActAs { node } = &op {
        if targets.iter().any(|t| t == node) {
            // Well-formed, but not possible for this target: a conflict, not a bad request.
            return Err(Problem(
                StatusCode::CONFLICT,
                format!("node: a node cannot act as itself (`{node}`); name another node"),
            ));
        }
    }
    let body = CommandBody {
        op,
        scope,
        targets,
        issued_by: api.node.clone(),
    };
    let text = serde_json::to_string(&body).expect("commands serialize");
    let (seq, issued_at_ms) = api.store.append_command(&api.cluster, &text).await?;
    tracing::info!(seq, op = body.op.name(), targets = ?body.targets, "command issued");
    api.metrics.command_issued(body.op.name());
    Ok((
        Command {
            seq,
            issued_at_ms,
            body,
        },
        warnings,
    ))
}

// The cluster's caches: entries read, written and deleted by key, with versions for
// compare-and-set (see `rota::cache`).

/// `/api/v1/cache/...`: `{cache}` and `{key}` arrive percent-encoded, one path segment each.
async fn cache_request(
    api: &Api,
    method: &Method,
    template: &str,
    params: &BTreeMap<&'static str, String>,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Reply {
    let raw = |name: &str| params.get(name).map_or("", String::as_str);
    let cache = percent_decode("cache", raw("cache"), false)?;
    rota::cache::validate_cache_name(&cache).map_err(invalid)?;
    if template == CACHE_KEYS {
        only_query(query, &["prefix", "limit"])?;
        let prefix = match query_param(query, "prefix") {
            Some(p) => percent_decode("query `prefix`", p, true)?,
            None => String::new(),
        };
        let limit = limit(query, 100, 1000)?;
        // One more than asked says whether there are more.
        let mut keys = api
            .store
            .cache_keys(&api.cluster, &cache, &prefix, limit + 1)
            .await?;
        let truncated = keys.len() as i64 > limit;
        keys.truncate(limit as usize);
        return Ok(json_response(
            StatusCode::OK,
            &json!({"cache": cache, "prefix": prefix, "keys": keys, "truncated": truncated}),
        ));
    }
    let key = percent_decode("key", raw("key"), false)?;
    rota::cache::validate_key(&key).map_err(invalid)?;
    let store = &api.store;
    match *method {
        Method::GET => {
            only_query(query, &[])?;
            let Some(entry) = store.cache_get(&api.cluster, &cache, &key).await? else {
                return Ok(json_response(
                    StatusCode::NOT_FOUND,
                    &json!({
                        "error": format!("cache `{cache}` has no entry `{key}` (never written, deleted, or expired)"),
                        "status": 404,
                        "cache": cache,
                        "key": key,
                    }),
                ));
            };
            let (encoding, value) = match std::str::from_utf8(&entry.value) {
                Ok(text) => ("utf-8", text.to_string()),
                Err(_) => ("base64", BASE64_STANDARD.encode(&entry.value)),
            };
            Ok(with_etag(
                json_response(
                    StatusCode::OK,
                    &json!({
                        "cache": cache,
                        "key": key,
                        "version": entry.version,
                        "expires_at_ms": entry.expires_at_ms,
                        "encoding": encoding,
                        "value": value,
                    }),
                ),
                entry.version,
            ))
        }
        Method::PUT => {
            only_query(query, &["ttl"])?;
            let ttl_ms = match query_param(query, "ttl") {
                Some(t) => Some(parse_ttl(&percent_decode("query `ttl`", t, true)?)?),
                None => None,
            };
            let expect = expectation(headers, true)?;
            let write = CacheWrite {
                cache: &cache,
                key: &key,
                value: body,
                ttl_ms,
                expect,
            };
            match store.cache_put(&api.cluster, &write).await? {
                CacheOutcome::Done { version } => Ok(with_etag(
                    json_response(
                        StatusCode::OK,
                        &json!({"cache": cache, "key": key, "version": version}),
                    ),
                    version,
                )),
                CacheOutcome::Conflict { current } => {
                    Ok(conflict(&cache, &key, expect, current, true))
                }
            }
        }
        Method::DELETE => {
            only_query(query, &[])?;
            let expect = expectation(headers, false)?;
            // The store changes nothing, and answers version 0, when nothing live is there.
            let outcome = store
                .cache_delete(&api.cluster, &cache, &key, expect)
                .await?;
            match outcome {
                CacheOutcome::Done { version: 0 } => Ok(json_response(
                    StatusCode::OK,
                    &json!({"cache": cache, "key": key, "deleted": false, "version": null}),
                )),
                CacheOutcome::Done { version } => Ok(json_response(
                    StatusCode::OK,
                    &json!({"cache": cache, "key": key, "deleted": true, "version": version}),
                )),
                CacheOutcome::Conflict { current } => {
                    Ok(conflict(&cache, &key, expect, current, false))
                }
            }
        }
        _ => Err(Problem(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on a cache entry"),
        )),
    }
}

/// 409: the entry was not as the request's condition said; nothing changed.
fn conflict(
    cache: &str,
    key: &str,
    expect: Expect,
    current: Option<i64>,
    write: bool,
) -> Response<Body> {
    let message = match (expect, current) {
        (Expect::Absent, Some(v)) => format!(
            "cache `{cache}`, key `{key}` exists at version {v} (If-None-Match: * writes only an absent key); leave the header out to overwrite, or send If-Match: {v}"
        ),
        (Expect::Version(want), Some(v)) => format!(
            "cache `{cache}`, key `{key}` is at version {v}, not {want} (If-Match); read it again and retry"
        ),
        (Expect::Version(want), None) if write => format!(
            "cache `{cache}` has no live entry `{key}`, so not version {want} (If-Match); send If-None-Match: * to create it"
        ),
        (Expect::Version(want), None) => format!(
            "cache `{cache}` has no live entry `{key}`, so not version {want} (If-Match); nothing to delete"
        ),
        (_, current) => format!(
            "cache `{cache}`, key `{key}` was not as expected (current version: {current:?}); read it again and retry"
        ),
    };
    json_response(
        StatusCode::CONFLICT,
        &json!({"error": message, "status": 409, "current_version": current}),
    )
}

/// What a write expects to find, from `If-Match: <version>` or (writes only)
/// `If-None-Match: *`.
fn expectation(headers: &HeaderMap, write: bool) -> Result<Expect, Problem> {
    let header = |name: hyper::header::HeaderName| -> Result<Option<String>, Problem> {
        match headers.get(&name) {
            None => Ok(None),
            Some(v) => v.to_str().map(|t| Some(t.trim().to_string())).map_err(|_| {
                Problem::bad(format!(
                    "header `{name}` is not text; send a version number (If-Match: 3) or `*` (If-None-Match: *)"
                ))
            }),
        }
    };
    let if_match = header(hyper::header::IF_MATCH)?;
    let if_none_match = header(hyper::header::IF_NONE_MATCH)?;
    match (if_match, if_none_match) {
        // Each is a precondition (RFC 9110 13.2.2): an entry at a version exists, so `*`
        // cannot also find none. Well-formed, never met: a conflict like any unmet one.
        (Some(_), Some(_)) => Err(Problem(
            StatusCode::CONFLICT,
            "headers `If-Match` and `If-None-Match: *` are both given, and can never both hold; send one: If-Match: <version> to compare and set, If-None-Match: * to create only".into(),
        )),
        (Some(m), None) => {
            // Also as an entity tag: the ETag of a GET is the version in quotes. Digits
            // only, from 1, as the document's pattern says (no sign, no leading zero).
            let bare = m
                .strip_prefix('"')
                .and_then(|r| r.strip_suffix('"'))
                .unwrap_or(&m);
            let digits = (1..=18).contains(&bare.len())
                && bare.bytes().all(|b| b.is_ascii_digit())
                && !bare.starts_with('0');
            match bare.parse::<i64>() {
                Ok(v) if digits => Ok(Expect::Version(v)),
                _ if bare == "*" => Err(Problem::bad(
                    "header `If-Match` = `*` is not supported; send the entry's version (If-Match: 3), as GET answers it",
                )),
                _ => Err(Problem::bad(format!(
                    "header `If-Match` = `{m}` is not a version; send the entry's version, a whole number from 1 (If-Match: 3), as GET answers it"
                ))),
            }
        }
        (None, Some(n)) if !write => Err(Problem::bad(format!(
            "header `If-None-Match` = `{n}` does not apply to a delete; send If-Match: <version> to delete only that version"
        ))),
        (None, Some(n)) if n == "*" => Ok(Expect::Absent),
        (None, Some(n)) => Err(Problem::bad(format!(
            "header `If-None-Match` = `{n}` is not understood; send If-None-Match: * to write only if the key is absent, or If-Match: <version> to compare and set"
        ))),
        (None, None) => Ok(Expect::Any),
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme's case does not
/// matter, RFC 9110).
fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// A command number from the path: 1 or more.
fn command_number(raw: &str) -> Result<i64, Problem> {
    match raw.parse::<i64>() {
        Ok(seq) if seq >= 1 => Ok(seq),
        _ => Err(Problem::bad(format!(
            "`{raw}` is not a command number; commands are numbered from 1"
        ))),
    }
}

/// A `ttl` query value (`30s`, `5m`) in ms: from 1 ms to
/// [`rota::core::schedule::MAX_DURATION`].
fn parse_ttl(text: &str) -> Result<i64, Problem> {
    let fix = "give a time to live from 1ms to 3650d, e.g. ttl=30s";
    // Exactly as the document's pattern: digits from 1 without a leading zero, then a unit.
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let leading_zero = digits > 1 && text.starts_with('0');
    if digits == 0 || leading_zero || !["ms", "s", "m", "h", "d"].contains(&&text[digits..]) {
        return Err(Problem::bad(format!(
            "query `ttl` = `{text}` is not a time to live; {fix}"
        )));
    }
    let d = rota::core::schedule::parse_duration(text)
        .map_err(|e| Problem::bad(format!("query `ttl`: {e}; {fix}")))?;
    // At most MAX_DURATION: no overflow.
    match d.as_millis() as i64 {
        0 => Err(Problem::bad(format!(
            "query `ttl` = `{text}` is no time at all; {fix}, or leave `ttl` out to keep the entry until it is deleted"
        ))),
        ms => Ok(ms),
    }
}

/// Refuses query parameters other than `known`: a misspelt `ttl` must not write an entry
/// that never expires.
fn only_query(query: &str, known: &[&str]) -> Result<(), Problem> {
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let name = pair.split_once('=').map_or(pair, |(k, _)| k);
        if !known.contains(&name) {
            let fix = match known {
                [] => "this request takes no query parameters".to_string(),
                _ => format!("use {}", known.join(", ")),
            };
            return Err(Problem::bad(format!(
                "query parameter `{name}` is not known here; {fix}"
            )));
        }
    }
    Ok(())
}

/// A library input error (it names the field, the value and the fix) as a 400.
fn invalid(e: Error) -> Problem {
    Problem::bad(e.to_string())
}

/// The response with `ETag: "<version>"` (`If-Match` takes it back).
fn with_etag(mut response: Response<Body>, version: i64) -> Response<Body> {
    if let Ok(tag) = format!("\"{version}\"").parse() {
        response.headers_mut().insert(hyper::header::ETAG, tag);
    }
    response
}

/// Decodes `%XX` escapes (and `+` as a space, in query values) into UTF-8 text. A `%`
/// without two hex digits is refused (`percent_decode_str` would keep it as it is).
fn percent_decode(field: &str, raw: &str, plus_is_space: bool) -> Result<String, Problem> {
    let bytes = raw.as_bytes();
    let stray_percent = bytes.iter().enumerate().any(|(i, &b)| {
        b == b'%'
            && !matches!(bytes.get(i + 1..i + 3), Some([hi, lo])
                if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit())
    });
    if stray_percent {
        return Err(Problem::bad(format!(
            "{field}: `{raw}` has a `%` not followed by two hex digits; percent-encode it (`%` is %25)"
        )));
    }
    // `+` becomes a space before the escapes are decoded, so `%2B` stays a `+`.
    let spaced = match plus_is_space {
        true => Cow::Owned(raw.replace('+', " ")),
        false => Cow::Borrowed(raw),
    };
    match percent_encoding::percent_decode_str(&spaced).decode_utf8() {
        Ok(text) => Ok(text.into_owned()),
        Err(_) => Err(Problem::bad(format!(
            "{field}: `{raw}` is not UTF-8 once decoded; percent-encode the UTF-8 bytes of the text"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_and_query_values_are_percent_decoded() {
        let decode = |raw, plus| percent_decode("key", raw, plus).map_err(|p| p.1);
        assert_eq!(decode("a%2Fb%20c", false).unwrap(), "a/b c");
        assert_eq!(decode("caf%C3%A9+x", false).unwrap(), "café+x");
        assert_eq!(decode("caf%c3%a9+x", true).unwrap(), "café x");
        assert_eq!(decode("1%2B1+2", true).unwrap(), "1+1 2");
        assert_eq!(decode("plain", false).unwrap(), "plain");
        assert!(decode("50%", false).unwrap_err().contains("two hex digits"));
        assert!(decode("%zz", false).unwrap_err().contains("two hex digits"));
        assert!(decode("%+1", false).unwrap_err().contains("two hex digits"));
        assert!(decode("%25%", false)
            .unwrap_err()
            .contains("two hex digits"));
        assert!(decode("%FF", false).unwrap_err().contains("not UTF-8"));
    }

    #[test]
    fn ttls_are_bounded_durations() {
        assert_eq!(parse_ttl("30s").ok(), Some(30_000));
        assert_eq!(parse_ttl("250ms").ok(), Some(250));
        assert_eq!(parse_ttl("3650d").ok(), Some(3650 * 86_400_000));
        for bad in ["0s", "3651d", "soon", "5", "99999999999999999999999d", "1y"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
        assert!(parse_ttl("0s")
            .map_err(|p| p.1)
            .unwrap_err()
            .contains("ttl"));
    }

    #[test]
    fn every_command_body_the_document_describes_is_taken() {
        let op = |body: &str| {
            parse_body::<GenericBody>(body.as_bytes())
                .and_then(GenericBody::operation)
                .map_err(|p| p.1)
        };
        assert_eq!(
            op(r#"{"op": "pause", "task": "report"}"#),
            Ok((
                Operation::Pause {
                    task: "report".into()
                },
                Scope::Cluster
            ))
        );
        assert_eq!(
            op(r#"{"op": "drain", "scope": {"nodes": ["node-2"]}}"#),
            Ok((Operation::Drain, Scope::Nodes(vec!["node-2".into()])))
        );
        assert_eq!(
            op(r#"{"op": "rolling_restart"}"#),
            Ok((
                Operation::RollingRestart {
                    timeout_secs: ROLLING_TIMEOUT_SECS
                },
                Scope::Cluster
            ))
        );
        assert_eq!(
            op(r#"{"op": "set_log_level", "level": "debug", "scope": "cluster"}"#),
            Ok((
                Operation::SetLogLevel {
                    level: "debug".into()
                },
                Scope::Cluster
            ))
        );
        let refused = [
            (r#"{"op": "pause"}"#, "needs the field `task`"),
            (
                r#"{"op": "drain", "task": "x"}"#,
                "`task` does not apply to op `drain`",
            ),
            (r#"{"op": "fly"}"#, "`fly` is not an operation"),
            (
                r#"{"op": "drain", "colour": "red"}"#,
                "unknown field `colour`",
            ),
        ];
        for (body, why) in refused {
            let e = op(body).unwrap_err();
            assert!(e.contains(why), "{body}: {e}");
        }
        // The document's list of operations is the server's.
        let doc: Value = serde_json::from_str(crate::OPENAPI).unwrap();
        let variants = doc["paths"]["/api/v1/commands"]["post"]["requestBody"]["content"]
            ["application/json"]["schema"]["oneOf"]
            .as_array()
            .unwrap();
        let listed: Vec<&str> = variants
            .iter()
            .map(|v| v["properties"]["op"]["enum"][0].as_str().unwrap())
            .collect();
        assert_eq!(listed, OPERATIONS);
        // Each op's body in the document is one the server takes.
        for v in variants {
            let name = v["properties"]["op"]["enum"][0].as_str().unwrap();
            let mut body = json!({ "op": name });
            for field in v["required"].as_array().unwrap() {
                let field = field.as_str().unwrap();
                if field != "op" {
                    body[field] = json!(if field == "level" {
                        "debug"
                    } else {
                        "some-name"
                    });
                }
            }
            op(&body.to_string()).unwrap_or_else(|e| panic!("{body}: {e}"));
        }
    }

    #[test]
    fn open_reads_answer_only_hosts_that_are_addresses() {
        for ok in [
            "127.0.0.1:7070",
            "127.0.0.1",
            "localhost:7070",
            "LOCALHOST",
            "[::1]:7070",
            "10.1.2.3",
        ] {
            assert!(host_names_an_address(ok), "{ok}");
        }
        for no in [
            "evil.example:7070",
            "evil.example",
            "127.0.0.1.evil.example",
            "[::1",
            "localhost.evil:80",
            "",
        ] {
            assert!(!host_names_an_address(no), "{no}");
        }
    }

    #[test]
    fn a_query_parameter_given_twice_is_refused() {
        assert!(no_repeated_query("").is_ok());
        assert!(no_repeated_query("limit=5&prefix=a").is_ok());
        let p = no_repeated_query("limit=5&prefix=a&limit=500").unwrap_err();
        assert!(p.1.contains("`limit` is given more than once"), "{}", p.1);
        assert!(no_repeated_query("ttl&ttl=5s").is_err());
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(hyper::header::AUTHORIZATION, v.parse().unwrap());
            bearer_token(&h)
        };
        for v in ["Bearer abc", "bearer abc", "BEARER  abc "] {
            assert_eq!(with(v).as_deref(), Some("abc"), "{v}");
        }
        assert_eq!(with("Basic abc"), None);
        assert_eq!(with("Bearerabc"), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[test]
    fn command_numbers_start_at_one() {
        assert_eq!(command_number("7").ok(), Some(7));
        for bad in [
            "0",
            "-1",
            "-9223372036854775808",
            "x",
            "99999999999999999999",
        ] {
            let p = command_number(bad).unwrap_err();
            assert!(p.1.contains(bad), "{}", p.1);
        }
    }

    #[test]
    fn conditions_come_from_if_match_and_if_none_match() {
        let with = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap());
            }
            h
        };
        let expect = |pairs: &[(&'static str, &str)], write| {
            expectation(&with(pairs), write).map_err(|p| p.1)
        };
        assert_eq!(expect(&[], true).ok(), Some(Expect::Any));
        assert_eq!(
            expect(&[("if-match", "3")], true).ok(),
            Some(Expect::Version(3))
        );
        assert_eq!(
            expect(&[("if-match", "\"7\"")], false).ok(),
            Some(Expect::Version(7))
        );
        assert_eq!(
            expect(&[("if-none-match", "*")], true).ok(),
            Some(Expect::Absent)
        );
        assert!(expect(&[("if-none-match", "*")], false).is_err());
        assert!(expect(&[("if-match", "0")], true)
            .unwrap_err()
            .contains("If-Match"));
        assert!(expect(&[("if-match", "*")], true)
            .unwrap_err()
            .contains("not supported"));
        assert!(expect(&[("if-none-match", "3")], true).is_err());
        assert!(expect(&[("if-match", "3"), ("if-none-match", "*")], true).is_err());
    }

    #[test]
    fn cache_routes_take_their_parameters_from_the_path() {
        let (template, params) = route(&Method::PUT, "/api/v1/cache/c/a%2Fb").unwrap();
        assert_eq!(template, CACHE_ENTRY);
        assert_eq!(params["cache"], "c");
        assert_eq!(params["key"], "a%2Fb");
        let (template, params) = route(&Method::GET, "/api/v1/cache/c").unwrap();
        assert_eq!((template, params["cache"].as_str()), (CACHE_KEYS, "c"));
        assert!(route(&Method::POST, "/api/v1/cache/c/k").is_none());
        assert!(only_query("ttl=5s", &["ttl"]).is_ok());
        assert!(only_query("tll=5s", &["ttl"])
            .map_err(|p| p.1)
            .unwrap_err()
            .contains("`tll`"));
    }
}
