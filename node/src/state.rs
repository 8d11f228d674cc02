//! The task that owns the desired-state replica.
//!
//! It serves the API (writes are fsynced before they are answered; writes
//! that arrive together share one fsync), answers peers' sync requests,
//! runs an anti-entropy round with any member whose gossip carries a
//! different state digest (and, as a safety net, with a random live peer
//! every [`SYNC_PERIOD`]), pushes fresh changes to a few peers, drops expired tombstones and
//! compacts the log.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rand::seq::IndexedRandom;
use shoal_gossip::NodeId;
use shoal_state::{
    ArtifactOp, ArtifactRecord, DeployAction, HistoryEntry, InstallOp, Installation, JobEvent,
    JobView, PersistOp, Store, SyncRequest, SyncResponse, TaskOutcome, TriggerOp, TriggerRecord,
    Write, WriteError, Written,
};
use shoal_transport::{Handler, Service, Transport};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::clock::unix_ms;
use crate::statelog::StateLog;

/// How often a node runs an anti-entropy round with a random peer whatever
/// the gossiped digests say: a safety net, since a differing digest starts
/// a round within a gossip period anyway. Ten minutes because at idle
/// this round is all the RPC traffic there is, and each one opens a QUIC
/// connection to a random peer (connections idle out after 20 s), a TLS
/// handshake with both certificates: about 16 KB on the wire. Every 30 s
/// it was 550 B/s per agent, twice gossip's own traffic (measured with
/// `bench-membership`, docs/benchmarks.md "Quiet at idle").
pub const SYNC_PERIOD: Duration = Duration::from_secs(600);
/// The round period after start-up and while recovering damaged state.
pub const SYNC_PERIOD_EAGER: Duration = Duration::from_secs(1);
/// Gossiped in place of an empty replica's digest (zero means "no state
/// digest" on the gossip wire).
const EMPTY_DIGEST: u64 = 0x5348_4f41_4c5f_3030;
/// Writes applied before one fsync at most.
const BATCH: usize = 256;
/// How often tombstones are checked for expiry.
const EXPIRE_PERIOD: Duration = Duration::from_secs(60);

/// A live member (this node included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Node id.
    pub id: NodeId,
    /// RPC (QUIC) address.
    pub rpc: SocketAddr,
    /// Its start counter: a change means a new process behind the address.
    pub generation: u32,
    /// Its metadata.
    pub meta: Arc<shoal_gossip::MemberMeta>,
}

/// What joins the state task to the node core's task (see
/// [`crate::core_task::StateLink`] for the other end).
pub struct GossipLink {
    /// Where the replica's digest is published.
    pub digest: watch::Sender<u64>,
    /// Members seen gossiping a different digest.
    pub differs: mpsc::Receiver<NodeId>,
}

/// The state task has stopped.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the state task has stopped (agent shutting down)")]
pub struct StateStopped;

