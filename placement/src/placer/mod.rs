//! The placement state machine of one node: [`Placer`], a front over its
//! three roles.
//!
//! - **Coordinator** ([`coordinator`]) of the keys it owns on the ring:
//!   runs auctions, awards, records who holds each key from the holders'
//!   lease renewals, re-auctions when a holder fails, and keeps one holder
//!   per key (the latest award) when two show up.
//! - **Bidder** ([`bidder`]): answers bid requests from what it has free,
//!   reserving it for a short while.
//! - **Runner** ([`runner`]): starts the tasks it is awarded (through
//!   commands to the runtime), applies the restart policy, keeps their
//!   health from their checks' verdicts ([`health`]), renews leases
//!   with each key's current coordinator, and stops tasks that are no
//!   longer wanted.
//!
//! What the roles speak lives beside them: [`msg`] (messages between
//! nodes, runtime commands and reports, events), [`status`] (task states
//! and statuses), [`view`] (the members and their ring), [`reasons`] (why
//! a key waits), [`config`] (tuning).
//!
//! Contract of this front: it owns the roles and what they all read
//! ([`Shared`]: this node, its settings and capacity, the members, the
//! jobs, the award clock and the queues of output), routes each input to
//! the role it concerns, keeps the node's free-capacity class, and decides
//! when the periodic tick has work ([`Wake`]). What to do with a key or a
//! task is decided in the role's own file, never here.

mod bidder;
mod config;
mod coordinator;
mod deploy;
mod health;
mod msg;
mod reasons;
mod runner;
mod status;
mod view;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use shoal_gossip::{Instant, NodeId};
use shoal_model::{Deployment, JobSpec, JobType};

use self::bidder::Bidder;
pub use self::config::PlacementConfig;
use self::coordinator::Coordinator;
use self::deploy::Deployer;
pub use self::health::{CHECK_OUTPUT_MAX, Health, Verdict};
use self::msg::Answer;
pub use self::msg::{Command, DeployStep, Event, ExitReason, Msg, Outcome, PROTOCOL_VERSION};
pub use self::runner::Adopted;
use self::runner::{Exit, Flushed, Runner};
pub use self::status::{Report, TaskState, TaskStatus};
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
    /// The version at which the job's current run began (its last create
    /// or update; a scale keeps the run). A batch task that completed in
    /// an earlier run runs again.
    pub run_version: u64,
    /// Batch jobs: the indexes of the current run that finished for good,
    /// as the job's replicated document records them (see
    /// [`Event::Finished`]). None of them is placed, bid for, started or
    /// restarted again; a running one recorded complete is stopped.
    pub finished: Arc<BTreeMap<u32, Finished>>,
    /// Service jobs with `[update]`: the job's latest rolling deployment,
    /// as its replicated document records it (see `placer/deploy.rs`).
    pub deployment: Option<Arc<Deployment>>,
    /// The jobs of its `after` not yet recorded ready, as its replicated
    /// document says: while there is one, none of its tasks is placed.
    pub waiting: Arc<Vec<String>>,
}

/// A batch task that finished for good, as recorded in its job's document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    /// It exited 0 (complete); otherwise it failed and its restart policy
    /// gave up (attempts exhausted, or `mode = "never"`).
    pub ok: bool,
    /// The node that ran it (`None` when the record names no known id).
    pub node: Option<NodeId>,
    /// Its last exit code.
    pub exit_code: Option<i32>,
    /// When it ended (ms since the Unix epoch).
    pub at_ms: u64,
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
    shared: Shared,
    coordinator: Coordinator,
    bidder: Bidder,
    runner: Runner,
    deployer: Deployer,
    next_tick: Instant,
    /// When the tick must next walk every key (see
    /// [`handle_tick`](Self::handle_tick)).
    wake: Wake,
    /// The free-capacity class last announced ([`Event::FreeClass`]).
    free_class: u8,
}

/// What every role reads: this node, its settings and capacity, the
/// members and the jobs it knows; the clock of the awards it stamps and
/// the queues of what it has to say, which every role writes.
struct Shared {
    me: NodeId,
    config: PlacementConfig,
    /// What this node offers tasks: its capacity minus its reserve.
    capacity: Resources,
    draining: bool,
    view: Arc<View>,
    ring_share: Option<Arc<dyn RingShare>>,
    jobs: JobTable,
    hlc: Hlc,
    out: Outbox,
    /// Set while this node reaches fewer than half of the members it
    /// knew: it keeps its own tasks and replaces nobody's (see [`CutOff`]).
    cut_off: Option<CutOff>,
}

