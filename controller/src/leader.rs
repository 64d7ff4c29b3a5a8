//! Leader election for controllers that share an etcd.
//!
//! A candidate holds the leader key (`/ao/v1/leader`) while its lease lives;
//! the key's mod revision is its *leadership revision*. Every write of the
//! leader carries a compare on that revision ([`Fence`]), so a controller
//! that lost its lease — paused, partitioned, slow — cannot write: etcd
//! refuses the transaction, and the controller steps down. Only the leader
//! serves; a follower waits, polling the key, and takes over when the key
//! is gone (its holder's lease expired or it stepped down).

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use tokio::sync::watch;

use crate::keys;
use crate::store::etcd::EtcdStore;
use crate::store::StoreError;

/// How long a silent leader keeps the key.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often a follower looks at the key.
const FOLLOWER_POLL: Duration = Duration::from_secs(1);

/// Commits `txn` while this controller leads (any controller when there is no `fence`). A
/// refusal that is about leadership, not about the request, comes back as `Unavailable` (the
/// caller should try the next controller); any other `Conflict` is the request's own.
///
/// # Errors
/// As [`crate::store::Store::commit`].
pub async fn commit_fenced(
    store: &dyn crate::store::Store,
    fence: Option<&Fence>,
    txn: crate::store::Txn,
) -> Result<(), StoreError> {
    let txn = match fence {
        Some(f) => txn.check(
            f.key.clone(),
            crate::store::Precondition::Revision(f.revision),
        ),
        None => txn,
    };
    match store.commit(txn).await {
        Ok(_) => Ok(()),
        Err(StoreError::Conflict { key }) if fence.is_some_and(|f| f.key == key) => Err(
            StoreError::Unavailable("this controller is no longer the leader".into()),
        ),
        Err(e) => Err(e),
    }
}

/// What every write of the leader is guarded by.
#[derive(Clone, Debug)]
pub struct Fence {
    pub key: String,
    pub revision: u64,
    lost: Arc<watch::Sender<Option<String>>>,
}

impl Fence {
    /// Whether leadership still holds (nothing has deposed it).
    pub fn leads(&self) -> bool {
        self.lost.borrow().is_none()
    }

    /// Records that leadership is gone, and why; the process steps down.
    pub fn deposed(&self, why: String) {
        self.lost.send_if_modified(|lost| {
            if lost.is_none() {
                *lost = Some(why);
                true
            } else {
                false
            }
        });
    }
}

/// Held while this process leads.
pub struct Leadership {
    pub fence: Fence,
    lost: watch::Receiver<Option<String>>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Resolves with the reason once leadership is lost.
    pub async fn lost(&mut self) -> String {
        match self.lost.wait_for(Option::is_some).await {
            Ok(why) => why.clone().unwrap_or_default(),
            Err(_) => "the lease keeper stopped".into(),
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Waits until this candidate leads, then keeps its lease alive.
/// `waiting` is told who leads meanwhile (once per change).
///
/// # Errors
/// Only errors other than "the store is unavailable", which are retried.
pub async fn campaign(
    store: &EtcdStore,
    candidate: &str,
    waiting: impl Fn(&str),
) -> Result<Leadership, StoreError> {
    let mut client = store.client();
    let mut last_seen = String::new();
    loop {
        let attempt = async {
            let lease = store
                .run(
                    "lease grant",
                    client.lease_grant(LEASE_TTL.as_secs() as i64, None),
                )
                .await?
                .id();
            let txn = Txn::new()
                .when([Compare::create_revision(keys::LEADER, CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    keys::LEADER,
                    candidate,
                    Some(PutOptions::new().with_lease(lease)),
                )])
                .or_else([TxnOp::get(keys::LEADER, None)]);
            let resp = store.run("campaign", client.txn(txn)).await?;
            if resp.succeeded() {
                let revision = resp.header().map_or(0, |h| h.revision()) as u64;
                return Ok::<_, StoreError>(Ok((lease, revision)));
            }
            // Someone else leads: give our lease back and wait.
            let _ = store.run("lease revoke", client.lease_revoke(lease)).await;
            let holder = resp
                .op_responses()
                .into_iter()
                .find_map(|r| match r {
                    TxnOpResponse::Get(g) => g
                        .kvs()
                        .first()
                        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                    _ => None,
                })
                .unwrap_or_default();
            Ok(Err(holder))
        };
        match attempt.await {
            Ok(Ok((lease, revision))) => {
                let (tx, rx) = watch::channel(None);
                let lost = Arc::new(tx);
                let fence = Fence {
                    key: keys::LEADER.to_string(),
                    revision,
                    lost: lost.clone(),
                };
                let keeper = tokio::spawn(keep_alive(store.client(), lease, fence.clone()));
                return Ok(Leadership {
                    fence,
                    lost: rx,
                    keeper,
                });
            }
            Ok(Err(holder)) => {
                if holder != last_seen {
                    waiting(&holder);
                    last_seen = holder;
                }
            }
            Err(StoreError::Unavailable(e)) => {
                if last_seen != e {
                    waiting(&format!("unknown ({e})"));
                    last_seen = e;
                }
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(FOLLOWER_POLL).await;
    }
}

/// Renews the lease every third of its TTL. Leadership is lost when etcd
/// says the lease is gone, or when no renewal succeeded for a whole TTL (we
/// cannot know, so we must assume the worst).
async fn keep_alive(mut client: etcd_client::Client, lease: i64, fence: Fence) {
    let mut renewed = Instant::now();
    let mut stream = None;
    loop {
        tokio::time::sleep(LEASE_TTL / 3).await;
        if stream.is_none() {
            stream = tokio::time::timeout(LEASE_TTL / 3, client.lease_keep_alive(lease))
                .await
                .ok()
                .and_then(Result::ok);
        }
        let outcome = match stream.as_mut() {
            Some((keeper, responses)) => {
                let sent = keeper.keep_alive().await.is_ok();
                match tokio::time::timeout(LEASE_TTL / 3, responses.message()).await {
                    Ok(Ok(Some(r))) if sent => Some(r.ttl() > 0),
                    _ => None,
                }
            }
            None => None,
        };
        match outcome {
            Some(true) => renewed = Instant::now(),
            Some(false) => {
                fence.deposed("the leader lease expired (another controller may lead now)".into());
                return;
            }
            None => {
                stream = None;
                if renewed.elapsed() >= LEASE_TTL {
                    fence.deposed(format!(
                        "the leader lease could not be renewed for {LEASE_TTL:?}"
                    ));
                    return;
                }
            }
        }
    }
}
