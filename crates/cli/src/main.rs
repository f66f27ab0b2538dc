//! The `rota` binary: node daemon, status, config check and init, schema, demo, benchmarks,
//! shell completions and man pages. A thin layer over the library's public API. `anyhow`
//! lives here, at the edge, and nowhere in the libraries.

mod allocator;
mod bench;
mod ctl;
mod demo;
mod init;
mod inspect;
mod manual;
mod node;

use std::{path::PathBuf, process::ExitCode};

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "rota",
    version,
    about = "Task coordination for clusters: every coordinated task runs on exactly one node"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node with the given config file.
    Node {
        /// The node's TOML config (`rota init` writes one, `rota config check` checks it).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print a cluster's nodes, tasks and recent fires, read from its store.
    Status {
        /// Store URL (default: $ROTA_STORE_URL).
        #[arg(long, env = "ROTA_STORE_URL", hide_env_values = true)]
        store: String,
        #[arg(long, default_value = "default")]
        cluster: String,
        /// How many recent fires to show.
        #[arg(long, default_value_t = 15)]
        history: i64,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Write a commented config file for a new node, from flags, and on a terminal from
    /// questions for the flags not given.
    Init(init::InitArgs),
    /// Print the SQL schema script for a database (for DBAs who create it by hand).
    Schema {
        /// sqlite, postgres or mysql
        #[arg(long)]
        db: String,
    },
    /// Start a 3-node cluster on a temporary SQLite file, kill the owner, show the failover.
    Demo {
        /// Seconds to run before the kill, and after it.
        #[arg(long, default_value_t = 6)]
        phase: u64,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    Ctl(ctl::CtlArgs),
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page rota(1), or write it and one page per command into a directory.
    Man {
        /// Write rota.1 and rota-<command>.1 (rota-node.1, rota-config-check.1, ...) into
        /// this directory, instead of printing rota.1.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file and name every problem (field, value, fix).
    Check { file: PathBuf },
}

#[global_allocator]
static ALLOCATOR: allocator::Mimalloc = allocator::Mimalloc;

fn main() -> ExitCode {
    allocator::tune();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Command::Node { config } => node::run(&config).await,
        Command::Status {
            store,
            cluster,
            history,
        } => inspect::status(&store, &cluster, history).await,
        Command::Config {
            command: ConfigCommand::Check { file },
        } => inspect::config_check(&file),
        Command::Init(args) => init::run(args),
        Command::Schema { db } => inspect::schema(&db),
        Command::Demo { phase } => demo::run(phase).await,
        Command::Bench { command } => bench::run(command).await,
        Command::Ctl(args) => ctl::run(args).await,
        Command::Completions { shell } => manual::completions(shell, Args::command()),
        Command::Man { out } => manual::man(Args::command(), out.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