/// This node reaches only `reachable` of the `known` members it knew
/// (itself included; those that left are not counted), fewer than half:
/// it is on the small side of a partition, or alone. It keeps running its
/// own tasks, but its coordinator replaces no task whose holder it lost
/// and places nothing new: the larger side, if there is one, does that,
/// as each job's `[disconnect]` says. No quorum is asked of anyone; the
/// node decides from its own view (docs/placement.md, "Partitions").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CutOff {
    /// Members up (alive or suspect), this node included.
    pub reachable: usize,
    /// Members it knew: up, suspect or failed (not left, not forgotten).
    pub known: usize,
}

impl CutOff {
    /// The rule: `Some` when more than half of the `known` members are
    /// unreachable.
    pub fn of(reachable: usize, known: usize) -> Option<CutOff> {
        let unreachable = known.saturating_sub(reachable);
        (unreachable * 2 > known).then_some(CutOff { reachable, known })
    }

    /// Why a key waits on a node that is cut off (the same words whatever
    /// the counts, so that a key's reason changes only with the state).
    pub const REASON: &'static str = "this node reaches fewer than half of the members it knew: it keeps its own tasks and replaces or places no other until it reaches most of them again (members gone for good: `shoal node forget`)";
}

/// What the placer has to say, in the order it was said.
#[derive(Debug, Default)]
struct Outbox {
    /// Messages to nodes (possibly this one).
    messages: VecDeque<(NodeId, Msg)>,
    /// Commands for the runtime.
    commands: VecDeque<Command>,
    events: VecDeque<Event>,
}

impl Shared {
    /// The ring of the members in view.
    fn ring(&self) -> &Ring {
        self.view.ring_with(self.ring_share.as_ref())
    }

    /// Whether `node` is in the member list.
    fn has_member(&self, node: NodeId) -> bool {
        self.view.contains(node)
    }

    /// A member's name, or its id when it is not a member.
    fn name_of(&self, node: NodeId) -> String {
        self.view
            .member(node)
            .map_or_else(|| node.to_string(), |m| m.name.clone())
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

    /// The record of `key`'s task having finished for good, if its job
    /// (alive) holds one for its current run.
    fn finished(&self, key: &TaskKey) -> Option<&Finished> {
        let i = key.index_number()?;
        let job = self.jobs.get(&key.job)?;
        if job.deleted {
            return None;
        }
        job.finished.get(&i)
    }

    /// The rolling deployment of job `name` in progress, if any (only a
    /// service job with `[update]` has one).
    fn deployment(&self, name: &str) -> Option<&Deployment> {
        let j = self.jobs.get(name)?;
        if j.deleted || j.spec.kind != JobType::Service || j.spec.update.is_none() {
            return None;
        }
        j.deployment
            .as_deref()
            .filter(|d| d.status.in_progress() && d.version <= j.version)
    }

    /// The deployment in progress that replaces `key`'s index now or
    /// did (its index is active or done).
    fn replacing(&self, key: &TaskKey) -> Option<&Deployment> {
        let i = key.index_number()?;
        self.deployment(&key.job).filter(|d| d.replaces(i))
    }

    /// The node that drives job `name`'s deployments: the owner of its
    /// job key, `name/0`.
    fn driver_of(&self, name: &str) -> Option<NodeId> {
        self.ring().owner(TaskKey::index(name, 0).hash())
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

/// The earlier of two optional instants.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

fn demand_of(spec: &JobSpec) -> Resources {
    Resources::of_task(&spec.task.resources)
}

/// Resources held by tasks here and by reservations (except `except`'s).
fn held(runner: &Runner, bidder: &Bidder, except: Option<&TaskKey>) -> Resources {
    runner.held(except).plus(&bidder.reserved(runner, except))
}

impl std::fmt::Debug for Placer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placer")
            .field("me", &self.shared.me)
            .field("local", &self.runner.len())
            .field("coordinated", &self.coordinator.len())
            .finish_non_exhaustive()
    }
}

impl Placer {
    /// A node's placement, offering `capacity` (its capacity minus its
    /// reserve).
    pub fn new(me: NodeId, config: PlacementConfig, capacity: Resources, now: Instant) -> Placer {
        Placer {
            next_tick: now + config.tick,
            wake: Wake {
                pass: true,
                leases: true,
                ..Wake::default()
            },
            coordinator: Coordinator::new(now),
            bidder: Bidder::default(),
            runner: Runner::default(),
            deployer: Deployer::default(),
            free_class: 8,
            shared: Shared {
                me,
                capacity,
                draining: false,
                view: Arc::new(View::new(Vec::new(), config.vnodes)),
                ring_share: None,
                jobs: JobTable::default(),
                hlc: Hlc::default(),
                out: Outbox::default(),
                cut_off: None,
                config,
            },
        }
    }

