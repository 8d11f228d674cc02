//! Package installations, one automerge document each, beside the jobs.
//!
//! An installation is what `shoal package install` made: an instance name
//! (several of one package side by side), the package, its version and
//! repository, the user's own options (kept apart from the package's
//! defaults, so that an upgrade applies the new defaults and keeps what
//! the user chose), and its **revisions**, each with the jobs it rendered.
//! Its status is never stored: it follows from its jobs' tasks, read where
//! they are known.
//!
//! The document of instance `redis-1` is named `@install/redis-1`: `@`
//! cannot begin a job name, so the two never collide, and the document
//! travels with the jobs' (the same digests, pushes, anti-entropy and
//! durable log). It holds `kind = "installation"`, `instance`, `package`,
//! `version`, `repository`, `options` (the user's, as JSON text),
//! `created_at`, `updated_at`, a `revisions` list (appended to, so that
//! concurrent upgrades both count) and, once uninstalled, `deleted` and
//! `deleted_at` (a tombstone, expired like a job's).

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{AutoCommit, ObjType, ROOT, ReadDoc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::jsondoc;
use crate::store::{JobEvent, Store, WriteError, rfc3339, u64_at};

/// Prefix of installation documents' names.
pub const PREFIX: &str = "@install/";

/// The document name of installation `instance`.
pub fn doc_name(instance: &str) -> String {
    format!("{PREFIX}{instance}")
}

/// Whether `name` names a document this replica may hold: a job, or an
/// installation whose instance name follows the job-name rules, a
/// stored artifact named by its digest, or an ACL policy or token.
pub(crate) fn valid_doc_name(name: &str) -> bool {
    if let Some(repo) = name.strip_prefix(crate::repos::PREFIX) {
        return shoal_model::validate_name(repo).is_ok();
    }
    if let Some(trigger) = name.strip_prefix(crate::triggers::PREFIX) {
        return shoal_model::validate_name(trigger).is_ok();
    }
    if let Some(sha256) = name.strip_prefix(crate::artifacts::PREFIX) {
        return shoal_model::is_sha256_hex(sha256);
    }
    if let Some(secret) = name.strip_prefix(crate::secrets::PREFIX) {
        return shoal_model::validate_name(secret).is_ok();
    }
    if name.starts_with(crate::acl::PREFIX) {
        return crate::acl::valid_doc_name(name);
    }
    match name.strip_prefix(PREFIX) {
        Some(instance) => shoal_model::validate_name(instance).is_ok(),
        None => shoal_model::validate_name(name).is_ok(),
    }
}

/// One revision of an installation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Revision {
    /// 1, 2, … in the order this replica holds them.
    pub revision: u32,
    /// `install`, `upgrade` or `rollback`.
    pub op: String,
    /// The package version.
    pub version: String,
    /// The user's own options.
    pub options: Value,
    /// The jobs it rendered, by name.
    pub jobs: Vec<String>,
    /// Their specs as rendered (what a rollback submits again, without
    /// the package at hand).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub specs: Vec<Value>,
    /// When (RFC 3339).
    pub at: String,
    /// The node that accepted it.
    pub node: String,
}

/// An installation as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Installation {
    /// Instance name.
    pub instance: String,
    /// Package name.
    pub package: String,
    /// Package version (of the latest revision).
    pub version: String,
    /// The repository it came from.
    pub repository: String,
    /// The user's own options (of the latest revision).
    pub options: Value,
    /// The latest revision.
    pub revision: u32,
    /// Every revision, oldest first.
    pub revisions: Vec<Revision>,
    /// The jobs of the latest revision.
    pub jobs: Vec<String>,
    /// Uninstalled (kept as a tombstone for a while).
    #[serde(default)]
    pub deleted: bool,
    /// Installed (RFC 3339).
    pub created_at: String,
    /// Last changed (RFC 3339).
    pub updated_at: String,
}

