//! Agent adapters: how to launch each coding agent, how its prompt reaches
//! it, and what on its screen means "turn over" or "asking a human".

use std::path::{Path, PathBuf};

use regex::Regex;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("agent `{agent}`: binary `{program}` not found on PATH")]
    BinaryNotFound { agent: String, program: String },
    #[error("agent `{agent}` has no command (define `agents.{agent}.command` in the config)")]
    NoCommand { agent: String },
    #[error("agent `{agent}`: invalid {which} `{pattern}`: {reason}")]
    BadPattern {
        agent: String,
        which: &'static str,
        pattern: String,
        reason: String,
    },
}

/// Which agent runs a session and, for one from `agents:`, how. Saved in
/// the session's metadata (under the keys of its flat version 2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentSpec {
    /// A built-in (`claude-code`, `codex`, …) or a name from `agents:`.
    #[serde(rename = "agent")]
    pub name: String,
    /// For `agents.<name>.command`: the shell command line.
    #[serde(rename = "agentCommand", skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_pattern: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_pattern: Option<String>,
}

/// Which of an agent's own records the worker reads besides its screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Native {
    /// Claude Code: its transcript (by the session id `ao` gives it) and the
    /// hooks `ao` installs through `--settings`.
    Claude,
    /// Codex: its rollout file (found by thread id or working directory).
    Codex,
    /// Gemini CLI: the hooks `ao` installs in the worktree's untracked
    /// `.gemini/settings.json`, and its chat file (by the session id `ao`
    /// gives it) for error records.
    Gemini,
    /// The screen only.
    Screen,
}

/// What a built-in agent's command line is filled with for one session.
#[derive(Debug, Clone)]
pub struct LaunchContext {
    /// The agent's own session id (Claude's and Gemini's `--session-id`).
    pub agent_session_id: String,
    /// The settings file that installs `ao`'s hooks (Claude's `--settings`).
    pub settings: PathBuf,
    pub worktree: PathBuf,
    /// Continue the agent's conversation instead of starting one.
    pub resume: bool,
}

/// How to run one agent.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The command line; for a built-in agent a template that
    /// [`Launch::command`] fills in.
    template: String,
    /// The same, to continue the agent's conversation, if it can.
    resume_template: Option<String>,
    /// The program whose process is the agent (for liveness), when known.
    pub program: Option<String>,
    pub native: Native,
    /// The prompt is on the command line; otherwise it is typed in once the
    /// agent is ready.
    pub prompt_on_command_line: bool,
    /// The last non-empty screen line matching this means the turn is over.
    pub ready: Option<Regex>,
    /// The screen's last lines matching this mean a question for a human.
    pub input: Option<Regex>,
}

struct Builtin {
    name: &'static str,
    program: &'static str,
    /// Arguments after the program; `{prompt}` is the prompt from the file,
    /// `{session}` the agent's session id, `{settings}` the hooks' settings
    /// file, `{trust}` what trusts the worktree for this run.
    args: &'static str,
    /// The arguments that continue the conversation `{session}`.
    resume: Option<&'static str>,
    native: Native,
    ready: Option<&'static str>,
    input: &'static str,
}

const PROMPT: &str = r#""$(cat "$AO_PROMPT_FILE")""#;

const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "claude-code",
        program: "claude",
        args: "--session-id {session} --settings {settings} {prompt}",
        resume: Some("--resume {session} --settings {settings}"),
        native: Native::Claude,
        ready: None,
        input: r"Do you want to (proceed|make this edit|create)|❯ 1\. Yes",
    },
    Builtin {
        name: "codex",
        program: "codex",
        args: "{trust} {prompt}",
        resume: Some("resume {session} {trust}"),
        native: Native::Codex,
        ready: None,
        input: r"Allow command\?|\[y/N\]|Approve",
    },
    Builtin {
        name: "aider",
        program: "aider",
        args: "",
        resume: None,
        native: Native::Screen,
        ready: Some(r"^(\w+ )?> ?$"),
        input: r"\(Y\)es/\(N\)o",
    },
    Builtin {
        name: "opencode",
        program: "opencode",
        args: "--prompt {prompt}",
        resume: None,
        native: Native::Screen,
        ready: None,
        input: r"Allow (once|always)|Permission required",
    },
    Builtin {
        name: "gemini",
        program: "gemini",
        args: "--session-id {session} --prompt-interactive {prompt}",
        resume: Some("--resume {session}"),
        native: Native::Gemini,
        ready: None,
        input: r"Allow execution|Apply this change\?|\(y/n\)",
    },
];

