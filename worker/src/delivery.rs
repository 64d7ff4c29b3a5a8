//! Typing text into an agent: the task prompt and `ao send` messages, each
//! typed, confirmed on the agent's screen and submitted once, also across a
//! worker crash in the middle.

use std::path::Path;
use std::time::{Duration, Instant};

use ao_proto::env;
use serde::{Deserialize, Serialize};

use crate::output;
use crate::runtime::Runtime;

/// How long typed input may take to show on the screen.
const ECHO_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an agent given its prompt on the command line may show no sign
/// of it (no prompt record, no hook, no dialog) before it is typed in; each
/// next attempt waits twice as long.
pub(crate) const PROMPT_GRACE: Duration = Duration::from_secs(4);
/// Typed attempts before the session is errored for it.
pub(crate) const PROMPT_ATTEMPTS: u32 = 3;

/// What to do about a prompt the agent shows no sign of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PromptCheck {
    /// It arrived, a dialog holds it up, or it is too early to tell.
    Wait,
    /// Type it in.
    Retype,
    /// It never arrived: the session is errored.
    GiveUp,
}

/// Whether a prompt given at launch arrived: `since_start` of the agent,
/// its output `quiet` for so long, `typed` attempts made, and whether the
/// agent's records show a prompt or a dialog.
pub(crate) fn check_prompt(
    since_start: Duration,
    quiet: Duration,
    typed: u32,
    seen: bool,
    dialog: bool,
) -> PromptCheck {
    let due = PROMPT_GRACE * 2u32.saturating_pow(typed);
    if seen || dialog || since_start < due || quiet < QUIET {
        PromptCheck::Wait
    } else if typed >= PROMPT_ATTEMPTS {
        PromptCheck::GiveUp
    } else {
        PromptCheck::Retype
    }
}

/// Output quiet this long means the agent waits for input.
const QUIET: Duration = Duration::from_millis(1500);

/// How far delivering the task prompt got. Each step is on disk before
/// the step is taken, so a worker that dies in the middle knows what to
/// check on the screen when it comes back: the prompt is typed once and
/// submitted once, whatever the moment of the crash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum PromptStep {
    /// Not typed yet.
    #[default]
    Pending,
    /// Being typed, or typed and not yet submitted with Enter.
    Typing,
    /// Enter was pressed after the prompt.
    Submitted,
}

/// What tells, after a crash, whether the prompt had been typed: where the
/// log was and how often the end of the prompt showed in the scrollback
/// before it was typed. The log keeps everything (the scrollback only the
/// last lines); the screen also sees what a full-screen agent redraws.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PromptEvidence {
    pub(crate) log: output::LogPosition,
    pub(crate) echoes: usize,
}

/// Why a message was not confirmed, and whether Enter was pressed anyway.
#[derive(Debug)]
pub(crate) struct Undelivered {
    pub(crate) submitted: bool,
    pub(crate) reason: String,
}

impl Undelivered {
    pub(crate) fn before_typing(e: impl ToString) -> Self {
        Self {
            submitted: false,
            reason: e.to_string(),
        }
    }
}

/// How much scrollback is searched for typed text.
pub(crate) const HISTORY: u32 = 2000;

/// What shows on the screen once `text` is typed: the end of its last line.
pub(crate) fn echo_needle(text: &str) -> String {
    let line = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    // A tab shows as spaces: look for what follows the last one.
    let after_tab: Vec<char> = line.rsplit('\t').next().unwrap_or("").chars().collect();
    after_tab[after_tab.len().saturating_sub(60)..]
        .iter()
        .collect()
}

/// Types `text`, confirms it shows on the screen (an interactive agent's
/// terminal echoes what it is typed), then presses Enter. Checking before
/// Enter matters: an agent that prints a lot in answer would scroll the
/// typed line away before it could be seen.
pub(crate) async fn deliver(
    runtime: &dyn Runtime,
    keyboard: &tokio::sync::Mutex<()>,
    id: &str,
    text: &str,
) -> Result<(), Undelivered> {
    // One message at a time: typed text and its Enter must not interleave
    // with another message's (the prompt and an `ao send`, say).
    let _turn = keyboard.lock().await;
    let before = runtime
        .capture(id, HISTORY)
        .await
        .map_err(Undelivered::before_typing)?
        .matches(echo_needle(text).as_str())
        .count();
    type_and_confirm(runtime, id, text, before).await
}

