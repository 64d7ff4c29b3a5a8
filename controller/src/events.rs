//! The event log: the `$AO_HOME/events.jsonl` file, and the feed that
//! serves `ao events [-f]` from the store.
//!
//! The file: one JSON object per line, appended, never rewritten.
//! The store holds every event first (in the same transaction as the change
//! it records); this file is a projection of it. On open, a line torn by a
//! crash is cut off and whatever the store holds beyond the file's last id is
//! appended, so the file never has a torn or lost line. The store keeps
//! only the newest [`EVENTS_KEPT`] events.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::keys;
use crate::model::EventRecord;
use crate::store::follow::{follow, Followed};
use crate::store::{decode, Store, StoreError, WatchEvent};

/// The newest events the store keeps (for `ao events` and followers);
/// older ones are deleted as new ones are written. `events.jsonl` keeps
/// every event.
pub const EVENTS_KEPT: u64 = 10_000;

/// Which events a reader wants.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only events with a larger id.
    pub after_id: u64,
    /// A type (`session.killed`) or a family (`session`); empty for all.
    pub kind: String,
    pub session_id: String,
    pub project_id: String,
    /// Only the last N matching events of the history (0: all).
    pub tail: usize,
    /// Keep delivering new events.
    pub follow: bool,
}

impl EventFilter {
    pub fn matches(&self, e: &EventRecord) -> bool {
        let family = e.kind.split('.').next().unwrap_or_default();
        e.id > self.after_id
            && (self.kind.is_empty() || e.kind == self.kind || family == self.kind)
            && (self.session_id.is_empty()
                || e.session_id.as_deref() == Some(self.session_id.as_str()))
            && (self.project_id.is_empty()
                || e.project_id.as_deref() == Some(self.project_id.as_str()))
    }
}

/// The history that matches `filter`, then (with `follow`) every new
/// event, from the store: gap-free across broken watches and compactions,
/// each event once, in id order.
pub fn feed(
    store: Arc<dyn Store>,
    filter: EventFilter,
) -> mpsc::Receiver<Result<EventRecord, StoreError>> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        // Fail at once, rather than wait, when the store cannot be read now;
        // once streaming, outages are ridden out and resumed from.
        if let Err(e) = store.get(keys::EVENT_SEQ).await {
            let _ = tx.send(Err(e)).await;
            return;
        }
        let mut changes = follow(store, keys::EVENTS.to_string());
        let mut last = filter.after_id;
        let mut first = true;
        while let Some(followed) = changes.recv().await {
            let mut batch = Vec::new();
            match followed {
                Followed::Snapshot(listing) => {
                    for v in &listing.items {
                        match decode::<EventRecord>(v) {
                            Ok(e) if e.id > last && filter.matches(&e) => batch.push(e),
                            Ok(_) => {}
                            Err(e) => {
                                let _ = tx.send(Err(e)).await;
                                return;
                            }
                        }
                    }
                    if first && filter.tail > 0 && batch.len() > filter.tail {
                        batch.drain(..batch.len() - filter.tail);
                    }
                }
                Followed::Change(WatchEvent::Put(v)) => match decode::<EventRecord>(&v) {
                    Ok(e) if e.id > last && filter.matches(&e) => batch.push(e),
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                },
                Followed::Change(WatchEvent::Delete { .. }) => {}
            }
            for e in batch {
                last = e.id;
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
            if first && !filter.follow {
                return;
            }
            first = false;
        }
    });
    rx
}

pub struct EventFile {
    path: PathBuf,
    file: File,
    last_id: u64,
}

impl EventFile {
    /// Opens the file, repairing a torn tail, and returns it with the id of
    /// its last complete event.
    ///
    /// # Errors
    /// I/O errors on the file.
    pub fn open(path: &Path) -> io::Result<Self> {
        let mut file = ao_proto::home::private_file()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let len = file.metadata()?.len();
        let keep = complete_prefix_len(&mut file, len)?;
        if keep < len {
            tracing::warn!(
                file = %path.display(),
                "cutting {} bytes of a torn last line (a crash mid-write)",
                len - keep
            );
            file.set_len(keep)?;
        }
        let last_id = last_event_id(&mut file)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            last_id,
        })
    }

    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event as one line, unless the file already has it.
    ///
    /// # Errors
    /// I/O errors on the file.
    pub fn append(&mut self, event: &EventRecord) -> io::Result<()> {
        if event.id <= self.last_id {
            return Ok(());
        }
        let mut line = serde_json::to_vec(event).expect("events serialize");
        line.push(b'\n');
        // One write of a whole line on an O_APPEND file.
        self.file.write_all(&line)?;
        self.last_id = event.id;
        Ok(())
    }
}

/// Length of the file up to and including its last newline.
fn complete_prefix_len(file: &mut File, len: u64) -> io::Result<u64> {
    let mut end = len;
    let mut buf = vec![0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..n])?;
        if let Some(pos) = buf[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(start + pos as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

fn last_event_id(file: &mut File) -> io::Result<u64> {
    file.seek(SeekFrom::Start(0))?;
    let mut last = 0;
    for line in BufReader::new(&mut *file).lines() {
        let line = line?;
        if let Ok(ev) = serde_json::from_str::<EventRecord>(&line) {
            last = last.max(ev.id);
        }
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Priority;

    fn event(id: u64) -> EventRecord {
        EventRecord {
            id,
            timestamp: "2026-01-01T00:00:00.000Z".into(),
            kind: "session.spawned".into(),
            priority: Priority::Info,
            project_id: Some("app".into()),
            session_id: Some(format!("app-{id}")),
            issue_id: None,
            worker_id: None,
            pr_number: None,
            reaction: None,
            action: None,
            message: None,
            data: None,
        }
    }

    #[test]
    fn torn_tail_is_cut_and_duplicates_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        {
            let mut f = EventFile::open(&path).unwrap();
            f.append(&event(1)).unwrap();
            f.append(&event(2)).unwrap();
        }
        // A crash in the middle of writing event 3.
        let mut raw = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        raw.write_all(br#"{"id":3,"timest"#).unwrap();
        drop(raw);

        let mut f = EventFile::open(&path).unwrap();
        assert_eq!(f.last_id(), 2);
        f.append(&event(2)).unwrap();
        f.append(&event(3)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let ids: Vec<u64> = text
            .lines()
            .map(|l| serde_json::from_str::<EventRecord>(l).unwrap().id)
            .collect();
        assert_eq!(ids, [1, 2, 3]);
    }
}