fn compile(
    agent: &str,
    which: &'static str,
    pattern: Option<&str>,
) -> Result<Option<Regex>, AgentError> {
    let Some(pattern) = pattern else {
        return Ok(None);
    };
    Regex::new(pattern)
        .map(Some)
        .map_err(|e| AgentError::BadPattern {
            agent: agent.to_string(),
            which,
            pattern: pattern.to_string(),
            reason: e.to_string(),
        })
}

/// Resolves an agent spec into its launch, checking that its program exists
/// on `path` (the worker's `PATH`).
///
/// # Errors
/// [`AgentError::BinaryNotFound`] when the program is missing, and bad specs.
pub fn resolve(spec: &AgentSpec, path: &str) -> Result<Launch, AgentError> {
    if let Some(b) = BUILTINS.iter().find(|b| b.name == spec.name) {
        let program = find_program(b.program, path).ok_or_else(|| AgentError::BinaryNotFound {
            agent: spec.name.clone(),
            program: b.program.to_string(),
        })?;
        let program_arg = crate::runtime::shell_quote(&program.display().to_string());
        let line = |args: &str| format!("{program_arg} {}", args.replace("{prompt}", PROMPT));
        return Ok(Launch {
            template: line(b.args),
            resume_template: b.resume.map(line),
            program: Some(b.program.to_string()),
            native: b.native,
            prompt_on_command_line: b.args.contains("{prompt}"),
            ready: compile(&spec.name, "readyPattern", b.ready)?,
            input: compile(&spec.name, "inputPattern", Some(b.input))?,
        });
    }
    let Some(command) = spec.command.as_deref().filter(|c| !c.trim().is_empty()) else {
        return Err(AgentError::NoCommand {
            agent: spec.name.clone(),
        });
    };
    if let Some(program) = command_program(command) {
        if find_program(program, path).is_none() {
            return Err(AgentError::BinaryNotFound {
                agent: spec.name.clone(),
                program: program.to_string(),
            });
        }
    }
    Ok(Launch {
        template: command.to_string(),
        resume_template: None,
        program: agent_program(command),
        native: Native::Screen,
        prompt_on_command_line: false,
        ready: compile(&spec.name, "readyPattern", spec.ready_pattern.as_deref())?,
        input: compile(&spec.name, "inputPattern", spec.input_pattern.as_deref())?,
    })
}

impl Launch {
    /// A session's launch when its agent cannot be resolved any more (a
    /// re-adopted session whose binary is gone): known by its screen only.
    pub fn unresolved(command: Option<&str>) -> Self {
        Launch {
            template: command.unwrap_or_default().to_string(),
            resume_template: None,
            program: command.and_then(agent_program),
            native: Native::Screen,
            prompt_on_command_line: true,
            ready: None,
            input: None,
        }
    }

    /// The command line that starts (or, with `ctx.resume`, continues) the
    /// agent of one session.
    pub fn command(&self, ctx: &LaunchContext) -> String {
        let template = match (&self.resume_template, ctx.resume) {
            (Some(resume), true) => resume,
            _ => &self.template,
        };
        let quote = crate::runtime::shell_quote;
        let trust = crate::signals::codex::launch_args(&ctx.worktree)
            .iter()
            .map(|a| quote(a))
            .collect::<Vec<_>>()
            .join(" ");
        template
            .replace("{session}", &quote(&ctx.agent_session_id))
            .replace("{settings}", &quote(&ctx.settings.display().to_string()))
            .replace("{trust}", &trust)
            .trim_end()
            .to_string()
    }

    /// Whether the agent can continue its conversation after a restart.
    pub fn can_resume(&self) -> bool {
        self.resume_template.is_some()
    }
}

/// Words the shell resolves itself, never on `PATH`, in four groups: POSIX's
/// reserved words, its special built-ins, its regular built-ins, and the
/// common built-ins of dash and bash.
const SHELL_WORDS: [&[&str]; 4] = [
    &[
        "!", "{", "}", "(", "case", "do", "done", "elif", "else", "esac", "fi", "for", "if", "in",
        "then", "until", "while", "[[", "function", "select", "time",
    ],
    &[
        "break", ":", "continue", ".", "eval", "exec", "exit", "export", "readonly", "return",
        "set", "shift", "times", "trap", "unset",
    ],
    &[
        "alias", "bg", "cd", "command", "false", "fc", "fg", "getopts", "hash", "jobs", "kill",
        "newgrp", "pwd", "read", "true", "type", "ulimit", "umask", "unalias", "wait",
    ],
    &[
        "echo", "printf", "test", "[", "source", "local", "let", "declare", "typeset", "builtin",
        "shopt", "pushd", "popd", "sleep",
    ],
];

