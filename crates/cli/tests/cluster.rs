//! Multi-process tests: real `rota node` processes on one store, killed, frozen, stopped.
//! At most two run at once (`scenario_slot`), so a busy 2-core machine does not starve their
//! leases; timing bounds are generous: the tight numbers live in `rota bench failover`.

mod common;

use std::time::Duration;

use common::*;
use rota_testkit as harness;

async fn kill_of_the_owner_moves_every_task_within_the_bound(kind: Kind) {
    let _slot = scenario_slot().await;
    let s = TestStore::new(kind).await;
    let (mut cluster, record) = three_nodes(&s, "kill-owner").await;
    let (victim, token) = owner(&s.store, "kill-owner", "alpha")
        .await
        .expect("alpha has an owner");
    let from = s.store.now_ms().await.unwrap();
    cluster.kill(&victim);
    let killed_at = s.store.now_ms().await.unwrap();
    let firsts = wait_fired_after(&s.store, &cluster, killed_at, None).await;
    for f in &firsts {
        assert_ne!(f.node, victim, "{} fired on the killed node", f.task);
        assert!(f.token > token, "new owner fires under a newer token");
        let late = f.started_at_ms.unwrap() - f.instant_ms;
        assert!(late < 5_000, "{} resumed {late} ms late", f.task);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let to = s.store.now_ms().await.unwrap() - 1500;
    assert_nothing_silently_missed(&s.store, "kill-owner", from, to).await;
    assert_no_duplicates(&record);
}

/// A killed node's session lock is let go with its connections: a survivor ends its
/// registration and its tasks start elsewhere long before its lease would have run out (a
/// 5 s node timeout here, so that the bound is far from what load can stretch).
async fn a_killed_owner_is_noticed_by_its_session_before_its_lease_runs_out(kind: Kind) {
    let _slot = scenario_slot().await;
    let s = TestStore::new(kind).await;
    let (mut cluster, record) = three_nodes_timed(&s, "session", "node_timeout = \"5s\"\n").await;
    let (victim, _) = owner(&s.store, "session", "alpha").await.unwrap();
    let incarnation = |v: &rota::store::ClusterView| {
        v.nodes
            .iter()
            .find(|n| n.node == victim)
            .map(|n| n.incarnation)
    };
    let before = incarnation(&s.store.view("session").await.unwrap());
    // Killed while its tasks are idle, mid-way between two instants (they fire every
    // second): a fire it had begun would rightly wait for its lease (it may be running
    // still, for all a survivor on another host can tell).
    eventually("the victim's tasks idle", LONG, Some(&cluster), || async {
        let now = s.store.now_ms().await.ok()?;
        let history = s.store.history("session", None, 20).await.ok()?;
        let idle = !history
            .iter()
            .any(|f| f.node == victim && f.outcome == rota::Outcome::Running);
        (idle && (300..600).contains(&now.rem_euclid(1000))).then_some(())
    })
    .await;
    cluster.kill(&victim);
    let killed_at = s.store.now_ms().await.unwrap();
    let firsts = wait_fired_after(&s.store, &cluster, killed_at, None).await;
    let dead = s
        .store
        .view("session")
        .await
        .unwrap()
        .nodes
        .into_iter()
        .find(|n| n.node == victim)
        .unwrap();
    assert_eq!(Some(dead.incarnation), before, "not restarted");
    let lease_end = dead.heartbeat_at_ms + dead.timeout_ms;
    let ended = dead
        .ended_at_ms
        .expect("its registration was ended by its session's end");
    assert!(
        !dead.alive && ended < lease_end,
        "ended at {ended}, lease to {lease_end}"
    );
    for f in &firsts {
        assert_ne!(f.node, victim);
        let started = f.started_at_ms.unwrap();
        assert!(
            started < lease_end,
            "{} started at {started} on {}, after the dead node's lease ({lease_end})",
            f.task,
            f.node
        );
    }
    assert!(
        ["node-1", "node-2", "node-3"]
            .iter()
            .any(|id| cluster.log(id).contains("session lock was let go")),
        "a survivor logged the ending"
    );
    assert_no_duplicates(&record);
}

async fn kill_of_the_leader_elects_another_and_failover_still_works(kind: Kind) {
    let _slot = scenario_slot().await;
    let s = TestStore::new(kind).await;
    let mut cluster = s.cluster("kill-leader");
    let record = cluster.dir().join("fires.log");
    std::fs::create_dir_all(cluster.dir()).unwrap();
    // node-1 declares no task: it leads (first up) while others run the tasks.
    cluster.spawn("node-1", "").unwrap();
    eventually("node-1 leads", LONG, Some(&cluster), || async {
        s.store
            .view("kill-leader")
            .await
            .ok()?
            .leader
            .filter(|l| l.node == "node-1")
    })
    .await;
    for id in ["node-2", "node-3"] {
        cluster.spawn(id, &tasks_toml(&record)).unwrap();
    }
    let t0 = s.store.now_ms().await.unwrap();
    wait_fired_after(&s.store, &cluster, t0, None).await;
    let (owner_before, _) = owner(&s.store, "kill-leader", "alpha").await.unwrap();

    cluster.kill("node-1");
    let killed_at = s.store.now_ms().await.unwrap();
    let leader = eventually("a new leader", LONG, Some(&cluster), || async {
        let v = s.store.view("kill-leader").await.ok()?;
        let l = v.leader?;
        (l.node != "node-1" && v.nodes.iter().any(|n| n.node == l.node && n.alive)).then_some(l)
    })
    .await;
    assert!(leader.epoch > 1);
    // The tasks never stopped: the owner did not change.
    wait_fired_after(&s.store, &cluster, killed_at, Some(&owner_before)).await;

    // Failover still works under the new leader.
    cluster.kill(&owner_before);
    let killed_at = s.store.now_ms().await.unwrap();
    let survivor = if owner_before == "node-2" {
        "node-3"
    } else {
        "node-2"
    };
    wait_fired_after(&s.store, &cluster, killed_at, Some(survivor)).await;
    assert_no_duplicates(&record);
}

async fn frozen_owner_starts_nothing_after_it_wakes(kind: Kind) {
    let _slot = scenario_slot().await;
    let s = TestStore::new(kind).await;
    let (cluster, record) = three_nodes(&s, "freeze").await;
    let (zombie, _) = owner(&s.store, "freeze", "alpha").await.unwrap();
    // The tokens the frozen incarnation holds: work under them after the freeze would be
    // the zombie's. Once awake it rejoins as a new incarnation, which may be given tasks
    // again (under newer tokens) when nobody could take over (SQLite, below).
    let frozen_tokens: std::collections::HashMap<String, i64> = s
        .store
        .assignments("freeze")
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.owner.as_ref().is_some_and(|(n, _)| *n == zombie))
        .map(|a| (a.task, a.token))
        .collect();
    let zombies = |task: &str, token: i64| frozen_tokens.get(task).is_some_and(|t| token <= *t);
    assert!(cluster.signal(&zombie, libc::SIGSTOP));
    let frozen_at = s.store.now_ms().await.unwrap();
    // Frozen well past its lease: the others take over.
    let took_over = harness::poll(Duration::from_secs(10), || {
        fired_after(&s.store, "freeze", frozen_at, None)
    })
    .await;
    match took_over {
        Some(firsts) => {
            assert!(firsts.iter().all(|f| f.node != zombie));
            tokio::time::sleep(Duration::from_secs(2)).await; // stay frozen a little longer
        }
        None => {
            // Only SQLite can stall here: if the process froze inside a write transaction it
            // keeps the database's write lock, and no other process can write until it thaws
            // (documented). Prove that this is the cause; safety is checked below all the same.
            assert_eq!(
                kind,
                Kind::Sqlite,
                "the others did not take over from the frozen owner"
            );
            let write = s.store.purge_history("freeze", 0).await;
            assert!(
                write
                    .as_ref()
                    .is_err_and(|e| e.to_string().contains("locked")),
                "no takeover, yet the store is writable: {write:?}"
            );
        }
    }
    assert!(cluster.signal(&zombie, libc::SIGCONT));
    let thawed_at = s.store.now_ms().await.unwrap();
    // It wakes believing it owns its tasks; its lease says otherwise.
    eventually(
        "the zombie rejoins as a new incarnation",
        LONG,
        Some(&cluster),
        || async {
            let v = s.store.view("freeze").await.ok()?;
            v.nodes
                .iter()
                .any(|n| n.node == zombie && n.alive)
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Nothing was started by the zombie for any instant after it froze: not in the store ...
    let h = s.store.history("freeze", None, 1000).await.unwrap();
    let late: Vec<_> = h
        .iter()
        .filter(|f| f.node == zombie && f.instant_ms > frozen_at && zombies(&f.task, f.token))
        .collect();
    assert!(
        late.is_empty(),
        "the zombie recorded fires after it froze: {late:?}"
    );
    let before_waking: Vec<_> = h
        .iter()
        .filter(|f| {
            f.node == zombie
                && f.started_at_ms
                    .is_some_and(|at| at > frozen_at && at < thawed_at)
        })
        .collect();
    assert!(
        before_waking.is_empty(),
        "fires started on the frozen node while it was frozen: {before_waking:?}"
    );
    // ... nor in the tasks' own record.
    let lines = harness::read_fire_lines(&record);
    let zombie_lines: Vec<_> = lines
        .iter()
        .filter(|l| l.node == zombie && l.instant_ms > frozen_at && zombies(&l.task, l.token))
        .collect();
    assert!(
        zombie_lines.is_empty(),
        "the zombie ran tasks after it froze: {zombie_lines:?}"
    );
    assert_no_duplicates(&record);
    assert_nothing_silently_missed(&s.store, "freeze", frozen_at, thawed_at).await;
    assert!(
        cluster.log(&zombie).contains("lease"),
        "the zombie logged its lost lease"
    );
}

async fn graceful_stop_hands_over_without_a_late_fire(kind: Kind) {
    let _slot = scenario_slot().await;
    let s = TestStore::new(kind).await;
    let (mut cluster, record) = three_nodes(&s, "graceful").await;
    let (leaving, _) = owner(&s.store, "graceful", "alpha").await.unwrap();
    let stop_at = s.store.now_ms().await.unwrap();
    let status = cluster.stop(&leaving, LONG).await.expect("exits");
    assert!(status.success(), "graceful stop exits 0, got {status:?}");
    // The leaving node keeps its tasks until the leader has moved them, which takes more
    // than a second on a loaded machine: its successor's first fires are looked for after 3 s.
    let firsts = wait_fired_after(&s.store, &cluster, stop_at + 3000, None).await;
    for f in &firsts {
        assert_ne!(f.node, leaving);
        let late = f.started_at_ms.unwrap() - f.instant_ms;
        assert!(
            late < 1_000,
            "{} was {late} ms late after a graceful stop",
            f.task
        );
    }
    let v = s.store.view("graceful").await.unwrap();
    assert!(
        v.nodes.iter().all(|n| n.node != leaving),
        "the stopped node left the cluster at once"
    );
    assert_nothing_silently_missed(
        &s.store,
        "graceful",
        stop_at,
        s.store.now_ms().await.unwrap() - 1500,
    )
    .await;
    assert_no_duplicates(&record);
}

async fn a_second_node_with_a_live_id_is_refused(kind: Kind) {
    let _slot = scenario_slot().await;
    let s = TestStore::new(kind).await;
    let mut cluster = s.cluster("dup");
    let record = cluster.dir().join("fires.log");
    std::fs::create_dir_all(cluster.dir()).unwrap();
    cluster.spawn("node-1", &tasks_toml(&record)).unwrap();
    let first = eventually("node-1 alive", LONG, Some(&cluster), || async {
        let v = s.store.view("dup").await.ok()?;
        v.nodes
            .iter()
            .find(|n| n.node == "node-1" && n.alive)
            .map(|n| n.incarnation)
    })
    .await;
    // Same id, another process.
    let config = cluster.config_path("node-1");
    let out = tokio::process::Command::new(common::BIN)
        .arg("node")
        .arg("--config")
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "refused with the documented exit code"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("node id `node-1` is already alive in cluster `dup`"),
        "{stderr}"
    );
    let live_pid = cluster.pid("node-1").unwrap();
    assert!(
        stderr.contains(&format!("registered by pid {live_pid} ")),
        "names the live node's pid {live_pid}: {stderr}"
    );
    let v = s.store.view("dup").await.unwrap();
    assert_eq!(v.nodes.len(), 1);
    assert_eq!(
        v.nodes[0].incarnation, first,
        "the live node was not disturbed"
    );
}

async fn a_crashed_node_restarted_at_once_rejoins_without_waiting(kind: Kind) {
    let _slot = scenario_slot().await;
    let s = TestStore::new(kind).await;
    let (mut cluster, record) = three_nodes(&s, "restart").await;
    let (owner_node, _) = owner(&s.store, "restart", "alpha").await.unwrap();
    let other = ["node-1", "node-2", "node-3"]
        .into_iter()
        .find(|n| *n != owner_node)
        .unwrap();
    let old = s
        .store
        .view("restart")
        .await
        .unwrap()
        .nodes
        .into_iter()
        .find(|n| n.node == other)
        .unwrap();
    cluster.kill(other);
    cluster
        .spawn_with_config(other, &cluster.config_path(other))
        .unwrap();
    let new = eventually(
        "the restarted node is registered again",
        LONG,
        Some(&cluster),
        || async {
            let v = s.store.view("restart").await.ok()?;
            v.nodes
                .into_iter()
                .find(|n| n.node == other && n.alive && n.incarnation != old.incarnation)
        },
    )
    .await;
    assert_ne!(new.incarnation, old.incarnation);
    // Either it found its predecessor's registration still live and replaced it, or (on
    // the SQL stores, usually first) a survivor had ended that registration when the
    // killed process's session lock was let go.
    let ended_by_session = ["node-1", "node-2", "node-3"].iter().any(|id| {
        cluster.log(id).lines().any(|line| {
            line.contains("session lock was let go") && line.contains(&format!("\"{other}\""))
        })
    });
    assert!(
        cluster.log(other).contains("crashed predecessor") || ended_by_session,
        "it waited for its predecessor's registration to expire"
    );
    assert_no_duplicates(&record);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_is_refused_before_joining_with_every_problem_named() {
    let s = TestStore::sqlite().await;
    let dir = s.dir.path();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "[node]\nid = \"node 1\"\ncluster = \"c\"\n[store]\nurl = \"{}\"\n[timing]\nheartbeat = \"fast\"\n\
             [[task]]\nname = \"a\"\ncron = \"0 0 25 * * *\"\ncommand = [\"true\"]\n\
             [[task]]\nname = \"b\"\nevery = \"5s\"\n",
            s.url
        ),
    )
    .unwrap();
    let check = tokio::process::Command::new(common::BIN)
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .await
        .unwrap();
    assert_eq!(check.status.code(), Some(2));
    let text = String::from_utf8_lossy(&check.stderr);
    for field in ["node.id", "timing.heartbeat", "task[0].cron", "task[1]"] {
        assert!(text.contains(field), "`{field}` not named in:\n{text}");
    }
    let node = tokio::process::Command::new(common::BIN)
        .arg("node")
        .arg("--config")
        .arg(&bad)
        .output()
        .await
        .unwrap();
    assert_eq!(node.status.code(), Some(2));
    assert!(
        s.store.view("c").await.unwrap().nodes.is_empty(),
        "nothing joined"
    );
}

