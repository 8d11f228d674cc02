//! Keys, resources, nodes, stamps.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use shoal_gossip::NodeId;

/// Seed of task key hashes.
pub const KEY_SEED: u64 = 0x5348_4f41_4c4b_4559; // "SHOALKEY"

/// Room on the stack for a key's text when hashing it; longer keys are
/// hashed from a heap copy.
const KEY_TEXT_BUF: usize = 128;

/// Which task of a job.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Slot {
    /// Task `index` of a service or batch job (0-based).
    Index(u32),
    /// The task of a system job on one node.
    Node(NodeId),
}

/// A task: `job/index`, or `job@node` for system jobs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskKey {
    /// Job name.
    pub job: String,
    /// Which task.
    pub slot: Slot,
}

impl TaskKey {
    /// Task `index` of `job`.
    pub fn index(job: &str, index: u32) -> TaskKey {
        TaskKey {
            job: job.to_owned(),
            slot: Slot::Index(index),
        }
    }

    /// The system task of `job` on `node`.
    pub fn system(job: &str, node: NodeId) -> TaskKey {
        TaskKey {
            job: job.to_owned(),
            slot: Slot::Node(node),
        }
    }

    /// The index, for service and batch tasks.
    pub fn index_number(&self) -> Option<u32> {
        match self.slot {
            Slot::Index(i) => Some(i),
            Slot::Node(_) => None,
        }
    }

    /// Where the key falls on the ring (xxh3 of its text form, fixed seed).
    pub fn hash(&self) -> u64 {
        self.hash_with(&[])
    }

    /// The hash of the key's text followed by `suffix`: the same as
    /// hashing `format!("{self}")` and `suffix` concatenated, without
    /// allocating (this runs on every ring lookup of a key).
    pub fn hash_with(&self, suffix: &[u8]) -> u64 {
        let mut buf = [0u8; KEY_TEXT_BUF];
        match self.text_into(&mut buf, suffix) {
            Some(len) => xxhash_rust::xxh3::xxh3_64_with_seed(&buf[..len], KEY_SEED),
            None => {
                let mut bytes = self.to_string().into_bytes();
                bytes.extend_from_slice(suffix);
                xxhash_rust::xxh3::xxh3_64_with_seed(&bytes, KEY_SEED)
            }
        }
    }

    /// Writes the key's text (its `Display`) and `suffix` into `buf`;
    /// `None` when they do not fit.
    fn text_into(&self, buf: &mut [u8; KEY_TEXT_BUF], suffix: &[u8]) -> Option<usize> {
        use std::io::Write;
        let mut rest = &mut buf[..];
        write!(rest, "{self}").ok()?;
        rest.write_all(suffix).ok()?;
        Some(KEY_TEXT_BUF - rest.len())
    }

    /// Parses `job/index` or `job@<node id>`.
    pub fn parse(s: &str) -> Option<TaskKey> {
        if let Some((job, node)) = s.rsplit_once('@') {
            return node.parse().ok().map(|n| TaskKey::system(job, n));
        }
        let (job, index) = s.rsplit_once('/')?;
        index.parse().ok().map(|i| TaskKey::index(job, i))
    }
}

impl fmt::Display for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.slot {
            Slot::Index(i) => write!(f, "{}/{}", self.job, i),
            Slot::Node(n) => write!(f, "{}@{}", self.job, n),
        }
    }
}

/// An amount of resources.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Resources {
    /// Thousandths of a core.
    pub cpus_milli: u64,
    /// MiB.
    pub memory_mb: u64,
    /// MiB.
    pub disk_mb: u64,
    /// GPUs.
    pub gpus: u64,
}

fn cores(milli: u64) -> String {
    let whole = milli / 1000;
    let frac = milli % 1000;
    if frac == 0 {
        format!("{whole}")
    } else {
        let s = format!("{whole}.{frac:03}");
        s.trim_end_matches('0').to_owned()
    }
}

impl Resources {
    /// The demand of a task spec.
    pub fn of_task(r: &shoal_model::Resources) -> Resources {
        Resources {
            cpus_milli: u64::from(r.cpus_milli()),
            memory_mb: r.memory_mb,
            disk_mb: r.disk_mb,
            gpus: u64::from(r.gpus),
        }
    }

    /// `self + other`.
    pub fn plus(&self, o: &Resources) -> Resources {
        Resources {
            cpus_milli: self.cpus_milli + o.cpus_milli,
            memory_mb: self.memory_mb + o.memory_mb,
            disk_mb: self.disk_mb + o.disk_mb,
            gpus: self.gpus + o.gpus,
        }
    }

