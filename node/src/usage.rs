//! Measured usage of the pool: each node samples its machine and reports
//! to its zone's aggregator; `GET /v1/summary` asks each zone's
//! aggregator for its zone's sum.
//!
//! Usage changes all the time, so it is not gossiped (every node would
//! receive every other node's changes: at 500,000 nodes, one change a
//! minute each is 8,000 updates a second reaching every node). Instead,
//! a node samples every [`REPORT_PERIOD`] and sends its sample to the
//! aggregator of its zone ([`shoal_core::Group::aggregator`]: the zone's
//! alive member with the lowest id, which every node computes alike) when
//! it moved by [`Usage::moved`] since the last report, when the aggregator
//! changed, and every [`REFRESH`] otherwise. A report is one gossip
//! datagram (a membership note, `Membership::send_note`), not an RPC: an
//! idle node sends one every [`REFRESH`], where a QUIC call every 10 s
//! cost about four datagrams (request, answer and their
//! acknowledgements) and kept a connection open. A lost report is
//! replaced by the next. The aggregator keeps the last report of each
//! member for [`REPORT_TTL`]. A summary
//! asks each zone's aggregator once per [`CACHE_FOR`] at most, all at
//! once, waiting [`ASK_TIMEOUT`]: its cost is one call per zone, never
//! one per member. A zone whose aggregator does not answer keeps its last
//! answer for [`REPORT_TTL`], then counts as not reporting.
//!
//! What a sample is: CPU, the machine's busy share since the last sample
//! times its cores; memory, total less available; disk, what the file
//! system of the data dir has lost since the agent started (the capacity
//! offered is what was free then); GPUs, those held by tasks (no GPU
//! counters are read).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_gossip::NodeId;
use shoal_placement::Resources;
use shoal_transport::{Service, Transport};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::core_task::CoreHandle;
use crate::placement::{TaskRequest, TaskResponse};
use crate::state::Peer;

/// How often a node samples (and reports, if the sample moved).
pub const REPORT_PERIOD: Duration = Duration::from_secs(10);
/// The longest a node goes without reporting.
pub const REFRESH: Duration = Duration::from_secs(30);
/// How long an aggregator counts a report, and a summary an answer: two
/// refreshes and a half, so one lost report changes nothing.
pub const REPORT_TTL: Duration = Duration::from_secs(75);
/// How long a summary reuses a zone's answer before asking again.
pub const CACHE_FOR: Duration = Duration::from_secs(5);
/// How long a summary waits for the aggregators.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// One node's measured usage, or a sum of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// CPU busy, thousandths of a core.
    pub cpus_milli: u64,
    /// Memory in use, MiB.
    pub memory_mb: u64,
    /// Disk used since start, MiB.
    pub disk_mb: u64,
    /// GPUs held by tasks.
    pub gpus: u64,
}

impl Usage {
    /// Whether this sample differs from `last` enough to report it: by 5%
    /// of the CPUs `offered` (an idle machine's CPU wanders by a few per
    /// cent), 2% of the memory or disk offered (a smaller step hardly
    /// shows on the overview's bars), or by any GPU.
    pub fn moved(&self, last: &Usage, offered: &Resources) -> bool {
        let beyond = |a: u64, b: u64, of: u64, per_cent: u64| a.abs_diff(b) * 100 > of * per_cent;
        beyond(self.cpus_milli, last.cpus_milli, offered.cpus_milli, 5)
            || beyond(self.memory_mb, last.memory_mb, offered.memory_mb, 2)
            || beyond(self.disk_mb, last.disk_mb, offered.disk_mb, 2)
            || self.gpus != last.gpus
    }

    fn add(&mut self, o: &Usage) {
        self.cpus_milli += o.cpus_milli;
        self.memory_mb += o.memory_mb;
        self.disk_mb += o.disk_mb;
        self.gpus += o.gpus;
    }
}

/// A zone's usage as its aggregator sums it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneUsage {
    /// The sum of the members' last reports.
    pub used: Usage,
    /// How many members' reports it holds.
    pub nodes: u64,
}

impl ZoneUsage {
    /// The sum of several zones' usage.
    pub fn sum<'a>(zones: impl IntoIterator<Item = &'a ZoneUsage>) -> ZoneUsage {
        let mut sum = ZoneUsage::default();
        for z in zones {
            sum.used.add(&z.used);
            sum.nodes += z.nodes;
        }
        sum
    }
}

/// What agents send each other in membership notes (one kind today).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Note {
    /// A member's usage, to its zone's aggregator.
    Usage(Report),
}

/// A member's report, as its zone's aggregator received it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Its datacenter.
    pub dc: String,
    /// Its zone.
    pub zone: String,
    /// What it measured.
    pub usage: Usage,
}

struct Held {
    report: Report,
    at: tokio::time::Instant,
}

#[derive(Default)]
struct Inner {
    /// Reports this node aggregates, by member.
    reports: Mutex<HashMap<NodeId, Held>>,
    /// Zones' answers this node's summaries reuse, by (dc, zone).
    answers: Mutex<HashMap<(String, String), (ZoneUsage, tokio::time::Instant)>>,
}

