//! Graceful leave: a node that goes away says so, and members record it
//! as `left` rather than `failed`.
//!
//! foca has no "left": a leaving node declares itself down. Around that,
//! the leaving node piggybacks a *leave record* `{id, bump}` on its last
//! datagrams, and every node that takes a newer record passes it on. A
//! leave record spreads by a one-shot epidemic that can miss a node, which
//! then sees the member fail; so a node that sees a member go down with no
//! leave record asks whether it left: the sender of that news at once,
//! then a random live member every `meta_sync_period`, [`LEAVE_QUERIES`]
//! questions in all. The contract: a member down for a life that has a
//! leave record is `left`, whichever of the two pieces of news arrived
//! first. See docs/gossip.md, "States".

use std::collections::BTreeMap;
use std::net::SocketAddr;

use foca::State;

use crate::wire::{Body, Item};
use crate::{Instant, NodeId, NodeIdentity};

use super::meta_sync::{META_REQUEST_MAX_IDS, Want};
use super::{DownReason, Event, Membership};

/// Times a node asks about a member that went down without a leave record
/// (a crash): a leave notice it may have missed would turn `failed` into
/// `left`.
pub const LEAVE_QUERIES: u32 = 6;

/// What this node knows of members that left, or may have.
#[derive(Debug, Default)]
pub(super) struct Leaves {
    /// Leave records: the last life of each member that said goodbye.
    pub(super) known: BTreeMap<NodeId, u32>,
    /// Members seen going down with no leave record: asked about a few
    /// times, in case their leave notice missed this node.
    pub(super) unexplained: BTreeMap<NodeId, Want>,
}

impl Leaves {
    /// Whether `identity` (this life or a later one) said goodbye.
    pub(super) fn has_left(&self, identity: &NodeIdentity) -> bool {
        self.known
            .get(&identity.id)
            .is_some_and(|bump| *bump >= identity.bump)
    }
}

impl Membership {
    /// Leaves the cluster (see [`Membership::leave`]).
    pub(super) fn say_goodbye(&mut self, now: Instant) {
        if self.left {
            return;
        }
        self.left = true;
        self.join.active = false;
        // Enough transmissions for every farewell datagram below to carry it.
        let tx = self
            .transmissions()
            .saturating_add(u8::try_from(3 * self.config.indirect_probes).unwrap_or(u8::MAX));
        self.piggyback.add(
            &Item::Leave {
                id: self.identity.id,
                bump: self.identity.bump,
            },
            tx,
        );
        // `leave_cluster` queues our own down update and gossips it to a few
        // members; two more rounds reach more of them directly.
        let _ = self.swim.leave_cluster(&mut self.runtime);
        let _ = self.swim.gossip(&mut self.runtime);
        let _ = self.swim.gossip(&mut self.runtime);
        self.drain_swim(now);
    }

    /// Takes the leave record of member `id`'s life `bump` (and passes it
    /// on when `spread`): a member down for that life is `left`, not
    /// `failed`.
    pub(super) fn apply_leave(&mut self, now: Instant, id: NodeId, bump: u32, spread: bool) {
        if id == self.identity.id {
            return;
        }
        if self.leaves.known.get(&id).is_some_and(|b| *b >= bump) {
            return;
        }
        self.leaves.known.insert(id, bump);
        self.leaves.unexplained.remove(&id);
        if spread {
            let tx = self.transmissions();
            self.piggyback.add(&Item::Leave { id, bump }, tx);
        }
        // A member already recorded as failed turns out to have left.
        let down = self
            .swim
            .iter_membership_state()
            .find(|m| m.id().id == id && m.state() == State::Down)
            .map(|m| m.id().clone());
        if let Some(identity) = down
            && identity.bump <= bump
        {
            if let Some(r) = self.records.get_mut(&id) {
                r.state_since = now;
            }
            self.events.push_back(Event::MemberDown {
                identity,
                reason: DownReason::Left,
            });
        }
    }

    /// Answers which of `ids` this node holds a leave record of.
    pub(super) fn answer_leave_query(&mut self, to: SocketAddr, ids: &[NodeId]) {
        let leaves: Vec<(NodeId, u32)> = ids
            .iter()
            .take(META_REQUEST_MAX_IDS)
            .filter_map(|id| self.leaves.known.get(id).map(|b| (*id, *b)))
            .collect();
        if !leaves.is_empty() {
            self.send(to, Body::LeaveAnswer { leaves }, false);
        }
    }

    /// Member `id` went down and no leave record explains it: ask
    /// whoever told us (it may know that it left), then random members.
    pub(super) fn explain_down(&mut self, now: Instant, id: NodeId) {
        let mut want = Want::new(now);
        // Whoever told us it is down may know that it left.
        if let Some(from) = self.current_from {
            want.asked = 1;
            want.last_asked = Some(now);
            let query = Body::LeaveQuery { ids: vec![id] };
            self.send(from, query, false);
        }
        self.leaves.unexplained.insert(id, want);
    }

    /// A leave notice spreads by a one-shot epidemic that can miss a node;
    /// that node then sees the member fail. Ask a random live member, a few
    /// times, whether it knows of a leave.
    pub(super) fn ask_about_unexplained_downs(&mut self, now: Instant) {
        let retry_after = self.config.meta_sync_period;
        self.leaves
            .unexplained
            .retain(|_, w| w.asked < LEAVE_QUERIES);
        if !self.range_sync.any_up() || self.leaves.unexplained.is_empty() {
            return;
        }
        let mut ids = Vec::new();
        for (id, want) in &mut self.leaves.unexplained {
            if want
                .last_asked
                .is_some_and(|t| now.saturating_duration_since(t) < retry_after)
            {
                continue;
            }
            want.asked += 1;
            want.last_asked = Some(now);
            ids.push(*id);
            if ids.len() >= META_REQUEST_MAX_IDS {
                break;
            }
        }
        if !ids.is_empty()
            && let Some(dest) = self.random_up(None)
        {
            self.send(dest, Body::LeaveQuery { ids }, false);
        }
    }
}
