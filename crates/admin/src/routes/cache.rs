//! The cluster's caches, `/api/v1/cache/{cache}` (keys) and `/api/v1/cache/{cache}/{key}`
//! (one entry: `GET`, `PUT`, `DELETE`).

use std::{borrow::Cow, collections::BTreeMap};

use base64::prelude::{Engine as _, BASE64_STANDARD};
use hyper::{HeaderMap, Method, Response, StatusCode};
use serde_json::json;

use super::reply::{json_response, limit, query_param, Reply};
use crate::api::{Api, Body, Problem};
use rota::{
    store::{CacheOutcome, CacheWrite, Expect},
    Error,
};

/// A cache's keys.
pub(super) const CACHE_KEYS: &str = "/api/v1/cache/{cache}";
/// One entry of a cache: read, written with its value as the body, deleted.
pub(super) const CACHE_ENTRY: &str = "/api/v1/cache/{cache}/{key}";

// The cluster's caches: entries read, written and deleted by key, with versions for
// compare-and-set (see `rota::cache`).

/// `/api/v1/cache/...`: `{cache}` and `{key}` arrive percent-encoded, one path segment each.
pub(super) async fn cache_request(
    api: &Api,
    method: &Method,
    template: &str,
    params: &BTreeMap<&'static str, String>,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Reply {
    let raw = |name: &str| params.get(name).map_or("", String::as_str);
    let cache = percent_decode("cache", raw("cache"), false)?;
    rota::cache::validate_cache_name(&cache).map_err(invalid)?;
    if template == CACHE_KEYS {
        only_query(query, &["prefix", "limit"])?;
        let prefix = match query_param(query, "prefix") {
            Some(p) => percent_decode("query `prefix`", p, true)?,
            None => String::new(),
        };
        let limit = limit(query, 100, 1000)?;
        // One more than asked says whether there are more.
        let mut keys = api
            .store
            .cache_keys(&api.cluster, &cache, &prefix, limit + 1)
            .await?;
        let truncated = keys.len() as i64 > limit;
        keys.truncate(limit as usize);
        return Ok(json_response(
            StatusCode::OK,
            &json!({"cache": cache, "prefix": prefix, "keys": keys, "truncated": truncated}),
        ));
    }
    let key = percent_decode("key", raw("key"), false)?;
    rota::cache::validate_key(&key).map_err(invalid)?;
    let store = &api.store;
    match *method {
        Method::GET => {
            only_query(query, &[])?;
            let Some(entry) = store.cache_get(&api.cluster, &cache, &key).await? else {
                return Ok(json_response(
                    StatusCode::NOT_FOUND,
                    &json!({
                        "error": format!("cache `{cache}` has no entry `{key}` (never written, deleted, or expired)"),
                        "status": 404,
                        "cache": cache,
                        "key": key,
                    }),
                ));
            };
            let (encoding, value) = match std::str::from_utf8(&entry.value) {
                Ok(text) => ("utf-8", text.to_string()),
                Err(_) => ("base64", BASE64_STANDARD.encode(&entry.value)),
            };
            Ok(with_etag(
                json_response(
                    StatusCode::OK,
                    &json!({
                        "cache": cache,
                        "key": key,
                        "version": entry.version,
                        "expires_at_ms": entry.expires_at_ms,
                        "encoding": encoding,
                        "value": value,
                    }),
                ),
                entry.version,
            ))
        }
        Method::PUT => {
            only_query(query, &["ttl"])?;
            let ttl_ms = match query_param(query, "ttl") {
                Some(t) => Some(parse_ttl(&percent_decode("query `ttl`", t, true)?)?),
                None => None,
            };
            let expect = expectation(headers, true)?;
            let write = CacheWrite {
                cache: &cache,
                key: &key,
                value: body,
                ttl_ms,
                expect,
            };
            match store.cache_put(&api.cluster, &write).await? {
                CacheOutcome::Done { version } => Ok(with_etag(
                    json_response(
                        StatusCode::OK,
                        &json!({"cache": cache, "key": key, "version": version}),
                    ),
                    version,
                )),
                CacheOutcome::Conflict { current } => {
                    Ok(conflict(&cache, &key, expect, current, true))
                }
            }
        }
        Method::DELETE => {
            only_query(query, &[])?;
            let expect = expectation(headers, false)?;
            // The store changes nothing, and answers version 0, when nothing live is there.
            let outcome = store
                .cache_delete(&api.cluster, &cache, &key, expect)
                .await?;
            match outcome {
                CacheOutcome::Done { version: 0 } => Ok(json_response(
                    StatusCode::OK,
                    &json!({"cache": cache, "key": key, "deleted": false, "version": null}),
                )),
                CacheOutcome::Done { version } => Ok(json_response(
                    StatusCode::OK,
                    &json!({"cache": cache, "key": key, "deleted": true, "version": version}),
                )),
                CacheOutcome::Conflict { current } => {
                    Ok(conflict(&cache, &key, expect, current, false))
                }
            }
        }
        _ => Err(Problem(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on a cache entry"),
        )),
    }
}

