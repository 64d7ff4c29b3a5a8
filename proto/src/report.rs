//! What an agent may say of itself with `ao report`, and the one line of
//! JSON each way between `ao report` and the worker it runs on.

use serde::{Deserialize, Serialize};

/// The states `ao report` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    Working,
    NeedsInput,
    Blocked,
    PrCreated,
    Completed,
}

impl AgentState {
    pub const ALL: [AgentState; 5] = [
        AgentState::Working,
        AgentState::NeedsInput,
        AgentState::Blocked,
        AgentState::PrCreated,
        AgentState::Completed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Working => "working",
            AgentState::NeedsInput => "needs_input",
            AgentState::Blocked => "blocked",
            AgentState::PrCreated => "pr_created",
            AgentState::Completed => "completed",
        }
    }

    /// # Errors
    /// Not one of [`AgentState::ALL`]; the message lists them.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = Self::ALL.iter().map(|a| a.as_str()).collect();
                format!("unknown state `{s}`: use one of {}", all.join(", "))
            })
    }
}

/// The built-in agents that can continue a conversation by its id (the
/// session's `agentSessionId`); any other starts fresh on a restore.
pub const RESUMABLE_AGENTS: &[&str] = &["claude-code", "codex", "gemini"];

/// What a restore of a session of `agent` does, in one sentence.
pub fn restore_plan(agent: &str, agent_session_id: Option<&str>) -> String {
    match (agent_session_id, RESUMABLE_AGENTS.contains(&agent)) {
        (Some(id), true) => format!("{agent} resumes its conversation {id}"),
        (None, true) => {
            format!("{agent} starts fresh with the original prompt (it had no conversation yet)")
        }
        (_, false) => {
            format!(
                "{agent} starts fresh with the original prompt (it cannot resume a conversation)"
            )
        }
    }
}

/// `ao report`'s request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportRequest {
    pub session_id: String,
    pub token: String,
    pub state: AgentState,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub pr_url: Option<String>,
}

/// The worker's answer: `error` is why it was refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportReply {
    pub error: Option<String>,
}

/// The longest request line a worker reads.
pub const MAX_REQUEST: u64 = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_says_whether_it_resumes() {
        assert_eq!(
            restore_plan("claude-code", Some("5f0c")),
            "claude-code resumes its conversation 5f0c"
        );
        assert!(restore_plan("claude-code", None).contains("starts fresh"));
        assert!(restore_plan("aider", Some("x")).contains("cannot resume"));
    }

    #[test]
    fn states_parse_back_and_unknown_ones_are_named() {
        for s in AgentState::ALL {
            assert_eq!(AgentState::parse(s.as_str()), Ok(s));
        }
        let err = AgentState::parse("done").unwrap_err();
        assert!(
            err.contains("working, needs_input, blocked, pr_created, completed"),
            "{err}"
        );
    }
}
