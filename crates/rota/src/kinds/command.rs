//! The `command` kind: runs a program, no shell unless the argv asks for one.

use std::{
    collections::BTreeMap,
    os::unix::process::ExitStatusExt,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{io::AsyncReadExt, process::Command, time::Instant};

use super::invocation::Invocation;
use crate::output::{OutputRecorder, Stream};
use crate::task::{FireContext, Handler, HandlerFuture, TaskError};

/// How much of the end of stderr a failure keeps.
const STDERR_TAIL: usize = 500;
/// After the program exits, how long to wait for its pipes to close (a backgrounded
/// grandchild may hold them open forever).
const PIPE_GRACE: Duration = Duration::from_millis(500);

/// Runs `argv` with extra environment and an optional working directory.
///
/// The child runs in its own process group; when the fire is cancelled (timeout, lost lease,
/// forced shutdown) the whole group is killed, so `sh -c` grandchildren die too.
#[derive(Debug, Clone)]
pub struct CommandTask {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    workdir: Option<PathBuf>,
    /// Hand the task's state over through `ROTA_STATE_FILE`.
    state: bool,
}

impl CommandTask {
    /// `argv[0]` is the program (looked up in `PATH` when it has no `/`).
    pub fn new(
        argv: Vec<String>,
        env: BTreeMap<String, String>,
        workdir: Option<PathBuf>,
    ) -> Result<Self, String> {
        match argv.first() {
            None => return Err("the command is empty; give the program and its arguments, e.g. [\"/usr/bin/backup\", \"--today\"]".into()),
            Some(p) if p.is_empty() => return Err("the program name is empty".into()),
            Some(_) => {}
        }
        Ok(CommandTask {
            inner: Arc::new(Inner {
                argv,
                env,
                workdir,
                state: false,
            }),
        })
    }

    /// Hands the task's saved state over in `ROTA_STATE_FILE`, and saves what the command
    /// leaves there (see [`Handler::run`] of this type).
    pub fn with_state(mut self, on: bool) -> Self {
        Arc::make_mut(&mut self.inner).state = on;
        self
    }

    pub fn argv(&self) -> &[String] {
        &self.inner.argv
    }

    /// The argv, shell-quoted where needed, then the working directory and the names (not
    /// the values) of the extra environment variables.
    pub fn description(&self) -> String {
        let mut text = self
            .inner
            .argv
            .iter()
            // An argument may be a URL with a password (`curl https://u:pw@host`).
            .map(|a| quote(&crate::store::redact_url(a)))
            .collect::<Vec<_>>()
            .join(" ");
        if let Some(dir) = &self.inner.workdir {
            text.push_str(&format!(" (in {})", dir.display()));
        }
        if !self.inner.env.is_empty() {
            let names: Vec<&str> = self.inner.env.keys().map(String::as_str).collect();
            text.push_str(&format!(" (env {})", names.join(",")));
        }
        if self.inner.state {
            text.push_str(" (state)");
        }
        text
    }
}

fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

impl Handler for CommandTask {
    /// Runs the command for one fire. With state ([`CommandTask::with_state`]):
    /// `ROTA_STATE_FILE` names a file that holds the task's saved state (empty when none);
    /// when the command exits with 0 having changed it, the new content is saved as the
    /// task's state, fenced by the fire's token (a node that lost the task saves nothing,
    /// and the fire fails).
    fn run(&self, ctx: FireContext) -> HandlerFuture {
        let inner = self.inner.clone();
        Box::pin(async move {
            let mut call = Invocation::of_fire(&ctx);
            let state = match ctx.state() {
                Ok(state) if inner.state => Some(StateFile::prepare(state, &ctx.task).await?),
                _ => None, // not asked for, or a context made by hand (no store)
            };
            if let Some(file) = &state {
                call.vars
                    .push(("STATE_FILE", file.path.display().to_string()));
            }
            let result = run(&inner, call).await;
            if let (Ok(()), Some(file), Ok(handle)) = (&result, &state, ctx.state()) {
                file.save_if_changed(handle).await?;
            }
            result
        })
    }
}

/// The file through which a command reads and replaces its task's state.
struct StateFile {
    path: std::path::PathBuf,
    loaded: Vec<u8>,
}

impl StateFile {
    async fn prepare(state: &crate::cache::TaskState, task: &str) -> Result<StateFile, TaskError> {
        let loaded = state
            .load()
            .await
            .map_err(|e| TaskError::new(format!("cannot read the task's state: {e}")))?
            .unwrap_or_default();
        let path = std::env::temp_dir().join(format!(
            "rota-state-{}-{}-{:x}",
            task.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
            std::process::id(),
            rand::random::<u64>()
        ));
        // Readable by this user only: the state may be sensitive.
        let written = async {
            use tokio::io::AsyncWriteExt;
            let mut file = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .await?;
            file.write_all(&loaded).await?;
            file.flush().await
        };
        written
            .await
            .map_err(|e| TaskError::new(format!("cannot write {}: {e}", path.display())))?;
        Ok(StateFile { path, loaded })
    }

    async fn save_if_changed(&self, state: &crate::cache::TaskState) -> Result<(), TaskError> {
        let now = tokio::fs::read(&self.path).await.map_err(|e| {
            TaskError::new(format!(
                "cannot read the new state in {}: {e}",
                self.path.display()
            ))
        })?;
        if now != self.loaded {
            state
                .save(&now)
                .await
                .map_err(|e| TaskError::new(format!("state not saved: {e}")))?;
        }
        Ok(())
    }
}

impl Drop for StateFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl CommandTask {
    /// Runs the program once for `call`, until it exits or `call.cancel` fires.
    pub(crate) async fn invoke(&self, call: Invocation) -> Result<(), TaskError> {
        run(&self.inner, call).await
    }
}

/// Kills the child's process group if the fire's future is dropped while the child runs.
struct GroupGuard(Option<i32>);

/// How long the processes of a killed group may take to go.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// Waits until no process of group `pgid` is alive (zombies do not count), or `deadline`;
/// `true` if none is. Read from `/proc`, every 10 ms.
async fn group_ended(pgid: i32, deadline: Instant) -> bool {
    loop {
        if !group_alive(pgid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Is any process of group `pgid` alive (not a zombie)? `/proc/<pid>/stat` gives the state
/// and the group after the command's name, which may hold spaces and parentheses.
fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        let Some((_, after)) = stat.rsplit_once(") ") else {
            return false;
        };
        let mut fields = after.split(' ');
        let state = fields.next().unwrap_or("Z");
        let group = fields.nth(1).and_then(|g| g.parse::<i32>().ok());
        group == Some(pgid) && !matches!(state, "Z" | "X" | "x")
    })
}

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            // SAFETY: plain syscall; the leader is not reaped yet, so its pid (= pgid) cannot
            // have been reused.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Environment variable that replaces `[store] url`, so passwords can stay out of files.
pub const STORE_URL_ENV: &str = "ROTA_STORE_URL";
/// Environment variables that supply the admin API's tokens (they win over the file).
pub const ADMIN_TOKEN_ENV: &str = "ROTA_ADMIN_TOKEN";
pub const READ_TOKEN_ENV: &str = "ROTA_READ_TOKEN";
/// The token `rota ctl` sends.
pub const CTL_TOKEN_ENV: &str = "ROTA_TOKEN";
/// The node's secrets in its environment: the programs it runs do not inherit them (a task
/// that needs one passes it on purpose, in its `env`).
pub const SECRET_ENV: [&str; 4] = [
    STORE_URL_ENV,
    ADMIN_TOKEN_ENV,
    READ_TOKEN_ENV,
    CTL_TOKEN_ENV,
];

async fn run(inner: &Inner, call: Invocation) -> Result<(), TaskError> {
    let program = &inner.argv[0];
    let mut cmd = Command::new(program);
    cmd.args(&inner.argv[1..]);
    // The node's store URL (a password) and tokens: children do not inherit them. The
    // task's own `env` comes after, so a task can still pass one on purpose.
    for secret in SECRET_ENV {
        cmd.env_remove(secret);
    }
    cmd.envs(&inner.env)
        .envs(call.env.iter().map(|(k, v)| (k, v)))
        .envs(call.vars.iter().map(|(k, v)| (format!("ROTA_{k}"), v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    if let Some(dir) = &inner.workdir {
        cmd.current_dir(dir);
    }
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| {
        // A missing working directory fails the spawn as "not found", as a missing program
        // would: name the one that is missing.
        match &inner.workdir {
            Some(dir) if !dir.is_dir() => TaskError::new(format!(
                "cannot start `{program}`: its working directory {} is not a directory ({e})",
                dir.display()
            )),
            _ => TaskError::new(format!("cannot start `{program}`: {e}")),
        }
    })?;
    let mut guard = GroupGuard(child.id().map(|pid| pid as i32));
    // The node's work guard kills the group if the node cannot: frozen past its lease, or
    // dead (contract 12). Unwatched once reaped, when this function returns.
    let _watched = guard.0.map(crate::node::guard::GroupWatch::new);

    let tail = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().map(|s| {
        let kept = call.output.clone().map(|o| (o, Stream::Stdout));
        tokio::spawn(drain(s, call.label.clone(), "stdout", None, kept))
    });
    let stderr = child.stderr.take().map(|s| {
        let kept = call.output.clone().map(|o| (o, Stream::Stderr));
        tokio::spawn(drain(
            s,
            call.label.clone(),
            "stderr",
            Some(tail.clone()),
            kept,
        ))
    });

    let status = tokio::select! {
        // An exit that is there already wins over a cancel that came at the same time.
        biased;
        status = child.wait() => status,
        _ = call.cancel.cancelled() => {
            let Some(pgid) = guard.0 else {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(TaskError::new(format!("cancelled: killed `{program}`")));
            };
            // The run has ended only when every process of its group has: a grandchild
            // that outlives the command would still be working when the task's next owner
            // starts. The leader stays unreaped (a zombie once it exits) until then, so
            // that its pid, the group's id, cannot be reused by another process meanwhile.
            let ended_in_grace = match call.term_grace {
                Some(grace) => {
                    // SAFETY: plain syscall; the leader is not reaped yet (see GroupGuard).
                    unsafe {
                        libc::kill(-pgid, libc::SIGTERM);
                    }
                    group_ended(pgid, Instant::now() + grace).await
                }
                None => false,
            };
            if !ended_in_grace {
                guard.kill();
                if !group_ended(pgid, Instant::now() + KILL_WAIT).await {
                    tracing::warn!(pgid, "processes of a killed command are still there");
                }
            }
            let status = child.wait().await;
            guard.0 = None;
            if ended_in_grace {
                // Exit status 0 within the grace: the work was done (it had just ended, or
                // the command finished it on SIGTERM, which is what the grace is for).
                // Calling it interrupted would have it done again.
                if status.as_ref().is_ok_and(|s| s.success()) {
                    return Ok(());
                }
                return Err(TaskError::new(format!(
                    "cancelled: `{program}` stopped on SIGTERM ({})",
                    status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())
                )));
            }
            return Err(TaskError::new(format!("cancelled: killed `{program}` and its process group")));
        }
    };
    // Reaped: the pid may be reused from here on, so never signal the group again.
    guard.0 = None;
    let status = status.map_err(|e| TaskError::new(format!("waiting for `{program}`: {e}")))?;

    // Let the readers collect the last output; they keep draining in the background if a
    // grandchild still holds the pipes.
    for reader in [stdout, stderr].into_iter().flatten() {
        let _ = tokio::time::timeout(PIPE_GRACE, reader).await;
    }
    if status.success() {
        return Ok(());
    }
    let what = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => "failed".to_string(),
    };
    let tail = tail
        .lock()
        .map(|t| super::invocation::printable(t.trim_ascii()))
        .unwrap_or_default();
    if tail.is_empty() {
        Err(TaskError::new(format!("`{program}`: {what}")))
    } else {
        Err(TaskError::new(format!(
            "`{program}`: {what}; stderr: {tail}"
        )))
    }
}

/// The child gets SIGKILL if the node dies (even by SIGKILL): a task or service must not
/// outlive the node that owns it, or it would run beside its next owner. The kernel sends it
/// when the *thread* that spawned the child ends, not the process: commands are spawned on
/// the runtime's workers, which live as long as the node, and nothing may turn a worker into
/// a thread that ends (`block_in_place`; see `node::runtime::cpu_bound`). It also gets the
/// system's transparent huge pages back: the `rota` binary turns them off for itself, and a
/// child would inherit that.
pub(crate) fn die_with_parent(cmd: &mut Command) {
    // SAFETY: only async-signal-safe calls (prctl, getppid, kill) between fork and exec.
    unsafe {
        let parent = libc::getpid();
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0);
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died between fork and prctl: nobody would send the signal.
            if libc::getppid() != parent {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            Ok(())
        });
    }
}

