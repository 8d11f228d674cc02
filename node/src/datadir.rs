//! The agent's data dir.
//!
//! | file | what | written |
//! |---|---|---|
//! | `lock` | held (flock) while an agent uses the dir | at start |
//! | `node.json` | node id and start counter (`bump`) | every start, fsync |
//! | `token` | the cluster token, mode 0600 | when founding or first joining |
//! | `settings.json` | flags of the last start, reused when omitted | every start |
//! | `peers.json` | gossip addresses of known members, to rejoin | as members change |
//! | `agent.json` | addresses really bound | once serving |
//!
//! Every file is replaced atomically (write, fsync, rename, fsync the dir).
//! A file that exists but does not parse is an error naming it: nothing is
//! overwritten and the agent does not start.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use shoal_gossip::NodeId;

use crate::token::{ClusterSecret, TokenError};

/// A data dir problem, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// The directory cannot be created or opened.
    #[error("cannot use data dir {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another agent holds the lock.
    #[error(
        "data dir {path} is in use by another shoal agent (lock held on {path}/lock); stop it or pass another --data-dir"
    )]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// A file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file cannot be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file exists but its content is not what it should be.
    #[error(
        "{path} is corrupt: {why}; fix or remove it (removing node.json gives this node a new id)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The token file holds something else than a token.
    #[error("{path}: {source}")]
    Token {
        /// The file.
        path: PathBuf,
        /// Why.
        source: TokenError,
    },
}

/// What `node.json` holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredNode {
    /// Permanent node id (16 hex digits).
    pub node_id: String,
    /// Start counter: grows at every start and every forced rejoin.
    pub bump: u32,
}

impl StoredNode {
    /// The node id, parsed.
    pub fn id(&self) -> Result<NodeId, String> {
        self.node_id.parse::<NodeId>().map_err(|e| e.to_string())
    }
}

/// Flags of the last start (`settings.json`); `None` means "not given".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredSettings {
    /// `--name`.
    #[serde(default)]
    pub name: Option<String>,
    /// `--dc`.
    #[serde(default)]
    pub dc: Option<String>,
    /// `--zone`.
    #[serde(default)]
    pub zone: Option<String>,
    /// `--region`.
    #[serde(default)]
    pub region: Option<String>,
    /// `--label`s.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// `--cpus`.
    #[serde(default)]
    pub cpus: Option<f64>,
    /// `--memory-mb`.
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// `--bind`.
    #[serde(default)]
    pub bind: Option<SocketAddr>,
    /// `--rpc`.
    #[serde(default)]
    pub rpc: Option<SocketAddr>,
    /// `--api`.
    #[serde(default)]
    pub api: Option<SocketAddr>,
    /// `--dns`: an address, or `off`.
    #[serde(default)]
    pub dns: Option<String>,
    /// `--advertise`.
    #[serde(default)]
    pub advertise: Option<IpAddr>,
    /// `--api-insecure`: plain HTTP to everyone, no TLS.
    #[serde(default)]
    pub api_insecure: Option<bool>,
    /// `--gossip` preset.
    #[serde(default)]
    pub gossip: Option<String>,
    /// `--suspicion-mult`.
    #[serde(default)]
    pub suspicion_mult: Option<f64>,
    /// `--reach-only-dc-size`.
    #[serde(default)]
    pub reach_only_dc_size: Option<usize>,
    /// Drained by `shoal node drain` (kept across restarts).
    #[serde(default)]
    pub draining: Option<bool>,
}

/// What `agent.json` holds (also read back at the next start, to try the
/// same ports again when they were chosen by the OS).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentFile {
    /// Node id.
    pub node_id: String,
    /// Node name.
    pub name: String,
    /// Gossip address (UDP), as advertised.
    pub gossip: SocketAddr,
    /// RPC address (QUIC over UDP), as advertised.
    pub rpc: SocketAddr,
    /// HTTP API address, as bound.
    pub api: SocketAddr,
    /// DNS address (UDP and TCP), as bound; absent with `--dns off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<SocketAddr>,
    /// Process id of the agent that wrote it.
    #[serde(default)]
    pub pid: u32,
}

/// An open, locked data dir.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: Flock<File>,
}

