//! Rolling deployments: a service job's `[update]` policy, and the record
//! of one deployment that the job's replicated document keeps.
//!
//! A change of what a service's task runs (anything but `count`) makes a
//! new **deployment** when the job has an `[update]` table: its tasks are
//! replaced at most `max_parallel` at a time, each new one started beside
//! the one it replaces and the old one stopped only after the new one has
//! been healthy for `min_healthy_time` (start-first). The record says
//! which indexes are being replaced (`active`) and which are done, so that
//! whichever node drives the deployment next resumes it where it stands.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::spec::{Problems, format_duration, parse_duration};

/// The default `[update]` values, as the issue that asked for them gives
/// them.
const DEFAULT_MIN_HEALTHY: Duration = Duration::from_secs(5);
const DEFAULT_HEALTHY_DEADLINE: Duration = Duration::from_secs(120);
/// Most canaries a job may ask for.
pub const MAX_CANARY: u32 = 1000;

/// How a service's tasks are replaced when what they run changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdatePolicy {
    /// Tasks replaced at a time (at least 1).
    pub max_parallel: u32,
    /// How long a new task must stay healthy before the one it replaces
    /// is stopped.
    pub min_healthy_time: String,
    /// A new task not healthy (for `min_healthy_time`) this long after its
    /// replacement began fails the deployment.
    pub healthy_deadline: String,
    /// New tasks run beside the old ones, and the rest wait, until the
    /// deployment is promoted.
    pub canary: u32,
    /// Promote once the canaries are healthy, without waiting for
    /// `shoal deployment promote`.
    pub auto_promote: bool,
    /// On failure, go back to the last version that deployed healthily.
    pub auto_revert: bool,
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        UpdatePolicy {
            max_parallel: 1,
            min_healthy_time: format_duration(DEFAULT_MIN_HEALTHY),
            healthy_deadline: format_duration(DEFAULT_HEALTHY_DEADLINE),
            canary: 0,
            auto_promote: false,
            auto_revert: false,
        }
    }
}

impl UpdatePolicy {
    /// `min_healthy_time`.
    pub fn min_healthy(&self) -> Duration {
        parse_duration(&self.min_healthy_time).unwrap_or(DEFAULT_MIN_HEALTHY)
    }

    /// `healthy_deadline`.
    pub fn deadline(&self) -> Duration {
        parse_duration(&self.healthy_deadline).unwrap_or(DEFAULT_HEALTHY_DEADLINE)
    }
}

/// `[update]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpdate {
    max_parallel: Option<i64>,
    min_healthy_time: Option<String>,
    healthy_deadline: Option<String>,
    canary: Option<i64>,
    auto_promote: Option<bool>,
    auto_revert: Option<bool>,
}

impl RawUpdate {
    pub(crate) fn validate(self, p: &mut Problems) -> UpdatePolicy {
        let d = UpdatePolicy::default();
        let max_parallel = match self.max_parallel {
            None => d.max_parallel,
            Some(n) if (1..=i64::from(crate::MAX_COUNT)).contains(&n) => {
                u32::try_from(n).unwrap_or(1)
            }
            Some(n) => {
                p.add(
                    "update.max_parallel",
                    format!(
                        "must be between 1 and {} (got {n}): how many tasks are replaced at a time",
                        crate::MAX_COUNT
                    ),
                );
                1
            }
        };
        let canary = match self.canary {
            None => 0,
            Some(n) if (0..=i64::from(MAX_CANARY)).contains(&n) => u32::try_from(n).unwrap_or(0),
            Some(n) => {
                p.add(
                    "update.canary",
                    format!("must be between 0 and {MAX_CANARY} (got {n})"),
                );
                0
            }
        };
        let mut duration = |field: &str, text: Option<String>, default: Duration| -> Duration {
            match text {
                None => default,
                Some(t) => parse_duration(&t).unwrap_or_else(|| {
                    p.add(field, format!("not a duration: {t:?} (use 1s, 500ms, 2m)"));
                    default
                }),
            }
        };
        let min_healthy = duration(
            "update.min_healthy_time",
            self.min_healthy_time,
            DEFAULT_MIN_HEALTHY,
        );
        let deadline = duration(
            "update.healthy_deadline",
            self.healthy_deadline,
            DEFAULT_HEALTHY_DEADLINE.max(min_healthy * 2),
        );
        if deadline <= min_healthy {
            p.add(
                "update.healthy_deadline",
                format!(
                    "must be longer than update.min_healthy_time ({} <= {})",
                    format_duration(deadline),
                    format_duration(min_healthy)
                ),
            );
        }
        UpdatePolicy {
            max_parallel,
            min_healthy_time: format_duration(min_healthy),
            healthy_deadline: format_duration(deadline),
            canary,
            auto_promote: self.auto_promote.unwrap_or(false),
            auto_revert: self.auto_revert.unwrap_or(false),
        }
    }
}

