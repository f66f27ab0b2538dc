//! `[node]`: who this node is (id, cluster, labels) and what a `restart` command does.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::checks::ConfigProblem;

/// `[node]`: who this node is.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Unique in the cluster: a second live node with this id is refused.
    #[serde(default)]
    pub id: String,
    /// The clustering domain; several clusters may share one store.
    #[serde(default)]
    pub cluster: String,
    /// `labels = { zone = "eu" }`: matched by tasks' `node_selector`, seen by custom resolvers.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// What a `restart` command does: `exec` (default) re-executes the binary with the same
    /// arguments, no supervisor needed; `exit` ends with code 75 for a supervisor (systemd:
    /// `Restart=on-failure`) to start it again.
    #[serde(default)]
    pub restart: Option<String>,
}

impl NodeSection {
    /// `restart`: `exec` or `exit`, when set.
    pub(super) fn check_restart(&self, p: &mut Vec<ConfigProblem>) {
        if let Some(r) = &self.restart {
            if r != "exec" && r != "exit" {
                p.push(ConfigProblem::new(
                    "node.restart",
                    r,
                    "unknown restart mode",
                    "use \"exec\" (re-execute the binary) or \"exit\" (exit with code 75 for a supervisor)",
                ));
            }
        }
    }
}
