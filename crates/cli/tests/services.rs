//! Long-running services across real `rota node` processes, on every store: a file-inbound
//! service keeps handling files through repeated kills of its owner, and a command service
//! moves with its owner, never running on two nodes at once.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use common::*;
use rota_testkit::ProcessCluster;

const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];
const FILES: usize = 1000;
const KILLS: usize = 4;

/// The complete `word word number number` lines of a record the handlers append to.
fn record_lines<N: std::str::FromStr, M: std::str::FromStr>(
    record: &Path,
) -> Vec<(String, String, N, M)> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut p = l.split_whitespace();
            Some((
                p.next()?.to_string(),
                p.next()?.to_string(),
                p.next()?.parse().ok()?,
                p.next()?.parse().ok()?,
            ))
        })
        .collect()
}

/// `(file, node, token, attempt)` lines written by the file handler.
fn handled(record: &Path) -> Vec<(String, String, i64, i64)> {
    record_lines(record)
}

/// With `recovery = "retry"` (at least once), every file is handed over, and only a file
/// whose owner was killed while handling it is handed over once more.
async fn file_inbound_handles_every_file_once_across_owner_kills(kind: Kind) {
    let _slot = scenario_slot().await;
    let s = TestStore::new(kind).await;
    let name = "inbound";
    let mut cluster = s.cluster(name);
    let inbox = cluster.dir().join("in");
    let record = cluster.dir().join("handled.log");
    std::fs::create_dir_all(&inbox).unwrap();
    let service = format!(
        "[[service]]\nname = \"inbound\"\nrecovery = \"retry\"\n\
         file_inbound = {{ dir = \"{}\", poll = \"50ms\", command = [\"sh\", \"-c\", \
         \"echo $ROTA_FILE_NAME $ROTA_NODE $ROTA_FENCING_TOKEN $ROTA_ATTEMPT >> {}\"] }}\n",
        inbox.display(),
        record.display()
    );
    for n in NODES {
        spawn_registered(&mut cluster, &s.store, n, &service).await;
    }
    // Files are written under a dot name, then renamed into place, as the docs ask.
    for i in 0..FILES {
        let tmp = inbox.join(format!(".f-{i:04}.tmp"));
        std::fs::write(&tmp, format!("payload {i}\n")).unwrap();
        std::fs::rename(&tmp, inbox.join(format!("f-{i:04}.csv"))).unwrap();
    }

    // Kill the owner each time another tenth of the files has been handled, then bring it back.
    let mut killed_tokens = BTreeSet::new();
    for round in 1..=KILLS {
        let target = round * FILES / (KILLS + 2);
        let (owner, token) = eventually(
            &format!("{target} files handled, with a live owner"),
            Duration::from_secs(120),
            Some(&cluster),
            || async {
                let o = owner(&s.store, name, "inbound").await?;
                (handled(&record).len() >= target).then_some(o)
            },
        )
        .await;
        cluster.kill(&owner);
        killed_tokens.insert(token);
        cluster
            .spawn_with_config(&owner, &cluster.config_path(&owner))
            .unwrap();
    }

    let done = inbox.join("done");
    eventually(
        "every file moved to done",
        Duration::from_secs(240),
        Some(&cluster),
        || async { (names_in(&done).len() == FILES && names_in(&inbox).is_empty()).then_some(()) },
    )
    .await;

    let done_names: BTreeSet<String> = names_in(&done).into_iter().collect();
    let expected: BTreeSet<String> = (0..FILES).map(|i| format!("f-{i:04}.csv")).collect();
    assert_eq!(
        done_names, expected,
        "every file in done, once, under its own name"
    );
    assert!(names_in(&inbox.join("failed")).is_empty(), "no file failed");

    let lines = handled(&record);
    let mut per_file: BTreeMap<&str, Vec<(&str, i64, i64)>> = BTreeMap::new();
    for (file, node, token, attempt) in &lines {
        per_file
            .entry(file.as_str())
            .or_default()
            .push((node.as_str(), *token, *attempt));
    }
    assert_eq!(per_file.len(), FILES, "every file was handed over");
    let mut again = Vec::new();
    for (file, handlings) in &per_file {
        let attempts: BTreeSet<i64> = handlings.iter().map(|h| h.2).collect();
        assert_eq!(
            attempts.len(),
            handlings.len(),
            "{file} handed over twice as the same attempt: {handlings:?}"
        );
        if handlings.len() > 1 {
            // Only a file whose owner was killed while handling it is handed over again,
            // once, by the next owner.
            assert_eq!(handlings.len(), 2, "{file}: {handlings:?}");
            assert!(
                killed_tokens.contains(&handlings[0].1),
                "{file} was handed over again though its first owner was not killed: {handlings:?}"
            );
            again.push(*file);
        }
    }
    assert!(
        again.len() <= KILLS,
        "at most one file in flight per kill was handed over again: {again:?}"
    );
    eprintln!(
        "{kind:?}: {FILES} files, {KILLS} owner kills, {} handed over again after a kill",
        again.len()
    );
}

