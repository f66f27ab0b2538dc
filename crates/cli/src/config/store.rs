//! `[store]`: where the nodes meet, and the check of its URL.

use std::fmt;

use serde::Deserialize;

use rota::store::redact_url;

use rota::kinds::command::STORE_URL_ENV;

use super::checks::ConfigProblem;

const STORE_SCHEMES: [&str; 6] = [
    "sqlite",
    "postgres",
    "postgresql",
    "mysql",
    "mariadb",
    "zookeeper",
];

/// `[store]`: where the nodes meet.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `sqlite:///path`, `postgres://user:pass@host/db`, `mysql://...`; `ROTA_STORE_URL` overrides.
    #[serde(default)]
    pub url: String,
    /// Create or upgrade the schema at start (default true).
    #[serde(default = "yes")]
    pub migrate: bool,
    /// Hold a session lock and watch the other nodes' (default true; SQL stores): a node
    /// whose process dies is noticed when its connection closes, not after its timeout.
    /// `false` behind a transaction pooler (PgBouncer in transaction mode, ProxySQL) or on
    /// Galera, where a lock does not follow the node's session.
    #[serde(default = "yes")]
    pub session_locks: bool,
}

fn yes() -> bool {
    true
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            url: String::new(),
            migrate: true,
            session_locks: true,
        }
    }
}

// The URL may hold a password.
impl fmt::Debug for StoreSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSection")
            .field("url", &redact_url(&self.url))
            .field("migrate", &self.migrate)
            .field("session_locks", &self.session_locks)
            .finish()
    }
}

impl StoreSection {
    /// `url`: set, and with a scheme rota knows.
    pub(super) fn check(&self, p: &mut Vec<ConfigProblem>) {
        let url = &self.url;
        let scheme_fix =
            "use sqlite:///path/to/rota.db, postgres://user@host/db or mysql://user@host/db";
        if url.trim().is_empty() {
            p.push(ConfigProblem::new(
                "store.url",
                "",
                "is missing",
                format!("set url = \"sqlite:///var/lib/rota/rota.db\" in [store], or the {STORE_URL_ENV} environment variable"),
            ));
        } else {
            let scheme = url.split_once("://").map(|(s, _)| s);
            if !scheme.is_some_and(|s| STORE_SCHEMES.contains(&s)) {
                let reason = match scheme {
                    Some(s) => format!("unknown scheme `{s}`"),
                    None => "not a URL (no `scheme://`)".to_string(),
                };
                p.push(ConfigProblem::new(
                    "store.url",
                    redact_url(url),
                    reason,
                    scheme_fix,
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    #[test]
    fn store_url_override_and_redaction() {
        let mut config = parse("[store]\nurl = \"sqlite:///from/file.db\"\n").unwrap();
        config.apply_store_url_override(None);
        assert_eq!(config.store.url, "sqlite:///from/file.db");
        config.apply_store_url_override(Some(String::new()));
        assert_eq!(config.store.url, "sqlite:///from/file.db");
        config.apply_store_url_override(Some("postgres://rota:s3cret@db/rota".into()));
        assert_eq!(config.store.url, "postgres://rota:s3cret@db/rota");
        assert!(!format!("{config:?}").contains("s3cret"));

        config.store.url = "postgress://rota:s3cret@db/rota".into();
        let problem = config
            .validate()
            .into_iter()
            .find(|p| p.field == "store.url")
            .unwrap();
        assert_eq!(problem.value, "postgress://rota:***@db/rota");
        config.store.url = "rota:s3cret@db".into();
        let problem = config
            .validate()
            .into_iter()
            .find(|p| p.field == "store.url")
            .unwrap();
        assert!(!problem.to_string().contains("s3cret"), "{problem}");
    }
}
