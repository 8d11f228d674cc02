//! [`Summary`]: the members this node knows, counted by state, and the
//! resources of the live ones summed, for the whole cluster and per
//! datacenter and zone, kept up to date member change by member change.
//!
//! The contract: after every input, the summary equals
//! [`Summary::recount`] of the members as [`NodeCore`](crate::NodeCore)
//! sees them (state by `Membership::member_state`, metadata by
//! `Membership::member_meta`). A change costs O(log N + log G) (N members,
//! G groups); reading it costs O(G), never a walk of the members: the
//! `GET /v1/summary` of a node of a 500,000-member cluster.
//!
//! Per member it keeps the state and the metadata record it counted (a
//! shared pointer to the record the membership holds), so that a change
//! takes away exactly what was added. Members whose metadata has not
//! arrived are counted by state in the total and in [`Snapshot::unknown`],
//! in no datacenter.
//!
//! Allocated resources are not gossiped; what is, is each member's free
//! class (`free_class`, 0 to 8: eighths of its scarcest resource free).
//! [`Group::allocated_estimate`] turns it into the middle of the range the
//! class stands for, applied to every resource of the member: a class-`k`
//! member (k < 8) has between `(7 - k)/8` and `(8 - k)/8` of its scarcest
//! resource allocated, counted as `(15 - 2k)/16` of each resource; class 8
//! (idle) counts as nothing allocated.
//!
//! Measured usage is not gossiped either (it changes all the time; every
//! node would receive every other node's changes). Each zone has an
//! *aggregator* instead, [`Group::aggregator`]: its alive member with the
//! lowest id, which every node computes alike from its own view. Members
//! report their usage to it; a node asked for the summary asks each
//! zone's aggregator for its zone's sum (the agent's `usage` module): a
//! request costs one call per zone, never one per member.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use shoal_gossip::{MemberMeta, MemberState, NodeId, Packed};

/// Members by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// Alive.
    pub alive: u64,
    /// Suspect.
    pub suspect: u64,
    /// Failed.
    pub failed: u64,
    /// Left.
    pub left: u64,
}

impl StateCounts {
    fn slot(&mut self, state: MemberState) -> &mut u64 {
        match state {
            MemberState::Alive => &mut self.alive,
            MemberState::Suspect => &mut self.suspect,
            MemberState::Failed => &mut self.failed,
            MemberState::Left => &mut self.left,
        }
    }

    /// Every member counted.
    pub fn all(&self) -> u64 {
        self.alive + self.suspect + self.failed + self.left
    }
}

/// Sums of resources.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    /// CPU in thousandths of a core.
    pub cpus_milli: u64,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// Disk in MiB.
    pub disk_mb: u64,
    /// GPUs.
    pub gpus: u64,
}

impl Figures {
    fn of(meta: &MemberMeta, times: u64) -> Figures {
        let c = &meta.capacity;
        Figures {
            cpus_milli: u64::from(c.cpus_milli) * times,
            memory_mb: c.memory_mb.saturating_mul(times),
            disk_mb: c.disk_mb.saturating_mul(times),
            gpus: u64::from(c.gpus) * times,
        }
    }

    fn add(&mut self, other: Figures) {
        self.cpus_milli += other.cpus_milli;
        self.memory_mb += other.memory_mb;
        self.disk_mb += other.disk_mb;
        self.gpus += other.gpus;
    }

    fn sub(&mut self, other: Figures) {
        self.cpus_milli -= other.cpus_milli;
        self.memory_mb -= other.memory_mb;
        self.disk_mb -= other.disk_mb;
        self.gpus -= other.gpus;
    }

    /// Each figure divided by `by`, rounded down.
    pub fn divided_by(self, by: u64) -> Figures {
        Figures {
            cpus_milli: self.cpus_milli / by,
            memory_mb: self.memory_mb / by,
            disk_mb: self.disk_mb / by,
            gpus: self.gpus / by,
        }
    }
}

/// Sixteenths of a member's resources counted as allocated for its free
/// class (see the module's documentation).
pub fn allocated_sixteenths(free_class: u8) -> u64 {
    if free_class >= 8 {
        0
    } else {
        15 - 2 * u64::from(free_class)
    }
}

