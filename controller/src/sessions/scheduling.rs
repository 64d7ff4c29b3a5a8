//! The actor's side of schedules ([`crate::schedules`]): a schedule's
//! record is written over the one the runner read, so a tick is claimed
//! once, and a finished run's record goes with its event in one write.

use std::sync::Arc;

use super::Actor;
use crate::error::ControllerError;
use crate::keys;
use crate::model::NewEvent;
use crate::schedules::ScheduleRecord;
use crate::store::encode;

impl Actor {
    /// Writes `record` (and `event`) for schedule `name` if its record is
    /// still done up to `expected` (`None`: it has none); whether it was.
    pub(super) async fn schedule_write(
        &mut self,
        name: String,
        expected: Option<jiff::Timestamp>,
        record: ScheduleRecord,
        event: Option<NewEvent>,
    ) -> Result<bool, ControllerError> {
        if self.schedules.get(&name).map(|r| r.done_until) != expected {
            return Ok(false);
        }
        let put = (keys::schedule(&name), Some(encode(&record)));
        self.write(&[], vec![put], event.into_iter().collect())
            .await?;
        Arc::make_mut(&mut self.schedules).insert(name, record);
        self.publish();
        Ok(true)
    }
}
