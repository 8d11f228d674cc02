//! Batch tasks that finished for good, recorded in their job's document.
//!
//! A batch task that exited 0 is complete; one whose restart policy gave up
//! (attempts exhausted) failed. Either end is written once into the job's
//! document, by the node that ran the task or by its coordinator (both
//! may: a second record changes nothing), and replicates like any change,
//! so that no node ever runs that task again for the same **run** of the
//! job: after a coordinator or a holder changes, an agent restarts, or a
//! partition heals.
//!
//! A run is what one spec runs: it starts at the version of the job's last
//! create or update. A scale keeps the run (tasks already complete stay
//! complete, new indexes run); a spec change or a re-creation starts a new
//! one, in which no task is complete yet.
//!
//! Each record is a root key of its own, `completed/<index>` or
//! `failed/<index>`, holding `{version, node, at_ms, exit_code, reason}`:
//! records of different tasks written at the same time on different nodes
//! never touch the same key, so none hides another after a merge (as two
//! concurrent creations of one shared map would); two records of one task
//! resolve to one winner, and either says the same. Recording adds no
//! history entry: the job's version does not move.

use std::collections::{BTreeMap, BTreeSet};

use automerge::{AutoCommit, ROOT, ReadDoc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::jsondoc;

/// Root key prefix of complete tasks' records.
const COMPLETED: &str = "completed/";
/// Root key prefix of failed tasks' records.
const FAILED: &str = "failed/";

/// How a batch task finished for good.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOutcome {
    /// Exited 0 (complete); otherwise failed with no restart left.
    pub ok: bool,
    /// The job version the task ran.
    pub version: u64,
    /// The node that ran it (its id).
    pub node: String,
    /// When it ended, ms since the Unix epoch.
    pub at_ms: u64,
    /// Its last exit code.
    pub exit_code: Option<i32>,
    /// Why it ended (`exited with code 3`).
    pub reason: Option<String>,
}

/// Where a batch job stands in its current run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum BatchStatus {
    /// Some tasks have not finished yet.
    Running,
    /// Every task exited 0.
    Complete,
    /// A task ran out of restart attempts: the run cannot complete.
    Failed,
}

impl BatchStatus {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Running => "running",
            BatchStatus::Complete => "complete",
            BatchStatus::Failed => "failed",
        }
    }
}

fn key_of(ok: bool, index: u32) -> String {
    format!("{}{index}", if ok { COMPLETED } else { FAILED })
}

fn parse(v: &Value, ok: bool) -> Option<TaskOutcome> {
    Some(TaskOutcome {
        ok,
        version: v["version"].as_u64()?,
        node: v["node"].as_str().unwrap_or_default().to_owned(),
        at_ms: v["at_ms"].as_u64().unwrap_or(0),
        exit_code: v["exit_code"].as_i64().and_then(|c| i32::try_from(c).ok()),
        reason: v["reason"].as_str().map(str::to_owned),
    })
}

/// The version at which the job's current run began: that of its last
/// create or update (0 for a document with neither).
pub(crate) fn run_version(history: &Value) -> u64 {
    let Value::Array(items) = history else {
        return 0;
    };
    items
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e["op"].as_str(), Some("create" | "update")))
        .map(|(i, _)| i as u64 + 1)
        .next_back()
        .unwrap_or(0)
}

/// Every record of the document that belongs to the run begun at `run`,
/// by index: a complete one wins over a failed one of the same task.
pub(crate) fn read(doc: &AutoCommit, run: u64) -> BTreeMap<u32, TaskOutcome> {
    let mut out: BTreeMap<u32, TaskOutcome> = BTreeMap::new();
    for key in doc.keys(ROOT) {
        let (ok, index) = if let Some(i) = key.strip_prefix(COMPLETED) {
            (true, i)
        } else if let Some(i) = key.strip_prefix(FAILED) {
            (false, i)
        } else {
            continue;
        };
        let Ok(index) = index.parse::<u32>() else {
            continue;
        };
        let Some(o) = parse(&jsondoc::get_root(doc, &key), ok) else {
            continue;
        };
        if o.version < run {
            continue;
        }
        match out.get(&index) {
            Some(have) if have.ok || !ok => {}
            _ => {
                out.insert(index, o);
            }
        }
    }
    out
}

/// The keys of every record in the document (to tell which are new).
pub(crate) fn keys(doc: &AutoCommit) -> BTreeSet<String> {
    doc.keys(ROOT)
        .filter(|k| k.starts_with(COMPLETED) || k.starts_with(FAILED))
        .collect()
}

/// The index and end of a record key, and whether it says complete.
pub(crate) fn parse_key(key: &str) -> Option<(u32, bool)> {
    if let Some(i) = key.strip_prefix(COMPLETED) {
        return i.parse().ok().map(|i| (i, true));
    }
    key.strip_prefix(FAILED)
        .and_then(|i| i.parse().ok())
        .map(|i| (i, false))
}

/// The record at `key`, whatever its run.
pub(crate) fn at(doc: &AutoCommit, key: &str) -> Option<TaskOutcome> {
    let (_, ok) = parse_key(key)?;
    parse(&jsondoc::get_root(doc, key), ok)
}

/// Writes the record of task `index` (not committed).
pub(crate) fn put(
    doc: &mut AutoCommit,
    index: u32,
    o: &TaskOutcome,
) -> Result<(), automerge::AutomergeError> {
    let value = json!({
        "version": o.version,
        "node": o.node,
        "at_ms": o.at_ms,
        "exit_code": o.exit_code,
        "reason": o.reason,
    });
    jsondoc::put(doc, &ROOT, key_of(o.ok, index), &value)
}

/// The status of a batch job of `count` tasks with `records` for its
/// current run: how many complete, how many failed, and what that makes.
pub(crate) fn status(count: u32, records: &BTreeMap<u32, TaskOutcome>) -> (BatchStatus, u32, u32) {
    let (mut complete, mut failed) = (0, 0);
    for o in records.range(..count).map(|(_, o)| o) {
        if o.ok {
            complete += 1;
        } else {
            failed += 1;
        }
    }
    let status = if failed > 0 {
        BatchStatus::Failed
    } else if complete >= count {
        BatchStatus::Complete
    } else {
        BatchStatus::Running
    };
    (status, complete, failed)
}
