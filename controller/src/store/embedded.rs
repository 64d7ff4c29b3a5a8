//! The default store: one redb file under `AO_HOME`, ACID and crash-safe.
//!
//! Revisions, preconditions and watches behave as etcd's do: every commit
//! bumps one store-wide revision, a change log of the last
//! [`CHANGE_LOG_KEEP`] revisions serves watches from the past, and asking for
//! older history answers [`StoreError::Compacted`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::broadcast;

use super::{
    Listing, Op, Precondition, Revision, Store, StoreError, Txn, Versioned, WatchEvent, WatchStream,
};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");

/// How many revisions of change history are kept for watches.
pub const CHANGE_LOG_KEEP: u64 = 10_000;

const REVISION: &str = "revision";
const COMPACTED: &str = "compacted";

pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
    changes: broadcast::Sender<Arc<Vec<WatchEvent>>>,
    keep: u64,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Stored value layout: 8 bytes of mod revision, then the value.
fn encode_entry(rev: Revision, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&rev.to_be_bytes());
    out.extend_from_slice(value);
    out
}

fn decode_entry(key: &str, raw: &[u8]) -> Versioned {
    let (rev, value) = raw.split_at(8);
    Versioned {
        key: key.to_string(),
        value: value.to_vec(),
        mod_revision: u64::from_be_bytes(rev.try_into().expect("8 bytes")),
    }
}

/// Change log layout: 1 byte op (0 put, 1 delete), 4 bytes key length, key, value.
fn encode_change(op: &Op) -> Vec<u8> {
    let (tag, key, value): (u8, &str, &[u8]) = match op {
        Op::Put { key, value } => (0, key, value),
        Op::Delete { key } => (1, key, &[]),
    };
    let mut out = Vec::with_capacity(5 + key.len() + value.len());
    out.push(tag);
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(value);
    out
}

fn decode_change(rev: Revision, raw: &[u8]) -> WatchEvent {
    let len = u32::from_be_bytes(raw[1..5].try_into().expect("4 bytes")) as usize;
    let key = String::from_utf8_lossy(&raw[5..5 + len]).into_owned();
    if raw[0] == 1 {
        WatchEvent::Delete {
            key,
            mod_revision: rev,
        }
    } else {
        WatchEvent::Put(Versioned {
            key,
            value: raw[5 + len..].to_vec(),
            mod_revision: rev,
        })
    }
}

fn meta_value(r: &redb::ReadTransaction, key: &str) -> Result<u64, StoreError> {
    let meta = r.open_table(META).map_err(unavailable)?;
    let value = meta.get(key).map_err(unavailable)?;
    Ok(value.map_or(0, |g| g.value()))
}

