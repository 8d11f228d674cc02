//! What the placer says: messages to other nodes ([`Msg`]), commands to
//! the task runtime ([`Command`]), what the runtime reports back
//! ([`ExitReason`]) and events worth a log line ([`Event`]).
//!
//! Contract: [`Msg`] is the wire format between placers, versioned by
//! [`PROTOCOL_VERSION`]: a change to its serde form is a protocol change.
//! The transport may lose a message; a lost one reads as a missing bid or
//! a late renewal, which the placer tolerates.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shoal_gossip::NodeId;
use shoal_model::{DeploymentPatch, JobSpec};

use super::health::Health;
use super::status::Report;
use crate::types::{Resources, Stamp, TaskKey};

/// Version of the placement messages.
pub const PROTOCOL_VERSION: u8 = 1;

/// A spec inside a message travels as JSON text: the spec's serde form
/// leaves out absent optional fields, which a compact binary encoding
/// (postcard) cannot tell. In memory it is shared (`Arc`): a message to
/// this node, or between simulated nodes, copies no spec.
mod spec_json {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};
    use shoal_model::JobSpec;

    pub(super) fn serialize<S: Serializer>(spec: &JobSpec, s: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(spec).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<JobSpec>, D::Error> {
        let text = String::deserialize(d)?;
        serde_json::from_str(&text)
            .map(Arc::new)
            .map_err(serde::de::Error::custom)
    }
}

/// Messages between nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Msg {
    /// Coordinator → candidate: can you run this?
    BidRequest {
        /// Task.
        key: TaskKey,
        /// Auction round.
        round: u64,
        /// Job version auctioned.
        job_version: u64,
        /// Resources per task.
        demand: Resources,
        /// Constraints, runtime, spread: the spec.
        #[serde(with = "spec_json")]
        spec: Arc<JobSpec>,
    },
    /// Candidate → coordinator: yes, reserved.
    Bid {
        /// Task.
        key: TaskKey,
        /// Round.
        round: u64,
        /// Free capacity left after placing it, thousandths (lower is a
        /// tighter fit).
        score: u64,
        /// Tasks of the same job on the candidate.
        job_tasks: u32,
        /// The candidate's value of the job's spread attribute.
        spread_value: Option<String>,
    },
    /// Candidate → coordinator: no, because…
    Decline {
        /// Task.
        key: TaskKey,
        /// Round.
        round: u64,
        /// Why.
        reason: String,
    },
    /// Coordinator → winner: run it.
    Award {
        /// Task.
        key: TaskKey,
        /// Round.
        round: u64,
        /// The award's stamp (later awards win conflicts).
        stamp: Stamp,
        /// Job version.
        job_version: u64,
        /// The spec to run.
        #[serde(with = "spec_json")]
        spec: Arc<JobSpec>,
    },
    /// Winner → coordinator: taken.
    Accept {
        /// Task.
        key: TaskKey,
        /// Round.
        round: u64,
    },
    /// Winner → coordinator: cannot take it after all.
    Reject {
        /// Task.
        key: TaskKey,
        /// Round.
        round: u64,
        /// Why.
        reason: String,
    },
    /// Holder → coordinator: I run it, with this award.
    Lease {
        /// Task.
        key: TaskKey,
        /// The award the holder runs.
        stamp: Stamp,
        /// Its status.
        report: Report,
    },
    /// Coordinator → holder: stop this award of the task.
    Stop {
        /// Task.
        key: TaskKey,
        /// The award to stop (a newer one on the same node is kept).
        stamp: Stamp,
        /// Why.
        reason: String,
    },
    /// Coordinator → losing bidder: the auction is over, release the
    /// reservation.
    Cancel {
        /// Task.
        key: TaskKey,
        /// Round.
        round: u64,
    },
    /// Holder → coordinator: I stopped it for good (scaled down, drained,
    /// deleted).
    Release {
        /// Task.
        key: TaskKey,
        /// The award released.
        stamp: Stamp,
    },
    /// Coordinator of a key being replaced by a rolling deployment → the
    /// deployment's driver: how the new task is doing (sent with each of
    /// its lease renewals while the index is being replaced).
    Progress {
        /// Task.
        key: TaskKey,
        /// The job version the deployment deploys.
        version: u64,
        /// The new task's health.
        health: Health,
        /// An old task still runs beside it (start-first); without one,
        /// healthy is enough.
        replacing: bool,
    },
}

impl Msg {
    /// The message's name, for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Msg::BidRequest { .. } => "bid_request",
            Msg::Bid { .. } => "bid",
            Msg::Decline { .. } => "decline",
            Msg::Award { .. } => "award",
            Msg::Accept { .. } => "accept",
            Msg::Reject { .. } => "reject",
            Msg::Lease { .. } => "lease",
            Msg::Stop { .. } => "stop",
            Msg::Cancel { .. } => "cancel",
            Msg::Release { .. } => "release",
            Msg::Progress { .. } => "progress",
        }
    }
}

