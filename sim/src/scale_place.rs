//! Scale mode's placement: the real [`shoal_placement::Placer`] on every
//! node of a cluster too large for full mode (500,000), wired as full mode
//! wires it, with what full mode spends per node cut down to what a
//! placement wave needs:
//!
//! - membership is not simulated: every placer shares one [`View`] of the
//!   whole cluster ([`Placer::set_view`]), as if gossip had settled (scale
//!   mode's membership model covers detection; this covers placement);
//! - a job reaches only the nodes that coordinate one of its keys (a
//!   runner needs no job to hold a task: awards carry the spec), 20–300 ms
//!   after submission, as replication delivers it everywhere;
//! - placement messages ride reliable streams over the simulated network
//!   (latency per link class); a fake runtime starts and stops tasks
//!   50 ms after it is told;
//! - the placers tick every second (100 ms in the agent) and renew leases
//!   every 10 s (1 s in the agent), to keep 500,000 placers within memory
//!   and wall time; a lease's period does not change how tasks are placed.
//!
//! Measured: placement latency (submission to first start), placements
//! per second, packing against a centralized best-fit of the same tasks,
//! load imbalance, duplicates, tasks left waiting while a node had room.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_core::{Drained, drain_placer};
use shoal_gossip::{Instant, NodeId};
use shoal_placement::{
    Command, CutOff, Job, Msg, NodeInfo, PlacementConfig, Placer, Resources, TaskKey, View,
};

use crate::SimError;
use crate::net::{NetCounters, Network, Topology};
use crate::params::{Mode, Params};
use crate::queue::EventQueue;
use crate::report::{Check, Report, quantile};
use crate::scale::CrashPlan;
use crate::workload::{self, JOB_DELAY_US, JobPlan, RUNTIME_DELAY, WALL0_MS};

/// One placement message in this many is encoded to count bytes.
const BYTES_SAMPLE: u64 = 64;

enum Ev {
    /// Job `job` reaches node `node`.
    Job {
        node: u32,
        job: u32,
    },
    /// Boxed: a message is large, and events move in the heap.
    Message {
        to: u32,
        from: u32,
        msg: Box<Msg>,
    },
    Tick {
        node: u32,
    },
    Started {
        node: u32,
        key: TaskKey,
    },
    Stopped {
        node: u32,
        key: TaskKey,
    },
    Submit,
    /// Crash `plan` happens.
    Crash {
        plan: u32,
    },
    /// Node `node` learns that the victim of crash `plan` is down.
    Learn {
        node: u32,
        plan: u32,
    },
    /// The cut of the [`CutPlan`] begins.
    Cut,
    /// It heals.
    Heal,
    /// The datacenters unreachable from node `node` are now those of
    /// `mask` (bit d: datacenter d).
    Reach {
        node: u32,
        mask: u32,
    },
}

/// A cut, for the placers ([`CutWave::run`]): when it begins and heals, each
/// datacenter's side, and when each node's fact per datacenter changed
/// (from the model of `crate::scale_cut`).
#[derive(Clone, Debug, Default)]
pub struct CutPlan {
    /// When the cut begins, in seconds of simulated time.
    pub at: f64,
    /// When it heals.
    pub heal: f64,
    /// Each datacenter's side.
    pub sides: Vec<u16>,
    /// (when, node, the datacenters unreachable from it from then on as a
    /// mask: bit d for datacenter d), in no particular order.
    pub changes: Vec<(f64, u32, u32)>,
}

struct Task {
    submitted: Option<Instant>,
    first_run: Option<Instant>,
    runners: Vec<u32>,
    ever_dup: bool,
    /// When its last runner crashed, until it runs again.
    lost_at: Option<Instant>,
}

