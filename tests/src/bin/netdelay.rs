//! netdelay: holds the packets that netfilter queues to it for a fixed
//! delay, then lets them go: added latency where the kernel has no
//! `sch_netem` (the machines this project is built on have none, but they
//! have `nfnetlink_queue`).
//!
//! Run it in the network namespace whose packets it delays, next to a
//! netfilter rule that queues them, for example:
//!
//! ```text
//! iptables -A OUTPUT -d 10.0.0.4,10.0.0.5 -j NFQUEUE --queue-num 0 --queue-bypass
//! netdelay --queue 0 --delay-ms 20 --count-file /tmp/delayed
//! ```
//!
//! (`--queue-bypass`: while no netdelay listens, the packets pass
//! undelayed. nftables' own `queue` statement needs the kernel's
//! `nft_queue`, which these machines lack; iptables' `NFQUEUE` target
//! works through its compatibility layer.)
//! Packets leave in the order they came, each `--delay-ms` after it was
//! queued. With `--count-file`, the number of packets delayed so far is
//! written there about once a second (tests check that the delay was in
//! effect). Used by tests/tests/two_datacenters.rs.

#![allow(clippy::print_stderr)]

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use nfq::{Queue, Verdict};

/// Delays the packets an nftables `queue` rule hands to this process.
#[derive(Parser)]
#[command(name = "netdelay")]
struct Args {
    /// The netfilter queue number to bind (the rule's `queue num`).
    #[arg(long, default_value_t = 0)]
    queue: u16,
    /// How long each packet is held, in milliseconds.
    #[arg(long, default_value_t = 20)]
    delay_ms: u64,
    /// Where to write the count of packets delayed so far.
    #[arg(long)]
    count_file: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let delay = Duration::from_millis(args.delay_ms);
    let mut q = Queue::open().context(
        "opening a netfilter queue socket (needs root and the kernel's nfnetlink_queue)",
    )?;
    q.bind(args.queue)
        .with_context(|| format!("binding netfilter queue {}", args.queue))?;
    // Only the verdict matters: copy no more of each packet than a header.
    q.set_copy_range(args.queue, 64)
        .context("setting the copy range")?;
    q.set_queue_max_len(args.queue, 65_536)
        .context("setting the queue length")?;
    q.set_nonblocking(true);
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    let mut count: u64 = 0;
    let mut written = Instant::now();
    loop {
        loop {
            match q.recv() {
                Ok(msg) => held.push_back((Instant::now() + delay, msg)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e).context("receiving from the netfilter queue"),
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, mut msg)) = held.pop_front() {
                msg.set_verdict(Verdict::Accept);
                q.verdict(msg).context("releasing a packet")?;
                count += 1;
            }
        }
        if let Some(path) = &args.count_file
            && now.duration_since(written) >= Duration::from_secs(1)
        {
            written = now;
            // Written whole then renamed, so that a reader never sees half.
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, count.to_string())
                .and_then(|()| std::fs::rename(&tmp, path))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        // Wake at the next packet due, and at least every millisecond to
        // pick up new ones (the socket is polled, not waited on).
        let next = held
            .front()
            .map_or(Duration::from_millis(1), |(due, _)| {
                due.saturating_duration_since(now)
            })
            .min(Duration::from_millis(1));
        std::thread::sleep(next);
    }
}
