//! A coordinator's view of the members lags membership: a node publishes
//! member changes at most once a period, and gossip brings a new member
//! to some nodes before others. A holder renewing from a member not yet
//! in the coordinator's view is alive; its task is not lost, and is
//! replaced only when its renewals stop.
//!
//! Placers wired directly (see `common`): nodes 1-3 in `east`, node 4 in
//! `west`, a job that runs only in `west`.

mod common;

use std::time::Duration;

use common::{Cluster, capacity, info, job};
use serde_json::json;
use shoal_gossip::NodeId;
use shoal_placement::{PlacementConfig, Placer, TaskKey, TaskState};

const NEW: NodeId = NodeId(4);
const COUNT: u32 = 6;

#[test]
fn a_holder_renewing_before_the_coordinator_sees_it_is_not_lost_until_its_renewals_stop() {
    let mut c = Cluster::new(3, job(COUNT, json!({"datacenters": ["west"]})));
    assert_eq!(
        c.status_via(NodeId(1), 0).state,
        TaskState::Pending,
        "no node in west yet"
    );
    // Node 4 starts knowing only itself, so it coordinates every key and
    // awards each to itself; the others do not know it yet.
    let mut p = Placer::new(NEW, PlacementConfig::default(), capacity(), c.now);
    p.set_jobs(
        c.now,
        c.wall,
        vec![job(COUNT, json!({"datacenters": ["west"]}))],
    );
    p.set_members(c.now, c.wall, vec![info(NEW)]);
    c.placers.insert(NEW, p);
    c.run(Duration::from_secs(2));
    assert!(
        (0..COUNT).all(|i| c.running(i) == [NEW].into()),
        "{:?}",
        c.procs
    );
    // It learns the others: its renewals now go to coordinators whose
    // view has not caught up with it.
    let all = (1..=4).map(|n| info(NodeId(n))).collect();
    let (now, wall) = (c.now, c.wall);
    c.placers
        .get_mut(&NEW)
        .expect("started")
        .set_members(now, wall, all);
    c.run(Duration::from_secs(5));
    // The keys node 4 renews with another node: that node records it
    // as the holder although it is not in its view.
    let elsewhere: Vec<u32> = (0..COUNT)
        .filter(|i| {
            c.placers[&NEW]
                .ring()
                .owner(TaskKey::index("web", *i).hash())
                != Some(NEW)
        })
        .collect();
    assert!(!elsewhere.is_empty());
    for &i in &elsewhere {
        let s = c.status_via(NEW, i);
        assert_eq!(s.state, TaskState::Running, "task {i}: {s:?}");
        assert_eq!(s.node, Some(NEW), "task {i}: {s:?}");
        assert_eq!(c.running(i), [NEW].into());
    }
    // It dies before anyone saw it: once its renewals stop for the lease
    // silence, its coordinators place its tasks again (none fits: pending).
    c.placers.remove(&NEW);
    c.procs.clear();
    c.run(Duration::from_secs(20));
    for i in 0..COUNT {
        let s = c.status_via(NodeId(1), i);
        assert_ne!(s.state, TaskState::Running, "task {i}: {s:?}");
        assert!(!s.pending.is_empty(), "task {i}: {s:?}");
    }
}
