//! Anti-entropy of the member list by range digests: the repair of join
//! and down rumors that SWIM's epidemic missed.
//!
//! A join is a rumor, and a rumor can miss a node; if that node is also
//! missing from the newcomer's member-list copy, neither ever probes the
//! other. A failure's down rumor can be missed the same way, leaving a
//! member suspect for good at one observer. So every
//! `member_digest_period` a node's next probe carries a digest item
//! (`Item::Digest`; in a `MemberDigest` datagram of its own to a random
//! live member when no probe went out for a whole period): the digests of
//! `ranges::RANGES` consecutive ranges of the position space (see
//! `crate::ranges` for the arithmetic) of the members it holds up, itself
//! included. The receiver answers, for each
//! range that differs, `MemberRanges` with its members there and those it
//! saw go down within [`DOWN_REPAIR_WINDOW`]; the first node applies them
//! (no re-broadcast: an entry foca knows better changes nothing) and sends
//! back, once, what the answer lacked.
//!
//! The contract: while two views agree the exchange costs about 54 bytes
//! on one probe per period, and no datagram. The index of members up
//! ([`RangeSync`]) holds exactly the members foca holds up, with the life
//! that is up (the foca driver, `swim.rs`, keeps it so), and it is all a
//! range's digest reads. See docs/gossip.md, "Range digests".

use core::time::Duration;
use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::config::ENVELOPE_OVERHEAD;
use crate::packed::Packed;
use crate::ranges;
use crate::seal::SEAL_OVERHEAD;
use crate::wire::{self, Body, Item};
use crate::{Instant, NodeId, NodeIdentity};

use super::Membership;

/// How long a member seen going down is told about in range exchanges.
const DOWN_REPAIR_WINDOW: Duration = Duration::from_secs(300);

/// The members up and lately down, by position in the range-digest space,
/// and where the next digest round starts.
#[derive(Debug, Default)]
pub(super) struct RangeSync {
    /// The members that are up, by their position in the range-digest
    /// space (a fixed hash of the id, so that ranges hold members evenly
    /// however ids were chosen), with the life (bump) that is up; the
    /// position gives back the id ([`ranges::id_at`]), so a range's digest
    /// reads only this index.
    up: Packed<u64, u32>,
    /// Members seen going down lately, by the same position, with when.
    down: BTreeMap<u64, (NodeIdentity, Instant)>,
    /// Where the next member-list range digest starts: each round goes on
    /// from the last, so a pass over the id space takes `N / 128` rounds.
    cursor: u64,
    /// A digest round is due: the next probe sent carries it.
    digest_due: bool,
}

impl RangeSync {
    /// Starts the digest rounds at `cursor` (drawn at random, so that
    /// nodes cover the space in different orders).
    pub(super) fn start_at(&mut self, cursor: u64) {
        self.cursor = cursor;
    }

    /// Whether any member is up.
    pub(super) fn any_up(&self) -> bool {
        !self.up.is_empty()
    }

    /// Rebuilds the up index with full nodes once it has doubled (see
    /// [`Packed`]).
    pub(super) fn pack(&mut self) {
        self.up.pack();
    }

    /// Whether member `id` (any life of it) is up.
    pub(super) fn holds_up(&self, id: NodeId) -> bool {
        self.up.contains_key(&ranges::position(id.0))
    }

    /// The life of member `id` that is up, if it is.
    pub(super) fn up_life(&self, id: NodeId) -> Option<u32> {
        self.up.get(&ranges::position(id.0)).copied()
    }

    /// `identity` is up.
    pub(super) fn went_up(&mut self, identity: &NodeIdentity) {
        let id = identity.id;
        self.up.insert(ranges::position(id.0), identity.bump);
        self.down.remove(&ranges::position(id.0));
    }

    /// `identity` went down at `now`.
    pub(super) fn went_down(&mut self, identity: &NodeIdentity, now: Instant) {
        self.up.remove(&ranges::position(identity.id.0));
        self.down
            .insert(ranges::position(identity.id.0), (identity.clone(), now));
    }

    /// Member `id` is forgotten.
    pub(super) fn forget(&mut self, id: NodeId) {
        self.up.remove(&ranges::position(id.0));
        self.down.remove(&ranges::position(id.0));
    }