/// The program a shell command line runs first, when that is knowable
/// without running it (not a builtin, keyword or expansion).
fn command_program(command: &str) -> Option<&str> {
    let word = command
        .split_whitespace()
        .find(|w| !w.contains('=') || w.starts_with('='))?;
    if SHELL_WORDS.iter().any(|words| words.contains(&word))
        || word.contains(['$', '`', '"', '\'', ';', '&', '|'])
    {
        return None;
    }
    Some(word)
}

/// The program whose process is the agent of a custom command: its first
/// program, or inside `sh -c '…'` the script's first program (a wrapper
/// such as `sh -c 'agent; exec bash'` keeps the pane after the agent).
fn agent_program(command: &str) -> Option<String> {
    let first = command_program(command)?;
    let name = Path::new(first).file_name()?.to_string_lossy().into_owned();
    let shells = ["sh", "bash", "dash", "zsh"];
    if let (true, Some(script)) = (shells.contains(&name.as_str()), shell_script(command)) {
        return agent_program(&script);
    }
    Some(name)
}

/// The script of `sh -c '<script>'` (single or double quoted, or one word).
fn shell_script(command: &str) -> Option<String> {
    let rest = command.split_once(" -c ")?.1.trim_start();
    let script = match rest.chars().next()? {
        q @ ('\'' | '"') => rest[1..].split(q).next()?,
        _ => rest.split_whitespace().next()?,
    };
    Some(script.to_string())
}

/// Finds `program` like a shell would: a path as given, else on `path`.
pub fn find_program(program: &str, path: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

/// What the screen says, judged by the agent's patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScreenState {
    WaitingInput,
    Ready,
    Other,
}

/// How many of the last non-empty lines a question may be on.
const QUESTION_LINES: usize = 8;

pub fn judge_screen(launch: &Launch, screen: &str) -> ScreenState {
    // Trailing spaces are kept: a prompt like `> ` is only told apart from
    // output by them.
    let lines: Vec<&str> = screen.lines().filter(|l| !l.trim().is_empty()).collect();
    // A ready prompt on the last line means any question above was answered.
    if let (Some(ready), Some(last)) = (&launch.ready, lines.last()) {
        if ready.is_match(last) {
            return ScreenState::Ready;
        }
    }
    if let Some(input) = &launch.input {
        let tail = &lines[lines.len().saturating_sub(QUESTION_LINES)..];
        if tail.iter().any(|l| input.is_match(l)) {
            return ScreenState::WaitingInput;
        }
    }
    ScreenState::Other
}

#[cfg(test)]
mod tests {
    use super::*;
    use ao_proto::pb;

    /// As the controller sends it: `""` for none.
    fn custom(command: &str, ready: &str, input: &str) -> AgentSpec {
        pb::AgentSpec {
            name: "bot".into(),
            command: command.into(),
            ready_pattern: ready.into(),
            input_pattern: input.into(),
        }
        .into()
    }

    #[test]
    fn the_agents_a_restore_says_resume_are_those_that_can() {
        let can: Vec<&str> = BUILTINS
            .iter()
            .filter(|b| b.resume.is_some())
            .map(|b| b.name)
            .collect();
        assert_eq!(can, ao_proto::report::RESUMABLE_AGENTS);
    }

    #[test]
    fn builtins_need_their_binary() {
        let dir = tempfile::tempdir().unwrap();
        let spec = AgentSpec {
            name: "claude-code".into(),
            ..Default::default()
        };
        let err = resolve(&spec, dir.path().to_str().unwrap()).unwrap_err();
        assert!(err.to_string().contains("`claude` not found"), "{err}");

        let bin = dir.path().join("claude");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let launch = resolve(&spec, dir.path().to_str().unwrap()).unwrap();
        assert!(launch.prompt_on_command_line);
        assert_eq!(launch.native, Native::Claude);
        let mut ctx = LaunchContext {
            agent_session_id: "5f0c2a9e-1111-4222-8333-944445555666".into(),
            settings: "/ao home/s/agent-settings.json".into(),
            worktree: "/wt/app-1".into(),
            resume: false,
        };
        let start = launch.command(&ctx);
        assert!(
            start.ends_with(
                r#"claude' --session-id '5f0c2a9e-1111-4222-8333-944445555666' --settings '/ao home/s/agent-settings.json' "$(cat "$AO_PROMPT_FILE")""#
            ),
            "{start}"
        );
        ctx.resume = true;
        let resume = launch.command(&ctx);
        assert!(
            resume.ends_with(
                r#"claude' --resume '5f0c2a9e-1111-4222-8333-944445555666' --settings '/ao home/s/agent-settings.json'"#
            ),
            "{resume}"
        );
    }

