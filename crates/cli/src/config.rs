//! The TOML configuration of the `rota node` daemon, one file per node.
//!
//! [`load`] reads and parses a file (syntax, types and unknown keys), [`Config::validate`]
//! then reports every remaining problem at once, each naming the field, its value and the
//! fix. `examples/rota.toml` documents every key.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use rota::{
    core::{
        placement::{label_problems, PlacementSpec, ResolverSpec},
        schedule::{format_duration, parse_duration, Schedule, ScheduleError},
    },
    kinds::{
        file_inbound::FileHandler, http, CommandTask, FileInbound, HttpTask, Kind, LogTask,
        ServiceKind,
    },
    node::{validate_name, NodeBuilder, Timing},
    service::ServiceSpec,
    store::redact_url,
    task::{MisfirePolicy, RecoveryPolicy, TaskSpec},
    Error, Node,
};

pub use rota::kinds::command::{
    ADMIN_TOKEN_ENV, CTL_TOKEN_ENV, READ_TOKEN_ENV, SECRET_ENV, STORE_URL_ENV,
};

const STORE_SCHEMES: [&str; 6] = [
    "sqlite",
    "postgres",
    "postgresql",
    "mysql",
    "mariadb",
    "zookeeper",
];
const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

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
    /// `[[task]]` tables, in file order.
    #[serde(default, rename = "task")]
    pub tasks: Vec<TaskSection>,
    /// `[[service]]` tables, in file order.
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceSection>,
    /// `[admin]`: the HTTP admin API (off unless `listen` is set).
    #[serde(default)]
    pub admin: AdminSection,
}

/// Shortest token accepted.
const MIN_TOKEN_LEN: usize = 16;

/// `[admin]`: the HTTP admin API.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// `127.0.0.1:7070`; unset: no API.
    pub listen: Option<String>,
    /// Needed for actions (`ROTA_ADMIN_TOKEN` overrides).
    pub token: Option<String>,
    /// Good for reads only (`ROTA_READ_TOKEN` overrides).
    pub read_token: Option<String>,
    /// PEM certificate chain and key: serve HTTPS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

// Tokens are secrets.
impl fmt::Debug for AdminSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |t: &Option<String>| t.as_ref().map(|_| "<redacted>");
        f.debug_struct("AdminSection")
            .field("listen", &self.listen)
            .field("token", &set(&self.token))
            .field("read_token", &set(&self.read_token))
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .finish()
    }
}

impl AdminSection {
    /// The API settings, tokens from the environment first; `None` without `listen`.
    pub fn resolve(&self) -> Result<Option<rota_admin::AdminConfig>, Vec<ConfigProblem>> {
        let mut p = Vec::new();
        let token = |env: &str, field: &str, file: &Option<String>, p: &mut Vec<ConfigProblem>| {
            let value = std::env::var(env)
                .ok()
                .filter(|v| !v.is_empty())
                .or(file.clone())?;
            if value.trim().len() < MIN_TOKEN_LEN || value.trim() != value {
                p.push(ConfigProblem::new(
                    field,
                    "<redacted>",
                    format!("a token must be at least {MIN_TOKEN_LEN} characters, without surrounding spaces"),
                    format!("use a long random value, e.g. `openssl rand -hex 24`, in {field} or {env}"),
                ));
            }
            Some(rota_admin::Secret::new(value))
        };
        let admin_token = token(ADMIN_TOKEN_ENV, "admin.token", &self.token, &mut p);
        let read_token = token(READ_TOKEN_ENV, "admin.read_token", &self.read_token, &mut p);
        if admin_token.is_some() && admin_token == read_token {
            p.push(ConfigProblem::new(
                "admin.read_token",
                "<redacted>",
                "is the same as the admin token",
                "give the read-only token its own value",
            ));
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => {
                let mut missing = false;
                for (field, path) in [("admin.tls_cert", c), ("admin.tls_key", k)] {
                    if !path.is_file() {
                        missing = true;
                        p.push(ConfigProblem::new(
                            field,
                            path.display().to_string(),
                            "no such file",
                            "give the path of a PEM file",
                        ));
                    }
                }
                // Read them as the server will: unreadable, not PEM, or a key that is not
                // the certificate's is caught here, not when the node starts.
                if !missing {
                    if let Err(rota::Error::Config { field, message }) =
                        rota_admin::tls_acceptor(c, k)
                    {
                        let path = if field == "admin.tls_cert" { c } else { k };
                        p.push(ConfigProblem::from_message(
                            field,
                            path.display().to_string(),
                            &message,
                            "give a PEM certificate chain and its private key",
                        ));
                    }
                }
                Some((c.clone(), k.clone()))
            }
            (None, None) => None,
            (c, _) => {
                let (field, other) = if c.is_some() {
                    ("admin.tls_key", "tls_cert")
                } else {
                    ("admin.tls_cert", "tls_key")
                };
                p.push(ConfigProblem::new(
                    field,
                    "",
                    format!("is missing while {other} is set"),
                    "set both tls_cert and tls_key, or neither for plain HTTP",
                ));
                None
            }
        };
        let listen = match &self.listen {
            None => None,
            Some(l) => match l.parse::<std::net::SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    p.push(ConfigProblem::new(
                        "admin.listen",
                        l,
                        "is not an address with a port",
                        "use host:port with an IP address, e.g. \"127.0.0.1:7070\"",
                    ));
                    None
                }
            },
        };
        if !p.is_empty() {
            return Err(p);
        }
        Ok(listen.map(|listen| rota_admin::AdminConfig {
            listen,
            admin_token,
            read_token,
            tls,
        }))
    }
}

/// `[node]`: who this node is.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Unique in the cluster: a second live node with this id is refused.
    #[serde(default)]
    pub id: String,
    /// The clustering domain; several clusters may share one store.
    #[serde(default)]
    pub cluster: String,
    /// `labels = { zone = "eu" }`: matched by tasks' `node_selector`, seen by custom resolvers.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// What a `restart` command does: `exec` (default) re-executes the binary with the same
    /// arguments, no supervisor needed; `exit` ends with code 75 for a supervisor (systemd:
    /// `Restart=on-failure`) to start it again.
    #[serde(default)]
    pub restart: Option<String>,
}

