//! The wire contract of `ao` and what every side needs to speak it.
//!
//! - [`pb`]: the generated tonic/prost code of `proto/ao.proto`.
//! - [`dial`]: open a channel to a controller address (`unix:///…` today).
//! - [`backoff`]: capped exponential backoff with jitter for reconnect loops.
//! - [`env`]: every environment variable name `ao` reads or sets, in one place.
//! - [`home`]: owner-only modes for what `ao` makes under `AO_HOME`.
//! - [`input`]: what may be typed into an agent as text (no control bytes).
//! - [`limits`]: message and content sizes at every hop.
//! - [`names`]: the rules for branch names and ids that reach git and tmux.
//! - [`pki`]: the cluster CA, certificates and CSRs, CA pinning, tonic TLS configs.
//! - [`trace`]: W3C trace context in gRPC metadata and on link messages.

pub mod backoff;
pub mod dial;
pub mod env;
pub mod home;
pub mod input;
pub mod limits;
pub mod names;
pub mod pki;
pub mod report;
pub mod trace;
pub mod units;

/// Generated code of `ao.v1`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("ao.v1");
}

impl pb::AttachEnd {
    pub fn new(reason: pb::attach_end::Reason, detail: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            detail: detail.into(),
        }
    }

    /// Whether the viewer may attach again at once: only the link broke.
    pub fn worker_lost(&self) -> bool {
        self.reason() == pb::attach_end::Reason::WorkerLost
    }

    /// The terminal ended as the user meant it to (not an error).
    pub fn is_normal(&self) -> bool {
        use pb::attach_end::Reason;
        matches!(self.reason(), Reason::Detached | Reason::SessionEnded)
    }
}

/// The sentence shown to the viewer and recorded in `session.detached`.
impl std::fmt::Display for pb::AttachEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use pb::attach_end::Reason;
        match self.reason() {
            Reason::Detached => f.write_str("detached"),
            Reason::SessionEnded => f.write_str("session ended"),
            Reason::TakenOver => write!(f, "taken over by {}", self.detail),
            Reason::WorkerLost => f.write_str("the connection to the worker was lost"),
            Reason::Refused | Reason::Unspecified => f.write_str(&self.detail),
        }
    }
}

/// The worker label that says which runtime besides tmux a worker can run
/// (`runtime=docker` while its Docker engine answers); placement reads it.
pub const RUNTIME_LABEL: &str = "runtime";

/// The version every side reports in hellos and `ao doctor`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// An error and its causes on one line (`cannot read /x: permission denied`), for where an
/// error travels as a string — a gRPC status, a report's reason, a check's line — and its
/// source chain would otherwise be lost.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::pb::attach_end::Reason;
    use super::pb::AttachEnd;

    #[test]
    fn an_attach_end_reads_as_before_and_says_what_the_viewer_does() {
        let cases = [
            (
                AttachEnd::new(Reason::Detached, ""),
                "detached",
                true,
                false,
            ),
            (
                AttachEnd::new(Reason::SessionEnded, ""),
                "session ended",
                true,
                false,
            ),
            (
                AttachEnd::new(Reason::TakenOver, "bob@laptop"),
                "taken over by bob@laptop",
                false,
                false,
            ),
            (
                AttachEnd::new(Reason::WorkerLost, ""),
                "the connection to the worker was lost",
                false,
                true,
            ),
            (
                AttachEnd::new(Reason::Refused, "cannot open a terminal: x"),
                "cannot open a terminal: x",
                false,
                false,
            ),
        ];
        for (end, text, normal, lost) in cases {
            assert_eq!(end.to_string(), text);
            assert_eq!(end.is_normal(), normal, "{text}");
            assert_eq!(end.worker_lost(), lost, "{text}");
        }
    }
}
