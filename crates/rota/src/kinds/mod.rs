//! The task kinds of the `rota node` daemon: what a configured task does when it fires.
//!
//! Each kind is a [`Handler`]; [`Kind`] wraps them so that config can build a [`TaskSpec`]
//! without knowing which kind it holds. Handlers stop their work when `ctx.cancel` fires:
//! the runtime enforces task timeouts, lost leases and forced shutdowns through it.

pub mod command;
pub mod file_inbound;
pub mod http;
mod invocation;
pub mod log;

pub use command::CommandTask;
pub use file_inbound::FileInbound;
pub use http::HttpTask;
pub(crate) use invocation::Invocation;
pub use log::LogTask;
use rota_core::schedule::Schedule;

use crate::{
    service::{ServiceContext, ServiceFuture, ServiceHandler, ServiceSpec},
    task::{FireContext, Handler, HandlerFuture, TaskSpec},
};

/// One configured task kind.
#[derive(Debug, Clone)]
pub enum Kind {
    Command(CommandTask),
    Http(HttpTask),
    Log(LogTask),
}

impl Kind {
    /// One line describing the work; part of the task's definition hash. Holds no secrets.
    pub fn description(&self) -> String {
        match self {
            Kind::Command(k) => k.description(),
            Kind::Http(k) => k.description(),
            Kind::Log(k) => k.description(),
        }
    }

    /// A task with default policies running this kind, its description already set.
    pub fn into_spec(self, name: impl Into<String>, schedule: Schedule) -> TaskSpec {
        let description = self.description();
        TaskSpec::new(name, schedule, self).description(description)
    }
}

impl Handler for Kind {
    fn run(&self, ctx: FireContext) -> HandlerFuture {
        match self {
            Kind::Command(k) => k.run(ctx),
            Kind::Http(k) => k.run(ctx),
            Kind::Log(k) => k.run(ctx),
        }
    }

    fn in_process(&self) -> bool {
        !matches!(self, Kind::Command(_))
    }
}

/// One configured service kind.
#[derive(Debug, Clone)]
pub enum ServiceKind {
    /// A supervised long-running process: started on the owner, sent SIGTERM (then SIGKILL
    /// after the grace period) when the service moves, restarted with backoff when it exits.
    Command(CommandTask),
    FileInbound(FileInbound),
}

impl ServiceKind {
    /// One line describing the work; part of the service's definition hash. Holds no secrets.
    pub fn description(&self) -> String {
        match self {
            ServiceKind::Command(k) => format!("service {}", k.description()),
            ServiceKind::FileInbound(k) => k.description(),
        }
    }

    /// A service with default policies running this kind, its description already set.
    pub fn into_spec(self, name: impl Into<String>) -> ServiceSpec {
        let description = self.description();
        ServiceSpec::new(name, self).description(description)
    }
}

impl ServiceHandler for ServiceKind {
    fn run(&self, ctx: ServiceContext) -> ServiceFuture {
        let kind = self.clone();
        Box::pin(async move {
            match kind {
                ServiceKind::Command(c) => {
                    let call = Invocation {
                        label: ctx.service.clone(),
                        vars: vec![
                            ("CLUSTER", ctx.cluster.clone()),
                            ("NODE", ctx.node.clone()),
                            ("SERVICE", ctx.service.clone()),
                            ("FENCING_TOKEN", ctx.token.to_string()),
                            ("RESTARTS", ctx.restarts.to_string()),
                        ],
                        env: Vec::new(),
                        body: None,
                        cancel: ctx.cancel.clone(),
                        term_grace: Some(ctx.grace),
                        output: None,
                    };
                    c.invoke(call).await
                }
                ServiceKind::FileInbound(f) => f.run(ctx).await,
            }
        })
    }

    /// A file-inbound loop checks its ownership before each file; its handler is a child
    /// process, or an in-process request.
    fn in_process(&self) -> bool {
        matches!(
            self,
            ServiceKind::FileInbound(FileInbound {
                handler: file_inbound::FileHandler::Http(_),
                ..
            })
        )
    }
}

impl From<CommandTask> for Kind {
    fn from(k: CommandTask) -> Self {
        Kind::Command(k)
    }
}

impl From<HttpTask> for Kind {
    fn from(k: HttpTask) -> Self {
        Kind::Http(k)
    }
}

impl From<LogTask> for Kind {
    fn from(k: LogTask) -> Self {
        Kind::Log(k)
    }
}

#[cfg(test)]
mod tests {
    use super::invocation::{printable, Invocation};

    #[test]
    fn output_cannot_forge_log_lines_or_drive_a_terminal() {
        let forged = b"done\n2026-01-01T00:00:00Z INFO forged\r\x1b[31mred\x1b[0m \xff tab\t";
        let shown = printable(forged);
        assert!(!shown.chars().any(char::is_control), "{shown}");
        assert_eq!(
            shown,
            "done\\n2026-01-01T00:00:00Z INFO forged\\r\\u{1b}[31mred\\u{1b}[0m \u{fffd} tab\\t"
        );
        assert_eq!(printable("été ✓".as_bytes()), "été ✓");
    }

    #[test]
    fn variables_become_header_names() {
        assert_eq!(
            Invocation::header_name("FIRE_TIME_MS"),
            "X-Rota-Fire-Time-Ms"
        );
        assert_eq!(Invocation::header_name("TASK"), "X-Rota-Task");
    }
}
