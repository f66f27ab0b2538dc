//! The web dashboard in a real headless Chromium (driven over WebDriver) against three
//! `rota node` processes on SQLite: it connects with a token and shows the live members and
//! the task's owner, follows a kill -9 of the owner without reloading, refuses an action to
//! the read token and carries it out with the admin token, and opens a fire's output (shown
//! as text, never as markup). Needs Debian's `chromium` and
//! `chromium-driver` (./scripts/test installs them); without them it fails, never skips.

mod common;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use common::{
    eventually, owner, scenario_slot, spawn_with_admin, wait_alive, TestStore, ADMIN_TOKEN, LONG,
    READ_TOKEN,
};
use rota::{
    core::control::Operation,
    store::{AckFilter, AckState},
};
use rota_testkit::{
    self as harness,
    browser::{Browser, BrowserError},
};
use serde_json::{json, Value};

const CLUSTER: &str = "dash";
const TASK: &str = "report";
/// A command task whose output the page opens.
const PRINTER: &str = "printer";
const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];
/// Deadline of each wait on the page: generous, for a busy 2-core machine.
const PAGE: Duration = Duration::from_secs(60);
const MARKER: &str = "set before the kill";

/// A JavaScript string literal of `s`.
fn js(s: &str) -> String {
    Value::from(s).to_string()
}

/// Prints every node's log when the test fails, whatever failed (a wait on the page, an
/// assertion or `eventually`), as the other multi-process tests do.
struct LogsOnFailure(Vec<(String, PathBuf)>);

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (node, path) in &self.0 {
                let log = std::fs::read_to_string(path).unwrap_or_default();
                eprintln!("---- log of {node} ----\n{log}");
            }
        }
    }
}

/// The dashboard in the browser; a failure reports what the page showed.
struct Page {
    browser: Browser,
}

/// What the page shows, for failure reports.
const PAGE_STATE: &str = "
    const q = s => document.querySelector(s);
    const attrs = e => e ? Object.fromEntries([...e.attributes].map(a => [a.name, a.value])) : null;
    const status = q('#action-status');
    return JSON.stringify({
        url: location.href,
        navigations: performance.getEntriesByType('navigation').length,
        marker: window.__rotaTestMarker ?? null,
        token_saved: sessionStorage.getItem('rota.token') !== null,
        live: attrs(q('#live')),
        nodes: [...document.querySelectorAll('#nodes tr[data-node]')].map(attrs),
        gone: [...document.querySelectorAll('#gone [data-gone-node]')].map(attrs),
        tasks: [...document.querySelectorAll('#tasks tr[data-task]')].map(attrs),
        action_status: status ? [attrs(status), status.textContent] : null,
        text: document.body ? document.body.innerText.slice(0, 3000) : null,
    }, null, 1);";

impl Page {
    /// The page's state, a screenshot and the end of chromedriver's log.
    async fn report(&self) -> String {
        let state = match self.browser.execute(PAGE_STATE, &[]).await {
            Ok(Value::String(s)) => s,
            Ok(v) => v.to_string(),
            Err(e) => format!("(cannot read the page: {e})"),
        };
        let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard-failure.png");
        let shot = match self.browser.screenshot(&shot).await {
            Ok(()) => format!("screenshot: {}", shot.display()),
            Err(e) => format!("no screenshot: {e}"),
        };
        let log = self.browser.driver_log();
        let from = log.len().saturating_sub(4000);
        let from = (from..=log.len())
            .find(|i| log.is_char_boundary(*i))
            .unwrap_or(0);
        format!(
            "\n---- the page ----\n{state}\n{shot}\n---- chromedriver log (end) ----\n{}",
            &log[from..]
        )
    }

    async fn ok<T>(&self, result: Result<T, BrowserError>) -> T {
        match result {
            Ok(v) => v,
            Err(e) => {
                let report = self.report().await;
                panic!("{e}{report}")
            }
        }
    }

    async fn wait_within(&self, what: &str, timeout: Duration, expression: &str) -> Value {
        let result = self.browser.wait_for(what, timeout, expression).await;
        self.ok(result).await
    }

    async fn wait(&self, what: &str, expression: &str) -> Value {
        self.wait_within(what, PAGE, expression).await
    }

    async fn run(&self, script: &str) -> Value {
        let result = self.browser.execute(script, &[]).await;
        self.ok(result).await
    }

    async fn click(&self, css: &str) {
        let result = self.browser.click(css).await;
        self.ok(result).await
    }

    /// Types `token` into `#token`, saves it, and checks the page kept it.
    async fn set_token(&self, token: &str) {
        let result = self.browser.type_into("#token", token).await;
        self.ok(result).await;
        self.click("#token-save").await;
        self.wait(
            "the token is saved in sessionStorage `rota.token`",
            &format!("sessionStorage.getItem('rota.token') === {}", js(token)),
        )
        .await;
    }

