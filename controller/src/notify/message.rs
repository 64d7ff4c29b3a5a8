//! What a notification says, in each receiver's shape: Slack's `text`,
//! Discord's `content` + `embeds`, PagerDuty Events v2, and the event JSON
//! itself. Pure functions of the event, so each shape is tested field by field.

use serde_json::{json, Map, Value};

use super::Notification;
use crate::model::Priority;

/// Which events clear a condition an earlier event raised: an event of the
/// first kind resolves the PagerDuty incidents of the session keyed by the
/// listed conditions (see [`condition`]). The one place this is decided.
const RESOLVES: &[(&str, &[&str])] = &[
    ("ci.passing", &["ci-failed"]),
    ("session.working", &["agent-stuck", "agent-needs-input"]),
    ("review.approved", &["changes-requested"]),
    (
        "pr.merged",
        &["ci-failed", "changes-requested", "merge-conflicts"],
    ),
];

/// The condition an event raises, as the reaction that answers it:
/// an event's own `reaction` when it names one, else the reaction its type
/// triggers, else the type itself. A session's incidents are keyed by it.
const CONDITIONS: &[(&str, &str)] = &[
    ("ci.failed", "ci-failed"),
    ("review.changes_requested", "changes-requested"),
    ("merge.conflicts", "merge-conflicts"),
    ("session.stuck", "agent-stuck"),
    ("session.needs_input", "agent-needs-input"),
    ("session.exited", "agent-exited"),
    ("pr.closed", "pr-closed"),
];

/// The conditions (reaction names) an event of `kind` clears, if any:
/// `ci.passing` clears `ci-failed`, `session.working` clears `agent-stuck`
/// and `agent-needs-input`, `review.approved` clears `changes-requested`,
/// `pr.merged` clears `ci-failed`, `changes-requested` and `merge-conflicts`.
/// The dispatcher may use it to send these events to the notifiers that
/// were told of the condition, whatever their priority.
pub fn resolves(kind: &str) -> &'static [&'static str] {
    RESOLVES
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(&[], |(_, conditions)| conditions)
}

/// The condition `n` raises: its reaction, the reaction of its type, or its type.
pub fn condition(n: &Notification) -> &str {
    if let Some(reaction) = n.reaction.as_deref() {
        return reaction;
    }
    CONDITIONS
        .iter()
        .find(|(kind, _)| *kind == n.kind)
        .map_or(n.kind.as_str(), |(_, condition)| condition)
}

/// What an incident of `n` is keyed by: `<session>:<condition>`, or the
/// project (else `ao`) for an event without a session.
pub fn dedup_key(n: &Notification, condition: &str) -> String {
    let subject = n
        .session_id
        .as_deref()
        .or(n.project_id.as_deref())
        .unwrap_or("ao");
    format!("{subject}:{condition}")
}

/// Discord embed colours: red (the original docs' example), orange, yellow, blue.
pub(super) fn colour(p: Priority) -> u32 {
    match p {
        Priority::Urgent => 15_158_332,
        Priority::Action => 15_105_570,
        Priority::Warning => 16_776_960,
        Priority::Info => 3_447_003,
    }
}

/// PagerDuty's severities for ao's priorities.
fn severity(p: Priority) -> &'static str {
    match p {
        Priority::Urgent => "critical",
        Priority::Action => "error",
        Priority::Warning => "warning",
        Priority::Info => "info",
    }
}

/// What happened, in a word or two: `stuck` for `session.stuck`,
/// `ci-failed escalated` for a `reaction.escalated` of `ci-failed`.
fn status(n: &Notification) -> String {
    let last = n
        .kind
        .rsplit('.')
        .next()
        .unwrap_or(&n.kind)
        .replace('_', " ");
    match n.reaction.as_deref() {
        Some(reaction) if n.kind.starts_with("reaction.") => format!("{reaction} {last}"),
        _ => last,
    }
}

/// The issue as people write it: `#123` for a number, else as is (`INT-1234`).
fn issue(n: &Notification) -> Option<String> {
    let id = n.issue_id.as_deref()?;
    Some(if id.chars().all(|c| c.is_ascii_digit()) {
        format!("#{id}")
    } else {
        id.to_owned()
    })
}

