//! What leaves a [`crate::NodeCore`]: one ordered queue of effects.

use shoal_gossip::{Event as GossipEvent, Instant, NodeId, TimerToken, Transmit};
use shoal_placement::{Command, DeployStep, Event as PlaceEvent, Msg, Outcome};

/// A timer the core asked for; hand it back through
/// [`crate::NodeCore::handle_timer`] once its time has come. A timer that
/// was replaced since is ignored there, so drivers never cancel one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// The membership's next timer.
    Gossip(TimerToken),
    /// The placer's tick (auction timeouts, lease renewals, retries),
    /// due at this instant.
    Tick(Instant),
    /// Hand the members that changed to the placer.
    Publish,
    /// Publish the placer's free-capacity class in the gossip metadata.
    FreeClass,
}

/// How the placer's member view changed at one publish.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ViewChange {
    /// Members the placer did not have and has now.
    pub joined: Vec<NodeId>,
    /// Members the placer had and no longer has.
    pub left: Vec<NodeId>,
}

/// One effect of the core, in the order it was produced.
#[derive(Debug)]
pub enum Output {
    /// A gossip datagram to send over UDP.
    Datagram(Transmit),
    /// A placement message for a peer (sent over the RPC transport, in
    /// order per peer).
    Message {
        /// The peer.
        to: NodeId,
        /// The message.
        msg: Msg,
    },
    /// A command for the task runtimes (start, replace, stop a task).
    Runtime(Command),
    /// Hand `timer` back at `at`.
    Timer {
        /// When.
        at: Instant,
        /// Which.
        timer: Timer,
    },
    /// Something membership noticed (already acted on by the core; for
    /// logs, metrics and what the driver persists).
    Gossip(GossipEvent),
    /// Something the placer decided (for logs and metrics). Its
    /// free-capacity class is not passed on: the core publishes it.
    Placement(PlaceEvent),
    /// The members that changed were handed to the placer; the driver's
    /// list of live peers (with their metadata) is out of date.
    Published(ViewChange),
    /// This node became cut off from most of the members it knew
    /// (`Some`: it keeps its own tasks and places no other), or reaches
    /// most of them again (`None`). For logs and metrics.
    CutOff(Option<shoal_placement::CutOff>),
    /// A batch task finished for good: write it into its job's replicated
    /// document (a desired-state write like any other, durable before it
    /// is acknowledged), then hand the core the job with the record (see
    /// [`shoal_placement::Job::finished`]). Recording one twice changes
    /// nothing; losing one is repaired by the task's coordinator, which
    /// asks again when a lease reports the exit.
    Finished(Outcome),
    /// The driver of a rolling deployment moved it on: write the step into
    /// the job's replicated document (and, for `revert`, the job's last
    /// version that deployed healthily as a new version). A step lost is
    /// decided again by the driver a few seconds later.
    Deployment(DeployStep),
    /// A member's state changed as this node sees it (joined, suspect,
    /// alive again, failed, left, forgotten): for the driver's event
    /// stream. The core's [`Summary`](crate::Summary) has counted it.
    MemberState(crate::summary::MemberStateChange),
}

impl Output {
    /// Short name of the kind, for logs and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Output::Datagram(_) => "datagram",
            Output::Message { .. } => "message",
            Output::Runtime(_) => "runtime",
            Output::Timer { .. } => "timer",
            Output::Gossip(_) => "gossip",
            Output::Placement(_) => "placement",
            Output::Published(_) => "published",
            Output::CutOff(_) => "cut_off",
            Output::Finished(_) => "finished",
            Output::Deployment(_) => "deployment",
            Output::MemberState(_) => "member_state",
        }
    }
}
