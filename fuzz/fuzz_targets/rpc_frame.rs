//! An RPC request frame from a peer: the header, then the body of the
//! service it names, decoded and handed to the pure code that serves it
//! (the replica for state sync, the placer for placement batches). A
//! member of the cluster (the only one mTLS lets in) cannot crash a node.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_gossip::{Instant, NodeId};
use shoal_placement::{Msg, PlacementConfig, Placer, Resources};
use shoal_state::{StateConfig, Store, SyncRequest, SyncResponse};
use shoal_transport::{Service, decode_request};

static DEFAULT_HOOK: std::sync::Once = std::sync::Once::new();

fuzz_target!(|data: &[u8]| {
    // The replica catches automerge's own panics on malformed changes
    // (node/tests/fuzz_regressions.rs); libfuzzer-sys's panic hook would
    // abort on those caught ones too. The default hook lets them be caught;
    // a panic that escapes this closure still aborts the run as a crash.
    DEFAULT_HOOK.call_once(|| drop(std::panic::take_hook()));
    let Ok(request) = decode_request(data) else {
        return;
    };
    let from = request.from;
    match request.service {
        Service::State => {
            let mut store = Store::new(NodeId(1), 1, StateConfig::default());
            if let Ok(r) = postcard::from_bytes::<SyncRequest>(request.body) {
                let _ = store.handle_request(from, r);
            } else if let Ok(r) = postcard::from_bytes::<SyncResponse>(request.body) {
                let _ = store.handle_response(from, r);
            }
            while store.poll_persist().is_some() {}
            while store.poll_push().is_some() {}
            while store.poll_event().is_some() {}
        }
        Service::Placement => {
            // The agent's placement batch: a version byte, then messages.
            let Ok((_version, msgs)) = postcard::from_bytes::<(u8, Vec<Msg>)>(request.body) else {
                return;
            };
            let capacity = Resources {
                cpus_milli: 2000,
                memory_mb: 1024,
                disk_mb: 10_000,
                gpus: 0,
            };
            let mut placer = Placer::new(
                NodeId(1),
                PlacementConfig::default(),
                capacity,
                Instant::ZERO,
            );
            let mut now = Instant::ZERO;
            for msg in msgs {
                now = now + std::time::Duration::from_millis(10);
                placer.handle_message(now, 1_700_000_000_000, from, msg);
            }
            placer.handle_tick(now + std::time::Duration::from_secs(1), 1_700_000_001_000);
            while placer.poll_message().is_some() {}
            while placer.poll_command().is_some() {}
            while placer.poll_event().is_some() {}
        }
        Service::Tasks | Service::Packages => {}
    }
});
