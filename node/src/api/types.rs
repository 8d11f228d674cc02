//! JSON shapes of the HTTP API, shared with the CLI.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Resources of a node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CapacityView {
    /// Cores (fractional).
    pub cpus: f64,
    /// Memory, MiB.
    pub memory_mb: u64,
    /// Disk, MiB.
    pub disk_mb: u64,
    /// GPUs.
    pub gpus: u32,
}

/// A runtime and its version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RuntimeView {
    /// `process` or `docker`.
    pub name: String,
    /// Version.
    pub version: String,
}

/// A member of the cluster. Fields from its metadata are `null` until this
/// node has learned them (a member seen for the first time a moment ago).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeView {
    /// Node id, 16 hex digits.
    pub id: String,
    /// Name.
    pub name: Option<String>,
    /// `alive`, `suspect`, `failed` or `left`.
    pub state: String,
    /// Gossip address (UDP).
    #[schema(value_type = String, example = "10.0.0.1:5481")]
    pub gossip: SocketAddr,
    /// RPC address (QUIC).
    #[schema(value_type = Option<String>)]
    pub rpc: Option<SocketAddr>,
    /// HTTP API address.
    #[schema(value_type = Option<String>)]
    pub api: Option<SocketAddr>,
    /// Datacenter.
    pub dc: Option<String>,
    /// Zone.
    pub zone: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Resources offered.
    pub capacity: Option<CapacityView>,
    /// Runtimes available.
    pub runtimes: Vec<RuntimeView>,
    /// Agent version.
    pub version: Option<String>,
    /// Free capacity in eighths (8 = idle).
    pub free_class: Option<u8>,
    /// How tasks are isolated: `cgroup-v2`, `cgroup-v1` or `none`.
    pub isolation: Option<String>,
    /// Drained: takes no new tasks.
    #[serde(default)]
    pub draining: bool,
    /// Start counter of the node (grows at each restart).
    pub generation: u32,
    /// SWIM incarnation.
    pub incarnation: u16,
    /// When the answering node first heard of it (RFC 3339).
    pub first_seen: String,
    /// When it last went up or down, as seen by the answering node.
    pub state_since: String,
    /// Whether this is the answering node.
    pub local: bool,
}

/// Pooled resources of one datacenter (alive members).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PoolView {
    /// Datacenter (empty when none is set).
    pub dc: String,
    /// Alive nodes.
    pub nodes: u64,
    /// Total resources.
    #[serde(flatten)]
    pub capacity: CapacityView,
}

/// Members by state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StateCounts {
    /// Alive.
    pub alive: u64,
    /// Suspect.
    pub suspect: u64,
    /// Failed.
    pub failed: u64,
    /// Left.
    pub left: u64,
}

/// `GET /v1/status`: the pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatusView {
    /// The node that answered.
    pub node: NodeView,
    /// Members by state.
    pub members: StateCounts,
    /// Resources of alive and suspect members whose metadata is known.
    pub total: PoolView,
    /// The same, per datacenter, sorted by name.
    pub by_dc: Vec<PoolView>,
    /// Per datacenter the answering node has heard from since it started,
    /// whether it still reaches it, sorted by name (docs/gossip.md, "Datacenters
    /// unreachable from here").
    #[serde(default)]
    pub reach: Vec<ReachView>,
}

/// Whether the answering node reaches one datacenter, from its own probes
/// and the datagrams it received: one fact per datacenter, which changes
/// no member's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReachView {
    /// Datacenter.
    pub dc: String,
    /// `reachable`, or `unreachable`: two or more of its members failed as
    /// this node sees them (its probes of them failed, or members it held
    /// failed for 5 s) and nothing arrived from any of its members since
    /// the first.
    pub reach: String,
    /// Seconds since a datagram from one of its members last arrived.
    pub heard_secs_ago: f64,
    /// Failures of its members counted since then.
    pub failures: u32,
    /// Seconds since the first of those, while unreachable.
    pub unreachable_secs: Option<f64>,
}

/// `GET /v1/health`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthView {
    /// `ok`.
    pub status: String,
    /// `ok`, or `recovering` while damaged state is fetched from peers.
    pub state: String,
    /// Node id.
    pub node_id: String,
    /// Node name.
    pub name: String,
    /// Agent version.
    pub version: String,
}

/// Every error: `{"error": {...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable code (`not_found`, `unauthorized`, …).
    pub code: String,
    /// For people: what was wrong and what to do.
    pub message: String,
    /// The offending field, for validation errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// More, depending on the code (`expected_version` and `actual_version`
    /// for `version_mismatch`, `errors` for `invalid_spec`).
    #[serde(flatten)]
    #[schema(ignore)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The answer to a write (`POST /v1/jobs`, scale, delete).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SubmitResponse {
    /// The job after the write.
    pub job: shoal_state::JobView,
    /// Its version before.
    pub previous_version: u64,
    /// What changed, field by field.
    pub changes: Vec<shoal_model::Change>,
    /// Created (or re-created after a delete).
    pub created: bool,
    /// Nothing changed; no new version.
    pub unchanged: bool,
}

/// A rolling deployment of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeploymentView {
    /// The job.
    pub job: String,
    /// The job version it deploys.
    pub version: u64,
    /// The version its tasks ran before.
    pub from_version: u64,
    /// `running`, `paused`, `successful`, `failed`, `reverted` or
    /// `cancelled`.
    pub status: shoal_model::DeploymentStatus,
    /// New tasks healthy (replaced, or healthy long enough).
    pub healthy: u32,
    /// Tasks the job wants.
    pub desired: u32,
    /// Canaries asked for.
    pub canaries: u32,
    /// The canaries were promoted (always, without canaries).
    pub promoted: bool,
    /// Indexes being replaced now.
    pub active: Vec<u32>,
    /// Indexes replaced.
    pub replaced: u32,
    /// What it is doing, or why it ended.
    pub description: String,
    /// When it began (RFC 3339).
    pub started_at: String,
    /// When it last moved (RFC 3339).
    pub updated_at: String,
    /// In progress: the node that drives it (the owner of the job's key
    /// `job/0` in the answering node's view), by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
}