/// What a write does to an installation.
#[derive(Clone, Debug, PartialEq)]
pub enum InstallOp {
    /// A new installation (or one again after an uninstall).
    Install {
        /// Package name.
        package: String,
        /// Package version.
        version: String,
        /// Repository it came from.
        repository: String,
        /// The user's own options.
        options: Value,
        /// The specs of the jobs it rendered.
        jobs: Vec<Value>,
    },
    /// A new revision: another version and/or other options.
    Upgrade {
        /// Package version.
        version: String,
        /// The user's own options.
        options: Value,
        /// The specs of the jobs it rendered.
        jobs: Vec<Value>,
    },
    /// A new revision equal to an earlier one: its version, options and
    /// rendered jobs.
    Rollback {
        /// The revision gone back to.
        to: u32,
    },
    /// Gone: a tombstone.
    Uninstall,
}

fn revisions_of(doc: &AutoCommit) -> Vec<Revision> {
    let Value::Array(items) = jsondoc::get_root(doc, "revisions") else {
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .map(|(i, e)| Revision {
            revision: u32::try_from(i + 1).unwrap_or(u32::MAX),
            op: e["op"].as_str().unwrap_or("install").to_owned(),
            version: e["version"].as_str().unwrap_or_default().to_owned(),
            options: e["options"]
                .as_str()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or(json!({})),
            jobs: e["jobs"]
                .as_str()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default(),
            specs: e["specs"]
                .as_str()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default(),
            at: rfc3339(e["at_ms"].as_u64().unwrap_or(0)),
            node: e["node"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// The installation a document holds, if it holds one.
pub(crate) fn view_of(doc: &AutoCommit) -> Option<Installation> {
    if jsondoc::get_root(doc, "kind").as_str() != Some("installation") {
        return None;
    }
    let text = |k: &str| jsondoc::root_text(doc, k);
    let revisions = revisions_of(doc);
    let last = revisions.last();
    Some(Installation {
        instance: text("instance"),
        package: text("package"),
        version: last.map_or_else(|| text("version"), |r| r.version.clone()),
        repository: text("repository"),
        options: last.map_or(json!({}), |r| r.options.clone()),
        revision: last.map_or(0, |r| r.revision),
        jobs: last.map(|r| r.jobs.clone()).unwrap_or_default(),
        revisions,
        deleted: jsondoc::get_root(doc, "deleted").as_bool() == Some(true),
        created_at: rfc3339(u64_at(doc, "created_at").unwrap_or(0)),
        updated_at: rfc3339(u64_at(doc, "updated_at").unwrap_or(0)),
    })
}

fn refused(field: &str, message: String) -> WriteError {
    WriteError::Rejected {
        field: field.to_owned(),
        message,
    }
}

impl Store {
    /// Installation `instance`, uninstalled ones too.
    pub fn installation(&self, instance: &str) -> Option<Installation> {
        let jd = self.docs.get(&doc_name(instance))?;
        view_of(&jd.doc)
    }

    /// Every installation (uninstalled ones only with `deleted`), by
    /// instance name.
    pub fn installations(&self, deleted: bool) -> Vec<Installation> {
        self.docs_under(PREFIX)
            .filter_map(view_of)
            .filter(|i| deleted || !i.deleted)
            .collect()
    }

    /// Applies `op` to installation `instance` (persisted, pushed and
    /// announced like a job's write); the installation after it.
    pub fn install_write(
        &mut self,
        instance: &str,
        op: InstallOp,
        now_ms: u64,
    ) -> Result<Installation, WriteError> {
        shoal_model::validate_name(instance).map_err(|e| refused("instance", e))?;
        let name = doc_name(instance);
        let current = self.installation(instance);
        let live = current.as_ref().filter(|i| !i.deleted);
        let (op_name, entry) = match &op {
            InstallOp::Install {
                package,
                version,
                options,
                jobs,
                ..
            } => {
                if let Some(i) = live {
                    return Err(refused(
                        "instance",
                        format!(
                            "an installation named {instance:?} exists ({} {}): choose another --instance, or upgrade it",
                            i.package, i.version
                        ),
                    ));
                }
                let _ = package;
                ("install", (version.clone(), options.clone(), jobs.clone()))
            }
            InstallOp::Upgrade {
                version,
                options,
                jobs,
            } => {
                if live.is_none() {
                    return Err(WriteError::NotFound(instance.to_owned()));
                }
                ("upgrade", (version.clone(), options.clone(), jobs.clone()))
            }
            InstallOp::Rollback { to } => {
                let Some(i) = live else {
                    return Err(WriteError::NotFound(instance.to_owned()));
                };
                let Some(r) = i.revisions.iter().find(|r| r.revision == *to) else {
                    return Err(refused(
                        "revision",
                        format!(
                            "installation {instance:?} has no revision {to} (its revisions are 1-{})",
                            i.revision
                        ),
                    ));
                };
                (
                    "rollback",
                    (r.version.clone(), r.options.clone(), r.specs.clone()),
                )
            }
            InstallOp::Uninstall => {
                if live.is_none() {
                    return Err(WriteError::NotFound(instance.to_owned()));
                }
                (
                    "uninstall",
                    (String::new(), Value::Null, Vec::<Value>::new()),
                )
            }
        };
        // An installation made again after an uninstall continues its
        // document (so that the tombstone's `deleted` is overwritten, not
        // raced), with a fresh list of revisions.
        let mut doc = match self.docs.get(&name) {
            Some(jd) => jd.doc.clone(),
            None => self.new_doc(),
        };
        let before = doc.get_heads();
        let node = self.node.to_string();
        let result = (|| -> Result<(), automerge::AutomergeError> {
            if let InstallOp::Install {
                package,
                repository,
                ..
            } = &op
            {
                doc.put(ROOT, "kind", "installation")?;
                doc.put(ROOT, "instance", instance)?;
                doc.put(ROOT, "package", package.as_str())?;
                doc.put(ROOT, "repository", repository.as_str())?;
                doc.put(ROOT, "created_at", now_ms)?;
                doc.put(ROOT, "deleted", false)?;
                doc.put_object(ROOT, "revisions", ObjType::List)?;
            }
            if op_name == "uninstall" {
                doc.put(ROOT, "deleted", true)?;
                doc.put(ROOT, "deleted_at", now_ms)?;
            } else {
                let (version, options, specs) = &entry;
                let names: Vec<&str> = specs.iter().filter_map(|j| j["name"].as_str()).collect();
                doc.put(ROOT, "version", version.as_str())?;
                let list = match doc.get(ROOT, "revisions")? {
                    Some((automerge::Value::Object(ObjType::List), id)) => id,
                    _ => doc.put_object(ROOT, "revisions", ObjType::List)?,
                };
                let e = json!({
                    "op": op_name,
                    "version": version,
                    "options": options.to_string(),
                    "jobs": serde_json::to_string(&names).unwrap_or_default(),
                    "specs": serde_json::to_string(specs).unwrap_or_default(),
                    "at_ms": now_ms,
                    "node": node,
                });
                jsondoc::push(&mut doc, &list, &e)?;
            }
            doc.put(ROOT, "updated_at", now_ms)?;
            let secs = i64::try_from(now_ms / 1000).unwrap_or(0);
            doc.commit_with(CommitOptions::default().with_time(secs));
            Ok(())
        })();
        result.map_err(|e| WriteError::Doc(e.to_string()))?;
        let delta = doc.save_after(&before);
        self.dropped.remove(&name);
        self.insert_doc(&name, doc);
        self.publish(&name, delta);
        let after = self.installation(instance).expect("just written");
        self.push_event(JobEvent::Installation {
            name: instance.to_owned(),
            op: op_name.to_owned(),
            revision: after.revision,
        });
        Ok(after)
    }
}
