//! What a session (or a project) is in now, as the reactions see it, and the fingerprint of
//! what would be sent about it.

use std::time::Duration;

use crate::config::ReactionKey;
use crate::model::{SessionRecord, SessionRole, SessionStatus};
use crate::scm::Comment;

/// A failed check with the end of its log, as the agent is to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedCheck {
    pub name: String,
    /// A link for humans, shown under the check's name.
    pub url: Option<String>,
    /// The end of the check's log (or its output text), already fetched.
    pub log_tail: String,
}

/// A worker session that has ended, for the project's summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedSession {
    pub id: String,
    pub status: SessionStatus,
}

/// A situation a reaction answers. The controller builds it from a session and its PR; the
/// engine only reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Situation {
    /// PR `number` has failed checks.
    CiFailed {
        number: u32,
        checks: Vec<FailedCheck>,
    },
    /// A review requested changes; the unresolved comments.
    ChangesRequested { comments: Vec<Comment> },
    /// Review comments written by bot accounts.
    BotComments { comments: Vec<Comment> },
    /// The PR conflicts with its base branch.
    MergeConflicts { base: String },
    /// Approved, every required check green, mergeable, at `head_sha`.
    ApprovedAndGreen { number: u32, head_sha: String },
    /// The PR was closed without being merged.
    PrClosed { number: u32 },
    /// The agent has shown no sign of progress for this long.
    AgentStuck { stuck_for: Duration },
    /// The agent asks a human something.
    AgentNeedsInput { reason: String },
    /// The agent's process ended, with its exit code when known.
    AgentExited { code: Option<i32> },
    /// Every worker session of the project has ended (see [`all_complete`]).
    AllComplete { sessions: Vec<EndedSession> },
}

/// FNV-1a, 64 bits: stable across Rust versions and platforms, unlike `DefaultHasher`, since
/// fingerprints are stored and compared after an upgrade.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// One field, length first, so that `("ab", "c")` and `("a", "bc")` differ.
    fn field(&mut self, field: &str) -> &mut Self {
        self.bytes(&(field.len() as u64).to_le_bytes());
        self.bytes(field.as_bytes());
        self
    }
}

impl Situation {
    /// The `reactions.<key>` that answers this situation.
    pub fn key(&self) -> ReactionKey {
        match self {
            Self::CiFailed { .. } => ReactionKey::CiFailed,
            Self::ChangesRequested { .. } => ReactionKey::ChangesRequested,
            Self::BotComments { .. } => ReactionKey::BugbotComments,
            Self::MergeConflicts { .. } => ReactionKey::MergeConflicts,
            Self::ApprovedAndGreen { .. } => ReactionKey::ApprovedAndGreen,
            Self::PrClosed { .. } => ReactionKey::PrClosed,
            Self::AgentStuck { .. } => ReactionKey::AgentStuck,
            Self::AgentNeedsInput { .. } => ReactionKey::AgentNeedsInput,
            Self::AgentExited { .. } => ReactionKey::AgentExited,
            Self::AllComplete { .. } => ReactionKey::AllComplete,
        }
    }

    /// A stable hash of what would be sent about this situation (16 hex digits): it changes
    /// when there is something new to say, and only then. Order does not matter (checks and
    /// comments are sorted first); how long an agent has been stuck is not part of it.
    pub fn fingerprint(&self) -> String {
        let mut h = Fnv::new();
        h.field(self.key().as_str());
        match self {
            Self::CiFailed { number, checks } => {
                h.field(&number.to_string());
                let mut checks: Vec<_> = checks.iter().collect();
                checks.sort_by(|a, b| (&a.name, &a.log_tail).cmp(&(&b.name, &b.log_tail)));
                for check in checks {
                    h.field(&check.name).field(&check.log_tail);
                }
            }
            Self::ChangesRequested { comments } | Self::BotComments { comments } => {
                let mut ids: Vec<&str> = comments.iter().map(|c| c.id.as_str()).collect();
                ids.sort_unstable();
                for id in ids {
                    h.field(id);
                }
            }
            Self::MergeConflicts { base } => {
                h.field(base);
            }
            Self::ApprovedAndGreen { number, head_sha } => {
                h.field(&number.to_string()).field(head_sha);
            }
            Self::PrClosed { number } => {
                h.field(&number.to_string());
            }
            Self::AgentStuck { .. } => {}
            Self::AgentNeedsInput { reason } => {
                h.field(reason);
            }
            Self::AgentExited { code } => {
                h.field(&code.map_or_else(String::new, |c| c.to_string()));
            }
            Self::AllComplete { sessions } => {
                let mut ids: Vec<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
                ids.sort_unstable();
                for id in ids {
                    h.field(id);
                }
            }
        }
        format!("{:016x}", h.0)
    }

