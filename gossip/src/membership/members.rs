//! What this node keeps per member beside foca's own entry, and how those
//! entries come and go.
//!
//! foca holds each member's identity, incarnation and state; this core
//! adds a [`Record`] (the life it knows, when it first heard of the member,
//! when it last went up or down) and, in the other parts, the member's
//! metadata record (`meta_sync.rs`), its position in the range-digest
//! index (`range_sync.rs`), its leave record (`leaves.rs`) and its replay
//! window (`datagram.rs`). The contract: a member's record lives until
//! foca forgets the member, and then the member is forgotten by every part
//! at once ([`Membership::forget_if_gone`]); so the per-member state of
//! every part can be pruned against `records`, without copying foca's
//! list, every [`HOUSEKEEPING_PERIOD`]. The tables are rebuilt with full
//! nodes when they have doubled (see `crate::packed::Packed`). See
//! docs/gossip.md, "Memory per member".

use core::time::Duration;

use foca::State;

use crate::{Instant, NodeId, NodeIdentity};

use super::{MemberInfo, MemberState, Membership};

/// How often the housekeeping timer runs.
pub(super) const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(5);

/// What this node keeps about a member beside foca's entry.
#[derive(Debug)]
pub(super) struct Record {
    /// The member's life this node knows.
    pub(super) identity: NodeIdentity,
    /// When this node first heard of it.
    pub(super) first_seen: Instant,
    /// When it last went up or down.
    pub(super) state_since: Instant,
}

impl Membership {
    /// `m` as the API shows it.
    pub(super) fn info_of(&self, m: &foca::Member<NodeIdentity>) -> MemberInfo {
        let id = m.id();
        let record = self.records.get(&id.id);
        let meta = self.metas.held.get(&id.id);
        MemberInfo {
            identity: id.clone(),
            state: self.state_of(m),
            incarnation: m.incarnation(),
            meta: meta.map(|r| r.meta.clone()),
            meta_version: meta.map(|r| (r.bump, r.version)),
            first_seen: record.map(|r| r.first_seen).unwrap_or(self.started),
            state_since: record.map(|r| r.state_since).unwrap_or(self.started),
            local: false,
        }
    }

    /// `m`'s state, `left` told apart from `failed` by its leave record.
    fn state_of(&self, m: &foca::Member<NodeIdentity>) -> MemberState {
        match m.state() {
            State::Alive => MemberState::Alive,
            State::Suspect => MemberState::Suspect,
            State::Down => {
                if self.leaves.has_left(m.id()) {
                    MemberState::Left
                } else {
                    MemberState::Failed
                }
            }
        }
    }

    /// Whether this node holds `identity` (this very life) up.
    pub(super) fn is_up(&self, identity: &NodeIdentity) -> bool {
        self.range_sync.up_life(identity.id) == Some(identity.bump)
            && self
                .records
                .get(&identity.id)
                .is_some_and(|r| r.identity == *identity)
    }

    /// Records `identity` as this member's life and as up; its record.
    pub(super) fn mark_up(&mut self, now: Instant, identity: &NodeIdentity) -> &mut Record {
        let id = identity.id;
        self.range_sync.went_up(identity);
        let record = self.records.entry(id).or_insert(Record {
            identity: identity.clone(),
            first_seen: now,
            state_since: now,
        });
        record.identity = identity.clone();
        record
    }

    /// Prunes what is kept about the past: stale probes, a stale member-list
    /// snapshot, old downs, and per-member state of members foca forgot.
    pub(super) fn housekeeping(&mut self, now: Instant) {
        self.paging.expire_snapshot(now);
        let stale_probe = self.config.probe_period * 10;
        self.probes.prune(now, stale_probe);
        // `records` holds what foca holds (a member is forgotten in both
        // at once), without copying foca's list.
        let known = &self.records;
        self.datagrams.replay.retain(|id, _| known.contains_key(id));
        self.range_sync.prune(now);
        self.app_digest
            .reported
            .retain(|id, _| known.contains_key(id));
        self.leaves.known.retain(|id, _| known.contains_key(id));
        self.check_suspects();
        self.reach_downs_lasted(now);
        self.tell_long_suspects(now);
        self.prune_accusations(now);
        self.refresh_dc_peers();
    }