impl DataDir {
    /// Creates (mode 0700) if needed, and locks the dir.
    pub fn open(path: &Path) -> Result<DataDir, DataDirError> {
        let dir_err = |source| DataDirError::Dir {
            path: path.to_owned(),
            source,
        };
        if !path.exists() {
            fs::create_dir_all(path).map_err(dir_err)?;
            fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(dir_err)?;
        }
        let path = path.canonicalize().map_err(dir_err)?;
        let lock_path = path.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|source| DataDirError::Write {
                path: lock_path.clone(),
                source,
            })?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|_| DataDirError::Locked { path: path.clone() })?;
        Ok(DataDir { path, _lock: lock })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Path of a file in the dir.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn read_optional(&self, name: &str) -> Result<Option<String>, DataDirError> {
        let path = self.file(name);
        match fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(DataDirError::Read { path, source }),
        }
    }

    fn read_json<T: for<'de> Deserialize<'de>>(
        &self,
        name: &str,
    ) -> Result<Option<T>, DataDirError> {
        let Some(text) = self.read_optional(name)? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| DataDirError::Corrupt {
                path: self.file(name),
                why: e.to_string(),
            })
    }

    /// Replaces `name` atomically with `bytes`; `sync` also fsyncs.
    pub fn write_atomic(
        &self,
        name: &str,
        bytes: &[u8],
        mode: u32,
        sync: bool,
    ) -> Result<(), DataDirError> {
        let path = self.file(name);
        let tmp = self.file(&format!(".{name}.tmp"));
        let werr = |source| DataDirError::Write {
            path: path.clone(),
            source,
        };
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(mode)
            .open(&tmp)
            .map_err(werr)?;
        f.write_all(bytes).map_err(werr)?;
        if sync {
            f.sync_all().map_err(werr)?;
        }
        drop(f);
        fs::rename(&tmp, &path).map_err(werr)?;
        if sync {
            File::open(&self.path)
                .and_then(|d| d.sync_all())
                .map_err(werr)?;
        }
        Ok(())
    }

    fn write_json<T: Serialize>(
        &self,
        name: &str,
        value: &T,
        sync: bool,
    ) -> Result<(), DataDirError> {
        let mut bytes = serde_json::to_vec_pretty(value).expect("plain data serializes");
        bytes.push(b'\n');
        self.write_atomic(name, &bytes, 0o600, sync)
    }

    /// `node.json`, if present.
    pub fn load_node(&self) -> Result<Option<StoredNode>, DataDirError> {
        let node: Option<StoredNode> = self.read_json("node.json")?;
        if let Some(n) = &node {
            n.id().map_err(|why| DataDirError::Corrupt {
                path: self.file("node.json"),
                why,
            })?;
        }
        Ok(node)
    }

    /// Writes `node.json` durably.
    pub fn store_node(&self, node: &StoredNode) -> Result<(), DataDirError> {
        self.write_json("node.json", node, true)
    }

    /// The cluster secret in `token`, if present.
    pub fn load_secret(&self) -> Result<Option<ClusterSecret>, DataDirError> {
        let Some(text) = self.read_optional("token")? else {
            return Ok(None);
        };
        ClusterSecret::from_token(&text)
            .map(Some)
            .map_err(|source| DataDirError::Token {
                path: self.file("token"),
                source,
            })
    }

    /// Writes `token` (mode 0600) durably.
    pub fn store_secret(&self, secret: &ClusterSecret) -> Result<(), DataDirError> {
        let mut text = secret.to_token();
        text.push('\n');
        self.write_atomic("token", text.as_bytes(), 0o600, true)
    }

    /// `settings.json`, or defaults.
    pub fn load_settings(&self) -> Result<StoredSettings, DataDirError> {
        Ok(self.read_json("settings.json")?.unwrap_or_default())
    }

    /// Writes `settings.json`.
    pub fn store_settings(&self, settings: &StoredSettings) -> Result<(), DataDirError> {
        self.write_json("settings.json", settings, true)
    }

    /// `peers.json`, or nothing.
    pub fn load_peers(&self) -> Result<Vec<SocketAddr>, DataDirError> {
        Ok(self.read_json("peers.json")?.unwrap_or_default())
    }

    /// Writes `peers.json` (a hint: not fsynced).
    pub fn store_peers(&self, peers: &[SocketAddr]) -> Result<(), DataDirError> {
        self.write_json("peers.json", &peers, false)
    }

    /// Writes `agent.json`.
    pub fn store_agent_file(&self, agent: &AgentFile) -> Result<(), DataDirError> {
        self.write_json("agent.json", agent, true)
    }

    /// `agent.json` of the previous start, if readable (a hint: ignored
    /// when damaged).
    pub fn previous_agent_file(&self) -> Option<AgentFile> {
        self.read_json::<AgentFile>("agent.json").ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive() {
        let tmp = tempfile::tempdir().unwrap();
        let a = DataDir::open(tmp.path()).unwrap();
        let err = DataDir::open(tmp.path()).unwrap_err();
        assert!(matches!(err, DataDirError::Locked { .. }), "{err}");
        drop(a);
        DataDir::open(tmp.path()).unwrap();
    }

    #[test]
    fn corrupt_node_file_is_named_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        fs::write(dir.file("node.json"), b"{not json").unwrap();
        let err = dir.load_node().unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("node.json") && msg.contains("corrupt"),
            "{msg}"
        );
        assert_eq!(fs::read(dir.file("node.json")).unwrap(), b"{not json");
        fs::write(dir.file("node.json"), br#"{"node_id":"zz","bump":1}"#).unwrap();
        assert!(dir.load_node().is_err());
    }

    #[test]
    fn token_file_is_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        let s = ClusterSecret::generate().unwrap();
        dir.store_secret(&s).unwrap();
        let mode = fs::metadata(dir.file("token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(dir.load_secret().unwrap(), Some(s));
    }

    #[test]
    fn settings_round_trip_and_reject_unknown_fields() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        assert_eq!(dir.load_settings().unwrap(), StoredSettings::default());
        let s = StoredSettings {
            name: Some("n1".into()),
            cpus: Some(2.5),
            ..Default::default()
        };
        dir.store_settings(&s).unwrap();
        assert_eq!(dir.load_settings().unwrap(), s);
        fs::write(dir.file("settings.json"), br#"{"nmae":"x"}"#).unwrap();
        assert!(dir.load_settings().is_err());
    }
}