struct World {
    p: Params,
    q: EventQueue<Ev>,
    net: Network,
    rng: ChaCha8Rng,
    placers: Vec<Placer>,
    /// The view every placer shares.
    view: Arc<View>,
    caps: Vec<Resources>,
    used: Vec<Resources>,
    /// The tasks each node runs (few per node).
    procs: Vec<Vec<(TaskKey, u32)>>,
    tick_at: Vec<Option<Instant>>,
    jobs: Vec<JobPlan>,
    tasks: Vec<Task>,
    submitted_jobs: usize,
    first_submit: Option<Instant>,
    last_first_run: Option<Instant>,
    place_msgs: u64,
    place_bytes_sampled: u64,
    overcommits: u64,
    first_violation: Option<String>,
    events: u64,
    duplicates_ever: u64,
    /// Crashes during the wave, from the membership model.
    plans: Vec<CrashPlan>,
    dead: Vec<bool>,
    /// Per node, the crashes it knows of (bit k: plan k).
    known: Vec<u64>,
    /// The view of each set of known crashes, shared by the nodes that
    /// know exactly that set.
    views: BTreeMap<u64, Arc<View>>,
    /// The crashes that happened so far.
    crashed: u64,
    replace_ms: Vec<f64>,
    /// During a cut: each datacenter's side.
    sides: Vec<u16>,
    /// The view of a node that finds the datacenters of a mask
    /// unreachable, shared by the nodes that find exactly those.
    dc_views: BTreeMap<u32, Arc<View>>,
}

fn node_id(i: usize) -> NodeId {
    NodeId(i as u64 + 1)
}

fn index_of(id: NodeId) -> usize {
    (id.0 as usize).saturating_sub(1)
}

/// The placement wave of the `jobs` scenario in scale mode; with `plans`,
/// nodes crash during it and each node's placer drops the victim when the
/// membership model says that node learned of it.
pub fn run(
    params: Params,
    plans: Vec<CrashPlan>,
    progress: &mut dyn FnMut(&crate::Progress),
) -> Result<Report, SimError> {
    Ok(build(params, plans)?.drive(progress))
}

/// The placement wave of a cut, ready to run ([`prepare_cut`],
/// [`CutWave::run`]).
pub struct CutWave(World);

/// The placement wave for a cut that begins at `cut_at` seconds: built
/// before the membership model runs, so that a wave still being written
/// at the cut is refused at once (jobs written during a cut would reach
/// each side only after the heal, which is not modeled).
pub fn prepare_cut(params: Params, cut_at: f64) -> Result<CutWave, SimError> {
    let w = build(params, Vec::new())?;
    let tasks = w.tasks.len();
    let wave_s = tasks as f64 / w.p.effective_tasks_per_sec(tasks).max(1e-9);
    if 1.0 + wave_s >= cut_at {
        return Err(SimError::Params(format!(
            "the wave of jobs would still be written when the cut begins at {cut_at:.0} s \
             ({tasks} tasks over {wave_s:.0} s from 1 s): give --tasks-per-sec {} or more, \
             or --fill 0 for no jobs",
            (tasks as f64 / (cut_at - 2.0).max(1.0)).ceil()
        )));
    }
    Ok(CutWave(w))
}

impl CutWave {
    /// Runs the wave with the cut: the placers' network is cut at
    /// `cut.at` and healed at `cut.heal`, and each node's placer loses the
    /// members of the datacenters unreachable from it (and is cut off when
    /// they are most of the cluster) when `cut.changes` says, as the node
    /// core does with a datacenter probed for reach only.
    pub fn run(
        self,
        cut: CutPlan,
        progress: &mut dyn FnMut(&crate::Progress),
    ) -> Result<Report, SimError> {
        let mut w = self.0;
        if cut.sides.len() > 32 {
            return Err(SimError::Params(
                "scale mode's placers follow a cut of at most 32 datacenters".into(),
            ));
        }
        let at = |s: f64| Instant::ZERO + Duration::from_secs_f64(s);
        w.q.push(at(cut.at), Ev::Cut);
        w.q.push(at(cut.heal), Ev::Heal);
        for &(t, node, mask) in &cut.changes {
            w.q.push(at(t), Ev::Reach { node, mask });
        }
        w.sides = cut.sides;
        Ok(w.drive(progress))
    }
}