/// 409: the entry was not as the request's condition said; nothing changed.
fn conflict(
    cache: &str,
    key: &str,
    expect: Expect,
    current: Option<i64>,
    write: bool,
) -> Response<Body> {
    let message = match (expect, current) {
        (Expect::Absent, Some(v)) => format!(
            "cache `{cache}`, key `{key}` exists at version {v} (If-None-Match: * writes only an absent key); leave the header out to overwrite, or send If-Match: {v}"
        ),
        (Expect::Version(want), Some(v)) => format!(
            "cache `{cache}`, key `{key}` is at version {v}, not {want} (If-Match); read it again and retry"
        ),
        (Expect::Version(want), None) if write => format!(
            "cache `{cache}` has no live entry `{key}`, so not version {want} (If-Match); send If-None-Match: * to create it"
        ),
        (Expect::Version(want), None) => format!(
            "cache `{cache}` has no live entry `{key}`, so not version {want} (If-Match); nothing to delete"
        ),
        (_, current) => format!(
            "cache `{cache}`, key `{key}` was not as expected (current version: {current:?}); read it again and retry"
        ),
    };
    json_response(
        StatusCode::CONFLICT,
        &json!({"error": message, "status": 409, "current_version": current}),
    )
}

/// What a write expects to find, from `If-Match: <version>` or (writes only)
/// `If-None-Match: *`.
fn expectation(headers: &HeaderMap, write: bool) -> Result<Expect, Problem> {
    let header = |name: hyper::header::HeaderName| -> Result<Option<String>, Problem> {
        match headers.get(&name) {
            None => Ok(None),
            Some(v) => v.to_str().map(|t| Some(t.trim().to_string())).map_err(|_| {
                Problem::bad(format!(
                    "header `{name}` is not text; send a version number (If-Match: 3) or `*` (If-None-Match: *)"
                ))
            }),
        }
    };
    let if_match = header(hyper::header::IF_MATCH)?;
    let if_none_match = header(hyper::header::IF_NONE_MATCH)?;
    match (if_match, if_none_match) {
        // Each is a precondition (RFC 9110 13.2.2): an entry at a version exists, so `*`
        // cannot also find none. Well-formed, never met: a conflict like any unmet one.
        (Some(_), Some(_)) => Err(Problem(
            StatusCode::CONFLICT,
            "headers `If-Match` and `If-None-Match: *` are both given, and can never both hold; send one: If-Match: <version> to compare and set, If-None-Match: * to create only".into(),
        )),
        (Some(m), None) => {
            // Also as an entity tag: the ETag of a GET is the version in quotes. Digits
            // only, from 1, as the document's pattern says (no sign, no leading zero).
            let bare = m
                .strip_prefix('"')
                .and_then(|r| r.strip_suffix('"'))
                .unwrap_or(&m);
            let digits = (1..=18).contains(&bare.len())
                && bare.bytes().all(|b| b.is_ascii_digit())
                && !bare.starts_with('0');
            match bare.parse::<i64>() {
                Ok(v) if digits => Ok(Expect::Version(v)),
                _ if bare == "*" => Err(Problem::bad(
                    "header `If-Match` = `*` is not supported; send the entry's version (If-Match: 3), as GET answers it",
                )),
                _ => Err(Problem::bad(format!(
                    "header `If-Match` = `{m}` is not a version; send the entry's version, a whole number from 1 (If-Match: 3), as GET answers it"
                ))),
            }
        }
        (None, Some(n)) if !write => Err(Problem::bad(format!(
            "header `If-None-Match` = `{n}` does not apply to a delete; send If-Match: <version> to delete only that version"
        ))),
        (None, Some(n)) if n == "*" => Ok(Expect::Absent),
        (None, Some(n)) => Err(Problem::bad(format!(
            "header `If-None-Match` = `{n}` is not understood; send If-None-Match: * to write only if the key is absent, or If-Match: <version> to compare and set"
        ))),
        (None, None) => Ok(Expect::Any),
    }
}

