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
//! from here is kept.
//!
//! ## Indirect probes
//!
//! When a probe goes unanswered, foca asks `indirect_probes` helpers,
//! drawn among all members, to ping the target. The core sends each ask
//! but the first to a live member of the target's datacenter instead of
//! foca's helper when that helper is elsewhere (the first stays foca's, so
//! that a cut between this datacenter and the target's can still be
//! bridged by a third). foca takes an indirect ack only from a helper it
//! chose, so the core keeps, for the probe in flight, which member stands
//! for which helper, and gives foca the member's forwarded ack as from the
//! helper (at incarnation 0, which tells foca nothing new about the
//! helper; not if the helper is no longer up here). foca's notice of the
//! ask is readdressed too, so that the accusation of Lifeguard's
//! confirmations goes to the member that pinged.
//!
//! ## Probes that only check reach
//!
//! With `reach_only_dc_size` set, a datacenter with at least that many
//! members up (and at least half as large as this node's) is left to its
//! own probes altogether: a probe from here of one of its members that the
//! budget keeps only checks that the datacenter is reached. It goes out
//! and is answered as any probe (directly, then through helpers near the
//! target); if no answer came by the next probe period, the core counts
//! it against the datacenter (`reach.rs`) and, before foca judges the
//! probe, hands foca an ack from the target at incarnation 0, so that foca
//! counts the probe answered and suspects nobody; what foca makes of that
//! ack (its notice of it) is dropped. While such a datacenter is in doubt
//! (one failure counted and nothing heard since; silent since another
//! became unreachable; silent for `reach::SILENT_CHECK_AFTER`), the probe
//! round takes back foca's picks until one is of its members, so that the
//! doubt is settled within a few periods. A cut of such a datacenter is then
//! one fact on each side, with no per-member suspicion, until it has been
//! unreachable from here for `dc_lost_after`, after which its members are
//! probed as any (a datacenter lost for good leaves the lists).
//!
//! A member's datacenter is its metadata's `dc`; members whose metadata is
//! not held yet count as another datacenter's and are left as foca chose.
//! The lists of each datacenter's members up are rebuilt at each
//! housekeeping pass (every 5 s) and a pick is checked against the member's
//! current life before use.

use std::collections::VecDeque;
use std::sync::Arc;

use foca::{Header, Message, OwnedNotification, ProbeNumber, Timer};
use rand::RngExt;

use crate::kind::{SendKind, swim_header, swim_packet};
use crate::wire::Body;
use crate::{Instant, NodeId, NodeIdentity};

use super::Membership;

/// Picks tried before a gossip datagram is left as foca addressed it.
const PICKS: usize = 3;

/// Probes foca starts in one probe period before the last is kept wherever
/// it goes.
pub const PROBE_PICKS: usize = 8;

impl Membership {
    /// Rebuilds the lists of the members up in each datacenter.
    pub(super) fn refresh_dc_peers(&mut self) {
        let me = self.identity.id;
        self.peers.clear();
        // Built whatever the budgets: `reach.rs` counts the members of a
        // datacenter unreachable from here from them.
        for (id, r) in self.metas.held.iter() {
            if *id == me || self.range_sync.up_life(*id).is_none() {
                continue;
            }
            match self.peers.get_mut(r.meta.dc.as_str()) {
                Some(ids) => ids.push(*id),
                None => {
                    self.peers.insert(r.meta.dc.clone(), vec![*id]);
                }
            }
        }
        for ids in self.peers.values_mut() {
            ids.shrink_to_fit();
        }
    }

    /// Members up in datacenter `dc`, this node included.
    pub(super) fn dc_size(&self, dc: &str) -> usize {
        let others = self.peers.get(dc).map_or(0, Vec::len);
        others + usize::from(dc == self.meta.dc)
    }

    /// Whether this node's datacenter has another member up.
    pub(super) fn has_local_peers(&self) -> bool {
        self.peers.contains_key(self.meta.dc.as_str())
    }

