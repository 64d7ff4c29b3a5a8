//! What `ao report` from inside a session is worth. A session speaks only
//! for itself: its request carries the secret the worker gave it
//! (`AO_SESSION_TOKEN`), checked against that session's own. The socket it
//! arrives on is [`crate::report_socket`].

use std::time::SystemTime;

use ao_proto::report::{AgentState, ReportRequest};

use crate::signals::{Kind, Observation, Source};

/// Whether `given` is the session's secret, in time independent of where
/// they differ.
pub(crate) fn token_matches(expected: &str, given: &str) -> bool {
    expected.len() == given.len()
        && !expected.is_empty()
        && expected
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// What a report says of the agent's turn.
pub(crate) fn observation(r: &ReportRequest, now: SystemTime) -> Observation {
    let kind = match r.state {
        AgentState::Working | AgentState::PrCreated => Kind::Working,
        AgentState::NeedsInput => Kind::DialogOpened,
        AgentState::Blocked => Kind::TurnFailed,
        AgentState::Completed => Kind::TurnEnded,
    };
    let mut detail = format!("ao report {}", r.state.as_str());
    if let Some(note) = r.note.as_deref().filter(|n| !n.is_empty()) {
        detail = format!("{detail}: {note}");
    }
    Observation::new(Some(now), kind, Source::Report, &detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sessions_own_secret_matches() {
        assert!(token_matches("abc123", "abc123"));
        assert!(!token_matches("abc123", "abc124"));
        assert!(!token_matches("abc123", "abc12"));
        assert!(!token_matches("", ""));
    }

    #[test]
    fn a_report_is_evidence_of_the_turn() {
        let r = ReportRequest {
            session_id: "app-1".into(),
            token: "t".into(),
            state: AgentState::NeedsInput,
            note: Some("which database?".into()),
            pr_url: None,
        };
        let o = observation(&r, SystemTime::UNIX_EPOCH);
        assert_eq!((o.kind, o.source), (Kind::DialogOpened, Source::Report));
        assert_eq!(o.detail, "ao report needs_input: which database?");
    }
}
