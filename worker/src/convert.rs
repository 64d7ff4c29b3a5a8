//! The controller's wire types into the worker's domain types. Ids are
//! checked and `""` for "none" is decided here, once; the actor and what
//! it persists hold only domain types.

use ao_proto::{names, pb};

use crate::agent::AgentSpec;
use crate::assignment::{Assignment, SessionSpec};

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ConvertError {
    #[error("an assignment without a session spec")]
    NoSpec,
    #[error(transparent)]
    BadId(#[from] names::IdError),
    #[error("session {session}: the assignment names no agent")]
    NoAgent { session: String },
}

/// `""` on the wire means none.
pub fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl From<pb::AgentSpec> for AgentSpec {
    fn from(a: pb::AgentSpec) -> Self {
        AgentSpec {
            name: a.name,
            command: non_empty(a.command),
            ready_pattern: non_empty(a.ready_pattern),
            input_pattern: non_empty(a.input_pattern),
        }
    }
}

impl TryFrom<pb::SessionSpec> for SessionSpec {
    type Error = ConvertError;

    fn try_from(s: pb::SessionSpec) -> Result<Self, ConvertError> {
        // The controller checks ids too; here they become paths and tmux
        // targets, so one that slipped through never runs.
        names::check_session_id(&s.session_id)?;
        names::check_path_id("project", &s.project_id)?;
        let agent = s.agent.ok_or_else(|| ConvertError::NoAgent {
            session: s.session_id.clone(),
        })?;
        Ok(SessionSpec {
            session_id: s.session_id,
            project_id: s.project_id,
            issue_id: non_empty(s.issue_id),
            repo_path: s.repo_path.into(),
            default_branch: s.default_branch,
            branch: s.branch,
            agent: agent.into(),
            prompt: s.prompt,
            post_create: s.post_create,
            symlinks: s.symlinks,
            env: s.env.into_iter().collect(),
        })
    }
}

impl TryFrom<pb::Assign> for Assignment {
    type Error = ConvertError;

    fn try_from(a: pb::Assign) -> Result<Self, ConvertError> {
        Ok(Assignment {
            spec: a.spec.ok_or(ConvertError::NoSpec)?.try_into()?,
            epoch: a.epoch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assign(session: &str, project: &str, agent: Option<pb::AgentSpec>) -> pb::Assign {
        pb::Assign {
            spec: Some(pb::SessionSpec {
                session_id: session.into(),
                project_id: project.into(),
                repo_path: "/repo".into(),
                branch: "feat/x".into(),
                agent,
                ..Default::default()
            }),
            epoch: 4,
        }
    }

    #[test]
    fn empty_strings_become_none_once() {
        let agent = pb::AgentSpec {
            name: "bot".into(),
            command: "./bot.sh".into(),
            ..Default::default()
        };
        let a = Assignment::try_from(assign("app-1", "app", Some(agent))).unwrap();
        assert_eq!(a.epoch, 4);
        assert_eq!(a.spec.issue_id, None);
        assert_eq!(
            a.spec.agent,
            AgentSpec {
                name: "bot".into(),
                command: Some("./bot.sh".into()),
                ready_pattern: None,
                input_pattern: None,
            }
        );
    }

    #[test]
    fn bad_ids_and_missing_parts_are_refused_with_what_is_wrong() {
        let agent = || Some(pb::AgentSpec::default());
        let err = Assignment::try_from(assign("a:b", "app", agent())).unwrap_err();
        assert!(
            err.to_string().contains("invalid session id \"a:b\""),
            "{err}"
        );
        let err = Assignment::try_from(assign("app-1", "../lib", agent())).unwrap_err();
        assert!(
            err.to_string().contains("invalid project id \"../lib\""),
            "{err}"
        );
        let err = Assignment::try_from(assign("app-1", "app", None)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "session app-1: the assignment names no agent"
        );
        let err = Assignment::try_from(pb::Assign::default()).unwrap_err();
        assert_eq!(err, ConvertError::NoSpec);
    }
}
