//! The task that owns this node's [`Placer`]: it feeds it the live members
//! (from gossip), the jobs (from the desired state), the messages of other
//! nodes (over QUIC) and the runtime's reports; it sends its messages, runs
//! its commands on the process runtime, and publishes the free-capacity
//! class by gossip.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_gossip::{FreeClass, NodeId};
use shoal_model::JobSpec;
use shoal_placement::{
    Command, Event, ExitReason, Job, Msg, NodeInfo, PROTOCOL_VERSION, Placer, Resources, TaskKey,
    TaskState, TaskStatus,
};
use shoal_transport::{Service, Transport};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::clock::{Clock, unix_ms};
use crate::membership::MembershipHandle;
use crate::runtime::{LOG_MAX_BYTES, LocalTask, RuntimeEvent, Runtimes};
use crate::state::{Peer, StateHandle};
use shoal_state::JobView;

/// Messages sent to one peer in one call, at most.
const BATCH: usize = 64;
/// Queued messages per peer before new ones are dropped.
const QUEUE: usize = 4096;
/// How often the free-capacity class may be republished by gossip: each
/// change costs every node a 20-byte item `log N` times, so at 500,000
/// nodes a node changing class every 5 s costs each node about 100 B/s.
const FREE_CLASS_PERIOD: Duration = Duration::from_secs(5);
/// How often logs are checked for rotation.
const ROTATE_PERIOD: Duration = Duration::from_secs(5);

/// A batch of placement messages on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub struct Batch {
    /// [`PROTOCOL_VERSION`].
    pub version: u8,
    /// Messages, in order.
    pub msgs: Vec<Msg>,
}

/// Calls of the `Tasks` service.
#[derive(Debug, Serialize, Deserialize)]
pub enum TaskRequest {
    /// Status of tasks, as this node knows them.
    Status(Vec<TaskKey>),
    /// A piece of a task's log.
    Log {
        /// Task.
        key: TaskKey,
        /// stderr rather than stdout.
        stderr: bool,
        /// From this byte.
        offset: u64,
        /// At most this many bytes.
        max: u64,
    },
    /// Drain this node (or stop draining it).
    Drain(bool),
    /// Container and host ports of tasks running here.
    Local(Vec<TaskKey>),
}

/// Answers of the `Tasks` service.
#[derive(Debug, Serialize, Deserialize)]
pub enum TaskResponse {
    /// Statuses.
    Status(Vec<TaskStatus>),
    /// Log bytes, the next offset, the file's size.
    Log {
        /// Bytes.
        data: Vec<u8>,
        /// Where to read next.
        next: u64,
        /// Size of the file.
        size: u64,
    },
    /// Done.
    Drained,
    /// What the runtimes know of tasks running here.
    Local(Vec<(TaskKey, LocalTask)>),
}

enum Cmd {
    Msgs(NodeId, Vec<Msg>),
    Status(Vec<TaskKey>, oneshot::Sender<Vec<TaskStatus>>),
    KeysOf(String, oneshot::Sender<Vec<(TaskKey, Option<NodeId>)>>),
    Drain(bool, oneshot::Sender<()>),
    Used(oneshot::Sender<(Resources, Resources)>),
}

/// The placement task stopped.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the placement task has stopped (agent shutting down)")]
pub struct PlacementStopped;

/// Talks to the placement task.
#[derive(Clone, Debug)]
pub struct PlacementHandle {
    tx: mpsc::Sender<Cmd>,
}

impl PlacementHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Cmd,
    ) -> Result<T, PlacementStopped> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| PlacementStopped)?;
        rx.await.map_err(|_| PlacementStopped)
    }

    /// Hands messages from `from` to the placer.
    pub async fn deliver(&self, from: NodeId, msgs: Vec<Msg>) -> Result<(), PlacementStopped> {
        self.tx
            .send(Cmd::Msgs(from, msgs))
            .await
            .map_err(|_| PlacementStopped)
    }

    /// Status of tasks as this node knows them.
    pub async fn status(&self, keys: Vec<TaskKey>) -> Result<Vec<TaskStatus>, PlacementStopped> {
        self.ask(|tx| Cmd::Status(keys, tx)).await
    }

    /// A job's task keys and the node answering for each.
    pub async fn keys_of(
        &self,
        job: &str,
    ) -> Result<Vec<(TaskKey, Option<NodeId>)>, PlacementStopped> {
        self.ask(|tx| Cmd::KeysOf(job.to_owned(), tx)).await
    }

    /// Drains this node (or stops draining it).
    pub async fn drain(&self, on: bool) -> Result<(), PlacementStopped> {
        self.ask(|tx| Cmd::Drain(on, tx)).await
    }

    /// Capacity offered and resources held.
    pub async fn usage(&self) -> Result<(Resources, Resources), PlacementStopped> {
        self.ask(Cmd::Used).await
    }
}

