//! The campaign's service workloads: a command service (a process that runs until it is
//! stopped) and a `file_inbound` service fed by files the campaign drops into a directory
//! every node shares; and what the checker needs from outside the record afterwards: where
//! each file ended up and its item record in the store.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::{bail, Context};

use super::{
    check::{ItemRow, Place},
    workload::{command_argv, now_ms, toml_string},
};

/// The `file_inbound` service.
pub const FILE_SERVICE: &str = "inbox";
/// The command service.
pub const COMMAND_SERVICE: &str = "listener";
/// How long the handling of one file lasts.
const FILE_WORK: &str = "0.1";
/// How often the inbox is listed.
const FILE_POLL: &str = "200ms";

/// One run of a service's work, like the tasks' runs (see `RUN_SCRIPT`): the START line once
/// the END watcher holds the FIFO, the END line whenever the work ends. The key is the file's
/// name for a file, the service's name for the command service; the attempt is
/// `ROTA_ATTEMPT` for a file, `ROTA_RESTARTS` for the command service. Stopped by SIGTERM
/// (a graceful handover), the run writes its own END line as it exits: the next owner may
/// start a few milliseconds later, sooner than a busy machine wakes the watcher (which
/// still writes the END line of a run killed outright). Once the work is done
/// (never, for the command service), the run ignores SIGTERM, writes a DONE line and exits
/// 0: a file with a DONE line was handled whole, and must never be handled again; one
/// without was interrupted. `$1`: record file, `$2`: FIFO directory, `$3`: work seconds
/// (`infinity`: until stopped).
const UNIT_SCRIPT: &str = r#"f="$2/$$-${EPOCHREALTIME/[.,]/}"
mkfifo "$f" || exit 1
id="$ROTA_SERVICE ${ROTA_FILE_NAME:-$ROTA_SERVICE} $ROTA_NODE $$ $PPID ${ROTA_ATTEMPT:-${ROTA_RESTARTS:-0}} $ROTA_FENCING_TOKEN"
setsid bash -c 'read -r _ < "$2"; t=${EPOCHREALTIME/[.,]/}; echo "UE $3 $t" >> "$1"; rm -f "$2"' end "$1" "$f" "$id" < /dev/null > /dev/null 2>&1 &
exec 3> "$f"
t=${EPOCHREALTIME/[.,]/}
echo "US $id $t" >> "$1"
trap 't=${EPOCHREALTIME/[.,]/}; echo "UE $id $t" >> "$1"; exit 143' TERM
sleep "$3" & wait $! || exit 1
trap '' TERM
t=${EPOCHREALTIME/[.,]/}
echo "UD $id $t" >> "$1"
"#;

/// The three directories of the file workload, on one file system.
#[derive(Debug, Clone)]
pub struct FileDirs {
    pub inbox: PathBuf,
    pub done: PathBuf,
    pub failed: PathBuf,
}

impl FileDirs {
    pub fn under(dir: &Path) -> anyhow::Result<FileDirs> {
        let dirs = FileDirs {
            inbox: dir.join("files").join("in"),
            done: dir.join("files").join("done"),
            failed: dir.join("files").join("failed"),
        };
        for d in [&dirs.inbox, &dirs.done, &dirs.failed] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(dirs)
    }

    /// Files in the inbox (not the ones still being written, under a dot name).
    pub fn waiting(&self) -> usize {
        names(&self.inbox).len()
    }

    /// Where each file is now.
    pub fn places(&self) -> BTreeMap<String, Place> {
        let mut out = BTreeMap::new();
        for (dir, place) in [
            (&self.inbox, Place::Inbox),
            (&self.done, Place::Done),
            (&self.failed, Place::Failed),
        ] {
            for name in names(dir) {
                // A name moved where it was already gets a `.<stamp>` suffix.
                let base = name.split('.').next().unwrap_or(&name).to_string();
                out.insert(base, place);
            }
        }
        out
    }
}

fn names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

fn argv(record: &Path, fifos: &Path, work: &str) -> String {
    command_argv(UNIT_SCRIPT, "rota-unit", record, fifos, work)
}

