//! The TOML configuration of the `rota node` daemon, one file per node.
//!
//! [`load`] reads and parses a file (syntax, types and unknown keys), [`Config::validate`]
//! then reports every remaining problem at once, each naming the field, its value and the
//! fix. `examples/rota.toml` documents every key.
//!
//! One file per section: `node`, `store`, `placement`, `timing`, `log`, `admin`, `task` and
//! `service` each hold their section's keys and checks; `toml_errors` locates TOML errors.
//! This file ties them together: [`Config`], [`parse`], [`load`] and the checks of the whole.

mod admin;
mod alert;
mod checks;
pub mod definitions;
mod log;
mod node;
mod placement;
mod service;
mod store;
mod task;
mod timing;
mod toml_errors;

use std::path::Path;

pub use admin::AdminSection;
use checks::check_name;
pub use checks::ConfigProblem;
pub use log::LogSection;
pub use node::NodeSection;
pub use placement::PlacementSection;
pub use rota::kinds::command::{
    ADMIN_TOKEN_ENV, CTL_TOKEN_ENV, READ_TOKEN_ENV, SECRET_ENV, STORE_URL_ENV,
};
use rota::{
    core::placement::label_problems,
    node::{NodeBuilder, Timing},
    task::TaskSpec,
    Node,
};
use serde::Deserialize;
pub use service::{FileInboundSection, ServiceSection};
pub use store::StoreSection;
pub use task::{HttpSection, LogKindSection, RetrySection, TaskDefaults, TaskSection};
pub use timing::TimingSection;
use toml_errors::toml_problem;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub node: NodeSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub timing: TimingSection,
    #[serde(default)]
    pub log: LogSection,
    /// `[placement]`: the cluster-wide default of every task without its own `resolver`.
    #[serde(default)]
    pub placement: PlacementSection,
    /// `[defaults]`: policies of every task that does not set its own.
    #[serde(default)]
    pub defaults: TaskDefaults,
    /// `[[task]]` tables, in file order.
    #[serde(default, rename = "task")]
    pub tasks: Vec<TaskSection>,
    /// `[[service]]` tables, in file order.
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceSection>,
    /// `[[alert]]` sinks: where the leader sends the cluster's alerts.
    #[serde(default, rename = "alert")]
    pub alerts: Vec<alert::AlertSection>,
    /// `[admin]`: the HTTP admin API (off unless `listen` is set).
    #[serde(default)]
    pub admin: AdminSection,
}

/// Parses a config: TOML syntax, types and unknown keys. See [`Config::validate`] for the rest.
pub fn parse(text: &str) -> Result<Config, Vec<ConfigProblem>> {
    toml::from_str(text).map_err(|e| vec![toml_problem(text, &e)])
}

/// Reads and parses `path`, then applies `ROTA_STORE_URL` if set.
pub fn load(path: &Path) -> Result<Config, Vec<ConfigProblem>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigProblem::new(
            "config",
            path.display().to_string(),
            format!("cannot read the file: {e}"),
            "check the path and its permissions",
        )]
    })?;
    let mut config = parse(&text)?;
    config.apply_store_url_override(std::env::var(STORE_URL_ENV).ok());
    Ok(config)
}

impl Config {
    /// A non-empty `url` (the value of `ROTA_STORE_URL`) replaces `[store] url`.
    pub fn apply_store_url_override(&mut self, url: Option<String>) {
        if let Some(url) = url.filter(|u| !u.trim().is_empty()) {
            self.store.url = url;
        }
    }

