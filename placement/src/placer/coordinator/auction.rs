//! The auction of one key, as its coordinator runs it.
//!
//! Walking the ring from the key, the coordinator asks the first k eligible
//! members ([`PlacementConfig::candidates`]) for bids, by what gossip says
//! of them; members it rules out, and bidders that decline or do not
//! answer in time, are remembered with their reason. When every asked
//! member has answered, or the bid timeout passes, the best bid wins: the
//! tightest fit, or with a spread attribute the fewest tasks of the job per
//! value, ties broken by a hash of key and node. The winner gets the award
//! (a fresh stamp) and the other bidders a cancel. When nobody bids, the
//! walk goes on with twice as many members; when the ring is exhausted the
//! key waits with every reason and is retried later, doubling the wait.
//!
//! Contract: an auction's messages carry its round, and answers of any
//! other round are ignored. The ring walk is lazy (a walk may pass every
//! member at 500,000 nodes) and resumes where it stopped.
//!
//! [`PlacementConfig::candidates`]: crate::PlacementConfig::candidates

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use shoal_gossip::{Instant, NodeId};

use super::{Coordinator, Holder};
use crate::placer::health::Health;
use crate::placer::msg::{Answer, Event, Msg};
use crate::placer::reasons::Reasons;
use crate::placer::status::{Report, TaskState};
use crate::placer::{Shared, demand_of};
use crate::types::TaskKey;

/// An auction in flight.
#[derive(Clone, Debug)]
pub(super) struct Auction {
    round: u64,
    /// When it is decided with the answers in by then.
    pub(super) deadline: Instant,
    asked: Vec<NodeId>,
    answers: BTreeMap<NodeId, Answer>,
    /// Positions of the ring walk already used.
    walked: usize,
    /// Reasons of members ruled out without asking, and of declines.
    reasons: Reasons,
    exclude: BTreeSet<NodeId>,
}

fn tie_break(key: &TaskKey, node: NodeId) -> u64 {
    key.hash_with(&node.0.to_be_bytes())
}

impl Coordinator {
    /// Starts an auction of `key` among the members but `exclude`.
    pub(super) fn start_auction(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        wall_ms: u64,
        key: &TaskKey,
        exclude: BTreeSet<NodeId>,
    ) {
        if !shared.jobs.contains(&key.job) || shared.finished(key).is_some() {
            return;
        }
        self.round += 1;
        let entry = self.entries.entry(key.clone()).or_default();
        let mut exclude = exclude;
        if let Some(old) = &entry.old {
            // Start-first: the new task goes beside the old one, on
            // another node (one copy of a key per node).
            exclude.insert(old.node);
        }
        let keep_lost = entry
            .holder
            .as_ref()
            .filter(|h| h.report.state == TaskState::Lost)
            .cloned();
        entry.holder = keep_lost;
        entry.auction = Some(Auction {
            round: self.round,
            deadline: now,
            asked: Vec::new(),
            answers: BTreeMap::new(),
            walked: 0,
            reasons: Reasons::default(),
            exclude,
        });
        let want = shared.config.candidates;
        self.ask_more(shared, now, wall_ms, key, want);
    }

    /// Asks the next `want` eligible members on the ring walk; if none is
    /// left, the key becomes pending.
    fn ask_more(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        wall_ms: u64,
        key: &TaskKey,
        want: usize,
    ) {
        let Some(job) = shared.jobs.get(&key.job).cloned() else {
            self.entries.remove(key);
            return;
        };
        let demand = demand_of(&job.spec);
        let Some(mut auction) = self.entries.get_mut(key).and_then(|c| c.auction.take()) else {
            return;
        };
        // Lazily: a walk of the whole ring is 500,000 members at scale.
        // (Borrows only the view, not all of `shared`: the loop records
        // asks.)
        let mut walk = shared
            .view
            .ring_with(shared.ring_share.as_ref())
            .walk(key.hash())
            .skip(auction.walked);
        let mut asked_now = Vec::new();
        while asked_now.len() < want {
            let Some(node) = walk.next() else {
                break;
            };
            auction.walked += 1;
            if auction.exclude.contains(&node) {
                let why = if self
                    .entries
                    .get(key)
                    .and_then(|c| c.old.as_ref())
                    .is_some_and(|o| o.node == node)
                {
                    "runs the task's old version"
                } else {
                    "its copy of the task was lost"
                };
                auction.reasons.add(node, why.into());
                continue;
            }
            let Some(info) = shared.view.member(node) else {
                continue;
            };
            match shared.view.eligible(info, &job.spec, &demand) {
                Ok(()) => asked_now.push(node),
                Err(why) => {
                    auction.reasons.add(node, why);
                }
            }
        }
        if asked_now.is_empty() {
            // The walk is over: nobody can take it now.
            if let Some(entry) = self.entries.get_mut(key)
                && shared.replacing(key).is_some()
                && let Some(old) = entry.old.take()
            {
                // No other node has room for the new task beside the old
                // one: replace this one stop-first (its node bids once the
                // old copy has stopped), still one index at a time.
                shared.out.messages.push_back((
                    old.node,
                    Msg::Stop {
                        key: key.clone(),
                        stamp: old.stamp,
                        reason: "replaced stop-first: no other node has room for the new version"
                            .into(),
                    },
                ));
                entry.auction = None;
                entry.retry_at = Some(now + shared.config.retry_min);
                entry.backoff = Duration::ZERO;
                return;
            }
            let mut reasons = auction.reasons.lines(|n| shared.name_of(n));
            if reasons.is_empty() {
                reasons.push("no live node".into());
            }
            let entry = self.entries.entry(key.clone()).or_default();
            let backoff = if entry.backoff.is_zero() {
                shared.config.retry_min
            } else {
                (entry.backoff * 2).min(shared.config.retry_max)
            };
            if entry.pending != reasons || entry.pending_since_ms == 0 {
                if entry.pending.is_empty() {
                    entry.pending_since_ms = wall_ms;
                }
                shared.out.events.push_back(Event::Pending {
                    key: key.clone(),
                    reasons: reasons.clone(),
                });
            }
            entry.pending = reasons;
            entry.backoff = backoff;
            entry.retry_at = Some(now + backoff);
            entry.auction = None;
            return;
        }
        auction.deadline = now + shared.config.bid_timeout;
        for node in &asked_now {
            auction.asked.push(*node);
            shared.out.messages.push_back((
                *node,
                Msg::BidRequest {
                    key: key.clone(),
                    round: auction.round,
                    job_version: job.version,
                    demand,
                    spec: job.spec.clone(),
                },
            ));
        }
        if let Some(entry) = self.entries.get_mut(key) {
            entry.auction = Some(auction);
        }
    }

