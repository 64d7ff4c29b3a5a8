//! The shapes the controller keeps in the store, and how its state is
//! read back from there at start and after a store outage.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::config::Config;
use crate::error::ControllerError;
use crate::handle::SessionMap;
use crate::keys;
use crate::model::{SessionRecord, WorkerRecord};
use crate::notify::dispatch::Queue;
use crate::schedules::ScheduleRecord;
use crate::store::{decode, Store};

/// Everything the controller keeps in the store, as read at one time.
pub(crate) struct Loaded {
    pub(crate) config: Option<Config>,
    pub(crate) sessions: SessionMap,
    pub(crate) revs: HashMap<String, u64>,
    pub(crate) counters: HashMap<String, u64>,
    pub(crate) workers: Vec<WorkerRecord>,
    pub(crate) event_seq: u64,
    /// Each project's own reaction states (`all-complete`).
    pub(crate) project_reactions: HashMap<String, crate::model::ReactionStates>,
    /// The notifications waiting for delivery.
    pub(crate) notifications: Queue,
    /// Each schedule's record, by name.
    pub(crate) schedules: BTreeMap<String, ScheduleRecord>,
}

impl Loaded {
    pub(crate) async fn read(store: &dyn Store) -> Result<Self, ControllerError> {
        let mut revs = HashMap::new();
        let config = match store.get(keys::CONFIG).await? {
            Some(v) => {
                revs.insert(v.key.clone(), v.mod_revision);
                Some(decode::<StoredConfig>(&v)?.config)
            }
            None => None,
        };
        let mut sessions = SessionMap::new_sync();
        for v in store.list(keys::SESSIONS).await?.items {
            let s: SessionRecord = decode(&v)?;
            revs.insert(v.key.clone(), v.mod_revision);
            sessions.insert_mut(s.id.clone(), Arc::new(s));
        }
        let mut counters = HashMap::new();
        for v in store.list(&keys::counter("")).await?.items {
            let n: u64 = decode(&v)?;
            let project = v.key.trim_start_matches(&keys::counter("")).to_string();
            revs.insert(v.key.clone(), v.mod_revision);
            counters.insert(project, n);
        }
        let mut project_reactions = HashMap::new();
        for v in store.list(keys::PROJECT_REACTIONS).await?.items {
            let project = v
                .key
                .trim_start_matches(keys::PROJECT_REACTIONS)
                .to_string();
            revs.insert(v.key.clone(), v.mod_revision);
            project_reactions.insert(project, decode(&v)?);
        }
        let mut workers = Vec::new();
        for v in store.list(keys::WORKERS).await?.items {
            workers.push(decode::<WorkerRecord>(&v)?);
            revs.insert(v.key.clone(), v.mod_revision);
        }
        let mut notifications = Queue::new_sync();
        for v in store.list(keys::NOTIFY).await?.items {
            revs.insert(v.key.clone(), v.mod_revision);
            notifications.insert_mut(v.key.clone(), Arc::new(decode(&v)?));
        }
        let mut schedules = BTreeMap::new();
        for v in store.list(keys::SCHEDULES).await?.items {
            let name = v.key.trim_start_matches(keys::SCHEDULES).to_string();
            revs.insert(v.key.clone(), v.mod_revision);
            schedules.insert(name, decode(&v)?);
        }
        let event_seq = match store.get(keys::EVENT_SEQ).await? {
            Some(v) => {
                revs.insert(v.key.clone(), v.mod_revision);
                decode(&v)?
            }
            None => 0,
        };
        Ok(Self {
            config,
            sessions,
            revs,
            counters,
            workers,
            event_seq,
            project_reactions,
            notifications,
            schedules,
        })
    }
}

/// The applied config as the store keeps it.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StoredConfig {
    pub(crate) schema_version: u32,
    pub(crate) config: Config,
}
