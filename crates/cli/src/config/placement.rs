//! Where tasks and services run: `[placement]` (the default of every task and service) and
//! the same keys in a `[[task]]` or `[[service]]`, checked and compiled into a
//! [`PlacementSpec`].

use std::collections::BTreeMap;

use serde::Deserialize;

use rota::core::placement::{label_problems, PlacementSpec, ResolverSpec};

use super::checks::ConfigProblem;

/// Where tasks run: `[placement]` (the default of every task) or the same keys in a `[[task]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementSection {
    /// `active-passive` (default), `round-robin`, `nodes`, `failover` or `custom`.
    pub resolver: Option<String>,
    /// `round-robin`: nodes to wait for before placing anything (default 1).
    pub task_server_count: Option<i64>,
    /// `nodes`: the only nodes that may run the task.
    pub task_nodes: Option<Vec<String>>,
    /// `failover`: the node that runs the task whenever it is live.
    pub primary: Option<String>,
    /// `failover`: who takes over, in order.
    pub backups: Option<Vec<String>>,
    /// `custom`: the name the resolver is registered under in the embedding program.
    pub custom: Option<String>,
    /// Only nodes with all these labels may run the task.
    pub node_selector: Option<BTreeMap<String, String>>,
}

const RESOLVERS: [&str; 6] = [
    "active-passive",
    "all",
    "round-robin",
    "nodes",
    "failover",
    "custom",
];

impl PlacementSection {
    /// The placement these keys give, the keys they leave unset taken from `default` (a
    /// task's keys over `[placement]`), or nothing and problems under `prefix`.
    pub(super) fn compile(
        &self,
        prefix: &str,
        default: Option<&PlacementSpec>,
        p: &mut Vec<ConfigProblem>,
    ) -> Option<PlacementSpec> {
        let f = |key: &str| format!("{prefix}.{key}");
        let before = p.len();
        let list = |v: &Option<Vec<String>>| v.as_ref().map(|v| format!("{v:?}"));
        // Each parameter key, its value, and the resolver it belongs to.
        let params: [(&str, Option<String>, &str); 5] = [
            (
                "task_server_count",
                self.task_server_count.map(|c| c.to_string()),
                "round-robin",
            ),
            ("task_nodes", list(&self.task_nodes), "nodes"),
            ("primary", self.primary.clone(), "failover"),
            ("backups", list(&self.backups), "failover"),
            ("custom", self.custom.clone(), "custom"),
        ];
        let resolver = match self.resolver.as_deref() {
            None => {
                for (key, value, owner) in &params {
                    if let Some(value) = value {
                        p.push(ConfigProblem::new(
                            f(key),
                            value,
                            format!("`{key}` needs resolver = \"{owner}\" in the same table"),
                            format!("add resolver = \"{owner}\", or remove {key}"),
                        ));
                    }
                }
                Some(default.map(|d| d.resolver.clone()).unwrap_or_default())
            }
            Some(name) if !RESOLVERS.contains(&name) => {
                p.push(ConfigProblem::new(
                    f("resolver"),
                    name,
                    "unknown resolver",
                    format!("use one of {}", RESOLVERS.join(", ")),
                ));
                None
            }
            Some(name) => {
                for (key, value, owner) in &params {
                    if let Some(value) = value.as_ref().filter(|_| *owner != name) {
                        p.push(ConfigProblem::new(
                            f(key),
                            value,
                            format!("`{key}` only applies to resolver = \"{owner}\""),
                            format!("remove {key}, or set resolver = \"{owner}\""),
                        ));
                    }
                }
                self.resolver_spec(name, &f, p)
            }
        };
        let node_selector = match &self.node_selector {
            Some(selector) => {
                for problem in label_problems("node_selector", selector) {
                    p.push(problem.under(prefix));
                }
                selector.clone()
            }
            None => default.map(|d| d.node_selector.clone()).unwrap_or_default(),
        };
        let spec = PlacementSpec {
            resolver: resolver?,
            node_selector,
        };
        if self.resolver.is_some() {
            // Checks of the values (the selector's are done above).
            let own = PlacementSpec::from(spec.resolver.clone());
            for problem in own.problems() {
                p.push(problem.under(prefix));
            }
        }
        (p.len() == before).then_some(spec)
    }

