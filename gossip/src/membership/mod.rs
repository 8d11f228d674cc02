//! The membership state machine: foca's SWIM, wrapped in sealed datagrams,
//! with member metadata, join by address and graceful leave.
//!
//! [`Membership`] is the front. It owns one part per concern, routes every
//! input to them, and holds the outputs until the caller drains them; the
//! contract with the caller is on [`Membership`]: after every input, drain
//! [`Membership::poll_transmit`] and [`Membership::poll_event`] and ask
//! [`Membership::poll_timeout`]. Nothing here reads a clock or draws
//! unseeded randomness: `now` comes with every input and one seeded
//! generator, drawn from in a fixed order, makes every random choice.
//!
//! The parts, one file each, each opening with its own contract:
//!
//! - `swim.rs`, the foca driver: foca's notifications, timers and
//!   datagrams after every input, and this core kept in step with them;
//! - `datagram.rs`: sealing and opening, replay windows, the envelope
//!   (metadata version, application digest, piggybacked items);
//! - `join.rs`: join by address (hello, announce, retries with backoff),
//!   rejoin after isolation;
//! - `paging.rs`: copying a member's whole list page by page after joining,
//!   and serving such copies;
//! - `meta_sync.rs`: this node's metadata record and the copies of
//!   everyone else's, spread by gossip and pulled where gossip missed;
//! - `leaves.rs`: graceful leave, leave records, questions about downs no
//!   record explains;
//! - `range_sync.rs`: anti-entropy of the member list by range digests;
//! - `members.rs`: the per-member records and their pruning;
//! - `timers.rs`: one queue for foca's timers and this core's;
//! - `stats.rs`: counters ([`Stats`]);
//! - `outputs.rs`: the types handed to the caller ([`Event`],
//!   [`Transmit`], [`MemberInfo`]).
//!
//! docs/gossip.md describes the protocol these implement.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use foca::{Foca, PostcardCodec};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

use crate::config::{Config, ConfigError};
use crate::meta::{MemberMeta, MetaShare, MetaUpdate};
use crate::packed::Packed;
use crate::piggyback::Piggyback;
use crate::seal::{DropReason, PacketSecurity};
use crate::wire::{Body, Envelope, Item};
use crate::{Instant, NodeId, NodeIdentity};

mod datagram;
mod join;
mod leaves;
mod locality;
mod members;
mod meta_sync;
mod outputs;
mod paging;
mod range_sync;
mod reach;
mod stats;
mod suspicion;
mod swim;
mod timers;

pub use leaves::LEAVE_QUERIES;
pub use locality::PROBE_PICKS;
pub use outputs::{DownReason, Event, MemberInfo, MemberState, Transmit};
pub use reach::{DOWN_LASTS, DcReach, Reach, SILENT_CHECK_AFTER, UNREACHABLE_AFTER};
pub use stats::{RttHistogram, Stats};
pub use timers::TimerToken;

use datagram::{AppDigest, Datagrams};
use join::JoinState;
use leaves::Leaves;
use members::{HOUSEKEEPING_PERIOD, Record};
use meta_sync::{Metas, check_meta_size};
use paging::Paging;
use range_sync::RangeSync;
use stats::Probes;
use swim::{SwimNode, release_spare};
use timers::{TimerKind, Timers};

/// Metadata that does not fit in a datagram.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "member metadata is {size} bytes encoded, more than the {max} that fit in a gossip datagram; use fewer or shorter labels"
)]
pub struct MetaTooLarge {
    /// Encoded size.
    pub size: usize,
    /// Limit.
    pub max: usize,
}

/// A note [`Membership::send_note`] cannot send.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// The member is not up as this node sees it (unknown, failed or left).
    #[error("member {0} is not up here; a note goes only to a live member")]
    NotUp(NodeId),
    /// The note does not fit in one datagram.
    #[error(
        "a note of {size} bytes does not fit in a gossip datagram (at most {max}); send it over RPC"
    )]
    TooLarge {
        /// Its size.
        size: usize,
        /// The most a note can have.
        max: usize,
    },
}