    /// Fires foca's probe timer: the probe it starts of a member of another
    /// datacenter is taken back, outside the `cross_dc_probes` budget, and
    /// the timer fired again (see the module's notes). The probe that
    /// ended first settles, if it only checked a datacenter's reach.
    pub(super) fn probe_round(&mut self, now: Instant, timer: Timer<NodeIdentity>) {
        self.settle_reach_probe(now);
        let doubt = self.reach_doubt(now);
        for pick in 1..=PROBE_PICKS {
            let (sends, timers, notes) = (
                self.runtime.sends.len(),
                self.runtime.timers.len(),
                self.runtime.notes.len(),
            );
            let _ = self.swim.handle_timer(timer.clone(), &mut self.runtime);
            let Some(at) = (sends..self.runtime.sends.len())
                .find(|&i| SendKind::of(&Body::Swim(&self.runtime.sends[i].1)) == SendKind::Ping)
            else {
                return;
            };
            let to = self.runtime.sends[at].0.clone();
            // The last pick is kept wherever it goes (no draw for it).
            let keep = pick == PROBE_PICKS
                || match &doubt {
                    Some(dc) => {
                        let checks = self.dc_of(&to.id) == Some(dc.as_str());
                        self.stats.reach_checks += u64::from(checks);
                        checks
                    }
                    None => !self.leaves_probe_to_its_dc(&to),
                };
            if keep {
                return self.watch_reach_probe(now, &to, at);
            }
            let Some((_, ping)) = self.runtime.sends.remove(at) else {
                return;
            };
            retain_from(&mut self.runtime.timers, timers, |(_, t)| {
                !matches!(
                    t,
                    Timer::ProbeRandomMember(_) | Timer::SendIndirectProbe { .. }
                )
            });
            retain_from(
                &mut self.runtime.notes,
                notes,
                |n| !matches!(n, OwnedNotification::DataSent(h) if matches!(h.message, Message::Ping(_))),
            );
            if let Some(moved) = self.ping_as_gossip(&ping) {
                self.runtime.sends.push_back(moved);
            }
            self.stats.probes_kept_in_dc += 1;
        }
    }

    /// Whether `dc` is another datacenter at least half as large as this
    /// node's, which has members of its own up: one whose members its own
    /// probes check (see the module's notes).
    pub(super) fn checked_by_its_dc(&self, dc: &str) -> bool {
        self.has_local_peers()
            && dc != self.meta.dc
            && 2 * self.dc_size(dc) >= self.dc_size(&self.meta.dc)
    }

    /// The datacenter of member `id`, if its metadata is held.
    fn dc_of(&self, id: &NodeId) -> Option<&str> {
        self.metas.held.get(id).map(|r| r.meta.dc.as_str())
    }

    /// Whether a probe of `to` is left to its datacenter's own members.
    fn leaves_probe_to_its_dc(&mut self, to: &NodeIdentity) -> bool {
        self.config.cross_dc_probes < 1.0
            && self
                .dc_of(&to.id)
                .is_some_and(|dc| self.checked_by_its_dc(dc))
            && self.rng.random::<f64>() >= self.config.cross_dc_probes
    }

    /// Remembers the probe foca sent to `to` (the ping at `at` in the
    /// queue) if it only checks that `to`'s datacenter is reached: `to` is
    /// in a datacenter of at least `reach_only_dc_size` members that its
    /// own probes check.
    fn watch_reach_probe(&mut self, now: Instant, to: &NodeIdentity, at: usize) {
        let Some(dc) = self.dc_of(&to.id) else {
            return;
        };
        if !self.reach_only(now, dc) || !self.checked_by_its_dc(dc) {
            return;
        }
        let Some((header, _)) = swim_header(&self.runtime.sends[at].1) else {
            return;
        };
        if let Message::Ping(number) = header.message {
            self.reach_probe = Some(ReachProbe {
                target: to.clone(),
                number,
                answered: false,
            });
        }
    }

    /// Whether datacenter `dc`, another one, is large enough that this
    /// node's probes of its members only check that it is reached (if it
    /// is also at least half as large as this node's and this node has
    /// members of its own up): it has at least `reach_only_dc_size`
    /// members up. Its members are then declared failed only by others'
    /// probes (while it is unreachable, by none seen from here) until it
    /// has been unreachable for `dc_lost_after`.
    pub fn reach_only_dc(&self, dc: &str) -> bool {
        let min = self.config.reach_only_dc_size;
        min > 0 && dc != self.meta.dc && self.dc_size(dc) >= min
    }

