//! What is known of a task, for people: its [`TaskState`], the [`Report`]
//! a holder sends its coordinator with every lease renewal, and the
//! [`TaskStatus`] a node answers with, as the task's holder or coordinator.
//!
//! Contract: a status comes from this node's own knowledge only (a task it
//! runs, or a key it coordinates); nothing here asks another node.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal_gossip::NodeId;

use crate::types::TaskKey;

/// A task's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// No node has taken it yet.
    Pending,
    /// Awarded; the node has not started it yet.
    Assigned,
    /// Being started.
    Starting,
    /// Running.
    Running,
    /// Exited with success (or was told to stop and did).
    Exited,
    /// Exited with failure, or could not start.
    Failed,
    /// Killed (out of memory, or stopped by shoal).
    Killed,
    /// Its node failed; not yet running elsewhere.
    Lost,
}

impl TaskState {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Exited => "exited",
            TaskState::Failed => "failed",
            TaskState::Killed => "killed",
            TaskState::Lost => "lost",
        }
    }
}

/// What a holder tells its coordinator about a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// State.
    pub state: TaskState,
    /// Restarts so far.
    pub restarts: u32,
    /// Last exit code.
    pub exit_code: Option<i32>,
    /// Why it last stopped (`oom`, `exited`, `signal 9`, `start failed: …`).
    pub reason: Option<String>,
    /// When the state last changed (ms since the Unix epoch).
    pub since_ms: u64,
    /// Job version the task runs.
    pub job_version: u64,
    /// The host port of each named port, once it runs (empty for a task
    /// without ports: one byte on the wire).
    pub ports: BTreeMap<String, u16>,
}

/// A task as a coordinator (or a holder) knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// Task.
    pub key: TaskKey,
    /// Holder, if any.
    pub node: Option<NodeId>,
    /// State.
    pub state: TaskState,
    /// Restarts.
    pub restarts: u32,
    /// Last exit code.
    pub exit_code: Option<i32>,
    /// Why it last stopped.
    pub reason: Option<String>,
    /// Since (ms since the Unix epoch).
    pub since_ms: u64,
    /// Host port of each named port, as its holder reported them.
    pub ports: BTreeMap<String, u16>,
    /// Why no node took it: `name: reason`, one per node the auction
    /// walked past, up to 12 nodes; beyond, a first line `N nodes could
    /// not take it:` and, per kind of reason from the most common, a few
    /// nodes' lines and `and M more: needs 4 cpus` (bounded at any
    /// cluster size).
    pub pending: Vec<String>,
}

impl TaskStatus {
    /// A task held by `node`, as its `report` says.
    pub(super) fn held(key: &TaskKey, node: NodeId, report: Report) -> TaskStatus {
        TaskStatus {
            key: key.clone(),
            node: Some(node),
            state: report.state,
            restarts: report.restarts,
            exit_code: report.exit_code,
            reason: report.reason,
            since_ms: report.since_ms,
            ports: report.ports,
            pending: Vec::new(),
        }
    }

    /// A task no node is known to hold: waiting since `since_ms` (0 while
    /// no auction has ended without a place for it) for the `pending`
    /// reasons.
    pub(super) fn unheld(key: &TaskKey, since_ms: u64, pending: Vec<String>) -> TaskStatus {
        TaskStatus {
            key: key.clone(),
            node: None,
            state: TaskState::Pending,
            restarts: 0,
            exit_code: None,
            reason: None,
            since_ms,
            ports: BTreeMap::new(),
            pending,
        }
    }
}
