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
    /// A number less than the value (a node whose attribute is missing or
    /// not a number fails). Used by triggers: a run fired because
    /// `min(label.price_per_hour) < 0.05` is placed only where that holds.
    #[serde(rename = "<")]
    Lt,
    /// A number at most the value.
    #[serde(rename = "<=")]
    Le,
    /// A number greater than the value.
    #[serde(rename = ">")]
    Gt,
    /// A number at least the value.
    #[serde(rename = ">=")]
    Ge,
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
            "<" => ConstraintOp::Lt,
            "<=" => ConstraintOp::Le,
            ">" => ConstraintOp::Gt,
            ">=" => ConstraintOp::Ge,
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
            ConstraintOp::Lt => "<",
            ConstraintOp::Le => "<=",
            ConstraintOp::Gt => ">",
            ConstraintOp::Ge => ">=",
        }
    }

    /// Whether this operator compares numbers (`<`, `<=`, `>`, `>=`).
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            ConstraintOp::Lt | ConstraintOp::Le | ConstraintOp::Gt | ConstraintOp::Ge
        )
    }
}

/// Compares two numbers written as text; `false` when either is not a
/// finite number.
fn compare_numbers(op: ConstraintOp, actual: &str, bound: &str) -> bool {
    let (Ok(a), Ok(b)) = (actual.trim().parse::<f64>(), bound.trim().parse::<f64>()) else {
        return false;
    };
    if !a.is_finite() || !b.is_finite() {
        return false;
    }
    match op {
        ConstraintOp::Lt => a < b,
        ConstraintOp::Le => a <= b,
        ConstraintOp::Gt => a > b,
        ConstraintOp::Ge => a >= b,
        _ => false,
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
            (op, Some(ConstraintValue::One(v)), Some(a)) if op.is_numeric() => {
                compare_numbers(op, a, v)
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
                "is required: =, !=, in, not_in, regex, exists, <, <=, > or >=",
            );
            return None;
        };
        let Some(op) = ConstraintOp::parse(&op_text) else {
            p.add(
                format!("{field}.op"),
                format!(
                    "unknown operator {op_text:?}: use =, !=, in, not_in, regex, exists, <, <=, > or >="
                ),
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
        if let (true, Some(ConstraintValue::One(v))) = (op.is_numeric(), &value)
            && !v.trim().parse::<f64>().is_ok_and(f64::is_finite)
        {
            p.add(
                format!("{field}.value"),
                format!("{} compares numbers: {v:?} is not a number", op.as_str()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(k: &str) -> Option<String> {
        match k {
            "price_per_hour" => Some("0.02".to_owned()),
            "tier" => Some("gold".to_owned()),
            _ => None,
        }
    }

    fn c(attribute: &str, op: ConstraintOp, v: &str) -> Constraint {
        Constraint {
            attribute: attribute.into(),
            op,
            value: Some(ConstraintValue::One(v.into())),
        }
    }

    #[test]
    fn numeric_comparisons() {
        let price = "label.price_per_hour";
        assert!(c(price, ConstraintOp::Lt, "0.05").check(attrs).is_ok());
        assert!(c(price, ConstraintOp::Le, "0.02").check(attrs).is_ok());
        assert!(c(price, ConstraintOp::Gt, "0.01").check(attrs).is_ok());
        assert!(c(price, ConstraintOp::Ge, "0.02").check(attrs).is_ok());
        let e = c(price, ConstraintOp::Lt, "0.02").check(attrs).unwrap_err();
        assert_eq!(e, "constraint label.price_per_hour < 0.02 failed (0.02)");
        // Missing or not a number: fails.
        assert!(c("cost", ConstraintOp::Lt, "1").check(attrs).is_err());
        assert!(c("tier", ConstraintOp::Gt, "1").check(attrs).is_err());
        // Text operators are unchanged: "0.02" is not "0.020".
        assert!(c(price, ConstraintOp::Eq, "0.020").check(attrs).is_err());
    }

    #[test]
    fn numeric_operators_parse_and_need_a_number() {
        let raw = |op: &str, v: &str| RawConstraint {
            attribute: Some("label.price_per_hour".into()),
            op: Some(op.into()),
            value: Some(ConstraintValue::One(v.into())),
        };
        let mut p = Problems::default();
        let got = raw("<", "0.05").validate("constraints[0]", &mut p).unwrap();
        assert_eq!(got.op, ConstraintOp::Lt);
        assert_eq!(p.len(), 0);
        assert!(
            raw(">=", "cheap")
                .validate("constraints[0]", &mut p)
                .is_none()
        );
        assert_eq!(p.len(), 1);
        let json = serde_json::to_value(&got).unwrap();
        assert_eq!(json["op"], "<");
        let back: Constraint = serde_json::from_value(json).unwrap();
        assert_eq!(back, got);
    }
}
