//! `shoal package install|list|upgrade|rollback|uninstall`: installations
//! in the cluster. The package is rendered here (built-in, a directory or
//! a `.tar.gz`) and the installation, with its rendered jobs, is written
//! through any node's API (`/v1/installations…`).

use std::path::Path;

use anyhow::bail;
use serde_json::{Value, json};
use shoal_client::{Client, segment};
use shoal_node::api::installations::{InstallBody, InstallationView, UpgradeBody};
use shoal_package::Package;
use shoal_state::JobView;

use crate::output::table;
use crate::packages::{load, user_options};

fn rendered(pkg: &Package, instance: &str, options: &Value) -> anyhow::Result<Vec<Value>> {
    Ok(pkg
        .render(instance, options)?
        .into_iter()
        .map(|j| j.spec.to_json())
        .collect())
}

/// `shoal package install`.
pub fn install(
    client: &Client,
    json_out: bool,
    (what, version): (&str, Option<&str>),
    instance: Option<&str>,
    file: Option<&Path>,
    sets: &[String],
) -> anyhow::Result<()> {
    let loaded = load(what, version, client)?;
    let pkg = &loaded.package;
    let options = user_options(pkg, file, sets)?;
    let m = pkg.manifest();
    let instance = instance.unwrap_or(&m.name).to_owned();
    let jobs = rendered(pkg, &instance, &options)?;
    let body = InstallBody {
        instance: instance.clone(),
        package: m.name.clone(),
        version: m.version.to_string(),
        repository: loaded.repository.clone(),
        options: options.clone(),
        jobs,
    };
    let view: InstallationView = client.post("/v1/installations", &body)?;
    if json_out {
        return crate::print_json(&view);
    }
    println!(
        "installed {} from {} as {instance} (revision {}): {}",
        pkg.id(),
        loaded.repository,
        view.installation.revision,
        view.installation.jobs.join(", ")
    );
    if let Some(notes) = pkg.notes(&instance, &options, false)? {
        println!("\n{notes}");
    }
    println!("\nfollow it with `shoal package list` or `shoal ps`");
    Ok(())
}

/// `shoal package list`.
pub fn list(client: &Client, json_out: bool, all: bool) -> anyhow::Result<()> {
    let path = if all {
        "/v1/installations?all=true"
    } else {
        "/v1/installations"
    };
    let views: Vec<InstallationView> = client.get(path)?;
    if json_out {
        return crate::print_json(&views);
    }
    if views.is_empty() {
        println!("no installations (`shoal package search` lists what can be installed)");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            let i = &v.installation;
            let jobs = v
                .job_status
                .iter()
                .map(|j| format!("{} {}/{}", j.name, j.healthy, j.desired))
                .collect::<Vec<_>>()
                .join(", ");
            vec![
                i.instance.clone(),
                format!("{}@{}", i.package, i.version),
                i.revision.to_string(),
                v.status.clone(),
                i.updated_at.clone(),
                jobs,
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "INSTANCE", "PACKAGE", "REVISION", "STATUS", "UPDATED", "JOBS"
            ],
            &rows
        )
    );
    Ok(())
}

fn installation(client: &Client, instance: &str) -> anyhow::Result<InstallationView> {
    Ok(client.get(&format!("/v1/installations/{}", segment(instance)))?)
}

