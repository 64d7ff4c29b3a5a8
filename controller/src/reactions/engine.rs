//! The decision step: given a reaction's policy, the situation now, what was done about it so far
//! and the time, what to do next. Pure and idempotent: the same inputs give the same decision,
//! and a state that records a decision never gives it again within [`RETRY_INTERVAL`], so a
//! controller that restarts with its stored state repeats nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::{EscalateAfter, ReactionAction, ReactionKey};
use crate::model::{NewEvent, Priority, SessionRecord};
use crate::scm::MergeOutcome;

use super::messages::{notification, to_agent};
use super::policy::Reaction;
use super::situation::{human_duration, short_sha, Situation};

/// How long a situation that has not changed waits before its action (a message to the agent, a
/// merge) is taken again: the agent may have missed the message, the merge call may have been
/// lost. Notifications are not repeated: a human told once is told again only of something new.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(10 * 60);

pub use crate::model::{ReactionState, ReactionStates};

/// One thing to do, and what to log about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub reaction: ReactionKey,
    /// Actions taken about the situation, this one included (for an escalation: before it).
    pub attempts: u32,
    pub act: Act,
    /// One line for the event log.
    pub summary: String,
}

/// What the controller is to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Act {
    /// Type `message` into the session's agent.
    SendToAgent { message: String },
    /// Tell the humans that `priority` routes to.
    Notify { priority: Priority, message: String },
    /// Merge PR `number` if its head is still `sha` (the SCM's guarded merge); report the
    /// outcome with [`merge_reported`].
    Merge { number: u32, sha: String },
    /// The automatic handling did not resolve it: hand it to a human.
    Escalate { priority: Priority, message: String },
}

impl Decision {
    /// `reaction.escalated` for an escalation, else `reaction.triggered`.
    pub fn event_kind(&self) -> &'static str {
        match self.act {
            Act::Escalate { .. } => "reaction.escalated",
            _ => "reaction.triggered",
        }
    }

    /// The `action` of a `reaction.triggered` event; none for an escalation.
    pub fn action(&self) -> Option<ReactionAction> {
        match self.act {
            Act::SendToAgent { .. } => Some(ReactionAction::SendToAgent),
            Act::Notify { .. } => Some(ReactionAction::Notify),
            Act::Merge { .. } => Some(ReactionAction::AutoMerge),
            Act::Escalate { .. } => None,
        }
    }

    /// The event's priority: a notification's or escalation's own, else `action`.
    pub fn priority(&self) -> Priority {
        match self.act {
            Act::Notify { priority, .. } | Act::Escalate { priority, .. } => priority,
            Act::SendToAgent { .. } | Act::Merge { .. } => Priority::Action,
        }
    }

    /// The event's `data`: `reaction`, `action` (not for an escalation) and `attempts`.
    pub fn event_data(&self) -> serde_json::Value {
        let mut data = serde_json::json!({
            "reaction": self.reaction.as_str(),
            "attempts": self.attempts,
        });
        if let Some(action) = self.action() {
            data["action"] = serde_json::to_value(action).unwrap_or_default();
        }
        data
    }

    /// The event to log about this decision on `session`.
    pub fn event(&self, session: &SessionRecord) -> NewEvent {
        let action = self.action().map_or("escalate", ReactionAction::as_str);
        NewEvent::session(self.event_kind(), self.priority(), session)
            .reaction(self.reaction.as_str(), action)
            .message(self.summary.clone())
            .data(self.event_data())
    }
}

