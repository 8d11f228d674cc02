//! Secrets, one automerge document each, beside the jobs: `@secret/db/password`
//! holds `kind = "secret"`, `name`, `sealed` (the value encrypted by the
//! node that stored it, base64: only nodes hold the key, see
//! docs/security.md), `created_at`, `updated_at`, `by` (the token's name)
//! and, once removed, `deleted`. The replica never sees a value in clear:
//! the caller seals and opens.

use automerge::ROOT;
use automerge::transaction::Transactable;
use serde::{Deserialize, Serialize};

use crate::jsondoc;
use crate::store::{JobEvent, Store, WriteError, rfc3339, u64_at};

/// Prefix of secret documents' names.
pub const PREFIX: &str = "@secret/";

/// A secret as the API lists it (never its value).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretRecord {
    /// Its name (`db/password`).
    pub name: String,
    /// First stored (RFC 3339).
    pub created_at: String,
    /// Last stored (RFC 3339).
    pub updated_at: String,
    /// The token that stored it last, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Removed.
    #[serde(default)]
    pub deleted: bool,
    /// The sealed value, base64 (never shown).
    #[serde(skip)]
    pub sealed: String,
}

fn record_of(doc: &automerge::AutoCommit) -> Option<SecretRecord> {
    if jsondoc::get_root(doc, "kind").as_str() != Some("secret") {
        return None;
    }
    let by = jsondoc::root_text(doc, "by");
    Some(SecretRecord {
        name: jsondoc::root_text(doc, "name"),
        created_at: rfc3339(u64_at(doc, "created_at").unwrap_or(0)),
        updated_at: rfc3339(u64_at(doc, "updated_at").unwrap_or(0)),
        by: (!by.is_empty()).then_some(by),
        deleted: jsondoc::get_root(doc, "deleted").as_bool() == Some(true),
        sealed: jsondoc::root_text(doc, "sealed"),
    })
}

impl Store {
    /// The secrets (removed ones left out), by name.
    pub fn secrets(&self) -> Vec<SecretRecord> {
        let mut all: Vec<SecretRecord> = self
            .docs_under(PREFIX)
            .filter_map(record_of)
            .filter(|s| !s.deleted)
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Stores secret `name` (`sealed` by the caller), replacing its value.
    pub fn secret_put(
        &mut self,
        name: &str,
        sealed: &str,
        by: Option<&str>,
        now_ms: u64,
    ) -> Result<SecretRecord, WriteError> {
        shoal_model::validate_name(name).map_err(|e| WriteError::Rejected {
            field: "name".into(),
            message: e,
        })?;
        let doc_name = format!("{PREFIX}{name}");
        let fresh = self
            .docs
            .get(&doc_name)
            .and_then(|jd| record_of(&jd.doc))
            .is_none_or(|r| r.deleted);
        let doc = self.whole_write(&doc_name, now_ms, |doc| {
            doc.put(ROOT, "kind", "secret")?;
            doc.put(ROOT, "name", name)?;
            doc.put(ROOT, "sealed", sealed)?;
            if fresh {
                doc.put(ROOT, "created_at", now_ms)?;
            }
            doc.put(ROOT, "updated_at", now_ms)?;
            doc.put(ROOT, "by", by.unwrap_or(""))?;
            doc.put(ROOT, "deleted", false)?;
            Ok(())
        })?;
        self.push_event(JobEvent::Secret {
            name: name.to_owned(),
            op: "put".into(),
        });
        Ok(record_of(&doc).expect("just written"))
    }

    /// Removes secret `name` (a tombstone without the value).
    pub fn secret_remove(&mut self, name: &str, now_ms: u64) -> Result<SecretRecord, WriteError> {
        let doc_name = format!("{PREFIX}{name}");
        if !self.secrets().iter().any(|s| s.name == name) {
            return Err(WriteError::NotFound(doc_name));
        }
        let doc = self.whole_write(&doc_name, now_ms, |doc| {
            doc.put(ROOT, "deleted", true)?;
            doc.put(ROOT, "sealed", "")?;
            doc.put(ROOT, "updated_at", now_ms)?;
            Ok(())
        })?;
        self.push_event(JobEvent::Secret {
            name: name.to_owned(),
            op: "remove".into(),
        });
        Ok(record_of(&doc).expect("listed"))
    }
}