async fn a_fire_whose_node_died_mid_run_is_abandoned_by_default_or_retried_on_opt_in(kind: Kind) {
    let _slot = scenario_slot().await;
    let s = TestStore::new(kind).await;
    let mut cluster = s.cluster("midrun");
    // What this test checks is the recovery policy, not timing: a longer lease keeps a stall
    // of the busy CI machine from fencing the survivor mid-retry, which would end the retried
    // fire as "cancelled" (a correct outcome, but not the one under test).
    cluster.timing_toml = "node_timeout = \"3s\"\n".into();
    let record = cluster.dir().join("starts.log");
    std::fs::create_dir_all(cluster.dir()).unwrap();
    let slow = |name: &str, recovery: &str| {
        format!(
            "[[task]]\nname = \"{name}\"\nevery = \"10s\"\n{recovery}\n\
             command = [\"sh\", \"-c\", \"echo $ROTA_TASK $ROTA_FIRE_TIME_MS $ROTA_NODE $ROTA_FENCING_TOKEN $ROTA_ATTEMPT >> {}; sleep 4\"]\n",
            record.display()
        )
    };
    // The second task keeps the default policy: at most once (contract 9).
    let tasks = slow("slow-retry", "recovery = \"retry\"") + &slow("slow-abandon", "");
    cluster.spawn("node-1", &tasks).unwrap();
    eventually("node-1 leads", LONG, Some(&cluster), || async {
        s.store
            .view("midrun")
            .await
            .ok()?
            .leader
            .filter(|l| l.node == "node-1")
    })
    .await;
    cluster.spawn("node-2", &tasks).unwrap();
    // Wait until both tasks are mid-run on node-1, then kill it. The store records a fire as
    // running when it is claimed, and begun just before the command starts: wait for the
    // commands' own start lines too, or the kill can land before node-1's line is written.
    let instant = eventually(
        "both tasks running on node-1",
        Duration::from_secs(30),
        Some(&cluster),
        || async {
            let h = s.store.history("midrun", None, 20).await.ok()?;
            let r: Vec<_> = h
                .into_iter()
                .filter(|f| f.outcome == rota::Outcome::Running && f.node == "node-1")
                .collect();
            if r.len() != 2 || r[0].instant_ms != r[1].instant_ms {
                return None;
            }
            let instant = r[0].instant_ms;
            let started = harness::read_fire_lines(&record)
                .iter()
                .filter(|l| l.node == "node-1" && l.instant_ms == instant)
                .count();
            (started == 2).then_some(instant)
        },
    )
    .await;
    cluster.kill("node-1");
    let settled = eventually(
        "node-2 settles the crashed fires",
        LONG,
        Some(&cluster),
        || async {
            let h = s.store.history("midrun", None, 20).await.ok()?;
            let retry = h.iter().find(|f| {
                f.task == "slow-retry" && f.instant_ms == instant && f.outcome == rota::Outcome::Ok
            })?;
            let abandon = h.iter().find(|f| {
                f.task == "slow-abandon"
                    && f.instant_ms == instant
                    && f.outcome == rota::Outcome::Abandoned
            })?;
            Some((retry.clone(), abandon.clone()))
        },
    )
    .await;
    assert_eq!(
        (settled.0.node.as_str(), settled.0.attempt),
        ("node-2", 2),
        "retried once on the survivor"
    );
    assert!(settled
        .1
        .message
        .as_deref()
        .unwrap_or("")
        .contains("died mid-run"));
    let starts = harness::read_fire_lines(&record);
    let of = |task: &str| {
        starts
            .iter()
            .filter(|l| l.task == task && l.instant_ms == instant)
            .count()
    };
    assert_eq!(
        of("slow-retry"),
        2,
        "started by node-1, then once more by node-2"
    );
    assert_eq!(of("slow-abandon"), 1, "never started again");
}

