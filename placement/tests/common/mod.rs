//! Placers wired directly, for the tests of this directory: every message
//! between nodes that see each other is delivered at once, and the
//! "runtime" starts and stops a task at once (each test says when a task
//! ends, [`Cluster::exit`]). Nodes 1-3 are in `east`, the others in `west`.
//! A partition ([`Cluster::split`]) gives each side its own member list and
//! drops what crosses it; the tasks of a side keep running. The records of
//! ended tasks reach every node when a test says so
//! ([`Cluster::replicate_records`]), as the job's replicated document
//! carries them in the agent.

#![allow(dead_code)] // each test file uses part of it

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_gossip::{Instant, NodeId};
use shoal_model::JobSpec;
use shoal_placement::{
    Command, CutOff, Event, ExitReason, Finished, Job, NodeInfo, Outcome, PlacementConfig, Placer,
    Resources, TaskKey, TaskStatus,
};

pub const TICK: Duration = Duration::from_millis(100);

pub fn capacity() -> Resources {
    Resources {
        cpus_milli: 4000,
        memory_mb: 4096,
        disk_mb: 0,
        gpus: 0,
    }
}

/// Nodes 1-3 are in `east`, the others in `west`.
pub fn info(id: NodeId) -> NodeInfo {
    NodeInfo {
        id,
        name: format!("n{}", id.0),
        dc: if id.0 <= 3 { "east" } else { "west" }.into(),
        zone: String::new(),
        region: "global".into(),
        labels: BTreeMap::new(),
        capacity: capacity(),
        free_class: 8,
        runtimes: vec!["process".into()],
        draining: false,
    }
}

/// Task `i` of job `web`.
pub fn key(i: u32) -> TaskKey {
    TaskKey::index("web", i)
}

/// Job `web` with `count` tasks of half a CPU, and `extra` fields.
pub fn job(count: u32, extra: Value) -> Job {
    let mut spec = json!({
        "name": "web",
        "count": count,
        "task": {"runtime": "process", "command": "/bin/sleep", "args": ["600"],
                 "resources": {"cpus": 0.5, "memory_mb": 64}},
    });
    for (k, v) in extra.as_object().expect("an object") {
        spec[k] = v.clone();
    }
    Job {
        spec: Arc::new(JobSpec::from_json(spec).expect("valid spec")),
        version: 1,
        deleted: false,
        run_version: 1,
        finished: Arc::default(),
        deployment: None,
        waiting: Default::default(),
    }
}

pub struct Cluster {
    pub now: Instant,
    pub wall: u64,
    pub placers: BTreeMap<NodeId, Placer>,
    /// The nodes running each task's processes now.
    pub procs: BTreeMap<TaskKey, BTreeSet<NodeId>>,
    /// How many times each task was started.
    pub starts: BTreeMap<TaskKey, u32>,
    /// Every outcome a node asked to be recorded: by whom, what.
    pub outcomes: Vec<(NodeId, Outcome)>,
    /// Each node's side while a partition lasts (none: one side).
    sides: Vec<BTreeSet<NodeId>>,
    /// The members every node knew (crashed ones stay known).
    known: usize,
    /// The job as the nodes know it (a test may change it, then
    /// [`Cluster::replicate_records`]).
    pub job: Job,
}

impl Cluster {
    /// `nodes` placers (ids 1..=nodes) with `job`, after 10 s.
    pub fn new(nodes: u64, job: Job) -> Cluster {
        let mut c = Cluster {
            now: Instant::ZERO,
            wall: 1_700_000_000_000,
            placers: BTreeMap::new(),
            procs: BTreeMap::new(),
            starts: BTreeMap::new(),
            outcomes: Vec::new(),
            sides: Vec::new(),
            known: nodes as usize,
            job,
        };
        for id in 1..=nodes {
            c.start(NodeId(id));
        }
        c.set_members();
        c.run(Duration::from_secs(10));
        c
    }

    /// Starts (or restarts, with nothing adopted) node `id`, knowing the
    /// job as it is now; the others see it at the next
    /// [`Cluster::set_members`].
    pub fn start(&mut self, id: NodeId) {
        let mut p = Placer::new(id, PlacementConfig::default(), capacity(), self.now);
        p.set_jobs(self.now, self.wall, vec![self.job.clone()]);
        self.placers.insert(id, p);
        self.forget_procs_of(id);
    }

    fn forget_procs_of(&mut self, id: NodeId) {
        for nodes in self.procs.values_mut() {
            nodes.remove(&id);
        }
        self.procs.retain(|_, nodes| !nodes.is_empty());
    }

    /// Node `id` crashes: gone with its tasks, and every other node sees it
    /// gone.
    pub fn crash(&mut self, id: NodeId) {
        self.placers.remove(&id);
        self.forget_procs_of(id);
        self.set_members();
    }

    /// The records asked for so far reach every node (as replication
    /// does): each placer gets the job with them.
    pub fn replicate_records(&mut self) {
        let mut finished = BTreeMap::new();
        for (_, o) in &self.outcomes {
            let i = o.key.index_number().expect("an index");
            finished.entry(i).or_insert(Finished {
                ok: o.ok,
                node: Some(o.node),
                exit_code: o.exit_code,
                at_ms: o.at_ms,
            });
        }
        self.job.finished = Arc::new(finished);
        for p in self.placers.values_mut() {
            p.update_jobs(self.now, self.wall, vec![self.job.clone()], &[]);
        }
        self.pump();
    }

    /// The one node running task `key`.
    pub fn holder(&self, key: &TaskKey) -> NodeId {
        let nodes = &self.procs[key];
        assert_eq!(nodes.len(), 1, "{key} runs on {nodes:?}");
        *nodes.first().expect("one")
    }

