//! Durable desired state: `<data-dir>/state/snapshot` and
//! `<data-dir>/state/changes.log`.
//!
//! Both files are sequences of records:
//!
//! ```text
//! record = length (u32 BE) | crc32 of payload (u32 BE) | payload
//! payload = postcard(PersistOp)
//! ```
//!
//! Every accepted change is appended to the log and fsynced before the API
//! answers. Start-up reads the snapshot, then the log. When the log grows
//! past [`COMPACT_AFTER_BYTES`] the whole state is written to a new snapshot
//! (temporary file, fsync, rename) and the log starts over.
//!
//! A log whose last record is incomplete was torn by a crash during a write
//! that was never acknowledged: it is cut back to the last whole record. A
//! record whose checksum fails is corruption: reading stops there, the file
//! is moved aside (`<name>.corrupt-<unix seconds>`) and reported, and the
//! node recovers the rest from its peers.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use shoal_state::PersistOp;

/// Log size that triggers a snapshot.
pub const COMPACT_AFTER_BYTES: u64 = 64 << 20;
/// Largest record accepted when reading.
const MAX_RECORD: u32 = 256 << 20;

/// A state file problem.
#[derive(Debug, thiserror::Error)]
pub enum StateLogError {
    /// The state dir or a file in it cannot be used.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// A file found damaged at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The file.
    pub path: PathBuf,
    /// Where it was moved.
    pub moved_to: Option<PathBuf>,
    /// What was wrong.
    pub what: String,
    /// Records read before the damage.
    pub records_read: usize,
}

/// What start-up found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Records, snapshot first, in order.
    pub records: Vec<PersistOp>,
    /// Damaged files (checksum failures).
    pub damaged: Vec<Damage>,
    /// A torn tail cut from the log: bytes removed.
    pub torn_bytes: u64,
}

/// The open log.
#[derive(Debug)]
pub struct StateLog {
    dir: PathBuf,
    log: File,
    log_len: u64,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateLogError + '_ {
    move |source| StateLogError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Encodes one record.
pub fn encode_record(op: &PersistOp) -> Vec<u8> {
    let payload = postcard::to_allocvec(op).expect("persist ops encode");
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(&crc32fast::hash(&payload).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

enum ReadEnd {
    /// Clean end of file.
    Eof,
    /// An incomplete last record starting at this offset.
    Torn(u64),
    /// A bad record (what is wrong, with its offset).
    Corrupt(String),
}

fn read_records(path: &Path) -> Result<(Vec<PersistOp>, ReadEnd), StateLogError> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes).map_err(io_err(path))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), ReadEnd::Eof)),
        Err(e) => return Err(io_err(path)(e)),
    }
    let mut records = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        if bytes.len() - at < 8 {
            return Ok((records, ReadEnd::Torn(at as u64)));
        }
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let crc = u32::from_be_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        if len > MAX_RECORD {
            return Ok((
                records,
                ReadEnd::Corrupt(format!("record length {len} is impossible")),
            ));
        }
        let end = at + 8 + len as usize;
        if end > bytes.len() {
            return Ok((records, ReadEnd::Torn(at as u64)));
        }
        let payload = &bytes[at + 8..end];
        if crc32fast::hash(payload) != crc {
            return Ok((
                records,
                ReadEnd::Corrupt(format!("checksum mismatch in the record at byte {at}")),
            ));
        }
        match postcard::from_bytes::<PersistOp>(payload) {
            Ok(op) => records.push(op),
            Err(e) => {
                return Ok((
                    records,
                    ReadEnd::Corrupt(format!("undecodable record at byte {at}: {e}")),
                ));
            }
        }
        at = end;
    }
    Ok((records, ReadEnd::Eof))
}

fn move_aside(path: &Path, now_secs: u64) -> Option<PathBuf> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    let to = path.with_file_name(format!("{name}.corrupt-{now_secs}"));
    fs::rename(path, &to).ok().map(|()| to)
}

fn sync_dir(dir: &Path) -> Result<(), StateLogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

