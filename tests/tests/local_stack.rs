//! The single-machine loop, driven through the real `ao` binary with real
//! tmux and git and scripted agents.

use std::time::Duration;

use ao_tests::{eventually, git, Cli, Stack};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[test]
fn spawn_runs_the_agent_in_its_worktree_and_send_reaches_it() {
    let stack = Stack::new();
    stack.up();
    let id = stack.spawn(&["app", "INT-7"]);
    assert_eq!(id, "app-1");
    let s = stack.session(&id);
    let worktree = s["worktree"].as_str().expect("worktree").to_string();
    assert_eq!(s["branch"], "feat/INT-7");
    assert_eq!(
        git(worktree.as_ref(), &["rev-parse", "--abbrev-ref", "HEAD"]),
        "feat/INT-7"
    );
    // postCreate ran and symlinks were made.
    assert!(std::path::Path::new(&worktree)
        .join(".post-create")
        .exists());
    assert_eq!(
        std::fs::read_to_string(format!("{worktree}/.env")).unwrap(),
        "SECRET=1\n"
    );

    let env = eventually("agent wrote its env", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("{worktree}/.agent-env")).ok()
    });
    assert!(env.contains("AO_SESSION_ID=app-1"), "{env}");
    assert!(env.contains("AO_PROJECT_ID=app"), "{env}");
    assert!(env.contains("AO_ISSUE_ID=INT-7"), "{env}");
    let prompt_file = env
        .lines()
        .find_map(|l| l.strip_prefix("AO_PROMPT_FILE="))
        .unwrap();
    let prompt = std::fs::read_to_string(prompt_file).unwrap();
    assert!(prompt.contains("INT-7"), "{prompt}");

    // The prompt is typed in once the agent shows its ready line.
    stack.wait_log(&id, "got: You are working on issue INT-7");
    stack.ao(&["send", &id, "hello", "agent"]).ok();
    stack.wait_log(&id, "got: hello agent");
    let s = stack.wait_field(&id, "activity", "ready");
    for key in [
        "id",
        "projectId",
        "issueId",
        "status",
        "activity",
        "branch",
        "worktree",
        "worker",
        "agent",
        "runtime",
        "pr",
        "prNumber",
        "ciStatus",
        "reviewDecision",
        "createdAt",
        "lastActivityAt",
        "summary",
    ] {
        assert!(s.get(key).is_some(), "status --json lacks {key}: {s}");
    }
    assert_eq!(s["agent"], "bot");
    assert_eq!(s["runtime"], "tmux");

    // The agent edits and commits on its own branch.
    stack.ao(&["send", &id, "commit"]).ok();
    stack.wait_log(&id, "committed");
    assert_eq!(
        git(&stack.repo, &["log", "-1", "--format=%s", "feat/INT-7"]),
        "agent change"
    );
    assert_eq!(
        git(&stack.repo, &["log", "-1", "--format=%s", "main"]),
        "init"
    );

    // A person on the machine can attach with plain tmux.
    assert_eq!(stack.tmux_sessions(), ["app-1"]);
    assert!(s["attachCommand"]
        .as_str()
        .unwrap()
        .contains("attach -t app-1"));
}

