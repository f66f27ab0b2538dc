//! `[[service]]`: a long-running service's placement, restart policy and kind (`command` or
//! `file_inbound`), checked and compiled into a [`ServiceSpec`].

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use rota::{
    core::{
        placement::{PlacementSpec, ResolverSpec},
        schedule::format_duration,
    },
    kinds::{file_inbound::FileHandler, FileInbound, ServiceKind},
    service::ServiceSpec,
    task::RecoveryPolicy,
};

use super::{
    checks::{check_name, duration, ConfigProblem},
    placement::PlacementSection,
    task::{compile_command, compile_http, HttpSection, TaskSection},
};

/// One `[[service]]`: a long-running service of one kind (`command` or `file_inbound`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    #[serde(default)]
    pub name: String,
    /// A supervised process: program and arguments.
    pub command: Option<Vec<String>>,
    pub env: Option<BTreeMap<String, String>>,
    pub workdir: Option<String>,
    pub file_inbound: Option<FileInboundSection>,
    /// How long the service has to stop when it moves or the node stops (default 10s).
    pub grace: Option<String>,
    /// First restart delay after the service exits or fails (default 1s), doubling up to
    /// `restart_backoff_max` (default 60s).
    pub restart_backoff: Option<String>,
    pub restart_backoff_max: Option<String>,
    /// `abandon` (default: at most once) or `retry` (at least once): an item (file) whose node died while handling it.
    pub recovery: Option<String>,
    /// Placement, as for a task.
    pub resolver: Option<String>,
    pub task_server_count: Option<i64>,
    pub task_nodes: Option<Vec<String>>,
    pub primary: Option<String>,
    pub backups: Option<Vec<String>>,
    pub custom: Option<String>,
    pub node_selector: Option<BTreeMap<String, String>>,
}

impl ServiceSection {
    fn placement_keys(&self) -> PlacementSection {
        PlacementSection {
            resolver: self.resolver.clone(),
            task_server_count: self.task_server_count,
            task_nodes: self.task_nodes.clone(),
            primary: self.primary.clone(),
            backups: self.backups.clone(),
            custom: self.custom.clone(),
            node_selector: self.node_selector.clone(),
        }
    }
}

/// `file_inbound = { ... }` of a service.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileInboundSection {
    /// The directory to poll, shared by the nodes that may run the service.
    #[serde(default)]
    pub dir: String,
    /// Where handled files go (default `<dir>/done`); on the same file system as `dir`.
    pub done: Option<String>,
    /// Where failed files go (default `<dir>/failed`).
    pub failed: Option<String>,
    /// How often `dir` is listed (default 1s).
    pub poll: Option<String>,
    /// Each file is handed to this command (`ROTA_FILE` holds its path) ...
    pub command: Option<Vec<String>>,
    pub env: Option<BTreeMap<String, String>>,
    pub workdir: Option<String>,
    /// ... or sent as the body of this request.
    pub http: Option<HttpSection>,
}

/// Builds every service; a service with any problem yields problems and no spec.
pub(super) fn compile_services(
    services: &[ServiceSection],
    tasks: &[TaskSection],
    placement: &PlacementSection,
) -> (Vec<ServiceSpec>, Vec<ConfigProblem>) {
    let mut problems = Vec::new();
    let mut specs = Vec::new();
    let tasks: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let mut first_index: HashMap<&str, usize> = HashMap::new();
    let default_placement = placement
        .compile("placement", None, &mut Vec::new())
        .unwrap_or_default();
    for (i, service) in services.iter().enumerate() {
        let before = problems.len();
        let name = service.name.as_str();
        if let Some(j) = tasks.get(name).filter(|_| !name.is_empty()) {
            problems.push(ConfigProblem::new(
                format!("service[{i}].name"),
                name,
                format!("task[{j}] has this name; tasks and services share one namespace"),
                "give the service its own name",
            ));
        } else if let Some(j) = first_index.get(name).filter(|_| !name.is_empty()) {
            problems.push(ConfigProblem::new(
                format!("service[{i}].name"),
                name,
                format!("service[{j}] has this name too"),
                "give each service its own name",
            ));
        } else {
            first_index.insert(name, i);
        }
        let spec = compile_service(i, service, &default_placement, &mut problems);
        if problems.len() == before {
            specs.extend(spec);
        }
    }
    (specs, problems)
}