/// A write failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    /// Refused by the store; nothing was written.
    #[error(transparent)]
    Rejected(#[from] WriteError),
    /// Applied in memory but not made durable: the write is not
    /// acknowledged (the node will not restart with it).
    #[error("could not persist the change: {0}")]
    Persist(String),
    /// The task stopped.
    #[error(transparent)]
    Stopped(#[from] StateStopped),
}

enum Command {
    Write(Write, oneshot::Sender<Result<Written, SubmitError>>),
    Record(Record, oneshot::Sender<Result<bool, SubmitError>>),
    Ready(Ready, oneshot::Sender<Result<bool, SubmitError>>),
    Jobs(bool, oneshot::Sender<Vec<JobView>>),
    JobsShared(bool, oneshot::Sender<Vec<Arc<JobView>>>),
    Job(String, oneshot::Sender<Option<JobView>>),
    JobsNamed(Vec<String>, oneshot::Sender<Vec<(String, Option<JobView>)>>),
    History(String, oneshot::Sender<Option<Vec<HistoryEntry>>>),
    Remote(NodeId, SyncRequest, oneshot::Sender<SyncResponse>),
    BeginRound(oneshot::Sender<SyncRequest>),
    Response(NodeId, SyncResponse, oneshot::Sender<Option<SyncRequest>>),
    Status(oneshot::Sender<StateStatus>),
    Deploy(
        DeployRequest,
        oneshot::Sender<Result<DeployReply, SubmitError>>,
    ),
    Install(
        InstallRequest,
        oneshot::Sender<Result<InstallReply, SubmitError>>,
    ),
    Trigger(
        TriggerRequest,
        oneshot::Sender<Result<TriggerReply, SubmitError>>,
    ),
    Repo(
        RepoRequest,
        oneshot::Sender<Result<Vec<shoal_state::Repository>, SubmitError>>,
    ),
    Acl(AclRequest, oneshot::Sender<Result<AclReply, SubmitError>>),
    Artifact(
        ArtifactRequest,
        oneshot::Sender<Result<ArtifactReply, SubmitError>>,
    ),
}

/// A stored artifact's read or write, for the state task.
#[derive(Clone, Debug)]
pub enum ArtifactRequest {
    /// Every record (removed ones too when set).
    List(bool),
    /// One record, by digest (hex).
    Get(String),
    /// A write, by digest (hex).
    Write(String, ArtifactOp),
}

/// What an [`ArtifactRequest`] gave.
#[derive(Clone, Debug)]
pub enum ArtifactReply {
    /// Records.
    List(Vec<ArtifactRecord>),
    /// One record (`None`: unknown), or the one just written.
    One(Option<Box<ArtifactRecord>>),
}

/// A package installation's read or write, for the state task.
#[derive(Clone, Debug)]
pub enum InstallRequest {
    /// Every installation (uninstalled ones too when set).
    List(bool),
    /// One installation.
    Get(String),
    /// A write.
    Write(String, InstallOp),
}

/// A trigger's read or write, for the state task.
#[derive(Clone, Debug)]
pub enum TriggerRequest {
    /// Every trigger (deleted ones too when set).
    List(bool),
    /// One trigger.
    Get(String),
    /// A write.
    Write(String, TriggerOp),
}

/// What a [`TriggerRequest`] gave.
#[derive(Clone, Debug)]
pub enum TriggerReply {
    /// Triggers.
    List(Vec<TriggerRecord>),
    /// One trigger (`None`: unknown), or the one just written.
    One(Option<Box<TriggerRecord>>),
}

/// A package repository read or write, for the state task.
#[derive(Clone, Debug)]
pub enum RepoRequest {
    /// The repositories in lookup order.
    List,
    /// Add one (first in the list when set).
    Add {
        /// Its name.
        name: String,
        /// `dir:PATH` or an http(s) URL.
        url: String,
        /// First in the list rather than last.
        first: bool,
    },
    /// Remove one.
    Remove(String),
}

/// An ACL write, for the state task (reads come from the
/// [`StateHandle::acl`] table).
#[derive(Clone, Debug)]
pub enum AclRequest {
    /// Create or replace a policy.
    PutPolicy(shoal_model::acl::Policy),
    /// Delete a policy.
    DeletePolicy(String),
    /// Store a token.
    CreateToken(shoal_state::NewToken),
    /// Revoke a token by accessor.
    Revoke(String),
    /// Store a secret: name, sealed value, the token's name.
    PutSecret(String, String, Option<String>),
    /// Remove a secret.
    RemoveSecret(String),
    /// Forget a node for good: its id, its name, the token's name.
    ForgetNode(String, String, Option<String>),
    /// Install a gossip key: its id, sealed value, the token's name.
    KeyInstall(String, String, Option<String>),
    /// Seal gossip with a key: its id, the token's name.
    KeyUse(String, Option<String>),
    /// Remove a gossip key: its id, the token's name.
    KeyRemove(String, Option<String>),
}

/// What an [`AclRequest`] wrote.
#[derive(Clone, Debug)]
pub enum AclReply {
    /// The policy written or deleted.
    Policy(shoal_model::acl::Policy),
    /// The token stored or revoked.
    Token(Box<shoal_state::AclToken>),
    /// The secret stored or removed.
    Secret(shoal_state::SecretRecord),
    /// The node forgotten.
    Forgotten(shoal_state::ForgottenNode),
    /// The gossip key installed or removed.
    Key(shoal_state::GossipKeyRecord),
    /// The gossip key chosen.
    Primary(shoal_state::GossipPrimary),
}

/// What an [`InstallRequest`] gave.
#[derive(Clone, Debug)]
pub enum InstallReply {
    /// Installations.
    List(Vec<Installation>),
    /// One installation (`None`: unknown), or the one just written.
    One(Option<Box<Installation>>),
}

/// A rolling deployment's read or write, for the state task.
#[derive(Clone, Debug)]
pub enum DeployRequest {
    /// Every deployment of a job, oldest first.
    List(String),
    /// A step its driver decided.
    Step(shoal_placement::DeployStep),
    /// Promote, fail, pause or resume the latest one.
    Act(String, DeployAction),
    /// Write the spec a job had at a version as a new version.
    Revert(String, u64),
}

/// What a [`DeployRequest`] gave.
#[derive(Clone, Debug)]
pub enum DeployReply {
    /// The deployments (`None`: no such job).
    List(Option<Vec<shoal_model::Deployment>>),
    /// Whether a step was written.
    Stepped(bool),
    /// The deployment after an action.
    Acted(shoal_model::Deployment),
    /// The job after a revert.
    Reverted(Box<Written>),
}

/// A batch task that finished for good, to record in its job's document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The job.
    pub job: String,
    /// The task's index.
    pub index: u32,
    /// How it finished.
    pub outcome: TaskOutcome,
}

