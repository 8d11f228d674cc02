//! The trigger spec, its parsing and its validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use shoal_model::{FieldError, JobSpec, JobType, SpecError, validate_name};

use crate::schedule::{Schedule, parse_cron, parse_timezone};
use crate::signal::{DEFAULT_HTTP_EVERY, DEFAULT_MAX_AGE, Signal, SignalKind};

/// Conditions one trigger may have.
pub const MAX_CONDITIONS: usize = 16;
/// Parents one trigger may wait for.
pub const MAX_AFTER: usize = 16;
/// Most outcomes of one kind kept in a trigger's history.
pub const MAX_HISTORY: u32 = 100;
/// Shortest `every`.
pub const MIN_EVERY: Duration = Duration::from_secs(1);

/// How a condition compares its signal with its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `<`
    #[serde(rename = "<")]
    Lt,
    /// `<=`
    #[serde(rename = "<=")]
    Le,
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `>=`
    #[serde(rename = ">=")]
    Ge,
    /// `==`
    #[serde(rename = "==")]
    Eq,
    /// `!=`
    #[serde(rename = "!=")]
    Ne,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "==" | "=" => Op::Eq,
            "!=" => Op::Ne,
            _ => return None,
        })
    }

    /// As written.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    /// `actual <op> bound`.
    pub fn apply(self, actual: f64, bound: f64) -> bool {
        match self {
            Op::Lt => actual < bound,
            Op::Le => actual <= bound,
            Op::Gt => actual > bound,
            Op::Ge => actual >= bound,
            Op::Eq => actual == bound,
            Op::Ne => actual != bound,
        }
    }
}

/// What a condition whose value is missing (never read, an error, stale) counts as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnMissing {
    /// Undecided: the trigger does not fire while the value is missing
    /// (under `match = "any"` too), and a missing value does not restart
    /// `hold_for` (the default).
    #[default]
    Wait,
    /// False (and `hold_for` starts again).
    False,
    /// True.
    True,
}

impl OnMissing {
    fn as_str(self) -> &'static str {
        match self {
            OnMissing::Wait => "wait",
            OnMissing::False => "false",
            OnMissing::True => "true",
        }
    }
}

/// One condition of `when`.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    /// What it looks at.
    pub signal: Signal,
    /// How it compares.
    pub op: Op,
    /// With what.
    pub value: f64,
    /// How long it must have held, continuously, before it counts as true.
    pub hold_for: Duration,
    /// What a missing value counts as.
    pub on_missing: OnMissing,
    /// Oldest value that is not stale (default: 2 × `every` for
    /// `http_json`, 1 minute for the others).
    pub max_age: Duration,
}

/// How conditions combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Match {
    /// Every condition (the default).
    #[default]
    All,
    /// At least one.
    Any,
}

/// What happens when a slot is due and a run of the trigger is still active.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Concurrency {
    /// Start another run beside it.
    Allow,
    /// Wait for it to end, up to the slot's deadline (the default).
    #[default]
    Forbid,
    /// Stop it and start the new run.
    Replace,
}

/// How many finished runs of each kind are kept in a trigger's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryLimits {
    /// Runs that succeeded (default 5).
    #[serde(default = "five")]
    pub success: u32,
    /// Runs that failed (default 5).
    #[serde(default = "five")]
    pub failed: u32,
}

fn five() -> u32 {
    5
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            success: 5,
            failed: 5,
        }
    }
}

/// Which end of a parent's run starts this trigger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RunEnd {
    /// It succeeded (the default).
    #[default]
    Success,
    /// It failed.
    Failure,
    /// It ended either way.
    Complete,
}

impl RunEnd {
    /// Whether a run that ended with `succeeded` matches.
    pub fn matches(self, succeeded: bool) -> bool {
        match self {
            RunEnd::Success => succeeded,
            RunEnd::Failure => !succeeded,
            RunEnd::Complete => true,
        }
    }
}

/// One `after` edge: run when a run of `job` ends this way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct After {
    /// The parent: a batch job or a trigger.
    pub job: String,
    /// Which end.
    #[serde(default)]
    pub on: RunEnd,
}

/// What a trigger does when it fires.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Run an inline batch job; each run is a job of its own, named after
    /// the run ([`crate::run_job_name`]). `name` is the trigger's until then.
    Run(Box<JobSpec>),
    /// Run the batch job of this name once more.
    RunJob(String),
    /// Set a service's count.
    Scale {
        /// The job.
        job: String,
        /// Its new count.
        count: u32,
    },
    /// Install a package instance, or upgrade it to `version`.
    Install {
        /// The package.
        package: String,
        /// The instance name.
        instance: String,
        /// A version (absent: the newest).
        version: Option<String>,
        /// Its options (a JSON object).
        options: Value,
    },
}

