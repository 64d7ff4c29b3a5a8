//! Label triggers: an issue that gets its project's `spawnLabel`
//! (`agent-task` by default) gets a session, once.
//!
//! Two ways in, one rule: an `issues` `labeled` webhook delivery names the
//! issue at once; without webhooks (or when one is lost) the tracker is
//! polled for open issues carrying the label. Either calls
//! [`Labels::spawn_once`], which spawns through `batch-spawn` (so an issue
//! with a live session keeps it) and then records the issue under
//! `/ao/v1/label-spawns/<project>/<issue>`: an issue recorded is never
//! spawned by its label again, whether the label stays (the poll sees it
//! each round), is removed (its session is not killed) or is added again.
//! A webhook and a poll racing for one issue meet in the actor, which
//! spawns one session and answers the other with it.
//!
//! Started with the controller, so on the leading controller only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ProjectConfig;
use crate::forge::scm_settings;
use crate::handle::{BatchOutcome, ControllerHandle};
use crate::keys;
use crate::leader::{commit_fenced, Fence};
use crate::prwatch::Pace;
use crate::scm::github::webhook::Labeled;
use crate::store::{encode, Precondition, Store, StoreError, Txn};

/// The label that spawns when a project names none.
pub const DEFAULT_SPAWN_LABEL: &str = "agent-task";

/// At most this many labelled issues not spawned for yet are looked at per
/// project and round.
const PER_ROUND: usize = 100;

/// The label that spawns for `project`: none without a tracker, or when
/// `spawnLabel` is `""`.
pub fn spawn_label(project: &ProjectConfig) -> Option<&str> {
    project.tracker.as_ref()?;
    let label = project
        .spawn_label
        .as_deref()
        .unwrap_or(DEFAULT_SPAWN_LABEL);
    (!label.is_empty()).then_some(label)
}

/// What is kept of an issue its label spawned for.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LabelSpawn {
    project: String,
    issue: String,
    session: String,
    at: DateTime<Utc>,
}

/// The label triggers of this controller.
pub struct Labels {
    handle: ControllerHandle,
    store: Arc<dyn Store>,
    fence: Option<Fence>,
    /// The last trouble said per project, so a lasting one is logged once.
    said: Mutex<HashMap<String, String>>,
}

impl Labels {
    /// Starts polling every project's tracker for its label, at the pace of
    /// an idle PR watcher (slower for projects with webhooks).
    pub fn start(
        handle: ControllerHandle,
        store: Arc<dyn Store>,
        fence: Option<Fence>,
        pace: Pace,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let labels = Arc::new(Self {
            handle,
            store,
            fence,
            said: Mutex::default(),
        });
        tasks.spawn(labels.clone().poll(pace, stop));
        labels
    }

    async fn poll(self: Arc<Self>, pace: Pace, stop: CancellationToken) {
        let mut last: HashMap<String, tokio::time::Instant> = HashMap::new();
        loop {
            let now = tokio::time::Instant::now();
            let config = self.handle.snapshot().config.clone();
            for (id, project) in config.iter().flat_map(|c| c.projects.iter()) {
                let Some(label) = spawn_label(project) else {
                    continue;
                };
                let every = if has_webhooks(id, project) {
                    pace.idle * pace.webhook_factor
                } else {
                    pace.idle
                };
                if last
                    .get(id)
                    .is_some_and(|at| now.duration_since(*at) < every)
                {
                    continue;
                }
                last.insert(id.clone(), now);
                self.round(id, project, label).await;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(pace.idle.min(Duration::from_secs(5))) => {}
            }
        }
    }

    /// One look at `id`'s tracker for open issues labelled `label`. The
    /// tracker answers oldest first: issues spawned for already (still open,
    /// still labelled) are asked for on top, so that they cannot hide new ones.
    async fn round(&self, id: &str, project: &ProjectConfig, label: &str) {
        let spawned = match self.store.list(&keys::label_spawns(id)).await {
            Ok(list) => list.items.len(),
            Err(e) => return self.say(id, Some(format!("label triggers not checked: {e}"))),
        };
        let found = match self.handle.forges().tracker(id, project).await {
            Ok(Some(tracker)) => tracker
                .search(
                    &format!("label:\"{label}\" state:open"),
                    spawned + PER_ROUND,
                )
                .await
                .map_err(|e| e.to_string()),
            Ok(None) => return,
            Err(e) => Err(e.to_string()),
        };
        match found {
            Ok(issues) => {
                self.say(id, None);
                for issue in issues {
                    self.spawn_once(id, &issue.id).await;
                }
            }
            Err(e) => self.say(id, Some(format!("issues labelled `{label}` not read: {e}"))),
        }
    }

