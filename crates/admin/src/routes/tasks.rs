//! The declared tasks and services: `GET /api/v1/tasks`, `/api/v1/services`, one of either
//! by name, and a task's fire history (`GET /api/v1/tasks/{name}/history`). (Pausing a
//! task or stopping a service is a command: see `commands.rs`.)

use hyper::StatusCode;
use serde_json::{json, Value};

use super::reply::{json_response, limit, Reply};
use crate::{
    api::{Api, Problem},
    model::{fire_json, Model},
};
use rota::node::SERVICE_SCHEDULE;

/// `GET /api/v1/tasks` or `GET /api/v1/services`, as `template` says.
pub(super) async fn list(api: &Api, template: &str) -> Reply {
    let m = Model::read(api).await?;
    let services = template == "/api/v1/services";
    Ok(json_response(
        StatusCode::OK,
        &json!(m.tasks_json(Some(services))),
    ))
}

/// `GET /api/v1/tasks/{name}` or `GET /api/v1/services/{name}`, as `template` says.
pub(super) async fn one(api: &Api, template: &str, name: String) -> Reply {
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

/// `GET /api/v1/tasks/{name}/history`.
pub(super) async fn list_history(api: &Api, name: &str, query: &str) -> Reply {
    let limit = limit(query, 50, 1000)?;
    Ok(json_response(
        StatusCode::OK,
        &json!(history(api, name, limit).await?),
    ))
}

async fn history(api: &Api, task: &str, limit: i64) -> Result<Vec<Value>, Problem> {
    let fires = api.store.history(&api.cluster, Some(task), limit).await?;
    Ok(fires.iter().map(fire_json).collect())
}
