//! The read verbs' answers as tables: status, nodes, tasks, services, history and events.

use std::process::ExitCode;

use serde_json::{json, Value};

use super::{
    client::{Client, Failure},
    table::{columns, print_value, text, time_of, yes},
};

pub(super) async fn status(client: &Client, json: bool) -> Result<ExitCode, Failure> {
    let cluster = client.get("/api/v1/cluster").await?;
    let nodes = client.get("/api/v1/nodes").await?;
    let both = json!({ "cluster": cluster, "nodes": nodes });
    print_value(json, &both, |v| {
        let c = &v["cluster"];
        let leader = match c["leader"].as_object() {
            Some(l) => format!("{} (epoch {})", text(&l["node"]), text(&l["epoch"])),
            None => "none".into(),
        };
        let tasks: Vec<String> = ["declared", "placed", "everywhere", "paused", "unplaced"]
            .iter()
            .map(|k| format!("{} {k}", text(&c["tasks"][*k])))
            .collect();
        format!(
            "cluster {} ({} store, answered by {}), leader {leader}\n\
             nodes: {} live of {} registered; tasks: {}; last command #{}\n\n{}",
            text(&c["cluster"]),
            text(&c["store"]),
            text(&c["answered_by"]),
            text(&c["nodes"]["live"]),
            text(&c["nodes"]["registered"]),
            tasks.join(", "),
            text(&c["commands"]),
            nodes_table(&v["nodes"])
        )
    });
    Ok(ExitCode::SUCCESS)
}

pub(super) fn nodes_table(list: &Value) -> String {
    columns(
        list,
        &[
            ("ID", |n| text(&n["id"])),
            ("STATE", |n| text(&n["state"])),
            ("LEADER", |n| yes(&n["leader"])),
            ("DRAINED", |n| yes(&n["drained"])),
            ("ACTING-AS", |n| text(&n["acting_as"])),
            ("OWNED", |n| {
                n["owned"].as_array().map_or(0, Vec::len).to_string()
            }),
            ("HEARTBEAT(ms)", |n| text(&n["heartbeat_age_ms"])),
        ],
    )
}

pub(super) fn tasks_table(list: &Value) -> String {
    // A task paused on some nodes only is still placed: say where it is paused.
    let reason = |t: &Value| match (&t["reason"], t["paused_on"].as_array()) {
        (Value::String(r), _) => r.clone(),
        (_, Some(on)) if !on.is_empty() => format!("paused on {}", text(&t["paused_on"])),
        _ => "-".into(),
    };
    columns(
        list,
        &[
            ("NAME", |t| text(&t["name"])),
            ("STATE", |t| text(&t["state"])),
            ("OWNER", |t| text(&t["owner"]["node"])),
            ("TOKEN", |t| text(&t["token"])),
            ("SCHEDULE", |t| text(&t["schedule"])),
            ("REASON", reason),
        ],
    )
}

pub(super) fn history_table(list: &Value) -> String {
    columns(
        list,
        &[
            ("INSTANT(UTC)", |f| time_of(&f["instant_ms"])),
            ("OUTCOME", |f| text(&f["outcome"])),
            ("NODE", |f| text(&f["node"])),
            ("TOKEN", |f| text(&f["token"])),
            ("ATTEMPT", |f| text(&f["attempt"])),
            ("MESSAGE", |f| text(&f["message"])),
        ],
    )
}

pub(super) fn events_table(list: &Value) -> String {
    // Events differ by kind: the rest of each one as key=value.
    let detail = |e: &Value| {
        let fields = e.as_object().into_iter().flatten();
        let rest = fields.filter(|(k, _)| *k != "at_ms" && *k != "kind");
        rest.map(|(k, v)| format!("{k}={}", text(v)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    columns(
        list,
        &[
            ("TIME(UTC)", |e| time_of(&e["at_ms"])),
            ("KIND", |e| text(&e["kind"])),
            ("DETAIL", detail),
        ],
    )
}
