//! The campaign's task workload: command tasks whose runs write their own START and END
//! lines, the node config that declares them, and the tail of the record file.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use super::check::{self, RecordLine, TaskInfo, UnitLine};

/// Every task fires every second (the product's epoch-aligned interval).
pub(super) const PERIOD_MS: i64 = 1000;

/// The task whose period, [`SPARSE_PERIOD_MS`], is longer than `Timing::park_after` (60 s):
/// its runner parks between instants, and the faults find it parked. The campaign does not
/// wait for it after a fault (it may be 90 s away), nor count it in failover times; the
/// checker checks its instants like any task's.
pub(super) const SPARSE_TASK: &str = "sparse";
pub(super) const SPARSE_PERIOD_MS: i64 = 90_000;

/// How long a short task's work lasts.
pub(super) const SHORT_WORK: &str = "0.2";

/// How long the long task's work lasts: two instants fall due while it runs.
pub(super) const LONG_WORK: &str = "2.5";

/// One run of a command task: the START line is written once the END watcher runs in a
/// session of its own, so that an END line is written whenever the work ends, however it
/// ends: it is killed (a cancel kills its process group; its node's death, through
/// `PR_SET_PDEATHSIG`), and the watcher, holding the read end of a FIFO whose only writers
/// are the work's descriptors 3 and 4, sees the FIFO close. A run that ends by itself writes
/// its own END line just before it exits, so a watcher that a busy machine wakes late cannot
/// make a run look longer than it was (the checker takes a run's first END). The work waits
/// in bash itself (`read -t` on the FIFO, which never carries data): one process, which dies
/// with its node. Times come from `EPOCHREALTIME`: no fork between the event and its
/// timestamp. `$1`: record file, `$2`: FIFO directory, `$3`: work seconds.
pub(super) const RUN_SCRIPT: &str = r#"f="$2/$$-${EPOCHREALTIME/[.,]/}"
mkfifo "$f" || exit 1
id="$ROTA_TASK $ROTA_FIRE_TIME_MS $ROTA_NODE $$ $PPID $ROTA_ATTEMPT $ROTA_FENCING_TOKEN"
setsid bash -c 'read -r _ < "$2"; t=${EPOCHREALTIME/[.,]/}; echo "E $3 $t" >> "$1"; rm -f "$2"' end "$1" "$f" "$id" < /dev/null > /dev/null 2>&1 &
exec 3> "$f"
exec 4<> "$f"
t=${EPOCHREALTIME/[.,]/}
echo "S $id $t" >> "$1"
read -r -t "$3" -u 4 _
t=${EPOCHREALTIME/[.,]/}
echo "E $id $t" >> "$1"
"#;

/// The run of `flaky`: [`RUN_SCRIPT`], then a failure on its first attempt, so that each of
/// its instants is retried (`retry`) as attempt 2, under the faults like any start.
pub(super) const FLAKY_TAIL: &str = "[ \"$ROTA_ATTEMPT\" -gt 1 ] || exit 3\n";

/// Wall clock, Unix ms: the record's clock.
pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(super) fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The `command` array (its inside, TOML) of a run: `bash -c SCRIPT ARG0 RECORD FIFOS WORK`,
/// without `LD_PRELOAD`: on a node whose clock is faked, the record keeps the real clock.
pub(super) fn command_argv(
    script: &str,
    arg0: &str,
    record: &Path,
    fifos: &Path,
    work: &str,
) -> String {
    [
        "env",
        "-u",
        "LD_PRELOAD",
        "bash",
        "-c",
        script,
        arg0,
        &record.display().to_string(),
        &fifos.display().to_string(),
        work,
    ]
    .map(toml_string)
    .join(", ")
}

/// The `[[task]]` sections: `short-1..n` and `long`, all every second, default policies;
/// `flaky`, whose first attempt of each instant fails and is retried 100 ms later; and
/// `sparse`, every 90 s, whose runner parks between instants.
pub(super) fn workload(short: usize, record: &Path, fifos: &Path) -> (String, Vec<TaskInfo>) {
    let mut toml = String::new();
    let mut tasks = Vec::new();
    let flaky_script = format!("{RUN_SCRIPT}{FLAKY_TAIL}");
    let argv = command_argv(&flaky_script, "rota-run", record, fifos, SHORT_WORK);
    toml.push_str(&format!(
        "[[task]]\nname = \"flaky\"\nevery = \"1s\"\nretry = {{ max = 2, backoff = \"100ms\", max_backoff = \"100ms\" }}\ncommand = [{argv}]\n\n"
    ));
    tasks.push(TaskInfo {
        name: "flaky".into(),
        period_ms: PERIOD_MS,
        retry: true,
    });
    let names = (1..=short)
        .map(|i| (format!("short-{i}"), SHORT_WORK, PERIOD_MS))
        .chain([
            ("long".to_string(), LONG_WORK, PERIOD_MS),
            (SPARSE_TASK.to_string(), SHORT_WORK, SPARSE_PERIOD_MS),
        ]);
    for (name, work, period_ms) in names {
        let argv = command_argv(RUN_SCRIPT, "rota-run", record, fifos, work);
        toml.push_str(&format!(
            "[[task]]\nname = \"{name}\"\nevery = \"{period_ms}ms\"\ncommand = [{argv}]\n\n"
        ));
        tasks.push(TaskInfo {
            name,
            period_ms,
            retry: false,
        });
    }
    (toml, tasks)
}

