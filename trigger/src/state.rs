//! The firing rules: one pure state machine per trigger.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use shoal_model::Constraint;

use crate::schedule::{Schedule, Slot, after_run_id, manual_run_id, slot_id};
use crate::signal::{DEFAULT_SAMPLE_EVERY, Signal, SignalValue, age, placement_constraint};
use crate::spec::{Concurrency, Match, OnMissing, TriggerSpec};

/// Outcomes that are not runs (skipped, missed) kept in the history.
pub const MAX_OTHER_OUTCOMES: usize = 20;
/// Runs fired and not yet finished kept in the history.
pub const MAX_ACTIVE_OUTCOMES: usize = 100;
/// Slots walked one by one in one call before the rest are counted at once.
pub const MAX_CATCH_UP: u64 = 1000;
/// Parent runs remembered, so that one parent run starts a child once.
pub const MAX_PARENT_RUNS: usize = 64;

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunResult {
    /// Every task succeeded.
    Success,
    /// It failed.
    Failed,
}

/// Why a due slot did not fire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Its `starting_deadline` passed while its conditions did not hold.
    Deadline,
    /// Its deadline passed while a run was active (`concurrency = "forbid"`).
    Forbid,
    /// The next slot became due while it waited (no deadline, or a longer
    /// one than the period).
    Superseded,
    /// The trigger was paused (`enabled = false`).
    Paused,
    /// A parent's run ended (`after`) while the conditions did not hold.
    Conditions,
}

/// Why a slot was missed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissReason {
    /// Nobody evaluated it between its time and its deadline: it had no
    /// owner, or the owner was down or too late.
    NoOwner,
}

/// What became of a slot (or a manual or `after` run).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum OutcomeKind {
    /// A run was started.
    Fired {
        /// Its id.
        run_id: String,
        /// How long after the slot's time, ms.
        late_ms: u64,
        /// Runs stopped for it (`concurrency = "replace"`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        stopped: Vec<String>,
        /// How it ended; `None` while it runs.
        #[serde(default)]
        result: Option<RunResult>,
    },
    /// Due, and not fired.
    Skipped {
        /// Why.
        reason: SkipReason,
    },
    /// Nobody decided it in time.
    Missed {
        /// Why.
        reason: MissReason,
    },
}

/// One entry of a trigger's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The slot id (or the run id of a manual or `after` run).
    pub slot: String,
    /// When the slot was due.
    pub slot_at: DateTime<Utc>,
    /// When this was decided.
    pub decided_at: DateTime<Utc>,
    /// How many slots this entry stands for: more than 1 when consecutive
    /// slots were missed or paused together (then `last_slot` is the last).
    pub count: u64,
    /// The last slot of a run of several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_slot: Option<String>,
    /// What happened.
    #[serde(flatten)]
    pub kind: OutcomeKind,
    /// Each condition, as it stood when this was decided.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<ConditionReport>,
}

/// A condition as last evaluated: what `explain` shows and skipped slots
/// record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConditionReport {
    /// The signal as written.
    pub signal: String,
    /// The comparison (`< 0.05`).
    pub test: String,
    /// The value, if any (also when stale).
    pub value: Option<f64>,
    /// Where it came from.
    pub source: String,
    /// When it was read.
    pub read_at: DateTime<Utc>,
    /// How old it was, ms.
    pub age_ms: u64,
    /// Older than `max_age`.
    pub stale: bool,
    /// Why there is no value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `Some(true)`: holds (for `hold_for` too); `Some(false)`: does not
    /// (or not long enough yet); `None`: undecided (missing, `on_missing =
    /// "wait"`).
    pub result: Option<bool>,
    /// Since when it has been true, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub true_since: Option<DateTime<Utc>>,
    /// How long it has been true, ms.
    pub held_ms: u64,
    /// How long it must be, ms.
    pub hold_for_ms: u64,
}

/// What the caller must do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Start a run (after stopping `stop`).
    Fire(Fire),
    /// Record an outcome that is not a run (skipped, missed): it is in the
    /// state's history too; the caller publishes it (events, the ledger).
    Record(Outcome),
}

