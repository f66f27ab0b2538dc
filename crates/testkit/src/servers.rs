//! Private database servers for tests and benchmarks, from the machine's Debian packages:
//! a temporary data directory, a free port on 127.0.0.1, never the machine's own instance.
//! A server dies with the process that started it (`PR_SET_PDEATHSIG`), and its directory
//! is removed when it is dropped or, after a crash, by the next start.

use std::{
    net::TcpListener,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// A running database server.
pub struct DbServer {
    kind: DbKind,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    /// The admin URL (no database chosen yet for MariaDB: `mysql`).
    admin_url: String,
    /// Extra environment of the server process (for example a [`super::clock::FakeClock`]).
    env: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Postgres,
    MariaDb,
}

/// Why a server could not be started: names what is missing and how to install it.
#[derive(Debug)]
pub struct ServerError(pub String);

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServerError {}

pub(crate) fn err(message: impl Into<String>) -> ServerError {
    ServerError(message.into())
}

/// A free TCP port on 127.0.0.1 (the listener is closed before returning).
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct free ports: each stays bound until all are chosen, since a port let go can
/// be handed out again by the next bind (two nodes of one test were given the same admin
/// port, and the second could not start).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("a bound address").port())
        .collect()
}

fn find_postgres_bin() -> Result<PathBuf, ServerError> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("postgres").exists())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().ok_or_else(|| {
        err("PostgreSQL is not installed: `apt-get install postgresql` (./scripts/test does it)")
    })
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/usr/bin"])
        .map(|d| Path::new(d).join(program))
        .find(|p| p.exists())
}

/// uid/gid of the `postgres` account: PostgreSQL refuses to run as root.
fn postgres_account() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let f: Vec<&str> = line.split(':').collect();
    Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Removes data directories left by crashed test processes.