/// Where tasks run: `[placement]` (the default of every task) or the same keys in a `[[task]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementSection {
    /// `active-passive` (default), `round-robin`, `nodes`, `failover` or `custom`.
    pub resolver: Option<String>,
    /// `round-robin`: nodes to wait for before placing anything (default 1).
    pub task_server_count: Option<i64>,
    /// `nodes`: the only nodes that may run the task.
    pub task_nodes: Option<Vec<String>>,
    /// `failover`: the node that runs the task whenever it is live.
    pub primary: Option<String>,
    /// `failover`: who takes over, in order.
    pub backups: Option<Vec<String>>,
    /// `custom`: the name the resolver is registered under in the embedding program.
    pub custom: Option<String>,
    /// Only nodes with all these labels may run the task.
    pub node_selector: Option<BTreeMap<String, String>>,
}

/// `[store]`: where the nodes meet.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `sqlite:///path`, `postgres://user:pass@host/db`, `mysql://...`; `ROTA_STORE_URL` overrides.
    #[serde(default)]
    pub url: String,
    /// Create or upgrade the schema at start (default true).
    #[serde(default = "yes")]
    pub migrate: bool,
}

fn yes() -> bool {
    true
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            url: String::new(),
            migrate: true,
        }
    }
}

// The URL may hold a password.
impl fmt::Debug for StoreSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSection")
            .field("url", &redact_url(&self.url))
            .field("migrate", &self.migrate)
            .finish()
    }
}

/// `[timing]`: durations such as `"200ms"` or `"1s"`; unset keys keep [`Timing::default`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimingSection {
    pub heartbeat: Option<String>,
    pub node_timeout: Option<String>,
    pub fence_margin: Option<String>,
    pub watch_interval: Option<String>,
    pub shutdown_grace: Option<String>,
    pub handover_timeout: Option<String>,
    pub history_retention: Option<String>,
}

/// `[log]`: how the daemon logs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `human` (default) or `json`.
    #[serde(default = "human")]
    pub format: String,
    /// `trace`, `debug`, `info` (default), `warn`, `error` or `off`.
    #[serde(default = "info")]
    pub level: String,
}

fn human() -> String {
    "human".into()
}

fn info() -> String {
    "info".into()
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: human(),
            level: info(),
        }
    }
}

/// One `[[task]]`: a schedule, policies and exactly one kind (`command`, `http` or `log`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSection {
    #[serde(default)]
    pub name: String,
    /// Cron with seconds (`"0 0 12 * * *"`) or five fields; exclusive with `every`.
    pub cron: Option<String>,
    /// A fixed interval such as `"5s"`; exclusive with `cron`.
    pub every: Option<String>,
    /// IANA time zone of `cron` (default UTC).
    pub time_zone: Option<String>,
    /// `run-once` (default) or `skip`.
    pub misfire: Option<String>,
    /// A fire later than this is a misfire (default 5s).
    pub misfire_threshold: Option<String>,
    /// `abandon` (default: at most once) or `retry` (at least once): what to do with a fire whose node died mid-run.
    pub recovery: Option<String>,
    /// A fire running longer is cancelled (its process group killed) and recorded as timed out.
    pub timeout: Option<String>,
    /// Program and arguments.
    pub command: Option<Vec<String>>,
    /// Extra environment of `command`.
    pub env: Option<BTreeMap<String, String>>,
    /// Working directory of `command`.
    pub workdir: Option<String>,
    /// `command` only: hand the task's saved state over in `ROTA_STATE_FILE` and save what
    /// the command leaves there (default false: no store read per fire).
    pub state: Option<bool>,
    pub http: Option<HttpSection>,
    pub log: Option<LogKindSection>,
    /// Placement of this task; without `resolver`, `[placement]`'s resolver applies, and
    /// without `node_selector`, `[placement]`'s selector. See [`PlacementSection`].
    pub resolver: Option<String>,
    pub task_server_count: Option<i64>,
    pub task_nodes: Option<Vec<String>>,
    pub primary: Option<String>,
    pub backups: Option<Vec<String>>,
    pub custom: Option<String>,
    pub node_selector: Option<BTreeMap<String, String>>,
}

impl TaskSection {
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

/// `http = { ... }` of a task.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Default `GET`.
    #[serde(default = "get")]
    pub method: String,
    #[serde(default)]
    pub url: String,
    /// Header values may hold secrets: they are never logged nor shown in problems.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
}

fn get() -> String {
    "GET".into()
}

impl fmt::Debug for HttpSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSection")
            .field("method", &self.method)
            .field("url", &redact_url(&self.url))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body", &self.body.as_ref().map(String::len))
            .finish()
    }
}

/// `log = { ... }` of a task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogKindSection {
    /// Default `"fire"`.
    pub message: Option<String>,
    /// Appends `"{task} {instant_ms} {node} {token}"` per fire to this file.
    pub append_to: Option<String>,
}

