//! `rota node`: run one node until SIGTERM/SIGINT (graceful) or a second signal (forced),
//! or until a `restart` or `shutdown` cluster command ends it.

use std::{path::Path, process::ExitCode, sync::Arc};

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

/// Exit code when the node id is already alive in the cluster.
pub const EXIT_DUPLICATE: u8 = 3;
/// Exit code for an invalid configuration.
pub const EXIT_CONFIG: u8 = 2;
/// Set by a re-executing node for its next start: the incarnation it had.
const REEXEC_ENV: &str = "ROTA_REEXEC_OF";

/// Exit code asking a supervisor to start the node again (`[node] restart = "exit"`); it is
/// EX_TEMPFAIL, for systemd's `RestartForceExitStatus=75` or `Restart=on-failure`.
pub const EXIT_RESTART: u8 = 75;

pub async fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let config = match rota_cli::config::load(path) {
        Ok(c) => c,
        Err(problems) => return Ok(report(path, problems)),
    };
    let mut problems = config.validate();
    problems.extend(config.check_host());
    if !problems.is_empty() {
        return Ok(report(path, problems));
    }
    let admin = match config.admin.resolve() {
        Ok(a) => a,
        Err(problems) => return Ok(report(path, problems)),
    };
    let log_control = init_logging(&config.log.format, &config.log.level);
    let mut builder = match config.builder() {
        Ok(b) => b.log_level_control(log_control),
        Err(problems) => return Ok(report(path, problems)),
    };
    // The cluster's own definitions: listed by the API always, run here only if allowed.
    let definitions =
        rota_cli::config::definitions::compiler(config.admin.definition_programs.clone());
    if config.admin.definitions {
        builder = builder.definitions(definitions.clone());
    }
    // One store (one connection pool) for the node and its admin API.
    let store = rota::store::open(&config.store.url)
        .await
        .context("opening the store")?;
    let mut builder = builder.store(store.clone());
    let (cluster, id) = (config.node.cluster.clone(), config.node.id.clone());
    let exit_to_restart = config.node.restart.as_deref() == Some("exit");
    let accepts_definitions = config.admin.definitions;
    // The parsed file holds every task's table, about a kilobyte each, and the builder has
    // what it needs of them: not kept for the node's lifetime.
    drop(config);
    if let Some(incarnation) = std::env::var(REEXEC_ENV).ok().and_then(|v| v.parse().ok()) {
        builder = builder.reexecuted_from(incarnation);
    }
    // The API's port and TLS files before the node joins: a port in use must not make a
    // node join, then leave.
    let admin = match admin {
        Some(admin) => match rota_admin::bind(admin).await {
            Ok(bound) => Some(bound),
            Err(e) => {
                eprintln!("error: {e}");
                tracing::error!(error = %e, "cannot start the admin API");
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
        },
        None => None,
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
    let server = match admin {
        Some(admin) => {
            let api =
                rota_admin::Api::new(store, &cluster, &id, node.watch_status(), node.metrics())
                    .definitions(definitions, accepts_definitions);
            match admin.serve(api) {
                Ok(s) => Some(s),
                Err(e) => {
                    // The node joined already: leave cleanly rather than run without its API.
                    eprintln!("error: {e}");
                    tracing::error!(error = %e, "cannot start the admin API; leaving");
                    node.shutdown().await.ok();
                    return Ok(ExitCode::from(EXIT_CONFIG));
                }
            }
        }
        None => None,
    };
    let trim = crate::allocator::spawn_c_trim();
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
    trim.abort();
    let incarnation = status.borrow().incarnation;
    let reason = node.wait().await.context("node stopped with an error")?;
    if let Some(server) = server {
        server.shutdown().await;
    }
    match reason {
        rota::StopReason::Restart if exit_to_restart => {
            info!(
                code = EXIT_RESTART,
                "restart command: exiting for the supervisor to start this node again"
            );
            Ok(ExitCode::from(EXIT_RESTART))
        }
        rota::StopReason::Restart => Err(reexec(incarnation)),
        rota::StopReason::Shutdown => {
            info!("shutdown command: stopped");
            Ok(ExitCode::SUCCESS)
        }
        rota::StopReason::Stopped => Ok(ExitCode::SUCCESS),
    }
}

/// Replaces this process with a fresh start of the same binary and arguments; returns only
/// on failure.
fn reexec(incarnation: i64) -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return anyhow::anyhow!("restart: cannot find this program's path: {e}"),
    };
    info!(exe = %exe.display(), "restart command: re-executing");
    let error = std::process::Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .env(REEXEC_ENV, incarnation.to_string())
        .exec();
    anyhow::anyhow!("restart: cannot re-execute {}: {error}", exe.display())
}

fn report(path: &Path, problems: Vec<rota_cli::config::ConfigProblem>) -> ExitCode {
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
/// Returns the control that `set_log_level` commands use.
pub(crate) fn init_logging(format: &str, level: &str) -> rota::node::LogLevelControl {
    use tracing_subscriber::{fmt, prelude::*, reload, EnvFilter};
    let configured = format!("rota={level},warn");
    let initial = move || {
        EnvFilter::try_from_env("ROTA_LOG").unwrap_or_else(|_| EnvFilter::new(configured.clone()))
    };
    let (filter, handle) = reload::Layer::new(initial());
    let registry = tracing_subscriber::registry().with(filter);
    if format == "json" {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .init();
    } else {
        registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .init();
    }
    Arc::new(move |wanted: Option<&str>| {
        let filter = match wanted {
            Some(l) => EnvFilter::new(format!("rota={l},warn")),
            None => initial(),
        };
        handle.reload(filter).map_err(|e| e.to_string())
    })
}