/// A job that another waits for (`after`), found ready: to record in the
/// waiting job's document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    /// The waiting job.
    pub job: String,
    /// The job found ready.
    pub dep: String,
    /// The node that found it (its id).
    pub node: String,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
}

/// Counters and status of the replica.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StateStatus {
    /// Documents held (deleted jobs included).
    pub docs: u64,
    /// Whether the node is recovering state from peers after finding its
    /// files damaged.
    pub recovering: bool,
    /// Rounds that found the peer in sync.
    pub rounds_in_sync: u64,
    /// Rounds that exchanged changes.
    pub rounds_synced: u64,
    /// Rounds that failed (peer unreachable, timeout).
    pub rounds_failed: u64,
    /// Payload bytes of rounds that found the peer in sync (both ways).
    pub in_sync_bytes: u64,
    /// Payload bytes of all rounds (both ways).
    pub round_bytes: u64,
    /// Pushes sent.
    pub pushes: u64,
    /// Bytes of pushes sent.
    pub push_bytes: u64,
    /// Changes appended to the log.
    pub persisted: u64,
    /// Messages from peers that could not be used, by reason.
    pub rejected: Vec<(String, u64)>,
}

#[derive(Debug, Default)]
struct Counters {
    rounds_in_sync: AtomicU64,
    rounds_synced: AtomicU64,
    rounds_failed: AtomicU64,
    in_sync_bytes: AtomicU64,
    round_bytes: AtomicU64,
    pushes: AtomicU64,
    push_bytes: AtomicU64,
    persisted: AtomicU64,
}

/// Talks to the state task.
#[derive(Clone, Debug)]
pub struct StateHandle {
    tx: mpsc::Sender<Command>,
    events: broadcast::Sender<JobEvent>,
    acl: watch::Receiver<Arc<crate::acl::AclTable>>,
    recovering: Arc<AtomicBool>,
}

