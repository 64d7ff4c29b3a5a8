//! `notifiers.<id>` blocks read into notifiers: the settings each plugin
//! takes, checked at config load ([`check`]) with the same rules that
//! [`build`] applies when the notifiers start.

use std::collections::BTreeMap;

use lettre::message::Mailbox;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::Method;
use serde_json::Value;

use super::email::{EmailNotifier, EmailTarget};
use super::http::{Format, HttpNotifier, HttpTarget};
use super::process::{CommandNotifier, DesktopNotifier};
use super::Notifier;
use crate::config::PluginConfig;

/// The notifier plugins, as `plugin:` names them.
pub const NOTIFIER_PLUGINS: &[&str] = &[
    "slack",
    "webhook",
    "pagerduty",
    "email",
    "command",
    "desktop",
];

/// PagerDuty's Events v2 endpoint.
const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";
const PAGERDUTY_HOST: &str = "events.pagerduty.com";

/// A `notifiers.<id>` block that cannot make a notifier. It names the key
/// and never holds a setting's value, which may be a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {problem}", self.key())]
pub struct NotifierConfigError {
    pub id: String,
    /// The setting at fault (`webhook`, `headers.Authorization`), if one is.
    pub field: Option<String>,
    pub problem: String,
}

impl NotifierConfigError {
    fn new(id: &str, field: &str, problem: impl Into<String>) -> Self {
        Self {
            id: id.to_owned(),
            field: Some(field.to_owned()),
            problem: problem.into(),
        }
    }

    /// The dotted key: `notifiers.<id>[.<field>]`.
    pub fn key(&self) -> String {
        match &self.field {
            Some(field) => format!("notifiers.{}.{field}", self.id),
            None => format!("notifiers.{}", self.id),
        }
    }
}

/// What a block asks for, checked; no client built yet.
enum Spec {
    Http(HttpTarget),
    Email(EmailTarget),
    Command { command: String },
    Desktop,
}

/// Checks `notifiers.<id>` as [`build`] would, without building anything.
///
/// # Errors
/// An unknown plugin, an unknown or missing setting, a value of the wrong
/// shape (a URL that is not http(s), a header that cannot be one).
pub fn check(id: &str, config: &PluginConfig) -> Result<(), NotifierConfigError> {
    spec(id, config).map(drop)
}

/// The notifier `notifiers.<id>` configures.
///
/// # Errors
/// As [`check`], and when the HTTP client or TLS cannot be set up (no
/// certificate store on this machine, an unreadable `caFile`).
pub fn build(id: &str, config: &PluginConfig) -> Result<Box<dyn Notifier>, NotifierConfigError> {
    let failed = |problem| NotifierConfigError {
        id: id.to_owned(),
        field: None,
        problem,
    };
    Ok(match spec(id, config)? {
        Spec::Http(target) => Box::new(HttpNotifier::new(target).map_err(failed)?),
        Spec::Email(target) => Box::new(EmailNotifier::new(target).map_err(failed)?),
        Spec::Command { command } => Box::new(CommandNotifier::new(command)),
        Spec::Desktop => Box::new(DesktopNotifier::from_env()),
    })
}

/// The settings of one block, each read once; what is left is unknown.
struct Settings<'a> {
    id: &'a str,
    plugin: &'a str,
    left: BTreeMap<&'a str, &'a Value>,
}

