//! Rolling deployments, recorded in their job's document.
//!
//! Each deployment is a root key of its own, `deployment/<version>` (the
//! job version it deploys), holding a map of scalar fields: `from_version`,
//! `status`, `canary`, `promoted`, `active` and `done` (index sets written
//! compactly, `0-3,7`), `healthy`, `description`, `started_ms`,
//! `updated_ms`. The change that makes a new version creates the map (one
//! writer); afterwards the node that drives the deployment and the API
//! (promote, fail, pause, resume) write single fields, so that concurrent
//! writes of different fields merge and two of one field resolve to one
//! winner on every node. Recording a step adds no history entry: the
//! job's version does not move.

use std::collections::BTreeSet;

use automerge::{AutoCommit, ObjType, ROOT, ReadDoc};
use serde_json::{Map, Value, json};
use shoal_model::{Deployment, DeploymentPatch, DeploymentStatus, format_indexes, parse_indexes};

use crate::jsondoc::{self, DocResult};
use crate::{Store, WriteError};

/// Root key prefix of deployment records.
const PREFIX: &str = "deployment/";

fn key_of(version: u64) -> String {
    format!("{PREFIX}{version}")
}

fn fields(d: &Deployment) -> Map<String, Value> {
    let v = json!({
        "from_version": d.from_version,
        "status": d.status.as_str(),
        "canary": d.canary,
        "promoted": d.promoted,
        "active": format_indexes(&d.active),
        "done": format_indexes(&d.done),
        "healthy": d.healthy,
        "description": d.description,
        "started_ms": d.started_ms,
        "updated_ms": d.updated_ms,
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn parse(version: u64, v: &Value) -> Option<Deployment> {
    let n = |k: &str| v[k].as_u64();
    Some(Deployment {
        version,
        from_version: n("from_version")?,
        status: DeploymentStatus::parse(v["status"].as_str()?)?,
        canary: u32::try_from(n("canary").unwrap_or(0)).unwrap_or(0),
        promoted: v["promoted"].as_bool().unwrap_or(false),
        active: parse_indexes(v["active"].as_str().unwrap_or_default()),
        done: parse_indexes(v["done"].as_str().unwrap_or_default()),
        healthy: u32::try_from(n("healthy").unwrap_or(0)).unwrap_or(0),
        description: v["description"].as_str().unwrap_or_default().to_owned(),
        started_ms: n("started_ms").unwrap_or(0),
        updated_ms: n("updated_ms").unwrap_or(0),
    })
}

/// Every deployment of the document, oldest first.
pub(crate) fn read_all(doc: &AutoCommit) -> Vec<Deployment> {
    let mut out: Vec<Deployment> = doc
        .keys(ROOT)
        .filter_map(|k| {
            let version = k.strip_prefix(PREFIX)?.parse().ok()?;
            parse(version, &jsondoc::get_root(doc, &k))
        })
        .collect();
    out.sort_by_key(|d| d.version);
    out
}

/// The latest deployment of the document.
pub(crate) fn latest(doc: &AutoCommit) -> Option<Deployment> {
    read_all(doc).pop()
}

/// Writes a new deployment's record whole (not committed).
pub(crate) fn put(doc: &mut AutoCommit, d: &Deployment) -> DocResult<()> {
    jsondoc::put(doc, &ROOT, key_of(d.version), &Value::Object(fields(d)))
}

/// Writes the fields of deployment `version` that `patch` changes (not
/// committed); whether it held such a deployment.
pub(crate) fn patch(
    doc: &mut AutoCommit,
    version: u64,
    patch: &DeploymentPatch,
    now_ms: u64,
) -> DocResult<bool> {
    let key = key_of(version);
    let Some(current) = parse(version, &jsondoc::get_root(doc, &key)) else {
        return Ok(false);
    };
    let obj = match doc.get(ROOT, key.as_str())? {
        Some((automerge::Value::Object(ObjType::Map), id)) => id,
        _ => return Ok(false),
    };
    let old = fields(&current);
    let new = fields(&patch.apply(&current, now_ms));
    for (k, v) in &new {
        if old.get(k) != Some(v) {
            jsondoc::put(doc, &obj, k.as_str(), v)?;
        }
    }
    Ok(true)
}

/// Ends every deployment still in progress as `cancelled`, saying `why`
/// (not committed).
pub(crate) fn cancel_in_progress(doc: &mut AutoCommit, why: &str, now_ms: u64) -> DocResult<()> {
    for d in read_all(doc) {
        if d.status.in_progress() {
            let p = DeploymentPatch {
                status: Some(DeploymentStatus::Cancelled),
                active: Some(BTreeSet::new()),
                description: Some(why.to_owned()),
                ..DeploymentPatch::default()
            };
            patch(doc, d.version, &p, now_ms)?;
        }
    }
    Ok(())
}

/// What people do to a job's deployment in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeployAction {
    /// Its canaries are good: replace the rest.
    Promote,
    /// Stop it here (and revert, if the job asks for `auto_revert`).
    Fail,
    /// Hold it where it stands.
    Pause,
    /// Go on after a pause.
    Resume,
}

impl DeployAction {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeployAction::Promote => "promote",
            DeployAction::Fail => "fail",
            DeployAction::Pause => "pause",
            DeployAction::Resume => "resume",
        }
    }
}

