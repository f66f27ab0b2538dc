//! How a kind is invoked: what a command or a request is told about the fire (its
//! environment and arguments), and how its output is shown.

use crate::task::FireContext;

/// What one run of a command or an HTTP request is told about itself: each `(NAME, value)`
/// becomes `ROTA_NAME` in a command's environment and an `X-Rota-Name` header of a request.
pub(crate) struct Invocation {
    /// The task or service, for logs.
    pub label: String,
    pub vars: Vec<(&'static str, String)>,
    /// Variables a run-now adds to a command's environment, as given.
    pub env: Vec<(String, String)>,
    /// Replaces the configured request body (a file handed to an endpoint).
    pub body: Option<Vec<u8>>,
    pub cancel: tokio_util::sync::CancellationToken,
    /// On cancel, a command gets SIGTERM and this long to exit before SIGKILL; `None`:
    /// SIGKILL at once (a fire whose lease is lost must stop now).
    pub term_grace: Option<std::time::Duration>,
    /// Where a command's stdout and stderr are kept (a fire's), if anywhere.
    pub output: Option<crate::output::OutputRecorder>,
}
impl Invocation {
    pub fn of_fire(ctx: &FireContext) -> Invocation {
        let mut vars = vec![
            ("CLUSTER", ctx.cluster.clone()),
            ("NODE", ctx.node.clone()),
            ("TASK", ctx.task.clone()),
            ("FIRE_TIME_MS", ctx.instant_ms.to_string()),
            ("FENCING_TOKEN", ctx.token.to_string()),
            ("ATTEMPT", ctx.attempt.to_string()),
        ];
        if let Some(run) = &ctx.manual {
            vars.push(("RUN", run.seq.to_string()));
        }
        Invocation {
            label: ctx.task.clone(),
            vars,
            env: ctx
                .manual
                .iter()
                .flat_map(|run| run.env.iter().map(|(k, v)| (k.clone(), v.clone())))
                .collect(),
            body: None,
            cancel: ctx.cancel.clone(),
            term_grace: None,
            output: ctx.output.clone(),
        }
    }

    /// `FIRE_TIME_MS` -> `X-Rota-Fire-Time-Ms`.
    pub fn header_name(var: &str) -> String {
        let words: Vec<String> = var
            .split('_')
            .map(|w| {
                let lower = w.to_ascii_lowercase();
                let mut chars = lower.chars();
                match chars.next() {
                    Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                    None => String::new(),
                }
            })
            .collect();
        format!("X-Rota-{}", words.join("-"))
    }
}
/// Output of the work (a program's stdout and stderr, a response body) as text that is safe
/// to log or show: invalid UTF-8 replaced, and every control character escaped (`\n`,
/// `\u{1b}`), so that output cannot forge a log line or drive a terminal.
pub(crate) fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
#[cfg(test)]
pub(crate) fn test_context(task: &str) -> FireContext {
    FireContext {
        cluster: "test-cluster".into(),
        task: task.into(),
        node: "node-1".into(),
        instant_ms: 1_700_000_000_000,
        token: 42,
        attempt: 1,
        cancel: tokio_util::sync::CancellationToken::new(),
        state: None,
        manual: None,
        output: None,
    }
}
