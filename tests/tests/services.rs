//! Named ports and service discovery with real agents on loopback: HTTP
//! servers (process tasks) on the ports their nodes gave them, healthy by
//! the http checks their nodes run, found from
//! a node that runs none of them through the API, the CLI and DNS; a
//! crashed node's endpoint leaving every node's answers; bad ports
//! refused.
//!
//! Every task carries a marker unique to the test (`SHOAL_TEST_MARKER`)
//! so that the test kills what is left of them, including those that
//! outlive their `kill -9`ed agent.

#![allow(clippy::print_stderr)]

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoal_tests::dns::{Srv, query, srv};
use shoal_tests::{Cluster, KillMarked, http_get, marker, run_shoal, wait_until};

const SETTLE: Duration = Duration::from_secs(60);

fn cluster(n: usize) -> Cluster {
    Cluster::of(
        "n",
        n,
        &["--cpus", "2", "--memory-mb", "1024", "--stop-grace", "2s"],
    )
}
const JOB: &str = "web/frontend";
const JOB_PATH: &str = "web%2Ffrontend";
const SRV_NAME: &str = "_http._tcp.frontend.web.service.shoal.";

/// `count` HTTP servers on the port named `http`, each with an http
/// health check run by its node, kept off node `n0`.
fn web(marker: &str, count: u32) -> Value {
    json!({
        "name": JOB,
        "count": count,
        "task": {
            "command": "/bin/sh",
            "args": ["-c", "exec python3 -m http.server --bind 127.0.0.1 $SHOAL_PORT_HTTP"],
            "env": {"SHOAL_TEST_MARKER": marker},
            "ports": [{"name": "http"}],
            "checks": [{"type": "http", "port": "http", "interval": "1s", "grace": "10s"}],
            "resources": {"cpus": 0.1, "memory_mb": 64}
        },
        "constraints": [{"attribute": "name", "op": "!=", "value": "n0"}],
        "restart": {"mode": "always", "delay": "200ms"}
    })
}

