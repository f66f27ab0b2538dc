//! `rota ctl`'s command line: its verbs, their flags, and the exit codes it ends with.

use std::path::PathBuf;

use clap::{builder::PossibleValuesParser, Args, Subcommand};
use rota::core::control::LOG_LEVELS;
use serde_json::{json, Value};

pub(super) const EXIT_FAILED: u8 = 1;

pub(super) const EXIT_USAGE: u8 = 2;

pub(super) const EXIT_REFUSED: u8 = 3;

pub(super) const EXIT_UNREACHABLE: u8 = 4;

pub(super) const EXIT_TIMEOUT: u8 = 5;

/// Operate a cluster through a node's admin API.
///
/// The token comes from the environment only, so it never shows in `ps`:
///   ROTA_TOKEN   a token of the nodes' config (admin or read-only), or a named token
///                from `rota ctl token create` (role read, operate or admin)
///
/// Actions wait until every target node has applied or failed the command, unless --no-wait.
///
/// Exit codes:
///   0  ok (actions: every target applied)
///   1  the command failed on some node, or a rolling restart stopped; cache: the entry
///      is absent (get), or not as --if-version/--if-absent expected (put, del)
///   2  bad request or usage (HTTP 400, 404, 405, 409, 413)
///   3  refused: missing or wrong token (HTTP 401, 403)
///   4  cannot reach the API, or a server or store error (HTTP 5xx)
///   5  timed out waiting for the command; it may still complete: follow it with
///      `rota ctl commands SEQ`
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct CtlArgs {
    /// Base URL of any node's admin API.
    #[arg(
        long,
        env = "ROTA_URL",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    pub(super) url: String,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    pub(super) json: bool,
    /// Accept any TLS certificate (self-signed test setups only).
    #[arg(long, global = true)]
    pub(super) insecure: bool,
    /// Trust the CA certificate(s) in this PEM file.
    #[arg(long, value_name = "PATH", global = true)]
    pub(super) cacert: Option<PathBuf>,
    #[command(subcommand)]
    pub(super) command: CtlCommand,
}

