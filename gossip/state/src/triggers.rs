//! Triggers, one automerge document each, beside the jobs.
//!
//! The document of trigger `cheap-report` is named `@trigger/cheap-report`
//! (`@` cannot begin a job name, so the two never collide) and travels
//! with the jobs' (the same digests, pushes, anti-entropy and durable
//! log). It holds `kind = "trigger"`, `name`, `spec` (the validated spec's
//! canonical JSON, as text: an update replaces it whole), `paused`,
//! `created_at`, `updated_at`, once deleted `deleted` and `deleted_at` (a
//! tombstone, expired like a job's), and `ledger`: the firing ledger its
//! evaluator writes (JSON text, opaque to this crate; see
//! `docs/triggers.md`), which a new evaluator resumes from.
//!
//! This crate does not validate specs: the node parses them with
//! `shoal-trigger` before it writes. Every field is a register: two
//! concurrent writes of one field keep the same winner on every replica.

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{AutoCommit, ObjType, ROOT, ReadDoc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::jsondoc;
use crate::store::{JobEvent, Store, WriteError, rfc3339, u64_at};

/// Prefix of trigger documents' names.
pub const PREFIX: &str = "@trigger/";

/// The document name of trigger `name`.
pub fn doc_name(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// A trigger as the replica holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerRecord {
    /// Its name.
    pub name: String,
    /// The spec, canonical JSON (`shoal_trigger::TriggerSpec::to_json`).
    pub spec: Value,
    /// Paused: due slots are recorded skipped (`paused`).
    pub paused: bool,
    /// Deleted (kept as a tombstone for a while).
    pub deleted: bool,
    /// Created, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Last changed (RFC 3339).
    pub updated_at: String,
    /// The firing ledger its evaluator wrote last (`null`: none yet).
    pub ledger: Value,
}

/// What a write does to a trigger.
#[derive(Clone, Debug, PartialEq)]
pub enum TriggerOp {
    /// Create it, or replace its spec (its ledger stays).
    Put(Value),
    /// Pause (`true`) or resume (`false`).
    Pause(bool),
    /// Gone: a tombstone.
    Delete,
    /// The evaluator's ledger, and what happened (`fired`, `skipped`,
    /// `missed`, `finished`…) for the event.
    Ledger(Value, String),
}

/// The trigger a document holds, if it holds one.
pub(crate) fn view_of(doc: &AutoCommit) -> Option<TriggerRecord> {
    if jsondoc::get_root(doc, "kind").as_str() != Some("trigger") {
        return None;
    }
    let json_text = |k: &str| {
        jsondoc::get_root(doc, k)
            .as_str()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null)
    };
    let created_at_ms = u64_at(doc, "created_at").unwrap_or(0);
    let mut ledger = json_text("ledger");
    if let Value::Object(map) = jsondoc::get_root(doc, OUTCOMES) {
        let mut outcomes: Vec<Value> = map
            .values()
            .filter_map(|v| serde_json::from_str(v.as_str()?).ok())
            .collect();
        outcomes.sort_by(|a: &Value, b: &Value| {
            let key = |v: &Value| {
                (
                    v["decided_at"].as_str().unwrap_or_default().to_owned(),
                    v["slot"].as_str().unwrap_or_default().to_owned(),
                )
            };
            key(a).cmp(&key(b))
        });
        if outcomes.is_empty() {
            // Nothing to add.
        } else if let Value::Object(l) = &mut ledger {
            l.insert("outcomes".into(), Value::Array(outcomes));
        } else {
            ledger = serde_json::json!({ "outcomes": outcomes });
        }
    }
    Some(TriggerRecord {
        name: jsondoc::root_text(doc, "name"),
        spec: json_text("spec"),
        paused: jsondoc::get_root(doc, "paused").as_bool() == Some(true),
        deleted: jsondoc::get_root(doc, "deleted").as_bool() == Some(true),
        created_at_ms,
        created_at: rfc3339(created_at_ms),
        updated_at: rfc3339(u64_at(doc, "updated_at").unwrap_or(0)),
        ledger,
    })
}

/// The root map of a trigger's ledger outcomes, one key per slot.
const OUTCOMES: &str = "outcomes";

