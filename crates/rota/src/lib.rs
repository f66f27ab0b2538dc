//! # rota
//!
//! Task coordination for clusters. Several identical nodes share one store (SQLite,
//! PostgreSQL, MySQL/MariaDB); every coordinated task runs on exactly one of them, each
//! scheduled instant is started once, and when a node dies its tasks move to a survivor
//! within about a second. See `docs/contract.md` for the guarantees, and [`Node::builder`] to start.
//!
//! This crate is what a service embeds: the store trait and the stores behind cargo features,
//! the node runtime, tasks, services, the cluster cache and the metrics counters. It builds on
//! [`rota_core`] (the pure model) and must never import the admin server (`rota-admin`), the
//! binary (`rota-cli`), a command-line parser or the test kit (`rota-testkit`).

pub mod alerts;
pub mod cache;
/// The pure model ([`rota_core`]), re-exported: names, schedules, placement, the control
/// fold, lease arithmetic and outcomes.
pub use rota_core as core;
mod error;
pub mod kinds;
pub mod metrics;
pub mod node;
pub mod output;
pub mod service;
pub mod status;
pub mod store;
pub mod task;

pub use crate::core::{
    placement::{ActivePassive, Resolver},
    schedule::Schedule,
};
pub use error::{Error, Problem, Result};
pub use node::{Node, NodeBuilder, NodeHandle, NodeStatus, StopReason, Timing};
pub use service::{ItemStart, ServiceContext, ServiceHandler, ServiceSpec};
pub use task::{
    FireContext, Handler, MisfirePolicy, Outcome, OverlapPolicy, RecoveryPolicy, RetryPolicy,
    TaskError, TaskSpec,
};
pub use tokio_util::sync::CancellationToken;