/// The `[[service]]` sections, default policies: the file service when `files` is given, the
/// command service when `command`.
pub fn workload(record: &Path, fifos: &Path, files: Option<&FileDirs>, command: bool) -> String {
    let mut toml = String::new();
    if let Some(d) = files {
        toml.push_str(&format!(
            "[[service]]\nname = \"{FILE_SERVICE}\"\nfile_inbound = {{ dir = {}, done = {}, failed = {}, poll = \"{FILE_POLL}\", command = [{}] }}\n\n",
            toml_string(&d.inbox.display().to_string()),
            toml_string(&d.done.display().to_string()),
            toml_string(&d.failed.display().to_string()),
            argv(record, fifos, FILE_WORK)
        ));
    }
    if command {
        toml.push_str(&format!(
            "[[service]]\nname = \"{COMMAND_SERVICE}\"\ncommand = [{}]\n\n",
            argv(record, fifos, "infinity")
        ));
    }
    toml
}

/// Drops files into the inbox at a steady rate (each written under a dot name, then renamed
/// into place) until stopped; remembers each name and when it was renamed.
pub struct Dropper {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    pub dropped: Arc<Mutex<Vec<(String, i64)>>>,
}

impl Dropper {
    pub fn start(inbox: PathBuf, per_second: f64) -> Dropper {
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(Mutex::new(Vec::new()));
        let (s, d) = (stop.clone(), dropped.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0u64;
            while !s.load(Ordering::SeqCst) {
                tick.tick().await;
                n += 1;
                let name = format!("f-{n:06}");
                let hidden = inbox.join(format!(".{name}"));
                if std::fs::write(&hidden, format!("file {n}\n")).is_err()
                    || std::fs::rename(&hidden, inbox.join(&name)).is_err()
                {
                    eprintln!("  cannot drop {name} into {}", inbox.display());
                    continue;
                }
                d.lock().unwrap().push((name, now_ms()));
            }
        });
        Dropper {
            stop,
            task,
            dropped,
        }
    }

    /// Stops dropping; returns every file dropped.
    pub async fn stop(self) -> Vec<(String, i64)> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        let out = self.dropped.lock().unwrap().clone();
        out
    }
}

/// The item records of `service` in the store at `url`, read directly (the store's API has no
/// listing of items): SQL `rota_fires` rows with a slot, or ZooKeeper `i-<hex>` znodes.
/// Retried on a fresh connection: a run of hours leaves tens of thousands of records, and
/// one slow reply on a busy machine must not cost the whole check (a 291-fault ZooKeeper
/// run ended with "no response from connection in 1600ms" and no report).
pub async fn item_rows(url: &str, cluster: &str, service: &str) -> anyhow::Result<Vec<ItemRow>> {
    let mut tries = 1;
    loop {
        let read = if url.starts_with("zookeeper://") {
            zk_item_rows(url, cluster, service).await
        } else {
            sql_item_rows(url, cluster, service).await
        };
        match read {
            Err(e) if tries < 3 => {
                eprintln!("  reading the item records failed ({e:#}); again");
                tries += 1;
            }
            read => return read,
        }
    }
}

/// The file's name: the item key up to its first `|` (name, mtime, size, inode).
fn file_name(key: &str) -> String {
    key.split('|').next().unwrap_or(key).to_string()
}

async fn sql_item_rows(url: &str, cluster: &str, service: &str) -> anyhow::Result<Vec<ItemRow>> {
    use rota::store::sql::dialect::Dialect;
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    let scheme = url.split("://").next().unwrap_or("");
    let Some(dialect) = Dialect::from_scheme(scheme) else {
        bail!("unknown store scheme `{scheme}`");
    };
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&dialect.normalize_url(url))
        .await
        .context("connecting to read the item records")?;
    let sql = dialect.prepare(
        "SELECT slot, node_id, token, attempt, outcome, started_at, finished_at, message \
         FROM rota_fires WHERE cluster = ? AND task = ? AND slot <> ''",
    );
    let rows = sqlx::query(&sql)
        .bind(cluster)
        .bind(service)
        .fetch_all(&pool)
        .await
        .context("reading the item records")?;
    pool.close().await;
    // Keys are bytes on MySQL: text or bytes, whichever the column gives.
    let text = |r: &sqlx::any::AnyRow, c: &str| -> Option<String> {
        r.try_get::<Option<String>, _>(c)
            .ok()
            .flatten()
            .or_else(|| {
                r.try_get::<Option<Vec<u8>>, _>(c)
                    .ok()
                    .flatten()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
            })
    };
    rows.iter()
        .map(|r| {
            Ok(ItemRow {
                name: file_name(&text(r, "slot").unwrap_or_default()),
                node: text(r, "node_id").unwrap_or_default(),
                token: r.try_get("token")?,
                attempt: r.try_get("attempt")?,
                outcome: text(r, "outcome").unwrap_or_default(),
                started_at_ms: r.try_get("started_at")?,
                finished_at_ms: r.try_get("finished_at")?,
                message: text(r, "message"),
            })
        })
        .collect()
}