/// A run to start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fire {
    /// Its id: the slot id, `@manual-…`, or `<trigger>@<parent run>`. The
    /// caller must act on a run id at most once.
    pub run_id: String,
    /// When it was due.
    pub due_at: DateTime<Utc>,
    /// Active runs to stop first (`concurrency = "replace"`).
    pub stop: Vec<String>,
    /// Where its tasks may run: one per label condition that held by its
    /// value ([`placement_constraint`]).
    pub constraints: Vec<Constraint>,
    /// Each condition when it fired.
    pub values: Vec<ConditionReport>,
}

/// Why the due slot waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Waiting {
    /// For its conditions.
    Conditions,
    /// For the active run to end (`forbid`).
    Forbid,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Track {
    true_since: Option<DateTime<Utc>>,
    last: Option<ConditionReport>,
}

/// The state of one trigger: serializable, so it can be stored and handed
/// to the trigger's next owner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerState {
    /// The first slot not yet handled.
    next: Option<Slot>,
    /// Whether `next` was evaluated between its time and its deadline.
    next_seen: bool,
    waiting: Option<Waiting>,
    /// The last slot handled (fired, skipped or missed).
    last_handled: Option<String>,
    tracks: Vec<Track>,
    last_fired_at: Option<DateTime<Utc>>,
    /// Condition-only triggers: the conditions did not hold since the last
    /// run (or there was none), so their holding again fires.
    armed: bool,
    evaluated_at: Option<DateTime<Utc>>,
    history: VecDeque<Outcome>,
    parent_runs: VecDeque<String>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

impl TriggerState {
    /// A new trigger created at `created`: its first slot is the first after it.
    pub fn new(spec: &TriggerSpec, created: DateTime<Utc>) -> TriggerState {
        TriggerState {
            next: spec
                .schedule
                .as_ref()
                .and_then(|s| s.next_slot(&spec.name, created)),
            next_seen: false,
            waiting: None,
            last_handled: None,
            tracks: vec![Track::default(); spec.when.len()],
            last_fired_at: None,
            armed: true,
            evaluated_at: None,
            history: VecDeque::new(),
            parent_runs: VecDeque::new(),
        }
    }

    /// A state for a new owner that knows only the replicated record: the
    /// last slot handled (fired, skipped or missed) by anyone, and when
    /// the trigger was created. Slots after `last_handled` are handled by
    /// the next [`evaluate`](Self::evaluate): one still within its
    /// deadline fires late, older ones are recorded missed. A
    /// `last_handled` that is not a slot of this schedule (the schedule
    /// changed) counts from `created`.
    pub fn resume(
        spec: &TriggerSpec,
        created: DateTime<Utc>,
        last_handled: Option<&str>,
    ) -> TriggerState {
        let mut state = TriggerState::new(spec, created);
        if let (Some(schedule), Some(id)) = (&spec.schedule, last_handled)
            && let Some(slot) = schedule.slot_from_id(&spec.name, id)
        {
            state.next = schedule.slot_after_local(&spec.name, slot.local);
            state.last_handled = Some(slot.id);
        }
        state
    }

    /// The last slot handled (fired, skipped or missed): what a new owner
    /// passes to [`resume`](Self::resume).
    pub fn last_handled(&self) -> Option<&str> {
        self.last_handled.as_deref()
    }

    /// The next slot not yet handled.
    pub fn next_slot(&self) -> Option<&Slot> {
        self.next.as_ref()
    }

