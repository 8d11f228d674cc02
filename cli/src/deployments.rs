//! `shoal deployments`, `shoal deployment promote|fail|pause|resume` and
//! `shoal job revert`.

use std::time::{Duration, Instant};

use anyhow::bail;
use shoal_client::{Client, segment};
use shoal_model::DeploymentStatus;
use shoal_node::api::types::{DeploymentView, SubmitResponse};

use crate::output::table;

/// `shoal deployments [JOB]`.
pub fn list(client: &Client, json_out: bool, job: Option<&str>) -> anyhow::Result<()> {
    let all: Vec<DeploymentView> = match job {
        Some(j) => client.get(&format!("/v1/jobs/{}/deployments", segment(j)))?,
        None => client.get("/v1/deployments")?,
    };
    if json_out {
        return crate::print_json(&all);
    }
    if all.is_empty() {
        match job {
            Some(j) => println!(
                "job {j} has no deployments: a change of what a service with [update] runs starts one"
            ),
            None => println!("no deployments"),
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|d| {
            vec![
                d.job.clone(),
                d.version.to_string(),
                d.status.to_string(),
                format!("{}/{}", d.healthy, d.desired),
                if d.canaries == 0 {
                    "-".to_owned()
                } else if d.promoted {
                    format!("{} (promoted)", d.canaries)
                } else {
                    d.canaries.to_string()
                },
                d.updated_at.clone(),
                d.description.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "JOB",
                "VERSION",
                "STATUS",
                "HEALTHY",
                "CANARIES",
                "UPDATED",
                "DESCRIPTION"
            ],
            &rows
        )
    );
    Ok(())
}

/// `shoal deployment promote|fail|pause|resume JOB`.
pub fn act(client: &Client, json_out: bool, job: &str, action: &str) -> anyhow::Result<()> {
    let d: DeploymentView = client.post(
        &format!("/v1/jobs/{}/deployment/{action}", segment(job)),
        &serde_json::json!({}),
    )?;
    if json_out {
        return crate::print_json(&d);
    }
    println!(
        "deployment of {} version {}: {} ({})",
        d.job, d.version, d.status, d.description
    );
    Ok(())
}

/// `shoal job revert JOB VERSION`.
pub fn revert(client: &Client, json_out: bool, job: &str, version: u64) -> anyhow::Result<()> {
    let r: SubmitResponse = client.post(
        &format!("/v1/jobs/{}/revert", segment(job)),
        &serde_json::json!({ "version": version }),
    )?;
    if json_out {
        return crate::print_json(&r);
    }
    if r.unchanged {
        println!(
            "job {job} already is as version {version} was (version {})",
            r.job.version
        );
        return Ok(());
    }
    println!(
        "job {job}: version {} -> {}, as version {version} was",
        r.previous_version, r.job.version
    );
    for c in &r.changes {
        println!("  {c}");
    }
    announce(&r);
    Ok(())
}

/// Says that a write began a rolling deployment, and how to follow it.
pub fn announce(r: &SubmitResponse) {
    if let Some(d) = r
        .job
        .deployment
        .as_ref()
        .filter(|d| d.version == r.job.version && d.status.in_progress())
    {
        println!(
            "rolling deployment of version {} begun{}: follow it with `shoal deployments {}`",
            d.version,
            if d.canary > 0 {
                format!(" ({} canaries first)", d.canary)
            } else {
                String::new()
            },
            r.job.name
        );
    }
}

/// Waits until the deployment of `version` of `job` ends: `Ok` when it
/// succeeds, an error saying why otherwise (or on `timeout`).
pub fn wait(client: &Client, job: &str, version: u64, timeout: Duration) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    let started = Instant::now();
    loop {
        let all: Vec<DeploymentView> =
            client.get(&format!("/v1/jobs/{}/deployments", segment(job)))?;
        let Some(d) = all.into_iter().find(|d| d.version == version) else {
            bar.finish_and_clear();
            bail!("job {job} has no deployment of version {version}");
        };
        bar.set_message(format!(
            "{job} version {version}: {} {}/{} healthy: {} ({:.0?})",
            d.status,
            d.healthy,
            d.desired,
            d.description,
            started.elapsed()
        ));
        match d.status {
            DeploymentStatus::Successful => {
                bar.finish_with_message(format!(
                    "{job} version {version}: deployed, {}/{} healthy, after {:.1?}",
                    d.healthy,
                    d.desired,
                    started.elapsed()
                ));
                return Ok(());
            }
            DeploymentStatus::Running | DeploymentStatus::Paused => {}
            other => {
                bar.finish_and_clear();
                bail!(
                    "the deployment of {job} version {version} is {other}: {}",
                    d.description
                );
            }
        }
        if started.elapsed() > timeout {
            bar.finish_and_clear();
            bail!(
                "the deployment of {job} version {version} is still {} after {timeout:?}: {}",
                d.status,
                d.description
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
