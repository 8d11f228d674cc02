//! `shoal run`, `jobs`, `job show`, `job history`, `scale`, `stop`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use shoal_client::{Client, segment};
use shoal_model::JobSpec;
use shoal_node::api::types::SubmitResponse;
use shoal_state::{HistoryEntry, JobView};

use crate::output::{cpus, mib, table};

/// How a job is described on the command line.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// A job file (TOML). Without it, the job is built from the flags;
    /// with it, the flags given are applied over the file's values.
    pub file: Option<PathBuf>,

    /// Job name (DNS-label words, '/'-separated: web/frontend).
    #[arg(long)]
    pub name: Option<String>,

    /// Command line of a process task ("python3 -m http.server 8080"), or
    /// the command of a docker task.
    #[arg(long)]
    pub cmd: Option<String>,

    /// Docker image: makes it a docker task (over a job file too).
    #[arg(long)]
    pub image: Option<String>,

    /// service, batch or system.
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,

    /// Tasks to run (not for system jobs).
    #[arg(long, allow_negative_numbers = true)]
    pub count: Option<i64>,

    /// CPUs per task (fractional).
    #[arg(long, allow_negative_numbers = true)]
    pub cpus: Option<f64>,

    /// Memory per task, MiB.
    #[arg(long, allow_negative_numbers = true)]
    pub memory_mb: Option<i64>,

    /// A container port to map to a host port, NAME:PORT[/udp] (docker
    /// tasks; the node picks the host port, the task sees it as
    /// `SHOAL_PORT_<NAME>`, `shoal ps` shows it); repeat for more. Over
    /// a job file, replaces the file's port of that name or adds one.
    #[arg(long = "port", value_name = "NAME:PORT")]
    pub ports: Vec<String>,

    /// Environment variable KEY=VALUE; repeat for more. Over a job file,
    /// sets KEY and keeps the file's other variables.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// Constraint ATTRIBUTE=VALUE or ATTRIBUTE!=VALUE (attribute: name,
    /// dc, zone, region or a label key); repeat for more. Over a job
    /// file, added to the file's constraints.
    #[arg(long = "constraint", value_name = "ATTR=VALUE")]
    pub constraints: Vec<String>,

    /// Only if the job is at this version (0: only if it does not exist).
    #[arg(long)]
    pub if_version: Option<u64>,

    /// Wait until every task runs, showing progress on stderr. For a
    /// batch job: wait until it is complete (every task exited 0); exit
    /// non-zero if it fails (a task ran out of restart attempts).
    #[arg(long)]
    pub wait: bool,

    /// How long --wait waits (`2m`, `30s`).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

fn split_pair(s: &str, what: &str) -> anyhow::Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .with_context(|| format!("{what} {s:?} is not KEY=VALUE"))?;
    Ok((k.to_owned(), v.to_owned()))
}

/// The JSON spec: the job file with the flags applied over it, or the
/// flags alone.
pub fn spec_from_args(a: &RunArgs) -> anyhow::Result<Value> {
    let (mut spec, source) = match &a.file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read job file {}", path.display()))?;
            let v = shoal_model::toml_to_json(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            (v, path.display().to_string())
        }
        None => {
            let Some(name) = &a.name else {
                bail!("give a job file, or --name with --cmd or --image (see shoal run --help)");
            };
            if a.cmd.is_none() && a.image.is_none() {
                bail!("give --cmd (a process) or --image (a container)");
            }
            (json!({"name": name}), "the flags".to_owned())
        }
    };
    apply_flags(&mut spec, a).with_context(|| format!("applying the flags to {source}"))?;
    Ok(spec)
}

/// `v[key]` as an object, made when absent; `what` names it in the error.
fn object_at<'a>(
    v: &'a mut serde_json::Map<String, Value>,
    key: &str,
    what: &str,
) -> anyhow::Result<&'a mut serde_json::Map<String, Value>> {
    match v.entry(key).or_insert_with(|| json!({})) {
        Value::Object(m) => Ok(m),
        other => bail!("{what} is {other}, not a table"),
    }
}

