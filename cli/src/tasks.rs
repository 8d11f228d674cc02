//! `shoal ps`, `shoal logs`, `shoal node drain`, and waiting for a job.

use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;
use shoal_client::{Client, segment};
use shoal_node::placement::TaskView;
use shoal_node::services::ServiceView;
use shoal_state::{BatchStatus, JobView};

use crate::output::{age, table};

/// The tasks of one job.
pub fn tasks_of(client: &Client, job: &str) -> anyhow::Result<Vec<TaskView>> {
    Ok(client.get(&format!("/v1/jobs/{}/tasks", segment(job)))?)
}

fn rows(tasks: &[TaskView]) -> Vec<Vec<String>> {
    tasks
        .iter()
        .map(|t| {
            let node = t
                .node_name
                .clone()
                .or_else(|| t.node.as_ref().map(|n| n.chars().take(8).collect()))
                .unwrap_or_else(|| "-".into());
            vec![
                t.task.clone(),
                node,
                t.state.clone(),
                t.health.clone(),
                t.version.map_or("-".into(), |v| v.to_string()),
                t.since.as_deref().map_or("-".into(), age),
                t.restarts.to_string(),
                t.exit_code.map_or("-".into(), |c| c.to_string()),
                t.reason.clone().unwrap_or_default(),
                // A running task: where to reach it.
                t.ports
                    .iter()
                    .map(|(n, p)| format!("{n}={}:{}", p.host, p.port))
                    .collect::<Vec<_>>()
                    .join(","),
            ]
        })
        .collect()
}

/// Prints a task table (and, under it, why pending tasks wait, and what
/// the checks of tasks not healthy said).
pub fn print_tasks(tasks: &[TaskView]) {
    print_tasks_with(tasks, false);
}

/// [`print_tasks`], with every task's last check output when `all_checks`.
pub fn print_tasks_with(tasks: &[TaskView], all_checks: bool) {
    let mut header = vec![
        "TASK", "NODE", "STATE", "HEALTH", "VERSION", "SINCE", "RESTARTS", "EXIT", "REASON",
        "PORTS",
    ];
    let mut rows = rows(tasks);
    // The PORTS column only for jobs with named ports.
    if tasks.iter().all(|t| t.ports.is_empty()) {
        header.pop();
        for r in &mut rows {
            r.pop();
        }
    }
    print!("{}", table(&header, &rows));
    let checks: Vec<&TaskView> = tasks
        .iter()
        .filter(|t| t.check.is_some() && (all_checks || t.health != "healthy"))
        .collect();
    if !checks.is_empty() {
        println!("\nLast check output:");
        for t in checks {
            println!("  {}: {}", t.task, t.check.as_deref().unwrap_or_default());
        }
    }
    for t in tasks.iter().filter(|t| !t.pending.is_empty()) {
        println!("\n{} is pending:", t.task);
        for r in &t.pending {
            println!("  {r}");
        }
    }
}

/// `shoal ps [JOB]`.
pub fn ps(client: &Client, json_out: bool, job: Option<&str>) -> anyhow::Result<()> {
    let mut all = Vec::new();
    match job {
        Some(j) => all = tasks_of(client, j)?,
        None => {
            let jobs: Vec<JobView> = client.get("/v1/jobs")?;
            for j in jobs {
                all.extend(tasks_of(client, &j.name)?);
            }
        }
    }
    if json_out {
        return crate::print_json(&all);
    }
    print_tasks(&all);
    Ok(())
}