fn refused(field: &str, message: String) -> WriteError {
    WriteError::Rejected {
        field: field.to_owned(),
        message,
    }
}

impl Store {
    /// Applies `action` to job `name`'s latest deployment; the deployment
    /// after it.
    pub fn deployment_action(
        &mut self,
        name: &str,
        action: DeployAction,
        now_ms: u64,
    ) -> Result<Deployment, WriteError> {
        let view = self
            .view(name)
            .filter(|v| !v.deleted)
            .ok_or_else(|| WriteError::NotFound(name.to_owned()))?;
        let Some(d) = view.deployment else {
            return Err(refused(
                "job",
                format!(
                    "job {name:?} has no deployment: a change of what a service with [update] runs starts one"
                ),
            ));
        };
        let v = d.version;
        let status = d.status;
        let state = |what: &str| {
            refused(
                "status",
                format!("cannot {what} the deployment of version {v} of {name:?}: it is {status}"),
            )
        };
        let (patch, revert) = match action {
            DeployAction::Promote => {
                if status != DeploymentStatus::Running {
                    return Err(state("promote"));
                }
                if d.promoted {
                    return Err(refused(
                        "promoted",
                        format!(
                            "the deployment of version {v} of {name:?} has no canaries waiting (canary = {}, promoted already)",
                            d.canary
                        ),
                    ));
                }
                let p = DeploymentPatch {
                    promoted: Some(true),
                    description: Some("promoted: replacing the remaining tasks".into()),
                    ..DeploymentPatch::default()
                };
                (p, false)
            }
            DeployAction::Fail => {
                if !status.in_progress() {
                    return Err(state("fail"));
                }
                let p = DeploymentPatch {
                    status: Some(DeploymentStatus::Failed),
                    active: Some(BTreeSet::new()),
                    description: Some("failed by hand (shoal deployment fail)".into()),
                    ..DeploymentPatch::default()
                };
                let auto_revert = view.spec["update"]["auto_revert"].as_bool() == Some(true);
                (p, auto_revert)
            }
            DeployAction::Pause => {
                if status != DeploymentStatus::Running {
                    return Err(state("pause"));
                }
                let p = DeploymentPatch {
                    status: Some(DeploymentStatus::Paused),
                    description: Some("paused (shoal deployment resume goes on)".into()),
                    ..DeploymentPatch::default()
                };
                (p, false)
            }
            DeployAction::Resume => {
                if status != DeploymentStatus::Paused {
                    return Err(state("resume"));
                }
                let p = DeploymentPatch {
                    status: Some(DeploymentStatus::Running),
                    description: Some("resumed".into()),
                    ..DeploymentPatch::default()
                };
                (p, false)
            }
        };
        self.deployment_step(name, v, patch, revert, now_ms)?;
        self.deployments(name)
            .and_then(|all| all.into_iter().find(|x| x.version == v))
            .ok_or_else(|| WriteError::NotFound(name.to_owned()))
    }