    /// `self - other`, floored at zero.
    pub fn minus(&self, o: &Resources) -> Resources {
        Resources {
            cpus_milli: self.cpus_milli.saturating_sub(o.cpus_milli),
            memory_mb: self.memory_mb.saturating_sub(o.memory_mb),
            disk_mb: self.disk_mb.saturating_sub(o.disk_mb),
            gpus: self.gpus.saturating_sub(o.gpus),
        }
    }

    /// Whether `demand` fits in `self` (free); if not, what is short, as
    /// "needs 4 cpus, 1.5 free".
    pub fn fits(&self, demand: &Resources) -> Result<(), String> {
        if demand.cpus_milli > self.cpus_milli {
            return Err(format!(
                "needs {} cpus, {} free",
                cores(demand.cpus_milli),
                cores(self.cpus_milli)
            ));
        }
        if demand.memory_mb > self.memory_mb {
            return Err(format!(
                "needs {} MiB memory, {} free",
                demand.memory_mb, self.memory_mb
            ));
        }
        if demand.disk_mb > self.disk_mb {
            return Err(format!(
                "needs {} MiB disk, {} free",
                demand.disk_mb, self.disk_mb
            ));
        }
        if demand.gpus > self.gpus {
            return Err(format!("needs {} gpus, {} free", demand.gpus, self.gpus));
        }
        Ok(())
    }

    /// Fraction of `self` left free after `used` is taken, of the scarcer of
    /// CPU and memory, in thousandths.
    pub fn free_permille(&self, used: &Resources) -> u64 {
        let part = |total: u64, u: u64| {
            (total.saturating_sub(u) * 1000)
                .checked_div(total)
                .unwrap_or(1000)
        };
        part(self.cpus_milli, used.cpus_milli).min(part(self.memory_mb, used.memory_mb))
    }
}

/// What placement needs to know about a member.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node id.
    pub id: NodeId,
    /// Name (for reasons shown to people).
    pub name: String,
    /// Datacenter.
    pub dc: String,
    /// Zone.
    pub zone: String,
    /// Region.
    pub region: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Resources offered for tasks (capacity minus the node's reserve).
    pub capacity: Resources,
    /// Coarse free capacity, eighths (8 = idle).
    pub free_class: u8,
    /// Runtimes it can run.
    pub runtimes: Vec<String>,
    /// Not taking new tasks.
    pub draining: bool,
}

impl NodeInfo {
    /// What placement needs of a member, from the metadata it gossips (the
    /// agent and the simulator build it the same way).
    pub fn from_meta(id: NodeId, meta: &shoal_gossip::MemberMeta) -> NodeInfo {
        NodeInfo {
            id,
            name: meta.name.clone(),
            dc: meta.dc.clone(),
            zone: meta.zone.clone(),
            region: meta.region.clone(),
            labels: meta.labels.clone(),
            capacity: Resources {
                cpus_milli: u64::from(meta.capacity.cpus_milli),
                memory_mb: meta.capacity.memory_mb,
                disk_mb: meta.capacity.disk_mb,
                gpus: u64::from(meta.capacity.gpus),
            },
            free_class: meta.free_class.0,
            runtimes: meta.runtimes.iter().map(|r| r.name.clone()).collect(),
            draining: meta.draining,
        }
    }
}

impl NodeInfo {
    /// The value of a constraint attribute on this node.
    pub fn attribute(&self, key: &str) -> Option<String> {
        match key {
            "name" => Some(self.name.clone()),
            "id" => Some(self.id.to_string()),
            "dc" => Some(self.dc.clone()),
            "zone" => Some(self.zone.clone()),
            "region" => Some(self.region.clone()),
            other => self.labels.get(other).cloned(),
        }
    }

    /// Whether the node can run a task of `spec` at all, judging from what
    /// gossip says (constraints, runtime, draining, coarse free capacity).
    /// `Err` is the reason.
    pub fn eligible(&self, spec: &shoal_model::JobSpec, demand: &Resources) -> Result<(), String> {
        if self.draining {
            return Err("draining".into());
        }
        for c in &spec.constraints {
            c.check(|k| self.attribute(k))?;
        }
        let runtime = spec.task.runtime.as_str();
        if !self.runtimes.iter().any(|r| r == runtime) {
            return Err(format!("no {runtime} runtime"));
        }
        self.capacity.fits(demand)?;
        // The free class is coarse: a class of c means less than (c+1)/8
        // free, so that is all that can be ruled out.
        let upper = |total: u64| total * (u64::from(self.free_class) + 1) / 8;
        let at_most = Resources {
            cpus_milli: upper(self.capacity.cpus_milli),
            memory_mb: upper(self.capacity.memory_mb),
            disk_mb: self.capacity.disk_mb,
            gpus: self.capacity.gpus,
        };
        if self.free_class < 8
            && let Err(why) = at_most.fits(demand)
        {
            // Gossip tells free capacity in eighths: say "less than".
            return Err(why.replace(", ", ", less than "));
        }
        Ok(())
    }
}

