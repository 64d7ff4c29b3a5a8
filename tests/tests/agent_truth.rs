//! Agents that tell the truth: the worker reads what Claude Code, Codex and
//! Gemini CLI write on disk and what their hooks say, and `ao status` shows
//! each step of a turn with the evidence behind it. The agents are the fake
//! `claude`, `codex` and `gemini` of `agents/fake/`, which write their
//! transcripts, call hooks and draw screens as the real ones do; every step
//! of theirs waits for a gate file the test creates, so each state can be
//! seen.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ao_tests::{agents_dir, poll, Cli, Stack};
use serde_json::Value;

/// A stack whose project `app` runs `agent` (from `agents/fake` on `PATH`),
/// with the agents' homes and the gates in the test's own directory.
struct Truth {
    stack: Stack,
    gates: PathBuf,
    claude_dir: PathBuf,
    codex_home: PathBuf,
}

impl Truth {
    fn new(agent: &str) -> Self {
        Self::with_agents(agent, "")
    }

    /// `agents` are YAML lines added under `agents:`.
    fn with_agents(agent: &str, agents: &str) -> Self {
        Self::with_config(agent, agents, "")
    }

    /// `top` are YAML lines added at the top level.
    fn with_config(agent: &str, agents: &str, top: &str) -> Self {
        let stack = Stack::new();
        let config = std::fs::read_to_string(&stack.config)
            .unwrap()
            .replacen("agent: bot", &format!("agent: {agent}"), 1)
            .replacen("agents:\n", &format!("agents:\n{agents}"), 1);
        let config = format!("{top}{config}");
        std::fs::write(&stack.config, config).unwrap();
        let root = stack.dir.path().to_path_buf();
        let gates = root.join("gates");
        let claude_dir = root.join("claude-config");
        let codex_home = root.join("codex-home");
        for d in [&gates, &claude_dir, &codex_home] {
            std::fs::create_dir_all(d).unwrap();
        }
        let fake = agents_dir().join("fake");
        let path = std::env::join_paths(
            std::iter::once(fake).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
        )
        .unwrap();
        stack.up_with(&[
            ("PATH", path),
            ("CLAUDE_CONFIG_DIR", claude_dir.clone().into_os_string()),
            ("CODEX_HOME", codex_home.clone().into_os_string()),
            ("FAKE_GATES", gates.clone().into_os_string()),
            // The fake agents must not find the developer's own homes.
            ("HOME", OsString::from(root.join("home-dir"))),
        ]);
        Self {
            stack,
            gates,
            claude_dir,
            codex_home,
        }
    }

    /// Lets the agents take step `name`.
    fn open(&self, name: &str) {
        std::fs::write(self.gates.join(name), "").unwrap();
    }

    /// Waits until the session's activity is `activity`, from one of
    /// `sources`; the session object then.
    fn wait(&self, id: &str, activity: &str, sources: &[&str]) -> Value {
        self.wait_for(id, activity, sources, "")
    }

    /// [`Self::wait`] for evidence whose detail holds `detail`.
    fn wait_for(&self, id: &str, activity: &str, sources: &[&str], detail: &str) -> Value {
        let mut last = Value::Null;
        poll(Duration::from_secs(20), || {
            last = self.stack.session(id);
            let source = last["activitySource"].as_str().unwrap_or_default();
            let said = last["activityDetail"].as_str().unwrap_or_default();
            (last["activity"] == activity && sources.contains(&source) && said.contains(detail))
                .then(|| last.clone())
        })
        .unwrap_or_else(|| {
            let screen = self.stack.ao(&["logs", id, "-n", "12"]).stdout;
            panic!("timed out waiting for {id} {activity} from {sources:?}; last seen {last}\nscreen:\n{screen}")
        })
    }

    fn send(&self, id: &str, text: &str) {
        self.stack.ao(&["send", id, text]).ok();
    }
}

fn detail(session: &Value) -> &str {
    session["activityDetail"].as_str().unwrap_or_default()
}

fn worktree(session: &Value) -> PathBuf {
    PathBuf::from(session["worktree"].as_str().expect("a worktree"))
}

/// Claude's project directory name for a worktree: every character outside
/// `[A-Za-z0-9]` becomes `-`.
fn claude_project(config: &Path, worktree: &Path) -> PathBuf {
    let real = std::fs::canonicalize(worktree).unwrap();
    let enc: String = real
        .display()
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    config.join("projects").join(enc)
}

