//! Replicas that receive the same updates, in any order and by any path,
//! end in the same state.

use proptest::prelude::*;
use serde_json::json;
use shoal_gossip::NodeId;
use shoal_model::JobSpec;
use shoal_state::{PersistOp, StateConfig, Store, SyncRequest, Write, WriteOp};

const JOBS: [&str; 3] = ["web", "db/primary", "batch-1"];

fn spec(name: &str, variant: u8) -> JobSpec {
    let v = json!({
        "name": name,
        "count": 1 + u32::from(variant % 4),
        "task": {
            "runtime": "process",
            "command": "/bin/sleep",
            "args": [format!("{}", variant % 3)],
            "env": { format!("K{}", variant % 2): format!("v{variant}") },
            "resources": { "cpus": 0.25 * f64::from(1 + variant % 4), "memory_mb": 64 * (1 + u64::from(variant % 5)) }
        },
        "labels": { "team": format!("t{}", variant % 3) }
    });
    JobSpec::from_json(v).unwrap()
}

#[derive(Clone, Debug)]
enum Step {
    Put {
        replica: usize,
        job: usize,
        variant: u8,
    },
    Scale {
        replica: usize,
        job: usize,
        count: u32,
    },
    Delete {
        replica: usize,
        job: usize,
    },
    Round {
        from: usize,
        to: usize,
    },
    DeliverPushes {
        from: usize,
        to: usize,
    },
}

fn step(n: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..n, 0..JOBS.len(), any::<u8>()).prop_map(|(replica, job, variant)| Step::Put { replica, job, variant }),
        2 => (0..n, 0..JOBS.len(), 0u32..10).prop_map(|(replica, job, count)| Step::Scale { replica, job, count }),
        1 => (0..n, 0..JOBS.len()).prop_map(|(replica, job)| Step::Delete { replica, job }),
        2 => (0..n, 0..n).prop_map(|(from, to)| Step::Round { from, to }),
        2 => (0..n, 0..n).prop_map(|(from, to)| Step::DeliverPushes { from, to }),
    ]
}

struct Cluster {
    stores: Vec<Store>,
    pending: Vec<Vec<SyncRequest>>,
    clock_ms: u64,
}

impl Cluster {
    fn new(n: usize) -> Cluster {
        Cluster {
            stores: (0..n)
                .map(|i| Store::new(NodeId(i as u64 + 1), 1, StateConfig::default()))
                .collect(),
            pending: vec![Vec::new(); n],
            clock_ms: 1_700_000_000_000,
        }
    }

    fn collect_pushes(&mut self, i: usize) {
        while let Some(p) = self.stores[i].poll_push() {
            self.pending[i].push(SyncRequest::Changes {
                docs: p.docs,
                forward: true,
            });
        }
        while self.stores[i].poll_persist().is_some() {}
        while self.stores[i].poll_event().is_some() {}
    }

    fn write(&mut self, replica: usize, name: &str, op: WriteOp) {
        self.clock_ms += 1000;
        let _ = self.stores[replica].write(Write {
            by: None,
            name: name.to_owned(),
            op,
            if_version: None,
            now_ms: self.clock_ms,
        });
        self.collect_pushes(replica);
    }

    fn round(&mut self, from: usize, to: usize) {
        if from == to {
            return;
        }
        let (a_id, b_id) = (NodeId(from as u64 + 1), NodeId(to as u64 + 1));
        let mut request = Some(self.stores[from].begin_round());
        let mut hops = 0;
        while let Some(r) = request {
            let response = self.stores[to].handle_request(a_id, r);
            request = self.stores[from].handle_response(b_id, response);
            hops += 1;
            assert!(hops < 10, "a round does not end");
        }
        self.collect_pushes(from);
        self.collect_pushes(to);
    }

    fn deliver(&mut self, from: usize, to: usize) {
        if from == to {
            return;
        }
        let msgs = std::mem::take(&mut self.pending[from]);
        for m in msgs {
            let _ = self.stores[to].handle_request(NodeId(from as u64 + 1), m);
        }
        self.collect_pushes(to);
    }

    fn run(&mut self, s: &Step) {
        match *s {
            Step::Put {
                replica,
                job,
                variant,
            } => {
                self.write(
                    replica,
                    JOBS[job],
                    WriteOp::Put(Box::new(spec(JOBS[job], variant))),
                );
            }
            Step::Scale {
                replica,
                job,
                count,
            } => self.write(replica, JOBS[job], WriteOp::Scale(count)),
            Step::Delete { replica, job } => self.write(replica, JOBS[job], WriteOp::Delete),
            Step::Round { from, to } => self.round(from, to),
            Step::DeliverPushes { from, to } => self.deliver(from, to),
        }
        // Read every view after every step, so that a view kept from
        // before a change would show in the checks below.
        for st in &self.stores {
            let _ = st.jobs(true);
        }
    }