fn build(params: Params, plans: Vec<CrashPlan>) -> Result<World, SimError> {
    let n = params.nodes;
    if n < 2 {
        return Err(SimError::Params("at least 2 nodes".into()));
    }
    if plans.len() > 64 {
        return Err(SimError::Params(format!(
            "{} crashes: scale mode's placers follow at most 64",
            plans.len()
        )));
    }

    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let topo = Topology::new(n, params.dcs, params.zones);
    let mut caps = Vec::with_capacity(n);
    let mut infos = Vec::with_capacity(n);
    for i in 0..n {
        let cap = workload::node_capacity(&mut rng);
        let addr = std::net::SocketAddr::from(([10, 0, 0, 1], 5481));
        let meta = workload::node_meta(i, cap, topo.dc(i), topo.zone(i), addr);
        infos.push(NodeInfo::from_meta(node_id(i), &meta));
        caps.push(cap);
    }
    let config = PlacementConfig {
        tick: Duration::from_secs(1),
        lease_period: Duration::from_secs(10),
        lease_silence: Duration::from_secs(30),
        // A coordinator that inherits keys (a crash moved them) waits for
        // one round of renewals before auctioning those whose holder it
        // does not know: with the agent's 3 s and 10 s renewals, it would
        // start second copies of tasks that run fine.
        learn_grace: Duration::from_secs(12),
        ..PlacementConfig::default()
    };
    let view = Arc::new(View::new(infos, config.vnodes));
    let now = Instant::ZERO;
    let mut placers = Vec::with_capacity(n);
    for (i, cap) in caps.iter().enumerate() {
        let mut p = Placer::new(node_id(i), config.clone(), *cap, now);
        p.set_view(now, WALL0_MS, view.clone());
        placers.push(p);
    }
    let cluster_cpu: u64 = caps.iter().map(|c| c.cpus_milli).sum();
    let jobs = workload::plan_jobs(&mut rng, cluster_cpu, params.fill);
    let tasks: Vec<Task> = jobs
        .iter()
        .flat_map(|j| 0..j.count)
        .map(|_| Task {
            submitted: None,
            first_run: None,
            runners: Vec::new(),
            ever_dup: false,
            lost_at: None,
        })
        .collect();
    let net = Network::new(
        topo,
        params.latency,
        ChaCha8Rng::seed_from_u64(rng.random()),
    );
    let mut w = World {
        q: EventQueue::default(),
        net,
        rng,
        placers,
        view,
        used: vec![Resources::default(); n],
        procs: vec![Vec::new(); n],
        tick_at: vec![None; n],
        caps,
        jobs,
        tasks,
        submitted_jobs: 0,
        first_submit: None,
        last_first_run: None,
        place_msgs: 0,
        place_bytes_sampled: 0,
        overcommits: 0,
        first_violation: None,
        events: 0,
        duplicates_ever: 0,
        dead: vec![false; n],
        known: vec![0; n],
        views: BTreeMap::new(),
        crashed: 0,
        replace_ms: Vec::new(),
        sides: Vec::new(),
        dc_views: BTreeMap::new(),
        plans,
        p: params,
    };
    w.views.insert(0, w.view.clone());
    let end_s = (w.p.duration + w.p.settle).as_secs_f64();
    for (k, plan) in w.plans.iter().enumerate() {
        let at = |s: f64| Instant::ZERO + Duration::from_secs_f64(s);
        w.q.push(at(plan.at), Ev::Crash { plan: k as u32 });
        for (i, t) in plan.learned.iter().enumerate() {
            if t.is_finite() && *t <= end_s {
                w.q.push(
                    at(*t),
                    Ev::Learn {
                        node: i as u32,
                        plan: k as u32,
                    },
                );
            }
        }
    }
    for i in 0..n {
        w.schedule_tick(i);
    }
    w.q.push(Instant::ZERO + Duration::from_secs(1), Ev::Submit);
    Ok(w)
}

impl World {
    /// Runs the events to the end, and reports.
    fn drive(mut self, progress: &mut dyn FnMut(&crate::Progress)) -> Report {
        let n = self.placers.len();
        let end = Instant::ZERO + self.p.duration + self.p.settle;
        while let Some(at) = self.q.peek_time() {
            if at > end {
                break;
            }
            let Some((_, ev)) = self.q.pop() else { break };
            self.events += 1;
            self.handle(ev);
            if self.events.is_multiple_of(crate::PROGRESS_EVERY) {
                progress(&crate::Progress {
                    nodes: n,
                    simulated_s: (at - Instant::ZERO).as_secs_f64(),
                    end_s: Some((end - Instant::ZERO).as_secs_f64()),
                    events: self.events,
                });
            }
        }
        self.report()
    }
}

