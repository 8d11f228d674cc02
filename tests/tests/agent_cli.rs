//! The agent's start-up, its files, its API and the CLI, against real agents.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_tests::{Cluster, Spec, http_get, run_shoal, shoal_bin, wait_until};

#[test]
fn founding_prints_the_join_command_and_writes_its_files() {
    let mut c = Cluster::new();
    c.start(&Spec {
        name: "founder".into(),
        args: vec![
            "--suspicion-mult".into(),
            "1.5".into(),
            "--reach-only-dc-size".into(),
            "64".into(),
        ],
        ..Default::default()
    });
    let a = &mut c.agents[0];
    // agent.json is written when the agent serves; the join line is printed
    // just after, so it is waited for rather than read at once.
    wait_until("the founder's two lines", Duration::from_secs(10), || {
        Ok(a.stdout().matches('\n').count() >= 2)
    });
    let out = a.stdout();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "two stdout lines, got {out:?}");
    let expected = format!("shoal agent --join {} --token {}", a.info.gossip, a.token);
    assert_eq!(lines[0], expected);
    // Then what a client elsewhere needs: the API's URL and its CA.
    let ca = a.dir.join("api-ca.pem");
    assert!(
        lines[1].starts_with("API at https://")
            && lines[1].contains(&format!(":{}", a.info.api.port()))
            && lines[1].contains(&ca.display().to_string()),
        "{out:?}"
    );
    assert!(
        fs::read_to_string(&ca)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );

    let token_mode = fs::metadata(a.dir.join("token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(token_mode & 0o777, 0o600);
    let agent_json: Value =
        serde_json::from_str(&fs::read_to_string(a.dir.join("agent.json")).unwrap()).unwrap();
    for key in ["node_id", "name", "gossip", "rpc", "api"] {
        assert!(
            agent_json.get(key).is_some(),
            "agent.json lacks {key}: {agent_json}"
        );
    }
    assert_ne!(a.info.gossip.port(), 0);
    assert_ne!(a.info.rpc.port(), 0);
    assert_ne!(a.info.api.port(), 0);
    assert!(!a.log().is_empty(), "logs go to stderr");

    // A restart founds nothing and prints nothing; the id stays.
    let id = a.info.node_id.clone();
    a.terminate().unwrap();
    a.restart().unwrap();
    assert_eq!(a.info.node_id, id);
    assert_eq!(a.stdout(), "");
    // Timing flags are kept in the data dir like the others.
    wait_until(
        "the restarted agent's timing",
        Duration::from_secs(10),
        || {
            Ok(a.log().matches("suspicion_mult=1.5").count() >= 2
                && a.log().matches("reach_only_dc_size=64").count() >= 2)
        },
    );
}

#[test]
fn api_needs_the_token_and_answers_errors_in_json() {
    let mut c = Cluster::new();
    c.found("n0");
    c.join("n1", 0);
    c.wait_all_alive(2, Duration::from_secs(60));
    let n0 = &c.agents[0];
    let url = n0.url();

    let (status, body) = http_get(&format!("{url}/v1/health"), None).unwrap();
    assert_eq!(status, 200, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");

    for path in [
        "/v1/nodes",
        "/v1/self",
        "/v1/status",
        "/metrics",
        "/v1/nodes/n1",
    ] {
        let (status, body) = http_get(&format!("{url}{path}"), None).unwrap();
        assert_eq!(status, 401, "{path}: {body}");
        let err: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(err["error"]["code"], "unauthorized", "{body}");
        assert!(err["error"]["message"].as_str().unwrap().contains("token"));
        let (status, _) = http_get(&format!("{url}{path}"), Some("shoal1_wrong")).unwrap();
        assert_eq!(status, 401);
    }

    let me: Value = n0.get("/v1/self").unwrap();
    assert_eq!(me["name"], "n0");
    assert_eq!(me["local"], true);
    let by_name: Value = n0.get("/v1/nodes/n1").unwrap();
    assert_eq!(by_name["id"], c.agents[1].info.node_id.as_str());
    let by_id: Value = n0
        .get(&format!("/v1/nodes/{}", c.agents[1].info.node_id))
        .unwrap();
    assert_eq!(by_id["name"], "n1");
    let by_prefix: Value = n0
        .get(&format!("/v1/nodes/{}", &c.agents[1].info.node_id[..8]))
        .unwrap();
    assert_eq!(by_prefix["name"], "n1");

    let (status, body) = http_get(&format!("{url}/v1/nodes/nobody"), Some(&n0.token)).unwrap();
    assert_eq!(status, 404);
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"]["code"], "not_found");
    let (status, body) = http_get(&format!("{url}/v2/whatever"), Some(&n0.token)).unwrap();
    assert_eq!(status, 404);
    assert!(body.contains("\"error\""));

    let metrics = n0.metrics().unwrap();
    for family in [
        "shoal_gossip_members{state=\"alive\"} 2",
        "shoal_gossip_packets_total{direction=\"in\"}",
        "shoal_gossip_bytes_total{direction=\"out\"}",
        "shoal_gossip_dropped_packets_total{reason=\"auth\"}",
        "shoal_gossip_probe_rtt_seconds_count",
    ] {
        assert!(
            metrics.contains(family),
            "/metrics lacks {family}:\n{metrics}"
        );
    }
}

#[test]
fn cli_lists_nodes_and_the_pool() {
    let mut c = Cluster::new();
    c.found("n0");
    c.start(&Spec {
        name: "n1".into(),
        join: vec![c.agents[0].info.gossip],
        token: Some(c.token()),
        args: vec![
            "--dc".into(),
            "west".into(),
            "--cpus".into(),
            "3".into(),
            "--memory-mb".into(),
            "2048".into(),
            "--label".into(),
            "rack=r7".into(),
        ],
        ..Default::default()
    });
    c.wait_all_alive(2, Duration::from_secs(60));
    let addr = c.agents[0].url();
    let token = c.token();

    // Flags …
    let (status, out, err) = run_shoal(&["--addr", &addr, "--token", &token, "nodes"], &[]);
    assert!(status.success(), "{err}");
    let header = out.lines().next().unwrap();
    for col in [
        "NAME", "ID", "ADDRESS", "STATE", "DC", "CPUS", "MEMORY", "AGE",
    ] {
        assert!(header.contains(col), "{header}");
    }
    assert!(
        out.contains("n1") && out.contains("west") && out.contains("2.0 GiB"),
        "{out}"
    );

    // … or the environment.
    let env = [
        ("SHOAL_ADDR", addr.as_str()),
        ("SHOAL_TOKEN", token.as_str()),
    ];
    let (status, out, err) = run_shoal(&["nodes", "--json"], &env);
    assert!(status.success(), "{err}");
    let nodes: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(nodes.len(), 2);
    let n1 = nodes.iter().find(|n| n["name"] == "n1").unwrap();
    for key in ["id", "name", "state", "gossip", "api", "dc"] {
        assert!(!n1[key].is_null(), "{key} missing in {n1}");
    }
    assert_eq!(n1["state"], "alive");
    assert_eq!(n1["dc"], "west");
    assert_eq!(n1["capacity"]["cpus"], 3.0);
    assert_eq!(n1["capacity"]["memory_mb"], 2048);
    assert_eq!(n1["labels"]["rack"], "r7");

    // The other datacenter is reached from here once a datagram of its
    // member arrives after its record (a probe a second); the answering
    // node's own has no other member to hear from.
    wait_until("west reached from n0", Duration::from_secs(10), || {
        let (status, out, _) = run_shoal(&["status", "--json"], &env);
        anyhow::ensure!(status.success(), "shoal status --json failed");
        let s: Value = serde_json::from_str(&out)?;
        Ok(s["reach"].as_array().is_some_and(|r| !r.is_empty()))
    });
    let (status, out, err) = run_shoal(&["status"], &env);
    assert!(status.success(), "{err}");
    assert!(out.contains("2 alive"), "{out}");
    assert!(out.contains("west") && out.contains("dc1"), "{out}");
    assert!(
        out.contains("FROM HERE") && out.contains("reached"),
        "{out}"
    );
    let (status, out, _) = run_shoal(&["status", "--json"], &env);
    assert!(status.success());
    let s: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["members"]["alive"], 2);
    assert_eq!(s["by_dc"].as_array().unwrap().len(), 2);
    let reach = s["reach"].as_array().unwrap();
    assert_eq!(reach.len(), 1, "{s}");
    assert_eq!(reach[0]["dc"], "west", "{s}");
    assert_eq!(reach[0]["reach"], "reachable", "{s}");
    assert!(reach[0]["unreachable_secs"].is_null(), "{s}");

    let (status, out, _) = run_shoal(&["node", "show", "n1"], &env);
    assert!(status.success());
    assert!(out.contains("rack=r7"), "{out}");

    // Errors: a message and a non-zero exit.
    let (status, _, err) = run_shoal(&["--addr", &addr, "nodes"], &[]);
    assert!(!status.success());
    assert!(err.contains("token"), "{err}");
    let (status, _, err) = run_shoal(&["node", "show", "nobody"], &env);
    assert!(!status.success());
    assert!(err.contains("nobody"), "{err}");
    let (status, _, err) = run_shoal(&["--addr", "127.0.0.1:1", "nodes"], &[]);
    assert!(!status.success());
    assert!(err.contains("cannot reach"), "{err}");
}

#[test]
fn bad_flags_are_clap_errors() {
    let (status, _, err) = run_shoal(&["agent", "--frobnicate"], &[]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("--frobnicate"), "{err}");
    let (status, _, err) = run_shoal(&["agent", "--cpus", "many"], &[]);
    assert_eq!(status.code(), Some(2), "{err}");
    let (status, _, err) = run_shoal(&["agent", "--bind", "nowhere"], &[]);
    assert_eq!(status.code(), Some(2), "{err}");
    let (status, _, err) = run_shoal(&["agent", "--label", "novalue"], &[]);
    assert_eq!(status.code(), Some(2), "{err}");
    let (status, _, err) = run_shoal(&["agent", "--gossip", "moon"], &[]);
    assert_eq!(status.code(), Some(2), "{err}");
    let (status, out, _) = run_shoal(&["agent", "--help"], &[]);
    assert!(status.success());
    assert!(
        out.contains("--join") && out.contains("--data-dir"),
        "{out}"
    );
}

/// Starts `shoal agent` on `dir` (loopback, port 0) with `extra` flags,
/// expecting it to refuse; returns what it said.
fn agent_refuses(dir: &std::path::Path, extra: &[&str]) -> String {
    let mut args = vec![
        "agent",
        "--data-dir",
        dir.to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
        "--api",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let (status, _, err) = run_shoal(&args, &[]);
    assert!(!status.success(), "the agent started with {extra:?}");
    err
}

#[test]
fn a_corrupt_or_unusable_data_dir_is_named_and_left_alone() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("d");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("node.json"), b"{ this is not json").unwrap();
    let err = agent_refuses(&dir, &[]);
    assert!(
        err.contains("node.json") && err.contains("corrupt"),
        "{err}"
    );
    assert_eq!(
        fs::read(dir.join("node.json")).unwrap(),
        b"{ this is not json"
    );

    // A data dir that is a file.
    let file = root.path().join("f");
    fs::write(&file, b"x").unwrap();
    let err = agent_refuses(&file, &[]);
    assert!(err.contains(file.to_str().unwrap()), "{err}");

    // A token file that is not a token.
    let dir2 = root.path().join("d2");
    fs::create_dir(&dir2).unwrap();
    fs::write(dir2.join("token"), b"garbage\n").unwrap();
    let err = agent_refuses(&dir2, &[]);
    assert!(err.contains("token"), "{err}");
    assert_eq!(fs::read(dir2.join("token")).unwrap(), b"garbage\n");

    // --join without a token, and a bad token.
    let err = agent_refuses(&root.path().join("d3"), &["--join", "127.0.0.1:1"]);
    assert!(err.contains("--join needs --token"), "{err}");
    let err = agent_refuses(&root.path().join("d4"), &["--token", "nope"]);
    assert!(err.contains("invalid cluster token"), "{err}");
    let err = agent_refuses(&root.path().join("d5"), &["--suspicion-mult", "0.1"]);
    assert!(err.contains("--suspicion-mult must be between"), "{err}");
}

