//! The pure core: no IO, no clocks of its own. Each piece takes facts (times, nodes, tasks)
//! and returns decisions, so it is unit-tested without a store.

pub mod control;
pub mod lease;
pub mod placement;
pub mod schedule;
