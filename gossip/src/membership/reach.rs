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
//!   unanswered), or a member this node holds failed has stayed failed for
//!   [`DOWN_LASTS`] (whoever decided it);
//! - a datacenter is **unreachable from here** once failures of
//!   [`UNREACHABLE_AFTER`] different members were counted with nothing
//!   heard from any of its members since the first. Hearing from any
//!   member makes it reachable again.
//!
//! Both signs are needed: SWIM probes another datacenter's members seldom
//! from here (`cross_dc_probes`; `locality.rs`), and in a small cluster the
//! members of a datacenter cut off are all declared failed, by others'
//! probes, within seconds, after which no one probes them; in a large one
//! this node's own probes say it first (with `reach_only_dc_size`, the only
//! sign for a large datacenter, whose members are not suspected from
//! here: `locality.rs`). A down counts only once it has
//! lasted, because after a partition heals the far side's downs of members
//! on this side (decided while it could not reach them) arrive in a
//! burst, and those members come back up, with a new life, within seconds.
//!
//! A member's datacenter is its metadata's `dc`; a datagram from or a
//! failure of a member whose metadata is not held counts for nothing, and
//! so does a datacenter not heard from since this node started (a
//! newcomer's copied list, with members failed long ago, says nothing of
//! reaching their datacenter now). Two members of one datacenter crashing,
//! with nothing from its other members between, look the same as a cut:
//! the fact is what this node sees, reported as such (`shoal status`, a log
//! line, a gauge), and it changes no member's state. Datacenters are few
//! (their names come from members' metadata), so their entries are kept
//! for the node's life.

use core::time::Duration;
use std::collections::BTreeMap;

use crate::{Instant, NodeId};

use super::{Event, Membership};

/// Failures of different members of a datacenter, with nothing heard from
/// it since the first, that make it unreachable from here.
pub const UNREACHABLE_AFTER: u32 = 2;

/// How long a member must have stayed failed before its down counts
/// (checked at each housekeeping pass, so 5 to 10 s after it went down).
pub const DOWN_LASTS: Duration = Duration::from_secs(5);

/// How long a datacenter probed for reach only may stay silent before
/// this node's next probe goes to one of its members (from here, one probe
/// period in about fourteen goes to each of four others by chance; what
/// arrives from each, probes and acks, a datagram every 7 s or so at
/// idle).
pub const SILENT_CHECK_AFTER: Duration = Duration::from_secs(20);

/// Downs of one datacenter's members waiting to have lasted, at most: a
/// few are enough to decide, and a datacenter cut off makes one per
/// member (a node cut off from four makes hundreds of thousands at once).
const PENDING_PER_DC: usize = 4;

/// Downs waiting to have lasted, at most, in all.
const PENDING_DOWNS: usize = 256;

/// What this node saw of one datacenter (an entry exists once a datagram
/// from one of its members arrived).
#[derive(Clone, Debug)]
pub(super) struct Seen {
    /// When a datagram from one of its members last arrived.
    heard: Instant,
    /// Failures of its members counted since then.
    failures: u32,
    /// The member of the first, so that its probe failing and its down
    /// count once toward [`UNREACHABLE_AFTER`], and when it failed.
    first: Option<(NodeId, Instant)>,
}

impl Seen {
    fn heard_at(now: Instant) -> Seen {
        Seen {
            heard: now,
            failures: 0,
            first: None,
        }
    }

    fn unreachable(&self) -> bool {
        self.failures >= UNREACHABLE_AFTER
    }

    /// How long it has been unreachable, if it is.
    fn unreachable_for(&self, now: Instant) -> Option<Duration> {
        match self.first {
            Some((_, since)) if self.unreachable() => Some(now.saturating_duration_since(since)),
            _ => None,
        }
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
    /// them that failed, members held failed for [`DOWN_LASTS`]).
    pub failures: u32,
    /// `Some(how long)` when it is unreachable from here: failures of at
    /// least [`UNREACHABLE_AFTER`] members and nothing heard since the
    /// first, which happened that long ago.
    pub unreachable_for: Option<Duration>,
}

/// Per datacenter, what this node saw: the rules above, kept by each
/// [`Membership`] and public so that the simulator's scale model
/// (`sim/src/scale_cut.rs`) drives the same rules for nodes it does not
/// hold a membership for.
#[derive(Debug, Default)]
pub struct Reach {
    by_dc: BTreeMap<String, Seen>,
    /// Members that went down here, their datacenter and when, until
    /// they have lasted.
    pending: Vec<(NodeId, String, Instant)>,
}

impl Reach {
    /// A datagram from a member of `dc` arrived: `Some(how long it was
    /// unreachable)` when that ends an unreachable spell.
    pub fn heard(&mut self, dc: &str, now: Instant) -> Option<Duration> {
        match self.by_dc.get_mut(dc) {
            Some(seen) => std::mem::replace(seen, Seen::heard_at(now)).unreachable_for(now),
            None => {
                self.by_dc.insert(dc.to_owned(), Seen::heard_at(now));
                None
            }
        }
    }

