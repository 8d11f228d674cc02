//! The Docker runtime against the local engine: `shoal run --image` end to
//! end, limits in `docker inspect`, logs, ports, a command health check
//! run inside the container, artifacts, files and a secret seen in the container, a missing image, an image
//! whose containers cannot start, an OOM kill, and adoption after an agent
//! restart. Skipped, with the reason,
//! where no engine answers. Images come from `scripts/build-test-images.sh`
//! (nothing is pulled).

#![allow(clippy::print_stderr)]

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_tests::{Cluster, docker, docker_images, run_shoal, wait_until};

const SETTLE: Duration = Duration::from_secs(60);

fn cluster(n: usize) -> Cluster {
    Cluster::of(
        "d",
        n,
        &["--cpus", "2", "--memory-mb", "1024", "--stop-grace", "2s"],
    )
}
const IMAGE: &str = "shoal-test/busybox:latest";

macro_rules! need_docker {
    () => {
        if let Err(why) = docker_images(false) {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// Ids of the containers of `job` (running or not) on the engine.
fn containers(job: &str) -> BTreeSet<String> {
    let (_, out, _) = docker(&[
        "ps",
        "-a",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=shoal.job={job}"),
    ]);
    out.lines().map(str::to_owned).collect()
}

fn inspect(id: &str) -> Value {
    let (ok, out, err) = docker(&["inspect", id]);
    assert!(ok, "docker inspect {id}: {err}");
    serde_json::from_str::<Value>(&out).unwrap()[0].clone()
}

/// Removes a job's containers, whatever happens to the test.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for job in &self.0 {
            for id in containers(job) {
                let _ = docker(&["rm", "-f", &id]);
            }
        }
    }
}

fn job_name(base: &str) -> String {
    format!("{base}{}", std::process::id())
}

#[test]
fn shoal_run_image_runs_containers_with_limits_ports_and_logs() {
    need_docker!();
    let job = job_name("dweb");
    let _cleanup = Cleanup(vec![job.clone()]);
    let c = cluster(2);
    // Both nodes offer docker.
    let (_, me) = c.agents[1].get_any("/v1/self").unwrap();
    assert!(
        me["runtimes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "docker"),
        "{me}"
    );
    let env = [
        ("SHOAL_ADDR", c.agents[0].url()),
        ("SHOAL_TOKEN", c.token()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, out, err) = run_shoal(
        &[
            "run",
            "--name",
            &job,
            "--image",
            IMAGE,
            "--cmd",
            "sh -c 'echo hello from $SHOAL_TASK_ID port $SHOAL_PORT_HTTP; echo oops >&2; exec httpd -f -p 8080 -h /'",
            "--port",
            "http:8080",
            "--count",
            "2",
            "--cpus",
            "0.5",
            "--memory-mb",
            "64",
            "--wait",
            "--timeout",
            "60s",
        ],
        &env,
    );
    assert!(status.success(), "{out}{err}");
    // Two nodes that met a moment ago may both start a task before their
    // views agree; one copy is then stopped and its container removed.
    wait_until("2 tasks running with ports, 2 containers", SETTLE, || {
        let t = c.tasks(1, &job);
        Ok(t.len() == 2
            && t.iter()
                .all(|t| t["state"] == "running" && t["ports"]["http"]["port"].is_u64())
            && containers(&job).len() == 2)
    });
    let t = c.tasks(1, &job);
    for task in &t {
        let id = task["container"].as_str().expect("container id shown");
        let info = inspect(id);
        let host = &info["HostConfig"];
        assert_eq!(host["NanoCpus"], 500_000_000, "{host}");
        assert_eq!(host["Memory"], 64 << 20, "{host}");
        assert_eq!(host["PidsLimit"], 4096, "{host}");
        let labels = &info["Config"]["Labels"];
        assert_eq!(labels["shoal.task"], task["task"], "{labels}");
        assert_eq!(labels["shoal.job"], job.as_str());
        assert_eq!(labels["shoal.node"], task["node"], "{labels}");
        // The host port answers (busybox httpd behind Docker's mapping).
        let port = task["ports"]["http"]["port"].as_u64().unwrap();
        let bound = &host["PortBindings"]["8080/tcp"][0]["HostPort"];
        assert_eq!(bound, &json!(port.to_string()));
        wait_until("the mapped port answers HTTP", SETTLE, || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port as u16))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            Ok(buf.starts_with("HTTP/"))
        });
        // Logs through any node, stdout and stderr.
        let name = task["task"].as_str().unwrap();
        wait_until("the container's output in shoal logs", SETTLE, || {
            let (ok, out, _) = {
                let (s, o, e) = run_shoal(&["logs", name], &env);
                (s.success(), o, e)
            };
            Ok(ok && out.contains(&format!("hello from {name} port {port}")))
        });
        let (s, out, _) = run_shoal(&["logs", name, "--stderr"], &env);
        assert!(s.success() && out.contains("oops"), "{out}");
    }
    let (s, out, _) = run_shoal(&["ps", &job], &env);
    assert!(s.success());
    assert!(out.contains("PORTS") && out.contains("http="), "{out}");
    // Stopped: no container of the job remains.
    let (s, _, err) = run_shoal(&["stop", &job], &env);
    assert!(s.success(), "{err}");
    wait_until("no container of the job left", SETTLE, || {
        Ok(containers(&job).is_empty())
    });
}