    /// Outcomes, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &Outcome> {
        self.history.iter()
    }

    /// Evaluates the trigger at `now`. `signals` gives the current value
    /// of each signal; `active_runs` are this trigger's runs still running.
    /// Returns what to do, in order; call again at
    /// [`next_wake`](Self::next_wake) or when a signal or a run changes.
    #[must_use]
    pub fn evaluate(
        &mut self,
        now: DateTime<Utc>,
        spec: &TriggerSpec,
        signals: &impl Fn(&Signal) -> SignalValue,
        active_runs: &[String],
    ) -> Vec<Decision> {
        self.evaluated_at = Some(now);
        let (holds, values) = self.sample(now, spec, signals);
        match &spec.schedule {
            Some(schedule) => self.scheduled(now, spec, schedule, holds, values, active_runs),
            None if spec.after.is_empty() => {
                self.conditional(now, spec, holds, values, active_runs)
            }
            None => Vec::new(),
        }
    }

    fn sample(
        &mut self,
        now: DateTime<Utc>,
        spec: &TriggerSpec,
        signals: &impl Fn(&Signal) -> SignalValue,
    ) -> (Option<bool>, Vec<ConditionReport>) {
        if self.tracks.len() != spec.when.len() {
            self.tracks = vec![Track::default(); spec.when.len()];
        }
        let mut reports = Vec::with_capacity(spec.when.len());
        for (c, track) in spec.when.iter().zip(&mut self.tracks) {
            let v = signals(&c.signal);
            let fresh = v.fresh(now, c.max_age);
            let raw = match fresh {
                Some(x) => Some(c.op.apply(x, c.value)),
                None => match c.on_missing {
                    OnMissing::Wait => None,
                    OnMissing::False => Some(false),
                    OnMissing::True => Some(true),
                },
            };
            match raw {
                Some(true) => {
                    track.true_since.get_or_insert(now);
                }
                Some(false) => track.true_since = None,
                None => {}
            }
            let held = match (raw, track.true_since) {
                (Some(true), Some(since)) => age(now, since),
                _ => Duration::ZERO,
            };
            let result = match raw {
                Some(true) => Some(held >= c.hold_for),
                other => other,
            };
            let report = ConditionReport {
                signal: c.signal.name(),
                test: format!("{} {}", c.op.as_str(), crate::spec::show_value(c.value)),
                value: v.value,
                source: if v.source.is_empty() {
                    c.signal.describe()
                } else {
                    v.source.clone()
                },
                read_at: v.at,
                age_ms: ms(age(now, v.at)),
                stale: v.value.is_some() && fresh.is_none(),
                error: v.error.clone(),
                result,
                true_since: if raw == Some(true) {
                    track.true_since
                } else {
                    None
                },
                held_ms: ms(held),
                hold_for_ms: ms(c.hold_for),
            };
            track.last = Some(report.clone());
            reports.push(report);
        }
        let holds = if reports.iter().any(|r| r.result.is_none()) {
            None
        } else {
            Some(match spec.match_mode {
                _ if reports.is_empty() => true,
                Match::All => reports.iter().all(|r| r.result == Some(true)),
                Match::Any => reports.iter().any(|r| r.result == Some(true)),
            })
        };
        (holds, reports)
    }

    fn constraints(spec: &TriggerSpec, values: &[ConditionReport]) -> Vec<Constraint> {
        spec.when
            .iter()
            .zip(values)
            .filter(|(_, r)| r.result == Some(true) && !r.stale && r.value.is_some())
            .filter_map(|(c, _)| placement_constraint(c))
            .collect()
    }

    fn record(&mut self, spec: &TriggerSpec, outcome: Outcome) {
        self.history.push_back(outcome);
        self.prune(spec);
    }

    /// Keeps `history.success` successful runs, `history.failed` failed
    /// ones, [`MAX_ACTIVE_OUTCOMES`] unfinished and [`MAX_OTHER_OUTCOMES`]
    /// others; the oldest go first.
    fn prune(&mut self, spec: &TriggerSpec) {
        let (mut ok, mut failed, mut running, mut other) = (0usize, 0usize, 0usize, 0usize);
        let limits = spec.history;
        let mut keep = vec![true; self.history.len()];
        for (i, o) in self.history.iter().enumerate().rev() {
            let (n, max) = match &o.kind {
                OutcomeKind::Fired {
                    result: Some(RunResult::Success),
                    ..
                } => (&mut ok, limits.success as usize),
                OutcomeKind::Fired {
                    result: Some(RunResult::Failed),
                    ..
                } => (&mut failed, limits.failed as usize),
                OutcomeKind::Fired { result: None, .. } => (&mut running, MAX_ACTIVE_OUTCOMES),
                _ => (&mut other, MAX_OTHER_OUTCOMES),
            };
            *n += 1;
            keep[i] = *n <= max;
        }
        let mut it = keep.into_iter();
        self.history.retain(|_| it.next().unwrap_or(true));
    }

    fn fire(
        &mut self,
        now: DateTime<Utc>,
        spec: &TriggerSpec,
        run_id: String,
        due_at: DateTime<Utc>,
        stop: Vec<String>,
        values: Vec<ConditionReport>,
    ) -> Decision {
        self.last_fired_at = Some(now);
        let fire = Fire {
            constraints: Self::constraints(spec, &values),
            run_id: run_id.clone(),
            due_at,
            stop: stop.clone(),
            values: values.clone(),
        };
        self.record(
            spec,
            Outcome {
                slot: run_id.clone(),
                slot_at: due_at,
                decided_at: now,
                count: 1,
                last_slot: None,
                kind: OutcomeKind::Fired {
                    run_id,
                    late_ms: ms(age(now, due_at)),
                    stopped: stop,
                    result: None,
                },
                values,
            },
        );
        Decision::Fire(fire)
    }

    fn advance(&mut self, slot: &Slot, following: Option<Slot>) {
        self.last_handled = Some(slot.id.clone());
        self.next = following;
        self.next_seen = false;
        self.waiting = None;
    }

    /// Records `slot` (and the slots after it, up to a cap) as missed or
    /// paused in one outcome, or adds it to the previous outcome of the
    /// same call when that is of the same kind.
    fn record_many(
        &mut self,
        out: &mut Vec<Decision>,
        spec: &TriggerSpec,
        now: DateTime<Utc>,
        slot: &Slot,
        kind: OutcomeKind,
        values: Vec<ConditionReport>,
    ) {
        if let Some(Decision::Record(prev)) = out.last_mut()
            && prev.kind == kind
            && prev.count > 0
        {
            prev.count += 1;
            prev.last_slot = Some(slot.id.clone());
            if let Some(h) = self.history.back_mut() {
                *h = prev.clone();
            }
            return;
        }
        let outcome = Outcome {
            slot: slot.id.clone(),
            slot_at: slot.at,
            decided_at: now,
            count: 1,
            last_slot: None,
            kind,
            values,
        };
        self.record(spec, outcome.clone());
        out.push(Decision::Record(outcome));
    }

    fn scheduled(
        &mut self,
        now: DateTime<Utc>,
        spec: &TriggerSpec,
        schedule: &Schedule,
        holds: Option<bool>,
        values: Vec<ConditionReport>,
        active_runs: &[String],
    ) -> Vec<Decision> {
        let mut out = Vec::new();
        let mut walked = 0u64;
        while let Some(slot) = self.next.clone() {
            if slot.at > now {
                break;
            }
            walked += 1;
            if walked > MAX_CATCH_UP
                && let Some(latest) = latest_due(schedule, &spec.name, now)
                && latest.local > slot.local
            {
                // A long outage or pause: the slots up to the latest due
                // one are counted at once rather than walked.
                let n = count_between(schedule, &slot, &latest);
                let kind = if spec.enabled {
                    OutcomeKind::Missed {
                        reason: MissReason::NoOwner,
                    }
                } else {
                    OutcomeKind::Skipped {
                        reason: SkipReason::Paused,
                    }
                };
                self.record_many(&mut out, spec, now, &slot, kind, Vec::new());
                let last = schedule.slot_before_local(&spec.name, latest.local);
                if let Some(Decision::Record(prev)) = out.last_mut() {
                    prev.count += n.saturating_sub(1);
                    prev.last_slot = last.as_ref().map(|s| s.id.clone());
                    if let Some(h) = self.history.back_mut() {
                        *h = prev.clone();
                    }
                }
                self.last_handled = last.map(|s| s.id).or(Some(slot.id.clone()));
                self.next = Some(latest);
                self.next_seen = false;
                self.waiting = None;
                walked = 0;
                continue;
            }
            let following = schedule.slot_after_local(&spec.name, slot.local);
            if !spec.enabled {
                let kind = OutcomeKind::Skipped {
                    reason: SkipReason::Paused,
                };
                self.record_many(&mut out, spec, now, &slot, kind, Vec::new());
                self.advance(&slot, following);
                continue;
            }
            let superseded = following.as_ref().is_some_and(|f| f.at <= now);
            let expired = spec
                .starting_deadline
                .is_some_and(|d| now > slot.at + delta(d));
            if superseded || expired {
                let kind = if !self.next_seen {
                    OutcomeKind::Missed {
                        reason: MissReason::NoOwner,
                    }
                } else {
                    let reason = match (expired, self.waiting) {
                        (true, Some(Waiting::Forbid)) => SkipReason::Forbid,
                        (true, _) => SkipReason::Deadline,
                        (false, _) => SkipReason::Superseded,
                    };
                    OutcomeKind::Skipped { reason }
                };
                let recorded = if self.next_seen {
                    self.last_values()
                } else {
                    Vec::new()
                };
                self.record_many(&mut out, spec, now, &slot, kind, recorded);
                self.advance(&slot, following);
                continue;
            }
            // Due and live.
            self.next_seen = true;
            if holds != Some(true) {
                self.waiting = Some(Waiting::Conditions);
                break;
            }
            let active: Vec<String> = active_runs
                .iter()
                .filter(|r| **r != slot.id)
                .cloned()
                .collect();
            let stop = match spec.concurrency {
                Concurrency::Forbid if !active.is_empty() => {
                    self.waiting = Some(Waiting::Forbid);
                    break;
                }
                Concurrency::Replace => active,
                _ => Vec::new(),
            };
            let decision = self.fire(now, spec, slot.id.clone(), slot.at, stop, values.clone());
            out.push(decision);
            self.advance(&slot, following);
        }
        out
    }

    fn last_values(&self) -> Vec<ConditionReport> {
        self.tracks.iter().filter_map(|t| t.last.clone()).collect()
    }

    fn conditional(
        &mut self,
        now: DateTime<Utc>,
        spec: &TriggerSpec,
        holds: Option<bool>,
        values: Vec<ConditionReport>,
        active_runs: &[String],
    ) -> Vec<Decision> {
        match holds {
            Some(false) => {
                self.armed = true;
                self.waiting = None;
                return Vec::new();
            }
            None => return Vec::new(),
            Some(true) => {}
        }
        if !spec.enabled || !self.armed {
            return Vec::new();
        }
        let cooldown = spec.cooldown.unwrap_or(Duration::from_secs(3600));
        if self
            .last_fired_at
            .is_some_and(|t| now < t + delta(cooldown))
        {
            self.waiting = Some(Waiting::Conditions);
            return Vec::new();
        }
        let stop = match spec.concurrency {
            Concurrency::Forbid if !active_runs.is_empty() => {
                self.waiting = Some(Waiting::Forbid);
                return Vec::new();
            }
            Concurrency::Replace => active_runs.to_vec(),
            _ => Vec::new(),
        };
        self.armed = false;
        self.waiting = None;
        let window = cooldown_window(now, cooldown);
        let run_id = slot_id(&spec.name, window);
        vec![self.fire(now, spec, run_id, now, stop, values)]
    }

    /// A manual run (`shoal trigger run`): fires now whatever the
    /// conditions, the schedule or `enabled`; `concurrency = "replace"`
    /// stops the active runs, `forbid` does not block it (the operator
    /// asked). The run id is `<trigger>@manual-<id>`.
    #[must_use]
    pub fn run_now(
        &mut self,
        now: DateTime<Utc>,
        spec: &TriggerSpec,
        id: &str,
        active_runs: &[String],
    ) -> Fire {
        let stop = match spec.concurrency {
            Concurrency::Replace => active_runs.to_vec(),
            _ => Vec::new(),
        };
        let values = self.last_values();
        match self.fire(now, spec, manual_run_id(&spec.name, id), now, stop, values) {
            Decision::Fire(f) => f,
            Decision::Record(_) => unreachable!("fire returns a Fire"),
        }
    }

    /// A run of `parent` (a job or trigger) ended. If this trigger runs
    /// `after` it that way, its run `<trigger>@<parent_run>` fires, once
    /// per parent run, when the conditions hold (else it is recorded
    /// skipped with the values).
    #[must_use]
    #[allow(clippy::too_many_arguments)]
    pub fn parent_finished(
        &mut self,
        now: DateTime<Utc>,
        spec: &TriggerSpec,
        parent: &str,
        parent_run: &str,
        succeeded: bool,
        signals: &impl Fn(&Signal) -> SignalValue,
        active_runs: &[String],
    ) -> Option<Decision> {
        if !spec
            .after
            .iter()
            .any(|a| a.job == parent && a.on.matches(succeeded))
        {
            return None;
        }
        if self.parent_runs.iter().any(|r| r == parent_run) {
            return None;
        }
        self.parent_runs.push_back(parent_run.to_owned());
        while self.parent_runs.len() > MAX_PARENT_RUNS {
            self.parent_runs.pop_front();
        }
        self.evaluated_at = Some(now);
        let run_id = after_run_id(&spec.name, parent_run);
        let (holds, values) = self.sample(now, spec, signals);
        let skip = if !spec.enabled {
            Some(SkipReason::Paused)
        } else if holds != Some(true) {
            Some(SkipReason::Conditions)
        } else if spec.concurrency == Concurrency::Forbid && !active_runs.is_empty() {
            Some(SkipReason::Forbid)
        } else {
            None
        };
        if let Some(reason) = skip {
            let outcome = Outcome {
                slot: run_id,
                slot_at: now,
                decided_at: now,
                count: 1,
                last_slot: None,
                kind: OutcomeKind::Skipped { reason },
                values,
            };
            self.record(spec, outcome.clone());
            return Some(Decision::Record(outcome));
        }
        let stop = match spec.concurrency {
            Concurrency::Replace => active_runs.to_vec(),
            _ => Vec::new(),
        };
        Some(self.fire(now, spec, run_id, now, stop, values))
    }

    /// A run of this trigger ended: its history entry gets the result
    /// (and `history.success` / `history.failed` bound what is kept).
    pub fn run_finished(&mut self, spec: &TriggerSpec, run_id: &str, result: RunResult) {
        for o in self.history.iter_mut().rev() {
            if let OutcomeKind::Fired {
                run_id: r,
                result: res,
                ..
            } = &mut o.kind
                && r == run_id
            {
                *res = Some(result);
                break;
            }
        }
        self.prune(spec);
    }

    /// The instant the evaluator must be called again (absent new signal
    /// values or run changes): the next slot (earlier by the longest
    /// `hold_for`, so that conditions are watched long enough before it),
    /// and while a slot waits: the next sample of its signals, its
    /// deadline, the next slot, a `hold_for` coming due, a value going
    /// stale. `None`: nothing to wait for (an `after` trigger).
    pub fn next_wake(&self, now: DateTime<Utc>, spec: &TriggerSpec) -> Option<DateTime<Utc>> {
        let sample = spec
            .when
            .iter()
            .map(|c| c.signal.sample_every())
            .min()
            .unwrap_or(DEFAULT_SAMPLE_EVERY);
        let sample_at = now + delta(sample);
        let mut wakes: Vec<DateTime<Utc>> = Vec::new();
        match &spec.schedule {
            Some(schedule) => {
                let slot = self.next.as_ref()?;
                if slot.at > now {
                    let hold = spec
                        .when
                        .iter()
                        .map(|c| c.hold_for)
                        .max()
                        .unwrap_or_default();
                    let watch_from = slot.at - delta(hold);
                    if !spec.enabled || hold.is_zero() {
                        return Some(slot.at);
                    }
                    return Some(if watch_from > now {
                        watch_from
                    } else {
                        sample_at.min(slot.at)
                    });
                }
                if let Some(d) = spec.starting_deadline {
                    wakes.push(slot.at + delta(d) + TimeDelta::milliseconds(1));
                }
                if let Some(f) = schedule.slot_after_local(&spec.name, slot.local) {
                    wakes.push(f.at);
                }
                wakes.push(sample_at);
            }
            None if spec.after.is_empty() => {
                wakes.push(sample_at);
                if let (Some(t), Some(c)) = (self.last_fired_at, spec.cooldown) {
                    wakes.push(t + delta(c));
                }
            }
            None => return None,
        }
        for (c, t) in spec.when.iter().zip(&self.tracks) {
            if let Some(since) = t.true_since {
                wakes.push(since + delta(c.hold_for));
            }
            if let Some(r) = &t.last
                && r.value.is_some()
            {
                wakes.push(r.read_at + delta(c.max_age) + TimeDelta::milliseconds(1));
            }
        }
        wakes.into_iter().filter(|w| *w > now).min()
    }

    /// Why it did or did not fire: a serializable report for `shoal
    /// trigger explain`.
    pub fn explain(&self, now: DateTime<Utc>, spec: &TriggerSpec) -> Explain {
        let tz = spec
            .schedule
            .as_ref()
            .map_or(chrono_tz::Tz::UTC, Schedule::timezone);
        let slot_view = |s: &Slot| SlotView {
            id: s.id.clone(),
            local: format!(
                "{} {}",
                s.at.with_timezone(&tz).format("%Y-%m-%dT%H:%M:%S%:z"),
                tz.name()
            ),
            utc: s.at,
        };
        let next = match (&spec.schedule, &self.next) {
            (Some(schedule), Some(s)) if s.at <= now => {
                schedule.next_slot(&spec.name, now).map(|n| slot_view(&n))
            }
            (_, Some(s)) => Some(slot_view(s)),
            _ => None,
        };
        let pending = self.next.as_ref().filter(|s| s.at <= now).map(|s| Pending {
            slot: slot_view(s),
            deadline: spec.starting_deadline.map(|d| s.at + delta(d)),
            waiting: self.waiting,
        });
        Explain {
            trigger: spec.name.clone(),
            enabled: spec.enabled,
            now,
            evaluated_at: self.evaluated_at,
            timezone: tz.name().to_owned(),
            next_slot: next,
            pending,
            last_handled: self.last_handled.clone(),
            match_mode: spec.match_mode,
            conditions: self.last_values(),
            recent: self.history.iter().rev().cloned().collect(),
        }
    }
}