/// What the runtime must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Start (or restart) a task.
    Start {
        /// Task.
        key: TaskKey,
        /// What to run.
        spec: Arc<JobSpec>,
        /// Job version.
        job_version: u64,
        /// The award.
        stamp: Stamp,
        /// Start number, from 0.
        attempt: u32,
    },
    /// Stop what runs for the task (without reporting its end), then
    /// start it anew: a spec change.
    Replace {
        /// Task.
        key: TaskKey,
        /// What to run now.
        spec: Arc<JobSpec>,
        /// Job version.
        job_version: u64,
        /// The award.
        stamp: Stamp,
        /// Start number.
        attempt: u32,
    },
    /// Stop a task: SIGTERM, grace period, SIGKILL.
    Stop {
        /// Task.
        key: TaskKey,
        /// Why (for logs).
        reason: String,
    },
}

/// How a task ended, as the runtime saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// Exited by itself with `code`.
    Exited(i32),
    /// Killed by a signal it was not sent by shoal.
    Signaled(i32),
    /// Killed for using more memory than its limit.
    Oom,
    /// Could not start (command not found, …).
    StartFailed(String),
    /// Could not start because a static port is taken on this node by a
    /// program shoal does not run (the placer cannot know such ports
    /// before): the task is given up, to be placed elsewhere, and this
    /// node declines that port for a while.
    PortInUse {
        /// The static port.
        port: u16,
        /// What to show (`port 8080 (http) in use on this host`).
        reason: String,
    },
    /// Stopped by shoal.
    Stopped,
    /// Ended while the agent was away (an adopted task): code unknown.
    Unknown,
}

/// Something worth a log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// This node awarded a key.
    Awarded {
        /// Task.
        key: TaskKey,
        /// Winner.
        node: NodeId,
    },
    /// No node had room; the key waits.
    Pending {
        /// Task.
        key: TaskKey,
        /// Every candidate's reason, `name: reason`, summarized by kind
        /// past a dozen candidates (see
        /// [`TaskStatus::pending`](super::TaskStatus::pending)).
        reasons: Vec<String>,
    },
    /// Two nodes held a key; one was told to stop.
    Conflict {
        /// Task.
        key: TaskKey,
        /// Kept.
        kept: NodeId,
        /// Told to stop.
        stopped: NodeId,
    },
    /// A holder failed; the key is auctioned again.
    Lost {
        /// Task.
        key: TaskKey,
        /// The failed holder.
        node: NodeId,
    },
    /// The free-capacity class of this node changed (publish it by gossip).
    FreeClass(u8),
    /// The health of a task this node runs changed.
    Health {
        /// Task.
        key: TaskKey,
        /// Its health now.
        health: Health,
        /// The last output of its checks.
        check: Option<String>,
    },
    /// A batch task finished for good: the node records it in the job's
    /// replicated document (a write like any other), after which no node
    /// places, starts or restarts it for this run of the job. Said by the
    /// holder when the task ends, and again by its coordinator when a
    /// lease reports an exit 0 not yet recorded, so that either side
    /// suffices; recording one twice changes nothing.
    Finished(Outcome),
    /// The driver of a rolling deployment moved it on: the node writes the
    /// step into the job's replicated document (see [`DeployStep`]).
    Deployment(DeployStep),
}

/// A step of a rolling deployment, decided by its driver (see
/// `placer/deploy.rs`), for the node to write into the job's document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeployStep {
    /// The job.
    pub job: String,
    /// The version the deployment deploys.
    pub version: u64,
    /// What changes in its record.
    pub patch: DeploymentPatch,
    /// It failed and the job asks for `auto_revert`: the node writes the
    /// job's last version that deployed healthily as a new version.
    pub revert: bool,
}

/// How a batch task finished for good (see [`Event::Finished`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Task (an index of a batch job).
    pub key: TaskKey,
    /// The job version it ran.
    pub job_version: u64,
    /// The node that ran it.
    pub node: NodeId,
    /// Exited 0 (complete), or failed with no restart left.
    pub ok: bool,
    /// Its last exit code.
    pub exit_code: Option<i32>,
    /// Why it ended (`exited with code 3`, `start failed: …`).
    pub reason: Option<String>,
    /// When it ended (ms since the Unix epoch).
    pub at_ms: u64,
}

/// A candidate's answer to a bid request, as its bidder gives it and the
/// coordinator records it; on the wire, a [`Msg::Bid`] or a
/// [`Msg::Decline`].
#[derive(Clone, Debug)]
pub(super) enum Answer {
    /// Yes, reserved (the fields of [`Msg::Bid`]).
    Bid {
        score: u64,
        job_tasks: u32,
        spread_value: Option<String>,
    },
    /// No, because…
    Decline(String),
}

impl Answer {
    /// The message that carries this answer for `key` in auction `round`.
    pub(super) fn into_msg(self, key: TaskKey, round: u64) -> Msg {
        match self {
            Answer::Bid {
                score,
                job_tasks,
                spread_value,
            } => Msg::Bid {
                key,
                round,
                score,
                job_tasks,
                spread_value,
            },
            Answer::Decline(reason) => Msg::Decline { key, round, reason },
        }
    }
}
