//! Which notifiers hear of an event, and the durable queue between the
//! event log and them.
//!
//! Only the events that need a human are routed: `reaction.triggered`
//! whose action is `notify`, `reaction.escalated` and `worker.lost`. The
//! events those reactions answer (`session.stuck`, `session.needs_input`,
//! `session.exited`, `summary.all_complete`) are not routed themselves:
//! their reactions (`agent-stuck`, `all-complete`, …) notify, once.
//! `notification.*` events are never routed.
//!
//! The sessions actor writes one queue entry per notifier in the same
//! transaction as the event ([`enqueue`]), so that an accepted
//! notification outlives a crash, and publishes the queue in its snapshot.
//! The [`Dispatcher`] delivers each entry in a task of its own (a slow or
//! failing receiver delays nobody), retries with backoff, and reports the
//! outcome back to the actor, which removes the entry and records
//! `notification.sent` or `notification.failed` in one write. Delivery is
//! at least once: a crash between a receiver's answer and that write
//! delivers the entry again after the restart.
//!
//! Cooldown: a second entry for the same notifier and the same (session,
//! reaction or event type) within [`Pace::cooldown`] of the last one is
//! dropped (removed without an event). The cooldown is kept in memory: a
//! restarted controller starts without one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Notifier, NotifyError};
use crate::config::{Config, PluginConfig, ReactionAction, ReactionKey};
use crate::handle::ControllerHandle;
use crate::keys;
use crate::model::{EventRecord, NewEvent, Priority};
use crate::reactions::policy;

/// Whether `event` is one a human is told of.
fn worth_notifying(event: &EventRecord) -> bool {
    match event.kind.as_str() {
        "reaction.triggered" => event.action.as_deref() == Some(ReactionAction::Notify.as_str()),
        "reaction.escalated" | "worker.lost" => true,
        _ => false,
    }
}

/// The notifiers `event` goes to: none if it is not worth a human; else
/// its reaction's own `notify` list when it has one; else
/// `notificationRouting.<priority>` when set (`[]`: none); else
/// `defaults.notifiers`.
pub fn route(config: &Config, event: &EventRecord) -> Vec<String> {
    if !worth_notifying(event) {
        return Vec::new();
    }
    let own = event
        .reaction
        .as_deref()
        .and_then(ReactionKey::parse)
        .zip(event.project_id.as_deref())
        .and_then(|(key, project)| policy(config, project, key).notify);
    if let Some(own) = own {
        return own;
    }
    let routing = &config.notification_routing;
    let by_priority = match event.priority {
        Priority::Urgent => &routing.urgent,
        Priority::Action => &routing.action,
        Priority::Warning => &routing.warning,
        Priority::Info => &routing.info,
    };
    by_priority
        .clone()
        .unwrap_or_else(|| config.defaults.notifiers.clone())
}

/// The queue entries for `events` as numbered by the actor's write: one
/// per event and notifier, keyed by both, holding the event.
pub fn enqueue(config: &Config, events: &[EventRecord]) -> Vec<(String, EventRecord)> {
    events
        .iter()
        .flat_map(|event| {
            route(config, event)
                .into_iter()
                .map(move |notifier| (keys::notification(&notifier, event.id), event.clone()))
        })
        .collect()
}

pub use super::{Delivery, Queue};

/// The event that records how the entry of `event` for `notifier` ended
/// (none for a folded one).
pub fn delivery_event(
    notifier: &str,
    event: &EventRecord,
    delivery: &Delivery,
) -> Option<NewEvent> {
    let (kind, priority, message, tries) = match delivery {
        Delivery::Sent { answer, tries } => (
            "notification.sent",
            Priority::Info,
            format!("{notifier} told of {} #{}: {answer}", event.kind, event.id),
            *tries,
        ),
        Delivery::Failed { reason, tries } => (
            "notification.failed",
            Priority::Warning,
            format!(
                "{notifier} could not be told of {} #{} ({tries} tries): {reason}",
                event.kind, event.id
            ),
            *tries,
        ),
        Delivery::Folded => return None,
    };
    let session = event
        .project_id
        .clone()
        .zip(event.session_id.clone())
        .map(|(project, session)| (project, session, event.issue_id.clone()));
    let e = NewEvent {
        kind,
        priority,
        session,
        project: event.project_id.clone(),
        worker: event.worker_id.clone(),
        pr_number: event.pr_number,
        reaction: None,
        message: Some(message),
        data: Some(serde_json::json!({
            "notifier": notifier,
            "eventId": event.id,
            "eventType": event.kind,
            "tries": tries,
        })),
    };
    Some(e)
}

