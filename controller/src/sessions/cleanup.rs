//! The sessions actor's cleanup of finished sessions: each is handed to its
//! worker, which stops what is left of it and removes its worktree, and is
//! `cleanup` once the worker says the worktree is gone. What to clean and
//! how is decided in [`crate::cleanup`]. A child of [`super`]: the same
//! actor, its cleanup methods.

use tokio::sync::oneshot;

use super::Actor;
use crate::cleanup::{
    self, cleanup_candidates, Action, Cleaning, Outcome, OutcomeKind, Removal, WorkerAnswer,
};
use crate::convert;
use crate::error::ControllerError;
use crate::model::{Activity, NewEvent, Priority, SessionRecord, SessionStatus};
use crate::pending::RemovalAsk;

impl Actor {
    /// `ao session cleanup`: starts the cleanup of every finished session
    /// (of `project`). Sessions that never had a worker are ended at once;
    /// the others wait for their worker's answer.
    pub(super) async fn cleanup(
        &mut self,
        project: Option<String>,
        dry_run: bool,
    ) -> Result<Vec<Cleaning>, ControllerError> {
        if let Some(p) = &project {
            self.check_project(p)?;
        } else {
            self.config()?;
        }
        let sessions = self.sessions.values().map(AsRef::as_ref);
        let mut out = Vec::new();
        for (id, action) in cleanup_candidates(sessions, project.as_deref()) {
            let Some(s) = self.session_copy(&id) else {
                continue;
            };
            if s.worker.is_none() {
                out.push(Cleaning::Done(
                    self.clean_unplaced(s, action, dry_run).await,
                ));
                continue;
            }
            let (tx, rx) = oneshot::channel();
            out.push(match self.ask_removal(&s, action, dry_run, Some(tx)) {
                None => Cleaning::Asked(
                    Outcome::of(&s, action, OutcomeKind::Failed, String::new()),
                    rx,
                ),
                Some(refused) => Cleaning::Done(refused),
            });
        }
        Ok(out)
    }

    /// With `cleanupOnMerge` set for its project, cleans up session `id`,
    /// whose PR was just merged. Nobody waits: its `session.cleaned` event
    /// (or a warning in the log) tells.
    pub(super) fn cleanup_after_merge(&mut self, id: &str) {
        let Some(s) = self.session_copy(id) else {
            return;
        };
        let wanted = self
            .config
            .as_ref()
            .is_some_and(|c| c.cleanup_on_merge(&s.project_id));
        let Some(action) = cleanup::action(&s).filter(|_| wanted) else {
            return;
        };
        if let Some(refused) = self.ask_removal(&s, action, false, None) {
            tracing::warn!(
                session = id,
                "no cleanup after the merge: {}",
                refused.detail
            );
        }
    }

    /// Asks `s`'s worker to carry `action` out; the outcome to give now
    /// when it cannot be asked.
    fn ask_removal(
        &mut self,
        s: &SessionRecord,
        action: Action,
        dry_run: bool,
        waiter: Option<oneshot::Sender<Outcome>>,
    ) -> Option<Outcome> {
        let worker = s.worker.clone().unwrap_or_default();
        let project = self
            .config
            .as_ref()
            .and_then(|c| c.projects.get(&s.project_id));
        let Some(project) = project else {
            let why = format!("project {} is no longer configured", s.project_id);
            return Some(Outcome::of(s, action, OutcomeKind::Failed, why));
        };
        let request_id = self.pending.next_id();
        let msg = convert::remove_workspace(request_id, s, project, action, dry_run);
        if !self.to_worker(Some(&worker), msg) {
            let why = format!("worker {worker} unreachable; run again once it is connected");
            return Some(Outcome::of(s, action, OutcomeKind::Unreachable, why));
        }
        let ask = RemovalAsk {
            session_id: s.id.clone(),
            epoch: s.epoch,
            action,
            dry_run,
            waiter,
        };
        self.pending.removal(request_id, worker, ask);
        None
    }

    /// A session that never reached a worker has nothing on disk: it is
    /// ended here.
    async fn clean_unplaced(&mut self, s: SessionRecord, action: Action, dry_run: bool) -> Outcome {
        let nothing = Removal {
            removed: true,
            branch_deleted: false,
            kept: None,
        };
        let mut out = cleanup::outcome(&s, action, dry_run, &Ok(nothing));
        out.detail = format!("{}; it never had a worktree", out.detail);
        if !dry_run {
            self.end_cleaned(s, &mut out).await;
        }
        out
    }

    /// A worker's answer to a removal: the session is `cleanup` when its
    /// worktree is gone, and whoever waits is told.
    pub(super) async fn workspace_removed(&mut self, worker: &str, answer: WorkerAnswer) {
        let Some(ask) = self.pending.removal_answered(worker, answer.request_id) else {
            return;
        };
        let Some(mut s) = self.session_copy(&ask.session_id) else {
            return;
        };
        // Where the worker looked: the record may never have had the path.
        s.worktree = answer.worktree.or(s.worktree);
        let mut out = cleanup::outcome(&s, ask.action, ask.dry_run, &answer.result);
        if out.kind == OutcomeKind::Removed {
            if s.epoch == ask.epoch {
                self.end_cleaned(s, &mut out).await;
            } else {
                out.kind = OutcomeKind::Failed;
                out.detail = format!("{} was restored meanwhile; left as it is", s.id);
            }
        }
        if !matches!(out.kind, OutcomeKind::Removed | OutcomeKind::WouldRemove) {
            tracing::warn!(session = %out.session, "cleanup: {}", out.detail);
        }
        if let Some(waiter) = ask.waiter {
            let _ = waiter.send(out);
        }
    }

    /// Records `s` as cleaned up, with a `session.cleaned` event; a store
    /// that refuses turns `out` into a failure.
    async fn end_cleaned(&mut self, mut s: SessionRecord, out: &mut Outcome) {
        s.status = SessionStatus::Cleanup;
        s.activity = Some(Activity::Exited);
        s.summary = Some(out.detail.clone());
        let event = NewEvent::session("session.cleaned", Priority::Info, &s)
            .message(format!("{}: {}", s.id, out.detail))
            .data(serde_json::json!({
                "worktree": out.worktree,
                "branchDeleted": out.branch_deleted,
                "reason": out.finished.as_str(),
            }));
        if let Err(e) = self.write(&[&s], vec![], vec![event]).await {
            out.kind = OutcomeKind::Failed;
            out.detail = format!("{}, but recording it failed: {e}", out.detail);
        }
    }
}
