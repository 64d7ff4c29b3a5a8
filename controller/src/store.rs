//! The controller's persistence seam: a narrow key-value [`Store`] with
//! compare-and-swap by revision, prefix listing and watch-from-revision —
//! the shape etcd offers, so that an etcd implementation can sit beside the
//! [`embedded`] default without the rest of the controller noticing.
//!
//! Modules:
//! - [`embedded`]: one redb file, the single-machine default.
//! - [`etcd`]: an etcd v3 cluster, for teams and HA.
//! - [`follow`]: a watch that never misses (resume, relist, backoff).
//!
//! `tests/store_conformance.rs` runs one suite against both.

pub mod embedded;
pub mod etcd;
pub mod follow;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use ao_proto::home::Home;
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_stream::Stream;

/// Where a controller keeps its state: `--store` / `AO_STORE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// `embedded` (the default) or `embedded:/path/to/store.redb`.
    Embedded(PathBuf),
    /// `etcd://host:2379[,host:2379…]`.
    Etcd(Vec<String>),
}

impl StoreLocation {
    /// Parses a `--store` value; `None` or empty is the embedded store in `home`.
    ///
    /// # Errors
    /// A sentence naming what was expected.
    pub fn parse(value: Option<&str>, home: &Home) -> Result<Self, String> {
        let value = value.map(str::trim).unwrap_or_default();
        if value.is_empty() || value == "embedded" {
            return Ok(Self::Embedded(home.store()));
        }
        if let Some(path) = value.strip_prefix("embedded:") {
            return Ok(Self::Embedded(PathBuf::from(path)));
        }
        if let Some(rest) = value.strip_prefix("etcd://") {
            let endpoints: Vec<String> = rest
                .split(',')
                .map(|e| e.trim().trim_end_matches('/').to_string())
                .filter(|e| !e.is_empty())
                .collect();
            if endpoints.is_empty() || endpoints.iter().any(|e| !e.contains(':')) {
                return Err(format!(
                    "--store {value}: expected etcd://host:port[,host:port…]"
                ));
            }
            return Ok(Self::Etcd(endpoints));
        }
        Err(format!(
            "--store {value}: expected `embedded`, `embedded:/path` or etcd://host:port[,host:port…]"
        ))
    }

    /// Opens the store (connecting to etcd and checking that it answers).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] naming the file or the endpoints.
    pub async fn open(&self, tls: Option<etcd::EtcdTls>) -> Result<Arc<dyn Store>, StoreError> {
        Ok(match self {
            Self::Embedded(path) => Arc::new(embedded::EmbeddedStore::open(path)?),
            Self::Etcd(endpoints) => Arc::new(etcd::EtcdStore::connect(endpoints, tls).await?),
        })
    }
}

/// A store-wide, strictly increasing write counter (etcd's `mod_revision`).
pub type Revision = u64;

/// A value with the revision that last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: Revision,
}

/// What must hold of a key for a transaction to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// The key does not exist.
    Absent,
    /// The key was last written at exactly this revision.
    Revision(Revision),
}

/// One write inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

/// All-or-nothing: every check holds and every op applies, or nothing does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub checks: Vec<(String, Precondition)>,
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn check(mut self, key: impl Into<String>, precondition: Precondition) -> Self {
        self.checks.push((key.into(), precondition));
        self
    }

    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }

    pub fn put(mut self, key: impl Into<String>, value: Vec<u8>) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value,
        });
        self
    }
}

/// A prefix listing, consistent as of `revision`: watch from `revision + 1`
/// to see every later change.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub items: Vec<Versioned>,
    pub revision: Revision,
}

impl Listing {
    /// Key → value, as a cache of the prefix holds it.
    pub fn into_map(self) -> std::collections::BTreeMap<String, Vec<u8>> {
        self.items.into_iter().map(|v| (v.key, v.value)).collect()
    }
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(Versioned),
    Delete { key: String, mod_revision: Revision },
}

