//! The built-in `dask` package on 3 real agents: a scheduler and 2 workers
//! that find it through shoal DNS; a client computes on the cluster and
//! the scheduler reports 2 workers. Needs Python with `dask[distributed]`
//! (`.ci/run` installs it with pip) and `dnsutils`; skips without them.

#![allow(clippy::print_stderr)]

use std::process::Command;
use std::time::Duration;

use shoal_tests::packages::{cli_env, install_healthy, missing, wait_endpoints};
use shoal_tests::{Cluster, wait_until};

const SETTLE: Duration = Duration::from_secs(120);

/// The Python that has `distributed`, as a path (the agents' PATH may not
/// lead to the same one).
fn python_with_distributed() -> Option<String> {
    let out = Command::new("python3")
        .args(["-c", "import distributed, sys; print(sys.executable)"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn dask_scheduler_and_two_workers_compute() {
    if let Some(bin) = missing(&["dig"]) {
        eprintln!("skipped: needs {bin} (Debian dnsutils)");
        return;
    }
    let Some(python) = python_with_distributed() else {
        eprintln!(
            "skipped: needs python3 with dask[distributed] (pip install 'dask[distributed]')"
        );
        return;
    };
    let c = Cluster::of("da", 3, &["--cpus", "2", "--memory-mb", "2048"]);
    let dns = c.agents[0].info.dns.expect("agent 0 serves DNS");
    let env = cli_env(&c, 1);
    install_healthy(
        &env,
        "dask",
        "d1",
        &[
            format!("dns={dns}"),
            format!("python={python}"),
            "workers=2".into(),
            "worker_cpus=0.5".into(),
            "worker_memory_mb=512".into(),
        ],
        SETTLE,
    );
    let scheduler = wait_endpoints(&c, "d1/scheduler", "scheduler", 1, SETTLE);
    let address = format!("tcp://127.0.0.1:{}", scheduler[0].2);
    let script = "import sys\n\
        from distributed import Client\n\
        c = Client(sys.argv[1], timeout=10)\n\
        c.wait_for_workers(2, timeout=30)\n\
        total = c.submit(sum, c.map(lambda x: x * x, range(100))).result()\n\
        print(total, len(c.scheduler_info()['workers']))\n";
    wait_until("a sum computed on 2 workers", SETTLE, || {
        let out = Command::new(&python)
            .args(["-c", script, &address])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(text.trim() == "328350 2")
    });
}
