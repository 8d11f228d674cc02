//! The node core's trigger driver, driven as the agent and the simulator
//! drive it: records and jobs in, ledger writes, run starts and deletions
//! out, the clock handed in.

use chrono::{DateTime, TimeDelta, Utc};
use shoal_core::{RunJob, Step, TriggerDriver, TriggerInput};
use shoal_trigger::{Ledger, OutcomeKind, RunResult, Signal, SignalValue, TriggerSpec};

const CREATED_MS: u64 = 1_796_083_200_000;

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(CREATED_MS as i64).unwrap() + TimeDelta::seconds(s)
}

fn spec(toml: &str) -> TriggerSpec {
    TriggerSpec::from_toml(toml).expect("a valid trigger")
}

const EVERY: &str = r#"
name = "report"
every = "10s"
concurrency = "allow"
history = { success = 2, failed = 1 }
[run]
[run.task]
runtime = "process"
command = "/bin/true"
"#;

fn input<'a>(spec: &'a TriggerSpec, ledger: &'a Ledger) -> TriggerInput<'a> {
    TriggerInput {
        name: &spec.name,
        spec,
        created_at_ms: CREATED_MS,
        ledger,
    }
}

/// The jobs of runs, as the replicated state shows them.
struct Jobs(Vec<(String, String, Option<RunResult>, String, u64)>);