#[test]
fn a_claude_turn_is_seen_step_by_step_from_its_transcript_and_hooks() {
    let t = Truth::new("claude-code");
    let id = t
        .stack
        .spawn(&["app", "T-1", "--prompt", "run the tool please"]);
    // The prompt on the command line got past the trust dialog: ao trusted
    // the worktree in Claude's own file before the start.
    let s = t.wait(&id, "active", &["hook", "transcript"]);
    let trust: Value = serde_json::from_slice(
        &std::fs::read(t.claude_dir.join(".claude.json")).expect("ao wrote Claude's trust file"),
    )
    .unwrap();
    let real = std::fs::canonicalize(worktree(&s)).unwrap();
    assert_eq!(
        trust["projects"][real.display().to_string()]["hasTrustDialogAccepted"],
        true
    );
    assert!(
        s["activitySince"].as_str().is_some_and(|v| v.contains('T')),
        "{s}"
    );
    // The agent's session id is ao's choice, and names the transcript.
    let uuid = s["agentSessionId"]
        .as_str()
        .expect("agentSessionId")
        .to_string();
    let transcript = claude_project(&t.claude_dir, &worktree(&s)).join(format!("{uuid}.jsonl"));
    poll(Duration::from_secs(20), || {
        transcript.exists().then_some(())
    })
    .expect("the transcript is named by ao's session id");

    t.open("tool");
    t.wait_for(&id, "active", &["transcript"], "Bash");

    t.open("ask");
    let s = t.wait_for(&id, "waiting_input", &["hook"], "PermissionRequest");
    assert!(detail(&s).contains("cargo test"), "{s}");
    assert_eq!(s["status"], "needs_input");

    t.send(&id, "1");
    t.wait(&id, "active", &["hook", "transcript"]);

    t.open("end");
    t.wait(&id, "ready", &["hook", "transcript"]);

    t.send(&id, "now a ratelimit");
    t.wait_for(&id, "blocked", &["hook", "transcript"], "429");

    t.send(&id, "exit");
    let s = t.wait(&id, "exited", &["process"]);
    assert_eq!(s["status"], "done", "{s}");
    // One event for the dialog, one for the block: each says which.
    let needs: Vec<String> = t
        .stack
        .cli_events()
        .iter()
        .filter(|e| e["sessionId"] == id.as_str() && e["type"] == "session.needs_input")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(needs.len(), 2, "{needs:?}");
    assert!(
        needs[0].contains("waiting for input: PermissionRequest"),
        "{needs:?}"
    );
    assert!(
        needs[1].contains("blocked:") && needs[1].contains("429"),
        "{needs:?}"
    );
}

#[test]
fn a_codex_turn_is_seen_from_its_rollout_and_its_screen() {
    let t = Truth::new("codex");
    let id = t
        .stack
        .spawn(&["app", "T-2", "--prompt", "run the tool please"]);
    let s = t.wait(&id, "active", &["transcript"]);
    // Found by the thread id: the rollout is under today's date.
    let thread = s["agentSessionId"].as_str().expect("agentSessionId");
    let found = walk(&t.codex_home.join("sessions"))
        .into_iter()
        .any(|p| p.to_string_lossy().ends_with(&format!("{thread}.jsonl")));
    assert!(found, "no rollout for {thread}");

    t.open("tool");
    t.open("ask");
    // Codex never writes an approval down: the screen says it.
    t.wait_for(&id, "waiting_input", &["screen"], "Would you like to run");

    t.send(&id, "y");
    t.open("end");
    t.wait(&id, "ready", &["transcript"]);

    t.send(&id, "now a ratelimit");
    t.wait_for(&id, "blocked", &["transcript"], "usage_limit");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            found.extend(walk(&p));
        } else {
            found.push(p);
        }
    }
    found
}

#[test]
fn a_line_cut_by_a_crash_is_read_once_it_is_complete() {
    let t = Truth::new("claude-code");
    let id = t
        .stack
        .spawn(&["app", "T-3", "--prompt", "crash while writing"]);
    // Half an end-of-turn line is on disk: the turn is still open.
    let s = t.wait(&id, "active", &["hook", "transcript"]);
    let file = claude_project(&t.claude_dir, &worktree(&s))
        .join(format!("{}.jsonl", s["agentSessionId"].as_str().unwrap()));
    poll(Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&file).ok()?;
        (!text.ends_with('\n')).then_some(())
    })
    .expect("the fake agent left half a line");
    assert_eq!(t.stack.session(&id)["activity"], "active");
    t.send(&id, "go");
    t.wait(&id, "ready", &["transcript"]);
}

