//! `ao session cleanup` as pure steps: which sessions are finished and what
//! is done with each ([`cleanup_candidates`]), and what a worker's answer
//! makes of it ([`outcome`]). The sessions actor carries them out
//! (`sessions::cleanup`).
//!
//! Work is never lost: a branch is deleted only when its PR was merged,
//! and a worktree with uncommitted changes is removed only when its PR
//! was merged or closed (the work was either taken or turned down).

use tokio::sync::oneshot;

use crate::model::SessionMap;
use crate::model::{Activity, SessionRecord, SessionRole, SessionStatus};
use crate::scm::PrState;

/// Why a session counts as finished (`reason` in `ao session cleanup --json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Its PR was merged.
    Merged,
    /// Its PR was closed unmerged.
    Closed,
    /// Its agent's runtime ended while its status said otherwise.
    Exited,
    Killed,
    Errored,
    Done,
}

impl Finished {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Merged => "merged",
            Self::Closed => "closed",
            Self::Exited => "exited",
            Self::Killed => "killed",
            Self::Errored => "errored",
            Self::Done => "done",
        }
    }

    /// Words for people: "its PR was merged".
    fn describe(self) -> &'static str {
        match self {
            Self::Merged => "its PR was merged",
            Self::Closed => "its PR was closed",
            Self::Exited => "its agent exited",
            Self::Killed => "it was killed",
            Self::Errored => "it errored",
            Self::Done => "its agent finished",
        }
    }
}

/// What cleanup does with one finished session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    pub finished: Finished,
    /// `git branch -D` its branch: only when its PR was merged.
    pub delete_branch: bool,
    /// Remove its worktree even with uncommitted changes: only when its PR
    /// was merged or closed.
    pub force: bool,
}

/// What cleanup does with `s`, or `None` while it is not finished (or is
/// a project's orchestrator, or was cleaned up already).
pub fn action(s: &SessionRecord) -> Option<Action> {
    if s.role == SessionRole::Orchestrator
        || matches!(s.status, SessionStatus::Cleanup | SessionStatus::Spawning)
    {
        return None;
    }
    let pr = s.pr_view.as_ref().map(|p| p.state);
    let finished = match (s.status, pr) {
        (SessionStatus::Merged, _) | (_, Some(PrState::Merged)) => Finished::Merged,
        (_, Some(PrState::Closed)) => Finished::Closed,
        // Its worker has not yet confirmed the stop: its runtime may still
        // hold the worktree.
        (SessionStatus::Killed, _) if s.activity != Some(Activity::Exited) => return None,
        (SessionStatus::Killed, _) => Finished::Killed,
        (SessionStatus::Errored, _) => Finished::Errored,
        (SessionStatus::Done, _) => Finished::Done,
        _ if s.activity == Some(Activity::Exited) => Finished::Exited,
        _ => return None,
    };
    let merged = finished == Finished::Merged;
    Some(Action {
        finished,
        delete_branch: merged,
        force: merged || finished == Finished::Closed,
    })
}

/// The finished sessions among `sessions` (of `project`, when given), in
/// the order given, each with what cleanup does with it.
pub fn cleanup_candidates<'a>(
    sessions: impl IntoIterator<Item = &'a SessionRecord>,
    project: Option<&str>,
) -> Vec<(String, Action)> {
    sessions
        .into_iter()
        .filter(|s| project.is_none_or(|p| s.project_id == p))
        .filter_map(|s| action(s).map(|a| (s.id.clone(), a)))
        .collect()
}

/// The sessions among `written` that have just become `merged` (from
/// what `before` held): those a `cleanupOnMerge` cleans. One cleaned up
/// already is not cleaned again, whatever a later look at its PR says.
pub fn newly_merged(written: &[&SessionRecord], before: &SessionMap) -> Vec<String> {
    written
        .iter()
        .filter(|s| s.status == SessionStatus::Merged)
        .filter(|s| {
            before
                .get(&s.id)
                .is_none_or(|b| !matches!(b.status, SessionStatus::Merged | SessionStatus::Cleanup))
        })
        .map(|s| s.id.clone())
        .collect()
}

/// One session's cleanup as the actor started it: finished, or asked of
/// its worker, whose outcome comes on the receiver (the outcome beside it
/// is the one to complete when none comes).
pub enum Cleaning {
    Done(Outcome),
    Asked(Outcome, oneshot::Receiver<Outcome>),
}

/// What became of one session (`action` in `ao session cleanup --json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    /// Its worktree is gone; the session is `cleanup`.
    Removed,
    /// Its worktree holds uncommitted changes and was kept.
    Kept,
    /// Its worker is not connected: nothing was done; run again later.
    Unreachable,
    /// Its worker could not do it (or did not answer).
    Failed,
    /// A dry run: the worktree would be removed.
    WouldRemove,
    /// A dry run: the worktree would be kept.
    WouldKeep,
}

