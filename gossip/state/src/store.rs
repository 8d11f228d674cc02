//! The replica of the desired state a node holds: one automerge document per
//! job, writes, views, tombstones, and what must be persisted or pushed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, AutoCommit, ChangeHash, ObjType, ROOT, ReadDoc};
use serde_json::{Value, json};
use shoal_gossip::NodeId;
use shoal_model::{Change, Deployment, DeploymentPatch, JobType, diff};

pub use crate::io::{JobEvent, PersistOp, Push, StateConfig, Write, WriteError, WriteOp, Written};

use crate::deployments;
use crate::jsondoc;
use crate::outcomes::{self, BatchStatus, TaskOutcome};
use crate::view::{HistoryEntry, JobView, history_ids, history_ids_ordered, history_of, view_of};

/// Buckets the documents are split into for digests.
pub const BUCKETS: usize = 256;

pub(crate) struct JobDoc {
    pub(crate) doc: AutoCommit,
    pub(crate) heads: Vec<ChangeHash>,
    pub(crate) fingerprint: u64,
    /// The job's view as of `heads` (reading one out of the document
    /// costs far more than copying it; listing 10,000 jobs read each one
    /// every time). Recomputed when the heads it was read at are not the
    /// document's any more, so no writer has to remember to clear it.
    pub(crate) view: ViewCache,
}

/// A document's [`JobView`] and the heads it was read at.
#[derive(Default)]
pub(crate) struct ViewCache(std::sync::Mutex<Option<KeptView>>);

/// The heads a view was read at, and the view (`None`: not a job).
type KeptView = (Vec<ChangeHash>, Option<Arc<JobView>>);

impl ViewCache {
    /// The view of `name` at `heads`, read from `doc` only when the cached
    /// one is of other heads.
    fn get(&self, name: &str, doc: &AutoCommit, heads: &[ChangeHash]) -> Option<Arc<JobView>> {
        let mut cached = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*cached {
            Some((at, view)) if at.as_slice() == heads => view.clone(),
            _ => {
                let view = view_of(name, doc).map(Arc::new);
                *cached = Some((heads.to_vec(), view.clone()));
                view
            }
        }
    }
}

/// A node's replica of the desired state.
///
/// Inputs: [`write`](Self::write) (the API), [`handle_request`] and
/// [`handle_response`] (peers), [`expire`](Self::expire) (periodically).
/// After every input the caller drains [`poll_persist`](Self::poll_persist)
/// (and makes it durable before acknowledging a write),
/// [`poll_push`](Self::poll_push) and [`poll_event`](Self::poll_event).
///
/// [`handle_request`]: Self::handle_request
/// [`handle_response`]: Self::handle_response
pub struct Store {
    pub(crate) config: StateConfig,
    pub(crate) node: NodeId,
    actor: ActorId,
    pub(crate) docs: BTreeMap<String, JobDoc>,
    pub(crate) buckets: Vec<u64>,
    pub(crate) dropped: BTreeMap<String, u64>,
    pub(crate) persist: VecDeque<PersistOp>,
    pub(crate) pushes: VecDeque<Push>,
    events: VecDeque<JobEvent>,
    entry_seq: u64,
    /// Messages from peers that could not be used, by reason.
    pub(crate) rejected: BTreeMap<&'static str, u64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("node", &self.node)
            .field("docs", &self.docs.len())
            .finish_non_exhaustive()
    }
}

/// `ms` since the Unix epoch in RFC 3339 (no clock is read).
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

pub(crate) fn bucket_of(name: &str) -> usize {
    (xxhash_rust::xxh3::xxh3_64(name.as_bytes()) % BUCKETS as u64) as usize
}

