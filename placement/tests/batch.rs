//! Batch tasks that finish: once a task's end is recorded in its job (the
//! agent writes [`Event::Finished`] into the job's replicated document and
//! hands the placer the job with the record), no placer places, bids for,
//! starts or restarts it again, whoever coordinates its key and whichever
//! node restarts.
//!
//! [`Event::Finished`]: shoal_placement::Event::Finished

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Cluster, job, key};
use serde_json::json;
use shoal_gossip::NodeId;
use shoal_placement::{Job, Outcome, TaskState};

/// Job `web` of `count` batch tasks that end when a test says, restarted
/// by `restart`.
fn batch(count: u32, restart: serde_json::Value) -> Job {
    job(
        count,
        json!({
            "type": "batch",
            "task": {"runtime": "process", "command": "/bin/true",
                     "resources": {"cpus": 0.5, "memory_mb": 64}},
            "restart": restart,
        }),
    )
}

#[test]
fn a_completed_index_is_never_auctioned_again_also_after_its_coordinator_changes() {
    let mut c = Cluster::new(4, batch(4, json!({"mode": "on_failure"})));
    for i in 0..4 {
        assert_eq!(c.starts.get(&key(i)), Some(&1), "task {i} started once");
    }
    for i in 0..4 {
        c.exit(&key(i), 0);
    }
    // Each holder asked for its task's record.
    for i in 0..4 {
        let key = key(i);
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
        let s = c.status(&key(i));
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
        let key = key(i);
        assert_eq!(c.starts.get(&key), Some(&1), "{key} ran once");
        assert_eq!(c.status(&key).state, TaskState::Exited);
    }
    assert!(c.procs.is_empty(), "nothing runs: {:?}", c.procs);
}

#[test]
fn the_coordinator_records_an_exit_whose_holder_crashed_before_recording_it() {
    let mut c = Cluster::new(3, batch(3, json!({"mode": "on_failure"})));
    let key = key(0);
    let holder = c.holder(&key);
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
        assert!(c.procs.contains_key(&common::key(i)));
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
    let key = key(0);
    c.exit(&key, 3);
    assert!(c.outcomes.is_empty(), "one restart is left");
    c.run(Duration::from_secs(2));
    assert_eq!(c.starts.get(&key), Some(&2), "restarted once");
    let holder = c.holder(&key);
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
    let key = key(0);
    c.exit(&key, 0);
    c.run(Duration::from_secs(10));
    assert_eq!(c.starts.get(&key), Some(&1));
    assert!(c.outcomes.iter().any(|(_, o)| o.key == key && o.ok));
}

#[test]
fn a_running_copy_of_a_task_recorded_complete_elsewhere_stops() {
    let mut c = Cluster::new(3, batch(1, json!({"mode": "on_failure"})));
    let key = key(0);
    let holder = c.holder(&key);
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
        c.exit(&key(i), 0);
    }
    // Index 0's record reached every node; index 1's did not yet.
    c.outcomes.retain(|(_, o)| o.key == key(0));
    c.replicate_records();
    c.run(Duration::from_secs(5));
    // A scale keeps the run: 0 and 1 stay done, 2 runs.
    let mut spec = (*c.job.spec).clone();
    spec.count = Some(3);
    c.job.spec = Arc::new(spec);
    c.job.version = 2;
    c.replicate_records();
    c.run(Duration::from_secs(5));
    assert_eq!(c.starts.get(&key(0)), Some(&1));
    assert_eq!(c.starts.get(&key(1)), Some(&1));
    assert_eq!(c.starts.get(&key(2)), Some(&1));
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
        assert_eq!(c.starts.get(&key(i)), Some(&2), "task {i}");
    }
}