    /// [`reach_only_dc`](Self::reach_only_dc), unless `dc` has been
    /// unreachable from here for `dc_lost_after`.
    pub(super) fn reach_only(&self, now: Instant, dc: &str) -> bool {
        self.reach_only_dc(dc)
            && self
                .reach
                .unreachable_since(dc, now)
                .is_none_or(|d| d < self.config.dc_lost_after)
    }

    /// Notes an answer to the probe that checks a datacenter's reach: an
    /// ack from its target, or forwarded by a helper.
    pub(super) fn reach_probe_answered(&mut self, header: &Header<NodeIdentity>) {
        let Some(probe) = &mut self.reach_probe else {
            return;
        };
        match &header.message {
            Message::Ack(n) if *n == probe.number && header.src == probe.target => {
                probe.answered = true;
            }
            Message::ForwardedAck {
                origin,
                probe_number,
            } if *probe_number == probe.number && *origin == probe.target => {
                probe.answered = true;
            }
            _ => {}
        }
    }

    /// Before foca judges the probe that ended: one that only checked a
    /// datacenter's reach and got no answer, directly or through helpers,
    /// counts against that datacenter, and foca is handed an ack from its
    /// target (at incarnation 0, which tells foca nothing about the
    /// member) so that it suspects nobody. What foca makes of the ack (its
    /// notice of it) is dropped.
    fn settle_reach_probe(&mut self, now: Instant) {
        let Some(probe) = self.reach_probe.take() else {
            return;
        };
        if probe.answered || !self.is_up(&probe.target) {
            return;
        }
        let header = Header {
            src: probe.target.clone(),
            src_incarnation: 0,
            dst: self.swim.identity().clone(),
            message: Message::Ack(probe.number),
        };
        // No membership update follows the header.
        let Some(ack) = swim_packet(&header, &[0, 0]) else {
            return;
        };
        let (sends, timers, notes) = (
            self.runtime.sends.len(),
            self.runtime.timers.len(),
            self.runtime.notes.len(),
        );
        let _ = self.swim.handle_data(&ack, &mut self.runtime);
        self.runtime.sends.truncate(sends);
        self.runtime.timers.truncate(timers);
        self.runtime.notes.truncate(notes);
        self.stats.reach_probes_failed += 1;
        self.reach_probe_failed(now, probe.target.id);
    }

    /// The updates a taken-back ping carries, as a gossip datagram to a
    /// member of this datacenter; none if it carries no update.
    fn ping_as_gossip(&mut self, ping: &[u8]) -> Option<(NodeIdentity, Vec<u8>)> {
        let (mut header, rest) = swim_header(ping)?;
        // foca writes the number of updates after its header (big-endian).
        if rest.get(..2)? == [0, 0] {
            return None;
        }
        let meta = Arc::clone(&self.meta);
        let peer = self.random_peer_in(&meta.dc, &[])?;
        header.message = Message::Gossip;
        header.dst = peer.clone();
        Some((peer, swim_packet(&header, rest)?))
    }

