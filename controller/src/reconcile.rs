//! What a worker says about a session, in the controller's terms, and what
//! it does to the session: [`next_status`], the reconcile step.

use chrono::{DateTime, Utc};

use crate::model::{
    Activity, ActivityChange, ActivitySource, NewEvent, Priority, SessionRecord, SessionStatus,
    ACTIVITY_HISTORY,
};

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
    /// How the worker knows the activity; `None` when it does not say.
    pub evidence: Option<Evidence>,
    /// Active with no sign of life for the session's stuck threshold.
    pub stuck: bool,
    pub agent_session_id: Option<String>,
}

/// How the worker knows what the agent does.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    pub source: ActivitySource,
    pub since: DateTime<Utc>,
    pub detail: Option<String>,
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
    if let Some(id) = &r.agent_session_id {
        next.agent_session_id = Some(id.clone());
    }
    if r.evidence.is_some() || !matches!(r.state, ReportState::Starting) {
        next.activity_source = r.evidence.as_ref().map(|e| e.source);
        next.activity_since = r.evidence.as_ref().map(|e| e.since);
        next.activity_detail = r.evidence.as_ref().and_then(|e| e.detail.clone());
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
                _ if r.stuck => SessionStatus::Stuck,
                Some(Activity::WaitingInput | Activity::Blocked) => SessionStatus::NeedsInput,
                Some(Activity::Idle | Activity::Ready) => SessionStatus::Idle,
                _ => SessionStatus::Working,
            };
            // An open PR's state says more than working or idle.
            let composed = crate::pulls::compose(status, s.pr_view.as_ref());
            if composed != s.status {
                next.status = composed;
                next.summary = None;
                if composed == status {
                    events.push(status_event(&next, r));
                }
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
    if (next.activity, next.activity_source) != (s.activity, s.activity_source) {
        next.activity_history.push(ActivityChange {
            at: now,
            activity: next.activity,
            source: next.activity_source,
            detail: next.activity_detail.clone(),
        });
        let over = next.activity_history.len().saturating_sub(ACTIVITY_HISTORY);
        next.activity_history.drain(..over);
    }
    (next, events)
}

/// What an agent said of itself with `ao report` (its worker checked it
/// came from the session): a `session.report` event, and the PR it names.
/// Its effect on the activity arrives with the worker's next report.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentReport {
    pub session_id: String,
    pub epoch: u64,
    pub state: String,
    pub note: Option<String>,
    pub pr_url: Option<String>,
}

pub fn agent_report(s: &SessionRecord, r: &AgentReport) -> (SessionRecord, Vec<NewEvent>) {
    let mut next = s.clone();
    if let Some(url) = &r.pr_url {
        next.pr = Some(url.clone());
        next.pr_number = pr_number(url).or(next.pr_number);
    }
    let priority = match r.state.as_str() {
        "needs_input" | "blocked" => Priority::Action,
        _ => Priority::Info,
    };
    let note = r
        .note
        .as_deref()
        .map(|n| format!(": {n}"))
        .unwrap_or_default();
    let event = NewEvent::session("session.report", priority, &next)
        .message(format!("{} reports {}{note}", next.id, r.state))
        .data(serde_json::json!({
            "state": r.state,
            "note": r.note,
            "prUrl": r.pr_url,
        }));
    (next, vec![event])
}

/// The number of a pull request URL (`…/pull/42`, `…/merge_requests/42`).
fn pr_number(url: &str) -> Option<u32> {
    let mut parts = url.trim_end_matches('/').rsplit('/');
    let n = parts.next()?.parse().ok()?;
    matches!(parts.next()?, "pull" | "pulls" | "merge_requests").then_some(n)
}

