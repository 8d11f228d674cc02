//! The placement state machine of one node, in its three roles.
//!
//! - **Coordinator** of the keys it owns on the ring: runs auctions, awards,
//!   records who holds each key from the holders' lease renewals,
//!   re-auctions when a holder fails, and keeps one holder per key (the
//!   latest award) when two show up.
//! - **Bidder**: answers bid requests from what it has free, reserving it for
//!   a short while.
//! - **Runner**: starts the tasks it is awarded (through commands to the
//!   runtime), applies the restart policy, renews leases with each key's
//!   current coordinator, and stops tasks that are no longer wanted.

mod config;
mod msg;
mod reasons;
mod status;
mod view;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use shoal_gossip::{Instant, NodeId};
use shoal_model::{JobSpec, JobType, RestartMode};

pub use self::config::PlacementConfig;
pub use self::msg::{Command, Event, ExitReason, Msg, PROTOCOL_VERSION};
use self::reasons::Reasons;
pub use self::status::{Report, TaskState, TaskStatus};
use self::view::id_print;
pub use self::view::{RingShare, View};
use crate::jobs::JobTable;
use crate::ring::Ring;
use crate::types::{Hlc, NodeInfo, Resources, Slot, Stamp, TaskKey};

/// A job as placement sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// The spec.
    pub spec: Arc<JobSpec>,
    /// Version.
    pub version: u64,
    /// Deleted (kept to stop its tasks).
    pub deleted: bool,
}

/// A task found running after an agent restart.
#[derive(Clone, Debug, PartialEq)]
pub struct Adopted {
    /// Task.
    pub key: TaskKey,
    /// Its award.
    pub stamp: Stamp,
    /// Job version it runs.
    pub job_version: u64,
    /// Its spec.
    pub spec: Arc<JobSpec>,
    /// Restarts so far.
    pub restarts: u32,
    /// Running since (ms since the Unix epoch).
    pub since_ms: u64,
}

#[derive(Clone, Debug)]
enum Answer {
    Bid {
        score: u64,
        job_tasks: u32,
        spread_value: Option<String>,
    },
    Decline(String),
}

#[derive(Clone, Debug)]
struct Auction {
    round: u64,
    deadline: Instant,
    asked: Vec<NodeId>,
    answers: BTreeMap<NodeId, Answer>,
    /// Positions of the ring walk already used.
    walked: usize,
    /// Reasons of members ruled out without asking, and of declines.
    reasons: Reasons,
    exclude: BTreeSet<NodeId>,
}

#[derive(Clone, Debug)]
struct Holder {
    node: NodeId,
    stamp: Stamp,
    report: Report,
    heard: Instant,
    /// The holder accepted or renewed (not only awarded).
    confirmed: bool,
}

#[derive(Clone, Debug, Default)]
struct Coord {
    holder: Option<Holder>,
    auction: Option<Auction>,
    pending: Vec<String>,
    pending_since_ms: u64,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Set when this node inherited the key by a ring change.
    inherited_at: Option<Instant>,
}

/// What a coordinated key needs (see [`Placer::due`]).
enum Due {
    /// Nothing, until the instant given (if any), from which time alone
    /// may change the answer.
    Nothing(Option<Instant>),
    /// Its auction's deadline passed.
    Decide,
    /// Its holder is no longer a member.
    Lost(NodeId),
    /// Its holder stopped renewing the lease.
    Silent(NodeId),
    /// No holder, no auction: place it.
    Start,
}

#[derive(Clone, Debug)]
struct Local {
    stamp: Stamp,
    spec: Arc<JobSpec>,
    job_version: u64,
    demand: Resources,
    state: TaskState,
    restarts: u32,
    exit_code: Option<i32>,
    reason: Option<String>,
    since_ms: u64,
    restart_at: Option<Instant>,
    last_lease: Option<Instant>,
    /// Being stopped: `release` tells the coordinator once stopped.
    stopping: Option<bool>,
}

impl Local {
    /// Whether the task still holds its resources (running, starting, or
    /// about to restart).
    fn holds(&self) -> bool {
        // A task being stopped still runs until the runtime says so.
        self.stopping.is_some()
            || self.restart_at.is_some()
            || matches!(
                self.state,
                TaskState::Assigned | TaskState::Starting | TaskState::Running
            )
    }

    fn report(&self) -> Report {
        Report {
            state: self.state,
            restarts: self.restarts,
            exit_code: self.exit_code,
            reason: self.reason.clone(),
            since_ms: self.since_ms,
            job_version: self.job_version,
        }
    }
}

#[derive(Clone, Debug)]
struct Reservation {
    demand: Resources,
    until: Instant,
}

/// One node's placement.
///
/// Inputs: [`set_members`](Self::set_members), [`set_jobs`](Self::set_jobs),
/// [`handle_message`](Self::handle_message), [`handle_tick`](Self::handle_tick),
/// the runtime's reports ([`task_running`](Self::task_running),
/// [`task_exited`](Self::task_exited)), [`adopt`](Self::adopt),
/// [`set_draining`](Self::set_draining). Each takes `now` (monotonic) and
/// `wall_ms` (for stamps and the times shown to people). After every input,
/// drain [`poll_message`](Self::poll_message) (messages to other nodes, or
/// to this one), [`poll_command`](Self::poll_command) and
/// [`poll_event`](Self::poll_event); call `handle_tick` at
/// [`next_tick`](Self::next_tick).
pub struct Placer {
    me: NodeId,
    config: PlacementConfig,
    capacity: Resources,
    draining: bool,
    view: Arc<View>,
    ring_share: Option<Arc<dyn RingShare>>,
    ring_changed_at: Instant,
    jobs: JobTable,
    my_keys: BTreeSet<TaskKey>,
    keys_dirty: bool,
    /// Jobs whose keys must be recomputed (when not all are).
    dirty_jobs: BTreeSet<String>,
    coord: BTreeMap<TaskKey, Coord>,
    reservations: BTreeMap<TaskKey, Reservation>,
    local: BTreeMap<TaskKey, Local>,
    hlc: Hlc,
    round: u64,
    outbox: VecDeque<(NodeId, Msg)>,
    commands: VecDeque<Command>,
    events: VecDeque<Event>,
    next_tick: Instant,
    /// When the tick must next walk every key (see
    /// [`handle_tick`](Self::handle_tick)).
    wake: Wake,
    free_class: u8,
}

/// What the periodic tick must do: most ticks find nothing due, and a node
/// holds many keys, so the tick walks them only when an input changed
/// something since the last walk, that walk acted, or a deadline it saw
/// has come.
#[derive(Debug, Default)]
struct Wake {
    /// The next tick walks every key.
    pass: bool,
    /// The earliest instant at which a key's need changes with time alone.
    at: Option<Instant>,
    /// The next tick looks at every lease.
    leases: bool,
    /// The earliest lease renewal due.
    lease_at: Option<Instant>,
}

impl Wake {
    /// An input changed the state: the next tick looks at everything.
    fn touch(&mut self) {
        self.pass = true;
        self.leases = true;
    }
}

