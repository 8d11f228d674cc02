//! Artifacts: files shared between nodes by digest, and fetched into
//! tasks' sandboxes before they start.
//!
//! Every node keeps a [`BlobStore`]. `shoal artifact put` stores a file in
//! the store of the node that took it, records it in the replicated state
//! (`@artifact/<sha256>`: name, size, and the nodes meant to keep it) and
//! asks [`COPIES`] other nodes, chosen by rendezvous hashing of the digest,
//! to fetch a copy. A task's `[[task.artifacts]]` are fetched by the node
//! that runs it: `shoal:sha256:` ones from the nodes holding them, http(s)
//! ones from their URL, `file://` ones from the node's own disk; each is
//! checked against its sha256 and kept in the store (a cache: the next
//! task on this node finds it there).
//!
//! Spreading without a coordinator. A node serves at most
//! [`ArtifactSettings::uploads_per_blob`] readers of one blob at a time; a
//! further reader is redirected (`307`) to one of the agents reading it
//! from this node right now, which serves what it has received so far and
//! follows its `.partial` file as it grows. A thousand nodes asking one
//! holder at once thus build a tree of fan-out 2 by themselves, and the
//! holder reads the blob about twice. A broken transfer resumes with a
//! `Range` request to another source; the digest is always checked at the
//! end, and a blob is never kept under a digest it does not have.
//!
//! Unused copies go: every few minutes (see
//! [`ArtifactSettings::gc_after`]) a node deletes the blobs that no live
//! job names in its artifacts, that are not stored artifacts it was chosen
//! to keep, and that nobody used for `gc_after`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::seq::SliceRandom;
use shoal_gossip::NodeId;
use shoal_model::Artifact;
use shoal_state::ArtifactRecord;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::blobs::{BlobError, BlobStore, Digest, Hasher};
use crate::state::{ArtifactReply, ArtifactRequest, Peer, StateHandle};

/// Nodes besides the one it was put on that keep a stored artifact.
pub const COPIES: usize = 2;
/// Readers of one blob a node serves at once, by default.
pub const UPLOADS_PER_BLOB: usize = 2;
/// How long an unused blob stays, by default.
pub const DEFAULT_GC_AFTER: Duration = Duration::from_secs(24 * 3600);
/// The header an agent names itself with (its API's base URL) when it
/// fetches from a peer, so that the peer can send others to it.
pub const FETCHER_HEADER: &str = "x-shoal-fetcher";
/// How long a fetch keeps trying sources that are busy or unreachable.
const FETCH_PATIENCE: Duration = Duration::from_secs(600);
/// How long a reader following a growing `.partial` waits for more bytes.
const FOLLOW_STALL: Duration = Duration::from_secs(60);
/// Redirects followed, at most.
const MAX_HOPS: usize = 16;
const CHUNK: usize = 256 * 1024;

/// What the agent tells the artifacts service at start-up.
#[derive(Clone, Debug)]
pub struct ArtifactSettings {
    /// The agent's data dir (the store is `blobs/sha256/` in it).
    pub data_dir: PathBuf,
    /// This node.
    pub node: NodeId,
    /// This node's API, as peers reach it (`https://host:port`, or
    /// `http://` with `--api-insecure`).
    pub api_url: String,
    /// TLS settings for peers' APIs (trusting the cluster's API CA).
    pub peer_tls: ureq::tls::TlsConfig,
    /// The cluster token peers' APIs want.
    pub token: Option<String>,
    /// A blob no one needs goes once unused this long (default 24 h; the
    /// tests use a second).
    pub gc_after: Duration,
    /// Readers of one blob served at once before further ones are
    /// redirected (default 2).
    pub uploads_per_blob: usize,
}

/// Why an artifact could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The store refused it (digest mismatch) or a file operation failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// No source gave it.
    #[error("{0}")]
    Unavailable(String),
}