/// Checks one `[[service]]` and builds it when it has no problem.
fn compile_service(
    i: usize,
    s: &ServiceSection,
    default_placement: &PlacementSpec,
    p: &mut Vec<ConfigProblem>,
) -> Option<ServiceSpec> {
    let f = |key: &str| format!("service[{i}].{key}");
    let before = p.len();
    check_name(p, &f("name"), &s.name, "name = \"orders-listener\"");
    let positive =
        |p: &mut Vec<ConfigProblem>, key: &str, text: &Option<String>, default: Duration| {
            let Some(text) = text else {
                return default;
            };
            match duration(p, &f(key), text) {
                Some(d) if d.is_zero() => {
                    p.push(ConfigProblem::new(
                        f(key),
                        text,
                        "must be more than 0",
                        format!(
                            "give e.g. \"{}\", or remove it for the default",
                            format_duration(default)
                        ),
                    ));
                    default
                }
                Some(d) => d,
                None => default,
            }
        };
    let grace = positive(p, "grace", &s.grace, ServiceSpec::DEFAULT_GRACE);
    let backoff = positive(
        p,
        "restart_backoff",
        &s.restart_backoff,
        ServiceSpec::DEFAULT_RESTART_BACKOFF,
    );
    let backoff_max = positive(
        p,
        "restart_backoff_max",
        &s.restart_backoff_max,
        ServiceSpec::DEFAULT_RESTART_BACKOFF_MAX,
    );
    if backoff_max < backoff {
        p.push(ConfigProblem::new(
            f("restart_backoff_max"),
            format_duration(backoff_max),
            format!(
                "is less than restart_backoff ({})",
                format_duration(backoff)
            ),
            "make restart_backoff_max at least restart_backoff",
        ));
    }
    let recovery = match s.recovery.as_deref() {
        Some("retry") => RecoveryPolicy::Retry,
        None | Some("abandon") => RecoveryPolicy::Abandon,
        Some(other) => {
            p.push(ConfigProblem::new(
                f("recovery"),
                other,
                "unknown recovery policy",
                "use \"abandon\" (at most once, the default) or \"retry\" (at least once)",
            ));
            RecoveryPolicy::Abandon
        }
    };
    let placement =
        s.placement_keys()
            .compile(&format!("service[{i}]"), Some(default_placement), p);
    let kind = match (&s.command, &s.file_inbound) {
        (Some(_), Some(_)) => {
            p.push(ConfigProblem::new(
                format!("service[{i}]"),
                "command + file_inbound",
                "a service has exactly one kind",
                "keep one of command or file_inbound",
            ));
            None
        }
        (None, None) => {
            p.push(ConfigProblem::new(
                format!("service[{i}]"),
                &s.name,
                "the service has no kind",
                "add command = [\"/path/to/listener\"] or file_inbound = { dir = \"/data/in\", command = [\"/path/to/import\"] }",
            ));
            None
        }
        (Some(argv), None) => {
            compile_command(p, &f("command"), argv, &s.env, &s.workdir).map(ServiceKind::Command)
        }
        (None, Some(fi)) => {
            for (key, set) in [("env", s.env.is_some()), ("workdir", s.workdir.is_some())] {
                if set {
                    p.push(ConfigProblem::new(
                        f(key),
                        "",
                        format!("`{key}` of a file_inbound service goes inside file_inbound"),
                        format!("write file_inbound = {{ ..., {key} = ... }}"),
                    ));
                }
            }
            compile_file_inbound(p, &f("file_inbound"), fi).map(ServiceKind::FileInbound)
        }
    };
    if let (Some(ServiceKind::FileInbound(_)), Some(spec)) = (&kind, &placement) {
        if spec.resolver == ResolverSpec::All {
            p.push(ConfigProblem::new(
                f("resolver"),
                "all",
                "a file_inbound service hands each file to one node; on every node at once, nodes would race for the same files",
                "use one node at a time (active-passive, failover, ...) or give each node its own directory and service",
            ));
        }
    }
    if p.len() != before {
        return None;
    }
    Some(
        kind?
            .into_spec(&s.name)
            .placement(placement?)
            .grace(grace)
            .restart_backoff(backoff, backoff_max)
            .recovery(recovery),
    )
}

