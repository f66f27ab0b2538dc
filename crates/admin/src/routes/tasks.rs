//! The declared tasks and services: `GET /api/v1/tasks`, `/api/v1/services`, one of either
//! by name, a task's fire history (`GET /api/v1/tasks/{name}/history`), and one run-now
//! request's fire (`GET /api/v1/tasks/{name}/runs/{seq}`). (Pausing a task, stopping a
//! service or running a task now is a command: see `commands.rs`.)

use hyper::StatusCode;
use serde_json::{json, Value};

use super::reply::{json_response, limit, Reply};
use crate::{
    api::{Api, Problem},
    model::{fire_json, Model},
};
use rota::{core::control::Operation, node::SERVICE_SCHEDULE, store::RUNS_CACHE};

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

/// `GET /api/v1/tasks/{name}/runs/{seq}`: where run-now request `seq` of the task is: not
/// started yet (`pending`), or its fire's record, whose outcome is the run's state.
pub(super) async fn run(api: &Api, task: &str, seq: &str) -> Reply {
    let not_found = || {
        Problem::not_found(format!(
            "task `{task}` has no run #{seq}; `rota ctl commands` lists the runs asked for"
        ))
    };
    let seq: i64 = seq.parse().ok().filter(|s| *s >= 1).ok_or_else(not_found)?;
    let found = api.store.commands(&api.cluster, seq - 1, 1).await?;
    let Some(record) = found.into_iter().find(|c| c.seq == seq) else {
        return Err(not_found());
    };
    let command = record.parse()?;
    if !matches!(&command.body.op, Operation::Run { task: t, .. } if t == task) {
        return Err(not_found());
    }
    let mut v = json!({
        "seq": seq,
        "task": task,
        "issued_at_ms": command.issued_at_ms,
        "requested_by": command.body.requested_by,
        "state": "pending",
        "fire": null,
    });
    let note = api
        .store
        .cache_get(&api.cluster, RUNS_CACHE, &format!("{task}/{seq}"))
        .await?;
    let key = note.and_then(|n| String::from_utf8_lossy(&n.value).parse::<i64>().ok());
    if let Some(key) = key {
        if let Some(fire) = api.store.fire(&api.cluster, task, key).await? {
            v["state"] = json!(fire.outcome.as_str());
            v["exit_status"] = json!(exit_status(&fire));
            v["fire"] = fire_json(&fire);
            // Found by its key: this run's fire, whatever its message says.
            v["fire"]["run"] = json!(seq);
        }
    }
    Ok(json_response(StatusCode::OK, &v))
}

/// A command's exit status as its fire's record gives it: 0 when it ended ok, the status a
/// failed command exited with, `null` otherwise (running, or ended another way).
fn exit_status(fire: &rota::store::FireRecord) -> Option<i64> {
    match fire.outcome {
        rota::Outcome::Ok => Some(0),
        rota::Outcome::Failed => {
            let message = fire.message.as_deref()?;
            let (_, after) = message.split_once("exit status ")?;
            let digits: String = after
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '-')
                .collect();
            digits.parse().ok()
        }
        _ => None,
    }
}