/// A command check of a docker task runs inside its container: it sees
/// the container's files and environment, and a failing one restarts it.
#[test]
fn a_command_check_runs_inside_the_container() {
    need_docker!();
    let job = job_name("dcheck");
    let _cleanup = Cleanup(vec![job.clone()]);
    let c = cluster(1);
    let spec = json!({
        "name": job,
        "task": {"image": IMAGE, "command": "sh",
                 "args": ["-c", "echo $GREETING > /ready; exec sleep 600"],
                 "env": {"GREETING": "ready-in-the-container"},
                 "checks": [{"type": "command", "command": "cat /ready || exit 3",
                             "interval": "500ms", "failures": 2, "grace": "3s"}],
                 "resources": {"cpus": 0.1, "memory_mb": 32}}
    });
    assert_eq!(c.agents[0].post("/v1/jobs", &spec).unwrap().0, 201);
    let mut tasks = Vec::new();
    wait_until("the container's check passes", SETTLE, || {
        tasks = c.tasks(0, &job);
        Ok(tasks.first().is_some_and(|t| t["health"] == "healthy"))
    });
    assert_eq!(tasks[0]["check"], "ready-in-the-container", "{}", tasks[0]);
    // The file goes inside the container: the check fails, the task restarts.
    let id = containers(&job).into_iter().next().expect("a container");
    let (ok, _, err) = docker(&["exec", &id, "rm", "/ready"]);
    assert!(ok, "{err}");
    wait_until("restarted for its failing check", SETTLE, || {
        tasks = c.tasks(0, &job);
        Ok(tasks
            .first()
            .is_some_and(|t| t["restarts"].as_u64() >= Some(1)))
    });
    let reason = tasks[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("unhealthy: exit 3"), "{}", tasks[0]);
    wait_until("healthy again", SETTLE, || {
        Ok(c.tasks(0, &job)
            .first()
            .is_some_and(|t| t["health"] == "healthy"))
    });
}