    /// A member of `dc` failed at `at` as seen here: `true` when that makes
    /// `dc` unreachable from here. A failure from before the datacenter was
    /// last heard from, or of one never heard from, counts for nothing.
    /// With `same_cut` (a datacenter probed for reach only), a first
    /// failure of a datacenter silent since the first failure of another
    /// now unreachable counts as [`UNREACHABLE_AFTER`]: the same cut (this
    /// node's side cut from several), decided at once.
    pub fn failed(&mut self, dc: &str, member: NodeId, at: Instant, same_cut: bool) -> bool {
        let cut_since = self.cut_since();
        let Some(seen) = self.by_dc.get_mut(dc) else {
            return false;
        };
        if seen.heard > at || (seen.failures == 1 && seen.first.is_some_and(|(m, _)| m == member)) {
            return false;
        }
        let mut count = 1;
        if seen.failures == 0 {
            seen.first = Some((member, at));
            if same_cut && cut_since.is_some_and(|since| seen.heard < since) {
                count = UNREACHABLE_AFTER;
            }
        }
        let was = seen.failures;
        seen.failures = seen.failures.saturating_add(count);
        was < UNREACHABLE_AFTER && seen.failures >= UNREACHABLE_AFTER
    }

    /// The first failure of the datacenter that became unreachable last,
    /// if one is.
    fn cut_since(&self) -> Option<Instant> {
        self.by_dc
            .values()
            .filter(|seen| seen.unreachable())
            .filter_map(|seen| seen.first.map(|(_, at)| at))
            .max()
    }

    /// A datacenter in doubt at `now`, among those `eligible`: one with a
    /// failure counted and nothing heard since (a second failure decides);
    /// else one not heard from since the first failure of the datacenter
    /// that became unreachable last (this node's side may be cut from
    /// several); else one not heard from for [`SILENT_CHECK_AFTER`].
    pub fn in_doubt(&self, now: Instant, eligible: impl Fn(&str) -> bool) -> Option<&str> {
        let pick = |f: &dyn Fn(&Seen) -> bool| {
            self.by_dc
                .iter()
                .find(|(dc, seen)| f(seen) && eligible(dc))
                .map(|(dc, _)| dc.as_str())
        };
        if let Some(dc) = pick(&|seen| seen.failures == 1) {
            return Some(dc);
        }
        if let Some(since) = self.cut_since()
            && let Some(dc) = pick(&|seen| seen.failures == 0 && seen.heard < since)
        {
            return Some(dc);
        }
        pick(&|seen| {
            seen.failures == 0 && now.saturating_duration_since(seen.heard) >= SILENT_CHECK_AFTER
        })
    }

    /// `member` of `dc` went down here at `now`: it counts once it has
    /// lasted. Not kept past a few per datacenter, nor for a datacenter
    /// unreachable already.
    fn went_down(&mut self, member: NodeId, dc: &str, now: Instant) {
        if self.pending.len() >= PENDING_DOWNS
            || self.by_dc.get(dc).is_none_or(Seen::unreachable)
            || self.pending.iter().filter(|(_, d, _)| d == dc).count() >= PENDING_PER_DC
        {
            return;
        }
        self.pending.push((member, dc.to_owned(), now));
    }

    /// The pending downs that have lasted by `now`, taken out.
    fn lasted(&mut self, now: Instant) -> Vec<(NodeId, String, Instant)> {
        let (lasted, waiting) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(_, _, at)| now.saturating_duration_since(*at) >= DOWN_LASTS);
        self.pending = waiting;
        lasted
    }

    fn view(&self, now: Instant) -> Vec<DcReach> {
        self.by_dc
            .iter()
            .map(|(dc, seen)| DcReach {
                dc: dc.clone(),
                heard_ago: now.saturating_duration_since(seen.heard),
                failures: seen.failures,
                unreachable_for: seen.unreachable_for(now),
            })
            .collect()
    }

