//! A job's `datacenters`: a node outside them takes none of its tasks;
//! when none of them has a live node, `on_dc_loss = "wait"` leaves the
//! tasks pending saying why, and `"move"` lets them run elsewhere.
//!
//! Six placers wired directly (three in `east`, three in `west`; see
//! `common`).

mod common;

use std::time::Duration;

use common::{Cluster, info, job};
use serde_json::json;
use shoal_model::JobSpec;
use shoal_placement::TaskState;

/// The datacenter of the node running each task of web.
fn running_in(c: &Cluster) -> Vec<String> {
    (0..3)
        .flat_map(|i| c.running(i))
        .map(|n| info(n).dc)
        .collect()
}

fn status(c: &Cluster, i: u32) -> shoal_placement::TaskStatus {
    let any = *c.placers.keys().next().expect("a node is up");
    c.status_via(any, i)
}

#[test]
fn a_job_limited_to_east_never_runs_in_west_and_waits_when_east_is_lost() {
    let mut c = Cluster::new(6, job(3, json!({"datacenters": ["east"]})));
    assert_eq!(running_in(&c), ["east", "east", "east"]);
    c.lose("east");
    c.run(Duration::from_secs(30));
    assert!(running_in(&c).is_empty(), "ran in west: {:?}", c.procs);
    let s = status(&c, 0);
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
    let mut c = Cluster::new(
        6,
        job(3, json!({"datacenters": ["east"], "on_dc_loss": "move"})),
    );
    assert_eq!(running_in(&c), ["east", "east", "east"]);
    c.lose("east");
    c.run(Duration::from_secs(30));
    assert_eq!(running_in(&c), ["west", "west", "west"], "{:?}", c.procs);
}

#[test]
fn a_datacenter_no_node_is_in_leaves_the_job_pending_with_that_reason() {
    let mut c = Cluster::new(6, job(3, json!({"datacenters": ["north"]})));
    c.run(Duration::from_secs(5));
    assert!(running_in(&c).is_empty());
    let s = status(&c, 1);
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