/// Scale mode's default scenario: the membership model's crashes under
/// loss (detection, false positives, gossip traffic), and a wave of jobs
/// on the real placers during which those crashes happen, each node's
/// placer dropping a victim when the model says that node learned of it.
pub fn run_default(
    params: Params,
    progress: &mut dyn FnMut(&crate::Progress),
) -> Result<Report, SimError> {
    let (m, plans) = crate::scale::model(&params, true)?;
    let r = run(params, plans, progress)?;
    Ok(with_membership(r, m))
}

/// The placers' report `r` with the membership model's figures and
/// checks from `m` (its checks first).
pub(crate) fn with_membership(mut r: Report, m: Report) -> Report {
    r.detect_first_s = m.detect_first_s;
    r.detect_p50_s = m.detect_p50_s;
    r.detect_p999_s = m.detect_p999_s;
    r.detect_all_s = m.detect_all_s;
    r.undetected = m.undetected;
    r.false_positives = m.false_positives;
    r.false_positives_per_node_hour = m.false_positives_per_node_hour;
    r.msgs_per_node_s = m.msgs_per_node_s;
    r.bytes_per_node_s = m.bytes_per_node_s;
    r.traffic = m.traffic;
    r.events += m.events;
    r.net.lost += m.net.lost;
    r.detections = m.detections;
    r.detect_delays = m.detect_delays;
    let mut checks = m.checks;
    // The model's crash check counts detections; the placers' counts the
    // crashes that happened during the wave.
    checks.extend(r.checks);
    r.ok = checks.iter().all(|c| c.ok);
    r.checks = checks;
    r
}

impl World {
    fn now(&self) -> Instant {
        self.q.now()
    }

    fn wall(&self) -> u64 {
        WALL0_MS + (self.now() - Instant::ZERO).as_millis() as u64
    }

