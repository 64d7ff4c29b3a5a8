//! Which notifiers hear of an event, and the durable queue between the
//! event log and them.
//!
//! Only the events that need a human are routed: `reaction.triggered`
//! whose action is `notify`, `reaction.escalated`, `summary.*` and
//! `worker.lost`. The session events those reactions answer
//! (`session.stuck`, `session.needs_input`, `session.exited`) are not
//! routed themselves: their reactions (`agent-stuck`, …) notify, once.
//! `notification.*` events are never routed.
//!
//! The sessions actor writes one queue entry per notifier in the same
//! transaction as the event ([`enqueue`]), so that an accepted
//! notification outlives a crash; the [`Dispatcher`] delivers and removes
//! them.

use crate::config::{Config, ReactionAction, ReactionKey};
use crate::keys;
use crate::model::{EventRecord, Priority};
use crate::reactions::policy;
use crate::store::encode;

/// Whether `event` is one a human is told of.
fn worth_notifying(event: &EventRecord) -> bool {
    match event.kind.as_str() {
        "reaction.triggered" => event.action.as_deref() == Some(ReactionAction::Notify.as_str()),
        "reaction.escalated" | "worker.lost" => true,
        kind => kind.starts_with("summary."),
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
pub fn enqueue(config: &Config, events: &[EventRecord]) -> Vec<(String, Vec<u8>)> {
    events
        .iter()
        .flat_map(|event| {
            route(config, event)
                .into_iter()
                .map(move |notifier| (keys::notification(&notifier, event.id), encode(event)))
        })
        .collect()
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
        assert!(routed(event(
            1,
            "summary.all_complete",
            Priority::Info,
            None
        )));
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
        let stored: EventRecord = serde_json::from_slice(&entries[0].1).unwrap();
        assert_eq!(stored, events[0]);
        assert_eq!(parse_key(&keys::session("app-1")), None);
    }
}