impl StateHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, StateStopped> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| StateStopped)?;
        rx.await.map_err(|_| StateStopped)
    }

    /// Applies a write and makes it durable.
    pub async fn write(&self, w: Write) -> Result<Written, SubmitError> {
        self.ask(|tx| Command::Write(w, tx)).await?
    }

    /// Records that a batch task finished for good and makes it durable:
    /// whether it was news (see [`Store::record`]).
    pub async fn record(&self, r: Record) -> Result<bool, SubmitError> {
        self.ask(|tx| Command::Record(r, tx)).await?
    }

    /// Records that a job another waits for was found ready, once
    /// persisted; `Ok(false)` when there was nothing to record.
    pub async fn mark_ready(&self, r: Ready) -> Result<bool, SubmitError> {
        self.ask(|tx| Command::Ready(r, tx)).await?
    }

    /// Every job (deleted ones too when asked).
    pub async fn jobs(&self, deleted: bool) -> Result<Vec<JobView>, StateStopped> {
        self.ask(|tx| Command::Jobs(deleted, tx)).await
    }

    /// Every job as shared views (nothing copied): for lists of many jobs.
    pub async fn jobs_shared(&self, deleted: bool) -> Result<Vec<Arc<JobView>>, StateStopped> {
        self.ask(|tx| Command::JobsShared(deleted, tx)).await
    }

    /// One job.
    pub async fn job(&self, name: &str) -> Result<Option<JobView>, StateStopped> {
        self.ask(|tx| Command::Job(name.to_owned(), tx)).await
    }

    /// Some jobs (deleted ones included), each with its name; `None` for a
    /// name the replica does not hold.
    pub async fn jobs_named(
        &self,
        names: Vec<String>,
    ) -> Result<Vec<(String, Option<JobView>)>, StateStopped> {
        self.ask(|tx| Command::JobsNamed(names, tx)).await
    }

    /// A job's history.
    pub async fn history(&self, name: &str) -> Result<Option<Vec<HistoryEntry>>, StateStopped> {
        self.ask(|tx| Command::History(name.to_owned(), tx)).await
    }

    /// A rolling deployment's read or write (made durable before the
    /// reply, like a write).
    pub async fn deploy(&self, r: DeployRequest) -> Result<DeployReply, SubmitError> {
        self.ask(|tx| Command::Deploy(r, tx)).await?
    }

    /// A package installation's read or write (a write made durable
    /// before the reply).
    pub async fn install(&self, r: InstallRequest) -> Result<InstallReply, SubmitError> {
        self.ask(|tx| Command::Install(r, tx)).await?
    }

    /// Reads or writes triggers: the list, one, or the one written (once
    /// persisted).
    pub async fn trigger(&self, r: TriggerRequest) -> Result<TriggerReply, SubmitError> {
        self.ask(|tx| Command::Trigger(r, tx)).await?
    }

    /// Reads or writes the package repositories: the list in lookup
    /// order, or the one written (once persisted).
    pub async fn repos(&self, r: RepoRequest) -> Result<Vec<shoal_state::Repository>, SubmitError> {
        self.ask(|tx| Command::Repo(r, tx)).await?
    }

    /// An ACL write, made durable (and in this node's [`StateHandle::acl`]
    /// table) before the reply.
    pub async fn acl_write(&self, r: AclRequest) -> Result<AclReply, SubmitError> {
        self.ask(|tx| Command::Acl(r, tx)).await?
    }

    /// The tokens, policies and secrets this node knows, kept current by
    /// the task.
    pub fn acl(&self) -> Arc<crate::acl::AclTable> {
        self.acl.borrow().clone()
    }

    /// The same table, to watch.
    pub fn acl_watch(&self) -> watch::Receiver<Arc<crate::acl::AclTable>> {
        self.acl.clone()
    }

    /// A stored artifact's read or write (a write made durable before the
    /// reply).
    pub async fn artifact(&self, r: ArtifactRequest) -> Result<ArtifactReply, SubmitError> {
        self.ask(|tx| Command::Artifact(r, tx)).await?
    }

    /// Counters and status.
    pub async fn status(&self) -> Result<StateStatus, StateStopped> {
        self.ask(Command::Status).await
    }

    /// Job events as they happen (local and replicated).
    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.events.subscribe()
    }

    /// Whether the node is still recovering damaged state from peers.
    pub fn recovering(&self) -> bool {
        self.recovering.load(Ordering::Relaxed)
    }
}

/// Writers waiting for their changes to reach the disk: each is answered
/// with its result once they did, or with the error that kept them off it.
#[derive(Default)]
struct Pending(Vec<Answer>);

/// Answers one writer: persisted (`None`), or why not.
type Answer = Box<dyn FnOnce(Option<&str>) + Send>;

impl Pending {
    fn add<T: Send + 'static>(&mut self, value: T, reply: oneshot::Sender<Result<T, SubmitError>>) {
        self.0.push(Box::new(move |failed: Option<&str>| {
            let _ = reply.send(match failed {
                None => Ok(value),
                Some(e) => Err(SubmitError::Persist(e.to_owned())),
            });
        }));
    }

    /// Answers every writer: persisted, unless `failed` says why not.
    fn answer(self, failed: Option<String>) {
        for reply in self.0 {
            reply(failed.as_deref());
        }
    }
}

/// Serves peers' sync requests by handing them to the state task.
struct RpcHandler {
    tx: mpsc::Sender<Command>,
}

