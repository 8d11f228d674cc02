//! Package repositories, one automerge document each, beside the jobs.
//!
//! The cluster's repositories form an ordered list that every node holds
//! (`shoal package repo add|remove|list`): a package is looked up in each
//! in turn and the first that has it wins; the built-in library, compiled
//! into every agent, comes after them all (it is not stored). A
//! repository is a URL, `dir:PATH` (a directory of packages on the node
//! that added it, served to the others by that node) or `http(s)://…`
//! (an `index.json` and the archives it lists).
//!
//! The document of repository `team` is named `@repo/team` and holds
//! `kind = "repository"`, `name`, `url`, `node` (the node that added it:
//! for `dir:`, where the directory is), `position` (a number: the list is
//! ordered by it, then by name), `added_at` and, once removed, `deleted`.
//! One document per repository, each written whole by one add: two nodes
//! adding different repositories at once never touch the same document,
//! and the order follows from the positions alone, so it merges to the
//! same list everywhere.

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{AutoCommit, ROOT};
use serde::{Deserialize, Serialize};

use crate::jsondoc;
use crate::store::{JobEvent, Store, WriteError, rfc3339, u64_at};

/// Prefix of repository documents' names.
pub const PREFIX: &str = "@repo/";

/// The name the built-in library goes by (never stored).
pub const BUILTIN: &str = "builtin";

/// The document name of repository `name`.
pub fn doc_name(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// One repository as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Repository {
    /// Its name (`team`).
    pub name: String,
    /// `dir:/srv/packages` or `https://example.com/shoal/index.json`.
    pub url: String,
    /// The node that added it (for `dir:`, the node with the directory).
    pub node: String,
    /// Where it stands in the list (lower first).
    pub position: f64,
    /// Added (RFC 3339).
    pub added_at: String,
    /// Removed (kept as a tombstone).
    #[serde(default)]
    pub deleted: bool,
}

/// The repository a document holds, if it holds one.
pub(crate) fn view_of(doc: &AutoCommit) -> Option<Repository> {
    if jsondoc::get_root(doc, "kind").as_str() != Some("repository") {
        return None;
    }
    let text = |k: &str| jsondoc::root_text(doc, k);
    Some(Repository {
        name: text("name"),
        url: text("url"),
        node: text("node"),
        position: jsondoc::get_root(doc, "position").as_f64().unwrap_or(0.0),
        added_at: rfc3339(u64_at(doc, "added_at").unwrap_or(0)),
        deleted: jsondoc::get_root(doc, "deleted").as_bool() == Some(true),
    })
}

/// Checks a repository URL: `dir:` and an absolute path, or an
/// `http://`/`https://` URL.
pub fn validate_url(url: &str) -> Result<(), String> {
    if let Some(path) = url.strip_prefix("dir:") {
        if !path.starts_with('/') {
            return Err(format!(
                "{url:?}: a dir: repository names an absolute path (dir:/srv/packages)"
            ));
        }
        return Ok(());
    }
    if (url.starts_with("http://") || url.starts_with("https://")) && url.len() > "https://".len() {
        return Ok(());
    }
    Err(format!(
        "{url:?} is not a repository: use dir:/ABSOLUTE/PATH (a directory of packages on this node) or an http(s):// URL of an index.json"
    ))
}

fn refused(field: &str, message: String) -> WriteError {
    WriteError::Rejected {
        field: field.to_owned(),
        message,
    }
}

impl Store {
    /// The repositories in lookup order (removed ones left out).
    pub fn repositories(&self) -> Vec<Repository> {
        let mut all: Vec<Repository> = self
            .docs_under(PREFIX)
            .filter_map(view_of)
            .filter(|r| !r.deleted)
            .collect();
        all.sort_by(|a, b| a.position.total_cmp(&b.position).then(a.name.cmp(&b.name)));
        all
    }

    /// Adds repository `name` with `url` (first in the list with
    /// `first`, else last), added by this node; persisted, pushed and
    /// announced like a job's write.
    pub fn repo_add(
        &mut self,
        name: &str,
        url: &str,
        first: bool,
        now_ms: u64,
    ) -> Result<Repository, WriteError> {
        shoal_model::validate_name(name).map_err(|e| refused("name", e))?;
        if name == BUILTIN {
            return Err(refused(
                "name",
                format!("{BUILTIN:?} is the library built into every agent: choose another name"),
            ));
        }
        validate_url(url).map_err(|e| refused("url", e))?;
        let list = self.repositories();
        if let Some(r) = list.iter().find(|r| r.name == name) {
            return Err(refused(
                "name",
                format!(
                    "a repository named {name:?} exists ({}): remove it first, or choose another name",
                    r.url
                ),
            ));
        }
        let position = if first {
            list.first().map_or(0.0, |r| r.position - 1.0)
        } else {
            list.last().map_or(0.0, |r| r.position + 1.0)
        };
        let doc_name = doc_name(name);
        let mut doc = match self.docs.get(&doc_name) {
            Some(jd) => jd.doc.clone(),
            None => self.new_doc(),
        };
        let before = doc.get_heads();
        let node = self.node.to_string();
        let result = (|| -> Result<(), automerge::AutomergeError> {
            doc.put(ROOT, "kind", "repository")?;
            doc.put(ROOT, "name", name)?;
            doc.put(ROOT, "url", url)?;
            doc.put(ROOT, "node", node.as_str())?;
            doc.put(ROOT, "position", position)?;
            doc.put(ROOT, "added_at", now_ms)?;
            doc.put(ROOT, "created_at", now_ms)?;
            doc.put(ROOT, "deleted", false)?;
            let secs = i64::try_from(now_ms / 1000).unwrap_or(0);
            doc.commit_with(CommitOptions::default().with_time(secs));
            Ok(())
        })();
        result.map_err(|e| WriteError::Doc(e.to_string()))?;
        self.commit_doc(&doc_name, doc, &before, name, "add")
    }

    /// Removes repository `name` (a tombstone).
    pub fn repo_remove(&mut self, name: &str, now_ms: u64) -> Result<Repository, WriteError> {
        if name == BUILTIN {
            return Err(refused(
                "name",
                format!("{BUILTIN:?} is built into every agent and cannot be removed"),
            ));
        }
        if !self.repositories().iter().any(|r| r.name == name) {
            return Err(WriteError::NotFound(doc_name(name)));
        }
        let doc_name = doc_name(name);
        let mut doc = self.docs.get(&doc_name).expect("listed").doc.clone();
        let before = doc.get_heads();
        let result = (|| -> Result<(), automerge::AutomergeError> {
            doc.put(ROOT, "deleted", true)?;
            doc.put(ROOT, "deleted_at", now_ms)?;
            let secs = i64::try_from(now_ms / 1000).unwrap_or(0);
            doc.commit_with(CommitOptions::default().with_time(secs));
            Ok(())
        })();
        result.map_err(|e| WriteError::Doc(e.to_string()))?;
        self.commit_doc(&doc_name, doc, &before, name, "remove")
    }

    fn commit_doc(
        &mut self,
        doc_name: &str,
        doc: AutoCommit,
        before: &[automerge::ChangeHash],
        name: &str,
        op: &str,
    ) -> Result<Repository, WriteError> {
        let mut doc = doc;
        let delta = doc.save_after(before);
        self.dropped.remove(doc_name);
        let repo = view_of(&doc).expect("just written");
        self.insert_doc(doc_name, doc);
        self.publish(doc_name, delta);
        self.push_event(JobEvent::Repository {
            name: name.to_owned(),
            op: op.to_owned(),
        });
        Ok(repo)
    }
}
