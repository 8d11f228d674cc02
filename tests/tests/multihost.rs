//! Agents on real separate hosts: five containers of `shoal-test/agent` (the
//! shoal binary built for the tests, see `scripts/build-test-images.sh`),
//! each with its own address on a user-defined Docker network. Jobs run
//! across them; one is cut off (`docker network disconnect`) and one is
//! killed (`docker kill`); jobs are submitted on both sides of the cut; then
//! the network heals. Skipped, with the reason, where no Docker engine
//! answers.

#![allow(clippy::print_stderr)]

use std::time::Duration;

use serde_json::{Value, json};
use shoal_tests::{docker, docker_images, exactly_once, http_get, http_send, wait_until};

const SETTLE: Duration = Duration::from_secs(90);
const HOSTS: usize = 5;

/// The network and its containers, removed on drop.
struct Hosts {
    net: String,
    prefix: String,
    names: Vec<String>,
    token: String,
}

impl Drop for Hosts {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for n in &self.names {
                let (_, out, err) = docker(&["logs", "--tail", "30", n]);
                eprintln!("----- {n} (last lines) -----\n{out}{err}");
            }
        }
        for n in &self.names {
            let _ = docker(&["rm", "-f", n]);
        }
        let _ = docker(&["network", "rm", &self.net]);
    }
}

impl Hosts {
    fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.prefix, 10 + i)
    }

    fn url(&self, i: usize) -> String {
        format!("http://{}:5480", self.ip(i))
    }

    fn get(&self, i: usize, path: &str) -> anyhow::Result<(u16, Value)> {
        let (status, body) = http_get(&format!("{}{path}", self.url(i)), Some(&self.token))?;
        Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
    }

    fn post(&self, i: usize, path: &str, body: &Value) -> anyhow::Result<u16> {
        let (status, _) = http_send(
            "POST",
            &format!("{}{path}", self.url(i)),
            Some(&self.token),
            Some(body),
        )?;
        Ok(status)
    }

    /// Members host `i` sees alive.
    fn alive_seen_by(&self, i: usize) -> usize {
        match self.get(i, "/v1/nodes") {
            Ok((200, Value::Array(nodes))) => {
                nodes.iter().filter(|n| n["state"] == "alive").count()
            }
            _ => 0,
        }
    }

    fn start(&mut self, i: usize) {
        let name = format!("shoal-mh{}-h{i}", std::process::id());
        let ip = self.ip(i);
        let mut args: Vec<String> = [
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &self.net,
            "--ip",
            &ip,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(
            [
                "shoal-test/agent:latest",
                "agent",
                "--data-dir",
                "/var/lib/shoal",
                "--bind",
                "0.0.0.0:5481",
                "--rpc",
                "0.0.0.0:5482",
                "--api",
                "0.0.0.0:5480",
                // The test talks to each host's API from outside its
                // namespace in plain HTTP (TLS on the API has its own
                // test, tests/tests/api_tls.rs).
                "--api-insecure",
                "--advertise",
                &ip,
                "--name",
                &format!("h{i}"),
                "--gossip",
                "test",
                "--no-docker",
                "--cpus",
                "2",
                "--memory-mb",
                "1024",
                "--stop-grace",
                "2s",
            ]
            .iter()
            .map(|s| (*s).to_owned()),
        );
        if i > 0 {
            args.extend([
                "--join".into(),
                format!("{}:5481", self.ip(0)),
                "--token".into(),
                self.token.clone(),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, _, err) = docker(&args);
        assert!(ok, "docker run {name}: {err}");
        self.names.push(name);
        wait_until(&format!("h{i} serving"), SETTLE, || {
            Ok(http_get(&format!("{}/v1/health", self.url(i)), None)?.0 == 200)
        });
        if i == 0 {
            let (ok, out, err) = docker(&["exec", &self.names[0], "cat", "/var/lib/shoal/token"]);
            assert!(ok, "{err}");
            self.token = out.trim().to_owned();
        }
    }
}

/// A user-defined network with a free /24 of 10.213.x.0.
fn network() -> Option<(String, String)> {
    let name = format!("shoal-mh{}", std::process::id());
    let base = std::process::id() as usize % 150;
    for k in 0..50 {
        let prefix = format!("10.213.{}", 50 + (base + k) % 200);
        let (ok, _, _) = docker(&[
            "network",
            "create",
            "--subnet",
            &format!("{prefix}.0/24"),
            &name,
        ]);
        if ok {
            return Some((name, prefix));
        }
    }
    None
}

fn sleeper(name: &str, count: u32, marker: &str) -> Value {
    json!({
        "name": name,
        "count": count,
        "task": {"runtime": "process", "command": "/bin/sh",
                 "args": ["-c", "exec sleep 3600"],
                 "env": {"SHOAL_TEST_MARKER": marker},
                 "resources": {"cpus": 0.25, "memory_mb": 32}},
        "restart": {"mode": "always", "delay": "200ms"}
    })
}

#[test]
fn five_hosts_cut_killed_and_healed_keep_every_job_and_one_process_per_task() {
    if let Err(why) = docker_images(true) {
        eprintln!("skipped: {why}");
        return;
    }
    let Some((net, prefix)) = network() else {
        eprintln!("skipped: no free 10.213.x.0/24 subnet for a test network");
        return;
    };
    let mut h = Hosts {
        net,
        prefix,
        names: Vec::new(),
        token: String::new(),
    };
    for i in 0..HOSTS {
        h.start(i);
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