/// `start`/`stop` lines of the command service: `(event, node, token, pid)`.
fn service_events(record: &Path) -> Vec<(String, String, i64, i32)> {
    record_lines(record)
}

fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.split(") ")
        .nth(1)
        .is_some_and(|rest| !rest.starts_with('Z'))
}

/// Waits for a `start` by a live owner other than `not_on` and returns it.
async fn started_elsewhere(
    s: &TestStore,
    cluster: &ProcessCluster,
    record: &Path,
    not_on: &str,
) -> (String, String, i64, i32) {
    eventually(
        &format!("the service started on a node other than {not_on}"),
        LONG,
        Some(cluster),
        || async {
            let (node, token) = owner(&s.store, cluster.cluster(), "listener").await?;
            service_events(record)
                .into_iter()
                .rfind(|e| e.0 == "start" && e.1 == node && e.2 == token && node != not_on)
        },
    )
    .await
}

async fn command_service_moves_with_its_owner_and_never_runs_twice(kind: Kind) {
    let _slot = scenario_slot().await;
    let s = TestStore::new(kind).await;
    let mut cluster = s.cluster("svc");
    let record = cluster.dir().join("service.log");
    std::fs::create_dir_all(cluster.dir()).unwrap();
    // Records its start and (on SIGTERM) its stop, with its pid; runs until told to stop.
    let script = format!(
        "trap 'echo stop $ROTA_NODE $ROTA_FENCING_TOKEN $$ >> {0}; exit 0' TERM; \
         echo start $ROTA_NODE $ROTA_FENCING_TOKEN $$ >> {0}; \
         while true; do sleep 0.05; done",
        record.display()
    );
    let service = format!(
        "[[service]]\nname = \"listener\"\ngrace = \"5s\"\ncommand = [\"sh\", \"-c\", \"{script}\"]\n"
    );
    for n in NODES {
        spawn_registered(&mut cluster, &s.store, n, &service).await;
    }
    let first = started_elsewhere(&s, &cluster, &record, "").await;

    // Killed owner: its process dies with it, and a survivor starts the service.
    cluster.kill(&first.1);
    let second = started_elsewhere(&s, &cluster, &record, &first.1).await;
    assert!(second.2 > first.2, "a newer token");
    eventually(
        "the killed node's service process is gone",
        LONG,
        None,
        || async { (!alive(first.3)).then_some(()) },
    )
    .await;

    // Graceful stop of the owner: its process is asked to stop, and the next owner starts
    // only after it did.
    let stopped = cluster.stop(&second.1, Duration::from_secs(30)).await;
    assert!(
        stopped.is_some_and(|s| s.success()),
        "graceful stop exits 0"
    );
    let third = started_elsewhere(&s, &cluster, &record, &second.1).await;
    let events = service_events(&record);
    let stop_at = events
        .iter()
        .position(|e| e.0 == "stop" && e.3 == second.3)
        .unwrap_or_else(|| panic!("the moved service got SIGTERM and stopped: {events:?}"));
    let start_at = events
        .iter()
        .position(|e| e.0 == "start" && e.3 == third.3)
        .unwrap();
    assert!(
        stop_at < start_at,
        "the new owner started only after the old one stopped: {events:?}"
    );
    // At most one live service process at any time now.
    let live: Vec<_> = events
        .iter()
        .filter(|e| e.0 == "start" && alive(e.3))
        .collect();
    assert_eq!(live.len(), 1, "{events:?}");
}

