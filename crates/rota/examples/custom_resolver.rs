//! A custom placement resolver, registered through the library: tasks go to the live node
//! whose id sorts first, except tasks named `eu-*`, which go only to nodes labelled
//! `zone=eu` (the first of those by id). Run a few nodes on one SQLite file, with a zone
//! each, and watch where the tasks land; stop one (Ctrl-C) and watch them move.
//!
//!     cargo run --example custom_resolver -- node-2 us &
//!     cargo run --example custom_resolver -- node-3 eu &
//!     cargo run --example custom_resolver -- node-1 us
//!
//! With only `us` nodes up, the `eu-*` tasks stay unplaced, and `rota status` says why.
//! Every node registers the resolver: whichever node leads places the tasks.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use rota::{
    core::placement::{EligibleTask, PlacementSpec, ResolveInput, Resolver},
    FireContext, Node, Schedule, TaskSpec,
};

/// The resolver. It only picks among each task's eligible nodes (live, not leaving,
/// declaring the task with the definition in force); anything else it returns is refused.
struct EuFirst;

impl Resolver for EuFirst {
    fn name(&self) -> &str {
        "eu-first"
    }

    fn resolve(&self, input: &ResolveInput<'_>) -> BTreeMap<String, String> {
        // Labels come from each node's `labels` (`[node] labels` in a daemon's config).
        let in_eu = |id: &str| {
            input
                .nodes
                .iter()
                .any(|n| n.id == id && n.labels.get("zone").map(String::as_str) == Some("eu"))
        };
        input
            .tasks
            .iter()
            .filter_map(|task| {
                let node = task
                    .eligible
                    .iter()
                    .filter(|id| !task.name.starts_with("eu-") || in_eu(id))
                    .min()?; // None: left unplaced, and shown so
                             // The answer depends only on who is live, never on who runs the task now,
                             // so it is stable: placed again on its own result, nothing moves. (A
                             // resolver that wants fewer moves can keep `input.current[&task.name]`
                             // while it still qualifies.)
                Some((task.name.clone(), node.clone()))
            })
            .collect()
    }

    /// Shown as the reason of the tasks `resolve` leaves out.
    fn unplaced_reason(&self, _input: &ResolveInput<'_>, task: &EligibleTask) -> Option<String> {
        Some(format!(
            "none of the nodes able to run it ({}) is labelled zone=eu",
            task.eligible.join(", ")
        ))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let id = args.next().unwrap_or_else(|| "node-1".to_string());
    let zone = args.next().unwrap_or_else(|| "us".to_string());
    let url = std::env::var("ROTA_STORE_URL")
        .unwrap_or_else(|_| "sqlite:///tmp/rota-custom-resolver.db".to_string());

    let mut builder = Node::builder(id.clone(), "custom-resolver-demo", url)
        .labels([("zone", zone.as_str())])
        .resolver_named("eu-first", Arc::new(EuFirst));
    for name in ["report", "eu-invoices", "eu-ledger", "us-sync"] {
        let task = TaskSpec::new(
            name,
            Schedule::every(Duration::from_secs(2))?,
            |ctx: FireContext| async move {
                println!("[{}] {} at {}", ctx.node, ctx.task, ctx.instant_ms);
                Ok(())
            },
        )
        // Every node must declare the same spec: it is part of the task's definition.
        .placement(PlacementSpec::custom("eu-first"));
        builder = builder.task(task);
    }
    let node = builder.start().await?;
    println!("{id} joined in zone {zone}; Ctrl-C stops gracefully");

    let mut status = node.watch_status();
    let watch = async {
        while status.changed().await.is_ok() {
            let owned: Vec<String> = status
                .borrow()
                .owned
                .iter()
                .map(|(t, _)| t.clone())
                .collect();
            println!("[{id}] owns {owned:?}");
        }
    };
    tokio::select! {
        _ = watch => {}
        r = tokio::signal::ctrl_c() => r?,
    }
    node.shutdown().await?;
    Ok(())
}
