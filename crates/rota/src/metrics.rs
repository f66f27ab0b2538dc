//! A node's Prometheus metrics, rendered in the text exposition format (version 0.0.4) by the
//! admin API at `/metrics`. A few counters and histograms need no client library: they are
//! kept here under one lock each, touched a few times per fire, far from any hot loop.

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
};

use rota_core::outcome::Outcome;

/// Upper bounds (seconds) of the fire lateness buckets.
const LATENESS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Upper bounds (seconds) of the failover duration buckets.
const FAILOVER_BUCKETS: &[f64] = &[0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0];
/// Upper bounds (seconds) of the store round-trip buckets.
const STORE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A cumulative histogram with fixed buckets.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    /// Observations at or below each bound (not cumulative; summed when rendered).
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.counts[i] += 1;
        }
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, n) in self.bounds.iter().zip(&self.counts) {
            cumulative += n;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = |l: &str| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{{{l}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum);
        let _ = writeln!(out, "{name}_count{} {}", braces(labels), self.count);
    }
}

/// Escapes a label value (backslash, double quote, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A metric with one value and no labels: its header, then the value.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// What a node counts. Shared by its runtime (which records) and its admin API (which
/// renders); see [`crate::node::NodeHandle::metrics`].
#[derive(Debug)]
pub struct Metrics {
    fires: Mutex<BTreeMap<(String, &'static str), u64>>,
    lateness: Mutex<Histogram>,
    failovers: Mutex<Histogram>,
    leader_changes: AtomicU64,
    /// Registrations this node ended because their session lock was let go.
    sessions_ended: AtomicU64,
    /// Owned tasks whose runner is parked (see `Timing::park_after`).
    parked: AtomicU64,
    retries: Mutex<BTreeMap<String, u64>>,
    /// Alerts per sink: (delivered, failed deliveries).
    alerts: Mutex<BTreeMap<String, (u64, u64)>>,
    /// Store time (ms) of each task's last fire that ended ok, as far as this node saw.
    last_success: Mutex<BTreeMap<String, i64>>,
    commands_applied: Mutex<BTreeMap<(String, &'static str), u64>>,
    commands_issued: Mutex<BTreeMap<String, u64>>,
    store: Mutex<BTreeMap<&'static str, (Histogram, u64)>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            fires: Mutex::default(),
            lateness: Mutex::new(Histogram::new(LATENESS_BUCKETS)),
            failovers: Mutex::new(Histogram::new(FAILOVER_BUCKETS)),
            leader_changes: AtomicU64::new(0),
            sessions_ended: AtomicU64::new(0),
            parked: AtomicU64::new(0),
            retries: Mutex::default(),
            alerts: Mutex::default(),
            last_success: Mutex::default(),
            commands_applied: Mutex::default(),
            commands_issued: Mutex::default(),
            store: Mutex::default(),
        }
    }
}

/// Gauges read at render time from the node's state.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub node: String,
    pub cluster: String,
    pub store: String,
    pub incarnation: i64,
    /// Holds a valid lease.
    pub up: bool,
    pub leader: bool,
    pub owned: usize,
    /// Registrations by state (`alive`, `leaving`, `dead`), as last seen.
    pub nodes: BTreeMap<&'static str, usize>,
    /// Statements this node's store handle sent since it opened (SQL statements, or
    /// ZooKeeper requests).
    pub statements: crate::store::StatementCounts,
}

impl Metrics {
    /// A failed fire of `task` is run again (its retry policy).
    pub fn retry(&self, task: &str) {
        *self
            .retries
            .lock()
            .unwrap()
            .entry(task.to_string())
            .or_default() += 1;
    }

