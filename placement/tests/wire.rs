//! Every placement message survives the wire encoding the agent uses
//! (postcard). How placement behaves on a cluster is tested where the
//! agent's and the simulator's code runs it, on real node cores:
//! `node/core/tests/placement.rs`.

use std::sync::Arc;

use serde_json::json;
use shoal_gossip::NodeId;
use shoal_model::JobSpec;
use shoal_placement::{Msg, Resources, Stamp, TaskKey, TaskState};

fn spec(name: &str, count: Option<u32>, cpus: f64, extra: serde_json::Value) -> JobSpec {
    let mut v = json!({
        "name": name,
        "task": {"runtime": "process", "command": "/bin/sleep", "resources": {"cpus": cpus, "memory_mb": 64}},
    });
    if let Some(c) = count {
        v["count"] = json!(c);
    }
    if let serde_json::Value::Object(m) = extra {
        for (k, val) in m {
            v[k] = val;
        }
    }
    JobSpec::from_json(v).unwrap()
}

#[test]
fn every_message_survives_the_wire_encoding() {
    let spec = Arc::new(spec(
        "web/frontend",
        Some(3),
        0.5,
        json!({"spread": "zone", "constraints": [{"attribute": "dc", "op": "exists"}]}),
    ));
    let key = TaskKey::index("web/frontend", 2);
    let stamp = Stamp {
        wall_ms: 5,
        counter: 1,
        node: NodeId(9),
    };
    let report = shoal_placement::Report {
        ports: [("http".to_owned(), 20001)].into(),
        state: TaskState::Running,
        restarts: 2,
        exit_code: None,
        reason: Some("oom".into()),
        since_ms: 7,
        job_version: 3,
        health: shoal_placement::Health::Unhealthy,
        check: Some("HTTP 503".into()),
    };
    let msgs = vec![
        Msg::BidRequest {
            key: key.clone(),
            round: 1,
            job_version: 3,
            demand: Resources::default(),
            spec: spec.clone(),
        },
        Msg::Bid {
            key: key.clone(),
            round: 1,
            score: 5,
            job_tasks: 2,
            spread_value: Some("z1".into()),
        },
        Msg::Bid {
            key: key.clone(),
            round: 1,
            score: 5,
            job_tasks: 2,
            spread_value: None,
        },
        Msg::Decline {
            key: key.clone(),
            round: 1,
            reason: "needs 1 cpus, 0 free".into(),
        },
        Msg::Award {
            key: key.clone(),
            round: 1,
            stamp,
            job_version: 3,
            spec,
        },
        Msg::Accept {
            key: key.clone(),
            round: 1,
        },
        Msg::Reject {
            key: key.clone(),
            round: 1,
            reason: "full".into(),
        },
        Msg::Lease {
            key: key.clone(),
            stamp,
            report,
        },
        Msg::Stop {
            key: key.clone(),
            stamp,
            reason: "no".into(),
        },
        Msg::Cancel {
            key: key.clone(),
            round: 1,
        },
        Msg::Release {
            key: TaskKey::system("logs", NodeId(3)),
            stamp,
        },
    ];
    for m in msgs {
        let bytes = postcard::to_allocvec(&m).unwrap();
        let back: Msg = postcard::from_bytes(&bytes).unwrap_or_else(|e| panic!("{m:?}: {e}"));
        assert_eq!(back, m);
    }
}

/// The report as it was encoded before tasks had a health.
#[derive(serde::Serialize)]
struct ReportBeforeHealth {
    state: TaskState,
    restarts: u32,
    exit_code: Option<i32>,
    reason: Option<String>,
    since_ms: u64,
    job_version: u64,
}

#[test]
fn a_report_without_check_output_or_ports_costs_what_it_cost_before_health() {
    for (state, health) in [
        (TaskState::Running, shoal_placement::Health::Healthy),
        (TaskState::Starting, shoal_placement::Health::Unknown),
        (TaskState::Running, shoal_placement::Health::Unhealthy),
        (TaskState::Lost, shoal_placement::Health::Unknown),
    ] {
        let report = shoal_placement::Report {
            state,
            restarts: 300,
            exit_code: Some(-1),
            reason: Some("unhealthy: HTTP 503".into()),
            since_ms: 1_700_000_000_000,
            job_version: 12,
            health,
            check: None,
            ports: Default::default(),
        };
        let before = ReportBeforeHealth {
            state,
            restarts: 300,
            exit_code: Some(-1),
            reason: Some("unhealthy: HTTP 503".into()),
            since_ms: 1_700_000_000_000,
            job_version: 12,
        };
        let bytes = postcard::to_allocvec(&report).unwrap();
        assert_eq!(bytes.len(), postcard::to_allocvec(&before).unwrap().len());
        let back: shoal_placement::Report = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, report);
        let with_check = shoal_placement::Report {
            check: Some("connection refused".into()),
            ..report.clone()
        };
        let bytes = postcard::to_allocvec(&with_check).unwrap();
        let back: shoal_placement::Report = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, with_check);
        let json = serde_json::to_string(&with_check).unwrap();
        let back: shoal_placement::Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, with_check);
        // Host ports follow when there are some, with or without a check.
        for check in [None, Some("HTTP 200".to_owned())] {
            let with_ports = shoal_placement::Report {
                check,
                ports: [("http".to_owned(), 20417), ("admin".to_owned(), 8080)].into(),
                ..report.clone()
            };
            let bytes = postcard::to_allocvec(&with_ports).unwrap();
            let back: shoal_placement::Report = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back, with_ports);
            let json = serde_json::to_string(&with_ports).unwrap();
            let back: shoal_placement::Report = serde_json::from_str(&json).unwrap();
            assert_eq!(back, with_ports);
        }
    }
}
