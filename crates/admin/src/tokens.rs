//! Named API tokens with roles, kept in the cluster's store as hashes.
//!
//! Every node of a cluster accepts the same named tokens, and a revoked token is refused by
//! every node at its next request: a presented token is looked up in the store on each
//! request (one read of one cache entry), never in a copy a node keeps. The store holds only
//! a token's SHA-256 hash. Tokens are 32 random bytes, so a fast hash is enough: nobody can
//! guess a preimage, and a stolen hash does not open the API.
//!
//! Two entries per token, in rota's own cache [`TOKENS_CACHE`]: `name/<name>` holds the
//! hash (names are unique: it is written only where absent) and `hash/<hex>` the token's
//! record, looked up by the hash of what a client presents. A token is written name first
//! and revoked hash first, so that no crash in between leaves a token that works but cannot
//! be listed or revoked.

use std::fmt;

use base64::Engine;
use hyper::StatusCode;
use ring::rand::SecureRandom;
use rota::store::{CacheOutcome, CacheWrite, Expect, Store};
use serde::{Deserialize, Serialize};

use crate::api::{Problem, Secret};

/// rota's own cache of named tokens (reserved: the cache API cannot read or write it).
pub const TOKENS_CACHE: &str = "rota.tokens";
/// Most named tokens one cluster keeps.
pub const MAX_TOKENS: i64 = 1000;
/// Every token rota makes starts with this, so that secret scanners can recognise one.
const TOKEN_PREFIX: &str = "rota_";

/// What a caller may do. Each role may do everything the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads: the cluster, its history, its commands, the dashboard, `/metrics`.
    Read,
    /// Reads, and day-to-day control: pause and resume tasks, stop and start services,
    /// drain and undrain nodes, run a task now.
    Operate,
    /// Everything: restarts and shutdowns, act-as, log levels, cache writes, tokens.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Read, Role::Operate, Role::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Operate => "operate",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == text)
            .ok_or_else(|| format!("`{text}` is not a role; use read, operate or admin"))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who sent a request, as its token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name: `admin` and `read` for the config's two tokens.
    pub name: String,
    pub role: Role,
}

/// A named token as listed (never its secret nor its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    /// Store time of its creation.
    pub created_at_ms: i64,
    /// The token that created it.
    pub created_by: String,
}

/// The hash a token is kept under: SHA-256, hex.
fn hash(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn name_key(name: &str) -> String {
    format!("name/{name}")
}

fn hash_key(hash: &str) -> String {
    format!("hash/{hash}")
}

/// The caller a presented token names, if it is a live named token of `cluster`.
pub(crate) async fn caller_of(
    store: &dyn Store,
    cluster: &str,
    presented: &str,
) -> Result<Option<Caller>, Problem> {
    // Only a token rota made can be one: anything else costs no store read.
    if !presented.starts_with(TOKEN_PREFIX) || presented.len() > 200 {
        return Ok(None);
    }
    let entry = store
        .cache_get(cluster, TOKENS_CACHE, &hash_key(&hash(presented)))
        .await
        .map_err(|e| {
            Problem(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot check the token against the store ({e}); the tokens of the node's config still work"),
            )
        })?;
    let Some(entry) = entry else {
        return Ok(None);
    };
    let info: TokenInfo = serde_json::from_slice(&entry.value).map_err(|e| {
        Problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("a stored token record is unreadable ({e}); revoke it and create it again"),
        )
    })?;
    Ok(Some(Caller {
        name: info.name,
        role: info.role,
    }))
}