impl OutcomeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Removed => "removed",
            Self::Kept => "kept",
            Self::Unreachable => "unreachable",
            Self::Failed => "failed",
            Self::WouldRemove => "would-remove",
            Self::WouldKeep => "would-keep",
        }
    }
}

/// What cleanup did, or would do, about one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub session: String,
    pub worker: Option<String>,
    /// Its worktree's path on its worker, if it ever had one.
    pub worktree: Option<String>,
    pub branch: String,
    pub kind: OutcomeKind,
    /// Its branch was (or, in a dry run, would be) deleted.
    pub branch_deleted: bool,
    pub finished: Finished,
    /// One sentence: what was done and why, what was kept, what failed.
    pub detail: String,
}

/// What a worker did about a removal it was asked (or found it would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub removed: bool,
    pub branch_deleted: bool,
    /// Why the worktree was kept.
    pub kept: Option<String>,
}

/// A worker's answer to a removal: what it did, or why it could not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerAnswer {
    pub request_id: u64,
    pub session_id: String,
    pub epoch: u64,
    pub worktree: Option<String>,
    pub result: Result<Removal, String>,
}

impl Outcome {
    /// The outcome of `action` on `s` before any worker answered, as
    /// `kind` says with `detail`.
    pub fn of(s: &SessionRecord, action: Action, kind: OutcomeKind, detail: String) -> Self {
        Self {
            session: s.id.clone(),
            worker: s.worker.clone(),
            worktree: s.worktree.clone(),
            branch: s.branch.clone(),
            kind,
            branch_deleted: false,
            finished: action.finished,
            detail,
        }
    }
}

