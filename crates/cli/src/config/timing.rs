//! `[timing]`: the node's durations, each parsed, then their relations checked.

use std::time::Duration;

use serde::Deserialize;

use rota::{node::Timing, Error};

use super::checks::{duration, ConfigProblem};

/// `[timing]`: a profile (`default` or `fast`), then durations such as `"200ms"` or `"1s"`;
/// unset keys keep the profile's values.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimingSection {
    pub profile: Option<String>,
    pub heartbeat: Option<String>,
    pub node_timeout: Option<String>,
    pub fence_margin: Option<String>,
    pub watch_interval: Option<String>,
    pub shutdown_grace: Option<String>,
    pub handover_timeout: Option<String>,
    pub history_retention: Option<String>,
}

impl TimingSection {
    /// The timing, the profile's values for unset keys; a problem per unknown profile and
    /// per unparsable duration.
    pub(super) fn resolve(&self, problems: &mut Vec<ConfigProblem>) -> Timing {
        let profile = self.profile.as_deref().unwrap_or("default");
        let mut t = Timing::profile(profile).unwrap_or_else(|| {
            problems.push(ConfigProblem::new(
                "timing.profile",
                profile,
                "is not a timing profile",
                "write profile = \"default\" (failover in about 1 s) or \"fast\" (about 350 ms, for four times the heartbeats)",
            ));
            Timing::default()
        });
        let fields: [(&str, &Option<String>, &mut Duration); 7] = [
            ("heartbeat", &self.heartbeat, &mut t.heartbeat),
            ("node_timeout", &self.node_timeout, &mut t.node_timeout),
            ("fence_margin", &self.fence_margin, &mut t.fence_margin),
            (
                "watch_interval",
                &self.watch_interval,
                &mut t.watch_interval,
            ),
            (
                "shutdown_grace",
                &self.shutdown_grace,
                &mut t.shutdown_grace,
            ),
            (
                "handover_timeout",
                &self.handover_timeout,
                &mut t.handover_timeout,
            ),
            (
                "history_retention",
                &self.history_retention,
                &mut t.history_retention,
            ),
        ];
        for (name, text, slot) in fields {
            if let Some(d) = text
                .as_deref()
                .and_then(|text| duration(problems, &format!("timing.{name}"), text))
            {
                *slot = d;
            }
        }
        t
    }

    /// Every duration, then their relations ([`Timing::validate`]).
    pub(super) fn check(&self, p: &mut Vec<ConfigProblem>) {
        let before = p.len();
        let timing = self.resolve(p);
        // The relations only make sense once every duration parsed.
        if p.len() == before {
            if let Err(Error::Config { field, message }) = timing.validate() {
                let value = timing_value(&timing, &field);
                p.push(ConfigProblem::from_message(
                    field,
                    value,
                    &message,
                    "adjust [timing]",
                ));
            }
        }
    }
}

/// The value of a `timing.*` field, for a problem found by [`Timing::validate`].
fn timing_value(t: &Timing, field: &str) -> String {
    let d = match field.strip_prefix("timing.") {
        Some("heartbeat") => t.heartbeat,
        Some("node_timeout") => t.node_timeout,
        Some("fence_margin") => t.fence_margin,
        Some("watch_interval") => t.watch_interval,
        _ => return String::new(),
    };
    rota::core::schedule::format_duration(d)
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, tests::fields};

    #[test]
    fn timing_relations_and_missing_keys() {
        let config = parse(
            "[timing]\nheartbeat = \"500ms\"\nnode_timeout = \"1s\"\n[[task]]\nname = \"x\"\n",
        )
        .unwrap();
        let problems = config.validate();
        assert_eq!(
            fields(&problems),
            vec![
                "node.id",
                "node.cluster",
                "store.url",
                "timing.node_timeout",
                "task[0].cron",
                "task[0]"
            ],
            "{problems:#?}"
        );
        assert_eq!(problems[3].value, "1s");
        assert!(
            problems[3].fix.contains("raise node_timeout"),
            "{}",
            problems[3]
        );
        assert_eq!(
            problems[0].to_string(),
            "node.id: is missing; fix: set id = \"node-1\""
        );
    }

    #[test]
    fn a_profile_gives_the_unset_durations() {
        let base = "[node]\nid = \"a\"\ncluster = \"c\"\n[store]\nurl = \"sqlite:///tmp/x.db\"\n";
        let fast = parse(&format!(
            "{base}[timing]\nprofile = \"fast\"\nfence_margin = \"90ms\"\n"
        ))
        .unwrap();
        assert!(fast.validate().is_empty(), "{:#?}", fast.validate());
        let t = fast.timing();
        assert_eq!(
            (t.heartbeat, t.node_timeout, t.fence_margin),
            (
                std::time::Duration::from_millis(50),
                std::time::Duration::from_millis(250),
                std::time::Duration::from_millis(90)
            ),
            "the profile's values, but the key set"
        );
        let unknown = parse(&format!("{base}[timing]\nprofile = \"quick\"\n")).unwrap();
        let problems = unknown.validate();
        assert_eq!(fields(&problems), vec!["timing.profile"], "{problems:#?}");
        assert_eq!(problems[0].value, "quick");
        assert!(problems[0].fix.contains("\"fast\""), "{}", problems[0]);
    }
}
