//! Batch tasks that finish: once a task's end is recorded in its job (the
//! agent writes [`Event::Finished`] into the job's replicated document and
//! hands the placer the job with the record), no placer places, bids for,
//! starts or restarts it again, whoever coordinates its key and whichever
//! node restarts.
//!
//! A few placers wired directly: every message is delivered at once, the
//! runtime starts a task at once, and each test says when a task ends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use shoal_gossip::{Instant, NodeId};
use shoal_model::JobSpec;
use shoal_placement::{
    Command, Event, ExitReason, Finished, Job, NodeInfo, Outcome, PlacementConfig, Placer,
    Resources, TaskKey, TaskState,
};

const TICK: Duration = Duration::from_millis(100);

fn info(id: NodeId) -> NodeInfo {
    NodeInfo {
        id,
        name: format!("n{}", id.0),
        dc: "dc1".into(),
        zone: String::new(),
        region: "global".into(),
        labels: BTreeMap::new(),
        capacity: capacity(),
        free_class: 8,
        runtimes: vec!["process".into()],
        draining: false,
    }
}

fn capacity() -> Resources {
    Resources {
        cpus_milli: 4000,
        memory_mb: 4096,
        disk_mb: 0,
        gpus: 0,
    }
}

fn batch(count: u32, restart: serde_json::Value) -> Job {
    let spec = JobSpec::from_json(json!({
        "name": "b",
        "type": "batch",
        "count": count,
        "task": {"runtime": "process", "command": "/bin/true",
                 "resources": {"cpus": 0.5, "memory_mb": 64}},
        "restart": restart,
    }))
    .expect("valid spec");
    Job {
        spec: Arc::new(spec),
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
    job: Job,
    /// Where each task's process runs now.
    procs: BTreeMap<TaskKey, NodeId>,
    /// How many times each task was started.
    starts: BTreeMap<TaskKey, u32>,
    /// Every outcome asked to be recorded: by whom, what.
    outcomes: Vec<(NodeId, Outcome)>,
}

impl Cluster {
    fn new(n: u64, job: Job) -> Cluster {
        let mut c = Cluster {
            now: Instant::ZERO,
            wall: 1_700_000_000_000,
            placers: BTreeMap::new(),
            job,
            procs: BTreeMap::new(),
            starts: BTreeMap::new(),
            outcomes: Vec::new(),
        };
        for id in 1..=n {
            c.start(NodeId(id));
        }
        c.set_members();
        c.run(Duration::from_secs(10));
        c
    }

    /// Starts (or restarts, with nothing adopted) node `id`, knowing the
    /// job as it is now.
    fn start(&mut self, id: NodeId) {
        let mut p = Placer::new(id, PlacementConfig::default(), capacity(), self.now);
        p.set_jobs(self.now, self.wall, vec![self.job.clone()]);
        self.placers.insert(id, p);
        self.procs.retain(|_, n| *n != id);
    }

    /// Every placer learns the members up now.
    fn set_members(&mut self) {
        let members: Vec<NodeInfo> = self.placers.keys().map(|id| info(*id)).collect();
        for p in self.placers.values_mut() {
            p.set_members(self.now, self.wall, members.clone());
        }
        self.pump();
    }

    /// Node `id` crashes: gone, and every other placer sees it gone.
    fn crash(&mut self, id: NodeId) {
        self.placers.remove(&id);
        self.procs.retain(|_, n| *n != id);
        self.set_members();
    }

    /// The records asked for so far reach every node (as replication
    /// does): each placer gets the job with them.
    fn replicate_records(&mut self) {
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

    /// The task `key` ends on the node that runs it.
    fn exit(&mut self, key: &TaskKey, code: i32) {
        let node = self.procs.remove(key).expect("it runs");
        let p = self.placers.get_mut(&node).expect("its node is up");
        p.task_exited(self.now, self.wall, key, ExitReason::Exited(code));
        self.pump();
    }

    /// Delivers everything the placers say until they are quiet.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut quiet = true;
            let ids: Vec<NodeId> = self.placers.keys().copied().collect();
            for id in ids {
                let mut msgs = Vec::new();
                let mut started = Vec::new();
                let mut stopped = Vec::new();
                let p = self.placers.get_mut(&id).expect("listed");
                while let Some(m) = p.poll_message() {
                    msgs.push(m);
                }
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

    /// Ticks every placer for `d`.
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

    fn key(i: u32) -> TaskKey {
        TaskKey::index("b", i)
    }

    /// The node that coordinates `key` now.
    fn coordinator(&self, key: &TaskKey) -> NodeId {
        let any = self.placers.values().next().expect("a node is up");
        any.ring().owner(key.hash()).expect("a member")
    }

    fn status(&self, key: &TaskKey) -> shoal_placement::TaskStatus {
        let c = self.coordinator(key);
        self.placers[&c].status(std::slice::from_ref(key)).remove(0)
    }
}

#[test]
fn a_completed_index_is_never_auctioned_again_also_after_its_coordinator_changes() {
    let mut c = Cluster::new(4, batch(4, json!({"mode": "on_failure"})));
    for i in 0..4 {
        assert_eq!(
            c.starts.get(&Cluster::key(i)),
            Some(&1),
            "task {i} started once"
        );
    }
    for i in 0..4 {
        c.exit(&Cluster::key(i), 0);
    }
    // Each holder asked for its task's record.
    for i in 0..4 {
        let key = Cluster::key(i);
        assert!(
            c.outcomes
                .iter()
                .any(|(by, o)| o.key == key && o.ok && *by == o.node),
            "the holder of {key} asked for its record: {:?}",
            c.outcomes
        );
    }
    c.replicate_records();
    c.run(Duration::from_secs(5));
    // The holders forgot their ended tasks; every coordinator answers from
    // the records.
    for i in 0..4 {
        let s = c.status(&Cluster::key(i));
        assert_eq!(s.state, TaskState::Exited, "{s:?}");
    }
    // Every coordinator changes, holders included: crash two nodes, bring
    // them back empty, crash the other two.
    let ids: Vec<NodeId> = c.placers.keys().copied().collect();
    for pair in [&ids[..2], &ids[2..]] {
        for id in pair {
            c.crash(*id);
        }
        c.run(Duration::from_secs(20));
        for id in pair {
            c.start(*id);
        }
        c.set_members();
        c.run(Duration::from_secs(20));
    }
    for i in 0..4 {
        let key = Cluster::key(i);
        assert_eq!(c.starts.get(&key), Some(&1), "{key} ran once");
        assert_eq!(c.status(&key).state, TaskState::Exited);
    }
    assert!(c.procs.is_empty(), "nothing runs: {:?}", c.procs);
}

#[test]
fn the_coordinator_records_an_exit_whose_holder_crashed_before_recording_it() {
    let mut c = Cluster::new(3, batch(3, json!({"mode": "on_failure"})));
    let key = Cluster::key(0);
    let holder = c.procs[&key];
    let coordinator = c.coordinator(&key);
    c.exit(&key, 0);
    // The holder's own request is lost with it.
    c.outcomes.retain(|(by, _)| *by != holder);
    if coordinator != holder {
        assert!(
            c.outcomes
                .iter()
                .any(|(by, o)| *by == coordinator && o.key == key && o.ok && o.node == holder),
            "the coordinator asked for the record on the holder's behalf: {:?}",
            c.outcomes
        );
    }
    c.crash(holder);
    c.replicate_records();
    c.run(Duration::from_secs(30));
    if coordinator != holder {
        assert_eq!(c.starts.get(&key), Some(&1), "{key} ran once");
    }
    // The other indexes still run, once each.
    for i in 1..3 {
        assert!(c.procs.contains_key(&Cluster::key(i)));
    }
}

#[test]
fn a_task_out_of_restart_attempts_is_recorded_failed_and_never_placed_again() {
    let mut c = Cluster::new(
        3,
        batch(
            1,
            json!({"mode": "on_failure", "attempts": 1, "delay": "1s", "max_delay": "1s"}),
        ),
    );
    let key = Cluster::key(0);
    c.exit(&key, 3);
    assert!(c.outcomes.is_empty(), "one restart is left");
    c.run(Duration::from_secs(2));
    assert_eq!(c.starts.get(&key), Some(&2), "restarted once");
    let holder = c.procs[&key];
    c.exit(&key, 3);
    assert!(
        c.outcomes
            .iter()
            .any(|(by, o)| *by == holder && !o.ok && o.exit_code == Some(3)),
        "{:?}",
        c.outcomes
    );
    c.replicate_records();
    c.crash(holder);
    c.run(Duration::from_secs(30));
    assert_eq!(c.starts.get(&key), Some(&2), "not placed again");
    assert_eq!(c.status(&key).state, TaskState::Failed);
}

#[test]
fn a_batch_task_that_exits_0_is_not_restarted_even_with_mode_always() {
    let mut c = Cluster::new(2, batch(1, json!({"mode": "always"})));
    let key = Cluster::key(0);
    c.exit(&key, 0);
    c.run(Duration::from_secs(10));
    assert_eq!(c.starts.get(&key), Some(&1));
    assert!(c.outcomes.iter().any(|(_, o)| o.key == key && o.ok));
}

#[test]
fn a_running_copy_of_a_task_recorded_complete_elsewhere_stops() {
    let mut c = Cluster::new(3, batch(1, json!({"mode": "on_failure"})));
    let key = Cluster::key(0);
    let holder = c.procs[&key];
    // Another node finished it (a copy placed while a partition hid the
    // first one): its record arrives here.
    let other = *c.placers.keys().find(|id| **id != holder).expect("3 nodes");
    c.outcomes.push((
        other,
        Outcome {
            key: key.clone(),
            job_version: 1,
            node: other,
            ok: true,
            exit_code: Some(0),
            reason: None,
            at_ms: c.wall,
        },
    ));
    c.replicate_records();
    c.run(Duration::from_secs(10));
    assert!(!c.procs.contains_key(&key), "the copy stopped");
    assert_eq!(c.starts.get(&key), Some(&1));
}

#[test]
fn a_new_spec_runs_a_completed_task_again_and_a_scale_does_not() {
    let mut c = Cluster::new(3, batch(2, json!({"mode": "on_failure"})));
    for i in 0..2 {
        c.exit(&Cluster::key(i), 0);
    }
    // Index 0's record reached every node; index 1's did not yet.
    c.outcomes.retain(|(_, o)| o.key == Cluster::key(0));
    c.replicate_records();
    c.run(Duration::from_secs(5));
    // A scale keeps the run: 0 and 1 stay done, 2 runs.
    let mut spec = (*c.job.spec).clone();
    spec.count = Some(3);
    c.job.spec = Arc::new(spec);
    c.job.version = 2;
    c.replicate_records();
    c.run(Duration::from_secs(5));
    assert_eq!(c.starts.get(&Cluster::key(0)), Some(&1));
    assert_eq!(c.starts.get(&Cluster::key(1)), Some(&1));
    assert_eq!(c.starts.get(&Cluster::key(2)), Some(&1));
    // A new spec is a new run: no record, every task runs again.
    let mut spec = (*c.job.spec).clone();
    spec.task.args = vec!["again".into()];
    c.job.spec = Arc::new(spec);
    c.job.version = 3;
    c.job.run_version = 3;
    c.outcomes.clear();
    c.replicate_records();
    c.run(Duration::from_secs(5));
    for i in 0..3 {
        assert_eq!(c.starts.get(&Cluster::key(i)), Some(&2), "task {i}");
    }
}