#[test]
fn an_agent_that_dies_in_a_surviving_pane_is_exited() {
    let t = Truth::with_agents(
        "wrapped",
        "  wrapped:\n    command: \"sh -c 'claude --session-id 5f0c2a9e-1111-4222-8333-944445555666; exec sh'\"\n",
    );
    // The fake is not trusted here (a custom command gets no pre-trust):
    // trust it by hand, as a user would have.
    let id = t.stack.spawn(&["app", "T-4"]);
    t.stack.wait_log(&id, "Quick safety check");
    let s = t.stack.session(&id);
    let real = std::fs::canonicalize(worktree(&s)).unwrap();
    std::fs::write(
        t.claude_dir.join(".claude.json"),
        serde_json::json!({"projects": {real.display().to_string(): {"hasTrustDialogAccepted": true}}})
            .to_string(),
    )
    .unwrap();
    t.send(&id, "go on");
    t.stack.wait_log(&id, "? for shortcuts");
    t.send(&id, "exit");
    t.wait(&id, "exited", &["process"]);
    // The pane is still there, running the shell.
    assert!(
        t.stack.tmux_sessions().contains(&id),
        "{:?}",
        t.stack.tmux_sessions()
    );
}

#[test]
fn two_sessions_never_read_each_others_transcript() {
    let t = Truth::new("claude-code");
    let a = t.stack.spawn(&["app", "T-5", "--prompt", "first task"]);
    let b = t.stack.spawn(&["app", "T-6", "--prompt", "second task"]);
    t.wait(&a, "ready", &["hook", "transcript"]);
    t.wait(&b, "ready", &["hook", "transcript"]);
    t.send(&a, "a ratelimit for a");
    t.wait(&a, "blocked", &["hook", "transcript"]);
    let sb = t.stack.session(&b);
    assert_eq!(sb["activity"], "ready", "{sb}");
    assert_ne!(t.stack.session(&a)["agentSessionId"], sb["agentSessionId"]);
}

#[test]
fn a_restored_claude_session_resumes_its_conversation_even_after_a_reboot() {
    let t = Truth::new("claude-code");
    let id = t.stack.spawn(&["app", "T-7", "--prompt", "first task"]);
    let first = t.wait(&id, "ready", &["hook", "transcript"]);
    let uuid = first["agentSessionId"].as_str().unwrap().to_string();
    t.stack.ao(&["session", "kill", &id]).ok();
    t.stack.wait_field(&id, "status", "killed");
    let restore = t.stack.ao(&["session", "restore", &id]).ok();
    assert!(
        restore
            .stderr
            .contains(&format!("claude-code resumes its conversation {uuid}")),
        "{}",
        restore.stderr
    );
    t.stack.wait_log(&id, &format!("resuming {uuid}"));
    let again = t.wait(&id, "ready", &["process", "hook", "transcript"]);
    assert_eq!(again["agentSessionId"], uuid.as_str());
    assert_eq!(again["worktree"], first["worktree"]);
    // The conversation goes on in the same transcript.
    t.send(&id, "second task");
    t.wait_for(&id, "ready", &["hook", "transcript"], "");
    let transcript = claude_project(&t.claude_dir, &worktree(&again)).join(format!("{uuid}.jsonl"));
    poll(Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&transcript).ok()?;
        text.contains("second task").then_some(())
    })
    .expect("the second prompt is in the first conversation's transcript");

    // A reboot: tmux and every agent gone, the worktree and transcript kept.
    let killed = t.stack.tmux(&["kill-server"]);
    assert!(killed.status.success(), "{killed:?}");
    t.stack.wait_field(&id, "activity", "exited");
    t.stack.ao(&["session", "restore", &id]).ok();
    // The same conversation once more: a second `resuming` in the log.
    poll(Duration::from_secs(20), || {
        let log = t.stack.ao(&["logs", &id]).stdout;
        (log.matches(&format!("resuming {uuid}")).count() >= 2).then_some(())
    })
    .expect("resumed after the reboot");
    let last = t.wait(&id, "ready", &["process", "hook", "transcript"]);
    assert_eq!(last["agentSessionId"], uuid.as_str());
}

