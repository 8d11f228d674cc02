//! One node of shoal as a pure state machine: its membership
//! ([`shoal_gossip::Membership`]), its placer ([`shoal_placement::Placer`]),
//! the jobs of the desired state it has been handed, and every rule that
//! joins them. The agent (`node/`) drives a [`NodeCore`] with sockets, tokio
//! and the task runtimes; the simulator (`sim/`) drives the very same type
//! with a virtual clock and network. Nothing a node decides is written twice.
//!
//! The contract is the one of the crates it wires (quinn-proto's style):
//!
//! - Inputs are `handle_*(now, …)` calls, `now` being the caller's
//!   monotonic [`Instant`] and `wall_ms` the wall-clock milliseconds (award
//!   stamps and status times need it). Nothing here reads a clock, touches a
//!   socket or draws unseeded randomness; `.ci/run` checks that the crate
//!   links no tokio, quinn or mio.
//! - Every effect leaves through [`NodeCore::poll`], in the order the node
//!   produced it: datagrams to send, placement messages to peers, runtime
//!   commands, timers to arm, and events. The order is part of the
//!   behaviour (the simulator replays a run exactly only if every driver
//!   sees the same order), so there is one queue, not one per kind.
//!   **Drain it after every call**, before the next input.
//! - Timers are requests: [`Output::Timer`] asks to be handed
//!   [`Timer`] back through [`NodeCore::handle_timer`] at `at`. A driver
//!   keeps them in one heap (or its event queue) and hands each back once
//!   due; a timer that was replaced meanwhile is recognised and ignored, so
//!   a driver never has to cancel one.
//!
//! What the core wires (see `docs/architecture.md` for the call paths):
//!
//! - member changes seen by gossip reach the placer at most every
//!   [`Wiring::publish_period`], as one batch of the members that changed;
//! - the placer's free-capacity class goes into this node's gossip metadata
//!   at most every [`Wiring::free_class_period`];
//! - placement messages a node sends itself are handled at once;
//! - job changes, runtime reports, drains and metadata changes reach the
//!   part that owns them and trigger the same republishing;
//! - every member change is counted at once in the node's [`Summary`]
//!   (members by state, resources per datacenter and zone), and a change
//!   of a member's state is handed out as [`Output::MemberState`].
//!
//! And beside the [`NodeCore`], the [`TriggerDriver`]: the triggers this
//! node owns on the ring, evaluated from the replicated records, the runs'
//! jobs and the signal values the caller gathers (see [`triggers`]).

mod jobs;
mod node;
mod output;
mod placer;
mod reach;
mod summary;
mod timers;
pub mod triggers;

pub use jobs::placeable;
pub use node::{InfoShare, NodeCore, Wiring};
pub use output::{Output, Timer, ViewChange};
pub use placer::{Drained, drain_placer};
pub use summary::{
    Dc, Figures, Group, MemberStateChange, Snapshot, StateCounts, Summary, allocated_sixteenths,
};
pub use timers::Timers;
pub use triggers::{RunJob, Start, Step, TriggerDriver, TriggerEvaluator, TriggerInput};

pub use shoal_gossip::Instant;
