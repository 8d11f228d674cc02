//! [`NodeCore`]: one node's membership and placer, and the wiring between
//! them.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shoal_gossip::{
    Event as GossipEvent, FreeClass, Instant, MemberMeta, Membership, MetaTooLarge, MetaUpdate,
    NodeId, NodeIdentity, NoteError,
};
use shoal_placement::{
    Event as PlaceEvent, ExitReason, Job, Msg, NodeInfo, Placer, TaskKey, Verdict,
};

use crate::output::{Output, Timer, ViewChange};
use crate::placer::{Drained, drain_placer};
use crate::reach::Reach;
use crate::summary::Summary;

/// The timing of the wiring between membership and placement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wiring {
    /// Member changes reach the placer at most this often, batched: every
    /// batch may move keys around the ring, and a burst of gossip news (a
    /// join storm, a datacenter lost) should move them once. Default
    /// 200 ms; raise it for very large clusters with a lot of churn.
    pub publish_period: Duration,
    /// The placer's free-capacity class is republished in the gossip
    /// metadata at most this often. Each change costs every node a small
    /// item `log N` times, so at 500,000 nodes a node changing class every
    /// 5 s costs each node about 100 B/s. Default 5 s.
    pub free_class_period: Duration,
}

impl Default for Wiring {
    fn default() -> Self {
        Wiring {
            publish_period: Duration::from_millis(200),
            free_class_period: Duration::from_secs(5),
        }
    }
}

/// Hands out the placement record of a member. The simulator shares one
/// copy of equal records among its thousands of nodes; the agent keeps the
/// default, a new record each time.
pub trait InfoShare: Send + Sync {
    /// The record equal to `info`, shared or not.
    fn info(&self, info: NodeInfo) -> Arc<NodeInfo>;
}

struct Unshared;

impl InfoShare for Unshared {
    fn info(&self, info: NodeInfo) -> Arc<NodeInfo> {
        Arc::new(info)
    }
}

/// One node: membership, placer and the wiring between them.
///
/// Built from its parts ([`NodeCore::new`]), started once
/// ([`NodeCore::start`]), then driven by `handle_*` calls; after each call
/// the driver drains [`NodeCore::poll`].
pub struct NodeCore {
    membership: Membership,
    placer: Placer,
    wiring: Wiring,
    infos: Arc<dyn InfoShare>,
    /// Members whose state or metadata changed since the last publish.
    changed: BTreeSet<NodeId>,
    /// Members up kept out of the placer's view because their datacenter
    /// is unreachable from here (see `publish`): published again when a
    /// datacenter is reached again.
    held_back: BTreeSet<NodeId>,
    /// When the armed publish timer fires.
    publish_at: Option<Instant>,
    /// When members were last handed to the placer.
    published: Option<Instant>,
    /// The free-capacity class waiting to be published.
    free_class: Option<u8>,
    /// When the armed free-class timer fires.
    free_at: Option<Instant>,
    /// When the class was last published.
    free_published: Option<Instant>,
    /// The membership timer handed out last.
    gossip_timer: Option<(Instant, TimerToken)>,
    /// The placer tick handed out last.
    tick: Option<Instant>,
    /// The members counted (see [`NodeCore::summary`]).
    summary: Summary,
    /// Whether the summary is kept (see [`NodeCore::keep_summary`]).
    summary_kept: bool,
    /// The members known and no longer reached (the partition rule).
    reach: Reach,
    out: VecDeque<Output>,
}

use shoal_gossip::TimerToken;

impl std::fmt::Debug for NodeCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCore")
            .field("me", &self.placer.me())
            .field("wiring", &self.wiring)
            .field("changed", &self.changed.len())
            .field("queued", &self.out.len())
            .finish_non_exhaustive()
    }
}

impl NodeCore {
    /// Wraps a node's membership and placer (built, configured, and for
    /// the placer given what it adopts or whether it drains). Nothing
    /// happens until [`NodeCore::start`].
    ///
    /// # Panics
    ///
    /// When the two parts are not of the same node.
    pub fn new(membership: Membership, placer: Placer, wiring: Wiring) -> NodeCore {
        assert_eq!(
            membership.identity().id,
            placer.me(),
            "membership and placer of different nodes"
        );
        NodeCore {
            membership,
            placer,
            wiring,
            infos: Arc::new(Unshared),
            changed: BTreeSet::new(),
            held_back: BTreeSet::new(),
            publish_at: None,
            published: None,
            free_class: None,
            free_at: None,
            free_published: None,
            gossip_timer: None,
            tick: None,
            summary: Summary::new(),
            summary_kept: true,
            reach: Reach::default(),
            out: VecDeque::new(),
        }
    }

