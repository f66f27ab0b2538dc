//! The `log` kind: logs a message per fire and, optionally, appends one line per fire to a
//! file. The file is an independent record of fires for tests and benchmarks.

use std::{io::Write, path::PathBuf, sync::Arc};

use crate::task::{FireContext, Handler, HandlerFuture, TaskError};

/// Logs `message` with the fire's task, node, instant and token; appends
/// `"{task} {instant_ms} {node} {token} {attempt}\n"` to `append_to` if set.
#[derive(Debug, Clone)]
pub struct LogTask {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    message: String,
    append_to: Option<PathBuf>,
}

impl LogTask {
    pub fn new(message: impl Into<String>, append_to: Option<PathBuf>) -> Self {
        LogTask {
            inner: Arc::new(Inner {
                message: message.into(),
                append_to,
            }),
        }
    }

    pub fn description(&self) -> String {
        match &self.inner.append_to {
            Some(path) => format!("log {:?} >> {}", self.inner.message, path.display()),
            None => format!("log {:?}", self.inner.message),
        }
    }
}

impl Handler for LogTask {
    fn run(&self, ctx: FireContext) -> HandlerFuture {
        let inner = self.inner.clone();
        Box::pin(async move {
            tracing::info!(
                task = %ctx.task,
                node = %ctx.node,
                instant_ms = ctx.instant_ms,
                token = ctx.token,
                attempt = ctx.attempt,
                "{}",
                inner.message
            );
            let Some(path) = inner.append_to.clone() else {
                return Ok(());
            };
            let line = format!(
                "{} {} {} {} {}\n",
                ctx.task, ctx.instant_ms, ctx.node, ctx.token, ctx.attempt
            );
            tokio::task::spawn_blocking(move || append_line(&path, &line))
                .await
                .map_err(|e| TaskError::new(format!("appending to the fire log: {e}")))?
        })
    }
}

/// One `write` on an `O_APPEND` file: lines from concurrent writers (several nodes on one
/// host) never interleave, and a crash leaves at worst one torn line, never a merged one.
fn append_line(path: &std::path::Path, line: &str) -> Result<(), TaskError> {
    let fail = |e: std::io::Error| TaskError::new(format!("appending to {}: {e}", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(fail)?;
    let written = file.write(line.as_bytes()).map_err(fail)?;
    if written != line.len() {
        return Err(TaskError::new(format!(
            "appending to {}: short write ({written} of {} bytes)",
            path.display(),
            line.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::invocation::test_context;

    #[tokio::test]
    async fn appends_one_line_per_fire() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fires.log");
        let task = LogTask::new("hello", Some(path.clone()));
        let mut ctx = test_context("seed");
        task.run(ctx.clone()).await.unwrap();
        ctx.instant_ms += 1000;
        ctx.token = 43;
        ctx.attempt = 2;
        task.run(ctx).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "seed 1700000000000 node-1 42 1\nseed 1700000001000 node-1 43 2\n"
        );
        assert_eq!(
            task.description(),
            format!("log \"hello\" >> {}", path.display())
        );
        LogTask::new("no file", None)
            .run(test_context("t"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn unwritable_file_is_a_task_error() {
        let err = LogTask::new("x", Some("/nonexistent/dir/f.log".into()))
            .run(test_context("t"))
            .await
            .unwrap_err();
        assert!(err.0.contains("/nonexistent/dir/f.log"), "{err}");
    }
}