#[derive(Clone, Debug, PartialEq)]
enum Progress {
    Writing(u64),
    Done,
    Failed(String),
}

/// A fetch either waits for the one under way or leads it.
enum Step {
    Wait(watch::Receiver<Progress>),
    Lead(watch::Sender<Progress>, File),
}

/// Where a blob can come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// An http(s) URL.
    Url(String),
    /// A file on this node.
    File(PathBuf),
    /// The nodes that hold it (a stored artifact), these API URLs first
    /// (the node a copy is asked by, before the record reaches this one).
    Peers(Vec<String>),
}

#[derive(Default)]
struct Serving {
    /// Readers served now.
    active: usize,
    /// The agents among them (their API URLs).
    readers: Vec<String>,
    next: usize,
    /// Bytes of this blob served since the agent started.
    served_bytes: u64,
}

struct Inner {
    store: BlobStore,
    state: StateHandle,
    live: watch::Receiver<Arc<Vec<Peer>>>,
    settings: ArtifactSettings,
    flights: Mutex<BTreeMap<Digest, watch::Receiver<Progress>>>,
    serving: Mutex<BTreeMap<Digest, Serving>>,
}

/// The artifacts service of a node. Cheap to clone.
#[derive(Clone)]
pub struct Artifacts {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Artifacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Artifacts")
            .field("store", &self.inner.store.dir())
            .finish_non_exhaustive()
    }
}

/// This node's copy of a blob, as `GET /v1/artifacts` shows it.
#[derive(
    Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct LocalCopy {
    /// Complete here.
    pub present: bool,
    /// Being fetched here now.
    pub fetching: bool,
    /// Bytes of it this node has served to others since it started.
    pub served_bytes: u64,
}

impl Artifacts {
    /// The service, with its store opened.
    pub fn new(
        settings: ArtifactSettings,
        state: StateHandle,
        live: watch::Receiver<Arc<Vec<Peer>>>,
    ) -> Result<Artifacts, BlobError> {
        let store = BlobStore::open(&settings.data_dir)?;
        Ok(Artifacts {
            inner: Arc::new(Inner {
                store,
                state,
                live,
                settings,
                flights: Mutex::new(BTreeMap::new()),
                serving: Mutex::new(BTreeMap::new()),
            }),
        })
    }

    /// The blob store.
    pub fn store(&self) -> &BlobStore {
        &self.inner.store
    }

    /// This node.
    pub fn node(&self) -> NodeId {
        self.inner.settings.node
    }

    /// The replicated state.
    pub fn state(&self) -> &StateHandle {
        &self.inner.state
    }

    /// This node's copy of `d`.
    pub fn local(&self, d: &Digest) -> LocalCopy {
        LocalCopy {
            present: self.inner.store.has(d),
            fetching: lock(&self.inner.flights).contains_key(d),
            served_bytes: lock(&self.inner.serving)
                .get(d)
                .map_or(0, |s| s.served_bytes),
        }
    }

    /// The record of a stored artifact.
    pub async fn record(&self, d: &Digest) -> Option<ArtifactRecord> {
        match self
            .inner
            .state
            .artifact(ArtifactRequest::Get(d.hex()))
            .await
        {
            Ok(ArtifactReply::One(r)) => r.map(|b| *b),
            _ => None,
        }
    }

    /// The API base URLs of the live nodes holding `d` (in random order),
    /// this one left out.
    async fn holders(&self, d: &Digest) -> Vec<String> {
        let Some(record) = self.record(d).await.filter(|r| !r.deleted) else {
            return Vec::new();
        };
        let live = self.inner.live.borrow().clone();
        let me = self.inner.settings.node.to_string();
        let mut urls: Vec<String> = live
            .iter()
            .filter(|p| {
                let id = p.id.to_string();
                id != me && record.holders.contains(&id)
            })
            .map(|p| peer_url(&p.meta))
            .collect();
        urls.shuffle(&mut rand::rng());
        urls
    }

