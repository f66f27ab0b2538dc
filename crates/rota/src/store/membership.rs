//! Membership and leadership: registrations, liveness by store time, the generation, the
//! leader's epoch.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use crate::error::Result;
use async_trait::async_trait;
use rota_core::placement::{DeclaredPlacement, NodeMeta};

/// Who a node is in the store: its id and the incarnation of this start.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Member {
    pub cluster: String,
    pub node: String,
    pub incarnation: i64,
}

/// One task as a node declares it (stored with the node's registration).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Declaration {
    pub name: String,
    /// Digest of the definition: two nodes declaring one name with different hashes conflict.
    pub hash: String,
    /// Human description of the schedule, for `rota status`.
    pub schedule: String,
}

/// What a node asks for when it joins.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member: Member,
    /// The store considers the node dead this long after its last renewal.
    pub timeout_ms: i64,
    /// Host name, for operators and for recognising one's own crashed predecessor.
    pub host: String,
    /// Identifies the process (`boot-id:pid:start-time`), see the node's `identity` module.
    pub process: String,
    pub declared: Vec<Declaration>,
    /// Labels and placement specs, for the leader's placement.
    pub meta: NodeMeta,
    /// Replace this live incarnation of the same id (it is our own crashed predecessor).
    pub replaces: Option<i64>,
    /// The key of the session lock this process holds (see [`SessionStore`](super::SessionStore)),
    /// if any: others watch it.
    pub session_key: Option<i64>,
    /// The fingerprint of the process's work guard (see `process`), if it has one: once
    /// both are gone, the node runs nothing any more.
    pub guard: Option<String>,
}

/// A registered node as the store sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub node: String,
    pub incarnation: i64,
    pub joined_at_ms: i64,
    pub heartbeat_at_ms: i64,
    pub timeout_ms: i64,
    pub leaving: bool,
    /// Judged by the store: its last renewal is no older than its timeout, and its session
    /// has not ended. Only a live registration may claim, begin, renew or lead.
    pub alive: bool,
    pub host: String,
    pub process: String,
    /// The key of its session lock, if it holds one.
    pub session_key: Option<i64>,
    /// When its session ended (store time), seen to be over by the release of its session
    /// lock. Its begun work keeps its lease: `heartbeat_at_ms + timeout_ms`.
    pub ended_at_ms: Option<i64>,
    /// Its work guard's fingerprint, if it has one.
    pub guard: Option<String>,
}

/// The tasks a node declares, with their placement specs. Identical nodes declare the same
/// set: the store keeps each distinct set once per cluster, under its digest, and each
/// registration refers to it. 100 nodes that declare 100,000 tasks store and read megabytes
/// once, not a hundred times.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeclaredSet {
    pub tasks: Vec<Declaration>,
    #[serde(default, skip_serializing_if = "DeclaredPlacement::is_default")]
    pub placement: DeclaredPlacement,
}

impl DeclaredSet {
    /// The stored form (JSON, deterministic: tasks in order, specs in a sorted map) and
    /// its digest (hex SHA-256 of that form).
    pub(crate) fn encode(&self) -> (String, String) {
        let json = serde_json::to_string(self).expect("declarations serialize");
        let digest = ring::digest::digest(&ring::digest::SHA256, json.as_bytes());
        let hex = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        (hex, json)
    }
}

/// How stale a declared set's last use may be before a join naming it marks it used again.
/// Joins of identical nodes name one set: marking it at every join would make them all wait
/// on one lock (100 nodes rejoining under load timed out on it).
pub(crate) const SET_USE_REFRESH_MS: i64 = 3_600_000;

/// A purge deletes a set that no registration names only once it is this much older than
/// the history's cut-off. A join that found the set (its use then at most
/// [`SET_USE_REFRESH_MS`] old) and names it would otherwise race the purge: the margin
/// gives that join an hour to commit.
pub(crate) const SET_PURGE_MARGIN_MS: i64 = 2 * SET_USE_REFRESH_MS;

/// A registration's declarations as the store keeps them: the digest of the set it
/// declares, and its own labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationDeclares {
    pub node: String,
    pub incarnation: i64,
    /// Labels and whether it runs the cluster's own definitions (its placement specs are
    /// in the set).
    pub meta: NodeMeta,
    /// Digest of its [`DeclaredSet`].
    pub digest: String,
    /// The set itself, when the registration holds it: one written by a rota of the time
    /// before sets were shared, still running during a rolling upgrade.
    pub inline: Option<Arc<DeclaredSet>>,
}

/// The tasks one registration declared, with its labels and placement specs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDeclarations {
    pub node: String,
    pub incarnation: i64,
    /// Digest of `set`: registrations with equal digests declare the same.
    pub digest: String,
    /// Shared by the registrations that declare the same.
    pub set: Arc<DeclaredSet>,
    /// Labels and whether it runs the cluster's own definitions (placement specs: `set`).
    pub meta: NodeMeta,
}

