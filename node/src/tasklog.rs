//! Task logs: what a task writes on stdout and stderr, kept in its sandbox
//! as `stdout.log` and `stderr.log`, rotated by rename so that no byte is
//! lost, and read by *stream offset* so that a reader follows across
//! rotations.
//!
//! One writer owns each stream's files ([`LogFile`]): the log shipper of a
//! process task (`shoal __log`, see [`ship`]) or the agent's log follower of
//! a container. Rotation is done by that writer between two writes: the
//! older files move up (`stdout.log.1` → `stdout.log.2`, the oldest kept
//! is dropped), the current file becomes `stdout.log.1`, the offset at
//! which the new current file starts is written to `stdout.log.start`, and
//! a new `stdout.log` is created. Nothing writes into a renamed file, so
//! nothing written around a rotation goes astray (copy-then-truncate lost
//! whatever came between the copy and the truncate). A rotation happens at
//! a line end once the size limit is reached, so lines are not split
//! across files unless one runs on 64 KiB past the limit.
//!
//! Offsets count every byte the stream ever carried, across rotations and
//! restarts of the task: `stdout.log` holds the bytes from the offset in
//! `stdout.log.start` (0 when that file is missing) on, `stdout.log.1` the
//! bytes just before, and so on. [`read`] finds the file that holds an
//! offset; an offset whose bytes were dropped with the oldest file, or one
//! past the end (a log that was removed), reads from the oldest byte kept.
//!
//! Why a separate shipper process for process tasks: a task's output must
//! reach a writer that can rename the file, and tasks outlive the agent by
//! design (a restarted agent adopts them by pid). A task writing into an
//! inherited file descriptor would keep writing into the renamed file; a
//! pipe into the agent would break when the agent restarts. The shipper is
//! started per task, in its own process group, holds only the read ends of
//! the task's two pipes, and exits once every process holding a write end
//! is gone; the agent may come and go meanwhile.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest log file before rotation.
pub const LOG_MAX_BYTES: u64 = 10 << 20;
/// Rotated files kept per stream.
pub const LOG_KEEP: u32 = 2;

/// How far past its limit a file grows waiting for a line end before it is
/// rotated in the middle of a line.
pub const LINE_SLACK: u64 = 64 << 10;

/// How many times [`read`] looks again when a rotation changes the files
/// under it (a reader descheduled on a busy machine may miss many windows
/// between rotations when a task writes fast).
const READ_ATTEMPTS: u32 = 1000;
/// Between those looks.
const READ_RETRY: Duration = Duration::from_millis(1);

