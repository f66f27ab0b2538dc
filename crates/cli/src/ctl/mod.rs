//! `rota ctl`: a client of a node's admin HTTP API (see `src/admin/openapi.json`). Reads print
//! tables (or the raw JSON with `--json`); actions issue a cluster command and, by default,
//! follow it until every target has applied or failed it.
//!
//! This file holds the command line (the verbs and their flags) and what each verb asks of
//! the API; `client` talks to the API, `reads` prints the answers of the read verbs,
//! `commands` issues actions, follows them and shows commands, `cache` reads and writes
//! cache entries, and `table` lays answers out as text.

mod cache;
mod client;
mod commands;
mod reads;
mod table;

use std::{path::PathBuf, process::ExitCode};

use clap::{builder::PossibleValuesParser, Args, Subcommand};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rota::core::control::LOG_LEVELS;
use serde_json::{json, Value};

use cache::{cache, CacheCommand};
use client::{Client, Failure};
use commands::{act, command_text, commands_table};
use reads::{events_table, history_table, nodes_table, status, tasks_table};
use table::print_value;

const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_REFUSED: u8 = 3;
const EXIT_UNREACHABLE: u8 = 4;
const EXIT_TIMEOUT: u8 = 5;

/// Operate a cluster through a node's admin API.
///
/// The token comes from the environment only, so it never shows in `ps`:
///   ROTA_TOKEN   the admin token (actions) or the read-only token (reads)
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
    url: String,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Accept any TLS certificate (self-signed test setups only).
    #[arg(long, global = true)]
    insecure: bool,
    /// Trust the CA certificate(s) in this PEM file.
    #[arg(long, value_name = "PATH", global = true)]
    cacert: Option<PathBuf>,
    #[command(subcommand)]
    command: CtlCommand,
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
    task: String,
    #[command(flatten)]
    scope: Scope,
    #[command(flatten)]
    wait: Wait,
}

#[derive(Args)]
pub struct ServiceArgs {
    service: String,
    #[command(flatten)]
    scope: Scope,
    #[command(flatten)]
    wait: Wait,
}

#[derive(Args)]
pub struct NodeArgs {
    node: String,
    #[command(flatten)]
    wait: Wait,
}

#[derive(Args)]
pub struct Scope {
    /// Only these nodes (comma-separated); default: the whole cluster.
    #[arg(long, value_delimiter = ',')]
    nodes: Option<Vec<String>>,
}

#[derive(Args)]
pub struct Wait {
    /// Return once the command is accepted, without waiting for the nodes.
    #[arg(long)]
    no_wait: bool,
    /// Seconds to wait for the command to finish [default: 60; rolling-restart: 600, or
    /// --timeout-secs times the number of nodes if that is more].
    #[arg(long, value_name = "SECS")]
    wait_timeout: Option<u64>,
}

/// A name as one path segment: anything outside the names rota accepts is percent-encoded,
/// so a stray `/` or `?` cannot reach another endpoint.
fn segment(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT).to_string()
}

/// What [`segment`] percent-encodes: every byte but ASCII letters, digits, `-`, `_` and `.`.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// What a subcommand asks of the API.
enum Request {
    Status,
    /// A GET and how to print its answer as text.
    Read(String, fn(&Value) -> String),
    /// A POST (path, body) that issues a command, then the wait for it.
    Action(String, Value, Wait),
    /// A read or write of a cache entry.
    Cache(CacheCommand),
}

const ROLLING_RESTART: &str = "/api/v1/rolling-restart";

impl Scope {
    /// `body` with `nodes` when given (without: the whole cluster).
    fn add_to(self, mut body: Value) -> Value {
        if let Some(nodes) = self.nodes {
            body["nodes"] = json!(nodes);
        }
        body
    }
}

/// `/api/v1/{kind}/{name}/{verb}`.
fn on(kind: &str, name: &str, verb: &str) -> String {
    format!("/api/v1/{kind}/{}/{verb}", segment(name))
}

