//! Watching the other nodes' session locks (see [`crate::store::SessionStore`]). When one is
//! let go, its holder's process is gone or cut off from the store: this node ends that
//! registration in the store at once, then observes again, with short pauses for a while,
//! so that the leader places its tasks and the survivors take them within milliseconds.

use tokio::sync::Notify;

use super::*;
use crate::store::{SessionWatch, WatchScope};

/// The pause between rounds for a while after a watched session ended: survivors learn of
/// the new placement by polling where the store cannot push it.
pub(super) const HOT_WATCH: Duration = Duration::from_millis(5);
/// How long the rounds stay that quick.
const HOT_FOR: Duration = Duration::from_millis(300);
/// Tries of one ending while the store is briefly unavailable.
const END_TRIES: u32 = 10;

/// The watches this node runs, by registration `(node, incarnation)`.
#[derive(Default)]
pub(super) struct Watches {
    running: HashMap<(String, i64), CancellationToken>,
    /// Told by a watcher once it saw its session end (and ended the registration).
    ended: Arc<Notify>,
    hot_until: Option<Instant>,
}

impl Watches {
    /// Whether a session ended moments ago: the rounds then pause [`HOT_WATCH`].
    pub(super) fn hot(&self) -> bool {
        self.hot_until.is_some_and(|until| Instant::now() < until)
    }

    /// Resolves when a watched session ends, and makes the next rounds quick.
    pub(super) async fn ended(&mut self) {
        self.ended.notified().await;
        self.hot_until = Some(Instant::now() + HOT_FOR);
    }

    pub(super) fn stop_all(&mut self) {
        for (_, stop) in self.running.drain() {
            stop.cancel();
        }
    }
}

impl Runtime {
    /// Watches the session locks this node should watch, as the last view shows them: every
    /// other live registration with a key, or, where the store pushes changes to everyone
    /// ([`WatchScope::Leader`]), all of them while leading and the leader's otherwise.
    pub(super) fn watch_sessions(&mut self) {
        let Some(view) = &self.view else {
            return;
        };
        if self.session.is_none() {
            return; // session locks are off
        }
        let me = self.shared.member();
        let others = view
            .nodes
            .iter()
            .filter(|n| n.alive && n.node != me.node && n.session_key.is_some())
            .count();
        let everyone =
            self.shared.store.watch_scope(others) == WatchScope::Everyone || self.epoch.is_some();
        let leader = view.leader.as_ref();
        let wanted: HashMap<(String, i64), i64> = view
            .nodes
            .iter()
            .filter(|n| n.alive && n.node != me.node)
            .filter(|n| {
                everyone
                    || leader.is_some_and(|l| l.node == n.node && l.incarnation == n.incarnation)
            })
            .filter_map(|n| {
                n.session_key
                    .map(|key| ((n.node.clone(), n.incarnation), key))
            })
            .collect();
        self.watches.running.retain(|registration, stop| {
            let keep = wanted.contains_key(registration) && !stop.is_cancelled();
            if !keep {
                stop.cancel();
            }
            keep
        });
        for ((node, incarnation), key) in wanted {
            if self
                .watches
                .running
                .contains_key(&(node.clone(), incarnation))
            {
                continue;
            }
            let Some(watch) = self.shared.store.watch_session(key) else {
                return; // this store has no session locks
            };
            let stop = CancellationToken::new();
            self.watches
                .running
                .insert((node.clone(), incarnation), stop.clone());
            let member = Member {
                cluster: me.cluster.clone(),
                node,
                incarnation,
            };
            tokio::spawn(watcher(
                self.shared.store.clone(),
                member,
                key,
                watch,
                stop,
                self.watches.ended.clone(),
                self.shared.metrics.clone(),
            ));
        }
    }
}

/// Waits for `member`'s session lock to be let go, then ends its registration.
async fn watcher(
    store: Arc<dyn Store>,
    member: Member,
    key: i64,
    watch: SessionWatch,
    stop: CancellationToken,
    ended: Arc<Notify>,
    metrics: Arc<crate::metrics::Metrics>,
) {
    tokio::select! {
        _ = watch => {}
        _ = stop.cancelled() => return,
    }
    for attempt in 1..=END_TRIES {
        match store.end_registration(&member, key).await {
            Ok(true) => {
                metrics.session_ended();
                info!(node = %member.node, incarnation = member.incarnation, "its session lock was let go: registration ended");
                break;
            }
            Ok(false) => break, // ended by another watcher, left, or expired
            Err(e) if e.is_retryable() && attempt < END_TRIES => {
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            Err(e) => {
                warn!(node = %member.node, error = %e, "cannot end a registration whose session lock was let go; it will expire");
                break;
            }
        }
    }
    ended.notify_one();
}
