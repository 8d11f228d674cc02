//! Desired state with real agents: submit anywhere, replicate everywhere,
//! survive partitions, restarts and damaged files.

use std::io::{BufRead, BufReader, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoal_tests::{Cluster, Spec, run_shoal, wait_until};

const CONVERGE: Duration = Duration::from_secs(60);

fn job(name: &str, cpus: f64, count: u32) -> Value {
    json!({
        "name": name,
        "count": count,
        "task": {"runtime": "process", "command": "/bin/sleep", "args": ["3600"],
                 "resources": {"cpus": cpus, "memory_mb": 64}},
        "labels": {"team": "core"}
    })
}

fn path(name: &str) -> String {
    format!("/v1/jobs/{}", name.replace('/', "%2F"))
}

/// Waits until every agent of `who` returns the same JSON for `name`, and
/// `check` accepts it; returns it.
fn wait_same_everywhere(
    c: &Cluster,
    who: &[usize],
    name: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    wait_until(&format!("{name} identical on {who:?}"), CONVERGE, || {
        let mut first: Option<Value> = None;
        for i in who {
            let (status, body) = c.agents[*i].get_any(&format!("{}?deleted=true", path(name)))?;
            if status != 200 {
                anyhow::bail!("{} answers {status} for {name}", c.agents[*i].name);
            }
            match &first {
                None => first = Some(body),
                Some(f) if *f == body => {}
                Some(f) => anyhow::bail!("{} differs: {body} vs {f}", c.agents[*i].name),
            }
        }
        let v = first.unwrap_or(Value::Null);
        let ok = check(&v);
        last = v;
        Ok(ok)
    });
    last
}

/// Opens `GET /v1/events` and returns a line reader.
fn events(url: &str, token: &str) -> BufReader<TcpStream> {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    BufReader::new(s)
}

#[test]
fn a_job_submitted_to_one_node_reaches_all_and_concurrent_changes_converge() {
    let c = Cluster::with_agents(10);
    let mut sse = events(&c.agents[3].url(), &c.agents[3].token);

    let (status, body) = c.agents[7]
        .post("/v1/jobs", &job("web/frontend", 0.5, 2))
        .unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["job"]["version"], 1);
    let all: Vec<usize> = (0..10).collect();
    wait_same_everywhere(&c, &all, "web/frontend", |v| v["version"] == 1);

    // The event reached node 3 (which did not accept the write).
    let deadline = Instant::now() + CONVERGE;
    let mut seen = false;
    let mut line = String::new();
    while Instant::now() < deadline && !seen {
        line.clear();
        if sse.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        seen = line.starts_with("event: job.created");
    }
    assert!(seen, "no job.created event on node 3");

    // An update through node 2 and a scale through node 9, at the same time.
    let (a, b) = (&c.agents[2], &c.agents[9]);
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(|| a.post("/v1/jobs", &job("web/frontend", 1.5, 2)).unwrap());
        let hb = s.spawn(|| {
            b.post(
                &format!("{}/scale", path("web/frontend")),
                &json!({"count": 7}),
            )
            .unwrap()
        });
        (ha.join().unwrap(), hb.join().unwrap())
    });
    assert_eq!(ra.0, 200, "{}", ra.1);
    assert_eq!(rb.0, 200, "{}", rb.1);
    let merged = wait_same_everywhere(&c, &all, "web/frontend", |v| v["version"] == 3);
    // Concurrent, the update (which leaves the count at 2) keeps the scale.
    // Under load, replication can bring the scale to node 2 before its
    // update, which then sets the count back to 2 (version 3 at once):
    // that is the later write winning, as it should.
    let update_saw_scale = ra.1["job"]["version"] == 3;
    let count = if update_saw_scale { 2 } else { 7 };
    assert_eq!(merged["count"], count, "update: {} merged: {merged}", ra.1);
    assert_eq!(merged["spec"]["task"]["resources"]["cpus"], 1.5, "{merged}");
    let (_, history) = c.agents[0]
        .get_any(&format!("{}/versions", path("web/frontend")))
        .unwrap();
    let ops: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops.len(), 3);
    assert_eq!(ops[0], "create");
}