fn request(command: CtlCommand) -> Request {
    use CtlCommand as C;
    use Request::{Action, Read};
    let task = |a: TaskArgs, verb| {
        Action(
            on("tasks", &a.task, verb),
            a.scope.add_to(json!({})),
            a.wait,
        )
    };
    let service = |a: ServiceArgs, verb| {
        Action(
            on("services", &a.service, verb),
            a.scope.add_to(json!({})),
            a.wait,
        )
    };
    let node = |a: NodeArgs, verb| Action(on("nodes", &a.node, verb), json!({}), a.wait);
    match command {
        C::Status => Request::Status,
        C::Nodes => Read("/api/v1/nodes".into(), nodes_table),
        C::Tasks => Read("/api/v1/tasks".into(), tasks_table),
        C::Services => Read("/api/v1/services".into(), tasks_table),
        C::History { task, limit } => Read(
            on("tasks", &task, &format!("history?limit={limit}")),
            history_table,
        ),
        C::Commands { seq: Some(seq), .. } => Read(format!("/api/v1/commands/{seq}"), command_text),
        C::Commands { seq: None, limit } => {
            Read(format!("/api/v1/commands?limit={limit}"), commands_table)
        }
        C::Events { limit } => Read(format!("/api/v1/events?limit={limit}"), events_table),
        C::Pause(a) => task(a, "pause"),
        C::Resume(a) => task(a, "resume"),
        C::Stop(a) => service(a, "stop"),
        C::Start(a) => service(a, "start"),
        C::Drain(a) => node(a, "drain"),
        C::Undrain(a) => node(a, "undrain"),
        C::StopActing(a) => node(a, "stop-acting"),
        C::Restart(a) => node(a, "restart"),
        C::Shutdown(a) => node(a, "shutdown"),
        C::ActAs { node, target, wait } => Action(
            on("nodes", &node, "act-as"),
            json!({ "node": target }),
            wait,
        ),
        C::LogLevel { level, scope, wait } => Action(
            "/api/v1/log-level".into(),
            scope.add_to(json!({ "level": level })),
            wait,
        ),
        C::Cache(command) => Request::Cache(command),
        C::RollingRestart {
            scope,
            timeout_secs,
            wait,
        } => {
            // Only what was given: the API takes no `null` for a field left out.
            let mut body = json!({});
            if let Some(secs) = timeout_secs {
                body["timeout_secs"] = json!(secs);
            }
            Action(ROLLING_RESTART.into(), scope.add_to(body), wait)
        }
    }
}

pub async fn run(args: CtlArgs) -> anyhow::Result<ExitCode> {
    let client = match Client::new(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let json = args.json;
    let result = match request(args.command) {
        Request::Status => status(&client, json).await,
        Request::Read(path, render) => client.get(&path).await.map(|v| {
            print_value(json, &v, render);
            ExitCode::SUCCESS
        }),
        Request::Action(path, body, wait) => act(&client, json, &path, &body, &wait).await,
        Request::Cache(command) => cache(&client, json, command).await,
    };
    let unauthorized = matches!(result, Err(Failure::Http { status: 401, .. }));
    let code = result.unwrap_or_else(|f| f.report());
    if unauthorized && client.token.is_none() {
        eprintln!(
            "hint: set ROTA_TOKEN to the admin token (actions) or the read-only token (reads)"
        );
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bodies `rota ctl` sends leave out what was not given: the API refuses `null`.
    #[test]
    fn action_bodies_carry_no_nulls() {
        for argv in [
            vec!["ctl", "rolling-restart"],
            vec![
                "ctl",
                "rolling-restart",
                "--timeout-secs",
                "30",
                "--nodes",
                "a,b",
            ],
            vec!["ctl", "pause", "report"],
            vec!["ctl", "log-level", "debug"],
            vec!["ctl", "drain", "node-1"],
        ] {
            #[derive(clap::Parser)]
            struct Cli {
                #[command(flatten)]
                ctl: CtlArgs,
            }
            let cli = <Cli as clap::Parser>::try_parse_from(&argv)
                .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            let Request::Action(path, body, _) = request(cli.ctl.command) else {
                panic!("{argv:?} is an action");
            };
            let text = body.to_string();
            assert!(!text.contains("null"), "{argv:?} -> POST {path} {text}");
        }
    }
}
