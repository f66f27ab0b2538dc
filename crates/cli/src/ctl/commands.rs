//! Cluster commands: an action issues one and follows it until every target has applied or
//! failed it (a progress line on a terminal); `rota ctl commands` shows them.

use std::{collections::BTreeMap, io::IsTerminal, process::ExitCode};

use reqwest::Method;
use serde_json::Value;
use tokio::time::{sleep, Duration, Instant};

use super::{
    args::{Wait, EXIT_FAILED, EXIT_TIMEOUT},
    client::{Client, Failure, ROLLING_RESTART},
    table::{columns, print_value, table, text, time_of},
};

const POLL: Duration = Duration::from_millis(200);
/// Width of the progress bar, in characters.
const BAR: usize = 10;
/// The redrawn progress line is kept shorter than a narrow terminal: a wrapped line cannot
/// be redrawn with `\r`.
const PROGRESS_WIDTH: usize = 79;

/// Issues a command, follows it unless told not to, and prints where each target got.
pub(super) async fn act(
    client: &Client,
    json: bool,
    path: &str,
    body: &Value,
    wait: &Wait,
) -> Result<ExitCode, Failure> {
    let accepted = client.call(Method::POST, path, Some(body)).await?;
    let rolling = path == ROLLING_RESTART;
    // A rolling restart takes up to its per-node timeout (server default 120 s) per target.
    let targets = accepted["targets"].as_array().map_or(1, Vec::len) as u64;
    let rolling_secs = (body["timeout_secs"].as_u64().unwrap_or(120) * targets).max(600);
    let default_secs = if rolling { rolling_secs } else { 60 };
    follow_command(client, json, accepted, wait, default_secs, rolling).await
}

/// Follows a command the API accepted (unless told not to), prints where each target got,
/// and ends with the exit code that says so.
pub(super) async fn follow_accepted(
    client: &Client,
    json: bool,
    accepted: Value,
    wait: &Wait,
    default_secs: u64,
) -> Result<ExitCode, Failure> {
    follow_command(client, json, accepted, wait, default_secs, false).await
}