/// [`deliver`]'s typing, confirming and Enter, for a caller that holds the
/// keyboard and counted how often the end of `text` showed before.
pub(crate) async fn type_and_confirm(
    runtime: &dyn Runtime,
    id: &str,
    text: &str,
    before: usize,
) -> Result<(), Undelivered> {
    let needle = echo_needle(text);
    runtime
        .write_input(id, text, false)
        .await
        .map_err(Undelivered::before_typing)?;
    crash_point("prompt-typed");
    let deadline = Instant::now() + ECHO_TIMEOUT;
    let mut seen = needle.is_empty();
    while !seen && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        match runtime.capture(id, HISTORY).await {
            Ok(screen) => seen = screen.matches(needle.as_str()).count() > before,
            Err(e) => {
                return Err(Undelivered {
                    submitted: false,
                    reason: e.to_string(),
                })
            }
        }
    }
    // Enter either way: typed text left unsubmitted would mix with the next input.
    runtime
        .write_input(id, "", true)
        .await
        .map_err(|e| Undelivered {
            submitted: false,
            reason: e.to_string(),
        })?;
    if seen {
        Ok(())
    } else {
        Err(Undelivered {
            submitted: true,
            reason: format!(
                "typed, but `{needle}` did not appear on the agent's screen within {} s",
                ECHO_TIMEOUT.as_secs()
            ),
        })
    }
}

/// Finishes delivering a prompt that a previous worker was typing when it
/// died. Typed but not submitted, the end of the prompt is on the cursor's
/// line and only Enter is missing; submitted, it showed after the recorded
/// point of the log, or more often in the scrollback than before typing;
/// otherwise it was never typed, and is typed now.
pub(crate) async fn resume_prompt(
    runtime: &dyn Runtime,
    keyboard: &tokio::sync::Mutex<()>,
    id: &str,
    text: &str,
    log: &Path,
    before: PromptEvidence,
) -> Result<(), Undelivered> {
    let _turn = keyboard.lock().await;
    let needle = echo_needle(text);
    let cursor = runtime
        .cursor_line(id)
        .await
        .map_err(Undelivered::before_typing)?;
    if !needle.is_empty() && cursor.trim_end().ends_with(&needle) {
        tracing::info!(session = %id, "submitting a prompt typed before a crash");
        return runtime
            .write_input(id, "", true)
            .await
            .map_err(Undelivered::before_typing);
    }
    let echoes = runtime
        .capture(id, HISTORY)
        .await
        .map_err(Undelivered::before_typing)?
        .matches(needle.as_str())
        .count();
    let logged = output::shown_since(log, before.log, &needle).unwrap_or_else(|e| {
        tracing::warn!(session = %id, "cannot search the terminal log: {e}");
        false
    });
    if echoes > before.echoes || logged {
        tracing::info!(session = %id, "the prompt was submitted before a crash");
        return Ok(());
    }
    type_and_confirm(runtime, id, text, echoes).await
}

/// Test-only crash points: with `AO_FAULT=<name>` the process exits at once
/// at the point of that name, as a `kill -9` there would end it, so tests
/// can show what a crash at that moment loses.
pub(crate) fn crash_point(name: &str) {
    if std::env::var(env::AO_FAULT).is_ok_and(|v| v == name) {
        tracing::error!("AO_FAULT={name}: exiting here");
        std::process::exit(86);
    }
}

/// Messages typed once per session: their keys in a small file, so that
/// the controller sending one again after a restart does not type it twice.
pub(crate) mod once {
    use std::io::Write;
    use std::path::Path;

    /// Keys kept; older ones are forgotten (a message is resent within
    /// moments of a restart, not after hundreds of others).
    const KEPT: usize = 256;