/// A validated trigger, with every default filled in. Its serialized form
/// (JSON, TOML) is the canonical input form: it parses back to itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "RawTrigger", try_from = "RawTrigger")]
pub struct TriggerSpec {
    /// Name: a job name (DNS-label words).
    pub name: String,
    /// When it is due; `None` for a trigger fired by conditions or by `after`.
    pub schedule: Option<Schedule>,
    /// Conditions.
    pub when: Vec<Condition>,
    /// How they combine.
    pub match_mode: Match,
    /// Condition-only triggers: fire at most once per this.
    pub cooldown: Option<Duration>,
    /// A slot not fired this long after it is due is skipped; `None`: until
    /// the next slot is due.
    pub starting_deadline: Option<Duration>,
    /// With a run still active.
    pub concurrency: Concurrency,
    /// Finished runs kept.
    pub history: HistoryLimits,
    /// Paused when false.
    pub enabled: bool,
    /// Parents whose runs start this one.
    pub after: Vec<After>,
    /// What it does.
    pub action: Action,
}

impl TriggerSpec {
    /// Parses and validates a trigger from JSON (the API's form).
    pub fn from_json(value: Value) -> Result<TriggerSpec, SpecError> {
        let raw: RawTrigger = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." || path.is_empty() {
                "spec".to_owned()
            } else {
                path
            };
            SpecError::one(field, e.into_inner().to_string())
        })?;
        raw.validate()
    }

    /// Parses and validates a trigger from TOML (a trigger file).
    pub fn from_toml(text: &str) -> Result<TriggerSpec, SpecError> {
        TriggerSpec::from_json(shoal_model::toml_to_json(text)?)
    }

    /// The canonical JSON form.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a trigger serializes")
    }

    /// The first slot due strictly after `after` (`None` without a schedule).
    pub fn next_slot(&self, after: chrono::DateTime<chrono::Utc>) -> Option<crate::Slot> {
        self.schedule.as_ref()?.next_slot(&self.name, after)
    }

    /// The job a run of an inline `[run]` action starts, named after the run
    /// ([`crate::run_job_name`]); `None` for other actions.
    pub fn job_for_run(&self, run_id: &str) -> Option<JobSpec> {
        let Action::Run(job) = &self.action else {
            return None;
        };
        let mut job = (**job).clone();
        job.name = crate::schedule::run_job_name(run_id);
        Some(job)
    }
}

// ------------------------------------------------------------------ input

/// The input form, and the canonical serialized form.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrigger {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    every: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    when: Vec<RawCondition>,
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    match_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cooldown: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    starting_deadline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    concurrency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    history: Option<HistoryLimits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    after: Vec<RawAfter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    run: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    run_job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scale: Option<RawScale>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    install: Option<RawInstall>,
}

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pointer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    every: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    op: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hold_for: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    on_missing: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_age: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAfter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    on: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScale {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    count: Option<i64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    package: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    instance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    options: Option<Value>,
}

/// Collects problems, each with its field.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    fn duration(&mut self, field: &str, text: Option<&str>) -> Option<Duration> {
        let t = text?;
        match shoal_model::parse_duration(t) {
            Some(d) => Some(d),
            None => {
                self.add(
                    field,
                    format!("not a duration: {t:?} (use 5s, 10m, 1h 30m)"),
                );
                None
            }
        }
    }
}

fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn fmt_f64(v: f64) -> String {
    v.to_string()
}

