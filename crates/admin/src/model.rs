//! What the routes and the dashboard both read and show: the cluster's members and
//! assignments with the command log folded over them, the JSON shapes of commands, fires and
//! events, and the failed request. Routes and dashboard import this; it imports neither.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use serde_json::{json, Value};

use rota::{
    core::{
        control::{Ack, AckState, Command, ControlState},
        placement::EVERYWHERE_REASON,
    },
    node::SERVICE_SCHEDULE,
    store::{Assignment, ClusterView, EventRecord, FireRecord, NodeDeclarations},
};

use crate::api::Api;
pub(crate) use crate::api::Problem;

/// How long after a registration lapsed a name it declares is answered "retry" rather than
/// "not found": a few heartbeat timeouts, the time a clock step or a session move takes to settle.
const LAPSE_IN_FLUX_MS: i64 = 10_000;

/// Who is in the cluster: the view and what each live node declares (what an action needs).
pub(crate) struct Members {
    pub view: ClusterView,
    pub(crate) declarations: Vec<NodeDeclarations>,
    /// The cluster's own tasks and services (`rota ctl apply`), with their schedules.
    pub(crate) defined: Vec<(String, String)>,
    /// The command log and its fold, read once for all that a request needs of them.
    pub(crate) log: Arc<Vec<Command>>,
    pub(crate) control: ControlState,
}

impl Members {
    pub(crate) async fn read(api: &Api) -> Result<Members, Problem> {
        let view = api.store.view(&api.cluster).await?;
        let live: Vec<(String, i64)> = view
            .nodes
            .iter()
            .filter(|n| n.alive)
            .map(|n| (n.node.clone(), n.incarnation))
            .collect();
        let declarations = api.store.declarations(&api.cluster, Some(&live)).await?;
        let (log, control) = api.log.read(api).await?;
        let defined = defined(api, &control);
        Ok(Members {
            view,
            declarations,
            defined,
            log,
            control,
        })
    }

    pub(crate) fn live(&self) -> impl Iterator<Item = &rota::store::NodeRecord> {
        self.view.nodes.iter().filter(|n| n.alive)
    }

    pub fn leader(&self) -> Option<&rota::store::Leadership> {
        self.view.leader.as_ref().filter(|l| {
            self.live()
                .any(|n| n.node == l.node && n.incarnation == l.incarnation)
        })
    }

    /// The answer for `name` (a `kind`, a service or not) when no live node declares it: 503 when a registration
    /// that declares it is the serving node's own or lapsed only a moment ago (a store clock
    /// step, a ZooKeeper session moving, a node paused): the view is in flux and a retry will
    /// likely find it. 404 when no registration declares it, or only ones long lapsed.
    pub(crate) async fn undeclared(
        &self,
        api: &Api,
        (kind, service): (&str, bool),
        name: &str,
        hint: &str,
    ) -> Problem {
        let all = match api.store.declarations(&api.cluster, None).await {
            Ok(all) => all,
            Err(e) => return e.into(),
        };
        let recently_lapsed = |node: &str, incarnation: i64| {
            node == api.node
                || self.view.nodes.iter().any(|n| {
                    n.node == node
                        && n.incarnation == incarnation
                        && self.view.now_ms - (n.heartbeat_at_ms + n.timeout_ms) < LAPSE_IN_FLUX_MS
                })
        };
        // Only a declaration of what the path names: a service is not a task, lapsed or not.
        let declares = |t: &rota::store::Declaration| {
            t.name == name && (t.schedule == SERVICE_SCHEDULE) == service
        };
        let declarer = all
            .iter()
            .find(|d| d.set.tasks.iter().any(declares) && recently_lapsed(&d.node, d.incarnation));
        match declarer {
            Some(d) => Problem::unavailable(format!(
                "no live node declares {kind} `{name}` at this moment: `{}` declares it and its \
                 registration is not live in the store's view now; retry in a second",
                d.node
            )),
            None => Problem::not_found(format!("no live node declares {kind} `{name}`{hint}")),
        }
    }

    /// Declared names with their schedule (`service` for services) and declaring nodes: a
    /// cluster-defined one is declared by every live node that runs definitions.
    pub(crate) fn declared(&self) -> BTreeMap<String, (String, Vec<String>)> {
        let mut out: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
        for d in &self.declarations {
            for t in &d.set.tasks {
                let entry = out
                    .entry(t.name.clone())
                    .or_insert_with(|| (t.schedule.clone(), Vec::new()));
                entry.1.push(d.node.clone());
            }
        }
        for (name, schedule) in &self.defined {
            let entry = out
                .entry(name.clone())
                .or_insert_with(|| (schedule.clone(), Vec::new()));
            for d in self.declarations.iter().filter(|d| d.meta.runs_definitions) {
                if !d.set.tasks.iter().any(|t| &t.name == name) {
                    entry.1.push(d.node.clone());
                }
            }
        }
        out
    }
}

