//! `rota ctl apply -f FILE [--dry-run]` and `rota ctl export`: the cluster's own task and
//! service definitions, replaced as a whole by the file's and printed back as applied.

use std::{path::Path, process::ExitCode};

use reqwest::Method;
use serde_json::{json, Value};

use super::{
    args::{Wait, EXIT_USAGE},
    client::{Client, Failure},
    commands::follow_accepted,
    table::{print_json, text},
};

const DEFINITIONS: &str = "/api/v1/definitions";

pub(super) async fn apply(
    client: &Client,
    json: bool,
    file: &Path,
    dry_run: bool,
    wait: &Wait,
) -> Result<ExitCode, Failure> {
    let document = match std::fs::read_to_string(file) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: -f {}: cannot read the file: {e}", file.display());
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let body = json!({ "document": document, "dry_run": dry_run });
    let answer = client.call(Method::POST, DEFINITIONS, Some(&body)).await?;
    if dry_run {
        if json {
            print_json(&answer);
        } else {
            print!("{}", diff_text(&answer["diff"]));
            println!("dry run: nothing changed");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !json {
        print!("{}", diff_text(&answer["diff"]));
    }
    follow_accepted(client, json, answer, wait, 60).await
}

pub(super) async fn export(client: &Client, json: bool) -> Result<ExitCode, Failure> {
    let v = client.get(DEFINITIONS).await?;
    if json {
        print_json(&v);
    } else {
        let version = v["version"].as_i64().unwrap_or(0);
        if version == 0 {
            eprintln!("the cluster has no definitions of its own");
        } else {
            eprintln!(
                "definitions version {version}, applied by token `{}`",
                text(&v["requested_by"])
            );
            print!("{}", text(&v["document"]));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per name that changes: `+ report (task)`, `~ sync (task, on node-2: restarts
/// there; what runs finishes under the old definition)`, `- old (task, stops on node-1)`.
fn diff_text(diff: &Value) -> String {
    let mut out = String::new();
    let owner = |e: &Value| e["owner"].as_str().map(str::to_string);
    for e in diff["added"].as_array().into_iter().flatten() {
        out.push_str(&format!("+ {} ({})\n", text(&e["name"]), text(&e["kind"])));
    }
    for e in diff["changed"].as_array().into_iter().flatten() {
        let effect = match owner(e) {
            Some(node) => format!(
                ", on {node}: restarts there; a run going on finishes under the old definition"
            ),
            None => String::new(),
        };
        out.push_str(&format!(
            "~ {} ({}{effect})\n",
            text(&e["name"]),
            text(&e["kind"])
        ));
    }
    for e in diff["removed"].as_array().into_iter().flatten() {
        let effect = match owner(e) {
            Some(node) => format!(", stops on {node}; a run going on finishes"),
            None => String::new(),
        };
        out.push_str(&format!(
            "- {} ({}{effect})\n",
            text(&e["name"]),
            text(&e["kind"])
        ));
    }
    let unchanged = diff["unchanged"].as_array().map_or(0, Vec::len);
    if out.is_empty() {
        out.push_str("no change\n");
    } else if unchanged > 0 {
        out.push_str(&format!("({unchanged} unchanged)\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_diff_says_what_each_change_stops_or_moves() {
        let diff = json!({
            "added": [{"name": "new", "kind": "task", "owner": null}],
            "changed": [{"name": "sync", "kind": "task", "owner": "node-2"}],
            "removed": [{"name": "old", "kind": "service", "owner": "node-1"}],
            "unchanged": [{"name": "same", "kind": "task", "owner": "node-1"}],
        });
        assert_eq!(
            diff_text(&diff),
            "+ new (task)\n~ sync (task, on node-2: restarts there; a run going on finishes under the old definition)\n- old (service, stops on node-1; a run going on finishes)\n(1 unchanged)\n"
        );
        let none = json!({"added": [], "changed": [], "removed": [], "unchanged": []});
        assert_eq!(diff_text(&none), "no change\n");
    }
}
