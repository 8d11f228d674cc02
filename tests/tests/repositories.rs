//! Package repositories with real agents on loopback, through the CLI:
//! a `dir:` repository added on one node installs from another (two
//! versions, two instances side by side, uninstall of one leaving the
//! other, an upgrade `--plan` that keeps the user's options, a rollback);
//! an HTTP repository whose archive does not match its index's sha256 is
//! refused with nothing written, and a second node installing from it
//! takes the archive from the first one's cache; a package's one-shot setup job waits
//! (`after`) for its server to be ready, then runs once; a trigger's
//! `[install]` action installs an instance, then upgrades it when the
//! trigger's options change, and does nothing when they do not.
//!
//! Every task carries a marker unique to the test (`SHOAL_TEST_MARKER`),
//! so that the test kills what is left of them.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use shoal_tests::{Cluster, KillMarked, marker, run_shoal, wait_until};

const SETTLE: Duration = Duration::from_secs(60);

/// Writes package `hello` at `version` into `dir`: a server (`workers`
/// sleeping processes) and a one-shot setup job that runs after it.
fn hello(dir: &Path, version: &str, marker: &str) {
    std::fs::create_dir_all(dir.join("jobs")).unwrap();
    std::fs::write(
        dir.join("package.toml"),
        format!(
            "name = \"hello\"\nversion = \"{version}\"\ndescription = \"A test package: sleeping servers and a setup job.\"\ntags = [\"test\"]\n[notes]\nuninstall = \"{{{{ instance }}}} {{{{ package.version }}}}: nothing is kept\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("options.schema.json"),
        format!(
            r#"{{"type": "object", "additionalProperties": false, "properties": {{
  "workers": {{"type": "integer", "minimum": 1, "default": 1, "description": "Servers."}},
  "greeting": {{"type": "string", "default": "hello {version}", "description": "What they say."}},
  "marker": {{"type": "string", "default": "{marker}", "description": "Test marker."}}
}}}}"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("jobs/server.toml.j2"),
        r#"name = {{ instance ~ "/server" }}
count = {{ options.workers }}

[task]
command = "/bin/sleep"
args = ["3600"]

[task.env]
GREETING = {{ options.greeting }}
SHOAL_TEST_MARKER = {{ options.marker }}

[task.resources]
cpus = 0.05
memory_mb = 16
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("jobs/setup.toml.j2"),
        r#"name = {{ instance ~ "/setup" }}
type = "batch"
after = ["server"]

[task]
command = "/bin/sh"
args = ["-c", "echo set up $GREETING"]

[task.env]
GREETING = {{ options.greeting }}
SHOAL_TEST_MARKER = {{ options.marker }}

[task.resources]
cpus = 0.05
memory_mb = 16
"#,
    )
    .unwrap();
}

fn shoal(c: &Cluster, via: usize, args: &[&str]) -> (bool, String, String) {
    let addr = c.agents[via].url();
    let token = c.agents[via].token.clone();
    let (status, out, err) = run_shoal(
        args,
        &[
            ("SHOAL_ADDR", addr.as_str()),
            ("SHOAL_TOKEN", token.as_str()),
        ],
    );
    (status.success(), out, err)
}

