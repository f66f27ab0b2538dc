//! `rota ctl logs TASK [INSTANT]`: what a fire's work wrote, stdout to stdout and stderr to
//! stderr, as kept with the fire (the tail of each, up to the task's `output_limit`); with
//! `--follow`, printed as it comes while the fire runs.

use std::{io::Write, process::ExitCode};

use serde_json::Value;
use tokio::time::{sleep, Duration};

use super::{
    client::{segment, Client, Failure},
    table::print_json,
};

/// How often a running fire's output is asked for (a node writes it once a second).
const POLL: Duration = Duration::from_millis(500);

pub(super) async fn logs(
    client: &Client,
    json: bool,
    task: &str,
    instant: Option<i64>,
    attempt: Option<i64>,
    follow: bool,
) -> Result<ExitCode, Failure> {
    let instant = match instant {
        Some(i) => i,
        None => match latest_started(client, task).await? {
            Some(i) => i,
            None => {
                eprintln!("error: no fire of task `{task}` has started yet (`rota ctl history {task}` lists its fires)");
                return Ok(ExitCode::from(super::args::EXIT_FAILED));
            }
        },
    };
    let base = format!("/api/v1/tasks/{}/fires/{instant}/output", segment(task));
    let attempt = attempt.map(|a| format!("&attempt={a}")).unwrap_or_default();
    let (mut stdout_from, mut stderr_from) = (0u64, 0u64);
    loop {
        let answer = client
            .get(&format!(
                "{base}?stdout_from={stdout_from}&stderr_from={stderr_from}{attempt}"
            ))
            .await;
        let v = match answer {
            Ok(v) => v,
            Err(f) if follow && f.is_transient() => {
                sleep(POLL).await;
                continue;
            }
            Err(f) => return Err(f),
        };
        if json {
            print_json(&v);
        } else {
            show(&v);
        }
        stdout_from = v["stdout_bytes"].as_u64().unwrap_or(stdout_from);
        stderr_from = v["stderr_bytes"].as_u64().unwrap_or(stderr_from);
        if !follow || v["done"] == true {
            return Ok(ExitCode::SUCCESS);
        }
        sleep(POLL).await;
    }
}

/// Prints what an answer brings: stdout's text to stdout, stderr's to stderr, each after a
/// note of what was written but is no longer kept.
fn show(v: &Value) {
    for (stream, dropped, mut out) in [
        (
            "stdout",
            "stdout_dropped",
            Box::new(std::io::stdout()) as Box<dyn Write>,
        ),
        ("stderr", "stderr_dropped", Box::new(std::io::stderr())),
    ] {
        if let Some(n) = v[dropped].as_u64().filter(|n| *n > 0) {
            eprintln!("[{n} bytes of {stream} not kept: only the tail is (output_limit)]");
        }
        let _ = out.write_all(v[stream].as_str().unwrap_or_default().as_bytes());
        let _ = out.flush();
    }
}

/// The instant of the task's latest fire whose work started (or is starting).
async fn latest_started(client: &Client, task: &str) -> Result<Option<i64>, Failure> {
    let history = client
        .get(&format!("/api/v1/tasks/{}/history?limit=50", segment(task)))
        .await?;
    Ok(history.as_array().and_then(|fires| {
        fires
            .iter()
            .filter(|f| f["started_at_ms"].is_i64() || f["outcome"] == "running")
            .filter_map(|f| f["instant_ms"].as_i64())
            .max()
    }))
}
