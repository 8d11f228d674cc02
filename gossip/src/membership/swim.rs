//! Driving foca: what SWIM produced, after every input, turned into
//! datagrams, timers and events, and this core's state kept in step with
//! it.
//!
//! foca owns the member list and SWIM's decisions (probes, suspicions,
//! dissemination); it writes its outputs into an `AccumulatingRuntime`.
//! After every input the front calls [`Membership::drain_swim`], which
//! takes foca's notifications first (members up, down, renamed; connected,
//! isolated; probe timings), re-tunes foca when the cluster's size class
//! changed, schedules its timers, and seals its datagrams (topped up with
//! piggybacked items). The contract: nothing foca produced is left in the
//! runtime once an input has been handled, and every member-state change
//! foca notifies reaches the other parts (`members.rs`, `range_sync.rs`,
//! `meta_sync.rs`, `leaves.rs`, `paging.rs`, `join.rs`) before the next
//! input. One exception to passing foca's datagrams on: a "you are down"
//! (`TurnUndead`) to a member this node holds up is dropped (see
//! docs/gossip.md, "A refuted suspicion stays harmless").

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::SocketAddr;

use foca::{
    Foca, Message, NoCustomBroadcast, Notification, OwnedNotification, PostcardCodec, Runtime,
    Timer,
};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use crate::config::Config;
use crate::kind::SendKind;
use crate::wire::Body;
use crate::{Instant, NodeIdentity};

use super::timers::TimerKind;
use super::{DownReason, Event, Membership};

/// foca as this crate runs it: postcard-encoded, seeded ChaCha8, no custom
/// broadcasts (this core piggybacks its own items).
pub(super) type SwimNode = Foca<NodeIdentity, PostcardCodec, ChaCha8Rng, NoCustomBroadcast>;

/// Room an empty output queue may keep; past it, the room of a burst is
/// given back (it is O(N) after a join, and a process may run thousands of
/// memberships: the simulator).
const SPARE_QUEUE: usize = 256;

/// Gives back the room of a burst once `queue` is empty.
pub(super) fn release_spare<T>(queue: &mut VecDeque<T>) {
    if queue.capacity() > SPARE_QUEUE {
        queue.shrink_to_fit();
    }
}

/// What foca produced for one input, in the order it happened: foca's
/// `AccumulatingRuntime`, with its queues open to this core, so that a
/// probe round can take back a probe it moves (locality.rs).
#[derive(Default)]
pub(super) struct SwimRuntime {
    pub(super) sends: VecDeque<(NodeIdentity, Vec<u8>)>,
    pub(super) timers: VecDeque<(core::time::Duration, Timer<NodeIdentity>)>,
    pub(super) notes: VecDeque<OwnedNotification<NodeIdentity>>,
}

impl Runtime<NodeIdentity> for SwimRuntime {
    fn notify(&mut self, notification: Notification<'_, NodeIdentity>) {
        self.notes.push_back(notification.to_owned());
    }

    fn send_to(&mut self, to: NodeIdentity, data: &[u8]) {
        self.sends.push_back((to, data.to_vec()));
    }

    fn submit_after(&mut self, event: Timer<NodeIdentity>, after: core::time::Duration) {
        self.timers.push_back((after, event));
    }
}

impl Membership {
    /// Turns what foca produced into datagrams, timers and events.
    pub(super) fn drain_swim(&mut self, now: Instant) {
        let mut drained = 0;
        while let Some(notification) = self.runtime.notes.pop_front() {
            self.on_notification(now, notification);
            drained += 1;
        }
        self.resize();
        while let Some((after, timer)) = self.runtime.timers.pop_front() {
            self.schedule_swim_timer(now, after, timer);
            drained += 1;
        }
        while let Some((to, foca_data)) = self.runtime.sends.pop_front() {
            drained += 1;
            let kind = SendKind::of(&Body::Swim(&foca_data));
            let (to, data) = match self.localize(kind, &to, &foca_data) {
                Some((peer, readdressed)) => (peer, Cow::Owned(readdressed)),
                None => (to, Cow::Borrowed(&foca_data[..])),
            };
            let body = Body::Swim(&data);
            if kind == SendKind::TurnUndead && self.is_up(&to) {
                // foca 2.0.0 sends "you are down" when a suspicion times
                // out even if the member refuted it meanwhile (its
                // down-timer finds a newer incarnation, declares nothing,
                // and still notifies); the member would then give up its
                // identity and rejoin, and the whole cluster would learn
                // a new life of a node that never failed. A member this
                // node holds up was not declared down: nothing to say.
                self.stats.turn_undead_suppressed += 1;
                // This node's accusation was wrong.
                self.health_worse();
                continue;
            }
            // A due range-digest round rides on the next probe.
            let lead = if kind == SendKind::Ping {
                self.digest_for_probe()
            } else {
                None
            };
            self.send_as(to.gossip_addr(), body, kind, true, lead.as_deref());
        }
        // The runtime's queues keep the room of their largest burst (a
        // member list copied at join: one notification per member); an
        // empty runtime is swapped for a fresh one rather than keep it.
        if drained > SPARE_QUEUE {
            self.runtime = SwimRuntime::default();
        }
        self.pack_tables();
    }