/// A docker task's artifacts are fetched into its sandbox, beside its
/// `[[task.files]]`, which the container sees at /shoal/task: a batch task that finds the file's
/// content there completes, one that does not would fail.
#[test]
fn a_container_reads_its_artifacts_in_its_sandbox() {
    need_docker!();
    let job = job_name("dartifact");
    let _cleanup = Cleanup(vec![job.clone()]);
    let mut c = cluster(1);
    let file = c.root.path().join("greeting.txt");
    std::fs::write(&file, "hello from the host\n").unwrap();
    let sha256: String = {
        use sha2::Digest as _;
        sha2::Sha256::digest(b"hello from the host\n")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    // A secret reaches the container's environment too.
    let (status, body) = c.agents[0]
        .post(
            "/v1/secrets",
            &json!({"name": "dtest/p", "value": "opened inside"}),
        )
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let spec = json!({
        "name": job,
        "type": "batch",
        "task": {"image": IMAGE, "command": "sh",
                 "args": ["-c", "test \"$(cat /shoal/task/greeting.txt)\" = 'hello from the host' && test \"$(cat /shoal/task/etc/app.conf)\" = 'mode = container' && test \"$P\" = 'opened inside'"],
                 "env": {"P": {"secret": "dtest/p"}},
                 "artifacts": [{"source": format!("file://{}", file.display()), "sha256": sha256, "dest": "greeting.txt"}],
                 "files": [{"path": "etc/app.conf", "content": "mode = container\n"}],
                 "resources": {"cpus": 0.1, "memory_mb": 32}},
        "restart": {"mode": "never"}
    });
    let (status, body) = c.agents[0].post("/v1/jobs", &spec).unwrap();
    assert_eq!(status, 201, "{body}");
    shoal_tests::wait_job_status(&mut c, &job, "complete", SETTLE);
}

#[test]
fn a_missing_image_fails_the_task_with_the_reason() {
    need_docker!();
    let job = job_name("dmissing");
    let _cleanup = Cleanup(vec![job.clone()]);
    let c = cluster(1);
    let spec = json!({
        "name": job,
        "task": {"runtime": "docker", "image": "shoal-test/not-built-anywhere:1",
                 "resources": {"cpus": 0.1, "memory_mb": 16}},
        "restart": {"mode": "never"}
    });
    assert_eq!(c.agents[0].post("/v1/jobs", &spec).unwrap().0, 201);
    wait_until("the task failed with the image reason", SETTLE, || {
        let t = c.tasks(0, &job);
        Ok(t.first().is_some_and(|t| {
            t["state"] == "failed"
                && t["reason"].as_str().is_some_and(|r| {
                    r.contains(
                        "image shoal-test/not-built-anywhere:1 not found locally and could not be pulled: ",
                    ) && r.contains("docker load -i")
                })
        }))
    });
    assert!(containers(&job).is_empty());
    // The reason, with how to load the image, where people look.
    let url = c.agents[0].url();
    let env = [
        ("SHOAL_ADDR", url.as_str()),
        ("SHOAL_TOKEN", c.agents[0].token.as_str()),
    ];
    let (s, out, err) = run_shoal(&["ps", &job], &env);
    assert!(s.success(), "{err}");
    let flat: String = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("failed")
            && flat.contains("not-built-anywhere:1")
            && flat.contains("docker load"),
        "{out}"
    );
}

#[test]
fn a_container_over_its_memory_limit_is_killed_for_oom() {
    need_docker!();
    let job = job_name("doom");
    let _cleanup = Cleanup(vec![job.clone()]);
    let c = cluster(1);
    let spec = json!({
        "name": job,
        "task": {"runtime": "docker", "image": IMAGE, "command": "sh",
                 "args": ["-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); sleep 60"],
                 "resources": {"cpus": 0.5, "memory_mb": 16}},
        "restart": {"mode": "never"}
    });
    assert_eq!(c.agents[0].post("/v1/jobs", &spec).unwrap().0, 201);
    wait_until("the container killed for oom", SETTLE, || {
        let t = c.tasks(0, &job);
        Ok(t.first()
            .is_some_and(|t| t["state"] == "killed" && t["reason"] == "oom"))
    });
}

#[test]
fn an_agent_restart_adopts_its_containers_and_removes_orphans() {
    need_docker!();
    let job = job_name("dadopt");
    let ghost = job_name("dghost");
    let _cleanup = Cleanup(vec![job.clone(), ghost.clone()]);
    let mut c = cluster(1);
    let spec = json!({
        "name": job,
        "count": 2,
        "task": {"runtime": "docker", "image": IMAGE, "command": "sleep", "args": ["3600"],
                 "resources": {"cpus": 0.25, "memory_mb": 32}},
    });
    assert_eq!(c.agents[0].post("/v1/jobs", &spec).unwrap().0, 201);
    wait_until("2 containers running", SETTLE, || {
        let t = c.tasks(0, &job);
        Ok(t.len() == 2 && t.iter().all(|t| t["state"] == "running"))
    });
    let before = containers(&job);
    assert_eq!(before.len(), 2);
    // A container labelled as this node's that no task owns.
    let node = c.agents[0].info.node_id.clone();
    let (ok, _, err) = docker(&[
        "run",
        "-d",
        "--label",
        &format!("shoal.node={node}"),
        "--label",
        &format!("shoal.job={ghost}"),
        "--label",
        &format!("shoal.task={ghost}/0"),
        IMAGE,
        "sleep",
        "3600",
    ]);
    assert!(ok, "{err}");
    c.agents[0].kill9();
    c.agents[0].restart().unwrap();
    wait_until(
        "both tasks running again, in the same containers",
        SETTLE,
        || {
            let t = c.tasks(0, &job);
            let ids: BTreeSet<String> = t
                .iter()
                .filter(|t| t["state"] == "running")
                .filter_map(|t| t["container"].as_str().map(str::to_owned))
                .collect();
            Ok(ids == before)
        },
    );
    assert_eq!(containers(&job), before, "no duplicate container");
    wait_until("the orphan removed", SETTLE, || {
        Ok(containers(&ghost).is_empty())
    });
    assert!(c.agents[0].log().contains("adopting"));
}