/// The next step of `policy` for `situation` (none: it is not, or no longer, the case), given
/// `state` and the time `now`; with the state to store once the decision is carried out. Store
/// it only then: a decision that could not be carried out (the worker was away) is decided
/// again from the old state.
///
/// - No situation: the state resets, so a later occurrence starts afresh. A caller that does
///   not know (CI running again after a push) does not call at all, so that a CI which fails
///   after each fix keeps counting towards its limit.
/// - `auto: false`: the action is not taken; a human is notified instead, once per fingerprint,
///   which for the default `approved-and-green` says a PR is ready for a human to merge (the
///   original `ao` notified only for `action: notify`; telling a human is the point of a
///   reaction that may not act).
/// - First seen: act. Still there: act again when its fingerprint changed, or (for actions other
///   than a notification) [`RETRY_INTERVAL`] has passed since the last action.
/// - Escalate (once, then silence until the situation clears) instead of attempt number n when
///   n > `retries` or n > `escalateAfter` (a count), as the original counts; or as soon as
///   the situation has lasted `escalateAfter` (a duration) since it was first acted on.
/// - Auto-merge never merges a head SHA whose merge was refused.
pub fn decide(
    policy: &Reaction,
    situation: Option<&Situation>,
    state: &ReactionState,
    now: DateTime<Utc>,
) -> (Option<Decision>, ReactionState) {
    let Some(situation) = situation else {
        return (None, ReactionState::default());
    };
    debug_assert_eq!(
        situation.key(),
        policy.key,
        "a situation decided by another policy"
    );
    let hold = (None, state.clone());
    if state.escalated {
        return hold;
    }
    if let (Some(threshold), Situation::AgentStuck { stuck_for }) = (policy.threshold, situation) {
        if *stuck_for < threshold {
            return hold;
        }
    }
    let fingerprint = situation.fingerprint();
    let changed = state.last_fingerprint.as_deref() != Some(fingerprint.as_str());
    let first_at = state.first_at.unwrap_or(now);
    let since = |t: DateTime<Utc>| (now - t).to_std().unwrap_or_default();
    let acted = |attempts| ReactionState {
        attempts,
        first_at: Some(first_at),
        last_at: Some(now),
        last_fingerprint: Some(fingerprint.clone()),
        ..state.clone()
    };
    let decision = |attempts, act| Decision {
        reaction: policy.key,
        attempts,
        act,
        summary: situation.summary(),
    };
    let attempt = state.attempts + 1;

    if !policy.auto {
        if !changed {
            return hold;
        }
        let message = notification(situation, policy.message.as_deref());
        let act = Act::Notify {
            priority: policy.priority,
            message,
        };
        return (Some(decision(attempt, act)), acted(attempt));
    }

    if let Situation::ApprovedAndGreen { head_sha, .. } = situation {
        if state.refused_sha.as_deref() == Some(head_sha.as_str()) {
            return hold;
        }
    }
    let repeats = policy.action != ReactionAction::Notify;
    let due = state.attempts == 0
        || changed
        || (repeats && state.last_at.is_none_or(|t| since(t) >= RETRY_INTERVAL));
    let over_time = matches!(policy.escalate_after,
        Some(EscalateAfter::Elapsed(limit)) if since(first_at) >= limit);
    let over_count = due
        && (policy.retries.is_some_and(|retries| attempt > retries)
            || matches!(policy.escalate_after, Some(EscalateAfter::Attempts(n)) if attempt > n));
    if over_time || over_count {
        let message = format!(
            "{}: {}; not resolved by {} automatic {} in {}",
            policy.key,
            situation.summary(),
            state.attempts,
            if state.attempts == 1 {
                "attempt"
            } else {
                "attempts"
            },
            human_duration(since(first_at)),
        );
        let escalated = ReactionState {
            escalated: true,
            ..acted(state.attempts)
        };
        let act = Act::Escalate {
            priority: policy.escalation_priority,
            message: message.clone(),
        };
        let mut decision = decision(state.attempts, act);
        decision.summary = message;
        return (Some(decision), escalated);
    }
    if !due {
        return hold;
    }
    let act = match (policy.action, situation) {
        (ReactionAction::AutoMerge, Situation::ApprovedAndGreen { number, head_sha }) => {
            Act::Merge {
                number: *number,
                sha: head_sha.clone(),
            }
        }
        (ReactionAction::SendToAgent, _) => Act::SendToAgent {
            message: to_agent(situation, policy.message.as_deref()),
        },
        // Validation keeps `auto-merge` to `approved-and-green`.
        (ReactionAction::Notify | ReactionAction::AutoMerge, _) => Act::Notify {
            priority: policy.priority,
            message: notification(situation, policy.message.as_deref()),
        },
    };
    (Some(decision(attempt, act)), acted(attempt))
}

