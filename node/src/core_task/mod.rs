//! The agent's driver of its [`NodeCore`]: the one tokio task that owns the
//! core, the gossip socket and the core's timers. It is the counterpart of
//! the simulator's `sim/src/full/mod.rs`: both hand the same core its
//! inputs and carry out its [`Output`]s in order; nothing here decides
//! anything a simulated node would decide differently.
//!
//! One loop, biased `select!` over: shutdown, the earliest due timer, an
//! inbound datagram, a command (API, RPC server, job feeder), a runtime
//! report. After every call into the core its outputs are carried out:
//! datagrams sent, placement messages queued per peer (`peers`), runtime
//! commands run, timers kept in a [`shoal_core::Timers`] heap, events logged and
//! persisted. A turn longer than [`SLOW_TURN`] is logged and counted: a slow
//! loop makes this node look dead to the others.
//!
//! Other pieces: `handle` (the commands), `jobs` (the desired state's
//! jobs fed in from the state task).

mod driver;
mod handle;
mod jobs;
mod peers;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shoal_core::{NodeCore, Output};
use shoal_gossip::{DownReason, Event, MemberState, NodeId};
use shoal_placement::{Command, Event as PlaceEvent, ExitReason, Health, TaskKey};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use driver::Driver;
pub use handle::{CoreHandle, CoreStopped, MemberEvent, SummaryReply};
pub use jobs::{feed_jobs, record_deployments, record_finished};

use crate::clock::{Clock, unix_ms};
use crate::datadir::{DataDir, StoredNode};
use crate::health::HealthChecks;
use crate::runtime::{RuntimeEvent, Runtimes};
use crate::state::Peer;
use handle::Cmd;
use peers::PeerSenders;

/// A turn longer than this is logged.
pub const SLOW_TURN: Duration = Duration::from_millis(100);
/// Largest datagram accepted from the socket.
const RECV_BUFFER: usize = 65_536;
/// How often `peers.json` may be rewritten.
const PEERS_SAVE_PERIOD: Duration = Duration::from_secs(10);
/// Members remembered in `peers.json`.
const PEERS_SAVED: usize = 32;
/// Member state changes kept for slow `/v1/events` readers.
const MEMBER_EVENTS: usize = 1024;
/// Notes from members kept for a slow listener (usage reports: a zone's
/// aggregator hears from each member every 30 s at least).
const NOTES: usize = 4096;
/// Commands waiting for the loop, at most.
const COMMANDS: usize = 1024;

/// What joins the core task to the state task: the digest of the local
/// replica (carried in every gossip datagram) one way, and the members
/// whose digest differs (to sync with) the other.
pub struct StateLink {
    /// The local replica's digest, as published by the state task.
    pub digest: watch::Receiver<u64>,
    /// Members seen gossiping a different digest.
    pub differs: mpsc::Sender<NodeId>,
    /// Batch tasks that finished for good, to record in the desired state
    /// (by [`record_finished`]).
    pub finished: mpsc::Sender<shoal_placement::Outcome>,
    /// Steps of the rolling deployments this node drives, to write into
    /// the desired state (by [`record_deployments`]).
    pub deployments: mpsc::Sender<shoal_placement::DeployStep>,
}

/// Something that happened to a task this node runs, for `/v1/events`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TaskEvent {
    /// `health`.
    pub event: &'static str,
    /// The task.
    pub task: String,
    /// Its job.
    pub job: String,
    /// This node's id.
    pub node: String,
    /// Its health now.
    pub health: Health,
    /// The last output of its checks.
    pub check: Option<String>,
}

/// What the core task is made of.
pub struct CoreParts {
    /// The node's core, built from its membership and placer.
    pub core: NodeCore,
    /// The gossip socket.
    pub socket: UdpSocket,
    /// Real time.
    pub clock: Clock,
    /// The data dir (peers, identity, the drain).
    pub data_dir: Arc<DataDir>,
    /// The task runtimes.
    pub runtime: Runtimes,
    /// Their reports.
    pub runtime_rx: mpsc::Receiver<RuntimeEvent>,
    /// RPC to peers (placement messages).
    pub transport: shoal_transport::Transport,
    /// Where the live members are published (state sync, API).
    pub live_tx: watch::Sender<Arc<Vec<Peer>>>,
    /// The link with the state task.
    pub state: StateLink,
    /// The health checks of the tasks running here.
    pub health: HealthChecks,
    /// Where task events go (`/v1/events`).
    pub task_events: broadcast::Sender<TaskEvent>,
    /// Stop.
    pub shutdown: CancellationToken,
}