    #[test]
    fn gemini_gets_its_session_id_and_resumes_it() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("gemini");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let spec = AgentSpec {
            name: "gemini".into(),
            ..Default::default()
        };
        let launch = resolve(&spec, dir.path().to_str().unwrap()).unwrap();
        assert_eq!(launch.native, Native::Gemini);
        assert!(launch.prompt_on_command_line && launch.can_resume());
        let mut ctx = LaunchContext {
            agent_session_id: "5f0c2a9e-1111-4222-8333-944445555666".into(),
            settings: "/unused.json".into(),
            worktree: "/wt/app-1".into(),
            resume: false,
        };
        assert!(
            launch.command(&ctx).ends_with(
                r#"gemini' --session-id '5f0c2a9e-1111-4222-8333-944445555666' --prompt-interactive "$(cat "$AO_PROMPT_FILE")""#
            ),
            "{}",
            launch.command(&ctx)
        );
        ctx.resume = true;
        assert!(
            launch
                .command(&ctx)
                .ends_with(r#"gemini' --resume '5f0c2a9e-1111-4222-8333-944445555666'"#),
            "{}",
            launch.command(&ctx)
        );
    }

    #[test]
    fn the_agent_of_a_wrapper_is_the_program_it_runs() {
        for (command, program) in [
            ("/opt/bin/my-agent --fast", Some("my-agent")),
            ("sh -c 'claude --session-id x; exec bash'", Some("claude")),
            ("bash -c \"aider --yes; exec bash\"", Some("aider")),
            ("FOO=1 sh -c 'codex'", Some("codex")),
            ("sh", Some("sh")),
            ("cd x && whatever", None),
        ] {
            assert_eq!(agent_program(command).as_deref(), program, "{command}");
        }
    }

    #[test]
    fn codex_trusts_the_worktree_for_its_run_only() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("codex");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let spec = AgentSpec {
            name: "codex".into(),
            ..Default::default()
        };
        let launch = resolve(&spec, dir.path().to_str().unwrap()).unwrap();
        let ctx = LaunchContext {
            agent_session_id: "019a".into(),
            settings: "/s.json".into(),
            worktree: "/nonexistent/app-2".into(),
            resume: false,
        };
        assert!(
            launch.command(&ctx).ends_with(
                r#"codex' '-c' 'projects."/nonexistent/app-2".trust_level="trusted"' '-c' 'check_for_update_on_startup=false' "$(cat "$AO_PROMPT_FILE")""#
            ),
            "{}",
            launch.command(&ctx)
        );
    }

    #[test]
    fn custom_commands_check_their_first_program() {
        let path = std::env::var("PATH").unwrap();
        assert!(resolve(&custom("FOO=1 sh -c 'echo'", "", ""), &path).is_ok());
        assert!(resolve(&custom("cd x && whatever", "", ""), &path).is_ok());
        for builtin_first in [
            "umask 077; exec python3 -u bot.py",
            "ulimit -n 100 && exec bot",
            "export A=1; exec bot",
            "trap '' HUP; exec bot",
            "readonly X=1; bot",
            ": starting; bot",
            "unset X; bot",
            "command -v bot && bot",
        ] {
            assert_eq!(command_program(builtin_first), None, "{builtin_first}");
            assert!(
                resolve(&custom(builtin_first, "", ""), &path).is_ok(),
                "{builtin_first}"
            );
        }
        let err = resolve(&custom("no-such-agent-binary --x", "", ""), &path).unwrap_err();
        assert!(
            matches!(err, AgentError::BinaryNotFound { ref program, .. } if program == "no-such-agent-binary")
        );
        assert!(matches!(
            resolve(&custom("sh", "(", ""), &path),
            Err(AgentError::BadPattern { .. })
        ));
    }

    #[test]
    fn screen_judgement() {
        let launch = resolve(
            &custom("sh", r"^> $", r"\(y/n\)"),
            &std::env::var("PATH").unwrap(),
        )
        .unwrap();
        assert_eq!(judge_screen(&launch, "hello\n> \n\n"), ScreenState::Ready);
        assert_eq!(
            judge_screen(&launch, "Proceed? (y/n)\n"),
            ScreenState::WaitingInput
        );
        assert_eq!(judge_screen(&launch, "working...\n"), ScreenState::Other);
        // Answered: the prompt is back below the question.
        assert_eq!(
            judge_screen(&launch, "Proceed? (y/n) y\n> \n"),
            ScreenState::Ready
        );
    }
}
