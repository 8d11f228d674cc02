//! `shoal node forget` against real agents (docs/security.md, "Removing a
//! machine for good"): a forgotten node is dropped by every member, and
//! restarted with its identity (its data dir) it cannot get back in: the
//! others drop its datagrams (counted) and keep it out of their lists.

use std::time::Duration;

use serde_json::Value;
use shoal_tests::packages::{cli_env, shoal};
use shoal_tests::{Cluster, wait_until};

/// How agent `i` sees the member `id`: its state, or `None` when it no
/// longer lists it.
fn state_of(c: &Cluster, i: usize, id: &str) -> anyhow::Result<Option<String>> {
    let nodes: Vec<Value> = c.agents[i].get("/v1/nodes")?;
    Ok(nodes
        .iter()
        .find(|n| n["id"] == id)
        .and_then(|n| n["state"].as_str().map(str::to_owned)))
}

const FORGOTTEN_DROPS: &str = "shoal_gossip_dropped_packets_total{reason=\"forgotten\"}";

#[test]
fn a_forgotten_node_is_dropped_and_cannot_rejoin() {
    let mut c = Cluster::of("f", 3, &[]);
    let gone = c.agents[2].info.node_id.clone();
    let env = cli_env(&c, 0);

    // The node serving the call cannot forget itself; a stranger is 404.
    let (ok, _, err) = shoal(&env, &["node", "forget", "f0"]);
    assert!(!ok && err.contains("ask another node"), "{err}");
    let (ok, _, err) = shoal(&env, &["node", "forget", "nobody"]);
    assert!(!ok && err.contains("nobody"), "{err}");

    let (ok, out, err) = shoal(&env, &["--json", "node", "forget", "f2"]);
    assert!(ok, "{out}{err}");
    let f: Value = serde_json::from_str(&out).expect("JSON answer");
    assert_eq!(
        (f["id"].as_str(), f["name"].as_str()),
        (Some(gone.as_str()), Some("f2")),
        "{f}"
    );
    // Again, through the other node: the same record, nothing new.
    let (ok, out, err) = shoal(&cli_env(&c, 1), &["--json", "node", "forget", &gone]);
    assert!(ok, "{out}{err}");
    let again: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(again["at"], f["at"]);

    // Both others drop it, though it still runs.
    let out_of = |c: &Cluster| -> anyhow::Result<bool> {
        for i in 0..2 {
            if state_of(c, i, &gone)?.as_deref() == Some("alive") {
                return Ok(false);
            }
        }
        Ok(true)
    };
    wait_until("f0 and f1 drop f2", Duration::from_secs(30), || out_of(&c));

    // Restarted with its identity, it knocks and is not let in: wait until
    // f0 has dropped a good number of its datagrams (it keeps trying to
    // join), then it is still out everywhere.
    let before = c.agents[0].metric(FORGOTTEN_DROPS).unwrap_or(0.0);
    c.agents[2].terminate().unwrap();
    c.agents[2].restart().unwrap();
    assert_eq!(c.agents[2].info.node_id, gone, "same identity");
    wait_until(
        "f0 drops the restarted f2's datagrams",
        Duration::from_secs(60),
        || Ok(c.agents[0].metric(FORGOTTEN_DROPS)? >= before + 5.0),
    );
    assert!(out_of(&c).unwrap(), "the forgotten node got back in");
    // The two others still see each other.
    for (i, other) in [(0, 1), (1, 0)] {
        let id = c.agents[other].info.node_id.clone();
        assert_eq!(state_of(&c, i, &id).unwrap().as_deref(), Some("alive"));
    }
}