/// Something [`Membership::new`] cannot start with.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum NewError {
    /// A configuration value out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Metadata too large.
    #[error(transparent)]
    Meta(#[from] MetaTooLarge),
}

/// SWIM membership of one node, as a state machine.
///
/// Inputs: [`handle_datagram`](Self::handle_datagram),
/// [`handle_timer`](Self::handle_timer), [`join`](Self::join),
/// [`leave`](Self::leave), [`set_meta`](Self::set_meta). After **every**
/// input the caller drains [`poll_transmit`](Self::poll_transmit) (send each
/// datagram), [`poll_event`](Self::poll_event), and asks
/// [`poll_timeout`](Self::poll_timeout) for the next wake-up; then it calls
/// [`handle_timer`](Self::handle_timer) with that token once its clock
/// reaches the instant. Tokens of cancelled timers are ignored.
pub struct Membership {
    config: Config,
    // This node.
    identity: NodeIdentity,
    meta: Arc<MemberMeta>,
    meta_version: u32,
    /// The version of this node's last change other than its free class.
    meta_base: u32,
    started: Instant,
    left: bool,
    // SWIM and the foca driver (swim.rs).
    swim: SwimNode,
    runtime: swim::SwimRuntime,
    /// The size class foca is tuned for.
    sized_for: usize,
    /// Sender of the datagram being handled.
    current_from: Option<SocketAddr>,
    /// Set while `restore` hands foca its list: becoming connected then
    /// copies no member list.
    restoring: bool,
    /// Every random choice of this core (foca has its own, seeded from it).
    rng: ChaCha8Rng,
    // The parts.
    records: Packed<NodeId, Record>,
    /// Members up that were last seen suspect (see
    /// [`Event::SuspicionChanged`]).
    suspects: std::collections::BTreeSet<NodeId>,
    /// Since when each of them has been suspect here, as housekeeping
    /// saw it (see `members.rs`, `tell_long_suspects`).
    suspect_since: std::collections::BTreeMap<NodeId, Instant>,
    /// Who accused each suspect (Lifeguard's confirmations, `suspicion.rs`).
    suspicions: suspicion::Suspicions,
    /// Lifeguard's local health score (`swim.rs`, `health_worse`).
    health: u8,
    /// The other members up in each datacenter (`locality.rs`), rebuilt
    /// at each housekeeping pass.
    peers: std::collections::BTreeMap<String, Vec<NodeId>>,
    /// Members asked to probe in place of foca's helpers (`locality.rs`).
    relays: Vec<locality::Relay>,
    /// The probe in flight, if it only checks a datacenter's reach.
    reach_probe: Option<locality::ReachProbe>,
    /// Which datacenters this node reaches (`reach.rs`).
    reach: reach::Reach,
    datagrams: Datagrams,
    app_digest: AppDigest,
    piggyback: Piggyback,
    join: JoinState,
    paging: Paging,
    metas: Metas,
    leaves: Leaves,
    range_sync: RangeSync,
    timers: Timers,
    stats: Stats,
    probes: Probes,
    /// Nodes forgotten for good: their datagrams are dropped, and a life
    /// of theirs that comes up is declared down at once.
    forgotten: std::collections::BTreeSet<NodeId>,
    // Outputs, until drained.
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl core::fmt::Debug for Membership {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Membership")
            .field("identity", &self.identity)
            .field("members", &self.records.len())
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// A node that knows no one yet. `seed` drives every random choice
    /// (probe order, gossip targets, nonce salts): same seed, same inputs,
    /// same outputs.
    pub fn new(
        now: Instant,
        identity: NodeIdentity,
        meta: MemberMeta,
        config: Config,
        security: PacketSecurity,
        seed: u64,
    ) -> Result<Membership, NewError> {
        config.validate()?;
        check_meta_size(&meta)?;
        let mut root = ChaCha8Rng::seed_from_u64(seed);
        let swim_rng = ChaCha8Rng::seed_from_u64(root.next_u64());
        let swim = Foca::new(identity.clone(), config.foca(1), swim_rng, PostcardCodec);
        let mut m = Membership {
            config,
            identity,
            meta: Arc::new(meta),
            meta_version: 1,
            meta_base: 1,
            started: now,
            left: false,
            swim,
            runtime: swim::SwimRuntime::default(),
            sized_for: 1,
            current_from: None,
            restoring: false,
            rng: root,
            records: Packed::default(),
            suspects: std::collections::BTreeSet::new(),
            suspect_since: std::collections::BTreeMap::new(),
            suspicions: suspicion::Suspicions::default(),
            health: 0,
            peers: std::collections::BTreeMap::new(),
            relays: Vec::new(),
            reach_probe: None,
            reach: reach::Reach::default(),
            datagrams: Datagrams::new(security),
            app_digest: AppDigest::default(),
            piggyback: Piggyback::default(),
            join: JoinState::default(),
            paging: Paging::default(),
            metas: Metas::default(),
            leaves: Leaves::default(),
            range_sync: RangeSync::default(),
            timers: Timers::default(),
            stats: Stats::default(),
            probes: Probes::default(),
            forgotten: std::collections::BTreeSet::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        m.publish_own_meta();
        let cursor = m.rng.random();
        m.range_sync.start_at(cursor);
        m.timers
            .schedule(now + m.config.meta_sync_period, TimerKind::MetaSync);
        m.timers
            .schedule(now + HOUSEKEEPING_PERIOD, TimerKind::Housekeeping);
        m.timers
            .schedule(now + m.config.member_digest_period, TimerKind::MemberDigest);
        Ok(m)
    }

    /// This node's current identity (its `bump` changes on a rejoin).
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// This node's metadata.
    pub fn meta(&self) -> &Arc<MemberMeta> {
        &self.meta
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters since start.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether at least one other member is known alive.
    pub fn is_connected(&self) -> bool {
        self.swim.num_members() > 0
    }

    /// Other members known alive or suspect.
    pub fn num_active(&self) -> usize {
        self.swim.num_members()
    }

    /// Joins the cluster of any of `peers` (gossip addresses). Retries with
    /// backoff until one answers; reports each retry as
    /// [`Event::JoinRetry`]. With no peers this node founds a cluster and
    /// waits for others to join it.
    pub fn join(&mut self, now: Instant, peers: &[SocketAddr]) {
        self.start_join(now, peers, false);
    }

    /// Takes `members` (and their metadata records, where known) as known
    /// alive, as a member list copied at join is taken: copied knowledge,
    /// not news, so nothing is re-broadcast and no join is announced. For a
    /// node that starts among members already known to be up, such as the
    /// simulator's warm start (a cluster formed long ago, its join news
    /// long settled). Entries for this node itself are skipped; records
    /// not newer than those held are ignored; members this node does not
    /// get records for are pulled as after a join.
    pub fn restore(&mut self, now: Instant, members: &[(NodeIdentity, Option<MetaUpdate>)]) {
        if self.left {
            return;
        }
        let others = members
            .iter()
            .filter(|(identity, _)| identity.id != self.identity.id)
            .map(|(identity, _)| foca::Member::alive(identity.clone()));
        self.restoring = true;
        let _ = self.swim.apply_many(others, false, &mut self.runtime);
        // Records after the members: a record is held for a member that is
        // up (its `MemberUp` marks it wanted, the record then satisfies it).
        self.drain_swim(now);
        self.restoring = false;
        for (_, meta) in members {
            if let Some(update) = meta {
                self.apply_item(now, Item::Meta(Box::new(update.clone())), false);
            }
        }
        self.pack_tables();
    }

    /// Leaves the cluster: tells several members that this node is going
    /// away, so that everyone records it as `left` rather than `failed`.
    /// The node should stop after draining the transmits.
    pub fn leave(&mut self, now: Instant) {
        self.say_goodbye(now);
    }

    /// Replaces this node's metadata; the change spreads by gossip.
    pub fn set_meta(&mut self, _now: Instant, meta: MemberMeta) -> Result<(), MetaTooLarge> {
        check_meta_size(&meta)?;
        self.change_own_meta(meta);
        Ok(())
    }

    /// Sets the 8-byte summary of this node's replicated state that every
    /// datagram carries (0: none). Members whose digest differs are
    /// reported as [`Event::DigestDiffers`].
    pub fn set_app_digest(&mut self, digest: u64) {
        self.app_digest.own = digest;
    }

    /// Handles one datagram received on the gossip socket from `from`.
    /// Anything that is not a valid, fresh, authentic datagram of this
    /// cluster is dropped and counted in [`Stats::dropped`]; this never
    /// panics on input.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Some((header, plaintext)) = self.open(datagram) else {
            return;
        };
        let envelope: Envelope<'_> = match postcard::from_bytes(&plaintext) {
            Ok(e) => e,
            Err(_) => return self.stats.count_drop(DropReason::Decode),
        };
        if self.left {
            return;
        }
        for raw in &envelope.items {
            match postcard::from_bytes::<Item>(raw) {
                Ok(Item::Digest {
                    start,
                    len,
                    digests,
                }) => self.answer_member_digest(now, from, start, len, &digests),
                Ok(item) => self.apply_item(now, item, true),
                Err(_) => self.stats.count_drop(DropReason::Decode),
            }
        }
        // After the items: a newcomer's first datagram may carry its record.
        self.reach_heard(now, header.sender);
        match envelope.body {
            Body::Swim(bytes) => {
                let relayed = self.as_from_helper(bytes);
                let bytes = relayed.as_deref().unwrap_or(bytes);
                // foca ignores, saying nothing, a payload addressed to
                // another identity (an older life of this node; a gossip
                // datagram readdressed wrong, `locality.rs`): counted.
                if !self.addressed_here(bytes)
                    || self.swim.handle_data(bytes, &mut self.runtime).is_err()
                {
                    self.stats.count_drop(DropReason::Swim);
                }
            }
            Body::Hello { identity: _ } => self.answer_hello(from),
            Body::HelloAck { identity } => self.on_hello_ack(from, identity),
            Body::MetaRequest { ids } => self.answer_meta_request(from, &ids),
            Body::LeaveQuery { ids } => self.answer_leave_query(from, &ids),
            Body::LeaveAnswer { leaves } => {
                for (id, bump) in leaves {
                    self.apply_item(now, Item::Leave { id, bump }, false);
                }
            }
            Body::MembersRequest { after } => self.answer_members_request(now, from, after),
            Body::MembersPage { members, done } => self.on_members_page(now, from, members, done),
            Body::MemberDigest {
                start,
                len,
                digests,
            } => self.answer_member_digest(now, from, start, len, &digests),
            Body::MemberRanges {
                ranges,
                members,
                down,
                reply,
            } => self.on_member_ranges(now, from, &ranges, members, down, reply),
            Body::Suspected {
                identity,
                incarnation,
            } => self.on_suspected(&identity, incarnation),
            Body::Note(note) => self.events.push_back(Event::Note {
                from: header.sender,
                note: note.to_vec(),
            }),
            Body::Accusation { id, reply } => self.answer_accusation(from, id, reply),
            Body::MetaResponse { updates } => {
                for update in updates {
                    self.apply_item(now, Item::Meta(Box::new(update)), false);
                }
            }
        }
        let sender_meta = (
            envelope.meta_version,
            envelope.meta_base,
            envelope.free_class,
        );
        self.check_sender_meta(now, &header, sender_meta, from);
        self.check_sender_digest(now, header.sender, envelope.app_digest);
        self.current_from = Some(from);
        self.drain_swim(now);
        self.current_from = None;
    }