    /// Writes a step that the driver of deployment `version` of job
    /// `name` decided (see the placer's `deploy.rs`): nothing when the
    /// deployment has ended meanwhile (a driver that had not heard yet
    /// never brings one back). With `revert`, the deployment failed and
    /// the job asks for `auto_revert`: the last version that deployed
    /// healthily is written as a new version (keeping the job's count),
    /// and the deployment ends `reverted`. Whether anything was written.
    pub fn deployment_step(
        &mut self,
        name: &str,
        version: u64,
        mut patch: DeploymentPatch,
        revert: bool,
        now_ms: u64,
    ) -> Result<bool, WriteError> {
        let Some(current) = self
            .deployments(name)
            .and_then(|all| all.into_iter().find(|d| d.version == version))
        else {
            return Ok(false);
        };
        if !current.status.in_progress() {
            return Ok(false);
        }
        let target = if revert {
            self.stable_version(name, version)
        } else {
            None
        };
        if revert {
            let why = patch.description.take().unwrap_or_default();
            let next = self.view(name).map_or(0, |v| v.version) + 1;
            patch.description = Some(match target {
                Some(u) => {
                    patch.status = Some(DeploymentStatus::Reverted);
                    format!("{why}; reverted to version {u} (as version {next})")
                }
                None => format!("{why}; no earlier version deployed healthily: not reverted"),
            });
        }
        let wrote = self.update_deployment(name, version, &patch, now_ms)?;
        if let Some(u) = target {
            self.revert(name, u, true, now_ms)?;
        }
        Ok(wrote)
    }

    /// Writes the spec job `name` had at `version` as a new version
    /// (`shoal job revert`; `keep_count`: with the job's current count,
    /// as `auto_revert` does).
    pub fn revert(
        &mut self,
        name: &str,
        version: u64,
        keep_count: bool,
        now_ms: u64,
    ) -> Result<crate::Written, WriteError> {
        let view = self
            .view(name)
            .filter(|v| !v.deleted)
            .ok_or_else(|| WriteError::NotFound(name.to_owned()))?;
        let Some(mut spec) = self.spec_at(name, version) else {
            return Err(refused(
                "version",
                format!(
                    "job {name:?} has no version {version} to go back to (its versions are 1-{})",
                    view.version
                ),
            ));
        };
        if keep_count && let (Some(c), Some(obj)) = (view.count, spec.as_object_mut()) {
            obj.insert("count".into(), json!(c));
        }
        let spec = shoal_model::JobSpec::from_json(spec).map_err(|e| {
            refused(
                "version",
                format!("version {version} of {name:?} does not validate any more: {e}"),
            )
        })?;
        let written = self.write(crate::Write {
            by: None,
            name: name.to_owned(),
            op: crate::WriteOp::Put(Box::new(spec)),
            if_version: None,
            now_ms,
        })?;
        // The version it goes back to ran before: its deployment needs no
        // canaries (a revert must not wait for someone to promote it).
        let v = written.job.version;
        if let Some(d) = written.job.deployment.as_ref().filter(|d| d.version == v) {
            let p = DeploymentPatch {
                promoted: Some(true),
                description: Some(format!("reverting to version {version}")),
                ..DeploymentPatch::default()
            };
            if !d.promoted || d.description != *p.description.as_ref().expect("set") {
                self.update_deployment(name, v, &p, now_ms)?;
                let mut written = written;
                written.job = self.view(name).unwrap_or(written.job);
                return Ok(written);
            }
        }
        Ok(written)
    }
}