#[test]
fn unreachable_join_peers_are_retried_while_the_api_serves() {
    let mut c = Cluster::new();
    // A port where nothing listens: bind a socket, note the port, close it.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let token = {
        let secret = shoal_node::token::ClusterSecret::generate().unwrap();
        secret.to_token()
    };
    let i = c.start(&Spec {
        name: "lonely".into(),
        join: vec![dead],
        token: Some(token.clone()),
        ..Default::default()
    });
    let a = &c.agents[i];
    let (status, _) = http_get(&format!("{}/v1/health", a.url()), None).unwrap();
    assert_eq!(status, 200);
    wait_until("join retries in the log", Duration::from_secs(30), || {
        Ok(a.log().matches("retrying").count() >= 2)
    });
    let nodes = a.nodes().unwrap();
    assert_eq!(nodes.len(), 1);
}

#[test]
fn a_data_dir_belongs_to_one_cluster() {
    let mut c = Cluster::new();
    c.found("n0");
    let other = shoal_node::token::ClusterSecret::generate()
        .unwrap()
        .to_token();
    let d = c.agents[0].dir.to_str().unwrap().to_owned();
    c.agents[0].terminate().unwrap();
    let (status, _, err) = run_shoal(&["agent", "--data-dir", &d, "--token", &other], &[]);
    assert!(!status.success());
    assert!(err.contains("another cluster"), "{err}");
}

