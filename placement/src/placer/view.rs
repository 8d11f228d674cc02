//! The members a placer knows, and the ring built over them.
//!
//! Contract: a [`View`] is a value; placers that see the same members may
//! share one ([`Placer::set_view`](super::Placer::set_view)). Its ring is
//! built lazily and, once built, updated in place as members come and go,
//! with the same result as building it whole. A [`RingShare`] lets the
//! placers of one process hold one ring per distinct member set.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use shoal_gossip::{NodeId, Packed};

use crate::ring::Ring;
use crate::types::NodeInfo;

/// The members a placer knows and their ring. Placers that see the same
/// members may share one (see [`Placer::set_view`](super::Placer::set_view)).
///
/// Records are shared pointers so that a change to one member's record
/// copies no other. The ring is built the first time it is needed (a placer
/// with nothing to place never needs it) and kept up to date from then on;
/// placers of one process can hold one copy of equal rings (the
/// simulator's full mode runs thousands:
/// [`Placer::share_rings`](super::Placer::share_rings)).
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Packed as it grows (members mostly come in id order).
    members: Packed<NodeId, Arc<NodeInfo>>,
    ring: OnceLock<Arc<Ring>>,
    vnodes: u32,
    /// [`View::fingerprint`], kept as members come and go.
    fingerprint: u128,
    /// Members per datacenter, kept as members come and go (a job's
    /// `on_dc_loss` asks whether any of its datacenters has one).
    dcs: BTreeMap<String, u32>,
}

fn count_dcs(members: &Packed<NodeId, Arc<NodeInfo>>) -> BTreeMap<String, u32> {
    let mut dcs: BTreeMap<String, u32> = BTreeMap::new();
    for m in members.values() {
        *dcs.entry(m.dc.clone()).or_default() += 1;
    }
    dcs
}

fn uncount(dcs: &mut BTreeMap<String, u32>, dc: &str) {
    if let Some(n) = dcs.get_mut(dc) {
        *n -= 1;
        if *n == 0 {
            dcs.remove(dc);
        }
    }
}

/// Seed of member-set fingerprints.
const FINGERPRINT_SEED: u64 = 0x5348_4f41_4c46_5052; // "SHOALFPR"

fn id_print(id: NodeId) -> u128 {
    xxhash_rust::xxh3::xxh3_128_with_seed(&id.0.to_be_bytes(), FINGERPRINT_SEED)
}

impl View {
    /// The view of `members`, with `vnodes` ring points each (use the
    /// placers' [`PlacementConfig::vnodes`](crate::PlacementConfig::vnodes)).
    pub fn new(members: Vec<NodeInfo>, vnodes: u32) -> View {
        let members: Packed<NodeId, Arc<NodeInfo>> =
            members.into_iter().map(|m| (m.id, Arc::new(m))).collect();
        let fingerprint = members.keys().fold(0, |f, id| f ^ id_print(*id));
        let dcs = count_dcs(&members);
        View {
            members,
            ring: OnceLock::new(),
            vnodes,
            fingerprint,
            dcs,
        }
    }

    /// Whether some member is in one of `dcs`.
    pub fn has_member_in(&self, dcs: &[String]) -> bool {
        dcs.iter().any(|d| self.dcs.contains_key(d))
    }

    /// Whether member `info` may take a task of `spec` needing `demand`:
    /// [`NodeInfo::eligible`], and the job's datacenters. A node outside
    /// them takes none of its tasks, unless none of them has a member and
    /// the job's `on_dc_loss` is `move`.
    pub fn eligible(
        &self,
        info: &NodeInfo,
        spec: &shoal_model::JobSpec,
        demand: &crate::types::Resources,
    ) -> Result<(), String> {
        if !spec.datacenters.is_empty() && !spec.datacenters.contains(&info.dc) {
            let list = spec.datacenters.join(", ");
            if !self.has_member_in(&spec.datacenters) {
                if spec.on_dc_loss == shoal_model::DcLoss::Wait {
                    return Err(format!(
                        "no live node is in the job's datacenters ({list}) and on_dc_loss is \"wait\""
                    ));
                }
            } else {
                return Err(format!(
                    "in datacenter {}, not one of the job's ({list})",
                    info.dc
                ));
            }
        }
        info.eligible(spec, demand)
    }

    /// The ring.
    pub fn ring(&self) -> &Ring {
        self.ring_with(None)
    }

    /// The ring, from `share` when it is built here.
    pub(super) fn ring_with(&self, share: Option<&Arc<dyn RingShare>>) -> &Ring {
        self.ring.get_or_init(|| {
            let mut build = || Ring::new(self.members.keys().copied(), self.vnodes);
            match share {
                Some(share) => share.ring(self.fingerprint, &mut build),
                None => Arc::new(build()),
            }
        })
    }