async fn instants_missed_while_no_node_runs_are_recorded_as_misfired(kind: Kind) {
    let _slot = scenario_slot().await;
    let s = TestStore::new(kind).await;
    let mut cluster = s.cluster("misfire");
    let record = cluster.dir().join("fires.log");
    std::fs::create_dir_all(cluster.dir()).unwrap();
    let tasks = format!(
        "[[task]]\nname = \"once\"\nevery = \"1s\"\nmisfire = \"run-once\"\nmisfire_threshold = \"1s\"\n\
         log = {{ message = \"m\", append_to = \"{0}\" }}\n\
         [[task]]\nname = \"skip\"\nevery = \"1s\"\nmisfire = \"skip\"\nmisfire_threshold = \"1s\"\n\
         log = {{ message = \"m\", append_to = \"{0}\" }}\n",
        record.display()
    );
    cluster.spawn("node-1", &tasks).unwrap();
    let first = eventually("both tasks fired", LONG, Some(&cluster), || async {
        let h = s.store.history("misfire", None, 20).await.ok()?;
        let last = |t: &str| {
            h.iter()
                .filter(|f| f.task == t && f.outcome == rota::Outcome::Ok)
                .map(|f| f.instant_ms)
                .max()
        };
        Some(last("once")?.max(last("skip")?))
    })
    .await;
    cluster.stop("node-1", LONG).await;
    let down_at = s.store.now_ms().await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    cluster
        .spawn_with_config("node-1", &cluster.config_path("node-1"))
        .unwrap();
    let back_at = s.store.now_ms().await.unwrap();
    eventually(
        "misfires recorded for both tasks",
        LONG,
        Some(&cluster),
        || async {
            let h = s.store.history("misfire", None, 100).await.ok()?;
            let misfired = |t: &str| {
                h.iter()
                    .filter(|f| f.task == t && f.outcome == rota::Outcome::Misfired)
                    .count()
            };
            (misfired("once") >= 2 && misfired("skip") >= 3).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let h = s.store.history("misfire", None, 200).await.unwrap();
    // Every instant of the outage has a record; none was started twice.
    for task in ["once", "skip"] {
        let mut t = first + 1000;
        while t < back_at {
            assert!(
                h.iter().any(|f| f.task == task && f.instant_ms == t),
                "{task} at {t} has no record"
            );
            t += 1000;
        }
    }
    // Instants older than the threshold were recorded, not started: every start of either
    // task is at most the threshold late (plus scheduling slack on a busy machine). Which
    // old instant run-once starts when nothing recent is due is covered by `plan_due`'s tests.
    for f in h
        .iter()
        .filter(|f| f.started_at_ms.is_some() && f.instant_ms > down_at)
    {
        let late = f.started_at_ms.unwrap() - f.instant_ms;
        assert!(
            late <= 2_000,
            "{} at {} started {late} ms late",
            f.task,
            f.instant_ms
        );
    }
    assert_no_duplicates(&record);
}

on_stores!(
    [sqlite => Sqlite, postgres => Postgres, mariadb => MariaDb];
    a_killed_owner_is_noticed_by_its_session_before_its_lease_runs_out,
);

on_every_store!(
    kill_of_the_owner_moves_every_task_within_the_bound,
    kill_of_the_leader_elects_another_and_failover_still_works,
    frozen_owner_starts_nothing_after_it_wakes,
    graceful_stop_hands_over_without_a_late_fire,
    a_second_node_with_a_live_id_is_refused,
    a_crashed_node_restarted_at_once_rejoins_without_waiting,
    a_fire_whose_node_died_mid_run_is_abandoned_by_default_or_retried_on_opt_in,
    instants_missed_while_no_node_runs_are_recorded_as_misfired,
);

/// Contract 10 inside one process: a second node with a live id is refused there too (the
/// rule that lets a re-executed process replace its own registration needs its incarnation).
#[tokio::test]
async fn a_second_node_with_a_live_id_in_the_same_process_is_refused() {
    let s = TestStore::sqlite().await;
    let node = |id: &str| {
        rota::Node::builder(id, "same-process", &s.url)
            .store(s.store.clone())
            .timing(rota::Timing {
                node_timeout: Duration::from_secs(5),
                ..rota::Timing::default()
            })
    };
    let first = node("node-1").start().await.unwrap();
    match node("node-1").start().await {
        Err(rota::Error::DuplicateNode { node, .. }) => assert_eq!(node, "node-1"),
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a second node-1 replaced the live one"),
    }
    // The re-execution rule applies to the incarnation it names, and no other.
    match node("node-1").reexecuted_from(1).start().await {
        Err(rota::Error::DuplicateNode { .. }) => {}
        other => panic!("expected a refusal: {:?}", other.err()),
    }
    let live = first.status().incarnation;
    let successor = node("node-1").reexecuted_from(live).start().await.unwrap();
    assert_ne!(successor.status().incarnation, live);
    successor.shutdown().await.unwrap();
    first.force_shutdown();
}

/// The node's secrets in its environment (admin, read and `rota ctl` tokens) do not reach
/// the programs it runs; a task that needs one passes it on purpose in its `env`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn programs_a_node_runs_inherit_none_of_its_secrets() {
    let _slot = scenario_slot().await;
    let s = TestStore::sqlite().await;
    let mut cluster = s.cluster("secrets");
    std::fs::create_dir_all(cluster.dir()).unwrap();
    let secrets = [
        ("ROTA_ADMIN_TOKEN", "admin-secret-0123456789abcdef"),
        ("ROTA_READ_TOKEN", "read-secret-0123456789abcdef"),
        ("ROTA_TOKEN", "ctl-secret-0123456789abcdef"),
    ];
    cluster.env_of.insert(
        "node-1".into(),
        secrets
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    let plain = cluster.dir().join("plain.env");
    let passed = cluster.dir().join("passed.env");
    let dump = |file: &std::path::Path| {
        format!(
            "[\"sh\", \"-c\", \"env > {f}.part && mv {f}.part {f}\"]",
            f = file.display()
        )
    };
    let tasks = format!(
        "[[task]]\nname = \"plain\"\nevery = \"1s\"\ncommand = {}\n\n\
         [[task]]\nname = \"passed\"\nevery = \"1s\"\ncommand = {}\n\
         env = {{ ROTA_READ_TOKEN = \"passed-on-purpose\" }}\n",
        dump(&plain),
        dump(&passed)
    );
    spawn_registered(&mut cluster, &s.store, "node-1", &tasks).await;
    let read = |f: &std::path::Path| std::fs::read_to_string(f).ok();
    let (plain, passed) = eventually("both tasks ran", LONG, Some(&cluster), || async {
        Some((read(&plain)?, read(&passed)?))
    })
    .await;
    assert!(
        plain.contains("ROTA_TASK=plain"),
        "the dump is the task's environment"
    );
    for (name, value) in secrets {
        assert!(
            !plain.contains(value) && !plain.contains(&format!("{name}=")),
            "a task inherited {name}:\n{plain}"
        );
    }
    assert!(
        passed.contains("ROTA_READ_TOKEN=passed-on-purpose"),
        "a task's own env passes a value on purpose:\n{passed}"
    );
    assert!(!passed.contains("admin-secret"), "{passed}");
}

/// `rota_parked_tasks` of an in-process node.
fn parked_tasks(metrics: &rota::metrics::Metrics) -> u64 {
    let text = metrics.render(&rota::metrics::Gauges::default());
    text.lines()
        .find_map(|l| l.strip_prefix("rota_parked_tasks "))
        .and_then(|n| n.parse().ok())
        .expect("rota_parked_tasks is rendered")
}

/// A task with nothing to do for a while gives up its runner ("parks", `Timing::park_after`)
/// and is resumed before its next instant: every instant is started once, a run-now reaches
/// it at once while it is parked (not when it would wake), and it moves to the other node
/// on a graceful stop like any task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_task_fires_every_instant_takes_a_run_now_at_once_and_moves_on_a_stop() {
    use std::sync::{Arc, Mutex};
    let s = TestStore::sqlite().await;
    const PERIOD_MS: i64 = 6000;
    // (instant, node, run-now seq, when it started on this test's clock)
    type Start = (i64, String, Option<i64>, std::time::Instant);
    let starts: Arc<Mutex<Vec<Start>>> = Arc::default();
    let node = |id: &str| {
        let starts = starts.clone();
        rota::Node::builder(id, "parking", &s.url)
            .store(s.store.clone())
            .timing(rota::Timing {
                node_timeout: Duration::from_secs(3),
                // Parks whenever the next instant is more than 2 s ahead; woken 1 s before.
                park_after: Duration::from_secs(2),
                ..rota::Timing::default()
            })
            .task(rota::TaskSpec::new(
                "sparse",
                rota::Schedule::every(Duration::from_millis(PERIOD_MS as u64)).unwrap(),
                move |ctx: rota::FireContext| {
                    let starts = starts.clone();
                    async move {
                        starts.lock().unwrap().push((
                            ctx.instant_ms,
                            ctx.node.clone(),
                            ctx.manual.as_ref().map(|m| m.seq),
                            std::time::Instant::now(),
                        ));
                        Ok(())
                    }
                },
            ))
            .start()
    };
    let first = node("node-1").await.unwrap();
    let second = node("node-2").await.unwrap();
    let owner = eventually("sparse is placed", LONG, None, || async {
        owner(&s.store, "parking", "sparse").await.map(|(n, _)| n)
    })
    .await;
    let (owning, other) = if owner == "node-1" {
        (first, second)
    } else {
        (second, first)
    };
    let owning_metrics = owning.metrics();
    let scheduled = |starts: &[Start]| starts.iter().filter(|s| s.2.is_none()).count();
    eventually("two instants started", LONG, None, || async {
        (scheduled(&starts.lock().unwrap()) >= 2).then_some(())
    })
    .await;
    eventually("the owner's runner parks", LONG, None, || async {
        (parked_tasks(&owning_metrics) == 1).then_some(())
    })
    .await;

    // A run-now while parked starts at once, well before the runner would wake (about
    // 1 s before the next instant, up to 5 s from now).
    let (seq, _) = s
        .store
        .append_command(
            "parking",
            &serde_json::json!({
                "op": "run", "task": "sparse", "scope": "cluster",
                "targets": [owner], "issued_by": "test",
            })
            .to_string(),
        )
        .await
        .unwrap();
    let issued = std::time::Instant::now();
    let started = eventually("the run-now starts", LONG, None, || async {
        let starts = starts.lock().unwrap();
        starts.iter().find(|s| s.2 == Some(seq)).map(|s| s.3)
    })
    .await;
    let waited = started.duration_since(issued);
    let next_wake = Duration::from_millis((PERIOD_MS - 1000) as u64);
    assert!(
        waited < Duration::from_secs(3),
        "the run-now waited {waited:?}: a parked runner must be woken by it, not at its next \
         instant (up to {next_wake:?} later)"
    );

    // A graceful stop of the owner: the other node takes the task over and fires on.
    let before_stop = scheduled(&starts.lock().unwrap());
    owning.shutdown().await.unwrap();
    let other_id = if owner == "node-1" {
        "node-2"
    } else {
        "node-1"
    };
    eventually(
        "two instants start on the other node",
        LONG,
        None,
        || async {
            let starts = starts.lock().unwrap();
            let theirs = starts
                .iter()
                .filter(|s| s.2.is_none() && s.1 == other_id)
                .count();
            (theirs >= 2 && scheduled(&starts) >= before_stop + 2).then_some(())
        },
    )
    .await;
    assert_eq!(
        parked_tasks(&owning_metrics),
        0,
        "the stopped node keeps no parked runner"
    );

    // Every instant from the first to the last started once, on one node or the other.
    let starts = starts.lock().unwrap().clone();
    let mut instants: Vec<i64> = starts
        .iter()
        .filter(|s| s.2.is_none())
        .map(|s| s.0)
        .collect();
    instants.sort();
    let mut unique = instants.clone();
    unique.dedup();
    assert_eq!(unique, instants, "an instant started twice: {starts:?}");
    for pair in instants.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            PERIOD_MS,
            "an instant between {} and {} never started: {starts:?}",
            pair[0],
            pair[1]
        );
    }
    other.shutdown().await.unwrap();
}
