//! The controller's domain types as they are stored (JSON with a
//! `schemaVersion`) and shown to users (the names of `docs/reference.md`).

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::config::ReactionKey;
use crate::scm::{CiStatus, Mergeable, PrState, ReviewDecision};

/// Bump with an explicit migration when a stored shape changes.
pub const SCHEMA_VERSION: u32 = 1;

/// RFC 3339 in UTC with millisecond precision, as every timestamp we show.
pub fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

macro_rules! contract_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $s:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $($(#[$vmeta])* #[serde(rename = $s)] $variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $s),+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some(Self::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

contract_enum!(
    /// Where a session is in its life (`status` in `docs/reference.md`).
    SessionStatus {
        Spawning => "spawning", Working => "working", PrOpen => "pr_open", CiFailed => "ci_failed",
        ReviewPending => "review_pending", ChangesRequested => "changes_requested",
        Approved => "approved", Mergeable => "mergeable", Merged => "merged",
        NeedsInput => "needs_input", Stuck => "stuck", Errored => "errored", Idle => "idle",
        Done => "done", Killed => "killed", Cleanup => "cleanup",
    }
);

impl SessionStatus {
    /// An ended session has no agent running and is not expected to.
    pub fn is_ended(self) -> bool {
        matches!(
            self,
            Self::Errored | Self::Done | Self::Killed | Self::Merged | Self::Cleanup
        )
    }
}

contract_enum!(
    /// What the agent is doing right now (`activity` in `docs/reference.md`).
    Activity {
        Active => "active", Ready => "ready", Idle => "idle", WaitingInput => "waiting_input",
        Blocked => "blocked", Exited => "exited",
    }
);

contract_enum!(
    /// How the worker knows an activity (`activitySource`).
    ActivitySource {
        Process => "process", Hook => "hook", Transcript => "transcript", Report => "report",
        Screen => "screen", Clock => "clock",
    }
);

contract_enum!(
    /// What a session is for (`role`): an agent on a task, or the
    /// project's orchestrator agent, which `batch-spawn` and the project's
    /// `capacity` leave out.
    #[derive(Default)]
    SessionRole { #[default] Worker => "worker", Orchestrator => "orchestrator" }
);

contract_enum!(
    /// Event priority, which routes notifications.
    Priority { Urgent => "urgent", Action => "action", Warning => "warning", Info => "info" }
);

contract_enum!(
    /// Liveness of a worker as the controller sees it.
    WorkerState {
        Ready => "ready", Disconnected => "disconnected", Lost => "lost", Draining => "draining",
    }
);

/// What is kept of a session's PR between two looks: enough to tell what
/// changed and to judge the session's status without asking the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrView {
    pub number: u32,
    pub url: String,
    pub state: PrState,
    pub head_sha: String,
    pub ci: CiStatus,
    pub review: ReviewDecision,
    pub mergeable: Mergeable,
    /// Every required check passed and none failed.
    pub required_green: bool,
    /// The names of the failing checks.
    pub failing: Vec<String>,
}

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
    /// A message decided and not yet confirmed typed into the agent: sent
    /// again after a controller restart (the worker types a message with
    /// the same key only once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbox: Option<String>,
}

/// A session's reaction states by key, as its record holds them.
pub type ReactionStates = BTreeMap<ReactionKey, ReactionState>;

/// Every session by id, in id order; cloned in O(1), shared between the
/// actor and the snapshots it publishes.
pub type SessionMap = rpds::RedBlackTreeMapSync<String, std::sync::Arc<SessionRecord>>;

/// A session as stored under `/ao/v1/sessions/<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRecord {
    pub schema_version: u32,
    pub id: String,
    pub project_id: String,
    pub issue_id: Option<String>,
    pub status: SessionStatus,
    pub activity: Option<Activity>,
    pub branch: String,
    pub worktree: Option<String>,
    pub worker: Option<String>,
    pub agent: String,
    pub runtime: String,
    pub pr: Option<String>,
    pub pr_number: Option<u32>,
    pub ci_status: String,
    pub review_decision: String,
    pub created_at: DateTime<Utc>,
    pub last_activity_at: DateTime<Utc>,
    pub summary: Option<String>,
    /// Bumped with a compare-and-swap on every assignment to a worker.
    pub epoch: u64,
    pub exit_code: Option<i32>,
    pub prompt: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub attach_command: Option<String>,
    /// How `activity` is known, since when, and the line behind it.
    #[serde(default)]
    pub activity_source: Option<ActivitySource>,
    #[serde(default)]
    pub activity_since: Option<DateTime<Utc>>,
    #[serde(default)]
    pub activity_detail: Option<String>,
    /// The agent's own session id (Claude's session, Codex's thread).
    #[serde(default)]
    pub agent_session_id: Option<String>,
    /// The last [`ACTIVITY_HISTORY`] changes of activity, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activity_history: Vec<ActivityChange>,
    /// Records written before roles existed are workers' sessions.
    #[serde(default)]
    pub role: SessionRole,
    /// Its PR as last seen on the code host (see [`crate::pulls`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr_view: Option<PrView>,
    /// What the reactions did about its situations (see [`crate::reactions`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reactions: ReactionStates,
    /// The credential the agent's `ao` calls are made with (`AO_TOKEN` in
    /// its environment): the orchestrator's, an `operator`. Kept only in
    /// the store, never shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<Secret>,
}

/// A secret that `{:?}` does not print.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// How many activity changes a session keeps.
pub const ACTIVITY_HISTORY: usize = 20;

