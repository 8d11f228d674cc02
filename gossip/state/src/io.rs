//! What goes into a node's replica ([`Store`](crate::Store)) and what comes out of it:
//! its tuning, the writes the API makes, the events it reports, what must
//! reach the disk and what is pushed to peers. The store's own logic is in
//! `store.rs`; these are its vocabulary, kept apart so that file stays one
//! concept (the documents and the operations on them).

use serde::{Deserialize, Serialize};
use shoal_gossip::NodeId;
use shoal_model::{Change, JobSpec};

use crate::outcomes::BatchStatus;
use crate::view::JobView;

/// Tuning of the replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateConfig {
    /// Peers a fresh change is pushed to at once (and forwarded to by each
    /// node that finds it new). 3 reaches 50 nodes in about 4 hops.
    pub push_fanout: usize,
    /// How long a deleted job's document is kept, in milliseconds, so that
    /// a node returning from a partition cannot bring the job back. After
    /// that the document is dropped and a name-only tombstone is kept as
    /// long again.
    pub tombstone_ttl_ms: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            push_fanout: 3,
            tombstone_ttl_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// What a write does to a job.
#[derive(Clone, Debug, PartialEq)]
pub enum WriteOp {
    /// Create or update with a full spec.
    Put(Box<JobSpec>),
    /// Change `count` only.
    Scale(u32),
    /// Delete (a tombstone, for `tombstone_ttl_ms`).
    Delete,
}

/// A write accepted by this node's API.
#[derive(Clone, Debug, PartialEq)]
pub struct Write {
    /// The job.
    pub name: String,
    /// What to do.
    pub op: WriteOp,
    /// Check-and-set: only if the job is at this version (0: must not
    /// exist).
    pub if_version: Option<u64>,
    /// Wall-clock time of the write, ms since the Unix epoch.
    pub now_ms: u64,
    /// The name of the ACL token that asked for it, kept in the job's
    /// history (`None`: no token: `--dev`, the cluster secret before the
    /// ACL bootstrap, or the agent itself).
    pub by: Option<String>,
}

/// Why a write was refused. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// No such job (or it was deleted).
    #[error("job {0:?} not found")]
    NotFound(String),
    /// `if_version` did not match.
    #[error("job {name:?} is at version {actual}, not {expected}")]
    VersionMismatch {
        /// The job.
        name: String,
        /// Version asked for.
        expected: u64,
        /// Version it is at.
        actual: u64,
    },
    /// The write does not apply to this job.
    #[error("{field}: {message}")]
    Rejected {
        /// The field at fault.
        field: String,
        /// Why.
        message: String,
    },
    /// The document could not be written (a bug).
    #[error("document error: {0}")]
    Doc(String),
}

/// A write that was applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Written {
    /// The job after the write.
    pub job: JobView,
    /// Its version before (0 if it did not exist).
    pub previous_version: u64,
    /// Field-by-field changes of the spec.
    pub changes: Vec<Change>,
    /// Whether the job was created (or re-created after a delete).
    pub created: bool,
    /// The write changed nothing (same spec, same count): no new version.
    pub unchanged: bool,
}

