//! A task's health, as its runner derives it from the verdicts of its
//! checks (`[[task.checks]]`), which the node that runs the task probes
//! and hands in ([`Verdict`]).
//!
//! The rule:
//!
//! - a running task with no checks is [`Health::Healthy`]; a task that
//!   does not run is [`Health::Unknown`];
//! - each check starts unknown at every start of the task; a pass makes it
//!   pass (and clears its failures); a failure within the check's `grace`
//!   after the start does not count; past it, `failures` consecutive ones
//!   make the check fail;
//! - the task is unhealthy when one check fails, healthy when every check
//!   passes, unknown otherwise.
//!
//! Contract: pure bookkeeping, no clock; what a failing check does to the
//! task (a restart) is the runner's decision, made from
//! [`Checks::restart_wanted`].

use serde::{Deserialize, Serialize};
use shoal_gossip::Instant;
use shoal_model::{Check, OnUnhealthy};

/// Longest check output kept and carried in lease renewals, in bytes.
pub const CHECK_OUTPUT_MAX: usize = 256;

/// A task's health.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Not running, or a check has no verdict yet.
    #[default]
    Unknown,
    /// Running, and every check passes (or it has none).
    Healthy,
    /// A check fails.
    Unhealthy,
}

impl Health {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }

    pub(super) fn index(self) -> u8 {
        match self {
            Health::Unknown => 0,
            Health::Healthy => 1,
            Health::Unhealthy => 2,
        }
    }

    pub(super) fn from_index(i: u8) -> Option<Health> {
        Some(match i {
            0 => Health::Unknown,
            1 => Health::Healthy,
            2 => Health::Unhealthy,
            _ => return None,
        })
    }
}

/// One probe's outcome, as the node that runs the task saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The task's job version the probe was made for.
    pub job_version: u64,
    /// The start of the task it was made for (the runtime command's
    /// `attempt`): a verdict about an earlier start is ignored.
    pub attempt: u32,
    /// Which check (index in `task.checks`).
    pub check: usize,
    /// Passed.
    pub passed: bool,
    /// What it said (`HTTP 200`, the command's output), cut to
    /// [`CHECK_OUTPUT_MAX`] bytes.
    pub output: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Status {
    #[default]
    Unknown,
    Pass,
    Fail,
}

#[derive(Clone, Debug, Default)]
struct CheckState {
    status: Status,
    failures: u32,
}

/// The checks of one start of a task.
#[derive(Clone, Debug, Default)]
pub(super) struct Checks {
    states: Vec<CheckState>,
    /// When this start began running (grace counts from here).
    running_since: Option<Instant>,
    /// The last output heard from any check.
    output: Option<String>,
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

impl Checks {
    /// A new start of a task with `n` checks: nothing known; the output of
    /// the previous start is kept until a check says something.
    pub(super) fn restart(&mut self, n: usize) {
        self.states = vec![CheckState::default(); n];
        self.running_since = None;
    }

    /// The task runs, since `now`.
    pub(super) fn running(&mut self, now: Instant) {
        self.running_since = Some(now);
    }

    /// The last output heard.
    pub(super) fn output(&self) -> Option<&str> {
        self.output.as_deref()
    }

    /// Takes `verdict` about `checks` at `now`; whether anything shown
    /// changed (a check's status, or the output).
    pub(super) fn record(&mut self, checks: &[Check], now: Instant, verdict: Verdict) -> bool {
        let (Some(check), Some(since)) = (checks.get(verdict.check), self.running_since) else {
            return false;
        };
        if self.states.len() != checks.len() {
            self.states = vec![CheckState::default(); checks.len()];
        }
        let state = &mut self.states[verdict.check];
        let before = state.status;
        if verdict.passed {
            state.status = Status::Pass;
            state.failures = 0;
        } else if now.saturating_duration_since(since) >= check.grace() {
            state.failures = state.failures.saturating_add(1);
            if state.failures >= check.failures {
                state.status = Status::Fail;
            }
        } else {
            // Inside the grace period: the failure does not count, and
            // its output says nothing new about the health.
            return false;
        }
        let output = truncate(verdict.output, CHECK_OUTPUT_MAX);
        let changed = state.status != before || self.output.as_deref() != Some(&output);
        self.output = Some(output);
        changed
    }

