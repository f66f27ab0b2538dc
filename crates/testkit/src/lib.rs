//! # rota-testkit
//!
//! What rota is tested, demonstrated and measured against, never part of what users embed:
//! it must never be a dependency of `rota`, `rota-core` or `rota-admin`, and it imports no
//! rota crate (it drives the binary as a user does).
//!
//! Runs a cluster of `rota node` processes on one machine: the engine of `rota demo`,
//! `rota bench`, and the multi-process tests. Each node gets its own config file and log in
//! a working directory; every child is killed when the cluster is dropped. [`servers`] starts
//! private database servers and [`proxy`] cuts a node off from one.

pub mod browser;
pub mod clock;
pub mod proxy;
pub mod servers;
pub mod zookeeper;

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

/// A cluster of node processes sharing one store.
pub struct ProcessCluster {
    exe: PathBuf,
    dir: PathBuf,
    store_url: String,
    cluster: String,
    /// `[timing]` section written into every node's config (may be empty).
    pub timing_toml: String,
    /// Lines added to every node's `[store]` section (may be empty).
    pub store_toml: String,
    children: BTreeMap<String, Child>,
    /// Per-node store URL (for example through a [`proxy::CutProxy`]).
    pub store_url_of: BTreeMap<String, String>,
    /// Per-node extra environment (for example libfaketime's `LD_PRELOAD` and `FAKETIME`).
    pub env_of: BTreeMap<String, Vec<(String, String)>>,
}

/// One line of an `append_to` record file: an independent record of a fire, written by the
/// task itself, that tests and benchmarks compare with the store's claims.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FireLine {
    pub task: String,
    pub instant_ms: i64,
    pub node: String,
    pub token: i64,
    /// 1 for a first start; more for a re-run after its node died mid-run (recovery `retry`).
    pub attempt: i64,
}

