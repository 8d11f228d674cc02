//! `shoal artifact put|list|rm`: files stored in the cluster by digest.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use shoal_client::{Client, segment};
use shoal_node::api::artifacts::ArtifactView;

use crate::output::{age, table};

/// `shoal artifact …`.
#[derive(Subcommand, Debug)]
pub enum ArtifactCommand {
    /// Store a file in the cluster: kept on the node you talk to and
    /// copied to a few others; prints the `shoal:sha256:HEX` source a
    /// task's artifacts name it by.
    Put {
        /// The file.
        file: PathBuf,
        /// A name for people (default: the file's name).
        #[arg(long)]
        name: Option<String>,
        /// The sha256 the file must have: refused, nothing kept, otherwise.
        #[arg(long)]
        sha256: Option<String>,
        /// Other nodes that keep a copy.
        #[arg(long, default_value_t = 2)]
        copies: usize,
    },
    /// List the stored artifacts, with the answering node's copy.
    List {
        /// Removed ones too (kept as tombstones for a while).
        #[arg(long)]
        all: bool,
    },
    /// Remove a stored artifact; every node collects its copy once no job
    /// needs it.
    Rm {
        /// Its digest (`shoal:sha256:HEX`, `sha256:HEX` or `HEX`).
        sha256: String,
    },
}

/// Runs an artifact command.
pub fn run(cmd: &ArtifactCommand, client: &Client, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        ArtifactCommand::Put {
            file,
            name,
            sha256,
            copies,
        } => put(
            client,
            json_out,
            file,
            name.as_deref(),
            sha256.as_deref(),
            *copies,
        ),
        ArtifactCommand::List { all } => list(client, json_out, *all),
        ArtifactCommand::Rm { sha256 } => rm(client, json_out, sha256),
    }
}

fn hex_of(s: &str) -> &str {
    s.strip_prefix(shoal_model::SHOAL_SOURCE_PREFIX)
        .or_else(|| s.strip_prefix("sha256:"))
        .unwrap_or(s)
}

/// A reader that moves a progress bar.
struct Progress<R> {
    inner: R,
    bar: indicatif::ProgressBar,
}

impl<R: Read> Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

fn put(
    client: &Client,
    json_out: bool,
    file: &Path,
    name: Option<&str>,
    sha256: Option<&str>,
    copies: usize,
) -> anyhow::Result<()> {
    let f = File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let name = name.map(str::to_owned).unwrap_or_else(|| {
        file.file_name().map_or_else(
            || "artifact".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        )
    });
    let mut path = format!("/v1/artifacts?name={}&copies={copies}", segment(&name));
    if let Some(s) = sha256 {
        path.push_str(&format!("&sha256={}", hex_of(s)));
    }
    // A long upload shows its progress (on stderr, and only on a terminal).
    let bar = if json_out || size < 16 * 1024 * 1024 {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new(size);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bytes}/{total_bytes} {wide_bar} {bytes_per_sec} {eta}",
        ) {
            bar.set_style(style);
        }
        bar
    };
    let mut reader = Progress { inner: f, bar };
    // Large files take long: no overall time limit.
    let client = client.clone().with_timeout(Duration::from_secs(24 * 3600));
    let view: ArtifactView = client.post_stream(&path, &mut reader)?;
    reader.bar.finish_and_clear();
    if json_out {
        return crate::print_json(&view);
    }
    println!(
        "stored {} ({} bytes) on {} node(s)\nsource = \"{}\"",
        view.record.name,
        view.record.size,
        view.record.holders.len(),
        view.source
    );
    Ok(())
}

fn list(client: &Client, json_out: bool, all: bool) -> anyhow::Result<()> {
    let path = if all {
        "/v1/artifacts?deleted=true"
    } else {
        "/v1/artifacts"
    };
    let views: Vec<ArtifactView> = client.get(path)?;
    if json_out {
        return crate::print_json(&views);
    }
    if views.is_empty() {
        println!("no stored artifacts (`shoal artifact put FILE` stores one)");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            let r = &v.record;
            vec![
                v.source.clone(),
                r.name.clone(),
                r.size.to_string(),
                r.holders.len().to_string(),
                if r.deleted {
                    "removed".into()
                } else if v.local.present {
                    "yes".into()
                } else {
                    "no".into()
                },
                age(&r.created_at),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["SOURCE", "NAME", "BYTES", "HOLDERS", "HERE", "AGE"],
            &rows
        )
    );
    Ok(())
}

fn rm(client: &Client, json_out: bool, sha256: &str) -> anyhow::Result<()> {
    let view: ArtifactView =
        client.delete(&format!("/v1/artifacts/{}", segment(hex_of(sha256))))?;
    if json_out {
        return crate::print_json(&view);
    }
    println!(
        "removed {} ({}); nodes collect their copies once no job needs it",
        view.source, view.record.name
    );
    Ok(())
}
