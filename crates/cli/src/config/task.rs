//! `[[task]]`: a task's schedule, policies, placement and kind (`command`, `http` or
//! `log`), checked and compiled into a [`TaskSpec`]. The `command` and `http` settings are
//! compiled here for services' `file_inbound` too.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    path::PathBuf,
};

use serde::Deserialize;

use rota::{
    core::{
        placement::PlacementSpec,
        schedule::{Schedule, ScheduleError},
    },
    kinds::{http, CommandTask, HttpTask, Kind, LogTask},
    store::redact_url,
    task::{MisfirePolicy, OverlapPolicy, RecoveryPolicy, RetryPolicy, TaskSpec},
};

use super::{
    checks::{check_name, duration, ConfigProblem},
    placement::PlacementSection,
};

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
    /// Runs a failed or timed-out fire again: `{ max = 3, backoff = "10s", max_backoff = "5m" }`.
    pub retry: Option<RetrySection>,
    /// `queue` (default), `skip` or `replace`: what an instant does while the previous run goes on.
    pub overlap: Option<String>,
    /// Moves every instant by a fixed offset below this, derived from the task's name.
    pub jitter: Option<String>,
    /// Bytes of a command's stdout and of its stderr kept per fire, the tail (default 65536; 0: none).
    pub output_limit: Option<i64>,
    /// A dead man's switch: alert (`task_overdue`) when no fire ended ok for this long.
    pub expect_success_within: Option<String>,
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

/// `retry = { ... }` of a task or of `[defaults]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    /// Retries after the first attempt (default 3; 0: none, to turn a default off).
    pub max: Option<i64>,
    /// Wait before the first retry, doubled at each one after (default 10s).
    pub backoff: Option<String>,
    /// Longest wait between attempts (default 5m).
    pub max_backoff: Option<String>,
}

/// `[defaults]`: policies of every `[[task]]` that does not set its own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskDefaults {
    pub misfire: Option<String>,
    pub misfire_threshold: Option<String>,
    pub recovery: Option<String>,
    pub timeout: Option<String>,
    pub retry: Option<RetrySection>,
    pub overlap: Option<String>,
    pub jitter: Option<String>,
    pub output_limit: Option<i64>,
}

