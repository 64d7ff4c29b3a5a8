//! The actor's side of the PR/CI loop: a look at a session's PR
//! ([`crate::pulls::apply_pr`]) and the reactions it and the agent's state
//! call for ([`crate::reactions::react`]), written with their events in one
//! transaction; then the messages to type are sent from the outbox and a
//! merge is handed back to the PR watcher, which calls the code host.

use std::collections::BTreeSet;

use chrono::Utc;

use super::Actor;
use crate::config::{ReactionAction, ReactionKey};
use crate::handle::Command;
use crate::keys;
use crate::model::SessionRecord;
use crate::model::{NewEvent, Priority};
use crate::pulls;
use crate::reactions::{self, merge_reported, policy, Situations};
use crate::reactions::{all_complete, decide};
use crate::scm::{MergeOutcome, PullRequest};
use crate::store::encode;

impl Actor {
    /// Applies a look at session `id`'s PR: its status and events, then
    /// its reactions. Returns the merge to call, if one is due.
    pub(super) async fn pr_seen(
        &mut self,
        id: &str,
        pr: &PullRequest,
        logs: &[(String, String)],
    ) -> Option<(u32, String)> {
        let s = self.session_copy(id)?;
        let config = self.config.clone()?;
        let now = Utc::now();
        let (mut next, mut events) = pulls::apply_pr(&s, pr, now);
        let base = config
            .projects
            .get(&s.project_id)
            .map_or("main", |p| p.default_branch());
        let situations = reactions::pr_situations(pr, logs, base);
        let out = reactions::react(&config, &mut next, situations, now);
        events.extend(out.events);
        if next != s || !events.is_empty() {
            if let Err(e) = self.write(&[&next], vec![], events).await {
                tracing::error!(session = id, "store write failed: {e}");
                return None;
            }
        }
        self.flush_outbox(id);
        out.merge
    }

    /// The reactions to what a worker's report changed of its agent:
    /// stuck, asking, exited. Their events join the report's.
    pub(super) fn react_to_agent(
        &self,
        before: &SessionRecord,
        next: &mut SessionRecord,
        events: &mut Vec<crate::model::NewEvent>,
    ) {
        let Some(config) = self.config.as_deref() else {
            return;
        };
        if (next.status, next.activity) == (before.status, before.activity) {
            return;
        }
        let now = Utc::now();
        let situations: Situations = reactions::agent_situations(next, now);
        events.extend(reactions::react(config, next, situations, now).events);
    }

    /// What the watcher's merge call came to.
    pub(super) async fn merge_done(
        &mut self,
        id: &str,
        number: u32,
        sha: &str,
        outcome: MergeOutcome,
    ) {
        let (Some(s), Some(config)) = (self.session_copy(id), self.config.clone()) else {
            return;
        };
        let key = ReactionKey::ApprovedAndGreen;
        let reaction = policy(&config, &s.project_id, key);
        let state = s.reactions.get(&key).cloned().unwrap_or_default();
        let (decision, state) = merge_reported(&reaction, &state, number, sha, &outcome);
        let mut next = s.clone();
        next.reactions.insert(key, state);
        let mut events: Vec<_> = decision.iter().map(|d| d.event(&next)).collect();
        if let MergeOutcome::Merged { commit } = &outcome {
            events.push(
                crate::model::NewEvent::session(
                    "merge.completed",
                    crate::model::Priority::Info,
                    &next,
                )
                .message(format!("{id}: PR #{number} merged as {commit}"))
                .data(serde_json::json!({ "commit": commit, "sha": sha })),
            );
        }
        self.write_or_log(&[&next], events).await;
    }

