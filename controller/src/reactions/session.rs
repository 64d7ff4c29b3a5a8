//! A session's situations, read off its record and its PR, run through
//! [`decide`]: the step the actor takes after [`crate::pulls::apply_pr`] and
//! [`crate::reconcile::next_status`]. Still pure: the actor carries out
//! what comes back (messages to type, a merge to call) and stores the
//! record, whose reaction states say what was done.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::{Config, ReactionKey};
use crate::model::{Activity, NewEvent, SessionRecord, SessionStatus};
use crate::scm::{CheckState, CiStatus, Mergeable, PrState, PullRequest, ReviewDecision};

use super::engine::{decide, Act};
use super::policy::policy;
use super::situation::{FailedCheck, Situation};

/// What each reaction key is now: `Some` a situation, `None` over (its
/// state resets). A key left out is not known either way and is left alone.
pub type Situations = Vec<(ReactionKey, Option<Situation>)>;

/// The situations a PR puts its session in. `logs` are the failing
/// checks' log tails by name (fetched by the caller); `base` is the branch
/// to rebase on. CI still running (or not started on a new head) and
/// mergeability not computed yet say nothing, so that a CI failing after
/// each fix keeps counting towards the reaction's retries.
pub fn pr_situations(pr: &PullRequest, logs: &[(String, String)], base: &str) -> Situations {
    use ReactionKey::*;
    let keys = [
        CiFailed,
        ChangesRequested,
        BugbotComments,
        MergeConflicts,
        ApprovedAndGreen,
        PrClosed,
    ];
    if pr.state == PrState::Merged {
        return keys.into_iter().map(|k| (k, None)).collect();
    }
    let open = pr.state == PrState::Open;
    let mut out = Situations::new();
    match pr.ci() {
        CiStatus::Failing if open => {
            let checks = pr
                .checks
                .iter()
                .filter(|c| c.state == CheckState::Failed)
                .map(|c| FailedCheck {
                    name: c.name.clone(),
                    url: c.url.clone(),
                    log_tail: logs
                        .iter()
                        .find(|(name, _)| *name == c.name)
                        .map(|(_, tail)| tail.clone())
                        .or_else(|| c.output.clone())
                        .unwrap_or_default(),
                })
                .collect();
            out.push((
                CiFailed,
                Some(Situation::CiFailed {
                    number: pr.number,
                    checks,
                }),
            ));
        }
        CiStatus::Pending | CiStatus::None if open => {}
        _ => out.push((CiFailed, None)),
    }
    let (bots, humans): (Vec<_>, Vec<_>) = pr.comments.iter().cloned().partition(|c| c.bot);
    let changes = (open && pr.review == ReviewDecision::ChangesRequested)
        .then_some(Situation::ChangesRequested { comments: humans });
    out.push((ChangesRequested, changes));
    let bot_comments =
        (open && !bots.is_empty()).then_some(Situation::BotComments { comments: bots });
    out.push((BugbotComments, bot_comments));
    match pr.mergeable {
        Mergeable::Unknown if open => {}
        Mergeable::Conflicting if open => out.push((
            MergeConflicts,
            Some(Situation::MergeConflicts {
                base: base.to_string(),
            }),
        )),
        _ => out.push((MergeConflicts, None)),
    }
    if pr.mergeable != Mergeable::Unknown || !open {
        let ready = crate::model::PrView::of(pr).ready_to_merge();
        let green = ready.then(|| Situation::ApprovedAndGreen {
            number: pr.number,
            head_sha: pr.head_sha.clone(),
        });
        out.push((ApprovedAndGreen, green));
    }
    let closed = (pr.state == PrState::Closed).then_some(Situation::PrClosed { number: pr.number });
    out.push((PrClosed, closed));
    out
}

/// The situations of a session's agent, once a report changed its status
/// or activity: stuck, asking a human, or exited (a kill is no situation).
pub fn agent_situations(s: &SessionRecord, now: DateTime<Utc>) -> Situations {
    use ReactionKey::*;
    let stuck = (s.status == SessionStatus::Stuck).then(|| Situation::AgentStuck {
        stuck_for: s
            .activity_since
            .map(|t| (now - t).to_std().unwrap_or_default())
            .unwrap_or(Duration::ZERO),
    });
    let asking = (s.status == SessionStatus::NeedsInput).then(|| Situation::AgentNeedsInput {
        reason: s
            .activity_detail
            .clone()
            .unwrap_or_else(|| "waiting for input".into()),
    });
    let exited = (s.activity == Some(Activity::Exited) && s.status != SessionStatus::Killed)
        .then_some(Situation::AgentExited { code: s.exit_code });
    vec![
        (AgentStuck, stuck),
        (AgentNeedsInput, asking),
        (AgentExited, exited),
    ]
}

