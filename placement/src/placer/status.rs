//! What is known of a task, for people: its [`TaskState`], the [`Report`]
//! a holder sends its coordinator with every lease renewal, and the
//! [`TaskStatus`] a node answers with, as the task's holder or coordinator.
//!
//! Contract: a status comes from this node's own knowledge only (a task it
//! runs, or a key it coordinates); nothing here asks another node.

use std::collections::BTreeMap;

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use shoal_gossip::NodeId;

use super::health::Health;
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
    const ALL: [TaskState; 8] = [
        TaskState::Pending,
        TaskState::Assigned,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Exited,
        TaskState::Failed,
        TaskState::Killed,
        TaskState::Lost,
    ];

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
///
/// On the wire (postcard, in every lease renewal) the state and the
/// health share one byte, and the check output follows only when there is
/// one: a task without checks costs what it cost before health existed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// State.
    pub state: TaskState,
    /// Restarts so far.
    pub restarts: u32,
    /// Last exit code.
    pub exit_code: Option<i32>,
    /// Why it last stopped (`oom`, `exited`, `signal 9`, `start failed: …`,
    /// `unhealthy: …`).
    pub reason: Option<String>,
    /// When the state last changed (ms since the Unix epoch).
    pub since_ms: u64,
    /// Job version the task runs.
    pub job_version: u64,
    /// Health.
    pub health: Health,
    /// The last output of its checks (at most
    /// [`CHECK_OUTPUT_MAX`](super::CHECK_OUTPUT_MAX) bytes).
    pub check: Option<String>,
    /// The host port of each named port, once it runs (empty for a task
    /// without ports: one byte on the wire).
    pub ports: BTreeMap<String, u16>,
}

/// Bit of the head byte saying that a check output follows.
const HAS_CHECK: u8 = 0x20;
/// Bit of the head byte saying that host ports follow (a task without
/// ports costs no byte for them).
const HAS_PORTS: u8 = 0x40;

impl Serialize for Report {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let state = TaskState::ALL
            .iter()
            .position(|x| *x == self.state)
            .unwrap_or(0) as u8;
        let mut head = state | (self.health.index() << 3);
        if self.check.is_some() {
            head |= HAS_CHECK;
        }
        if !self.ports.is_empty() {
            head |= HAS_PORTS;
        }
        let extra = usize::from(self.check.is_some()) + usize::from(!self.ports.is_empty());
        let mut t = s.serialize_tuple(6 + extra)?;
        t.serialize_element(&head)?;
        t.serialize_element(&self.restarts)?;
        t.serialize_element(&self.exit_code)?;
        t.serialize_element(&self.reason)?;
        t.serialize_element(&self.since_ms)?;
        t.serialize_element(&self.job_version)?;
        if let Some(c) = &self.check {
            t.serialize_element(c)?;
        }
        if !self.ports.is_empty() {
            t.serialize_element(&self.ports)?;
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for Report {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Report, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Report;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a task report")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Report, A::Error> {
                let missing = |i| de::Error::invalid_length(i, &"6 to 8 elements");
                let head: u8 = seq.next_element()?.ok_or_else(|| missing(0))?;
                let state = *TaskState::ALL
                    .get(usize::from(head & 0x07))
                    .ok_or_else(|| de::Error::custom("bad task state"))?;
                let health = Health::from_index((head >> 3) & 0x03)
                    .ok_or_else(|| de::Error::custom("bad task health"))?;
                let restarts = seq.next_element()?.ok_or_else(|| missing(1))?;
                let exit_code = seq.next_element()?.ok_or_else(|| missing(2))?;
                let reason = seq.next_element()?.ok_or_else(|| missing(3))?;
                let since_ms = seq.next_element()?.ok_or_else(|| missing(4))?;
                let job_version = seq.next_element()?.ok_or_else(|| missing(5))?;
                let check = if head & HAS_CHECK != 0 {
                    Some(seq.next_element()?.ok_or_else(|| missing(6))?)
                } else {
                    None
                };
                let ports = if head & HAS_PORTS != 0 {
                    seq.next_element()?.ok_or_else(|| missing(7))?
                } else {
                    BTreeMap::new()
                };
                Ok(Report {
                    state,
                    restarts,
                    exit_code,
                    reason,
                    since_ms,
                    job_version,
                    health,
                    check,
                    ports,
                })
            }
        }
        d.deserialize_tuple(8, V)
    }
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
    /// Health.
    pub health: Health,
    /// The last output of its checks.
    pub check: Option<String>,
    /// Host port of each named port, as its holder reported them.
    pub ports: BTreeMap<String, u16>,
    /// The job version its holder runs (0 when nobody holds it).
    pub job_version: u64,
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
            health: report.health,
            check: report.check,
            ports: report.ports,
            job_version: report.job_version,
            pending: Vec::new(),
        }
    }

    /// A batch task that finished for good, as its job's record `f` says.
    pub(super) fn finished(key: &TaskKey, f: &super::Finished) -> TaskStatus {
        TaskStatus {
            key: key.clone(),
            node: f.node,
            state: if f.ok {
                TaskState::Exited
            } else {
                TaskState::Failed
            },
            restarts: 0,
            exit_code: f.exit_code,
            reason: Some(if f.ok { "complete" } else { "failed" }.to_owned()),
            since_ms: f.at_ms,
            health: Health::Unknown,
            check: None,
            ports: BTreeMap::new(),
            job_version: 0,
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
            health: Health::Unknown,
            check: None,
            ports: BTreeMap::new(),
            job_version: 0,
            pending,
        }
    }
}
