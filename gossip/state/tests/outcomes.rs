//! Batch tasks that finished for good, recorded in their job's document:
//! a record replicates like any change, survives a restart from disk,
//! makes the job `complete` or `failed`, belongs to one run of the job,
//! and records of different tasks written at once on two replicas all
//! survive the merge.

use serde_json::json;
use shoal_gossip::NodeId;
use shoal_model::JobSpec;
use shoal_state::{
    BatchStatus, JobEvent, PersistOp, StateConfig, Store, SyncRequest, TaskOutcome, Write, WriteOp,
};

const T0: u64 = 1_700_000_000_000;

fn batch(count: u32, arg: &str) -> JobSpec {
    JobSpec::from_json(json!({
        "name": "etl",
        "type": "batch",
        "count": count,
        "task": {"runtime": "process", "command": "/bin/echo", "args": [arg]},
    }))
    .unwrap()
}

fn write(s: &mut Store, op: WriteOp) {
    s.write(Write {
        by: None,
        name: "etl".into(),
        op,
        if_version: None,
        now_ms: T0,
    })
    .unwrap();
}

fn outcome(ok: bool, version: u64) -> TaskOutcome {
    TaskOutcome {
        ok,
        version,
        node: "00000000000000aa".into(),
        at_ms: T0 + 5000,
        exit_code: Some(if ok { 0 } else { 3 }),
        reason: Some(if ok { "exited" } else { "exited with code 3" }.into()),
    }
}

/// Everything `from` has to push, applied on `to`; what `to` announced.
fn push(from: &mut Store, to: &mut Store) -> Vec<JobEvent> {
    while let Some(p) = from.poll_push() {
        let _ = to.handle_request(
            NodeId(1),
            SyncRequest::Changes {
                docs: p.docs,
                forward: false,
            },
        );
    }
    while from.poll_persist().is_some() {}
    while to.poll_persist().is_some() {}
    while from.poll_event().is_some() {}
    let mut events = Vec::new();
    while let Some(e) = to.poll_event() {
        events.push(e);
    }
    while to.poll_push().is_some() {}
    events
}

fn store(i: u64) -> Store {
    Store::new(NodeId(i), 1, StateConfig::default())
}

#[test]
fn records_make_a_batch_job_complete_without_a_new_version() {
    let mut a = store(1);
    let mut b = store(2);
    write(&mut a, WriteOp::Put(Box::new(batch(2, "x"))));
    push(&mut a, &mut b);
    let v = a.view("etl").unwrap();
    assert_eq!(v.status, Some(BatchStatus::Running));
    assert_eq!((v.tasks_complete, v.tasks_failed), (Some(0), Some(0)));

    assert!(a.record("etl", 0, outcome(true, 1)).unwrap());
    assert!(
        !a.record("etl", 0, outcome(true, 1)).unwrap(),
        "twice is once"
    );
    let mut persisted = Vec::new();
    while let Some(op) = a.poll_persist() {
        persisted.push(op);
    }
    assert_eq!(persisted.len(), 1, "made durable like any write");
    let PersistOp::Append { bytes, .. } = &persisted[0] else {
        panic!("an append: {persisted:?}");
    };
    // What docs/placement.md says a record costs.
    eprintln!("one record: {} bytes", bytes.len());
    assert!(bytes.len() < 300, "{} bytes", bytes.len());
    let events = push(&mut a, &mut b);
    assert!(
        matches!(
            &events[..],
            [JobEvent::TaskFinished {
                index: 0,
                status: BatchStatus::Complete,
                ..
            }]
        ),
        "{events:?}"
    );
    // Either side may record; the other's record of the same task is no news.
    assert!(!b.record("etl", 0, outcome(true, 1)).unwrap());
    assert!(b.record("etl", 1, outcome(true, 1)).unwrap());
    push(&mut b, &mut a);
    for s in [&a, &b] {
        let v = s.view("etl").unwrap();
        assert_eq!(v.version, 1, "no new version");
        assert_eq!(v.status, Some(BatchStatus::Complete));
        assert_eq!(v.tasks_complete, Some(2));
        assert_eq!(v.finished.len(), 2);
    }
    // The API shows the status, not the records.
    let shown = serde_json::to_value(a.view("etl").unwrap()).unwrap();
    assert_eq!(shown["status"], "complete");
    assert!(shown.get("finished").is_none());

    // A restart from disk keeps them.
    let mut c = store(3);
    for op in a.snapshot() {
        c.restore(op);
    }
    assert_eq!(c.view("etl").unwrap().status, Some(BatchStatus::Complete));
}