/// Both ends: the reports this node aggregates, and the answers its
/// summaries reuse.
#[derive(Clone, Default)]
pub struct UsageBook {
    inner: Arc<Inner>,
}

impl UsageBook {
    /// Keeps `from`'s report.
    pub fn record(&self, from: NodeId, report: Report) {
        let at = tokio::time::Instant::now();
        let mut reports = self.inner.reports.lock().expect("lock");
        reports.retain(|_, h| at.duration_since(h.at) < REPORT_TTL);
        reports.insert(from, Held { report, at });
    }

    /// The sum of the fresh reports from members of `dc`/`zone`.
    pub fn zone(&self, dc: &str, zone: &str) -> ZoneUsage {
        let now = tokio::time::Instant::now();
        let reports = self.inner.reports.lock().expect("lock");
        let mut sum = ZoneUsage::default();
        for h in reports.values() {
            if h.report.dc == dc && h.report.zone == zone && now.duration_since(h.at) < REPORT_TTL {
                sum.used.add(&h.report.usage);
                sum.nodes += 1;
            }
        }
        sum
    }

    /// The usage of each zone in `zones` ((dc, zone) and its aggregator),
    /// asked of the aggregators whose answer is older than [`CACHE_FOR`],
    /// all at once; a zone missing from the answer has no report.
    pub async fn zones(
        &self,
        me: NodeId,
        transport: &Transport,
        live: &[Peer],
        zones: Vec<((String, String), NodeId)>,
    ) -> HashMap<(String, String), ZoneUsage> {
        let now = tokio::time::Instant::now();
        let mut found = HashMap::new();
        let mut asks = Vec::new();
        {
            let answers = self.inner.answers.lock().expect("lock");
            for (key, aggregator) in zones {
                if aggregator == me {
                    let z = self.zone(&key.0, &key.1);
                    found.insert(key, z);
                    continue;
                }
                let cached = answers.get(&key);
                if let Some((z, at)) = cached
                    && now.duration_since(*at) < CACHE_FOR
                {
                    found.insert(key, *z);
                    continue;
                }
                let Some(peer) = live.iter().find(|p| p.id == aggregator) else {
                    if let Some((z, at)) = cached
                        && now.duration_since(*at) < REPORT_TTL
                    {
                        found.insert(key, *z);
                    }
                    continue;
                };
                let (transport, rpc) = (transport.clone(), peer.rpc);
                asks.push(tokio::spawn(async move {
                    let body = postcard::to_allocvec(&TaskRequest::ZoneUsage {
                        dc: key.0.clone(),
                        zone: key.1.clone(),
                    })
                    .expect("encodes");
                    let answer = tokio::time::timeout(
                        ASK_TIMEOUT,
                        transport.request(aggregator, rpc, Service::Tasks, &body),
                    )
                    .await;
                    let z = match answer {
                        Ok(Ok(bytes)) => match postcard::from_bytes::<TaskResponse>(&bytes) {
                            Ok(TaskResponse::ZoneUsage(z)) => Some(z),
                            _ => None,
                        },
                        _ => None,
                    };
                    (key, z)
                }));
            }
        }
        for ask in asks {
            let Ok((key, z)) = ask.await else { continue };
            let mut answers = self.inner.answers.lock().expect("lock");
            match z {
                Some(z) => {
                    answers.insert(key.clone(), (z, tokio::time::Instant::now()));
                    found.insert(key, z);
                }
                None => {
                    if let Some((z, at)) = answers.get(&key)
                        && now.duration_since(*at) < REPORT_TTL
                    {
                        found.insert(key, *z);
                    }
                }
            }
        }
        found
    }
}

/// Samples this machine.
struct Sampler {
    sys: Option<sysinfo::System>,
    data_dir: PathBuf,
    disk_free_at_start: Option<u64>,
}

impl Sampler {
    fn new(data_dir: PathBuf) -> Sampler {
        let mut sys = sysinfo::System::new().ok();
        if let Some(sys) = sys.as_mut() {
            // The first reading of CPU usage is a baseline.
            sys.refresh_cpu_usage();
        }
        let disk_free_at_start = disk_free_mb(&data_dir);
        Sampler {
            sys,
            data_dir,
            disk_free_at_start,
        }
    }

    fn sample(&mut self, gpus: u64, cpus_offered_milli: u64) -> Usage {
        let (cpus_milli, memory_mb) = match self.sys.as_mut() {
            Some(sys) => {
                sys.refresh_cpu_usage();
                sys.refresh_memory();
                let cores = sys.cpus().len().max(1) as f64;
                let busy = f64::from(sys.global_cpu_usage()).clamp(0.0, 100.0) / 100.0;
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let cpus = (busy * cores * 1000.0) as u64;
                let used = sys.total_memory().saturating_sub(sys.available_memory());
                (cpus.min(cpus_offered_milli), used / (1024 * 1024))
            }
            None => (0, 0),
        };
        let disk_mb = match (self.disk_free_at_start, disk_free_mb(&self.data_dir)) {
            (Some(start), Some(now)) => start.saturating_sub(now),
            _ => 0,
        };
        Usage {
            cpus_milli,
            memory_mb,
            disk_mb,
            gpus,
        }
    }
}

