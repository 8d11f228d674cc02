//! Placement on a small cluster of real node cores ([`NodeCore`]: gossip,
//! placer and their wiring, the code every agent runs) over a
//! deterministic virtual network, with a fake runtime that tracks the
//! "processes" each node runs. Members come and go by gossip (the `test`
//! preset), as on real machines: a crash is detected, a partition is felt.
//!
//! Checked after every event: no node holds more than its capacity.
//! Checked once things settle: every wanted task runs exactly once, and
//! nothing else runs.
//!
//! One file past 1,000 lines on purpose: one harness (the virtual network
//! and runtime, ~700 lines) and the scenarios that share it; each test is a
//! scenario of a few dozen lines, and splitting the file would mean a
//! shared harness module for tests that read best next to it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use shoal_core::{NodeCore, Output, Summary, Timer, Wiring};
use shoal_gossip::{
    Capacity, Config, FreeClass, Instant, MemberMeta, MemberState, Membership, NodeId,
    NodeIdentity, PacketSecurity, RuntimeInfo,
};
use shoal_model::{Deployment, JobSpec};
use shoal_placement::{
    Command, DeployStep, ExitReason, Health, Job, Msg, PlacementConfig, Placer, Resources, Stamp,
    TaskKey, TaskState, TaskStatus,
};

const SECRET: [u8; 32] = [3; 32];
/// Long enough for anything to settle: a crash detected (the `test`
/// preset: about 2 s), keys moved, auctions retried.
const SETTLE: Duration = Duration::from_secs(30);

enum Ev {
    Datagram {
        to: usize,
        from: usize,
        bytes: Vec<u8>,
    },
    Deliver {
        to: usize,
        to_life: u32,
        from: usize,
        msg: Msg,
    },
    Timer {
        node: usize,
        life: u32,
        timer: Timer,
    },
    Started {
        node: usize,
        life: u32,
        key: TaskKey,
        stamp: Stamp,
    },
    Stopped {
        node: usize,
        life: u32,
        key: TaskKey,
    },
    /// A deployment's driver wrote a step into the desired state.
    Deploy(DeployStep),
}

struct Node {
    meta: MemberMeta,
    core: Option<NodeCore>,
    life: u32,
    procs: BTreeMap<TaskKey, Stamp>,
    /// The job version each process was started with.
    versions: BTreeMap<TaskKey, u64>,
}

struct Sim {
    now: Instant,
    wall: u64,
    seq: u64,
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    events: BTreeMap<u64, Ev>,
    nodes: Vec<Node>,
    rng: ChaCha8Rng,
    /// Loss of gossip datagrams and placement messages.
    loss: f64,
    /// Sides while partitioned: nothing crosses between sides.
    side: Option<Vec<u8>>,
    /// Sides of placement messages only (gossip still flows).
    msg_side: Option<Vec<u8>>,
    jobs: BTreeMap<String, Job>,
    checks: u64,
    /// Every placer's tuning.
    placement: PlacementConfig,
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0001u32 + i as u32)), 5481)
}

fn index(a: SocketAddr) -> usize {
    match a.ip() {
        IpAddr::V4(v) => (u32::from(v) - 0x0a00_0001) as usize,
        IpAddr::V6(_) => unreachable!("the simulated network is IPv4"),
    }
}