impl RawTrigger {
    fn validate(self) -> Result<TriggerSpec, SpecError> {
        let mut p = Problems::default();

        let name = self.name.clone().unwrap_or_default();
        if let Err(e) = validate_name(&name) {
            p.add("name", e);
        }

        // Schedule.
        let schedule = match (&self.every, &self.cron) {
            (Some(_), Some(_)) => {
                p.add("cron", "give every or cron, not both");
                None
            }
            (Some(every), None) => {
                if self.timezone.is_some() {
                    p.add(
                        "timezone",
                        "applies to cron only: every is anchored at multiples of its period since the unix epoch, in UTC",
                    );
                }
                match p.duration("every", Some(every)) {
                    Some(d) if d < MIN_EVERY || d.subsec_nanos() != 0 => {
                        p.add(
                            "every",
                            format!("must be whole seconds, at least 1s (got {every:?})"),
                        );
                        None
                    }
                    Some(period) => Some(Schedule::Every { period }),
                    None => None,
                }
            }
            (None, Some(expr)) => {
                let cron = parse_cron(expr).map_err(|e| p.add("cron", e)).ok();
                let timezone = match &self.timezone {
                    None => Some(chrono_tz::Tz::UTC),
                    Some(tz) => parse_timezone(tz).map_err(|e| p.add("timezone", e)).ok(),
                };
                match (cron, timezone) {
                    (Some(cron), Some(timezone)) => Some(Schedule::Cron {
                        expr: expr.trim().to_owned(),
                        cron: Box::new(cron),
                        timezone,
                    }),
                    _ => None,
                }
            }
            (None, None) => {
                if self.timezone.is_some() {
                    p.add("timezone", "applies to cron only");
                }
                None
            }
        };
        let scheduled = self.every.is_some() || self.cron.is_some();

        // Conditions.
        if self.when.len() > MAX_CONDITIONS {
            p.add("when", format!("at most {MAX_CONDITIONS} conditions"));
        }
        let when: Vec<Condition> = self
            .when
            .into_iter()
            .enumerate()
            .filter_map(|(i, c)| c.validate(&format!("when[{i}]"), &mut p))
            .collect();
        let match_mode = match self.match_mode.as_deref() {
            None | Some("all") => Match::All,
            Some("any") => Match::Any,
            Some(other) => {
                p.add("match", format!("must be all or any (got {other:?})"));
                Match::All
            }
        };

        let cooldown = p.duration("cooldown", self.cooldown.as_deref());
        let starting_deadline = p.duration("starting_deadline", self.starting_deadline.as_deref());
        if cooldown.is_some_and(|c| c < MIN_EVERY || c.subsec_nanos() != 0) {
            p.add("cooldown", "must be whole seconds, at least 1s");
        }

        let concurrency = match self.concurrency.as_deref() {
            None | Some("forbid") => Concurrency::Forbid,
            Some("allow") => Concurrency::Allow,
            Some("replace") => Concurrency::Replace,
            Some(other) => {
                p.add(
                    "concurrency",
                    format!("must be allow, forbid or replace (got {other:?})"),
                );
                Concurrency::Forbid
            }
        };
        let history = self.history.unwrap_or_default();
        if history.success > MAX_HISTORY {
            p.add("history.success", format!("at most {MAX_HISTORY}"));
        }
        if history.failed > MAX_HISTORY {
            p.add("history.failed", format!("at most {MAX_HISTORY}"));
        }

        // Parents.
        if self.after.len() > MAX_AFTER {
            p.add("after", format!("at most {MAX_AFTER} parents"));
        }
        let mut after: Vec<After> = Vec::new();
        for (i, a) in self.after.into_iter().enumerate() {
            let job = a.job.unwrap_or_default();
            if let Err(e) = validate_name(&job) {
                p.add(format!("after[{i}].job"), e);
                continue;
            }
            if job == name {
                p.add(
                    format!("after[{i}].job"),
                    format!("a cycle: {name} -> {name}"),
                );
                continue;
            }
            let on = match a.on.as_deref() {
                None | Some("success") => RunEnd::Success,
                Some("failure") => RunEnd::Failure,
                Some("complete") => RunEnd::Complete,
                Some(other) => {
                    p.add(
                        format!("after[{i}].on"),
                        format!("must be success, failure or complete (got {other:?})"),
                    );
                    continue;
                }
            };
            if after.iter().any(|x| x.job == job) {
                p.add(
                    format!("after[{i}].job"),
                    format!("{job:?} is listed twice"),
                );
                continue;
            }
            after.push(After { job, on });
        }

        // What fires it: a schedule, conditions alone (with a cooldown), or parents.
        let has_after = !after.is_empty() || p.0.iter().any(|e| e.field.starts_with("after"));
        match (
            scheduled,
            has_after,
            when.is_empty() && !p.0.iter().any(|e| e.field.starts_with("when")),
        ) {
            (true, true, _) => p.add(
                "after",
                "a trigger runs on a schedule or after a parent, not both",
            ),
            (true, false, _) => {
                if cooldown.is_some() {
                    p.add("cooldown", "is for triggers without a schedule: a scheduled trigger fires at most once per slot");
                }
            }
            (false, true, _) => {
                if cooldown.is_some() {
                    p.add(
                        "cooldown",
                        "a trigger run by after fires once per parent run",
                    );
                }
            }
            (false, false, true) => p.add(
                "every",
                "a trigger needs every, cron, when (with cooldown) or after",
            ),
            (false, false, false) => {
                if cooldown.is_none() {
                    p.add(
                        "cooldown",
                        "is required for a trigger with conditions and no schedule: it fires at most once per cooldown",
                    );
                }
                if starting_deadline.is_some() {
                    p.add("starting_deadline", "applies to scheduled triggers only");
                }
            }
        }

        // The action: exactly one.
        let given: Vec<&str> = [
            ("run", self.run.is_some()),
            ("run_job", self.run_job.is_some()),
            ("scale", self.scale.is_some()),
            ("install", self.install.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, on)| on.then_some(k))
        .collect();
        let action = match given.len() {
            0 => {
                p.add(
                    "run",
                    "a trigger needs an action: [run], run_job, [scale] or [install]",
                );
                None
            }
            1 => validate_action(
                &name,
                self.run,
                self.run_job,
                self.scale,
                self.install,
                &mut p,
            ),
            _ => {
                p.add(
                    given[1],
                    format!("give one action, not {}", given.join(" and ")),
                );
                None
            }
        };

        match (p.0.is_empty(), action) {
            (true, Some(action)) => Ok(TriggerSpec {
                name,
                schedule,
                when,
                match_mode,
                cooldown,
                starting_deadline,
                concurrency,
                history,
                enabled: self.enabled.unwrap_or(true),
                after,
                action,
            }),
            _ => {
                if p.0.is_empty() {
                    p.add("spec", "is not a valid trigger");
                }
                Err(SpecError { errors: p.0 })
            }
        }
    }
}

