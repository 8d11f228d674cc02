//! Spark end to end: the built-in `spark` package (a standalone master and
//! `--workers` workers) installed with the CLI on `--nodes` agents on
//! loopback, its distribution shared as a shoal artifact, then a SparkPi
//! application submitted to it from this host.
//!
//! 1. The distribution is PyPI's `pyspark` sdist (its `deps/` is a Spark
//!    distribution: `bin/`, `jars/`), fetched once with `pip download` into
//!    `--cache` and reused.
//! 2. `shoal artifact put` stores it in the cluster (timed).
//! 3. `shoal package install spark --set distribution=shoal:sha256:…`,
//!    timed until the installation is `healthy` and until the master's
//!    `/json/` lists every worker `ALIVE`.
//! 4. SparkPi: the sdist carries no examples jar, so the bench compiles
//!    `SparkPi.java` (the computation of Spark's JavaSparkPi example)
//!    against the distribution's jars with the host's `javac`, and runs
//!    `spark-submit --master spark://HOST:PORT --class SparkPi` with the
//!    distribution unpacked on this host; its output must contain "Pi is
//!    roughly" (timed).
//! 5. Uninstall, waiting until no process of the installation is left.
//!
//! Needs Java 17 with `javac` and `jar`, `pip`, `dig` (dnsutils), `bash`.
//!
//! ```sh
//! cargo run -p shoal-tests --bin bench-spark -- --cache /tmp/spark-cache
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::Value;
use shoal_tests::{Cluster, KillMarked, marked, marker, run_shoal};

#[derive(Parser, Debug)]
struct Args {
    /// shoal agents.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Spark workers.
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// The pyspark version asked of pip.
    #[arg(long, default_value = "3.5.*")]
    pyspark: String,
    /// Where the pyspark sdist is downloaded and kept between runs.
    #[arg(long, default_value = "target/bench-cache/spark")]
    cache: PathBuf,
    /// SparkPi's slices (its argument).
    #[arg(long, default_value_t = 100)]
    slices: u32,
}

const DEADLINE: Duration = Duration::from_secs(300);

/// Spark's JavaSparkPi example, compiled here because the pyspark sdist
/// does not carry the examples jar.
const SPARK_PI: &str = r#"
import java.util.ArrayList;
import java.util.List;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.sql.SparkSession;

public final class SparkPi {
  public static void main(String[] args) {
    SparkSession spark = SparkSession.builder().appName("SparkPi").getOrCreate();
    JavaSparkContext jsc = new JavaSparkContext(spark.sparkContext());
    int slices = args.length == 1 ? Integer.parseInt(args[0]) : 2;
    int n = 100000 * slices;
    List<Integer> l = new ArrayList<>(n);
    for (int i = 0; i < n; i++) {
      l.add(i);
    }
    JavaRDD<Integer> dataSet = jsc.parallelize(l, slices);
    int count = dataSet.map(integer -> {
      double x = Math.random() * 2 - 1;
      double y = Math.random() * 2 - 1;
      return (x * x + y * y <= 1) ? 1 : 0;
    }).reduce((a, b) -> a + b);
    System.out.println("Pi is roughly " + 4.0 * count / n);
    spark.stop();
  }
}
"#;