    /// Sends `note` to member `to` in a datagram of its own, piggybacked
    /// items filling the rest: for small messages between the callers of
    /// two memberships that may be lost (a usage report), where a
    /// connection would cost more than the message. The receiver's caller
    /// gets it as [`Event::Note`]; nothing is acknowledged or sent again.
    pub fn send_note(&mut self, to: NodeId, note: &[u8]) -> Result<(), NoteError> {
        let max = self.max_note_bytes();
        if note.len() > max {
            return Err(NoteError::TooLarge {
                size: note.len(),
                max,
            });
        }
        let addr = match self.records.get(&to) {
            Some(r) if to != self.identity.id && !self.left && self.range_sync.holds_up(to) => {
                r.identity.gossip_addr()
            }
            _ => return Err(NoteError::NotUp(to)),
        };
        self.send(addr, Body::Note(note), true);
        Ok(())
    }

    /// The largest note [`send_note`](Self::send_note) takes.
    pub fn max_note_bytes(&self) -> usize {
        self.config
            .max_datagram_bytes
            .saturating_sub(crate::seal::SEAL_OVERHEAD + crate::config::ENVELOPE_OVERHEAD)
    }

    /// Replaces the keys datagrams are sealed and opened with (a keyring
    /// change: `shoal keyring install|use|remove`). Takes effect with the
    /// next datagram.
    pub fn set_security(&mut self, security: PacketSecurity) {
        self.datagrams.security = security;
    }