fn validate_action(
    name: &str,
    run: Option<Value>,
    run_job: Option<String>,
    scale: Option<RawScale>,
    install: Option<RawInstall>,
    p: &mut Problems,
) -> Option<Action> {
    if let Some(run) = run {
        let Value::Object(mut job) = run else {
            p.add("run", "is a table: the batch job to run, as in a job file");
            return None;
        };
        if job.contains_key("name") {
            p.add(
                "run.name",
                "an inline job has no name: each run is a job named after the run",
            );
            return None;
        }
        match job.get("type").and_then(Value::as_str) {
            None if !job.contains_key("type") => {
                job.insert("type".into(), Value::from("batch"));
            }
            Some("batch") => {}
            _ => {
                p.add(
                    "run.type",
                    "a trigger runs batch jobs: type = \"batch\" (or leave it out)",
                );
                return None;
            }
        }
        // Validated as a job named after the trigger; the path of each
        // problem is prefixed with `run.`.
        let placeholder = if validate_name(name).is_ok() {
            name
        } else {
            "run"
        };
        job.insert("name".into(), Value::from(placeholder));
        return match JobSpec::from_json(Value::Object(job)) {
            Ok(spec) if spec.kind == JobType::Batch => Some(Action::Run(Box::new(spec))),
            Ok(_) => {
                p.add("run.type", "a trigger runs batch jobs");
                None
            }
            Err(e) => {
                for err in e.errors {
                    let field = if err.field == "spec" {
                        "run".to_owned()
                    } else {
                        format!("run.{}", err.field)
                    };
                    p.add(field, err.message);
                }
                None
            }
        };
    }
    if let Some(job) = run_job {
        return match validate_name(&job) {
            Ok(()) => Some(Action::RunJob(job)),
            Err(e) => {
                p.add("run_job", e);
                None
            }
        };
    }
    if let Some(s) = scale {
        let job = s.job.unwrap_or_default();
        let mut ok = true;
        if let Err(e) = validate_name(&job) {
            p.add("scale.job", e);
            ok = false;
        }
        let count = match s.count {
            Some(c) if (0..=i64::from(shoal_model::MAX_COUNT)).contains(&c) => {
                u32::try_from(c).ok()
            }
            Some(c) => {
                p.add(
                    "scale.count",
                    format!("must be between 0 and {} (got {c})", shoal_model::MAX_COUNT),
                );
                None
            }
            None => {
                p.add("scale.count", "is required");
                None
            }
        };
        return match (ok, count) {
            (true, Some(count)) => Some(Action::Scale { job, count }),
            _ => None,
        };
    }
    if let Some(i) = install {
        let mut ok = true;
        let package = i.package.unwrap_or_default();
        if package.is_empty() {
            p.add("install.package", "is required");
            ok = false;
        }
        let instance = i.instance.unwrap_or_default();
        if let Err(e) = validate_name(&instance) {
            p.add("install.instance", e);
            ok = false;
        }
        let options = i.options.unwrap_or_else(|| Value::Object(Map::new()));
        if !options.is_object() {
            p.add("install.options", "is a table of the package's options");
            ok = false;
        }
        if i.version.as_deref().is_some_and(str::is_empty) {
            p.add(
                "install.version",
                "must not be empty (leave it out for the newest)",
            );
            ok = false;
        }
        return ok.then_some(Action::Install {
            package,
            instance,
            version: i.version,
            options,
        });
    }
    None
}

