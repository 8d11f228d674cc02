//! Lifeguard's dynamic suspicion (Dadgar et al. 2018, "Lifeguard: Local
//! Health Awareness for More Accurate Failure Detection"): a suspicion's
//! timeout starts at the full `suspicion_timeout` and shrinks as other
//! members confirm it independently.
//!
//! foca schedules a down timer on a member each time one of this node's
//! probes of it fails (the node is then one of its *accusers*); a member
//! that only heard the rumor holds the suspicion without a timer. This part
//! counts accusers: when foca schedules such a timer, this node adds itself
//! to the member's accusers (for that life and incarnation) and, if that is
//! news, gossips the list as an [`Item::Suspect`]; a list heard from others
//! is merged and, if it grew, gossiped on. The down timer is scheduled at
//! `suspicion_after(N, c)` from the node's own accusation, `c` the other
//! accusers known, and moved earlier whenever `c` grows (never later). A
//! lone accuser, such as a prober that lost a datagram or an overloaded
//! one, waits the full timeout, so the member has as long as before to
//! refute; several members whose probes failed one after the other declare
//! it failed sooner.
//!
//! The members a prober asks to ping the suspect indirectly are witnesses
//! too: one whose own ping has gone unanswered (no SWIM message from the
//! member since) for a probe period, the patience the prober had, adds
//! itself (within a full suspicion timeout of its ping). The prober sends
//! its accusation straight to them (`Body::Accusation`) and they answer
//! straight with their confirmation once their period is up, so a member
//! that is truly gone is confirmed about half a probe period after the
//! first accusation, by members on other paths to it; where those
//! datagrams are lost, gossip carries both. An overloaded prober whose
//! requests never leave gets no such confirmation.
//!
//! A refutation raises the member's incarnation, which starts a fresh count;
//! accusations of an older incarnation or life are ignored. Lists are kept
//! at most `suspicion_confirmations + 1` long (more would not shorten
//! anything), and one is forgotten once its member is no longer suspect and
//! it has not grown for two full timeouts.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::net::SocketAddr;

use foca::Timer;

use crate::kind::SendKind;
use crate::wire::{Body, Item};
use crate::{Instant, NodeId, NodeIdentity};

use super::Membership;
use super::timers::{TimerKind, TimerToken};

/// What this node knows of the accusations against one member.
#[derive(Debug)]
struct Accusation {
    /// The life and incarnation accused.
    life: (u32, u16),
    /// Members whose probes failed (this node among them, if so), in the
    /// order heard.
    accusers: Vec<NodeId>,
    /// When the list last grew.
    grew: Instant,
    /// This node's down timer for the member, if it is an accuser.
    timer: Option<DownTimer>,
}

/// A down timer scheduled here, and when it is due.
#[derive(Debug)]
struct DownTimer {
    life: (u32, u16),
    /// When this node's probe failed (the suspicion's start here).
    started: Instant,
    at: Instant,
    token: TimerToken,
}

/// Accusations by suspected member.
#[derive(Debug, Default)]
pub(super) struct Suspicions {
    by_member: BTreeMap<NodeId, Accusation>,
    /// Members this node pinged on another's behalf (a SWIM indirect
    /// probe) that have not answered since, and when.
    unanswered: BTreeMap<NodeId, Instant>,
    /// The latest life and incarnation of this node seen accused.
    accused: Option<(u32, u16)>,
    /// The members this node last asked to probe each member indirectly,
    /// and when: its accusation goes to them straight.
    asked: BTreeMap<NodeId, (Instant, Vec<SocketAddr>)>,
    /// Members with a helper's confirmation check scheduled
    /// (`TimerKind::ConfirmCheck`), and the accuser to answer then (one
    /// that sent its accusation straight here).
    checks: BTreeMap<NodeId, Option<SocketAddr>>,
}

impl Suspicions {
    /// This node pinged `to` for a member whose direct probe failed.
    pub(super) fn indirect_ping_sent(&mut self, now: Instant, to: NodeId) {
        self.unanswered.entry(to).or_insert(now);
    }

    /// This node asked `helper` to ping `target` (its direct probe of
    /// `target` went unanswered).
    pub(super) fn asked_to_probe(&mut self, now: Instant, target: NodeId, helper: SocketAddr) {
        let (at, helpers) = self.asked.entry(target).or_insert((now, Vec::new()));
        if *at != now {
            *at = now;
            helpers.clear();
        }
        helpers.push(helper);
    }