/// The task that owns the node core.
pub struct CoreTask {
    driver: Driver,
    /// Outputs taken from the driver, waiting to be carried out.
    outputs: Vec<Output>,
    socket: UdpSocket,
    clock: Clock,
    data_dir: Arc<DataDir>,
    rx: mpsc::Receiver<Cmd>,
    runtime: Runtimes,
    runtime_rx: mpsc::Receiver<RuntimeEvent>,
    senders: PeerSenders,
    live_tx: watch::Sender<Arc<Vec<Peer>>>,
    /// The start counter of each member seen up, to notice restarts
    /// (one entry per member, as the member table has).
    generations: BTreeMap<NodeId, u32>,
    state: StateLink,
    blocked: BTreeSet<SocketAddr>,
    peers_saved_at: Option<tokio::time::Instant>,
    /// Members alive or suspect at that save.
    peers_saved_active: usize,
    peers_dirty: bool,
    slow_turns: Arc<AtomicU64>,
    health: HealthChecks,
    task_events: broadcast::Sender<TaskEvent>,
    member_events: broadcast::Sender<MemberEvent>,
    /// Notes members sent this node, for whoever listens.
    notes: broadcast::Sender<(NodeId, Arc<[u8]>)>,
    /// When a member's state last changed as this node saw it.
    members_changed_at: Option<shoal_gossip::Instant>,
    shutdown: CancellationToken,
}

/// What one turn of the loop received.
enum Input {
    Timer,
    Datagram(usize, SocketAddr),
    Command(Cmd),
    Runtime(RuntimeEvent),
}

impl CoreTask {
    /// Wraps the parts; the handle talks to the task once it runs.
    pub fn new(parts: CoreParts) -> (CoreTask, CoreHandle) {
        let CoreParts {
            core,
            socket,
            clock,
            data_dir,
            runtime,
            runtime_rx,
            transport,
            live_tx,
            state,
            health,
            task_events,
            shutdown,
        } = parts;
        let (tx, rx) = mpsc::channel(COMMANDS);
        let slow_turns = Arc::new(AtomicU64::new(0));
        let (member_events, _) = broadcast::channel(MEMBER_EVENTS);
        let (notes, _) = broadcast::channel(NOTES);
        let handle = CoreHandle {
            tx,
            local_id: core.me(),
            slow_turns: slow_turns.clone(),
            member_events: member_events.clone(),
            notes: notes.clone(),
        };
        let task = CoreTask {
            driver: Driver::new(core),
            outputs: Vec::new(),
            socket,
            clock,
            data_dir,
            rx,
            runtime,
            runtime_rx,
            senders: PeerSenders::new(transport),
            live_tx,
            generations: BTreeMap::new(),
            state,
            blocked: BTreeSet::new(),
            peers_saved_at: None,
            peers_saved_active: 0,
            peers_dirty: false,
            slow_turns,
            health,
            task_events,
            member_events,
            notes,
            members_changed_at: None,
            shutdown,
        };
        (task, handle)
    }