/// A one-node cluster in this process, on a fresh SQLite store, running `service`.
async fn one_node(s: &TestStore, service: rota::ServiceSpec) -> rota::NodeHandle {
    rota::Node::builder("solo", "lib", &s.url)
        .store(s.store.clone())
        .service(service)
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_service_is_restarted_with_a_growing_backoff() {
    let s = TestStore::sqlite().await;
    let starts = Arc::new(Mutex::new(Vec::<(tokio::time::Instant, u32)>::new()));
    let seen = starts.clone();
    let service = rota::ServiceSpec::new("flaky", move |ctx: rota::ServiceContext| {
        let seen = seen.clone();
        async move {
            seen.lock()
                .unwrap()
                .push((tokio::time::Instant::now(), ctx.restarts));
            Err(rota::TaskError::new("connection refused"))
        }
    })
    .restart_backoff(Duration::from_millis(100), Duration::from_millis(400));
    let node = one_node(&s, service).await;
    let starts = eventually("five starts", LONG, None, || async {
        let v = starts.lock().unwrap().clone();
        (v.len() >= 5).then_some(v)
    })
    .await;
    node.shutdown().await.unwrap();
    let restarts: Vec<u32> = starts.iter().map(|s| s.1).take(5).collect();
    assert_eq!(
        restarts,
        [0, 1, 2, 3, 4],
        "each start knows how many came before"
    );
    // The delays are at least the backoff: 100, 200, 400, then capped at 400 ms.
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1].0 - w[0].0).take(4).collect();
    for (gap, least) in gaps.iter().zip([100u64, 200, 400, 400]) {
        assert!(*gap >= Duration::from_millis(least), "{gaps:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_ignoring_its_cancel_is_dropped_after_its_grace_period() {
    let s = TestStore::sqlite().await;
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let running = Arc::new(AtomicBool::new(false));
    let up = running.clone();
    let service = rota::ServiceSpec::new("stubborn", move |ctx: rota::ServiceContext| {
        let (flag, up) = (flag.clone(), up.clone());
        async move {
            // Sets the flag when the future is dropped, not when it returns.
            struct OnDrop(Arc<AtomicBool>);
            impl Drop for OnDrop {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let _guard = OnDrop(flag);
            assert!(ctx.still_owner());
            up.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
            Ok(())
        }
    })
    .grace(Duration::from_millis(300));
    let node = one_node(&s, service).await;
    eventually("the service runs", LONG, None, || async {
        running.load(Ordering::SeqCst).then_some(())
    })
    .await;
    let began = tokio::time::Instant::now();
    node.shutdown().await.unwrap();
    assert!(
        dropped.load(Ordering::SeqCst),
        "dropped when the node stopped"
    );
    assert!(
        began.elapsed() >= Duration::from_millis(300),
        "after its grace period"
    );
    let h = s.store.history("lib", Some("stubborn"), 5).await.unwrap();
    assert!(
        h[0].message
            .as_deref()
            .unwrap_or("")
            .contains("grace period"),
        "the instance record says why: {h:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_inbound_sends_each_file_to_an_http_endpoint() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestStore::sqlite().await;
    let inbox = s.dir.path().join("in");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(inbox.join("a.txt"), "alpha").unwrap();
    std::fs::write(inbox.join("b.txt"), "refuse me").unwrap();
    // Answers 200, or 500 to a body asking for it; keeps each request.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/in", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::<String>::new()));
    let kept = requests.clone();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let done = text.split_once("\r\n\r\n").is_some_and(|(head, body)| {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length: ")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        body.len() >= len
                    });
                    if n == 0 || done {
                        break;
                    }
                }
                let text = String::from_utf8_lossy(&buf).to_string();
                let status = if text.ends_with("refuse me") {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                kept.lock().unwrap().push(text);
                let reply =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    let handler = rota::kinds::file_inbound::FileHandler::Http(
        rota::kinds::HttpTask::new("POST", &url, &Default::default(), None).unwrap(),
    );
    let node = one_node(&s, file_inbound(&inbox, handler).into_spec("inbound")).await;
    eventually("both files moved", LONG, None, || async {
        (names_in(&inbox).is_empty() && names_in(&inbox.join("done")).len() == 1).then_some(())
    })
    .await;
    node.shutdown().await.unwrap();
    assert_eq!(names_in(&inbox.join("done")), ["a.txt"]);
    assert_eq!(names_in(&inbox.join("failed")), ["b.txt"]);
    let requests = requests.lock().unwrap().clone();
    let a = requests
        .iter()
        .find(|r| r.ends_with("alpha"))
        .expect("a.txt was posted");
    let lower = a.to_ascii_lowercase();
    assert!(lower.starts_with("post /in "), "{a}");
    assert!(lower.contains("x-rota-file-name: a.txt"), "{a}");
    assert!(lower.contains("x-rota-fencing-token: "), "{a}");
    assert_eq!(requests.len(), 2, "each file sent once: {requests:?}");
}

on_every_store!(
    file_inbound_handles_every_file_once_across_owner_kills,
    command_service_moves_with_its_owner_and_never_runs_twice,
);

/// A file whose handling a graceful handover interrupts is given back, not failed: its
/// handler gets SIGTERM (and the service's grace), the file is neither recorded as failed
/// nor moved, and the next owner hands it over again as attempt 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_interrupted_by_a_graceful_stop_is_handed_over_not_failed() {
    let _slot = scenario_slot().await;
    let s = TestStore::sqlite().await;
    let mut cluster = s.cluster("handover");
    let inbox = cluster.dir().join("in");
    let record = cluster.dir().join("handled.log");
    std::fs::create_dir_all(&inbox).unwrap();
    // Attempt 1 takes long and, on SIGTERM, notes it and stops; later attempts are quick.
    let service = format!(
        "[[service]]\nname = \"inbound\"\n\
         file_inbound = {{ dir = \"{}\", poll = \"50ms\", command = [\"sh\", \"-c\", \
         \"echo start $ROTA_NODE $ROTA_ATTEMPT >> {rec}; \
         if [ $ROTA_ATTEMPT = 1 ]; then trap 'echo term $ROTA_NODE >> {rec}; exit 143' TERM; \
         sleep 60 & wait; fi; echo done $ROTA_NODE $ROTA_ATTEMPT >> {rec}\"] }}\n",
        inbox.display(),
        rec = record.display()
    );
    spawn_registered(&mut cluster, &s.store, "node-1", &service).await;
    spawn_registered(&mut cluster, &s.store, "node-2", &service).await;
    std::fs::write(inbox.join(".f.tmp"), "payload\n").unwrap();
    std::fs::rename(inbox.join(".f.tmp"), inbox.join("f.csv")).unwrap();
    let lines = || std::fs::read_to_string(&record).unwrap_or_default();
    eventually(
        "node-1 hands the file over",
        LONG,
        Some(&cluster),
        || async { lines().contains("start node-1 1").then_some(()) },
    )
    .await;

    cluster.stop("node-1", Duration::from_secs(30)).await;
    eventually(
        "node-2 hands the file over again and moves it to done",
        LONG,
        Some(&cluster),
        || async {
            (lines().contains("done node-2 2") && names_in(&inbox.join("done")).len() == 1)
                .then_some(())
        },
    )
    .await;
    let text = lines();
    assert!(
        text.contains("term node-1"),
        "the interrupted handler got SIGTERM:\n{text}"
    );
    assert!(
        !text.contains("done node-1"),
        "node-1 did not finish it:\n{text}"
    );
    assert!(
        names_in(&inbox.join("failed")).is_empty(),
        "an interrupted file is not a failed one"
    );
    let starts = text.lines().filter(|l| l.starts_with("start")).count();
    assert_eq!(
        starts, 2,
        "handed over once more, as attempt 2:
{text}"
    );
}