    /// The keys datagrams are sealed and opened with.
    pub fn security(&self) -> &PacketSecurity {
        &self.datagrams.security
    }

    /// Sets the nodes forgotten for good (`shoal node forget`, from the
    /// replicated state): from now on their datagrams are dropped (counted
    /// as [`DropReason::Forgotten`](crate::DropReason::Forgotten)), the
    /// lives of theirs held up are declared down (and that news spread),
    /// and any life of theirs that comes up later, told by a member that
    /// has not heard yet, is declared down at once. This node's own id is
    /// ignored: a node does not drop itself.
    pub fn set_forgotten(&mut self, now: Instant, mut ids: std::collections::BTreeSet<NodeId>) {
        ids.remove(&self.identity.id);
        let held: Vec<NodeIdentity> = self
            .swim
            .iter_membership_state()
            .filter(|m| ids.contains(&m.id().id) && m.state() != foca::State::Down)
            .map(|m| m.id().clone())
            .collect();
        self.forgotten = ids;
        self.declare_down(held);
        self.drain_swim(now);
    }

    /// Declares these lives down, as news to spread.
    pub(super) fn declare_down(&mut self, lives: Vec<NodeIdentity>) {
        if lives.is_empty() {
            return;
        }
        let _ = self.swim.apply_many(
            lives.into_iter().map(foca::Member::down),
            true,
            &mut self.runtime,
        );
    }

