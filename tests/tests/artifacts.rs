//! Artifacts with real agents: a file stored with `shoal artifact put` on
//! one node is copied to others and fetched by a task on another node
//! (checked byte for byte by the task itself); a `.tar.gz` is unpacked into
//! the sandbox; a digest that does not match is refused, for an upload and
//! for a task's artifact (the task fails naming it); a removed artifact's
//! copies are collected.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_tests::{Cluster, KillMarked, marker, run_shoal, wait_until};

const SETTLE: Duration = Duration::from_secs(90);

fn sha256_hex(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A file of `n` pseudo-random bytes.
fn random_file(path: &Path, n: usize, seed: u64) {
    let mut x = seed | 1;
    let mut buf = Vec::with_capacity(n);
    while buf.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf.extend_from_slice(&x.to_le_bytes());
    }
    buf.truncate(n);
    fs::File::create(path).unwrap().write_all(&buf).unwrap();
}

fn blob(c: &Cluster, agent: usize, hex: &str) -> std::path::PathBuf {
    c.agents[agent].dir.join("blobs/sha256").join(hex)
}

fn task_reason(c: &Cluster, job: &str) -> String {
    c.tasks(0, job)
        .iter()
        .filter_map(|t| t["reason"].as_str().map(str::to_owned))
        .collect::<Vec<_>>()
        .join("; ")
}

#[test]
fn artifacts_are_shared_checked_unpacked_and_collected() {
    let m = marker("artifacts");
    let _cleanup = KillMarked(m.clone());
    let c = Cluster::of(
        "a",
        3,
        &[
            "--cpus",
            "2",
            "--memory-mb",
            "1024",
            "--artifact-gc-after",
            "1s",
        ],
    );
    let root = c.root.path().to_owned();
    let data = root.join("data.bin");
    random_file(&data, 3 * 1024 * 1024 + 17, 42);
    let hex = sha256_hex(&data);

    // A digest that does not match: refused, naming what, nothing kept.
    let token = c.token();
    let url = c.agents[0].url();
    let env = [
        ("SHOAL_ADDR", url.as_str()),
        ("SHOAL_TOKEN", token.as_str()),
    ];
    let wrong = "0".repeat(64);
    let (status, out, err) = run_shoal(
        &[
            "artifact",
            "put",
            data.to_str().unwrap(),
            "--sha256",
            &wrong,
        ],
        &env,
    );
    assert!(!status.success(), "{out}{err}");
    assert!(
        err.contains("sha256 mismatch") && err.contains("data.bin") && err.contains(&wrong),
        "{err}"
    );
    assert!(!blob(&c, 0, &hex).exists(), "nothing kept");
    let left: Vec<_> = fs::read_dir(c.agents[0].dir.join("blobs/sha256"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "no partial file left: {left:?}");

    // Stored on a0, copied to the two others.
    let (status, out, err) = run_shoal(
        &[
            "--json",
            "artifact",
            "put",
            data.to_str().unwrap(),
            "--name",
            "data",
        ],
        &env,
    );
    assert!(status.success(), "{out}{err}");
    let put: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(put["sha256"], hex);
    assert_eq!(put["source"], format!("shoal:sha256:{hex}"));
    assert_eq!(put["holders"].as_array().unwrap().len(), 3);
    wait_until("both copies made", SETTLE, || {
        Ok((0..3).all(|i| blob(&c, i, &hex).is_file()))
    });
    let (status, out, _) = run_shoal(
        &["--json", "artifact", "list"],
        &[
            ("SHOAL_ADDR", c.agents[2].url().as_str()),
            ("SHOAL_TOKEN", token.as_str()),
        ],
    );
    assert!(status.success());
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["name"], "data");
    assert_eq!(list[0]["local"]["present"], true);

    // A tar.gz on the running node's disk, unpacked into the sandbox.
    let tree = root.join("tree");
    fs::create_dir_all(tree.join("bin")).unwrap();
    fs::write(tree.join("bin/hello.txt"), "hello from the archive\n").unwrap();
    let tgz = root.join("tree.tgz");
    let ok = std::process::Command::new("tar")
        .arg("czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&tree)
        .arg(".")
        .status()
        .unwrap();
    assert!(ok.success());
    let tgz_hex = sha256_hex(&tgz);

    // A task on another node than a0 reads both.
    let result = root.join("result");
    let job = json!({
        "name": "reader",
        "type": "batch",
        "task": {
            "command": "/bin/sh",
            "args": ["-c", format!(
                "cmp data.bin {} && cat dist/bin/hello.txt > {}",
                data.display(), result.display()
            )],
            "env": {"SHOAL_TEST_MARKER": m},
            "resources": {"cpus": 0.25, "memory_mb": 32},
            "artifacts": [
                {"source": format!("shoal:sha256:{hex}"), "dest": "data.bin"},
                {"source": format!("file://{}", tgz.display()), "sha256": tgz_hex, "extract": true, "dest": "dist"},
            ]
        },
        "constraints": [{"attribute": "name", "op": "!=", "value": "a0"}]
    });
    let (status, body) = c.agents[1].post("/v1/jobs", &job).unwrap();
    assert_eq!(status, 201, "{body}");
    wait_until("the task read the artifacts", SETTLE, || {
        Ok(fs::read_to_string(&result).unwrap_or_default() == "hello from the archive\n")
    });

    // A task artifact whose digest does not match: the task fails, naming it.
    let bad = json!({
        "name": "badsum",
        "type": "batch",
        "task": {
            "command": "/bin/true",
            "env": {"SHOAL_TEST_MARKER": m},
            "resources": {"cpus": 0.25, "memory_mb": 32},
            "artifacts": [{"source": format!("file://{}", tgz.display()), "sha256": wrong}]
        },
        "restart": {"mode": "never"}
    });
    let (status, body) = c.agents[0].post("/v1/jobs", &bad).unwrap();
    assert_eq!(status, 201, "{body}");
    wait_until("the bad artifact fails its task", SETTLE, || {
        let r = task_reason(&c, "badsum");
        Ok(r.contains("task.artifacts[0]") && r.contains("sha256 mismatch"))
    });
    let r = task_reason(&c, "badsum");
    assert!(r.contains(&wrong) && r.contains("tree.tgz"), "{r}");
    for i in 0..3 {
        assert!(!blob(&c, i, &wrong).exists());
    }

    // Removed, and no job names it any more: every copy is collected.
    for job in ["reader", "badsum"] {
        let (status, body) = c.agents[0].delete(&format!("/v1/jobs/{job}")).unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let (status, out, err) = run_shoal(&["--json", "artifact", "rm", &hex], &env);
    assert!(status.success(), "{out}{err}");
    wait_until("every copy collected", SETTLE, || {
        Ok((0..3).all(|i| !blob(&c, i, &hex).exists() && !blob(&c, i, &tgz_hex).exists()))
    });
    let (code, v) = c.agents[1].get_any("/v1/artifacts").unwrap();
    assert_eq!(code, 200);
    assert_eq!(v, json!([]));
}