    /// The health of a task with these checks, running or not.
    pub(super) fn health(&self, checks: &[Check], running: bool) -> Health {
        if !running {
            return Health::Unknown;
        }
        if checks.is_empty() {
            return Health::Healthy;
        }
        if self.states.iter().any(|s| s.status == Status::Fail) {
            Health::Unhealthy
        } else if self.states.len() == checks.len()
            && self.states.iter().all(|s| s.status == Status::Pass)
        {
            Health::Healthy
        } else {
            Health::Unknown
        }
    }

    /// Whether a failing check asks for a restart.
    pub(super) fn restart_wanted(&self, checks: &[Check]) -> bool {
        self.states
            .iter()
            .zip(checks)
            .any(|(s, c)| s.status == Status::Fail && c.on_unhealthy == OnUnhealthy::Restart)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use shoal_model::JobSpec;

    use super::*;

    fn checks(grace: &str, failures: u32, on_unhealthy: &str) -> Vec<Check> {
        let spec = JobSpec::from_json(json!({"name": "web", "task": {
            "command": "x",
            "checks": [{"type": "command", "command": "true", "interval": "1s",
                        "grace": grace, "failures": failures, "on_unhealthy": on_unhealthy}]
        }}))
        .unwrap();
        spec.task.checks
    }

    fn verdict(passed: bool) -> Verdict {
        Verdict {
            job_version: 1,
            attempt: 0,
            check: 0,
            passed,
            output: if passed { "ok" } else { "no" }.to_owned(),
        }
    }

    fn at(s: u64) -> Instant {
        Instant::ZERO + Duration::from_secs(s)
    }

    #[test]
    fn failures_inside_grace_do_not_count_passes_do() {
        let c = checks("10s", 1, "restart");
        let mut h = Checks::default();
        h.restart(1);
        h.running(at(0));
        assert_eq!(h.health(&c, true), Health::Unknown);
        assert!(!h.record(&c, at(5), verdict(false)));
        assert_eq!(h.health(&c, true), Health::Unknown);
        assert!(h.record(&c, at(6), verdict(true)));
        assert_eq!(h.health(&c, true), Health::Healthy);
        assert!(h.record(&c, at(10), verdict(false)));
        assert_eq!(h.health(&c, true), Health::Unhealthy);
        assert!(h.restart_wanted(&c));
    }

    #[test]
    fn a_check_fails_after_its_consecutive_failures() {
        let c = checks("0s", 3, "none");
        let mut h = Checks::default();
        h.restart(1);
        h.running(at(0));
        h.record(&c, at(1), verdict(true));
        h.record(&c, at(2), verdict(false));
        h.record(&c, at(3), verdict(false));
        assert_eq!(h.health(&c, true), Health::Healthy, "two of three");
        h.record(&c, at(4), verdict(true));
        h.record(&c, at(5), verdict(false));
        h.record(&c, at(6), verdict(false));
        assert_eq!(h.health(&c, true), Health::Healthy, "a pass started over");
        h.record(&c, at(7), verdict(false));
        assert_eq!(h.health(&c, true), Health::Unhealthy);
        assert!(!h.restart_wanted(&c), "on_unhealthy = none");
        assert_eq!(h.output(), Some("no"));
    }

    #[test]
    fn unknown_again_after_a_restart_until_a_pass() {
        let c = checks("0s", 1, "restart");
        let mut h = Checks::default();
        h.restart(1);
        h.running(at(0));
        h.record(&c, at(1), verdict(false));
        assert_eq!(h.health(&c, true), Health::Unhealthy);
        h.restart(1);
        assert_eq!(h.health(&c, false), Health::Unknown);
        // No verdict counts before the new start runs.
        assert!(!h.record(&c, at(2), verdict(true)));
        h.running(at(3));
        assert_eq!(h.health(&c, true), Health::Unknown);
        h.record(&c, at(4), verdict(true));
        assert_eq!(h.health(&c, true), Health::Healthy);
        assert_eq!(h.health(&[], true), Health::Healthy, "no checks");
    }

    #[test]
    fn output_is_cut_on_a_character_boundary() {
        let s = truncate("é".repeat(200), CHECK_OUTPUT_MAX);
        assert!(s.len() <= CHECK_OUTPUT_MAX && s.chars().all(|c| c == 'é'));
    }
}