    /// Shares this membership's copies of other members' records with the
    /// other memberships of the process that are handed the same `share`
    /// (the simulator's: thousands of nodes in one process). Records
    /// already held stay private copies.
    pub fn share_metas(&mut self, share: Arc<dyn MetaShare>) {
        self.metas.share = Some(share);
    }

    /// Fires the timer `token` (from [`poll_timeout`](Self::poll_timeout)).
    /// A token that was already fired or cancelled is ignored.
    pub fn handle_timer(&mut self, now: Instant, token: TimerToken) {
        let Some(kind) = self.timers.take(token) else {
            return;
        };
        match kind {
            TimerKind::Swim(timer) => self.fire_swim_timer(now, timer),
            TimerKind::JoinRetry => self.join_retry(now),
            TimerKind::MemberSyncRetry(page) => self.member_sync_retry(now, page),
            TimerKind::MemberSyncFollowUp(previous) => self.member_sync_follow_up(now, previous),
            TimerKind::MetaSync => {
                self.meta_sync(now);
                self.timers
                    .schedule(now + self.config.meta_sync_period, TimerKind::MetaSync);
            }
            TimerKind::Housekeeping => {
                self.housekeeping(now);
                self.timers
                    .schedule(now + HOUSEKEEPING_PERIOD, TimerKind::Housekeeping);
            }
            TimerKind::ConfirmCheck(id) => self.confirm_check(now, id),
            TimerKind::MemberDigest => {
                self.member_digest_due();
                self.timers.schedule(
                    now + self.config.member_digest_period,
                    TimerKind::MemberDigest,
                );
            }
        }
        self.drain_swim(now);
    }