/// Everything the task needs.
pub struct PlacementTask {
    placer: Placer,
    clock: Clock,
    rx: mpsc::Receiver<Cmd>,
    runtime: Runtimes,
    runtime_rx: mpsc::Receiver<RuntimeEvent>,
    live: watch::Receiver<Arc<Vec<Peer>>>,
    state: StateHandle,
    transport: Transport,
    membership: MembershipHandle,
    data_dir: Arc<crate::datadir::DataDir>,
    peers: BTreeMap<NodeId, SocketAddr>,
    generations: BTreeMap<NodeId, u32>,
    /// The metadata each member had when last handed to the placer.
    handed: BTreeMap<NodeId, Arc<shoal_gossip::MemberMeta>>,
    senders: BTreeMap<NodeId, mpsc::Sender<Msg>>,
    free_class: Option<u8>,
    free_class_published: tokio::time::Instant,
    rotated: tokio::time::Instant,
    shutdown: CancellationToken,
}

/// What the placement task is made of.
pub struct PlacementParts {
    /// This node.
    pub me: NodeId,
    /// Resources offered to tasks.
    pub capacity: Resources,
    /// Drained (kept across restarts).
    pub draining: bool,
    /// Real time.
    pub clock: Clock,
    /// The task runtimes.
    pub runtime: Runtimes,
    /// Its reports.
    pub runtime_rx: mpsc::Receiver<RuntimeEvent>,
    /// Live members.
    pub live: watch::Receiver<Arc<Vec<Peer>>>,
    /// The desired state.
    pub state: StateHandle,
    /// RPC.
    pub transport: Transport,
    /// Gossip (to publish the free-capacity class and the drain).
    pub membership: MembershipHandle,
    /// The data dir (to persist the drain).
    pub data_dir: Arc<crate::datadir::DataDir>,
    /// Tasks found running at start-up.
    pub adopted: Vec<shoal_placement::Adopted>,
    /// Stop.
    pub shutdown: CancellationToken,
}

impl PlacementTask {
    /// Creates the task.
    pub fn new(parts: PlacementParts) -> (PlacementTask, PlacementHandle) {
        let PlacementParts {
            me,
            capacity,
            draining,
            clock,
            runtime,
            runtime_rx,
            live,
            state,
            transport,
            membership,
            data_dir,
            adopted,
            shutdown,
        } = parts;
        let (tx, rx) = mpsc::channel(1024);
        let now = clock.now();
        let mut placer = Placer::new(
            me,
            shoal_placement::PlacementConfig::default(),
            capacity,
            now,
        );
        if draining {
            placer.set_draining(now, unix_ms(), true);
        }
        if !adopted.is_empty() {
            placer.adopt(now, unix_ms(), adopted);
        }
        let task = PlacementTask {
            placer,
            clock,
            rx,
            runtime,
            runtime_rx,
            live,
            state,
            transport,
            membership,
            data_dir,
            peers: BTreeMap::new(),
            generations: BTreeMap::new(),
            handed: BTreeMap::new(),
            senders: BTreeMap::new(),
            free_class: None,
            free_class_published: tokio::time::Instant::now(),
            rotated: tokio::time::Instant::now(),
            shutdown,
        };
        (task, PlacementHandle { tx })
    }

