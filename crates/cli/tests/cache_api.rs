//! The cluster caches through the admin API (`/api/v1/cache/...`) and through `rota ctl
//! cache`, against a real in-process API server: tokens, text and binary values, keys that
//! need percent-encoding, conditional writes and deletes, expiry, listing, and the answers
//! to malformed requests.

mod common;

use std::{process::Stdio, sync::Arc, time::Duration};

use common::{eventually, Kind, TestStore, ADMIN_TOKEN, BIN, LONG, READ_TOKEN};
use rota::{
    cache::MAX_VALUE,
    store::{CacheOutcome, CacheWrite, Expect, TASK_STATE_CACHE},
};
use rota_admin::{AdminConfig, AdminServer, Api, Secret};
use serde_json::{json, Value};

const CLUSTER: &str = "cache-api";

/// An admin API on `s`'s store, with the admin and the read-only token; no node runs
/// (the cache routes need none).
async fn serve(s: &TestStore) -> AdminServer {
    let status = tokio::sync::watch::channel(rota::NodeStatus {
        incarnation: 0,
        active: false,
        leader: false,
        owned: Vec::new(),
        store_error: None,
        generation: 0,
    })
    .1;
    rota_admin::serve(
        AdminConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_token: Some(Secret::new(ADMIN_TOKEN)),
            read_token: Some(Secret::new(READ_TOKEN)),
            tls: None,
        },
        Api::new(
            s.store.clone(),
            CLUSTER,
            "api-1",
            status,
            Arc::new(rota::metrics::Metrics::default()),
        ),
    )
    .await
    .unwrap()
}

/// An answer: status, `ETag`, and the JSON body (`null` if it is not JSON).
struct Answer {
    status: u16,
    etag: Option<String>,
    body: Value,
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {} {}", self.status, self.body)
    }
}

impl Answer {
    fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }
}

/// A client of the API with one token (or none).
struct Client {
    base: String,
    token: Option<&'static str>,
    http: reqwest::Client,
}

