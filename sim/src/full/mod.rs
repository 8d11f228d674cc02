//! Full mode: every simulated node is a real [`shoal_core::NodeCore`] — the
//! membership ([`shoal_gossip::Membership`]), the placer
//! ([`shoal_placement::Placer`]) and the wiring between them that the agent
//! runs — over the virtual network.
//!
//! This module is the simulator's driver of the core, the counterpart of
//! the agent's `node/src/core_task.rs`: it hands each node its inputs
//! (datagrams, placement messages, timers, jobs, runtime reports) and
//! carries out what the node's [`shoal_core::Output`] queue asks, in order.
//! Gossip datagrams travel the lossy network; placement messages travel on
//! reliable streams (QUIC): a partition drops them, loss delays them. Jobs
//! reach each node after a replication delay. A fake runtime carries out
//! each start and stop 50 ms after it is told to, in order.
//!
//! - `setup`: building the world, forming the cluster, starting and
//!   crashing nodes;
//! - `scenario`: the faults and job waves of each scenario, sampling;
//! - `checks`: the `always_*` and `eventually_*` checkers and the
//!   bookkeeping they read;
//! - `report`: turning what was measured into a [`Report`];
//! - `health`, `deploy`: the `health-flaps` and `rolling-deploy`
//!   scenarios.

mod checks;
mod deploy;
mod health;
pub(crate) mod reach;
mod report;
mod scenario;
mod setup;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use shoal_core::{NodeCore, Output, Timer};
use shoal_gossip::{Config, Event as GossipEvent, Instant, MemberMeta, NodeId, SendKind};
use shoal_placement::{
    Command, Event as PlaceEvent, ExitReason, Job, Msg, PlacementConfig, Resources, TaskKey,
};

use crate::SimError;
use crate::net::{Fate, Network};
use crate::params::Params;
use crate::queue::EventQueue;
use crate::report::{Check, Report, Sample};
use crate::share::{InfoPool, MetaPool, RingPool};
use crate::workload::{JobPlan, RUNTIME_DELAY, WALL0_MS};

/// The cluster secret every simulated node shares.
const SECRET: [u8; 32] = [0x5a; 32];
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
    /// Begin the `rolling-deploy` scenario's deployments.
    Deploy,
    End,
    Finish,
}

enum Ev {
    Datagram {
        to: u32,
        from: u32,
        bytes: Vec<u8>,
    },
    /// A timer node `node` asked for in life `life`.
    Timer {
        node: u32,
        life: u32,
        timer: Timer,
    },
    Message {
        to: u32,
        to_life: u32,
        from: u32,
        msg: Msg,
    },
    Started {
        node: u32,
        life: u32,
        key: TaskKey,
        /// The job version and attempt of the start.
        start: (u64, u32),
    },
    /// A health check of a start of a task is due (`health-flaps`).
    Probe {
        node: u32,
        life: u32,
        key: TaskKey,
        job_version: u64,
        attempt: u32,
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
    /// The `rolling-deploy` scenario's sample of its deployments.
    DeploySample,
}

struct Node {
    id: NodeId,
    cap: Resources,
    meta: MemberMeta,
    up: bool,
    life: u32,
    life_started: Instant,
    bump: u32,
    /// The node itself, while it is up.
    core: Option<NodeCore>,
    /// Fingerprint of the member list its placer has.
    view: u64,
    procs: BTreeMap<TaskKey, u32>,
    used: Resources,
    /// The last batch of desired state delivered here, by job: an older
    /// one arriving late (delays are drawn per delivery) is not applied
    /// over a newer one, as a replica never goes back.
    delivered: BTreeMap<String, u32>,
}

#[derive(Default)]
struct Task {
    demand: Resources,
    submitted: Option<Instant>,
    first_run: Option<Instant>,
    /// The nodes whose runtime runs it, with the job version each started.
    runners: Vec<(u32, u64)>,
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
    /// Gossip datagrams and bytes sent across datacenters.
    across_dc: (u64, u64),
}

impl Task {
    /// Two nodes run the same version of it at once. A rolling
    /// deployment's new copy running beside the old one (start-first) is
    /// no duplicate; without deployments every copy has the same version,
    /// so this is two runners.
    fn duplicated(&self) -> bool {
        self.runners
            .iter()
            .enumerate()
            .any(|(k, a)| self.runners[k + 1..].iter().any(|b| b.1 == a.1))
    }
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
    /// What the nodes' one fact per datacenter said (`reach.rs`).
    reach: reach::ReachLog,
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
    info_pool: Arc<InfoPool>,
    ring_pool: Arc<RingPool>,
    /// The `health-flaps` scenario's plan and findings.
    flaps: Option<health::Flaps>,
    /// Deployment steps written (rolling deployments).
    deployment_steps: u64,
    /// The `rolling-deploy` scenario's plan and findings.
    rollout: Option<deploy::Rollout>,
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