    /// Runs until shutdown. Tasks keep running after the agent stops: a
    /// restarted agent adopts them.
    pub async fn run(mut self) {
        let mut job_events = self.state.subscribe();
        self.refresh_members();
        self.refresh_jobs().await;
        self.flush();
        loop {
            let tick = self.clock.deadline(self.placer.next_tick());
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                Some(cmd) = self.rx.recv() => self.command(cmd),
                Some(ev) = self.runtime_rx.recv() => self.runtime_event(ev),
                changed = self.live.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.refresh_members();
                }
                                ev = job_events.recv() => {
                    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
                    // Several changes at once make one refresh of the jobs
                    // they name; missed events (a lagging receiver), one
                    // refresh of every job.
                    let mut names = BTreeSet::new();
                    let mut lagged = false;
                    match ev {
                        Ok(ev) => {
                            names.insert(ev.name().to_owned());
                        }
                        Err(RecvError::Lagged(_)) => lagged = true,
                        Err(RecvError::Closed) => break,
                    }
                    loop {
                        match job_events.try_recv() {
                            Ok(ev) => {
                                names.insert(ev.name().to_owned());
                            }
                            Err(TryRecvError::Lagged(_)) => lagged = true,
                            Err(_) => break,
                        }
                    }
                    if lagged {
                        self.refresh_jobs().await;
                    } else {
                        self.refresh_named(names.into_iter().collect()).await;
                    }
                }
                () = tokio::time::sleep_until(tick) => {
                    let now = self.clock.now();
                    self.placer.handle_tick(now, unix_ms());
                    self.housekeeping();
                }
            }
            self.flush();
        }
        debug!("placement task stopped");
    }

    fn command(&mut self, cmd: Cmd) {
        let (now, wall) = (self.clock.now(), unix_ms());
        match cmd {
            Cmd::Msgs(from, msgs) => {
                for m in msgs {
                    self.placer.handle_message(now, wall, from, m);
                }
            }
            Cmd::Status(keys, tx) => {
                let _ = tx.send(self.placer.status(&keys));
            }
            Cmd::KeysOf(job, tx) => {
                let _ = tx.send(self.placer.keys_of(&job));
            }
            Cmd::Drain(on, tx) => {
                info!(draining = on, "drain");
                self.placer.set_draining(now, wall, on);
                let membership = self.membership.clone();
                let data_dir = self.data_dir.clone();
                tokio::spawn(async move {
                    if let Ok(mut meta) = membership.meta().await {
                        meta.draining = on;
                        let _ = membership.set_meta(meta).await;
                    }
                    match data_dir.load_settings() {
                        Ok(mut s) => {
                            s.draining = Some(on);
                            if let Err(e) = data_dir.store_settings(&s) {
                                warn!(error = %e, "could not persist the drain");
                            }
                        }
                        Err(e) => warn!(error = %e, "could not persist the drain"),
                    }
                    let _ = tx.send(());
                });
            }
            Cmd::Used(tx) => {
                let _ = tx.send((self.placer.capacity(), self.placer.used_resources()));
            }
        }
    }

    fn runtime_event(&mut self, ev: RuntimeEvent) {
        let (now, wall) = (self.clock.now(), unix_ms());
        match ev {
            RuntimeEvent::Running(key) => self.placer.task_running(now, wall, &key),
            RuntimeEvent::Exited(key, why) => {
                match &why {
                    ExitReason::Stopped => debug!(task = %key, "task stopped"),
                    ExitReason::StartFailed(m) => {
                        warn!(task = %key, reason = %m, "task could not start")
                    }
                    other => info!(task = %key, reason = ?other, "task ended"),
                }
                self.placer.task_exited(now, wall, &key, why);
            }
        }
    }

    fn refresh_members(&mut self) {
        let live = self.live.borrow_and_update().clone();
        // A peer that restarted: its old connection and queue are dead.
        for p in live.iter() {
            if let Some(old) = self.generations.insert(p.id, p.generation)
                && old != p.generation
            {
                self.transport.disconnect(p.rpc);
                self.senders.remove(&p.id);
            }
        }
        self.peers = live.iter().map(|p| (p.id, p.rpc)).collect();
        // Only what changed goes to the placer: most changes are one
        // member's free-capacity class, and a record that did not change
        // is the same allocation as before.
        let mut changed = Vec::new();
        for p in live.iter() {
            if self
                .handed
                .get(&p.id)
                .is_some_and(|m| Arc::ptr_eq(m, &p.meta))
            {
                continue;
            }
            self.handed.insert(p.id, p.meta.clone());
            changed.push(Arc::new(NodeInfo::from_meta(p.id, &p.meta)));
        }
        let gone: Vec<NodeId> = self
            .handed
            .keys()
            .filter(|id| !self.peers.contains_key(id))
            .copied()
            .collect();
        for id in &gone {
            self.handed.remove(id);
        }
        let (now, wall) = (self.clock.now(), unix_ms());
        self.placer.update_members(now, wall, changed, &gone);
        // Forget the queues of members that are gone.
        self.senders.retain(|id, _| self.peers.contains_key(id));
    }

    /// Hands every job to the placer (at start-up, and after missing job
    /// events).
    async fn refresh_jobs(&mut self) {
        let Ok(views) = self.state.jobs(true).await else {
            return;
        };
        let jobs = views
            .into_iter()
            .filter_map(|v| Self::placeable(Some(v)))
            .collect();
        let (now, wall) = (self.clock.now(), unix_ms());
        self.placer.set_jobs(now, wall, jobs);
    }

    /// Hands the placer the jobs named (those that changed).
    async fn refresh_named(&mut self, names: Vec<String>) {
        let Ok(views) = self.state.jobs_named(names).await else {
            return;
        };
        let mut changed = Vec::new();
        let mut removed = Vec::new();
        for (name, view) in views {
            match Self::placeable(view) {
                Some(job) => changed.push(job),
                None => removed.push(name),
            }
        }
        let (now, wall) = (self.clock.now(), unix_ms());
        self.placer.update_jobs(now, wall, changed, &removed);
    }

    /// What the placer should work from: the job's spec, or nothing when
    /// the job is gone or concurrent edits merged it into an invalid spec
    /// (not run until someone writes a valid one: every node decides the
    /// same from the same replica, whatever it saw before).
    fn placeable(view: Option<JobView>) -> Option<Job> {
        let v = view?;
        if v.invalid.is_some() && !v.deleted {
            return None;
        }
        let spec = serde_json::from_value::<JobSpec>(v.spec).ok()?;
        Some(Job {
            spec: Arc::new(spec),
            version: v.version,
            deleted: v.deleted,
        })
    }

    fn housekeeping(&mut self) {
        let now = tokio::time::Instant::now();
        if now.duration_since(self.rotated) >= ROTATE_PERIOD {
            self.rotated = now;
            let rt = self.runtime.clone();
            tokio::task::spawn_blocking(move || rt.rotate_logs(LOG_MAX_BYTES));
        }
        if let Some(class) = self.free_class
            && now.duration_since(self.free_class_published) >= FREE_CLASS_PERIOD
        {
            self.free_class = None;
            self.free_class_published = now;
            let membership = self.membership.clone();
            tokio::spawn(async move {
                if let Ok(mut meta) = membership.meta().await
                    && meta.free_class.0 != class
                {
                    meta.free_class = FreeClass(class);
                    let _ = membership.set_meta(meta).await;
                }
            });
        }
    }

    /// Sends, runs and logs what the placer produced; messages to this
    /// node are handled at once.
    fn flush(&mut self) {
        let me = self.placer.me();
        for _ in 0..1000 {
            let mut local = Vec::new();
            while let Some((to, msg)) = self.placer.poll_message() {
                if to == me {
                    local.push(msg);
                } else {
                    self.send(to, msg);
                }
            }
            while let Some(c) = self.placer.poll_command() {
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
                    } => self.runtime.start(key, spec, job_version, stamp, attempt),
                    Command::Stop { key, reason } => {
                        debug!(task = %key, %reason, "stopping task");
                        self.runtime.stop(&key);
                    }
                }
            }
            while let Some(e) = self.placer.poll_event() {
                match e {
                    Event::Awarded { key, node } => debug!(task = %key, node = %node, "awarded"),
                    Event::Pending { key, reasons } => {
                        info!(task = %key, reasons = %reasons.join("; "), "task pending: no node has room")
                    }
                    Event::Conflict { key, kept, stopped } => {
                        info!(task = %key, kept = %kept, stopped = %stopped, "two nodes held a task; stopped one")
                    }
                    Event::Lost { key, node } => {
                        info!(task = %key, node = %node, "holder failed; placing the task again")
                    }
                    Event::FreeClass(c) => self.free_class = Some(c),
                }
            }
            if local.is_empty() {
                break;
            }
            let (now, wall) = (self.clock.now(), unix_ms());
            for m in local {
                self.placer.handle_message(now, wall, me, m);
            }
        }
    }

    /// Queues a message to a peer; one sender per peer keeps them in order
    /// and batches them.
    fn send(&mut self, to: NodeId, msg: Msg) {
        let Some(addr) = self.peers.get(&to).copied() else {
            debug!(to = %to, "message to an unknown peer dropped");
            return;
        };
        let tx = self.senders.entry(to).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(peer_sender(self.transport.clone(), to, addr, rx));
            tx
        });
        if tx.try_send(msg).is_err() {
            debug!(to = %to, "placement queue full; message dropped");
        }
    }
}