    /// Forgets downs older than [`DOWN_REPAIR_WINDOW`].
    pub(super) fn prune(&mut self, now: Instant) {
        self.down
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < DOWN_REPAIR_WINDOW);
    }
}

impl Membership {
    /// Live members (this node included) whose position lies in the range
    /// of `len` positions from `start`.
    fn up_in_range(&self, start: u64, len: u64) -> impl Iterator<Item = &NodeIdentity> {
        let own = self.own_in_range(start, len).then_some(&self.identity);
        // Every member in `up_index` has a record.
        ranges::entries_in(&self.range_sync.up, start, len)
            .filter_map(|(position, _)| {
                let id = NodeId(ranges::id_at(*position));
                self.records.get(&id).map(|r| &r.identity)
            })
            .chain(own)
    }

    /// Whether this node, while a member, lies in the range.
    fn own_in_range(&self, start: u64, len: u64) -> bool {
        !self.left && ranges::contains(start, len, ranges::position(self.identity.id.0))
    }

    /// The digest of the range: the XOR of the hashes of the lives up in
    /// it, this node's included.
    fn range_digest(&self, start: u64, len: u64) -> u64 {
        // The index holds each up member's life, which its record holds
        // too (`mark_up` sets both).
        let own = self
            .own_in_range(start, len)
            .then(|| ranges::member_hash(self.identity.id.0, self.identity.bump));
        ranges::entries_in(&self.range_sync.up, start, len)
            .map(|(position, bump)| ranges::member_hash(ranges::id_at(*position), *bump))
            .chain(own)
            .fold(0, |acc, h| acc ^ h)
    }

    /// The next round: its first position, the width of its ranges and
    /// the digest of each (see [`ranges`]); `None` while this node knows
    /// no member (or left).
    fn next_member_digest(&mut self) -> Option<(u64, u64, Vec<[u8; 4]>)> {
        let n = self.swim.num_members();
        if n == 0 || self.left {
            return None;
        }
        let len = ranges::width(n + 1);
        let start = self.range_sync.cursor;
        self.range_sync.cursor = start.wrapping_add(len.wrapping_mul(ranges::RANGES as u64));
        let digests = (0..ranges::RANGES as u64)
            .map(|i| {
                let digest = self.range_digest(start.wrapping_add(i.wrapping_mul(len)), len);
                ranges::wire_digest(digest)
            })
            .collect();
        Some((start, len, digests))
    }

    /// A digest round is due: the next probe carries it. One still due
    /// from the round before (no probe went out for a whole period) goes
    /// to a random live member in a datagram of its own.
    pub(super) fn member_digest_due(&mut self) {
        if !self.range_sync.digest_due {
            self.range_sync.digest_due = true;
            return;
        }
        let Some(peer) = self.random_up(None) else {
            return;
        };
        let Some((start, len, digests)) = self.next_member_digest() else {
            return;
        };
        self.send(
            peer,
            Body::MemberDigest {
                start,
                len,
                digests,
            },
            false,
        );
    }

    /// The encoded digest item for a probe about to go out, when a round
    /// is due.
    pub(super) fn digest_for_probe(&mut self) -> Option<Vec<u8>> {
        if !self.range_sync.digest_due {
            return None;
        }
        let (start, len, digests) = self.next_member_digest()?;
        self.range_sync.digest_due = false;
        Some(wire::encode(&Item::Digest {
            start,
            len,
            digests,
        }))
    }

    /// Sends the members of every range whose digest differs from ours.
    pub(super) fn answer_member_digest(
        &mut self,
        now: Instant,
        to: SocketAddr,
        start: u64,
        len: u64,
        digests: &[[u8; 4]],
    ) {
        let differing: Vec<(u64, u64)> = digests
            .iter()
            .take(ranges::RANGES)
            .enumerate()
            .map(|(i, d)| (start.wrapping_add((i as u64).wrapping_mul(len)), *d))
            .filter(|(s, d)| ranges::wire_digest(self.range_digest(*s, len)) != *d)
            .map(|(s, _)| (s, len))
            .collect();
        if differing.is_empty() {
            return;
        }
        let members: Vec<NodeIdentity> = differing
            .iter()
            .flat_map(|(s, l)| self.up_in_range(*s, *l))
            .cloned()
            .collect();
        let down: Vec<NodeIdentity> = differing
            .iter()
            .flat_map(|(s, l)| self.down_in_range(now, *s, *l))
            .cloned()
            .collect();
        self.send_member_ranges(to, differing, members, down, true);
    }