#[test]
fn both_sides_of_a_partition_accept_writes_and_converge_after_it_heals() {
    let c = Cluster::with_agents(6);
    let (status, _) = c.agents[0]
        .post("/v1/jobs", &job("shared", 0.25, 1))
        .unwrap();
    assert_eq!(status, 201);
    let all: Vec<usize> = (0..6).collect();
    wait_same_everywhere(&c, &all, "shared", |v| v["version"] == 1);

    let side_a = [0usize, 1, 2];
    let side_b = [3usize, 4, 5];
    let ids = |side: &[usize]| {
        side.iter()
            .map(|i| c.agents[*i].info.node_id.clone())
            .collect::<Vec<_>>()
    };
    for i in side_a {
        c.agents[i].block(&ids(&side_b)).unwrap();
    }
    for i in side_b {
        c.agents[i].block(&ids(&side_a)).unwrap();
    }

    // Both sides accept writes.
    assert_eq!(
        c.agents[0]
            .post("/v1/jobs", &job("left", 0.25, 1))
            .unwrap()
            .0,
        201
    );
    assert_eq!(
        c.agents[4]
            .post("/v1/jobs", &job("right", 0.25, 1))
            .unwrap()
            .0,
        201
    );
    assert_eq!(c.agents[1].delete(&path("shared")).unwrap().0, 200);
    let (status, body) = c.agents[5]
        .post(&format!("{}/scale", path("shared")), &json!({"count": 4}))
        .unwrap();
    assert_eq!(status, 200, "{body}");
    wait_same_everywhere(&c, &side_a, "left", |v| v["version"] == 1);
    wait_same_everywhere(&c, &side_b, "right", |v| v["version"] == 1);
    for i in side_a {
        let (status, _) = c.agents[i].get_any(&path("right")).unwrap();
        assert_eq!(status, 404, "a write crossed the partition");
    }

    // Heal: everything converges, and the job deleted on one side stays
    // deleted although the other side scaled it meanwhile.
    for i in all.iter() {
        c.agents[*i].block(&[]).unwrap();
    }
    wait_same_everywhere(&c, &all, "left", |v| v["version"] == 1);
    wait_same_everywhere(&c, &all, "right", |v| v["version"] == 1);
    let shared = wait_same_everywhere(&c, &all, "shared", |v| v["version"] == 3);
    assert_eq!(shared["deleted"], true, "{shared}");
    for i in all {
        let (status, list) = c.agents[i].get_any("/v1/jobs").unwrap();
        assert_eq!(status, 200);
        let names: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["left", "right"], "on {}", c.agents[i].name);
    }
}

#[test]
fn jobs_survive_restarting_every_node_and_a_damaged_file_is_recovered_from_peers() {
    let mut c = Cluster::with_agents(3);
    for i in 0..5 {
        let name = format!("job-{i}");
        assert_eq!(
            c.agents[i % 3]
                .post("/v1/jobs", &job(&name, 0.25, 1))
                .unwrap()
                .0,
            201
        );
        let (status, _) = c.agents[(i + 1) % 3]
            .post(&format!("{}/scale", path(&name)), &json!({"count": 3}))
            .ok()
            .unwrap_or((0, Value::Null));
        // The scale may reach a node that has not heard of the job yet.
        if status != 200 {
            wait_until("job known", CONVERGE, || {
                Ok(c.agents[(i + 1) % 3].get_any(&path(&name))?.0 == 200)
            });
            assert_eq!(
                c.agents[(i + 1) % 3]
                    .post(&format!("{}/scale", path(&name)), &json!({"count": 3}))
                    .unwrap()
                    .0,
                200
            );
        }
    }
    let all = [0usize, 1, 2];
    for i in 0..5 {
        wait_same_everywhere(&c, &all, &format!("job-{i}"), |v| v["version"] == 2);
    }
    let (_, before) = c.agents[0].get_any("/v1/jobs").unwrap();

    // Every node stops; every node comes back with every job and version,
    // from its own disk.
    for a in &mut c.agents {
        assert!(a.terminate().unwrap().success());
    }
    for a in &mut c.agents {
        a.restart().unwrap();
        let (status, jobs) = a.get_any("/v1/jobs").unwrap();
        assert_eq!(status, 200);
        assert_eq!(jobs, before, "{} lost state over a restart", a.name);
    }

    // Damage node 2's log: it names the file, then recovers from peers.
    assert!(c.agents[2].terminate().unwrap().success());
    let log = c.agents[2].dir.join("state/changes.log");
    let mut bytes = std::fs::read(&log).unwrap();
    let middle = bytes.len() / 3;
    for b in &mut bytes[middle..middle + 8] {
        *b ^= 0x5a;
    }
    std::fs::write(&log, &bytes).unwrap();
    c.agents[2].restart().unwrap();
    let text = c.agents[2].log();
    assert!(
        text.contains("damaged") && text.contains(&log.display().to_string()),
        "the damaged file is not reported:\n{}",
        c.agents[2].log_tail(20)
    );
    let n2 = &c.agents[2];
    wait_until("node 2 to recover every job", CONVERGE, || {
        let (_, jobs) = n2.get_any("/v1/jobs")?;
        let (_, health) = n2.get_any("/v1/health")?;
        Ok(jobs == before && health["state"] == "ok")
    });
    let corrupt = std::fs::read_dir(c.agents[2].dir.join("state"))
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().contains("corrupt"));
    assert!(corrupt, "the damaged file was not kept aside");
}

