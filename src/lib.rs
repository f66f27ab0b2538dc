//! # rota
//!
//! Task coordination for clusters. Several identical nodes share one store (SQLite,
//! PostgreSQL, MySQL/MariaDB); every coordinated task runs on exactly one of them, each
//! scheduled instant is started once, and when a node dies its tasks move to a survivor
//! within about a second. See `docs/contract.md` for the guarantees, and [`Node::builder`] to start.

pub mod admin;
pub mod cache;
pub mod config;
pub mod core;
mod error;
#[doc(hidden)]
pub mod harness;
pub mod kinds;
pub mod metrics;
pub mod node;
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
pub use task::{FireContext, Handler, MisfirePolicy, Outcome, RecoveryPolicy, TaskError, TaskSpec};
pub use tokio_util::sync::CancellationToken;
