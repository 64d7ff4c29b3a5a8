//! Telling people: notifiers (`notifiers.<id>: {plugin: …}`) behind one
//! trait, fed by the events whose priority `notificationRouting` routes to
//! them (escalations, `notify` reactions, …). Delivery is the plugins'
//! business; queueing, retries, cooldown and the `notification.*` events
//! are the dispatcher's.

pub mod dispatch;

use std::time::Duration;

use async_trait::async_trait;

use crate::model::EventRecord;

mod email;
mod http;
mod message;
mod plugins;
mod process;

pub use message::{condition, dedup_key, headline, resolves};
pub use plugins::{build, check, NotifierConfigError, NOTIFIER_PLUGINS};

/// What a notifier is asked to deliver: one event of the log, as written.
pub type Notification = EventRecord;

/// Why a delivery failed, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// A network error, a timeout, a 5xx or a 429: try again, not before
    /// `after` when the receiver said (`Retry-After`).
    #[error("{reason}")]
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// The receiver refused for good (4xx other than 429, a bad address):
    /// trying again would not help.
    #[error("{0}")]
    Fatal(String),
}

/// One configured notifier. Its messages and errors never hold a secret
/// of its settings (a webhook URL's token, an SMTP password).
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Delivers `n`; what the receiver answered, in one short line.
    async fn send(&self, n: &Notification) -> Result<String, NotifyError>;
}

/// The queued entries by key, as the actor publishes them.
pub type Queue = rpds::RedBlackTreeMapSync<String, std::sync::Arc<EventRecord>>;

/// How one queue entry ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The receiver took it, answering `answer`, at try `tries`.
    Sent { answer: String, tries: u32 },
    /// Refused for good, or still failing at the last try.
    Failed { reason: String, tries: u32 },
    /// Dropped: the same notifier was told of the same thing within the cooldown.
    Folded,
}