/// The event of a running session entering `next.status`, saying why.
fn status_event(next: &SessionRecord, r: &Report) -> NewEvent {
    let why = r
        .evidence
        .as_ref()
        .and_then(|e| e.detail.as_deref())
        .map(|d| format!(": {d}"))
        .unwrap_or_default();
    match next.status {
        SessionStatus::Stuck => NewEvent::session("session.stuck", Priority::Urgent, next)
            .message(format!("{} shows no sign of life{why}", next.id)),
        SessionStatus::NeedsInput if next.activity == Some(Activity::Blocked) => {
            NewEvent::session("session.needs_input", Priority::Action, next)
                .message(format!("{} is blocked{why}", next.id))
        }
        SessionStatus::NeedsInput => {
            NewEvent::session("session.needs_input", Priority::Action, next)
                .message(format!("{} is waiting for input{why}", next.id))
        }
        SessionStatus::Idle => NewEvent::session("session.idle", Priority::Info, next),
        _ => NewEvent::session("session.working", Priority::Info, next),
    }
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
            evidence: None,
            stuck: false,
            agent_session_id: None,
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
    fn an_open_prs_status_outlasts_working_and_idle_but_not_a_question() {
        let mut s = session(SessionStatus::CiFailed);
        s.pr_view = Some(crate::model::PrView {
            number: 3,
            url: "u".into(),
            state: crate::scm::PrState::Open,
            head_sha: "a".into(),
            ci: crate::scm::CiStatus::Failing,
            review: crate::scm::ReviewDecision::None,
            mergeable: crate::scm::Mergeable::Mergeable,
            required_green: false,
            failing: vec!["test".into()],
        });
        for activity in [Activity::Active, Activity::Ready] {
            let (next, events) = next_status(&s, &running(activity), Utc::now());
            assert_eq!((next.status, events.len()), (SessionStatus::CiFailed, 0));
        }
        let (asking, events) = next_status(&s, &running(Activity::WaitingInput), Utc::now());
        assert_eq!(asking.status, SessionStatus::NeedsInput);
        assert_eq!(kinds(&events), [("session.needs_input", Priority::Action)]);
        // Back at work, it is the PR's state again, and says no `session.working`.
        let (back, events) = next_status(&asking, &running(Activity::Active), Utc::now());
        assert_eq!((back.status, events.len()), (SessionStatus::CiFailed, 0));
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

    fn with_evidence(mut r: Report, source: ActivitySource, detail: &str) -> Report {
        r.evidence = Some(Evidence {
            source,
            since: Utc::now(),
            detail: Some(detail.into()),
        });
        r
    }

    #[test]
    fn evidence_is_kept_with_a_short_history_of_changes() {
        let mut s = session(SessionStatus::Working);
        let steps = [
            (Activity::Active, ActivitySource::Hook, "UserPromptSubmit"),
            (
                Activity::WaitingInput,
                ActivitySource::Hook,
                "PermissionRequest Bash(cargo test)",
            ),
            (
                Activity::Active,
                ActivitySource::Transcript,
                "tool_result at line 9",
            ),
        ];
        for (activity, source, detail) in steps {
            (s, _) = next_status(
                &s,
                &with_evidence(running(activity), source, detail),
                Utc::now(),
            );
            assert_eq!(s.activity_source, Some(source));
            assert_eq!(s.activity_detail.as_deref(), Some(detail));
        }
        let seen: Vec<_> = s
            .activity_history
            .iter()
            .map(|c| (c.activity, c.source))
            .collect();
        assert_eq!(
            seen,
            [
                (Some(Activity::Active), Some(ActivitySource::Hook)),
                (Some(Activity::WaitingInput), Some(ActivitySource::Hook)),
                (Some(Activity::Active), Some(ActivitySource::Transcript)),
            ]
        );
        // The history is bounded.
        for i in 0..ACTIVITY_HISTORY * 2 {
            let activity = if i % 2 == 0 {
                Activity::Ready
            } else {
                Activity::Active
            };
            (s, _) = next_status(
                &s,
                &with_evidence(running(activity), ActivitySource::Transcript, "x"),
                Utc::now(),
            );
        }
        assert_eq!(s.activity_history.len(), ACTIVITY_HISTORY);
    }

    #[test]
    fn blocked_needs_a_human_and_says_why() {
        let r = with_evidence(
            running(Activity::Blocked),
            ActivitySource::Transcript,
            "API error 429 rate_limit",
        );
        let (next, events) = next_status(&session(SessionStatus::Working), &r, Utc::now());
        assert_eq!(next.status, SessionStatus::NeedsInput);
        assert_eq!(
            events[0].message.as_deref(),
            Some("s-1 is blocked: API error 429 rate_limit")
        );
    }

    #[test]
    fn stuck_is_one_event_per_episode_and_ends_with_a_sign_of_life() {
        let mut r = running(Activity::Active);
        r.stuck = true;
        let (stuck, events) = next_status(&session(SessionStatus::Working), &r, Utc::now());
        assert_eq!(stuck.status, SessionStatus::Stuck);
        assert_eq!(kinds(&events), [("session.stuck", Priority::Urgent)]);
        let (again, events) = next_status(&stuck, &r, Utc::now());
        assert_eq!((again.status, events.len()), (SessionStatus::Stuck, 0));
        let (alive, events) = next_status(&stuck, &running(Activity::Active), Utc::now());
        assert_eq!(alive.status, SessionStatus::Working);
        assert_eq!(kinds(&events), [("session.working", Priority::Info)]);
    }

    #[test]
    fn the_agents_session_id_is_recorded_and_kept() {
        let mut r = running(Activity::Ready);
        r.agent_session_id = Some("5f0c2a9e".into());
        let (next, _) = next_status(&session(SessionStatus::Working), &r, Utc::now());
        assert_eq!(next.agent_session_id.as_deref(), Some("5f0c2a9e"));
        let (next, _) = next_status(&next, &running(Activity::Active), Utc::now());
        assert_eq!(next.agent_session_id.as_deref(), Some("5f0c2a9e"));
    }

    #[test]
    fn an_agents_report_is_an_event_and_names_its_pr() {
        let r = AgentReport {
            session_id: "s-1".into(),
            epoch: 1,
            state: "pr_created".into(),
            note: Some("ready for review".into()),
            pr_url: Some("https://github.com/o/r/pull/42".into()),
        };
        let (next, events) = agent_report(&session(SessionStatus::Working), &r);
        assert_eq!(next.pr.as_deref(), Some("https://github.com/o/r/pull/42"));
        assert_eq!(next.pr_number, Some(42));
        assert_eq!(kinds(&events), [("session.report", Priority::Info)]);
        assert_eq!(
            events[0].message.as_deref(),
            Some("s-1 reports pr_created: ready for review")
        );
        assert_eq!(pr_number("https://example.com/not-a-pr/7"), None);
    }
}
