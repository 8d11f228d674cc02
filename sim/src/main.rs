//! `shoal-sim`: runs shoal's real gossip and placement code on simulated
//! nodes under seeded faults, and reports what it measured and checked.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use shoal_sim::scale::Comparison;
use shoal_sim::svg::{Line, line_chart};
use shoal_sim::{Mode, Params, Report, Scenario};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OnOff {
    On,
    Off,
}

/// Deterministic simulator of a shoal cluster.
///
/// Runs the real membership (SWIM) and placement state machines of every
/// node over a virtual network with seeded latency, loss, partitions, slow
/// nodes, crashes and restarts. The same --seed gives the same run; a
/// failed check prints the command that replays it and exits with status 1.
///
/// Examples:
///
///   shoal-sim --nodes 300                        # crashes under loss + a wave of jobs
///
///   shoal-sim --nodes 300 --scenario partition --json
///
///   shoal-sim --nodes 3000 --warm --dcs 5 --scenario partition --partition-one --partition 300 --duration 330
///
///   shoal-sim --nodes 1000 --scenario loss --loss 0.1 --seed 7
///
///   shoal-sim --mode scale --nodes 500000 --scenario loss --loss 0.01
///
///   shoal-sim --mode scale --nodes 100000 --scenario jobs   # real placers, shared view
///
///   shoal-sim --mode scale --nodes 500000 --dcs 5 --scenario partition --partition-one --partition 300 --duration 330 --loss 0.01 --reach-only-dc-size 64 --fill 0.1 --tasks-per-sec 1000000
///
///   shoal-sim --mode scale --nodes 100000        # crashes (model) during a wave (real placers)
///
///   shoal-sim --nodes 5000 --warm                # real code on 5,000 nodes, started formed
///
///   shoal-sim --scenario triggers --nodes 500000 --triggers 100000  # real trigger crate and ring, 1% churn/h
///
///   shoal-sim --nodes 10000 --warm --fill 0.1    # 10,000 nodes: about 19 GB
///
///   shoal-sim --validate 1000,5000,10000 --warm  # scale model vs real code
///
///   shoal-sim --mode scale --scenario loss --sweep 1000,10000,100000 --out DIR
///
/// Full mode costs O(N²) memory (every node holds every member, about
/// 0.2 KB per pair started formed, more formed by joins) and, forming by
/// joins, about N³ time: the loss scenario takes about 30 s and 0.33 GB at
/// 1,000 nodes, 6 minutes and 2.7 GB at 3,000. With --warm (the cluster
/// starts formed) 3,000 nodes take 80 s, and `--validate 1000,5000,10000
/// --warm` 14 minutes and 19 GB.
#[derive(Debug, Parser)]
#[command(name = "shoal-sim", version, verbatim_doc_comment)]
struct Cli {
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 300)]
    nodes: usize,
    /// Seed of every random draw: the same seed replays the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Full (the real code on every node) or scale (modeled membership; for
    /// `--scenario jobs`, the real placer on every node sharing one view).
    /// Default: full, but scale for `--scenario triggers` (scale only).
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// What to simulate.
    #[arg(long, value_enum, default_value = "default")]
    scenario: Scenario,
    /// Membership preset: lan, wan or test.
    #[arg(long, default_value = "lan")]
    gossip: String,
    /// Override the preset's suspicion multiplier (timeout = mult × log10 N
    /// × probe period).
    #[arg(long)]
    suspicion_mult: Option<f64>,
    /// Override the preset's transmissions multiplier (each update is
    /// re-sent mult × log10 N times).
    #[arg(long)]
    transmissions_mult: Option<f64>,
    /// Override the preset's indirect probes (members asked to probe when
    /// a direct probe gets no answer; lan: 5).
    #[arg(long)]
    indirect_probes: Option<usize>,
    /// Override the preset's cross-datacenter gossip share (the chance a
    /// gossip datagram foca addresses to another datacenter goes there
    /// rather than to a member of the sender's; lan: 0.1, 1: foca's
    /// choice).
    #[arg(long)]
    cross_dc_gossip: Option<f64>,
    /// Override the preset's cross-datacenter probe share (the chance a
    /// probe foca starts of a member of another datacenter is sent rather
    /// than left to that datacenter's own probes; lan: 0.1, 1: foca's
    /// choice).
    #[arg(long)]
    cross_dc_probes: Option<f64>,
    /// Override the preset's `reach_only_dc_size` (0, off, in the
    /// presets): probes of the members of another datacenter with at least
    /// this many members only check that it is reached, so that a cut of
    /// it is one fact on each side, not a suspicion and a down per member
    /// (full mode; docs/gossip.md).
    #[arg(long)]
    reach_only_dc_size: Option<usize>,
    /// Datacenters (nodes are spread round-robin).
    #[arg(long, default_value_t = 2)]
    dcs: usize,
    /// Zones per datacenter.
    #[arg(long, default_value_t = 3)]
    zones: usize,
    /// Random loss of each datagram during the scenario, 0..1 (default:
    /// 0.01 for default, 0.05 for loss, else 0).
    #[arg(long)]
    loss: Option<f64>,
    /// Fraction of the nodes made slow.
    #[arg(long, default_value_t = 0.0)]
    slow_fraction: f64,
    /// Extra delay of a slow node's traffic, milliseconds.
    #[arg(long, default_value_t = 50)]
    slow_ms: u64,
    /// Seconds of scenario after the cluster formed (default 60; triggers:
    /// 10800, three hours).
    #[arg(long)]
    duration: Option<f64>,
    /// Quiet seconds after the scenario (partitions healed) before the
    /// eventually_* checks (default 40; triggers: 900, past the slots'
    /// 10-minute deadline).
    #[arg(long)]
    settle: Option<f64>,
    /// Longest wait, seconds, for the cluster to form.
    #[arg(long, default_value_t = 60.0)]
    form_timeout: f64,
    /// Nodes joining per second while the cluster forms.
    #[arg(long, default_value_t = 100.0)]
    join_rate: f64,
    /// Full mode: form the cluster at once instead of by joins. Every node
    /// starts knowing every member and its record (the real core's
    /// `Membership::restore`, which takes them as a copied list: nothing
    /// is re-broadcast), as a cluster formed long ago whose join news has
    /// settled. A join storm's news costs each node a linear scan of
    /// foca's member list per update, so formation by joins grows as N³
    /// (50 minutes at 7,000 nodes); the scale model starts formed too.
    #[arg(long)]
    warm: bool,
    /// join-storm: seconds within which every node joins.
    #[arg(long, default_value_t = 10.0)]
    storm: f64,
    /// churn: percent of the nodes crashing (and restarting) per minute.
    #[arg(long, default_value_t = 2.0)]
    churn_per_min: f64,
    /// churn: seconds a crashed node stays down.
    #[arg(long, default_value_t = 20.0)]
    churn_down: f64,
    /// mass-failure: fraction of the nodes failing at once.
    #[arg(long, default_value_t = 0.10)]
    fail_fraction: f64,
    /// default, loss: nodes crashed, 5 s apart.
    #[arg(long, default_value_t = 3)]
    crashes: usize,
    /// partition: seconds the datacenters stay apart.
    #[arg(long, default_value_t = 30.0)]
    partition: f64,
    /// partition: cut only the last datacenter off from the others (a
    /// site losing its links), instead of every datacenter from every
    /// other.
    #[arg(long)]
    partition_one: bool,
    /// Tasks submitted per second while a wave lasts (0: the whole fill
    /// within a fifth of the scenario).
    #[arg(long, default_value_t = 0.0)]
    tasks_per_sec: f64,
    /// Task CPU submitted, as a fraction of the cluster's CPU (default 0.5;
    /// 0.9 for jobs).
    #[arg(long)]
    fill: Option<f64>,
    /// triggers: how many (hourly, each with a price condition).
    #[arg(long, default_value_t = 100_000)]
    triggers: usize,
    /// triggers: percent of the nodes crashing per hour, each replaced by
    /// a new node joining 10-120 s later.
    #[arg(long, default_value_t = 1.0)]
    churn_per_hour: f64,
    /// Submit jobs (default: every scenario but join-storm and loss).
    #[arg(long, value_enum)]
    jobs: Option<OnOff>,
    /// Instead of one run: validate the scale model against full mode at
    /// these sizes (comma-separated), on the loss scenario (--loss, default
    /// 0.01; --crashes), and print both side by side.
    #[arg(long, value_name = "N,N,...", value_delimiter = ',')]
    validate: Vec<usize>,
    /// Instead of one run: the same scenario and mode at each of these
    /// sizes (comma-separated), one table row per size; with --out, the
    /// rows as sweep.csv and each metric against N (log axis) as SVG
    /// (charts with nothing to draw are left out).
    #[arg(
        long,
        value_name = "N,N,...",
        value_delimiter = ',',
        conflicts_with = "validate"
    )]
    sweep: Vec<usize>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Write the time series and detection delays as CSV, their plots as
    /// SVG, and the report as JSON into DIR.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

