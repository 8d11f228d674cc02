//! ACL policies and tokens, one automerge document each, beside the jobs.
//!
//! Policy `web-deploy` is the document `@acl/policy/web-deploy` (`kind =
//! "acl-policy"`, `name`, `description`, `rules` as JSON text, `deleted`),
//! written whole by each put. Token `0123456789abcdef` (its accessor: a
//! public id) is `@acl/token/0123456789abcdef` (`kind = "acl-token"`,
//! `name`, `policies` as JSON text, `secret_sha256`, `created_at`,
//! `created_by`, `expires_at` (0: never), `bootstrap`, and once revoked
//! `revoked` and `revoked_at`). Only the SHA-256 of a token's secret is
//! stored: the node that makes a token draws the secret and hands it out
//! once. Nothing ever clears `revoked`, so a revocation merges to revoked
//! everywhere, whatever it meets.
//!
//! The replica does no cryptography and reads no clock: the caller hashes,
//! draws and passes the time.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ROOT};
use serde::{Deserialize, Serialize};
use shoal_model::acl::{Policy, Rule};

use crate::jsondoc;
use crate::store::{JobEvent, Store, WriteError, rfc3339, u64_at};

/// Prefix of every ACL document's name.
pub const PREFIX: &str = "@acl/";
const POLICY: &str = "@acl/policy/";
const TOKEN: &str = "@acl/token/";
const NODE: &str = "@acl/node/";
const KEY: &str = "@acl/keyring/";
const PRIMARY: &str = "@acl/keyring-primary";

/// A gossip key of the keyring (`shoal keyring install`):
/// `@acl/keyring/<id>` (`kind = "gossip-key"`, `id` as 8 hex digits,
/// `sealed`: the key sealed by the node that installed it (empty for the
/// cluster secret's own key, which every node derives), `installed_at`,
/// `by`, and once removed `removed`, which nothing clears).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipKeyRecord {
    /// The key's id (8 hex digits), as datagrams carry it.
    pub id: String,
    /// The key, sealed (never shown); empty for the cluster's own key.
    pub sealed: String,
    /// When it was installed (RFC 3339).
    pub installed_at: String,
    /// The token that installed it.
    pub by: Option<String>,
    /// Removed for good.
    pub removed: bool,
}

/// The key chosen to seal with (`shoal keyring use`):
/// `@acl/keyring-primary` (`kind = "gossip-primary"`, `id`, `at`, `by`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipPrimary {
    /// The key's id.
    pub id: String,
    /// When it was chosen (RFC 3339).
    pub at: String,
}

/// Whether `s` is a gossip key id: 8 lower-case hex digits.
pub fn is_key_id(s: &str) -> bool {
    s.len() == 8
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn key_of(doc: &AutoCommit) -> Option<GossipKeyRecord> {
    if jsondoc::get_root(doc, "kind").as_str() != Some("gossip-key") {
        return None;
    }
    let by = jsondoc::root_text(doc, "by");
    Some(GossipKeyRecord {
        id: jsondoc::root_text(doc, "id"),
        sealed: jsondoc::root_text(doc, "sealed"),
        installed_at: rfc3339(u64_at(doc, "installed_at").unwrap_or(0)),
        by: (!by.is_empty()).then_some(by),
        removed: jsondoc::get_root(doc, "removed").as_bool() == Some(true),
    })
}

/// A node forgotten for good (`shoal node forget`): `@acl/node/<id>`
/// (`kind = "forgotten-node"`, `name`, `at`, `by`). Nothing undoes it, so
/// it merges to forgotten whatever it meets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ForgottenNode {
    /// The node's id (16 hex digits).
    pub id: String,
    /// Its name when it was forgotten.
    pub name: String,
    /// When (RFC 3339).
    pub at: String,
    /// The token that forgot it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

fn forgotten_of(doc: &AutoCommit) -> Option<ForgottenNode> {
    if jsondoc::get_root(doc, "kind").as_str() != Some("forgotten-node") {
        return None;
    }
    let by = jsondoc::root_text(doc, "by");
    Some(ForgottenNode {
        id: jsondoc::root_text(doc, "id"),
        name: jsondoc::root_text(doc, "name"),
        at: rfc3339(u64_at(doc, "at").unwrap_or(0)),
        by: (!by.is_empty()).then_some(by),
    })
}

/// A token as the replica holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AclToken {
    /// Its public id (16 hex digits), what `token show|revoke` take.
    pub accessor: String,
    /// A name for people (and for jobs' histories).
    pub name: String,
    /// The policies it carries.
    pub policies: Vec<String>,
    /// Made (RFC 3339).
    pub created_at: String,
    /// The name of the token that made it (`bootstrap` for the first).
    pub created_by: String,
    /// When it stops working (RFC 3339), if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Revoked: it no longer works anywhere.
    #[serde(default)]
    pub revoked: bool,
    /// When it was revoked (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// Made by `acl bootstrap`.
    #[serde(default)]
    pub bootstrap: bool,
    /// SHA-256 of its secret, hex (never shown).
    #[serde(skip)]
    pub secret_sha256: String,
    /// `expires_at` in ms since the Unix epoch (never shown).
    #[serde(skip)]
    pub expires_ms: Option<u64>,
}

