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
