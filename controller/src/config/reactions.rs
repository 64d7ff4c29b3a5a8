//! What a `reactions.<key>` entry may say: the keys the engine knows, `escalateAfter` in its two
//! forms, and the combinations that cannot be acted on. The engine itself is
//! [`crate::reactions`]; this part belongs to the config so that loading rejects what the engine
//! would have to ignore.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::schema::{ReactionAction, ReactionConfig};

/// A situation a reaction answers (`reactions.<key>`), named as in the original `ao`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReactionKey {
    CiFailed,
    ChangesRequested,
    BugbotComments,
    MergeConflicts,
    ApprovedAndGreen,
    PrClosed,
    AgentStuck,
    AgentNeedsInput,
    AgentExited,
    AllComplete,
}

impl ReactionKey {
    /// Every key, in the order the documentation lists them.
    pub const ALL: [ReactionKey; 10] = [
        Self::CiFailed,
        Self::ChangesRequested,
        Self::BugbotComments,
        Self::MergeConflicts,
        Self::ApprovedAndGreen,
        Self::PrClosed,
        Self::AgentStuck,
        Self::AgentNeedsInput,
        Self::AgentExited,
        Self::AllComplete,
    ];

    /// The key as the config file spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CiFailed => "ci-failed",
            Self::ChangesRequested => "changes-requested",
            Self::BugbotComments => "bugbot-comments",
            Self::MergeConflicts => "merge-conflicts",
            Self::ApprovedAndGreen => "approved-and-green",
            Self::PrClosed => "pr-closed",
            Self::AgentStuck => "agent-stuck",
            Self::AgentNeedsInput => "agent-needs-input",
            Self::AgentExited => "agent-exited",
            Self::AllComplete => "all-complete",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|key| key.as_str() == s)
    }
}

impl fmt::Display for ReactionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a reaction that keeps failing is handed to a human (`escalateAfter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscalateAfter {
    /// After this many automatic attempts (`escalateAfter: 2`).
    Attempts(u32),
    /// Once the situation has lasted this long (`escalateAfter: 30m`).
    Elapsed(Duration),
}

/// A reaction's `escalateAfter`: a whole number of attempts, or a duration with its unit.
pub fn escalate_after(reaction: &ReactionConfig) -> Option<Result<EscalateAfter, String>> {
    let expected = "expected a number of attempts (2) or a duration (30m)";
    reaction.escalate_after.as_ref().map(|value| match value {
        serde_json::Value::Number(n) => match n.as_u64().map(u32::try_from) {
            Some(Ok(0)) => {
                Err("must be at least 1: use `action: notify` to tell a human at once".to_owned())
            }
            Some(Ok(count)) => Ok(EscalateAfter::Attempts(count)),
            _ => Err(format!("{expected}, got {n}")),
        },
        // A quoted bare number would read as seconds, which nobody writing `"2"` means.
        serde_json::Value::String(s) if s.bytes().all(|b| b.is_ascii_digit()) => Err(format!(
            "{expected}, got \"{s}\": write {s} for attempts or {s}m for minutes"
        )),
        serde_json::Value::String(s) => match ao_proto::units::parse_duration(s) {
            Ok(d) if d.is_zero() => {
                Err("must be longer than 0: use `action: notify` to tell a human at once".into())
            }
            Ok(d) => Ok(EscalateAfter::Elapsed(d)),
            Err(e) => Err(e),
        },
        other => Err(format!("{expected}, got {other}")),
    })
}

/// Why a `reactions.<name>` entry cannot be acted on: the field at fault (none for the key
/// itself) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactionConfigError {
    pub field: Option<&'static str>,
    pub message: String,
}

/// Checks one `reactions.<name>` entry (top level or a project's): a known key, an action that
/// key can take, a readable `escalateAfter`. `threshold` is checked beside it by the caller.
///
/// # Errors
/// The first problem found, with the field it is in.
pub fn check_reaction(name: &str, reaction: &ReactionConfig) -> Result<(), ReactionConfigError> {
    let Some(key) = ReactionKey::parse(name) else {
        let known: Vec<&str> = ReactionKey::ALL.iter().map(|k| k.as_str()).collect();
        return Err(ReactionConfigError {
            field: None,
            message: format!(
                "unknown reaction `{name}`: expected one of {}",
                known.join(", ")
            ),
        });
    };
    let action_error = |message: String| ReactionConfigError {
        field: Some("action"),
        message,
    };
    match (key, reaction.action) {
        (ReactionKey::ApprovedAndGreen, _) | (_, None | Some(ReactionAction::Notify)) => {}
        (_, Some(ReactionAction::AutoMerge)) => {
            return Err(action_error(format!(
                "`auto-merge` only answers `approved-and-green`, not `{name}`"
            )))
        }
        (
            ReactionKey::AgentExited | ReactionKey::AllComplete,
            Some(ReactionAction::SendToAgent),
        ) => {
            return Err(action_error(format!(
                "`send-to-agent` cannot answer `{name}`: no agent is running to receive it"
            )))
        }
        (_, Some(ReactionAction::SendToAgent)) => {}
    }
    if let Some(Err(message)) = escalate_after(reaction) {
        return Err(ReactionConfigError {
            field: Some("escalateAfter"),
            message,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with_escalation(value: serde_json::Value) -> ReactionConfig {
        ReactionConfig {
            escalate_after: Some(value),
            ..Default::default()
        }
    }

    #[test]
    fn keys_round_trip_through_their_config_spelling() {
        for key in ReactionKey::ALL {
            assert_eq!(ReactionKey::parse(key.as_str()), Some(key));
            let json = serde_json::to_value(key).unwrap();
            assert_eq!(json, json!(key.as_str()));
        }
        assert_eq!(ReactionKey::parse("ci_failed"), None);
    }

    #[test]
    fn escalate_after_is_a_count_or_a_duration() {
        let parse = |v| escalate_after(&with_escalation(v)).unwrap();
        assert_eq!(parse(json!(2)), Ok(EscalateAfter::Attempts(2)));
        assert_eq!(
            parse(json!("30m")),
            Ok(EscalateAfter::Elapsed(Duration::from_secs(1800)))
        );
        for bad in [
            json!(0),
            json!(-1),
            json!(1.5),
            json!("0m"),
            json!("2"),
            json!("soon"),
            json!(true),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
        assert_eq!(escalate_after(&ReactionConfig::default()), None);
    }

    #[test]
    fn checks_name_the_field_at_fault() {
        let field = |name: &str, reaction: ReactionConfig| {
            check_reaction(name, &reaction).map_err(|e| e.field)
        };
        let action = |action| ReactionConfig {
            action: Some(action),
            ..Default::default()
        };
        assert_eq!(field("ci-fail", ReactionConfig::default()), Err(None));
        assert_eq!(
            field("ci-failed", action(ReactionAction::AutoMerge)),
            Err(Some("action"))
        );
        assert_eq!(
            field("approved-and-green", action(ReactionAction::AutoMerge)),
            Ok(())
        );
        assert_eq!(
            field("all-complete", action(ReactionAction::SendToAgent)),
            Err(Some("action"))
        );
        assert_eq!(
            field("agent-stuck", action(ReactionAction::SendToAgent)),
            Ok(())
        );
        assert_eq!(
            field("merge-conflicts", with_escalation(json!("later"))),
            Err(Some("escalateAfter"))
        );
    }
}
