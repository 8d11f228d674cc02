//! Datacenter locality: budgets on the periodic gossip and on the probes
//! that cross datacenters.
//!
//! ## Gossip rounds
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
//! crosses: on the kept share, and on the probes and acks that cross.
//!
//! ## Probes
//!
//! foca probes one member per probe period, walking its shuffled member
//! list, so between five datacenters four probes in five cross. When the
//! probe it starts is of a member of another datacenter, the core sends it
//! with the chance `cross_dc_probes`; otherwise it takes the probe back
//! (the ping, its notification, and the two timers foca set for it) and
//! hands foca the probe timer again at once: foca finds the probe it just
//! started neither answered nor failed, drops it without suspecting anyone
//! (its "incomplete probe cycle", made for this kind of recovery) and
//! probes the next member of its walk. The updates the ping carried go to
//! a member of this datacenter as a gossip datagram, since foca counted
//! them as sent. A member of another datacenter is then probed from here
//! once in about 1/`cross_dc_probes` of foca's rounds, and by its own
//! datacenter's members the rest of the time: each member is still probed
//! about once per period, most often from nearby.
//!
//! Only a datacenter at least half as large as this node's is left to its
//! own probes: a small one (an edge site of two nodes next to a
//! datacenter of a thousand) gets few probes from inside, so every probe
//! from here is kept. Indirect probes go through the helpers foca chose:
//! foca accepts an indirect ack only from them.
//!
//! A member's datacenter is its metadata's `dc`; members whose metadata is
//! not held yet count as another datacenter's and are left as foca chose.
//! The list of this datacenter's members is rebuilt at each housekeeping
//! pass (every 5 s) and a pick is checked against the member's current life
//! before use.

use foca::{Message, OwnedNotification, Timer};
use rand::RngExt;

use crate::NodeIdentity;
use crate::kind::{SendKind, swim_header};
use crate::wire::Body;

use super::Membership;

/// Picks tried before a gossip datagram is left as foca addressed it.
const PICKS: usize = 3;

/// Probes foca starts in one probe period before the last is kept wherever
/// it goes.
pub const PROBE_PICKS: usize = 8;

impl Membership {
    /// Rebuilds the list of the members of this node's datacenter.
    pub(super) fn refresh_local_peers(&mut self) {
        let me = self.identity.id;
        let dc = &self.meta.dc;
        self.local_peers.clear();
        self.dc_sizes.clear();
        if self.config.cross_dc_gossip >= 1.0 && self.config.cross_dc_probes >= 1.0 {
            return;
        }
        for (id, r) in self.metas.held.iter() {
            if *id != me && self.range_sync.up_life(*id).is_none() {
                continue;
            }
            match self.dc_sizes.get_mut(r.meta.dc.as_str()) {
                Some(n) => *n += 1,
                None => {
                    self.dc_sizes.insert(r.meta.dc.clone(), 1);
                }
            }
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

    /// Fires foca's probe timer: the probe it starts of a member of another
    /// datacenter is taken back, outside the `cross_dc_probes` budget, and
    /// the timer fired again (see the module's notes).
    pub(super) fn probe_round(&mut self, timer: Timer<NodeIdentity>) {
        for pick in 1..=PROBE_PICKS {
            let (sends, timers, notes) = (
                self.runtime.sends.len(),
                self.runtime.timers.len(),
                self.runtime.notes.len(),
            );
            let _ = self.swim.handle_timer(timer.clone(), &mut self.runtime);
            if pick == PROBE_PICKS {
                return;
            }
            let Some(at) = (sends..self.runtime.sends.len())
                .find(|&i| SendKind::of(&Body::Swim(&self.runtime.sends[i].1)) == SendKind::Ping)
            else {
                return;
            };
            if !self.leaves_probe_to_its_dc(&self.runtime.sends[at].0.clone()) {
                return;
            }
            let Some((_, ping)) = self.runtime.sends.remove(at) else {
                return;
            };
            let mut i = 0;
            self.runtime.timers.retain(|(_, t)| {
                i += 1;
                i <= timers
                    || !matches!(
                        t,
                        Timer::ProbeRandomMember(_) | Timer::SendIndirectProbe { .. }
                    )
            });
            let mut i = 0;
            self.runtime.notes.retain(|n| {
                i += 1;
                i <= notes
                    || !matches!(n, OwnedNotification::DataSent(h) if matches!(h.message, Message::Ping(_)))
            });
            if let Some(moved) = self.ping_as_gossip(&ping) {
                self.runtime.sends.push_back(moved);
            }
            self.stats.probes_kept_in_dc += 1;
        }
    }

    /// Whether a probe of `to` is left to its datacenter's own members.
    fn leaves_probe_to_its_dc(&mut self, to: &NodeIdentity) -> bool {
        if self.config.cross_dc_probes >= 1.0 || self.local_peers.is_empty() {
            return false;
        }
        let Some(theirs) = self.metas.held.get(&to.id) else {
            return false;
        };
        if theirs.meta.dc == self.meta.dc {
            return false;
        }
        let size = |dc: &str| self.dc_sizes.get(dc).copied().unwrap_or(0);
        if 2 * size(&theirs.meta.dc) < size(&self.meta.dc) {
            return false;
        }
        self.rng.random::<f64>() >= self.config.cross_dc_probes
    }

    /// The updates a taken-back ping carries, as a gossip datagram to a
    /// member of this datacenter; none if it carries no update.
    fn ping_as_gossip(&mut self, ping: &[u8]) -> Option<(NodeIdentity, Vec<u8>)> {
        let (mut header, rest) = swim_header(ping)?;
        // foca writes the number of updates after its header (big-endian).
        if rest.get(..2)? == [0, 0] {
            return None;
        }
        let peer = self.random_local_peer()?;
        header.message = Message::Gossip;
        header.dst = peer.clone();
        let mut gossip = postcard::to_allocvec(&header).ok()?;
        gossip.extend_from_slice(rest);
        Some((peer, gossip))
    }

    /// A random live member of this datacenter, if one is found in a few
    /// picks.
    fn random_local_peer(&mut self) -> Option<NodeIdentity> {
        if self.local_peers.is_empty() {
            return None;
        }
        for _ in 0..PICKS {
            let id = self.local_peers[self.rng.random_range(0..self.local_peers.len())];
            let Some(peer) = self.records.get(&id).map(|r| r.identity.clone()) else {
                continue;
            };
            if self.is_up(&peer) {
                return Some(peer);
            }
        }
        None
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
        if kind != SendKind::Gossip
            || self.local_peers.is_empty()
            || self.config.cross_dc_gossip >= 1.0
        {
            return None;
        }
        let theirs = self.metas.held.get(&to.id)?;
        if theirs.meta.dc == self.meta.dc || self.rng.random::<f64>() < self.config.cross_dc_gossip
        {
            return None;
        }
        let peer = self.random_local_peer()?;
        let (mut header, rest) = swim_header(data)?;
        header.dst = peer.clone();
        let mut readdressed = postcard::to_allocvec(&header).ok()?;
        readdressed.extend_from_slice(rest);
        self.stats.gossip_kept_in_dc += 1;
        Some((peer, readdressed))
    }
}