impl Jobs {
    fn view(&self, trigger: Option<&'static str>) -> Vec<RunJob<'_>> {
        self.0
            .iter()
            .map(|(name, run, result, created, ended)| RunJob {
                name,
                trigger,
                run_id: run,
                batch: true,
                run_version: 1,
                result: *result,
                created_at: created,
                ended_ms: *ended,
            })
            .collect()
    }

    fn start(&mut self, step: &Step, at: DateTime<Utc>) {
        for s in &step.starts {
            let id = &s.fire.run_id;
            self.0.push((
                shoal_trigger::run_job_name(id),
                id.clone(),
                None,
                at.to_rfc3339(),
                0,
            ));
        }
    }

    fn end(&mut self, run: &str, result: RunResult, at: DateTime<Utc>) {
        let j = self.0.iter_mut().find(|j| j.1 == run).expect("a run");
        j.2 = Some(result);
        j.4 = at.timestamp_millis() as u64;
    }
}

impl Jobs {
    /// A pass of `d` at `at` over "report" as node `node` sees it, with the
    /// signals gathered or not.
    fn pass(
        &self,
        d: &mut TriggerDriver,
        at: DateTime<Utc>,
        node: &str,
        spec: &TriggerSpec,
        ledger: &Ledger,
        signals: bool,
    ) -> Step {
        let none: &dyn Fn(&Signal) -> SignalValue = &none;
        d.pass(
            at,
            node,
            &input(spec, ledger),
            &self.view(Some("report")),
            signals.then_some(none),
        )
    }
}

fn none(_: &Signal) -> SignalValue {
    unreachable!("no conditions")
}

#[test]
fn a_due_slot_is_recorded_then_started_once_and_its_end_recorded() {
    let spec = spec(EVERY);
    let mut ledger = Ledger::default();
    let mut jobs = Jobs(Vec::new());
    let mut d = TriggerDriver::new();
    // Before the first slot: nothing to do; the wake-up is the slot.
    let step = jobs.pass(&mut d, t(1), "n1", &spec, &ledger, true);
    assert_eq!(step.resumed, Some(None), "taken over from the creation");
    assert!(step.ledger.is_none() && step.starts.is_empty());
    assert_eq!(step.wake, Some(t(10)));
    // Due: the fire record, then the run.
    assert!(d.wants_signals(t(10), &input(&spec, &ledger), &jobs.view(Some("report"))));
    let step = jobs.pass(&mut d, t(10), "n1", &spec, &ledger, true);
    let (written, op) = step.ledger.clone().expect("a fire record");
    assert_eq!(op, "fired");
    assert_eq!(step.resumed, None);
    assert_eq!(step.starts.len(), 1);
    let run = step.starts[0].fire.run_id.clone();
    assert_eq!(written.last_handled.as_deref(), Some(run.as_str()));
    assert_eq!(written.evaluated_by.as_deref(), Some("n1"));
    assert!(matches!(
        &written.outcomes[0].kind,
        OutcomeKind::Fired { run_id, result: None, .. } if *run_id == run
    ));
    ledger = written;
    jobs.start(&step, t(10));
    // The same instant again: the slot is handled.
    let step = jobs.pass(&mut d, t(10), "n1", &spec, &ledger, true);
    assert!(step.ledger.is_none() && step.starts.is_empty());
    // The run ends: its result goes to the ledger, once.
    jobs.end(&run, RunResult::Success, t(12));
    let step = jobs.pass(&mut d, t(12), "n1", &spec, &ledger, false);
    let (written, op) = step.ledger.expect("the run's end recorded");
    assert_eq!(op, "finished");
    assert!(matches!(
        &written.outcomes[0].kind,
        OutcomeKind::Fired {
            result: Some(RunResult::Success),
            ..
        }
    ));
    ledger = written;
    let step = jobs.pass(&mut d, t(13), "n1", &spec, &ledger, false);
    assert!(step.ledger.is_none());
}

#[test]
fn without_signals_a_due_slot_waits_for_the_next_pass() {
    let spec = spec(EVERY);
    let ledger = Ledger::default();
    let jobs = Jobs(Vec::new());
    let mut d = TriggerDriver::new();
    let step = jobs.pass(&mut d, t(10), "n1", &spec, &ledger, false);
    assert!(step.ledger.is_none() && step.starts.is_empty());
    let step = jobs.pass(&mut d, t(11), "n1", &spec, &ledger, true);
    assert_eq!(step.starts.len(), 1, "fired late, within its deadline");
}

#[test]
fn a_new_owner_resumes_from_the_ledger_and_fires_no_slot_twice() {
    let spec = spec(EVERY);
    let mut jobs = Jobs(Vec::new());
    let mut first = TriggerDriver::new();
    let step = first.pass(
        t(10),
        "n1",
        &input(&spec, &Ledger::default()),
        &jobs.view(Some("report")),
        Some(&none),
    );
    let (ledger, _) = step.ledger.clone().expect("fired");
    jobs.start(&step, t(10));
    let fired = step.starts[0].fire.run_id.clone();
    // Another node takes over at once: slot 10 s is handled.
    let mut second = TriggerDriver::new();
    let step = jobs.pass(&mut second, t(10), "n2", &spec, &ledger, true);
    assert_eq!(step.resumed, Some(Some(fired.clone())));
    assert!(step.starts.is_empty(), "{step:?}");
    // It fires the next slot, and watches the first run to its end.
    let step = jobs.pass(&mut second, t(20), "n2", &spec, &ledger, true);
    assert_eq!(step.starts.len(), 1);
    assert_ne!(step.starts[0].fire.run_id, fired);
    jobs.start(&step, t(20));
    let (ledger, _) = step.ledger.expect("fired");
    jobs.end(&fired, RunResult::Failed, t(21));
    let step = jobs.pass(&mut second, t(21), "n2", &spec, &ledger, false);
    let (ledger, op) = step.ledger.expect("recorded");
    assert_eq!(op, "finished");
    let first_outcome = ledger
        .outcomes
        .iter()
        .find(|o| o.slot == fired)
        .expect("kept");
    assert!(matches!(
        first_outcome.kind,
        OutcomeKind::Fired {
            result: Some(RunResult::Failed),
            ..
        }
    ));
}

#[test]
fn a_changed_spec_is_taken_over_again_and_a_retained_name_is_kept() {
    let spec1 = spec(EVERY);
    let spec2 = spec(&EVERY.replace("10s", "20s"));
    let ledger = Ledger::default();
    let jobs = Jobs(Vec::new());
    let mut d = TriggerDriver::new();
    let step = jobs.pass(&mut d, t(1), "n1", &spec1, &ledger, false);
    assert!(step.resumed.is_some());
    let step = jobs.pass(&mut d, t(2), "n1", &spec1, &ledger, false);
    assert!(step.resumed.is_none());
    let step = jobs.pass(&mut d, t(3), "n1", &spec2, &ledger, false);
    assert!(
        step.resumed.is_some(),
        "a new spec starts over from the ledger"
    );
    d.retain(|n| n == "other");
    assert_eq!(d.names().count(), 0);
    assert!(d.explain("report", t(3)).is_none());
}

#[test]
fn finished_runs_beyond_history_are_deleted_oldest_first_running_ones_kept() {
    let spec = spec(EVERY);
    let ledger = Ledger::default();
    let mut jobs = Jobs(Vec::new());
    for i in 0..6_i64 {
        let result = match i {
            0..=2 => Some(RunResult::Success),
            3 | 4 => Some(RunResult::Failed),
            _ => None,
        };
        jobs.0.push((
            format!("report-{i}"),
            format!("report@{i}"),
            result,
            t(i).to_rfc3339(),
            1,
        ));
    }
    let mut d = TriggerDriver::new();
    let step = jobs.pass(&mut d, t(1), "n1", &spec, &ledger, false);
    // history = { success = 2, failed = 1 }: the oldest success and the
    // older failure go; the running one stays.
    assert_eq!(
        step.delete,
        vec!["report-3".to_owned(), "report-0".to_owned()]
    );
}

#[test]
fn an_after_trigger_starts_once_per_parent_run_that_ended_after_it_was_created() {
    let spec = spec(
        r#"
name = "load"
after = [{ job = "extract", on = "success" }]
[run]
[run.task]
runtime = "process"
command = "/bin/true"
"#,
    );
    let mut ledger = Ledger::default();
    let mut parent = Jobs(vec![(
        "extract".into(),
        "extract".into(),
        None,
        t(0).to_rfc3339(),
        0,
    )]);
    let mut d = TriggerDriver::new();
    let view = parent.view(None);
    let step = d.pass(t(5), "n1", &input(&spec, &ledger), &view, Some(&none));
    assert!(step.starts.is_empty(), "the parent has not ended");
    parent.end("extract", RunResult::Success, t(6));
    let view = parent.view(None);
    assert!(d.wants_signals(t(7), &input(&spec, &ledger), &view));
    let step = d.pass(t(7), "n1", &input(&spec, &ledger), &view, Some(&none));
    assert_eq!(step.starts.len(), 1, "{step:?}");
    assert_eq!(step.starts[0].fire.run_id, "load@extract@v1");
    assert_eq!(step.starts[0].parent.as_deref(), Some("extract@v1"));
    ledger = step.ledger.expect("the fire record").0;
    // Handled: recorded in the ledger, not started again, also by a new
    // owner that sees only the ledger.
    let step = d.pass(t(8), "n1", &input(&spec, &ledger), &view, Some(&none));
    assert!(step.starts.is_empty());
    let mut other = TriggerDriver::new();
    let step = other.pass(t(8), "n2", &input(&spec, &ledger), &view, Some(&none));
    assert!(step.starts.is_empty(), "{step:?}");
}