impl Cli {
    fn params(&self) -> Result<Params> {
        let scenario = self.scenario;
        let mut p = Params::new(scenario, self.nodes, self.seed);
        if let Some(m) = self.mode {
            p.mode = m;
        }
        let dur = |name: &str, s: f64| -> Result<Duration> {
            Duration::try_from_secs_f64(s).with_context(|| format!("--{name} {s}: not a duration"))
        };
        p.gossip = self.gossip.clone();
        p.suspicion_mult = self.suspicion_mult;
        p.transmissions_mult = self.transmissions_mult;
        p.indirect_probes = self.indirect_probes;
        p.cross_dc_gossip = self.cross_dc_gossip;
        p.cross_dc_probes = self.cross_dc_probes;
        p.reach_only_dc_size = self.reach_only_dc_size;
        p.dcs = self.dcs;
        p.zones = self.zones;
        if let Some(l) = self.loss {
            if !(0.0..=1.0).contains(&l) {
                bail!("--loss {l}: must be between 0 and 1");
            }
            p.loss = Some(l);
        }
        p.slow_fraction = self.slow_fraction.clamp(0.0, 1.0);
        p.slow = Duration::from_millis(self.slow_ms);
        if let Some(d) = self.duration {
            p.duration = dur("duration", d)?;
        }
        if let Some(s) = self.settle {
            p.settle = dur("settle", s)?;
        }
        p.form_timeout = dur("form-timeout", self.form_timeout)?;
        p.join_rate = self.join_rate;
        p.warm = self.warm;
        p.storm = dur("storm", self.storm)?;
        p.churn_per_min = self.churn_per_min;
        p.churn_down = dur("churn-down", self.churn_down)?;
        p.fail_fraction = self.fail_fraction.clamp(0.0, 1.0);
        p.crashes = self.crashes;
        p.partition = dur("partition", self.partition)?;
        p.partition_one = self.partition_one;
        p.tasks_per_sec = self.tasks_per_sec;
        if let Some(f) = self.fill {
            p.fill = f;
        }
        p.jobs = self.jobs.map(|j| matches!(j, OnOff::On));
        p.triggers = self.triggers;
        p.churn_per_hour = self.churn_per_hour.max(0.0);
        Ok(p)
    }
}