/// `v[key]` as an array, made when absent.
fn array_at<'a>(
    v: &'a mut serde_json::Map<String, Value>,
    key: &str,
    what: &str,
) -> anyhow::Result<&'a mut Vec<Value>> {
    match v.entry(key).or_insert_with(|| json!([])) {
        Value::Array(l) => Ok(l),
        other => bail!("{what} is {other}, not a list"),
    }
}

/// Applies the flags over a spec (from a file, or the bare `{"name"}` of a
/// job built from flags). `--name`, `--type`, `--count`, `--cmd`,
/// `--image`, `--cpus` and `--memory-mb` replace the spec's value; `--env`
/// and `--port` set one variable or port (by name) each, keeping the
/// others; `--constraint` adds to the spec's constraints. `--image` makes
/// the task a docker task.
pub fn apply_flags(spec: &mut Value, a: &RunArgs) -> anyhow::Result<()> {
    let Value::Object(job) = spec else {
        bail!("the job is {spec}, not a table");
    };
    if let Some(name) = &a.name {
        job.insert("name".into(), json!(name));
    }
    if let Some(kind) = &a.kind {
        job.insert("type".into(), json!(kind));
    }
    if let Some(count) = a.count {
        job.insert("count".into(), json!(count));
    }
    if !a.constraints.is_empty() {
        let constraints = array_at(job, "constraints", "constraints")?;
        for c in &a.constraints {
            let (attr, op, value) = if let Some((k, v)) = c.split_once("!=") {
                (k, "!=", v)
            } else if let Some((k, v)) = c.split_once('=') {
                (k, "=", v)
            } else {
                bail!("--constraint {c:?} is not ATTR=VALUE or ATTR!=VALUE");
            };
            constraints.push(json!({"attribute": attr, "op": op, "value": value}));
        }
    }

    let task = object_at(job, "task", "task")?;
    if let Some(image) = &a.image {
        task.insert("runtime".into(), json!("docker"));
        task.insert("image".into(), json!(image));
    }
    if let Some(cmd) = &a.cmd {
        let words = shell_words::split(cmd).with_context(|| format!("--cmd {cmd:?}"))?;
        let Some((first, rest)) = words.split_first() else {
            bail!("--cmd is empty: give a program and its arguments");
        };
        task.insert("command".into(), json!(first));
        task.insert("args".into(), json!(rest));
    }
    if !a.env.is_empty() {
        let env = object_at(task, "env", "task.env")?;
        for e in &a.env {
            let (k, v) = split_pair(e, "--env")?;
            env.insert(k, json!(v));
        }
    }
    if !a.ports.is_empty() {
        let ports = array_at(task, "ports", "task.ports")?;
        for p in &a.ports {
            // NAME[/udp] (a process: the node picks the port) or
            // NAME:PORT[/udp] (a container port).
            let (named, protocol) = p.split_once('/').unwrap_or((p, "tcp"));
            let (name, port) = match named.split_once(':') {
                Some((name, port)) => {
                    let port: u16 = port
                        .parse()
                        .with_context(|| format!("--port {p:?}: {port:?} is not a port number"))?;
                    (name, Some(port))
                }
                None => (named, None),
            };
            let mut new = json!({"name": name, "protocol": protocol});
            if let Some(port) = port {
                new["container_port"] = json!(port);
            }
            // Port names are compared as the spec's validation does.
            let same = |v: &Value| {
                v["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            };
            match ports.iter_mut().find(|v| same(v)) {
                Some(old) => *old = new,
                None => ports.push(new),
            }
        }
    }
    if a.cpus.is_some() || a.memory_mb.is_some() {
        let resources = object_at(task, "resources", "task.resources")?;
        if let Some(c) = a.cpus {
            resources.insert("cpus".into(), json!(c));
        }
        if let Some(m) = a.memory_mb {
            resources.insert("memory_mb".into(), json!(m));
        }
    }
    Ok(())
}

fn print_write(verb: &str, r: &SubmitResponse) {
    let job = &r.job;
    if r.unchanged {
        println!("job {} unchanged (version {})", job.name, job.version);
    } else if r.created {
        println!("created job {} (version {})", job.name, job.version);
    } else {
        println!(
            "{verb} job {}: version {} -> {}",
            job.name, r.previous_version, job.version
        );
    }
    if !r.created {
        for c in &r.changes {
            println!("  {c}");
        }
    }
}

/// `shoal run`.
pub fn run(client: &Client, json_out: bool, a: &RunArgs) -> anyhow::Result<()> {
    let spec = spec_from_args(a)?;
    // Check here first, for an answer that needs no round trip; the node
    // checks again.
    JobSpec::from_json(spec.clone()).map_err(|e| anyhow::anyhow!("invalid job: {e}"))?;
    let path = match a.if_version {
        Some(v) => format!("/v1/jobs?if_version={v}"),
        None => "/v1/jobs".to_owned(),
    };
    let r: SubmitResponse = client.post(&path, &spec)?;
    if json_out {
        crate::print_json(&r)?;
    } else {
        print_write("updated", &r);
        crate::deployments::announce(&r);
    }
    let deploying = r
        .job
        .deployment
        .as_ref()
        .filter(|d| d.version == r.job.version && d.status.in_progress());
    if a.wait
        && let Some(d) = deploying
    {
        crate::deployments::wait(client, &r.job.name, d.version, a.timeout)?;
    } else if a.wait {
        crate::tasks::wait(client, &r.job.name, a.timeout)?;
    }
    Ok(())
}

/// `shoal jobs`.
pub fn list(client: &Client, json_out: bool, all: bool) -> anyhow::Result<()> {
    let path = if all {
        "/v1/jobs?deleted=true"
    } else {
        "/v1/jobs"
    };
    let jobs: Vec<JobView> = client.get(path)?;
    if json_out {
        return crate::print_json(&jobs);
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.name.clone(),
                j.kind.map_or("-".into(), |k| k.as_str().to_owned()),
                j.count.map_or("-".into(), |c| c.to_string()),
                j.version.to_string(),
                status_of(j),
                if j.deleted {
                    "deleted".into()
                } else if j.invalid.is_some() {
                    "invalid".into()
                } else {
                    "-".into()
                },
                j.updated_at.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "NAME", "TYPE", "COUNT", "VERSION", "STATUS", "NOTE", "UPDATED"
            ],
            &rows
        )
    );
    Ok(())
}