fn meta(i: usize, labels: &[(&str, &str)]) -> MemberMeta {
    MemberMeta {
        name: format!("node-{i}"),
        gossip_addr: addr(i),
        rpc_addr: addr(i),
        api_addr: addr(i),
        api_tls: false,
        gossip_keys: Vec::new(),
        dc: "dc1".into(),
        zone: format!("z{}", i % 2),
        region: "global".into(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        capacity: Capacity {
            cpus_milli: 2000,
            memory_mb: 1024,
            disk_mb: 10_000,
            gpus: 0,
        },
        runtimes: vec![RuntimeInfo {
            name: "process".into(),
            version: "test".into(),
        }],
        agent_version: "test".into(),
        free_class: FreeClass::IDLE,
        isolation: "none".into(),
        draining: false,
    }
}

fn spec(name: &str, count: Option<u32>, cpus: f64, extra: serde_json::Value) -> JobSpec {
    let mut v = json!({
        "name": name,
        "task": {"runtime": "process", "command": "/bin/sleep", "resources": {"cpus": cpus, "memory_mb": 64}},
    });
    if let Some(c) = count {
        v["count"] = json!(c);
    }
    if let serde_json::Value::Object(m) = extra {
        for (k, val) in m {
            v[k] = val;
        }
    }
    JobSpec::from_json(v).unwrap()
}

/// The core's summary, kept change by change, equals a recount of its
/// member list; but for a suspicion heard by gossip, which the summary
/// counts at the membership's next pass (so a live member counts as the
/// summary sees it).
fn always_summary_is_a_recount(c: &NodeCore, name: &str) {
    let m = c.membership();
    let members = m.members();
    let live = |s: MemberState| matches!(s, MemberState::Alive | MemberState::Suspect);
    let counted: Vec<_> = members
        .iter()
        .filter_map(|x| {
            let seen = m.member_state(x.identity.id)?;
            let state = if live(seen) && live(x.state) {
                seen
            } else {
                x.state
            };
            Some((x.identity.id, state, x.meta.as_ref()))
        })
        .collect();
    let recount = Summary::recount(counted.iter().map(|(id, st, meta)| (*id, *st, *meta)));
    assert!(
        c.summary().same_counts(&recount),
        "{name}: summary {:?}\nrecount {:?}",
        c.summary().groups(),
        recount.groups()
    );
    assert_eq!(c.summary().len(), counted.len(), "{name}");
}

impl Sim {
    /// `n` nodes, formed: every placer knows every member.
    fn new(n: usize, seed: u64, loss: f64) -> Sim {
        Sim::with(n, seed, loss, |_| Vec::new())
    }

    fn with(
        n: usize,
        seed: u64,
        loss: f64,
        labels: impl Fn(usize) -> Vec<(&'static str, &'static str)>,
    ) -> Sim {
        Sim::tuned(n, seed, loss, labels, PlacementConfig::default())
    }

    fn tuned(
        n: usize,
        seed: u64,
        loss: f64,
        labels: impl Fn(usize) -> Vec<(&'static str, &'static str)>,
        placement: PlacementConfig,
    ) -> Sim {
        let mut s = Sim {
            now: Instant::ZERO,
            wall: 1_700_000_000_000,
            seq: 0,
            heap: BinaryHeap::new(),
            events: BTreeMap::new(),
            nodes: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            loss,
            side: None,
            msg_side: None,
            jobs: BTreeMap::new(),
            checks: 0,
            placement,
        };
        for i in 0..n {
            s.add_node(meta(i, &labels(i)));
        }
        assert!(
            s.run_until(SETTLE, |s| s.formed()),
            "the cluster did not form"
        );
        s
    }

    /// Every live node's placer has exactly the live nodes.
    fn formed(&self) -> bool {
        let live: Vec<NodeId> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].core.is_some())
            .map(|i| NodeId(i as u64 + 1))
            .collect();
        self.nodes.iter().filter_map(|n| n.core.as_ref()).all(|c| {
            (0..self.nodes.len()).all(|j| {
                let id = NodeId(j as u64 + 1);
                c.placer().has_member(id) == live.contains(&id)
            })
        })
    }

    /// Starts a node (joining through node 0 unless it is node 0) with
    /// every job known so far, as an agent starting from its replica.
    fn add_node(&mut self, meta: MemberMeta) -> usize {
        let i = self.nodes.len();
        self.nodes.push(Node {
            meta,
            core: None,
            life: 0,
            procs: BTreeMap::new(),
            versions: BTreeMap::new(),
        });
        self.start(i);
        i
    }

    fn start(&mut self, i: usize) {
        let id = NodeId(i as u64 + 1);
        let n = &mut self.nodes[i];
        n.life += 1;
        let capacity = Resources {
            cpus_milli: u64::from(n.meta.capacity.cpus_milli),
            memory_mb: n.meta.capacity.memory_mb,
            disk_mb: n.meta.capacity.disk_mb,
            gpus: 0,
        };
        let membership = Membership::new(
            self.now,
            NodeIdentity::new(id, addr(i), n.life),
            n.meta.clone(),
            Config::test(),
            PacketSecurity::sealed(&SECRET),
            self.rng.random(),
        )
        .unwrap();
        let placer = Placer::new(id, self.placement.clone(), capacity, self.now);
        let mut core = NodeCore::new(membership, placer, Wiring::default());
        let join = if i == 0 { Vec::new() } else { vec![addr(0)] };
        core.start(
            self.now,
            self.wall,
            &join,
            self.jobs.values().cloned().collect(),
        );
        self.nodes[i].core = Some(core);
        self.drain(i);
    }

    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn connected(side: &Option<Vec<u8>>, a: usize, b: usize) -> bool {
        side.as_ref().is_none_or(|s| s[a] == s[b])
    }

    fn set_job(&mut self, spec: JobSpec) {
        let version = self.jobs.get(&spec.name).map_or(1, |j| j.version + 1);
        let name = spec.name.clone();
        self.jobs.insert(
            spec.name.clone(),
            Job {
                spec: Arc::new(spec),
                version,
                deleted: false,
                run_version: version,
                finished: Arc::default(),
                waiting: Arc::default(),
                deployment: None,
            },
        );
        self.publish_jobs(&name);
    }

    /// A new version of a job, as the desired state writes it: a change
    /// of what a service with `[update]` runs begins a deployment.
    fn update_job(&mut self, spec: JobSpec) {
        let old = self.jobs.get(&spec.name).cloned().expect("an existing job");
        let version = old.version + 1;
        let mut a = (*old.spec).clone();
        let mut b = spec.clone();
        a.count = None;
        b.count = None;
        let rolls = a != b && spec.update.is_some();
        let deployment = rolls.then(|| {
            let canary = spec.update.as_ref().map_or(0, |u| u.canary);
            Arc::new(Deployment::begin(
                version,
                old.run_version,
                canary,
                self.wall,
            ))
        });
        let name = spec.name.clone();
        self.jobs.insert(
            spec.name.clone(),
            Job {
                spec: Arc::new(spec),
                version,
                deleted: false,
                run_version: if a != b { version } else { old.run_version },
                finished: Arc::default(),
                waiting: Arc::default(),
                deployment: deployment.or(old.deployment),
            },
        );
        self.publish_jobs(&name);
    }

    /// Indexes of `job` with a process whose latest start is healthy by
    /// its holder's account (no checks: running is healthy), and how many
    /// of those run `version` or later.
    fn healthy(&self, job: &str, version: u64) -> (usize, usize) {
        let mut indexes = BTreeSet::new();
        let mut new = BTreeSet::new();
        for n in self.nodes.iter().filter(|n| n.core.is_some()) {
            let placer = n.core.as_ref().expect("live").placer();
            for k in n.procs.keys().filter(|k| k.job == job) {
                let st = placer.status(std::slice::from_ref(k)).remove(0);
                if st.health == Health::Healthy {
                    indexes.insert(k.clone());
                    if n.versions.get(k).is_some_and(|v| *v >= version) {
                        new.insert(k.clone());
                    }
                }
            }
        }
        (indexes.len(), new.len())
    }

    /// How many live nodes drive a deployment of `job` now.
    fn drivers(&self, job: &str) -> usize {
        self.nodes
            .iter()
            .filter_map(|n| n.core.as_ref())
            .filter(|c| c.placer().drives(job))
            .count()
    }

    fn delete_job(&mut self, name: &str) {
        let j = self.jobs.get_mut(name).unwrap();
        j.version += 1;
        j.deleted = true;
        self.publish_jobs(name);
    }

    /// Even nodes get every job (as after missed changes), odd ones only
    /// the one that changed (as on a job event): both paths must agree.
    fn publish_jobs(&mut self, changed: &str) {
        let jobs: Vec<Job> = self.jobs.values().cloned().collect();
        let one = vec![self.jobs[changed].clone()];
        let (now, wall) = (self.now, self.wall);
        for i in 0..self.nodes.len() {
            let Some(core) = self.nodes[i].core.as_mut() else {
                continue;
            };
            if i % 2 == 0 {
                core.set_jobs(now, wall, jobs.clone());
            } else {
                core.update_jobs(now, wall, one.clone(), &[]);
            }
            self.drain(i);
        }
    }

    /// Carries out what node `i`'s core asked for.
    fn drain(&mut self, i: usize) {
        let life = self.nodes[i].life;
        while let Some(out) = self.nodes[i].core.as_mut().and_then(NodeCore::poll) {
            match out {
                Output::Datagram(t) => {
                    let to = index(t.to);
                    if to >= self.nodes.len()
                        || !Sim::connected(&self.side, i, to)
                        || self.rng.random::<f64>() < self.loss
                    {
                        continue;
                    }
                    let latency = Duration::from_micros(self.rng.random_range(100..3000));
                    self.push(
                        self.now + latency,
                        Ev::Datagram {
                            to,
                            from: i,
                            bytes: t.payload,
                        },
                    );
                }
                Output::Message { to, msg } => {
                    let to = to.0 as usize - 1;
                    if !Sim::connected(&self.side, i, to)
                        || !Sim::connected(&self.msg_side, i, to)
                        || self.rng.random::<f64>() < self.loss
                    {
                        continue;
                    }
                    let latency = Duration::from_micros(self.rng.random_range(100..3000));
                    let to_life = self.nodes[to].life;
                    self.push(
                        self.now + latency,
                        Ev::Deliver {
                            to,
                            to_life,
                            from: i,
                            msg,
                        },
                    );
                }
                Output::Runtime(c) => {
                    let later = self.now + Duration::from_millis(5);
                    match c {
                        Command::Start {
                            key,
                            stamp,
                            job_version,
                            ..
                        } => {
                            self.nodes[i].versions.insert(key.clone(), job_version);
                            self.push(
                                later,
                                Ev::Started {
                                    node: i,
                                    life,
                                    key,
                                    stamp,
                                },
                            );
                        }
                        Command::Replace {
                            key,
                            stamp,
                            job_version,
                            ..
                        } => {
                            self.nodes[i].versions.insert(key.clone(), job_version);
                            self.nodes[i].procs.remove(&key);
                            self.push(
                                later,
                                Ev::Started {
                                    node: i,
                                    life,
                                    key,
                                    stamp,
                                },
                            );
                        }
                        Command::Stop { key, .. } => {
                            self.push(later, Ev::Stopped { node: i, life, key });
                        }
                    }
                }
                Output::Timer { at, timer } => {
                    self.push(
                        at,
                        Ev::Timer {
                            node: i,
                            life,
                            timer,
                        },
                    );
                }
                Output::Deployment(step) => {
                    // Written on the driver's node, then replicated.
                    self.push(self.now + Duration::from_millis(20), Ev::Deploy(step));
                }
                Output::Gossip(_)
                | Output::Placement(_)
                | Output::Published(_)
                | Output::Finished(_)
                | Output::MemberState(_)
                | Output::CutOff(_) => {}
            }
        }
    }

    /// The core of node `i` in life `life`, if it is still that life.
    fn core(&mut self, i: usize, life: u32) -> Option<&mut NodeCore> {
        let n = &mut self.nodes[i];
        if n.life != life {
            return None;
        }
        n.core.as_mut()
    }

    fn always_no_overcommit(&mut self) {
        self.checks += 1;
        for n in &self.nodes {
            let Some(c) = &n.core else { continue };
            let (used, cap) = (c.placer().used_resources(), c.placer().capacity());
            assert!(
                used.cpus_milli <= cap.cpus_milli && used.memory_mb <= cap.memory_mb,
                "{} overcommitted: {used:?} of {cap:?}",
                n.meta.name
            );
            always_summary_is_a_recount(c, &n.meta.name);
        }
    }

    /// Handles the next event; `false` when there is none.
    fn step(&mut self) -> bool {
        let Some(Reverse((at, seq))) = self.heap.pop() else {
            return false;
        };
        let ev = self.events.remove(&seq).expect("queued event");
        if at > self.now {
            self.wall += (at - self.now).as_millis() as u64;
            self.now = at;
        }
        let (now, wall) = (self.now, self.wall);
        match ev {
            Ev::Datagram { to, from, bytes } => {
                if let Some(c) = self.nodes[to].core.as_mut() {
                    c.handle_datagram(now, addr(from), &bytes);
                    self.drain(to);
                }
            }
            Ev::Deliver {
                to,
                to_life,
                from,
                msg,
            } => {
                if let Some(c) = self.core(to, to_life) {
                    c.handle_message(now, wall, NodeId(from as u64 + 1), msg);
                    self.drain(to);
                }
            }
            Ev::Timer { node, life, timer } => {
                if let Some(c) = self.core(node, life) {
                    c.handle_timer(now, wall, timer);
                    self.drain(node);
                }
            }
            Ev::Started {
                node,
                life,
                key,
                stamp,
            } => {
                if self.nodes[node].life == life && self.nodes[node].core.is_some() {
                    self.nodes[node].procs.insert(key.clone(), stamp);
                    if let Some(c) = self.nodes[node].core.as_mut() {
                        c.handle_task_running(now, wall, &key, Default::default());
                        self.drain(node);
                    }
                }
            }
            Ev::Deploy(step) => {
                let job = self.jobs.get_mut(&step.job).expect("a known job");
                if let Some(d) = job
                    .deployment
                    .as_deref()
                    .filter(|d| d.version == step.version && d.status.in_progress())
                    && step.patch.changes(d)
                {
                    job.deployment = Some(Arc::new(step.patch.apply(d, wall)));
                    let name = step.job.clone();
                    self.publish_jobs(&name);
                }
            }
            Ev::Stopped { node, life, key } => {
                if self.nodes[node].life == life && self.nodes[node].core.is_some() {
                    self.nodes[node].procs.remove(&key);
                    if let Some(c) = self.nodes[node].core.as_mut() {
                        c.handle_task_exited(now, wall, &key, ExitReason::Stopped);
                        self.drain(node);
                    }
                }
            }
        }
        self.always_no_overcommit();
        true
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while let Some(Reverse((at, _))) = self.heap.peek().copied() {
            if at > until {
                break;
            }
            self.step();
        }
        if until > self.now {
            self.wall += (until - self.now).as_millis() as u64;
            self.now = until;
        }
    }

    fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&Sim) -> bool) -> bool {
        let deadline = self.now + limit;
        while self.now < deadline {
            if cond(self) {
                return true;
            }
            self.run_for(Duration::from_millis(50));
        }
        cond(self)
    }

    /// Processes of `job`, by key: on which nodes.
    fn processes(&self, job: &str) -> BTreeMap<TaskKey, Vec<usize>> {
        let mut out: BTreeMap<TaskKey, Vec<usize>> = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.core.is_none() {
                continue;
            }
            for k in n.procs.keys().filter(|k| k.job == job) {
                out.entry(k.clone()).or_default().push(i);
            }
        }
        out
    }

    /// Every index below `count` runs exactly once, nothing else runs.
    fn exactly_once(&self, job: &str, count: u32) -> bool {
        let p = self.processes(job);
        p.len() == count as usize
            && p.values().all(|nodes| nodes.len() == 1)
            && p.keys()
                .all(|k| k.index_number().is_some_and(|i| i < count))
    }

    /// Runs until every index of `job` below `count` runs exactly once
    /// (within `limit`), or fails saying where its processes are.
    fn settle_exactly_once(&mut self, job: &str, count: u32, limit: Duration) {
        assert!(
            self.run_until(limit, |s| s.exactly_once(job, count)),
            "{job} not exactly once ×{count}: {:?}",
            self.processes(job)
        );
    }

    fn per_node(&self, job: &str) -> Vec<usize> {
        self.nodes
            .iter()
            .map(|n| n.procs.keys().filter(|k| k.job == job).count())
            .collect()
    }

    /// Node `i` crashes: its processes die with it, nobody is told.
    fn kill(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.core = None;
        n.life += 1;
        n.procs.clear();
    }

    /// Publishes new labels for node `i` through its gossip metadata.
    fn relabel(&mut self, i: usize, labels: &[(&str, &str)]) {
        let now = self.now;
        let core = self.nodes[i].core.as_mut().expect("a live node");
        let mut meta = (**core.membership().meta()).clone();
        meta.labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        core.set_meta(now, meta).unwrap();
        self.drain(i);
    }

    fn placer_of(&self, i: usize) -> &Placer {
        self.nodes[i].core.as_ref().expect("a live node").placer()
    }

    /// The status of `key` from its coordinator (as node 0 sees the ring).
    fn status(&self, key: &TaskKey) -> TaskStatus {
        let coord = self.placer_of(0).ring().owner(key.hash()).unwrap();
        let c = coord.0 as usize - 1;
        self.placer_of(c)
            .status(std::slice::from_ref(key))
            .remove(0)
    }
}

