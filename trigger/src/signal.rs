//! Signals: the values conditions compare, and where they come from.
//!
//! The crate fetches nothing. The caller (the node core, the simulator)
//! supplies a [`SignalValue`] for each [`Signal`]: it polls `http_json`
//! feeds every `every`, aggregates node labels and free capacity from the
//! membership table, and counts its own tasks. A value older than its
//! condition's `max_age` is stale and counts as missing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shoal_model::{Constraint, ConstraintOp, ConstraintValue};

use crate::spec::{Condition, Op};

/// How often an `http_json` feed is polled unless `every` says otherwise.
pub const DEFAULT_HTTP_EVERY: Duration = Duration::from_secs(30);
/// How old a value of a signal other than `http_json` may be before it is
/// stale (those are computed by the evaluating node from its own state).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(60);
/// How often a waiting trigger samples signals other than `http_json`.
pub const DEFAULT_SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// How node-label values are combined over the eligible nodes with room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    /// The smallest value (the cheapest node).
    Min,
    /// The largest value.
    Max,
    /// The mean.
    Avg,
}

impl Aggregate {
    /// As written.
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregate::Min => "min",
            Aggregate::Max => "max",
            Aggregate::Avg => "avg",
        }
    }

    /// Combines values; `None` when there are none (or one is not finite).
    pub fn apply(self, values: impl IntoIterator<Item = f64>) -> Option<f64> {
        let mut n = 0u64;
        let mut acc: Option<f64> = None;
        for v in values {
            if !v.is_finite() {
                return None;
            }
            n += 1;
            acc = Some(match (self, acc) {
                (_, None) => v,
                (Aggregate::Min, Some(a)) => a.min(v),
                (Aggregate::Max, Some(a)) => a.max(v),
                (Aggregate::Avg, Some(a)) => a + v,
            });
        }
        match self {
            Aggregate::Avg => acc.map(|sum| sum / n as f64),
            _ => acc,
        }
    }
}

/// A resource whose free amount, summed over the eligible nodes, is a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    /// Cores.
    Cpu,
    /// MiB.
    Memory,
    /// MiB.
    Disk,
    /// GPUs.
    Gpu,
}

impl Resource {
    /// As written after `free.`.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
            Resource::Disk => "disk",
            Resource::Gpu => "gpu",
        }
    }
}

/// A metric of the cluster's own, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Tasks waiting for a node.
    TasksPending,
    /// Tasks running.
    TasksRunning,
    /// Members alive.
    NodesAlive,
}

impl Metric {
    /// Every metric, for error messages and docs.
    pub const ALL: [Metric; 3] = [
        Metric::TasksPending,
        Metric::TasksRunning,
        Metric::NodesAlive,
    ];

    /// As written.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::TasksPending => "tasks_pending",
            Metric::TasksRunning => "tasks_running",
            Metric::NodesAlive => "nodes_alive",
        }
    }
}

/// What a condition looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    /// A number in a JSON document served over HTTP (a price feed).
    HttpJson {
        /// `http://…` or `https://…`.
        url: String,
        /// RFC 6901 JSON pointer to the number (`/price`).
        pointer: String,
        /// How often the caller should poll it.
        every: Duration,
    },
    /// `min|max|avg(label.NAME)` over the eligible nodes with room for the run.
    Label {
        /// How values are combined.
        aggregate: Aggregate,
        /// The label key.
        label: String,
    },
    /// `free.cpu|memory|disk|gpu`: free capacity summed over the eligible nodes.
    Free(Resource),
    /// A cluster metric (`tasks_pending`, `tasks_running`, `nodes_alive`).
    Metric(Metric),
}

impl Signal {
    /// Parses the `signal` field. `Err` says what is accepted.
    pub fn parse_name(name: &str) -> Result<SignalKind, String> {
        let name = name.trim();
        if name == "http_json" {
            return Ok(SignalKind::HttpJson);
        }
        if let Some(r) = name.strip_prefix("free.") {
            return match r {
                "cpu" => Ok(SignalKind::Other(Signal::Free(Resource::Cpu))),
                "memory" => Ok(SignalKind::Other(Signal::Free(Resource::Memory))),
                "disk" => Ok(SignalKind::Other(Signal::Free(Resource::Disk))),
                "gpu" => Ok(SignalKind::Other(Signal::Free(Resource::Gpu))),
                _ => Err(format!(
                    "unknown resource {r:?}: use free.cpu, free.memory, free.disk or free.gpu"
                )),
            };
        }
        for aggregate in [Aggregate::Min, Aggregate::Max, Aggregate::Avg] {
            if let Some(inner) = name
                .strip_prefix(aggregate.as_str())
                .and_then(|s| s.strip_prefix('('))
                .and_then(|s| s.strip_suffix(')'))
            {
                let Some(label) = inner.trim().strip_prefix("label.") else {
                    return Err(format!(
                        "{}() takes a node label: {}(label.NAME)",
                        aggregate.as_str(),
                        aggregate.as_str()
                    ));
                };
                let ok = !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
                if !ok {
                    return Err(format!("{label:?} is not a label key"));
                }
                return Ok(SignalKind::Other(Signal::Label {
                    aggregate,
                    label: label.to_owned(),
                }));
            }
        }
        if let Some(m) = Metric::ALL.into_iter().find(|m| m.as_str() == name) {
            return Ok(SignalKind::Other(Signal::Metric(m)));
        }
        Err(format!(
            "unknown signal {name:?}: use http_json, min|max|avg(label.NAME), free.cpu|memory|disk|gpu, tasks_pending, tasks_running or nodes_alive"
        ))
    }

