//! The membership state machine: foca's SWIM, wrapped in sealed datagrams,
//! with member metadata, join by address and graceful leave.

use core::time::Duration;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use foca::{
    AccumulatingRuntime, Foca, Message, NoCustomBroadcast, OwnedNotification, PostcardCodec, State,
    Timer,
};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

use crate::config::{Config, ConfigError};
use crate::kind::SendKind;
use crate::meta::{MemberMeta, MetaShare, MetaUpdate};
use crate::packed::Packed;
use crate::piggyback::Piggyback;
use crate::seal::{self, DropReason, PacketSecurity, ReplayWindow, SEAL_OVERHEAD, SealHeader};
use crate::wire::{self, Body, Envelope, Item};
use crate::{Instant, NodeId, NodeIdentity};

mod leaves;
mod meta_sync;
mod outputs;
mod paging;
mod range_sync;
mod stats;
mod timers;

pub use leaves::LEAVE_QUERIES;
pub use outputs::{DownReason, Event, MemberInfo, MemberState, Transmit};
pub use stats::{RttHistogram, Stats};
pub use timers::TimerToken;

use leaves::Leaves;
use meta_sync::{Metas, check_meta_size};
use paging::Paging;
use range_sync::RangeSync;
use stats::Probes;
use timers::{TimerKind, Timers};

type SwimNode = Foca<NodeIdentity, PostcardCodec, ChaCha8Rng, NoCustomBroadcast>;

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

#[derive(Debug)]
struct Record {
    identity: NodeIdentity,
    first_seen: Instant,
    state_since: Instant,
}

#[derive(Debug, Default)]
struct JoinState {
    peers: Vec<SocketAddr>,
    /// The join peer that answered our hello.
    acked_by: Option<SocketAddr>,
    active: bool,
    /// Reconnecting after isolation: any live member ends it. Otherwise a
    /// join peer must be alive (see `joined_a_peer`).
    reconnect: bool,
    attempt: u32,
    delay: Duration,
}

/// Room an empty output queue may keep; past it, the room of a burst is
/// given back (it is O(N) after a join, and a process may run thousands of
/// memberships: the simulator).
const SPARE_QUEUE: usize = 256;
/// How often the housekeeping timer runs.
const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(5);

