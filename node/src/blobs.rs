//! The node's content-addressed blob store: files kept by their sha256.
//!
//! A blob lives at `<data-dir>/blobs/sha256/<hex>`; while it is being
//! written it is `<hex>.partial` (one writer at a time per blob, which the
//! caller arranges: see [`crate::artifacts`]), and it becomes `<hex>` by an
//! atomic rename only after its digest was checked. A file named `<hex>`
//! therefore always holds exactly the bytes whose sha256 is `<hex>`; a
//! crash leaves at most a `.partial`, which [`BlobStore::open`] removes.
//!
//! The blob's modification time records when it was last used (written,
//! fetched or copied into a task's sandbox); [`BlobStore::collect`] removes
//! the blobs unused for a while that nobody wants kept. Artifacts use the
//! store today; package archives are meant to share it.
//!
//! Blocking file I/O: call it from a blocking thread.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

/// A sha256 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// Lower-case hex.
    pub fn hex(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{self}")
    }
}

/// A digest that is not 64 hex digits.
#[derive(Debug, thiserror::Error)]
#[error("not a sha256 ({0:?}): expected 64 hex digits, as `sha256sum FILE` prints")]
pub struct BadDigest(pub String);

impl FromStr for Digest {
    type Err = BadDigest;

    fn from_str(s: &str) -> Result<Digest, BadDigest> {
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        let bad = || BadDigest(s.to_owned());
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
                .map_err(|_| bad())?;
        }
        Ok(Digest(out))
    }
}

/// Hashes bytes as they pass, for a writer that checks what it wrote.
#[derive(Clone, Default)]
pub struct Hasher {
    sha: Sha256,
    len: u64,
}

impl Hasher {
    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.sha.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Bytes seen.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no byte was seen.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest of everything seen.
    pub fn finish(self) -> Digest {
        Digest(self.sha.finalize().into())
    }
}

/// What went wrong with a blob.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The bytes are not the ones asked for; nothing was kept.
    #[error(
        "{what}: sha256 mismatch: expected {expected}, got {actual} ({size} bytes); nothing was kept: check the sha256 or the source"
    )]
    Mismatch {
        /// What was being stored (a file, a URL, a peer).
        what: String,
        /// The digest asked for.
        expected: Digest,
        /// The digest of what arrived.
        actual: Digest,
        /// Bytes that arrived.
        size: u64,
    },
    /// A file operation failed.
    #[error("{what} ({path}): {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BlobError + 'a {
    move |source| BlobError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// A blob being written: a temporary file in the store, removed unless
/// [`BlobStore::finish`] keeps it.
#[derive(Debug)]
pub struct Incoming {
    tmp: tempfile::NamedTempFile,
}

impl Incoming {
    /// The file to write to (another handle on it).
    pub fn file(&self) -> io::Result<File> {
        self.tmp.as_file().try_clone()
    }
}

/// One blob in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    /// Its digest.
    pub digest: Digest,
    /// Bytes.
    pub size: u64,
    /// Last used.
    pub used: SystemTime,
}

