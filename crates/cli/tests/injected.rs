//! Faults placed exactly by a wrapping store ([`common::faulty`]): a reply lost after its
//! commit, a store error in the middle of a run. Each test failed before its fix.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{
    faulty::{Fault, FaultyStore},
    TestStore,
};
use rota::{store::Store, FireContext, Node, NodeHandle, Outcome, Schedule, TaskSpec, Timing};
use tokio::sync::Semaphore;

/// Generous on a busy 2-core machine: these tests are about what happens, not how fast.
const WAIT: Duration = Duration::from_secs(30);

fn timing() -> Timing {
    Timing {
        node_timeout: Duration::from_secs(3),
        ..Timing::default()
    }
}

/// Starts and ends of fires, written by the handler itself: `(instant, start, end)` in
/// store-independent monotonic time.
#[derive(Default)]
struct Runs(Mutex<Vec<(i64, tokio::time::Instant, Option<tokio::time::Instant>)>>);

impl Runs {
    fn starts(&self) -> Vec<i64> {
        self.0.lock().unwrap().iter().map(|r| r.0).collect()
    }

    /// Two runs that overlap in time, if any.
    fn overlap(&self) -> Option<(i64, i64)> {
        let runs = self.0.lock().unwrap();
        for (i, a) in runs.iter().enumerate() {
            for b in &runs[i + 1..] {
                let a_end = a.2.unwrap_or(tokio::time::Instant::now());
                let b_end = b.2.unwrap_or(tokio::time::Instant::now());
                if a.1 < b_end && b.1 < a_end {
                    return Some((a.0, b.0));
                }
            }
        }
        None
    }
}

/// A task every second whose first fire holds until `release` gets a permit.
fn held_task(runs: Arc<Runs>, release: Arc<Semaphore>) -> TaskSpec {
    TaskSpec::new(
        "held",
        Schedule::every(Duration::from_secs(1)).unwrap(),
        move |ctx: FireContext| {
            let (runs, release) = (runs.clone(), release.clone());
            async move {
                let first = {
                    let mut r = runs.0.lock().unwrap();
                    r.push((ctx.instant_ms, tokio::time::Instant::now(), None));
                    r.len() == 1
                };
                if first {
                    release.acquire().await.unwrap().forget();
                }
                let mut r = runs.0.lock().unwrap();
                if let Some(run) = r
                    .iter_mut()
                    .find(|x| x.0 == ctx.instant_ms && x.2.is_none())
                {
                    run.2 = Some(tokio::time::Instant::now());
                }
                Ok(())
            }
        },
    )
}

async fn start(store: Arc<dyn Store>, url: &str, task: TaskSpec) -> NodeHandle {
    Node::builder("node-1", "injected", url)
        .store(store)
        .timing(timing())
        .task(task)
        .start()
        .await
        .expect("the node starts")
}

async fn until<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    common::eventually(what, WAIT, None, check).await
}

/// Appends a command to the cluster's log, as `rota ctl` would; its sequence number.
async fn issue(s: &TestStore, body: serde_json::Value) -> i64 {
    let (seq, _) = s
        .store
        .append_command("injected", &body.to_string())
        .await
        .unwrap();
    seq
}

/// Waits until node-1 has acknowledged command `seq` as applied (or failed).
async fn until_applied(what: &str, s: &TestStore, seq: i64) {
    until(what, || async {
        let acks = s
            .store
            .command_acks("injected", rota::store::AckFilter::Commands(&[seq]))
            .await
            .ok()?;
        acks.iter().any(|a| a.state.is_final()).then_some(())
    })
    .await;
}

/// An operator's `pause` of the task `held` on node-1.
fn pause_held() -> serde_json::Value {
    serde_json::json!({
        "op": "pause", "task": "held", "scope": "cluster",
        "targets": ["node-1"], "issued_by": "test",
    })
}

/// Contract 10: a join that committed but whose reply was lost is retried, and the retry
/// finds the node's own registration: it is joined, not refused as a duplicate of itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_whose_reply_was_lost_is_not_refused_as_a_duplicate() {
    let s = TestStore::sqlite().await;
    let store = FaultyStore::new(s.store.clone());
    store.plan("join", Fault::LoseReply);
    let runs = Arc::new(Runs::default());
    let release = Arc::new(Semaphore::new(100));
    let node = start(store.clone(), &s.url, held_task(runs.clone(), release)).await;
    assert_eq!(store.struck("join"), 1, "the first reply was lost");
    let view = s.store.view("injected").await.unwrap();
    assert_eq!(view.nodes.len(), 1);
    assert_eq!(view.nodes[0].incarnation, node.status().incarnation);
    until("the node fires", || async {
        (runs.starts().len() >= 2).then_some(())
    })
    .await;
    node.shutdown().await.unwrap();
}

