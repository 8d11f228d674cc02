//! `bench-summary`: the cost of `GET /v1/summary` on a node of a very
//! large cluster, answered from the node core's incremental
//! [`Summary`] rather than by walking every member.
//!
//! Builds the summary of `--members` members spread over `--dcs`
//! datacenters of `--zones` zones each, applies `--events` random member
//! events (state changes, metadata changes, removals and joins), and
//! prints per line: microseconds per summary request (a copy of the
//! groups, O(groups)), microseconds per member event, the same request
//! answered by a full walk of the members, and the memory the summary
//! takes (resident set growth while it is built, the members' metadata
//! records being held already, as the membership holds them).
//!
//! ```text
//! cargo run --release -p shoal-sim --bin bench-summary -- --members 500000
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_core::Summary;
use shoal_gossip::{Capacity, FreeClass, MemberMeta, MemberState, NodeId};

#[derive(Parser, Debug)]
#[command(about = "Cost of the incremental member summary against a full walk")]
struct Args {
    /// Members.
    #[arg(long, default_value_t = 500_000)]
    members: u64,
    /// Datacenters.
    #[arg(long, default_value_t = 5)]
    dcs: u32,
    /// Zones per datacenter.
    #[arg(long, default_value_t = 10)]
    zones: u32,
    /// Member events applied after the build.
    #[arg(long, default_value_t = 200_000)]
    events: u32,
    /// Summary requests timed.
    #[arg(long, default_value_t = 10_000)]
    requests: u32,
    /// Full walks timed.
    #[arg(long, default_value_t = 5)]
    walks: u32,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// A stopwatch: the bench measures real time (the simulator's rule
/// against clocks is for the simulated nodes, not for this report).
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
fn stopwatch() -> impl Fn() -> f64 {
    let start = std::time::Instant::now();
    move || start.elapsed().as_secs_f64()
}

/// Resident set size, bytes (Linux; 0 elsewhere).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn meta(rng: &mut ChaCha8Rng, dc: u32, zone: u32) -> Arc<MemberMeta> {
    let addr = SocketAddr::from(([10, 0, 0, 1], 5481));
    Arc::new(MemberMeta {
        name: format!("n{}", rng.random::<u32>()),
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
            cpus_milli: 1000 * rng.random_range(2..65),
            memory_mb: 1024 * rng.random_range(4..513),
            disk_mb: 100_000,
            gpus: rng.random_range(0..2),
        },
        runtimes: Vec::new(),
        agent_version: "0.1.0".into(),
        free_class: FreeClass(rng.random_range(0..9)),
        isolation: "cgroup-v2".into(),
        draining: false,
    })
}

/// What a full walk computes per request (as `GET /v1/status` does): one
/// pass over the members, summing the same figures per datacenter and
/// zone. Returns the total (alive, suspect, failed, left, live cpus) and
/// the number of groups.
fn walk(members: &[(NodeId, MemberState, Arc<MemberMeta>)]) -> ([u64; 5], usize) {
    let mut groups: BTreeMap<(&str, &str), [u64; 8]> = BTreeMap::new();
    let mut total = [0u64; 5];
    for (_, state, m) in members {
        let g = groups.entry((&m.dc, &m.zone)).or_default();
        let slot = match state {
            MemberState::Alive => 0,
            MemberState::Suspect => 1,
            MemberState::Failed => 2,
            MemberState::Left => 3,
        };
        g[slot] += 1;
        total[slot] += 1;
        if slot < 2 {
            let c = &m.capacity;
            g[4] += u64::from(c.cpus_milli);
            g[5] += c.memory_mb;
            g[6] += c.disk_mb;
            g[7] += u64::from(c.gpus);
            total[4] += u64::from(c.cpus_milli);
        }
    }
    (total, groups.len())
}

fn main() {
    let args = Args::parse();
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let n = args.members;
    let mut members: Vec<(NodeId, MemberState, Arc<MemberMeta>)> = (0..n)
        .map(|i| {
            let dc = rng.random_range(0..args.dcs);
            let zone = rng.random_range(0..args.zones);
            (
                NodeId(rng.random::<u64>() | 1 << 63 | i),
                MemberState::Alive,
                meta(&mut rng, dc, zone),
            )
        })
        .collect();

    let before = rss();
    let t = stopwatch();
    let mut summary = Summary::new();
    for (id, st, m) in &members {
        summary.update(*id, Some((*st, Some(m.clone()))));
    }
    let build = t();
    let memory = rss().saturating_sub(before);

    // Member events: a state change, a metadata change (free class), a
    // removal and a join in turn, at random members.
    let states = [
        MemberState::Alive,
        MemberState::Suspect,
        MemberState::Failed,
        MemberState::Left,
    ];
    let t = stopwatch();
    for e in 0..args.events {
        let i = rng.random_range(0..members.len());
        match e % 4 {
            0 => {
                members[i].1 = states[rng.random_range(0..4)];
                let (id, st, m) = &members[i];
                summary.update(*id, Some((*st, Some(m.clone()))));
            }
            1 => {
                let mut m = (*members[i].2).clone();
                m.free_class = FreeClass(rng.random_range(0..9));
                members[i].2 = Arc::new(m);
                let (id, st, m) = &members[i];
                summary.update(*id, Some((*st, Some(m.clone()))));
            }
            2 => {
                let (id, _, _) = members.swap_remove(i);
                summary.update(id, None);
            }
            _ => {
                let dc = rng.random_range(0..args.dcs);
                let zone = rng.random_range(0..args.zones);
                let m = (
                    NodeId(rng.random::<u64>() | 1 << 63),
                    MemberState::Alive,
                    meta(&mut rng, dc, zone),
                );
                summary.update(m.0, Some((m.1, Some(m.2.clone()))));
                members.push(m);
            }
        }
    }
    let per_event = t() * 1e6 / f64::from(args.events.max(1));

    let t = stopwatch();
    let mut groups = 0;
    for _ in 0..args.requests {
        let snap = summary.snapshot();
        groups += snap.dcs.values().map(|d| d.zones.len()).sum::<usize>();
    }
    let per_request = t() * 1e6 / f64::from(args.requests.max(1));

    let t = stopwatch();
    let mut walked = None;
    for _ in 0..args.walks {
        walked = Some(walk(&members));
    }
    let per_walk = t() * 1e6 / f64::from(args.walks.max(1));
    let (walk_total, _) = walked.unwrap_or_default();
    let t = &summary.groups().total;
    assert_eq!(
        walk_total,
        [
            t.members.alive,
            t.members.suspect,
            t.members.failed,
            t.members.left,
            t.capacity.cpus_milli
        ],
        "the incremental summary differs from a full walk"
    );

    let zones = groups / args.requests.max(1) as usize;
    let out = [
        format!("members {}", summary.len()),
        format!("groups {} dcs, {zones} zones", summary.groups().dcs.len()),
        format!("build_ms {:.0}", build * 1e3),
        format!("event_us {per_event:.2}"),
        format!("request_us {per_request:.2}"),
        format!("full_walk_us {per_walk:.0}"),
        format!("speedup {:.0}x", per_walk / per_request),
        format!("memory_mb {:.1}", memory as f64 / 1e6),
        format!(
            "memory_per_member_b {:.0}",
            memory as f64 / summary.len().max(1) as f64
        ),
        "check incremental == full walk: ok".to_owned(),
    ];
    // A report on stdout is this binary's purpose.
    #[allow(clippy::print_stdout)]
    for line in out {
        println!("{line}");
    }
}
