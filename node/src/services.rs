//! Service discovery: where the running tasks of a job are reached, asked
//! of any node (`GET /v1/services/{job}`, `shoal endpoints`, the DNS
//! server in [`crate::dns`]).
//!
//! Task status is not in the replicated state: the coordinators of a
//! job's keys know who holds each key and, from every lease renewal, its
//! state and host ports. A lookup asks them (one request per distinct
//! coordinator, all at once, as `shoal ps` does) and this node keeps the
//! answer in a small cache, per job and only for the jobs it is asked
//! about: never a catalog of every task.
//!
//! The cache is refreshed in the background (one refresh at a time per
//! job) when an entry is older than [`FRESH`], or when the membership
//! changed since it was fetched (a holder or a coordinator may have gone);
//! an entry older than [`MAX_STALE`] is fetched again before answering,
//! and one not asked for in [`IDLE`] is dropped. Whatever the cache holds,
//! an endpoint whose holder is not a live member *now* (gossip on this
//! node saw it fail) is left out of every answer: a dead node's endpoints
//! leave every node's answers as soon as each learns of the death, and
//! the replacement shows up at the next refresh. See `docs/services.md`
//! for the cost of this at scale.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_gossip::NodeId;
use shoal_model::{JobSpec, Port};
use shoal_placement::{Health, TaskState, TaskStatus};
use shoal_transport::Transport;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

use crate::core_task::{CoreHandle, CoreStopped};
use crate::placement::{advertised_host, job_statuses};
use crate::state::{Peer, StateHandle, StateStopped};

/// An entry younger than this is answered as is.
pub const FRESH: Duration = Duration::from_secs(1);
/// After a membership change, an entry at least this old is refreshed
/// (in the background).
pub const MIN_REFRESH: Duration = Duration::from_millis(200);
/// An entry older than this is fetched again before answering (nobody
/// asked for the job for that long, so nothing refreshed it).
pub const MAX_STALE: Duration = Duration::from_secs(10);
/// An entry not asked for in this long is dropped.
pub const IDLE: Duration = Duration::from_secs(60);
/// At most this many jobs are cached; the least recently asked go first.
pub const MAX_ENTRIES: usize = 10_000;

/// The health an endpoint shows: a running task's, as its checks say
/// (healthy when it has none); one being started is unknown, any other
/// unhealthy.
pub fn endpoint_health(state: TaskState, health: Health) -> &'static str {
    match state {
        TaskState::Running => health.as_str(),
        TaskState::Assigned | TaskState::Starting => "unknown",
        _ => "unhealthy",
    }
}

/// One task of a service and where it is reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Endpoint {
    /// `job/index` or `job@node`.
    pub task: String,
    /// Node id.
    pub node: String,
    /// Node name.
    pub node_name: Option<String>,
    /// The address the node advertises (empty when the node is not a live
    /// member, listed with `all` only).
    pub host: String,
    /// The host port of the port asked for (or of the job's first port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Every named port's host port.
    pub ports: BTreeMap<String, u16>,
    /// The task's state (`lost` when its node is not a live member).
    pub state: String,
    /// `healthy`, `unhealthy` or `unknown` (see [`endpoint_health`]).
    pub health: String,
}

/// The answer of `GET /v1/services/{job}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceView {
    /// The job.
    pub job: String,
    /// The port `port` is of: the one asked for, else the job's first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
    /// Its endpoints: healthy ones only, unless every one was asked for.
    pub endpoints: Vec<Endpoint>,
}