/// A hybrid logical clock stamp: wall-clock milliseconds, a counter, the
/// node. Awards carry one; when two nodes hold the same task, the later
/// award wins, on every node alike.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Stamp {
    /// Milliseconds since the Unix epoch (as the issuing node saw them).
    pub wall_ms: u64,
    /// Orders stamps within one millisecond.
    pub counter: u32,
    /// Issuer.
    pub node: NodeId,
}

/// Issues stamps that grow even when the wall clock does not, and that
/// follow stamps seen from others.
#[derive(Clone, Copy, Debug, Default)]
pub struct Hlc {
    wall_ms: u64,
    counter: u32,
}

impl Hlc {
    /// A new stamp at `wall_ms`.
    pub fn tick(&mut self, wall_ms: u64, node: NodeId) -> Stamp {
        if wall_ms > self.wall_ms {
            self.wall_ms = wall_ms;
            self.counter = 0;
        } else {
            self.counter += 1;
        }
        Stamp {
            wall_ms: self.wall_ms,
            counter: self.counter,
            node,
        }
    }

    /// Takes a stamp seen from another node into account.
    pub fn observe(&mut self, s: &Stamp) {
        if (s.wall_ms, s.counter) > (self.wall_ms, self.counter) {
            self.wall_ms = s.wall_ms;
            self.counter = s.counter;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_hashes_as_its_text_without_allocating() {
        let long = "j".repeat(200);
        let keys = [
            TaskKey::index("web", 0),
            TaskKey::index("web/frontend", 7),
            TaskKey::index("batch", u32::MAX),
            TaskKey::index("", 1_000_000),
            TaskKey::system("logs", NodeId(0x1234_abcd)),
            TaskKey::system("logs", NodeId(u64::MAX)),
            TaskKey::index(&"x".repeat(KEY_TEXT_BUF - 11), 1_234_567_890),
            TaskKey::index(&long, 3),
            TaskKey::system(&long, NodeId(9)),
        ];
        for k in keys {
            let text = k.to_string();
            assert_eq!(
                k.hash(),
                xxhash_rust::xxh3::xxh3_64_with_seed(text.as_bytes(), KEY_SEED),
                "{text}"
            );
            let mut with = text.into_bytes();
            with.extend_from_slice(&42u64.to_be_bytes());
            assert_eq!(
                k.hash_with(&42u64.to_be_bytes()),
                xxhash_rust::xxh3::xxh3_64_with_seed(&with, KEY_SEED)
            );
        }
    }

    #[test]
    fn keys_print_and_parse() {
        let k = TaskKey::index("web/frontend", 3);
        assert_eq!(k.to_string(), "web/frontend/3");
        assert_eq!(TaskKey::parse("web/frontend/3"), Some(k.clone()));
        let s = TaskKey::system("logs", NodeId(0xab));
        assert_eq!(s.to_string(), "logs@00000000000000ab");
        assert_eq!(TaskKey::parse(&s.to_string()), Some(s));
        assert_ne!(k.hash(), TaskKey::index("web/frontend", 4).hash());
        // A specified hash: two builds agree.
        assert_eq!(
            TaskKey::index("web", 0).hash(),
            TaskKey::index("web", 0).hash()
        );
    }

    #[test]
    fn fit_reasons_read_well() {
        let free = Resources {
            cpus_milli: 1500,
            memory_mb: 512,
            disk_mb: 0,
            gpus: 0,
        };
        let demand = Resources {
            cpus_milli: 4000,
            ..Default::default()
        };
        assert_eq!(free.fits(&demand).unwrap_err(), "needs 4 cpus, 1.5 free");
        assert!(
            free.fits(&Resources {
                cpus_milli: 500,
                memory_mb: 128,
                ..Default::default()
            })
            .is_ok()
        );
    }

    #[test]
    fn hlc_grows() {
        let mut h = Hlc::default();
        let a = h.tick(100, NodeId(1));
        let b = h.tick(100, NodeId(1));
        let c = h.tick(50, NodeId(1));
        assert!(a < b && b < c);
        h.observe(&Stamp {
            wall_ms: 200,
            counter: 5,
            node: NodeId(2),
        });
        assert!(
            h.tick(150, NodeId(1))
                > Stamp {
                    wall_ms: 200,
                    counter: 5,
                    node: NodeId(2)
                }
        );
    }
}