    fn handle(&mut self, ev: Ev) {
        let now = self.now();
        let wall = self.wall();
        match ev {
            Ev::Submit => self.submit(),
            Ev::Crash { plan } => self.crash(plan as usize),
            Ev::Learn { node, .. }
            | Ev::Reach { node, .. }
            | Ev::Job { node, .. }
            | Ev::Tick { node }
            | Ev::Started { node, .. }
            | Ev::Stopped { node, .. }
                if self.dead[node as usize] => {}
            Ev::Message { to, .. } if self.dead[to as usize] => {}
            Ev::Learn { node, plan } => {
                let i = node as usize;
                self.known[i] |= 1 << plan;
                let view = self.view_of(self.known[i]);
                self.placers[i].set_view(now, wall, view);
                self.after(i);
            }
            Ev::Cut => {
                let n = self.placers.len();
                let topo = self.net.topology();
                let side = (0..n).map(|i| self.sides[topo.dc(i)]).collect();
                self.net.partition(side);
                self.jobs_across_the_cut();
            }
            Ev::Heal => self.net.heal(),
            Ev::Reach { node, mask } => {
                // As the node core publishes: cut off or not first, then
                // the view without the members it cannot reach.
                let i = node as usize;
                let n = self.placers.len();
                let view = self.view_of_dcs(mask);
                let cut_off = CutOff::of(n - self.members_in(mask), n);
                self.placers[i].set_cut_off(now, cut_off);
                self.placers[i].set_view(now, wall, view);
                self.after(i);
            }
            Ev::Job { node, job } => {
                let plan = &self.jobs[job as usize];
                let job = Job {
                    spec: plan.spec.clone(),
                    version: 1,
                    deleted: false,
                    run_version: 1,
                    finished: Default::default(),
                    waiting: Default::default(),
                    deployment: None,
                };
                self.placers[node as usize].update_jobs(now, wall, vec![job], &[]);
                self.after(node as usize);
            }
            Ev::Message { to, from, msg } => {
                let from = node_id(from as usize);
                self.placers[to as usize].handle_message(now, wall, from, *msg);
                self.after(to as usize);
            }
            Ev::Tick { node } => {
                let i = node as usize;
                self.tick_at[i] = None;
                self.placers[i].handle_tick(now, wall);
                self.after(i);
            }
            Ev::Started { node, key } => {
                let i = node as usize;
                let Some(t) = self.task_of(&key) else { return };
                if !self.procs[i].iter().any(|(k, _)| *k == key) {
                    let demand = self.jobs[self.job_of(t)].demand;
                    self.used[i] = self.used[i].plus(&demand);
                    if self.used[i].cpus_milli > self.caps[i].cpus_milli
                        || self.used[i].memory_mb > self.caps[i].memory_mb
                    {
                        self.overcommits += 1;
                        if self.first_violation.is_none() {
                            self.first_violation = Some(format!(
                                "{now:?}: n{i} runs {:?} with capacity {:?}",
                                self.used[i], self.caps[i]
                            ));
                        }
                    }
                    self.procs[i].push((key.clone(), t));
                    let task = &mut self.tasks[t as usize];
                    task.runners.push(node);
                    if let Some(lost) = task.lost_at.take() {
                        self.replace_ms.push((now - lost).as_secs_f64() * 1000.0);
                    }
                    if task.first_run.is_none() {
                        task.first_run = Some(now);
                        self.last_first_run = Some(now);
                    }
                    if task.runners.len() > 1 && !task.ever_dup {
                        task.ever_dup = true;
                        self.duplicates_ever += 1;
                    }
                }
                self.placers[i].task_running(now, wall, &key, Default::default());
                self.after(i);
            }
            Ev::Stopped { node, key } => {
                let i = node as usize;
                if let Some(pos) = self.procs[i].iter().position(|(k, _)| *k == key) {
                    let (_, t) = self.procs[i].swap_remove(pos);
                    let demand = self.jobs[self.job_of(t)].demand;
                    self.used[i] = self.used[i].minus(&demand);
                    self.tasks[t as usize].runners.retain(|r| *r != node);
                }
                self.placers[i].task_exited(now, wall, &key, shoal_placement::ExitReason::Stopped);
                self.after(i);
            }
        }
    }

    /// The view of a node that knows of the crashes in `mask`.
    fn view_of(&mut self, mask: u64) -> Arc<View> {
        if let Some(v) = self.views.get(&mask) {
            return v.clone();
        }
        let gone: Vec<NodeId> = (0..self.plans.len())
            .filter(|k| mask & (1 << k) != 0)
            .map(|k| node_id(self.plans[k].victim))
            .collect();
        let v = Arc::new(self.view.without(&gone));
        self.views.insert(mask, v.clone());
        v
    }

    /// The members of the datacenters of `mask`.
    fn members_in(&self, mask: u32) -> usize {
        let topo = self.net.topology();
        (0..self.sides.len())
            .filter(|d| mask & (1 << d) != 0)
            .map(|d| topo.dc_size(d))
            .sum()
    }

    /// The view of a node that finds the datacenters of `mask`
    /// unreachable.
    fn view_of_dcs(&mut self, mask: u32) -> Arc<View> {
        if mask == 0 {
            return self.view.clone();
        }
        if let Some(v) = self.dc_views.get(&mask) {
            return v.clone();
        }
        let topo = self.net.topology();
        let gone: Vec<NodeId> = (0..self.placers.len())
            .filter(|&i| mask & (1 << topo.dc(i)) != 0)
            .map(node_id)
            .collect();
        let v = Arc::new(self.view.without(&gone));
        self.dc_views.insert(mask, v.clone());
        v
    }

