//! Schedules and slots: when a trigger is due, and the deterministic id of
//! each due time.
//!
//! A cron schedule is evaluated on the wall clock of the trigger's time
//! zone: croner walks local (naive) date-times, and this module maps each
//! one to an instant with shoal's own daylight-saving rule (see the crate
//! docs), never with the time-zone crate's choice. An `every` schedule is
//! anchored at multiples of its period since the unix epoch, in UTC, so
//! every node computes the same slots.

use std::str::FromStr as _;
use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone as _, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// The format of the time in a slot id (`2026-12-01T03:00:00`).
pub const SLOT_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

/// When a trigger is due.
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    /// Every `period`, at multiples of it since 1970-01-01T00:00:00Z.
    Every {
        /// At least one second, whole seconds.
        period: Duration,
    },
    /// A cron expression on the wall clock of `timezone`.
    Cron {
        /// As written (5 fields, or 6 with seconds first).
        expr: String,
        /// Parsed (boxed: it is large).
        cron: Box<Cron>,
        /// The zone (UTC by default).
        timezone: Tz,
    },
}

/// One due time of a schedule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Slot {
    /// When it is due.
    pub at: DateTime<Utc>,
    /// Its wall-clock time in the trigger's zone (UTC for `every`); this is
    /// what the id is made of, and what slots are ordered and counted by.
    pub local: NaiveDateTime,
    /// `<trigger>@<local>`: `cheap-report@2026-12-01T03:00:00`.
    pub id: String,
}

/// Parses a cron expression of 5 fields (minute first) or 6 (second
/// first); no year field.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    let fields = expr.split_whitespace().count();
    if !(fields == 5 || fields == 6) {
        return Err(format!(
            "{expr:?} has {fields} fields: write 5 (minute hour day month weekday) or 6 (with seconds first)"
        ));
    }
    let parser = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build();
    let cron = parser
        .parse(expr)
        .map_err(|e| format!("{expr:?} is not a cron expression: {e}"))?;
    // A pattern that can never match (`0 0 31 2 *`) is refused now rather
    // than discovered when it is due.
    let start = NaiveDateTime::from_str("2000-01-01T00:00:00").expect("a date");
    cron.find_next_occurrence(&start, false)
        .map_err(|_| format!("{expr:?} never matches"))?;
    Ok(cron)
}

/// Parses an IANA zone name (`Europe/Berlin`, `UTC`).
pub fn parse_timezone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        format!("unknown time zone {name:?}: use an IANA name such as Europe/Berlin or UTC")
    })
}

/// The instant a wall-clock time of `tz` is due, by shoal's rule: a time
/// that exists once is that instant; a repeated time (autumn) is its
/// first occurrence; a time that does not exist (spring) is the first
/// instant after the gap.
pub fn local_to_instant(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, second) => first.min(second).with_timezone(&Utc),
        LocalResult::None => gap_end(tz, local),
    }
}

fn exists(tz: Tz, local: NaiveDateTime) -> bool {
    !matches!(tz.from_local_datetime(&local), LocalResult::None)
}