/// Records how the merge of PR `number` at `sha` (an [`Act::Merge`]) went. A refusal (the head
/// moved, or the host would not merge) marks `sha` as never to be merged again; a new head is
/// evaluated afresh. A refusal by the host is also told to a human, since nothing the engine
/// does will change it. A merge error without an outcome (the host unreachable) is not
/// reported: the merge is decided again after [`RETRY_INTERVAL`].
pub fn merge_reported(
    policy: &Reaction,
    state: &ReactionState,
    number: u32,
    sha: &str,
    outcome: &MergeOutcome,
) -> (Option<Decision>, ReactionState) {
    let refused = ReactionState {
        refused_sha: Some(sha.to_owned()),
        ..state.clone()
    };
    match outcome {
        MergeOutcome::Merged { .. } => (None, state.clone()),
        MergeOutcome::HeadMoved => (None, refused),
        MergeOutcome::Refused(reason) => {
            let message = format!(
                "auto-merge of PR #{number} at {} was refused: {reason}; it is tried again \
                 when the PR changes",
                short_sha(sha)
            );
            let decision = Decision {
                reaction: policy.key,
                attempts: state.attempts,
                act: Act::Notify {
                    priority: policy.priority,
                    message: message.clone(),
                },
                summary: message,
            };
            (Some(decision), refused)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ReactionConfig};
    use crate::model::SessionStatus;
    use crate::reactions::policy::policy;
    use crate::reactions::situation::FailedCheck;
    use chrono::TimeZone;

    /// `minutes` after a fixed start.
    fn at(minutes: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 2, 9, 0, 0).unwrap() + chrono::Duration::minutes(minutes)
    }

    fn default_policy(key: ReactionKey) -> Reaction {
        policy(&Config::default(), "app", key)
    }

    fn ci(log: &str) -> Situation {
        Situation::CiFailed {
            number: 12,
            checks: vec![FailedCheck {
                name: "test".into(),
                url: None,
                log_tail: log.into(),
            }],
        }
    }

    /// Runs `decide` and keeps the new state, as the controller stores it.
    struct Run {
        policy: Reaction,
        state: ReactionState,
    }

    impl Run {
        fn new(policy: Reaction) -> Self {
            Self {
                policy,
                state: ReactionState::default(),
            }
        }

        fn step(&mut self, situation: Option<&Situation>, minutes: i64) -> Option<Act> {
            let (decision, state) = decide(&self.policy, situation, &self.state, at(minutes));
            if let Some(d) = &decision {
                assert_eq!(d.reaction, self.policy.key);
            }
            self.state = state;
            decision.map(|d| d.act)
        }
    }

    fn is_send(act: &Option<Act>) -> bool {
        matches!(act, Some(Act::SendToAgent { .. }))
    }

    #[test]
    fn a_situation_is_sent_once_then_again_on_news_or_after_the_interval() {
        let mut run = Run::new(default_policy(ReactionKey::CiFailed));
        let first = run.step(Some(&ci("assert failed")), 0);
        let Some(Act::SendToAgent { message }) = first else {
            panic!("{first:?}")
        };
        assert!(message.contains("assert failed"), "{message}");
        assert_eq!(run.state.attempts, 1);
        assert_eq!(run.state.first_at, Some(at(0)));

        assert_eq!(
            run.step(Some(&ci("assert failed")), 9),
            None,
            "unchanged, too soon"
        );
        assert_eq!(run.state.attempts, 1);
        assert!(is_send(&run.step(Some(&ci("panic")), 9)), "the log changed");
        assert_eq!(run.state.attempts, 2);
        assert_eq!(run.state.last_at, Some(at(9)));
    }

    #[test]
    fn retries_then_exactly_one_escalation_by_count() {
        // ci-failed: retries 2, escalateAfter 2.
        let mut run = Run::new(default_policy(ReactionKey::CiFailed));
        let failing = ci("boom");
        assert!(is_send(&run.step(Some(&failing), 0)));
        assert!(
            is_send(&run.step(Some(&failing), 10)),
            "the retry interval passed"
        );
        let escalation = run.step(Some(&failing), 20);
        assert_eq!(
            escalation,
            Some(Act::Escalate {
                priority: Priority::Urgent,
                message: "ci-failed: CI failed on PR #12: test; not resolved by 2 automatic \
                          attempts in 20m"
                    .into()
            })
        );
        assert!(run.state.escalated);
        assert_eq!(run.state.attempts, 2);
        for (situation, minutes) in [(&failing, 30), (&ci("new"), 31), (&failing, 500)] {
            assert_eq!(
                run.step(Some(situation), minutes),
                None,
                "silent once escalated"
            );
        }

        // It clears, and a later failure starts again.
        assert_eq!(run.step(None, 501), None);
        assert_eq!(run.state, ReactionState::default());
        assert!(is_send(&run.step(Some(&failing), 502)));
        assert_eq!(run.state.attempts, 1);
    }

    #[test]
    fn retries_alone_bound_the_attempts() {
        let policy = Reaction {
            retries: Some(1),
            escalate_after: None,
            ..default_policy(ReactionKey::CiFailed)
        };
        let mut run = Run::new(policy);
        assert!(is_send(&run.step(Some(&ci("a")), 0)));
        assert!(matches!(
            run.step(Some(&ci("b")), 1),
            Some(Act::Escalate { .. })
        ));
    }

    #[test]
    fn retries_then_exactly_one_escalation_by_duration() {
        // changes-requested: escalateAfter 30m, no retries limit.
        let mut run = Run::new(default_policy(ReactionKey::ChangesRequested));
        let comment = |id: &str| crate::scm::Comment {
            id: id.into(),
            author: "rev".into(),
            bot: false,
            path: Some("src/lib.rs".into()),
            line: Some(3),
            body: "Rename this.".into(),
            url: None,
        };
        let review = Situation::ChangesRequested {
            comments: vec![comment("c1")],
        };
        assert!(is_send(&run.step(Some(&review), 0)));
        assert!(is_send(&run.step(Some(&review), 10)));
        assert!(is_send(&run.step(Some(&review), 20)));
        assert_eq!(run.step(Some(&review), 29), None);
        let Some(Act::Escalate { priority, message }) = run.step(Some(&review), 30) else {
            panic!("thirty minutes after the first send")
        };
        assert_eq!(priority, Priority::Urgent);
        assert!(message.contains("3 automatic attempts in 30m"), "{message}");
        let more = Situation::ChangesRequested {
            comments: vec![comment("c1"), comment("c2")],
        };
        assert_eq!(run.step(Some(&more), 31), None, "silent once escalated");
    }

    #[test]
    fn a_stored_state_decides_the_same_after_a_restart() {
        let mut run = Run::new(default_policy(ReactionKey::CiFailed));
        run.step(Some(&ci("boom")), 0);
        let stored = serde_json::to_value(&run.state).unwrap();
        assert_eq!(stored["attempts"], 1);
        assert!(stored.get("lastFingerprint").is_some(), "{stored}");
        assert!(stored.get("refusedSha").is_none(), "{stored}");
        let restored: ReactionState = serde_json::from_value(stored).unwrap();
        assert_eq!(restored, run.state);
        let (again, _) = decide(&run.policy, Some(&ci("boom")), &restored, at(1));
        assert_eq!(
            again, None,
            "not sent twice because the controller restarted"
        );
        let empty: ReactionState = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, ReactionState::default());
    }

    #[test]
    fn auto_false_only_tells_a_human_once_per_fingerprint() {
        // The default approved-and-green: auto false, notify, priority action.
        let mut run = Run::new(default_policy(ReactionKey::ApprovedAndGreen));
        let green = |sha: &str| Situation::ApprovedAndGreen {
            number: 12,
            head_sha: sha.into(),
        };
        assert_eq!(
            run.step(Some(&green("abcdef123")), 0),
            Some(Act::Notify {
                priority: Priority::Action,
                message: "PR #12 is approved and green at abcdef1: ready to merge".into()
            })
        );
        assert_eq!(run.step(Some(&green("abcdef123")), 60), None);
        assert!(matches!(
            run.step(Some(&green("0123456789")), 61),
            Some(Act::Notify { .. })
        ));

        // A reaction that would act, with auto false, notifies instead and never escalates.
        let manual = Reaction {
            auto: false,
            ..default_policy(ReactionKey::CiFailed)
        };
        let mut run = Run::new(manual);
        assert!(matches!(
            run.step(Some(&ci("x")), 0),
            Some(Act::Notify {
                priority: Priority::Action,
                ..
            })
        ));
        for (log, minutes) in [("x", 30), ("x", 90)] {
            assert_eq!(run.step(Some(&ci(log)), minutes), None);
        }
        assert!(matches!(
            run.step(Some(&ci("y")), 91),
            Some(Act::Notify { .. })
        ));
        assert!(matches!(
            run.step(Some(&ci("z")), 92),
            Some(Act::Notify { .. })
        ));
        assert!(!run.state.escalated);
    }

    #[test]
    fn notifications_are_not_repeated_and_wait_for_the_threshold() {
        let mut run = Run::new(default_policy(ReactionKey::AgentNeedsInput));
        let asks = Situation::AgentNeedsInput {
            reason: "Allow rm -rf build/? (y/n)".into(),
        };
        assert!(matches!(
            run.step(Some(&asks), 0),
            Some(Act::Notify {
                priority: Priority::Urgent,
                ..
            })
        ));
        assert_eq!(run.step(Some(&asks), 120), None);

        let mut run = Run::new(default_policy(ReactionKey::AgentStuck));
        let stuck = |minutes: u64| Situation::AgentStuck {
            stuck_for: Duration::from_secs(60 * minutes),
        };
        assert_eq!(
            run.step(Some(&stuck(5)), 0),
            None,
            "below the 10m threshold"
        );
        assert_eq!(run.state, ReactionState::default());
        let Some(Act::Notify { priority, message }) = run.step(Some(&stuck(12)), 7) else {
            panic!("past the threshold")
        };
        assert_eq!(priority, Priority::Urgent);
        assert_eq!(message, "the agent has made no progress for 12m");
        assert_eq!(
            run.step(Some(&stuck(40)), 35),
            None,
            "still the same stuck spell"
        );
    }

    #[test]
    fn auto_merge_merges_the_evaluated_sha_and_never_a_refused_one() {
        let mut config = Config::default();
        config.reactions.insert(
            "approved-and-green".into(),
            ReactionConfig {
                auto: Some(true),
                action: Some(ReactionAction::AutoMerge),
                ..ReactionConfig::default()
            },
        );
        let policy = policy(&config, "app", ReactionKey::ApprovedAndGreen);
        let mut run = Run::new(policy.clone());
        let green = |sha: &str| Situation::ApprovedAndGreen {
            number: 7,
            head_sha: sha.into(),
        };
        let merge = |sha: &str| Act::Merge {
            number: 7,
            sha: sha.into(),
        };
        assert_eq!(run.step(Some(&green("aaa")), 0), Some(merge("aaa")));
        assert_eq!(
            run.step(Some(&green("aaa")), 1),
            None,
            "the merge is under way"
        );

        // The head moved under the merge: that sha is never merged, the new one is.
        let (told, state) = merge_reported(&policy, &run.state, 7, "aaa", &MergeOutcome::HeadMoved);
        assert_eq!(told, None);
        run.state = state;
        assert_eq!(
            run.step(Some(&green("aaa")), 30),
            None,
            "not retried blindly"
        );
        assert_eq!(run.step(Some(&green("bbb")), 31), Some(merge("bbb")));

        // The host refuses: a human hears why, and the sha is not merged again.
        let refusal = MergeOutcome::Refused("Required status check \"e2e\" is expected".into());
        let (told, state) = merge_reported(&policy, &run.state, 7, "bbb", &refusal);
        let Some(Decision {
            act: Act::Notify { priority, message },
            ..
        }) = told
        else {
            panic!("{told:?}")
        };
        assert_eq!(priority, Priority::Action);
        assert!(
            message.contains("PR #7 at bbb was refused: Required status"),
            "{message}"
        );
        run.state = state;
        assert_eq!(run.step(Some(&green("bbb")), 60), None);
        assert_eq!(run.step(Some(&green("ccc")), 61), Some(merge("ccc")));

        let merged = MergeOutcome::Merged {
            commit: "m1".into(),
        };
        let (told, state) = merge_reported(&policy, &run.state, 7, "ccc", &merged);
        assert_eq!((told, &state), (None, &run.state));
    }

    #[test]
    fn decisions_name_their_event() {
        let policy = default_policy(ReactionKey::CiFailed);
        let (sent, state) = decide(&policy, Some(&ci("x")), &ReactionState::default(), at(0));
        let sent = sent.unwrap();
        assert_eq!(sent.event_kind(), "reaction.triggered");
        assert_eq!(
            sent.event_data(),
            serde_json::json!({"reaction": "ci-failed", "action": "send-to-agent", "attempts": 1})
        );
        let session = SessionRecord::example("app-1", Some("w1"), SessionStatus::CiFailed);
        let event = sent.event(&session);
        assert_eq!(
            (event.kind, event.priority),
            ("reaction.triggered", Priority::Action)
        );
        assert_eq!(event.message.as_deref(), Some("CI failed on PR #12: test"));

        let (_, state) = decide(&policy, Some(&ci("y")), &state, at(1));
        let (escalated, _) = decide(&policy, Some(&ci("z")), &state, at(2));
        let escalated = escalated.unwrap();
        assert_eq!(escalated.event_kind(), "reaction.escalated");
        assert_eq!(escalated.priority(), Priority::Urgent);
        assert_eq!(
            escalated.event_data(),
            serde_json::json!({"reaction": "ci-failed", "attempts": 2})
        );
    }
}
