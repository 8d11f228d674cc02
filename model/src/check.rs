//! Health checks of a task (`[[task.checks]]`): what they probe, how
//! often, and what a failing one leads to. The node that runs a task runs
//! its checks; this module only describes and validates them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ports::{Port, Protocol};
use crate::spec::{Problems, format_duration, parse_duration};

/// Checks per task, at most.
const MAX_CHECKS: usize = 16;
/// Consecutive failures, at most.
const MAX_FAILURES: i64 = 1000;
/// Default time between two probes of a check.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Default time a probe may take before it counts as failed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default consecutive failures that make a check fail.
pub const DEFAULT_FAILURES: u32 = 3;

/// What a check probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum CheckType {
    /// An HTTP `GET` of `path` on a named port: a 2xx or 3xx answer passes.
    Http,
    /// A TCP connection to a named port: connecting passes.
    Tcp,
    /// A shell command in the task's environment: exit code 0 passes.
    Command,
}

impl CheckType {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckType::Http => "http",
            CheckType::Tcp => "tcp",
            CheckType::Command => "command",
        }
    }
}

/// What happens to a task a check finds unhealthy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum OnUnhealthy {
    /// Restart it (counted in its restarts, with the check's output as the
    /// reason).
    Restart,
    /// Leave it running, shown unhealthy.
    None,
}

/// One health check, every default written out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Check {
    /// What it probes.
    #[serde(rename = "type")]
    pub kind: CheckType,
    /// The named port (`[[task.ports]]`) probed: http and tcp checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// The path asked for: http checks (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The shell command (`/bin/sh -c`): command checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Time between two probes (`10s`).
    pub interval: String,
    /// Time a probe may take before it counts as failed (`2s`).
    pub timeout: String,
    /// Time after the task starts during which failures do not count
    /// (passes do) (`0s`).
    pub grace: String,
    /// Consecutive failures that make the check fail (3).
    pub failures: u32,
    /// What a failing check does to the task.
    pub on_unhealthy: OnUnhealthy,
}

impl Check {
    /// Time between two probes.
    pub fn interval(&self) -> Duration {
        parse_duration(&self.interval).unwrap_or(DEFAULT_INTERVAL)
    }

    /// Time a probe may take.
    pub fn timeout(&self) -> Duration {
        parse_duration(&self.timeout).unwrap_or(DEFAULT_TIMEOUT)
    }

    /// Time after a start during which failures do not count.
    pub fn grace(&self) -> Duration {
        parse_duration(&self.grace).unwrap_or_default()
    }
}

/// A check as written, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCheck {
    #[serde(rename = "type")]
    kind: Option<String>,
    port: Option<String>,
    path: Option<String>,
    command: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
    grace: Option<String>,
    failures: Option<i64>,
    on_unhealthy: Option<String>,
}

/// Validates the checks of a task with `ports` (both runtimes run every
/// kind: a docker task's command check runs inside its container).
pub(crate) fn validate_checks(raw: Vec<RawCheck>, ports: &[Port], p: &mut Problems) -> Vec<Check> {
    if raw.len() > MAX_CHECKS {
        p.add("task.checks", format!("at most {MAX_CHECKS} checks"));
    }
    raw.into_iter()
        .enumerate()
        .filter_map(|(i, c)| c.validate(&format!("task.checks[{i}]"), ports, p))
        .collect()
}

