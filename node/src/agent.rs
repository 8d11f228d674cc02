//! Starting and stopping an agent: data dir, identity, secret, sockets, the
//! membership loop and the HTTP API.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shoal_gossip::{
    Config, FreeClass, MemberMeta, Membership, NodeId, NodeIdentity, PacketSecurity,
};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::api::{self, ApiState};
use crate::cgroups::Isolation;
use crate::clock::Clock;
use crate::clock::unix_ms;
use crate::datadir::{AgentFile, DataDir, DataDirError, StoredNode, StoredSettings};
use crate::docker::{DockerRuntime, DockerSettings};
use crate::membership::{MembershipHandle, MembershipTask, StateLink};
use crate::placement::{PlacementParts, PlacementTask};
use crate::resources;
use crate::rpc::NodeRpc;
use crate::runtime::{ProcessRuntime, Runtimes};
use crate::state::{GossipLink, StateHandle, StateTask, rpc_handler};
use crate::statelog::StateLog;
use crate::token::{ClusterSecret, TokenError};
use shoal_gossip::RuntimeInfo;
use shoal_state::{PersistOp, StateConfig, Store};
use shoal_transport::{NodeTls, Transport, TransportConfig};
use tokio::sync::mpsc;
use tokio::sync::watch;

/// Default HTTP API port.
pub const DEFAULT_API_PORT: u16 = 5480;
/// Default gossip port.
pub const DEFAULT_GOSSIP_PORT: u16 = 5481;

/// How an agent is started; `None` means "as last time, or the default".
#[derive(Clone, Debug, Default)]
pub struct AgentOptions {
    /// Data dir; default `/var/lib/shoal` as root, else
    /// `~/.local/share/shoal`; a temporary dir in dev mode.
    pub data_dir: Option<PathBuf>,
    /// Gossip address (UDP).
    pub bind: Option<SocketAddr>,
    /// RPC address (QUIC); default: gossip port + 1.
    pub rpc: Option<SocketAddr>,
    /// HTTP API address.
    pub api: Option<SocketAddr>,
    /// Address to advertise when binding to `0.0.0.0` or `[::]`.
    pub advertise: Option<IpAddr>,
    /// Members to join through (`host:port`).
    pub join: Vec<String>,
    /// Cluster token.
    pub token: Option<String>,
    /// Node name.
    pub name: Option<String>,
    /// Datacenter.
    pub dc: Option<String>,
    /// Zone.
    pub zone: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Labels; when any is given they replace the stored ones.
    pub labels: Vec<(String, String)>,
    /// CPUs offered (overrides detection).
    pub cpus: Option<f64>,
    /// Memory offered, MiB (overrides detection).
    pub memory_mb: Option<u64>,
    /// Gossip preset: `lan`, `wan` or `test`.
    pub gossip: Option<String>,
    /// Overrides the preset's suspicion multiplier (see
    /// `shoal_gossip::Config::suspicion_mult`).
    pub suspicion_mult: Option<f64>,
    /// One-node cluster in a temporary dir, API on 127.0.0.1:5480, no auth.
    pub dev: bool,
    /// Serve `POST /v1/debug/faults` to cut this node off from others (for
    /// partition tests; never in production).
    pub fault_injection: bool,
    /// CPUs kept for the node itself (default: 0.25 when detected, 0 when
    /// `--cpus` is given).
    pub reserve_cpus: Option<f64>,
    /// Memory kept for the node itself, MiB (default: 256 when detected, 0
    /// when `--memory-mb` is given).
    pub reserve_memory_mb: Option<u64>,
    /// How long a stopping task gets between SIGTERM and SIGKILL.
    pub stop_grace: Option<Duration>,
    /// Do not offer the Docker runtime even when an engine answers.
    pub no_docker: bool,
    /// Host ports handed to containers' mapped ports (inclusive); default
    /// [`DEFAULT_PORT_RANGE`].
    pub port_range: Option<(u16, u16)>,
}

/// Host ports for containers unless `--port-range` says otherwise.
pub const DEFAULT_PORT_RANGE: (u16, u16) = (20000, 29999);