    fn unreachable(&self) -> usize {
        self.by_dc.values().filter(|s| s.unreachable()).count()
    }

    /// Whether a datagram from a member of datacenter `dc` has arrived
    /// (only then can it become unreachable from here).
    pub fn has_heard(&self, dc: &str) -> bool {
        self.by_dc.contains_key(dc)
    }

    /// Whether datacenter `dc` is unreachable from here.
    pub fn is_unreachable(&self, dc: &str) -> bool {
        self.by_dc.get(dc).is_some_and(Seen::unreachable)
    }

    /// How long datacenter `dc` has been unreachable, if it is.
    pub(super) fn unreachable_since(&self, dc: &str, now: Instant) -> Option<Duration> {
        self.by_dc.get(dc)?.unreachable_for(now)
    }
}

impl Membership {
    /// Per datacenter this node has heard from since it started, whether
    /// it reaches it (see `reach.rs`), sorted by name; this node's own
    /// datacenter is listed like any other.
    pub fn datacenters(&self, now: Instant) -> Vec<DcReach> {
        self.reach.view(now)
    }

    /// Members up and not suspect here in the datacenters unreachable from
    /// here: members this node does not reach although SWIM has not said
    /// so of each yet. Drawn from the last housekeeping pass's lists of
    /// each datacenter's members, less those no longer up (so that none is
    /// counted both here and as failed); in O(their number), and 0 at once
    /// while every datacenter is reached.
    pub fn unreachable_members(&self) -> usize {
        self.reach
            .by_dc
            .iter()
            .filter(|(_, seen)| seen.unreachable())
            .filter_map(|(dc, _)| self.peers.get(dc))
            .flatten()
            .filter(|id| !self.suspects.contains(id) && self.range_sync.up_life(**id).is_some())
            .count()
    }

    /// Whether datacenter `dc` is unreachable from here.
    pub fn dc_unreachable(&self, dc: &str) -> bool {
        self.reach.is_unreachable(dc)
    }

    /// The members of datacenter `dc` up at the last housekeeping pass
    /// (this node excluded).
    pub fn members_in_dc(&self, dc: &str) -> &[NodeId] {
        self.peers.get(dc).map_or(&[], Vec::as_slice)
    }

    /// The datacenter whose members this node probes next, if one of those
    /// probed for reach only is in doubt (see `Reach::in_doubt`): so that
    /// a cut is decided in a few probe periods, not after foca's walk
    /// happens to pick the datacenter's members again (one period in about
    /// fourteen per datacenter between five).
    pub(super) fn reach_doubt(&self, now: Instant) -> Option<String> {
        if self.config.reach_only_dc_size == 0 || !self.has_local_peers() {
            return None;
        }
        self.reach
            .in_doubt(now, |dc| {
                self.reach_only(now, dc) && self.checked_by_its_dc(dc)
            })
            .map(str::to_owned)
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
        if let Some(record) = self.metas.held.get(&member) {
            let dc = record.meta.dc.clone();
            self.reach_failed(member, dc, now);
        }
    }

    /// This node holds `member` failed from now on (its own suspicion
    /// timed out, or the news came by gossip): counted at the first
    /// housekeeping pass after it has lasted [`DOWN_LASTS`]. Not for a
    /// datacenter probed for reach only (`reach_only_dc_size`): its members
    /// are declared failed by its own probes, so their downs say that they
    /// crashed, not that it is cut off (a cut makes none), and crashes
    /// close together would otherwise look like a cut.
    pub(super) fn reach_member_failed(&mut self, now: Instant, member: NodeId) {
        if let Some(record) = self.metas.held.get(&member)
            && !self.reach_only_dc(&record.meta.dc)
        {
            self.reach.went_down(member, &record.meta.dc, now);
        }
    }

    /// Counts the downs that lasted (at housekeeping).
    pub(super) fn reach_downs_lasted(&mut self, now: Instant) {
        for (member, dc, at) in self.reach.lasted(now) {
            if self.range_sync.up_life(member).is_none() {
                self.reach_failed(member, dc, at);
            }
        }
    }

