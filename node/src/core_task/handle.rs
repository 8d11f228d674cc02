//! [`CoreHandle`]: how the rest of the agent (API, RPC server, background
//! tasks) talks to the task that owns the node core. Every call is a
//! command with a reply, so answers are consistent snapshots.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use shoal_gossip::{DcReach, Instant, MemberInfo, MemberMeta, NodeId, Stats};
use shoal_placement::{Job, Msg, Resources, TaskKey, TaskStatus};
use tokio::sync::{mpsc, oneshot};

/// The core task has stopped (the agent is shutting down).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the node core has stopped (agent shutting down)")]
pub struct CoreStopped;

/// The node's summary of its members (see [`shoal_core::Summary`]), as
/// `GET /v1/summary` answers from it.
#[derive(Clone, Debug)]
pub struct SummaryReply {
    /// The groups: O(groups) to copy.
    pub snapshot: shoal_core::Snapshot,
    /// Members counted.
    pub members: usize,
    /// When a member's state last changed as this node saw it.
    pub changed_at: Option<Instant>,
    /// This node: id, and name.
    pub me: (NodeId, String),
    /// This node's capacity offered and resources held (exact).
    pub local: (Resources, Resources),
    /// Members on this node's placement ring: the placer's view, which
    /// follows membership at most a publish period later.
    pub placing: usize,
}

/// A member's state changed as this node sees it (`/v1/events`,
/// `member.state`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct MemberEvent {
    /// `state`.
    pub event: &'static str,
    /// The member's id.
    pub id: String,
    /// Its name, dc and zone, where its metadata is known.
    pub name: Option<String>,
    /// Datacenter.
    pub dc: Option<String>,
    /// Zone.
    pub zone: Option<String>,
    /// `alive`, `suspect`, `failed`, `left`, or `forgotten` (no longer
    /// listed).
    pub state: &'static str,
    /// The state before (`null`: new to this node).
    pub previous: Option<&'static str>,
    /// This node, which saw the change.
    pub node: String,
}

pub(super) enum Cmd {
    Summary(oneshot::Sender<SummaryReply>),
    Meta(oneshot::Sender<MemberMeta>),
    Members(oneshot::Sender<Vec<MemberInfo>>),
    Member(NodeId, oneshot::Sender<Option<MemberInfo>>),
    Stats(oneshot::Sender<Stats>),
    Datacenters(oneshot::Sender<Vec<DcReach>>),
    Join(Vec<SocketAddr>),
    SetMeta(Box<MemberMeta>),
    Block(BTreeSet<SocketAddr>),
    Forget(BTreeSet<NodeId>),
    Security(Box<shoal_gossip::PacketSecurity>),
    Msgs(NodeId, Vec<Msg>),
    Status(Vec<TaskKey>, oneshot::Sender<Vec<TaskStatus>>),
    KeysOf(String, oneshot::Sender<Vec<(TaskKey, Option<NodeId>)>>),
    Waiting(oneshot::Sender<Vec<(String, Vec<String>)>>),
    Drivers(Vec<String>, oneshot::Sender<Vec<Option<NodeId>>>),
    Drain(bool, oneshot::Sender<()>),
    Used(oneshot::Sender<(Resources, Resources)>),
    Held(oneshot::Sender<Vec<TaskStatus>>),
    Note(
        NodeId,
        Vec<u8>,
        oneshot::Sender<Result<(), shoal_gossip::NoteError>>,
    ),
    /// Every job (at start-up, or after missed changes).
    AllJobs(Vec<Job>),
    /// Jobs that changed, and jobs gone or not placeable.
    Jobs(Vec<Job>, Vec<String>),
}

/// Talks to the core task.
#[derive(Clone, Debug)]
pub struct CoreHandle {
    pub(super) tx: mpsc::Sender<Cmd>,
    pub(super) local_id: NodeId,
    pub(super) slow_turns: Arc<AtomicU64>,
    pub(super) member_events: tokio::sync::broadcast::Sender<MemberEvent>,
    pub(super) notes: tokio::sync::broadcast::Sender<(NodeId, Arc<[u8]>)>,
}

