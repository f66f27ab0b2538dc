//! The cluster's own definitions (`rota ctl apply -f FILE`): a document of `[[task]]` and
//! `[[service]]` tables with the schema of a node's file, checked and compiled the same way,
//! and with the same named errors. A node runs them only if its `[admin] definitions` lets
//! it: a definition runs commands, and may be limited to `definition_programs`.

use std::sync::Arc;

use serde::Deserialize;

use super::{
    checks::ConfigProblem, placement::PlacementSection, service, task, toml_errors::toml_problem,
    ServiceSection, TaskSection,
};
use rota::{node::DefinitionCompiler, service::ServiceSpec, task::TaskSpec};

/// A definitions document: tasks and services only.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    /// Policies of the document's tasks that do not set their own (the nodes' files'
    /// `[defaults]` do not apply: a definition means the same on every node).
    #[serde(default)]
    defaults: task::TaskDefaults,
    #[serde(default, rename = "task")]
    tasks: Vec<TaskSection>,
    #[serde(default, rename = "service")]
    services: Vec<ServiceSection>,
}

/// The compiler a node and its API use, limited to `programs` when given.
pub fn compiler(programs: Option<Vec<String>>) -> DefinitionCompiler {
    Arc::new(move |text: &str| {
        compile(text, programs.as_deref()).map_err(|problems| {
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })
    })
}

/// The tasks and services `text` defines, or every problem (field, value, fix).
pub fn compile(
    text: &str,
    programs: Option<&[String]>,
) -> Result<(Vec<TaskSpec>, Vec<ServiceSpec>), Vec<ConfigProblem>> {
    let doc: Document = toml::from_str(text).map_err(|e| vec![toml_problem(text, &e)])?;
    let mut problems = Vec::new();
    if let Some(allowed) = programs {
        let mut check = |field: String, command: &Option<Vec<String>>| {
            let Some(program) = command.as_ref().and_then(|c| c.first()) else {
                return;
            };
            if !allowed.iter().any(|a| a == program) {
                problems.push(ConfigProblem::new(
                    field,
                    program,
                    "is not a program the cluster's definitions may run on this node",
                    format!(
                        "use one of {} ([admin] definition_programs), or define the task in a node's own file",
                        allowed.join(", ")
                    ),
                ));
            }
        };
        for (i, t) in doc.tasks.iter().enumerate() {
            check(format!("task[{i}].command"), &t.command);
        }
        for (i, s) in doc.services.iter().enumerate() {
            check(format!("service[{i}].command"), &s.command);
            if let Some(fi) = &s.file_inbound {
                check(format!("service[{i}].file_inbound.command"), &fi.command);
            }
        }
    }
    let placement = PlacementSection::default();
    let (tasks, task_problems) = task::compile_tasks(&doc.tasks, &doc.defaults, &placement);
    let (services, service_problems) =
        service::compile_services(&doc.services, &doc.tasks, &placement);
    problems.extend(task_problems);
    problems.extend(service_problems);
    if problems.is_empty() {
        Ok((tasks, services))
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"
[[task]]
name = "report"
every = "1h"
command = ["/usr/local/bin/report", "--daily"]
"#;

    #[test]
    fn a_document_compiles_as_a_nodes_file_does() {
        let (tasks, services) = compile(DOC, None).unwrap();
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].name, "report");
        assert!(services.is_empty());
        assert_eq!(
            compile("", None).map(|(t, s)| (t.len(), s.len())).ok(),
            Some((0, 0))
        );
    }

    #[test]
    fn problems_are_named_as_in_a_nodes_file() {
        let bad = "[[task]]\nname = \"r\"\nevery = \"soon\"\nlog = { message = \"x\" }\n";
        let problems = compile(bad, None).unwrap_err();
        assert!(
            problems.iter().any(|p| p.to_string().contains("every")),
            "{problems:?}"
        );
        let node_keys = "[node]\nid = \"n\"\n";
        let problems = compile(node_keys, None).unwrap_err();
        assert!(problems[0].to_string().contains("node"), "{problems:?}");
    }

    #[test]
    fn only_listed_programs_are_taken_when_a_list_is_given() {
        let allowed = vec!["/usr/local/bin/report".to_string()];
        assert!(compile(DOC, Some(&allowed)).is_ok());
        let other = vec!["/usr/bin/true".to_string()];
        let problems = compile(DOC, Some(&other)).unwrap_err();
        let text = problems[0].to_string();
        assert!(
            text.contains("task[0].command") && text.contains("/usr/local/bin/report"),
            "{text}"
        );
    }
}