    /// A SWIM message came from `from`: it answers.
    pub(super) fn heard_from(&mut self, from: NodeId) {
        self.unanswered.remove(&from);
    }
}

impl Membership {
    /// Schedules foca's down timer of a suspect (any other timer as
    /// asked): it is this node's accusation, counted and shortened by the
    /// confirmations known.
    pub(super) fn schedule_down_timer(
        &mut self,
        now: Instant,
        after: core::time::Duration,
        timer: Timer<NodeIdentity>,
    ) {
        let Timer::ChangeSuspectToDown {
            member_id,
            incarnation,
            ..
        } = &timer
        else {
            self.timers.schedule(now + after, TimerKind::Swim(timer));
            return;
        };
        let id = member_id.id;
        let life = (member_id.bump, *incarnation);
        let me = self.identity.id;
        if self.add_accusers(now, id, life, &[me]) {
            self.gossip_accusation(id);
            // Straight to the helpers of the probe that failed: they are
            // the ones that can confirm it at once.
            if let Some((_, helpers)) = self.suspicions.asked.remove(&id) {
                self.send_accusation(id, &helpers, true);
            }
        }
        let Some(acc) = self.suspicions.by_member.get_mut(&id) else {
            // An older life or incarnation than one accused already: foca's
            // own timer, as scheduled.
            self.timers.schedule(now + after, TimerKind::Swim(timer));
            return;
        };
        if let Some(t) = &acc.timer
            && t.life == life
            && self.timers.is_pending(t.token)
        {
            // A second failed probe of the same suspicion: the earlier timer
            // (shortened at least as much) declares it.
            return;
        }
        let others = acc.accusers.iter().filter(|a| **a != me).count();
        let at = now
            + self
                .config
                .suspicion_after(self.sized_for, others)
                .min(after);
        let token = self.timers.schedule(at, TimerKind::Swim(timer));
        acc.timer = Some(DownTimer {
            life,
            started: now,
            at,
            token,
        });
    }

    /// An accusation list heard from another member.
    pub(super) fn on_accusation(
        &mut self,
        now: Instant,
        id: NodeId,
        life: (u32, u16),
        accusers: &[NodeId],
        spread: bool,
    ) {
        if id == self.identity.id {
            // foca refutes when the suspicion itself arrives; being accused
            // (once per incarnation) tells this node it answers late.
            if self.suspicions.accused.is_none_or(|seen| life > seen) {
                self.suspicions.accused = Some(life);
                self.health_worse();
            }
            return;
        }
        let mut grew = self.add_accusers(now, id, life, accusers);
        grew |= self.confirm_as_helper(now, id, life);
        if grew {
            if spread {
                self.gossip_accusation(id);
            }
            self.shorten_down_timer(now, id);
        }
    }

    /// A helper of the probe that raised the accusation against `id`
    /// confirms it if its own ping has gone unanswered for a probe period
    /// (the patience the prober had); if the accusation came sooner (sent
    /// straight), it looks again when that period is up. True if this node
    /// was added.
    fn confirm_as_helper(&mut self, now: Instant, id: NodeId, life: (u32, u16)) -> bool {
        let Some(sent) = self.suspicions.unanswered.get(&id).copied() else {
            return false;
        };
        let waited = now.saturating_duration_since(sent);
        if waited < self.config.probe_period {
            if let Entry::Vacant(check) = self.suspicions.checks.entry(id) {
                check.insert(None);
                self.timers
                    .schedule(sent + self.config.probe_period, TimerKind::ConfirmCheck(id));
            }
            return false;
        }
        if waited > self.config.suspicion_timeout(self.sized_for) {
            return false;
        }
        let me = self.identity.id;
        self.add_accusers(now, id, life, &[me])
    }

    /// A probe period has passed since this node, a helper, pinged `id`
    /// for an accuser: it confirms now if `id` still has not answered, and
    /// tells the accuser that sent it the accusation straight.
    pub(super) fn confirm_check(&mut self, now: Instant, id: NodeId) {
        let reply_to = self.suspicions.checks.remove(&id).flatten();
        let Some(life) = self.suspicions.by_member.get(&id).map(|a| a.life) else {
            return;
        };
        if self.confirm_as_helper(now, id, life) {
            self.gossip_accusation(id);
            self.shorten_down_timer(now, id);
            if let Some(addr) = reply_to {
                self.send_accusation(id, &[addr], false);
            }
        }
    }

