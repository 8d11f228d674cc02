//! Every example in `README.md` and `docs/*.md` is checked, so a newcomer
//! who copies one succeeds:
//!
//! - each ` ```toml ` block is a job file: it parses and validates
//!   ([`JobSpec::from_toml`]); a ` ```toml trigger ` block is a trigger
//!   file, checked by shoal-trigger's own test (`trigger/tests/docs.rs`);
//! - each ` ```json ` block names its type after `json` (` ```json NodeView `)
//!   and deserializes into that type; every field it shows exists in the
//!   type's own serialization, so an invented or misspelt field fails; a
//!   `JobSpec` body, and the `spec` of a `JobView`, validate;
//! - each `shoal …` command line in a ` ```sh ` block, or after `$ ` in a
//!   ` ```text ` block, parses with the real clap definition
//!   ([`Cli::try_parse_from`]); `cargo run … --bin shoal -- ARGS` counts as
//!   `shoal ARGS`. The commands are parsed, not run.
//!
//! Not checked: other command lines (`cargo`, scripts, `shoal-sim`, the
//! benchmarks), commands written inline in prose or tables (they hold
//! placeholders such as `NAME`), and output shown in ` ```text ` blocks.

use std::path::{Path, PathBuf};

use clap::Parser as _;
use pulldown_cmark::{CodeBlockKind, Event, Parser, Tag, TagEnd};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use shoal_model::JobSpec;
use shoal_node::api::types::{
    DeploymentView, ErrorBody, HealthView, NodeView, StatusView, SubmitResponse,
};
use shoal_node::placement::TaskView;
use shoal_node::services::ServiceView;
use shoal_state::JobView;

use crate::Cli;

/// A fenced code block of a Markdown file.
struct Block {
    /// `docs/jobs.md:8`.
    at: String,
    /// The info string: `toml`, `json NodeView`, `sh`.
    info: String,
    text: String,
}

impl Block {
    fn lang(&self) -> &str {
        self.info.split_whitespace().next().unwrap_or("")
    }
}

fn markdown_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ is next to cli/")
        .map(|e| e.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    let mut files = vec![root.join("README.md")];
    files.extend(docs);
    files
}

fn blocks() -> Vec<Block> {
    let mut out = Vec::new();
    for path in markdown_files() {
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let name = path
            .components()
            .rev()
            .take(2)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/")
            .trim_start_matches("../")
            .to_owned();
        let mut current: Option<Block> = None;
        for (event, range) in Parser::new(&text).into_offset_iter() {
            match event {
                Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(info))) => {
                    let line = text[..range.start].matches('\n').count() + 1;
                    current = Some(Block {
                        at: format!("{name}:{line}"),
                        info: info.to_string(),
                        text: String::new(),
                    });
                }
                Event::Text(t) => {
                    if let Some(b) = current.as_mut() {
                        b.text.push_str(&t);
                    }
                }
                Event::End(TagEnd::CodeBlock) => out.extend(current.take()),
                _ => {}
            }
        }
    }
    out
}

/// Panics listing every failure, or unless at least `least` examples were
/// checked (so that a change in how blocks are found cannot make the test
/// pass by checking nothing).
fn report(what: &str, checked: usize, least: usize, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} of the {checked} {what} fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        checked >= least,
        "only {checked} {what} found, expected at least {least}"
    );
}

#[test]
fn toml_job_files_in_the_docs_validate() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for b in blocks().iter().filter(|b| b.info.trim() == "toml") {
        checked += 1;
        if let Err(e) = JobSpec::from_toml(&b.text) {
            failures.push(format!("{}: {e}", b.at));
        }
    }
    report("TOML job files", checked, 2, &failures);
}

fn round_trip<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<Value, String> {
    let value: T = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    Ok(serde_json::to_value(value).expect("an API type serializes"))
}

fn valid_spec(spec: &Value, at: &str) -> Result<(), String> {
    JobSpec::from_json(spec.clone())
        .map(|_| ())
        .map_err(|e| format!("{at}: {e}"))
}