#[test]
fn sixteen_tasks_fill_five_nodes_and_the_twenty_first_waits_with_every_reason() {
    let mut s = Sim::new(5, 1, 0.0);
    s.set_job(spec("web", Some(16), 0.5, json!({})));
    assert!(
        s.run_until(SETTLE, |s| s.exactly_once("web", 16)),
        "16 not placed: {:?}",
        s.per_node("web")
    );
    assert!(
        s.per_node("web").iter().all(|n| *n <= 4),
        "{:?}",
        s.per_node("web")
    );

    s.set_job(spec("web", Some(20), 0.5, json!({})));
    assert!(
        s.run_until(SETTLE, |s| s.exactly_once("web", 20)),
        "20 not placed: {:?}",
        s.per_node("web")
    );
    assert_eq!(s.per_node("web"), vec![4; 5]);

    s.set_job(spec("web", Some(21), 0.5, json!({})));
    s.run_for(Duration::from_secs(5));
    assert!(s.exactly_once("web", 20) || s.processes("web").len() == 20);
    let st = s.status(&TaskKey::index("web", 20));
    assert_eq!(st.state, TaskState::Pending);
    assert_eq!(st.pending.len(), 5, "{:?}", st.pending);
    // Each node named: asked ("0 free") or judged from the free-capacity
    // class its gossip carries ("less than 0.25 free").
    for i in 0..5 {
        assert!(
            st.pending
                .iter()
                .any(|r| r.starts_with(&format!("node-{i}: needs 0.5 cpus, "))
                    && (r.ends_with(", 0 free") || r.ends_with("less than 0.25 free"))),
            "{:?}",
            st.pending
        );
    }
}