    /// This view without the members `gone`: their records are shared
    /// with this view, the ring is built when first needed.
    pub fn without(&self, gone: &[NodeId]) -> View {
        let mut members = self.members.clone();
        let mut fingerprint = self.fingerprint;
        let mut dcs = self.dcs.clone();
        for id in gone {
            if let Some(old) = members.remove(id) {
                fingerprint ^= id_print(*id);
                uncount(&mut dcs, &old.dc);
            }
        }
        View {
            members,
            ring: OnceLock::new(),
            vnodes: self.vnodes,
            fingerprint,
            dcs,
        }
    }

    /// Whether both hold the same member ids (by fingerprint and count).
    pub(super) fn same_ids(&self, other: &View) -> bool {
        self.fingerprint == other.fingerprint && self.members.len() == other.members.len()
    }

    /// A member.
    pub fn member(&self, id: NodeId) -> Option<&NodeInfo> {
        self.members.get(&id).map(|m| &**m)
    }

    /// Whether `id` is a member.
    pub(super) fn contains(&self, id: NodeId) -> bool {
        self.members.contains_key(&id)
    }

    /// The member ids, in order.
    pub(super) fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members.keys().copied()
    }

    /// Takes the records of `other`, a view of the same member ids
    /// ([`same_ids`](Self::same_ids)): the ring stays as it is.
    pub(super) fn take_records(&mut self, other: View) {
        self.members = other.members;
        self.dcs = other.dcs;
    }

    /// Applies a change of the member list: `changed` records (new members,
    /// or new metadata of known ones) and `gone` members, updating the ring
    /// if it is built (through `share` when given).
    pub(super) fn apply(
        &mut self,
        changed: Vec<Arc<NodeInfo>>,
        gone: &[NodeId],
        share: Option<&Arc<dyn RingShare>>,
    ) -> Applied {
        let mut removed = Vec::new();
        for id in gone {
            if let Some(old) = self.members.remove(id) {
                self.fingerprint ^= id_print(*id);
                uncount(&mut self.dcs, &old.dc);
                removed.push(*id);
            }
        }
        let mut added = Vec::new();
        let mut roomier = Vec::new();
        for info in changed {
            let id = info.id;
            *self.dcs.entry(info.dc.clone()).or_default() += 1;
            match self.members.insert(id, info) {
                None => {
                    self.fingerprint ^= id_print(id);
                    added.push(id);
                }
                Some(old) => {
                    uncount(&mut self.dcs, &old.dc);
                    let new = &self.members[&id];
                    if new.free_class > old.free_class || (old.draining && !new.draining) {
                        roomier.push(id);
                    }
                }
            }
        }
        self.members.pack();
        let ring_changed = !added.is_empty() || !removed.is_empty();
        if ring_changed {
            self.update_ring(&added, &removed, share);
        }
        Applied {
            ring_changed,
            roomier,
        }
    }

    /// A 128-bit fingerprint of the member set: equal sets give equal
    /// fingerprints and hence equal rings (two different sets collide with
    /// odds of about 2^-128).
    pub fn fingerprint(&self) -> u128 {
        self.fingerprint
    }

    /// Brings a ring already built up to date after members were `added`
    /// and `removed` (a ring not built yet is built when first needed).
    fn update_ring(
        &mut self,
        added: &[NodeId],
        removed: &[NodeId],
        share: Option<&Arc<dyn RingShare>>,
    ) {
        let Some(mut ring) = self.ring.take() else {
            return;
        };
        let vnodes = self.vnodes;
        let apply = |ring: &mut Ring| {
            for id in removed {
                ring.remove(*id);
            }
            for id in added {
                ring.insert(*id, vnodes);
            }
        };
        let ring = match share {
            Some(share) => share.ring(self.fingerprint, &mut || {
                let mut next = Ring::clone(&ring);
                apply(&mut next);
                next
            }),
            None => {
                apply(Arc::make_mut(&mut ring));
                ring
            }
        };
        let _ = self.ring.set(ring);
    }
}

/// What [`View::apply`] changed.
pub(super) struct Applied {
    /// Members came or went: the ring is another.
    pub(super) ring_changed: bool,
    /// Members whose record says they have more room than before (a higher
    /// free class, or a drain ended).
    pub(super) roomier: Vec<NodeId>,
}

/// Shares equal rings between the placers of one process.
///
/// An agent runs one placer and needs none. The simulator runs thousands,
/// each with a ring over (mostly) the same members; handing them one
/// [`RingShare`] ([`Placer::share_rings`](super::Placer::share_rings))
/// keeps one ring per distinct member set instead of one per node.
pub trait RingShare: Send + Sync {
    /// The one ring of the member set with `fingerprint`
    /// ([`View::fingerprint`]); `make` builds it when none is held.
    fn ring(&self, fingerprint: u128, make: &mut dyn FnMut() -> Ring) -> Arc<Ring>;
}