fn shoal_json(c: &Cluster, via: usize, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (ok, out, err) = shoal(c, via, &all);
    assert!(ok, "shoal {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn installation(c: &Cluster, via: usize, instance: &str) -> anyhow::Result<Value> {
    let (code, body) = c.agents[via].get_any(&format!("/v1/installations/{instance}"))?;
    anyhow::ensure!(code == 200, "{code} {body}");
    Ok(body)
}

fn job_names(c: &Cluster, via: usize) -> Vec<String> {
    let jobs: Vec<Value> = c.agents[via].get("/v1/jobs").unwrap();
    jobs.iter()
        .map(|j| j["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_dir_repository_on_one_node_installs_from_another() {
    let m = marker("repo");
    let _cleanup = KillMarked(m.clone());
    let c = Cluster::of("r", 2, &["--cpus", "2", "--memory-mb", "1024"]);
    let dir = tempfile::tempdir().unwrap();
    hello(&dir.path().join("hello-1.0"), "1.0.0", &m);
    hello(&dir.path().join("hello-1.1"), "1.1.0", &m);
    let url = format!("dir:{}", dir.path().display());

    // Added through agent 0, whose disk holds the directory.
    let (ok, out, err) = shoal(&c, 0, &["package", "repo", "add", "team", &url]);
    assert!(ok, "{err}");
    assert!(out.contains("added repository team"), "{out}");
    // A second one of the same name, a relative path, the built-in name:
    // refused naming the problem.
    let (ok, _, err) = shoal(&c, 0, &["package", "repo", "add", "team", &url]);
    assert!(!ok && err.contains("exists"), "{err}");
    let (ok, _, err) = shoal(&c, 0, &["package", "repo", "add", "x", "dir:relative"]);
    assert!(!ok && err.contains("absolute path"), "{err}");
    let (ok, _, err) = shoal(&c, 0, &["package", "repo", "add", "builtin", &url]);
    assert!(!ok && err.contains("built into"), "{err}");

    // Agent 1 sees it (replicated), the built-in library last.
    wait_until("the repository replicated", SETTLE, || {
        let list = shoal_json(&c, 1, &["package", "repo", "list"]);
        let names: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        Ok(names == ["team", "builtin"])
    });
    let versions = shoal_json(&c, 1, &["package", "versions", "hello"]);
    let listed: Vec<&str> = versions
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["version"].as_str())
        .collect();
    assert_eq!(listed.len(), 2, "{versions}");
    assert!(listed.contains(&"1.0.0") && listed.contains(&"1.1.0"));
    let found = shoal_json(&c, 1, &["package", "search", "sleeping"]);
    assert_eq!(found[0]["name"], "hello", "{found}");
    assert_eq!(found[0]["repository"], "team", "{found}");

    // Installed through agent 1, from agent 0's directory: an old
    // version with the user's option, and the newest as another instance.
    let h1 = shoal_json(
        &c,
        1,
        &[
            "package",
            "install",
            "hello",
            "--version",
            "1.0.0",
            "--instance",
            "h1",
            "--set",
            "workers=2",
        ],
    );
    assert_eq!(h1["repository"], "team", "{h1}");
    assert_eq!(h1["version"], "1.0.0", "{h1}");
    let h2 = shoal_json(&c, 1, &["package", "install", "hello", "--instance", "h2"]);
    assert_eq!(h2["version"], "1.1.0", "the highest version: {h2}");
    for instance in ["h1", "h2"] {
        wait_until(&format!("{instance} healthy"), SETTLE, || {
            Ok(installation(&c, 0, instance)?["status"] == "healthy")
        });
    }
    // The setup job waited for the server, then ran once.
    let (_, setup) = c.agents[0].get_any("/v1/jobs/h1%2Fsetup").unwrap();
    assert_eq!(setup["status"], "complete", "{setup}");
    assert!(setup.get("waiting_for").is_none(), "{setup}");

    // Uninstalling h2 leaves h1 untouched.
    let gone = shoal_json(&c, 1, &["package", "uninstall", "h2"]);
    assert_eq!(gone["notes"], "h2 1.1.0: nothing is kept", "{gone}");
    let names = job_names(&c, 0);
    assert!(names.contains(&"h1/server".to_owned()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("h2/")), "{names:?}");
    assert_eq!(installation(&c, 0, "h1").unwrap()["status"], "healthy");

    // The upgrade plan: 1.0.0 -> 1.1.0, workers=2 kept, the greeting
    // default changes; nothing written.
    let plan = shoal_json(&c, 1, &["package", "upgrade", "h1", "--plan"]);
    assert_eq!(plan["to"], "hello@1.1.0", "{plan}");
    assert_eq!(plan["options"]["workers"], 2, "{plan}");
    let text = plan.to_string();
    assert!(text.contains("hello 1.1.0"), "{plan}");
    assert_eq!(installation(&c, 0, "h1").unwrap()["revision"], 1);
    let up = shoal_json(&c, 1, &["package", "upgrade", "h1"]);
    assert_eq!(
        (&up["revision"], &up["version"]),
        (&Value::from(2), &Value::from("1.1.0"))
    );
    assert_eq!(up["options"]["workers"], 2, "{up}");
    let back = shoal_json(&c, 0, &["package", "rollback", "h1", "1"]);
    assert_eq!(
        (&back["revision"], &back["version"]),
        (&Value::from(3), &Value::from("1.0.0"))
    );
    wait_until("h1 back on 1.0.0's greeting", SETTLE, || {
        let (_, job) = c.agents[1].get_any("/v1/jobs/h1%2Fserver")?;
        Ok(job["spec"]["task"]["env"]["GREETING"] == "hello 1.0.0")
    });

    // Removed: the package is no longer found; h1 stays.
    let (ok, _, err) = shoal(&c, 0, &["package", "repo", "remove", "team"]);
    assert!(ok, "{err}");
    wait_until("the removal replicated", SETTLE, || {
        let (ok, _, err) = shoal(&c, 1, &["package", "describe", "hello"]);
        Ok(!ok && err.contains("no package"))
    });
    assert_eq!(installation(&c, 1, "h1").unwrap()["revision"], 3);
}

/// Requests served, by path.
type Hits = Arc<Mutex<BTreeMap<String, u32>>>;

/// Serves `files` over HTTP on an ephemeral loopback port until the
/// process ends; the base URL, and the requests it served.
fn serve(files: BTreeMap<String, Vec<u8>>) -> (String, Hits) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let files = Arc::new(files);
    let hits = Hits::default();
    let counted = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let files = files.clone();
            let hits = counted.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let (status, body) = match files.get(&path) {
                    Some(b) => ("200 OK", b.clone()),
                    None => ("404 Not Found", b"not found".to_vec()),
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(&body);
            });
        }
    });
    (base, hits)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn an_http_repository_installs_a_wrong_sha256_is_refused_and_peers_share_archives() {
    let m = marker("http-repo");
    let _cleanup = KillMarked(m.clone());
    let c = Cluster::of("h", 2, &["--cpus", "2", "--memory-mb", "1024"]);
    let dir = tempfile::tempdir().unwrap();
    let mut archives = BTreeMap::new();
    for v in ["2.0.0", "3.0.0"] {
        let d = dir.path().join(v);
        hello(&d, v, &m);
        let files = shoal_package::fs::load_path(&d).unwrap();
        archives.insert(v, shoal_package::archive::pack_tar_gz(&files));
    }
    // 2.0.0 is listed with the digest of another archive.
    let index = serde_json::json!({"packages": {"hello": [
        {"version": "2.0.0", "url": "hello-2.0.0.tar.gz", "sha256": sha256_hex(&archives["3.0.0"])},
        {"version": "3.0.0", "url": "hello-3.0.0.tar.gz", "sha256": sha256_hex(&archives["3.0.0"])},
    ]}});
    let mut files = BTreeMap::new();
    files.insert(
        "/repo/index.json".to_owned(),
        index.to_string().into_bytes(),
    );
    for (v, a) in &archives {
        files.insert(format!("/repo/hello-{v}.tar.gz"), a.clone());
    }
    let (base, hits) = serve(files);
    let (ok, _, err) = shoal(
        &c,
        0,
        &[
            "package",
            "repo",
            "add",
            "web",
            &format!("{base}/repo/index.json"),
        ],
    );
    assert!(ok, "{err}");

    let (ok, _, err) = shoal(
        &c,
        0,
        &[
            "package",
            "install",
            "hello",
            "--version",
            "2.0.0",
            "--instance",
            "bad",
        ],
    );
    assert!(!ok, "a mismatching archive installs");
    assert!(
        err.contains("sha256") && err.contains("2.0.0") && err.contains("web"),
        "{err}"
    );
    let (code, _) = c.agents[0].get_any("/v1/installations/bad").unwrap();
    assert_eq!(code, 404, "nothing written");
    assert!(job_names(&c, 0).is_empty());

    // The API installs by name too (the node renders): the good version.
    let (code, body) = c.agents[0]
        .post(
            "/v1/installations",
            &serde_json::json!({"instance": "good", "package": "hello", "options": {"workers": 1}}),
        )
        .unwrap();
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        (&body["version"], &body["repository"]),
        (&Value::from("3.0.0"), &Value::from("web"))
    );
    wait_until("good healthy", SETTLE, || {
        Ok(installation(&c, 0, "good")?["status"] == "healthy")
    });
    let archive = "/repo/hello-3.0.0.tar.gz";
    assert_eq!(hits.lock().unwrap().get(archive), Some(&1), "read once");

    // Another node installs the same version: the archive comes from the
    // cache of the node that installed it, not from the repository again.
    let (ok, _, err) = shoal(
        &c,
        1,
        &[
            "package",
            "install",
            "hello",
            "--instance",
            "again",
            "--set",
            "workers=1",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(
        hits.lock().unwrap().get(archive),
        Some(&1),
        "the second node read the archive from its peer"
    );
    let cached = |i: usize| {
        c.agents[i]
            .dir
            .join("packages")
            .join(format!("{}.tar.gz", sha256_hex(&archives["3.0.0"])))
    };
    assert!(cached(0).is_file() && cached(1).is_file());
    wait_until("again healthy", SETTLE, || {
        Ok(installation(&c, 1, "again")?["status"] == "healthy")
    });
}

#[test]
fn a_trigger_installs_a_package_then_upgrades_it_when_its_options_change() {
    let m = marker("triginst");
    let _cleanup = KillMarked(m.clone());
    let c = Cluster::of("ti", 1, &["--cpus", "2", "--memory-mb", "1024"]);
    let dir = tempfile::tempdir().unwrap();
    hello(&dir.path().join("hello-1.0"), "1.0.0", &m);
    let url = format!("dir:{}", dir.path().display());
    let (ok, _, err) = shoal(&c, 0, &["package", "repo", "add", "team", &url]);
    assert!(ok, "{err}");
    let trigger = |workers: u32| {
        format!(
            r#"name = "grow"
every = "24h"
enabled = false      # runs only when asked (shoal trigger run)

[install]
package = "hello"
instance = "hi"
[install.options]
workers = {workers}
"#
        )
    };
    let file = dir.path().join("grow.toml");
    let run = |workers: u32| {
        std::fs::write(&file, trigger(workers)).unwrap();
        let (ok, _, err) = shoal(&c, 0, &["trigger", "create", file.to_str().unwrap()]);
        assert!(ok, "{err}");
        let (ok, _, err) = shoal(&c, 0, &["trigger", "run", "grow"]);
        assert!(ok, "{err}");
    };
    run(1);
    wait_until("hi installed by the trigger", SETTLE, || {
        Ok(installation(&c, 0, "hi").is_ok_and(|i| i["revision"] == 1))
    });
    let i = installation(&c, 0, "hi").unwrap();
    assert_eq!(i["package"], "hello", "{i}");
    assert_eq!(i["options"], json!({"workers": 1}), "{i}");
    // Other options: an upgrade to a new revision with them.
    run(2);
    wait_until("hi upgraded to 2 workers", SETTLE, || {
        Ok(installation(&c, 0, "hi")
            .is_ok_and(|i| i["revision"] == 2 && i["options"]["workers"] == 2))
    });
    wait_until("2 servers", SETTLE, || {
        let (_, j) = c.agents[0].get_any("/v1/jobs/hi%2Fserver")?;
        Ok(j["count"] == 2)
    });
    // The same again: nothing to do, no new revision.
    let (ok, _, err) = shoal(&c, 0, &["trigger", "run", "grow"]);
    assert!(ok, "{err}");
    let (_, t) = c.agents[0].get_any("/v1/triggers/grow").unwrap();
    assert!(t["recent"].as_array().is_some_and(|r| r.len() == 3), "{t}");
    assert_eq!(installation(&c, 0, "hi").unwrap()["revision"], 2);
    let (ok, _, err) = shoal(&c, 0, &["package", "uninstall", "hi"]);
    assert!(ok, "{err}");
}