/// Peak resident memory of this process, MiB (Linux).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Writes `contents` to `dir/name`, naming the file in the error.
fn write_file(dir: &std::path::Path, name: &str, contents: impl AsRef<[u8]>) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
}

fn write_out(dir: &PathBuf, report: &Report) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut csv = String::from(
        "t_s,up,running,waiting,duplicates,gossip_bytes_per_node,placement_msgs_per_node\n",
    );
    for s in &report.series {
        csv += &format!(
            "{},{},{},{},{},{:.1},{:.3}\n",
            s.t_s,
            s.up,
            s.running,
            s.waiting,
            s.duplicates,
            s.gossip_bytes_per_node,
            s.placement_msgs_per_node
        );
    }
    write_file(dir, "series.csv", csv)?;
    let mut det = String::from("delay_s\n");
    for d in &report.detect_delays {
        det += &format!("{d}\n");
    }
    write_file(dir, "detections.csv", det)?;
    // Plots: the time series of the run, and the detection delays as a
    // distribution.
    let series = |f: fn(&shoal_sim::report::Sample) -> f64| -> Vec<(f64, f64)> {
        report.series.iter().map(|s| (s.t_s, f(s))).collect()
    };
    let title = format!(
        "{} nodes, {} ({} mode), seed {}",
        report.nodes, report.scenario, report.mode, report.seed
    );
    let charts = [
        (
            "tasks.svg",
            "tasks",
            vec![
                Line {
                    name: "running",
                    points: series(|s| s.running as f64),
                },
                Line {
                    name: "waiting",
                    points: series(|s| s.waiting as f64),
                },
                Line {
                    name: "running twice",
                    points: series(|s| s.duplicates as f64),
                },
            ],
        ),
        (
            "nodes.svg",
            "nodes up",
            vec![Line {
                name: "up",
                points: series(|s| s.up as f64),
            }],
        ),
        (
            "traffic.svg",
            "per node per second",
            vec![
                Line {
                    name: "gossip bytes",
                    points: series(|s| s.gossip_bytes_per_node),
                },
                Line {
                    name: "placement messages x100",
                    points: series(|s| s.placement_msgs_per_node * 100.0),
                },
            ],
        ),
    ];
    for (file, y, lines) in charts {
        let chart = line_chart(&title, "simulated seconds", y, &lines, false);
        write_file(dir, file, chart)?;
    }
    let n = report.detect_delays.len().max(1) as f64;
    let cdf: Vec<(f64, f64)> = report
        .detect_delays
        .iter()
        .enumerate()
        .map(|(k, d)| (*d, (k + 1) as f64 / n))
        .collect();
    let chart = line_chart(
        &title,
        "seconds after the crash",
        "fraction of (crash, observer) pairs that knew",
        &[Line {
            name: "detection",
            points: cdf,
        }],
        false,
    );
    write_file(dir, "detection.svg", chart)?;
    write_file(dir, "report.json", serde_json::to_string_pretty(report)?)?;
    Ok(())
}