/// Where a deployment stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DeploymentStatus {
    /// Replacing tasks (or waiting for its canaries to be promoted).
    Running,
    /// Stopped where it stands by `shoal deployment pause` until resumed.
    Paused,
    /// Every task runs the new version, healthy.
    Successful,
    /// A new task was not healthy in time, or `shoal deployment fail`.
    Failed,
    /// Failed, and the job went back to its last healthy version.
    Reverted,
    /// A newer version of the job replaced it before it finished.
    Cancelled,
}

impl DeploymentStatus {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentStatus::Running => "running",
            DeploymentStatus::Paused => "paused",
            DeploymentStatus::Successful => "successful",
            DeploymentStatus::Failed => "failed",
            DeploymentStatus::Reverted => "reverted",
            DeploymentStatus::Cancelled => "cancelled",
        }
    }

    /// Parses the lower-case name.
    pub fn parse(s: &str) -> Option<DeploymentStatus> {
        Some(match s {
            "running" => DeploymentStatus::Running,
            "paused" => DeploymentStatus::Paused,
            "successful" => DeploymentStatus::Successful,
            "failed" => DeploymentStatus::Failed,
            "reverted" => DeploymentStatus::Reverted,
            "cancelled" => DeploymentStatus::Cancelled,
            _ => return None,
        })
    }

    /// Still in progress: its tasks are being (or waiting to be) replaced.
    pub fn in_progress(self) -> bool {
        matches!(self, DeploymentStatus::Running | DeploymentStatus::Paused)
    }
}

impl fmt::Display for DeploymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One deployment of a job, as its document records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Deployment {
    /// The job version it deploys (the version of the change that made it).
    pub version: u64,
    /// The version its tasks ran before (the previous run).
    pub from_version: u64,
    /// Where it stands.
    pub status: DeploymentStatus,
    /// Canaries asked for (`update.canary` when it began).
    pub canary: u32,
    /// The canaries were promoted (by hand or `auto_promote`).
    pub promoted: bool,
    /// Indexes being replaced now (in JSON, compactly: `"0-3,7"`).
    #[serde(with = "compact")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "0-3,7"))]
    pub active: BTreeSet<u32>,
    /// Indexes replaced: the new task healthy long enough, the old one
    /// stopped (in JSON, compactly: a 10,000-task job's is `"0-9999"`).
    #[serde(with = "compact")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "0-3,7"))]
    pub done: BTreeSet<u32>,
    /// New tasks healthy (done, and active ones healthy long enough).
    pub healthy: u32,
    /// What it is doing or why it ended.
    pub description: String,
    /// When it began (ms since the Unix epoch).
    pub started_ms: u64,
    /// When its record last changed (ms since the Unix epoch).
    pub updated_ms: u64,
}

impl Deployment {
    /// A deployment of `version`, replacing the run of `from_version`,
    /// begun at `now_ms`.
    pub fn begin(version: u64, from_version: u64, canary: u32, now_ms: u64) -> Deployment {
        Deployment {
            version,
            from_version,
            status: DeploymentStatus::Running,
            canary,
            promoted: canary == 0,
            active: BTreeSet::new(),
            done: BTreeSet::new(),
            healthy: 0,
            description: "starting".to_owned(),
            started_ms: now_ms,
            updated_ms: now_ms,
        }
    }

    /// Whether index `i` is being replaced or was.
    pub fn replaces(&self, i: u32) -> bool {
        self.active.contains(&i) || self.done.contains(&i)
    }
}

/// Changes to a deployment's record: only the fields given are written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentPatch {
    /// New status.
    pub status: Option<DeploymentStatus>,
    /// Promoted.
    pub promoted: Option<bool>,
    /// Indexes being replaced.
    pub active: Option<BTreeSet<u32>>,
    /// Indexes replaced (added to those already done: none is ever
    /// taken out).
    pub done: Option<BTreeSet<u32>>,
    /// New tasks healthy.
    pub healthy: Option<u32>,
    /// What it is doing, or why it ended.
    pub description: Option<String>,
}