    /// This node.
    pub fn me(&self) -> NodeId {
        self.shared.me
    }

    /// The ring in use.
    pub fn ring(&self) -> &Ring {
        self.shared.ring()
    }

    /// Builds rings through `share`, which other placers of the process
    /// use too, so that equal rings are held once (the simulator's).
    pub fn share_rings(&mut self, share: Arc<dyn RingShare>) {
        self.shared.ring_share = Some(share);
        self.wake.touch();
    }

    /// The next message to send, to a node (possibly this one).
    #[must_use]
    pub fn poll_message(&mut self) -> Option<(NodeId, Msg)> {
        self.shared.out.messages.pop_front()
    }

    /// The next command for the runtime.
    #[must_use]
    pub fn poll_command(&mut self) -> Option<Command> {
        self.shared.out.commands.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.shared.out.events.pop_front()
    }

    /// When to call [`handle_tick`](Self::handle_tick).
    pub fn next_tick(&self) -> Instant {
        self.next_tick
    }

    /// The alive members (this node included, when it is alive).
    pub fn set_members(&mut self, now: Instant, wall_ms: u64, members: Vec<NodeInfo>) {
        self.wake.touch();
        let new = View::new(members, self.shared.config.vnodes);
        if new.same_ids(&self.shared.view) {
            Arc::make_mut(&mut self.shared.view).take_records(new);
        } else {
            let lost = self.shared.view.ids().any(|id| !new.contains(id));
            self.shared.view = Arc::new(new);
            self.coordinator.ring_changed(now, lost);
        }
        self.reconcile(now, wall_ms);
    }

    /// Takes a member list and ring that other placers may share (the
    /// simulator's scale mode: 500,000 placers, one view). Built with the
    /// same `vnodes` as this placer's configuration.
    pub fn set_view(&mut self, now: Instant, wall_ms: u64, view: Arc<View>) {
        self.wake.touch();
        let same_ids = view.same_ids(&self.shared.view);
        self.shared.view = view;
        if !same_ids {
            // Whether members went is not worked out here (the view is
            // shared and large): taken as so.
            self.coordinator.ring_changed(now, true);
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
        let applied = Arc::make_mut(&mut self.shared.view).apply(
            changed,
            gone,
            self.shared.ring_share.as_ref(),
        );
        if applied.ring_changed {
            self.coordinator.ring_changed(now, !gone.is_empty());
        } else if !applied.roomier.is_empty() {
            self.coordinator
                .retry_where_room_appeared(&self.shared, now, &applied.roomier);
        }
        self.reconcile(now, wall_ms);
    }

    /// Whether `node` is in the member list.
    pub fn has_member(&self, node: NodeId) -> bool {
        self.shared.has_member(node)
    }

    /// Sets whether this node is cut off from most of the members it knew
    /// (see [`CutOff`]). Takes effect at the next reconcile: call it before
    /// [`update_members`](Self::update_members) hands over the members
    /// that went away, so that no key is auctioned in between. Back in
    /// touch, the coordinator learns its keys' holders again before it
    /// places any (see `Coordinator::reconnected`).
    pub fn set_cut_off(&mut self, now: Instant, cut_off: Option<CutOff>) {
        if self.shared.cut_off.is_some() != cut_off.is_some() {
            self.wake.touch();
            if cut_off.is_none() {
                self.coordinator.reconnected(self.shared.me, now);
            }
        }
        self.shared.cut_off = cut_off;
    }

    /// Whether this node is cut off from most of the members it knew.
    pub fn cut_off(&self) -> Option<CutOff> {
        self.shared.cut_off
    }

    /// The desired state: every job (deleted ones too, to stop their tasks).
    pub fn set_jobs(&mut self, now: Instant, wall_ms: u64, jobs: Vec<Job>) {
        self.wake.touch();
        let mut next = JobTable::default();
        for j in jobs {
            let changed_at = self.coordinator.note_job_change(&self.shared.jobs, now, &j);
            next.put(j, changed_at);
        }
        if next.len() != self.shared.jobs.len() {
            self.coordinator.recompute_all();
        }
        self.shared.jobs = next;
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
            let changed_at = self.coordinator.note_job_change(&self.shared.jobs, now, &j);
            names.insert(j.spec.name.clone());
            self.shared.jobs.put(j, changed_at);
        }
        for name in removed {
            if self.shared.jobs.remove(name) {
                self.coordinator.note_job_removed(name);
            }
            names.insert(name.clone());
        }
        if self.coordinator.all_dirty() {
            self.reconcile(now, wall_ms);
            return;
        }
        self.coordinator.recompute_keys(&self.shared);
        let (mut due, mut stale) = (Vec::new(), Vec::new());
        for name in &names {
            let (d, s) = self.coordinator.scan_job(&self.shared, now, name);
            due.extend(d);
            stale.extend(s);
        }
        self.settle(now, wall_ms, &due, stale);
    }