#[test]
fn a_static_port_is_a_resource_no_two_tasks_of_a_node_share() {
    let mut s = Sim::new(3, 2, 0.0);
    let ports = json!({"task": {"runtime": "process", "command": "/bin/sleep",
        "ports": [{"name": "http", "static": 8080}],
        "resources": {"cpus": 0.1, "memory_mb": 64}}});
    s.set_job(spec("web", Some(3), 0.1, ports.clone()));
    assert!(
        s.run_until(SETTLE, |s| s.exactly_once("web", 3)),
        "3 not placed: {:?}",
        s.per_node("web")
    );
    // Room for many more by resources; one per node by the port.
    assert_eq!(s.per_node("web"), vec![1; 3]);
    s.set_job(spec("web", Some(4), 0.1, ports));
    s.run_for(Duration::from_secs(5));
    assert!(s.exactly_once("web", 3), "{:?}", s.per_node("web"));
    let st = s.status(&TaskKey::index("web", 3));
    assert_eq!(st.state, TaskState::Pending);
    assert_eq!(st.pending.len(), 3, "{:?}", st.pending);
    assert!(
        st.pending
            .iter()
            .all(|r| r.contains("port 8080 (http) in use by web/")),
        "{:?}",
        st.pending
    );
}

#[test]
fn ports_from_the_range_are_a_resource_a_full_range_gives_a_reason() {
    // Three host ports in each node's range; a task takes two of them.
    let config = PlacementConfig {
        host_ports: 3,
        ..PlacementConfig::default()
    };
    let mut s = Sim::tuned(3, 4, 0.0, |_| Vec::new(), config);
    let ports = json!({"task": {"runtime": "process", "command": "/bin/sleep",
        "ports": [{"name": "http"}, {"name": "admin"}, {"name": "fixed", "static": 9000}],
        "resources": {"cpus": 0.1, "memory_mb": 64}}});
    let mut two = ports.clone();
    two["task"]["ports"] = json!([{"name": "http"}, {"name": "admin"}]);
    s.set_job(spec("web", Some(3), 0.1, two.clone()));
    assert!(
        s.run_until(SETTLE, |s| s.exactly_once("web", 3)),
        "3 not placed: {:?}",
        s.per_node("web")
    );
    // Room for many more by resources; one per node by the range.
    assert_eq!(s.per_node("web"), vec![1; 3]);
    s.set_job(spec("web", Some(4), 0.1, two));
    s.run_for(Duration::from_secs(5));
    assert!(s.exactly_once("web", 3), "{:?}", s.per_node("web"));
    let st = s.status(&TaskKey::index("web", 3));
    assert_eq!(st.state, TaskState::Pending);
    assert_eq!(st.pending.len(), 3, "{:?}", st.pending);
    assert!(
        st.pending.iter().all(|r| r.contains(
            "no free host port: 2 of the 3 of its --port-range are held, the task needs 2"
        )),
        "{:?}",
        st.pending
    );
    // A static port is not drawn from the range: one range port left on
    // each node is enough for a task with one ranged and one static port.
    let mut one = ports;
    one["task"]["ports"] = json!([{"name": "http"}, {"name": "fixed", "static": 9000}]);
    s.set_job(spec("api", Some(3), 0.1, one));
    assert!(
        s.run_until(SETTLE, |s| s.exactly_once("api", 3)),
        "api not placed: {:?}",
        s.per_node("api")
    );
    assert_eq!(s.per_node("api"), vec![1; 3]);
}