/// A token to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewToken {
    /// Its public id: 16 lower-case hex digits.
    pub accessor: String,
    /// A name for people.
    pub name: String,
    /// The policies it carries (each built in or stored).
    pub policies: Vec<String>,
    /// SHA-256 of its secret, hex.
    pub secret_sha256: String,
    /// The name of the token that makes it.
    pub created_by: String,
    /// When it stops working (ms since the Unix epoch).
    pub expires_ms: Option<u64>,
    /// Made by `acl bootstrap` (refused once one exists).
    pub bootstrap: bool,
}

/// The name of the first token.
pub const BOOTSTRAP_NAME: &str = "bootstrap";

fn policy_of(doc: &AutoCommit) -> Option<(Policy, bool)> {
    if jsondoc::get_root(doc, "kind").as_str() != Some("acl-policy") {
        return None;
    }
    let rules: Vec<Rule> =
        serde_json::from_str(&jsondoc::root_text(doc, "rules")).unwrap_or_default();
    Some((
        Policy {
            name: jsondoc::root_text(doc, "name"),
            description: jsondoc::root_text(doc, "description"),
            rules,
        },
        jsondoc::get_root(doc, "deleted").as_bool() == Some(true),
    ))
}

fn token_of(doc: &AutoCommit) -> Option<AclToken> {
    if jsondoc::get_root(doc, "kind").as_str() != Some("acl-token") {
        return None;
    }
    let text = |k: &str| jsondoc::root_text(doc, k);
    let expires_ms = u64_at(doc, "expires_at").filter(|&ms| ms > 0);
    let revoked = jsondoc::get_root(doc, "revoked").as_bool() == Some(true);
    Some(AclToken {
        accessor: text("accessor"),
        name: text("name"),
        policies: serde_json::from_str(&text("policies")).unwrap_or_default(),
        created_at: rfc3339(u64_at(doc, "created_at").unwrap_or(0)),
        created_by: text("created_by"),
        expires_at: expires_ms.map(rfc3339),
        revoked,
        revoked_at: revoked.then(|| rfc3339(u64_at(doc, "revoked_at").unwrap_or(0))),
        bootstrap: jsondoc::get_root(doc, "bootstrap").as_bool() == Some(true),
        secret_sha256: text("secret_sha256"),
        expires_ms,
    })
}