/// Why an agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A data dir problem.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// A bad `--token`.
    #[error("--token: {0}")]
    Token(TokenError),
    /// Flags that do not go together.
    #[error("{0}")]
    Usage(String),
    /// A socket cannot be bound.
    #[error("cannot bind the {what} address {addr}: {source}{hint}")]
    Bind {
        /// Which socket.
        what: &'static str,
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
        /// What to do.
        hint: &'static str,
    },
    /// The data dir belongs to another cluster.
    #[error(
        "data dir {path} belongs to another cluster than the given --token; use a fresh --data-dir to join that cluster"
    )]
    OtherCluster {
        /// The data dir.
        path: PathBuf,
    },
    /// No randomness available.
    #[error("cannot draw random bytes: {0}")]
    Random(getrandom::Error),
    /// Invalid gossip configuration or metadata.
    #[error("{0}")]
    Gossip(String),
    /// A temporary dir for --dev.
    #[error("cannot create a temporary data dir: {0}")]
    TempDir(std::io::Error),
    /// The RPC transport could not start.
    #[error("RPC transport: {0}")]
    Transport(#[from] shoal_transport::TransportError),
    /// The state dir cannot be used.
    #[error("state: {0}")]
    State(#[from] crate::statelog::StateLogError),
}

/// What a started agent is.
#[derive(Clone, Debug)]
pub struct AgentInfo {
    /// Node id.
    pub node_id: NodeId,
    /// Name.
    pub name: String,
    /// Advertised gossip address.
    pub gossip: SocketAddr,
    /// Advertised RPC address.
    pub rpc: SocketAddr,
    /// Bound API address.
    pub api: SocketAddr,
    /// Data dir.
    pub data_dir: PathBuf,
    /// Whether this start founded a new cluster.
    pub founded: bool,
    /// The cluster token.
    pub token: String,
    /// Dev mode.
    pub dev: bool,
    /// Whether the data dir is temporary (removed when the agent stops).
    pub temporary_data_dir: bool,
}

/// A running agent.
pub struct Agent {
    info: AgentInfo,
    shutdown: CancellationToken,
    membership: MembershipHandle,
    state: StateHandle,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    _temp_dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// The default data dir.
pub fn default_data_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        PathBuf::from("/var/lib/shoal")
    } else {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        home.join(".local/share/shoal")
    }
}