pub(crate) fn sweep_stale(prefix: &str) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<(), ServerError> {
    let out = cmd.output().map_err(|e| err(format!("{what}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// Spawns `cmd` from a thread that lives as long as the process, so that the child's
/// parent-death signal fires when the process dies, not when some test thread ends.
pub(crate) fn spawn_tied_to_process(mut cmd: Command) -> Result<Child, ServerError> {
    // SAFETY: prctl is async-signal-safe; it runs in the child between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(cmd.spawn());
        loop {
            std::thread::park();
        }
    });
    rx.recv()
        .map_err(|_| err("spawner thread died"))?
        .map_err(|e| err(format!("spawning the server: {e}")))
}

impl DbServer {
    /// Starts a private server of `kind` and waits until it accepts connections.
    pub fn start(kind: DbKind) -> Result<DbServer, ServerError> {
        DbServer::start_with_env(kind, Vec::new())
    }

    /// [`DbServer::start`], the server (and its restarts) with extra environment.
    pub fn start_with_env(
        kind: DbKind,
        env: Vec<(String, String)>,
    ) -> Result<DbServer, ServerError> {
        let prefix = match kind {
            DbKind::Postgres => "rota-pg-",
            DbKind::MariaDb => "rota-mariadb-",
        };
        sweep_stale(prefix);
        let dir =
            std::env::temp_dir().join(format!("{prefix}{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
        let port = free_port();
        let mut server = DbServer {
            kind,
            dir,
            port,
            child: None,
            admin_url: String::new(),
            env,
        };
        match kind {
            DbKind::Postgres => server.init_postgres()?,
            DbKind::MariaDb => server.init_mariadb()?,
        }
        server.launch()?;
        Ok(server)
    }

    pub fn kind(&self) -> DbKind {
        self.kind
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn init_postgres(&mut self) -> Result<(), ServerError> {
        let bin = find_postgres_bin()?;
        let data = self.data();
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args(["-A", "trust", "-U", "rota", "--no-sync", "-E", "UTF8", "-D"])
            .arg(&data);
        if is_root() {
            let (uid, gid) = postgres_account().ok_or_else(|| {
                err("running as root needs the `postgres` account (apt-get install postgresql)")
            })?;
            chown_recursive(&self.dir, uid, gid)?;
            initdb.uid(uid).gid(gid);
        }
        run(
            initdb.stdout(Stdio::piped()).stderr(Stdio::piped()),
            "initdb",
        )?;
        self.admin_url = format!("postgres://rota@127.0.0.1:{}/postgres", self.port);
        Ok(())
    }

    fn init_mariadb(&mut self) -> Result<(), ServerError> {
        let install = which("mariadb-install-db")
            .ok_or_else(|| err("MariaDB is not installed: `apt-get install mariadb-server` (./scripts/test does it)"))?;
        let mut cmd = Command::new(install);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.data().display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ]);
        if is_root() {
            cmd.arg("--user=root");
        }
        run(
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped()),
            "mariadb-install-db",
        )?;
        self.admin_url = format!("mysql://root@127.0.0.1:{}/mysql", self.port);
        Ok(())
    }

    fn launch(&mut self) -> Result<(), ServerError> {
        let log =
            std::fs::File::create(self.dir.join("server.log")).map_err(|e| err(e.to_string()))?;
        let cmd = match self.kind {
            DbKind::Postgres => {
                let bin = find_postgres_bin()?;
                let mut cmd = Command::new(bin.join("postgres"));
                cmd.arg("-D")
                    .arg(self.data())
                    .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-k"])
                    .arg(&self.dir)
                    // A node holds up to eight connections (`POOL_SIZE`, the heartbeat's,
                    // LISTEN, its session lock and a watch) and a leader one more per node
                    // it watches: room for the 100-node scale bench.
                    .args([
                        "-c",
                        "max_connections=1000",
                        "-c",
                        "fsync=on",
                        "-c",
                        "shared_buffers=128MB",
                    ]);
                if is_root() {
                    let (uid, gid) = postgres_account().expect("checked at init");
                    cmd.uid(uid).gid(gid);
                }
                cmd
            }
            DbKind::MariaDb => {
                let mut cmd =
                    Command::new(which("mariadbd").ok_or_else(|| err("mariadbd not found"))?);
                cmd.arg("--no-defaults")
                    .arg(format!("--datadir={}", self.data().display()))
                    .arg(format!(
                        "--socket={}",
                        self.dir.join("mysqld.sock").display()
                    ))
                    .arg(format!(
                        "--pid-file={}",
                        self.dir.join("mysqld.pid").display()
                    ))
                    .args(["--bind-address=127.0.0.1", &format!("--port={}", self.port)])
                    .args([
                        "--skip-name-resolve",
                        "--max-connections=1000",
                        "--innodb-buffer-pool-size=128M",
                    ]);
                if is_root() {
                    cmd.arg("--user=root");
                }
                cmd
            }
        };
        let mut cmd = cmd;
        cmd.envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| err(e.to_string()))?)
            .stderr(log);
        self.child = Some(spawn_tied_to_process(cmd)?);
        self.wait_ready(Duration::from_secs(60))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), ServerError> {
        let deadline = Instant::now() + timeout;
        let ready = match self.kind {
            DbKind::Postgres => "database system is ready to accept connections",
            DbKind::MariaDb => "ready for connections",
        };
        loop {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            if log.contains(ready) && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Err(err(format!(
                    "the server exited ({status}) before it was ready:\n{log}"
                )));
            }
            if Instant::now() >= deadline {
                return Err(err(format!(
                    "the server was not ready after {timeout:?}:\n{log}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Creates a fresh database and returns its URL.
    pub async fn create_database(&self, name: &str) -> Result<String, ServerError> {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&self.admin_url)
            .await
            .map_err(|e| err(format!("connecting: {e}")))?;
        let statement = format!("CREATE DATABASE {name}");
        sqlx::query(&statement)
            .execute(&mut conn)
            .await
            .map_err(|e| err(format!("{statement}: {e}")))?;
        let _ = conn.close().await;
        Ok(self.url_of(name, self.port))
    }

    /// The URL of database `name` through `port` (the server's own, or a proxy's).
    pub fn url_of(&self, name: &str, port: u16) -> String {
        match self.kind {
            DbKind::Postgres => format!("postgres://rota@127.0.0.1:{port}/{name}"),
            DbKind::MariaDb => format!("mysql://root@127.0.0.1:{port}/{name}"),
        }
    }

    /// Stops the server abruptly (SIGKILL): a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts the server on the same port and data: a clean, fast shutdown (every client
    /// connection is dropped), then a start.
    pub fn restart(&mut self) -> Result<(), ServerError> {
        if let Some(mut child) = self.child.take() {
            // PostgreSQL: SIGINT is its fast shutdown. MariaDB: SIGTERM.
            let signal = if self.kind == DbKind::Postgres {
                libc::SIGINT
            } else {
                libc::SIGTERM
            };
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, signal) };
            let _ = child.wait();
        }
        self.launch()
    }
}

impl Drop for DbServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn chown_recursive(path: &Path, uid: u32, gid: u32) -> Result<(), ServerError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| err(format!("chown {}: {e}", path.display())))?;
    if path.is_dir() {
        for e in std::fs::read_dir(path)
            .map_err(|e| err(e.to_string()))?
            .flatten()
        {
            chown_recursive(&e.path(), uid, gid)?;
        }
    }
    Ok(())
}
