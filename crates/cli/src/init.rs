//! `rota init`: writes a commented config file for a new node, from flags and, on a
//! terminal, from a few questions for the flags not given. What it writes passes `rota
//! config check`: it is checked by the same code before a byte is written.

use std::{
    fs,
    io::{BufRead, IsTerminal, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{bail, Context};
use clap::Args;
use rand::Rng;
use rota_cli::config::{self, ConfigProblem, STORE_URL_ENV};

use crate::node::EXIT_CONFIG;

const DEFAULT_CLUSTER: &str = "default";
const DEFAULT_STORE: &str = "sqlite:///var/lib/rota/rota.db";
const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// `--admin-listen off`: no admin API.
const LISTEN_OFF: &str = "off";
/// Random bytes of a generated admin token (hex: twice as many characters).
const TOKEN_BYTES: usize = 24;

#[derive(Args)]
pub struct InitArgs {
    /// This node's id, unique in the cluster [default: this host's name]
    #[arg(long)]
    id: Option<String>,
    /// The cluster the node joins [default: default]
    #[arg(long)]
    cluster: Option<String>,
    /// The store's URL. One with a password belongs in ROTA_STORE_URL, not in the file
    /// [default: sqlite:///var/lib/rota/rota.db]
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// The admin API's address (IP:port), or `off` for none [default: 127.0.0.1:7070]
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<String>,
    /// What a `restart` cluster command does: `exec` re-executes the binary (no supervisor
    /// needed), `exit` exits with code 75 for a supervisor such as systemd to start it again
    #[arg(long, value_parser = ["exec", "exit"], default_value = "exec")]
    restart: String,
    /// Write a random admin token into the file (created with mode 0600) instead of leaving
    /// it to ROTA_ADMIN_TOKEN. The token is never printed
    #[arg(long, requires = "out")]
    generate_token: bool,
    /// Write the config to this file instead of standard output
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Replace the file of --out if it exists
    #[arg(long, requires = "out")]
    force: bool,
    /// Ask nothing, even on a terminal: every flag not given takes its default
    #[arg(long)]
    defaults: bool,
}

/// The values the file is written from.
#[derive(Clone)]
struct Answers {
    id: String,
    cluster: String,
    store: String,
    /// `None`: no admin API.
    listen: Option<String>,
    restart: String,
    token: Option<String>,
}

/// One question: the flag it stands for, the config field it fills, its prompt.
struct Question {
    flag: &'static str,
    field: &'static str,
    prompt: &'static str,
}

const QUESTIONS: [Question; 4] = [
    Question {
        flag: "--id",
        field: "node.id",
        prompt: "node id, unique in the cluster",
    },
    Question {
        flag: "--cluster",
        field: "node.cluster",
        prompt: "cluster",
    },
    Question {
        flag: "--store",
        field: "store.url",
        prompt: "store URL (a URL with a password: leave the default, set ROTA_STORE_URL later)",
    },
    Question {
        flag: "--admin-listen",
        field: "admin.listen",
        prompt: "admin API address (IP:port, or off)",
    },
];

pub fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    if let Some(out) = &args.out {
        check_out(out, args.force)?;
    }
    let mut answers = Answers {
        id: args.id.clone().unwrap_or_else(default_id),
        cluster: args
            .cluster
            .clone()
            .unwrap_or_else(|| DEFAULT_CLUSTER.into()),
        store: args.store.clone().unwrap_or_else(|| DEFAULT_STORE.into()),
        listen: listen_value(args.admin_listen.as_deref().unwrap_or(DEFAULT_LISTEN)),
        restart: args.restart.clone(),
        token: args.generate_token.then(new_token),
    };
    let given = [
        args.id.is_some(),
        args.cluster.is_some(),
        args.store.is_some(),
        args.admin_listen.is_some(),
    ];
    // Flags first: a wrong flag is reported before any question is asked.
    let problems = flag_problems(&answers, &given);
    if !problems.is_empty() {
        return Ok(report(&problems));
    }
    if !args.defaults && given.contains(&false) && std::io::stdin().is_terminal() {
        ask(&mut answers, &given)?;
    }
    let text = render(&answers);
    let problems = problems_of(&text);
    if !problems.is_empty() {
        return Ok(report(&problems));
    }
    let holds_secret =
        answers.token.is_some() || rota::store::redact_url(&answers.store) != answers.store;
    match &args.out {
        None => {
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
            {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                Err(e) => return Err(e).context("writing the config to standard output"),
            }
        }
        Some(out) => {
            write_out(out, &text, args.force, holds_secret)?;
            eprintln!(
                "wrote {} (node `{}` in cluster `{}`); check it on the node's host with `rota config check {}`",
                out.display(),
                answers.id,
                answers.cluster,
                out.display()
            );
            if answers.token.is_some() {
                eprintln!(
                    "the file holds a new admin token (not shown; mode 0600): give the node's user, and only it, read access"
                );
            }
        }
    }
    if rota::store::redact_url(&answers.store) != answers.store {
        eprintln!(
            "warning: the store URL holds a password, now in the config file; {STORE_URL_ENV} keeps it out of files"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses an `--out` that exists (without `--force`) or whose directory does not.
fn check_out(out: &Path, force: bool) -> anyhow::Result<()> {
    if out.is_dir() {
        bail!(
            "--out {}: is a directory; give the path of the file to write, e.g. {}",
            out.display(),
            out.join("rota.toml").display()
        );
    }
    if out.exists() && !force {
        bail!(
            "--out {}: the file exists and was left as it is; pass --force to replace it, or choose another path",
            out.display()
        );
    }
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        bail!(
            "--out {}: the directory {} does not exist; create it first (mkdir -p {})",
            out.display(),
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

/// Writes the file: never over an existing one without `force`; with `force`, through a
/// temporary file renamed into place, so the file is never half written. A file holding a
/// secret is readable by its owner only.
fn write_out(out: &Path, text: &str, force: bool, secret: bool) -> anyhow::Result<()> {
    let mode = if secret { 0o600 } else { 0o644 };
    let create = |path: &Path| -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?;
        file.write_all(text.as_bytes())?;
        // The umask may have taken bits off; a secret's mode must be exactly 0600.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()
    };
    if !force {
        return create(out).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow::anyhow!(
                    "--out {}: the file exists and was left as it is; pass --force to replace it, or choose another path",
                    out.display()
                )
            } else {
                anyhow::anyhow!("--out {}: cannot write the file: {e}", out.display())
            }
        });
    }
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "rota.toml".into());
    let temp = out.with_file_name(format!(".{name}.rota-init-{}", std::process::id()));
    let result = create(&temp).and_then(|()| fs::rename(&temp, out));
    if let Err(e) = result {
        let _ = fs::remove_file(&temp);
        bail!("--out {}: cannot write the file: {e}", out.display());
    }
    Ok(())
}

/// Asks for each value whose flag was not given, on standard error, until the answer is
/// valid; an empty answer takes the value shown, the end of input takes every one left.
fn ask(answers: &mut Answers, given: &[bool; 4]) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    eprintln!("A config for a new rota node. Enter takes the value in brackets.");
    for (i, q) in QUESTIONS.iter().enumerate() {
        if given[i] {
            continue;
        }
        loop {
            let current = match i {
                0 => answers.id.clone(),
                1 => answers.cluster.clone(),
                2 => answers.store.clone(),
                _ => answers.listen.clone().unwrap_or_else(|| LISTEN_OFF.into()),
            };
            eprint!("{} [{}]: ", q.prompt, rota::store::redact_url(&current));
            std::io::stderr().flush().ok();
            let answer = match lines.next() {
                Some(line) => line.context("reading an answer from standard input")?,
                None => {
                    eprintln!();
                    return Ok(());
                }
            };
            let answer = answer.trim();
            if answer.is_empty() {
                break;
            }
            let mut candidate = answers.clone();
            match i {
                0 => candidate.id = answer.into(),
                1 => candidate.cluster = answer.into(),
                2 => candidate.store = answer.into(),
                _ => candidate.listen = listen_value(answer),
            }
            let problems: Vec<_> = problems_of(&render(&candidate))
                .into_iter()
                .filter(|p| p.field == q.field)
                .collect();
            if problems.is_empty() {
                *answers = candidate;
                break;
            }
            for p in &problems {
                eprintln!("  {p}");
            }
        }
    }
    Ok(())
}