    /// The core of node `i` in life `life`, if that life is still on.
    fn core(&mut self, i: usize, life: u32) -> Option<&mut NodeCore> {
        let n = &mut self.nodes[i];
        if n.life != life {
            return None;
        }
        n.core.as_mut()
    }

    fn handle(&mut self, ev: Ev) {
        let now = self.now();
        let wall = self.wall();
        match ev {
            Ev::Datagram { to, from, bytes } => {
                let i = to as usize;
                if let Some(core) = self.nodes[i].core.as_mut() {
                    core.handle_datagram(now, addr_of(from as usize), &bytes);
                    self.drain(i, false);
                }
            }
            Ev::Timer { node, life, timer } => {
                let i = node as usize;
                if let Some(core) = self.core(i, life) {
                    let acted = core.handle_timer(now, wall, timer);
                    // Of the timers, only the placer's tick and a publish
                    // hand the placer something.
                    let placed = acted && matches!(timer, Timer::Tick(_) | Timer::Publish);
                    self.drain(i, placed);
                }
            }
            Ev::Message {
                to,
                to_life,
                from,
                msg,
            } => {
                let i = to as usize;
                let from_id = self.nodes[from as usize].id;
                if let Some(core) = self.core(i, to_life) {
                    core.handle_message(now, wall, from_id, msg);
                    self.drain(i, true);
                }
            }
            Ev::Started {
                node,
                life,
                key,
                start,
            } => {
                let i = node as usize;
                if self.nodes[i].life != life || !self.nodes[i].up {
                    return;
                }
                self.runtime_started(i, &key, start.0);
                if let Some(core) = self.nodes[i].core.as_mut() {
                    core.handle_task_running(now, wall, &key, Default::default());
                    self.drain(i, true);
                }
                self.first_probe(i, &key, start.0, start.1);
            }
            Ev::Probe {
                node,
                life,
                key,
                job_version,
                attempt,
            } => self.probe(node as usize, life, key, job_version, attempt),
            Ev::Stopped { node, life, key } => {
                let i = node as usize;
                if self.nodes[i].life != life || !self.nodes[i].up {
                    return;
                }
                self.runtime_stopped(i, &key);
                if let Some(core) = self.nodes[i].core.as_mut() {
                    core.handle_task_exited(now, wall, &key, ExitReason::Stopped);
                    self.drain(i, true);
                }
            }
            Ev::JobsArrive { node, life, batch } => {
                let i = node as usize;
                if self.nodes[i].life != life {
                    return;
                }
                let delivered = &mut self.nodes[i].delivered;
                let jobs: Vec<Job> = self.batches[batch as usize]
                    .iter()
                    .filter(|j| {
                        let last = delivered.entry(j.spec.name.clone()).or_insert(batch);
                        let fresh = *last <= batch;
                        if fresh {
                            *last = batch;
                        }
                        fresh
                    })
                    .cloned()
                    .collect();
                if let Some(core) = self.nodes[i].core.as_mut() {
                    core.update_jobs(now, wall, jobs, &[]);
                    self.drain(i, true);
                }
            }
            Ev::Join { node } => self.start_node(node as usize, true),
            Ev::Action(a) => self.act(a),
            Ev::Sample => self.sample(),
            Ev::DeploySample => self.deploy_sample(),
        }
    }