    /// At the cut, the keys coordinated across it get a coordinator on
    /// each side that is not cut off; here a job reaches only its keys'
    /// coordinators, so those get their jobs now (in the agent every node
    /// holds every job).
    fn jobs_across_the_cut(&mut self) {
        let n = self.placers.len();
        let dcs = self.sides.len();
        let mut sides = self.sides.clone();
        sides.sort_unstable();
        sides.dedup();
        let mut targets = BTreeSet::new();
        for side in sides {
            let mask = (0..dcs)
                .filter(|&d| self.sides[d] != side)
                .fold(0u32, |m, d| m | 1 << d);
            if CutOff::of(n - self.members_in(mask), n).is_some() {
                continue;
            }
            let view = self.view_of_dcs(mask);
            let topo = self.net.topology();
            targets.extend(self.jobs_moved(&view, |i| mask & (1 << topo.dc(i)) != 0));
        }
        self.hand_jobs(targets);
    }

    /// The keys whose coordinator in the whole view is a node for which
    /// `moved` holds, as (their coordinator in `after`, their job).
    fn jobs_moved(&self, after: &View, moved: impl Fn(usize) -> bool) -> BTreeSet<(usize, usize)> {
        let mut targets = BTreeSet::new();
        for j in 0..self.submitted_jobs {
            let name = &self.jobs[j].spec.name;
            for idx in 0..self.jobs[j].count {
                let hash = TaskKey::index(name, idx).hash();
                if self
                    .view
                    .ring()
                    .owner(hash)
                    .is_some_and(|o| moved(index_of(o)))
                    && let Some(owner) = after.ring().owner(hash)
                {
                    targets.insert((index_of(owner), j));
                }
            }
        }
        targets
    }

    /// Hands each (node, job) its job now: here a job reaches only its
    /// keys' coordinators (in the agent every node holds every job).
    fn hand_jobs(&mut self, targets: BTreeSet<(usize, usize)>) {
        let now = self.now();
        for (node, j) in targets {
            self.q.push(
                now,
                Ev::Job {
                    node: node as u32,
                    job: j as u32,
                },
            );
        }
    }

    /// Crash `k`: the victim stops, with its tasks. Every node has every
    /// job (replication), but here a job reaches only its keys'
    /// coordinators: the victim's keys' next coordinators get theirs now.
    fn crash(&mut self, k: usize) {
        let now = self.now();
        let victim = self.plans[k].victim;
        self.dead[victim] = true;
        self.crashed |= 1 << k;
        for (_, t) in std::mem::take(&mut self.procs[victim]) {
            let task = &mut self.tasks[t as usize];
            task.runners.retain(|r| *r as usize != victim);
            if task.runners.is_empty() {
                task.lost_at = Some(now);
            }
        }
        self.used[victim] = Resources::default();
        let after = self.view_of(self.crashed);
        let targets = self.jobs_moved(&after, |i| i == victim);
        self.hand_jobs(targets);
    }

    /// Submits one second's worth of the wave; each job goes to the nodes
    /// that coordinate its keys.
    fn submit(&mut self) {
        let now = self.now();
        let truth = self.view_of(self.crashed);
        let rate = self.p.effective_tasks_per_sec(self.tasks.len());
        let mut budget = rate.round().max(1.0) as usize;
        let mut targets = BTreeSet::new();
        while self.submitted_jobs < self.jobs.len() && budget > 0 {
            let j = self.submitted_jobs;
            let (count, first) = (self.jobs[j].count, self.jobs[j].first_task);
            let name = self.jobs[j].spec.name.clone();
            budget = budget.saturating_sub(count as usize);
            targets.clear();
            for k in 0..count {
                self.tasks[(first + k) as usize].submitted = Some(now);
                let key = TaskKey::index(&name, k);
                if let Some(owner) = truth.ring().owner(key.hash()) {
                    targets.insert(index_of(owner));
                }
            }
            for node in &targets {
                let d = self.rng.random_range(JOB_DELAY_US.0..JOB_DELAY_US.1);
                self.q.push(
                    now + Duration::from_micros(d),
                    Ev::Job {
                        node: *node as u32,
                        job: j as u32,
                    },
                );
            }
            self.submitted_jobs += 1;
        }
        self.first_submit.get_or_insert(now);
        if self.submitted_jobs < self.jobs.len() {
            self.q.push(now + Duration::from_secs(1), Ev::Submit);
        }
    }

