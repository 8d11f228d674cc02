//! Gossip key rotation on real agents (docs/security.md, "Gossip key
//! rotation"): ten agents with a job running rotate from the cluster key
//! to a fresh one through the CLI — install, use, remove — with the steps
//! that would cut members off refused until they are safe; no member is
//! declared failed, the job's tasks keep running where they were, at most
//! a handful of datagrams in flight at a switch are dropped, and the old
//! key is gone at the end.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_tests::packages::{cli_env, shoal};
use shoal_tests::{Cluster, KillMarked, marker, wait_until};

const N: usize = 10;
const SETTLE: Duration = Duration::from_secs(60);

fn keyring(c: &Cluster, via: usize) -> anyhow::Result<Value> {
    c.agents[via].get("/v1/keyring")
}

/// The key `id` of agent `via`'s keyring, if listed.
fn key(c: &Cluster, via: usize, id: &str) -> anyhow::Result<Option<Value>> {
    let k = keyring(c, via)?;
    Ok(k["keys"]
        .as_array()
        .and_then(|ks| ks.iter().find(|x| x["id"] == id).cloned()))
}

/// Task id → node of the job's running tasks.
fn placement(c: &Cluster, job: &str) -> BTreeMap<String, String> {
    c.tasks(0, job)
        .iter()
        .filter(|t| t["state"] == "running")
        .map(|t| {
            (
                t["task"].as_str().unwrap_or_default().to_owned(),
                t["node"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn drops(c: &Cluster, reason: &str) -> f64 {
    let sample = format!("shoal_gossip_dropped_packets_total{{reason=\"{reason}\"}}");
    c.agents
        .iter()
        .map(|a| a.metric(&sample).unwrap_or(0.0))
        .sum()
}

#[test]
fn the_gossip_key_is_rotated_on_ten_agents_with_no_false_failure() {
    let m = marker("keyring");
    let _cleanup = KillMarked(m.clone());
    // The default preset's timing (1 s probes), which is what the claim
    // "no false failure" is about; the tests' preset (300 ms) on a loaded
    // 2-core machine can suspect a member for reasons of its own.
    let mut c = Cluster::of(
        "k",
        N,
        &["--cpus", "1", "--memory-mb", "256", "--gossip", "lan"],
    );
    // k9 is down for the whole rotation (stopped: it leaves), and comes
    // back at the end.
    let late = N - 1;
    c.agents[late].terminate().unwrap();
    // Every other agent sees it left before the rotation starts: one that
    // gets the down before the leave record logs `member failed`, then
    // `member left`, for a member that left, not for the rotation.
    wait_until("the others see k9 gone", SETTLE, || {
        for a in &c.agents[..late] {
            let nodes: Vec<Value> = a.get("/v1/nodes")?;
            if !nodes
                .iter()
                .any(|n| n["name"] == "k9" && n["state"] == "left")
            {
                return Ok(false);
            }
        }
        Ok(true)
    });
    let before_rotation: Vec<usize> = c.agents.iter().map(|a| a.log().len()).collect();
    c.wait_placement_members(N - 1, SETTLE);
    let (status, body) = c.agents[0]
        .post(
            "/v1/jobs",
            &json!({
                "name": "steady",
                "count": 3,
                "task": {
                    "command": "/bin/sh",
                    "args": ["-c", "exec sleep 3600"],
                    "env": {"SHOAL_TEST_MARKER": m},
                    "resources": {"cpus": 0.1, "memory_mb": 32}
                }
            }),
        )
        .unwrap();
    assert_eq!(status, 201, "{body}");
    wait_until("the job's 3 tasks run", SETTLE, || {
        Ok(placement(&c, "steady").len() == 3)
    });
    const UP: usize = N - 1;
    let before = placement(&c, "steady");
    let (unknown0, auth0) = (drops(&c, "unknown_key"), drops(&c, "auth"));

    // One key to start with: the cluster's, held and used by all.
    let env = cli_env(&c, 0);
    let (ok, out, err) = shoal(&env, &["--json", "keyring", "list"]);
    assert!(ok, "{out}{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    let keys = list["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{list}");
    assert_eq!(keys[0]["cluster_key"], true);
    assert_eq!(
        (keys[0]["held_by"].as_u64(), keys[0]["sealing"].as_u64()),
        (Some(UP as u64), Some(UP as u64))
    );
    let old = keys[0]["id"].as_str().unwrap().to_owned();
    let (ok, _, err) = shoal(&env, &["keyring", "remove", &old]);
    assert!(!ok && err.contains("last one"), "{err}");

    // Install a fresh key through node 0; it reaches every node.
    let (ok, out, err) = shoal(&env, &["--json", "keyring", "install"]);
    assert!(ok, "{out}{err}");
    let installed: Value = serde_json::from_str(&out).unwrap();
    let new = installed["id"].as_str().unwrap().to_owned();
    assert_eq!(
        installed["key"].as_str().map(str::len),
        Some(43),
        "{installed}"
    );
    // Each node counts from the gossip records it has: wait until every
    // node's view says so (a `use` through a node that has not heard yet
    // is refused, naming who lacks it).
    wait_until(
        "every member holds the new key, in every view",
        SETTLE,
        || {
            for i in 0..UP {
                if !key(&c, i, &new)?.is_some_and(|k| k["held_by"] == UP as u64) {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    );
    // The old key seals still: it cannot go yet.
    let (ok, _, err) = shoal(&env, &["keyring", "remove", &old]);
    assert!(!ok && err.contains("sealed with"), "{err}");

    // Use it (through another node); every node switches.
    let (ok, out, err) = shoal(&cli_env(&c, 3), &["keyring", "use", &new]);
    assert!(ok, "{out}{err}");
    wait_until("every member seals with the new key", SETTLE, || {
        Ok(key(&c, 0, &new)?.is_some_and(|k| k["sealing"] == UP as u64 && k["primary"] == true))
    });

    // Then the old one goes, everywhere.
    let (ok, out, err) = shoal(&env, &["keyring", "remove", &old]);
    assert!(ok, "{out}{err}");
    wait_until("no member holds the old key", SETTLE, || {
        for i in 0..UP {
            let k = keyring(&c, i)?;
            let ids: Vec<&str> = k["keys"]
                .as_array()
                .map(|ks| ks.iter().filter_map(|x| x["id"].as_str()).collect())
                .unwrap_or_default();
            if ids != [new.as_str()] {
                return Ok(false);
            }
        }
        Ok(key(&c, 0, &new)?.is_some_and(|k| k["held_by"] == UP as u64))
    });
    // The job's tasks are where they were.
    let after = placement(&c, "steady");
    assert_eq!(after, before, "the rotation moved tasks");
    // What the rotation cost: datagrams dropped for their key (before k9,
    // which still seals with the old key, comes back).
    let lost = (drops(&c, "unknown_key") - unknown0) + (drops(&c, "auth") - auth0);
    // A removed key cannot come back.
    let (ok, _, err) = shoal(&env, &["keyring", "use", &old]);
    assert!(!ok && err.contains("no gossip key"), "{err}");

    // k9 comes back, its state still on the old key, which no one opens
    // any more. The documented way back: install the new key on it through
    // its own API (the key printed by `install`), and use it there; it then
    // seals with what the others open, rejoins, and its state catches up.
    c.agents[late].restart().unwrap();
    let key_file = c.root.path().join("new.key");
    std::fs::write(&key_file, installed["key"].as_str().unwrap()).unwrap();
    let env9 = cli_env(&c, late);
    let (ok, out, err) = shoal(
        &env9,
        &[
            "keyring",
            "install",
            "--key-file",
            key_file.to_str().unwrap(),
        ],
    );
    assert!(ok && out.contains(&new), "{out}{err}");
    let (ok, out, err) = shoal(&env9, &["keyring", "use", &new]);
    assert!(ok, "{out}{err}");
    wait_until("k9 back, seen alive by all", SETTLE, || {
        for i in 0..N {
            let nodes: Vec<Value> = c.agents[i].get("/v1/nodes")?;
            if nodes.iter().filter(|n| n["state"] == "alive").count() != N {
                return Ok(false);
            }
        }
        Ok(true)
    });

    // Gossip still works under the new key alone: a change made now
    // (node 5 drains) reaches every member.
    let (ok, out, err) = shoal(&env, &["node", "drain", "k5"]);
    assert!(ok, "{out}{err}");
    wait_until("every member sees k5 draining", SETTLE, || {
        for i in 0..N {
            let nodes: Vec<Value> = c.agents[i].get("/v1/nodes")?;
            if !nodes
                .iter()
                .any(|n| n["name"] == "k5" && n["draining"] == true)
            {
                return Ok(false);
            }
        }
        Ok(true)
    });

    // No false failure: every member alive everywhere, none ever declared
    // failed; at most a few datagrams in flight at a switch dropped.
    for (i, (a, from)) in c.agents.iter().zip(&before_rotation).enumerate() {
        let nodes: Vec<Value> = a.get("/v1/nodes").unwrap();
        let alive = nodes.iter().filter(|n| n["state"] == "alive").count();
        assert_eq!(alive, N, "agent {i} sees {alive} alive");
        let log = a.log();
        let during = log.get(*from..).unwrap_or(&log);
        assert!(
            !during.contains("member failed"),
            "agent {i} declared a member failed during the rotation"
        );
    }
    eprintln!("datagrams dropped for their key during the rotation: {lost}");
    assert!(lost <= 20.0, "{lost} datagrams dropped for their key");
}
