//! Alerts: what goes wrong in the cluster (a fire failed, timed out, misfired, was skipped
//! or abandoned; a task stayed unplaced; a task has not succeeded for too long; a node died;
//! the leader changed), sent to the sinks a node declares (a request, a command). The
//! leader sends them, one at a time, each once cluster-wide: an alert is claimed in the
//! cluster cache ([`ALERTS_CACHE`]) before it is sent and marked delivered after, so that a
//! new leader neither repeats what its predecessor delivered nor drops what it had not.

use std::time::Duration;

use serde_json::{json, Value};

use crate::{
    kinds::{CommandTask, HttpTask},
    task::TaskError,
};

/// The cache where each alert's delivery is recorded: `<sink>/<alert id>`.
pub const ALERTS_CACHE: &str = "rota.alerts";

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertKind {
    FireFailed,
    FireTimedOut,
    FireMisfired,
    FireSkipped,
    FireAbandoned,
    /// A task unplaced for longer than the sink's `unplaced_for`.
    TaskUnplaced,
    /// A task with `expect_success_within` that has not ended `ok` within it.
    TaskOverdue,
    NodeDied,
    LeaderChanged,
}

impl AlertKind {
    pub const ALL: [AlertKind; 9] = [
        AlertKind::FireFailed,
        AlertKind::FireTimedOut,
        AlertKind::FireMisfired,
        AlertKind::FireSkipped,
        AlertKind::FireAbandoned,
        AlertKind::TaskUnplaced,
        AlertKind::TaskOverdue,
        AlertKind::NodeDied,
        AlertKind::LeaderChanged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::FireFailed => "fire_failed",
            AlertKind::FireTimedOut => "fire_timed_out",
            AlertKind::FireMisfired => "fire_misfired",
            AlertKind::FireSkipped => "fire_skipped",
            AlertKind::FireAbandoned => "fire_abandoned",
            AlertKind::TaskUnplaced => "task_unplaced",
            AlertKind::TaskOverdue => "task_overdue",
            AlertKind::NodeDied => "node_died",
            AlertKind::LeaderChanged => "leader_changed",
        }
    }

    pub fn parse(text: &str) -> Option<AlertKind> {
        AlertKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// Where a sink's alerts go.
#[derive(Debug, Clone)]
pub enum AlertSink {
    /// A request (the configured method, URL and headers) whose body is the alert as JSON,
    /// with `X-Rota-Alert-Id` (the same on every delivery of one alert, for deduplication),
    /// `X-Rota-Alert-Kind` and, with a secret, `X-Rota-Signature: sha256=<hex HMAC of the
    /// body>`. Any 2xx is a delivery.
    Http(HttpTask),
    /// A program, given the alert in `ROTA_ALERT_JSON` (and `ROTA_ALERT_ID`,
    /// `ROTA_ALERT_KIND`, `ROTA_ALERT_TASK`, `ROTA_ALERT_NODE`). Exit status 0 is a delivery.
    Command(CommandTask),
}

/// One declared sink with its filter.
#[derive(Clone)]
pub struct AlertSpec {
    pub name: String,
    pub sink: AlertSink,
    /// Signs a request's body (HMAC-SHA256). Never logged nor shown.
    pub secret: Option<String>,
    /// The kinds it wants (empty: all).
    pub kinds: Vec<AlertKind>,
    /// The tasks it wants alerts about (empty: all); alerts about nodes always pass.
    pub tasks: Vec<String>,
    /// How long a task must stay unplaced before `task_unplaced`.
    pub unplaced_for: Duration,
}

impl std::fmt::Debug for AlertSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertSpec")
            .field("name", &self.name)
            .field("sink", &self.sink)
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .field("kinds", &self.kinds)
            .field("tasks", &self.tasks)
            .finish()
    }
}

/// One thing that went wrong, with an id that is the same whoever notices it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub id: String,
    pub kind: AlertKind,
    /// When it happened (store time, Unix ms).
    pub at_ms: i64,
    pub task: Option<String>,
    pub node: Option<String>,
    /// The fire's instant, for alerts about a fire.
    pub instant_ms: Option<i64>,
    pub message: Option<String>,
    /// How long the task has been unplaced (`task_unplaced`).
    pub unplaced_ms: Option<i64>,
}