/// What [`Placer::flush_local`] did.
struct Flushed {
    /// It acted on a local task (or started one).
    acted: bool,
    /// The earliest restart due among the tasks it left alone.
    next: Option<Instant>,
}

/// The earlier of two optional instants.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

impl std::fmt::Debug for Placer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placer")
            .field("me", &self.me)
            .field("local", &self.local.len())
            .field("coordinated", &self.coord.len())
            .finish_non_exhaustive()
    }
}

fn tie_break(key: &TaskKey, node: NodeId) -> u64 {
    key.hash_with(&node.0.to_be_bytes())
}

fn demand_of(spec: &JobSpec) -> Resources {
    Resources::of_task(&spec.task.resources)
}

/// Whether two specs differ in what the task runs (everything but `count`).
fn runs_differently(a: &JobSpec, b: &JobSpec) -> bool {
    let mut a = a.clone();
    let mut b = b.clone();
    a.count = None;
    b.count = None;
    a != b
}

impl Placer {
    /// A node's placement, offering `capacity` (its capacity minus its
    /// reserve).
    pub fn new(me: NodeId, config: PlacementConfig, capacity: Resources, now: Instant) -> Placer {
        Placer {
            me,
            next_tick: now + config.tick,
            wake: Wake {
                pass: true,
                leases: true,
                ..Wake::default()
            },
            capacity,
            draining: false,
            view: Arc::new(View::new(Vec::new(), config.vnodes)),
            ring_share: None,
            ring_changed_at: now,
            jobs: JobTable::default(),
            my_keys: BTreeSet::new(),
            keys_dirty: true,
            dirty_jobs: BTreeSet::new(),
            coord: BTreeMap::new(),
            reservations: BTreeMap::new(),
            local: BTreeMap::new(),
            hlc: Hlc::default(),
            round: 0,
            outbox: VecDeque::new(),
            commands: VecDeque::new(),
            events: VecDeque::new(),
            free_class: 8,
            config,
        }
    }

    /// This node.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// The ring in use.
    pub fn ring(&self) -> &Ring {
        self.view.ring_with(self.ring_share.as_ref())
    }

    /// Builds rings through `share`, which other placers of the process
    /// use too, so that equal rings are held once (the simulator's).
    pub fn share_rings(&mut self, share: Arc<dyn RingShare>) {
        self.ring_share = Some(share);
        self.wake.touch();
    }

    /// The next message to send, to a node (possibly this one).
    #[must_use]
    pub fn poll_message(&mut self) -> Option<(NodeId, Msg)> {
        self.outbox.pop_front()
    }

