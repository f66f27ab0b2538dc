//! When work fails or runs long, with real processes on every store: a failed fire is run
//! again with its backoff, attempt by attempt under the fence, across a kill of its owner
//! between two attempts; and each overlap rule (`skip`, `queue`, `replace`) with tasks that
//! run longer than their period never runs two instances of one task at once; and each
//! fire's output is kept (its tail), followed live by `rota ctl logs --follow`, and read
//! back from another node after its own died; and alerts reach a real HTTP receiver once
//! each, signed, across a kill of the leader that sends them, the dead man's switch too.

mod common;

use std::{path::Path, time::Duration};

use common::{eventually, spawn_with_admin, wait_alive, Kind, TestStore, LONG, READ_TOKEN};
use rota::Outcome;

/// Unix milliseconds of this host (the stores run here too).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A cron expression (UTC) that fires once a day at the second `at_ms` falls in.
fn daily_at(at_ms: i64) -> String {
    let day_s = at_ms.div_euclid(1000).rem_euclid(86_400);
    format!("{} {} {} * * *", day_s % 60, day_s / 60 % 60, day_s / 3600)
}

/// The lines of `record` split in words, those starting with `word`.
fn lines(record: &Path, word: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|w| w.first().map(String::as_str) == Some(word))
        .collect()
}

/// One instant of a task that fails its first two attempts: attempt 1 on the owner, which
/// is killed between attempts; the survivor runs attempts 2 and 3, the last after the
/// doubled backoff. Each attempt starts once, and the history keeps the attempts.
async fn a_failed_fire_is_retried_with_its_backoff_across_a_kill(kind: Kind) {
    let s = TestStore::new(kind).await;
    let mut cluster = s.cluster("retries");
    std::fs::create_dir_all(cluster.dir()).unwrap();
    let record = cluster.dir().join("attempts.log");
    // Far enough ahead for both nodes to start; a later start still runs it (misfire run-once).
    let at = (now_ms() / 1000 + 8) * 1000;
    let tasks = format!(
        "[[task]]\nname = \"flaky\"\ncron = \"{cron}\"\nretry = {{ max = 3, backoff = \"2s\", max_backoff = \"4s\" }}\n\
         command = [\"sh\", \"-c\", \"echo START $ROTA_FIRE_TIME_MS $ROTA_NODE $ROTA_ATTEMPT $(date +%s%3N) >> {rec}; \
         if [ $ROTA_ATTEMPT -lt 3 ]; then echo END $ROTA_FIRE_TIME_MS $ROTA_NODE $ROTA_ATTEMPT $(date +%s%3N) >> {rec}; exit 3; fi\"]\n",
        cron = daily_at(at),
        rec = record.display()
    );
    for node in ["node-1", "node-2"] {
        cluster.spawn(node, &tasks).unwrap();
        wait_alive(&s.store, &cluster, node).await;
    }
    let (owner, _) = eventually("flaky is placed", LONG, Some(&cluster), || {
        common::owner(&s.store, "retries", "flaky")
    })
    .await;
    let survivor = if owner == "node-1" {
        "node-2"
    } else {
        "node-1"
    };
    let wait = LONG + Duration::from_secs(15);
    // Attempt 1 failed and the store says attempt 2 is next (claimed, not begun): killed in
    // the backoff. (Killed before that write, the fire would be begun and unsettled, and
    // recorded abandoned: nothing tells the next owner that its work failed.)
    eventually("attempt 2 is readied", wait, Some(&cluster), || async {
        let h = s.store.history("retries", Some("flaky"), 10).await.ok()?;
        h.iter()
            .any(|f| f.instant_ms == at && f.attempt == 2 && f.started_at_ms.is_none())
            .then_some(())
    })
    .await;
    cluster.kill(&owner);
    let last = eventually("attempt 3 starts", LONG, Some(&cluster), || async {
        lines(&record, "START").into_iter().find(|l| l[3] == "3")
    })
    .await;
    let history = eventually("attempt 3 is recorded ok", LONG, Some(&cluster), || async {
        let h = s.store.history("retries", Some("flaky"), 10).await.ok()?;
        h.into_iter()
            .find(|f| f.instant_ms == at && f.outcome == Outcome::Ok)
    })
    .await;

    let starts = lines(&record, "START");
    let who: Vec<(&str, &str, &str)> = starts
        .iter()
        .map(|l| (l[1].as_str(), l[2].as_str(), l[3].as_str()))
        .collect();
    let at_text = at.to_string();
    assert_eq!(
        who,
        vec![
            (at_text.as_str(), owner.as_str(), "1"),
            (at_text.as_str(), survivor, "2"),
            (at_text.as_str(), survivor, "3"),
        ],
        "each attempt starts once, the later ones on the survivor"
    );
    let ends = lines(&record, "END");
    let attempt2_end: i64 = ends.iter().find(|l| l[3] == "2").unwrap()[4]
        .parse()
        .unwrap();
    let attempt3_start: i64 = last[4].parse().unwrap();
    assert!(
        attempt3_start - attempt2_end >= 3_900,
        "attempt 3 waits the doubled backoff (4 s) after attempt 2 failed: {} ms",
        attempt3_start - attempt2_end
    );
    assert_eq!(history.attempt, 3, "{history:?}");
    let message = history.message.unwrap_or_default();
    assert!(
        message.contains("attempt 2 failed") && message.contains("attempt 3 ok"),
        "the history keeps the attempts: {message}"
    );
    for node in cluster.nodes() {
        cluster.stop(&node, LONG).await;
    }
}