    /// Every problem of the config, in file order; empty when it is valid.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = self.check_settings();
        problems.extend(task::compile_tasks(&self.tasks, &self.defaults, &self.placement).1);
        problems.extend(service::compile_services(&self.services, &self.tasks, &self.placement).1);
        problems.extend(alert::compile_alerts(&self.alerts).1);
        problems
    }

    /// The alert sinks, or the problems of the `[[alert]]` tables.
    pub fn alert_specs(&self) -> Result<Vec<rota::alerts::AlertSpec>, Vec<ConfigProblem>> {
        match alert::compile_alerts(&self.alerts) {
            (specs, problems) if problems.is_empty() => Ok(specs),
            (_, problems) => Err(problems),
        }
    }

    /// The config against this host's file system: every directory a task or service works
    /// in or polls exists and is a directory, and a log task's file is not one. `rota config
    /// check` and a starting node run it after [`Config::validate`] (a config is written
    /// for the hosts it runs on; the example file is valid everywhere but not on every host).
    pub fn check_host(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let is_dir = |p: &mut Vec<ConfigProblem>, field: String, dir: &str, what: &str| {
            let path = Path::new(dir);
            let reason = if !path.exists() {
                "no such directory"
            } else if !path.is_dir() {
                "is not a directory"
            } else {
                return;
            };
            p.push(ConfigProblem::new(
                field,
                dir,
                reason,
                format!("create it, or give the path of the directory {what}"),
            ));
        };
        for (i, t) in self.tasks.iter().enumerate() {
            if let Some(dir) = &t.workdir {
                is_dir(
                    &mut p,
                    format!("task[{i}].workdir"),
                    dir,
                    "the command runs in",
                );
            }
            if let Some(file) = t.log.as_ref().and_then(|l| l.append_to.as_deref()) {
                let path = Path::new(file);
                let field = format!("task[{i}].log.append_to");
                if path.is_dir() {
                    p.push(ConfigProblem::new(
                        field,
                        file,
                        "is a directory",
                        "give the path of a file to append to, e.g. \"/var/log/rota/fires.log\"",
                    ));
                } else if let Some(parent) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    if !parent.is_dir() {
                        p.push(ConfigProblem::new(
                            field,
                            file,
                            format!("its directory {} does not exist", parent.display()),
                            "create the directory, or append to a file in one that exists",
                        ));
                    }
                }
            }
        }
        for (i, s) in self.services.iter().enumerate() {
            if let Some(dir) = &s.workdir {
                is_dir(
                    &mut p,
                    format!("service[{i}].workdir"),
                    dir,
                    "the command runs in",
                );
            }
            let Some(fi) = &s.file_inbound else { continue };
            let f = |key: &str| format!("service[{i}].file_inbound.{key}");
            if !fi.dir.trim().is_empty() {
                is_dir(&mut p, f("dir"), &fi.dir, "to poll for files");
            }
            if let Some(dir) = &fi.workdir {
                is_dir(&mut p, f("workdir"), dir, "the command runs in");
            }
            for (key, dir) in [("done", &fi.done), ("failed", &fi.failed)] {
                if let Some(dir) = dir.as_deref().filter(|d| Path::new(d).exists()) {
                    is_dir(&mut p, f(key), dir, "to move files into");
                }
            }
        }
        p
    }

    /// The timing, with defaults for unset (or invalid) durations.
    pub fn timing(&self) -> Timing {
        self.timing.resolve(&mut Vec::new())
    }

    /// The tasks with their handlers, or the problems of the `[[task]]` tables.
    pub fn task_specs(&self) -> Result<Vec<TaskSpec>, Vec<ConfigProblem>> {
        match task::compile_tasks(&self.tasks, &self.defaults, &self.placement) {
            (specs, problems) if problems.is_empty() => Ok(specs),
            (_, problems) => Err(problems),
        }
    }

    /// A node builder with this node's identity, store, timing and tasks; all problems if invalid.
    pub fn builder(&self) -> Result<NodeBuilder, Vec<ConfigProblem>> {
        let mut problems = self.check_settings();
        let (specs, task_problems) =
            task::compile_tasks(&self.tasks, &self.defaults, &self.placement);
        problems.extend(task_problems);
        let (services, service_problems) =
            service::compile_services(&self.services, &self.tasks, &self.placement);
        problems.extend(service_problems);
        let (alerts, alert_problems) = alert::compile_alerts(&self.alerts);
        problems.extend(alert_problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        let builder = Node::builder(&self.node.id, &self.node.cluster, &self.store.url)
            .timing(self.timing())
            .migrate(self.store.migrate)
            .session_locks(self.store.session_locks)
            .labels(self.node.labels.clone())
            .alerts(alerts);
        let builder = specs.into_iter().fold(builder, NodeBuilder::task);
        Ok(services.into_iter().fold(builder, NodeBuilder::service))
    }

    /// Everything but the tasks.
    fn check_settings(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        // The order of these checks is the order their problems are reported in.
        check_name(&mut p, "node.id", &self.node.id, "id = \"node-1\"");
        check_name(
            &mut p,
            "node.cluster",
            &self.node.cluster,
            "cluster = \"orders\"",
        );
        self.store.check(&mut p);
        for problem in label_problems("node.labels", &self.node.labels) {
            p.push(problem.under(""));
        }
        self.placement.compile("placement", None, &mut p);
        self.timing.check(&mut p);
        self.log.check_format(&mut p);
        self.node.check_restart(&mut p);
        if let Err(problems) = self.admin.resolve() {
            p.extend(problems);
        }
        self.log.check_level(&mut p);
        p
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use rota::{
        core::placement::PlacementSpec,
        task::{MisfirePolicy, RecoveryPolicy},
    };

    const EXAMPLE: &str = include_str!("../../../../examples/rota.toml");

    pub(super) fn fields(problems: &[ConfigProblem]) -> Vec<&str> {
        problems.iter().map(|p| p.field.as_str()).collect()
    }

    #[test]
    fn shipped_example_is_valid_and_builds() {
        let config = parse(EXAMPLE).unwrap();
        assert_eq!(config.validate(), vec![]);
        assert_eq!(config.node.id, "node-1");
        assert!(config.tasks.len() >= 3, "the example shows every kind");
        let specs = config.task_specs().unwrap();
        assert_eq!(specs.len(), config.tasks.len());
        assert!(specs.iter().all(|s| !s.description.is_empty()));
        config.builder().unwrap().validate().unwrap();
        assert!(
            config.services.len() >= 2,
            "the example shows every service kind"
        );
        let (services, problems) =
            service::compile_services(&config.services, &config.tasks, &config.placement);
        assert_eq!(problems, vec![]);
        assert_eq!(services.len(), config.services.len());
        assert!(services[1]
            .description
            .starts_with("file-inbound /srv/inbound/invoices"));
        assert_eq!(
            services[1].placement,
            PlacementSpec::failover("node-2", ["node-1", "node-3"])
        );
    }

    #[test]
    fn full_config_maps_onto_specs_and_timing() {
        let text = r#"
            [node]
            id = "node-1"
            cluster = "orders"
            [store]
            url = "sqlite:///tmp/rota.db"
            migrate = false
            session_locks = false
            [timing]
            heartbeat = "100ms"
            node_timeout = "2s"
            history_retention = "1d"
            [log]
            format = "json"
            level = "debug"
            [[task]]
            name = "ftp-transfer"
            cron = "0 0 12 * * *"
            time_zone = "Europe/Paris"
            misfire = "skip"
            misfire_threshold = "10s"
            recovery = "abandon"
            timeout = "30s"
            command = ["/usr/local/bin/transfer.sh", "--today"]
            env = { FOO = "bar" }
            workdir = "/tmp"
            [[task]]
            name = "ping"
            every = "5s"
            http = { method = "POST", url = "https://example.com/hook", headers = { Authorization = "Bearer x" }, body = "{}" }
            [[task]]
            name = "seed"
            every = "1s"
            log = { message = "hello", append_to = "/tmp/fires.log" }
        "#;
        let config = parse(text).unwrap();
        assert_eq!(config.validate(), vec![]);
        let t = config.timing();
        assert_eq!(t.heartbeat, Duration::from_millis(100));
        assert_eq!(t.node_timeout, Duration::from_secs(2));
        assert_eq!(t.history_retention, Duration::from_secs(86_400));
        assert_eq!(t.fence_margin, Timing::default().fence_margin);
        assert!(!config.store.migrate);
        assert!(!config.store.session_locks);
        assert!(
            parse("[store]\nurl = \"sqlite:///x.db\"")
                .unwrap()
                .store
                .session_locks,
            "on by default"
        );
        let specs = config.task_specs().unwrap();
        let ftp = &specs[0];
        assert_eq!(
            ftp.schedule.describe(),
            "cron \"0 0 12 * * *\" Europe/Paris"
        );
        assert_eq!(
            (ftp.misfire, ftp.misfire_threshold),
            (MisfirePolicy::Skip, Duration::from_secs(10))
        );
        assert_eq!(ftp.recovery, RecoveryPolicy::Abandon);
        assert_eq!(ftp.timeout, Some(Duration::from_secs(30)));
        assert_eq!(
            ftp.description,
            "/usr/local/bin/transfer.sh --today (in /tmp) (env FOO)"
        );
        assert!(specs[1]
            .description
            .starts_with("POST https://example.com/hook"));
        assert_eq!(specs[2].schedule.describe(), "every 1s");
        assert_eq!(
            specs[2].recovery,
            RecoveryPolicy::Abandon,
            "at most once by default"
        );
        assert!(config.builder().is_ok());
    }

    /// Mistakes that once passed the check and failed later, or silently (issue 14.8).
    #[test]
    fn mistakes_that_fail_later_are_caught_by_the_check() {
        let base = tempfile::tempdir().unwrap();
        let inbox = base.path().join("in");
        std::fs::create_dir(&inbox).unwrap();
        let a_file = base.path().join("file.txt");
        std::fs::write(&a_file, "x").unwrap();
        let text = format!(
            r#"
            [node]
            id = "n1"
            cluster = "c"
            [store]
            url = "sqlite:///tmp/x.db"
            [[task]]
            name = "feb-30"
            cron = "0 0 0 30 2 *"
            log = {{}}
            [[task]]
            name = "past-year"
            cron = "0 0 0 1 1 * 2001"
            log = {{}}
            [[task]]
            name = "nul"
            every = "1s"
            command = ["/bin/echo", "a\u0000b"]
            [[task]]
            name = "env-keys"
            every = "1s"
            command = ["/bin/true"]
            env = {{ "A=B" = "1", "" = "2" }}
            [[task]]
            name = "workdir"
            every = "1s"
            command = ["/bin/true"]
            workdir = "{missing}"
            [[task]]
            name = "append"
            every = "1s"
            log = {{ append_to = "{dir}" }}
            [[service]]
            name = "missing-inbox"
            file_inbound = {{ dir = "{missing}", command = ["/bin/true"] }}
            [[service]]
            name = "file-inbox"
            file_inbound = {{ dir = "{file}", command = ["/bin/true"] }}
            [[service]]
            name = "done-is-dir"
            file_inbound = {{ dir = "{inbox}", done = "{inbox}/sub/..", command = ["/bin/true"] }}
            "#,
            missing = base.path().join("missing").display(),
            dir = base.path().display(),
            file = a_file.display(),
            inbox = inbox.display(),
        );
        let config = parse(&text).unwrap();
        let mut problems = config.validate();
        problems.extend(config.check_host());
        let fields = fields(&problems);
        for expected in [
            "task[0].cron",
            "task[1].cron",
            "task[2].command[1]",
            "task[3].env",
            "task[4].workdir",
            "task[5].log.append_to",
            "service[0].file_inbound.dir",
            "service[1].file_inbound.dir",
            "service[2].file_inbound.done",
        ] {
            assert!(
                fields.contains(&expected),
                "{expected} missing: {problems:#?}"
            );
        }
        assert_eq!(
            fields.iter().filter(|f| **f == "task[3].env").count(),
            2,
            "both bad names: {problems:#?}"
        );
        assert_eq!(problems.len(), 10, "{problems:#?}");
        let never = problems.iter().find(|p| p.field == "task[0].cron").unwrap();
        assert!(never.reason.contains("never fires"), "{never}");
    }

    #[test]
    fn every_mistake_is_reported_at_once() {
        let text = r#"
            [node]
            id = "node 1"
            cluster = "orders"
            [store]
            url = "redis://rota:hunter2@cache/0"
            [timing]
            heartbeat = "fast"
            [log]
            format = "xml"
            [[task]]
            name = "a"
            cron = "0 0 25 * * *"
            command = []
            [[task]]
            name = "a"
            every = "5s"
            time_zone = "Europe/Paris"
            env = { X = "1" }
            http = { method = "FETCH", url = "ftp://files" }
            [[task]]
            name = "b"
            cron = "0 0 12 * * *"
            every = "1m"
            log = {}
            command = ["true"]
        "#;
        let problems = parse(text).unwrap().validate();
        assert_eq!(
            fields(&problems),
            vec![
                "node.id",
                "store.url",
                "timing.heartbeat",
                "log.format",
                "task[0].cron",
                "task[0].command",
                "task[1].name",
                "task[1].time_zone",
                "task[1].env",
                "task[1].http.method",
                "task[1].http.url",
                "task[2].every",
                "task[2]",
            ],
            "{problems:#?}"
        );
        let cron = &problems[4];
        assert_eq!(cron.value, "0 0 25 * * *");
        assert!(
            cron.to_string()
                .starts_with("task[0].cron = \"0 0 25 * * *\": invalid cron expression"),
            "{cron}"
        );
        assert!(
            cron.reason.contains("Hours") && !cron.reason.contains('\n'),
            "{cron}"
        );
        assert!(
            problems.iter().all(|p| !p.to_string().contains("hunter2")),
            "{problems:#?}"
        );
        assert_eq!(problems[1].value, "redis://rota:***@cache/0");
        assert!(parse(text).unwrap().builder().is_err());
    }
}