/// The first instant after the gap `local` falls in: the earliest
/// existing wall-clock second after it, found by walking forward in
/// quarter hours (gaps are at most a day) and bisecting to the second.
fn gap_end(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let step = TimeDelta::minutes(15);
    let mut lo = local; // does not exist
    let mut hi = local + step;
    let mut guard = 0;
    while !exists(tz, hi) {
        lo = hi;
        hi += step;
        guard += 1;
        if guard > 4 * 48 {
            // No zone has a gap of two days; treat the time as UTC rather
            // than loop.
            return local.and_utc();
        }
    }
    // lo does not exist, hi does: bisect to the first existing second.
    while hi - lo > TimeDelta::seconds(1) {
        let mid = lo + (hi - lo) / 2;
        if exists(tz, mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    match tz.from_local_datetime(&hi) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(a, b) => a.min(b).with_timezone(&Utc),
        LocalResult::None => hi.and_utc(),
    }
}

fn period_secs(period: Duration) -> i64 {
    i64::try_from(period.as_secs()).unwrap_or(i64::MAX).max(1)
}

impl Schedule {
    /// The zone slot ids are written in.
    pub fn timezone(&self) -> Tz {
        match self {
            Schedule::Every { .. } => Tz::UTC,
            Schedule::Cron { timezone, .. } => *timezone,
        }
    }

    fn slot(&self, trigger: &str, local: NaiveDateTime) -> Slot {
        let at = match self {
            Schedule::Every { .. } => local.and_utc(),
            Schedule::Cron { timezone, .. } => local_to_instant(*timezone, local),
        };
        Slot {
            at,
            local,
            id: slot_id(trigger, local),
        }
    }

    /// The slot whose wall-clock time follows `local` (strictly). Slots
    /// are ordered by wall-clock time, and their instants never go
    /// backwards in that order (two may share an instant: see the DST rule).
    pub fn slot_after_local(&self, trigger: &str, local: NaiveDateTime) -> Option<Slot> {
        match self {
            Schedule::Every { period } => {
                let p = period_secs(*period);
                let t = local.and_utc().timestamp();
                let next = (t.div_euclid(p) + 1).checked_mul(p)?;
                let at = DateTime::<Utc>::from_timestamp(next, 0)?;
                Some(self.slot(trigger, at.naive_utc()))
            }
            Schedule::Cron { cron, .. } => {
                let next = cron.find_next_occurrence(&local, false).ok()?;
                Some(self.slot(trigger, next))
            }
        }
    }

    /// The slot whose wall-clock time precedes `local` (strictly).
    pub fn slot_before_local(&self, trigger: &str, local: NaiveDateTime) -> Option<Slot> {
        match self {
            Schedule::Every { period } => {
                let p = period_secs(*period);
                let t = local.and_utc().timestamp();
                let prev = ((t - 1).div_euclid(p)).checked_mul(p)?;
                let at = DateTime::<Utc>::from_timestamp(prev, 0)?;
                Some(self.slot(trigger, at.naive_utc()))
            }
            Schedule::Cron { cron, .. } => {
                let prev = cron.find_previous_occurrence(&local, false).ok()?;
                Some(self.slot(trigger, prev))
            }
        }
    }

    /// The first slot due strictly after the instant `after`.
    pub fn next_slot(&self, trigger: &str, after: DateTime<Utc>) -> Option<Slot> {
        // No slot before the wall-clock time of `after` is due after it
        // (instants never go backwards in wall-clock order, and a wall
        // time's instant is at most the instant it was read at), so start
        // there and skip the few (a repeated hour) already past.
        let mut local = after.with_timezone(&self.timezone()).naive_local();
        for _ in 0..100_000 {
            let slot = self.slot_after_local(trigger, local)?;
            if slot.at > after {
                return Some(slot);
            }
            local = slot.local;
        }
        None
    }

    /// The slot whose id is `id`, if `id` is one of this schedule's slot ids
    /// for `trigger`.
    pub fn slot_from_id(&self, trigger: &str, id: &str) -> Option<Slot> {
        let local = parse_slot_id(trigger, id)?;
        let slot = self.slot(trigger, local);
        let is_slot = match self {
            Schedule::Every { period } => local.and_utc().timestamp() % period_secs(*period) == 0,
            Schedule::Cron { cron, .. } => cron.is_time_matching(&local).unwrap_or(false),
        };
        is_slot.then_some(slot)
    }
}

/// `<trigger>@<local>` (`cheap-report@2026-12-01T03:00:00`).
pub fn slot_id(trigger: &str, local: NaiveDateTime) -> String {
    format!("{trigger}@{}", local.format(SLOT_FORMAT))
}

/// The wall-clock time of a slot id of `trigger`, if it is one.
pub fn parse_slot_id(trigger: &str, id: &str) -> Option<NaiveDateTime> {
    let rest = id.strip_prefix(trigger)?.strip_prefix('@')?;
    NaiveDateTime::parse_from_str(rest, SLOT_FORMAT).ok()
}

/// The id of a manual run: `<trigger>@manual-<id>`. The caller picks `id`
/// (a request id, a time), unique per trigger.
pub fn manual_run_id(trigger: &str, id: &str) -> String {
    format!("{trigger}@manual-{id}")
}

/// The id of a run started by a parent run's end (`after`):
/// `<trigger>@<parent run id>` (`load@extract@2026-12-01T03:00:00`).
pub fn after_run_id(trigger: &str, parent_run: &str) -> String {
    format!("{trigger}@{parent_run}")
}

/// A job name for a run id, since run ids hold `@`, `:` and capitals that
/// job names may not: `cheap-report@2026-12-01T03:00:00` becomes
/// `cheap-report/run-2026-12-01t030000`. Anything else outside `[a-z0-9-]`
/// becomes `-`; the result is a valid job name for a valid trigger name.
pub fn run_job_name(run_id: &str) -> String {
    let (trigger, slot) = run_id.split_once('@').unwrap_or((run_id, "run"));
    let mut word: String = slot
        .chars()
        .filter(|c| *c != ':')
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .collect();
    word = format!("run-{word}");
    word.truncate(63);
    let word = word.trim_end_matches('-');
    format!("{trigger}/{word}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn cron(expr: &str, tz: &str) -> Schedule {
        Schedule::Cron {
            expr: expr.into(),
            cron: Box::new(parse_cron(expr).unwrap()),
            timezone: parse_timezone(tz).unwrap(),
        }
    }

    /// `n` slots from the first after `from`, each the one after the other
    /// in wall-clock order (as the evaluator walks them).
    fn slots(s: &Schedule, from: &str, n: usize) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut slot = s.next_slot("t", utc(from)).unwrap();
        for _ in 0..n {
            let next = s.slot_after_local("t", slot.local).unwrap();
            out.push((slot.id, slot.at.to_rfc3339()));
            slot = next;
        }
        out
    }

    #[test]
    fn daily_0230_berlin_across_both_2026_dst_changes() {
        let s = cron("30 2 * * *", "Europe/Berlin");
        // Spring: 2026-03-29 02:00 CET jumps to 03:00 CEST; 02:30 does not
        // exist and fires once at the first instant after the gap.
        let spring = slots(&s, "2026-03-27T12:00:00Z", 4);
        assert_eq!(
            spring,
            [
                (
                    "t@2026-03-28T02:30:00".into(),
                    "2026-03-28T01:30:00+00:00".into()
                ),
                (
                    "t@2026-03-29T02:30:00".into(),
                    "2026-03-29T01:00:00+00:00".into()
                ),
                (
                    "t@2026-03-30T02:30:00".into(),
                    "2026-03-30T00:30:00+00:00".into()
                ),
                (
                    "t@2026-03-31T02:30:00".into(),
                    "2026-03-31T00:30:00+00:00".into()
                ),
            ]
        );
        // Autumn: 2026-10-25 03:00 CEST goes back to 02:00 CET; 02:30
        // happens twice and is one slot, at its first occurrence.
        let autumn = slots(&s, "2026-10-23T12:00:00Z", 4);
        assert_eq!(
            autumn,
            [
                (
                    "t@2026-10-24T02:30:00".into(),
                    "2026-10-24T00:30:00+00:00".into()
                ),
                (
                    "t@2026-10-25T02:30:00".into(),
                    "2026-10-25T00:30:00+00:00".into()
                ),
                (
                    "t@2026-10-26T02:30:00".into(),
                    "2026-10-26T01:30:00+00:00".into()
                ),
                (
                    "t@2026-10-27T02:30:00".into(),
                    "2026-10-27T01:30:00+00:00".into()
                ),
            ]
        );
        // Asked during the repeated hour's second pass (02:15 CET = 01:15Z),
        // the next slot is the next day's: 02:30 has had its one run.
        let next = s.next_slot("t", utc("2026-10-25T01:15:00Z")).unwrap();
        assert_eq!(next.id, "t@2026-10-26T02:30:00");
    }

    #[test]
    fn every_minute_in_the_gap_fires_at_its_end_and_once_in_the_fold() {
        let s = cron("*/30 * * * *", "Europe/Berlin");
        let spring = slots(&s, "2026-03-29T00:15:00Z", 4);
        assert_eq!(
            spring,
            [
                (
                    "t@2026-03-29T01:30:00".into(),
                    "2026-03-29T00:30:00+00:00".into()
                ),
                (
                    "t@2026-03-29T02:00:00".into(),
                    "2026-03-29T01:00:00+00:00".into()
                ),
                (
                    "t@2026-03-29T02:30:00".into(),
                    "2026-03-29T01:00:00+00:00".into()
                ),
                (
                    "t@2026-03-29T03:00:00".into(),
                    "2026-03-29T01:00:00+00:00".into()
                ),
            ]
        );
        // next_slot is strictly after an instant, so it skips the others
        // tied at 01:00Z; the evaluator walks wall-clock order and does not.
        let after_gap = s.next_slot("t", utc("2026-03-29T01:00:00Z")).unwrap();
        assert_eq!(after_gap.id, "t@2026-03-29T03:30:00");
        let autumn = slots(&s, "2026-10-24T23:45:00Z", 5);
        let ids: Vec<&str> = autumn.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "t@2026-10-25T02:00:00",
                "t@2026-10-25T02:30:00",
                "t@2026-10-25T03:00:00",
                "t@2026-10-25T03:30:00",
                "t@2026-10-25T04:00:00",
            ]
        );
        assert_eq!(autumn[2].1, "2026-10-25T02:00:00+00:00");
    }

    #[test]
    fn every_slots_are_anchored_at_the_epoch() {
        let s = Schedule::Every {
            period: Duration::from_secs(600),
        };
        let got = slots(&s, "2026-12-01T03:04:05Z", 3);
        assert_eq!(
            got,
            [
                (
                    "t@2026-12-01T03:10:00".into(),
                    "2026-12-01T03:10:00+00:00".into()
                ),
                (
                    "t@2026-12-01T03:20:00".into(),
                    "2026-12-01T03:20:00+00:00".into()
                ),
                (
                    "t@2026-12-01T03:30:00".into(),
                    "2026-12-01T03:30:00+00:00".into()
                ),
            ]
        );
        // Strictly after: a slot time itself gives the next one.
        assert_eq!(
            s.next_slot("t", utc("2026-12-01T03:10:00Z")).unwrap().id,
            "t@2026-12-01T03:20:00"
        );
        let five = Schedule::Every {
            period: Duration::from_secs(5),
        };
        assert_eq!(
            five.next_slot("t", utc("2026-12-01T03:00:03.5Z"))
                .unwrap()
                .id,
            "t@2026-12-01T03:00:05"
        );
    }

    #[test]
    fn seconds_cron() {
        let s = cron("*/5 * * * * *", "UTC");
        let got = slots(&s, "2026-12-01T03:00:03Z", 3);
        let ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "t@2026-12-01T03:00:05",
                "t@2026-12-01T03:00:10",
                "t@2026-12-01T03:00:15"
            ]
        );
    }

    proptest::proptest! {
        /// Whatever the zone, the cron and the instant: the next slot is
        /// later, walking slots in wall-clock order never goes back in
        /// time, ids are distinct and read back to their slot.
        #[test]
        fn slots_move_forward_and_ids_read_back(
            secs in 1_700_000_000i64..1_900_000_000,
            zone in proptest::sample::select(vec!["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "Pacific/Apia"]),
            expr in proptest::sample::select(vec!["30 2 * * *", "*/15 * * * *", "0 0 1 * *", "*/20 * * * * *", "0 30 1-3 * * 0"]),
        ) {
            let s = cron(expr, zone);
            let after = DateTime::<Utc>::from_timestamp(secs, 0).unwrap();
            let mut slot = s.next_slot("t", after).unwrap();
            proptest::prop_assert!(slot.at > after);
            let mut ids = std::collections::BTreeSet::new();
            for _ in 0..50 {
                let back = s.slot_from_id("t", &slot.id);
                proptest::prop_assert_eq!(back.as_ref(), Some(&slot));
                proptest::prop_assert!(ids.insert(slot.id.clone()));
                let next = s.slot_after_local("t", slot.local).unwrap();
                proptest::prop_assert!(next.at >= slot.at, "{:?} then {:?}", slot, next);
                proptest::prop_assert!(next.local > slot.local);
                let before = s.slot_before_local("t", next.local);
                proptest::prop_assert_eq!(before.as_ref(), Some(&slot));
                slot = next;
            }
        }
    }

    #[test]
    fn bad_cron_and_zones() {
        assert!(parse_cron("* * *").is_err());
        assert!(parse_cron("61 * * * *").is_err());
        assert!(parse_cron("0 0 31 2 *").is_err());
        assert!(parse_cron("0 0 * * * * 2026").is_err());
        assert!(parse_cron("30 2 * * *").is_ok());
        assert!(parse_timezone("Europe/Berlin").is_ok());
        assert!(parse_timezone("Mars/Olympus").is_err());
    }

    #[test]
    fn ids() {
        let s = cron("30 2 * * *", "Europe/Berlin");
        let slot = s.slot_from_id("r", "r@2026-03-29T02:30:00").unwrap();
        assert_eq!(slot.at, utc("2026-03-29T01:00:00Z"));
        assert!(s.slot_from_id("r", "r@2026-03-29T02:31:00").is_none());
        assert!(s.slot_from_id("r", "x@2026-03-29T02:30:00").is_none());
        assert_eq!(manual_run_id("r", "7"), "r@manual-7");
        assert_eq!(
            after_run_id("load", "extract@2026-12-01T03:00:00"),
            "load@extract@2026-12-01T03:00:00"
        );
        assert_eq!(
            run_job_name("cheap-report@2026-12-01T03:00:00"),
            "cheap-report/run-2026-12-01t030000"
        );
        assert_eq!(run_job_name("r@manual-Ab_1"), "r/run-manual-ab-1");
        assert_eq!(
            run_job_name("load@extract@2026-12-01T03:00:00"),
            "load/run-extract-2026-12-01t030000"
        );
        shoal_model::validate_name(&run_job_name("load@extract@2026-12-01T03:00:00")).unwrap();
    }
}
