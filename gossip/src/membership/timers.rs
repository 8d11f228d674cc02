//! The timers of one membership, in one queue: foca's own (probes,
//! suspicions, removal of down members) and those the core adds (join
//! retries, member-list paging, metadata pulls, housekeeping, range
//! digests).
//!
//! The caller sees only the earliest, as an instant and an opaque
//! [`TimerToken`]
//! ([`Membership::poll_timeout`](crate::Membership::poll_timeout)); firing a token hands back what it was for, once, and a token fired again
//! is ignored. Timers are never taken back: one whose purpose may have
//! passed is checked by its handler when it fires (a member-list page
//! retry carries the page's generation; a join retry finds joining over),
//! so a late one is a no-op. Timers fire in instant order, ties in the
//! order they were scheduled. One kind is moved earlier: a suspicion's
//! down timer, taken and scheduled again when confirmations shorten it
//! (`suspicion.rs`).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::SocketAddr;

use foca::Timer;

use crate::{Instant, NodeIdentity};

/// Opaque handle of a scheduled timer; see
/// [`Membership::poll_timeout`](crate::Membership::poll_timeout).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerToken(u64);

/// What a timer is for.
#[derive(Debug)]
pub(super) enum TimerKind {
    /// One of foca's.
    Swim(Timer<NodeIdentity>),
    /// Say hello to the join peers again.
    JoinRetry,
    /// Ask again for the member-list page of this generation.
    MemberSyncRetry(u64),
    /// Copy the member list a second time, from another member than this.
    MemberSyncFollowUp(SocketAddr),
    /// Pull the metadata records still missing (periodic).
    MetaSync,
    /// Prune what is kept about the past (periodic).
    Housekeeping,
    /// Send a range digest of the member list (periodic).
    MemberDigest,
    /// See whether a member this node pinged for an accuser has answered
    /// since (`suspicion.rs`, `confirm_check`).
    ConfirmCheck(crate::NodeId),
}

/// Scheduled timers, earliest first.
#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: BTreeMap<u64, TimerKind>,
    next: u64,
}

impl Timers {
    /// Schedules `kind` to fire at `at`.
    pub(super) fn schedule(&mut self, at: Instant, kind: TimerKind) -> TimerToken {
        self.next += 1;
        self.heap.push(Reverse((at, self.next)));
        self.pending.insert(self.next, kind);
        TimerToken(self.next)
    }

    /// The earliest timer still pending.
    pub(super) fn peek(&mut self) -> Option<(Instant, TimerToken)> {
        while let Some(Reverse((at, token))) = self.heap.peek().copied() {
            if self.pending.contains_key(&token) {
                return Some((at, TimerToken(token)));
            }
            self.heap.pop();
        }
        None
    }

    /// Whether `token` is still to fire.
    pub(super) fn is_pending(&self, token: TimerToken) -> bool {
        self.pending.contains_key(&token.0)
    }

    /// What `token` was for, once; `None` if it already fired.
    pub(super) fn take(&mut self, token: TimerToken) -> Option<TimerKind> {
        self.pending.remove(&token.0)
    }
}