#[test]
fn ao_report_speaks_for_its_own_session_only() {
    let t = Truth::new("claude-code");
    let a = t.stack.spawn(&["app", "T-8", "--prompt", "first task"]);
    let b = t.stack.spawn(&["app", "T-9", "--prompt", "second task"]);
    t.wait(&a, "ready", &["hook", "transcript"]);
    t.wait(&b, "ready", &["hook", "transcript"]);
    let ao = ao_tests::ao_bin().display().to_string();
    // From A, for A: recorded, as evidence and as an event.
    t.send(
        &a,
        &format!("sh: {ao} report needs_input --note 'which database?'"),
    );
    t.stack
        .wait_log(&a, &format!("reported needs_input for {a}"));
    t.wait_for(&a, "waiting_input", &["report"], "which database?");
    let events = t.stack.cli_events();
    let report = events
        .iter()
        .find(|e| e["type"] == "session.report" && e["sessionId"] == a.as_str())
        .expect("a session.report event");
    assert_eq!(report["data"]["state"], "needs_input");
    assert_eq!(report["priority"], "action");

    // From A with B's id, or with B's token: refused, and B is untouched.
    t.send(&a, &format!("sh: AO_SESSION_ID={b} {ao} report blocked"));
    t.stack
        .wait_log(&a, "report refused: the token is not this session's");
    let meta: Value = serde_json::from_slice(
        &std::fs::read(
            t.stack
                .home
                .join("worker/sessions")
                .join(format!("{b}.json")),
        )
        .unwrap(),
    )
    .unwrap();
    let b_token = meta["sessionToken"]
        .as_str()
        .expect("B's token")
        .to_string();
    t.send(
        &a,
        &format!("sh: AO_SESSION_TOKEN={b_token} {ao} report completed"),
    );
    poll(Duration::from_secs(20), || {
        let log = t.stack.ao(&["logs", &a]).stdout;
        (log.matches("report refused").count() >= 2).then_some(())
    })
    .expect("the second forged report is refused too");
    assert_eq!(t.stack.session(&b)["activity"], "ready");
    assert!(!t
        .stack
        .cli_events()
        .iter()
        .any(|e| e["type"] == "session.report" && e["sessionId"] == b.as_str()));
    // Outside any session there is nothing to speak for.
    let outside: ao_tests::Run = t
        .stack
        .command(&["report", "working"])
        .env_remove("AO_SESSION_ID")
        .env_remove("AO_SESSION_TOKEN")
        .output()
        .unwrap()
        .into();
    assert_ne!(outside.code, 0);
    assert!(
        outside.stderr.contains("AO_SESSION_ID is not set"),
        "{}",
        outside.stderr
    );
}

#[test]
fn an_active_agent_silent_past_the_threshold_is_stuck_once_until_it_moves() {
    let t = Truth::with_config(
        "claude-code",
        "",
        "reactions:\n  agent-stuck:\n    threshold: 2s\n",
    );
    // The turn opens, then the agent waits at the `tool` gate: no record,
    // no hook, no screen change.
    let id = t
        .stack
        .spawn(&["app", "T-10", "--prompt", "run the tool please"]);
    t.wait(&id, "active", &["hook", "transcript"]);
    let s = t.stack.wait_field(&id, "status", "stuck");
    assert_eq!(s["activity"], "active");
    t.open("tool");
    t.stack.wait_field(&id, "status", "working");
    let stuck: Vec<Value> = t
        .stack
        .cli_events()
        .into_iter()
        .filter(|e| e["type"] == "session.stuck" && e["sessionId"] == id.as_str())
        .collect();
    assert_eq!(stuck.len(), 1, "{stuck:?}");
    assert!(stuck[0]["message"]
        .as_str()
        .is_some_and(|m| m.contains("no sign of life")));
}

#[test]
fn a_trust_dialog_ao_could_not_prevent_is_waiting_input_named() {
    let t = Truth::new("claude-code");
    // A state file ao must not rewrite (not JSON): Claude asks for trust.
    std::fs::write(t.claude_dir.join(".claude.json"), "{ not json").unwrap();
    let id = t.stack.spawn(&["app", "T-11", "--prompt", "first task"]);
    let s = t.wait_for(&id, "waiting_input", &["screen"], "trust");
    assert_eq!(s["status"], "needs_input");
    assert_eq!(
        std::fs::read_to_string(t.claude_dir.join(".claude.json")).unwrap(),
        "{ not json"
    );
}

