//! Anti-entropy between two replicas, and pushes of fresh changes.
//!
//! A round, started by A with a random peer B:
//!
//! ```text
//! A -> B  Digest{root}                 B: same root? -> InSync  (in sync: ~20 bytes each way)
//!                                      otherwise    -> Buckets{256 digests}
//! A -> B  Heads{buckets where digests differ, A's heads of its docs there}
//!                                      B -> Changes{what A lacks, want: docs where A has more}
//! A -> B  Changes{what B lacks}        B -> Applied
//! ```
//!
//! A bucket's digest is the XOR of the fingerprints (hash of name and heads)
//! of the documents whose name hashes into it, so it is updated in O(1) per
//! change. Only documents in differing buckets are compared, and only the
//! changes the other lacks are sent (`save_after` its heads). A fresh change
//! is also pushed at once to a few random peers, each of which passes it on
//! once if it was new to it.

use std::collections::BTreeMap;

use automerge::ChangeHash;
use serde::{Deserialize, Serialize};
use shoal_gossip::NodeId;

use crate::store::{BUCKETS, Push, Store, bucket_of};

/// Most bytes of documents put in one message; the rest waits for the next
/// round.
pub const MAX_BATCH_BYTES: usize = 4 << 20;

/// A document's heads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocHeads {
    /// Job name.
    pub name: String,
    /// Change hashes.
    pub heads: Vec<[u8; 32]>,
}

/// Changes of a document (automerge bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocChanges {
    /// Job name.
    pub name: String,
    /// Changes.
    pub bytes: Vec<u8>,
}

/// A message that expects an answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncRequest {
    /// Start of a round: the sender's digest.
    Digest {
        /// XOR of all bucket digests.
        root: u64,
        /// Documents held.
        docs: u64,
    },
    /// The sender's heads of each document in `buckets`.
    Heads {
        /// Buckets whose digests differ.
        buckets: Vec<u16>,
        /// The sender's documents there.
        docs: Vec<DocHeads>,
    },
    /// Changes for the receiver. `forward`: pushed; pass on what is new.
    Changes {
        /// Documents.
        docs: Vec<DocChanges>,
        /// Pass new changes on to a few peers.
        forward: bool,
    },
}

/// The answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncResponse {
    /// Same digest: nothing to do.
    InSync,
    /// The receiver's bucket digests.
    Buckets {
        /// One per bucket.
        digests: Vec<u64>,
    },
    /// What the asker lacks, and the documents where it has more.
    Changes {
        /// Changes for the asker.
        docs: Vec<DocChanges>,
        /// The receiver's heads of documents it wants the asker's changes
        /// of.
        want: Vec<DocHeads>,
    },
    /// Changes applied; how many documents got something new.
    Applied {
        /// Documents with new changes.
        novel: u32,
    },
}

fn hashes(heads: &[[u8; 32]]) -> Vec<ChangeHash> {
    heads.iter().map(|h| ChangeHash(*h)).collect()
}

fn raw(heads: &[ChangeHash]) -> Vec<[u8; 32]> {
    heads.iter().map(|h| h.0).collect()
}

impl Store {
    /// Opens a round of anti-entropy.
    pub fn begin_round(&self) -> SyncRequest {
        SyncRequest::Digest {
            root: self.root_digest(),
            docs: self.docs.len() as u64,
        }
    }

    /// Answers a peer's request.
    pub fn handle_request(&mut self, from: NodeId, request: SyncRequest) -> SyncResponse {
        match request {
            SyncRequest::Digest { root, .. } => {
                if root == self.root_digest() {
                    SyncResponse::InSync
                } else {
                    SyncResponse::Buckets {
                        digests: self.buckets.clone(),
                    }
                }
            }
            SyncRequest::Heads { buckets, docs } => self.answer_heads(&buckets, docs),
            SyncRequest::Changes { docs, forward } => {
                let mut novel_docs = Vec::new();
                for d in docs {
                    if self.apply_changes(&d.name, &d.bytes, true) {
                        novel_docs.push(d);
                    }
                }
                let novel = u32::try_from(novel_docs.len()).unwrap_or(u32::MAX);
                if forward && !novel_docs.is_empty() {
                    self.pushes.push_back(Push {
                        docs: novel_docs,
                        except: Some(from),
                    });
                }
                SyncResponse::Applied { novel }
            }
        }
    }

