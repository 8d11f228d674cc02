//! Start-up phase: the desired-state replica from the data dir (snapshot
//! then change log); a damaged file is reported, moved aside, and what it
//! lacks is recovered from peers.

use shoal_gossip::NodeId;
use shoal_state::{PersistOp, StateConfig, Store};
use tracing::{error, info, warn};

use super::AgentError;
use crate::clock::unix_ms;
use crate::datadir::DataDir;
use crate::statelog::StateLog;

/// Loads the replica and opens its log; `true` when recovering from
/// damage.
pub(super) fn load(
    data_dir: &DataDir,
    node_id: NodeId,
    bump: u32,
) -> Result<(Store, StateLog, bool), AgentError> {
    let load_started = std::time::Instant::now();
    let (mut log, loaded) = StateLog::open(data_dir.path(), unix_ms() / 1000)?;
    let records = loaded.records.len();
    let mut store = restore_store(node_id, bump, loaded.records);
    let recovering = !loaded.damaged.is_empty();
    for damage in &loaded.damaged {
        error!(
            file = %damage.path.display(),
            moved_to = ?damage.moved_to,
            problem = %damage.what,
            records_kept = damage.records_read,
            "state file is damaged; recovering the rest from peers"
        );
    }
    if loaded.torn_bytes > 0 {
        warn!(
            bytes = loaded.torn_bytes,
            "cut an incomplete last record from the state log (a write interrupted by a crash, never acknowledged)"
        );
    }
    if recovering {
        // Make what could be read durable again before anything else.
        log.compact(&store.snapshot())?;
    }
    info!(
        jobs = store.doc_count(),
        records,
        took_ms = load_started.elapsed().as_millis(),
        "desired state loaded"
    );
    Ok((store, log, recovering))
}

/// Loads the replica from its records, on as many threads as there are
/// cores (automerge's decoding dominates start-up: ~0.1 ms per job), and
/// reads each job's view once (lists of every job then copy none).
fn restore_store(node_id: NodeId, bump: u32, records: Vec<PersistOp>) -> Store {
    let new = || Store::new(node_id, bump, StateConfig::default());
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(8);
    if threads == 1 || records.len() < 1000 {
        let mut store = new();
        for record in records {
            store.restore(record);
        }
        store.jobs_shared(true);
        return store;
    }
    let mut shards: Vec<Vec<PersistOp>> = (0..threads).map(|_| Vec::new()).collect();
    for record in records {
        shards[Store::shard_of(record.name(), threads)].push(record);
    }
    let parts: Vec<Store> = std::thread::scope(|s| {
        let handles: Vec<_> = shards
            .into_iter()
            .map(|shard| {
                s.spawn(move || {
                    let mut part = new();
                    for record in shard {
                        part.restore(record);
                    }
                    // Each job's view read here, in parallel, rather than
                    // by the first request that lists every job.
                    part.jobs_shared(true);
                    part
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a restore thread panicked"))
            .collect()
    });
    let mut store = new();
    for part in parts {
        store.absorb(part);
    }
    store
}