#[test]
fn a_launch_prompt_the_agent_never_got_is_typed_in() {
    let t = Truth::new("claude-code");
    // The fake loses a command-line prompt with `drop-me` in it.
    let id = t
        .stack
        .spawn(&["app", "T-12", "--prompt", "drop-me then finish"]);
    let s = t.wait(&id, "ready", &["hook", "transcript"]);
    let transcript = claude_project(&t.claude_dir, &worktree(&s))
        .join(format!("{}.jsonl", s["agentSessionId"].as_str().unwrap()));
    let text = std::fs::read_to_string(&transcript).expect("a transcript");
    assert!(text.contains("drop-me then finish"), "{text}");
    assert_eq!(text.matches("\"drop-me then finish\"").count(), 1, "{text}");
}

#[test]
fn a_restored_codex_session_resumes_its_thread() {
    let t = Truth::new("codex");
    let id = t.stack.spawn(&["app", "T-13", "--prompt", "first task"]);
    let first = t.wait(&id, "ready", &["transcript"]);
    let thread = first["agentSessionId"]
        .as_str()
        .expect("the thread id")
        .to_string();
    t.stack.ao(&["session", "kill", &id]).ok();
    t.stack.wait_field(&id, "status", "killed");
    t.stack.ao(&["session", "restore", &id]).ok();
    t.stack.wait_log(&id, &format!("resuming {thread}"));
    t.send(&id, "second task");
    // The same rollout file goes on: no second one.
    let rollouts = poll(Duration::from_secs(20), || {
        let files = walk(&t.codex_home.join("sessions"));
        let text = std::fs::read_to_string(files.first()?).ok()?;
        text.contains("Done: second task").then_some(files)
    })
    .expect("the second task in the first thread's rollout");
    assert_eq!(rollouts.len(), 1, "{rollouts:?}");
    let again = t.wait(&id, "ready", &["transcript"]);
    assert_eq!(again["agentSessionId"], thread.as_str());
}

#[test]
fn a_gemini_turn_is_seen_from_its_hooks_and_resumed_by_its_session_id() {
    let t = Truth::new("gemini");
    let id = t
        .stack
        .spawn(&["app", "T-13", "--prompt", "run the tool please"]);
    // The hooks ran: ao trusted the worktree in Gemini's own file, so
    // Gemini loaded the worktree's settings and showed no trust dialog.
    let s = t.wait_for(&id, "active", &["hook"], "BeforeAgent");
    let gemini_dir = t.stack.dir.path().join("home-dir/.gemini");
    let trust: Value = serde_json::from_slice(
        &std::fs::read(gemini_dir.join("trustedFolders.json")).expect("ao wrote the trust file"),
    )
    .unwrap();
    let real = std::fs::canonicalize(worktree(&s)).unwrap();
    assert_eq!(trust[real.display().to_string()], "TRUST_FOLDER");
    let session = s["agentSessionId"].as_str().expect("agentSessionId");
    let session = session.to_string();

    t.open("tool");
    t.wait_for(
        &id,
        "active",
        &["hook"],
        "BeforeTool run_shell_command(cargo test)",
    );

    t.open("ask");
    let s = t.wait_for(&id, "waiting_input", &["hook"], "ToolPermission");
    assert!(detail(&s).contains("cargo test"), "{s}");
    assert_eq!(s["status"], "needs_input");

    t.send(&id, "1");
    t.wait_for(&id, "active", &["hook"], "AfterTool");

    t.open("end");
    t.wait_for(&id, "ready", &["hook"], "AfterAgent");
    // The hooks' settings file is in the worktree, and git does not see it.
    assert!(worktree(&s).join(".gemini/settings.json").exists());
    let status = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=all"])
        .current_dir(worktree(&s))
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(!status.contains(".gemini"), "{status}");

    // Gemini's error record, in its chat file, blocks the turn.
    t.send(&id, "now a ratelimit");
    t.wait_for(&id, "blocked", &["transcript"], "429");

    t.send(&id, "exit");
    t.wait(&id, "exited", &["process"]);

    // The same conversation, in the same worktree.
    t.stack.ao(&["session", "restore", &id]).ok();
    t.stack.wait_log(&id, &format!("resuming {session}"));
    let again = t.wait(&id, "blocked", &["transcript"]);
    assert_eq!(again["agentSessionId"], session.as_str());
    assert_eq!(again["worktree"], s["worktree"]);
    t.send(&id, "second task");
    t.wait_for(&id, "ready", &["hook"], "AfterAgent");
}