fn key_of(e: &WatchEvent) -> &str {
    match e {
        WatchEvent::Put(v) => &v.key,
        WatchEvent::Delete { key, .. } => key,
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store file, recovering it after a crash.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the file cannot be opened, e.g. it is
    /// held by another process.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::with_change_log(path, CHANGE_LOG_KEEP)
    }

    /// Like [`Self::open`], keeping `keep` revisions of change history.
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn with_change_log(path: &Path, keep: u64) -> Result<Self, StoreError> {
        // redb makes its file with the process umask: make it owner-only
        // first (it holds agents' `env:` secrets); an empty file is a new database.
        ao_proto::home::private_file()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
        let db =
            Database::create(path).map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
        // Create every table up front so that readers never meet a missing one.
        let w = db.begin_write().map_err(unavailable)?;
        w.open_table(KV).map_err(unavailable)?;
        w.open_table(META).map_err(unavailable)?;
        w.open_table(CHANGES).map_err(unavailable)?;
        w.commit().map_err(unavailable)?;
        let (changes, _) = broadcast::channel(1024);
        Ok(Self {
            db: Arc::new(db),
            path: path.to_path_buf(),
            changes,
            keep,
        })
    }

    fn commit_blocking(
        db: &Database,
        keep: u64,
        txn: &Txn,
    ) -> Result<(Revision, Vec<WatchEvent>), StoreError> {
        let w = db.begin_write().map_err(unavailable)?;
        let rev;
        {
            let mut kv = w.open_table(KV).map_err(unavailable)?;
            for (key, pre) in &txn.checks {
                let current = kv
                    .get(key.as_str())
                    .map_err(unavailable)?
                    .map(|g| decode_entry(key, g.value()).mod_revision);
                let holds = match pre {
                    Precondition::Absent => current.is_none(),
                    Precondition::Revision(r) => current == Some(*r),
                };
                if !holds {
                    return Err(StoreError::Conflict { key: key.clone() });
                }
            }
            let mut meta = w.open_table(META).map_err(unavailable)?;
            rev = meta
                .get(REVISION)
                .map_err(unavailable)?
                .map_or(0, |g| g.value())
                + 1;
            meta.insert(REVISION, rev).map_err(unavailable)?;
            let mut changes = w.open_table(CHANGES).map_err(unavailable)?;
            for op in &txn.ops {
                match op {
                    Op::Put { key, value } => {
                        kv.insert(key.as_str(), encode_entry(rev, value).as_slice())
                            .map_err(unavailable)?;
                    }
                    Op::Delete { key } => {
                        kv.remove(key.as_str()).map_err(unavailable)?;
                    }
                }
            }
            // One change-log row per revision holds every op of the txn.
            let mut row = Vec::new();
            for op in &txn.ops {
                let c = encode_change(op);
                row.extend_from_slice(&(c.len() as u32).to_be_bytes());
                row.extend_from_slice(&c);
            }
            changes.insert(rev, row.as_slice()).map_err(unavailable)?;
            if rev > keep {
                let floor = rev - keep;
                changes
                    .retain_in(..floor, |_, _| false)
                    .map_err(unavailable)?;
                meta.insert(COMPACTED, floor).map_err(unavailable)?;
            }
        }
        w.commit().map_err(unavailable)?;
        let events = txn
            .ops
            .iter()
            .map(|op| decode_change(rev, &encode_change(op)))
            .collect();
        Ok((rev, events))
    }

    fn history_blocking(
        db: &Database,
        prefix: &str,
        from: Revision,
    ) -> Result<Vec<WatchEvent>, StoreError> {
        let r = db.begin_read().map_err(unavailable)?;
        let compacted = meta_value(&r, COMPACTED)?;
        if from < compacted {
            return Err(StoreError::Compacted {
                compact_revision: compacted,
            });
        }
        let changes = r.open_table(CHANGES).map_err(unavailable)?;
        let mut out = Vec::new();
        for row in changes.range(from..).map_err(unavailable)? {
            let (rev, raw) = row.map_err(unavailable)?;
            let (rev, raw) = (rev.value(), raw.value());
            let mut at = 0;
            while at < raw.len() {
                let len = u32::from_be_bytes(raw[at..at + 4].try_into().expect("4 bytes")) as usize;
                let ev = decode_change(rev, &raw[at + 4..at + 4 + len]);
                if key_of(&ev).starts_with(prefix) {
                    out.push(ev);
                }
                at += 4 + len;
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let db = self.db.clone();
        let key = key.to_string();
        tokio::task::spawn_blocking(move || {
            let r = db.begin_read().map_err(unavailable)?;
            let kv = r.open_table(KV).map_err(unavailable)?;
            let found = kv.get(key.as_str()).map_err(unavailable)?;
            Ok(found.map(|g| decode_entry(&key, g.value())))
        })
        .await
        .map_err(unavailable)?
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let db = self.db.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || {
            let r = db.begin_read().map_err(unavailable)?;
            let revision = meta_value(&r, REVISION)?;
            let kv = r.open_table(KV).map_err(unavailable)?;
            let mut items = Vec::new();
            for row in kv.range(prefix.as_str()..).map_err(unavailable)? {
                let (k, v) = row.map_err(unavailable)?;
                if !k.value().starts_with(prefix.as_str()) {
                    break;
                }
                items.push(decode_entry(k.value(), v.value()));
            }
            Ok(Listing { items, revision })
        })
        .await
        .map_err(unavailable)?
    }

    async fn commit(&self, txn: Txn) -> Result<Revision, StoreError> {
        let (db, keep) = (self.db.clone(), self.keep);
        let (rev, events) =
            tokio::task::spawn_blocking(move || Self::commit_blocking(&db, keep, &txn))
                .await
                .map_err(unavailable)??;
        // Nobody watching is fine.
        let _ = self.changes.send(Arc::new(events));
        Ok(rev)
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        // Subscribe before reading history so that nothing falls between the two.
        let mut live = self.changes.subscribe();
        let db = self.db.clone();
        let owned_prefix = prefix.to_string();
        let history = tokio::task::spawn_blocking(move || {
            Self::history_blocking(&db, &owned_prefix, from_revision)
        })
        .await
        .map_err(unavailable)??;
        let prefix = prefix.to_string();
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            let mut last = from_revision.saturating_sub(1);
            for ev in history {
                last = ev.revision();
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            loop {
                match live.recv().await {
                    Ok(batch) => {
                        for ev in batch.iter() {
                            if ev.revision() > last
                                && key_of(ev).starts_with(&prefix)
                                && tx.send(Ok(ev.clone())).await.is_err()
                            {
                                return;
                            }
                        }
                        if let Some(ev) = batch.first() {
                            last = last.max(ev.revision());
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // The watcher fell behind the in-memory fan-out: end
                        // with an error so that it resumes from its last
                        // revision through the change log.
                        let _ = tx
                            .send(Err(StoreError::Unavailable(
                                "watch fell behind; resume".into(),
                            )))
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    fn describe(&self) -> String {
        format!("embedded:{}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    fn open() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("store.redb")).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn compare_and_swap_by_revision() {
        let (_d, s) = open();
        assert_eq!(s.get("/a").await.unwrap(), None);
        let r1 = s
            .commit(
                Txn::default()
                    .check("/a", Precondition::Absent)
                    .put("/a", b"1".to_vec()),
            )
            .await
            .unwrap();
        // A second create of the same key conflicts.
        let again = s
            .commit(
                Txn::default()
                    .check("/a", Precondition::Absent)
                    .put("/a", b"x".to_vec()),
            )
            .await;
        assert!(matches!(again, Err(StoreError::Conflict { key }) if key == "/a"));
        let r2 = s
            .commit(
                Txn::default()
                    .check("/a", Precondition::Revision(r1))
                    .put("/a", b"2".to_vec()),
            )
            .await
            .unwrap();
        assert!(r2 > r1);
        let stale = s
            .commit(
                Txn::default()
                    .check("/a", Precondition::Revision(r1))
                    .put("/a", b"3".to_vec()),
            )
            .await;
        assert!(matches!(stale, Err(StoreError::Conflict { .. })));
        let got = s.get("/a").await.unwrap().unwrap();
        assert_eq!((got.value.as_slice(), got.mod_revision), (&b"2"[..], r2));
    }

    #[tokio::test]
    async fn list_by_prefix_and_watch_from_revision() {
        let (_d, s) = open();
        let r1 = s
            .commit(Txn::default().put("/p/a", b"a".to_vec()))
            .await
            .unwrap();
        s.commit(Txn::default().put("/q/x", b"x".to_vec()))
            .await
            .unwrap();
        s.commit(Txn::default().put("/p/b", b"b".to_vec()))
            .await
            .unwrap();
        let listing = s.list("/p/").await.unwrap();
        let keys: Vec<_> = listing.items.iter().map(|v| v.key.as_str()).collect();
        assert_eq!(keys, ["/p/a", "/p/b"]);

        let mut w = s.watch("/p/", r1).await.unwrap();
        let first = w.next().await.unwrap().unwrap();
        assert_eq!(key_of(&first), "/p/a");
        assert_eq!(key_of(&w.next().await.unwrap().unwrap()), "/p/b");
        s.commit(Txn {
            checks: vec![],
            ops: vec![Op::Delete { key: "/p/a".into() }],
        })
        .await
        .unwrap();
        assert!(
            matches!(w.next().await.unwrap().unwrap(), WatchEvent::Delete { key, .. } if key == "/p/a")
        );
    }

    #[tokio::test]
    async fn old_history_is_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::with_change_log(&dir.path().join("s.redb"), 20).unwrap();
        for i in 0..25 {
            s.commit(Txn::default().put("/k", i.to_string().into_bytes()))
                .await
                .unwrap();
        }
        assert!(matches!(
            s.watch("/", 1).await,
            Err(StoreError::Compacted {
                compact_revision: 5
            })
        ));
        assert!(s.watch("/", 6).await.is_ok());
    }

    #[tokio::test]
    async fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let rev = {
            let s = EmbeddedStore::open(&path).unwrap();
            s.commit(Txn::default().put("/k", b"v".to_vec()))
                .await
                .unwrap()
        };
        let s = EmbeddedStore::open(&path).unwrap();
        assert_eq!(s.get("/k").await.unwrap().unwrap().mod_revision, rev);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn read_modify_write_retries_after_a_concurrent_write() {
        let (_d, s) = open();
        s.commit(Txn::default().put("/n", b"1".to_vec()))
            .await
            .unwrap();
        let mut calls = 0;
        let out = super::super::read_modify_write::<u32, StoreError, _>(&s, "/n", |cur| {
            calls += 1;
            if calls == 1 {
                // Another writer slips in between our read and our write.
                let s = &s;
                block_on(s.commit(Txn::default().put("/n", b"10".to_vec()))).unwrap();
            }
            Ok(Some(cur.unwrap_or(0) + 1))
        })
        .await
        .unwrap();
        assert_eq!(out.map(|(v, _)| v), Some(11));
        assert_eq!(calls, 2);
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
    }
}