    /// The `signal` field as written (`http_json`, `min(label.price_per_hour)`).
    pub fn name(&self) -> String {
        match self {
            Signal::HttpJson { .. } => "http_json".into(),
            Signal::Label { aggregate, label } => format!("{}(label.{label})", aggregate.as_str()),
            Signal::Free(r) => format!("free.{}", r.as_str()),
            Signal::Metric(m) => m.as_str().into(),
        }
    }

    /// A short description of where the value comes from
    /// (`http://127.0.0.1:8080/price#/price`, `min(label.price_per_hour)`).
    pub fn describe(&self) -> String {
        match self {
            Signal::HttpJson { url, pointer, .. } => format!("{url}#{pointer}"),
            other => other.name(),
        }
    }

    /// How often a waiting evaluator should look at it again.
    pub fn sample_every(&self) -> Duration {
        match self {
            Signal::HttpJson { every, .. } => *every,
            _ => DEFAULT_SAMPLE_EVERY,
        }
    }
}

/// What [`Signal::parse_name`] found: `http_json` needs its other fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignalKind {
    /// `http_json`: `url`, `pointer`, `every` come from the condition.
    HttpJson,
    /// Any other signal, complete.
    Other(Signal),
}

/// A value of a signal, as the caller last saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignalValue {
    /// The number, if there is one.
    pub value: Option<f64>,
    /// Where it came from (`http://…/price`, `3 nodes with room`).
    pub source: String,
    /// When it was read.
    pub at: DateTime<Utc>,
    /// Why there is no value (`connection refused`, `/price is not a number`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl SignalValue {
    /// A value read at `at`.
    pub fn new(value: f64, source: impl Into<String>, at: DateTime<Utc>) -> SignalValue {
        SignalValue {
            value: Some(value),
            source: source.into(),
            at,
            error: None,
        }
    }

    /// No value: `error` says why.
    pub fn error(
        error: impl Into<String>,
        source: impl Into<String>,
        at: DateTime<Utc>,
    ) -> SignalValue {
        SignalValue {
            value: None,
            source: source.into(),
            at,
            error: Some(error.into()),
        }
    }

    /// Nothing known yet (the feed was never read).
    pub fn unknown(source: impl Into<String>) -> SignalValue {
        SignalValue {
            value: None,
            source: source.into(),
            at: DateTime::<Utc>::UNIX_EPOCH,
            error: Some("no value yet".into()),
        }
    }

    /// The value if it is fresh at `now`: finite and at most `max_age` old.
    pub fn fresh(&self, now: DateTime<Utc>, max_age: Duration) -> Option<f64> {
        let v = self.value.filter(|v| v.is_finite())?;
        (age(now, self.at) <= max_age).then_some(v)
    }
}

/// `now - at` as a duration (zero when `at` is later).
pub(crate) fn age(now: DateTime<Utc>, at: DateTime<Utc>) -> Duration {
    (now - at).to_std().unwrap_or(Duration::ZERO)
}

/// Errors of [`json_pointer_f64`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PointerError {
    /// The pointer names nothing in the document.
    #[error("{0} is not in the document")]
    Missing(String),
    /// It names something that is not a number.
    #[error("{pointer} is {found}, not a number")]
    NotANumber {
        /// The pointer.
        pointer: String,
        /// What it named (`a string`, `an object`).
        found: &'static str,
    },
}

