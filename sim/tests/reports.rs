//! The simulator's report of a short seeded run, compared whole with the
//! one recorded before the node core was introduced
//! (`sim/reports/100-default-s2-short.json`, made by
//! `scripts/sim-reports.sh record` with the binary of the commit before):
//! a change to the code the simulator drives (gossip, placement, their
//! wiring in `shoal-core`) that changes behaviour shows here. The longer
//! runs of the same script are a documented command, not CI.
//!
//! When a change is meant to change behaviour, record the reports again
//! and say why in the commit.

use std::time::Duration;

use serde_json::Value;
use shoal_sim::{Params, Scenario};

/// Equal values; numbers equal to the last bit or two, because serde_json
/// (without its `float_roundtrip` feature) may read a float written in
/// shortest form back one unit in the last place off.
fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) if x.is_finite() && y.is_finite() => {
                x == y || (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs())
            }
            _ => x == y,
        },
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(Some(x), Some(y)))
        }
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            x.len() == y.len() && x.iter().all(|(k, v)| same(Some(v), y.get(k)))
        }
        (a, b) => a == b,
    }
}

#[test]
fn a_short_run_reports_exactly_what_was_recorded() {
    // `shoal-sim --nodes 100 --seed 2 --duration 30 --settle 20`
    let mut p = Params::new(Scenario::Default, 100, 2);
    p.duration = Duration::from_secs(30);
    p.settle = Duration::from_secs(20);
    let report = shoal_sim::run(p).expect("valid parameters");
    let now = serde_json::to_value(&report).expect("reports serialize");
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/reports/100-default-s2-short.json"
    );
    let text = std::fs::read_to_string(path).expect("the recorded report");
    let mut recorded: serde_json::Value = serde_json::from_str(&text).expect("recorded JSON");
    // The recorded report is the binary's: the same, plus what measured
    // the machine (left out when recording).
    if let Some(o) = recorded.as_object_mut() {
        o.remove("wall_s");
        o.remove("peak_rss_mb");
    }
    assert_eq!(report.command, recorded["command"], "not the recorded run");
    let (now_o, rec_o) = (now.as_object().unwrap(), recorded.as_object().unwrap());
    let differ: Vec<String> = rec_o
        .keys()
        .chain(now_o.keys())
        .filter(|k| !same(now_o.get(*k), rec_o.get(*k)))
        .map(|k| format!("{k}: recorded {:?}, now {:?}", rec_o.get(k), now_o.get(k)))
        .collect();
    assert!(
        differ.is_empty(),
        "the run's behaviour changed:\n{}",
        differ.join("\n")
    );
}
