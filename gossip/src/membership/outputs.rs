//! What the membership state machine hands its caller: datagrams to send
//! ([`Transmit`]), events to log or act on ([`Event`]), and its view of
//! the members ([`MemberInfo`], [`MemberState`]).
//!
//! These are plain data: the caller drains them from
//! [`Membership`](crate::Membership)'s `poll_*` methods and queries; nothing
//! here changes state.

use core::time::Duration;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::kind::SendKind;
use crate::meta::MemberMeta;
use crate::{Instant, NodeId, NodeIdentity};

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Destination (a member's gossip address).
    pub to: SocketAddr,
    /// The sealed datagram.
    pub payload: Vec<u8>,
    /// What it is for.
    pub kind: SendKind,
}

/// A member's state as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed a probe; declared failed unless it refutes in time.
    Suspect,
    /// Declared down without having said goodbye.
    Failed,
    /// Left on purpose.
    Left,
}

impl MemberState {
    /// Lower-case name, as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Failed => "failed",
            MemberState::Left => "left",
        }
    }
}

/// Why a member went down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownReason {
    /// Stopped answering.
    Failed,
    /// Said goodbye.
    Left,
}

/// Something the caller may want to log or act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A member is alive (new, back after being down, or a new life of it).
    MemberUp {
        /// The member's life now known.
        identity: NodeIdentity,
    },
    /// A member went down.
    MemberDown {
        /// The life that went down.
        identity: NodeIdentity,
        /// Failure or departure.
        reason: DownReason,
    },
    /// A member restarted and its new life replaced the old one.
    MemberRenewed {
        /// The previous life.
        old: NodeIdentity,
        /// The new life.
        new: NodeIdentity,
    },
    /// A member that is up was found suspect, or cleared of a suspicion
    /// (by its refutation): seen when this node's own probe fails, and by
    /// a pass over the member list every few seconds (foca tells of no
    /// suspicion it hears by gossip).
    SuspicionChanged {
        /// The member.
        id: NodeId,
        /// Whether it is suspect now.
        suspect: bool,
    },
    /// A member that was down has been forgotten (foca removed it).
    MemberForgotten {
        /// The member.
        id: NodeId,
    },
    /// A member's metadata changed (or was learned).
    MetaChanged {
        /// The member.
        id: NodeId,
    },
    /// This node is part of a cluster with other members.
    Connected,
    /// This node knows no other live member.
    Isolated,
    /// Joining has not succeeded yet; it will be tried again.
    JoinRetry {
        /// Attempts so far.
        attempt: u32,
        /// Addresses being tried.
        peers: usize,
        /// Delay before the next attempt.
        next_in: Duration,
    },
    /// The cluster had declared this node down; it rejoined with a new life.
    /// The caller must persist `identity.bump`.
    IdentityRenewed {
        /// The new identity.
        identity: NodeIdentity,
    },
    /// Declared down and unable to rejoin.
    Defunct,
    /// A member's application digest (see
    /// [`Membership::set_app_digest`](crate::Membership::set_app_digest))
    /// differs from this node's: the replicated state should be synced with
    /// it. Reported at most once per `digest_retry` per member.
    DigestDiffers {
        /// The member.
        id: NodeId,
        /// Its digest.
        digest: u64,
    },
    /// [`UNREACHABLE_AFTER`](crate::UNREACHABLE_AFTER) members of a
    /// datacenter failed as this node sees them (its probes of them failed,
    /// or members it held failed for
    /// [`DOWN_LASTS`](crate::DOWN_LASTS)) with nothing heard
    /// from any of its members since the first (see
    /// [`Membership::datacenters`](crate::Membership::datacenters)).
    /// Reported once per spell; it changes no member's state.
    DatacenterUnreachable {
        /// The datacenter.
        dc: String,
    },
    /// A datagram arrived from a member of a datacenter that was
    /// unreachable from here.
    DatacenterReachable {
        /// The datacenter.
        dc: String,
        /// How long it was unreachable, from the first failure counted.
        after: Duration,
    },
    /// A member's caller sent this node's caller a note (see
    /// [`Membership::send_note`](crate::Membership::send_note)).
    Note {
        /// The sender.
        from: NodeId,
        /// What it sent, as it sent it.
        note: Vec<u8>,
    },
}

/// A member as returned by [`Membership::members`](crate::Membership::members).
#[derive(Clone, Debug, PartialEq)]
pub struct MemberInfo {
    /// Its current life.
    pub identity: NodeIdentity,
    /// Its state.
    pub state: MemberState,
    /// SWIM incarnation (grows when it refutes a suspicion).
    pub incarnation: u16,
    /// Its metadata, once learned.
    pub meta: Option<Arc<MemberMeta>>,
    /// `(bump, version)` of that metadata.
    pub meta_version: Option<(u32, u32)>,
    /// When this node first heard of it.
    pub first_seen: Instant,
    /// When it last went up or down.
    pub state_since: Instant,
    /// Whether it is this node.
    pub local: bool,
}