#[test]
fn batch_spawn_skips_issues_with_a_live_session() {
    let stack = Stack::new();
    stack.up();
    let first = stack.ao(&["batch-spawn", "app", "A-1", "A-2"]).ok();
    assert_eq!(
        first.stdout.matches("SESSION=").count(),
        2,
        "{}",
        first.stdout
    );
    let second = stack.ao(&["batch-spawn", "app", "A-1", "A-3"]).ok();
    assert_eq!(second.stdout.trim(), "SESSION=app-3", "{}", second.stderr);
    assert!(second.stderr.contains("skipped A-1"), "{}", second.stderr);
    let issues: Vec<String> = stack
        .sessions()
        .iter()
        .map(|s| s["issueId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(issues, ["A-1", "A-2", "A-3"]);
}

#[test]
fn kill_keeps_the_branch_and_restore_brings_the_session_back() {
    let stack = Stack::new();
    stack.up();
    let id = stack.spawn(&["app", "K-1"]);
    stack.wait_log(&id, "got: You are working");
    let worktree = stack.session(&id)["worktree"].as_str().unwrap().to_string();

    stack.ao(&["session", "kill", &id]).ok();
    let s = stack.session(&id);
    assert_eq!(s["status"], "killed");
    assert_eq!(s["activity"], "exited");
    assert!(
        stack.tmux_sessions().is_empty(),
        "{:?}",
        stack.tmux_sessions()
    );
    assert_eq!(
        git(&stack.repo, &["branch", "--list", "feat/K-1"])
            .trim_start_matches("+ ")
            .trim(),
        "feat/K-1"
    );
    assert!(stack
        .events()
        .iter()
        .any(|e| e["type"] == "session.killed" && e["sessionId"] == id.as_str()));
    // Its terminal output stays readable.
    assert!(stack
        .ao(&["logs", &id])
        .ok()
        .stdout
        .contains("got: You are working"));
    // Killing twice says why.
    let again = stack.ao(&["session", "kill", &id]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("killed"), "{}", again.stderr);
    // Sending to a dead session is refused.
    assert_eq!(stack.ao(&["send", &id, "x"]).code, 1);

    let restore = stack.ao(&["session", "restore", &id]).ok();
    // A scripted agent has no conversation to resume, and ao says so.
    assert!(
        restore.stderr.contains(
            "bot starts fresh with the original prompt (it cannot resume a conversation)"
        ),
        "{}",
        restore.stderr
    );
    let s = stack.wait_field(&id, "activity", "ready");
    assert_eq!(s["worktree"], worktree.as_str());
    assert_eq!(s["epoch"], 2);
    stack.ao(&["send", &id, "back again"]).ok();
    stack.wait_log(&id, "got: back again");
    assert!(stack
        .events()
        .iter()
        .any(|e| e["type"] == "session.restored"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("starts fresh"))));
}

#[test]
fn a_project_whose_sessions_all_ended_says_so_once_per_batch_even_across_a_restart() {
    let stack = Stack::new();
    stack.up();
    let summaries = |stack: &Stack| -> Vec<serde_json::Value> {
        stack
            .events()
            .into_iter()
            .filter(|e| e["type"] == "summary.all_complete")
            .collect()
    };
    let first = stack.spawn(&["app", "A-1", "--agent", "quitter"]);
    let live = stack.spawn(&["app", "A-2"]);
    stack.wait_field(&first, "status", "done");
    // One session still runs: not complete.
    stack.ao(&["session", "kill", &live]).ok();
    let done = eventually("all complete", Duration::from_secs(20), || {
        summaries(&stack).into_iter().next()
    });
    assert_eq!(done["projectId"], "app", "{done}");
    assert!(done["sessionId"].is_null(), "{done}");
    let notified = eventually("the reaction", Duration::from_secs(20), || {
        stack
            .events()
            .into_iter()
            .find(|e| e["type"] == "reaction.triggered" && e["reaction"] == "all-complete")
    });
    assert_eq!(notified["action"], "notify", "{notified}");

    // A restart does not say it again.
    stack.ao(&["down"]).ok();
    stack.up();
    let marker = stack.spawn(&["app", "A-3", "--agent", "quitter"]);
    stack.wait_field(&marker, "status", "done");
    // A new batch that ends is a new summary; the old one was said once.
    let all = eventually("the second batch", Duration::from_secs(20), || {
        let all = summaries(&stack);
        (all.len() == 2).then_some(all)
    });
    assert!(
        all[1]["message"].as_str().unwrap().contains("3 sessions"),
        "{}",
        all[1]
    );
}

#[test]
fn an_agent_that_exits_is_done_and_a_question_needs_input() {
    let stack = Stack::new();
    stack.up();
    let quick = stack
        .ao(&["spawn", "app", "Q-1", "--agent", "quitter"])
        .session_id();
    let s = stack.wait_field(&quick, "status", "done");
    assert_eq!(s["activity"], "exited");
    assert_eq!(s["exitCode"], 0);
    assert!(stack
        .events()
        .iter()
        .any(|e| e["type"] == "session.exited" && e["sessionId"] == quick.as_str()));

    let asker = stack.spawn(&["app", "Q-2", "--agent", "asker"]);
    let s = stack.wait_field(&asker, "status", "needs_input");
    assert_eq!(s["activity"], "waiting_input");
    assert!(stack
        .events()
        .iter()
        .any(|e| e["type"] == "session.needs_input" && e["priority"] == "action"));
    stack.ao(&["send", &asker, "y"]).ok();
    stack.wait_log(&asker, "answer: y");
    stack.wait_field(&asker, "activity", "ready");
}

#[test]
fn kill_9_of_the_stack_loses_no_session_and_no_event() {
    let stack = Stack::new();
    let pid = stack.up();
    let ids: Vec<String> = ["R-1", "R-2", "R-3"]
        .iter()
        .map(|i| stack.spawn(&["app", i]))
        .collect();
    for id in &ids {
        stack.wait_log(id, "got: You are working");
    }
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    eventually("the stack process is gone", Duration::from_secs(10), || {
        kill(Pid::from_raw(pid as i32), None).is_err().then_some(())
    });
    // The agents' terminals survived the crash.
    assert_eq!(stack.tmux_sessions(), ids);

    let new_pid = stack.up();
    assert_ne!(new_pid, pid);
    let sessions = stack.sessions();
    let got: Vec<&str> = sessions.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>());
    for id in &ids {
        let s = stack.wait_field(id, "activity", "ready");
        assert_eq!(s["status"], "idle", "{s}");
        assert_eq!(s["epoch"], 1, "re-adopted, not restarted: {s}");
        stack.ao(&["send", id, "after the crash"]).ok();
        stack.wait_log(id, "got: after the crash");
    }
    assert_eq!(stack.tmux_sessions(), ids);

    let events = stack.events();
    let event_ids: Vec<u64> = events.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (1..=event_ids.len() as u64).collect();
    assert_eq!(event_ids, expected, "events.jsonl has a gap or a duplicate");
    let spawned = events
        .iter()
        .filter(|e| e["type"] == "session.spawned")
        .count();
    assert_eq!(spawned, 3);
    assert!(events.iter().any(|e| e["type"] == "worker.reconnected"));
    // The CLI's view of the log matches the file.
    assert_eq!(stack.cli_events().len(), events.len());
}

