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
/// A 503 says when to retry: the store is unreachable or the cluster's view is in flux.
pub(super) fn error_response(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut response = json_response(
        status,
        &serde_json::json!({ "error": message.into(), "status": status.as_u16() }),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from_static("1"),
        );
    }
    response
}
