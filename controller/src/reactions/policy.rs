//! The effective [`Reaction`] of a project to a situation: the project's `reactions.<key>` over
//! the top level's over the built-in defaults, field by field.

use std::time::Duration;

use crate::config::{
    escalate_after, threshold, Config, EscalateAfter, Priority as ConfigPriority, ReactionAction,
    ReactionConfig, ReactionKey,
};
use crate::model::Priority;

/// What to do about one situation, with every field decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaction {
    pub key: ReactionKey,
    /// Whether the action is taken without a human; when not, a human is told instead.
    pub auto: bool,
    pub action: ReactionAction,
    /// The configured first line of what is sent (or notified), in place of the default one.
    pub message: Option<String>,
    /// Of `reaction.triggered` events and notifications.
    pub priority: Priority,
    /// Of `reaction.escalated`: the configured `priority`, else urgent, since an escalation
    /// exists to reach a human.
    pub escalation_priority: Priority,
    /// Automatic attempts before escalating; none: no limit of this kind.
    pub retries: Option<u32>,
    pub escalate_after: Option<EscalateAfter>,
    /// How long the situation must last before it counts (`agent-stuck`).
    pub threshold: Option<Duration>,
    /// Its own notifiers, in place of the routing by priority.
    pub notify: Option<Vec<String>>,
}

/// The built-in reaction to `key`, as the original `ao` ships it.
fn builtin(key: ReactionKey) -> ReactionConfig {
    use ReactionAction::{Notify, SendToAgent};
    let send = |escalate_after: serde_json::Value| ReactionConfig {
        auto: Some(true),
        action: Some(SendToAgent),
        escalate_after: Some(escalate_after),
        ..ReactionConfig::default()
    };
    let notify = |priority| ReactionConfig {
        auto: Some(true),
        action: Some(Notify),
        priority: Some(priority),
        ..ReactionConfig::default()
    };
    use ConfigPriority as P;
    match key {
        ReactionKey::CiFailed => ReactionConfig {
            retries: Some(2),
            ..send(2.into())
        },
        ReactionKey::ChangesRequested | ReactionKey::BugbotComments => send("30m".into()),
        ReactionKey::MergeConflicts => send("15m".into()),
        ReactionKey::ApprovedAndGreen => ReactionConfig {
            auto: Some(false),
            ..notify(P::Action)
        },
        ReactionKey::PrClosed | ReactionKey::AllComplete => notify(P::Info),
        ReactionKey::AgentStuck => ReactionConfig {
            threshold: Some("10m".into()),
            ..notify(P::Urgent)
        },
        ReactionKey::AgentNeedsInput | ReactionKey::AgentExited => notify(P::Urgent),
    }
}

/// `over`'s fields where it sets them, else `under`'s.
fn merge(over: &ReactionConfig, under: ReactionConfig) -> ReactionConfig {
    ReactionConfig {
        auto: over.auto.or(under.auto),
        action: over.action.or(under.action),
        message: over.message.clone().or(under.message),
        priority: over.priority.or(under.priority),
        retries: over.retries.or(under.retries),
        escalate_after: over.escalate_after.clone().or(under.escalate_after),
        threshold: over.threshold.clone().or(under.threshold),
        notify: over.notify.clone().or(under.notify),
    }
}

impl From<ConfigPriority> for Priority {
    fn from(p: ConfigPriority) -> Self {
        use ConfigPriority as P;
        match p {
            P::Urgent => Self::Urgent,
            P::Action => Self::Action,
            P::Warning => Self::Warning,
            P::Info => Self::Info,
        }
    }
}

