//! Inputs the fuzz targets (`fuzz/`) found crashing, kept as tests: each
//! goes through the same decoding as its target and must be refused, not
//! panic (docs/security.md, "Fuzzing").

use shoal_gossip::NodeId;
use shoal_state::{StateConfig, Store, SyncRequest, SyncResponse};

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// `rpc_frame`, 2026-12-04: a state-sync frame whose change bytes make
/// automerge 0.12 panic (an `unwrap` on `None` in hexane's RLE decoder,
/// under `load_incremental`) instead of returning an error.
const AUTOMERGE_RLE_PANIC: &str = "0000000210106d00024c31010000030000010000002d0000000000000000000007000000000003100000000000000000000000000000020606060606060606060630303030303030856f4a83d9ff0200031200000003000200002301cf0a0000002a0400000000000000000000000000000000000000003b000126000003";

#[test]
fn a_sync_frame_automerge_cannot_read_is_rejected_not_a_panic() {
    let frame = unhex(AUTOMERGE_RLE_PANIC);
    let request = shoal_transport::decode_request(&frame).expect("the header decodes");
    let mut store = Store::new(NodeId(1), 1, StateConfig::default());
    if let Ok(r) = postcard::from_bytes::<SyncRequest>(request.body) {
        let _ = store.handle_request(request.from, r);
    } else if let Ok(r) = postcard::from_bytes::<SyncResponse>(request.body) {
        let _ = store.handle_response(request.from, r);
    } else {
        panic!("the body no longer decodes as a sync message: the regression tests nothing");
    }
    assert!(
        store.rejected().contains_key("undecodable"),
        "{:?}",
        store.rejected()
    );
    assert_eq!(store.doc_count(), 0);
}