/// Three tasks every 2 s whose runs take 5 s, one per overlap rule, on one node: `skip`
/// records the instants due during a run as skipped at once; `queue` starts the waiting
/// instant as the run ends and skips the ones due while it waits; `replace` cancels the run
/// going on for each new instant. A lock each run holds for its life shows that no two runs
/// of one task ever overlap.
async fn overlap_rules_never_run_two_at_once(kind: Kind) {
    let s = TestStore::new(kind).await;
    let mut cluster = s.cluster("overlap");
    std::fs::create_dir_all(cluster.dir()).unwrap();
    let record = cluster.dir().join("runs.log");
    let task = |name: &str, rule: &str| {
        format!(
            "[[task]]\nname = \"{name}\"\nevery = \"2s\"\noverlap = \"{rule}\"\nmisfire_threshold = \"30s\"\n\
             command = [\"sh\", \"-c\", \"exec 9>>{dir}/$ROTA_TASK.lock; flock -n 9 || echo OVERLAP $ROTA_TASK $ROTA_FIRE_TIME_MS >> {rec}; \
             echo START $ROTA_TASK $ROTA_FIRE_TIME_MS $(date +%s%3N) >> {rec}; sleep 5; echo END $ROTA_TASK $ROTA_FIRE_TIME_MS $(date +%s%3N) >> {rec}\"]\n",
            dir = cluster.dir().display(),
            rec = record.display()
        )
    };
    let tasks = [
        task("skips", "skip"),
        task("queues", "queue"),
        task("replaces", "replace"),
    ]
    .concat();
    cluster.spawn("node-1", &tasks).unwrap();
    wait_alive(&s.store, &cluster, "node-1").await;
    let records = |task: &'static str, outcome: Outcome, text: &'static str| {
        let store = s.store.clone();
        async move {
            let h = store.history("overlap", Some(task), 200).await.ok()?;
            Some(
                h.into_iter()
                    .filter(|f| {
                        f.outcome == outcome
                            && f.message.as_deref().unwrap_or_default().contains(text)
                    })
                    .collect::<Vec<_>>(),
            )
        }
    };
    let wait = LONG + Duration::from_secs(20);
    eventually("each rule acted twice", wait, Some(&cluster), || async {
        let skipped = records("skips", Outcome::Skipped, "overlap = skip").await?;
        let waited = records("queues", Outcome::Skipped, "an earlier instant was waiting").await?;
        let replaced = records("replaces", Outcome::Failed, "replaced").await?;
        let queued_ends = lines(&record, "END")
            .iter()
            .filter(|l| l[1] == "queues")
            .count();
        (skipped.len() >= 2 && waited.len() >= 2 && replaced.len() >= 2 && queued_ends >= 3)
            .then_some(())
    })
    .await;
    cluster.stop("node-1", LONG).await;

    assert_eq!(
        lines(&record, "OVERLAP"),
        Vec::<Vec<String>>::new(),
        "two runs of one task at once"
    );
    let starts = lines(&record, "START");
    let ends = lines(&record, "END");
    let times = |task: &str, of: &[Vec<String>]| -> Vec<(i64, i64)> {
        of.iter()
            .filter(|l| l[1] == task)
            .map(|l| (l[2].parse().unwrap(), l[3].parse().unwrap()))
            .collect()
    };
    // skip: recorded at its instant, not after waiting for the run (which takes 5 s).
    let skipped = records("skips", Outcome::Skipped, "overlap = skip")
        .await
        .unwrap();
    for f in &skipped {
        let recorded = f.finished_at_ms.unwrap_or(i64::MAX);
        assert!(recorded - f.instant_ms < 3_000, "skip does not wait: {f:?}");
    }
    // queue: a waiting instant starts as the run before it ends, well after its own time.
    let queue_starts = times("queues", &starts);
    let queue_ends = times("queues", &ends);
    let waited_then_ran = queue_starts.iter().any(|&(instant, started)| {
        started - instant >= 2_000
            && queue_ends
                .iter()
                .any(|&(_, ended)| ended <= started && started - ended < 1_500)
    });
    assert!(
        waited_then_ran,
        "a queued instant starts as the run before it ends: starts {queue_starts:?}, ends {queue_ends:?}"
    );
    // replace: a run is cut short by the next instant, which starts without waiting 5 s.
    let replace_starts = times("replaces", &starts);
    assert!(
        replace_starts.windows(2).any(|w| w[1].1 - w[0].1 < 4_000),
        "a new instant does not wait for the whole run: {replace_starts:?}"
    );
    assert!(
        times("replaces", &ends).len() < replace_starts.len(),
        "replaced runs never reach their end"
    );
    // Nothing missed silently: every instant from the first to the last skipped one has a
    // record, for every rule.
    let (from, to) = (skipped[0].instant_ms, skipped[skipped.len() - 1].instant_ms);
    let history = s.store.history("overlap", None, 1000).await.unwrap();
    for task in ["skips", "queues", "replaces"] {
        for instant in (from..=to).step_by(2000) {
            assert!(
                history
                    .iter()
                    .any(|f| f.task == task && f.instant_ms == instant),
                "{task} at {instant} has no record"
            );
        }
    }
}

