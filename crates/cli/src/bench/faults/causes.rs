//! Each kind of fault: how the campaign causes it (signals, proxies, store restarts, clock
//! steps, operator commands) and undoes it.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{bail, Context};
use rand::Rng;
use rota_testkit::{
    clock::FakeClock, poll, proxy::CutProxy, servers::ServerError, zookeeper::ZkEnsemble,
    ProcessCluster,
};

use super::super::{
    bench_store::{BenchStore, PrivateServer},
    measure::owners,
};
use super::campaign::*;
use super::check::{ExitHow, Fault, FaultKind, ProcessExit};
use super::workload::*;

/// How long a restarted ZooKeeper server of an ensemble is left before the next is killed.
const ZK_RESYNC_SETTLE: Duration = Duration::from_secs(5);

/// How long a frozen node or a cut stays so: well over the default node timeout (1 s).
pub(super) const HOLD_MS: std::ops::Range<u64> = 2000..4000;

/// Added latency each way on a slowed link: over the default node timeout (1 s).
pub(super) const SLOW_MS: std::ops::Range<u64> = 1200..3000;

/// How far a node's wall clock is skewed, either way: up to five minutes.
pub(super) const SKEW_MS: std::ops::Range<i64> = 1000..300_000;

/// How far the store's clock steps, either way: the documented bound is 2 s.
pub(super) const STEP_MS: std::ops::Range<i64> = 200..2001;

/// How long an operator's `rota ctl` may take (a rolling restart of every node included).
pub(super) const CTL_TIMEOUT: Duration = Duration::from_secs(180);

/// How many servers the ensemble has.
pub(super) fn zk_servers(zk: &ZkEnsemble) -> usize {
    zk.hosts().split(',').count()
}

/// Ports of the private server(s) the nodes reach, if the campaign started them.
pub(super) fn server_ports(server: Option<&PrivateServer>) -> Vec<u16> {
    match server {
        Some(PrivateServer::Db(db)) => vec![db.port()],
        Some(PrivateServer::ZooKeeper(zk)) => (0..zk_servers(zk)).map(|i| zk.port(i)).collect(),
        None => Vec::new(),
    }
}

/// `url` with every `127.0.0.1:from` replaced by `127.0.0.1:to`.
pub(super) fn via_proxies(url: &str, ports: &[(u16, u16)]) -> String {
    let mut url = url.to_string();
    for (from, to) in ports {
        for end in ["/", ","] {
            url = url.replace(
                &format!("127.0.0.1:{from}{end}"),
                &format!("127.0.0.1:{to}{end}"),
            );
        }
    }
    url
}

/// Every node's proxies to the store's servers, from the start, so that any node can be cut;
/// each node's store URL goes through its own.
pub(super) async fn proxies(
    cluster: &mut ProcessCluster,
    run: &BenchStore,
    ids: &[String],
) -> anyhow::Result<BTreeMap<String, Vec<CutProxy>>> {
    let ports = server_ports(run.server.as_ref());
    let mut proxies = BTreeMap::new();
    for id in ids {
        let mut own = Vec::new();
        for &port in &ports {
            own.push(CutProxy::start(port).await?);
        }
        let map: Vec<(u16, u16)> = ports
            .iter()
            .copied()
            .zip(own.iter().map(|p| p.port()))
            .collect();
        cluster
            .store_url_of
            .insert(id.clone(), via_proxies(&run.url, &map));
        proxies.insert(id.clone(), own);
    }
    Ok(proxies)
}

