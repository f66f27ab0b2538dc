//! Cluster commands, as data: what an operator asks for, to whom, and the state the command
//! log adds up to. Pure: the store keeps the log and the acknowledgements, the node applies
//! effects; this module decides (contract 8).
//!
//! The log is the durable record of control state. Every node folds the whole log, in
//! sequence order, into a [`ControlState`]: which tasks are paused (and where), which nodes
//! are drained, who acts as whom, each node's log level. So a paused task stays paused
//! across restarts of every node, and a node that joins for the first time obeys commands
//! issued before it existed. One-shot operations (restart, shutdown, rolling restart) act
//! on their targets only, once.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// What a command does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Operation {
    /// Stop firing a scheduled task (on the scope's nodes; everywhere: it is unplaced).
    Pause {
        task: String,
    },
    /// Undo [`Operation::Pause`]; instants that passed while paused are not made up.
    Resume {
        task: String,
    },
    /// Stop a service (as pause, for services).
    Stop {
        service: String,
    },
    /// Undo [`Operation::Stop`].
    Start {
        service: String,
    },
    /// Move the scope's work away and keep it away, across restarts.
    Drain,
    Undrain,
    /// The scope's nodes take `node`'s place in failover lists (pinned services): placed just
    /// before it, they run what it would run, whether it is up or not, until stop-acting.
    ActAs {
        node: String,
    },
    StopActing,
    /// Restart the scope's nodes (graceful leave, then re-execute or exit).
    Restart,
    /// Stop the scope's nodes gracefully; they stay down.
    Shutdown,
    /// Set the scope's log level (`trace` ... `off`), or back to the config's with `config`.
    SetLogLevel {
        level: String,
    },
    /// Restart the targets one at a time, in order, each once it is back (driven by the
    /// leader; see [`rolling_step`]).
    RollingRestart {
        timeout_secs: u64,
    },
    /// Start one extra fire of a task now, on its owner ("run now"), claimed and fenced like
    /// a scheduled one, with `env` added to a command task's environment. Every node folds
    /// it ([`ControlState::runs`]); whichever node owns the task starts it, once.
    Run {
        task: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
    },
    /// Replace the cluster's own task and service definitions with `document` (the TOML of
    /// `[[task]]` and `[[service]]` tables, as a node's file has them; empty: none). Every
    /// node folds it ([`ControlState::definitions`]) and runs what it defines.
    Define {
        document: String,
    },
}

/// Log levels a command may set; `config` returns to the configured one.
pub const LOG_LEVELS: [&str; 7] = ["trace", "debug", "info", "warn", "error", "off", "config"];

/// Longest rolling restart wait for one node.
pub const MAX_ROLLING_TIMEOUT_SECS: u64 = 3600;

impl Operation {
    /// The name used in logs, the API and `rota ctl`.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Pause { .. } => "pause",
            Operation::Resume { .. } => "resume",
            Operation::Stop { .. } => "stop",
            Operation::Start { .. } => "start",
            Operation::Drain => "drain",
            Operation::Undrain => "undrain",
            Operation::ActAs { .. } => "act_as",
            Operation::StopActing => "stop_acting",
            Operation::Restart => "restart",
            Operation::Shutdown => "shutdown",
            Operation::SetLogLevel { .. } => "set_log_level",
            Operation::RollingRestart { .. } => "rolling_restart",
            Operation::Run { .. } => "run",
            Operation::Define { .. } => "define",
        }
    }

    /// What is wrong with this operation, if anything: `(field, message with the fix)`.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        // Names follow the rule of every name rota stores.
        let bad_name = |field: &'static str, value: &str| {
            crate::names::check_name(value)
                .err()
                .map(|message| (field, message))
        };
        match self {
            Operation::Pause { task } | Operation::Resume { task } => bad_name("task", task),
            Operation::Run { task, env } => bad_name("task", task).or_else(|| env_problem(env)),
            Operation::Stop { service } | Operation::Start { service } => {
                bad_name("service", service)
            }
            Operation::ActAs { node } => bad_name("node", node),
            Operation::SetLogLevel { level } if !LOG_LEVELS.contains(&level.as_str()) => Some((
                "level",
                format!("`{level}` is not a log level; use one of {}", LOG_LEVELS.join(", ")),
            )),
            Operation::RollingRestart { timeout_secs }
                if *timeout_secs == 0 || *timeout_secs > MAX_ROLLING_TIMEOUT_SECS =>
            {
                Some((
                    "timeout_secs",
                    format!(
                        "{timeout_secs} is out of range; give 1 to {MAX_ROLLING_TIMEOUT_SECS} seconds"
                    ),
                ))
            }
            _ => None,
        }
    }
}

