//! Routes of the admin API: reads of the cluster, and actions that append cluster commands.
//!
//! This file is the router: the table of routes, method and path matching, the access
//! checks every route shares, the request body, and the JSON response helpers. Each
//! resource's routes are in a file of their own.

mod cache;
mod cluster;
mod commands;
mod definitions;
mod events;
mod health;
mod metrics;
mod nodes;
mod reply;
mod tasks;
mod tokens;

use std::{collections::BTreeMap, sync::Arc};

use cache::{CACHE_ENTRY, CACHE_KEYS};
use http_body_util::{BodyExt, Limited};
use hyper::{body::Incoming, HeaderMap, Method, Request, Response, StatusCode};
use serde_json::Value;

use self::reply::*;
use crate::{
    api::{Api, Body, Problem, Secret},
    dashboard::{self, Monitor},
    tokens::{caller_of, Caller, Role},
};

/// The OpenAPI 3 document of this API.
pub const OPENAPI: &str = include_str!("../openapi.json");

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
    ("GET", "/api/v1/tasks/{name}/runs/{seq}"),
    ("GET", "/api/v1/tasks/{name}/fires/{instant}/output"),
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
    ("POST", "/api/v1/tasks/{name}/run"),
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
    ("GET", "/api/v1/definitions"),
    ("POST", "/api/v1/definitions"),
    ("GET", "/api/v1/tokens"),
    ("POST", "/api/v1/tokens"),
    ("DELETE", "/api/v1/tokens/{name}"),
    ("GET", CACHE_KEYS),
    ("GET", CACHE_ENTRY),
    ("PUT", CACHE_ENTRY),
    ("DELETE", CACHE_ENTRY),
];

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;

pub(super) struct Shared {
    pub api: Api,
    pub admin_token: Option<Secret>,
    pub read_token: Option<Secret>,
    pub monitor: Arc<Monitor>,
}

/// What a route needs: nothing, or a caller with at least a role.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Open,
    Needs(Role),
}