    /// Merges `accusers` into what is known against `id`'s `life`; true if
    /// the list grew.
    fn add_accusers(
        &mut self,
        now: Instant,
        id: NodeId,
        life: (u32, u16),
        accusers: &[NodeId],
    ) -> bool {
        let cap = usize::from(self.config.suspicion_confirmations) + 1;
        let acc = self
            .suspicions
            .by_member
            .entry(id)
            .or_insert_with(|| Accusation {
                life,
                accusers: Vec::new(),
                grew: now,
                timer: None,
            });
        if life < acc.life {
            return false;
        }
        if life > acc.life {
            acc.life = life;
            acc.accusers.clear();
        }
        let before = acc.accusers.len();
        for a in accusers {
            if acc.accusers.len() >= cap {
                break;
            }
            if *a != id && !acc.accusers.contains(a) {
                acc.accusers.push(*a);
            }
        }
        let grew = acc.accusers.len() > before;
        if grew {
            acc.grew = now;
        }
        grew
    }

    /// Queues what is known against `id` for gossip.
    fn gossip_accusation(&mut self, id: NodeId) {
        let Some(acc) = self.suspicions.by_member.get(&id) else {
            return;
        };
        let item = Item::Suspect {
            id,
            bump: acc.life.0,
            incarnation: acc.life.1,
            accusers: acc.accusers.clone(),
        };
        let tx = self.transmissions();
        self.piggyback.add(&item, tx);
    }

    /// Sends what is known against `id` to `to`, in `Body::Accusation`
    /// datagrams (asking for confirmations back with `reply`).
    fn send_accusation(&mut self, id: NodeId, to: &[SocketAddr], reply: bool) {
        let Some(acc) = self.suspicions.by_member.get(&id) else {
            return;
        };
        let item = crate::wire::encode(&Item::Suspect {
            id,
            bump: acc.life.0,
            incarnation: acc.life.1,
            accusers: acc.accusers.clone(),
        });
        for addr in to {
            self.send_as(
                *addr,
                Body::Accusation { id, reply },
                SendKind::Accusation,
                true,
                Some(&item),
            );
        }
    }

    /// A prober sent its accusation of `id` straight here (its items were
    /// applied first): if this node confirmed it, it says so back.
    pub(super) fn answer_accusation(&mut self, from: SocketAddr, id: NodeId, reply: bool) {
        let me = self.identity.id;
        let confirmed = self
            .suspicions
            .by_member
            .get(&id)
            .is_some_and(|acc| acc.accusers.contains(&me));
        if reply && confirmed {
            self.send_accusation(id, &[from], false);
        } else if reply && let Some(reply_to) = self.suspicions.checks.get_mut(&id) {
            *reply_to = Some(from);
        }
    }

    /// Moves this node's down timer for `id` earlier if the confirmations
    /// now known allow.
    fn shorten_down_timer(&mut self, now: Instant, id: NodeId) {
        let me = self.identity.id;
        let Some(acc) = self.suspicions.by_member.get_mut(&id) else {
            return;
        };
        let Some(t) = acc.timer.as_mut() else {
            return;
        };
        if t.life != acc.life {
            return;
        }
        let others = acc.accusers.iter().filter(|a| **a != me).count();
        let at = (t.started + self.config.suspicion_after(self.sized_for, others)).max(now);
        if at >= t.at {
            return;
        }
        let Some(kind) = self.timers.take(t.token) else {
            return;
        };
        t.token = self.timers.schedule(at, kind);
        t.at = at;
        self.stats.suspicions_shortened += 1;
    }

    /// Forgets accusations of members no longer suspect whose lists have
    /// not grown for two full timeouts (and those of forgotten members).
    pub(super) fn prune_accusations(&mut self, now: Instant) {
        let full = self.config.suspicion_timeout(self.sized_for);
        self.suspicions
            .unanswered
            .retain(|_, sent| now.saturating_duration_since(*sent) <= full);
        let period = self.config.probe_period * 2;
        self.suspicions
            .asked
            .retain(|_, (at, _)| now.saturating_duration_since(*at) <= period);
        let keep = full * 2;
        let suspects = &self.suspects;
        let known = &self.records;
        let timers = &self.timers;
        self.suspicions.by_member.retain(|id, acc| {
            known.contains_key(id)
                && (suspects.contains(id)
                    || acc
                        .timer
                        .as_ref()
                        .is_some_and(|t| timers.is_pending(t.token))
                    || now.saturating_duration_since(acc.grew) < keep)
        });
    }

    /// Forgets what is known against `id` (declared down, or gone).
    pub(super) fn forget_accusation(&mut self, id: NodeId) {
        self.suspicions.by_member.remove(&id);
    }
}