/// Most variables a run-now adds to a command's environment.
pub const MAX_RUN_ENV: usize = 32;
/// Longest value of one such variable, in characters.
pub const MAX_RUN_ENV_VALUE: usize = 4096;

/// What is wrong with a run-now's environment, if anything.
fn env_problem(env: &BTreeMap<String, String>) -> Option<(&'static str, String)> {
    if env.len() > MAX_RUN_ENV {
        return Some((
            "env",
            format!("{} variables is more than the {MAX_RUN_ENV} a run takes; pass fewer, or a file's path", env.len()),
        ));
    }
    for (key, value) in env {
        let well_formed = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && key.len() <= 128;
        if !well_formed {
            return Some((
                "env",
                format!("`{}` is not a variable name; use letters, digits and `_`, not starting with a digit", key.chars().take(40).collect::<String>()),
            ));
        }
        if value.chars().count() > MAX_RUN_ENV_VALUE || value.contains('\0') {
            return Some((
                "env",
                format!("the value of `{key}` is over {MAX_RUN_ENV_VALUE} characters or holds a NUL; pass a file's path instead"),
            ));
        }
    }
    None
}

/// A run-now request as the log folds it: which command, when, with what, asked by whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManualRun {
    /// The `run` command's sequence number: the run's id.
    pub seq: i64,
    /// Store time of the command: the run is due then.
    pub issued_at_ms: i64,
    pub env: BTreeMap<String, String>,
    /// The token that asked for it.
    pub requested_by: Option<String>,
}

/// Run-now requests each task keeps in the fold, the newest: a new owner looks at these.
pub const RUNS_KEPT: usize = 32;

/// Which nodes a command addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every node, including nodes that join later (for state) and the live ones (targets).
    Cluster,
    /// These nodes only, whether they are up or not.
    Nodes(Vec<String>),
}

impl Scope {
    pub fn includes(&self, node: &str) -> bool {
        match self {
            Scope::Cluster => true,
            Scope::Nodes(nodes) => nodes.iter().any(|n| n == node),
        }
    }
}

/// A command as it is kept in the store's log (the JSON body of one entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandBody {
    #[serde(flatten)]
    pub op: Operation,
    pub scope: Scope,
    /// The nodes that must acknowledge it, in order (a rolling restart's order): the named
    /// nodes, or for the cluster scope the nodes live when it was issued.
    pub targets: Vec<String>,
    /// Who issued it (the node whose API accepted it, or the leader driving a rolling restart).
    pub issued_by: String,
    /// The name of the API token that asked for it (absent in commands rota issues itself,
    /// and in logs written before tokens had names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
}

/// A command with its place in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Command {
    pub seq: i64,
    /// Store time when it was appended.
    pub issued_at_ms: i64,
    #[serde(flatten)]
    pub body: CommandBody,
}

/// How far a node got with a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckState {
    /// A target that has not acknowledged yet (never stored: the absence of an ack).
    Pending,
    /// Under way: a drain waiting for its work to move, a node restarting in a rolling restart.
    InProgress,
    Applied,
    Failed,
}

