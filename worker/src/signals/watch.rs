//! File-change notification for the directories that hold transcripts
//! (inotify on Linux), so that a transcript is read when it changes rather
//! than on every tick.
//!
//! Notification is a hint, not a record: a change can fall between a
//! directory's creation and its watch, and a directory removed and made
//! again loses its watch. The caller therefore also re-reads on a slow
//! safety tick, and calls [`DirWatcher::refresh`] on each notification and
//! tick.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Watches directories, non-recursively, sending each changed path on a
/// tokio channel. A directory that does not exist yet (Claude creates a
/// project's directory on its first prompt) is watched through its nearest
/// existing ancestor until it exists.
pub(crate) struct DirWatcher {
    inner: RecommendedWatcher,
    /// Each wanted directory and the directory watched for it.
    wanted: HashMap<PathBuf, PathBuf>,
    /// How many wanted directories each watched directory serves.
    watched: HashMap<PathBuf, usize>,
}

impl DirWatcher {
    /// A watcher and the receiver of the paths that change.
    ///
    /// # Errors
    /// The system's notification facility cannot be set up (inotify
    /// instance limit).
    pub(crate) fn new() -> notify::Result<(Self, mpsc::UnboundedReceiver<PathBuf>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        // Runs on notify's own thread: an unbounded send never blocks it.
        let inner = notify::recommended_watcher(move |event: notify::Result<Event>| match event {
            Ok(event) if only_read(&event.kind) => {}
            Ok(event) => {
                for path in event.paths {
                    // The receiver is gone only when nobody reads any more.
                    let _ = tx.send(path);
                }
            }
            Err(e) => tracing::warn!("file watch: {e}"),
        })?;
        let watcher = Self {
            inner,
            wanted: HashMap::new(),
            watched: HashMap::new(),
        };
        Ok((watcher, rx))
    }

    /// Starts watching `dir`, or its nearest existing ancestor for now.
    ///
    /// # Errors
    /// The watch cannot be added (watch limit, permissions).
    pub(crate) fn watch(&mut self, dir: &Path) -> notify::Result<()> {
        if self.wanted.contains_key(dir) {
            return Ok(());
        }
        let target = self.attach(dir)?;
        self.wanted.insert(dir.to_path_buf(), target);
        Ok(())
    }

    /// Stops watching `dir`; a shared ancestor stays watched for the others.
    pub(crate) fn unwatch(&mut self, dir: &Path) {
        if let Some(target) = self.wanted.remove(dir) {
            self.detach(&target);
        }
    }

    /// Moves each watch to the nearest existing directory on the way to the
    /// one wanted, and returns the wanted directories now watched that were
    /// not before: read what they already hold, since what was written
    /// before the watch sent nothing.
    ///
    /// # Errors
    /// A watch cannot be added; the others are still moved.
    pub(crate) fn refresh(&mut self) -> notify::Result<Vec<PathBuf>> {
        let mut arrived = Vec::new();
        let mut failed = None;
        let moves: Vec<(PathBuf, PathBuf)> = self
            .wanted
            .iter()
            .filter(|(dir, target)| nearest(dir) != Some(target.as_path()))
            .map(|(dir, target)| (dir.clone(), target.clone()))
            .collect();
        for (dir, old) in moves {
            match self.attach(&dir) {
                Ok(new) => {
                    self.detach(&old);
                    if new == dir {
                        arrived.push(dir.clone());
                    }
                    self.wanted.insert(dir, new);
                }
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(arrived),
        }
    }

    /// Watches the nearest existing directory to `dir` and returns it.
    fn attach(&mut self, dir: &Path) -> notify::Result<PathBuf> {
        let target = nearest(dir)
            .ok_or_else(|| notify::Error::path_not_found().add_path(dir.to_path_buf()))?
            .to_path_buf();
        let count = self.watched.get(&target).copied().unwrap_or(0);
        if count == 0 {
            self.inner.watch(&target, RecursiveMode::NonRecursive)?;
        }
        self.watched.insert(target.clone(), count + 1);
        Ok(target)
    }

    fn detach(&mut self, target: &Path) {
        let Some(count) = self.watched.get_mut(target) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            self.watched.remove(target);
            // Fails when the directory went away and took its watch along.
            if let Err(e) = self.inner.unwatch(target) {
                tracing::debug!("file watch: {}: {e}", target.display());
            }
        }
    }
}

/// A file opened, read or closed unwritten: nothing new to read. The
/// worker's own reads (the hook log, beside the terminal log) are such
/// events; passed on, each would make the worker read again, which is
/// another event, without end.
fn only_read(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Access(access) if *access != AccessKind::Close(AccessMode::Write))
}

/// `dir` or its nearest ancestor that is a directory.
fn nearest(dir: &Path) -> Option<&Path> {
    dir.ancestors().find(|path| path.is_dir())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    /// Waits for a notification about `path`, skipping others.
    async fn changed(rx: &mut mpsc::UnboundedReceiver<PathBuf>, path: &Path) {
        while let Some(got) = rx.recv().await {
            if got == path {
                return;
            }
        }
        panic!("the watcher stopped before {} changed", path.display());
    }

    #[tokio::test]
    async fn a_write_in_a_watched_directory_is_notified() {
        let dir = tempfile::tempdir().unwrap();
        let (mut watcher, mut rx) = DirWatcher::new().unwrap();
        watcher.watch(dir.path()).unwrap();
        let file = dir.path().join("t.jsonl");
        fs::write(&file, b"{}\n").unwrap();
        changed(&mut rx, &file).await;
    }

    #[tokio::test]
    async fn reading_a_file_is_not_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let (read, written) = (dir.path().join("read"), dir.path().join("written"));
        fs::write(&read, b"{}\n").unwrap();
        let (mut watcher, mut rx) = DirWatcher::new().unwrap();
        watcher.watch(dir.path()).unwrap();
        fs::read(&read).unwrap();
        fs::write(&written, b"{}\n").unwrap();
        // Events come in order: the read, had it been passed on, is first.
        assert_eq!(rx.recv().await, Some(written));
    }

    #[tokio::test]
    async fn a_directory_created_later_is_watched_once_it_exists() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("a").join("b"));
        let (mut watcher, mut rx) = DirWatcher::new().unwrap();
        watcher.watch(&b).unwrap();
        // A second wanted directory under the same ancestor, then dropped:
        // the ancestor stays watched for the first.
        watcher.watch(&root.path().join("c")).unwrap();
        watcher.unwatch(&root.path().join("c"));
        assert_eq!(watcher.refresh().unwrap(), Vec::<PathBuf>::new());
        fs::create_dir(&a).unwrap();
        changed(&mut rx, &a).await;
        assert_eq!(watcher.refresh().unwrap(), Vec::<PathBuf>::new());
        fs::create_dir(&b).unwrap();
        changed(&mut rx, &b).await;
        assert_eq!(watcher.refresh().unwrap(), std::slice::from_ref(&b));
        let file = b.join("t.jsonl");
        fs::write(&file, b"{}\n").unwrap();
        changed(&mut rx, &file).await;
        assert_eq!(watcher.watched.keys().collect::<Vec<_>>(), [&b]);
    }
}
