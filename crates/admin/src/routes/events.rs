//! `GET /api/v1/events`: the cluster's recent events.

use hyper::StatusCode;
use serde_json::{json, Value};

use super::reply::{json_response, limit, Reply};
use crate::{
    api::{Api, Problem},
    model::{merge_events, read_log},
};
use rota::{core::control::Command, store::AckFilter};

/// `GET /api/v1/events`.
pub(super) async fn list(api: &Api, query: &str) -> Reply {
    let limit = limit(query, 100, 1000)? as usize;
    Ok(json_response(
        StatusCode::OK,
        &json!(events(api, limit).await?),
    ))
}

/// The cluster's recent events, newest first: the journal (joins, leaves, deaths,
/// failovers, leader changes), commands issued and acknowledged, and fires that did not end
/// well.
async fn events(api: &Api, limit: usize) -> Result<Vec<Value>, Problem> {
    let store = &api.store;
    let journal = store.events(&api.cluster, limit as i64).await?;
    let log = read_log(api).await?;
    let recent: Vec<Command> = log.iter().rev().take(limit).cloned().collect();
    let seqs: Vec<i64> = recent.iter().map(|c| c.seq).collect();
    let acks = store
        .command_acks(&api.cluster, AckFilter::Commands(&seqs))
        .await?;
    let fires = store.history(&api.cluster, None, limit as i64).await?;
    Ok(merge_events(&journal, &recent, &acks, &fires, limit))
}