    /// Hands foca one of its timers; a member it then removes for good is
    /// forgotten by every part.
    pub(super) fn fire_swim_timer(&mut self, now: Instant, timer: Timer<NodeIdentity>) {
        let removed = match &timer {
            Timer::RemoveDown(id) => Some(id.id),
            Timer::ProbeRandomMember(_) => return self.probe_round(now, timer),
            Timer::SendIndirectProbe { .. } => return self.indirect_round(timer),
            _ => None,
        };
        let _ = self.swim.handle_timer(timer, &mut self.runtime);
        if let Some(id) = removed {
            self.forget_if_gone(id);
        }
    }

    /// Applies one of foca's notifications to the other parts.
    fn on_notification(&mut self, now: Instant, n: OwnedNotification<NodeIdentity>) {
        match n {
            OwnedNotification::MemberUp(identity) => {
                let id = identity.id;
                self.suspects.remove(&id);
                self.mark_up(now, &identity).state_since = now;
                self.leaves.unexplained.remove(&id);
                if self.meta_is_stale(id) {
                    self.want_meta(now, id);
                    // Whoever told us about the member likely has its record.
                    if let (Some(from), Some(want)) =
                        (self.current_from, self.metas.wanted.get_mut(&id))
                        && want.hint.is_none()
                        && from != identity.gossip_addr()
                    {
                        want.hint = Some(from);
                    }
                }
                let forgotten = self.forgotten.contains(&id);
                self.events.push_back(Event::MemberUp {
                    identity: identity.clone(),
                });
                if forgotten {
                    // Told by a member that has not heard of the forget:
                    // down again at once (the event pair keeps every
                    // part's bookkeeping the same as for any member).
                    self.declare_down(vec![identity]);
                }
            }
            OwnedNotification::MemberDown(identity) => {
                self.suspects.remove(&identity.id);
                self.forget_accusation(identity.id);
                if let Some(r) = self.records.get_mut(&identity.id) {
                    r.state_since = now;
                }
                self.range_sync.went_down(&identity, now);
                let reason = if self.leaves.has_left(&identity) {
                    DownReason::Left
                } else {
                    DownReason::Failed
                };
                if reason == DownReason::Failed {
                    self.explain_down(now, identity.id);
                    self.reach_member_failed(now, identity.id);
                }
                self.events
                    .push_back(Event::MemberDown { identity, reason });
            }
            OwnedNotification::Rename(old, new) => {
                let id = new.id;
                self.mark_up(now, &new);
                if self.meta_is_stale(id) {
                    self.want_meta(now, id);
                }
                let forgotten = self.forgotten.contains(&id);
                self.events.push_back(Event::MemberRenewed {
                    old,
                    new: new.clone(),
                });
                if forgotten {
                    self.declare_down(vec![new]);
                }
            }
            OwnedNotification::Active => {
                // Newly connected: copy a member's whole list, since SWIM's
                // feed only carries what fits in one datagram. A restored
                // list is whole already (range digests repair what it
                // lacks).
                let peer = if self.restoring {
                    None
                } else {
                    self.join.acked_by.or_else(|| {
                        self.swim
                            .iter_members()
                            .next()
                            .map(|m| m.id().gossip_addr())
                    })
                };
                if let Some(peer) = peer {
                    self.start_member_sync(now, peer);
                }
                // Being connected is not enough to stop joining: a node whose
                // own join was lost may be joined *by* another newcomer, and
                // the two would form a cluster of their own. Joining ends when
                // a join peer is known alive (see `joined_a_peer`).
                self.events.push_back(Event::Connected);
            }
            OwnedNotification::Idle => {
                self.events.push_back(Event::Isolated);
                if !self.left {
                    self.rejoin_after_isolation(now);
                }
            }
            // Leaving makes foca defunct on purpose: not news.
            OwnedNotification::Defunct if self.left => {}
            OwnedNotification::Defunct => self.events.push_back(Event::Defunct),
            OwnedNotification::Rejoin(identity) => {
                self.identity = identity.clone();
                self.meta_version = 1;
                self.meta_base = 1;
                self.publish_own_meta();
                self.events.push_back(Event::IdentityRenewed { identity });
            }
            OwnedNotification::DataSent(header) => match header.message {
                Message::Ping(n) => self.probes.sent(now, header.dst.id, n),
                Message::IndirectPing { .. } => {
                    self.suspicions.indirect_ping_sent(now, header.dst.id);
                }
                Message::PingReq { target, .. } => {
                    let helper = header.dst.gossip_addr();
                    self.suspicions.asked_to_probe(now, target.id, helper);
                }
                _ => {}
            },
            OwnedNotification::DataReceived(header) => {
                self.suspicions.heard_from(header.src.id);
                self.reach_probe_answered(&header);
                if let Message::Ack(n) = header.message
                    && self.probes.answered(now, header.src.id, n, &mut self.stats)
                {
                    self.health_better();
                }
            }
            OwnedNotification::ProbeFailed(_, identity) => {
                self.stats.probe_failures += 1;
                self.reach_probe_failed(now, identity.id);
                self.check_suspect(identity.id);
            }
        }
    }

