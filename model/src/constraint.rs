//! Constraints: where a job's tasks may run, and their validation.

use serde::{Deserialize, Serialize};

use crate::spec::Problems;

/// A constraint operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ConstraintOp {
    /// Equal.
    #[serde(rename = "=")]
    Eq,
    /// Not equal (a node without the attribute passes).
    #[serde(rename = "!=")]
    Ne,
    /// One of a list.
    #[serde(rename = "in")]
    In,
    /// None of a list.
    #[serde(rename = "not_in")]
    NotIn,
    /// Matches a regular expression (anchored).
    #[serde(rename = "regex")]
    Regex,
    /// The attribute is set.
    #[serde(rename = "exists")]
    Exists,
}

impl ConstraintOp {
    fn parse(s: &str) -> Option<ConstraintOp> {
        Some(match s {
            "=" | "==" => ConstraintOp::Eq,
            "!=" => ConstraintOp::Ne,
            "in" => ConstraintOp::In,
            "not_in" => ConstraintOp::NotIn,
            "regex" => ConstraintOp::Regex,
            "exists" => ConstraintOp::Exists,
            _ => return None,
        })
    }

    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            ConstraintOp::Eq => "=",
            ConstraintOp::Ne => "!=",
            ConstraintOp::In => "in",
            ConstraintOp::NotIn => "not_in",
            ConstraintOp::Regex => "regex",
            ConstraintOp::Exists => "exists",
        }
    }
}

/// The value a constraint compares with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ConstraintValue {
    /// One value (`=`, `!=`, `regex`).
    One(String),
    /// A list (`in`, `not_in`).
    Many(Vec<String>),
}

/// A condition on the node a task may run on.
///
/// `attribute` is `name`, `id`, `dc`, `zone`, `region`, or a label key
/// (optionally written `label.<key>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Constraint {
    /// What to look at.
    pub attribute: String,
    /// How to compare.
    pub op: ConstraintOp,
    /// With what (absent for `exists`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<ConstraintValue>,
}

/// Node attributes that are not labels.
pub const BUILTIN_ATTRIBUTES: [&str; 5] = ["name", "id", "dc", "zone", "region"];

impl Constraint {
    /// Whether a node passes, given a lookup of its attributes. `Err`
    /// explains a failure (`dc = eu failed: node has dc = us`).
    pub fn check(&self, attribute: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        let key = self
            .attribute
            .strip_prefix("label.")
            .unwrap_or(&self.attribute);
        let actual = attribute(key);
        let shown = || actual.clone().unwrap_or_else(|| "no such attribute".into());
        let ok = match (self.op, &self.value, &actual) {
            (ConstraintOp::Exists, _, a) => a.is_some(),
            (ConstraintOp::Eq, Some(ConstraintValue::One(v)), Some(a)) => a == v,
            (ConstraintOp::Ne, Some(ConstraintValue::One(v)), Some(a)) => a != v,
            (ConstraintOp::Ne, _, None) => true,
            (ConstraintOp::In, Some(ConstraintValue::Many(vs)), Some(a)) => vs.contains(a),
            (ConstraintOp::NotIn, Some(ConstraintValue::Many(vs)), Some(a)) => !vs.contains(a),
            (ConstraintOp::NotIn, _, None) => true,
            (ConstraintOp::Regex, Some(ConstraintValue::One(v)), Some(a)) => {
                regex::Regex::new(&format!("^(?:{v})$")).is_ok_and(|re| re.is_match(a))
            }
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            let value = match &self.value {
                Some(ConstraintValue::One(v)) => format!(" {v}"),
                Some(ConstraintValue::Many(vs)) => format!(" [{}]", vs.join(", ")),
                None => String::new(),
            };
            Err(format!(
                "constraint {} {}{} failed ({})",
                self.attribute,
                self.op.as_str(),
                value,
                shown()
            ))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConstraint {
    attribute: Option<String>,
    op: Option<String>,
    value: Option<ConstraintValue>,
}

impl RawConstraint {
    pub(crate) fn validate(self, field: &str, p: &mut Problems) -> Option<Constraint> {
        let attribute = self.attribute.unwrap_or_default();
        if attribute.is_empty() || attribute == "label." {
            p.add(
                format!("{field}.attribute"),
                "is required: name, id, dc, zone, region, or a label key",
            );
            return None;
        }
        let Some(op_text) = self.op else {
            p.add(
                format!("{field}.op"),
                "is required: =, !=, in, not_in, regex or exists",
            );
            return None;
        };
        let Some(op) = ConstraintOp::parse(&op_text) else {
            p.add(
                format!("{field}.op"),
                format!("unknown operator {op_text:?}: use =, !=, in, not_in, regex or exists"),
            );
            return None;
        };
        let value = match (op, self.value) {
            (ConstraintOp::Exists, None) => None,
            (ConstraintOp::Exists, Some(_)) => {
                p.add(format!("{field}.value"), "exists takes no value");
                return None;
            }
            (ConstraintOp::In | ConstraintOp::NotIn, Some(ConstraintValue::One(v))) => Some(
                ConstraintValue::Many(v.split(',').map(|s| s.trim().to_owned()).collect()),
            ),
            (ConstraintOp::In | ConstraintOp::NotIn, Some(ConstraintValue::Many(vs))) => {
                Some(ConstraintValue::Many(vs))
            }
            (_, Some(ConstraintValue::One(v))) => Some(ConstraintValue::One(v)),
            (_, Some(ConstraintValue::Many(_))) => {
                p.add(
                    format!("{field}.value"),
                    format!("{} takes one value, not a list", op.as_str()),
                );
                return None;
            }
            (_, None) => {
                p.add(
                    format!("{field}.value"),
                    format!("{} needs a value", op.as_str()),
                );
                return None;
            }
        };
        if let (ConstraintOp::Regex, Some(ConstraintValue::One(v))) = (op, &value)
            && let Err(e) = regex::Regex::new(v)
        {
            p.add(
                format!("{field}.value"),
                format!("not a regular expression: {e}"),
            );
            return None;
        }
        Some(Constraint {
            attribute,
            op,
            value,
        })
    }
}
