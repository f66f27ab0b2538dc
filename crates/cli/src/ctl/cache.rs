//! `rota ctl cache`: get, put, delete and list the entries of the cluster's caches.

use std::{io::IsTerminal, process::ExitCode};

use base64::{
    alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    Engine as _,
};
use reqwest::Method;

use super::{
    args::CacheCommand,
    args::{EXIT_FAILED, EXIT_USAGE},
    client::{segment, Answer, Client, Failure},
    table::{print_json, text},
};

/// `rota ctl cache ...`. An absent entry (get) and a condition not met (put and del with
/// --if-version or --if-absent) exit 1 with the API's message.
pub(super) async fn cache(
    client: &Client,
    json: bool,
    command: CacheCommand,
) -> Result<ExitCode, Failure> {
    match command {
        CacheCommand::Get { cache, key } => {
            let path = match entry_path(&cache, &key) {
                Ok(p) => p,
                Err(message) => return Ok(usage(&message)),
            };
            let answer = client.exchange(Method::GET, &path, None, &[]).await?;
            // The API's answer for an absent entry names it (a 404 of an unknown endpoint
            // does not).
            if answered(&answer, 404, "key") {
                return Ok(failed(&answer.message));
            }
            let v = answer.into_result(&client.base, &path)?;
            if json {
                print_json(&v);
                return Ok(ExitCode::SUCCESS);
            }
            let value = v["value"].as_str().unwrap_or_default();
            let bytes = match v["encoding"].as_str() {
                Some("base64") => {
                    let digits: String = value.split_ascii_whitespace().collect();
                    BASE64.decode(digits).map_err(|_| {
                        Failure::Unreachable(format!(
                            "{}{path} answered with a value that is not base64",
                            client.base
                        ))
                    })?
                }
                _ => value.as_bytes().to_vec(),
            };
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            // A pipe gets the bytes as stored; a terminal also gets a line end.
            let line_end = out.is_terminal() && !bytes.ends_with(b"\n");
            let written = out
                .write_all(&bytes)
                .and_then(|_| match line_end {
                    true => out.write_all(b"\n"),
                    false => Ok(()),
                })
                .and_then(|_| out.flush());
            if let Err(e) = written {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    return Ok(failed(&format!("writing the value: {e}")));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Put(a) => {
            let mut path = match entry_path(&a.cache, &a.key) {
                Ok(p) => p,
                Err(message) => return Ok(usage(&message)),
            };
            let value = match (a.value, &a.file) {
                (Some(v), _) => v.into_bytes(),
                (None, Some(file)) => match std::fs::read(file) {
                    Ok(bytes) => bytes,
                    Err(e) => return Ok(usage(&format!("--file {}: {e}", file.display()))),
                },
                (None, None) => {
                    use std::io::Read;
                    let mut bytes = Vec::new();
                    if let Err(e) = std::io::stdin().lock().read_to_end(&mut bytes) {
                        return Ok(usage(&format!("--stdin: {e}")));
                    }
                    bytes
                }
            };
            if value.len() > rota::cache::MAX_VALUE {
                return Ok(usage(&format!(
                    "the value is {} bytes, more than the {} a cache entry holds; store a reference to larger data",
                    value.len(),
                    rota::cache::MAX_VALUE
                )));
            }
            if let Some(ttl) = &a.ttl {
                path.push_str(&format!("?ttl={}", segment(ttl)));
            }
            let mut headers = Vec::new();
            if let Some(version) = a.if_version {
                headers.push(("if-match", version.to_string()));
            }
            if a.if_absent {
                headers.push(("if-none-match", "*".to_string()));
            }
            let body = Some(("application/octet-stream", value));
            let answer = client.exchange(Method::PUT, &path, body, &headers).await?;
            if answered(&answer, 409, "current_version") {
                return Ok(failed(&answer.message));
            }
            let v = answer.into_result(&client.base, &path)?;
            match json {
                true => print_json(&v),
                false => println!("version {}", text(&v["version"])),
            }
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Del {
            cache,
            key,
            if_version,
        } => {
            let path = match entry_path(&cache, &key) {
                Ok(p) => p,
                Err(message) => return Ok(usage(&message)),
            };
            let headers: Vec<(&str, String)> = if_version
                .map(|v| ("if-match", v.to_string()))
                .into_iter()
                .collect();
            let answer = client
                .exchange(Method::DELETE, &path, None, &headers)
                .await?;
            if answered(&answer, 409, "current_version") {
                return Ok(failed(&answer.message));
            }
            let v = answer.into_result(&client.base, &path)?;
            if json {
                print_json(&v);
            } else if v["deleted"].as_bool() == Some(true) {
                println!("deleted (version {})", text(&v["version"]));
            } else {
                println!("nothing to delete: cache `{cache}` has no entry `{key}`");
            }
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Keys {
            cache,
            prefix,
            limit,
        } => {
            let mut path = match path_segment("cache", &cache) {
                Ok(c) => format!("/api/v1/cache/{c}?limit={limit}"),
                Err(message) => return Ok(usage(&message)),
            };
            if !prefix.is_empty() {
                path.push_str(&format!("&prefix={}", segment(&prefix)));
            }
            let v = client.get(&path).await?;
            if json {
                print_json(&v);
            } else {
                for key in v["keys"].as_array().into_iter().flatten() {
                    println!("{}", key.as_str().unwrap_or_default());
                }
            }
            if v["truncated"].as_bool() == Some(true) {
                eprintln!("note: there are more than {limit} keys; raise --limit (at most 1000) or narrow --prefix");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `/api/v1/cache/{cache}/{key}`, each percent-encoded as one segment.
fn entry_path(cache: &str, key: &str) -> Result<String, String> {
    Ok(format!(
        "/api/v1/cache/{}/{}",
        path_segment("cache", cache)?,
        path_segment("key", key)?
    ))
}

/// `name` percent-encoded as one path segment. `.` and `..` cannot be one: URLs resolve
/// them (escaped too) before sending.
fn path_segment(what: &str, name: &str) -> Result<String, String> {
    match name {
        "." | ".." => Err(format!(
            "{what} `{name}` cannot travel in a URL, which resolves `.` and `..`; use another {what}"
        )),
        _ => Ok(segment(name)),
    }
}

/// The API answered `status` in the shape of a cache outcome (its body has `field`).
fn answered(answer: &Answer, status: u16, field: &str) -> bool {
    answer.status == status
        && answer
            .value
            .as_ref()
            .is_some_and(|v| v.get(field).is_some())
}

/// Exit 1 with `message`: the entry is absent, or not as the condition expected.
fn failed(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_FAILED)
}

/// Exit 2 with `message`.
fn usage(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_USAGE)
}

/// Standard base64 (RFC 4648, `+/`) with the `=` padding optional, for the API's binary
/// values (whitespace is dropped before decoding).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_path_segment() {
        assert_eq!(segment("node-1.a_b"), "node-1.a_b");
        assert_eq!(segment("a/b?c"), "a%2Fb%3Fc");
        assert_eq!(segment("50%#+~ é"), "50%25%23%2B%7E%20%C3%A9");
        assert_eq!(
            entry_path("c", "a/b c é").unwrap(),
            "/api/v1/cache/c/a%2Fb%20c%20%C3%A9"
        );
        assert!(entry_path("c", "..").unwrap_err().contains("another key"));
        assert!(entry_path(".", "k").unwrap_err().contains("another cache"));
    }

    #[test]
    fn base64_values_may_omit_padding() {
        for text in ["Zg==", "Zg"] {
            assert_eq!(BASE64.decode(text).unwrap(), b"f", "{text}");
        }
        assert!(BASE64.decode("not base64!").is_err());
    }
}
