//! Agents on real separate hosts: containers of `shoal-test/agent` (the
//! shoal binary built for the tests, see `scripts/build-test-images.sh`),
//! each with its own address on a user-defined Docker network, removed
//! with the network when dropped. Used by `tests/tests/multihost.rs` and
//! `tests/tests/two_datacenters.rs`.

#![allow(clippy::print_stderr)]

use std::time::Duration;

use serde_json::{Value, json};

use crate::{docker, http_get, http_send, wait_until};

/// How long a host may take to start, see others, or settle.
pub const SETTLE: Duration = Duration::from_secs(90);

/// The network and its containers, removed on drop.
pub struct Hosts {
    /// The Docker network.
    pub net: String,
    /// Its /24, as `a.b.c`.
    pub prefix: String,
    /// The containers, host by host.
    pub names: Vec<String>,
    /// The cluster's token (read from host 0 once it started).
    pub token: String,
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
    /// A user-defined network with a free /24 of 10.213.x.0, named after
    /// `tag` and this process (`None`: no free subnet).
    pub fn new(tag: &str) -> Option<Hosts> {
        let net = format!("shoal-{tag}{}", std::process::id());
        let base = std::process::id() as usize % 150;
        for k in 0..50 {
            let prefix = format!("10.213.{}", 50 + (base + k) % 200);
            let (ok, _, _) = docker(&[
                "network",
                "create",
                "--subnet",
                &format!("{prefix}.0/24"),
                &net,
            ]);
            if ok {
                return Some(Hosts {
                    net,
                    prefix,
                    names: Vec::new(),
                    token: String::new(),
                });
            }
        }
        None
    }

    /// Host `i`'s address.
    pub fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.prefix, 10 + i)
    }

    /// Host `i`'s API.
    pub fn url(&self, i: usize) -> String {
        format!("http://{}:5480", self.ip(i))
    }

    /// `GET path` on host `i`: status and JSON body.
    pub fn get(&self, i: usize, path: &str) -> anyhow::Result<(u16, Value)> {
        let (status, body) = http_get(&format!("{}{path}", self.url(i)), Some(&self.token))?;
        Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
    }

    /// `POST path` on host `i`: status.
    pub fn post(&self, i: usize, path: &str, body: &Value) -> anyhow::Result<u16> {
        let (status, _) = http_send(
            "POST",
            &format!("{}{path}", self.url(i)),
            Some(&self.token),
            Some(body),
        )?;
        Ok(status)
    }

    /// The members host `i` knows (empty when it does not answer).
    pub fn nodes_seen_by(&self, i: usize) -> Vec<Value> {
        match self.get(i, "/v1/nodes") {
            Ok((200, Value::Array(nodes))) => nodes,
            _ => Vec::new(),
        }
    }

    /// Members host `i` sees alive.
    pub fn alive_seen_by(&self, i: usize) -> usize {
        self.nodes_seen_by(i)
            .iter()
            .filter(|n| n["state"] == "alive")
            .count()
    }

    /// The process id of host `i`'s container, on this machine.
    pub fn pid(&self, i: usize) -> anyhow::Result<u32> {
        let (ok, out, err) = docker(&["inspect", "-f", "{{.State.Pid}}", &self.names[i]]);
        anyhow::ensure!(ok, "docker inspect {}: {err}", self.names[i]);
        Ok(out.trim().parse()?)
    }

    /// Starts host `i` (`h{i}`), with `extra` agent flags; every host but
    /// the first joins host 0.
    pub fn start(&mut self, i: usize, extra: &[&str]) {
        let name = format!("{}-h{i}", self.net);
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
        args.extend(extra.iter().map(|s| (*s).to_owned()));
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

/// A job of `count` sleeping processes marked with `marker` (see
/// [`crate::exactly_once`]), restarted at once when they end.
pub fn sleeper(name: &str, count: u32, marker: &str) -> Value {
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