/// One thing wrong with a config: where, what, why and how to fix it.
pub type ConfigProblem = rota::Problem;

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
        problems.extend(self.compile_tasks().1);
        problems.extend(self.compile_services().1);
        problems
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
        match self.compile_tasks() {
            (specs, problems) if problems.is_empty() => Ok(specs),
            (_, problems) => Err(problems),
        }
    }

    /// A node builder with this node's identity, store, timing and tasks; all problems if invalid.
    pub fn builder(&self) -> Result<NodeBuilder, Vec<ConfigProblem>> {
        let mut problems = self.check_settings();
        let (specs, task_problems) = self.compile_tasks();
        problems.extend(task_problems);
        let (services, service_problems) = self.compile_services();
        problems.extend(service_problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        let builder = Node::builder(&self.node.id, &self.node.cluster, &self.store.url)
            .timing(self.timing())
            .migrate(self.store.migrate)
            .labels(self.node.labels.clone());
        let builder = specs.into_iter().fold(builder, NodeBuilder::task);
        Ok(services.into_iter().fold(builder, NodeBuilder::service))
    }

    /// Everything but the tasks.
    fn check_settings(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        check_name(&mut p, "node.id", &self.node.id, "id = \"node-1\"");
        check_name(
            &mut p,
            "node.cluster",
            &self.node.cluster,
            "cluster = \"orders\"",
        );

        let url = &self.store.url;
        let scheme_fix =
            "use sqlite:///path/to/rota.db, postgres://user@host/db or mysql://user@host/db";
        if url.trim().is_empty() {
            p.push(ConfigProblem::new(
                "store.url",
                "",
                "is missing",
                format!("set url = \"sqlite:///var/lib/rota/rota.db\" in [store], or the {STORE_URL_ENV} environment variable"),
            ));
        } else {
            let scheme = url.split_once("://").map(|(s, _)| s);
            if !scheme.is_some_and(|s| STORE_SCHEMES.contains(&s)) {
                let reason = match scheme {
                    Some(s) => format!("unknown scheme `{s}`"),
                    None => "not a URL (no `scheme://`)".to_string(),
                };
                p.push(ConfigProblem::new(
                    "store.url",
                    redact_url(url),
                    reason,
                    scheme_fix,
                ));
            }
        }

        for problem in label_problems("node.labels", &self.node.labels) {
            p.push(problem.under(""));
        }
        self.placement.compile("placement", None, &mut p);

        let before = p.len();
        let timing = self.timing.resolve(&mut p);
        // The relations only make sense once every duration parsed.
        if p.len() == before {
            if let Err(Error::Config { field, message }) = timing.validate() {
                let value = timing_value(&timing, &field);
                p.push(ConfigProblem::from_message(
                    field,
                    value,
                    &message,
                    "adjust [timing]",
                ));
            }
        }

        if !["human", "json"].contains(&self.log.format.as_str()) {
            p.push(ConfigProblem::new(
                "log.format",
                &self.log.format,
                "unknown log format",
                "use \"human\" or \"json\"",
            ));
        }
        if let Some(r) = &self.node.restart {
            if r != "exec" && r != "exit" {
                p.push(ConfigProblem::new(
                    "node.restart",
                    r,
                    "unknown restart mode",
                    "use \"exec\" (re-execute the binary) or \"exit\" (exit with code 75 for a supervisor)",
                ));
            }
        }
        if let Err(problems) = self.admin.resolve() {
            p.extend(problems);
        }
        if !LOG_LEVELS.contains(&self.log.level.as_str()) {
            p.push(ConfigProblem::new(
                "log.level",
                &self.log.level,
                "unknown log level",
                format!("use one of {}", LOG_LEVELS.join(", ")),
            ));
        }
        p
    }

    /// Builds every task; a task with any problem yields problems and no spec.
    fn compile_tasks(&self) -> (Vec<TaskSpec>, Vec<ConfigProblem>) {
        let mut problems = Vec::new();
        let mut specs = Vec::new();
        let mut first_index: HashMap<&str, usize> = HashMap::new();
        // Its problems are reported under `placement.*` by `check_settings`.
        let default_placement = self
            .placement
            .compile("placement", None, &mut Vec::new())
            .unwrap_or_default();
        for (i, task) in self.tasks.iter().enumerate() {
            let before = problems.len();
            if let Some(j) = first_index
                .get(task.name.as_str())
                .filter(|_| !task.name.is_empty())
            {
                problems.push(ConfigProblem::new(
                    format!("task[{i}].name"),
                    &task.name,
                    format!("task[{j}] has this name too"),
                    "give each task its own name",
                ));
            } else {
                first_index.insert(&task.name, i);
            }
            let spec = compile_task(i, task, &default_placement, &mut problems);
            if problems.len() == before {
                specs.extend(spec);
            }
        }
        (specs, problems)
    }
}

