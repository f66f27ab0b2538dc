//! The cluster's own tasks and services (`rota ctl apply`): compiled from the last `define`
//! command of the log, run like the node's own, placed on every node that runs definitions.

use super::*;
use rota_core::placement::PlacementSpec;

impl Runtime {
    /// Compiles the definitions again when the log holds a newer `define` command. A document
    /// this node cannot compile (its program differs from the one that accepted it) keeps
    /// the previous definitions, with an error in the log.
    pub(super) fn refresh_definitions(&mut self) {
        let Some(compile) = &self.compiler else {
            return;
        };
        let Some(latest) = self.commands.control.definitions() else {
            return;
        };
        if latest.version == self.defined.version {
            return;
        }
        let version = latest.version;
        match compile(&latest.document) {
            Ok((tasks, services)) => {
                info!(
                    version,
                    tasks = tasks.len(),
                    services = services.len(),
                    "cluster definitions applied"
                );
                self.defined = Defined {
                    version,
                    tasks: tasks
                        .into_iter()
                        .map(|t| (t.name.clone(), Arc::new(t)))
                        .collect(),
                    services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
                };
            }
            Err(e) => {
                error!(version, error = %e, "cannot compile the cluster definitions; keeping the previous ones");
                self.defined.version = version;
            }
        }
    }

    /// The placement specs and hashes of every defined task and service, for the nodes
    /// that run definitions.
    pub(super) fn defined_declarations(&self) -> Vec<(String, String, PlacementSpec)> {
        let tasks = self
            .defined
            .tasks
            .values()
            .map(|t| (t.name.clone(), t.definition_hash(), t.placement.clone()));
        let services = self
            .defined
            .services
            .values()
            .map(|s| (s.name.clone(), s.definition_hash(), s.placement.clone()));
        tasks.chain(services).collect()
    }
}
