//! Placement as peers and the API see it: the wire types of the
//! `Placement` and `Tasks` RPC services, and the status of a job's tasks
//! gathered from the nodes that answer for them (their coordinators; for
//! system jobs, the nodes themselves). The placer itself lives in the node
//! core (`crate::core_task`).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use shoal_gossip::NodeId;
use shoal_placement::{Msg, TaskKey, TaskState, TaskStatus};
use shoal_transport::{Service, Transport};

use crate::core_task::{CoreHandle, CoreStopped};
use crate::runtime::LocalTask;
use crate::state::Peer;

/// A batch of placement messages on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub struct Batch {
    /// [`shoal_placement::PROTOCOL_VERSION`].
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
    /// Every task this node runs (answered with `Status`).
    Held,
    /// A member's measured usage, for its zone's aggregator (answered
    /// with `Drained`). Agents send it as a gossip note now
    /// (`crate::usage`); served still for agents of the version before,
    /// during a rolling upgrade.
    Usage(crate::usage::Report),
    /// The usage of a zone this node aggregates.
    ZoneUsage {
        /// Datacenter.
        dc: String,
        /// Zone.
        zone: String,
    },
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
    /// A zone's usage.
    ZoneUsage(crate::usage::ZoneUsage),
}

/// A task as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// `healthy`, `unhealthy` or `unknown` (see docs/jobs.md, health
    /// checks); `unknown` from an agent older than health checks.
    #[serde(default = "unknown_health")]
    pub health: String,
    /// The last output of its checks (at most 256 bytes), if it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    /// Container id, for docker tasks running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Where each named port is reached, for tasks running now.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, PortView>,
    /// The job version the task runs (absent when nobody runs it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// Where a named port of a task is reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PortView {
    /// The address its node advertises.
    pub host: String,
    /// The host port.
    pub port: u16,
}

/// The address a member advertises, for reaching its tasks' ports.
pub fn advertised_host(peer: &Peer) -> String {
    peer.meta.rpc_addr.ip().to_string()
}

fn unknown_health() -> String {
    "unknown".to_owned()
}

/// The tasks node `id` runs, asked of that node (its own account).
pub async fn node_tasks(
    core: &CoreHandle,
    transport: &Transport,
    live: &[Peer],
    id: NodeId,
) -> Result<Vec<TaskView>, NodeTasksError> {
    let statuses = if id == transport.local() {
        core.held().await?
    } else {
        let peer = live
            .iter()
            .find(|p| p.id == id)
            .ok_or(NodeTasksError::NotLive)?;
        let body = postcard::to_allocvec(&TaskRequest::Held).expect("encodes");
        let answer = transport
            .request(id, peer.rpc, Service::Tasks, &body)
            .await
            .map_err(|e| NodeTasksError::Unreachable(e.to_string()))?;
        match postcard::from_bytes::<TaskResponse>(&answer) {
            Ok(TaskResponse::Status(s)) => s,
            _ => {
                return Err(NodeTasksError::Unreachable(
                    "it answered nonsense (an older agent?)".to_owned(),
                ));
            }
        }
    };
    let names: BTreeMap<NodeId, String> =
        live.iter().map(|p| (p.id, p.meta.name.clone())).collect();
    let hosts: BTreeMap<NodeId, String> = live.iter().map(|p| (p.id, advertised_host(p))).collect();
    let mut views = to_views(statuses, false, &names, &hosts);
    views.sort_by(|a, b| (&a.job, a.index, &a.task).cmp(&(&b.job, b.index, &b.task)));
    Ok(views)
}

/// Why a node's tasks could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum NodeTasksError {
    /// This node's core stopped.
    #[error(transparent)]
    Core(#[from] CoreStopped),
    /// The node is not a live member.
    #[error("the node is not a live member: its tasks cannot be asked for")]
    NotLive,
    /// It did not answer.
    #[error("the node did not answer: {0}")]
    Unreachable(String),
}

/// Status of every task of `job`, asking the node that answers for each
/// (its coordinator; for system jobs, the node itself).
pub async fn job_tasks(
    core: &CoreHandle,
    transport: &Transport,
    live: &[Peer],
    job: &str,
) -> Result<Vec<TaskView>, CoreStopped> {
    let (statuses, system) = job_statuses(core, transport, live, job).await?;
    let names: BTreeMap<NodeId, String> =
        live.iter().map(|p| (p.id, p.meta.name.clone())).collect();
    let hosts: BTreeMap<NodeId, String> = live.iter().map(|p| (p.id, advertised_host(p))).collect();
    Ok(to_views(statuses, system, &names, &hosts))
}

/// The status of every task of `job` (in index order), as the nodes that
/// answer for them report it, and whether it is a system job: one request
/// per distinct coordinator, all at once.
pub async fn job_statuses(
    core: &CoreHandle,
    transport: &Transport,
    live: &[Peer],
    job: &str,
) -> Result<(Vec<TaskStatus>, bool), CoreStopped> {
    let keys = core.keys_of(job).await?;
    let me = transport.local();
    let addrs: BTreeMap<NodeId, SocketAddr> = live.iter().map(|p| (p.id, p.rpc)).collect();
    let system = keys.iter().any(|(k, _)| k.index_number().is_none());
    let mut by_owner: BTreeMap<Option<NodeId>, Vec<TaskKey>> = BTreeMap::new();
    for (k, owner) in keys {
        by_owner.entry(owner).or_default().push(k);
    }
    let mut statuses: Vec<TaskStatus> = Vec::new();
    let mut asks = Vec::new();
    for (owner, keys) in by_owner {
        match owner {
            Some(o) if o == me => statuses.extend(core.status(keys).await?),
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
    statuses.sort_by(|a, b| (a.key.index_number(), &a.key).cmp(&(b.key.index_number(), &b.key)));
    Ok((statuses, system))
}

fn to_views(
    statuses: Vec<TaskStatus>,
    system: bool,
    names: &BTreeMap<NodeId, String>,
    hosts: &BTreeMap<NodeId, String>,
) -> Vec<TaskView> {
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
            health: s.health.as_str().to_owned(),
            check: s.check,
            container: None,
            version: (s.job_version > 0).then_some(s.job_version),
            ports: match s.node.and_then(|n| hosts.get(&n)) {
                Some(host) if s.state == TaskState::Running => s
                    .ports
                    .iter()
                    .map(|(name, port)| {
                        let view = PortView {
                            host: host.clone(),
                            port: *port,
                        };
                        (name.clone(), view)
                    })
                    .collect(),
                _ => BTreeMap::new(),
            },
        })
        .collect();
    views.sort_by(|a, b| (a.index, &a.task).cmp(&(b.index, &b.task)));
    views
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
            health: shoal_placement::Health::Unknown,
            check: None,
            ports: BTreeMap::new(),
            job_version: 0,
            pending: vec![format!("status unknown: {why}")],
        })
        .collect()
}

/// Where a task runs: its holder according to its coordinator.
pub async fn holder_of(
    core: &CoreHandle,
    transport: &Transport,
    live: &[Peer],
    key: &TaskKey,
) -> Result<Option<NodeId>, CoreStopped> {
    let tasks = job_tasks(core, transport, live, &key.job).await?;
    Ok(tasks
        .into_iter()
        .find(|t| t.task == key.to_string())
        .and_then(|t| t.node)
        .and_then(|n| n.parse().ok()))
}