    /// The [`COPIES`] live nodes (not this one) that keep copies of `d`:
    /// the highest rendezvous scores of the digest with each node id, so
    /// that any node computes the same choice for the same members.
    pub fn copy_targets(&self, d: &Digest) -> Vec<Peer> {
        let live = self.inner.live.borrow().clone();
        let me = self.inner.settings.node;
        let mut scored: Vec<(u64, Peer)> = live
            .iter()
            .filter(|p| p.id != me)
            .map(|p| {
                let mut bytes = d.0.to_vec();
                bytes.extend_from_slice(&p.id.0.to_be_bytes());
                let h = Digest::of(&bytes);
                let score = u64::from_be_bytes(h.0[..8].try_into().unwrap_or_default());
                (score, p.clone())
            })
            .collect();
        scored.sort_by_key(|s| std::cmp::Reverse(s.0));
        scored.into_iter().take(COPIES).map(|(_, p)| p).collect()
    }

    /// Asks `targets` to fetch a copy of `d` (in the background; failures
    /// are logged: fetchers skip a holder that lacks it).
    pub fn spread(&self, d: Digest, targets: Vec<Peer>) {
        let token = self.inner.settings.token.clone();
        for p in targets {
            let url = format!(
                "{}/v1/artifacts/{}/pull?from={}",
                peer_url(&p.meta),
                d.hex(),
                self.inner.settings.api_url
            );
            let token = token.clone();
            let tls = self.inner.settings.peer_tls.clone();
            tokio::task::spawn_blocking(move || {
                let agent = agent(Some(Duration::from_secs(10)), tls);
                let mut req = agent.post(&url);
                if let Some(t) = &token {
                    req = req.header("authorization", &format!("Bearer {t}"));
                }
                match req.send_empty() {
                    Ok(r) if r.status().is_success() => debug!(%url, "copy asked for"),
                    Ok(r) => warn!(%url, status = %r.status(), "a node refused to keep a copy"),
                    Err(e) => warn!(%url, error = %e, "cannot ask a node to keep a copy"),
                }
            });
        }
    }

    /// Fetches blob `d` into the store unless it is there (or waits for
    /// the fetch of it already under way). `what` names it in errors.
    pub async fn fetch(&self, d: Digest, source: Source, what: &str) -> Result<(), FetchError> {
        loop {
            if self.inner.store.has(&d) {
                self.inner.store.touch(&d);
                return Ok(());
            }
            let step = {
                let mut flights = lock(&self.inner.flights);
                match flights.get(&d) {
                    Some(rx) => Step::Wait(rx.clone()),
                    None => {
                        // Created before the flight is known, so that a
                        // reader sent here finds the file.
                        let partial = self.inner.store.partial_path(&d);
                        let file = File::options()
                            .read(true)
                            .write(true)
                            .create(true)
                            .truncate(true)
                            .open(&partial)
                            .map_err(|source| BlobError::Io {
                                what: "cannot create",
                                path: partial.clone(),
                                source,
                            })?;
                        let (tx, rx) = watch::channel(Progress::Writing(0));
                        flights.insert(d, rx);
                        Step::Lead(tx, file)
                    }
                }
            };
            let (tx, file) = match step {
                Step::Lead(tx, file) => (tx, file),
                Step::Wait(mut rx) => {
                    loop {
                        let now = rx.borrow_and_update().clone();
                        match now {
                            Progress::Done => break,
                            Progress::Failed(e) => return Err(FetchError::Unavailable(e)),
                            Progress::Writing(_) => {}
                        }
                        if rx.changed().await.is_err() {
                            break;
                        }
                    }
                    continue;
                }
            };
            let result = self.download(d, source.clone(), what, file, &tx).await;
            match &result {
                Ok(()) => tx.send_replace(Progress::Done),
                Err(e) => {
                    let _ = fs::remove_file(self.inner.store.partial_path(&d));
                    tx.send_replace(Progress::Failed(e.to_string()))
                }
            };
            lock(&self.inner.flights).remove(&d);
            return result;
        }
    }

