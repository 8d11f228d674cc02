//! Finding packages in the cluster's repositories (see
//! `shoal_state::Repository`): each in list order, then the built-in
//! library; the first that has the package wins.
//!
//! - `dir:PATH`: a directory of packages (each a sub-directory or a
//!   `.tar.gz`) on the node that added the repository. That node reads
//!   it; any other asks it over the RPC transport ([`PackagesRequest`]),
//!   and it serves only the directories of repositories it added, never
//!   another path.
//! - `http(s)://…/index.json`: `{"packages": {"NAME": [{"version": "1.0.0",
//!   "url": "NAME-1.0.0.tar.gz", "sha256": "<hex>"}]}}`, URLs relative to
//!   the index's. An archive whose sha256 differs from the index's is
//!   refused, naming both.
//!
//! Archives fetched are kept per node by their digest in the data dir's
//! `packages/`. A node without one asks first the nodes that installed
//! that package version (the installations' revisions name them) for
//! their copy ([`PackagesRequest::Cached`], checked against the offer's
//! digest), and reads the repository only when none has it: a repository
//! is read about once per package version, not once per node.
//! Without a version, the highest version a repository has is taken.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shoal_gossip::NodeId;
use shoal_package::{Package, archive, library};
use shoal_state::{BUILTIN_REPO, Repository};
use shoal_transport::{Service, Transport};
use tokio::sync::watch;

use crate::state::{Peer, RepoRequest, StateHandle};

/// Longest wait for a repository's index or archive.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Nodes asked for a cached archive before the repository is.
const PEER_TRIES: usize = 3;
/// How long one of them may take.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest package archive or index accepted (packages are templates and
/// small files; big payloads are artifacts).
pub const MAX_ARCHIVE_BYTES: u64 = 8 << 20;

/// Why a package could not be had.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// No repository has it.
    #[error("{0}")]
    NotFound(String),
    /// A repository could not be read, or gave something unusable.
    #[error("repository {repo:?}: {message}")]
    Repo {
        /// The repository.
        repo: String,
        /// What went wrong, and what to do.
        message: String,
    },
    /// The node stopped.
    #[error("the agent is stopping")]
    Stopped,
}

/// One package version a repository offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// Package name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// `sha256:<hex>`: of the archive for an HTTP repository, else of the
    /// package's files.
    pub digest: String,
    /// HTTP repositories: the archive's URL. (Always written: the RPC's
    /// postcard encoding has no optional fields.)
    pub url: Option<String>,
}

/// A package found, and where.
#[derive(Debug)]
pub struct Found {
    /// The package.
    pub package: Package,
    /// The repository's name (`builtin` for the built-in library).
    pub repository: String,
}

/// What a node asks the node that holds a `dir:` repository.
#[derive(Debug, Serialize, Deserialize)]
pub enum PackagesRequest {
    /// What the repository offers.
    Index(String),
    /// A package of it: repository, name, version; answered as a
    /// `.tar.gz`.
    Fetch(String, String, String),
    /// An archive from the asked node's cache, by the offer's digest
    /// (`sha256:<hex>`); asked of any node that installed the package.
    Cached(String),
}

/// Its answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum PackagesResponse {
    /// The offers.
    Index(Vec<Offer>),
    /// The archive.
    Archive(Vec<u8>),
}

/// Looks packages up. Cheap to clone.
#[derive(Clone)]
pub struct Repos {
    state: StateHandle,
    transport: Transport,
    live: watch::Receiver<Arc<Vec<Peer>>>,
    me: NodeId,
    cache: PathBuf,
}

impl std::fmt::Debug for Repos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repos").finish_non_exhaustive()
    }
}