/// Reads a pipe to its end, logging at debug (escaped, never as lines of the node's own
/// log), keeping the last bytes in `tail`, and handing them to the fire's output.
async fn drain(
    mut pipe: impl tokio::io::AsyncRead + Unpin,
    task: String,
    stream: &'static str,
    tail: Option<Arc<Mutex<Vec<u8>>>>,
    kept: Option<(OutputRecorder, Stream)>,
) {
    let mut buf = vec![0u8; 8192];
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        tracing::debug!(task = %task, stream, "{}", super::invocation::printable(chunk.trim_ascii_end()));
        if let Some((output, which)) = &kept {
            output.append(*which, chunk);
        }
        if let Some(tail) = &tail {
            if let Ok(mut t) = tail.lock() {
                t.extend_from_slice(chunk);
                if t.len() > STDERR_TAIL {
                    let excess = t.len() - STDERR_TAIL;
                    t.drain(..excess);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::kinds::invocation::test_context;

    fn sh(script: &str) -> CommandTask {
        CommandTask::new(
            vec!["sh".into(), "-c".into(), script.into()],
            BTreeMap::new(),
            None,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn success_sets_the_fire_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let task = CommandTask::new(
            vec![
                "sh".into(),
                "-c".into(),
                "echo $ROTA_TASK $ROTA_FIRE_TIME_MS $ROTA_FENCING_TOKEN $ROTA_NODE $ROTA_ATTEMPT $FOO $(pwd) > out".into(),
            ],
            BTreeMap::from([("FOO".to_string(), "bar".to_string())]),
            Some(dir.path().to_path_buf()),
        )
        .unwrap();
        task.run(test_context("t1")).await.unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        let cwd = dir.path().canonicalize().unwrap();
        assert_eq!(
            text.trim(),
            format!("t1 1700000000000 42 node-1 1 bar {}", cwd.display())
        );
    }

    #[tokio::test]
    async fn a_child_gets_transparent_huge_pages_back() {
        // As the `rota` binary does for itself (crates/cli/src/allocator.rs).
        // SAFETY: sets a flag of this test process's memory mappings.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("status");
        let task = sh(&format!(
            "grep THP_enabled /proc/self/status > {}",
            out.display()
        ));
        task.run(test_context("t1")).await.unwrap();
        let status = std::fs::read_to_string(&out).unwrap();
        assert_eq!(
            status.split_whitespace().collect::<Vec<_>>(),
            ["THP_enabled:", "1"]
        );
    }

    #[tokio::test]
    async fn a_missing_working_directory_is_named_as_such() {
        let task = CommandTask::new(
            vec!["true".into()],
            BTreeMap::new(),
            Some("/nonexistent/rota-workdir".into()),
        )
        .unwrap();
        let err = task.run(test_context("t")).await.unwrap_err().to_string();
        assert!(
            err.contains("working directory /nonexistent/rota-workdir is not a directory"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn failure_reports_exit_status_and_stderr_tail() {
        let err = sh("echo something broke >&2; exit 3")
            .run(test_context("t"))
            .await
            .unwrap_err();
        assert!(err.0.contains("exit status 3"), "{err}");
        assert!(err.0.contains("something broke"), "{err}");
        let long = sh("head -c 5000 /dev/zero | tr '\\0' x >&2; echo END >&2; exit 1")
            .run(test_context("t"))
            .await
            .unwrap_err();
        assert!(long.0.ends_with("END"), "{long}");
        assert!(long.0.len() < 600, "only the tail of stderr is kept");
    }

    #[tokio::test]
    async fn spawn_failure_names_the_program() {
        let task =
            CommandTask::new(vec!["/nonexistent/prog".into()], BTreeMap::new(), None).unwrap();
        let err = task.run(test_context("t")).await.unwrap_err();
        assert!(err.0.contains("/nonexistent/prog"), "{err}");
        assert!(CommandTask::new(vec![], BTreeMap::new(), None).is_err());
    }

    #[tokio::test]
    async fn cancel_kills_the_whole_process_group_promptly() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        // The shell backgrounds a grandchild and waits: both must die.
        let task = sh(&format!("sleep 30 & echo $! > {}; wait", pidfile.display()));
        let ctx = test_context("t");
        let cancel = ctx.cancel.clone();
        let started = Instant::now();
        let run = tokio::spawn(task.run(ctx));
        while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cancel.cancel();
        let err = run.await.unwrap().unwrap_err();
        assert!(err.0.contains("cancelled"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild was reparented and reaped by init, or is a zombie at worst.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let alive = state
            .split(") ")
            .nth(1)
            .is_some_and(|rest| !rest.starts_with('Z'));
        assert!(!alive, "grandchild sleep {pid} survived: {state}");
    }

    /// A call of a test command that `cancel` cancels, with `grace` after SIGTERM.
    fn cancellable(cancel: &tokio_util::sync::CancellationToken, grace: Duration) -> Invocation {
        Invocation {
            label: "t".into(),
            vars: Vec::new(),
            env: Vec::new(),
            body: None,
            cancel: cancel.clone(),
            term_grace: Some(grace),
            output: None,
        }
    }

    /// A cancelled command has ended only once every process of its group has: here the
    /// command dies of SIGTERM at once, and a grandchild that ignores it goes on; it is
    /// killed after the grace, and the invocation returns only after that.
    #[tokio::test]
    async fn a_cancel_waits_for_every_process_of_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let (ready, late) = (dir.path().join("ready"), dir.path().join("late"));
        let script = format!(
            "(trap '' TERM; touch {}; sleep 1; touch {}) & wait",
            ready.display(),
            late.display()
        );
        let cancel = tokio_util::sync::CancellationToken::new();
        let call = cancellable(&cancel, Duration::from_millis(300));
        let run = tokio::spawn(async move { sh(&script).invoke(call).await });
        while !ready.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let cancelled = Instant::now();
        cancel.cancel();
        let result = run.await.unwrap();
        let took = cancelled.elapsed();
        assert!(result.is_err(), "{result:?}");
        assert!(
            took >= Duration::from_millis(300),
            "returned after {took:?}, before the grandchild was gone"
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            !late.exists(),
            "the grandchild went on after the cancel returned"
        );
    }

    /// A cancel with a grace period: a command that finishes its work on SIGTERM (exit 0)
    /// did it, one that dies of the signal was interrupted.
    #[tokio::test]
    async fn a_command_that_finishes_within_its_grace_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        let invoke = |script: String| {
            let cancel = tokio_util::sync::CancellationToken::new();
            let call = cancellable(&cancel, Duration::from_secs(10));
            (
                cancel,
                tokio::spawn(async move { sh(&script).invoke(call).await }),
            )
        };
        for (script, finishes) in [
            // Traps SIGTERM, completes its work, exits 0.
            (
                format!(
                    "trap 'exit 0' TERM; touch {}; while :; do sleep 0.01; done",
                    ready.display()
                ),
                true,
            ),
            // Dies of the signal.
            (format!("touch {}; exec sleep 30", ready.display()), false),
        ] {
            let _ = std::fs::remove_file(&ready);
            let (cancel, run) = invoke(script);
            while !ready.exists() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            cancel.cancel();
            let result = run.await.unwrap();
            assert_eq!(result.is_ok(), finishes, "{result:?}");
        }
    }

    #[test]
    fn description_quotes_arguments_and_hides_env_values() {
        let task = CommandTask::new(
            vec![
                "/bin/transfer.sh".into(),
                "--today".into(),
                "a b".into(),
                "sftp://ops:s3cret@files/in?key=s3cret".into(),
            ],
            BTreeMap::from([("TOKEN".to_string(), "secret".to_string())]),
            Some("/tmp".into()),
        )
        .unwrap();
        assert_eq!(
            task.description(),
            "/bin/transfer.sh --today 'a b' 'sftp://ops:***@files/in?key=***' (in /tmp) (env TOKEN)"
        );
    }
}