impl<'a> Settings<'a> {
    fn string(&mut self, key: &str) -> Result<Option<&'a str>, NotifierConfigError> {
        match self.left.remove(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(NotifierConfigError::new(self.id, key, "expected a string")),
        }
    }

    fn required(&mut self, key: &str, what: &str) -> Result<&'a str, NotifierConfigError> {
        match self.string(key)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(NotifierConfigError::new(
                self.id,
                key,
                format!("required by the {} notifier: {what}", self.plugin),
            )),
        }
    }

    fn url(&mut self, key: &str, value: &str) -> Result<reqwest::Url, NotifierConfigError> {
        match reqwest::Url::parse(value) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(url),
            // The value is not echoed: a webhook URL is a secret.
            _ => Err(NotifierConfigError::new(
                self.id,
                key,
                "expected an http(s) URL",
            )),
        }
    }

    fn mailbox(&self, key: &str, value: &str) -> Result<Mailbox, NotifierConfigError> {
        value.parse().map_err(|_| {
            NotifierConfigError::new(self.id, key, format!("`{value}` is not an email address"))
        })
    }

    /// One address or a list of them.
    fn mailboxes(&mut self, key: &str) -> Result<Vec<Mailbox>, NotifierConfigError> {
        let values: Vec<&str> = match self.left.remove(key) {
            Some(Value::String(one)) => vec![one],
            Some(Value::Array(list)) => list
                .iter()
                .map(|v| {
                    v.as_str().ok_or_else(|| {
                        NotifierConfigError::new(self.id, key, "expected addresses as strings")
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(NotifierConfigError::new(
                    self.id,
                    key,
                    "expected an address or a list of them",
                ))
            }
            None => Vec::new(),
        };
        if values.is_empty() {
            return Err(NotifierConfigError::new(
                self.id,
                key,
                format!(
                    "required by the {} notifier: who receives the emails",
                    self.plugin
                ),
            ));
        }
        values.into_iter().map(|v| self.mailbox(key, v)).collect()
    }

    fn headers(&mut self) -> Result<HeaderMap, NotifierConfigError> {
        let Some(value) = self.left.remove("headers") else {
            return Ok(HeaderMap::new());
        };
        let Value::Object(map) = value else {
            return Err(NotifierConfigError::new(
                self.id,
                "headers",
                "expected a map of header names to values",
            ));
        };
        map.iter()
            .map(|(name, value)| {
                let field = format!("headers.{name}");
                let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    NotifierConfigError::new(self.id, &field, "not a valid header name")
                })?;
                let Value::String(value) = value else {
                    return Err(NotifierConfigError::new(
                        self.id,
                        &field,
                        "expected a string",
                    ));
                };
                let mut value = HeaderValue::from_str(value).map_err(|_| {
                    NotifierConfigError::new(
                        self.id,
                        &field,
                        "holds characters a header value cannot",
                    )
                })?;
                // Header values often carry tokens: never shown by Debug.
                value.set_sensitive(true);
                Ok((name, value))
            })
            .collect()
    }

    fn finish(self) -> Result<(), NotifierConfigError> {
        match self.left.keys().next() {
            Some(key) => Err(NotifierConfigError::new(
                self.id,
                key,
                format!("unknown setting of the {} notifier", self.plugin),
            )),
            None => Ok(()),
        }
    }
}