/// The cluster's own tasks and services with their schedules (`service` for services), as
/// the serving node compiles them; compiled again only when a newer `define` arrives.
fn defined(api: &Api, control: &ControlState) -> Vec<(String, String)> {
    let Some(compile) = &api.definitions else {
        return Vec::new();
    };
    let Some(latest) = control.definitions() else {
        return Vec::new();
    };
    let mut cached = api.defined.lock().unwrap();
    if cached.0 != latest.version {
        let names = match compile(&latest.document) {
            Ok((tasks, services)) => tasks
                .iter()
                .map(|t| (t.name.clone(), t.schedule.describe()))
                .chain(
                    services
                        .iter()
                        .map(|s| (s.name.clone(), SERVICE_SCHEDULE.to_string())),
                )
                .collect(),
            Err(_) => Vec::new(),
        };
        *cached = (latest.version, names);
    }
    cached.1.clone()
}

/// What most reads need: the members, the assignments (indexed by task, and per-node shares
/// by their task), and the command log, folded.
pub(crate) struct Model {
    pub members: Members,
    pub(crate) assignments: Vec<Assignment>,
    pub(crate) own: HashMap<String, usize>,
    pub(crate) shares: HashMap<String, Vec<usize>>,
    /// The whole command log, in order.
    pub log: Arc<Vec<Command>>,
    pub(crate) control: ControlState,
    pub(crate) paused: BTreeMap<String, Vec<String>>,
}

impl Model {
    pub async fn read(api: &Api) -> Result<Model, Problem> {
        let members = Members::read(api).await?;
        let assignments = api.store.assignments(&api.cluster).await?;
        let mut own = HashMap::new();
        let mut shares: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, a) in assignments.iter().enumerate() {
            match rota::core::placement::split_per_node_name(&a.task) {
                Some((task, _)) => shares.entry(task.to_string()).or_default().push(i),
                None => {
                    own.insert(a.task.clone(), i);
                }
            }
        }
        let (log, control) = (members.log.clone(), members.control.clone());
        let paused = control.paused();
        Ok(Model {
            members,
            assignments,
            own,
            shares,
            log,
            control,
            paused,
        })
    }

    pub(crate) fn task_json(&self, name: &str, schedule: &str, declared_by: &[String]) -> Value {
        let is_service = schedule == SERVICE_SCHEDULE;
        let own = self.own.get(name).map(|&i| &self.assignments[i]);
        let shares: Vec<Value> = self
            .shares
            .get(name)
            .into_iter()
            .flatten()
            .map(|&i| &self.assignments[i])
            .filter_map(|a| {
                a.owner
                    .as_ref()
                    .map(|(n, _)| json!({"task": a.task, "node": n, "token": a.token}))
            })
            .collect();
        let reason = own.and_then(|a| a.reason.clone());
        let state = match (own.and_then(|a| a.owner.as_ref()), &reason) {
            (Some(_), _) => "placed",
            (None, Some(r)) if r.starts_with(EVERYWHERE_REASON) => "everywhere",
            (None, Some(r)) if r.starts_with("paused by command") => "paused",
            _ => "unplaced",
        };
        json!({
            "name": name,
            "kind": if is_service { "service" } else { "task" },
            "schedule": schedule,
            "state": state,
            "owner": own.and_then(|a| a.owner.as_ref()).map(|(n, i)| json!({"node": n, "incarnation": i})),
            "token": own.map(|a| a.token),
            "reason": reason,
            "per_node": shares,
            "paused_on": self.paused.get(name).cloned().unwrap_or_default(),
            "declared_by": declared_by,
        })
    }

    /// Every declared task (`Some(false)`), service (`Some(true)`), or both.
    pub fn tasks_json(&self, services: Option<bool>) -> Vec<Value> {
        self.members
            .declared()
            .iter()
            .filter(|(_, (schedule, _))| {
                services.is_none_or(|s| (schedule == SERVICE_SCHEDULE) == s)
            })
            .map(|(name, (schedule, by))| self.task_json(name, schedule, by))
            .collect()
    }

    pub fn node_json(&self, n: &rota::store::NodeRecord) -> Value {
        let owned: Vec<&str> = self
            .assignments
            .iter()
            .filter(|a| {
                a.owner
                    .as_ref()
                    .is_some_and(|(o, i)| *o == n.node && *i == n.incarnation)
            })
            .map(|a| a.task.as_str())
            .collect();
        let paused: Vec<&String> = self
            .paused
            .keys()
            .filter(|name| self.control.is_paused(&n.node, name))
            .collect();
        let state = match (n.alive, n.leaving) {
            (true, false) => "alive",
            (true, true) => "leaving",
            (false, _) => "dead",
        };
        json!({
            "id": n.node,
            "state": state,
            "incarnation": n.incarnation,
            "leader": self.members.leader().is_some_and(|l| l.node == n.node && l.incarnation == n.incarnation),
            "drained": self.control.is_drained(&n.node),
            "acting_as": self.control.acting_as(&n.node),
            "log_level": self.control.log_level(&n.node),
            "paused": paused,
            "owned": owned,
            "host": n.host,
            "joined_at_ms": n.joined_at_ms,
            "heartbeat_age_ms": self.members.view.now_ms - n.heartbeat_at_ms,
        })
    }
}