impl Handler for RpcHandler {
    fn handle(
        &self,
        from: NodeId,
        service: Service,
        body: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, String>> + Send>> {
        let tx = self.tx.clone();
        Box::pin(async move {
            if service != Service::State {
                return Err(format!(
                    "service {service:?} is not served by this node yet"
                ));
            }
            let request: SyncRequest =
                postcard::from_bytes(&body).map_err(|e| format!("malformed sync request: {e}"))?;
            let (reply, rx) = oneshot::channel();
            tx.send(Command::Remote(from, request, reply))
                .await
                .map_err(|_| "shutting down".to_owned())?;
            let response = rx.await.map_err(|_| "shutting down".to_owned())?;
            Ok(postcard::to_allocvec(&response).expect("responses encode"))
        })
    }
}

/// The handler to serve on the RPC transport.
pub fn rpc_handler(handle: &StateHandle) -> Arc<dyn Handler> {
    Arc::new(RpcHandler {
        tx: handle.tx.clone(),
    })
}

/// Everything the task needs.
pub struct StateTask {
    store: Store,
    log: StateLog,
    transport: Transport,
    peers: watch::Receiver<Arc<Vec<Peer>>>,
    rx: mpsc::Receiver<Command>,
    self_tx: mpsc::Sender<Command>,
    events: broadcast::Sender<JobEvent>,
    acl: watch::Sender<Arc<crate::acl::AclTable>>,
    recovering: Arc<AtomicBool>,
    counters: Arc<Counters>,
    round_in_flight: Arc<AtomicBool>,
    gossip: GossipLink,
    shutdown: CancellationToken,
    state_dir: PathBuf,
}

impl StateTask {
    /// A task for `store` (already restored from `log`).
    pub fn new(
        store: Store,
        log: StateLog,
        transport: Transport,
        peers: watch::Receiver<Arc<Vec<Peer>>>,
        recovering: bool,
        gossip: GossipLink,
        shutdown: CancellationToken,
    ) -> (StateTask, StateHandle) {
        let (tx, rx) = mpsc::channel(1024);
        let (events, _) = broadcast::channel(1024);
        let recovering = Arc::new(AtomicBool::new(recovering));
        let (acl, acl_rx) = watch::channel(Arc::new(crate::acl::AclTable::from_store(&store)));
        let handle = StateHandle {
            tx: tx.clone(),
            events: events.clone(),
            acl: acl_rx,
            recovering: recovering.clone(),
        };
        let state_dir = log.dir().to_owned();
        let task = StateTask {
            store,
            log,
            transport,
            peers,
            rx,
            self_tx: tx,
            events,
            acl,
            recovering,
            counters: Arc::new(Counters::default()),
            round_in_flight: Arc::new(AtomicBool::new(false)),
            gossip,
            shutdown,
            state_dir,
        };
        (task, handle)
    }