/// How a registration's own declarations are kept in the store (one JSON document). Since
/// sets are shared, `tasks` is empty and `meta` holds the labels; a rota of the time before
/// keeps everything here (and reads a registration of ours as declaring nothing).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Registration {
    pub tasks: Vec<Declaration>,
    #[serde(default, skip_serializing_if = "NodeMeta::is_empty")]
    pub meta: NodeMeta,
}

impl Registration {
    /// What a join stores: the shared set (digest and stored form) and the registration's
    /// own part.
    pub(crate) fn split(req: &JoinRequest) -> (String, String, Registration) {
        let set = DeclaredSet {
            tasks: req.declared.clone(),
            placement: req.meta.placement.clone(),
        };
        let (digest, json) = set.encode();
        let own = Registration {
            tasks: Vec::new(),
            meta: NodeMeta {
                placement: DeclaredPlacement::default(),
                ..req.meta.clone()
            },
        };
        (digest, json, own)
    }

    /// A stored registration as read: its set's digest if it names one, else (written
    /// before sets were shared) its set inline.
    pub(crate) fn read(
        self,
        node: String,
        incarnation: i64,
        digest: Option<String>,
    ) -> RegistrationDeclares {
        match digest {
            Some(digest) => RegistrationDeclares {
                node,
                incarnation,
                meta: self.meta,
                digest,
                inline: None,
            },
            None => {
                let set = DeclaredSet {
                    tasks: self.tasks,
                    placement: self.meta.placement.clone(),
                };
                RegistrationDeclares {
                    node,
                    incarnation,
                    meta: NodeMeta {
                        placement: DeclaredPlacement::default(),
                        ..self.meta
                    },
                    digest: set.encode().0,
                    inline: Some(Arc::new(set)),
                }
            }
        }
    }
}

/// Answer to a join.
#[derive(Debug, Clone)]
pub enum JoinOutcome {
    Joined {
        now_ms: i64,
    },
    /// A live node holds this id; the caller decides whether it is its own predecessor.
    Occupied(NodeRecord),
}

/// The elected leader of a cluster and its epoch (contract 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    pub node: String,
    pub incarnation: i64,
    pub epoch: i64,
}

/// A consistent-enough picture of the cluster, read in one go.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub now_ms: i64,
    pub generation: i64,
    pub nodes: Vec<NodeRecord>,
    pub leader: Option<Leadership>,
}

impl ClusterView {
    /// The store time at which the first of the live registrations other than `except`'s
    /// expires if it is not renewed: when a node that watches them should look again.
    pub fn next_expiry_ms(&self, except: &str) -> Option<i64> {
        self.nodes
            .iter()
            .filter(|n| n.alive && n.node != except)
            .map(|n| n.heartbeat_at_ms + n.timeout_ms)
            .filter(|&expiry| expiry >= self.now_ms)
            .min()
    }
}

/// Who is in the cluster and who leads it: registrations judged alive by store time, the
/// cluster's generation, and the leadership with its epoch (contract 6 and 10).
#[async_trait]
pub trait MembershipStore: Send + Sync {
    /// Registers the node (contract 10). If a *live* registration holds the id and is not
    /// `req.replaces`, nothing is written and [`JoinOutcome::Occupied`] describes it. Otherwise
    /// the registration is replaced atomically by the new incarnation, whose join and
    /// heartbeat times are the store's now; the tokens of a replaced incarnation are dead,
    /// since claims require the claimant's current incarnation.
    async fn join(&self, req: &JoinRequest) -> Result<JoinOutcome>;

    /// Renews the node's registration, judged by store time. Returns `false`, writing nothing,
    /// if the registration is gone, belongs to another incarnation, or has already expired:
    /// an expired node can never renew back to life; it must join again. Also `false` if the
    /// store's clock has passed `not_after_ms`: a renewal that arrives after the sender gave
    /// up on it (and fenced itself) must not keep a fenced node looking alive.
    async fn heartbeat(&self, member: &Member, not_after_ms: i64) -> Result<bool>;

    /// Marks the node as leaving (graceful stop): placement gives it nothing more.
    async fn mark_leaving(&self, member: &Member) -> Result<()>;

    /// Removes the node's registration and any leadership it holds, at once.
    async fn leave(&self, member: &Member) -> Result<()>;

    /// Nodes with liveness judged by store time, the leader, and the cluster's generation.
    /// The generation increases with every change of membership, leadership, declarations or
    /// assignments (not with heartbeats or fires), so a poll of it is cheap. The rows are at
    /// least as new as the generation returned (read it first): a node that takes the
    /// generation as seen must not miss a registration counted in it.
    async fn view(&self, cluster: &str) -> Result<ClusterView>;

