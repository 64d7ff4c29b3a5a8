//! What reaches git and the agent's terminal from user input: branch names,
//! control bytes, tmux's own syntax in messages, long lines, and agent
//! commands that start with a shell builtin. Real `ao`, tmux and git.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use ao_tests::{agents_dir, eventually, git, Cli, Stack};

/// A stack whose config also has these agents (YAML lines under `agents:`,
/// `{agents}` standing for the scripted agents' directory).
fn stack_with_agents(agents: &str) -> Stack {
    let stack = Stack::new();
    let mut config = std::fs::read_to_string(&stack.config).unwrap();
    config.push_str(&agents.replace("{agents}", &agents_dir().display().to_string()));
    std::fs::write(&stack.config, config).unwrap();
    stack.up();
    stack
}

#[test]
fn bad_branch_names_are_refused_and_leave_the_refs_alone() {
    let stack = Stack::new();
    stack.up();
    git(&stack.repo, &["branch", "other"]);
    let refs = || {
        git(
            &stack.repo,
            &["for-each-ref", "--format=%(refname) %(objectname)"],
        )
    };
    let before = refs();
    for bad in [
        "-M", "--force", "-D", "a..b", "x.lock", "a b", "HEAD", "@{-1}", "a:b", "feat/", ".hidden",
    ] {
        let run = stack.ao(&["spawn", "app", "B-1", &format!("--branch={bad}")]);
        assert_ne!(run.code, 0, "{bad:?} was accepted: {}", run.stdout);
        assert!(
            run.stderr.contains(&format!("invalid branch name {bad:?}")),
            "{bad:?}: {}",
            run.stderr
        );
    }
    assert_eq!(refs(), before);
    assert_eq!(
        git(&stack.repo, &["symbolic-ref", "HEAD"]),
        "refs/heads/main"
    );
    // Refused before anything was stored.
    assert!(stack.sessions().is_empty(), "{:?}", stack.sessions());
    // A good one still works.
    let id = stack.spawn(&["app", "B-2", "--branch=fix/ok-1"]);
    assert_eq!(
        stack.wait_field(&id, "activity", "ready")["branch"],
        "fix/ok-1"
    );
}

#[test]
fn control_bytes_are_refused_unless_raw() {
    let stack = Stack::new();
    stack.up();
    let id = stack.spawn(&["app", "C-1"]);
    stack.wait_log(&id, "got: You are working");

    let run = stack.ao(&["send", &id, "\x03"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("control byte 0x03 (Ctrl-C) at byte 0") && run.stderr.contains("--raw"),
        "{}",
        run.stderr
    );
    let run = stack.ao(&["send", &id, "up\x1b[A"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("0x1b (Escape) at byte 2"),
        "{}",
        run.stderr
    );
    // Newlines are text (pasted: one message, two lines), and so are the
    // CRLF line ends of a file written on Windows; a tab is text too.
    stack.ao(&["send", &id, "still\nhere"]).ok();
    stack.wait_log(&id, "got: still\r\n");
    stack.wait_log(&id, "got: here\r\n");
    let crlf = stack.dir.path().join("crlf.txt");
    std::fs::write(&crlf, "first\r\nsecond\tcolumn\r\n").unwrap();
    stack.ao(&["send", &id, "-f", crlf.to_str().unwrap()]).ok();
    stack.wait_log(&id, "got: first\r\n");
    stack.wait_log(&id, "got: second");
    stack.wait_field(&id, "activity", "ready");
    // A prompt is typed in as text: the same rule, before anything is stored.
    let run = stack.ao(&["spawn", "app", "C-2", "--prompt", "clear \x1b[2J"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("the prompt has control byte 0x1b (Escape) at byte 6"),
        "{}",
        run.stderr
    );
    // An issue id ends up in the default prompt, a branch and tables.
    let run = stack.ao(&["spawn", "app", "X\x03Y"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("the issue id has control byte 0x03 (Ctrl-C) at byte 1"),
        "{}",
        run.stderr
    );
    assert_eq!(stack.sessions().len(), 1);

    // Raw input is typed as keys: Ctrl-C interrupts the agent.
    stack.ao(&["send", "--raw", &id, "\x03"]).ok();
    stack.wait_field(&id, "activity", "exited");
}

#[test]
fn messages_with_tmux_syntax_and_long_lines_arrive_whole() {
    let stack = stack_with_agents(
        "  counter:\n    command: \"{agents}/line-length.sh\"\n    readyPattern: \"^> $\"\n",
    );
    let id = stack.spawn(&["app", "L-1", "--agent", "counter", "--prompt", "go"]);
    stack.wait_log(&id, "length: 2 ends: go");
    // tmux reads a trailing `;` in an argument as a command separator.
    for text in ["hello;", "a \\; b;", ";"] {
        stack.ao(&["send", &id, text]).ok();
        stack.wait_log(&id, &format!("length: {} ends: {text}\r\n", text.len()));
    }
    // Longer than one argument may be (128 KiB).
    let line: String = (0..200_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .chain("...the-end".chars())
        .collect();
    let file = stack.dir.path().join("long.txt");
    std::fs::write(&file, &line).unwrap();
    stack.ao(&["send", &id, "-f", file.to_str().unwrap()]).ok();
    let ends = &line[line.len() - 12..];
    stack.wait_log(&id, &format!("length: {} ends: {ends}\r\n", line.len()));
}

#[test]
fn an_agent_command_starting_with_a_builtin_runs_and_its_env_file_goes() {
    let stack = stack_with_agents(
        "  umasked:\n    command: \"umask 077; exec {agents}/prompt-wait.sh\"\n    readyPattern: \"^> $\"\n    env:\n      SECRET_TOKEN: \"s3cret\"\n",
    );
    let id = stack.spawn(&["app", "U-1", "--agent", "umasked"]);
    stack.wait_log(&id, "got: You are working");
    let worktree = stack.session(&id)["worktree"].as_str().unwrap().to_string();
    let mode = eventually("the agent wrote its env", Duration::from_secs(10), || {
        std::fs::metadata(format!("{worktree}/.agent-env")).ok()
    })
    .permissions()
    .mode();
    assert_eq!(mode & 0o077, 0, "umask 077 not applied: {mode:o}");

    // The env file holds `env:` secrets: gone once the agent has them.
    let env_file = stack.home.join("tmux.exit").join(format!("{id}.env"));
    eventually("the env file is deleted", Duration::from_secs(10), || {
        (!env_file.exists()).then_some(())
    });
    assert!(stack.home.join("tmux.exit").is_dir());
}