    /// Stop (or resume) taking tasks; draining also stops the tasks here so
    /// that their coordinators place them elsewhere.
    pub fn set_draining(&mut self, now: Instant, wall_ms: u64, draining: bool) {
        self.wake.touch();
        self.shared.draining = draining;
        if draining {
            self.runner.stop_all(&mut self.shared.out, "node draining");
            self.bidder.clear();
        }
        self.reconcile(now, wall_ms);
    }

    /// Whether this node is draining.
    pub fn draining(&self) -> bool {
        self.shared.draining
    }

    /// Tasks found after an agent restart, still running or
    /// ([`Adopted::ended`]) ended while it was away: held again (the ended
    /// ones restarted by their policy), and their coordinators told at
    /// once (they stop any copy that is not the later award).
    pub fn adopt(&mut self, now: Instant, wall_ms: u64, tasks: Vec<Adopted>) {
        self.wake.touch();
        let ended: Vec<TaskKey> = tasks
            .iter()
            .filter(|t| t.ended)
            .map(|t| t.key.clone())
            .collect();
        self.runner.adopt(&mut self.shared.hlc, now, tasks);
        for key in &ended {
            let _ = self
                .runner
                .exited(&mut self.shared, now, wall_ms, key, ExitReason::Unknown);
        }
        self.reconcile(now, wall_ms);
    }

    /// The runtime started a task, with these host `ports` (by port
    /// name; its lease tells its coordinator).
    pub fn task_running(
        &mut self,
        now: Instant,
        wall_ms: u64,
        key: &TaskKey,
        ports: BTreeMap<String, u16>,
    ) {
        self.wake.touch();
        self.runner.started(now, wall_ms, key, ports);
        self.renew_lease_of(now, key);
        self.flush_local(now, wall_ms);
    }

    /// A check of a task this node runs gave `verdict` (see
    /// [`Verdict`] and the rule in `placer/health.rs`): the task's health
    /// follows, its coordinator hears of a change at once, and a task a
    /// restarting check finds unhealthy is restarted.
    pub fn task_health(&mut self, now: Instant, wall_ms: u64, key: &TaskKey, verdict: Verdict) {
        if self
            .runner
            .checked(&mut self.shared, now, wall_ms, key, verdict)
        {
            self.renew_lease_of(now, key);
        }
    }

    /// The runtime saw a task end.
    pub fn task_exited(&mut self, now: Instant, wall_ms: u64, key: &TaskKey, why: ExitReason) {
        self.wake.touch();
        if let ExitReason::PortInUse { port, reason } = &why {
            self.bidder.port_in_use(now, *port, reason.clone());
        }
        match self.runner.exited(&mut self.shared, now, wall_ms, key, why) {
            Exit::NotHeld => {}
            Exit::Gone => self.update_free_class(),
            Exit::Ended => {
                self.renew_lease_of(now, key);
                self.update_free_class();
            }
        }
    }