    /// How far a message typed once got.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Once {
        /// Never seen.
        New,
        /// Being typed when the worker last ran: look at the screen.
        Claimed,
        /// Typed and submitted.
        Typed,
    }

    impl Once {
        fn word(self) -> &'static str {
            match self {
                Self::New => "new",
                Self::Claimed => "claimed",
                Self::Typed => "typed",
            }
        }
    }

    /// How far `key` got, from the last record of it.
    pub(crate) fn state(file: &Path, key: &str) -> Once {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        text.lines()
            .rev()
            .find_map(|line| match line.split_once(' ') {
                Some(("claimed", k)) if k == key => Some(Once::Claimed),
                Some(("typed", k)) if k == key => Some(Once::Typed),
                _ => None,
            })
            .unwrap_or(Once::New)
    }

    /// Records that `key` got to `step`: claimed before it is typed (so
    /// that a worker dying while typing it knows to look), typed after. A
    /// failure is logged: the worst it does is let a resent message be
    /// typed again.
    pub(crate) fn note(file: &Path, key: &str, step: Once) {
        let line = format!("{} {key}", step.word());
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let count = text.lines().count();
        let result = if count >= KEPT {
            let kept: Vec<&str> = text.lines().skip(count + 1 - KEPT).collect();
            std::fs::write(file, format!("{}\n{line}\n", kept.join("\n")))
        } else {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)
                .and_then(|mut f| writeln!(f, "{line}"))
        };
        if let Err(e) = result {
            tracing::warn!(file = %file.display(), "cannot record a typed message: {e}");
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_key_goes_from_claimed_to_typed_and_old_keys_are_forgotten() {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("typed-once");
            assert_eq!(state(&file, "a"), Once::New);
            note(&file, "a", Once::Claimed);
            assert_eq!(state(&file, "a"), Once::Claimed);
            note(&file, "a", Once::Typed);
            assert_eq!(
                (state(&file, "a"), state(&file, "b")),
                (Once::Typed, Once::New)
            );
            for i in 0..KEPT {
                note(&file, &i.to_string(), Once::Typed);
            }
            assert_eq!(state(&file, "a"), Once::New, "the oldest key is forgotten");
            assert_eq!(state(&file, &(KEPT - 1).to_string()), Once::Typed);
            let lines = std::fs::read_to_string(&file).unwrap().lines().count();
            assert_eq!(lines, KEPT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_prompt_is_typed_with_backoff_then_given_up() {
        let s = Duration::from_secs;
        let quiet = s(2);
        assert_eq!(
            check_prompt(s(3), quiet, 0, false, false),
            PromptCheck::Wait
        );
        assert_eq!(
            check_prompt(s(4), quiet, 0, false, false),
            PromptCheck::Retype
        );
        assert_eq!(
            check_prompt(s(7), quiet, 1, false, false),
            PromptCheck::Wait
        );
        assert_eq!(
            check_prompt(s(8), quiet, 1, false, false),
            PromptCheck::Retype
        );
        assert_eq!(
            check_prompt(s(16), quiet, 2, false, false),
            PromptCheck::Retype
        );
        assert_eq!(
            check_prompt(s(32), quiet, 3, false, false),
            PromptCheck::GiveUp
        );
        // Seen, held up by a dialog, or still printing: nothing to do.
        assert_eq!(
            check_prompt(s(60), quiet, 3, true, false),
            PromptCheck::Wait
        );
        assert_eq!(
            check_prompt(s(60), quiet, 3, false, true),
            PromptCheck::Wait
        );
        assert_eq!(
            check_prompt(s(60), Duration::from_millis(100), 0, false, false),
            PromptCheck::Wait
        );
    }

    #[test]
    fn the_echo_needle_is_the_end_of_the_last_line_after_its_last_tab() {
        assert_eq!(echo_needle("first\n  last line  \n\n"), "last line");
        assert_eq!(echo_needle("a\tb\tafter tab"), "after tab");
        assert_eq!(echo_needle(""), "");
        let long = "x".repeat(100) + "é";
        assert_eq!(echo_needle(&long).chars().count(), 60);
        assert!(echo_needle(&long).ends_with('é'));
    }
}