    /// The resolver named `name` with its keys; problems for missing ones.
    fn resolver_spec(
        &self,
        name: &str,
        f: &dyn Fn(&str) -> String,
        p: &mut Vec<ConfigProblem>,
    ) -> Option<ResolverSpec> {
        let mut missing = |key: &str, example: &str| {
            p.push(ConfigProblem::new(
                f(key),
                "",
                format!("resolver = \"{name}\" needs `{key}`"),
                format!("add {key} = {example}"),
            ));
        };
        match name {
            "active-passive" => Some(ResolverSpec::ActivePassive),
            "all" => Some(ResolverSpec::All),
            "round-robin" => match self.task_server_count.unwrap_or(1) {
                count if count < 1 => {
                    p.push(ConfigProblem::new(
                        f("task_server_count"),
                        count.to_string(),
                        "must be at least 1",
                        "give the number of nodes to wait for before spreading tasks, e.g. task_server_count = 2 (1 starts at once)",
                    ));
                    None
                }
                count => Some(ResolverSpec::RoundRobin {
                    task_server_count: usize::try_from(count).unwrap_or(usize::MAX),
                }),
            },
            "nodes" => match &self.task_nodes {
                Some(task_nodes) => Some(ResolverSpec::Nodes {
                    task_nodes: task_nodes.clone(),
                }),
                None => {
                    missing("task_nodes", "[\"node-1\", \"node-2\"]");
                    None
                }
            },
            "failover" => {
                if self.primary.is_none() {
                    missing("primary", "\"node-1\"");
                }
                if self.backups.is_none() {
                    missing("backups", "[\"node-2\", \"node-3\"]");
                }
                Some(ResolverSpec::Failover {
                    primary: self.primary.clone()?,
                    backups: self.backups.clone()?,
                })
            }
            "custom" => match &self.custom {
                Some(custom) => Some(ResolverSpec::Custom {
                    name: custom.clone(),
                }),
                None => {
                    missing(
                        "custom",
                        "\"my-resolver\" (the name given to NodeBuilder::resolver_named)",
                    );
                    None
                }
            },
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use rota::core::placement::PlacementSpec;

    use crate::config::{parse, tests::fields};

    #[test]
    fn placement_defaults_apply_to_tasks_without_their_own() {
        let text = r#"
            [node]
            id = "node-1"
            cluster = "orders"
            labels = { zone = "eu", tier = "gold" }
            [store]
            url = "sqlite:///tmp/rota.db"
            [placement]
            resolver = "round-robin"
            task_server_count = 2
            [[task]]
            name = "spread"
            every = "1s"
            log = {}
            [[task]]
            name = "pinned"
            every = "1s"
            log = {}
            resolver = "failover"
            primary = "node-1"
            backups = ["node-2", "node-3"]
            node_selector = { zone = "eu" }
            [[task]]
            name = "eu-spread"
            every = "1s"
            log = {}
            node_selector = { zone = "eu" }
            [[task]]
            name = "only-some"
            every = "1s"
            log = {}
            resolver = "nodes"
            task_nodes = ["node-1", "node-x"]
            [[task]]
            name = "mine"
            every = "1s"
            log = {}
            resolver = "custom"
            custom = "eu-first"
            [[task]]
            name = "classic"
            every = "1s"
            log = {}
            resolver = "active-passive"
        "#;
        let config = parse(text).unwrap();
        assert_eq!(config.validate(), vec![]);
        let specs = config.task_specs().unwrap();
        let eu = |s: PlacementSpec| s.on_label("zone", "eu");
        assert_eq!(specs[0].placement, PlacementSpec::round_robin(2));
        assert_eq!(
            specs[1].placement,
            eu(PlacementSpec::failover("node-1", ["node-2", "node-3"]))
        );
        assert_eq!(specs[2].placement, eu(PlacementSpec::round_robin(2)));
        assert_eq!(
            specs[3].placement,
            PlacementSpec::nodes(["node-1", "node-x"])
        );
        assert_eq!(specs[4].placement, PlacementSpec::custom("eu-first"));
        assert_eq!(specs[5].placement, PlacementSpec::active_passive());
        assert_eq!(config.node.labels["tier"], "gold");
        config.builder().unwrap().validate().unwrap();

        // Without [placement], tasks are active-passive, as before.
        let plain = parse("[[task]]\nname = \"a\"\nevery = \"1s\"\nlog = {}\n").unwrap();
        assert_eq!(
            plain.task_specs().unwrap()[0].placement,
            PlacementSpec::default()
        );
    }

    #[test]
    fn placement_mistakes_are_named_with_the_fix() {
        let text = r#"
            [node]
            id = "node-1"
            cluster = "orders"
            labels = { zone = "e u" }
            [store]
            url = "sqlite:///tmp/rota.db"
            [placement]
            resolver = "round-robin"
            task_server_count = 0
            [[task]]
            name = "a"
            every = "1s"
            log = {}
            resolver = "random"
            [[task]]
            name = "b"
            every = "1s"
            log = {}
            resolver = "nodes"
            task_nodes = []
            [[task]]
            name = "c"
            every = "1s"
            log = {}
            resolver = "failover"
            primary = "node-1"
            backups = ["node-2", "node-1"]
            [[task]]
            name = "d"
            every = "1s"
            log = {}
            resolver = "failover"
            primary = "node-1"
            task_nodes = ["node-2"]
            [[task]]
            name = "e"
            every = "1s"
            log = {}
            task_server_count = 3
            [[task]]
            name = "f"
            every = "1s"
            log = {}
            resolver = "round-robin"
            task_server_count = -2
            [[task]]
            name = "g"
            every = "1s"
            log = {}
            resolver = "custom"
            node_selector = { "zone" = "" }
        "#;
        let problems = parse(text).unwrap().validate();
        assert_eq!(
            fields(&problems),
            vec![
                "node.labels.zone",
                "placement.task_server_count",
                "task[0].resolver",
                "task[1].task_nodes",
                "task[2].backups[1]",
                "task[3].task_nodes",
                "task[3].backups",
                "task[4].task_server_count",
                "task[5].task_server_count",
                "task[6].custom",
                "task[6].node_selector.zone",
            ],
            "{problems:#?}"
        );
        let by_field = |f: &str| problems.iter().find(|p| p.field == f).unwrap();
        let zero = by_field("placement.task_server_count");
        assert_eq!(zero.value, "0");
        assert!(zero.fix.contains("task_server_count = 2"), "{zero}");
        assert!(by_field("task[0].resolver").fix.contains("round-robin"));
        assert!(by_field("task[1].task_nodes").reason.contains("empty"));
        let dup = by_field("task[2].backups[1]");
        assert_eq!(dup.value, "node-1");
        assert!(dup.reason.contains("primary"), "{dup}");
        assert!(by_field("task[3].task_nodes")
            .reason
            .contains("only applies to resolver = \"nodes\""));
        assert!(by_field("task[3].backups")
            .reason
            .contains("needs `backups`"));
        assert!(by_field("task[4].task_server_count")
            .fix
            .contains("add resolver = \"round-robin\""));
        assert_eq!(by_field("task[5].task_server_count").value, "-2");
        // Unknown node names are fine: nodes may join later.
        assert!(!problems.iter().any(|p| p.value.contains("node-x")));
        let unknown = parse("[placement]\nresolvr = \"nodes\"\n").unwrap_err();
        assert_eq!(unknown[0].field, "placement.resolvr", "{}", unknown[0]);
    }
}