    /// Carries out what node `i`'s core asked for, in order: datagrams onto
    /// the lossy network, placement messages onto reliable streams, runtime
    /// commands to the fake runtime, timers into the event queue; its
    /// events feed the checkers. `placed`: the call handed the placer
    /// something, so the overcommit check runs.
    fn drain(&mut self, i: usize, placed: bool) {
        let now = self.now();
        let life = self.nodes[i].life;
        while let Some(out) = self.nodes[i].core.as_mut().and_then(NodeCore::poll) {
            match out {
                Output::Datagram(t) => {
                    let Some(to) = index_of(&t.to).filter(|j| *j < self.nodes.len()) else {
                        continue;
                    };
                    self.traffic.count_gossip(t.kind, t.payload.len());
                    self.second.count_gossip(t.kind, t.payload.len());
                    if self.net.topology().dc(i) != self.net.topology().dc(to) {
                        self.traffic.across_dc.0 += 1;
                        self.traffic.across_dc.1 += t.payload.len() as u64;
                    }
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
                Output::Message { to, msg } => {
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
                Output::Runtime(c) => {
                    let node = i as u32;
                    if let Command::Replace { key, .. } = &c {
                        self.on_replace(key);
                    }
                    let ev = match c {
                        Command::Start {
                            key,
                            job_version,
                            attempt,
                            ..
                        }
                        | Command::Replace {
                            key,
                            job_version,
                            attempt,
                            ..
                        } => Ev::Started {
                            node,
                            life,
                            key,
                            start: (job_version, attempt),
                        },
                        Command::Stop { key, .. } => Ev::Stopped { node, life, key },
                    };
                    self.q.push(now + RUNTIME_DELAY, ev);
                }
                Output::Timer { at, timer } => {
                    let node = i as u32;
                    self.q.push(at, Ev::Timer { node, life, timer });
                }
                Output::Gossip(GossipEvent::MemberDown { identity, reason }) => {
                    self.on_member_down(i, &identity, reason);
                }
                Output::Gossip(GossipEvent::IdentityRenewed { identity }) => {
                    self.nodes[i].bump = identity.bump;
                }
                Output::Gossip(GossipEvent::DatacenterUnreachable { dc }) => {
                    let topology = self.net.topology();
                    let live =
                        |d| (0..self.nodes.len()).any(|j| self.nodes[j].up && topology.dc(j) == d);
                    self.reach
                        .unreachable(now, i as u32, topology.dc(i), &dc, live);
                }
                Output::Gossip(GossipEvent::DatacenterReachable { .. }) => {
                    self.reach.reachable(now);
                }
                Output::Placement(PlaceEvent::Health { key, health, .. }) => {
                    self.on_health(&key, health);
                }
                Output::Gossip(_)
                | Output::Placement(_)
                | Output::MemberState(_)
                | Output::CutOff(_) => {}
                Output::Finished(o) => self.record_finished(o),
                Output::Deployment(step) => self.record_deployment(step),
                Output::Published(change) => {
                    let old = self.nodes[i].view;
                    let view = change
                        .joined
                        .iter()
                        .chain(&change.left)
                        .fold(old, |v, id| v ^ fingerprint(*id));
                    self.nodes[i].view = view;
                    if view != old {
                        self.view_left(old);
                        self.view_joined(view);
                    }
                }
            }
        }
        self.after_health_turn(i);
        if placed {
            self.always_no_overcommit(i);
        }
    }
}

/// Runs a full-mode simulation of `params`.
pub fn run(params: Params, progress: &mut dyn FnMut(&crate::Progress)) -> Result<Report, SimError> {
    Ok(World::new(params)?.run(progress))
}
