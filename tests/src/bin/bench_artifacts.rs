//! Artifact spreading on real agents: one artifact reaching every agent.
//!
//! - peer to peer: the file is stored on `b0` only (`copies = 0`); a
//!   system job whose task names it as `shoal:sha256:…` starts on every
//!   agent; measured: the time from the job's submission until every task
//!   has run (it found the file in its sandbox), and the bytes `b0` served;
//! - baseline: another file of the same size on a plain HTTP server of
//!   this process, named by its `http://` URL; the same job; measured: the
//!   same time, and the bytes the server sent.
//!
//! Each task writes a file when it starts, so that "started" needs no API
//! polling of every agent; tasks are kept running (a system job).
//!
//! ```sh
//! cargo run --release -p shoal-tests --bin bench-artifacts -- --agents 10 --size-mb 500
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};
use shoal_tests::{Cluster, KillMarked, marker, wait_until};

#[derive(Parser, Debug)]
struct Args {
    /// Agents.
    #[arg(long, default_value_t = 10)]
    agents: usize,
    /// Size of the artifact, MiB.
    #[arg(long, default_value_t = 500)]
    size_mb: usize,
}

/// A file of pseudo-random bytes; returns its sha256 (hex).
fn random_file(path: &Path, bytes: usize, seed: u64) -> anyhow::Result<String> {
    let mut f = std::io::BufWriter::new(fs::File::create(path)?);
    let mut x = seed | 1;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for w in chunk.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes()[..w.len()]);
        }
        let n = left.min(chunk.len());
        f.write_all(&chunk[..n])?;
        left -= n;
    }
    f.flush()?;
    drop(f);
    let out = std::process::Command::new("sha256sum").arg(path).output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

/// A plain HTTP/1.1 server of one file (a thread per connection); counts
/// the body bytes it sends.
fn serve_file(path: PathBuf) -> anyhow::Result<(String, Arc<AtomicU64>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let path = path.clone();
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                // The request line and headers; any GET gets the file.
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let Ok(mut f) = fs::File::open(&path) else {
                    return;
                };
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                let mut w = &stream;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
                );
                if w.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let mut buf = vec![0u8; 256 * 1024];
                while let Ok(n) = f.read(&mut buf) {
                    if n == 0 || w.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
    });
    Ok((format!("http://{addr}"), sent))
}

fn system_job(name: &str, artifact: Value, done: &Path, m: &str) -> Value {
    json!({
        "name": name,
        "type": "system",
        "task": {
            "command": "/bin/sh",
            "args": ["-c", format!("test -s payload && touch {}/$SHOAL_NODE && exec sleep 3600", done.display())],
            "env": {"SHOAL_TEST_MARKER": m},
            "resources": {"cpus": 0.05, "memory_mb": 16},
            "artifacts": [artifact],
        }
    })
}

/// Submits `job` and waits until `n` tasks touched their file in `done`.
fn run_until_all(c: &Cluster, job: &Value, done: &Path, n: usize) -> anyhow::Result<Duration> {
    fs::create_dir_all(done)?;
    let started = Instant::now();
    let (status, body) = c.agents[0].post("/v1/jobs", job)?;
    if status != 201 {
        bail!("job refused: {status} {body}");
    }
    wait_until(
        "every agent's task started",
        Duration::from_secs(1800),
        || Ok(fs::read_dir(done)?.count() >= n),
    );
    Ok(started.elapsed())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let n = args.agents;
    let bytes = args.size_mb << 20;
    let m = marker("benchartifacts");
    let _cleanup = KillMarked(m.clone());
    eprintln!("starting {n} agents");
    let c = Cluster::of("b", n, &["--cpus", "2", "--memory-mb", "4096"]);
    let root = c.root.path().to_owned();

    // Peer to peer.
    let file = root.join("p2p.bin");
    let hex = random_file(&file, bytes, 1)?;
    let client = c.agents[0].client().with_timeout(Duration::from_secs(3600));
    let mut f = fs::File::open(&file)?;
    let put: Value = client
        .post_stream("/v1/artifacts?name=p2p.bin&copies=0", &mut f)
        .context("storing the artifact")?;
    eprintln!("stored {}", put["source"]);
    fs::remove_file(&file)?;
    let done = root.join("done-p2p");
    let p2p = run_until_all(
        &c,
        &system_job(
            "p2p",
            json!({"source": format!("shoal:sha256:{hex}"), "dest": "payload"}),
            &done,
            &m,
        ),
        &done,
        n,
    )?;
    let list: Value = c.agents[0].get("/v1/artifacts")?;
    let served = list
        .as_array()
        .and_then(|l| l.iter().find(|a| a["sha256"] == hex.as_str()))
        .map_or(0, |a| a["local"]["served_bytes"].as_u64().unwrap_or(0));
    c.agents[0].delete("/v1/jobs/p2p")?;

    // Baseline: every agent from one HTTP server.
    let file = root.join("http.bin");
    let hex = random_file(&file, bytes, 2)?;
    let (base, sent) = serve_file(file)?;
    let done = root.join("done-http");
    let http = run_until_all(
        &c,
        &system_job(
            "http",
            json!({"source": format!("{base}/http.bin"), "sha256": hex, "dest": "payload"}),
            &done,
            &m,
        ),
        &done,
        n,
    )?;
    let sent = sent.load(Ordering::Relaxed);
    c.agents[0].delete("/v1/jobs/http")?;

    let size = bytes as f64;
    println!("artifact: {} MiB, {n} agents", args.size_mb);
    println!("peer_to_peer_all_started_s {:.1}", p2p.as_secs_f64());
    println!(
        "peer_to_peer_first_holder_read_bytes {served} ({:.2} times the artifact)",
        served as f64 / size
    );
    println!("http_all_started_s {:.1}", http.as_secs_f64());
    println!(
        "http_server_sent_bytes {sent} ({:.2} times the artifact)",
        sent as f64 / size
    );
    Ok(())
}