    /// `from`'s answer in round `round` of `key`'s auction; the auction is
    /// decided once every member asked has answered.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::placer) fn on_answer(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        wall_ms: u64,
        from: NodeId,
        key: &TaskKey,
        round: u64,
        answer: Answer,
    ) {
        let Some(a) = self.entries.get_mut(key).and_then(|c| c.auction.as_mut()) else {
            return;
        };
        if a.round != round || !a.asked.contains(&from) {
            return;
        }
        a.answers.insert(from, answer);
        if a.asked.iter().all(|n| a.answers.contains_key(n)) {
            self.decide(shared, now, wall_ms, key);
        }
    }

    /// Picks the best bid of the auction, or widens it.
    pub(super) fn decide(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        wall_ms: u64,
        key: &TaskKey,
    ) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        let Some(mut auction) = entry.auction.take() else {
            return;
        };
        if shared.finished(key).is_some() {
            // Recorded as finished while it was auctioned: nobody runs it.
            for (node, a) in &auction.answers {
                if matches!(a, Answer::Bid { .. }) {
                    shared.out.messages.push_back((
                        *node,
                        Msg::Cancel {
                            key: key.clone(),
                            round: auction.round,
                        },
                    ));
                }
            }
            return;
        }
        let spread = shared
            .jobs
            .get(&key.job)
            .and_then(|j| j.spec.spread.clone());
        // Spread: fewest tasks of the job per attribute value among the
        // bidders, then per node; otherwise the tightest fit.
        let mut per_value: BTreeMap<Option<String>, u32> = BTreeMap::new();
        for a in auction.answers.values() {
            if let Answer::Bid {
                job_tasks,
                spread_value,
                ..
            } = a
            {
                *per_value.entry(spread_value.clone()).or_default() += *job_tasks;
            }
        }
        let mut best: Option<((u32, u32, u64, u64), NodeId)> = None;
        for (node, a) in &auction.answers {
            match a {
                Answer::Bid {
                    score,
                    job_tasks,
                    spread_value,
                } => {
                    let rank = if spread.is_some() {
                        (
                            per_value.get(spread_value).copied().unwrap_or(0),
                            *job_tasks,
                            1000 - *score,
                            tie_break(key, *node),
                        )
                    } else {
                        (0, 0, *score, tie_break(key, *node))
                    };
                    if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                        best = Some((rank, *node));
                    }
                }
                Answer::Decline(why) => {
                    auction.reasons.add(*node, why.clone());
                }
            }
        }
        for node in &auction.asked {
            if !auction.answers.contains_key(node) {
                auction.reasons.add(*node, "did not answer in time".into());
            }
        }
        let Some((_, winner)) = best else {
            // Nobody had room: ask further along the ring.
            let want = auction.asked.len().max(1) * 2;
            auction.asked.clear();
            auction.answers.clear();
            if let Some(entry) = self.entries.get_mut(key) {
                entry.auction = Some(auction);
            }
            self.ask_more(shared, now, wall_ms, key, want);
            return;
        };
        let Some(job) = shared.jobs.get(&key.job).cloned() else {
            return;
        };
        let stamp = shared.hlc.tick(wall_ms, shared.me);
        let entry = self.entries.get_mut(key).expect("present");
        entry.pending.clear();
        entry.pending_since_ms = 0;
        entry.retry_at = None;
        entry.backoff = Duration::ZERO;
        entry.inherited_at = None;
        entry.holder = Some(Holder {
            node: winner,
            stamp,
            report: Report {
                state: TaskState::Assigned,
                restarts: 0,
                exit_code: None,
                reason: None,
                since_ms: wall_ms,
                job_version: job.version,
                health: Health::Unknown,
                check: None,
                ports: Default::default(),
            },
            heard: now,
            confirmed: false,
            recorded: false,
            seen: shared.has_member(winner),
        });
        shared.out.events.push_back(Event::Awarded {
            key: key.clone(),
            node: winner,
        });
        for (node, a) in &auction.answers {
            if *node != winner && matches!(a, Answer::Bid { .. }) {
                shared.out.messages.push_back((
                    *node,
                    Msg::Cancel {
                        key: key.clone(),
                        round: auction.round,
                    },
                ));
            }
        }
        shared.out.messages.push_back((
            winner,
            Msg::Award {
                key: key.clone(),
                round: auction.round,
                stamp,
                job_version: job.version,
                spec: job.spec.clone(),
            },
        ));
    }
}
