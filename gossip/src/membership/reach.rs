//! Which datacenters this node reaches: one fact per datacenter, from what
//! this node itself sees.
//!
//! SWIM says whether each *member* is up. When a whole datacenter is cut
//! off, that is one fact ("east does not answer from here"), yet SWIM
//! learns it as one suspicion and one down per member. This part keeps the
//! one fact:
//!
//! - any authentic datagram from a member of a datacenter (a ping, an ack,
//!   gossip, a forwarded ack from a helper there) means it is reached, and
//!   clears what was counted against it;
//! - a failure of one of its members counts against it: this node's own
//!   probe of it failed (the direct ping and every indirect ask went
//!   unanswered), or, for another datacenter than this node's, this node
//!   declared it failed (its own suspicion timed out, or the news came by
//!   gossip: after a partition heals, the far side's downs of this
//!   datacenter's members arrive in a burst, and say that the far side
//!   did not reach them, not this node);
//! - a datacenter is **unreachable from here** once failures of
//!   [`UNREACHABLE_AFTER`] different members were counted with nothing
//!   heard from any of its members since the first. Hearing from any
//!   member makes it reachable again.
//!
//! Both signs are needed: SWIM probes another datacenter's members seldom
//! from here (`cross_dc_probes`; `locality.rs`), and in a small cluster the
//! members of a datacenter cut off are all declared failed, by others'
//! probes, within seconds, after which no one probes them; in a large one
//! this node's own probes say it first.
//!
//! A member's datacenter is its metadata's `dc`; a datagram from or a
//! failure of a member whose metadata is not held counts for nothing. Two
//! members of one datacenter crashing, with nothing from its other members
//! between, look the same as a cut: the fact is what this node sees,
//! reported as such (`shoal status`, a log line, a gauge), and it changes
//! no member's state. Datacenters are few (their names come from members'
//! metadata), so their entries are kept for the node's life.

use core::time::Duration;
use std::collections::BTreeMap;

use crate::{Instant, NodeId};

use super::{Event, Membership};

/// Failures of different members of a datacenter, with nothing heard from
/// it since the first, that make it unreachable from here.
pub const UNREACHABLE_AFTER: u32 = 2;

/// What this node saw of one datacenter.
#[derive(Clone, Debug, Default)]
pub(super) struct Seen {
    /// When a datagram from one of its members last arrived.
    heard: Option<Instant>,
    /// Failures of its members counted since then.
    failures: u32,
    /// The member of the first, so that its probe failing and its down
    /// count once toward [`UNREACHABLE_AFTER`].
    first: Option<NodeId>,
    /// When the first was counted.
    failing_since: Option<Instant>,
}

impl Seen {
    fn unreachable(&self) -> bool {
        self.failures >= UNREACHABLE_AFTER
    }
}

/// What this node knows of reaching one datacenter it has heard from
/// ([`Membership::datacenters`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DcReach {
    /// The datacenter's name (members' metadata `dc`).
    pub dc: String,
    /// How long ago a datagram from one of its members last arrived.
    pub heard_ago: Duration,
    /// Failures of its members counted since then (this node's probes of
    /// them that failed, members it declared failed).
    pub failures: u32,
    /// `Some(how long)` when it is unreachable from here: failures of at
    /// least [`UNREACHABLE_AFTER`] members and nothing heard since the
    /// first, counted that long ago.
    pub unreachable_for: Option<Duration>,
}

/// Per datacenter, what this node saw.
#[derive(Debug, Default)]
pub(super) struct Reach {
    by_dc: BTreeMap<String, Seen>,
}

impl Reach {
    /// A datagram from a member of `dc` arrived: `Some(how long it was
    /// unreachable)` when that ends an unreachable spell.
    fn heard(&mut self, dc: &str, now: Instant) -> Option<Duration> {
        let seen = match self.by_dc.get_mut(dc) {
            Some(seen) => seen,
            None => self.by_dc.entry(dc.to_owned()).or_default(),
        };
        let ended = seen
            .unreachable()
            .then(|| now.saturating_duration_since(seen.failing_since.unwrap_or(now)));
        *seen = Seen {
            heard: Some(now),
            ..Seen::default()
        };
        ended
    }

    /// A member of `dc` failed as seen here: `true` when that makes `dc`
    /// unreachable from here.
    /// Only a datacenter heard from since this node started is counted:
    /// a newcomer's copied list, with members failed long ago, says nothing
    /// of reaching their datacenter now.
    fn failed(&mut self, dc: &str, member: NodeId, now: Instant) -> bool {
        let Some(seen) = self.by_dc.get_mut(dc) else {
            return false;
        };
        if seen.failures == 1 && seen.first == Some(member) {
            return false;
        }
        if seen.failures == 0 {
            seen.first = Some(member);
            seen.failing_since = Some(now);
        }
        seen.failures = seen.failures.saturating_add(1);
        seen.failures == UNREACHABLE_AFTER
    }

