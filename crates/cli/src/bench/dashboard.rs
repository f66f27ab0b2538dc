//! `rota bench dashboard`: the dashboard in headless Chromium (Debian's `chromium` and
//! `chromium-driver`) against node processes with a task every second. It measures the
//! page's first load on loopback (bytes, the load event, the first data on screen), then
//! kills the task's owner with SIGKILL several times and measures how long until the page,
//! without a reload, shows the new owner, next to how long until the store has it.

use std::{
    process::ExitCode,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context};
use clap::Args;
use rota::store::{self, Store};
use rota_testkit::{self as harness, browser::Browser, ProcessCluster};
use tokio::time::Instant;

use super::{bench_store::StoreArgs, measure::stats};

#[derive(Args)]
pub struct DashboardArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Page loads measured.
    #[arg(long, default_value_t = 20)]
    loads: usize,
    /// SIGKILLs of the task's owner.
    #[arg(long, default_value_t = 5)]
    kills: usize,
}

const TASK: &str = "beat";

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The live owner of the task, by the store.
async fn owner(store: &Arc<dyn Store>, cluster: &str) -> anyhow::Result<Option<String>> {
    Ok(super::measure::owners(store, cluster)
        .await?
        .into_iter()
        .find_map(|(task, node)| (task == TASK).then_some(node)))
}

pub async fn dashboard(args: DashboardArgs) -> anyhow::Result<ExitCode> {
    if args.nodes < 2 {
        bail!(
            "--nodes {} leaves no survivor to fail over to; use 2 or more",
            args.nodes
        );
    }
    let run = args.store.open("dashboard").await?;
    let (dir, url, store) = (run.dir.clone(), run.url.clone(), run.store.clone());
    let name = format!("bench-{}", std::process::id());
    println!(
        "bench dashboard: {} node processes, a task every 1s, {} page loads, {} kills, store {}",
        args.nodes,
        args.loads,
        args.kills,
        store::redact_url(&url)
    );
    let mut cluster = ProcessCluster::new(std::env::current_exe()?, &dir, &url, &name);
    let record = dir.join("fires.log");
    let tasks = harness::log_task_toml(TASK, "1s", &record);
    let ids: Vec<String> = (1..=args.nodes).map(|i| format!("node-{i}")).collect();
    let mut ports = std::collections::BTreeMap::new();
    for id in &ids {
        let port = harness::servers::free_port();
        ports.insert(id.clone(), port);
        cluster.spawn_with_admin(id, &tasks, Some((port, None)))?;
    }
    let browser = Browser::start()
        .await
        .context("start headless Chromium (install Debian's chromium and chromium-driver)")?;
    let live = |n: usize| {
        format!(
            "document.querySelectorAll('#nodes tr[data-node]').length === {n} && \
             document.querySelector('#live[data-connected=\"true\"]') !== null"
        )
    };
    let owner_on_page = format!(
        "(() => {{ const r = document.querySelector('#tasks tr[data-task=\"{TASK}\"]'); \
         return r ? r.getAttribute('data-owner') : null; }})()"
    );

    // First loads, each in a fresh navigation of the first node's dashboard.
    let first = format!("http://127.0.0.1:{}/", ports[&ids[0]]);
    browser.goto(&first).await?;
    browser
        .wait_for(
            "every node on the page",
            Duration::from_secs(60),
            &live(ids.len()),
        )
        .await?;
    let (mut bytes, mut load_ms, mut data_ms) = (0, Vec::new(), Vec::new());
    for _ in 0..args.loads {
        browser.goto(&first).await?;
        let load = browser.page_load_ms().await?;
        let shown = browser
            .wait_for(
                "the first data on screen",
                Duration::from_secs(30),
                "(() => { const m = performance.getEntriesByName('rota-first-render')[0]; \
                 return m ? m.startTime : null; })()",
            )
            .await?;
        bytes = load.bytes;
        load_ms.push(load.ms.round() as i64);
        data_ms.push(shown.as_f64().unwrap_or(0.0).round() as i64);
    }
    println!(
        "  first load: {bytes} bytes (the page and its 2 assets, uncompressed, headers included)"
    );
    println!("  load event: {}", stats(&mut load_ms));
    println!("  first data on screen: {}", stats(&mut data_ms));

    // Kills: the page is on a node that survives; it is told the time each owner shows up.
    let (mut in_store, mut on_page) = (Vec::new(), Vec::new());
    for round in 0..args.kills {
        let deadline = Instant::now() + Duration::from_secs(60);
        let victim = loop {
            if let Some(o) = owner(&store, &name).await? {
                let view = store.view(&name).await?;
                if view.nodes.iter().filter(|n| n.alive).count() == ids.len() {
                    break o;
                }
            }
            if Instant::now() >= deadline {
                bail!("round {round}: the cluster did not settle within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let watcher = ids
            .iter()
            .find(|n| **n != victim)
            .expect("two nodes or more");
        browser
            .goto(&format!("http://127.0.0.1:{}/", ports[watcher]))
            .await?;
        browser
            .wait_for(
                "the owner on the page",
                Duration::from_secs(60),
                &format!("{} && {owner_on_page} === '{victim}'", live(ids.len())),
            )
            .await?;
        // The page notes the wall-clock time the task row first names another owner.
        browser
            .execute(
                &format!(
                    "const row = () => document.querySelector('#tasks tr[data-task=\"{TASK}\"]');
                     window.__rotaNewOwnerAt = null;
                     const check = () => {{
                       const o = row() && row().getAttribute('data-owner');
                       if (!window.__rotaNewOwnerAt && o && o !== '{victim}') window.__rotaNewOwnerAt = Date.now();
                     }};
                     new MutationObserver(check).observe(document.getElementById('tasks'),
                       {{subtree: true, childList: true, attributes: true}});"
                ),
                &[],
            )
            .await?;
        let killed_at = unix_ms();
        cluster.kill(&victim);
        let moved_at = loop {
            match owner(&store, &name).await? {
                Some(o) if o != victim => break unix_ms(),
                _ => {}
            }
            if unix_ms() - killed_at > 60_000 {
                bail!("round {round}: the task did not move within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let shown_at = browser
            .wait_for(
                "the new owner on the page",
                Duration::from_secs(60),
                "window.__rotaNewOwnerAt",
            )
            .await?
            .as_f64()
            .unwrap_or(0.0) as i64;
        in_store.push(moved_at - killed_at);
        on_page.push(shown_at - killed_at);
        println!(
            "  kill {}: {victim}'s task in the store after {} ms, on the page after {} ms",
            round + 1,
            moved_at - killed_at,
            shown_at - killed_at
        );
        cluster.spawn_with_admin(&victim, &tasks, Some((ports[&victim], None)))?;
    }
    println!("  kill -> new owner in the store: {}", stats(&mut in_store));
    println!("  kill -> new owner on the page:  {}", stats(&mut on_page));
    browser.quit().await?;
    drop(cluster);
    Ok(ExitCode::SUCCESS)
}