/// `stdout.log.1`, `stdout.log.2`, … for `n` = 1, 2, …
fn rotated(current: &Path, n: u32) -> PathBuf {
    let mut name = current.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// `stdout.log.start`: the offset at which the current file starts.
fn start_file(current: &Path) -> PathBuf {
    let mut name = current.as_os_str().to_owned();
    name.push(".start");
    PathBuf::from(name)
}

/// The offset at which `current` starts (0 when not recorded).
fn read_start(current: &Path) -> io::Result<u64> {
    match fs::read_to_string(start_file(current)) {
        Ok(s) => s.trim().parse().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} does not hold an offset ({e}); remove it to count from 0",
                    start_file(current).display()
                ),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

fn write_start(current: &Path, start: u64) -> io::Result<()> {
    let path = start_file(current);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    fs::write(&tmp, format!("{start}\n"))?;
    fs::rename(&tmp, &path)
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// One stream of a task's log (`stdout.log` or `stderr.log`), written by one
/// writer, rotated by rename when it reaches its limit. See the module
/// documentation for the files and the offsets.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: File,
    /// Bytes in the current file.
    len: u64,
    /// Offset of the current file's first byte in the stream.
    start: u64,
    max: u64,
    keep: u32,
}

impl LogFile {
    /// Opens (appending) the stream whose current file is `path`; rotates
    /// when the current file reaches `max` bytes, keeping `keep` older
    /// files. A current file already at the limit is rotated first.
    pub fn open(path: &Path, max: u64, keep: u32) -> io::Result<LogFile> {
        let start = read_start(path)?;
        let file = open_append(path)?;
        let len = file.metadata()?.len();
        let mut log = LogFile {
            path: path.to_path_buf(),
            file,
            len,
            start,
            max: max.max(1),
            keep,
        };
        if log.len >= log.max {
            log.rotate()?;
        }
        Ok(log)
    }

    /// The path of the current file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the current file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the current file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The offset just past the last byte written.
    pub fn end(&self) -> u64 {
        self.start + self.len
    }

    /// Appends `buf`, rotating when the current file reaches its limit: at
    /// the last line end of the first write that reaches it with one, or,
    /// for a line that runs [`LINE_SLACK`] past the limit, there.
    pub fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let after = self.len + buf.len() as u64;
        if after >= self.max {
            if let Some(nl) = buf.iter().rposition(|b| *b == b'\n') {
                self.append(&buf[..=nl])?;
                self.rotate()?;
                return self.append(&buf[nl + 1..]);
            }
            if after >= self.max.saturating_add(LINE_SLACK) {
                self.append(buf)?;
                return self.rotate();
            }
        }
        self.append(buf)
    }

    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.file.write_all(buf)?;
        self.len += buf.len() as u64;
        Ok(())
    }

    /// Rotates now when the current file holds more than `max` bytes.
    pub fn rotate_over(&mut self, max: u64) -> io::Result<()> {
        if self.len > max {
            self.rotate()?;
        }
        Ok(())
    }

    /// Moves the current file to `.1` (and older ones up, dropping the
    /// oldest kept) and starts a new one. An empty file is left as it is.
    pub fn rotate(&mut self) -> io::Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        // Older files move up, the last one kept overwriting the one
        // dropped.
        let mut top = 0;
        while top + 1 < self.keep && rotated(&self.path, top + 1).exists() {
            top += 1;
        }
        for n in (1..=top).rev() {
            fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1))?;
        }
        if self.keep == 0 {
            fs::remove_file(&self.path)?;
        } else {
            fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        let start = self.start + self.len;
        if let Err(e) = write_start(&self.path, start) {
            // Keep the offsets true: back to the file we had.
            if self.keep > 0 {
                let _ = fs::rename(rotated(&self.path, 1), &self.path);
            }
            return Err(e);
        }
        self.file = open_append(&self.path)?;
        self.start = start;
        self.len = 0;
        Ok(())
    }
}

/// A piece of a stream, as [`read`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    /// The bytes.
    pub data: Vec<u8>,
    /// The offset to read from next.
    pub next: u64,
    /// The offset just past the last byte written so far.
    pub size: u64,
}

/// Reads up to `max` bytes of the stream whose current file is `current`,
/// from stream offset `offset` (see the module documentation). Safe while
/// the writer appends and rotates: when a rotation moves the files during
/// the read, it looks again.
pub fn read(current: &Path, offset: u64, max: u64) -> io::Result<Piece> {
    for _ in 0..READ_ATTEMPTS {
        if let Some(piece) = read_once(current, offset, max)? {
            return Ok(piece);
        }
        std::thread::sleep(READ_RETRY);
    }
    Err(io::Error::other(format!(
        "{} kept rotating while it was read; try again",
        current.display()
    )))
}

