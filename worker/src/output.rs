//! A session's terminal output: the log file that tmux appends to, read
//! incrementally into a bounded ring buffer and fanned out to viewers
//! through bounded channels. A viewer that falls behind is dropped; it
//! never slows the agent or other viewers.
//!
//! The log is written by [`write_rotating`] (tmux pipes the pane into it):
//! past [`LOG_ROTATE_BYTES`] the file is renamed to `terminal.log.1`,
//! replacing the one before, and a new one is started, so a session keeps
//! at most two files' worth. The reader notices the rename, finishes the
//! old file and goes on with the new one.

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use tokio::sync::mpsc;

/// Bytes of recent output kept in memory per session.
pub const RING_BYTES: usize = 256 * 1024;
/// Chunks a viewer may have unread before it is dropped.
pub const VIEWER_QUEUE: usize = 256;
/// Most bytes read from a log file in one poll.
const READ_LIMIT: u64 = 4 * 1024 * 1024;
/// More output than this at once rebuilds the screen from its end only.
const SCREEN_FLOOD: usize = 64 * 1024;
/// A terminal log this large is rotated.
pub const LOG_ROTATE_BYTES: u64 = 64 * 1024 * 1024;
/// The arguments of the `ao` subcommand that runs [`write_rotating`]:
/// tmux runs it for every session, so the log outlives the worker.
pub const LOG_WRITER_ARGS: &str = "worker log-writer";

pub struct Output {
    ring: VecDeque<u8>,
    viewers: Vec<mpsc::Sender<Vec<u8>>>,
    /// How far into the log file we have read.
    offset: u64,
    /// The second of the last entry of the time index.
    indexed_at: u64,
    /// The inode of the file being read: another one at the log's path
    /// means the writer rotated it.
    inode: Option<u64>,
    /// The terminal's screen, rebuilt from the same bytes, so that looking
    /// at it starts no process; `None` while parked (a quiet session gives
    /// its memory back, and gets it rebuilt from the ring's end at its next
    /// output).
    screen: Option<crate::screen::Screen>,
    /// The generation of the screen last parked: a rebuilt one goes on
    /// from it, so no change is missed.
    parked_generation: u64,
}

/// The size tmux gives a session's window when it starts it.
pub const PANE_COLS: u16 = 200;
pub const PANE_ROWS: u16 = 50;

/// The previous log, after a rotation (`terminal.log.1`).
pub fn rotated(log: &Path) -> std::path::PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".1");
    name.into()
}

fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Appends everything read from `input` to `log`, rotating it past `max`
/// bytes. Returns when `input` ends (the pane closed).
///
/// # Errors
/// I/O errors on the log files.
pub fn write_rotating(log: &Path, max: u64, mut input: impl Read) -> std::io::Result<()> {
    use std::io::Write;
    let open = || {
        ao_proto::home::private_file()
            .create(true)
            .append(true)
            .open(log)
    };
    let mut file = open()?;
    let mut size = file.metadata()?.len();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if size > 0 && size + n as u64 > max {
            std::fs::rename(log, rotated(log))?;
            file = open()?;
            size = 0;
        }
        file.write_all(&buf[..n])?;
        size += n as u64;
    }
}

/// Where in a log the reader was: the file (its inode) and the offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct LogPosition {
    pub inode: u64,
    pub offset: u64,
}

/// Whether `needle` shows in the log after `from`, in the file that was
/// current then (rotated since, or not) and in any newer one.
///
/// # Errors
/// I/O errors reading the logs.
pub fn shown_since(log: &Path, from: LogPosition, needle: &str) -> std::io::Result<bool> {
    let old = rotated(log);
    let mut files = Vec::new();
    if inode(log) == Some(from.inode) {
        files.push((log.to_path_buf(), from.offset));
    } else {
        if inode(&old) == Some(from.inode) {
            files.push((old, from.offset));
        }
        // Written after the rotation: the new file, from its start.
        files.push((log.to_path_buf(), 0));
    }
    for (path, offset) in files {
        if file_contains(&path, offset, needle.as_bytes())? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Searches a file from `offset` in chunks, keeping the end of each chunk
/// so a match across two chunks is found.
fn file_contains(path: &Path, offset: u64, needle: &[u8]) -> std::io::Result<bool> {
    if needle.is_empty() {
        return Ok(false);
    }
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(offset))?;
    let mut window: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            return Ok(false);
        }
        window.extend_from_slice(&chunk[..n]);
        if window.windows(needle.len()).any(|w| w == needle) {
            return Ok(true);
        }
        let keep = needle.len() - 1;
        window.drain(..window.len().saturating_sub(keep));
    }
}

