//! Jobs a job waits for (`after`): the record that each was ready.
//!
//! A job with `after = ["db/primary"]` is not placed until every job it
//! names has been ready once (see `shoal_model::JobSpec::after`). The node
//! that drives the job (the owner of its job key) checks, and writes one
//! root key per job found ready, `ready/<name>`, holding `{node, at_ms}`.
//! Records of different jobs never touch the same key, so concurrent ones
//! merge; a second record of the same job says the same. A record stays:
//! once its dependencies were ready, the job runs like any other, and a
//! later failure of one of them stops nothing. Like batch records, a
//! record adds no history entry.

use std::collections::BTreeSet;

use automerge::{AutoCommit, ROOT, ReadDoc};
use serde_json::json;

use crate::jsondoc;

/// Root key prefix of the records.
const READY: &str = "ready/";

/// The jobs recorded ready in the document.
pub(crate) fn read(doc: &AutoCommit) -> BTreeSet<String> {
    doc.keys(ROOT)
        .filter_map(|k| k.strip_prefix(READY).map(str::to_owned))
        .collect()
}

/// Writes the record that `dep` was found ready (not committed).
pub(crate) fn put(
    doc: &mut AutoCommit,
    dep: &str,
    node: &str,
    at_ms: u64,
) -> Result<(), automerge::AutomergeError> {
    jsondoc::put(
        doc,
        &ROOT,
        format!("{READY}{dep}"),
        &json!({"node": node, "at_ms": at_ms}),
    )
}