/// One look; `None` when a rotation happened meanwhile.
fn read_once(current: &Path, offset: u64, max: u64) -> io::Result<Option<Piece>> {
    let start = read_start(current)?;
    let newest = match File::open(current) {
        Ok(f) => f,
        // Between the rename and the new file of a rotation.
        Err(e) if e.kind() == io::ErrorKind::NotFound && rotated(current, 1).exists() => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    // Oldest first: (first offset, file, length, path).
    let mut segments: Vec<(u64, File, u64, PathBuf)> = Vec::new();
    let len = newest.metadata()?.len();
    segments.push((start, newest, len, current.to_path_buf()));
    let mut first = start;
    // Older files as far back as the offset (all of them when it is past
    // the end: then the oldest byte kept is where reading starts).
    let past_end = offset > start + len;
    for n in 1.. {
        if first <= offset && !past_end {
            break;
        }
        let path = rotated(current, n);
        let f = match File::open(&path) {
            Ok(f) => f,
            // A gap: the older files are moving up.
            Err(_) if rotated(current, n + 1).exists() => return Ok(None),
            Err(_) => break,
        };
        let l = f.metadata()?.len();
        // Files from before offsets were recorded cannot be placed.
        let Some(s) = first.checked_sub(l) else {
            break;
        };
        first = s;
        segments.insert(0, (s, f, l, path));
    }
    // Every file opened is still under its name (newest first, the order
    // opposite to the writer's renames), and the current file still starts
    // where it did: what was opened is one rotation's set of files.
    for (_, f, _, path) in segments.iter().rev() {
        use std::os::unix::fs::MetadataExt;
        let (opened, named) = (f.metadata()?, fs::metadata(path));
        if !named.is_ok_and(|m| m.ino() == opened.ino() && m.dev() == opened.dev()) {
            return Ok(None);
        }
    }
    if read_start(current)? != start {
        return Ok(None);
    }
    let end = start + len;
    let from = if offset < first || offset > end {
        first
    } else {
        offset
    };
    let mut data = Vec::new();
    // The last segment whose first offset is at or before `from`.
    if let Some((s, f, _, _)) = segments.iter_mut().rev().find(|(s, _, _, _)| *s <= from) {
        f.seek(SeekFrom::Start(from - *s))?;
        f.take(max).read_to_end(&mut data)?;
    }
    let next = from + data.len() as u64;
    Ok(Some(Piece {
        data,
        next,
        size: end.max(next),
    }))
}

/// `shoal __log --dir DIR [--max-bytes N] [--keep K]`: the log shipper of a
/// process task. Its descriptors 0 and 1 are the read ends of the task's
/// stdout and stderr pipes (both are reads: std hands any descriptor of
/// these two slots over safely, where adopting a descriptor 3 would need
/// `unsafe`). Copies them into `DIR/stdout.log` and `DIR/stderr.log`,
/// rotating both (see [`LogFile`]); exits once both pipes are closed by
/// every process that held them. Run by the agent, not by people.
///
/// A write that fails (a full disk) drops that piece and keeps draining the
/// pipe, so that the task is never blocked or killed by its logging.
pub fn ship(args: &[String]) -> std::process::ExitCode {
    let mut dir: Option<PathBuf> = None;
    let mut max = LOG_MAX_BYTES;
    let mut keep = LOG_KEEP;
    let mut i = 0;
    while i + 1 < args.len() {
        match args[i].as_str() {
            "--dir" => dir = Some(PathBuf::from(&args[i + 1])),
            "--max-bytes" => match args[i + 1].parse() {
                Ok(n) => max = n,
                Err(_) => return usage(&format!("--max-bytes {:?} is not a number", args[i + 1])),
            },
            "--keep" => match args[i + 1].parse() {
                Ok(n) => keep = n,
                Err(_) => return usage(&format!("--keep {:?} is not a number", args[i + 1])),
            },
            other => return usage(&format!("unknown argument {other:?}")),
        }
        i += 2;
    }
    if i != args.len() {
        return usage(&format!("{:?} needs a value", args[i]));
    }
    let Some(dir) = dir else {
        return usage("--dir is required");
    };
    let (stdout, stderr) = match (
        io::stdin().as_fd().try_clone_to_owned(),
        io::stdout().as_fd().try_clone_to_owned(),
    ) {
        (Ok(o), Ok(e)) => (File::from(o), File::from(e)),
        (Err(e), _) | (_, Err(e)) => {
            return usage(&format!(
                "cannot take descriptors 0 and 1 (the task's pipes): {e}"
            ));
        }
    };
    let threads = [(stdout, "stdout.log"), (stderr, "stderr.log")].map(|(input, name)| {
        let path = dir.join(name);
        std::thread::spawn(move || copy_rotating(input, &path, max, keep))
    });
    for t in threads {
        let _ = t.join();
    }
    std::process::ExitCode::SUCCESS
}

/// Copies `input` into the stream at `path` until end of file.
pub fn copy_rotating(mut input: impl Read, path: &Path, max: u64, keep: u32) {
    let mut log = LogFile::open(path, max, keep).ok();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if log.is_none() {
            log = LogFile::open(path, max, keep).ok();
        }
        if let Some(l) = &mut log
            && l.write_all(&buf[..n]).is_err()
        {
            // Reopened (and its length read again) at the next piece.
            log = None;
        }
    }
}