impl AckState {
    pub fn as_str(self) -> &'static str {
        match self {
            AckState::Pending => "pending",
            AckState::InProgress => "in_progress",
            AckState::Applied => "applied",
            AckState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<AckState> {
        [
            AckState::Pending,
            AckState::InProgress,
            AckState::Applied,
            AckState::Failed,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }

    /// Applied or failed: nothing more will happen.
    pub fn is_final(self) -> bool {
        matches!(self, AckState::Applied | AckState::Failed)
    }
}

/// One node's acknowledgement of one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ack {
    pub seq: i64,
    pub node: String,
    /// The incarnation it concerns (for a rolling restart in progress: the one restarting).
    pub incarnation: i64,
    pub state: AckState,
    pub message: String,
    /// Store time of the acknowledgement.
    pub at_ms: i64,
}

/// A value set for the whole cluster and overridden per node: a command with the cluster
/// scope sets the default and clears the overrides; one naming nodes sets their overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Setting<T> {
    default: Option<T>,
    nodes: BTreeMap<String, T>,
}

impl<T> Default for Setting<T> {
    fn default() -> Self {
        Setting {
            default: None,
            nodes: BTreeMap::new(),
        }
    }
}

impl<T: Clone> Setting<T> {
    fn set(&mut self, scope: &Scope, value: T) {
        match scope {
            Scope::Cluster => {
                self.default = Some(value);
                self.nodes.clear();
            }
            Scope::Nodes(nodes) => {
                for n in nodes {
                    self.nodes.insert(n.clone(), value.clone());
                }
            }
        }
    }

    fn get(&self, node: &str) -> Option<&T> {
        self.nodes.get(node).or(self.default.as_ref())
    }
}

/// What the command log adds up to. Every node folds the same log the same way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlState {
    /// The last sequence number folded in.
    pub through: i64,
    /// Paused tasks and stopped services (one namespace), with the command that did it.
    paused: BTreeMap<String, (Setting<bool>, i64)>,
    /// Store time of each task's last resume: a new owner does not make up instants before it.
    resumed_at: BTreeMap<String, i64>,
    drained: Setting<bool>,
    acting_as: Setting<Option<String>>,
    log_level: Setting<Option<String>>,
    /// Each task's latest run-now requests, by sequence number (at most [`RUNS_KEPT`]).
    runs: BTreeMap<String, BTreeMap<i64, ManualRun>>,
    /// The sequence number of the last run-now request folded (0: none).
    last_run: i64,
    /// The cluster's own definitions: the last `define` command.
    definitions: Option<Definitions>,
}

/// The cluster's own task and service definitions, as the last `define` command set them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Definitions {
    /// The `define` command's sequence number: the version of the definitions.
    pub version: i64,
    pub defined_at_ms: i64,
    /// The TOML document, as applied.
    pub document: String,
    /// The token that applied it.
    pub requested_by: Option<String>,
}

impl ControlState {
    /// Folds one command in. Commands must come in sequence order; older ones are ignored.
    pub fn apply(&mut self, command: &Command) {
        if command.seq <= self.through {
            return;
        }
        self.through = command.seq;
        let scope = &command.body.scope;
        match &command.body.op {
            Operation::Pause { task: name } | Operation::Stop { service: name } => {
                let entry = self.paused.entry(name.clone()).or_default();
                entry.0.set(scope, true);
                entry.1 = command.seq;
            }
            Operation::Resume { task: name } | Operation::Start { service: name } => {
                if let Some(entry) = self.paused.get_mut(name) {
                    entry.0.set(scope, false);
                    if entry.0.default != Some(true) && entry.0.nodes.values().all(|p| !p) {
                        self.paused.remove(name);
                    }
                }
                self.resumed_at.insert(name.clone(), command.issued_at_ms);
            }
            Operation::Drain => self.drained.set(scope, true),
            Operation::Undrain => self.drained.set(scope, false),
            Operation::ActAs { node } => self.acting_as.set(scope, Some(node.clone())),
            Operation::StopActing => self.acting_as.set(scope, None),
            Operation::SetLogLevel { level } => {
                let level = (level != "config").then(|| level.clone());
                self.log_level.set(scope, level)
            }
            Operation::Run { task, env } => {
                let runs = self.runs.entry(task.clone()).or_default();
                runs.insert(
                    command.seq,
                    ManualRun {
                        seq: command.seq,
                        issued_at_ms: command.issued_at_ms,
                        env: env.clone(),
                        requested_by: command.body.requested_by.clone(),
                    },
                );
                while runs.len() > RUNS_KEPT {
                    runs.pop_first();
                }
                self.last_run = command.seq;
            }
            Operation::Define { document } => {
                self.definitions = Some(Definitions {
                    version: command.seq,
                    defined_at_ms: command.issued_at_ms,
                    document: document.clone(),
                    requested_by: command.body.requested_by.clone(),
                });
            }
            Operation::Restart | Operation::Shutdown | Operation::RollingRestart { .. } => {}
        }
    }

