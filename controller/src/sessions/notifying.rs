//! The actor's side of notifications: a delivered (or failed, or folded)
//! queue entry leaves the store in the same write as the event that says
//! so.

use super::Actor;
use crate::error::ControllerError;
use crate::notify::dispatch::{delivery_event, parse_key, Delivery};

impl Actor {
    /// Removes entry `key` with the event saying how it ended; an entry
    /// already gone is left alone.
    pub(super) async fn notified(
        &mut self,
        key: String,
        delivery: Delivery,
    ) -> Result<(), ControllerError> {
        let (Some(event), Some((notifier, _))) =
            (self.notifications.get(&key).cloned(), parse_key(&key))
        else {
            return Ok(());
        };
        let events = delivery_event(notifier, &event, &delivery)
            .into_iter()
            .collect();
        self.write(&[], vec![(key.clone(), None)], events).await?;
        self.notifications.remove_mut(&key);
        self.publish();
        Ok(())
    }
}