    /// Types every message in `id`'s outbox that is not on its way yet.
    /// The outbox is emptied once the worker confirms the message was
    /// typed; a message whose sending fails stays for the next flush.
    pub(super) fn flush_outbox(&mut self, id: &str) {
        let Some(s) = self.sessions.get(id).cloned() else {
            return;
        };
        if s.status.is_ended() {
            self.outboxes.remove(id);
            return;
        }
        for (key, state) in &s.reactions {
            let Some(text) = state.outbox.clone() else {
                continue;
            };
            if !self.in_flight.insert((id.to_string(), *key)) {
                continue;
            }
            // The same message is typed once, however often it is sent.
            let once = format!(
                "{key}:{}:{}",
                state.attempts,
                state.last_fingerprint.as_deref().unwrap_or("")
            );
            let sent = match self.send_input(id, text.clone(), false, Some(once)) {
                Ok(rx) => rx,
                Err(e) => {
                    tracing::debug!(session = id, reaction = %key, "message waits: {e}");
                    self.in_flight.remove(&(id.to_string(), *key));
                    continue;
                }
            };
            let me = self.me.clone();
            let (id, key) = (id.to_string(), *key);
            // A trace of its own per message, tied to the session.
            let span = tracing::info_span!(
                parent: None,
                "ao.reaction.send",
                ao.session.id = %id,
                ao.project.id = %s.project_id,
                ao.reaction = %key,
                vcs.pr.number = s.pr_view.as_ref().map_or(0, |p| p.number),
            );
            tokio::spawn(tracing::Instrument::instrument(
                async move {
                    let typed = matches!(sent.await, Ok(Ok(())));
                    if let Some(me) = me.upgrade() {
                        let _ = me.send(Command::Typed(id, key, text, typed)).await;
                    }
                },
                span,
            ));
        }
    }

    /// A message from the outbox was typed (or failed to be).
    pub(super) async fn typed(&mut self, id: &str, key: ReactionKey, text: &str, ok: bool) {
        self.in_flight.remove(&(id.to_string(), key));
        if !ok {
            return;
        }
        let Some(mut s) = self.session_copy(id) else {
            return;
        };
        let Some(state) = s.reactions.get_mut(&key) else {
            return;
        };
        if state.outbox.as_deref() == Some(text) {
            state.outbox = None;
            self.write_or_log(&[&s], vec![]).await;
        }
    }

    /// The projects' own reactions (`all-complete`), for the projects whose
    /// sessions changed: every worker session ended is a situation, a live
    /// one ends it. Their states are stored beside the sessions.
    pub(super) async fn judge_projects(&mut self) {
        let Some(config) = self.config.clone() else {
            return;
        };
        let now = Utc::now();
        for project in std::mem::take(&mut self.projects_changed) {
            let situation = if self.loads.of_project(&project) > 0 {
                None
            } else {
                all_complete(
                    self.sessions
                        .values()
                        .map(AsRef::as_ref)
                        .filter(|s| s.project_id == project),
                )
            };
            let key = ReactionKey::AllComplete;
            let mut states = self
                .project_reactions
                .get(&project)
                .cloned()
                .unwrap_or_default();
            let state = states.get(&key).cloned().unwrap_or_default();
            let reaction = policy(&config, &project, key);
            let (decision, next) = decide(&reaction, situation.as_ref(), &state, now);
            if next == state {
                continue;
            }
            if next == Default::default() {
                states.remove(&key);
            } else {
                states.insert(key, next);
            }
            let mut events = Vec::new();
            if let (Some(d), Some(s)) = (&decision, &situation) {
                events.push(
                    NewEvent::project("summary.all_complete", Priority::Info, &project)
                        .message(format!("{project}: {}", s.summary()))
                        .data(d.event_data()),
                );
                let action = d.action().map_or("escalate", ReactionAction::as_str);
                events.push(
                    NewEvent::project(d.event_kind(), d.priority(), &project)
                        .reaction(key.as_str(), action)
                        .message(d.summary.clone())
                        .data(d.event_data()),
                );
            }
            let put = (keys::project_reactions(&project), Some(encode(&states)));
            match self.write(&[], vec![put], events).await {
                Ok(()) => {
                    self.project_reactions.insert(project, states);
                }
                Err(e) => {
                    tracing::error!(%project, "store write failed: {e}");
                    self.projects_changed.insert(project);
                }
            }
        }
    }

    /// Sends what waits in every outbox (a restart, a worker back).
    pub(super) fn flush_outboxes(&mut self) {
        let ids: Vec<String> = self.outboxes.iter().cloned().collect();
        for id in ids {
            self.flush_outbox(&id);
        }
    }
}

/// The sessions among `sessions` with a message in an outbox.
pub(super) fn with_outbox<'a>(
    sessions: impl Iterator<Item = &'a SessionRecord>,
) -> BTreeSet<String> {
    sessions
        .filter(|s| s.reactions.values().any(|r| r.outbox.is_some()))
        .map(|s| s.id.clone())
        .collect()
}
