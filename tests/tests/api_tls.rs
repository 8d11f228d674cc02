//! HTTPS on the API against real agents (docs/security.md, "TLS on the
//! API"): an agent listening beyond loopback speaks HTTPS with a
//! certificate of the cluster's API CA; the CLI talks to it with that CA
//! (`--cacert`), refuses it without, and refuses plain `http://` to another
//! machine; the agent answers plain HTTP from another machine with `400`
//! and what to do, and plain HTTP from loopback as before; agents fetch
//! artifacts from each other over HTTPS (plain HTTP from an
//! `--api-insecure` one); a joining agent prints what a client needs.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use serde_json::Value;
use shoal_tests::packages::shoal;
use shoal_tests::{Cluster, Spec, http_get, wait_until};

/// This machine's address on its default route (nothing is sent), if it
/// has one that is not loopback: plain HTTP from it is "another machine".
fn outside_ip() -> Option<IpAddr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test]
fn the_api_speaks_https_beyond_loopback_and_agents_fetch_from_each_other_over_it() {
    let Some(ip) = outside_ip() else {
        eprintln!("skipped: this machine has no address but loopback");
        return;
    };
    let mut c = Cluster::new();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["--api", "0.0.0.0:0", "--cpus", "1", "--memory-mb", "512"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        a
    };
    c.start(&Spec {
        name: "t0".into(),
        args: args(&[]),
        ..Default::default()
    });
    let token = c.token();
    let join = vec![c.agents[0].info.gossip];
    c.start(&Spec {
        name: "t1".into(),
        args: args(&[]),
        join: join.clone(),
        token: Some(token.clone()),
        ..Default::default()
    });
    c.start(&Spec {
        name: "t2".into(),
        args: args(&["--api-insecure"]),
        join,
        token: Some(token.clone()),
        ..Default::default()
    });
    c.wait_all_alive(3, Duration::from_secs(60));

    let port = |i: usize| c.agents[i].info.api.port();
    let https = |i: usize| format!("https://{ip}:{}", port(i));
    let ca = c.agents[0].dir.join("api-ca.pem");
    let ca_s = ca.display().to_string();

    // A joining agent prints what a client needs; an insecure one says so.
    let printed = |i: usize| c.agents[i].stdout();
    wait_until("t1 and t2 print their API", Duration::from_secs(10), || {
        Ok(printed(1).contains("API at ") && printed(2).contains("API at "))
    });
    let line = printed(1);
    assert!(
        line.contains(&format!("API at https://{ip}:{}", port(1)))
            && line.contains("SHOAL_CACERT=")
            && line.contains("api-ca.pem"),
        "{line}"
    );
    assert!(
        printed(2).contains(&format!("http://{ip}:{}", port(2)))
            && printed(2).contains("SHOAL_INSECURE=1"),
        "{}",
        printed(2)
    );

    // The CLI over HTTPS with the CA of any node (t0's file checks t1).
    let env = |addr: String| {
        vec![
            ("SHOAL_ADDR".to_owned(), addr),
            ("SHOAL_TOKEN".to_owned(), token.clone()),
        ]
    };
    let (ok, out, err) = shoal(&env(https(1)), &["--cacert", &ca_s, "--json", "nodes"]);
    assert!(ok, "{out}{err}");
    let nodes: Value = serde_json::from_str(&out).expect("JSON nodes");
    assert_eq!(nodes.as_array().map(Vec::len), Some(3), "{out}");
    // `host:port` without a scheme is https beyond loopback.
    let (ok, out, err) = shoal(
        &env(format!("{ip}:{}", port(0))),
        &["--cacert", &ca_s, "status"],
    );
    assert!(ok, "{out}{err}");

    // Without the CA: refused, saying what to trust.
    let (ok, out, err) = shoal(&env(https(1)), &["nodes"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("certificate") && err.contains("SHOAL_CACERT"),
        "{err}"
    );
    // A file that is not a certificate: refused, naming it.
    let bogus = c.root.path().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate\n").unwrap();
    let (ok, _, err) = shoal(
        &env(https(1)),
        &["--cacert", bogus.to_str().unwrap(), "nodes"],
    );
    assert!(
        !ok && err.contains("bogus.pem") && err.contains("no certificate"),
        "{err}"
    );

    // Plain HTTP to another machine: the CLI will not send the token…
    let plain = format!("http://{ip}:{}", port(1));
    let (ok, out, err) = shoal(&env(plain.clone()), &["nodes"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("refusing plain HTTP") && err.contains("--cacert"),
        "{err}"
    );
    // …and the agent answers it 400 with what to do, whoever sends it.
    let (status, body) = http_get(&format!("{plain}/v1/health"), None).expect("an answer");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("https_required") && body.contains("--api-insecure"),
        "{body}"
    );
    let (ok, _, err) = shoal(&env(plain), &["--insecure", "nodes"]);
    assert!(!ok && err.contains("speaks HTTPS"), "{err}");
    // Plain HTTP on loopback works as before.
    let (status, body) =
        http_get(&format!("http://127.0.0.1:{}/v1/health", port(1)), None).unwrap();
    assert_eq!(status, 200, "{body}");

    // `--api-insecure`: plain HTTP from anywhere, and no TLS at all.
    let (status, body) = http_get(&format!("http://{ip}:{}/v1/health", port(2)), None).unwrap();
    assert_eq!(status, 200, "{body}");
    let (ok, _, _) = shoal(&env(https(2)), &["--cacert", &ca_s, "nodes"]);
    assert!(!ok, "t2 speaks no TLS");
    let (ok, out, err) = shoal(
        &env(format!("http://{ip}:{}", port(2))),
        &["--insecure", "nodes"],
    );
    assert!(ok, "{out}{err}");

    // An artifact stored on t0 over HTTPS is copied to both others: to t1
    // over HTTPS (checked against the API CA), to t2 in plain HTTP.
    let file = c.root.path().join("payload.bin");
    std::fs::write(&file, b"fetched between agents over https\n".repeat(1000)).unwrap();
    let (ok, out, err) = shoal(
        &env(https(0)),
        &[
            "--cacert",
            &ca_s,
            "--json",
            "artifact",
            "put",
            file.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}{err}");
    let put: Value = serde_json::from_str(&out).expect("JSON answer");
    let hex = put["sha256"].as_str().expect("sha256").to_owned();
    wait_until("copies on t1 and t2", Duration::from_secs(60), || {
        Ok((1..3).all(|i| c.agents[i].dir.join("blobs/sha256").join(&hex).exists()))
    });

    // The API's addresses as the members see them, for the record.
    let addr: SocketAddr = format!("{ip}:{}", port(0)).parse().unwrap();
    let self_view: Value = c.agents[0].get("/v1/self").unwrap();
    assert_eq!(self_view["api"], addr.to_string(), "{self_view}");
}