/// The address other machines reach this one at, when bound to 0.0.0.0:
/// the source address of the default route (no packet is sent).
fn outbound_ip() -> IpAddr {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn advertised(bound: SocketAddr, advertise: IpAddr) -> SocketAddr {
    if bound.ip().is_unspecified() {
        SocketAddr::new(advertise, bound.port())
    } else {
        bound
    }
}

/// Where to try binding: with port 0 configured, first the port of the
/// previous start (so that members that knew this node find it again after
/// a restart), then any free port.
fn bind_candidates(configured: SocketAddr, previous: Option<SocketAddr>) -> Vec<SocketAddr> {
    match previous {
        Some(p) if configured.port() == 0 && p.port() != 0 => {
            vec![SocketAddr::new(configured.ip(), p.port()), configured]
        }
        _ => vec![configured],
    }
}

async fn bind_udp(
    what: &'static str,
    configured: SocketAddr,
    previous: Option<SocketAddr>,
) -> Result<UdpSocket, AgentError> {
    let mut last = None;
    for addr in bind_candidates(configured, previous) {
        match UdpSocket::bind(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(AgentError::Bind {
        what,
        addr: configured,
        source: last.unwrap_or_else(|| std::io::Error::other("no address to bind")),
        hint: "; pass another HOST:PORT (port 0 picks a free one)",
    })
}

/// Loads the replica from its records, on as many threads as there are
/// cores (automerge's decoding dominates start-up: ~0.1 ms per job).
fn restore_store(node_id: NodeId, bump: u32, records: Vec<PersistOp>) -> Store {
    let new = || Store::new(node_id, bump, StateConfig::default());
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(8);
    if threads == 1 || records.len() < 1000 {
        let mut store = new();
        for record in records {
            store.restore(record);
        }
        return store;
    }
    let mut shards: Vec<Vec<PersistOp>> = (0..threads).map(|_| Vec::new()).collect();
    for record in records {
        shards[Store::shard_of(record.name(), threads)].push(record);
    }
    let parts: Vec<Store> = std::thread::scope(|s| {
        let handles: Vec<_> = shards
            .into_iter()
            .map(|shard| {
                s.spawn(move || {
                    let mut part = new();
                    for record in shard {
                        part.restore(record);
                    }
                    part
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a restore thread panicked"))
            .collect()
    });
    let mut store = new();
    for part in parts {
        store.absorb(part);
    }
    store
}

fn random_u64() -> Result<u64, AgentError> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(AgentError::Random)?;
    Ok(u64::from_le_bytes(b))
}

impl Agent {
    /// Starts an agent: everything is bound and serving when this returns.
    pub async fn start(opts: AgentOptions) -> Result<Agent, AgentError> {
        let (dir_path, temp_dir) = match (&opts.data_dir, opts.dev) {
            (Some(p), _) => (p.clone(), None),
            (None, true) => {
                let t = tempfile::Builder::new()
                    .prefix("shoal-dev-")
                    .tempdir()
                    .map_err(AgentError::TempDir)?;
                (t.path().to_owned(), Some(t))
            }
            (None, false) => (default_data_dir(), None),
        };
        let data_dir = Arc::new(DataDir::open(&dir_path)?);

        // Settings: flags, else the last start's, else defaults.
        let stored = data_dir.load_settings()?;
        let settings = StoredSettings {
            name: opts.name.clone().or(stored.name),
            dc: opts.dc.clone().or(stored.dc),
            zone: opts.zone.clone().or(stored.zone),
            region: opts.region.clone().or(stored.region),
            labels: if opts.labels.is_empty() {
                stored.labels
            } else {
                Some(opts.labels.iter().cloned().collect())
            },
            cpus: opts.cpus.or(stored.cpus),
            memory_mb: opts.memory_mb.or(stored.memory_mb),
            bind: opts.bind.or(stored.bind),
            rpc: opts.rpc.or(stored.rpc),
            api: opts.api.or(stored.api),
            advertise: opts.advertise.or(stored.advertise),
            gossip: opts.gossip.clone().or(stored.gossip),
            suspicion_mult: opts.suspicion_mult.or(stored.suspicion_mult),
            draining: stored.draining,
        };
        if let Some(c) = settings.cpus
            && !(c > 0.0 && c.is_finite())
        {
            return Err(AgentError::Usage(format!("--cpus must be > 0 (got {c})")));
        }
        let preset = settings.gossip.clone().unwrap_or_else(|| "lan".into());
        let mut config = Config::preset(&preset).ok_or_else(|| {
            AgentError::Usage(format!(
                "--gossip: unknown preset {preset:?} (use lan, wan or test)"
            ))
        })?;
        if let Some(mult) = settings.suspicion_mult {
            if !(mult.is_finite() && (0.5..=20.0).contains(&mult)) {
                return Err(AgentError::Usage(format!(
                    "--suspicion-mult must be between 0.5 and 20 (got {mult})"
                )));
            }
            config.suspicion_mult = mult;
        }
        info!(
            preset = %preset,
            suspicion_mult = config.suspicion_mult,
            "membership timing"
        );
        data_dir.store_settings(&settings)?;

        // Identity: the same id forever, a larger bump at every start.
        let node = match data_dir.load_node()? {
            Some(n) => StoredNode {
                node_id: n.node_id,
                bump: n.bump.saturating_add(1),
            },
            None => StoredNode {
                node_id: NodeId(random_u64()?.max(1)).to_string(),
                bump: 1,
            },
        };
        data_dir.store_node(&node)?;
        let node_id = node.id().map_err(|why| DataDirError::Corrupt {
            path: data_dir.file("node.json"),
            why,
        })?;

        // The cluster secret: given, stored, or founded here.
        let given = opts
            .token
            .as_deref()
            .map(ClusterSecret::from_token)
            .transpose()
            .map_err(AgentError::Token)?;
        let stored_secret = data_dir.load_secret()?;
        let mut founded = false;
        let secret = match (given, stored_secret) {
            (Some(g), Some(s)) if g != s => {
                return Err(AgentError::OtherCluster {
                    path: data_dir.path().to_owned(),
                });
            }
            (Some(g), Some(_)) => g,
            (Some(g), None) => {
                data_dir.store_secret(&g)?;
                g
            }
            (None, Some(s)) => s,
            (None, None) => {
                if !opts.join.is_empty() {
                    return Err(AgentError::Usage(
                        "--join needs --token: use the token printed by the founding agent (also in <data-dir>/token on any node)".into(),
                    ));
                }
                let s = ClusterSecret::generate().map_err(AgentError::Random)?;
                data_dir.store_secret(&s)?;
                founded = true;
                s
            }
        };

        // Sockets.
        let bind = settings.bind.unwrap_or(if opts.dev {
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
        } else {
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, DEFAULT_GOSSIP_PORT))
        });
        let previous = data_dir.previous_agent_file();
        let gossip_socket = bind_udp("gossip", bind, previous.as_ref().map(|p| p.gossip)).await?;
        let gossip_bound = gossip_socket
            .local_addr()
            .map_err(|source| AgentError::Bind {
                what: "gossip",
                addr: bind,
                source,
                hint: "",
            })?;
        let rpc = settings.rpc.unwrap_or_else(|| {
            let port = if bind.port() == 0 {
                0
            } else {
                bind.port().wrapping_add(1)
            };
            SocketAddr::new(bind.ip(), port)
        });
        // Reserved now; the QUIC endpoint takes it over.
        let rpc_socket = bind_udp("rpc", rpc, previous.as_ref().map(|p| p.rpc))
            .await?
            .into_std()
            .map_err(|source| AgentError::Bind {
                what: "rpc",
                addr: rpc,
                source,
                hint: "",
            })?;
        let rpc_bound = rpc_socket.local_addr().map_err(|source| AgentError::Bind {
            what: "rpc",
            addr: rpc,
            source,
            hint: "",
        })?;
        let api_addr = settings.api.unwrap_or(if opts.dev {
            SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_API_PORT))
        } else {
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, DEFAULT_API_PORT))
        });
        let mut api_listener = None;
        let mut api_error = None;
        for addr in bind_candidates(api_addr, previous.as_ref().map(|p| p.api)) {
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    api_listener = Some(l);
                    break;
                }
                Err(e) => api_error = Some(e),
            }
        }
        let api_listener = api_listener.ok_or_else(|| AgentError::Bind {
            what: "API",
            addr: api_addr,
            source: api_error.unwrap_or_else(|| std::io::Error::other("no address to bind")),
            hint: "; pass --api HOST:PORT (port 0 picks a free one)",
        })?;
        let api_bound = api_listener
            .local_addr()
            .map_err(|source| AgentError::Bind {
                what: "API",
                addr: api_addr,
                source,
                hint: "",
            })?;
        let advertise_ip = settings.advertise.unwrap_or_else(outbound_ip);
        let gossip_addr = advertised(gossip_bound, advertise_ip);
        let rpc_addr = advertised(rpc_bound, advertise_ip);
        let api_advertised = advertised(api_bound, advertise_ip);

        // Metadata.
        let detected = resources::detect(data_dir.path());
        let mut capacity = detected.capacity();
        // What the node keeps for itself: by default some of what was
        // detected, nothing of what the operator stated.
        let reserve_cpus =
            opts.reserve_cpus
                .unwrap_or(if settings.cpus.is_some() { 0.0 } else { 0.25 });
        let reserve_memory = opts
            .reserve_memory_mb
            .unwrap_or(if settings.memory_mb.is_some() { 0 } else { 256 });
        if !(reserve_cpus >= 0.0 && reserve_cpus.is_finite()) {
            return Err(AgentError::Usage(format!(
                "--reserve-cpus must be >= 0 (got {reserve_cpus})"
            )));
        }
        if let Some(c) = settings.cpus {
            capacity.cpus_milli = (c * 1000.0).round() as u32;
        }
        if let Some(m) = settings.memory_mb {
            capacity.memory_mb = m;
        }
        capacity.cpus_milli = capacity
            .cpus_milli
            .saturating_sub((reserve_cpus * 1000.0).round() as u32);
        capacity.memory_mb = capacity.memory_mb.saturating_sub(reserve_memory);
        let isolation = Isolation::detect(&node_id.to_string());
        match &isolation {
            Isolation::None { why } => {
                warn!(reason = %why, "tasks will run without resource limits (isolation: none)")
            }
            other => info!(isolation = other.name(), "tasks get cgroup limits"),
        }
        let draining = settings.draining.unwrap_or(false);
        let name = settings.name.clone().unwrap_or_else(resources::hostname);
        // Containers: only when the engine answers.
        let (runtime_tx, runtime_rx) = mpsc::channel(1024);
        let stop_grace = opts.stop_grace.unwrap_or(Duration::from_secs(10));
        let docker = if opts.no_docker {
            info!("docker runtime off (--no-docker)");
            None
        } else {
            match DockerRuntime::connect(
                DockerSettings {
                    tasks_dir: data_dir.path().join("tasks"),
                    node_id: node_id.to_string(),
                    node_name: name.clone(),
                    stop_grace,
                    port_range: opts.port_range.unwrap_or(DEFAULT_PORT_RANGE),
                },
                runtime_tx.clone(),
            )
            .await
            {
                Ok(d) => {
                    info!(engine = d.engine_version(), "docker runtime available");
                    Some(d)
                }
                Err(why) => {
                    info!(reason = %why, "no docker runtime on this node");
                    None
                }
            }
        };
        let mut runtimes = vec![RuntimeInfo {
            name: "process".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }];
        if let Some(d) = &docker {
            runtimes.push(RuntimeInfo {
                name: "docker".into(),
                version: d.engine_version().into(),
            });
        }
        let meta = MemberMeta {
            name: name.clone(),
            gossip_addr,
            rpc_addr,
            api_addr: api_advertised,
            dc: settings.dc.clone().unwrap_or_else(|| "dc1".into()),
            zone: settings.zone.clone().unwrap_or_default(),
            region: settings.region.clone().unwrap_or_else(|| "global".into()),
            labels: settings.labels.clone().unwrap_or_default(),
            capacity,
            runtimes,
            agent_version: env!("CARGO_PKG_VERSION").into(),
            free_class: FreeClass::IDLE,
            isolation: isolation.name().into(),
            draining,
        };
        let offered = shoal_placement::Resources {
            cpus_milli: u64::from(meta.capacity.cpus_milli),
            memory_mb: meta.capacity.memory_mb,
            disk_mb: meta.capacity.disk_mb,
            gpus: u64::from(meta.capacity.gpus),
        };

        let clock = Clock::new();
        let identity = NodeIdentity::new(node_id, gossip_addr, node.bump);
        let core = Membership::new(
            clock.now(),
            identity,
            meta,
            config,
            PacketSecurity::sealed(secret.bytes()),
            random_u64()?,
        )
        .map_err(|e| AgentError::Gossip(e.to_string()))?;

        let shutdown = CancellationToken::new();
        let (live_tx, live_rx) = watch::channel(Arc::new(Vec::new()));
        let (digest_tx, digest_rx) = watch::channel(0u64);
        let (differs_tx, differs_rx) = mpsc::channel(64);
        let (task, handle) = MembershipTask::new(
            core,
            gossip_socket,
            clock,
            data_dir.clone(),
            shutdown.clone(),
            live_tx,
            StateLink {
                digest: digest_rx,
                differs: differs_tx,
            },
        );

        // Desired state: the replica from disk, the RPC transport, the task.
        let load_started = std::time::Instant::now();
        let (log, loaded) = StateLog::open(data_dir.path(), unix_ms() / 1000)?;
        let records = loaded.records.len();
        let mut store = restore_store(node_id, node.bump, loaded.records);
        let recovering = !loaded.damaged.is_empty();
        for damage in &loaded.damaged {
            error!(
                file = %damage.path.display(),
                moved_to = ?damage.moved_to,
                problem = %damage.what,
                records_kept = damage.records_read,
                "state file is damaged; recovering the rest from peers"
            );
        }
        if loaded.torn_bytes > 0 {
            warn!(
                bytes = loaded.torn_bytes,
                "cut an incomplete last record from the state log (a write interrupted by a crash, never acknowledged)"
            );
        }
        let mut log = log;
        if recovering {
            // Make what could be read durable again before anything else.
            log.compact(&store.snapshot())?;
        }
        info!(
            jobs = store.doc_count(),
            records,
            took_ms = load_started.elapsed().as_millis(),
            "desired state loaded"
        );
        let tls = NodeTls::new(secret.bytes(), node_id)?;
        let transport = Transport::bind(rpc_socket, &tls, node_id, TransportConfig::default())?;
        let (state_task, state) = StateTask::new(
            store,
            log,
            transport.clone(),
            live_rx.clone(),
            recovering,
            GossipLink {
                digest: digest_tx,
                differs: differs_rx,
            },
            shutdown.clone(),
        );

        // Tasks: the process runtime (adopting what still runs from before a
        // restart) and placement.
        let process = ProcessRuntime::new(
            data_dir.path(),
            isolation,
            name.clone(),
            stop_grace,
            runtime_tx.clone(),
        )
        .map_err(|source| DataDirError::Write {
            path: data_dir.file("tasks"),
            source,
        })?;
        let mut adopted = process.scan();
        if let Some(d) = &docker {
            adopted.extend(d.scan().await);
        }
        let runtime = Runtimes::new(process, docker, runtime_tx);
        if !adopted.is_empty() {
            info!(
                tasks = adopted.len(),
                "adopted tasks still running from before the restart"
            );
        }
        let (placement_task, placement) = PlacementTask::new(PlacementParts {
            me: node_id,
            capacity: offered,
            draining,
            clock,
            runtime: runtime.clone(),
            runtime_rx,
            live: live_rx.clone(),
            state: state.clone(),
            transport: transport.clone(),
            membership: handle.clone(),
            data_dir: data_dir.clone(),
            adopted,
            shutdown: shutdown.clone(),
        });

        // Whom to join: the flags, else the members known before a restart.
        let mut initial_peers = Vec::new();
        let mut unresolved = Vec::new();
        for peer in &opts.join {
            match tokio::net::lookup_host(peer.as_str()).await {
                Ok(addrs) => initial_peers.extend(addrs),
                Err(e) => {
                    warn!(peer = %peer, error = %e, "cannot resolve join peer yet; will keep trying");
                    unresolved.push(peer.clone());
                }
            }
        }
        if opts.join.is_empty() && !founded {
            initial_peers = data_dir.load_peers()?;
            if initial_peers.is_empty() {
                info!("no known members to rejoin; waiting for others to join this node");
            }
        }

        let mut tasks = Vec::new();
        tasks.push(("membership", tokio::spawn(task.run(initial_peers))));
        if let Some(d) = runtime.docker() {
            tasks.push((
                "docker-watch",
                tokio::spawn(watch_docker(d.clone(), handle.clone(), shutdown.clone())),
            ));
        }
        if !unresolved.is_empty() {
            tasks.push((
                "resolve-join",
                tokio::spawn(resolve_later(unresolved, handle.clone(), shutdown.clone())),
            ));
        }

        let token_hint = format!("{}", data_dir.file("token").display());
        let api_state = ApiState {
            membership: handle.clone(),
            state: state.clone(),
            placement: placement.clone(),
            runtime: runtime.clone(),
            live: live_rx,
            transport: transport.clone(),
            auth: if opts.dev {
                None
            } else {
                Some(Arc::new(secret.clone()))
            },
            clock,
            token_hint,
            fault_injection: opts.fault_injection,
        };
        let app = api::router(api_state);
        let api_shutdown = shutdown.clone();
        tasks.push((
            "api",
            tokio::spawn(async move {
                let served = axum::serve(api_listener, app)
                    .with_graceful_shutdown(async move { api_shutdown.cancelled().await })
                    .await;
                if let Err(e) = served {
                    warn!(error = %e, "API server stopped");
                }
            }),
        ));
        tasks.push(("state", tokio::spawn(state_task.run())));
        tasks.push(("placement", tokio::spawn(placement_task.run())));
        let rpc = Arc::new(NodeRpc {
            state: rpc_handler(&state),
            placement: placement.clone(),
            runtime: runtime.clone(),
        });
        tasks.push((
            "rpc",
            tokio::spawn(transport.clone().serve(rpc, shutdown.clone())),
        ));

        data_dir.store_agent_file(&AgentFile {
            node_id: node_id.to_string(),
            name: name.clone(),
            gossip: gossip_addr,
            rpc: rpc_addr,
            api: api_bound,
            pid: std::process::id(),
        })?;
        info!(
            node = %node_id,
            name = %name,
            gossip = %gossip_addr,
            rpc = %rpc_addr,
            api = %api_bound,
            data_dir = %data_dir.path().display(),
            generation = node.bump,
            "agent serving"
        );

        Ok(Agent {
            info: AgentInfo {
                node_id,
                name,
                gossip: gossip_addr,
                rpc: rpc_addr,
                api: api_bound,
                data_dir: data_dir.path().to_owned(),
                founded,
                token: secret.to_token(),
                dev: opts.dev,
                temporary_data_dir: temp_dir.is_some(),
            },
            shutdown,
            membership: handle,
            state,
            tasks,
            _temp_dir: temp_dir,
        })
    }

    /// What was started.
    pub fn info(&self) -> &AgentInfo {
        &self.info
    }

    /// The membership loop.
    pub fn membership(&self) -> &MembershipHandle {
        &self.membership
    }

    /// The desired-state replica.
    pub fn state(&self) -> &StateHandle {
        &self.state
    }

    /// Serves until `stop` completes, then leaves the cluster and stops
    /// every task.
    pub async fn run_until(self, stop: impl Future<Output = ()>) {
        stop.await;
        info!("shutting down");
        self.shutdown.cancel();
        for (name, task) in self.tasks {
            match tokio::time::timeout(Duration::from_secs(10), task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(task = name, error = %e, "task failed"),
                Err(_) => warn!(task = name, "task did not stop within 10 s"),
            }
        }
    }
}