impl Alert {
    /// The alert as a request's body and a command's `ROTA_ALERT_JSON`.
    pub fn to_json(&self, cluster: &str) -> Value {
        json!({
            "id": self.id,
            "kind": self.kind.as_str(),
            "cluster": cluster,
            "at_ms": self.at_ms,
            "task": self.task,
            "node": self.node,
            "instant_ms": self.instant_ms,
            "message": self.message,
        })
    }
}

impl AlertSpec {
    /// Whether this sink takes `alert`.
    pub fn wants(&self, alert: &Alert) -> bool {
        let kind = self.kinds.is_empty() || self.kinds.contains(&alert.kind);
        let task = match &alert.task {
            Some(t) => self.tasks.is_empty() || self.tasks.contains(t),
            None => true,
        };
        let long_enough = alert
            .unplaced_ms
            .is_none_or(|ms| ms >= self.unplaced_for.as_millis() as i64);
        kind && task && long_enough
    }

    /// Sends `alert` once, within `limit`.
    pub(crate) async fn send(
        &self,
        cluster: &str,
        alert: &Alert,
        limit: Duration,
    ) -> Result<(), TaskError> {
        let body = alert.to_json(cluster).to_string();
        let mut vars = vec![
            ("ALERT_ID", alert.id.clone()),
            ("ALERT_KIND", alert.kind.as_str().to_string()),
            ("CLUSTER", cluster.to_string()),
        ];
        vars.extend(alert.task.clone().map(|t| ("ALERT_TASK", t)));
        vars.extend(alert.node.clone().map(|n| ("ALERT_NODE", n)));
        let cancel = tokio_util::sync::CancellationToken::new();
        let _ends = cancel.clone().drop_guard();
        let timer = {
            let cancel = cancel.clone();
            async move {
                tokio::time::sleep(limit).await;
                cancel.cancel();
            }
        };
        let call = |vars, env, body| crate::kinds::Invocation {
            label: format!("alert {}", self.name),
            vars,
            env,
            body,
            cancel: cancel.clone(),
            term_grace: None,
            output: None,
        };
        let send = async {
            match &self.sink {
                AlertSink::Http(http) => {
                    if let Some(secret) = &self.secret {
                        vars.push(("SIGNATURE", signature(secret, body.as_bytes())));
                    }
                    http.invoke(call(vars, Vec::new(), Some(body.into_bytes())))
                        .await
                }
                AlertSink::Command(command) => {
                    let env = vec![("ROTA_ALERT_JSON".to_string(), body)];
                    command.invoke(call(vars, env, None)).await
                }
            }
        };
        tokio::select! {
            sent = send => sent,
            _ = timer => Err(TaskError::new(format!("not delivered within {} s", limit.as_secs()))),
        }
    }
}

/// `sha256=<hex HMAC-SHA256 of body under secret>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(kind: AlertKind, task: Option<&str>) -> Alert {
        Alert {
            id: "x".into(),
            kind,
            at_ms: 0,
            task: task.map(str::to_string),
            node: None,
            instant_ms: None,
            message: None,
            unplaced_ms: None,
        }
    }

    #[test]
    fn a_sink_takes_the_kinds_and_tasks_it_names() {
        let sink = AlertSpec {
            name: "ops".into(),
            sink: AlertSink::Command(
                CommandTask::new(vec!["true".into()], Default::default(), None).unwrap(),
            ),
            secret: None,
            kinds: vec![
                AlertKind::FireFailed,
                AlertKind::NodeDied,
                AlertKind::TaskUnplaced,
            ],
            tasks: vec!["report".into()],
            unplaced_for: Duration::from_secs(60),
        };
        assert!(sink.wants(&alert(AlertKind::FireFailed, Some("report"))));
        assert!(!sink.wants(&alert(AlertKind::FireFailed, Some("other"))));
        assert!(!sink.wants(&alert(AlertKind::FireSkipped, Some("report"))));
        assert!(
            sink.wants(&alert(AlertKind::NodeDied, None)),
            "node alerts pass the task filter"
        );
        let mut unplaced = alert(AlertKind::TaskUnplaced, Some("report"));
        unplaced.unplaced_ms = Some(59_000);
        assert!(!sink.wants(&unplaced));
        unplaced.unplaced_ms = Some(60_000);
        assert!(sink.wants(&unplaced));
        for kind in AlertKind::ALL {
            assert_eq!(AlertKind::parse(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn the_signature_is_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
