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

pub mod backoff;
pub mod dial;
pub mod env;
pub mod home;
pub mod input;
pub mod limits;
pub mod names;
pub mod pki;

/// Generated code of `ao.v1`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("ao.v1");
}

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
