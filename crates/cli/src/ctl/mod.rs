//! `rota ctl`: a client of a node's admin HTTP API (see `src/admin/openapi.json`). Reads print
//! tables (or the raw JSON with `--json`); actions issue a cluster command and, by default,
//! follow it until every target has applied or failed it.
//!
//! This file holds what each verb asks of the API; `args` the command line (the verbs, their
//! flags and the exit codes), `client` talks to the API, `reads` prints the answers of the read verbs,
//! `commands` issues actions, follows them and shows commands, `cache` reads and writes
//! cache entries, `tokens` manages named tokens, and `table` lays answers out as text.

mod args;
mod cache;
mod client;
mod commands;
mod definitions;
mod logs;
mod reads;
mod run;
mod table;
mod tokens;

use std::process::ExitCode;

use serde_json::{json, Value};

pub use self::args::{CtlArgs, CtlCommand};
use self::{
    args::*,
    cache::cache,
    client::{segment, Client, Failure, ROLLING_RESTART},
    commands::{act, command_text, commands_table},
    reads::{events_table, history_table, nodes_table, status, tasks_table},
    table::print_value,
    tokens::token,
};

/// What a subcommand asks of the API.
enum Request {
    Status,
    /// A GET and how to print its answer as text.
    Read(String, fn(&Value) -> String),
    /// A POST (path, body) that issues a command, then the wait for it.
    Action(String, Value, Wait),
    /// A read or write of a cache entry.
    Cache(CacheCommand),
    /// Create, list or revoke a named token.
    Token(TokenCommand),
    /// Apply a definitions file (dry run or not), or export the definitions.
    Apply(std::path::PathBuf, bool, Wait),
    Export,
    /// Run a task now: task, environment, seconds to wait for its outcome.
    Run(String, Vec<String>, Option<u64>),
    /// A fire's output: task, instant, attempt, follow.
    Logs(String, Option<i64>, Option<i64>, bool),
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
        C::Token(command) => Request::Token(command),
        C::Apply {
            file,
            dry_run,
            wait,
        } => Request::Apply(file, dry_run, wait),
        C::Export => Request::Export,
        C::Run {
            task,
            env,
            wait,
            wait_timeout,
        } => Request::Run(task, env, wait.then(|| wait_timeout.unwrap_or(3600))),
        C::Logs {
            task,
            instant,
            attempt,
            follow,
        } => Request::Logs(task, instant, attempt, follow),
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
        Request::Token(command) => token(&client, json, command).await,
        Request::Apply(file, dry_run, wait) => {
            definitions::apply(&client, json, &file, dry_run, &wait).await
        }
        Request::Export => definitions::export(&client, json).await,
        Request::Run(task, env, wait) => run::run(&client, json, &task, &env, wait).await,
        Request::Logs(task, instant, attempt, follow) => {
            logs::logs(&client, json, &task, instant, attempt, follow).await
        }
    };
    let unauthorized = matches!(result, Err(Failure::Http { status: 401, .. }));
    let code = result.unwrap_or_else(|f| f.report());
    if unauthorized && client.token.is_none() {
        eprintln!(
            "hint: set ROTA_TOKEN to a token: the admin or read-only token of the nodes' config, or a named one"
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
