//! The admin API's request decoding, from the first byte: each input is sent as it is over
//! a fresh connection to a real admin server (on 127.0.0.1, over a SQLite store, with an
//! admin token the seeds carry), which must answer or close without a panic. A panic
//! anywhere in the server, in any task, aborts the process (libFuzzer's hook), so the run
//! stops on it. Only what hyper lets through reaches rota's routing, query, header and body
//! decoding; the seeds are well-formed requests for every route.
#![no_main]

use std::{net::SocketAddr, sync::OnceLock, time::Duration};

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Server {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        // The `rota` binary ignores SIGPIPE, as every Rust program's `main` does; libFuzzer's
        // `main` does not, so a write to a connection the other side closed would kill the
        // run instead of failing with EPIPE.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let dir = std::env::temp_dir().join(format!("rota-fuzz-api-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a private directory");
        let addr = runtime.block_on(async {
            let url = format!("sqlite://{}/rota.db", dir.display());
            let store = rota::store::open(&url).await.expect("the store opens");
            let (sender, status) = tokio::sync::watch::channel(rota::NodeStatus {
                incarnation: 1,
                active: true,
                leader: true,
                owned: Vec::new(),
                store_error: None,
                generation: 0,
            });
            // The status never changes: kept for the life of the process.
            std::mem::forget(sender);
            let api = rota_admin::Api::new(store, "fuzz", "node-1", status, Default::default());
            let config = rota_admin::AdminConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                admin_token: Some(rota_admin::Secret::new("fuzz-admin-token")),
                read_token: None,
                tls: None,
            };
            let server = rota_admin::serve(config, api)
                .await
                .expect("the API listens");
            let addr = server.local_addr();
            std::mem::forget(server);
            addr
        });
        Server { runtime, addr }
    })
}

fuzz_target!(|data: &[u8]| {
    let server = server();
    server.runtime.block_on(async {
        let Ok(mut socket) = tokio::net::TcpStream::connect(server.addr).await else {
            panic!("the API no longer accepts connections");
        };
        // Send everything, then end the request stream: the server sees the whole input
        // and then EOF, and must answer or close.
        let _ = socket.write_all(data).await;
        let _ = socket.shutdown().await;
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        // A stream (`/api/v1/stream`) stays open by design: only its head is waited for.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => reply.extend_from_slice(&chunk[..n]),
                }
                if reply.windows(4).any(|w| w == b"\r\n\r\n") && reply.len() > 65_536 {
                    break;
                }
            }
        })
        .await;
        if !reply.is_empty() {
            assert!(
                reply.starts_with(b"HTTP/1.1 ") || reply.starts_with(b"HTTP/1.0 "),
                "not an HTTP answer: {:?}",
                String::from_utf8_lossy(&reply[..reply.len().min(200)])
            );
        }
    });
});