    /// Rounds between every pair until nothing changes.
    fn heal(&mut self) {
        let n = self.stores.len();
        for _ in 0..3 {
            for a in 0..n {
                for b in 0..n {
                    self.round(a, b);
                }
            }
        }
    }

    fn assert_converged(&mut self) {
        let first = self.stores[0].canonical();
        for (i, s) in self.stores.iter().enumerate().skip(1) {
            assert_eq!(s.canonical(), first, "replica {i} differs from replica 0");
            assert_eq!(s.root_digest(), self.stores[0].root_digest());
            assert_eq!(s.jobs(true), self.stores[0].jobs(true));
        }
        // The views each replica keeps are the ones its documents give
        // when read afresh (a replica loaded from its snapshot).
        for (i, s) in self.stores.iter_mut().enumerate() {
            let mut fresh = Store::new(NodeId(200), 1, StateConfig::default());
            for op in s.snapshot() {
                fresh.restore(op);
            }
            assert_eq!(s.jobs(true), fresh.jobs(true), "replica {i}'s kept views");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn replicas_converge(n in 2usize..5, steps in prop::collection::vec(step(4), 1..40)) {
        let mut c = Cluster::new(n);
        for s in &steps {
            let s = match s.clone() {
                Step::Put { replica, job, variant } => Step::Put { replica: replica % n, job, variant },
                Step::Scale { replica, job, count } => Step::Scale { replica: replica % n, job, count },
                Step::Delete { replica, job } => Step::Delete { replica: replica % n, job },
                Step::Round { from, to } => Step::Round { from: from % n, to: to % n },
                Step::DeliverPushes { from, to } => Step::DeliverPushes { from: from % n, to: to % n },
            };
            c.run(&s);
        }
        c.heal();
        c.assert_converged();
    }

    #[test]
    fn any_delivery_order_gives_the_same_state(
        writes in prop::collection::vec((0usize..3, 0..JOBS.len(), any::<u8>(), 0u8..3), 1..12),
        seed in any::<u64>(),
    ) {
        // Three writers make changes without hearing from each other; a
        // fourth replica receives every change, in two different orders.
        let mut c = Cluster::new(3);
        let mut records: Vec<PersistOp> = Vec::new();
        for (replica, job, variant, kind) in writes {
            let op = match kind {
                0 => WriteOp::Put(Box::new(spec(JOBS[job], variant))),
                1 => WriteOp::Scale(u32::from(variant % 7)),
                _ => WriteOp::Delete,
            };
            c.clock_ms += 1000;
            let _ = c.stores[replica].write(Write { name: JOBS[job].into(), op, if_version: None, now_ms: c.clock_ms, by: None });
            while let Some(p) = c.stores[replica].poll_persist() {
                records.push(p);
            }
        }
        let mut forward = Store::new(NodeId(100), 1, StateConfig::default());
        for r in records.iter().cloned() {
            forward.restore(r);
        }
        let mut shuffled = records.clone();
        // A deterministic shuffle driven by the seed.
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut backward = Store::new(NodeId(101), 1, StateConfig::default());
        for r in shuffled {
            backward.restore(r);
        }
                prop_assert_eq!(forward.canonical(), backward.canonical());
        prop_assert_eq!(forward.root_digest(), backward.root_digest());
        // Restored in shards (as on several threads at start-up), then
        // absorbed: the same replica.
        let shards = 3;
        let mut parts: Vec<Store> = (0..shards).map(|_| Store::new(NodeId(102), 1, StateConfig::default())).collect();
        for r in records.iter().cloned() {
                        parts[Store::shard_of(r.name(), shards)].restore(r);
        }
        let mut sharded = Store::new(NodeId(102), 1, StateConfig::default());
        for p in parts {
            sharded.absorb(p);
        }
        prop_assert_eq!(forward.canonical(), sharded.canonical());
        prop_assert_eq!(forward.root_digest(), sharded.root_digest());
    }
}

#[test]
fn concurrent_update_and_scale_both_apply() {
    let mut c = Cluster::new(3);
    c.write(0, "web", WriteOp::Put(Box::new(spec("web", 0))));
    c.heal();
    // Node 1 changes the spec while node 2 scales, without hearing from
    // each other.
    let mut updated = spec("web", 0);
    updated.task.resources.cpus = 2.0;
    updated.labels.insert("tier".into(), "front".into());
    c.write(1, "web", WriteOp::Put(Box::new(updated)));
    c.write(2, "web", WriteOp::Scale(9));
    c.heal();
    c.assert_converged();
    let job = c.stores[0].view("web").unwrap();
    assert_eq!(job.count, Some(9));
    assert_eq!(job.spec["task"]["resources"]["cpus"], 2.0);
    assert_eq!(job.spec["labels"]["tier"], "front");
    assert_eq!(job.version, 3, "create + two concurrent changes");
}

#[test]
fn a_deleted_job_stays_deleted_after_a_partition() {
    let mut c = Cluster::new(2);
    c.write(0, "web", WriteOp::Put(Box::new(spec("web", 0))));
    c.heal();
    // Partition: one side deletes, the other edits.
    c.write(0, "web", WriteOp::Delete);
    c.write(1, "web", WriteOp::Scale(5));
    c.heal();
    c.assert_converged();
    assert!(c.stores[1].view("web").unwrap().deleted);
    assert!(c.stores[1].jobs(false).is_empty());
}

#[test]
fn tombstones_expire_and_block_resurrection() {
    let ttl = 1000;
    let config = StateConfig {
        tombstone_ttl_ms: ttl,
        ..StateConfig::default()
    };
    let mut a = Store::new(NodeId(1), 1, config.clone());
    let mut b = Store::new(NodeId(2), 1, config);
    let w = |op, now_ms| Write {
        by: None,
        name: "web".into(),
        op,
        if_version: None,
        now_ms,
    };
    b.write(w(WriteOp::Put(Box::new(spec("web", 0))), 10))
        .unwrap();
    // a got the job, then b was cut off; a deletes it and drops it later.
    while let Some(p) = b.poll_persist() {
        if let PersistOp::Append { name, bytes } = p {
            a.restore(PersistOp::Append { name, bytes });
        }
    }
    a.write(w(WriteOp::Delete, 20)).unwrap();
    a.expire(20 + ttl + 1);
    assert_eq!(a.doc_count(), 0);
    // b comes back with its old copy: a refuses it.
    let mut request = Some(b.begin_round());
    while let Some(r) = request {
        let response = a.handle_request(NodeId(2), r);
        request = b.handle_response(NodeId(1), response);
    }
    let mut request = Some(a.begin_round());
    while let Some(r) = request {
        let response = b.handle_request(NodeId(1), r);
        request = a.handle_response(NodeId(2), response);
    }
    assert!(a.jobs(true).is_empty(), "the dropped job came back");
    assert!(a.rejected().get("tombstoned").copied().unwrap_or(0) > 0);
    // Created again later, it is a new job.
    b.write(w(WriteOp::Delete, 30)).unwrap();
    b.write(w(WriteOp::Put(Box::new(spec("web", 1))), 40 + ttl))
        .unwrap();
    let mut request = Some(a.begin_round());
    while let Some(r) = request {
        let response = b.handle_request(NodeId(1), r);
        request = a.handle_response(NodeId(2), response);
    }
    assert!(!a.view("web").unwrap().deleted);
}

#[test]
fn check_and_set_and_no_op_writes() {
    let mut s = Store::new(NodeId(1), 1, StateConfig::default());
    let w = |op, if_version| Write {
        by: None,
        name: "web".into(),
        op,
        if_version,
        now_ms: 5,
    };
    assert!(
        s.write(w(WriteOp::Put(Box::new(spec("web", 0))), Some(3)))
            .is_err()
    );
    let created = s
        .write(w(WriteOp::Put(Box::new(spec("web", 0))), Some(0)))
        .unwrap();
    assert!(created.created);
    assert_eq!(created.job.version, 1);
    let again = s
        .write(w(WriteOp::Put(Box::new(spec("web", 0))), None))
        .unwrap();
    assert!(again.unchanged);
    assert_eq!(again.job.version, 1);
    let err = s.write(w(WriteOp::Scale(4), Some(7))).unwrap_err();
    assert_eq!(err.to_string(), "job \"web\" is at version 1, not 7");
    let scaled = s.write(w(WriteOp::Scale(4), Some(1))).unwrap();
    assert_eq!(scaled.job.version, 2);
    assert_eq!(scaled.changes[0].field, "count");
    let h = s.history("web").unwrap();
    assert_eq!(
        h.iter().map(|e| e.op.as_str()).collect::<Vec<_>>(),
        ["create", "scale"]
    );
}
