//! A session's screen, rebuilt from the bytes of its terminal log, so that
//! watching a session reads what the worker already receives instead of
//! asking tmux for it (a process per look), and what the built-in agents'
//! dialogs look like on it.

use std::num::NonZeroU16;

use DialogKind::{Confirm, HooksReview, Permission, Question, Trust, Update};

/// A terminal screen fed incrementally with a session's output.
pub struct Screen {
    parser: vt100::Parser,
    /// Bumped by every change fed in, so a reader tells cheaply whether
    /// the screen may have changed since it last looked.
    generation: u64,
}

/// Only the visible screen is judged; scrollback would cost memory per
/// session for nothing.
const SCROLLBACK: usize = 0;

fn size(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).unwrap_or(NonZeroU16::MIN)
}

impl Screen {
    /// An empty screen of `cols` × `rows` (a zero is taken as one).
    pub fn new(cols: u16, rows: u16) -> Self {
        Self {
            parser: vt100::Parser::new(size(rows), size(cols), SCROLLBACK),
            generation: 0,
        }
    }

    /// An empty screen whose changes count on from `generation` (that of a
    /// screen it replaces).
    pub fn continuing(cols: u16, rows: u16, generation: u64) -> Self {
        Self {
            generation: generation + 1,
            ..Self::new(cols, rows)
        }
    }

    /// Forgets what was shown: an empty screen of the same size.
    pub fn clear(&mut self) {
        let (rows, cols) = self.parser.screen().size();
        self.parser = vt100::Parser::new(rows, cols, SCROLLBACK);
        self.generation += 1;
    }

    /// Applies output as a terminal would. A UTF-8 character or an escape
    /// sequence split between two calls is completed by the second.
    pub fn feed(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.parser.process(bytes);
        self.generation += 1;
    }

    /// Where the screen is now, for [`Self::changed_since`].
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether anything was fed or resized after `generation` was read.
    pub fn changed_since(&self, generation: u64) -> bool {
        self.generation != generation
    }

    /// The visible screen as lines, top to bottom: a row that wrapped is
    /// joined with the next, as `tmux capture-pane -J` does, so
    /// `lines().join("\n")` stands in for a capture of the visible pane
    /// (empty rows stay, as empty lines). Trailing spaces are cut to one: a
    /// prompt such as `> ` is told apart from output only by its space,
    /// while an agent that pads every row to the width would otherwise
    /// leave each line ending in a run of them.
    pub fn lines(&self) -> Vec<String> {
        let screen = self.parser.screen();
        let (rows, cols) = screen.size();
        let mut lines = Vec::with_capacity(usize::from(rows.get()));
        let mut line = String::new();
        for (row, text) in (0..rows.get()).zip(screen.rows(0, cols.get())) {
            line.push_str(&text);
            // The last row cannot continue below the screen.
            if screen.row_wrapped(row) && row + 1 < rows.get() {
                continue;
            }
            lines.push(one_trailing_space(&line));
            line.clear();
        }
        lines
    }
}

fn one_trailing_space(line: &str) -> String {
    let trimmed = line.trim_end();
    if trimmed.len() < line.len() && !trimmed.is_empty() {
        format!("{trimmed} ")
    } else {
        trimmed.to_string()
    }
}

/// What a dialog on an agent's screen asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogKind {
    /// Whether the agent may work in this folder.
    Trust,
    /// Whether the agent may run a tool, edit or fetch.
    Permission,
    /// A question the agent asks, with options to pick from.
    Question,
    /// The agent offers to update itself.
    Update,
    /// Codex wants its hooks reviewed before it runs them.
    HooksReview,
    /// A yes/no question (Aider's confirms, Claude's plan approval).
    Confirm,
}

/// A dialog waiting for a human on an agent's screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    pub kind: DialogKind,
    /// The question, as one line of the screen.
    pub detail: String,
}

/// How many of the last non-empty lines a dialog is looked for in: a
/// dialog sits at the bottom, and what scrolled above it is history.
const DIALOG_LINES: usize = 25;

