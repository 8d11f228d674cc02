//! Health from check verdicts, on one node's placer as the core drives it
//! (`drain_placer`: its messages to itself handled at once, so the node is
//! its tasks' coordinator too): the restart rule (grace, consecutive
//! failures, `on_unhealthy`, the restart policy's attempts), `unknown`
//! again after a restart, verdicts about an earlier start ignored, and the
//! coordinator hearing of each change at once.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use shoal_core::{Drained, drain_placer};
use shoal_gossip::{Capacity, FreeClass, Instant, MemberMeta, NodeId, RuntimeInfo};
use shoal_model::JobSpec;
use shoal_placement::{
    Command, Event, Health, Job, NodeInfo, PlacementConfig, Placer, Resources, TaskKey, TaskState,
    Verdict,
};

const ME: NodeId = NodeId(1);

struct One {
    placer: Placer,
    now: Instant,
    commands: Vec<Command>,
    events: Vec<Event>,
}

fn meta() -> MemberMeta {
    let addr = "10.0.0.1:5481".parse().unwrap();
    MemberMeta {
        name: "a".into(),
        gossip_addr: addr,
        rpc_addr: addr,
        api_addr: addr,
        api_tls: false,
        gossip_keys: Vec::new(),
        dc: "dc1".into(),
        zone: String::new(),
        region: "global".into(),
        labels: Default::default(),
        capacity: Capacity {
            cpus_milli: 2000,
            memory_mb: 1024,
            disk_mb: 10_000,
            gpus: 0,
        },
        runtimes: vec![RuntimeInfo {
            name: "process".into(),
            version: "test".into(),
        }],
        agent_version: "test".into(),
        free_class: FreeClass::IDLE,
        isolation: "none".into(),
        draining: false,
    }
}

impl One {
    fn new(checks: serde_json::Value, restart: serde_json::Value) -> One {
        let now = Instant::ZERO;
        let cap = Resources {
            cpus_milli: 2000,
            memory_mb: 1024,
            disk_mb: 10_000,
            gpus: 0,
        };
        let mut one = One {
            placer: Placer::new(ME, PlacementConfig::default(), cap, now),
            now,
            commands: Vec::new(),
            events: Vec::new(),
        };
        let spec = JobSpec::from_json(json!({
            "name": "web", "count": 1, "restart": restart,
            "task": {"command": "/bin/sleep", "ports": [{"name": "http"}], "checks": checks},
        }))
        .unwrap();
        let wall = one.wall();
        one.placer
            .set_members(now, wall, vec![NodeInfo::from_meta(ME, &meta())]);
        one.placer.set_jobs(
            now,
            wall,
            vec![Job {
                spec: Arc::new(spec),
                version: 1,
                deleted: false,
                run_version: 1,
                finished: Arc::default(),
                waiting: Arc::default(),
                deployment: None,
            }],
        );
        one.drain();
        // The auction runs on ticks.
        for _ in 0..20 {
            one.advance(Duration::from_millis(100));
        }
        assert!(
            matches!(one.commands.as_slice(), [Command::Start { attempt: 0, .. }]),
            "{:?}",
            one.commands
        );
        one.commands.clear();
        one
    }

    fn wall(&self) -> u64 {
        1_700_000_000_000 + self.now.as_micros() / 1000
    }

    fn drain(&mut self) {
        let (now, wall) = (self.now, self.wall());
        let (commands, events) = (&mut self.commands, &mut self.events);
        drain_placer(&mut self.placer, now, wall, |d| match d {
            Drained::Command(c) => commands.push(c),
            Drained::Event(e @ Event::Health { .. }) => events.push(e),
            _ => {}
        });
    }

    fn advance(&mut self, by: Duration) {
        self.now = self.now + by;
        let wall = self.wall();
        self.placer.handle_tick(self.now, wall);
        self.drain();
    }

    fn key() -> TaskKey {
        TaskKey::index("web", 0)
    }

