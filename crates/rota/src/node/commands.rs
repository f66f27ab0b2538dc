//! The node's side of cluster commands (contract 8): read the log, fold it into control
//! state, apply what is addressed to this node in order, acknowledge durably. The decisions
//! are in [`rota_core::control`]; this is the bookkeeping around them.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
};

use tracing::{info, warn};

use crate::{
    error::Result,
    store::{self, AckFilter, Member, Store},
};
use rota_core::control::{
    disposition, Ack, AckState, Command, ControlState, Disposition, Operation,
};

/// Sets the process's log level (`None`: back to the configured one). Given by the program
/// that owns logging (the `rota` binary); without it, log level commands fail with a reason.
pub type LogLevelControl =
    Arc<dyn Fn(Option<&str>) -> std::result::Result<(), String> + Send + Sync>;

/// Why a node ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Asked to stop by its program (a signal, [`crate::NodeHandle::shutdown`]).
    Stopped,
    /// A `restart` command: the program should start the node again (re-execute itself).
    Restart,
    /// A `shutdown` command: the node should stay down.
    Shutdown,
}

/// A command to apply now, or one waiting for its effect (a drain waiting for its work to
/// move away).
#[derive(Debug, Clone)]
struct Queued {
    command: Command,
    superseded: bool,
    /// An in-progress acknowledgement has been written.
    started: bool,
}

pub struct Commands {
    pub control: ControlState,
    /// The last sequence number seen by the first read of this process: restarts and
    /// shutdowns up to it are satisfied by this start.
    started_after: Option<i64>,
    queue: VecDeque<Queued>,
    /// Rolling restarts not known to be finished (the leader drives them).
    rolling: BTreeMap<i64, Command>,
    log_level: Option<LogLevelControl>,
}

impl Commands {
    pub fn new(log_level: Option<LogLevelControl>) -> Commands {
        Commands {
            control: ControlState::default(),
            started_after: None,
            queue: VecDeque::new(),
            rolling: BTreeMap::new(),
            log_level,
        }
    }

    /// True once the log has been read and everything addressed to this node applied and
    /// acknowledged (a drain may still wait for its work to move): tasks may start.
    pub fn caught_up(&self) -> bool {
        self.started_after.is_some() && self.queue.iter().all(|q| q.started)
    }

    /// The rolling restarts not known to be finished, by sequence number.
    pub fn rolling(&self) -> &BTreeMap<i64, Command> {
        &self.rolling
    }

    /// A rolling restart found finished: no need to look at it again.
    pub fn finish_rolling(&mut self, seq: i64) {
        self.rolling.remove(&seq);
    }

    /// Commands addressed to this node wait to be applied (or a drain to complete).
    pub fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Reads the commands appended since the last read, folds them in and queues those
    /// addressed to this node. The first call also reads this node's acknowledgements.
    pub async fn read(&mut self, store: &dyn Store, me: &Member) -> Result<()> {
        // What this node acknowledged before (a restarted node): only the first read can
        // meet commands it has seen.
        let mut acked = HashMap::new();
        if self.started_after.is_none() {
            for ack in store
                .command_acks(&me.cluster, AckFilter::Node(&me.node))
                .await?
            {
                if ack.state.is_final() {
                    acked.insert(ack.seq, ack.state);
                }
            }
        }
        let after = self.control.through;
        for record in store::commands_after(store, &me.cluster, after).await? {
            match record.parse() {
                Ok(command) => {
                    let ack = acked.get(&command.seq).copied();
                    self.receive(command, &me.node, ack)
                }
                Err(e) => {
                    // Unreadable (written by a newer version?): skip it, loudly, once.
                    warn!(error = %e, "skipping a command this version cannot read");
                    self.control.through = record.seq;
                }
            }
        }
        if self.started_after.is_none() {
            self.started_after = Some(self.control.through);
            self.restore_log_level(&me.node);
        }
        Ok(())
    }

    fn receive(&mut self, command: Command, me: &str, ack: Option<AckState>) {
        self.control.apply(&command);
        if matches!(command.body.op, Operation::RollingRestart { .. }) {
            self.rolling.insert(command.seq, command.clone());
        }
        let started_after = self.started_after.unwrap_or(command.seq);
        match disposition(&command, me, started_after, ack) {
            Disposition::Apply => self.queue.push_back(Queued {
                command,
                superseded: false,
                started: false,
            }),
            Disposition::Superseded => self.queue.push_back(Queued {
                command,
                superseded: true,
                started: false,
            }),
            Disposition::NotTargeted | Disposition::Done => {}
        }
    }