/// A batch job's status with its progress (`running 2/4`), `-` for
/// other jobs.
fn status_of(j: &JobView) -> String {
    match j.status {
        Some(s) => format!(
            "{} {}/{}",
            s.as_str(),
            j.tasks_complete.unwrap_or(0),
            j.count.unwrap_or(0)
        ),
        None => "-".into(),
    }
}

/// `shoal job show`.
pub fn show(client: &Client, json_out: bool, name: &str) -> anyhow::Result<()> {
    let job: JobView = client.get(&format!("/v1/jobs/{}", segment(name)))?;
    if json_out {
        return crate::print_json(&job);
    }
    println!("Name:     {}", job.name);
    println!("Type:     {}", job.kind.map_or("-", |k| k.as_str()));
    println!(
        "Count:    {}",
        job.count
            .map_or("- (one per eligible node)".into(), |c| c.to_string())
    );
    println!(
        "Version:  {} (created {}, updated {})",
        job.version, job.created_at, job.updated_at
    );
    if let Some(why) = &job.invalid {
        println!("Invalid:  {why}");
    }
    if job.status.is_some() {
        println!(
            "Status:   {} ({} failed)",
            status_of(&job),
            job.tasks_failed.unwrap_or(0)
        );
    }
    let task = &job.spec["task"];
    let what = match task["runtime"].as_str() {
        Some("docker") => format!("docker image {}", task["image"].as_str().unwrap_or("?")),
        _ => {
            let mut line = task["command"].as_str().unwrap_or("?").to_owned();
            for a in task["args"].as_array().into_iter().flatten() {
                line.push(' ');
                line.push_str(a.as_str().unwrap_or_default());
            }
            format!("process {line}")
        }
    };
    println!("Task:     {what}");
    let r = &task["resources"];
    println!(
        "Per task: {} CPUs, {} memory",
        cpus(r["cpus"].as_f64().unwrap_or(0.0)),
        mib(r["memory_mb"].as_u64().unwrap_or(0))
    );
    let tasks = crate::tasks::tasks_of(client, name).unwrap_or_default();
    if !tasks.is_empty() {
        println!();
        println!("Placement:");
        crate::tasks::print_tasks_with(&tasks, true);
    }
    println!();
    println!("Spec:");
    let toml_text = toml::to_string_pretty(&job.spec).unwrap_or_else(|_| job.spec.to_string());
    for line in toml_text.lines() {
        println!("  {line}");
    }
    Ok(())
}

