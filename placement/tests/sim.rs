//! Placement driven by a deterministic network of placers and a fake
//! runtime that tracks the "processes" each node runs.
//!
//! Checked after every event: no node holds more than its capacity. Checked
//! once the network is quiet: every wanted task runs exactly once, and
//! nothing else runs.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use shoal_gossip::{Instant, NodeId};
use shoal_model::JobSpec;
use shoal_placement::{
    Command, ExitReason, Job, Msg, NodeInfo, PlacementConfig, Placer, Resources, Stamp, TaskKey,
    TaskState,
};

enum Ev {
    Deliver {
        to: usize,
        from: usize,
        msg: Msg,
    },
    Started {
        node: usize,
        key: TaskKey,
        stamp: Stamp,
    },
    Stopped {
        node: usize,
        key: TaskKey,
    },
}

struct Node {
    placer: Placer,
    info: NodeInfo,
    alive: bool,
    procs: BTreeMap<TaskKey, Stamp>,
    /// What the node's runtime was told to run, in order (for checks).
    starts: u32,
}

struct Sim {
    now: Instant,
    wall: u64,
    seq: u64,
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    events: BTreeMap<u64, Ev>,
    nodes: Vec<Node>,
    rng: ChaCha8Rng,
    loss: f64,
    /// Nodes grouped by side while partitioned.
    side: Option<Vec<u8>>,
    jobs: BTreeMap<String, Job>,
    checks: u64,
}

