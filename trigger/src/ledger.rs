//! [`Ledger`]: what a trigger's evaluator keeps in the replicated state,
//! so that whoever evaluates the trigger next resumes where it stopped.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::state::{ConditionReport, Outcome};

/// Outcomes a trigger's ledger keeps in the replicated state (every node
/// holds every trigger's ledger, so this bounds what 100,000 triggers cost
/// each node; see docs/simulation.md, "Scale mode: triggers").
pub const LEDGER_OUTCOMES: usize = 20;

/// The ledger a trigger's evaluator keeps in the replicated state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    /// The last slot handled by anyone: what a new owner resumes from.
    #[serde(default)]
    pub last_handled: Option<String>,
    /// The node that wrote it.
    #[serde(default)]
    pub evaluated_by: Option<String>,
    /// When it was last evaluated.
    #[serde(default)]
    pub evaluated_at: Option<DateTime<Utc>>,
    /// Each condition as it stood then.
    #[serde(default)]
    pub conditions: Vec<ConditionReport>,
    /// Recent outcomes, oldest first (at most [`LEDGER_OUTCOMES`]).
    #[serde(default)]
    pub outcomes: Vec<Outcome>,
}

impl Ledger {
    /// The ledger stored as `value` (empty if none yet, or unreadable:
    /// the next evaluator then starts from the trigger's creation).
    pub fn from_value(value: &serde_json::Value) -> Ledger {
        serde_json::from_value(value.clone()).unwrap_or_default()
    }

    /// Merges `outcomes` in (the newer account of a slot wins), oldest
    /// first, bounded.
    pub fn merge(&mut self, outcomes: impl IntoIterator<Item = Outcome>) {
        for o in outcomes {
            match self.outcomes.iter_mut().find(|e| e.slot == o.slot) {
                Some(e) => *e = o,
                None => self.outcomes.push(o),
            }
        }
        self.outcomes.sort_by_key(|a| a.decided_at);
        let extra = self.outcomes.len().saturating_sub(LEDGER_OUTCOMES);
        self.outcomes.drain(..extra);
    }
}
