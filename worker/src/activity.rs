//! What a session's agent is doing, from every signal the worker has, by
//! one rule for every agent (first match wins):
//!
//! 1. the agent's process is gone → `exited`;
//! 2. a dialog is pending (hook, pending question, screen) → `waiting_input`;
//! 3. the last turn ended on an error and no prompt came since → `blocked`;
//! 4. a turn is open → `active`, however long ago its last record was;
//! 5. the turn closed, or no prompt came yet → `ready`, and `idle` once that
//!    has lasted [`IDLE_AFTER`], measured from the end-of-turn record;
//! 6. no signal at all → no activity, never a guess.
//!
//! The tracker is pure: signals go in with their own times, the caller
//! says what time it is.

use std::time::{Duration, SystemTime};

use crate::signals::{Activity, Kind, Observation, Source};

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Ready this long becomes idle.
pub const IDLE_AFTER: Duration = Duration::from_secs(300);

pub use crate::link_types::Evidence;

/// One signal kept with where and when it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mark {
    at: SystemTime,
    source: Source,
    detail: String,
}

impl Mark {
    fn evidence(&self, activity: Activity) -> Evidence {
        Evidence {
            activity,
            source: self.source,
            since: self.at,
            detail: self.detail.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Turn {
    /// No prompt seen yet.
    None,
    Open(Mark),
    Closed(Mark),
    Failed(Mark),
}

/// Where the agent's turn is, whatever the dialogs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnState {
    /// No prompt seen yet.
    None,
    Open,
    Closed,
    Failed,
}

/// The signals of one session, folded.
#[derive(Debug, Clone)]
pub struct Tracker {
    /// `None` until the process is known to run.
    started: Option<Mark>,
    gone: Option<Mark>,
    turn: Turn,
    /// A dialog the agent's own records (hook, transcript) say is pending.
    dialog: Option<Mark>,
    /// A dialog the screen shows.
    screen_dialog: Option<Mark>,
    /// The last sign of life of any kind, for `stuck`.
    last_sign: Option<SystemTime>,
    /// The agent's own session id, once known.
    pub agent_session_id: Option<String>,
}

impl Default for Tracker {
    fn default() -> Self {
        Self {
            started: None,
            gone: None,
            turn: Turn::None,
            dialog: None,
            screen_dialog: None,
            last_sign: None,
            agent_session_id: None,
        }
    }
}

impl Tracker {
    /// The agent's process runs (seen at `at`).
    pub fn process_started(&mut self, at: SystemTime, detail: impl Into<String>) {
        if self.started.is_none() {
            self.started = Some(Mark {
                at,
                source: Source::Process,
                detail: detail.into(),
            });
            self.last_sign = Some(at);
        }
    }

    /// The agent's process is gone: nothing said after overrides it.
    pub fn process_gone(&mut self, at: SystemTime, detail: impl Into<String>) {
        if self.gone.is_none() {
            self.gone = Some(Mark {
                at,
                source: Source::Process,
                detail: detail.into(),
            });
        }
    }

    /// What the screen shows now: a dialog (its question line) or none.
    pub fn screen(&mut self, at: SystemTime, dialog: Option<String>) {
        match (dialog, &self.screen_dialog) {
            (None, _) => self.screen_dialog = None,
            (Some(d), Some(m)) if m.detail == d => {}
            (Some(d), _) => {
                self.screen_dialog = Some(Mark {
                    at,
                    source: Source::Screen,
                    detail: d,
                });
                self.last_sign = Some(at);
            }
        }
    }

    /// Any change of the screen is a sign of life (for `stuck`), though not
    /// a change of activity.
    pub fn screen_changed(&mut self, at: SystemTime) {
        self.sign(at);
    }

    fn sign(&mut self, at: SystemTime) {
        if self.last_sign.is_none_or(|t| t < at) {
            self.last_sign = Some(at);
        }
    }

    /// One record, hook or report of the agent.
    pub fn observe(&mut self, o: Observation) {
        let mark = Mark {
            at: o.at,
            source: o.source,
            detail: o.detail,
        };
        match o.kind {
            Kind::Metadata => return,
            Kind::SessionStarted {
                agent_session_id, ..
            } => {
                if agent_session_id.is_some() {
                    self.agent_session_id = agent_session_id;
                }
            }
            Kind::PromptSubmitted => {
                self.dialog = None;
                self.turn = Turn::Open(mark);
            }
            Kind::Working => {
                // A record after a dialog means it was answered.
                self.dialog = None;
                match &mut self.turn {
                    // Still the same activity: its start stays, its evidence
                    // is the newest record.
                    Turn::Open(open) => {
                        open.source = mark.source;
                        open.detail = mark.detail;
                    }
                    _ => self.turn = Turn::Open(mark),
                }
            }
            // A second word on a pending dialog (Claude's Notification
            // after its PermissionRequest) is the same dialog: the first,
            // more precise, stays.
            Kind::DialogOpened => {
                if self.dialog.is_none() {
                    self.dialog = Some(mark);
                }
            }
            Kind::DialogClosed => self.dialog = None,
            Kind::TurnEnded => {
                self.dialog = None;
                self.turn = Turn::Closed(mark);
            }
            Kind::TurnFailed => {
                self.dialog = None;
                self.turn = Turn::Failed(mark);
            }
        }
        self.sign(o.at);
    }

    pub fn turn(&self) -> TurnState {
        match self.turn {
            Turn::None => TurnState::None,
            Turn::Open(_) => TurnState::Open,
            Turn::Closed(_) => TurnState::Closed,
            Turn::Failed(_) => TurnState::Failed,
        }
    }

    /// The activity now, with its evidence; `None` with no signal at all.
    pub fn evidence(&self, now: SystemTime) -> Option<Evidence> {
        if let Some(gone) = &self.gone {
            return Some(gone.evidence(Activity::Exited));
        }
        if let Some(d) = self.dialog.as_ref().or(self.screen_dialog.as_ref()) {
            return Some(d.evidence(Activity::WaitingInput));
        }
        let ready = match &self.turn {
            Turn::Failed(m) => return Some(m.evidence(Activity::Blocked)),
            Turn::Open(m) => return Some(m.evidence(Activity::Active)),
            Turn::Closed(m) => m,
            Turn::None => self.started.as_ref()?,
        };
        let idle_at = ready.at + IDLE_AFTER;
        Some(if now >= idle_at {
            Evidence {
                activity: Activity::Idle,
                source: Source::Clock,
                since: idle_at,
                detail: format!("ready for {}s ({})", IDLE_AFTER.as_secs(), ready.detail),
            }
        } else {
            ready.evidence(Activity::Ready)
        })
    }

    /// When the activity or [`Self::stuck`] next changes with no new
    /// signal: a ready agent becomes idle, an active one stuck (with a
    /// `threshold`). `None` when only a signal can change them.
    pub fn next_change(&self, now: SystemTime, threshold: Option<Duration>) -> Option<SystemTime> {
        let e = self.evidence(now)?;
        match e.activity {
            Activity::Ready => Some(e.since + IDLE_AFTER),
            Activity::Active => Some(self.last_sign? + threshold?).filter(|at| *at > now),
            _ => None,
        }
    }

    /// Active with no sign of life for `threshold`: the agent may hang.
    pub fn stuck(&self, now: SystemTime, threshold: Duration) -> bool {
        let active = self
            .evidence(now)
            .is_some_and(|e| e.activity == Activity::Active);
        active
            && self
                .last_sign
                .is_some_and(|t| now.duration_since(t).unwrap_or_default() >= threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn obs(secs: u64, kind: Kind, source: Source, detail: &str) -> Observation {
        Observation {
            at: t(secs),
            kind,
            source,
            detail: detail.into(),
        }
    }

    fn activity(tr: &Tracker, now: u64) -> Option<(Activity, Source)> {
        tr.evidence(t(now)).map(|e| (e.activity, e.source))
    }

    #[test]
    fn no_signal_is_no_activity() {
        assert_eq!(Tracker::default().evidence(t(0)), None);
    }

    #[test]
    fn a_turn_walks_through_every_activity() {
        let mut tr = Tracker::default();
        tr.process_started(t(0), "claude running");
        assert_eq!(activity(&tr, 1), Some((Activity::Ready, Source::Process)));
        tr.observe(obs(
            2,
            Kind::PromptSubmitted,
            Source::Hook,
            "UserPromptSubmit",
        ));
        assert_eq!(activity(&tr, 2), Some((Activity::Active, Source::Hook)));
        tr.observe(obs(3, Kind::Working, Source::Transcript, "tool_use Bash"));
        let e = tr.evidence(t(3)).unwrap();
        assert_eq!((e.activity, e.since), (Activity::Active, t(2)));
        assert_eq!(e.detail, "tool_use Bash");
        tr.observe(obs(
            4,
            Kind::DialogOpened,
            Source::Hook,
            "PermissionRequest Bash",
        ));
        tr.observe(obs(
            4,
            Kind::DialogOpened,
            Source::Hook,
            "Notification permission_prompt",
        ));
        let e = tr.evidence(t(5)).unwrap();
        assert_eq!(
            (e.activity, e.source),
            (Activity::WaitingInput, Source::Hook)
        );
        assert_eq!(e.detail, "PermissionRequest Bash");
        tr.observe(obs(9, Kind::Working, Source::Transcript, "tool_result"));
        assert_eq!(
            activity(&tr, 9),
            Some((Activity::Active, Source::Transcript))
        );
        tr.observe(obs(10, Kind::TurnEnded, Source::Transcript, "end_turn"));
        assert_eq!(
            activity(&tr, 10),
            Some((Activity::Ready, Source::Transcript))
        );
        // Idle is measured from the end-of-turn record.
        assert_eq!(
            activity(&tr, 309),
            Some((Activity::Ready, Source::Transcript))
        );
        let idle = tr.evidence(t(310)).unwrap();
        assert_eq!(
            (idle.activity, idle.source),
            (Activity::Idle, Source::Clock)
        );
        tr.observe(obs(
            400,
            Kind::PromptSubmitted,
            Source::Transcript,
            "user prompt",
        ));
        tr.observe(obs(
            401,
            Kind::TurnFailed,
            Source::Transcript,
            "API error 429",
        ));
        assert_eq!(
            activity(&tr, 402),
            Some((Activity::Blocked, Source::Transcript))
        );
        // Blocked does not decay into idle.
        assert_eq!(
            activity(&tr, 9000),
            Some((Activity::Blocked, Source::Transcript))
        );
        tr.process_gone(t(500), "claude exited");
        tr.observe(obs(501, Kind::PromptSubmitted, Source::Report, "working"));
        assert_eq!(
            activity(&tr, 502),
            Some((Activity::Exited, Source::Process))
        );
    }

    #[test]
    fn an_open_turn_never_decays() {
        let mut tr = Tracker::default();
        tr.process_started(t(0), "up");
        tr.observe(obs(1, Kind::PromptSubmitted, Source::Transcript, "prompt"));
        assert_eq!(
            activity(&tr, 100_000),
            Some((Activity::Active, Source::Transcript))
        );
        assert!(tr.stuck(t(700), Duration::from_secs(600)));
        assert!(!tr.stuck(t(500), Duration::from_secs(600)));
        // Any record is a sign of life; metadata is not.
        tr.observe(obs(650, Kind::Metadata, Source::Transcript, "ai-title"));
        assert!(tr.stuck(t(700), Duration::from_secs(600)));
        tr.screen_changed(t(650));
        assert!(!tr.stuck(t(700), Duration::from_secs(600)));
    }

    #[test]
    fn the_clock_changes_an_activity_at_a_known_time() {
        let mut tr = Tracker::default();
        let threshold = Some(Duration::from_secs(600));
        assert_eq!(tr.next_change(t(0), threshold), None);
        tr.process_started(t(0), "up");
        // Ready becomes idle, which changes no more by itself.
        assert_eq!(tr.next_change(t(1), threshold), Some(t(300)));
        assert_eq!(activity(&tr, 300), Some((Activity::Idle, Source::Clock)));
        assert_eq!(tr.next_change(t(300), threshold), None);
        // Active becomes stuck, with a threshold; each sign of life moves it.
        tr.observe(obs(
            400,
            Kind::PromptSubmitted,
            Source::Transcript,
            "prompt",
        ));
        assert_eq!(tr.next_change(t(401), None), None);
        assert_eq!(tr.next_change(t(401), threshold), Some(t(1000)));
        tr.screen_changed(t(500));
        assert_eq!(tr.next_change(t(501), threshold), Some(t(1100)));
        assert!(tr.stuck(t(1100), Duration::from_secs(600)));
        assert_eq!(tr.next_change(t(1100), threshold), None);
    }

    #[test]
    fn metadata_after_a_turn_does_not_reset_the_clock() {
        let mut tr = Tracker::default();
        tr.observe(obs(1, Kind::PromptSubmitted, Source::Transcript, "prompt"));
        tr.observe(obs(2, Kind::TurnEnded, Source::Transcript, "end_turn"));
        tr.observe(obs(250, Kind::Metadata, Source::Transcript, "ai-title"));
        assert_eq!(activity(&tr, 302), Some((Activity::Idle, Source::Clock)));
    }

    #[test]
    fn a_screen_dialog_counts_until_it_goes() {
        let mut tr = Tracker::default();
        tr.process_started(t(0), "up");
        tr.screen(t(5), Some("Do you trust the files in this folder?".into()));
        let e = tr.evidence(t(6)).unwrap();
        assert_eq!(
            (e.activity, e.source),
            (Activity::WaitingInput, Source::Screen)
        );
        assert_eq!(e.detail, "Do you trust the files in this folder?");
        // The same dialog on the next look keeps its start.
        tr.screen(t(8), Some("Do you trust the files in this folder?".into()));
        assert_eq!(tr.evidence(t(9)).unwrap().since, t(5));
        tr.screen(t(10), None);
        assert_eq!(activity(&tr, 11), Some((Activity::Ready, Source::Process)));
    }

    #[test]
    fn the_agents_own_dialog_wins_over_the_screen() {
        let mut tr = Tracker::default();
        tr.observe(obs(1, Kind::PromptSubmitted, Source::Hook, "prompt"));
        tr.screen(t(2), Some("Do you want to proceed?".into()));
        tr.observe(obs(
            2,
            Kind::DialogOpened,
            Source::Hook,
            "PermissionRequest Bash",
        ));
        assert_eq!(
            activity(&tr, 3),
            Some((Activity::WaitingInput, Source::Hook))
        );
        tr.observe(obs(4, Kind::DialogClosed, Source::Hook, "PostToolUse"));
        // The screen still shows it: the screen is not redrawn yet.
        assert_eq!(
            activity(&tr, 4),
            Some((Activity::WaitingInput, Source::Screen))
        );
        tr.screen(t(5), None);
        assert_eq!(activity(&tr, 5), Some((Activity::Active, Source::Hook)));
    }

    #[test]
    fn the_agents_session_id_is_kept() {
        let mut tr = Tracker::default();
        tr.observe(obs(
            1,
            Kind::SessionStarted {
                agent_session_id: Some("019a".into()),
                transcript: None,
            },
            Source::Transcript,
            "session_meta",
        ));
        assert_eq!(tr.agent_session_id.as_deref(), Some("019a"));
        assert_eq!(tr.evidence(t(2)), None);
    }
}