/// A join that succeeds after attempts that took longer than the node timeout holds a full
/// lease from the attempt that succeeded: the node does not fence itself the moment it has
/// joined (it used to count its lease from the first attempt, already spent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_that_took_several_tries_starts_with_a_whole_lease() {
    let s = TestStore::sqlite().await;
    let store = FaultyStore::new(s.store.clone());
    let timeout = timing().node_timeout;
    store.plan("join", Fault::FailAfter(timeout + Duration::from_secs(1)));
    // The first renewal is slow: until it comes back, the join's lease is all there is.
    store.plan("heartbeat", Fault::DelayReply(Duration::from_secs(1)));
    let runs = Arc::new(Runs::default());
    let release = Arc::new(Semaphore::new(100));
    let node = start(store.clone(), &s.url, held_task(runs.clone(), release)).await;
    assert_eq!(store.struck("join"), 1, "the first attempt timed out");
    let watched = tokio::time::Instant::now();
    while watched.elapsed() < timeout {
        assert!(
            node.status().active,
            "the node lost its lease {:?} after joining",
            watched.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    node.shutdown().await.unwrap();
}

/// Contract 11: an instant that falls due while the previous run goes on waits for it and
/// starts when it ends, within the misfire threshold; it is not recorded as skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instant_due_while_the_previous_run_goes_on_starts_when_it_ends() {
    let s = TestStore::sqlite().await;
    let runs = Arc::new(Runs::default());
    let release = Arc::new(Semaphore::new(0));
    let node = start(
        s.store.clone(),
        &s.url,
        held_task(runs.clone(), release.clone()),
    )
    .await;
    let first = until("the first fire starts", || async {
        runs.starts().first().copied()
    })
    .await;
    // The next instant is due, and then some: the old runner recorded it as skipped here.
    until("the next instant is due", || async {
        let now = s.store.now_ms().await.ok()?;
        (now > first + 1500).then_some(())
    })
    .await;
    assert_eq!(runs.starts(), vec![first], "no second run beside the first");
    release.add_permits(1);
    until("the next instant starts", || async {
        runs.starts().contains(&(first + 1000)).then_some(())
    })
    .await;
    node.shutdown().await.unwrap();
    let history = s
        .store
        .history("injected", Some("held"), 100)
        .await
        .unwrap();
    let second = history
        .iter()
        .find(|f| f.instant_ms == first + 1000)
        .unwrap();
    assert_ne!(second.outcome, Outcome::Skipped, "{second:?}");
    assert_eq!(runs.overlap(), None, "two runs of one task overlapped");
}

/// Contract 11: a runner restarted after a transient store error does not start the task
/// beside a run of it still going on the same node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_restarted_after_a_store_error_waits_for_the_run_still_going() {
    let s = TestStore::sqlite().await;
    let store = FaultyStore::new(s.store.clone());
    let runs = Arc::new(Runs::default());
    let release = Arc::new(Semaphore::new(0));
    let node = start(
        store.clone(),
        &s.url,
        held_task(runs.clone(), release.clone()),
    )
    .await;
    let first = until("the first fire starts", || async {
        runs.starts().first().copied()
    })
    .await;
    // The claim of the next instant fails: the runner stops and is restarted.
    store.plan("claim_batch", Fault::Fail);
    until("the claim failed", || async {
        (store.struck("claim_batch") == 1).then_some(())
    })
    .await;
    // The restarted runner has had time to come back (1 s pause) and claim what is due.
    until("a few instants passed", || async {
        let now = s.store.now_ms().await.ok()?;
        (now > first + 3500).then_some(())
    })
    .await;
    assert_eq!(
        runs.overlap(),
        None,
        "a second run started beside the first"
    );
    release.add_permits(1);
    until("the task fires again", || async {
        (runs.starts().len() >= 2).then_some(())
    })
    .await;
    node.shutdown().await.unwrap();
    assert_eq!(runs.overlap(), None, "two runs of one task overlapped");
}

/// A service whose work runs in child processes it manages, as `file_inbound`'s commands
/// do (so the work guard does not end the node's process when its lease runs out): it asks
/// for one item, writes down what `begin_item` decided, and hands the item over if told to.
struct OneItem {
    decisions: Arc<Mutex<Vec<String>>>,
}

