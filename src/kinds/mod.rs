//! The task kinds of the `rota node` daemon: what a configured task does when it fires.
//!
//! Each kind is a [`Handler`]; [`Kind`] wraps them so that config can build a [`TaskSpec`]
//! without knowing which kind it holds. Handlers stop their work when `ctx.cancel` fires:
//! the runtime enforces task timeouts, lost leases and forced shutdowns through it.

pub mod command;
pub mod http;
pub mod log;

use crate::{
    core::schedule::Schedule,
    task::{FireContext, Handler, HandlerFuture, TaskSpec},
};

pub use command::CommandTask;
pub use http::HttpTask;
pub use log::LogTask;

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
pub(crate) fn test_context(task: &str) -> FireContext {
    FireContext {
        cluster: "test-cluster".into(),
        task: task.into(),
        node: "node-1".into(),
        instant_ms: 1_700_000_000_000,
        token: 42,
        attempt: 1,
        cancel: tokio_util::sync::CancellationToken::new(),
    }
}