/// The healthy endpoints agent `via` answers with: (node id, port).
fn endpoints(c: &Cluster, via: usize) -> anyhow::Result<BTreeSet<(String, u16)>> {
    let (status, body) = c.agents[via].get_any(&format!("/v1/services/{JOB_PATH}"))?;
    anyhow::ensure!(status == 200, "{status} {body}");
    Ok(body["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["node"].as_str()?.to_owned(), e["port"].as_u64()? as u16)))
        .collect())
}

/// The SRV answer of agent `via`, as (node id, port).
fn dns_endpoints(c: &Cluster, via: usize, tcp: bool) -> anyhow::Result<BTreeSet<(String, u16)>> {
    let server: SocketAddr = c.agents[via]
        .info
        .dns
        .ok_or_else(|| anyhow::anyhow!("agent {via} has no DNS address in agent.json"))?;
    Ok(srv(server, SRV_NAME, tcp)?
        .into_iter()
        .map(|Srv { target, port, addr }| {
            assert_eq!(
                addr,
                Some("127.0.0.1".parse().unwrap()),
                "the additional section gives the target's address"
            );
            let node = target.trim_end_matches(".node.shoal.").to_owned();
            (node, port)
        })
        .collect())
}

fn answers_http(port: u16) -> bool {
    http_get(&format!("http://127.0.0.1:{port}/"), None).is_ok_and(|(s, _)| s == 200)
}

#[test]
fn three_http_servers_are_found_from_every_node_and_a_crashed_one_leaves_every_answer() {
    let m = marker("svc");
    let _cleanup = KillMarked(m.clone());
    let mut c = cluster(3);
    let (status, body) = c.agents[1].post("/v1/jobs", &web(&m, 3)).unwrap();
    assert_eq!(status, 201, "{body}");

    // From n0, which runs none of them: three healthy endpoints whose
    // ports answer HTTP.
    wait_until("3 endpoints answering HTTP, seen from n0", SETTLE, || {
        let e = endpoints(&c, 0)?;
        Ok(e.len() == 3 && e.iter().all(|(_, p)| answers_http(*p)))
    });
    let api = endpoints(&c, 0).unwrap();
    let n0 = c.agents[0].info.node_id.clone();
    assert!(api.iter().all(|(n, _)| *n != n0), "{api:?}");
    let ports: BTreeSet<u16> = api.iter().map(|(_, p)| *p).collect();
    assert_eq!(ports.len(), 3, "no two tasks share a port: {api:?}");

    // The CLI says the same.
    let addr = c.agents[0].url();
    let token = c.agents[0].token.clone();
    let env = [
        ("SHOAL_ADDR", addr.as_str()),
        ("SHOAL_TOKEN", token.as_str()),
    ];
    let (ok, out, err) = run_shoal(&["--json", "endpoints", JOB], &env);
    assert!(ok.success(), "{err}");
    let view: Value = serde_json::from_str(&out).unwrap();
    let cli: BTreeSet<(String, u16)> = view["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["health"], "healthy", "{e}");
            assert_eq!(e["host"], "127.0.0.1", "{e}");
            (
                e["node"].as_str().unwrap().to_owned(),
                e["port"].as_u64().unwrap() as u16,
            )
        })
        .collect();
    assert_eq!(cli, api);
    let (ok, table, err) = run_shoal(&["endpoints", JOB, "--port", "http"], &env);
    assert!(ok.success(), "{err}");
    assert!(
        table.contains("PORT (http)") && table.contains("healthy"),
        "{table}"
    );
    let (ok, _, err) = run_shoal(&["endpoints", JOB, "--port", "nope"], &env);
    assert!(!ok.success());
    assert!(
        err.contains("no port named \"nope\"") && err.contains("http"),
        "{err}"
    );

    // `shoal ps --json`: where each port is reached.
    let (ok, out, err) = run_shoal(&["--json", "ps", JOB], &env);
    assert!(ok.success(), "{err}");
    let tasks: Value = serde_json::from_str(&out).unwrap();
    for t in tasks.as_array().unwrap() {
        assert_eq!(t["ports"]["http"]["host"], "127.0.0.1", "{t}");
        assert!(ports.contains(&(t["ports"]["http"]["port"].as_u64().unwrap() as u16)));
    }

    // DNS on every node: the same three, over UDP; over TCP too.
    for i in 0..3 {
        wait_until("every node's SRV answer", SETTLE, || {
            Ok(dns_endpoints(&c, i, false)? == api)
        });
    }
    assert_eq!(dns_endpoints(&c, 2, true).unwrap(), api);
    let dns0 = c.agents[0].info.dns.unwrap();
    let a = query(
        dns0,
        "frontend.web.service.shoal.",
        hickory_proto::rr::RecordType::A,
        false,
    )
    .unwrap();
    assert_eq!(a.answers.len(), 1, "one address: every agent is 127.0.0.1");
    let refused = query(
        dns0,
        "example.com.",
        hickory_proto::rr::RecordType::A,
        false,
    )
    .unwrap();
    assert_eq!(
        refused.metadata.response_code,
        hickory_proto::op::ResponseCode::Refused
    );
    let nx = query(
        dns0,
        "nothing.service.shoal.",
        hickory_proto::rr::RecordType::A,
        false,
    )
    .unwrap();
    assert_eq!(
        nx.metadata.response_code,
        hickory_proto::op::ResponseCode::NXDomain
    );

    // kill -9 the agent of one of them: its endpoint leaves every other
    // node's answers (API and DNS) within failure detection + 2 s, and a
    // replacement appears.
    let (victim_id, victim_port) = api.iter().next().unwrap().clone();
    let victim = c
        .agents
        .iter()
        .position(|a| a.info.node_id == victim_id)
        .unwrap();
    let others: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    c.agents[victim].kill9();
    let killed = Instant::now();
    let mut detected: BTreeMap<usize, Duration> = BTreeMap::new();
    let mut gone: BTreeMap<usize, Duration> = BTreeMap::new();
    wait_until("the dead node's endpoint gone everywhere", SETTLE, || {
        for &i in &others {
            if let Entry::Vacant(seen) = detected.entry(i) {
                let nodes = c.agents[i].nodes()?;
                if nodes
                    .iter()
                    .any(|n| n.id == victim_id && (n.state == "failed" || n.state == "left"))
                {
                    seen.insert(killed.elapsed());
                }
            }
            if let Entry::Vacant(left) = gone.entry(i) {
                let has = |e: &BTreeSet<(String, u16)>| e.iter().any(|(n, _)| *n == victim_id);
                if !has(&endpoints(&c, i)?) && !has(&dns_endpoints(&c, i, false)?) {
                    left.insert(killed.elapsed());
                }
            }
        }
        Ok(others.iter().all(|i| gone.contains_key(i)))
    });
    for &i in &others {
        let detect = detected.get(&i).copied().unwrap_or(Duration::MAX);
        eprintln!(
            "n{i}: failure detected after {detect:?}, endpoint gone after {:?}",
            gone[&i]
        );
        // Answers may drop it a little before /v1/nodes says `failed`
        // (both follow the same gossip); never later than 2 s after.
        assert!(
            gone[&i] <= detect.saturating_add(Duration::from_secs(2)),
            "n{i}: gone after {:?}, detected after {detect:?}",
            gone[&i]
        );
    }
    wait_until(
        "a replacement answering HTTP, seen from every node",
        SETTLE,
        || {
            for &i in &others {
                let e = endpoints(&c, i)?;
                if e.len() != 3 || e.iter().any(|(n, _)| *n == victim_id) {
                    return Ok(false);
                }
                if dns_endpoints(&c, i, false)? != e {
                    return Ok(false);
                }
                if !e.iter().all(|(_, p)| answers_http(*p)) {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    );
    let after = endpoints(&c, others[0]).unwrap();
    assert!(!after.contains(&(victim_id, victim_port)));
    // `--all` lists the lost one too, while its coordinator still knows it
    // (or its replacement only, once re-placed): never fewer.
    let (status, all) = c.agents[others[0]]
        .get_any(&format!("/v1/services/{JOB_PATH}?all=true"))
        .unwrap();
    assert_eq!(status, 200);
    assert!(all["endpoints"].as_array().unwrap().len() >= 3, "{all}");
}

#[test]
fn bad_ports_are_refused_naming_the_field_and_a_static_port_taken_everywhere_waits() {
    let m = marker("badports");
    let _cleanup = KillMarked(m.clone());
    let c = cluster(3);
    let n0 = &c.agents[0];

    // A name used twice: 422 naming the second one, nothing written.
    let mut twice = web(&m, 1);
    twice["name"] = json!("twice");
    twice["task"]["ports"] = json!([{"name": "http"}, {"name": "HTTP"}]);
    let (status, body) = n0.post("/v1/jobs", &twice).unwrap();
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "task.ports[1].name", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("used twice"),
        "{body}"
    );
    assert_eq!(n0.get_any("/v1/jobs/twice").unwrap().0, 404);

    // A container port on a process task.
    let mut inside = web(&m, 1);
    inside["name"] = json!("inside");
    inside["task"]["ports"] = json!([{"name": "http", "container_port": 80}]);
    let (status, body) = n0.post("/v1/jobs", &inside).unwrap();
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "task.ports[0].container_port");
    assert_eq!(n0.get_any("/v1/jobs/inside").unwrap().0, 404);

    // A static port some other program holds on this host, where every
    // agent runs: each node finds it taken when it tries to start the
    // task, gives the task up and declines it from then on; the task
    // waits with every node's reason naming the port.
    let holder = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let mut taken = web(&m, 1);
    taken["name"] = json!("taken");
    taken["constraints"] = json!([]);
    taken["task"]["ports"] = json!([{"name": "http", "static": port}]);
    let (status, body) = n0.post("/v1/jobs", &taken).unwrap();
    assert_eq!(status, 201, "{body}");
    let needle = format!("port {port} (http) in use");
    wait_until(
        "pending with every node's reason naming the port",
        SETTLE,
        || {
            let (_, tasks) = c.agents[2].get_any("/v1/jobs/taken/tasks")?;
            let Some(t) = tasks.as_array().and_then(|t| t.first()) else {
                return Ok(false);
            };
            let reasons: Vec<&str> = t["pending"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            Ok(t["state"] == "pending"
                && reasons.len() == 3
                && reasons.iter().all(|r| r.contains(&needle)))
        },
    );
    drop(holder);
}