fn compile_file_inbound(
    p: &mut Vec<ConfigProblem>,
    field: &str,
    fi: &FileInboundSection,
) -> Option<FileInbound> {
    let f = |key: &str| format!("{field}.{key}");
    let before = p.len();
    if fi.dir.trim().is_empty() {
        p.push(ConfigProblem::new(
            f("dir"),
            "",
            "the directory to poll is missing",
            "add dir = \"/data/inbound\" (a directory every node of the service can reach)",
        ));
    }
    let dir = PathBuf::from(&fi.dir);
    let done = fi
        .done
        .as_ref()
        .map_or_else(|| dir.join("done"), PathBuf::from);
    let failed = fi
        .failed
        .as_ref()
        .map_or_else(|| dir.join("failed"), PathBuf::from);
    // Compared as the kernel resolves them: `<dir>/sub/..` is `<dir>`.
    let (dir_is, done_is, failed_is) = (resolved(&dir), resolved(&done), resolved(&failed));
    if done_is == failed_is {
        p.push(ConfigProblem::new(
            f("failed"),
            failed.display().to_string(),
            "is the same directory as `done`",
            "give handled and failed files their own directories",
        ));
    }
    for (key, path, is) in [("done", &done, &done_is), ("failed", &failed, &failed_is)] {
        if *is == dir_is {
            p.push(ConfigProblem::new(
                f(key),
                path.display().to_string(),
                "is the polled directory itself: files would be handled again",
                "use another directory, e.g. the default <dir>/done",
            ));
        }
    }
    let poll = match &fi.poll {
        Some(text) => match duration(p, &f("poll"), text) {
            Some(d) if d.is_zero() => {
                p.push(ConfigProblem::new(
                    f("poll"),
                    text,
                    "must be more than 0",
                    "give e.g. \"1s\"",
                ));
                None
            }
            d => d,
        },
        None => Some(Duration::from_secs(1)),
    };
    let handler = match (&fi.command, &fi.http) {
        (Some(argv), None) => {
            compile_command(p, &f("command"), argv, &fi.env, &fi.workdir).map(FileHandler::Command)
        }
        (None, Some(h)) => compile_http(p, &f("http"), h).map(FileHandler::Http),
        (Some(_), Some(_)) => {
            p.push(ConfigProblem::new(
                field,
                "command + http",
                "files go to one command or one endpoint",
                "keep one of command or http",
            ));
            None
        }
        (None, None) => {
            p.push(ConfigProblem::new(
                field,
                &fi.dir,
                "files have nowhere to go",
                "add command = [\"/path/to/import\"] (the file's path is in ROTA_FILE) or http = { method = \"POST\", url = \"https://...\" }",
            ));
            None
        }
    };
    if p.len() != before {
        return None;
    }
    Some(FileInbound {
        dir,
        done,
        failed,
        poll: poll?,
        handler: handler?,
    })
}

/// `path` with `.` and `..` resolved: its real path when it exists (symbolic links
/// followed), else by its components.
fn resolved(path: &Path) -> PathBuf {
    if let Ok(real) = path.canonicalize() {
        return real;
    }
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, tests::fields};

    #[test]
    fn service_mistakes_are_named_with_the_fix() {
        let text = r#"
            [node]
            id = "n"
            cluster = "c"
            [store]
            url = "sqlite:///tmp/x.db"
            [[task]]
            name = "shared"
            every = "1s"
            log = {}
            [[service]]
            name = "shared"
            command = ["x"]
            [[service]]
            name = "both"
            command = ["x"]
            file_inbound = { dir = "/in", command = ["y"] }
            [[service]]
            name = "none"
            [[service]]
            name = "files"
            grace = "0s"
            restart_backoff = "10s"
            restart_backoff_max = "1s"
            recovery = "maybe"
            env = { A = "b" }
            file_inbound = { dir = "/in", done = "/in", poll = "soon" }
        "#;
        let problems = parse(text).unwrap().validate();
        assert_eq!(
            fields(&problems),
            vec![
                "service[0].name",
                "service[1]",
                "service[2]",
                "service[3].grace",
                "service[3].restart_backoff_max",
                "service[3].recovery",
                "service[3].env",
                "service[3].file_inbound.done",
                "service[3].file_inbound.poll",
                "service[3].file_inbound",
            ],
            "{problems:#?}"
        );
        assert!(problems[0].reason.contains("task[0]"), "{}", problems[0]);
        assert!(
            problems[2].fix.contains("file_inbound = {"),
            "{}",
            problems[2]
        );
        assert!(problems[9].fix.contains("ROTA_FILE"), "{}", problems[9]);
    }
}