    /// The cluster's own definitions, if any were ever applied.
    pub fn definitions(&self) -> Option<&Definitions> {
        self.definitions.as_ref()
    }

    /// The latest run-now requests of `task`, oldest first.
    pub fn runs(&self, task: &str) -> Vec<ManualRun> {
        self.runs
            .get(task)
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The sequence number of the last run-now request folded: the runs changed since a
    /// caller saw another (0: none ever).
    pub fn last_run(&self) -> i64 {
        self.last_run
    }

    /// The run-now request `seq` of `task`, if the fold still keeps it.
    pub fn run(&self, task: &str, seq: i64) -> Option<&ManualRun> {
        self.runs.get(task)?.get(&seq)
    }

    /// Is `task` (or a service) paused on `node`? A per-node share `task@node` follows `task`.
    pub fn is_paused(&self, node: &str, task: &str) -> bool {
        let base = crate::placement::split_per_node_name(task).map_or(task, |(t, _)| t);
        self.paused
            .get(base)
            .is_some_and(|(s, _)| s.get(node).copied().unwrap_or(false))
    }

    /// Tasks and services paused on `node` (cluster-wide, unless it resumed them for itself).
    pub fn paused_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.paused
            .keys()
            .map(String::as_str)
            .filter(move |task| self.is_paused(node, task))
    }

    /// Tasks paused cluster-wide, with the command that paused them (nodes that override
    /// with a node-scoped resume still run them).
    pub fn paused_in_cluster(&self) -> impl Iterator<Item = (&str, i64)> {
        self.paused
            .iter()
            .filter(|(_, (s, _))| s.default == Some(true))
            .map(|(name, (_, seq))| (name.as_str(), *seq))
    }

    /// Every task or service paused somewhere, with the nodes (`*` for the cluster default).
    pub fn paused(&self) -> BTreeMap<String, Vec<String>> {
        self.paused
            .iter()
            .map(|(name, (s, _))| {
                let mut on: Vec<String> = Vec::new();
                if s.default == Some(true) {
                    on.push("*".to_string());
                }
                on.extend(s.nodes.iter().filter(|(_, p)| **p).map(|(n, _)| n.clone()));
                (name.clone(), on)
            })
            .filter(|(_, on)| !on.is_empty())
            .collect()
    }

    /// The store time before which a new owner of `task` must not fire it (its last resume).
    pub fn resumed_at(&self, task: &str) -> Option<i64> {
        let base = crate::placement::split_per_node_name(task).map_or(task, |(t, _)| t);
        self.resumed_at.get(base).copied()
    }

    pub fn is_drained(&self, node: &str) -> bool {
        self.drained.get(node).copied().unwrap_or(false)
    }

    /// The node `node` acts as, if any.
    pub fn acting_as(&self, node: &str) -> Option<&str> {
        self.acting_as.get(node).and_then(|a| a.as_deref())
    }

