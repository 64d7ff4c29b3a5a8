//! Deliveries to a local receiver that answers as the real services do.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use super::*;
use crate::config::PluginConfig;
use crate::notify::build;
use crate::notify::message::slack_text;
use crate::notify::message::tests::stuck;

/// One request as received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Value,
}

/// A status, its headers and its body.
type Answer = (StatusCode, Vec<(&'static str, &'static str)>, &'static str);

/// A receiver that answers each request with the next of `answers`
/// (the last one again when they run out) and keeps what it received.
#[derive(Clone)]
struct Receiver {
    answers: Arc<Mutex<Vec<Answer>>>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(answers: Vec<Answer>) -> (Self, String) {
        let receiver = Receiver {
            answers: Arc::new(Mutex::new(answers)),
            received: Arc::default(),
        };
        let app = Router::new()
            .route("/{*path}", post(answer).put(answer))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, base)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

async fn answer(
    State(receiver): State<Receiver>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    receiver.received.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        headers,
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
    });
    let mut answers = receiver.answers.lock().unwrap();
    let (status, headers, text) = if answers.len() > 1 {
        answers.remove(0)
    } else {
        answers[0].clone()
    };
    let mut response = (status, text).into_response();
    for (name, value) in headers {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    response
}

fn notifier(plugin: &str, settings: Value) -> Box<dyn Notifier> {
    build(
        "n",
        &PluginConfig {
            plugin: plugin.into(),
            settings: serde_json::from_value(settings).unwrap(),
        },
    )
    .unwrap()
}

const OK: Answer = (StatusCode::OK, Vec::new(), "ok");

#[tokio::test]
async fn slack_receives_text_and_channel() {
    let (receiver, base) = Receiver::start(vec![OK]).await;
    let slack = notifier(
        "slack",
        json!({"webhook": format!("{base}/services/T0/B0/XYZSECRET"), "channel": "#agent-updates"}),
    );
    let answer = slack.send(&stuck()).await.unwrap();
    assert_eq!(answer, format!("{base} answered 200 OK: ok"));
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/services/T0/B0/XYZSECRET");
    assert_eq!(got[0].headers["content-type"], "application/json");
    assert_eq!(
        got[0].body,
        json!({"text": slack_text(&stuck()), "channel": "#agent-updates"})
    );
}

/// The original docs' Discord block, as written.
#[tokio::test]
async fn a_webhook_sends_the_event_with_slack_and_discord_fields_and_its_headers() {
    let (receiver, base) = Receiver::start(vec![(StatusCode::NO_CONTENT, Vec::new(), "")]).await;
    let discord = notifier(
        "webhook",
        json!({"url": format!("{base}/api/webhooks/1/TOKEN"), "method": "POST",
               "headers": {"Content-Type": "application/json", "X-Extra": "yes"}}),
    );
    assert_eq!(
        discord.send(&stuck()).await.unwrap(),
        format!("{base} answered 204 No Content")
    );
    let got = &receiver.received()[0];
    assert_eq!(got.headers["x-extra"], "yes");
    assert_eq!(got.headers.get_all("content-type").iter().count(), 1);
    assert_eq!(got.body, combined_body(&stuck()));
    assert_eq!(got.body["embeds"][0]["title"], "Session fe-1");
    assert_eq!(got.body["sessionId"], "fe-1");
}

#[tokio::test]
async fn statuses_decide_retry_or_fatal() {
    let (_receiver, base) = Receiver::start(vec![
        (StatusCode::INTERNAL_SERVER_ERROR, Vec::new(), "boom"),
        (
            StatusCode::TOO_MANY_REQUESTS,
            vec![("retry-after", "7")],
            "rate_limited",
        ),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            vec![("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")],
            "",
        ),
        (StatusCode::BAD_REQUEST, Vec::new(), "invalid_payload"),
    ])
    .await;
    let hook = notifier(
        "webhook",
        json!({"url": format!("{base}/hook"), "format": "json"}),
    );
    let n = stuck();
    assert_eq!(
        hook.send(&n).await,
        Err(NotifyError::Retry {
            reason: format!("{base} answered 500 Internal Server Error: boom"),
            after: None
        })
    );
    assert_eq!(
        hook.send(&n).await,
        Err(NotifyError::Retry {
            reason: format!("{base} answered 429 Too Many Requests: rate_limited"),
            after: Some(Duration::from_secs(7))
        })
    );
    // A date in the past: no need to wait.
    assert_eq!(
        hook.send(&n).await,
        Err(NotifyError::Retry {
            reason: format!("{base} answered 503 Service Unavailable"),
            after: Some(Duration::ZERO)
        })
    );
    assert_eq!(
        hook.send(&n).await,
        Err(NotifyError::Fatal(format!(
            "{base} answered 400 Bad Request: invalid_payload"
        )))
    );
}

