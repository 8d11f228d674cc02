//! Full mode: every simulated node runs the real membership
//! ([`shoal_gossip::Membership`]) and the real placement
//! ([`shoal_placement::Placer`]), wired the way the agent wires them, over
//! the virtual network.
//!
//! The wiring follows `node/`: the live member list (alive members with
//! metadata) is handed to the placer at most every 200 ms when it changed;
//! the placer's free-capacity class is published in the node's metadata at
//! most once a second; placement messages travel on reliable streams
//! (QUIC): a partition drops them, loss delays them. Jobs reach each node's
//! placer after a replication delay. A fake runtime carries out each
//! start and stop 50 ms after it is told to, in order.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_gossip::{
    Config, DownReason, Event as GossipEvent, FreeClass, Instant, MemberMeta, MemberState,
    Membership, MetaUpdate, NodeId, NodeIdentity, PacketSecurity, SendKind, TimerToken,
};
use shoal_placement::{
    Command, Event as PlaceEvent, ExitReason, Job, Msg, NodeInfo, PlacementConfig, Placer,
    Resources, TaskKey,
};

use crate::SimError;
use crate::net::{Fate, Network, Topology};
use crate::params::{Params, Scenario};
use crate::queue::EventQueue;
use crate::report::{
    Check, Report, Sample, TrafficGroup, TrafficShare, quantile, quantile_of_population, worst_of,
};
use crate::share::{InfoPool, MetaPool, RingPool};
use crate::workload::{self, JobPlan};

/// Wall-clock milliseconds at virtual time zero (for award stamps).
const WALL0_MS: u64 = 1_700_000_000_000;
/// The cluster secret every simulated node shares.
const SECRET: [u8; 32] = [0x5a; 32];
/// The agent rebuilds the live member list at most this often.
const PUBLISH_PERIOD: Duration = Duration::from_millis(200);
/// The agent publishes its free-capacity class at most this often.
const FREE_CLASS_PERIOD: Duration = Duration::from_secs(5);
/// The fake runtime carries out each command (start, replace, stop) this
/// long after it is given; one delay for all keeps them in order.
const RUNTIME_DELAY: Duration = Duration::from_millis(50);
/// Replication delay of a job to a node: uniform in this range (µs).
const JOB_DELAY_US: (u64, u64) = (20_000, 300_000);
/// Once every view has been stable (and the network whole) this long, no
/// task may run twice: lease renewal (1 s), inheritance grace (3 s), the
/// stop and slack.
const STABLE_GRACE: Duration = Duration::from_secs(10);
/// Quiet time after the cluster looks formed, for metadata pulls.
const FORM_MARGIN: Duration = Duration::from_secs(5);

#[derive(Debug)]
enum Action {
    Begin,
    Crash(Vec<u32>),
    Restart(Vec<u32>),
    Partition,
    Heal,
    Submit,
    End,
    Finish,
}

enum Ev {
    Datagram {
        to: u32,
        from: u32,
        bytes: Vec<u8>,
    },
    GossipTimer {
        node: u32,
        life: u32,
        token: TimerToken,
    },
    Message {
        to: u32,
        to_life: u32,
        from: u32,
        msg: Msg,
    },
    Tick {
        node: u32,
        life: u32,
        at: Instant,
    },
    Publish {
        node: u32,
        life: u32,
    },
    FreeClass {
        node: u32,
        life: u32,
    },
    Started {
        node: u32,
        life: u32,
        key: TaskKey,
    },
    Stopped {
        node: u32,
        life: u32,
        key: TaskKey,
    },
    JobsArrive {
        node: u32,
        life: u32,
        batch: u32,
    },
    Join {
        node: u32,
    },
    Action(Action),
    Sample,
}

struct Node {
    id: NodeId,
    cap: Resources,
    meta: MemberMeta,
    up: bool,
    life: u32,
    life_started: Instant,
    bump: u32,
    m: Option<Membership>,
    p: Option<Placer>,
    timer: Option<(Instant, TimerToken)>,
    tick: Option<Instant>,
    publish_at: Option<Instant>,
    published: Option<Instant>,
    /// Members whose state or metadata changed since the last publish.
    changed: BTreeSet<NodeId>,
    view: u64,
    free_class: Option<u8>,
    free_at: Option<Instant>,
    free_published: Option<Instant>,
    procs: BTreeMap<TaskKey, u32>,
    used: Resources,
}

#[derive(Default)]
struct Task {
    demand: Resources,
    submitted: Option<Instant>,
    first_run: Option<Instant>,
    runners: Vec<u32>,
    dup_since: Option<Instant>,
    ever_dup: bool,
    lost_at: Option<Instant>,
}

struct Crash {
    node: u32,
    bump: u32,
    at: Instant,
    /// (observer, seconds after the crash), first detection only.
    seen: BTreeMap<u32, f64>,
}

/// Counters of traffic, reset when the scenario begins.
#[derive(Clone, Copy, Default)]
struct Traffic {
    /// Gossip datagrams and bytes by kind, indexed like `SendKind::ALL`.
    by_kind: [(u64, u64); SendKind::ALL.len()],
    place_msgs: u64,
    place_bytes: u64,
}

impl Traffic {
    fn count_gossip(&mut self, kind: SendKind, bytes: usize) {
        let k = &mut self.by_kind[kind.index()];
        k.0 += 1;
        k.1 += bytes as u64;
    }

    fn gossip_bytes(&self) -> u64 {
        self.by_kind.iter().map(|k| k.1).sum()
    }
}

/// A full-mode simulation.
pub struct World {
    p: Params,
    q: EventQueue<Ev>,
    net: Network,
    rng: ChaCha8Rng,
    gossip: Config,
    placement: PlacementConfig,
    nodes: Vec<Node>,
    started: usize,
    jobs: Vec<JobPlan>,
    submitted_jobs: usize,
    batches: Vec<Vec<Job>>,
    tasks: Vec<Task>,
    crashes: Vec<Crash>,
    open_crash: BTreeMap<u32, usize>,
    /// (node, life) of live, reachable nodes that someone declared failed.
    false_positives: BTreeSet<(u32, u32)>,
    partition_downs: u64,
    dup_watch: BTreeSet<(Instant, u32)>,
    duplicate_max: Duration,
    /// Live nodes per view fingerprint (the member list their placer has).
    views: BTreeMap<u64, usize>,
    /// Since when every live node's placer has had the same view.
    agreed_since: Option<Instant>,
    last_heal: Instant,
    overcommits: u64,
    two_winners: u64,
    first_violation: Option<String>,
    placement_ms: Vec<f64>,
    replace_ms: Vec<f64>,
    first_submit: Option<Instant>,
    last_first_run: Option<Instant>,
    traffic: Traffic,
    second: Traffic,
    node_seconds: f64,
    began: Option<Instant>,
    formed: Option<Instant>,
    ended: bool,
    finished: bool,
    events: u64,
    /// When the run ends (known once the cluster formed).
    end_at: Option<Instant>,
    planned_crashes: usize,
    planned_restarts: usize,
    restarts: usize,
    partitions: usize,
    heals: usize,
    slow_nodes: usize,
    series: Vec<Sample>,
    final_checks: Vec<Check>,
    end_state: EndState,
    /// One copy of each metadata record, placement record and ring for all
    /// nodes (see [`crate::share`]).
    meta_pool: Arc<MetaPool>,
    info_pool: InfoPool,
    ring_pool: Arc<RingPool>,
}