    /// Runs until shutdown.
    pub async fn run(mut self) {
        self.publish_digest();
        let mut next_round = tokio::time::Instant::now() + SYNC_PERIOD_EAGER;
        let mut expire = tokio::time::interval(EXPIRE_PERIOD);
        expire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                command = self.rx.recv() => {
                    let Some(first) = command else { break };
                    let mut batch = vec![first];
                    while batch.len() < BATCH {
                        match self.rx.try_recv() {
                            Ok(c) => batch.push(c),
                            Err(_) => break,
                        }
                    }
                    self.turn(batch);
                }
                                Some(peer) = self.gossip.differs.recv() => self.start_round(Some(peer)),
                () = tokio::time::sleep_until(next_round) => {
                    self.start_round(None);
                    let period = if self.recovering.load(Ordering::Relaxed) {
                        SYNC_PERIOD_EAGER
                    } else {
                        SYNC_PERIOD
                    };
                    next_round = tokio::time::Instant::now() + period;
                }
                _ = expire.tick() => {
                    self.store.expire(unix_ms());
                    self.after_turn(Pending::default());
                }
            }
        }
        debug!("state task stopped");
    }

    fn turn(&mut self, batch: Vec<Command>) {
        let mut pending = Pending::default();
        for command in batch {
            match command {
                Command::Artifact(r, reply) => {
                    let done = match r {
                        ArtifactRequest::List(deleted) => {
                            Ok(ArtifactReply::List(self.store.artifacts(deleted)))
                        }
                        ArtifactRequest::Get(sha256) => Ok(ArtifactReply::One(
                            self.store.artifact(&sha256).map(Box::new),
                        )),
                        ArtifactRequest::Write(sha256, op) => self
                            .store
                            .artifact_write(&sha256, op, unix_ms())
                            .map(|a| ArtifactReply::One(Some(Box::new(a)))),
                    };
                    match done {
                        Ok(d) => pending.add(d, reply),
                        Err(e) => {
                            let _ = reply.send(Err(SubmitError::Rejected(e)));
                        }
                    }
                }
                Command::Install(r, reply) => {
                    let done = match r {
                        InstallRequest::List(deleted) => {
                            Ok(InstallReply::List(self.store.installations(deleted)))
                        }
                        InstallRequest::Get(instance) => Ok(InstallReply::One(
                            self.store.installation(&instance).map(Box::new),
                        )),
                        InstallRequest::Write(instance, op) => self
                            .store
                            .install_write(&instance, op, unix_ms())
                            .map(|i| InstallReply::One(Some(Box::new(i)))),
                    };
                    match done {
                        Ok(d) => pending.add(d, reply),
                        Err(e) => {
                            let _ = reply.send(Err(SubmitError::Rejected(e)));
                        }
                    }
                }
                Command::Trigger(r, reply) => {
                    let done = match r {
                        TriggerRequest::List(deleted) => {
                            Ok(TriggerReply::List(self.store.triggers(deleted)))
                        }
                        TriggerRequest::Get(name) => {
                            Ok(TriggerReply::One(self.store.trigger(&name).map(Box::new)))
                        }
                        TriggerRequest::Write(name, op) => self
                            .store
                            .trigger_write(&name, op, unix_ms())
                            .map(|t| TriggerReply::One(Some(Box::new(t)))),
                    };
                    match done {
                        Ok(d) => pending.add(d, reply),
                        Err(e) => {
                            let _ = reply.send(Err(SubmitError::Rejected(e)));
                        }
                    }
                }
                Command::Repo(r, reply) => {
                    let done = match r {
                        RepoRequest::List => Ok(self.store.repositories()),
                        RepoRequest::Add { name, url, first } => self
                            .store
                            .repo_add(&name, &url, first, unix_ms())
                            .map(|r| vec![r]),
                        RepoRequest::Remove(name) => {
                            self.store.repo_remove(&name, unix_ms()).map(|r| vec![r])
                        }
                    };
                    match done {
                        Ok(d) => pending.add(d, reply),
                        Err(e) => {
                            let _ = reply.send(Err(SubmitError::Rejected(e)));
                        }
                    }
                }
                Command::Acl(r, reply) => {
                    let now = unix_ms();
                    let done = match r {
                        AclRequest::PutPolicy(p) => {
                            self.store.acl_policy_put(&p, now).map(AclReply::Policy)
                        }
                        AclRequest::DeletePolicy(name) => self
                            .store
                            .acl_policy_delete(&name, now)
                            .map(AclReply::Policy),
                        AclRequest::CreateToken(t) => self
                            .store
                            .acl_token_create(&t, now)
                            .map(|t| AclReply::Token(Box::new(t))),
                        AclRequest::Revoke(accessor) => self
                            .store
                            .acl_token_revoke(&accessor, now)
                            .map(|t| AclReply::Token(Box::new(t))),
                        AclRequest::PutSecret(name, sealed, by) => self
                            .store
                            .secret_put(&name, &sealed, by.as_deref(), now)
                            .map(AclReply::Secret),
                        AclRequest::RemoveSecret(name) => {
                            self.store.secret_remove(&name, now).map(AclReply::Secret)
                        }
                        AclRequest::ForgetNode(id, name, by) => self
                            .store
                            .forget_node(&id, &name, by.as_deref(), now)
                            .map(AclReply::Forgotten),
                        AclRequest::KeyInstall(id, sealed, by) => self
                            .store
                            .gossip_key_install(&id, &sealed, by.as_deref(), now)
                            .map(AclReply::Key),
                        AclRequest::KeyUse(id, by) => self
                            .store
                            .gossip_key_use(&id, by.as_deref(), now)
                            .map(AclReply::Primary),
                        AclRequest::KeyRemove(id, by) => self
                            .store
                            .gossip_key_remove(&id, by.as_deref(), now)
                            .map(AclReply::Key),
                    };
                    match done {
                        Ok(d) => pending.add(d, reply),
                        Err(e) => {
                            let _ = reply.send(Err(SubmitError::Rejected(e)));
                        }
                    }
                }
                Command::Deploy(r, reply) => {
                    let now = unix_ms();
                    let done = match r {
                        DeployRequest::List(name) => {
                            Ok(DeployReply::List(self.store.deployments(&name)))
                        }
                        DeployRequest::Step(s) => self
                            .store
                            .deployment_step(&s.job, s.version, s.patch, s.revert, now)
                            .map(DeployReply::Stepped),
                        DeployRequest::Act(name, action) => self
                            .store
                            .deployment_action(&name, action, now)
                            .map(DeployReply::Acted),
                        DeployRequest::Revert(name, version) => self
                            .store
                            .revert(&name, version, false, now)
                            .map(|w| DeployReply::Reverted(Box::new(w))),
                    };
                    match done {
                        Ok(d) => pending.add(d, reply),
                        Err(e) => {
                            let _ = reply.send(Err(SubmitError::Rejected(e)));
                        }
                    }
                }
                Command::Write(w, reply) => match self.store.write(w) {
                    Ok(written) => pending.add(written, reply),
                    Err(e) => {
                        let _ = reply.send(Err(SubmitError::Rejected(e)));
                    }
                },
                Command::Record(r, reply) => match self.store.record(&r.job, r.index, r.outcome) {
                    Ok(news) => pending.add(news, reply),
                    Err(e) => {
                        let _ = reply.send(Err(SubmitError::Rejected(e)));
                    }
                },
                Command::Ready(r, reply) => {
                    match self.store.mark_ready(&r.job, &r.dep, &r.node, r.at_ms) {
                        Ok(news) => pending.add(news, reply),
                        Err(e) => {
                            let _ = reply.send(Err(SubmitError::Rejected(e)));
                        }
                    }
                }
                Command::Jobs(deleted, reply) => {
                    let _ = reply.send(self.store.jobs(deleted));
                }
                Command::JobsShared(deleted, reply) => {
                    let _ = reply.send(self.store.jobs_shared(deleted));
                }
                Command::Job(name, reply) => {
                    let _ = reply.send(self.store.view(&name));
                }
                Command::JobsNamed(names, reply) => {
                    let views = names
                        .into_iter()
                        .map(|n| {
                            let v = self.store.view(&n);
                            (n, v)
                        })
                        .collect();
                    let _ = reply.send(views);
                }
                Command::History(name, reply) => {
                    let _ = reply.send(self.store.history(&name));
                }
                Command::Remote(from, request, reply) => {
                    let response = self.store.handle_request(from, request);
                    let _ = reply.send(response);
                }
                Command::BeginRound(reply) => {
                    let _ = reply.send(self.store.begin_round());
                }
                Command::Response(from, response, reply) => {
                    let next = self.store.handle_response(from, response);
                    let _ = reply.send(next);
                }
                Command::Status(reply) => {
                    let c = &self.counters;
                    let _ = reply.send(StateStatus {
                        docs: self.store.doc_count() as u64,
                        recovering: self.recovering.load(Ordering::Relaxed),
                        rounds_in_sync: c.rounds_in_sync.load(Ordering::Relaxed),
                        rounds_synced: c.rounds_synced.load(Ordering::Relaxed),
                        rounds_failed: c.rounds_failed.load(Ordering::Relaxed),
                        in_sync_bytes: c.in_sync_bytes.load(Ordering::Relaxed),
                        round_bytes: c.round_bytes.load(Ordering::Relaxed),
                        pushes: c.pushes.load(Ordering::Relaxed),
                        push_bytes: c.push_bytes.load(Ordering::Relaxed),
                        persisted: c.persisted.load(Ordering::Relaxed),
                        rejected: self
                            .store
                            .rejected()
                            .iter()
                            .map(|(k, v)| ((*k).to_owned(), *v))
                            .collect(),
                    });
                }
            }
        }
        self.after_turn(pending);
    }

    /// Persists, then answers writers, then pushes and publishes events.
    fn after_turn(&mut self, pending: Pending) {
        let mut ops: Vec<PersistOp> = Vec::new();
        while let Some(op) = self.store.poll_persist() {
            ops.push(op);
        }
        let persisted = if ops.is_empty() {
            Ok(())
        } else {
            self.log.append(&ops).map(|()| {
                self.counters
                    .persisted
                    .fetch_add(ops.len() as u64, Ordering::Relaxed);
            })
        };
        if let Err(e) = &persisted {
            error!(error = %e, "cannot persist state changes");
        }
        let mut events = Vec::new();
        while let Some(event) = self.store.poll_event() {
            events.push(event);
        }
        // Before the writers hear back: a revocation answered is in force
        // on this node.
        if events
            .iter()
            .any(|e| matches!(e, JobEvent::Acl { .. } | JobEvent::Secret { .. }))
        {
            self.acl
                .send_replace(Arc::new(crate::acl::AclTable::from_store(&self.store)));
        }
        pending.answer(persisted.as_ref().err().map(ToString::to_string));
        if self.log.wants_compaction() {
            let records = self.store.snapshot();
            match self.log.compact(&records) {
                Ok(()) => {
                    info!(dir = %self.state_dir.display(), records = records.len(), "state log compacted")
                }
                Err(e) => warn!(error = %e, "state log compaction failed; will retry"),
            }
        }
        while let Some(push) = self.store.poll_push() {
            self.send_push(push);
        }
        for event in events {
            let _ = self.events.send(event);
        }
        self.publish_digest();
    }

    /// Hands the replica's digest to the node core's task, which carries it
    /// in every gossip datagram.
    fn publish_digest(&self) {
        let digest = match self.store.root_digest() {
            0 => EMPTY_DIGEST,
            d => d,
        };
        self.gossip.digest.send_if_modified(|current| {
            let changed = *current != digest;
            *current = digest;
            changed
        });
    }

    fn live_peers(&self) -> Vec<Peer> {
        let local = self.transport.local();
        self.peers
            .borrow()
            .iter()
            .filter(|p| p.id != local)
            .cloned()
            .collect()
    }

    fn send_push(&self, push: shoal_state::Push) {
        let peers: Vec<Peer> = self
            .live_peers()
            .into_iter()
            .filter(|p| Some(p.id) != push.except)
            .collect();
        let fanout = self.store.config().push_fanout;
        let chosen: Vec<Peer> = peers.sample(&mut rand::rng(), fanout).cloned().collect();
        if chosen.is_empty() {
            return;
        }
        let body = postcard::to_allocvec(&SyncRequest::Changes {
            docs: push.docs,
            forward: true,
        })
        .expect("requests encode");
        for peer in chosen {
            let transport = self.transport.clone();
            let body = body.clone();
            let counters = self.counters.clone();
            tokio::spawn(async move {
                counters.pushes.fetch_add(1, Ordering::Relaxed);
                counters
                    .push_bytes
                    .fetch_add(body.len() as u64, Ordering::Relaxed);
                if let Err(e) = transport
                    .request(peer.id, peer.rpc, Service::State, &body)
                    .await
                {
                    debug!(peer = %peer.id, error = %e, "push failed; anti-entropy will catch up");
                }
            });
        }
    }

    /// Starts a round with `with` (a member gossiping a different digest),
    /// or with a random live peer; does nothing while one runs (the next
    /// differing datagram asks again).
    fn start_round(&mut self, with: Option<NodeId>) {
        if self.round_in_flight.swap(true, Ordering::AcqRel) {
            return;
        }
        let peers = self.live_peers();
        let chosen = match with {
            Some(id) => peers.iter().find(|p| p.id == id).cloned(),
            None => peers.choose(&mut rand::rng()).cloned(),
        };
        let Some(peer) = chosen else {
            self.round_in_flight.store(false, Ordering::Release);
            return;
        };
        let transport = self.transport.clone();
        let tx = self.self_tx.clone();
        let in_flight = self.round_in_flight.clone();
        let counters = self.counters.clone();
        let recovering = self.recovering.clone();
        tokio::spawn(async move {
            let outcome = run_round(&tx, &transport, &peer).await;
            match outcome {
                Ok((true, bytes)) => {
                    counters.rounds_in_sync.fetch_add(1, Ordering::Relaxed);
                    counters.in_sync_bytes.fetch_add(bytes, Ordering::Relaxed);
                    counters.round_bytes.fetch_add(bytes, Ordering::Relaxed);
                    if recovering.swap(false, Ordering::AcqRel) {
                        info!(peer = %peer.id, "state recovered: in sync with a peer");
                    }
                }
                Ok((false, bytes)) => {
                    counters.rounds_synced.fetch_add(1, Ordering::Relaxed);
                    counters.round_bytes.fetch_add(bytes, Ordering::Relaxed);
                }
                Err(e) => {
                    counters.rounds_failed.fetch_add(1, Ordering::Relaxed);
                    debug!(peer = %peer.id, error = %e, "anti-entropy round failed");
                }
            }
            in_flight.store(false, Ordering::Release);
        });
    }
}

