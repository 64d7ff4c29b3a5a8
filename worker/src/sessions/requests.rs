//! The controller's requests about one session that the actor answers
//! off its loop: input to type, and a finished session's worktree to remove.

use super::*;
use crate::delivery::once::{self, Once};

impl Actor {
    /// A finished session's end: unless it is a dry run, the session is
    /// forgotten and what is left of its runtime stopped (as a stop does,
    /// without a report: the controller is told of the removal instead),
    /// then its worktree is removed as [`workspace::remove`] decides.
    pub(super) fn remove_workspace(&mut self, r: RemoveWorkspace) {
        let worktree = self.settings.home.worktree(&r.project_id, &r.session_id);
        let held = self
            .sessions
            .get(&r.session_id)
            .map(|l| l.meta.epoch)
            .or_else(|| self.setting_up.get(&r.session_id).copied());
        let (request_id, session_id, epoch) = (r.request_id, r.session_id.clone(), r.epoch);
        let answer = move |result| {
            ToController::WorkspaceRemoved(WorkspaceRemoved {
                request_id,
                session_id,
                epoch,
                worktree,
                result,
            })
        };
        if let Some(epoch) = held.filter(|e| *e > r.epoch) {
            let why = format!("the session runs here at a newer epoch ({epoch})");
            return self.send(answer(Err(why)));
        }
        if !r.dry_run {
            self.setting_up.remove(&r.session_id);
            if let Some(mut l) = self.sessions.remove(&r.session_id) {
                l.output.close_viewers();
            }
            let _ = std::fs::remove_file(self.settings.home.session_meta(&r.session_id));
        }
        let runtime = self.runtime.clone();
        let reports = self.reports.clone();
        let locks = self.repo_locks.clone();
        let path = self.settings.home.worktree(&r.project_id, &r.session_id);
        self.tasks.spawn(async move {
            let stopped = if r.dry_run {
                Ok(())
            } else {
                runtime.stop(&r.session_id).await.map_err(|e| e.to_string())
            };
            let spec = workspace::RemovalSpec {
                repo: &r.repo_path,
                path: &path,
                branch: &r.branch,
                delete_branch: r.delete_branch,
                force: r.force,
                symlinks: &r.symlinks,
                dry_run: r.dry_run,
            };
            let result = match stopped {
                Ok(()) => workspace::remove(&spec, &locks)
                    .await
                    .map_err(|e| ao_proto::error_chain(&e)),
                Err(e) => Err(format!("cannot stop its runtime: {e}")),
            };
            let _ = reports.send(answer(result)).await;
        });
    }

    pub(super) fn input(&mut self, i: Input) {
        let request_id = i.request_id;
        let outcome = move |result: Result<(), String>| {
            ToController::InputOutcome(InputOutcome { request_id, result })
        };
        let refused = match self.sessions.get(&i.session_id) {
            None => Some("no such session on this worker".to_string()),
            Some(l) if l.meta.epoch != i.epoch => Some(format!(
                "stale epoch {} (session is at {})",
                i.epoch, l.meta.epoch
            )),
            Some(l) if l.exited.is_some() => Some("the agent has exited".to_string()),
            Some(_) => None,
        };
        if let Some(why) = refused {
            return self.send(outcome(Err(why)));
        }
        let keyboard = self.sessions[&i.session_id].keyboard.clone();
        let runtime = self.runtime.clone();
        let reports = self.reports.clone();
        let once = self.settings.home.typed_once(&i.session_id);
        self.tasks.spawn(async move {
            if let Some(key) = &i.once_key {
                if typed_before(runtime.as_ref(), &once, key, &i.session_id, &i.text).await {
                    let _ = reports.send(outcome(Ok(()))).await;
                    return;
                }
            }
            let delivered = if i.raw {
                // Keys as they are: no Enter, and nothing to look for on
                // the screen (control keys do not echo as themselves).
                let _turn = keyboard.lock().await;
                runtime
                    .write_keys(&i.session_id, &i.text)
                    .await
                    .map_err(Undelivered::before_typing)
            } else {
                deliver(runtime.as_ref(), &keyboard, &i.session_id, &i.text).await
            };
            if let (Ok(()), Some(key)) = (&delivered, &i.once_key) {
                once::note(&once, key, Once::Typed);
            }
            let _ = reports.send(outcome(delivered.map_err(|e| e.reason))).await;
        });
    }
}

/// Whether the message `key` names was typed already: recorded typed, or
/// claimed by a worker that died while typing it and on the screen. A
/// message not seen before is claimed now, before it is typed.
async fn typed_before(
    runtime: &dyn Runtime,
    file: &std::path::Path,
    key: &str,
    session: &str,
    text: &str,
) -> bool {
    match once::state(file, key) {
        Once::Typed => true,
        Once::Claimed => {
            let needle = crate::delivery::echo_needle(&distinctive(text));
            let shown = runtime
                .capture(session, crate::delivery::HISTORY)
                .await
                .is_ok_and(|screen| screen.contains(&needle));
            if shown {
                once::note(file, key, Once::Typed);
            }
            shown
        }
        Once::New => {
            once::note(file, key, Once::Claimed);
            false
        }
    }
}

/// `text` up to its last line that says something (not a code fence or
/// a short line), so that what is looked for on the screen is its own.
fn distinctive(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let says = |l: &&str| {
        let t = l.trim();
        t.len() >= 8 && !t.chars().all(|c| c == '`')
    };
    let keep = lines.iter().rposition(says).map_or(lines.len(), |i| i + 1);
    lines[..keep].join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_message_is_looked_for_by_its_last_line_that_says_something() {
        let ci = "CI failed.\n\n### test\n```\nexpected 42, got 41\n```";
        assert!(super::distinctive(ci).ends_with("expected 42, got 41"));
        assert_eq!(super::distinctive("plain message"), "plain message");
    }
}