    fn view(&self, now: Instant) -> Vec<DcReach> {
        self.by_dc
            .iter()
            .map(|(dc, seen)| DcReach {
                dc: dc.clone(),
                heard_ago: now.saturating_duration_since(seen.heard.unwrap_or(now)),
                failures: seen.failures,
                unreachable_for: seen
                    .unreachable()
                    .then(|| now.saturating_duration_since(seen.failing_since.unwrap_or(now))),
            })
            .collect()
    }

    fn unreachable(&self) -> usize {
        self.by_dc.values().filter(|s| s.unreachable()).count()
    }
}

impl Membership {
    /// Per datacenter this node has heard from since it started, whether
    /// it reaches it (see `reach.rs`), sorted by name; this node's own
    /// datacenter is listed like any other.
    pub fn datacenters(&self, now: Instant) -> Vec<DcReach> {
        self.reach.view(now)
    }

    /// Datacenters unreachable from here now.
    pub fn datacenters_unreachable(&self) -> usize {
        self.reach.unreachable()
    }

    /// An authentic datagram from `sender` arrived.
    pub(super) fn reach_heard(&mut self, now: Instant, sender: NodeId) {
        let Some(record) = self.metas.held.get(&sender) else {
            return;
        };
        let Some(after) = self.reach.heard(&record.meta.dc, now) else {
            return;
        };
        let dc = record.meta.dc.clone();
        self.stats.dcs_unreachable = self.reach.unreachable() as u64;
        self.events
            .push_back(Event::DatacenterReachable { dc, after });
    }

    /// This node's probe of `member` failed, directly and indirectly.
    pub(super) fn reach_probe_failed(&mut self, now: Instant, member: NodeId) {
        self.reach_failed(now, member, true);
    }

    /// This node declared `member` failed (its own suspicion timed out, or
    /// the news came by gossip). Counted for another datacenter only: this
    /// node probes its own most, so its own probes say first when that is
    /// out of reach; while downs of its own datacenter's members come in a
    /// burst after a partition heals (the far side declared them failed
    /// for not reaching them, not this node).
    pub(super) fn reach_member_failed(&mut self, now: Instant, member: NodeId) {
        self.reach_failed(now, member, false);
    }

    fn reach_failed(&mut self, now: Instant, member: NodeId, own_probe: bool) {
        let Some(record) = self.metas.held.get(&member) else {
            return;
        };
        if !own_probe && record.meta.dc == self.meta.dc {
            return;
        }
        if self.reach.failed(&record.meta.dc, member, now) {
            let dc = record.meta.dc.clone();
            self.stats.dcs_unreachable = self.reach.unreachable() as u64;
            self.events.push_back(Event::DatacenterUnreachable { dc });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Instant {
        Instant::from_micros(secs * 1_000_000)
    }

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);
    const C: NodeId = NodeId(3);

    #[test]
    fn failures_of_two_members_with_nothing_heard_make_a_datacenter_unreachable() {
        let mut r = Reach::default();
        assert_eq!(r.heard("east", at(1)), None);
        assert!(!r.failed("east", A, at(10)));
        assert!(
            !r.failed("east", A, at(12)),
            "A's probe failing, then its down"
        );
        assert_eq!(r.unreachable(), 0, "one member failing is not a cut");
        assert!(r.failed("east", B, at(20)));
        assert!(!r.failed("east", C, at(30)), "told once");
        assert_eq!(
            r.view(at(40)),
            vec![DcReach {
                dc: "east".into(),
                heard_ago: Duration::from_secs(39),
                failures: 3,
                unreachable_for: Some(Duration::from_secs(30)),
            }]
        );
        assert_eq!(r.heard("east", at(50)), Some(Duration::from_secs(40)));
        assert_eq!(r.unreachable(), 0);
        assert_eq!(r.view(at(50))[0].failures, 0);
    }

    #[test]
    fn hearing_between_failures_starts_the_count_again() {
        let mut r = Reach::default();
        assert!(!r.failed("west", A, at(0)), "never heard from: not counted");
        assert!(r.view(at(0)).is_empty());
        assert_eq!(r.heard("west", at(0)), None);
        assert_eq!(r.heard("east", at(0)), None);
        assert!(!r.failed("west", A, at(1)));
        assert_eq!(r.heard("west", at(2)), None, "it was not unreachable");
        assert!(!r.failed("west", B, at(3)));
        assert_eq!(r.unreachable(), 0);
        // Other datacenters are counted apart.
        assert!(!r.failed("east", C, at(4)));
        assert_eq!(r.unreachable(), 0);
        assert!(r.failed("west", C, at(5)));
        assert_eq!(r.view(at(5)).len(), 2);
        assert_eq!(
            r.view(at(5))[1].unreachable_for,
            Some(Duration::from_secs(2))
        );
    }
}