    /// Counts a failure of `member` of `dc` at `at`.
    fn reach_failed(&mut self, member: NodeId, dc: String, at: Instant) {
        let same_cut = self.reach_only_dc(&dc);
        if self.reach.failed(&dc, member, at, same_cut) {
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
        assert!(!r.failed("east", A, at(10), false));
        assert!(
            !r.failed("east", A, at(12), false),
            "A's probe failing, then its down"
        );
        assert_eq!(r.unreachable(), 0, "one member failing is not a cut");
        assert!(r.failed("east", B, at(20), false));
        assert!(!r.failed("east", C, at(30), false), "told once");
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
        // A failure from before the last datagram counts for nothing (a
        // down that lasted is counted from when it went down).
        assert!(!r.failed("east", A, at(45), false));
        assert!(!r.failed("east", B, at(49), false));
        assert_eq!(r.view(at(50))[0].failures, 0);
    }

    #[test]
    fn a_datacenter_in_doubt_is_checked_first_and_the_same_cut_decided_at_once() {
        let mut r = Reach::default();
        let any = |_: &str| true;
        for dc in ["east", "north", "west"] {
            assert_eq!(r.heard(dc, at(0)), None);
        }
        assert_eq!(r.in_doubt(at(5), any), None, "all heard from lately");
        assert_eq!(
            r.in_doubt(at(20), any),
            Some("east"),
            "silent for SILENT_CHECK_AFTER"
        );
        assert_eq!(r.heard("east", at(20)), None);
        assert_eq!(r.heard("north", at(20)), None);
        assert_eq!(r.heard("west", at(20)), None);
        // One failure: that datacenter is checked again before any other.
        assert!(!r.failed("west", A, at(21), true));
        assert_eq!(r.in_doubt(at(22), any), Some("west"));
        assert_eq!(r.in_doubt(at(22), |dc| dc != "west"), None);
        assert!(r.failed("west", B, at(22), true));
        // West is unreachable: those silent since its first failure are
        // checked, and one failure of such a datacenter decides it.
        assert_eq!(r.heard("north", at(23)), None);
        assert_eq!(r.in_doubt(at(23), any), Some("east"));
        assert!(r.failed("east", C, at(23), true), "the same cut");
        assert_eq!(r.in_doubt(at(24), any), None, "north was heard since");
        // Without `same_cut` (a datacenter whose members are suspected from
        // here as any), one failure is one.
        assert!(!r.failed("north", C, at(25), false));
        assert_eq!(r.unreachable(), 2);
    }

    #[test]
    fn hearing_between_failures_starts_the_count_again() {
        let mut r = Reach::default();
        assert!(
            !r.failed("west", A, at(0), false),
            "never heard from: not counted"
        );
        assert!(r.view(at(0)).is_empty());
        assert_eq!(r.heard("west", at(0)), None);
        assert_eq!(r.heard("east", at(0)), None);
        assert!(!r.failed("west", A, at(1), false));
        assert_eq!(r.heard("west", at(2)), None, "it was not unreachable");
        assert!(!r.failed("west", B, at(3), false));
        assert_eq!(r.unreachable(), 0);
        // Other datacenters are counted apart.
        assert!(!r.failed("east", C, at(4), false));
        assert_eq!(r.unreachable(), 0);
        assert!(r.failed("west", C, at(5), false));
        assert_eq!(r.view(at(5)).len(), 2);
        assert_eq!(
            r.view(at(5))[1].unreachable_for,
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn downs_wait_until_they_have_lasted() {
        let mut r = Reach::default();
        r.went_down(A, "east", at(10));
        assert!(r.pending.is_empty(), "east was never heard from");
        r.heard("east", at(0));
        r.heard("west", at(0));
        r.went_down(A, "east", at(10));
        r.went_down(B, "west", at(12));
        assert!(r.lasted(at(14)).is_empty());
        assert_eq!(r.lasted(at(15)), vec![(A, "east".into(), at(10))]);
        assert_eq!(r.lasted(at(20)), vec![(B, "west".into(), at(12))]);
        assert!(r.pending.is_empty());
        // A few per datacenter: a cut of one does not crowd out another.
        for i in 0..100 {
            r.went_down(NodeId(i), "east", at(30));
        }
        r.went_down(C, "west", at(31));
        let lasted = r.lasted(at(40));
        assert_eq!(lasted.len(), PENDING_PER_DC + 1, "{lasted:?}");
        assert!(lasted.contains(&(C, "west".into(), at(31))));
        // None for a datacenter unreachable already.
        assert!(r.failed("east", A, at(41), false) || r.failed("east", B, at(41), false));
        r.went_down(C, "east", at(42));
        assert!(r.pending.is_empty());
    }
}