/// What the actor is to carry out after [`react`].
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// `reaction.triggered` / `reaction.escalated`, written with the record.
    pub events: Vec<NewEvent>,
    /// Messages to type into the agent, by the reaction that sends them.
    pub sends: Vec<(ReactionKey, String)>,
    /// A PR to merge if its head is still this SHA.
    pub merge: Option<(u32, String)>,
}

/// Runs `situations` through the project's reactions, updating `s`'s
/// reaction states. A message to send is also kept in its state's outbox
/// until the worker confirms it was typed, so that a controller that dies
/// in between sends it after its restart (see [`crate::model::ReactionState`]).
pub fn react(
    config: &Config,
    s: &mut SessionRecord,
    situations: Situations,
    now: DateTime<Utc>,
) -> Outcome {
    let mut out = Outcome::default();
    for (key, situation) in situations {
        let reaction = policy(config, &s.project_id, key);
        let state = s.reactions.get(&key).cloned().unwrap_or_default();
        let (decision, mut next) = decide(&reaction, situation.as_ref(), &state, now);
        if let Some(d) = &decision {
            match &d.act {
                Act::SendToAgent { message } => {
                    next.outbox = Some(message.clone());
                    out.sends.push((key, message.clone()));
                }
                Act::Merge { number, sha } => out.merge = Some((*number, sha.clone())),
                Act::Notify { .. } | Act::Escalate { .. } => {}
            }
        }
        if next == Default::default() {
            s.reactions.remove(&key);
        } else {
            s.reactions.insert(key, next);
        }
        if let Some(d) = decision {
            out.events.push(d.event(s));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scm::{Check, Comment, LogSource};

    fn failing_pr() -> PullRequest {
        PullRequest {
            number: 4,
            url: "u".into(),
            branch: "feat/x".into(),
            head_sha: "abc".into(),
            state: PrState::Open,
            draft: false,
            mergeable: Mergeable::Mergeable,
            review: ReviewDecision::None,
            checks: vec![Check {
                name: "test".into(),
                state: CheckState::Failed,
                required: true,
                url: None,
                output: Some("output text".into()),
                log: LogSource::ActionsJob(9),
            }],
            comments: vec![Comment {
                id: "c1".into(),
                author: "lint[bot]".into(),
                bot: true,
                path: Some("src/a.rs".into()),
                line: Some(3),
                body: "unused".into(),
                url: None,
            }],
            merge_commit: None,
        }
    }

    #[test]
    fn a_failing_pr_sends_its_log_once_and_keeps_it_in_the_outbox() {
        let config = Config::default();
        let mut s = SessionRecord::example("app-1", Some("w"), SessionStatus::CiFailed);
        let logs = vec![("test".to_string(), "error: expected 2, got 3".to_string())];
        let now = Utc::now();
        let out = react(
            &config,
            &mut s,
            pr_situations(&failing_pr(), &logs, "main"),
            now,
        );
        let keys: Vec<_> = out.sends.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, [ReactionKey::CiFailed, ReactionKey::BugbotComments]);
        assert!(
            out.sends[0].1.contains("expected 2, got 3"),
            "{}",
            out.sends[0].1
        );
        assert!(out.sends[1].1.contains("src/a.rs:3"), "{}", out.sends[1].1);
        assert_eq!(out.events.len(), 2);
        assert_eq!(out.events[0].kind, "reaction.triggered");
        assert_eq!(
            out.events[0].reaction,
            Some(("ci-failed".into(), "send-to-agent".into()))
        );
        assert!(s.reactions[&ReactionKey::CiFailed].outbox.is_some());
        // The same look again sends nothing.
        let again = react(
            &config,
            &mut s,
            pr_situations(&failing_pr(), &logs, "main"),
            now,
        );
        assert_eq!(again, Outcome::default());
        // Green CI clears the state; a running CI leaves it.
        let mut running = failing_pr();
        running.checks[0].state = CheckState::Pending;
        react(&config, &mut s, pr_situations(&running, &[], "main"), now);
        assert!(s.reactions.contains_key(&ReactionKey::CiFailed));
        running.checks[0].state = CheckState::Passed;
        react(&config, &mut s, pr_situations(&running, &[], "main"), now);
        assert!(!s.reactions.contains_key(&ReactionKey::CiFailed));
    }

    #[test]
    fn an_agent_asking_notifies_and_a_killed_one_is_no_exit() {
        let config = Config::default();
        let mut s = SessionRecord::example("app-1", Some("w"), SessionStatus::NeedsInput);
        s.activity_detail = Some("permission dialog".into());
        let situations = agent_situations(&s, Utc::now());
        let out = react(&config, &mut s, situations, Utc::now());
        assert_eq!(out.events.len(), 1);
        assert_eq!(
            out.events[0]
                .message
                .as_deref()
                .map(|m| m.contains("permission dialog")),
            Some(true)
        );
        assert!(out.sends.is_empty());
        s.status = SessionStatus::Killed;
        s.activity = Some(Activity::Exited);
        let situations = agent_situations(&s, Utc::now());
        assert!(situations.iter().all(|(_, sit)| sit.is_none()));
    }
}