    /// Clears `#action-status`'s outcome, clicks `css`, and returns the text of the outcome
    /// `result` (`ok` or `error`) once the page shows it.
    async fn act(&self, css: &str, result: &str) -> String {
        self.run(
            "const s = document.querySelector('#action-status');
             if (s) { s.removeAttribute('data-result'); s.textContent = ''; }
             return null;",
        )
        .await;
        self.click(css).await;
        let text = self
            .wait(
                &format!("#action-status[data-result=\"{result}\"] after clicking {css}"),
                &format!(
                    "(() => {{
                        const s = document.querySelector('#action-status[data-result={}]');
                        return s ? (s.textContent.trim() || '(empty)') : null;
                    }})()",
                    js(result)
                ),
            )
            .await;
        text.as_str().unwrap_or_default().to_string()
    }
}

fn nodes_expression(want: &[&str]) -> String {
    let want: Vec<String> = want.iter().map(|n| n.to_string()).collect();
    format!(
        "[...document.querySelectorAll('#nodes tr[data-node]')].map(r => r.getAttribute('data-node'))
            .sort().join(',') === {}",
        js(&want.join(","))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_a_failover_and_guards_its_actions() {
    let _slot = scenario_slot().await;
    let s = TestStore::sqlite().await;
    let mut cluster = s.cluster(CLUSTER);
    // A lease long enough that a stall of the busy machine (Chromium runs beside the nodes)
    // cannot fence a survivor: the page must show exactly the two survivors.
    cluster.timing_toml = "node_timeout = \"3s\"\n".into();
    let _logs = LogsOnFailure(
        NODES
            .iter()
            .map(|n| (n.to_string(), cluster.log_path(n)))
            .collect(),
    );
    let record = cluster.dir().join("fires.log");
    let tasks = format!(
        "{}[[task]]\nname = \"{PRINTER}\"\nevery = \"2s\"\ncommand = [\"sh\", \"-c\", \"echo hello $ROTA_FIRE_TIME_MS; echo '<b>bold</b>'; echo warned >&2\"]\n",
        harness::log_task_toml(TASK, "1s", &record)
    );
    let mut ports = BTreeMap::new();
    for node in NODES {
        let port = harness::servers::free_port();
        spawn_with_admin(&mut cluster, node, &tasks, port);
        wait_alive(&s.store, &cluster, node).await;
        ports.insert(node, port);
    }
    let placed_on = eventually(&format!("{TASK} is placed"), LONG, None, || async {
        owner(&s.store, CLUSTER, TASK).await.map(|(n, _)| n)
    })
    .await;
    // The browser watches a node that will survive the kill of the owner.
    let watched = ["node-2", "node-3", "node-1"]
        .into_iter()
        .find(|n| *n != placed_on)
        .unwrap();
    let base = format!("http://127.0.0.1:{}", ports[watched]);

    let browser = Browser::start()
        .await
        .unwrap_or_else(|e| panic!("cannot start the browser: {e}"));
    let page = Page { browser };
    let goto = page.browser.goto(&format!("{base}/")).await;
    page.ok(goto).await;
    let load = page.browser.page_load_ms().await;
    let load = page.ok(load).await;
    eprintln!(
        "dashboard first load from {watched}: {} bytes ({} document + {} resources) in {:.0} ms",
        load.bytes, load.document_bytes, load.resources, load.ms
    );
    assert!(
        load.bytes > 0 && load.bytes < 1_000_000,
        "the first load weighs {} bytes",
        load.bytes
    );

    // Connected with the read token: three live nodes, the task and its owner.
    page.set_token(READ_TOKEN).await;
    page.wait(
        "the stream connected, with node-1..3 as the live nodes",
        &format!(
            "document.querySelector('#live[data-connected=\"true\"]') !== null && {}",
            nodes_expression(&NODES)
        ),
    )
    .await;
    let row = format!("#tasks tr[data-task=\"{TASK}\"]");
    let shown = page
        .wait(
            &format!("{row} with an owner"),
            &format!(
                "document.querySelector({})?.getAttribute('data-owner')",
                js(&row)
            ),
        )
        .await;
    let killed = shown.as_str().unwrap_or_default().to_string();
    assert!(
        NODES.contains(&killed.as_str()) && killed != watched,
        "the page shows {TASK} on {killed:?} (the store said {placed_on}; the page is {watched}'s)"
    );

    // Kill -9 the owner; the page follows without reloading.
    page.run(&format!(
        "window.__rotaTestMarker = {}; return null;",
        js(MARKER)
    ))
    .await;
    let survivors: Vec<&str> = NODES.into_iter().filter(|n| *n != killed).collect();
    cluster.note(watched, &format!("test: kill -9 {killed}"));
    let kill_at = Instant::now();
    cluster.kill(&killed);
    let new_owner = page
        .wait(
            &format!("2 live nodes and {TASK} on a survivor after the kill of {killed}"),
            &format!(
                "(() => {{
                    const owner = document.querySelector({})?.getAttribute('data-owner');
                    return {} && {}.includes(owner) ? owner : null;
                }})()",
                js(&row),
                nodes_expression(&survivors),
                json!(survivors)
            ),
        )
        .await;
    let took = kill_at.elapsed();
    let new_owner = new_owner.as_str().unwrap_or_default().to_string();
    eprintln!(
        "the page showed {TASK} on {new_owner} {:.2} s after {killed} was killed",
        took.as_secs_f64()
    );
    assert!(
        took < Duration::from_secs(20),
        "the page took {took:?} to show the failover"
    );
    let same_page = page
        .run("return [performance.getEntriesByType('navigation').length, window.__rotaTestMarker ?? null];")
        .await;
    assert_eq!(
        same_page,
        json!([1, MARKER]),
        "the page was reloaded (navigations, marker)"
    );
    page.wait(
        &format!("{killed} listed in #gone"),
        &format!(
            "document.querySelector('#gone li[data-gone-node={}]') !== null",
            js(&killed)
        ),
    )
    .await;
    eventually(
        &format!("the store agrees that {new_owner} owns {TASK}"),
        LONG,
        None,
        || async {
            let now = owner(&s.store, CLUSTER, TASK).await?.0;
            (now == new_owner).then_some(())
        },
    )
    .await;

    // The read token cannot act: the page shows the refusal, and no command is appended.
    let commands_before = s.store.commands(CLUSTER, 0, 1000).await.unwrap().len();
    let pause = format!("{row} button[data-action=\"pause\"]");
    let refused = page.act(&pause, "error").await;
    eprintln!("pause with the read token: {refused}");
    assert!(
        refused.contains("403") || refused.contains("read-only"),
        "#action-status should mention 403 or read-only: {refused}"
    );
    assert_eq!(
        s.store.commands(CLUSTER, 0, 1000).await.unwrap().len(),
        commands_before,
        "the refused pause appended a command"
    );

    // The admin token can: the pause is issued, applied, and shown.
    page.set_token(ADMIN_TOKEN).await;
    page.wait(
        "the stream connected with the admin token",
        "document.querySelector('#live[data-connected=\"true\"]') !== null",
    )
    .await;
    let issued = page.act(&pause, "ok").await;
    eprintln!("pause with the admin token: {issued}");
    page.wait(
        &format!("{row} paused"),
        &format!(
            "document.querySelector({})?.getAttribute('data-state') === 'paused'",
            js(&row)
        ),
    )
    .await;
    let commands = s.store.commands(CLUSTER, 0, 1000).await.unwrap();
    assert_eq!(
        commands.len(),
        commands_before + 1,
        "one command for one click: {commands:?}"
    );
    let command = commands[commands_before].parse().unwrap();
    assert!(
        matches!(&command.body.op, Operation::Pause { task } if task == TASK),
        "{command:?}"
    );
    let seq = command.seq;
    eventually(
        &format!("every target applied pause #{seq}"),
        LONG,
        None,
        || async {
            let acks = s
                .store
                .command_acks(CLUSTER, AckFilter::Commands(&[seq]))
                .await
                .ok()?;
            command
                .body
                .targets
                .iter()
                .all(|t| {
                    acks.iter()
                        .any(|a| &a.node == t && a.state == AckState::Applied)
                })
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        command.body.requested_by.as_deref(),
        Some("admin"),
        "the command names the token that asked for it"
    );
    page.wait(
        &format!("#commands lists #{seq} with the token that asked for it"),
        &format!("document.querySelector('#commands tr[data-seq=\"{seq}\"]')?.textContent.includes('token admin') === true"),
    )
    .await;

    // A fire's output, opened from its dot in the task's row: text, not markup.
    let printer = format!("#tasks tr[data-task=\"{PRINTER}\"] button[data-output]");
    page.wait(
        &format!("{PRINTER} shows a fire that ran"),
        &format!("document.querySelector({}) !== null", js(&printer)),
    )
    .await;
    page.click(&printer).await;
    let shown = page
        .wait(
            "#output-panel shows the fire's stdout and stderr",
            "(() => {
                const panel = document.querySelector('#output-panel');
                const out = document.querySelector('#output-stdout').textContent;
                const err = document.querySelector('#output-stderr').textContent;
                return !panel.hidden && panel.getAttribute('data-done') === 'true'
                    && out.includes('hello ') && err === 'warned\\n' ? out : null;
            })()",
        )
        .await;
    let shown = shown.as_str().unwrap_or_default();
    assert!(
        shown.contains("<b>bold</b>"),
        "the markup shows as text: {shown:?}"
    );
    assert_eq!(
        page.run("return document.querySelectorAll('#output-panel b').length;")
            .await,
        json!(0),
        "output is never markup"
    );

    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard.png");
    let saved = page.browser.screenshot(&shot).await;
    page.ok(saved).await;
    eprintln!("dashboard screenshot: {}", shot.display());
    if let Err(e) = page.browser.quit().await {
        eprintln!("closing the browser: {e}");
    }
}