impl CoreHandle {
    /// This node's id.
    pub fn local_id(&self) -> NodeId {
        self.local_id
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Result<T, CoreStopped> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| CoreStopped)?;
        rx.await.map_err(|_| CoreStopped)
    }

    async fn tell(&self, cmd: Cmd) -> Result<(), CoreStopped> {
        self.tx.send(cmd).await.map_err(|_| CoreStopped)
    }

    /// This node's metadata.
    pub async fn meta(&self) -> Result<MemberMeta, CoreStopped> {
        self.ask(Cmd::Meta).await
    }

    /// The summary of the members: O(groups), not O(members).
    pub async fn summary(&self) -> Result<SummaryReply, CoreStopped> {
        self.ask(Cmd::Summary).await
    }

    /// Sends `note` to member `to` in one gossip datagram (see
    /// `Membership::send_note`): for small reports that may be lost.
    pub async fn send_note(
        &self,
        to: NodeId,
        note: Vec<u8>,
    ) -> Result<Result<(), shoal_gossip::NoteError>, CoreStopped> {
        self.ask(|tx| Cmd::Note(to, note, tx)).await
    }

    /// Notes members send this node from now on, with their sender (a
    /// receiver that falls behind loses the oldest).
    pub fn notes(&self) -> tokio::sync::broadcast::Receiver<(NodeId, Arc<[u8]>)> {
        self.notes.subscribe()
    }

    /// Member state changes from now on.
    pub fn member_events(&self) -> tokio::sync::broadcast::Receiver<MemberEvent> {
        self.member_events.subscribe()
    }

    /// Every member known, this node included.
    pub async fn members(&self) -> Result<Vec<MemberInfo>, CoreStopped> {
        self.ask(Cmd::Members).await
    }

    /// One member by id.
    pub async fn member(&self, id: NodeId) -> Result<Option<MemberInfo>, CoreStopped> {
        self.ask(|tx| Cmd::Member(id, tx)).await
    }

    /// Membership counters.
    pub async fn stats(&self) -> Result<Stats, CoreStopped> {
        self.ask(Cmd::Stats).await
    }

    /// Per datacenter, whether this node reaches it (its own probes and
    /// the datagrams it received).
    pub async fn datacenters(&self) -> Result<Vec<DcReach>, CoreStopped> {
        self.ask(Cmd::Datacenters).await
    }

    /// Joins through more addresses.
    pub async fn join(&self, peers: Vec<SocketAddr>) -> Result<(), CoreStopped> {
        self.tell(Cmd::Join(peers)).await
    }

    /// Publishes new metadata for this node.
    pub async fn set_meta(&self, meta: MemberMeta) -> Result<(), CoreStopped> {
        self.tell(Cmd::SetMeta(Box::new(meta))).await
    }

    /// Drops gossip to and from these addresses (fault injection for
    /// partition tests), replacing any previous set.
    pub async fn block(&self, addrs: BTreeSet<SocketAddr>) -> Result<(), CoreStopped> {
        self.tell(Cmd::Block(addrs)).await
    }

    /// Sets the nodes forgotten for good (`shoal node forget`).
    pub async fn set_forgotten(&self, ids: BTreeSet<NodeId>) -> Result<(), CoreStopped> {
        self.tell(Cmd::Forget(ids)).await
    }

    /// Replaces the gossip keys (a keyring change).
    pub async fn set_security(
        &self,
        security: shoal_gossip::PacketSecurity,
    ) -> Result<(), CoreStopped> {
        self.tell(Cmd::Security(Box::new(security))).await
    }

    /// Hands placement messages from `from` to the core.
    pub async fn deliver(&self, from: NodeId, msgs: Vec<Msg>) -> Result<(), CoreStopped> {
        self.tell(Cmd::Msgs(from, msgs)).await
    }

    /// Status of tasks as this node knows them.
    pub async fn status(&self, keys: Vec<TaskKey>) -> Result<Vec<TaskStatus>, CoreStopped> {
        self.ask(|tx| Cmd::Status(keys, tx)).await
    }

    /// A job's task keys and the node answering for each.
    pub async fn keys_of(&self, job: &str) -> Result<Vec<(TaskKey, Option<NodeId>)>, CoreStopped> {
        self.ask(|tx| Cmd::KeysOf(job.to_owned(), tx)).await
    }

    /// The jobs waiting for others (`after`) that this node drives, with
    /// the jobs each still waits for.
    pub async fn waiting(&self) -> Result<Vec<(String, Vec<String>)>, CoreStopped> {
        self.ask(Cmd::Waiting).await
    }

    /// The node that drives each of `names` (owns its key `name/0` on the
    /// ring), as this node sees the ring: the test behind `after` and
    /// deployments, used for triggers too.
    pub async fn drivers(&self, names: Vec<String>) -> Result<Vec<Option<NodeId>>, CoreStopped> {
        self.ask(|tx| Cmd::Drivers(names, tx)).await
    }

    /// Drains this node (or stops draining it); answered once the choice
    /// is saved in the data dir.
    pub async fn drain(&self, on: bool) -> Result<(), CoreStopped> {
        self.ask(|tx| Cmd::Drain(on, tx)).await
    }

    /// The tasks this node runs, as it runs them (its own account, whoever
    /// coordinates them).
    pub async fn held(&self) -> Result<Vec<TaskStatus>, CoreStopped> {
        self.ask(Cmd::Held).await
    }

    /// Capacity offered and resources held.
    pub async fn usage(&self) -> Result<(Resources, Resources), CoreStopped> {
        self.ask(Cmd::Used).await
    }

    pub(super) async fn all_jobs(&self, jobs: Vec<Job>) -> Result<(), CoreStopped> {
        self.tell(Cmd::AllJobs(jobs)).await
    }

    pub(super) async fn jobs(
        &self,
        changed: Vec<Job>,
        removed: Vec<String>,
    ) -> Result<(), CoreStopped> {
        self.tell(Cmd::Jobs(changed, removed)).await
    }

    /// Turns of the core's loop that took longer than
    /// [`super::SLOW_TURN`].
    pub fn slow_turns(&self) -> u64 {
        self.slow_turns.load(Ordering::Relaxed)
    }
}