impl Campaign {
    /// `rota ctl ARGS` through the admin API of node `via`. `Err`: its output, when it did
    /// not succeed.
    pub(super) async fn ctl(&self, via: &str, args: &[&str]) -> Result<(), String> {
        let Some(admin) = &self.admin else {
            return Err("no admin API".into());
        };
        let url = format!("http://127.0.0.1:{}", admin.ports[via]);
        let run = tokio::process::Command::new(&self.exe)
            .arg("ctl")
            .args(args)
            .args(["--url", &url])
            .env("ROTA_TOKEN", &admin.token)
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(CTL_TIMEOUT, run).await {
            Ok(Ok(out)) if out.status.success() => Ok(()),
            Ok(Ok(out)) => Err(format!(
                "rota ctl {} via {via}: {}: {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Ok(Err(e)) => Err(format!("cannot run rota ctl: {e}")),
            Err(_) => Err(format!(
                "rota ctl {} via {via}: no answer within {CTL_TIMEOUT:?}",
                args.join(" ")
            )),
        }
    }

    /// Any node but `not`.
    pub(super) fn other_node(&mut self, not: &str) -> String {
        let others: Vec<&String> = self.ids.iter().filter(|n| *n != not).collect();
        others[self.rng.random_range(0..others.len())].clone()
    }

    /// A drain of a node, through another node's API, held for a while, then undone.
    pub(super) async fn drain(&mut self) -> anyhow::Result<Fault> {
        let (target, owned, how) = self.choose_node().await;
        let via = self.other_node(&target);
        let f = self.fault(
            FaultKind::Drain,
            &target,
            owned,
            format!("{how}; via {via}"),
        );
        Ok(self
            .held_command(f, &via, ["drain", &target], ["undrain", &target])
            .await)
    }

    /// A cluster-wide pause of a task, held for a while, then resumed.
    pub(super) async fn pause(&mut self) -> anyhow::Result<Fault> {
        let task = self.task_names[self.rng.random_range(0..self.task_names.len())].clone();
        let via = self.any_node();
        let mut f = self.fault(FaultKind::Pause, &task, Vec::new(), format!("via {via}"));
        f.pid = None;
        Ok(self
            .held_command(f, &via, ["pause", &task], ["resume", &task])
            .await)
    }

    /// `rota ctl APPLY` through node `via`, held for a while, then `rota ctl UNDO`: fault `f`
    /// applied then (unless the command failed), ending at the undo.
    pub(super) async fn held_command(
        &mut self,
        mut f: Fault,
        via: &str,
        apply: [&str; 2],
        undo: [&str; 2],
    ) -> Fault {
        match self.idempotent_ctl(via, &apply).await {
            Ok(()) => f.applied_ms = Some(now_ms()),
            Err(e) => f.failed = Some(e),
        }
        self.hold().await;
        f.end_ms = now_ms();
        if let Err(e) = self.idempotent_ctl(via, &undo).await {
            f.failed.get_or_insert(e);
        }
        f
    }

    /// [`Campaign::ctl`] for a command that may be repeated (pause, drain and their undoing),
    /// asked again for up to 15 s while the API answers 503: the store unreachable, or the
    /// cluster's view in flux under a fault, as a user's script would retry.
    async fn idempotent_ctl(&self, via: &str, args: &[&str]) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            match self.ctl(via, args).await {
                Err(e) if e.contains("(HTTP 503)") && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                done => return done,
            }
        }
    }

    /// Sleeps for a random time in [`HOLD_MS`]: how long a fault lasts.
    pub(super) async fn hold(&mut self) {
        let hold = self.rng.random_range(HOLD_MS);
        tokio::time::sleep(Duration::from_millis(hold)).await;
    }

    /// Any node.
    pub(super) fn any_node(&mut self) -> String {
        self.ids[self.rng.random_range(0..self.ids.len())].clone()
    }

    /// Every node restarted once, one at a time (each re-executes itself: same process id).
    pub(super) async fn rolling_restart(&mut self) -> anyhow::Result<Fault> {
        let via = self.any_node();
        let mut f = self.fault(
            FaultKind::RollingRestart,
            "all nodes",
            Vec::new(),
            format!("via {via}"),
        );
        if let Err(e) = self.ctl(&via, &["rolling-restart"]).await {
            f.failed = Some(e);
        }
        f.end_ms = now_ms();
        f.applied_ms = Some(f.end_ms);
        Ok(f)
    }

    /// A target node: the owner of a random task, the leader, or any node. Returns it, the
    /// tasks it owns, and how it was chosen.
    pub(super) async fn choose_node(&mut self) -> (String, Vec<String>, String) {
        let name = self.cluster.cluster().to_string();
        let store = self.run.store.clone();
        let owners = owners(&store, &name).await.unwrap_or_default();
        let leader = store
            .view(&name)
            .await
            .ok()
            .and_then(|v| v.leader)
            .map(|l| l.node);
        let (target, how) = match self.rng.random_range(0..3) {
            0 if !owners.is_empty() => {
                let (task, node) = &owners[self.rng.random_range(0..owners.len())];
                (node.clone(), format!("owner of {task}"))
            }
            1 if leader.as_ref().is_some_and(|l| self.ids.contains(l)) => {
                (leader.clone().unwrap_or_default(), "leader".to_string())
            }
            _ => (self.any_node(), "any node".to_string()),
        };
        let owned = owners
            .into_iter()
            .filter(|(t, n)| *n == target && t != super::workload::SPARSE_TASK)
            .map(|(t, _)| t)
            .collect();
        let how = if leader.as_deref() == Some(target.as_str()) && how != "leader" {
            format!("{how}, the leader")
        } else {
            how
        };
        (target, owned, how)
    }

