//! Agents on real separate hosts: five containers of `shoal-test/agent` (the
//! shoal binary built for the tests, see `scripts/build-test-images.sh`),
//! each with its own address on a user-defined Docker network. Jobs run
//! across them; one is cut off (`docker network disconnect`) and one is
//! killed (`docker kill`); jobs are submitted on both sides of the cut; then
//! the network heals. Skipped, with the reason, where no Docker engine
//! answers.

#![allow(clippy::print_stderr)]

use serde_json::Value;
use shoal_tests::hosts::{Hosts, SETTLE, sleeper};
use shoal_tests::{docker, docker_images, exactly_once, wait_until};

const HOSTS: usize = 5;

#[test]
fn five_hosts_cut_killed_and_healed_keep_every_job_and_one_process_per_task() {
    if let Err(why) = docker_images(true) {
        eprintln!("skipped: {why}");
        return;
    }
    let Some(mut h) = Hosts::new("mh") else {
        eprintln!("skipped: no free 10.213.x.0/24 subnet for a test network");
        return;
    };
    for i in 0..HOSTS {
        h.start(i, &[]);
    }
    wait_until("every host sees all five alive", SETTLE, || {
        Ok((0..HOSTS).all(|i| h.alive_seen_by(i) == HOSTS))
    });

    let pid = std::process::id();
    let (ma, mb, mc) = (
        format!("mha{pid}"),
        format!("mhb{pid}"),
        format!("mhc{pid}"),
    );
    assert_eq!(
        h.post(0, "/v1/jobs", &sleeper("spread", 10, &ma)).unwrap(),
        201
    );
    wait_until(
        "10 tasks, one process each, across the hosts",
        SETTLE,
        || Ok(exactly_once(&ma, 10)),
    );

    // Cut h4 off, kill h1. (The side left, h0, h2 and h3, reaches 3 of
    // the 5 members it knew: at least half, so it is not cut off and
    // moves the dead host's tasks; h4 alone is cut off and places
    // nothing. docs/placement.md, "Partitions".)
    let (ok, _, err) = docker(&["network", "disconnect", &h.net, &h.names[4]]);
    assert!(ok, "{err}");
    let (ok, _, err) = docker(&["kill", &h.names[1]]);
    assert!(ok, "{err}");
    // The faults fired: the majority sees only itself.
    wait_until("h0, h2 and h3 see the two others down", SETTLE, || {
        Ok([0, 2, 3].iter().all(|i| h.alive_seen_by(*i) == 3))
    });
    // Writes on both sides of the cut.
    assert_eq!(
        h.post(0, "/v1/jobs", &sleeper("left-side", 3, &mb))
            .unwrap(),
        201
    );
    let marker_env = format!("SHOAL_TEST_MARKER={mc}");
    let (ok, out, err) = docker(&[
        "exec",
        &h.names[4],
        "shoal",
        "--addr",
        "http://127.0.0.1:5480",
        "--token",
        &h.token,
        "run",
        "--name",
        "right-side",
        "--cmd",
        "sh -c 'exec sleep 3600'",
        "--count",
        "2",
        "--cpus",
        "0.25",
        "--memory-mb",
        "32",
        "--env",
        &marker_env,
    ]);
    assert!(ok, "submit on the cut-off host: {out}{err}");
    // The majority side moves the dead host's tasks.
    wait_until("the majority runs all 10 tasks, none on h1", SETTLE, || {
        let t = match h.get(0, "/v1/jobs/spread/tasks") {
            Ok((200, Value::Array(t))) => t,
            _ => return Ok(false),
        };
        Ok(t.len() == 10
            && t.iter()
                .all(|t| t["state"] == "running" && t["node_name"] != "h1"))
    });

    // Heal.
    let (ok, _, err) = docker(&["network", "connect", "--ip", &h.ip(4), &h.net, &h.names[4]]);
    assert!(ok, "{err}");
    let live = [0, 2, 3, 4];
    wait_until("the four live hosts see each other", SETTLE, || {
        Ok(live.iter().all(|i| h.alive_seen_by(*i) == 4))
    });
    wait_until("every job on every live host", SETTLE, || {
        Ok(live.iter().all(|i| {
            ["spread", "left-side", "right-side"].iter().all(|j| {
                h.get(*i, &format!("/v1/jobs/{j}"))
                    .is_ok_and(|(s, _)| s == 200)
            })
        }))
    });
    wait_until("exactly one process per task of every job", SETTLE, || {
        Ok(exactly_once(&ma, 10) && exactly_once(&mb, 3) && exactly_once(&mc, 2))
    });
}
