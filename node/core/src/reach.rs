//! Which of the members this node knew it can still reach: the input of
//! the partition rule ([`shoal_placement::CutOff`]).
//!
//! Kept from membership's events, in O(members unreachable): the members
//! suspected and those that failed (not those that left, nor those
//! forgotten with `shoal node forget`, nor those membership removed long
//! after they failed). The members up come from membership's own count.

use std::collections::BTreeSet;

use shoal_gossip::{DownReason, Event, NodeId};
use shoal_placement::CutOff;

/// The members this node knew and no longer reaches.
#[derive(Debug, Default)]
pub struct Reach {
    suspect: BTreeSet<NodeId>,
    failed: BTreeSet<NodeId>,
    forgotten: BTreeSet<NodeId>,
    /// Peers a starting node was told of (its join addresses: `--join`
    /// and those it saved) and has not heard from yet: counted as known
    /// and unreachable until any member comes up, so that a node
    /// restarted with no network is cut off from the start.
    unseen: usize,
}

impl Reach {
    /// A node starting with `peers` join addresses, none heard from yet.
    pub fn expect(&mut self, peers: usize) {
        self.unseen = peers;
    }

    /// Follows one membership event.
    pub fn on_event(&mut self, e: &Event) {
        match e {
            Event::MemberUp { identity } | Event::MemberRenewed { new: identity, .. } => {
                // In touch: the member list it copies names the others.
                self.unseen = 0;
                self.suspect.remove(&identity.id);
                self.failed.remove(&identity.id);
            }
            Event::MemberDown { identity, reason } => {
                self.suspect.remove(&identity.id);
                if *reason == DownReason::Failed && !self.forgotten.contains(&identity.id) {
                    self.failed.insert(identity.id);
                } else {
                    self.failed.remove(&identity.id);
                }
            }
            Event::SuspicionChanged { id, suspect } => {
                if *suspect && !self.failed.contains(id) {
                    self.suspect.insert(*id);
                } else {
                    self.suspect.remove(id);
                }
            }
            Event::MemberForgotten { id } => {
                self.suspect.remove(id);
                self.failed.remove(id);
            }
            _ => {}
        }
    }

    /// Members forgotten for good: no longer counted as known.
    pub fn set_forgotten(&mut self, ids: &BTreeSet<NodeId>) {
        for id in ids {
            self.suspect.remove(id);
            self.failed.remove(id);
        }
        self.forgotten.clone_from(ids);
    }

    /// Whether this node is cut off, with `up` members up (alive or
    /// suspect, itself included), `beyond` of them neither suspect nor
    /// reached: members of the datacenters unreachable from here
    /// (`Membership::unreachable_members`). A datacenter cut off is one
    /// fact here long before SWIM has suspected each of its members: at
    /// 100,000 members a datacenter, hours (docs/simulation.md, Limits).
    pub fn cut_off(&self, up: usize, beyond: usize) -> Option<CutOff> {
        let reachable = up.saturating_sub(self.suspect.len() + beyond);
        CutOff::of(reachable, up + self.failed.len() + self.unseen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_gossip::NodeIdentity;

    fn identity(n: u8) -> NodeIdentity {
        NodeIdentity::new(
            NodeId(u64::from(n)),
            format!("127.0.0.1:{}", 7000 + u16::from(n))
                .parse()
                .unwrap(),
            1,
        )
    }

    #[test]
    fn most_members_failed_or_suspect_cut_a_node_off() {
        let mut r = Reach::default();
        // Five members up (itself included): nobody unreachable.
        assert_eq!(r.cut_off(5, 0), None);
        // Two failed: 3 of 5 reachable.
        for n in [1, 2] {
            r.on_event(&Event::MemberDown {
                identity: identity(n),
                reason: DownReason::Failed,
            });
        }
        assert_eq!(r.cut_off(3, 0), None);
        // A third suspected: 2 of 5.
        r.on_event(&Event::SuspicionChanged {
            id: identity(3).id,
            suspect: true,
        });
        assert_eq!(
            r.cut_off(3, 0),
            Some(CutOff {
                reachable: 2,
                known: 5
            })
        );
        // It refutes: 3 of 5 again.
        r.on_event(&Event::SuspicionChanged {
            id: identity(3).id,
            suspect: false,
        });
        assert_eq!(r.cut_off(3, 0), None);
        // Two of the three up are in a datacenter unreachable from here:
        // 1 of 5.
        assert_eq!(
            r.cut_off(3, 2),
            Some(CutOff {
                reachable: 1,
                known: 5
            })
        );
    }

    #[test]
    fn a_node_starting_with_peers_it_cannot_reach_is_cut_off_until_one_answers() {
        let mut r = Reach::default();
        r.expect(3);
        assert!(r.cut_off(1, 0).is_some());
        r.on_event(&Event::MemberUp {
            identity: identity(1),
        });
        assert_eq!(r.cut_off(2, 0), None);
        // One join address only: 1 of 2, half, not cut off.
        let mut r = Reach::default();
        r.expect(1);
        assert_eq!(r.cut_off(1, 0), None);
    }

    #[test]
    fn members_that_left_or_were_forgotten_are_not_counted() {
        let mut r = Reach::default();
        for n in [1, 2, 3] {
            r.on_event(&Event::MemberDown {
                identity: identity(n),
                reason: DownReason::Failed,
            });
        }
        // 2 up of 5 known.
        assert!(r.cut_off(2, 0).is_some());
        r.on_event(&Event::MemberDown {
            identity: identity(1),
            reason: DownReason::Left,
        });
        // 2 of 4: half, not most.
        assert_eq!(r.cut_off(2, 0), None);
        r.on_event(&Event::MemberDown {
            identity: identity(4),
            reason: DownReason::Failed,
        });
        assert!(r.cut_off(2, 0).is_some());
        r.set_forgotten(&[identity(4).id].into());
        assert_eq!(r.cut_off(2, 0), None);
        // A forgotten node's lives are declared down again: not counted.
        r.on_event(&Event::MemberDown {
            identity: identity(4),
            reason: DownReason::Failed,
        });
        assert_eq!(r.cut_off(2, 0), None);
        // A member back up is reachable again.
        r.on_event(&Event::MemberUp {
            identity: identity(2),
        });
        assert_eq!(r.cut_off(3, 0), None);
    }
}
