//! The worker link's wire types into the controller's domain types. Unset
//! enums and `""` for "none" are decided here, once.

use ao_proto::pb;
use ao_proto::pb::session_report::{Activity as WireActivity, State as WireState};

use crate::model::Activity;
use crate::reconcile::{Report, ReportState};

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ConvertError {
    #[error(
        "session {session}: report state {value} is not one of starting, running, exited, \
         errored, stopped"
    )]
    UnknownReportState { session: String, value: i32 },
}

/// `""` on the wire means none.
fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn activity(wire: WireActivity) -> Option<Activity> {
    match wire {
        WireActivity::Active => Some(Activity::Active),
        WireActivity::Ready => Some(Activity::Ready),
        WireActivity::Idle => Some(Activity::Idle),
        WireActivity::WaitingInput => Some(Activity::WaitingInput),
        WireActivity::Unspecified => None,
    }
}

impl TryFrom<pb::SessionReport> for Report {
    type Error = ConvertError;

    fn try_from(r: pb::SessionReport) -> Result<Self, ConvertError> {
        let state = match r.state() {
            WireState::Starting => ReportState::Starting,
            WireState::Running => ReportState::Running {
                activity: activity(r.activity()),
            },
            WireState::Exited => ReportState::Exited {
                code: r.exit_code,
                reason: non_empty(r.reason),
            },
            WireState::Errored => ReportState::Errored { reason: r.reason },
            WireState::Stopped => ReportState::Stopped,
            WireState::Unspecified => {
                return Err(ConvertError::UnknownReportState {
                    session: r.session_id,
                    value: r.state,
                })
            }
        };
        Ok(Report {
            session_id: r.session_id,
            epoch: r.epoch,
            state,
            worktree: non_empty(r.worktree),
            branch: non_empty(r.branch),
            attach_command: non_empty(r.attach_command),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(state: WireState, activity: WireActivity) -> pb::SessionReport {
        pb::SessionReport {
            session_id: "s-1".into(),
            epoch: 3,
            state: state.into(),
            activity: activity.into(),
            ..Default::default()
        }
    }

    #[test]
    fn empty_strings_are_none_and_the_activity_follows_the_state() {
        let r = Report::try_from(wire(WireState::Running, WireActivity::WaitingInput)).unwrap();
        assert_eq!(
            r.state,
            ReportState::Running {
                activity: Some(Activity::WaitingInput)
            }
        );
        assert_eq!((r.worktree, r.branch, r.attach_command), (None, None, None));
        let mut exited = wire(WireState::Exited, WireActivity::Unspecified);
        exited.exit_code = Some(2);
        exited.branch = "ao/s-1".into();
        let r = Report::try_from(exited).unwrap();
        assert_eq!(r.activity(), Some(Activity::Exited));
        assert_eq!(r.branch.as_deref(), Some("ao/s-1"));
        assert_eq!(
            r.state,
            ReportState::Exited {
                code: Some(2),
                reason: None
            }
        );
    }

    #[test]
    fn an_unknown_state_is_refused_with_its_value() {
        let mut r = wire(WireState::Running, WireActivity::Active);
        r.state = 42;
        let err = Report::try_from(r).unwrap_err();
        assert_eq!(
            err.to_string(),
            "session s-1: report state 42 is not one of starting, running, exited, errored, stopped"
        );
    }
}
