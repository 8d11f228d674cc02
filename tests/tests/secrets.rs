//! Secrets against real agents: a secret stored through the CLI reaches
//! the environment of a job's tasks on every node that runs one, and its
//! value appears in no API answer, no CLI output, no log and no file of
//! any data dir; a job referring to a secret that does not exist fails
//! its tasks naming it (docs/security.md).

use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};
use shoal_tests::packages::{cli_env, shoal};
use shoal_tests::{Cluster, wait_until};

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if kind.is_file()
            && let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            found.push(path.display().to_string());
        }
    }
    found
}

#[test]
fn a_secret_reaches_its_tasks_environment_and_nothing_else() {
    let mut c = Cluster::of("sec", 2, &["--cpus", "2", "--memory-mb", "1024"]);
    let env = cli_env(&c, 0);
    let outside = tempfile::tempdir().expect("a temp dir");
    let value = format!(
        "sv-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos()
    );
    let value_file = outside.path().join("password");
    std::fs::write(&value_file, &value).expect("write the value");
    let mut outputs = Vec::new();
    let mut cli = |args: &[&str]| -> String {
        let (ok, out, err) = shoal(&env, args);
        assert!(ok, "shoal {}: {out}{err}", args.join(" "));
        outputs.push(format!("{out}{err}"));
        out
    };
    cli(&[
        "secret",
        "put",
        "db/password",
        "--from-file",
        value_file.to_str().expect("a UTF-8 path"),
    ]);
    let listed = cli(&["secret", "list"]);
    assert!(listed.contains("db/password"), "{listed}");

    // The reference written as in docs/security.md's example.
    let job = outside.path().join("app.toml");
    std::fs::write(
        &job,
        r#"name = "app"
type = "service"
count = 2

[task]
runtime = "process"
command = "/bin/sh"
args = ["-c", "printf %s \"$DB_PASSWORD\" | sha256sum > \"$SHOAL_TASK_DIR/hash\"; exec sleep 600"]
env = { DB_PASSWORD = { secret = "db/password" }, MODE = "test" }
resources = { cpus = 0.1, memory_mb = 32 }
"#,
    )
    .expect("write the job file");
    cli(&["run", job.to_str().expect("a UTF-8 path")]);

    // Each task's environment held the value: its hash is the value's.
    let want: String = Sha256::digest(value.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    wait_until(
        "both tasks wrote the hash of the value",
        Duration::from_secs(60),
        || {
            let mut hashes = Vec::new();
            for a in &c.agents {
                for f in files_containing(&a.dir.join("tasks"), want.as_bytes()) {
                    hashes.push(f);
                }
            }
            Ok(hashes.len() == 2)
        },
    );

    // Nothing a client can read holds the value...
    let mut answers = Vec::new();
    for path in [
        "/v1/jobs",
        "/v1/jobs/app",
        "/v1/jobs/app/versions",
        "/v1/jobs/app/tasks",
        "/v1/secrets",
        "/v1/summary",
    ] {
        for a in &c.agents {
            let (status, body) = a.get_any(path).expect("the API answers");
            assert_eq!(status, 200, "{path}: {body}");
            answers.push(body.to_string());
        }
    }
    let shown = cli(&["job", "show", "app"]);
    assert!(
        shown.contains("db/password"),
        "the reference is shown: {shown}"
    );
    cli(&["job", "history", "app"]);
    cli(&["ps", "app"]);
    cli(&["secret", "list", "--json"]);
    for text in answers.iter().chain(&outputs) {
        assert!(!text.contains(&value), "the value leaked: {text}");
    }
    // ...nor any log or file of any agent (data dirs, logs, task dirs).
    for a in &mut c.agents {
        a.kill9();
    }
    let leaked = files_containing(c.root.path(), value.as_bytes());
    assert!(leaked.is_empty(), "the value is in {leaked:?}");
}

#[test]
fn a_task_whose_secret_does_not_exist_fails_naming_it() {
    let c = Cluster::of("nosec", 1, &["--cpus", "2", "--memory-mb", "1024"]);
    let (status, body) = c.agents[0]
        .post(
            "/v1/jobs",
            &serde_json::json!({
                "name": "lost", "count": 1,
                "restart": {"attempts": 0},
                "task": {"command": "/bin/true", "env": {"X": {"secret": "no/such"}}}
            }),
        )
        .expect("the API answers");
    assert_eq!(status, 201, "{body}");
    wait_until(
        "the task fails naming the secret",
        Duration::from_secs(30),
        || {
            let tasks = c.tasks(0, "lost");
            Ok(tasks.iter().any(|t| {
                t["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("no secret named \"no/such\""))
            }))
        },
    );
    // A value that is neither text nor a reference is refused, naming it.
    let (status, body) = c.agents[0]
        .post(
            "/v1/jobs",
            &serde_json::json!({"name": "bad", "task": {"command": "/bin/true", "env": {"X": {"secrett": "a"}}}}),
        )
        .expect("the API answers");
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "task.env.X", "{body}");
}
