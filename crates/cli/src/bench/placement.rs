//! `rota bench placement`: the leader's placement computation alone (the pure core, no
//! store), for a cluster of identical nodes: the first placement, a settled round, a join
//! and a leave.

use std::{collections::BTreeMap, process::ExitCode, sync::Arc, time::Instant};

use clap::Args;
use rota::core::placement::{
    place, ActivePassive, DeclaredPlacement, NodeInfo, Owner, Placement, PlacementSpec,
};

use super::measure::stats;

#[derive(Args)]
pub struct PlacementArgs {
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Tasks every node declares.
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Timed runs of each case.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// `round-robin` (one server per task) or `active-passive`.
    #[arg(long, default_value = "round-robin")]
    resolver: String,
}

pub(super) fn placement(args: PlacementArgs) -> anyhow::Result<ExitCode> {
    let spec = match args.resolver.as_str() {
        "round-robin" => PlacementSpec::round_robin(1),
        "active-passive" => PlacementSpec::default(),
        other => anyhow::bail!(
            "--resolver {other:?} is not measured here; use round-robin or active-passive"
        ),
    };
    if args.nodes < 2 {
        anyhow::bail!("--nodes {} cannot show a join; use 2 or more", args.nodes);
    }
    // Identical nodes share their declarations, as the leader keeps them.
    let declared: Arc<BTreeMap<String, String>> = Arc::new(
        (0..args.tasks)
            .map(|t| (format!("t{t:06}"), format!("{:016x}", t * 7919)))
            .collect(),
    );
    let node = |i: usize| NodeInfo {
        id: format!("node-{i:03}"),
        incarnation: 1,
        joined_at_ms: i as i64,
        leaving: false,
        declared: declared.clone(),
        labels: BTreeMap::new(),
        placement: DeclaredPlacement {
            default: spec.clone(),
            tasks: BTreeMap::new(),
        },
    };
    let all: Vec<NodeInfo> = (0..args.nodes).map(node).collect();
    let before_join = &all[..args.nodes - 1];
    println!(
        "bench placement: {} tasks declared by each of {} identical nodes, {}",
        args.tasks, args.nodes, args.resolver
    );
    let timed = |nodes: &[NodeInfo], current: &BTreeMap<String, Owner>| {
        let start = Instant::now();
        let placement = place(&ActivePassive, nodes, current);
        (start.elapsed().as_millis() as i64, placement)
    };
    let owners = |p: &Placement| p.owners.clone();
    let (mut first, mut settled, mut join, mut leave) = (vec![], vec![], vec![], vec![]);
    for _ in 0..args.rounds {
        let (ms, spread) = timed(before_join, &BTreeMap::new());
        first.push(ms);
        anyhow::ensure!(
            spread.owners.len() == args.tasks,
            "{} of {} tasks placed",
            spread.owners.len(),
            args.tasks
        );
        let spread = owners(&spread);
        settled.push(timed(before_join, &spread).0);
        let (ms, joined) = timed(&all, &spread);
        join.push(ms);
        let joined = owners(&joined);
        // The leave: the last node to have joined goes.
        leave.push(timed(before_join, &joined).0);
    }
    println!("  first placement: {}", stats(&mut first));
    println!("  settled round:   {}", stats(&mut settled));
    println!("  a node joins:    {}", stats(&mut join));
    println!("  a node leaves:   {}", stats(&mut leave));
    Ok(ExitCode::SUCCESS)
}
