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
    /// A job file (TOML). Without it, the job is built from the flags.
    pub file: Option<PathBuf>,

    /// Job name (DNS-label words, '/'-separated: web/frontend).
    #[arg(long)]
    pub name: Option<String>,

    /// Command line of a process task ("python3 -m http.server 8080"), or
    /// the command of a docker task.
    #[arg(long)]
    pub cmd: Option<String>,

    /// Docker image: makes it a docker task.
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
    /// `SHOAL_PORT_<NAME>`, `shoal ps` shows it); repeat for more.
    #[arg(long = "port", value_name = "NAME:PORT")]
    pub ports: Vec<String>,

    /// Environment variable KEY=VALUE; repeat for more.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// Constraint ATTRIBUTE=VALUE or ATTRIBUTE!=VALUE (attribute: name,
    /// dc, zone, region or a label key); repeat for more.
    #[arg(long = "constraint", value_name = "ATTR=VALUE")]
    pub constraints: Vec<String>,

    /// Only if the job is at this version (0: only if it does not exist).
    #[arg(long)]
    pub if_version: Option<u64>,

    /// Wait until every task runs, showing progress.
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

/// The JSON spec from a file or from flags.
pub fn spec_from_args(a: &RunArgs) -> anyhow::Result<Value> {
    if let Some(path) = &a.file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read job file {}", path.display()))?;
        let mut v = shoal_model::toml_to_json(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        // Flags given with a file override it.
        if let Some(c) = a.count {
            v["count"] = json!(c);
        }
        return Ok(v);
    }
    let Some(name) = &a.name else {
        bail!("give a job file, or --name with --cmd or --image (see shoal run --help)");
    };
    let mut task = serde_json::Map::new();
    match (&a.image, &a.cmd) {
        (Some(image), cmd) => {
            task.insert("runtime".into(), json!("docker"));
            task.insert("image".into(), json!(image));
            if let Some(cmd) = cmd {
                let words = shell_words::split(cmd).with_context(|| format!("--cmd {cmd:?}"))?;
                if let Some((first, rest)) = words.split_first() {
                    task.insert("command".into(), json!(first));
                    task.insert("args".into(), json!(rest));
                }
            }
        }
        (None, Some(cmd)) => {
            let words = shell_words::split(cmd).with_context(|| format!("--cmd {cmd:?}"))?;
            let Some((first, rest)) = words.split_first() else {
                bail!("--cmd is empty");
            };
            task.insert("runtime".into(), json!("process"));
            task.insert("command".into(), json!(first));
            task.insert("args".into(), json!(rest));
        }
        (None, None) => bail!("give --cmd (a process) or --image (a container)"),
    }
    if !a.env.is_empty() {
        let mut env = serde_json::Map::new();
        for e in &a.env {
            let (k, v) = split_pair(e, "--env")?;
            env.insert(k, json!(v));
        }
        task.insert("env".into(), Value::Object(env));
    }
    if !a.ports.is_empty() {
        let mut ports = Vec::new();
        for p in &a.ports {
            let (name, rest) = p
                .split_once(':')
                .with_context(|| format!("--port {p:?} is not NAME:PORT (http:8080)"))?;
            let (port, protocol) = rest.split_once('/').unwrap_or((rest, "tcp"));
            let port: u16 = port
                .parse()
                .with_context(|| format!("--port {p:?}: {port:?} is not a port number"))?;
            ports.push(json!({"name": name, "container_port": port, "protocol": protocol}));
        }
        task.insert("ports".into(), Value::Array(ports));
    }
    let mut resources = serde_json::Map::new();
    if let Some(c) = a.cpus {
        resources.insert("cpus".into(), json!(c));
    }
    if let Some(m) = a.memory_mb {
        resources.insert("memory_mb".into(), json!(m));
    }
    if !resources.is_empty() {
        task.insert("resources".into(), Value::Object(resources));
    }
    let mut spec = json!({"name": name, "task": task});
    if let Some(k) = &a.kind {
        spec["type"] = json!(k);
    }
    if let Some(c) = a.count {
        spec["count"] = json!(c);
    }
    if !a.constraints.is_empty() {
        let mut list = Vec::new();
        for c in &a.constraints {
            let (attr, op, value) = if let Some((k, v)) = c.split_once("!=") {
                (k, "!=", v)
            } else if let Some((k, v)) = c.split_once('=') {
                (k, "=", v)
            } else {
                bail!("--constraint {c:?} is not ATTR=VALUE or ATTR!=VALUE");
            };
            list.push(json!({"attribute": attr, "op": op, "value": value}));
        }
        spec["constraints"] = Value::Array(list);
    }
    Ok(spec)
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
    }
    if a.wait {
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
            &["NAME", "TYPE", "COUNT", "VERSION", "NOTE", "UPDATED"],
            &rows
        )
    );
    Ok(())
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
        crate::tasks::print_tasks(&tasks);
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
                what,
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["VERSION", "OP", "AT", "NODE", "CHANGES"], &rows)
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