pub(crate) async fn read_log(api: &Api) -> Result<Arc<Vec<Command>>, Problem> {
    Ok(api.log.read(api).await?.0)
}

/// A command with each target's state (`pending` until it acknowledges).
pub(crate) fn command_json(c: &Command, acks: &[Ack]) -> Value {
    let mine: BTreeMap<&str, &Ack> = acks
        .iter()
        .filter(|a| a.seq == c.seq)
        .map(|a| (a.node.as_str(), a))
        .collect();
    let mut nodes = Vec::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut listed = BTreeSet::new();
    for node in c
        .body
        .targets
        .iter()
        .map(String::as_str)
        .chain(mine.keys().copied())
    {
        if !listed.insert(node) {
            continue;
        }
        let (state, message, at) = match mine.get(node) {
            Some(a) => (a.state, a.message.as_str(), Some(a.at_ms)),
            None => (AckState::Pending, "", None),
        };
        *counts.entry(state.as_str()).or_default() += 1;
        nodes.push(json!({"node": node, "state": state.as_str(), "message": message, "at_ms": at}));
    }
    let done = c
        .body
        .targets
        .iter()
        .all(|t| mine.get(t.as_str()).is_some_and(|a| a.state.is_final()));
    let mut v = serde_json::to_value(c).expect("commands serialize");
    // A run's variables may carry what their values must not show: their names only.
    if let Some(env) = v.get("env").and_then(Value::as_object) {
        let names: Vec<String> = env.keys().cloned().collect();
        v["env"] = json!(names);
    }
    // A definitions document may hold commands' environment: it is exported to admins only
    // (GET /api/v1/definitions), never with the log.
    if let Some(document) = v.as_object_mut().and_then(|o| o.remove("document")) {
        v["document_bytes"] = json!(document.as_str().map_or(0, str::len));
    }
    v["nodes"] = Value::from(nodes);
    v["summary"] = json!(counts);
    v["done"] = Value::from(done);
    v["failed"] = Value::from(counts.get("failed").copied().unwrap_or(0) > 0);
    v
}

/// Events from every source, newest first, at most `limit`.
pub(crate) fn merge_events(
    journal: &[EventRecord],
    commands: &[Command],
    acks: &[Ack],
    fires: &[FireRecord],
    limit: usize,
) -> Vec<Value> {
    let mut events: Vec<(i64, Value)> = Vec::new();
    for e in journal {
        let mut v: Value = serde_json::from_str(&e.body).unwrap_or_else(|_| json!({}));
        if !v.is_object() {
            v = json!({ "body": v });
        }
        v["at_ms"] = json!(e.at_ms);
        v["kind"] = json!(e.kind);
        events.push((e.at_ms, v));
    }
    for c in commands {
        events.push((
            c.issued_at_ms,
            json!({"at_ms": c.issued_at_ms, "kind": "command_issued", "seq": c.seq, "op": c.body.op.name(),
                   "targets": c.body.targets, "issued_by": c.body.issued_by, "requested_by": c.body.requested_by}),
        ));
    }
    for a in acks {
        events.push((
            a.at_ms,
            json!({"at_ms": a.at_ms, "kind": "command_acknowledged", "seq": a.seq, "node": a.node,
                   "state": a.state.as_str(), "message": a.message}),
        ));
    }
    for f in fires {
        if matches!(f.outcome, rota::Outcome::Ok | rota::Outcome::Running) {
            continue;
        }
        let at = f.finished_at_ms.unwrap_or(f.instant_ms);
        events.push((
            at,
            json!({"at_ms": at, "kind": "fire", "task": f.task, "instant_ms": f.instant_ms, "node": f.node,
                   "outcome": f.outcome.as_str(), "message": f.message}),
        ));
    }
    events.sort_by_key(|e| std::cmp::Reverse(e.0));
    events.truncate(limit);
    events.into_iter().map(|(_, v)| v).collect()
}

/// A fire as the API and the dashboard show it.
pub(crate) fn fire_json(f: &FireRecord) -> Value {
    let mut v = json!({
        "task": f.task, "instant_ms": f.instant_ms, "node": f.node, "token": f.token,
        "attempt": f.attempt, "outcome": f.outcome.as_str(),
        "started_at_ms": f.started_at_ms, "finished_at_ms": f.finished_at_ms, "message": f.message,
    });
    // A run-now fire's record starts with its label (`run now #12 ...`): its request.
    if let Some(seq) = f
        .message
        .as_deref()
        .and_then(|m| m.strip_prefix("run now #"))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse::<i64>().ok())
    {
        v["run"] = json!(seq);
    }
    v
}
