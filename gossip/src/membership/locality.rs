//! Datacenter locality of the gossip rounds: a budget on the periodic
//! gossip that crosses datacenters.
//!
//! foca picks the `gossip_fanout` members of each gossip round uniformly
//! among the members it knows (it offers no way to steer the choice), so in
//! a cluster of five datacenters four rounds in five cross between them. A
//! gossip datagram asks nothing back, and any member that learns its
//! updates passes them on; so when foca addresses one to a member of
//! another datacenter, the core sends it there with the chance
//! `cross_dc_gossip`, and otherwise to a random live member of this node's
//! own datacenter, with the destination in foca's header rewritten to that
//! member (foca accepts a payload only addressed to itself). News still
//! crosses: on the kept share, and on probes and their acks, which foca
//! sends to members anywhere (a probe needs its target's answer, and its
//! indirect helpers must be those foca chose, so neither is moved).
//!
//! A member's datacenter is its metadata's `dc`; members whose metadata is
//! not held yet count as another datacenter's and are left as foca chose.
//! The list of this datacenter's members is rebuilt at each housekeeping
//! pass (every 5 s) and a pick is checked against the member's current life
//! before use.

use foca::Message;
use rand::RngExt;

use crate::NodeIdentity;
use crate::kind::{SendKind, swim_header};

use super::Membership;

/// Picks tried before a gossip datagram is left as foca addressed it.
const PICKS: usize = 3;

impl Membership {
    /// Rebuilds the list of the members of this node's datacenter.
    pub(super) fn refresh_local_peers(&mut self) {
        let me = self.identity.id;
        let dc = &self.meta.dc;
        self.local_peers.clear();
        if self.config.cross_dc_gossip >= 1.0 {
            return;
        }
        self.local_peers.extend(
            self.metas
                .held
                .iter()
                .filter(|(id, r)| **id != me && r.meta.dc == *dc)
                .map(|(id, _)| *id),
        );
        self.local_peers.shrink_to_fit();
    }

    /// Whether foca will take this SWIM payload: addressed to this node's
    /// identity (or, for an announce, to any life of it).
    pub(super) fn addressed_here(&self, data: &[u8]) -> bool {
        let Some((header, _)) = swim_header(data) else {
            // foca says what is wrong with it.
            return true;
        };
        let me = self.swim.identity();
        header.dst == *me || (header.message == Message::Announce && header.dst.id == me.id)
    }

    /// Where a datagram foca addresses to `to` goes, if not there: a
    /// gossip datagram to another datacenter is moved, outside the budget,
    /// to a member of this one (its header readdressed).
    pub(super) fn localize(
        &mut self,
        kind: SendKind,
        to: &NodeIdentity,
        data: &[u8],
    ) -> Option<(NodeIdentity, Vec<u8>)> {
        if kind != SendKind::Gossip || self.local_peers.is_empty() {
            return None;
        }
        let theirs = self.metas.held.get(&to.id)?;
        if theirs.meta.dc == self.meta.dc || self.rng.random::<f64>() < self.config.cross_dc_gossip
        {
            return None;
        }
        for _ in 0..PICKS {
            let id = self.local_peers[self.rng.random_range(0..self.local_peers.len())];
            let Some(peer) = self.records.get(&id).map(|r| r.identity.clone()) else {
                continue;
            };
            if !self.is_up(&peer) {
                continue;
            }
            let (mut header, rest) = swim_header(data)?;
            header.dst = peer.clone();
            let mut readdressed = postcard::to_allocvec(&header).ok()?;
            readdressed.extend_from_slice(rest);
            self.stats.gossip_kept_in_dc += 1;
            return Some((peer, readdressed));
        }
        None
    }
}