/// The counts and sums of one group of members (or of all).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Group {
    /// Members by state.
    pub members: StateCounts,
    /// Live (alive or suspect) members whose metadata is known: those
    /// whose resources are summed.
    pub nodes: u64,
    /// Of those, the draining ones.
    pub draining: u64,
    /// Resources they offer.
    pub capacity: Figures,
    /// Resources counted as allocated from their free classes, in
    /// sixteenths ([`Group::allocated_estimate`] divides).
    pub allocated_16ths: Figures,
    /// For a zone: the member that sums its members' measured usage (its
    /// alive member with the lowest id; `None` when none is alive). Not
    /// set on datacenters or the total.
    pub aggregator: Option<NodeId>,
}

impl Group {
    /// Resources estimated allocated, from the members' free classes.
    pub fn allocated_estimate(&self) -> Figures {
        self.allocated_16ths.divided_by(16)
    }

    fn count(&mut self, state: MemberState, meta: Option<&MemberMeta>, add: bool) {
        let slot = self.members.slot(state);
        if add {
            *slot += 1;
        } else {
            *slot -= 1;
        }
        let Some(meta) = meta else {
            return;
        };
        if !matches!(state, MemberState::Alive | MemberState::Suspect) {
            return;
        }
        let capacity = Figures::of(meta, 1);
        let allocated = Figures::of(meta, allocated_sixteenths(meta.free_class.0));
        let draining = u64::from(meta.draining);
        if add {
            self.nodes += 1;
            self.draining += draining;
            self.capacity.add(capacity);
            self.allocated_16ths.add(allocated);
        } else {
            self.nodes -= 1;
            self.draining -= draining;
            self.capacity.sub(capacity);
            self.allocated_16ths.sub(allocated);
        }
    }

    fn is_empty(&self) -> bool {
        self.members.all() == 0
    }
}

/// One datacenter: all of it, and each of its zones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dc {
    /// The whole datacenter.
    pub all: Group,
    /// Its zones by name (`""`: members that name none).
    pub zones: BTreeMap<String, Group>,
}

/// The summary's groups at one moment: what a request is answered from
/// (O(groups) to copy).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every member.
    pub total: Group,
    /// Members whose metadata has not arrived yet.
    pub unknown: Group,
    /// Datacenters by name.
    pub dcs: BTreeMap<String, Dc>,
    /// Changes applied so far (grows by one with each change counted).
    pub changes: u64,
}

/// What the summary counted of one member.
#[derive(Clone, Debug)]
struct Counted {
    state: MemberState,
    meta: Option<Arc<MemberMeta>>,
}

/// A member's state changed as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStateChange {
    /// The member.
    pub id: NodeId,
    /// Its state now (`None`: forgotten).
    pub state: Option<MemberState>,
    /// Its state before (`None`: new to this node).
    pub previous: Option<MemberState>,
    /// Its metadata, where known.
    pub meta: Option<Arc<MemberMeta>>,
}

/// The members counted, kept up to date by [`Summary::update`].
#[derive(Debug, Default)]
pub struct Summary {
    members: Packed<NodeId, Counted>,
    groups: Snapshot,
    /// The alive members of each zone, by datacenter then zone: the
    /// lowest is the zone's aggregator.
    alive: BTreeMap<String, BTreeMap<String, BTreeSet<NodeId>>>,
}

impl Summary {
    /// An empty summary.
    pub fn new() -> Summary {
        Summary::default()
    }

    /// The summary of `members` (id, state, metadata), counted from
    /// scratch: what the incremental one must equal.
    pub fn recount<'a>(
        members: impl IntoIterator<Item = (NodeId, MemberState, Option<&'a Arc<MemberMeta>>)>,
    ) -> Summary {
        let mut s = Summary::new();
        for (id, state, meta) in members {
            s.update(id, Some((state, meta.cloned())));
        }
        s
    }

