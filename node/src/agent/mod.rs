//! Starting and stopping an agent. [`Agent::start`] goes through the
//! phases of a start, each in its own module: the data dir and settings
//! (`settings`), identity and cluster secret (`identity`), sockets
//! (`sockets`), what this machine offers (`local`), the desired-state
//! replica (`replica`), the runtimes and what they still run
//! (`runtimes`), the node core (`core`), then the tasks that serve
//! ([`Agent::start`] itself, with `background` for the small ones).

mod background;
mod core;
mod identity;
mod local;
mod replica;
mod runtimes;
mod settings;
mod sockets;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shoal_gossip::{NodeId, NodeIdentity};
use shoal_transport::{ApiTls, NodeTls, Transport, TransportConfig};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{self, ApiState};
use crate::clock::Clock;
use crate::core_task::{
    CoreHandle, CoreParts, CoreTask, StateLink, feed_jobs, record_deployments, record_finished,
};
use crate::datadir::{AgentFile, DataDir, DataDirError, StoredSettings};
use crate::dns::{self, DnsHandler};
use crate::repos::Repos;
use crate::rpc::NodeRpc;
use crate::services::Services;
use crate::state::{GossipLink, StateHandle, StateTask, rpc_handler};
use crate::token::{ClusterSecret, TokenError};

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
    /// `Some(true)`: the API speaks plain HTTP to everyone (a trusted
    /// network, or TLS ended by a proxy in front); otherwise HTTPS, and
    /// plain HTTP only to clients on this machine.
    pub api_insecure: Option<bool>,
    /// DNS address (UDP and TCP), or `off`; default 127.0.0.1 on the
    /// gossip port + 2 (5483; port 0 when gossip has port 0), and
    /// 127.0.0.1:5483 with `dev`.
    pub dns: Option<String>,
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
    /// Overrides the preset's `reach_only_dc_size` (see
    /// `shoal_gossip::Config::reach_only_dc_size`; 0 turns it off).
    pub reach_only_dc_size: Option<usize>,
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
    /// Host ports handed to tasks' named ports (inclusive); default
    /// [`DEFAULT_PORT_RANGE`].
    pub port_range: Option<(u16, u16)>,
    /// How long an artifact no one needs stays in this node's store;
    /// default [`crate::artifacts::DEFAULT_GC_AFTER`].
    pub artifact_gc_after: Option<Duration>,
}

