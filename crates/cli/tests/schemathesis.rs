//! The admin API judged by schemathesis (from PyPI) against its own OpenAPI document: every
//! operation, every check (status codes and schemas of every answer, schema-valid requests
//! accepted and schema-violating ones refused, 405 with `Allow` for undeclared methods, the
//! event stream's events), with the admin token, against a live two-node cluster that the
//! run drains, pauses and commands. `tests/schemathesis/rota_hooks.py` keeps out only what
//! would stop the node serving the API. `./scripts/test` installs schemathesis; without it
//! this test fails, it is never skipped.

mod common;

use std::{path::Path, process::Stdio, time::Duration};

use common::*;
use rota_testkit as harness;

const SERVING: &str = "node-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_keeps_its_openapi_document_as_schemathesis_checks_it() {
    let _slot = scenario_slot().await;
    let s = TestStore::sqlite().await;
    let mut cluster = s.cluster("schemathesis");
    let record = cluster.dir().join("fires.log");
    let tasks = format!(
        "{}[[service]]\nname = \"listener\"\ncommand = [\"sleep\", \"1000\"]\n",
        harness::log_task_toml("report", "1s", &record)
    );
    // Both nodes run the cluster's own definitions, so that applying them is tested too.
    let spawn = |cluster: &mut harness::ProcessCluster, node: &str, port: u16| {
        let text = format!(
            "{}\n[admin]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{ADMIN_TOKEN}\"\nread_token = \"{READ_TOKEN}\"\ndefinitions = true\n",
            cluster.config_text(node, &tasks)
        );
        let path = cluster.config_path(node);
        std::fs::create_dir_all(cluster.dir()).unwrap();
        std::fs::write(&path, text).unwrap();
        cluster.spawn_with_config(node, &path).unwrap();
    };
    let port = harness::servers::free_port();
    spawn(&mut cluster, SERVING, port);
    spawn(&mut cluster, "node-2", harness::servers::free_port());
    wait_alive(&s.store, &cluster, SERVING).await;
    wait_alive(&s.store, &cluster, "node-2").await;
    // One run of `report`, so that reading a run reaches a real one.
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/v1/tasks/report/run");
    let run: serde_json::Value = eventually("report takes a run", LONG, Some(&cluster), || async {
        let answer = http.post(&url).bearer_auth(ADMIN_TOKEN).send().await.ok()?;
        (answer.status() == 202).then_some(())?;
        serde_json::from_slice(&answer.bytes().await.ok()?).ok()
    })
    .await;
    let run_seq = run["run"]["seq"].as_i64().expect("a run number");
    // A fire that ran, so that reading a fire's output reaches a real one.
    let fired = eventually("report fired", LONG, Some(&cluster), || async {
        let h = s
            .store
            .history("schemathesis", Some("report"), 10)
            .await
            .ok()?;
        h.iter()
            .find(|f| f.started_at_ms.is_some())
            .map(|f| f.instant_ms)
    })
    .await;

    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis");
    let run = tokio::process::Command::new("schemathesis")
        .args([
            "run",
            &format!("http://127.0.0.1:{port}/api/v1/openapi.json"),
            "--header",
            &format!("Authorization: Bearer {ADMIN_TOKEN}"),
            "--checks",
            "all",
            "--max-examples",
            "20",
            // A fixed seed: a failure replays; a new finding comes with a change.
            "--seed",
            "14",
            "--no-color",
        ])
        .env("PYTHONPATH", &hooks)
        .env("SCHEMATHESIS_HOOKS", "rota_hooks")
        .env("ROTA_SERVING_NODE", SERVING)
        .env("ROTA_RUN", format!("report/{run_seq}"))
        .env("ROTA_FIRE", format!("report/{fired}"))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("schemathesis finishes within 10 minutes")
        .expect("schemathesis runs: ./scripts/test installs it (pip install schemathesis)");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && report.contains("No issues found"),
        "schemathesis found the API and its document disagreeing ({}):\n{report}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // node-2 may have been restarted or shut down by the run, as asked.
    assert!(
        cluster.running(SERVING),
        "the serving node survived the run:\n{}",
        cluster.log(SERVING)
    );
}