    /// Member `id` is now `now` (state and metadata; `None`: forgotten).
    /// Returns the change of its state, if its state changed.
    pub fn update(
        &mut self,
        id: NodeId,
        now: Option<(MemberState, Option<Arc<MemberMeta>>)>,
    ) -> Option<MemberStateChange> {
        let before = self.members.get(&id);
        let same = match (before, &now) {
            (None, None) => true,
            (Some(b), Some((state, meta))) => {
                b.state == *state
                    && match (&b.meta, meta) {
                        (None, None) => true,
                        (Some(x), Some(y)) => Arc::ptr_eq(x, y) || x == y,
                        _ => false,
                    }
            }
            _ => false,
        };
        if same {
            return None;
        }
        let previous = before.map(|b| b.state);
        if let Some(old) = self.members.remove(&id) {
            self.count(id, &old, false);
        }
        let change = (previous != now.as_ref().map(|n| n.0)).then(|| MemberStateChange {
            id,
            state: now.as_ref().map(|n| n.0),
            previous,
            meta: now.as_ref().and_then(|n| n.1.clone()),
        });
        if let Some((state, meta)) = now {
            let counted = Counted { state, meta };
            self.count(id, &counted, true);
            self.members.insert(id, counted);
            self.members.pack();
        }
        self.groups.changes += 1;
        change
    }

    fn count(&mut self, id: NodeId, c: &Counted, add: bool) {
        let meta = c.meta.as_deref();
        self.groups.total.count(c.state, meta, add);
        let Some(m) = meta else {
            self.groups.unknown.count(c.state, None, add);
            return;
        };
        let dc = match self.groups.dcs.get_mut(&m.dc) {
            Some(dc) => dc,
            None => self.groups.dcs.entry(m.dc.clone()).or_default(),
        };
        dc.all.count(c.state, meta, add);
        let zone = match dc.zones.get_mut(&m.zone) {
            Some(zone) => zone,
            None => dc.zones.entry(m.zone.clone()).or_default(),
        };
        zone.count(c.state, meta, add);
        if c.state == MemberState::Alive {
            let dc_alive = match self.alive.get_mut(&m.dc) {
                Some(d) => d,
                None => self.alive.entry(m.dc.clone()).or_default(),
            };
            let zone_alive = match dc_alive.get_mut(&m.zone) {
                Some(z) => z,
                None => dc_alive.entry(m.zone.clone()).or_default(),
            };
            if add {
                zone_alive.insert(id);
            } else {
                zone_alive.remove(&id);
            }
            zone.aggregator = zone_alive.first().copied();
            if zone_alive.is_empty() {
                dc_alive.remove(&m.zone);
                if dc_alive.is_empty() {
                    self.alive.remove(&m.dc);
                }
            }
        }
        if zone.is_empty() {
            dc.zones.remove(&m.zone);
        }
        if dc.all.is_empty() {
            self.groups.dcs.remove(&m.dc);
        }
    }

    /// Members counted.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether no member is counted.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The groups (borrowed).
    pub fn groups(&self) -> &Snapshot {
        &self.groups
    }

    /// A copy of the groups: O(groups).
    pub fn snapshot(&self) -> Snapshot {
        self.groups.clone()
    }