#[derive(Subcommand)]
pub enum CtlCommand {
    /// Cluster summary and its nodes.
    Status,
    /// Every registered node.
    Nodes,
    /// Every declared task: state, owner, fencing token.
    Tasks,
    /// Every declared service.
    Services,
    /// Recent fires of a task, newest first.
    History {
        task: String,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Recent commands, or one command with each target's state.
    Commands {
        seq: Option<i64>,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Recent events, newest first: commands, acknowledgements, joins, fires that went wrong.
    Events {
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Run a task now: one extra fire on its owner, claimed and fenced like a scheduled one.
    Run {
        task: String,
        /// A variable for a command task's environment (repeat for more).
        #[arg(long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// Follow the run to its outcome; exit 0 only if it ended ok.
        #[arg(long)]
        wait: bool,
        /// Seconds to wait with --wait [default: 3600].
        #[arg(long, value_name = "SECS", requires = "wait")]
        wait_timeout: Option<u64>,
    },
    /// What a fire of a task wrote (stdout, then stderr): its latest fire, or the one at
    /// INSTANT (Unix ms, as its history shows).
    Logs {
        task: String,
        instant: Option<i64>,
        /// Which attempt [default: the latest].
        #[arg(long)]
        attempt: Option<i64>,
        /// Follow a running fire: print its output as it comes, until it ends.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Stop firing a task (on the given nodes, or everywhere).
    Pause(TaskArgs),
    /// Undo a pause; instants that passed meanwhile are not made up.
    Resume(TaskArgs),
    /// Stop a service (on the given nodes, or everywhere).
    Stop(ServiceArgs),
    /// Undo a stop.
    Start(ServiceArgs),
    /// Move a node's work away and keep it away, across restarts.
    Drain(NodeArgs),
    /// Undo a drain.
    Undrain(NodeArgs),
    /// NODE stands in for TARGET wherever TARGET is named, while TARGET is absent.
    ActAs {
        node: String,
        target: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Undo act-as.
    StopActing(NodeArgs),
    /// Restart a node (graceful leave, then re-execute).
    Restart(NodeArgs),
    /// Stop a node gracefully; it stays down.
    Shutdown(NodeArgs),
    /// Set the log level (on the given nodes, or everywhere); `config` returns to the file's.
    LogLevel {
        #[arg(value_parser = PossibleValuesParser::new(LOG_LEVELS))]
        level: String,
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        wait: Wait,
    },
    /// Read and write the cluster's caches (`rota.task-state` holds tasks' own state).
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Replace the cluster's own task and service definitions with FILE's `[[task]]` and
    /// `[[service]]` tables (same schema as a node's file); --dry-run prints the changes only.
    Apply {
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Print the cluster's own definitions as applied (TOML).
    Export,
    /// Named API tokens with roles (read, operate, admin), kept in the store as hashes.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Restart the nodes one at a time, each once the previous one is back.
    RollingRestart {
        #[command(flatten)]
        scope: Scope,
        /// Seconds each node has to come back before the rolling restart stops [default: 120].
        #[arg(long, value_name = "SECS")]
        timeout_secs: Option<u64>,
        #[command(flatten)]
        wait: Wait,
    },
}

#[derive(Args)]
pub struct TaskArgs {
    pub(super) task: String,
    #[command(flatten)]
    pub(super) scope: Scope,
    #[command(flatten)]
    pub(super) wait: Wait,
}

#[derive(Args)]
pub struct ServiceArgs {
    pub(super) service: String,
    #[command(flatten)]
    pub(super) scope: Scope,
    #[command(flatten)]
    pub(super) wait: Wait,
}

#[derive(Args)]
pub struct NodeArgs {
    pub(super) node: String,
    #[command(flatten)]
    pub(super) wait: Wait,
}

#[derive(Args)]
pub struct Scope {
    /// Only these nodes (comma-separated); default: the whole cluster.
    #[arg(long, value_delimiter = ',')]
    pub(super) nodes: Option<Vec<String>>,
}

#[derive(Args)]
pub struct Wait {
    /// Return once the command is accepted, without waiting for the nodes.
    #[arg(long)]
    pub(super) no_wait: bool,
    /// Seconds to wait for the command to finish [default: 60; rolling-restart: 600, or
    /// --timeout-secs times the number of nodes if that is more].
    #[arg(long, value_name = "SECS")]
    pub(super) wait_timeout: Option<u64>,
}

impl Scope {
    /// `body` with `nodes` when given (without: the whole cluster).
    pub(super) fn add_to(self, mut body: Value) -> Value {
        if let Some(nodes) = self.nodes {
            body["nodes"] = json!(nodes);
        }
        body
    }
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once, here, and kept nowhere (the store has its hash).
    Create {
        name: String,
        /// read: reads; operate: reads, pause, resume, stop, start, drain, undrain, run;
        /// admin: everything, tokens included.
        #[arg(long, value_parser = PossibleValuesParser::new(["read", "operate", "admin"]))]
        role: String,
    },
    /// Every named token: name, role, when and by whom it was created.
    List,
    /// Revoke a token: every node refuses it from its next request on.
    Revoke { name: String },
}

#[derive(Subcommand)]
pub enum CacheCommand {
    /// Print an entry's value as stored, bytes unchanged (--json: with its version and expiry).
    Get { cache: String, key: String },
    /// Write an entry: VALUE, the contents of --file, or standard input (--stdin).
    Put(PutArgs),
    /// Delete an entry (not there: nothing to do).
    Del {
        cache: String,
        key: String,
        /// Only if the entry is at this version (exit 1 if not).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
        if_version: Option<i64>,
    },
    /// The live keys of a cache, in order.
    Keys {
        cache: String,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
}
#[derive(Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["value", "file", "stdin"])))]
pub struct PutArgs {
    pub(super) cache: String,
    pub(super) key: String,
    /// The value, as text.
    pub(super) value: Option<String>,
    /// Write the contents of this file (any bytes).
    #[arg(long, value_name = "PATH")]
    pub(super) file: Option<PathBuf>,
    /// Write what standard input holds (any bytes).
    #[arg(long)]
    pub(super) stdin: bool,
    /// Let the entry expire this long after the write: 250ms, 30s, 5m, 1h, 1d.
    #[arg(long, value_name = "DURATION")]
    pub(super) ttl: Option<String>,
    /// Only if the entry is at this version (compare and set; exit 1 if not).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..), conflicts_with = "if_absent")]
    pub(super) if_version: Option<i64>,
    /// Only if the key has no live entry (exit 1 if it has).
    #[arg(long)]
    pub(super) if_absent: bool,
}