impl RawCondition {
    fn validate(self, field: &str, p: &mut Problems) -> Option<Condition> {
        let before = p.0.len();
        let kind = match self.signal.as_deref() {
            None => {
                p.add(format!("{field}.signal"), "is required");
                None
            }
            Some(s) => Signal::parse_name(s)
                .map_err(|e| p.add(format!("{field}.signal"), e))
                .ok(),
        };
        let every = p.duration(&format!("{field}.every"), self.every.as_deref());
        let signal = match kind {
            Some(SignalKind::HttpJson) => {
                let url = self.url.clone().unwrap_or_default();
                if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > 2048
                {
                    p.add(
                        format!("{field}.url"),
                        "is required for http_json: an http:// or https:// URL",
                    );
                }
                let pointer = self.pointer.clone().unwrap_or_default();
                if !(pointer.is_empty() || pointer.starts_with('/')) || self.pointer.is_none() {
                    p.add(
                        format!("{field}.pointer"),
                        "is required for http_json: a JSON pointer such as /price",
                    );
                }
                let every = every.unwrap_or(DEFAULT_HTTP_EVERY);
                if every < MIN_EVERY {
                    p.add(format!("{field}.every"), "at least 1s");
                }
                Some(Signal::HttpJson {
                    url,
                    pointer,
                    every,
                })
            }
            Some(SignalKind::Other(s)) => {
                for (name, given) in [
                    ("url", self.url.is_some()),
                    ("pointer", self.pointer.is_some()),
                    ("every", self.every.is_some()),
                ] {
                    if given {
                        p.add(format!("{field}.{name}"), "is for http_json signals only");
                    }
                }
                Some(s)
            }
            None => None,
        };
        let op = match self.op.as_deref() {
            None => {
                p.add(format!("{field}.op"), "is required: <, <=, >, >=, == or !=");
                None
            }
            Some(o) => Op::parse(o).or_else(|| {
                p.add(
                    format!("{field}.op"),
                    format!("unknown operator {o:?}: use <, <=, >, >=, == or !="),
                );
                None
            }),
        };
        let value = match self.value {
            Some(v) if v.is_finite() => Some(v),
            Some(_) => {
                p.add(format!("{field}.value"), "must be a finite number");
                None
            }
            None => {
                p.add(
                    format!("{field}.value"),
                    "is required: the number to compare with",
                );
                None
            }
        };
        let hold_for = p
            .duration(&format!("{field}.hold_for"), self.hold_for.as_deref())
            .unwrap_or(Duration::ZERO);
        let on_missing = match self.on_missing.as_deref() {
            None | Some("wait") => OnMissing::Wait,
            Some("false") => OnMissing::False,
            Some("true") => OnMissing::True,
            Some(other) => {
                p.add(
                    format!("{field}.on_missing"),
                    format!("must be wait, false or true (got {other:?})"),
                );
                OnMissing::Wait
            }
        };
        let default_max_age = match &signal {
            Some(Signal::HttpJson { every, .. }) => *every * 2,
            _ => DEFAULT_MAX_AGE,
        };
        let max_age = p
            .duration(&format!("{field}.max_age"), self.max_age.as_deref())
            .unwrap_or(default_max_age);
        if max_age.is_zero() {
            p.add(format!("{field}.max_age"), "must be more than 0s");
        }
        if p.0.len() > before {
            return None;
        }
        Some(Condition {
            signal: signal?,
            op: op?,
            value: value?,
            hold_for,
            on_missing,
            max_age,
        })
    }
}

// ------------------------------------------------------------- canonical form