/// A stretch of a log file: what `ao logs` streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub path: std::path::PathBuf,
    pub from: u64,
    pub to: u64,
}

/// The history of `log` up to offset `upto` of the current file: the whole
/// of both files, or from the output of `since` (unix seconds) on.
pub fn history(log: &Path, since: Option<u64>, upto: u64) -> Vec<Segment> {
    let old = rotated(log);
    let from = since.map_or(0, |t| offset_since(log, t));
    let mut out = Vec::new();
    if from == 0 {
        if let Ok(meta) = std::fs::metadata(&old) {
            out.push(Segment {
                from: since.map_or(0, |t| offset_since(&old, t)),
                to: meta.len(),
                path: old,
            });
        }
    }
    out.push(Segment {
        path: log.to_path_buf(),
        from,
        to: upto,
    });
    out
}

/// The time index beside a log (`terminal.log.idx`): a line
/// `<unix seconds> <offset>` for each second in which output arrived, so that
/// `ao logs --since` knows where to start. Output written while no worker
/// ran is dated when the worker reads it.
fn index_path(log: &Path) -> std::path::PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".idx");
    name.into()
}

/// Asks the allocator to return the memory freed by parked screens to the
/// system, at most every [`TRIM_EVERY_SECS`]: glibc otherwise keeps the
/// freed rows of a screen in its heap.
fn give_back_memory() {
    static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    use std::sync::atomic::Ordering::Relaxed;
    let now = unix_now();
    let last = LAST.load(Relaxed);
    if now.saturating_sub(last) < TRIM_EVERY_SECS
        || LAST.compare_exchange(last, now, Relaxed, Relaxed).is_err()
    {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer; it only releases free memory.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

const TRIM_EVERY_SECS: u64 = 1;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Where in `log` the output since `since` (unix seconds) starts; the end
/// of the log when nothing came since. Output before the first dated entry
/// has no date: it is included when that entry is already after `since`.
pub fn offset_since(log: &Path, since: u64) -> u64 {
    let index = std::fs::read_to_string(index_path(log)).unwrap_or_default();
    let mut entries = index.lines().filter_map(|l| {
        let (ts, off) = l.split_once(' ')?;
        Some((ts.parse::<u64>().ok()?, off.parse::<u64>().ok()?))
    });
    match entries.next() {
        Some((first, _)) if first >= since => 0,
        Some(_) => entries
            .find(|(ts, _)| *ts >= since)
            .map(|(_, off)| off)
            .unwrap_or_else(|| std::fs::metadata(log).map_or(0, |m| m.len())),
        None => 0,
    }
}

impl Output {
    /// Starts reading `log` near its end, keeping its last bytes as history.
    pub fn resume(log: &Path) -> Self {
        let len = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
        let mut out = Self {
            ring: VecDeque::with_capacity(4096),
            viewers: Vec::new(),
            offset: len.saturating_sub(RING_BYTES as u64),
            indexed_at: u64::MAX,
            inode: inode(log),
            screen: None,
            parked_generation: 0,
        };
        // Fill the ring with what is there; nobody is subscribed yet.
        out.poll(log);
        out.indexed_at = 0;
        out
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// How far this reader got, to search what came after later on.
    pub fn position(&self) -> LogPosition {
        LogPosition {
            inode: self.inode.unwrap_or(0),
            offset: self.offset,
        }
    }

    /// Reads what the log gained since the last poll; returns its length.
    pub fn poll(&mut self, log: &Path) -> usize {
        self.poll_at(log, unix_now())
    }

    /// [`Self::poll`], dating new output at `now` (unix seconds).
    fn poll_at(&mut self, log: &Path, now: u64) -> usize {
        let mut read = 0;
        let current = inode(log);
        if self.inode.is_some() && current != self.inode {
            // Rotated: what the old file got after the last poll is read
            // first, its time index goes with it, and the new file starts
            // at 0.
            let old = rotated(log);
            if inode(&old) == self.inode {
                let _ = std::fs::rename(index_path(log), index_path(&old));
                loop {
                    let n = self.read_file(&old, now);
                    read += n;
                    if n == 0 {
                        break;
                    }
                }
            }
            self.offset = 0;
            self.indexed_at = 0;
        }
        self.inode = current;
        read + self.read_file(log, now)
    }

    /// Reads `file` from the offset on, dating it in its time index.
    fn read_file(&mut self, log: &Path, now: u64) -> usize {
        let Ok(mut file) = std::fs::File::open(log) else {
            return 0;
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            // Truncated by hand: start over.
            self.offset = 0;
        }
        if len == self.offset || file.seek(SeekFrom::Start(self.offset)).is_err() {
            return 0;
        }
        let mut buf = Vec::new();
        let n = file
            .take((len - self.offset).min(READ_LIMIT))
            .read_to_end(&mut buf)
            .unwrap_or(0);
        buf.truncate(n);
        // The resumed history is not new output: it is not dated.
        if self.indexed_at != u64::MAX && now != self.indexed_at {
            use std::io::Write;
            let line = format!("{now} {}\n", self.offset);
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(index_path(log))
                .and_then(|mut f| f.write_all(line.as_bytes()));
            if let Err(e) = written {
                tracing::warn!(log = %log.display(), "cannot extend the time index: {e}");
            }
            self.indexed_at = now;
        }
        self.offset += n as u64;
        self.push(&buf);
        n
    }

    fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let keep = data.len().min(RING_BYTES);
        let overflow = (self.ring.len() + keep).saturating_sub(RING_BYTES);
        self.ring.drain(..overflow);
        self.ring.extend(&data[data.len() - keep..]);
        match &mut self.screen {
            // A flood is judged by its end: the screen then shows the last
            // of it, and parsing all of it would hold the worker up.
            Some(screen) if data.len() > SCREEN_FLOOD => {
                screen.clear();
                screen.feed(&data[data.len() - SCREEN_FLOOD..]);
            }
            Some(screen) => screen.feed(data),
            None => {
                let mut screen =
                    crate::screen::Screen::continuing(PANE_COLS, PANE_ROWS, self.parked_generation);
                let from = self.ring.len().saturating_sub(SCREEN_FLOOD);
                let tail: Vec<u8> = self.ring.range(from..).copied().collect();
                screen.feed(&tail);
                self.screen = Some(screen);
            }
        }
        self.viewers.retain(|v| match v.try_send(data.to_vec()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::debug!("dropping a viewer that fell behind");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    /// The terminal's screen, unless parked.
    pub(crate) fn screen(&self) -> Option<&crate::screen::Screen> {
        self.screen.as_ref()
    }

    /// Gives the screen model's memory back until the next output.
    pub(crate) fn park_screen(&mut self) {
        if let Some(screen) = self.screen.take() {
            self.parked_generation = screen.generation();
            drop(screen);
            give_back_memory();
        }
    }

    /// The last `lines` lines kept in memory (all that is kept for 0).
    pub fn tail(&self, lines: usize) -> Vec<u8> {
        let (a, b) = self.ring.as_slices();
        let all: Vec<u8> = [a, b].concat();
        if lines == 0 {
            return all;
        }
        let mut seen = 0;
        // A trailing newline ends the last line rather than starting a new one.
        let end = if all.last() == Some(&b'\n') {
            all.len() - 1
        } else {
            all.len()
        };
        for i in (0..end).rev() {
            if all[i] == b'\n' {
                seen += 1;
                if seen == lines {
                    return all[i + 1..].to_vec();
                }
            }
        }
        all
    }

    /// New output from now on, until the session ends or the viewer lags.
    pub fn subscribe(&mut self) -> mpsc::Receiver<Vec<u8>> {
        let (tx, rx) = mpsc::channel(VIEWER_QUEUE);
        self.viewers.push(tx);
        rx
    }

    /// Ends every viewer's stream (the session is over).
    pub fn close_viewers(&mut self) {
        self.viewers.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_screen_follows_the_output_and_a_flood_leaves_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("terminal.log");
        std::fs::write(&log, "hello\r\n> ").unwrap();
        let mut out = Output::resume(&log);
        assert_eq!(
            out.screen().unwrap().lines()[..2],
            ["hello".to_string(), "> ".to_string()]
        );
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        for i in 0..20_000 {
            write!(f, "line {i}\r\n").unwrap();
        }
        write!(f, "the end").unwrap();
        assert!(out.poll(&log) > SCREEN_FLOOD);
        let lines = out.screen().unwrap().lines();
        let last = lines.iter().rev().find(|l| !l.is_empty()).unwrap();
        assert_eq!(last, "the end");
        assert!(lines.contains(&"line 19999".to_string()), "{lines:?}");
    }

    #[test]
    fn a_parked_screen_is_rebuilt_from_the_ring_and_counts_on() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("terminal.log");
        std::fs::write(&log, "Do you want to proceed?\r\n").unwrap();
        let mut out = Output::resume(&log);
        let seen = out.screen().unwrap().generation();
        out.park_screen();
        assert!(out.screen().is_none());
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        write!(f, "> ").unwrap();
        out.poll(&log);
        let screen = out.screen().unwrap();
        assert!(screen.changed_since(seen) && screen.generation() > seen);
        assert_eq!(
            screen.lines()[..2],
            ["Do you want to proceed?".to_string(), "> ".to_string()]
        );
    }

    #[test]
    fn new_output_is_dated_for_since() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("s.log");
        std::fs::write(&log, b"old\n").unwrap();
        let mut out = Output::resume(&log);
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(b"new\n").unwrap();
        out.poll_at(&log, 1000);
        f.write_all(b"newer\n").unwrap();
        out.poll_at(&log, 1010);
        // Undated output before the first entry counts as older than it.
        assert_eq!(offset_since(&log, 1000), 0);
        assert_eq!(offset_since(&log, 1005), 8);
        assert_eq!(offset_since(&log, 1010), 8);
        // Nothing came since: the end of the log.
        assert_eq!(offset_since(&log, 2000), 14);
    }

    #[test]
    fn a_rotating_log_is_read_whole_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("terminal.log");
        let mut out = Output::resume(&log);
        let mut seen = out.subscribe();
        let mut sent = Vec::new();
        let mut got = Vec::new();
        // Each burst is written by a writer of its own (as after a worker
        // restart), rotating past 100 bytes; the reader polls in between.
        for burst in 0..12u8 {
            let data: Vec<u8> = (0..30).map(|i| b'a' + (burst + i) % 26).collect();
            write_rotating(&log, 100, data.as_slice()).unwrap();
            sent.extend_from_slice(&data);
            if burst % 2 == 1 {
                out.poll(&log);
            }
        }
        out.poll(&log);
        while let Ok(chunk) = seen.try_recv() {
            got.extend(chunk);
        }
        // Polled every other burst, after a rotation more often than not:
        // the reader still saw every byte once, in order. (A reader that
        // sleeps through two rotations misses the file between them; at 64
        // MiB a file, that takes output faster than tmux can draw.)
        assert_eq!(got, sent);
        let current = std::fs::read(&log).unwrap();
        let previous = std::fs::read(rotated(&log)).unwrap();
        assert!(current.len() <= 100 && previous.len() <= 100);
        assert!(sent.ends_with(&[previous.clone(), current.clone()].concat()));
        // The history is both files, the older first.
        let segments = history(&log, None, current.len() as u64);
        assert_eq!(
            segments,
            [
                Segment {
                    path: rotated(&log),
                    from: 0,
                    to: previous.len() as u64
                },
                Segment {
                    path: log.clone(),
                    from: 0,
                    to: current.len() as u64
                }
            ]
        );
    }

    #[test]
    fn tails_follows_and_drops_slow_viewers() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("s.log");
        std::fs::write(&log, b"one\ntwo\nthree\n").unwrap();
        let mut out = Output::resume(&log);
        assert_eq!(out.tail(2), b"two\nthree\n");
        assert_eq!(out.tail(0), b"one\ntwo\nthree\n");

        let mut fast = out.subscribe();
        let slow = out.subscribe();
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        for i in 0..(VIEWER_QUEUE + 5) {
            writeln!(f, "line {i}").unwrap();
            assert!(out.poll(&log) > 0);
            while fast.try_recv().is_ok() {}
        }
        // The slow one never read and was dropped; the fast one still gets data.
        assert_eq!(out.viewers.len(), 1);
        drop(slow);
        writeln!(f, "last").unwrap();
        out.poll(&log);
        assert_eq!(fast.try_recv().unwrap(), b"last\n");
        assert!(out.ring.len() <= RING_BYTES);
    }
}
