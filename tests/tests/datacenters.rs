//! A job's `datacenters` with real agents: a job limited to `east` runs
//! only on east's agents; once every east agent is killed, its tasks move
//! to west (`on_dc_loss = "move"`); a job limited to a datacenter no agent
//! is in stays pending saying so; an unknown `on_dc_loss` is a 422 naming
//! the field.
//!
//! Every task carries the test's marker, and [`KillMarked`] kills any left
//! (tasks outlive a `kill -9`ed agent by design).

use std::time::Duration;

use serde_json::json;
use shoal_tests::{Cluster, KillMarked, Spec, marker, wait_until};

const SETTLE: Duration = Duration::from_secs(60);

#[test]
fn a_job_limited_to_east_runs_there_and_moves_to_west_when_east_is_lost() {
    let m = marker("dcs");
    let _cleanup = KillMarked(m.clone());
    let mut c = Cluster::new();
    // As many agents in west as in east: were west fewer, its agents could
    // not tell east's loss from their own isolation, and would keep to
    // their own tasks (docs/placement.md, "Partitions").
    for (i, dc) in ["east", "east", "west", "west"].iter().enumerate() {
        let mut spec = Spec::named(&format!("n{i}"));
        spec.args = ["--cpus", "2", "--memory-mb", "1024", "--dc", dc]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        if i > 0 {
            spec.join = vec![c.agents[0].info.gossip];
            spec.token = Some(c.token());
        }
        c.start(&spec);
    }
    c.wait_all_alive(4, SETTLE);
    c.wait_placement_members(4, SETTLE);
    let task = json!({"command": "/bin/sleep", "args": ["600"], "env": {"SHOAL_TEST_MARKER": m},
                      "resources": {"cpus": 0.1, "memory_mb": 16}});

    // An unknown on_dc_loss: refused naming the field, nothing written.
    let (status, err) = c.agents[0]
        .post(
            "/v1/jobs",
            &json!({"name": "web", "count": 2, "datacenters": ["east"], "on_dc_loss": "sideways", "task": task}),
        )
        .unwrap();
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["field"], "on_dc_loss", "{err}");

    let (status, body) = c.agents[0]
        .post(
            "/v1/jobs",
            &json!({"name": "web", "count": 2, "datacenters": ["east"], "on_dc_loss": "move", "task": task}),
        )
        .unwrap();
    assert!(status < 300, "{body}");
    let (status, body) = c.agents[0]
        .post(
            "/v1/jobs",
            &json!({"name": "north", "count": 1, "datacenters": ["north"], "task": task}),
        )
        .unwrap();
    assert!(status < 300, "{body}");
    let running_on = |c: &Cluster, via: usize, job: &str| -> Vec<String> {
        c.tasks(via, job)
            .iter()
            .filter(|t| t["state"] == "running")
            .filter_map(|t| t["node_name"].as_str().map(str::to_owned))
            .collect()
    };
    wait_until("web's two tasks running", SETTLE, || {
        Ok(running_on(&c, 0, "web").len() == 2)
    });
    for n in running_on(&c, 0, "web") {
        assert!(n == "n0" || n == "n1", "web runs on {n}, in west");
    }
    wait_until("north pending, saying why", SETTLE, || {
        Ok(c.tasks(0, "north").iter().any(|t| {
            t["pending"].as_array().is_some_and(|p| {
                p.iter().any(|l| {
                    l.as_str()
                        .is_some_and(|l| l.contains("datacenters (north)"))
                })
            })
        }))
    });

    // East is lost: web moves to west's agents.
    c.agents[0].kill9();
    c.agents[1].kill9();
    wait_until(
        "web's two tasks running in west",
        Duration::from_secs(120),
        || {
            let on = running_on(&c, 2, "web");
            Ok(on.len() == 2 && on.iter().all(|n| n == "n2" || n == "n3"))
        },
    );
}
