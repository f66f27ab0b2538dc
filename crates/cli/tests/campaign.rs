//! The fault campaign (`rota bench faults`), CI-sized: on every store, thirty faults of every
//! kind a store given by URL allows (SIGKILL, SIGSTOP past the lease and graceful stop of
//! any node, the leader and task and service owners included; a second process with a live
//! node's id; drain, pause and rolling restart through the admin API; a node's wall clock
//! stepped by minutes on the server stores, the host's clock by up to 2 s on SQLite) under
//! the tasks, a command service and a `file_inbound` service fed four files a second, and
//! not one violation in the independent checker's
//! report. A failure prints the report, with the seed that replays the run. Two stores'
//! campaigns run at once (`scenario_slot`): the contract must hold on a busy machine too.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Faults per store: about three minutes of campaign.
const FAULTS: &str = "30";
/// A campaign stuck this long is a failure of its own (each fault waits at most 60 s).
const CAMPAIGN_TIMEOUT: Duration = Duration::from_secs(600);

async fn a_campaign_of_every_fault_kind_finds_no_violation(kind: Kind) {
    let _slot = scenario_slot().await;
    let s = TestStore::new(kind).await;
    let seed = rand::random::<u64>().to_string();
    let began = Instant::now();
    let child = tokio::process::Command::new(BIN)
        .args(["bench", "faults", "--store", &s.url, "--nodes", "3"])
        .args(["--faults", FAULTS, "--seed", &seed])
        .arg("--json")
        .env_remove("ROTA_LOG")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(CAMPAIGN_TIMEOUT, child)
        .await
        .unwrap_or_else(|_| panic!("the campaign (seed {seed}) ran over {CAMPAIGN_TIMEOUT:?}"))
        .expect("run rota bench faults");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "{kind:?}: campaign of {FAULTS} faults took {:?}",
        began.elapsed()
    );
    let report: serde_json::Value = match serde_json::from_str(&stdout) {
        Ok(v) => v,
        Err(e) => panic!(
            "the campaign (seed {seed}) printed no report ({e}), {}:\n{stderr}\n{stdout}",
            out.status
        ),
    };
    let violations = report["violations"].as_array().map_or(0, Vec::len);
    assert!(
        out.status.success() && violations == 0,
        "the campaign on {kind:?} (seed {seed}) found {violations} violation(s), {}:\n{stderr}\n{}",
        out.status,
        serde_json::to_string_pretty(&report["violations"]).unwrap_or_default()
    );
    let faults = report["faults"].as_array().map_or(0, Vec::len);
    assert_eq!(faults.to_string(), FAULTS, "every fault was caused");
    assert!(
        report["starts"].as_u64().unwrap_or(0) > 0,
        "the tasks ran: {stdout}"
    );
    let files = &report["files"];
    assert!(
        files["dropped"].as_u64().unwrap_or(0) > 0
            && files["handled_once"].as_u64().unwrap_or(0) > 0,
        "files were dropped and handled: {files}"
    );
    assert!(
        report["service_starts"]["listener"].as_u64().unwrap_or(0) > 0,
        "the command service ran: {}",
        report["service_starts"]
    );
    eprintln!(
        "{kind:?}: outcome lag {}, files {}",
        report["outcome_lag_ms"], files
    );
}

on_every_store!(a_campaign_of_every_fault_kind_finds_no_violation);
