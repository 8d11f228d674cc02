//! Triggers in the replicated state, and the property their at-most-once
//! design rests on: two replicas that both create a run's job (same name,
//! same spec) while neither knows of the other's merge into **one** job
//! with that spec, and every replica agrees on it.

use serde_json::json;
use shoal_gossip::NodeId;
use shoal_model::JobSpec;
use shoal_state::{
    JobEvent, StateConfig, Store, SyncRequest, TriggerOp, Write, WriteError, WriteOp,
};

const T0: u64 = 1_700_000_000_000;

fn store(node: u64) -> Store {
    Store::new(NodeId(node), 1, StateConfig::default())
}

/// Hands every change `from` pushes to `to`.
fn sync(from: &mut Store, from_id: u64, to: &mut Store) {
    while let Some(p) = from.poll_push() {
        let _ = to.handle_request(
            NodeId(from_id),
            SyncRequest::Changes {
                docs: p.docs,
                forward: false,
            },
        );
    }
}

fn run_job() -> JobSpec {
    JobSpec::from_json(json!({
        "name": "cheap-report/run-2026-12-01t030000",
        "type": "batch",
        "count": 2,
        "labels": {"shoal.trigger": "cheap-report", "shoal.run": "cheap-report@2026-12-01T03:00:00"},
        "task": {"runtime": "process", "command": "/bin/true"}
    }))
    .unwrap()
}

fn create(s: &mut Store, at: u64) -> Result<(), WriteError> {
    let spec = run_job();
    s.write(Write {
        by: None,
        name: spec.name.clone(),
        op: WriteOp::Put(Box::new(spec)),
        if_version: Some(0),
        now_ms: at,
    })
    .map(|_| ())
}

#[test]
fn two_owners_creating_one_run_merge_into_one_job() {
    let (mut a, mut b) = (store(1), store(2));
    // Both fire the same slot before hearing of each other.
    create(&mut a, T0).unwrap();
    create(&mut b, T0 + 5).unwrap();
    sync(&mut a, 1, &mut b);
    sync(&mut b, 2, &mut a);
    let (ja, jb) = (
        a.view("cheap-report/run-2026-12-01t030000").unwrap(),
        b.view("cheap-report/run-2026-12-01t030000").unwrap(),
    );
    assert_eq!(ja, jb, "both replicas agree");
    assert_eq!(a.jobs(false).len(), 1, "one job");
    assert_eq!(ja.spec, run_job().to_json(), "with the spec both wrote");
    assert!(!ja.deleted);
    assert_eq!(ja.version, 1, "one history: as if created once");
    // A later creation on either replica is refused: the run exists.
    assert!(matches!(
        create(&mut a, T0 + 10),
        Err(WriteError::VersionMismatch { .. })
    ));
}

#[test]
fn a_trigger_and_its_ledger_replicate_with_events() {
    let (mut a, mut b) = (store(1), store(2));
    a.trigger_write("nightly", TriggerOp::Put(json!({"name": "nightly"})), T0)
        .unwrap();
    a.trigger_write(
        "nightly",
        TriggerOp::Ledger(json!({"last_handled": "x"}), "fired".into()),
        T0 + 1,
    )
    .unwrap();
    let local: Vec<JobEvent> = std::iter::from_fn(|| a.poll_event()).collect();
    assert!(
        local
            .iter()
            .any(|e| matches!(e, JobEvent::Trigger { op, .. } if op == "fired")),
        "{local:?}"
    );
    sync(&mut a, 1, &mut b);
    let t = b.trigger("nightly").unwrap();
    assert_eq!(t.ledger["last_handled"], "x");
    let events: Vec<JobEvent> = std::iter::from_fn(|| b.poll_event()).collect();
    assert!(
        events.iter().any(
            |e| matches!(e, JobEvent::Trigger { name, op } if name == "nightly" && op == "changed")
        ),
        "{events:?}"
    );
    assert!(b.jobs(true).is_empty(), "a trigger is not a job");
}
