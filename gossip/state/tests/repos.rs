//! Package repositories and `after` records in the replicated state:
//! repositories ordered by position whatever order their documents arrive
//! in, concurrent adds on two replicas merging to the same list, removal
//! as a tombstone, bad names and URLs refused; a job's `waiting_for`
//! shrinking as the jobs it waits for are recorded ready, the record
//! replicating with an event.

use serde_json::json;
use shoal_gossip::NodeId;
use shoal_model::JobSpec;
use shoal_state::{JobEvent, StateConfig, Store, SyncRequest, Write, WriteOp};

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

fn names(s: &Store) -> Vec<String> {
    s.repositories().into_iter().map(|r| r.name).collect()
}

#[test]
fn repositories_merge_to_one_order_and_bad_ones_are_refused() {
    let (mut a, mut b) = (store(1), store(2));
    a.repo_add("team", "dir:/srv/packages", false, T0).unwrap();
    sync(&mut a, 1, &mut b);
    // Concurrently: a adds one last, b one first.
    a.repo_add("mirror", "https://example.com/index.json", false, T0 + 1)
        .unwrap();
    b.repo_add("urgent", "http://10.0.0.1/index.json", true, T0 + 1)
        .unwrap();
    sync(&mut a, 1, &mut b);
    sync(&mut b, 2, &mut a);
    assert_eq!(names(&a), ["urgent", "team", "mirror"]);
    assert_eq!(names(&a), names(&b));
    assert_eq!(a.repositories()[1].node, NodeId(1).to_string());
    assert!(a.jobs(true).is_empty(), "repositories are not jobs");

    for (name, url, what) in [
        ("team", "dir:/x", "exists"),
        ("builtin", "dir:/x", "built into"),
        ("x", "dir:relative", "absolute path"),
        ("x", "ftp://host/index.json", "not a repository"),
        ("Bad Name", "dir:/x", "not a job name"),
    ] {
        let e = a
            .repo_add(name, url, false, T0 + 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains(what), "{name} {url}: {e}");
    }
    a.repo_remove("team", T0 + 3).unwrap();
    sync(&mut a, 1, &mut b);
    assert_eq!(names(&b), ["urgent", "mirror"]);
    assert!(a.repo_remove("team", T0 + 4).is_err(), "removed already");
    let events: Vec<JobEvent> = std::iter::from_fn(|| b.poll_event()).collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, JobEvent::Repository { name, .. } if name == "team")),
        "{events:?}"
    );
}

#[test]
fn a_jobs_waiting_for_shrinks_as_its_after_jobs_are_recorded_ready() {
    let (mut a, mut b) = (store(1), store(2));
    let spec = JobSpec::from_json(json!({
        "name": "app",
        "after": ["db", "cache"],
        "task": {"command": "/bin/true"},
    }))
    .unwrap();
    a.write(Write {
        by: None,
        name: "app".into(),
        op: WriteOp::Put(Box::new(spec)),
        if_version: None,
        now_ms: T0,
    })
    .unwrap();
    sync(&mut a, 1, &mut b);
    assert_eq!(b.view("app").unwrap().waiting_for, ["db", "cache"]);
    assert!(a.mark_ready("app", "db", "n1", T0 + 1).unwrap());
    assert!(!a.mark_ready("app", "db", "n1", T0 + 2).unwrap(), "once");
    assert!(
        !a.mark_ready("app", "other", "n1", T0 + 2).unwrap(),
        "not waited for"
    );
    let _ = std::iter::from_fn(|| b.poll_event()).count();
    sync(&mut a, 1, &mut b);
    assert_eq!(b.view("app").unwrap().waiting_for, ["cache"]);
    let events: Vec<JobEvent> = std::iter::from_fn(|| b.poll_event()).collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, JobEvent::Ready { name, dep } if name == "app" && dep == "db")),
        "{events:?}"
    );
}