/// A task's own value of a key, else `[defaults]`'s, with the field to name in a problem.
fn pick<'a, T>(
    own: &'a Option<T>,
    own_field: String,
    default: &'a Option<T>,
    key: &str,
) -> Option<(String, &'a T)> {
    match (own, default) {
        (Some(v), _) => Some((own_field, v)),
        (None, Some(v)) => Some((format!("defaults.{key}"), v)),
        (None, None) => None,
    }
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

/// Builds every task; a task with any problem yields problems and no spec.
pub(super) fn compile_tasks(
    tasks: &[TaskSection],
    defaults: &TaskDefaults,
    placement: &PlacementSection,
) -> (Vec<TaskSpec>, Vec<ConfigProblem>) {
    let mut problems = Vec::new();
    let mut specs = Vec::new();
    let mut first_index: HashMap<&str, usize> = HashMap::new();
    // Its problems are reported under `placement.*` by `check_settings`.
    let default_placement = placement
        .compile("placement", None, &mut Vec::new())
        .unwrap_or_default();
    for (i, task) in tasks.iter().enumerate() {
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
        let spec = compile_task(i, task, defaults, &default_placement, &mut problems);
        if problems.len() == before {
            specs.extend(spec);
        }
    }
    // A bad `[defaults]` value is found once per task that uses it: name it once.
    let mut seen = std::collections::HashSet::new();
    problems.retain(|p| !p.field.starts_with("defaults.") || seen.insert(p.to_string()));
    (specs, problems)
}

/// Checks one `[[task]]` and builds it when it has no problem.
fn compile_task(
    i: usize,
    t: &TaskSection,
    d: &TaskDefaults,
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

    let misfire = match pick(&t.misfire, f("misfire"), &d.misfire, "misfire") {
        None => MisfirePolicy::RunOnce,
        Some((_, v)) if v == "run-once" => MisfirePolicy::RunOnce,
        Some((_, v)) if v == "skip" => MisfirePolicy::Skip,
        Some((field, other)) => {
            p.push(ConfigProblem::new(
                field,
                other,
                "unknown misfire policy",
                "use \"run-once\" or \"skip\"",
            ));
            MisfirePolicy::RunOnce
        }
    };
    let threshold = match pick(
        &t.misfire_threshold,
        f("misfire_threshold"),
        &d.misfire_threshold,
        "misfire_threshold",
    ) {
        Some((field, text)) => {
            duration(p, &field, text).unwrap_or(TaskSpec::DEFAULT_MISFIRE_THRESHOLD)
        }
        None => TaskSpec::DEFAULT_MISFIRE_THRESHOLD,
    };
    let recovery = match pick(&t.recovery, f("recovery"), &d.recovery, "recovery") {
        None => RecoveryPolicy::Abandon,
        Some((_, v)) if v == "abandon" => RecoveryPolicy::Abandon,
        Some((_, v)) if v == "retry" => RecoveryPolicy::Retry,
        Some((field, other)) => {
            p.push(ConfigProblem::new(
                field,
                other,
                "unknown recovery policy",
                "use \"abandon\" (at most once, the default) or \"retry\" (at least once)",
            ));
            RecoveryPolicy::Abandon
        }
    };
    let timeout =
        pick(&t.timeout, f("timeout"), &d.timeout, "timeout").and_then(|(field, text)| {
            match duration(p, &field, text) {
                Some(d) if d.is_zero() => {
                    p.push(ConfigProblem::new(
                        field,
                        text,
                        "must be more than 0",
                        "remove timeout for no limit, or give e.g. \"30s\"",
                    ));
                    None
                }
                d => d,
            }
        });
    let overlap = match pick(&t.overlap, f("overlap"), &d.overlap, "overlap") {
        None => OverlapPolicy::default(),
        Some((field, text)) => OverlapPolicy::parse(text).unwrap_or_else(|| {
            p.push(ConfigProblem::new(
                field,
                text,
                "unknown overlap rule",
                "use \"queue\" (wait for the run going on, the default), \"skip\" or \"replace\"",
            ));
            OverlapPolicy::default()
        }),
    };
    let retry = pick(&t.retry, f("retry"), &d.retry, "retry")
        .and_then(|(field, section)| compile_retry(p, &field, section));
    let jitter = pick(&t.jitter, f("jitter"), &d.jitter, "jitter")
        .and_then(|(field, text)| duration(p, &field, text));
    let expect_success_within = t
        .expect_success_within
        .as_deref()
        .and_then(|text| duration(p, &f("expect_success_within"), text));
    let max_output = rota::output::MAX_OUTPUT_LIMIT as i64;
    let output_limit = match pick(
        &t.output_limit,
        f("output_limit"),
        &d.output_limit,
        "output_limit",
    ) {
        None => rota::output::DEFAULT_OUTPUT_LIMIT,
        Some((_, &n)) if (0..=max_output).contains(&n) => n as usize,
        Some((field, n)) => {
            p.push(ConfigProblem::new(
                field,
                n.to_string(),
                format!("bytes kept of each stream are from 0 (none) to {max_output}"),
                "give e.g. output_limit = 65536",
            ));
            rota::output::DEFAULT_OUTPUT_LIMIT
        }
    };

    let placement = t
        .placement_keys()
        .compile(&format!("task[{i}]"), Some(default_placement), p);

    let kind = compile_kind(i, t, p);
    if p.len() != before {
        return None;
    }
    let schedule = match jitter {
        Some(jitter) => schedule?.jittered(&t.name, jitter),
        None => schedule?,
    };
    let mut spec = kind?
        .into_spec(&t.name, schedule)
        .misfire(misfire, threshold)
        .recovery(recovery)
        .overlap(overlap)
        .output_limit(output_limit)
        .placement(placement?);
    if let Some(timeout) = timeout {
        spec = spec.timeout(timeout);
    }
    if let Some(retry) = retry {
        spec = spec.retry(retry);
    }
    if let Some(within) = expect_success_within {
        spec = spec.expect_success_within(within);
    }
    Some(spec)
}

/// `retry = { max, backoff, max_backoff }`; `None` for `max = 0` (no retry) or a problem.
fn compile_retry(p: &mut Vec<ConfigProblem>, field: &str, r: &RetrySection) -> Option<RetryPolicy> {
    let before = p.len();
    let max = r.max.unwrap_or(3);
    if !(0..=100).contains(&max) {
        p.push(ConfigProblem::new(
            format!("{field}.max"),
            max.to_string(),
            "retries are from 0 (none) to 100",
            "give e.g. max = 3",
        ));
    }
    let backoff = duration(
        p,
        &format!("{field}.backoff"),
        r.backoff.as_deref().unwrap_or("10s"),
    );
    let max_backoff = duration(
        p,
        &format!("{field}.max_backoff"),
        r.max_backoff.as_deref().unwrap_or("5m"),
    );
    if let (Some(b), Some(m)) = (backoff, max_backoff) {
        if m < b {
            p.push(ConfigProblem::new(
                format!("{field}.max_backoff"),
                r.max_backoff.clone().unwrap_or_default(),
                format!(
                    "is shorter than backoff ({})",
                    rota::core::schedule::format_duration(b)
                ),
                "make max_backoff at least backoff",
            ));
        }
    }
    if p.len() != before || max == 0 {
        return None;
    }
    Some(RetryPolicy {
        max: max as u32,
        backoff: backoff?,
        max_backoff: max_backoff?,
    })
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

pub(super) fn compile_command(
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
pub(super) fn compile_http(
    p: &mut Vec<ConfigProblem>,
    field: &str,
    h: &HttpSection,
) -> Option<HttpTask> {
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

#[cfg(test)]
mod tests {
    use crate::config::{parse, tests::fields};

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

    /// `retry`, `overlap` and `jitter` per task and from `[defaults]`: a task's own value
    /// wins, `max = 0` turns a default retry off, and a bad value names where it came from.
    #[test]
    fn failure_policies_come_from_the_task_or_its_defaults() {
        use rota::task::{OverlapPolicy, RetryPolicy};
        use std::time::Duration;
        let text = r#"
            [defaults]
            retry = { max = 2, backoff = "1s" }
            overlap = "skip"
            jitter = "30s"
            [[task]]
            name = "plain"
            every = "1h"
            log = {}
            [[task]]
            name = "own"
            every = "1h"
            retry = { max = 0 }
            overlap = "replace"
            jitter = "0s"
            log = {}
        "#;
        let specs = parse(text).unwrap().task_specs().unwrap();
        let secs = Duration::from_secs;
        assert_eq!(
            specs[0].retry,
            Some(RetryPolicy {
                max: 2,
                backoff: secs(1),
                max_backoff: secs(300)
            })
        );
        assert_eq!(specs[0].overlap, OverlapPolicy::Skip);
        assert!((1..30_000).contains(&specs[0].schedule.offset_ms()));
        assert_eq!(specs[1].retry, None, "max = 0 turns the default off");
        assert_eq!(specs[1].overlap, OverlapPolicy::Replace);
        assert_eq!(specs[1].schedule.offset_ms(), 0);
        assert_ne!(
            specs[0].definition_hash(),
            parse("[[task]]\nname = \"plain\"\nevery = \"1h\"\nlog = {}\n")
                .unwrap()
                .task_specs()
                .unwrap()[0]
                .definition_hash(),
            "the policies are part of the definition"
        );

        let bad = r#"
            [node]
            id = "n"
            cluster = "c"
            [store]
            url = "sqlite:///tmp/x.db"
            [defaults]
            overlap = "allow"
            retry = { max = 101, backoff = "1m", max_backoff = "10s" }
            [[task]]
            name = "a"
            every = "1h"
            jitter = "soon"
            log = {}
            [[task]]
            name = "b"
            every = "1h"
            overlap = "queue"
            retry = { max = 1, backoff = "1x" }
            log = {}
            [[task]]
            name = "c"
            every = "1h"
            log = {}
        "#;
        let problems = parse(bad).unwrap().validate();
        assert_eq!(
            fields(&problems),
            vec![
                "defaults.overlap",
                "defaults.retry.max",
                "defaults.retry.max_backoff",
                "task[0].jitter",
                "task[1].retry.backoff",
            ],
            "{problems:?}"
        );
        assert!(
            problems[0].to_string().contains("\"allow\"")
                || problems[0].to_string().contains("allow")
        );
        assert!(
            parse("[defaults]\nretries = 3\n").is_err(),
            "unknown keys are refused"
        );
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