#[test]
fn the_reasons_of_a_large_cluster_are_summarized_by_kind() {
    // 40 nodes of 2 cpus, half of them in zone z1: a 4-cpu task fits
    // nowhere, a task constrained to z1 and needing 4 cpus names both kinds.
    let mut s = Sim::new(40, 1, 0.0);
    s.set_job(spec(
        "big",
        Some(1),
        4.0,
        json!({"constraints": [{"attribute": "zone", "op": "=", "value": "z1"}]}),
    ));
    s.run_for(Duration::from_secs(5));
    let st = s.status(&TaskKey::index("big", 0));
    assert_eq!(st.state, TaskState::Pending);
    let p = &st.pending;
    assert_eq!(p[0], "40 nodes could not take it:", "{p:?}");
    // Each kind: up to 3 examples, then the rest counted.
    assert!(p.contains(&"and 17 more: needs 4 cpus".to_owned()), "{p:?}");
    assert!(
        p.contains(&"and 17 more: constraint zone = z1 failed".to_owned()),
        "{p:?}"
    );
    let examples = p.iter().filter(|l| l.starts_with("node-")).count();
    assert_eq!(examples, 6, "{p:?}");
    assert_eq!(p.len(), 9, "bounded, whatever the cluster size: {p:?}");
}

/// The free-capacity class travels by gossip: when a full cluster frees
/// room, the node's class rises in its metadata (published by its core),
/// and a task waiting out a long backoff is retried at once.
#[test]
fn a_waiting_task_is_retried_when_a_member_reports_more_room() {
    let mut s = Sim::new(5, 1, 0.0);
    s.set_job(spec("web", Some(20), 0.5, json!({})));
    s.settle_exactly_once("web", 20, SETTLE);
    s.set_job(spec("late", Some(1), 0.5, json!({})));
    // Long enough for the retry backoff to reach its longest (30 s).
    s.run_for(Duration::from_secs(40));
    let late = TaskKey::index("late", 0);
    assert_eq!(s.status(&late).state, TaskState::Pending);
    // Every node's record says it is full.
    for i in 0..5 {
        let full = (0..5).all(|j| {
            s.nodes[j]
                .core
                .as_ref()
                .unwrap()
                .membership()
                .up_meta(NodeId(i as u64 + 1))
                .unwrap()
                .free_class
                .0
                == 0
        });
        assert!(full, "node-{i} does not look full to everyone");
    }
    // One task of web goes away: its node's free class rises.
    s.set_job(spec("web", Some(19), 0.5, json!({})));
    assert!(s.run_until(SETTLE, |s| s.processes("web").len() == 19));
    // Retried within a few seconds, not at the end of its backoff.
    assert!(
        s.run_until(Duration::from_secs(5), |s| s.exactly_once("late", 1)),
        "late still waits: {:?}",
        s.status(&late)
    );
}

#[test]
fn tasks_of_a_failed_node_move_and_no_index_runs_twice() {
    let mut s = Sim::new(5, 2, 0.0);
    s.set_job(spec("web", Some(12), 0.5, json!({})));
    s.settle_exactly_once("web", 12, SETTLE);
    let victim = (0..5).max_by_key(|i| s.per_node("web")[*i]).unwrap();
    assert!(s.per_node("web")[victim] > 0);
    s.kill(victim);
    s.settle_exactly_once("web", 12, SETTLE);
}

/// A coordinator that stops hearing a holder's leases, while gossip still
/// has the holder up, places the task again after `lease_silence`: on its
/// ticks alone, since no message reaches it.
#[test]
fn a_holder_whose_leases_stop_arriving_is_replaced_on_ticks_alone() {
    let mut s = Sim::new(5, 4, 0.0);
    s.set_job(spec("web", Some(8), 0.25, json!({})));
    s.settle_exactly_once("web", 8, SETTLE);
    let (key, holder, coord) = s
        .processes("web")
        .into_iter()
        .find_map(|(key, nodes)| {
            let owner = s.placer_of(0).ring().owner(key.hash()).unwrap();
            let coord = owner.0 as usize - 1;
            (nodes[0] != coord).then(|| (key, nodes[0], coord))
        })
        .expect("a task held away from its coordinator");
    // Cut the coordinator's placement messages, but not its gossip: every
    // member list keeps everyone.
    let mut side = vec![0u8; 5];
    side[coord] = 1;
    s.msg_side = Some(side);
    let silence = PlacementConfig::default().lease_silence;
    assert!(
        s.run_until(silence + Duration::from_secs(5), |s| s.nodes[coord]
            .procs
            .contains_key(&key)),
        "{key} still only on node {holder}: {:?}",
        s.processes("web")
    );
    assert!(
        s.formed(),
        "gossip was not cut: the member lists keep everyone"
    );
}