/// The outcome of `action` on `s` from its worker's answer; a dry run's
/// answer says what would be done.
pub fn outcome(
    s: &SessionRecord,
    action: Action,
    dry_run: bool,
    answer: &Result<Removal, String>,
) -> Outcome {
    let why = action.finished.describe();
    let branch = &s.branch;
    let worktree = s
        .worktree
        .as_deref()
        .map_or_else(|| "its worktree".to_string(), |w| format!("worktree {w}"));
    let (kind, detail, deleted) = match answer {
        Err(e) => (OutcomeKind::Failed, format!("{why}, but: {e}"), false),
        Ok(Removal {
            kept: Some(kept), ..
        }) => {
            let (kind, verb) = if dry_run {
                (OutcomeKind::WouldKeep, "would keep")
            } else {
                (OutcomeKind::Kept, "kept")
            };
            let detail = format!(
                "{why}; {verb} {worktree}: {kept} (commit or discard them, then run again)"
            );
            (kind, detail, false)
        }
        Ok(r) => {
            let (kind, verb) = if dry_run {
                (OutcomeKind::WouldRemove, "would remove")
            } else {
                (OutcomeKind::Removed, "removed")
            };
            let branch_note = match (r.branch_deleted, dry_run) {
                (true, false) => format!("deleted branch {branch}"),
                (true, true) => format!("would delete branch {branch}"),
                (false, _) if action.delete_branch => format!("branch {branch} was already gone"),
                (false, _) => format!("kept branch {branch}: its work was not merged"),
            };
            let detail = format!("{why}; {verb} {worktree}; {branch_note}");
            (kind, detail, r.branch_deleted)
        }
    };
    Outcome {
        branch_deleted: deleted,
        ..Outcome::of(s, action, kind, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PrView;
    use crate::scm::{CiStatus, Mergeable, ReviewDecision};

    fn with_pr(mut s: SessionRecord, state: PrState) -> SessionRecord {
        s.pr_view = Some(PrView {
            number: 7,
            url: "https://github.test/o/r/pull/7".into(),
            state,
            head_sha: "abc".into(),
            ci: CiStatus::Passing,
            review: ReviewDecision::Approved,
            mergeable: Mergeable::Mergeable,
            required_green: true,
            failing: vec![],
        });
        s
    }

    fn session(id: &str, status: SessionStatus, activity: Option<Activity>) -> SessionRecord {
        SessionRecord {
            activity,
            ..SessionRecord::example(id, Some("w1"), status)
        }
    }

    #[test]
    fn finished_sessions_are_chosen_with_what_may_be_deleted() {
        use Activity::Exited;
        use SessionStatus::*;
        let mut orchestrator = session("app-9", Done, Some(Exited));
        orchestrator.role = SessionRole::Orchestrator;
        let mut other_project = session("web-1", Done, Some(Exited));
        other_project.project_id = "web".into();
        let sessions = [
            with_pr(
                session("app-1", Merged, Some(Activity::Active)),
                PrState::Merged,
            ),
            // The PR says merged before the status does.
            with_pr(
                session("app-2", Working, Some(Activity::Idle)),
                PrState::Merged,
            ),
            with_pr(
                session("app-3", Working, Some(Activity::Active)),
                PrState::Closed,
            ),
            with_pr(
                session("app-4", PrOpen, Some(Activity::Active)),
                PrState::Open,
            ),
            session("app-5", Killed, Some(Exited)),
            // Killed, the stop not yet confirmed.
            session("app-6", Killed, Some(Activity::Active)),
            session("app-7", Errored, Some(Exited)),
            session("app-8", Done, Some(Exited)),
            session("app-10", Working, Some(Exited)),
            session("app-11", Working, Some(Activity::Active)),
            session("app-12", Spawning, None),
            session("app-13", Cleanup, Some(Exited)),
            orchestrator,
            other_project,
        ];
        let picked = cleanup_candidates(&sessions, Some("app"));
        let act = |finished, delete_branch, force| Action {
            finished,
            delete_branch,
            force,
        };
        assert_eq!(
            picked,
            vec![
                ("app-1".into(), act(Finished::Merged, true, true)),
                ("app-2".into(), act(Finished::Merged, true, true)),
                ("app-3".into(), act(Finished::Closed, false, true)),
                ("app-5".into(), act(Finished::Killed, false, false)),
                ("app-7".into(), act(Finished::Errored, false, false)),
                ("app-8".into(), act(Finished::Done, false, false)),
                ("app-10".into(), act(Finished::Exited, false, false)),
            ]
        );
        let all = cleanup_candidates(&sessions, None);
        assert!(all.iter().any(|(id, _)| id == "web-1"));
        assert!(
            !all.iter().any(|(id, _)| id == "app-9"),
            "never the orchestrator"
        );
    }

    #[test]
    fn only_a_change_to_merged_triggers_a_cleanup_on_merge() {
        let before: SessionMap = [
            session("app-1", SessionStatus::PrOpen, None),
            session("app-2", SessionStatus::Merged, None),
            session("app-3", SessionStatus::Cleanup, Some(Activity::Exited)),
        ]
        .into_iter()
        .map(|s| (s.id.clone(), std::sync::Arc::new(s)))
        .collect();
        let now = [
            session("app-1", SessionStatus::Merged, None),
            session("app-2", SessionStatus::Merged, None),
            session("app-3", SessionStatus::Merged, None),
            session("app-4", SessionStatus::Merged, None),
            session("app-5", SessionStatus::Working, None),
        ];
        let written: Vec<&SessionRecord> = now.iter().collect();
        assert_eq!(newly_merged(&written, &before), ["app-1", "app-4"]);
    }

    #[test]
    fn outcomes_say_what_was_kept_and_why() {
        let merged = with_pr(
            session("app-1", SessionStatus::Merged, None),
            PrState::Merged,
        );
        let m = action(&merged).unwrap();
        let done = Removal {
            removed: true,
            branch_deleted: true,
            kept: None,
        };
        let o = outcome(&merged, m, false, &Ok(done.clone()));
        assert_eq!((o.kind, o.branch_deleted), (OutcomeKind::Removed, true));
        assert!(
            o.detail.contains("deleted branch feat/app-1"),
            "{}",
            o.detail
        );
        let dry = outcome(&merged, m, true, &Ok(done));
        assert_eq!(dry.kind, OutcomeKind::WouldRemove);
        assert!(dry.detail.contains("would delete branch"), "{}", dry.detail);

        let killed = session("app-2", SessionStatus::Killed, Some(Activity::Exited));
        let k = action(&killed).unwrap();
        let clean = Removal {
            removed: true,
            branch_deleted: false,
            kept: None,
        };
        let o = outcome(&killed, k, false, &Ok(clean));
        assert_eq!((o.kind, o.branch_deleted), (OutcomeKind::Removed, false));
        assert!(o.detail.contains("kept branch feat/app-2"), "{}", o.detail);

        let dirty = Removal {
            removed: false,
            branch_deleted: false,
            kept: Some("uncommitted changes (notes.md)".into()),
        };
        let o = outcome(&killed, k, false, &Ok(dirty));
        assert_eq!(o.kind, OutcomeKind::Kept);
        assert!(o.detail.contains("notes.md"), "{}", o.detail);

        let o = outcome(&killed, k, false, &Err("git failed".into()));
        assert_eq!(o.kind, OutcomeKind::Failed);
        assert!(o.detail.contains("git failed"), "{}", o.detail);
    }
}