    /// An alert sent to `sink`: delivered, or a delivery that failed.
    pub fn alert(&self, sink: &str, delivered: bool) {
        let mut alerts = self.alerts.lock().unwrap();
        let entry = alerts.entry(sink.to_string()).or_default();
        if delivered {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }

    /// A fire of `task` ended ok at `at_ms` (store time).
    pub fn last_success(&self, task: &str, at_ms: i64) {
        let mut last = self.last_success.lock().unwrap();
        let entry = last.entry(task.to_string()).or_default();
        *entry = (*entry).max(at_ms);
    }

    /// A fire of `task` ended with `outcome`.
    pub fn fire(&self, task: &str, outcome: Outcome) {
        self.fires(task, outcome, 1);
    }

    /// `n` fires of `task` ended with `outcome` (misfires come in batches).
    pub fn fires(&self, task: &str, outcome: Outcome, n: u64) {
        *self
            .fires
            .lock()
            .unwrap()
            .entry((task.to_string(), outcome.as_str()))
            .or_default() += n;
    }

    /// A fire started `lateness_ms` after its scheduled instant.
    pub fn lateness(&self, lateness_ms: i64) {
        self.lateness
            .lock()
            .unwrap()
            .observe(lateness_ms.max(0) as f64 / 1000.0);
    }

    /// As leader, this node moved a dead node's tasks, `duration_ms` after its last renewal.
    pub fn failover(&self, duration_ms: i64) {
        self.failovers
            .lock()
            .unwrap()
            .observe(duration_ms.max(0) as f64 / 1000.0);
    }

    /// Owned tasks whose runner is parked now.
    pub fn parked(&self, n: usize) {
        self.parked.store(n as u64, Ordering::Relaxed);
    }

    pub fn became_leader(&self) {
        self.leader_changes.fetch_add(1, Ordering::Relaxed);
    }

    /// This node ended a registration whose session lock was let go.
    pub fn session_ended(&self) {
        self.sessions_ended.fetch_add(1, Ordering::Relaxed);
    }

    /// This node acknowledged a command of operation `op` with `state`.
    pub fn command_applied(&self, op: &str, state: &'static str) {
        *self
            .commands_applied
            .lock()
            .unwrap()
            .entry((op.to_string(), state))
            .or_default() += 1;
    }

    /// A command of operation `op` was issued through this node's admin API.
    pub fn command_issued(&self, op: &str) {
        *self
            .commands_issued
            .lock()
            .unwrap()
            .entry(op.to_string())
            .or_default() += 1;
    }

    /// A store round trip of kind `op` took `seconds`, and failed or not.
    pub fn store_call(&self, op: &'static str, seconds: f64, failed: bool) {
        let mut store = self.store.lock().unwrap();
        let (histogram, errors) = store
            .entry(op)
            .or_insert_with(|| (Histogram::new(STORE_BUCKETS), 0));
        histogram.observe(seconds);
        if failed {
            *errors += 1;
        }
    }

    /// The text exposition of every metric, with `gauges` read from the node.
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::new();
        header(
            &mut out,
            "rota_node_info",
            "gauge",
            "This node: always 1, with its identity as labels.",
        );
        let _ = writeln!(
            out,
            "rota_node_info{{node=\"{}\",cluster=\"{}\",store=\"{}\",incarnation=\"{}\"}} 1",
            label(&g.node),
            label(&g.cluster),
            label(&g.store),
            g.incarnation
        );
        single(
            &mut out,
            "rota_node_up",
            "gauge",
            "1 while this node holds a valid lease (it may run tasks).",
            u8::from(g.up),
        );
        single(
            &mut out,
            "rota_is_leader",
            "gauge",
            "1 while this node is the cluster's leader.",
            u8::from(g.leader),
        );
        single(
            &mut out,
            "rota_owned_tasks",
            "gauge",
            "Tasks and services this node owns.",
            g.owned,
        );
        single(&mut out, "rota_parked_tasks", "gauge", "Owned tasks with nothing to do for a while, whose runner is parked until shortly before their next instant.", self.parked.load(Ordering::Relaxed));
        header(
            &mut out,
            "rota_store_statements_total",
            "counter",
            "Statements (ZooKeeper: requests) this node sent to the store, reads and writes.",
        );
        let _ = writeln!(
            out,
            "rota_store_statements_total{{kind=\"read\"}} {}",
            g.statements.reads
        );
        let _ = writeln!(
            out,
            "rota_store_statements_total{{kind=\"write\"}} {}",
            g.statements.writes
        );
        header(
            &mut out,
            "rota_cluster_nodes",
            "gauge",
            "Registered nodes by state, as this node last saw them.",
        );
        for state in ["alive", "leaving", "dead"] {
            let n = g.nodes.get(state).copied().unwrap_or(0);
            let _ = writeln!(out, "rota_cluster_nodes{{state=\"{state}\"}} {n}");
        }
        header(
            &mut out,
            "rota_fires_total",
            "counter",
            "Fires this node ended, by task and outcome.",
        );
        for ((task, outcome), n) in self.fires.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "rota_fires_total{{task=\"{}\",outcome=\"{outcome}\"}} {n}",
                label(task)
            );
        }
        header(
            &mut out,
            "rota_fire_retries_total",
            "counter",
            "Failed or timed-out fires this node runs again (the task's retry policy), by task.",
        );
        for (task, n) in self.retries.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "rota_fire_retries_total{{task=\"{}\"}} {n}",
                label(task)
            );
        }
        header(
            &mut out,
            "rota_task_last_success_timestamp_seconds",
            "gauge",
            "When the task's last fire that ended ok ended (store time), as far as this node saw.",
        );
        for (task, ms) in self.last_success.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "rota_task_last_success_timestamp_seconds{{task=\"{}\"}} {:.3}",
                label(task),
                *ms as f64 / 1000.0
            );
        }
        header(
            &mut out,
            "rota_alerts_total",
            "counter",
            "Alerts this node sent while it led, by sink and result.",
        );
        for (sink, (ok, failed)) in self.alerts.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "rota_alerts_total{{sink=\"{}\",result=\"delivered\"}} {ok}",
                label(sink)
            );
            let _ = writeln!(
                out,
                "rota_alerts_total{{sink=\"{}\",result=\"failed\"}} {failed}",
                label(sink)
            );
        }
        header(
            &mut out,
            "rota_fire_lateness_seconds",
            "histogram",
            "Start of a fire after its scheduled instant.",
        );
        self.lateness
            .lock()
            .unwrap()
            .render(&mut out, "rota_fire_lateness_seconds", "");
        header(
            &mut out,
            "rota_failover_duration_seconds",
            "histogram",
            "As leader: from a dead node's last renewal to its tasks' new placement.",
        );
        self.failovers
            .lock()
            .unwrap()
            .render(&mut out, "rota_failover_duration_seconds", "");
        single(
            &mut out,
            "rota_leader_changes_total",
            "counter",
            "Times this node became the leader.",
            self.leader_changes.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "rota_sessions_ended_total",
            "counter",
            "Registrations this node ended because their session lock was let go (their process died, or their connections closed).",
            self.sessions_ended.load(Ordering::Relaxed),
        );
        header(
            &mut out,
            "rota_commands_applied_total",
            "counter",
            "Cluster commands this node acknowledged, by operation and state.",
        );
        for ((op, state), n) in self.commands_applied.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "rota_commands_applied_total{{op=\"{}\",state=\"{state}\"}} {n}",
                label(op)
            );
        }
        header(
            &mut out,
            "rota_commands_issued_total",
            "counter",
            "Cluster commands issued through this node's admin API, by operation.",
        );
        for (op, n) in self.commands_issued.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "rota_commands_issued_total{{op=\"{}\"}} {n}",
                label(op)
            );
        }
        let store = self.store.lock().unwrap();
        header(
            &mut out,
            "rota_store_request_duration_seconds",
            "histogram",
            "Store round trips by kind.",
        );
        for (op, (histogram, _)) in store.iter() {
            histogram.render(
                &mut out,
                "rota_store_request_duration_seconds",
                &format!("op=\"{op}\""),
            );
        }
        header(
            &mut out,
            "rota_store_errors_total",
            "counter",
            "Store round trips that failed, by kind.",
        );
        for (op, (_, errors)) in store.iter() {
            let _ = writeln!(out, "rota_store_errors_total{{op=\"{op}\"}} {errors}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histograms_with_escaped_labels() {
        let m = Metrics::default();
        m.fire("report", Outcome::Ok);
        m.fire("report", Outcome::Ok);
        m.fire("we\"ird", Outcome::Failed);
        m.lateness(3);
        m.lateness(30);
        m.lateness(60_000);
        m.failover(870);
        m.became_leader();
        m.session_ended();
        m.command_applied("pause", "applied");
        m.store_call("heartbeat", 0.002, false);
        m.store_call("heartbeat", 0.2, true);
        let text = m.render(&Gauges {
            node: "node-1".into(),
            up: true,
            ..Gauges::default()
        });
        for line in [
            "rota_fires_total{task=\"report\",outcome=\"ok\"} 2",
            "rota_fires_total{task=\"we\\\"ird\",outcome=\"failed\"} 1",
            "rota_fire_lateness_seconds_bucket{le=\"0.005\"} 1",
            "rota_fire_lateness_seconds_bucket{le=\"0.05\"} 2",
            "rota_fire_lateness_seconds_bucket{le=\"10\"} 2",
            "rota_fire_lateness_seconds_bucket{le=\"+Inf\"} 3",
            "rota_fire_lateness_seconds_count 3",
            "rota_failover_duration_seconds_bucket{le=\"0.75\"} 0",
            "rota_failover_duration_seconds_bucket{le=\"1\"} 1",
            "rota_leader_changes_total 1",
            "rota_sessions_ended_total 1",
            "rota_commands_applied_total{op=\"pause\",state=\"applied\"} 1",
            "rota_store_request_duration_seconds_bucket{op=\"heartbeat\",le=\"0.0025\"} 1",
            "rota_store_request_duration_seconds_count{op=\"heartbeat\"} 2",
            "rota_store_errors_total{op=\"heartbeat\"} 1",
            "rota_node_up 1",
            "rota_node_info{node=\"node-1\",cluster=\"\",store=\"\",incarnation=\"0\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
        // Every sample line belongs to a declared metric.
        let declared: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        for sample in text.lines().filter(|l| !l.starts_with('#')) {
            let name = sample.split(['{', ' ']).next().unwrap();
            assert!(
                declared.iter().any(|d| name.starts_with(d)),
                "`{name}` has no # TYPE"
            );
        }
    }
}
