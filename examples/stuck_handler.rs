//! What becomes of a handler that ignores its cancellation (contract 12). Nothing inside the
//! process can stop it, so if its node's lease runs out while it is still alive, the node's
//! work guard ends the whole process rather than let it run beside the task's next owner.
//! Run it, then freeze it: within about a second it is killed.
//!
//!     cargo run --example stuck_handler -- /tmp/stuck.pid &
//!     kill -STOP $(cat /tmp/stuck.pid)

use std::time::Duration;

use rota::{FireContext, Node, Schedule, TaskSpec};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/stuck.pid".to_string());
    let url = std::env::var("ROTA_STORE_URL")
        .unwrap_or_else(|_| "sqlite:///tmp/rota-stuck.db".to_string());
    let stuck = TaskSpec::new(
        "stuck",
        Schedule::every(Duration::from_secs(1))?,
        move |_ctx: FireContext| {
            let started = started.clone();
            async move {
                std::fs::write(&started, format!("{}\n", std::process::id())).ok();
                // Never looks at `ctx.cancel`, and blocks its thread: do not do this.
                loop {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        },
    );
    let node = Node::builder("stuck-1", "stuck-demo", url)
        .task(stuck)
        .start()
        .await?;
    tokio::signal::ctrl_c().await?;
    node.shutdown().await?;
    Ok(())
}
