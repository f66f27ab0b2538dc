//! The leader's side of a rolling restart: one node at a time, each step acknowledged.

use super::*;

impl Runtime {
    /// The leader moves rolling restarts on, one node at a time (see
    /// [`control::rolling_step`]); at most every few heartbeats while one is under way.
    pub(super) async fn drive_rolling_restarts(&mut self) -> Result<()> {
        if self.commands.rolling().is_empty()
            || self
                .rolling_checked
                .is_some_and(|at| at.elapsed() < self.shared.timing.heartbeat)
        {
            return Ok(());
        }
        self.rolling_checked = Some(Instant::now());
        let Some(view) = &self.view else {
            return Ok(());
        };
        let me = self.shared.member();
        let live: BTreeMap<String, i64> = view
            .nodes
            .iter()
            .filter(|n| n.alive && !n.leaving)
            .map(|n| (n.node.clone(), n.incarnation))
            .collect();
        let now_ms = self.shared.clock.now_ms();
        let seqs: Vec<i64> = self.commands.rolling().keys().copied().collect();
        let acks = self
            .shared
            .store
            .command_acks(&me.cluster, AckFilter::Commands(&seqs))
            .await?;
        for seq in seqs {
            let command = self.commands.rolling()[&seq].clone();
            let Operation::RollingRestart { timeout_secs } = command.body.op else {
                continue;
            };
            let of_this: BTreeMap<String, Ack> = acks
                .iter()
                .filter(|a| a.seq == seq)
                .map(|a| (a.node.clone(), a.clone()))
                .collect();
            let step = control::rolling_step(
                &command.body.targets,
                &of_this,
                &live,
                &self.placed_with,
                now_ms,
                timeout_secs as i64 * 1000,
            );
            let ack = |node: &str, incarnation, state, message: String| Ack {
                seq,
                node: node.to_string(),
                incarnation,
                state,
                message,
                at_ms: 0,
            };
            let Some(epoch) = self.epoch else {
                return Ok(());
            };
            // Every step is written as the leader of this epoch (contract 6): a leader that
            // stalled past its lease cannot restart a node after its successor did.
            let (acks, command, done): (Vec<Ack>, Option<String>, &str) = match step {
                RollingStep::Wait => continue,
                RollingStep::Finished => {
                    info!(seq, "rolling restart finished");
                    self.commands.finish_rolling(seq);
                    continue;
                }
                RollingStep::Restart { node, incarnation } => {
                    // In progress with the restart: should this leader die right after, its
                    // successor waits (and times out) rather than restart the node twice.
                    let body = CommandBody {
                        op: Operation::Restart,
                        scope: Scope::Nodes(vec![node.clone()]),
                        targets: vec![node.clone()],
                        issued_by: format!("{} (rolling restart #{seq})", me.node),
                        requested_by: command.body.requested_by.clone(),
                    };
                    let json = serde_json::to_string(&body).expect("serializable");
                    let note = "restarting".to_string();
                    info!(seq, node = %node, "rolling restart: restarting a node");
                    (
                        vec![ack(&node, incarnation, AckState::InProgress, note)],
                        Some(json),
                        "restart",
                    )
                }
                RollingStep::Confirm { node, incarnation } => {
                    let note = format!("restarted: back as incarnation {incarnation}, work placed");
                    info!(seq, node = %node, "rolling restart: node back");
                    (
                        vec![ack(&node, incarnation, AckState::Applied, note)],
                        None,
                        "confirm",
                    )
                }
                RollingStep::Skip { node } => {
                    let note = "skipped: not running when its turn came".to_string();
                    warn!(seq, node = %node, "rolling restart: node not running; skipped");
                    (vec![ack(&node, 0, AckState::Applied, note)], None, "skip")
                }
                RollingStep::Fail { node, message } => {
                    let incarnation = live.get(&node).copied().unwrap_or(0);
                    warn!(seq, node = %node, reason = %message, "rolling restart: failed");
                    (
                        vec![ack(&node, incarnation, AckState::Failed, message)],
                        None,
                        "fail",
                    )
                }
            };
            let written = self
                .shared
                .store
                .lead_commands(&me, epoch, &acks, command.as_deref())
                .await?;
            if written == LeaderWrite::Deposed {
                warn!(
                    seq,
                    step = done,
                    "rolling restart: no longer the leader; step not written"
                );
                self.epoch = None;
                return Ok(());
            }
        }
        Ok(())
    }
}