    /// The next datagram to send, if any. Drain after every input.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let next = self.transmits.pop_front();
        if next.is_none() {
            release_spare(&mut self.transmits);
        }
        next
    }

    /// The next event, if any. Drain after every input.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        let next = self.events.pop_front();
        if next.is_none() {
            release_spare(&mut self.events);
        }
        next
    }

    /// When to call [`handle_timer`](Self::handle_timer) next, and with
    /// which token. Ask again after every input: an earlier timer may have
    /// been added.
    #[must_use]
    pub fn poll_timeout(&mut self) -> Option<(Instant, TimerToken)> {
        self.timers.peek()
    }

    /// Every member this node knows, itself included, ordered by id.
    pub fn members(&self) -> Vec<MemberInfo> {
        let mut out: Vec<MemberInfo> = self
            .swim
            .iter_membership_state()
            .map(|m| self.info_of(m))
            .collect();
        out.push(self.local_info());
        out.sort_by_key(|m| m.identity.id);
        out
    }

    /// One member (or this node) by id.
    pub fn member(&self, id: NodeId) -> Option<MemberInfo> {
        if id == self.identity.id {
            return Some(self.local_info());
        }
        self.swim
            .iter_membership_state()
            .find(|m| m.id().id == id)
            .map(|m| self.info_of(m))
    }

    /// The metadata of a member that is up (alive or suspect; not failed
    /// or left), or of this node; `None` while its record is missing.
    /// O(log N): for callers that follow changes member by member.
    pub fn up_meta(&self, id: NodeId) -> Option<&Arc<MemberMeta>> {
        if id == self.identity.id {
            return (!self.left).then_some(&self.meta);
        }
        if !self.range_sync.holds_up(id) {
            return None;
        }
        self.metas.held.get(&id).map(|r| &r.meta)
    }

    /// The state of member `id` (or of this node) as this node sees it, in
    /// O(log N); `None` for a member it holds no record of. The same as
    /// [`members`](Self::members) shows, but that a suspicion heard by
    /// gossip shows here at the next pass over the member list (see
    /// [`Event::SuspicionChanged`]), and that a member known only as down,
    /// never seen up, has no record.
    pub fn member_state(&self, id: NodeId) -> Option<MemberState> {
        if id == self.identity.id {
            return Some(if self.left {
                MemberState::Left
            } else {
                MemberState::Alive
            });
        }
        let record = self.records.get(&id)?;
        Some(if self.range_sync.holds_up(id) {
            if self.suspects.contains(&id) {
                MemberState::Suspect
            } else {
                MemberState::Alive
            }
        } else if self.leaves.has_left(&record.identity) {
            MemberState::Left
        } else {
            MemberState::Failed
        })
    }

    /// The metadata record held for member `id` (or this node's), whatever
    /// its state; O(log N).
    pub fn member_meta(&self, id: NodeId) -> Option<&Arc<MemberMeta>> {
        if id == self.identity.id {
            return Some(&self.meta);
        }
        self.metas.held.get(&id).map(|r| &r.meta)
    }

    /// This node as a member.
    pub fn local_info(&self) -> MemberInfo {
        MemberInfo {
            identity: self.identity.clone(),
            state: if self.left {
                MemberState::Left
            } else {
                MemberState::Alive
            },
            incarnation: 0,
            meta: Some(self.meta.clone()),
            meta_version: Some((self.identity.bump, self.meta_version)),
            first_seen: self.started,
            state_since: self.started,
            local: true,
        }
    }

    /// Number of records waiting in the piggyback queue (for tests).
    #[doc(hidden)]
    pub fn piggyback_backlog(&self) -> usize {
        self.piggyback.len()
    }
}