#[test]
fn a_failed_task_fails_the_job_and_a_completion_stands_over_it() {
    let mut a = store(1);
    write(&mut a, WriteOp::Put(Box::new(batch(2, "x"))));
    assert!(a.record("etl", 1, outcome(false, 1)).unwrap());
    let v = a.view("etl").unwrap();
    assert_eq!(v.status, Some(BatchStatus::Failed));
    assert_eq!(v.tasks_failed, Some(1));
    // A copy that ran elsewhere completed (a partition): complete wins.
    assert!(a.record("etl", 1, outcome(true, 1)).unwrap());
    assert!(!a.record("etl", 1, outcome(false, 1)).unwrap());
    assert!(a.view("etl").unwrap().finished[&1].ok);
}

#[test]
fn a_new_spec_starts_a_new_run_and_a_scale_keeps_it() {
    let mut a = store(1);
    write(&mut a, WriteOp::Put(Box::new(batch(2, "x"))));
    a.record("etl", 0, outcome(true, 1)).unwrap();
    a.record("etl", 1, outcome(true, 1)).unwrap();
    // A scale keeps the run: the two complete stay complete, one is new.
    write(&mut a, WriteOp::Scale(3));
    let v = a.view("etl").unwrap();
    assert_eq!((v.version, v.tasks_complete), (2, Some(2)));
    assert_eq!(v.status, Some(BatchStatus::Running));
    a.record("etl", 2, outcome(true, 2)).unwrap();
    assert_eq!(a.view("etl").unwrap().status, Some(BatchStatus::Complete));
    // A new spec: a new run, nothing complete; an old run's record is
    // refused.
    write(&mut a, WriteOp::Put(Box::new(batch(3, "y"))));
    let v = a.view("etl").unwrap();
    assert_eq!((v.version, v.tasks_complete), (3, Some(0)));
    assert!(v.finished.is_empty());
    assert!(!a.record("etl", 0, outcome(true, 2)).unwrap());
    assert!(a.record("etl", 0, outcome(true, 3)).unwrap());
    // Beyond the count, or not a batch job: nothing to record.
    assert!(!a.record("etl", 7, outcome(true, 3)).unwrap());
}

#[test]
fn records_of_different_tasks_written_at_once_on_two_replicas_all_survive() {
    let mut a = store(1);
    let mut b = store(2);
    write(&mut a, WriteOp::Put(Box::new(batch(4, "x"))));
    push(&mut a, &mut b);
    a.record("etl", 0, outcome(true, 1)).unwrap();
    a.record("etl", 1, outcome(true, 1)).unwrap();
    b.record("etl", 2, outcome(true, 1)).unwrap();
    b.record("etl", 3, outcome(false, 1)).unwrap();
    // Collected before either side hears the other.
    let mut from_a = Vec::new();
    while let Some(p) = a.poll_push() {
        from_a.push(p);
    }
    push(&mut b, &mut a);
    for p in from_a {
        let _ = b.handle_request(
            NodeId(1),
            SyncRequest::Changes {
                docs: p.docs,
                forward: false,
            },
        );
    }
    for s in [&a, &b] {
        let v = s.view("etl").unwrap();
        assert_eq!(v.finished.len(), 4, "{:?}", v.finished);
        assert_eq!((v.tasks_complete, v.tasks_failed), (Some(3), Some(1)));
        assert_eq!(v.status, Some(BatchStatus::Failed));
    }
    assert_eq!(a.canonical(), b.canonical());
}
