use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::model::{Activity, SessionRecord};

fn event(kind: &str, extra: serde_json::Value) -> EventRecord {
    let mut e = json!({
        "id": 1, "timestamp": "2026-01-01T00:00:00.000Z", "type": kind, "priority": "info",
        "projectId": "app", "sessionId": "s-1",
    });
    e.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    serde_json::from_value(e).unwrap()
}

/// The value of the sample line that starts with `series ` in `text`.
fn sample(text: &str, series: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(str::to_string)
}

#[tokio::test(start_paused = true)]
async fn committed_events_count_and_a_placement_is_timed_from_spawning_to_running() {
    let metrics = Metrics::new(None);
    let spawning = SessionRecord::example("s-1", None, SessionStatus::Spawning);
    metrics.committed([(None, &spawning)], &[event("session.spawned", json!({}))]);
    tokio::time::advance(Duration::from_secs(3)).await;
    let mut running = SessionRecord::example("s-1", Some("w1"), SessionStatus::Working);
    running.activity = Some(Activity::Active);
    metrics.committed(
        [(Some(&spawning), &running)],
        &[
            event("reaction.triggered", json!({"reaction": "ci-failed"})),
            event("reaction.escalated", json!({"reaction": "ci-failed"})),
            event(
                "notification.failed",
                json!({"data": {"notifier": "slack"}}),
            ),
            event("session.working", json!({})),
        ],
    );
    // Working again later is no second placement.
    metrics.committed([(Some(&running), &running)], &[]);

    let mut snap = Snapshot::default();
    snap.sessions.insert_mut("s-1".into(), Arc::new(running));
    let usage = [ApiUsage {
        api_url: "https://api.github.com".into(),
        resource: "core",
        requests: 7,
        remaining: Some(4993),
    }];
    let text = metrics.render(&snap, &usage);
    let at = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series} in {text}"));
    assert_eq!(
        at(r#"ao_sessions{project="app",status="working",activity="active"}"#),
        "1"
    );
    assert_eq!(at(r#"ao_spawns_total{project="app"}"#), "1");
    assert_eq!(
        at(r#"ao_reactions_triggered_total{reaction="ci-failed"}"#),
        "1"
    );
    assert_eq!(
        at(r#"ao_reactions_escalated_total{reaction="ci-failed"}"#),
        "1"
    );
    assert_eq!(
        at(r#"ao_notifications_failed_total{notifier="slack"}"#),
        "1"
    );
    assert_eq!(at("ao_placement_seconds_count"), "1");
    assert_eq!(at("ao_placement_seconds_sum"), "3.0");
    assert_eq!(
        at(r#"ao_github_requests_total{api="https://api.github.com",resource="core"}"#),
        "7"
    );
    assert_eq!(
        at(r#"ao_github_rate_remaining{api="https://api.github.com",resource="core"}"#),
        "4993"
    );
    assert_eq!(at("ao_controller_leader"), "1");
    assert_eq!(at("ao_attach_viewers"), "0");
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn a_viewer_is_counted_while_its_guard_lives() {
    let metrics = Metrics::new(None);
    let viewer = metrics.viewer();
    let shown = |m: &Metrics| sample(&m.render(&Snapshot::default(), &[]), "ao_attach_viewers");
    assert_eq!(shown(&metrics).as_deref(), Some("1"));
    drop(viewer);
    assert_eq!(shown(&metrics).as_deref(), Some("0"));
}
