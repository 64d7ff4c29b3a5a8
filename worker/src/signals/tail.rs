//! Incremental reading of a JSONL file that an agent appends to.
//!
//! Only the bytes past the saved offset are read; an unterminated last line
//! (an agent mid-write, or crashed mid-write) waits for its newline. The file
//! may not exist yet (agents create their transcript on the first prompt),
//! may be truncated, or replaced by another file (another inode): both start
//! over from the beginning.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A file followed from a byte offset.
#[derive(Debug)]
pub(crate) struct Tail {
    path: PathBuf,
    /// `(dev, inode)` of the file the offset belongs to.
    identity: Option<(u64, u64)>,
    offset: u64,
    /// Bytes after the last newline, kept for the next poll.
    partial: Vec<u8>,
    /// Newline-terminated lines consumed from the current file.
    lines: u64,
    /// Bytes read from disk over this tail's life (all files).
    bytes_read: u64,
}

impl Tail {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            identity: None,
            offset: 0,
            partial: Vec::new(),
            lines: 0,
            bytes_read: 0,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes read from disk so far: what a reader costs per line appended.
    pub(crate) fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Newline-terminated lines consumed from the current file.
    pub(crate) fn lines(&self) -> u64 {
        self.lines
    }

    /// The lines completed since the last poll, each with its 1-based line
    /// number in the file, without the newline. Empty lines are counted but
    /// not returned. A missing file gives no lines.
    ///
    /// # Errors
    /// The file exists but cannot be opened or read.
    pub(crate) fn poll(&mut self) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Gone (rotated away, or not created yet): whatever appears
                // next at this path is a new file.
                self.restart(None);
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        let identity = Some((meta.dev(), meta.ino()));
        if identity != self.identity || meta.len() < self.offset {
            self.restart(identity);
        }
        if meta.len() == self.offset {
            return Ok(Vec::new());
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let start = self.partial.len();
        let read = file.read_to_end(&mut self.partial)?;
        self.offset += read as u64;
        self.bytes_read += read as u64;
        Ok(self.complete_lines(start))
    }

    fn restart(&mut self, identity: Option<(u64, u64)>) {
        self.identity = identity;
        self.offset = 0;
        self.partial.clear();
        self.lines = 0;
    }

    /// Takes the newline-terminated lines out of `partial`; `new_from` is
    /// where this poll's bytes begin (no newline lies before it).
    fn complete_lines(&mut self, new_from: usize) -> Vec<(u64, Vec<u8>)> {
        let Some(last) = self.partial[new_from..].iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let rest = self.partial.split_off(new_from + last + 1);
        let done = std::mem::replace(&mut self.partial, rest);
        let mut out = Vec::new();
        for line in done[..done.len() - 1].split(|&b| b == b'\n') {
            self.lines += 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !line.iter().all(u8::is_ascii_whitespace) {
                out.push((self.lines, line.to_vec()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{self, OpenOptions};
    use std::io::Write;

    use super::*;

    fn append(path: &Path, bytes: &str) {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        file.write_all(bytes.as_bytes()).unwrap();
    }

    fn text(lines: Vec<(u64, Vec<u8>)>) -> Vec<(u64, String)> {
        lines
            .into_iter()
            .map(|(n, l)| (n, String::from_utf8(l).unwrap()))
            .collect()
    }

    #[test]
    fn a_partial_line_is_read_once_when_completed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut tail = Tail::new(path.clone());
        append(&path, "{\"a\":1}\n{\"b\":");
        assert_eq!(text(tail.poll().unwrap()), [(1, "{\"a\":1}".into())]);
        assert_eq!(text(tail.poll().unwrap()), []);
        append(&path, "2");
        assert_eq!(text(tail.poll().unwrap()), []);
        append(&path, "}\n\n{\"c\":3}\r\n");
        assert_eq!(
            text(tail.poll().unwrap()),
            [(2, "{\"b\":2}".into()), (4, "{\"c\":3}".into())]
        );
        assert_eq!(text(tail.poll().unwrap()), []);
    }

    #[test]
    fn earlier_bytes_are_never_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut tail = Tail::new(path.clone());
        let mut total = 0;
        for i in 1..=50 {
            let line = format!("{{\"n\":{i}}}\n");
            total += line.len() as u64;
            append(&path, &line);
            assert_eq!(text(tail.poll().unwrap()), [(i, line.trim_end().into())]);
            assert_eq!(tail.bytes_read(), total);
        }
        tail.poll().unwrap();
        assert_eq!(tail.bytes_read(), total);
    }

    #[test]
    fn a_truncated_file_is_read_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut tail = Tail::new(path.clone());
        append(&path, "{\"old\":1}\n{\"old\":2}\n{\"half");
        assert_eq!(tail.poll().unwrap().len(), 2);
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&path, "{\"new\":1}\n");
        assert_eq!(text(tail.poll().unwrap()), [(1, "{\"new\":1}".into())]);
    }

    #[test]
    fn a_replaced_file_is_read_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut tail = Tail::new(path.clone());
        append(&path, "{\"old\":1}\n{\"old\":2}\n");
        assert_eq!(tail.poll().unwrap().len(), 2);
        // Rotation: the old file moves away, a new one (longer than the
        // offset, so only the inode tells) takes its name.
        fs::rename(&path, dir.path().join("t.jsonl.1")).unwrap();
        let fresh = dir.path().join("fresh");
        append(&fresh, "{\"new\":1}\n{\"new\":2}\n{\"new\":3}\n");
        fs::rename(&fresh, &path).unwrap();
        assert_eq!(
            text(tail.poll().unwrap()),
            [
                (1, "{\"new\":1}".into()),
                (2, "{\"new\":2}".into()),
                (3, "{\"new\":3}".into())
            ]
        );
    }

    #[test]
    fn a_missing_file_is_not_an_error_and_is_read_once_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("later").join("t.jsonl");
        let mut tail = Tail::new(path.clone());
        assert_eq!(text(tail.poll().unwrap()), []);
        fs::create_dir(dir.path().join("later")).unwrap();
        assert_eq!(text(tail.poll().unwrap()), []);
        append(&path, "{\"a\":1}\n");
        assert_eq!(text(tail.poll().unwrap()), [(1, "{\"a\":1}".into())]);
        fs::remove_file(&path).unwrap();
        assert_eq!(text(tail.poll().unwrap()), []);
        append(&path, "{\"b\":1}\n");
        assert_eq!(text(tail.poll().unwrap()), [(1, "{\"b\":1}".into())]);
    }
}
