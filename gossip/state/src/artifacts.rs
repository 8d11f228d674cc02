//! Stored artifacts (`shoal artifact put`), one small automerge document
//! each, beside the jobs. Never the bytes: those live in the blob store of
//! the nodes that hold them, fetched by digest.
//!
//! The document of an artifact is named `@artifact/<sha256 hex>` (`@`
//! cannot begin a job name), so it travels with the jobs' documents
//! (digests, pushes, anti-entropy, the durable log, tombstones). It holds
//! `kind = "artifact"`, `sha256`, `name`, `size`, `created_at`, `node` (the
//! one it was put on), a `holders` map (node id -> when it was chosen to
//! keep a copy: concurrent additions merge) and, once removed, `deleted`
//! and `deleted_at` (a tombstone, expired like a job's).

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{AutoCommit, ObjType, ROOT, ReadDoc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::jsondoc;
use crate::store::{Store, WriteError, rfc3339, u64_at};

/// Prefix of artifact documents' names.
pub const PREFIX: &str = "@artifact/";

/// The document name of the artifact with digest `sha256` (hex).
pub fn doc_name(sha256: &str) -> String {
    format!("{PREFIX}{sha256}")
}

/// A stored artifact as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ArtifactRecord {
    /// Its sha256 (hex).
    pub sha256: String,
    /// A name for people (the file's, unless given).
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// The node it was put on.
    pub node: String,
    /// The nodes meant to keep a copy, by node id.
    pub holders: Vec<String>,
    /// Removed (kept as a tombstone for a while).
    #[serde(default)]
    pub deleted: bool,
    /// Put (RFC 3339).
    pub created_at: String,
}

/// What a write does to an artifact's record.
#[derive(Clone, Debug, PartialEq)]
pub enum ArtifactOp {
    /// Stored (again): its name and size, and the nodes meant to keep it.
    Put {
        /// Name for people.
        name: String,
        /// Bytes.
        size: u64,
        /// Node ids meant to keep a copy.
        holders: Vec<String>,
    },
    /// Another node keeps a copy.
    Hold {
        /// Its node id.
        node: String,
    },
    /// Gone: a tombstone; the copies are collected.
    Remove,
}

fn view_of(doc: &AutoCommit) -> Option<ArtifactRecord> {
    if jsondoc::get_root(doc, "kind").as_str() != Some("artifact") {
        return None;
    }
    let text = |k: &str| jsondoc::root_text(doc, k);
    let holders = match jsondoc::get_root(doc, "holders") {
        Value::Object(m) => m.keys().cloned().collect(),
        _ => Vec::new(),
    };
    Some(ArtifactRecord {
        sha256: text("sha256"),
        name: text("name"),
        size: u64_at(doc, "size").unwrap_or(0),
        node: text("node"),
        holders,
        deleted: jsondoc::get_root(doc, "deleted").as_bool() == Some(true),
        created_at: rfc3339(u64_at(doc, "created_at").unwrap_or(0)),
    })
}

impl Store {
    /// The record of the artifact with digest `sha256`, removed ones too.
    pub fn artifact(&self, sha256: &str) -> Option<ArtifactRecord> {
        let jd = self.docs.get(&doc_name(sha256))?;
        view_of(&jd.doc)
    }

    /// Every stored artifact (removed ones only with `deleted`), by digest.
    pub fn artifacts(&self, deleted: bool) -> Vec<ArtifactRecord> {
        self.docs_under(PREFIX)
            .filter_map(view_of)
            .filter(|a| deleted || !a.deleted)
            .collect()
    }

    /// Applies `op` to the record of artifact `sha256` (persisted and
    /// pushed like a job's write); the record after it.
    pub fn artifact_write(
        &mut self,
        sha256: &str,
        op: ArtifactOp,
        now_ms: u64,
    ) -> Result<ArtifactRecord, WriteError> {
        if !shoal_model::is_sha256_hex(sha256) {
            return Err(WriteError::Rejected {
                field: "sha256".into(),
                message: format!("must be 64 lower-case hex digits (got {sha256:?})"),
            });
        }
        let name = doc_name(sha256);
        let live = self.artifact(sha256).filter(|a| !a.deleted);
        if !matches!(op, ArtifactOp::Put { .. }) && live.is_none() {
            return Err(WriteError::NotFound(sha256.to_owned()));
        }
        let mut doc = match self.docs.get(&name) {
            Some(jd) => jd.doc.clone(),
            None => self.new_doc(),
        };
        let before = doc.get_heads();
        let me = self.node.to_string();
        let result = (|| -> Result<(), automerge::AutomergeError> {
            let holders = match doc.get(ROOT, "holders")? {
                Some((automerge::Value::Object(ObjType::Map), id)) => id,
                _ => doc.put_object(ROOT, "holders", ObjType::Map)?,
            };
            match &op {
                ArtifactOp::Put {
                    name,
                    size,
                    holders: nodes,
                } => {
                    if live.is_none() {
                        doc.put(ROOT, "kind", "artifact")?;
                        doc.put(ROOT, "sha256", sha256)?;
                        doc.put(ROOT, "created_at", now_ms)?;
                        doc.put(ROOT, "node", me.as_str())?;
                        doc.put(ROOT, "deleted", false)?;
                    }
                    doc.put(ROOT, "name", name.as_str())?;
                    doc.put(ROOT, "size", *size)?;
                    for n in nodes {
                        doc.put(&holders, n.as_str(), now_ms)?;
                    }
                }
                ArtifactOp::Hold { node } => {
                    doc.put(&holders, node.as_str(), now_ms)?;
                }
                ArtifactOp::Remove => {
                    doc.put(ROOT, "deleted", true)?;
                    doc.put(ROOT, "deleted_at", now_ms)?;
                }
            }
            let secs = i64::try_from(now_ms / 1000).unwrap_or(0);
            doc.commit_with(CommitOptions::default().with_time(secs));
            Ok(())
        })();
        result.map_err(|e| WriteError::Doc(e.to_string()))?;
        let delta = doc.save_after(&before);
        self.dropped.remove(&name);
        self.insert_doc(&name, doc);
        self.publish(&name, delta);
        Ok(self.artifact(sha256).expect("just written"))
    }
}

#[cfg(test)]
mod tests {
    use shoal_gossip::NodeId;

    use super::*;
    use crate::StateConfig;

    const HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn put_hold_remove() {
        let mut s = Store::new(NodeId(7), 0, StateConfig::default());
        let put = ArtifactOp::Put {
            name: "a.bin".into(),
            size: 4,
            holders: vec!["7".into(), "9".into()],
        };
        let a = s.artifact_write(HEX, put, 1_000).unwrap();
        assert_eq!(a.holders, vec!["7".to_owned(), "9".to_owned()]);
        assert_eq!(a.size, 4);
        let a = s
            .artifact_write(HEX, ArtifactOp::Hold { node: "8".into() }, 2_000)
            .unwrap();
        assert_eq!(a.holders.len(), 3);
        assert_eq!(s.artifacts(false).len(), 1);
        assert!(s.jobs(true).is_empty(), "not a job");
        s.artifact_write(HEX, ArtifactOp::Remove, 3_000).unwrap();
        assert!(s.artifacts(false).is_empty());
        assert!(s.artifacts(true)[0].deleted);
        assert!(matches!(
            s.artifact_write(HEX, ArtifactOp::Remove, 4_000),
            Err(WriteError::NotFound(_))
        ));
        assert!(s.artifact_write("nothex", ArtifactOp::Remove, 0).is_err());
    }
}