fn disk_free_mb(dir: &std::path::Path) -> Option<u64> {
    nix::sys::statvfs::statvfs(dir)
        .ok()
        .map(|s| s.blocks_available() * s.fragment_size() / (1024 * 1024))
}

/// Samples this node every [`REPORT_PERIOD`] and reports to its zone's
/// aggregator (itself, when it is the one) as the module says; keeps the
/// reports its zone's members send it.
pub async fn report_loop(
    book: UsageBook,
    core: CoreHandle,
    data_dir: PathBuf,
    shutdown: CancellationToken,
) {
    let mut notes = core.notes();
    let mut sampler = Sampler::new(data_dir);
    let mut tick = tokio::time::interval(REPORT_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The last report sent: to whom, what, when.
    let mut last: Option<(NodeId, Report, tokio::time::Instant)> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            note = notes.recv() => {
                match note {
                    Ok((from, bytes)) => match postcard::from_bytes::<Note>(&bytes) {
                        Ok(Note::Usage(report)) => book.record(from, report),
                        Err(e) => debug!(from = %from, error = %e, "note not understood"),
                    },
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        debug!(lost = n, "usage reports arrived faster than kept");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
                continue;
            }
            _ = tick.tick() => {}
        }
        let Ok(summary) = core.summary().await else {
            return;
        };
        let Ok(meta) = core.meta().await else { return };
        let me = summary.me.0;
        let (offered, held) = summary.local;
        // A few reads of /proc and one statvfs: short enough for the runtime.
        let usage = sampler.sample(held.gpus, offered.cpus_milli);
        let aggregator = summary
            .snapshot
            .dcs
            .get(&meta.dc)
            .and_then(|d| d.zones.get(&meta.zone))
            .and_then(|z| z.aggregator);
        let report = Report {
            dc: meta.dc.clone(),
            zone: meta.zone.clone(),
            usage,
        };
        let Some(aggregator) = aggregator else {
            continue;
        };
        if aggregator == me {
            book.record(me, report);
            last = None;
            continue;
        }
        let now = tokio::time::Instant::now();
        let due = last.as_ref().is_none_or(|(to, sent, at)| {
            *to != aggregator
                || (&sent.dc, &sent.zone) != (&report.dc, &report.zone)
                || report.usage.moved(&sent.usage, &offered)
                || now.duration_since(*at) >= REFRESH
        });
        if !due {
            continue;
        }
        let body = postcard::to_allocvec(&Note::Usage(report.clone())).expect("encodes");
        match core.send_note(aggregator, body).await {
            Ok(Ok(())) => last = Some((aggregator, report, now)),
            Ok(Err(e)) => debug!(aggregator = %aggregator, error = %e, "usage report not sent"),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_reported_when_it_moves_enough_to_show() {
        let offered = Resources {
            cpus_milli: 8000,
            memory_mb: 16_000,
            disk_mb: 100_000,
            gpus: 1,
        };
        let last = Usage {
            cpus_milli: 1000,
            memory_mb: 4000,
            disk_mb: 10_000,
            gpus: 0,
        };
        let with = |f: &dyn Fn(&mut Usage)| {
            let mut u = last;
            f(&mut u);
            u
        };
        assert!(!last.moved(&last, &offered));
        // 5% of 8 CPUs is 400 thousandths; 2% of 16,000 MiB is 320; of
        // 100,000 MiB, 2,000.
        assert!(!with(&|u| u.cpus_milli = 1400).moved(&last, &offered));
        assert!(with(&|u| u.cpus_milli = 1401).moved(&last, &offered));
        assert!(with(&|u| u.cpus_milli = 599).moved(&last, &offered));
        assert!(!with(&|u| u.memory_mb = 4320).moved(&last, &offered));
        assert!(with(&|u| u.memory_mb = 4321).moved(&last, &offered));
        assert!(!with(&|u| u.disk_mb = 8000).moved(&last, &offered));
        assert!(with(&|u| u.disk_mb = 7999).moved(&last, &offered));
        assert!(with(&|u| u.gpus = 1).moved(&last, &offered));
        // Nothing offered: any change shows.
        let none = Resources::default();
        assert!(with(&|u| u.memory_mb = 4001).moved(&last, &none));
    }

    #[test]
    fn a_usage_note_fits_a_datagram_with_long_names() {
        let note = Note::Usage(Report {
            dc: "d".repeat(64),
            zone: "z".repeat(64),
            usage: Usage {
                cpus_milli: u64::MAX,
                memory_mb: u64::MAX,
                disk_mb: u64::MAX,
                gpus: u64::MAX,
            },
        });
        let bytes = postcard::to_allocvec(&note).unwrap();
        assert!(bytes.len() < 200, "{} bytes", bytes.len());
    }
}
