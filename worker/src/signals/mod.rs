//! What an agent says about its own activity, read from its own records:
//! transcripts tailed incrementally, hook payloads, trust records seeded
//! before launch. Each reader turns a record into an [`Observation`]; the
//! fusion of observations into an [`Activity`] belongs to the session.
//!
//! What the agents really write is described in `AGENTS.md` §2 (Claude
//! Code), §3 (Codex) and §4 (Gemini CLI).
//!
//! Modules:
//! - [`tail`]: incremental reading of a JSONL file that grows.
//! - [`hook`]: hook payloads (one shape for Claude Code, Codex, Gemini) and the
//!   settings that install the hooks.
//! - [`claude`]: Claude Code's transcript path, lines, hooks and trust record.
//! - [`codex`]: Codex's rollout discovery, lines and trust arguments.
//! - [`gemini`]: Gemini CLI's chat file, the worktree settings that hold
//!   its hooks, and its trust record.
//! - [`watch`]: file-change notification for transcript directories.

pub(crate) mod claude;
pub(crate) mod codex;
pub(crate) mod gemini;
pub(crate) mod hook;
pub(crate) mod tail;
pub(crate) mod watch;

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use crate::link_types::{Activity, Source};

/// One observation from an agent's own records.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The record's own timestamp if it has one, else when it was read.
    pub at: SystemTime,
    pub kind: Kind,
    pub source: Source,
    /// One short line, at most [`DETAIL_MAX`] characters.
    pub detail: String,
}

/// What one record means for the agent's turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A user prompt: a turn opens.
    PromptSubmitted,
    /// A sign of life inside an open turn (tool use, tool result, progress,
    /// API retry…).
    Working,
    /// A permission, question or trust dialog is pending.
    DialogOpened,
    /// A pending dialog was answered.
    DialogClosed,
    /// The turn ended normally or was interrupted.
    TurnEnded,
    /// The turn ended on an error (rate limit, authentication…).
    TurnFailed,
    /// The agent's session began; it names its id and transcript when it can.
    SessionStarted {
        agent_session_id: Option<String>,
        transcript: Option<PathBuf>,
    },
    /// Titles, snapshots, token counts: never changes state.
    Metadata,
}

/// The longest [`Observation::detail`], in characters.
pub const DETAIL_MAX: usize = 120;

impl Observation {
    /// An observation whose detail is cut to one line of [`DETAIL_MAX`]
    /// characters; `at` is now when the record carries no time.
    pub(crate) fn new(at: Option<SystemTime>, kind: Kind, source: Source, detail: &str) -> Self {
        Self {
            at: at.unwrap_or_else(SystemTime::now),
            kind,
            source,
            detail: short(detail, DETAIL_MAX),
        }
    }
}

/// The first line of `text`, whitespace collapsed, cut to `max` characters
/// (an ellipsis marks the cut).
pub(crate) fn short(text: &str, max: usize) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= max {
        return line;
    }
    let mut cut: String = line.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// What line `line_no` of a transcript says, dated by its own timestamp.
pub(crate) fn transcript_line(
    record: &serde_json::Value,
    line_no: u64,
    kind: Kind,
    detail: &str,
) -> Observation {
    Observation::new(
        record_time(record),
        kind,
        Source::Transcript,
        &format!("{detail} at line {line_no}"),
    )
}

/// An RFC 3339 `timestamp` field of a record, as a time.
pub(crate) fn record_time(record: &serde_json::Value) -> Option<SystemTime> {
    let text = record.get("timestamp")?.as_str()?;
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(SystemTime::from)
}

/// A transcript file read as observations: a [`tail::Tail`] and the
/// agent's line parser.
pub(crate) struct Transcript {
    tail: tail::Tail,
    parse: fn(u64, &[u8]) -> Option<Observation>,
    malformed: u64,
}

impl Transcript {
    /// `parse` returns `None` only for a line that is not a JSON object.
    pub(crate) fn new(tail: tail::Tail, parse: fn(u64, &[u8]) -> Option<Observation>) -> Self {
        Self {
            tail,
            parse,
            malformed: 0,
        }
    }

    /// The observations of the lines completed since the last poll,
    /// metadata included, in file order.
    ///
    /// # Errors
    /// The file exists but cannot be read.
    pub(crate) fn poll(&mut self) -> io::Result<Vec<Observation>> {
        let lines = self.tail.poll()?;
        let mut out = Vec::with_capacity(lines.len());
        for (line_no, line) in lines {
            match (self.parse)(line_no, &line) {
                Some(observation) => out.push(observation),
                None => {
                    self.malformed += 1;
                    tracing::debug!(
                        "{}: line {line_no} is not a JSON object",
                        self.tail.path().display()
                    );
                }
            }
        }
        Ok(out)
    }

    /// Lines that were not JSON objects (a crash mid-write leaves none: an
    /// unterminated line waits for its end).
    #[cfg(test)]
    pub(crate) fn malformed(&self) -> u64 {
        self.malformed
    }

    pub(crate) fn tail(&self) -> &tail::Tail {
        &self.tail
    }
}

/// Writes `path` through a temporary file beside it and a rename, keeping
/// the old file's permissions (a new one is private: it holds credentials).
pub(crate) fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mode = fs::metadata(path).map_or(0o600, |m| m.permissions().mode());
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = dir.join(format!(".{name}.ao-{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

/// What reading cost, for the benchmark (`ao-bench --truth`) and anyone
/// curious: said once, when the worker stops reading the file (the session
/// ended or was stopped), at debug level.
impl Drop for Transcript {
    fn drop(&mut self) {
        tracing::debug!(
            file = %self.tail.path().display(),
            lines = self.tail.lines(),
            bytes_read = self.tail.bytes_read(),
            "stopped reading a transcript"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_one_short_line() {
        assert_eq!(
            short("  Add a --json\tflag \n to status", 120),
            "Add a --json flag"
        );
        assert_eq!(short("\n\nsecond line first", 120), "second line first");
        let long = "é".repeat(300);
        let cut = Observation::new(None, Kind::Working, Source::Hook, &long).detail;
        assert_eq!(cut.chars().count(), DETAIL_MAX);
        assert!(cut.ends_with('…'));
    }
}
