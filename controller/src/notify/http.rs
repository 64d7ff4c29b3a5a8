//! Notifiers that POST JSON: Slack and Discord webhooks, PagerDuty Events
//! v2, any other webhook. What the receiver's answer means for a retry is
//! decided here, once.

use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, Response, StatusCode, Url};
use serde_json::Value;

use super::message::{combined_body, discord_body, event_body, pagerduty_bodies, slack_body};
use super::{Notification, Notifier, NotifyError};

/// How long a delivery may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a receiver's answer is quoted.
const ANSWER_CHARS: usize = 200;

/// The body a webhook receives.
#[derive(Clone, PartialEq, Eq)]
pub(super) enum Format {
    /// The event as JSON.
    Json,
    /// The event plus Slack's `text` and Discord's `content` + `embeds`.
    Combined,
    Slack {
        channel: Option<String>,
    },
    Discord,
    PagerDuty {
        routing_key: String,
    },
}

/// Where and how one notifier posts.
pub(super) struct HttpTarget {
    pub url: Url,
    pub method: Method,
    pub headers: HeaderMap,
    pub format: Format,
}

/// A notifier that posts JSON to one URL.
pub(super) struct HttpNotifier {
    client: reqwest::Client,
    target: HttpTarget,
    /// `scheme://host[:port]`: the only part of the URL errors name, the
    /// path of a webhook URL being its secret.
    origin: String,
    /// What must never be quoted from an answer or an error.
    secrets: Vec<String>,
}

impl HttpNotifier {
    /// # Errors
    /// When the HTTP client cannot be set up (no certificate store).
    pub(super) fn new(target: HttpTarget) -> Result<Self, String> {
        // reqwest is built without a crypto provider so that only ring is
        // linked; one must be installed before the first client. Another
        // part of ao may have done it already, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .user_agent(concat!("ao/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(TIMEOUT)
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {}", chain(&e)))?;
        let origin = target.url.origin().ascii_serialization();
        let mut secrets: Vec<String> = target
            .headers
            .values()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        secrets.extend(target.url.query().map(str::to_owned));
        if target.url.path().len() > 1 {
            secrets.push(target.url.path().to_owned());
        }
        if let Format::PagerDuty { routing_key } = &target.format {
            secrets.push(routing_key.clone());
        }
        secrets.retain(|s| s.len() >= 4);
        Ok(Self {
            client,
            target,
            origin,
            secrets,
        })
    }

    fn bodies(&self, n: &Notification) -> Vec<Value> {
        match &self.target.format {
            Format::Json => vec![event_body(n)],
            Format::Combined => vec![combined_body(n)],
            Format::Slack { channel } => vec![slack_body(n, channel.as_deref())],
            Format::Discord => vec![discord_body(n)],
            Format::PagerDuty { routing_key } => pagerduty_bodies(n, routing_key),
        }
    }

    fn redact(&self, text: &str) -> String {
        self.secrets.iter().fold(text.to_owned(), |text, secret| {
            text.replace(secret, "[redacted]")
        })
    }

    async fn post(&self, body: &Value) -> Result<String, NotifyError> {
        // `headers` replaces what `json` set: a configured `Content-Type`
        // is sent once, not twice.
        let response = self
            .client
            .request(self.target.method.clone(), self.target.url.clone())
            .json(body)
            .headers(self.target.headers.clone())
            .send()
            .await
            .map_err(|e| NotifyError::Retry {
                reason: self.redact(&format!("{} cannot be reached: {}", self.origin, chain(&e))),
                after: None,
            })?;
        let status = response.status();
        let after = retry_after(&response, SystemTime::now());
        let text = response.text().await.unwrap_or_default();
        let answer = self.redact(&format!(
            "{} answered {status}{}",
            self.origin,
            quote(&text)
        ));
        verdict(status, after, answer)
    }
}

/// What an answer means: delivered, try again (not before `after`), or give up.
fn verdict(
    status: StatusCode,
    after: Option<Duration>,
    answer: String,
) -> Result<String, NotifyError> {
    if status.is_success() {
        Ok(answer)
    } else if status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
    {
        Err(NotifyError::Retry {
            reason: answer,
            after,
        })
    } else {
        Err(NotifyError::Fatal(answer))
    }
}

/// `Retry-After` as seconds or as an HTTP date, from `now`.
fn retry_after(response: &Response, now: SystemTime) -> Option<Duration> {
    let value = response.headers().get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(at.timestamp()).ok()?);
    Some(at.duration_since(now).unwrap_or_default())
}

/// `: <the first line of the body>`, cut short; nothing for an empty body.
fn quote(body: &str) -> String {
    let line = body
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if line.is_empty() {
        return String::new();
    }
    let mut cut: String = line.chars().take(ANSWER_CHARS).collect();
    if cut.len() < line.len() {
        cut.push('…');
    }
    format!(": {cut}")
}

/// An error with its causes, which is where reqwest says what went wrong;
/// without the URL, which holds the secret.
fn chain(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[async_trait]
impl Notifier for HttpNotifier {
    async fn send(&self, n: &Notification) -> Result<String, NotifyError> {
        let mut answers = Vec::new();
        for body in self.bodies(n) {
            answers.push(self.post(&body).await?);
        }
        Ok(answers.join("; "))
    }
}

impl fmt::Debug for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Format::Json => f.write_str("Json"),
            Format::Combined => f.write_str("Combined"),
            Format::Slack { channel } => write!(f, "Slack {{ channel: {channel:?} }}"),
            Format::Discord => f.write_str("Discord"),
            Format::PagerDuty { .. } => f.write_str("PagerDuty { routing_key: [redacted] }"),
        }
    }
}

impl fmt::Debug for HttpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTarget")
            .field("origin", &self.url.origin().ascii_serialization())
            .field("method", &self.method)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