/// The record file's lines, the last START of each task and service, and the runs still
/// open, read from the record file as it grows.
pub(super) struct RecordTail {
    pub(super) path: PathBuf,
    pub(super) offset: u64,
    pub(super) partial: String,
    /// The tasks' complete lines so far, in file order.
    pub(super) lines: Vec<RecordLine>,
    /// The services' complete lines so far, in file order.
    pub(super) units: Vec<UnitLine>,
    pub(super) last_start: BTreeMap<String, i64>,
    /// (task or service, instant or key, run pid)
    pub(super) open_runs: BTreeSet<(String, String, u32)>,
}

impl RecordTail {
    pub(super) fn new(path: PathBuf) -> Self {
        RecordTail {
            path,
            offset: 0,
            partial: String::new(),
            lines: Vec::new(),
            units: Vec::new(),
            last_start: BTreeMap::new(),
            open_runs: BTreeSet::new(),
        }
    }

    pub(super) fn update(&mut self) {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return;
        };
        let mut text = String::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err()
            || file.read_to_string(&mut text).is_err()
        {
            return;
        }
        self.offset += text.len() as u64;
        self.partial.push_str(&text);
        let Some(complete) = self.partial.rfind('\n') else {
            return;
        };
        let rest = self.partial.split_off(complete + 1);
        let lines = check::parse_record(&self.partial);
        let units = check::parse_units(&self.partial);
        let tasks = lines.iter().map(|l| {
            let key = (l.task.clone(), l.instant_ms.to_string(), l.pid);
            (l.mark, key, l.at_ms)
        });
        let services = units
            .iter()
            .map(|l| (l.mark, (l.service.clone(), l.key.clone(), l.pid), l.at_ms));
        for (mark, key, at_ms) in tasks.chain(services) {
            match mark {
                check::Mark::Start => {
                    let last = self.last_start.entry(key.0.clone()).or_default();
                    *last = (*last).max(at_ms);
                    self.open_runs.insert(key);
                }
                check::Mark::End => {
                    self.open_runs.remove(&key);
                }
                check::Mark::Done => {}
            }
        }
        self.lines.extend(lines);
        self.units.extend(units);
        self.partial = rest;
    }

    /// Whether every one of `names` (tasks or services) started after `since_ms`.
    pub(super) fn all_started_after(&self, names: &[String], since_ms: i64) -> bool {
        names
            .iter()
            .all(|t| self.last_start.get(t).is_some_and(|&at| at > since_ms))
    }

    /// Whether a run of `name` is going on.
    pub(super) fn running(&self, name: &str) -> bool {
        self.open_runs.iter().any(|(n, _, _)| n == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn the_workload_is_valid_toml_with_default_policies() {
        let (toml, tasks) = workload(2, Path::new("/tmp/r.log"), Path::new("/tmp/f"));
        let value: toml::Table = toml.parse().expect("valid TOML");
        let sections = value["task"].as_array().unwrap();
        assert_eq!(sections.len(), 5);
        assert_eq!(tasks.len(), 5);
        let sparse = tasks.iter().find(|t| t.name == "sparse").unwrap();
        assert!(
            sparse.period_ms > 60_000,
            "sparse outlasts park_after, so that it parks"
        );
        assert_eq!(
            tasks
                .iter()
                .filter(|t| t.retry)
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["flaky"],
            "only flaky retries"
        );
        for s in sections {
            let t = s.as_table().unwrap();
            assert!(!t.contains_key("recovery") && !t.contains_key("misfire"));
            // `env -u LD_PRELOAD bash -c SCRIPT ...`: the record keeps the real clock.
            let argv: Vec<&str> = t["command"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            assert_eq!(argv[..5], ["env", "-u", "LD_PRELOAD", "bash", "-c"]);
            assert!(argv[5].starts_with(RUN_SCRIPT));
        }
    }
}