/// The start of the cooldown window `now` falls in: multiples of the
/// cooldown since the unix epoch, so that two owners name a
/// condition-fired run alike.
fn cooldown_window(now: DateTime<Utc>, cooldown: Duration) -> NaiveDateTime {
    let c = i64::try_from(cooldown.as_secs()).unwrap_or(i64::MAX).max(1);
    let t = now.timestamp().div_euclid(c) * c;
    DateTime::<Utc>::from_timestamp(t, 0)
        .unwrap_or(now)
        .naive_utc()
}

/// The latest slot due at `now` (at or before it).
fn latest_due(schedule: &Schedule, trigger: &str, now: DateTime<Utc>) -> Option<Slot> {
    let next = schedule.next_slot(trigger, now)?;
    schedule.slot_before_local(trigger, next.local)
}

/// Slots in `[from, to)`, in wall-clock order (exact for `every`, walked for cron).
fn count_between(schedule: &Schedule, from: &Slot, to: &Slot) -> u64 {
    match schedule {
        Schedule::Every { period } => {
            let p = period.as_secs().max(1);
            let span = (to.local - from.local).num_seconds().max(0).unsigned_abs();
            span / p
        }
        Schedule::Cron { .. } => {
            let mut n = 0;
            let mut s = from.clone();
            while s.local < to.local {
                n += 1;
                match schedule.slot_after_local("", s.local) {
                    Some(x) => s = x,
                    None => break,
                }
            }
            n
        }
    }
}