    /// A fault on `target` (its current process, if it is a node), starting now.
    pub(super) fn fault(
        &self,
        kind: FaultKind,
        target: &str,
        owned: Vec<String>,
        note: String,
    ) -> Fault {
        Fault {
            kind,
            target: target.to_string(),
            pid: self.cluster.pid(target),
            start_ms: now_ms(),
            end_ms: 0,
            recovered_ms: None,
            owned,
            note,
            applied_ms: None,
            failed: None,
            second_pid: None,
        }
    }

    pub(super) fn respawn(&mut self, node: &str) -> anyhow::Result<()> {
        let config = self.cluster.config_path(node);
        self.cluster.spawn_with_config(node, &config)?;
        Ok(())
    }

    /// SIGKILL; the new process starts at once (its start proves the old one dead: the fast
    /// path), or only once the old one's tasks started elsewhere (detection by timeout).
    pub(super) async fn kill(&mut self) -> anyhow::Result<Fault> {
        let (target, owned, how) = self.choose_node().await;
        let mut f = self.fault(FaultKind::Kill, &target, owned, how);
        self.cluster.kill(&target);
        f.start_ms = now_ms();
        self.exits.push(ProcessExit {
            node: target.clone(),
            pid: f.pid.unwrap_or_default(),
            at_ms: f.start_ms,
            how: ExitHow::Killed,
        });
        if self.rng.random_bool(0.5) {
            f.note.push_str("; restarted at once");
        } else {
            let moved = poll(RECOVERY, || {
                self.tail.update();
                std::future::ready(
                    self.tail
                        .all_started_after(&f.owned, f.start_ms)
                        .then_some(()),
                )
            })
            .await;
            f.note.push_str(if moved.is_some() {
                "; restarted once its tasks moved"
            } else {
                "; restarted, its tasks never moved"
            });
        }
        self.respawn(&target)?;
        f.end_ms = now_ms();
        Ok(f)
    }

    /// SIGSTOP for longer than the node timeout, then SIGCONT: the zombie.
    pub(super) async fn stop(&mut self) -> anyhow::Result<Fault> {
        let (target, owned, how) = self.choose_node().await;
        let mut f = self.fault(FaultKind::Stop, &target, owned, how);
        self.cluster.signal(&target, libc::SIGSTOP);
        f.start_ms = now_ms();
        self.hold().await;
        f.end_ms = now_ms();
        self.cluster.signal(&target, libc::SIGCONT);
        Ok(f)
    }

    /// SIGTERM, and a new process once the old one exited.
    pub(super) async fn graceful(&mut self) -> anyhow::Result<Fault> {
        let (target, owned, how) = self.choose_node().await;
        let mut f = self.fault(FaultKind::Graceful, &target, owned, how);
        let exit = self.stop_node(&target).await;
        if exit.how != ExitHow::Graceful {
            f.note.push_str("; did not stop within 30 s, killed");
        }
        self.exits.push(exit);
        self.respawn(&target)?;
        f.end_ms = now_ms();
        Ok(f)
    }

    /// A second process started with a live node's config: it must be refused at once
    /// (contract 10), start nothing, and leave the live node running.
    pub(super) async fn duplicate(&mut self) -> anyhow::Result<Fault> {
        // Its tasks are not meant to move: no failover to measure.
        let (target, _owned, how) = self.choose_node().await;
        let mut f = self.fault(FaultKind::Duplicate, &target, Vec::new(), how);
        let log = self.cluster.dir().join(format!("{target}.second.log"));
        let log = std::fs::File::create(&log)?;
        let mut second = tokio::process::Command::new(&self.exe)
            .arg("node")
            .arg("--config")
            .arg(self.cluster.config_path(&target))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        f.second_pid = second.id();
        match tokio::time::timeout(Duration::from_secs(30), second.wait()).await {
            Ok(Ok(status)) if !status.success() => {
                f.note = format!("{}; refused ({status})", f.note);
            }
            Ok(Ok(status)) => {
                f.failed = Some(format!(
                    "the second process exited with {status}, not refused"
                ));
            }
            Ok(Err(e)) => f.failed = Some(format!("cannot wait for the second process: {e}")),
            Err(_) => {
                let _ = second.kill().await;
                f.failed = Some("the second process was not refused within 30 s".into());
            }
        }
        f.end_ms = now_ms();
        Ok(f)
    }

