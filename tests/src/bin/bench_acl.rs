//! ACL benchmark on real agents.
//!
//! - revocation: with N agents, a token made through node 0 and accepted
//!   everywhere is revoked through node 0; one thread per node asks
//!   `GET /v1/acl/token/self` with it every 5 ms until that node answers
//!   401; the slowest node's time, per run, median and max over `--runs`;
//! - the token check on the hot path: `wrk` (`apt-get install wrk`) on
//!   loopback against `GET /v1/self` of one agent, with no authentication
//!   (`--dev`), with the cluster token (before the bootstrap) and with an
//!   ACL token (after it): requests per second and latency; the last
//!   over HTTPS too, with connections kept alive and with a handshake per
//!   request.
//!
//! ```sh
//! cargo run --release -p shoal-tests --bin bench-acl -- --nodes 50 --runs 5
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};
use shoal_tests::{AgentProc, Spec, http_send};

#[derive(Parser, Debug)]
struct Args {
    /// Cluster size for the revocation measurement.
    #[arg(long, default_value_t = 50)]
    nodes: usize,
    /// Revocations to time.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Seconds of each wrk run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// wrk connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Skip parts: revocation, hotpath.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
}

fn call(
    a: &AgentProc,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let (s, text) = http_send(method, &format!("{}{path}", a.url()), Some(token), body)?;
    Ok((s, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

fn bootstrap(a: &AgentProc) -> anyhow::Result<String> {
    let (s, made) = call(a, "POST", "/v1/acl/bootstrap", &a.token, None)?;
    if s != 201 {
        bail!("bootstrap: {s} {made}");
    }
    Ok(made["token"].as_str().context("a token")?.to_owned())
}

fn make_token(a: &AgentProc, mgmt: &str, name: &str) -> anyhow::Result<(String, String)> {
    let (s, made) = call(
        a,
        "POST",
        "/v1/acl/tokens",
        mgmt,
        Some(&json!({"name": name, "policies": ["readonly"]})),
    )?;
    if s != 201 {
        bail!("token create: {s} {made}");
    }
    Ok((
        made["token"].as_str().context("a token")?.to_owned(),
        made["accessor"].as_str().context("an accessor")?.to_owned(),
    ))
}

fn status(a: &AgentProc, token: &str) -> u16 {
    call(a, "GET", "/v1/acl/token/self", token, None).map_or(0, |(s, _)| s)
}

fn revocation(args: &Args) -> anyhow::Result<()> {
    let root = tempfile::Builder::new()
        .prefix("shoal-bench-acl-")
        .tempdir()?;
    let started = Instant::now();
    let agents = shoal_tests::bench_cluster(root.path(), args.nodes)?;
    eprintln!("{} agents alive in {:.1?}", args.nodes, started.elapsed());
    let mgmt = bootstrap(&agents[0])?;
    let mut times = Vec::new();
    for run in 0..args.runs {
        let (token, accessor) = make_token(&agents[0], &mgmt, &format!("bench-{run}"))?;
        // Known everywhere first.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !agents.iter().all(|a| status(a, &token) == 200) {
            if Instant::now() > deadline {
                bail!("the token did not reach every node in 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let start = Instant::now();
        let (s, body) = call(
            &agents[0],
            "DELETE",
            &format!("/v1/acl/tokens/{accessor}"),
            &mgmt,
            None,
        )?;
        if s != 200 {
            bail!("revoke: {s} {body}");
        }
        let slowest = std::thread::scope(|scope| {
            let handles: Vec<_> = agents
                .iter()
                .map(|a| {
                    let token = &token;
                    scope.spawn(move || {
                        while status(a, token) != 401 {
                            if start.elapsed() > Duration::from_secs(60) {
                                return None;
                            }
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Some(start.elapsed())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a poller"))
                .collect::<Option<Vec<Duration>>>()
                .and_then(|v| v.into_iter().max())
        });
        let slowest = slowest.context("a node still took the revoked token after 60 s")?;
        eprintln!("run {run}: refused everywhere after {slowest:.1?}");
        times.push(slowest.as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "| revocation refused on every node | {} agents, `lan` preset, {} runs | median {:.0} ms, max {:.0} ms |",
        args.nodes,
        args.runs,
        times[times.len() / 2],
        times[times.len() - 1]
    );
    Ok(())
}

/// `wrk` against `url` with `token`: requests/s and the latency line.
fn wrk(
    args: &Args,
    url: &str,
    token: Option<&str>,
    headers: &[&str],
) -> anyhow::Result<(f64, String)> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t2",
        &format!("-c{}", args.connections),
        &format!("-d{}s", args.seconds),
        "--latency",
    ]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(url)
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || text.contains("Non-2xx") {
        bail!("wrk {url}: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no Requests/sec in wrk's output")?;
    let p99 = text
        .lines()
        .find(|l| l.trim_start().starts_with("99%"))
        .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_owned())
        .unwrap_or_default();
    Ok((rps, p99))
}

fn hotpath(args: &Args) -> anyhow::Result<()> {
    let root = tempfile::Builder::new()
        .prefix("shoal-bench-acl-")
        .tempdir()?;
    let mut dev = Spec::named("dev");
    dev.args.push("--dev".into());
    let dev = AgentProc::start(root.path(), &dev)?;
    let url = format!("{}/v1/self", dev.url());
    let (rps, p99) = wrk(args, &url, None, &[])?;
    println!(
        "| `GET /v1/self`, no authentication (`--dev`) | wrk, {} connections, {} s | {rps:.0} req/s, p99 {p99} |",
        args.connections, args.seconds
    );
    drop(dev);
    let a = AgentProc::start(root.path(), &Spec::named("acl"))?;
    let url = format!("{}/v1/self", a.url());
    let (rps, p99) = wrk(args, &url, Some(&a.token), &[])?;
    println!(
        "| `GET /v1/self`, cluster token (no ACLs) | wrk, {} connections, {} s | {rps:.0} req/s, p99 {p99} |",
        args.connections, args.seconds
    );
    let mgmt = bootstrap(&a)?;
    let (token, _) = make_token(&a, &mgmt, "bench")?;
    let (rps, p99) = wrk(args, &url, Some(&token), &[])?;
    println!(
        "| `GET /v1/self`, ACL token (readonly) | wrk, {} connections, {} s | {rps:.0} req/s, p99 {p99} |",
        args.connections, args.seconds
    );
    // The same over HTTPS (TLS 1.3, ECDSA P-256): connections kept alive,
    // then a new connection (and handshake) for every request.
    let tls_url = format!("https://{}/v1/self", a.info.api);
    let (rps, p99) = wrk(args, &tls_url, Some(&token), &[])?;
    println!(
        "| `GET /v1/self`, ACL token, HTTPS kept alive | wrk, {} connections, {} s | {rps:.0} req/s, p99 {p99} |",
        args.connections, args.seconds
    );
    let (rps, p99) = wrk(args, &tls_url, Some(&token), &["Connection: close"])?;
    println!(
        "| `GET /v1/self`, ACL token, HTTPS, a handshake per request | wrk, {} connections, {} s | {rps:.0} req/s, p99 {p99} |",
        args.connections, args.seconds
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    shoal_tests::shoal_bin();
    println!("| measure | setup | result |");
    println!("|---|---|---|");
    let skip = |s: &str| args.skip.iter().any(|x| x == s);
    if !skip("hotpath") {
        hotpath(&args)?;
    }
    if !skip("revocation") {
        revocation(&args)?;
    }
    Ok(())
}