#[test]
fn a_node_of_another_cluster_is_refused_at_tls() {
    let mut a = Cluster::new();
    a.found("a0");
    a.join("a1", 0);
    a.wait_all_alive(2, CONVERGE);
    assert_eq!(
        a.agents[0]
            .post("/v1/jobs", &job("mine", 0.25, 1))
            .unwrap()
            .0,
        201
    );

    let mut b = Cluster::new();
    b.start(&Spec::named("b0"));
    assert_eq!(
        b.agents[0]
            .post("/v1/jobs", &job("theirs", 0.25, 1))
            .unwrap()
            .0,
        201
    );

    // b's secret, a's RPC address: the handshake fails.
    let secret = shoal_node::token::ClusterSecret::from_token(&b.token()).unwrap();
    let target = a.agents[0].info.rpc;
    let target_id: shoal_gossip::NodeId = a.agents[0].info.node_id.parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(async {
        let tls = shoal_transport::NodeTls::new(secret.bytes(), shoal_gossip::NodeId(77)).unwrap();
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let t = shoal_transport::Transport::bind(
            sock,
            &tls,
            shoal_gossip::NodeId(77),
            Default::default(),
        )
        .unwrap();
        let digest =
            postcard::to_allocvec(&shoal_state::SyncRequest::Digest { root: 1, docs: 1 }).unwrap();
        t.request(target_id, target, shoal_transport::Service::State, &digest)
            .await
    });
    assert!(
        result.is_err(),
        "another cluster's node got an answer: {result:?}"
    );
    let a0 = &a.agents[0];
    wait_until("a0 to count the refused handshake", CONVERGE, || {
        Ok(a0.metric("shoal_rpc_refused_handshakes_total")? >= 1.0)
    });
    for agent in &a.agents {
        let (_, jobs) = agent.get_any("/v1/jobs").unwrap();
        let names: Vec<&str> = jobs
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["name"].as_str().unwrap())
            .collect();
        assert!(!names.contains(&"theirs"), "{names:?}");
    }
}