    /// SIGTERM and wait (SIGKILL after 30 s).
    pub(super) async fn stop_node(&mut self, node: &str) -> ProcessExit {
        let pid = self.cluster.pid(node).unwrap_or_default();
        self.cluster.signal(node, libc::SIGTERM);
        let how = match self.cluster.wait_exit(node, Duration::from_secs(30)).await {
            Some(_) => ExitHow::Graceful,
            None => {
                self.cluster.kill(node);
                ExitHow::Killed
            }
        };
        ProcessExit {
            node: node.to_string(),
            pid,
            at_ms: now_ms(),
            how,
        }
    }

    /// The store cut off from one node (`CutAll`: from every node), or one node's
    /// connections severed (`Sever`: their server side closed, the node's side left open
    /// and silent), for longer than the lease.
    pub(super) async fn cut(&mut self, kind: FaultKind) -> anyhow::Result<Fault> {
        let all = kind == FaultKind::CutAll;
        let mut f = if all {
            self.fault(kind, "all nodes", Vec::new(), String::new())
        } else {
            let (target, owned, how) = self.choose_node().await;
            self.fault(kind, &target, owned, how)
        };
        let cut: Vec<&CutProxy> = self
            .proxies
            .iter()
            .filter(|(node, _)| all || **node == f.target)
            .flat_map(|(_, p)| p)
            .collect();
        if kind == FaultKind::Sever {
            cut.iter().for_each(|p| p.sever());
        } else {
            cut.iter().for_each(|p| p.cut());
        }
        f.start_ms = now_ms();
        let hold = self.rng.random_range(HOLD_MS);
        tokio::time::sleep(Duration::from_millis(hold)).await;
        f.end_ms = now_ms();
        cut.iter().for_each(|p| p.heal());
        Ok(f)
    }

    /// One node's link to the store slowed: every byte both ways late by more than the node
    /// timeout, for a while.
    pub(super) async fn slow(&mut self) -> anyhow::Result<Fault> {
        let (target, owned, how) = self.choose_node().await;
        let latency = Duration::from_millis(self.rng.random_range(SLOW_MS));
        let mut f = self.fault(
            FaultKind::Slow,
            &target,
            owned,
            format!("{how}; {} ms each way", latency.as_millis()),
        );
        let links = self.proxies.get(&target).context("no proxy")?;
        links.iter().for_each(|p| p.slow(latency));
        f.start_ms = now_ms();
        self.hold().await;
        f.end_ms = now_ms();
        let links = self.proxies.get(&target).context("no proxy")?;
        links.iter().for_each(|p| p.slow(Duration::ZERO));
        Ok(f)
    }

    /// One node's wall clock stepped by up to five minutes either way, for a while, then
    /// back: nothing the node decides may depend on it.
    pub(super) async fn skew(&mut self) -> anyhow::Result<Fault> {
        // Nothing should move: no failover is measured (a later fault's would be counted).
        let (target, _, how) = self.choose_node().await;
        let offset = self.signed(SKEW_MS);
        let mut f = self.fault(
            FaultKind::Skew,
            &target,
            Vec::new(),
            format!("{how}; {offset:+} ms"),
        );
        let clock = self.clocks.get(&target).context("no clock")?;
        clock.set_offset_ms(offset)?;
        f.start_ms = now_ms();
        self.hold().await;
        f.end_ms = now_ms();
        self.clocks[&target].set_offset_ms(0)?;
        Ok(f)
    }