impl rota::ServiceHandler for OneItem {
    fn run(&self, ctx: rota::ServiceContext) -> rota::service::ServiceFuture {
        let decisions = self.decisions.clone();
        Box::pin(async move {
            let start = ctx.begin_item("item-1").await;
            decisions.lock().unwrap().push(format!("{start:?}"));
            if let Ok(rota::ItemStart::Handle { attempt }) = start {
                ctx.end_item("item-1", attempt, &Ok(())).await.ok();
            }
            ctx.cancel.cancelled().await;
            Ok(())
        })
    }

    fn in_process(&self) -> bool {
        false
    }
}

/// Contract 4 for service items (hole 4): a node frozen between an item claim's commit and
/// its reply, for longer than its lease, does not hand the item over when it resumes: the
/// claim is checked again after the reply, and the item is the next owner's (here, this
/// node's next incarnation's, as attempt 2). The node runs on the test's one thread, and
/// the store blocks that thread after the claim commits: the whole node is frozen, as under
/// SIGSTOP, and the reply is the first thing it sees when it thaws. Before the fix the old
/// incarnation was told to handle the item as attempt 1.
#[tokio::test(flavor = "current_thread")]
async fn an_item_claim_whose_reply_comes_after_a_freeze_past_the_lease_is_not_handled() {
    let s = TestStore::sqlite().await;
    let store = FaultyStore::new(s.store.clone());
    // Longer than the 3 s node timeout: the store expires the node meanwhile.
    store.plan(
        "claim_item",
        Fault::FreezeAfterCommit(Duration::from_millis(4500)),
    );
    let decisions = Arc::new(Mutex::new(Vec::new()));
    let service = rota::ServiceSpec::new(
        "items",
        OneItem {
            decisions: decisions.clone(),
        },
    )
    .recovery(rota::RecoveryPolicy::Retry);
    let node = Node::builder("node-1", "injected", &s.url)
        .store(store.clone())
        .timing(timing())
        .service(service)
        .start()
        .await
        .expect("the node starts");
    let first_incarnation = node.status().incarnation;
    until("the item is handed over", || async {
        decisions
            .lock()
            .unwrap()
            .iter()
            .any(|d| d.contains("Handle"))
            .then_some(())
    })
    .await;
    let seen = decisions.lock().unwrap().clone();
    assert_eq!(
        seen,
        ["Ok(NotOwner)", "Ok(Handle { attempt: 2 })"],
        "the frozen claim is not handed over; the next incarnation hands the item over once"
    );
    assert_eq!(
        store.replied("claim_item"),
        1,
        "the claim's reply came late"
    );
    assert_ne!(
        node.status().incarnation,
        first_incarnation,
        "the lease was lost"
    );
    node.shutdown().await.unwrap();
}