    /// Which set each registered node declares, and its labels. Declarations change only
    /// with registrations, so callers re-read them when the generation changes, never at
    /// heartbeat rate. `only`: just these registrations `(node, incarnation)`; `None`: all
    /// of the cluster.
    async fn registrations_declared(
        &self,
        cluster: &str,
        only: Option<&[(String, i64)]>,
    ) -> Result<Vec<RegistrationDeclares>>;

    /// The declared sets with these digests. A set stays stored while a registration names
    /// it (and a while after, see [`HistoryStore::purge_history`](super::HistoryStore::purge_history)),
    /// so a set named by a registration just read is found.
    async fn declared_sets(
        &self,
        cluster: &str,
        digests: &[String],
    ) -> Result<HashMap<String, DeclaredSet>>;

    /// What each registered node declared: [`MembershipStore::registrations_declared`] with
    /// their sets, each read once. A set not found counts as declaring nothing.
    async fn declarations(
        &self,
        cluster: &str,
        only: Option<&[(String, i64)]>,
    ) -> Result<Vec<NodeDeclarations>> {
        let registrations = self.registrations_declared(cluster, only).await?;
        let mut wanted: Vec<String> = registrations
            .iter()
            .filter(|r| r.inline.is_none())
            .map(|r| r.digest.clone())
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut sets: BTreeMap<String, Arc<DeclaredSet>> = self
            .declared_sets(cluster, &wanted)
            .await?
            .into_iter()
            .map(|(digest, set)| (digest, Arc::new(set)))
            .collect();
        Ok(registrations
            .into_iter()
            .map(|r| {
                let set = match r.inline {
                    Some(set) => set,
                    None => sets.entry(r.digest.clone()).or_default().clone(),
                };
                NodeDeclarations {
                    node: r.node,
                    incarnation: r.incarnation,
                    digest: r.digest,
                    set,
                    meta: r.meta,
                }
            })
            .collect())
    }

    /// Where the store can push (PostgreSQL LISTEN/NOTIFY), a counter that increases soon
    /// after every generation change of `cluster`, so nodes react at once. `None` where it
    /// cannot: nodes then rely on polling [`MembershipStore::generation`], which stays the safety net.
    async fn subscribe(&self, _cluster: &str) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// The cluster's generation alone (see [`MembershipStore::view`]).
    async fn generation(&self, cluster: &str) -> Result<i64>;

    /// Becomes leader if there is none, or if the recorded leader's registration is dead,
    /// gone, or of another incarnation; the epoch then increases by one. Returns the
    /// leadership in force after the call (ours or another's). At most one node holds a
    /// given epoch, and epochs only increase (contract 6).
    async fn acquire_leadership(&self, member: &Member) -> Result<Option<Leadership>>;

    /// Gives up leadership if `member` holds it; others may acquire at once.
    async fn release_leadership(&self, member: &Member) -> Result<()>;
}

#[cfg(test)]
impl NodeRecord {
    /// A registration for unit tests: renewed at `heartbeat_at_ms` with a lease of
    /// `timeout_ms`, not leaving, no session lock, no guard.
    pub(crate) fn for_test(
        node: &str,
        incarnation: i64,
        alive: bool,
        heartbeat_at_ms: i64,
        timeout_ms: i64,
    ) -> NodeRecord {
        NodeRecord {
            node: node.into(),
            incarnation,
            joined_at_ms: 0,
            heartbeat_at_ms,
            timeout_ms,
            leaving: false,
            alive,
            host: "h".into(),
            process: "p".into(),
            session_key: None,
            ended_at_ms: None,
            guard: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, alive: bool, heartbeat_at_ms: i64) -> NodeRecord {
        NodeRecord::for_test(id, 1, alive, heartbeat_at_ms, 250)
    }

    #[test]
    fn the_next_expiry_is_the_first_live_registration_of_another_node_to_lapse() {
        let view = ClusterView {
            now_ms: 1_000,
            generation: 1,
            nodes: vec![
                node("me", true, 800),      // my own: never watched
                node("fresh", true, 990),   // lapses at 1,240
                node("frozen", true, 900),  // lapses at 1,150
                node("dead", false, 100),   // already judged dead
                node("at-edge", true, 740), // lapsed at 990, before the view: not ahead
            ],
            leader: None,
        };
        assert_eq!(view.next_expiry_ms("me"), Some(1_150));
        assert_eq!(view.next_expiry_ms("frozen"), Some(1_050)); // "me" is watched by others
        let alone = ClusterView {
            nodes: vec![node("me", true, 990)],
            ..view
        };
        assert_eq!(alone.next_expiry_ms("me"), None);
    }
}
