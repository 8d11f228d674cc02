//! `shoal trigger create|list|show|explain|run|pause|resume|delete` and
//! `shoal runs`: triggers in the cluster, through any node's API
//! (`/v1/triggers…`, `/v1/runs`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use serde_json::Value;
use shoal_client::{Client, segment};
use shoal_node::api::triggers::{RunView, TriggerView};

use crate::output::table;

#[derive(Subcommand, Debug)]
pub enum TriggerCommand {
    /// Create a trigger from a TOML file (or JSON, by its `.json`
    /// extension), or replace the trigger of that name. The file is
    /// checked by the node: a bad field is named and nothing is written.
    /// See docs/triggers.md for the fields.
    Create {
        /// The trigger file.
        file: PathBuf,
    },
    /// List the triggers: schedule, paused, next slot, last outcome.
    List,
    /// Show a trigger: its spec, next slot and recent outcomes.
    Show {
        /// Trigger name.
        name: String,
    },
    /// Why a trigger fired or did not: where and when it was last
    /// evaluated, the next slot in its zone and in UTC, each condition's
    /// value, age, source and result, and the recent outcomes.
    Explain {
        /// Trigger name.
        name: String,
    },
    /// Run a trigger's action now, whatever its conditions and schedule
    /// (a manual run, `NAME@manual-…`).
    Run {
        /// Trigger name.
        name: String,
    },
    /// Pause a trigger: its due slots are recorded skipped (paused).
    Pause {
        /// Trigger name.
        name: String,
    },
    /// Resume a paused trigger.
    Resume {
        /// Trigger name.
        name: String,
    },
    /// Delete a trigger (the jobs of its runs stay).
    Delete {
        /// Trigger name.
        name: String,
    },
}

/// Runs a `shoal trigger` command.
pub fn run(cmd: &TriggerCommand, client: &Client, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        TriggerCommand::Create { file } => create(client, json_out, file),
        TriggerCommand::List => list(client, json_out),
        TriggerCommand::Show { name } => show(client, json_out, name),
        TriggerCommand::Explain { name } => explain(client, json_out, name),
        TriggerCommand::Run { name } => {
            let run: RunView =
                client.post(&format!("/v1/triggers/{}/run", segment(name)), &Value::Null)?;
            if json_out {
                return crate::print_json(&run);
            }
            println!("started run {} as job {}", run.id, run.job);
            Ok(())
        }
        TriggerCommand::Pause { name } => act(client, json_out, name, true),
        TriggerCommand::Resume { name } => act(client, json_out, name, false),
        TriggerCommand::Delete { name } => {
            let t: TriggerView = client.delete(&format!("/v1/triggers/{}", segment(name)))?;
            if json_out {
                return crate::print_json(&t);
            }
            println!("deleted trigger {} (the jobs of its runs stay)", t.name);
            Ok(())
        }
    }
}

fn create(client: &Client, json_out: bool, file: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("could not read {}", file.display()))?;
    let body: Value = if file.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?
    } else {
        shoal_model::toml_to_json(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
    };
    let t: TriggerView = client.post("/v1/triggers", &body)?;
    if json_out {
        return crate::print_json(&t);
    }
    println!("trigger {} saved", t.name);
    if let Some(s) = &t.next_slot {
        println!("next slot: {} ({})", s.id, s.at);
    }
    println!(
        "follow it with `shoal trigger explain {}` and `shoal runs {}`",
        t.name, t.name
    );
    Ok(())
}

fn when(spec: &Value) -> String {
    if let Some(e) = spec["every"].as_str() {
        return format!("every {e}");
    }
    if let Some(c) = spec["cron"].as_str() {
        let tz = spec["timezone"].as_str().unwrap_or("UTC");
        return format!("{c} ({tz})");
    }
    if spec["after"].is_array() {
        return "after".into();
    }
    "conditions".into()
}

fn outcome(o: &Value) -> String {
    match o["outcome"].as_str() {
        Some("fired") => format!(
            "fired {}{}",
            o["run_id"].as_str().unwrap_or_default(),
            o["result"]
                .as_str()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        Some(kind) => format!(
            "{kind} {} ({})",
            o["slot"].as_str().unwrap_or_default(),
            o["reason"].as_str().unwrap_or_default()
        ),
        None => "-".into(),
    }
}

fn list(client: &Client, json_out: bool) -> anyhow::Result<()> {
    let ts: Vec<TriggerView> = client.get("/v1/triggers")?;
    if json_out {
        return crate::print_json(&ts);
    }
    if ts.is_empty() {
        println!("no triggers (create one with `shoal trigger create FILE`)");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = ts
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                when(&t.spec),
                t.spec["when"].as_array().map_or(0, Vec::len).to_string(),
                if t.paused { "yes" } else { "no" }.to_owned(),
                t.next_slot.as_ref().map_or("-".into(), |s| s.at.clone()),
                t.recent.last().map_or("-".into(), outcome),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["NAME", "SCHEDULE", "CONDITIONS", "PAUSED", "NEXT", "LAST"],
            &rows
        )
    );
    Ok(())
}