/// A fire whose command writes 8.9 KB to stdout (only the last 4 KiB kept), then a line on
/// stderr, then more lines seconds apart: `rota ctl logs --follow` on the other node prints
/// them while the fire runs and ends with it; once the owner is killed, the survivor's API
/// still serves the whole of what was kept.
async fn a_fires_output_is_followed_live_and_read_back_after_its_node_died(kind: Kind) {
    let s = TestStore::new(kind).await;
    let mut cluster = s.cluster("output");
    std::fs::create_dir_all(cluster.dir()).unwrap();
    let at = (now_ms() / 1000 + 8) * 1000;
    let tasks = format!(
        "[[task]]\nname = \"talker\"\ncron = \"{}\"\noutput_limit = 4096\n\
         command = [\"sh\", \"-c\", \"seq 1 2000; echo err-1 >&2; sleep 2; echo line-2; sleep 4; echo done\"]\n",
        daily_at(at)
    );
    let ports: Vec<u16> = (0..2).map(|_| rota_testkit::servers::free_port()).collect();
    for (i, node) in ["node-1", "node-2"].iter().enumerate() {
        spawn_with_admin(&mut cluster, node, &tasks, ports[i]);
        wait_alive(&s.store, &cluster, node).await;
    }
    let (owner, _) = eventually("talker is placed", LONG, Some(&cluster), || {
        common::owner(&s.store, "output", "talker")
    })
    .await;
    let survivor_port = if owner == "node-1" {
        ports[1]
    } else {
        ports[0]
    };
    let running = || async {
        let h = s.store.history("output", Some("talker"), 5).await.ok()?;
        h.into_iter()
            .find(|f| f.instant_ms == at && f.started_at_ms.is_some())
    };
    eventually(
        "the fire starts",
        LONG + Duration::from_secs(15),
        Some(&cluster),
        running,
    )
    .await;

    // Followed from the other node, with a read token.
    let mut follow = tokio::process::Command::new(common::BIN)
        .args(["ctl", "logs", "talker", &at.to_string(), "--follow"])
        .env("ROTA_URL", format!("http://127.0.0.1:{survivor_port}"))
        .env("ROTA_TOKEN", READ_TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = follow.stdout.take().unwrap();
    let printed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = {
        let printed = printed.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                printed.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    eventually(
        "line-2 is printed while the fire runs",
        LONG,
        Some(&cluster),
        || async {
            String::from_utf8_lossy(&printed.lock().unwrap())
                .contains("line-2\n")
                .then_some(())
        },
    )
    .await;
    let fire = running().await.expect("the fire has a record");
    assert_eq!(
        fire.outcome,
        Outcome::Running,
        "followed live, before the fire ended"
    );
    let status = tokio::time::timeout(LONG, follow.wait())
        .await
        .expect("--follow ends with the fire")
        .unwrap();
    assert!(status.success(), "{status}");
    reader.await.unwrap();
    let mut errors = String::new();
    use tokio::io::AsyncReadExt;
    follow
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut errors)
        .await
        .unwrap();
    let printed = String::from_utf8(printed.lock().unwrap().clone()).unwrap();
    assert!(printed.ends_with("line-2\ndone\n"), "{printed}");
    // Followed chunk by chunk: nothing printed twice (the numbers only go up), and what
    // was no longer kept when asked for is skipped, and said.
    let numbers: Vec<i64> = printed.lines().filter_map(|l| l.parse().ok()).collect();
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "printed once each, in order"
    );
    assert!(numbers.len() < 2000, "only the tail is kept");
    assert_eq!(printed.matches("line-2").count(), 1);
    assert!(errors.contains("err-1"), "stderr goes to stderr: {errors}");
    assert!(
        errors.contains("not kept"),
        "what was dropped is said: {errors}"
    );
    assert!(!printed.contains("err-1"));

    // The owner dies; the survivor's API still has what was kept.
    cluster.kill(&owner);
    let api = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{survivor_port}/api/v1/tasks/talker/fires/{at}/output");
    let got: serde_json::Value = serde_json::from_str(
        &api.get(&url)
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    let stdout = got["stdout"].as_str().unwrap();
    let expected_total = (1..=2000)
        .map(|n: i32| n.to_string().len() + 1)
        .sum::<usize>()
        + "line-2\ndone\n".len();
    assert_eq!(got["stdout_bytes"], expected_total, "{got}");
    assert_eq!(stdout.len(), 4096, "the tail, at the limit");
    assert!(stdout.ends_with("1999\n2000\nline-2\ndone\n"), "{stdout}");
    assert_eq!(got["stderr"], "err-1\n");
    assert_eq!(
        (got["done"].as_bool(), got["outcome"].as_str()),
        (Some(true), Some("ok"))
    );
    assert_eq!(
        api.get(format!("{url}?stdout_from=abc"))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        api.get(format!(
            "http://127.0.0.1:{survivor_port}/api/v1/tasks/talker/fires/{}/output",
            at + 1
        ))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap()
        .status(),
        404
    );
    for node in cluster.nodes() {
        cluster.stop(&node, LONG).await;
    }
}

/// One request the test's receiver got: its alert id, signature and body.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    signature: String,
    body: String,
}

