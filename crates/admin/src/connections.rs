//! What clients can hold on the admin API, before any token is checked: a bounded number of
//! connections, each with a deadline for its TLS handshake and for every request's headers
//! (hyper's header timeout also runs while a kept-alive connection waits for its next
//! request). At the cap, a new connection closes the oldest one that is not inside a request,
//! so a flood of idle or half-open connections cannot lock out a health check.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio_util::sync::CancellationToken;

/// Connections open at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Time for a TLS handshake, and for a request's headers once the server waits for them.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (out of file descriptors): no busy loop.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The open connections, oldest first.
#[derive(Default)]
pub struct Connections {
    inner: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    next: u64,
    open: BTreeMap<u64, Slot>,
}

struct Slot {
    /// Requests in progress on it (a server-sent event stream stays in progress).
    busy: Arc<AtomicUsize>,
    close: CancellationToken,
}

/// One connection's place: freed when dropped.
pub struct Admitted {
    id: u64,
    connections: Arc<Connections>,
    pub busy: Arc<AtomicUsize>,
    pub close: CancellationToken,
}

impl Connections {
    /// A place for a new connection, closing the oldest idle one at the cap; `None` when
    /// every open connection is inside a request.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut slots = self.inner.lock().unwrap();
        if slots.open.len() >= MAX_CONNECTIONS {
            let idle = slots
                .open
                .iter()
                .find(|(_, s)| s.busy.load(Ordering::SeqCst) == 0)
                .map(|(id, _)| *id)?;
            if let Some(slot) = slots.open.remove(&idle) {
                slot.close.cancel();
            }
        }
        let id = slots.next;
        slots.next += 1;
        let slot = Slot {
            busy: Arc::new(AtomicUsize::new(0)),
            close: CancellationToken::new(),
        };
        let admitted = Admitted {
            id,
            connections: self.clone(),
            busy: slot.busy.clone(),
            close: slot.close.clone(),
        };
        slots.open.insert(id, slot);
        Some(admitted)
    }

    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.inner.lock().unwrap().open.len()
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.connections.inner.lock().unwrap().open.remove(&self.id);
    }
}

/// Marks a request in progress on its connection while alive.
pub struct InRequest(Arc<AtomicUsize>);

impl InRequest {
    pub fn new(busy: &Arc<AtomicUsize>) -> InRequest {
        busy.fetch_add(1, Ordering::SeqCst);
        InRequest(busy.clone())
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let connections = Arc::new(Connections::default());
        let mut held: Vec<Admitted> = (0..MAX_CONNECTIONS)
            .map(|_| connections.admit().unwrap())
            .collect();
        // The oldest is inside a request: the second oldest goes.
        let _request = InRequest::new(&held[0].busy);
        let newest = connections.admit().expect("room made");
        assert_eq!(connections.open(), MAX_CONNECTIONS);
        assert!(!held[0].close.is_cancelled(), "busy connections stay");
        assert!(
            held[1].close.is_cancelled(),
            "the oldest idle one is closed"
        );
        // Its place is taken already: dropping it frees nothing more.
        held.remove(1);
        assert_eq!(connections.open(), MAX_CONNECTIONS);
        drop(newest);
        assert_eq!(connections.open(), MAX_CONNECTIONS - 1);
    }

    #[test]
    fn when_every_connection_is_in_a_request_a_new_one_is_refused() {
        let connections = Arc::new(Connections::default());
        let held: Vec<Admitted> = (0..MAX_CONNECTIONS)
            .map(|_| connections.admit().unwrap())
            .collect();
        let _requests: Vec<InRequest> = held.iter().map(|a| InRequest::new(&a.busy)).collect();
        assert!(connections.admit().is_none());
        assert!(held.iter().all(|a| !a.close.is_cancelled()));
    }
}