fn repo_err(repo: &str, message: impl Into<String>) -> RepoError {
    RepoError::Repo {
        repo: repo.to_owned(),
        message: message.into(),
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_of(bytes: &[u8]) -> String {
    let mut out = String::from("sha256:");
    for b in Sha256::digest(bytes).iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The highest version among `offers` named `name` (or exactly
/// `version`).
fn pick<'a>(offers: &'a [Offer], name: &str, version: Option<&str>) -> Option<&'a Offer> {
    offers
        .iter()
        .filter(|o| o.name == name)
        .filter(|o| version.is_none_or(|v| o.version == v))
        .max_by(|a, b| {
            match (
                semver::Version::parse(&a.version),
                semver::Version::parse(&b.version),
            ) {
                (Ok(x), Ok(y)) => x.cmp(&y),
                _ => a.version.cmp(&b.version),
            }
        })
}

impl Repos {
    /// Lookups through this node's replica and transport; archives kept
    /// in `cache`.
    pub fn new(
        state: StateHandle,
        transport: Transport,
        live: watch::Receiver<Arc<Vec<Peer>>>,
        me: NodeId,
        cache: PathBuf,
    ) -> Repos {
        Repos {
            state,
            transport,
            live,
            me,
            cache,
        }
    }

    /// The repositories in lookup order, the built-in library last.
    pub async fn list(&self) -> Result<Vec<Repository>, RepoError> {
        let mut all = self
            .state
            .repos(RepoRequest::List)
            .await
            .map_err(|_| RepoError::Stopped)?;
        all.push(Repository {
            name: BUILTIN_REPO.into(),
            url: "builtin:".into(),
            node: String::new(),
            position: f64::MAX,
            added_at: String::new(),
            deleted: false,
        });
        Ok(all)
    }

    /// What `repo` offers.
    pub async fn index(&self, repo: &Repository) -> Result<Vec<Offer>, RepoError> {
        if repo.name == BUILTIN_REPO {
            return Ok(library::all()
                .into_iter()
                .filter_map(|(_, p)| p.ok())
                .map(|p| Offer {
                    name: p.manifest().name.clone(),
                    version: p.manifest().version.to_string(),
                    digest: p.digest(),
                    url: None,
                })
                .collect());
        }
        if let Some(path) = repo.url.strip_prefix("dir:") {
            if self.holds(repo) {
                let path = PathBuf::from(path);
                let name = repo.name.clone();
                return tokio::task::spawn_blocking(move || dir_index(&name, &path))
                    .await
                    .map_err(|_| RepoError::Stopped)?;
            }
            return match self
                .ask(repo, PackagesRequest::Index(repo.name.clone()))
                .await?
            {
                PackagesResponse::Index(offers) => Ok(offers),
                PackagesResponse::Archive(_) => Err(repo_err(&repo.name, "answered out of turn")),
            };
        }
        let url = repo.url.clone();
        let name = repo.name.clone();
        tokio::task::spawn_blocking(move || http_index(&name, &url))
            .await
            .map_err(|_| RepoError::Stopped)?
    }

    /// Package `name` (at `version`, else the highest one) from the first
    /// repository that has it, or from `only` that one.
    pub async fn find(
        &self,
        name: &str,
        version: Option<&str>,
        only: Option<&str>,
    ) -> Result<Found, RepoError> {
        let mut looked = Vec::new();
        let mut problems = Vec::new();
        for repo in self.list().await? {
            if only.is_some_and(|o| o != repo.name) {
                continue;
            }
            looked.push(repo.name.clone());
            let offers = match self.index(&repo).await {
                Ok(o) => o,
                Err(e) => {
                    // One repository down does not hide the others.
                    problems.push(e.to_string());
                    continue;
                }
            };
            if let Some(offer) = pick(&offers, name, version) {
                let package = self.fetch(&repo, offer).await?;
                return Ok(Found {
                    package,
                    repository: repo.name,
                });
            }
        }
        if let Some(o) = only
            && looked.is_empty()
        {
            return Err(RepoError::NotFound(format!(
                "no repository named {o:?}: see `shoal package repo list`"
            )));
        }
        let what = match version {
            Some(v) => format!("{name} {v}"),
            None => name.to_owned(),
        };
        let mut message = format!(
            "no package {what:?} in the repositories ({}): see `shoal package search`",
            looked.join(", ")
        );
        if !problems.is_empty() {
            message.push_str(&format!("; unreadable: {}", problems.join("; ")));
        }
        Err(RepoError::NotFound(message))
    }

    /// Every offer of every repository, in lookup order, with its
    /// repository; unreadable repositories as errors beside them.
    pub async fn all(&self) -> Result<(Vec<(String, Offer)>, Vec<String>), RepoError> {
        let mut out = Vec::new();
        let mut problems = Vec::new();
        for repo in self.list().await? {
            match self.index(&repo).await {
                Ok(offers) => out.extend(offers.into_iter().map(|o| (repo.name.clone(), o))),
                Err(e) => {
                    tracing::warn!(error = %e, "a package repository cannot be read");
                    problems.push(e.to_string());
                }
            }
        }
        Ok((out, problems))
    }

    /// The package `offer` of `repo`: from the cache, the directory, the
    /// node that holds it, or its URL.
    async fn fetch(&self, repo: &Repository, offer: &Offer) -> Result<Package, RepoError> {
        if repo.name == BUILTIN_REPO {
            return match library::get(&offer.name) {
                Some(Ok(p)) => Ok(p),
                Some(Err(e)) => Err(repo_err(&repo.name, e.to_string())),
                None => Err(repo_err(&repo.name, format!("no package {:?}", offer.name))),
            };
        }
        let cached = self.cache.join(format!(
            "{}.tar.gz",
            offer.digest.trim_start_matches("sha256:")
        ));
        let bytes = match std::fs::read(&cached) {
            Ok(b) => b,
            Err(_) => {
                let bytes = match self.peer_copy(repo, offer).await {
                    Some(b) => b,
                    None => self.download(repo, offer).await?,
                };
                let _ = std::fs::create_dir_all(&self.cache);
                let tmp = cached.with_extension("partial");
                if std::fs::write(&tmp, &bytes).is_ok() {
                    let _ = std::fs::rename(&tmp, &cached);
                }
                bytes
            }
        };
        let (package, digest) = open(offer, &bytes).map_err(|e| repo_err(&repo.name, e))?;
        // What was offered is what arrived.
        if digest != offer.digest {
            let _ = std::fs::remove_file(&cached);
            return Err(repo_err(
                &repo.name,
                format!(
                    "package {} {} has {digest}, but the repository lists {}: nothing was installed; fix the repository",
                    offer.name, offer.version, offer.digest
                ),
            ));
        }
        Ok(package)
    }

    /// The archive of `offer` from the cache of a node that installed
    /// it (it kept the archive when it did), so that a repository is read
    /// about once per package version rather than once per node. None
    /// when no such node is live or none has it intact: the caller goes
    /// to the repository.
    async fn peer_copy(&self, repo: &Repository, offer: &Offer) -> Option<Vec<u8>> {
        let Ok(crate::state::InstallReply::List(all)) = self
            .state
            .install(crate::state::InstallRequest::List(true))
            .await
        else {
            return None;
        };
        let me = self.me.to_string();
        let mut holders: Vec<String> = Vec::new();
        for i in all
            .iter()
            .filter(|i| i.package == offer.name && i.repository == repo.name)
        {
            for r in i
                .revisions
                .iter()
                .rev()
                .filter(|r| r.version == offer.version)
            {
                if r.node != me && !holders.contains(&r.node) {
                    holders.push(r.node.clone());
                }
            }
        }
        let live: Vec<(NodeId, std::net::SocketAddr, String)> = {
            let live = self.live.borrow();
            holders
                .iter()
                .filter_map(|h| {
                    live.iter()
                        .find(|p| p.id.to_string() == *h)
                        .map(|p| (p.id, p.rpc, h.clone()))
                })
                .take(PEER_TRIES)
                .collect()
        };
        let body =
            postcard::to_allocvec(&PackagesRequest::Cached(offer.digest.clone())).expect("encodes");
        for (id, addr, node) in live {
            let answer = tokio::time::timeout(
                PEER_TIMEOUT,
                self.transport.request(id, addr, Service::Packages, &body),
            )
            .await;
            let bytes = match answer {
                Ok(Ok(a)) => match postcard::from_bytes(&a) {
                    Ok(PackagesResponse::Archive(b)) => b,
                    _ => continue,
                },
                Ok(Err(e)) => {
                    tracing::debug!(%node, error = %e, "no cached package archive there");
                    continue;
                }
                Err(_) => continue,
            };
            match open(offer, &bytes) {
                Ok((_, d)) if d == offer.digest => {
                    tracing::info!(
                        package = %offer.name, version = %offer.version, from = %node,
                        "package archive fetched from a peer's cache"
                    );
                    return Some(bytes);
                }
                _ => {
                    tracing::warn!(%node, package = %offer.name, "a peer's cached archive does not match its digest; ignored")
                }
            }
        }
        None
    }

    /// The archive of `offer`, not from the cache.
    async fn download(&self, repo: &Repository, offer: &Offer) -> Result<Vec<u8>, RepoError> {
        if let Some(path) = repo.url.strip_prefix("dir:") {
            if self.holds(repo) {
                let path = PathBuf::from(path);
                let (r, o) = (repo.name.clone(), offer.clone());
                return tokio::task::spawn_blocking(move || {
                    dir_archive(&r, &path, &o.name, &o.version)
                })
                .await
                .map_err(|_| RepoError::Stopped)?;
            }
            let ask = PackagesRequest::Fetch(
                repo.name.clone(),
                offer.name.clone(),
                offer.version.clone(),
            );
            return match self.ask(repo, ask).await? {
                PackagesResponse::Archive(bytes) => Ok(bytes),
                PackagesResponse::Index(_) => Err(repo_err(&repo.name, "answered out of turn")),
            };
        }
        let url = offer.url.clone().unwrap_or_default();
        let name = repo.name.clone();
        tokio::task::spawn_blocking(move || http_get(&name, &url))
            .await
            .map_err(|_| RepoError::Stopped)?
    }

    /// Whether this node added `repo` (and so holds its directory).
    fn holds(&self, repo: &Repository) -> bool {
        repo.node == self.me.to_string()
    }

    /// Asks the node that holds `dir:` repository `repo`.
    async fn ask(
        &self,
        repo: &Repository,
        request: PackagesRequest,
    ) -> Result<PackagesResponse, RepoError> {
        let peer = self
            .live
            .borrow()
            .iter()
            .find(|p| p.id.to_string() == repo.node)
            .map(|p| (p.id, p.rpc));
        let Some((id, addr)) = peer else {
            return Err(repo_err(
                &repo.name,
                format!(
                    "its directory is on node {}, which is not a live member now: start that node, or add the packages to a repository on a live one",
                    repo.node
                ),
            ));
        };
        let body = postcard::to_allocvec(&request).expect("encodes");
        let answer = tokio::time::timeout(
            FETCH_TIMEOUT,
            self.transport.request(id, addr, Service::Packages, &body),
        )
        .await
        .map_err(|_| {
            repo_err(
                &repo.name,
                format!("node {} did not answer in time", repo.node),
            )
        })?
        .map_err(|e| repo_err(&repo.name, format!("node {}: {e}", repo.node)))?;
        postcard::from_bytes(&answer).map_err(|e| {
            repo_err(
                &repo.name,
                format!("node {} answered something unreadable: {e}", repo.node),
            )
        })
    }

    /// Serves another node's [`PackagesRequest`]: only for repositories
    /// this node added.
    pub async fn serve(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        let request: PackagesRequest =
            postcard::from_bytes(body).map_err(|e| format!("malformed packages request: {e}"))?;
        let (repo_name, wanted) = match request {
            PackagesRequest::Index(r) => (r, None),
            PackagesRequest::Fetch(r, name, version) => (r, Some((name, version))),
            PackagesRequest::Cached(digest) => return self.serve_cached(&digest).await,
        };
        let repos = self.list().await.map_err(|e| e.to_string())?;
        let Some(repo) = repos.into_iter().find(|r| r.name == repo_name) else {
            return Err(format!("no repository {repo_name:?} here"));
        };
        let Some(path) = repo.url.strip_prefix("dir:").map(PathBuf::from) else {
            return Err(format!("repository {repo_name:?} is not a dir: repository"));
        };
        if !self.holds(&repo) {
            return Err(format!(
                "repository {repo_name:?} is on node {}, not this one",
                repo.node
            ));
        }
        let answer = tokio::task::spawn_blocking(move || match wanted {
            None => dir_index(&repo_name, &path).map(PackagesResponse::Index),
            Some((name, version)) => {
                dir_archive(&repo_name, &path, &name, &version).map(PackagesResponse::Archive)
            }
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        Ok(postcard::to_allocvec(&answer).expect("encodes"))
    }

    /// Serves a [`PackagesRequest::Cached`]: the archive of this node's
    /// cache with that digest, if it has it.
    async fn serve_cached(&self, digest: &str) -> Result<Vec<u8>, String> {
        let hex = digest.trim_start_matches("sha256:");
        if !shoal_model::is_sha256_hex(hex) {
            return Err(format!("not a package digest: {digest:?}"));
        }
        match tokio::fs::read(self.cache.join(format!("{hex}.tar.gz"))).await {
            Ok(bytes) => {
                Ok(postcard::to_allocvec(&PackagesResponse::Archive(bytes)).expect("encodes"))
            }
            Err(_) => Err(format!("package archive {digest} is not cached here")),
        }
    }
}

/// The package in archive `bytes` and its digest as `offer` counts it:
/// of the archive for an HTTP repository, else of the package's files.
fn open(offer: &Offer, bytes: &[u8]) -> Result<(Package, String), String> {
    let files = archive::unpack_tar_gz(bytes).map_err(|e| e.to_string())?;
    let package = Package::from_files(files).map_err(|e| e.to_string())?;
    let digest = if offer.url.is_some() {
        sha256_of(bytes)
    } else {
        package.digest()
    };
    Ok((package, digest))
}

/// The packages of directory `path`: each sub-directory with a
/// `package.toml`, and each `.tar.gz`/`.tgz`. One that does not load is
/// left out (`shoal package lint` tells why).
fn dir_packages(repo: &str, path: &Path) -> Result<Vec<Package>, RepoError> {
    let entries = std::fs::read_dir(path).map_err(|e| {
        repo_err(
            repo,
            format!("directory {} cannot be read: {e}", path.display()),
        )
    })?;
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let candidate = (p.is_dir() && p.join("package.toml").is_file())
            || name.ends_with(".tar.gz")
            || name.ends_with(".tgz");
        if name.starts_with('.') || !candidate {
            continue;
        }
        match shoal_package::fs::load_path(&p).and_then(Package::from_files) {
            Ok(pkg) => out.push(pkg),
            Err(e) => {
                tracing::warn!(repository = repo, path = %p.display(), error = %e, "package skipped")
            }
        }
    }
    Ok(out)
}

fn dir_index(repo: &str, path: &Path) -> Result<Vec<Offer>, RepoError> {
    Ok(dir_packages(repo, path)?
        .into_iter()
        .map(|p| Offer {
            name: p.manifest().name.clone(),
            version: p.manifest().version.to_string(),
            digest: p.digest(),
            url: None,
        })
        .collect())
}

fn dir_archive(repo: &str, path: &Path, name: &str, version: &str) -> Result<Vec<u8>, RepoError> {
    dir_packages(repo, path)?
        .into_iter()
        .find(|p| p.manifest().name == name && p.manifest().version.to_string() == version)
        .map(|p| archive::pack_tar_gz(p.files()))
        .ok_or_else(|| {
            repo_err(
                repo,
                format!("no package {name} {version} in {}", path.display()),
            )
        })
}

/// `GET url`, at most [`MAX_ARCHIVE_BYTES`].
fn http_get(repo: &str, url: &str) -> Result<Vec<u8>, RepoError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(crate::http::tls())
        .timeout_global(Some(FETCH_TIMEOUT))
        .build()
        .into();
    let response = agent
        .get(url)
        .call()
        .map_err(|e| repo_err(repo, format!("GET {url}: {e}")))?;
    response
        .into_body()
        .with_config()
        .limit(MAX_ARCHIVE_BYTES)
        .read_to_vec()
        .map_err(|e| repo_err(repo, format!("GET {url}: {e}")))
}

#[derive(Deserialize)]
struct Index {
    packages: BTreeMap<String, Vec<IndexVersion>>,
}

#[derive(Deserialize)]
struct IndexVersion {
    version: String,
    url: String,
    sha256: String,
}

/// The offers of the `index.json` at `url`.
fn http_index(repo: &str, url: &str) -> Result<Vec<Offer>, RepoError> {
    let bytes = http_get(repo, url)?;
    let index: Index = serde_json::from_slice(&bytes).map_err(|e| {
        repo_err(
            repo,
            format!("{url} is not an index ({{\"packages\": {{NAME: [{{version, url, sha256}}]}}}}): {e}"),
        )
    })?;
    let base = url.rsplit_once('/').map_or(url, |(b, _)| b);
    let mut out = Vec::new();
    for (name, versions) in index.packages {
        for v in versions {
            let hex = v.sha256.trim_start_matches("sha256:").to_ascii_lowercase();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(repo_err(
                    repo,
                    format!(
                        "{url}: {name} {}: sha256 {:?} is not 64 hex digits",
                        v.version, v.sha256
                    ),
                ));
            }
            let archive = if v.url.contains("://") {
                v.url
            } else {
                format!("{base}/{}", v.url.trim_start_matches("./"))
            };
            out.push(Offer {
                name: name.clone(),
                version: v.version,
                digest: format!("sha256:{hex}"),
                url: Some(archive),
            });
        }
    }
    Ok(out)
}