/// One line: `Agent fe-1 stuck on issue #123`; an email's subject, a
/// page's summary, Discord's `content`.
pub fn headline(n: &Notification) -> String {
    let mut line = match (&n.session_id, &n.project_id) {
        (Some(session), _) => format!("Agent {session} {}", status(n)),
        (None, Some(project)) => format!("{project}: {}", status(n)),
        (None, None) => format!("ao: {}", status(n)),
    };
    if let Some(issue) = issue(n) {
        line.push_str(" on issue ");
        line.push_str(&issue);
    }
    line
}

/// The session's PR link when the event carries one (`data.prUrl`).
fn pr_url(n: &Notification) -> Option<&str> {
    n.data.as_ref()?.get("prUrl")?.as_str()
}

/// Slack's mrkdwn reserves `&`, `<` and `>`.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Session, project, issue, PR, priority and event type, as `Label: value`;
/// `escape` quotes the values, `pr` writes the PR from its number and link.
fn facts(
    n: &Notification,
    escape: impl Fn(&str) -> String,
    pr: impl Fn(Option<u32>, Option<&str>) -> Option<String>,
) -> Vec<String> {
    let escaped = |value: Option<String>| value.map(|v| escape(&v));
    [
        ("Session", escaped(n.session_id.clone())),
        ("Project", escaped(n.project_id.clone())),
        ("Issue", escaped(issue(n))),
        ("PR", pr(n.pr_number, pr_url(n))),
        ("Priority", Some(n.priority.as_str().to_owned())),
        ("Event", escaped(Some(n.kind.clone()))),
    ]
    .into_iter()
    .filter_map(|(label, value)| Some(format!("{label}: {}", value?)))
    .collect()
}

/// A readable Slack message: the headline, what happened, then session,
/// project, issue, PR and priority.
pub(super) fn slack_text(n: &Notification) -> String {
    let mut text = format!("*{}*", slack_escape(&headline(n)));
    if let Some(message) = &n.message {
        text.push('\n');
        text.push_str(&slack_escape(message));
    }
    let facts = facts(n, slack_escape, |number, url| match (number, url) {
        (Some(number), Some(url)) => Some(format!("<{url}|#{number}>")),
        (Some(number), None) => Some(format!("#{number}")),
        (None, Some(url)) => Some(format!("<{url}>")),
        (None, None) => None,
    });
    text.push('\n');
    text.push_str(&facts.join(" · "));
    text
}

/// The same in plain text, one fact a line: an email's body.
pub(super) fn plain_text(n: &Notification) -> String {
    let mut text = headline(n);
    text.push_str("\n\n");
    if let Some(message) = &n.message {
        text.push_str(message);
        text.push_str("\n\n");
    }
    let facts = facts(n, str::to_owned, |number, url| match (number, url) {
        (Some(number), Some(url)) => Some(format!("#{number} {url}")),
        (Some(number), None) => Some(format!("#{number}")),
        (None, url) => url.map(str::to_owned),
    });
    for fact in facts {
        text.push_str(&fact);
        text.push('\n');
    }
    text
}

/// A Slack incoming-webhook body; `channel` overrides the hook's own.
pub(super) fn slack_body(n: &Notification, channel: Option<&str>) -> Value {
    let mut body = json!({ "text": slack_text(n) });
    if let Some(channel) = channel {
        body["channel"] = json!(channel);
    }
    body
}

/// Discord's `content` and one embed titled `Session <id>` with fields
/// Project, Issue and Status, coloured by priority.
fn discord_fields(n: &Notification) -> Map<String, Value> {
    let field = |name: &str, value: Option<String>| json!({"name": name, "value": value.unwrap_or_else(|| "-".into()), "inline": true});
    let title = match &n.session_id {
        Some(session) => format!("Session {session}"),
        None => "Agent Orchestrator".to_owned(),
    };
    let embed = json!({
        "title": title,
        "description": n.message.clone().unwrap_or_else(|| n.kind.clone()),
        "color": colour(n.priority),
        "fields": [
            field("Project", n.project_id.clone()),
            field("Issue", issue(n)),
            field("Status", Some(status(n))),
        ],
    });
    let mut fields = Map::new();
    fields.insert("content".into(), json!(headline(n)));
    fields.insert("embeds".into(), json!([embed]));
    fields
}

