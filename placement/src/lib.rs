//! Placement by consistent-hashing auctions, as a pure state machine.
//!
//! Every task has a key (`job/index`). The alive member that owns the key on
//! the hash ring ([`Ring`]) is its coordinator: it asks the first k eligible
//! members after the key for bids (widening the window while nobody has
//! room), awards the task to the best bid (the tightest fit, or the least
//! loaded value of the job's spread attribute; ties broken by a hash of key
//! and node), and records the holder. The holder starts the task and renews
//! a lease with the key's current coordinator, which is how a new
//! coordinator learns placements after the ring changes. When a holder
//! fails, the coordinator auctions the key again; when two nodes hold a key
//! (after a partition heals, or a restarted node comes back with its old
//! tasks), the later award wins and the other is told to stop. System jobs
//! need no auction: every eligible node runs one task.
//!
//! [`Placer`] owns no socket and reads no clock: inputs take `now` and the
//! wall-clock milliseconds, outputs are messages, runtime commands and
//! events to drain. The agent and the simulator drive the same code.

mod jobs;
mod placer;
mod ring;
mod types;

pub use placer::{
    Adopted, CHECK_OUTPUT_MAX, Command, CutOff, DeployStep, Event, ExitReason, Finished, Health,
    Job, Msg, Outcome, PROTOCOL_VERSION, PlacementConfig, Placer, Report, RingShare, TaskState,
    TaskStatus, Verdict, View,
};
pub use ring::{RING_SEED, Ring};
pub use types::{Hlc, KEY_SEED, NodeInfo, Resources, Slot, Stamp, TaskKey};
