//! The command log: `GET /api/v1/commands` and `/api/v1/commands/{seq}` read it, and every
//! action (each `POST`: on a task, a service, a node, the log level, a rolling restart, or
//! the generic `POST /api/v1/commands`) appends a command to it.

use std::collections::BTreeSet;

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::reply::{json_response, limit, Reply};
use crate::{
    api::{Api, Problem},
    model::{command_json, read_log, Members},
    tokens::{Caller, Role},
};
use rota::{
    core::control::{Command, CommandBody, ControlState, Operation, Scope},
    node::SERVICE_SCHEDULE,
    store::AckFilter,
};

/// Default rolling restart wait for one node.
const ROLLING_TIMEOUT_SECS: u64 = 120;

/// `GET /api/v1/commands`: the newest first.
pub(super) async fn list(api: &Api, query: &str) -> Reply {
    let limit = limit(query, 50, 1000)? as usize;
    let log = read_log(api).await?;
    let recent: Vec<&Command> = log.iter().rev().take(limit).collect();
    let seqs: Vec<i64> = recent.iter().map(|c| c.seq).collect();
    let acks = api
        .store
        .command_acks(&api.cluster, AckFilter::Commands(&seqs))
        .await?;
    let out: Vec<Value> = recent.iter().map(|c| command_json(c, &acks)).collect();
    Ok(json_response(StatusCode::OK, &json!(out)))
}

/// `GET /api/v1/commands/{seq}`.
pub(super) async fn one(api: &Api, seq: &str) -> Reply {
    let seq = command_number(seq)?;
    let found = api.store.commands(&api.cluster, seq - 1, 1).await?;
    let Some(record) = found.into_iter().find(|c| c.seq == seq) else {
        return Err(Problem::not_found(format!(
            "no command #{seq} in cluster `{}`",
            api.cluster
        )));
    };
    let command = record.parse()?;
    let acks = api
        .store
        .command_acks(&api.cluster, AckFilter::Commands(&[seq]))
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &command_json(&command, &acks),
    ))
}

/// A command number from the path: 1 or more.
fn command_number(raw: &str) -> Result<i64, Problem> {
    match raw.parse::<i64>() {
        Ok(seq) if seq >= 1 => Ok(seq),
        _ => Err(Problem::bad(format!(
            "`{raw}` is not a command number; commands are numbered from 1"
        ))),
    }
}

/// A JSON body, or an error naming what is wrong with it. An empty body is `{}`.
fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Problem> {
    let text = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        body
    };
    serde_json::from_slice(text).map_err(|e| Problem::bad(format!("body: {e}")))
}

