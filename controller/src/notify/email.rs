//! The `email` notifier: one message per event over SMTP, with STARTTLS
//! (`smtp://`, port 587 by default) or implicit TLS (`smtps://`, port 465).
//! Credentials travel only inside TLS: a relay that does not offer
//! STARTTLS is refused.

use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::message::{headline, plain_text};
use super::{Notification, Notifier, NotifyError};

/// How long a delivery may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The submission port (STARTTLS) and the submissions port (implicit TLS).
const SUBMISSION_PORT: u16 = 587;
const SUBMISSIONS_PORT: u16 = 465;
/// Every subject starts so, as in the original docs.
const SUBJECT_PREFIX: &str = "[Agent Orchestrator]";

/// What an `email` block asks for, checked.
pub(super) struct EmailTarget {
    /// `smtp://user:pass@host:port` or `smtps://…`; holds the password.
    pub smtp: reqwest::Url,
    pub from: Mailbox,
    pub to: Vec<Mailbox>,
    /// A PEM certificate to trust besides the public roots (a private relay).
    pub ca_file: Option<std::path::PathBuf>,
}

/// Sends each event as a plain-text email.
pub(super) struct EmailNotifier {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    /// `host:port`, what errors name.
    relay: String,
    password: String,
}

impl EmailNotifier {
    /// # Errors
    /// When the TLS set-up fails (an unreadable `caFile`).
    pub(super) fn new(target: EmailTarget) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = &target.smtp;
        let host = url.host_str().unwrap_or_default().to_owned();
        let implicit = url.scheme() == "smtps";
        let port = url.port().unwrap_or(if implicit {
            SUBMISSIONS_PORT
        } else {
            SUBMISSION_PORT
        });
        let mut tls = TlsParameters::builder(host.clone());
        if let Some(path) = &target.ca_file {
            let pem =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| format!("{} is not a PEM certificate: {e}", path.display()))?;
            tls = tls.add_root_certificate(cert);
        }
        let tls = tls
            .build_rustls()
            .map_err(|e| format!("cannot set up TLS: {e}"))?;
        // `from_url` decodes the user and password; TLS and port are ours.
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.as_str())
            .map_err(|_| "not an SMTP URL".to_owned())?
            .port(port)
            .tls(if implicit {
                Tls::Wrapper(tls)
            } else {
                Tls::Required(tls)
            })
            .timeout(Some(TIMEOUT))
            .build();
        Ok(Self {
            transport,
            from: target.from,
            to: target.to,
            relay: format!("{host}:{port}"),
            password: url.password().unwrap_or_default().to_owned(),
        })
    }

    fn message(&self, n: &Notification) -> Result<Message, NotifyError> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(format!("{SUBJECT_PREFIX} {}", headline(n)))
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder
            .body(plain_text(n))
            .map_err(|e| NotifyError::Fatal(format!("cannot write the email: {e}")))
    }
}

#[async_trait]
impl Notifier for EmailNotifier {
    async fn send(&self, n: &Notification) -> Result<String, NotifyError> {
        let message = self.message(n)?;
        match self.transport.send(message).await {
            Ok(response) => Ok(format!(
                "{} answered {}",
                self.relay,
                response.message().next().unwrap_or("ok")
            )),
            Err(e) => {
                let mut reason = format!("{}: {e}", self.relay);
                if self.password.len() >= 4 {
                    reason = reason.replace(&self.password, "[redacted]");
                }
                Err(if e.is_permanent() {
                    NotifyError::Fatal(reason)
                } else {
                    NotifyError::Retry {
                        reason,
                        after: None,
                    }
                })
            }
        }
    }
}

#[cfg(test)]
mod tests;