async fn zk_item_rows(url: &str, cluster: &str, service: &str) -> anyhow::Result<Vec<ItemRow>> {
    use zookeeper_client as zk;
    #[derive(serde::Deserialize)]
    struct Record {
        node: String,
        token: i64,
        attempt: i64,
        outcome: String,
        started_at: Option<i64>,
        finished_at: Option<i64>,
        message: Option<String>,
    }
    let rest = url.trim_start_matches("zookeeper://");
    let (hosts, root) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, "/rota"),
    };
    let root = if root.is_empty() { "/rota" } else { root };
    let client = zk::Client::connector()
        // A reader, not a node: a long session gives each request a generous timeout.
        .with_session_timeout(Duration::from_secs(30))
        .with_connection_timeout(Duration::from_secs(5))
        .connect(hosts)
        .await
        .context("connecting to ZooKeeper to read the item records")?;
    let dir = format!("{root}/clusters/{cluster}/fires/{service}");
    let children = match client.list_children(&dir).await {
        Ok(c) => c,
        Err(zk::Error::NoNode) => Vec::new(),
        Err(e) => bail!("listing {dir}: {e}"),
    };
    // Pipelined, 256 requests in flight: one round trip per record took over 25 minutes
    // for the 20,000 files of a long run.
    let mut out = Vec::new();
    for batch in children.chunks(256) {
        let reads: Vec<_> = batch
            .iter()
            .filter(|child| child.starts_with("i-"))
            .map(|child| (child, client.get_data(&format!("{dir}/{child}"))))
            .collect();
        for (child, read) in reads {
            let hex = &child["i-".len()..];
            let bytes: Vec<u8> = (0..hex.len() / 2)
                .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                .collect();
            let key = String::from_utf8_lossy(&bytes).into_owned();
            let (data, _) = match read.await {
                Ok(d) => d,
                Err(zk::Error::NoNode) => continue,
                Err(e) => bail!("reading {dir}/{child}: {e}"),
            };
            let r: Record = serde_json::from_slice(&data)
                .with_context(|| format!("unreadable item record {dir}/{child}"))?;
            out.push(ItemRow {
                name: file_name(&key),
                node: r.node,
                token: r.token,
                attempt: r.attempt,
                outcome: r.outcome,
                started_at_ms: r.started_at,
                finished_at_ms: r.finished_at,
                message: r.message,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_workload_is_valid_toml_with_default_policies() {
        let dirs = FileDirs {
            inbox: "/tmp/in".into(),
            done: "/tmp/done".into(),
            failed: "/tmp/failed".into(),
        };
        let toml = workload(Path::new("/tmp/r"), Path::new("/tmp/f"), Some(&dirs), true);
        let value: toml::Table = toml.parse().expect("valid TOML");
        let services = value["service"].as_array().unwrap();
        assert_eq!(services.len(), 2);
        for s in services {
            let t = s.as_table().unwrap();
            assert!(!t.contains_key("recovery") && !t.contains_key("grace"));
        }
        let fi = services[0]["file_inbound"].as_table().unwrap();
        assert_eq!(fi["dir"].as_str(), Some("/tmp/in"));
        let argv: Vec<&str> = fi["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            argv[..6],
            ["env", "-u", "LD_PRELOAD", "bash", "-c", UNIT_SCRIPT]
        );
        assert_eq!(file_name("f-000001|1.000|7|42"), "f-000001");
    }
}