    /// Fires foca's indirect-probe timer: its asks to helpers outside the
    /// target's datacenter, but the first, go to members of that datacenter
    /// (see the module's notes).
    pub(super) fn indirect_round(&mut self, timer: Timer<NodeIdentity>) {
        let (sends, notes) = (self.runtime.sends.len(), self.runtime.notes.len());
        let _ = self.swim.handle_timer(timer, &mut self.runtime);
        self.relays.clear();
        if self.config.cross_dc_probes >= 1.0 {
            return;
        }
        // foca's helpers, the members put in their place, and the target.
        let mut taken: Vec<NodeId> = Vec::new();
        let mut first = true;
        for at in sends..self.runtime.sends.len() {
            let data = self.runtime.sends[at].1.clone();
            let Some((mut header, rest)) = swim_header(&data) else {
                continue;
            };
            let Message::PingReq {
                target,
                probe_number,
            } = &header.message
            else {
                continue;
            };
            let (target, probe_number) = (target.clone(), *probe_number);
            let helper = header.dst.clone();
            taken.push(helper.id);
            if std::mem::take(&mut first) {
                taken.push(target.id);
                continue;
            }
            let Some(dc) = self.metas.held.get(&target.id).map(|r| r.meta.dc.clone()) else {
                continue;
            };
            if self
                .metas
                .held
                .get(&helper.id)
                .is_some_and(|r| r.meta.dc == dc)
            {
                continue;
            }
            let Some(near) = self.random_peer_in(&dc, &taken) else {
                continue;
            };
            header.dst = near.clone();
            let Some(ask) = swim_packet(&header, rest) else {
                continue;
            };
            self.runtime.sends[at] = (near.clone(), ask);
            for note in self.runtime.notes.iter_mut().skip(notes) {
                if let OwnedNotification::DataSent(h) = note
                    && matches!(h.message, Message::PingReq { .. })
                    && h.dst == helper
                {
                    h.dst = near.clone();
                }
            }
            taken.push(near.id);
            self.relays.push(Relay {
                probe_number,
                near: near.id,
                helper,
            });
            self.stats.indirect_probes_moved += 1;
        }
    }

    /// A forwarded ack from a member that stands for one of foca's helpers
    /// (`indirect_round`), given to foca as from that helper.
    pub(super) fn as_from_helper(&mut self, data: &[u8]) -> Option<Vec<u8>> {
        if self.relays.is_empty() {
            return None;
        }
        let (mut header, rest) = swim_header(data)?;
        let Message::ForwardedAck { probe_number, .. } = header.message else {
            return None;
        };
        let at = self
            .relays
            .iter()
            .position(|r| r.probe_number == probe_number && r.near == header.src.id)?;
        let relay = self.relays.swap_remove(at);
        if !self.is_up(&relay.helper) {
            return None;
        }
        header.src = relay.helper;
        header.src_incarnation = 0;
        swim_packet(&header, rest)
    }

    /// A random member up in datacenter `dc`, other than those in `except`,
    /// if one is found in a few picks.
    fn random_peer_in(&mut self, dc: &str, except: &[NodeId]) -> Option<NodeIdentity> {
        let n = self.peers.get(dc).map_or(0, Vec::len);
        if n == 0 {
            return None;
        }
        for _ in 0..PICKS {
            let k = self.rng.random_range(0..n);
            let id = self.peers.get(dc)?[k];
            if except.contains(&id) {
                continue;
            }
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
        if kind != SendKind::Gossip || !self.has_local_peers() || self.config.cross_dc_gossip >= 1.0
        {
            return None;
        }
        let theirs = self.metas.held.get(&to.id)?;
        if theirs.meta.dc == self.meta.dc || self.rng.random::<f64>() < self.config.cross_dc_gossip
        {
            return None;
        }
        let meta = Arc::clone(&self.meta);
        let peer = self.random_peer_in(&meta.dc, &[])?;
        let (mut header, rest) = swim_header(data)?;
        header.dst = peer.clone();
        let readdressed = swim_packet(&header, rest)?;
        self.stats.gossip_kept_in_dc += 1;
        Some((peer, readdressed))
    }
}

/// Keeps, of the items of `queue` from index `from` on (those one call
/// into foca added), only those `keep` says.
fn retain_from<T>(queue: &mut VecDeque<T>, from: usize, keep: impl FnMut(&T) -> bool) {
    let mut added = queue.split_off(from);
    added.retain(keep);
    queue.append(&mut added);
}

/// A probe of a member of a large datacenter elsewhere, which only checks
/// that the datacenter is reached (`Config::reach_only_dc_size`).
pub(super) struct ReachProbe {
    target: NodeIdentity,
    number: ProbeNumber,
    answered: bool,
}

/// A member of the target's datacenter asked to probe in place of one of
/// foca's helpers, for the probe in flight.
pub(super) struct Relay {
    probe_number: ProbeNumber,
    near: NodeId,
    helper: NodeIdentity,
}