/// `shoal package upgrade`: renders the package (the installation's own
/// unless another is named) with the user's options kept and `sets` over
/// them; `plan` prints what would change and writes nothing.
#[allow(clippy::too_many_arguments)]
pub fn upgrade(
    client: &Client,
    json_out: bool,
    instance: &str,
    (what, version): (Option<&str>, Option<&str>),
    file: Option<&Path>,
    sets: &[String],
    plan: bool,
) -> anyhow::Result<()> {
    let current = installation(client, instance)?;
    let what = what.unwrap_or(&current.installation.package).to_owned();
    let loaded = load(&what, version, client)?;
    let pkg = &loaded.package;
    if pkg.manifest().name != current.installation.package {
        bail!(
            "{instance} is an installation of {}, not of {}",
            current.installation.package,
            pkg.manifest().name
        );
    }
    if let Err(why) = pkg
        .manifest()
        .check_upgrade_from(&current.installation.version)
    {
        bail!("{instance}: {why}");
    }
    let mut options = current.installation.options.clone();
    let extra = user_options(pkg, file, sets)?;
    shoal_package::merge(&mut options, &extra);
    let jobs = rendered(pkg, instance, &options)?;
    if plan {
        let mut changes = Vec::new();
        for j in &jobs {
            let name = j["name"].as_str().unwrap_or_default().to_owned();
            let old = match client.get::<JobView>(&format!("/v1/jobs/{}", segment(&name))) {
                Ok(v) => {
                    let mut spec = v.spec.clone();
                    if let Some(l) = spec["labels"].as_object_mut() {
                        l.remove(shoal_node::api::installations::INSTANCE_LABEL);
                    }
                    spec
                }
                Err(_) => Value::Null,
            };
            let diff = shoal_model::diff(&old, j);
            changes.push(json!({"job": name, "new": old.is_null(), "changes": diff}));
        }
        let kept: Vec<&str> = jobs.iter().filter_map(|j| j["name"].as_str()).collect();
        let stopped: Vec<&String> = current
            .installation
            .jobs
            .iter()
            .filter(|n| !kept.contains(&n.as_str()))
            .collect();
        if json_out {
            return crate::print_json(&json!({
                "instance": instance,
                "from": format!("{}@{}", current.installation.package, current.installation.version),
                "to": pkg.id(),
                "options": options,
                "jobs": changes,
                "stopped": stopped,
            }));
        }
        println!(
            "plan for {instance}: {}@{} -> {} (options {options})",
            current.installation.package,
            current.installation.version,
            pkg.id()
        );
        for c in &changes {
            let list = c["changes"].as_array().cloned().unwrap_or_default();
            if c["new"] == true {
                println!("  + job {} (new)", c["job"].as_str().unwrap_or_default());
            } else if list.is_empty() {
                println!(
                    "  = job {} (unchanged)",
                    c["job"].as_str().unwrap_or_default()
                );
            } else {
                println!("  ~ job {}", c["job"].as_str().unwrap_or_default());
                for ch in list {
                    let ch: shoal_model::Change = serde_json::from_value(ch)?;
                    println!("      {ch}");
                }
            }
        }
        for s in stopped {
            println!("  - job {s} (stopped)");
        }
        return Ok(());
    }
    let body = UpgradeBody {
        version: pkg.manifest().version.to_string(),
        options,
        jobs,
    };
    let view: InstallationView = client.post(
        &format!("/v1/installations/{}/upgrade", segment(instance)),
        &body,
    )?;
    if json_out {
        return crate::print_json(&view);
    }
    println!(
        "upgraded {instance} to {} (revision {})",
        pkg.id(),
        view.installation.revision
    );
    Ok(())
}

/// `shoal package rollback`.
pub fn rollback(
    client: &Client,
    json_out: bool,
    instance: &str,
    revision: u32,
) -> anyhow::Result<()> {
    let view: InstallationView = client.post(
        &format!("/v1/installations/{}/rollback", segment(instance)),
        &json!({ "revision": revision }),
    )?;
    if json_out {
        return crate::print_json(&view);
    }
    println!(
        "{instance}: revision {} is revision {revision} again ({}@{})",
        view.installation.revision, view.installation.package, view.installation.version
    );
    Ok(())
}

/// `shoal package uninstall`.
pub fn uninstall(client: &Client, json_out: bool, instance: &str) -> anyhow::Result<()> {
    let before = installation(client, instance)?;
    // The package's own words on what stays behind, from the installed
    // version when it is at hand (else the newest).
    let i = &before.installation;
    let notes = load(&i.package, Some(&i.version), client)
        .or_else(|_| load(&i.package, None, client))
        .ok()
        .and_then(|l| l.package.notes(instance, &i.options, true).ok().flatten());
    let view: InstallationView =
        client.delete(&format!("/v1/installations/{}", segment(instance)))?;
    if json_out {
        let mut out = serde_json::to_value(&view)?;
        out["notes"] = notes.map_or(Value::Null, Value::String);
        return crate::print_json(&out);
    }
    println!("uninstalled {instance}: stopped {}", i.jobs.join(", "));
    if let Some(notes) = notes {
        println!("\n{notes}");
    }
    Ok(())
}