#[tokio::test]
async fn an_unreachable_receiver_is_retried_without_the_secret() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let slack = notifier(
        "slack",
        json!({"webhook": format!("http://{addr}/services/T0/B0/XYZSECRET")}),
    );
    let Err(NotifyError::Retry { reason, after }) = slack.send(&stuck()).await else {
        panic!("expected a retry");
    };
    assert_eq!(after, None);
    assert!(
        reason.starts_with(&format!("http://{addr} cannot be reached: cannot connect")),
        "{reason}"
    );
    assert!(!reason.contains("XYZSECRET"), "{reason}");
}

/// A receiver that takes the connection and never answers: after the
/// 10 s deadline (on tokio's paused clock), a retry.
#[tokio::test(start_paused = true)]
async fn a_receiver_that_never_answers_times_out_into_a_retry() {
    // The kernel completes the handshake; nobody ever reads or answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let hook = notifier("webhook", json!({"url": format!("http://{addr}/hook")}));
    let Err(NotifyError::Retry { reason, after }) = hook.send(&stuck()).await else {
        panic!("expected a retry");
    };
    assert_eq!(after, None);
    assert!(
        reason.starts_with(&format!("http://{addr} cannot be reached: timed out")),
        "{reason}"
    );
    drop(silent);
}

#[tokio::test]
async fn an_answer_quoting_a_secret_is_redacted() {
    let (_receiver, base) = Receiver::start(vec![(
        StatusCode::BAD_REQUEST,
        Vec::new(),
        "{\"status\":\"invalid event\",\"routing_key\":\"PDKEY123\"}",
    )])
    .await;
    let pd = notifier(
        "pagerduty",
        json!({"routingKey": "PDKEY123", "url": format!("{base}/v2/enqueue")}),
    );
    let Err(NotifyError::Fatal(reason)) = pd.send(&stuck()).await else {
        panic!("expected a fatal error");
    };
    assert!(!reason.contains("PDKEY123"), "{reason}");
    assert!(reason.contains("[redacted]"), "{reason}");
}

/// PagerDuty Events v2: a trigger, then a resolve with the same dedup key.
#[tokio::test]
async fn pagerduty_triggers_then_resolves() {
    let (receiver, base) = Receiver::start(vec![(
        StatusCode::ACCEPTED,
        Vec::new(),
        "{\"status\":\"success\",\"message\":\"Event processed\"}",
    )])
    .await;
    // The original docs' block, with the local receiver for the URL and
    // `format` saying what its host would have.
    let pd = notifier(
        "webhook",
        json!({"url": format!("{base}/v2/enqueue"), "method": "POST", "format": "pagerduty",
               "headers": {"Authorization": "Token token=PDKEY123", "Content-Type": "application/json"}}),
    );
    let mut failed = stuck();
    failed.kind = "ci.failed".into();
    failed.priority = crate::model::Priority::Action;
    let answer = pd.send(&failed).await.unwrap();
    assert!(
        answer.starts_with(&format!("{base} answered 202 Accepted")),
        "{answer}"
    );
    let mut passing = failed.clone();
    passing.kind = "ci.passing".into();
    pd.send(&passing).await.unwrap();

    let got = receiver.received();
    assert_eq!(got.len(), 2);
    let (trigger, resolve) = (&got[0].body, &got[1].body);
    assert_eq!(trigger["routing_key"], "PDKEY123");
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["dedup_key"], "fe-1:ci-failed");
    assert_eq!(trigger["payload"]["severity"], "error");
    assert_eq!(trigger["payload"]["source"], "ao/frontend");
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(resolve["routing_key"], "PDKEY123");
    assert_eq!(resolve["dedup_key"], trigger["dedup_key"]);
}