fn spec(id: &str, config: &PluginConfig) -> Result<Spec, NotifierConfigError> {
    let mut s = Settings {
        id,
        plugin: config.plugin.as_str(),
        left: config
            .settings
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect(),
    };
    let spec = match config.plugin.as_str() {
        "slack" => {
            // `webhookUrl` is accepted as another spelling of `webhook`.
            let (key, url) = match s.string("webhookUrl")? {
                Some(url) => ("webhookUrl", url),
                None => (
                    "webhook",
                    s.required("webhook", "the incoming webhook's URL")?,
                ),
            };
            let url = s.url(key, url)?;
            let channel = s.string("channel")?.map(str::to_owned);
            Spec::Http(HttpTarget {
                url,
                method: Method::POST,
                headers: HeaderMap::new(),
                format: Format::Slack { channel },
            })
        }
        "webhook" => {
            let url = s.required("url", "where to send the events")?;
            let url = s.url("url", url)?;
            let method = match s.string("method")? {
                None => Method::POST,
                Some(m) => match m.to_ascii_uppercase().as_str() {
                    "POST" => Method::POST,
                    "PUT" => Method::PUT,
                    "PATCH" => Method::PATCH,
                    _ => {
                        return Err(NotifierConfigError::new(
                            id,
                            "method",
                            format!("expected POST, PUT or PATCH, got `{m}`"),
                        ))
                    }
                },
            };
            let headers = s.headers()?;
            let routing_key = s.string("routingKey")?;
            let format = match s.string("format")? {
                Some("json") => Format::Json,
                Some("slack") => Format::Slack { channel: None },
                Some("discord") => Format::Discord,
                Some("pagerduty") => pagerduty(id, routing_key, &headers)?,
                Some(other) => {
                    return Err(NotifierConfigError::new(
                        id,
                        "format",
                        format!("expected json, slack, discord or pagerduty, got `{other}`"),
                    ))
                }
                None if url.host_str() == Some(PAGERDUTY_HOST) => {
                    pagerduty(id, routing_key, &headers)?
                }
                None => Format::Combined,
            };
            Spec::Http(HttpTarget {
                url,
                method,
                headers,
                format,
            })
        }
        "pagerduty" => {
            let key = s.required("routingKey", "the Events v2 integration key")?;
            let url = match s.string("url")? {
                Some(url) => s.url("url", url)?,
                None => reqwest::Url::parse(PAGERDUTY_EVENTS_URL).expect("a valid URL"),
            };
            Spec::Http(HttpTarget {
                url,
                method: Method::POST,
                headers: HeaderMap::new(),
                format: Format::PagerDuty {
                    routing_key: key.to_owned(),
                },
            })
        }
        "email" => {
            let smtp = s.required("smtp", "the relay as `smtp://user:pass@host:587`")?;
            let smtp = match reqwest::Url::parse(smtp) {
                Ok(url) if matches!(url.scheme(), "smtp" | "smtps") && url.has_host() => url,
                // The value is not echoed: it holds the password.
                _ => {
                    return Err(NotifierConfigError::new(
                        id,
                        "smtp",
                        "expected `smtp://[user:pass@]host[:port]` (STARTTLS) or `smtps://…` \
                         (implicit TLS)",
                    ))
                }
            };
            let from = s.required("from", "the sender's address")?;
            let from = s.mailbox("from", from)?;
            let to = s.mailboxes("to")?;
            let ca_file = s.string("caFile")?.map(std::path::PathBuf::from);
            Spec::Email(EmailTarget {
                smtp,
                from,
                to,
                ca_file,
            })
        }
        "command" => Spec::Command {
            command: s
                .required("command", "the shell command that reads the event on stdin")?
                .to_owned(),
        },
        "desktop" => Spec::Desktop,
        other => {
            return Err(NotifierConfigError::new(
                id,
                "plugin",
                format!(
                    "unknown notifier plugin `{other}`: expected one of {}",
                    NOTIFIER_PLUGINS.join(", ")
                ),
            ))
        }
    };
    s.finish()?;
    Ok(spec)
}