/// One round with `peer`: whether it was in sync, and the payload bytes
/// exchanged.
async fn run_round(
    tx: &mpsc::Sender<Command>,
    transport: &Transport,
    peer: &Peer,
) -> Result<(bool, u64), String> {
    let (reply, rx) = oneshot::channel();
    tx.send(Command::BeginRound(reply))
        .await
        .map_err(|_| "stopping")?;
    let mut request = rx.await.map_err(|_| "stopping")?;
    let mut bytes = 0u64;
    let mut first = true;
    loop {
        let body = postcard::to_allocvec(&request).expect("requests encode");
        bytes += body.len() as u64;
        let answer = transport
            .request(peer.id, peer.rpc, Service::State, &body)
            .await
            .map_err(|e| e.to_string())?;
        bytes += answer.len() as u64;
        let response: SyncResponse =
            postcard::from_bytes(&answer).map_err(|e| format!("malformed sync response: {e}"))?;
        let in_sync = first && response == SyncResponse::InSync;
        first = false;
        let (reply, rx) = oneshot::channel();
        tx.send(Command::Response(peer.id, response, reply))
            .await
            .map_err(|_| "stopping")?;
        match rx.await.map_err(|_| "stopping")? {
            Some(next) => request = next,
            None => return Ok((in_sync, bytes)),
        }
    }
}