    /// One line saying what is the matter, for notifications and escalations.
    pub fn summary(&self) -> String {
        let count =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        match self {
            Self::CiFailed { number, checks } => {
                let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
                format!("CI failed on PR #{number}: {}", names.join(", "))
            }
            Self::ChangesRequested { comments } => format!(
                "changes requested: {}",
                count(comments.len(), "unresolved comment", "unresolved comments")
            ),
            Self::BotComments { comments } => {
                count(comments.len(), "bot review comment", "bot review comments")
            }
            Self::MergeConflicts { base } => format!("the PR has merge conflicts with {base}"),
            Self::ApprovedAndGreen { number, head_sha } => format!(
                "PR #{number} is approved and green at {}: ready to merge",
                short_sha(head_sha)
            ),
            Self::PrClosed { number } => format!("PR #{number} was closed without being merged"),
            Self::AgentStuck { stuck_for } => format!(
                "the agent has made no progress for {}",
                human_duration(*stuck_for)
            ),
            Self::AgentNeedsInput { reason } => format!("the agent needs input: {reason}"),
            Self::AgentExited { code: Some(code) } => format!("the agent exited with code {code}"),
            Self::AgentExited { code: None } => "the agent exited".to_owned(),
            Self::AllComplete { sessions } => {
                let mut by_status: Vec<(SessionStatus, usize)> = Vec::new();
                for s in sessions {
                    match by_status.iter_mut().find(|(status, _)| *status == s.status) {
                        Some((_, n)) => *n += 1,
                        None => by_status.push((s.status, 1)),
                    }
                }
                let parts: Vec<String> = by_status
                    .iter()
                    .map(|(status, n)| format!("{n} {status}"))
                    .collect();
                format!(
                    "all {} ended: {}",
                    count(sessions.len(), "session", "sessions"),
                    parts.join(", ")
                )
            }
        }
    }
}

/// The first 7 characters of a commit id, as git shows it.
pub(super) fn short_sha(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// `45s`, `12m`, `2h5m`, `3d2h`: a duration as people say it, to the minute above a minute.
pub(super) fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 if s % 3600 < 60 => format!("{}h", s / 3600),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ if s % 86400 < 3600 => format!("{}d", s / 86400),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

/// The project's `all-complete` situation, if it is in it: it has at least one worker session,
/// and every one has ended. `sessions` are the project's sessions; its orchestrator session is
/// not a worker and is left out.
pub fn all_complete<'a>(
    sessions: impl IntoIterator<Item = &'a SessionRecord>,
) -> Option<Situation> {
    let mut ended = Vec::new();
    for s in sessions {
        if s.role != SessionRole::Worker {
            continue;
        }
        if !s.status.is_ended() {
            return None;
        }
        ended.push(EndedSession {
            id: s.id.clone(),
            status: s.status,
        });
    }
    (!ended.is_empty()).then_some(Situation::AllComplete { sessions: ended })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comment(id: &str) -> Comment {
        Comment {
            id: id.into(),
            author: "rev".into(),
            bot: false,
            path: Some("src/lib.rs".into()),
            line: Some(3),
            body: "rename".into(),
            url: None,
        }
    }

    fn check(name: &str, log: &str) -> FailedCheck {
        FailedCheck {
            name: name.into(),
            url: Some(format!("https://ci/{name}")),
            log_tail: log.into(),
        }
    }

    #[test]
    fn fingerprints_follow_what_would_be_sent() {
        let ci = |checks| Situation::CiFailed { number: 4, checks };
        let a = ci(vec![check("lint", "x"), check("test", "y")]);
        assert_eq!(a.fingerprint().len(), 16);
        assert_eq!(
            a.fingerprint(),
            ci(vec![check("test", "y"), check("lint", "x")]).fingerprint(),
            "order does not matter"
        );
        assert_ne!(
            a.fingerprint(),
            ci(vec![check("lint", "x"), check("test", "y2")]).fingerprint()
        );
        assert_ne!(
            ci(vec![check("ab", "c")]).fingerprint(),
            ci(vec![check("a", "bc")]).fingerprint()
        );
        let review = |ids: &[&str]| Situation::ChangesRequested {
            comments: ids.iter().map(|id| comment(id)).collect(),
        };
        assert_eq!(
            review(&["1", "2"]).fingerprint(),
            review(&["2", "1"]).fingerprint()
        );
        assert_ne!(
            review(&["1"]).fingerprint(),
            review(&["1", "2"]).fingerprint()
        );
        let stuck = |m: u64| Situation::AgentStuck {
            stuck_for: Duration::from_secs(60 * m),
        };
        assert_eq!(stuck(10).fingerprint(), stuck(25).fingerprint());
        // Pinned: a stored fingerprint must still match after an upgrade.
        assert_eq!(
            Situation::MergeConflicts {
                base: "main".into()
            }
            .fingerprint(),
            "0a9838df20dcfcc5"
        );
    }

    #[test]
    fn durations_read_as_people_say_them() {
        for (secs, text) in [
            (45, "45s"),
            (600, "10m"),
            (7200, "2h"),
            (7500, "2h5m"),
            (86400, "1d"),
            (86400 * 3 + 7200, "3d2h"),
        ] {
            assert_eq!(human_duration(Duration::from_secs(secs)), text);
        }
    }

    #[test]
    fn a_project_is_complete_when_every_worker_session_ended() {
        use crate::model::SessionRecord;
        let session = |id: &str, status| SessionRecord::example(id, None, status);
        let orchestrator = SessionRecord {
            role: SessionRole::Orchestrator,
            ..session("app-orchestrator", SessionStatus::Working)
        };
        let merged = session("app-1", SessionStatus::Merged);
        let killed = session("app-2", SessionStatus::Killed);
        let working = session("app-3", SessionStatus::Working);
        assert_eq!(all_complete([&orchestrator]), None, "no worker session");
        assert_eq!(all_complete([&merged, &working]), None);
        let done = all_complete([
            &orchestrator,
            &merged,
            &killed,
            &session("app-4", SessionStatus::Merged),
        ])
        .expect("all ended");
        assert_eq!(done.key(), ReactionKey::AllComplete);
        assert_eq!(done.summary(), "all 3 sessions ended: 2 merged, 1 killed");
    }
}