async fn follow_command(
    client: &Client,
    json: bool,
    accepted: Value,
    wait: &Wait,
    default_secs: u64,
    rolling: bool,
) -> Result<ExitCode, Failure> {
    let seq = accepted["seq"].as_i64().unwrap_or_default();
    let secs = wait.wait_timeout.unwrap_or(default_secs);
    let (mut command, finished) = match wait.no_wait {
        true => (accepted.clone(), true),
        false => follow(client, accepted.clone(), Duration::from_secs(secs), rolling).await?,
    };
    // The polled command has no warnings: keep those of the answer to the POST.
    command["warnings"] = accepted["warnings"].clone();
    if wait.no_wait && !json {
        let op = op_label(&command);
        println!("command #{seq} ({op}) accepted; follow it with `rota ctl commands {seq}`");
    } else {
        print_value(json, &command, command_text);
    }
    for w in command["warnings"].as_array().into_iter().flatten() {
        eprintln!("warning: {}", text(w));
    }
    if !finished {
        eprintln!("error: command #{seq} is not finished after {secs} s; it may still complete: follow it with `rota ctl commands {seq}`");
        Ok(ExitCode::from(EXIT_TIMEOUT))
    } else if command["failed"].as_bool() == Some(true) {
        eprintln!("error: command #{seq} failed on some node (see MESSAGE)");
        Ok(ExitCode::from(EXIT_FAILED))
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

/// Polls the command until it is done or `limit` passes; returns its last state and whether
/// it finished. A progress line is redrawn on a terminal; a rolling restart also logs one line
/// per change of a node's state, terminal or not, so a log shows how far it went.
async fn follow(
    client: &Client,
    mut command: Value,
    limit: Duration,
    rolling: bool,
) -> Result<(Value, bool), Failure> {
    let seq = command["seq"].as_i64().unwrap_or_default();
    let tty = std::io::stderr().is_terminal();
    let clear = || {
        if tty {
            eprint!("\r\x1b[K")
        }
    };
    let deadline = Instant::now() + limit;
    let mut logged: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut trouble: Option<String> = None;
    loop {
        if rolling {
            for (node, state, message) in node_states(&command) {
                let now = (state.clone(), message.clone());
                let before = logged
                    .get(&node)
                    .cloned()
                    .unwrap_or(("pending".into(), String::new()));
                if now != before {
                    clear();
                    eprintln!("{node}: {state} {message}");
                    logged.insert(node, now);
                }
            }
        }
        let done = command["done"].as_bool() == Some(true);
        if done || Instant::now() >= deadline {
            clear();
            if let (false, Some(t)) = (done, &trouble) {
                // Shutting down the node that serves the API silences it before its answer.
                let serving = command["issued_by"].as_str().unwrap_or_default();
                let targets = command["targets"].as_array();
                let mut hint = String::new();
                if targets.is_some_and(|t| t.iter().any(|n| n == serving)) {
                    hint = format!("; {serving} serves this API and is a target: follow the command through another node (--url)");
                }
                eprintln!("warning: the last poll got no answer: {t}{hint}");
            }
            return Ok((command, done));
        }
        if tty {
            let mut line = progress_line(&command);
            if let Some(t) = &trouble {
                line.push_str(&format!("  (no answer: {t})"));
            }
            eprint!("\r\x1b[K{}", clip(&line, PROGRESS_WIDTH));
        }
        sleep(POLL).await;
        match client.get(&format!("/api/v1/commands/{seq}")).await {
            Ok(c) => (command, trouble) = (c, None),
            // The node serving the API may be the one restarting: ask again until the deadline.
            Err(f) if f.is_transient() => trouble = Some(f.to_string()),
            Err(f) => {
                clear();
                return Err(f);
            }
        }
    }
}

/// `[######----] 2/3 applied  node-3: in_progress restarting`: finished targets as a bar, and
/// the node at work (or the first still pending).
fn progress_line(command: &Value) -> String {
    let nodes = node_states(command);
    let count = |s: &str| nodes.iter().filter(|n| n.1 == s).count();
    let (applied, failed, total) = (count("applied"), count("failed"), nodes.len());
    let filled = (applied + failed) * BAR / total.max(1);
    let mut line = format!(
        "[{}{}] {applied}/{total} applied",
        "#".repeat(filled),
        "-".repeat(BAR - filled)
    );
    if failed > 0 {
        line.push_str(&format!(", {failed} failed"));
    }
    let busy = nodes
        .iter()
        .find(|n| n.1 == "in_progress")
        .or_else(|| nodes.iter().find(|n| n.1 == "pending"));
    if let Some((node, state, message)) = busy {
        line.push_str(&format!("  {node}: {state} {message}"));
    }
    line.trim_end().to_string()
}

fn clip(line: &str, width: usize) -> String {
    line.chars().take(width).collect()
}

/// Each target of a command: node, state, message.
fn node_states(command: &Value) -> Vec<(String, String, String)> {
    let nodes = command["nodes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    nodes
        .iter()
        .map(|n| {
            (
                text(&n["node"]),
                text(&n["state"]),
                n["message"].as_str().unwrap_or("").into(),
            )
        })
        .collect()
}

/// `pause nightly`, `act_as node-2`, `set_log_level debug`: the operation and its argument.
fn op_label(c: &Value) -> String {
    match ["task", "service", "node", "level"]
        .iter()
        .find_map(|k| c[*k].as_str())
    {
        Some(arg) => format!("{} {arg}", text(&c["op"])),
        None => text(&c["op"]),
    }
}

fn targets_label(c: &Value) -> String {
    match c["scope"].as_str() {
        Some("cluster") => format!("cluster: {}", text(&c["targets"])),
        _ => text(&c["targets"]),
    }
}

/// `2 applied, 1 pending`, in the order a command goes through.
fn summary_label(c: &Value) -> String {
    let parts: Vec<String> = ["applied", "failed", "in_progress", "pending"]
        .iter()
        .filter_map(|s| {
            c["summary"][*s]
                .as_u64()
                .filter(|n| *n > 0)
                .map(|n| format!("{n} {s}"))
        })
        .collect();
    parts.join(", ")
}

pub(super) fn commands_table(list: &Value) -> String {
    columns(
        list,
        &[
            ("SEQ", |c| text(&c["seq"])),
            ("OP", op_label),
            ("SCOPE/TARGETS", targets_label),
            ("STATE-SUMMARY", summary_label),
            ("ISSUED-BY", |c| text(&c["issued_by"])),
            ("TOKEN", |c| {
                c["requested_by"].as_str().unwrap_or("-").to_string()
            }),
        ],
    )
}

/// One command: what, by whom, when, and each target's state.
pub(super) fn command_text(c: &Value) -> String {
    let at = time_of(&c["issued_at_ms"]);
    let state = if c["done"].as_bool() == Some(true) {
        "done"
    } else {
        "not done"
    };
    let rows: Vec<Vec<String>> = node_states(c)
        .into_iter()
        .map(|(n, s, m)| vec![n, s, m])
        .collect();
    let token = match c["requested_by"].as_str() {
        Some(name) => format!(" for token `{name}`"),
        None => String::new(),
    };
    format!(
        "command #{} {} ({}), issued by {}{token} at {at} UTC: {state}, {}\n{}",
        text(&c["seq"]),
        op_label(c),
        targets_label(c),
        text(&c["issued_by"]),
        summary_label(c),
        table(&["NODE", "STATE", "MESSAGE"], &rows)
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_progress_line_shows_the_bar_the_count_and_the_node_at_work() {
        let node =
            |n: &str, s: &str, m: &str| json!({"node": n, "state": s, "message": m, "at_ms": null});
        let c = json!({"nodes": [node("node-1", "applied", "back"), node("node-2", "in_progress", "restarting"), node("node-3", "pending", "")]});
        assert_eq!(
            progress_line(&c),
            "[###-------] 1/3 applied  node-2: in_progress restarting"
        );
        let c = json!({"nodes": [node("a", "applied", ""), node("b", "failed", "no"), node("c", "pending", "")]});
        assert_eq!(
            progress_line(&c),
            "[######----] 1/3 applied, 1 failed  c: pending"
        );
        let c = json!({"nodes": [node("a", "applied", "")]});
        assert_eq!(progress_line(&c), "[##########] 1/1 applied");
        assert_eq!(progress_line(&json!({})), "[----------] 0/0 applied");
        assert_eq!(clip("abcdef", 4), "abcd");
    }
}