    async fn download(
        &self,
        d: Digest,
        source: Source,
        what: &str,
        file: File,
        tx: &watch::Sender<Progress>,
    ) -> Result<(), FetchError> {
        let started = Instant::now();
        let mut pull = Pull {
            file,
            hasher: Hasher::default(),
            tx: tx.clone(),
            me: self.inner.settings.api_url.clone(),
            token: self.inner.settings.token.clone(),
            peer_tls: self.inner.settings.peer_tls.clone(),
        };
        match source {
            Source::File(path) => {
                let label = what.to_owned();
                let pull = tokio::task::spawn_blocking(move || -> Result<Pull, FetchError> {
                    let mut f = File::open(&path).map_err(|source| BlobError::Io {
                        what: "cannot open",
                        path: path.clone(),
                        source,
                    })?;
                    pull.copy_from(&mut f)
                        .map_err(|e| FetchError::Unavailable(format!("{label}: {e}")))?;
                    Ok(pull)
                })
                .await
                .map_err(|e| FetchError::Unavailable(e.to_string()))??;
                self.complete(d, pull, what)?;
            }
            Source::Url(url) => {
                let mut notes = Vec::new();
                // A URL is asked a few times, each resuming where the last
                // one broke off.
                for attempt in 0..3 {
                    let u = url.clone();
                    let (p, outcome) = tokio::task::spawn_blocking(move || {
                        let o = pull.get_url(&u, false);
                        (pull, o)
                    })
                    .await
                    .map_err(|e| FetchError::Unavailable(e.to_string()))?;
                    pull = p;
                    match outcome {
                        Outcome::Complete => return self.complete(d, pull, what),
                        Outcome::Busy(n) | Outcome::Missing(n) | Outcome::Broken(n) => {
                            // The same failure thrice (a certificate the
                            // agent does not trust) is said once.
                            if !notes.contains(&n) {
                                notes.push(n);
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                }
                return Err(FetchError::Unavailable(format!(
                    "{what}: cannot fetch it: {}",
                    notes.join("; ")
                )));
            }
            Source::Peers(first) => {
                let deadline = Instant::now() + FETCH_PATIENCE;
                let mut pause = Duration::from_millis(100);
                let mut empty_rounds = 0;
                loop {
                    let mut urls = first.clone();
                    for u in self.holders(&d).await {
                        if !urls.contains(&u) {
                            urls.push(u);
                        }
                    }
                    let mut busy = false;
                    let mut notes = Vec::new();
                    for u in urls {
                        let url = format!("{u}/v1/artifacts/{}", d.hex());
                        let (p, outcome) = tokio::task::spawn_blocking(move || {
                            let o = pull.get_url(&url, true);
                            (pull, o)
                        })
                        .await
                        .map_err(|e| FetchError::Unavailable(e.to_string()))?;
                        pull = p;
                        match outcome {
                            Outcome::Complete => {
                                debug!(artifact = %d.hex(), took = ?started.elapsed(), "fetched from peers");
                                return self.complete(d, pull, what);
                            }
                            Outcome::Busy(n) => {
                                busy = true;
                                notes.push(n);
                            }
                            Outcome::Missing(n) | Outcome::Broken(n) => notes.push(n),
                        }
                    }
                    if !busy {
                        empty_rounds += 1;
                    }
                    if empty_rounds >= 5 || Instant::now() > deadline {
                        let why = if notes.is_empty() {
                            "no live node holds it (see `shoal artifact list`; put it again with `shoal artifact put`)".to_owned()
                        } else {
                            notes.join("; ")
                        };
                        return Err(FetchError::Unavailable(format!(
                            "{what}: cannot fetch it from the nodes holding it: {why}"
                        )));
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
        Ok(())
    }

    /// Checks the digest of what `pull` wrote and makes it the blob.
    fn complete(&self, d: Digest, pull: Pull, what: &str) -> Result<(), FetchError> {
        let size = pull.hasher.len();
        let actual = pull.hasher.finish();
        if actual != d {
            return Err(BlobError::Mismatch {
                what: what.to_owned(),
                expected: d,
                actual,
                size,
            }
            .into());
        }
        pull.file.sync_all().map_err(|source| BlobError::Io {
            what: "cannot sync",
            path: self.inner.store.partial_path(&d),
            source,
        })?;
        self.inner.store.commit_partial(&d)?;
        Ok(())
    }

    /// Serves blob `d` from `start` to a reader (`fetcher`: the API URL of
    /// the agent asking, when one asks): the complete blob, or the part of
    /// it being fetched here now, followed as it grows. A reader beyond
    /// the limit is sent to an agent reading it from here.
    pub async fn serve(&self, d: Digest, start: u64, fetcher: Option<String>) -> Response {
        let follow = lock(&self.inner.flights).get(&d).cloned();
        let (path, follow) = match follow {
            Some(rx) if self.inner.store.partial_path(&d).is_file() => {
                (self.inner.store.partial_path(&d), Some(rx))
            }
            _ => (self.inner.store.path(&d), None),
        };
        let opened = tokio::fs::File::open(&path).await;
        let mut file = match opened {
            Ok(f) => f,
            Err(_) if follow.is_some() => {
                match tokio::fs::File::open(self.inner.store.path(&d)).await {
                    Ok(f) => f,
                    Err(_) => return missing(&d),
                }
            }
            Err(_) => return missing(&d),
        };
        let size = if follow.is_none() {
            file.metadata().await.ok().map(|m| m.len())
        } else {
            None
        };
        // The limit on readers: past it, send this one to a reader.
        {
            let mut serving = lock(&self.inner.serving);
            let s = serving.entry(d).or_default();
            if s.active >= self.inner.settings.uploads_per_blob.max(1) {
                let others: Vec<&String> = s
                    .readers
                    .iter()
                    .filter(|r| Some(*r) != fetcher.as_ref())
                    .collect();
                if others.is_empty() {
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [(header::RETRY_AFTER, HeaderValue::from_static("1"))],
                        "busy: this node serves as many readers of this artifact as it may; try again or another holder",
                    )
                        .into_response();
                }
                let to = others[s.next % others.len()].clone();
                s.next = s.next.wrapping_add(1);
                let location = format!("{to}/v1/artifacts/{}", d.hex());
                return Response::builder()
                    .status(StatusCode::TEMPORARY_REDIRECT)
                    .header(header::LOCATION, location)
                    .body(Body::empty())
                    .unwrap_or_default();
            }
            s.active += 1;
            if let Some(f) = &fetcher {
                s.readers.push(f.clone());
            }
        }
        let guard = ServeGuard {
            inner: self.inner.clone(),
            digest: d,
            fetcher,
        };
        if start > 0 && file.seek(SeekFrom::Start(start)).await.is_err() {
            return missing(&d);
        }
        let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(4);
        tokio::spawn(stream_file(file, start, follow, tx, guard));
        let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
        let mut response = Response::builder();
        response = match (start, size) {
            (0, Some(n)) => response
                .status(StatusCode::OK)
                .header(header::CONTENT_LENGTH, n),
            (0, None) => response.status(StatusCode::OK),
            (s, Some(n)) => response
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_LENGTH, n.saturating_sub(s))
                .header(
                    header::CONTENT_RANGE,
                    format!("bytes {s}-{}/{n}", n.saturating_sub(1)),
                ),
            (s, None) => response
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {s}-*/*")),
        };
        response
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .unwrap_or_default()
    }

    /// Fetches a task's artifacts into its sandbox `dir` (each checked,
    /// kept in the store, then copied or unpacked to its `dest`); the
    /// first that cannot be had names itself and why.
    pub async fn prepare(&self, dir: &Path, artifacts: &[Artifact]) -> Result<(), String> {
        for (i, a) in artifacts.iter().enumerate() {
            let what = format!("artifact task.artifacts[{i}] ({})", a.source);
            let d: Digest = a.sha256.parse().map_err(|e| format!("{what}: {e}"))?;
            let source = if a.shoal_digest().is_some() {
                Source::Peers(Vec::new())
            } else if let Some(path) = a.source.strip_prefix("file://") {
                Source::File(PathBuf::from(path))
            } else {
                Source::Url(a.source.clone())
            };
            self.fetch(d, source, &what)
                .await
                .map_err(|e| e.to_string())?;
            let blob = self.inner.store.path(&d);
            let target = dir.join(&a.dest);
            let extract = a.extract;
            let what2 = what.clone();
            tokio::task::spawn_blocking(move || place(&blob, &target, extract))
                .await
                .map_err(|e| format!("{what2}: {e}"))?
                .map_err(|e| format!("{what}: {e}"))?;
            self.inner.store.touch(&d);
        }
        Ok(())
    }

    /// Removes the blobs nobody needs (see the module's doc); returns them.
    pub async fn collect(&self) -> Vec<Digest> {
        let mut keep: BTreeSet<Digest> = lock(&self.inner.flights).keys().copied().collect();
        let me = self.inner.settings.node.to_string();
        let Ok(ArtifactReply::List(records)) = self
            .inner
            .state
            .artifact(ArtifactRequest::List(false))
            .await
        else {
            return Vec::new();
        };
        for r in records {
            if r.holders.contains(&me)
                && let Ok(d) = r.sha256.parse()
            {
                keep.insert(d);
            }
        }
        let Ok(jobs) = self.inner.state.jobs(false).await else {
            return Vec::new();
        };
        for j in jobs {
            if let Some(list) = j.spec["task"]["artifacts"].as_array() {
                keep.extend(
                    list.iter()
                        .filter_map(|a| a["sha256"].as_str()?.parse::<Digest>().ok()),
                );
            }
        }
        let store = self.inner.store.clone();
        let after = self.inner.settings.gc_after;
        tokio::task::spawn_blocking(move || store.collect(&keep, after, SystemTime::now()))
            .await
            .unwrap_or_default()
    }

    /// Collects unused blobs every little while until shutdown.
    pub async fn collect_loop(self, shutdown: CancellationToken) {
        let period = (self.inner.settings.gc_after / 4)
            .clamp(Duration::from_millis(500), Duration::from_secs(600));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    let gone = self.collect().await;
                    if !gone.is_empty() {
                        info!(blobs = gone.len(), "unused artifacts collected");
                    }
                }
            }
        }
    }
}

/// Copies (or unpacks) blob `blob` to `target`.
fn place(blob: &Path, target: &Path, extract: bool) -> Result<(), String> {
    if extract {
        fs::create_dir_all(target)
            .map_err(|e| format!("cannot create {}: {e}", target.display()))?;
        return unpack(blob, target);
    }
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let _ = fs::remove_file(target);
    fs::copy(blob, target).map_err(|e| format!("cannot copy it to {}: {e}", target.display()))?;
    Ok(())
}

/// Unpacks a tar or gzip-compressed tar (recognised by its first bytes)
/// into `dir`; entries that would land outside it are refused by `tar`.
fn unpack(blob: &Path, dir: &Path) -> Result<(), String> {
    let mut head = [0u8; 512];
    let mut f = File::open(blob).map_err(|e| format!("cannot open {}: {e}", blob.display()))?;
    let n = read_up_to(&mut f, &mut head).map_err(|e| e.to_string())?;
    f.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    let reader: Box<dyn Read> = if n >= 2 && head[..2] == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(f))
    } else if n >= 262 && &head[257..262] == b"ustar" {
        Box::new(f)
    } else if n >= 4 && head[..4] == *b"PK\x03\x04" {
        return Err(
            "zip archives cannot be unpacked yet: repack it as .tar.gz, or set extract = false"
                .into(),
        );
    } else {
        return Err(
            "extract = true, but it is neither a tar nor a gzip-compressed tar: set extract = false to keep the file as it is".into(),
        );
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive
        .unpack(dir)
        .map_err(|e| format!("cannot unpack it into {}: {e}", dir.display()))
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn missing(d: &Digest) -> Response {
    crate::api::ApiError::not_found(format!("this node has no artifact sha256:{}", d.hex()))
        .into_response()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A peer's API base URL, in the scheme it speaks.
fn peer_url(meta: &shoal_gossip::MemberMeta) -> String {
    let scheme = if meta.api_tls { "https" } else { "http" };
    format!("{scheme}://{}", meta.api_addr)
}

fn agent(timeout: Option<Duration>, tls: ureq::tls::TlsConfig) -> ureq::Agent {
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_recv_response(Some(Duration::from_secs(30)))
        .timeout_global(timeout)
        .build()
        .into()
}

/// Counts a reader served, and forgets it when its response ends.
struct ServeGuard {
    inner: Arc<Inner>,
    digest: Digest,
    fetcher: Option<String>,
}

impl ServeGuard {
    fn served(&self, n: usize) {
        if let Some(s) = lock(&self.inner.serving).get_mut(&self.digest) {
            s.served_bytes += n as u64;
        }
    }
}

impl Drop for ServeGuard {
    fn drop(&mut self) {
        let mut serving = lock(&self.inner.serving);
        if let Some(s) = serving.get_mut(&self.digest) {
            s.active = s.active.saturating_sub(1);
            if let Some(f) = &self.fetcher
                && let Some(i) = s.readers.iter().position(|r| r == f)
            {
                s.readers.remove(i);
            }
        }
    }
}

/// Sends a file from `pos` to `tx`; with `follow`, keeps reading as the
/// file grows until its writer is done (or failed: the response breaks,
/// and the reader resumes elsewhere).
async fn stream_file(
    mut file: tokio::fs::File,
    mut pos: u64,
    mut follow: Option<watch::Receiver<Progress>>,
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    guard: ServeGuard,
) {
    let mut buf = vec![0u8; CHUNK];
    let mut writer_done = follow.is_none();
    loop {
        let n = match file.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        if n > 0 {
            pos += n as u64;
            guard.served(n);
            if tx
                .send(Ok(Bytes::copy_from_slice(&buf[..n])))
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        if writer_done {
            return;
        }
        let Some(rx) = follow.as_mut() else { return };
        let now = rx.borrow_and_update().clone();
        match now {
            Progress::Done => writer_done = true,
            Progress::Failed(e) => {
                let _ = tx.send(Err(io::Error::other(e))).await;
                return;
            }
            Progress::Writing(w) if w > pos => {}
            Progress::Writing(_) => {
                match tokio::time::timeout(FOLLOW_STALL, rx.changed()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => {
                        // The writer is gone: done only if it said so.
                        if *rx.borrow() != Progress::Done {
                            let _ = tx
                                .send(Err(io::Error::other("the fetch here stopped")))
                                .await;
                            return;
                        }
                        writer_done = true;
                    }
                    Err(_) => {
                        let _ = tx
                            .send(Err(io::Error::other("the fetch here stalled")))
                            .await;
                        return;
                    }
                }
            }
        }
    }
}

/// How one request for the blob went.
enum Outcome {
    Complete,
    Busy(String),
    Missing(String),
    Broken(String),
}

/// A download in progress: the `.partial` file and the digest of what it
/// holds so far (blocking I/O).
struct Pull {
    file: File,
    hasher: Hasher,
    tx: watch::Sender<Progress>,
    me: String,
    token: Option<String>,
    peer_tls: ureq::tls::TlsConfig,
}

impl Pull {
    fn reset(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.hasher = Hasher::default();
        Ok(())
    }

    fn copy_from(&mut self, r: &mut dyn Read) -> io::Result<()> {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.file.write_all(&buf[..n])?;
            self.hasher.update(&buf[..n]);
            self.tx.send_replace(Progress::Writing(self.hasher.len()));
        }
    }

    /// One GET of `url` (a peer's when `peer`), following redirects and
    /// resuming from what is already here.
    fn get_url(&mut self, url: &str, peer: bool) -> Outcome {
        let agent = agent(
            None,
            if peer {
                self.peer_tls.clone()
            } else {
                crate::http::tls()
            },
        );
        let mut url = url.to_owned();
        for _ in 0..MAX_HOPS {
            let offset = self.hasher.len();
            let mut req = agent.get(&url);
            if offset > 0 {
                req = req.header("range", &format!("bytes={offset}-"));
            }
            if peer {
                req = req.header(FETCHER_HEADER, &self.me);
                if let Some(t) = &self.token {
                    req = req.header("authorization", &format!("Bearer {t}"));
                }
            }
            let resp = match req.call() {
                Ok(r) => r,
                Err(e) => return Outcome::Broken(format!("GET {url}: {e}")),
            };
            let status = resp.status();
            if status.is_redirection() {
                let Some(to) = resp.headers().get("location").and_then(|v| v.to_str().ok()) else {
                    return Outcome::Broken(format!("GET {url}: {status} without a Location"));
                };
                // A Location may be relative to the URL that sent it.
                match url::Url::parse(&url).and_then(|base| base.join(to)) {
                    Ok(next) => url = next.into(),
                    Err(e) => {
                        return Outcome::Broken(format!(
                            "GET {url}: {status} to an unusable Location {to:?}: {e}"
                        ));
                    }
                }
                continue;
            }
            match status.as_u16() {
                200 => {
                    if offset > 0 && self.reset().is_err() {
                        return Outcome::Broken(format!("GET {url}: cannot start over"));
                    }
                }
                206 => {
                    let from = resp
                        .headers()
                        .get("content-range")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("bytes "))
                        .and_then(|v| v.split('-').next())
                        .and_then(|v| v.parse::<u64>().ok());
                    if from != Some(offset) {
                        return Outcome::Broken(format!(
                            "GET {url}: answered a range other than the one asked for"
                        ));
                    }
                }
                503 | 429 => return Outcome::Busy(format!("GET {url}: busy")),
                404 => return Outcome::Missing(format!("GET {url}: 404 not found")),
                _ => return Outcome::Broken(format!("GET {url}: HTTP {status}")),
            }
            let mut body = resp.into_body().into_reader();
            return match self.copy_from(&mut body) {
                Ok(()) => Outcome::Complete,
                Err(e) => Outcome::Broken(format!(
                    "GET {url}: broken after {} bytes: {e}",
                    self.hasher.len()
                )),
            };
        }
        Outcome::Broken(format!("GET {url}: more than {MAX_HOPS} redirects"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o755);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn place_copies_and_unpacks() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob");
        fs::write(
            &blob,
            tar_gz(&[("bin/run", b"#!/bin/sh\n"), ("README", b"hi")]),
        )
        .unwrap();
        let out = dir.path().join("sandbox");
        place(&blob, &out.join("dist"), true).unwrap();
        assert_eq!(fs::read(out.join("dist/README")).unwrap(), b"hi");
        assert!(out.join("dist/bin/run").is_file());
        place(&blob, &out.join("sub/archive.tgz"), false).unwrap();
        assert_eq!(
            fs::read(out.join("sub/archive.tgz")).unwrap(),
            fs::read(&blob).unwrap()
        );
        fs::write(&blob, b"plain bytes").unwrap();
        let e = place(&blob, &out.join("x"), true).unwrap_err();
        assert!(e.contains("extract = false"), "{e}");
    }
}