/// A phrase that shows one kind of dialog. `asks`: the phrase is in the
/// question itself; otherwise it is an option or a footer, and the
/// question is the nearest line above that ends in `?`.
struct Phrase {
    text: &'static str,
    kind: DialogKind,
    asks: bool,
}

const fn asks(text: &'static str, kind: DialogKind) -> Phrase {
    Phrase {
        text,
        kind,
        asks: true,
    }
}

const fn below(text: &'static str, kind: DialogKind) -> Phrase {
    Phrase {
        text,
        kind,
        asks: false,
    }
}

// Phrases per agent, from AGENTS.md, most specific first: the first that
// shows names the dialog. Claude's permanent `bypass permissions on` footer
// is not a dialog and is on no list.
const CLAUDE: &[Phrase] = &[
    asks("Quick safety check", Trust),
    asks("Do you trust the files in this folder?", Trust),
    below("Yes, I trust this folder", Trust),
    asks("Do you want to proceed?", Permission),
    asks("Do you want to make this edit to", Permission),
    asks("Do you want to create", Permission),
    asks(
        "Do you want to allow Claude to fetch this content?",
        Permission,
    ),
    asks("Would you like to proceed?", Confirm),
    below(
        "Enter to select · ↑/↓ to navigate · Esc to cancel",
        Question,
    ),
];

const CODEX: &[Phrase] = &[
    asks("Do you trust the contents of this directory?", Trust),
    asks("Hooks need review", HooksReview),
    asks("Update available!", Update),
    asks("Would you like to run the following command?", Permission),
    asks("Would you like to make the following edits?", Permission),
    asks("Would you like to grant these permissions?", Permission),
];

const GEMINI: &[Phrase] = &[
    asks("Do you trust the files in this folder?", Trust),
    asks("Allow execution of", Permission),
    asks("Apply this change?", Permission),
    asks("Action Required", Permission),
];

const OPENCODE: &[Phrase] = &[asks("Permission required", Permission)];

/// Gemini restarts in place after its trust dialog, leaving the old one on
/// the screen above a new banner: only what is below the newest counts.
const GEMINI_BANNER: &str = "Tips for getting started";

/// The dialog on a built-in agent's screen, if one shows; `None` for an
/// agent with no known dialogs.
pub fn dialog(agent: &str, lines: &[String]) -> Option<Dialog> {
    let shown: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let bottom = &shown[shown.len().saturating_sub(DIALOG_LINES)..];
    let (phrases, scope) = match agent {
        "claude-code" => (CLAUDE, below_composer(bottom)),
        "codex" => (CODEX, bottom),
        "gemini" => (GEMINI, below_last(bottom, |l| l.contains(GEMINI_BANNER))),
        "opencode" => (OPENCODE, bottom),
        "aider" => return aider_confirm(bottom),
        _ => return None,
    };
    phrases.iter().find_map(|phrase| {
        let at = scope.iter().rposition(|l| l.contains(phrase.text))?;
        let question = if phrase.asks {
            Some(at)
        } else {
            scope[..at].iter().rposition(|l| bare(l).ends_with('?'))
        };
        Some(Dialog {
            kind: phrase.kind,
            detail: bare(scope[question.unwrap_or(at)]).to_string(),
        })
    })
}

/// A line without the box drawing around it.
fn bare(line: &str) -> &str {
    line.trim_matches(|c: char| c.is_whitespace() || "│┃║".contains(c))
}