#[test]
fn bad_specs_are_refused_with_the_field_named_and_nothing_is_written() {
    let mut c = Cluster::new();
    c.found("n0");
    let n0 = &c.agents[0];
    let mut unknown = job("web", 0.5, 1);
    unknown["task"]["resources"]["cpu"] = json!(1);
    let mut negative = job("web", 0.5, 1);
    negative["task"]["resources"]["cpus"] = json!(-1);
    let mut runtime = job("web", 0.5, 1);
    runtime["task"]["runtime"] = json!("vm");
    for (body, field) in [
        (unknown, "task.resources.cpu"),
        (negative, "task.resources.cpus"),
        (runtime, "task.runtime"),
        (
            json!({"name": "Bad Name!", "task": {"runtime": "process", "command": "x"}}),
            "name",
        ),
    ] {
        let (status, err) = n0.post("/v1/jobs", &body).unwrap();
        assert_eq!(status, 422, "{err}");
        assert_eq!(err["error"]["field"], field, "{err}");
        assert_eq!(err["error"]["code"], "invalid_spec");
    }
    let (status, err) = n0
        .post(&format!("{}/scale", path("nope")), &json!({"count": -2}))
        .unwrap();
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["field"], "count");
    let (_, jobs) = n0.get_any("/v1/jobs").unwrap();
    assert_eq!(jobs, json!([]), "something was written");

    // The CLI, end to end.
    let dir = tempfile::tempdir().unwrap();
    let env = [("SHOAL_ADDR", n0.url()), ("SHOAL_TOKEN", n0.token.clone())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "name = \"web\"\n[task\nruntime = \"process\"\n").unwrap();
    let (status, _, err) = run_shoal(&["run", broken.to_str().unwrap()], &env);
    assert!(!status.success());
    assert!(
        err.contains("not valid TOML") && err.contains("line"),
        "{err}"
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"web\"\n[task]\nruntime = \"process\"\ncommand = \"/bin/sleep\"\n[task.resources]\ncpus = -1\n",
    )
    .unwrap();
    let (status, _, err) = run_shoal(&["run", bad.to_str().unwrap()], &env);
    assert!(!status.success());
    assert!(
        err.contains("task.resources.cpus: must be > 0 (got -1)"),
        "{err}"
    );

    let good = dir.path().join("web.toml");
    let spec = |cpus: f64| {
        format!(
            "name = \"web/api\"\ncount = 2\n[task]\nruntime = \"process\"\ncommand = \"/bin/sleep\"\nargs = [\"600\"]\n[task.resources]\ncpus = {cpus:?}\nmemory_mb = 64\n"
        )
    };
    std::fs::write(&good, spec(0.5)).unwrap();
    let (status, out, err) = run_shoal(&["run", good.to_str().unwrap()], &env);
    assert!(status.success(), "{err}");
    assert!(out.contains("created job web/api (version 1)"), "{out}");
    std::fs::write(&good, spec(1.0)).unwrap();
    let (status, out, err) = run_shoal(&["run", good.to_str().unwrap()], &env);
    assert!(status.success(), "{err}");
    assert!(
        out.contains("version 1 -> 2") && out.contains("~ task.resources.cpus: 0.5 -> 1.0"),
        "{out}"
    );
    let (status, out, _) = run_shoal(&["scale", "web/api", "5"], &env);
    assert!(status.success());
    assert!(out.contains("~ count: 2 -> 5"), "{out}");
    let (status, out, _) = run_shoal(&["jobs", "--json"], &env);
    assert!(status.success());
    let jobs: Value = serde_json::from_str(&out).unwrap();
    let j = &jobs[0];
    for key in ["name", "type", "count", "version"] {
        assert!(!j[key].is_null(), "{key} missing: {j}");
    }
    assert_eq!(j["version"], 3);
    let (status, out, _) = run_shoal(&["job", "history", "web/api"], &env);
    assert!(status.success());
    assert_eq!(out.lines().count(), 4, "{out}");
    let (status, out, _) = run_shoal(&["job", "show", "web/api"], &env);
    assert!(status.success());
    assert!(out.contains("process /bin/sleep 600"), "{out}");
    let (status, _, err) = run_shoal(&["scale", "web/api", "6", "--if-version", "1"], &env);
    assert!(!status.success());
    assert!(err.contains("version 3, not 1"), "{err}");
    let (status, out, _) = run_shoal(
        &[
            "run",
            "--name",
            "quick",
            "--cmd",
            "/bin/sleep 60",
            "--cpus",
            "0.1",
            "--constraint",
            "dc=dc1",
        ],
        &env,
    );
    assert!(status.success());
    assert!(out.contains("created job quick"), "{out}");
    let (status, out, _) = run_shoal(&["stop", "web/api"], &env);
    assert!(status.success(), "{out}");
    let (status, out, _) = run_shoal(&["jobs"], &env);
    assert!(status.success());
    assert!(!out.contains("web/api") && out.contains("quick"), "{out}");
}