fn show(client: &Client, json_out: bool, name: &str) -> anyhow::Result<()> {
    let t: TriggerView = client.get(&format!("/v1/triggers/{}", segment(name)))?;
    if json_out {
        return crate::print_json(&t);
    }
    println!("name:          {}", t.name);
    println!("schedule:      {}", when(&t.spec));
    println!("paused:        {}", if t.paused { "yes" } else { "no" });
    if let Some(s) = &t.next_slot {
        println!("next slot:     {} ({})", s.id, s.at);
    }
    println!(
        "last handled:  {}",
        t.last_handled.as_deref().unwrap_or("-")
    );
    println!(
        "evaluated by:  {}",
        t.evaluated_by.as_deref().unwrap_or("-")
    );
    println!("created:       {}", t.created_at);
    println!("\nspec:\n{}", serde_json::to_string_pretty(&t.spec)?);
    if !t.recent.is_empty() {
        println!("\nrecent:");
        for o in &t.recent {
            println!(
                "  {}  {}",
                o["decided_at"].as_str().unwrap_or_default(),
                outcome(o)
            );
        }
    }
    Ok(())
}

fn explain(client: &Client, json_out: bool, name: &str) -> anyhow::Result<()> {
    let e: Value = client.get(&format!("/v1/triggers/{}/explain", segment(name)))?;
    if json_out {
        return crate::print_json(&e);
    }
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    println!("trigger:        {}", s(&e["trigger"]));
    println!(
        "evaluated:      {} by {} ({})",
        s(&e["evaluated_at"]),
        s(&e["evaluated_by"]),
        if e["source"] == "live" {
            "live, this node evaluates it"
        } else {
            "as its evaluator last recorded"
        }
    );
    println!("paused:         {}", e["paused"]);
    if e["next_slot"].is_object() {
        println!(
            "next slot:      {} ({} {}, {} UTC)",
            s(&e["next_slot"]["id"]),
            s(&e["next_slot"]["local"]),
            s(&e["timezone"]),
            s(&e["next_slot"]["utc"])
        );
    }
    if e["pending"].is_object() {
        println!(
            "waiting:        {} for {} (deadline {})",
            s(&e["pending"]["slot"]["id"]),
            s(&e["pending"]["waiting"]),
            s(&e["pending"]["deadline"])
        );
    }
    let conditions = e["conditions"].as_array().cloned().unwrap_or_default();
    if !conditions.is_empty() {
        let rows: Vec<Vec<String>> = conditions
            .iter()
            .map(|c| {
                vec![
                    s(&c["signal"]),
                    s(&c["test"]),
                    c["value"]
                        .as_f64()
                        .map_or_else(|| s(&c["error"]), |v| v.to_string()),
                    format!(
                        "{}s{}",
                        c["age_ms"].as_u64().unwrap_or(0) / 1000,
                        if c["stale"] == true { " stale" } else { "" }
                    ),
                    match c["result"].as_bool() {
                        Some(true) => "true".into(),
                        Some(false) => "false".into(),
                        None => "waiting".into(),
                    },
                    format!("{}s", c["held_ms"].as_u64().unwrap_or(0) / 1000),
                    s(&c["source"]),
                ]
            })
            .collect();
        println!();
        print!(
            "{}",
            table(
                &["SIGNAL", "TEST", "VALUE", "AGE", "RESULT", "HELD", "SOURCE"],
                &rows
            )
        );
    }
    let recent = e["recent"].as_array().cloned().unwrap_or_default();
    if !recent.is_empty() {
        println!("\nrecent:");
        for o in recent.iter().rev().take(10) {
            println!("  {}  {}", s(&o["decided_at"]), outcome(o));
        }
    }
    Ok(())
}

fn act(client: &Client, json_out: bool, name: &str, pause: bool) -> anyhow::Result<()> {
    let (path, done) = if pause {
        (format!("/v1/triggers/{}/pause", segment(name)), "paused")
    } else {
        (format!("/v1/triggers/{}/resume", segment(name)), "resumed")
    };
    let t: TriggerView = client.post(&path, &Value::Null)?;
    if json_out {
        return crate::print_json(&t);
    }
    println!("trigger {} {done}", t.name);
    Ok(())
}

/// `shoal runs [TRIGGER]`.
pub fn runs(client: &Client, json_out: bool, trigger: Option<&str>) -> anyhow::Result<()> {
    let path = match trigger {
        Some(t) => format!("/v1/runs?trigger={}", segment(t)),
        None => "/v1/runs".to_owned(),
    };
    let runs: Vec<RunView> = client.get(&path)?;
    if json_out {
        return crate::print_json(&runs);
    }
    if runs.is_empty() {
        println!("no runs");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.status.clone(),
                format!("{}/{}", r.tasks_complete, r.tasks_failed),
                r.started.clone(),
                r.job.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["RUN", "STATUS", "DONE/FAILED", "STARTED", "JOB"], &rows)
    );
    Ok(())
}
