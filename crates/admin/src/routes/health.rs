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
    // Read in place: the status holds every owned task, thousands of them.
    let (store_error, active, leader) = {
        let s = api.status.borrow();
        (s.store_error.clone(), s.active, s.leader)
    };
    let (status, reason) = match (&store_error, active) {
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
        &json!({"ready": status == StatusCode::OK, "reason": reason, "node": api.node, "leader": leader}),
    ))
}