    /// Drains what placer `i` produced, by the agent's own rule
    /// ([`shoal_core::drain_placer`]: messages to itself handled at once).
    fn after(&mut self, i: usize) {
        let now = self.now();
        let wall = self.wall();
        let node = i as u32;
        let (q, net) = (&mut self.q, &mut self.net);
        let (place_msgs, place_bytes_sampled) =
            (&mut self.place_msgs, &mut self.place_bytes_sampled);
        drain_placer(&mut self.placers[i], now, wall, |d| match d {
            Drained::Message { to, msg } => {
                let j = index_of(to);
                *place_msgs += 1;
                if place_msgs.is_multiple_of(BYTES_SAMPLE) {
                    let bytes = postcard::to_allocvec(&msg).map_or(0, |v| v.len() as u64);
                    *place_bytes_sampled += bytes;
                }
                if let Some(d) = net.reliable(i, j) {
                    q.push(
                        now + d,
                        Ev::Message {
                            to: j as u32,
                            from: node,
                            msg: Box::new(msg),
                        },
                    );
                }
            }
            Drained::Command(Command::Start { key, .. } | Command::Replace { key, .. }) => {
                q.push(now + RUNTIME_DELAY, Ev::Started { node, key });
            }
            Drained::Command(Command::Stop { key, .. }) => {
                q.push(now + RUNTIME_DELAY, Ev::Stopped { node, key });
            }
            // Free-class events: every placer shares the view, which keeps
            // the free class of the start (the hint is off; bids decide).
            // No task ends by itself here, so none finishes
            // (`Event::Finished`): full mode records those.
            Drained::Event(_) => {}
        });
        self.schedule_tick(i);
    }

    fn schedule_tick(&mut self, i: usize) {
        let at = self.placers[i].next_tick();
        if self.tick_at[i].is_none_or(|t| at < t) {
            self.tick_at[i] = Some(at);
            self.q.push(at, Ev::Tick { node: i as u32 });
        }
    }

    fn task_of(&self, key: &TaskKey) -> Option<u32> {
        let plan = self.jobs.get(workload::job_number(&key.job)?)?;
        let idx = key.index_number()?;
        (idx < plan.count).then_some(plan.first_task + idx)
    }

    fn job_of(&self, task: u32) -> usize {
        self.jobs.partition_point(|j| j.first_task <= task) - 1
    }