/// A command the node cannot apply yet (its acknowledgement fails, as when the store is
/// slow) holds back starts only: a service already running goes on, and is not restarted.
/// Before, every runner stopped until the node had applied the command: a file handler's
/// file was given back and handled again (a 1000-fault MariaDB campaign, 8 files).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_not_yet_applied_does_not_stop_the_work_that_runs() {
    let s = TestStore::sqlite().await;
    let store = FaultyStore::new(s.store.clone());
    let starts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = starts.clone();
    let service = rota::ServiceSpec::new("listener", move |ctx: rota::ServiceContext| {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            ctx.cancel.cancelled().await;
            Ok(())
        }
    });
    let runs = Arc::new(Runs::default());
    let node = Node::builder("node-1", "injected", &s.url)
        .store(store.clone())
        .timing(timing())
        .task(held_task(runs, Arc::new(Semaphore::new(100))))
        .service(service)
        .start()
        .await
        .expect("the node starts");
    until("the service runs", || async {
        (starts.load(std::sync::atomic::Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    for _ in 0..5 {
        store.plan("ack_command", Fault::Fail);
    }
    let seq = issue(&s, pause_held()).await;
    until_applied(
        "the command is applied, once its acknowledgement gets through",
        &s,
        seq,
    )
    .await;
    assert!(
        store.struck("ack_command") >= 1,
        "an acknowledgement failed"
    );
    assert_eq!(
        starts.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the service was stopped and started again by a command about a task"
    );
    node.shutdown().await.unwrap();
}

/// A service that hands one item over at each start, holds it until told to stop, then
/// gives it back, writing down what `begin_item` and `release_item` said.
struct HeldItem {
    said: Arc<Mutex<Vec<String>>>,
}

impl rota::ServiceHandler for HeldItem {
    fn run(&self, ctx: rota::ServiceContext) -> rota::service::ServiceFuture {
        let said = self.said.clone();
        Box::pin(async move {
            let start = ctx.begin_item("item-1").await;
            said.lock().unwrap().push(format!("begin {start:?}"));
            if let Ok(rota::ItemStart::Handle { attempt }) = start {
                ctx.cancel.cancelled().await;
                let given = ctx.release_item("item-1", attempt).await;
                said.lock().unwrap().push(format!("release {given:?}"));
                return Ok(());
            }
            ctx.cancel.cancelled().await;
            Ok(())
        })
    }

    fn in_process(&self) -> bool {
        false
    }
}

/// Starts node-1 with `service` (a [`HeldItem`]) and waits until the item is handed over.
/// Renewals every second with a 6 s node timeout: a renewal sent at `t` gives a lease until
/// `t + 5.8 s`, and the one before it one until `t + 4.8 s`, so a renewal answered between
/// the two leaves a gap of up to 1 s that the store never sees.
async fn start_held_item(
    store: &Arc<FaultyStore>,
    url: &str,
    service: rota::ServiceSpec,
    said: &Arc<Mutex<Vec<String>>>,
) -> NodeHandle {
    let node = Node::builder("node-1", "injected", url)
        .store(store.clone())
        .timing(Timing {
            heartbeat: Duration::from_secs(1),
            node_timeout: Duration::from_secs(6),
            ..Timing::default()
        })
        .service(service)
        .start()
        .await
        .expect("the node starts");
    until("the item is handed over", || async {
        (said.lock().unwrap().len() == 1).then_some(())
    })
    .await;
    node
}

/// An item whose handler was cut short because its node's lease ran out is not given back
/// as after a graceful handover, even though a late renewal restores the lease: the node
/// records it as its recovery policy says (here `abandon`: abandoned, never handled again),
/// at once, instead of leaving it `running` for whoever comes next (a 1000-fault SQLite
/// campaign: a file handled again as attempt 2 after its handler was killed at a lapse).
/// The lease lapses for about 800 ms: one renewal is answered 5.6 s after it was sent,
/// within its 5.8 s budget but after the deadline the previous one gave (4.8 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_interrupted_by_a_lapse_of_the_lease_is_not_given_back() {
    for (recovery, release, next) in [
        (
            rota::RecoveryPolicy::Abandon,
            "release Ok(false)",
            "begin Ok(Done(Abandoned))",
        ),
        (
            rota::RecoveryPolicy::Retry,
            "release Ok(true)",
            "begin Ok(Handle { attempt: 2 })",
        ),
    ] {
        let s = TestStore::sqlite().await;
        let store = FaultyStore::new(s.store.clone());
        let said = Arc::new(Mutex::new(Vec::new()));
        let service =
            rota::ServiceSpec::new("items", HeldItem { said: said.clone() }).recovery(recovery);
        let node = start_held_item(&store, &s.url, service, &said).await;
        let incarnation = node.status().incarnation;
        store.plan("heartbeat", Fault::DelayReply(Duration::from_millis(5600)));
        until("the service runs again after the lapse", || async {
            (said.lock().unwrap().len() >= 3).then_some(())
        })
        .await;
        let said = said.lock().unwrap().clone();
        assert_eq!(
            said,
            ["begin Ok(Handle { attempt: 1 })", release, next],
            "{recovery:?}: the item is settled by the recovery policy, not given back"
        );
        assert_eq!(
            node.status().incarnation,
            incarnation,
            "the late renewal restored the lease: the node did not rejoin"
        );
        node.shutdown().await.unwrap();
    }
}

/// The same when the lapse goes unnoticed: the node is frozen past its lease deadline and
/// thaws with the renewal's reply, which restores the lease before the fence watchdog looks
/// (here, a one-thread runtime blocked after the renewal's commit). Nothing was cancelled,
/// but the item's handover was not covered by one unbroken lease, so stopping the service
/// afterwards (an operator's `stop`, graceful in itself) does not give the item back: it is
/// abandoned. Before, it was released and handled again as attempt 2.
#[tokio::test(flavor = "current_thread")]
async fn an_item_handled_across_an_unnoticed_lapse_is_not_given_back() {
    let s = TestStore::sqlite().await;
    let store = FaultyStore::new(s.store.clone());
    let said = Arc::new(Mutex::new(Vec::new()));
    let service = rota::ServiceSpec::new("items", HeldItem { said: said.clone() });
    let node = start_held_item(&store, &s.url, service, &said).await;
    let incarnation = node.status().incarnation;
    // Frozen 5.2 s after a renewal's commit: past the 4.8 s the previous renewal gave,
    // within this one's 5.8 s.
    store.plan(
        "heartbeat",
        Fault::FreezeAfterCommit(Duration::from_millis(5200)),
    );
    until("the renewal was answered", || async {
        (store.replied("heartbeat") == 1).then_some(())
    })
    .await;
    assert_eq!(said.lock().unwrap().len(), 1, "nothing noticed the lapse");
    for op in ["stop", "start"] {
        let body = serde_json::json!({
            "op": op, "service": "items", "scope": "cluster",
            "targets": ["node-1"], "issued_by": "test",
        });
        issue(&s, body).await;
        if op == "stop" {
            until("the service stopped", || async {
                (said.lock().unwrap().len() >= 2).then_some(())
            })
            .await;
        }
    }
    until("the service runs again", || async {
        (said.lock().unwrap().len() >= 3).then_some(())
    })
    .await;
    assert_eq!(
        *said.lock().unwrap(),
        [
            "begin Ok(Handle { attempt: 1 })",
            "release Ok(false)",
            "begin Ok(Done(Abandoned))"
        ],
        "the item is abandoned, not given back"
    );
    assert_eq!(node.status().incarnation, incarnation, "no rejoin");
    node.shutdown().await.unwrap();
}

/// A pause applied while a fire's begin is on its way to the store stops that fire from
/// starting: the runner looks again once the begin is answered, and records the instant as
/// not started (a ZooKeeper campaign: a `long` run started 3.3 s after its pause was
/// applied, its begin slowed by the store). A fire with nothing to wait for is begun by its
/// claim, so the claim is the write slowed here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_applied_while_a_begin_is_on_its_way_stops_that_start() {
    let s = TestStore::sqlite().await;
    let store = FaultyStore::new(s.store.clone());
    let runs = Arc::new(Runs::default());
    let node = start(
        store.clone(),
        &s.url,
        held_task(runs.clone(), Arc::new(Semaphore::new(1000))),
    )
    .await;
    until("the task runs", || async {
        (!runs.starts().is_empty()).then_some(())
    })
    .await;
    store.plan("claim_batch", Fault::DelayReply(Duration::from_secs(5)));
    until("a begin is on its way", || async {
        (store.struck("claim_batch") == 1).then_some(())
    })
    .await;
    let seq = issue(&s, pause_held()).await;
    until_applied("the pause is applied", &s, seq).await;
    let started = runs.starts().len();
    assert_eq!(
        store.replied("claim_batch"),
        0,
        "the pause was applied before the begin's reply (else the test proves nothing)"
    );
    until(
        "the slowed begin is answered and nothing is running",
        || async {
            let history = s.store.history("injected", Some("held"), 20).await.ok()?;
            (store.replied("claim_batch") == 1
                && history.iter().all(|f| f.outcome != Outcome::Running))
            .then_some(())
        },
    )
    .await;
    assert_eq!(
        runs.starts().len(),
        started,
        "a fire started after its task's pause was applied"
    );
    let history = s.store.history("injected", Some("held"), 20).await.unwrap();
    let stopped = history
        .iter()
        .find(|f| {
            f.message
                .as_deref()
                .is_some_and(|m| m.contains("stopped as it began"))
        })
        .expect("the instant is recorded as not started");
    assert_eq!(stopped.outcome, Outcome::Misfired);
    assert_eq!(
        stopped.started_at_ms, None,
        "a fire stopped before its work started keeps no start time in the history"
    );
    node.shutdown().await.unwrap();
}

/// One file whose claim keeps failing (a record the store cannot read, a file that cannot
/// be moved) does not hold up the others: it is tried after them at each poll. Before, every
/// sweep stopped at the first failing file in name order: a ZooKeeper campaign left 20,845
/// files in the inbox behind one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_keeps_failing_does_not_hold_up_the_others() {
    let s = TestStore::sqlite().await;
    let store = FaultyStore::new(s.store.clone());
    store.fail_items("a-stuck");
    let inbox = s.dir.path().join("in");
    std::fs::create_dir_all(&inbox).unwrap();
    for name in ["a-stuck", "b", "c"] {
        std::fs::write(inbox.join(name), name).unwrap();
    }
    let handler = rota::kinds::file_inbound::FileHandler::Command(
        rota::kinds::CommandTask::new(vec!["true".into()], Default::default(), None).unwrap(),
    );
    let node = Node::builder("node-1", "injected", &s.url)
        .store(store.clone())
        .timing(timing())
        .service(common::file_inbound(&inbox, handler).into_spec("inbound"))
        .start()
        .await
        .expect("the node starts");
    until("the other files are handled", || async {
        (common::names_in(&inbox.join("done")) == ["b", "c"]).then_some(())
    })
    .await;
    assert!(
        inbox.join("a-stuck").exists(),
        "the failing file stays in the inbox"
    );
    assert!(
        store
            .item_failures
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 1
    );
    node.shutdown().await.unwrap();
}
