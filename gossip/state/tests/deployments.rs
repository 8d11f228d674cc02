//! Rolling deployments recorded in their job's document: a change of what
//! a service with `[update]` runs begins one (a count alone does not), a
//! newer change cancels the one in progress, steps and actions write
//! single fields that replicate, and a failure with `auto_revert` writes
//! the last healthy version back as a new version.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use shoal_gossip::NodeId;
use shoal_model::{DeploymentPatch, DeploymentStatus, JobSpec};
use shoal_state::{DeployAction, JobEvent, StateConfig, Store, SyncRequest, Write, WriteOp};

const T0: u64 = 1_700_000_000_000;

fn web(release: &str, count: u32, update: Value) -> JobSpec {
    JobSpec::from_json(json!({
        "name": "web",
        "count": count,
        "task": {"runtime": "process", "command": "/bin/sleep", "args": ["60"], "env": {"RELEASE": release}},
        "update": update,
    }))
    .unwrap()
}

fn put(s: &mut Store, spec: JobSpec) -> u64 {
    s.write(Write {
        by: None,
        name: "web".into(),
        op: WriteOp::Put(Box::new(spec)),
        if_version: None,
        now_ms: T0,
    })
    .unwrap()
    .job
    .version
}

fn store(node: u64) -> Store {
    Store::new(NodeId(node), 1, StateConfig::default())
}

#[test]
fn a_change_of_what_runs_begins_a_deployment_and_a_count_alone_does_not() {
    let mut s = store(1);
    let update = json!({"max_parallel": 2});
    put(&mut s, web("1", 6, update.clone()));
    assert_eq!(
        s.view("web").unwrap().deployment,
        None,
        "a new job starts directly"
    );
    put(&mut s, web("1", 8, update.clone()));
    assert_eq!(
        s.view("web").unwrap().deployment,
        None,
        "count alone scales"
    );
    let v3 = put(&mut s, web("2", 8, update.clone()));
    let d = s.view("web").unwrap().deployment.unwrap();
    assert_eq!(
        (d.version, d.from_version, d.status),
        (v3, 2, DeploymentStatus::Running)
    );
    // A newer change cancels it and begins its own.
    let v4 = put(&mut s, web("3", 8, update));
    let all = s.deployments("web").unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].status, DeploymentStatus::Cancelled);
    assert!(
        all[0].description.contains(&format!("version {v4}")),
        "{:?}",
        all[0]
    );
    assert_eq!((all[1].version, all[1].from_version), (v4, v3));
    // Without [update], no deployment: the one in progress is cancelled.
    let plain = JobSpec::from_json(json!({
        "name": "web", "count": 8,
        "task": {"runtime": "process", "command": "/bin/sleep", "args": ["1"]},
    }))
    .unwrap();
    put(&mut s, plain);
    let all = s.deployments("web").unwrap();
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|d| d.status == DeploymentStatus::Cancelled));
}

#[test]
fn steps_and_actions_replicate_and_an_ended_deployment_takes_no_step() {
    let (mut a, mut b) = (store(1), store(2));
    put(&mut a, web("1", 4, json!({"canary": 1})));
    let v = put(&mut a, web("2", 4, json!({"canary": 1})));
    let step = DeploymentPatch {
        active: Some(BTreeSet::from([0])),
        healthy: Some(1),
        description: Some("canary healthy".into()),
        ..DeploymentPatch::default()
    };
    assert!(
        a.deployment_step("web", v, step.clone(), false, T0 + 1)
            .unwrap()
    );
    assert!(
        !a.deployment_step("web", v, step, false, T0 + 2).unwrap(),
        "nothing new"
    );
    let err = a
        .deployment_action("web", DeployAction::Resume, T0)
        .unwrap_err();
    assert!(err.to_string().contains("it is running"), "{err}");
    let d = a
        .deployment_action("web", DeployAction::Promote, T0 + 3)
        .unwrap();
    assert!(d.promoted);
    let err = a
        .deployment_action("web", DeployAction::Promote, T0)
        .unwrap_err();
    assert!(err.to_string().contains("no canaries waiting"), "{err}");
    while let Some(p) = a.poll_push() {
        let _ = b.handle_request(
            NodeId(1),
            SyncRequest::Changes {
                docs: p.docs,
                forward: false,
            },
        );
    }
    let seen: Vec<JobEvent> = std::iter::from_fn(|| b.poll_event()).collect();
    assert!(
        seen.iter()
            .any(|e| matches!(e, JobEvent::Deployment { .. })),
        "{seen:?}"
    );
    let d = b.view("web").unwrap().deployment.unwrap();
    assert!(
        d.promoted && d.active == BTreeSet::from([0]) && d.healthy == 1,
        "{d:?}"
    );
    b.deployment_action("web", DeployAction::Fail, T0 + 4)
        .unwrap();
    let late = DeploymentPatch {
        status: Some(DeploymentStatus::Successful),
        ..DeploymentPatch::default()
    };
    assert!(!b.deployment_step("web", v, late, false, T0 + 5).unwrap());
    assert_eq!(
        b.view("web").unwrap().deployment.unwrap().status,
        DeploymentStatus::Failed
    );
}

#[test]
fn auto_revert_writes_the_last_healthy_version_back_keeping_the_count() {
    let mut s = store(1);
    let update = json!({"auto_revert": true});
    put(&mut s, web("1", 3, update.clone()));
    let v2 = put(&mut s, web("2", 3, update.clone()));
    let ok = DeploymentPatch {
        status: Some(DeploymentStatus::Successful),
        ..DeploymentPatch::default()
    };
    s.deployment_step("web", v2, ok, false, T0).unwrap();
    let v3 = put(&mut s, web("3", 3, update.clone()));
    // Scaled while it deploys.
    s.write(Write {
        by: None,
        name: "web".into(),
        op: WriteOp::Scale(5),
        if_version: None,
        now_ms: T0,
    })
    .unwrap();
    let failed = DeploymentPatch {
        status: Some(DeploymentStatus::Failed),
        description: Some("task web/0 was not healthy".into()),
        ..DeploymentPatch::default()
    };
    assert_eq!(s.stable_version("web", v3), Some(v2));
    s.deployment_step("web", v3, failed, true, T0).unwrap();
    let all = s.deployments("web").unwrap();
    let d3 = all.iter().find(|d| d.version == v3).unwrap();
    assert_eq!(d3.status, DeploymentStatus::Reverted);
    assert!(
        d3.description
            .contains(&format!("reverted to version {v2}")),
        "{d3:?}"
    );
    let view = s.view("web").unwrap();
    assert_eq!(view.spec["task"]["env"]["RELEASE"], "2");
    assert_eq!(view.count, Some(5), "the count is kept");
    let revert = all.last().unwrap();
    assert_eq!(revert.version, view.version);
    assert_eq!(
        revert.status,
        DeploymentStatus::Running,
        "the revert deploys too"
    );
    // By hand: `job revert web 1`.
    s.revert("web", 1, false, T0).unwrap();
    let view = s.view("web").unwrap();
    assert_eq!(view.spec["task"]["env"]["RELEASE"], "1");
    assert_eq!(view.count, Some(3));
    let err = s.revert("web", 99, false, T0).unwrap_err();
    assert!(err.to_string().contains("no version 99"), "{err}");
}