    fn report(self) -> Report {
        let n = self.placers.len();
        let now = self.now();
        let sim_s = (now - Instant::ZERO).as_secs_f64();
        let mut latencies: Vec<f64> = self
            .tasks
            .iter()
            .filter_map(|t| Some((t.first_run? - t.submitted?).as_secs_f64() * 1000.0))
            .collect();
        latencies.sort_by(f64::total_cmp);
        let placed = latencies.len() as u64;
        let submitted: Vec<Resources> = self
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.submitted.is_some())
            .map(|(i, _)| self.jobs[self.job_of(i as u32)].demand)
            .collect();
        // The centralized best fit places the same tasks on the nodes
        // still alive.
        let caps: Vec<Resources> = (0..n)
            .map(|i| {
                if self.dead[i] {
                    Resources::default()
                } else {
                    self.caps[i]
                }
            })
            .collect();
        let alive = self.dead.iter().filter(|d| !**d).count();
        let bf = workload::best_fit(&caps, &submitted);
        let running_cpu: u64 = self
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.runners.is_empty())
            .map(|(i, _)| self.jobs[self.job_of(i as u32)].demand.cpus_milli)
            .sum();
        let packing =
            (bf.placed_cpus_milli > 0).then(|| running_cpu as f64 / bf.placed_cpus_milli as f64);
        let shares: Vec<f64> = (0..n)
            .filter(|i| !self.dead[*i])
            .map(|i| self.used[i].cpus_milli as f64 / self.caps[i].cpus_milli.max(1) as f64)
            .collect();
        let mean = shares.iter().sum::<f64>() / alive.max(1) as f64;
        let imbalance = (mean > 0.0).then(|| shares.iter().copied().fold(0.0, f64::max) / mean);
        let duplicates_now = self.tasks.iter().filter(|t| t.runners.len() > 1).count() as u64;
        // Waiting tasks that the room left could still take (a best fit
        // of them into that room).
        let room: Vec<Resources> = (0..n).map(|i| caps[i].minus(&self.used[i])).collect();
        let waiting: Vec<Resources> = self
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.submitted.is_some() && t.runners.is_empty())
            .map(|(i, _)| self.jobs[self.job_of(i as u32)].demand)
            .collect();
        let fit = workload::best_fit(&room, &waiting);
        let (unplaced, no_room) = (fit.placed, fit.unplaced);
        let span = match (self.first_submit, self.last_first_run) {
            (Some(a), Some(b)) if b > a => Some((b - a).as_secs_f64()),
            _ => None,
        };
        let node_seconds = n as f64 * sim_s.max(1e-9);
        let checks = vec![
            Check {
                name: "always_no_overcommit".into(),
                ok: self.overcommits == 0,
                detail: match &self.first_violation {
                    Some(v) => format!("{} violations, first {v}", self.overcommits),
                    None => format!("checked at each of {placed} starts; 0 violations"),
                },
            },
            Check {
                name: "eventually_placeable_tasks_run".into(),
                ok: unplaced == 0,
                detail: format!(
                    "{unplaced} tasks wait while a node has room ({no_room} have none)"
                ),
            },
            Check {
                name: "eventually_one_copy_per_task".into(),
                ok: duplicates_now == 0,
                detail: format!("{duplicates_now} tasks run twice at the end"),
            },
            Check {
                name: "fault_jobs_fired".into(),
                ok: !submitted.is_empty() && placed > 0,
                detail: format!("{} tasks submitted, {placed} ran", submitted.len()),
            },
        ];
        let mut checks = checks;
        if !self.plans.is_empty() {
            let happened = self.crashed.count_ones() as usize;
            checks.push(Check {
                name: "fault_crash_during_wave_fired".into(),
                ok: happened == self.plans.len(),
                detail: format!(
                    "{happened} of {} crashes happened; {} tasks lost with their node ran again",
                    self.plans.len(),
                    self.replace_ms.len()
                ),
            });
        }
        let mut replace_ms = self.replace_ms;
        replace_ms.sort_by(f64::total_cmp);
        let ok = checks.iter().all(|c| c.ok);
        let counters: NetCounters = self.net.counters;
        Report {
            nodes: n,
            scenario: self.p.scenario.to_string(),
            seed: self.p.seed,
            mode: Mode::Scale.as_str().into(),
            gossip: self.p.gossip.clone(),
            command: self.p.command(),
            formed_s: None,
            sim_s,
            events: self.events,
            crashes: self.crashed.count_ones() as usize,
            detect_first_s: None,
            detect_p50_s: None,
            detect_p999_s: None,
            detect_all_s: None,
            undetected: 0,
            false_positives: 0,
            false_positives_per_node_hour: 0.0,
            partition_downs: 0,
            locality: None,
            reach: None,
            msgs_per_node_s: 0.0,
            bytes_per_node_s: 0.0,
            traffic: Vec::new(),
            placement_msgs_per_node_s: self.place_msgs as f64 / node_seconds,
            placement_bytes_per_node_s: (self.place_bytes_sampled * BYTES_SAMPLE) as f64
                / node_seconds,
            tasks: submitted.len() as u64,
            placed,
            placement_p50_ms: quantile(&latencies, 0.5),
            placement_p99_ms: quantile(&latencies, 0.99),
            placement_max_ms: latencies.last().copied(),
            placements_per_s: span.map(|s| placed as f64 / s),
            packing_efficiency: packing,
            bestfit_placed: bf.placed,
            load_imbalance: imbalance,
            replaced: replace_ms.len() as u64,
            replace_p50_ms: quantile(&replace_ms, 0.5),
            replace_p99_ms: quantile(&replace_ms, 0.99),
            duplicates: self.duplicates_ever,
            duplicate_max_s: None,
            duplicates_after_convergence: duplicates_now,
            unplaced,
            unplaced_no_room: no_room,
            net: counters,
            checks,
            ok,
            series: Vec::new(),
            detections: Vec::new(),
            detect_delays: Vec::new(),
            triggers: None,
        }
    }
}