impl From<TriggerSpec> for RawTrigger {
    fn from(s: TriggerSpec) -> RawTrigger {
        let mut raw = RawTrigger {
            name: Some(s.name),
            match_mode: Some(match s.match_mode {
                Match::All => "all".into(),
                Match::Any => "any".into(),
            }),
            cooldown: s.cooldown.map(fmt_duration),
            starting_deadline: s.starting_deadline.map(fmt_duration),
            concurrency: Some(
                match s.concurrency {
                    Concurrency::Allow => "allow",
                    Concurrency::Forbid => "forbid",
                    Concurrency::Replace => "replace",
                }
                .into(),
            ),
            history: Some(s.history),
            enabled: Some(s.enabled),
            ..RawTrigger::default()
        };
        match s.schedule {
            Some(Schedule::Every { period }) => raw.every = Some(fmt_duration(period)),
            Some(Schedule::Cron { expr, timezone, .. }) => {
                raw.cron = Some(expr);
                raw.timezone = Some(timezone.name().to_owned());
            }
            None => {}
        }
        raw.when = s
            .when
            .into_iter()
            .map(|c| {
                let mut r = RawCondition {
                    signal: Some(c.signal.name()),
                    op: Some(c.op.as_str().into()),
                    value: Some(c.value),
                    hold_for: (!c.hold_for.is_zero()).then(|| fmt_duration(c.hold_for)),
                    on_missing: Some(c.on_missing.as_str().into()),
                    max_age: Some(fmt_duration(c.max_age)),
                    ..RawCondition::default()
                };
                if let Signal::HttpJson {
                    url,
                    pointer,
                    every,
                } = c.signal
                {
                    r.url = Some(url);
                    r.pointer = Some(pointer);
                    r.every = Some(fmt_duration(every));
                }
                r
            })
            .collect();
        raw.after = s
            .after
            .into_iter()
            .map(|a| RawAfter {
                job: Some(a.job),
                on: Some(
                    match a.on {
                        RunEnd::Success => "success",
                        RunEnd::Failure => "failure",
                        RunEnd::Complete => "complete",
                    }
                    .into(),
                ),
            })
            .collect();
        match s.action {
            Action::Run(job) => {
                let mut v = job.to_json();
                if let Some(o) = v.as_object_mut() {
                    o.remove("name");
                }
                raw.run = Some(v);
            }
            Action::RunJob(j) => raw.run_job = Some(j),
            Action::Scale { job, count } => {
                raw.scale = Some(RawScale {
                    job: Some(job),
                    count: Some(i64::from(count)),
                });
            }
            Action::Install {
                package,
                instance,
                version,
                options,
            } => {
                raw.install = Some(RawInstall {
                    package: Some(package),
                    instance: Some(instance),
                    version,
                    options: Some(options),
                });
            }
        }
        raw
    }
}

impl TryFrom<RawTrigger> for TriggerSpec {
    type Error = SpecError;

    fn try_from(raw: RawTrigger) -> Result<TriggerSpec, SpecError> {
        raw.validate()
    }
}

