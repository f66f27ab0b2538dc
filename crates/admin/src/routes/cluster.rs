//! `GET /api/v1/cluster`: the cluster at a glance (leader, node and task counts, the last
//! command).

use hyper::StatusCode;
use serde_json::json;

use super::reply::{json_response, Reply};
use crate::{api::Api, model::Model};

/// `GET /api/v1/cluster`.
pub(super) async fn summary(api: &Api) -> Reply {
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
