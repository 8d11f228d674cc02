//! The jobs one placer knows, each held once.
//!
//! Every node knows every job (the desired state is replicated to all), so
//! what a placer keeps per job is multiplied by the number of jobs on every
//! node, and in the simulator by the number of nodes as well. A map keyed
//! by name would hold each name twice (the key beside the spec's own) and
//! the time the job last changed in a second map keyed by name again; this
//! table holds one entry per job, ordered and looked up by the spec's name.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeSet;

use shoal_gossip::Instant;

use crate::placer::Job;

/// A job and when this placer last saw it change.
#[derive(Clone, Debug)]
struct Known {
    job: Job,
    /// When its version or its deletion last changed here: keys of a job
    /// that changed since the ring did are not inherited from the previous
    /// coordinator (see `Coordinator::note_new_keys`).
    changed_at: Instant,
}

impl Known {
    fn name(&self) -> &str {
        &self.job.spec.name
    }
}

impl Borrow<str> for Known {
    fn borrow(&self) -> &str {
        self.name()
    }
}

impl PartialEq for Known {
    fn eq(&self, other: &Known) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Known {}

impl PartialOrd for Known {
    fn partial_cmp(&self, other: &Known) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// By name alone: the table holds one entry per name.
impl Ord for Known {
    fn cmp(&self, other: &Known) -> Ordering {
        self.name().cmp(other.name())
    }
}

/// Jobs by name.
#[derive(Clone, Debug, Default)]
pub(crate) struct JobTable {
    set: BTreeSet<Known>,
}

impl JobTable {
    /// The job named `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Job> {
        self.set.get(name).map(|k| &k.job)
    }

    /// Whether a job named `name` is known.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.set.contains(name)
    }

    /// When the job named `name` last changed here.
    pub(crate) fn changed_at(&self, name: &str) -> Option<Instant> {
        self.set.get(name).map(|k| k.changed_at)
    }

    /// When the job held under `job`'s name last changed, if it is the
    /// same as `job` in what placement acts on (its version and its
    /// deletion); `None` if it differs or none is held.
    pub(crate) fn unchanged_since(&self, job: &Job) -> Option<Instant> {
        self.set
            .get(job.spec.name.as_str())
            .filter(|k| k.job.version == job.version && k.job.deleted == job.deleted)
            .map(|k| k.changed_at)
    }

    /// Holds `job` under its name, replacing what was there, as last
    /// changed at `changed_at`.
    pub(crate) fn put(&mut self, job: Job, changed_at: Instant) {
        self.set.replace(Known { job, changed_at });
    }

    /// Forgets the job named `name`; whether it was held.
    pub(crate) fn remove(&mut self, name: &str) -> bool {
        self.set.remove(name)
    }

    /// Names, in order.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.set.iter().map(Known::name)
    }

    /// Jobs, in name order.
    pub(crate) fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.set.iter().map(|k| &k.job)
    }

    /// Number of jobs.
    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use shoal_model::JobSpec;

    use super::*;

    fn job(name: &str, version: u64) -> Job {
        let spec = JobSpec::from_json(serde_json::json!({
            "name": name,
            "task": {"runtime": "process", "command": "/bin/true"},
        }))
        .expect("valid spec");
        Job {
            spec: Arc::new(spec),
            version,
            deleted: false,
            run_version: version,
            finished: Arc::default(),
            deployment: None,
            waiting: Default::default(),
        }
    }

    #[test]
    fn one_entry_per_name_found_by_name_in_name_order() {
        let t0 = Instant::ZERO;
        let t1 = t0 + Duration::from_secs(1);
        let mut table = JobTable::default();
        table.put(job("web", 1), t0);
        table.put(job("api", 1), t0);
        assert_eq!(table.unchanged_since(&job("web", 2)), None);
        assert_eq!(table.unchanged_since(&job("web", 1)), Some(t0));
        assert_eq!(table.unchanged_since(&job("db", 1)), None);
        table.put(job("web", 2), t1);
        assert_eq!(table.len(), 2);
        assert_eq!(table.get("web").map(|j| j.version), Some(2));
        assert_eq!(table.changed_at("web"), Some(t1));
        assert_eq!(table.changed_at("api"), Some(t0));
        assert_eq!(table.names().collect::<Vec<_>>(), ["api", "web"]);
        assert!(table.remove("api"));
        assert!(!table.remove("api"));
        assert!(!table.contains("api"));
        assert_eq!(table.jobs().map(|j| j.version).collect::<Vec<_>>(), [2]);
    }
}
