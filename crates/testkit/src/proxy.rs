//! A TCP proxy between one node and its store's server that can cut the node off (while cut,
//! its connections are dropped and new ones are closed at once, as if the server were down
//! for that node only), sever it (the server's side of every connection closed, the node's
//! side kept open and silent: what a middlebox that drops a session does), or slow it down
//! (every byte delivered a set time after it was sent, both ways, as over a congested link).

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};

pub struct CutProxy {
    port: u16,
    cut: Arc<AtomicBool>,
    /// Set while severed: connections go nowhere, and say nothing.
    severing: Arc<AtomicBool>,
    /// Moves at each sever (live connections let their server side go) ...
    sever: watch::Sender<u64>,
    /// ... and at each heal (silent connections are closed).
    healed: watch::Sender<u64>,
    /// Added one-way latency, ms (0: none).
    delay_ms: Arc<AtomicU64>,
    severed: watch::Sender<u64>,
    accept: JoinHandle<()>,
}

impl CutProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `127.0.0.1:target_port`.
    pub async fn start(target_port: u16) -> std::io::Result<CutProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let cut = Arc::new(AtomicBool::new(false));
        let severing = Arc::new(AtomicBool::new(false));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (severed, _) = watch::channel(0u64);
        let (sever, _) = watch::channel(0u64);
        let (healed, _) = watch::channel(0u64);
        let target: SocketAddr = ([127, 0, 0, 1], target_port).into();
        let accept = {
            let cut = cut.clone();
            let severing = severing.clone();
            let delay_ms = delay_ms.clone();
            let (severed, sever, healed) = (severed.clone(), sever.clone(), healed.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let healed = healed.subscribe();
                    if severing.load(Ordering::SeqCst) {
                        tokio::spawn(blackhole(client, healed));
                        continue;
                    }
                    let mut severed = severed.subscribe();
                    let mut sever = sever.subscribe();
                    let delay_ms = delay_ms.clone();
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(target).await else {
                            return;
                        };
                        let (mut client_in, mut client_out) = client.into_split();
                        let (mut server_in, mut server_out) = server.into_split();
                        let severed_only_server = tokio::select! {
                            _ = pump(&mut client_in, &mut server_out, delay_ms.clone()) => false,
                            _ = pump(&mut server_in, &mut client_out, delay_ms) => false,
                            _ = severed.changed() => false,
                            _ = sever.changed() => true,
                        };
                        drop((server_in, server_out));
                        if severed_only_server {
                            if let Ok(client) = client_in.reunite(client_out) {
                                blackhole(client, healed).await;
                            }
                        }
                    });
                }
            })
        };
        Ok(CutProxy {
            port,
            cut,
            severing,
            sever,
            healed,
            delay_ms,
            severed,
            accept,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Drops every connection through the proxy and refuses new ones until [`CutProxy::heal`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.severed.send_modify(|n| *n += 1);
    }

    /// Closes the server's side of every connection through the proxy (the server sees the
    /// session end) and keeps the node's side open and silent: what the node sends is read
    /// and dropped, nothing comes back. New connections are accepted the same way, never
    /// forwarded. Until [`CutProxy::heal`], which closes the silent connections.
    pub fn sever(&self) {
        self.severing.store(true, Ordering::SeqCst);
        self.sever.send_modify(|n| *n += 1);
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
        self.severing.store(false, Ordering::SeqCst);
        self.healed.send_modify(|n| *n += 1);
    }

    /// From now on every byte, either way, is delivered `latency` after it was read (bytes
    /// already in flight keep the latency they were read with). `Duration::ZERO` ends it.
    pub fn slow(&self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.delay_ms.store(ms, Ordering::SeqCst);
    }
}

/// Copies `from` to `to`, each chunk held until the latency in force when it was read has
/// passed. Order is kept; returns when either side closes.
async fn pump(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    delay_ms: Arc<AtomicU64>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let due =
                        Instant::now() + Duration::from_millis(delay_ms.load(Ordering::SeqCst));
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    };
    let write = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    // The writer drains what was read before the reader saw the end.
    tokio::join!(read, write);
}

/// Reads and drops what `client` sends, answering nothing, until it closes or the proxy
/// heals; then closes it.
async fn blackhole(mut client: TcpStream, mut healed: watch::Receiver<u64>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = client.read(&mut buf) => {
                if matches!(read, Ok(0) | Err(_)) {
                    return;
                }
            }
            _ = healed.changed() => return,
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.severed.send_modify(|n| *n += 1);
    }
}