/// Something that happened to a job, locally or by replication.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobEvent {
    /// Created (or re-created).
    Created {
        /// Job.
        name: String,
        /// Version.
        version: u64,
        /// Node that accepted it.
        node: String,
    },
    /// Spec updated.
    Updated {
        /// Job.
        name: String,
        /// Version.
        version: u64,
        /// Node that accepted it.
        node: String,
        /// What changed.
        changes: Vec<Change>,
    },
    /// Count changed.
    Scaled {
        /// Job.
        name: String,
        /// Version.
        version: u64,
        /// Node that accepted it.
        node: String,
        /// New count.
        count: u32,
    },
    /// Deleted.
    Deleted {
        /// Job.
        name: String,
        /// Version.
        version: u64,
        /// Node that accepted it.
        node: String,
    },
    /// A rolling deployment of the job began, moved or ended (see
    /// [`Store::update_deployment`](crate::Store::update_deployment)).
    Deployment {
        /// Job.
        name: String,
        /// The version it deploys.
        version: u64,
        /// Where it stands.
        status: shoal_model::DeploymentStatus,
        /// What it is doing, or why it ended.
        description: String,
    },
    /// A package installation was made, changed or removed (see
    /// [`Store::install_write`](crate::Store::install_write)); `name` is its instance.
    Installation {
        /// Instance name.
        name: String,
        /// `install`, `upgrade`, `rollback`, `uninstall`, or `changed`
        /// (learned from a peer).
        op: String,
        /// Its latest revision.
        revision: u32,
    },
    /// A package repository was added or removed (see
    /// [`Store::repo_add`](crate::Store::repo_add)); `name` is the repository's.
    Repository {
        /// Repository name.
        name: String,
        /// `add`, `remove`, or `changed` (learned from a peer).
        op: String,
    },
    /// An ACL policy or token was written (see
    /// [`Store::acl_token_create`](crate::Store::acl_token_create)); `name`
    /// is the policy's name or the token's accessor.
    Acl {
        /// Policy name or token accessor.
        name: String,
        /// `policy-put`, `policy-delete`, `token-create`, `token-revoke`,
        /// or `changed` (learned from a peer).
        op: String,
    },
    /// A secret was stored or removed (see
    /// [`Store::secret_put`](crate::Store::secret_put)); never its value.
    Secret {
        /// Secret name.
        name: String,
        /// `put`, `remove`, or `changed` (learned from a peer).
        op: String,
    },
    /// A trigger was created, changed, paused, resumed or deleted, or its
    /// evaluator recorded what became of a slot (see
    /// [`Store::trigger_write`](crate::Store::trigger_write)); `name` is the trigger's.
    Trigger {
        /// Trigger name.
        name: String,
        /// `created`, `updated`, `paused`, `resumed`, `deleted`, what the
        /// evaluator recorded (`fired`, `skipped`, `missed`, `finished`),
        /// or `changed` (learned from a peer).
        op: String,
    },
    /// A job that `name` waits for (`after`) was recorded ready (see
    /// [`Store::mark_ready`](crate::Store::mark_ready)).
    Ready {
        /// The waiting job.
        name: String,
        /// The job found ready.
        dep: String,
    },
    /// A batch task finished for good and was recorded (see
    /// [`Store::record`](crate::Store::record)).
    TaskFinished {
        /// Job.
        name: String,
        /// The task's index.
        index: u32,
        /// `complete` or `failed`.
        status: BatchStatus,
        /// The job version it ran.
        version: u64,
        /// The node that ran it.
        node: String,
    },
}

impl JobEvent {
    /// The job it is about.
    pub fn name(&self) -> &str {
        match self {
            JobEvent::Created { name, .. }
            | JobEvent::Updated { name, .. }
            | JobEvent::Scaled { name, .. }
            | JobEvent::Deleted { name, .. }
            | JobEvent::Deployment { name, .. }
            | JobEvent::Installation { name, .. }
            | JobEvent::Ready { name, .. }
            | JobEvent::Repository { name, .. }
            | JobEvent::Trigger { name, .. }
            | JobEvent::Acl { name, .. }
            | JobEvent::Secret { name, .. }
            | JobEvent::TaskFinished { name, .. } => name,
        }
    }
}

/// What must reach the disk before a write is acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PersistOp {
    /// Changes to append to a job's document (automerge bytes).
    Append {
        /// Job.
        name: String,
        /// Changes.
        bytes: Vec<u8>,
    },
    /// A deleted job's document dropped after its tombstone expired.
    Drop {
        /// Job.
        name: String,
        /// When it was deleted.
        deleted_at_ms: u64,
    },
    /// A name-only tombstone forgotten.
    Forget {
        /// Job.
        name: String,
    },
}

impl PersistOp {
    /// The job it is about.
    pub fn name(&self) -> &str {
        match self {
            PersistOp::Append { name, .. }
            | PersistOp::Drop { name, .. }
            | PersistOp::Forget { name } => name,
        }
    }
}

/// Changes to push to a few random peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    /// The documents' new changes.
    pub docs: Vec<crate::sync::DocChanges>,
    /// Do not send to this peer (it sent them to us).
    pub except: Option<NodeId>,
}
