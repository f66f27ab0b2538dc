//! `rota bench cache`: the cluster cache on one store. Near-cache hits (a warm key read over
//! and over), then store-backed gets, puts and compare-and-sets from several concurrent
//! clients, each for a few seconds: operations per second and the latency of each.

use std::{process::ExitCode, time::Duration};

use clap::Args;
use rota::{
    cache::{Cache, NearCache},
    store::{self, CacheOutcome},
};
use tokio::time::Instant;

use super::bench_store::StoreArgs;

#[derive(Args)]
pub struct CacheArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Concurrent clients for the store-backed operations.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds measured per operation.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
}

#[derive(Clone, Copy)]
enum Op {
    Get,
    Put,
    CompareAndSet,
}

pub async fn cache(args: CacheArgs) -> anyhow::Result<ExitCode> {
    let run = args.store.open("cache").await?;
    let cluster = format!("bench-{}", std::process::id());
    println!(
        "bench cache: {} clients, {} s per operation, {}-byte values, store {}",
        args.clients,
        args.seconds,
        args.value_size,
        store::redact_url(&run.url)
    );
    let near = NearCache::start(&run.store, &cluster).await;
    let cache = Cache::new(run.store.clone(), &cluster, "bench", near.clone())?;
    let value = vec![b'x'; args.value_size];

    // Near-cache hits: one warm key.
    cache.put("warm", &value).await?;
    cache.get_cached("warm").await?;
    let mut hits_ns = Vec::with_capacity(100_000);
    for _ in 0..100_000 {
        let t = std::time::Instant::now();
        let e = cache.get_cached("warm").await?;
        hits_ns.push(t.elapsed().as_nanos() as i64);
        debug_assert!(e.is_some());
    }
    let (hits, misses) = near.hits_and_misses();
    hits_ns.sort_unstable();
    let pick = |q: f64| hits_ns[((hits_ns.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "  near-cache hit: median {} ns, p99 {} ns ({} hits, {} misses{})",
        pick(0.5),
        pick(0.99),
        hits,
        misses,
        if near.is_pushed() {
            "; invalidated by the store's push"
        } else {
            "; copies kept at most 500 ms"
        }
    );

    // Invalidation: a second node (its own store connection and near cache) reads from its
    // copy; this node writes; how long until the reader sees the new value.
    let other_store = store::open(&run.url).await?;
    let other_near = NearCache::start(&other_store, &cluster).await;
    let reader = Cache::new(other_store, &cluster, "bench", other_near)?;
    let pushes = run.store.cache_changes(&cluster).await.is_some();
    let wait_push = Instant::now() + Duration::from_secs(10);
    while pushes && !reader.is_pushed() && Instant::now() < wait_push {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut seen_ms = Vec::new();
    for i in 0..50u32 {
        reader.get_cached("shared").await?; // a copy to invalidate
        let written = Instant::now();
        cache.put("shared", i.to_string()).await?;
        loop {
            let e = reader.get_cached("shared").await?;
            if e.is_some_and(|e| e.value == i.to_string().as_bytes()) {
                break;
            }
            if written.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("the reader never saw write {i}");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        seen_ms.push(written.elapsed().as_millis() as i64);
    }
    println!(
        "  another node's write seen through the near cache ({}): {}",
        if reader.is_pushed() {
            "pushed"
        } else {
            "copies kept at most 500 ms"
        },
        super::measure::stats(&mut seen_ms)
    );

    for (op, name) in [
        (Op::Put, "put"),
        (Op::Get, "get"),
        (Op::CompareAndSet, "compare-and-set"),
    ] {
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let mut workers = Vec::new();
        for client in 0..args.clients {
            let cache = cache.clone();
            let value = value.clone();
            workers.push(tokio::spawn(async move {
                let key = format!("key-{client}");
                let mut version = cache.put(&key, &value).await?;
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match op {
                        Op::Get => {
                            cache.get(&key).await?;
                        }
                        Op::Put => {
                            version = cache.put(&key, &value).await?;
                        }
                        Op::CompareAndSet => {
                            match cache
                                .compare_and_set(&key, Some(version), &value, None)
                                .await?
                            {
                                CacheOutcome::Done { version: v } => version = v,
                                CacheOutcome::Conflict { .. } => {
                                    anyhow::bail!(
                                        "a compare-and-set on a key no one else writes conflicted"
                                    )
                                }
                            }
                        }
                    }
                    latencies.push(t.elapsed().as_micros() as i64);
                }
                Ok::<_, anyhow::Error>(latencies)
            }));
        }
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.await??);
        }
        let per_second = all.len() as f64 / args.seconds as f64;
        all.sort_unstable();
        let p = |q: f64| all[((all.len() as f64 - 1.0) * q).round() as usize];
        println!(
            "  {name}: {per_second:.0} ops/s; latency median {} us, p99 {} us (n = {})",
            p(0.5),
            p(0.99),
            all.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