    /// Starts the core (joining through `join`, or waiting to be joined)
    /// and runs until shutdown; then leaves the cluster gracefully. Tasks
    /// keep running after the agent stops: a restarted agent adopts them.
    pub async fn run(mut self, join: Vec<SocketAddr>) {
        let mut buf = vec![0u8; RECV_BUFFER];
        if !join.is_empty() {
            info!(peers = ?join, "joining the cluster");
        }
        // The jobs arrive from the feeder once it has read the replica.
        self.driver
            .core()
            .start(self.clock.now(), unix_ms(), &join, Vec::new());
        self.carry_out().await;
        // Tasks adopted after a restart run already: probe them.
        for key in self.runtime.running() {
            self.health.start(&key);
        }
        loop {
            let deadline = self
                .driver
                .next_deadline()
                .map(|at| self.clock.deadline(at));
            let input = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                () = sleep_opt(deadline) => Input::Timer,
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => Input::Datagram(len, from),
                    Err(e) => {
                        debug!(error = %e, "gossip socket receive error");
                        continue;
                    }
                },
                command = self.rx.recv() => match command {
                    Some(c) => Input::Command(c),
                    None => break,
                },
                Some(ev) = self.runtime_rx.recv() => Input::Runtime(ev),
            };
            let started = std::time::Instant::now();
            let kind = match input {
                Input::Timer => {
                    let mut outputs = std::mem::take(&mut self.outputs);
                    self.driver
                        .fire_due(self.clock.now(), unix_ms(), &mut outputs);
                    self.outputs = outputs;
                    self.carry_out().await;
                    "timer"
                }
                Input::Datagram(_, from) if self.blocked.contains(&from) => "blocked",
                Input::Datagram(len, from) => {
                    self.driver
                        .core()
                        .handle_datagram(self.clock.now(), from, &buf[..len]);
                    self.carry_out().await;
                    "datagram"
                }
                Input::Command(c) => {
                    self.command(c);
                    self.carry_out().await;
                    "command"
                }
                Input::Runtime(ev) => {
                    self.runtime_event(ev);
                    self.carry_out().await;
                    "runtime"
                }
            };
            let took = started.elapsed();
            if took > SLOW_TURN {
                self.slow_turns.fetch_add(1, Ordering::Relaxed);
                warn!(
                    took_ms = took.as_millis(),
                    turn = kind,
                    "slow node turn: this node may look dead to others"
                );
            }
        }
        info!("leaving the cluster");
        self.driver.core().leave(self.clock.now());
        self.carry_out().await;
        self.save_peers(true);
        debug!("node core stopped");
    }

    fn command(&mut self, cmd: Cmd) {
        let (now, wall) = (self.clock.now(), unix_ms());
        let core = self.driver.core();
        match cmd {
            Cmd::Summary(tx) => {
                let placer = core.placer();
                let me = core.membership().meta();
                let _ = tx.send(SummaryReply {
                    snapshot: core.summary().snapshot(),
                    members: core.summary().len(),
                    changed_at: self.members_changed_at,
                    me: (core.me(), me.name.clone()),
                    local: (placer.capacity(), placer.used_resources()),
                    placing: placer.ring().len(),
                });
            }
            Cmd::Meta(tx) => {
                let _ = tx.send((**core.membership().meta()).clone());
            }
            Cmd::Members(tx) => {
                let _ = tx.send(core.membership().members());
            }
            Cmd::Member(id, tx) => {
                let _ = tx.send(core.membership().member(id));
            }
            Cmd::Stats(tx) => {
                let _ = tx.send(core.membership().stats().clone());
            }
            Cmd::Datacenters(tx) => {
                let _ = tx.send(core.membership().datacenters(now));
            }
            Cmd::Join(peers) => {
                info!(peers = ?peers, "joining the cluster");
                core.join(now, &peers);
            }
            Cmd::Block(addrs) => {
                info!(blocked = ?addrs, "fault injection: gossip cut");
                self.blocked = addrs;
            }
            Cmd::Security(security) => {
                info!(keys = ?security.key_ids(), "gossip keys changed (the first seals)");
                if let Err(e) = core.set_security(now, *security) {
                    warn!(error = %e, "gossip keys not published");
                }
            }
            Cmd::Forget(ids) => {
                info!(forgotten = ?ids, "nodes forgotten for good: dropped from membership");
                core.set_forgotten(now, ids);
            }
            Cmd::SetMeta(meta) => {
                if let Err(e) = core.set_meta(now, *meta) {
                    warn!(error = %e, "metadata not published");
                }
            }
            Cmd::Msgs(from, msgs) => {
                for m in msgs {
                    core.handle_message(now, wall, from, m);
                }
            }
            Cmd::Status(keys, tx) => {
                let _ = tx.send(core.placer().status(&keys));
            }
            Cmd::KeysOf(job, tx) => {
                let _ = tx.send(core.placer().keys_of(&job));
            }
            Cmd::Waiting(tx) => {
                let _ = tx.send(core.placer().waiting_here());
            }
            Cmd::Drivers(names, tx) => {
                let placer = core.placer();
                let _ = tx.send(names.iter().map(|n| placer.driver(n)).collect());
            }
            Cmd::Drain(on, tx) => {
                info!(draining = on, "drain");
                if let Err(e) = core.set_draining(now, wall, on) {
                    warn!(error = %e, "the drain could not be published by gossip");
                }
                let data_dir = self.data_dir.clone();
                tokio::task::spawn_blocking(move || {
                    let saved = data_dir.load_settings().and_then(|mut s| {
                        s.draining = Some(on);
                        data_dir.store_settings(&s)
                    });
                    if let Err(e) = saved {
                        warn!(error = %e, "could not persist the drain");
                    }
                    let _ = tx.send(());
                });
            }
            Cmd::Used(tx) => {
                let placer = core.placer();
                let _ = tx.send((placer.capacity(), placer.used_resources()));
            }
            Cmd::Held(tx) => {
                let placer = core.placer();
                let _ = tx.send(
                    placer
                        .local_tasks()
                        .into_iter()
                        .filter_map(|(key, _, _)| placer.local_status(&key))
                        .collect(),
                );
            }
            Cmd::Note(to, note, tx) => {
                let _ = tx.send(core.send_note(now, to, &note));
            }
            Cmd::AllJobs(jobs) => core.set_jobs(now, wall, jobs),
            Cmd::Jobs(changed, removed) => core.update_jobs(now, wall, changed, &removed),
        }
    }

    fn runtime_event(&mut self, ev: RuntimeEvent) {
        let (now, wall) = (self.clock.now(), unix_ms());
        match ev {
            RuntimeEvent::Running(key, ports) => {
                self.health.start(&key);
                self.driver
                    .core()
                    .handle_task_running(now, wall, &key, ports);
            }
            RuntimeEvent::Checked(key, verdict) => {
                self.driver
                    .core()
                    .handle_task_health(now, wall, &key, verdict);
            }
            RuntimeEvent::Exited(key, why) => {
                self.health.stop(&key);
                match &why {
                    ExitReason::Stopped => debug!(task = %key, "task stopped"),
                    ExitReason::StartFailed(m) => {
                        warn!(task = %key, reason = %m, "task could not start")
                    }
                    other => info!(task = %key, reason = ?other, "task ended"),
                }
                self.driver.core().handle_task_exited(now, wall, &key, why);
            }
        }
    }

    /// Carries out what the core produced, in order.
    async fn carry_out(&mut self) {
        if self.state.digest.has_changed().unwrap_or(false) {
            let digest = *self.state.digest.borrow_and_update();
            self.driver.core().set_app_digest(digest);
        }
        let mut outputs = std::mem::take(&mut self.outputs);
        self.driver.drain(&mut outputs);
        for out in outputs.drain(..) {
            match out {
                Output::Datagram(t) => {
                    if self.blocked.contains(&t.to) {
                        continue;
                    }
                    if let Err(e) = self.socket.send_to(&t.payload, t.to).await {
                        debug!(to = %t.to, error = %e, "gossip send failed");
                    }
                }
                Output::Message { to, msg } => self.senders.send(to, msg),
                Output::Runtime(c) => self.run_command(c),
                // Kept by the driver.
                Output::Timer { .. } => {}
                Output::Gossip(e) => self.gossip_event(e),
                Output::Placement(PlaceEvent::Health { key, health, check }) => {
                    self.health_changed(key, health, check);
                }
                Output::Placement(e) => log_placement(e),
                Output::Finished(o) => {
                    if let Err(e) = self.state.finished.try_send(o) {
                        // The coordinator asks again (see record_finished).
                        warn!(error = %e, "batch task end not recorded: the queue is full");
                    }
                }
                Output::Deployment(step) => {
                    if let Err(e) = self.state.deployments.try_send(step) {
                        // The driver decides the step again in a few seconds.
                        warn!(error = %e, "deployment step not written: the queue is full");
                    }
                }
                Output::MemberState(change) => self.member_state(change),
                Output::CutOff(Some(cut)) => warn!(
                    reachable = cut.reachable,
                    known = cut.known,
                    "cut off: this node reaches fewer than half of the members it knew; it keeps its own tasks and places no other until it reaches most of them again"
                ),
                Output::CutOff(None) => {
                    info!("no longer cut off: this node reaches most of the members it knew");
                }
                Output::Published(change) => {
                    if !change.joined.is_empty() || !change.left.is_empty() {
                        debug!(joined = ?change.joined, left = ?change.left, "placement view changed");
                    }
                    self.publish_live();
                }
            }
        }
        self.outputs = outputs;
        self.save_peers(false);
    }

    fn run_command(&mut self, c: Command) {
        match c {
            Command::Start {
                key,
                spec,
                job_version,
                stamp,
                attempt,
            }
            | Command::Replace {
                key,
                spec,
                job_version,
                stamp,
                attempt,
            } => {
                // The new start's checks begin when it runs.
                self.health.stop(&key);
                self.runtime.start(key, spec, job_version, stamp, attempt);
            }
            Command::Stop { key, reason } => {
                debug!(task = %key, %reason, "stopping task");
                self.health.stop(&key);
                self.runtime.stop(&key);
            }
        }
    }

    /// A task running here changed health: logged, and told to
    /// `/v1/events` watchers of this node.
    fn health_changed(&mut self, key: TaskKey, health: Health, check: Option<String>) {
        let output = check.as_deref().unwrap_or("");
        match health {
            Health::Unhealthy => warn!(task = %key, check = %output, "task unhealthy"),
            _ => info!(task = %key, health = health.as_str(), check = %output, "task health"),
        }
        let _ = self.task_events.send(TaskEvent {
            event: "health",
            task: key.to_string(),
            job: key.job.clone(),
            node: self.driver.view().me().to_string(),
            health,
            check,
        });
    }

    /// A member's state changed: told to `/v1/events` watchers.
    fn member_state(&mut self, change: shoal_core::MemberStateChange) {
        self.members_changed_at = Some(self.clock.now());
        let meta = change.meta.as_deref();
        let _ = self.member_events.send(MemberEvent {
            event: "state",
            id: change.id.to_string(),
            name: meta.map(|m| m.name.clone()),
            dc: meta.map(|m| m.dc.clone()),
            zone: meta.map(|m| m.zone.clone()),
            state: change.state.map_or("forgotten", MemberState::as_str),
            previous: change.previous.map(MemberState::as_str),
            node: self.driver.view().me().to_string(),
        });
    }

    fn gossip_event(&mut self, event: Event) {
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
            Event::SuspicionChanged { id, suspect } => {
                if suspect {
                    warn!(member = %id, "member suspect");
                } else {
                    info!(member = %id, "member no longer suspect");
                }
            }
            Event::MemberForgotten { id } => debug!(member = %id, "member forgotten"),
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
            Event::DatacenterUnreachable { dc } => warn!(
                dc = %dc,
                "datacenter unreachable from here: its members fail as this node sees them and nothing arrives from any of them"
            ),
            Event::DatacenterReachable { dc, after } => info!(
                dc = %dc,
                after_secs = after.as_secs(),
                "datacenter reachable from here again"
            ),
            Event::DigestDiffers { id, .. } => {
                // Full: a round is already queued; the next datagram retries.
                let _ = self.state.differs.try_send(id);
            }
            Event::Note { from, note } => {
                // No one listening (yet) is not an error.
                let _ = self.notes.send((from, note.into()));
            }
        }
    }

    /// Publishes the members that are up (alive or suspect, with a
    /// record), with their RPC addresses: the same members the core just
    /// handed its placer. A member that restarted gets a fresh connection.
    fn publish_live(&mut self) {
        let live: Vec<Peer> = self
            .driver
            .view()
            .membership()
            .members()
            .into_iter()
            .filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect))
            .filter_map(|m| {
                m.meta.as_ref().map(|meta| Peer {
                    id: m.identity.id,
                    rpc: meta.rpc_addr,
                    generation: m.identity.bump,
                    meta: meta.clone(),
                })
            })
            .collect();
        for p in &live {
            if let Some(old) = self.generations.insert(p.id, p.generation)
                && old != p.generation
            {
                self.senders.restarted(p.id, p.rpc);
            }
        }
        // Generations are kept for members that went down too: one that
        // comes back in a new life, at the same address, must not get the
        // connection to its dead predecessor (every request on it would
        // wait out its timeout).
        let addrs: BTreeMap<NodeId, SocketAddr> = live.iter().map(|p| (p.id, p.rpc)).collect();
        self.senders.set_peers(addrs);
        self.live_tx.send_replace(Arc::new(live));
    }

    fn save_peers(&mut self, force: bool) {
        if !self.peers_dirty {
            return;
        }
        let now = tokio::time::Instant::now();
        // More members than at the last save: saved at once, since the
        // count is what a node restarted with no network goes by (the
        // peers it cannot reach; see `NodeCore::start`).
        let active = self.driver.view().membership().num_active();
        if !force
            && active <= self.peers_saved_active
            && self
                .peers_saved_at
                .is_some_and(|t| now - t < PEERS_SAVE_PERIOD)
        {
            return;
        }
        let mut peers: Vec<SocketAddr> = self
            .driver
            .view()
            .membership()
            .members()
            .into_iter()
            .filter(|m| !m.local && matches!(m.state, MemberState::Alive | MemberState::Suspect))
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
                self.peers_saved_active = active;
            }
            Err(e) => warn!(error = %e, "could not save peers"),
        }
    }
}

fn log_placement(e: PlaceEvent) {
    match e {
        PlaceEvent::Awarded { key, node } => debug!(task = %key, node = %node, "awarded"),
        PlaceEvent::Pending { key, reasons } => {
            info!(task = %key, reasons = %reasons.join("; "), "task pending: no node has room")
        }
        PlaceEvent::Conflict { key, kept, stopped } => {
            info!(task = %key, kept = %kept, stopped = %stopped, "two nodes held a task; stopped one")
        }
        PlaceEvent::Lost { key, node } => {
            info!(task = %key, node = %node, "holder failed; placing the task again")
        }
        // The core publishes the class itself, and hands finished tasks
        // out as their own output.
        PlaceEvent::FreeClass(_) | PlaceEvent::Finished(_) | PlaceEvent::Deployment(_) => {}
        // The core task tells watchers.
        PlaceEvent::Health { .. } => {}
    }
}

async fn sleep_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