#[derive(Default)]
struct EndState {
    views_wrong: usize,
    duplicates: u64,
    unplaced: u64,
    unplaced_no_room: u64,
    packing: Option<f64>,
    bestfit_placed: u64,
    imbalance: Option<f64>,
}

fn addr_of(i: usize) -> SocketAddr {
    let ip = Ipv4Addr::from(0x0a00_0000u32 + 1 + i as u32);
    SocketAddr::new(IpAddr::V4(ip), 5481)
}

fn index_of(addr: &SocketAddr) -> Option<usize> {
    match addr.ip() {
        IpAddr::V4(v) => u32::from(v).checked_sub(0x0a00_0001).map(|i| i as usize),
        IpAddr::V6(_) => None,
    }
}

/// One member's part of a view's fingerprint: views are the XOR of their
/// members' parts, so they follow changes member by member.
fn fingerprint(id: NodeId) -> u64 {
    let mut z = id.0 ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl World {
    /// Builds the world of `params` (nothing runs yet).
    pub fn new(params: Params) -> Result<World, SimError> {
        let mut gossip = params.gossip_config()?;
        // Replay windows guard against an attacker the simulator does not
        // model; the config allows turning them off to save memory.
        gossip.replay_protection = false;
        gossip
            .validate()
            .map_err(|e| SimError::Params(e.to_string()))?;
        if params.nodes < 2 {
            return Err(SimError::Params("at least 2 nodes".into()));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
        let topo = Topology::new(params.nodes, params.dcs, params.zones);
        let net_rng = ChaCha8Rng::seed_from_u64(rng.random::<u64>());
        let net = Network::new(topo, params.latency, net_rng);
        let mut nodes = Vec::with_capacity(params.nodes);
        for i in 0..params.nodes {
            let cap = workload::node_capacity(&mut rng);
            let dc = net.topology().dc(i);
            let zone = net.topology().zone(i);
            let meta = workload::node_meta(i, cap, dc, zone, addr_of(i));
            nodes.push(Node {
                id: NodeId(i as u64 + 1),
                cap,
                meta,
                up: false,
                life: 0,
                life_started: Instant::ZERO,
                bump: 0,
                m: None,
                p: None,
                timer: None,
                tick: None,
                publish_at: None,
                published: None,
                changed: BTreeSet::new(),
                view: 0,
                free_class: None,
                free_at: None,
                free_published: None,
                procs: BTreeMap::new(),
                used: Resources::default(),
            });
        }
        let mut w = World {
            p: params,
            q: EventQueue::default(),
            net,
            rng,
            gossip,
            placement: PlacementConfig::default(),
            nodes,
            started: 0,
            jobs: Vec::new(),
            submitted_jobs: 0,
            batches: Vec::new(),
            tasks: Vec::new(),
            crashes: Vec::new(),
            open_crash: BTreeMap::new(),
            false_positives: BTreeSet::new(),
            partition_downs: 0,
            dup_watch: BTreeSet::new(),
            duplicate_max: Duration::ZERO,
            views: BTreeMap::new(),
            agreed_since: None,
            last_heal: Instant::ZERO,
            overcommits: 0,
            two_winners: 0,
            first_violation: None,
            placement_ms: Vec::new(),
            replace_ms: Vec::new(),
            first_submit: None,
            last_first_run: None,
            traffic: Traffic::default(),
            second: Traffic::default(),
            node_seconds: 0.0,
            began: None,
            formed: None,
            ended: false,
            finished: false,
            events: 0,
            end_at: None,
            planned_crashes: 0,
            planned_restarts: 0,
            restarts: 0,
            partitions: 0,
            heals: 0,
            slow_nodes: 0,
            series: Vec::new(),
            final_checks: Vec::new(),
            end_state: EndState::default(),
            meta_pool: Arc::new(MetaPool::default()),
            info_pool: InfoPool::default(),
            ring_pool: Arc::new(RingPool::default()),
        };
        w.schedule_formation();
        Ok(w)
    }

    fn schedule_formation(&mut self) {
        let n = self.p.nodes;
        if self.warm() {
            self.warm_start();
            self.q.push(Instant::from_micros(1_000_000), Ev::Sample);
            return;
        }
        let span = if self.p.scenario == Scenario::JoinStorm {
            secs(self.p.storm)
        } else {
            n as f64 / self.p.join_rate.max(1.0)
        };
        for i in 0..n {
            let at = Instant::from_micros((span * 1e6 * i as f64 / n as f64) as u64);
            self.q.push(at, Ev::Join { node: i as u32 });
        }
        if self.p.scenario == Scenario::JoinStorm {
            // The storm is the scenario.
            self.q.push(Instant::ZERO, Ev::Action(Action::Begin));
        }
        self.q.push(Instant::from_micros(1_000_000), Ev::Sample);
    }

    /// Whether the cluster forms at once (`--warm`; a join storm is its
    /// own formation).
    fn warm(&self) -> bool {
        self.p.warm && self.p.scenario != Scenario::JoinStorm
    }

    /// Starts every node knowing every member and its record (`--warm`).
    fn warm_start(&mut self) {
        let n = self.p.nodes;
        for i in 0..n {
            self.start_node(i, true);
        }
        let all: Vec<(NodeIdentity, Option<MetaUpdate>)> = (0..n)
            .filter_map(|i| {
                let m = self.nodes[i].m.as_ref()?;
                let identity = m.identity().clone();
                // The record as the node itself publishes it.
                let (bump, version) = m.local_info().meta_version?;
                let update = MetaUpdate {
                    id: identity.id,
                    bump,
                    version,
                    meta: Arc::clone(m.meta()),
                };
                Some((identity, Some(update)))
            })
            .collect();
        let now = self.now();
        for i in 0..n {
            if let Some(m) = self.nodes[i].m.as_mut() {
                m.restore(now, &all);
                // Its placer learns the members when the node publishes
                // (`after_gossip` marks it dirty); `start_node` drained it.
                self.after_gossip(i);
            }
        }
    }

    fn now(&self) -> Instant {
        self.q.now()
    }

    fn wall(&self) -> u64 {
        WALL0_MS + self.now().as_micros() / 1000
    }

    /// Runs to the end and reports.
    pub fn run(mut self, progress: &mut dyn FnMut(&crate::Progress)) -> Report {
        while !self.finished {
            let Some((_, ev)) = self.q.pop() else { break };
            self.events += 1;
            self.handle(ev);
            self.always_one_winner_when_stable();
            if self.events.is_multiple_of(crate::PROGRESS_EVERY) {
                progress(&crate::Progress {
                    nodes: self.nodes.len(),
                    simulated_s: secs(self.now() - Instant::ZERO),
                    end_s: self.end_at.map(|t| secs(t - Instant::ZERO)),
                    events: self.events,
                });
            }
        }
        self.report()
    }

    fn handle(&mut self, ev: Ev) {
        let now = self.now();
        match ev {
            Ev::Datagram { to, from, bytes } => {
                let i = to as usize;
                if let Some(m) = self.nodes[i].m.as_mut() {
                    m.handle_datagram(now, addr_of(from as usize), &bytes);
                    self.after_gossip(i);
                }
            }
            Ev::GossipTimer { node, life, token } => {
                let i = node as usize;
                let n = &mut self.nodes[i];
                if n.life != life || n.timer.map(|t| t.1) != Some(token) {
                    return;
                }
                n.timer = None;
                if let Some(m) = n.m.as_mut() {
                    m.handle_timer(now, token);
                    self.after_gossip(i);
                }
            }
            Ev::Message {
                to,
                to_life,
                from,
                msg,
            } => {
                let i = to as usize;
                if self.nodes[i].life != to_life {
                    return;
                }
                let wall = self.wall();
                let from_id = self.nodes[from as usize].id;
                if let Some(p) = self.nodes[i].p.as_mut() {
                    p.handle_message(now, wall, from_id, msg);
                    self.after_place(i);
                }
            }
            Ev::Tick { node, life, at } => {
                let i = node as usize;
                let wall = self.wall();
                let n = &mut self.nodes[i];
                if n.life != life || n.tick != Some(at) {
                    return;
                }
                n.tick = None;
                if let Some(p) = n.p.as_mut() {
                    p.handle_tick(now, wall);
                    self.after_place(i);
                }
            }
            Ev::Publish { node, life } => {
                let i = node as usize;
                if self.nodes[i].life == life && self.nodes[i].up {
                    self.nodes[i].publish_at = None;
                    self.publish(i);
                }
            }
            Ev::FreeClass { node, life } => {
                let i = node as usize;
                let n = &mut self.nodes[i];
                if n.life != life || !n.up {
                    return;
                }
                n.free_at = None;
                n.free_published = Some(now);
                if let Some(class) = n.free_class.take()
                    && n.meta.free_class.0 != class
                {
                    n.meta.free_class = FreeClass(class);
                    let meta = n.meta.clone();
                    n.changed.insert(n.id);
                    if let Some(m) = n.m.as_mut() {
                        m.set_meta(now, meta).expect("simulated metadata is small");
                        self.after_gossip(i);
                    }
                    self.mark_dirty(i);
                }
            }
            Ev::Started { node, life, key } => {
                let i = node as usize;
                if self.nodes[i].life != life || !self.nodes[i].up {
                    return;
                }
                let Some(t) = self.task_of(&key) else { return };
                if !self.nodes[i].procs.contains_key(&key) {
                    self.nodes[i].procs.insert(key.clone(), t);
                    let d = self.tasks[t as usize].demand;
                    self.nodes[i].used = self.nodes[i].used.plus(&d);
                    self.add_runner(t, node);
                    let (used, cap) = (self.nodes[i].used, self.nodes[i].cap);
                    if used.cpus_milli > cap.cpus_milli || used.memory_mb > cap.memory_mb {
                        self.overcommits += 1;
                        self.violation(format!(
                            "always_no_overcommit: n{i} runs {used:?} with capacity {cap:?}"
                        ));
                    }
                }
                let wall = self.wall();
                if let Some(p) = self.nodes[i].p.as_mut() {
                    p.task_running(now, wall, &key);
                    self.after_place(i);
                }
            }
            Ev::Stopped { node, life, key } => {
                let i = node as usize;
                if self.nodes[i].life != life || !self.nodes[i].up {
                    return;
                }
                if let Some(t) = self.nodes[i].procs.remove(&key) {
                    let d = self.tasks[t as usize].demand;
                    self.nodes[i].used = self.nodes[i].used.minus(&d);
                    self.remove_runner(t, node, false);
                }
                let wall = self.wall();
                if let Some(p) = self.nodes[i].p.as_mut() {
                    p.task_exited(now, wall, &key, ExitReason::Stopped);
                    self.after_place(i);
                }
            }
            Ev::JobsArrive { node, life, batch } => {
                let i = node as usize;
                if self.nodes[i].life != life {
                    return;
                }
                let wall = self.wall();
                let jobs = self.batches[batch as usize].clone();
                if let Some(p) = self.nodes[i].p.as_mut() {
                    p.update_jobs(now, wall, jobs, &[]);
                    self.after_place(i);
                }
            }
            Ev::Join { node } => self.start_node(node as usize, true),
            Ev::Action(a) => self.act(a),
            Ev::Sample => self.sample(),
        }
    }

    fn violation(&mut self, what: String) {
        if self.first_violation.is_none() {
            self.first_violation = Some(format!("{:?}: {what}", self.now()));
        }
    }

    fn task_of(&self, key: &TaskKey) -> Option<u32> {
        let job = workload::job_number(&key.job)?;
        let plan = self.jobs.get(job)?;
        let idx = key.index_number()?;
        (idx < plan.count).then_some(plan.first_task + idx)
    }

    fn add_runner(&mut self, t: u32, node: u32) {
        let now = self.now();
        let task = &mut self.tasks[t as usize];
        task.runners.push(node);
        if task.first_run.is_none() {
            task.first_run = Some(now);
            if let Some(s) = task.submitted {
                self.placement_ms.push(secs(now - s) * 1000.0);
            }
            self.last_first_run = Some(now);
        }
        if let Some(lost) = task.lost_at.take() {
            self.replace_ms.push(secs(now - lost) * 1000.0);
        }
        if task.runners.len() == 2 {
            task.dup_since = Some(now);
            task.ever_dup = true;
            self.dup_watch.insert((now, t));
        }
    }

    fn remove_runner(&mut self, t: u32, node: u32, lost: bool) {
        let now = self.now();
        let task = &mut self.tasks[t as usize];
        task.runners.retain(|n| *n != node);
        if task.runners.len() == 1
            && let Some(since) = task.dup_since.take()
        {
            self.duplicate_max = self.duplicate_max.max(now - since);
            self.dup_watch.remove(&(since, t));
        }
        if task.runners.is_empty() && lost {
            task.lost_at = Some(now);
        }
    }

    /// `always_one_winner_when_stable`: once every live node's placer has
    /// had the same member list (so every node computes the same
    /// coordinator for every key) and the network has been whole for
    /// [`STABLE_GRACE`], no task runs twice.
    fn always_one_winner_when_stable(&mut self) {
        let Some(&(since, t)) = self.dup_watch.first() else {
            return;
        };
        if self.net.is_partitioned() {
            return;
        }
        let Some(agreed) = self.agreed_since else {
            return;
        };
        let stable_since = since.max(agreed).max(self.last_heal);
        let now = self.now();
        if now - stable_since > STABLE_GRACE {
            self.two_winners += 1;
            self.dup_watch.remove(&(since, t));
            let runners = self.tasks[t as usize].runners.clone();
            self.violation(format!(
                "always_one_winner_when_stable: task #{t} runs on nodes {runners:?} since {since:?}, views stable since {stable_since:?}"
            ));
        }
    }

    fn always_no_overcommit(&mut self, i: usize) {
        let Some(p) = self.nodes[i].p.as_ref() else {
            return;
        };
        let (used, cap) = (p.used_resources(), p.capacity());
        if used.cpus_milli > cap.cpus_milli || used.memory_mb > cap.memory_mb {
            self.overcommits += 1;
            self.violation(format!(
                "always_no_overcommit: placer of n{i} holds {used:?} of {cap:?}"
            ));
        }
    }

    fn start_node(&mut self, i: usize, first: bool) {
        let now = self.now();
        let seed = self.rng.random::<u64>();
        let n = &mut self.nodes[i];
        n.bump += 1;
        n.life += 1;
        n.life_started = now;
        n.up = true;
        n.meta.free_class = FreeClass::IDLE;
        let identity = NodeIdentity::new(n.id, addr_of(i), n.bump);
        let mut m = Membership::new(
            now,
            identity,
            n.meta.clone(),
            self.gossip.clone(),
            PacketSecurity::sealed(&SECRET),
            seed,
        )
        .expect("validated config and small metadata");
        m.share_metas(self.meta_pool.clone());
        n.m = Some(m);
        let mut p = Placer::new(n.id, self.placement.clone(), n.cap, now);
        p.share_rings(self.ring_pool.clone());
        n.p = Some(p);
        n.timer = None;
        n.tick = None;
        n.publish_at = None;
        n.published = None;
        n.changed.clear();
        // Its placer starts with itself.
        n.changed.insert(n.id);
        n.view = 0;
        self.view_joined(0);
        let n = &mut self.nodes[i];
        n.free_class = None;
        n.free_at = None;
        n.free_published = None;
        // Join through up to three live nodes.
        let up: Vec<usize> = if first {
            (0..self.started).filter(|j| self.nodes[*j].up).collect()
        } else {
            (0..self.nodes.len())
                .filter(|j| *j != i && self.nodes[*j].up)
                .collect()
        };
        if first {
            self.started = self.started.max(i + 1);
        }
        let mut peers = Vec::new();
        for _ in 0..3.min(up.len()) {
            peers.push(addr_of(up[self.rng.random_range(0..up.len())]));
        }
        let joins = !(first && self.warm());
        if let Some(m) = self.nodes[i].m.as_mut()
            && joins
        {
            m.join(now, &peers);
        }
        // The desired state is on disk: every job submitted so far.
        let jobs: Vec<Job> = self.batches.iter().flatten().cloned().collect();
        let wall = self.wall();
        if !jobs.is_empty()
            && let Some(p) = self.nodes[i].p.as_mut()
        {
            p.set_jobs(now, wall, jobs);
        }
        self.after_gossip(i);
        self.mark_dirty(i);
        self.after_place(i);
    }

    fn crash(&mut self, i: usize) {
        let now = self.now();
        if !self.nodes[i].up {
            return;
        }
        let procs = std::mem::take(&mut self.nodes[i].procs);
        for t in procs.values() {
            self.remove_runner(*t, i as u32, true);
        }
        let view = self.nodes[i].view;
        self.view_left(view);
        let n = &mut self.nodes[i];
        n.used = Resources::default();
        n.up = false;
        n.m = None;
        n.p = None;
        n.life += 1;
        n.timer = None;
        n.tick = None;
        let idx = self.crashes.len();
        self.crashes.push(Crash {
            node: i as u32,
            bump: n.bump,
            at: now,
            seen: BTreeMap::new(),
        });
        self.open_crash.insert(i as u32, idx);
    }

    fn view_left(&mut self, view: u64) {
        if let Some(c) = self.views.get_mut(&view) {
            *c -= 1;
            if *c == 0 {
                self.views.remove(&view);
            }
        }
        self.note_agreement();
    }

    fn view_joined(&mut self, view: u64) {
        *self.views.entry(view).or_default() += 1;
        self.note_agreement();
    }

    fn note_agreement(&mut self) {
        if self.views.len() == 1 {
            self.agreed_since.get_or_insert(self.q.now());
        } else {
            self.agreed_since = None;
        }
    }

    fn mark_dirty(&mut self, i: usize) {
        let now = self.now();
        let n = &mut self.nodes[i];
        if n.publish_at.is_some() {
            return;
        }
        let at = n.published.map_or(now, |t| (t + PUBLISH_PERIOD).max(now));
        n.publish_at = Some(at);
        let life = n.life;
        self.q.push(
            at,
            Ev::Publish {
                node: i as u32,
                life,
            },
        );
    }

    /// Hands the placer the members that changed (up, with metadata, or
    /// not), as the agent does.
    fn publish(&mut self, i: usize) {
        let now = self.now();
        let wall = self.wall();
        let n = &mut self.nodes[i];
        n.published = Some(now);
        let changed = std::mem::take(&mut n.changed);
        let (Some(m), Some(p)) = (n.m.as_ref(), n.p.as_mut()) else {
            return;
        };
        let old = n.view;
        let mut view = old;
        let mut infos = Vec::new();
        let mut gone = Vec::new();

        for id in changed {
            let had = p.has_member(id);
            match m.up_meta(id) {
                Some(meta) => {
                    infos.push(self.info_pool.info(NodeInfo::from_meta(id, meta)));
                    if !had {
                        view ^= fingerprint(id);
                    }
                }
                None if had => {
                    gone.push(id);
                    view ^= fingerprint(id);
                }
                None => {}
            }
        }
        n.view = view;
        p.update_members(now, wall, infos, &gone);

        if view != old {
            self.view_left(old);
            self.view_joined(view);
        }
        self.after_place(i);
    }

    /// Drains the membership of node `i`: datagrams, events, next timer.
    fn after_gossip(&mut self, i: usize) {
        let now = self.now();
        let Some(m) = self.nodes[i].m.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        while let Some(t) = m.poll_transmit() {
            out.push(t);
        }
        let mut events = Vec::new();
        while let Some(e) = m.poll_event() {
            events.push(e);
        }
        let next = m.poll_timeout();
        for t in out {
            let Some(to) = index_of(&t.to).filter(|j| *j < self.nodes.len()) else {
                continue;
            };
            self.traffic.count_gossip(t.kind, t.payload.len());
            self.second.count_gossip(t.kind, t.payload.len());
            if let Fate::Deliver(d) = self.net.datagram(i, to) {
                self.q.push(
                    now + d,
                    Ev::Datagram {
                        to: to as u32,
                        from: i as u32,
                        bytes: t.payload,
                    },
                );
            }
        }
        let mut dirty = false;
        for e in events {
            match e {
                GossipEvent::MemberDown { identity, reason } => {
                    dirty = true;
                    self.nodes[i].changed.insert(identity.id);
                    self.on_member_down(i, &identity, reason);
                }
                GossipEvent::MemberUp { identity }
                | GossipEvent::MemberRenewed { new: identity, .. } => {
                    dirty = true;
                    self.nodes[i].changed.insert(identity.id);
                }
                GossipEvent::MetaChanged { id } => {
                    dirty = true;
                    self.nodes[i].changed.insert(id);
                }
                GossipEvent::IdentityRenewed { identity } => self.nodes[i].bump = identity.bump,
                _ => {}
            }
        }
        if dirty {
            self.mark_dirty(i);
        }
        let n = &mut self.nodes[i];
        if let Some((at, token)) = next
            && n.timer != Some((at, token))
        {
            n.timer = Some((at, token));
            let life = n.life;
            self.q.push(
                at,
                Ev::GossipTimer {
                    node: i as u32,
                    life,
                    token,
                },
            );
        }
    }

    fn on_member_down(&mut self, observer: usize, identity: &NodeIdentity, reason: DownReason) {
        let Some(t) = (identity.id.0 as usize).checked_sub(1) else {
            return;
        };
        if t >= self.nodes.len() {
            return;
        }
        if let Some(&c) = self.open_crash.get(&(t as u32)) {
            let crash = &mut self.crashes[c];
            if crash.bump == identity.bump {
                let delay = secs(self.q.now() - crash.at);
                crash.seen.entry(observer as u32).or_insert(delay);
                return;
            }
        }
        let target = &self.nodes[t];
        if reason == DownReason::Failed && target.up && target.bump == identity.bump {
            // A down decided during a partition may still be spreading
            // after the heal: within a suspicion timeout and some gossip
            // of the heal it counts as the partition's.
            let aftermath = self.heals > 0
                && self.q.now()
                    < self.last_heal
                        + self
                            .gossip
                            .suspicion_timeout(Config::size_class(self.nodes.len()))
                        + Duration::from_secs(10);
            if self.net.connected(observer, t) && !aftermath {
                self.false_positives.insert((t as u32, identity.bump));
            } else {
                self.partition_downs += 1;
            }
        }
    }

    /// Drains the placer of node `i`: messages (those to itself handled at
    /// once, as the agent does), runtime commands, events, next tick.
    fn after_place(&mut self, i: usize) {
        let now = self.now();
        let wall = self.wall();
        let me = self.nodes[i].id;
        let life = self.nodes[i].life;
        for _ in 0..1000 {
            let Some(p) = self.nodes[i].p.as_mut() else {
                return;
            };
            let mut local = Vec::new();
            let mut out = Vec::new();
            while let Some((to, msg)) = p.poll_message() {
                if to == me {
                    local.push(msg);
                } else {
                    out.push((to, msg));
                }
            }
            let mut commands = Vec::new();
            while let Some(c) = p.poll_command() {
                commands.push(c);
            }
            let mut free_class = None;
            while let Some(e) = p.poll_event() {
                if let PlaceEvent::FreeClass(c) = e {
                    free_class = Some(c);
                }
            }
            let idle = local.is_empty();
            for (to, msg) in out {
                let Some(j) = (to.0 as usize)
                    .checked_sub(1)
                    .filter(|j| *j < self.nodes.len())
                else {
                    continue;
                };
                let bytes = postcard::to_allocvec(&msg).map_or(0, |v| v.len() as u64);
                self.traffic.place_msgs += 1;
                self.traffic.place_bytes += bytes;
                self.second.place_msgs += 1;
                if let Some(d) = self.net.reliable(i, j) {
                    let to_life = self.nodes[j].life;
                    self.q.push(
                        now + d,
                        Ev::Message {
                            to: j as u32,
                            to_life,
                            from: i as u32,
                            msg,
                        },
                    );
                }
            }
            for c in commands {
                match c {
                    Command::Start { key, .. } | Command::Replace { key, .. } => {
                        self.q.push(
                            now + RUNTIME_DELAY,
                            Ev::Started {
                                node: i as u32,
                                life,
                                key,
                            },
                        );
                    }
                    Command::Stop { key, .. } => {
                        self.q.push(
                            now + RUNTIME_DELAY,
                            Ev::Stopped {
                                node: i as u32,
                                life,
                                key,
                            },
                        );
                    }
                }
            }
            if let Some(c) = free_class {
                let n = &mut self.nodes[i];
                n.free_class = Some(c);
                if n.free_at.is_none() {
                    let at = n
                        .free_published
                        .map_or(now, |t| (t + FREE_CLASS_PERIOD).max(now));
                    n.free_at = Some(at);
                    self.q.push(
                        at,
                        Ev::FreeClass {
                            node: i as u32,
                            life,
                        },
                    );
                }
            }
            if idle {
                break;
            }
            let Some(p) = self.nodes[i].p.as_mut() else {
                return;
            };
            for msg in local {
                p.handle_message(now, wall, me, msg);
            }
        }
        self.always_no_overcommit(i);
        let n = &mut self.nodes[i];
        if let Some(p) = n.p.as_ref() {
            let at = p.next_tick();
            if n.tick != Some(at) {
                n.tick = Some(at);
                self.q.push(
                    at,
                    Ev::Tick {
                        node: i as u32,
                        life,
                        at,
                    },
                );
            }
        }
    }

    fn up_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].up)
            .collect()
    }

    fn pick(&mut self, from: &[usize], k: usize) -> Vec<u32> {
        let mut pool: Vec<usize> = from.to_vec();
        let mut out = Vec::new();
        for _ in 0..k.min(pool.len()) {
            let j = self.rng.random_range(0..pool.len());
            out.push(pool.swap_remove(j) as u32);
        }
        out.sort_unstable();
        out
    }

    fn at(&mut self, after_begin: Duration, a: Action) {
        let t = self.began.unwrap_or(self.now()) + after_begin;
        self.q.push(t, Ev::Action(a));
    }

    /// Gossip traffic by purpose over the scenario phase.
    fn traffic_shares(&self, node_seconds: f64) -> Vec<TrafficShare> {
        TrafficGroup::shares(|group| {
            let (msgs, bytes) = SendKind::ALL
                .iter()
                .filter(|k| TrafficGroup::of(**k) == group)
                .map(|k| self.traffic.by_kind[k.index()])
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            (msgs as f64 / node_seconds, bytes as f64 / node_seconds)
        })
    }

    /// The scenario starts: the cluster has formed.
    fn begin(&mut self) {
        let now = self.now();
        self.began = Some(now);
        self.traffic = Traffic::default();
        self.net.set_loss(self.p.effective_loss());
        let n = self.p.nodes;
        // Slow nodes.
        let k = (self.p.slow_fraction * n as f64).round() as usize;
        let all: Vec<usize> = (0..n).collect();
        for s in self.pick(&all, k) {
            self.net.set_slow(s as usize, self.p.slow);
            self.slow_nodes += 1;
        }
        // Jobs.
        if self.p.with_jobs() {
            let cpus: u64 = self.nodes.iter().map(|x| x.cap.cpus_milli).sum();
            self.jobs = workload::plan_jobs(&mut self.rng, cpus, self.p.fill);
            let total: u32 = self.jobs.iter().map(|j| j.count).sum();
            self.tasks = (0..total).map(|_| Task::default()).collect();
            for j in &self.jobs {
                for k in 0..j.count {
                    self.tasks[(j.first_task + k) as usize].demand = j.demand;
                }
            }
            self.at(Duration::from_secs(2), Action::Submit);
        }
        let d = self.p.duration;
        let up = self.up_nodes();
        match self.p.scenario {
            Scenario::Default | Scenario::Loss => {
                let victims = self.pick(&up, self.p.crashes.max(1));
                for (k, v) in victims.into_iter().enumerate() {
                    let t = Duration::from_secs(20 + 5 * k as u64).min(d / 2);
                    self.planned_crashes += 1;
                    self.at(t, Action::Crash(vec![v]));
                }
            }
            Scenario::JoinStorm | Scenario::Jobs => {}
            Scenario::Churn => {
                let per_sec = self.p.churn_per_min / 100.0 * n as f64 / 60.0;
                if per_sec > 0.0 {
                    let mut t = 5.0;
                    let mut pool = up.clone();
                    while t < secs(d) && !pool.is_empty() {
                        let v = self.pick(&pool, 1)[0];
                        pool.retain(|x| *x != v as usize);
                        self.planned_crashes += 1;
                        self.planned_restarts += 1;
                        self.at(Duration::from_secs_f64(t), Action::Crash(vec![v]));
                        self.at(
                            Duration::from_secs_f64(t) + self.p.churn_down,
                            Action::Restart(vec![v]),
                        );
                        t += 1.0 / per_sec;
                    }
                }
            }
            Scenario::MassFailure => {
                let k = ((self.p.fail_fraction * n as f64).round() as usize).max(1);
                let victims = self.pick(&up, k);
                self.planned_crashes += victims.len();
                self.at(Duration::from_secs(20).min(d / 2), Action::Crash(victims));
            }
            Scenario::Partition => {
                self.at(Duration::from_secs(20).min(d / 2), Action::Partition);
                self.at(
                    (Duration::from_secs(20).min(d / 2) + self.p.partition).min(d),
                    Action::Heal,
                );
            }
            Scenario::DcLoss => {
                let last = self.net.topology().dcs() - 1;
                let victims: Vec<u32> = up
                    .iter()
                    .filter(|i| self.net.topology().dc(**i) == last)
                    .map(|i| *i as u32)
                    .collect();
                self.planned_crashes += victims.len();
                self.at(Duration::from_secs(20).min(d / 2), Action::Crash(victims));
            }
        }
        self.at(d, Action::End);
        self.at(d + self.p.settle, Action::Finish);
        self.end_at = Some(self.now() + d + self.p.settle);
    }

    fn act(&mut self, a: Action) {
        let now = self.now();
        match a {
            Action::Begin => self.begin(),
            Action::Crash(v) => {
                for i in v {
                    self.crash(i as usize);
                }
            }
            Action::Restart(v) => {
                for i in v {
                    if !self.nodes[i as usize].up {
                        self.restarts += 1;
                        // Detections of the old life stop counting.
                        self.open_crash.remove(&i);
                        self.start_node(i as usize, false);
                    }
                }
            }
            Action::Partition => {
                let side = (0..self.nodes.len())
                    .map(|i| self.net.topology().dc(i) as u16)
                    .collect();
                self.net.partition(side);
                self.partitions += 1;
            }
            Action::Heal => {
                if self.net.is_partitioned() {
                    self.net.heal();
                    self.heals += 1;
                    self.last_heal = now;
                }
            }
            Action::Submit => self.submit(),
            Action::End => {
                self.ended = true;
                if self.net.is_partitioned() {
                    self.net.heal();
                    self.heals += 1;
                    self.last_heal = now;
                }
            }
            Action::Finish => {
                self.finish();
                self.finished = true;
            }
        }
    }

    /// Submits one second's worth of the wave, and schedules the next.
    fn submit(&mut self) {
        let now = self.now();
        let total: usize = self.tasks.len();
        let rate = self.p.effective_tasks_per_sec(total);
        let mut budget = rate.round().max(1.0) as usize;
        let mut batch = Vec::new();
        while self.submitted_jobs < self.jobs.len() && budget > 0 {
            let j = &self.jobs[self.submitted_jobs];
            budget = budget.saturating_sub(j.count as usize);
            for k in 0..j.count {
                self.tasks[(j.first_task + k) as usize].submitted = Some(now);
            }
            batch.push(Job {
                spec: j.spec.clone(),
                version: 1,
                deleted: false,
            });
            self.submitted_jobs += 1;
        }
        if batch.is_empty() {
            return;
        }
        self.first_submit.get_or_insert(now);
        let b = self.batches.len() as u32;
        self.batches.push(batch);
        for i in 0..self.nodes.len() {
            if self.nodes[i].up {
                let d = self.rng.random_range(JOB_DELAY_US.0..JOB_DELAY_US.1);
                let life = self.nodes[i].life;
                self.q.push(
                    now + Duration::from_micros(d),
                    Ev::JobsArrive {
                        node: i as u32,
                        life,
                        batch: b,
                    },
                );
            }
        }
        if self.submitted_jobs < self.jobs.len() {
            self.q
                .push(now + Duration::from_secs(1), Ev::Action(Action::Submit));
        }
    }

    fn sample(&mut self) {
        let now = self.now();
        let up = self.nodes.iter().filter(|n| n.up).count();
        if self.began.is_some() && !self.finished {
            self.node_seconds += up as f64;
        }
        let running = self.tasks.iter().filter(|t| !t.runners.is_empty()).count() as u64;
        let waiting = self
            .tasks
            .iter()
            .filter(|t| t.submitted.is_some() && t.runners.is_empty())
            .count() as u64;
        let duplicates = self.tasks.iter().filter(|t| t.runners.len() > 1).count() as u64;
        self.series.push(Sample {
            t_s: secs(now - Instant::ZERO),
            up,
            running,
            waiting,
            duplicates,
            gossip_bytes_per_node: self.second.gossip_bytes() as f64 / up.max(1) as f64,
            placement_msgs_per_node: self.second.place_msgs as f64 / up.max(1) as f64,
        });
        self.second = Traffic::default();
        // Formation: everyone started and everyone knows everyone.
        if self.formed.is_none() && self.started == self.nodes.len() {
            let expected = up - 1;
            let all = self
                .nodes
                .iter()
                .filter(|n| n.up)
                .all(|n| n.m.as_ref().is_some_and(|m| m.num_active() == expected));
            if all {
                self.formed = Some(now);
                if self.began.is_none() {
                    self.q.push(now + FORM_MARGIN, Ev::Action(Action::Begin));
                }
            } else if self.began.is_none() && now > Instant::ZERO + self.p.form_timeout {
                // Go on regardless: the report shows it never formed.
                self.q.push(now, Ev::Action(Action::Begin));
            }
        }
        self.q.push(now + Duration::from_secs(1), Ev::Sample);
    }

    /// The `eventually_*` checks and the end-of-run measures.
    fn finish(&mut self) {
        let up = self.up_nodes();
        let truth: BTreeSet<NodeId> = up.iter().map(|i| self.nodes[*i].id).collect();
        let mut wrong = 0;
        let mut example = None;
        for &i in &up {
            let Some(m) = self.nodes[i].m.as_ref() else {
                continue;
            };
            let seen: BTreeSet<NodeId> = m
                .members()
                .into_iter()
                .filter(|x| x.state == MemberState::Alive)
                .map(|x| x.identity.id)
                .collect();
            if seen != truth {
                wrong += 1;
                if example.is_none() {
                    let missing: Vec<NodeId> = truth.difference(&seen).copied().collect();
                    let extra = seen.difference(&truth).count();
                    let how: Vec<String> = missing
                        .iter()
                        .take(3)
                        .map(|id| {
                            let known_by = up
                                .iter()
                                .filter(|o| {
                                    self.nodes[**o]
                                        .m
                                        .as_ref()
                                        .is_some_and(|om| om.member(*id).is_some())
                                })
                                .count();
                            match m.member(*id) {
                                Some(x) => format!(
                                    "n{} {} here, known to {known_by} nodes",
                                    id.0 - 1,
                                    x.state.as_str()
                                ),
                                None => {
                                    format!("n{} unknown here, known to {known_by} nodes", id.0 - 1)
                                }
                            }
                        })
                        .collect();
                    example = Some(format!(
                        "n{i} misses {} live members ({}) and lists {extra} dead ones as alive",
                        missing.len(),
                        how.join(", ")
                    ));
                }
            }
        }
        self.end_state.views_wrong = wrong;
        self.final_checks.push(Check {
            name: "eventually_membership_agrees".into(),
            ok: wrong == 0,
            detail: match example {
                None => format!("all {} live nodes see exactly the live nodes", up.len()),
                Some(e) => format!("{wrong} of {} live nodes disagree; {e}", up.len()),
            },
        });

        // Tasks: what runs, what could run.
        let duplicates = self.tasks.iter().filter(|t| t.runners.len() > 1).count() as u64;
        self.end_state.duplicates = duplicates;
        // Waiting tasks that the room left on live nodes could still take
        // (a best fit of them into that room).
        let room: Vec<Resources> = up
            .iter()
            .map(|i| self.nodes[*i].cap.minus(&self.nodes[*i].used))
            .collect();
        let waiting: Vec<Resources> = self
            .tasks
            .iter()
            .filter(|t| t.submitted.is_some() && t.runners.is_empty())
            .map(|t| t.demand)
            .collect();
        let fit = workload::best_fit(&room, &waiting);
        let (unplaced, no_room) = (fit.placed, fit.unplaced);
        self.end_state.unplaced = unplaced;
        self.end_state.unplaced_no_room = no_room;
        let submitted: Vec<Resources> = self
            .tasks
            .iter()
            .filter(|t| t.submitted.is_some())
            .map(|t| t.demand)
            .collect();
        if !submitted.is_empty() {
            let caps: Vec<Resources> = up.iter().map(|i| self.nodes[*i].cap).collect();
            let bf = workload::best_fit(&caps, &submitted);
            let running_cpu: u64 = self
                .tasks
                .iter()
                .filter(|t| !t.runners.is_empty())
                .map(|t| t.demand.cpus_milli)
                .sum();
            self.end_state.bestfit_placed = bf.placed;
            if bf.placed_cpus_milli > 0 {
                self.end_state.packing = Some(running_cpu as f64 / bf.placed_cpus_milli as f64);
            }
            let shares: Vec<f64> = up
                .iter()
                .map(|i| {
                    let n = &self.nodes[*i];
                    n.used.cpus_milli as f64 / n.cap.cpus_milli.max(1) as f64
                })
                .collect();
            let mean = shares.iter().sum::<f64>() / shares.len().max(1) as f64;
            let max = shares.iter().copied().fold(0.0, f64::max);
            if mean > 0.0 {
                self.end_state.imbalance = Some(max / mean);
            }
        }
        if self.p.with_jobs() {
            self.final_checks.push(Check {
                name: "eventually_placeable_tasks_run".into(),
                ok: unplaced == 0,
                detail: format!(
                    "{unplaced} tasks wait while a live node has room ({no_room} have none)"
                ),
            });
            self.final_checks.push(Check {
                name: "eventually_one_copy_per_task".into(),
                ok: duplicates == 0,
                detail: format!("{duplicates} tasks run twice after the heal"),
            });
        }
    }

    fn report(mut self) -> Report {
        let now = self.now();
        // Detection.
        let mut per_crash = Vec::new();
        let mut all_delays = Vec::new();
        let mut undetected = 0u64;
        let mut firsts = Vec::new();
        for c in &self.crashes {
            // Observers: up at the end, in a life that started before the
            // crash (so they knew the crashed node and stayed to see it).
            let observers: Vec<u32> = (0..self.nodes.len() as u32)
                .filter(|o| {
                    let n = &self.nodes[*o as usize];
                    *o != c.node && n.up && n.life_started <= c.at
                })
                .collect();
            let mut delays: Vec<f64> = observers
                .iter()
                .filter_map(|o| c.seen.get(o).copied())
                .collect();
            delays.sort_by(f64::total_cmp);
            undetected += (observers.len() - delays.len()) as u64;
            if let Some(f) = delays.first() {
                firsts.push(*f);
            }
            per_crash.push((
                delays.first().copied(),
                quantile_of_population(&delays, observers.len(), 0.999),
                quantile_of_population(&delays, observers.len(), 1.0),
            ));
            all_delays.extend(delays);
        }
        all_delays.sort_by(f64::total_cmp);
        let detect_p999 = worst_of(&per_crash, |c| c.1);
        let detect_all = worst_of(&per_crash, |c| c.2);
        let node_seconds = self.node_seconds.max(1.0);
        let traffic = self.traffic_shares(node_seconds);
        let mut lat = self.placement_ms.clone();
        lat.sort_by(f64::total_cmp);
        let mut rep = self.replace_ms.clone();
        rep.sort_by(f64::total_cmp);
        let placed = self.tasks.iter().filter(|t| t.first_run.is_some()).count() as u64;
        let placements_per_s = match (self.first_submit, self.last_first_run) {
            (Some(a), Some(b)) if b > a => Some(placed as f64 / secs(b - a)),
            _ => None,
        };

        // Checks.
        let mut checks = vec![
            Check {
                name: "always_no_overcommit".into(),
                ok: self.overcommits == 0,
                detail: format!(
                    "checked after each of {} events; {} violations",
                    self.events, self.overcommits
                ),
            },
            Check {
                name: "always_one_winner_when_stable".into(),
                ok: self.two_winners == 0,
                detail: format!(
                    "{} tasks ran twice more than {}s after views settled",
                    self.two_winners,
                    STABLE_GRACE.as_secs()
                ),
            },
        ];
        checks.append(&mut self.final_checks);
        if let Some(v) = &self.first_violation {
            checks.push(Check {
                name: "first_violation".into(),
                ok: false,
                detail: v.clone(),
            });
        }
        checks.push(Check {
            name: "cluster_formed".into(),
            ok: self.formed.is_some(),
            detail: match self.formed {
                Some(t) => format!(
                    "everyone knew everyone after {:.1} s",
                    secs(t - Instant::ZERO)
                ),
                None => format!("not within {:.0} s", secs(self.p.form_timeout)),
            },
        });
        // Fault knobs fired.
        let loss = self.p.effective_loss();
        if loss > 0.0 {
            checks.push(Check {
                name: "fault_loss_fired".into(),
                ok: self.net.counters.lost > 0,
                detail: format!("{} datagrams lost at {loss}", self.net.counters.lost),
            });
        }
        if self.slow_nodes > 0 {
            checks.push(Check {
                name: "fault_slow_fired".into(),
                ok: self.net.counters.slowed > 0,
                detail: format!(
                    "{} nodes slow, {} deliveries delayed",
                    self.slow_nodes, self.net.counters.slowed
                ),
            });
        }
        if self.planned_crashes > 0 {
            let detected = self.crashes.iter().filter(|c| !c.seen.is_empty()).count();
            checks.push(Check {
                name: "fault_crash_fired".into(),
                ok: self.crashes.len() == self.planned_crashes && detected == self.crashes.len(),
                detail: format!(
                    "{} of {} planned crashes happened, {detected} detected by someone",
                    self.crashes.len(),
                    self.planned_crashes
                ),
            });
        }
        if self.planned_restarts > 0 {
            checks.push(Check {
                name: "fault_restart_fired".into(),
                ok: self.restarts == self.planned_restarts,
                detail: format!(
                    "{} of {} planned restarts",
                    self.restarts, self.planned_restarts
                ),
            });
        }
        if self.p.scenario == Scenario::Partition {
            checks.push(Check {
                name: "fault_partition_fired".into(),
                ok: self.partitions > 0 && self.heals > 0 && self.net.counters.cut > 0,
                detail: format!(
                    "{} partitions, {} heals, {} messages cut",
                    self.partitions, self.heals, self.net.counters.cut
                ),
            });
        }
        if self.p.with_jobs() {
            checks.push(Check {
                name: "fault_jobs_fired".into(),
                ok: !self.tasks.is_empty() && placed > 0,
                detail: format!("{} tasks submitted, {placed} ran", self.tasks.len()),
            });
        }
        let ok = checks.iter().all(|c| c.ok);
        Report {
            nodes: self.p.nodes,
            scenario: self.p.scenario.to_string(),
            seed: self.p.seed,
            mode: "full".into(),
            gossip: self.p.gossip.clone(),
            command: self.p.command(),
            formed_s: self.formed.map(|t| secs(t - Instant::ZERO)),
            sim_s: secs(now - Instant::ZERO),
            events: self.events,
            crashes: self.crashes.len(),
            detect_first_s: (!firsts.is_empty())
                .then(|| firsts.iter().sum::<f64>() / firsts.len() as f64),
            detect_p50_s: quantile(&all_delays, 0.5),
            detect_p999_s: detect_p999,
            detect_all_s: detect_all,
            undetected,
            false_positives: self.false_positives.len() as u64,
            false_positives_per_node_hour: self.false_positives.len() as f64
                / (node_seconds / 3600.0),
            partition_downs: self.partition_downs,
            msgs_per_node_s: traffic.iter().map(|t| t.msgs_per_node_s).sum(),
            bytes_per_node_s: traffic.iter().map(|t| t.bytes_per_node_s).sum(),
            traffic,
            placement_msgs_per_node_s: self.traffic.place_msgs as f64 / node_seconds,
            placement_bytes_per_node_s: self.traffic.place_bytes as f64 / node_seconds,
            tasks: self.tasks.len() as u64,
            placed,
            placement_p50_ms: quantile(&lat, 0.5),
            placement_p99_ms: quantile(&lat, 0.99),
            placement_max_ms: lat.last().copied(),
            placements_per_s,
            packing_efficiency: self.end_state.packing,
            bestfit_placed: self.end_state.bestfit_placed,
            load_imbalance: self.end_state.imbalance,
            replaced: rep.len() as u64,
            replace_p50_ms: quantile(&rep, 0.5),
            replace_p99_ms: quantile(&rep, 0.99),
            duplicates: self.tasks.iter().filter(|t| t.ever_dup).count() as u64,
            duplicate_max_s: self
                .tasks
                .iter()
                .any(|t| t.ever_dup)
                .then(|| secs(self.duplicate_max)),
            duplicates_after_convergence: self.end_state.duplicates,
            unplaced: self.end_state.unplaced,
            unplaced_no_room: self.end_state.unplaced_no_room,
            net: self.net.counters,
            checks,
            ok,
            series: self.series,
            detections: per_crash,
            detect_delays: all_delays,
        }
    }
}

/// Runs a full-mode simulation of `params`.
pub fn run(params: Params, progress: &mut dyn FnMut(&crate::Progress)) -> Result<Report, SimError> {
    Ok(World::new(params)?.run(progress))
}