/// For messages: a number as written.
pub(crate) fn show_value(v: f64) -> String {
    fmt_f64(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The issue's example, verbatim.
    const CHEAP_REPORT: &str = r#"
name = "cheap-report"
every = "5s"                 # or: cron = "30 2 * * *" + timezone = "Europe/Berlin"
starting_deadline = "1m"
concurrency = "forbid"

[[when]]                     # an external price feed
signal = "http_json"
url = "http://127.0.0.1:8080/price"
pointer = "/price"
op = "<"
value = 0.05

[[when]]                     # the cheapest node with room for the run
signal = "min(label.price_per_hour)"
op = "<"
value = 0.05

[run]                        # the action: a batch job, as in a job file
type = "batch"
count = 2
[run.task]
runtime = "process"
command = "/bin/sh"
args = ["-c", "echo run $SHOAL_RUN_ID"]
"#;

    fn fields(e: &SpecError) -> Vec<&str> {
        e.errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn the_issue_example_parses_and_validates() {
        let s = TriggerSpec::from_toml(CHEAP_REPORT).unwrap();
        assert_eq!(s.name, "cheap-report");
        assert_eq!(
            s.schedule,
            Some(Schedule::Every {
                period: Duration::from_secs(5)
            })
        );
        assert_eq!(s.starting_deadline, Some(Duration::from_secs(60)));
        assert_eq!(s.concurrency, Concurrency::Forbid);
        assert_eq!(s.when.len(), 2);
        assert_eq!(
            s.when[0].signal,
            Signal::HttpJson {
                url: "http://127.0.0.1:8080/price".into(),
                pointer: "/price".into(),
                every: Duration::from_secs(30),
            }
        );
        assert_eq!(s.when[0].max_age, Duration::from_secs(60));
        assert_eq!(s.when[1].op, Op::Lt);
        assert_eq!(s.when[1].on_missing, OnMissing::Wait);
        assert_eq!(s.match_mode, Match::All);
        assert!(s.enabled);
        assert_eq!(
            s.history,
            HistoryLimits {
                success: 5,
                failed: 5
            }
        );
        let job = s.job_for_run("cheap-report@2026-12-01T03:00:00").unwrap();
        assert_eq!(job.name, "cheap-report/run-2026-12-01t030000");
        assert_eq!(job.kind, JobType::Batch);
        assert_eq!(job.count, Some(2));
        assert_eq!(job.task.args[1], "echo run $SHOAL_RUN_ID");
    }

    #[test]
    fn the_canonical_form_parses_back_to_itself() {
        let s = TriggerSpec::from_toml(CHEAP_REPORT).unwrap();
        let j = s.to_json();
        assert_eq!(TriggerSpec::from_json(j.clone()).unwrap(), s);
        assert_eq!(j["run"]["type"], "batch");
        assert!(j["run"].get("name").is_none());
        // serde too (the state stores specs as JSON).
        let back: TriggerSpec = serde_json::from_value(j).unwrap();
        assert_eq!(back, s);
        let cron = TriggerSpec::from_json(json!({
            "name": "nightly", "cron": "30 2 * * *", "timezone": "Europe/Berlin",
            "run_job": "report",
        }))
        .unwrap();
        assert_eq!(TriggerSpec::from_json(cron.to_json()).unwrap(), cron);
        assert_eq!(cron.to_json()["timezone"], "Europe/Berlin");
    }

    #[test]
    fn json_and_toml_are_the_same_structure() {
        let from_toml = TriggerSpec::from_toml(CHEAP_REPORT).unwrap();
        let json = shoal_model::toml_to_json(CHEAP_REPORT).unwrap();
        assert_eq!(TriggerSpec::from_json(json).unwrap(), from_toml);
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let e = TriggerSpec::from_json(json!({
            "name": "Bad Name",
            "cron": "61 * * * *",
            "timezone": "Mars/Olympus",
            "when": [
                {"signal": "free.cpu", "op": ">", "value": 2},
                {"signal": "price", "op": "<", "value": 1},
                {"signal": "http_json", "op": "~", "value": 1},
            ],
            "concurrency": "sometimes",
            "after": [{"job": "extract", "on": "maybe"}],
            "run_job": "x", "scale": {"job": "web", "count": 2},
        }))
        .unwrap_err();
        assert_eq!(
            fields(&e),
            [
                "name",
                "cron",
                "timezone",
                "when[1].signal",
                "when[2].url",
                "when[2].pointer",
                "when[2].op",
                "concurrency",
                "after[0].on",
                "after",
                "scale",
            ],
            "{e}"
        );
        assert!(e.to_string().contains("unknown signal \"price\""), "{e}");
        assert!(e.to_string().contains("unknown time zone"), "{e}");
    }

    #[test]
    fn unknown_fields_are_refused_by_path() {
        let e = TriggerSpec::from_json(
            json!({"name": "a", "every": "1m", "run_job": "b", "colour": 1}),
        )
        .unwrap_err();
        assert_eq!(e.field(), "colour");
        let e = TriggerSpec::from_json(json!({
            "name": "a", "every": "1m", "run_job": "b",
            "when": [{"signal": "free.cpu", "op": ">", "value": 1, "treshold": 2}],
        }))
        .unwrap_err();
        assert_eq!(e.field(), "when[0].treshold");
    }

    #[test]
    fn the_inline_job_is_checked_as_a_job_under_run() {
        let e = TriggerSpec::from_json(json!({
            "name": "a", "every": "1m",
            "run": {"task": {"runtime": "process"}, "count": -1},
        }))
        .unwrap_err();
        assert_eq!(fields(&e), ["run.count", "run.task.command"], "{e}");
        let e = TriggerSpec::from_json(json!({
            "name": "a", "every": "1m",
            "run": {"type": "service", "task": {"command": "x"}},
        }))
        .unwrap_err();
        assert_eq!(e.field(), "run.type");
        let e = TriggerSpec::from_json(json!({
            "name": "a", "every": "1m",
            "run": {"name": "b", "task": {"command": "x"}},
        }))
        .unwrap_err();
        assert_eq!(e.field(), "run.name");
        // type may be left out: batch.
        let s = TriggerSpec::from_json(
            json!({"name": "a", "every": "1m", "run": {"task": {"command": "x"}}}),
        )
        .unwrap();
        assert!(matches!(&s.action, Action::Run(j) if j.kind == JobType::Batch));
    }

    #[test]
    fn what_fires_it() {
        let e = TriggerSpec::from_json(json!({"name": "a", "run_job": "b"})).unwrap_err();
        assert_eq!(e.field(), "every");
        let e = TriggerSpec::from_json(json!({
            "name": "a", "run_job": "b",
            "when": [{"signal": "tasks_pending", "op": "==", "value": 0}],
        }))
        .unwrap_err();
        assert_eq!(e.field(), "cooldown");
        let s = TriggerSpec::from_json(json!({
            "name": "a", "run_job": "b", "cooldown": "10m",
            "when": [{"signal": "tasks_pending", "op": "==", "value": 0, "hold_for": "5m"}],
        }))
        .unwrap();
        assert_eq!(s.cooldown, Some(Duration::from_secs(600)));
        assert_eq!(s.when[0].hold_for, Duration::from_secs(300));
        let e = TriggerSpec::from_json(
            json!({"name": "a", "every": "1m", "cooldown": "1m", "run_job": "b"}),
        )
        .unwrap_err();
        assert_eq!(e.field(), "cooldown");
        let e = TriggerSpec::from_json(
            json!({"name": "a", "every": "1m", "cron": "* * * * *", "run_job": "b"}),
        )
        .unwrap_err();
        assert_eq!(e.field(), "cron");
        let e = TriggerSpec::from_json(
            json!({"name": "a", "every": "1m", "timezone": "UTC", "run_job": "b"}),
        )
        .unwrap_err();
        assert_eq!(e.field(), "timezone");
        let e = TriggerSpec::from_json(json!({"name": "a", "every": "500ms", "run_job": "b"}))
            .unwrap_err();
        assert_eq!(e.field(), "every");
        let s = TriggerSpec::from_json(
            json!({"name": "load", "after": [{"job": "extract"}], "run_job": "b"}),
        )
        .unwrap();
        assert_eq!(
            s.after,
            [After {
                job: "extract".into(),
                on: RunEnd::Success
            }]
        );
        let e = TriggerSpec::from_json(
            json!({"name": "load", "after": [{"job": "load"}], "run_job": "b"}),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "after[0].job: a cycle: load -> load");
        let e = TriggerSpec::from_json(
            json!({"name": "load", "every": "1m", "after": [{"job": "x"}], "run_job": "b"}),
        )
        .unwrap_err();
        assert_eq!(e.field(), "after");
    }

    #[test]
    fn the_other_actions() {
        let s = TriggerSpec::from_toml(
            "name = \"grow\"\ncron = \"0 8 * * 1-5\"\n[scale]\njob = \"web\"\ncount = 10\n",
        )
        .unwrap();
        assert_eq!(
            s.action,
            Action::Scale {
                job: "web".into(),
                count: 10
            }
        );
        let s = TriggerSpec::from_toml(
            "name = \"up\"\ncron = \"0 3 * * 0\"\n[install]\npackage = \"redis\"\ninstance = \"cache\"\nversion = \"7.0.1\"\n[install.options]\nmemory_mb = 256\n",
        )
        .unwrap();
        assert!(
            matches!(&s.action, Action::Install { options, .. } if options["memory_mb"] == 256)
        );
        assert_eq!(TriggerSpec::from_json(s.to_json()).unwrap(), s);
        let e =
            TriggerSpec::from_toml("name = \"x\"\ncron = \"0 3 * * 0\"\n[scale]\njob = \"web\"\n")
                .unwrap_err();
        assert_eq!(e.field(), "scale.count");
        let e = TriggerSpec::from_toml("name = \"x\"\ncron = \"0 3 * * 0\"\n").unwrap_err();
        assert_eq!(e.field(), "run");
    }

    #[test]
    fn ops() {
        assert!(Op::Lt.apply(0.02, 0.05));
        assert!(!Op::Lt.apply(0.05, 0.05));
        assert!(Op::Le.apply(0.05, 0.05));
        assert!(Op::Gt.apply(2.0, 1.0));
        assert!(Op::Ge.apply(1.0, 1.0));
        assert!(Op::Eq.apply(0.0, 0.0));
        assert!(Op::Ne.apply(0.0, 1.0));
    }
}
