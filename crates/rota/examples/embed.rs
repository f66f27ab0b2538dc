//! A service that embeds rota: run it two or three times with different ids on one SQLite
//! file and watch `nightly-export` run on exactly one of them; stop that one (Ctrl-C) or
//! kill it and watch another take over.
//!
//!     cargo run --example embed -- node-1 &
//!     cargo run --example embed -- node-2

use std::time::Duration;

use rota::{FireContext, MisfirePolicy, Node, RecoveryPolicy, Schedule, TaskError, TaskSpec};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let id = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "node-1".to_string());
    let url = std::env::var("ROTA_STORE_URL")
        .unwrap_or_else(|_| "sqlite:///tmp/rota-embed.db".to_string());

    let export = TaskSpec::new(
        "nightly-export",
        Schedule::every(Duration::from_secs(2))?,
        |ctx: FireContext| async move {
            println!(
                "[{}] export for instant {} under token {}",
                ctx.node, ctx.instant_ms, ctx.token
            );
            Ok(())
        },
    )
    .misfire(MisfirePolicy::RunOnce, Duration::from_secs(30))
    .recovery(RecoveryPolicy::Retry);

    // A long fire checks its cancellation between units of work (contract 4).
    let poller = TaskSpec::new(
        "mailbox-poll",
        Schedule::cron("*/5 * * * * *", None)?,
        |ctx: FireContext| async move {
            for message in 0..3 {
                if ctx.cancel.is_cancelled() {
                    return Err(TaskError::new("stopped: this node no longer owns the task"));
                }
                println!(
                    "[{}] handling message {message} of the poll at {}",
                    ctx.node, ctx.instant_ms
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(())
        },
    )
    .timeout(Duration::from_secs(4));

    let node = Node::builder(id, "embed-demo", url)
        .task(export)
        .task(poller)
        .start()
        .await?;
    println!("joined; Ctrl-C stops gracefully");
    tokio::signal::ctrl_c().await?;
    node.shutdown().await?;
    Ok(())
}