/// Writes a ledger: its `outcomes` (an array of objects with a `slot`) go
/// to the `outcomes` map, one JSON text per slot, written only where it
/// changed and deleted where it is gone; the rest goes to `ledger` as
/// text. So a write carries the outcomes it adds or changes, not every
/// outcome kept (a ledger keeps up to 50: written whole at every fire,
/// they were what every node received and what the document's history
/// grew by).
fn write_ledger(doc: &mut AutoCommit, ledger: &Value) -> Result<(), automerge::AutomergeError> {
    let mut rest = ledger.clone();
    let outcomes = match &mut rest {
        Value::Object(map) => map.remove("outcomes"),
        _ => None,
    };
    doc.put(ROOT, "ledger", rest.to_string())?;
    let Some(Value::Array(outcomes)) = outcomes else {
        return Ok(());
    };
    let map = match doc.get(ROOT, OUTCOMES)? {
        Some((automerge::Value::Object(ObjType::Map), id)) => id,
        // A document written before the map existed.
        _ => doc.put_object(ROOT, OUTCOMES, ObjType::Map)?,
    };
    let new: serde_json::Map<String, Value> = outcomes
        .iter()
        .map(|o| {
            let slot = o["slot"].as_str().unwrap_or_default().to_owned();
            (slot, Value::String(o.to_string()))
        })
        .collect();
    jsondoc::update_map(doc, &map, &new)
}

impl Store {
    /// Trigger `name`, deleted ones too.
    pub fn trigger(&self, name: &str) -> Option<TriggerRecord> {
        let jd = self.docs.get(&doc_name(name))?;
        view_of(&jd.doc)
    }

    /// Every trigger (deleted ones only with `deleted`), by name.
    pub fn triggers(&self, deleted: bool) -> Vec<TriggerRecord> {
        self.docs_under(PREFIX)
            .filter_map(view_of)
            .filter(|t| deleted || !t.deleted)
            .collect()
    }

