//! `[[alert]]`: a sink for the cluster's alerts (a JSON webhook, optionally signed, or a
//! command) and which alerts it takes. The leader sends them; see `rota::alerts`.

use std::{collections::BTreeMap, fmt};

use serde::Deserialize;

use rota::{
    alerts::{AlertKind, AlertSink, AlertSpec},
    store::redact_url,
};

use super::{
    checks::{check_name, duration, ConfigProblem},
    task::{compile_command, compile_http, HttpSection},
};

/// One `[[alert]]`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSection {
    #[serde(default)]
    pub name: String,
    /// POSTs each alert as JSON to this URL; exclusive with `command`.
    pub webhook: Option<String>,
    /// Extra request headers (their values are secrets: never logged nor shown).
    pub headers: Option<BTreeMap<String, String>>,
    /// Signs each request's body: `X-Rota-Signature: sha256=<hex HMAC-SHA256>`.
    pub secret: Option<String>,
    /// Runs this program per alert (`ROTA_ALERT_JSON` holds it); exclusive with `webhook`.
    pub command: Option<Vec<String>>,
    /// The alert kinds it takes (default: all).
    pub events: Option<Vec<String>>,
    /// The tasks it takes alerts about (default: all).
    pub tasks: Option<Vec<String>>,
    /// How long a task stays unplaced before `task_unplaced` (default 1m).
    pub unplaced_for: Option<String>,
}

impl fmt::Debug for AlertSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertSection")
            .field("name", &self.name)
            .field("webhook", &self.webhook.as_deref().map(redact_url))
            .field(
                "headers",
                &self.headers.as_ref().map(|h| h.keys().collect::<Vec<_>>()),
            )
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .field("command", &self.command)
            .field("events", &self.events)
            .field("tasks", &self.tasks)
            .finish()
    }
}

/// Builds every sink; a sink with any problem yields problems and no spec.
pub(super) fn compile_alerts(alerts: &[AlertSection]) -> (Vec<AlertSpec>, Vec<ConfigProblem>) {
    let mut problems = Vec::new();
    let mut specs = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, a) in alerts.iter().enumerate() {
        let f = |key: &str| format!("alert[{i}].{key}");
        let before = problems.len();
        check_name(&mut problems, &f("name"), &a.name, "name = \"ops-pager\"");
        if !a.name.is_empty() && !names.insert(a.name.as_str()) {
            problems.push(ConfigProblem::new(
                f("name"),
                &a.name,
                "another [[alert]] has this name",
                "give each alert sink its own name",
            ));
        }
        let sink = match (&a.webhook, &a.command) {
            (Some(url), None) => {
                let mut headers = a.headers.clone().unwrap_or_default();
                headers
                    .entry("Content-Type".into())
                    .or_insert_with(|| "application/json".into());
                let http = HttpSection {
                    method: "POST".into(),
                    url: url.clone(),
                    headers,
                    body: None,
                };
                compile_http(&mut problems, &f("webhook"), &http).map(AlertSink::Http)
            }
            (None, Some(argv)) => {
                for (key, set) in [
                    ("headers", a.headers.is_some()),
                    ("secret", a.secret.is_some()),
                ] {
                    if set {
                        problems.push(ConfigProblem::new(
                            f(key),
                            "",
                            format!("`{key}` only applies to `webhook`"),
                            format!("remove {key}, or send to a webhook"),
                        ));
                    }
                }
                compile_command(&mut problems, &f("command"), argv, &None, &None)
                    .map(AlertSink::Command)
            }
            (Some(_), Some(_)) => {
                problems.push(ConfigProblem::new(
                    f("command"),
                    "",
                    "an alert sink has `webhook` or `command`, not both",
                    "keep one, and declare another [[alert]] for the other",
                ));
                None
            }
            (None, None) => {
                problems.push(ConfigProblem::new(
                    format!("alert[{i}]"),
                    &a.name,
                    "the alert sink sends nowhere",
                    "add webhook = \"https://hooks.example/rota\" or command = [\"/usr/local/bin/page\"]",
                ));
                None
            }
        };
        if a.secret.as_deref() == Some("") {
            problems.push(ConfigProblem::new(
                f("secret"),
                "",
                "is empty",
                "give a long random secret, or remove secret",
            ));
        }
        let mut kinds = Vec::new();
        for (j, event) in a.events.iter().flatten().enumerate() {
            match AlertKind::parse(event) {
                Some(k) => kinds.push(k),
                None => problems.push(ConfigProblem::new(
                    format!("alert[{i}].events[{j}]"),
                    event,
                    "unknown alert",
                    format!(
                        "use one of {}",
                        AlertKind::ALL.map(AlertKind::as_str).join(", ")
                    ),
                )),
            }
        }
        let unplaced_for = match &a.unplaced_for {
            Some(text) => duration(&mut problems, &f("unplaced_for"), text),
            None => Some(std::time::Duration::from_secs(60)),
        };
        if problems.len() == before {
            specs.push(AlertSpec {
                name: a.name.clone(),
                sink: sink.expect("no problem"),
                secret: a.secret.clone(),
                kinds,
                tasks: a.tasks.clone().unwrap_or_default(),
                unplaced_for: unplaced_for.expect("no problem"),
            });
        }
    }
    (specs, problems)
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, tests::fields};

    #[test]
    fn alert_sinks_are_checked_and_never_show_their_secrets() {
        let text = r#"
            [node]
            id = "n"
            cluster = "c"
            [store]
            url = "sqlite:///tmp/x.db"
            [[alert]]
            name = "hook"
            webhook = "https://hooks.example/rota"
            secret = "s3cret-value"
            headers = { Authorization = "Bearer hidden-value" }
            events = ["fire_failed", "task_overdue"]
            [[alert]]
            name = "page"
            command = ["/usr/local/bin/page", "--team", "ops"]
            tasks = ["report"]
            unplaced_for = "5m"
        "#;
        let config = parse(text).unwrap();
        assert_eq!(config.validate(), vec![]);
        let specs = config.alert_specs().unwrap();
        assert_eq!(specs.len(), 2);
        let shown = format!("{specs:?} {:?}", config.alerts);
        assert!(
            !shown.contains("s3cret") && !shown.contains("hidden-value"),
            "{shown}"
        );

        let bad = r#"
            [[alert]]
            name = "x"
            webhook = "ftp://nowhere"
            events = ["fire_failed", "everything"]
            [[alert]]
            name = "x"
            command = ["page"]
            secret = "s"
            [[alert]]
            name = "y"
        "#;
        let problems = parse(bad).unwrap().alert_specs().unwrap_err();
        assert_eq!(
            fields(&problems),
            vec![
                "alert[0].webhook.url",
                "alert[0].events[1]",
                "alert[1].name",
                "alert[1].secret",
                "alert[2]",
            ],
            "{problems:?}"
        );
    }
}