    /// Who acts as whom among `nodes` (acting node → the node it stands in for), for placement.
    pub fn acting_map<'a>(
        &self,
        nodes: impl IntoIterator<Item = &'a str>,
    ) -> BTreeMap<String, String> {
        nodes
            .into_iter()
            .filter_map(|n| {
                self.acting_as(n)
                    .filter(|target| *target != n)
                    .map(|target| (n.to_string(), target.to_string()))
            })
            .collect()
    }

    /// The log level commands set for `node`; `None`: the config's.
    pub fn log_level(&self, node: &str) -> Option<&str> {
        self.log_level.get(node).and_then(|l| l.as_deref())
    }
}

/// What a node does with a command addressed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Not this node's to apply: not a target (only the folded state concerns it), or a
    /// rolling restart, which the leader follows and acknowledges.
    NotTargeted,
    /// Already acknowledged (finally) by this node: nothing to do again.
    Done,
    /// Apply the effect now, then acknowledge.
    Apply,
    /// Acknowledge as applied without acting: a restart or shutdown issued before this
    /// process started is already satisfied by that start.
    Superseded,
}

/// Decides what `node` does with `command`. `started_after` is the last sequence number
/// this process saw when it started; `ack` its own acknowledgement, if any.
pub fn disposition(
    command: &Command,
    node: &str,
    started_after: i64,
    ack: Option<AckState>,
) -> Disposition {
    let targeted = command.body.targets.iter().any(|t| t == node);
    if !targeted || matches!(command.body.op, Operation::RollingRestart { .. }) {
        return Disposition::NotTargeted;
    }
    if ack.is_some_and(AckState::is_final) {
        return Disposition::Done;
    }
    let one_shot = matches!(command.body.op, Operation::Restart | Operation::Shutdown);
    if one_shot && command.seq <= started_after {
        return Disposition::Superseded;
    }
    Disposition::Apply
}

/// What the leader does next for one rolling restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollingStep {
    /// Nothing to do now.
    Wait,
    /// Mark `node` in progress (with its current incarnation), then issue its restart.
    Restart { node: String, incarnation: i64 },
    /// `node` is back as `incarnation` and placement has counted it: applied.
    Confirm { node: String, incarnation: i64 },
    /// `node` was not running when its turn came: recorded as applied with a note.
    Skip { node: String },
    /// Stop: `node` failed with `message`; the targets after it fail as not restarted.
    Fail { node: String, message: String },
    /// Every target is applied or failed.
    Finished,
}

