//! A session's pull request as the controller last saw it, and the pure
//! step that applies a newer look at it: the session's `pr`, `ciStatus`,
//! `reviewDecision` and `status`, and an event for every change
//! (`pr.created`, `ci.failed`, `review.approved`, `merge.ready`, …).
//! Beside [`crate::reconcile::next_status`], which does the same for the
//! worker's reports; the reactions engine reads what both leave.

use crate::model::{Activity, NewEvent, PrView, Priority, SessionRecord, SessionStatus};
use crate::scm::{CheckState, CiStatus, Mergeable, PrState, PullRequest, ReviewDecision};
use chrono::{DateTime, Utc};

impl PrView {
    pub fn of(pr: &PullRequest) -> Self {
        Self {
            number: pr.number,
            url: pr.url.clone(),
            state: pr.state,
            head_sha: pr.head_sha.clone(),
            ci: pr.ci(),
            review: pr.review,
            mergeable: pr.mergeable,
            required_green: pr.required_green(),
            failing: pr
                .checks
                .iter()
                .filter(|c| c.state == CheckState::Failed)
                .map(|c| c.name.clone())
                .collect(),
        }
    }

    /// Open, approved, every required check green and no conflict: what
    /// `approved-and-green` waits for, and the dashboard's merge button.
    pub fn ready_to_merge(&self) -> bool {
        self.blockers().is_empty()
    }

    /// Why the PR is not ready to merge, one sentence each; empty when it is.
    pub fn blockers(&self) -> Vec<String> {
        let n = self.number;
        let mut out = Vec::new();
        match self.state {
            PrState::Open => {}
            PrState::Merged => out.push(format!("PR #{n} is merged already")),
            PrState::Closed => out.push(format!("PR #{n} is closed")),
        }
        if self.review != ReviewDecision::Approved {
            out.push(format!(
                "PR #{n} is not approved (review: {})",
                self.review.as_str()
            ));
        }
        if !self.required_green {
            let failing = if self.failing.is_empty() {
                format!("CI is {}", self.ci.as_str())
            } else {
                format!("failing: {}", self.failing.join(", "))
            };
            out.push(format!("the required checks are not all green ({failing})"));
        }
        match self.mergeable {
            Mergeable::Mergeable => {}
            Mergeable::Conflicting => out.push(format!("PR #{n} conflicts with its base")),
            Mergeable::Unknown => {
                out.push("GitHub has not said yet whether it merges cleanly".into())
            }
        }
        out
    }

    /// The session status the PR alone means, if it means one.
    fn status(&self) -> Option<SessionStatus> {
        Some(match self.state {
            PrState::Merged => SessionStatus::Merged,
            PrState::Closed => return None,
            PrState::Open if self.ci == CiStatus::Failing => SessionStatus::CiFailed,
            PrState::Open if self.review == ReviewDecision::ChangesRequested => {
                SessionStatus::ChangesRequested
            }
            PrState::Open if self.ready_to_merge() => SessionStatus::Mergeable,
            PrState::Open if self.review == ReviewDecision::Approved => SessionStatus::Approved,
            PrState::Open if self.review == ReviewDecision::Pending => SessionStatus::ReviewPending,
            PrState::Open => SessionStatus::PrOpen,
        })
    }
}

/// Statuses that only a PR gives.
fn is_pr_status(s: SessionStatus) -> bool {
    use SessionStatus::*;
    matches!(
        s,
        PrOpen | CiFailed | ReviewPending | ChangesRequested | Approved | Mergeable
    )
}

/// A session's status from what its agent does (`activity_status`, as
/// [`crate::reconcile::next_status`] judges it) and its PR: a human
/// needed (needs input, stuck) and an ended session win; otherwise an
/// open PR's state says more than "working" or "idle".
pub fn compose(activity_status: SessionStatus, pr: Option<&PrView>) -> SessionStatus {
    use SessionStatus::*;
    let from_pr = pr.and_then(PrView::status);
    match (activity_status, from_pr) {
        // A merged PR ends the session whatever its agent did.
        (_, Some(Merged)) => Merged,
        (Working | Idle, Some(s)) => s,
        // The PR was closed: the agent's own state again.
        (s, None) if is_pr_status(s) => Working,
        (s, _) => s,
    }
}

/// The status an activity alone gives a running session.
fn activity_status(s: &SessionRecord) -> SessionStatus {
    match s.status {
        st if !is_pr_status(st) => st,
        _ => match s.activity {
            Some(Activity::WaitingInput | Activity::Blocked) => SessionStatus::NeedsInput,
            Some(Activity::Idle | Activity::Ready) => SessionStatus::Idle,
            _ => SessionStatus::Working,
        },
    }
}