/// The reaction of project `project_id` to `key`. The config is expected to be validated; a
/// value that would not have passed is taken as unset.
pub fn policy(config: &Config, project_id: &str, key: ReactionKey) -> Reaction {
    let top = config.reactions.get(key.as_str());
    let project = config
        .projects
        .get(project_id)
        .and_then(|p| p.reactions.get(key.as_str()));
    let configured = [project, top]
        .into_iter()
        .flatten()
        .fold(ReactionConfig::default(), |acc, layer| {
            merge(&acc, layer.clone())
        });
    let explicit_priority = configured.priority;
    let merged = merge(&configured, builtin(key));
    let action = merged.action.unwrap_or(ReactionAction::Notify);
    // An auto-merge reaction cannot be configured outside `approved-and-green` (validation).
    Reaction {
        key,
        auto: merged.auto.unwrap_or(true),
        action,
        message: merged.message.clone(),
        priority: merged.priority.map_or(Priority::Action, Priority::from),
        escalation_priority: explicit_priority.map_or(Priority::Urgent, Priority::from),
        retries: merged.retries,
        escalate_after: escalate_after(&merged).and_then(Result::ok),
        threshold: threshold(&merged).and_then(Result::ok),
        notify: merged.notify,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Config {
        crate::config::parse_str(text, Path::new("/etc/ao.yaml"), &|_| None).unwrap()
    }

    #[test]
    fn defaults_are_those_of_the_original() {
        let config = Config::default();
        let ci = policy(&config, "app", ReactionKey::CiFailed);
        assert!(ci.auto);
        assert_eq!(ci.action, ReactionAction::SendToAgent);
        assert_eq!(ci.retries, Some(2));
        assert_eq!(ci.escalate_after, Some(EscalateAfter::Attempts(2)));
        assert_eq!(ci.priority, Priority::Action);
        assert_eq!(ci.escalation_priority, Priority::Urgent);
        for (key, after) in [
            (ReactionKey::ChangesRequested, 1800),
            (ReactionKey::BugbotComments, 1800),
            (ReactionKey::MergeConflicts, 900),
        ] {
            let r = policy(&config, "app", key);
            assert_eq!(r.action, ReactionAction::SendToAgent, "{key}");
            assert_eq!(
                r.escalate_after,
                Some(EscalateAfter::Elapsed(Duration::from_secs(after))),
                "{key}"
            );
            assert_eq!(r.retries, None, "{key}");
        }
        let green = policy(&config, "app", ReactionKey::ApprovedAndGreen);
        assert!(!green.auto);
        assert_eq!(
            (green.action, green.priority),
            (ReactionAction::Notify, Priority::Action)
        );
        let stuck = policy(&config, "app", ReactionKey::AgentStuck);
        assert_eq!(
            (stuck.action, stuck.priority),
            (ReactionAction::Notify, Priority::Urgent)
        );
        assert_eq!(stuck.threshold, Some(Duration::from_secs(600)));
        for (key, priority) in [
            (ReactionKey::PrClosed, Priority::Info),
            (ReactionKey::AgentNeedsInput, Priority::Urgent),
            (ReactionKey::AgentExited, Priority::Urgent),
            (ReactionKey::AllComplete, Priority::Info),
        ] {
            let r = policy(&config, "app", key);
            assert!(r.auto, "{key}");
            assert_eq!((r.action, r.priority), (ReactionAction::Notify, priority));
        }
    }

    /// The two `reactions` snippets of the original documentation.
    #[test]
    fn the_original_docs_overrides_take_effect() {
        let config =
            parse("reactions:\n  agent-stuck:\n    threshold: 10m\n    action: notify\n    priority: urgent\n");
        let stuck = policy(&config, "any", ReactionKey::AgentStuck);
        assert_eq!(stuck.threshold, Some(Duration::from_secs(600)));
        assert_eq!(stuck.escalation_priority, Priority::Urgent);

        let config =
            parse("reactions:\n  approved-and-green:\n    auto: true\n    action: auto-merge\n");
        let green = policy(&config, "any", ReactionKey::ApprovedAndGreen);
        assert!(green.auto);
        assert_eq!(green.action, ReactionAction::AutoMerge);
        assert_eq!(green.priority, Priority::Action);
    }

    #[test]
    fn a_project_overrides_the_top_level_field_by_field() {
        let config = parse(
            "reactions:\n  ci-failed:\n    message: Fix CI.\n    retries: 5\n    priority: warning\n\
             projects:\n  app:\n    path: /r\n    reactions:\n      ci-failed:\n        retries: 1\n\
             \x20 lib:\n    path: /s\n",
        );
        let app = policy(&config, "app", ReactionKey::CiFailed);
        assert_eq!(app.retries, Some(1), "the project's own field");
        assert_eq!(
            app.message.as_deref(),
            Some("Fix CI."),
            "the top level's field"
        );
        assert_eq!(app.priority, Priority::Warning);
        assert_eq!(app.escalation_priority, Priority::Warning);
        assert_eq!(
            app.escalate_after,
            Some(EscalateAfter::Attempts(2)),
            "the default"
        );
        assert_eq!(
            policy(&config, "lib", ReactionKey::CiFailed).retries,
            Some(5)
        );

        let timed = parse(
            "projects:\n  app:\n    path: /r\n    reactions:\n      ci-failed:\n        \
             escalateAfter: 30m\n",
        );
        let ci = policy(&timed, "app", ReactionKey::CiFailed);
        assert_eq!(
            ci.escalate_after,
            Some(EscalateAfter::Elapsed(Duration::from_secs(1800)))
        );
        assert_eq!(ci.retries, Some(2), "the default still bounds the attempts");
    }
}
