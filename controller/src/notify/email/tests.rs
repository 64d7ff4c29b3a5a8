//! Deliveries to a local SMTP server that speaks STARTTLS and AUTH, and
//! takes credentials only inside TLS.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::config::PluginConfig;
use crate::notify::message::tests::stuck;
use crate::notify::{build, NotifyError};

/// What the server was told, in order.
#[derive(Debug, Default, Clone)]
struct Mail {
    /// Commands as received, AUTH's argument included.
    commands: Vec<String>,
    /// Whether each command came inside TLS.
    secure: Vec<bool>,
    data: String,
}

/// How the server answers `RCPT TO`.
#[derive(Clone, Copy)]
enum Rcpt {
    Accept,
    Refuse,
}

/// An SMTP server on 127.0.0.1 with a certificate of a fresh CA, whose
/// PEM it returns with its port.
async fn smtp_server(rcpt: Rcpt) -> (Arc<Mutex<Mail>>, u16, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = ao_proto::pki::Ca::generate("smtp-test").unwrap();
    let server = ca.issue_server(&[], Duration::from_secs(86_400)).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            CertificateDer::pem_slice_iter(server.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap(),
            PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mail = Arc::new(Mutex::new(Mail::default()));
    let record = mail.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, record) = (acceptor.clone(), record.clone());
            tokio::spawn(async move {
                let mut plain = BufReader::new(tcp);
                plain.write_all(b"220 test ESMTP\r\n").await.unwrap();
                if dialog(&mut plain, false, rcpt, &record).await {
                    let tls = acceptor.accept(plain.into_inner()).await.unwrap();
                    dialog(&mut BufReader::new(tls), true, rcpt, &record).await;
                }
            });
        }
    });
    (mail, port, ca.cert_pem().to_owned())
}

/// Answers commands until QUIT or STARTTLS; true for STARTTLS.
async fn dialog<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    secure: bool,
    rcpt: Rcpt,
    mail: &Mutex<Mail>,
) -> bool {
    loop {
        let mut line = String::new();
        if io.read_line(&mut line).await.unwrap_or(0) == 0 {
            return false;
        }
        let line = line.trim_end().to_owned();
        {
            let mut mail = mail.lock().unwrap();
            mail.commands.push(line.clone());
            mail.secure.push(secure);
        }
        let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
        let answer: &[u8] = match verb.as_str() {
            "EHLO" if secure => b"250-test\r\n250 AUTH PLAIN LOGIN\r\n",
            "EHLO" => b"250-test\r\n250 STARTTLS\r\n",
            "STARTTLS" => {
                io.write_all(b"220 go ahead\r\n").await.unwrap();
                return true;
            }
            "AUTH" if !secure => b"530 5.7.0 Must issue a STARTTLS command first\r\n",
            "AUTH" => b"235 2.7.0 Authentication successful\r\n",
            "MAIL" => b"250 2.1.0 Ok\r\n",
            "RCPT" => match rcpt {
                Rcpt::Accept => b"250 2.1.5 Ok\r\n",
                Rcpt::Refuse => b"550 5.1.1 No such user here\r\n",
            },
            "DATA" => {
                io.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await
                    .unwrap();
                let mut data = String::new();
                loop {
                    let mut line = String::new();
                    io.read_line(&mut line).await.unwrap();
                    if line == ".\r\n" || line.is_empty() {
                        break;
                    }
                    data.push_str(&line);
                }
                mail.lock().unwrap().data = data;
                b"250 2.0.0 Ok: queued as 4F2A\r\n"
            }
            "QUIT" => {
                let _ = io.write_all(b"221 2.0.0 Bye\r\n").await;
                return false;
            }
            _ => b"250 Ok\r\n",
        };
        io.write_all(answer).await.unwrap();
    }
}

fn email(port: u16, ca_pem: &str, dir: &tempfile::TempDir) -> Box<dyn crate::notify::Notifier> {
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let config = PluginConfig {
        plugin: "email".into(),
        settings: serde_json::from_value(json!({
            "smtp": format!("smtp://user:s3cret@127.0.0.1:{port}"),
            "from": "ao@example.com",
            "to": ["a@example.com", "b@example.com"],
            "caFile": ca_file,
        }))
        .unwrap(),
    };
    build("mail", &config).unwrap()
}

#[tokio::test]
async fn an_email_goes_through_starttls_and_auth() {
    let (mail, port, ca_pem) = smtp_server(Rcpt::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    let answer = email(port, &ca_pem, &dir).send(&stuck()).await.unwrap();
    assert_eq!(
        answer,
        format!("127.0.0.1:{port} answered 2.0.0 Ok: queued as 4F2A")
    );

    let mail = mail.lock().unwrap().clone();
    let verbs: Vec<(&str, bool)> = mail
        .commands
        .iter()
        .zip(&mail.secure)
        .map(|(c, &secure)| (c.split(' ').next().unwrap(), secure))
        // The pooled connection may say QUIT later, or not yet.
        .filter(|&(verb, _)| verb != "QUIT")
        .collect();
    assert_eq!(
        verbs,
        [
            ("EHLO", false),
            ("STARTTLS", false),
            ("EHLO", true),
            ("AUTH", true),
            ("MAIL", true),
            ("RCPT", true),
            ("RCPT", true),
            ("DATA", true),
        ]
    );
    // base64 of "\0user\0s3cret": the URL's user and password.
    assert_eq!(mail.commands[3], "AUTH PLAIN AHVzZXIAczNjcmV0");
    assert_eq!(mail.commands[4], "MAIL FROM:<ao@example.com>");
    assert_eq!(mail.commands[5], "RCPT TO:<a@example.com>");
    assert_eq!(mail.commands[6], "RCPT TO:<b@example.com>");
    let data = &mail.data;
    for header in [
        "From: ao@example.com\r\n",
        "To: a@example.com, b@example.com\r\n",
        "Subject: [Agent Orchestrator] Agent fe-1 stuck on issue #123\r\n",
        "Content-Type: text/plain; charset=utf-8\r\n",
    ] {
        assert!(data.contains(header), "{header:?} missing from {data}");
    }
    let body = data.split_once("\r\n\r\n").unwrap().1;
    assert!(
        body.starts_with(
            "Agent fe-1 stuck on issue #123\r\n\r\nAgent has been inactive for 10 minutes\r\n"
        ),
        "{body}"
    );
    assert!(body.contains("Project: frontend\r\n"), "{body}");
}

#[tokio::test]
async fn a_refused_recipient_is_fatal_and_names_no_password() {
    let (_mail, port, ca_pem) = smtp_server(Rcpt::Refuse).await;
    let dir = tempfile::tempdir().unwrap();
    let Err(NotifyError::Fatal(reason)) = email(port, &ca_pem, &dir).send(&stuck()).await else {
        panic!("expected a fatal error");
    };
    assert!(
        reason.starts_with(&format!("127.0.0.1:{port}: ")),
        "{reason}"
    );
    assert!(reason.contains("No such user here"), "{reason}");
    assert!(!reason.contains("s3cret"), "{reason}");
}

#[tokio::test]
async fn a_relay_nobody_answers_is_retried() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let dir = tempfile::tempdir().unwrap();
    let ca = ao_proto::pki::Ca::generate("unused").unwrap();
    let result = email(port, ca.cert_pem(), &dir).send(&stuck()).await;
    assert!(
        matches!(&result, Err(NotifyError::Retry { after: None, .. })),
        "{result:?}"
    );
}