/// The `shoal.task` labels of `job`'s running containers, sorted (a task
/// running twice shows twice).
fn running_tasks(job: &str) -> Vec<String> {
    let (_, out, _) = docker(&[
        "ps",
        "--filter",
        &format!("label=shoal.job={job}"),
        "--filter",
        "status=running",
        "--format",
        "{{.Label \"shoal.task\"}}",
    ]);
    let mut v: Vec<String> = out.lines().map(str::to_owned).collect();
    v.sort();
    v
}

#[test]
fn an_agent_restarted_offline_restarts_its_ended_containers_and_starts_no_other() {
    need_docker!();
    let job = job_name("doffline");
    let _cleanup = Cleanup(vec![job.clone()]);
    let mut c = cluster(3);
    let spec = json!({
        "name": job,
        "count": 3,
        "spread": "name",
        "disconnect": {"replace_after": "10m"},
        "task": {"runtime": "docker", "image": IMAGE, "command": "sleep", "args": ["3600"],
                 "resources": {"cpus": 0.25, "memory_mb": 32}},
    });
    assert_eq!(c.agents[0].post("/v1/jobs", &spec).unwrap().0, 201);
    let all: Vec<String> = (0..3).map(|i| format!("{job}/{i}")).collect();
    wait_until("3 containers running, one per task", SETTLE, || {
        Ok(running_tasks(&job) == all)
    });
    // The node running task 0, and what it runs.
    let tasks = c.tasks(0, &job);
    let node0 = tasks
        .iter()
        .find(|t| t["index"] == 0)
        .and_then(|t| t["node_name"].as_str())
        .expect("task 0 placed")
        .to_owned();
    let edge = c
        .agents
        .iter()
        .position(|a| a.name == node0)
        .expect("a known agent");
    let edge_id = c.agents[edge].info.node_id.clone();
    wait_until("the edge node saved both peers", SETTLE, || {
        let saved = std::fs::read_to_string(c.agents[edge].dir.join("peers.json"))?;
        Ok(serde_json::from_str::<Vec<String>>(&saved)?.len() == 2)
    });

    // Every agent goes away; the edge node's machine loses power: its
    // containers end (the others' outlive their agents).
    for a in &mut c.agents {
        a.kill9();
    }
    let (_, out, _) = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=shoal.job={job}"),
        "--filter",
        &format!("label=shoal.node={edge_id}"),
    ]);
    let killed: Vec<&str> = out.lines().collect();
    assert!(!killed.is_empty(), "the edge node runs a container");
    for id in &killed {
        let (ok, _, err) = docker(&["kill", id]);
        assert!(ok, "{err}");
    }
    assert_eq!(running_tasks(&job).len(), 3 - killed.len());

    // It comes back alone, none of its peers answering: its own tasks run
    // again (in new containers), no other starts there.
    c.agents[edge].restart().unwrap();
    wait_until("its own tasks running again", SETTLE, || {
        Ok(running_tasks(&job) == all)
    });
    assert!(
        c.agents[edge]
            .log()
            .contains("ended while the agent was away"),
        "the restart said why"
    );
    wait_until(
        "the others' tasks waiting there, saying why",
        SETTLE,
        || {
            Ok(c.tasks(edge, &job)
                .iter()
                .filter(|t| t["pending"].to_string().contains("fewer than half"))
                .count()
                == 3 - killed.len())
        },
    );
    assert_eq!(running_tasks(&job), all, "nothing started twice");

    // The others come back: still one container per task.
    for n in (0..3).filter(|n| *n != edge) {
        c.agents[n].restart().unwrap();
    }
    c.wait_all_alive(3, SETTLE);
    wait_until("every task placed, none twice", SETTLE, || {
        let t = c.tasks(0, &job);
        Ok(t.len() == 3 && t.iter().all(|t| t["state"] == "running"))
    });
    assert_eq!(running_tasks(&job), all, "one container per task");
}

