//! What the nodes' one fact per datacenter ("unreachable from here",
//! `shoal_gossip`'s `reach.rs`) said around partitions: how soon each node
//! saw each datacenter cut off from it, how soon it reached it again after
//! the heal, datacenters lost whole seen unreachable, and any datacenter
//! seen unreachable that was neither cut off nor lost.

use std::collections::BTreeSet;

use shoal_gossip::Instant;

use crate::report::{ReachReport, quantile};

use super::secs;

/// The log, filled as the nodes report.
#[derive(Debug, Default)]
pub(crate) struct ReachLog {
    /// During a cut: when it began, and each datacenter's side.
    cut: Option<(Instant, Vec<u16>)>,
    healed_at: Option<Instant>,
    /// (node, datacenter) pairs cut apart: each live node and each
    /// datacenter on the other side with a live node.
    pairs_cut: u64,
    /// The pairs of the current cut seen unreachable.
    seen: BTreeSet<(u32, usize)>,
    to_cut: Vec<f64>,
    to_heal: Vec<f64>,
    /// Datacenters with no live node left seen unreachable.
    lost: u64,
    wrong: u64,
    partitions: u64,
}

impl ReachLog {
    /// A cut began; `sides[d]` is datacenter `d`'s side and `live` the
    /// datacenter of each live node.
    pub(crate) fn cut(&mut self, now: Instant, sides: Vec<u16>, live: &[usize]) {
        let mut with_live = vec![false; sides.len()];
        for &d in live {
            with_live[d] = true;
        }
        for &d in live {
            self.pairs_cut += (0..sides.len())
                .filter(|&o| with_live[o] && sides[o] != sides[d])
                .count() as u64;
        }
        self.partitions += 1;
        self.seen.clear();
        self.cut = Some((now, sides));
    }

    pub(crate) fn heal(&mut self, now: Instant) {
        if self.cut.take().is_some() {
            self.healed_at = Some(now);
        }
    }

    /// Node `node`, in datacenter `own`, saw datacenter `dc` unreachable;
    /// `live(d)` says whether datacenter `d` has a live node.
    pub(crate) fn unreachable(
        &mut self,
        now: Instant,
        node: u32,
        own: usize,
        dc: &str,
        live: impl Fn(usize) -> bool,
    ) {
        let Some(d) = dc_index(dc) else {
            self.wrong += 1;
            return;
        };
        match &self.cut {
            Some((at, sides)) if d < sides.len() && sides[d] != sides[own] => {
                if self.seen.insert((node, d)) {
                    self.to_cut.push(secs(now - *at));
                }
            }
            _ if !live(d) => self.lost += 1,
            _ => self.wrong += 1,
        }
    }

    /// A node reached again a datacenter it saw unreachable.
    pub(crate) fn reachable(&mut self, now: Instant) {
        if let (None, Some(at)) = (&self.cut, self.healed_at) {
            self.to_heal.push(secs(now - at));
        }
    }

    /// The figures, for a run with partitions or with a datacenter seen
    /// unreachable (absent otherwise, so that the recorded reports of
    /// other runs are unchanged).
    pub(crate) fn report(mut self) -> Option<ReachReport> {
        if self.partitions == 0 && self.wrong == 0 && self.lost == 0 {
            return None;
        }
        self.to_cut.sort_by(f64::total_cmp);
        self.to_heal.sort_by(f64::total_cmp);
        Some(ReachReport {
            pairs_cut: self.pairs_cut,
            seen_unreachable: self.to_cut.len() as u64,
            unreachable_p50_s: quantile(&self.to_cut, 0.5),
            unreachable_p99_s: quantile(&self.to_cut, 0.99),
            unreachable_max_s: self.to_cut.last().copied(),
            reached_again: self.to_heal.len() as u64,
            reached_again_p50_s: quantile(&self.to_heal, 0.5),
            reached_again_max_s: self.to_heal.last().copied(),
            lost_seen: self.lost,
            wrong_unreachable: self.wrong,
        })
    }
}

/// `dcN` (the simulator's names, `workload.rs`) to `N`.
fn dc_index(dc: &str) -> Option<usize> {
    dc.strip_prefix("dc")?.parse().ok()
}