    /// Handles a message from `from` (possibly this node).
    pub fn handle_message(&mut self, now: Instant, wall_ms: u64, from: NodeId, msg: Msg) {
        // A renewal or an acceptance from the known holder only moves its
        // deadlines later: the common message leaves the tick idle.
        // Anything else may make a key due.
        let mut quiet = false;
        let shared = &mut self.shared;
        match msg {
            Msg::BidRequest {
                key,
                round,
                demand,
                spec,
                ..
            } => {
                let answer = self
                    .bidder
                    .answer(shared, &self.runner, now, &key, demand, &spec);
                shared
                    .out
                    .messages
                    .push_back((from, answer.into_msg(key, round)));
            }
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
                self.coordinator
                    .on_answer(shared, now, wall_ms, from, &key, round, answer);
            }
            Msg::Decline { key, round, reason } => {
                let answer = Answer::Decline(reason);
                self.coordinator
                    .on_answer(shared, now, wall_ms, from, &key, round, answer);
            }
            Msg::Award {
                key,
                round,
                stamp,
                job_version,
                spec,
            } => {
                let taken = self.runner.take_award(
                    shared,
                    &mut self.bidder,
                    now,
                    wall_ms,
                    &key,
                    stamp,
                    job_version,
                    spec,
                );
                let answer = match taken {
                    Ok(()) => Msg::Accept { key, round },
                    Err(reason) => Msg::Reject { key, round, reason },
                };
                shared.out.messages.push_back((from, answer));
            }
            Msg::Accept { key, round: _ } => {
                quiet = self.coordinator.on_accept(now, from, &key);
            }
            Msg::Reject { key, .. } => {
                self.coordinator.on_reject(shared, now, wall_ms, from, &key);
            }
            Msg::Lease { key, stamp, report } => {
                quiet = self
                    .coordinator
                    .on_lease(shared, now, from, key, stamp, report);
            }
            Msg::Stop { key, stamp, reason } => {
                self.runner.on_stop(&mut shared.out, &key, stamp, &reason);
            }
            Msg::Cancel { key, round: _ } => self.bidder.cancel(&self.runner, &key),
            Msg::Release { key, stamp } => {
                self.coordinator
                    .on_release(shared, now, wall_ms, from, &key, stamp);
            }
            Msg::Progress {
                key,
                version,
                health,
                replacing,
            } => {
                self.deployer
                    .on_progress(now, &key, version, health, replacing);
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
        self.next_tick = now + self.shared.config.tick;
        if self.bidder.expire(now) {
            // Room came back: a system task may fit now.
            self.wake.pass = true;
        }
        if self.wake.pass || self.wake.at.is_some_and(|t| now >= t) {
            self.reconcile(now, wall_ms);
        }
        self.renew_leases(now);
        self.update_free_class();
    }

    /// Free resources now.
    pub fn free(&self) -> Resources {
        self.shared.capacity.minus(&self.used_resources())
    }

    /// Resources held (tasks and reservations).
    pub fn used_resources(&self) -> Resources {
        held(&self.runner, &self.bidder, None)
    }

    /// This node's capacity for tasks.
    pub fn capacity(&self) -> Resources {
        self.shared.capacity
    }

    /// Announces the free-capacity class ([`Event::FreeClass`]) when it
    /// changed.
    fn update_free_class(&mut self) {
        let permille = self
            .shared
            .capacity
            .free_permille(&held(&self.runner, &self.bidder, None));
        let class = u8::try_from((permille * 8 / 1000).min(8)).unwrap_or(8);
        if class != self.free_class {
            self.free_class = class;
            self.shared.out.events.push_back(Event::FreeClass(class));
        }
    }

    /// Walks every key and acts on those that need it; notes when the
    /// tick must walk again (see [`Wake`]).
    fn reconcile(&mut self, now: Instant, wall_ms: u64) {
        self.coordinator.recompute_keys(&self.shared);
        let (due, stale, next) = self.coordinator.scan_all(&self.shared, now);
        let acted = !due.is_empty() || !stale.is_empty();
        let local = self.settle(now, wall_ms, &due, stale);
        let deploy = self.deployer.drive(&mut self.shared, now);
        // A walk that acted changed what it walked: the next tick walks
        // again, and finds the new deadlines.
        self.wake.pass = acted || local.acted;
        self.wake.at = earliest(earliest(next, local.next), deploy);
        self.wake.leases = true;
    }

    /// Acts on the keys a scan found (`due` ones, `stale` entries), then
    /// on local tasks.
    fn settle(
        &mut self,
        now: Instant,
        wall_ms: u64,
        due: &[TaskKey],
        stale: Vec<TaskKey>,
    ) -> Flushed {
        self.coordinator
            .settle(&mut self.shared, now, wall_ms, due, stale);
        self.flush_local(now, wall_ms)
    }

    /// The runner's own duties (see [`Runner::flush`]).
    fn flush_local(&mut self, now: Instant, wall_ms: u64) -> Flushed {
        let flushed = self
            .runner
            .flush(&mut self.shared, &self.bidder, now, wall_ms);
        self.update_free_class();
        flushed
    }

    /// Sends `key`'s lease at once: its task started or ended, which its
    /// coordinator should hear before the next renewal. Only that key's:
    /// renewing every lease here on each start made a burst of `n` starts
    /// on a node send `n²` leases (tens of thousands in `bench-placement`,
    /// enough to fill the queues to peers and drop bids and awards).
    fn renew_lease_of(&mut self, now: Instant, key: &TaskKey) {
        let next = self.runner.renew_lease_of(&mut self.shared, now, key);
        self.wake.lease_at = earliest(self.wake.lease_at, next);
    }

    /// Sends leases that are due.
    fn renew_leases(&mut self, now: Instant) {
        if !self.wake.leases && self.wake.lease_at.is_none_or(|t| now < t) {
            return;
        }
        let next = self.runner.renew_leases(&mut self.shared, now);
        // A task with no coordinator (an empty ring) is looked at again
        // when the view changes, an input.
        self.wake.leases = false;
        self.wake.lease_at = next;
    }

    /// Status of `keys` as this node knows them: as their coordinator, or
    /// as their holder; a batch task nobody holds any more, from its
    /// job's record of how it finished.
    pub fn status(&self, keys: &[TaskKey]) -> Vec<TaskStatus> {
        keys.iter()
            .map(|k| {
                // A key being replaced: its coordinator knows both copies
                // (and shows the old one until the new one is healthy),
                // even when this node runs the new one. A copy this node
                // is stopping (the old one of an index a deployment is
                // done with, say) does not hide the holder the
                // coordinator knows elsewhere.
                self.coordinator
                    .replacing_status(&self.shared, k)
                    .or_else(|| {
                        self.runner
                            .status(self.shared.me, k)
                            .filter(|_| self.runner.runs(k))
                    })
                    .or_else(|| self.coordinator.held_elsewhere(&self.shared, k))
                    .or_else(|| self.runner.status(self.shared.me, k))
                    .unwrap_or_else(|| self.coordinator.status(&self.shared, k))
            })
            .collect()
    }

    /// The jobs whose rolling deployment this node drives now (it owns
    /// their job key).
    pub fn driving(&self) -> usize {
        self.deployer.len()
    }

    /// Whether this node drives a deployment of `job` now.
    pub fn drives(&self, job: &str) -> bool {
        self.deployer.drives(job)
    }

    /// The status of `key`'s task as this node runs it, if it does (its
    /// holder's own account, whoever coordinates it).
    pub fn local_status(&self, key: &TaskKey) -> Option<TaskStatus> {
        self.runner.status(self.shared.me, key)
    }

    /// The tasks this node holds.
    pub fn local_tasks(&self) -> Vec<(TaskKey, Stamp, TaskState)> {
        self.runner.tasks()
    }

    /// The stamp of a task held here.
    pub fn local_stamp(&self, key: &TaskKey) -> Option<Stamp> {
        self.runner.stamp(key)
    }

    /// The node that drives `name` (owns the key `name/0` on the ring):
    /// the one node that does per-job work for it (deployments, `after`
    /// checks, a trigger's evaluation).
    pub fn driver(&self, name: &str) -> Option<NodeId> {
        self.shared.driver_of(name)
    }

    /// The jobs that wait for others (`after`) and that this node drives
    /// (it owns their job key), with the jobs each still waits for: this
    /// node checks those and records the ones found ready.
    pub fn waiting_here(&self) -> Vec<(String, Vec<String>)> {
        self.shared
            .jobs
            .jobs()
            .filter(|j| !j.deleted && !j.waiting.is_empty())
            .filter(|j| self.shared.driver_of(&j.spec.name) == Some(self.shared.me))
            .map(|j| (j.spec.name.clone(), j.waiting.to_vec()))
            .collect()
    }

    /// Every task key of `job` as this node sees it, and the node that
    /// coordinates each (for status queries).
    pub fn keys_of(&self, job: &str) -> Vec<(TaskKey, Option<NodeId>)> {
        let Some(j) = self.shared.jobs.get(job) else {
            return Vec::new();
        };
        let keys: Vec<TaskKey> = match j.spec.kind {
            JobType::System => self
                .shared
                .view
                .ids()
                .map(|n| TaskKey::system(job, n))
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