/// The opening of the default prompt.
const DEFAULT_PROMPT: &str = "You are working on issue";

/// How many times the agent of `id` received a prompt that opens with
/// `opening`: lines the scripted agent answered with `got: ` that hold it.
fn prompts_received(stack: &Stack, id: &str, opening: &str) -> usize {
    let log = stack.terminal_log(id).unwrap_or_default();
    log.lines()
        .filter_map(|l| l.trim_start_matches('\r').strip_prefix("got: "))
        .map(|l| l.matches(opening).count())
        .sum()
}

/// Waits until the agent of `id` got its prompt and is idle again, then
/// says how many times it got it.
fn settled_prompts(stack: &Stack, id: &str, opening: &str) -> usize {
    stack.wait_log(id, &format!("got: {opening}"));
    stack.wait_field(id, "activity", "ready");
    prompts_received(stack, id, opening)
}

fn wait_gone(pid: u32) {
    eventually("the stack process is gone", Duration::from_secs(20), || {
        kill(Pid::from_raw(pid as i32), None).is_err().then_some(())
    });
}

#[test]
fn kill_9_during_batch_spawn_delivers_every_prompt_exactly_once() {
    let stack = Stack::new();
    let pid = stack.up();
    let issues: Vec<String> = (1..=8).map(|i| format!("K-{i}")).collect();
    let mut args = vec!["batch-spawn", "app"];
    args.extend(issues.iter().map(String::as_str));
    let mut batch = stack
        .command(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed while the batch is under way: some agents have their prompt,
    // some are being typed into, some are still being set up.
    eventually(
        "a first agent got its prompt",
        Duration::from_secs(30),
        || {
            let sessions = std::fs::read_dir(stack.home.join("sessions")).ok()?;
            sessions
                .flatten()
                .any(|d| {
                    prompts_received(&stack, &d.file_name().to_string_lossy(), DEFAULT_PROMPT) > 0
                })
                .then_some(())
        },
    );
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let _ = batch.wait();
    wait_gone(pid);

    stack.up();
    // What the batch had not recorded yet is spawned now; the rest is skipped.
    stack.ao(&args).ok();
    let sessions = stack.sessions();
    assert_eq!(sessions.len(), issues.len(), "{sessions:?}");
    for s in &sessions {
        let id = s["id"].as_str().unwrap();
        assert_eq!(
            settled_prompts(&stack, id, DEFAULT_PROMPT),
            1,
            "{id} got its prompt once"
        );
    }
}

#[test]
fn a_crash_between_typing_and_enter_or_after_enter_delivers_the_prompt_once() {
    // The default prompt; one long line that wraps over many rows; one so
    // short that it shows on the screen before it is typed.
    let long = format!("START-OF-PROMPT {}THE-END", "word ".repeat(600));
    let prompts: [(Option<&str>, &str); 3] = [
        (None, DEFAULT_PROMPT),
        (Some(&long), "START-OF-PROMPT"),
        (Some("go"), "go"),
    ];
    for point in ["prompt-typed", "prompt-submitted"] {
        for (prompt, opening) in prompts {
            let stack = Stack::new();
            let run: ao_tests::Run = stack
                .command(&["up", "-d"])
                .env("AO_FAULT", point)
                .output()
                .unwrap()
                .into();
            let run = run.ok();
            let pid = stack
                .pid()
                .unwrap_or_else(|| panic!("no pid: {}", run.stdout));
            let mut args = vec!["app", "T-1", "--no-wait"];
            if let Some(p) = prompt {
                args.extend(["--prompt", p]);
            }
            let id = stack.spawn(&args);
            // The worker dies at that point of delivering the prompt.
            wait_gone(pid);
            if point == "prompt-typed" {
                assert_eq!(prompts_received(&stack, &id, opening), 0, "{opening}");
            }
            stack.up();
            assert_eq!(
                settled_prompts(&stack, &id, opening),
                1,
                "{point} {opening}: delivered once"
            );
        }
    }
}

#[test]
fn bad_input_is_refused_clearly_and_disturbs_nothing() {
    let stack = Stack::new();
    stack.up();
    let live = stack.spawn(&["app", "OK-1"]);

    // A YAML syntax error names the file and line.
    let broken = stack.dir.path().join("broken.yaml");
    std::fs::write(&broken, "projects:\n  app:\n    path: [unclosed\n").unwrap();
    let run = stack.ao(&["apply", "-f", broken.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("broken.yaml:"), "{}", run.stderr);

    // An unknown key names the file, the key and the line.
    let unknown = stack.dir.path().join("unknown.yaml");
    std::fs::write(
        &unknown,
        "projects:\n  app:\n    path: ./repo\n    agnet: bot\n",
    )
    .unwrap();
    let run = stack.ao(&["apply", "-f", unknown.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("unknown.yaml:4"), "{}", run.stderr);
    assert!(run.stderr.contains("agnet"), "{}", run.stderr);

    let run = stack.ao(&["spawn", "nope", "X-1"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("unknown project `nope`"),
        "{}",
        run.stderr
    );

    let run = stack.ao(&["send", "app-99", "hi"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("unknown session `app-99`"),
        "{}",
        run.stderr
    );

    // An agent whose binary is missing: errored, with the reason, and logged.
    let run = stack.ao(&["spawn", "app", "G-1", "--agent", "ghost"]);
    assert_eq!(run.code, 1);
    let ghost = run.session_id();
    assert!(
        run.stderr.contains("no-such-agent-binary"),
        "{}",
        run.stderr
    );
    let s = stack.session(&ghost);
    assert_eq!(s["status"], "errored");
    assert!(s["summary"].as_str().unwrap().contains("not found"), "{s}");
    assert!(stack
        .events()
        .iter()
        .any(|e| e["type"] == "session.errored" && e["sessionId"] == ghost.as_str()));

    // A second stack on the same AO_HOME.
    let run = stack.ao(&["up"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("already running"), "{}", run.stderr);
    let run = stack.ao(&["up", "-d"]);
    assert_eq!(run.code, 1);

    // Usage errors exit 2.
    assert_eq!(stack.ao(&["spawn"]).code, 2);
    assert_eq!(stack.ao(&["send", &live]).code, 2);

    // None of that disturbed the live session.
    stack.ao(&["send", &live, "still here"]).ok();
    stack.wait_log(&live, "got: still here");
    stack.wait_field(&live, "status", "idle");
}

#[test]
fn doctor_says_what_to_install() {
    let stack = Stack::new();
    let empty = tempfile::tempdir().unwrap();
    let run: ao_tests::Run = stack
        .command(&["doctor"])
        .env("PATH", empty.path())
        .output()
        .unwrap()
        .into();
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("[FAIL] tmux"), "{}", run.stdout);
    assert!(
        run.stdout.contains("apt-get install tmux"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("apt-get install git"), "{}", run.stdout);

    stack.up();
    let run = stack.ao(&["doctor"]).ok();
    assert!(run.stdout.contains("tmux -S"), "{}", run.stdout);
    assert!(run.stdout.contains("1 ready"), "{}", run.stdout);
}

/// Reads a child's stdout on a thread until it contains `want`.
fn read_until(child: &mut std::process::Child, want: &str) -> String {
    use std::io::Read;
    let mut out = child.stdout.take().expect("piped stdout");
    let want = want.to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if seen.contains(&want) {
                let _ = tx.send(seen);
                return;
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the follower printed what was expected within 20 s")
}

#[test]
fn logs_and_events_follow_live() {
    let stack = Stack::new();
    stack.up();
    let id = stack.spawn(&["app", "F-1"]);
    stack.wait_log(&id, "got: You are working");

    let mut logs = stack
        .command(&["logs", &id, "-f", "-n", "3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut events = stack
        .command(&["events", "-f", "--json", "--type", "session"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    stack.ao(&["send", &id, "streamed line"]).ok();
    let seen = read_until(&mut logs, "got: streamed line");
    assert!(
        !seen.contains("agent ready in"),
        "-n 3 showed older lines: {seen}"
    );

    stack.ao(&["session", "kill", &id]).ok();
    let seen = read_until(&mut events, "session.killed");
    for line in seen.lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            v["type"].as_str().unwrap().starts_with("session."),
            "{line}"
        );
    }
    // The log follower ends by itself when its session ends.
    let status = eventually("logs -f ends", Duration::from_secs(10), || {
        logs.try_wait().unwrap()
    });
    assert!(status.success());
    events.kill().unwrap();
    events.wait().unwrap();
}

#[test]
fn a_broken_config_stops_ao_up_with_file_key_and_line() {
    let stack = Stack::new();
    std::fs::write(
        &stack.config,
        "projects:\n  app:\n    path: ./repo\n    postCreate: 5\n",
    )
    .unwrap();
    let run = stack.ao(&["up", "-d"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("agent-orchestrator.yaml:4"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("postCreate"), "{}", run.stderr);
    std::fs::write(
        &stack.config,
        "notifiers:\n  slack:\n    plugin: slack\n    webhook: ${AO_TEST_UNSET_WEBHOOK}\n",
    )
    .unwrap();
    let run = stack.ao(&["up"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("AO_TEST_UNSET_WEBHOOK"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(":4"), "{}", run.stderr);
}

#[test]
fn a_session_killed_while_being_set_up_leaves_nothing_running() {
    let stack = Stack::new();
    stack.up();
    let id = stack
        .ao(&["spawn", "slow", "S-1", "--no-wait"])
        .ok()
        .session_id();
    let worktree = stack.home.join("worktrees/slow").join(&id);
    eventually("the set-up runs", Duration::from_secs(20), || {
        worktree.join(".slow-started").exists().then_some(())
    });
    stack.ao(&["session", "kill", &id]).ok();
    // The set-up goes on until it is let go, after the kill.
    std::fs::write(worktree.join(".slow-go"), "").unwrap();
    eventually("the set-up finished", Duration::from_secs(20), || {
        worktree.join(".slow-done").exists().then_some(())
    });
    eventually(
        "no agent runs for the killed session",
        Duration::from_secs(10),
        || stack.tmux_sessions().is_empty().then_some(()),
    );
    assert_eq!(stack.session(&id)["status"], "killed");
}

#[test]
fn a_project_at_capacity_waits_and_is_placed_when_room_appears() {
    let stack = Stack::new();
    stack.up();
    let first = stack.spawn(&["capped", "C-1"]);
    let run = stack.ao(&["spawn", "capped", "C-2"]).ok();
    let second = run.session_id();
    assert!(run.stderr.contains("capacity"), "{}", run.stderr);
    let s = stack.session(&second);
    assert_eq!(s["status"], "spawning");
    assert!(
        s["summary"].as_str().unwrap().contains("capacity of 1"),
        "{s}"
    );
    assert_eq!(stack.tmux_sessions(), std::slice::from_ref(&first));
    stack.ao(&["session", "kill", &first]).ok();
    stack.wait_field(&second, "activity", "ready");
    assert_eq!(stack.tmux_sessions(), [second]);
}

#[test]
fn logs_since_a_time_show_only_later_output() {
    let stack = Stack::new();
    stack.up();
    let id = stack.spawn(&["app", "L-1"]);
    stack.wait_log(&id, "got: You are working");
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    // A second boundary between the old output and the new.
    let mark = now() + 1;
    eventually("the clock passed the mark", Duration::from_secs(3), || {
        (now() >= mark).then_some(())
    });
    stack.ao(&["send", &id, "after the mark"]).ok();
    stack.wait_log(&id, "got: after the mark");
    let stamp = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{mark}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    let stamp = String::from_utf8_lossy(&stamp.stdout).trim().to_string();
    let since = stack.ao(&["logs", &id, "--since", &stamp]).ok().stdout;
    assert!(since.contains("got: after the mark"), "{since:?}");
    assert!(
        !since.contains("agent ready in"),
        "older output shown: {since:?}"
    );
    let recent = stack.ao(&["logs", &id, "--since", "1h"]).ok().stdout;
    assert!(recent.contains("agent ready in"), "{recent:?}");
    assert_eq!(stack.ao(&["logs", &id, "--since", "5 minutes"]).code, 2);
}