    fn running(&mut self) {
        let wall = self.wall();
        self.placer
            .task_running(self.now, wall, &One::key(), Default::default());
        self.drain();
    }

    fn verdict(&mut self, after: Duration, attempt: u32, passed: bool) {
        self.now = self.now + after;
        let wall = self.wall();
        let verdict = Verdict {
            job_version: 1,
            attempt,
            check: 0,
            passed,
            output: if passed { "HTTP 200" } else { "HTTP 503" }.to_owned(),
        };
        self.placer
            .task_health(self.now, wall, &One::key(), verdict);
        self.drain();
    }

    /// As the coordinator knows it (this node, from the leases).
    fn status(&self) -> (TaskState, Health, u32, Option<String>) {
        let s = self.placer.status(&[One::key()]).remove(0);
        (s.state, s.health, s.restarts, s.reason)
    }

    fn healths(&mut self) -> Vec<Health> {
        std::mem::take(&mut self.events)
            .into_iter()
            .filter_map(|e| match e {
                Event::Health { health, .. } => Some(health),
                _ => None,
            })
            .collect()
    }
}

const S: Duration = Duration::from_secs(1);

#[test]
fn consecutive_failures_past_grace_restart_the_task() {
    let mut one = One::new(
        json!([{"type": "http", "port": "http", "interval": "1s", "grace": "5s", "failures": 2}]),
        json!({}),
    );
    one.running();
    assert_eq!(one.status().1, Health::Unknown, "no verdict yet");
    // Failures inside the grace period do not count.
    for _ in 0..4 {
        one.verdict(S, 0, false);
    }
    assert_eq!(one.status().1, Health::Unknown);
    one.verdict(S, 0, true);
    assert_eq!(one.status().1, Health::Healthy);
    assert_eq!(one.healths(), [Health::Healthy]);
    // One failure past grace: still healthy; the second fails the check.
    one.verdict(S, 0, false);
    assert_eq!(one.status().1, Health::Healthy);
    assert!(one.commands.is_empty());
    one.verdict(S, 0, false);
    assert_eq!(one.healths(), [Health::Unhealthy, Health::Unknown]);
    assert!(
        matches!(
            one.commands.as_slice(),
            [Command::Replace { attempt: 1, .. }]
        ),
        "{:?}",
        one.commands
    );
    one.commands.clear();
    let (state, health, restarts, reason) = one.status();
    assert_eq!(
        (state, health, restarts),
        (TaskState::Starting, Health::Unknown, 1)
    );
    assert_eq!(reason.as_deref(), Some("unhealthy: HTTP 503"));
    // A late verdict about the first start changes nothing.
    one.verdict(S, 0, true);
    assert_eq!(one.status().1, Health::Unknown);
    // The new start runs: unknown until its check passes.
    one.running();
    one.verdict(S, 0, true);
    assert_eq!(
        one.status().1,
        Health::Unknown,
        "a verdict of the old start"
    );
    one.verdict(S, 1, true);
    assert_eq!(one.status().1, Health::Healthy);
    assert_eq!(one.healths(), [Health::Healthy]);
}

#[test]
fn on_unhealthy_none_and_exhausted_attempts_leave_it_running() {
    let mut one = One::new(
        json!([{"type": "tcp", "port": "http", "failures": 1, "on_unhealthy": "none"}]),
        json!({}),
    );
    one.running();
    one.verdict(S, 0, false);
    assert_eq!(one.status().1, Health::Unhealthy);
    assert_eq!(one.status().0, TaskState::Running);
    assert!(one.commands.is_empty());

    let mut one = One::new(
        json!([{"type": "tcp", "port": "http", "failures": 1}]),
        json!({"attempts": 0}),
    );
    one.running();
    one.verdict(S, 0, false);
    assert_eq!(
        one.status().0,
        TaskState::Running,
        "no restart left: it runs on, unhealthy"
    );
    assert_eq!(one.status().1, Health::Unhealthy);
    assert!(one.commands.is_empty());
}