/// What `ao notify test <notifier>` sends: an info event that is not in
/// the log (id 0).
pub fn test_notification(notifier: &str) -> EventRecord {
    EventRecord {
        id: 0,
        timestamp: crate::model::rfc3339(&chrono::Utc::now()),
        kind: "notification.test".into(),
        priority: Priority::Info,
        project_id: None,
        session_id: None,
        issue_id: None,
        worker_id: None,
        pr_number: None,
        reaction: None,
        action: None,
        message: Some(format!(
            "A test notification from ao to `{notifier}`: if you read this, it works."
        )),
        data: None,
    }
}

/// Builds notifier `id` from its settings (`notifiers.<id>`), or says why
/// it cannot.
pub type Build =
    Arc<dyn Fn(&str, &PluginConfig) -> Result<Box<dyn Notifier>, String> + Send + Sync>;

/// How deliveries are paced.
#[derive(Debug, Clone)]
pub struct Pace {
    /// The waits between tries: one more try than waits. A receiver's
    /// `Retry-After` lengthens a wait, never shortens it.
    pub waits: Vec<Duration>,
    /// How long a notifier is not told of the same thing twice.
    pub cooldown: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        Self::from_first_wait(Duration::from_secs(1))
    }
}

impl Pace {
    /// Waits of `first` times 1, 4, 16, 60 and 60: six tries over about
    /// two and a half minutes by default.
    fn from_first_wait(first: Duration) -> Self {
        Self {
            waits: [1, 4, 16, 60, 60].map(|n| first * n).to_vec(),
            cooldown: Duration::from_secs(300),
        }
    }

    /// The default pace, from the first wait of `AO_NOTIFY_RETRY` (e.g.
    /// `100ms`) when set.
    pub fn from_env() -> Self {
        let name = ao_proto::env::AO_NOTIFY_RETRY;
        match std::env::var(name).map(|v| (ao_proto::units::parse_duration(&v), v)) {
            Ok((Ok(first), _)) => Self::from_first_wait(first),
            Ok((Err(e), value)) => {
                tracing::warn!("{name}={value} ignored: {e}");
                Self::default()
            }
            Err(_) => Self::default(),
        }
    }
}

/// When each notifier was last told of each thing.
#[derive(Debug, Default)]
struct Cooldown {
    last: HashMap<(String, String, String), Instant>,
}

impl Cooldown {
    /// Whether `notifier` may be told of `event` at `now`; if so, the
    /// cooldown starts again from `now`.
    fn admit(
        &mut self,
        notifier: &str,
        event: &EventRecord,
        now: Instant,
        cooldown: Duration,
    ) -> bool {
        let about = event
            .session_id
            .clone()
            .or_else(|| event.project_id.clone())
            .or_else(|| event.worker_id.clone())
            .unwrap_or_default();
        let what = event.reaction.clone().unwrap_or_else(|| event.kind.clone());
        let key = (notifier.to_string(), about, what);
        match self.last.get(&key) {
            Some(at) if now.duration_since(*at) < cooldown => false,
            _ => {
                self.last.insert(key, now);
                true
            }
        }
    }
}

/// Delivers the queued notifications the actor publishes.
pub struct Dispatcher;

impl Dispatcher {
    /// Starts the dispatcher on `tasks`; it and its deliveries stop with
    /// `stop`, leaving what they had not delivered queued.
    pub fn start(
        handle: ControllerHandle,
        build: Build,
        pace: Pace,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) {
        tasks.spawn(run(handle, build, pace, tasks.clone(), stop));
    }
}

