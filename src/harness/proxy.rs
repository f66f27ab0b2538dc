//! A TCP proxy between one node and its database that can cut the node off: while cut, its
//! connections are dropped and new ones are closed at once, as if the database were down
//! for that node only.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

pub struct CutProxy {
    port: u16,
    cut: Arc<AtomicBool>,
    severed: watch::Sender<u64>,
    accept: JoinHandle<()>,
}

impl CutProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `127.0.0.1:target_port`.
    pub async fn start(target_port: u16) -> std::io::Result<CutProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let cut = Arc::new(AtomicBool::new(false));
        let (severed, _) = watch::channel(0u64);
        let target: SocketAddr = ([127, 0, 0, 1], target_port).into();
        let accept = {
            let cut = cut.clone();
            let severed = severed.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let mut severed = severed.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(target).await else {
                            return;
                        };
                        let mut client = client;
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = severed.changed() => {}
                        }
                    });
                }
            })
        };
        Ok(CutProxy {
            port,
            cut,
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

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.severed.send_modify(|n| *n += 1);
    }
}