/// Every field `doc` shows is in `back` (the type's serialization of it),
/// recursively; `at` is the path so far.
fn shown_fields_exist(doc: &Value, back: &Value, at: &str) -> Result<(), String> {
    match (doc, back) {
        (Value::Object(d), Value::Object(b)) => {
            for (k, v) in d {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                let Some(bv) = b.get(k) else {
                    return Err(format!("{path}: no such field"));
                };
                shown_fields_exist(v, bv, &path)?;
            }
            Ok(())
        }
        (Value::Array(d), Value::Array(b)) => {
            for (i, (v, bv)) in d.iter().zip(b).enumerate() {
                shown_fields_exist(v, bv, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Checks one JSON example against the type named in its info string.
fn check_json(kind: &str, text: &str) -> Result<(), String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let back = match kind {
        "ErrorBody" => round_trip::<ErrorBody>(&doc)?,
        "HealthView" => round_trip::<HealthView>(&doc)?,
        "NodeView" => round_trip::<NodeView>(&doc)?,
        "StatusView" => round_trip::<StatusView>(&doc)?,
        "JobView" => {
            valid_spec(&doc["spec"], "spec")?;
            round_trip::<JobView>(&doc)?
        }
        "SubmitResponse" => {
            valid_spec(&doc["job"]["spec"], "job.spec")?;
            round_trip::<SubmitResponse>(&doc)?
        }
        "TaskView[]" => round_trip::<Vec<TaskView>>(&doc)?,
        "DeploymentView[]" => round_trip::<Vec<DeploymentView>>(&doc)?,
        "ServiceView" => round_trip::<ServiceView>(&doc)?,
        "SummaryView" => round_trip::<shoal_node::api::summary::SummaryView>(&doc)?,
        "Policy" => {
            let p: shoal_model::acl::Policy =
                serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
            p.validate().map_err(|(f, e)| format!("{f}: {e}"))?;
            serde_json::to_value(p).map_err(|e| e.to_string())?
        }
        "TokenBody" => round_trip::<shoal_node::api::acl::TokenBody>(&doc)?,
        "MadeTokenView" => round_trip::<shoal_node::api::acl::MadeTokenView>(&doc)?,
        "SelfView" => round_trip::<shoal_node::api::acl::SelfView>(&doc)?,
        "SecretBody" => round_trip::<shoal_node::api::secrets::SecretBody>(&doc)?,
        "ForgottenNode" => round_trip::<shoal_state::ForgottenNode>(&doc)?,
        "KeyringView" => round_trip::<shoal_node::api::keyring::KeyringView>(&doc)?,
        "JobSpec" => JobSpec::from_json(doc.clone())
            .map_err(|e| e.to_string())?
            .to_json(),
        "" => return Err("name its type after json, as in ```json NodeView".into()),
        other => {
            return Err(format!(
                "unknown type {other:?}: use one of those in cli/src/doc_examples.rs, or add it there"
            ));
        }
    };
    shown_fields_exist(&doc, &back, "")
}

#[test]
fn json_examples_in_the_docs_match_their_types() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for b in blocks().iter().filter(|b| b.lang() == "json") {
        checked += 1;
        let kind = b.info.split_whitespace().nth(1).unwrap_or("");
        if let Err(e) = check_json(kind, &b.text) {
            failures.push(format!("{} (json {kind}): {e}", b.at));
        }
    }
    report("JSON examples", checked, 8, &failures);
}

/// The `shoal` argument lists of a block's command lines, each with where
/// it is; `Err` for a line the shell could not split.
fn shoal_commands(b: &Block) -> Vec<(String, Result<Vec<String>, String>)> {
    let mut lines: Vec<String> = Vec::new();
    match b.lang() {
        "sh" | "bash" | "shell" => {
            let mut pending = String::new();
            for line in b.text.lines() {
                match line.strip_suffix('\\') {
                    Some(head) => {
                        pending.push_str(head);
                        pending.push(' ');
                    }
                    None => {
                        pending.push_str(line);
                        lines.push(std::mem::take(&mut pending));
                    }
                }
            }
        }
        "text" => lines.extend(
            b.text
                .lines()
                .filter_map(|l| l.strip_prefix("$ "))
                .map(str::to_owned),
        ),
        _ => {}
    }
    let mut out = Vec::new();
    for line in lines {
        let at = format!("{}: {}", b.at, line.trim());
        let mut words = match shell_words::split(&line) {
            Ok(w) => w,
            Err(e) => {
                out.push((at, Err(format!("the shell cannot split it: {e}"))));
                continue;
            }
        };
        if let Some(comment) = words.iter().position(|w| w.starts_with('#')) {
            words.truncate(comment);
        }
        let args = match words.first().map(String::as_str) {
            Some("shoal") => words,
            Some("cargo") if words.windows(2).any(|w| w[0] == "--bin" && w[1] == "shoal") => {
                let Some(dashes) = words.iter().position(|w| w == "--") else {
                    continue;
                };
                let mut args = vec!["shoal".to_owned()];
                args.extend(words[dashes + 1..].iter().cloned());
                args
            }
            _ => continue,
        };
        out.push((at, Ok(args)));
    }
    out
}

#[test]
fn shoal_command_lines_in_the_docs_parse() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for b in blocks() {
        for (at, args) in shoal_commands(&b) {
            checked += 1;
            let result = args.and_then(|args| match Cli::try_parse_from(&args) {
                Ok(_) => Ok(()),
                Err(e)
                    if matches!(
                        e.kind(),
                        clap::error::ErrorKind::DisplayHelp
                            | clap::error::ErrorKind::DisplayVersion
                    ) =>
                {
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            });
            if let Err(e) = result {
                failures.push(format!("{at}\n    {}", e.trim().replace('\n', "\n    ")));
            }
        }
    }
    report("shoal command lines", checked, 8, &failures);
}

/// The checks fail on the mistakes they are for.
#[test]
fn the_checks_catch_broken_examples() {
    // A key after [restart] belongs to it: the mistake once at the top of
    // docs/jobs.md.
    let e = JobSpec::from_toml(
        "name = \"web\"\n[task]\ncommand = \"x\"\n[restart]\nmode = \"always\"\nspread = \"zone\"\n",
    )
    .unwrap_err();
    assert_eq!(e.field(), "restart.spread", "{e}");

    let node = r#"{"id": "3ebe59ee90aa688e", "name": "a", "state": "alive",
        "gossip": "10.0.0.1:5481", "rpc": null, "api": null, "dc": null, "zone": null,
        "region": null, "labels": {}, "capacity": null, "runtimes": [], "version": null,
        "free_class": null, "isolation": null, "generation": 1, "incarnation": 0,
        "first_seen": "2026-11-21T05:38:47Z", "state_since": "2026-11-21T05:38:47Z",
        "local": true}"#;
    check_json("NodeView", node).unwrap();
    let invented = node.replace("\"local\"", "\"colour\": \"red\", \"local\"");
    assert_eq!(
        check_json("NodeView", &invented).unwrap_err(),
        "colour: no such field"
    );
    let missing = node.replace("\"generation\": 1,", "");
    assert!(
        check_json("NodeView", &missing)
            .unwrap_err()
            .contains("generation"),
    );
    assert!(check_json("", node).unwrap_err().contains("name its type"));
    let e = check_json("JobSpec", r#"{"name": "web", "task": {"cpus": 1}}"#).unwrap_err();
    assert!(e.contains("task.cpus"), "{e}");

    let b = Block {
        at: "x.md:1".into(),
        info: "sh".into(),
        text: "shoal run --name web \\\n  --cmd 'sleep 1' --frobnicate   # no such flag\n".into(),
    };
    let commands = shoal_commands(&b);
    assert_eq!(commands.len(), 1);
    let args = commands[0].1.clone().unwrap();
    assert_eq!(args.last().unwrap(), "--frobnicate");
    assert!(Cli::try_parse_from(&args).is_err());
}
