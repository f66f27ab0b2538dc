//! # rota-core
//!
//! rota's pure model: the name rule, schedules and which due instants start or misfire,
//! placement and the resolvers, the fold of the cluster command log, the lease arithmetic,
//! fire outcomes and their policies, and the shape of an input problem. No IO and no clock of
//! its own: each piece takes facts (times, nodes, tasks) and returns decisions, so it is
//! unit-tested without a store or a runtime. It must never import tokio, a store, or any
//! other rota crate; everything else imports it.

pub mod control;
pub mod lease;
pub mod names;
pub mod outcome;
pub mod placement;
pub mod problem;
pub mod schedule;