pub(crate) fn fingerprint(name: &str, heads: &[ChangeHash]) -> u64 {
    // A document with no applied change (only changes waiting for their
    // dependencies) counts as absent in digests.
    if heads.is_empty() {
        return 0;
    }
    let mut bytes = Vec::with_capacity(name.len() + 1 + heads.len() * 32);
    bytes.extend_from_slice(name.as_bytes());
    bytes.push(0);
    let mut sorted: Vec<&ChangeHash> = heads.iter().collect();
    sorted.sort();
    for h in sorted {
        bytes.extend_from_slice(&h.0);
    }
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// Whether automerge reads `bytes` as changes without error or panic.
fn parses_as_changes(bytes: &[u8]) -> bool {
    std::panic::catch_unwind(|| AutoCommit::new().load_incremental(bytes).is_ok()).unwrap_or(false)
}

pub(crate) fn u64_at(doc: &AutoCommit, key: &str) -> Option<u64> {
    jsondoc::get_root(doc, key).as_u64()
}

impl Store {
    /// An empty replica for node `node` in its life `bump` (the pair names
    /// this replica's automerge actor, unique per start).
    pub fn new(node: NodeId, bump: u32, config: StateConfig) -> Store {
        let mut actor = node.0.to_be_bytes().to_vec();
        actor.extend_from_slice(&bump.to_be_bytes());
        Store {
            config,
            node,
            actor: ActorId::from(actor),
            docs: BTreeMap::new(),
            buckets: vec![0; BUCKETS],
            dropped: BTreeMap::new(),
            persist: VecDeque::new(),
            pushes: VecDeque::new(),
            events: VecDeque::new(),
            entry_seq: 0,
            rejected: BTreeMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &StateConfig {
        &self.config
    }

    /// Number of documents (deleted ones included).
    pub fn doc_count(&self) -> usize {
        self.docs.len()
    }

    /// Messages from peers that could not be used, by reason.
    pub fn rejected(&self) -> &BTreeMap<&'static str, u64> {
        &self.rejected
    }

    pub(crate) fn reject(&mut self, reason: &'static str) {
        *self.rejected.entry(reason).or_default() += 1;
    }

    /// The next record to make durable.
    #[must_use]
    pub fn poll_persist(&mut self) -> Option<PersistOp> {
        self.persist.pop_front()
    }

    /// The next push to send to `push_fanout` random peers.
    #[must_use]
    pub fn poll_push(&mut self) -> Option<Push> {
        self.pushes.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<JobEvent> {
        self.events.pop_front()
    }

    pub(crate) fn push_event(&mut self, e: JobEvent) {
        self.events.push_back(e);
    }

    pub(crate) fn new_doc(&self) -> AutoCommit {
        AutoCommit::new().with_actor(self.actor.clone())
    }

    /// The documents whose names start with `prefix` (`@install/`,
    /// `@trigger/`, …), by name: one range of the ordered map.
    pub(crate) fn docs_under<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = &'a AutoCommit> + 'a {
        self.docs
            .range(prefix.to_owned()..)
            .take_while(move |(n, _)| n.starts_with(prefix))
            .map(|(_, jd)| &jd.doc)
    }

    pub(crate) fn refresh(&mut self, name: &str) {
        let Some(jd) = self.docs.get_mut(name) else {
            return;
        };
        let bucket = bucket_of(name);
        self.buckets[bucket] ^= jd.fingerprint;
        jd.heads = jd.doc.get_heads();
        jd.fingerprint = fingerprint(name, &jd.heads);
        self.buckets[bucket] ^= jd.fingerprint;
    }

    pub(crate) fn remove_doc(&mut self, name: &str) {
        if let Some(jd) = self.docs.remove(name) {
            self.buckets[bucket_of(name)] ^= jd.fingerprint;
        }
    }

    pub(crate) fn insert_doc(&mut self, name: &str, mut doc: AutoCommit) {
        self.remove_doc(name);
        doc.set_actor(self.actor.clone());
        let heads = doc.get_heads();
        let fp = fingerprint(name, &heads);
        self.buckets[bucket_of(name)] ^= fp;
        self.docs.insert(
            name.to_owned(),
            JobDoc {
                doc,
                heads,
                fingerprint: fp,
                view: ViewCache::default(),
            },
        );
    }

    /// The digest of everything this replica holds.
    pub fn root_digest(&self) -> u64 {
        self.buckets.iter().fold(0, |a, b| a ^ b)
    }

    /// Applies a write from this node's API.
    pub fn write(&mut self, w: Write) -> Result<Written, WriteError> {
        let current = self.view(&w.name);
        let live = current.as_ref().filter(|v| !v.deleted);
        let version = current.as_ref().map_or(0, |v| v.version);
        if let Some(expected) = w.if_version {
            let actual = if live.is_some() { version } else { 0 };
            if expected != actual {
                return Err(WriteError::VersionMismatch {
                    name: w.name.clone(),
                    expected,
                    actual,
                });
            }
        }
        let old_spec = live.map(|v| v.spec.clone());
        let (op, new_spec, count) = match &w.op {
            WriteOp::Put(spec) => {
                if spec.name != w.name {
                    return Err(WriteError::Rejected {
                        field: "name".into(),
                        message: format!("the spec is named {:?}, not {:?}", spec.name, w.name),
                    });
                }
                let new = spec.to_json();
                if old_spec.as_ref() == Some(&new) {
                    return Ok(self.unchanged(current.expect("live job has a view")));
                }
                (
                    if live.is_some() { "update" } else { "create" },
                    Some(new),
                    spec.count,
                )
            }
            WriteOp::Scale(n) => {
                let Some(live) = live else {
                    return Err(WriteError::NotFound(w.name.clone()));
                };
                if live.kind == Some(JobType::System) {
                    return Err(WriteError::Rejected {
                        field: "count".into(),
                        message:
                            "system jobs run one task on every eligible node and cannot be scaled"
                                .into(),
                    });
                }
                if live.count == Some(*n) {
                    return Ok(self.unchanged(live.clone()));
                }
                let mut spec = live.spec.clone();
                spec["count"] = json!(n);
                ("scale", Some(spec), Some(*n))
            }
            WriteOp::Delete => {
                if live.is_none() {
                    return Err(WriteError::NotFound(w.name.clone()));
                }
                ("delete", None, None)
            }
        };
        let changes = match (&old_spec, &new_spec) {
            (Some(o), Some(n)) => diff(o, n),
            (None, Some(n)) => diff(&Value::Null, n),
            _ => Vec::new(),
        };
        // What the write does to deployments: a change of what the tasks
        // run (not of count alone) ends the one in progress, and starts a
        // new one when the job asks for rolling updates.
        let runs_differently = match (&old_spec, &new_spec) {
            (Some(o), Some(n)) => without_count(o) != without_count(n),
            _ => false,
        };
        let deploys = match (&w.op, runs_differently) {
            (WriteOp::Put(spec), true)
                if spec.kind == JobType::Service && spec.update.is_some() =>
            {
                let from = current.as_ref().map_or(0, |v| v.run_version);
                let canary = spec.update.as_ref().map_or(0, |u| u.canary);
                Some(Deployment::begin(version + 1, from, canary, w.now_ms))
            }
            _ => None,
        };
        let cancel = match &w.op {
            WriteOp::Delete => Some("the job was deleted".to_owned()),
            WriteOp::Put(_) if runs_differently => {
                Some(format!("superseded by version {}", version + 1))
            }
            _ => None,
        };

        let mut jd_doc = match self.docs.remove(&w.name) {
            Some(jd) => {
                self.buckets[bucket_of(&w.name)] ^= jd.fingerprint;
                jd.doc
            }
            None => self.new_doc(),
        };
        self.dropped.remove(&w.name);
        let before = jd_doc.get_heads();
        let result = self.apply_write(
            &mut jd_doc,
            &w,
            op,
            new_spec.as_ref(),
            count,
            &changes,
            (cancel.as_deref(), deploys.as_ref()),
        );
        self.insert_doc(&w.name, jd_doc);
        if let Err(e) = result {
            return Err(WriteError::Doc(e.to_string()));
        }
        let jd = self.docs.get_mut(&w.name).expect("just inserted");
        let delta = jd.doc.save_after(&before);
        self.publish(&w.name, delta);
        let job = self.view(&w.name).expect("just written");
        let node = self.node.to_string();
        let event = match op {
            "create" => JobEvent::Created {
                name: w.name.clone(),
                version: job.version,
                node,
            },
            "update" => JobEvent::Updated {
                name: w.name.clone(),
                version: job.version,
                node,
                changes: changes.clone(),
            },
            "scale" => JobEvent::Scaled {
                name: w.name.clone(),
                version: job.version,
                node,
                count: count.unwrap_or(0),
            },
            _ => JobEvent::Deleted {
                name: w.name.clone(),
                version: job.version,
                node,
            },
        };
        self.events.push_back(event);
        if let Some(d) = &deploys {
            self.events.push_back(JobEvent::Deployment {
                name: w.name.clone(),
                version: d.version,
                status: d.status,
                description: d.description.clone(),
            });
        }
        Ok(Written {
            job,
            previous_version: version,
            changes,
            created: op == "create",
            unchanged: false,
        })
    }

    /// Records that task `index` of batch job `name` finished for good
    /// (see `docs/state.md`): persisted, pushed and announced like any
    /// write, but with no new version. `Ok(false)` when there is nothing
    /// to record: the job is deleted or not a batch job, the index is
    /// beyond its count, the task ran an earlier run of the job, or the
    /// task's end is recorded already (a complete record also stands over
    /// a failed one).
    pub fn record(
        &mut self,
        name: &str,
        index: u32,
        outcome: TaskOutcome,
    ) -> Result<bool, WriteError> {
        let Some(view) = self.view(name) else {
            return Err(WriteError::NotFound(name.to_owned()));
        };
        let run = {
            let jd = self.docs.get(name).expect("viewed");
            outcomes::run_version(&jsondoc::get_root(&jd.doc, "history"))
        };
        let batch = view.kind == Some(JobType::Batch);
        let counted = view.count.is_some_and(|c| index < c);
        let known = view
            .finished
            .get(&index)
            .is_some_and(|have| have.ok || !outcome.ok);
        if view.deleted || !batch || !counted || outcome.version < run || known {
            return Ok(false);
        }
        let jd = self.docs.get_mut(name).expect("viewed");
        let before = jd.doc.get_heads();
        outcomes::put(&mut jd.doc, index, &outcome).map_err(|e| WriteError::Doc(e.to_string()))?;
        let secs = i64::try_from(outcome.at_ms / 1000).unwrap_or(0);
        jd.doc.commit_with(CommitOptions::default().with_time(secs));
        let delta = jd.doc.save_after(&before);
        self.refresh(name);
        self.publish(name, delta);
        self.events.push_back(JobEvent::TaskFinished {
            name: name.to_owned(),
            index,
            status: if outcome.ok {
                BatchStatus::Complete
            } else {
                BatchStatus::Failed
            },
            version: outcome.version,
            node: outcome.node,
        });
        Ok(true)
    }

    /// Records that job `dep`, which job `name` waits for (`after`), was
    /// found ready by `node` (see `docs/jobs.md`): persisted, pushed and
    /// announced like any write, with no new version. `Ok(false)` when
    /// there is nothing to record: the job is deleted, does not wait for
    /// `dep`, or has its record already.
    pub fn mark_ready(
        &mut self,
        name: &str,
        dep: &str,
        node: &str,
        at_ms: u64,
    ) -> Result<bool, WriteError> {
        let Some(view) = self.view(name) else {
            return Err(WriteError::NotFound(name.to_owned()));
        };
        if view.deleted || !view.waiting_for.iter().any(|d| d == dep) {
            return Ok(false);
        }
        let jd = self.docs.get_mut(name).expect("viewed");
        let before = jd.doc.get_heads();
        crate::after::put(&mut jd.doc, dep, node, at_ms)
            .map_err(|e| WriteError::Doc(e.to_string()))?;
        let secs = i64::try_from(at_ms / 1000).unwrap_or(0);
        jd.doc.commit_with(CommitOptions::default().with_time(secs));
        let delta = jd.doc.save_after(&before);
        self.refresh(name);
        self.publish(name, delta);
        self.events.push_back(JobEvent::Ready {
            name: name.to_owned(),
            dep: dep.to_owned(),
        });
        Ok(true)
    }

    /// Every deployment of job `name`, oldest first.
    pub fn deployments(&self, name: &str) -> Option<Vec<Deployment>> {
        let jd = self.docs.get(name)?;
        Some(deployments::read_all(&jd.doc))
    }

    /// Writes `patch` into deployment `version` of job `name` (the one
    /// that drives it, or the API): persisted, pushed and announced like
    /// any write, with no new version. `Ok(false)` when it changes
    /// nothing.
    pub fn update_deployment(
        &mut self,
        name: &str,
        version: u64,
        patch: &DeploymentPatch,
        now_ms: u64,
    ) -> Result<bool, WriteError> {
        let Some(current) = self
            .deployments(name)
            .and_then(|all| all.into_iter().find(|d| d.version == version))
        else {
            return Err(WriteError::Rejected {
                field: "version".into(),
                message: format!("job {name:?} has no deployment of version {version}"),
            });
        };
        if !patch.changes(&current) {
            return Ok(false);
        }
        let jd = self.docs.get_mut(name).expect("has deployments");
        let before = jd.doc.get_heads();
        deployments::patch(&mut jd.doc, version, patch, now_ms)
            .map_err(|e| WriteError::Doc(e.to_string()))?;
        let secs = i64::try_from(now_ms / 1000).unwrap_or(0);
        jd.doc.commit_with(CommitOptions::default().with_time(secs));
        let delta = jd.doc.save_after(&before);
        self.refresh(name);
        self.publish(name, delta);
        let after = patch.apply(&current, now_ms);
        self.events.push_back(JobEvent::Deployment {
            name: name.to_owned(),
            version,
            status: after.status,
            description: after.description,
        });
        Ok(true)
    }

    /// The spec job `name` had at `version` (with the count it had then),
    /// for a revert: `None` when it has no such version or the version
    /// deleted it.
    pub fn spec_at(&self, name: &str, version: u64) -> Option<Value> {
        let history = self.history(name)?;
        let upto = history.get(..usize::try_from(version).ok()?)?;
        if upto.last()?.op == "delete" {
            return None;
        }
        let mut spec = upto.iter().rev().find_map(|e| e.spec.clone())?;
        let count = upto
            .iter()
            .rev()
            .take_while(|e| e.spec.is_none())
            .find_map(|e| e.count);
        if let (Some(c), Some(obj)) = (count, spec.as_object_mut()) {
            obj.insert("count".into(), json!(c));
        }
        Some(spec)
    }

    /// The latest run of job `name` before version `before` that deployed
    /// healthily: one whose deployment succeeded, or that began with no
    /// deployment (created, or changed in place); what `auto_revert` goes
    /// back to.
    pub fn stable_version(&self, name: &str, before: u64) -> Option<u64> {
        let history = self.history(name)?;
        let all = self.deployments(name).unwrap_or_default();
        history
            .iter()
            .filter(|e| e.version < before && matches!(e.op.as_str(), "create" | "update"))
            .rev()
            .find(|e| match all.iter().find(|d| d.version == e.version) {
                None => true,
                Some(d) => d.status == shoal_model::DeploymentStatus::Successful,
            })
            .map(|e| e.version)
    }

    /// Applies `put` to document `doc_name` (a new one when absent),
    /// commits, persists and pushes the change.
    pub(crate) fn whole_write(
        &mut self,
        doc_name: &str,
        now_ms: u64,
        put: impl FnOnce(&mut AutoCommit) -> Result<(), automerge::AutomergeError>,
    ) -> Result<AutoCommit, WriteError> {
        let mut doc = match self.docs.get(doc_name) {
            Some(jd) => jd.doc.clone(),
            None => self.new_doc(),
        };
        let before = doc.get_heads();
        put(&mut doc).map_err(|e| WriteError::Doc(e.to_string()))?;
        let secs = i64::try_from(now_ms / 1000).unwrap_or(0);
        doc.commit_with(CommitOptions::default().with_time(secs));
        let delta = doc.save_after(&before);
        self.dropped.remove(doc_name);
        self.insert_doc(doc_name, doc.clone());
        self.publish(doc_name, delta);
        Ok(doc)
    }

    /// A local change of document `name` (`delta`, its new automerge
    /// changes): to the disk before it is acknowledged, and pushed to a
    /// few peers.
    pub(crate) fn publish(&mut self, name: &str, delta: Vec<u8>) {
        self.persist.push_back(PersistOp::Append {
            name: name.to_owned(),
            bytes: delta.clone(),
        });
        self.pushes.push_back(Push {
            docs: vec![crate::sync::DocChanges {
                name: name.to_owned(),
                bytes: delta,
            }],
            except: None,
        });
    }

    fn unchanged(&self, job: JobView) -> Written {
        Written {
            previous_version: job.version,
            job,
            changes: Vec::new(),
            created: false,
            unchanged: true,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_write(
        &mut self,
        doc: &mut AutoCommit,
        w: &Write,
        op: &str,
        new_spec: Option<&Value>,
        count: Option<u32>,
        changes: &[Change],
        (cancel, deploy): (Option<&str>, Option<&Deployment>),
    ) -> Result<(), automerge::AutomergeError> {
        if let Some(why) = cancel {
            deployments::cancel_in_progress(doc, why, w.now_ms)?;
        }
        if let Some(d) = deploy {
            deployments::put(doc, d)?;
        }
        if doc.get(ROOT, "name")?.is_none() {
            doc.put(ROOT, "name", w.name.as_str())?;
        }
        match op {
            "create" | "update" => {
                let spec = new_spec.cloned().unwrap_or(Value::Null);
                let mut body = spec.as_object().cloned().unwrap_or_default();
                body.remove("count");
                let spec_obj = match doc.get(ROOT, "spec")? {
                    Some((automerge::Value::Object(ObjType::Map), id)) if op == "update" => id,
                    _ => doc.put_object(ROOT, "spec", ObjType::Map)?,
                };
                jsondoc::update_map(doc, &spec_obj, &body)?;
                match count {
                    Some(c) => doc.put(ROOT, "count", i64::from(c))?,
                    None => {
                        if doc.get(ROOT, "count")?.is_some() {
                            doc.delete(ROOT, "count")?;
                        }
                    }
                }
                if op == "create" {
                    doc.put(ROOT, "deleted", false)?;
                    doc.put(ROOT, "created_at", w.now_ms)?;
                }
            }
            "scale" => doc.put(ROOT, "count", i64::from(count.unwrap_or(0)))?,
            _ => {
                doc.put(ROOT, "deleted", true)?;
                doc.put(ROOT, "deleted_at", w.now_ms)?;
            }
        }
        doc.put(ROOT, "updated_at", w.now_ms)?;
        let history = match doc.get(ROOT, "history")? {
            Some((automerge::Value::Object(ObjType::List), id)) => id,
            _ => doc.put_object(ROOT, "history", ObjType::List)?,
        };
        self.entry_seq += 1;
        let mut entry = json!({
            "id": format!("{}-{}", self.actor, self.entry_seq),
            "op": op,
            "at_ms": w.now_ms,
            "node": self.node.to_string(),
            "changes": serde_json::to_string(changes).unwrap_or_default(),
        });
        if op == "scale" {
            entry["count"] = json!(count.unwrap_or(0));
        }
        if let Some(by) = &w.by {
            entry["by"] = json!(by);
        }
        if let Some(spec) = new_spec.filter(|_| op != "scale") {
            entry["spec"] = json!(spec.to_string());
        }
        jsondoc::push(doc, &history, &entry)?;
        // The seconds are advisory (automerge keeps them with the change).
        let secs = i64::try_from(w.now_ms / 1000).unwrap_or(0);
        doc.commit_with(CommitOptions::default().with_time(secs));
        Ok(())
    }

    /// Every job, deleted ones only when `deleted` is set, ordered by name.
    pub fn jobs(&self, deleted: bool) -> Vec<JobView> {
        self.docs
            .keys()
            .filter(|n| !n.starts_with('@'))
            .filter_map(|n| self.view(n))
            .filter(|v| deleted || !v.deleted)
            .collect()
    }

    /// Every job as shared views, deleted ones only when `deleted` is
    /// set, ordered by name: what lists of many jobs read (no view is
    /// copied; each is read out of its document once per change).
    pub fn jobs_shared(&self, deleted: bool) -> Vec<Arc<JobView>> {
        self.docs
            .keys()
            .filter_map(|n| self.view_shared(n))
            .filter(|v| deleted || !v.deleted)
            .collect()
    }

    /// One job, deleted or not.
    pub fn view(&self, name: &str) -> Option<JobView> {
        self.view_shared(name).map(|v| (*v).clone())
    }

    /// One job, deleted or not, as a shared view.
    pub fn view_shared(&self, name: &str) -> Option<Arc<JobView>> {
        // `@install/…`, `@repo/…`, `@artifact/…`: documents that are not jobs.
        if name.starts_with('@') {
            return None;
        }
        let jd = self.docs.get(name)?;
        jd.view.get(name, &jd.doc, &jd.heads)
    }

    /// A job's history, oldest first.
    pub fn history(&self, name: &str) -> Option<Vec<HistoryEntry>> {
        let jd = self.docs.get(name)?;
        Some(history_of(&jd.doc))
    }

    /// Drops the documents of jobs deleted more than `tombstone_ttl_ms`
    /// ago (keeping their names as tombstones as long again), and forgets
    /// older tombstones.
    pub fn expire(&mut self, now_ms: u64) {
        let ttl = self.config.tombstone_ttl_ms;
        let expired: Vec<(String, u64)> = self
            .docs
            .iter()
            .filter_map(|(name, jd)| {
                let deleted = jsondoc::get_root(&jd.doc, "deleted").as_bool() == Some(true);
                let at = u64_at(&jd.doc, "deleted_at")?;
                (deleted && now_ms.saturating_sub(at) > ttl).then(|| (name.clone(), at))
            })
            .collect();
        for (name, at) in expired {
            self.remove_doc(&name);
            self.dropped.insert(name.clone(), at);
            self.persist.push_back(PersistOp::Drop {
                name,
                deleted_at_ms: at,
            });
        }
        let forgotten: Vec<String> = self
            .dropped
            .iter()
            .filter(|(_, at)| now_ms.saturating_sub(**at) > ttl.saturating_mul(2))
            .map(|(n, _)| n.clone())
            .collect();
        for name in forgotten {
            self.dropped.remove(&name);
            self.persist.push_back(PersistOp::Forget { name });
        }
    }

    /// Applies changes to a job's document from a peer (`persist`: record
    /// the new changes for the disk and emit events for new history
    /// entries) or from disk (neither). Returns whether anything was new.
    pub(crate) fn apply_changes(&mut self, name: &str, bytes: &[u8], persist: bool) -> bool {
        if !crate::installations::valid_doc_name(name) {
            self.reject("bad_name");
            return false;
        }
        if let Some(deleted_at) = self.dropped.get(name).copied() {
            // Only a job created again after it was deleted gets in.
            let mut probe = self.new_doc();
            let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                probe.load_incremental(bytes).is_ok()
            }))
            .unwrap_or(false);
            if !read {
                self.reject("undecodable");
                return false;
            }
            let live = jsondoc::get_root(&probe, "deleted").as_bool() == Some(false);
            let recreated = u64_at(&probe, "created_at").is_some_and(|c| c > deleted_at);
            if !(live && recreated) {
                self.reject("tombstoned");
                return false;
            }
            self.dropped.remove(name);
        }
        let existed = self.docs.contains_key(name);
        if !existed {
            let doc = self.new_doc();
            self.insert_doc(name, doc);
        }
        let jd = self.docs.get_mut(name).expect("present");
        let before = jd.heads.clone();
        // Loading from disk (`persist` off) emits no events: skip reading
        // the history, which dominates start-up time.
        let (ids_before, records_before, deployment_before, ready_before) = if persist {
            (
                history_ids(&jd.doc),
                outcomes::keys(&jd.doc),
                deployments::latest(&jd.doc),
                crate::after::read(&jd.doc),
            )
        } else {
            (BTreeSet::new(), BTreeSet::new(), None, BTreeSet::new())
        };
        // automerge 0.12 panics on some malformed changes instead of
        // returning an error (an unwrap in hexane's RLE decoder, found by
        // fuzzing `rpc_frame`): a peer's bytes are parsed first into a
        // throwaway document, which takes such a panic, so that a bad frame
        // is rejected and cannot kill the state task. The real load is
        // guarded too.
        let parses = !persist || parses_as_changes(bytes);
        let loaded = parses
            && std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                jd.doc.load_incremental(bytes).is_ok()
            }))
            .unwrap_or(false);
        if !loaded {
            self.reject("undecodable");
            if !existed {
                self.remove_doc(name);
            }
            return false;
        }
        let after = jd.doc.get_heads();
        if after == before {
            // Nothing applied. A change whose dependencies have not arrived
            // waits inside the document (automerge queues it); keep the
            // document for it.
            let waiting = !jd.doc.get_missing_deps(&[]).is_empty();
            if !existed && after.is_empty() && !waiting {
                self.remove_doc(name);
            }
            return false;
        }
        if !persist {
            self.refresh(name);
            return true;
        }
        let delta = jd.doc.save_after(&before);
        let entries = history_of(&jd.doc);
        let ids_after = history_ids_ordered(&jd.doc);
        let new_records: Vec<(u32, TaskOutcome)> = outcomes::keys(&jd.doc)
            .difference(&records_before)
            .filter_map(|k| Some((outcomes::parse_key(k)?.0, outcomes::at(&jd.doc, k)?)))
            .collect();
        let new_ready: Vec<String> = crate::after::read(&jd.doc)
            .difference(&ready_before)
            .cloned()
            .collect();
        self.refresh(name);
        self.persist.push_back(PersistOp::Append {
            name: name.to_owned(),
            bytes: delta,
        });
        for (entry, id) in entries.into_iter().zip(ids_after) {
            if ids_before.contains(&id) {
                continue;
            }
            let event = match entry.op.as_str() {
                "create" => JobEvent::Created {
                    name: name.to_owned(),
                    version: entry.version,
                    node: entry.node,
                },
                "update" => JobEvent::Updated {
                    name: name.to_owned(),
                    version: entry.version,
                    node: entry.node,
                    changes: entry.changes,
                },
                "scale" => JobEvent::Scaled {
                    name: name.to_owned(),
                    version: entry.version,
                    node: entry.node,
                    count: entry.count.unwrap_or(0),
                },
                _ => JobEvent::Deleted {
                    name: name.to_owned(),
                    version: entry.version,
                    node: entry.node,
                },
            };
            self.events.push_back(event);
        }
        if let Some(repo) = name.strip_prefix(crate::repos::PREFIX) {
            self.events.push_back(JobEvent::Repository {
                name: repo.to_owned(),
                op: "changed".into(),
            });
        }
        if let Some(acl) = name.strip_prefix(crate::acl::PREFIX) {
            self.events.push_back(JobEvent::Acl {
                name: acl.rsplit('/').next().unwrap_or(acl).to_owned(),
                op: "changed".into(),
            });
        }
        if let Some(secret) = name.strip_prefix(crate::secrets::PREFIX) {
            self.events.push_back(JobEvent::Secret {
                name: secret.to_owned(),
                op: "changed".into(),
            });
        }
        if let Some(trigger) = name.strip_prefix(crate::triggers::PREFIX) {
            self.events.push_back(JobEvent::Trigger {
                name: trigger.to_owned(),
                op: "changed".into(),
            });
        }
        if let Some(instance) = name.strip_prefix(crate::installations::PREFIX) {
            let revision = self.installation(instance).map_or(0, |i| i.revision);
            self.events.push_back(JobEvent::Installation {
                name: instance.to_owned(),
                op: "changed".into(),
                revision,
            });
        }
        let deployment_after = self
            .docs
            .get(name)
            .and_then(|jd| deployments::latest(&jd.doc));
        if let Some(d) = deployment_after.filter(|d| {
            deployment_before.as_ref().is_none_or(|b| {
                (b.version, b.status, &b.description) != (d.version, d.status, &d.description)
                    || b.done != d.done
                    || b.active != d.active
                    || b.promoted != d.promoted
            })
        }) {
            self.events.push_back(JobEvent::Deployment {
                name: name.to_owned(),
                version: d.version,
                status: d.status,
                description: d.description,
            });
        }
        for dep in new_ready {
            self.events.push_back(JobEvent::Ready {
                name: name.to_owned(),
                dep,
            });
        }
        for (index, o) in new_records {
            self.events.push_back(JobEvent::TaskFinished {
                name: name.to_owned(),
                index,
                status: if o.ok {
                    BatchStatus::Complete
                } else {
                    BatchStatus::Failed
                },
                version: o.version,
                node: o.node,
            });
        }
        true
    }

    /// Loads records read from disk (a snapshot's, then the log's), in
    /// order. Nothing is persisted again and no event is emitted.
    pub fn restore(&mut self, op: PersistOp) {
        match op {
            PersistOp::Append { name, bytes } => {
                self.apply_changes(&name, &bytes, false);
            }
            PersistOp::Drop {
                name,
                deleted_at_ms,
            } => {
                self.remove_doc(&name);
                self.dropped.insert(name, deleted_at_ms);
            }
            PersistOp::Forget { name } => {
                self.dropped.remove(&name);
            }
        }
    }

    /// Which of `shards` stores restores the records of job `name`: the
    /// records of a job must all go to one store, in order, for
    /// [`absorb`](Self::absorb) to give the same replica as restoring
    /// everything into one store. Lets start-up load on several threads.
    pub fn shard_of(name: &str, shards: usize) -> usize {
        (xxhash_rust::xxh3::xxh3_64(name.as_bytes()) % shards.max(1) as u64) as usize
    }

    /// Moves into this store everything `other` restored (documents,
    /// name-only tombstones, rejection counts). The two must hold disjoint
    /// jobs (see [`shard_of`](Self::shard_of)).
    pub fn absorb(&mut self, other: Store) {
        for (name, jd) in other.docs {
            self.insert_doc(&name, jd.doc);
            // The view read by the part holds (it is keyed by heads).
            if let Some(mine) = self.docs.get_mut(&name) {
                mine.view = jd.view;
            }
        }
        self.dropped.extend(other.dropped);
        for (reason, n) in other.rejected {
            *self.rejected.entry(reason).or_default() += n;
        }
    }

    /// Everything, as records that [`restore`](Self::restore) loads back:
    /// one `Append` with the whole document per job, one `Drop` per
    /// name-only tombstone. For compacting the log into a snapshot.
    pub fn snapshot(&mut self) -> Vec<PersistOp> {
        let mut out: Vec<PersistOp> = self
            .docs
            .iter_mut()
            .map(|(name, jd)| PersistOp::Append {
                name: name.clone(),
                bytes: jd.doc.save(),
            })
            .collect();
        out.extend(self.dropped.iter().map(|(name, at)| PersistOp::Drop {
            name: name.clone(),
            deleted_at_ms: *at,
        }));
        out
    }

    /// Canonical JSON of every document (for tests comparing replicas).
    pub fn canonical(&self) -> Value {
        let jobs: serde_json::Map<String, Value> = self
            .docs
            .iter()
            .map(|(name, jd)| (name.clone(), jsondoc::read(&jd.doc, &ROOT)))
            .collect();
        Value::Object(jobs)
    }
}

/// A spec's JSON without its `count`: what its tasks run.
fn without_count(spec: &Value) -> Value {
    let mut s = spec.clone();
    if let Some(obj) = s.as_object_mut() {
        obj.remove("count");
    }
    s
}