impl StateLog {
    /// Opens `<data_dir>/state`, reading everything in it. `now_secs` names
    /// moved-aside files.
    pub fn open(data_dir: &Path, now_secs: u64) -> Result<(StateLog, Loaded), StateLogError> {
        let dir = data_dir.join("state");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let snapshot = dir.join("snapshot");
        let log_path = dir.join("changes.log");
        let mut loaded = Loaded::default();

        let (records, end) = read_records(&snapshot)?;
        let n = records.len();
        loaded.records.extend(records);
        match end {
            ReadEnd::Eof => {}
            ReadEnd::Torn(_) | ReadEnd::Corrupt(_) => {
                let what = match end {
                    ReadEnd::Corrupt(why) => why,
                    _ => "the file ends in the middle of a record".into(),
                };
                loaded.damaged.push(Damage {
                    moved_to: move_aside(&snapshot, now_secs),
                    path: snapshot.clone(),
                    what,
                    records_read: n,
                });
            }
        }

        let (records, end) = read_records(&log_path)?;
        let n = records.len();
        loaded.records.extend(records);
        match end {
            ReadEnd::Eof => {}
            ReadEnd::Torn(at) => {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&log_path)
                    .map_err(io_err(&log_path))?;
                let len = f.metadata().map_err(io_err(&log_path))?.len();
                f.set_len(at).map_err(io_err(&log_path))?;
                f.sync_all().map_err(io_err(&log_path))?;
                loaded.torn_bytes = len - at;
            }
            ReadEnd::Corrupt(what) => {
                loaded.damaged.push(Damage {
                    moved_to: move_aside(&log_path, now_secs),
                    path: log_path.clone(),
                    what,
                    records_read: n,
                });
            }
        }

        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err(&log_path))?;
        let log_len = log.metadata().map_err(io_err(&log_path))?.len();
        Ok((StateLog { dir, log, log_len }, loaded))
    }

    /// The state dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes in the log.
    pub fn log_len(&self) -> u64 {
        self.log_len
    }

    /// Appends `ops` and makes them durable (one fsync for all).
    pub fn append(&mut self, ops: &[PersistOp]) -> Result<(), StateLogError> {
        if ops.is_empty() {
            return Ok(());
        }
        let path = self.dir.join("changes.log");
        let mut buf = Vec::new();
        for op in ops {
            buf.extend_from_slice(&encode_record(op));
        }
        self.log.write_all(&buf).map_err(io_err(&path))?;
        self.log.sync_data().map_err(io_err(&path))?;
        self.log_len += buf.len() as u64;
        Ok(())
    }

    /// Whether the log should be compacted.
    pub fn wants_compaction(&self) -> bool {
        self.log_len > COMPACT_AFTER_BYTES
    }

    /// Replaces the snapshot with `records` (the whole state) and empties
    /// the log.
    pub fn compact(&mut self, records: &[PersistOp]) -> Result<(), StateLogError> {
        let tmp = self.dir.join("snapshot.tmp");
        let snapshot = self.dir.join("snapshot");
        let log_path = self.dir.join("changes.log");
        {
            let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
            let mut buf = Vec::new();
            for r in records {
                buf.extend_from_slice(&encode_record(r));
                if buf.len() > 1 << 20 {
                    f.write_all(&buf).map_err(io_err(&tmp))?;
                    buf.clear();
                }
            }
            f.write_all(&buf).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
        }
        fs::rename(&tmp, &snapshot).map_err(io_err(&snapshot))?;
        sync_dir(&self.dir)?;
        // A crash here leaves the old log next to a snapshot that already
        // holds it: replaying it again is harmless.
        self.log.set_len(0).map_err(io_err(&log_path))?;
        self.log
            .seek(SeekFrom::Start(0))
            .map_err(io_err(&log_path))?;
        self.log.sync_all().map_err(io_err(&log_path))?;
        self.log_len = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(i: u8) -> PersistOp {
        PersistOp::Append {
            name: format!("job-{i}"),
            bytes: vec![i; 100],
        }
    }

    #[test]
    fn append_then_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut log, loaded) = StateLog::open(tmp.path(), 1).unwrap();
        assert!(loaded.records.is_empty());
        log.append(&[op(1), op(2)]).unwrap();
        log.append(&[op(3)]).unwrap();
        drop(log);
        let (_, loaded) = StateLog::open(tmp.path(), 1).unwrap();
        assert_eq!(loaded.records, vec![op(1), op(2), op(3)]);
        assert!(loaded.damaged.is_empty());
    }

    #[test]
    fn a_torn_tail_is_cut() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut log, _) = StateLog::open(tmp.path(), 1).unwrap();
        log.append(&[op(1), op(2)]).unwrap();
        drop(log);
        let path = tmp.path().join("state/changes.log");
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        let (mut log, loaded) = StateLog::open(tmp.path(), 1).unwrap();
        assert_eq!(loaded.records, vec![op(1)]);
        assert!(loaded.torn_bytes > 0);
        assert!(loaded.damaged.is_empty());
        log.append(&[op(3)]).unwrap();
        drop(log);
        let (_, loaded) = StateLog::open(tmp.path(), 1).unwrap();
        assert_eq!(loaded.records, vec![op(1), op(3)]);
    }

    #[test]
    fn corruption_is_reported_and_moved_aside() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut log, _) = StateLog::open(tmp.path(), 1).unwrap();
        log.append(&[op(1), op(2), op(3)]).unwrap();
        drop(log);
        let path = tmp.path().join("state/changes.log");
        let mut bytes = fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let (_, loaded) = StateLog::open(tmp.path(), 77).unwrap();
        assert_eq!(loaded.records, vec![op(1)]);
        assert_eq!(loaded.damaged.len(), 1);
        assert_eq!(loaded.damaged[0].path, path);
        assert!(loaded.damaged[0].what.contains("checksum"));
        let moved = loaded.damaged[0].moved_to.clone().unwrap();
        assert!(moved.to_string_lossy().ends_with("changes.log.corrupt-77"));
        assert_eq!(
            fs::read(moved).unwrap(),
            bytes,
            "the damaged file is kept as it was"
        );
    }

    #[test]
    fn compaction_keeps_everything() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut log, _) = StateLog::open(tmp.path(), 1).unwrap();
        log.append(&[op(1), op(2)]).unwrap();
        log.compact(&[op(9)]).unwrap();
        assert_eq!(log.log_len(), 0);
        log.append(&[op(3)]).unwrap();
        drop(log);
        let (_, loaded) = StateLog::open(tmp.path(), 1).unwrap();
        assert_eq!(loaded.records, vec![op(9), op(3)]);
    }
}