#[test]
fn a_partition_then_heal_leaves_exactly_one_process_per_index() {
    let mut s = Sim::new(6, 3, 0.0);
    s.set_job(spec("web", Some(6), 0.25, json!({})));
    s.settle_exactly_once("web", 6, SETTLE);
    // Split 3/3: each side sees the other fail and places what it lost.
    s.side = Some(vec![0, 0, 0, 1, 1, 1]);
    s.run_for(Duration::from_secs(15));
    let total: usize = s.processes("web").values().map(Vec::len).sum();
    assert!(
        total > 6,
        "the partition should have doubled some tasks ({total})"
    );
    // Heal: gossip brings the sides back together.
    s.side = None;
    s.settle_exactly_once("web", 6, SETTLE * 2);
}

#[test]
fn scaling_down_removes_the_highest_indexes_and_a_stop_removes_everything() {
    let mut s = Sim::new(5, 4, 0.0);
    s.set_job(spec("web", Some(16), 0.5, json!({})));
    s.settle_exactly_once("web", 16, SETTLE);
    s.set_job(spec("web", Some(4), 0.5, json!({})));
    s.settle_exactly_once("web", 4, SETTLE);
    s.set_job(spec("web", Some(10), 0.5, json!({})));
    s.settle_exactly_once("web", 10, SETTLE);
    s.delete_job("web");
    assert!(
        s.run_until(SETTLE, |s| s.processes("web").is_empty()),
        "{:?}",
        s.processes("web")
    );
}

#[test]
fn constraints_and_system_jobs() {
    let mut s = Sim::new(4, 5, 0.0);
    // Labels arrive by gossip, as when an operator restarts a node with
    // new ones.
    s.relabel(1, &[("gpu", "yes")]);
    s.relabel(3, &[("gpu", "yes")]);
    s.run_for(Duration::from_secs(2));
    s.set_job(spec(
        "train",
        Some(4),
        0.25,
        json!({"constraints": [{"attribute": "gpu", "op": "=", "value": "yes"}]}),
    ));
    s.set_job(spec("agentd", None, 0.1, json!({"type": "system"})));
    s.settle_exactly_once("train", 4, SETTLE);
    let on: BTreeSet<usize> = s.processes("train").values().flatten().copied().collect();
    assert_eq!(on, [1, 3].into());
    assert!(s.run_until(SETTLE, |s| s.per_node("agentd") == vec![1; 4]));
    // A node that joins later runs the system job too.
    s.add_node(meta(4, &[]));
    assert!(s.run_until(SETTLE, |s| s.per_node("agentd") == vec![1; 5]));
    // A constraint nobody meets: pending, each node's reason named.
    s.set_job(spec(
        "eu",
        Some(1),
        0.25,
        json!({"constraints": [{"attribute": "dc", "op": "=", "value": "eu"}]}),
    ));
    s.run_for(Duration::from_secs(3));
    let st = s.status(&TaskKey::index("eu", 0));
    assert_eq!(st.state, TaskState::Pending);
    assert!(
        st.pending
            .iter()
            .all(|r| r.contains("constraint dc = eu failed")),
        "{:?}",
        st.pending
    );
    assert_eq!(st.pending.len(), 5);
}

#[test]
fn spread_over_a_label() {
    let mut s = Sim::new(4, 6, 0.0);
    s.set_job(spec("web", Some(4), 0.25, json!({"spread": "zone"})));
    s.settle_exactly_once("web", 4, SETTLE);
    let zones: Vec<String> = s
        .processes("web")
        .values()
        .flatten()
        .map(|i| s.nodes[*i].meta.zone.clone())
        .collect();
    let z0 = zones.iter().filter(|z| *z == "z0").count();
    assert!((1..=3).contains(&z0), "not spread over zones: {zones:?}");
}

/// A drained node takes nothing new, its tasks move away, and it says so
/// in its gossip metadata.
#[test]
fn a_drained_node_hands_its_tasks_to_the_others() {
    let mut s = Sim::new(4, 7, 0.0);
    s.set_job(spec("web", Some(6), 0.25, json!({})));
    s.settle_exactly_once("web", 6, SETTLE);
    let busiest = (0..4).max_by_key(|i| s.per_node("web")[*i]).unwrap();
    let (now, wall) = (s.now, s.wall);
    s.nodes[busiest]
        .core
        .as_mut()
        .unwrap()
        .set_draining(now, wall, true)
        .unwrap();
    s.drain(busiest);
    assert!(
        s.run_until(SETTLE, |s| s.exactly_once("web", 6)
            && s.per_node("web")[busiest] == 0),
        "{:?}",
        s.processes("web")
    );
    let id = NodeId(busiest as u64 + 1);
    assert!(
        s.run_until(SETTLE, |s| (0..4).all(|j| s.nodes[j]
            .core
            .as_ref()
            .unwrap()
            .membership()
            .up_meta(id)
            .is_some_and(|m| m.draining))),
        "the drain is not in every member's view"
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

        /// Arbitrary loss, failures and partitions: never overcommitted
        /// (checked after every event), and one process per wanted index
        /// once things settle.
        #[test]
        fn never_overcommit_and_one_winner_after_convergence(
            seed in any::<u64>(),
            loss in 0.0f64..0.1,
            count in 1u32..20,
            cpus in prop_oneof![Just(0.25), Just(0.5), Just(1.0)],
            partition in any::<bool>(),
            kill in any::<bool>(),
        ) {
            let mut s = Sim::new(5, seed, 0.0);
            s.loss = loss;
            s.set_job(spec("job", Some(count), cpus, json!({})));
            s.run_for(Duration::from_secs(3));
            if partition {
                s.side = Some(vec![0, 0, 1, 1, 1]);
                s.run_for(Duration::from_secs(5));
                s.side = None;
            }
            if kill {
                s.kill(4);
            }
            s.loss = 0.0;
            let alive = if kill { 4 } else { 5 };
            let capacity = (2000 / (cpus * 1000.0) as u32) * alive;
            let want = count.min(capacity);
            let ok = s.run_until(Duration::from_secs(90), |s| {
                let p = s.processes("job");
                p.len() == want as usize && p.values().all(|n| n.len() == 1)
            });
            prop_assert!(ok, "seed {seed}: {:?}", s.processes("job"));
            prop_assert!(s.checks > 0);
        }
    }
}

