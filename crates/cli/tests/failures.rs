//! When work fails or runs long, with real processes on every store: a failed fire is run
//! again with its backoff, attempt by attempt under the fence, across a kill of its owner
//! between two attempts; and each overlap rule (`skip`, `queue`, `replace`) with tasks that
//! run longer than their period never runs two instances of one task at once.

mod common;

use std::{path::Path, time::Duration};

use common::{eventually, wait_alive, Kind, TestStore, LONG};
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
    let at = (now_ms() / 1000 + 12) * 1000;
    let tasks = format!(
        "[[task]]\nname = \"flaky\"\ncron = \"{cron}\"\nretry = {{ max = 3, backoff = \"4s\", max_backoff = \"8s\" }}\n\
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
        attempt3_start - attempt2_end >= 7_900,
        "attempt 3 waits the doubled backoff (8 s) after attempt 2 failed: {} ms",
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
        let waited = records("queues", Outcome::Skipped, "already waiting").await?;
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

on_every_store!(
    a_failed_fire_is_retried_with_its_backoff_across_a_kill,
    overlap_rules_never_run_two_at_once,
);
