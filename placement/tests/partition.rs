//! The partition rule: a node that reaches fewer than half of the members
//! it knew keeps its own tasks and places nothing else; the larger side
//! replaces the tasks it lost as each job's `[disconnect] replace_after`
//! says; after the heal, one copy of each task (the later award).
//!
//! Five placers wired directly (see `common`); node 5 is cut off.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::Cluster;
use serde_json::json;
use shoal_gossip::NodeId;
use shoal_placement::TaskState;

const COUNT: u32 = 10;
const CUT: NodeId = NodeId(5);

fn on(c: &Cluster, node: NodeId) -> BTreeSet<u32> {
    (0..COUNT)
        .filter(|i| c.running(*i).contains(&node))
        .collect()
}

fn once_each(c: &Cluster) -> bool {
    (0..COUNT).all(|i| c.running(i).len() == 1)
}

#[test]
fn a_node_cut_off_keeps_its_tasks_and_takes_none_and_the_rest_replace_them() {
    let mut c = Cluster::new(5, common::job(COUNT, json!({})));
    assert!(once_each(&c), "{:?}", c.procs);
    let its = on(&c, CUT);
    assert!(!its.is_empty(), "node 5 runs none of the tasks");
    c.split(&[CUT.0]);
    assert!(c.placers[&CUT].cut_off().is_some());
    assert!(c.placers[&NodeId(1)].cut_off().is_none());
    c.run(Duration::from_secs(60));
    // Node 5 runs what it ran, and nothing more.
    assert_eq!(on(&c, CUT), its, "{:?}", c.procs);
    // Seen from node 5, the others' tasks wait, saying why.
    let theirs = (0..COUNT).find(|i| !its.contains(i)).expect("another task");
    let s = c.status_via(CUT, theirs);
    assert!(
        s.pending.iter().any(|r| r.contains("fewer than half")),
        "{s:?}"
    );
    // The others replaced node 5's tasks at once (the default).
    for i in &its {
        assert_eq!(c.running(*i).len(), 2, "task {i}: {:?}", c.procs);
    }
    // Healed: one copy of each, the later award (the replacement).
    c.heal();
    c.run(Duration::from_secs(30));
    assert!(once_each(&c), "{:?}", c.procs);
    assert!(on(&c, CUT).is_empty(), "{:?}", c.procs);
}

#[test]
fn replace_after_holds_a_lost_task_until_it_has_passed() {
    let spec = json!({"disconnect": {"replace_after": "2m"}});
    let mut c = Cluster::new(5, common::job(COUNT, spec));
    let its = on(&c, CUT);
    assert!(!its.is_empty(), "node 5 runs none of the tasks");
    c.split(&[CUT.0]);
    c.run(Duration::from_secs(90));
    // Not replaced yet: only node 5 runs them, and the rest say why.
    for i in &its {
        assert_eq!(c.running(*i), [CUT].into(), "task {i}: {:?}", c.procs);
        let s = c.status_via(NodeId(1), *i);
        assert!(
            s.pending
                .iter()
                .any(|r| r.contains("replace_after = \"2m\"")),
            "{s:?}"
        );
        assert!(
            matches!(s.state, TaskState::Lost | TaskState::Pending),
            "{s:?}"
        );
    }
    c.run(Duration::from_secs(60));
    for i in &its {
        assert_eq!(c.running(*i).len(), 2, "task {i}: {:?}", c.procs);
    }
    c.heal();
    c.run(Duration::from_secs(30));
    assert!(once_each(&c), "{:?}", c.procs);
}

#[test]
fn back_before_replace_after_its_tasks_were_never_moved() {
    let spec = json!({"disconnect": {"replace_after": "5m"}});
    let mut c = Cluster::new(5, common::job(COUNT, spec));
    let before = c.procs.clone();
    c.split(&[CUT.0]);
    c.run(Duration::from_secs(60));
    c.heal();
    c.run(Duration::from_secs(30));
    assert_eq!(c.procs, before);
}

#[test]
fn two_equal_halves_are_not_cut_off() {
    let mut c = Cluster::new(4, common::job(8, json!({})));
    c.split(&[1, 2]);
    assert!(c.placers.values().all(|p| p.cut_off().is_none()));
    c.run(Duration::from_secs(60));
    // Each side runs every task.
    for i in 0..8 {
        assert_eq!(c.running(i).len(), 2, "task {i}: {:?}", c.procs);
    }
    c.heal();
    c.run(Duration::from_secs(30));
    for i in 0..8 {
        assert_eq!(c.running(i).len(), 1, "task {i}: {:?}", c.procs);
    }
}

#[test]
fn a_bad_replace_after_is_refused_naming_the_field() {
    let err = shoal_model::JobSpec::from_json(json!({"name": "x",
        "disconnect": {"replace_after": "soon"}, "task": {"command": "/bin/true"}}))
    .expect_err("not a duration");
    assert!(
        err.errors
            .iter()
            .any(|e| e.field == "disconnect.replace_after"),
        "{err}"
    );
    let ok = shoal_model::JobSpec::from_json(json!({"name": "x",
        "disconnect": {"replace_after": "90s"}, "task": {"command": "/bin/true"}}))
    .expect("a duration");
    assert_eq!(ok.disconnect.replace_after, "1m 30s");
    assert_eq!(ok.disconnect.replace_after(), Duration::from_secs(90));
}

#[test]
fn replace_after_does_not_hold_tasks_pending_for_room_when_a_node_joins() {
    // 5 nodes of 4 CPUs hold 40 tasks of half a CPU: 4 wait for room.
    // (A join moves keys only to the new node, which learns the job after
    // the ring change, so this checks the outcome, not the coordinator's
    // `inherited_by_loss` flag on its own.)
    let spec = json!({"disconnect": {"replace_after": "10m"}});
    let mut c = Cluster::new(5, common::job(44, spec));
    let running = |c: &Cluster| (0..44).filter(|i| !c.running(*i).is_empty()).count();
    assert_eq!(running(&c), 40);
    c.add(6);
    c.run(Duration::from_secs(10));
    assert_eq!(running(&c), 44, "{:?}", c.procs);
}
