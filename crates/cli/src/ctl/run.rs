//! `rota ctl run TASK`: one extra fire of a task now, on its owner; with `--wait`, followed
//! to its outcome and the command's exit status.

use std::{collections::BTreeMap, process::ExitCode};

use reqwest::Method;
use serde_json::{json, Value};
use tokio::time::{sleep, Duration, Instant};

use super::{
    args::{EXIT_FAILED, EXIT_TIMEOUT, EXIT_USAGE},
    client::{segment, Client, Failure},
    table::{print_json, text},
};

const POLL: Duration = Duration::from_millis(250);

/// The states a run ends in (its fire's final outcomes).
fn is_final(state: &str) -> bool {
    !matches!(state, "pending" | "running")
}

/// `K=V` pairs as the API takes them; the first bad one is named.
fn env_of(pairs: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut env = BTreeMap::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!(
                "--env `{pair}` is not NAME=VALUE; give it as --env NAME=VALUE"
            ));
        };
        if env.insert(key.to_string(), value.to_string()).is_some() {
            return Err(format!("--env `{key}` is given twice; give it once"));
        }
    }
    Ok(env)
}

pub(super) async fn run(
    client: &Client,
    json: bool,
    task: &str,
    env: &[String],
    wait: Option<u64>,
) -> Result<ExitCode, Failure> {
    let env = match env_of(env) {
        Ok(e) => e,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let body = if env.is_empty() {
        json!({})
    } else {
        let vars: Vec<Value> = env
            .iter()
            .map(|(name, value)| json!({ "name": name, "value": value }))
            .collect();
        json!({ "env": vars })
    };
    let path = format!("/api/v1/tasks/{}/run", segment(task));
    let accepted = client.call(Method::POST, &path, Some(&body)).await?;
    let seq = accepted["run"]["seq"].as_i64().unwrap_or_default();
    let url = accepted["run"]["url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let Some(secs) = wait else {
        if json {
            print_json(&accepted);
        } else {
            println!("run #{seq} of {task} asked for; follow it with `rota ctl run {task} --wait`... or GET {url}");
        }
        return Ok(ExitCode::SUCCESS);
    };
    if !json {
        eprintln!("run #{seq} of {task} asked for; waiting for its outcome");
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last_state = String::new();
    let last: Value = loop {
        match client.get(&url).await {
            Ok(v) => {
                let state = text(&v["state"]);
                if state != last_state && !json {
                    if state == "running" {
                        eprintln!(
                            "started on {} (attempt {})",
                            text(&v["fire"]["node"]),
                            text(&v["fire"]["attempt"])
                        );
                    }
                    last_state = state.clone();
                }
                if is_final(&state) {
                    break v;
                }
            }
            Err(f) if f.is_transient() => {}
            Err(f) => return Err(f),
        }
        if Instant::now() >= deadline {
            eprintln!("error: run #{seq} of {task} has not ended after {secs} s (state {last_state}); it may still end: GET {url}");
            return Ok(ExitCode::from(EXIT_TIMEOUT));
        }
        sleep(POLL).await;
    };
    if json {
        print_json(&last);
    } else {
        println!("{}", outcome_line(&last));
    }
    Ok(if last["state"] == "ok" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}

/// `run #7 of report: ok on node-2 in 1.20 s (exit status 0)`.
fn outcome_line(run: &Value) -> String {
    let fire = &run["fire"];
    let took = match (
        fire["started_at_ms"].as_i64(),
        fire["finished_at_ms"].as_i64(),
    ) {
        (Some(a), Some(b)) => format!(" in {:.2} s", (b - a) as f64 / 1000.0),
        _ => String::new(),
    };
    let status = match run["exit_status"].as_i64() {
        Some(code) => format!(" (exit status {code})"),
        None => String::new(),
    };
    let message = match fire["message"].as_str() {
        Some(m) if run["state"] != "ok" => format!(": {m}"),
        _ => String::new(),
    };
    format!(
        "run #{} of {}: {} on {}{took}{status}{message}",
        text(&run["seq"]),
        text(&run["task"]),
        text(&run["state"]),
        text(&fire["node"]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_pairs_are_name_equals_value() {
        let pairs = |p: &[&str]| env_of(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let env = pairs(&["A=1", "B=x=y", "C="]).unwrap();
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "x=y");
        assert_eq!(env["C"], "");
        assert!(pairs(&["A"]).unwrap_err().contains("NAME=VALUE"));
        assert!(pairs(&["A=1", "A=2"]).unwrap_err().contains("twice"));
    }

    #[test]
    fn the_outcome_line_names_the_node_the_time_and_the_status() {
        let run = json!({"seq": 7, "task": "report", "state": "failed", "exit_status": 3,
            "fire": {"node": "node-2", "started_at_ms": 1000, "finished_at_ms": 2200, "message": "run now #7: exit status 3"}});
        assert_eq!(
            outcome_line(&run),
            "run #7 of report: failed on node-2 in 1.20 s (exit status 3): run now #7: exit status 3"
        );
    }
}