impl WatchEvent {
    pub fn revision(&self) -> Revision {
        match self {
            Self::Put(v) => v.mod_revision,
            Self::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, StoreError>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A precondition of a transaction did not hold; re-read and retry.
    #[error("conflicting write on `{key}`")]
    Conflict { key: String },
    /// The history before `compact_revision` is gone; list again and continue.
    #[error("revision compacted (oldest kept is {compact_revision})")]
    Compacted { compact_revision: Revision },
    /// The store cannot be reached or used right now; retryable.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store's settings are wrong (an endpoint, a TLS file); terminal: retrying cannot
    /// help until they are fixed.
    #[error("invalid store settings: {0}")]
    Misconfigured(String),
    /// A value could not be decoded; terminal for that key.
    #[error("corrupt value at `{key}`: {reason}")]
    Corrupt { key: String, reason: String },
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// One key, if present.
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError>;
    /// Every key under `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Listing, StoreError>;
    /// Applies `txn` atomically; returns the revision it was written at.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] naming the first key whose precondition failed.
    /// [`StoreError::Unavailable`] when the store could not be reached in
    /// time; a remote store cannot tell whether the write applied, so re-read
    /// before writing again.
    async fn commit(&self, txn: Txn) -> Result<Revision, StoreError>;
    /// Every change under `prefix` from `from_revision` on (inclusive). The
    /// ops of one commit arrive as events of the same revision, in order.
    ///
    /// The stream does not end by itself: it ends after an `Err` item, either
    /// [`StoreError::Unavailable`] (the connection broke or the watcher fell
    /// behind: watch again from the last revision seen + 1) or
    /// [`StoreError::Compacted`] (list again and watch from the listing).
    ///
    /// # Errors
    /// [`StoreError::Compacted`] when that history is no longer kept.
    async fn watch(&self, prefix: &str, from_revision: Revision)
        -> Result<WatchStream, StoreError>;
    /// A short description for `ao doctor` and logs (`embedded:/path`).
    fn describe(&self) -> String;
}

/// Reads `key` as JSON, lets `f` change it, and writes it back guarded by the
/// revision it read, retrying on conflict. `f` returning `None` leaves the key
/// untouched. Returns the value written (or left) and its revision.
///
/// # Errors
/// Whatever `f` or the store returns, except conflicts, which are retried.
pub async fn read_modify_write<T, E, F>(
    store: &dyn Store,
    key: &str,
    mut f: F,
) -> Result<Option<(T, Revision)>, E>
where
    T: Serialize + DeserializeOwned,
    E: From<StoreError>,
    F: FnMut(Option<T>) -> Result<Option<T>, E>,
{
    loop {
        let current = store.get(key).await?;
        let (value, precondition) = match &current {
            Some(v) => (
                Some(decode::<T>(v)?),
                Precondition::Revision(v.mod_revision),
            ),
            None => (None, Precondition::Absent),
        };
        let Some(next) = f(value)? else {
            return Ok(match current {
                Some(v) => Some((decode(&v)?, v.mod_revision)),
                None => None,
            });
        };
        let txn = Txn::default()
            .check(key, precondition)
            .put(key, encode(&next));
        match store.commit(txn).await {
            Ok(rev) => return Ok(Some((next, rev))),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// JSON-encodes a stored value.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("stored types serialize infallibly")
}

/// Decodes a stored JSON value.
///
/// # Errors
/// [`StoreError::Corrupt`] naming the key.
pub fn decode<T: DeserializeOwned>(v: &Versioned) -> Result<T, StoreError> {
    serde_json::from_slice(&v.value).map_err(|e| StoreError::Corrupt {
        key: v.key.clone(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_locations_parse() {
        let home = &Home::new("/h");
        assert_eq!(
            StoreLocation::parse(None, home),
            Ok(StoreLocation::Embedded("/h/store.redb".into()))
        );
        assert_eq!(
            StoreLocation::parse(Some("etcd://a:2379, b:2379/"), home),
            Ok(StoreLocation::Etcd(vec!["a:2379".into(), "b:2379".into()]))
        );
        assert!(StoreLocation::parse(Some("etcd://"), home).is_err());
        assert!(StoreLocation::parse(Some("redis://x"), home)
            .unwrap_err()
            .contains("expected"));
    }
}