/// Host ports for tasks unless `--port-range` says otherwise.
pub const DEFAULT_PORT_RANGE: (u16, u16) = (20000, 32000);

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
    /// The artifact store cannot be used.
    #[error("artifact store: {0}")]
    Artifacts(String),
    /// A temporary dir for --dev.
    #[error("cannot create a temporary data dir: {0}")]
    TempDir(std::io::Error),
    /// The RPC transport could not start.
    #[error("RPC transport: {0}")]
    Transport(#[from] shoal_transport::TransportError),
    /// The state dir cannot be used.
    #[error("state: {0}")]
    State(#[from] crate::statelog::StateLogError),
    /// The CA file for outgoing https requests cannot be used.
    #[error(transparent)]
    Ca(#[from] crate::http::CaError),
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
    /// Bound DNS address (none with `--dns off`).
    pub dns: Option<SocketAddr>,
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
    /// The API as other machines reach it: `https://ADVERTISED:PORT`
    /// (`http://` with `--api-insecure`).
    pub api_url: String,
    /// The API CA's certificate (`<data-dir>/api-ca.pem`), which clients
    /// trust; none with `--api-insecure`.
    pub api_ca: Option<PathBuf>,
}

/// The API's TLS.
struct ApiTlsParts {
    /// What the listener serves with; none with `--api-insecure`.
    config: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// The CA certificate (DER), which this agent trusts in its peers'
    /// APIs (with `--api-insecure` too: its peers may speak HTTPS).
    ca: Vec<u8>,
    ca_file: PathBuf,
}

/// The API's certificate (names: the host's, the node's; addresses: the
/// bound and advertised ones) and `api-ca.pem` in the data dir.
fn api_tls(
    settings: &StoredSettings,
    data_dir: &DataDir,
    secret: &ClusterSecret,
    node_id: NodeId,
    name: &str,
    bound: SocketAddr,
    advertised: SocketAddr,
) -> Result<ApiTlsParts, AgentError> {
    let mut names = vec![name.to_owned()];
    if let Ok(h) = nix::unistd::gethostname() {
        names.push(h.to_string_lossy().into_owned());
    }
    let tls = ApiTls::new(
        secret.bytes(),
        node_id,
        &names,
        &[bound.ip(), advertised.ip()],
    )?;
    let config = if settings.api_insecure == Some(true) {
        None
    } else {
        Some(Arc::new(tls.server_config()?))
    };
    let ca_file = data_dir.file("api-ca.pem");
    // Public: what a client needs to check this cluster's API.
    data_dir.write_atomic("api-ca.pem", tls.ca_pem.as_bytes(), 0o644, false)?;
    Ok(ApiTlsParts {
        config,
        ca: tls.ca.to_vec(),
        ca_file,
    })
}

/// A running agent.
pub struct Agent {
    info: AgentInfo,
    shutdown: CancellationToken,
    core: CoreHandle,
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

fn random_u64() -> Result<u64, AgentError> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(AgentError::Random)?;
    Ok(u64::from_le_bytes(b))
}

/// The data dir of this start: given, the default, or a temporary one in
/// dev mode (removed when the agent stops).
fn open_data_dir(
    opts: &AgentOptions,
) -> Result<(Arc<DataDir>, Option<tempfile::TempDir>), AgentError> {
    let (path, temp) = match (&opts.data_dir, opts.dev) {
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
    Ok((Arc::new(DataDir::open(&path)?), temp))
}

/// Whom to join: the flags (names that do not resolve yet are returned to
/// be retried), else the members known before a restart.
async fn join_peers(
    opts: &AgentOptions,
    data_dir: &DataDir,
    founded: bool,
) -> Result<(Vec<SocketAddr>, Vec<String>), AgentError> {
    let mut peers = Vec::new();
    let mut unresolved = Vec::new();
    for peer in &opts.join {
        match tokio::net::lookup_host(peer.as_str()).await {
            Ok(addrs) => peers.extend(addrs),
            Err(e) => {
                warn!(peer = %peer, error = %e, "cannot resolve join peer yet; will keep trying");
                unresolved.push(peer.clone());
            }
        }
    }
    if opts.join.is_empty() && !founded {
        peers = data_dir.load_peers()?;
        if peers.is_empty() {
            info!("no known members to rejoin; waiting for others to join this node");
        }
    }
    Ok((peers, unresolved))
}

impl Agent {
    /// Starts an agent: everything is bound and serving when this returns.
    pub async fn start(opts: AgentOptions) -> Result<Agent, AgentError> {
        crate::http::init()?;
        let (data_dir, temp_dir) = open_data_dir(&opts)?;
        let (settings, gossip_config) = settings::resolve(&opts, &data_dir)?;
        let (node, node_id) = identity::node(&data_dir)?;
        let (secret, founded) = identity::secret(&opts, &data_dir)?;
        let sockets = sockets::bind(&opts, &settings, &data_dir).await?;
        let (runtime_tx, runtime_rx) = mpsc::channel(1024);
        let local::Local {
            meta,
            isolation,
            docker,
            stop_grace,
            ports,
        } = local::describe(
            &opts,
            &settings,
            &data_dir,
            node_id,
            &sockets,
            runtime_tx.clone(),
        )
        .await?;
        let sockets::Sockets {
            gossip: gossip_socket,
            rpc: rpc_socket,
            api: api_listener,
            dns: dns_sockets,
            gossip_addr,
            rpc_addr,
            api_bound,
            api_addr,
            dns_bound,
        } = sockets;
        let name = meta.name.clone();
        let draining = meta.draining;
        let offered = shoal_placement::Resources {
            cpus_milli: u64::from(meta.capacity.cpus_milli),
            memory_mb: meta.capacity.memory_mb,
            disk_mb: meta.capacity.disk_mb,
            gpus: u64::from(meta.capacity.gpus),
        };

        // The desired state and the RPC transport.
        let (store, log, recovering) = replica::load(&data_dir, node_id, node.bump)?;
        let tls = NodeTls::new(secret.bytes(), node_id)?;
        let transport = Transport::bind(rpc_socket, &tls, node_id, TransportConfig::default())?;
        let shutdown = CancellationToken::new();
        let api_tls = api_tls(
            &settings, &data_dir, &secret, node_id, &name, api_bound, api_addr,
        )?;
        let api_listener =
            api::listener::spawn(api_listener, api_tls.config.clone(), shutdown.clone()).map_err(
                |source| AgentError::Bind {
                    what: "API",
                    addr: api_bound,
                    source,
                    hint: "",
                },
            )?;
        let (live_tx, live_rx) = watch::channel(Arc::new(Vec::new()));
        let (digest_tx, digest_rx) = watch::channel(0u64);
        let (differs_tx, differs_rx) = mpsc::channel(64);
        let (finished_tx, finished_rx) = mpsc::channel(1024);
        let (deploy_tx, deploy_rx) = mpsc::channel(256);
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

        // The runtimes, adopting what still runs from before a restart.
        let runtimes::Runtimes {
            runtime,
            adopted,
            health,
            artifacts,
            task_events,
        } = runtimes::start(runtimes::Parts {
            opts: &opts,
            data_dir: &data_dir,
            node_id,
            name: &name,
            host: rpc_addr.ip().to_string(),
            api_addr,
            token: secret.to_token(),
            api_ca: api_tls.ca.clone(),
            api_https: api_tls.config.is_some(),
            isolation,
            stop_grace,
            ports,
            docker,
            runtime_tx,
            state: &state,
            live: &live_rx,
        })
        .await?;

        // The node core: membership and placer, wired.
        let clock = Clock::new();
        let (core_task, core) = CoreTask::new(CoreParts {
            core: core::build(core::Parts {
                opts: &opts,
                now: clock.now(),
                identity: NodeIdentity::new(node_id, gossip_addr, node.bump),
                meta,
                gossip: gossip_config,
                security: crate::keyring::security(
                    secret.bytes(),
                    &crate::secrets::SecretsKey::derive(&secret),
                    &state.acl(),
                ),
                offered,
                draining,
                adopted,
            })?,
            socket: gossip_socket,
            clock,
            data_dir: data_dir.clone(),
            runtime: runtime.clone(),
            runtime_rx,
            transport: transport.clone(),
            live_tx,
            state: StateLink {
                digest: digest_rx,
                differs: differs_tx,
                finished: finished_tx,
                deployments: deploy_tx,
            },
            health,
            task_events: task_events.clone(),
            shutdown: shutdown.clone(),
        });
        let (join, unresolved) = join_peers(&opts, &data_dir, founded).await?;

        // Serve.
        let mut tasks = vec![
            ("core", tokio::spawn(core_task.run(join))),
            (
                "jobs",
                tokio::spawn(feed_jobs(state.clone(), core.clone(), shutdown.clone())),
            ),
            (
                "trust",
                tokio::spawn(background::apply_trust(
                    background::Trust {
                        acl: state.acl_watch(),
                        core: core.clone(),
                        transport: transport.clone(),
                        me: node_id,
                        secret: secret.clone(),
                    },
                    shutdown.clone(),
                )),
            ),
            (
                "log-rotation",
                tokio::spawn(background::rotate_logs(runtime.clone(), shutdown.clone())),
            ),
        ];
        if let Some(d) = runtime.docker() {
            tasks.push((
                "docker-watch",
                tokio::spawn(background::watch_docker(
                    d.clone(),
                    core.clone(),
                    shutdown.clone(),
                )),
            ));
        }
        // Batch tasks that finished, into the desired state.
        tasks.push((
            "records",
            tokio::spawn(record_finished(
                state.clone(),
                finished_rx,
                shutdown.clone(),
            )),
        ));
        // Steps of the deployments this node drives, into the desired state.
        tasks.push((
            "deployments",
            tokio::spawn(record_deployments(
                state.clone(),
                deploy_rx,
                shutdown.clone(),
            )),
        ));
        if !unresolved.is_empty() {
            tasks.push((
                "resolve-join",
                tokio::spawn(background::resolve_later(
                    unresolved,
                    core.clone(),
                    shutdown.clone(),
                )),
            ));
        }
        let services = Services::new(
            core.clone(),
            state.clone(),
            transport.clone(),
            live_rx.clone(),
        );
        // Jobs that wait for others (`after`): this node checks those it
        // drives and records the ones found ready.
        tasks.push((
            "after",
            tokio::spawn(crate::after::check_after(
                state.clone(),
                core.clone(),
                services.clone(),
                node_id,
                shutdown.clone(),
            )),
        ));
        // Triggers: this node evaluates those whose key it owns.
        let triggers = crate::triggers::Triggers::default();
        if let Some((udp, tcp)) = dns_sockets {
            let handler = DnsHandler::new(services.clone(), live_rx.clone());
            tasks.push((
                "dns",
                tokio::spawn(dns::serve(handler, udp, tcp, shutdown.clone())),
            ));
        }
        let repos = Repos::new(
            state.clone(),
            transport.clone(),
            live_rx.clone(),
            node_id,
            data_dir.file("packages"),
        );
        let usage = crate::usage::UsageBook::default();
        tasks.push((
            "usage",
            tokio::spawn(crate::usage::report_loop(
                usage.clone(),
                core.clone(),
                data_dir.path().to_owned(),
                shutdown.clone(),
            )),
        ));
        let api_state = ApiState {
            core: core.clone(),
            state: state.clone(),
            runtime: runtime.clone(),
            services,
            repos: repos.clone(),
            live: live_rx,
            transport: transport.clone(),
            auth: if opts.dev {
                None
            } else {
                Some(Arc::new(secret.clone()))
            },
            secrets_key: Some(crate::secrets::SecretsKey::derive(&secret)),
            cluster_key_id: crate::keyring::cluster_key_id(secret.bytes()),
            clock,
            token_hint: data_dir.file("token").display().to_string(),
            fault_injection: opts.fault_injection,
            task_events,
            artifacts: artifacts.clone(),
            triggers,
            usage: usage.clone(),
        };
        tasks.push((
            "triggers",
            tokio::spawn(crate::triggers::drive(
                api_state.clone(),
                node_id,
                shutdown.clone(),
            )),
        ));
        tasks.push((
            "artifact-gc",
            tokio::spawn(artifacts.collect_loop(shutdown.clone())),
        ));
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
        let rpc = Arc::new(NodeRpc {
            state: rpc_handler(&state),
            core: core.clone(),
            runtime: runtime.clone(),
            repos: repos.clone(),
            usage,
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
            dns: dns_bound,
            pid: std::process::id(),
        })?;
        info!(
            node = %node_id,
            name = %name,
            gossip = %gossip_addr,
            rpc = %rpc_addr,
            api = %api_bound,
            dns = %dns_bound.map_or_else(|| "off".to_owned(), |d| d.to_string()),
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
                dns: dns_bound,
                data_dir: data_dir.path().to_owned(),
                founded,
                token: secret.to_token(),
                dev: opts.dev,
                temporary_data_dir: temp_dir.is_some(),
                api_url: format!(
                    "{}://{api_addr}",
                    if api_tls.config.is_some() {
                        "https"
                    } else {
                        "http"
                    }
                ),
                api_ca: api_tls.config.is_some().then_some(api_tls.ca_file),
            },
            shutdown,
            core,
            state,
            tasks,
            _temp_dir: temp_dir,
        })
    }

    /// What was started.
    pub fn info(&self) -> &AgentInfo {
        &self.info
    }

    /// The node core (membership and placement).
    pub fn core(&self) -> &CoreHandle {
        &self.core
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