fn info(i: usize, labels: &[(&str, &str)]) -> NodeInfo {
    NodeInfo {
        id: NodeId(i as u64 + 1),
        name: format!("node-{i}"),
        dc: "dc1".into(),
        zone: format!("z{}", i % 2),
        region: "global".into(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        capacity: Resources {
            cpus_milli: 2000,
            memory_mb: 1024,
            disk_mb: 10_000,
            gpus: 0,
        },
        free_class: 8,
        runtimes: vec!["process".into()],
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

impl Sim {
    fn new(n: usize, seed: u64, loss: f64) -> Sim {
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
            jobs: BTreeMap::new(),
            checks: 0,
        };
        for i in 0..n {
            s.add_node(info(i, &[]));
        }
        s.publish_members();
        s
    }

    fn add_node(&mut self, info: NodeInfo) -> usize {
        let placer = Placer::new(info.id, PlacementConfig::default(), info.capacity, self.now);
        self.nodes.push(Node {
            placer,
            info,
            alive: true,
            procs: BTreeMap::new(),
            starts: 0,
        });
        self.nodes.len() - 1
    }

    fn index_of(&self, id: NodeId) -> usize {
        self.nodes
            .iter()
            .position(|n| n.info.id == id)
            .expect("known node")
    }

    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn connected(&self, a: usize, b: usize) -> bool {
        match &self.side {
            Some(side) => side[a] == side[b],
            None => true,
        }
    }

    /// Every alive node sees the alive members of its side.
    fn publish_members(&mut self) {
        let (now, wall) = (self.now, self.wall);
        for i in 0..self.nodes.len() {
            if !self.nodes[i].alive {
                continue;
            }
            let view: Vec<NodeInfo> = (0..self.nodes.len())
                .filter(|j| self.nodes[*j].alive && self.connected(i, *j))
                .map(|j| self.nodes[j].info.clone())
                .collect();
            self.nodes[i].placer.set_members(now, wall, view);
            self.drain(i);
        }
    }

    /// Tells every alive placer that node `i`'s record changed (as the
    /// agent does, one record at a time).
    fn publish_member(&mut self, i: usize) {
        let (now, wall) = (self.now, self.wall);
        let info = self.nodes[i].info.clone();
        for j in 0..self.nodes.len() {
            if self.nodes[j].alive {
                self.nodes[j].placer.update_members(
                    now,
                    wall,
                    vec![std::sync::Arc::new(info.clone())],
                    &[],
                );
                self.drain(j);
            }
        }
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
            },
        );
        self.publish_jobs(&name);
    }

    fn delete_job(&mut self, name: &str) {
        let j = self.jobs.get_mut(name).unwrap();
        j.version += 1;
        j.deleted = true;
        self.publish_jobs(name);
    }

    /// Even nodes get every job (as at an agent's start), odd ones only the
    /// one that changed (as on a job event): both paths must agree.
    fn publish_jobs(&mut self, changed: &str) {
        let jobs: Vec<Job> = self.jobs.values().cloned().collect();
        let one = vec![self.jobs[changed].clone()];
        let (now, wall) = (self.now, self.wall);
        for i in 0..self.nodes.len() {
            if self.nodes[i].alive {
                if i % 2 == 0 {
                    self.nodes[i].placer.set_jobs(now, wall, jobs.clone());
                } else {
                    self.nodes[i]
                        .placer
                        .update_jobs(now, wall, one.clone(), &[]);
                }
                self.drain(i);
            }
        }
    }

    fn drain(&mut self, i: usize) {
        while let Some((to, msg)) = self.nodes[i].placer.poll_message() {
            let to = self.index_of(to);
            if to != i && (!self.connected(i, to) || self.rng.random::<f64>() < self.loss) {
                continue;
            }
            let latency = Duration::from_micros(self.rng.random_range(100..3000));
            self.push(self.now + latency, Ev::Deliver { to, from: i, msg });
        }
        while let Some(c) = self.nodes[i].placer.poll_command() {
            match c {
                Command::Start { key, stamp, .. } => {
                    self.nodes[i].starts += 1;
                    self.push(
                        self.now + Duration::from_millis(5),
                        Ev::Started {
                            node: i,
                            key,
                            stamp,
                        },
                    );
                }
                Command::Replace { key, stamp, .. } => {
                    self.nodes[i].starts += 1;
                    self.nodes[i].procs.remove(&key);
                    self.push(
                        self.now + Duration::from_millis(5),
                        Ev::Started {
                            node: i,
                            key,
                            stamp,
                        },
                    );
                }
                Command::Stop { key, .. } => {
                    self.push(
                        self.now + Duration::from_millis(5),
                        Ev::Stopped { node: i, key },
                    );
                }
            }
        }
        while self.nodes[i].placer.poll_event().is_some() {}
    }

    fn always_no_overcommit(&mut self) {
        self.checks += 1;
        for n in self.nodes.iter().filter(|n| n.alive) {
            let used = n.placer.used_resources();
            assert!(
                used.cpus_milli <= n.info.capacity.cpus_milli
                    && used.memory_mb <= n.info.capacity.memory_mb,
                "{} overcommitted: {used:?} of {:?}",
                n.info.name,
                n.info.capacity
            );
        }
    }

    fn step(&mut self) -> bool {
        let Some(Reverse((at, seq))) = self.heap.peek().copied() else {
            return false;
        };
        // Ticks run at their own times.
        let next_tick = self
            .nodes
            .iter()
            .filter(|n| n.alive)
            .map(|n| n.placer.next_tick())
            .min();
        if let Some(t) = next_tick
            && t < at
        {
            self.run_ticks(t);
            return true;
        }
        self.heap.pop();
        let ev = self.events.remove(&seq).unwrap();
        self.advance(at);
        match ev {
            Ev::Deliver { to, from, msg } => {
                if self.nodes[to].alive && self.nodes[from].alive && self.connected(to, from) {
                    let (now, wall, fid) = (self.now, self.wall, self.nodes[from].info.id);
                    self.nodes[to].placer.handle_message(now, wall, fid, msg);
                    self.drain(to);
                }
            }
            Ev::Started { node, key, stamp } => {
                if self.nodes[node].alive {
                    self.nodes[node].procs.insert(key.clone(), stamp);
                    let (now, wall) = (self.now, self.wall);
                    self.nodes[node].placer.task_running(now, wall, &key);
                    self.drain(node);
                }
            }
            Ev::Stopped { node, key } => {
                if self.nodes[node].alive {
                    self.nodes[node].procs.remove(&key);
                    let (now, wall) = (self.now, self.wall);
                    self.nodes[node]
                        .placer
                        .task_exited(now, wall, &key, ExitReason::Stopped);
                    self.drain(node);
                }
            }
        }
        self.always_no_overcommit();
        true
    }

    fn advance(&mut self, to: Instant) {
        if to > self.now {
            self.wall += (to - self.now).as_millis() as u64;
            self.now = to;
        }
    }

    fn run_ticks(&mut self, t: Instant) {
        self.advance(t);
        for i in 0..self.nodes.len() {
            if self.nodes[i].alive && self.nodes[i].placer.next_tick() <= t {
                let (now, wall) = (self.now, self.wall);
                self.nodes[i].placer.handle_tick(now, wall);
                self.drain(i);
            }
        }
        self.always_no_overcommit();
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        loop {
            let next_event = self.heap.peek().map(|Reverse((at, _))| *at);
            let next_tick = self
                .nodes
                .iter()
                .filter(|n| n.alive)
                .map(|n| n.placer.next_tick())
                .min();
            let next = match (next_event, next_tick) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => break,
            };
            if next > until {
                break;
            }
            if next_event == Some(next) {
                self.step();
            } else {
                self.run_ticks(next);
            }
        }
        self.advance(until);
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
        for (i, n) in self.nodes.iter().enumerate().filter(|(_, n)| n.alive) {
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

    fn per_node(&self, job: &str) -> Vec<usize> {
        self.nodes
            .iter()
            .map(|n| n.procs.keys().filter(|k| k.job == job).count())
            .collect()
    }

    fn kill(&mut self, i: usize) {
        self.nodes[i].alive = false;
        self.nodes[i].procs.clear();
        self.publish_members();
    }

    fn status(&self, key: &TaskKey) -> shoal_placement::TaskStatus {
        let coord = self.nodes[0].placer.ring().owner(key.hash()).unwrap();
        let c = self.index_of(coord);
        self.nodes[c]
            .placer
            .status(std::slice::from_ref(key))
            .remove(0)
    }
}

const SETTLE: Duration = Duration::from_secs(20);

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
    for i in 0..5 {
        assert!(
            st.pending
                .iter()
                .any(|r| r.starts_with(&format!("node-{i}: needs 0.5 cpus, 0 free"))),
            "{:?}",
            st.pending
        );
    }
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

#[test]
fn a_waiting_task_is_retried_when_a_member_reports_more_room() {
    let mut s = Sim::new(5, 1, 0.0);
    s.set_job(spec("web", Some(20), 0.5, json!({})));
    assert!(s.run_until(SETTLE, |s| s.exactly_once("web", 20)));
    // Gossip says every node is full.
    for i in 0..5 {
        s.nodes[i].info.free_class = 0;
        s.publish_member(i);
    }
    s.set_job(spec("late", Some(1), 0.5, json!({})));
    // Long enough for the retry backoff to reach its longest (30 s).
    s.run_for(Duration::from_secs(40));
    let late = TaskKey::index("late", 0);
    assert_eq!(s.status(&late).state, TaskState::Pending);
    // One task of web goes away; its node's free class rises in gossip.
    s.set_job(spec("web", Some(19), 0.5, json!({})));
    assert!(s.run_until(SETTLE, |s| s.processes("web").len() == 19));
    let freed = s.per_node("web").iter().position(|n| *n < 4).unwrap();
    s.nodes[freed].info.free_class = 2;
    s.publish_member(freed);
    // Retried at once, not at the end of its backoff.
    assert!(
        s.run_until(Duration::from_secs(3), |s| s.exactly_once("late", 1)),
        "late still waits: {:?}",
        s.status(&late)
    );
}

#[test]
fn tasks_of_a_failed_node_move_and_no_index_runs_twice() {
    let mut s = Sim::new(5, 2, 0.0);
    s.set_job(spec("web", Some(12), 0.5, json!({})));
    assert!(s.run_until(SETTLE, |s| s.exactly_once("web", 12)));
    let victim = (0..5).max_by_key(|i| s.per_node("web")[*i]).unwrap();
    assert!(s.per_node("web")[victim] > 0);
    s.kill(victim);
    assert!(
        s.run_until(SETTLE, |s| s.exactly_once("web", 12)),
        "{:?}",
        s.processes("web")
    );
}

/// A coordinator that stops hearing a holder's leases, while the member
/// list still has it, places the task again after `lease_silence`: on its
/// ticks alone, since no message reaches it (the tick walks keys only when
/// something may have changed, and a deadline is such a thing).
#[test]
fn a_holder_whose_leases_stop_arriving_is_replaced_on_ticks_alone() {
    let mut s = Sim::new(5, 4, 0.0);
    s.set_job(spec("web", Some(8), 0.25, json!({})));
    assert!(s.run_until(SETTLE, |s| s.exactly_once("web", 8)));
    let (key, holder, coord) = s
        .processes("web")
        .into_iter()
        .find_map(|(key, nodes)| {
            let owner = s.nodes[0].placer.ring().owner(key.hash()).unwrap();
            let coord = s.index_of(owner);
            (nodes[0] != coord).then(|| (key, nodes[0], coord))
        })
        .expect("a task held away from its coordinator");
    // Cut the coordinator off from everyone, without telling anyone's
    // member list.
    let mut side = vec![0u8; 5];
    side[coord] = 1;
    s.side = Some(side);
    let silence = PlacementConfig::default().lease_silence;
    assert!(
        s.run_until(silence + Duration::from_secs(5), |s| s.nodes[coord]
            .procs
            .contains_key(&key)),
        "{key} still only on node {holder}: {:?}",
        s.processes("web")
    );
}

#[test]
fn a_partition_then_heal_leaves_exactly_one_process_per_index() {
    let mut s = Sim::new(6, 3, 0.0);
    s.set_job(spec("web", Some(6), 0.25, json!({})));
    assert!(s.run_until(SETTLE, |s| s.exactly_once("web", 6)));
    // Split 3/3: each side sees the other fail and places what it lost.
    s.side = Some(vec![0, 0, 0, 1, 1, 1]);
    s.publish_members();
    s.run_for(Duration::from_secs(10));
    let total: usize = s.processes("web").values().map(Vec::len).sum();
    assert!(
        total > 6,
        "the partition should have doubled some tasks ({total})"
    );
    // Heal.
    s.side = None;
    s.publish_members();
    assert!(
        s.run_until(SETTLE, |s| s.exactly_once("web", 6)),
        "{:?}",
        s.processes("web")
    );
}

#[test]
fn scaling_down_removes_the_highest_indexes_and_a_stop_removes_everything() {
    let mut s = Sim::new(5, 4, 0.0);
    s.set_job(spec("web", Some(16), 0.5, json!({})));
    assert!(s.run_until(SETTLE, |s| s.exactly_once("web", 16)));
    s.set_job(spec("web", Some(4), 0.5, json!({})));
    assert!(
        s.run_until(SETTLE, |s| s.exactly_once("web", 4)),
        "{:?}",
        s.processes("web")
    );
    s.set_job(spec("web", Some(10), 0.5, json!({})));
    assert!(s.run_until(SETTLE, |s| s.exactly_once("web", 10)));
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
    s.nodes[1].info.labels.insert("gpu".into(), "yes".into());
    s.nodes[3].info.labels.insert("gpu".into(), "yes".into());
    s.publish_members();
    s.set_job(spec(
        "train",
        Some(4),
        0.25,
        json!({"constraints": [{"attribute": "gpu", "op": "=", "value": "yes"}]}),
    ));
    s.set_job(spec("agentd", None, 0.1, json!({"type": "system"})));
    assert!(s.run_until(SETTLE, |s| s.exactly_once("train", 4)));
    let on: BTreeSet<usize> = s.processes("train").values().flatten().copied().collect();
    assert_eq!(on, [1, 3].into());
    assert!(s.run_until(SETTLE, |s| s.per_node("agentd") == vec![1; 4]));
    // A node that joins later runs the system job too.
    let late = s.add_node(info(4, &[]));
    s.publish_members();
    let jobs: Vec<Job> = s.jobs.values().cloned().collect();
    let (now, wall) = (s.now, s.wall);
    s.nodes[late].placer.set_jobs(now, wall, jobs);
    s.drain(late);
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
    assert!(s.run_until(SETTLE, |s| s.exactly_once("web", 4)));
    let zones: Vec<String> = s
        .processes("web")
        .values()
        .flatten()
        .map(|i| s.nodes[*i].info.zone.clone())
        .collect();
    let z0 = zones.iter().filter(|z| *z == "z0").count();
    assert!((1..=3).contains(&z0), "not spread over zones: {zones:?}");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Arbitrary message loss and orders, failures and partitions: never
        /// overcommitted (checked after every event), and one process per
        /// wanted index once things settle.
        #[test]
        fn never_overcommit_and_one_winner_after_convergence(
            seed in any::<u64>(),
            loss in 0.0f64..0.2,
            count in 1u32..20,
            cpus in prop_oneof![Just(0.25), Just(0.5), Just(1.0)],
            partition in any::<bool>(),
            kill in any::<bool>(),
        ) {
            let mut s = Sim::new(5, seed, loss);
            s.set_job(spec("job", Some(count), cpus, json!({})));
            s.run_for(Duration::from_secs(3));
            if partition {
                s.side = Some(vec![0, 0, 1, 1, 1]);
                s.publish_members();
                s.run_for(Duration::from_secs(5));
                s.side = None;
                s.publish_members();
            }
            if kill {
                s.kill(4);
            }
            s.loss = 0.0;
            let alive = if kill { 4 } else { 5 };
            let capacity = (2000 / (cpus * 1000.0) as u32) * alive;
            let want = count.min(capacity);
            let ok = s.run_until(Duration::from_secs(60), |s| {
                let p = s.processes("job");
                p.len() == want as usize && p.values().all(|n| n.len() == 1)
            });
            prop_assert!(ok, "seed {seed}: {:?}", s.processes("job"));
            prop_assert!(s.checks > 0);
        }
    }
}