/// A `ttl` query value (`30s`, `5m`) in ms: from 1 ms to
/// [`rota::core::schedule::MAX_DURATION`].
fn parse_ttl(text: &str) -> Result<i64, Problem> {
    let fix = "give a time to live from 1ms to 3650d, e.g. ttl=30s";
    // Exactly as the document's pattern: digits from 1 without a leading zero, then a unit.
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let leading_zero = digits > 1 && text.starts_with('0');
    if digits == 0 || leading_zero || !["ms", "s", "m", "h", "d"].contains(&&text[digits..]) {
        return Err(Problem::bad(format!(
            "query `ttl` = `{text}` is not a time to live; {fix}"
        )));
    }
    let d = rota::core::schedule::parse_duration(text)
        .map_err(|e| Problem::bad(format!("query `ttl`: {e}; {fix}")))?;
    // At most MAX_DURATION: no overflow.
    match d.as_millis() as i64 {
        0 => Err(Problem::bad(format!(
            "query `ttl` = `{text}` is no time at all; {fix}, or leave `ttl` out to keep the entry until it is deleted"
        ))),
        ms => Ok(ms),
    }
}

/// Refuses query parameters other than `known`: a misspelt `ttl` must not write an entry
/// that never expires.
fn only_query(query: &str, known: &[&str]) -> Result<(), Problem> {
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let name = pair.split_once('=').map_or(pair, |(k, _)| k);
        if !known.contains(&name) {
            let fix = match known {
                [] => "this request takes no query parameters".to_string(),
                _ => format!("use {}", known.join(", ")),
            };
            return Err(Problem::bad(format!(
                "query parameter `{name}` is not known here; {fix}"
            )));
        }
    }
    Ok(())
}

/// A library input error (it names the field, the value and the fix) as a 400.
fn invalid(e: Error) -> Problem {
    Problem::bad(e.to_string())
}

/// The response with `ETag: "<version>"` (`If-Match` takes it back).
fn with_etag(mut response: Response<Body>, version: i64) -> Response<Body> {
    if let Ok(tag) = format!("\"{version}\"").parse() {
        response.headers_mut().insert(hyper::header::ETAG, tag);
    }
    response
}