impl RawCheck {
    fn validate(self, field: &str, ports: &[Port], p: &mut Problems) -> Option<Check> {
        let before = p.len();
        let kind = match self.kind.as_deref() {
            Some("http") => CheckType::Http,
            Some("tcp") => CheckType::Tcp,
            Some("command") => CheckType::Command,
            Some(other) => {
                p.add(
                    format!("{field}.type"),
                    format!("unknown check type {other:?}: use http, tcp or command"),
                );
                return None;
            }
            None => {
                p.add(format!("{field}.type"), "is required: http, tcp or command");
                return None;
            }
        };
        let kind_name = kind.as_str();
        match (kind, &self.port) {
            (CheckType::Http | CheckType::Tcp, None) => p.add(
                format!("{field}.port"),
                format!("is required for a {kind_name} check: name one of task.ports"),
            ),
            (CheckType::Command, Some(_)) => p.add(
                format!("{field}.port"),
                "only http and tcp checks probe a port",
            ),
            (_, Some(name)) => match ports.iter().find(|port| port.name == *name) {
                None => {
                    let known: Vec<&str> = ports.iter().map(|port| port.name.as_str()).collect();
                    let known = if known.is_empty() {
                        "the task declares none: add a [[task.ports]] entry".to_owned()
                    } else {
                        format!("declared: {}", known.join(", "))
                    };
                    p.add(
                        format!("{field}.port"),
                        format!("no port named {name:?} in task.ports ({known})"),
                    );
                }
                Some(port) if port.protocol == Protocol::Udp => p.add(
                    format!("{field}.port"),
                    format!("port {name:?} is udp; {kind_name} checks need a tcp port"),
                ),
                Some(_) => {}
            },
            (CheckType::Command, None) => {}
        }
        match (kind, &self.path) {
            (CheckType::Http, Some(path)) => {
                if !path.starts_with('/') {
                    p.add(
                        format!("{field}.path"),
                        format!("must start with '/' (got {path:?})"),
                    );
                }
                p.text(&format!("{field}.path"), path);
            }
            (_, Some(_)) => p.add(format!("{field}.path"), "only http checks have a path"),
            (_, None) => {}
        }
        match (kind, &self.command) {
            (CheckType::Command, None) => p.add(
                format!("{field}.command"),
                "is required for a command check (a shell command line)",
            ),
            (CheckType::Command, Some(c)) if c.trim().is_empty() => {
                p.add(format!("{field}.command"), "must not be empty");
            }
            (CheckType::Command, Some(c)) => p.text(&format!("{field}.command"), c),
            (_, Some(_)) => p.add(
                format!("{field}.command"),
                "only command checks run a command",
            ),
            (_, None) => {}
        }
        let mut duration = |name: &str, text: Option<String>, default: Duration| {
            let f = format!("{field}.{name}");
            match text {
                None => default,
                Some(t) => parse_duration(&t).unwrap_or_else(|| {
                    p.add(&f, format!("not a duration: {t:?} (use 1s, 500ms, 2m)"));
                    default
                }),
            }
        };
        let interval = duration("interval", self.interval, DEFAULT_INTERVAL);
        let timeout = duration("timeout", self.timeout, DEFAULT_TIMEOUT);
        let grace = duration("grace", self.grace, Duration::ZERO);
        if interval.is_zero() {
            p.add(format!("{field}.interval"), "must be more than 0s");
        }
        if timeout.is_zero() {
            p.add(format!("{field}.timeout"), "must be more than 0s");
        }
        let failures = match self.failures {
            None => DEFAULT_FAILURES,
            Some(n) if (1..=MAX_FAILURES).contains(&n) => u32::try_from(n).unwrap_or(1),
            Some(n) => {
                p.add(
                    format!("{field}.failures"),
                    format!("must be 1-{MAX_FAILURES} (got {n})"),
                );
                DEFAULT_FAILURES
            }
        };
        let on_unhealthy = match self.on_unhealthy.as_deref() {
            None | Some("restart") => OnUnhealthy::Restart,
            Some("none") => OnUnhealthy::None,
            Some(other) => {
                p.add(
                    format!("{field}.on_unhealthy"),
                    format!("must be restart or none (got {other:?})"),
                );
                OnUnhealthy::Restart
            }
        };
        if p.len() > before {
            return None;
        }
        Some(Check {
            kind,
            port: self.port,
            path: match kind {
                CheckType::Http => Some(self.path.unwrap_or_else(|| "/".to_owned())),
                _ => None,
            },
            command: self.command,
            interval: format_duration(interval),
            timeout: format_duration(timeout),
            grace: format_duration(grace),
            failures,
            on_unhealthy,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::{CheckType, JobSpec, OnUnhealthy, SpecError};

    fn with_checks(checks: Value) -> Result<JobSpec, SpecError> {
        JobSpec::from_json(json!({
            "name": "web",
            "task": {
                "command": "/usr/bin/python3",
                "ports": [{"name": "http"}, {"name": "dns", "protocol": "udp"}],
                "checks": checks,
            }
        }))
    }

    fn field(checks: Value) -> String {
        with_checks(checks).unwrap_err().field().to_owned()
    }

    #[test]
    fn defaults_are_written_out_and_read_back() {
        let s = with_checks(json!([
            {"type": "http", "port": "http"},
            {"type": "command", "command": "test -f ready", "on_unhealthy": "none"},
        ]))
        .unwrap();
        let http = &s.task.checks[0];
        assert_eq!(http.kind, CheckType::Http);
        assert_eq!(http.path.as_deref(), Some("/"));
        assert_eq!(
            (
                http.interval.as_str(),
                http.timeout.as_str(),
                http.grace.as_str()
            ),
            ("10s", "2s", "0s")
        );
        assert_eq!(http.failures, 3);
        assert_eq!(http.on_unhealthy, OnUnhealthy::Restart);
        assert_eq!(s.task.checks[1].on_unhealthy, OnUnhealthy::None);
        assert_eq!(JobSpec::from_json(s.to_json()).unwrap(), s);
    }

    #[test]
    fn a_task_without_checks_reads_as_before() {
        let s = JobSpec::from_json(json!({"name": "web", "task": {"command": "x"}})).unwrap();
        assert!(s.task.checks.is_empty());
        assert!(s.to_json()["task"].get("checks").is_none());
    }

    #[test]
    fn errors_name_the_check_and_its_field() {
        assert_eq!(
            field(json!([{"type": "http", "port": "web"}])),
            "task.checks[0].port"
        );
        let e = with_checks(json!([{"type": "http", "port": "web"}])).unwrap_err();
        assert!(e.to_string().contains("declared: http, dns"), "{e}");
        assert_eq!(field(json!([{"type": "http"}])), "task.checks[0].port");
        assert_eq!(
            field(json!([{"type": "tcp", "port": "dns"}])),
            "task.checks[0].port"
        );
        assert_eq!(field(json!([{"type": "grpc"}])), "task.checks[0].type");
        assert_eq!(
            field(json!([{"type": "command"}])),
            "task.checks[0].command"
        );
        assert_eq!(
            field(
                json!([{"type": "tcp", "port": "http"}, {"type": "tcp", "port": "http", "interval": "0s"}])
            ),
            "task.checks[1].interval"
        );
        assert_eq!(
            field(json!([{"type": "tcp", "port": "http", "timeout": "soon"}])),
            "task.checks[0].timeout"
        );
        assert_eq!(
            field(json!([{"type": "tcp", "port": "http", "failures": 0}])),
            "task.checks[0].failures"
        );
        assert_eq!(
            field(json!([{"type": "tcp", "port": "http", "on_unhealthy": "reboot"}])),
            "task.checks[0].on_unhealthy"
        );
        assert_eq!(
            field(json!([{"type": "tcp", "port": "http", "path": "/"}])),
            "task.checks[0].path"
        );
        assert_eq!(
            field(json!([{"type": "tcp", "port": "http", "method": "GET"}])),
            "task.checks[0].method"
        );
    }

    #[test]
    fn containers_have_command_checks_too() {
        let spec = JobSpec::from_json(json!({
            "name": "web",
            "task": {"image": "busybox", "checks": [{"type": "command", "command": "true"}]}
        }))
        .unwrap();
        assert_eq!(spec.task.checks[0].kind, CheckType::Command);
    }
}