impl ProcessCluster {
    pub fn new(
        exe: impl Into<PathBuf>,
        dir: impl Into<PathBuf>,
        store_url: impl Into<String>,
        cluster: impl Into<String>,
    ) -> Self {
        ProcessCluster {
            exe: exe.into(),
            dir: dir.into(),
            store_url: store_url.into(),
            cluster: cluster.into(),
            timing_toml: String::new(),
            store_toml: String::new(),
            children: BTreeMap::new(),
            store_url_of: BTreeMap::new(),
            env_of: BTreeMap::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn store_url(&self) -> &str {
        &self.store_url
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The config file of `node` with the given `[[task]]` sections.
    pub fn config_text(&self, node: &str, tasks_toml: &str) -> String {
        format!(
            "[node]\nid = \"{node}\"\ncluster = \"{}\"\n\n[store]\nurl = \"{}\"\n{}\n[log]\nformat = \"json\"\nlevel = \"info\"\n\n{}\n\n{tasks_toml}\n",
            self.cluster,
            self.store_url_of.get(node).unwrap_or(&self.store_url),
            self.store_toml,
            if self.timing_toml.is_empty() { String::new() } else { format!("[timing]\n{}", self.timing_toml) }
        )
    }

    pub fn config_path(&self, node: &str) -> PathBuf {
        self.dir.join(format!("{node}.toml"))
    }

    pub fn log_path(&self, node: &str) -> PathBuf {
        self.dir.join(format!("{node}.log"))
    }

    /// Writes `node`'s config and starts it; its output is appended to its log.
    pub fn spawn(&mut self, node: &str, tasks_toml: &str) -> std::io::Result<u32> {
        self.spawn_with_admin(node, tasks_toml, None)
    }

    /// [`ProcessCluster::spawn`], with an `[admin]` section (`listen` on 127.0.0.1:`port`,
    /// and the admin and read tokens, when given) when `admin` is given.
    pub fn spawn_with_admin(
        &mut self,
        node: &str,
        tasks_toml: &str,
        admin: Option<(u16, Option<(&str, &str)>)>,
    ) -> std::io::Result<u32> {
        fs::create_dir_all(&self.dir)?;
        let mut text = self.config_text(node, tasks_toml);
        if let Some((port, tokens)) = admin {
            text.push_str(&format!("\n[admin]\nlisten = \"127.0.0.1:{port}\"\n"));
            if let Some((admin, read)) = tokens {
                text.push_str(&format!("token = \"{admin}\"\nread_token = \"{read}\"\n"));
            }
        }
        let config = self.config_path(node);
        fs::write(&config, text)?;
        self.spawn_with_config(node, &config)
    }

    /// Starts `node` with an existing config file.
    pub fn spawn_with_config(&mut self, node: &str, config: &Path) -> std::io::Result<u32> {
        if let Some(mut old) = self.children.remove(node) {
            let _ = old.kill();
            let _ = old.wait();
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(node))?;
        let mut command = Command::new(&self.exe);
        command.envs(
            self.env_of
                .get(node)
                .into_iter()
                .flatten()
                .map(|(k, v)| (k, v)),
        );
        let child = command
            .arg("node")
            .arg("--config")
            .arg(config)
            .env_remove("ROTA_STORE_URL")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let pid = child.id();
        self.children.insert(node.to_string(), child);
        Ok(pid)
    }

    /// Whether `node` is still running (reaps it if it exited).
    pub fn running(&mut self, node: &str) -> bool {
        match self.children.get_mut(node) {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// How `node`'s process ended, if it has (`None` while it runs or if never started).
    pub fn exit_status(&mut self, node: &str) -> Option<ExitStatus> {
        self.children.get_mut(node)?.try_wait().ok().flatten()
    }

    pub fn pid(&self, node: &str) -> Option<u32> {
        self.children.get(node).map(|c| c.id())
    }

    pub fn nodes(&self) -> Vec<String> {
        self.children.keys().cloned().collect()
    }

    /// Sends a signal (`libc::SIGTERM`, `SIGSTOP`, ...) to `node`.
    pub fn signal(&self, node: &str, signal: i32) -> bool {
        match self.pid(node) {
            // SAFETY: kill(2) on a pid we spawned and have not yet reaped.
            Some(pid) => unsafe { libc::kill(pid as i32, signal) == 0 },
            None => false,
        }
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self, node: &str) -> Option<ExitStatus> {
        let mut child = self.children.remove(node)?;
        let _ = child.kill();
        child.wait().ok()
    }

    /// Waits up to `timeout` for `node` to exit; reaps it if it did.
    pub async fn wait_exit(&mut self, node: &str, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.children.get_mut(node)?;
            if let Ok(Some(status)) = child.try_wait() {
                self.children.remove(node);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM and wait for a graceful exit (SIGKILL after `timeout`).
    pub async fn stop(&mut self, node: &str, timeout: Duration) -> Option<ExitStatus> {
        self.signal(node, libc::SIGTERM);
        match self.wait_exit(node, timeout).await {
            Some(s) => Some(s),
            None => self.kill(node),
        }
    }

    /// The node's log so far.
    pub fn log(&self, node: &str) -> String {
        fs::read_to_string(self.log_path(node)).unwrap_or_default()
    }

    /// Appends a marker line to a node's log (helps reading failures).
    pub fn note(&self, node: &str, text: &str) {
        if let Ok(mut f) = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(node))
        {
            let _ = writeln!(f, "### harness: {text}");
        }
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            // SIGCONT first, in case it was frozen.
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads an `append_to` record file; partial trailing lines are ignored.
pub fn read_fire_lines(path: &Path) -> Vec<FireLine> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut p = line.split_whitespace();
            Some(FireLine {
                task: p.next()?.to_string(),
                instant_ms: p.next()?.parse().ok()?,
                node: p.next()?.to_string(),
                token: p.next()?.parse().ok()?,
                attempt: p.next().map_or(Some(1), |a| a.parse().ok())?,
            })
        })
        .collect()
}

/// Fires started more than once as the same attempt, `(task, instant, attempt)`, with their
/// count. A re-run after a crash mid-run (recovery `retry`) is a new attempt, not a duplicate.
pub fn duplicates(lines: &[FireLine]) -> Vec<((String, i64, i64), usize)> {
    let mut counts: BTreeMap<(String, i64, i64), usize> = BTreeMap::new();
    for l in lines {
        *counts
            .entry((l.task.clone(), l.instant_ms, l.attempt))
            .or_default() += 1;
    }
    counts.into_iter().filter(|(_, c)| *c > 1).collect()
}

/// A `[[task]]` section of the `log` kind that records every fire in `record`.
pub fn log_task_toml(name: &str, every: &str, record: &Path) -> String {
    format!(
        "[[task]]\nname = \"{name}\"\nevery = \"{every}\"\nlog = {{ message = \"fired\", append_to = \"{}\" }}\n\n",
        record.display()
    )
}

/// Polls `check` every 50 ms until it returns `Some`, or `timeout` passes.
pub async fn poll<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