/// `shoal endpoints JOB [--port NAME] [--all]`.
pub fn endpoints(
    client: &Client,
    json_out: bool,
    job: &str,
    port: Option<&str>,
    all: bool,
) -> anyhow::Result<()> {
    let mut path = format!("/v1/services/{}?all={all}", segment(job));
    if let Some(p) = port {
        path.push_str(&format!("&port={}", segment(p)));
    }
    let view: ServiceView = client.get(&path)?;
    if json_out {
        return crate::print_json(&view);
    }
    let port_header = view
        .port_name
        .as_ref()
        .map_or_else(|| "PORT".to_owned(), |p| format!("PORT ({p})"));
    let rows: Vec<Vec<String>> = view
        .endpoints
        .iter()
        .map(|e| {
            vec![
                e.task.clone(),
                e.node_name
                    .clone()
                    .unwrap_or_else(|| e.node.chars().take(8).collect()),
                e.host.clone(),
                e.port.map_or("-".into(), |p| p.to_string()),
                e.health.clone(),
                e.state.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["TASK", "NODE", "HOST", &port_header, "HEALTH", "STATE"],
            &rows
        )
    );
    if view.endpoints.is_empty() {
        println!(
            "no {}endpoint of {job} (see `shoal ps {job}`)",
            if all { "" } else { "healthy " }
        );
    }
    Ok(())
}

/// `shoal logs TASK [-f] [--stderr]`.
pub fn logs(client: &Client, task: &str, follow: bool, stderr: bool) -> anyhow::Result<()> {
    let mut offset = 0u64;
    let mut out = std::io::stdout().lock();
    loop {
        let piece: serde_json::Value = client.get(&format!(
            "/v1/tasks/{}/logs?stderr={stderr}&offset={offset}",
            segment(task)
        ))?;
        let data = piece["data"].as_str().unwrap_or_default();
        let next = piece["next"].as_u64().unwrap_or(offset);
        if !data.is_empty() {
            out.write_all(data.as_bytes())?;
            out.flush()?;
        }
        let caught_up = next >= piece["size"].as_u64().unwrap_or(0);
        offset = next;
        if caught_up {
            if !follow {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// `shoal node drain NODE [--undo]`.
pub fn drain(client: &Client, node: &str, undo: bool) -> anyhow::Result<()> {
    let r: serde_json::Value = client.post(
        &format!("/v1/nodes/{}/drain", segment(node)),
        &json!({"drain": !undo}),
    )?;
    if undo {
        println!("node {node} takes tasks again");
    } else {
        println!(
            "node {node} ({}) is draining: it takes no new tasks and its tasks are being placed elsewhere",
            r["node"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

/// `shoal node forget NODE`.
pub fn forget(client: &Client, json: bool, node: &str) -> anyhow::Result<()> {
    let r: serde_json::Value =
        client.post(&format!("/v1/nodes/{}/forget", segment(node)), &json!({}))?;
    if json {
        return crate::print_json(&r);
    }
    println!(
        "node {node} ({}) is forgotten: members drop it as the news reaches them, and it cannot rejoin with its identity",
        r["id"].as_str().unwrap_or_default()
    );
    Ok(())
}

/// Waits until every task of `job` runs, or for a batch job until the job
/// is complete, showing progress on stderr; fails with the reasons of what
/// is stuck, or when a batch job fails.
pub fn wait(client: &Client, job: &str, timeout: Duration) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    let started = Instant::now();
    loop {
        let view: JobView = client.get(&format!("/v1/jobs/{}", segment(job)))?;
        if view.status.is_some() {
            if wait_batch(client, &bar, &view, started, timeout)? {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        let tasks = tasks_of(client, job)?;
        let wanted = view.count.map_or(tasks.len(), |c| c as usize);
        let count = |s: &str| tasks.iter().filter(|t| t.state == s).count();
        let (running, exited, failed, pending) = (
            count("running"),
            count("exited"),
            count("failed") + count("killed"),
            count("pending"),
        );
        let done = running + exited;
        bar.set_message(format!(
            "{job}: {running}/{wanted} running, {pending} pending, {failed} failed ({:.0?})",
            started.elapsed()
        ));
        if done >= wanted && tasks.len() >= wanted {
            bar.finish_with_message(format!(
                "{job}: {running}/{wanted} running{} after {:.1?}",
                if exited > 0 {
                    format!(", {exited} completed")
                } else {
                    String::new()
                },
                started.elapsed()
            ));
            return Ok(());
        }
        if started.elapsed() > timeout {
            bar.finish_and_clear();
            print_tasks(&tasks);
            bail!(
                "{job} is not running after {timeout:?}: {running}/{wanted} running, {pending} pending, {failed} failed"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One look at a batch job being waited for: `true` once it is complete,
/// an error once it failed or the time is up.
fn wait_batch(
    client: &Client,
    bar: &indicatif::ProgressBar,
    view: &JobView,
    started: Instant,
    timeout: Duration,
) -> anyhow::Result<bool> {
    let job = &view.name;
    let wanted = view.count.unwrap_or(0);
    let complete = view.tasks_complete.unwrap_or(0);
    let failed = view.tasks_failed.unwrap_or(0);
    match view.status {
        Some(BatchStatus::Complete) => {
            bar.finish_with_message(format!(
                "{job}: complete, {complete}/{wanted} tasks exited 0 after {:.1?}",
                started.elapsed()
            ));
            return Ok(true);
        }
        Some(BatchStatus::Failed) => {
            bar.finish_and_clear();
            if let Ok(tasks) = tasks_of(client, job) {
                print_tasks(&tasks);
            }
            bail!(
                "{job} failed: {failed} of its {wanted} tasks ran out of restart attempts \
                 ({complete} complete); see `shoal logs {job}/INDEX --stderr`, fix the job and \
                 run it again"
            );
        }
        _ => {}
    }
    bar.set_message(format!(
        "{job}: {complete}/{wanted} complete ({:.0?})",
        started.elapsed()
    ));
    if started.elapsed() > timeout {
        bar.finish_and_clear();
        if let Ok(tasks) = tasks_of(client, job) {
            print_tasks(&tasks);
        }
        bail!(
            "{job} is not complete after {timeout:?}: {complete}/{wanted} tasks complete \
             (wait longer with --timeout)"
        );
    }
    Ok(false)
}
