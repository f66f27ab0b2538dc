//! `/metrics`: this node's counters in the Prometheus text format.

use std::collections::BTreeMap;

use http_body_util::BodyExt;
use hyper::{Response, StatusCode};

use super::reply::Reply;
use crate::api::Api;

/// `/metrics`: this node's counters, with the cluster's registrations as last seen.
pub(super) async fn metrics(api: &Api) -> Reply {
    // Read in place: the status holds every owned task, thousands of them.
    let (incarnation, up, leader, owned) = {
        let s = api.status.borrow();
        (s.incarnation, s.active, s.leader, s.owned.len())
    };
    let mut gauges = rota::metrics::Gauges {
        node: api.node.clone(),
        cluster: api.cluster.clone(),
        store: api.store.kind().to_string(),
        incarnation,
        up,
        leader,
        owned,
        nodes: BTreeMap::new(),
        statements: api.store.statements(),
    };
    // Scrapes must answer while the store does not: then the registrations are left out.
    let view = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        api.store.view(&api.cluster),
    )
    .await;
    if let Ok(Ok(view)) = view {
        for n in &view.nodes {
            let state = match (n.alive, n.leaving) {
                (true, false) => "alive",
                (true, true) => "leaving",
                (false, _) => "dead",
            };
            *gauges.nodes.entry(state).or_default() += 1;
        }
    }
    let text = api.metrics.render(&gauges);
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
        .header("cache-control", "no-store")
        .body(http_body_util::Full::new(hyper::body::Bytes::from(text)).boxed())
        .expect("valid response"))
}