/// An optional field that may be left out but not given as `null`: the document says what
/// each field holds, and `null` is none of them.
fn present<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// `{"nodes": [...]}`: the scope of an action (absent: the whole cluster).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ScopeBody {
    #[serde(default, deserialize_with = "present")]
    nodes: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActAsBody {
    node: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogLevelBody {
    level: String,
    #[serde(default, deserialize_with = "present")]
    nodes: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RunBody {
    #[serde(default, deserialize_with = "present")]
    env: Option<Vec<EnvVar>>,
}

/// One variable of a run's environment (a list, not a map: the document can then say what
/// a name may be).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvVar {
    name: String,
    value: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollingBody {
    #[serde(default, deserialize_with = "present")]
    nodes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    timeout_secs: Option<u64>,
}

/// The body of `POST /api/v1/commands`, flat as the OpenAPI document gives it. (serde's
/// `flatten` of the tagged [`Operation`] cannot be combined with `deny_unknown_fields`: it
/// refused every body with "unknown field `op`".)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenericBody {
    op: String,
    #[serde(default, deserialize_with = "present")]
    task: Option<String>,
    #[serde(default, deserialize_with = "present")]
    service: Option<String>,
    #[serde(default, deserialize_with = "present")]
    node: Option<String>,
    #[serde(default, deserialize_with = "present")]
    level: Option<String>,
    #[serde(default, deserialize_with = "present")]
    timeout_secs: Option<u64>,
    #[serde(default = "cluster_scope")]
    scope: Scope,
}

impl GenericBody {
    /// The operation the fields describe: each op's own fields, and no other.
    fn operation(self) -> Result<(Operation, Scope), Problem> {
        let op_name = self.op.clone();
        let mut fields = [
            ("task", self.task),
            ("service", self.service),
            ("node", self.node),
            ("level", self.level),
            ("timeout_secs", self.timeout_secs.map(|t| t.to_string())),
        ];
        let mut take = |name: &str| {
            fields
                .iter_mut()
                .find(|(n, _)| *n == name)
                .and_then(|(_, v)| v.take())
        };
        let mut need = |name: &str| {
            take(name).ok_or_else(|| {
                Problem::bad(format!("body: op `{op_name}` needs the field `{name}`"))
            })
        };
        let op = match self.op.as_str() {
            "pause" => Operation::Pause {
                task: need("task")?,
            },
            "resume" => Operation::Resume {
                task: need("task")?,
            },
            "stop" => Operation::Stop {
                service: need("service")?,
            },
            "start" => Operation::Start {
                service: need("service")?,
            },
            "drain" => Operation::Drain,
            "undrain" => Operation::Undrain,
            "act_as" => Operation::ActAs {
                node: need("node")?,
            },
            "stop_acting" => Operation::StopActing,
            "restart" => Operation::Restart,
            "shutdown" => Operation::Shutdown,
            "set_log_level" => Operation::SetLogLevel {
                level: need("level")?,
            },
            "rolling_restart" => Operation::RollingRestart {
                timeout_secs: self.timeout_secs.unwrap_or(ROLLING_TIMEOUT_SECS),
            },
            other => {
                return Err(Problem::bad(format!(
                    "body: `op` = `{other}` is not an operation; use one of {}",
                    OPERATIONS.join(", ")
                )))
            }
        };
        if op_name == "rolling_restart" {
            take("timeout_secs");
        }
        if let Some((name, _)) = fields.iter().find(|(_, v)| v.is_some()) {
            return Err(Problem::bad(format!(
                "body: the field `{name}` does not apply to op `{op_name}`; leave it out"
            )));
        }
        Ok((op, self.scope))
    }
}

/// The operations `POST /api/v1/commands` takes, as the OpenAPI document lists them.
const OPERATIONS: [&str; 12] = [
    "pause",
    "resume",
    "stop",
    "start",
    "drain",
    "undrain",
    "act_as",
    "stop_acting",
    "restart",
    "shutdown",
    "set_log_level",
    "rolling_restart",
];

fn cluster_scope() -> Scope {
    Scope::Cluster
}

fn scope_of(nodes: Option<Vec<String>>) -> Result<Scope, Problem> {
    match nodes {
        None => Ok(Scope::Cluster),
        Some(list) if list.is_empty() => Err(Problem::bad(
            "`nodes` is empty; name at least one node, or leave `nodes` out for the whole cluster",
        )),
        Some(list) => Ok(Scope::Nodes(list)),
    }
}

/// The role an operation needs: day-to-day control is `operate`, the rest `admin`.
fn role_for(op: &Operation) -> Role {
    match op {
        Operation::Pause { .. }
        | Operation::Resume { .. }
        | Operation::Stop { .. }
        | Operation::Start { .. }
        | Operation::Drain
        | Operation::Undrain
        | Operation::Run { .. } => Role::Operate,
        _ => Role::Admin,
    }
}

pub(super) async fn act(
    api: &Api,
    caller: Option<&Caller>,
    template: &str,
    id: &str,
    name: &str,
    body: &[u8],
) -> Reply {
    let one = || Scope::Nodes(vec![id.to_string()]);
    let no_body = |body: &[u8]| -> Result<(), Problem> {
        if body.iter().all(u8::is_ascii_whitespace) || body == b"{}" {
            Ok(())
        } else {
            Err(Problem::bad("this action takes no body"))
        }
    };
    let (op, scope) = match template {
        "/api/v1/commands" => {
            let g: GenericBody = parse_body(body)?;
            g.operation()?
        }
        "/api/v1/tasks/{name}/pause" | "/api/v1/tasks/{name}/resume" => {
            let s: ScopeBody = parse_body(body)?;
            let task = name.to_string();
            let op = if template.ends_with("pause") {
                Operation::Pause { task }
            } else {
                Operation::Resume { task }
            };
            (op, scope_of(s.nodes)?)
        }
        "/api/v1/services/{name}/stop" | "/api/v1/services/{name}/start" => {
            let s: ScopeBody = parse_body(body)?;
            let service = name.to_string();
            let op = if template.ends_with("stop") {
                Operation::Stop { service }
            } else {
                Operation::Start { service }
            };
            (op, scope_of(s.nodes)?)
        }
        "/api/v1/nodes/{id}/drain" => (no_body(body).map(|_| Operation::Drain)?, one()),
        "/api/v1/nodes/{id}/undrain" => (no_body(body).map(|_| Operation::Undrain)?, one()),
        "/api/v1/nodes/{id}/stop-acting" => (no_body(body).map(|_| Operation::StopActing)?, one()),
        "/api/v1/nodes/{id}/restart" => (no_body(body).map(|_| Operation::Restart)?, one()),
        "/api/v1/nodes/{id}/shutdown" => (no_body(body).map(|_| Operation::Shutdown)?, one()),
        "/api/v1/nodes/{id}/act-as" => {
            let b: ActAsBody = parse_body(body)?;
            (Operation::ActAs { node: b.node }, one())
        }
        "/api/v1/tasks/{name}/run" => {
            let b: RunBody = parse_body(body)?;
            // A name given twice: the last value counts, as in a shell.
            let env = b
                .env
                .unwrap_or_default()
                .into_iter()
                .map(|v| (v.name, v.value))
                .collect();
            (
                Operation::Run {
                    task: name.to_string(),
                    env,
                },
                Scope::Cluster,
            )
        }
        "/api/v1/log-level" => {
            let b: LogLevelBody = parse_body(body)?;
            (
                Operation::SetLogLevel { level: b.level },
                scope_of(b.nodes)?,
            )
        }
        "/api/v1/rolling-restart" => {
            let b: RollingBody = parse_body(body)?;
            let timeout_secs = b.timeout_secs.unwrap_or(ROLLING_TIMEOUT_SECS);
            (
                Operation::RollingRestart { timeout_secs },
                scope_of(b.nodes)?,
            )
        }
        _ => return Err(Problem::not_found("no such action")),
    };
    let Some(caller) = caller else {
        return Err(Problem(
            StatusCode::UNAUTHORIZED,
            "a token is required: send `Authorization: Bearer <token>`".into(),
        ));
    };
    let needed = role_for(&op);
    if caller.role < needed {
        return Err(Problem(
            StatusCode::FORBIDDEN,
            format!(
                "op `{}` needs a token of role {needed}; the token `{}` has role {}",
                op.name(),
                caller.name,
                caller.role
            ),
        ));
    }
    let (command, warnings) = issue(api, op, scope, &caller.name).await?;
    let mut v = command_json(&command, &[]);
    v["warnings"] = json!(warnings);
    // A run is followed by its fire, a command by its acknowledgements.
    let location = match &command.body.op {
        Operation::Run { task, .. } => {
            let url = format!("/api/v1/tasks/{task}/runs/{}", command.seq);
            v["run"] = json!({ "seq": command.seq, "task": task, "url": url });
            url
        }
        _ => format!("/api/v1/commands/{}", command.seq),
    };
    let mut response = json_response(StatusCode::ACCEPTED, &v);
    if let Ok(location) = location.parse() {
        response
            .headers_mut()
            .insert(hyper::header::LOCATION, location);
    }
    Ok(response)
}

/// Validates a command against the cluster as it is, works out its targets, and appends it.
/// Returns it with warnings (nodes named that are not live now).
pub(super) async fn issue(
    api: &Api,
    op: Operation,
    scope: Scope,
    requested_by: &str,
) -> Result<(Command, Vec<String>), Problem> {
    if let Some((field, message)) = op.problem() {
        return Err(Problem::bad(format!("{field}: {message}")));
    }
    let m = Members::read(api).await?;
    let declared = m.declared();
    // A task is paused and resumed, a service stopped and started: the name must say which.
    let named = match &op {
        Operation::Pause { task } | Operation::Resume { task } | Operation::Run { task, .. } => {
            Some((task, false))
        }
        Operation::Stop { service } | Operation::Start { service } => Some((service, true)),
        _ => None,
    };
    if let Some((name, service)) = named {
        let (kind, plural) = if service {
            ("service", "services")
        } else {
            ("task", "tasks")
        };
        match declared.get(name.as_str()) {
            None => {
                let hint = format!("; see GET /api/v1/{plural}");
                return Err(m.undeclared(api, (kind, service), name, &hint).await);
            }
            // Not a task (or not a service) of that name: not found as what the path says.
            Some((schedule, _)) if (schedule == SERVICE_SCHEDULE) != service => {
                return Err(Problem::not_found(if service {
                    format!(
                        "`{name}` is a scheduled task; use /api/v1/tasks/{name}/pause or resume"
                    )
                } else {
                    format!("`{name}` is a service; use /api/v1/services/{name}/stop or start")
                }))
            }
            Some(_) => {}
        }
    }
    let mut warnings = Vec::new();
    let live: Vec<String> = m
        .live()
        .filter(|n| !n.leaving)
        .map(|n| n.node.clone())
        .collect();
    if let Operation::Run { task, .. } = &op {
        let targets = run_targets(api, &m.control, task).await?;
        return append(api, op, scope, targets, requested_by, warnings).await;
    }
    let targets = match &scope {
        Scope::Cluster => {
            let mut t = live.clone();
            // A rolling restart takes the leader last: one change of leader, not several.
            if let (Operation::RollingRestart { .. }, Some(l)) = (&op, m.leader()) {
                t.retain(|n| *n != l.node);
                t.push(l.node.clone());
            }
            t
        }
        Scope::Nodes(nodes) => {
            let mut seen = BTreeSet::new();
            for n in nodes {
                rota::node::validate_name("nodes", n).map_err(|e| Problem::bad(e.to_string()))?;
                if !seen.insert(n.as_str()) {
                    return Err(Problem::bad(format!("nodes: `{n}` is named twice")));
                }
                if !live.contains(n) {
                    warnings.push(format!(
                        "node `{n}` is not live now; it applies the command when it starts"
                    ));
                }
            }
            nodes.clone()
        }
    };
    if targets.is_empty() {
        return Err(Problem(
            StatusCode::CONFLICT,
            "no live node to address: the cluster is empty".into(),
        ));
    }
    if let Operation::ActAs { node } = &op {
        if targets.iter().any(|t| t == node) {
            // Well-formed, but not possible for this target: a conflict, not a bad request.
            return Err(Problem(
                StatusCode::CONFLICT,
                format!("node: a node cannot act as itself (`{node}`); name another node"),
            ));
        }
    }
    append(api, op, scope, targets, requested_by, warnings).await
}

/// The nodes a run-now addresses: the task's owner now (each owner of an `all` task's
/// shares). Whichever node owns the task when the command arrives starts the run; the
/// owner acknowledges it.
async fn run_targets(
    api: &Api,
    control: &ControlState,
    task: &str,
) -> Result<Vec<String>, Problem> {
    if control.paused_in_cluster().any(|(t, _)| t == task) {
        return Err(Problem(
            StatusCode::CONFLICT,
            format!("task `{task}` is paused; resume it first (`rota ctl resume {task}`)"),
        ));
    }
    let assignments = api.store.assignments(&api.cluster).await?;
    let mut owners: Vec<String> = assignments
        .iter()
        .filter(|a| {
            a.task == task
                || rota::core::placement::split_per_node_name(&a.task)
                    .is_some_and(|(t, _)| t == task)
        })
        .filter_map(|a| a.owner.as_ref().map(|(node, _)| node.clone()))
        .collect();
    owners.sort();
    owners.dedup();
    if owners.is_empty() {
        return Err(Problem(
            StatusCode::CONFLICT,
            format!("task `{task}` has no owner now (see GET /api/v1/tasks/{task}); try again once it is placed"),
        ));
    }
    Ok(owners)
}

/// Appends a validated command with its targets.
async fn append(
    api: &Api,
    op: Operation,
    scope: Scope,
    targets: Vec<String>,
    requested_by: &str,
    warnings: Vec<String>,
) -> Result<(Command, Vec<String>), Problem> {
    let body = CommandBody {
        op,
        scope,
        targets,
        issued_by: api.node.clone(),
        requested_by: Some(requested_by.to_string()),
    };
    let text = serde_json::to_string(&body).expect("commands serialize");
    let (seq, issued_at_ms) = api.store.append_command(&api.cluster, &text).await?;
    tracing::info!(seq, op = body.op.name(), targets = ?body.targets, by = requested_by, "command issued");
    api.metrics.command_issued(body.op.name());
    Ok((
        Command {
            seq,
            issued_at_ms,
            body,
        },
        warnings,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_body_the_document_describes_is_taken() {
        let op = |body: &str| {
            parse_body::<GenericBody>(body.as_bytes())
                .and_then(GenericBody::operation)
                .map_err(|p| p.1)
        };
        assert_eq!(
            op(r#"{"op": "pause", "task": "report"}"#),
            Ok((
                Operation::Pause {
                    task: "report".into()
                },
                Scope::Cluster
            ))
        );
        assert_eq!(
            op(r#"{"op": "drain", "scope": {"nodes": ["node-2"]}}"#),
            Ok((Operation::Drain, Scope::Nodes(vec!["node-2".into()])))
        );
        assert_eq!(
            op(r#"{"op": "rolling_restart"}"#),
            Ok((
                Operation::RollingRestart {
                    timeout_secs: ROLLING_TIMEOUT_SECS
                },
                Scope::Cluster
            ))
        );
        assert_eq!(
            op(r#"{"op": "set_log_level", "level": "debug", "scope": "cluster"}"#),
            Ok((
                Operation::SetLogLevel {
                    level: "debug".into()
                },
                Scope::Cluster
            ))
        );
        let refused = [
            (r#"{"op": "pause"}"#, "needs the field `task`"),
            (
                r#"{"op": "drain", "task": "x"}"#,
                "`task` does not apply to op `drain`",
            ),
            (r#"{"op": "fly"}"#, "`fly` is not an operation"),
            (
                r#"{"op": "drain", "colour": "red"}"#,
                "unknown field `colour`",
            ),
        ];
        for (body, why) in refused {
            let e = op(body).unwrap_err();
            assert!(e.contains(why), "{body}: {e}");
        }
        // The document's list of operations is the server's.
        let doc: Value = serde_json::from_str(crate::OPENAPI).unwrap();
        let variants = doc["paths"]["/api/v1/commands"]["post"]["requestBody"]["content"]
            ["application/json"]["schema"]["oneOf"]
            .as_array()
            .unwrap();
        let listed: Vec<&str> = variants
            .iter()
            .map(|v| v["properties"]["op"]["enum"][0].as_str().unwrap())
            .collect();
        assert_eq!(listed, OPERATIONS);
        // Each op's body in the document is one the server takes.
        for v in variants {
            let name = v["properties"]["op"]["enum"][0].as_str().unwrap();
            let mut body = json!({ "op": name });
            for field in v["required"].as_array().unwrap() {
                let field = field.as_str().unwrap();
                if field != "op" {
                    body[field] = json!(if field == "level" {
                        "debug"
                    } else {
                        "some-name"
                    });
                }
            }
            op(&body.to_string()).unwrap_or_else(|e| panic!("{body}: {e}"));
        }
    }

    #[test]
    fn command_numbers_start_at_one() {
        assert_eq!(command_number("7").ok(), Some(7));
        for bad in [
            "0",
            "-1",
            "-9223372036854775808",
            "x",
            "99999999999999999999",
        ] {
            let p = command_number(bad).unwrap_err();
            assert!(p.1.contains(bad), "{}", p.1);
        }
    }
}
