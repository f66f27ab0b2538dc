//! `GET /api/v1/nodes` and `GET /api/v1/nodes/{id}`: the registered nodes. (A node's
//! actions, `POST /api/v1/nodes/{id}/...`, are commands: see `commands.rs`.)

use hyper::StatusCode;
use serde_json::{json, Value};

use super::reply::{json_response, Reply};
use crate::{
    api::{Api, Problem},
    model::Model,
};

/// `GET /api/v1/nodes`.
pub(super) async fn list(api: &Api) -> Reply {
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

/// `GET /api/v1/nodes/{id}`.
pub(super) async fn one(api: &Api, id: String) -> Reply {
    let m = Model::read(api).await?;
    match m.members.view.nodes.iter().find(|n| n.node == id) {
        Some(n) => Ok(json_response(StatusCode::OK, &m.node_json(n))),
        None => Err(Problem::not_found(format!(
            "no node `{id}` is registered in cluster `{}`",
            api.cluster
        ))),
    }
}
