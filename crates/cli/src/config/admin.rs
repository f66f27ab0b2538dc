//! `[admin]`: the HTTP admin API's address, tokens and TLS files, and their check
//! ([`AdminSection::resolve`]).

use std::{fmt, path::PathBuf};

use serde::Deserialize;

use rota::kinds::command::{ADMIN_TOKEN_ENV, READ_TOKEN_ENV};

use super::checks::ConfigProblem;

/// Shortest token accepted.
const MIN_TOKEN_LEN: usize = 16;

/// `[admin]`: the HTTP admin API.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// `127.0.0.1:7070`; unset: no API.
    pub listen: Option<String>,
    /// Needed for actions (`ROTA_ADMIN_TOKEN` overrides).
    pub token: Option<String>,
    /// Good for reads only (`ROTA_READ_TOKEN` overrides).
    pub read_token: Option<String>,
    /// PEM certificate chain and key: serve HTTPS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Runs the cluster's own definitions (`rota ctl apply`), and lets this API apply them.
    /// Off by default: a definition runs commands on every node that takes them.
    #[serde(default)]
    pub definitions: bool,
    /// The only programs a definition's command may start on this node (unset: any).
    pub definition_programs: Option<Vec<String>>,
}

// Tokens are secrets.
impl fmt::Debug for AdminSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |t: &Option<String>| t.as_ref().map(|_| "<redacted>");
        f.debug_struct("AdminSection")
            .field("listen", &self.listen)
            .field("token", &set(&self.token))
            .field("read_token", &set(&self.read_token))
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("definitions", &self.definitions)
            .field("definition_programs", &self.definition_programs)
            .finish()
    }
}

impl AdminSection {
    /// The API settings, tokens from the environment first; `None` without `listen`.
    pub fn resolve(&self) -> Result<Option<rota_admin::AdminConfig>, Vec<ConfigProblem>> {
        let mut p = Vec::new();
        let token = |env: &str, field: &str, file: &Option<String>, p: &mut Vec<ConfigProblem>| {
            let value = std::env::var(env)
                .ok()
                .filter(|v| !v.is_empty())
                .or(file.clone())?;
            if value.trim().len() < MIN_TOKEN_LEN || value.trim() != value {
                p.push(ConfigProblem::new(
                    field,
                    "<redacted>",
                    format!("a token must be at least {MIN_TOKEN_LEN} characters, without surrounding spaces"),
                    format!("use a long random value, e.g. `openssl rand -hex 24`, in {field} or {env}"),
                ));
            }
            Some(rota_admin::Secret::new(value))
        };
        let admin_token = token(ADMIN_TOKEN_ENV, "admin.token", &self.token, &mut p);
        let read_token = token(READ_TOKEN_ENV, "admin.read_token", &self.read_token, &mut p);
        if admin_token.is_some() && admin_token == read_token {
            p.push(ConfigProblem::new(
                "admin.read_token",
                "<redacted>",
                "is the same as the admin token",
                "give the read-only token its own value",
            ));
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => {
                let mut missing = false;
                for (field, path) in [("admin.tls_cert", c), ("admin.tls_key", k)] {
                    if !path.is_file() {
                        missing = true;
                        p.push(ConfigProblem::new(
                            field,
                            path.display().to_string(),
                            "no such file",
                            "give the path of a PEM file",
                        ));
                    }
                }
                // Read them as the server will: unreadable, not PEM, or a key that is not
                // the certificate's is caught here, not when the node starts.
                if !missing {
                    if let Err(rota::Error::Config { field, message }) =
                        rota_admin::tls_acceptor(c, k)
                    {
                        let path = if field == "admin.tls_cert" { c } else { k };
                        p.push(ConfigProblem::from_message(
                            field,
                            path.display().to_string(),
                            &message,
                            "give a PEM certificate chain and its private key",
                        ));
                    }
                }
                Some((c.clone(), k.clone()))
            }
            (None, None) => None,
            (c, _) => {
                let (field, other) = if c.is_some() {
                    ("admin.tls_key", "tls_cert")
                } else {
                    ("admin.tls_cert", "tls_key")
                };
                p.push(ConfigProblem::new(
                    field,
                    "",
                    format!("is missing while {other} is set"),
                    "set both tls_cert and tls_key, or neither for plain HTTP",
                ));
                None
            }
        };
        let listen = match &self.listen {
            None => None,
            Some(l) => match l.parse::<std::net::SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    p.push(ConfigProblem::new(
                        "admin.listen",
                        l,
                        "is not an address with a port",
                        "use host:port with an IP address, e.g. \"127.0.0.1:7070\"",
                    ));
                    None
                }
            },
        };
        if !p.is_empty() {
            return Err(p);
        }
        Ok(listen.map(|listen| rota_admin::AdminConfig {
            listen,
            admin_token,
            read_token,
            tls,
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    #[test]
    fn tls_files_are_read_by_the_check_as_the_server_reads_them() {
        let fixture = |name: &str| format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let problems = |cert: &str, key: &str| {
            parse(&format!(
                "[node]\nid = \"n1\"\n[store]\nurl = \"sqlite:///tmp/x.db\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
                fixture(cert),
                fixture(key)
            ))
            .unwrap()
            .validate()
            .into_iter()
            .filter(|p| p.field.starts_with("admin.tls"))
            .collect::<Vec<_>>()
        };
        assert_eq!(problems("admin-test.crt", "admin-test.key"), vec![]);
        // A key that is not the certificate's.
        let mismatched = problems("admin-test.crt", "unrelated.key");
        assert_eq!(mismatched.len(), 1, "{mismatched:?}");
        assert_eq!(mismatched[0].field, "admin.tls_key", "{}", mismatched[0]);
        // A certificate where the key should be, and the other way round.
        let not_a_key = problems("admin-test.crt", "admin-test-ca.crt");
        assert_eq!(not_a_key[0].field, "admin.tls_key", "{}", not_a_key[0]);
        let not_a_cert = problems("admin-test.key", "admin-test.key");
        assert_eq!(not_a_cert[0].field, "admin.tls_cert", "{}", not_a_cert[0]);
    }
}
