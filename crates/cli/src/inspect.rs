//! The binary's read-only tools: a cluster's status, a config check, the schema script.

use std::{path::Path, process::ExitCode};

use anyhow::{bail, Context};
use rota::store::{self, sql::dialect::Dialect};

pub async fn status(url: &str, cluster: &str, history: i64) -> anyhow::Result<ExitCode> {
    let store = store::open(url).await?;
    store.prepare(false).await.context("reading the store")?;
    let snapshot = rota::status::Snapshot::read(&store, cluster, history).await?;
    print!("{}", snapshot.render());
    Ok(ExitCode::SUCCESS)
}

pub fn config_check(file: &Path) -> anyhow::Result<ExitCode> {
    let problems = match rota_cli::config::load(file) {
        Ok(config) => {
            let mut problems = config.validate();
            problems.extend(config.check_host());
            if problems.is_empty() {
                println!(
                    "{}: ok (node `{}` in cluster `{}`, {} task(s))",
                    file.display(),
                    config.node.id,
                    config.node.cluster,
                    config.tasks.len()
                );
                return Ok(ExitCode::SUCCESS);
            }
            problems.sort_by(|a, b| a.field.cmp(&b.field));
            problems
        }
        Err(problems) => problems,
    };
    eprintln!("{}: {} problem(s)", file.display(), problems.len());
    for p in &problems {
        eprintln!("  {p}");
    }
    Ok(ExitCode::from(2))
}

pub fn schema(db: &str) -> anyhow::Result<ExitCode> {
    let Some(dialect) = Dialect::from_scheme(db) else {
        bail!("--db `{db}` is not a known database; use sqlite, postgres or mysql");
    };
    print!("{}", store::sql::schema::script(dialect));
    Ok(ExitCode::SUCCESS)
}
