//! How a route answers: its reply type, JSON and error responses, and the query parameters
//! every listing reads.

use http_body_util::{BodyExt, Full};
use hyper::{body::Bytes, Response, StatusCode};

use crate::api::{Body, Problem};

pub(super) type Reply = std::result::Result<Response<Body>, Problem>;

pub(super) fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

pub(super) fn limit(query: &str, default: i64, max: i64) -> Result<i64, Problem> {
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

pub(super) fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut text = serde_json::to_vec_pretty(value).expect("JSON values serialize");
    text.push(b'\n');
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(text)).boxed())
        .expect("valid response")
}

/// An error body: `{"error": ..., "status": ...}`.
pub(super) fn error_response(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json_response(
        status,
        &serde_json::json!({ "error": message.into(), "status": status.as_u16() }),
    )
}