    /// Applies `op` to trigger `name` (persisted, pushed and announced
    /// like a job's write); the trigger after it.
    pub fn trigger_write(
        &mut self,
        name: &str,
        op: TriggerOp,
        now_ms: u64,
    ) -> Result<TriggerRecord, WriteError> {
        shoal_model::validate_name(name).map_err(|message| WriteError::Rejected {
            field: "name".into(),
            message,
        })?;
        let doc_name = doc_name(name);
        let live = self.trigger(name).filter(|t| !t.deleted);
        let event = match (&op, &live) {
            (TriggerOp::Put(_), None) => "created".to_owned(),
            (TriggerOp::Put(_), Some(_)) => "updated".to_owned(),
            (_, None) => return Err(WriteError::NotFound(name.to_owned())),
            (TriggerOp::Pause(true), Some(_)) => "paused".to_owned(),
            (TriggerOp::Pause(false), Some(_)) => "resumed".to_owned(),
            (TriggerOp::Delete, Some(_)) => "deleted".to_owned(),
            (TriggerOp::Ledger(_, what), Some(_)) => what.clone(),
        };
        // A trigger made again after a delete continues its document, so
        // that the tombstone's `deleted` is overwritten, not raced.
        let mut doc = match self.docs.get(&doc_name) {
            Some(jd) => jd.doc.clone(),
            None => self.new_doc(),
        };
        let before = doc.get_heads();
        let result = (|| -> Result<(), automerge::AutomergeError> {
            match &op {
                TriggerOp::Put(spec) => {
                    if live.is_none() {
                        doc.put(ROOT, "kind", "trigger")?;
                        doc.put(ROOT, "name", name)?;
                        doc.put(ROOT, "created_at", now_ms)?;
                        doc.put(ROOT, "deleted", false)?;
                        doc.put(ROOT, "paused", false)?;
                        doc.put(ROOT, "ledger", "null")?;
                        doc.put_object(ROOT, OUTCOMES, ObjType::Map)?;
                    }
                    doc.put(ROOT, "spec", spec.to_string())?;
                }
                TriggerOp::Pause(on) => doc.put(ROOT, "paused", *on)?,
                TriggerOp::Delete => {
                    doc.put(ROOT, "deleted", true)?;
                    doc.put(ROOT, "deleted_at", now_ms)?;
                }
                TriggerOp::Ledger(ledger, _) => write_ledger(&mut doc, ledger)?,
            }
            doc.put(ROOT, "updated_at", now_ms)?;
            let secs = i64::try_from(now_ms / 1000).unwrap_or(0);
            doc.commit_with(CommitOptions::default().with_time(secs));
            Ok(())
        })();
        result.map_err(|e| WriteError::Doc(e.to_string()))?;
        let delta = doc.save_after(&before);
        self.dropped.remove(&doc_name);
        self.insert_doc(&doc_name, doc);
        self.publish(&doc_name, delta);
        self.push_event(JobEvent::Trigger {
            name: name.to_owned(),
            op: event,
        });
        Ok(self.trigger(name).expect("just written"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use shoal_gossip::NodeId;

    use super::*;
    use crate::StateConfig;

    #[test]
    fn create_pause_ledger_delete_recreate() {
        let mut s = Store::new(NodeId(7), 0, StateConfig::default());
        let t = s
            .trigger_write("nightly", TriggerOp::Put(json!({"name": "nightly"})), 1_000)
            .unwrap();
        assert_eq!(t.spec["name"], "nightly");
        assert!(!t.paused && !t.deleted && t.ledger.is_null());
        assert!(s.jobs(true).is_empty(), "not a job");
        let t = s
            .trigger_write("nightly", TriggerOp::Pause(true), 2_000)
            .unwrap();
        assert!(t.paused);
        let ledger = json!({"last_handled": "nightly@2026-12-01T02:30:00"});
        let t = s
            .trigger_write(
                "nightly",
                TriggerOp::Ledger(ledger.clone(), "fired".into()),
                3_000,
            )
            .unwrap();
        assert_eq!(t.ledger, ledger);
        s.trigger_write("nightly", TriggerOp::Delete, 4_000)
            .unwrap();
        assert!(s.triggers(false).is_empty());
        assert_eq!(s.triggers(true).len(), 1);
        assert!(matches!(
            s.trigger_write("nightly", TriggerOp::Pause(false), 5_000),
            Err(WriteError::NotFound(_))
        ));
        let t = s
            .trigger_write("nightly", TriggerOp::Put(json!({"name": "nightly"})), 6_000)
            .unwrap();
        assert!(!t.deleted && !t.paused && t.ledger.is_null());
        assert_eq!(t.created_at_ms, 6_000);
        assert!(s.trigger_write("Bad Name", TriggerOp::Delete, 0).is_err());
    }

    fn outcome(i: u32) -> Value {
        // Text that does not compress, as signal sources and values are
        // not all alike.
        let mut x = u64::from(i) + 1;
        let noise: String = (0..25)
            .map(|_| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                format!("{:016x}", x)
            })
            .collect();
        json!({
            "slot": format!("tick@2026-12-01T00:00:{i:02}"),
            "decided_at": format!("2026-12-01T00:00:{i:02}Z"),
            "outcome": "fired",
            "values": [{"signal": "free.cpu", "value": 12.5, "source": noise}],
        })
    }

    /// A ledger reads back as written, outcomes in order; each write
    /// carries what it adds or changes, not every outcome kept.
    #[test]
    fn a_ledger_write_carries_only_the_outcomes_it_changes() {
        let mut s = Store::new(NodeId(7), 0, StateConfig::default());
        s.trigger_write("tick", TriggerOp::Put(json!({"name": "tick"})), 1_000)
            .unwrap();
        let mut outcomes: Vec<Value> = Vec::new();
        let mut sizes = Vec::new();
        for i in 0..50 {
            outcomes.push(outcome(i));
            // Bounded like the agent's ledger: the oldest goes.
            if outcomes.len() > 20 {
                outcomes.remove(0);
            }
            let ledger = json!({"last_handled": format!("tick@{i}"), "outcomes": outcomes});
            let before = s.docs[&doc_name("tick")].doc.clone().get_heads();
            let t = s
                .trigger_write(
                    "tick",
                    TriggerOp::Ledger(ledger.clone(), "fired".into()),
                    2_000 + u64::from(i),
                )
                .unwrap();
            assert_eq!(t.ledger, ledger, "read back as written");
            sizes.push(
                s.docs[&doc_name("tick")]
                    .doc
                    .clone()
                    .save_after(&before)
                    .len(),
            );
        }
        let last = *sizes.last().unwrap();
        // One outcome's text (~550 bytes) and the rest, not 20 of them.
        assert!(last < 2_000, "a write of {last} bytes: {sizes:?}");
        let mut other = Store::new(NodeId(8), 0, StateConfig::default());
        let doc = s.docs[&doc_name("tick")].doc.clone().save();
        other.insert_doc(&doc_name("tick"), AutoCommit::load(&doc).unwrap());
        assert_eq!(
            other.trigger("tick"),
            s.trigger("tick"),
            "a replica reads the same"
        );
    }
}