/// How often a node with a Docker runtime checks that the engine still
/// answers.
const DOCKER_CHECK: Duration = Duration::from_secs(15);

/// Offers `docker` in gossip only while the engine answers: a node whose
/// engine went away stops getting docker tasks, and gets them again once it
/// is back.
async fn watch_docker(
    docker: DockerRuntime,
    handle: MembershipHandle,
    shutdown: CancellationToken,
) {
    let mut offered = true;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(DOCKER_CHECK) => {}
        }
        let answers = docker.answers().await;
        if answers == offered {
            continue;
        }
        let Ok(mut meta) = handle.meta().await else {
            return;
        };
        meta.runtimes.retain(|r| r.name != "docker");
        if answers {
            info!("the Docker engine answers again; offering docker tasks");
            meta.runtimes.push(RuntimeInfo {
                name: "docker".into(),
                version: docker.engine_version().into(),
            });
        } else {
            warn!("the Docker engine stopped answering; no longer offering docker tasks");
        }
        if handle.set_meta(meta).await.is_err() {
            return;
        }
        offered = answers;
    }
}

async fn resolve_later(
    mut peers: Vec<String>,
    handle: MembershipHandle,
    shutdown: CancellationToken,
) {
    let mut delay = Duration::from_secs(1);
    while !peers.is_empty() {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        let mut still = Vec::new();
        for peer in peers {
            let resolved = tokio::net::lookup_host(peer.clone())
                .await
                .map(|a| a.collect::<Vec<SocketAddr>>());
            match resolved {
                Ok(addrs) => {
                    info!(peer = %peer, "join peer resolved");
                    if handle.join(addrs).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    warn!(peer = %peer, error = %e, "cannot resolve join peer; will keep trying");
                    still.push(peer);
                }
            }
        }
        peers = still;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}
