//! The controller's error: what a command to it can fail with.

use std::path::PathBuf;

use ao_proto::{input, names};

use crate::model::SessionStatus;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("no config applied yet: run `ao apply -f agent-orchestrator.yaml`")]
    NoConfig,
    #[error("unknown project `{id}` (known: {known})")]
    UnknownProject { id: String, known: String },
    #[error("several projects are configured: name one of {known}")]
    ProjectNeeded { known: String },
    #[error("unknown session `{id}`")]
    UnknownSession { id: String },
    #[error("unknown agent `{name}`: not built in and not under `agents:` in the config")]
    UnknownAgent { name: String },
    #[error("session `{id}` is {status}: {action} needs a {wanted} session")]
    WrongState {
        id: String,
        status: SessionStatus,
        action: &'static str,
        wanted: &'static str,
    },
    #[error("unknown worker `{id}` (see `ao worker ls`)")]
    UnknownWorker { id: String },
    #[error("worker `{worker}` of session `{id}` is not connected")]
    WorkerUnavailable { id: String, worker: String },
    #[error("session `{id}` has no worker yet: {reason}")]
    NotPlaced { id: String, reason: String },
    #[error("input not delivered to `{id}`: {reason}")]
    NotDelivered { id: String, reason: String },
    #[error("session id `{id}` is already taken in the store (written by another controller?): nothing was overwritten; spawn again for the next id")]
    SessionExists { id: String },
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error(transparent)]
    TooLarge(#[from] ao_proto::limits::TooLarge),
    #[error(transparent)]
    InvalidBranch(#[from] names::BranchNameError),
    #[error(transparent)]
    ControlBytes(#[from] input::ControlByteError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `events.jsonl` cannot be opened or written: a problem of the controller's disk, not of
    /// the store, so it is not reported as a retryable store outage.
    #[error("cannot write the event log {}", .path.display())]
    EventLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The project's code host refused or failed: no token, a rejected one, no such issue.
    #[error("project `{project}`")]
    Host {
        project: String,
        #[source]
        source: crate::scm::ScmError,
    },
    #[error("the controller is shutting down")]
    ShuttingDown,
    #[error("this controller is no longer the leader: {0}")]
    Deposed(String),
}
