//! The command log and its acknowledgements.

use super::{membership::Member, placement::LeaderWrite};
use crate::error::{Error, Result};
use async_trait::async_trait;
use rota_core::control::{Ack, Command};

/// One entry of a cluster's command log, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    pub seq: i64,
    pub issued_at_ms: i64,
    /// The command as JSON ([`rota_core::control::CommandBody`]).
    pub body: String,
}

/// Every command after `after`, in order, read a page at a time (the log is never pruned).
pub async fn commands_after(
    store: &dyn CommandStore,
    cluster: &str,
    mut after: i64,
) -> Result<Vec<CommandRecord>> {
    const PAGE: i64 = 1000;
    let mut out = Vec::new();
    loop {
        let page = store.commands(cluster, after, PAGE).await?;
        let full = page.len() as i64 == PAGE;
        if let Some(last) = page.last() {
            after = last.seq;
        }
        out.extend(page);
        if !full {
            return Ok(out);
        }
    }
}

/// Which acknowledgements [`CommandStore::command_acks`] returns.
#[derive(Debug, Clone, Copy)]
pub enum AckFilter<'a> {
    /// Of these commands, by every node.
    Commands(&'a [i64]),
    /// Of this node, for every command.
    Node(&'a str),
}

/// The cluster's command log: totally ordered, durable, acknowledged per node.
#[async_trait]
pub trait CommandStore: Send + Sync {
    /// Writes, as the leader of `epoch`, acknowledgements on other nodes' behalf and at most
    /// one command (the steps of a rolling restart), all or nothing. Refused
    /// ([`LeaderWrite::Deposed`]) unless `leader` holds `epoch` and is alive, judged inside
    /// the same write (contract 6): a leader that stalled past its lease cannot act after
    /// its successor. Acknowledgements replace the node's earlier one, as in
    /// [`CommandStore::ack_command`]; the command is appended as by [`CommandStore::append_command`].
    async fn lead_commands(
        &self,
        leader: &Member,
        epoch: i64,
        acks: &[Ack],
        command: Option<&str>,
    ) -> Result<LeaderWrite>;

    /// Appends a command (its JSON `body`, opaque to the store) to the cluster's log and
    /// returns `(seq, issued_at_ms)`. The sequence number is the cluster's next generation:
    /// above every earlier command's, so the log is totally ordered, and nodes watching the
    /// generation see the command at once. Durable when this returns; a failed call appends
    /// nothing.
    async fn append_command(&self, cluster: &str, body: &str) -> Result<(i64, i64)>;

    /// The commands after `after`, in sequence order, at most `limit`. Never pruned.
    async fn commands(&self, cluster: &str, after: i64, limit: i64) -> Result<Vec<CommandRecord>>;

    /// Records `ack` (inserting or replacing the node's acknowledgement of that command),
    /// stamped with store time (`ack.at_ms` is ignored). Durable when this returns.
    async fn ack_command(&self, cluster: &str, ack: &Ack) -> Result<()>;

    /// The acknowledgements of some commands (by every node), or of one node (of every
    /// command), ordered by sequence number then node.
    async fn command_acks(&self, cluster: &str, filter: AckFilter<'_>) -> Result<Vec<Ack>>;
}

impl CommandRecord {
    /// The command, or a store error naming the entry that cannot be read.
    pub fn parse(&self) -> Result<Command> {
        let body = serde_json::from_str(&self.body).map_err(|e| {
            Error::Store(format!(
                "command #{} in the log cannot be read: {e}",
                self.seq
            ))
        })?;
        Ok(Command {
            seq: self.seq,
            issued_at_ms: self.issued_at_ms,
            body,
        })
    }
}
