//! The cluster's own task and service definitions: `GET /api/v1/definitions` exports them,
//! `POST` checks a document and, unless it is a dry run, applies it through the command log
//! (a `define` command: every node folds it, in order, and a node that was down catches up).
//! Both need `admin`: definitions run commands, and may hold their environment.

use std::collections::BTreeMap;

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    commands::issue,
    reply::{json_response, Reply},
};
use crate::{
    api::{Api, Problem},
    model::{command_json, Members},
    tokens::Caller,
};
use rota::core::control::{Operation, Scope};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyBody {
    document: String,
    #[serde(default)]
    dry_run: bool,
}

/// Each name a document defines, with its definition's hash and kind.
type Defined = BTreeMap<String, (String, &'static str)>;

fn compile(api: &Api, document: &str) -> Result<Defined, Problem> {
    let Some(compile) = &api.definitions else {
        return Err(Problem(
            StatusCode::FORBIDDEN,
            "this node runs no cluster definitions; apply them through a node whose program does (`rota node`)".into(),
        ));
    };
    let (tasks, services) = compile(document).map_err(Problem::bad)?;
    Ok(tasks
        .iter()
        .map(|t| (t.name.clone(), (t.definition_hash(), "task")))
        .chain(
            services
                .iter()
                .map(|s| (s.name.clone(), (s.definition_hash(), "service"))),
        )
        .collect())
}

/// `GET /api/v1/definitions`: the document as applied, its version, and what it defines.
pub(super) async fn export(api: &Api) -> Reply {
    let (_, control) = api.log.read(api).await?;
    let Some(latest) = control.definitions() else {
        return Ok(json_response(
            StatusCode::OK,
            &json!({"version": 0, "document": "", "defined_at_ms": null, "requested_by": null, "names": []}),
        ));
    };
    let names: Vec<String> = match &api.definitions {
        Some(_) => compile(api, &latest.document)?.into_keys().collect(),
        None => Vec::new(),
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "version": latest.version,
            "document": latest.document,
            "defined_at_ms": latest.defined_at_ms,
            "requested_by": latest.requested_by,
            "names": names,
        }),
    ))
}

/// `POST /api/v1/definitions`: checks the document as a node's file is checked, refuses a
/// name a node's own file declares, and answers what changes (and which running work each
/// change stops or moves); applies it unless `dry_run`.
pub(super) async fn apply(api: &Api, caller: Option<&Caller>, body: &[u8]) -> Reply {
    let Some(caller) = caller else {
        return Err(Problem(
            StatusCode::UNAUTHORIZED,
            "a token is required: send `Authorization: Bearer <token>`".into(),
        ));
    };
    if !api.accepts_definitions {
        return Err(Problem(
            StatusCode::FORBIDDEN,
            "this node does not apply definitions: they run commands on the cluster's nodes, so they are off until its config allows them ([admin] definitions = true)".into(),
        ));
    }
    let b: ApplyBody =
        serde_json::from_slice(body).map_err(|e| Problem::bad(format!("body: {e}")))?;
    let new = compile(api, &b.document)?;
    let members = Members::read(api).await?;
    for d in &members.declarations {
        if let Some(t) = d.set.tasks.iter().find(|t| new.contains_key(&t.name)) {
            return Err(Problem(
                StatusCode::CONFLICT,
                format!(
                    "`{}` is declared in the file of node {}: one name has one definition; remove it from that file first, or name this one otherwise",
                    t.name, d.node
                ),
            ));
        }
    }
    let old = match members.control.definitions() {
        Some(latest) => compile(api, &latest.document).unwrap_or_default(),
        None => Defined::new(),
    };
    let assignments = api.store.assignments(&api.cluster).await?;
    let owner = |name: &str| -> Value {
        assignments
            .iter()
            .find(|a| a.task == name)
            .and_then(|a| a.owner.as_ref())
            .map_or(Value::Null, |(node, _)| json!(node))
    };
    let mut diff = json!({"added": [], "changed": [], "removed": [], "unchanged": []});
    for (name, (hash, kind)) in &new {
        let entry = json!({"name": name, "kind": kind, "owner": owner(name)});
        let list = match old.get(name) {
            None => "added",
            Some((h, _)) if h == hash => "unchanged",
            Some(_) => "changed",
        };
        diff[list].as_array_mut().expect("array").push(entry);
    }
    for (name, (_, kind)) in &old {
        if !new.contains_key(name) {
            diff["removed"]
                .as_array_mut()
                .expect("array")
                .push(json!({"name": name, "kind": kind, "owner": owner(name)}));
        }
    }
    if b.dry_run {
        return Ok(json_response(
            StatusCode::OK,
            &json!({"dry_run": true, "diff": diff}),
        ));
    }
    let op = Operation::Define {
        document: b.document,
    };
    let (command, warnings) = issue(api, op, Scope::Cluster, &caller.name).await?;
    let mut v = command_json(&command, &[]);
    v["warnings"] = json!(warnings);
    v["diff"] = diff;
    Ok(json_response(StatusCode::ACCEPTED, &v))
}
