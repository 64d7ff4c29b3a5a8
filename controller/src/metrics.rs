//! What `GET /metrics` shows, in the OpenMetrics text format that
//! Prometheus scrapes.
//!
//! What the published snapshot already holds (sessions, workers and what
//! their heartbeats say) is counted at scrape time, so there is no second
//! count to drift from `ao status`. What happens between two scrapes is
//! counted here: the events the actor commits ([`Metrics::committed`]),
//! how long its store writes take, how long a session waits for its
//! agent, and the viewers attached to terminals. One [`Metrics`] lives
//! per controller, shared through its handle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::time::Instant;

use crate::handle::Snapshot;
use crate::leader::Fence;
use crate::model::{EventRecord, SessionRecord, SessionStatus};
use crate::scm::github::ApiUsage;

/// The media type of what [`Metrics::render`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A metric's labels, by name.
type Labels = Vec<(&'static str, String)>;

/// The controller's metrics that are not in its snapshot.
pub struct Metrics {
    spawns: Family<Labels, Counter>,
    placement: Histogram,
    reactions_triggered: Family<Labels, Counter>,
    reactions_escalated: Family<Labels, Counter>,
    notifications_sent: Family<Labels, Counter>,
    notifications_failed: Family<Labels, Counter>,
    store_writes: Histogram,
    viewers: Arc<AtomicI64>,
    /// When each session now spawning began to (this controller's clock);
    /// only the actor writes it.
    placing: Mutex<HashMap<String, Instant>>,
    /// `None`: the embedded store, where this controller always leads.
    fence: Option<Fence>,
}

/// One viewer on a terminal, counted until it is dropped.
pub struct Viewer(Arc<AtomicI64>);

impl Drop for Viewer {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn new(fence: Option<Fence>) -> Self {
        Self {
            spawns: Family::default(),
            // 0.1 s to ~14 min: a cold worktree and agent start take seconds.
            placement: Histogram::new(exponential_buckets(0.1, 2.0, 14)),
            reactions_triggered: Family::default(),
            reactions_escalated: Family::default(),
            notifications_sent: Family::default(),
            notifications_failed: Family::default(),
            // 0.5 ms to ~4 s: redb fsyncs, etcd answers over the network.
            store_writes: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            viewers: Arc::default(),
            placing: Mutex::default(),
            fence,
        }
    }

    /// How long one store write of the actor took.
    pub fn store_write(&self, took: Duration) {
        self.store_writes.observe(took.as_secs_f64());
    }

    /// Counts a viewer attached to a terminal until the guard is dropped.
    pub fn viewer(&self) -> Viewer {
        self.viewers.fetch_add(1, Ordering::Relaxed);
        Viewer(Arc::clone(&self.viewers))
    }

    /// Takes in one committed write: its `events`, and its `sessions`
    /// with what each was `before` (`None`: new), for the time from a
    /// spawn (or restore) to the agent running.
    pub fn committed<'a>(
        &self,
        sessions: impl IntoIterator<Item = (Option<&'a SessionRecord>, &'a SessionRecord)>,
        events: &[EventRecord],
    ) {
        let now = Instant::now();
        let mut placing = self.placing.lock().expect("placing lock");
        for (before, after) in sessions {
            let was = before.map(|b| b.status);
            match after.status {
                SessionStatus::Spawning if was != Some(SessionStatus::Spawning) => {
                    placing.insert(after.id.clone(), now);
                }
                SessionStatus::Spawning => {}
                status => {
                    let began = placing.remove(&after.id);
                    if let Some(began) = began.filter(|_| !status.is_ended()) {
                        self.placement.observe((now - began).as_secs_f64());
                    }
                }
            }
        }
        drop(placing);
        for e in events {
            let reaction = || vec![("reaction", e.reaction.clone().unwrap_or_default())];
            let notifier = || {
                let notifier = e.data.as_ref().and_then(|d| d["notifier"].as_str());
                vec![("notifier", notifier.unwrap_or_default().to_string())]
            };
            let counter = match e.kind.as_str() {
                "session.spawned" => self
                    .spawns
                    .get_or_create(&vec![("project", e.project_id.clone().unwrap_or_default())]),
                "reaction.triggered" => self.reactions_triggered.get_or_create(&reaction()),
                "reaction.escalated" => self.reactions_escalated.get_or_create(&reaction()),
                "notification.sent" => self.notifications_sent.get_or_create(&notifier()),
                "notification.failed" => self.notifications_failed.get_or_create(&notifier()),
                _ => continue,
            };
            counter.inc();
        }
    }

    /// Whether this controller leads now (always, on the embedded store).
    fn leads(&self) -> bool {
        self.fence.as_ref().is_none_or(Fence::leads)
    }

    /// Every metric, with the counts of `snap` and the GitHub clients'
    /// `github` use, as the OpenMetrics text.
    pub fn render(&self, snap: &Snapshot, github: &[ApiUsage]) -> String {
        let mut registry = Registry::with_prefix("ao");
        let sessions = Family::<Labels, Gauge>::default();
        for s in snap.sessions.values() {
            let labels = vec![
                ("project", s.project_id.clone()),
                ("status", s.status.as_str().to_string()),
                (
                    "activity",
                    s.activity.map(|a| a.as_str()).unwrap_or_default().into(),
                ),
            ];
            sessions.get_or_create(&labels).inc();
        }
        registry.register(
            "sessions",
            "Sessions by project, status and activity (empty before the agent's first report)",
            sessions,
        );
        self.register_workers(&mut registry, snap);
        registry.register(
            "spawns",
            "Sessions created, by project",
            self.spawns.clone(),
        );
        registry.register(
            "placement_seconds",
            "From a session's spawn or restore to its agent running",
            self.placement.clone(),
        );
        registry.register(
            "reactions_triggered",
            "Reactions acted on, by reaction key",
            self.reactions_triggered.clone(),
        );
        registry.register(
            "reactions_escalated",
            "Reactions handed to a human, by reaction key",
            self.reactions_escalated.clone(),
        );
        registry.register(
            "notifications_sent",
            "Notifications delivered, by notifier",
            self.notifications_sent.clone(),
        );
        registry.register(
            "notifications_failed",
            "Notifications given up on, by notifier",
            self.notifications_failed.clone(),
        );
        register_github(&mut registry, github);
        registry.register(
            "store_write_seconds",
            "How long the controller's store transactions take",
            self.store_writes.clone(),
        );
        let viewers = Gauge::<i64, AtomicI64>::default();
        viewers.set(self.viewers.load(Ordering::Relaxed));
        registry.register(
            "attach_viewers",
            "Viewers attached to session terminals",
            viewers,
        );
        let leader = Gauge::<i64, AtomicI64>::default();
        leader.set(i64::from(self.leads()));
        registry.register(
            "controller_leader",
            "1 while this controller leads (always on the embedded store)",
            leader,
        );
        let mut text = String::new();
        encode(&mut text, &registry).expect("writing to a String cannot fail");
        text
    }

    /// Workers by state, and each worker's capacity, load and memory as
    /// its heartbeats say.
    fn register_workers(&self, registry: &mut Registry, snap: &Snapshot) {
        let states = Family::<Labels, Gauge>::default();
        let capacity = Family::<Labels, Gauge>::default();
        let load = Family::<Labels, Gauge>::default();
        let memory = Family::<Labels, Gauge>::default();
        for w in snap.workers.values() {
            states
                .get_or_create(&vec![("state", w.state.as_str().to_string())])
                .inc();
            let worker = vec![("worker", w.id.clone())];
            capacity
                .get_or_create(&worker)
                .set(i64::from(w.max_sessions));
            load.get_or_create(&worker).set(i64::from(w.sessions));
            memory
                .get_or_create(&worker)
                .set(i64::try_from(w.mem_available_bytes).unwrap_or(i64::MAX));
        }
        registry.register("workers", "Workers by state", states);
        registry.register(
            "worker_max_sessions",
            "Sessions a worker takes at most",
            capacity,
        );
        registry.register("worker_sessions", "Live sessions on a worker", load);
        registry.register(
            "worker_memory_available_bytes",
            "Memory available on a worker, from its last heartbeat",
            memory,
        );
    }
}

/// Calls made to each GitHub API base and what is left of its rate limit.
fn register_github(registry: &mut Registry, github: &[ApiUsage]) {
    let requests = Family::<Labels, Counter>::default();
    let remaining = Family::<Labels, Gauge>::default();
    for u in github {
        let labels = vec![("api", u.api_url.clone()), ("resource", u.resource.into())];
        requests.get_or_create(&labels).inc_by(u.requests);
        if let Some(left) = u.remaining {
            remaining
                .get_or_create(&labels)
                .set(i64::try_from(left).unwrap_or(i64::MAX));
        }
    }
    registry.register(
        "github_requests",
        "Calls made to GitHub, by API base and rate-limit resource (core: REST, graphql)",
        requests,
    );
    registry.register(
        "github_rate_remaining",
        "What GitHub last said is left of the rate limit, by API base and resource",
        remaining,
    );
}

#[cfg(test)]
mod tests;