/// One change of a session's activity, with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivityChange {
    pub at: DateTime<Utc>,
    pub activity: Option<Activity>,
    pub source: Option<ActivitySource>,
    pub detail: Option<String>,
}

/// What a new session is made of; everything else starts empty.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub project_id: String,
    pub issue_id: Option<String>,
    pub branch: String,
    pub agent: String,
    pub runtime: String,
    pub prompt: String,
    pub labels: BTreeMap<String, String>,
}

impl SessionRecord {
    /// A session just asked for: `spawning` at epoch 1, on no worker yet,
    /// with no PR, CI or review.
    pub fn spawning(new: NewSession, now: DateTime<Utc>) -> Self {
        SessionRecord {
            schema_version: SCHEMA_VERSION,
            id: new.id,
            project_id: new.project_id,
            issue_id: new.issue_id,
            status: SessionStatus::Spawning,
            activity: None,
            branch: new.branch,
            worktree: None,
            worker: None,
            agent: new.agent,
            runtime: new.runtime,
            pr: None,
            pr_number: None,
            ci_status: "none".into(),
            review_decision: "none".into(),
            created_at: now,
            last_activity_at: now,
            summary: None,
            epoch: 1,
            exit_code: None,
            prompt: new.prompt,
            labels: new.labels,
            attach_command: None,
            activity_source: None,
            activity_since: None,
            activity_detail: None,
            agent_session_id: None,
            activity_history: Vec::new(),
            role: SessionRole::Worker,
            pr_view: None,
            reactions: ReactionStates::new(),
            access_token: None,
        }
    }

    /// A session of project `app` for unit tests.
    #[cfg(test)]
    pub fn example(id: &str, worker: Option<&str>, status: SessionStatus) -> Self {
        let new = NewSession {
            id: id.into(),
            project_id: "app".into(),
            issue_id: Some(format!("I-{id}")),
            branch: format!("feat/{id}"),
            agent: "bot".into(),
            runtime: "tmux".into(),
            prompt: String::new(),
            labels: BTreeMap::new(),
        };
        SessionRecord {
            status,
            worker: worker.map(str::to_string),
            ..Self::spawning(new, chrono::Utc::now())
        }
    }
}

/// One line of the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    pub id: u64,
    pub timestamp: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub priority: Priority,
    pub project_id: Option<String>,
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issue_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr_number: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

/// An event about to be written; the actor gives it its id and time.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub kind: &'static str,
    pub priority: Priority,
    pub session: Option<(String, String, Option<String>)>,
    /// The project of an event about a project as a whole (no session).
    pub project: Option<String>,
    pub worker: Option<String>,
    /// The session's PR, when it has one.
    pub pr_number: Option<u32>,
    /// The reaction and its action, for `reaction.*` events.
    pub reaction: Option<(String, String)>,
    pub message: Option<String>,
    pub data: Option<serde_json::Value>,
}

impl NewEvent {
    pub fn session(kind: &'static str, priority: Priority, s: &SessionRecord) -> Self {
        Self {
            kind,
            priority,
            session: Some((s.project_id.clone(), s.id.clone(), s.issue_id.clone())),
            project: None,
            worker: s.worker.clone(),
            pr_number: s.pr_number,
            reaction: None,
            message: None,
            data: None,
        }
    }

    pub fn worker(kind: &'static str, priority: Priority, worker: &str) -> Self {
        Self {
            kind,
            priority,
            session: None,
            project: None,
            worker: Some(worker.to_string()),
            pr_number: None,
            reaction: None,
            message: None,
            data: None,
        }
    }

    /// An event about project `project` as a whole.
    pub fn project(kind: &'static str, priority: Priority, project: &str) -> Self {
        Self {
            kind,
            priority,
            session: None,
            project: Some(project.to_string()),
            worker: None,
            pr_number: None,
            reaction: None,
            message: None,
            data: None,
        }
    }

    /// Names the reaction (`ci-failed`) and action (`send-to-agent`) it is about.
    pub fn reaction(mut self, reaction: &str, action: &str) -> Self {
        self.reaction = Some((reaction.to_string(), action.to_string()));
        self
    }

    pub fn message(mut self, m: impl Into<String>) -> Self {
        self.message = Some(m.into());
        self
    }

    pub fn data(mut self, d: serde_json::Value) -> Self {
        self.data = Some(d);
        self
    }
}

/// What the controller remembers of a worker across restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerRecord {
    pub schema_version: u32,
    pub id: String,
    pub hostname: String,
    pub labels: BTreeMap<String, String>,
    pub max_sessions: u32,
    pub tmux_socket: String,
    pub first_seen_at: DateTime<Utc>,
    /// No session is placed while its available memory is at or below this.
    #[serde(default)]
    pub memory_reserve_bytes: u64,
    /// `ao worker drain`: no new sessions.
    #[serde(default)]
    pub draining: bool,
    /// Silent past the grace; cleared when it says hello again.
    #[serde(default)]
    pub lost: bool,
    #[serde(default)]
    pub version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_names_round_trip() {
        for s in ["spawning", "needs_input", "changes_requested", "cleanup"] {
            assert_eq!(SessionStatus::parse(s).unwrap().as_str(), s);
        }
        assert_eq!(
            serde_json::to_string(&Activity::WaitingInput).unwrap(),
            "\"waiting_input\""
        );
        assert!(SessionStatus::Killed.is_ended() && !SessionStatus::NeedsInput.is_ended());
    }
}