/// The number at `pointer` (RFC 6901, `/price`, `/data/0/value`; `""` is the
/// whole document) in a JSON document. A string holding a number
/// (`"0.042"`) counts, since many feeds quote their prices.
pub fn json_pointer_f64(doc: &Value, pointer: &str) -> Result<f64, PointerError> {
    let found = doc
        .pointer(pointer)
        .ok_or_else(|| PointerError::Missing(pointer.to_owned()))?;
    let not = |found| PointerError::NotANumber {
        pointer: pointer.to_owned(),
        found,
    };
    match found {
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .ok_or(not("a number out of range")),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .ok_or(not("a string")),
        Value::Null => Err(not("null")),
        Value::Bool(_) => Err(not("a boolean")),
        Value::Array(_) => Err(not("an array")),
        Value::Object(_) => Err(not("an object")),
    }
}

/// The placement constraint a label condition implies, if any: a run fired
/// because `min(label.price_per_hour) < 0.05` may be placed only on nodes
/// where `price_per_hour < 0.05`. `min` and `max` bind with `<`, `<=`, `>`,
/// `>=` (for `min(x) < v` only the nodes below `v` made it true; for
/// `max(x) < v` every node is below `v`, so the constraint costs nothing).
/// `avg`, `==`, `!=` and other signals bind nothing (`None`): no single node
/// makes an average true.
pub fn placement_constraint(condition: &Condition) -> Option<Constraint> {
    let Signal::Label { aggregate, label } = &condition.signal else {
        return None;
    };
    if *aggregate == Aggregate::Avg {
        return None;
    }
    let op = match condition.op {
        Op::Lt => ConstraintOp::Lt,
        Op::Le => ConstraintOp::Le,
        Op::Gt => ConstraintOp::Gt,
        Op::Ge => ConstraintOp::Ge,
        Op::Eq | Op::Ne => return None,
    };
    Some(Constraint {
        attribute: format!("label.{label}"),
        op,
        value: Some(ConstraintValue::One(condition.value.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn signal_names_parse_and_print_back() {
        for name in [
            "min(label.price_per_hour)",
            "max(label.carbon)",
            "avg(label.x)",
            "free.cpu",
            "free.memory",
            "free.disk",
            "free.gpu",
            "tasks_pending",
            "tasks_running",
            "nodes_alive",
        ] {
            let SignalKind::Other(s) = Signal::parse_name(name).unwrap() else {
                panic!("{name}")
            };
            assert_eq!(s.name(), name);
        }
        assert_eq!(
            Signal::parse_name("http_json").unwrap(),
            SignalKind::HttpJson
        );
        for bad in [
            "price",
            "min(price)",
            "min(label.)",
            "free.bananas",
            "sum(label.x)",
            "",
        ] {
            assert!(Signal::parse_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn aggregates() {
        assert_eq!(Aggregate::Min.apply([0.08, 0.02, 0.05]), Some(0.02));
        assert_eq!(Aggregate::Max.apply([0.08, 0.02]), Some(0.08));
        assert_eq!(Aggregate::Avg.apply([1.0, 2.0, 3.0]), Some(2.0));
        assert_eq!(Aggregate::Min.apply([]), None);
        assert_eq!(Aggregate::Avg.apply([1.0, f64::NAN]), None);
    }

    #[test]
    fn pointers() {
        let doc =
            json!({"price": 0.042, "quoted": "0.05", "data": [{"v": 7}], "s": "cheap", "n": null});
        assert_eq!(json_pointer_f64(&doc, "/price"), Ok(0.042));
        assert_eq!(json_pointer_f64(&doc, "/quoted"), Ok(0.05));
        assert_eq!(json_pointer_f64(&doc, "/data/0/v"), Ok(7.0));
        assert_eq!(json_pointer_f64(&json!(3), ""), Ok(3.0));
        assert_eq!(
            json_pointer_f64(&doc, "/nope").unwrap_err().to_string(),
            "/nope is not in the document"
        );
        assert_eq!(
            json_pointer_f64(&doc, "/s").unwrap_err().to_string(),
            "/s is a string, not a number"
        );
        assert!(json_pointer_f64(&doc, "/n").is_err());
        assert!(json_pointer_f64(&doc, "/data").is_err());
    }

    #[test]
    fn staleness() {
        let t0 = DateTime::<Utc>::from_timestamp(1_000_000, 0).unwrap();
        let v = SignalValue::new(0.01, "feed", t0);
        let max = Duration::from_secs(60);
        assert_eq!(
            v.fresh(t0 + chrono::TimeDelta::seconds(60), max),
            Some(0.01)
        );
        assert_eq!(v.fresh(t0 + chrono::TimeDelta::seconds(61), max), None);
        assert_eq!(SignalValue::unknown("feed").fresh(t0, max), None);
        assert_eq!(
            SignalValue::error("refused", "feed", t0).fresh(t0, max),
            None
        );
    }
}