    /// Tells each member held suspect here for two suspicion timeouts
    /// that it is: its refutation is overdue. foca schedules the down of a
    /// suspect only on the member whose probe failed; every other member
    /// holds the suspicion until the refutation (a newer incarnation) or
    /// the down reaches it. When the suspect never got the rumor (a burst
    /// of news, such as a healed partition's, leaves rumors fewer
    /// transmissions each) and its prober dropped the suspicion (its own
    /// probe later succeeded, or it was on the other side of a cut), the
    /// members that got the rumor would hold a live member suspect for
    /// good. The suspect, told directly, refutes as if it had heard the
    /// rumor; a dead one costs a datagram per housekeeping pass until its
    /// down arrives.
    fn tell_long_suspects(&mut self, now: Instant) {
        let suspects = &self.suspects;
        self.suspect_since.retain(|id, _| suspects.contains(id));
        for id in suspects {
            self.suspect_since.entry(*id).or_insert(now);
        }
        let overdue = self.config.suspicion_timeout(self.sized_for) * 2;
        let late: std::collections::BTreeSet<NodeId> = self
            .suspect_since
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(**since) >= overdue)
            .map(|(id, _)| *id)
            .collect();
        if late.is_empty() {
            return;
        }
        let tell: Vec<(NodeIdentity, u16)> = self
            .swim
            .iter_membership_state()
            .filter(|m| m.state() == State::Suspect && late.contains(&m.id().id))
            .map(|m| (m.id().clone(), m.incarnation()))
            .collect();
        for (identity, incarnation) in tell {
            self.stats.suspects_told += 1;
            let to = identity.gossip_addr();
            self.send(
                to,
                crate::wire::Body::Suspected {
                    identity,
                    incarnation,
                },
                false,
            );
        }
    }

    /// Another member tells this node it has been suspect there for long:
    /// refute, as foca does on hearing the rumor, when the suspicion is of
    /// this life.
    pub(super) fn on_suspected(&mut self, identity: &NodeIdentity, incarnation: u16) {
        if *identity != self.identity {
            return;
        }
        let me = foca::Member::new(self.identity.clone(), incarnation, State::Suspect);
        let _ = self
            .swim
            .apply_many(std::iter::once(me), false, &mut self.runtime);
    }

    /// Brings the set of suspects in line with foca's list (one pass over
    /// it, reading states only), telling of each change.
    pub(super) fn check_suspects(&mut self) {
        let now: std::collections::BTreeSet<NodeId> = self
            .swim
            .iter_membership_state()
            .filter(|m| m.state() == State::Suspect)
            .map(|m| m.id().id)
            .collect();
        for id in now.difference(&self.suspects) {
            self.events.push_back(super::Event::SuspicionChanged {
                id: *id,
                suspect: true,
            });
        }
        for id in self.suspects.difference(&now) {
            self.events.push_back(super::Event::SuspicionChanged {
                id: *id,
                suspect: false,
            });
        }
        self.suspects = now;
    }

    /// Checks whether member `id` is suspect now (after one of this node's
    /// probes of it failed), telling of a change.
    pub(super) fn check_suspect(&mut self, id: NodeId) {
        let suspect = self
            .swim
            .iter_membership_state()
            .any(|m| m.id().id == id && m.state() == State::Suspect);
        let changed = if suspect {
            self.suspects.insert(id)
        } else {
            self.suspects.remove(&id)
        };
        if changed {
            self.events
                .push_back(super::Event::SuspicionChanged { id, suspect });
        }
    }

    /// Forgets member `id` in every part, once foca has forgotten it.
    pub(super) fn forget_if_gone(&mut self, id: NodeId) {
        if self.swim.iter_membership_state().any(|m| m.id().id == id) {
            return;
        }
        let known = self.records.remove(&id).is_some();
        self.suspects.remove(&id);
        self.forget_accusation(id);
        self.range_sync.forget(id);
        self.metas.held.remove(&id);
        self.metas.behind.remove(&id);
        self.leaves.known.remove(&id);
        self.datagrams.replay.remove(&id);
        self.metas.wanted.remove(&id);
        self.leaves.unexplained.remove(&id);
        if known {
            self.events.push_back(super::Event::MemberForgotten { id });
        }
    }

    /// The per-member tables, rebuilt with full nodes when they have
    /// doubled (see [`Packed`](crate::packed::Packed)): filled from a
    /// member list in id order, they would be about half empty.
    pub(super) fn pack_tables(&mut self) {
        self.records.pack();
        self.metas.held.pack();
        self.range_sync.pack();
    }
}
