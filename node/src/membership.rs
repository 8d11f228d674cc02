//! The task that owns the membership state machine and the gossip socket.
//!
//! One loop, biased `select!` over: shutdown, the next timer, an inbound
//! datagram, a command. After every turn it sends what the core produced,
//! logs its events, and persists what must survive a restart. A turn longer
//! than [`SLOW_TURN`] is logged and counted: a slow loop makes this node look
//! dead to the others.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shoal_gossip::{DownReason, Event, MemberInfo, MemberMeta, Membership, NodeId, Stats};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::datadir::{DataDir, StoredNode};
use crate::state::Peer;

/// A turn longer than this is logged.
pub const SLOW_TURN: Duration = Duration::from_millis(100);
/// Largest datagram accepted from the socket.
const RECV_BUFFER: usize = 65_536;
/// How often `peers.json` may be rewritten.
const PEERS_SAVE_PERIOD: Duration = Duration::from_secs(10);
/// Members remembered in `peers.json`.
const PEERS_SAVED: usize = 32;
/// How often the list of live peers (for state sync) may be rebuilt.
const PEERS_PUBLISH_PERIOD: Duration = Duration::from_millis(200);

/// The loop has stopped (the agent is shutting down).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the membership loop has stopped (agent shutting down)")]
pub struct Stopped;

enum Command {
    Meta(oneshot::Sender<MemberMeta>),
    Members(oneshot::Sender<Vec<MemberInfo>>),
    Member(NodeId, oneshot::Sender<Option<MemberInfo>>),
    Stats(oneshot::Sender<Stats>),
    Join(Vec<SocketAddr>),
    SetMeta(Box<MemberMeta>),
    Block(BTreeSet<SocketAddr>),
}

/// Talks to the membership loop.
#[derive(Clone, Debug)]
pub struct MembershipHandle {
    tx: mpsc::Sender<Command>,
    local_id: NodeId,
    slow_turns: Arc<AtomicU64>,
}

impl MembershipHandle {
    /// This node's id.
    pub fn local_id(&self) -> NodeId {
        self.local_id
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// This node's metadata.
    pub async fn meta(&self) -> Result<MemberMeta, Stopped> {
        self.ask(Command::Meta).await
    }

    /// Every member known, this node included.
    pub async fn members(&self) -> Result<Vec<MemberInfo>, Stopped> {
        self.ask(Command::Members).await
    }

    /// One member by id.
    pub async fn member(&self, id: NodeId) -> Result<Option<MemberInfo>, Stopped> {
        self.ask(|tx| Command::Member(id, tx)).await
    }

    /// Counters.
    pub async fn stats(&self) -> Result<Stats, Stopped> {
        self.ask(Command::Stats).await
    }

    /// Joins through more addresses.
    pub async fn join(&self, peers: Vec<SocketAddr>) -> Result<(), Stopped> {
        self.tx
            .send(Command::Join(peers))
            .await
            .map_err(|_| Stopped)
    }

    /// Publishes new metadata for this node.
    pub async fn set_meta(&self, meta: MemberMeta) -> Result<(), Stopped> {
        self.tx
            .send(Command::SetMeta(Box::new(meta)))
            .await
            .map_err(|_| Stopped)
    }

    /// Drops gossip to and from these addresses (fault injection for
    /// partition tests), replacing any previous set.
    pub async fn block(&self, addrs: BTreeSet<SocketAddr>) -> Result<(), Stopped> {
        self.tx
            .send(Command::Block(addrs))
            .await
            .map_err(|_| Stopped)
    }

    /// Turns of the loop that took longer than [`SLOW_TURN`].
    pub fn slow_turns(&self) -> u64 {
        self.slow_turns.load(Ordering::Relaxed)
    }
}

/// Everything the loop needs.
pub struct MembershipTask {
    core: Membership,
    socket: UdpSocket,
    clock: Clock,
    data_dir: Arc<DataDir>,
    rx: mpsc::Receiver<Command>,
    shutdown: CancellationToken,
    slow_turns: Arc<AtomicU64>,
    peers_saved_at: Option<tokio::time::Instant>,
    peers_dirty: bool,
    live_tx: watch::Sender<Arc<Vec<Peer>>>,
    live_dirty: bool,
    live_published_at: Option<tokio::time::Instant>,
    blocked: BTreeSet<SocketAddr>,
    state: StateLink,
}

/// What joins the membership task to the state task: the digest of the
/// local replica (carried in every gossip datagram) one way, and the
/// members whose digest differs (to sync with) the other.
pub struct StateLink {
    /// The local replica's digest, as published by the state task.
    pub digest: watch::Receiver<u64>,
    /// Members seen gossiping a different digest.
    pub differs: mpsc::Sender<NodeId>,
}

impl MembershipTask {
    /// Wraps `core` and `socket`; the handle talks to the task once it runs.
    pub fn new(
        core: Membership,
        socket: UdpSocket,
        clock: Clock,
        data_dir: Arc<DataDir>,
        shutdown: CancellationToken,
        live_tx: watch::Sender<Arc<Vec<Peer>>>,
        state: StateLink,
    ) -> (MembershipTask, MembershipHandle) {
        let (tx, rx) = mpsc::channel(256);
        let slow_turns = Arc::new(AtomicU64::new(0));
        let handle = MembershipHandle {
            tx,
            local_id: core.identity().id,
            slow_turns: slow_turns.clone(),
        };
        let task = MembershipTask {
            core,
            socket,
            clock,
            data_dir,
            rx,
            shutdown,
            slow_turns,
            peers_saved_at: None,
            peers_dirty: false,
            live_tx,
            live_dirty: true,
            live_published_at: None,
            blocked: BTreeSet::new(),
            state,
        };
        (task, handle)
    }