impl DeploymentPatch {
    /// Whether it changes `d` (other than its time).
    pub fn changes(&self, d: &Deployment) -> bool {
        self.apply(d, d.updated_ms) != *d
    }

    /// `d` with the patch applied (at `now_ms`).
    pub fn apply(&self, d: &Deployment, now_ms: u64) -> Deployment {
        let mut d = d.clone();
        if let Some(s) = self.status {
            d.status = s;
        }
        if let Some(p) = self.promoted {
            d.promoted = p;
        }
        // An index once done stays done: a step decided from a record that
        // lagged (a new driver, or two for a moment while their views of
        // the ring differ) never takes it out, nor puts it back in flight.
        if let Some(a) = &self.done {
            d.done.extend(a.iter().copied());
        }
        if let Some(a) = &self.active {
            d.active = a.clone();
        }
        let done = &d.done;
        d.active.retain(|i| !done.contains(i));
        if let Some(h) = self.healthy {
            d.healthy = h;
        }
        if let Some(s) = &self.description {
            d.description = s.clone();
        }
        d.updated_ms = now_ms;
        d
    }
}

/// Index sets as the text [`format_indexes`] writes.
mod compact {
    use std::collections::BTreeSet;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(set: &BTreeSet<u32>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_indexes(set))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeSet<u32>, D::Error> {
        Ok(super::parse_indexes(&String::deserialize(d)?))
    }
}

/// Writes a set of indexes compactly: `0-3,7,9-10`.
pub fn format_indexes(set: &BTreeSet<u32>) -> String {
    let mut out = String::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
    }
    out
}

/// Reads what [`format_indexes`] wrote (unreadable parts are skipped).
pub fn parse_indexes(s: &str) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>())
                    && a <= b
                    && b - a <= crate::MAX_COUNT
                {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(i) = part.parse() {
                    out.insert(i);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::JobSpec;
    use serde_json::json;

    fn spec(update: serde_json::Value) -> Result<JobSpec, crate::SpecError> {
        JobSpec::from_json(json!({
            "name": "web",
            "count": 6,
            "task": {"command": "/bin/true"},
            "update": update,
        }))
    }

    #[test]
    fn defaults_fill_in_and_read_back() {
        let s = spec(json!({})).unwrap();
        let u = s.update.clone().unwrap();
        assert_eq!(u, UpdatePolicy::default());
        assert_eq!(u.min_healthy(), Duration::from_secs(5));
        assert_eq!(u.deadline(), Duration::from_secs(120));
        assert_eq!(JobSpec::from_json(s.to_json()).unwrap(), s);
    }

    #[test]
    fn bad_values_name_their_field() {
        let e = spec(json!({"max_parallel": 0})).unwrap_err();
        assert_eq!(e.field(), "update.max_parallel", "{e}");
        let e = spec(json!({"min_healthy_time": "soon"})).unwrap_err();
        assert_eq!(e.field(), "update.min_healthy_time", "{e}");
        let e = spec(json!({"min_healthy_time": "1m", "healthy_deadline": "30s"})).unwrap_err();
        assert_eq!(e.field(), "update.healthy_deadline", "{e}");
        let e = spec(json!({"canary": -1})).unwrap_err();
        assert_eq!(e.field(), "update.canary", "{e}");
        let e = spec(json!({"parallel": 2})).unwrap_err();
        assert!(e.to_string().contains("parallel"), "{e}");
        let batch = JobSpec::from_json(json!({
            "name": "b", "type": "batch",
            "task": {"command": "/bin/true"}, "update": {},
        }))
        .unwrap_err();
        assert_eq!(batch.field(), "update", "{batch}");
    }

    #[test]
    fn a_long_min_healthy_time_moves_the_default_deadline() {
        let s = spec(json!({"min_healthy_time": "2m"})).unwrap();
        assert_eq!(s.update.unwrap().deadline(), Duration::from_secs(240));
    }

    #[test]
    fn index_sets_round_trip_compactly() {
        let set: BTreeSet<u32> = [0, 1, 2, 3, 7, 9, 10].into();
        assert_eq!(format_indexes(&set), "0-3,7,9-10");
        assert_eq!(parse_indexes("0-3,7,9-10"), set);
        assert_eq!(parse_indexes(""), BTreeSet::new());
        assert_eq!(parse_indexes("x,2,5-3"), [2].into());
    }
}
