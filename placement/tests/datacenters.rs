//! A job's `datacenters`: a node outside them takes none of its tasks;
//! when none of them has a live node, `on_dc_loss = "wait"` leaves the
//! tasks pending saying why, and `"move"` lets them run elsewhere.
//!
//! Six placers wired directly (three in `east`, three in `west`): every
//! message is delivered at once and the runtime starts a task at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_gossip::{Instant, NodeId};
use shoal_model::JobSpec;
use shoal_placement::{
    Command, ExitReason, Job, NodeInfo, PlacementConfig, Placer, Resources, TaskKey, TaskState,
};

const TICK: Duration = Duration::from_millis(100);

fn capacity() -> Resources {
    Resources {
        cpus_milli: 4000,
        memory_mb: 4096,
        disk_mb: 0,
        gpus: 0,
    }
}

/// Nodes 1-3 are in `east`, 4-6 in `west`.
fn info(id: NodeId) -> NodeInfo {
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

fn job(extra: Value) -> Job {
    let mut spec = json!({
        "name": "web",
        "count": 3,
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

struct Cluster {
    now: Instant,
    wall: u64,
    placers: BTreeMap<NodeId, Placer>,
    /// Where each task's process runs now.
    procs: BTreeMap<TaskKey, NodeId>,
}

impl Cluster {
    fn new(job: Job) -> Cluster {
        let mut c = Cluster {
            now: Instant::ZERO,
            wall: 1_700_000_000_000,
            placers: BTreeMap::new(),
            procs: BTreeMap::new(),
        };
        for id in 1..=6 {
            let mut p = Placer::new(NodeId(id), PlacementConfig::default(), capacity(), c.now);
            p.set_jobs(c.now, c.wall, vec![job.clone()]);
            c.placers.insert(NodeId(id), p);
        }
        c.set_members();
        c.run(Duration::from_secs(10));
        c
    }

    fn set_members(&mut self) {
        let members: Vec<NodeInfo> = self.placers.keys().map(|id| info(*id)).collect();
        for p in self.placers.values_mut() {
            p.set_members(self.now, self.wall, members.clone());
        }
        self.pump();
    }

    /// Every node of `dc` crashes, and the others see them gone.
    fn lose(&mut self, dc: &str) {
        self.placers.retain(|id, _| info(*id).dc != dc);
        let up: Vec<NodeId> = self.placers.keys().copied().collect();
        self.procs.retain(|_, n| up.contains(n));
        self.set_members();
    }

    fn pump(&mut self) {
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
                while p.poll_event().is_some() {}
                quiet &= msgs.is_empty() && started.is_empty() && stopped.is_empty();
                for key in started {
                    self.procs.insert(key.clone(), id);
                    let p = self.placers.get_mut(&id).expect("listed");
                    p.task_running(self.now, self.wall, &key, Default::default());
                }
                for key in stopped {
                    self.procs.remove(&key);
                    let p = self.placers.get_mut(&id).expect("listed");
                    p.task_exited(self.now, self.wall, &key, ExitReason::Stopped);
                }
                for (to, msg) in msgs {
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

    fn run(&mut self, d: Duration) {
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

    /// The datacenter of the node running each task of web.
    fn running_in(&self) -> Vec<String> {
        (0..3)
            .filter_map(|i| self.procs.get(&TaskKey::index("web", i)))
            .map(|n| info(*n).dc)
            .collect()
    }

    fn status(&self, i: u32) -> shoal_placement::TaskStatus {
        let key = TaskKey::index("web", i);
        let any = self.placers.values().next().expect("a node is up");
        let c = any.ring().owner(key.hash()).expect("a member");
        self.placers[&c]
            .status(std::slice::from_ref(&key))
            .remove(0)
    }
}

#[test]
fn a_job_limited_to_east_never_runs_in_west_and_waits_when_east_is_lost() {
    let mut c = Cluster::new(job(json!({"datacenters": ["east"]})));
    assert_eq!(c.running_in(), ["east", "east", "east"]);
    c.lose("east");
    c.run(Duration::from_secs(30));
    assert!(c.running_in().is_empty(), "ran in west: {:?}", c.procs);
    let s = c.status(0);
    assert!(
        matches!(s.state, TaskState::Pending | TaskState::Lost),
        "{s:?}"
    );
    assert!(
        s.pending
            .iter()
            .any(|r| r.contains("no live node is in the job's datacenters (east)")),
        "{s:?}"
    );
}

#[test]
fn losing_east_with_on_dc_loss_move_moves_its_tasks_to_west() {
    let mut c = Cluster::new(job(json!({"datacenters": ["east"], "on_dc_loss": "move"})));
    assert_eq!(c.running_in(), ["east", "east", "east"]);
    c.lose("east");
    c.run(Duration::from_secs(30));
    assert_eq!(c.running_in(), ["west", "west", "west"], "{:?}", c.procs);
}

#[test]
fn a_datacenter_no_node_is_in_leaves_the_job_pending_with_that_reason() {
    let mut c = Cluster::new(job(json!({"datacenters": ["north"]})));
    c.run(Duration::from_secs(5));
    assert!(c.running_in().is_empty());
    let s = c.status(1);
    assert!(s.pending.iter().any(|r| r.contains("(north)")), "{s:?}");
}

#[test]
fn an_unknown_on_dc_loss_is_refused_naming_the_field() {
    let spec = JobSpec::from_json(
        json!({"name": "x", "datacenters": ["east"], "on_dc_loss": "sideways", "task": {"command": "/bin/true"}}),
    );
    let err = spec.expect_err("an unknown on_dc_loss");
    assert!(err.errors.iter().any(|e| e.field == "on_dc_loss"), "{err}");
    let spec = JobSpec::from_json(
        json!({"name": "x", "datacenters": ["east", "east"], "task": {"command": "/bin/true"}}),
    );
    let err = spec.expect_err("a datacenter twice");
    assert!(
        err.errors.iter().any(|e| e.field == "datacenters[1]"),
        "{err}"
    );
}