/// Tolerance claimed for the scale model's median detection, seconds.
const TOLERANCE_DETECT_S: f64 = 1.5;
/// Tolerance claimed for its detection tail (99.9%), seconds: the worst of
/// a few crashes is noisier than the median (measured 1.7–2.3 s apart at
/// 500 and 1,000 nodes, 5 crashes, seed 1).
const TOLERANCE_TAIL_S: f64 = 2.5;
/// Tolerance claimed for its datagrams per node per second, relative.
const TOLERANCE_MSGS: f64 = 0.25;

#[allow(clippy::print_stdout)]
fn validate(cli: &Cli) -> Result<ExitCode> {
    let loss = cli.loss.unwrap_or(0.01);
    let mut view = ProgressView::new();
    let rows =
        shoal_sim::scale::validate(&cli.validate, &cli.params()?, loss, cli.crashes, &mut |p| {
            view.update(p)
        });
    view.bar.finish_and_clear();
    let rows = rows?;
    let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.2}"));
    println!(
        "scale model vs real code: {} crashes under {loss} loss, seed {}; tolerance claimed: median detection within {TOLERANCE_DETECT_S} s, 99.9% within {TOLERANCE_TAIL_S} s, datagrams per node within {:.0}%",
        cli.crashes,
        cli.seed,
        TOLERANCE_MSGS * 100.0
    );
    println!(
        "{:>7} {:>6} {:>9} {:>9} {:>9} {:>9} {:>11} {:>10} {:>5}",
        "nodes", "mode", "first s", "p50 s", "p99.9 s", "all s", "dgrams/n/s", "B/n/s", "FP"
    );
    let mut all_ok = true;
    for c in &rows {
        for r in [&c.full, &c.scale] {
            println!(
                "{:>7} {:>6} {:>9} {:>9} {:>9} {:>9} {:>11.2} {:>10.0} {:>5}",
                r.nodes,
                r.mode,
                f(r.detect_first_s),
                f(r.detect_p50_s),
                f(r.detect_p999_s),
                f(r.detect_all_s),
                r.msgs_per_node_s,
                r.bytes_per_node_s,
                r.false_positives
            );
        }
        let close = |a: Option<f64>, b: Option<f64>, within: f64| match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() <= within,
            _ => false,
        };
        let msgs_ok = (c.full.msgs_per_node_s - c.scale.msgs_per_node_s).abs()
            <= TOLERANCE_MSGS * c.full.msgs_per_node_s;
        let ok = close(
            c.full.detect_p50_s,
            c.scale.detect_p50_s,
            TOLERANCE_DETECT_S,
        ) && close(
            c.full.detect_p999_s,
            c.scale.detect_p999_s,
            TOLERANCE_TAIL_S,
        ) && msgs_ok;
        all_ok &= ok;
        println!(
            "{:>7} {}",
            "",
            if ok {
                "within tolerance"
            } else {
                "OUTSIDE tolerance"
            }
        );
        println!(
            "{:>7} {:>10} {:>11} {:>11} {:>9} {:>9}",
            "", "traffic", "full dg/s", "scale dg/s", "full B/s", "scale B/s"
        );
        for (a, b) in c.full.traffic.iter().zip(&c.scale.traffic) {
            println!(
                "{:>7} {:>10} {:>11.3} {:>11.3} {:>9.0} {:>9.0}",
                "",
                a.group,
                a.msgs_per_node_s,
                b.msgs_per_node_s,
                a.bytes_per_node_s,
                b.bytes_per_node_s
            );
        }
    }
    if let Some(dir) = &cli.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut csv = String::from(
            "nodes,mode,detect_first_s,detect_p50_s,detect_p999_s,detect_all_s,msgs_per_node_s,bytes_per_node_s,false_positives\n",
        );
        let o = |v: Option<f64>| v.map_or(String::new(), |x| x.to_string());
        for c in &rows {
            for r in [&c.full, &c.scale] {
                csv += &format!(
                    "{},{},{},{},{},{},{},{},{}\n",
                    r.nodes,
                    r.mode,
                    o(r.detect_first_s),
                    o(r.detect_p50_s),
                    o(r.detect_p999_s),
                    o(r.detect_all_s),
                    r.msgs_per_node_s,
                    r.bytes_per_node_s,
                    r.false_positives
                );
            }
        }
        write_file(dir, "validate.csv", csv)?;
        let mut by_group = String::from("nodes,mode,group,msgs_per_node_s,bytes_per_node_s\n");
        for c in &rows {
            for r in [&c.full, &c.scale] {
                for t in &r.traffic {
                    by_group += &format!(
                        "{},{},{},{},{}\n",
                        r.nodes, r.mode, t.group, t.msgs_per_node_s, t.bytes_per_node_s
                    );
                }
            }
        }
        write_file(dir, "validate-traffic.csv", by_group)?;
        let line = |name, sel: fn(&Comparison) -> &Report, q: fn(&Report) -> Option<f64>| Line {
            name,
            points: rows
                .iter()
                .filter_map(|c| q(sel(c)).map(|v| (sel(c).nodes as f64, v)))
                .collect(),
        };
        let detection = [
            line("full p50", |c| &c.full, |r| r.detect_p50_s),
            line("scale p50", |c| &c.scale, |r| r.detect_p50_s),
            line("full p99.9", |c| &c.full, |r| r.detect_p999_s),
            line("scale p99.9", |c| &c.scale, |r| r.detect_p999_s),
        ];
        let traffic = [
            line("full", |c| &c.full, |r| Some(r.bytes_per_node_s)),
            line("scale", |c| &c.scale, |r| Some(r.bytes_per_node_s)),
        ];
        let charts = [
            ("validate.svg", "detection", "seconds", &detection[..]),
            (
                "validate-traffic.svg",
                "gossip bytes per node per second",
                "bytes/s",
                &traffic[..],
            ),
        ];
        for (file, what, y, lines) in charts {
            let title = format!("{what}: real code (full) and model (scale)");
            write_file(dir, file, line_chart(&title, "nodes", y, lines, true))?;
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One run (of a sweep), with what it cost.
struct SweepRow {
    report: Report,
    wall_s: f64,
    rss_mb: Option<f64>,
}

/// Shows how far a run has got on stderr: a bar on a terminal; otherwise
/// (a run sent to a log) a line a minute. Runs at thousands of nodes take
/// tens of minutes and print their report only at the end.
struct ProgressView {
    bar: indicatif::ProgressBar,
    terminal: bool,
    #[allow(clippy::disallowed_types)]
    started: std::time::Instant,
    /// Wall seconds of the last line printed (not on a terminal).
    last_line_s: f64,
}

impl ProgressView {
    #[allow(clippy::disallowed_methods, clippy::disallowed_types)]
    fn new() -> ProgressView {
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bar = if terminal {
            indicatif::ProgressBar::new_spinner()
        } else {
            indicatif::ProgressBar::hidden()
        };
        ProgressView {
            bar,
            terminal,
            started: std::time::Instant::now(),
            last_line_s: 0.0,
        }
    }

    #[allow(clippy::print_stderr)]
    fn update(&mut self, p: &shoal_sim::Progress) {
        let of = p
            .end_s
            .map_or(" (forming)".to_string(), |e| format!(" of {e:.0}"));
        let msg = format!(
            "{} nodes: simulated {:.1} s{of}, {:.1}M events",
            p.nodes,
            p.simulated_s,
            p.events as f64 / 1e6
        );
        if self.terminal {
            if let Some(e) = p.end_s
                && self.bar.length().is_none()
            {
                self.bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} {wide_bar} {percent}% ({elapsed} elapsed, about {eta} left)",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                self.bar.set_length((e * 10.0) as u64);
            }
            self.bar.set_position((p.simulated_s * 10.0) as u64);
            self.bar.set_message(msg);
            return;
        }
        let wall_s = self.started.elapsed().as_secs_f64();
        if wall_s - self.last_line_s >= 60.0 {
            self.last_line_s = wall_s;
            eprintln!("progress: {msg}, {wall_s:.0} s wall");
        }
    }
}