#[test]
fn a_rolling_deployment_replaces_two_at_a_time_start_first_and_never_drops_below_count() {
    let mut sim = Sim::new(5, 31, 0.0);
    let update = json!({"update": {"max_parallel": 2, "min_healthy_time": "1s"}});
    sim.set_job(spec("web", Some(6), 0.25, update.clone()));
    sim.settle_exactly_once("web", 6, SETTLE);
    let mut changed = update.clone();
    changed["labels"] = json!({"release": "2"});
    let mut next = spec("web", Some(6), 0.25, changed);
    next.task.env.insert("RELEASE".into(), "2".into());
    sim.update_job(next);
    let version = sim.jobs["web"].version;
    let mut min_healthy = usize::MAX;
    let mut max_new_in_flight = 0;
    let mut max_drivers = 0;
    let done = sim.run_until(Duration::from_secs(60), |s| {
        s.jobs["web"]
            .deployment
            .as_deref()
            .is_some_and(|d| d.status == shoal_model::DeploymentStatus::Successful)
            && s.exactly_once("web", 6)
    });
    assert!(
        done,
        "the first deployment (to version {version}) did not succeed"
    );
    // Again, sampled every 100 ms.
    let mut third = spec("web", Some(6), 0.25, update);
    third.task.env.insert("RELEASE".into(), "3".into());
    sim.update_job(third);
    let v3 = sim.jobs["web"].version;
    let deadline = sim.now + Duration::from_secs(60);
    while sim.now < deadline {
        sim.run_for(Duration::from_millis(100));
        let (healthy, _) = sim.healthy("web", v3);
        min_healthy = min_healthy.min(healthy);
        if let Some(d) = sim.jobs["web"].deployment.as_deref() {
            max_new_in_flight = max_new_in_flight.max(d.active.len());
        }
        max_drivers = max_drivers.max(sim.drivers("web"));
        let ended = sim.jobs["web"]
            .deployment
            .as_deref()
            .is_some_and(|d| !d.status.in_progress());
        if ended && sim.exactly_once("web", 6) {
            break;
        }
    }
    let d = sim.jobs["web"].deployment.clone().expect("a deployment");
    assert_eq!(d.version, v3);
    assert_eq!(d.status, shoal_model::DeploymentStatus::Successful, "{d:?}");
    assert_eq!(d.done.len(), 6, "{d:?}");
    assert!(
        min_healthy >= 6,
        "start-first: never fewer than 6 healthy, saw {min_healthy}"
    );
    assert!(
        max_new_in_flight <= 2,
        "at most max_parallel in flight, saw {max_new_in_flight}"
    );
    assert_eq!(max_drivers, 1, "exactly one driver");
    sim.settle_exactly_once("web", 6, SETTLE);
    let (healthy, new) = sim.healthy("web", v3);
    assert_eq!((healthy, new), (6, 6), "every task runs the new version");
}

/// Updates `web` (6 tasks, `update`) to a new release and runs until its
/// deployment ends, sampling every 100 ms; calls `during` at each sample.
/// The fewest healthy indexes seen, and the deployment as it ended.
fn deploy_and_watch(
    sim: &mut Sim,
    update: serde_json::Value,
    release: &str,
    mut during: impl FnMut(&mut Sim),
) -> (usize, Deployment) {
    let mut next = spec("web", Some(6), 0.25, update);
    next.task.env.insert("RELEASE".into(), release.into());
    sim.update_job(next);
    let mut min_healthy = usize::MAX;
    let deadline = sim.now + Duration::from_secs(120);
    while sim.now < deadline {
        sim.run_for(Duration::from_millis(100));
        during(sim);
        min_healthy = min_healthy.min(sim.healthy("web", 0).0);
        let ended = sim.jobs["web"]
            .deployment
            .as_deref()
            .is_some_and(|d| !d.status.in_progress());
        if ended {
            break;
        }
    }
    let d = sim.jobs["web"].deployment.clone().expect("a deployment");
    (min_healthy, (*d).clone())
}

#[test]
fn killing_the_driver_mid_deployment_the_next_owner_of_the_job_key_finishes_it() {
    let mut sim = Sim::new(5, 32, 0.0);
    let update = json!({"update": {"max_parallel": 1, "min_healthy_time": "1s"}});
    sim.set_job(spec("web", Some(6), 0.25, update.clone()));
    sim.settle_exactly_once("web", 6, SETTLE);
    let mut killed = None;
    let (_, d) = deploy_and_watch(&mut sim, update, "2", |s| {
        let done = s.jobs["web"]
            .deployment
            .as_deref()
            .map_or(0, |d| d.done.len());
        if killed.is_none() && done >= 2 {
            let driver = (0..s.nodes.len())
                .find(|i| {
                    s.nodes[*i]
                        .core
                        .as_ref()
                        .is_some_and(|c| c.placer().drives("web"))
                })
                .expect("a driver while the deployment runs");
            s.kill(driver);
            killed = Some((driver, done));
        }
    });
    let (driver, done_then) = killed.expect("the driver was killed mid-deployment");
    assert!(done_then < 6, "killed before the end ({done_then} done)");
    assert_eq!(
        d.status,
        shoal_model::DeploymentStatus::Successful,
        "after node-{driver} (the driver) died: {d:?}"
    );
    sim.settle_exactly_once("web", 6, SETTLE);
    let v = sim.jobs["web"].version;
    assert_eq!(sim.healthy("web", v), (6, 6));
    assert_eq!(sim.drivers("web"), 0, "nobody drives an ended deployment");
}

#[test]
fn with_no_other_node_a_task_is_replaced_stop_first_one_at_a_time() {
    let mut sim = Sim::new(1, 33, 0.0);
    let update = json!({"update": {"max_parallel": 2, "min_healthy_time": "1s"}});
    sim.set_job(spec("web", Some(6), 0.25, update.clone()));
    sim.settle_exactly_once("web", 6, SETTLE);
    let (min_healthy, d) = deploy_and_watch(&mut sim, update, "2", |_| {});
    assert_eq!(d.status, shoal_model::DeploymentStatus::Successful, "{d:?}");
    assert!(
        min_healthy >= 4,
        "never below count - max_parallel: {min_healthy}"
    );
    sim.settle_exactly_once("web", 6, SETTLE);
    let v = sim.jobs["web"].version;
    assert_eq!(sim.healthy("web", v), (6, 6));
}