    /// The store's clock stepped by up to 2 s either way, for a while, then back (two
    /// steps): the private server's, or on SQLite every node's, as the host's clock.
    pub(super) async fn store_step(&mut self) -> anyhow::Result<Fault> {
        let offset = self.signed(STEP_MS);
        let mut f = self.fault(
            FaultKind::StoreStep,
            "store",
            Vec::new(),
            format!("{offset:+} ms"),
        );
        let clocks: Vec<&FakeClock> = match &self.run.server_clock {
            Some(clock) => vec![clock],
            None => self.clocks.values().collect(),
        };
        anyhow::ensure!(!clocks.is_empty(), "no store clock");
        clocks.iter().try_for_each(|c| c.set_offset_ms(offset))?;
        f.start_ms = now_ms();
        let hold = self.rng.random_range(HOLD_MS);
        tokio::time::sleep(Duration::from_millis(hold)).await;
        f.end_ms = now_ms();
        let clocks: Vec<&FakeClock> = match &self.run.server_clock {
            Some(clock) => vec![clock],
            None => self.clocks.values().collect(),
        };
        clocks.iter().try_for_each(|c| c.set_offset_ms(0))?;
        Ok(f)
    }

    /// A value of `range`, either sign.
    pub(super) fn signed(&mut self, range: std::ops::Range<i64>) -> i64 {
        let magnitude = self.rng.random_range(range);
        if self.rng.random_bool(0.5) {
            magnitude
        } else {
            -magnitude
        }
    }

    /// The store's server restarted (every server of an ensemble, one after the other).
    pub(super) async fn restart_store(&mut self) -> anyhow::Result<Fault> {
        let server = self.run.server.take().context("no private server")?;
        let start_ms = now_ms();
        let (server, result) = tokio::task::spawn_blocking(move || {
            let mut server = server;
            let result = match &mut server {
                PrivateServer::Db(db) => db.restart(),
                // One server at a time, each given time to persist what it synced before the
                // next goes: ZooKeeper 3.8 (Debian 12's) can lose committed writes when a
                // follower is killed right after it resynced with the leader
                // (ZOOKEEPER-4646, ZOOKEEPER-4785; fixed in 3.9), as a campaign saw.
                PrivateServer::ZooKeeper(zk) => {
                    let servers = zk_servers(zk);
                    (0..servers).try_for_each(|i| {
                        zk.restart(i)?;
                        if i + 1 < servers {
                            std::thread::sleep(ZK_RESYNC_SETTLE);
                        }
                        Ok(())
                    })
                }
            };
            (server, result)
        })
        .await?;
        self.run.server = Some(server);
        result.context("restarting the store's server")?;
        let mut f = self.fault(FaultKind::RestartStore, "store", Vec::new(), String::new());
        (f.start_ms, f.end_ms) = (start_ms, now_ms());
        Ok(f)
    }

    /// The ZooKeeper ensemble's leader killed, and restarted after a while.
    pub(super) async fn zk_leader(&mut self) -> anyhow::Result<Fault> {
        let Some(PrivateServer::ZooKeeper(mut zk)) = self.run.server.take() else {
            bail!("zk-leader needs a ZooKeeper ensemble");
        };
        let hold = self.rng.random_range(1000..3000);
        let start_ms = now_ms();
        let (zk, result) = tokio::task::spawn_blocking(move || {
            let leader = (0..zk_servers(&zk)).find(|&i| zk.mode(i).as_deref() == Some("leader"));
            let result = match leader {
                Some(i) => {
                    zk.kill(i);
                    std::thread::sleep(Duration::from_millis(hold));
                    zk.restart(i).map(|()| i)
                }
                None => Err(ServerError("the ensemble has no leader".into())),
            };
            (zk, result)
        })
        .await?;
        self.run.server = Some(PrivateServer::ZooKeeper(zk));
        let leader = result.context("killing and restarting the ZooKeeper leader")?;
        let target = format!("zk server {}", leader + 1);
        let mut f = self.fault(
            FaultKind::ZkLeader,
            &target,
            Vec::new(),
            format!("down {hold} ms"),
        );
        (f.start_ms, f.end_ms) = (start_ms, now_ms());
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_go_through_the_proxies() {
        assert_eq!(
            via_proxies("postgres://rota@127.0.0.1:5000/db", &[(5000, 6000)]),
            "postgres://rota@127.0.0.1:6000/db"
        );
        assert_eq!(
            via_proxies(
                "zookeeper://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3/t",
                &[(1, 11), (2, 12), (3, 13)]
            ),
            "zookeeper://127.0.0.1:11,127.0.0.1:12,127.0.0.1:13/t"
        );
    }
}