/// Gives back the room of a burst once `queue` is empty.
fn release_spare<T>(queue: &mut VecDeque<T>) {
    if queue.capacity() > SPARE_QUEUE {
        queue.shrink_to_fit();
    }
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
    identity: NodeIdentity,
    meta: Arc<MemberMeta>,
    meta_version: u32,
    /// The version of this node's last change other than its free class.
    meta_base: u32,
    app_digest: u64,
    digest_reported: BTreeMap<NodeId, Instant>,
    swim: SwimNode,
    runtime: AccumulatingRuntime<NodeIdentity>,
    rng: ChaCha8Rng,
    security: PacketSecurity,
    seq: u64,
    replay: BTreeMap<NodeId, ReplayWindow>,
    records: Packed<NodeId, Record>,
    range_sync: RangeSync,
    metas: Metas,
    leaves: Leaves,
    piggyback: Piggyback,
    timers: Timers,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    join: JoinState,
    probes: Probes,
    paging: Paging,
    /// Sender of the datagram being handled.
    current_from: Option<SocketAddr>,
    /// Set while `restore` hands foca its list: becoming connected then
    /// copies no member list.
    restoring: bool,
    stats: Stats,
    sized_for: usize,
    started: Instant,
    left: bool,
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
            app_digest: 0,
            digest_reported: BTreeMap::new(),
            swim,
            runtime: AccumulatingRuntime::new(),
            rng: root,
            security,
            seq: 0,
            replay: BTreeMap::new(),
            records: Packed::default(),
            range_sync: RangeSync::default(),
            metas: Metas::default(),
            leaves: Leaves::default(),
            piggyback: Piggyback::default(),
            timers: Timers::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            join: JoinState::default(),
            probes: Probes::default(),
            paging: Paging::default(),
            current_from: None,
            restoring: false,
            stats: Stats::default(),
            sized_for: 1,
            started: now,
            left: false,
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

    fn start_join(&mut self, now: Instant, peers: &[SocketAddr], reconnect: bool) {
        let mut list: Vec<SocketAddr> = peers
            .iter()
            .copied()
            .filter(|p| *p != self.identity.gossip_addr())
            .collect();
        list.sort();
        list.dedup();
        if list.is_empty() || self.left {
            return;
        }
        self.join = JoinState {
            peers: list,
            acked_by: None,
            active: true,
            reconnect,
            attempt: 0,
            delay: self.config.join_backoff_initial,
        };
        self.send_hellos();
        self.timers
            .schedule(now + self.join.delay, TimerKind::JoinRetry);
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
        self.app_digest = digest;
    }

    /// Handles one datagram received on the gossip socket from `from`.
    /// Anything that is not a valid, fresh, authentic datagram of this
    /// cluster is dropped and counted in [`Stats::dropped`]; this never
    /// panics on input.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.stats.count_in(datagram.len());
        if datagram.len() > self.config.max_datagram_bytes.saturating_mul(2) {
            return self.stats.count_drop(DropReason::Oversize);
        }
        let (header, plaintext) = match seal::open(&self.security, datagram) {
            Ok(opened) => opened,
            Err(reason) => return self.stats.count_drop(reason),
        };
        if header.sender == self.identity.id {
            return self.stats.count_drop(DropReason::FromSelf);
        }
        if self.config.replay_protection
            && !self
                .replay
                .entry(header.sender)
                .or_default()
                .accept(header.bump, header.seq)
        {
            return self.stats.count_drop(DropReason::Replay);
        }
        let envelope: Envelope<'_> = match postcard::from_bytes(&plaintext) {
            Ok(e) => e,
            Err(_) => return self.stats.count_drop(DropReason::Decode),
        };
        if self.left {
            return;
        }
        for raw in &envelope.items {
            match postcard::from_bytes::<Item>(raw) {
                Ok(item) => self.apply_item(now, item, true),
                Err(_) => self.stats.count_drop(DropReason::Decode),
            }
        }
        match envelope.body {
            Body::Swim(bytes) => {
                if self.swim.handle_data(bytes, &mut self.runtime).is_err() {
                    self.stats.count_drop(DropReason::Swim);
                }
            }
            Body::Hello { identity } => {
                let _ = identity;
                let ack = Body::HelloAck {
                    identity: self.identity.clone(),
                };
                self.send(from, ack, false);
            }
            Body::HelloAck { identity } => {
                if self.join.active && identity.id != self.identity.id {
                    self.join.acked_by = Some(from);
                    let _ = self.swim.announce(identity, &mut self.runtime);
                }
            }
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
            TimerKind::Swim(timer) => {
                let removed = match &timer {
                    Timer::RemoveDown(id) => Some(id.id),
                    _ => None,
                };
                let _ = self.swim.handle_timer(timer, &mut self.runtime);
                if let Some(id) = removed {
                    self.forget_if_gone(id);
                }
            }
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
            TimerKind::MemberDigest => {
                self.send_member_digest();
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

    fn info_of(&self, m: &foca::Member<NodeIdentity>) -> MemberInfo {
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

    fn transmissions(&self) -> u8 {
        self.config.max_transmissions(self.sized_for)
    }

    fn send(&mut self, to: SocketAddr, body: Body<'_>, with_items: bool) {
        let kind = SendKind::of(&body);
        self.send_as(to, body, kind, with_items);
    }

    fn send_as(&mut self, to: SocketAddr, body: Body<'_>, kind: SendKind, with_items: bool) {
        let mut envelope = Envelope {
            meta_version: self.meta_version,
            meta_base: self.meta_base,
            free_class: self.meta.free_class.0,
            app_digest: self.app_digest,
            items: Vec::new(),
            body,
        };
        let mut plaintext = wire::encode(&envelope);
        let items = if with_items {
            // Each item costs its bytes plus a length prefix; the item count
            // prefix may grow by a few bytes.
            let budget = self
                .config
                .max_datagram_bytes
                .saturating_sub(SEAL_OVERHEAD + plaintext.len() + 4);
            self.piggyback.fill(budget)
        } else {
            Vec::new()
        };
        if !items.is_empty() {
            envelope.items = items.iter().map(Vec::as_slice).collect();
            plaintext = wire::encode(&envelope);
        }
        self.seq += 1;
        let header = SealHeader {
            sender: self.identity.id,
            bump: self.identity.bump,
            seq: self.seq,
            salt: self.rng.next_u32(),
        };
        let payload = seal::seal(&self.security, &header, &plaintext);
        self.stats.count_out(kind, payload.len());
        self.transmits.push_back(Transmit { to, payload, kind });
    }

    fn send_hellos(&mut self) {
        let hello = Body::Hello {
            identity: self.identity.clone(),
        };
        for peer in self.join.peers.clone() {
            self.send(peer, hello.clone(), false);
        }
    }

    fn join_retry(&mut self, now: Instant) {
        if !self.join.active || self.left {
            return;
        }
        if self.joined_a_peer() || (self.join.reconnect && self.is_connected()) {
            self.join.active = false;
            return;
        }
        self.join.attempt += 1;
        self.join.delay = (self.join.delay * 2).min(self.config.join_backoff_max);
        self.events.push_back(Event::JoinRetry {
            attempt: self.join.attempt,
            peers: self.join.peers.len(),
            next_in: self.join.delay,
        });
        self.send_hellos();
        self.timers
            .schedule(now + self.join.delay, TimerKind::JoinRetry);
    }

    /// Whether one of the join peers is a live member: from then on SWIM
    /// keeps this node in that peer's cluster.
    fn joined_a_peer(&self) -> bool {
        self.swim
            .iter_members()
            .any(|m| self.join.peers.contains(&m.id().gossip_addr()))
    }

    fn check_sender_digest(&mut self, now: Instant, sender: NodeId, digest: u64) {
        if digest == self.app_digest || digest == 0 || self.app_digest == 0 {
            return;
        }
        let retry = self.config.digest_retry;
        let recent = self
            .digest_reported
            .get(&sender)
            .is_some_and(|t| now.saturating_duration_since(*t) < retry);
        if recent {
            return;
        }
        self.digest_reported.insert(sender, now);
        self.events
            .push_back(Event::DigestDiffers { id: sender, digest });
    }

    /// A random member that is up (other than `except`: the one after it
    /// when it is drawn), uniformly, without copying the member list.
    /// (A draw in O(log N) from the up index would favour members after wide
    /// gaps of the position space.)
    fn random_up(&mut self, except: Option<SocketAddr>) -> Option<SocketAddr> {
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

    fn housekeeping(&mut self, now: Instant) {
        self.paging.expire_snapshot(now);
        let stale_probe = self.config.probe_period * 10;
        self.probes.prune(now, stale_probe);
        // `records` holds what foca holds (a member is forgotten in both
        // at once), without copying foca's list.
        let known = &self.records;
        self.replay.retain(|id, _| known.contains_key(id));
        self.range_sync.prune(now);
        self.digest_reported.retain(|id, _| known.contains_key(id));
        self.leaves.known.retain(|id, _| known.contains_key(id));
    }

    fn forget_if_gone(&mut self, id: NodeId) {
        if self.swim.iter_membership_state().any(|m| m.id().id == id) {
            return;
        }
        self.records.remove(&id);
        self.range_sync.forget(id);
        self.metas.held.remove(&id);
        self.metas.behind.remove(&id);
        self.leaves.known.remove(&id);
        self.replay.remove(&id);
        self.metas.wanted.remove(&id);
        self.leaves.unexplained.remove(&id);
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

    /// Whether this node holds `identity` (this very life) up.
    fn is_up(&self, identity: &NodeIdentity) -> bool {
        self.range_sync.up_life(identity.id) == Some(identity.bump)
            && self
                .records
                .get(&identity.id)
                .is_some_and(|r| r.identity == *identity)
    }

    /// Records `identity` as this member's life and as up; its record.
    fn mark_up(&mut self, now: Instant, identity: &NodeIdentity) -> &mut Record {
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

    /// Turns what foca produced into datagrams, timers and events.
    fn drain_swim(&mut self, now: Instant) {
        let mut drained = 0;
        while let Some(notification) = self.runtime.to_notify() {
            self.on_notification(now, notification);
            drained += 1;
        }
        self.resize();
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.timers.schedule(now + after, TimerKind::Swim(timer));
            drained += 1;
        }
        while let Some((to, data)) = self.runtime.to_send() {
            drained += 1;
            let body = Body::Swim(&data);
            let kind = SendKind::of(&body);
            if kind == SendKind::TurnUndead && self.is_up(&to) {
                // foca 2.0.0 sends "you are down" when a suspicion times
                // out even if the member refuted it meanwhile (its
                // down-timer finds a newer incarnation, declares nothing,
                // and still notifies); the member would then give up its
                // identity and rejoin, and the whole cluster would learn
                // a new life of a node that never failed. A member this
                // node holds up was not declared down: nothing to say.
                self.stats.turn_undead_suppressed += 1;
                continue;
            }
            self.send_as(to.gossip_addr(), body, kind, true);
        }
        // The runtime's queues keep the room of their largest burst (a
        // member list copied at join: one notification per member); an
        // empty runtime is swapped for a fresh one rather than keep it.
        if drained > SPARE_QUEUE {
            self.runtime = AccumulatingRuntime::new();
        }
        self.pack_tables();
    }

    /// The per-member tables, rebuilt with full nodes when they have
    /// doubled (see [`Packed`]): filled from a member list in id order,
    /// they would be about half empty.
    fn pack_tables(&mut self) {
        self.records.pack();
        self.metas.held.pack();
        self.range_sync.pack();
    }

    fn on_notification(&mut self, now: Instant, n: OwnedNotification<NodeIdentity>) {
        match n {
            OwnedNotification::MemberUp(identity) => {
                let id = identity.id;
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
                self.events.push_back(Event::MemberUp { identity });
            }
            OwnedNotification::MemberDown(identity) => {
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
                self.events.push_back(Event::MemberRenewed { old, new });
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
            OwnedNotification::DataSent(header) => {
                if let Message::Ping(n) = header.message {
                    self.probes.sent(now, header.dst.id, n);
                }
            }
            OwnedNotification::DataReceived(header) => {
                if let Message::Ack(n) = header.message {
                    self.probes.answered(now, header.src.id, n, &mut self.stats);
                }
            }
            OwnedNotification::ProbeFailed(_, _) => self.stats.probe_failures += 1,
        }
    }

    /// Knowing no live member, knock again on the join peers and on the
    /// members this node knew.
    fn rejoin_after_isolation(&mut self, now: Instant) {
        let mut peers = self.join.peers.clone();
        // Members that failed may come back; those that left said they
        // would not.
        peers.extend(
            self.swim
                .iter_membership_state()
                .filter(|m| !self.leaves.has_left(m.id()))
                .map(|m| m.id().gossip_addr())
                .take(16),
        );
        self.start_join(now, &peers, true);
    }

    /// Number of records waiting in the piggyback queue (for tests).
    #[doc(hidden)]
    pub fn piggyback_backlog(&self) -> usize {
        self.piggyback.len()
    }
}