async fn run(
    handle: ControllerHandle,
    build: Build,
    pace: Pace,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    let mut snapshots = handle.watch();
    let mut started: HashSet<String> = HashSet::new();
    let mut cooldown = Cooldown::default();
    loop {
        let snap = snapshots.borrow_and_update().clone();
        started.retain(|key| snap.notifications.contains_key(key));
        for (key, event) in snap.notifications.iter() {
            let Some((notifier, _)) = parse_key(key) else {
                continue;
            };
            if !started.insert(key.clone()) {
                continue;
            }
            let handle = handle.clone();
            let key = key.clone();
            if !cooldown.admit(notifier, event, Instant::now(), pace.cooldown) {
                tracing::info!(notifier, event = event.id, "within the cooldown: dropped");
                tasks.spawn(record(handle, key, Delivery::Folded, stop.clone()));
                continue;
            }
            let notifier = snap
                .config
                .as_ref()
                .and_then(|c| c.notifiers.get(notifier))
                .ok_or_else(|| format!("no notifier `{notifier}` in the applied config"))
                .and_then(|settings| build(notifier, settings));
            let (event, waits, stop) = (Arc::clone(event), pace.waits.clone(), stop.clone());
            // A trace of its own, tied to the session by its attributes.
            let span = tracing::info_span!(
                parent: None,
                "ao.notify",
                ao.notifier.id = parse_key(&key).map_or("", |(n, _)| n),
                ao.session.id = event.session_id.as_deref().unwrap_or(""),
                ao.event.type = %event.kind,
                ao.event.id = event.id,
            );
            tasks.spawn(tracing::Instrument::instrument(
                async move {
                    let delivery = match notifier {
                        Ok(notifier) => deliver(notifier.as_ref(), &event, &waits, &stop).await,
                        Err(reason) => Some(Delivery::Failed { reason, tries: 0 }),
                    };
                    if let Some(delivery) = delivery {
                        record(handle, key, delivery, stop).await;
                    }
                },
                span,
            ));
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = snapshots.changed() => if changed.is_err() { return },
        }
    }
}