    /// Retunes foca when the cluster size moved by a factor of two: the
    /// suspicion timeout and the number of re-transmissions grow with
    /// log(N). Done at once, so that the news of a join storm is sent often
    /// enough to reach everyone.
    fn resize(&mut self) {
        let class = Config::size_class(self.swim.num_members() + 1);
        if class != self.sized_for && self.swim.set_config(self.config.foca(class)).is_ok() {
            self.sized_for = class;
        }
    }

    /// Schedules one of foca's timers: the probe timers stretched by local
    /// health, a suspect's down timer as an accusation (suspicion.rs).
    fn schedule_swim_timer(
        &mut self,
        now: Instant,
        after: core::time::Duration,
        timer: Timer<NodeIdentity>,
    ) {
        if matches!(
            timer,
            Timer::ProbeRandomMember(_) | Timer::SendIndirectProbe { .. }
        ) {
            // Local health stretches the probe period and the probe rtt.
            let stretch = 1 + u32::from(self.health);
            self.timers
                .schedule(now + after * stretch, TimerKind::Swim(timer));
        } else {
            self.schedule_down_timer(now, after, timer);
        }
    }

    /// Lifeguard's local health: this node was wrong or slow (an accusation
    /// of its was refuted, or it was accused itself). Its probing stretches:
    /// foca's probe timers are scheduled `1 + score` times later
    /// (`schedule_swim_timer`; foca takes no new probe period or rtt once
    /// started).
    pub(super) fn health_worse(&mut self) {
        if self.health < self.config.max_local_health {
            self.health += 1;
            self.note_health();
        }
    }

    /// One of this node's probes was answered in time.
    fn health_better(&mut self) {
        if self.health > 0 {
            self.health -= 1;
            self.note_health();
        }
    }

    fn note_health(&mut self) {
        self.stats.local_health = self.health;
        self.stats.local_health_max = self.stats.local_health_max.max(self.health);
    }

    /// How many datagrams a piggybacked item rides on, for the size class
    /// foca is tuned for.
    pub(super) fn transmissions(&self) -> u8 {
        self.config.max_transmissions(self.sized_for)
    }

    /// A random member that is up (other than `except`: the one after it
    /// when it is drawn), uniformly, without copying the member list.
    /// (A draw in O(log N) from the up index would favour members after wide
    /// gaps of the position space.)
    pub(super) fn random_up(&mut self, except: Option<SocketAddr>) -> Option<SocketAddr> {
        let n = self.swim.num_members();
        if n == 0 {
            return None;
        }
        let pick = self.rng.random_range(0..n);
        let members = || self.swim.iter_members().map(|m| m.id().gossip_addr());
        members()
            .skip(pick)
            .chain(members().take(pick))
            .find(|addr| Some(*addr) != except)
    }
}
