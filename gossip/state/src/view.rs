//! What the API and placement read of a job's document: [`JobView`] and
//! its history ([`HistoryEntry`]).

use std::collections::{BTreeMap, BTreeSet};

use automerge::AutoCommit;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shoal_model::{Change, Deployment, JobSpec, JobType};

use crate::jsondoc;
use crate::outcomes::{self, BatchStatus, TaskOutcome};
use crate::store::{rfc3339, u64_at};

/// One entry of a job's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryEntry {
    /// The version this change made (its position in the history).
    pub version: u64,
    /// `create`, `update`, `scale` or `delete`.
    pub op: String,
    /// When (RFC 3339).
    pub at: String,
    /// Which node accepted it.
    pub node: String,
    /// The name of the ACL token that asked for it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The count it set (scale), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// What changed, as the accepting node saw it.
    #[serde(default)]
    pub changes: Vec<Change>,
    /// The spec as written (create, update).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<shoal_model::JobSpec>))]
    pub spec: Option<Value>,
}

/// A job as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobView {
    /// Name.
    pub name: String,
    /// Kind.
    #[serde(rename = "type")]
    pub kind: Option<JobType>,
    /// Tasks wanted (absent for system jobs).
    #[serde(default)]
    pub count: Option<u32>,
    /// Number of changes so far.
    pub version: u64,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Last changed (RFC 3339).
    pub updated_at: String,
    /// Deleted (kept as a tombstone).
    #[serde(default)]
    pub deleted: bool,
    /// The spec (with `count`), as merged from every node's writes.
    #[cfg_attr(feature = "openapi", schema(value_type = shoal_model::JobSpec))]
    pub spec: Value,
    /// Set when concurrent writes merged into a spec that does not validate;
    /// such a job is not run until it is fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
    /// Batch jobs: `running`, `complete` (every task of the current run
    /// exited 0) or `failed` (a task ran out of restart attempts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<BatchStatus>,
    /// Batch jobs: tasks of the current run that completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks_complete: Option<u32>,
    /// Batch jobs: tasks of the current run that failed for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks_failed: Option<u32>,
    /// Batch jobs: the records of the tasks of the current run that
    /// finished for good, by index (for placement; not shown by the API).
    #[serde(skip)]
    pub finished: BTreeMap<u32, TaskOutcome>,
    /// The version at which the current run began: the last create or
    /// update (a scale keeps the run). For placement; not shown.
    #[serde(skip)]
    pub run_version: u64,
    /// Service jobs with `[update]`: the latest rolling deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<Deployment>,
    /// The jobs of its `after` not yet recorded ready: while there is
    /// one, none of its tasks is placed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<String>,
}

pub(crate) fn history_ids(doc: &AutoCommit) -> BTreeSet<String> {
    history_ids_ordered(doc).into_iter().collect()
}

pub(crate) fn history_ids_ordered(doc: &AutoCommit) -> Vec<String> {
    match jsondoc::get_root(doc, "history") {
        Value::Array(items) => items
            .iter()
            .map(|e| e["id"].as_str().unwrap_or_default().to_owned())
            .collect(),
        _ => Vec::new(),
    }
}

pub(crate) fn history_of(doc: &AutoCommit) -> Vec<HistoryEntry> {
    let Value::Array(items) = jsondoc::get_root(doc, "history") else {
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .map(|(i, e)| HistoryEntry {
            version: i as u64 + 1,
            op: e["op"].as_str().unwrap_or("update").to_owned(),
            at: rfc3339(e["at_ms"].as_u64().unwrap_or(0)),
            node: e["node"].as_str().unwrap_or_default().to_owned(),
            by: e["by"].as_str().map(str::to_owned),
            count: e["count"].as_u64().and_then(|c| u32::try_from(c).ok()),
            changes: e["changes"]
                .as_str()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default(),
            spec: e["spec"]
                .as_str()
                .and_then(|s| serde_json::from_str(s).ok()),
        })
        .collect()
}

/// The jobs `spec` lists in `after` with no record of being ready.
fn waiting_for(doc: &AutoCommit, spec: &Value) -> Vec<String> {
    let Some(after) = spec.get("after").and_then(Value::as_array) else {
        return Vec::new();
    };
    let ready = crate::after::read(doc);
    after
        .iter()
        .filter_map(Value::as_str)
        .filter(|d| !ready.contains(*d))
        .map(str::to_owned)
        .collect()
}

pub(crate) fn view_of(name: &str, doc: &AutoCommit) -> Option<JobView> {
    let mut spec = jsondoc::get_root(doc, "spec");
    if !spec.is_object() {
        // Only a delete or nothing readable: not a job (yet).
        let deleted = jsondoc::get_root(doc, "deleted").as_bool() == Some(true);
        if !deleted {
            return None;
        }
        spec = json!({});
    }
    let count = u64_at(doc, "count").and_then(|c| u32::try_from(c).ok());
    if let (Some(c), Some(obj)) = (count, spec.as_object_mut()) {
        obj.insert("count".into(), json!(c));
    }
    let history = jsondoc::get_root(doc, "history");
    let version = match &history {
        Value::Array(items) => items.len() as u64,
        _ => 0,
    };
    let (kind, invalid) = match serde_json::from_value::<JobSpec>(spec.clone()) {
        Ok(s) => (
            Some(s.kind),
            JobSpec::from_json(spec.clone())
                .err()
                .map(|e| e.to_string()),
        ),
        Err(e) => (
            spec.get("type")
                .and_then(|t| serde_json::from_value(t.clone()).ok()),
            Some(e.to_string()),
        ),
    };
    let deleted = jsondoc::get_root(doc, "deleted").as_bool() == Some(true);
    let waiting = waiting_for(doc, &spec);
    let run_version = outcomes::run_version(&history);
    let (finished, batch) = if kind == Some(JobType::Batch) && !deleted {
        let records = outcomes::read(doc, run_version);
        let batch = outcomes::status(count.unwrap_or(0), &records);
        (records, Some(batch))
    } else {
        (BTreeMap::new(), None)
    };
    Some(JobView {
        name: name.to_owned(),
        kind,
        count,
        version,
        created_at: rfc3339(u64_at(doc, "created_at").unwrap_or(0)),
        updated_at: rfc3339(u64_at(doc, "updated_at").unwrap_or(0)),
        deleted,
        spec,
        invalid: if deleted { None } else { invalid },
        status: batch.map(|b| b.0),
        tasks_complete: batch.map(|b| b.1),
        tasks_failed: batch.map(|b| b.2),
        finished,
        run_version,
        deployment: if deleted {
            None
        } else {
            crate::deployments::latest(doc)
        },
        waiting_for: waiting,
    })
}