#[test]
fn every_message_survives_the_wire_encoding() {
    let spec = Arc::new(spec(
        "web/frontend",
        Some(3),
        0.5,
        json!({"spread": "zone", "constraints": [{"attribute": "dc", "op": "exists"}]}),
    ));
    let key = TaskKey::index("web/frontend", 2);
    let stamp = Stamp {
        wall_ms: 5,
        counter: 1,
        node: NodeId(9),
    };
    let report = shoal_placement::Report {
        state: TaskState::Running,
        restarts: 2,
        exit_code: None,
        reason: Some("oom".into()),
        since_ms: 7,
        job_version: 3,
    };
    let msgs = vec![
        Msg::BidRequest {
            key: key.clone(),
            round: 1,
            job_version: 3,
            demand: Resources::default(),
            spec: spec.clone(),
        },
        Msg::Bid {
            key: key.clone(),
            round: 1,
            score: 5,
            job_tasks: 2,
            spread_value: Some("z1".into()),
        },
        Msg::Bid {
            key: key.clone(),
            round: 1,
            score: 5,
            job_tasks: 2,
            spread_value: None,
        },
        Msg::Decline {
            key: key.clone(),
            round: 1,
            reason: "needs 1 cpus, 0 free".into(),
        },
        Msg::Award {
            key: key.clone(),
            round: 1,
            stamp,
            job_version: 3,
            spec,
        },
        Msg::Accept {
            key: key.clone(),
            round: 1,
        },
        Msg::Reject {
            key: key.clone(),
            round: 1,
            reason: "full".into(),
        },
        Msg::Lease {
            key: key.clone(),
            stamp,
            report,
        },
        Msg::Stop {
            key: key.clone(),
            stamp,
            reason: "no".into(),
        },
        Msg::Cancel {
            key: key.clone(),
            round: 1,
        },
        Msg::Release {
            key: TaskKey::system("logs", NodeId(3)),
            stamp,
        },
    ];
    for m in msgs {
        let bytes = postcard::to_allocvec(&m).unwrap();
        let back: Msg = postcard::from_bytes(&bytes).unwrap_or_else(|e| panic!("{m:?}: {e}"));
        assert_eq!(back, m);
    }
}