fn refused(field: &str, message: impl Into<String>) -> WriteError {
    WriteError::Rejected {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// Whether `s` is an accessor: 16 lower-case hex digits.
pub fn is_accessor(s: &str) -> bool {
    s.len() == 16
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `name` is an ACL document's: a policy by a job-like name, a
/// token by its accessor.
pub(crate) fn valid_doc_name(name: &str) -> bool {
    if let Some(policy) = name.strip_prefix(POLICY) {
        return shoal_model::validate_name(policy).is_ok();
    }
    if let Some(key) = name.strip_prefix(KEY) {
        return is_key_id(key);
    }
    name == PRIMARY
        || name
            .strip_prefix(TOKEN)
            .or_else(|| name.strip_prefix(NODE))
            .is_some_and(is_accessor)
}

impl Store {
    /// The stored policies (deleted ones left out), by name. The built-in
    /// ones are not stored.
    pub fn acl_policies(&self) -> Vec<Policy> {
        let mut all: Vec<Policy> = self
            .docs_under(POLICY)
            .filter_map(policy_of)
            .filter(|(_, deleted)| !deleted)
            .map(|(p, _)| p)
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Every token, revoked ones included, by accessor.
    pub fn acl_tokens(&self) -> Vec<AclToken> {
        let mut all: Vec<AclToken> = self.docs_under(TOKEN).filter_map(token_of).collect();
        all.sort_by(|a, b| a.accessor.cmp(&b.accessor));
        all
    }

    /// Whether `acl bootstrap` has happened (as far as this replica knows).
    pub fn acl_bootstrapped(&self) -> bool {
        self.docs_under(TOKEN)
            .filter_map(token_of)
            .any(|t| t.bootstrap)
    }

    /// Creates or replaces policy `p`.
    pub fn acl_policy_put(&mut self, p: &Policy, now_ms: u64) -> Result<Policy, WriteError> {
        p.validate().map_err(|(field, e)| refused(&field, e))?;
        let rules = serde_json::to_string(&p.rules).map_err(|e| WriteError::Doc(e.to_string()))?;
        let doc_name = format!("{POLICY}{}", p.name);
        self.acl_write(&doc_name, &p.name, "policy-put", now_ms, |doc| {
            doc.put(ROOT, "kind", "acl-policy")?;
            doc.put(ROOT, "name", p.name.as_str())?;
            doc.put(ROOT, "description", p.description.as_str())?;
            doc.put(ROOT, "rules", rules.as_str())?;
            doc.put(ROOT, "updated_at", now_ms)?;
            doc.put(ROOT, "deleted", false)?;
            Ok(())
        })?;
        Ok(p.clone())
    }

    /// Deletes policy `name` (tokens that carry it lose its rules).
    pub fn acl_policy_delete(&mut self, name: &str, now_ms: u64) -> Result<Policy, WriteError> {
        let Some(p) = self.acl_policies().into_iter().find(|p| p.name == name) else {
            return Err(WriteError::NotFound(format!("{POLICY}{name}")));
        };
        self.acl_write(
            &format!("{POLICY}{name}"),
            name,
            "policy-delete",
            now_ms,
            |doc| {
                doc.put(ROOT, "deleted", true)?;
                doc.put(ROOT, "deleted_at", now_ms)?;
                Ok(())
            },
        )?;
        Ok(p)
    }

    /// Stores a new token.
    pub fn acl_token_create(&mut self, t: &NewToken, now_ms: u64) -> Result<AclToken, WriteError> {
        if !is_accessor(&t.accessor) {
            return Err(refused("accessor", "must be 16 lower-case hex digits"));
        }
        if self.docs.contains_key(&format!("{TOKEN}{}", t.accessor)) {
            return Err(refused("accessor", format!("{} exists", t.accessor)));
        }
        if t.bootstrap && self.acl_bootstrapped() {
            return Err(refused(
                "bootstrap",
                "the ACLs are bootstrapped already: make more tokens with a management token (`shoal token create --policy management`)",
            ));
        }
        if t.name.trim().is_empty() || t.name.len() > 128 {
            return Err(refused("name", "a token's name is 1 to 128 characters"));
        }
        if t.policies.is_empty() {
            return Err(refused(
                "policies",
                "a token carries at least one policy (--policy NAME; built in: management, readonly)",
            ));
        }
        let stored = self.acl_policies();
        for p in &t.policies {
            if Policy::builtin(p).is_none() && !stored.iter().any(|s| &s.name == p) {
                return Err(refused(
                    "policies",
                    format!(
                        "no policy named {p:?}: create it first (`shoal acl policy create`), or use a built-in one (management, readonly)"
                    ),
                ));
            }
        }
        if t.secret_sha256.len() != 64 {
            return Err(refused("secret_sha256", "must be 64 hex digits"));
        }
        let policies =
            serde_json::to_string(&t.policies).map_err(|e| WriteError::Doc(e.to_string()))?;
        let doc_name = format!("{TOKEN}{}", t.accessor);
        let doc = self.acl_write(&doc_name, &t.accessor, "token-create", now_ms, |doc| {
            doc.put(ROOT, "kind", "acl-token")?;
            doc.put(ROOT, "accessor", t.accessor.as_str())?;
            doc.put(ROOT, "name", t.name.as_str())?;
            doc.put(ROOT, "policies", policies.as_str())?;
            doc.put(ROOT, "secret_sha256", t.secret_sha256.as_str())?;
            doc.put(ROOT, "created_at", now_ms)?;
            doc.put(ROOT, "created_by", t.created_by.as_str())?;
            doc.put(ROOT, "expires_at", t.expires_ms.unwrap_or(0))?;
            doc.put(ROOT, "bootstrap", t.bootstrap)?;
            doc.put(ROOT, "revoked", false)?;
            Ok(())
        })?;
        Ok(token_of(&doc).expect("just written"))
    }

    /// Revokes token `accessor`, for good.
    pub fn acl_token_revoke(
        &mut self,
        accessor: &str,
        now_ms: u64,
    ) -> Result<AclToken, WriteError> {
        let doc_name = format!("{TOKEN}{accessor}");
        if self
            .docs
            .get(&doc_name)
            .is_none_or(|jd| token_of(&jd.doc).is_none())
        {
            return Err(WriteError::NotFound(doc_name));
        }
        let doc = self.acl_write(&doc_name, accessor, "token-revoke", now_ms, |doc| {
            doc.put(ROOT, "revoked", true)?;
            doc.put(ROOT, "revoked_at", now_ms)?;
            Ok(())
        })?;
        Ok(token_of(&doc).expect("listed"))
    }

    /// The nodes forgotten for good, by id.
    pub fn forgotten_nodes(&self) -> Vec<ForgottenNode> {
        let mut all: Vec<ForgottenNode> = self.docs_under(NODE).filter_map(forgotten_of).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Forgets node `id` (16 hex digits) for good; forgetting it again
    /// changes nothing and answers the first record.
    pub fn forget_node(
        &mut self,
        id: &str,
        name: &str,
        by: Option<&str>,
        now_ms: u64,
    ) -> Result<ForgottenNode, WriteError> {
        if !is_accessor(id) {
            return Err(refused(
                "node",
                "must be a node id: 16 lower-case hex digits",
            ));
        }
        let doc_name = format!("{NODE}{id}");
        if let Some(known) = self
            .docs
            .get(&doc_name)
            .and_then(|jd| forgotten_of(&jd.doc))
        {
            return Ok(known);
        }
        let doc = self.acl_write(&doc_name, id, "node-forget", now_ms, |doc| {
            doc.put(ROOT, "kind", "forgotten-node")?;
            doc.put(ROOT, "id", id)?;
            doc.put(ROOT, "name", name)?;
            doc.put(ROOT, "at", now_ms)?;
            doc.put(ROOT, "by", by.unwrap_or(""))?;
            Ok(())
        })?;
        Ok(forgotten_of(&doc).expect("just written"))
    }

    /// The keys of the gossip keyring, removed ones included, by id.
    pub fn gossip_keys(&self) -> Vec<GossipKeyRecord> {
        let mut all: Vec<GossipKeyRecord> = self.docs_under(KEY).filter_map(key_of).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// The key chosen to seal with, if one was (else the cluster's own).
    pub fn gossip_primary(&self) -> Option<GossipPrimary> {
        let doc = &self.docs.get(PRIMARY)?.doc;
        if jsondoc::get_root(doc, "kind").as_str() != Some("gossip-primary") {
            return None;
        }
        Some(GossipPrimary {
            id: jsondoc::root_text(doc, "id"),
            at: rfc3339(u64_at(doc, "at").unwrap_or(0)),
        })
    }

    /// Installs gossip key `id` (`sealed` by the caller; empty for the
    /// cluster's own key, recorded only to be removed). A removed key
    /// cannot come back.
    pub fn gossip_key_install(
        &mut self,
        id: &str,
        sealed: &str,
        by: Option<&str>,
        now_ms: u64,
    ) -> Result<GossipKeyRecord, WriteError> {
        if !is_key_id(id) {
            return Err(refused("id", "must be 8 lower-case hex digits"));
        }
        let doc_name = format!("{KEY}{id}");
        if let Some(known) = self.docs.get(&doc_name).and_then(|jd| key_of(&jd.doc)) {
            if known.removed {
                return Err(refused(
                    "key",
                    format!("key {id} was removed and cannot come back; install a new one"),
                ));
            }
            return Ok(known);
        }
        let doc = self.acl_write(&doc_name, id, "key-install", now_ms, |doc| {
            doc.put(ROOT, "kind", "gossip-key")?;
            doc.put(ROOT, "id", id)?;
            doc.put(ROOT, "sealed", sealed)?;
            doc.put(ROOT, "installed_at", now_ms)?;
            doc.put(ROOT, "by", by.unwrap_or(""))?;
            doc.put(ROOT, "removed", false)?;
            Ok(())
        })?;
        Ok(key_of(&doc).expect("just written"))
    }

    /// Chooses key `id` to seal with. The caller checks that it is held.
    pub fn gossip_key_use(
        &mut self,
        id: &str,
        by: Option<&str>,
        now_ms: u64,
    ) -> Result<GossipPrimary, WriteError> {
        if !is_key_id(id) {
            return Err(refused("id", "must be 8 lower-case hex digits"));
        }
        self.acl_write(PRIMARY, id, "key-use", now_ms, |doc| {
            doc.put(ROOT, "kind", "gossip-primary")?;
            doc.put(ROOT, "id", id)?;
            doc.put(ROOT, "at", now_ms)?;
            doc.put(ROOT, "by", by.unwrap_or(""))?;
            Ok(())
        })?;
        Ok(self.gossip_primary().expect("just written"))
    }

    /// Removes key `id` for good (its sealed value is cleared). The caller
    /// checks that no one seals with it.
    pub fn gossip_key_remove(
        &mut self,
        id: &str,
        by: Option<&str>,
        now_ms: u64,
    ) -> Result<GossipKeyRecord, WriteError> {
        if !is_key_id(id) {
            return Err(refused("id", "must be 8 lower-case hex digits"));
        }
        let doc_name = format!("{KEY}{id}");
        let doc = self.acl_write(&doc_name, id, "key-remove", now_ms, |doc| {
            doc.put(ROOT, "kind", "gossip-key")?;
            doc.put(ROOT, "id", id)?;
            doc.put(ROOT, "sealed", "")?;
            doc.put(ROOT, "removed", true)?;
            doc.put(ROOT, "by", by.unwrap_or(""))?;
            Ok(())
        })?;
        Ok(key_of(&doc).expect("just written"))
    }

    fn acl_write(
        &mut self,
        doc_name: &str,
        name: &str,
        op: &str,
        now_ms: u64,
        put: impl FnOnce(&mut AutoCommit) -> Result<(), automerge::AutomergeError>,
    ) -> Result<AutoCommit, WriteError> {
        let doc = self.whole_write(doc_name, now_ms, put)?;
        self.push_event(JobEvent::Acl {
            name: name.to_owned(),
            op: op.to_owned(),
        });
        Ok(doc)
    }
}