/// The original docs' Slack block, as written.
const DOCS_SLACK: &str = r##"notifiers:
  slack:
    plugin: slack
    webhook: ${SLACK_WEBHOOK_URL}
    channel: "#agent-updates"

notificationRouting:
  urgent: [slack]
  action: [slack]
  warning: [slack]
  info: [slack]
"##;

/// The original docs' Discord block, as written.
const DOCS_DISCORD: &str = r##"notifiers:
  discord:
    plugin: webhook
    url: ${DISCORD_WEBHOOK_URL}
    method: POST
    headers:
      Content-Type: "application/json"
"##;

/// The original docs' PagerDuty block, as written, with the `slack` its
/// routing names added under `notifiers`.
const DOCS_PAGERDUTY: &str = r##"notifiers:
  slack: {plugin: slack, webhook: "${SLACK_WEBHOOK_URL}"}
  pagerduty:
    plugin: webhook
    url: https://events.pagerduty.com/v2/enqueue
    method: POST
    headers:
      Authorization: "Token token=${PAGERDUTY_TOKEN}"
      Content-Type: "application/json"

notificationRouting:
  urgent: [pagerduty]  # Only page for urgent issues
  action: [slack]
  warning: [slack]
  info: []
"##;

#[tokio::test]
async fn the_original_docs_blocks_load_unchanged_and_deliver() {
    let (receiver, base) = Receiver::start(vec![OK]).await;
    let env = |name: &str| match name {
        "SLACK_WEBHOOK_URL" => Some(format!("{base}/services/T0/B0/X")),
        "DISCORD_WEBHOOK_URL" => Some(format!("{base}/api/webhooks/1/Y")),
        "PAGERDUTY_TOKEN" => Some("PDKEY123".to_owned()),
        _ => None,
    };
    let load = |text: &str| {
        crate::config::parse_str(text, std::path::Path::new("/etc/ao.yaml"), &env).unwrap()
    };
    let slack = load(DOCS_SLACK);
    let discord = load(DOCS_DISCORD);
    for (config, id) in [(&slack, "slack"), (&discord, "discord")] {
        build(id, &config.notifiers[id])
            .unwrap()
            .send(&stuck())
            .await
            .unwrap();
    }
    let got = receiver.received();
    assert_eq!(got[0].path, "/services/T0/B0/X");
    assert_eq!(got[0].body["channel"], "#agent-updates");
    assert_eq!(got[0].body["text"], slack_text(&stuck()));
    assert_eq!(got[1].path, "/api/webhooks/1/Y");
    assert_eq!(got[1].body["embeds"][0]["title"], "Session fe-1");
    assert_eq!(got[1].body["content"], "Agent fe-1 stuck on issue #123");

    // Its URL is PagerDuty's own, which a test cannot reach: it loads and
    // builds; the Events v2 bodies it sends are checked above.
    let pagerduty = load(DOCS_PAGERDUTY);
    assert_eq!(
        pagerduty.notification_routing.info,
        Some(vec![]),
        "info: [] sends nothing"
    );
    build("pagerduty", &pagerduty.notifiers["pagerduty"]).unwrap();
}
