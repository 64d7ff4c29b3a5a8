//! [`PkiError`]: everything that can go wrong with certificates, keys and their files.

use std::io;
use std::path::PathBuf;

use super::tls::{FETCH_TIMEOUT, SERVER_NAME};

/// Everything that can go wrong with certificates, keys and their files.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file that should be there is not.
    #[error("{} does not exist", .path.display())]
    Missing {
        /// The missing file.
        path: PathBuf,
    },
    /// Reading or writing a file or directory failed.
    #[error("cannot {action} {}", .path.display())]
    Io {
        /// What was being done: "read", "write", "create directory", …
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A certificate or key does not parse.
    #[error("{what} is not valid: {reason}")]
    Invalid {
        /// What was being read, e.g. "the certificate in /etc/ao/tls.crt".
        what: String,
        /// Why it was refused.
        reason: String,
    },
    /// Making a key or a certificate failed.
    #[error("could not create {what}")]
    Generate {
        /// What was being made.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
    /// A certificate signing request was refused.
    #[error("the certificate signing request is not valid: {0}")]
    BadCsr(String),
    /// A name cannot go into a certificate.
    #[error("{name:?} cannot be a certificate name: {reason}")]
    BadName {
        /// The name given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A peer certificate does not name an `ao` role.
    #[error("the peer certificate is not an ao certificate: {0}")]
    NotAoCertificate(String),
    /// A CA pin is not of the form `sha256:<64 hex digits>`.
    #[error("--ca-hash must look like sha256:<64 hex digits>, not {0:?}")]
    BadPin(String),
    /// No connection could be opened to the controller.
    #[error("cannot reach the controller at {addr}")]
    Unreachable {
        /// The address as given.
        addr: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake with the controller failed.
    #[error("the TLS handshake with the controller at {addr} failed")]
    Handshake {
        /// The address as given.
        addr: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The controller did not answer in time.
    #[error("the controller at {addr} did not complete a TLS handshake within {} s", FETCH_TIMEOUT.as_secs())]
    Timeout {
        /// The address as given.
        addr: String,
    },
    /// No certificate the controller presented has the pinned hash.
    #[error("the controller's CA does not match --ca-hash: expected {expected}, got {}", list_or_none(.seen))]
    PinMismatch {
        /// The pin given.
        expected: String,
        /// Hashes of the CA certificates the controller presented (of all its certificates if
        /// none is a CA).
        seen: Vec<String>,
    },
    /// The controller presented the pinned CA but its own certificate is not valid under it.
    #[error("the controller at {addr} presented the pinned CA, but its own certificate is not valid for {SERVER_NAME} under that CA: {reason}")]
    NotSignedByPin {
        /// The address as given.
        addr: String,
        /// What the verifier said.
        reason: String,
    },
    /// Building a TLS configuration failed.
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "no certificate at all".to_string()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_prints_its_cause_once_as_its_source() {
        let err = PkiError::Io {
            action: "read",
            path: PathBuf::from("/pki/tls.key"),
            source: io::Error::new(io::ErrorKind::PermissionDenied, "permission denied"),
        };
        assert_eq!(err.to_string(), "cannot read /pki/tls.key");
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("permission denied"));
        // Where it must travel as a string, the cause follows once.
        assert_eq!(
            crate::error_chain(&err),
            "cannot read /pki/tls.key: permission denied"
        );
    }
}
