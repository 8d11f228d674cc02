//! From the desired state's view of a job to what the placer works from.

use std::sync::Arc;

use serde::Deserialize;
use shoal_model::JobSpec;
use shoal_placement::Job;

/// What the placer should work from: the job's spec, or nothing when the
/// job's document holds no valid spec. A job whose concurrent edits merged
/// into an invalid spec is not run until someone writes a valid one (every
/// node decides the same from the same replica, whatever it saw before);
/// a deleted one is kept, so that its tasks stop. The job comes with no
/// finished task, and as a run of its own: set [`Job::finished`] and
/// [`Job::run_version`] from the job's records.
pub fn placeable(
    spec: &serde_json::Value,
    version: u64,
    deleted: bool,
    invalid: bool,
) -> Option<Job> {
    if invalid && !deleted {
        return None;
    }
    let spec = JobSpec::deserialize(spec).ok()?;
    Some(Job {
        spec: Arc::new(spec),
        version,
        deleted,
        run_version: version,
        finished: Arc::default(),
        waiting: Arc::default(),
        deployment: None,
    })
}