/// Creates the token `name` with `role`; returns the token itself, which is shown once and
/// kept nowhere.
pub(crate) async fn create(
    store: &dyn Store,
    cluster: &str,
    name: &str,
    role: Role,
    by: &Caller,
) -> Result<(Secret, TokenInfo), Problem> {
    rota::core::names::check_name(name).map_err(|e| Problem::bad(format!("name: {e}")))?;
    if matches!(name, "admin" | "read") {
        return Err(Problem::bad(format!(
            "name: `{name}` is the name of a token of the nodes' config; pick another name"
        )));
    }
    let live = store
        .cache_keys(cluster, TOKENS_CACHE, "name/", MAX_TOKENS)
        .await?;
    if live.len() as i64 >= MAX_TOKENS {
        return Err(Problem(
            StatusCode::CONFLICT,
            format!("the cluster has {MAX_TOKENS} tokens, the most it keeps; revoke one first"),
        ));
    }
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| {
            Problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the system's random source failed; try again".into(),
            )
        })?;
    let token = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hashed = hash(&token);
    let taken = store
        .cache_put(
            cluster,
            &CacheWrite {
                cache: TOKENS_CACHE,
                key: &name_key(name),
                value: hashed.as_bytes(),
                ttl_ms: None,
                expect: Expect::Absent,
            },
        )
        .await?;
    if let CacheOutcome::Conflict { .. } = taken {
        return Err(Problem(
            StatusCode::CONFLICT,
            format!("a token named `{name}` exists; revoke it first, or pick another name"),
        ));
    }
    let created_at_ms = store.now_ms().await?;
    let info = TokenInfo {
        name: name.to_string(),
        role,
        created_at_ms,
        created_by: by.name.clone(),
    };
    let record = serde_json::to_vec(&info).expect("token records serialize");
    store
        .cache_put(
            cluster,
            &CacheWrite {
                cache: TOKENS_CACHE,
                key: &hash_key(&hashed),
                value: &record,
                ttl_ms: None,
                expect: Expect::Any,
            },
        )
        .await?;
    tracing::info!(name, role = role.name(), by = by.name, "token created");
    Ok((Secret::new(token), info))
}

/// Every named token of `cluster`, by name.
pub(crate) async fn list(store: &dyn Store, cluster: &str) -> Result<Vec<TokenInfo>, Problem> {
    let names = store
        .cache_keys(cluster, TOKENS_CACHE, "name/", MAX_TOKENS)
        .await?;
    let mut out = Vec::with_capacity(names.len());
    for key in names {
        let Some(name) = key.strip_prefix("name/") else {
            continue;
        };
        if let Some(info) = info_of(store, cluster, name).await? {
            out.push(info);
        }
    }
    Ok(out)
}

/// The record of the token `name`, if it exists and was written whole.
async fn info_of(
    store: &dyn Store,
    cluster: &str,
    name: &str,
) -> Result<Option<TokenInfo>, Problem> {
    let Some(hashed) = store
        .cache_get(cluster, TOKENS_CACHE, &name_key(name))
        .await?
    else {
        return Ok(None);
    };
    let hashed = String::from_utf8_lossy(&hashed.value).into_owned();
    let Some(record) = store
        .cache_get(cluster, TOKENS_CACHE, &hash_key(&hashed))
        .await?
    else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&record.value).ok())
}

/// Revokes the token `name`: refused by every node from its next request on.
pub(crate) async fn revoke(
    store: &dyn Store,
    cluster: &str,
    name: &str,
    by: &Caller,
) -> Result<(), Problem> {
    let Some(hashed) = store
        .cache_get(cluster, TOKENS_CACHE, &name_key(name))
        .await?
    else {
        return Err(Problem::not_found(format!(
            "no token named `{name}`; `rota ctl token list` shows them"
        )));
    };
    let hashed = String::from_utf8_lossy(&hashed.value).into_owned();
    store
        .cache_delete(cluster, TOKENS_CACHE, &hash_key(&hashed), Expect::Any)
        .await?;
    store
        .cache_delete(cluster, TOKENS_CACHE, &name_key(name), Expect::Any)
        .await?;
    tracing::info!(name, by = by.name, "token revoked");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_by_what_they_allow() {
        assert!(Role::Read < Role::Operate && Role::Operate < Role::Admin);
        for role in Role::ALL {
            assert_eq!(Role::parse(role.name()), Ok(role));
        }
        let e = Role::parse("root").unwrap_err();
        assert!(
            e.contains("`root`") && e.contains("read, operate or admin"),
            "{e}"
        );
    }

    #[test]
    fn the_hash_is_sha256_in_hex() {
        // SHA-256 of "abc" (FIPS 180-2, appendix B.1).
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