/// The store: a directory of blobs named by digest. Cheap to clone.
#[derive(Clone, Debug)]
pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    /// The store under `data_dir` (`blobs/sha256/`), created if missing;
    /// `.partial` files a crash left are removed.
    pub fn open(data_dir: &Path) -> Result<BlobStore, BlobError> {
        let dir = data_dir.join("blobs").join("sha256");
        fs::create_dir_all(&dir).map_err(io_err("cannot create the blob store", &dir))?;
        let store = BlobStore { dir };
        for entry in fs::read_dir(&store.dir)
            .map_err(io_err("cannot read the blob store", &store.dir))?
            .flatten()
        {
            if entry.file_name().to_string_lossy().ends_with(".partial") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(store)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where blob `d` is when complete.
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.dir.join(d.hex())
    }

    /// Where blob `d` is written before its digest is checked.
    pub fn partial_path(&self, d: &Digest) -> PathBuf {
        self.dir.join(format!("{}.partial", d.hex()))
    }

    /// Whether blob `d` is complete here.
    pub fn has(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    /// Its size, when complete here.
    pub fn size(&self, d: &Digest) -> Option<u64> {
        fs::metadata(self.path(d)).ok().map(|m| m.len())
    }

    /// Records that blob `d` was used now (its modification time).
    pub fn touch(&self, d: &Digest) {
        if let Ok(f) = File::options().append(true).open(self.path(d)) {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// A file to write a new blob into (see [`BlobStore::finish`]);
    /// removed unless finished.
    pub fn incoming(&self) -> Result<Incoming, BlobError> {
        let tmp = tempfile::Builder::new()
            .prefix(".incoming-")
            .suffix(".partial")
            .tempfile_in(&self.dir)
            .map_err(io_err("cannot create a file in the blob store", &self.dir))?;
        Ok(Incoming { tmp })
    }

    /// Keeps what was written to `incoming` (whose bytes `hasher` saw) as
    /// a blob; with `expected`, refuses (keeping nothing) bytes whose
    /// digest differs. `what` names the source in errors.
    pub fn finish(
        &self,
        incoming: Incoming,
        hasher: Hasher,
        what: &str,
        expected: Option<Digest>,
    ) -> Result<(Digest, u64), BlobError> {
        let size = hasher.len();
        let actual = hasher.finish();
        if let Some(expected) = expected
            && expected != actual
        {
            return Err(BlobError::Mismatch {
                what: what.to_owned(),
                expected,
                actual,
                size,
            });
        }
        let path = self.path(&actual);
        incoming
            .tmp
            .as_file()
            .sync_all()
            .map_err(io_err("cannot sync", &path))?;
        incoming.tmp.persist(&path).map_err(|e| BlobError::Io {
            what: "cannot complete",
            path: path.clone(),
            source: e.error,
        })?;
        self.touch(&actual);
        Ok((actual, size))
    }

    /// Stores what `reader` yields; with `expected`, refuses (keeping
    /// nothing) bytes whose digest differs. `what` names the source in
    /// errors. Returns the digest and size.
    pub fn put_reader(
        &self,
        what: &str,
        expected: Option<Digest>,
        mut reader: impl Read,
    ) -> Result<(Digest, u64), BlobError> {
        let incoming = self.incoming()?;
        let mut hasher = Hasher::default();
        let mut buf = vec![0u8; 256 * 1024];
        let mut file = incoming.tmp.as_file();
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(BlobError::Io {
                        what: "cannot read",
                        path: PathBuf::from(what),
                        source,
                    });
                }
            };
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])
                .map_err(io_err("cannot write", incoming.tmp.path()))?;
        }
        self.finish(incoming, hasher, what, expected)
    }

    /// Stores a copy of the file at `path` (see [`BlobStore::put_reader`]).
    pub fn import_file(
        &self,
        path: &Path,
        expected: Option<Digest>,
    ) -> Result<(Digest, u64), BlobError> {
        let f = File::open(path).map_err(io_err("cannot open", path))?;
        self.put_reader(&path.display().to_string(), expected, f)
    }

    /// Makes the `.partial` of `d` (written and checked by the caller) the
    /// blob.
    pub fn commit_partial(&self, d: &Digest) -> Result<(), BlobError> {
        let partial = self.partial_path(d);
        fs::rename(&partial, self.path(d)).map_err(io_err("cannot complete", &partial))?;
        self.touch(d);
        Ok(())
    }

    /// Removes blob `d` (and its `.partial`); whether it was here.
    pub fn remove(&self, d: &Digest) -> bool {
        let _ = fs::remove_file(self.partial_path(d));
        fs::remove_file(self.path(d)).is_ok()
    }

    /// Every complete blob, by digest.
    pub fn list(&self) -> Vec<BlobInfo> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<BlobInfo> = entries
            .flatten()
            .filter_map(|e| {
                let digest: Digest = e.file_name().to_str()?.parse().ok()?;
                let meta = e.metadata().ok()?;
                Some(BlobInfo {
                    digest,
                    size: meta.len(),
                    used: meta.modified().ok()?,
                })
            })
            .collect();
        out.sort_by_key(|b| b.digest);
        out
    }

    /// Removes the blobs not in `keep` and unused for longer than
    /// `unused_for` at `now`; returns them.
    pub fn collect(
        &self,
        keep: &std::collections::BTreeSet<Digest>,
        unused_for: Duration,
        now: SystemTime,
    ) -> Vec<Digest> {
        self.list()
            .into_iter()
            .filter(|b| !keep.contains(&b.digest))
            .filter(|b| now.duration_since(b.used).unwrap_or_default() > unused_for)
            .filter(|b| self.remove(&b.digest))
            .map(|b| b.digest)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn digests_parse_and_print() {
        let d = Digest::of(b"test");
        let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        assert_eq!(d.hex(), hex);
        assert_eq!(hex.parse::<Digest>().unwrap(), d);
        assert_eq!(format!("sha256:{hex}").parse::<Digest>().unwrap(), d);
        assert_eq!(hex.to_uppercase().parse::<Digest>().unwrap(), d);
        assert!("abc".parse::<Digest>().is_err());
        assert!(hex.replace('9', "g").parse::<Digest>().is_err());
    }

    #[test]
    fn put_checks_then_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let (d, n) = store.put_reader("mem", None, &b"hello"[..]).unwrap();
        assert_eq!((d, n), (Digest::of(b"hello"), 5));
        assert!(store.has(&d));
        assert_eq!(fs::read(store.path(&d)).unwrap(), b"hello");
        // Same bytes again with their digest: fine.
        store.put_reader("mem", Some(d), &b"hello"[..]).unwrap();
        // A mismatch keeps nothing and says what and where.
        let wrong = Digest::of(b"other");
        let e = store
            .put_reader("upload.bin", Some(wrong), &b"bytes"[..])
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("upload.bin") && msg.contains(&wrong.hex()),
            "{msg}"
        );
        assert!(!store.has(&wrong));
        assert!(!store.has(&Digest::of(b"bytes")));
        assert_eq!(store.list().len(), 1);
        let leftovers: Vec<_> = fs::read_dir(store.dir()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left");
    }

    #[test]
    fn import_and_partials() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("f");
        fs::write(&src, b"data").unwrap();
        let store = BlobStore::open(&dir.path().join("node")).unwrap();
        let (d, _) = store.import_file(&src, None).unwrap();
        assert!(store.has(&d));
        let e = store.import_file(&dir.path().join("missing"), None);
        assert!(e.unwrap_err().to_string().contains("missing"));
        // A partial left by a crash is gone at the next open.
        let other = Digest::of(b"x");
        fs::write(store.partial_path(&other), b"x").unwrap();
        let store = BlobStore::open(&dir.path().join("node")).unwrap();
        assert!(!store.partial_path(&other).exists());
        // A partial completed by its writer becomes the blob.
        fs::write(store.partial_path(&other), b"x").unwrap();
        store.commit_partial(&other).unwrap();
        assert!(store.has(&other));
    }

    #[test]
    fn collect_spares_kept_and_recent() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let (a, _) = store.put_reader("a", None, &b"a"[..]).unwrap();
        let (b, _) = store.put_reader("b", None, &b"b"[..]).unwrap();
        let (c, _) = store.put_reader("c", None, &b"c"[..]).unwrap();
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        assert!(store.collect(&BTreeSet::new(), hour, now).is_empty());
        let later = now + 2 * hour;
        let keep = BTreeSet::from([a]);
        let mut gone = store.collect(&keep, hour, later);
        gone.sort();
        let mut want = vec![b, c];
        want.sort();
        assert_eq!(gone, want);
        assert!(store.has(&a) && !store.has(&b) && !store.has(&c));
        assert!(store.remove(&a));
        assert!(!store.remove(&a));
    }
}
