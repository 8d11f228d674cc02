//! The built-in `etcd` and `zookeeper` packages on the same 3 real agents,
//! installed side by side. Their members need each other's addresses at
//! start and the nodes give them their ports, so each waits until all 3
//! are in shoal DNS (see the packages' templates). etcd: `etcdctl endpoint
//! health` passes on all 3 members, and a key put through one is read
//! through another. ZooKeeper: `srvr` on the 3 servers shows one leader and
//! two followers. Needs Debian's `etcd-server`, `etcd-client`, `zookeeper`
//! (`zookeeperd`), Java and `dnsutils` (`.ci/run` installs them); each half
//! skips without its own.

#![allow(clippy::print_stderr)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use shoal_tests::packages::{
    cli_env, install, install_healthy, missing, shoal, wait_endpoints, wait_healthy,
};
use shoal_tests::{Cluster, wait_until};

const SETTLE: Duration = Duration::from_secs(150);

fn etcdctl(endpoints: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoints, "--command-timeout", "5s"])
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `endpoint health` reports on stderr.
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// A ZooKeeper four-letter word's answer.
fn four_letters(port: u16, word: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(word.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn mode(srvr: &str) -> Option<&str> {
    srvr.lines()
        .find_map(|l| l.strip_prefix("Mode: "))
        .map(str::trim)
}

#[test]
fn etcd_and_zookeeper_ensembles_of_three_bootstrap_through_dns() {
    let etcd = missing(&["/usr/bin/etcd", "etcdctl", "dig"]);
    let zk = missing(&["java", "/usr/share/java/zookeeper.jar", "dig", "curl"]);
    if let Some(bin) = etcd {
        eprintln!("skipping etcd: needs {bin} (Debian etcd-server, etcd-client, dnsutils)");
    }
    if let Some(bin) = zk {
        eprintln!("skipping zookeeper: needs {bin} (Debian zookeeperd, dnsutils, curl)");
    }
    if etcd.is_some() && zk.is_some() {
        return;
    }
    let c = Cluster::of("co", 3, &["--cpus", "2", "--memory-mb", "2048"]);
    let dns = c.agents[0].info.dns.expect("agent 0 serves DNS");
    let env = cli_env(&c, 1);
    // Both installed first, then waited for: they bootstrap at once.
    if etcd.is_none() {
        install(
            &env,
            "etcd",
            "e1",
            &[
                "memory_mb=256".into(),
                "cpus=0.25".into(),
                format!("dns={dns}"),
            ],
        );
    }
    if zk.is_none() {
        install_healthy(
            &env,
            "zookeeper",
            "z1",
            &[
                "memory_mb=512".into(),
                "heap_mb=192".into(),
                "cpus=0.25".into(),
                format!("dns={dns}"),
            ],
            SETTLE,
        );
        // Healthy includes "waiting for the others" (see the template):
        // the ensemble serves once it has elected a leader.
        let ports: Vec<u16> = (1..=3)
            .map(|i| wait_endpoints(&c, &format!("z1/server-{i}"), "client", 1, SETTLE)[0].2)
            .collect();
        wait_until("one leader and two followers", SETTLE, || {
            let mut modes = Vec::new();
            for p in &ports {
                let srvr = four_letters(*p, "srvr")?;
                modes.push(mode(&srvr).unwrap_or("?").to_owned());
            }
            modes.sort();
            anyhow::ensure!(
                modes
                    .iter()
                    .all(|m| m == "leader" || m == "follower" || m == "?"),
                "{modes:?}"
            );
            Ok(modes == ["follower", "follower", "leader"])
        });
    }
    if etcd.is_none() {
        wait_healthy(&env, "e1", SETTLE);
        let members = wait_endpoints(&c, "e1/members", "client", 3, SETTLE);
        let urls: Vec<String> = members
            .iter()
            .map(|(_, h, p)| format!("http://{h}:{p}"))
            .collect();
        wait_until("etcdctl endpoint health on the 3 members", SETTLE, || {
            let health = etcdctl(&urls.join(","), &["endpoint", "health"])?;
            Ok(health.matches("is healthy").count() == 3)
        });
        etcdctl(&urls[0], &["put", "greeting", "hello"]).unwrap();
        wait_until("the key read through another member", SETTLE, || {
            Ok(
                etcdctl(&urls[2], &["get", "greeting", "--print-value-only"])?
                    .lines()
                    .any(|l| l == "hello"),
            )
        });
        let list = etcdctl(&urls[1], &["member", "list"]).unwrap();
        assert_eq!(list.matches("started").count(), 3, "{list}");
    }
    for i in ["e1", "z1"] {
        let _ = shoal(&env, &["package", "uninstall", i]);
    }
}