fn usage(msg: &str) -> std::process::ExitCode {
    #[allow(clippy::print_stderr)]
    {
        eprintln!("shoal __log: {msg} (usage: shoal __log --dir DIR [--max-bytes N] [--keep K])");
    }
    std::process::ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the whole stream from `offset` on, as `shoal logs` does.
    fn read_all(current: &Path, mut offset: u64) -> (Vec<u8>, u64) {
        let mut out = Vec::new();
        loop {
            let p = read(current, offset, 1000).unwrap();
            out.extend_from_slice(&p.data);
            offset = p.next;
            if p.next >= p.size {
                return (out, offset);
            }
        }
    }

    #[test]
    fn rotation_renames_at_line_ends_and_offsets_run_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout.log");
        let mut log = LogFile::open(&path, 10, 2).unwrap();
        log.write_all(b"aaaa\nbbbb\ncc").unwrap();
        // Rotated at the last line end that reached the limit.
        assert_eq!(fs::read(rotated(&path, 1)).unwrap(), b"aaaa\nbbbb\n");
        assert_eq!(fs::read(&path).unwrap(), b"cc");
        assert_eq!(read_start(&path).unwrap(), 10);
        log.write_all(b"c\ndddddddddddd\n").unwrap();
        log.write_all(b"e\n").unwrap();
        assert_eq!(fs::read(rotated(&path, 2)).unwrap(), b"aaaa\nbbbb\n");
        assert_eq!(fs::read(rotated(&path, 1)).unwrap(), b"ccc\ndddddddddddd\n");
        assert_eq!(fs::read(&path).unwrap(), b"e\n");
        assert_eq!(read_start(&path).unwrap(), 27);
        assert_eq!(log.end(), 29);
        // Every byte, in order, through the offsets.
        let (all, end) = read_all(&path, 0);
        assert_eq!(all, b"aaaa\nbbbb\nccc\ndddddddddddd\ne\n");
        assert_eq!(end, 29);
        // From the middle of a rotated file.
        assert_eq!(read_all(&path, 14).0, b"dddddddddddd\ne\n");
        // A third rotation drops the oldest file: reading from 0 starts at
        // the oldest byte kept.
        log.write_all(b"ffffffffff\n").unwrap();
        assert!(log.is_empty());
        assert!(!rotated(&path, 3).exists());
        let (all, _) = read_all(&path, 0);
        assert_eq!(all, b"ccc\ndddddddddddd\ne\nffffffffff\n");
        // An offset past the end (a log that was removed) starts over from
        // the oldest byte kept.
        let p = read(&path, 1000, 2).unwrap();
        assert_eq!((p.data.as_slice(), p.next, p.size), (&b"cc"[..], 12, 40));
        // A new writer (the task restarted) goes on from the same offset.
        drop(log);
        let mut again = LogFile::open(&path, 10, 2).unwrap();
        let before = again.end();
        again.write_all(b"g\n").unwrap();
        assert_eq!(again.end(), before + 2);
        assert_eq!(read_all(&path, before).0, b"g\n");
    }

    #[test]
    fn a_log_written_before_offsets_were_recorded_reads_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stderr.log");
        fs::write(rotated(&path, 1), b"old\n").unwrap();
        fs::write(&path, b"new\n").unwrap();
        // No start file: the current file starts at 0; the older one cannot
        // be placed and is not read.
        assert_eq!(read_all(&path, 0).0, b"new\n");
        assert!(read(&dir.path().join("none.log"), 0, 10).is_err());
    }

    /// A writer going through many rotations while a reader follows it by
    /// offset: the reader gets every line, once, in order.
    #[test]
    fn a_follower_misses_no_line_across_many_rotations() {
        const LINES: u32 = 100_000;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout.log");
        let (rx, mut tx) = io::pipe().unwrap();
        let writer_path = path.clone();
        // 2 KiB files, enough kept that the follower is never outrun.
        let shipper = std::thread::spawn(move || copy_rotating(rx, &writer_path, 2048, 10_000));
        let producer = std::thread::spawn(move || {
            for i in 0..LINES {
                writeln!(tx, "line {i}").unwrap();
            }
        });
        let mut got = Vec::new();
        let mut offset = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while got.iter().filter(|b| **b == b'\n').count() < LINES as usize {
            assert!(
                std::time::Instant::now() < deadline,
                "the follower fell behind"
            );
            match read(&path, offset, 4096) {
                Ok(p) => {
                    got.extend_from_slice(&p.data);
                    offset = p.next;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => panic!("{e}"),
            }
        }
        producer.join().unwrap();
        shipper.join().unwrap();
        let text = String::from_utf8(got).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), LINES as usize);
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(*l, format!("line {i}"));
        }
        let rotations = (1..).take_while(|n| rotated(&path, *n).exists()).count();
        // At least one per 64 KiB the shipper reads at once.
        assert!(rotations >= 10, "only {rotations} rotations");
        // Every file but the newest ends at a line end.
        for n in 1..=rotations as u32 {
            assert!(fs::read(rotated(&path, n)).unwrap().ends_with(b"\n"));
        }
    }
}