    /// Members seen going down within [`DOWN_REPAIR_WINDOW`] whose position
    /// lies in the range.
    fn down_in_range(
        &self,
        now: Instant,
        start: u64,
        len: u64,
    ) -> impl Iterator<Item = &NodeIdentity> {
        ranges::entries_in(&self.range_sync.down, start, len)
            .map(|(_, v)| v)
            .filter(move |(_, at)| now.saturating_duration_since(*at) < DOWN_REPAIR_WINDOW)
            .map(|(m, _)| m)
    }

    /// Learns the members of a differing range and, when asked, sends back
    /// those of ours that the list lacked.
    pub(super) fn on_member_ranges(
        &mut self,
        now: Instant,
        from: SocketAddr,
        asked: &[(u64, u64)],
        members: Vec<NodeIdentity>,
        down: Vec<NodeIdentity>,
        reply: bool,
    ) {
        let asked = &asked[..asked.len().min(ranges::RANGES)];
        let sent_up: std::collections::BTreeSet<NodeId> = members.iter().map(|m| m.id).collect();
        let sent_down: std::collections::BTreeSet<NodeId> = down.iter().map(|m| m.id).collect();
        let others = members
            .into_iter()
            .map(foca::Member::alive)
            .chain(down.into_iter().map(foca::Member::down))
            .filter(|m| m.id().id != self.identity.id);
        // Copied knowledge is not news: no re-broadcast. An entry foca knows
        // better (suspect, down, a newer life) leaves it unchanged; a down
        // entry of the life foca holds as up brings it down.

        let before = self.swim.num_members();
        let _ = self.swim.apply_many(others, false, &mut self.runtime);
        let learned = self.swim.num_members().saturating_sub(before);
        self.stats.members_learned_from_ranges += learned as u64;
        if !reply {
            return;
        }
        let lacking: Vec<NodeIdentity> = asked
            .iter()
            .flat_map(|(s, l)| self.up_in_range(*s, *l))
            .filter(|m| !sent_up.contains(&m.id) && !sent_down.contains(&m.id))
            .cloned()
            .collect();
        // Members the list has as up that went down here.
        let gone: Vec<NodeIdentity> = asked
            .iter()
            .flat_map(|(s, l)| self.down_in_range(now, *s, *l))
            .filter(|m| sent_up.contains(&m.id))
            .cloned()
            .collect();
        if !lacking.is_empty() || !gone.is_empty() {
            self.send_member_ranges(from, asked.to_vec(), lacking, gone, false);
        }
    }

    /// Sends `to` the members (up, and lately down) of `ranges`, in as
    /// many datagrams as it takes, asking for what it lacks when `reply`.
    fn send_member_ranges(
        &mut self,
        to: SocketAddr,
        ranges: Vec<(u64, u64)>,
        members: Vec<NodeIdentity>,
        down: Vec<NodeIdentity>,
        reply: bool,
    ) {
        // As many datagrams as it takes, up to one per range (ranges hold
        // about 16 members; more is a burst of joins, finished next time).
        // Down members first: they are few and correct a wrong "up".
        let room = self
            .config
            .max_datagram_bytes
            .saturating_sub(SEAL_OVERHEAD + ENVELOPE_OVERHEAD + 21 * ranges.len() + 8);
        let mut pages: Vec<(Vec<NodeIdentity>, Vec<NodeIdentity>)> = vec![Default::default()];
        let mut size = 0;
        let tagged = down
            .into_iter()
            .map(|m| (false, m))
            .chain(members.into_iter().map(|m| (true, m)));
        for (up, m) in tagged {
            let len = wire::encoded_len(&m);
            if size + len > room {
                if pages.len() == ranges::RANGES {
                    break;
                }
                pages.push(Default::default());
                size = 0;
            }
            size += len;
            let page = pages.last_mut().expect("starts with one");
            if up { &mut page.0 } else { &mut page.1 }.push(m);
        }
        // The receiver finds what we lack by comparing with one page: ask
        // only when the answer is one page (the rest is found on the
        // receiver's own rounds).
        let reply = reply && pages.len() == 1;
        for (members, down) in pages {
            let body = Body::MemberRanges {
                ranges: ranges.clone(),
                members,
                down,
                reply,
            };
            self.send(to, body, false);
        }
    }
}