/// A slot in both zones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlotView {
    /// Its id.
    pub id: String,
    /// When, in the trigger's zone (`2026-12-01T03:00:00+01:00 Europe/Berlin`).
    pub local: String,
    /// When, in UTC.
    pub utc: DateTime<Utc>,
}

/// The slot that is due and has not fired.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// The slot.
    pub slot: SlotView,
    /// When it will be skipped if it has not fired.
    pub deadline: Option<DateTime<Utc>>,
    /// What it waits for.
    pub waiting: Option<Waiting>,
}

/// What `shoal trigger explain` shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Explain {
    /// The trigger.
    pub trigger: String,
    /// Not paused.
    pub enabled: bool,
    /// When this was made.
    pub now: DateTime<Utc>,
    /// When it was last evaluated (by this state's owner).
    pub evaluated_at: Option<DateTime<Utc>>,
    /// Its zone.
    pub timezone: String,
    /// The next slot still to come.
    pub next_slot: Option<SlotView>,
    /// A due slot waiting to fire.
    pub pending: Option<Pending>,
    /// The last slot handled.
    pub last_handled: Option<String>,
    /// How conditions combine.
    pub match_mode: Match,
    /// Each condition as last evaluated.
    pub conditions: Vec<ConditionReport>,
    /// Outcomes, newest first.
    pub recent: Vec<Outcome>,
}
