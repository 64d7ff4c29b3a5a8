//! The decision step: given a reaction's policy, the situation now, what was done about it so far
//! and the time, what to do next. Pure and idempotent: the same inputs give the same decision,
//! and a state that records a decision never gives it again within [`RETRY_INTERVAL`], so a
//! controller that restarts with its stored state repeats nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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

/// What was done about one situation of one session (or project), stored with it so that a
/// restart neither forgets nor repeats. [`ReactionState::default`] is "nothing yet".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ReactionState {
    /// Actions taken (sends, notifications, merges) since the situation began.
    pub attempts: u32,
    /// When the situation was first acted on: `escalateAfter: 30m` counts from here.
    pub first_at: Option<DateTime<Utc>>,
    /// When the last action (or the escalation) was taken.
    pub last_at: Option<DateTime<Utc>>,
    /// The fingerprint of what was last acted on.
    pub last_fingerprint: Option<String>,
    /// A human was handed the situation: nothing more is done until it clears.
    pub escalated: bool,
    /// A head SHA whose merge was refused: never merged again, only a new head is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused_sha: Option<String>,
}

/// A session's reaction states by key, as its record holds them.
pub type ReactionStates = BTreeMap<ReactionKey, ReactionState>;

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
        NewEvent::session(self.event_kind(), self.priority(), session)
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

    let act = match (policy.action, situation) {
        (ReactionAction::AutoMerge, Situation::ApprovedAndGreen { number, head_sha }) => {
            if state.refused_sha.as_deref() == Some(head_sha.as_str()) {
                return hold;
            }
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
    let repeats = !matches!(act, Act::Notify { .. });
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
