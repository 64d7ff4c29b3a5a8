//! The sessions actor's chores in the background: the store's health
//! probed, the liveness tick, and the trim of events an older version left
//! in the store. They run on the actor's task set and stop with it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::handle::Command;
use crate::keys;
use crate::leader::Fence;
use crate::store::{Precondition, Store, StoreError, Txn};

/// How often the store's health is probed.
const STORE_PROBE: Duration = Duration::from_secs(2);
/// How often workers' silence is judged.
const LIVENESS_TICK: Duration = Duration::from_secs(1);

/// Starts the chores on `tickers`, sending their commands to `actor`;
/// with `trim_to`, old events up to that id leave the store.
pub(super) fn start(
    tickers: &mut JoinSet<()>,
    actor: &mpsc::Sender<Command>,
    store: Arc<dyn Store>,
    fence: Option<Fence>,
    trim_to: Option<u64>,
) {
    if let Some(floor) = trim_to {
        // In the background: a store that grew without the bound may take a
        // while, and serving does not wait for it.
        let store = store.clone();
        tickers.spawn(async move {
            if let Err(e) = trim_events(store.as_ref(), fence.as_ref(), floor).await {
                tracing::warn!("trimming old events from the store stopped: {e}");
            }
        });
    }
    tickers.spawn(every(STORE_PROBE, actor.downgrade(), move || {
        let store = store.clone();
        async move { Command::StoreProbe(probe_store(store.as_ref()).await) }
    }));
    // Workers' silence is judged on every tick.
    tickers.spawn(every(LIVENESS_TICK, actor.downgrade(), || async {
        Command::Tick
    }));
}

/// Reads one key and says how it went.
async fn probe_store(store: &dyn Store) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(5), store.get(keys::CONFIG)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "store unavailable: {} did not answer within 5 s",
            store.describe()
        )),
    }
}

/// Sends the actor the command `next` makes, every `period`, until the
/// actor is gone.
async fn every<F, Fut>(period: Duration, actor: mpsc::WeakSender<Command>, mut next: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Command>,
{
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let command = next().await;
        let Some(actor) = actor.upgrade() else {
            return;
        };
        if actor.send(command).await.is_err() {
            return;
        }
    }
}

/// Deletes from the store the events up to id `floor` that a version
/// without the bound (or with a larger one) left there; new writes trim as
/// they go. A batch per transaction, each fenced like every write.
async fn trim_events(
    store: &dyn Store,
    fence: Option<&Fence>,
    floor: u64,
) -> Result<(), StoreError> {
    let last_old = keys::event(floor);
    let old: Vec<String> = store
        .list(keys::EVENTS)
        .await?
        .items
        .into_iter()
        .map(|v| v.key)
        .filter(|key| *key <= last_old)
        .collect();
    if !old.is_empty() {
        tracing::info!(events = old.len(), "trimming old events from the store");
    }
    for batch in old.chunks(100) {
        let mut txn = Txn::default();
        if let Some(f) = fence {
            txn = txn.check(f.key.clone(), Precondition::Revision(f.revision));
        }
        for key in batch {
            txn = txn.delete(key.clone());
        }
        store.commit(txn).await?;
    }
    Ok(())
}
