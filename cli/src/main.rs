//! `shoal`: run an agent, or drive a cluster through any node's HTTP API.

#![allow(clippy::print_stdout)]

mod acl;
#[cfg(test)]
mod api_paths;
mod artifacts;
mod deployments;
#[cfg(test)]
mod doc_examples;
mod installs;
mod jobs;
mod keyring;
mod output;
mod packages;
mod secrets;
mod tasks;
mod triggers;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use shoal_node::api::types::{NodeView, StatusView};
use shoal_node::{Agent, AgentOptions};

use crate::output::{age, cpus, mib, table};
use shoal_client::{Client, segment};

/// shoal: a data-center operating system with no master.
///
/// Every machine runs `shoal agent`; together they pool their CPUs, memory,
/// disk and GPUs. Every other command talks to the HTTP API of any node
/// (`--addr`, default http://127.0.0.1:5480).
#[derive(Parser, Debug)]
#[command(name = "shoal", version, propagate_version = true)]
struct Cli {
    /// URL of a node's API (`http://host:port` or `host:port`).
    #[arg(
        long,
        global = true,
        env = "SHOAL_ADDR",
        default_value = "http://127.0.0.1:5480"
    )]
    addr: String,

    /// API token: an ACL token (`shoal token create`), or before `shoal acl
    /// bootstrap` the cluster token, which `shoal agent --join` also takes
    /// to admit a machine (printed by the founding agent; also in the file
    /// `token` of the data dir on every node).
    #[arg(long, global = true, env = "SHOAL_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,

    /// PEM file of the CA to trust for an `https://` address: the cluster's
    /// API CA, `api-ca.pem` in any agent's data dir. Default: the file of
    /// this machine's agent when there is one, else the public roots.
    #[arg(long, global = true, env = "SHOAL_CACERT", value_name = "FILE")]
    cacert: Option<PathBuf>,

    /// Allow plain `http://` to another machine (an agent started with
    /// --api-insecure on a trusted network); refused otherwise, since the
    /// token would travel in clear.
    #[arg(long, global = true, env = "SHOAL_INSECURE")]
    insecure: bool,

    /// What `--cacert` (or the local agent's CA) made of it.
    #[arg(skip)]
    trust: Option<shoal_client::Trust>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node of the cluster on this machine.
    ///
    /// The first start with no --join founds a cluster and prints the command
    /// that joins it. Later starts reuse the data dir (identity, token,
    /// settings, known members) and need no flags.
    Agent(Box<AgentArgs>),
    /// List the nodes this node knows, with their state.
    Nodes,
    /// Inspect one node.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Show the pooled resources of the cluster, in total and per datacenter.
    Status,
    /// Submit a job (create or update) from a TOML file or from flags.
    ///
    /// With a file, the flags given are applied over it: --name, --type,
    /// --count, --cmd, --image, --cpus and --memory-mb replace the file's
    /// values; --env and --port set one variable or port each and keep the
    /// file's others; --constraint adds to the file's constraints
    /// (`shoal run web.toml --count 5 --cpus 2`).
    ///
    /// An update prints what changed. The job is accepted by the node you
    /// talk to, even cut off from the rest, and reaches every node.
    Run(Box<jobs::RunArgs>),
    /// List the jobs.
    Jobs {
        /// Include deleted jobs (kept as tombstones for a while).
        #[arg(long)]
        all: bool,
    },
    /// Inspect one job.
    #[command(subcommand)]
    Job(JobCommand),
    /// Change how many tasks a job runs.
    Scale {
        /// Job name.
        name: String,
        /// Tasks wanted.
        #[arg(allow_negative_numbers = true)]
        count: i64,
        /// Only if the job is at this version.
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// List rolling deployments: the latest of every job, or every one of
    /// JOB (newest first), with how many new tasks are healthy.
    Deployments {
        /// Only this job (all its deployments).
        job: Option<String>,
    },
    /// Act on a job's rolling deployment in progress.
    #[command(subcommand)]
    Deployment(DeploymentCommand),
    /// List tasks: where they run, their state, why they wait.
    Ps {
        /// Only this job.
        job: Option<String>,
    },
    /// Where a service's healthy tasks are reached: node, host and port,
    /// asked of the coordinators of the job's tasks (any node answers).
    Endpoints {
        /// Job name.
        job: String,
        /// The named port to show (default: the job's first port).
        #[arg(long)]
        port: Option<String>,
        /// Every task that has a node, whatever its state and health.
        #[arg(long)]
        all: bool,
    },
    /// Print a task's output, from whichever node runs it.
    Logs {
        /// Task: job/index (web/frontend/3), or job@node for system jobs.
        task: String,
        /// Keep printing as the task writes.
        #[arg(short, long)]
        follow: bool,
        /// Standard error instead of standard output.
        #[arg(long)]
        stderr: bool,
    },
    /// Stop a job: delete it and stop its tasks.
    Stop {
        /// Job name.
        name: String,
        /// Only if the job is at this version.
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// Packages: render and lint them, browse the built-in library
    /// (these commands need no cluster).
    #[command(subcommand)]
    Package(packages::PackageCommand),
    /// Artifacts: files stored in the cluster by digest, which tasks fetch
    /// into their sandboxes (`[[task.artifacts]]`).
    #[command(subcommand)]
    Artifact(artifacts::ArtifactCommand),
    /// Triggers: run a job on a schedule (`every`, `cron` in a time zone)
    /// when conditions hold (a price feed, the cheapest node's
    /// `price_per_hour` label, free capacity), evaluated by the node that
    /// owns the trigger's key, with no scheduler node. See docs/triggers.md.
    #[command(subcommand)]
    Trigger(triggers::TriggerCommand),
    /// List the runs of triggers (all, or TRIGGER's): id, status, when
    /// started, the job they run as (its tasks show in `shoal ps JOB`).
    Runs {
        /// Only this trigger's runs.
        trigger: Option<String>,
    },
    /// Access control: bootstrap the ACLs (once, with the cluster token),
    /// and the policies tokens carry. See docs/security.md.
    #[command(subcommand)]
    Acl(acl::AclCommand),
    /// API tokens: make one with policies (and a TTL), list, show, revoke.
    #[command(subcommand)]
    Token(acl::TokenCommand),
    /// Secrets: values jobs refer to (`env = { DB_PASSWORD = { secret =
    /// "db/password" } }`), sealed in the replicated state, given only to
    /// the tasks that refer to them.
    #[command(subcommand)]
    Secret(secrets::SecretCommand),
    /// The gossip keyring: rotate the key gossip is sealed with, with no
    /// downtime (install, use, remove).
    #[command(subcommand)]
    Keyring(keyring::KeyringCommand),
}

#[derive(Subcommand, Debug)]
enum JobCommand {
    /// Show a job's spec and status.
    Show {
        /// Job name.
        name: String,
    },
    /// Show every version of a job: who changed what, when.
    History {
        /// Job name.
        name: String,
    },
    /// Make a new version of a job equal to an earlier one (its spec and
    /// count then); a service with an `[update]` table rolls to it like any change.
    Revert {
        /// Job name.
        name: String,
        /// The version to go back to (see `shoal job history`).
        #[arg(value_name = "VERSION")]
        to: u64,
    },
}

#[derive(Subcommand, Debug)]
enum DeploymentCommand {
    /// The canaries are good: replace the remaining tasks.
    Promote {
        /// Job name.
        job: String,
    },
    /// End the deployment as failed (with `auto_revert`, the job goes back
    /// to its last version that deployed healthily).
    Fail {
        /// Job name.
        job: String,
    },
    /// Hold the deployment where it stands (no task is replaced and no
    /// deadline runs until resumed).
    Pause {
        /// Job name.
        job: String,
    },
    /// Go on with a paused deployment.
    Resume {
        /// Job name.
        job: String,
    },
}

#[derive(Subcommand, Debug)]
enum NodeCommand {
    /// Show one node by id, unique id prefix, or name.
    Show {
        /// Node id, id prefix (4+ hex digits) or name.
        node: String,
    },
    /// Stop a node taking tasks and move its tasks elsewhere (kept across
    /// restarts; --undo ends it).
    Drain {
        /// Node id, id prefix or name.
        node: String,
        /// Take tasks again.
        #[arg(long)]
        undo: bool,
    },
    /// Remove a machine for good: every member drops it and refuses its
    /// certificate, its tasks are placed elsewhere, and it cannot rejoin
    /// with its identity (it holds the cluster secret, so to keep it out
    /// under a new identity too, change the secret). There is no undo: to
    /// bring the machine back, delete `node.json` from its data dir so it
    /// joins as a new node. Needs `acl=write`; ask another node than the
    /// one forgotten.
    Forget {
        /// Node id, id prefix or name; the full id of a node no longer
        /// listed.
        node: String,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum GossipPreset {
    /// One datacenter: 1 s probes, failures known in ~5–10 s.
    Lan,
    /// Links across the internet: 5 s probes, tolerant of loss and delay.
    Wan,
    /// Many agents on one machine (tests): 300 ms probes.
    Test,
}

#[derive(Args, Debug)]
struct AgentArgs {
    /// Data dir: identity, token, settings, state. Default: /var/lib/shoal as
    /// root, ~/.local/share/shoal otherwise; a temporary dir with --dev.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Gossip address (UDP). Default 0.0.0.0:5481 (127.0.0.1:0 with --dev).
    /// Port 0 picks a free port.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_addr)]
    bind: Option<SocketAddr>,

    /// RPC address (QUIC over UDP). Default: the gossip port + 1.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_addr)]
    rpc: Option<SocketAddr>,

    /// HTTP API address. Default 0.0.0.0:5480 (127.0.0.1:5480 with --dev).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_addr)]
    api: Option<SocketAddr>,

    /// DNS server address (UDP and TCP), or `off`. Default 127.0.0.1 on the
    /// gossip port + 2 (127.0.0.1:5483; port 0 when gossip has port 0).
    /// Answers `<job>.service.shoal` (A) and
    /// `_<port>._tcp.<job>.service.shoal` (SRV); refuses other names.
    #[arg(long, value_name = "HOST:PORT|off")]
    dns: Option<String>,

    /// Serve the API in plain HTTP to every client, without TLS (a trusted
    /// network, or TLS ended by a proxy in front). By default the API
    /// speaks HTTPS with a certificate of the cluster's API CA
    /// (`api-ca.pem` in the data dir) and plain HTTP only to clients on
    /// this machine. Kept for later starts; `--api-insecure=false` undoes it.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    api_insecure: Option<bool>,

    /// IP address other nodes reach this one at, when binding to 0.0.0.0.
    /// Default: the address of the interface of the default route.
    #[arg(long, value_name = "IP")]
    advertise: Option<IpAddr>,

    /// A member of the cluster to join through (any live member will do).
    /// Repeat for more; retried with backoff until one answers.
    #[arg(long, value_name = "HOST:PORT")]
    join: Vec<String>,

    /// Node name. Default: the host name.
    #[arg(long)]
    name: Option<String>,

    /// Datacenter. Default: dc1.
    #[arg(long)]
    dc: Option<String>,

    /// Zone within the datacenter.
    #[arg(long)]
    zone: Option<String>,

    /// Region. Default: global.
    #[arg(long)]
    region: Option<String>,

    /// A label, `key=value`; repeat for more. Replaces the stored labels.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,

    /// CPUs to offer (fractional allowed). Default: what the machine has.
    #[arg(long, value_name = "N")]
    cpus: Option<f64>,

    /// Memory to offer, MiB. Default: what the machine has.
    #[arg(long, value_name = "N")]
    memory_mb: Option<u64>,

    /// Membership timing preset.
    #[arg(long, value_enum, value_name = "PRESET")]
    gossip: Option<GossipPreset>,

    /// Scale the suspicion timeout: a member that stops answering is
    /// declared failed after X × log10(cluster size) probe periods (lan: 3,
    /// so 9 s at 1,000 nodes, 17 s at 500,000). Lower finds crashes sooner
    /// and tolerates a stalled node less; 1.0 detects a crash at 500,000
    /// nodes in under 10 s (see docs/gossip.md). Range 0.5–20; kept in the
    /// data dir.
    #[arg(long, value_name = "X")]
    suspicion_mult: Option<f64>,

    /// Treat a datacenter of at least N members (and at least half as large
    /// as this node's) as one: this node's probes of its members only check
    /// that it is reached, a cut of it is one fact ("unreachable from here",
    /// `shoal status`) rather than a suspicion and a down per member, and
    /// its members leave placement while it is unreachable. Its members are
    /// declared failed from here only after 10 minutes unreachable. For
    /// datacenters of thousands of nodes; 0 (the default) is off. Set the
    /// same on every node. Kept in the data dir (see docs/gossip.md).
    #[arg(long, value_name = "N")]
    reach_only_dc_size: Option<usize>,

    /// A one-node cluster for trying shoal: temporary data dir, API on
    /// 127.0.0.1:5480, no authentication.
    #[arg(long)]
    dev: bool,

    /// Serve POST /v1/debug/faults, which cuts this node off from chosen
    /// others (partition tests only).
    #[arg(long, hide = true)]
    fault_injection: bool,

    /// CPUs kept for the machine itself, not offered to tasks. Default 0.25
    /// of detected CPUs, 0 when --cpus is given.
    #[arg(long, value_name = "N")]
    reserve_cpus: Option<f64>,

    /// Memory kept for the machine itself, MiB. Default 256 of detected
    /// memory, 0 when --memory-mb is given.
    #[arg(long, value_name = "N")]
    reserve_memory_mb: Option<u64>,

    /// How long a stopping task gets between SIGTERM and SIGKILL (`10s`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    stop_grace: Option<std::time::Duration>,

    /// Do not run docker tasks here, even when a Docker engine answers on
    /// its local socket (by default the node offers `docker` whenever the
    /// engine answers at start-up).
    #[arg(long)]
    no_docker: bool,

    /// Host ports handed to tasks' named ports, as FIRST-LAST (default
    /// 20000-32000). A task sees each as `SHOAL_PORT_<NAME>`.
    #[arg(long, value_name = "FIRST-LAST", value_parser = parse_port_range)]
    port_range: Option<(u16, u16)>,

    /// How long an artifact no job needs stays in this node's store after
    /// its last use (`24h`, the default; stored artifacts this node was
    /// chosen to keep stay until removed).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    artifact_gc_after: Option<std::time::Duration>,
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?} is not a range: write FIRST-LAST, e.g. 20000-29999"))?;
    let first: u16 = a
        .trim()
        .parse()
        .map_err(|_| format!("{a:?} is not a port number (1-65535)"))?;
    let last: u16 = b
        .trim()
        .parse()
        .map_err(|_| format!("{b:?} is not a port number (1-65535)"))?;
    if first == 0 || first > last {
        return Err(format!(
            "{s:?}: the first port must be at least 1 and not above the last"
        ));
    }
    Ok((first, last))
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.to_socket_addrs()
        .map_err(|e| format!("{s:?} is not HOST:PORT ({e})"))?
        .next()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    if k.is_empty() {
        return Err(format!("{s:?} has an empty key"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

fn main() -> ExitCode {
    // The agent starts tasks, and their log shippers, through its own
    // binary (see shoal_node::runtime and shoal_node::tasklog): not
    // commands for people, so not in --help.
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("__exec") => return shoal_node::runtime::exec_shim(&args[2..]),
        Some("__log") => return shoal_node::tasklog::ship(&args[2..]),
        _ => {}
    }
    let mut cli = Cli::parse();
    if !matches!(cli.command, Command::Agent(_)) {
        match api_trust(&cli) {
            Ok(t) => cli.trust = t,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    let result = match cli.command {
        Command::Agent(ref args) => run_agent(args, cli.token.clone()),
        Command::Nodes => nodes(&cli),
        Command::Node(NodeCommand::Show { ref node }) => node_show(&cli, node),
        Command::Node(NodeCommand::Drain { ref node, undo }) => {
            tasks::drain(&client(&cli), node, undo)
        }
        Command::Node(NodeCommand::Forget { ref node }) => {
            tasks::forget(&client(&cli), cli.json, node)
        }
        Command::Ps { ref job } => tasks::ps(&client(&cli), cli.json, job.as_deref()),
        Command::Endpoints {
            ref job,
            ref port,
            all,
        } => tasks::endpoints(&client(&cli), cli.json, job, port.as_deref(), all),
        Command::Logs {
            ref task,
            follow,
            stderr,
        } => tasks::logs(&client(&cli), task, follow, stderr),
        Command::Status => status(&cli),
        Command::Run(ref a) => jobs::run(&client(&cli), cli.json, a),
        Command::Jobs { all } => jobs::list(&client(&cli), cli.json, all),
        Command::Job(JobCommand::Show { ref name }) => jobs::show(&client(&cli), cli.json, name),
        Command::Job(JobCommand::History { ref name }) => {
            jobs::history(&client(&cli), cli.json, name)
        }
        Command::Job(JobCommand::Revert { ref name, to }) => {
            deployments::revert(&client(&cli), cli.json, name, to)
        }
        Command::Deployments { ref job } => {
            deployments::list(&client(&cli), cli.json, job.as_deref())
        }
        Command::Deployment(ref d) => {
            let (job, action) = match d {
                DeploymentCommand::Promote { job } => (job, "promote"),
                DeploymentCommand::Fail { job } => (job, "fail"),
                DeploymentCommand::Pause { job } => (job, "pause"),
                DeploymentCommand::Resume { job } => (job, "resume"),
            };
            deployments::act(&client(&cli), cli.json, job, action)
        }
        Command::Scale {
            ref name,
            count,
            if_version,
        } => jobs::scale(&client(&cli), cli.json, name, count, if_version),
        Command::Stop {
            ref name,
            if_version,
        } => jobs::stop(&client(&cli), cli.json, name, if_version),
        Command::Package(ref p) => packages::run(p, || client(&cli), cli.json),
        Command::Artifact(ref a) => artifacts::run(a, &client(&cli), cli.json),
        Command::Trigger(ref t) => triggers::run(t, &client(&cli), cli.json),
        Command::Runs { ref trigger } => {
            triggers::runs(&client(&cli), cli.json, trigger.as_deref())
        }
        Command::Acl(ref a) => acl::acl(a, &client(&cli), cli.json),
        Command::Token(ref t) => acl::token(t, &client(&cli), cli.json),
        Command::Secret(ref c) => secrets::run(c, &client(&cli), cli.json),
        Command::Keyring(ref c) => keyring::run(c, &client(&cli), cli.json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(shoal_client::Error::Unreachable { error, .. }) = e.downcast_ref() {
                if error.to_string().contains("certificate") {
                    eprintln!(
                        "  (trust the cluster's API CA: --cacert FILE or SHOAL_CACERT=FILE, a copy of api-ca.pem from any agent's data dir)"
                    );
                } else {
                    eprintln!("  (give a node's API address with --addr or SHOAL_ADDR)");
                }
            }
            ExitCode::FAILURE
        }
    }
}

fn run_agent(args: &AgentArgs, token: Option<String>) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let opts = AgentOptions {
        data_dir: args.data_dir.clone(),
        bind: args.bind,
        rpc: args.rpc,
        api: args.api,
        api_insecure: args.api_insecure,
        dns: args.dns.clone(),
        advertise: args.advertise,
        join: args.join.clone(),
        token,
        name: args.name.clone(),
        dc: args.dc.clone(),
        zone: args.zone.clone(),
        region: args.region.clone(),
        labels: args.labels.clone(),
        cpus: args.cpus,
        memory_mb: args.memory_mb,
        suspicion_mult: args.suspicion_mult,
        reach_only_dc_size: args.reach_only_dc_size,
        gossip: args.gossip.map(|g| {
            match g {
                GossipPreset::Lan => "lan",
                GossipPreset::Wan => "wan",
                GossipPreset::Test => "test",
            }
            .to_owned()
        }),
        dev: args.dev,
        fault_injection: args.fault_injection,
        reserve_cpus: args.reserve_cpus,
        reserve_memory_mb: args.reserve_memory_mb,
        stop_grace: args.stop_grace,
        no_docker: args.no_docker,
        port_range: args.port_range,
        artifact_gc_after: args.artifact_gc_after,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4)))
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let agent = Agent::start(opts).await?;
        let info = agent.info().clone();
        if info.dev {
            println!(
                "shoal dev agent: a one-node cluster, API at http://{} (no token needed)",
                info.api
            );
            if info.temporary_data_dir {
                println!("  data dir (removed on exit): {}", info.data_dir.display());
            } else {
                println!("  data dir: {}", info.data_dir.display());
            }
            if let Some(dns) = info.dns {
                println!("  DNS for *.service.shoal at {dns} (UDP and TCP)");
            }
            println!("  try:  shoal nodes     shoal status");
            println!(
                "  join another agent to it:  shoal agent --join {} --token {}",
                info.gossip, info.token
            );
        } else {
            if info.founded {
                println!("shoal agent --join {} --token {}", info.gossip, info.token);
            }
            // What a client elsewhere needs, on the first start (a founding
            // or joining one); a restart prints nothing.
            if info.founded || !args.join.is_empty() {
                println!("{}", client_line(&info));
            }
        }
        agent.run_until(stop_signal()).await;
        anyhow::Ok(())
    })
}

/// The line that tells a person how to reach this agent's API.
fn client_line(info: &shoal_node::agent::AgentInfo) -> String {
    match &info.api_ca {
        Some(ca) => format!(
            "API at {url}; from elsewhere: SHOAL_ADDR={url} SHOAL_CACERT=api-ca.pem shoal status (a copy of {})",
            ca.display(),
            url = info.api_url
        ),
        None => format!(
            "API at {url} in plain HTTP (--api-insecure); from elsewhere: SHOAL_ADDR={url} SHOAL_INSECURE=1 shoal status",
            url = info.api_url
        ),
    }
}

async fn stop_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn client(cli: &Cli) -> Client {
    let c = Client::new(&cli.addr, cli.token.clone());
    match &cli.trust {
        Some(t) => c.with_trust(t.clone()),
        None => c,
    }
}

/// Checks `--addr` against `--insecure` and reads the CA to trust: plain
/// HTTP to another machine is refused (the token would travel in clear);
/// for `https://`, `--cacert`, else this machine's agent's `api-ca.pem`,
/// else the public roots (a proxy with a public certificate in front).
fn api_trust(cli: &Cli) -> anyhow::Result<Option<shoal_client::Trust>> {
    let addr = cli.addr.trim();
    let plain =
        addr.starts_with("http://") || (!addr.contains("://") && shoal_client::is_loopback(addr));
    if plain && !shoal_client::is_loopback(addr) && !cli.insecure {
        anyhow::bail!(
            "--addr {addr}: refusing plain HTTP to another machine (the token would travel in clear); \
             use https:// (agents serve HTTPS; trust the cluster's CA with --cacert or SHOAL_CACERT=api-ca.pem \
             from any agent's data dir), or pass --insecure for an agent started with --api-insecure"
        );
    }
    if plain {
        return Ok(None);
    }
    let (path, given) = match &cli.cacert {
        Some(p) => (p.clone(), true),
        None => (
            shoal_node::agent::default_data_dir().join("api-ca.pem"),
            false,
        ),
    };
    let pem = match std::fs::read(&path) {
        Ok(p) => p,
        Err(_) if !given => return Ok(None),
        Err(e) => anyhow::bail!(
            "--cacert {}: cannot read it: {e}; copy api-ca.pem from any agent's data dir",
            path.display()
        ),
    };
    let what = format!("--cacert {}", path.display());
    Ok(Some(shoal_client::Trust::from_pem(&pem, &what)?))
}

pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn or_dash(s: Option<&str>) -> String {
    match s {
        Some(s) if !s.is_empty() => s.to_owned(),
        _ => "-".into(),
    }
}

fn nodes(cli: &Cli) -> anyhow::Result<()> {
    let mut nodes: Vec<NodeView> = client(cli).get("/v1/nodes")?;
    nodes.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    if cli.json {
        return print_json(&nodes);
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                or_dash(n.name.as_deref()),
                n.id[..8].to_owned(),
                n.gossip.to_string(),
                n.state.clone(),
                or_dash(n.dc.as_deref()),
                n.capacity.as_ref().map_or("-".into(), |c| cpus(c.cpus)),
                n.capacity.as_ref().map_or("-".into(), |c| mib(c.memory_mb)),
                age(&n.first_seen),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "NAME", "ID", "ADDRESS", "STATE", "DC", "CPUS", "MEMORY", "AGE"
            ],
            &rows
        )
    );
    Ok(())
}