/// A plain HTTP/1.1 receiver on 127.0.0.1 that answers 200 to every request and keeps them.
async fn receiver() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<Received>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let keep = keep.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    data.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&data).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let head = text[..end].to_ascii_lowercase();
                    let header = |name: &str| {
                        text[..end]
                            .lines()
                            .find(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
                            .map(|l| l[name.len() + 1..].trim().to_string())
                            .unwrap_or_default()
                    };
                    let length: usize = header("content-length").parse().unwrap_or(0);
                    if data.len() < end + 4 + length {
                        continue;
                    }
                    let body =
                        String::from_utf8_lossy(&data[end + 4..end + 4 + length]).to_string();
                    assert!(head.starts_with("post /hook"), "{head}");
                    keep.lock().unwrap().push(Received {
                        id: header("x-rota-alert-id"),
                        signature: header("x-rota-signature"),
                        body,
                    });
                    let _ = socket
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
            });
        }
    });
    (port, got)
}

/// A task that fails every 2 s and one that never succeeds within its dead man's switch,
/// with a signed webhook for `fire_failed` and `task_overdue`: the leader sends each alert
/// once; it is killed; its successor sends the next ones, and neither repeats one already
/// delivered nor drops one. Every failed fire recorded before the end has its alert.
async fn alerts_reach_a_receiver_once_each_across_a_kill_of_the_leader(kind: Kind) {
    let s = TestStore::new(kind).await;
    let mut cluster = s.cluster("alerts");
    let (port, got) = receiver().await;
    let secret = "s3cret-for-the-test";
    let tasks = format!(
        "[[task]]\nname = \"broken\"\nevery = \"2s\"\ncommand = [\"sh\", \"-c\", \"exit 7\"]\n\
         [[task]]\nname = \"quiet\"\nevery = \"1h\"\nexpect_success_within = \"3s\"\nlog = {{}}\n\
         [[alert]]\nname = \"hook\"\nwebhook = \"http://127.0.0.1:{port}/hook\"\nsecret = \"{secret}\"\nevents = [\"fire_failed\", \"task_overdue\"]\n"
    );
    for node in ["node-1", "node-2"] {
        cluster.spawn(node, &tasks).unwrap();
        wait_alive(&s.store, &cluster, node).await;
    }
    let failed = |got: &[Received]| {
        got.iter()
            .filter(|r| r.id.starts_with("fire_failed-broken-"))
            .count()
    };
    eventually("the first alerts arrive", LONG, Some(&cluster), || async {
        let got = got.lock().unwrap();
        (failed(&got) >= 1 && got.iter().any(|r| r.id.starts_with("task_overdue-quiet-")))
            .then_some(())
    })
    .await;
    let leader = eventually("a leader", LONG, Some(&cluster), || async {
        s.store.view("alerts").await.ok()?.leader.map(|l| l.node)
    })
    .await;
    let before_kill = failed(&got.lock().unwrap());
    cluster.kill(&leader);
    let killed_at = now_ms();
    // Nothing dropped: every failed fire recorded 6 s ago or more has its alert, those of
    // the failover included (one the dead leader had claimed but not sent waits for its
    // claim to go stale, 30 s).
    let missing = |got: &[Received], history: &[rota::store::FireRecord], now: i64| {
        history
            .iter()
            .filter(|f| f.outcome == Outcome::Failed)
            .filter(|f| f.finished_at_ms.unwrap_or(f.instant_ms) <= now - 6_000)
            .map(|f| format!("fire_failed-broken-{}-{}", f.instant_ms, f.attempt))
            .filter(|id| !got.iter().any(|r| r.id == *id))
            .collect::<Vec<_>>()
    };
    eventually(
        "the new leader sends the next alerts, and none is missing",
        LONG + Duration::from_secs(40),
        Some(&cluster),
        || async {
            let history = s.store.history("alerts", Some("broken"), 1000).await.ok()?;
            let got = got.lock().unwrap().clone();
            (failed(&got) >= before_kill + 3 && missing(&got, &history, now_ms()).is_empty())
                .then_some(())
        },
    )
    .await;
    for node in cluster.nodes() {
        cluster.stop(&node, LONG).await;
    }

    let got = got.lock().unwrap().clone();
    let mut ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    let unique: std::collections::BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(
        ids.len(),
        unique.len(),
        "an alert was delivered twice: {ids:?}"
    );
    for r in &got {
        assert_eq!(
            r.signature,
            rota::alerts::signature(secret, r.body.as_bytes()),
            "{r:?}"
        );
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["id"], r.id.as_str());
        assert_eq!(body["cluster"], "alerts");
    }
    assert_eq!(
        got.iter()
            .filter(|r| r.id.starts_with("task_overdue-quiet-"))
            .count(),
        1,
        "the dead man's switch fires once for its overdue period"
    );
    let history = s
        .store
        .history("alerts", Some("broken"), 1000)
        .await
        .unwrap();
    let around_kill = history
        .iter()
        .filter(|f| f.outcome == Outcome::Failed)
        .filter(|f| (killed_at - 3_000..killed_at + 3_000).contains(&f.finished_at_ms.unwrap_or(0)))
        .count();
    eprintln!(
        "{} alerts, {around_kill} about fires that failed within 3 s of the kill",
        got.len()
    );
}