#[test]
fn canaries_run_beside_the_old_tasks_until_promoted() {
    let mut sim = Sim::new(4, 34, 0.0);
    let update = json!({"update": {"max_parallel": 2, "min_healthy_time": "1s", "canary": 2}});
    sim.set_job(spec("web", Some(6), 0.25, update.clone()));
    sim.settle_exactly_once("web", 6, SETTLE);
    let mut next = spec("web", Some(6), 0.25, update);
    next.task.env.insert("RELEASE".into(), "2".into());
    sim.update_job(next);
    let v = sim.jobs["web"].version;
    sim.run_for(Duration::from_secs(10));
    let d = sim.jobs["web"].deployment.clone().expect("a deployment");
    assert_eq!(d.status, shoal_model::DeploymentStatus::Running, "{d:?}");
    assert!(d.done.is_empty() && d.active == [0, 1].into(), "{d:?}");
    assert!(d.description.contains("promote"), "{d:?}");
    assert_eq!(d.healthy, 2);
    // 6 old tasks and 2 canaries run.
    let procs: usize = sim.processes("web").values().map(Vec::len).sum();
    assert_eq!(procs, 8, "{:?}", sim.processes("web"));
    assert_eq!(
        sim.healthy("web", v).1,
        2,
        "two canaries of the new version"
    );
    // Promote (as `shoal deployment promote` writes it).
    let job = sim.jobs.get_mut("web").expect("web");
    let mut promoted = (**job.deployment.as_ref().expect("deployment")).clone();
    promoted.promoted = true;
    job.deployment = Some(Arc::new(promoted));
    sim.publish_jobs("web");
    assert!(
        sim.run_until(Duration::from_secs(60), |s| {
            s.jobs["web"]
                .deployment
                .as_deref()
                .is_some_and(|d| d.status == shoal_model::DeploymentStatus::Successful)
        }),
        "{:?}",
        sim.jobs["web"].deployment
    );
    sim.settle_exactly_once("web", 6, SETTLE);
    assert_eq!(sim.healthy("web", v), (6, 6));
}

#[test]
fn a_deployment_failed_mid_replacement_keeps_the_old_copies_and_stops_the_new() {
    let mut sim = Sim::new(5, 35, 0.0);
    let update = json!({"update": {"max_parallel": 2, "min_healthy_time": "30s"}});
    sim.set_job(spec("web", Some(6), 0.25, update.clone()));
    sim.settle_exactly_once("web", 6, SETTLE);
    let before = sim.jobs["web"].version;
    let mut next = spec("web", Some(6), 0.25, update);
    next.task.env.insert("RELEASE".into(), "2".into());
    sim.update_job(next);
    // The new copies of two indexes run beside the old ones...
    assert!(
        sim.run_until(Duration::from_secs(20), |s| {
            s.processes("web").values().map(Vec::len).sum::<usize>() == 8
        }),
        "{:?}",
        sim.processes("web")
    );
    // ... when the deployment fails (as `shoal deployment fail` writes it).
    let job = sim.jobs.get_mut("web").expect("web");
    let mut failed = (**job.deployment.as_ref().expect("deployment")).clone();
    failed.status = shoal_model::DeploymentStatus::Failed;
    failed.active.clear();
    job.deployment = Some(Arc::new(failed));
    sim.publish_jobs("web");
    let mut fewest = usize::MAX;
    for _ in 0..100 {
        sim.run_for(Duration::from_millis(100));
        fewest = fewest.min(sim.healthy("web", 0).0);
    }
    assert_eq!(fewest, 6, "an index lost its last healthy copy");
    sim.settle_exactly_once("web", 6, SETTLE);
    let v = sim.jobs["web"].version;
    assert_eq!(
        sim.healthy("web", v),
        (6, 0),
        "every task kept its old version"
    );
    assert!(
        sim.nodes
            .iter()
            .flat_map(|n| n.versions.values())
            .any(|x| *x == before),
        "old versions run"
    );
}

/// A deployment that fails while new copies run beside old ones, and a
/// revert (a newer version, with a deployment of its own) that reaches
/// the coordinators in the same update, before they gave the failed
/// copies up: the new copies are abandoned, and the revert's deployment
/// replaces the old ones and succeeds.
#[test]
fn a_revert_arriving_with_the_failure_gives_up_the_failed_copies_and_succeeds() {
    let mut sim = Sim::new(5, 36, 0.0);
    let update = json!({"update": {"max_parallel": 2, "min_healthy_time": "30s"}});
    let first = spec("web", Some(6), 0.25, update.clone());
    sim.set_job(first.clone());
    sim.settle_exactly_once("web", 6, SETTLE);
    let mut next = spec("web", Some(6), 0.25, update.clone());
    next.task.env.insert("RELEASE".into(), "2".into());
    sim.update_job(next);
    assert!(
        sim.run_until(Duration::from_secs(20), |s| {
            s.processes("web").values().map(Vec::len).sum::<usize>() == 8
        }),
        "{:?}",
        sim.processes("web")
    );
    // Failed, and reverted at once, the revert's first step taken (as
    // the driver that reverts writes both): the coordinators see only
    // the revert's deployment, already replacing indexes 0 and 1.
    let revert = spec(
        "web",
        Some(6),
        0.25,
        json!({"update": {"max_parallel": 2, "min_healthy_time": "1s"}}),
    );
    assert_eq!(revert.task, first.task, "what the first version ran");
    let old = sim.jobs["web"].clone();
    let mut d = Deployment::begin(old.version + 1, old.run_version, 0, sim.wall);
    d.active = [0, 1].into();
    sim.jobs.insert(
        "web".into(),
        Job {
            spec: Arc::new(revert),
            version: old.version + 1,
            deleted: false,
            run_version: old.version + 1,
            finished: Arc::default(),
            waiting: Arc::default(),
            deployment: Some(Arc::new(d)),
        },
    );
    sim.publish_jobs("web");
    let version = sim.jobs["web"].version;
    let done = sim.run_until(Duration::from_secs(90), |s| {
        s.jobs["web"].deployment.as_deref().is_some_and(|d| {
            d.version == version && d.status == shoal_model::DeploymentStatus::Successful
        }) && s.exactly_once("web", 6)
    });
    assert!(
        done,
        "the revert's deployment did not succeed: {:?} {:?}",
        sim.jobs["web"].deployment,
        sim.processes("web")
    );
    assert_eq!(
        sim.healthy("web", version).0,
        6,
        "every task runs the revert"
    );
}