/// The session after a look at its PR, and the events of what changed.
pub fn apply_pr(
    s: &SessionRecord,
    pr: &PullRequest,
    now: DateTime<Utc>,
) -> (SessionRecord, Vec<NewEvent>) {
    let view = PrView::of(pr);
    let before = s.pr_view.as_ref().filter(|v| v.number == view.number);
    let mut next = s.clone();
    next.pr = Some(view.url.clone());
    next.pr_number = Some(view.number);
    next.ci_status = view.ci.as_str().to_string();
    next.review_decision = view.review.as_str().to_string();
    if !s.status.is_ended() || view.state == PrState::Merged {
        next.status = compose(activity_status(s), Some(&view));
    }
    next.pr_view = Some(view.clone());
    let mut events = Vec::new();
    let event = |kind: &'static str, priority: Priority, message: String| {
        NewEvent::session(kind, priority, &next).message(message)
    };
    let (id, n) = (&s.id, view.number);
    match before {
        None => events.push(event(
            "pr.created",
            Priority::Info,
            format!("{id} opened PR #{n}: {}", view.url),
        )),
        Some(b) if b.head_sha != view.head_sha => events.push(event(
            "pr.updated",
            Priority::Info,
            format!(
                "PR #{n} of {id} has new commits ({})",
                short(&view.head_sha)
            ),
        )),
        Some(_) => {}
    }
    if view.ci == CiStatus::Failing
        && !(before.is_some_and(|b| b.ci == CiStatus::Failing)
            && before.is_some_and(|b| b.failing == view.failing))
    {
        events.push(
            event(
                "ci.failed",
                Priority::Warning,
                format!("CI failed on PR #{n} of {id}: {}", view.failing.join(", ")),
            )
            .data(serde_json::json!({ "checks": view.failing })),
        );
    }
    if view.ci == CiStatus::Passing && !before.is_some_and(|b| b.ci == CiStatus::Passing) {
        events.push(event(
            "ci.passing",
            Priority::Info,
            format!("CI passes on PR #{n} of {id}"),
        ));
    }
    let review_changed =
        !before.is_some_and(|b| b.review == view.review) && view.state == PrState::Open;
    match view.review {
        ReviewDecision::ChangesRequested if review_changed => events.push(event(
            "review.changes_requested",
            Priority::Action,
            format!("changes requested on PR #{n} of {id}"),
        )),
        ReviewDecision::Approved if review_changed => events.push(event(
            "review.approved",
            Priority::Action,
            format!("PR #{n} of {id} is approved"),
        )),
        ReviewDecision::Pending if review_changed => events.push(event(
            "review.pending",
            Priority::Info,
            format!("PR #{n} of {id} waits for a review"),
        )),
        _ => {}
    }
    let open = view.state == PrState::Open;
    if open
        && view.mergeable == Mergeable::Conflicting
        && !before.is_some_and(|b| b.mergeable == Mergeable::Conflicting)
    {
        events.push(event(
            "merge.conflicts",
            Priority::Warning,
            format!("PR #{n} of {id} conflicts with its base branch"),
        ));
    }
    if view.ready_to_merge() && !before.is_some_and(PrView::ready_to_merge) {
        events.push(event(
            "merge.ready",
            Priority::Action,
            format!("PR #{n} of {id} is approved and green"),
        ));
    }
    if !before.is_some_and(|b| b.state == view.state) {
        match view.state {
            PrState::Merged => events.push(event(
                "pr.merged",
                Priority::Info,
                format!("PR #{n} of {id} was merged"),
            )),
            PrState::Closed => events.push(event(
                "pr.closed",
                Priority::Warning,
                format!("PR #{n} of {id} was closed without merging"),
            )),
            PrState::Open => {}
        }
    }
    if next.status != s.status || !events.is_empty() {
        next.last_activity_at = now;
    }
    (next, events)
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(8)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scm::{Check, LogSource};

    fn check(name: &str, state: CheckState) -> Check {
        Check {
            name: name.into(),
            state,
            required: true,
            url: None,
            output: None,
            log: LogSource::None,
        }
    }

    fn pr(sha: &str, checks: Vec<Check>, review: ReviewDecision) -> PullRequest {
        PullRequest {
            number: 7,
            url: "https://github.com/o/r/pull/7".into(),
            branch: "feat/x".into(),
            head_sha: sha.into(),
            state: PrState::Open,
            draft: false,
            mergeable: Mergeable::Mergeable,
            review,
            checks,
            comments: vec![],
            merge_commit: None,
        }
    }

    /// `s` after a look at PR 7 at head `sha` with one required check
    /// `test` in `state` and `review`.
    fn look(
        s: &SessionRecord,
        sha: &str,
        state: CheckState,
        review: ReviewDecision,
    ) -> (SessionRecord, Vec<NewEvent>) {
        apply_pr(s, &pr(sha, vec![check("test", state)], review), Utc::now())
    }

    fn kinds(events: &[NewEvent]) -> Vec<&'static str> {
        events.iter().map(|e| e.kind).collect()
    }

    fn working() -> SessionRecord {
        let mut s = SessionRecord::example("app-1", Some("w"), SessionStatus::Working);
        s.activity = Some(Activity::Active);
        s
    }

    #[test]
    fn a_new_pr_is_created_and_its_ci_and_reviews_drive_the_status() {
        let now = Utc::now();
        let (s, events) = look(&working(), "a1", CheckState::Pending, ReviewDecision::None);
        assert_eq!(kinds(&events), ["pr.created"]);
        assert_eq!(
            (s.status, s.pr_number, s.ci_status.as_str()),
            (SessionStatus::PrOpen, Some(7), "pending")
        );
        assert_eq!(events[0].pr_number, Some(7));

        let (s, events) = look(&s, "a1", CheckState::Failed, ReviewDecision::None);
        assert_eq!(kinds(&events), ["ci.failed"]);
        assert_eq!(
            events[0].data,
            Some(serde_json::json!({"checks": ["test"]}))
        );
        assert_eq!(s.status, SessionStatus::CiFailed);
        // The same failure seen again is no new event.
        let (s, events) = look(&s, "a1", CheckState::Failed, ReviewDecision::None);
        assert!(events.is_empty(), "{:?}", kinds(&events));

        let (s, events) = look(
            &s,
            "b2",
            CheckState::Passed,
            ReviewDecision::ChangesRequested,
        );
        assert_eq!(
            kinds(&events),
            ["pr.updated", "ci.passing", "review.changes_requested"]
        );
        assert_eq!(s.status, SessionStatus::ChangesRequested);

        let (s, events) = look(&s, "b2", CheckState::Passed, ReviewDecision::Approved);
        assert_eq!(kinds(&events), ["review.approved", "merge.ready"]);
        assert_eq!(s.status, SessionStatus::Mergeable);

        let mut merged = pr(
            "b2",
            vec![check("test", CheckState::Passed)],
            ReviewDecision::Approved,
        );
        merged.state = PrState::Merged;
        let (s, events) = apply_pr(&s, &merged, now);
        assert_eq!(kinds(&events), ["pr.merged"]);
        assert_eq!(s.status, SessionStatus::Merged);
    }

    #[test]
    fn a_pending_required_check_or_a_conflict_is_not_ready() {
        let now = Utc::now();
        let mut optional = check("lint", CheckState::Pending);
        optional.required = false;
        let waiting = pr(
            "a",
            vec![check("test", CheckState::Pending), optional.clone()],
            ReviewDecision::Approved,
        );
        let (s, events) = apply_pr(&working(), &waiting, now);
        assert_eq!(s.status, SessionStatus::Approved);
        assert!(!kinds(&events).contains(&"merge.ready"));

        let mut conflicting = pr(
            "a",
            vec![check("test", CheckState::Passed), optional],
            ReviewDecision::Approved,
        );
        conflicting.mergeable = Mergeable::Conflicting;
        let (s, events) = apply_pr(&s, &conflicting, now);
        // The optional check still runs: CI as a whole is pending.
        assert_eq!(kinds(&events), ["merge.conflicts"]);
        assert_eq!(s.status, SessionStatus::Approved);
    }

    #[test]
    fn a_human_needed_outranks_the_pr_and_a_closed_pr_gives_the_agent_its_status_back() {
        let now = Utc::now();
        let mut asking = working();
        asking.status = SessionStatus::NeedsInput;
        asking.activity = Some(Activity::WaitingInput);
        let (s, _) = apply_pr(&asking, &pr("a", vec![], ReviewDecision::Pending), now);
        assert_eq!(s.status, SessionStatus::NeedsInput);
        assert_eq!(
            compose(SessionStatus::Idle, s.pr_view.as_ref()),
            SessionStatus::ReviewPending
        );

        let (s, _) = apply_pr(&working(), &pr("a", vec![], ReviewDecision::Pending), now);
        assert_eq!(s.status, SessionStatus::ReviewPending);
        let mut closed = pr("a", vec![], ReviewDecision::Pending);
        closed.state = PrState::Closed;
        let (s, events) = apply_pr(&s, &closed, now);
        assert_eq!(kinds(&events), ["pr.closed"]);
        assert_eq!(s.status, SessionStatus::Working);
    }

    #[test]
    fn an_ended_session_keeps_its_status_unless_its_pr_merges() {
        let now = Utc::now();
        let mut done = working();
        done.status = SessionStatus::Done;
        let (s, _) = apply_pr(&done, &pr("a", vec![], ReviewDecision::None), now);
        assert_eq!(s.status, SessionStatus::Done);
        let mut merged = pr("a", vec![], ReviewDecision::None);
        merged.state = PrState::Merged;
        let (s, _) = apply_pr(&s, &merged, now);
        assert_eq!(s.status, SessionStatus::Merged);
    }
}