async fn peer_sender(
    transport: Transport,
    to: NodeId,
    addr: SocketAddr,
    mut rx: mpsc::Receiver<Msg>,
) {
    while let Some(first) = rx.recv().await {
        let mut msgs = vec![first];
        while msgs.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => msgs.push(m),
                Err(_) => break,
            }
        }
        let body = postcard::to_allocvec(&Batch {
            version: PROTOCOL_VERSION,
            msgs,
        })
        .expect("batches encode");
        if let Err(e) = transport.request(to, addr, Service::Placement, &body).await {
            // A lost message is a missing bid or a late lease: the placer
            // copes.
            debug!(to = %to, error = %e, "placement messages lost");
        }
    }
}

/// A task as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    /// `job/index` or `job@node`.
    pub task: String,
    /// Job.
    pub job: String,
    /// Index (service and batch jobs).
    pub index: Option<u32>,
    /// Node id.
    pub node: Option<String>,
    /// Node name.
    pub node_name: Option<String>,
    /// State.
    pub state: String,
    /// Since (RFC 3339).
    pub since: Option<String>,
    /// Restarts.
    pub restarts: u32,
    /// Last exit code.
    pub exit_code: Option<i32>,
    /// Why it last stopped.
    pub reason: Option<String>,
    /// Why no node took it, one line per node.
    pub pending: Vec<String>,
    /// Container id, for docker tasks running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Host port of each named port, for docker tasks running now.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u16>,
}

