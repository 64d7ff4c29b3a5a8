//! What a worker says about a session, in the controller's terms, and what
//! it does to the session: [`next_status`], the reconcile step.

use chrono::{DateTime, Utc};

use crate::model::{Activity, NewEvent, Priority, SessionRecord, SessionStatus};

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

/// The session as its worker's report leaves it, and the events that say
/// so: the reconcile step, free of the store and the clock (`now` stamps a
/// changed activity or status). A killed session stays killed whatever its
/// worker says; only its activity follows.
pub fn next_status(
    s: &SessionRecord,
    r: &Report,
    now: DateTime<Utc>,
) -> (SessionRecord, Vec<NewEvent>) {
    let mut next = s.clone();
    let mut events = Vec::new();
    let activity = r.activity();
    if let Some(worktree) = &r.worktree {
        next.worktree = Some(worktree.clone());
    }
    if let Some(branch) = &r.branch {
        next.branch = branch.clone();
    }
    if let Some(attach) = &r.attach_command {
        next.attach_command = Some(attach.clone());
    }
    match &r.state {
        ReportState::Stopped => next.activity = Some(Activity::Exited),
        _ if s.status == SessionStatus::Killed => next.activity = activity.or(s.activity),
        // A session marked stuck while its worker was away is starting again.
        ReportState::Starting if s.status == SessionStatus::Stuck => {
            next.status = SessionStatus::Spawning;
            next.summary = None;
        }
        ReportState::Starting => {}
        ReportState::Running { .. } => {
            next.activity = activity;
            let status = match activity {
                Some(Activity::WaitingInput) => SessionStatus::NeedsInput,
                Some(Activity::Idle | Activity::Ready) => SessionStatus::Idle,
                _ => SessionStatus::Working,
            };
            if status != s.status {
                next.status = status;
                next.summary = None;
                events.push(match status {
                    SessionStatus::NeedsInput => {
                        NewEvent::session("session.needs_input", Priority::Action, &next)
                            .message(format!("{} is waiting for input", next.id))
                    }
                    SessionStatus::Idle => NewEvent::session("session.idle", Priority::Info, &next),
                    _ => NewEvent::session("session.working", Priority::Info, &next),
                });
            }
        }
        ReportState::Exited { code, reason } => {
            next.activity = Some(Activity::Exited);
            next.exit_code = *code;
            let code = code.unwrap_or(-1);
            if code == 0 {
                next.status = SessionStatus::Done;
                next.summary = Some("agent exited".into());
                events.push(
                    NewEvent::session("session.exited", Priority::Info, &next)
                        .message(format!("{} exited with code 0", next.id)),
                );
            } else {
                let reason = reason
                    .clone()
                    .unwrap_or_else(|| format!("agent exited with code {code}"));
                next.status = SessionStatus::Errored;
                events.push(
                    NewEvent::session("session.errored", Priority::Warning, &next)
                        .message(format!("{}: {reason}", next.id)),
                );
                next.summary = Some(reason);
            }
        }
        ReportState::Errored { reason } => {
            next.status = SessionStatus::Errored;
            next.activity = Some(Activity::Exited);
            next.summary = Some(reason.clone());
            events.push(
                NewEvent::session("session.errored", Priority::Warning, &next)
                    .message(format!("{}: {reason}", next.id)),
            );
        }
    }
    if next.activity != s.activity || next.status != s.status {
        next.last_activity_at = now;
    }
    (next, events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(state: ReportState) -> Report {
        Report {
            session_id: "s-1".into(),
            epoch: 1,
            state,
            worktree: None,
            branch: None,
            attach_command: None,
        }
    }

    fn running(activity: Activity) -> Report {
        report(ReportState::Running {
            activity: Some(activity),
        })
    }

    fn session(status: SessionStatus) -> SessionRecord {
        SessionRecord::example("s-1", Some("w1"), status)
    }

    /// The event kinds and priorities, in order.
    fn kinds(events: &[NewEvent]) -> Vec<(&'static str, Priority)> {
        events.iter().map(|e| (e.kind, e.priority)).collect()
    }

    #[test]
    fn a_running_active_agent_is_working_once() {
        let now = Utc::now();
        let s = session(SessionStatus::Spawning);
        let (next, events) = next_status(&s, &running(Activity::Active), now);
        assert_eq!(next.status, SessionStatus::Working);
        assert_eq!(next.activity, Some(Activity::Active));
        assert_eq!(next.last_activity_at, now);
        assert_eq!(kinds(&events), [("session.working", Priority::Info)]);
        // The same report again changes nothing and says nothing.
        let (again, events) = next_status(&next, &running(Activity::Active), Utc::now());
        assert_eq!((again, events.len()), (next, 0));
    }

    #[test]
    fn waiting_input_needs_input_with_an_action_event() {
        let s = session(SessionStatus::Working);
        let (next, events) = next_status(&s, &running(Activity::WaitingInput), Utc::now());
        assert_eq!(next.status, SessionStatus::NeedsInput);
        assert_eq!(kinds(&events), [("session.needs_input", Priority::Action)]);
        assert_eq!(
            events[0].message.as_deref(),
            Some("s-1 is waiting for input")
        );
    }

    #[test]
    fn ready_or_idle_is_idle() {
        for activity in [Activity::Ready, Activity::Idle] {
            let (next, events) = next_status(
                &session(SessionStatus::Working),
                &running(activity),
                Utc::now(),
            );
            assert_eq!(next.status, SessionStatus::Idle, "{activity}");
            assert_eq!(kinds(&events), [("session.idle", Priority::Info)]);
        }
    }

    #[test]
    fn exit_code_zero_is_done() {
        let r = report(ReportState::Exited {
            code: Some(0),
            reason: None,
        });
        let (next, events) = next_status(&session(SessionStatus::Working), &r, Utc::now());
        assert_eq!(next.status, SessionStatus::Done);
        assert_eq!(
            (next.exit_code, next.activity),
            (Some(0), Some(Activity::Exited))
        );
        assert_eq!(next.summary.as_deref(), Some("agent exited"));
        assert_eq!(kinds(&events), [("session.exited", Priority::Info)]);
    }

    #[test]
    fn a_non_zero_exit_is_errored_with_the_reason() {
        let plain = report(ReportState::Exited {
            code: Some(3),
            reason: None,
        });
        let (next, events) = next_status(&session(SessionStatus::Working), &plain, Utc::now());
        assert_eq!(next.status, SessionStatus::Errored);
        assert_eq!(next.summary.as_deref(), Some("agent exited with code 3"));
        assert_eq!(kinds(&events), [("session.errored", Priority::Warning)]);
        assert_eq!(
            events[0].message.as_deref(),
            Some("s-1: agent exited with code 3")
        );

        let told = report(ReportState::Exited {
            code: None,
            reason: Some("the pane died".into()),
        });
        let (next, _) = next_status(&session(SessionStatus::Working), &told, Utc::now());
        assert_eq!(next.summary.as_deref(), Some("the pane died"));
        assert_eq!(next.exit_code, None);
    }

    #[test]
    fn a_failed_setup_is_errored_with_its_reason() {
        let r = report(ReportState::Errored {
            reason: "git worktree add failed".into(),
        });
        let (next, events) = next_status(&session(SessionStatus::Spawning), &r, Utc::now());
        assert_eq!(next.status, SessionStatus::Errored);
        assert_eq!(next.activity, Some(Activity::Exited));
        assert_eq!(next.summary.as_deref(), Some("git worktree add failed"));
        assert_eq!(
            events[0].message.as_deref(),
            Some("s-1: git worktree add failed")
        );
    }

    #[test]
    fn killed_stays_killed_and_only_its_activity_follows() {
        let s = session(SessionStatus::Killed);
        for r in [
            running(Activity::WaitingInput),
            report(ReportState::Exited {
                code: Some(1),
                reason: None,
            }),
            report(ReportState::Stopped),
        ] {
            let (next, events) = next_status(&s, &r, Utc::now());
            assert_eq!(next.status, SessionStatus::Killed, "{r:?}");
            assert_eq!(next.activity, r.activity(), "{r:?}");
            assert!(events.is_empty(), "{r:?}");
        }
        // A starting report does not forget the activity it had.
        let mut exited = s.clone();
        exited.activity = Some(Activity::Exited);
        let (next, _) = next_status(&exited, &report(ReportState::Starting), Utc::now());
        assert_eq!(next, exited);
    }

    #[test]
    fn stuck_is_spawning_again_when_its_worker_says_starting() {
        let mut s = session(SessionStatus::Stuck);
        s.summary = Some("worker w1 is lost".into());
        let (next, events) = next_status(&s, &report(ReportState::Starting), Utc::now());
        assert_eq!(next.status, SessionStatus::Spawning);
        assert_eq!(next.summary, None);
        assert!(events.is_empty());
        // Starting changes nothing else.
        let working = session(SessionStatus::Working);
        let (next, _) = next_status(&working, &report(ReportState::Starting), Utc::now());
        assert_eq!(next, working);
    }

    #[test]
    fn a_report_fills_in_where_the_session_is() {
        let mut r = running(Activity::Active);
        r.worktree = Some("/w/s-1".into());
        r.branch = Some("ao/s-1".into());
        r.attach_command = Some("tmux attach -t s-1".into());
        let (next, _) = next_status(&session(SessionStatus::Working), &r, Utc::now());
        assert_eq!(next.worktree.as_deref(), Some("/w/s-1"));
        assert_eq!(next.branch, "ao/s-1");
        assert_eq!(next.attach_command.as_deref(), Some("tmux attach -t s-1"));
    }
}