/// `shoal job history`.
pub fn history(client: &Client, json_out: bool, name: &str) -> anyhow::Result<()> {
    let entries: Vec<HistoryEntry> = client.get(&format!("/v1/jobs/{}/versions", segment(name)))?;
    if json_out {
        return crate::print_json(&entries);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let what = match e.op.as_str() {
                "scale" => format!("count -> {}", e.count.unwrap_or(0)),
                "create" => "created".to_owned(),
                "delete" => "deleted".to_owned(),
                _ => e
                    .changes
                    .iter()
                    .map(|c| c.field.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            vec![
                e.version.to_string(),
                e.op.clone(),
                e.at.clone(),
                e.node.chars().take(8).collect(),
                e.by.clone().unwrap_or_else(|| "-".into()),
                what,
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["VERSION", "OP", "AT", "NODE", "BY", "CHANGES"], &rows)
    );
    Ok(())
}

/// `shoal scale`.
pub fn scale(
    client: &Client,
    json_out: bool,
    name: &str,
    count: i64,
    if_version: Option<u64>,
) -> anyhow::Result<()> {
    let mut body = json!({"count": count});
    if let Some(v) = if_version {
        body["if_version"] = json!(v);
    }
    let r: SubmitResponse = client.post(&format!("/v1/jobs/{}/scale", segment(name)), &body)?;
    if json_out {
        return crate::print_json(&r);
    }
    print_write("scaled", &r);
    Ok(())
}

/// `shoal stop`.
pub fn stop(
    client: &Client,
    json_out: bool,
    name: &str,
    if_version: Option<u64>,
) -> anyhow::Result<()> {
    let path = match if_version {
        Some(v) => format!("/v1/jobs/{}?if_version={v}", segment(name)),
        None => format!("/v1/jobs/{}", segment(name)),
    };
    let r: SubmitResponse = client.delete(&path)?;
    if json_out {
        return crate::print_json(&r);
    }
    println!("stopped job {} (version {})", r.job.name, r.job.version);
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use shoal_model::Runtime;

    use super::*;

    #[derive(Parser)]
    struct Run {
        #[command(flatten)]
        args: RunArgs,
    }

    fn args(flags: &[&str]) -> RunArgs {
        Run::try_parse_from(std::iter::once("run").chain(flags.iter().copied()))
            .unwrap()
            .args
    }

    fn file() -> Value {
        shoal_model::toml_to_json(
            r#"
name = "web"
count = 1
[task]
image = "busybox"
command = "httpd"
args = ["-f"]
env = { A = "1", B = "2" }
ports = [{ name = "http", container_port = 8080 }, { name = "admin", container_port = 9000 }]
[task.resources]
cpus = 0.5
memory_mb = 256
[[constraints]]
attribute = "dc"
op = "="
value = "dc1"
"#,
        )
        .unwrap()
    }

    fn applied(flags: &[&str]) -> JobSpec {
        let mut spec = file();
        apply_flags(&mut spec, &args(flags)).unwrap();
        JobSpec::from_json(spec).unwrap()
    }

    #[test]
    fn flags_replace_the_files_values() {
        let s = applied(&[
            "job.toml",
            "--name",
            "other",
            "--type",
            "batch",
            "--count",
            "3",
            "--cpus",
            "2",
            "--memory-mb",
            "64",
            "--image",
            "nginx",
            "--cmd",
            "nginx -g 'daemon off;'",
        ]);
        assert_eq!(s.name, "other");
        assert_eq!(s.kind.as_str(), "batch");
        assert_eq!(s.count, Some(3));
        assert_eq!(s.task.resources.cpus, 2.0);
        assert_eq!(s.task.resources.memory_mb, 64);
        assert_eq!(s.task.image.as_deref(), Some("nginx"));
        assert_eq!(s.task.command.as_deref(), Some("nginx"));
        assert_eq!(s.task.args, ["-g", "daemon off;"]);
        // What no flag touched stays as the file has it.
        assert_eq!(s.task.env["A"], "1");
        assert_eq!(s.task.ports.len(), 2);
        assert_eq!(s.constraints.len(), 1);
    }

    #[test]
    fn env_ports_and_constraints_merge_with_the_files() {
        let s = applied(&[
            "job.toml",
            "--env",
            "B=3",
            "--env",
            "C=4",
            "--port",
            "HTTP:8081/udp",
            "--port",
            "metrics:9100",
            "--constraint",
            "zone!=z9",
        ]);
        let env: Vec<(&str, &str)> = s
            .task
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.plain().unwrap_or_default()))
            .collect();
        assert_eq!(env, [("A", "1"), ("B", "3"), ("C", "4")]);
        let ports: Vec<(&str, Option<u16>, &str)> = s
            .task
            .ports
            .iter()
            .map(|p| {
                let proto = match p.protocol {
                    shoal_model::Protocol::Tcp => "tcp",
                    shoal_model::Protocol::Udp => "udp",
                };
                (p.name.as_str(), p.container_port, proto)
            })
            .collect();
        assert_eq!(
            ports,
            [
                ("HTTP", Some(8081), "udp"),
                ("admin", Some(9000), "tcp"),
                ("metrics", Some(9100), "tcp")
            ]
        );
        let constraints: Vec<String> = s
            .constraints
            .iter()
            .map(|c| format!("{} {} {:?}", c.attribute, c.op.as_str(), c.value))
            .collect();
        assert_eq!(
            constraints,
            [r#"dc = Some(One("dc1"))"#, r#"zone != Some(One("z9"))"#]
        );
        // Nothing given, nothing changed.
        assert_eq!(applied(&["job.toml"]), JobSpec::from_json(file()).unwrap());
    }

    #[test]
    fn an_image_makes_a_process_file_a_docker_task() {
        let mut spec = shoal_model::toml_to_json(
            "name = \"web\"\n[task]\nruntime = \"process\"\ncommand = \"/bin/sleep\"\nargs = [\"60\"]\n",
        )
        .unwrap();
        apply_flags(&mut spec, &args(&["job.toml", "--image", "busybox"])).unwrap();
        let s = JobSpec::from_json(spec).unwrap();
        assert_eq!(s.task.runtime, Runtime::Docker);
        assert_eq!(s.task.command.as_deref(), Some("/bin/sleep"));
    }

    #[test]
    fn flags_alone_build_a_job() {
        let s = JobSpec::from_json(
            spec_from_args(&args(&["--name", "quick", "--cmd", "/bin/sleep 60"])).unwrap(),
        )
        .unwrap();
        assert_eq!(s.task.runtime, Runtime::Process);
        assert_eq!(s.task.args, ["60"]);
        let e = spec_from_args(&args(&["--name", "quick"])).unwrap_err();
        assert!(e.to_string().contains("--cmd"), "{e}");
        let e = spec_from_args(&args(&["--cmd", "x"])).unwrap_err();
        assert!(e.to_string().contains("--name"), "{e}");
    }

    #[test]
    fn a_flag_that_cannot_apply_names_the_part_of_the_file() {
        let mut spec = shoal_model::toml_to_json("name = \"web\"\ntask = 3\n").unwrap();
        let e = apply_flags(&mut spec, &args(&["job.toml", "--cpus", "1"])).unwrap_err();
        assert_eq!(e.to_string(), "task is 3, not a table");
        let mut spec = file();
        let e = apply_flags(&mut spec, &args(&["job.toml", "--env", "NOVALUE"])).unwrap_err();
        assert!(
            e.to_string().contains("--env \"NOVALUE\" is not KEY=VALUE"),
            "{e}"
        );
    }
}