/// The lines after the last one that `mark` picks; all if none does.
fn below_last<'a>(lines: &'a [&'a str], mark: impl Fn(&str) -> bool) -> &'a [&'a str] {
    lines
        .iter()
        .rposition(|l| mark(l))
        .map_or(lines, |at| &lines[at + 1..])
}

/// Claude's lines from its composer down (a rule, then the `>`/`❯`
/// prompt): a composer shows when no dialog does, so a dialog phrase above
/// it is one already answered. All lines when no composer shows.
fn below_composer<'a>(lines: &'a [&'a str]) -> &'a [&'a str] {
    let rule = |l: &str| {
        let l = l.trim();
        l.chars().count() >= 10 && l.chars().all(|c| "─━╭╮╰╯".contains(c))
    };
    let prompt = |l: &str| {
        let rest = bare(l)
            .strip_prefix('>')
            .or_else(|| bare(l).strip_prefix('❯'));
        // `❯ 1. Yes` is the cursor on a dialog's option, not a prompt.
        rest.is_some_and(|r| !r.trim_start().starts_with(|c: char| c.is_ascii_digit()))
    };
    (1..lines.len())
        .rev()
        .find(|&i| prompt(lines[i]) && rule(lines[i - 1]))
        .map_or(lines, |at| &lines[at..])
}

/// Aider asks on its last line, ending in `(Y)es/(N)o… [Yes]: ` or
/// `[No]: `, with the question before the choices.
fn aider_confirm(lines: &[&str]) -> Option<Dialog> {
    let last = lines.last()?.trim_end();
    if !(last.ends_with("[Yes]:") || last.ends_with("[No]:")) {
        return None;
    }
    let (question, _) = last.split_once("(Y)es/(N)o")?;
    Some(Dialog {
        kind: Confirm,
        detail: question.trim().to_string(),
    })
}

/// How aider shows a reply that failed: litellm's exception, printed as
/// `litellm.APIConnectionError: …` (after the retries, when the error is
/// one it retries).
const AIDER_FAILURE: &str = "litellm.";

/// The error a built-in agent's last turn ended on, when its screen, back
/// at the agent's prompt, shows it as the turn's last output: for aider the
/// line right above its prompt and the rule it draws over it. Only that
/// line counts: an error further up was followed by other output. `None`
/// for an agent whose errors are not known.
pub fn failure(agent: &str, lines: &[String]) -> Option<String> {
    if agent != "aider" {
        return None;
    }
    let shown: Vec<&str> = lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    let (prompt, output) = shown.split_last()?;
    // Its prompt: `>` after the edit format, if any.
    if !prompt.ends_with('>') {
        return None;
    }
    let last = output.iter().rev().find(|l| !l.chars().all(|c| c == '─'))?;
    // A spinner's glyphs or its whole last frame (`░█ Waiting for …`) may
    // be left in front of the error on its line.
    last.match_indices(AIDER_FAILURE).find_map(|(at, _)| {
        let error = &last[at..];
        let (name, _) = error.split_once(": ")?;
        let class = &name[AIDER_FAILURE.len()..];
        (!class.is_empty() && class.chars().all(|c| c.is_ascii_alphanumeric()))
            .then(|| error.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screen(cols: u16, rows: u16, bytes: &[u8]) -> Screen {
        let mut s = Screen::new(cols, rows);
        s.feed(bytes);
        s
    }

    /// The lines down to the last non-empty one.
    fn shown(s: &Screen) -> Vec<String> {
        let mut lines = s.lines();
        while lines.last().is_some_and(String::is_empty) {
            lines.pop();
        }
        lines
    }

    #[test]
    fn cursor_moves_and_clears_redraw_in_place() {
        let mut s = screen(20, 5, b"hello\r\nworld\r\n");
        s.feed(b"\x1b[1;1HJ\x1b[2;3HX\x1b[3;1Hthird");
        assert_eq!(shown(&s), ["Jello", "woXld", "third"]);
        // Erase to the end of the line, then the whole screen.
        s.feed(b"\x1b[1;3H\x1b[K");
        assert_eq!(shown(&s)[0], "Je");
        s.feed(b"\x1b[2J\x1b[Hfresh");
        assert_eq!(shown(&s), ["fresh"]);
        assert_eq!(s.lines().len(), 5);
    }

    #[test]
    fn the_alternate_screen_hides_the_main_one_until_it_ends() {
        let mut s = screen(20, 4, b"shell output\r\n$ ");
        s.feed(b"\x1b[?1049h\x1b[H\x1b[2Jfull screen app");
        assert_eq!(shown(&s), ["full screen app"]);
        s.feed(b"\x1b[?1049l");
        assert_eq!(shown(&s), ["shell output", "$ "]);
    }

    #[test]
    fn characters_and_escapes_split_between_feeds_are_completed() {
        let text = "é│ ✨ ok".as_bytes();
        let mut s = Screen::new(20, 3);
        // Every byte on its own: each character is split somewhere.
        for b in text {
            s.feed(std::slice::from_ref(b));
        }
        s.feed(b"\x1b[");
        s.feed(b"1;1");
        s.feed(b"H>");
        assert_eq!(shown(&s), [">│ ✨ ok"]);
    }

    #[test]
    fn a_64_kib_burst_leaves_its_last_rows_and_equals_the_same_bytes_in_pieces() {
        let mut burst = Vec::new();
        let mut n = 0;
        while burst.len() < 64 * 1024 {
            burst.extend_from_slice(format!("\x1b[32mline {n}\x1b[0m\r\n").as_bytes());
            n += 1;
        }
        burst.extend_from_slice("╰─ done ✓".as_bytes());
        let whole = screen(80, 24, &burst);
        let mut lines = shown(&whole);
        assert_eq!(lines.pop().unwrap(), "╰─ done ✓");
        assert_eq!(lines.pop().unwrap(), format!("line {}", n - 1));
        assert_eq!(lines.len(), 22);
        let mut pieces = Screen::new(80, 24);
        for chunk in burst.chunks(977) {
            pieces.feed(chunk);
        }
        assert_eq!(pieces.lines(), whole.lines());
    }

    #[test]
    fn trailing_spaces_are_cut_to_one_and_wrapped_rows_are_joined() {
        let s = screen(10, 4, b"padded    \r\n> \r\n0123456789abcde");
        assert_eq!(shown(&s), ["padded ", "> ", "0123456789abcde"]);
        // Rows erased after the text hold no spaces.
        let s = screen(10, 2, b"> \x1b[K\r\n\x1b[Kdone");
        assert_eq!(shown(&s), ["> ", "done"]);
    }

    #[test]
    fn the_generation_tells_whether_anything_changed() {
        let mut s = Screen::new(10, 2);
        let seen = s.generation();
        assert!(!s.changed_since(seen));
        s.feed(b"");
        assert!(!s.changed_since(seen));
        s.feed(b"x");
        assert!(s.changed_since(seen));
        assert_eq!(s.lines().len(), 2);
    }

    #[test]
    fn custom_patterns_judge_the_model_as_they_judge_a_capture() {
        use crate::agent::{judge_screen, Launch, ScreenState};
        let spec = crate::agent::AgentSpec {
            name: "bot".into(),
            command: Some("sh".into()),
            ready_pattern: Some(r"^(\w+ )?> ?$".into()),
            input_pattern: Some(r"Proceed\? \(y/n\)".into()),
        };
        let launch: Launch = crate::agent::resolve(&spec, &std::env::var("PATH").unwrap()).unwrap();
        let mut s = screen(40, 6, b"working...\r\n");
        let judge = |s: &Screen| judge_screen(&launch, &s.lines().join("\n"));
        assert_eq!(judge(&s), ScreenState::Other);
        s.feed(b"Proceed? (y/n) ");
        assert_eq!(judge(&s), ScreenState::WaitingInput);
        s.feed(b"y\r\ndone\r\n> ");
        assert_eq!(judge(&s), ScreenState::Ready);
    }

    /// The same bytes, through tmux and through the model, read the same.
    #[tokio::test]
    async fn the_model_reads_like_a_tmux_capture_of_the_same_output() {
        use crate::runtime::{Runtime, StartSpec, TmuxRuntime};
        let dir = tempfile::tempdir().unwrap();
        let rt = TmuxRuntime::new(dir.path().join("tmux.sock"));
        let log = dir.path().join("t.log");
        // Cursor moves, a clear, colours, a wide line that wraps, padding,
        // a prompt with its space, then waits (so the pane stays).
        let script = r#"printf 'old\n\033[2J\033[Hfirst\n\033[31mred\033[0m   \n'
printf '%0300d\n' 0
printf '\033[1;4HST\033[5;1H│ box │\n> '
read line"#;
        rt.start(&StartSpec {
            id: "m-1".into(),
            cwd: dir.path().to_path_buf(),
            command: script.into(),
            env: Default::default(),
            log_path: log.clone(),
            container: None,
        })
        .await
        .unwrap();
        let normalize = |text: &str| {
            let mut lines: Vec<String> = text.lines().map(one_trailing_space).collect();
            while lines.last().is_some_and(String::is_empty) {
                lines.pop();
            }
            lines
        };
        let mut model = Vec::new();
        let mut capture = Vec::new();
        for _ in 0..100 {
            // The pane is 200 × 50, as the runtime starts it.
            let s = screen(200, 50, &std::fs::read(&log).unwrap_or_default());
            model = shown(&s);
            capture = normalize(&rt.capture("m-1", 0).await.unwrap());
            if model.last().is_some_and(|l| l == "> ") && model == capture {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        rt.stop("m-1").await.unwrap();
        assert_eq!(model, capture);
        assert_eq!(model[0], "firST");
        assert_eq!(model.last().unwrap(), "> ");
    }

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn each_phrase_names_its_dialog() {
        let lists = [
            ("claude-code", CLAUDE),
            ("codex", CODEX),
            ("gemini", GEMINI),
            ("opencode", OPENCODE),
        ];
        for (agent, phrases) in lists {
            for phrase in phrases {
                let screen = lines(&[
                    "earlier output",
                    "Is this the question?",
                    &format!("│ {} │", phrase.text),
                    "❯ 1. Yes",
                ]);
                let found = dialog(agent, &screen);
                let detail = if phrase.asks {
                    phrase.text.to_string()
                } else {
                    "Is this the question?".into()
                };
                assert_eq!(
                    found,
                    Some(Dialog {
                        kind: phrase.kind,
                        detail
                    }),
                    "{agent}: {}",
                    phrase.text
                );
                // Scrolled out of the bottom lines, it is history.
                let mut old = screen.clone();
                old.extend((0..DIALOG_LINES).map(|i| format!("output {i}")));
                assert_eq!(dialog(agent, &old), None, "{agent}: {}", phrase.text);
            }
        }
        assert_eq!(dialog("bot", &lines(&["Do you want to proceed?"])), None);
    }

    #[test]
    fn claude_permission_shows_and_its_bypass_footer_alone_does_not() {
        let rule = "─".repeat(40);
        let mut s = Screen::new(60, 20);
        s.feed(format!("● Bash(cargo test)\r\n{rule}\r\n Bash command\r\n\r\n   cargo test\r\n\r\n Do you want to proceed?\r\n ❯ 1. Yes\r\n   2. No, and tell Claude what to do differently (esc)\r\n\r\n  ⏵⏵ bypass permissions on (shift+tab to cycle)").as_bytes());
        assert_eq!(
            dialog("claude-code", &s.lines()),
            Some(Dialog {
                kind: Permission,
                detail: "Do you want to proceed?".into()
            })
        );
        // Answered: the composer is back below the dialog's text.
        s.feed(format!("\x1b[8;1H\x1b[J{rule}\r\n> \r\n{rule}\r\n  ⏵⏵ bypass permissions on (shift+tab to cycle)").as_bytes());
        assert!(s
            .lines()
            .iter()
            .any(|l| l.contains("Do you want to proceed?")));
        assert_eq!(dialog("claude-code", &s.lines()), None);
        // An idle session in skip mode: the footer is always there.
        let idle = lines(&[
            &rule,
            "> ",
            &rule,
            "  ⏵⏵ bypass permissions on (shift+tab to cycle)",
        ]);
        assert_eq!(dialog("claude-code", &idle), None);
    }

    #[test]
    fn claude_question_names_the_question_above_its_options() {
        let screen = lines(&[
            "☐ Colour",
            "",
            "Which colour should the button be?",
            "",
            "❯ 1. Red",
            "  2. Blue",
            "Enter to select · ↑/↓ to navigate · Esc to cancel",
        ]);
        assert_eq!(
            dialog("claude-code", &screen),
            Some(Dialog {
                kind: Question,
                detail: "Which colour should the button be?".into()
            })
        );
    }

    #[test]
    fn gemini_counts_only_what_is_below_its_newest_banner() {
        let mut screen = lines(&[
            "Do you trust the files in this folder?",
            "● 1. Trust folder (app)",
            "Tips for getting started:",
            "1. Ask questions, edit files, or run commands.",
            "> Type your message or @path/to/file",
        ]);
        assert_eq!(dialog("gemini", &screen), None);
        screen.extend(lines(&[
            "Action Required",
            "Allow execution of: 'cargo test'?",
            "● 1. Allow once",
        ]));
        assert_eq!(
            dialog("gemini", &screen),
            Some(Dialog {
                kind: Permission,
                detail: "Allow execution of: 'cargo test'?".into()
            })
        );
    }

    #[test]
    fn aider_confirms_are_its_last_line_with_the_question_as_detail() {
        let mut s = Screen::new(50, 10);
        s.feed(b"Aider v0.86.1\r\nAdd .aider* to .gitignore (recommended)? (Y)es/(N)o [Yes]: ");
        assert_eq!(
            dialog("aider", &s.lines()),
            Some(Dialog {
                kind: Confirm,
                detail: "Add .aider* to .gitignore (recommended)?".into()
            })
        );
        s.feed(b"y\r\nLogin to OpenRouter or create a free account? (Y)es/(N)o [No]: ");
        assert_eq!(
            dialog("aider", &s.lines()).map(|d| d.detail),
            Some("Login to OpenRouter or create a free account?".into())
        );
        s.feed(b"n\r\n> ");
        assert_eq!(dialog("aider", &s.lines()), None);
    }

    #[test]
    fn an_aider_reply_that_failed_is_the_error_right_above_its_prompt() {
        let rule = "─".repeat(50);
        let mut s = Screen::new(120, 12);
        s.feed(b"> say hi\r\n\r\nlitellm.APIConnectionError: Ollama_chatException - [Errno 111] Connection refused\r\nRetrying in 0.2 seconds...\r\n");
        // Still retrying: not back at the prompt.
        assert_eq!(failure("aider", &s.lines()), None);
        s.feed(format!("  \u{2591}litellm.APIConnectionError: Ollama_chatException - [Errno 111] Connection refused\r\n{rule}\r\n> ").as_bytes());
        assert_eq!(
            failure("aider", &s.lines()).as_deref(),
            Some(
                "litellm.APIConnectionError: Ollama_chatException - [Errno 111] Connection refused"
            )
        );
        assert_eq!(failure("codex", &s.lines()), None);
        // The next reply that works leaves the error above other output.
        s.feed(format!("say hi again\r\n\r\nHi!\r\n{rule}\r\n> ").as_bytes());
        assert_eq!(failure("aider", &s.lines()), None);
        // A reply that mentions litellm is not its error.
        let talk = lines(&["litellm. is a library", &rule, "> "]);
        assert_eq!(failure("aider", &talk), None);
        // The spinner's last frame left on the error's line (seen in CI).
        let spun = lines(&[
            " \u{2591}\u{2588}   Waiting for ollama_chat/llama3litellm.APIConnectionError: Ollama_chatException - [Errno 111] Connection refused",
            &rule,
            "> ",
        ]);
        assert_eq!(
            failure("aider", &spun).as_deref(),
            Some(
                "litellm.APIConnectionError: Ollama_chatException - [Errno 111] Connection refused"
            )
        );
    }
}
