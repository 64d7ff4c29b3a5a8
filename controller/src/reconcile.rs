//! What a worker says about a session, in the controller's terms.

use crate::model::Activity;

/// One session's state as its worker reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub session_id: String,
    /// The assignment the worker holds.
    pub epoch: u64,
    pub state: ReportState,
    pub worktree: Option<String>,
    pub branch: Option<String>,
    pub attach_command: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReportState {
    /// Being set up (worktree, `postCreate`, agent start).
    Starting,
    /// `None`: the worker cannot tell yet.
    Running { activity: Option<Activity> },
    /// The agent exited by itself; `reason` is set when the worker knows more
    /// than the code.
    Exited {
        code: Option<i32>,
        reason: Option<String>,
    },
    /// The session could not be set up or started.
    Errored { reason: String },
    /// Stopped because the controller said so.
    Stopped,
}

impl Report {
    /// What the agent does: known while it runs, `exited` once it ended.
    pub fn activity(&self) -> Option<Activity> {
        match &self.state {
            ReportState::Starting => None,
            ReportState::Running { activity } => *activity,
            ReportState::Exited { .. } | ReportState::Errored { .. } | ReportState::Stopped => {
                Some(Activity::Exited)
            }
        }
    }

    /// An agent runs or is about to.
    pub fn is_alive(&self) -> bool {
        matches!(
            self.state,
            ReportState::Starting | ReportState::Running { .. }
        )
    }
}
