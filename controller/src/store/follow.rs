//! Following a prefix without ever missing a change.
//!
//! A store's watch ends on a broken connection or a compaction, and
//! etcd-client does not resume it. [`follow`] does: it lists the prefix,
//! watches from the listing's revision, resumes from the last revision it
//! delivered after a broken stream, lists again after `Compacted`, and
//! retries with capped backoff while the store is unavailable.

use std::sync::Arc;
use std::time::Duration;

use ao_proto::backoff::Backoff;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use super::{Listing, Revision, Store, StoreError, WatchEvent};

/// What a follower receives.
#[derive(Debug, Clone)]
pub enum Followed {
    /// Everything under the prefix as of a revision: at the start, and again
    /// after history was compacted away. Replaces what was known.
    Snapshot(Listing),
    /// One change after the last snapshot or change, in revision order.
    Change(WatchEvent),
}

impl Followed {
    /// Applies this to a key → value cache of the prefix.
    pub fn apply(self, cache: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        match self {
            Self::Snapshot(l) => *cache = l.into_map(),
            Self::Change(WatchEvent::Put(v)) => {
                cache.insert(v.key, v.value);
            }
            Self::Change(WatchEvent::Delete { key, .. }) => {
                cache.remove(&key);
            }
        }
    }
}

/// Follows `prefix` until the receiver is dropped.
pub fn follow(store: Arc<dyn Store>, prefix: String) -> mpsc::Receiver<Followed> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        // The revision to watch from; `None` means "list first".
        let mut next: Option<Revision> = None;
        loop {
            let from = match next {
                Some(from) => from,
                None => match store.list(&prefix).await {
                    Ok(listing) => {
                        let from = listing.revision + 1;
                        if tx.send(Followed::Snapshot(listing)).await.is_err() {
                            return;
                        }
                        next = Some(from);
                        from
                    }
                    Err(e) => {
                        tracing::warn!(%prefix, "listing failed: {e}");
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                },
            };
            let mut stream = match store.watch(&prefix, from).await {
                Ok(stream) => stream,
                Err(StoreError::Compacted { compact_revision }) => {
                    tracing::info!(%prefix, compact_revision, "history compacted; listing again");
                    next = None;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(%prefix, "watch failed: {e}");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            backoff.reset();
            while let Some(item) = stream.next().await {
                match item {
                    Ok(change) => {
                        next = Some(change.revision() + 1);
                        if tx.send(Followed::Change(change)).await.is_err() {
                            return;
                        }
                    }
                    Err(StoreError::Compacted { .. }) => {
                        next = None;
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(%prefix, "watch ended: {e}; resuming");
                        break;
                    }
                }
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::store::embedded::EmbeddedStore;
    use crate::store::Txn;

    #[tokio::test]
    async fn a_follower_behind_a_compaction_lists_again_and_converges() {
        let dir = tempfile::tempdir().unwrap();
        // A tiny change log: a slow follower falls behind it.
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::with_change_log(&dir.path().join("s.redb"), 4).unwrap());
        store
            .commit(Txn::default().put("/p/a", b"1".to_vec()))
            .await
            .unwrap();
        let mut rx = follow(store.clone(), "/p/".into());
        let mut state = BTreeMap::new();
        rx.recv().await.unwrap().apply(&mut state);
        // Many writes while the follower does not read.
        for i in 0..50u32 {
            store
                .commit(Txn::default().put(format!("/p/k{}", i % 7), i.to_be_bytes().to_vec()))
                .await
                .unwrap();
        }
        let truth = store.list("/p/").await.unwrap().into_map();
        tokio::time::timeout(Duration::from_secs(10), async {
            while state != truth {
                rx.recv().await.unwrap().apply(&mut state);
            }
        })
        .await
        .expect("the follower converges on the store's state");
    }
}