impl Client {
    fn new(base: &str, token: Option<&'static str>) -> Client {
        Client {
            base: base.to_string(),
            token,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Answer {
        let url = format!("{}{path}", self.base);
        let method: reqwest::Method = method.parse().unwrap();
        let mut req = self.http.request(method.clone(), &url);
        if let Some(t) = self.token {
            req = req.bearer_auth(t);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = resp.bytes().await.unwrap();
        Answer {
            status,
            etag,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, &[], None).await
    }

    async fn put(&self, path: &str, value: impl AsRef<[u8]>) -> Answer {
        self.send("PUT", path, &[], Some(value.as_ref().to_vec()))
            .await
    }

    /// An unconditional write that must succeed; the new version.
    async fn put_ok(&self, path: &str, value: impl AsRef<[u8]>) -> i64 {
        let a = self.put(path, value).await;
        assert_eq!(a.status, 200, "PUT {path}: {a}");
        a.body["version"].as_i64().unwrap()
    }

    async fn delete(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.send("DELETE", path, headers, None).await
    }
}

/// Every byte but unreserved ones as `%XX`: one path segment or query value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The path of an entry.
fn entry(cache: &str, key: &str) -> String {
    format!("/api/v1/cache/{}/{}", encode(cache), encode(key))
}

fn keys_of(a: &Answer) -> Vec<&str> {
    a.body["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("no keys in {a}"))
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect()
}

async fn the_cache_api_reads_writes_and_refuses(kind: Kind) {
    let s = TestStore::new(kind).await;
    let server = serve(&s).await;
    let base = format!("http://{}", server.local_addr());
    let (anonymous, wrong, reader, admin) = (
        Client::new(&base, None),
        Client::new(&base, Some("admin-token-0123456789abcdeX")),
        Client::new(&base, Some(READ_TOKEN)),
        Client::new(&base, Some(ADMIN_TOKEN)),
    );

    // Tokens: reads need one, writes the admin token.
    let greeting = entry("app", "greeting");
    for (client, method) in [(&anonymous, "GET"), (&anonymous, "PUT"), (&wrong, "GET")] {
        let a = client.send(method, &greeting, &[], None).await;
        assert_eq!(a.status, 401, "{method}: {a}");
    }
    let a = anonymous.get("/api/v1/cache/app").await;
    assert_eq!(a.status, 401, "{a}");
    for method in ["PUT", "DELETE"] {
        let a = reader
            .send(method, &greeting, &[], Some(b"x".to_vec()))
            .await;
        assert_eq!(a.status, 403, "{method}: {a}");
        assert!(a.error().contains("read-only"), "{a}");
    }
    let a = reader.get(&greeting).await;
    assert_eq!(a.status, 404, "the reader may look: {a}");
    assert!(a.error().contains("no entry `greeting`"), "{a}");

    // Text round trip.
    assert_eq!(admin.put_ok(&greeting, "hello").await, 1);
    let a = reader.get(&greeting).await;
    assert_eq!(a.status, 200, "{a}");
    assert_eq!(
        a.body,
        json!({"cache": "app", "key": "greeting", "version": 1, "expires_at_ms": null,
               "encoding": "utf-8", "value": "hello"})
    );
    assert_eq!(a.etag.as_deref(), Some("\"1\""));
    assert_eq!(admin.put_ok(&greeting, "hello again").await, 2);
    assert_eq!(reader.get(&greeting).await.body["value"], "hello again");
    // The empty value is a value.
    let empty = entry("app", "empty");
    admin.put_ok(&empty, "").await;
    assert_eq!(reader.get(&empty).await.body["value"], "");

    // Binary round trip: base64 in the answer.
    let binary = entry("app", "binary");
    admin.put_ok(&binary, [0u8, 0xff, 0xfe, 0x01, 0x80]).await;
    let a = reader.get(&binary).await;
    assert_eq!(
        (a.body["encoding"].as_str(), a.body["value"].as_str()),
        (Some("base64"), Some("AP/+AYA=")),
        "{a}"
    );
    let stored = s
        .store
        .cache_get(CLUSTER, "app", "binary")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.value, [0u8, 0xff, 0xfe, 0x01, 0x80]);

    // Keys that need percent-encoding, each one path segment.
    let odd = [
        "a/b/c",
        "with space",
        "clé ✓ 日本",
        "100%",
        "q?x=1&y#z",
        "+plus",
        "..dots..",
    ];
    for key in odd {
        admin.put_ok(&entry("odd", key), key).await;
    }
    for key in odd {
        let a = reader.get(&entry("odd", key)).await;
        assert_eq!(
            (a.status, a.body["key"].as_str(), a.body["value"].as_str()),
            (200, Some(key), Some(key)),
            "{a}"
        );
        let stored = s.store.cache_get(CLUSTER, "odd", key).await.unwrap();
        assert_eq!(stored.map(|e| e.value), Some(key.as_bytes().to_vec()));
    }
    let mut sorted = odd.to_vec();
    sorted.sort();
    assert_eq!(keys_of(&reader.get("/api/v1/cache/odd").await), sorted);
    // A `+` in a path is itself; in a query value, a space.
    admin.put_ok("/api/v1/cache/odd/x+y", "plus").await;
    let stored = s.store.cache_get(CLUSTER, "odd", "x+y").await.unwrap();
    assert_eq!(stored.map(|e| e.value), Some(b"plus".to_vec()));
    let a = reader.get("/api/v1/cache/odd?prefix=with+sp").await;
    assert_eq!(keys_of(&a), ["with space"], "{a}");

    // Conditional writes.
    let counter = entry("app", "counter");
    let a = admin
        .send(
            "PUT",
            &counter,
            &[("if-none-match", "*")],
            Some(b"1".to_vec()),
        )
        .await;
    assert_eq!((a.status, &a.body["version"]), (200, &json!(1)), "{a}");
    let a = admin
        .send(
            "PUT",
            &counter,
            &[("if-none-match", "*")],
            Some(b"x".to_vec()),
        )
        .await;
    assert_eq!(
        (a.status, &a.body["current_version"], &a.body["status"]),
        (409, &json!(1), &json!(409)),
        "{a}"
    );
    assert!(a.error().contains("exists at version 1"), "{a}");
    let a = admin
        .send("PUT", &counter, &[("if-match", "7")], Some(b"x".to_vec()))
        .await;
    assert_eq!(
        (a.status, &a.body["current_version"]),
        (409, &json!(1)),
        "{a}"
    );
    assert!(a.error().contains("not 7"), "{a}");
    assert_eq!(reader.get(&counter).await.body["value"], "1", "unchanged");
    let a = admin
        .send("PUT", &counter, &[("if-match", "1")], Some(b"2".to_vec()))
        .await;
    assert_eq!((a.status, &a.body["version"]), (200, &json!(2)), "{a}");
    // The ETag of a GET is good for If-Match.
    let tag = reader.get(&counter).await.etag.unwrap();
    let a = admin
        .send("PUT", &counter, &[("if-match", &tag)], Some(b"3".to_vec()))
        .await;
    assert_eq!((a.status, &a.body["version"]), (200, &json!(3)), "{a}");

    // Deletes, with and without If-Match.
    let a = admin.delete(&counter, &[("if-match", "2")]).await;
    assert_eq!(
        (a.status, &a.body["current_version"]),
        (409, &json!(3)),
        "{a}"
    );
    assert_eq!(reader.get(&counter).await.status, 200, "still there");
    let a = admin.delete(&counter, &[("if-match", "3")]).await;
    assert_eq!(
        (a.status, &a.body["deleted"], &a.body["version"]),
        (200, &json!(true), &json!(4)),
        "{a}"
    );
    assert_eq!(reader.get(&counter).await.status, 404);
    let a = admin.delete(&counter, &[("if-match", "4")]).await;
    assert_eq!(
        (a.status, &a.body["current_version"]),
        (409, &Value::Null),
        "nothing live to delete: {a}"
    );
    assert!(a.error().contains("nothing to delete"), "{a}");
    let a = admin.delete(&greeting, &[]).await;
    assert_eq!((a.status, &a.body["deleted"]), (200, &json!(true)), "{a}");
    let deleted_at = a.body["version"].as_i64().unwrap();
    assert!(deleted_at > 2, "{a}");
    let a = admin.delete(&greeting, &[]).await;
    assert_eq!(
        (a.status, &a.body["deleted"], &a.body["version"]),
        (200, &json!(false), &Value::Null),
        "{a}"
    );
    // Versions only grow, deletes included: a new entry does not reuse one.
    let a = admin
        .send(
            "PUT",
            &greeting,
            &[("if-none-match", "*")],
            Some(b"back".to_vec()),
        )
        .await;
    assert_eq!(a.status, 200, "{a}");
    assert!(a.body["version"].as_i64().unwrap() > deleted_at, "{a}");

    // A TTL makes the entry vanish, by store time.
    let brief = entry("app", "brief");
    let a = admin
        .send(
            "PUT",
            &format!("{brief}?ttl=400ms"),
            &[],
            Some(b"soon gone".to_vec()),
        )
        .await;
    assert_eq!(a.status, 200, "{a}");
    let a = reader.get(&brief).await;
    // It may be gone already on a slow machine; if not, it says when it goes.
    if a.status == 200 {
        assert!(a.body["expires_at_ms"].as_i64().is_some(), "{a}");
    }
    eventually("the entry with a TTL expires", LONG, None, || async {
        (reader.get(&brief).await.status == 404).then_some(())
    })
    .await;
    let listed = reader.get("/api/v1/cache/app").await;
    assert!(!keys_of(&listed).contains(&"brief"), "{listed}");
    let a = admin
        .send(
            "PUT",
            &format!("{brief}?ttl=1h"),
            &[],
            Some(b"later".to_vec()),
        )
        .await;
    assert_eq!(a.status, 200, "{a}");
    let a = reader.get(&brief).await;
    let now = s.store.now_ms().await.unwrap();
    let expires = a.body["expires_at_ms"].as_i64().unwrap();
    assert!(
        (now + 3_500_000..=now + 3_600_000).contains(&expires),
        "expires in an hour: {a}"
    );

    // Listing: by prefix, in order, limited.
    for key in ["list/b", "list/a", "list/c", "listing", "other"] {
        admin.put_ok(&entry("listed", key), "x").await;
    }
    let a = reader
        .get(&format!("/api/v1/cache/listed?prefix={}", encode("list/")))
        .await;
    assert_eq!(keys_of(&a), ["list/a", "list/b", "list/c"], "{a}");
    assert_eq!(a.body["truncated"], false, "{a}");
    let a = reader
        .get("/api/v1/cache/listed?prefix=list/&limit=2")
        .await;
    assert_eq!(keys_of(&a), ["list/a", "list/b"], "{a}");
    assert_eq!(
        (&a.body["truncated"], &a.body["cache"]),
        (&json!(true), &json!("listed"))
    );
    let a = reader.get("/api/v1/cache/listed").await;
    assert_eq!(
        keys_of(&a),
        ["list/a", "list/b", "list/c", "listing", "other"]
    );
    assert_eq!(
        keys_of(&reader.get("/api/v1/cache/nothing-here").await),
        [] as [&str; 0]
    );

    // The task-state cache reads like any other, and an operator may write it.
    s.store
        .cache_put(
            CLUSTER,
            &CacheWrite {
                cache: TASK_STATE_CACHE,
                key: "nightly",
                value: br#"{"cursor": 41}"#,
                ttl_ms: None,
                expect: Expect::Any,
            },
        )
        .await
        .unwrap();
    let state = entry(TASK_STATE_CACHE, "nightly");
    let a = reader.get(&state).await;
    assert_eq!(a.body["value"], r#"{"cursor": 41}"#, "{a}");
    let a = admin
        .send(
            "PUT",
            &state,
            &[("if-match", "1")],
            Some(br#"{"cursor": 0}"#.to_vec()),
        )
        .await;
    assert_eq!(a.status, 200, "{a}");
    let stored = s
        .store
        .cache_get(CLUSTER, TASK_STATE_CACHE, "nightly")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.value, br#"{"cursor": 0}"#);

    // The largest value passes (well over the 64 KiB of other bodies); one byte more is 413.
    let large = entry("app", "large");
    let a = admin.put(&large, vec![b'v'; MAX_VALUE]).await;
    assert_eq!(a.status, 200, "{a}");
    let a = admin.put(&large, vec![b'w'; MAX_VALUE + 1]).await;
    assert_eq!(a.status, 413, "{a}");
    assert!(a.error().contains("cache entry holds"), "{a}");
    let stored = s.store.cache_get(CLUSTER, "app", "large").await.unwrap();
    assert_eq!(stored.unwrap().value.len(), MAX_VALUE);

    // Malformed requests: each answer names the problem, and nothing is written.
    let long_key = "k".repeat(256);
    let cases: Vec<Case> = vec![
        (
            "PUT",
            "/api/v1/cache/bad%20name/k".into(),
            vec![],
            400,
            "`bad name` is not a valid name",
        ),
        (
            "GET",
            "/api/v1/cache/bad!name".into(),
            vec![],
            400,
            "not a valid name",
        ),
        (
            "PUT",
            "/api/v1/cache/app/a%0Ab".into(),
            vec![],
            400,
            "not a valid key",
        ),
        (
            "PUT",
            entry("app", &long_key),
            vec![],
            400,
            "1 to 255 characters",
        ),
        (
            "PUT",
            "/api/v1/cache/app/50%".into(),
            vec![],
            400,
            "two hex digits",
        ),
        (
            "PUT",
            "/api/v1/cache/app/%FF".into(),
            vec![],
            400,
            "not UTF-8",
        ),
        (
            "PUT",
            format!("{}?ttl=soon", entry("app", "t")),
            vec![],
            400,
            "`soon` is not a time to live",
        ),
        (
            "PUT",
            format!("{}?ttl=0s", entry("app", "t")),
            vec![],
            400,
            "query `ttl` = `0s`",
        ),
        (
            "PUT",
            format!("{}?ttl=5000d", entry("app", "t")),
            vec![],
            400,
            "longer than 3650d",
        ),
        (
            "PUT",
            format!("{}?tll=5s", entry("app", "t")),
            vec![],
            400,
            "`tll` is not known",
        ),
        (
            "PUT",
            entry("app", "t"),
            vec![("if-match", "abc")],
            400,
            "`If-Match` = `abc` is not a version",
        ),
        (
            "PUT",
            entry("app", "t"),
            vec![("if-match", "*")],
            400,
            "`If-Match` = `*` is not supported",
        ),
        (
            "PUT",
            entry("app", "t"),
            vec![("if-none-match", "\"3\"")],
            400,
            "If-None-Match",
        ),
        (
            "PUT",
            entry("app", "t"),
            vec![("if-match", "1"), ("if-none-match", "*")],
            409,
            "can never both hold",
        ),
        (
            "DELETE",
            entry("app", "t"),
            vec![("if-none-match", "*")],
            400,
            "does not apply to a delete",
        ),
        (
            "DELETE",
            entry("app", "t"),
            vec![("if-match", "-1")],
            400,
            "If-Match",
        ),
        (
            "GET",
            "/api/v1/cache/app?limit=0".into(),
            vec![],
            400,
            "limit",
        ),
        (
            "GET",
            "/api/v1/cache/app?limit=1001".into(),
            vec![],
            400,
            "limit",
        ),
        (
            "GET",
            "/api/v1/cache/app?prefix=%E2".into(),
            vec![],
            400,
            "not UTF-8",
        ),
        ("POST", entry("app", "t"), vec![], 405, "not allowed"),
    ];
    for (method, path, headers, want, says) in &cases {
        let a = admin
            .send(method, path, headers, Some(b"value".to_vec()))
            .await;
        assert_eq!(a.status, *want, "{method} {path} {headers:?}: {a}");
        assert!(
            a.error().contains(says),
            "{method} {path} {headers:?}: `{}` should say `{says}`",
            a.error()
        );
    }
    let a = reader.get("/api/v1/cache/app?prefix=t").await;
    assert_eq!(
        keys_of(&a),
        [] as [&str; 0],
        "nothing malformed was written: {a}"
    );

    // The OpenAPI document describes the routes.
    let doc = reader.get("/api/v1/openapi.json").await.body;
    let methods = doc["paths"]["/api/v1/cache/{cache}/{key}"]
        .as_object()
        .unwrap();
    for m in ["get", "put", "delete"] {
        assert!(methods.contains_key(m), "{m}");
    }
    server.shutdown().await;
}

/// A malformed request: method, path, headers, and the status and words of the answer.
type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, u16, &'a str);

/// `rota ctl cache`: what it printed and its exit code.
struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}, stdout {:?}, stderr {:?}",
            self.code,
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        )
    }
}

impl Run {
    fn text(&self) -> String {
        String::from_utf8(self.stdout.clone()).unwrap()
    }
}

async fn ctl(base: &str, token: &str, args: &[&str], stdin: Option<&[u8]>) -> Run {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(BIN)
        .args(["ctl", "cache"])
        .args(args)
        .env("ROTA_URL", base)
        .env("ROTA_TOKEN", token)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input).await.unwrap();
        drop(pipe);
    }
    let out = tokio::time::timeout(LONG, child.wait_with_output())
        .await
        .expect("rota ctl finishes")
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rota_ctl_cache_puts_gets_lists_and_deletes() {
    let s = TestStore::sqlite().await;
    let server = serve(&s).await;
    let base = format!("http://{}", server.local_addr());
    let run = |args: &'static [&'static str]| {
        let base = base.clone();
        async move { ctl(&base, ADMIN_TOKEN, args, None).await }
    };
    let key = "dir/file name ✓";

    let r = run(&["put", "app", "dir/file name ✓", "hello"]).await;
    assert_eq!((r.code, r.text().as_str()), (0, "version 1\n"), "{r}");
    let r = run(&["get", "app", "dir/file name ✓"]).await;
    assert_eq!((r.code, r.stdout.as_slice()), (0, &b"hello"[..]), "{r}");
    let stored = s.store.cache_get(CLUSTER, "app", key).await.unwrap();
    assert_eq!(stored.map(|e| e.value), Some(b"hello".to_vec()));

    // Any bytes, from a file or standard input, come back unchanged.
    let bytes: Vec<u8> = (0..=255u8).rev().chain(0..=255).collect();
    let file = s.dir.path().join("value.bin");
    std::fs::write(&file, &bytes).unwrap();
    let path = file.to_str().unwrap();
    let r = ctl(
        &base,
        ADMIN_TOKEN,
        &["put", "app", "bin", "--file", path],
        None,
    )
    .await;
    assert_eq!(r.code, 0, "{r}");
    let r = run(&["get", "app", "bin"]).await;
    assert_eq!((r.code, &r.stdout), (0, &bytes), "{r}");
    let r = ctl(
        &base,
        ADMIN_TOKEN,
        &["put", "app", "piped", "--stdin", "--ttl", "1h"],
        Some(b"from\nstdin\n"),
    )
    .await;
    assert_eq!(r.code, 0, "{r}");
    let r = run(&["get", "app", "piped"]).await;
    assert_eq!(r.stdout, b"from\nstdin\n", "{r}");
    let r = run(&["--json", "get", "app", "piped"]).await;
    let v: Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(
        (v["encoding"].as_str(), v["version"].as_i64()),
        (Some("utf-8"), Some(1)),
        "{r}"
    );
    assert!(v["expires_at_ms"].as_i64().is_some(), "{r}");

    // Listing.
    let r = run(&["keys", "app"]).await;
    assert_eq!(r.text(), format!("bin\n{key}\npiped\n"), "{r}");
    let r = run(&["keys", "app", "--prefix", "dir/"]).await;
    assert_eq!(r.text(), format!("{key}\n"), "{r}");
    let r = run(&["keys", "app", "--limit", "1"]).await;
    assert_eq!((r.code, r.text().as_str()), (0, "bin\n"), "{r}");
    assert!(r.stderr.contains("more than 1 keys"), "{r}");

    // Absent, and conditions not met: exit 1 with the reason.
    let r = run(&["get", "app", "missing"]).await;
    assert_eq!((r.code, r.stdout.len()), (1, 0), "{r}");
    assert!(r.stderr.contains("no entry `missing`"), "{r}");
    let r = run(&["put", "app", "dir/file name ✓", "x", "--if-absent"]).await;
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stderr.contains("exists at version 1"), "{r}");
    let r = run(&["put", "app", "dir/file name ✓", "x", "--if-version", "5"]).await;
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stderr.contains("at version 1, not 5"), "{r}");
    let r = run(&[
        "put",
        "app",
        "dir/file name ✓",
        "second",
        "--if-version",
        "1",
    ])
    .await;
    assert_eq!((r.code, r.text().as_str()), (0, "version 2\n"), "{r}");
    let r = run(&["del", "app", "dir/file name ✓", "--if-version", "1"]).await;
    assert_eq!(r.code, 1, "{r}");
    assert_eq!(
        run(&["get", "app", "dir/file name ✓"]).await.stdout,
        b"second"
    );
    let r = run(&["del", "app", "dir/file name ✓", "--if-version", "2"]).await;
    assert_eq!(
        (r.code, r.text().as_str()),
        (0, "deleted (version 3)\n"),
        "{r}"
    );
    let r = run(&["del", "app", "dir/file name ✓"]).await;
    assert_eq!(r.code, 0, "{r}");
    assert!(r.text().starts_with("nothing to delete"), "{r}");
    let r = run(&["del", "app", "piped"]).await;
    assert_eq!(
        (r.code, r.text().as_str()),
        (0, "deleted (version 2)\n"),
        "{r}"
    );
    assert_eq!(run(&["get", "app", "piped"]).await.code, 1);

    // The other exit codes, as for the rest of `rota ctl`.
    let r = ctl(&base, READ_TOKEN, &["put", "app", "k", "v"], None).await;
    assert_eq!(r.code, 3, "the read-only token cannot write: {r}");
    let r = ctl(&base, READ_TOKEN, &["get", "app", "bin"], None).await;
    assert_eq!((r.code, &r.stdout), (0, &bytes), "but it can read: {r}");
    let r = run(&["put", "app", "k", "v", "--ttl", "soon"]).await;
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("`soon` is not a time to live"), "{r}");
    let r = run(&["put", "app", "k"]).await;
    assert_eq!(r.code, 2, "no value: {r}");
    let r = run(&["put", "app", "k", "v", "--stdin"]).await;
    assert_eq!(r.code, 2, "two values: {r}");
    let r = run(&["get", "bad name", "k"]).await;
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("not a valid name"), "{r}");
    let r = run(&["get", "app", ".."]).await;
    assert_eq!(r.code, 2, "{r}");
    let unreachable = ctl(
        "http://127.0.0.1:9",
        ADMIN_TOKEN,
        &["get", "app", "bin"],
        None,
    )
    .await;
    assert_eq!(unreachable.code, 4, "{unreachable}");
    server.shutdown().await;
}

on_every_store!(the_cache_api_reads_writes_and_refuses);

/// Writes through the API land where the library reads them, under the same versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_writes_and_library_writes_share_versions() {
    let s = TestStore::sqlite().await;
    let server = serve(&s).await;
    let admin = Client::new(
        &format!("http://{}", server.local_addr()),
        Some(ADMIN_TOKEN),
    );
    let path = entry("shared", "k");
    assert_eq!(admin.put_ok(&path, "from the API").await, 1);
    let outcome = s
        .store
        .cache_put(
            CLUSTER,
            &CacheWrite {
                cache: "shared",
                key: "k",
                value: b"from the library",
                ttl_ms: None,
                expect: Expect::Version(1),
            },
        )
        .await
        .unwrap();
    assert_eq!(outcome, CacheOutcome::Done { version: 2 });
    let a = admin.get(&path).await;
    assert_eq!(
        (a.body["value"].as_str(), a.body["version"].as_i64()),
        (Some("from the library"), Some(2)),
        "{a}"
    );
    server.shutdown().await;
}