    /// Whether this summary counts the same as `other` (groups, not the
    /// count of changes).
    pub fn same_counts(&self, other: &Summary) -> bool {
        let (a, b) = (&self.groups, &other.groups);
        a.total == b.total && a.unknown == b.unknown && a.dcs == b.dcs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use shoal_gossip::{Capacity, FreeClass};

    fn meta(dc: u8, zone: u8, cpus: u32, class: u8, draining: bool) -> Arc<MemberMeta> {
        let addr: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap_or_else(|_| unreachable!());
        Arc::new(MemberMeta {
            name: format!("n-{dc}-{zone}"),
            gossip_addr: addr,
            rpc_addr: addr,
            api_addr: addr,
            api_tls: false,
            gossip_keys: Vec::new(),
            dc: format!("dc{dc}"),
            zone: format!("z{zone}"),
            region: "global".into(),
            labels: BTreeMap::new(),
            capacity: Capacity {
                cpus_milli: cpus,
                memory_mb: u64::from(cpus) * 4,
                disk_mb: 1000,
                gpus: u32::from(class % 2),
            },
            runtimes: Vec::new(),
            agent_version: "0".into(),
            free_class: FreeClass(class),
            isolation: "none".into(),
            draining,
        })
    }

    fn state(i: u8) -> MemberState {
        [
            MemberState::Alive,
            MemberState::Suspect,
            MemberState::Failed,
            MemberState::Left,
        ][usize::from(i % 4)]
    }

    type Ev = (u64, Option<(u8, Option<(u8, u8, u32, u8, bool)>)>);

    fn event() -> impl Strategy<Value = Ev> {
        (
            0u64..40,
            prop::option::weighted(
                0.9,
                (
                    0u8..4,
                    prop::option::weighted(
                        0.85,
                        (0u8..3, 0u8..3, 1u32..8000, 0u8..9, any::<bool>()),
                    ),
                ),
            ),
        )
    }

    proptest! {
        /// After any sequence of joins, state changes, metadata changes
        /// and removals, the summary kept change by change equals a
        /// recount of the members as they ended up.
        #[test]
        fn incremental_equals_recount(events in prop::collection::vec(event(), 0..400)) {
            let mut s = Summary::new();
            let mut truth: BTreeMap<NodeId, (MemberState, Option<Arc<MemberMeta>>)> = BTreeMap::new();
            for (id, ev) in events {
                let id = NodeId(id);
                let now = ev.map(|(st, m)| (state(st), m.map(|(d, z, c, k, dr)| meta(d, z, c, k, dr))));
                let previous = truth.get(&id).map(|t| t.0);
                let change = s.update(id, now.clone());
                let new_state = now.as_ref().map(|n| n.0);
                prop_assert_eq!(change.as_ref().map(|c| c.previous), (previous != new_state).then_some(previous));
                match now {
                    Some(n) => { truth.insert(id, n); }
                    None => { truth.remove(&id); }
                }
            }
            let recount = Summary::recount(truth.iter().map(|(id, (st, m))| (*id, *st, m.as_ref())));
            prop_assert!(s.same_counts(&recount), "incremental {:?}\nrecount {:?}", s.groups(), recount.groups());
            prop_assert_eq!(s.len(), truth.len());
            // The total is the sum of the groups.
            let g = s.groups();
            let by_dc: u64 = g.dcs.values().map(|d| d.all.members.all()).sum();
            prop_assert_eq!(g.total.members.all(), by_dc + g.unknown.members.all());
            for dc in g.dcs.values() {
                let zones: u64 = dc.zones.values().map(|z| z.nodes).sum();
                prop_assert_eq!(dc.all.nodes, zones);
            }
            // Each zone's aggregator is its alive member with the lowest id.
            for (dc, d) in &g.dcs {
                for (zone, z) in &d.zones {
                    let lowest = truth.iter().find(|(_, (st, m))| {
                        *st == MemberState::Alive
                            && m.as_ref().is_some_and(|m| &m.dc == dc && &m.zone == zone)
                    });
                    prop_assert_eq!(z.aggregator, lowest.map(|(id, _)| *id));
                }
                prop_assert_eq!(d.all.aggregator, None);
            }
        }
    }

    #[test]
    fn allocated_estimate_is_the_middle_of_the_class() {
        let mut s = Summary::new();
        // Class 4: half free, so half allocated.
        s.update(
            NodeId(1),
            Some((MemberState::Alive, Some(meta(0, 0, 2000, 4, false)))),
        );
        // Idle: nothing allocated; failed: not counted.
        s.update(
            NodeId(2),
            Some((MemberState::Alive, Some(meta(0, 0, 2000, 8, false)))),
        );
        s.update(
            NodeId(3),
            Some((MemberState::Failed, Some(meta(0, 0, 2000, 0, false)))),
        );
        let g = &s.groups().total;
        assert_eq!(g.capacity.cpus_milli, 4000);
        assert_eq!(g.allocated_estimate().cpus_milli, 2000 * 7 / 16);
        assert_eq!(g.members.failed, 1);
        assert_eq!(g.nodes, 2);
    }
}