    /// Logs `trouble` of `project` when it differs from the last said.
    fn say(&self, project: &str, trouble: Option<String>) {
        let mut said = self.said.lock().expect("said lock");
        match trouble {
            Some(t) if said.get(project) != Some(&t) => {
                tracing::warn!(%project, "label triggers: {t}");
                said.insert(project.to_string(), t);
            }
            None => {
                said.remove(project);
            }
            Some(_) => {}
        }
    }

    /// A webhook delivery added a label: spawn for each project of
    /// `signers` (those whose secret signed it) on that repository whose
    /// tracker is GitHub and whose label it is. A closed issue is left alone.
    pub async fn labeled(&self, delivery: &Labeled, signers: &[String]) {
        if !delivery.open {
            return;
        }
        let config = self.handle.snapshot().config.clone();
        let repo = delivery.repo.to_string();
        let projects: Vec<String> = config
            .iter()
            .flat_map(|c| c.projects.iter())
            .filter(|(_, p)| p.repo.as_deref() == Some(repo.as_str()))
            .filter(|(_, p)| p.tracker.as_ref().is_some_and(|t| t.plugin == "github"))
            .filter(|(_, p)| spawn_label(p) == Some(delivery.label.as_str()))
            .filter(|(id, _)| signers.contains(id))
            .map(|(id, _)| id.clone())
            .collect();
        for project in projects {
            self.spawn_once(&project, &delivery.issue.to_string()).await;
        }
    }

    /// Spawns for `issue` of `project` unless its label did already.
    async fn spawn_once(&self, project: &str, issue: &str) {
        let key = keys::label_spawn(project, issue);
        match self.store.get(&key).await {
            Ok(Some(_)) => return,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(%project, %issue, "label trigger not checked: {e}");
                return;
            }
        }
        let outcome = self
            .handle
            .batch_spawn(project.to_string(), vec![issue.to_string()], None, false)
            .await;
        let session = match outcome.map(|mut all| all.pop()) {
            Ok(Some(BatchOutcome::Spawned(s))) => {
                tracing::info!(session = %s.id, %project, %issue, "spawned by the issue's label");
                s.id.clone()
            }
            Ok(Some(BatchOutcome::Skipped { existing, .. })) => existing,
            Ok(Some(BatchOutcome::Failed { error, .. })) => {
                self.say(project, Some(format!("issue {issue} not spawned: {error}")));
                return;
            }
            Ok(None) => return,
            Err(e) => {
                self.say(project, Some(format!("issue {issue} not spawned: {e}")));
                return;
            }
        };
        let record = LabelSpawn {
            project: project.to_string(),
            issue: issue.to_string(),
            session,
            at: Utc::now(),
        };
        let txn = Txn::default()
            .check(key.clone(), Precondition::Absent)
            .put(key, encode(&record));
        match commit_fenced(self.store.as_ref(), self.fence.as_ref(), txn).await {
            // The other way in recorded it first.
            Ok(()) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => tracing::warn!(%project, %issue, "label trigger not recorded: {e}"),
        }
    }
}

/// Whether GitHub tells `project` of changes (a `webhookSecret`): then the
/// poll is only a safety net.
fn has_webhooks(id: &str, project: &ProjectConfig) -> bool {
    scm_settings(id, project, &|k| std::env::var(k).ok())
        .and_then(Result::ok)
        .is_some_and(|s| s.webhook_secret.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PluginConfig;

    #[test]
    fn a_project_spawns_by_its_label_only_with_a_tracker() {
        let mut project = ProjectConfig::default();
        assert_eq!(spawn_label(&project), None, "no tracker, no trigger");
        project.tracker = Some(PluginConfig {
            plugin: "github".into(),
            ..PluginConfig::default()
        });
        assert_eq!(spawn_label(&project), Some("agent-task"));
        project.spawn_label = Some("ready".into());
        assert_eq!(spawn_label(&project), Some("ready"));
        project.spawn_label = Some(String::new());
        assert_eq!(spawn_label(&project), None, "turned off");
    }
}
