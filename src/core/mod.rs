//! The pure core: no IO, no clocks of its own. Each piece takes facts (times, nodes, tasks)
//! and returns decisions, so it is unit-tested without a store.

pub mod control;
pub mod lease;
pub mod names;
pub mod outcome;
pub mod placement;
pub mod problem;
pub mod schedule;