    /// Task `key` ends with `code` on the node that runs it.
    pub fn exit(&mut self, key: &TaskKey, code: i32) {
        let node = self.holder(key);
        self.procs.remove(key);
        let p = self.placers.get_mut(&node).expect("its node is up");
        p.task_exited(self.now, self.wall, key, ExitReason::Exited(code));
        self.pump();
    }

    /// The side `id` is on.
    fn side_of(&self, id: NodeId) -> BTreeSet<NodeId> {
        self.sides
            .iter()
            .find(|s| s.contains(&id))
            .cloned()
            .unwrap_or_else(|| self.placers.keys().copied().collect())
    }

    /// Hands every node the members of its side, and says whether it is
    /// cut off (what the node core does from membership).
    pub fn set_members(&mut self) {
        let known = self.known;
        for id in self.placers.keys().copied().collect::<Vec<_>>() {
            let side = self.side_of(id);
            let members: Vec<NodeInfo> = side.iter().map(|id| info(*id)).collect();
            let p = self.placers.get_mut(&id).expect("listed");
            p.set_cut_off(self.now, CutOff::of(side.len(), known));
            p.set_members(self.now, self.wall, members);
        }
        self.pump();
    }

    /// Node `id` joins, and every node sees it.
    pub fn add(&mut self, id: u64) {
        self.start(NodeId(id));
        self.known += 1;
        self.set_members();
    }

    /// Cuts the nodes of `side` off from the others.
    pub fn split(&mut self, side: &[u64]) {
        let a: BTreeSet<NodeId> = side.iter().map(|n| NodeId(*n)).collect();
        let b = self
            .placers
            .keys()
            .filter(|n| !a.contains(n))
            .copied()
            .collect();
        self.sides = vec![a, b];
        self.set_members();
    }

    /// Ends the partition.
    pub fn heal(&mut self) {
        self.sides.clear();
        self.set_members();
    }

    /// Every node of `dc` crashes, and the others see them gone.
    pub fn lose(&mut self, dc: &str) {
        self.placers.retain(|id, _| info(*id).dc != dc);
        let up: BTreeSet<NodeId> = self.placers.keys().copied().collect();
        for nodes in self.procs.values_mut() {
            nodes.retain(|n| up.contains(n));
        }
        self.procs.retain(|_, nodes| !nodes.is_empty());
        self.set_members();
    }

    pub fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut quiet = true;
            let ids: Vec<NodeId> = self.placers.keys().copied().collect();
            for id in ids {
                let p = self.placers.get_mut(&id).expect("listed");
                let mut msgs = Vec::new();
                while let Some(m) = p.poll_message() {
                    msgs.push(m);
                }
                let mut started = Vec::new();
                let mut stopped = Vec::new();
                while let Some(c) = p.poll_command() {
                    match c {
                        Command::Start { key, .. } | Command::Replace { key, .. } => {
                            started.push(key)
                        }
                        Command::Stop { key, .. } => stopped.push(key),
                    }
                }
                while let Some(e) = p.poll_event() {
                    if let Event::Finished(o) = e {
                        self.outcomes.push((id, o));
                    }
                }
                quiet &= msgs.is_empty() && started.is_empty() && stopped.is_empty();
                for key in started {
                    *self.starts.entry(key.clone()).or_default() += 1;
                    self.procs.entry(key.clone()).or_default().insert(id);
                    let p = self.placers.get_mut(&id).expect("listed");
                    p.task_running(self.now, self.wall, &key, Default::default());
                }
                for key in stopped {
                    if let Some(nodes) = self.procs.get_mut(&key) {
                        nodes.remove(&id);
                        if nodes.is_empty() {
                            self.procs.remove(&key);
                        }
                    }
                    let p = self.placers.get_mut(&id).expect("listed");
                    p.task_exited(self.now, self.wall, &key, ExitReason::Stopped);
                }
                let side = self.side_of(id);
                for (to, msg) in msgs {
                    if !side.contains(&to) {
                        continue;
                    }
                    if let Some(p) = self.placers.get_mut(&to) {
                        p.handle_message(self.now, self.wall, id, msg);
                    }
                }
            }
            if quiet {
                return;
            }
        }
        panic!("the placers never went quiet");
    }

    pub fn run(&mut self, d: Duration) {
        let until = self.now + d;
        while self.now < until {
            self.now = self.now + TICK;
            self.wall += TICK.as_millis() as u64;
            for p in self.placers.values_mut() {
                p.handle_tick(self.now, self.wall);
            }
            self.pump();
        }
    }

    /// The nodes running web's task `i`.
    pub fn running(&self, i: u32) -> BTreeSet<NodeId> {
        self.procs.get(&key(i)).cloned().unwrap_or_default()
    }

    /// Task `i` of web as the coordinator that `via`'s ring names says.
    pub fn status_via(&self, via: NodeId, i: u32) -> TaskStatus {
        let key = key(i);
        let c = self.placers[&via]
            .ring()
            .owner(key.hash())
            .expect("a member");
        self.placers[&c]
            .status(std::slice::from_ref(&key))
            .remove(0)
    }

    /// The node that coordinates `key` now (as any node's ring says; no
    /// partition).
    pub fn coordinator(&self, key: &TaskKey) -> NodeId {
        let any = self.placers.values().next().expect("a node is up");
        any.ring().owner(key.hash()).expect("a member")
    }

    /// Task `key` as its coordinator says.
    pub fn status(&self, key: &TaskKey) -> TaskStatus {
        let c = self.coordinator(key);
        self.placers[&c].status(std::slice::from_ref(key)).remove(0)
    }
}
