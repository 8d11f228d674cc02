//! Placement messages to peers: one ordered, bounded queue per peer, each
//! drained by a task that batches its messages into one RPC call.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use shoal_gossip::NodeId;
use shoal_placement::{Msg, PROTOCOL_VERSION};
use shoal_transport::{Service, Transport};
use tokio::sync::mpsc;
use tracing::debug;

use crate::placement::Batch;

/// Messages sent to one peer in one call, at most.
const BATCH: usize = 64;
/// Queued messages per peer before new ones are dropped.
const QUEUE: usize = 4096;

/// The queues of placement messages to live peers.
pub(super) struct PeerSenders {
    transport: Transport,
    /// RPC address of each live member.
    peers: BTreeMap<NodeId, SocketAddr>,
    senders: BTreeMap<NodeId, mpsc::Sender<Msg>>,
}

impl PeerSenders {
    pub(super) fn new(transport: Transport) -> PeerSenders {
        PeerSenders {
            transport,
            peers: BTreeMap::new(),
            senders: BTreeMap::new(),
        }
    }

    /// The live members now; the queues of members gone are dropped.
    pub(super) fn set_peers(&mut self, peers: BTreeMap<NodeId, SocketAddr>) {
        self.peers = peers;
        self.senders.retain(|id, _| self.peers.contains_key(id));
    }

    /// `id` restarted: its old connection and queue are dead.
    pub(super) fn restarted(&mut self, id: NodeId, rpc: SocketAddr) {
        self.transport.disconnect(rpc);
        self.senders.remove(&id);
    }

    /// Queues a message to a peer; one sender per peer keeps them in order
    /// and batches them. A lost message is a missing bid or a late lease:
    /// the placer copes.
    pub(super) fn send(&mut self, to: NodeId, msg: Msg) {
        let Some(addr) = self.peers.get(&to).copied() else {
            debug!(to = %to, "message to an unknown peer dropped");
            return;
        };
        let transport = &self.transport;
        let tx = self.senders.entry(to).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(peer_sender(transport.clone(), to, addr, rx));
            tx
        });
        if let Err(e) = tx.try_send(msg) {
            let msg = e.into_inner();
            debug!(to = %to, msg = msg.kind(), "placement queue full; message dropped");
        }
    }
}

async fn peer_sender(
    transport: Transport,
    to: NodeId,
    addr: SocketAddr,
    mut rx: mpsc::Receiver<Msg>,
) {
    while let Some(first) = rx.recv().await {
        let mut msgs = vec![first];
        while msgs.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => msgs.push(m),
                Err(_) => break,
            }
        }
        let body = postcard::to_allocvec(&Batch {
            version: PROTOCOL_VERSION,
            msgs,
        })
        .expect("batches encode");
        if let Err(e) = transport.request(to, addr, Service::Placement, &body).await {
            debug!(to = %to, error = %e, "placement messages lost");
        }
    }
}