    /// The log level commands set for this node, applied at start (it survives restarts).
    fn restore_log_level(&self, me: &str) {
        if let (Some(set), Some(level)) = (&self.log_level, self.control.log_level(me)) {
            match set(Some(level)) {
                Ok(()) => info!(level, "log level set by an earlier command"),
                Err(e) => warn!(error = %e, "cannot restore the log level a command set"),
            }
        }
    }

    /// Applies the queue in order and acknowledges each command. `owns_nothing`: this
    /// node owns no task now (a drain is done). Stops at the first store error (retried at
    /// the next round) and at a restart or shutdown, which it returns for the runtime.
    pub async fn apply(
        &mut self,
        store: &dyn Store,
        me: &Member,
        owns_nothing: bool,
        metrics: &crate::metrics::Metrics,
    ) -> Result<Option<StopReason>> {
        let mut i = 0;
        while i < self.queue.len() {
            let q = &mut self.queue[i];
            let seq = q.command.seq;
            let (state, message, exit) = match (&q.command.body.op, q.superseded) {
                (Operation::Restart, true) | (Operation::Shutdown, true) => (
                    AckState::Applied,
                    "already satisfied: this node started after the command was issued".into(),
                    None,
                ),
                (Operation::Restart, false) => (
                    AckState::Applied,
                    "restarting".into(),
                    Some(StopReason::Restart),
                ),
                (Operation::Shutdown, false) => (
                    AckState::Applied,
                    "shutting down".into(),
                    Some(StopReason::Shutdown),
                ),
                (Operation::Drain, _) if !owns_nothing => {
                    // Acknowledged once the work has moved away; later commands go on.
                    if !q.started {
                        let moving = ack(
                            me,
                            seq,
                            AckState::InProgress,
                            "moving this node's work away",
                        );
                        store.ack_command(&me.cluster, &moving).await?;
                        q.started = true;
                    }
                    i += 1;
                    continue;
                }
                (Operation::SetLogLevel { level }, _) => match &self.log_level {
                    Some(set) => {
                        let wanted = (level != "config").then_some(level.as_str());
                        match set(wanted) {
                            Ok(()) => (AckState::Applied, format!("log level {level}"), None),
                            Err(e) => (AckState::Failed, e, None),
                        }
                    }
                    None => (
                        AckState::Failed,
                        "this node's program does not let rota set its log level".into(),
                        None,
                    ),
                },
                (op, _) => (
                    AckState::Applied,
                    describe(op, &self.control, &me.node),
                    None,
                ),
            };
            store
                .ack_command(&me.cluster, &ack(me, seq, state, &message))
                .await?;
            info!(seq, op = q.command.body.op.name(), state = state.as_str(), detail = %message, "command applied");
            metrics.command_applied(q.command.body.op.name(), state.as_str());
            self.queue.remove(i);
            if exit.is_some() {
                return Ok(exit);
            }
        }
        Ok(None)
    }
}

fn ack(me: &Member, seq: i64, state: AckState, message: &str) -> Ack {
    Ack {
        seq,
        node: me.node.clone(),
        incarnation: me.incarnation,
        state,
        message: message.to_string(),
        at_ms: 0,
    }
}

/// The acknowledgement message of a state command: what holds on this node now.
fn describe(op: &Operation, control: &ControlState, me: &str) -> String {
    match op {
        Operation::Pause { task } | Operation::Stop { service: task } => {
            if control.is_paused(me, task) {
                format!("{task} does not run on this node")
            } else {
                format!("{task} runs again here: a later command resumed it")
            }
        }
        Operation::Resume { task } | Operation::Start { service: task } => {
            if control.is_paused(me, task) {
                format!("{task} is still paused here by a cluster-wide command")
            } else {
                format!("{task} may run on this node")
            }
        }
        Operation::Drain => "drained: this node runs nothing".into(),
        Operation::Undrain => "undrained: this node takes work again".into(),
        Operation::ActAs { node } => {
            format!("acting as {node}: first in its place in failover lists")
        }
        Operation::StopActing => "acting as no other node".into(),
        Operation::Define { .. } => {
            "noted: this node runs the cluster's definitions from this version on, if its config lets it ([admin] definitions)".into()
        }
        Operation::Run { task, .. } => {
            format!("noted: whichever node owns {task} starts this run, once")
        }
        other => other.name().to_string(),
    }
}