#[test]
fn dev_mode_needs_no_token() {
    let mut c = Cluster::new();
    let i = c.start(&Spec {
        name: "dev".into(),
        args: vec!["--dev".into()],
        ..Default::default()
    });
    let a = &c.agents[i];
    let (status, body) = http_get(&format!("{}/v1/nodes", a.url()), None).unwrap();
    assert_eq!(status, 200, "{body}");
    wait_until("the dev agent's greeting", Duration::from_secs(10), || {
        Ok(a.stdout().contains("join another agent"))
    });
    let out = a.stdout();
    assert!(out.contains("dev") && out.contains("shoal nodes"), "{out}");
}

/// Names go into URL paths percent-encoded (shoal_client::segment) and the
/// API decodes them back to the same string: a node name with a space,
/// '?', '#', '%', '&', '+' and a non-ASCII letter is found, and a job or task
/// name with those and '/' comes back intact in the API's answer.
#[test]
fn odd_names_round_trip_through_url_paths() {
    let node = "zürich 1?#%&+";
    let mut c = Cluster::new();
    c.found(node);
    let a = &c.agents[0];
    let env = [("SHOAL_ADDR", a.url()), ("SHOAL_TOKEN", a.token.clone())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let (status, out, err) = run_shoal(&["node", "show", node], &env);
    assert!(status.success(), "{err}");
    assert!(
        out.lines().any(|l| l == format!("Name:       {node}")),
        "{out}"
    );
    let (status, out, err) = run_shoal(&["node", "drain", node], &env);
    assert!(status.success(), "{err}");
    assert!(out.contains(&a.info.node_id), "{out}");
    let me: Value = a.get("/v1/self").unwrap();
    assert_eq!(me["draining"], true, "{me}");
    let (status, _, err) = run_shoal(&["node", "drain", node, "--undo"], &env);
    assert!(status.success(), "{err}");

    // No such job, but the API names exactly what it was asked for.
    let job = "a b?#%é/x";
    for args in [
        vec!["job", "show", job],
        vec!["job", "history", job],
        vec!["ps", job],
        vec!["scale", job, "2"],
        vec!["stop", job],
    ] {
        let (status, _, err) = run_shoal(&args, &env);
        assert!(!status.success(), "{args:?}");
        assert!(
            err.contains(&format!("no job named {job:?}")),
            "{args:?}: {err}"
        );
    }
    let task = format!("{job}/0");
    let (status, _, err) = run_shoal(&["logs", &task], &env);
    assert!(!status.success());
    assert!(err.contains(&format!("task {task} runs nowhere")), "{err}");
}

/// `shoal run FILE` with flags applies them over the file: scalars replace
/// the file's values, `--env` merges, `--constraint` adds, `--image` makes
/// a docker task. The file leaves out `task.runtime`; the stored spec names
/// the one chosen.
#[test]
fn run_flags_apply_over_the_job_file() {
    let mut c = Cluster::new();
    c.found("n0");
    let a = &c.agents[0];
    let env = [("SHOAL_ADDR", a.url()), ("SHOAL_TOKEN", a.token.clone())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let file = c.root.path().join("web.toml");
    fs::write(
        &file,
        r#"name = "web"
count = 1
[task]
command = "/bin/sleep"
args = ["600"]
env = { A = "1", B = "2" }
[task.resources]
cpus = 0.5
[[constraints]]
attribute = "dc"
op = "="
value = "dc1"
"#,
    )
    .unwrap();
    let file = file.to_str().unwrap();
    // No node is in zone "nowhere": the tasks wait and nothing runs.
    let flags = |count: &str| {
        vec![
            "run",
            file,
            "--name",
            "web/copy",
            "--type",
            "batch",
            "--count",
            count,
            "--cpus",
            "0.2",
            "--memory-mb",
            "32",
            "--env",
            "B=3",
            "--env",
            "C=4",
            "--constraint",
            "zone=nowhere",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<String>>()
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_shoal(&args, &env)
    };
    let (status, out, err) = run(flags("3"));
    assert!(status.success(), "{err}");
    assert!(out.contains("created job web/copy (version 1)"), "{out}");
    let show = |name: &str| {
        let (status, out, err) = run_shoal(&["job", "show", name, "--json"], &env);
        assert!(status.success(), "{err}");
        serde_json::from_str::<Value>(&out).unwrap()["spec"].clone()
    };
    let spec = show("web/copy");
    assert_eq!(spec["type"], "batch", "{spec}");
    assert_eq!(spec["count"], 3, "{spec}");
    assert_eq!(spec["task"]["runtime"], "process", "{spec}");
    assert_eq!(spec["task"]["command"], "/bin/sleep", "{spec}");
    assert_eq!(spec["task"]["resources"]["cpus"], 0.2, "{spec}");
    assert_eq!(spec["task"]["resources"]["memory_mb"], 32, "{spec}");
    assert_eq!(
        spec["task"]["env"],
        serde_json::json!({"A": "1", "B": "3", "C": "4"}),
        "{spec}"
    );
    let constraints: Vec<&str> = spec["constraints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["attribute"].as_str().unwrap())
        .collect();
    assert_eq!(constraints, ["dc", "zone"], "{spec}");
    // The file's own name was replaced, not used as well.
    let (status, _, err) = run_shoal(&["job", "show", "web"], &env);
    assert!(!status.success() && err.contains("no job named"), "{err}");

    // Again with another count: an update, and only the count changed.
    let (status, out, err) = run(flags("5"));
    assert!(status.success(), "{err}");
    assert!(
        out.contains("version 1 -> 2") && out.contains("~ count: 3 -> 5"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 2, "{out}");

    // --image over a file without one: a docker task with the file's
    // command as its entrypoint.
    let (status, _, err) = run_shoal(
        &[
            "run",
            file,
            "--name",
            "web/box",
            "--image",
            "busybox",
            "--constraint",
            "zone=nowhere",
        ],
        &env,
    );
    assert!(status.success(), "{err}");
    let spec = show("web/box");
    assert_eq!(spec["task"]["runtime"], "docker", "{spec}");
    assert_eq!(spec["task"]["image"], "busybox", "{spec}");
    assert_eq!(spec["task"]["command"], "/bin/sleep", "{spec}");

    // A flag that makes the spec invalid is refused like the file would be.
    let (status, _, err) = run_shoal(&["run", file, "--cpus", "-1"], &env);
    assert!(!status.success());
    assert!(
        err.contains("task.resources.cpus: must be > 0 (got -1)"),
        "{err}"
    );
}

/// A child process killed when dropped, whatever happens to the test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `text` is the lines `1` to `n`, in order, then `done`.
fn numbered_then_done(text: &str, n: u64) -> Result<(), String> {
    let mut expected = 1;
    for line in text.lines() {
        if expected > n {
            return if line == "done" {
                Ok(())
            } else {
                Err(format!("{line:?} after the last number"))
            };
        }
        if line != expected.to_string() {
            return Err(format!("line {expected} reads {line:?}"));
        }
        expected += 1;
    }
    Err(format!("ends before line {expected} or `done`"))
}

#[test]
fn a_task_writing_through_several_rotations_loses_no_line() {
    // About 23 MB of numbered lines, written over ~10 s: two rotations at
    // 10 MiB while the task writes, both files kept.
    const LINES: u64 = 3_000_000;
    let mut c = Cluster::new();
    c.found("n0");
    let a = &c.agents[0];
    let script = "i=0; while [ $i -lt 25 ]; do seq $((i*120000+1)) $(((i+1)*120000)); \
                  i=$((i+1)); sleep 0.4; done; echo done; exec sleep 3600";
    let spec = json!({
        "name": "chatty",
        "task": {"runtime": "process", "command": "/bin/sh", "args": ["-c", script],
                 "resources": {"cpus": 0.5, "memory_mb": 64}},
        "restart": {"mode": "never"}
    });
    assert_eq!(a.post("/v1/jobs", &spec).unwrap().0, 201);
    let env = [("SHOAL_ADDR", a.url()), ("SHOAL_TOKEN", a.token.clone())];
    wait_until("the task running", Duration::from_secs(30), || {
        let (_, t) = a.get_any("/v1/jobs/chatty/tasks")?;
        Ok(t[0]["state"] == "running")
    });
    // Followed from the start, as `shoal logs -f` does, while it rotates.
    let followed = c.root.path().join("followed.out");
    let follower = KillOnDrop(
        std::process::Command::new(shoal_bin())
            .args(["logs", "-f", "chatty/0"])
            .envs(env.iter().map(|(k, v)| (k, v.as_str())))
            .stdout(fs::File::create(&followed).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(
        "the follower read every line",
        Duration::from_secs(120),
        || Ok(fs::read_to_string(&followed)?.ends_with("\ndone\n")),
    );
    drop(follower);
    let text = fs::read_to_string(&followed).unwrap();
    numbered_then_done(&text, LINES).unwrap();
    // The files rotated (by the task's log shipper) while it wrote.
    let sandbox = a.dir.join("tasks/chatty_0");
    for f in ["stdout.log.1", "stdout.log.2", "stdout.log.start"] {
        assert!(sandbox.join(f).exists(), "no {f} in {}", sandbox.display());
    }
    // Read again from the beginning, every line is there.
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, out, err) = run_shoal(&["logs", "chatty/0"], &env);
    assert!(status.success(), "{err}");
    numbered_then_done(&out, LINES).unwrap();
    assert_eq!(a.delete("/v1/jobs/chatty").unwrap().0, 200);
}