    /// Runs until shutdown; then leaves the cluster gracefully.
    pub async fn run(mut self, initial_peers: Vec<SocketAddr>) {
        let mut buf = vec![0u8; RECV_BUFFER];
        if !initial_peers.is_empty() {
            info!(peers = ?initial_peers, "joining the cluster");
            self.core.join(self.clock.now(), &initial_peers);
        }
        self.after_turn().await;
        loop {
            let next = self.core.poll_timeout();
            let sleep_until = next.map(|(at, _)| self.clock.deadline(at));
            let started;
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                () = sleep_opt(sleep_until) => {
                    started = std::time::Instant::now();
                    if let Some((_, token)) = next {
                        self.core.handle_timer(self.clock.now(), token);
                    }
                }
                received = self.socket.recv_from(&mut buf) => {
                    started = std::time::Instant::now();
                    match received {
                                                Ok((_, from)) if self.blocked.contains(&from) => {}
                        Ok((len, from)) => self.core.handle_datagram(self.clock.now(), from, &buf[..len]),
                        Err(e) => debug!(error = %e, "gossip socket receive error"),
                    }
                }
                command = self.rx.recv() => {
                    started = std::time::Instant::now();
                    match command {
                        Some(c) => self.command(c),
                        None => break,
                    }
                }
            }
            self.after_turn().await;
            let took = started.elapsed();
            if took > SLOW_TURN {
                self.slow_turns.fetch_add(1, Ordering::Relaxed);
                warn!(
                    took_ms = took.as_millis(),
                    "slow membership turn: this node may look dead to others"
                );
            }
        }
        info!("leaving the cluster");
        self.core.leave(self.clock.now());
        self.after_turn().await;
        self.save_peers(true);
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Meta(tx) => {
                let _ = tx.send((**self.core.meta()).clone());
            }
            Command::Members(tx) => {
                let _ = tx.send(self.core.members());
            }
            Command::Member(id, tx) => {
                let _ = tx.send(self.core.member(id));
            }
            Command::Stats(tx) => {
                let _ = tx.send(self.core.stats().clone());
            }
            Command::Join(peers) => {
                info!(peers = ?peers, "joining the cluster");
                self.core.join(self.clock.now(), &peers);
            }
            Command::Block(addrs) => {
                info!(blocked = ?addrs, "fault injection: gossip cut");
                self.blocked = addrs;
            }
            Command::SetMeta(meta) => {
                if let Err(e) = self.core.set_meta(self.clock.now(), *meta) {
                    warn!(error = %e, "metadata not published");
                }
                self.live_dirty = true;
            }
        }
    }

    async fn after_turn(&mut self) {
        if self.state.digest.has_changed().unwrap_or(false) {
            let digest = *self.state.digest.borrow_and_update();
            self.core.set_app_digest(digest);
        }
        while let Some(t) = self.core.poll_transmit() {
            if self.blocked.contains(&t.to) {
                continue;
            }
            if let Err(e) = self.socket.send_to(&t.payload, t.to).await {
                debug!(to = %t.to, error = %e, "gossip send failed");
            }
        }
        while let Some(event) = self.core.poll_event() {
            if matches!(
                event,
                Event::MemberUp { .. }
                    | Event::MemberDown { .. }
                    | Event::MemberRenewed { .. }
                    | Event::MetaChanged { .. }
            ) {
                self.live_dirty = true;
            }
            self.log_event(event);
        }
        self.save_peers(false);
        self.publish_live();
    }

    fn log_event(&mut self, event: Event) {
        match event {
            Event::MemberUp { identity } => {
                self.peers_dirty = true;
                info!(member = %identity.id, addr = %identity.gossip_addr(), generation = identity.bump, "member alive");
            }
            Event::MemberDown { identity, reason } => {
                self.peers_dirty = true;
                match reason {
                    DownReason::Failed => {
                        warn!(member = %identity.id, addr = %identity.gossip_addr(), "member failed")
                    }
                    DownReason::Left => {
                        info!(member = %identity.id, addr = %identity.gossip_addr(), "member left")
                    }
                }
            }
            Event::MemberRenewed { old, new } => {
                self.peers_dirty = true;
                info!(member = %new.id, addr = %new.gossip_addr(), old_addr = %old.gossip_addr(), generation = new.bump, "member restarted");
            }
            Event::MetaChanged { id } => debug!(member = %id, "member metadata updated"),
            Event::Connected => info!("connected to the cluster"),
            Event::Isolated => warn!("no other live member known; trying to rejoin"),
            Event::JoinRetry {
                attempt,
                peers,
                next_in,
            } => warn!(
                attempt,
                peers,
                next_in_ms = next_in.as_millis(),
                "no join peer answered yet; retrying"
            ),
            Event::IdentityRenewed { identity } => {
                warn!(
                    generation = identity.bump,
                    "the cluster declared this node down; rejoined"
                );
                let node = StoredNode {
                    node_id: identity.id.to_string(),
                    bump: identity.bump,
                };
                if let Err(e) = self.data_dir.store_node(&node) {
                    warn!(error = %e, "could not persist the new generation");
                }
            }
            Event::Defunct => warn!("declared down by the cluster and unable to rejoin"),
            Event::DigestDiffers { id, .. } => {
                // Full: a round is already queued; the next datagram retries.
                let _ = self.state.differs.try_send(id);
            }
        }
    }

    /// Publishes the members that are up (alive or suspect) with their RPC
    /// addresses.
    fn publish_live(&mut self) {
        if !self.live_dirty {
            return;
        }
        let now = tokio::time::Instant::now();
        if self
            .live_published_at
            .is_some_and(|t| now - t < PEERS_PUBLISH_PERIOD)
        {
            return;
        }
        let live: Vec<Peer> = self
            .core
            .members()
            .into_iter()
            // Up: a suspect stays until it is declared down, so that a
            // false suspicion does not move keys around the ring.
            .filter(|m| {
                matches!(
                    m.state,
                    shoal_gossip::MemberState::Alive | shoal_gossip::MemberState::Suspect
                )
            })
            .filter_map(|m| {
                m.meta.as_ref().map(|meta| Peer {
                    id: m.identity.id,
                    rpc: meta.rpc_addr,
                    generation: m.identity.bump,
                    meta: meta.clone(),
                })
            })
            .collect();
        self.live_tx.send_replace(Arc::new(live));
        self.live_dirty = false;
        self.live_published_at = Some(now);
    }

    fn save_peers(&mut self, force: bool) {
        if !self.peers_dirty {
            return;
        }
        let now = tokio::time::Instant::now();
        if !force
            && self
                .peers_saved_at
                .is_some_and(|t| now - t < PEERS_SAVE_PERIOD)
        {
            return;
        }
        let mut peers: Vec<SocketAddr> = self
            .core
            .members()
            .into_iter()
            .filter(|m| {
                !m.local
                    && matches!(
                        m.state,
                        shoal_gossip::MemberState::Alive | shoal_gossip::MemberState::Suspect
                    )
            })
            .map(|m| m.identity.gossip_addr())
            .collect();
        if peers.is_empty() {
            // Keep the previous list: an isolated node still wants to find
            // its cluster again after a restart.
            return;
        }
        peers.truncate(PEERS_SAVED);
        match self.data_dir.store_peers(&peers) {
            Ok(()) => {
                self.peers_dirty = false;
                self.peers_saved_at = Some(now);
            }
            Err(e) => warn!(error = %e, "could not save peers"),
        }
    }
}

async fn sleep_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