    fn answer_heads(&mut self, buckets: &[u16], theirs: Vec<DocHeads>) -> SyncResponse {
        let wanted: Vec<bool> = {
            let mut w = vec![false; BUCKETS];
            for b in buckets {
                if let Some(slot) = w.get_mut(usize::from(*b)) {
                    *slot = true;
                }
            }
            w
        };
        let theirs: BTreeMap<String, Vec<[u8; 32]>> =
            theirs.into_iter().map(|d| (d.name, d.heads)).collect();
        let mut docs = Vec::new();
        let mut want = Vec::new();
        let mut size = 0;
        let names: Vec<String> = self
            .docs
            .keys()
            .filter(|n| wanted[bucket_of(n)])
            .cloned()
            .collect();
        for name in names {
            if size > MAX_BATCH_BYTES {
                break;
            }
            let jd = self.docs.get_mut(&name).expect("listed");
            match theirs.get(&name) {
                None => {
                    let bytes = jd.doc.save();
                    size += bytes.len();
                    docs.push(DocChanges { name, bytes });
                }
                Some(h) if *h == raw(&jd.heads) => {}
                Some(h) => {
                    let their = hashes(h);
                    let known: Vec<ChangeHash> = their
                        .iter()
                        .copied()
                        .filter(|x| jd.doc.get_change_by_hash(x).is_some())
                        .collect();
                    let bytes = jd.doc.save_after(&known);
                    let they_have_more = known.len() < their.len();
                    let heads = raw(&jd.heads);
                    if !bytes.is_empty() {
                        size += bytes.len();
                        docs.push(DocChanges {
                            name: name.clone(),
                            bytes,
                        });
                    }
                    if they_have_more {
                        want.push(DocHeads { name, heads });
                    }
                }
            }
        }
        for name in theirs.keys() {
            if !self.docs.contains_key(name) {
                want.push(DocHeads {
                    name: name.clone(),
                    heads: Vec::new(),
                });
            }
        }
        SyncResponse::Changes { docs, want }
    }

    /// Handles the answer to a request this node sent; returns the next
    /// request of the round, if any.
    pub fn handle_response(&mut self, from: NodeId, response: SyncResponse) -> Option<SyncRequest> {
        let _ = from;
        match response {
            SyncResponse::InSync | SyncResponse::Applied { .. } => None,
            SyncResponse::Buckets { digests } => {
                if digests.len() != BUCKETS {
                    self.reject("bad_buckets");
                    return None;
                }
                let differing: Vec<u16> = (0..BUCKETS)
                    .filter(|i| digests[*i] != self.buckets[*i])
                    .filter_map(|i| u16::try_from(i).ok())
                    .collect();
                let docs = self
                    .docs
                    .iter()
                    .filter(|(name, _)| {
                        u16::try_from(bucket_of(name)).is_ok_and(|b| differing.contains(&b))
                    })
                    .map(|(name, jd)| DocHeads {
                        name: name.clone(),
                        heads: raw(&jd.heads),
                    })
                    .collect();
                Some(SyncRequest::Heads {
                    buckets: differing,
                    docs,
                })
            }
            SyncResponse::Changes { docs, want } => {
                for d in docs {
                    self.apply_changes(&d.name, &d.bytes, true);
                }
                let mut out = Vec::new();
                let mut size = 0;
                for w in want {
                    if size > MAX_BATCH_BYTES {
                        break;
                    }
                    let Some(jd) = self.docs.get_mut(&w.name) else {
                        continue;
                    };
                    let known: Vec<ChangeHash> = hashes(&w.heads)
                        .into_iter()
                        .filter(|x| jd.doc.get_change_by_hash(x).is_some())
                        .collect();
                    let bytes = jd.doc.save_after(&known);
                    if !bytes.is_empty() {
                        size += bytes.len();
                        out.push(DocChanges {
                            name: w.name,
                            bytes,
                        });
                    }
                }
                (!out.is_empty()).then_some(SyncRequest::Changes {
                    docs: out,
                    forward: false,
                })
            }
        }
    }
}