/// A Discord webhook body.
pub(super) fn discord_body(n: &Notification) -> Value {
    Value::Object(discord_fields(n))
}

/// The event as JSON, as `ao events --json` shows it.
pub(super) fn event_body(n: &Notification) -> Value {
    serde_json::to_value(n).expect("an event record is JSON")
}

/// A generic webhook's body: the event, plus Slack's `text` and Discord's
/// `content` + `embeds`, so a Slack or Discord URL accepts it as it is.
pub(super) fn combined_body(n: &Notification) -> Value {
    let mut body = event_body(n);
    let object = body.as_object_mut().expect("an event record is an object");
    object.insert("text".into(), json!(slack_text(n)));
    object.extend(discord_fields(n));
    body
}

/// PagerDuty Events v2 bodies for `n`: a `resolve` per condition it clears
/// for its session, else one `trigger` keyed by its condition.
pub(super) fn pagerduty_bodies(n: &Notification, routing_key: &str) -> Vec<Value> {
    let cleared = resolves(&n.kind);
    if !cleared.is_empty() && n.session_id.is_some() {
        return cleared
            .iter()
            .map(|condition| {
                json!({
                    "routing_key": routing_key,
                    "event_action": "resolve",
                    "dedup_key": dedup_key(n, condition),
                })
            })
            .collect();
    }
    // PagerDuty cuts summaries at 1024 characters; cut on a char boundary.
    let summary: String = headline(n).chars().take(1024).collect();
    let source = match &n.project_id {
        Some(project) => format!("ao/{project}"),
        None => "ao".to_owned(),
    };
    let mut payload = json!({
        "summary": summary,
        "severity": severity(n.priority),
        "source": source,
        "class": n.kind,
        "custom_details": event_body(n),
    });
    if let Some(session) = &n.session_id {
        payload["component"] = json!(session);
    }
    if let Some(project) = &n.project_id {
        payload["group"] = json!(project);
    }
    vec![json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key(n, condition(n)),
        "payload": payload,
        "client": "Agent Orchestrator",
    })]
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The original docs' Discord example as an event.
    pub(crate) fn stuck() -> Notification {
        Notification {
            id: 7,
            timestamp: "2026-12-02T10:00:00.000Z".into(),
            kind: "session.stuck".into(),
            priority: Priority::Urgent,
            project_id: Some("frontend".into()),
            session_id: Some("fe-1".into()),
            issue_id: Some("123".into()),
            worker_id: None,
            pr_number: Some(45),
            reaction: None,
            action: None,
            message: Some("Agent has been inactive for 10 minutes".into()),
            data: Some(json!({"prUrl": "https://github.com/o/r/pull/45"})),
        }
    }

    #[test]
    fn slack_text_says_who_where_and_what() {
        let body = slack_body(&stuck(), Some("#agent-updates"));
        assert_eq!(body["channel"], "#agent-updates");
        assert_eq!(
            body["text"],
            "*Agent fe-1 stuck on issue #123*\nAgent has been inactive for 10 minutes\n\
             Session: fe-1 · Project: frontend · Issue: #123 · \
             PR: <https://github.com/o/r/pull/45|#45> · Priority: urgent · Event: session.stuck"
        );
        let mut plain = stuck();
        plain.data = None;
        plain.message = Some("a <b> & c".into());
        let body = slack_body(&plain, None);
        assert!(body.get("channel").is_none());
        let text = body["text"].as_str().unwrap();
        assert!(text.contains("a &lt;b&gt; &amp; c"), "{text}");
        assert!(text.contains("PR: #45 ·"), "{text}");
    }

    #[test]
    fn plain_text_has_one_fact_a_line() {
        assert_eq!(
            plain_text(&stuck()),
            "Agent fe-1 stuck on issue #123\n\nAgent has been inactive for 10 minutes\n\n\
             Session: fe-1\nProject: frontend\nIssue: #123\n\
             PR: #45 https://github.com/o/r/pull/45\nPriority: urgent\nEvent: session.stuck\n"
        );
    }

    #[test]
    fn discord_body_is_the_original_docs_example() {
        assert_eq!(
            discord_body(&stuck()),
            json!({
                "content": "Agent fe-1 stuck on issue #123",
                "embeds": [{
                    "title": "Session fe-1",
                    "description": "Agent has been inactive for 10 minutes",
                    "color": 15158332,
                    "fields": [
                        {"name": "Project", "value": "frontend", "inline": true},
                        {"name": "Issue", "value": "#123", "inline": true},
                        {"name": "Status", "value": "stuck", "inline": true},
                    ],
                }],
            })
        );
    }

    #[test]
    fn discord_colour_follows_priority() {
        let mut n = stuck();
        let mut seen = Vec::new();
        for p in [
            Priority::Urgent,
            Priority::Action,
            Priority::Warning,
            Priority::Info,
        ] {
            n.priority = p;
            let colour = discord_body(&n)["embeds"][0]["color"].as_u64().unwrap();
            assert!(!seen.contains(&colour), "{p:?} shares a colour");
            seen.push(colour);
        }
        assert_eq!(seen, [15158332, 15105570, 16776960, 3447003]);
    }

    #[test]
    fn combined_body_is_the_event_plus_slack_and_discord_fields() {
        let n = stuck();
        let body = combined_body(&n);
        let event = event_body(&n);
        for (key, value) in event.as_object().unwrap() {
            assert_eq!(&body[key], value, "{key}");
        }
        assert_eq!(body["type"], "session.stuck");
        assert_eq!(body["text"], slack_text(&n));
        assert_eq!(body["content"], discord_body(&n)["content"]);
        assert_eq!(body["embeds"], discord_body(&n)["embeds"]);
    }

    #[test]
    fn a_reaction_event_reads_as_the_reaction() {
        let mut n = stuck();
        n.kind = "reaction.escalated".into();
        n.reaction = Some("ci-failed".into());
        n.issue_id = Some("INT-12".into());
        assert_eq!(
            headline(&n),
            "Agent fe-1 ci-failed escalated on issue INT-12"
        );
        n.session_id = None;
        n.issue_id = None;
        assert_eq!(headline(&n), "frontend: ci-failed escalated");
        let body = discord_body(&n);
        assert_eq!(body["embeds"][0]["title"], "Agent Orchestrator");
        assert_eq!(body["embeds"][0]["fields"][1]["value"], "-");
    }

    #[test]
    fn pagerduty_trigger_has_every_required_field() {
        let bodies = pagerduty_bodies(&stuck(), "R0UT1NG");
        assert_eq!(bodies.len(), 1);
        let body = &bodies[0];
        assert_eq!(body["routing_key"], "R0UT1NG");
        assert_eq!(body["event_action"], "trigger");
        assert_eq!(body["dedup_key"], "fe-1:agent-stuck");
        assert_eq!(body["payload"]["summary"], "Agent fe-1 stuck on issue #123");
        assert_eq!(body["payload"]["severity"], "critical");
        assert_eq!(body["payload"]["source"], "ao/frontend");
        assert_eq!(body["payload"]["component"], "fe-1");
        assert_eq!(body["payload"]["custom_details"]["id"], 7);

        let mut n = stuck();
        n.kind = "reaction.escalated".into();
        n.reaction = Some("ci-failed".into());
        n.priority = Priority::Warning;
        let body = &pagerduty_bodies(&n, "k")[0];
        assert_eq!(body["dedup_key"], "fe-1:ci-failed");
        assert_eq!(body["payload"]["severity"], "warning");
    }

    #[test]
    fn a_clearing_event_resolves_with_the_triggers_dedup_key() {
        let mut failed = stuck();
        failed.kind = "ci.failed".into();
        let trigger = &pagerduty_bodies(&failed, "k")[0];
        let mut passing = stuck();
        passing.kind = "ci.passing".into();
        let resolve = pagerduty_bodies(&passing, "k");
        assert_eq!(
            resolve,
            [
                json!({"routing_key": "k", "event_action": "resolve", "dedup_key": trigger["dedup_key"]})
            ]
        );

        let mut working = stuck();
        working.kind = "session.working".into();
        let keys: Vec<_> = pagerduty_bodies(&working, "k")
            .iter()
            .map(|b| b["dedup_key"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(keys, ["fe-1:agent-stuck", "fe-1:agent-needs-input"]);
        assert!(keys.contains(
            &pagerduty_bodies(&stuck(), "k")[0]["dedup_key"]
                .as_str()
                .unwrap()
                .to_owned()
        ));
        assert!(resolves("session.spawned").is_empty());
    }
}