/// The role each route needs. Day-to-day control (pause, resume, stop, start, drain,
/// undrain, run now, and the generic command route, which checks its operation again) needs
/// `operate`; every other change, and the list of tokens, `admin`.
fn access_of(template: &str, method: &Method) -> Access {
    match (template, method) {
        ("/" | "/assets/dashboard.js" | "/assets/dashboard.css" | "/healthz" | "/readyz", _) => {
            Access::Open
        }
        ("/api/v1/tokens" | "/api/v1/definitions", &Method::GET) => Access::Needs(Role::Admin),
        (_, &Method::GET) => Access::Needs(Role::Read),
        (
            "/api/v1/commands"
            | "/api/v1/tasks/{name}/pause"
            | "/api/v1/tasks/{name}/resume"
            | "/api/v1/tasks/{name}/run"
            | "/api/v1/services/{name}/stop"
            | "/api/v1/services/{name}/start"
            | "/api/v1/nodes/{id}/drain"
            | "/api/v1/nodes/{id}/undrain",
            &Method::POST,
        ) => Access::Needs(Role::Operate),
        _ => Access::Needs(Role::Admin),
    }
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
    let access = access_of(template, &method);
    let (parts, body) = req.into_parts();
    let token = bearer_token(&parts.headers);
    let host = parts
        .headers
        .get(hyper::header::HOST)
        .and_then(|v| v.to_str().ok());
    let caller = match authorize(shared, access, token.as_deref(), host).await {
        Ok(caller) => caller,
        Err(p) => return error_response(p.0, p.1),
    };
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
        caller.as_ref(),
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

/// The caller a request's token names, checked against what the route needs: the config's
/// admin and read tokens, or a named token from the store. `None`: an open route, or a read
/// on a node whose config has no token (reads are then open).
async fn authorize(
    shared: &Shared,
    access: Access,
    token: Option<&str>,
    host: Option<&str>,
) -> Result<Option<Caller>, Problem> {
    let Access::Needs(needed) = access else {
        return Ok(None);
    };
    let configured =
        |secret: &Option<Secret>, t: &str| secret.as_ref().is_some_and(|s| s.matches(t));
    let caller = match token {
        None => None,
        Some(t) if configured(&shared.admin_token, t) => Some(Caller {
            name: "admin".into(),
            role: Role::Admin,
        }),
        Some(t) if configured(&shared.read_token, t) => Some(Caller {
            name: "read".into(),
            role: Role::Read,
        }),
        Some(t) => caller_of(shared.api.store.as_ref(), &shared.api.cluster, t).await?,
    };
    let any_token = shared.admin_token.is_some() || shared.read_token.is_some();
    if let Some(caller) = caller {
        if caller.role >= needed {
            return Ok(Some(caller));
        }
        let what = if caller.role == Role::Read {
            "read-only".to_string()
        } else {
            format!("of role {}", caller.role)
        };
        return Err(Problem(
            StatusCode::FORBIDDEN,
            format!(
                "the token `{}` is {what}; this needs a token of role {needed} or above",
                caller.name
            ),
        ));
    }
    if needed == Role::Read && !any_token {
        // Open reads answer only a client that names the node by address or as localhost:
        // a web page whose own name was made to resolve to this node (DNS rebinding) names
        // it by that name, and must not read the cluster through the visitor's browser.
        if !host.is_none_or(host_names_an_address) {
            return Err(Problem(
                StatusCode::FORBIDDEN,
                format!(
                    "reads need no token on this node, so they answer only requests to an IP address or localhost, not to Host `{}`; use the address, or set [admin] read_token",
                    host.unwrap_or_default()
                ),
            ));
        }
        return Ok(None);
    }
    Err(match token {
        None if shared.admin_token.is_none() && needed > Role::Read => Problem(
            StatusCode::FORBIDDEN,
            "actions need a token, and this node's config has no admin token: send a named token (`rota ctl token create`), or set [admin] token or ROTA_ADMIN_TOKEN".into(),
        ),
        None => Problem(
            StatusCode::UNAUTHORIZED,
            "a token is required: send `Authorization: Bearer <token>`".into(),
        ),
        Some(_) => Problem(
            StatusCode::UNAUTHORIZED,
            "the token is not valid here (unknown, or revoked); check ROTA_TOKEN or [admin] token".into(),
        ),
    })
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
                "instant" => "instant",
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

#[allow(clippy::too_many_arguments)]
async fn dispatch(
    shared: &Shared,
    caller: Option<&Caller>,
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
        return cache::cache_request(api, method, template, params, query, headers, body).await;
    }
    match (template, method) {
        ("/api/v1/tokens", &Method::GET) => return tokens::list(api).await,
        ("/api/v1/definitions", &Method::GET) => return definitions::export(api).await,
        ("/api/v1/definitions", &Method::POST) => {
            return definitions::apply(api, caller, body).await
        }
        ("/api/v1/tokens", &Method::POST) => return tokens::create(api, caller, body).await,
        ("/api/v1/tokens/{name}", &Method::DELETE) => {
            return tokens::revoke(api, caller, &param("name")).await
        }
        _ => {}
    }
    if method == Method::POST {
        return commands::act(api, caller, template, &param("id"), &param("name"), body).await;
    }
    if let Some(page) = dashboard::asset(template) {
        return Ok(page);
    }
    match template {
        "/healthz" => health::healthz(),
        "/metrics" => metrics::metrics(api).await,
        "/api/v1/dashboard" => Ok(json_response(
            StatusCode::OK,
            &*shared.monitor.snapshot().await?,
        )),
        "/api/v1/stream" => shared.monitor.stream().await,
        "/readyz" => health::readyz(api),
        "/api/v1/openapi.json" => {
            let doc: Value = serde_json::from_str(OPENAPI).expect("valid document");
            Ok(json_response(StatusCode::OK, &doc))
        }
        "/api/v1/cluster" => cluster::summary(api).await,
        "/api/v1/nodes" => nodes::list(api).await,
        "/api/v1/nodes/{id}" => nodes::one(api, param("id")).await,
        "/api/v1/tasks" | "/api/v1/services" => tasks::list(api, template).await,
        "/api/v1/tasks/{name}" | "/api/v1/services/{name}" => {
            tasks::one(api, template, param("name")).await
        }
        "/api/v1/tasks/{name}/history" => tasks::list_history(api, &param("name"), query).await,
        "/api/v1/tasks/{name}/runs/{seq}" => tasks::run(api, &param("name"), &param("seq")).await,
        "/api/v1/tasks/{name}/fires/{instant}/output" => {
            tasks::output(api, &param("name"), &param("instant"), query).await
        }
        "/api/v1/commands" => commands::list(api, query).await,
        "/api/v1/commands/{seq}" => commands::one(api, &param("seq")).await,
        "/api/v1/events" => events::list(api, query).await,
        _ => Err(Problem::not_found("no such endpoint")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
