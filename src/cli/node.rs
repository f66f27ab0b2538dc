//! `rota node`: run one node until SIGTERM/SIGINT (graceful) or a second signal (forced).

use std::{path::Path, process::ExitCode};

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

/// Exit code when the node id is already alive in the cluster.
pub const EXIT_DUPLICATE: u8 = 3;
/// Exit code for an invalid configuration.
pub const EXIT_CONFIG: u8 = 2;

pub async fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let config = match rota::config::load(path) {
        Ok(c) => c,
        Err(problems) => return Ok(report(path, problems)),
    };
    let problems = config.validate();
    if !problems.is_empty() {
        return Ok(report(path, problems));
    }
    init_logging(&config.log.format, &config.log.level);
    let builder = match config.builder() {
        Ok(b) => b,
        Err(problems) => return Ok(report(path, problems)),
    };
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let node = match builder.start().await {
        Ok(n) => n,
        Err(e @ rota::Error::DuplicateNode { .. }) => {
            eprintln!("error: {e}");
            tracing::error!(error = %e, "refused to start");
            return Ok(ExitCode::from(EXIT_DUPLICATE));
        }
        Err(e) => return Err(e).context("starting the node"),
    };
    let mut status = node.watch_status();
    let mut signals = 0;
    {
        let node_ref = &node;
        let wait = async move {
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                signals += 1;
                if signals == 1 {
                    info!("signal received: stopping gracefully (a second signal forces)");
                    node_ref.begin_shutdown();
                } else {
                    warn!("second signal: forcing the stop");
                    node_ref.force_shutdown();
                    return;
                }
            }
        };
        tokio::pin!(wait);
        // Until a forced stop, or the node ends (its status channel closes).
        loop {
            tokio::select! {
                _ = &mut wait => break,
                changed = status.changed() => if changed.is_err() { break },
            }
        }
    }
    node.wait().await.context("node stopped with an error")?;
    Ok(ExitCode::SUCCESS)
}

fn report(path: &Path, problems: Vec<rota::config::ConfigProblem>) -> ExitCode {
    eprintln!(
        "error: {}: {} problem(s); nothing was started",
        path.display(),
        problems.len()
    );
    for p in &problems {
        eprintln!("  {p}");
    }
    ExitCode::from(EXIT_CONFIG)
}

/// Human logs by default, JSON with `[log] format = "json"`; `ROTA_LOG` overrides the level.
pub(crate) fn init_logging(format: &str, level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("ROTA_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("rota={level},warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init();
    } else {
        builder.init();
    }
}
