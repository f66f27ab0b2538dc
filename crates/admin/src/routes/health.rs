//! `/healthz` and `/readyz`: whether this node answers, and whether it holds a valid lease
//! and reaches the store. Both are open (no token).

use hyper::StatusCode;
use serde_json::json;

use super::reply::{json_response, Reply};
use crate::api::Api;

pub(super) fn healthz() -> Reply {
    Ok(json_response(StatusCode::OK, &json!({"status": "ok"})))
}

pub(super) fn readyz(api: &Api) -> Reply {
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