    /// The next command for the runtime.
    #[must_use]
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`handle_tick`](Self::handle_tick).
    pub fn next_tick(&self) -> Instant {
        self.next_tick
    }

    /// The alive members (this node included, when it is alive).
    pub fn set_members(&mut self, now: Instant, wall_ms: u64, members: Vec<NodeInfo>) {
        self.wake.touch();
        let new = View::new(members, self.config.vnodes);
        if new.same_ids(&self.view) {
            Arc::make_mut(&mut self.view).members = new.members;
        } else {
            self.view = Arc::new(new);
            self.ring_changed(now);
        }
        self.reconcile(now, wall_ms);
    }

    /// Takes a member list and ring that other placers may share (the
    /// simulator's scale mode: 500,000 placers, one view). Built with the
    /// same `vnodes` as this placer's configuration.
    pub fn set_view(&mut self, now: Instant, wall_ms: u64, view: Arc<View>) {
        self.wake.touch();
        let same_ids = view.same_ids(&self.view);
        self.view = view;
        if !same_ids {
            self.ring_changed(now);
        }
        self.reconcile(now, wall_ms);
    }

    /// Applies a change of the member list: `changed` members (new ones,
    /// or new metadata) and `gone` ones, leaving the rest as they are. The
    /// same outcome as [`set_members`](Self::set_members) with the whole
    /// list, at a cost that follows the change (most changes are one
    /// member's free-capacity class). Records come as shared pointers so
    /// that placers of one process can hold one copy of each.
    pub fn update_members(
        &mut self,
        now: Instant,
        wall_ms: u64,
        changed: Vec<Arc<NodeInfo>>,
        gone: &[NodeId],
    ) {
        self.wake.touch();
        let view = Arc::make_mut(&mut self.view);
        let mut removed = Vec::new();
        for id in gone {
            if view.members.remove(id).is_some() {
                view.fingerprint ^= id_print(*id);
                removed.push(*id);
            }
        }
        let mut added = Vec::new();
        let mut roomier = Vec::new();
        for info in changed {
            let id = info.id;
            match view.members.insert(id, info) {
                None => {
                    view.fingerprint ^= id_print(id);
                    added.push(id);
                }
                Some(old) => {
                    let new = &view.members[&id];
                    if new.free_class > old.free_class || (old.draining && !new.draining) {
                        roomier.push(id);
                    }
                }
            }
        }
        view.members.pack();
        let ring_changed = !added.is_empty() || !removed.is_empty();
        if ring_changed {
            view.update_ring(&added, &removed, self.ring_share.as_ref());
            self.ring_changed(now);
        } else if !roomier.is_empty() {
            self.retry_where_room_appeared(now, &roomier);
        }
        self.reconcile(now, wall_ms);
    }

    /// Whether `node` is in the member list.
    pub fn has_member(&self, node: NodeId) -> bool {
        self.view.members.contains_key(&node)
    }

    /// Waiting keys that one of `roomier` (members with more free room than
    /// before) may now take are retried at once, keeping their backoff: a
    /// key that fits nowhere is not re-auctioned over the whole ring on a
    /// timer alone.
    fn retry_where_room_appeared(&mut self, now: Instant, roomier: &[NodeId]) {
        for (key, c) in &mut self.coord {
            if c.retry_at.is_none_or(|t| t <= now) {
                continue;
            }
            let Some(job) = self.jobs.get(&key.job) else {
                continue;
            };
            let demand = demand_of(&job.spec);
            let fits = roomier.iter().any(|id| {
                self.view
                    .members
                    .get(id)
                    .is_some_and(|m| m.eligible(&job.spec, &demand).is_ok())
            });
            if fits {
                c.retry_at = Some(now);
            }
        }
    }

    fn ring_changed(&mut self, now: Instant) {
        self.ring_changed_at = now;
        self.keys_dirty = true;
        // New members may have room for what waits.
        for c in self.coord.values_mut() {
            if c.retry_at.is_some() {
                c.retry_at = Some(now);
                c.backoff = Duration::ZERO;
            }
        }
    }

    /// The desired state: every job (deleted ones too, to stop their tasks).
    pub fn set_jobs(&mut self, now: Instant, wall_ms: u64, jobs: Vec<Job>) {
        self.wake.touch();
        let mut next = JobTable::default();
        for j in jobs {
            let changed_at = self.note_job_change(now, &j);
            next.put(j, changed_at);
        }
        if next.len() != self.jobs.len() {
            self.keys_dirty = true;
        }
        self.jobs = next;
        self.reconcile(now, wall_ms);
    }

    /// Applies some jobs' new versions (`changed`) and forgets others
    /// (`removed`), leaving the rest as they are: the cost follows the
    /// change, not the number of jobs.
    pub fn update_jobs(
        &mut self,
        now: Instant,
        wall_ms: u64,
        changed: Vec<Job>,
        removed: &[String],
    ) {
        self.wake.touch();
        let mut names = BTreeSet::new();
        for j in changed {
            let changed_at = self.note_job_change(now, &j);
            names.insert(j.spec.name.clone());
            self.jobs.put(j, changed_at);
        }
        for name in removed {
            if self.jobs.remove(name) {
                self.dirty_jobs.insert(name.clone());
            }
            names.insert(name.clone());
        }
        if self.keys_dirty {
            self.reconcile(now, wall_ms);
            return;
        }
        self.recompute_keys();
        let (mut due, mut stale) = (Vec::new(), Vec::new());
        for name in &names {
            let start = TaskKey::index(name, 0);
            let (d, s, _) = self.scan(
                now,
                self.my_keys
                    .range(start.clone()..)
                    .take_while(|k| &k.job == name),
                self.coord
                    .range(start..)
                    .take_while(|(k, _)| &k.job == name),
            );
            due.extend(d);
            stale.extend(s);
        }
        self.settle(now, wall_ms, &due, stale);
    }

    /// Marks `j`'s keys for recomputing if it differs from the job held
    /// under its name; when it last changed (`now` if it does).
    fn note_job_change(&mut self, now: Instant, j: &Job) -> Instant {
        self.jobs.unchanged_since(j).unwrap_or_else(|| {
            self.dirty_jobs.insert(j.spec.name.clone());
            now
        })
    }

    /// Stop (or resume) taking tasks; draining also stops the tasks here so
    /// that their coordinators place them elsewhere.
    pub fn set_draining(&mut self, now: Instant, wall_ms: u64, draining: bool) {
        self.wake.touch();
        self.draining = draining;
        if draining {
            let keys: Vec<TaskKey> = self.local.keys().cloned().collect();
            for k in keys {
                self.stop_local(&k, "node draining", true);
            }
            self.reservations.clear();
        }
        self.reconcile(now, wall_ms);
    }

    /// Whether this node is draining.
    pub fn draining(&self) -> bool {
        self.draining
    }

    /// Tasks found still running after an agent restart: held again, and
    /// their coordinators told at once (they stop any that were placed
    /// elsewhere meanwhile).
    pub fn adopt(&mut self, now: Instant, wall_ms: u64, tasks: Vec<Adopted>) {
        self.wake.touch();
        for t in tasks {
            self.hlc.observe(&t.stamp);
            self.local.insert(
                t.key.clone(),
                Local {
                    stamp: t.stamp,
                    demand: demand_of(&t.spec),
                    spec: t.spec,
                    job_version: t.job_version,
                    state: TaskState::Running,
                    restarts: t.restarts,
                    exit_code: None,
                    reason: None,
                    since_ms: t.since_ms,
                    restart_at: None,
                    last_lease: None,
                    stopping: None,
                },
            );
        }
        self.reconcile(now, wall_ms);
    }

    /// The runtime started a task.
    pub fn task_running(&mut self, now: Instant, wall_ms: u64, key: &TaskKey) {
        self.wake.touch();
        if let Some(l) = self.local.get_mut(key)
            && l.stopping.is_none()
        {
            l.state = TaskState::Running;
            l.since_ms = wall_ms;
            l.last_lease = None;
        }
        self.renew_leases(now, true);
        self.flush_local(now, wall_ms);
    }

    /// The runtime saw a task end.
    pub fn task_exited(&mut self, now: Instant, wall_ms: u64, key: &TaskKey, why: ExitReason) {
        self.wake.touch();
        let Some(l) = self.local.get_mut(key) else {
            return;
        };
        if let Some(release) = l.stopping {
            let stamp = l.stamp;
            self.local.remove(key);
            if release && let Some(c) = self.ring().owner(key.hash()) {
                self.outbox.push_back((
                    c,
                    Msg::Release {
                        key: key.clone(),
                        stamp,
                    },
                ));
            }
            self.update_free_class();
            return;
        }
        let (state, code, reason, success) = match &why {
            ExitReason::Exited(0) => (TaskState::Exited, Some(0), "exited".to_owned(), true),
            ExitReason::Exited(c) => (
                TaskState::Failed,
                Some(*c),
                format!("exited with code {c}"),
                false,
            ),
            ExitReason::Signaled(s) => (
                TaskState::Killed,
                None,
                format!("killed by signal {s}"),
                false,
            ),
            ExitReason::Oom => (TaskState::Killed, None, "oom".to_owned(), false),
            ExitReason::StartFailed(m) => (
                TaskState::Failed,
                Some(127),
                format!("start failed: {m}"),
                false,
            ),
            ExitReason::Stopped => (TaskState::Killed, None, "stopped".to_owned(), false),
            ExitReason::Unknown => (
                TaskState::Failed,
                None,
                "ended while the agent was away (exit code unknown)".to_owned(),
                false,
            ),
        };
        l.state = state;
        l.exit_code = code;
        l.reason = Some(reason);
        l.since_ms = wall_ms;
        let policy = &l.spec.restart;
        let restart = match policy.mode {
            RestartMode::Never => false,
            RestartMode::OnFailure => !success,
            RestartMode::Always => true,
        } && policy.attempts.is_none_or(|a| l.restarts < a);
        if restart {
            let exp = l.restarts.min(20);
            let delay = policy
                .delay()
                .saturating_mul(1u32 << exp.min(16))
                .min(policy.max_delay());
            l.restart_at = Some(now + delay);
        } else {
            l.restart_at = None;
        }
        self.renew_leases(now, true);
        self.update_free_class();
    }

    /// Handles a message from `from` (possibly this node).
    pub fn handle_message(&mut self, now: Instant, wall_ms: u64, from: NodeId, msg: Msg) {
        // A renewal or an acceptance from the known holder only moves its
        // deadlines later: the common message leaves the tick idle.
        // Anything else may make a key due.
        let mut quiet = false;
        match msg {
            Msg::BidRequest {
                key,
                round,
                demand,
                spec,
                ..
            } => self.on_bid_request(now, from, key, round, demand, &spec),
            Msg::Bid {
                key,
                round,
                score,
                job_tasks,
                spread_value,
            } => {
                let answer = Answer::Bid {
                    score,
                    job_tasks,
                    spread_value,
                };
                self.on_answer(now, wall_ms, from, &key, round, answer);
            }
            Msg::Decline { key, round, reason } => {
                self.on_answer(now, wall_ms, from, &key, round, Answer::Decline(reason));
            }
            Msg::Award {
                key,
                round,
                stamp,
                job_version,
                spec,
            } => self.on_award(now, wall_ms, from, key, round, stamp, job_version, spec),
            Msg::Accept { key, round } => {
                if let Some(h) = self.coord.get_mut(&key).and_then(|c| c.holder.as_mut())
                    && h.node == from
                {
                    let _ = round;
                    h.confirmed = true;
                    h.heard = now;
                    quiet = true;
                }
            }
            Msg::Reject { key, round, reason } => {
                let _ = (round, reason);
                if let Some(c) = self.coord.get_mut(&key)
                    && c.holder
                        .as_ref()
                        .is_some_and(|h| h.node == from && !h.confirmed)
                {
                    c.holder = None;
                    self.start_auction(now, wall_ms, &key, [from].into());
                }
            }
            Msg::Lease { key, stamp, report } => {
                quiet = self.on_lease(now, wall_ms, from, key, stamp, report);
            }
            Msg::Stop { key, stamp, reason } => {
                if self.local.get(&key).is_some_and(|l| l.stamp <= stamp) {
                    self.stop_local(&key, &reason, false);
                }
            }
            Msg::Cancel { key, round } => {
                let _ = round;
                if !self.local.contains_key(&key) {
                    self.reservations.remove(&key);
                }
            }
            Msg::Release { key, stamp } => {
                if let Some(c) = self.coord.get_mut(&key)
                    && c.holder
                        .as_ref()
                        .is_some_and(|h| h.node == from && h.stamp <= stamp)
                {
                    c.holder = None;
                }
                self.reconcile_key(now, wall_ms, &key);
            }
        }
        if !quiet {
            self.wake.touch();
        }
        self.update_free_class();
    }

    /// The periodic tick: timeouts, retries, restarts, lease renewals,
    /// reservation expiry.
    ///
    /// It walks every key only when something may have changed since the
    /// last walk: what a key needs depends on inputs, each of which asks
    /// for a walk, and on deadlines, the earliest of which the last walk
    /// noted. The outcome is the same as walking on every tick.
    pub fn handle_tick(&mut self, now: Instant, wall_ms: u64) {
        self.next_tick = now + self.config.tick;
        let reserved = self.reservations.len();
        self.reservations.retain(|_, r| r.until > now);
        if self.reservations.len() != reserved {
            // Room came back: a system task may fit now.
            self.wake.pass = true;
        }
        if self.wake.pass || self.wake.at.is_some_and(|t| now >= t) {
            self.reconcile(now, wall_ms);
        }
        self.renew_leases(now, false);
        self.update_free_class();
    }

    fn name_of(&self, node: NodeId) -> String {
        self.view
            .members
            .get(&node)
            .map_or_else(|| node.to_string(), |m| m.name.clone())
    }

    /// Resources held by tasks here and by reservations (except `except`).
    fn used(&self, except: Option<&TaskKey>) -> Resources {
        let mut used = Resources::default();
        for (k, l) in &self.local {
            if l.holds() && Some(k) != except {
                used = used.plus(&l.demand);
            }
        }
        for (k, r) in &self.reservations {
            if Some(k) != except && !self.local.contains_key(k) {
                used = used.plus(&r.demand);
            }
        }
        used
    }

    /// Free resources now.
    pub fn free(&self) -> Resources {
        self.capacity.minus(&self.used(None))
    }

    /// Resources held (tasks and reservations).
    pub fn used_resources(&self) -> Resources {
        self.used(None)
    }

    /// This node's capacity for tasks.
    pub fn capacity(&self) -> Resources {
        self.capacity
    }

    fn update_free_class(&mut self) {
        let permille = self.capacity.free_permille(&self.used(None));
        let class = u8::try_from((permille * 8 / 1000).min(8)).unwrap_or(8);
        if class != self.free_class {
            self.free_class = class;
            self.events.push_back(Event::FreeClass(class));
        }
    }

    fn recompute_keys(&mut self) {
        if !self.keys_dirty {
            self.recompute_dirty_jobs();
            return;
        }
        self.keys_dirty = false;
        self.dirty_jobs.clear();
        let mut keys = BTreeSet::new();
        for name in self.jobs.names() {
            keys.extend(self.my_keys_of(name));
        }
        self.note_new_keys(&keys);
        self.my_keys = keys;
    }

    /// Recomputes only the keys of jobs that changed (O(their tasks)).
    fn recompute_dirty_jobs(&mut self) {
        for name in std::mem::take(&mut self.dirty_jobs) {
            let old: Vec<TaskKey> = self
                .my_keys
                .range(TaskKey::index(&name, 0)..)
                .take_while(|k| k.job == name)
                .cloned()
                .collect();
            let new: BTreeSet<TaskKey> = self.my_keys_of(&name).collect();
            self.note_new_keys(&new);
            for k in old {
                if !new.contains(&k) {
                    self.my_keys.remove(&k);
                }
            }
            self.my_keys.extend(new);
        }
    }

    /// The keys of job `name` this node coordinates.
    fn my_keys_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = TaskKey> + 'a {
        let count = match self.jobs.get(name) {
            Some(job) if !job.deleted && job.spec.kind != JobType::System => job.spec.count(),
            _ => 0,
        };
        (0..count)
            .map(move |i| TaskKey::index(name, i))
            .filter(|k| self.ring().owner(k.hash()) == Some(self.me))
    }

    /// Keys new to this node that belonged to another coordinator before
    /// the last ring change (their job did not change since) are inherited:
    /// their placements are learned from lease renewals before any auction.
    fn note_new_keys(&mut self, keys: &BTreeSet<TaskKey>) {
        for k in keys {
            if !self.my_keys.contains(k) && !self.coord.contains_key(k) {
                let job_changed = self
                    .jobs
                    .changed_at(&k.job)
                    .is_some_and(|t| t >= self.ring_changed_at);
                let entry = self.coord.entry(k.clone()).or_default();
                if !job_changed {
                    entry.inherited_at = Some(self.ring_changed_at);
                }
            }
        }
    }

    /// Whether this node, as a runner, should hold `key` according to the
    /// desired state it knows, and the version of that knowledge.
    fn wanted(&self, key: &TaskKey) -> (bool, u64) {
        self.wants(key, false)
    }

    /// Whether `key` is wanted by the desired state this node knows, and
    /// the version of that knowledge. A runner holds only its own system
    /// tasks and nothing of an unknown job; a coordinator takes any node's
    /// system task, and a task of a job it does not know yet, for wanted.
    fn wants(&self, key: &TaskKey, as_coordinator: bool) -> (bool, u64) {
        self.wants_in(self.jobs.get(&key.job), key, as_coordinator)
    }

    /// [`wants`](Self::wants) with `key`'s job already looked up.
    fn wants_in(&self, job: Option<&Job>, key: &TaskKey, as_coordinator: bool) -> (bool, u64) {
        match job {
            None => (as_coordinator, 0),
            Some(j) if j.deleted => (false, j.version),
            Some(j) => {
                let wanted = match key.slot {
                    Slot::Index(i) => j.spec.kind != JobType::System && i < j.spec.count(),
                    Slot::Node(n) => {
                        j.spec.kind == JobType::System && (as_coordinator || n == self.me)
                    }
                };
                (wanted, j.version)
            }
        }
    }

    /// Walks every key and acts on those that need it; notes when the
    /// tick must walk again (see [`Wake`]).
    fn reconcile(&mut self, now: Instant, wall_ms: u64) {
        self.recompute_keys();
        let (due, stale, next) = self.scan(now, self.my_keys.iter(), self.coord.iter());
        let acted = !due.is_empty() || !stale.is_empty();
        let local = self.settle(now, wall_ms, &due, stale);
        // A walk that acted changed what it walked: the next tick walks
        // again, and finds the new deadlines.
        self.wake.pass = acted || local.acted;
        self.wake.at = earliest(next, local.next);
        self.wake.leases = true;
    }

    /// Acts on what [`scan`](Self::scan) found, then on local tasks.
    fn settle(
        &mut self,
        now: Instant,
        wall_ms: u64,
        due: &[TaskKey],
        stale: Vec<TaskKey>,
    ) -> Flushed {
        for k in due {
            self.reconcile_key(now, wall_ms, k);
        }
        // Keys this node no longer coordinates (or that are no longer
        // wanted) keep their entry only while a holder is recorded.
        for k in stale {
            let (wanted, _) = self.wanted(&k);
            let owner = self.ring().owner(k.hash()) == Some(self.me);
            let entry = self.coord.get_mut(&k).expect("listed");
            entry.auction = None;
            entry.pending.clear();
            entry.retry_at = None;
            let silent = entry
                .holder
                .as_ref()
                .is_none_or(|h| now.saturating_duration_since(h.heard) > self.config.lease_silence);
            if silent || (!wanted && owner) {
                self.coord.remove(&k);
            }
        }
        self.flush_local(now, wall_ms)
    }

    /// Walks this node's keys and its coordinator entries together (both
    /// sorted) without allocating for keys with nothing to do: returns the
    /// keys that need [`reconcile_key`](Self::reconcile_key) now, the
    /// entries of keys no longer this node's, and the earliest instant at
    /// which time alone changes that for one of the others.
    fn scan<'a>(
        &self,
        now: Instant,
        mine: impl Iterator<Item = &'a TaskKey>,
        coord: impl Iterator<Item = (&'a TaskKey, &'a Coord)>,
    ) -> (Vec<TaskKey>, Vec<TaskKey>, Option<Instant>) {
        let (mut due, mut stale) = (Vec::new(), Vec::new());
        let mut next = None;
        let mut mine = mine.peekable();
        let mut coord = coord.peekable();
        loop {
            match (mine.peek(), coord.peek()) {
                (None, None) => break,
                (Some(m), Some((c, entry))) if m == c => {
                    match self.due(entry, now) {
                        Due::Nothing(until) => next = earliest(next, until),
                        _ => due.push((*m).clone()),
                    }
                    mine.next();
                    coord.next();
                }
                (Some(m), c) if c.is_none_or(|(c, _)| m < c) => {
                    // No entry yet: a new key.
                    due.push((*m).clone());
                    mine.next();
                }
                (_, Some((c, entry))) => {
                    let silent = entry.holder.as_ref().is_none_or(|h| {
                        now.saturating_duration_since(h.heard) > self.config.lease_silence
                    });
                    if silent
                        || entry.auction.is_some()
                        || entry.retry_at.is_some()
                        || !entry.pending.is_empty()
                        || !self.wanted(c).0
                    {
                        stale.push((*c).clone());
                    } else if let Some(h) = &entry.holder {
                        // It turns stale when its holder falls silent.
                        next = earliest(next, Some(h.heard + self.config.lease_silence));
                    }
                    coord.next();
                }
                (Some(_), None) => unreachable!("handled above"),
            }
        }
        (due, stale, next)
    }

    /// What a key this node coordinates needs now.
    fn due(&self, entry: &Coord, now: Instant) -> Due {
        // An auction in flight finishes on its deadline.
        if let Some(a) = &entry.auction {
            return if now >= a.deadline {
                Due::Decide
            } else {
                Due::Nothing(Some(a.deadline))
            };
        }
        if let Some(h) = &entry.holder {
            let done = h.report.state == TaskState::Exited && h.report.exit_code == Some(0);
            if done {
                return Due::Nothing(None);
            }
            if !self.has_member(h.node) {
                return Due::Lost(h.node);
            }
            let limit = if h.confirmed {
                self.config.lease_silence
            } else {
                self.config.bid_timeout * 4
            };
            return if now.saturating_duration_since(h.heard) > limit {
                Due::Silent(h.node)
            } else {
                Due::Nothing(Some(h.heard + limit))
            };
        }
        if let Some(at) = entry.inherited_at
            && now.saturating_duration_since(at) < self.config.learn_grace
        {
            return Due::Nothing(Some(at + self.config.learn_grace));
        }
        if let Some(t) = entry.retry_at
            && now < t
        {
            return Due::Nothing(Some(t));
        }
        Due::Start
    }

    fn reconcile_key(&mut self, now: Instant, wall_ms: u64, key: &TaskKey) {
        if !self.my_keys.contains(key) {
            return;
        }
        if !self.coord.contains_key(key) {
            self.coord.insert(key.clone(), Coord::default());
        }
        match self.due(&self.coord[key], now) {
            Due::Nothing(_) => {}
            Due::Decide => self.decide(now, wall_ms, key),
            Due::Lost(node) => {
                self.events.push_back(Event::Lost {
                    key: key.clone(),
                    node,
                });
                if let Some(c) = self.coord.get_mut(key)
                    && let Some(h) = c.holder.as_mut()
                {
                    h.report.state = TaskState::Lost;
                    h.report.since_ms = wall_ms;
                }
                self.start_auction(now, wall_ms, key, [node].into());
            }
            Due::Silent(node) => self.start_auction(now, wall_ms, key, [node].into()),
            Due::Start => self.start_auction(now, wall_ms, key, BTreeSet::new()),
        }
    }

    fn start_auction(
        &mut self,
        now: Instant,
        wall_ms: u64,
        key: &TaskKey,
        exclude: BTreeSet<NodeId>,
    ) {
        if !self.jobs.contains(&key.job) {
            return;
        }
        self.round += 1;
        let entry = self.coord.entry(key.clone()).or_default();
        let keep_lost = entry
            .holder
            .as_ref()
            .filter(|h| h.report.state == TaskState::Lost)
            .cloned();
        entry.holder = keep_lost;
        entry.auction = Some(Auction {
            round: self.round,
            deadline: now,
            asked: Vec::new(),
            answers: BTreeMap::new(),
            walked: 0,
            reasons: Reasons::default(),
            exclude,
        });
        self.ask_more(now, wall_ms, key, self.config.candidates);
    }

    /// Asks the next `want` eligible members on the ring walk; if none is
    /// left, the key becomes pending.
    fn ask_more(&mut self, now: Instant, wall_ms: u64, key: &TaskKey, want: usize) {
        let Some(job) = self.jobs.get(&key.job).cloned() else {
            self.coord.remove(key);
            return;
        };
        let demand = demand_of(&job.spec);
        let Some(mut auction) = self.coord.get_mut(key).and_then(|c| c.auction.take()) else {
            return;
        };
        // Lazily: a walk of the whole ring is 500,000 members at scale.
        // (Borrows only the view, not all of `self`: the loop records asks.)
        let mut walk = self
            .view
            .ring_with(self.ring_share.as_ref())
            .walk(key.hash())
            .skip(auction.walked);
        let mut asked_now = Vec::new();
        while asked_now.len() < want {
            let Some(node) = walk.next() else {
                break;
            };
            auction.walked += 1;
            if auction.exclude.contains(&node) {
                auction
                    .reasons
                    .add(node, "its copy of the task was lost".into());
                continue;
            }
            let Some(info) = self.view.members.get(&node) else {
                continue;
            };
            match info.eligible(&job.spec, &demand) {
                Ok(()) => asked_now.push(node),
                Err(why) => {
                    auction.reasons.add(node, why);
                }
            }
        }
        if asked_now.is_empty() {
            // The walk is over: nobody can take it now.
            let mut reasons = auction.reasons.lines(|n| self.name_of(n));
            if reasons.is_empty() {
                reasons.push("no live node".into());
            }
            let entry = self.coord.entry(key.clone()).or_default();
            let backoff = if entry.backoff.is_zero() {
                self.config.retry_min
            } else {
                (entry.backoff * 2).min(self.config.retry_max)
            };
            if entry.pending != reasons || entry.pending_since_ms == 0 {
                if entry.pending.is_empty() {
                    entry.pending_since_ms = wall_ms;
                }
                self.events.push_back(Event::Pending {
                    key: key.clone(),
                    reasons: reasons.clone(),
                });
            }
            let entry = self.coord.entry(key.clone()).or_default();
            entry.pending = reasons;
            entry.backoff = backoff;
            entry.retry_at = Some(now + backoff);
            entry.auction = None;
            return;
        }
        auction.deadline = now + self.config.bid_timeout;
        for node in &asked_now {
            auction.asked.push(*node);
            self.outbox.push_back((
                *node,
                Msg::BidRequest {
                    key: key.clone(),
                    round: auction.round,
                    job_version: job.version,
                    demand,
                    spec: job.spec.clone(),
                },
            ));
        }
        if let Some(entry) = self.coord.get_mut(key) {
            entry.auction = Some(auction);
        }
    }

    fn on_answer(
        &mut self,
        now: Instant,
        wall_ms: u64,
        from: NodeId,
        key: &TaskKey,
        round: u64,
        answer: Answer,
    ) {
        let Some(a) = self.coord.get_mut(key).and_then(|c| c.auction.as_mut()) else {
            return;
        };
        if a.round != round || !a.asked.contains(&from) {
            return;
        }
        a.answers.insert(from, answer);
        if a.asked.iter().all(|n| a.answers.contains_key(n)) {
            self.decide(now, wall_ms, key);
        }
    }

    /// Picks the best bid of the auction, or widens it.
    fn decide(&mut self, now: Instant, wall_ms: u64, key: &TaskKey) {
        let Some(entry) = self.coord.get_mut(key) else {
            return;
        };
        let Some(mut auction) = entry.auction.take() else {
            return;
        };
        let spread = self.jobs.get(&key.job).and_then(|j| j.spec.spread.clone());
        // Spread: fewest tasks of the job per attribute value among the
        // bidders, then per node; otherwise the tightest fit.
        let mut per_value: BTreeMap<Option<String>, u32> = BTreeMap::new();
        for a in auction.answers.values() {
            if let Answer::Bid {
                job_tasks,
                spread_value,
                ..
            } = a
            {
                *per_value.entry(spread_value.clone()).or_default() += *job_tasks;
            }
        }
        let mut best: Option<((u32, u32, u64, u64), NodeId)> = None;
        for (node, a) in &auction.answers {
            match a {
                Answer::Bid {
                    score,
                    job_tasks,
                    spread_value,
                } => {
                    let rank = if spread.is_some() {
                        (
                            per_value.get(spread_value).copied().unwrap_or(0),
                            *job_tasks,
                            1000 - *score,
                            tie_break(key, *node),
                        )
                    } else {
                        (0, 0, *score, tie_break(key, *node))
                    };
                    if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                        best = Some((rank, *node));
                    }
                }
                Answer::Decline(why) => {
                    auction.reasons.add(*node, why.clone());
                }
            }
        }
        for node in &auction.asked {
            if !auction.answers.contains_key(node) {
                auction.reasons.add(*node, "did not answer in time".into());
            }
        }
        let Some((_, winner)) = best else {
            // Nobody had room: ask further along the ring.
            let want = auction.asked.len().max(1) * 2;
            auction.asked.clear();
            auction.answers.clear();
            if let Some(entry) = self.coord.get_mut(key) {
                entry.auction = Some(auction);
            }
            self.ask_more(now, wall_ms, key, want);
            return;
        };
        let Some(job) = self.jobs.get(&key.job).cloned() else {
            return;
        };
        let stamp = self.hlc.tick(wall_ms, self.me);
        let entry = self.coord.get_mut(key).expect("present");
        entry.pending.clear();
        entry.pending_since_ms = 0;
        entry.retry_at = None;
        entry.backoff = Duration::ZERO;
        entry.inherited_at = None;
        entry.holder = Some(Holder {
            node: winner,
            stamp,
            report: Report {
                state: TaskState::Assigned,
                restarts: 0,
                exit_code: None,
                reason: None,
                since_ms: wall_ms,
                job_version: job.version,
            },
            heard: now,
            confirmed: false,
        });
        self.events.push_back(Event::Awarded {
            key: key.clone(),
            node: winner,
        });
        for (node, a) in &auction.answers {
            if *node != winner && matches!(a, Answer::Bid { .. }) {
                self.outbox.push_back((
                    *node,
                    Msg::Cancel {
                        key: key.clone(),
                        round: auction.round,
                    },
                ));
            }
        }
        self.outbox.push_back((
            winner,
            Msg::Award {
                key: key.clone(),
                round: auction.round,
                stamp,
                job_version: job.version,
                spec: job.spec.clone(),
            },
        ));
    }

    fn on_bid_request(
        &mut self,
        now: Instant,
        from: NodeId,
        key: TaskKey,
        round: u64,
        demand: Resources,
        spec: &JobSpec,
    ) {
        let answer = |this: &Self, reason: String| Msg::Decline {
            key: key.clone(),
            round,
            reason: {
                let _ = this;
                reason
            },
        };
        if self.draining {
            self.outbox
                .push_back((from, answer(self, "draining".into())));
            return;
        }
        if let Some(me) = self.view.members.get(&self.me) {
            let mut me = NodeInfo::clone(me);
            // Judge by exact capacity here, not the coarse gossip class.
            me.free_class = 8;
            if let Err(why) = me.eligible(spec, &demand) {
                self.outbox.push_back((from, answer(self, why)));
                return;
            }
        }
        if self.local.get(&key).is_some_and(|l| l.stopping.is_none()) {
            // Already running it here: bid (a re-auction after a lost lease).
            let score = self.capacity.free_permille(&self.used(None));
            self.outbox.push_back((
                from,
                Msg::Bid {
                    key,
                    round,
                    score,
                    job_tasks: 0,
                    spread_value: None,
                },
            ));
            return;
        }
        let free = self.capacity.minus(&self.used(Some(&key)));
        if let Err(why) = free.fits(&demand) {
            self.outbox.push_back((from, answer(self, why)));
            return;
        }
        let after = self.used(Some(&key)).plus(&demand);
        let score = self.capacity.free_permille(&after);
        let job_tasks = u32::try_from(
            self.local.keys().filter(|k| k.job == key.job).count()
                + self
                    .reservations
                    .keys()
                    .filter(|k| k.job == key.job && **k != key)
                    .count(),
        )
        .unwrap_or(u32::MAX);
        let spread_value = spec.spread.as_ref().and_then(|attr| {
            let attr = attr.strip_prefix("label.").unwrap_or(attr);
            self.view
                .members
                .get(&self.me)
                .and_then(|m| m.attribute(attr))
        });
        self.reservations.insert(
            key.clone(),
            Reservation {
                demand,
                until: now + self.config.reservation_ttl,
            },
        );
        self.outbox.push_back((
            from,
            Msg::Bid {
                key,
                round,
                score,
                job_tasks,
                spread_value,
            },
        ));
    }

    #[allow(clippy::too_many_arguments)]
    fn on_award(
        &mut self,
        now: Instant,
        wall_ms: u64,
        from: NodeId,
        key: TaskKey,
        round: u64,
        stamp: Stamp,
        job_version: u64,
        spec: Arc<JobSpec>,
    ) {
        self.hlc.observe(&stamp);
        if let Some(l) = self.local.get_mut(&key)
            && l.stopping.is_none()
        {
            // Already held here: keep running, under the newer award.
            if stamp > l.stamp {
                l.stamp = stamp;
            }
            self.outbox.push_back((from, Msg::Accept { key, round }));
            return;
        }
        let demand = demand_of(&spec);
        let reserved = self.reservations.remove(&key).is_some();
        let free = self.capacity.minus(&self.used(Some(&key)));
        let fits = free.fits(&demand);
        if self.draining || (!reserved && fits.is_err()) || (reserved && fits.is_err()) {
            let reason = if self.draining {
                "draining".to_owned()
            } else {
                fits.err().unwrap_or_default()
            };
            self.outbox
                .push_back((from, Msg::Reject { key, round, reason }));
            return;
        }

        self.local.insert(
            key.clone(),
            Local {
                stamp,
                demand,
                spec: spec.clone(),
                job_version,
                state: TaskState::Starting,
                restarts: 0,
                exit_code: None,
                reason: None,
                since_ms: wall_ms,
                restart_at: None,
                last_lease: Some(now),
                stopping: None,
            },
        );
        self.commands.push_back(Command::Start {
            key: key.clone(),
            spec,
            job_version,
            stamp,
            attempt: 0,
        });
        self.outbox.push_back((from, Msg::Accept { key, round }));
        self.update_free_class();
    }

    fn on_lease(
        &mut self,
        now: Instant,
        wall_ms: u64,
        from: NodeId,
        key: TaskKey,
        stamp: Stamp,
        report: Report,
    ) -> bool {
        self.hlc.observe(&stamp);
        let (wanted, version) = self.wants(&key, true);
        if !wanted && version >= report.job_version {
            self.outbox.push_back((
                from,
                Msg::Stop {
                    key,
                    stamp,
                    reason: "no longer wanted".into(),
                },
            ));
            return false;
        }
        let entry = self.coord.entry(key.clone()).or_default();
        match entry.holder.as_mut() {
            Some(h) if h.node == from => {
                h.stamp = h.stamp.max(stamp);
                h.report = report;
                h.heard = now;
                h.confirmed = true;
                return true;
            }
            Some(h)
                if h.report.state != TaskState::Lost || self.view.members.contains_key(&h.node) =>
            {
                // Two holders: the later award wins, everywhere alike.
                let (kept, stopped, stop_stamp) = if stamp > h.stamp {
                    let old = h.clone();
                    *h = Holder {
                        node: from,
                        stamp,
                        report,
                        heard: now,
                        confirmed: true,
                    };
                    (from, old.node, old.stamp)
                } else {
                    (h.node, from, stamp)
                };
                entry.auction = None;
                self.events.push_back(Event::Conflict {
                    key: key.clone(),
                    kept,
                    stopped,
                });
                self.outbox.push_back((
                    stopped,
                    Msg::Stop {
                        key,
                        stamp: stop_stamp,
                        reason: "another node holds the task".into(),
                    },
                ));
            }
            _ => {
                // Learned from the renewal (a new coordinator, or the first
                // renewal after the award), or a lost holder came back.
                entry.holder = Some(Holder {
                    node: from,
                    stamp,
                    report,
                    heard: now,
                    confirmed: true,
                });
                entry.auction = None;
                entry.pending.clear();
                entry.retry_at = None;
                entry.inherited_at = None;
            }
        }
        let _ = wall_ms;
        false
    }

    fn stop_local(&mut self, key: &TaskKey, reason: &str, release: bool) {
        if let Some(l) = self.local.get_mut(key) {
            if l.stopping.is_some() {
                return;
            }
            l.stopping = Some(release);
            l.restart_at = None;
            self.commands.push_back(Command::Stop {
                key: key.clone(),
                reason: reason.to_owned(),
            });
        }
    }

    /// Runner duties: stop what is no longer wanted, restart what the
    /// policy says, follow spec changes, run system jobs.
    fn flush_local(&mut self, now: Instant, wall_ms: u64) -> Flushed {
        // The keys with something to do (most have nothing, most of the
        // time): checked in place, so that only those are copied.
        let mut keys = Vec::new();
        let mut next = None;
        for (key, l) in &self.local {
            if l.stopping.is_some() {
                continue;
            }
            let job = self.jobs.get(&key.job);
            let (wanted, version) = self.wants_in(job, key, false);
            if (!wanted && version >= l.job_version)
                || job.is_some_and(|j| j.version > l.job_version && !j.deleted)
                || l.restart_at.is_some_and(|at| now >= at)
            {
                keys.push(key.clone());
            } else {
                next = earliest(next, l.restart_at);
            }
        }
        let mut acted = !keys.is_empty();
        for key in keys {
            let (wanted, version) = self.wanted(&key);
            let Some(l) = self.local.get(&key) else {
                continue;
            };
            if l.stopping.is_some() {
                continue;
            }
            if !wanted && version >= l.job_version {
                self.stop_local(&key, "no longer wanted", true);
                continue;
            }
            // A newer spec: restart in place if it still fits, else give
            // the task up so that it is placed again.
            if let Some(job) = self.jobs.get(&key.job).cloned()
                && job.version > l.job_version
                && !job.deleted
            {
                if runs_differently(&job.spec, &l.spec) {
                    let demand = demand_of(&job.spec);
                    let free = self.capacity.minus(&self.used(Some(&key)));
                    if free.fits(&demand).is_err() {
                        self.stop_local(&key, "the new spec does not fit here", true);
                        continue;
                    }
                    let l = self.local.get_mut(&key).expect("present");
                    l.spec = job.spec.clone();
                    l.demand = demand;
                    l.job_version = job.version;
                    l.state = TaskState::Starting;
                    l.since_ms = wall_ms;
                    l.restart_at = None;
                    let (stamp, attempt) = (l.stamp, l.restarts);
                    self.commands.push_back(Command::Replace {
                        key: key.clone(),
                        spec: job.spec.clone(),
                        job_version: job.version,
                        stamp,
                        attempt,
                    });
                } else {
                    let l = self.local.get_mut(&key).expect("present");
                    l.job_version = job.version;
                    l.spec = job.spec.clone();
                }
            }
            let l = self.local.get_mut(&key).expect("present");
            if let Some(at) = l.restart_at
                && now >= at
            {
                l.restart_at = None;
                l.restarts += 1;
                l.state = TaskState::Starting;
                l.since_ms = wall_ms;
                self.commands.push_back(Command::Start {
                    key: key.clone(),
                    spec: l.spec.clone(),
                    job_version: l.job_version,
                    stamp: l.stamp,
                    attempt: l.restarts,
                });
            }
        }
        // System jobs: one task here per eligible job.
        let systems: Vec<Job> = if self.draining {
            Vec::new()
        } else {
            self.jobs
                .jobs()
                .filter(|j| !j.deleted && j.spec.kind == JobType::System)
                .cloned()
                .collect()
        };
        if !systems.is_empty()
            && let Some(me) = self.view.members.get(&self.me).cloned()
        {
            for job in systems {
                let key = TaskKey::system(&job.spec.name, self.me);
                if self.local.contains_key(&key) {
                    continue;
                }
                let demand = demand_of(&job.spec);
                let mut exact = NodeInfo::clone(&me);
                exact.free_class = 8;
                if exact.eligible(&job.spec, &demand).is_err() || self.free().fits(&demand).is_err()
                {
                    continue;
                }
                let stamp = self.hlc.tick(wall_ms, self.me);
                self.local.insert(
                    key.clone(),
                    Local {
                        stamp,
                        demand,
                        spec: job.spec.clone(),
                        job_version: job.version,
                        state: TaskState::Starting,
                        restarts: 0,
                        exit_code: None,
                        reason: None,
                        since_ms: wall_ms,
                        restart_at: None,
                        last_lease: None,
                        stopping: None,
                    },
                );
                self.commands.push_back(Command::Start {
                    key,
                    spec: job.spec.clone(),
                    job_version: job.version,
                    stamp,
                    attempt: 0,
                });
                acted = true;
            }
        }
        self.update_free_class();
        Flushed { acted, next }
    }

    /// Sends leases that are due (or all, with `force`).
    fn renew_leases(&mut self, now: Instant, force: bool) {
        if !force && !self.wake.leases && self.wake.lease_at.is_none_or(|t| now < t) {
            return;
        }
        let period = self.config.lease_period;
        let mut out = Vec::new();
        let mut next = None;
        for (key, l) in self.local.iter_mut() {
            // System tasks have no coordinator: their node answers for them.
            if l.stopping.is_some() || matches!(key.slot, Slot::Node(_)) {
                continue;
            }
            let due = force
                || l.last_lease
                    .is_none_or(|t| now.saturating_duration_since(t) >= period);
            if !due {
                next = earliest(next, l.last_lease.map(|t| t + period));
                continue;
            }
            // The view's ring, not `self.ring()`: `self.local` is borrowed.
            let Some(coordinator) = self
                .view
                .ring_with(self.ring_share.as_ref())
                .owner(key.hash())
            else {
                continue;
            };
            l.last_lease = Some(now);
            next = earliest(next, Some(now + period));
            out.push((
                coordinator,
                Msg::Lease {
                    key: key.clone(),
                    stamp: l.stamp,
                    report: l.report(),
                },
            ));
        }
        self.outbox.extend(out);
        // A task with no coordinator (an empty ring) is looked at again
        // when the view changes, an input.
        self.wake.leases = false;
        self.wake.lease_at = next;
    }

    /// Status of `keys` as this node knows them: as their coordinator, or
    /// as their holder.
    pub fn status(&self, keys: &[TaskKey]) -> Vec<TaskStatus> {
        keys.iter()
            .map(|k| {
                if let Some(l) = self.local.get(k) {
                    return TaskStatus {
                        key: k.clone(),
                        node: Some(self.me),
                        state: l.state,
                        restarts: l.restarts,
                        exit_code: l.exit_code,
                        reason: l.reason.clone(),
                        since_ms: l.since_ms,
                        pending: Vec::new(),
                    };
                }
                match self.coord.get(k) {
                    Some(c) => match &c.holder {
                        Some(h) => TaskStatus {
                            key: k.clone(),
                            node: Some(h.node),
                            state: h.report.state,
                            restarts: h.report.restarts,
                            exit_code: h.report.exit_code,
                            reason: h.report.reason.clone(),
                            since_ms: h.report.since_ms,
                            pending: Vec::new(),
                        },
                        None => TaskStatus {
                            key: k.clone(),
                            node: None,
                            state: TaskState::Pending,
                            restarts: 0,
                            exit_code: None,
                            reason: None,
                            since_ms: c.pending_since_ms,
                            pending: c.pending.clone(),
                        },
                    },
                    None => TaskStatus {
                        key: k.clone(),
                        node: None,
                        state: TaskState::Pending,
                        restarts: 0,
                        exit_code: None,
                        reason: None,
                        since_ms: 0,
                        pending: Vec::new(),
                    },
                }
            })
            .collect()
    }

    /// The tasks this node holds.
    pub fn local_tasks(&self) -> Vec<(TaskKey, Stamp, TaskState)> {
        self.local
            .iter()
            .map(|(k, l)| (k.clone(), l.stamp, l.state))
            .collect()
    }

    /// The stamp of a task held here.
    pub fn local_stamp(&self, key: &TaskKey) -> Option<Stamp> {
        self.local.get(key).map(|l| l.stamp)
    }

    /// Every task key of `job` as this node sees it, and the node that
    /// coordinates each (for status queries).
    pub fn keys_of(&self, job: &str) -> Vec<(TaskKey, Option<NodeId>)> {
        let Some(j) = self.jobs.get(job) else {
            return Vec::new();
        };
        let keys: Vec<TaskKey> = match j.spec.kind {
            JobType::System => self
                .view
                .members
                .keys()
                .map(|n| TaskKey::system(job, *n))
                .collect(),
            _ => (0..j.spec.count())
                .map(|i| TaskKey::index(job, i))
                .collect(),
        };
        keys.into_iter()
            .map(|k| {
                let owner = match k.slot {
                    Slot::Node(n) => Some(n),
                    Slot::Index(_) => self.ring().owner(k.hash()),
                };
                (k, owner)
            })
            .collect()
    }
}