#[test]
fn a_container_that_cannot_start_is_removed_and_leaves_nothing_once_stopped() {
    need_docker!();
    // Created by the engine, refused at start: its entrypoint is not in the
    // image (scripts/build-test-images.sh).
    const BROKEN: &str = "shoal-test/no-entrypoint:latest";
    let once = job_name("dnoentry");
    let again = job_name("dnoentryloop");
    let waiting = job_name("dnoentrywait");
    let _cleanup = Cleanup(vec![once.clone(), again.clone(), waiting.clone()]);
    let c = cluster(1);
    let spec = |name: &str, restart: Value| {
        json!({
            "name": name,
            "task": {"runtime": "docker", "image": BROKEN,
                     "resources": {"cpus": 0.1, "memory_mb": 16}},
            "restart": restart
        })
    };
    // Tried once: it fails with the engine's reason and no container stays.
    let s = spec(&once, json!({"mode": "never"}));
    assert_eq!(c.agents[0].post("/v1/jobs", &s).unwrap().0, 201);
    wait_until("the task failed with the start reason", SETTLE, || {
        let t = c.tasks(0, &once);
        Ok(t.first().is_some_and(|t| {
            t["state"] == "failed"
                && t["reason"].as_str().is_some_and(|r| {
                    r.contains("cannot start the container") && r.contains("not-here")
                })
        }))
    });
    wait_until("no container of the failed task", SETTLE, || {
        Ok(containers(&once).is_empty())
    });
    // Tried again and again, then stopped in the middle of it.
    let s = spec(
        &again,
        json!({"mode": "always", "delay": "100ms", "max_delay": "100ms"}),
    );
    assert_eq!(c.agents[0].post("/v1/jobs", &s).unwrap().0, 201);
    wait_until("several failed starts", SETTLE, || {
        let t = c.tasks(0, &again);
        Ok(t.first().is_some_and(|t| t["restarts"].as_u64() >= Some(3)))
    });
    lose_a_container(&c, &again);
    assert_eq!(
        c.agents[0].delete(&format!("/v1/jobs/{again}")).unwrap().0,
        200
    );
    wait_until("the job's tasks gone", SETTLE, || {
        Ok(c.tasks(0, &again).is_empty())
    });
    wait_until("no container of the stopped job", SETTLE, || {
        Ok(containers(&again).is_empty())
    });
    // Stopped while it waits to be tried again: no start of it runs then
    // to notice a lost container; the stop does.
    let s = spec(&waiting, json!({"mode": "always", "delay": "1h"}));
    assert_eq!(c.agents[0].post("/v1/jobs", &s).unwrap().0, 201);
    wait_until("the first start failed", SETTLE, || {
        let t = c.tasks(0, &waiting);
        Ok(t.first()
            .is_some_and(|t| t["reason"].as_str().is_some_and(|r| r.contains("not-here"))))
    });
    wait_until("no container after the failed start", SETTLE, || {
        Ok(containers(&waiting).is_empty())
    });
    lose_a_container(&c, &waiting);
    assert_eq!(
        c.agents[0]
            .delete(&format!("/v1/jobs/{waiting}"))
            .unwrap()
            .0,
        200
    );
    wait_until(
        "no container of the job stopped while waiting",
        SETTLE,
        || Ok(containers(&waiting).is_empty()),
    );
}

/// Leaves a container of `job`'s task 0 that the agent lost track of, in
/// the `Created` state, as a create whose answer came too late (or whose
/// removal the engine refused) leaves it.
fn lose_a_container(c: &Cluster, job: &str) {
    let node = c.agents[0].info.node_id.clone();
    let (ok, lost, err) = docker(&[
        "create",
        "--label",
        &format!("shoal.node={node}"),
        "--label",
        &format!("shoal.job={job}"),
        "--label",
        &format!("shoal.task={job}/0"),
        "shoal-test/no-entrypoint:latest",
    ]);
    assert!(ok, "docker create: {err}");
    assert_eq!(inspect(lost.trim())["State"]["Status"], "created");
}