/// The next step of a rolling restart over `targets` (in order), from the acknowledgements
/// so far, the live incarnations and those the last placement round counted, at store
/// time `now_ms`. One node at a time: nothing moves on until the node in progress is back.
pub fn rolling_step(
    targets: &[String],
    acks: &BTreeMap<String, Ack>,
    live: &BTreeMap<String, i64>,
    placed: &BTreeSet<(String, i64)>,
    now_ms: i64,
    timeout_ms: i64,
) -> RollingStep {
    for node in targets {
        match acks.get(node) {
            Some(a) if a.state == AckState::Failed => {
                // Stopped: fail the ones that have not been reached.
                return match targets
                    .iter()
                    .find(|t| acks.get(*t).is_none_or(|a| !a.state.is_final()))
                {
                    Some(rest) => RollingStep::Fail {
                        node: rest.clone(),
                        message: format!("not restarted: the rolling restart stopped at {node}"),
                    },
                    None => RollingStep::Finished,
                };
            }
            Some(a) if a.state == AckState::Applied => continue,
            Some(a) => {
                // In progress: back means a new incarnation, live, counted by placement.
                if let Some(&now_inc) = live.get(node) {
                    if now_inc != a.incarnation && placed.contains(&(node.clone(), now_inc)) {
                        return RollingStep::Confirm {
                            node: node.clone(),
                            incarnation: now_inc,
                        };
                    }
                }
                if now_ms - a.at_ms > timeout_ms {
                    return RollingStep::Fail {
                        node: node.clone(),
                        message: format!(
                            "did not come back within {} s; the rolling restart stopped here",
                            timeout_ms / 1000
                        ),
                    };
                }
                return RollingStep::Wait;
            }
            None => {
                return match live.get(node) {
                    Some(&incarnation) => RollingStep::Restart {
                        node: node.clone(),
                        incarnation,
                    },
                    None => RollingStep::Skip { node: node.clone() },
                };
            }
        }
    }
    RollingStep::Finished
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(seq: i64, op: Operation, scope: Scope) -> Command {
        let targets = match &scope {
            Scope::Cluster => vec!["a".into(), "b".into()],
            Scope::Nodes(n) => n.clone(),
        };
        Command {
            seq,
            issued_at_ms: seq * 1000,
            body: CommandBody {
                op,
                scope,
                targets,
                issued_by: "test".into(),
                requested_by: None,
            },
        }
    }

    fn nodes(n: &[&str]) -> Scope {
        Scope::Nodes(n.iter().map(|s| s.to_string()).collect())
    }

    fn pause(t: &str) -> Operation {
        Operation::Pause { task: t.into() }
    }

    fn resume(t: &str) -> Operation {
        Operation::Resume { task: t.into() }
    }

    #[test]
    fn a_cluster_pause_holds_on_every_node_including_new_ones_until_resumed() {
        let mut s = ControlState::default();
        s.apply(&cmd(1, pause("t"), Scope::Cluster));
        assert!(s.is_paused("a", "t") && s.is_paused("never-seen", "t"));
        assert!(s.is_paused("a", "t@a"), "a per-node share follows its task");
        assert_eq!(s.paused_in_cluster().collect::<Vec<_>>(), vec![("t", 1)]);
        s.apply(&cmd(2, resume("t"), Scope::Cluster));
        assert!(!s.is_paused("a", "t"));
        assert_eq!(s.resumed_at("t"), Some(2000));
        assert!(s.paused().is_empty());
    }

    #[test]
    fn node_scoped_settings_override_the_cluster_default_until_a_cluster_command_clears_them() {
        let mut s = ControlState::default();
        s.apply(&cmd(1, pause("t"), nodes(&["a"])));
        assert!(s.is_paused("a", "t") && !s.is_paused("b", "t"));
        assert_eq!(s.paused_in_cluster().count(), 0);
        s.apply(&cmd(2, pause("t"), Scope::Cluster));
        s.apply(&cmd(3, resume("t"), nodes(&["b"])));
        assert!(s.is_paused("a", "t") && !s.is_paused("b", "t") && s.is_paused("c", "t"));
        s.apply(&cmd(4, resume("t"), Scope::Cluster));
        assert!(!s.is_paused("a", "t") && !s.is_paused("c", "t"));
    }

    #[test]
    fn folding_is_ordered_and_idempotent() {
        let log = [
            cmd(1, Operation::Drain, nodes(&["a"])),
            cmd(2, Operation::ActAs { node: "x".into() }, nodes(&["b"])),
            cmd(
                3,
                Operation::SetLogLevel {
                    level: "debug".into(),
                },
                Scope::Cluster,
            ),
            cmd(
                4,
                Operation::SetLogLevel {
                    level: "config".into(),
                },
                nodes(&["a"]),
            ),
        ];
        let mut once = ControlState::default();
        for c in &log {
            once.apply(c);
        }
        let mut twice = once.clone();
        for c in &log {
            twice.apply(c); // replays of a prefix change nothing
        }
        assert_eq!(once, twice);
        assert!(once.is_drained("a") && !once.is_drained("b"));
        assert_eq!(once.acting_as("b"), Some("x"));
        assert_eq!(
            once.acting_map(["a", "b"]),
            BTreeMap::from([("b".to_string(), "x".to_string())])
        );
        assert_eq!(
            once.log_level("a"),
            None,
            "`config` returns to the configured level"
        );
        assert_eq!(once.log_level("b"), Some("debug"));
        let mut undone = once.clone();
        undone.apply(&cmd(5, Operation::Undrain, Scope::Cluster));
        undone.apply(&cmd(6, Operation::StopActing, nodes(&["b"])));
        assert!(!undone.is_drained("a") && undone.acting_as("b").is_none());
    }

    #[test]
    fn one_shots_leave_no_state_and_are_superseded_by_a_later_start() {
        let mut s = ControlState::default();
        let restart = cmd(7, Operation::Restart, nodes(&["a"]));
        s.apply(&restart);
        assert_eq!(s.through, 7);
        assert_eq!(s.paused(), BTreeMap::new());
        assert_eq!(
            disposition(&restart, "b", 0, None),
            Disposition::NotTargeted
        );
        assert_eq!(disposition(&restart, "a", 6, None), Disposition::Apply);
        assert_eq!(disposition(&restart, "a", 7, None), Disposition::Superseded);
        assert_eq!(
            disposition(&restart, "a", 0, Some(AckState::Applied)),
            Disposition::Done
        );
        let drain = cmd(8, Operation::Drain, nodes(&["a"]));
        assert_eq!(
            disposition(&drain, "a", 9, None),
            Disposition::Apply,
            "state commands are applied late"
        );
        assert_eq!(
            disposition(&drain, "a", 0, Some(AckState::InProgress)),
            Disposition::Apply,
            "an unfinished drain is taken up again"
        );
    }

    #[test]
    fn operations_name_their_bad_fields() {
        let bad = Operation::SetLogLevel {
            level: "loud".into(),
        };
        assert_eq!(bad.problem().unwrap().0, "level");
        assert!(Operation::RollingRestart { timeout_secs: 0 }
            .problem()
            .is_some());
        assert!(pause("a b").problem().is_some());
        assert!(pause("nightly-export").problem().is_none());
        let body = CommandBody {
            op: pause("t"),
            scope: nodes(&["a"]),
            targets: vec!["a".into()],
            issued_by: "n".into(),
            requested_by: None,
        };
        let json = serde_json::to_string(&body).unwrap();
        assert!(
            json.contains(r#""op":"pause""#) && json.contains(r#""task":"t""#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<CommandBody>(&json).unwrap(), body);
    }

    fn ack(node: &str, state: AckState, incarnation: i64, at_ms: i64) -> (String, Ack) {
        (
            node.to_string(),
            Ack {
                seq: 1,
                node: node.into(),
                incarnation,
                state,
                message: String::new(),
                at_ms,
            },
        )
    }

    #[test]
    fn a_rolling_restart_moves_one_node_at_a_time_and_stops_on_a_node_that_does_not_return() {
        let targets: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let live: BTreeMap<String, i64> =
            BTreeMap::from([("a".into(), 1), ("b".into(), 2), ("c".into(), 3)]);
        let placed: BTreeSet<(String, i64)> = live.iter().map(|(n, i)| (n.clone(), *i)).collect();
        let step =
            |acks: &BTreeMap<String, Ack>,
             live: &BTreeMap<String, i64>,
             placed: &BTreeSet<(String, i64)>,
             now| { rolling_step(&targets, acks, live, placed, now, 10_000) };
        let mut acks = BTreeMap::new();
        assert_eq!(
            step(&acks, &live, &placed, 0),
            RollingStep::Restart {
                node: "a".into(),
                incarnation: 1
            }
        );
        acks.extend([ack("a", AckState::InProgress, 1, 0)]);
        // a is gone, then back but not yet counted by placement: wait, never b.
        let mut live2 = live.clone();
        live2.remove("a");
        assert_eq!(step(&acks, &live2, &placed, 5_000), RollingStep::Wait);
        live2.insert("a".into(), 11);
        assert_eq!(step(&acks, &live2, &placed, 6_000), RollingStep::Wait);
        let mut placed2 = placed.clone();
        placed2.insert(("a".into(), 11));
        assert_eq!(
            step(&acks, &live2, &placed2, 6_000),
            RollingStep::Confirm {
                node: "a".into(),
                incarnation: 11
            }
        );
        acks.extend([ack("a", AckState::Applied, 11, 6_000)]);
        assert_eq!(
            step(&acks, &live2, &placed2, 6_000),
            RollingStep::Restart {
                node: "b".into(),
                incarnation: 2
            }
        );
        acks.extend([ack("b", AckState::InProgress, 2, 7_000)]);
        live2.remove("b");
        assert_eq!(step(&acks, &live2, &placed2, 16_000), RollingStep::Wait);
        match step(&acks, &live2, &placed2, 17_001) {
            RollingStep::Fail { node, message } => {
                assert_eq!(node, "b");
                assert!(
                    message.contains("did not come back within 10 s"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        acks.extend([ack("b", AckState::Failed, 2, 17_001)]);
        match step(&acks, &live2, &placed2, 17_001) {
            RollingStep::Fail { node, message } => {
                assert_eq!(node, "c", "the rest is not restarted");
                assert!(message.contains("stopped at b"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        acks.extend([ack("c", AckState::Failed, 3, 17_001)]);
        assert_eq!(step(&acks, &live2, &placed2, 17_001), RollingStep::Finished);
    }

    #[test]
    fn a_rolling_restart_skips_a_target_that_is_down_when_its_turn_comes() {
        let targets = vec!["a".to_string(), "b".to_string()];
        let live = BTreeMap::from([("b".to_string(), 2)]);
        let step = rolling_step(&targets, &BTreeMap::new(), &live, &BTreeSet::new(), 0, 1000);
        assert_eq!(step, RollingStep::Skip { node: "a".into() });
    }

    #[test]
    fn run_requests_are_folded_per_task_newest_kept() {
        let mut state = ControlState::default();
        for seq in 1..=(RUNS_KEPT as i64 + 3) {
            let body = CommandBody {
                op: Operation::Run {
                    task: "report".into(),
                    env: BTreeMap::from([("DAY".to_string(), seq.to_string())]),
                },
                scope: Scope::Cluster,
                targets: vec!["a".into()],
                issued_by: "a".into(),
                requested_by: Some("ops".into()),
            };
            state.apply(&Command {
                seq,
                issued_at_ms: 1000 * seq,
                body,
            });
        }
        let runs = state.runs("report");
        assert_eq!(runs.len(), RUNS_KEPT);
        assert_eq!(runs.first().unwrap().seq, 4, "the oldest are dropped");
        let last = runs.last().unwrap();
        assert_eq!(
            (
                last.seq,
                last.issued_at_ms,
                last.env["DAY"].as_str(),
                last.requested_by.as_deref()
            ),
            (
                RUNS_KEPT as i64 + 3,
                1000 * (RUNS_KEPT as i64 + 3),
                "35",
                Some("ops")
            )
        );
        assert!(state.runs("other").is_empty());
        assert!(state.run("report", 4).is_some() && state.run("report", 3).is_none());
    }

    #[test]
    fn a_run_names_what_is_wrong_with_its_environment() {
        let run = |pairs: &[(&str, &str)]| Operation::Run {
            task: "report".into(),
            env: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        assert_eq!(run(&[("DAY", "monday"), ("_x1", "")]).problem(), None);
        for (pairs, says) in [
            (vec![("1DAY", "x")], "`1DAY` is not a variable name"),
            (vec![("A-B", "x")], "`A-B` is not a variable name"),
            (vec![("NUL", "a\0b")], "holds a NUL"),
        ] {
            let (field, message) = run(&pairs).problem().expect("a problem");
            assert_eq!(field, "env");
            assert!(message.contains(says), "{message}");
        }
        let many: Vec<(String, String)> = (0..=MAX_RUN_ENV)
            .map(|i| (format!("V{i}"), String::new()))
            .collect();
        let op = Operation::Run {
            task: "report".into(),
            env: many.into_iter().collect(),
        };
        assert!(op.problem().unwrap().1.contains("more than the 32"));
        let bad_task = Operation::Run {
            task: "no such".into(),
            env: BTreeMap::new(),
        };
        assert_eq!(bad_task.problem().unwrap().0, "task");
    }
}