/// Runs `params`, timing it by the wall clock (the only clock the
/// simulator reads) and reading the process's peak memory after.
fn timed_run(params: Params) -> Result<SweepRow> {
    #[allow(clippy::disallowed_methods, clippy::disallowed_types)]
    let wall = std::time::Instant::now();
    let mut view = ProgressView::new();
    let report = shoal_sim::run_with(params, &mut |p| view.update(p));
    view.bar.finish_and_clear();
    let report = report?;
    #[allow(clippy::disallowed_methods)]
    let wall_s = wall.elapsed().as_secs_f64();
    Ok(SweepRow {
        report,
        wall_s,
        rss_mb: peak_rss_mb(),
    })
}

#[allow(clippy::print_stdout)]
fn sweep(cli: &Cli) -> Result<ExitCode> {
    let f = |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |x| format!("{x:.digits$}"));
    println!(
        "{} mode, scenario {}, seed {}: each size is one run",
        cli.params()?.mode.as_str(),
        cli.scenario,
        cli.seed
    );
    println!(
        "{:>7} {:>8} {:>8} {:>5} {:>8} {:>9} {:>9} {:>8} {:>8} {:>5} {:>8} {:>8}",
        "nodes",
        "p50 s",
        "p99.9 s",
        "FP",
        "B/n/s",
        "place p50",
        "place p99",
        "packing",
        "unplaced",
        "dups",
        "wall s",
        "MiB"
    );
    let mut rows = Vec::new();
    let mut all_ok = true;
    for &n in &cli.sweep {
        let mut params = cli.params()?;
        params.nodes = n;
        // Reset the peak-memory mark so that each row shows its own run
        // (Linux; elsewhere the column shows the peak so far).
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let SweepRow {
            report,
            wall_s,
            rss_mb,
        } = timed_run(params)?;
        println!(
            "{:>7} {:>8} {:>8} {:>5} {:>8.0} {:>9} {:>9} {:>8} {:>8} {:>5} {:>8.1} {:>8}",
            n,
            f(report.detect_p50_s, 2),
            f(report.detect_p999_s, 2),
            report.false_positives,
            report.bytes_per_node_s,
            f(report.placement_p50_ms, 0),
            f(report.placement_p99_ms, 0),
            f(report.packing_efficiency, 3),
            report.unplaced,
            report.duplicates_after_convergence,
            wall_s,
            f(rss_mb, 0)
        );
        if !report.ok {
            all_ok = false;
            eprintln!(
                "a check failed at {n} nodes; replay with: {}",
                report.command
            );
        }
        rows.push(SweepRow {
            report,
            wall_s,
            rss_mb,
        });
    }
    if let Some(dir) = &cli.out {
        write_sweep(dir, &rows)?;
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// sweep.csv and one chart per metric against N.
fn write_sweep(dir: &std::path::Path, rows: &[SweepRow]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let o = |v: Option<f64>| v.map_or(String::new(), |x| x.to_string());
    let mut csv = String::from(
        "nodes,mode,scenario,seed,detect_first_s,detect_p50_s,detect_p999_s,detect_all_s,false_positives,msgs_per_node_s,bytes_per_node_s,placement_bytes_per_node_s,placement_p50_ms,placement_p99_ms,placement_max_ms,placements_per_s,packing_efficiency,load_imbalance,unplaced,duplicates_after_convergence,wall_s,peak_rss_mb\n",
    );
    for SweepRow {
        report: r,
        wall_s,
        rss_mb,
    } in rows
    {
        csv += &format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            r.nodes,
            r.mode,
            r.scenario,
            r.seed,
            o(r.detect_first_s),
            o(r.detect_p50_s),
            o(r.detect_p999_s),
            o(r.detect_all_s),
            r.false_positives,
            r.msgs_per_node_s,
            r.bytes_per_node_s,
            r.placement_bytes_per_node_s,
            o(r.placement_p50_ms),
            o(r.placement_p99_ms),
            o(r.placement_max_ms),
            o(r.placements_per_s),
            o(r.packing_efficiency),
            o(r.load_imbalance),
            r.unplaced,
            r.duplicates_after_convergence,
            wall_s,
            o(*rss_mb)
        );
    }
    write_file(dir, "sweep.csv", csv)?;
    let line = |name, q: fn(&SweepRow) -> Option<f64>| Line {
        name,
        points: rows
            .iter()
            .filter_map(|r| q(r).map(|v| (r.report.nodes as f64, v)))
            .collect(),
    };
    let charts: [(&str, &str, &str, Vec<Line<'_>>); 6] = [
        (
            "sweep-detection.svg",
            "failure detection (share of nodes knowing)",
            "seconds",
            vec![
                line("first", |r| r.report.detect_first_s),
                line("50%", |r| r.report.detect_p50_s),
                line("99.9%", |r| r.report.detect_p999_s),
                line("100%", |r| r.report.detect_all_s),
            ],
        ),
        (
            "sweep-traffic.svg",
            "bytes per node per second",
            "bytes/s",
            vec![
                line("gossip", |r| Some(r.report.bytes_per_node_s)),
                line("placement", |r| Some(r.report.placement_bytes_per_node_s)),
            ],
        ),
        (
            "sweep-placement.svg",
            "placement latency",
            "ms",
            vec![
                line("p50", |r| r.report.placement_p50_ms),
                line("p99", |r| r.report.placement_p99_ms),
                line("max", |r| r.report.placement_max_ms),
            ],
        ),
        (
            "sweep-packing.svg",
            "packing efficiency (vs central best-fit) and load imbalance (max/mean)",
            "ratio",
            vec![
                line("packing", |r| r.report.packing_efficiency),
                line("imbalance", |r| r.report.load_imbalance),
            ],
        ),
        (
            "sweep-faults.svg",
            "false positives, unplaced tasks, duplicates after convergence",
            "count",
            vec![
                line("false positives", |r| Some(r.report.false_positives as f64)),
                line("unplaced", |r| Some(r.report.unplaced as f64)),
                line("duplicates", |r| {
                    Some(r.report.duplicates_after_convergence as f64)
                }),
            ],
        ),
        (
            "sweep-cost.svg",
            "simulator cost",
            "seconds / MiB",
            vec![
                line("wall s", |r| Some(r.wall_s)),
                line("peak MiB", |r| r.rss_mb),
            ],
        ),
    ];
    for (file, what, y, lines) in charts {
        // A scenario without placement (or without crashes) has nothing
        // to draw in some charts: no empty files.
        if lines.iter().all(|l| l.points.is_empty()) {
            continue;
        }
        let title = format!("{what} against cluster size");
        write_file(
            dir,
            file,
            line_chart(&title, "nodes (log)", y, &lines, true),
        )?;
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    if !cli.validate.is_empty() {
        return validate(&cli);
    }
    if !cli.sweep.is_empty() {
        return sweep(&cli);
    }
    let SweepRow {
        report,
        wall_s,
        rss_mb: rss,
    } = timed_run(cli.params()?)?;
    if let Some(dir) = &cli.out {
        write_out(dir, &report)?;
    }
    if cli.json {
        let mut v = serde_json::to_value(&report)?;
        v["wall_s"] = serde_json::json!(wall_s);
        v["peak_rss_mb"] = serde_json::json!(rss);
        println!("{v}");
    } else {
        print!("{report}");
        println!(
            "{:<34} {wall_s:.1} s wall, peak memory {}",
            "run time",
            rss.map_or("-".into(), |m| format!("{m:.0} MiB"))
        );
    }
    if !report.ok {
        eprintln!("a check failed; replay with: {}", report.command);
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