/// Status of every task of `job`, asking the node that answers for each
/// (its coordinator; for system jobs, the node itself).
pub async fn job_tasks(
    placement: &PlacementHandle,
    transport: &Transport,
    live: &[Peer],
    job: &str,
) -> Result<Vec<TaskView>, PlacementStopped> {
    let keys = placement.keys_of(job).await?;
    let me = transport.local();
    let addrs: BTreeMap<NodeId, SocketAddr> = live.iter().map(|p| (p.id, p.rpc)).collect();
    let names: BTreeMap<NodeId, String> =
        live.iter().map(|p| (p.id, p.meta.name.clone())).collect();
    let system = keys.iter().any(|(k, _)| k.index_number().is_none());
    let mut by_owner: BTreeMap<Option<NodeId>, Vec<TaskKey>> = BTreeMap::new();
    for (k, owner) in keys {
        by_owner.entry(owner).or_default().push(k);
    }
    let mut statuses: Vec<TaskStatus> = Vec::new();
    let mut asks = Vec::new();
    for (owner, keys) in by_owner {
        match owner {
            Some(o) if o == me => statuses.extend(placement.status(keys).await?),
            Some(o) => {
                let Some(addr) = addrs.get(&o).copied() else {
                    statuses.extend(unreachable(keys, "its coordinator is not a live member"));
                    continue;
                };
                let transport = transport.clone();
                asks.push(tokio::spawn(async move {
                    let body =
                        postcard::to_allocvec(&TaskRequest::Status(keys.clone())).expect("encodes");
                    match transport.request(o, addr, Service::Tasks, &body).await {
                        Ok(answer) => match postcard::from_bytes::<TaskResponse>(&answer) {
                            Ok(TaskResponse::Status(s)) => s,
                            _ => unreachable(keys, "its coordinator answered nonsense"),
                        },
                        Err(e) => {
                            unreachable(keys, &format!("its coordinator did not answer: {e}"))
                        }
                    }
                }));
            }
            None => statuses.extend(unreachable(keys, "no live node")),
        }
    }
    for a in asks {
        if let Ok(s) = a.await {
            statuses.extend(s);
        }
    }
    let mut views: Vec<TaskView> = statuses
        .into_iter()
        // A system job has a task only where a node is eligible.
        .filter(|s| !(system && s.state == TaskState::Pending && s.pending.is_empty()))
        .map(|s| TaskView {
            task: s.key.to_string(),
            job: s.key.job.clone(),
            index: s.key.index_number(),
            node: s.node.map(|n| n.to_string()),
            node_name: s.node.and_then(|n| names.get(&n).cloned()),
            state: s.state.as_str().to_owned(),
            since: (s.since_ms > 0).then(|| shoal_state::rfc3339(s.since_ms)),
            restarts: s.restarts,
            exit_code: s.exit_code,
            reason: s.reason,
            pending: s.pending,
            container: None,
            ports: BTreeMap::new(),
        })
        .collect();
    views.sort_by(|a, b| (a.index, &a.task).cmp(&(b.index, &b.task)));
    Ok(views)
}

fn unreachable(keys: Vec<TaskKey>, why: &str) -> Vec<TaskStatus> {
    keys.into_iter()
        .map(|key| TaskStatus {
            key,
            node: None,
            state: TaskState::Pending,
            restarts: 0,
            exit_code: None,
            reason: Some(why.to_owned()),
            since_ms: 0,
            pending: vec![format!("status unknown: {why}")],
        })
        .collect()
}

/// Where a task runs: its holder according to its coordinator.
pub async fn holder_of(
    placement: &PlacementHandle,
    transport: &Transport,
    live: &[Peer],
    key: &TaskKey,
) -> Result<Option<NodeId>, PlacementStopped> {
    let tasks = job_tasks(placement, transport, live, &key.job).await?;
    Ok(tasks
        .into_iter()
        .find(|t| t.task == key.to_string())
        .and_then(|t| t.node)
        .and_then(|n| n.parse().ok()))
}