/// The problems of the rendered file that the given flags caused, named by flag.
fn flag_problems(answers: &Answers, given: &[bool; 4]) -> Vec<ConfigProblem> {
    problems_of(&render(answers))
        .into_iter()
        .filter(|p| {
            QUESTIONS
                .iter()
                .zip(given)
                .any(|(q, given)| *given && q.field == p.field)
        })
        .collect()
}

/// What `rota config check` would say of `text` (on any host: the file names no directory).
fn problems_of(text: &str) -> Vec<ConfigProblem> {
    match config::parse(text) {
        Ok(config) => {
            let mut problems = config.validate();
            problems.extend(config.check_host());
            problems
        }
        Err(problems) => problems,
    }
}

fn report(problems: &[ConfigProblem]) -> ExitCode {
    eprintln!("error: {} problem(s); nothing was written", problems.len());
    for p in problems {
        match QUESTIONS.iter().find(|q| q.field == p.field) {
            Some(q) => eprintln!("  {} (from {}): {p}", q.flag, q.field),
            None => eprintln!("  {p}"),
        }
    }
    ExitCode::from(EXIT_CONFIG)
}

fn listen_value(text: &str) -> Option<String> {
    (!text.eq_ignore_ascii_case(LISTEN_OFF)).then(|| text.to_string())
}

