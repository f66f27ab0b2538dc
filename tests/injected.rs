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
    let body = serde_json::json!({
        "op": "pause", "task": "held", "scope": "cluster",
        "targets": ["node-1"], "issued_by": "test",
    });
    let (seq, _) = s
        .store
        .append_command("injected", &body.to_string())
        .await
        .unwrap();
    until(
        "the command is applied, once its acknowledgement gets through",
        || async {
            let acks = s
                .store
                .command_acks("injected", rota::store::AckFilter::Commands(&[seq]))
                .await
                .ok()?;
            acks.iter().any(|a| a.state.is_final()).then_some(())
        },
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