impl Config {
    /// Builds every service; a service with any problem yields problems and no spec.
    fn compile_services(&self) -> (Vec<ServiceSpec>, Vec<ConfigProblem>) {
        let mut problems = Vec::new();
        let mut specs = Vec::new();
        let tasks: HashMap<&str, usize> = self
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        let mut first_index: HashMap<&str, usize> = HashMap::new();
        let default_placement = self
            .placement
            .compile("placement", None, &mut Vec::new())
            .unwrap_or_default();
        for (i, service) in self.services.iter().enumerate() {
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
}

impl TimingSection {
    /// The timing, defaults for unset keys; a problem per unparsable duration.
    fn resolve(&self, problems: &mut Vec<ConfigProblem>) -> Timing {
        let mut t = Timing::default();
        let fields: [(&str, &Option<String>, &mut Duration); 7] = [
            ("heartbeat", &self.heartbeat, &mut t.heartbeat),
            ("node_timeout", &self.node_timeout, &mut t.node_timeout),
            ("fence_margin", &self.fence_margin, &mut t.fence_margin),
            (
                "watch_interval",
                &self.watch_interval,
                &mut t.watch_interval,
            ),
            (
                "shutdown_grace",
                &self.shutdown_grace,
                &mut t.shutdown_grace,
            ),
            (
                "handover_timeout",
                &self.handover_timeout,
                &mut t.handover_timeout,
            ),
            (
                "history_retention",
                &self.history_retention,
                &mut t.history_retention,
            ),
        ];
        for (name, text, slot) in fields {
            if let Some(d) = text
                .as_deref()
                .and_then(|text| duration(problems, &format!("timing.{name}"), text))
            {
                *slot = d;
            }
        }
        t
    }
}

const RESOLVERS: [&str; 6] = [
    "active-passive",
    "all",
    "round-robin",
    "nodes",
    "failover",
    "custom",
];

impl PlacementSection {
    /// The placement these keys give, the keys they leave unset taken from `default` (a
    /// task's keys over `[placement]`), or nothing and problems under `prefix`.
    fn compile(
        &self,
        prefix: &str,
        default: Option<&PlacementSpec>,
        p: &mut Vec<ConfigProblem>,
    ) -> Option<PlacementSpec> {
        let f = |key: &str| format!("{prefix}.{key}");
        let before = p.len();
        let list = |v: &Option<Vec<String>>| v.as_ref().map(|v| format!("{v:?}"));
        // Each parameter key, its value, and the resolver it belongs to.
        let params: [(&str, Option<String>, &str); 5] = [
            (
                "task_server_count",
                self.task_server_count.map(|c| c.to_string()),
                "round-robin",
            ),
            ("task_nodes", list(&self.task_nodes), "nodes"),
            ("primary", self.primary.clone(), "failover"),
            ("backups", list(&self.backups), "failover"),
            ("custom", self.custom.clone(), "custom"),
        ];
        let resolver = match self.resolver.as_deref() {
            None => {
                for (key, value, owner) in &params {
                    if let Some(value) = value {
                        p.push(ConfigProblem::new(
                            f(key),
                            value,
                            format!("`{key}` needs resolver = \"{owner}\" in the same table"),
                            format!("add resolver = \"{owner}\", or remove {key}"),
                        ));
                    }
                }
                Some(default.map(|d| d.resolver.clone()).unwrap_or_default())
            }
            Some(name) if !RESOLVERS.contains(&name) => {
                p.push(ConfigProblem::new(
                    f("resolver"),
                    name,
                    "unknown resolver",
                    format!("use one of {}", RESOLVERS.join(", ")),
                ));
                None
            }
            Some(name) => {
                for (key, value, owner) in &params {
                    if let Some(value) = value.as_ref().filter(|_| *owner != name) {
                        p.push(ConfigProblem::new(
                            f(key),
                            value,
                            format!("`{key}` only applies to resolver = \"{owner}\""),
                            format!("remove {key}, or set resolver = \"{owner}\""),
                        ));
                    }
                }
                self.resolver_spec(name, &f, p)
            }
        };
        let node_selector = match &self.node_selector {
            Some(selector) => {
                for problem in label_problems("node_selector", selector) {
                    p.push(problem.under(prefix));
                }
                selector.clone()
            }
            None => default.map(|d| d.node_selector.clone()).unwrap_or_default(),
        };
        let spec = PlacementSpec {
            resolver: resolver?,
            node_selector,
        };
        if self.resolver.is_some() {
            // Checks of the values (the selector's are done above).
            let own = PlacementSpec::from(spec.resolver.clone());
            for problem in own.problems() {
                p.push(problem.under(prefix));
            }
        }
        (p.len() == before).then_some(spec)
    }

    /// The resolver named `name` with its keys; problems for missing ones.
    fn resolver_spec(
        &self,
        name: &str,
        f: &dyn Fn(&str) -> String,
        p: &mut Vec<ConfigProblem>,
    ) -> Option<ResolverSpec> {
        let mut missing = |key: &str, example: &str| {
            p.push(ConfigProblem::new(
                f(key),
                "",
                format!("resolver = \"{name}\" needs `{key}`"),
                format!("add {key} = {example}"),
            ));
        };
        match name {
            "active-passive" => Some(ResolverSpec::ActivePassive),
            "all" => Some(ResolverSpec::All),
            "round-robin" => match self.task_server_count.unwrap_or(1) {
                count if count < 1 => {
                    p.push(ConfigProblem::new(
                        f("task_server_count"),
                        count.to_string(),
                        "must be at least 1",
                        "give the number of nodes to wait for before spreading tasks, e.g. task_server_count = 2 (1 starts at once)",
                    ));
                    None
                }
                count => Some(ResolverSpec::RoundRobin {
                    task_server_count: usize::try_from(count).unwrap_or(usize::MAX),
                }),
            },
            "nodes" => match &self.task_nodes {
                Some(task_nodes) => Some(ResolverSpec::Nodes {
                    task_nodes: task_nodes.clone(),
                }),
                None => {
                    missing("task_nodes", "[\"node-1\", \"node-2\"]");
                    None
                }
            },
            "failover" => {
                if self.primary.is_none() {
                    missing("primary", "\"node-1\"");
                }
                if self.backups.is_none() {
                    missing("backups", "[\"node-2\", \"node-3\"]");
                }
                Some(ResolverSpec::Failover {
                    primary: self.primary.clone()?,
                    backups: self.backups.clone()?,
                })
            }
            "custom" => match &self.custom {
                Some(custom) => Some(ResolverSpec::Custom {
                    name: custom.clone(),
                }),
                None => {
                    missing(
                        "custom",
                        "\"my-resolver\" (the name given to NodeBuilder::resolver_named)",
                    );
                    None
                }
            },
            _ => None,
        }
    }
}

/// The value of a `timing.*` field, for a problem found by [`Timing::validate`].
fn timing_value(t: &Timing, field: &str) -> String {
    let d = match field.strip_prefix("timing.") {
        Some("heartbeat") => t.heartbeat,
        Some("node_timeout") => t.node_timeout,
        Some("fence_margin") => t.fence_margin,
        Some("watch_interval") => t.watch_interval,
        _ => return String::new(),
    };
    rota::core::schedule::format_duration(d)
}

fn check_name(p: &mut Vec<ConfigProblem>, field: &str, value: &str, example: &str) {
    if value.is_empty() {
        p.push(ConfigProblem::new(
            field,
            "",
            "is missing",
            format!("set {example}"),
        ));
    } else if let Err(Error::Config { message, .. }) = validate_name(field, value) {
        p.push(ConfigProblem::from_message(
            field,
            value,
            &message,
            "use 1 to 128 letters, digits, `-`, `_` or `.`",
        ));
    }
}

/// Parses a duration, or records why not.
fn duration(p: &mut Vec<ConfigProblem>, field: &str, text: &str) -> Option<Duration> {
    match parse_duration(text) {
        Ok(d) => Some(d),
        Err(message) => {
            p.push(ConfigProblem::from_message(
                field,
                text,
                &message,
                "write 250ms, 5s, 2m, 1h or 1d",
            ));
            None
        }
    }
}

/// Checks one `[[task]]` and builds it when it has no problem.
fn compile_task(
    i: usize,
    t: &TaskSection,
    default_placement: &PlacementSpec,
    p: &mut Vec<ConfigProblem>,
) -> Option<TaskSpec> {
    let f = |key: &str| format!("task[{i}].{key}");
    let before = p.len();
    check_name(p, &f("name"), &t.name, "name = \"nightly-backup\"");

    let schedule = match (&t.cron, &t.every) {
        (Some(_), Some(every)) => {
            p.push(ConfigProblem::new(
                f("every"),
                every,
                "a task has `cron` or `every`, not both",
                "remove one of them",
            ));
            None
        }
        (None, None) => {
            p.push(ConfigProblem::new(
                f("cron"),
                "",
                "the task has no schedule",
                "add cron = \"0 0 12 * * *\" or every = \"5s\"",
            ));
            None
        }
        (Some(expr), None) => {
            let tz = t.time_zone.as_deref();
            match Schedule::cron(expr, tz) {
                Ok(s)
                    if s.next_after(chrono::Utc::now().timestamp_millis())
                        .is_none() =>
                {
                    p.push(ConfigProblem::new(
                        f("cron"),
                        expr,
                        "never fires: no date matches it from now on (a day a month does not have, or a year past)",
                        "check the day of month, the month and the year, e.g. \"0 0 0 28 2 *\"",
                    ));
                    None
                }
                Ok(s) => Some(s),
                Err(ScheduleError::TimeZone(name)) => {
                    p.push(ConfigProblem::new(
                        f("time_zone"),
                        name,
                        "unknown time zone",
                        "use an IANA name such as \"Europe/Paris\" or \"UTC\"",
                    ));
                    // Still check the expression itself.
                    if let Err(e) = Schedule::cron(expr, None) {
                        p.push(cron_problem(f("cron"), expr, e));
                    }
                    None
                }
                Err(e) => {
                    p.push(cron_problem(f("cron"), expr, e));
                    None
                }
            }
        }
        (None, Some(every)) => {
            if let Some(tz) = &t.time_zone {
                p.push(ConfigProblem::new(
                    f("time_zone"),
                    tz,
                    "a time zone only applies to `cron`",
                    "remove time_zone, or use cron",
                ));
            }
            duration(p, &f("every"), every).and_then(|d| match Schedule::every(d) {
                Ok(s) => Some(s),
                Err(e) => {
                    p.push(ConfigProblem::new(
                        f("every"),
                        every,
                        e.to_string(),
                        "use an interval of at least 1ms, e.g. \"5s\"",
                    ));
                    None
                }
            })
        }
    };

    let misfire = match t.misfire.as_deref() {
        None | Some("run-once") => MisfirePolicy::RunOnce,
        Some("skip") => MisfirePolicy::Skip,
        Some(other) => {
            p.push(ConfigProblem::new(
                f("misfire"),
                other,
                "unknown misfire policy",
                "use \"run-once\" or \"skip\"",
            ));
            MisfirePolicy::RunOnce
        }
    };
    let threshold = match &t.misfire_threshold {
        Some(text) => duration(p, &f("misfire_threshold"), text)
            .unwrap_or(TaskSpec::DEFAULT_MISFIRE_THRESHOLD),
        None => TaskSpec::DEFAULT_MISFIRE_THRESHOLD,
    };
    let recovery = match t.recovery.as_deref() {
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
    let timeout = t
        .timeout
        .as_deref()
        .and_then(|text| match duration(p, &f("timeout"), text) {
            Some(d) if d.is_zero() => {
                p.push(ConfigProblem::new(
                    f("timeout"),
                    text,
                    "must be more than 0",
                    "remove timeout for no limit, or give e.g. \"30s\"",
                ));
                None
            }
            d => d,
        });

    let placement = t
        .placement_keys()
        .compile(&format!("task[{i}]"), Some(default_placement), p);

    let kind = compile_kind(i, t, p);
    if p.len() != before {
        return None;
    }
    let mut spec = kind?
        .into_spec(&t.name, schedule?)
        .misfire(misfire, threshold)
        .recovery(recovery)
        .placement(placement?);
    if let Some(timeout) = timeout {
        spec = spec.timeout(timeout);
    }
    Some(spec)
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

fn cron_problem(field: String, expr: &str, e: ScheduleError) -> ConfigProblem {
    let reason = match e {
        // The cron crate repeats the expression with a caret line under it: keep the words.
        ScheduleError::Cron { reason, .. } => {
            let words: Vec<&str> = reason
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && *l != expr.trim() && !l.chars().all(|c| c == '^'))
                .collect();
            format!("invalid cron expression: {}", words.join(" "))
        }
        other => other.to_string(),
    };
    ConfigProblem::new(
        field,
        expr,
        reason,
        "write 6 fields `sec min hour day-of-month month day-of-week` (or 5 without seconds), e.g. \"0 0 12 * * *\"",
    )
}

fn compile_kind(i: usize, t: &TaskSection, p: &mut Vec<ConfigProblem>) -> Option<Kind> {
    let f = |key: &str| format!("task[{i}].{key}");
    let kinds: Vec<&str> = [
        ("command", t.command.is_some()),
        ("http", t.http.is_some()),
        ("log", t.log.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect();
    if t.command.is_none() {
        if let Some(env) = &t.env {
            let names: Vec<&str> = env.keys().map(String::as_str).collect();
            p.push(ConfigProblem::new(
                f("env"),
                names.join(","),
                "`env` only applies to `command`",
                "remove env, or make this a command task",
            ));
        }
        if let Some(dir) = &t.workdir {
            p.push(ConfigProblem::new(
                f("workdir"),
                dir,
                "`workdir` only applies to `command`",
                "remove workdir, or make this a command task",
            ));
        }
        if let Some(state) = t.state {
            p.push(ConfigProblem::new(
                f("state"),
                state.to_string(),
                "`state` only applies to `command` (other tasks reach their state in code)",
                "remove state, or make this a command task",
            ));
        }
    }
    match kinds.len() {
        0 => {
            p.push(ConfigProblem::new(
                format!("task[{i}]"),
                &t.name,
                "the task has no kind",
                "add one of command = [\"/path/to/program\", \"arg\"], http = { method = \"POST\", url = \"https://...\" } or log = { message = \"...\" }",
            ));
            return None;
        }
        1 => {}
        _ => {
            p.push(ConfigProblem::new(
                format!("task[{i}]"),
                kinds.join(" + "),
                "a task has exactly one kind",
                "keep one of command, http or log and move the others to tasks of their own",
            ));
            return None;
        }
    }
    if let Some(argv) = &t.command {
        return compile_command(p, &f("command"), argv, &t.env, &t.workdir)
            .map(|c| c.with_state(t.state.unwrap_or(false)))
            .map(Kind::from);
    }
    if let Some(h) = &t.http {
        return compile_http(p, &f("http"), h).map(Kind::from);
    }
    let log = t.log.as_ref()?;
    let message = log.message.clone().unwrap_or_else(|| "fire".into());
    Some(LogTask::new(message, log.append_to.as_ref().map(PathBuf::from)).into())
}

fn compile_command(
    p: &mut Vec<ConfigProblem>,
    field: &str,
    argv: &[String],
    env: &Option<BTreeMap<String, String>>,
    workdir: &Option<String>,
) -> Option<CommandTask> {
    // `task[2].command` -> `task[2]`: env and workdir are its siblings.
    let parent = field.rsplit_once('.').map_or(field, |(parent, _)| parent);
    let before = p.len();
    for (j, arg) in argv.iter().enumerate() {
        if arg.contains('\0') {
            p.push(ConfigProblem::new(
                format!("{field}[{j}]"),
                arg.replace('\0', "\\0"),
                "holds a NUL character, which no program argument can",
                "remove the NUL (\\u0000)",
            ));
        }
    }
    for (key, value) in env.iter().flatten() {
        let bad_key = if key.is_empty() {
            Some("is empty")
        } else if key.contains('=') {
            Some("holds `=`, which ends an environment variable's name")
        } else if key.contains('\0') {
            Some("holds a NUL character")
        } else {
            None
        };
        if let Some(reason) = bad_key {
            p.push(ConfigProblem::new(
                format!("{parent}.env"),
                key.replace('\0', "\\0"),
                format!("a variable's name {reason}"),
                "name it with letters, digits and `_`, e.g. TARGET_DIR = \"/data\"",
            ));
        }
        if value.contains('\0') {
            p.push(ConfigProblem::new(
                format!("{parent}.env.{key}"),
                "",
                "the value holds a NUL character, which no environment variable can",
                "remove the NUL (\\u0000)",
            ));
        }
    }
    if let Some(dir) = workdir.as_deref().filter(|d| d.contains('\0')) {
        p.push(ConfigProblem::new(
            format!("{parent}.workdir"),
            dir.replace('\0', "\\0"),
            "holds a NUL character, which no path can",
            "remove the NUL (\\u0000)",
        ));
    }
    if p.len() != before {
        return None;
    }
    let env = env.clone().unwrap_or_default();
    match CommandTask::new(argv.to_vec(), env, workdir.as_ref().map(PathBuf::from)) {
        Ok(k) => Some(k),
        Err(message) => {
            p.push(ConfigProblem::from_message(
                field,
                format!("{argv:?}"),
                &message,
                "give the program and its arguments",
            ));
            None
        }
    }
}

/// `field` is the `http` table's place, e.g. `task[2].http`.
fn compile_http(p: &mut Vec<ConfigProblem>, field: &str, h: &HttpSection) -> Option<HttpTask> {
    let f = |key: &str| format!("{field}.{key}");
    {
        let before = p.len();
        if let Err(message) = http::parse_method(&h.method) {
            p.push(ConfigProblem::from_message(
                f("method"),
                &h.method,
                &message,
                "use GET or POST",
            ));
        }
        if let Err(message) = http::parse_url(&h.url) {
            p.push(ConfigProblem::new(
                f("url"),
                redact_url(&h.url),
                message,
                "write an absolute URL such as \"https://example.com/hook\"",
            ));
        }
        for (name, value) in &h.headers {
            if let Err(message) = http::parse_header(name, value) {
                // Never echo the value: it may be a secret.
                p.push(ConfigProblem::from_message(
                    f(&format!("headers.{name}")),
                    "",
                    &message,
                    "fix the header",
                ));
            }
        }
        if p.len() != before {
            return None;
        }
        match HttpTask::new(&h.method, &h.url, &h.headers, h.body.clone()) {
            Ok(k) => Some(k),
            Err(message) => {
                p.push(ConfigProblem::new(
                    field,
                    "",
                    message,
                    "check the http settings",
                ));
                None
            }
        }
    }
}

/// One problem from a TOML error, located as precisely as the error allows.
fn toml_problem(text: &str, e: &toml::de::Error) -> ConfigProblem {
    // One line: the parser's message may run over several.
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    let Some(span) = e
        .span()
        .filter(|s| s.start <= text.len() && s.end <= text.len())
    else {
        return ConfigProblem::new("config", "", message, "correct the TOML");
    };
    let line_start = text[..span.start].rfind('\n').map_or(0, |n| n + 1);
    let line_end = text[span.start..]
        .find('\n')
        .map_or(text.len(), |n| span.start + n);
    let line_no = text[..span.start].matches('\n').count() + 1;
    let column = text[line_start..span.start].chars().count() + 1;
    let prefix = &text[line_start..span.start];
    // An error in a table header is about the header itself, not about the table before it.
    let header = text[line_start..line_end].trim();
    if header.starts_with('[') {
        return ConfigProblem::new(
            "config",
            redact_url(header),
            format!("line {line_no}, column {column}: {message}"),
            "write the header as [section] or [[task]] / [[service]]",
        );
    }

    // The key: named by the message for unknown or duplicate keys, else the one before `=`.
    let named = ["unknown field `", "duplicate key `"]
        .iter()
        .find_map(|start| message.strip_prefix(start))
        .and_then(|rest| rest.split('`').next());
    let key_before = |s: &str| -> Option<String> {
        let k = s.trim_end().trim_end_matches('=').trim_end();
        let k = k
            .rsplit(|c: char| c.is_whitespace() || c == '{' || c == ',')
            .next()?;
        (!k.is_empty()).then(|| k.trim_matches('"').to_string())
    };
    let mut keys = Vec::new();
    // Inside an inline table (`http = { ... }`), the table's key comes first.
    if let Some(brace) = prefix.find('{') {
        keys.extend(key_before(&prefix[..brace]));
    }
    match named {
        Some(k) => keys.push(k.to_string()),
        None => {
            if let Some(eq) = prefix.rfind('=') {
                keys.extend(key_before(&prefix[..=eq]));
            }
        }
    }
    keys.dedup();
    let mut path: Vec<String> = section_at(text, line_start).into_iter().collect();
    path.extend(keys);
    let field = if path.is_empty() {
        "config".to_string()
    } else {
        path.join(".")
    };

    // A key named by the message is already in `field`.
    // The whole value: a span may point at its first character only (a number too large).
    let value: String = if named.is_some() {
        String::new()
    } else {
        let token_end = text[span.start..line_end]
            .find([' ', '\t', '\r', ',', '}', ']', '#'])
            .map_or(line_end, |n| span.start + n);
        text[span.start..span.end.max(token_end)]
            .chars()
            .take(80)
            .collect()
    };
    let fix = if named.is_some_and(|_| message.starts_with("unknown field")) {
        "correct or remove the key; the allowed keys are listed above"
    } else {
        "correct the TOML at that place"
    };
    ConfigProblem::new(
        field,
        redact_url(value.trim()),
        format!("line {line_no}, column {column}: {message}"),
        fix,
    )
}

/// The table a position is in (`store`, `task[1]`, `task[1].http`), from the headers before it.
fn section_at(text: &str, pos: usize) -> Option<String> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut current = None;
    for line in text[..pos].lines() {
        let l = line.trim();
        let (name, array) = if let Some(rest) = l.strip_prefix("[[") {
            (rest.split("]]").next().unwrap_or("").trim(), true)
        } else if let Some(rest) = l.strip_prefix('[') {
            (rest.split(']').next().unwrap_or("").trim(), false)
        } else {
            continue;
        };
        if array {
            *counts.entry(name.to_string()).or_default() += 1;
        }
        // Index array tables by their occurrence: `[[task]]` -> `task[n]`, `[task.http]` -> `task[n].http`.
        let (head, tail) = name
            .split_once('.')
            .map_or((name, None), |(h, t)| (h, Some(t)));
        let head = match counts.get(head) {
            Some(n) => format!("{head}[{}]", n - 1),
            None => head.to_string(),
        };
        current = Some(match tail {
            Some(t) => format!("{head}.{t}"),
            None => head,
        });
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../examples/rota.toml");

    fn fields(problems: &[ConfigProblem]) -> Vec<&str> {
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
        let (services, problems) = config.compile_services();
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

    #[test]
    fn full_config_maps_onto_specs_and_timing() {
        let text = r#"
            [node]
            id = "node-1"
            cluster = "orders"
            [store]
            url = "sqlite:///tmp/rota.db"
            migrate = false
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

    /// A TOML syntax error names the place it is at: a broken table header is not a key of
    /// the table before it, and a number too large is shown whole.
    #[test]
    fn toml_errors_name_their_place_and_show_the_whole_value() {
        let header =
            parse("[store]\nurl = \"sqlite:///x.db\"\n[[task]\nname = \"a\"\n").unwrap_err();
        assert_eq!(header[0].field, "config", "{}", header[0]);
        assert_eq!(header[0].value, "[[task]", "{}", header[0]);
        assert!(!header[0].reason.contains('\n'), "{}", header[0]);
        let number = parse(
            "[[task]]\nname = \"a\"\nevery = \"1s\"\nlog = {}\nstate = 99999999999999999999\n",
        )
        .unwrap_err();
        assert_eq!(number[0].value, "99999999999999999999", "{}", number[0]);
    }

    #[test]
    fn tls_files_are_read_by_the_check_as_the_server_reads_them() {
        let fixture = |name: &str| format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let problems = |cert: &str, key: &str| {
            parse(&format!(
                "[node]\nid = \"n1\"\n[store]\nurl = \"sqlite:///tmp/x.db\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
                fixture(cert),
                fixture(key)
            ))
            .unwrap()
            .validate()
            .into_iter()
            .filter(|p| p.field.starts_with("admin.tls"))
            .collect::<Vec<_>>()
        };
        assert_eq!(problems("admin-test.crt", "admin-test.key"), vec![]);
        // A key that is not the certificate's.
        let mismatched = problems("admin-test.crt", "unrelated.key");
        assert_eq!(mismatched.len(), 1, "{mismatched:?}");
        assert_eq!(mismatched[0].field, "admin.tls_key", "{}", mismatched[0]);
        // A certificate where the key should be, and the other way round.
        let not_a_key = problems("admin-test.crt", "admin-test-ca.crt");
        assert_eq!(not_a_key[0].field, "admin.tls_key", "{}", not_a_key[0]);
        let not_a_cert = problems("admin-test.key", "admin-test.key");
        assert_eq!(not_a_cert[0].field, "admin.tls_cert", "{}", not_a_cert[0]);
    }

    /// Durations past the bound (and past u64) are problems naming their field, not panics.
    #[test]
    fn durations_too_long_are_problems_naming_their_field() {
        let text = r#"
            [node]
            id = "n"
            cluster = "c"
            [store]
            url = "sqlite:///tmp/x.db"
            [[task]]
            name = "huge"
            every = "18446744073709551615d"
            log = {}
            [[task]]
            name = "long"
            every = "200000000000d"
            timeout = "99999999999999999999999999s"
            log = {}
        "#;
        let problems = parse(text).unwrap().validate();
        assert_eq!(
            fields(&problems),
            vec!["task[0].every", "task[1].every", "task[1].timeout"],
            "{problems:?}"
        );
        assert!(problems
            .iter()
            .all(|p| p.to_string().contains("longer than 3650d")));
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

    #[test]
    fn timing_relations_and_missing_keys() {
        let config = parse(
            "[timing]\nheartbeat = \"500ms\"\nnode_timeout = \"1s\"\n[[task]]\nname = \"x\"\n",
        )
        .unwrap();
        let problems = config.validate();
        assert_eq!(
            fields(&problems),
            vec![
                "node.id",
                "node.cluster",
                "store.url",
                "timing.node_timeout",
                "task[0].cron",
                "task[0]"
            ],
            "{problems:#?}"
        );
        assert_eq!(problems[3].value, "1s");
        assert!(
            problems[3].fix.contains("raise node_timeout"),
            "{}",
            problems[3]
        );
        assert_eq!(
            problems[0].to_string(),
            "node.id: is missing; fix: set id = \"node-1\""
        );
    }

    #[test]
    fn unknown_field_is_named_with_its_place() {
        let text = "[node]\nid = \"n\"\ncluster = \"c\"\n[[task]]\nname = \"a\"\nevery = \"1s\"\nlog = {}\n[[task]]\nname = \"b\"\ncrn = \"0 * * * * *\"\n";
        let problems = parse(text).unwrap_err();
        assert_eq!(problems.len(), 1);
        let p = &problems[0];
        assert_eq!(p.field, "task[1].crn", "{p}");
        assert!(
            p.reason.contains("line 10") && p.reason.contains("crn"),
            "{p}"
        );
        let inline = parse("[[task]]\nname = \"a\"\nhttp = { methd = \"GET\" }\n").unwrap_err();
        assert_eq!(inline[0].field, "task[0].http.methd", "{}", inline[0]);
        let typed = parse("[timing]\nheartbeat = 200\n").unwrap_err();
        assert_eq!(typed[0].field, "timing.heartbeat", "{}", typed[0]);
        let syntax = parse("[store]\nurl = \"postgres://u:pw@db/x\n").unwrap_err();
        assert!(!syntax[0].to_string().contains("pw@"), "{}", syntax[0]);
    }

    #[test]
    fn store_url_override_and_redaction() {
        let mut config = parse("[store]\nurl = \"sqlite:///from/file.db\"\n").unwrap();
        config.apply_store_url_override(None);
        assert_eq!(config.store.url, "sqlite:///from/file.db");
        config.apply_store_url_override(Some(String::new()));
        assert_eq!(config.store.url, "sqlite:///from/file.db");
        config.apply_store_url_override(Some("postgres://rota:s3cret@db/rota".into()));
        assert_eq!(config.store.url, "postgres://rota:s3cret@db/rota");
        assert!(!format!("{config:?}").contains("s3cret"));

        config.store.url = "postgress://rota:s3cret@db/rota".into();
        let problem = config
            .validate()
            .into_iter()
            .find(|p| p.field == "store.url")
            .unwrap();
        assert_eq!(problem.value, "postgress://rota:***@db/rota");
        config.store.url = "rota:s3cret@db".into();
        let problem = config
            .validate()
            .into_iter()
            .find(|p| p.field == "store.url")
            .unwrap();
        assert!(!problem.to_string().contains("s3cret"), "{problem}");
    }

    #[test]
    fn placement_defaults_apply_to_tasks_without_their_own() {
        let text = r#"
            [node]
            id = "node-1"
            cluster = "orders"
            labels = { zone = "eu", tier = "gold" }
            [store]
            url = "sqlite:///tmp/rota.db"
            [placement]
            resolver = "round-robin"
            task_server_count = 2
            [[task]]
            name = "spread"
            every = "1s"
            log = {}
            [[task]]
            name = "pinned"
            every = "1s"
            log = {}
            resolver = "failover"
            primary = "node-1"
            backups = ["node-2", "node-3"]
            node_selector = { zone = "eu" }
            [[task]]
            name = "eu-spread"
            every = "1s"
            log = {}
            node_selector = { zone = "eu" }
            [[task]]
            name = "only-some"
            every = "1s"
            log = {}
            resolver = "nodes"
            task_nodes = ["node-1", "node-x"]
            [[task]]
            name = "mine"
            every = "1s"
            log = {}
            resolver = "custom"
            custom = "eu-first"
            [[task]]
            name = "classic"
            every = "1s"
            log = {}
            resolver = "active-passive"
        "#;
        let config = parse(text).unwrap();
        assert_eq!(config.validate(), vec![]);
        let specs = config.task_specs().unwrap();
        let eu = |s: PlacementSpec| s.on_label("zone", "eu");
        assert_eq!(specs[0].placement, PlacementSpec::round_robin(2));
        assert_eq!(
            specs[1].placement,
            eu(PlacementSpec::failover("node-1", ["node-2", "node-3"]))
        );
        assert_eq!(specs[2].placement, eu(PlacementSpec::round_robin(2)));
        assert_eq!(
            specs[3].placement,
            PlacementSpec::nodes(["node-1", "node-x"])
        );
        assert_eq!(specs[4].placement, PlacementSpec::custom("eu-first"));
        assert_eq!(specs[5].placement, PlacementSpec::active_passive());
        assert_eq!(config.node.labels["tier"], "gold");
        config.builder().unwrap().validate().unwrap();

        // Without [placement], tasks are active-passive, as before.
        let plain = parse("[[task]]\nname = \"a\"\nevery = \"1s\"\nlog = {}\n").unwrap();
        assert_eq!(
            plain.task_specs().unwrap()[0].placement,
            PlacementSpec::default()
        );
    }

    #[test]
    fn placement_mistakes_are_named_with_the_fix() {
        let text = r#"
            [node]
            id = "node-1"
            cluster = "orders"
            labels = { zone = "e u" }
            [store]
            url = "sqlite:///tmp/rota.db"
            [placement]
            resolver = "round-robin"
            task_server_count = 0
            [[task]]
            name = "a"
            every = "1s"
            log = {}
            resolver = "random"
            [[task]]
            name = "b"
            every = "1s"
            log = {}
            resolver = "nodes"
            task_nodes = []
            [[task]]
            name = "c"
            every = "1s"
            log = {}
            resolver = "failover"
            primary = "node-1"
            backups = ["node-2", "node-1"]
            [[task]]
            name = "d"
            every = "1s"
            log = {}
            resolver = "failover"
            primary = "node-1"
            task_nodes = ["node-2"]
            [[task]]
            name = "e"
            every = "1s"
            log = {}
            task_server_count = 3
            [[task]]
            name = "f"
            every = "1s"
            log = {}
            resolver = "round-robin"
            task_server_count = -2
            [[task]]
            name = "g"
            every = "1s"
            log = {}
            resolver = "custom"
            node_selector = { "zone" = "" }
        "#;
        let problems = parse(text).unwrap().validate();
        assert_eq!(
            fields(&problems),
            vec![
                "node.labels.zone",
                "placement.task_server_count",
                "task[0].resolver",
                "task[1].task_nodes",
                "task[2].backups[1]",
                "task[3].task_nodes",
                "task[3].backups",
                "task[4].task_server_count",
                "task[5].task_server_count",
                "task[6].custom",
                "task[6].node_selector.zone",
            ],
            "{problems:#?}"
        );
        let by_field = |f: &str| problems.iter().find(|p| p.field == f).unwrap();
        let zero = by_field("placement.task_server_count");
        assert_eq!(zero.value, "0");
        assert!(zero.fix.contains("task_server_count = 2"), "{zero}");
        assert!(by_field("task[0].resolver").fix.contains("round-robin"));
        assert!(by_field("task[1].task_nodes").reason.contains("empty"));
        let dup = by_field("task[2].backups[1]");
        assert_eq!(dup.value, "node-1");
        assert!(dup.reason.contains("primary"), "{dup}");
        assert!(by_field("task[3].task_nodes")
            .reason
            .contains("only applies to resolver = \"nodes\""));
        assert!(by_field("task[3].backups")
            .reason
            .contains("needs `backups`"));
        assert!(by_field("task[4].task_server_count")
            .fix
            .contains("add resolver = \"round-robin\""));
        assert_eq!(by_field("task[5].task_server_count").value, "-2");
        // Unknown node names are fine: nodes may join later.
        assert!(!problems.iter().any(|p| p.value.contains("node-x")));
        let unknown = parse("[placement]\nresolvr = \"nodes\"\n").unwrap_err();
        assert_eq!(unknown[0].field, "placement.resolvr", "{}", unknown[0]);
    }

    #[test]
    fn header_values_never_appear_in_problems() {
        let text = "[[task]]\nname = \"h\"\nevery = \"1s\"\nhttp = { url = \"https://x\", headers = { \"X-Key\" = \"sec\\nret\" } }\n";
        let problems = parse(text).unwrap().validate();
        let p = problems
            .iter()
            .find(|p| p.field == "task[0].http.headers.X-Key")
            .unwrap();
        assert!(!p.to_string().contains("sec"), "{p}");
    }
}