/// This host's name, made a valid node id (letters, digits, `-`, `_`, `.`; at most 128).
fn default_id() -> String {
    let id: String = rota::node::identity::host_name()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect();
    if id.is_empty() || id == "unknown-host" {
        "node-1".into()
    } else {
        id
    }
}

fn new_token() -> String {
    let bytes: [u8; TOKEN_BYTES] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A TOML basic string: quoted, with its special characters escaped.
fn quoted(value: &str) -> String {
    toml::Value::String(value.to_string()).to_string()
}

/// The commented file.
fn render(a: &Answers) -> String {
    let version = env!("CARGO_PKG_VERSION");
    let listen = match &a.listen {
        Some(l) => format!("listen = {}", quoted(l)),
        None => format!("# listen = {}", quoted(DEFAULT_LISTEN)),
    };
    let token = match &a.token {
        Some(t) => format!(
            "# Generated by `rota init`: keep this file readable by the node's user only.\ntoken = {}",
            quoted(t)
        ),
        None => "# token = \"...\"".to_string(),
    };
    format!(
        r##"# The configuration of one rota node, written by `rota init` (rota {version}).
# Every node of a cluster has its own file; the files differ only in [node] id.
# Check it with `rota config check FILE`; run the node with `rota node --config FILE`.
# Every key is described in examples/rota.toml of the rota sources (with the Debian
# package: /usr/share/doc/rota/examples/rota.toml).
#
# Durations are a whole number with a unit: 250ms, 5s, 2m, 1h, 1d.

[node]
# This node's id: unique in the cluster (a node refuses to start, with exit code 3, while
# another live node has it). 1 to 128 letters, digits, `-`, `_` or `.`.
id = {id}
# The cluster: the nodes of one cluster share its tasks. Several clusters may share one
# store without seeing each other.
cluster = {cluster}
# Labels that tasks choose nodes by, with `node_selector`.
# labels = {{ zone = "eu" }}
# What a `restart` cluster command does: "exec" re-executes this binary with the same
# arguments (no supervisor needed); "exit" exits with code 75 for a supervisor to start the
# node again (the systemd unit of the Debian package does).
restart = {restart}

[store]
# Where the nodes meet; every node of the cluster names the same store:
# sqlite:///path/to/file.db (nodes on one host), postgres://user@host:5432/db,
# mysql://user@host:3306/db (or mariadb://), zookeeper://host1:2181,host2:2181/rota.
# The environment variable ROTA_STORE_URL overrides this key: a URL with a password belongs
# there (with the Debian package, in /etc/default/rota), not in this file.
url = {store}
# Create or upgrade the schema at start. With false, the node refuses to start unless the
# schema is present and current (`rota schema --db postgres` prints it for a DBA).
migrate = true
# A session lock per node, watched by the others: a node whose process dies is noticed
# within milliseconds. Set false behind a transaction pooler (PgBouncer in transaction
# mode, ProxySQL) or on Galera.
session_locks = true

[admin]
# The HTTP admin API: JSON under /api/v1, the dashboard at /, metrics at /metrics, and
# /healthz and /readyz. An IP address and port; without `listen` there is none of these.
{listen}
# Actions (drain, pause, restart...) need the admin token; reads take it or the read
# token. A token has at least 16 characters (`openssl rand -hex 24` makes one). Keep
# tokens out of this file: ROTA_ADMIN_TOKEN and ROTA_READ_TOKEN win over these keys (with
# the Debian package, set them in /etc/default/rota). With no token at all, every action
# is refused and reads are open to clients that name this node by IP address or localhost.
{token}
# read_token = "..."
# HTTPS: a PEM certificate chain (leaf first) and its private key.
# tls_cert = "/etc/rota/admin.crt"
# tls_key = "/etc/rota/admin.key"

[log]
# "human", or "json" (one object per line).
format = "human"
# trace, debug, info, warn, error or off. The environment variable ROTA_LOG overrides it.
level = "info"

[timing]
# Optional: the defaults (shown) give failover within about a second. profile = "fast"
# gives about 350 ms, for four times the heartbeats, and fences a node whose renewals
# are held up 150 ms (a store or host that loaded); keys set here override the profile.
# profile = "default"
# How often the node renews its registration, and how long after the last renewal the
# store declares it dead.
# heartbeat = "200ms"
# node_timeout = "1s"
# On a graceful stop (SIGTERM), how long running fires may take to finish, then how long
# to wait for other nodes to take over. A supervisor must wait longer than both together
# before it kills the node (the Debian package's unit waits 60s).
# shutdown_grace = "10s"
# handover_timeout = "5s"

# Each [[task]] runs on exactly one node of the cluster at a time. Every node declaring a
# task declares it identically. An example to adapt: remove the leading "# " of its lines.
#
# [[task]]
# name = "ftp-transfer"                  # unique in the cluster
# cron = "0 0 12 * * *"                  # sec min hour day month weekday; or: every = "5m"
# time_zone = "Europe/Paris"             # of the cron; default UTC
# timeout = "30m"                        # the command's whole process group is killed then
# command = ["/usr/local/bin/transfer.sh", "--today"]   # no shell; exit status 0 is success
# env = {{ TRANSFER_TARGET = "ftp.example.com" }}
"##,
        id = quoted(&a.id),
        cluster = quoted(&a.cluster),
        restart = quoted(&a.restart),
        store = quoted(&a.store),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers() -> Answers {
        Answers {
            id: "node-1".into(),
            cluster: "orders".into(),
            store: DEFAULT_STORE.into(),
            listen: Some(DEFAULT_LISTEN.into()),
            restart: "exit".into(),
            token: None,
        }
    }

    #[test]
    fn rendered_files_are_valid_with_and_without_api_and_token() {
        let mut a = answers();
        assert_eq!(problems_of(&render(&a)), vec![]);
        a.listen = None;
        a.token = Some(new_token());
        let text = render(&a);
        assert_eq!(problems_of(&text), vec![]);
        let parsed = config::parse(&text).unwrap();
        assert_eq!(parsed.admin.listen, None);
        assert_eq!(parsed.admin.token.as_ref().unwrap().len(), 2 * TOKEN_BYTES);
        assert_eq!(parsed.node.restart.as_deref(), Some("exit"));
    }

    #[test]
    fn values_are_escaped_and_bad_ones_named_by_flag() {
        let mut a = answers();
        a.id = "a\"b\nc".into();
        a.store = "redis://x".into();
        a.listen = Some("localhost".into());
        let problems = flag_problems(&a, &[true, false, true, true]);
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["node.id", "store.url", "admin.listen"],
            "{problems:#?}"
        );
        // The cluster's flag was not given: its problems are not the flags'.
        a = answers();
        a.cluster = String::new();
        assert_eq!(flag_problems(&a, &[true, false, true, true]), vec![]);
    }

    #[test]
    fn default_id_is_a_valid_name() {
        let mut a = answers();
        a.id = default_id();
        assert_eq!(problems_of(&render(&a)), vec![], "{}", a.id);
    }
}