/// PagerDuty through a `webhook`: the integration key is `routingKey`, or
/// the token of an `Authorization: Token token=<key>` header as the
/// original docs' block writes it.
fn pagerduty(
    id: &str,
    routing_key: Option<&str>,
    headers: &HeaderMap,
) -> Result<Format, NotifierConfigError> {
    let from_header = || {
        headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().strip_prefix("Token token="))
            .map(str::trim)
            .filter(|token| !token.is_empty())
    };
    match routing_key.or_else(from_header) {
        Some(key) => Ok(Format::PagerDuty {
            routing_key: key.to_owned(),
        }),
        None => Err(NotifierConfigError::new(
            id,
            "routingKey",
            "required to send PagerDuty events: the Events v2 integration key \
             (or an `Authorization: Token token=<key>` header)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plugin(name: &str, settings: Value) -> PluginConfig {
        PluginConfig {
            plugin: name.into(),
            settings: serde_json::from_value(settings).unwrap(),
        }
    }

    fn err(name: &str, settings: Value) -> NotifierConfigError {
        check("n", &plugin(name, settings)).unwrap_err()
    }

    #[test]
    fn errors_name_the_key_and_never_the_value() {
        let secret = "https://hooks.slack.com/services/T0/B0/SECRET";
        for (name, settings, key, fragment) in [
            (
                "slack",
                json!({}),
                "notifiers.n.webhook",
                "required by the slack notifier",
            ),
            (
                "slack",
                json!({"webhook": "ftp://SECRET"}),
                "notifiers.n.webhook",
                "expected an http(s) URL",
            ),
            (
                "slack",
                json!({"webhook": secret, "chanel": "#x"}),
                "notifiers.n.chanel",
                "unknown setting of the slack notifier",
            ),
            (
                "slack",
                json!({"webhook": 5}),
                "notifiers.n.webhook",
                "expected a string",
            ),
            (
                "webhook",
                json!({"url": secret, "method": "GET"}),
                "notifiers.n.method",
                "expected POST, PUT or PATCH",
            ),
            (
                "webhook",
                json!({"url": secret, "format": "xml"}),
                "notifiers.n.format",
                "expected json, slack, discord or pagerduty",
            ),
            (
                "webhook",
                json!({"url": secret, "headers": ["a"]}),
                "notifiers.n.headers",
                "expected a map",
            ),
            (
                "webhook",
                json!({"url": secret, "headers": {"X-Key": "SECRET\n"}}),
                "notifiers.n.headers.X-Key",
                "holds characters",
            ),
            (
                "webhook",
                json!({"url": secret, "headers": {"bad name": "v"}}),
                "notifiers.n.headers.bad name",
                "not a valid header name",
            ),
            (
                "webhook",
                json!({"url": "https://events.pagerduty.com/v2/enqueue"}),
                "notifiers.n.routingKey",
                "Events v2 integration key",
            ),
            (
                "pagerduty",
                json!({}),
                "notifiers.n.routingKey",
                "required by the pagerduty notifier",
            ),
            (
                "command",
                json!({"command": " "}),
                "notifiers.n.command",
                "required by the command notifier",
            ),
            (
                "desktop",
                json!({"sound": true}),
                "notifiers.n.sound",
                "unknown setting of the desktop notifier",
            ),
            (
                "carrier-pigeon",
                json!({}),
                "notifiers.n.plugin",
                "unknown notifier plugin `carrier-pigeon`",
            ),
        ] {
            let e = err(name, settings);
            assert_eq!(e.key(), key, "{e}");
            assert!(e.problem.contains(fragment), "{e}");
            assert!(!e.to_string().contains("SECRET"), "{e}");
            assert!(e.to_string().starts_with(key), "{e}");
        }
    }

    #[test]
    fn each_plugin_reads_its_shape() {
        let ok = |name: &str, settings: Value| spec("n", &plugin(name, settings)).unwrap();
        let Spec::Http(t) = ok("slack", json!({"webhook": "https://h/x", "channel": "#a"})) else {
            panic!()
        };
        assert_eq!(
            t.format,
            Format::Slack {
                channel: Some("#a".into())
            }
        );
        let Spec::Http(t) = ok("slack", json!({"webhookUrl": "https://h/x"})) else {
            panic!()
        };
        assert_eq!(t.url.as_str(), "https://h/x");

        let Spec::Http(t) = ok("webhook", json!({"url": "http://h/x", "method": "put"})) else {
            panic!()
        };
        assert_eq!((t.method, t.format), (Method::PUT, Format::Combined));
        for (format, expected) in [
            ("json", Format::Json),
            ("slack", Format::Slack { channel: None }),
            ("discord", Format::Discord),
            (
                "pagerduty",
                Format::PagerDuty {
                    routing_key: "K".into(),
                },
            ),
        ] {
            let Spec::Http(t) = ok(
                "webhook",
                json!({"url": "http://h/x", "format": format, "routingKey": "K"}),
            ) else {
                panic!()
            };
            assert_eq!(t.format, expected);
        }

        let Spec::Http(t) = ok("pagerduty", json!({"routingKey": "K"})) else {
            panic!()
        };
        assert_eq!(t.url.as_str(), PAGERDUTY_EVENTS_URL);
        assert_eq!(
            t.format,
            Format::PagerDuty {
                routing_key: "K".into()
            }
        );
        assert!(
            matches!(ok("command", json!({"command": "cat"})), Spec::Command { command } if command == "cat")
        );
        assert!(matches!(ok("desktop", json!({})), Spec::Desktop));
        let Spec::Email(e) = ok(
            "email",
            json!({"smtp": "smtps://u:p@mail.example.com", "from": "ao <ao@example.com>",
                   "to": ["a@example.com", "b@example.com"]}),
        ) else {
            panic!()
        };
        assert_eq!(e.from.to_string(), "ao <ao@example.com>");
        assert_eq!(e.to.len(), 2);
        assert_eq!(e.smtp.scheme(), "smtps");
    }

    /// The original docs' PagerDuty block: its token header is the key.
    #[test]
    fn a_pagerduty_url_makes_pagerduty_events_with_the_headers_token() {
        let Spec::Http(t) = spec(
            "pagerduty",
            &plugin(
                "webhook",
                json!({"url": "https://events.pagerduty.com/v2/enqueue", "method": "POST",
                       "headers": {"Authorization": "Token token=PDKEY", "Content-Type": "application/json"}}),
            ),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            t.format,
            Format::PagerDuty {
                routing_key: "PDKEY".into()
            }
        );
        assert!(!format!("{t:?}").contains("PDKEY"));
    }
}