    /// Shares placement records through `share` from now on.
    pub fn share_infos(&mut self, share: Arc<dyn InfoShare>) {
        self.infos = share;
    }

    /// Keeps the summary of the members (the default) or not. Off, the
    /// summary stays empty and no [`Output::MemberState`] is produced: for
    /// the simulator, whose thousands of nodes share one process and would
    /// each hold an entry per member. Set it before [`NodeCore::start`].
    pub fn keep_summary(&mut self, on: bool) {
        self.summary_kept = on;
        if !on {
            self.summary = Summary::new();
        }
    }

    /// This node.
    pub fn me(&self) -> NodeId {
        self.placer.me()
    }

    /// The membership (read only: every change goes through the core, so
    /// that the placer hears of it).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The placer (read only, for the same reason).
    pub fn placer(&self) -> &Placer {
        &self.placer
    }

    /// The wiring's timing.
    pub fn wiring(&self) -> &Wiring {
        &self.wiring
    }

    /// The members this node knows, counted by state, and the resources
    /// of the live ones per datacenter and zone; up to date after every
    /// call (see [`Summary`]).
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// The next effect, in the order produced. Drain after every call.
    #[must_use]
    pub fn poll(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Starts the node: joins through `join` (none: found a cluster, or
    /// wait to be joined), hands the placer the `jobs` known so far (from
    /// the replica on disk), and has the placer learn this node. Until a
    /// member answers, the join addresses count as members it knew and
    /// cannot reach: with two or more, the node starts cut off (it runs
    /// its own tasks and places no other; see `shoal_placement::CutOff`).
    pub fn start(&mut self, now: Instant, wall_ms: u64, join: &[SocketAddr], jobs: Vec<Job>) {
        let mut peers: Vec<&SocketAddr> = join
            .iter()
            .filter(|a| **a != self.membership.identity().gossip_addr())
            .collect();
        peers.sort_unstable();
        peers.dedup();
        self.reach.expect(peers.len());
        self.changed.insert(self.me());
        self.membership.join(now, join);
        self.count_member(self.me());
        if !jobs.is_empty() {
            self.placer.set_jobs(now, wall_ms, jobs);
        }
        self.after_gossip(now);
        self.mark_dirty(now);
        self.after_place(now, wall_ms);
    }

    /// Takes `members` as known and up, without news (see
    /// [`Membership::restore`]).
    pub fn restore(&mut self, now: Instant, members: &[(NodeIdentity, Option<MetaUpdate>)]) {
        self.membership.restore(now, members);
        self.after_gossip(now);
    }

    /// Joins through more addresses (a join peer resolved late, an
    /// operator's request).
    pub fn join(&mut self, now: Instant, peers: &[SocketAddr]) {
        self.membership.join(now, peers);
        self.after_gossip(now);
    }

    /// Leaves the cluster: the farewell datagrams are in the queue.
    pub fn leave(&mut self, now: Instant) {
        self.membership.leave(now);
        self.count_member(self.me());
        self.after_gossip(now);
    }

    /// Replaces the gossip keys (a keyring change) and tells the members
    /// which this node holds, the one it seals with first (its metadata's
    /// `gossip_keys`).
    pub fn set_security(
        &mut self,
        now: Instant,
        security: shoal_gossip::PacketSecurity,
    ) -> Result<(), MetaTooLarge> {
        let keys = security.key_ids();
        self.membership.set_security(security);
        if self.membership.meta().gossip_keys == keys {
            return Ok(());
        }
        let mut meta = (**self.membership.meta()).clone();
        meta.gossip_keys = keys;
        self.set_meta(now, meta)
    }

    /// Sets the nodes forgotten for good (`shoal node forget`, learned from
    /// the replicated state): membership drops them and keeps them out
    /// (see `Membership::set_forgotten`); their tasks are placed elsewhere
    /// as for any member that went down.
    pub fn set_forgotten(&mut self, now: Instant, ids: std::collections::BTreeSet<NodeId>) {
        self.reach.set_forgotten(&ids);
        self.membership.set_forgotten(now, ids);
        self.after_gossip(now);
        self.mark_dirty(now);
    }

    /// A gossip datagram arrived.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.membership.handle_datagram(now, from, datagram);
        self.after_gossip(now);
    }

    /// A placement message from `from` arrived.
    pub fn handle_message(&mut self, now: Instant, wall_ms: u64, from: NodeId, msg: Msg) {
        self.placer.handle_message(now, wall_ms, from, msg);
        self.after_place(now, wall_ms);
    }

    /// A timer asked for by [`Output::Timer`] is due. One that was
    /// replaced since it was handed out does nothing and returns `false`.
    pub fn handle_timer(&mut self, now: Instant, wall_ms: u64, timer: Timer) -> bool {
        match timer {
            Timer::Gossip(token) => {
                if self.gossip_timer.map(|t| t.1) != Some(token) {
                    return false;
                }
                self.gossip_timer = None;
                self.membership.handle_timer(now, token);
                self.after_gossip(now);
            }
            Timer::Tick(at) => {
                if self.tick != Some(at) {
                    return false;
                }
                self.tick = None;
                self.placer.handle_tick(now, wall_ms);
                self.after_place(now, wall_ms);
            }
            Timer::Publish => {
                if self.publish_at.take().is_none() {
                    return false;
                }
                self.publish(now, wall_ms);
            }
            Timer::FreeClass => {
                if self.free_at.take().is_none() {
                    return false;
                }
                self.publish_free_class(now);
            }
        }
        true
    }

    /// The runtime started a task, with these host `ports` (by port name).
    pub fn handle_task_running(
        &mut self,
        now: Instant,
        wall_ms: u64,
        key: &TaskKey,
        ports: std::collections::BTreeMap<String, u16>,
    ) {
        self.placer.task_running(now, wall_ms, key, ports);
        self.after_place(now, wall_ms);
    }

    /// A task ended (or never started).
    pub fn handle_task_exited(
        &mut self,
        now: Instant,
        wall_ms: u64,
        key: &TaskKey,
        why: ExitReason,
    ) {
        self.placer.task_exited(now, wall_ms, key, why);
        self.after_place(now, wall_ms);
    }

    /// A health check of a task this node runs gave `verdict`: the task's
    /// health follows (its coordinator is told at once when it changes,
    /// and [`Output::Placement`] carries a `Health` event), and a task a
    /// restarting check finds unhealthy is restarted
    /// ([`Output::Runtime`] with a `Replace`). The probing itself is the
    /// driver's: the agent's `node/src/health.rs`, or the simulator.
    pub fn handle_task_health(
        &mut self,
        now: Instant,
        wall_ms: u64,
        key: &TaskKey,
        verdict: Verdict,
    ) {
        self.placer.task_health(now, wall_ms, key, verdict);
        self.after_place(now, wall_ms);
    }

    /// Every job of the desired state (at start-up, or after the driver
    /// missed changes).
    pub fn set_jobs(&mut self, now: Instant, wall_ms: u64, jobs: Vec<Job>) {
        self.placer.set_jobs(now, wall_ms, jobs);
        self.after_place(now, wall_ms);
    }

    /// Jobs that changed (created, updated, deleted and kept to stop their
    /// tasks) and jobs that are gone or hold no valid spec.
    pub fn update_jobs(
        &mut self,
        now: Instant,
        wall_ms: u64,
        changed: Vec<Job>,
        removed: &[String],
    ) {
        self.placer.update_jobs(now, wall_ms, changed, removed);
        self.after_place(now, wall_ms);
    }

    /// Publishes new metadata for this node (runtimes offered, drain, …);
    /// the placer hears of it with the next publish.
    pub fn set_meta(&mut self, now: Instant, meta: MemberMeta) -> Result<(), MetaTooLarge> {
        self.changed.insert(self.me());
        let set = self.membership.set_meta(now, meta);
        self.count_member(self.me());
        self.after_gossip(now);
        self.mark_dirty(now);
        set
    }

    /// Drains this node (its tasks move elsewhere and it takes no new
    /// ones), or stops draining it; the metadata says so to every member.
    pub fn set_draining(
        &mut self,
        now: Instant,
        wall_ms: u64,
        draining: bool,
    ) -> Result<(), MetaTooLarge> {
        self.placer.set_draining(now, wall_ms, draining);
        self.after_place(now, wall_ms);
        let mut meta = (**self.membership.meta()).clone();
        meta.draining = draining;
        self.set_meta(now, meta)
    }

    /// Sends `note` to member `to` in a gossip datagram (see
    /// [`Membership::send_note`]); its caller gets it as
    /// [`GossipEvent::Note`] in an [`Output::Gossip`].
    pub fn send_note(&mut self, now: Instant, to: NodeId, note: &[u8]) -> Result<(), NoteError> {
        self.membership.send_note(to, note)?;
        self.after_gossip(now);
        Ok(())
    }

    /// The digest of the local desired-state replica, carried in gossip
    /// so that members notice when theirs differs.
    pub fn set_app_digest(&mut self, digest: u64) {
        self.membership.set_app_digest(digest);
    }

    /// Counts member `id` as the membership sees it now; a change of its
    /// state is handed out.
    fn count_member(&mut self, id: NodeId) {
        if !self.summary_kept {
            return;
        }
        let m = &self.membership;
        let now = m
            .member_state(id)
            .map(|state| (state, m.member_meta(id).cloned()));
        if let Some(change) = self.summary.update(id, now) {
            self.out.push_back(Output::MemberState(change));
        }
    }

    /// Arms the publish timer unless it is armed: at once when nothing was
    /// published for a period, else a period after the last publish.
    fn mark_dirty(&mut self, now: Instant) {
        if self.publish_at.is_some() {
            return;
        }
        let at = self
            .published
            .map_or(now, |t| (t + self.wiring.publish_period).max(now));
        self.publish_at = Some(at);
        self.out.push_back(Output::Timer {
            at,
            timer: Timer::Publish,
        });
    }

    /// Hands the placer the members that changed since the last publish:
    /// those up (alive or suspect, with a metadata record) as their
    /// current record, the others as gone. A suspect stays until it is
    /// declared down, so that a false suspicion moves no key. The members
    /// of a large datacenter unreachable from here, whose members SWIM
    /// here does not suspect (`reach_only_dc_size`), are gone too, up or
    /// not: the keys they coordinate need a coordinator on this side, and
    /// their tasks are replaced as the jobs' `[disconnect]` says.
    fn publish(&mut self, now: Instant, wall_ms: u64) {
        self.published = Some(now);
        let changed = std::mem::take(&mut self.changed);
        let mut infos = Vec::new();
        let mut view = ViewChange::default();
        let me = self.membership.identity().id;
        for id in changed {
            let had = self.placer.has_member(id);
            let mut meta = self.membership.up_meta(id);
            if meta.is_some_and(|meta| id != me && self.lost_with_dc(&meta.dc)) {
                self.held_back.insert(id);
                meta = None;
            }
            match meta {
                Some(meta) => {
                    infos.push(self.infos.info(NodeInfo::from_meta(id, meta)));
                    if !had {
                        view.joined.push(id);
                    }
                }
                None if had => view.left.push(id),
                None => {}
            }
        }
        // Cut off or not, before the members that went away reach the
        // placer: a node on the small side of a partition auctions none of
        // their keys, not even for an instant.
        let up = self.membership.num_active() + 1;
        let cut_off = self
            .reach
            .cut_off(up, self.membership.unreachable_members());
        if cut_off.is_some() != self.placer.cut_off().is_some() {
            self.out.push_back(Output::CutOff(cut_off));
        }
        self.placer.set_cut_off(now, cut_off);
        self.placer.update_members(now, wall_ms, infos, &view.left);
        self.out.push_back(Output::Published(view));
        self.after_place(now, wall_ms);
    }

    /// Whether the members of datacenter `dc` count as gone for the
    /// placer: it is unreachable from here, and SWIM here does not
    /// suspect its members (`reach_only_dc_size`), so no down would come.
    fn lost_with_dc(&self, dc: &str) -> bool {
        self.membership.dc_unreachable(dc) && self.membership.reach_only_dc(dc)
    }

    /// Puts the waiting free-capacity class into this node's metadata.
    fn publish_free_class(&mut self, now: Instant) {
        self.free_published = Some(now);
        let Some(class) = self.free_class.take() else {
            return;
        };
        if self.membership.meta().free_class.0 == class {
            return;
        }
        let mut meta = (**self.membership.meta()).clone();
        meta.free_class = FreeClass(class);
        // The class is one byte of a record that was accepted: it cannot
        // grow past the limit.
        let set = self.set_meta(now, meta);
        debug_assert!(
            set.is_ok(),
            "a free-class change made the metadata too large"
        );
    }

    /// Queues what membership produced: datagrams, then its events (a
    /// member change arms the publish timer), then its next timer.
    fn after_gossip(&mut self, now: Instant) {
        while let Some(t) = self.membership.poll_transmit() {
            self.out.push_back(Output::Datagram(t));
        }
        let mut dirty = false;
        while let Some(e) = self.membership.poll_event() {
            self.reach.on_event(&e);
            match &e {
                GossipEvent::MemberUp { identity }
                | GossipEvent::MemberDown { identity, .. }
                | GossipEvent::MemberRenewed { new: identity, .. } => {
                    dirty = true;
                    self.changed.insert(identity.id);
                }
                GossipEvent::MetaChanged { id } => {
                    dirty = true;
                    self.changed.insert(*id);
                }
                // A suspicion moves no key, but counts towards being cut
                // off (see `publish`).
                GossipEvent::SuspicionChanged { .. } => dirty = true,
                // The members of a large datacenter unreachable from here
                // leave the placer's view, and come back with it.
                GossipEvent::DatacenterUnreachable { dc } => {
                    dirty = true;
                    // Only a datacenter probed for reach only has members
                    // `publish` holds back; another's are left as they are.
                    if self.membership.reach_only_dc(dc) {
                        self.changed
                            .extend(self.membership.members_in_dc(dc).iter().copied());
                    }
                }
                GossipEvent::DatacenterReachable { .. } => {
                    dirty = true;
                    self.changed.append(&mut self.held_back);
                }
                _ => {}
            }
            match &e {
                GossipEvent::MemberUp { identity }
                | GossipEvent::MemberDown { identity, .. }
                | GossipEvent::MemberRenewed { new: identity, .. }
                | GossipEvent::IdentityRenewed { identity } => self.count_member(identity.id),
                GossipEvent::MetaChanged { id }
                | GossipEvent::SuspicionChanged { id, .. }
                | GossipEvent::MemberForgotten { id } => self.count_member(*id),
                _ => {}
            }
            self.out.push_back(Output::Gossip(e));
        }
        if dirty {
            self.mark_dirty(now);
        }
        if let Some((at, token)) = self.membership.poll_timeout()
            && self.gossip_timer != Some((at, token))
        {
            self.gossip_timer = Some((at, token));
            self.out.push_back(Output::Timer {
                at,
                timer: Timer::Gossip(token),
            });
        }
    }

    /// Queues what the placer produced (see [`drain_placer`]); a new
    /// free-capacity class arms its timer; then the placer's next tick.
    fn after_place(&mut self, now: Instant, wall_ms: u64) {
        let out = &mut self.out;
        let mut free_class = None;
        drain_placer(&mut self.placer, now, wall_ms, |d| match d {
            Drained::Message { to, msg } => out.push_back(Output::Message { to, msg }),
            Drained::Command(c) => out.push_back(Output::Runtime(c)),
            Drained::Event(PlaceEvent::FreeClass(c)) => {
                free_class = Some(c);
                if self.free_at.is_none() {
                    let at = self
                        .free_published
                        .map_or(now, |t| (t + self.wiring.free_class_period).max(now));
                    self.free_at = Some(at);
                    out.push_back(Output::Timer {
                        at,
                        timer: Timer::FreeClass,
                    });
                }
            }
            Drained::Event(PlaceEvent::Finished(o)) => out.push_back(Output::Finished(o)),
            Drained::Event(PlaceEvent::Deployment(d)) => out.push_back(Output::Deployment(d)),
            Drained::Event(e) => out.push_back(Output::Placement(e)),
        });
        if let Some(c) = free_class {
            self.free_class = Some(c);
        }
        let at = self.placer.next_tick();
        if self.tick != Some(at) {
            self.tick = Some(at);
            self.out.push_back(Output::Timer {
                at,
                timer: Timer::Tick(at),
            });
        }
    }
}