/// Runs `cmd`, failing with its output when it fails.
fn run(cmd: &mut Command, what: &str) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {what}: {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The pyspark sdist in `cache`, downloaded when there is none.
fn sdist(cache: &Path, version: &str) -> anyhow::Result<PathBuf> {
    let find = || -> anyhow::Result<Option<PathBuf>> {
        if !cache.exists() {
            return Ok(None);
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(cache)
            .with_context(|| format!("reading {}", cache.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("pyspark-") && n.ends_with(".tar.gz"))
            })
            .collect();
        found.sort();
        Ok(found.pop())
    };
    if let Some(p) = find()? {
        return Ok(p);
    }
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    eprintln!(
        "downloading the pyspark {version} sdist into {}",
        cache.display()
    );
    run(
        Command::new("pip").args([
            "download",
            &format!("pyspark=={version}"),
            "--no-binary",
            ":all:",
            "--no-deps",
            "-d",
            &cache.to_string_lossy(),
        ]),
        "pip download",
    )
    .or_else(|_| {
        run(
            Command::new("python3").args([
                "-m",
                "pip",
                "download",
                &format!("pyspark=={version}"),
                "--no-binary",
                ":all:",
                "--no-deps",
                "-d",
                &cache.to_string_lossy(),
            ]),
            "python3 -m pip download",
        )
    })?;
    find()?.with_context(|| {
        format!(
            "pip left no pyspark-*.tar.gz in {}: download it by hand there",
            cache.display()
        )
    })
}

/// The installation's status, or "" while it does not answer.
fn status(c: &Cluster, instance: &str) -> String {
    match c.agents[0].get_any(&format!("/v1/installations/{instance}")) {
        Ok((200, v)) => v["status"].as_str().unwrap_or_default().to_owned(),
        _ => String::new(),
    }
}

/// (host, spark port, ui port) of the master, once it has an endpoint.
fn master(c: &Cluster, instance: &str) -> Option<(String, u16, u16)> {
    let (code, v) = c.agents[0]
        .get_any(&format!("/v1/services/{instance}%2Fmaster?all=true"))
        .ok()?;
    if code != 200 {
        return None;
    }
    let e = v["endpoints"].as_array()?.first()?.clone();
    let port = |name: &str| {
        e["ports"][name]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
    };
    Some((e["host"].as_str()?.to_owned(), port("spark")?, port("ui")?))
}

/// Workers the master's `/json/` lists as ALIVE.
fn alive_workers(ui: u16) -> usize {
    let Ok((200, body)) = shoal_tests::http_get(&format!("http://127.0.0.1:{ui}/json/"), None)
    else {
        return 0;
    };
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    v["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| w["state"] == "ALIVE")
        .count()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for bin in ["java", "javac", "jar", "dig", "bash"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            bail!(
                "{bin} is missing on this host: apt-get install openjdk-17-jdk-headless dnsutils bash"
            );
        }
    }
    let sdist = sdist(&args.cache, &args.pyspark)?;
    let size = std::fs::metadata(&sdist)?.len();
    eprintln!("distribution: {} ({size} bytes)", sdist.display());

    // The distribution on this host, for spark-submit and to compile SparkPi.
    let work = tempfile::tempdir()?;
    run(
        Command::new("tar")
            .arg("xzf")
            .arg(&sdist)
            .arg("-C")
            .arg(work.path()),
        "unpacking the sdist on this host",
    )?;
    let spark_home = std::fs::read_dir(work.path())?
        .filter_map(Result::ok)
        .map(|e| e.path().join("deps"))
        .find(|d| d.join("bin/spark-submit").exists())
        .context("the sdist has no */deps/bin/spark-submit: is it a pyspark sdist?")?;
    let src = work.path().join("pi");
    std::fs::create_dir_all(src.join("classes"))?;
    std::fs::write(src.join("SparkPi.java"), SPARK_PI)?;
    run(
        Command::new("javac")
            .arg("-cp")
            .arg(spark_home.join("jars/*"))
            .arg("-d")
            .arg(src.join("classes"))
            .arg(src.join("SparkPi.java")),
        "javac SparkPi.java",
    )?;
    let pi_jar = src.join("sparkpi.jar");
    run(
        Command::new("jar")
            .arg("cf")
            .arg(&pi_jar)
            .arg("-C")
            .arg(src.join("classes"))
            .arg("."),
        "jar cf sparkpi.jar",
    )?;

    let m = marker("benchspark");
    let _cleanup = KillMarked(m.clone());
    eprintln!("starting {} agents", args.nodes);
    let c = Cluster::of("s", args.nodes, &["--cpus", "2", "--memory-mb", "4096"]);
    let dns = c.agents[0].info.dns.context("agent 0 serves no DNS")?;
    let addr = c.agents[1].url();
    let token = c.agents[1].token.clone();
    let env = [
        ("SHOAL_ADDR", addr.as_str()),
        ("SHOAL_TOKEN", token.as_str()),
    ];

    let started = Instant::now();
    let (ok, out, err) = run_shoal(&["artifact", "put", &sdist.to_string_lossy()], &env);
    if !ok.success() {
        bail!("shoal artifact put failed: {out}{err}");
    }
    let put = started.elapsed();
    // It prints `source = "shoal:sha256:<hex>"`.
    let source = out
        .find("shoal:sha256:")
        .and_then(|at| out.get(at..at + "shoal:sha256:".len() + 64))
        .with_context(|| format!("shoal artifact put printed no shoal:sha256: source: {out}"))?
        .to_owned();
    println!(
        "artifact put: {:.2} s for {:.1} MB ({source})",
        put.as_secs_f64(),
        size as f64 / 1e6
    );

    let instance = "spark-bench";
    let started = Instant::now();
    let (ok, out, err) = run_shoal(
        &[
            "package",
            "install",
            "spark",
            "--instance",
            instance,
            "--set",
            &format!("distribution={source}"),
            "--set",
            &format!("workers={}", args.workers),
            "--set",
            &format!("dns={dns}"),
            "--set",
            &format!("env.SHOAL_TEST_MARKER={m}"),
        ],
        &env,
    );
    if !ok.success() {
        bail!("shoal package install spark failed: {out}{err}");
    }
    eprintln!("{out}");
    let (mut healthy, mut registered, mut at) = (None, None, None);
    while healthy.is_none() || registered.is_none() {
        if started.elapsed() > DEADLINE {
            let (_, ps, _) = run_shoal(&["ps"], &env);
            bail!(
                "{instance}: not healthy with {} workers ALIVE within {DEADLINE:?} (status {:?}, master {at:?}); tasks:\n{ps}",
                args.workers,
                status(&c, instance)
            );
        }
        if healthy.is_none() && status(&c, instance) == "healthy" {
            healthy = Some(started.elapsed());
        }
        if at.is_none() {
            at = master(&c, instance);
        }
        if registered.is_none()
            && let Some((_, _, ui)) = at
            && alive_workers(ui) == args.workers as usize
        {
            registered = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (Some(healthy), Some(registered), Some((host, port, _))) = (healthy, registered, at) else {
        unreachable!("the loop ends with all three");
    };
    println!(
        "spark, 1 master + {} workers on {} agents: install -> healthy {:.2} s, -> {} workers ALIVE at the master {:.2} s",
        args.workers,
        args.nodes,
        healthy.as_secs_f64(),
        args.workers,
        registered.as_secs_f64()
    );
    // How the distribution spread: what each agent served of it.
    let hex = source.trim_start_matches("shoal:sha256:");
    for (i, a) in c.agents.iter().enumerate() {
        let list: Value = a.get("/v1/artifacts")?;
        let entry = list
            .as_array()
            .and_then(|l| l.iter().find(|x| x["sha256"] == hex))
            .cloned()
            .unwrap_or_default();
        println!(
            "agent {i}: holds it {}, served {} bytes ({:.2} times the artifact)",
            entry["local"]["present"],
            entry["local"]["served_bytes"],
            entry["local"]["served_bytes"].as_u64().unwrap_or(0) as f64 / size as f64
        );
    }

    let started = Instant::now();
    let mut child = Command::new(spark_home.join("bin/spark-submit"))
        .env("SPARK_HOME", &spark_home)
        .env("SHOAL_TEST_MARKER", &m)
        .args([
            "--master",
            &format!("spark://{host}:{port}"),
            "--conf",
            "spark.driver.host=127.0.0.1",
            "--executor-memory",
            "512m",
            "--class",
            "SparkPi",
        ])
        .arg(&pi_jar)
        .arg(args.slices.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting spark-submit")?;
    let mut stdout = child.stdout.take().context("spark-submit's stdout")?;
    let mut stderr = child.stderr.take().context("spark-submit's stderr")?;
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let exit = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = started.elapsed();
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    let line = out.lines().find(|l| l.contains("Pi is roughly"));
    match (exit, line) {
        (Some(s), Some(line)) if s.success() => println!(
            "SparkPi ({} slices) on {} workers: {:.2} s, printed \"{line}\"",
            args.slices,
            args.workers,
            took.as_secs_f64()
        ),
        _ => bail!(
            "spark-submit SparkPi did not print \"Pi is roughly\" (exit {exit:?} after {took:?}):\n{out}\n{}",
            err.lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }

    let (ok, out, err) = run_shoal(&["package", "uninstall", instance], &env);
    if !ok.success() {
        bail!("shoal package uninstall failed: {out}{err}");
    }
    let gone = Instant::now();
    while !marked(&m).is_empty() {
        if gone.elapsed() > DEADLINE {
            bail!(
                "processes of {instance} still run {DEADLINE:?} after the uninstall: {:?}",
                marked(&m)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "uninstall: every process of {instance} gone in {:.2} s",
        gone.elapsed().as_secs_f64()
    );
    Ok(())
}
