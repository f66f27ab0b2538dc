//! The store a benchmark runs on: a URL given, or a private server started for the run and
//! removed with it.

use std::sync::Arc;

use anyhow::bail;
use clap::Args;
use rota::store::{self, Store};

/// Where a benchmark's nodes meet: `--store URL`, a private `--server`, or (neither) a new
/// temporary SQLite file.
#[derive(Args)]
pub struct StoreArgs {
    /// Store URL (default: a new temporary SQLite file).
    #[arg(long, conflicts_with = "server")]
    pub(super) store: Option<String>,
    /// Start a private server for the run: postgres, mariadb, zookeeper, or
    /// zookeeper-ensemble (three servers).
    #[arg(long)]
    pub(super) server: Option<String>,
}

/// One run's store, prepared, with its scratch directory (removed at the end unless
/// `keep`) and the private server, if any, which lives as long as this.
pub(super) struct BenchStore {
    pub(super) dir: std::path::PathBuf,
    pub(super) url: String,
    pub(super) store: Arc<dyn Store>,
    pub(super) server: Option<PrivateServer>,
    /// The private server's wall clock, when it was started on a fake one.
    pub(super) server_clock: Option<rota_testkit::clock::FakeClock>,
    pub(super) keep: bool,
}

impl Drop for BenchStore {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else if let Some(PrivateServer::ZooKeeper(zk)) = &self.server {
            // The server's directory goes with it: its logs stay with the nodes'.
            let _ = zk.copy_logs(&self.dir);
        }
    }
}

impl StoreArgs {
    pub(super) async fn open(&self, bench: &str) -> anyhow::Result<BenchStore> {
        self.open_with(bench, false).await
    }

    /// With `server_clock`, a private server runs on a [`rota_testkit::clock::FakeClock`]
    /// (if libfaketime is installed), so that its clock can be stepped.
    pub(super) async fn open_with(
        &self,
        bench: &str,
        server_clock: bool,
    ) -> anyhow::Result<BenchStore> {
        let dir = std::env::temp_dir().join(format!("rota-{bench}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let server_clock = match (server_clock, &self.server) {
            (true, Some(_)) => rota_testkit::clock::FakeClock::new(dir.join("store-clock.rc"))?,
            _ => None,
        };
        let jvm = matches!(
            self.server.as_deref(),
            Some("zookeeper" | "zookeeper-ensemble")
        );
        let env = match &server_clock {
            Some(c) if jvm => c.env_for_jvm(),
            Some(c) => c.env(),
            None => Vec::new(),
        };
        let (url, server) =
            store_for(self.store.clone(), self.server.as_deref(), &dir, env).await?;
        // A server just started may take a while to serve (a ZooKeeper ensemble electing its
        // first leader on a loaded machine): as patient as a node starting.
        let store = store::retry_transient("opening the store", || async {
            let store = store::open(&url).await?;
            store.prepare(true).await?;
            Ok(store)
        })
        .await?;
        Ok(BenchStore {
            dir,
            url,
            store,
            server,
            server_clock,
            keep: false,
        })
    }
}

/// A server started for a benchmark run: stopped when dropped at its end; the fault
/// campaign also restarts it.
pub(super) enum PrivateServer {
    Db(rota_testkit::servers::DbServer),
    ZooKeeper(rota_testkit::zookeeper::ZkEnsemble),
}

pub(super) async fn store_for(
    url: Option<String>,
    server: Option<&str>,
    dir: &std::path::Path,
    env: Vec<(String, String)>,
) -> anyhow::Result<(String, Option<PrivateServer>)> {
    use rota_testkit::servers::{DbKind, DbServer};
    let kind = match server {
        None => {
            return Ok((
                url.unwrap_or_else(|| format!("sqlite://{}", dir.join("rota.db").display())),
                None,
            ))
        }
        Some(kind @ ("zookeeper" | "zookeeper-ensemble")) => {
            let size = if kind == "zookeeper" { 1 } else { 3 };
            let zk = tokio::task::spawn_blocking(move || {
                rota_testkit::zookeeper::ZkEnsemble::start_with_env(size, env)
            })
            .await??;
            // On stderr: `--json` reports own stdout.
            eprintln!("private ZooKeeper server(s) on {}", zk.hosts());
            return Ok((zk.url("rota-bench"), Some(PrivateServer::ZooKeeper(zk))));
        }
        Some("postgres") => DbKind::Postgres,
        Some("mariadb") | Some("mysql") => DbKind::MariaDb,
        Some(other) => bail!(
            "--server `{other}` is not known; use postgres, mariadb, zookeeper or zookeeper-ensemble"
        ),
    };
    let server = tokio::task::spawn_blocking(move || DbServer::start_with_env(kind, env)).await??;
    let url = server.create_database("rota_bench").await?;
    eprintln!("private {kind:?} server on 127.0.0.1:{}", server.port());
    Ok((url, Some(PrivateServer::Db(server))))
}
