//! Private ZooKeeper servers for tests and benchmarks, from Debian's `zookeeper` package: a
//! temporary data directory and free ports on 127.0.0.1, one server or a three-server
//! ensemble. Like the database servers, they die with the process that started them.
//!
//! `tickTime` is 200 ms, so the server accepts session timeouts from 400 ms (2 ticks) to
//! 4 s (20 ticks); rota's default timing needs nothing longer.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::servers::{err, free_port, spawn_tied_to_process, sweep_stale, ServerError};

const JAR: &str = "/usr/share/java/zookeeper.jar";
const TICK_MS: u64 = 200;

/// One ZooKeeper server or an ensemble.
pub struct ZkEnsemble {
    dir: PathBuf,
    members: Vec<Member>,
    /// Extra environment of every server process (for example a
    /// [`super::clock::FakeClock`]).
    env: Vec<(String, String)>,
}

struct Member {
    client_port: u16,
    peer_port: u16,
    election_port: u16,
    child: Option<Child>,
}

impl ZkEnsemble {
    /// Starts `size` servers (1, or 3 for a quorum) and waits until they serve clients.
    pub fn start(size: usize) -> Result<ZkEnsemble, ServerError> {
        ZkEnsemble::start_with_env(size, Vec::new())
    }

    /// [`ZkEnsemble::start`], every server (and its restarts) with extra environment.
    pub fn start_with_env(
        size: usize,
        env: Vec<(String, String)>,
    ) -> Result<ZkEnsemble, ServerError> {
        if !std::path::Path::new(JAR).exists() {
            return Err(err(
                "ZooKeeper is not installed: `apt-get install zookeeper` (./scripts/test does it)",
            ));
        }
        let prefix = "rota-zk-";
        sweep_stale(prefix);
        let dir =
            std::env::temp_dir().join(format!("{prefix}{}-{}", std::process::id(), free_port()));
        let members = (0..size)
            .map(|_| Member {
                client_port: free_port(),
                peer_port: free_port(),
                election_port: free_port(),
                child: None,
            })
            .collect();
        let mut ensemble = ZkEnsemble { dir, members, env };
        for i in 0..size {
            ensemble.write_config(i)?;
        }
        for i in 0..size {
            ensemble.launch(i)?;
        }
        for i in 0..size {
            ensemble.wait_serving(i, ensemble.start_bound())?;
        }
        Ok(ensemble)
    }

    /// How long a server may take to serve: a JVM under libfaketime (extra environment)
    /// starts several times slower, and three at once on a busy 2-core machine took more
    /// than a minute.
    fn start_bound(&self) -> Duration {
        if self.env.is_empty() {
            Duration::from_secs(60)
        } else {
            Duration::from_secs(240)
        }
    }

    fn member_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("zk{}", i + 1))
    }

    fn write_config(&self, i: usize) -> Result<(), ServerError> {
        let dir = self.member_dir(i);
        std::fs::create_dir_all(dir.join("data"))
            .map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
        let m = &self.members[i];
        // Every client comes from 127.0.0.1: no limit of connections per address (60 by
        // default; the 100-node scale bench holds more).
        let mut cfg = format!(
            "tickTime={TICK_MS}\ninitLimit=20\nsyncLimit=10\ndataDir={}\nclientPort={}\n\
             clientPortAddress=127.0.0.1\nminSessionTimeout={}\nmaxSessionTimeout={}\n\
             admin.enableServer=false\n4lw.commands.whitelist=ruok,srvr\n\
             maxClientCnxns=0\n",
            dir.join("data").display(),
            m.client_port,
            2 * TICK_MS,
            20 * TICK_MS
        );
        if self.members.len() > 1 {
            for (j, o) in self.members.iter().enumerate() {
                cfg.push_str(&format!(
                    "server.{}=127.0.0.1:{}:{}\n",
                    j + 1,
                    o.peer_port,
                    o.election_port
                ));
            }
            std::fs::write(dir.join("data/myid"), format!("{}\n", i + 1))
                .map_err(|e| err(e.to_string()))?;
        }
        std::fs::write(dir.join("zoo.cfg"), cfg).map_err(|e| err(e.to_string()))
    }

    fn launch(&mut self, i: usize) -> Result<(), ServerError> {
        let dir = self.member_dir(i);
        let log = std::fs::File::create(dir.join("server.log")).map_err(|e| err(e.to_string()))?;
        let mut cmd = Command::new("java");
        // The server's own pauses (garbage collection, safepoints) in its directory: a node
        // fenced because its renewals were held up is told apart from one held up in
        // itself. (Debian's jar has no logging binding: the server's own log stays empty.)
        cmd.arg("-Xmx256m")
            .arg(format!(
                "-Xlog:gc,safepoint:file={}:uptime,time",
                dir.join("gc.log").display()
            ))
            .arg(format!("-Dzookeeper.log.dir={}", dir.display()))
            .arg("-cp")
            .arg(JAR)
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(dir.join("zoo.cfg"))
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| err(e.to_string()))?)
            .stderr(log);
        self.members[i].child = Some(spawn_tied_to_process(cmd)?);
        Ok(())
    }

    /// Waits until server `i` answers `srvr` as a standalone server, a leader or a follower.
    fn wait_serving(&self, i: usize, timeout: Duration) -> Result<(), ServerError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(mode) = self.mode(i) {
                if ["standalone", "leader", "follower"].contains(&mode.as_str()) {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                let log = std::fs::read_to_string(self.member_dir(i).join("server.log"))
                    .unwrap_or_default();
                let tail: String = log
                    .chars()
                    .rev()
                    .take(2000)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                return Err(err(format!(
                    "ZooKeeper server {} did not start within {timeout:?}: {tail}",
                    i + 1
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `Mode:` of server `i` from its `srvr` command, if it answers.
    pub fn mode(&self, i: usize) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.members[i].client_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"srvr").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.lines()
            .find_map(|l| l.strip_prefix("Mode: "))
            .map(|m| m.trim().to_string())
    }

    /// The client port of server `i`.
    pub fn port(&self, i: usize) -> u16 {
        self.members[i].client_port
    }

    /// `host:port,...` of every server.
    pub fn hosts(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The store URL of a private tree `/name` on this ensemble.
    pub fn url(&self, name: &str) -> String {
        format!("zookeeper://{}/{name}", self.hosts())
    }

    /// Copies every server's log and pause log into `to` (`zk1-server.log`,
    /// `zk1-gc.log`, ...), for a run kept to be read afterwards.
    pub fn copy_logs(&self, to: &std::path::Path) -> std::io::Result<()> {
        for i in 0..self.members.len() {
            for name in ["server.log", "gc.log"] {
                let from = self.member_dir(i).join(name);
                if from.exists() {
                    std::fs::copy(&from, to.join(format!("zk{}-{name}", i + 1)))?;
                }
            }
        }
        Ok(())
    }

    /// Kills server `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `i` again on its ports and data.
    pub fn restart(&mut self, i: usize) -> Result<(), ServerError> {
        self.kill(i);
        self.launch(i)?;
        self.wait_serving(i, self.start_bound())
    }
}

impl Drop for ZkEnsemble {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
