//! Web UI benchmark:
//!
//! - **page weight**: every file of the UI (`node/ui/`, what the agent
//!   embeds and serves), raw and gzip-compressed (level 9), in KB;
//! - **first render**: `--jobs` jobs submitted to one agent, then the time
//!   from navigation start to the overview fully drawn (the pool, the node
//!   states and the job counts on screen) in headless chromium, over
//!   `--runs` loads; and the same for the jobs view (its first page).
//!
//! ```sh
//! cargo run --release -p shoal-tests --bin bench-ui -- --jobs 10000 --runs 5
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::json;
use shoal_tests::Cluster;
use shoal_tests::browser::Browser;

#[derive(Parser, Debug)]
struct Args {
    /// Jobs in the cluster before the page is loaded.
    #[arg(long, default_value_t = 10_000)]
    jobs: usize,
    /// Page loads timed per view.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

fn weight() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../node/ui");
    let mut files = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).with_context(|| dir.display().to_string())? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    let (mut raw, mut gz) = (0usize, 0usize);
    for f in &files {
        let bytes = std::fs::read(f)?;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&bytes)?;
        let z = enc.finish()?.len();
        println!(
            "  {:<24} {:>6.1} KB  {:>5.1} KB gzip",
            f.strip_prefix(&root)?.display(),
            bytes.len() as f64 / 1024.0,
            z as f64 / 1024.0
        );
        raw += bytes.len();
        gz += z;
    }
    println!(
        "page weight: {} files, {:.1} KB, {:.1} KB gzip",
        files.len(),
        raw as f64 / 1024.0,
        gz as f64 / 1024.0
    );
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Loads `hash` `runs` times; the page's own clock when `ready` (a JS
/// expression) first holds, polled every 5 ms.
fn time_view(
    b: &Browser,
    url: &str,
    hash: &str,
    ready: &str,
    runs: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    for _ in 0..runs {
        b.goto("about:blank")?;
        b.goto(&format!("{url}/ui/{hash}"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = b.eval(
                &format!("return ({ready}) ? performance.now() : null;"),
                vec![],
            )?;
            if let Some(ms) = v.as_f64() {
                out.push(ms);
                break;
            }
            if Instant::now() > deadline {
                bail!("{hash} not drawn within 60 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    weight()?;
    let Some(b) = Browser::start()? else {
        bail!("chromium and chromedriver are needed: apt-get install chromium chromium-driver");
    };
    let c = Cluster::of("u", 1, &[]);
    let a = &c.agents[0];
    let started = Instant::now();
    for i in 0..args.jobs {
        // Not placed (count 0): the cluster holds the jobs, nothing runs.
        let (status, body) = a.post(
            "/v1/jobs",
            &json!({"name": format!("bench/job-{i:05}"), "count": 0, "task": {"command": "/bin/true"}}),
        )?;
        if status >= 300 {
            bail!("job {i}: {status} {body}");
        }
        if (i + 1) % 1000 == 0 {
            eprintln!(
                "{} jobs submitted ({:.0} s)",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    // The session stores the token for later loads of the same origin.
    b.goto(&format!("{}/ui/#token={}", a.url(), a.token))?;
    b.wait_text("#served", "served by", Duration::from_secs(30))?;
    let overview = time_view(
        &b,
        &a.url(),
        "#/",
        &format!(
            "document.querySelector('#pool h2') && document.querySelector('#states b') && document.querySelector('#jobs-h') && document.querySelector('#view').innerText.includes('{}')",
            args.jobs
        ),
        args.runs,
    )?;
    let jobs = time_view(
        &b,
        &a.url(),
        "#/jobs",
        "document.querySelector('.pager span') && document.querySelector('.pager span').innerText.includes('of ')",
        args.runs,
    )?;
    println!(
        "first render with {} jobs: overview {:.0} ms median (runs {:?}), jobs view {:.0} ms median (runs {:?})",
        args.jobs,
        median(overview.clone()),
        overview.iter().map(|x| x.round()).collect::<Vec<_>>(),
        median(jobs.clone()),
        jobs.iter().map(|x| x.round()).collect::<Vec<_>>()
    );
    Ok(())
}