/// Why a lookup has no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LookupError {
    /// No such job (or it was deleted).
    #[error("no job named {0:?} (see `shoal jobs`)")]
    NoJob(String),
    /// The job has no port of that name.
    #[error("job {job:?} has no port named {port:?}; its ports: {known}")]
    NoPort {
        /// Job.
        job: String,
        /// The name asked for.
        port: String,
        /// The job's ports, comma-separated (`none` when it has none).
        known: String,
    },
    /// The node core stopped.
    #[error(transparent)]
    Core(#[from] CoreStopped),
    /// The state task stopped.
    #[error(transparent)]
    State(#[from] StateStopped),
}

/// What a lookup fetched of one job.
#[derive(Debug)]
pub struct Entry {
    /// The job's ports, `None` when there is no such job.
    ports: Option<Vec<Port>>,
    statuses: Vec<TaskStatus>,
    fetched: Instant,
    /// The member list the fetch saw.
    live: Arc<Vec<Peer>>,
}

impl Entry {
    /// The job's named ports, when the job exists.
    pub fn ports(&self) -> Option<&[Port]> {
        self.ports.as_deref()
    }

    /// The job's tasks as their coordinators reported them.
    pub fn statuses(&self) -> &[TaskStatus] {
        &self.statuses
    }
}

struct Slot {
    entry: Arc<Entry>,
    refreshing: bool,
    used: Instant,
}

struct Inner {
    core: CoreHandle,
    state: StateHandle,
    transport: Transport,
    live: watch::Receiver<Arc<Vec<Peer>>>,
    cache: Mutex<BTreeMap<String, Slot>>,
}

/// Endpoint lookups with this node's cache. Cheap to clone.
#[derive(Clone)]
pub struct Services {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

impl Services {
    /// Lookups through this node's core, replica and transport.
    pub fn new(
        core: CoreHandle,
        state: StateHandle,
        transport: Transport,
        live: watch::Receiver<Arc<Vec<Peer>>>,
    ) -> Services {
        Services {
            inner: Arc::new(Inner {
                core,
                state,
                transport,
                live,
                cache: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// The endpoints of `job`: of `port` (else of its first port), every
    /// task with a node with `all`, else the healthy ones only.
    pub async fn endpoints(
        &self,
        job: &str,
        port: Option<&str>,
        all: bool,
    ) -> Result<ServiceView, LookupError> {
        let entry = self.lookup(job).await?;
        let live = self.inner.live.borrow().clone();
        answer(job, &entry, &live, port, all)
    }

    /// What is known of `job`: from the cache when fresh enough (then
    /// refreshed in the background when due), else fetched.
    pub async fn lookup(&self, job: &str) -> Result<Arc<Entry>, LookupError> {
        let now = Instant::now();
        let live = self.inner.live.borrow().clone();
        let refresh = {
            let mut cache = self.inner.cache.lock().expect("lock");
            match cache.get_mut(job) {
                Some(slot) if now.duration_since(slot.entry.fetched) < MAX_STALE => {
                    slot.used = now;
                    let age = now.duration_since(slot.entry.fetched);
                    let due = age >= FRESH
                        || (age >= MIN_REFRESH && !Arc::ptr_eq(&slot.entry.live, &live));
                    let start = due && !slot.refreshing;
                    if start {
                        slot.refreshing = true;
                    }
                    Some((slot.entry.clone(), start))
                }
                _ => None,
            }
        };
        match refresh {
            Some((entry, start)) => {
                if start {
                    let this = self.clone();
                    let job = job.to_owned();
                    tokio::spawn(async move {
                        let fetched = this.fetch(&job).await;
                        this.store(&job, fetched.ok().map(Arc::new));
                    });
                }
                Ok(entry)
            }
            None => {
                let entry = Arc::new(self.fetch(job).await?);
                self.store(job, Some(entry.clone()));
                Ok(entry)
            }
        }
    }

    /// Keeps `entry` for `job` (or, without one, ends its refresh).
    fn store(&self, job: &str, entry: Option<Arc<Entry>>) {
        let now = Instant::now();
        let mut cache = self.inner.cache.lock().expect("lock");
        match entry {
            Some(entry) => {
                let used = cache.get(job).map_or(now, |s| s.used);
                cache.insert(
                    job.to_owned(),
                    Slot {
                        entry,
                        refreshing: false,
                        used,
                    },
                );
            }
            None => {
                if let Some(s) = cache.get_mut(job) {
                    s.refreshing = false;
                }
            }
        }
        cache.retain(|_, s| now.duration_since(s.used) < IDLE);
        while cache.len() > MAX_ENTRIES {
            let Some(oldest) = cache
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            cache.remove(&oldest);
        }
    }

    /// Asks the replica for the job and its coordinators for its tasks.
    async fn fetch(&self, job: &str) -> Result<Entry, LookupError> {
        let started = Instant::now();
        let live = self.inner.live.borrow().clone();
        let spec = self
            .inner
            .state
            .job(job)
            .await?
            .filter(|j| !j.deleted)
            .and_then(|j| serde_json::from_value::<JobSpec>(j.spec).ok());
        let Some(spec) = spec else {
            return Ok(Entry {
                ports: None,
                statuses: Vec::new(),
                fetched: started,
                live,
            });
        };
        let (statuses, _) =
            job_statuses(&self.inner.core, &self.inner.transport, &live, job).await?;
        debug!(job, tasks = statuses.len(), took = ?started.elapsed(), "service lookup fetched");
        Ok(Entry {
            ports: Some(spec.task.ports),
            statuses,
            fetched: started,
            live,
        })
    }
}

/// The answer for `job` from `entry`, leaving out (or, with `all`, showing
/// as lost) the tasks whose node is not in `live`.
pub fn answer(
    job: &str,
    entry: &Entry,
    live: &[Peer],
    port: Option<&str>,
    all: bool,
) -> Result<ServiceView, LookupError> {
    let Some(ports) = &entry.ports else {
        return Err(LookupError::NoJob(job.to_owned()));
    };
    let port_name = match port {
        Some(wanted) => match ports.iter().find(|p| p.name.eq_ignore_ascii_case(wanted)) {
            Some(p) => Some(p.name.clone()),
            None => {
                let known: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
                return Err(LookupError::NoPort {
                    job: job.to_owned(),
                    port: wanted.to_owned(),
                    known: if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    },
                });
            }
        },
        None => ports.first().map(|p| p.name.clone()),
    };
    let peers: BTreeMap<NodeId, &Peer> = live.iter().map(|p| (p.id, p)).collect();
    let mut endpoints = Vec::new();
    for s in &entry.statuses {
        let Some(node) = s.node else { continue };
        let peer = peers.get(&node);
        let state = if peer.is_some() {
            s.state
        } else {
            TaskState::Lost
        };
        let health = endpoint_health(state, s.health);
        if !all && health != "healthy" {
            continue;
        }
        endpoints.push(Endpoint {
            task: s.key.to_string(),
            node: node.to_string(),
            node_name: peer.map(|p| p.meta.name.clone()),
            host: peer.map(|p| advertised_host(p)).unwrap_or_default(),
            port: port_name.as_ref().and_then(|n| s.ports.get(n).copied()),
            ports: s.ports.clone(),
            state: state.as_str().to_owned(),
            health: health.to_owned(),
        });
    }
    Ok(ServiceView {
        job: job.to_owned(),
        port_name,
        endpoints,
    })
}
