//! The desired state of a shoal cluster, as a pure state machine.
//!
//! What users ask for (jobs) is small and changes rarely, so every node holds
//! all of it and accepts writes alone, even cut off from the rest. Each job
//! is one automerge document; concurrent changes merge field by field, and
//! the same winner is picked on every node for concurrent changes of one
//! field. A job's `version` is the length of its history, a list every
//! change appends to, so concurrent changes both count.
//!
//! [`Store`] takes writes from the API and messages from peers; it never
//! touches the network, the disk or the clock. The caller persists what
//! [`Store::poll_persist`] returns before acknowledging a write, sends what
//! [`Store::poll_push`] returns to a few random peers, and runs anti-entropy
//! rounds ([`Store::begin_round`] / [`Store::handle_request`] /
//! [`Store::handle_response`]) with random peers. See `docs/state.md`.

mod acl;
mod after;
mod artifacts;
mod deployments;
mod installations;
mod io;
mod jsondoc;
mod outcomes;
mod repos;
mod secrets;
mod store;
mod sync;
mod triggers;
mod view;

pub use acl::{
    AclToken, BOOTSTRAP_NAME, ForgottenNode, GossipKeyRecord, GossipPrimary, NewToken, is_accessor,
    is_key_id,
};
pub use artifacts::{ArtifactOp, ArtifactRecord, doc_name as artifact_doc};
pub use deployments::DeployAction;
pub use installations::{InstallOp, Installation, Revision, doc_name as installation_doc};
pub use outcomes::{BatchStatus, TaskOutcome};
pub use repos::{BUILTIN as BUILTIN_REPO, Repository, validate_url as validate_repo_url};
pub use secrets::SecretRecord;
pub use store::{
    BUCKETS, JobEvent, PersistOp, Push, StateConfig, Store, Write, WriteError, WriteOp, Written,
    rfc3339,
};
pub use sync::{DocChanges, DocHeads, MAX_BATCH_BYTES, SyncRequest, SyncResponse};
pub use triggers::{TriggerOp, TriggerRecord, doc_name as trigger_doc};
pub use view::{HistoryEntry, JobView};