/// Decodes `%XX` escapes (and `+` as a space, in query values) into UTF-8 text. A `%`
/// without two hex digits is refused (`percent_decode_str` would keep it as it is).
fn percent_decode(field: &str, raw: &str, plus_is_space: bool) -> Result<String, Problem> {
    let bytes = raw.as_bytes();
    let stray_percent = bytes.iter().enumerate().any(|(i, &b)| {
        b == b'%'
            && !matches!(bytes.get(i + 1..i + 3), Some([hi, lo])
                if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit())
    });
    if stray_percent {
        return Err(Problem::bad(format!(
            "{field}: `{raw}` has a `%` not followed by two hex digits; percent-encode it (`%` is %25)"
        )));
    }
    // `+` becomes a space before the escapes are decoded, so `%2B` stays a `+`.
    let spaced = match plus_is_space {
        true => Cow::Owned(raw.replace('+', " ")),
        false => Cow::Borrowed(raw),
    };
    match percent_encoding::percent_decode_str(&spaced).decode_utf8() {
        Ok(text) => Ok(text.into_owned()),
        Err(_) => Err(Problem::bad(format!(
            "{field}: `{raw}` is not UTF-8 once decoded; percent-encode the UTF-8 bytes of the text"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::route;

    #[test]
    fn path_segments_and_query_values_are_percent_decoded() {
        let decode = |raw, plus| percent_decode("key", raw, plus).map_err(|p| p.1);
        assert_eq!(decode("a%2Fb%20c", false).unwrap(), "a/b c");
        assert_eq!(decode("caf%C3%A9+x", false).unwrap(), "café+x");
        assert_eq!(decode("caf%c3%a9+x", true).unwrap(), "café x");
        assert_eq!(decode("1%2B1+2", true).unwrap(), "1+1 2");
        assert_eq!(decode("plain", false).unwrap(), "plain");
        assert!(decode("50%", false).unwrap_err().contains("two hex digits"));
        assert!(decode("%zz", false).unwrap_err().contains("two hex digits"));
        assert!(decode("%+1", false).unwrap_err().contains("two hex digits"));
        assert!(decode("%25%", false)
            .unwrap_err()
            .contains("two hex digits"));
        assert!(decode("%FF", false).unwrap_err().contains("not UTF-8"));
    }

    #[test]
    fn ttls_are_bounded_durations() {
        assert_eq!(parse_ttl("30s").ok(), Some(30_000));
        assert_eq!(parse_ttl("250ms").ok(), Some(250));
        assert_eq!(parse_ttl("3650d").ok(), Some(3650 * 86_400_000));
        for bad in ["0s", "3651d", "soon", "5", "99999999999999999999999d", "1y"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
        assert!(parse_ttl("0s")
            .map_err(|p| p.1)
            .unwrap_err()
            .contains("ttl"));
    }

    #[test]
    fn conditions_come_from_if_match_and_if_none_match() {
        let with = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap());
            }
            h
        };
        let expect = |pairs: &[(&'static str, &str)], write| {
            expectation(&with(pairs), write).map_err(|p| p.1)
        };
        assert_eq!(expect(&[], true).ok(), Some(Expect::Any));
        assert_eq!(
            expect(&[("if-match", "3")], true).ok(),
            Some(Expect::Version(3))
        );
        assert_eq!(
            expect(&[("if-match", "\"7\"")], false).ok(),
            Some(Expect::Version(7))
        );
        assert_eq!(
            expect(&[("if-none-match", "*")], true).ok(),
            Some(Expect::Absent)
        );
        assert!(expect(&[("if-none-match", "*")], false).is_err());
        assert!(expect(&[("if-match", "0")], true)
            .unwrap_err()
            .contains("If-Match"));
        assert!(expect(&[("if-match", "*")], true)
            .unwrap_err()
            .contains("not supported"));
        assert!(expect(&[("if-none-match", "3")], true).is_err());
        assert!(expect(&[("if-match", "3"), ("if-none-match", "*")], true).is_err());
    }

    #[test]
    fn cache_routes_take_their_parameters_from_the_path() {
        let (template, params) = route(&Method::PUT, "/api/v1/cache/c/a%2Fb").unwrap();
        assert_eq!(template, CACHE_ENTRY);
        assert_eq!(params["cache"], "c");
        assert_eq!(params["key"], "a%2Fb");
        let (template, params) = route(&Method::GET, "/api/v1/cache/c").unwrap();
        assert_eq!((template, params["cache"].as_str()), (CACHE_KEYS, "c"));
        assert!(route(&Method::POST, "/api/v1/cache/c/k").is_none());
        assert!(only_query("ttl=5s", &["ttl"]).is_ok());
        assert!(only_query("tll=5s", &["ttl"])
            .map_err(|p| p.1)
            .unwrap_err()
            .contains("`tll`"));
    }
}
