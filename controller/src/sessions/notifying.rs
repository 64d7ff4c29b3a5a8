//! The actor's side of notifications: a delivered (or failed, or folded)
//! queue entry leaves the store in the same write as the event that says
//! so.

use super::Actor;
use crate::notify::dispatch::{delivery_event, parse_key, Delivery};

impl Actor {
    pub(super) async fn notified(&mut self, key: String, delivery: Delivery) {
        let Some(event) = self.notifications.get(&key).cloned() else {
            return;
        };
        let Some((notifier, _)) = parse_key(&key) else {
            return;
        };
        let events = delivery_event(notifier, &event, &delivery)
            .into_iter()
            .collect();
        match self.write(&[], vec![(key.clone(), None)], events).await {
            Ok(()) => {
                self.notifications.remove_mut(&key);
                self.publish();
            }
            // Still queued in the store: delivered again after a restart.
            Err(e) => tracing::warn!(notification = %key, "cannot record the delivery: {e}"),
        }
    }
}