fn node_show(cli: &Cli, key: &str) -> anyhow::Result<()> {
    let n: NodeView = client(cli).get(&format!("/v1/nodes/{}", segment(key)))?;
    if cli.json {
        return print_json(&n);
    }
    let labels = if n.labels.is_empty() {
        "-".to_owned()
    } else {
        n.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let runtimes = if n.runtimes.is_empty() {
        "-".to_owned()
    } else {
        n.runtimes
            .iter()
            .map(|r| format!("{} {}", r.name, r.version))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut lines = vec![
        ("Name", or_dash(n.name.as_deref())),
        ("ID", n.id.clone()),
        ("State", format!("{} (since {})", n.state, n.state_since)),
        ("Gossip", n.gossip.to_string()),
        ("RPC", n.rpc.map_or("-".into(), |a| a.to_string())),
        ("API", n.api.map_or("-".into(), |a| a.to_string())),
        ("DC", or_dash(n.dc.as_deref())),
        ("Zone", or_dash(n.zone.as_deref())),
        ("Region", or_dash(n.region.as_deref())),
        ("Labels", labels),
        ("Runtimes", runtimes),
        ("Version", or_dash(n.version.as_deref())),
        ("Generation", n.generation.to_string()),
    ];
    if let Some(c) = &n.capacity {
        lines.push((
            "Capacity",
            format!(
                "{} CPUs, {} memory, {} disk, {} GPUs",
                cpus(c.cpus),
                mib(c.memory_mb),
                mib(c.disk_mb),
                c.gpus
            ),
        ));
    }
    if let Some(f) = n.free_class {
        lines.push(("Free", format!("{}/8", f)));
    }
    lines.push(("Isolation", or_dash(n.isolation.as_deref())));
    if n.draining {
        lines.push(("Draining", "yes: takes no new tasks".into()));
    }
    for (k, v) in lines {
        println!("{:<11} {v}", format!("{k}:"));
    }
    Ok(())
}

fn status(cli: &Cli) -> anyhow::Result<()> {
    let s: StatusView = client(cli).get("/v1/status")?;
    if cli.json {
        return print_json(&s);
    }
    println!(
        "Nodes:  {} alive, {} suspect, {} failed, {} left",
        s.members.alive, s.members.suspect, s.members.failed, s.members.left
    );
    println!(
        "Pool:   {} CPUs, {} memory, {} disk, {} GPUs",
        cpus(s.total.capacity.cpus),
        mib(s.total.capacity.memory_mb),
        mib(s.total.capacity.disk_mb),
        s.total.capacity.gpus
    );
    println!();
    // Datacenters with no alive node are still listed when this node has
    // heard from them: "0 nodes, unreachable" answers "where did east go".
    let mut dcs: Vec<&str> = s.by_dc.iter().map(|p| p.dc.as_str()).collect();
    dcs.extend(s.reach.iter().map(|r| r.dc.as_str()));
    dcs.sort_unstable();
    dcs.dedup();
    let rows: Vec<Vec<String>> = dcs
        .into_iter()
        .map(|dc| {
            let pool = s
                .by_dc
                .iter()
                .find(|p| p.dc == dc)
                .cloned()
                .unwrap_or_default();
            vec![
                or_dash(Some(dc)),
                pool.nodes.to_string(),
                cpus(pool.capacity.cpus),
                mib(pool.capacity.memory_mb),
                mib(pool.capacity.disk_mb),
                pool.capacity.gpus.to_string(),
                reach_cell(s.reach.iter().find(|r| r.dc == dc)),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["DC", "NODES", "CPUS", "MEMORY", "DISK", "GPUS", "FROM HERE"],
            &rows
        )
    );
    Ok(())
}

/// Whether the answering node reaches a datacenter, in a few words.
fn reach_cell(r: Option<&shoal_node::api::types::ReachView>) -> String {
    match r {
        None => "-".into(),
        Some(r) => match r.unreachable_secs {
            Some(secs) => format!(
                "unreachable for {secs:.0}s ({} failures, nothing heard for {:.0}s)",
                r.failures, r.heard_secs_ago
            ),
            None => format!("reached {:.0}s ago", r.heard_secs_ago),
        },
    }
}
