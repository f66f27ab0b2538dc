//! The declared tasks and services: `GET /api/v1/tasks`, `/api/v1/services`, one of either
//! by name, a task's fire history (`GET /api/v1/tasks/{name}/history`), and one run-now
//! request's fire (`GET /api/v1/tasks/{name}/runs/{seq}`), and what a fire's work wrote
//! (`GET /api/v1/tasks/{name}/fires/{instant}/output`). (Pausing a task, stopping a
//! service or running a task now is a command: see `commands.rs`.)

use hyper::StatusCode;
use serde_json::{json, Value};

use super::reply::{json_response, limit, query_param, Reply};
use crate::{
    api::{Api, Problem},
    model::{fire_json, Model},
};
use rota::{
    core::control::Operation,
    node::SERVICE_SCHEDULE,
    output::{output_key, FireOutput, Stream, OUTPUT_CACHE},
    store::RUNS_CACHE,
};

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
        None => {
            let kind = if services { "a service" } else { "a task" };
            Err(m.members.undeclared(api, (kind, services), &name, "").await)
        }
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

/// `GET /api/v1/tasks/{name}/fires/{instant}/output`: what an attempt of a fire wrote (the
/// latest attempt unless `attempt` says), as text with invalid UTF-8 replaced. With
/// `stdout_from` / `stderr_from` (bytes already shown), only what came after: a client
/// follows a running fire by asking again with the totals it got, until `done`.
pub(super) async fn output(api: &Api, task: &str, instant: &str, query: &str) -> Reply {
    let no_fire = || {
        Problem::not_found(format!(
            "task `{task}` has no fire at {instant}; its history lists its fires (instants in Unix ms)"
        ))
    };
    // An integer past the range of instants names no fire.
    let instant_ms: i64 = instant.parse().map_err(|_| no_fire())?;
    let number = |name: &str| -> Result<Option<i64>, Problem> {
        match query_param(query, name) {
            None => Ok(None),
            Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                // Past i64: more than anything written or attempted.
                Ok(Some(v.parse::<i64>().unwrap_or(i64::MAX)))
            }
            Some(v) => Err(Problem::bad(format!(
                "query `{name}` = `{v}` is not a whole number of 0 or more"
            ))),
        }
    };
    let (attempt, stdout_from, stderr_from) = (
        number("attempt")?,
        number("stdout_from")?,
        number("stderr_from")?,
    );
    let Some(fire) = api.store.fire(&api.cluster, task, instant_ms).await? else {
        return Err(no_fire());
    };
    let attempt = attempt.filter(|a| *a >= 1).unwrap_or(fire.attempt);
    let entry = api
        .store
        .cache_get(
            &api.cluster,
            OUTPUT_CACHE,
            &output_key(task, instant_ms, attempt),
        )
        .await?;
    let kept = entry.and_then(|e| FireOutput::decode(&e.value));
    let running = fire.outcome == rota::Outcome::Running && attempt == fire.attempt;
    let output = kept.unwrap_or_else(|| FireOutput {
        // Nothing kept: the work wrote nothing (yet), or its output expired.
        done: !running,
        ..FireOutput::default()
    });
    let text = |stream, from: Option<i64>| {
        let (bytes, dropped) = output.after(stream, from.unwrap_or(0) as u64);
        (String::from_utf8_lossy(bytes).into_owned(), dropped)
    };
    let (stdout, stdout_dropped) = text(Stream::Stdout, stdout_from);
    let (stderr, stderr_dropped) = text(Stream::Stderr, stderr_from);
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "task": task,
            "instant_ms": instant_ms,
            "attempt": attempt,
            "attempts": fire.attempt,
            "outcome": fire.outcome.as_str(),
            "done": output.done || !running,
            "stdout": stdout,
            "stderr": stderr,
            "stdout_bytes": output.stdout_bytes,
            "stderr_bytes": output.stderr_bytes,
            "stdout_dropped": stdout_dropped,
            "stderr_dropped": stderr_dropped,
        }),
    ))
}
