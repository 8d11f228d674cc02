//! What changed between two versions of a spec, field by field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One changed field. Objects are compared key by key; lists as a whole.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Change {
    /// Dotted path (`task.resources.cpus`).
    pub field: String,
    /// Value before (absent when added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<Value>,
    /// Value after (absent when removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<Value>,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.old, &self.new) {
            (None, Some(n)) => write!(f, "+ {}: {}", self.field, n),
            (Some(o), None) => write!(f, "- {}: {}", self.field, o),
            (Some(o), Some(n)) => write!(f, "~ {}: {} -> {}", self.field, o, n),
            (None, None) => write!(f, "  {}", self.field),
        }
    }
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&path, child, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), other.clone());
        }
    }
}

/// The changes from `old` to `new` (JSON forms of specs), ordered by field.
pub fn diff(old: &Value, new: &Value) -> Vec<Change> {
    let mut a = BTreeMap::new();
    let mut b = BTreeMap::new();
    flatten("", old, &mut a);
    flatten("", new, &mut b);
    let mut fields: Vec<&String> = a.keys().chain(b.keys()).collect();
    fields.sort();
    fields.dedup();
    fields
        .into_iter()
        .filter_map(|f| {
            let (o, n) = (a.get(f), b.get(f));
            if o == n {
                return None;
            }
            Some(Change {
                field: f.clone(),
                old: o.cloned(),
                new: n.cloned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_by_field() {
        let old = json!({"count": 3, "task": {"env": {"A": "1", "B": "2"}, "args": ["x"]}});
        let new = json!({"count": 5, "task": {"env": {"A": "1", "C": "3"}, "args": ["x", "y"]}});
        let lines: Vec<String> = diff(&old, &new).iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "~ count: 3 -> 5",
                "~ task.args: [\"x\"] -> [\"x\",\"y\"]",
                "- task.env.B: \"2\"",
                "+ task.env.C: \"3\"",
            ]
        );
        assert!(diff(&old, &old).is_empty());
    }
}
