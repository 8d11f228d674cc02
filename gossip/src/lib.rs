//! Membership of a shoal cluster, as a pure state machine.
//!
//! [`Membership`] wraps foca's SWIM: each node probes one random member per
//! period, asks others to probe indirectly before suspecting, and spreads
//! joins, suspicions, failures and departures by piggybacking them on probe
//! traffic, so a node's cost does not grow with the cluster. Around SWIM this
//! crate adds what a cluster OS needs:
//!
//! - **sealed datagrams** ([`seal()`]): XChaCha20-Poly1305 under a key derived
//!   from the cluster secret, a key id for rotation, and a replay window per
//!   sender; anything else is dropped and counted by [`DropReason`];
//! - **member metadata** ([`MemberMeta`]): name, addresses, dc/zone/region,
//!   labels, capacity, runtimes, version, a coarse free-capacity class;
//!   spread by piggybacking, repaired by pulling from the member itself
//!   (every datagram carries its sender's metadata version);
//! - **join by address**: a sealed hello tells the joiner who listens at the
//!   address, then SWIM's announce does the rest; retries back off;
//! - **graceful leave**: a leave record travels with SWIM's down update, so
//!   members show `left` rather than `failed`.
//!
//! The crate owns no socket, reads no clock and draws no unseeded
//! randomness: inputs are `handle_*(now, …)`, outputs are `poll_*()`, and
//! the caller drains them after every input (see [`Membership`]). The agent
//! drives it with a UDP socket and tokio timers; the simulator drives the very
//! same code with a virtual clock and network. Same seed and same inputs give
//! the same outputs.

mod config;
mod identity;
mod kind;
mod membership;
mod meta;
mod packed;
mod piggyback;
mod ranges;
pub mod seal;
mod time;
mod wire;

pub use config::{Config, ConfigError};
pub use identity::{NodeId, NodeIdentity, ParseNodeIdError};
pub use kind::SendKind;
pub use membership::{
    DOWN_LASTS, DcReach, DownReason, Event, LEAVE_QUERIES, MemberInfo, MemberState, Membership,
    MetaTooLarge, NewError, NoteError, PROBE_PICKS, Reach, RttHistogram, SILENT_CHECK_AFTER, Stats,
    TimerToken, Transmit, UNREACHABLE_AFTER,
};
pub use meta::{
    Capacity, FreeClass, MAX_META_BYTES, MemberMeta, MetaShare, MetaUpdate, RuntimeInfo,
};
pub use packed::Packed;
pub use ranges::MEMBERS_PER_DIGEST_ROUND;
pub use seal::{DropReason, GossipKey, PacketSecurity, SealHeader, seal};
pub use time::Instant;