/// A task every second whose runs take 5 s (overlap `queue`): while a run goes on, one
/// instant waits and the next ones come due. Its owner stops gracefully 3 s into a run; the
/// survivor takes over. No instant is left without a record: instants are recorded in order,
/// so the one waiting when the owner stopped is not passed over by the new owner, which
/// resumes after the last record (a campaign once found a later instant recorded `skipped`
/// while the waiting one, stopped, had none).
async fn an_owner_stopping_while_an_instant_waits_leaves_no_instant_unrecorded(kind: Kind) {
    let s = TestStore::new(kind).await;
    let mut cluster = s.cluster("waiting");
    std::fs::create_dir_all(cluster.dir()).unwrap();
    let record = cluster.dir().join("runs.log");
    let tasks = format!(
        "[[task]]\nname = \"slow\"\nevery = \"1s\"\nmisfire_threshold = \"30s\"\n\
         command = [\"sh\", \"-c\", \"echo START $ROTA_FIRE_TIME_MS $(date +%s%3N) >> {}; sleep 5\"]\n",
        record.display()
    );
    for node in ["node-1", "node-2"] {
        cluster.spawn(node, &tasks).unwrap();
        wait_alive(&s.store, &cluster, node).await;
    }
    let (owner, _) = eventually("slow is placed", LONG, Some(&cluster), || {
        common::owner(&s.store, "waiting", "slow")
    })
    .await;
    // 3 s into a run (the second, so that one instant has waited a while).
    let started: i64 = eventually(
        "a run is 3 s old",
        LONG + Duration::from_secs(10),
        Some(&cluster),
        || async {
            let starts = lines(&record, "START");
            let t: i64 = starts.get(1)?[2].parse().ok()?;
            (now_ms() - t >= 3_000).then_some(t)
        },
    )
    .await;
    cluster.stop(&owner, LONG).await;
    let stopped = now_ms();
    assert!(stopped - started < 5_500, "stopped while the run went on");
    // The survivor runs it, and records what passed.
    eventually(
        "the survivor runs slow",
        LONG + Duration::from_secs(10),
        Some(&cluster),
        || async {
            let h = s.store.history("waiting", Some("slow"), 200).await.ok()?;
            h.iter()
                .any(|f| f.node != owner && f.started_at_ms.is_some() && f.instant_ms > stopped)
                .then_some(())
        },
    )
    .await;
    for node in cluster.nodes() {
        cluster.stop(&node, LONG).await;
    }
    let history = s
        .store
        .history("waiting", Some("slow"), 1000)
        .await
        .unwrap();
    let instants: std::collections::BTreeSet<i64> = history.iter().map(|f| f.instant_ms).collect();
    let (first, last) = (*instants.first().unwrap(), *instants.last().unwrap());
    let missing: Vec<i64> = (first..=last)
        .step_by(1000)
        .filter(|t| !instants.contains(t))
        .collect();
    assert!(
        missing.is_empty(),
        "instants with no record: {missing:?}; history: {:?}",
        history
            .iter()
            .map(|f| (f.instant_ms, f.outcome, f.node.clone()))
            .collect::<Vec<_>>()
    );
}

on_every_store!(
    an_owner_stopping_while_an_instant_waits_leaves_no_instant_unrecorded,
    alerts_reach_a_receiver_once_each_across_a_kill_of_the_leader,
    a_failed_fire_is_retried_with_its_backoff_across_a_kill,
    overlap_rules_never_run_two_at_once,
    a_fires_output_is_followed_live_and_read_back_after_its_node_died,
);