/// Has the actor remove entry `key` and record `delivery`; while the store
/// refuses, asks again (the receiver is not told twice), until `stop`.
async fn record(
    handle: ControllerHandle,
    key: String,
    delivery: Delivery,
    stop: CancellationToken,
) {
    let mut wait = Duration::from_secs(1);
    loop {
        match handle.notified(key.clone(), delivery.clone()).await {
            Ok(()) | Err(crate::error::ControllerError::ShuttingDown) => return,
            Err(e) => tracing::warn!(notification = %key, "cannot record the delivery yet: {e}"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(60));
    }
}

/// Tries `event` with `notifier` until it is taken, refused for good, or
/// the waits run out; `None` if `stop` came first.
async fn deliver(
    notifier: &dyn Notifier,
    event: &EventRecord,
    waits: &[Duration],
    stop: &CancellationToken,
) -> Option<Delivery> {
    let mut tries = 0;
    loop {
        tries += 1;
        let result = tokio::select! {
            () = stop.cancelled() => return None,
            result = notifier.send(event) => result,
        };
        let (reason, after) = match result {
            Ok(answer) => return Some(Delivery::Sent { answer, tries }),
            Err(NotifyError::Fatal(reason)) => return Some(Delivery::Failed { reason, tries }),
            Err(NotifyError::Retry { reason, after }) => (reason, after),
        };
        let Some(wait) = waits.get(tries as usize - 1) else {
            return Some(Delivery::Failed { reason, tries });
        };
        let wait = after.map_or(*wait, |after| after.max(*wait));
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// The notifier and event id of queue key `key`, if it is one.
pub fn parse_key(key: &str) -> Option<(&str, u64)> {
    let (notifier, id) = key.strip_prefix(keys::NOTIFY)?.rsplit_once('/')?;
    Some((notifier, id.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(text: &str) -> Config {
        crate::config::parse_str(text, Path::new("/etc/ao.yaml"), &|_| None).unwrap()
    }

    const NOTIFIERS: &str = "
notifiers:
  pager: {plugin: command, command: 'true'}
  chat: {plugin: command, command: 'true'}
  mail: {plugin: command, command: 'true'}
";

    fn event(
        id: u64,
        kind: &str,
        priority: Priority,
        reaction: Option<(&str, &str)>,
    ) -> EventRecord {
        EventRecord {
            id,
            timestamp: "2026-12-02T00:00:00Z".into(),
            kind: kind.into(),
            priority,
            project_id: Some("app".into()),
            session_id: Some("app-1".into()),
            issue_id: None,
            worker_id: None,
            pr_number: None,
            reaction: reaction.map(|r| r.0.into()),
            action: reaction.map(|r| r.1.into()),
            message: None,
            data: None,
        }
    }

    #[test]
    fn priorities_route_to_their_list_and_an_empty_list_to_none() {
        let c = config(&format!(
            "{NOTIFIERS}defaults: {{notifiers: [mail]}}\nnotificationRouting: {{urgent: [pager], info: []}}\n"
        ));
        let escalated = |p| {
            event(
                1,
                "reaction.escalated",
                p,
                Some(("ci-failed", "send-to-agent")),
            )
        };
        assert_eq!(route(&c, &escalated(Priority::Urgent)), ["pager"]);
        assert!(route(&c, &escalated(Priority::Info)).is_empty());
        // Not routed: the defaults.
        assert_eq!(route(&c, &escalated(Priority::Action)), ["mail"]);
    }

    #[test]
    fn only_events_for_a_human_are_routed() {
        let c = config(&format!("{NOTIFIERS}defaults: {{notifiers: [chat]}}\n"));
        let routed = |e: EventRecord| !route(&c, &e).is_empty();
        assert!(routed(event(
            1,
            "reaction.triggered",
            Priority::Urgent,
            Some(("agent-stuck", "notify"))
        )));
        assert!(!routed(event(
            1,
            "reaction.triggered",
            Priority::Action,
            Some(("ci-failed", "send-to-agent"))
        )));
        assert!(!routed(event(
            1,
            "summary.all_complete",
            Priority::Info,
            None
        )));
        assert!(routed(event(1, "worker.lost", Priority::Urgent, None)));
        assert!(!routed(event(1, "session.stuck", Priority::Urgent, None)));
        assert!(!routed(event(
            1,
            "notification.failed",
            Priority::Warning,
            None
        )));
    }

    #[test]
    fn a_reaction_with_its_own_notifiers_overrides_the_routing() {
        let c = config(&format!(
            "{NOTIFIERS}notificationRouting: {{urgent: [pager]}}\nreactions:\n  agent-stuck: {{notify: [chat]}}\nprojects:\n  app:\n    path: /src/app\n    reactions:\n      agent-exited: {{notify: [mail]}}\n"
        ));
        let stuck = event(
            1,
            "reaction.triggered",
            Priority::Urgent,
            Some(("agent-stuck", "notify")),
        );
        assert_eq!(route(&c, &stuck), ["chat"]);
        let exited = event(
            2,
            "reaction.triggered",
            Priority::Urgent,
            Some(("agent-exited", "notify")),
        );
        assert_eq!(route(&c, &exited), ["mail"]);
        let input = event(
            3,
            "reaction.triggered",
            Priority::Urgent,
            Some(("agent-needs-input", "notify")),
        );
        assert_eq!(route(&c, &input), ["pager"]);
    }

    #[test]
    fn enqueue_keys_one_entry_per_event_and_notifier() {
        let c = config(&format!(
            "{NOTIFIERS}defaults: {{notifiers: [chat, mail]}}\n"
        ));
        let events = [
            event(
                7,
                "reaction.escalated",
                Priority::Urgent,
                Some(("ci-failed", "send-to-agent")),
            ),
            event(8, "session.working", Priority::Info, None),
        ];
        let entries = enqueue(&c, &events);
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [keys::notification("chat", 7), keys::notification("mail", 7)]
        );
        assert_eq!(parse_key(keys[1]), Some(("mail", 7)));
        assert_eq!(entries[0].1, events[0]);
        assert_eq!(parse_key(&keys::session("app-1")), None);
    }

    /// Answers with what it is given, one answer per try, recording the
    /// tries' times on tokio's clock.
    struct Scripted {
        answers: std::sync::Mutex<Vec<Result<String, NotifyError>>>,
        tries: std::sync::Mutex<Vec<Instant>>,
    }

    impl Scripted {
        fn new(mut answers: Vec<Result<String, NotifyError>>) -> Self {
            answers.reverse();
            Self {
                answers: std::sync::Mutex::new(answers),
                tries: std::sync::Mutex::default(),
            }
        }

        /// The waits between its tries.
        fn gaps(&self) -> Vec<Duration> {
            let tries = self.tries.lock().unwrap();
            tries.windows(2).map(|w| w[1] - w[0]).collect()
        }
    }

    #[async_trait::async_trait]
    impl Notifier for Scripted {
        async fn send(&self, _: &EventRecord) -> Result<String, NotifyError> {
            self.tries.lock().unwrap().push(Instant::now());
            self.answers.lock().unwrap().pop().expect("a try too many")
        }
    }

    fn retry(after: Option<u64>) -> Result<String, NotifyError> {
        Err(NotifyError::Retry {
            reason: "HTTP 500".into(),
            after: after.map(Duration::from_secs),
        })
    }

    fn some_event() -> EventRecord {
        event(
            1,
            "reaction.escalated",
            Priority::Urgent,
            Some(("ci-failed", "send-to-agent")),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_receiver_is_retried_with_backoff_honouring_retry_after() {
        let receiver = Scripted::new(vec![retry(None), retry(Some(30)), Ok("ok".into())]);
        let pace = Pace::default();
        let delivery = deliver(
            &receiver,
            &some_event(),
            &pace.waits,
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(
            delivery,
            Some(Delivery::Sent {
                answer: "ok".into(),
                tries: 3
            })
        );
        assert_eq!(
            receiver.gaps(),
            [Duration::from_secs(1), Duration::from_secs(30)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_try_fails_and_a_refusal_is_not_retried() {
        let waits = [Duration::from_secs(1), Duration::from_secs(4)];
        let stop = CancellationToken::new();
        let always = Scripted::new(vec![retry(None), retry(None), retry(None)]);
        assert_eq!(
            deliver(&always, &some_event(), &waits, &stop).await,
            Some(Delivery::Failed {
                reason: "HTTP 500".into(),
                tries: 3
            })
        );
        let refused = Scripted::new(vec![Err(NotifyError::Fatal("HTTP 404".into()))]);
        assert_eq!(
            deliver(&refused, &some_event(), &waits, &stop).await,
            Some(Delivery::Failed {
                reason: "HTTP 404".into(),
                tries: 1
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_leaves_the_entry_undelivered() {
        let receiver = Scripted::new(vec![retry(None)]);
        let stop = CancellationToken::new();
        let (e, waits) = (some_event(), Pace::default().waits);
        let waiting = deliver(&receiver, &e, &waits, &stop);
        let (delivery, ()) = tokio::join!(waiting, async { stop.cancel() });
        assert_eq!(delivery, None);
    }

    #[test]
    fn repeats_within_the_cooldown_are_folded_per_notifier() {
        let mut cooldown = Cooldown::default();
        let five_min = Duration::from_secs(300);
        let start = Instant::now();
        let stuck = event(
            1,
            "reaction.triggered",
            Priority::Urgent,
            Some(("agent-stuck", "notify")),
        );
        let again = EventRecord {
            id: 2,
            ..stuck.clone()
        };
        assert!(cooldown.admit("chat", &stuck, start, five_min));
        assert!(!cooldown.admit("chat", &again, start + Duration::from_secs(299), five_min));
        assert!(cooldown.admit("pager", &again, start + Duration::from_secs(299), five_min));
        let other = EventRecord {
            session_id: Some("app-2".into()),
            ..again.clone()
        };
        assert!(cooldown.admit("chat", &other, start + Duration::from_secs(1), five_min));
        assert!(cooldown.admit("chat", &again, start + five_min, five_min));
    }

    #[test]
    fn outcomes_are_recorded_naming_the_notifier_and_folds_are_not() {
        let e = some_event();
        let failed = Delivery::Failed {
            reason: "HTTP 500".into(),
            tries: 6,
        };
        let recorded = delivery_event("pager", &e, &failed).unwrap();
        assert_eq!(
            (recorded.kind, recorded.priority),
            ("notification.failed", Priority::Warning)
        );
        assert_eq!(recorded.session, Some(("app".into(), "app-1".into(), None)));
        assert!(recorded
            .message
            .unwrap()
            .starts_with("pager could not be told of reaction.escalated #1"));
        assert_eq!(recorded.data.unwrap()["notifier"], "pager");
        let sent = Delivery::Sent {
            answer: "ok".into(),
            tries: 1,
        };
        assert_eq!(
            delivery_event("pager", &e, &sent).unwrap().kind,
            "notification.sent"
        );
        assert_eq!(delivery_event("pager", &e, &Delivery::Folded), None);
    }
}
